//! `cairn import` from the other sources: plain, gzip and zstd rootfs
//! tarballs (`tar:`), a directory (`dir:`), and OCI layouts with a
//! multi-platform index (default host platform, `--platform`, a platform
//! that is not there). Checked with `unsquashfs -d` against what went in.
//! Also: the output is byte-for-byte reproducible, and nothing but one
//! summary line is printed on a pipe (no progress bar).

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{
    Who, assert_success, cairn_as, callers, have_tool, output, require, scratch, stderr_of,
    stdout_of,
};
use sha2::{Digest, Sha256};

fn sha_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// type/mode/size/content/target of every entry below `root`.
fn listing(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).expect("read_dir") {
            let path = e.expect("entry").path();
            let rel = path
                .strip_prefix(root)
                .expect("below")
                .to_string_lossy()
                .into_owned();
            if rel == ".cairn" {
                continue;
            }
            let md = fs::symlink_metadata(&path).expect("lstat");
            let desc = if md.is_dir() {
                stack.push(path.clone());
                format!("dir {:o}", md.mode() & 0o7777)
            } else if md.file_type().is_symlink() {
                let t = fs::read_link(&path).expect("readlink");
                format!(
                    "symlink {}",
                    String::from_utf8_lossy(t.as_os_str().as_bytes())
                )
            } else if md.is_file() {
                let mut data = Vec::new();
                fs::File::open(&path)
                    .expect("open")
                    .read_to_end(&mut data)
                    .expect("read");
                format!(
                    "file {:o} {} {}",
                    md.mode() & 0o7777,
                    md.len(),
                    sha_hex(&data)
                )
            } else {
                format!("special {:o}", md.mode())
            };
            out.insert(rel, desc);
        }
    }
    out
}

fn extract(image: &Path) -> PathBuf {
    let x = scratch("sources-x").join("x");
    let out = output(Command::new("unsquashfs").arg("-d").arg(&x).arg(image));
    assert_success(&out, "unsquashfs");
    x
}

fn import(who: &Who, src: &str, extra: &[&str]) -> (PathBuf, std::process::Output) {
    let out = scratch("sources-out").join("image.sqfs");
    let r = output(
        cairn_as(who)
            .arg("import")
            .arg(src)
            .args(extra)
            .arg("-o")
            .arg(&out),
    );
    (out, r)
}

/// A small rootfs tarball (as bytes) with a file, a symlink and a dir.
fn rootfs_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, kind: tar::EntryType, mode: u32, data: &[u8], link: &str| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_mtime(1_700_000_000);
        h.set_size(data.len() as u64);
        if link.is_empty() {
            b.append_data(&mut h, path, data).expect("append");
        } else {
            b.append_link(&mut h, path, link).expect("link");
        }
    };
    add("./", tar::EntryType::Directory, 0o755, b"", "");
    add("./etc/", tar::EntryType::Directory, 0o755, b"", "");
    add(
        "./etc/hostname",
        tar::EntryType::Regular,
        0o644,
        b"box\n",
        "",
    );
    add("./bin/", tar::EntryType::Directory, 0o755, b"", "");
    add(
        "./bin/tool",
        tar::EntryType::Regular,
        0o755,
        &[7u8; 300_000],
        "",
    );
    add("./bin/alias", tar::EntryType::Symlink, 0o777, b"", "tool");
    // Whiteout-looking names in a plain tarball are still whiteouts of
    // nothing: they must not appear in the image.
    add("./etc/.wh.nothing", tar::EntryType::Regular, 0o644, b"", "");
    b.into_inner().expect("tar")
}

