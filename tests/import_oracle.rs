//! `cairn import` checked against umoci: a multi-layer image is built
//! offline with umoci (init, new, unpack, repack from a busybox rootfs, raw
//! add-layer for hand-made layers, config) with deletions (whiteouts), an
//! opaque directory, a file re-added after deletion, hard links within and
//! across layers, symlink <-> directory swaps, a fifo, setuid/setgid files,
//! non-root owners, long names and xattrs; skopeo turns it into
//! docker-archive and oci-archive files. `unsquashfs -d` of cairn's output
//! must match `umoci unpack` of the same image entry by entry (type, mode,
//! owner, size, content hash, link target, hard-link groups, xattrs), except
//! for `/.cairn`. Runs as root (umoci unpack and unsquashfs keep owners).

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::Command;

use common::oracle_image::{long_file, test_image};
use common::tree::assert_same_tree;
use common::{Who, assert_success, cairn_as, have_tool, is_root, output, require, run_ok, scratch};

fn tools_ready() -> bool {
    require(is_root(), "root (umoci unpack and unsquashfs keep owners)")
        && require(have_tool("umoci"), "umoci")
        && require(have_tool("unsquashfs"), "unsquashfs")
        && require(have_tool("getfattr"), "getfattr")
}

fn import_and_extract(who: &Who, src: &str, name: &str) -> PathBuf {
    let dir = scratch(&format!("oracle-{name}"));
    let out = dir.join("image.sqfs");
    let result = output(cairn_as(who).arg("import").arg(src).arg("-o").arg(&out));
    assert_success(&result, &format!("cairn import {src} as {}", who.label()));
    let x = dir.join("x");
    run_ok(
        Command::new("unsquashfs").arg("-d").arg(&x).arg(&out),
        "unsquashfs",
    );
    x
}

#[test]
fn oci_layout_matches_umoci_unpack() {
    if !tools_ready() {
        return;
    }
    let img = test_image();
    let x = import_and_extract(&Who::Me, &format!("oci:{}:t", img.layout.display()), "oci");
    assert_same_tree(&x, &img.oracle, "oci layout");
    // The changes the layers made, spelled out (the oracle agrees above).
    let read = |p: &str| fs::read_to_string(x.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    assert_eq!(read("etc/old"), "re-added\n");
    assert!(!x.join("etc/gone").exists());
    assert!(!x.join("etc/os-release").exists());
    assert!(!x.join("opt/app/data").exists());
    assert_eq!(read("opt/app/fresh"), "fresh\n");
    assert!(
        fs::symlink_metadata(x.join("swap/d"))
            .expect("swap/d")
            .file_type()
            .is_symlink()
    );
    assert!(x.join("swap/s/inner").is_file());
    assert_eq!(read(&long_file()), "long\n");
    assert_eq!(
        fs::metadata(x.join("usr/local/bin/su2"))
            .expect("su2")
            .mode()
            & 0o7777,
        0o4755
    );
    let meta = fs::read_to_string(x.join(".cairn/image.json")).expect("image.json");
    assert!(
        meta.contains("FOO=bar") && meta.contains("org.example"),
        "{meta}"
    );
}

#[test]
fn hard_link_to_a_later_replaced_file_keeps_its_old_content() {
    if !tools_ready() {
        return;
    }
    let img = test_image();
    let x = import_and_extract(
        &Who::Me,
        &format!("oci:{}:t", img.layout.display()),
        "links",
    );
    assert_eq!(fs::read_to_string(x.join("srv/a")).expect("a"), "v2\n");
    assert_eq!(fs::read_to_string(x.join("srv/b")).expect("b"), "v0\n");
    let bb = fs::metadata(x.join("bin/busybox")).expect("busybox");
    let link = fs::metadata(x.join("bin/bb-link")).expect("bb-link");
    assert_eq!(
        bb.ino(),
        link.ino(),
        "bin/bb-link is a hard link to bin/busybox"
    );
}

#[test]
fn docker_archive_matches_umoci_unpack() {
    if !tools_ready() || !require(have_tool("skopeo"), "skopeo") {
        return;
    }
    let img = test_image();
    let da = img.docker_archive.as_ref().expect("docker archive");
    let x = import_and_extract(
        &Who::Me,
        &format!("docker-archive:{}", da.display()),
        "docker",
    );
    assert_same_tree(&x, &img.oracle, "docker-archive");
}

#[test]
fn oci_archive_matches_umoci_unpack() {
    if !tools_ready() || !require(have_tool("skopeo"), "skopeo") {
        return;
    }
    let img = test_image();
    let oa = img.oci_archive.as_ref().expect("oci archive");
    let x = import_and_extract(
        &Who::Me,
        &format!("oci-archive:{}:t", oa.display()),
        "ociar",
    );
    assert_same_tree(&x, &img.oracle, "oci-archive");
}

#[test]
fn ordinary_user_imports_the_same_bytes() {
    if !tools_ready() {
        return;
    }
    let Some(user) = common::ordinary_user() else {
        return;
    };
    let img = test_image();
    let src = format!("oci:{}:t", img.layout.display());
    let mut images = Vec::new();
    for (who, name) in [(Who::Me, "repro-root"), (user, "repro-user")] {
        let dir = scratch(name);
        let out = dir.join("image.sqfs");
        let r = output(
            cairn_as(&who)
                .env("SOURCE_DATE_EPOCH", "1700000000")
                .arg("import")
                .arg(&src)
                .arg("-o")
                .arg(&out),
        );
        assert_success(&r, &format!("import as {}", who.label()));
        images.push(fs::read(&out).expect("read image"));
    }
    assert!(
        images[0] == images[1],
        "root and the ordinary user must produce the same image bytes"
    );
}

#[test]
fn inspect_shows_config_layers_and_digest() {
    if !tools_ready() {
        return;
    }
    let img = test_image();
    let dir = scratch("inspect");
    let out = dir.join("image.sqfs");
    let r = output(
        cairn_as(&Who::Me)
            .arg("import")
            .arg(format!("oci:{}:t", img.layout.display()))
            .arg("-o")
            .arg(&out),
    );
    assert_success(&r, "import");
    let json = run_ok(
        cairn_as(&Who::Me).arg("inspect").arg("--json").arg(&out),
        "inspect --json",
    );
    let v: serde_json::Value = serde_json::from_str(&json).expect("inspect json");
    let digest = format!("sha256:{}", common::sha256_file(&out));
    assert_eq!(v["digest"], serde_json::Value::String(digest.clone()));
    assert_eq!(
        v["size"].as_u64(),
        Some(fs::metadata(&out).expect("md").len())
    );
    let meta = &v["meta"];
    assert_eq!(meta["config"]["cmd"][0], "sh");
    assert_eq!(meta["config"]["working_dir"], "/opt");
    assert_eq!(meta["config"]["user"], "1000:1000");
    assert_eq!(meta["config"]["labels"]["org.example"], "cairn");
    assert_eq!(meta["layers"].as_array().map(Vec::len), Some(5));
    assert!(
        meta["manifest_digest"]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:"))
    );
    let text = run_ok(cairn_as(&Who::Me).arg("inspect").arg(&out), "inspect");
    assert!(text.contains(&digest) && text.contains("FOO=bar"), "{text}");
}
