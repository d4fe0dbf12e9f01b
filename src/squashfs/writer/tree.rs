//! The in-memory tree: entries as they arrive through `add_*` (paths
//! checked, missing parents created implicitly, hard links counted,
//! removals), and the inode numbering `finish` gives it.

use super::data::FileData;
use super::{EntryMeta, SpecialKind, WriteError, Writer, show};
use crate::squashfs::format;

/// Longest name a Linux filesystem hands out (NAME_MAX).
const NAME_MAX: usize = 255;

#[derive(Debug)]
pub(super) enum Kind {
    Dir {
        children: Vec<(Vec<u8>, usize)>,
        /// Created implicitly as a parent; `add_dir` may still set it once.
        implicit: bool,
    },
    File(FileData),
    Symlink(Vec<u8>),
    Special(SpecialKind),
}

#[derive(Debug)]
pub(super) struct Node {
    pub(super) meta: EntryMeta,
    pub(super) kind: Kind,
    /// Directory entries naming this inode (hard links).
    pub(super) links: u32,
}

/// Check an entry path and split it into (parent, name).
fn split_path(path: &[u8]) -> Result<(&[u8], &[u8]), WriteError> {
    let bad = |reason| WriteError::BadPath {
        path: show(path),
        reason,
    };
    if path.first() == Some(&b'/') {
        return Err(bad("leading '/'"));
    }
    for comp in path.split(|&b| b == b'/') {
        if comp.is_empty() {
            return Err(bad("empty component"));
        }
        if comp == b"." || comp == b".." {
            return Err(bad("'.' or '..' component"));
        }
        if comp.len() > NAME_MAX {
            return Err(bad("name longer than 255 bytes"));
        }
        if comp.contains(&0) {
            return Err(bad("NUL byte"));
        }
    }
    Ok(match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&b""[..], path),
    })
}

impl Writer {
    pub(super) fn implicit_meta() -> EntryMeta {
        EntryMeta {
            mode: 0o755,
            ..EntryMeta::default()
        }
    }

    fn check_meta(path: &[u8], meta: &EntryMeta) -> Result<(), WriteError> {
        for (name, value) in &meta.xattrs {
            let Some((_, rest)) = format::split_xattr_name(name).filter(|(_, r)| !r.is_empty())
            else {
                return Err(WriteError::UnsupportedXattr {
                    path: show(path),
                    name: show(name),
                });
            };
            // The key/value area stores a u16 name length and a u32 value
            // length; a tar's PAX xattr can be longer than either.
            let too_large = |what, value: usize| WriteError::TooLarge {
                path: show(path),
                what,
                value: value as u64,
            };
            if u16::try_from(rest.len()).is_err() {
                return Err(too_large("xattr name length", rest.len()));
            }
            if u32::try_from(value.len()).is_err() {
                return Err(too_large("xattr value length", value.len()));
            }
        }
        Ok(())
    }

    /// The directory node for `path`, creating missing ones implicitly.
    fn ensure_dir(&mut self, path: &[u8]) -> Result<usize, WriteError> {
        if let Some(&idx) = self.paths.get(path) {
            return match self.nodes[idx].kind {
                Kind::Dir { .. } => Ok(idx),
                _ => Err(WriteError::NotADirectory {
                    path: show(path),
                    parent: show(path),
                }),
            };
        }
        let (parent, name) = split_path(path)?;
        let parent_idx = self.ensure_dir(parent)?;
        let idx = self.nodes.len();
        self.nodes.push(Node {
            meta: Self::implicit_meta(),
            kind: Kind::Dir {
                children: Vec::new(),
                implicit: true,
            },
            links: 1,
        });
        self.link_child(parent_idx, name, idx);
        self.paths.insert(path.to_vec(), idx);
        Ok(idx)
    }

    fn link_child(&mut self, parent: usize, name: &[u8], child: usize) {
        if let Kind::Dir { children, .. } = &mut self.nodes[parent].kind {
            children.push((name.to_vec(), child));
        }
    }

    /// Check `path` is new and its parent a directory; returns the parent.
    pub(super) fn prepare(&mut self, path: &[u8], meta: &EntryMeta) -> Result<usize, WriteError> {
        let (parent, _) = split_path(path)?;
        if path.is_empty() || self.paths.contains_key(path) {
            return Err(WriteError::Duplicate { path: show(path) });
        }
        Self::check_meta(path, meta)?;
        self.ensure_dir(parent).map_err(|e| match e {
            WriteError::NotADirectory { parent, .. } => WriteError::NotADirectory {
                path: show(path),
                parent,
            },
            e => e,
        })
    }

