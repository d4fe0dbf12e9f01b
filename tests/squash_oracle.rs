//! `cairn squash` checked by the real tools: unsquashfs and mksquashfs
//! listings, sqfsdiff, the kernel's squashfs (as root), squashfuse; plus
//! reproducibility, every compressor, block sizes, duplicate files, bad
//! options and running as the ordinary user.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::{Who, assert_success, cairn_as, have_tool, is_root, output, require, scratch};

fn run_ok(cmd: &mut Command, what: &str) -> String {
    let out = output(cmd);
    assert_success(&out, what);
    common::stdout_of(&out)
}

fn sh(script: &str) {
    run_ok(Command::new("sh").arg("-ec").arg(script), script);
}

/// Size of the sparse file: over 4 GiB, so the extended file inode with
/// u64 sizes is needed, and not a multiple of the block size.
const SPARSE_SIZE: u64 = (4 << 30) + 3 * 4096 + 17;

/// The varied tree, built once per test process: every entry type, a
/// sparse file over 4 GiB, a 10,000-entry directory, hard-link groups,
/// xattrs, 255-byte names, odd modes, several owners (as root).
fn varied_tree() -> &'static Path {
    static TREE: OnceLock<PathBuf> = OnceLock::new();
    TREE.get_or_init(|| {
        let root = scratch("squash-tree").join("tree");
        fs::create_dir(&root).expect("mkdir tree");
        let p = |rel: &str| root.join(rel);
        fs::create_dir_all(p("etc/deep/er/and/deeper")).expect("mkdir");
        fs::create_dir_all(p("usr/bin")).expect("mkdir");
        fs::write(p("etc/empty"), b"").expect("empty");
        fs::write(p("etc/hello"), b"hello squashfs\n").expect("hello");
        fs::write(p("etc/deep/er/and/deeper/leaf"), b"leaf\n").expect("leaf");
        // Text that compresses, an exact block, several blocks plus a tail.
        let text: Vec<u8> = (0..400_000u32)
            .flat_map(|i| format!("line {i}\n").into_bytes())
            .collect();
        fs::write(p("usr/bin/text"), &text).expect("text");
        fs::write(p("usr/bin/exact"), &text[..131072]).expect("exact");
        // Incompressible data: stored raw.
        let mut x = common::XorShift::new(0x9e37_79b9_7f4a_7c15);
        let noise: Vec<u8> = (0..300_000)
            .map(|_| (x.next_u64() >> 24).to_le_bytes()[0])
            .collect();
        fs::write(p("usr/bin/noise"), &noise).expect("noise");
        // Duplicates of both (stored once).
        fs::write(p("usr/bin/text-copy"), &text).expect("copy");
        fs::write(p("etc/hello-copy"), b"hello squashfs\n").expect("copy");
        // Holes in the middle of data, and a sparse file over 4 GiB.
        let mut holes = vec![0u8; 5 * 131072];
        holes[3] = 1;
        holes[4 * 131072 + 7] = 2;
        fs::write(p("usr/bin/holes"), &holes).expect("holes");
        let sparse = fs::File::create(p("sparse-5g")).expect("sparse");
        sparse.set_len(SPARSE_SIZE).expect("truncate");
        // Symlinks: relative, absolute, dangling, long.
        symlink("hello", p("etc/link")).expect("symlink");
        symlink("/usr/bin/text", p("abs-link")).expect("symlink");
        symlink("does/not/exist", p("dangling")).expect("symlink");
        symlink("x/".repeat(1000), p("long-link")).expect("symlink");
        // Hard-link groups (one inode, nlink counted), across directories.
        fs::write(p("etc/hl-a"), b"linked\n").expect("hl");
        fs::hard_link(p("etc/hl-a"), p("usr/hl-b")).expect("link");
        fs::hard_link(p("etc/hl-a"), p("etc/deep/hl-c")).expect("link");
        fs::write(p("usr/bin/pair1"), &text[..5000]).expect("pair");
        fs::hard_link(p("usr/bin/pair1"), p("usr/bin/pair2")).expect("link");
        symlink("hello", p("etc/sym-to-link")).expect("symlink");
        fs::hard_link(p("etc/sym-to-link"), p("etc/sym-hardlink")).expect("link");
        // 255-byte names.
        fs::write(root.join("n".repeat(255)), b"long name\n").expect("long name");
        fs::create_dir(root.join("d".repeat(255))).expect("long dir");
        // A directory of 10,000 entries (listing over 64 KiB: extended
        // inode with an index).
        let big = p("big");
        fs::create_dir(&big).expect("big");
        for i in 0..10_000 {
            fs::write(big.join(format!("entry-{i:05}-{}", "z".repeat(i % 40))), []).expect("entry");
        }
        // fifo and socket: any user can make these.
        sh(&format!("mkfifo {}", p("fifo").display()));
        let _sock = std::os::unix::net::UnixListener::bind(p("socket")).expect("bind unix socket");
        // Odd modes: setuid, setgid, sticky, unusual bits.
        fs::write(p("usr/bin/suid"), b"#!/bin/sh\n").expect("suid");
        fs::set_permissions(p("usr/bin/suid"), fs::Permissions::from_mode(0o4755)).expect("chmod");
        fs::write(p("usr/bin/sgid"), b"sgid\n").expect("sgid");
        fs::set_permissions(p("usr/bin/sgid"), fs::Permissions::from_mode(0o2751)).expect("chmod");
        fs::create_dir(p("sticky")).expect("sticky");
        fs::set_permissions(p("sticky"), fs::Permissions::from_mode(0o1777)).expect("chmod");
        fs::write(p("etc/odd"), b"odd\n").expect("odd");
        fs::set_permissions(p("etc/odd"), fs::Permissions::from_mode(0o6604)).expect("chmod");
        // xattrs: user.* works on most filesystems.
        sh(&format!(
            "setfattr -n user.comment -v 'a comment' {0} && setfattr -n user.empty {0} && \
             setfattr -n user.bin -v 0x00ff00 {1} && setfattr -n user.dir -v yes {2} && \
             setfattr -n user.comment -v 'a comment' {3}",
            p("etc/hello").display(),
            p("usr/bin/noise").display(),
            p("etc").display(),
            p("etc/hl-a").display(),
        ));
        if is_root() {
            // Devices, other owners, trusted.* and security.capability.
            sh(&format!(
                "mknod {0} c 1 3 && mknod {1} b 7 200 && mknod {2} c 136 70000 && \
                 chown 1001:1001 {3} && chown 4242:4343 {4} && chown -h 77:88 {5} && \
                 chown 5:6 {6} && setfattr -n trusted.t -v tv {7}",
                p("null").display(),
                p("loop200").display(),
                p("bigminor").display(),
                p("usr/bin/text").display(),
                p("etc/deep").display(),
                p("etc/link").display(),
                p("fifo").display(),
                p("etc/empty").display(),
            ));
            if have_tool("setcap") {
                sh(&format!(
                    "setcap cap_net_raw+ep {}",
                    p("usr/bin/suid").display()
                ));
                // setcap clears setuid on some systems: put it back.
                fs::set_permissions(p("usr/bin/suid"), fs::Permissions::from_mode(0o4755))
                    .expect("chmod");
            }
        }
        // Fixed, distinct mtimes (the symlink's own one too).
        sh(&format!(
            "touch -d @1000000000 {0} && touch -h -d @1111111111 {1} && touch -d @1700000000 {2}",
            p("etc/hello").display(),
            p("etc/link").display(),
            p("usr/bin/text").display(),
        ));
        root
    })
}

