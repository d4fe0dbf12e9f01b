//! A build stage's tree before and after an instruction, and what changed
//! between the two as one OCI layer (a tar with whiteouts).
//!
//! The stage is a directory the build owns, written by a RUN through the
//! run path or by COPY directly. A change is found by the inode's ctime,
//! which no unprivileged process can set back (a RUN that restores an
//! mtime still moves the ctime), and by its inode number and birth time (a
//! file replaced by rename, as dpkg installs them; a directory removed and
//! made again, which the file system may give the freed inode number). So
//! a walk of the tree after the instruction, compared with the walk before
//! it, finds every change without reading any data; only what changed is
//! read, into the layer.
//!
//! Owners: every file on disk belongs to the building user, so the owner
//! each path has in the image is kept beside the tree ([`Owners`]): what
//! the base had, what an instruction created (the RUN's user, root by
//! default; COPY's `--chown`, else root), and for a path an instruction
//! changed in place, the owner it had.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::image::digest::{Digest, HashingWriter};
use crate::image::entry::split_parent;
use crate::image::hostdir::read_xattrs_of_path;
use crate::image::tarwrite::{EntryHeader, TarWriter};

/// What a path inside the stage is owned by in the image: (uid, gid).
pub type Owners = HashMap<Vec<u8>, (u32, u32)>;

/// The top-level directory cairn keeps its metadata in: never part of a
/// layer (the final import writes its own).
const CAIRN_DIR: &[u8] = b".cairn";

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("reading {path} in the build stage")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("writing the layer")]
    Write(#[from] io::Error),
    #[error(
        "/{path} is named like a whiteout (.wh.*): a layer cannot carry it as a file; rename it"
    )]
    WhiteoutName { path: String },
    #[error("/{path} changed while its layer was written ({expected} bytes, then {actual})")]
    Changed {
        path: String,
        expected: u64,
        actual: u64,
    },
}

/// What identifies one state of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The file type bits of `st_mode`.
    pub kind: u32,
    pub ino: u64,
    pub ctime: (i64, i64),
    /// The inode's birth time where the file system keeps one (statx):
    /// with the inode number, what tells a path made anew from the one
    /// before it, since ext4 and tmpfs hand a freed number out again.
    pub born: Option<std::time::SystemTime>,
}

impl Stamp {
    fn of(meta: &fs::Metadata) -> Stamp {
        Stamp {
            kind: meta.mode() & 0o170_000,
            ino: meta.ino(),
            ctime: (meta.ctime(), meta.ctime_nsec()),
            born: meta.created().ok(),
        }
    }

    /// Another inode than `before`'s, not the same one changed.
    fn is_new_inode(&self, before: &Stamp) -> bool {
        self.ino != before.ino || self.born != before.born
    }

    fn is_dir(&self) -> bool {
        self.kind == 0o040_000
    }
}

/// Every path of a stage tree ('/'-separated, relative, `b""` for the root)
/// with its stamp; `/.cairn` left out.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub entries: BTreeMap<Vec<u8>, Stamp>,
}

fn host(root: &Path, rel: &[u8]) -> PathBuf {
    if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(OsStr::from_bytes(rel))
    }
}

fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    crate::image::entry::join(parent, name)
}

/// Runs `read` on `path` (or on an entry of it, a directory); when it is
/// refused for want of permission (a RUN as root inside may leave a
/// directory 0500 or a file 0000, which the user outside cannot read; an
/// image's 0555 directory refuses a COPY into it), gives the owner, which
/// the user is, full access for the time of it, then puts the mode back.
pub(super) fn with_access<T>(path: &Path, read: impl Fn() -> io::Result<T>) -> io::Result<T> {
    match read() {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            let mode = fs::symlink_metadata(path)?.permissions().mode() & 0o7777;
            fs::set_permissions(path, fs::Permissions::from_mode(mode | 0o700))?;
            let result = read();
            fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
            result
        }
        other => other,
    }
}

/// Directories of the stage given their owner read and search access for
/// the time of a walk or a layer: a RUN as root, or `COPY --chmod=0640`,
/// may leave a directory its owner, the building user, cannot enter, and
/// every path below it then refuses a stat. Their modes are put back when
/// this is dropped, deepest first (a parent put back first would bar the
/// way to its children). Only a refusal opens anything: as root, nothing.
#[derive(Default)]
struct Unlocked {
    dirs: Vec<(PathBuf, u32)>,
}

