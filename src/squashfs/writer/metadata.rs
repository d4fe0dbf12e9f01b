//! Metadata: the block writer every metadata table goes through (8 KiB
//! blocks, each compressed on its own), and the builder that encodes the
//! inodes at finish (directories in `dirs`, id and xattr tables in
//! `tables`).

use std::collections::HashMap;

use super::tables::XattrSet;
use super::tree::{Kind, Node};
use super::{Compression, SpecialKind, WriteError, WriterOptions, encode_err, show};
use crate::squashfs::format::{
    self, DeviceInode, FileInode, Inode, InodeBody, InodeHeader, InodeRef, IpcInode, METADATA_SIZE,
    METADATA_UNCOMPRESSED, NO_FRAGMENT, NO_XATTR, SymlinkInode, XattrId,
};

/// Uncompressed metadata: 8 KiB blocks, each compressed on its own and
/// prefixed by a u16 length header (bit 15: stored raw).
#[derive(Debug)]
pub(super) struct MetaWriter {
    compression: Compression,
    block_size: u32,
    out: Vec<u8>,
    cur: Vec<u8>,
    /// Start (relative to the table) of every block begun so far; the last
    /// one is the block being filled.
    block_starts: Vec<u64>,
}

impl MetaWriter {
    pub(super) fn new(compression: Compression, block_size: u32) -> Self {
        Self {
            compression,
            block_size,
            out: Vec::new(),
            cur: Vec::with_capacity(METADATA_SIZE),
            block_starts: vec![0],
        }
    }

    /// The reference of the next byte written.
    pub(super) fn position(&self) -> InodeRef {
        InodeRef::new(self.out.len() as u64, self.cur_len())
    }

    /// Bytes in the block being filled: at most METADATA_SIZE (8 KiB), as
    /// `write` flushes a block the moment it is full.
    fn cur_len(&self) -> u16 {
        const { assert!(METADATA_SIZE <= u16::MAX as usize) };
        debug_assert!(self.cur.len() <= METADATA_SIZE);
        // In range by the invariant above; a 16-bit offset and header
        // length is what the format has for it.
        #[allow(clippy::cast_possible_truncation)]
        let len = self.cur.len() as u16;
        len
    }

    /// Offset of the next byte in the uncompressed stream of this table.
    pub(super) fn uncompressed_position(&self) -> u64 {
        (self.block_starts.len() as u64 - 1) * METADATA_SIZE as u64 + self.cur.len() as u64
    }

    /// Table-relative start of the block holding uncompressed offset `pos`
    /// (that block must be begun already).
    pub(super) fn block_start_of(&self, pos: u64) -> u64 {
        let last = self.block_starts.len() - 1;
        // A block number past usize is certainly past the last block.
        let n = usize::try_from(pos / METADATA_SIZE as u64).map_or(last, |n| n.min(last));
        self.block_starts[n]
    }

    pub(super) fn write(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let room = METADATA_SIZE - self.cur.len();
            let n = room.min(data.len());
            self.cur.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.cur.len() == METADATA_SIZE {
                self.flush_block();
            }
        }
    }

    fn flush_block(&mut self) {
        // A compressed block is smaller than the 8 KiB it came from, so its
        // length fits in the header's 15 bits; one that did not would be
        // stored raw, which is always valid.
        let compressed = self
            .compression
            .compress(&self.cur, self.block_size)
            .and_then(|c| {
                let len = u16::try_from(c.len()).ok()?;
                (len & METADATA_UNCOMPRESSED == 0).then_some((len, c))
            });
        match compressed {
            Some((len, c)) => {
                self.out.extend_from_slice(&len.to_le_bytes());
                self.out.extend_from_slice(&c);
            }
            None => {
                let header = self.cur_len() | METADATA_UNCOMPRESSED;
                self.out.extend_from_slice(&header.to_le_bytes());
                self.out.extend_from_slice(&self.cur);
            }
        }
        self.cur.clear();
        self.block_starts.push(self.out.len() as u64);
    }

    /// The table bytes, plus the table-relative start of each block.
    pub(super) fn finish(mut self) -> (Vec<u8>, Vec<u64>) {
        if !self.cur.is_empty() {
            self.flush_block();
        }
        self.block_starts.pop();
        (self.out, self.block_starts)
    }
}

