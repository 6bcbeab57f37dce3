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
mod tests {
    use super::*;
    use crate::secret::Secret;
    use base64::Engine as _;

    type Entry<'a> = (&'a str, tar::EntryType, &'a [u8], Option<&'a str>);

    fn archive(entries: &[Entry<'_>]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, data, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            if let Some(link) = link {
                h.set_link_name(link).expect("link name");
            }
            // Write the name bytes directly: the tar crate refuses to build hostile names,
            // and hostile names are what this has to withstand.
            let slot = &mut h.as_old_mut().name;
            slot[..name.len()].copy_from_slice(name.as_bytes());
            h.set_cksum();
            b.append(&h, *data).expect("append");
        }
        b.into_inner().expect("tar")
    }

    /// Drives a bundler as the orchestrator does, feeding each archive in `chunk`-byte
    /// pieces; returns the bundle and how many bytes of each archive were read.
    fn bundle_with(
        archives: &[(&str, Result<Vec<u8>, &str>)],
        max: u64,
        secrets: &[&str],
        chunk: usize,
    ) -> (ArtifactBundle, Vec<usize>) {
        let redactor = Redactor::new(&secrets.iter().map(|s| Secret::new(*s)).collect::<Vec<_>>());
        let mut bundler = ArtifactBundler::new(max, &redactor);
        let mut read = Vec::new();
        for (path, archive) in archives {
            let mut taken = 0;
            if bundler.begin(path) {
                match archive {
                    Ok(bytes) => {
                        for piece in bytes.chunks(chunk) {
                            taken += piece.len();
                            if bundler.feed(piece) == Flow::Stop {
                                break;
                            }
                        }
                    }
                    Err(reason) => bundler.fail(reason),
                }
                bundler.end();
            }
            read.push(taken);
        }
        (bundler.finish(), read)
    }

    fn bundle(archives: &[(&str, Result<Vec<u8>, &str>)], max: u64) -> ArtifactBundle {
        bundle_with(archives, max, &[], 64 * 1024).0
    }

    fn kept(bundle: &ArtifactBundle) -> Vec<&str> {
        bundle.files.iter().map(|f| f.path.as_str()).collect()
    }

    /// Skipped entries as `(path, first word of the reason)`.
    fn skipped(bundle: &ArtifactBundle) -> Vec<(&str, &str)> {
        bundle.skipped.iter().map(|s| (s.path.as_str(), s.reason.split([' ', ':']).next().unwrap_or(""))).collect()
    }

    /// Names and contents in the bundle's tar, reread with `tar`.
    fn reread(bundle: &ArtifactBundle) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        let mut reread = tar::Archive::new(bundle.tar.as_slice());
        for e in reread.entries().expect("entries") {
            let mut e = e.expect("entry");
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).expect("data");
            out.push((e.path().expect("path").display().to_string(), data));
        }
        out
    }

    #[test]
    fn keeps_files_drops_escaping_links_and_skips_what_does_not_fit() {
        use tar::EntryType as T;
        let raw = archive(&[
            ("dist", T::Directory, b"", None),
            ("dist/a.txt", T::Regular, b"hello", None),
            ("dist/ok", T::Symlink, b"", Some("a.txt")),
            ("dist/evil", T::Symlink, b"", Some("/etc/passwd")),
            ("dist/up", T::Symlink, b"", Some("../../../etc/shadow")),
            ("dist/big", T::Regular, &[0u8; 5000], None),
            ("dist/small", T::Regular, b"fits", None),
        ]);
        // Room for four headers, two data blocks and the end of the archive.
        let bundle = bundle(&[("out/dist", Ok(raw))], 4 * 512 + 2 * 512 + 1024);
        assert_eq!(kept(&bundle), ["out/dist/a.txt", "out/dist/ok", "out/dist/small"]);
        assert_eq!(
            skipped(&bundle),
            [("out/dist/evil", "link"), ("out/dist/up", "link"), ("out/dist/big", "artifact")]
        );
        let names: Vec<String> = reread(&bundle).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["out/dist", "out/dist/a.txt", "out/dist/ok", "out/dist/small"]);
        assert_eq!(bundle.tar.len(), 4 * 512 + 2 * 512 + 1024);
    }

    #[test]
    fn refuses_names_that_climb_out_and_reports_missing_paths() {
        let raw = archive(&[("../escape", tar::EntryType::Regular, b"x", None)]);
        let bundle =
            bundle(&[("f", Ok(raw)), ("missing", Err("not found in the workspace")), ("../up", Ok(vec![]))], 1 << 20);
        assert!(bundle.files.is_empty());
        assert_eq!(skipped(&bundle), [("../escape", "path"), ("missing", "not"), ("../up", "path")]);
        assert_eq!(bundle.skipped[1].reason, "not found in the workspace");
    }

    #[test]
    fn reads_the_same_bundle_whatever_the_chunk_size() {
        use tar::EntryType as T;
        let long = format!("{}/deep.txt", "d".repeat(120));
        let raw = archive(&[("out", T::Directory, b"", None), ("out/a.txt", T::Regular, &[b'a'; 700], None)]);
        let mut b = tar::Builder::new(raw[..raw.len() - 1024].to_vec());
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        b.append_data(&mut h, format!("out/{long}"), &b"abc"[..]).expect("long name");
        let raw = b.into_inner().expect("tar");
        let want = bundle_with(&[("out", Ok(raw.clone()))], 1 << 20, &[], 1 << 20).0;
        assert_eq!(kept(&want), ["out/a.txt".to_owned(), format!("out/{long}")]);
        for chunk in [1, 3, 512, 777] {
            assert_eq!(bundle_with(&[("out", Ok(raw.clone()))], 1 << 20, &[], chunk).0, want, "chunk {chunk}");
        }
    }

    #[test]
    fn a_workspace_path_reached_twice_is_stored_once() {
        use tar::EntryType as T;
        let dir = archive(&[("out", T::Directory, b"", None), ("out/a.txt", T::Regular, b"aaaa", None)]);
        let file = archive(&[("a.txt", T::Regular, b"aaaa", None)]);
        // (requested paths in order, kept, skipped)
        type Case<'a> = (&'a [&'a str], &'a [&'a str], &'a [(&'a str, &'a str)]);
        let table: [Case<'_>; 4] = [
            (&["out/a.txt", "out/a.txt"], &["out/a.txt"], &[("out/a.txt", "duplicate")]),
            (&["out", "out/a.txt"], &["out/a.txt"], &[("out/a.txt", "duplicate")]),
            (&["out", "./out/../out"], &["out/a.txt"], &[("out", "duplicate")]),
            (&["out/a.txt", "out"], &["out/a.txt"], &[("out/a.txt", "duplicate")]),
        ];
        for (paths, want_kept, want_skipped) in table {
            let archives: Vec<(&str, Result<Vec<u8>, &str>)> =
                paths.iter().map(|p| (*p, Ok(if p.ends_with("a.txt") { file.clone() } else { dir.clone() }))).collect();
            let (bundle, read) = bundle_with(&archives, 1 << 20, &[], 64);
            assert_eq!(kept(&bundle), want_kept, "{paths:?}");
            assert_eq!(skipped(&bundle), want_skipped, "{paths:?}");
            let files: Vec<String> =
                reread(&bundle).into_iter().map(|(n, _)| n).filter(|n| n.ends_with("a.txt")).collect();
            assert_eq!(files, ["out/a.txt"], "{paths:?}");
            if paths[1] != "out" {
                assert_eq!(read[1], 0, "a duplicate listing is not even read: {paths:?}");
            }
        }
    }

    #[test]
    fn a_file_holding_a_secret_value_is_left_out_and_named() {
        use tar::EntryType as T;
        let secret = "s3cr3t-artifact-value-42";
        let b64 = base64::engine::general_purpose::STANDARD.encode(format!("xy{secret}"));
        let mut far = vec![b'.'; SCAN_WINDOW + 1000];
        // Across the seam between the first two scan windows.
        far[SCAN_WINDOW - 10..SCAN_WINDOW - 10 + secret.len()].copy_from_slice(secret.as_bytes());
        let plain = format!("token={secret}\n");
        let raw = archive(&[
            ("out", T::Directory, b"", None),
            ("out/plain.txt", T::Regular, plain.as_bytes(), None),
            ("out/b64.txt", T::Regular, b64.as_bytes(), None),
            ("out/far.bin", T::Regular, &far, None),
            ("out/clean.txt", T::Regular, b"nothing to see", None),
            ("out/link", T::Symlink, b"", Some(secret)),
        ]);
        let named = format!("out/{secret}.txt");
        let named_raw = archive(&[(named.as_str(), T::Regular, b"x", None)]);
        let (bundle, _) = bundle_with(&[("out", Ok(raw)), ("out2", Ok(named_raw))], 64 << 20, &[secret], 4096);
        assert_eq!(kept(&bundle), ["out/clean.txt"]);
        assert_eq!(
            skipped(&bundle),
            [
                ("out/plain.txt", "it"),
                ("out/b64.txt", "it"),
                ("out/far.bin", "it"),
                ("out/link", "its"),
                ("out/***.txt", "its")
            ]
        );
        assert!(bundle.skipped[..3].iter().all(|s| s.reason == "it held a secret value"));
        let debug = format!("{bundle:?}");
        assert!(!debug.contains(secret) && !debug.contains(&b64), "the value reached the bundle or its report");
        let names: Vec<String> = reread(&bundle).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["out", "out/clean.txt"]);
    }

    #[test]
    fn once_nothing_more_fits_nothing_more_is_read() {
        use tar::EntryType as T;
        let mut entries: Vec<(String, Vec<u8>)> = (0..10).map(|i| (format!("d/f{i}"), vec![b'x'; 1000])).collect();
        entries.push(("d/last".into(), Vec::new()));
        let refs: Vec<Entry<'_>> = entries.iter().map(|(n, d)| (n.as_str(), T::Regular, d.as_slice(), None)).collect();
        let raw = archive(&refs);
        let max = 3 * (512 + 1024) + 1024;
        let (bundle, read) = bundle_with(&[("d", Ok(raw.clone())), ("more", Ok(raw.clone()))], max, &[], 512);
        assert_eq!(kept(&bundle), ["d/f0", "d/f1", "d/f2"]);
        assert_eq!(skipped(&bundle), [("d/f3", "artifact"), ("d", "rest"), ("more", "not")]);
        assert!(read[0] < raw.len() / 2, "read {} of {} bytes", read[0], raw.len());
        assert_eq!(read[1], 0);
        assert_eq!(bundle.tar.len() as u64, max);
    }

    #[test]
    fn the_bundle_stays_within_the_cap_however_many_empty_entries() {
        use tar::EntryType as T;
        let names: Vec<String> = (0..5000).map(|i| format!("d/e{i}")).collect();
        let refs: Vec<Entry<'_>> = names.iter().map(|n| (n.as_str(), T::Regular, &b""[..], None)).collect();
        let bundle = bundle(&[("d", Ok(archive(&refs)))], 100 * 1024);
        assert!(bundle.tar.len() <= 100 * 1024, "{}", bundle.tar.len());
        assert_eq!(bundle.files.len(), 198);
    }
}