    pub(super) fn insert(
        &mut self,
        path: &[u8],
        meta: EntryMeta,
        kind: Kind,
    ) -> Result<usize, WriteError> {
        let parent = self.prepare(path, &meta)?;
        self.newest_mtime = self.newest_mtime.max(meta.mtime);
        let idx = self.nodes.len();
        self.nodes.push(Node {
            meta,
            kind,
            links: 1,
        });
        let (_, name) = split_path(path)?;
        self.link_child(parent, name, idx);
        self.paths.insert(path.to_vec(), idx);
        Ok(idx)
    }

    /// Paths are bytes relative to the image root: components separated by
    /// '/', no leading '/', no empty, "." or ".." components; b"" is the root.
    pub fn add_dir(&mut self, path: &[u8], meta: EntryMeta) -> Result<(), WriteError> {
        if let Some(&idx) = self.paths.get(path) {
            // An implicit directory gets its real metadata once.
            Self::check_meta(path, &meta)?;
            let node = &mut self.nodes[idx];
            if let Kind::Dir { implicit, .. } = &mut node.kind
                && *implicit
            {
                *implicit = false;
                self.newest_mtime = self.newest_mtime.max(meta.mtime);
                node.meta = meta;
                return Ok(());
            }
            return Err(WriteError::Duplicate { path: show(path) });
        }
        self.insert(
            path,
            meta,
            Kind::Dir {
                children: Vec::new(),
                implicit: false,
            },
        )?;
        Ok(())
    }

    pub fn add_symlink(
        &mut self,
        path: &[u8],
        meta: EntryMeta,
        target: &[u8],
    ) -> Result<(), WriteError> {
        if target.is_empty() || target.len() > 4095 {
            return Err(WriteError::TooLarge {
                path: show(path),
                what: "symlink target length",
                value: target.len() as u64,
            });
        }
        self.insert(path, meta, Kind::Symlink(target.to_vec()))?;
        Ok(())
    }

    pub fn add_special(
        &mut self,
        path: &[u8],
        meta: EntryMeta,
        kind: SpecialKind,
    ) -> Result<(), WriteError> {
        self.insert(path, meta, Kind::Special(kind))?;
        Ok(())
    }

    /// Another name for an entry already added (not a directory): the same
    /// inode, its link count raised.
    pub fn add_hardlink(&mut self, path: &[u8], target: &[u8]) -> Result<(), WriteError> {
        let Some(&idx) = self.paths.get(target) else {
            return Err(WriteError::HardlinkTargetMissing {
                path: show(path),
                target: show(target),
            });
        };
        if matches!(self.nodes[idx].kind, Kind::Dir { .. }) {
            return Err(WriteError::HardlinkToDirectory {
                path: show(path),
                target: show(target),
            });
        }
        let parent = self.prepare(path, &EntryMeta::default())?;
        let (_, name) = split_path(path)?;
        self.link_child(parent, name, idx);
        self.paths.insert(path.to_vec(), idx);
        self.nodes[idx].links += 1;
        Ok(())
    }

    /// Gives a directory already added new metadata: a layer that names a
    /// directory twice means its last entry.
    pub fn update_dir(&mut self, path: &[u8], meta: EntryMeta) -> Result<(), WriteError> {
        Self::check_meta(path, &meta)?;
        let node = self
            .paths
            .get(path)
            .map(|&idx| &mut self.nodes[idx])
            .filter(|n| matches!(n.kind, Kind::Dir { .. }))
            .ok_or_else(|| WriteError::NoSuchDirectory { path: show(path) })?;
        if let Kind::Dir { implicit, .. } = &mut node.kind {
            *implicit = false;
        }
        self.newest_mtime = self.newest_mtime.max(meta.mtime);
        node.meta = meta;
        Ok(())
    }

