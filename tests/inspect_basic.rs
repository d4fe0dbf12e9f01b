//! `cairn inspect`: the text and JSON reports of an imported image (run as
//! root and as the ordinary user), an image made by `cairn squash` (no
//! metadata), a rootfs directory, and the failures (missing file, not a
//! squashfs): exit 125 naming the path.

mod common;

use std::fs;

use common::{Who, assert_success, cairn_as, callers, output, scratch, stderr_of, stdout_of};

fn tarball(dir: &std::path::Path) -> std::path::PathBuf {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_size(4);
    b.append_data(&mut h, "etc/hostname", &b"box\n"[..])
        .expect("append");
    let path = dir.join("root.tar");
    fs::write(&path, b.into_inner().expect("tar")).expect("write");
    path
}

#[test]
fn reports_an_imported_image() {
    let dir = scratch("inspect-basic");
    let tar = tarball(&dir);
    let image = dir.join("img.sqfs");
    let r = output(
        cairn_as(&Who::Me)
            .arg("import")
            .arg(format!("tar:{}", tar.display()))
            .arg("-o")
            .arg(&image),
    );
    assert_success(&r, "import");
    for who in callers() {
        let r = output(cairn_as(&who).arg("inspect").arg("--json").arg(&image));
        assert_success(&r, &format!("inspect --json as {}", who.label()));
        let v: serde_json::Value = serde_json::from_str(&stdout_of(&r)).expect("json");
        assert_eq!(
            v["size"].as_u64(),
            Some(fs::metadata(&image).expect("md").len())
        );
        assert!(
            v["digest"]
                .as_str()
                .is_some_and(|d| d.starts_with("sha256:"))
        );
        assert_eq!(
            v["meta"]["source"].as_str(),
            Some(format!("tar:{}", tar.display()).as_str())
        );
        assert_eq!(v["meta"]["schema_version"], 1);
        let r = output(cairn_as(&who).arg("inspect").arg(&image));
        assert_success(&r, "inspect");
        let text = stdout_of(&r);
        assert!(
            text.contains("layers:      1") && text.contains("digest:"),
            "{text}"
        );
    }
}

#[test]
fn image_without_metadata_and_directories() {
    let dir = scratch("inspect-nometa");
    let root = dir.join("root");
    fs::create_dir_all(root.join("etc")).expect("mkdir");
    fs::write(root.join("etc/hostname"), "x\n").expect("write");
    let image = dir.join("plain.sqfs");
    let r = output(cairn_as(&Who::Me).arg("squash").arg(&root).arg(&image));
    assert_success(&r, "cairn squash");
    let r = output(cairn_as(&Who::Me).arg("inspect").arg(&image));
    assert_success(&r, "inspect plain image");
    assert!(
        stdout_of(&r).contains("metadata:    none"),
        "{}",
        stdout_of(&r)
    );
    let r = output(cairn_as(&Who::Me).arg("inspect").arg("--json").arg(&root));
    assert_success(&r, "inspect a directory");
    let v: serde_json::Value = serde_json::from_str(&stdout_of(&r)).expect("json");
    assert!(v["meta"].is_null());
}

#[test]
fn failures_exit_125_naming_the_path() {
    let dir = scratch("inspect-bad");
    let missing = dir.join("missing.sqfs");
    let r = output(cairn_as(&Who::Me).arg("inspect").arg(&missing));
    assert_eq!(r.status.code(), Some(125));
    assert!(
        stderr_of(&r).contains(&missing.display().to_string()),
        "{}",
        stderr_of(&r)
    );
    let junk = dir.join("junk.sqfs");
    fs::write(&junk, vec![0x42u8; 8192]).expect("write junk");
    let r = output(cairn_as(&Who::Me).arg("inspect").arg(&junk));
    assert_eq!(r.status.code(), Some(125));
    assert!(
        stderr_of(&r).contains(&junk.display().to_string()),
        "{}",
        stderr_of(&r)
    );
}
