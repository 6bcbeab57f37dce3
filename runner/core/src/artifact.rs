//! Artifacts: the workspace paths a spec asks to keep, filtered into one tar bundle.
//!
//! Backends stream a raw tar archive of each requested path; the filtering happens
//! here, once for every backend, while the archive streams in, so Enclave never holds
//! more than the bundle: entries are re-rooted under their workspace path, anything
//! with an absolute name or `..` is dropped, links pointing outside the workspace are
//! dropped (never followed), a workspace path already in the bundle is not stored
//! again, a file holding a secret value (in any of the forms redaction knows) is left
//! out, and the bundle stops at a size cap: once nothing more fits, nothing more is
//! read. A file's bytes go straight into the bundle and are taken out again if the
//! check refuses them, so a file is never held twice.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

use crate::archive_stream::{ArchiveStream, EntryHead, Flow, Piece};
use crate::secret::Redactor;

/// The filtered bundle.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArtifactBundle {
    /// A tar archive of what was kept.
    pub tar: Vec<u8>,
    /// Files kept (regular files and links inside the workspace).
    pub files: Vec<ArtifactFile>,
    /// Entries left out, with why.
    pub skipped: Vec<SkippedArtifact>,
}

/// One kept entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ArtifactFile {
    /// Workspace-relative path.
    pub path: String,
    /// Size in bytes (0 for directories and links).
    pub bytes: u64,
}

/// One entry left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SkippedArtifact {
    /// Workspace-relative path (as far as it could be told).
    pub path: String,
    /// Why.
    pub reason: String,
}

/// Where a session's artifact bundle goes (a file next to the audit, a store row).
pub trait ArtifactSink: Send {
    /// Stores the bundle; returns where it is, for the result.
    fn store(&mut self, bundle: &ArtifactBundle) -> Result<String, String>;
}

/// A raw tar archive of one requested path as a backend streams it: entry names are
/// relative to the requested path's parent directory (what `docker cp` produces). An
/// `Err` item says why the path could not be (further) read and ends the archive.
/// Dropping the stream stops the download.
pub type ArtifactArchive<'a> = BoxStream<'a, Result<Vec<u8>, String>>;

/// Tar header block; every entry costs at least one.
const BLOCK: u64 = 512;

/// The two zero blocks that end the bundle.
const END_OF_ARCHIVE: u64 = 2 * BLOCK;

/// A file is checked for secrets in windows this long, overlapping by
/// [`SCAN_OVERLAP`], so the check's decoded copies stay small whatever the file's size.
/// (Smaller in unit tests, so crossing a seam takes a small file.)
const SCAN_WINDOW: usize = if cfg!(test) { 64 << 10 } else { 4 << 20 };

/// How far a secret's form may spread (escapes, line breaks) and still be found across
/// the seam between two windows.
const SCAN_OVERLAP: usize = if cfg!(test) { 4 << 10 } else { 256 << 10 };

/// Normalises a relative path lexically; `None` if it is absolute or climbs out.
fn confined(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Bytes an entry adds to the bundle, at most: its header, a GNU long-name entry for a
/// long name or link target, and its data padded to whole blocks.
fn entry_cost(name: &Path, link: Option<&Path>, size: u64) -> u64 {
    let long = |p: &Path| {
        let len = p.as_os_str().len() as u64;
        if len >= 100 { BLOCK + (len + 1).div_ceil(BLOCK) * BLOCK } else { 0 }
    };
    BLOCK + long(name) + link.map_or(0, long) + size.div_ceil(BLOCK).saturating_mul(BLOCK)
}

/// The archive of one requested path being read.
struct Reading {
    /// The requested path, normalised.
    requested: PathBuf,
    /// Its parent: entry names are relative to it.
    parent: PathBuf,
    /// The file whose data is being written into the bundle, if the entry is kept.
    open: Option<OpenFile>,
    /// Reading stopped (the cap, or an unreadable archive): the rest is not read.
    stopped: bool,
}

/// A kept file whose data is streaming into the bundle.
struct OpenFile {
    name: PathBuf,
    /// Where its entry starts in the bundle (to take it out again).
    mark: usize,
    /// Where its data starts.
    data: usize,
    size: u64,
}

/// Builds one bundle from the archives of a plan's paths, read one at a time as they
/// stream in: [`Self::begin`] a path, [`Self::feed`] its chunks while it returns
/// `Flow::Continue`, [`Self::end`] it; then [`Self::finish`].
pub(crate) struct ArtifactBundler<'r> {
    max_bytes: u64,
    redactor: &'r Redactor,
    builder: tar::Builder<Vec<u8>>,
    files: Vec<ArtifactFile>,
    skipped: Vec<SkippedArtifact>,
    /// Every entry name in the bundle.
    stored: BTreeSet<PathBuf>,
    /// Requested paths begun so far.
    requested: BTreeSet<PathBuf>,
    /// Requested paths whose archives were read to the end: everything under them is in.
    read_whole: Vec<PathBuf>,
    /// Nothing more fits.
    full: bool,
    current: Option<(Reading, ArchiveStream)>,
}