#[test]
fn tarballs_plain_gzip_and_zstd() {
    require(have_tool("unsquashfs"), "unsquashfs");
    let dir = scratch("tarballs");
    let plain = rootfs_tar();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&plain).expect("gz");
    let gz = gz.finish().expect("gz");
    let zst = zstd::encode_all(plain.as_slice(), 3).expect("zstd");
    let mut listings = Vec::new();
    for (name, bytes) in [("r.tar", &plain), ("r.tar.gz", &gz), ("r.tar.zst", &zst)] {
        let path = dir.join(name);
        fs::write(&path, bytes).expect("write tarball");
        for who in callers() {
            let (out, r) = import(&who, &format!("tar:{}", path.display()), &[]);
            assert_success(&r, &format!("import tar:{name} as {}", who.label()));
            let x = extract(&out);
            assert_eq!(
                fs::read_to_string(x.join("etc/hostname")).expect("hostname"),
                "box\n"
            );
            assert_eq!(
                fs::read(x.join("bin/tool")).expect("tool"),
                vec![7u8; 300_000]
            );
            assert!(!x.join("etc/.wh.nothing").exists());
            for p in [
                "dev",
                "proc",
                "sys",
                "tmp",
                "home",
                "etc/passwd",
                "etc/resolv.conf",
            ] {
                assert!(x.join(p).exists(), "{name}: runtime path {p} missing");
            }
            listings.push(listing(&x));
        }
    }
    assert!(listings.windows(2).all(|w| w[0] == w[1]));
}

#[test]
fn directory_source_matches_the_directory() {
    require(have_tool("unsquashfs"), "unsquashfs");
    let root = common::busybox_rootfs();
    let (out, r) = import(&Who::Me, &format!("dir:{}", root.display()), &[]);
    assert_success(&r, "import dir:");
    let x = extract(&out);
    assert_eq!(listing(&x), listing(root));
}

/// The image written inside the tree it packs is left out (it would
/// otherwise read itself while growing), and POSIX ACLs, which squashfs
/// cannot store, are skipped with a warning instead of failing the import.
#[test]
fn directory_source_skips_its_own_output_and_acls() {
    require(have_tool("unsquashfs"), "unsquashfs");
    let root = scratch("dir-self").join("root");
    fs::create_dir_all(root.join("d")).expect("mkdir");
    fs::write(root.join("d/f"), "data").expect("write");
    let acl = have_tool("setfacl")
        && output(
            Command::new("setfacl")
                .args(["-m", "u:0:r"])
                .arg(root.join("d/f")),
        )
        .status
        .success();
    let image = root.join("image.sqfs");
    let r = output(
        cairn_as(&Who::Me)
            .arg("import")
            .arg(format!("dir:{}", root.display()))
            .arg("-o")
            .arg(&image),
    );
    assert_success(&r, "import dir: with the output inside");
    let x = extract(&image);
    assert!(!x.join("image.sqfs").exists(), "the image packed itself");
    assert_eq!(fs::read(x.join("d/f")).expect("d/f"), b"data");
    if acl {
        assert!(
            stderr_of(&r).contains("system.posix_acl_access"),
            "{}",
            stderr_of(&r)
        );
    }
}

#[test]
fn directory_source_keeps_xattrs_and_hard_links() {
    if !require(
        have_tool("setfattr") && have_tool("getfattr"),
        "setfattr/getfattr",
    ) || !require(have_tool("unsquashfs"), "unsquashfs")
    {
        return;
    }
    let root = scratch("dir-xattr").join("root");
    fs::create_dir_all(root.join("a")).expect("mkdir");
    fs::write(root.join("a/f"), "data").expect("write");
    fs::hard_link(root.join("a/f"), root.join("g")).expect("link");
    let set = output(
        Command::new("setfattr")
            .args(["-n", "user.cairn", "-v", "kept"])
            .arg(root.join("a/f")),
    );
    if !set.status.success() {
        // tmpfs without user xattrs: nothing to check here.
        require(false, "user xattrs on the scratch filesystem");
        return;
    }
    let (out, r) = import(&Who::Me, &format!("dir:{}", root.display()), &[]);
    assert_success(&r, "import dir: with xattrs");
    let x = extract(&out);
    let dump = output(
        Command::new("getfattr")
            .args(["-n", "user.cairn", "--only-values"])
            .arg(x.join("a/f")),
    );
    assert_eq!(stdout_of(&dump), "kept");
    let (f, g) = (
        fs::metadata(x.join("a/f")).expect("f"),
        fs::metadata(x.join("g")).expect("g"),
    );
    assert_eq!(f.ino(), g.ino(), "hard link kept");
}

