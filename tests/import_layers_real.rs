//! `cairn import` of layers as real tools write them, checked against
//! `umoci unpack` of the same image entry by entry (type, mode, owner,
//! size, content, symlink target, mtime, hard-link groups):
//! - umoci repack replacing a directory by a symlink (it writes whiteouts
//!   for the old children below the new symlink), and entries of a layer
//!   below its own symlinks (Python's tarfile), resolved inside the root;
//! - layers that end right after the last file's data (umoci insert), or
//!   inside the padding, and truncated ones, which both refuse;
//! - GNU sparse files from GNU tar (PAX 1.0, 0.1, 0.0); old GNU sparse
//!   entries, which umoci (and docker, containerd) refuse, are refused;
//! - the same path twice in a layer (`tar -r`, Python's append mode),
//!   with type changes and hard links to a name replaced later;
//! - mtimes before 1970 and after 2038 (GNU tar's and Python's base-256
//!   fields, PAX records), compared after the clamp squashfs needs.
//!
//! Every import runs as root and as the ordinary user; the oracle needs
//! root (umoci unpack and unsquashfs keep owners).

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{
    Who, assert_success, cairn_as, callers, have_tool, is_root, output, require, scratch,
    stderr_of, stdout_of,
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
        && require(have_tool("python3"), "python3")
        && require(
            output(Command::new("tar").arg("--version"))
                .stdout
                .starts_with(b"tar (GNU tar)"),
            "GNU tar",
        )
}

/// The mtime squashfs can hold for `secs` (cairn's documented clamp:
/// before 1970 is 1970, after 2106-02-07 is u32::MAX).
fn clamp(secs: i64) -> i64 {
    secs.clamp(0, i64::from(u32::MAX))
}

/// An OCI layout built with umoci, tagged `t`.
struct Layout {
    dir: PathBuf,
    layout: PathBuf,
}

impl Layout {
    fn new(name: &str) -> Layout {
        let dir = scratch(&format!("layers-{name}"));
        let layout = dir.join("oci");
        run_ok(
            Command::new("umoci")
                .args(["init", "--layout"])
                .arg(&layout),
            "umoci init",
        );
        let l = Layout { dir, layout };
        run_ok(
            Command::new("umoci").args(["new", "--image", &l.image()]),
            "umoci new",
        );
        l
    }

    fn image(&self) -> String {
        format!("{}:t", self.layout.display())
    }

    fn src(&self) -> String {
        format!("oci:{}", self.image())
    }

    /// Adds a tar file as it is (umoci gzips the bytes, never rewrites them).
    fn add_layer(&self, tar: &Path) {
        run_ok(
            Command::new("umoci")
                .args(["raw", "add-layer", "--image", &self.image()])
                .arg(tar),
            "umoci raw add-layer",
        );
    }

    /// Adds a layer made of these bytes.
    fn add_layer_bytes(&self, name: &str, bytes: &[u8]) {
        let path = self.dir.join(name);
        fs::write(&path, bytes).expect("write layer");
        self.add_layer(&path);
    }

    /// `umoci unpack` into a fresh bundle: the command's result and rootfs.
    fn try_unpack(&self, name: &str) -> (Output, PathBuf) {
        let bundle = self.dir.join(name);
        let out = output(
            Command::new("umoci")
                .args(["unpack", "--image", &self.image()])
                .arg(&bundle),
        );
        (out, bundle.join("rootfs"))
    }

    fn unpack(&self, name: &str) -> PathBuf {
        let (out, rootfs) = self.try_unpack(name);
        assert_success(&out, "umoci unpack");
        rootfs
    }

    /// `umoci repack` of a bundle into a new layer.
    fn repack(&self, bundle_rootfs: &Path) {
        let bundle = bundle_rootfs.parent().expect("bundle");
        run_ok(
            Command::new("umoci")
                .args(["repack", "--image", &self.image()])
                .arg(bundle),
            "umoci repack",
        );
    }