impl Unlocked {
    /// Opens `root` and every directory down to `rel` (inclusive when
    /// `inclusive`, else down to its parent).
    fn down_to(&mut self, root: &Path, rel: &[u8], inclusive: bool) -> io::Result<()> {
        let upto = if inclusive {
            rel
        } else {
            split_parent(rel).map_or(&b""[..], |(parent, _)| parent)
        };
        let mut dir = root.to_path_buf();
        self.open(&dir)?;
        for part in upto.split(|&b| b == b'/').filter(|p| !p.is_empty()) {
            dir.push(OsStr::from_bytes(part));
            self.open(&dir)?;
        }
        Ok(())
    }

    fn open(&mut self, dir: &Path) -> io::Result<()> {
        let meta = fs::symlink_metadata(dir)?;
        let mode = meta.permissions().mode() & 0o7777;
        if meta.is_dir() && mode & 0o500 != 0o500 {
            fs::set_permissions(dir, fs::Permissions::from_mode(mode | 0o700))?;
            self.dirs.push((dir.to_path_buf(), mode));
        }
        Ok(())
    }
}

impl Drop for Unlocked {
    fn drop(&mut self) {
        for (dir, mode) in self.dirs.drain(..).rev() {
            if let Err(e) = fs::set_permissions(&dir, fs::Permissions::from_mode(mode)) {
                tracing::warn!("cannot put back the mode of {}: {e}", dir.display());
            }
        }
    }
}

/// Runs `op`; when refused for want of permission, opens the directories
/// from `root` down to `rel` (see [`Unlocked`]) and runs it again.
fn unlocking<T>(
    unlocked: &mut Unlocked,
    root: &Path,
    rel: &[u8],
    inclusive: bool,
    op: impl Fn() -> io::Result<T>,
) -> io::Result<T> {
    match op() {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            unlocked.down_to(root, rel, inclusive)?;
            op()
        }
        other => other,
    }
}

/// Walks the stage tree at `root`.
pub fn take(root: &Path) -> Result<Snapshot, SnapshotError> {
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SnapshotError::Read { path, source }
    };
    let mut entries = BTreeMap::new();
    let meta = fs::symlink_metadata(root).map_err(err(root))?;
    entries.insert(Vec::new(), Stamp::of(&meta));
    let mut unlocked = Unlocked::default();
    let mut stack = vec![Vec::new()];
    while let Some(rel) = stack.pop() {
        let dir = host(root, &rel);
        let children = unlocking(&mut unlocked, root, &rel, true, || {
            let mut children = Vec::new();
            for entry in fs::read_dir(&dir)? {
                let name = entry?.file_name();
                if rel.is_empty() && name.as_bytes() == CAIRN_DIR {
                    continue;
                }
                let meta = fs::symlink_metadata(dir.join(&name))?;
                children.push((name, meta));
            }
            Ok(children)
        })
        .map_err(err(&dir))?;
        for (name, meta) in children {
            let child = join(&rel, name.as_bytes());
            if meta.is_dir() {
                stack.push(child.clone());
            }
            entries.insert(child, Stamp::of(&meta));
        }
    }
    Ok(Snapshot { entries })
}

/// One change between two snapshots, in the order a layer carries them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The path is gone (or replaced by another type): `.wh.NAME`.
    Whiteout(Vec<u8>),
    /// The entry as it is now, owned by (uid, gid) in the image.
    Entry { path: Vec<u8>, owner: (u32, u32) },
    /// The directory was replaced: nothing below it in lower layers stays
    /// (`DIR/.wh..wh..opq`, after the directory's own entry).
    Opaque(Vec<u8>),
}

