//! The bundler's rules, each on its own.

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
    assert_eq!(skipped(&bundle), [("out/dist/evil", "link"), ("out/dist/up", "link"), ("out/dist/big", "artifact")]);
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
        let files: Vec<String> = reread(&bundle).into_iter().map(|(n, _)| n).filter(|n| n.ends_with("a.txt")).collect();
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