impl<'r> ArtifactBundler<'r> {
    /// A bundler for a bundle of at most `max_bytes` (headers included), refusing files
    /// that hold a value `redactor` knows.
    pub(crate) fn new(max_bytes: u64, redactor: &'r Redactor) -> Self {
        Self {
            max_bytes,
            redactor,
            builder: tar::Builder::new(Vec::new()),
            files: Vec::new(),
            skipped: Vec::new(),
            stored: BTreeSet::new(),
            requested: BTreeSet::new(),
            read_whole: Vec::new(),
            full: false,
            current: None,
        }
    }

    fn cap_reason(&self) -> String {
        format!("artifact size cap of {} bytes reached", self.max_bytes)
    }

    /// Records a skipped entry; the name is redacted, as everything bound for results.
    fn skip(&mut self, path: &Path, reason: impl Into<String>) {
        let path = self.redactor.redact(&path.display().to_string());
        self.skipped.push(SkippedArtifact { path, reason: reason.into() });
    }

    /// Bytes still free in the bundle.
    fn room(&self) -> u64 {
        self.max_bytes.saturating_sub(self.builder.get_ref().len() as u64 + END_OF_ARCHIVE)
    }

    /// Starts on one requested path; `false` (with the reason recorded) if it is not to
    /// be read: a path listed before, one inside a path already read whole, or the cap
    /// already reached.
    pub(crate) fn begin(&mut self, requested: &str) -> bool {
        self.end();
        let shown = Path::new(requested);
        let Some(path) = confined(shown) else {
            self.skip(shown, "path leaves the workspace");
            return false;
        };
        if self.full {
            self.skip(&path, format!("not read: {}", self.cap_reason()));
            return false;
        }
        if !self.requested.insert(path.clone()) {
            self.skip(&path, "duplicate: this path is listed more than once");
            return false;
        }
        if let Some(outer) = self.read_whole.iter().find(|outer| path.starts_with(outer)) {
            let reason = format!("duplicate: already in the bundle from {}", outer.display());
            self.skip(&path, reason);
            return false;
        }
        let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let reading = Reading { requested: path, parent, open: None, stopped: false };
        self.current = Some((reading, ArchiveStream::new()));
        true
    }

    /// Reads the next chunk of the current archive.
    pub(crate) fn feed(&mut self, chunk: &[u8]) -> Flow {
        let Some((mut reading, mut stream)) = self.current.take() else { return Flow::Stop };
        if reading.stopped {
            self.current = Some((reading, stream));
            return Flow::Stop;
        }
        let fed = stream.feed(chunk, &mut |piece| self.piece(&mut reading, piece));
        let flow = match fed {
            Ok(flow) => flow,
            Err(e) => {
                self.drop_open(&mut reading);
                self.skip(&reading.requested, format!("rest not read: {e}"));
                Flow::Stop
            }
        };
        reading.stopped |= flow == Flow::Stop;
        self.current = Some((reading, stream));
        flow
    }

    /// The backend could not read (the rest of) the current archive.
    pub(crate) fn fail(&mut self, reason: &str) {
        let Some((mut reading, stream)) = self.current.take() else { return };
        self.drop_open(&mut reading);
        self.skip(&reading.requested, reason);
        reading.stopped = true;
        self.current = Some((reading, stream));
    }

    /// Ends the current archive (also done by the next [`Self::begin`] and by
    /// [`Self::finish`]).
    pub(crate) fn end(&mut self) {
        let Some((mut reading, stream)) = self.current.take() else { return };
        if reading.stopped {
            return;
        }
        match stream.finish() {
            Ok(()) => self.read_whole.push(reading.requested),
            Err(e) => {
                self.drop_open(&mut reading);
                self.skip(&reading.requested, format!("rest not read: {e}"));
            }
        }
    }

    /// The bundle.
    pub(crate) fn finish(mut self) -> ArtifactBundle {
        self.end();
        ArtifactBundle { tar: self.builder.into_inner().unwrap_or_default(), files: self.files, skipped: self.skipped }
    }

    /// Takes a file that did not arrive whole out of the bundle again.
    fn drop_open(&mut self, reading: &mut Reading) {
        if let Some(open) = reading.open.take() {
            self.builder.get_mut().truncate(open.mark);
            self.skip(&open.name, "unreadable content");
        }
    }