/// The changes from `before` to `after`. A path the instruction created
/// (new, or a new inode) gets `explicit`'s owner if it names one, else
/// `created_by`; a path changed in place keeps its owner in `owners`
/// (unless `explicit` names one). `owners` is updated to the new tree.
pub fn diff(
    before: &Snapshot,
    after: &Snapshot,
    owners: &mut Owners,
    created_by: (u32, u32),
    explicit: &Owners,
) -> Vec<Change> {
    let mut changes = Vec::new();
    // Paths of `before` whose subtree no longer exists as it was (deleted,
    // replaced by another type, or a directory replaced by a new one):
    // what was below them needs no whiteout of its own.
    let mut covered: HashSet<Vec<u8>> = HashSet::new();
    // Directories replaced by new ones: everything below them is new.
    let mut replaced: HashSet<Vec<u8>> = HashSet::new();
    let parent_in = |set: &HashSet<Vec<u8>>, path: &[u8]| {
        split_parent(path).is_some_and(|(parent, _)| set.contains(parent))
    };
    let mut paths: Vec<&Vec<u8>> = before.entries.keys().chain(after.entries.keys()).collect();
    paths.sort();
    paths.dedup();
    for path in paths {
        let new_owner = explicit.get(path).copied().unwrap_or(created_by);
        match (before.entries.get(path), after.entries.get(path)) {
            (None, None) => {}
            (Some(_), None) => {
                covered.insert(path.clone());
                owners.remove(path);
                if !parent_in(&covered, path) {
                    changes.push(Change::Whiteout(path.clone()));
                }
            }
            (None, Some(a)) => {
                owners.insert(path.clone(), new_owner);
                if a.is_dir() && parent_in(&replaced, path) {
                    replaced.insert(path.clone());
                }
                changes.push(Change::Entry {
                    path: path.clone(),
                    owner: new_owner,
                });
            }
            (Some(b), Some(a)) => {
                let under_replaced = parent_in(&replaced, path);
                if b.kind != a.kind {
                    covered.insert(path.clone());
                    if !under_replaced && !path.is_empty() {
                        changes.push(Change::Whiteout(path.clone()));
                    }
                    owners.insert(path.clone(), new_owner);
                    changes.push(Change::Entry {
                        path: path.clone(),
                        owner: new_owner,
                    });
                    if a.is_dir() {
                        replaced.insert(path.clone());
                    }
                } else if a.is_new_inode(b) || under_replaced {
                    // A file replaced by a rename (dpkg installing it,
                    // useradd rewriting /etc/shadow) keeps the owner the
                    // path had: the chown that would have set it again
                    // was swallowed. A directory made anew is the maker's.
                    let kept = (!a.is_dir() && !under_replaced)
                        .then(|| owners.get(path).copied())
                        .flatten();
                    let owner = explicit.get(path).copied().or(kept).unwrap_or(new_owner);
                    owners.insert(path.clone(), owner);
                    changes.push(Change::Entry {
                        path: path.clone(),
                        owner,
                    });
                    if a.is_dir() {
                        covered.insert(path.clone());
                        replaced.insert(path.clone());
                        if !under_replaced {
                            changes.push(Change::Opaque(path.clone()));
                        }
                    }
                } else if b.ctime != a.ctime || explicit.contains_key(path) {
                    let owner = explicit
                        .get(path)
                        .or_else(|| owners.get(path))
                        .copied()
                        .unwrap_or(created_by);
                    owners.insert(path.clone(), owner);
                    changes.push(Change::Entry {
                        path: path.clone(),
                        owner,
                    });
                }
            }
        }
    }
    changes
}

/// What [`write_layer`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenLayer {
    /// sha256 of the tar (its `diff_id`; the blob is stored uncompressed,
    /// so also its digest).
    pub diff_id: Digest,
    pub size: u64,
    pub entries: u64,
}

/// Writes `changes` of the tree at `root` as an uncompressed tar to `out`.
pub fn write_layer<W: Write>(
    root: &Path,
    changes: &[Change],
    out: W,
) -> Result<WrittenLayer, SnapshotError> {
    let mut tar = TarWriter {
        out: HashingWriter::new(out),
        entries: 0,
    };
    // (dev, ino) of multiply-linked files written, and the first name.
    let mut links: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
    let mut unlocked = Unlocked::default();
    for change in changes {
        match change {
            Change::Whiteout(path) => {
                let (parent, name) = split_parent(path).unwrap_or((b"", path));
                let wh = join(parent, &[&b".wh."[..], name].concat());
                tar.entry::<SnapshotError>(&marker(wh), |_| Ok(()))?;
            }
            Change::Opaque(path) => {
                let wh = join(path, b".wh..wh..opq");
                tar.entry::<SnapshotError>(&marker(wh), |_| Ok(()))?;
            }
            Change::Entry { path, owner } => {
                write_entry(&mut tar, root, path, *owner, &mut links, &mut unlocked)?;
            }
        }
    }
    tar.finish()?;
    let TarWriter { out, entries } = tar;
    let (mut out, diff_id, size) = out.into_parts();
    out.flush()?;
    Ok(WrittenLayer {
        diff_id,
        size,
        entries,
    })
}

