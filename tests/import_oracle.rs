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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::{
    Who, assert_success, cairn_as, have_tool, is_root, output, require, scratch, stdout_of,
};

fn run_ok(cmd: &mut Command, what: &str) -> String {
    let out = output(cmd);
    assert_success(&out, what);
    stdout_of(&out)
}

fn tools_ready() -> bool {
    require(is_root(), "root (umoci unpack and unsquashfs keep owners)")
        && require(have_tool("umoci"), "umoci")
        && require(have_tool("unsquashfs"), "unsquashfs")
        && require(have_tool("getfattr"), "getfattr")
}

/// A tar layer built with the tar crate (GNU long names, PAX xattrs).
struct LayerBuilder {
    b: tar::Builder<Vec<u8>>,
}

impl LayerBuilder {
    fn new() -> Self {
        LayerBuilder {
            b: tar::Builder::new(Vec::new()),
        }
    }

    fn header(kind: tar::EntryType, mode: u32, owner: (u64, u64)) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(owner.0);
        h.set_gid(owner.1);
        h.set_mtime(1_700_000_000);
        h.set_size(0);
        h
    }

    fn dir(mut self, path: &str, mode: u32, owner: (u64, u64)) -> Self {
        let mut h = Self::header(tar::EntryType::Directory, mode, owner);
        self.b
            .append_data(&mut h, path, std::io::empty())
            .expect("dir");
        self
    }

    fn file(mut self, path: &str, data: &str, mode: u32, owner: (u64, u64)) -> Self {
        let mut h = Self::header(tar::EntryType::Regular, mode, owner);
        h.set_size(data.len() as u64);
        self.b
            .append_data(&mut h, path, data.as_bytes())
            .expect("file");
        self
    }

    fn xattr_file(mut self, path: &str, data: &str, name: &str, value: &str) -> Self {
        let key = format!("SCHILY.xattr.{name}");
        self.b
            .append_pax_extensions([(key.as_str(), value.as_bytes())])
            .expect("pax");
        self.file(path, data, 0o644, (0, 0))
    }

    fn symlink(mut self, path: &str, target: &str) -> Self {
        let mut h = Self::header(tar::EntryType::Symlink, 0o777, (0, 0));
        self.b.append_link(&mut h, path, target).expect("symlink");
        self
    }

    fn hardlink(mut self, path: &str, target: &str) -> Self {
        let mut h = Self::header(tar::EntryType::Link, 0o644, (0, 0));
        self.b.append_link(&mut h, path, target).expect("hardlink");
        self
    }

    fn fifo(mut self, path: &str) -> Self {
        let mut h = Self::header(tar::EntryType::Fifo, 0o620, (0, 0));
        self.b
            .append_data(&mut h, path, std::io::empty())
            .expect("fifo");
        self
    }

    fn whiteout(self, dir: &str, name: &str) -> Self {
        let path = if dir.is_empty() {
            format!(".wh.{name}")
        } else {
            format!("{dir}/.wh.{name}")
        };
        self.file(&path, "", 0o644, (0, 0))
    }

    fn write(self, path: &Path) {
        let bytes = self.b.into_inner().expect("finish tar");
        fs::write(path, bytes).expect("write layer");
    }
}

const LONG_DIR: &str = "opt/long-ddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd";

fn long_file() -> String {
    format!("{LONG_DIR}/{}", "f".repeat(200))
}

/// The test image: an OCI layout at `.../oci` tagged `t`, plus archives.
struct TestImage {
    layout: PathBuf,
    docker_archive: Option<PathBuf>,
    oci_archive: Option<PathBuf>,
    /// `umoci unpack` of the image: the oracle.
    oracle: PathBuf,
}