    fn blob(&self, digest: &str) -> Vec<u8> {
        let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
        fs::read(self.layout.join("blobs/sha256").join(hex)).expect("read blob")
    }

    /// The layers' digests, bottom first.
    fn layer_digests(&self) -> Vec<String> {
        let json =
            |bytes: &[u8]| -> serde_json::Value { serde_json::from_slice(bytes).expect("json") };
        let index = json(&fs::read(self.layout.join("index.json")).expect("index"));
        let manifest = index["manifests"]
            .as_array()
            .expect("manifests")
            .iter()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == "t")
            .expect("tag t");
        let manifest = json(&self.blob(manifest["digest"].as_str().expect("digest")));
        manifest["layers"]
            .as_array()
            .expect("layers")
            .iter()
            .map(|l| l["digest"].as_str().expect("digest").to_owned())
            .collect()
    }

    /// A layer's tar, uncompressed.
    fn layer_tar(&self, digest: &str) -> Vec<u8> {
        let blob = self.blob(digest);
        let mut tar = Vec::new();
        flate2::read::MultiGzDecoder::new(blob.as_slice())
            .read_to_end(&mut tar)
            .expect("gunzip layer");
        tar
    }

    /// Lets the ordinary user read the layout (umoci writes 0600 files).
    fn publish(&self) {
        run_ok(
            Command::new("chmod")
                .arg("-R")
                .arg("a+rX")
                .arg(&self.layout),
            "chmod layout",
        );
    }
}

/// Runs a Python script (with `sys.argv[1:]` = `args`).
fn python(script: &str, args: &[&Path]) {
    run_ok(
        Command::new("python3").arg("-c").arg(script).args(args),
        "python3",
    );
}

/// Runs GNU tar in `dir`.
fn tar_in(dir: &Path, args: &[&str]) {
    run_ok(Command::new("tar").current_dir(dir).args(args), "GNU tar");
}

/// What the comparison looks at for one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Info {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    hash: String,
    target: String,
    mtime: i64,
}

struct Tree {
    entries: BTreeMap<String, Info>,
    /// Paths sharing an inode, each group sorted.
    groups: BTreeSet<Vec<String>>,
}

fn walk(root: &Path) -> Tree {
    let mut entries = BTreeMap::new();
    let mut inodes: HashMap<(u64, u64), Vec<String>> = HashMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).expect("read_dir") {
            let path = e.expect("entry").path();
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
            let file = kind == "file";
            let target = if kind == "symlink" {
                let t = fs::read_link(&path).expect("readlink");
                String::from_utf8_lossy(t.as_os_str().as_bytes()).into_owned()
            } else {
                String::new()
            };
            if kind != "dir" && md.nlink() > 1 {
                inodes
                    .entry((md.dev(), md.ino()))
                    .or_default()
                    .push(rel.clone());
            }
            let info = Info {
                kind,
                // Symlinks have no mode of their own.
                mode: if kind == "symlink" {
                    0
                } else {
                    md.mode() & 0o7777
                },
                uid: md.uid(),
                gid: md.gid(),
                size: if file { md.len() } else { 0 },
                hash: if file {
                    common::sha256_file(&path)
                } else {
                    String::new()
                },
                target,
                mtime: clamp(md.mtime()),
            };
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
    Tree { entries, groups }
}

/// What cairn adds to every image (the runtime's mount points and its own
/// metadata): allowed in cairn's tree when the image lacks them.
fn cairn_addition(path: &str) -> bool {
    path == ".cairn"
        || path.starts_with(".cairn/")
        || ["dev", "proc", "sys", "tmp", "home", "etc"].contains(&path)
        || ["passwd", "group", "hosts", "resolv.conf"]
            .iter()
            .any(|f| path == format!("etc/{f}"))
}