/// A whiteout entry: an empty regular file, as docker writes them.
fn marker(path: Vec<u8>) -> EntryHeader {
    EntryHeader {
        path,
        typeflag: b'0',
        mode: 0o644,
        ..EntryHeader::default()
    }
}

fn write_entry<W: Write>(
    tar: &mut TarWriter<W>,
    root: &Path,
    path: &[u8],
    owner: (u32, u32),
    links: &mut HashMap<(u64, u64), Vec<u8>>,
    unlocked: &mut Unlocked,
) -> Result<(), SnapshotError> {
    let shown = || String::from_utf8_lossy(path).into_owned();
    let name = split_parent(path).map_or(path, |(_, n)| n);
    if name.starts_with(b".wh.") {
        return Err(SnapshotError::WhiteoutName { path: shown() });
    }
    let file = host(root, path);
    let read_err = |source| SnapshotError::Read {
        path: file.clone(),
        source,
    };
    let meta =
        unlocking(unlocked, root, path, false, || fs::symlink_metadata(&file)).map_err(read_err)?;
    let ft = meta.file_type();
    let mut header = EntryHeader {
        path: path.to_vec(),
        typeflag: b'0',
        mode: meta.mode() & 0o7777,
        uid: owner.0,
        gid: owner.1,
        size: 0,
        mtime: u64::try_from(meta.mtime()).unwrap_or(0),
        linkname: Vec::new(),
        device: (0, 0),
        xattrs: read_xattrs_of_path(&file).unwrap_or_default(),
    };
    let id = (meta.dev(), meta.ino());
    if !ft.is_dir() && meta.nlink() > 1 {
        if let Some(first) = links.get(&id) {
            header.typeflag = b'1';
            header.linkname = first.clone();
            return tar.entry::<SnapshotError>(&header, |_| Ok(()));
        }
        links.insert(id, path.to_vec());
    }
    if ft.is_dir() {
        header.typeflag = b'5';
        header.path = if path.is_empty() {
            b"./".to_vec()
        } else {
            [path, &b"/"[..]].concat()
        };
        return tar.entry::<SnapshotError>(&header, |_| Ok(()));
    }
    if ft.is_symlink() {
        header.typeflag = b'2';
        header.linkname = fs::read_link(&file)
            .map_err(read_err)?
            .into_os_string()
            .into_vec();
        return tar.entry::<SnapshotError>(&header, |_| Ok(()));
    }
    if ft.is_fifo() {
        header.typeflag = b'6';
        return tar.entry::<SnapshotError>(&header, |_| Ok(()));
    }
    if ft.is_char_device() || ft.is_block_device() {
        header.typeflag = if ft.is_char_device() { b'3' } else { b'4' };
        let rdev = meta.rdev();
        header.device = (rustix::fs::major(rdev), rustix::fs::minor(rdev));
        return tar.entry::<SnapshotError>(&header, |_| Ok(()));
    }
    if ft.is_socket() {
        tracing::warn!("/{}: a socket, left out of the layer", shown());
        return Ok(());
    }
    header.size = meta.len();
    let mut data = with_access(&file, || {
        fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&file)
    })
    .map_err(read_err)?;
    let expected = header.size;
    tar.entry::<SnapshotError>(&header, |out| copy_exact(&mut data, out, expected, path))
}

