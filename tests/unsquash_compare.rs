//! `cairn unsquash` against `unsquashfs -d` on mksquashfs images of a varied
//! tree, for every compressor and the layout options that change what the
//! reader sees: both extractions must give the same tree (type, mode, owner,
//! size, mtime, content, link target, device number, hard-link groups,
//! xattrs). Runs as root and as the ordinary user.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::Who;
use sha2::{Digest, Sha256};

/// The varied source tree, built once per test process.
fn source_tree() -> &'static Path {
    static TREE: OnceLock<PathBuf> = OnceLock::new();
    TREE.get_or_init(|| {
        let root = common::shared_dir().join("unsquash-src");
        build_tree(&root);
        root
    })
}

fn sh(script: &str, cwd: &Path) {
    let out = common::output(Command::new("sh").arg("-ec").arg(script).current_dir(cwd));
    common::assert_success(&out, script);
}

fn build_tree(root: &Path) {
    fs::create_dir_all(root.join("dir/sub/deeper")).expect("mkdir");
    fs::create_dir_all(root.join("big")).expect("mkdir big");
    fs::create_dir_all(root.join("empty")).expect("mkdir empty");
    fs::write(root.join("hello.txt"), b"hello world\n").expect("write");
    fs::write(root.join("dir/sub/deeper/leaf"), vec![b'x'; 300_000]).expect("write");
    fs::write(root.join("empty-file"), b"").expect("write");
    // Exactly one 128 KiB block (no tail) and a little over one block.
    fs::write(root.join("one-block"), vec![7u8; 131_072]).expect("write");
    fs::write(root.join("block-plus"), vec![9u8; 131_073]).expect("write");
    // Incompressible enough, reproducible.
    let rnd = common::XorShift::new(0x1234_5678_9abc_def0).bytes(3_000_000);
    fs::write(root.join("random.bin"), &rnd).expect("write random");
    // A sparse file: a hole, some data, a hole, a tail.
    {
        let f = fs::File::create(root.join("sparse")).expect("sparse");
        use std::os::unix::fs::FileExt;
        f.write_all_at(b"middle data", 5 << 20).expect("write");
        f.write_all_at(b"tail", (12 << 20) + 3).expect("write");
    }
    for i in 0..3000 {
        fs::write(root.join(format!("big/entry-{i:05}")), format!("{i}\n")).expect("big");
    }
    let long: String = "n".repeat(255);
    fs::write(root.join(&long), b"long name").expect("long name");
    fs::write(root.join("dir").join("é ü space"), b"unicode").expect("unicode");
    fs::hard_link(root.join("hello.txt"), root.join("dir/hard-link")).expect("link");
    fs::hard_link(root.join("hello.txt"), root.join("hard-link-2")).expect("link");
    std::os::unix::fs::symlink("hello.txt", root.join("symlink")).expect("symlink");
    std::os::unix::fs::symlink("../../nowhere", root.join("dir/dangling")).expect("symlink");
    std::os::unix::fs::symlink("t".repeat(1000), root.join("long-target")).expect("symlink");
    sh("mkfifo fifo", root);
    drop(std::os::unix::net::UnixListener::bind(root.join("socket")).expect("socket"));
    for (name, mode) in [
        ("hello.txt", 0o644),
        ("dir/sub/deeper/leaf", 0o4755),
        ("block-plus", 0o2711),
        ("one-block", 0o400),
    ] {
        fs::set_permissions(root.join(name), fs::Permissions::from_mode(mode)).expect("chmod");
    }
    fs::set_permissions(root.join("dir/sub"), fs::Permissions::from_mode(0o1750)).expect("chmod");
    sh(
        "setfattr -n user.comment -v 'a value' hello.txt; \
         setfattr -n user.empty dir; setfattr -n user.two -v 2 dir",
        root,
    );
    if common::is_root() {
        sh(
            "mknod chardev c 1 3; mknod blockdev b 8 17; mknod bigminor c 259 70000; \
             chown 1234:5678 dir/sub/deeper/leaf; chown -h 42:43 symlink; chown 7:8 dir; \
             setfattr -n trusted.secret -v s3 dir/sub; \
             setfattr -n security.capability -v 0sAQAAAgAgAAAAAAAAAAAAAAAAAAA= random.bin",
            root,
        );
    }
    sh(
        "touch -h -d '2001-02-03 04:05:06' symlink dir/sub hello.txt",
        root,
    );
}