    fn piece(&mut self, reading: &mut Reading, piece: Piece<'_>) -> Flow {
        match piece {
            Piece::Head(head) => self.head(reading, *head),
            Piece::Data(bytes) => {
                if reading.open.is_some() {
                    self.builder.get_mut().extend_from_slice(bytes);
                }
                Flow::Continue
            }
            Piece::EntryEnd => {
                if let Some(open) = reading.open.take() {
                    self.close(open);
                }
                Flow::Continue
            }
        }
    }

    /// Decides what to do with one entry; a kept file's data then follows.
    fn head(&mut self, reading: &mut Reading, head: EntryHead) -> Flow {
        let joined = reading.parent.join(&head.path);
        if self.full {
            self.skip(&joined, self.cap_reason());
            self.skip(&reading.requested, format!("rest not read: {}", self.cap_reason()));
            return Flow::Stop;
        }
        let Some(name) = confined(&joined) else {
            self.skip(&joined, "path leaves the workspace");
            return Flow::Continue;
        };
        if self.redactor.found_in(name.as_os_str().as_encoded_bytes()) {
            self.skip(&name, "its name holds a secret value");
            return Flow::Continue;
        }
        if self.stored.contains(&name) {
            self.skip(&name, "duplicate: already in the bundle");
            return Flow::Continue;
        }
        let kind = head.header.entry_type();
        let mut header = head.header;
        let link = if kind.is_symlink() || kind.is_hard_link() {
            let target = head.link.unwrap_or_default();
            let base = if kind.is_symlink() {
                name.parent().map(Path::to_path_buf).unwrap_or_default()
            } else {
                PathBuf::new()
            };
            if target.is_absolute() || confined(&base.join(&target)).is_none() {
                let reason = format!("link to {} points outside the workspace (not followed)", target.display());
                self.skip(&name, self.redactor.redact(&reason));
                return Flow::Continue;
            }
            if self.redactor.found_in(target.as_os_str().as_encoded_bytes()) {
                self.skip(&name, "its link target holds a secret value");
                return Flow::Continue;
            }
            Some(target)
        } else {
            None
        };
        if link.is_none() && !(kind.is_file() || kind.is_dir()) {
            self.skip(&name, "not a file or directory");
            return Flow::Continue;
        }
        let size = if kind.is_file() { head.size } else { 0 };
        if entry_cost(&name, link.as_deref(), size) > self.room() {
            self.skip(&name, self.cap_reason());
            self.full = self.room() < BLOCK;
            return Flow::Continue;
        }
        header.set_size(size);
        let mark = self.builder.get_ref().len();
        let appended = match &link {
            Some(target) => self.builder.append_link(&mut header, &name, target),
            // The header now (name, size); a file's data follows straight into the bundle.
            None => self.builder.append_data(&mut header, &name, std::io::empty()),
        };
        if appended.is_err() {
            self.builder.get_mut().truncate(mark);
            self.skip(&name, "name cannot be stored");
            return Flow::Continue;
        }
        if kind.is_file() {
            let data = self.builder.get_ref().len();
            self.builder.get_mut().reserve(usize::try_from(size).unwrap_or(usize::MAX));
            reading.open = Some(OpenFile { name, mark, data, size });
            return Flow::Continue;
        }
        self.admitted(name, link.is_some());
        Flow::Continue
    }

    /// A kept file's data is all in: checked for secrets, padded, listed.
    fn close(&mut self, open: OpenFile) {
        let holds_secret = self.holds_secret(&self.builder.get_ref()[open.data..]);
        if holds_secret {
            self.builder.get_mut().truncate(open.mark);
            self.skip(&open.name, "it held a secret value");
            return;
        }
        let padding = (BLOCK - open.size % BLOCK) % BLOCK;
        let bundle = self.builder.get_mut();
        bundle.resize(bundle.len() + padding as usize, 0);
        self.files.push(ArtifactFile { path: open.name.display().to_string(), bytes: open.size });
        self.stored.insert(open.name);
        self.full = self.room() < BLOCK;
    }

    fn admitted(&mut self, name: PathBuf, listed: bool) {
        if listed {
            self.files.push(ArtifactFile { path: name.display().to_string(), bytes: 0 });
        }
        self.stored.insert(name);
        self.full = self.room() < BLOCK;
    }

    fn holds_secret(&self, data: &[u8]) -> bool {
        if self.redactor.is_empty() {
            return false;
        }
        let mut start = 0;
        loop {
            let end = (start + SCAN_WINDOW).min(data.len());
            if self.redactor.found_in(&data[start..end]) {
                return true;
            }
            if end == data.len() {
                return false;
            }
            start = end - SCAN_OVERLAP;
        }
    }
}

#[cfg(test)]
mod tests;
