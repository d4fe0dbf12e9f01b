//! Where a flattened tree goes: the [`TreeSink`] trait the flattener writes
//! to (the squashfs writer in production, [`MemorySink`] in tests), and the
//! entry metadata it carries. It mirrors the squashfs writer's API so the
//! writer implements it with no translation beyond the types.

use std::collections::BTreeMap;
use std::io::{self, Read};

// The writer's own entry types: the sink is the writer's interface, so the
// flattener speaks it directly instead of a copy that needs converting.
pub use crate::squashfs::writer::{EntryMeta, SpecialKind};

/// A failure reported by a sink (the writer's own error, boxed).
pub type SinkError = Box<dyn std::error::Error + Send + Sync>;

/// Receives a tree entry by entry, in any order; parents not added yet are
/// implied. Adding a path twice is the sink's error.
pub trait TreeSink {
    fn dir(&mut self, path: &[u8], meta: EntryMeta) -> Result<(), SinkError>;
    /// Streams the file's data from `data`; returns the number of bytes read.
    fn file(&mut self, path: &[u8], meta: EntryMeta, data: &mut dyn Read)
    -> Result<u64, SinkError>;
    fn symlink(&mut self, path: &[u8], meta: EntryMeta, target: &[u8]) -> Result<(), SinkError>;
    fn special(&mut self, path: &[u8], meta: EntryMeta, kind: SpecialKind)
    -> Result<(), SinkError>;
    /// Another name for a non-directory entry already added.
    fn hardlink(&mut self, path: &[u8], target: &[u8]) -> Result<(), SinkError>;
    /// Gives a directory already added new metadata (a layer's later entry
    /// for the same directory wins).
    fn update_dir(&mut self, path: &[u8], meta: EntryMeta) -> Result<(), SinkError>;
    /// Takes back `path` and everything below it, if added (a layer's later
    /// entry for the same path replaces it). Other names of its inodes stay.
    fn remove(&mut self, path: &[u8]) -> Result<(), SinkError>;
    /// Adds a regular file from its stored form in another squashfs image
    /// (`source` numbers the images a sink copies from), when the sink can
    /// take its blocks as they are; `None`: it cannot, and nothing was
    /// done (the caller streams the content with [`TreeSink::file`]).
    fn stored_file(
        &mut self,
        _path: &[u8],
        _meta: &EntryMeta,
        _source: &StoredSource,
    ) -> Result<Option<u64>, SinkError> {
        Ok(None)
    }
    /// (device, inode) of files the sink itself is writing, which a walk of
    /// a host directory must not read back into the image.
    fn own_files(&self) -> Vec<(u64, u64)> {
        Vec::new()
    }
}

/// A file of a squashfs image that a layer source offers a sink in its
/// stored form (see [`TreeSink::stored_file`]).
#[derive(Debug, Clone)]
pub struct StoredSource {
    /// Which image, for the sink's bookkeeping of shared fragment blocks.
    pub image: u32,
    pub archive: std::sync::Arc<crate::squashfs::reader::Archive>,
    pub node: crate::squashfs::reader::Node,
}

/// What a [`MemorySink`] recorded at one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemoryNode {
    Dir(EntryMeta),
    File(EntryMeta, Vec<u8>),
    Symlink(EntryMeta, Vec<u8>),
    Special(EntryMeta, SpecialKind),
    /// A hard link: the path of the first name of the same inode.
    Link(Vec<u8>),
}

/// An in-memory sink that checks the writer's rules (no duplicates, no
/// child under a non-directory, hard links only to added non-directories)
/// and records the tree, for tests. A removed name that other names link
/// to hands its inode to the first of them.
#[derive(Debug, Default)]
pub struct MemorySink {
    pub nodes: BTreeMap<Vec<u8>, MemoryNode>,
    /// Every call in order, as `"op path"`, to check what was (not) written.
    pub log: Vec<String>,
}

impl MemorySink {
    fn add(&mut self, op: &str, path: &[u8], node: MemoryNode) -> Result<(), SinkError> {
        self.log
            .push(format!("{op} {}", String::from_utf8_lossy(path)));
        let mut parent = path;
        while let Some(i) = parent.iter().rposition(|b| *b == b'/') {
            parent = &parent[..i];
            match self.nodes.get(parent) {
                None | Some(MemoryNode::Dir(_)) => {}
                Some(_) => {
                    return Err(format!(
                        "{} is under a non-directory",
                        String::from_utf8_lossy(path)
                    )
                    .into());
                }
            }
        }
        if self.nodes.contains_key(path) {
            return Err(format!("duplicate path {}", String::from_utf8_lossy(path)).into());
        }
        self.nodes.insert(path.to_vec(), node);
        Ok(())
    }

    /// The node at a path, following a hard link to its first name.
    pub fn node_at(&self, path: &[u8]) -> Option<&MemoryNode> {
        match self.nodes.get(path)? {
            MemoryNode::Link(first) => self.nodes.get(first),
            node => Some(node),
        }
    }

    /// The file content at a path (through hard links).
    pub fn content(&self, path: &str) -> Option<&[u8]> {
        match self.node_at(path.as_bytes())? {
            MemoryNode::File(_, data) => Some(data),
            _ => None,
        }
    }
}