/// One canonical line per path: everything unsquashfs and cairn must agree on.
fn describe_tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut groups: HashMap<(u64, u64), String> = HashMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let p = root.join(&rel);
        let meta = fs::symlink_metadata(&p).expect("lstat");
        let ft = meta.file_type();
        let key = if rel.as_os_str().is_empty() {
            ".".to_string()
        } else {
            rel.to_string_lossy().into_owned()
        };
        let mut line = format!(
            "mode={:o} uid={} gid={} mtime={}",
            meta.mode(),
            meta.uid(),
            meta.gid(),
            meta.mtime()
        );
        if ft.is_dir() {
            let mut names: Vec<_> = fs::read_dir(&p)
                .expect("readdir")
                .map(|e| e.expect("entry").file_name())
                .collect();
            names.sort();
            for n in names {
                stack.push(rel.join(n));
            }
        } else if ft.is_symlink() {
            let t = fs::read_link(&p).expect("readlink");
            line += &format!(" target={}", t.to_string_lossy());
        } else if ft.is_file() {
            let data = fs::read(&p).expect("read");
            line += &format!(" size={} sha={:x}", meta.len(), Sha256::digest(&data));
        } else {
            line += &format!(" rdev={:x}", meta.rdev());
        }
        if !ft.is_dir() && meta.nlink() > 1 {
            let first = groups
                .entry((meta.dev(), meta.ino()))
                .or_insert_with(|| key.clone());
            line += &format!(" nlink={} group={}", meta.nlink(), first);
        }
        line += &format!(" xattrs={:?}", xattrs_of(&p));
        out.insert(key, line);
    }
    // Hard-link group names depend on visit order; make them canonical.
    let mut canonical: HashMap<String, String> = HashMap::new();
    for (path, line) in &out {
        if let Some(g) = line.split(" group=").nth(1) {
            let g = g.split(' ').next().unwrap_or_default().to_string();
            canonical.entry(g).or_insert_with(|| path.clone());
        }
    }
    out.into_iter()
        .map(|(path, line)| {
            let line = match line.split_once(" group=") {
                Some((head, rest)) => {
                    let (g, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                    format!("{head} group={} {tail}", canonical[g])
                }
                None => line,
            };
            (path, line)
        })
        .collect()
}

fn xattrs_of(p: &Path) -> Vec<(String, String)> {
    let mut names = vec![0u8; 65536];
    let n = rustix::fs::llistxattr(p, &mut names).unwrap_or(0);
    let mut out: Vec<(String, String)> = names[..n]
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(|name| {
            let mut value = vec![0u8; 65536];
            let key = std::ffi::OsStr::from_bytes(name);
            let len = rustix::fs::lgetxattr(p, key, &mut value).expect("getxattr");
            (
                String::from_utf8_lossy(name).into_owned(),
                format!("{:?}", &value[..len]),
            )
        })
        .collect();
    out.sort();
    out
}

fn assert_same_tree(ours: &Path, theirs: &Path, what: &str) {
    let a = describe_tree(ours);
    let b = describe_tree(theirs);
    let mut diffs = Vec::new();
    for k in a.keys().chain(b.keys()) {
        if a.get(k) != b.get(k) {
            diffs.push(format!(
                "{k}:\n  cairn:      {:?}\n  unsquashfs: {:?}",
                a.get(k),
                b.get(k)
            ));
        }
    }
    diffs.dedup();
    assert!(
        diffs.is_empty(),
        "{what}: {} differences\n{}",
        diffs.len(),
        diffs.join("\n")
    );
    assert!(a.len() > 3000, "{what}: only {} paths", a.len());
}

fn have_tools() -> bool {
    common::require(
        common::have_tool("mksquashfs") && common::have_tool("unsquashfs"),
        "mksquashfs and unsquashfs (squashfs-tools)",
    ) && common::require(common::have_tool("setfattr"), "setfattr (attr)")
}

