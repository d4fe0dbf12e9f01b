//! A file's content as the image stores it (compressed blocks and the
//! fragment block of its tail), for a writer that copies it into another
//! image of the same compressor and block size without decompressing and
//! compressing it again (`cairn build` putting a base image under its
//! layers). Every offset and size word is checked as for a read; what the
//! compressed bytes hold is not (the writer copies only from images cairn
//! itself wrote into its cache).

use super::{Archive, FRAGMENT_TABLE, Node, ReadError, inode_name};
use crate::squashfs::format::{
    CompressorId, DATA_SIZE_MASK, DATA_UNCOMPRESSED, FragmentEntry, InodeBody, NO_FRAGMENT,
    SliceSource, flags,
};

/// The stored form of a regular file.
#[derive(Debug)]
pub struct StoredFile<'a> {
    pub size: u64,
    /// Bytes of holes (an extended inode's `sparse`).
    pub sparse: u64,
    /// Each full block (and, without a fragment, the last one): its size
    /// word and its stored bytes (empty for a hole, word 0).
    pub blocks: Vec<(u32, &'a [u8])>,
    pub tail: Option<StoredTail<'a>>,
}

/// The fragment block holding a file's tail, as stored.
#[derive(Debug)]
pub struct StoredTail<'a> {
    /// The block's index in this image (the key to copy it once).
    pub index: u32,
    pub word: u32,
    pub block: &'a [u8],
    /// Where the tail starts in the decompressed block.
    pub offset: u32,
}

/// What a copied block must agree on: compressor and block size. The
/// compressor's options are not needed to decompress zstd or lz4; for the
/// others, an image that stores options is not copied from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataFormat {
    pub compressor: CompressorId,
    pub block_size: u32,
    pub options: bool,
}

impl Archive {
    pub fn data_format(&self) -> DataFormat {
        DataFormat {
            compressor: self.sb.compressor,
            block_size: self.sb.block_size,
            options: self.sb.flags & flags::COMPRESSOR_OPTIONS != 0,
        }
    }

    /// The stored form of `file` (a regular file's node), or `None` for
    /// another kind of node.
    pub fn stored_file<'a>(&'a self, file: &Node) -> Result<Option<StoredFile<'a>>, ReadError> {
        let InodeBody::File(f) = &file.inode.body else {
            return Ok(None);
        };
        let bad = |reason: String| ReadError::BadInode {
            inode: inode_name(file.inode_ref),
            reason,
        };
        let mut blocks = Vec::with_capacity(f.block_sizes.len());
        // The offsets were checked when the node was read (size words,
        // fragment index): here only the bytes are taken.
        for (&word, &at) in f.block_sizes.iter().zip(file.block_offsets.iter()) {
            let len = u64::from(word & DATA_SIZE_MASK);
            let bytes = if len == 0 {
                &[][..]
            } else {
                self.slice("data block", at, len)?
            };
            blocks.push((word, bytes));
        }
        if blocks.len() != f.block_sizes.len() {
            return Err(bad("block offsets missing".into()));
        }
        let bs = u64::from(self.sb.block_size);
        let covered = f.block_sizes.len() as u64 * bs;
        let tail = if f.frag_index == NO_FRAGMENT {
            if covered < f.file_size {
                return Err(bad(format!(
                    "file of {} bytes has {} blocks and no fragment for the rest",
                    f.file_size,
                    f.block_sizes.len()
                )));
            }
            None
        } else {
            let tail_len = f
                .file_size
                .checked_sub(covered)
                .filter(|&n| n > 0 && n < bs);
            let Some(tail_len) = tail_len else {
                return Err(bad(format!(
                    "file of {} bytes has {} blocks and a fragment",
                    f.file_size,
                    f.block_sizes.len()
                )));
            };
            if u64::from(f.frag_offset) + tail_len > bs {
                return Err(bad(format!(
                    "tail of {tail_len} bytes at offset {} is past a block",
                    f.frag_offset
                )));
            }
            let entry = self.fragment_entry(f.frag_index)?;
            let len = u64::from(entry.size & DATA_SIZE_MASK);
            if len == 0 || len > bs || entry.size & !(DATA_SIZE_MASK | DATA_UNCOMPRESSED) != 0 {
                return Err(bad(format!(
                    "fragment {}: bad size word {:#x}",
                    f.frag_index, entry.size
                )));
            }
            Some(StoredTail {
                index: f.frag_index,
                word: entry.size,
                block: self.slice("fragment block", entry.start, len)?,
                offset: f.frag_offset,
            })
        };
        Ok(Some(StoredFile {
            size: f.file_size,
            sparse: f.sparse,
            blocks,
            tail,
        }))
    }

    /// Entry `index` of the fragment table.
    pub(super) fn fragment_entry(&self, index: u32) -> Result<FragmentEntry, ReadError> {
        let mut buf = [0u8; FragmentEntry::SIZE];
        self.table_entry(
            FRAGMENT_TABLE,
            self.sb.fragment_table_start,
            FragmentEntry::SIZE,
            index.into(),
            &mut buf,
        )?;
        FragmentEntry::decode(&mut SliceSource::new(&buf)).map_err(|source| ReadError::Decode {
            what: "fragment entry",
            table: FRAGMENT_TABLE,
            location: format!("entry {index}"),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::squashfs::reader::Archive;
    use crate::squashfs::writer::{Compression, EntryMeta, Writer, WriterOptions};

    #[test]
    fn a_file_as_stored_decompresses_to_its_content() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.sqfs");
        let options = WriterOptions {
            compression: Compression::Zstd { level: 3 },
            block_size: 4096,
            mkfs_time: Some(0),
            durable: false,
        };
        let content: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let mut w = Writer::create(&path, options).expect("create");
        let meta = EntryMeta {
            mode: 0o644,
            ..EntryMeta::default()
        };
        w.add_file(b"f", meta, &mut &content[..]).expect("f");
        w.finish().expect("finish");
        let archive = Archive::open(&path).expect("open");
        let node = archive.lookup_path(b"f").expect("lookup").expect("f");
        let stored = archive.stored_file(&node).expect("stored").expect("a file");
        assert_eq!(stored.size, 10_000);
        assert_eq!(stored.blocks.len(), 2);
        let comp = Compression::Zstd { level: 3 };
        let mut plain = Vec::new();
        for (word, bytes) in &stored.blocks {
            assert_eq!(u64::from(*word & super::DATA_SIZE_MASK), bytes.len() as u64);
            plain.extend(comp.decompress(bytes, 4096).expect("a block"));
        }
        let tail = stored.tail.expect("a tail");
        let block = comp.decompress(tail.block, 4096).expect("fragment");
        let at = tail.offset as usize;
        plain.extend_from_slice(&block[at..at + 10_000 - 8192]);
        assert_eq!(plain, content);
        let root = archive.root().expect("root");
        assert!(archive.stored_file(&root).expect("dir").is_none());
    }
}