/// cairn's tree must equal umoci's, except the paths in `except`.
#[track_caller]
fn assert_same_tree(cairn: &Path, oracle: &Path, except: &[&str], what: &str) {
    let c = walk(cairn);
    let o = walk(oracle);
    let mut problems = Vec::new();
    for (path, oinfo) in &o.entries {
        if except.contains(&path.as_str()) {
            continue;
        }
        match c.entries.get(path) {
            None => problems.push(format!("missing in cairn: {path}")),
            Some(cinfo) if cinfo != oinfo => problems.push(format!(
                "differs: {path}\n  cairn: {cinfo:?}\n  umoci: {oinfo:?}"
            )),
            _ => {}
        }
    }
    for path in c.entries.keys() {
        if !o.entries.contains_key(path)
            && !cairn_addition(path)
            && !except.contains(&path.as_str())
        {
            problems.push(format!("extra in cairn: {path}"));
        }
    }
    let keep = |g: &Vec<String>| !g.iter().any(|p| except.contains(&p.as_str()));
    let cg: BTreeSet<_> = c.groups.iter().filter(|g| keep(g)).cloned().collect();
    let og: BTreeSet<_> = o.groups.iter().filter(|g| keep(g)).cloned().collect();
    if cg != og {
        problems.push(format!(
            "hard-link groups differ:\n  cairn: {cg:?}\n  umoci: {og:?}"
        ));
    }
    assert!(
        problems.is_empty(),
        "{what}: cairn's image differs from umoci unpack:\n{}",
        problems.join("\n")
    );
}

/// `cairn import` as `who`, then `unsquashfs -d`: the image and the tree.
fn import(who: &Who, layout: &Layout, name: &str) -> (PathBuf, PathBuf) {
    let dir = scratch(&format!("layers-out-{name}"));
    let out = dir.join("image.sqfs");
    let result = output(
        cairn_as(who)
            .arg("import")
            .arg(layout.src())
            .arg("-o")
            .arg(&out),
    );
    assert_success(
        &result,
        &format!("cairn import ({name}) as {}", who.label()),
    );
    let x = dir.join("x");
    run_ok(
        Command::new("unsquashfs").arg("-d").arg(&x).arg(&out),
        "unsquashfs",
    );
    (out, x)
}

/// Imports as every caller and compares each result with `oracle`.
fn import_and_compare(layout: &Layout, oracle: &Path, except: &[&str], name: &str) -> Vec<PathBuf> {
    layout.publish();
    let mut trees = Vec::new();
    for who in callers() {
        let (image, x) = import(&who, layout, &format!("{name}-{}", who.label()));
        assert_same_tree(&x, oracle, except, &format!("{name} as {}", who.label()));
        trees.push(image);
    }
    trees
}

/// The import must fail with 125 naming everything in `needles`, leaving
/// nothing in the output directory.
#[track_caller]
fn assert_refused(layout: &Layout, needles: &[&str], name: &str) {
    layout.publish();
    for who in callers() {
        let dir = scratch(&format!("layers-refused-{name}"));
        let out = dir.join("image.sqfs");
        let result = output(
            cairn_as(&who)
                .arg("import")
                .arg(layout.src())
                .arg("-o")
                .arg(&out),
        );
        let err = stderr_of(&result);
        assert_eq!(
            result.status.code(),
            Some(125),
            "{name} as {}: expected exit 125; stderr:\n{err}",
            who.label()
        );
        for n in needles {
            assert!(
                err.contains(n),
                "{name}: stderr does not name {n:?}:\n{err}"
            );
        }
        assert!(!err.contains("panicked"), "{name}: {err}");
        let left: Vec<_> = fs::read_dir(&dir).expect("read out dir").collect();
        assert!(left.is_empty(), "{name}: files left behind: {left:?}");
    }
}

fn write(path: &Path, data: &str) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("mkdir");
    }
    fs::write(path, data).expect("write");
}

/// Python: a tar of entries given as (name, type, data or link target),
/// every mtime 1700000000, root-owned; `GNU_FORMAT`.
const TARFILE_ENTRIES: &str = r#"
import io, sys, tarfile
out, spec = sys.argv[1], sys.argv[2]
kinds = {"dir": tarfile.DIRTYPE, "file": tarfile.REGTYPE,
         "symlink": tarfile.SYMTYPE, "link": tarfile.LNKTYPE}