/// The metadata tables as built at finish.
#[derive(Debug)]
pub(super) struct BuiltTables {
    pub(super) inode_table: Vec<u8>,
    pub(super) dir_table: Vec<u8>,
    /// Inode ref by inode number - 1.
    pub(super) export: Vec<InodeRef>,
    pub(super) ids: Vec<u32>,
    /// `ids.len()`, as the superblock stores it.
    pub(super) id_count: u16,
    pub(super) xattr_kv: Vec<u8>,
    pub(super) xattr_ids: Vec<XattrId>,
    /// `xattr_ids.len()`, as the xattr table header stores it.
    pub(super) xattr_id_count: u32,
}

#[derive(Debug)]
pub(super) struct TableBuilder<'a> {
    pub(super) nodes: &'a [Node],
    pub(super) numbers: &'a [u32],
    /// Only to name an entry in an error.
    pub(super) paths: &'a HashMap<Vec<u8>, usize>,
    pub(super) inodes: MetaWriter,
    pub(super) dirs: MetaWriter,
    pub(super) xattr_kv: MetaWriter,
    pub(super) refs: Vec<InodeRef>,
    pub(super) emitted: Vec<bool>,
    pub(super) export: Vec<InodeRef>,
    pub(super) ids: Vec<u32>,
    pub(super) id_count: u16,
    pub(super) id_index: HashMap<u32, u16>,
    pub(super) xattr_ids: Vec<XattrId>,
    pub(super) xattr_id_count: u32,
    pub(super) xattr_index: HashMap<XattrSet, u32>,
}

impl<'a> TableBuilder<'a> {
    pub(super) fn new(
        options: &WriterOptions,
        nodes: &'a [Node],
        numbers: &'a [u32],
        paths: &'a HashMap<Vec<u8>, usize>,
    ) -> Self {
        let comp = options.compression;
        let bs = options.block_size;
        Self {
            nodes,
            numbers,
            paths,
            inodes: MetaWriter::new(comp, bs),
            dirs: MetaWriter::new(comp, bs),
            xattr_kv: MetaWriter::new(comp, bs),
            refs: vec![InodeRef(0); nodes.len()],
            emitted: vec![false; nodes.len()],
            export: vec![InodeRef(0); nodes.len()],
            ids: Vec::new(),
            id_count: 0,
            id_index: HashMap::new(),
            xattr_ids: Vec::new(),
            xattr_id_count: 0,
            xattr_index: HashMap::new(),
        }
    }

    /// A path of node `idx`, for an error message (a linear search, only
    /// ever done on the way out).
    pub(super) fn path_of(&self, idx: usize) -> String {
        self.paths.iter().find(|&(_, &i)| i == idx).map_or_else(
            || format!("entry #{idx}"),
            |(p, _)| format!("{:?}", show(p)),
        )
    }

    pub(super) fn header(&mut self, idx: usize, body_type: u16) -> Result<InodeHeader, WriteError> {
        let meta = &self.nodes[idx].meta;
        let (uid, gid, mode, mtime) = (meta.uid, meta.gid, meta.mode, meta.mtime);
        Ok(InodeHeader {
            inode_type: body_type,
            permissions: mode & 0o7777,
            uid_idx: self.id(uid)?,
            gid_idx: self.id(gid)?,
            mtime,
            inode_number: self.numbers[idx],
        })
    }

    pub(super) fn write_inode(
        &mut self,
        idx: usize,
        header: InodeHeader,
        body: InodeBody,
    ) -> Result<(), WriteError> {
        let mut bytes = Vec::new();
        Inode { header, body }
            .encode(&mut bytes)
            .map_err(encode_err(|| format!("the inode of {}", self.path_of(idx))))?;
        let r = self.inodes.position();
        self.refs[idx] = r;
        self.export[self.numbers[idx] as usize - 1] = r;
        self.emitted[idx] = true;
        self.inodes.write(&bytes);
        Ok(())
    }