impl TreeSink for MemorySink {
    fn dir(&mut self, path: &[u8], meta: EntryMeta) -> Result<(), SinkError> {
        self.add("dir", path, MemoryNode::Dir(meta))
    }

    fn file(
        &mut self,
        path: &[u8],
        meta: EntryMeta,
        data: &mut dyn Read,
    ) -> Result<u64, SinkError> {
        let mut buf = Vec::new();
        io::copy(data, &mut buf)?;
        let n = buf.len() as u64;
        self.add("file", path, MemoryNode::File(meta, buf))?;
        Ok(n)
    }

    fn symlink(&mut self, path: &[u8], meta: EntryMeta, target: &[u8]) -> Result<(), SinkError> {
        self.add("symlink", path, MemoryNode::Symlink(meta, target.to_vec()))
    }

    fn special(
        &mut self,
        path: &[u8],
        meta: EntryMeta,
        kind: SpecialKind,
    ) -> Result<(), SinkError> {
        self.add("special", path, MemoryNode::Special(meta, kind))
    }

    fn update_dir(&mut self, path: &[u8], meta: EntryMeta) -> Result<(), SinkError> {
        self.log
            .push(format!("update {}", String::from_utf8_lossy(path)));
        match self.nodes.get_mut(path) {
            Some(MemoryNode::Dir(m)) => {
                *m = meta;
                Ok(())
            }
            _ => Err(format!("{} is not a directory", String::from_utf8_lossy(path)).into()),
        }
    }

    fn remove(&mut self, path: &[u8]) -> Result<(), SinkError> {
        self.log
            .push(format!("remove {}", String::from_utf8_lossy(path)));
        if path.is_empty() {
            return Err("the root cannot be removed".into());
        }
        let doomed: Vec<Vec<u8>> = self
            .nodes
            .keys()
            .filter(|k| {
                k.as_slice() == path || (k.starts_with(path) && k.get(path.len()) == Some(&b'/'))
            })
            .cloned()
            .collect();
        for name in &doomed {
            let Some(node) = self.nodes.remove(name) else {
                continue;
            };
            if matches!(node, MemoryNode::Link(_) | MemoryNode::Dir(_)) {
                continue;
            }
            let heirs: Vec<Vec<u8>> = self
                .nodes
                .iter()
                .filter(|(_, n)| matches!(n, MemoryNode::Link(f) if f == name))
                .map(|(k, _)| k.clone())
                .collect();
            if let Some((first, rest)) = heirs.split_first() {
                self.nodes.insert(first.clone(), node);
                for other in rest {
                    self.nodes
                        .insert(other.clone(), MemoryNode::Link(first.clone()));
                }
            }
        }
        Ok(())
    }

    fn hardlink(&mut self, path: &[u8], target: &[u8]) -> Result<(), SinkError> {
        let first = match self.nodes.get(target) {
            None => {
                return Err(format!(
                    "hard link target {} not added",
                    String::from_utf8_lossy(target)
                )
                .into());
            }
            Some(MemoryNode::Dir(_)) => return Err("hard link to a directory".into()),
            Some(MemoryNode::Link(first)) => first.clone(),
            Some(_) => target.to_vec(),
        };
        self.add("link", path, MemoryNode::Link(first))
    }
}

/// The squashfs writer is the production sink.
mod writer_sink {
    use super::{EntryMeta, SinkError, SpecialKind, StoredSource, TreeSink};
    use crate::squashfs::writer::Writer;
    use std::io::Read;

    impl TreeSink for Writer {
        fn dir(&mut self, path: &[u8], m: EntryMeta) -> Result<(), SinkError> {
            Ok(self.add_dir(path, m)?)
        }

        fn file(
            &mut self,
            path: &[u8],
            m: EntryMeta,
            data: &mut dyn Read,
        ) -> Result<u64, SinkError> {
            Ok(self.add_file(path, m, data)?)
        }

        fn symlink(&mut self, path: &[u8], m: EntryMeta, target: &[u8]) -> Result<(), SinkError> {
            Ok(self.add_symlink(path, m, target)?)
        }

        fn special(&mut self, path: &[u8], m: EntryMeta, k: SpecialKind) -> Result<(), SinkError> {
            Ok(self.add_special(path, m, k)?)
        }

        fn hardlink(&mut self, path: &[u8], target: &[u8]) -> Result<(), SinkError> {
            Ok(self.add_hardlink(path, target)?)
        }

        fn update_dir(&mut self, path: &[u8], m: EntryMeta) -> Result<(), SinkError> {
            Ok(Writer::update_dir(self, path, m)?)
        }

        fn remove(&mut self, path: &[u8]) -> Result<(), SinkError> {
            Ok(Writer::remove(self, path)?)
        }

        fn stored_file(
            &mut self,
            path: &[u8],
            m: &EntryMeta,
            source: &StoredSource,
        ) -> Result<Option<u64>, SinkError> {
            if !self.copies_from(source.archive.data_format()) {
                return Ok(None);
            }
            let Some(stored) = source.archive.stored_file(&source.node)? else {
                return Ok(None);
            };
            Ok(Some(self.add_stored_file(
                path,
                m.clone(),
                source.image,
                &stored,
            )?))
        }

        fn own_files(&self) -> Vec<(u64, u64)> {
            Writer::own_files(self)
        }
    }
}