with tarfile.open(out, "w", format=tarfile.GNU_FORMAT) as t:
    for line in open(spec).read().split("\x1e"):
        name, kind, value = line.split("|")
        i = tarfile.TarInfo(name)
        i.type = kinds[kind]
        i.mtime = 1700000000
        i.mode = 0o755 if kind == "dir" else 0o644
        data = None
        if kind == "file":
            data = value.encode()
            i.size = len(data)
        elif kind in ("symlink", "link"):
            i.linkname = value
        t.addfile(i, io.BytesIO(data) if data is not None else None)
"#;

/// A tar written by Python's tarfile from `entries` ("name|kind|value").
fn tarfile_layer(dir: &Path, name: &str, entries: &[&str]) -> PathBuf {
    let spec = dir.join(format!("{name}.spec"));
    fs::write(&spec, entries.join("\x1e")).expect("spec");
    let tar = dir.join(format!("{name}.tar"));
    python(TARFILE_ENTRIES, &[&tar, &spec]);
    tar
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn directory_replaced_by_a_symlink_and_entries_below_a_layers_symlinks() {
    if !tools_ready() {
        return;
    }
    let img = Layout::new("symlink");
    // Layer 1 (umoci repack): a directory that will become a symlink.
    let rootfs = img.unpack("b1");
    write(&rootfs.join("data/symlink_to_dir_target/t"), "old child\n");
    write(&rootfs.join("data/symlink_to_dir_target/u"), "old child\n");
    write(&rootfs.join("data/realdir/other"), "kept\n");
    img.repack(&rootfs);
    // Layer 2 (umoci repack): the directory replaced by a symlink; umoci
    // writes the symlink, then whiteouts for the old children below it.
    let rootfs = img.unpack("b2");
    fs::remove_dir_all(rootfs.join("data/symlink_to_dir_target")).expect("rm dir");
    std::os::unix::fs::symlink("realdir", rootfs.join("data/symlink_to_dir_target"))
        .expect("symlink");
    img.repack(&rootfs);
    let digests = img.layer_digests();
    let repacked = img.layer_tar(&digests[1]);
    assert!(
        contains(&repacked, b"data/symlink_to_dir_target/.wh.t"),
        "umoci repack no longer writes a whiteout below the new symlink"
    );
    // Layer 3 (Python): entries below symlinks of their own layer, one
    // absolute, one escaping with `..`, a chain, a hard link through one.
    let l3 = tarfile_layer(
        &img.dir,
        "l3",
        &[
            "data/link2|symlink|realdir",
            "data/link2/new|file|through a link\n",
            "abs|symlink|/data/realdir",
            "abs/absfile|file|through an absolute link\n",
            "esc|symlink|../../../../data/realdir",
            "esc/escfile|file|through an escaping link\n",
            "chain|symlink|data/link2",
            "chain/chained|file|through a chain\n",
            "data/hl|link|data/link2/new",
        ],
    );
    img.add_layer(&l3);
    let oracle = img.unpack("oracle");
    assert!(oracle.join("data/realdir/escfile").is_file());
    import_and_compare(&img, &oracle, &[], "symlink");
}

#[test]
fn whiteout_below_a_new_symlink_hides_nothing_where_the_link_leads() {
    if !tools_ready() {
        return;
    }
    // The same umoci repack, but the symlink's target holds a file of the
    // same name as the whited-out child. cairn's rule (the OCI layer spec's:
    // a whiteout names a path of the lower layers, and the symlink already
    // hides data/symlink_to_dir_target/t) keeps data/realdir/t, which the
    // repacked rootfs had. umoci 0.4.7 resolves the whiteout's directory
    // through the new symlink and deletes data/realdir/t: the one entry
    // where cairn departs from it.
    let img = Layout::new("symlink-clash");
    let rootfs = img.unpack("b1");
    write(&rootfs.join("data/symlink_to_dir_target/t"), "old child\n");
    write(&rootfs.join("data/realdir/t"), "keep me\n");
    img.repack(&rootfs);
    let rootfs = img.unpack("b2");
    fs::remove_dir_all(rootfs.join("data/symlink_to_dir_target")).expect("rm dir");
    std::os::unix::fs::symlink("realdir", rootfs.join("data/symlink_to_dir_target"))
        .expect("symlink");
    img.repack(&rootfs);
    let oracle = img.unpack("oracle");
    eprintln!(
        "umoci unpack {} data/realdir/t",
        if oracle.join("data/realdir/t").exists() {
            "keeps"
        } else {
            "deletes"
        }
    );
    img.publish();
    for who in callers() {
        let (_, x) = import(&who, &img, &format!("clash-{}", who.label()));
        assert_same_tree(&x, &oracle, &["data/realdir/t"], "symlink clash");
        assert_eq!(
            fs::read_to_string(x.join("data/realdir/t")).expect("data/realdir/t"),
            "keep me\n"
        );
    }
}

#[test]
fn layers_that_end_right_after_their_last_data() {
    if !tools_ready() {
        return;
    }
    let img = Layout::new("insert");
    let src = img.dir.join("src");
    write(&src.join("f.txt"), "hello\n");
    write(&src.join("tree/a"), &"a".repeat(512));
    write(&src.join("tree/b"), &"b".repeat(1000));
    fs::create_dir_all(src.join("tree/empty")).expect("mkdir");
    // An explicit /opt: umoci insert writes no entry for the parents of its
    // target, so both sides would invent one (with different mtimes).
    img.add_layer(&tarfile_layer(&img.dir, "opt", &["opt|dir|"]));
    for (from, to) in [("tree", "/opt/tree"), ("f.txt", "/f.txt")] {
        run_ok(
            Command::new("umoci")
                .args(["insert", "--image", &img.image()])
                .arg(src.join(from))
                .arg(to),
            "umoci insert",
        );
    }
    let digests = img.layer_digests();
    let inserted = img.layer_tar(&digests[digests.len() - 1]);
    assert!(
        inserted.len() % 512 != 0,
        "umoci insert now pads its layers: the case is not exercised"
    );
    // Python-made layers cut inside the padding of their last entry.
    let full = fs::read(tarfile_layer(
        &img.dir,
        "cut",
        &[
            "cut|dir|",
            "cut/one|file|1",
            "cut/two|file|twenty-two bytes long\n",
        ],
    ))
    .expect("read tar");
    let data_end = 512 * 4 + 22;
    img.add_layer_bytes("cut-no-padding.tar", &full[..data_end]);
    img.add_layer_bytes("cut-in-padding.tar", &full[..data_end + 100]);
    let oracle = img.unpack("oracle");
    assert_eq!(
        fs::read_to_string(oracle.join("f.txt")).expect("f.txt"),
        "hello\n"
    );
    import_and_compare(&img, &oracle, &[], "insert");
}

#[test]
fn truncated_layers_are_refused_like_umoci_refuses_them() {
    if !tools_ready() {
        return;
    }
    let dir = scratch("layers-truncated");
    let full = fs::read(tarfile_layer(
        &dir,
        "t",
        &["a|file|aaa", "big|file|0123456789abcdef0123456789abcdef"],
    ))
    .expect("read tar");
    // (name, bytes kept, what the error names)
    let cases: [(&str, usize, &[&str]); 2] = [
        ("mid-data", 512 * 3 + 10, &["big", "truncated"]),
        ("mid-header", 512 * 2 + 100, &["after entry a", "truncated"]),
    ];
    for (name, keep, needles) in cases {
        let img = Layout::new(name);
        img.add_layer_bytes("t.tar", &full[..keep]);
        let (umoci, _) = img.try_unpack("oracle");
        assert!(
            !umoci.status.success(),
            "{name}: umoci unpacked a truncated layer"
        );
        let digest = img.layer_digests().remove(0);
        let mut needles = needles.to_vec();
        needles.push(&digest);
        assert_refused(&img, &needles, name);
    }
}

#[test]
fn gnu_sparse_files_are_expanded() {
    if !tools_ready() {
        return;
    }
    let img = Layout::new("sparse");
    let src = img.dir.join("src");
    // For each format its own directory: two sparse files (64 MiB with
    // data in the middle and at the end; a file ending in a hole) and a
    // dense one.
    let formats: [(&str, &[&str]); 4] = [
        ("pax10", &["--format=pax"]),
        ("pax01", &["--format=pax", "--sparse-version=0.1"]),
        ("pax00", &["--format=pax", "--sparse-version=0.0"]),
        ("oldgnu", &["--format=gnu"]),
    ];
    let sparse_source = |name: &str| {
        python(
            r#"
import os, sys
d = sys.argv[1]
os.makedirs(d, exist_ok=True)
with open(os.path.join(d, "sparse"), "wb") as f:
    f.seek(20 << 20); f.write(b"middle" * 1000)
    f.seek((64 << 20) - 5); f.write(b"end!\n")
with open(os.path.join(d, "tailhole"), "wb") as f:
    f.write(b"start"); f.truncate(300000)
with open(os.path.join(d, "dense"), "wb") as f:
    f.write(b"dense\n" * 100)
for n in ("sparse", "tailhole", "dense", ""):
    os.utime(os.path.join(d, n), (1700000000, 1700000000))
"#,
            &[&src.join(name)],
        );
    };
    let mut old_gnu: Option<PathBuf> = None;
    for (name, flags) in formats {
        sparse_source(name);
        let tar = img.dir.join(format!("{name}.tar"));
        let mut args = vec!["--sparse", "--numeric-owner", "-cf"];
        let tar_arg = tar.to_string_lossy().into_owned();
        args.push(&tar_arg);
        args.extend_from_slice(flags);
        args.extend_from_slice(&[name]);
        tar_in(&src, &args);
        let bytes = fs::read(&tar).expect("read tar");
        // The layer really is sparse in the format asked for.
        if name == "oldgnu" {
            let header = bytes
                .chunks(512)
                .find(|h| h.starts_with(b"oldgnu/sparse\0"))
                .expect("header of oldgnu/sparse");
            assert_eq!(header[156], b'S', "{name}: not an old GNU sparse entry");
            old_gnu = Some(tar);
            continue;
        }
        assert!(
            contains(&bytes, b"GNU.sparse."),
            "{name}: no sparse records"
        );
        img.add_layer(&tar);
    }
    let oracle = img.unpack("oracle");
    assert_eq!(
        fs::metadata(oracle.join("pax10/sparse"))
            .expect("sparse")
            .len(),
        64 << 20
    );
    for image in import_and_compare(&img, &oracle, &[], "sparse") {
        // Holes are stored as holes: 3 x 64 MiB of mostly zeros.
        let size = fs::metadata(&image).expect("image").len();
        assert!(size < 4 << 20, "image is {size} bytes: holes were stored");
    }
    // Old GNU sparse entries ('S'): Go's archive/tar reads them, but umoci
    // (like docker and containerd) refuses the type; so does cairn.
    img.add_layer(&old_gnu.expect("old GNU layer"));
    let (umoci, _) = img.try_unpack("oracle-oldgnu");
    assert!(
        !umoci.status.success() && stderr_of(&umoci).contains("oldgnu/sparse"),
        "umoci now unpacks old GNU sparse files: {}",
        stderr_of(&umoci)
    );
    let digests = img.layer_digests();
    let last = digests.last().expect("layers");
    assert_refused(&img, &["oldgnu/sparse", last, "--format=pax"], "oldgnu");
}

#[test]
fn the_same_path_twice_in_one_layer() {
    if !tools_ready() {
        return;
    }
    let img = Layout::new("twice");
    // Layer 1 (Python): what the duplicates of layer 2 must hide.
    let l1 = tarfile_layer(
        &img.dir,
        "l1",
        &[
            "dup|dir|",
            "dup/f2d|dir|",
            "dup/f2d/lowerchild|file|hidden by layer 2's file\n",
            "dup/d2f|dir|",
            "dup/d2f/lowerchild|file|hidden by layer 2's file\n",
        ],
    );
    img.add_layer(&l1);
    // Layer 2 (GNU tar, then tar -r): each path appended again after a
    // change on disk; the later entry wins.
    let src = img.dir.join("src");
    let d = src.join("dup");
    write(&d.join("file"), "v1\n");
    write(&d.join("d2f/child"), "child\n");
    write(&d.join("f2d"), "a file first\n");
    write(&d.join("hard"), "hard v1\n");
    fs::hard_link(d.join("hard"), d.join("hl")).expect("link");
    fs::hard_link(d.join("hard"), d.join("hl2")).expect("link");
    fs::create_dir_all(d.join("mode")).expect("mkdir");
    let tar = img.dir.join("l2.tar");
    let tar_arg = tar.to_string_lossy().into_owned();
    tar_in(&src, &["--numeric-owner", "-cf", &tar_arg, "dup"]);
    write(&d.join("file"), "v2, longer\n");
    fs::remove_dir_all(d.join("d2f")).expect("rm");
    write(&d.join("d2f"), "now a file\n");
    fs::remove_file(d.join("f2d")).expect("rm");
    write(&d.join("f2d/inner"), "now a directory\n");
    fs::remove_file(d.join("hard")).expect("rm");
    write(&d.join("hard"), "hard v2: a new inode\n");
    fs::set_permissions(d.join("mode"), fs::Permissions::from_mode(0o700)).expect("chmod");
    tar_in(
        &src,
        &[
            "--numeric-owner",
            "-rf",
            &tar_arg,
            "dup/file",
            "dup/d2f",
            "dup/f2d",
            "dup/hard",
            "dup/mode",
        ],
    );
    img.add_layer(&tar);
    // Layer 3 (Python's append mode): a file becomes a symlink, a symlink
    // a directory.
    let l3 = tarfile_layer(
        &img.dir,
        "l3",
        &["py|dir|", "py/f2s|file|a file\n", "py/s2d|symlink|f2s"],
    );
    python(
        r#"
import io, sys, tarfile
with tarfile.open(sys.argv[1], "a", format=tarfile.GNU_FORMAT) as t:
    for name, kind, value in [("py/f2s", tarfile.SYMTYPE, "s2d"),
                              ("py/s2d", tarfile.DIRTYPE, ""),
                              ("py/s2d/in", tarfile.REGTYPE, "in\n")]:
        i = tarfile.TarInfo(name)
        i.type, i.mtime = kind, 1700000001
        i.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
        data = value.encode() if kind == tarfile.REGTYPE else None
        if kind == tarfile.SYMTYPE:
            i.linkname = value
        if data is not None:
            i.size = len(data)
        t.addfile(i, io.BytesIO(data) if data is not None else None)
"#,
        &[&l3],
    );
    img.add_layer(&l3);
    let oracle = img.unpack("oracle");
    // The cases happened: later entries won in umoci too.
    assert_eq!(
        fs::read_to_string(oracle.join("dup/hl")).expect("hl"),
        "hard v1\n"
    );
    assert!(oracle.join("dup/f2d/inner").is_file());
    assert!(!oracle.join("dup/f2d/lowerchild").exists());
    assert!(oracle.join("dup/d2f").is_file());
    assert!(oracle.join("py/s2d/in").is_file());
    import_and_compare(&img, &oracle, &[], "twice");
}

#[test]
fn mtimes_before_1970_and_after_2038() {
    if !tools_ready() {
        return;
    }
    let img = Layout::new("mtimes");
    // GNU tar: base-256 for what octal cannot hold (before 1970, 2243+).
    let src = img.dir.join("src");
    let t = src.join("gnu");
    write(&t.join("y1960"), "1960\n");
    write(&t.join("minus1"), "1969-12-31 23:59:59\n");
    write(&t.join("y2100"), "2100: past i32, inside u32\n");
    write(&t.join("y2200"), "2200: past u32\n");
    write(&t.join("y2300"), "2300: past what umoci handles\n");
    std::os::unix::fs::symlink("y1960", t.join("link1960")).expect("symlink");
    fs::create_dir_all(t.join("dir1950")).expect("mkdir");
    for (name, date) in [
        ("y1960", "1960-01-01 UTC"),
        ("minus1", "1969-12-31 23:59:59 UTC"),
        ("y2100", "2100-01-01 UTC"),
        ("y2200", "2200-01-01 UTC"),
        ("y2300", "2300-01-01 UTC"),
        ("link1960", "1960-06-01 UTC"),
        ("dir1950", "1950-01-01 UTC"),
        ("", "2001-01-01 UTC"),
    ] {
        run_ok(
            Command::new("touch")
                .args(["-h", "-d", date])
                .arg(t.join(name)),
            "touch",
        );
    }
    let tar = img.dir.join("gnu.tar");
    let tar_arg = tar.to_string_lossy().into_owned();
    tar_in(
        &src,
        &["--format=gnu", "--numeric-owner", "-cf", &tar_arg, "gnu"],
    );
    img.add_layer(&tar);
    // Python's tarfile: base-256 in GNU format, PAX records in PAX format.
    let py = img.dir.join("py.tar");
    python(
        r#"
import io, sys, tarfile
def add(t, name, mtime):
    i = tarfile.TarInfo(name)
    i.mtime, i.size = mtime, 2
    t.addfile(i, io.BytesIO(b"x\n"))
with tarfile.open(sys.argv[1], "w", format=tarfile.GNU_FORMAT) as t:
    d = tarfile.TarInfo("py"); d.type = tarfile.DIRTYPE; d.mtime = 1700000000; d.mode = 0o755
    t.addfile(d)
    add(t, "py/gnu-1938", -1000000000)
    add(t, "py/gnu-2255", 9000000000)
    add(t, "py/gnu-2286", 10000000000)
"#,
        &[&py],
    );
    img.add_layer(&py);
    let pax = img.dir.join("pax.tar");
    python(
        r#"
import io, sys, tarfile
with tarfile.open(sys.argv[1], "w", format=tarfile.PAX_FORMAT) as t:
    for name, mtime in [("pax-neg", -12345.5), ("pax-2128", 5000000000.25), ("pax-now", 1700000000)]:
        i = tarfile.TarInfo("py/" + name)
        i.mtime, i.size = mtime, 2
        t.addfile(i, io.BytesIO(b"x\n"))
"#,
        &[&pax],
    );
    img.add_layer(&pax);
    let digests = img.layer_digests();
    let gnu = img.layer_tar(&digests[0]);
    assert!(
        gnu.chunks(512).any(|h| h.len() == 512 && h[136] == 0xff),
        "GNU tar wrote no negative base-256 mtime"
    );
    let oracle = img.unpack("oracle");
    assert!(
        fs::symlink_metadata(oracle.join("gnu/y1960"))
            .expect("y1960")
            .mtime()
            < 0,
        "umoci did not keep the 1960 mtime"
    );
    // umoci sets times through Go's time.UnixNano, which overflows after
    // 2262-04-11: its 2286 and 2300 come out as garbage (1901 on ext4).
    // cairn clamps them to the latest time squashfs holds, like 2200's.
    let beyond_umoci = ["gnu/y2300", "py/gnu-2286"];
    for image in import_and_compare(&img, &oracle, &beyond_umoci, "mtimes") {
        let listing = run_ok(
            Command::new("unsquashfs")
                .env("TZ", "UTC")
                .arg("-lln")
                .arg(&image),
            "unsquashfs -lln",
        );
        assert!(listing.contains("2100-01-01"), "{listing}");
    }
    img.publish();
    let (_, x) = import(&Who::Me, &img, "mtimes-beyond");
    for path in beyond_umoci {
        let md = fs::symlink_metadata(x.join(path)).expect(path);
        assert_eq!(md.mtime(), i64::from(u32::MAX), "{path}");
    }
}
