//! Reads a tar archive as it arrives, chunk by chunk, without ever holding it whole.
//!
//! Only the framing is done here (512-byte blocks, which entries are extensions, how
//! many data bytes follow); every header, with the extension entries before it (GNU
//! long names and links, PAX records), is interpreted by the `tar` crate, so the
//! artifact rules see the names, link targets and sizes `tar` itself would. Data
//! reaches the caller as slices of the chunks it was fed, so nothing is copied here.

use std::borrow::Cow;
use std::path::PathBuf;

const BLOCK: u64 = 512;

/// Most bytes of extension entries (long names, PAX records) kept for one header.
const MAX_EXTENSIONS: u64 = 64 * 1024;

/// One entry's header, as `tar` reads it.
pub(crate) struct EntryHead {
    /// The main header (without its extension entries).
    pub header: tar::Header,
    /// The entry's name (long names and PAX paths applied).
    pub path: PathBuf,
    /// The link target, for links.
    pub link: Option<PathBuf>,
    /// Data bytes that follow (a PAX size applied).
    pub size: u64,
}

/// What the archive holds, in order: a head, its data in pieces, its end.
pub(crate) enum Piece<'a> {
    Head(Box<EntryHead>),
    Data(&'a [u8]),
    EntryEnd,
}

/// Whether the caller wants more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    Continue,
    Stop,
}

/// Why the rest of an archive could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ArchiveError {
    #[error("unreadable archive header")]
    Header,
    #[error("archive extension headers too large")]
    Extensions,
    #[error("sparse archive entries are not supported")]
    Sparse,
    #[error("archive ends inside an entry")]
    Truncated,
}

enum State {
    /// Collecting a header block.
    Header,
    /// Collecting extension data (and its padding) for the next header.
    Extension { left: u64 },
    /// An entry's data.
    Data { left: u64, padding: u64 },
    /// Bytes read past: padding, or an entry nobody reads (a global PAX header).
    Skip { left: u64 },
    /// The end-of-archive block was read; anything after it is ignored.
    End,
}

/// A tar archive being read as it streams in.
pub(crate) struct ArchiveStream {
    state: State,
    block: Vec<u8>,
    extensions: Vec<u8>,
}

fn padded(size: u64) -> u64 {
    size.div_ceil(BLOCK).saturating_mul(BLOCK)
}

fn skip(left: u64) -> State {
    if left == 0 { State::Header } else { State::Skip { left } }
}

impl ArchiveStream {
    pub(crate) fn new() -> Self {
        Self { state: State::Header, block: Vec::with_capacity(BLOCK as usize), extensions: Vec::new() }
    }