    /// Takes `path` out of the tree (a directory with everything below
    /// it), if it is there: a layer that names a path twice replaces what
    /// its first entry added. An inode with other names keeps them; the
    /// data of a file left without names stays in the image, unreferenced
    /// (it is already written, and later duplicates may still share it).
    pub fn remove(&mut self, path: &[u8]) -> Result<(), WriteError> {
        if path.is_empty() {
            return Err(WriteError::BadPath {
                path: show(path),
                reason: "the root cannot be removed",
            });
        }
        let Some(&idx) = self.paths.get(path) else {
            return Ok(());
        };
        let (parent, name) = split_path(path)?;
        if let Some(&parent_idx) = self.paths.get(parent)
            && let Kind::Dir { children, .. } = &mut self.nodes[parent_idx].kind
        {
            children.retain(|(n, c)| !(n == name && *c == idx));
        }
        // An explicit stack: trees can be deep.
        let mut stack = vec![(path.to_vec(), idx)];
        while let Some((p, i)) = stack.pop() {
            self.paths.remove(&p);
            let node = &mut self.nodes[i];
            node.links = node.links.saturating_sub(1);
            if let Kind::Dir { children, .. } = &node.kind {
                for (n, c) in children {
                    let mut child = p.clone();
                    child.push(b'/');
                    child.extend_from_slice(n);
                    stack.push((child, *c));
                }
            }
        }
        Ok(())
    }

    /// Sorts each directory's children by name (the order of its listing
    /// and of the numbering) and dates the implicit directories
    /// `mkfs_time`.
    pub(super) fn sort_and_date_dirs(&mut self, mkfs_time: u32) {
        for node in &mut self.nodes {
            if let Kind::Dir { children, implicit } = &mut node.kind {
                children.sort_by(|a, b| a.0.cmp(&b.0));
                if *implicit {
                    node.meta.mtime = mkfs_time;
                }
            }
        }
    }

    /// Inode numbers are 1..=inode_count in u32, and the root's parent
    /// is inode_count + 1 (as mksquashfs numbers it): that must fit too.
    /// Only inodes still in the tree count: removed ones keep their
    /// place in `nodes` but get no number, so the count is at most this.
    pub(super) fn check_inode_count(&self) -> Result<(), WriteError> {
        if u32::try_from(self.nodes.len()).map_or(true, |n| n == u32::MAX) {
            return Err(WriteError::TooMany {
                what: "inodes",
                count: self.nodes.len() as u64,
                max: u64::from(u32::MAX) - 1,
            });
        }
        Ok(())
    }
}