fn cairn_squash(who: &Who, dir: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    output(cairn_as(who).arg("squash").arg(dir).arg(out).args(extra))
}

fn squash_ok(dir: &Path, out: &Path, extra: &[&str]) {
    let res = cairn_squash(&Who::Me, dir, out, extra);
    assert_success(&res, "cairn squash");
}

/// `unsquashfs -lln` with directory sizes dropped (they depend on how the
/// listing is split into headers, which is the writer's choice).
fn listing(image: &Path) -> Vec<String> {
    let text = run_ok(
        Command::new("unsquashfs").arg("-lln").arg(image),
        "unsquashfs -lln",
    );
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            if l.starts_with('d') {
                let cols: Vec<&str> = l.split_whitespace().collect();
                format!("{} {} DIR {}", cols[0], cols[1], cols[3..].join(" "))
            } else {
                l.split_whitespace().collect::<Vec<_>>().join(" ")
            }
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Stat {
    mode: u32,
    uid: u32,
    gid: u32,
    size: Option<u64>,
    mtime: i64,
    nlink: u64,
    rdev: u64,
    target: Option<Vec<u8>>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

fn xattrs_of(path: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut list = vec![0u8; 1 << 16];
    let n = rustix::fs::llistxattr(path, &mut list[..]).unwrap_or(0);
    let mut out = Vec::new();
    for name in list[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        if name.starts_with(b"system.") {
            continue;
        }
        let mut value = vec![0u8; 1 << 16];
        let len = rustix::fs::lgetxattr(path, std::ffi::OsStr::from_bytes(name), &mut value[..])
            .expect("getxattr");
        value.truncate(len);
        out.push((name.to_vec(), value));
    }
    out.sort();
    out
}

/// mode, owner, size, mtime, nlink, rdev, symlink target and xattrs of
/// every path below `root`.
fn stat_walk(root: &Path) -> BTreeMap<PathBuf, Stat> {
    let mut map = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let m = fs::symlink_metadata(&path).expect("lstat");
        if m.is_dir() {
            for e in fs::read_dir(&path).expect("readdir") {
                stack.push(e.expect("entry").path());
            }
        }
        let rel = path.strip_prefix(root).expect("below root").to_path_buf();
        map.insert(
            rel,
            Stat {
                mode: m.mode(),
                uid: m.uid(),
                gid: m.gid(),
                size: (!m.is_dir()).then_some(m.size()),
                mtime: m.mtime(),
                nlink: m.nlink(),
                rdev: m.rdev(),
                target: m.file_type().is_symlink().then(|| {
                    fs::read_link(&path)
                        .expect("readlink")
                        .as_os_str()
                        .as_bytes()
                        .to_vec()
                }),
                xattrs: xattrs_of(&path),
            },
        );
    }
    map
}

fn assert_same_stats(src: &Path, mounted: &Path) {
    let a = stat_walk(src);
    let b = stat_walk(mounted);
    assert_eq!(a.len(), b.len(), "entry counts differ");
    for (path, sa) in &a {
        let sb = b.get(path).unwrap_or_else(|| panic!("{path:?} missing"));
        assert_eq!(sa, sb, "{path:?} differs");
    }
}

/// `diff -r`; fifos, sockets and devices cannot be diffed, so diff reports
/// them: accept exactly those reports when both sides have the same type.
fn assert_diff_clean(a: &Path, b: &Path) {
    assert_diff_clean_except(a, b, &[]);
}

fn assert_diff_clean_except(a: &Path, b: &Path, exclude: &[&str]) {
    let mut cmd = Command::new("diff");
    cmd.arg("-r").arg("--no-dereference");
    for e in exclude {
        cmd.arg(format!("--exclude={e}"));
    }
    let out = output(cmd.arg(a).arg(b));
    let text = common::stdout_of(&out);
    for line in text.lines() {
        let special = [
            "fifo",
            "socket",
            "character special file",
            "block special file",
        ]
        .iter()
        .any(|k| {
            line.starts_with("File ")
                && line.ends_with(&format!("is a {k}"))
                && line.contains(&format!("is a {k} while"))
        });
        assert!(
            special,
            "diff -r {a:?} {b:?}: {line}\n{}",
            common::stderr_of(&out)
        );
    }
    assert!(
        out.status.code().is_some_and(|c| c <= 1),
        "diff failed: {out:?}"
    );
}

struct Unmount(PathBuf, &'static str);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new(self.1)
            .arg(if self.1 == "fusermount3" { "-u" } else { "-l" })
            .arg(&self.0)
            .status();
    }
}

