//! A whole-tree walk over an [`Archive`], protected against hostile
//! images: a directory reached twice (an entry pointing at itself or an
//! ancestor, or two inodes sharing one listing) is an error, and depth and
//! entry counts are capped. Iterative, so a deep tree cannot overflow the
//! stack.

use std::collections::HashSet;

use super::{Archive, DirEntry, InodeRef, Node, ReadError, dir_inode, inode_name};
use crate::squashfs::format::DIR_SIZE_BIAS;

/// Caps for a walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalkLimits {
    /// Deepest directory nesting (the root is depth 0).
    pub max_depth: usize,
    /// Most directory entries visited in total.
    pub max_entries: u64,
}

impl Default for WalkLimits {
    /// PATH_MAX allows at most 2048 nested one-byte names; a billion
    /// entries is far beyond any real image.
    fn default() -> Self {
        Self {
            max_depth: 2048,
            max_entries: 1 << 30,
        }
    }
}

/// What a walk reports, in depth-first order. `path` is relative to the
/// root (empty for the root itself), components separated by `/`.
#[derive(Debug)]
pub enum WalkEvent<'a> {
    /// A directory, before its entries.
    EnterDir { path: &'a [u8], node: &'a Node },
    /// A directory, after all its entries.
    LeaveDir { path: &'a [u8], node: &'a Node },
    /// Anything but a directory.
    Leaf {
        path: &'a [u8],
        node: &'a Node,
        entry: &'a DirEntry,
    },
}

struct Frame {
    node: Node,
    path: Vec<u8>,
    entries: std::vec::IntoIter<DirEntry>,
}

impl Archive {
    /// Visit every node of the tree. `visit` may fail with its own error
    /// type, which stops the walk.
    pub fn walk<E: From<ReadError>>(
        &self,
        limits: WalkLimits,
        mut visit: impl FnMut(WalkEvent<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let root = self.root()?;
        let mut dirs: HashSet<InodeRef> = HashSet::new();
        let mut listings: HashSet<(u32, u16)> = HashSet::new();
        note_dir(&root, b"", &mut dirs, &mut listings)?;
        visit(WalkEvent::EnterDir {
            path: b"",
            node: &root,
        })?;
        let entries = self.read_dir(&root)?.into_iter();
        let mut stack = vec![Frame {
            node: root,
            path: Vec::new(),
            entries,
        }];
        let mut total = 0u64;
        while let Some(frame) = stack.last_mut() {
            let Some(entry) = frame.entries.next() else {
                if let Some(done) = stack.pop() {
                    visit(WalkEvent::LeaveDir {
                        path: &done.path,
                        node: &done.node,
                    })?;
                }
                continue;
            };
            total += 1;
            if total > limits.max_entries {
                return Err(ReadError::Limit {
                    what: "number of directory entries walked",
                    limit: limits.max_entries,
                }
                .into());
            }
            let mut path = frame.path.clone();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(&entry.name);
            let node = self.node(entry.inode_ref)?;
            if node.inode.body.basic_type() != entry.inode_type {
                return Err(ReadError::Directory {
                    inode: inode_name(frame.node.inode_ref),
                    reason: format!(
                        "entry {:?} says type {} but its inode {} has type {}",
                        String::from_utf8_lossy(&entry.name),
                        entry.inode_type,
                        inode_name(entry.inode_ref),
                        node.inode.body.basic_type()
                    ),
                }
                .into());
            }
            if node.is_dir() {
                if stack.len() >= limits.max_depth {
                    return Err(ReadError::Limit {
                        what: "directory depth",
                        limit: limits.max_depth as u64,
                    }
                    .into());
                }
                note_dir(&node, &path, &mut dirs, &mut listings)?;
                visit(WalkEvent::EnterDir {
                    path: &path,
                    node: &node,
                })?;
                let entries = self.read_dir(&node)?.into_iter();
                stack.push(Frame {
                    node,
                    path,
                    entries,
                });
            } else {
                visit(WalkEvent::Leaf {
                    path: &path,
                    node: &node,
                    entry: &entry,
                })?;
            }
        }
        Ok(())
    }
}

/// Remember a directory; fail if it, or its (non-empty) listing, was seen.
fn note_dir(
    node: &Node,
    path: &[u8],
    dirs: &mut HashSet<InodeRef>,
    listings: &mut HashSet<(u32, u16)>,
) -> Result<(), ReadError> {
    let d = dir_inode(node)?;
    let fresh_listing =
        d.file_size <= DIR_SIZE_BIAS || listings.insert((d.block_start, d.block_offset));
    if !dirs.insert(node.inode_ref) || !fresh_listing {
        return Err(ReadError::DirectoryLoop {
            path: String::from_utf8_lossy(path).into_owned(),
            inode: inode_name(node.inode_ref),
        });
    }
    Ok(())
}