    /// Emit a non-directory inode.
    pub(super) fn emit_leaf(&mut self, idx: usize) -> Result<(), WriteError> {
        let xattr_idx = self.xattr(idx)?;
        let node = &self.nodes[idx];
        let has_x = xattr_idx != NO_XATTR;
        let links = node.links;
        let body = match &node.kind {
            Kind::File(f) => {
                // mksquashfs's rule: basic unless something only the
                // extended inode can hold (sqfsdiff compares the types):
                // a size or start past 4 GiB, hard links, xattrs, or the
                // byte count of a sparse source's holes (see
                // `add_file_with_holes`).
                let extended = f.size > u64::from(u32::MAX)
                    || f.blocks_start > u64::from(u32::MAX)
                    || f.sparse > 0
                    || links > 1
                    || has_x;
                let (frag_index, frag_offset) = f.fragment.unwrap_or((NO_FRAGMENT, 0));
                InodeBody::File(FileInode {
                    extended,
                    blocks_start: f.blocks_start,
                    file_size: f.size,
                    sparse: f.sparse,
                    link_count: links,
                    frag_index,
                    frag_offset,
                    xattr_idx,
                    block_sizes: f.block_sizes.clone(),
                })
            }
            Kind::Symlink(t) => InodeBody::Symlink(SymlinkInode {
                extended: has_x,
                link_count: links,
                target: t.clone(),
                xattr_idx,
            }),
            Kind::Special(SpecialKind::CharDevice { major, minor }) => {
                InodeBody::CharDev(DeviceInode {
                    extended: has_x,
                    link_count: links,
                    rdev: format::encode_rdev(*major, *minor),
                    xattr_idx,
                })
            }
            Kind::Special(SpecialKind::BlockDevice { major, minor }) => {
                InodeBody::BlockDev(DeviceInode {
                    extended: has_x,
                    link_count: links,
                    rdev: format::encode_rdev(*major, *minor),
                    xattr_idx,
                })
            }
            Kind::Special(SpecialKind::Fifo) => InodeBody::Fifo(IpcInode {
                extended: has_x,
                link_count: links,
                xattr_idx,
            }),
            Kind::Special(SpecialKind::Socket) => InodeBody::Socket(IpcInode {
                extended: has_x,
                link_count: links,
                xattr_idx,
            }),
            Kind::Dir { .. } => return Ok(()),
        };
        let header = self.header(idx, body.inode_type())?;
        self.write_inode(idx, header, body)
    }

    pub(super) fn finish(self) -> BuiltTables {
        let (inode_table, _) = self.inodes.finish();
        let (dir_table, _) = self.dirs.finish();
        let (xattr_kv, _) = self.xattr_kv.finish();
        BuiltTables {
            inode_table,
            dir_table,
            export: self.export,
            ids: self.ids,
            id_count: self.id_count,
            xattr_kv,
            xattr_ids: self.xattr_ids,
            xattr_id_count: self.xattr_id_count,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_writer_splits_8k_blocks_and_refs_point_inside() {
        let mut m = MetaWriter::new(Compression::None, 4096);
        assert_eq!(m.position(), InodeRef::new(0, 0));
        m.write(&[1u8; 8000]);
        assert_eq!(m.position(), InodeRef::new(0, 8000));
        m.write(&[2u8; 300]);
        // The first block is full and stored raw: 2 + 8192 bytes.
        assert_eq!(m.position(), InodeRef::new(8194, 108));
        assert_eq!(m.uncompressed_position(), 8300);
        assert_eq!(m.block_start_of(8300), 8194);
        let (bytes, starts) = m.finish();
        assert_eq!(starts, vec![0, 8194]);
        assert_eq!(bytes.len(), 8194 + 2 + 108);
        assert_eq!(
            u16::from_le_bytes([bytes[0], bytes[1]]),
            8192 | METADATA_UNCOMPRESSED
        );
        assert_eq!(
            u16::from_le_bytes([bytes[8194], bytes[8195]]),
            108 | METADATA_UNCOMPRESSED
        );
    }

    #[test]
    fn metadata_writer_compresses_when_it_helps() {
        let mut m = MetaWriter::new(Compression::Zstd { level: 3 }, 131072);
        m.write(&[7u8; 9000]);
        let (bytes, starts) = m.finish();
        assert_eq!(starts.len(), 2);
        let h = u16::from_le_bytes([bytes[0], bytes[1]]);
        assert_eq!(h & METADATA_UNCOMPRESSED, 0);
        let first = &bytes[2..2 + h as usize];
        let back = zstd::bulk::decompress(first, 8192).expect("zstd");
        assert_eq!(back, vec![7u8; 8192]);
    }

    #[test]
    fn inode_ref_encoding() {
        let r = InodeRef::new(0x1_2345, 0x1ff);
        assert_eq!(r.0, 0x1_2345_01ff);
        assert_eq!(r.block_start(), 0x1_2345);
        assert_eq!(r.offset(), 0x1ff);
    }
}