fn oracle_tools() -> bool {
    require(
        ["mksquashfs", "unsquashfs", "sqfsdiff", "setfattr"]
            .iter()
            .all(|t| have_tool(t)),
        "squashfs-tools, squashfs-tools-ng and attr",
    )
}

/// Sparse files (a hole in the middle, holes at the ends, all holes): the
/// same inode types, sizes, contents, owners, modes (and times, with
/// mksquashfs) as mksquashfs and gensquashfs write, by sqfsdiff.
#[test]
fn sparse_files_agree_with_mksquashfs_and_gensquashfs() {
    if !oracle_tools() || !require(have_tool("gensquashfs"), "gensquashfs") {
        return;
    }
    let work = scratch("squash-sparse");
    let tree = work.join("tree");
    fs::create_dir(&tree).expect("mkdir");
    let sparse = |name: &str, len: u64, bytes_at: &[u64]| {
        let f = fs::File::create(tree.join(name)).expect("create");
        f.set_len(len).expect("truncate");
        for &at in bytes_at {
            std::os::unix::fs::FileExt::write_all_at(&f, b"x", at).expect("write");
        }
    };
    sparse("middle", 1 << 20, &[0, (1 << 20) - 1]);
    sparse("ends", 1 << 20, &[500_000]);
    sparse("all-holes", 3 << 17, &[]);
    sparse("tail-hole", 300_000, &[10]);
    fs::write(tree.join("dense"), vec![7u8; 200_000]).expect("dense");
    let mine = work.join("cairn.sqfs");
    squash_ok(&tree, &mine, &["--comp", "gzip"]);
    let mk = work.join("mk.sqfs");
    common::mksquashfs(&tree, &mk, &["-comp", "gzip"]);
    let gen_ = work.join("gen.sqfs");
    run_ok(
        Command::new("gensquashfs")
            .arg("-D")
            .arg(&tree)
            .args(["-c", "gzip", "-k", "-f"])
            .arg(&gen_),
        "gensquashfs",
    );
    // gensquashfs gives the root directory its own time, not the tree's:
    // its comparison leaves times out (types, contents, owners, modes).
    for (theirs, who, times) in [(&mk, "mksquashfs", true), (&gen_, "gensquashfs", false)] {
        let diff = output(
            Command::new("sqfsdiff")
                .args(times.then_some("-T"))
                .arg("-a")
                .arg(theirs)
                .arg("-b")
                .arg(&mine),
        );
        assert_success(&diff, &format!("sqfsdiff (times: {times}) against {who}"));
    }
}