fn test_image() -> &'static TestImage {
    static IMG: OnceLock<TestImage> = OnceLock::new();
    IMG.get_or_init(|| {
        let dir = scratch("import-oracle");
        let layout = dir.join("oci");
        let image = format!("{}:t", layout.display());
        run_ok(
            Command::new("umoci")
                .args(["init", "--layout"])
                .arg(&layout),
            "umoci init",
        );
        run_ok(
            Command::new("umoci").args(["new", "--image", &image]),
            "umoci new",
        );
        // Layer 1: the busybox rootfs, through unpack + repack.
        let bundle = dir.join("bundle");
        run_ok(
            Command::new("umoci")
                .args(["unpack", "--image", &image])
                .arg(&bundle),
            "umoci unpack (empty)",
        );
        let rootfs = bundle.join("rootfs");
        run_ok(
            Command::new("cp")
                .arg("-a")
                .arg(format!("{}/.", common::busybox_rootfs().display()))
                .arg(&rootfs),
            "copy busybox rootfs",
        );
        run_ok(
            Command::new("umoci")
                .args(["repack", "--image", &image])
                .arg(&bundle),
            "umoci repack (busybox)",
        );
        // Layer 2: hand-made: every entry type and the things later layers change.
        let l2 = dir.join("l2.tar");
        LayerBuilder::new()
            .dir("opt", 0o755, (0, 0))
            .dir("opt/app", 0o755, (0, 0))
            .file("opt/app/data", "data-v1\n", 0o644, (0, 0))
            .hardlink("opt/app/link", "opt/app/data")
            .symlink("opt/app/sl", "data")
            .dir("opt/keep", 0o755, (0, 0))
            .file("opt/keep/data", "keep\n", 0o644, (0, 0))
            .hardlink("opt/keep/link1", "opt/keep/data")
            .hardlink("opt/keep/link2", "opt/keep/data")
            .dir("opt/sticky", 0o1777, (0, 0))
            .dir("srv", 0o755, (0, 0))
            .file("srv/a", "v0\n", 0o644, (0, 0))
            .file("usr/local/bin/su2", "suid\n", 0o4755, (0, 0))
            .file("usr/local/bin/sg2", "sgid\n", 0o2711, (0, 50))
            .dir("home/user", 0o700, (1000, 1000))
            .file("home/user/file", "mine\n", 0o640, (1000, 1000))
            .dir(LONG_DIR, 0o755, (0, 0))
            .file(&long_file(), "long\n", 0o644, (0, 0))
            .xattr_file("opt/app/xattr", "x\n", "user.test", "hello")
            .xattr_file("opt/keep/xattr", "x\n", "user.cairn", "kept")
            .fifo("run/fifo")
            .dir("swap", 0o755, (0, 0))
            .dir("swap/d", 0o755, (0, 0))
            .file("swap/d/child", "c\n", 0o644, (0, 0))
            .symlink("swap/s", "/etc")
            .file("etc/old", "old\n", 0o644, (0, 0))
            .file("etc/gone", "gone\n", 0o644, (0, 0))
            .write(&l2);
        // Layer 3: deletions, an opaque directory, swaps, links to layer 1/2.
        let l3 = dir.join("l3.tar");
        LayerBuilder::new()
            .whiteout("etc", "gone")
            .whiteout("etc", "old")
            .dir("opt/app", 0o750, (0, 0))
            .file("opt/app/.wh..wh..opq", "", 0o644, (0, 0))
            .file("opt/app/fresh", "fresh\n", 0o644, (0, 0))
            .whiteout("swap", "d")
            .symlink("swap/d", "/tmp")
            .whiteout("swap", "s")
            .dir("swap/s", 0o711, (0, 0))
            .file("swap/s/inner", "inner\n", 0o644, (0, 0))
            .hardlink("bin/bb-link", "bin/busybox")
            .hardlink("srv/b", "srv/a")
            .file("home/user/file2", "also mine\n", 0o600, (1000, 1000))
            .write(&l3);
        // Layer 4: a file re-added after its deletion, a linked file replaced.
        let l4 = dir.join("l4.tar");
        LayerBuilder::new()
            .file("etc/old", "re-added\n", 0o600, (0, 0))
            .file("srv/a", "v2\n", 0o644, (0, 0))
            .write(&l4);
        for layer in [&l2, &l3, &l4] {
            run_ok(
                Command::new("umoci")
                    .args(["raw", "add-layer", "--image", &image])
                    .arg(layer),
                "umoci raw add-layer",
            );
        }
        // Layer 5: umoci's own whiteouts, from a repack after deletions.
        let bundle2 = dir.join("bundle2");
        run_ok(
            Command::new("umoci")
                .args(["unpack", "--image", &image])
                .arg(&bundle2),
            "umoci unpack (layer 4)",
        );
        let r2 = bundle2.join("rootfs");
        fs::remove_file(r2.join("etc/os-release")).expect("rm os-release");
        fs::remove_dir_all(r2.join("opt/sticky")).expect("rm sticky");
        fs::remove_file(r2.join("bin/vi")).expect("rm vi");
        fs::write(r2.join("etc/added-by-repack"), "repack\n").expect("write");
        run_ok(
            Command::new("umoci")
                .args(["repack", "--image", &image])
                .arg(&bundle2),
            "umoci repack (deletions)",
        );
        run_ok(
            Command::new("umoci").args([
                "config",
                "--image",
                &image,
                "--config.cmd",
                "sh",
                "--config.env",
                "FOO=bar",
                "--config.workingdir",
                "/opt",
                "--config.user",
                "1000:1000",
                "--config.label",
                "org.example=cairn",
            ]),
            "umoci config",
        );
        let oracle = dir.join("oracle");
        run_ok(
            Command::new("umoci")
                .args(["unpack", "--image", &image])
                .arg(&oracle),
            "umoci unpack (oracle)",
        );
        let (mut docker_archive, mut oci_archive) = (None, None);
        if have_tool("skopeo") {
            let da = dir.join("docker.tar");
            run_ok(
                Command::new("skopeo")
                    .args(["copy", "--quiet"])
                    .arg(format!("oci:{image}"))
                    .arg(format!("docker-archive:{}:cairn/test:t", da.display())),
                "skopeo copy docker-archive",
            );
            let oa = dir.join("oci.tar");
            run_ok(
                Command::new("skopeo")
                    .args(["copy", "--quiet"])
                    .arg(format!("oci:{image}"))
                    .arg(format!("oci-archive:{}:t", oa.display())),
                "skopeo copy oci-archive",
            );
            docker_archive = Some(da);
            oci_archive = Some(oa);
        }
        // umoci writes its files 0600: let the ordinary user read them.
        run_ok(
            Command::new("chmod").arg("-R").arg("a+rX").arg(&layout),
            "chmod image",
        );
        TestImage {
            layout,
            docker_archive,
            oci_archive,
            oracle: oracle.join("rootfs"),
        }
    })
}