/// Copies exactly `size` bytes: a file that changed size since its stat
/// would corrupt the tar stream.
fn copy_exact(
    data: &mut File,
    out: &mut dyn Write,
    size: u64,
    path: &[u8],
) -> Result<(), SnapshotError> {
    let copied = io::copy(&mut data.take(size), out)?;
    if copied != size {
        return Err(SnapshotError::Changed {
            path: String::from_utf8_lossy(path).into_owned(),
            expected: size,
            actual: copied,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn paths(changes: &[Change]) -> Vec<String> {
        changes
            .iter()
            .map(|c| match c {
                Change::Whiteout(p) => format!("-{}", String::from_utf8_lossy(p)),
                Change::Opaque(p) => format!("~{}", String::from_utf8_lossy(p)),
                Change::Entry { path, owner } => {
                    format!("+{}:{}", String::from_utf8_lossy(path), owner.0)
                }
            })
            .collect()
    }

    #[test]
    fn finds_additions_deletions_and_replacements() {
        let dir = tempfile::tempdir().expect("tmp");
        let r = dir.path();
        fs::create_dir_all(r.join("a/b")).expect("mkdir");
        fs::write(r.join("a/b/f"), "1").expect("f");
        fs::write(r.join("keep"), "k").expect("keep");
        fs::write(r.join("edit"), "e").expect("edit");
        fs::create_dir(r.join("d")).expect("d");
        fs::write(r.join("d/old"), "o").expect("old");
        fs::create_dir_all(r.join(".cairn")).expect("cairn");
        let before = take(r).expect("before");
        assert!(!before.entries.contains_key(&b".cairn"[..]));
        let mut owners: Owners = before.entries.keys().map(|p| (p.clone(), (7, 7))).collect();
        std::thread::sleep(std::time::Duration::from_millis(10));
        fs::remove_dir_all(r.join("a")).expect("rm a");
        fs::write(r.join("edit"), "changed").expect("edit");
        // The new d is made while the old one still holds its inode: a
        // directory made after the rm may get the freed number (ext4 does),
        // which the birth time tells apart (test below) where there is one.
        fs::create_dir(r.join("d+")).expect("d+");
        fs::write(r.join("d+/new"), "n").expect("new");
        fs::remove_dir_all(r.join("d")).expect("rm d");
        fs::rename(r.join("d+"), r.join("d")).expect("d again");
        symlink("keep", r.join("s")).expect("s");
        let after = take(r).expect("after");
        let changes = diff(&before, &after, &mut owners, (0, 0), &Owners::new());
        assert_eq!(
            paths(&changes),
            ["+:7", "-a", "+d:0", "~d", "+d/new:0", "+edit:7", "+s:0"],
            "{changes:?}"
        );
        assert_eq!(owners.get(&b"edit"[..]), Some(&(7, 7)));
        assert!(!owners.contains_key(&b"a/b/f"[..]));

        let mut tar = Vec::new();
        let written = write_layer(r, &changes, &mut tar).expect("layer");
        assert_eq!(written.entries, 7);
        let mut archive = tar::Archive::new(&tar[..]);
        let names: Vec<String> = archive
            .entries()
            .expect("entries")
            .map(|e| {
                let e = e.expect("entry");
                format!(
                    "{}:{}",
                    String::from_utf8_lossy(&e.path_bytes()),
                    e.header().uid().expect("uid")
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                "./:7",
                ".wh.a:0",
                "d/:0",
                "d/.wh..wh..opq:0",
                "d/new:0",
                "edit:7",
                "s:0"
            ]
        );
    }

    #[test]
    fn a_directory_made_again_on_its_freed_inode_is_replaced() {
        let at = |secs| Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs));
        let dir = |born: Option<std::time::SystemTime>| Stamp {
            kind: 0o040_000,
            ino: 12,
            ctime: (1, 0),
            born,
        };
        let file = Stamp {
            kind: 0o100_000,
            ino: 13,
            ctime: (1, 0),
            born: at(1),
        };
        let snapshot = |d: Stamp, child: &[u8]| Snapshot {
            entries: [(b"d".to_vec(), d), ([b"d/", child].concat(), file)]
                .into_iter()
                .collect(),
        };
        let before = snapshot(dir(at(1)), b"old");
        let mut owners: Owners = [(b"d".to_vec(), (7, 7))].into_iter().collect();
        let again = diff(
            &before,
            &snapshot(dir(at(2)), b"new"),
            &mut owners,
            (0, 0),
            &Owners::new(),
        );
        assert_eq!(paths(&again), ["+d:0", "~d", "+d/new:0"]);
        // The same inode, only changed: its entries one by one.
        let mut owners: Owners = [(b"d".to_vec(), (7, 7))].into_iter().collect();
        let mut changed = dir(at(1));
        changed.ctime = (3, 0);
        let edited = diff(
            &before,
            &snapshot(changed, b"new"),
            &mut owners,
            (0, 0),
            &Owners::new(),
        );
        assert_eq!(paths(&edited), ["+d:7", "+d/new:0", "-d/old"]);
    }

    #[test]
    fn a_file_replaced_by_rename_keeps_its_owner() {
        let dir = tempfile::tempdir().expect("tmp");
        let r = dir.path();
        fs::write(r.join("shadow"), "old").expect("shadow");
        let before = take(r).expect("before");
        let mut owners: Owners = [(b"shadow".to_vec(), (0, 42))].into_iter().collect();
        fs::write(r.join("shadow+"), "new").expect("new");
        fs::rename(r.join("shadow+"), r.join("shadow")).expect("rename");
        fs::write(r.join("fresh"), "f").expect("fresh");
        let after = take(r).expect("after");
        let changes = diff(&before, &after, &mut owners, (5, 5), &Owners::new());
        assert_eq!(paths(&changes), ["+:5", "+fresh:5", "+shadow:0"]);
        assert_eq!(owners.get(&b"shadow"[..]), Some(&(0, 42)));
    }

    #[test]
    fn a_type_change_is_a_whiteout_then_the_entry() {
        let dir = tempfile::tempdir().expect("tmp");
        let r = dir.path();
        fs::create_dir_all(r.join("x/y")).expect("mkdir");
        let before = take(r).expect("before");
        let mut owners = Owners::new();
        fs::remove_dir_all(r.join("x")).expect("rm");
        fs::write(r.join("x"), "file now").expect("x");
        let after = take(r).expect("after");
        let explicit: Owners = [(b"x".to_vec(), (5, 6))].into_iter().collect();
        let changes = diff(&before, &after, &mut owners, (0, 0), &explicit);
        assert_eq!(paths(&changes), ["+:0", "-x", "+x:5"]);
    }

    #[test]
    fn unsearchable_directories_are_walked_and_left_as_they_were() {
        // What `COPY --chmod=0640 dir /d/` leaves: directories their owner
        // can list but not enter, nested (the point only shows as a user
        // other than root; tests/build_buildah.rs builds it as one).
        let dir = tempfile::tempdir().expect("tmp");
        let r = dir.path();
        fs::create_dir_all(r.join("d/e/f")).expect("mkdir");
        fs::write(r.join("d/e/f/x"), "x").expect("x");
        for (p, mode) in [("d/e/f", 0o640), ("d/e", 0o640), ("d", 0o600)] {
            fs::set_permissions(r.join(p), fs::Permissions::from_mode(mode)).expect("chmod");
        }
        let snap = take(r).expect("snapshot");
        assert!(snap.entries.contains_key(&b"d/e/f/x"[..]));
        let changes = diff(
            &Snapshot::default(),
            &snap,
            &mut Owners::new(),
            (0, 0),
            &Owners::new(),
        );
        let mut tar = Vec::new();
        let written = write_layer(r, &changes, &mut tar).expect("layer");
        assert_eq!(written.entries, 5);
        let mode = |p: &str| {
            fs::symlink_metadata(r.join(p))
                .expect("stat")
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("d"), 0o600);
        fs::set_permissions(r.join("d"), fs::Permissions::from_mode(0o700)).expect("chmod");
        assert_eq!(mode("d/e"), 0o640);
        fs::set_permissions(r.join("d/e"), fs::Permissions::from_mode(0o700)).expect("chmod");
        assert_eq!(mode("d/e/f"), 0o640);
        fs::set_permissions(r.join("d/e/f"), fs::Permissions::from_mode(0o700)).expect("chmod");
    }

    #[test]
    fn unreadable_entries_are_read_and_left_as_they_were() {
        let dir = tempfile::tempdir().expect("tmp");
        let r = dir.path();
        fs::create_dir(r.join("locked")).expect("mkdir");
        fs::write(r.join("locked/f"), "secret").expect("f");
        fs::set_permissions(r.join("locked/f"), fs::Permissions::from_mode(0o0)).expect("chmod");
        fs::set_permissions(r.join("locked"), fs::Permissions::from_mode(0o500)).expect("chmod");
        let snap = take(r).expect("snapshot");
        assert!(snap.entries.contains_key(&b"locked/f"[..]));
        let changes = diff(
            &Snapshot::default(),
            &snap,
            &mut Owners::new(),
            (0, 0),
            &Owners::new(),
        );
        let mut tar = Vec::new();
        write_layer(r, &changes, &mut tar).expect("layer");
        assert_eq!(
            fs::symlink_metadata(r.join("locked/f"))
                .expect("stat")
                .permissions()
                .mode()
                & 0o777,
            0
        );
        fs::set_permissions(r.join("locked"), fs::Permissions::from_mode(0o700)).expect("chmod");
    }
}