#[test]
fn agrees_with_mksquashfs_and_sqfsdiff() {
    if !oracle_tools() {
        return;
    }
    let tree = varied_tree();
    let work = scratch("squash-mk");
    let mine = work.join("cairn.sqfs");
    let theirs = work.join("mk.sqfs");
    squash_ok(tree, &mine, &[]);
    common::mksquashfs(tree, &theirs, &["-comp", "zstd"]);
    assert_eq!(listing(&theirs), listing(&mine));
    let diff = output(
        Command::new("sqfsdiff")
            .arg("-T")
            .arg("-a")
            .arg(&theirs)
            .arg("-b")
            .arg(&mine),
    );
    assert_success(&diff, "sqfsdiff -T (contents, owners, modes, times)");
    // Extraction exercises every table; xattrs come back too.
    let x = work.join("x");
    run_ok(
        Command::new("unsquashfs").arg("-d").arg(&x).arg(&mine),
        "unsquashfs -d",
    );
    assert_diff_clean(tree, &x);
    for rel in ["etc/hello", "usr/bin/noise", "etc", "etc/hl-a", "usr/hl-b"] {
        assert_eq!(xattrs_of(&tree.join(rel)), xattrs_of(&x.join(rel)), "{rel}");
    }
    assert!(!xattrs_of(&x.join("etc/hello")).is_empty());
}

#[test]
fn kernel_mount_matches_the_source() {
    if !require(is_root(), "root (kernel squashfs mount)") || !oracle_tools() {
        return;
    }
    let tree = varied_tree();
    let work = scratch("squash-kernel");
    let image = work.join("cairn.sqfs");
    squash_ok(tree, &image, &[]);
    let mnt = work.join("mnt");
    fs::create_dir(&mnt).expect("mkdir mnt");
    run_ok(
        Command::new("mount")
            .args(["-t", "squashfs", "-o", "loop,ro"])
            .arg(&image)
            .arg(&mnt),
        "mount -t squashfs",
    );
    let _guard = Unmount(mnt.clone(), "umount");
    assert_diff_clean(tree, &mnt);
    assert_same_stats(tree, &mnt);
    let caps = mnt.join("usr/bin/suid");
    if have_tool("getcap") {
        let src = run_ok(
            Command::new("getcap").arg(tree.join("usr/bin/suid")),
            "getcap",
        );
        let got = run_ok(Command::new("getcap").arg(&caps), "getcap");
        assert_eq!(
            src.split_whitespace().nth(1),
            got.split_whitespace().nth(1),
            "security.capability survives"
        );
    }
}

