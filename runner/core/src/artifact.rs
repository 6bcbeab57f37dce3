//! Artifacts: the workspace paths a spec asks to keep, filtered into one tar bundle.
//!
//! Backends hand over raw tar archives of the requested paths; the filtering happens
//! here, once for every backend: entries are re-rooted under their workspace path,
//! anything with an absolute name or `..` is dropped, links pointing outside the
//! workspace are dropped (never followed), and the bundle stops at a size cap.

use std::io::Read as _;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

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

/// A raw archive of one requested path, as a backend produced it: entry names are
/// relative to the requested path's parent directory (what `docker cp` produces).
#[derive(Debug, Clone)]
pub struct RawArtifact {
    /// The workspace-relative path that was requested.
    pub requested: String,
    /// The tar archive, or why it could not be produced.
    pub archive: Result<Vec<u8>, String>,
}

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

/// Filters raw archives into one bundle of at most `max_bytes` of file content.
pub fn bundle(raw: &[RawArtifact], max_bytes: u64) -> ArtifactBundle {
    let mut out = ArtifactBundle::default();
    let mut builder = tar::Builder::new(Vec::new());
    let mut total: u64 = 0;
    for item in raw {
        let parent = Path::new(&item.requested).parent().map(Path::to_path_buf).unwrap_or_default();
        let archive = match &item.archive {
            Ok(bytes) => bytes,
            Err(reason) => {
                out.skipped.push(SkippedArtifact { path: item.requested.clone(), reason: reason.clone() });
                continue;
            }
        };
        let mut reader = tar::Archive::new(archive.as_slice());
        let Ok(entries) = reader.entries() else {
            out.skipped.push(SkippedArtifact { path: item.requested.clone(), reason: "unreadable archive".into() });
            continue;
        };
        for entry in entries {
            let Ok(mut entry) = entry else {
                out.skipped.push(SkippedArtifact { path: item.requested.clone(), reason: "unreadable entry".into() });
                break;
            };
            let raw_name = entry.path().map(|p| p.into_owned()).unwrap_or_default();
            let shown = parent.join(&raw_name).display().to_string();
            let Some(name) = confined(&parent.join(&raw_name)) else {
                out.skipped.push(SkippedArtifact { path: shown, reason: "path leaves the workspace".into() });
                continue;
            };
            let kind = entry.header().entry_type();
            let mut header = entry.header().clone();
            if kind.is_symlink() || kind.is_hard_link() {
                let target = entry.link_name().ok().flatten().map(|t| t.into_owned()).unwrap_or_default();
                let base = if kind.is_symlink() {
                    name.parent().map(Path::to_path_buf).unwrap_or_default()
                } else {
                    PathBuf::new()
                };
                if target.is_absolute() || confined(&base.join(&target)).is_none() {
                    out.skipped.push(SkippedArtifact {
                        path: name.display().to_string(),
                        reason: format!("link to {} points outside the workspace (not followed)", target.display()),
                    });
                    continue;
                }
                if builder.append_data(&mut header, &name, std::io::empty()).is_ok() {
                    out.files.push(ArtifactFile { path: name.display().to_string(), bytes: 0 });
                }
                continue;
            }
            if !(kind.is_file() || kind.is_dir()) {
                out.skipped.push(SkippedArtifact {
                    path: name.display().to_string(),
                    reason: "not a file or directory".into(),
                });
                continue;
            }
            let size = entry.header().size().unwrap_or(0);
            if total.saturating_add(size) > max_bytes {
                out.skipped.push(SkippedArtifact {
                    path: name.display().to_string(),
                    reason: format!("artifact size cap of {max_bytes} bytes reached"),
                });
                continue;
            }
            let mut data = Vec::new();
            if entry.read_to_end(&mut data).is_err() {
                out.skipped
                    .push(SkippedArtifact { path: name.display().to_string(), reason: "unreadable content".into() });
                continue;
            }
            total += size;
            if builder.append_data(&mut header, &name, data.as_slice()).is_ok() && kind.is_file() {
                out.files.push(ArtifactFile { path: name.display().to_string(), bytes: size });
            }
        }
    }
    out.tar = builder.into_inner().unwrap_or_default();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(entries: &[(&str, tar::EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
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

    #[test]
    fn keeps_files_drops_escaping_links_and_stops_at_the_cap() {
        use tar::EntryType as T;
        let raw = archive(&[
            ("dist", T::Directory, b"", None),
            ("dist/a.txt", T::Regular, b"hello", None),
            ("dist/ok", T::Symlink, b"", Some("a.txt")),
            ("dist/evil", T::Symlink, b"", Some("/etc/passwd")),
            ("dist/up", T::Symlink, b"", Some("../../../etc/shadow")),
            ("dist/big", T::Regular, &[0u8; 100], None),
        ]);
        let bundle = bundle(&[RawArtifact { requested: "out/dist".into(), archive: Ok(raw) }], 50);
        let kept: Vec<&str> = bundle.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(kept, ["out/dist/a.txt", "out/dist/ok"]);
        let skipped: Vec<(&str, &str)> =
            bundle.skipped.iter().map(|s| (s.path.as_str(), s.reason.split(' ').next().unwrap_or(""))).collect();
        assert_eq!(skipped, [("out/dist/evil", "link"), ("out/dist/up", "link"), ("out/dist/big", "artifact")]);
        let mut names = Vec::new();
        let mut reread = tar::Archive::new(bundle.tar.as_slice());
        for e in reread.entries().expect("entries") {
            names.push(e.expect("entry").path().expect("path").display().to_string());
        }
        assert_eq!(names, ["out/dist", "out/dist/a.txt", "out/dist/ok"]);
    }

    #[test]
    fn refuses_names_that_climb_out_and_reports_missing_paths() {
        let raw = archive(&[("../escape", tar::EntryType::Regular, b"x", None)]);
        let bundle = bundle(
            &[
                RawArtifact { requested: "f".into(), archive: Ok(raw) },
                RawArtifact { requested: "missing".into(), archive: Err("not found".into()) },
            ],
            1 << 20,
        );
        assert!(bundle.files.is_empty());
        assert_eq!(bundle.skipped.len(), 2);
        assert_eq!(bundle.skipped[1].reason, "not found");
    }
}