#[test]
fn output_is_reproducible_and_quiet_on_a_pipe() {
    let dir = scratch("repro");
    let path = dir.join("r.tar");
    fs::write(&path, rootfs_tar()).expect("write");
    let src = format!("tar:{}", path.display());
    let (a, ra) = import(&Who::Me, &src, &[]);
    let (b, rb) = import(&Who::Me, &src, &[]);
    assert_success(&ra, "first import");
    assert_success(&rb, "second import");
    assert!(
        fs::read(&a).expect("a") == fs::read(&b).expect("b"),
        "same input, different bytes"
    );
    assert!(
        stderr_of(&ra).is_empty(),
        "stderr on a pipe: {}",
        stderr_of(&ra)
    );
    assert_eq!(stdout_of(&ra).lines().count(), 1, "{}", stdout_of(&ra));
}

fn write_blob(layout: &Path, bytes: &[u8]) -> (String, usize) {
    let hex = sha_hex(bytes);
    fs::write(layout.join("blobs/sha256").join(&hex), bytes).expect("blob");
    (format!("sha256:{hex}"), bytes.len())
}

/// An OCI layout whose index lists one image per (arch, marker file).
fn multi_platform_layout(dir: &Path) -> PathBuf {
    let layout = dir.join("multi");
    fs::create_dir_all(layout.join("blobs/sha256")).expect("mkdir");
    fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("layout");
    let mut descs = Vec::new();
    for arch in ["amd64", "arm64", "riscv64"] {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(arch.len() as u64);
        b.append_data(&mut h, "arch", arch.as_bytes())
            .expect("append");
        let layer = b.into_inner().expect("tar");
        let (ldigest, lsize) = write_blob(&layout, &layer);
        let config = format!(
            r#"{{"architecture":"{arch}","os":"linux","rootfs":{{"type":"layers","diff_ids":["{ldigest}"]}}}}"#
        );
        let (cdigest, csize) = write_blob(&layout, config.as_bytes());
        let manifest = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cdigest}","size":{csize}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{ldigest}","size":{lsize}}}]}}"#
        );
        let (mdigest, msize) = write_blob(&layout, manifest.as_bytes());
        descs.push(format!(
            r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{mdigest}","size":{msize},"platform":{{"os":"linux","architecture":"{arch}"}}}}"#
        ));
    }
    // The platforms sit in a nested index, as registries' copies do.
    let nested = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{}]}}"#,
        descs.join(",")
    );
    let (ndigest, nsize) = write_blob(&layout, nested.as_bytes());
    fs::write(
        layout.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"{ndigest}","size":{nsize},"annotations":{{"org.opencontainers.image.ref.name":"multi"}}}}]}}"#
        ),
    )
    .expect("index");
    layout
}

#[test]
fn platform_is_chosen_from_a_multi_platform_index() {
    require(have_tool("unsquashfs"), "unsquashfs");
    let layout = multi_platform_layout(&scratch("multi"));
    let src = format!("oci:{}:multi", layout.display());
    let (out, r) = import(&Who::Me, &src, &["--platform", "linux/riscv64"]);
    assert_success(&r, "import --platform linux/riscv64");
    assert_eq!(
        fs::read_to_string(extract(&out).join("arch")).expect("arch"),
        "riscv64"
    );
    if std::env::consts::ARCH == "x86_64" {
        let (out, r) = import(&Who::Me, &src, &[]);
        assert_success(&r, "import for the host platform");
        assert_eq!(
            fs::read_to_string(extract(&out).join("arch")).expect("arch"),
            "amd64"
        );
    }
    let (out, r) = import(&Who::Me, &src, &["--platform", "linux/s390x"]);
    assert_eq!(r.status.code(), Some(125));
    let err = stderr_of(&r);
    assert!(
        err.contains("linux/s390x") && err.contains("linux/arm64"),
        "{err}"
    );
    assert!(!out.exists());
    let (_, r) = import(&Who::Me, &src, &["--platform", "linux"]);
    assert_eq!(r.status.code(), Some(125));
}