#[test]
fn squashfuse_reads_it() {
    if !require(
        have_tool("squashfuse") && have_tool("fusermount3") && Path::new("/dev/fuse").exists(),
        "squashfuse and /dev/fuse",
    ) || !oracle_tools()
    {
        return;
    }
    let tree = varied_tree();
    let work = scratch("squash-fuse");
    let image = work.join("cairn.sqfs");
    squash_ok(tree, &image, &[]);
    let mnt = work.join("mnt");
    fs::create_dir(&mnt).expect("mkdir mnt");
    run_ok(
        Command::new("squashfuse").arg(&image).arg(&mnt),
        "squashfuse",
    );
    let _guard = Unmount(mnt.clone(), "fusermount3");
    // 4 GiB of zeroes through single-threaded FUSE is slow; unsquashfs and
    // the kernel read it in the other tests, here its size is enough.
    assert_diff_clean_except(tree, &mnt, &["sparse-5g"]);
    let size = fs::metadata(mnt.join("sparse-5g")).expect("stat").len();
    assert_eq!(size, SPARSE_SIZE);
}

#[test]
fn two_runs_give_identical_bytes() {
    if !oracle_tools() {
        return;
    }
    let tree = varied_tree();
    let work = scratch("squash-repro");
    let (a, b) = (work.join("a.sqfs"), work.join("b.sqfs"));
    squash_ok(tree, &a, &[]);
    squash_ok(tree, &b, &[]);
    let (ba, bb) = (fs::read(&a).expect("a"), fs::read(&b).expect("b"));
    assert!(ba == bb, "two runs differ");
    assert_eq!(ba.len() % 4096, 0, "padded to 4 KiB");
}

/// A smaller tree for the compressor and block-size round trips.
fn small_tree(name: &str) -> PathBuf {
    let root = scratch(name).join("tree");
    fs::create_dir_all(root.join("a/b")).expect("mkdir");
    let text: Vec<u8> = (0..60_000u32)
        .flat_map(|i| format!("{i} squash\n").into_bytes())
        .collect();
    fs::write(root.join("a/text"), &text).expect("text");
    fs::write(root.join("a/b/small"), b"small\n").expect("small");
    fs::write(root.join("a/b/zeros"), vec![0u8; 3 << 20]).expect("zeros");
    symlink("../text", root.join("a/b/link")).expect("symlink");
    fs::hard_link(root.join("a/text"), root.join("hard")).expect("link");
    root
}

fn assert_roundtrip(tree: &Path, image: &Path, work: &Path) {
    let x = work.join(format!(
        "x-{}",
        image.file_name().expect("name").to_string_lossy()
    ));
    run_ok(
        Command::new("unsquashfs").arg("-d").arg(&x).arg(image),
        "unsquashfs -d",
    );
    assert_diff_clean(tree, &x);
    let (a, b) = (stat_walk(tree), stat_walk(&x));
    for (path, sa) in &a {
        let sb = &b[path];
        assert_eq!(
            (sa.mode, sa.size, sa.mtime),
            (sb.mode, sb.size, sb.mtime),
            "{path:?}"
        );
    }
}

#[test]
fn every_compressor_round_trips() {
    if !oracle_tools() {
        return;
    }
    let tree = small_tree("squash-comp");
    let work = scratch("squash-comp-out");
    for (comp, level, id) in [
        ("zstd", Some("19"), "zstd"),
        ("gzip", Some("6"), "gzip"),
        ("xz", None, "xz"),
        ("lz4", None, "lz4"),
        ("none", None, "gzip"),
    ] {
        let image = work.join(format!("{comp}.sqfs"));
        let mut extra = vec!["--comp", comp];
        if let Some(l) = level {
            extra.extend(["--level", l]);
        }
        squash_ok(&tree, &image, &extra);
        let stat = run_ok(
            Command::new("unsquashfs").arg("-s").arg(&image),
            "unsquashfs -s",
        );
        assert!(
            stat.contains(&format!("Compression {id}")),
            "{comp}: {stat}"
        );
        assert_roundtrip(&tree, &image, &work);
    }
}

