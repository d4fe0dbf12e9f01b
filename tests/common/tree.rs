//! Two directory trees compared entry by entry, as the import oracle
//! compares cairn's output with `umoci unpack`: type, mode, owner, size,
//! content hash, link target, device, hard-link groups and xattrs (with
//! getfattr), and mtimes when asked. cairn's own `/.cairn` is left out.

use super::run_ok;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

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
    /// The mtime, when the comparison looks at it (else 0).
    mtime: i64,
}

struct Tree {
    entries: BTreeMap<String, Info>,
    /// Hard-link groups (paths sharing an inode), each sorted.
    groups: BTreeSet<Vec<String>>,
    xattrs: BTreeMap<String, Vec<String>>,
}

fn walk(root: &Path, mtimes: bool) -> Tree {
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
            let kind = super::file_kind(&ft);
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
                    super::sha256_file(&path)
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
                mtime: if mtimes { md.mtime() } else { 0 },
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

/// `cairn` (a tree cairn made) holds what `oracle` holds, entry by entry
/// (type, mode, owner, size, content hash, link target, device, hard-link
/// groups, xattrs), cairn's own `/.cairn` aside.
#[track_caller]
pub fn assert_same_tree(cairn: &Path, oracle: &Path, what: &str) {
    compare_trees(cairn, oracle, what, false);
}

/// [`assert_same_tree`], mtimes too.
#[track_caller]
pub fn assert_same_tree_and_mtimes(cairn: &Path, oracle: &Path, what: &str) {
    compare_trees(cairn, oracle, what, true);
}

#[track_caller]
fn compare_trees(cairn: &Path, oracle: &Path, what: &str, mtimes: bool) {
    let c = walk(cairn, mtimes);
    let o = walk(oracle, mtimes);
    let mut problems = Vec::new();
    for (path, oinfo) in o.entries.iter().filter(|(p, _)| !ignored(p)) {
        match c.entries.get(path) {
            None => problems.push(format!("missing in cairn: {path}")),
            Some(cinfo) if cinfo != oinfo => problems.push(format!(
                "differs: {path}\n  cairn:  {cinfo:?}\n  oracle: {oinfo:?}"
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
            "hard-link groups differ:\n  cairn:  {:?}\n  oracle: {:?}",
            c.groups, o.groups
        ));
    }
    let cx: BTreeMap<_, _> = c.xattrs.iter().filter(|(p, _)| !ignored(p)).collect();
    let ox: BTreeMap<_, _> = o.xattrs.iter().filter(|(p, _)| !ignored(p)).collect();
    if cx != ox {
        problems.push(format!(
            "xattrs differ:\n  cairn:  {cx:?}\n  oracle: {ox:?}"
        ));
    }
    assert!(
        problems.is_empty(),
        "{what}: cairn's tree {} differs from {}:\n{}",
        cairn.display(),
        oracle.display(),
        problems.join("\n")
    );
}