/// mksquashfs the source tree with `opts`, then compare both extractions as
/// every caller.
fn compare(label: &str, opts: &[&str]) {
    if !have_tools() {
        return;
    }
    let src = source_tree();
    let work = common::scratch(&format!("unsquash-{label}"));
    let image = work.join("image.sqfs");
    let flags = [opts, &["-processors", "1"][..]].concat();
    common::mksquashfs(src, &image, &flags);
    fs::set_permissions(&image, fs::Permissions::from_mode(0o644)).expect("chmod image");
    for who in common::callers() {
        let ours = work.join(format!("cairn-{}", who.label()));
        let theirs = work.join(format!("unsquashfs-{}", who.label()));
        let out = common::output(
            common::cairn_as(&who)
                .arg("unsquash")
                .arg(&image)
                .arg(&ours),
        );
        common::assert_success(&out, &format!("cairn unsquash ({label}, {})", who.label()));
        // As a user unsquashfs exits 2 after failing to create devices and
        // trusted xattrs, which cairn skips with a warning: compare trees.
        let out = common::output(
            common::command_as(&who, "unsquashfs")
                .args(["-q", "-no-progress", "-d"])
                .arg(&theirs)
                .arg(&image),
        );
        assert!(
            theirs.is_dir(),
            "unsquashfs failed: {}",
            common::stderr_of(&out)
        );
        assert_same_tree(&ours, &theirs, &format!("{label} as {}", who.label()));
        assert_sparse_kept(&ours);
    }
    let _ = fs::remove_dir_all(&work);
}

/// The 12 MiB sparse file must not be written out in full.
fn assert_sparse_kept(root: &Path) {
    let meta = fs::metadata(root.join("sparse")).expect("sparse");
    assert!(
        meta.blocks() * 512 < 2 << 20,
        "sparse file takes {} blocks",
        meta.blocks()
    );
}

#[test]
fn gzip() {
    compare("gzip", &["-comp", "gzip"]);
}

#[test]
fn lzma() {
    compare("lzma", &["-comp", "lzma"]);
}

/// Non-default settings make mksquashfs store a compressor options block
/// after the superblock, which the reader must skip.
#[test]
fn compressor_options() {
    compare(
        "comp-options",
        &[
            "-comp",
            "gzip",
            "-Xwindow-size",
            "9",
            "-Xcompression-level",
            "1",
        ],
    );
    compare(
        "xz-bcj",
        &["-comp", "xz", "-Xbcj", "x86", "-Xdict-size", "50%"],
    );
}

#[test]
fn lzo() {
    compare("lzo", &["-comp", "lzo"]);
}

#[test]
fn xz() {
    compare("xz", &["-comp", "xz"]);
}

#[test]
fn lz4() {
    compare("lz4", &["-comp", "lz4"]);
}

#[test]
fn zstd() {
    compare("zstd", &["-comp", "zstd"]);
}

#[test]
fn uncompressed_everything() {
    compare("uncompressed", &["-noI", "-noD", "-noF", "-noX"]);
}

#[test]
fn no_fragments() {
    compare("no-fragments", &["-no-fragments"]);
}

#[test]
fn always_use_fragments() {
    compare("always-fragments", &["-always-use-fragments"]);
}

#[test]
fn block_4k() {
    compare("b4k", &["-b", "4K", "-comp", "zstd"]);
}

#[test]
fn block_1m() {
    compare("b1m", &["-b", "1M", "-comp", "xz"]);
}

#[test]
fn existing_nonempty_dir_is_refused_and_kept() {
    if !have_tools() {
        return;
    }
    let work = common::scratch("unsquash-exists");
    let src = work.join("src");
    fs::create_dir(&src).expect("src");
    fs::write(src.join("f"), b"x").expect("f");
    let image = work.join("i.sqfs");
    common::mksquashfs(&src, &image, &[]);
    let dst = work.join("dst");
    fs::create_dir(&dst).expect("dst");
    fs::File::create(dst.join("keep"))
        .and_then(|mut f| f.write_all(b"k"))
        .expect("keep");
    let out = common::output(
        common::cairn_as(&Who::Me)
            .arg("unsquash")
            .arg(&image)
            .arg(&dst),
    );
    assert_eq!(out.status.code(), Some(125), "{}", common::stderr_of(&out));
    assert!(common::stderr_of(&out).contains("not empty"));
    assert_eq!(fs::read(dst.join("keep")).expect("kept"), b"k");
    // An empty existing directory is fine.
    let empty = work.join("empty");
    fs::create_dir(&empty).expect("empty");
    let out = common::output(
        common::cairn_as(&Who::Me)
            .arg("unsquash")
            .arg(&image)
            .arg(&empty),
    );
    common::assert_success(&out, "unsquash into an empty dir");
    assert_eq!(fs::read(empty.join("f")).expect("f"), b"x");
    let _ = fs::remove_dir_all(&work);
}