#[test]
fn block_sizes_4k_and_1m() {
    if !oracle_tools() {
        return;
    }
    let tree = small_tree("squash-bs");
    let work = scratch("squash-bs-out");
    for bs in ["4K", "1M", "65536"] {
        let image = work.join(format!("bs-{bs}.sqfs"));
        squash_ok(&tree, &image, &["--block-size", bs]);
        let stat = run_ok(
            Command::new("unsquashfs").arg("-s").arg(&image),
            "unsquashfs -s",
        );
        let bytes = match bs {
            "4K" => 4096,
            "1M" => 1 << 20,
            _ => 65536,
        };
        assert!(
            stat.contains(&format!("Block size {bytes}")),
            "{bs}: {stat}"
        );
        assert_roundtrip(&tree, &image, &work);
    }
}

#[test]
fn duplicate_files_are_stored_once() {
    if !oracle_tools() {
        return;
    }
    let work = scratch("squash-dups");
    let mut x = common::XorShift::new(0x1234_5678);
    let noise: Vec<u8> = (0..400_000)
        .map(|_| x.next_u64().to_le_bytes()[0])
        .collect();
    let (once, many) = (work.join("once"), work.join("many"));
    fs::create_dir_all(&once).expect("mkdir");
    fs::create_dir_all(&many).expect("mkdir");
    fs::write(once.join("f0"), &noise).expect("write");
    for i in 0..5 {
        fs::write(many.join(format!("f{i}")), &noise).expect("write");
        fs::write(many.join(format!("tail{i}")), &noise[..1000]).expect("write");
    }
    // The same full blocks with another tail: the blocks are shared.
    let mut appended = noise.clone();
    appended.extend_from_slice(b"appended");
    fs::write(many.join("appended"), &appended).expect("write");
    let (a, b) = (work.join("once.sqfs"), work.join("many.sqfs"));
    squash_ok(&once, &a, &[]);
    squash_ok(&many, &b, &[]);
    let (sa, sb) = (
        fs::metadata(&a).expect("a").len(),
        fs::metadata(&b).expect("b").len(),
    );
    // Six copies of 400 KB of noise would be 2.4 MB; stored once they fit
    // in the single copy's size plus two small tails and metadata.
    assert!(sb < sa + 16384, "with duplicates {sb} vs once {sa}");
    assert_roundtrip(&many, &b, &work);
}

#[test]
fn bad_options_exit_125_and_leave_nothing() {
    let tree = small_tree("squash-bad");
    let work = scratch("squash-bad-out");
    let out = work.join("out.sqfs");
    for (args, needle) in [
        (vec!["--comp", "lzo"], "lzo"),
        (vec!["--comp", "zstd", "--level", "40"], "40"),
        (vec!["--comp", "gzip", "--level", "0"], "--level"),
        (vec!["--comp", "lz4", "--level", "3"], "lz4"),
        (vec!["--block-size", "3K"], "3K"),
        (vec!["--block-size", "2M"], "--block-size"),
        (vec!["--block-size", "2K"], "2K"),
    ] {
        let res = cairn_squash(&Who::Me, &tree, &out, &args);
        assert_eq!(res.status.code(), Some(125), "{args:?}");
        let err = common::stderr_of(&res);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let missing = work.join("no-such-dir");
    let res = cairn_squash(&Who::Me, &missing, &out, &[]);
    assert_eq!(res.status.code(), Some(125));
    assert!(common::stderr_of(&res).contains("no-such-dir"));
    let res = cairn_squash(&Who::Me, &tree, &work.join("missing/out.sqfs"), &[]);
    assert_eq!(res.status.code(), Some(125));
    assert!(common::stderr_of(&res).contains("missing/out.sqfs"));
    let left: Vec<_> = fs::read_dir(&work).expect("ls").collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn ordinary_user_gets_their_own_owners() {
    let Some(user) = common::ordinary_user() else {
        return;
    };
    if !oracle_tools() {
        return;
    }
    let tree = small_tree("squash-user");
    if is_root() {
        // Files owned by someone else: the user cannot own them in an image.
        sh(&format!(
            "chown -R 4242:4343 {} && chmod -R a+rX {}",
            tree.display(),
            tree.display()
        ));
    }
    let work = scratch("squash-user-out");
    let image = work.join("user.sqfs");
    let res = cairn_squash(&user, &tree, &image, &[]);
    assert_success(&res, "cairn squash as the ordinary user");
    let want = format!("{}/{}", user.uid(), user.gid());
    for line in listing(&image) {
        assert_eq!(
            line.split_whitespace().nth(1),
            Some(want.as_str()),
            "{line}"
        );
    }
    if is_root() {
        // Writing into a directory the user cannot write: 125, nothing left.
        let locked = scratch("squash-user-locked");
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o755)).expect("chmod");
        let res = cairn_squash(&user, &tree, &locked.join("o.sqfs"), &[]);
        assert_eq!(res.status.code(), Some(125), "{res:?}");
        assert_eq!(fs::read_dir(&locked).expect("ls").count(), 0);
    }
}

