//! `cairn import` against hand-made hostile and broken images: OCI layouts
//! written by the test itself (blobs, manifest, config, index) with layers
//! built with raw tar headers (`../` paths, bad whiteouts, escaping or
//! missing hard-link targets, absurd sizes), truncated gzip streams and
//! digest mismatches. Each must fail with exit 125 and a message naming the
//! layer (or blob) and the entry, and leave nothing at or beside the output.
//! Runs as root and as the ordinary user: import needs no privileges.

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Who, assert_success, cairn_as, callers, output, scratch, stderr_of};
use sha2::{Digest, Sha256};

fn sha(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// A raw tar entry: the name goes into the header unchecked (so `../x`
/// and `/abs` are possible); `size` may lie about the data that follows.
struct Raw {
    name: Vec<u8>,
    kind: tar::EntryType,
    link: Vec<u8>,
    data: Vec<u8>,
    size: Option<u64>,
    mode: u32,
}

fn raw(name: &str, kind: tar::EntryType) -> Raw {
    Raw {
        name: name.as_bytes().to_vec(),
        kind,
        link: Vec::new(),
        data: Vec::new(),
        size: None,
        mode: if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        },
    }
}

fn file(name: &str, data: &str) -> Raw {
    Raw {
        data: data.as_bytes().to_vec(),
        ..raw(name, tar::EntryType::Regular)
    }
}

fn hardlink(name: &str, target: &str) -> Raw {
    Raw {
        link: target.as_bytes().to_vec(),
        ..raw(name, tar::EntryType::Link)
    }
}

/// A tar stream of raw entries (no end-of-archive check on what follows).
fn tar_bytes(entries: &[Raw]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let mut h = tar::Header::new_gnu();
        {
            let old = h.as_old_mut();
            old.name = [0; 100];
            old.name[..e.name.len()].copy_from_slice(&e.name);
            old.linkname = [0; 100];
            old.linkname[..e.link.len()].copy_from_slice(&e.link);
        }
        h.set_entry_type(e.kind);
        h.set_mode(e.mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_size(e.size.unwrap_or(e.data.len() as u64));
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(&e.data);
        let pad = (512 - e.data.len() % 512) % 512;
        out.extend(std::iter::repeat_n(0u8, pad));
    }
    out.extend(std::iter::repeat_n(0u8, 1024));
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).expect("gzip");
    enc.finish().expect("gzip finish")
}

/// How to break an image after writing it correctly.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Break {
    Nothing,
    /// Flip a byte of the first layer's blob (its name keeps the old digest).
    LayerBlob,
    /// The config's diff_id for the first layer is wrong.
    DiffId,
    /// Cut the first (gzip) layer blob short, digest updated to match.
    TruncateGzip,
    /// Change the manifest after it was referenced.
    ManifestBlob,
}

struct Image {
    dir: PathBuf,
    layer_digests: Vec<String>,
}

fn write_blob(dir: &Path, bytes: &[u8]) -> (String, u64) {
    let digest = sha(bytes);
    let hex = digest.trim_start_matches("sha256:");
    fs::write(dir.join("blobs/sha256").join(hex), bytes).expect("write blob");
    (digest, bytes.len() as u64)
}

/// Writes an OCI layout with one gzip layer per tar stream (bottom first).
fn oci_image(parent: &Path, layers: &[Vec<u8>], how: Break) -> Image {
    let dir = parent.join("oci");
    fs::create_dir_all(dir.join("blobs/sha256")).expect("mkdir layout");
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).expect("oci-layout");
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    let mut layer_digests = Vec::new();
    for (i, tar) in layers.iter().enumerate() {
        let mut blob = gzip(tar);
        let mut diff_id = sha(tar);
        if i == 0 && how == Break::DiffId {
            diff_id = sha(b"something else");
        }
        if i == 0 && how == Break::TruncateGzip {
            blob.truncate(blob.len() / 2);
        }
        let (digest, size) = write_blob(&dir, &blob);
        if i == 0 && how == Break::LayerBlob {
            let hex = digest.trim_start_matches("sha256:");
            let mut bytes = blob.clone();
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0x55;
            fs::write(dir.join("blobs/sha256").join(hex), bytes).expect("corrupt");
        }
        descs.push(format!(
            r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{digest}","size":{size}}}"#
        ));
        diff_ids.push(format!("\"{diff_id}\""));
        layer_digests.push(digest);
    }
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{"Env":["PATH=/bin"],"Cmd":["sh"]}},"rootfs":{{"type":"layers","diff_ids":[{}]}}}}"#,
        diff_ids.join(",")
    );
    let (cdigest, csize) = write_blob(&dir, config.as_bytes());
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cdigest}","size":{csize}}},"layers":[{}]}}"#,
        descs.join(",")
    );
    let (mdigest, msize) = write_blob(&dir, manifest.as_bytes());
    if how == Break::ManifestBlob {
        let hex = mdigest.trim_start_matches("sha256:");
        let changed = manifest.replace("schemaVersion\":2", "schemaVersion\":3");
        fs::write(dir.join("blobs/sha256").join(hex), changed).expect("change manifest");
    }
    fs::write(
        dir.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{mdigest}","size":{msize},"annotations":{{"org.opencontainers.image.ref.name":"t"}}}}]}}"#
        ),
    )
    .expect("index.json");
    Image { dir, layer_digests }
}