    /// Reads one chunk, handing every piece to `on` until it says stop.
    pub(crate) fn feed(
        &mut self,
        mut chunk: &[u8],
        on: &mut dyn FnMut(Piece<'_>) -> Flow,
    ) -> Result<Flow, ArchiveError> {
        while !chunk.is_empty() {
            match &mut self.state {
                State::End => return Ok(Flow::Continue),
                State::Header => {
                    let take = (BLOCK as usize - self.block.len()).min(chunk.len());
                    self.block.extend_from_slice(&chunk[..take]);
                    chunk = &chunk[take..];
                    if self.block.len() == BLOCK as usize && self.header(on)? == Flow::Stop {
                        return Ok(Flow::Stop);
                    }
                }
                State::Extension { left } => {
                    let take = usize::try_from(*left).unwrap_or(usize::MAX).min(chunk.len());
                    self.extensions.extend_from_slice(&chunk[..take]);
                    chunk = &chunk[take..];
                    *left -= take as u64;
                    if *left == 0 {
                        self.state = State::Header;
                    }
                }
                State::Skip { left } => {
                    let take = usize::try_from(*left).unwrap_or(usize::MAX).min(chunk.len());
                    chunk = &chunk[take..];
                    *left -= take as u64;
                    if *left == 0 {
                        self.state = State::Header;
                    }
                }
                State::Data { left, padding } => {
                    let take = usize::try_from(*left).unwrap_or(usize::MAX).min(chunk.len());
                    let (data, rest) = chunk.split_at(take);
                    chunk = rest;
                    *left -= take as u64;
                    let (done, padding) = (*left == 0, *padding);
                    if done {
                        self.state = skip(padding);
                    }
                    if on(Piece::Data(data)) == Flow::Stop || (done && on(Piece::EntryEnd) == Flow::Stop) {
                        return Ok(Flow::Stop);
                    }
                }
            }
        }
        Ok(Flow::Continue)
    }

    /// Checks that the archive ended where an entry may end.
    pub(crate) fn finish(&self) -> Result<(), ArchiveError> {
        match self.state {
            State::End => Ok(()),
            // Docker's archives end with zero blocks; one that just stops between entries
            // is read as complete, as `tar` would.
            State::Header if self.block.is_empty() && self.extensions.is_empty() => Ok(()),
            _ => Err(ArchiveError::Truncated),
        }
    }

    /// A full header block is in `self.block`.
    fn header(&mut self, on: &mut dyn FnMut(Piece<'_>) -> Flow) -> Result<Flow, ArchiveError> {
        let block = std::mem::replace(&mut self.block, Vec::with_capacity(BLOCK as usize));
        if block.iter().all(|b| *b == 0) {
            if !self.extensions.is_empty() {
                return Err(ArchiveError::Header);
            }
            self.state = State::End;
            return Ok(Flow::Continue);
        }
        let header = tar::Header::from_byte_slice(&block);
        let kind = header.entry_type();
        let size = header.entry_size().map_err(|_| ArchiveError::Header)?;
        if kind.is_gnu_longname() || kind.is_gnu_longlink() || kind.is_pax_local_extensions() {
            // Kept, with its header, until the entry it describes: `tar` reads them together.
            let held = self.extensions.len() as u64 + BLOCK + padded(size);
            if held > MAX_EXTENSIONS {
                return Err(ArchiveError::Extensions);
            }
            self.extensions.extend_from_slice(&block);
            self.state = if size == 0 { State::Header } else { State::Extension { left: padded(size) } };
            return Ok(Flow::Continue);
        }
        if kind.is_pax_global_extensions() {
            self.state = skip(padded(size));
            return Ok(Flow::Continue);
        }
        if kind.is_gnu_sparse() {
            return Err(ArchiveError::Sparse);
        }
        let mut described = std::mem::take(&mut self.extensions);
        described.extend_from_slice(&block);
        let head = read_head(&described).ok_or(ArchiveError::Header)?;
        let size = head.size;
        let padding = padded(size) - size;
        self.state = if size == 0 { skip(padding) } else { State::Data { left: size, padding } };
        if on(Piece::Head(Box::new(head))) == Flow::Stop || (size == 0 && on(Piece::EntryEnd) == Flow::Stop) {
            return Ok(Flow::Stop);
        }
        Ok(Flow::Continue)
    }
}

/// The first entry of a header and its extensions, as `tar` reads it (checksums too).
fn read_head(described: &[u8]) -> Option<EntryHead> {
    let mut archive = tar::Archive::new(described);
    let entry = archive.entries().ok()?.next()?.ok()?;
    Some(EntryHead {
        header: entry.header().clone(),
        path: entry.path().ok()?.into_owned(),
        link: entry.link_name().ok()?.map(Cow::into_owned),
        size: entry.size(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a stream reports, as text: `name:size` heads, data lengths summed per entry.
    fn read(archive: &[u8], chunk: usize) -> (Vec<String>, Result<(), ArchiveError>) {
        let mut stream = ArchiveStream::new();
        let mut seen = Vec::new();
        let mut data = 0usize;
        let mut on = |piece: Piece<'_>| {
            match piece {
                Piece::Head(head) => seen.push(format!("{}:{}", head.path.display(), head.size)),
                Piece::Data(bytes) => data += bytes.len(),
                Piece::EntryEnd => {
                    seen.push(format!("end:{data}"));
                    data = 0;
                }
            }
            Flow::Continue
        };
        for piece in archive.chunks(chunk) {
            if let Err(e) = stream.feed(piece, &mut on) {
                return (seen, Err(e));
            }
        }
        (seen, stream.finish())
    }

    fn sample() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let long = format!("dir/{}/file.txt", "n".repeat(150));
        for (name, data) in [("a.txt", &b"hello"[..]), (long.as_str(), &[7u8; 1000][..]), ("empty", &b""[..])] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, name, data).expect("append");
        }
        b.into_inner().expect("tar")
    }

    #[test]
    fn reads_the_same_entries_whatever_the_chunk_size() {
        let long = format!("dir/{}/file.txt", "n".repeat(150));
        let want = vec![
            "a.txt:5".to_owned(),
            "end:5".into(),
            format!("{long}:1000"),
            "end:1000".into(),
            "empty:0".into(),
            "end:0".into(),
        ];
        for chunk in [1, 7, 511, 512, 513, 4096, 1 << 20] {
            assert_eq!(read(&sample(), chunk), (want.clone(), Ok(())), "chunk {chunk}");
        }
    }

    #[test]
    fn an_archive_cut_inside_an_entry_or_with_a_bad_checksum_is_refused() {
        let archive = sample();
        assert_eq!(read(&archive[..600], 64).1, Err(ArchiveError::Truncated));
        let mut broken = archive.clone();
        broken[0] ^= 1;
        assert_eq!(read(&broken, 64).1, Err(ArchiveError::Header));
    }
}