/// The id table's limit, checked by the real tools. The superblock counts
/// distinct uids and gids in a u16, so 65,535 is the most an image holds:
/// 65,536 would be stored as a count of 0, which the kernel ("unable to
/// read id index table") and unsquashfs ("Bad id count in super block")
/// refuse; mksquashfs 4.5 writes such an image all the same. cairn writes
/// 65,535 owners, every one of which unsquashfs lists (and the kernel
/// shows), and refuses the 65,536th with an error naming the id table.
#[test]
fn id_table_holds_65535_owners_and_refuses_the_65536th() {
    if !require(is_root(), "root (files of 65,536 owners)")
        || !require(have_tool("unsquashfs"), "unsquashfs")
    {
        return;
    }
    let work = scratch("squash-ids");
    let tree = work.join("tree");
    fs::create_dir(&tree).expect("mkdir tree");
    // The root directory is 0/0; file i is owned by 100000+i (uid and gid):
    // 65,534 files give 65,535 distinct ids.
    let owner = |i: u32| 100_000 + i;
    let add = |i: u32| {
        let p = tree.join(format!("f{i}"));
        fs::write(&p, b"").expect("create");
        std::os::unix::fs::chown(&p, Some(owner(i)), Some(owner(i))).expect("chown");
    };
    (0..65_534).for_each(add);

    let image = work.join("ids.sqfs");
    squash_ok(&tree, &image, &[]);
    let info = run_ok(Command::new("unsquashfs").arg("-s").arg(&image), "-s");
    assert!(info.contains("Number of ids 65535"), "{info}");
    let mut want: BTreeMap<String, String> = (0..65_534)
        .map(|i| (format!("squashfs-root/f{i}"), format!("{0}/{0}", owner(i))))
        .collect();
    want.insert("squashfs-root".into(), "0/0".into());
    let got: BTreeMap<String, String> = listing(&image)
        .iter()
        .map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            (cols[cols.len() - 1].to_string(), cols[1].to_string())
        })
        .collect();
    assert!(got == want, "unsquashfs -lln does not list every owner");
    // The kernel reads the same id table.
    let mnt = work.join("mnt");
    fs::create_dir(&mnt).expect("mkdir mnt");
    run_ok(
        Command::new("mount")
            .args(["-t", "squashfs", "-o", "loop,ro"])
            .arg(&image)
            .arg(&mnt),
        "mount -t squashfs",
    );
    let guard = Unmount(mnt.clone(), "umount");
    for i in (0..65_534).step_by(97).chain([65_533]) {
        let md = fs::symlink_metadata(mnt.join(format!("f{i}"))).expect("stat");
        assert_eq!((md.uid(), md.gid()), (owner(i), owner(i)), "f{i}");
    }
    drop(guard);

    // One owner more: refused, naming the id table; no image left.
    add(65_534);
    let over = work.join("over.sqfs");
    let res = cairn_squash(&Who::Me, &tree, &over, &[]);
    assert_eq!(res.status.code(), Some(125), "{res:?}");
    let err = common::stderr_of(&res);
    assert!(
        err.contains("too many distinct uids and gids in the id table: 65536")
            && err.contains("at most 65535"),
        "{err}"
    );
    assert!(!over.exists());
    let left: Vec<_> = fs::read_dir(&work)
        .expect("ls")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(left.len(), 3, "only tree, mnt and ids.sqfs: {left:?}");
    fs::remove_dir_all(&work).expect("clean up 65,535 files");
}