/// What the comparison looks at for one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Info {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    /// Size and content hash of regular files.
    size: u64,
    hash: String,
    target: String,
    rdev: u64,
}

struct Tree {
    entries: BTreeMap<String, Info>,
    /// Hard-link groups (paths sharing an inode), each sorted.
    groups: BTreeSet<Vec<String>>,
    xattrs: BTreeMap<String, Vec<String>>,
}

fn walk(root: &Path) -> Tree {
    let mut entries = BTreeMap::new();
    let mut inodes: HashMap<(u64, u64), Vec<String>> = HashMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).expect("read_dir") {
            let e = e.expect("entry");
            let path = e.path();
            let rel = path
                .strip_prefix(root)
                .expect("below root")
                .to_string_lossy()
                .into_owned();
            let md = fs::symlink_metadata(&path).expect("lstat");
            let ft = md.file_type();
            let kind = common::file_kind(&ft);
            if ft.is_dir() {
                stack.push(path.clone());
            }
            let info = Info {
                kind,
                mode: md.mode() & 0o7777,
                uid: md.uid(),
                gid: md.gid(),
                size: if kind == "file" { md.len() } else { 0 },
                hash: if kind == "file" {
                    common::sha256_file(&path)
                } else {
                    String::new()
                },
                target: if kind == "symlink" {
                    String::from_utf8_lossy(
                        fs::read_link(&path)
                            .expect("readlink")
                            .as_os_str()
                            .as_bytes(),
                    )
                    .into_owned()
                } else {
                    String::new()
                },
                rdev: md.rdev(),
            };
            if kind != "dir" && md.nlink() > 1 {
                inodes
                    .entry((md.dev(), md.ino()))
                    .or_default()
                    .push(rel.clone());
            }
            entries.insert(rel, info);
        }
    }
    let groups = inodes
        .into_values()
        .map(|mut g| {
            g.sort();
            g
        })
        .collect();
    // getfattr -R -P: every xattr of every entry, not following symlinks.
    let dump = run_ok(
        Command::new("getfattr")
            .args([
                "-R",
                "-P",
                "-h",
                "-d",
                "-m",
                "-",
                "-e",
                "hex",
                "--absolute-names",
            ])
            .arg(root),
        "getfattr",
    );
    let mut xattrs: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current = String::new();
    let prefix = format!("{}/", root.display());
    for line in dump.lines() {
        if let Some(file) = line.strip_prefix("# file: ") {
            current = file.strip_prefix(&prefix).unwrap_or("").to_owned();
        } else if !line.is_empty() && !current.is_empty() {
            xattrs
                .entry(current.clone())
                .or_default()
                .push(line.to_owned());
        }
    }
    Tree {
        entries,
        groups,
        xattrs,
    }
}

/// cairn's own additions, not part of the image.
fn ignored(path: &str) -> bool {
    path == ".cairn" || path.starts_with(".cairn/")
}

#[track_caller]
fn assert_same_tree(cairn: &Path, oracle: &Path, what: &str) {
    let c = walk(cairn);
    let o = walk(oracle);
    let mut problems = Vec::new();
    for (path, oinfo) in &o.entries {
        match c.entries.get(path) {
            None => problems.push(format!("missing in cairn: {path}")),
            Some(cinfo) if cinfo != oinfo => problems.push(format!(
                "differs: {path}\n  cairn: {cinfo:?}\n  umoci: {oinfo:?}"
            )),
            _ => {}
        }
    }
    for path in c.entries.keys() {
        if !o.entries.contains_key(path) && !ignored(path) {
            problems.push(format!("extra in cairn: {path}"));
        }
    }
    if c.groups != o.groups {
        problems.push(format!(
            "hard-link groups differ:\n  cairn: {:?}\n  umoci: {:?}",
            c.groups, o.groups
        ));
    }
    let cx: BTreeMap<_, _> = c.xattrs.iter().filter(|(p, _)| !ignored(p)).collect();
    let ox: BTreeMap<_, _> = o.xattrs.iter().collect();
    if cx != ox {
        problems.push(format!("xattrs differ:\n  cairn: {cx:?}\n  umoci: {ox:?}"));
    }
    assert!(
        problems.is_empty(),
        "{what}: cairn's image differs from umoci unpack:\n{}",
        problems.join("\n")
    );
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