fn base_layer() -> Vec<u8> {
    tar_bytes(&[
        raw("etc", tar::EntryType::Directory),
        file("etc/hostname", "box\n"),
        file("etc/passwd", "root:x:0:0::/:/bin/sh\n"),
    ])
}

/// Runs `cairn import` as `who` into a fresh directory; returns the
/// output, its directory and the command's result.
fn import_as(who: &Who, src: &str, name: &str) -> (PathBuf, PathBuf, std::process::Output) {
    let out_dir = scratch(&format!("import-out-{name}"));
    let out = out_dir.join("image.sqfs");
    let result = output(cairn_as(who).arg("import").arg(src).arg("-o").arg(&out));
    (out, out_dir, result)
}

/// The import must fail with 125, name everything in `needles`, and leave
/// no file at all in the output directory (no temporary either).
#[track_caller]
fn assert_refused(who: &Who, img: &Image, needles: &[&str], name: &str) {
    let src = format!("oci:{}:t", img.dir.display());
    let (out, out_dir, result) = import_as(who, &src, name);
    let err = stderr_of(&result);
    assert_eq!(
        result.status.code(),
        Some(125),
        "{name}: expected exit 125, got {:?}; stderr:\n{err}",
        result.status
    );
    for n in needles {
        assert!(
            err.contains(n),
            "{name}: stderr does not name {n:?}:\n{err}"
        );
    }
    assert!(!out.exists(), "{name}: output left behind");
    let left: Vec<_> = fs::read_dir(&out_dir).expect("read out dir").collect();
    assert!(
        left.is_empty(),
        "{name}: files left in the output directory: {left:?}"
    );
}

fn hostile(name: &str, entries: Vec<Raw>, needles: &[&str]) {
    for who in callers() {
        let dir = scratch(&format!("hostile-{name}"));
        let img = oci_image(&dir, &[base_layer(), tar_bytes(&entries)], Break::Nothing);
        let mut needles: Vec<&str> = needles.to_vec();
        needles.push(&img.layer_digests[1]);
        assert_refused(&who, &img, &needles, name);
    }
}

#[test]
fn dotdot_path_is_refused() {
    hostile("dotdot", vec![file("../../escape", "x")], &["../../escape"]);
}

#[test]
fn dotdot_inside_a_path_is_refused() {
    hostile(
        "dotdot-mid",
        vec![file("etc/../../x", "x")],
        &["etc/../../x"],
    );
}

#[test]
fn bad_whiteouts_are_refused() {
    hostile(
        "wh-dotdot",
        vec![raw("etc/.wh..", tar::EntryType::Regular)],
        &["etc/.wh.."],
    );
    hostile(
        "wh-empty",
        vec![raw("etc/.wh.", tar::EntryType::Regular)],
        &["etc/.wh."],
    );
    hostile(
        "wh-dir",
        vec![file("etc/.wh.x/y", "inside a whiteout")],
        &["etc/.wh.x/y"],
    );
}

#[test]
fn hard_link_to_missing_file_is_refused() {
    hostile(
        "link-missing",
        vec![hardlink("etc/l", "etc/nothing-here")],
        &["etc/l", "etc/nothing-here"],
    );
}

#[test]
fn escaping_hard_link_is_refused() {
    hostile(
        "link-escape",
        vec![hardlink("etc/l", "../../../etc/shadow")],
        &["etc/l", "../../../etc/shadow"],
    );
}

#[test]
fn absurd_size_is_refused() {
    let mut e = file("etc/huge", "only a few bytes");
    e.size = Some(1 << 40);
    hostile("absurd-size", vec![e], &["etc/huge"]);
}