/// Inode numbers 1..=n in post-order (children sorted; a directory after
/// everything below it, so the root is last); a hard-linked inode gets its
/// number where it is first met. Directories must have sorted children.
/// Numbers the inodes reachable from the root (1, 2, ...); returns the
/// numbers (0 for removed nodes) and how many were numbered.
pub(super) fn number_inodes(nodes: &[Node]) -> (Vec<u32>, u32) {
    let mut numbers = vec![0u32; nodes.len()];
    let mut next = 1u32;
    // An explicit stack instead of recursion: trees can be deep.
    let mut stack: Vec<(usize, bool)> = vec![(0, false)];
    while let Some((dir, expanded)) = stack.pop() {
        let Kind::Dir { children, .. } = &nodes[dir].kind else {
            continue;
        };
        if expanded {
            for (_, c) in children {
                if !matches!(nodes[*c].kind, Kind::Dir { .. }) && numbers[*c] == 0 {
                    numbers[*c] = next;
                    next += 1;
                }
            }
            numbers[dir] = next;
            next += 1;
        } else {
            stack.push((dir, true));
            for (_, c) in children.iter().rev() {
                if matches!(nodes[*c].kind, Kind::Dir { .. }) {
                    stack.push((*c, false));
                }
            }
        }
    }
    (numbers, next - 1)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{meta, scratch_out};
    use super::*;
    use crate::squashfs::writer::WriterOptions;

    #[test]
    fn paths_are_checked() {
        assert_eq!(split_path(b"a/b/c").expect("ok"), (&b"a/b"[..], &b"c"[..]));
        assert_eq!(split_path(b"a").expect("ok"), (&b""[..], &b"a"[..]));
        for bad in [&b"/a"[..], b"a//b", b"a/./b", b"../a", b"a/"] {
            assert!(split_path(bad).is_err(), "{bad:?}");
        }
        assert!(split_path(&[b'x'; 256]).is_err());
        assert!(split_path(&[b'x'; 255]).is_ok());
    }

    #[test]
    fn duplicates_and_bad_parents_are_errors() {
        let (_dir, out) = scratch_out("dup.sqfs");
        let mut w = Writer::create(&out, WriterOptions::default()).expect("create");
        w.add_file(b"a/f", meta(1), &mut &b"x"[..]).expect("file");
        assert!(matches!(
            w.add_file(b"a/f", meta(1), &mut &b"y"[..]),
            Err(WriteError::Duplicate { .. })
        ));
        assert!(matches!(
            w.add_dir(b"a/f/g", meta(1)),
            Err(WriteError::NotADirectory { .. })
        ));
        // The implicit "a" takes its real metadata once, then is a duplicate.
        w.add_dir(b"a", meta(2))
            .expect("implicit dir made explicit");
        assert!(matches!(
            w.add_dir(b"a", meta(2)),
            Err(WriteError::Duplicate { .. })
        ));
        assert!(matches!(
            w.add_hardlink(b"h", b"a"),
            Err(WriteError::HardlinkToDirectory { .. })
        ));
        assert!(matches!(
            w.add_hardlink(b"h", b"nope"),
            Err(WriteError::HardlinkTargetMissing { .. })
        ));
        let temp = w.temp.clone();
        assert!(temp.exists());
        drop(w);
        assert!(!temp.exists(), "dropping removes the temporary file");
        assert!(!out.exists());
    }

    #[test]
    fn numbering_is_post_order_with_root_last() {
        let (_dir, out) = scratch_out("num.sqfs");
        let mut w = Writer::create(&out, WriterOptions::default()).expect("create");
        w.add_file(b"b/x", meta(1), &mut &b"1"[..]).expect("x");
        w.add_file(b"a", meta(1), &mut &b"2"[..]).expect("a");
        w.add_hardlink(b"b/y", b"a").expect("link");
        for n in &mut w.nodes {
            if let Kind::Dir { children, .. } = &mut n.kind {
                children.sort_by(|a, b| a.0.cmp(&b.0));
            }
        }
        let (numbers, count) = number_inodes(&w.nodes);
        // nodes: 0 root, 1 b, 2 b/x, 3 a. b's subtree first: x, a (via
        // the hard link b/y), b; then the root.
        assert_eq!(numbers, vec![4, 3, 1, 2]);
        assert_eq!(count, 4);
    }

    #[test]
    fn removed_paths_leave_the_tree_and_its_numbering() {
        let (_dir, out) = scratch_out("remove.sqfs");
        let mut w = Writer::create(&out, WriterOptions::default()).expect("create");
        w.add_file(b"d/x", meta(1), &mut &b"x"[..]).expect("x");
        w.add_file(b"d/y", meta(1), &mut &b"y"[..]).expect("y");
        w.add_file(b"f", meta(1), &mut &b"old"[..]).expect("f");
        w.add_hardlink(b"d/link", b"f").expect("link");
        w.add_hardlink(b"keep", b"d/y").expect("keep");
        // A file replaced: its other name keeps the old inode.
        w.remove(b"f").expect("remove f");
        w.add_file(b"f", meta(2), &mut &b"new"[..]).expect("new f");
        // A directory replaced by a file: its subtree goes, except inodes
        // named elsewhere.
        w.remove(b"d").expect("remove d");
        w.add_file(b"d", meta(3), &mut &b"d"[..]).expect("d file");
        w.remove(b"nothing/there").expect("absent path");
        assert!(w.remove(b"").is_err());
        w.add_dir(b"e", meta(4)).expect("e");
        w.update_dir(b"e", meta(5)).expect("update e");
        assert!(matches!(
            w.update_dir(b"f", meta(5)),
            Err(WriteError::NoSuchDirectory { .. })
        ));
        let summary = w.finish().expect("finish");
        // root, f, d, keep (= old d/y), e.
        assert_eq!(summary.inodes, 5);
        assert_eq!(summary.files, 3);
        let a = crate::squashfs::reader::Archive::open(&out).expect("open");
        let read = |p: &[u8]| {
            let node = a.lookup_path(p).expect("lookup").expect("exists");
            let mut buf = vec![0u8; 16];
            let n = a.read_at(&node, 0, &mut buf).expect("read");
            buf.truncate(n);
            (buf, a.stat(&node))
        };
        assert_eq!(read(b"f").0, b"new");
        assert_eq!(read(b"d").0, b"d");
        let (keep, stat) = read(b"keep");
        assert_eq!((keep.as_slice(), stat.nlink), (&b"y"[..], 1));
        assert!(a.lookup_path(b"d/x").expect("lookup").is_none());
        let root = a.root().expect("root");
        let names: Vec<Vec<u8>> = a
            .read_dir(&root)
            .expect("list")
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(
            names,
            vec![
                b"d".to_vec(),
                b"e".to_vec(),
                b"f".to_vec(),
                b"keep".to_vec()
            ]
        );
        let e = a.lookup_path(b"e").expect("lookup").expect("e");
        assert_eq!(a.stat(&e).mtime, 5);
    }
}