#[test]
fn name_stores_into_the_cache_for_run_and_inspect() {
    let Some(user) = common::ordinary_user() else {
        return;
    };
    let cache = scratch("import-cache").join("cache");
    let root = common::busybox_rootfs();
    let with_cache = |args: &[&str]| {
        let mut cmd = cairn_as(&user);
        cmd.args(args).env("CAIRN_CACHE", &cache);
        output(&mut cmd)
    };
    let r = with_cache(&["import", &format!("dir:{}", root.display()), "--name", "bb"]);
    assert_success(&r, "import --name");
    let listed = with_cache(&["images"]);
    assert_success(&listed, "cairn images");
    assert!(stdout_of(&listed).contains("bb"), "{}", stdout_of(&listed));
    let inspected = with_cache(&["inspect", "bb"]);
    assert_success(&inspected, "cairn inspect NAME");
    let ran = with_cache(&["run", "bb", "--", "/bin/cat", "/etc/os-release"]);
    assert_success(&ran, "cairn run NAME");
    assert!(
        stdout_of(&ran).contains("cairn test image"),
        "{}",
        stdout_of(&ran)
    );
    // A name that is neither a file nor cached: 125, naming it.
    let missing = with_cache(&["run", "no-such-image", "--", "true"]);
    assert_eq!(missing.status.code(), Some(125));
    assert!(
        stderr_of(&missing).contains("no-such-image"),
        "{}",
        stderr_of(&missing)
    );
    // Neither -o nor --name.
    let r = output(cairn_as(&Who::Me).args(["import", "tar:/nonexistent.tar"]));
    assert_eq!(r.status.code(), Some(125));
}

/// A `docker save` archive written by hand in one of docker's layouts:
/// legacy (`<id>/layer.tar` symlinked to `<diff_id>.tar`, config
/// `<hex>.json`) or the OCI-blob layout of docker 25+ (`blobs/sha256/...`,
/// layers gzip-compressed here).
fn docker_archive(path: &Path, oci_blobs: bool) {
    let layer = rootfs_tar();
    let diff_id = sha_hex(&layer);
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, name, data).expect("append");
    };
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{"Cmd":["/bin/tool"]}},"rootfs":{{"type":"layers","diff_ids":["sha256:{diff_id}"]}}}}"#
    );
    let config_hex = sha_hex(config.as_bytes());
    let manifest = if oci_blobs {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&layer).expect("gz");
        let gz = gz.finish().expect("gz");
        let layer_hex = sha_hex(&gz);
        add(&format!("blobs/sha256/{layer_hex}"), &gz);
        add(&format!("blobs/sha256/{config_hex}"), config.as_bytes());
        format!(
            r#"[{{"Config":"blobs/sha256/{config_hex}","RepoTags":["x:t"],"Layers":["blobs/sha256/{layer_hex}"]}}]"#
        )
    } else {
        add(&format!("{diff_id}.tar"), &layer);
        add(&format!("{config_hex}.json"), config.as_bytes());
        format!(
            r#"[{{"Config":"{config_hex}.json","RepoTags":["x:t"],"Layers":["abc/layer.tar"]}}]"#
        )
    };
    add("manifest.json", manifest.as_bytes());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    b.append_link(&mut h, "abc/layer.tar", format!("../{diff_id}.tar"))
        .expect("symlink");
    fs::write(path, b.into_inner().expect("tar")).expect("write archive");
}

#[test]
fn docker_archives_in_both_layouts() {
    require(have_tool("unsquashfs"), "unsquashfs");
    let dir = scratch("docker-layouts");
    for oci_blobs in [false, true] {
        let path = dir.join(format!("docker-{oci_blobs}.tar"));
        docker_archive(&path, oci_blobs);
        let (out, r) = import(&Who::Me, &format!("docker-archive:{}", path.display()), &[]);
        assert_success(
            &r,
            &format!("import docker-archive (oci blobs: {oci_blobs})"),
        );
        let x = extract(&out);
        assert_eq!(
            fs::read_to_string(x.join("etc/hostname")).expect("hostname"),
            "box\n"
        );
        let meta = fs::read_to_string(x.join(".cairn/image.json")).expect("meta");
        assert!(meta.contains("/bin/tool"), "{meta}");
    }
}