#[test]
fn unsupported_entry_type_is_refused() {
    hostile(
        "odd-type",
        vec![raw("etc/odd", tar::EntryType::new(b'Z'))],
        &["etc/odd"],
    );
    // Old GNU sparse files are refused as docker, containerd and umoci
    // refuse them, the error naming the entry and what to write instead.
    hostile(
        "sparse",
        vec![
            file("etc/before", "b"),
            raw("etc/sparse", tar::EntryType::GNUSparse),
        ],
        &["etc/sparse", "GNUSparse", "--format=pax"],
    );
}

#[test]
fn absolute_paths_are_normalised() {
    let dir = scratch("abs-paths");
    let img = oci_image(
        &dir,
        &[
            base_layer(),
            tar_bytes(&[file("/etc/abs", "abs\n"), file("./etc/dot", "dot\n")]),
        ],
        Break::Nothing,
    );
    let (out, _, result) = import_as(&Who::Me, &format!("oci:{}", img.dir.display()), "abs");
    assert_success(&result, "import with absolute paths");
    let x = scratch("abs-x").join("x");
    let un = output(Command::new("unsquashfs").arg("-d").arg(&x).arg(&out));
    assert_success(&un, "unsquashfs");
    assert_eq!(fs::read_to_string(x.join("etc/abs")).expect("abs"), "abs\n");
    assert_eq!(fs::read_to_string(x.join("etc/dot")).expect("dot"), "dot\n");
}

#[test]
fn symlinks_pointing_outside_are_kept_as_is() {
    let dir = scratch("symlink-out");
    let mut sl = raw("etc/out", tar::EntryType::Symlink);
    sl.link = b"../../../../etc/shadow".to_vec();
    let img = oci_image(&dir, &[base_layer(), tar_bytes(&[sl])], Break::Nothing);
    let (out, _, result) = import_as(&Who::Me, &format!("oci:{}", img.dir.display()), "sl");
    assert_success(&result, "import with an outward symlink");
    let x = scratch("symlink-out-x").join("x");
    assert_success(
        &output(Command::new("unsquashfs").arg("-d").arg(&x).arg(&out)),
        "unsquashfs",
    );
    assert_eq!(
        fs::read_link(x.join("etc/out")).expect("readlink"),
        Path::new("../../../../etc/shadow")
    );
}

fn broken(how: Break, name: &str, needles: &[&str], layer_named: bool) {
    for who in callers() {
        let dir = scratch(&format!("broken-{name}"));
        let img = oci_image(&dir, &[base_layer(), tar_bytes(&[file("etc/x", "x")])], how);
        let mut needles = needles.to_vec();
        if layer_named {
            needles.push(&img.layer_digests[0]);
        }
        assert_refused(&who, &img, &needles, name);
    }
}

#[test]
fn layer_blob_digest_mismatch_is_refused() {
    broken(Break::LayerBlob, "blob-digest", &["digest mismatch"], true);
}

#[test]
fn diff_id_mismatch_is_refused() {
    broken(Break::DiffId, "diff-id", &["diff_ids"], true);
}

#[test]
fn truncated_gzip_layer_is_refused() {
    broken(Break::TruncateGzip, "truncated-gzip", &[], true);
}

#[test]
fn manifest_digest_mismatch_is_refused() {
    broken(
        Break::ManifestBlob,
        "manifest-digest",
        &["manifest", "digest mismatch"],
        false,
    );
}

#[test]
fn missing_source_and_unknown_tag_are_refused() {
    let dir = scratch("missing-src");
    let img = oci_image(&dir, &[base_layer()], Break::Nothing);
    let (_, _, r) = import_as(&Who::Me, &format!("oci:{}:nope", img.dir.display()), "tag");
    assert_eq!(r.status.code(), Some(125));
    assert!(stderr_of(&r).contains("nope"), "{}", stderr_of(&r));
    let (_, _, r) = import_as(&Who::Me, "oci:/nonexistent/layout", "nodir");
    assert_eq!(r.status.code(), Some(125));
    assert!(
        stderr_of(&r).contains("/nonexistent/layout"),
        "{}",
        stderr_of(&r)
    );
    let (_, _, r) = import_as(&Who::Me, "docker://busybox", "transport");
    assert_eq!(r.status.code(), Some(125));
    assert!(
        stderr_of(&r).contains("docker://busybox"),
        "{}",
        stderr_of(&r)
    );
}
