//! The squashfs reader: an [`Archive`] over a memory-mapped image (or bytes),
//! with lookup, readdir, stat, readlink, reads at any offset and xattrs.
//!
//! Images are untrusted input. Every offset, length, count and index read
//! from the image is checked against the image size and the bounds of the
//! table it belongs to; decompressed sizes are capped (8 KiB per metadata
//! block, the block size per data block or fragment); tree walks refuse a
//! directory seen twice. Errors say what is wrong and where.
//!
//! An `Archive` is `Send + Sync`: a multithreaded FUSE server shares one.
//! Decompressed metadata blocks, fragments and data blocks sit in bounded
//! LRU caches (see [`CacheSizes`]); a lock is never held while decompressing.

mod cache;
mod fuzz;
mod store;
mod stored;
mod walk;

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use memmap2::Mmap;

use self::cache::Lru;
pub use self::fuzz::{FuzzBudget, FuzzSummary, fuzz_walk, fuzz_walk_with};
pub use self::store::{BlockStore, Identity, StoreOptions, identity};
pub use self::stored::{DataFormat, StoredFile, StoredTail};
pub use self::walk::{WalkEvent, WalkLimits};
use super::decompress::{DecompressError, decompress};
use super::format::{
    self, ByteSource, DATA_SIZE_MASK, DATA_UNCOMPRESSED, DIR_SIZE_BIAS, FormatError, FragmentEntry,
    Inode, InodeBody, METADATA_SIZE, METADATA_UNCOMPRESSED, NO_FRAGMENT, NO_XATTR, SUPERBLOCK_SIZE,
    SliceSource, TABLE_ABSENT, XattrId, XattrTableHeader,
};
pub use super::format::{InodeRef, Superblock};
use crate::sys::mmap::mmap_readonly;

/// How many decompressed blocks each cache keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSizes {
    /// Metadata blocks (inodes, directories, tables), 8 KiB each.
    pub metadata_blocks: usize,
    /// Fragment blocks (packed file tails), up to the block size each.
    pub fragments: usize,
    /// Data blocks, up to the block size each.
    pub data_blocks: usize,
}

impl Default for CacheSizes {
    /// About 8 MiB of metadata and, at 128 KiB blocks, 4 MiB of fragments
    /// and 8 MiB of data.
    fn default() -> Self {
        Self {
            metadata_blocks: 1024,
            fragments: 32,
            data_blocks: 64,
        }
    }
}

/// What went wrong reading an image, and where.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot open {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot map {path} into memory")]
    Map {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("bad superblock")]
    Superblock(#[source] FormatError),
    #[error("image is truncated: {len} bytes, but the superblock says {bytes_used} are used")]
    Truncated { len: u64, bytes_used: u64 },
    #[error("bad superblock: {what} is {value}, {reason}")]
    SuperblockField {
        what: &'static str,
        value: u64,
        reason: String,
    },
    #[error("{what} at offset {offset} (+{size} bytes) lies outside the image ({len} bytes used)")]
    OutOfBounds {
        what: &'static str,
        offset: u64,
        size: u64,
        len: u64,
    },
    #[error("metadata block at offset {offset} of the {table} table: {reason}")]
    MetadataBlock {
        table: &'static str,
        offset: u64,
        reason: String,
    },
    #[error("decompressing the {what} at offset {offset}")]
    Decompress {
        what: &'static str,
        offset: u64,
        #[source]
        source: DecompressError,
    },
    #[error("decoding {what} at {location} in the {table} table")]
    Decode {
        what: &'static str,
        table: &'static str,
        location: String,
        #[source]
        source: FormatError,
    },
    #[error("inode {inode}: {reason}")]
    BadInode { inode: String, reason: String },
    #[error("inode {inode}: {what} index {index} out of range (the table has {count})")]
    IndexOutOfRange {
        inode: String,
        what: &'static str,
        index: u64,
        count: u64,
    },
    #[error("inode {inode}: data block {block} at offset {offset}: {reason}")]
    DataBlock {
        inode: String,
        block: u64,
        offset: u64,
        reason: String,
    },
    #[error("directory inode {inode}: {reason}")]
    Directory { inode: String, reason: String },
    #[error("directory inode {inode}: bad entry name {name:?}: {reason}")]
    BadName {
        inode: String,
        name: String,
        reason: &'static str,
    },
    #[error("directory loop: {path:?} is directory inode {inode}, already visited")]
    DirectoryLoop { path: String, inode: String },
    #[error("inode {inode} is not a {expected}")]
    WrongType {
        inode: String,
        expected: &'static str,
    },
    #[error("inode {inode}: xattrs: {reason}")]
    Xattr { inode: String, reason: String },
    #[error("{what} exceeds the limit of {limit}")]
    Limit { what: &'static str, limit: u64 },
}

/// How errors name an inode: its reference (metadata block and offset).
fn inode_name(r: InodeRef) -> String {
    format!(
        "{:#x} (block {}, offset {})",
        r.0,
        r.block_start(),
        r.offset()
    )
}

/// What `stat(2)` would say about a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// The inode number stored in the image (1..=inode_count).
    pub ino: u64,
    /// Full `st_mode`: type bits and permissions.
    pub mode: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    /// `makedev(major, minor)` for devices, else 0.
    pub rdev: u64,
    pub size: u64,
    /// 512-byte blocks, as `st_blocks`.
    pub blocks: u64,
    /// Seconds since the epoch (squashfs stores no nanoseconds).
    pub mtime: i64,
}

/// An inode of the image: its reference, the decoded inode and its stat.
/// Cheap to clone (the inode is shared).
#[derive(Debug, Clone)]
pub struct Node {
    inode_ref: InodeRef,
    inode: Arc<Inode>,
    stat: Stat,
    /// Absolute image offset of each data block of a file (holes included,
    /// with the offset they would have); empty for other types.
    block_offsets: Arc<[u64]>,
}

impl Node {
    pub fn inode_ref(&self) -> InodeRef {
        self.inode_ref
    }

    /// Absolute image offset of each data block of a file: the keys the
    /// block store files its blocks under.
    pub fn block_offsets(&self) -> &[u64] {
        &self.block_offsets
    }

    pub fn inode(&self) -> &Inode {
        &self.inode
    }

    pub fn stat(&self) -> &Stat {
        &self.stat
    }

    pub fn is_dir(&self) -> bool {
        matches!(self.inode.body, InodeBody::Dir(_))
    }

    pub fn is_file(&self) -> bool {
        matches!(self.inode.body, InodeBody::File(_))
    }

    pub fn is_symlink(&self) -> bool {
        matches!(self.inode.body, InodeBody::Symlink(_))
    }
}

/// An extended attribute: full name (`user.foo`) and value.
pub type Xattr = (Vec<u8>, Vec<u8>);

/// One name in a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: Vec<u8>,
    pub inode_ref: InodeRef,
    /// The inode number (1..=inode_count).
    pub ino: u32,
    /// The basic inode type (`format::inode_type::BASIC_*`).
    pub inode_type: u16,
}

enum Backing {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl Backing {
    fn bytes(&self) -> &[u8] {
        match self {
            Self::Mapped(m) => m,
            Self::Owned(v) => v,
        }
    }
}

/// One data block's bytes, wherever they are (see `Archive::block_bytes`).
enum BlockBytes<'a> {
    Hole,
    Raw(&'a [u8]),
    Cached(Arc<Vec<u8>>),
}

/// A file node's inode, or the error for anything else.
fn file_inode(file: &Node) -> Result<&format::FileInode, ReadError> {
    match &file.inode.body {
        InodeBody::File(f) => Ok(f),
        _ => Err(ReadError::WrongType {
            inode: inode_name(file.inode_ref),
            expected: "regular file",
        }),
    }
}

/// A decompressed metadata block and where the next one starts.
#[derive(Debug)]
struct MetaBlock {
    data: Vec<u8>,
    next: u64,
}

/// An open squashfs image.
pub struct Archive {
    backing: Backing,
    sb: Superblock,
    /// Bytes of the image that may be referenced: `bytes_used`.
    len: u64,
    ids: Vec<u32>,
    /// Starts of all present tables and of the end of the image, sorted: a
    /// table ends where the next one starts.
    table_starts: Vec<u64>,
    xattr_header: Option<XattrTableHeader>,
    meta_cache: Lru<Arc<MetaBlock>>,
    fragment_cache: Lru<Arc<Vec<u8>>>,
    data_cache: Lru<Arc<Vec<u8>>>,
    /// Decompressed blocks kept between runs (the FUSE server's).
    store: OnceLock<BlockStore>,
}

impl std::fmt::Debug for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archive")
            .field("superblock", &self.sb)
            .finish_non_exhaustive()
    }
}

/// Table names used in errors.
const INODE_TABLE: &str = "inode";
const DIRECTORY_TABLE: &str = "directory";
const FRAGMENT_TABLE: &str = "fragment";
const ID_TABLE: &str = "id";
const XATTR_TABLE: &str = "xattr";

/// How many symlinks [`Archive::follow_path`] follows in one path before giving
/// up: the kernel's MAXSYMLINKS, past which `execve` fails with ELOOP.
const MAX_SYMLINKS: u32 = 40;

/// Entries of a two-level table (fragment, id, xattr id) per metadata block.
fn entries_per_block(entry_size: usize) -> u64 {
    (METADATA_SIZE / entry_size) as u64
}

/// `rest` bytes of a file, but no more than `len` (a buffer): a rest past
/// usize is certainly more than any buffer.
fn capped_len(rest: u64, len: usize) -> usize {
    usize::try_from(rest).map_or(len, |rest| rest.min(len))
}

/// The index of data block `block` of `f`, or `None` for the tail (the
/// blocks past the stored ones).
fn block_index(f: &format::FileInode, block: u64) -> Option<usize> {
    usize::try_from(block)
        .ok()
        .filter(|&i| i < f.block_sizes.len())
}

/// Every inode takes at least 20 bytes (a basic fifo: 16-byte header and a
/// link count) of the uncompressed inode table, and a metadata block at
/// least 3 bytes of the image: a bound on how many inodes a table can hold.
fn max_inodes_in(table_bytes: u64) -> u64 {
    (table_bytes / 3 + 1).saturating_mul((METADATA_SIZE / 20 + 1) as u64)
}

impl Archive {
    /// Drop the decompressed blocks cached in memory (metadata, fragments,
    /// data): a warm FUSE server that has gone idle keeps only what the
    /// kernel's page cache holds for it.
    pub fn drop_caches(&self) {
        self.meta_cache.clear();
        self.fragment_cache.clear();
        self.data_cache.clear();
    }

    /// Open and memory-map an image with the default cache sizes.
    pub fn open(path: &Path) -> Result<Archive, ReadError> {
        Self::open_with(path, CacheSizes::default())
    }

    pub fn open_with(path: &Path, caches: CacheSizes) -> Result<Archive, ReadError> {
        let file = File::open(path).map_err(|source| ReadError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_file(&file, path, caches)
    }

    /// An image from a file the caller already opened (`cairn run` opens
    /// the image once: on a shared filesystem every open is a metadata
    /// round trip, times every rank); `path` is for errors.
    pub fn from_file(file: &File, path: &Path, caches: CacheSizes) -> Result<Archive, ReadError> {
        let map = mmap_readonly(file).map_err(|source| ReadError::Map {
            path: path.to_path_buf(),
            source,
        })?;
        Self::new(Backing::Mapped(map), caches)
    }

    /// An image held in memory (fuzzing, tests).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Archive, ReadError> {
        Self::from_bytes_with(bytes, CacheSizes::default())
    }

    pub fn from_bytes_with(bytes: Vec<u8>, caches: CacheSizes) -> Result<Archive, ReadError> {
        Self::new(Backing::Owned(bytes), caches)
    }

    fn new(backing: Backing, caches: CacheSizes) -> Result<Archive, ReadError> {
        let bytes = backing.bytes();
        let file_len = bytes.len() as u64;
        let sb = Superblock::decode(&mut SliceSource::new(bytes)).map_err(ReadError::Superblock)?;
        if sb.bytes_used > file_len {
            return Err(ReadError::Truncated {
                len: file_len,
                bytes_used: sb.bytes_used,
            });
        }
        let len = sb.bytes_used;
        if len < SUPERBLOCK_SIZE as u64 {
            return Err(ReadError::SuperblockField {
                what: "bytes_used",
                value: len,
                reason: "smaller than the superblock".into(),
            });
        }
        let mut table_starts = vec![len];
        let mut check_table = |what: &'static str, start: u64, required: bool| {
            if start == TABLE_ABSENT && !required {
                return Ok(());
            }
            if start < SUPERBLOCK_SIZE as u64 || start >= len {
                return Err(ReadError::SuperblockField {
                    what,
                    value: start,
                    reason: format!("outside the image ({len} bytes used)"),
                });
            }
            table_starts.push(start);
            Ok(())
        };
        check_table("inode_table_start", sb.inode_table_start, true)?;
        check_table("directory_table_start", sb.directory_table_start, true)?;
        check_table("id_table_start", sb.id_table_start, true)?;
        check_table(
            "fragment_table_start",
            sb.fragment_table_start,
            sb.fragment_count > 0,
        )?;
        check_table("export_table_start", sb.export_table_start, false)?;
        check_table("xattr_id_table_start", sb.xattr_id_table_start, false)?;
        table_starts.sort_unstable();
        table_starts.dedup();
        let mut archive = Archive {
            backing,
            sb,
            len,
            ids: Vec::new(),
            table_starts,
            xattr_header: None,
            meta_cache: Lru::new(caches.metadata_blocks),
            fragment_cache: Lru::new(caches.fragments),
            data_cache: Lru::new(caches.data_blocks),
            store: OnceLock::new(),
        };
        archive.check_counts()?;
        archive.ids = archive.load_ids()?;
        archive.xattr_header = archive.load_xattr_header()?;
        Ok(archive)
    }

    fn check_counts(&self) -> Result<(), ReadError> {
        let sb = &self.sb;
        let inode_bytes = self.table_end(sb.inode_table_start) - sb.inode_table_start;
        let max = max_inodes_in(inode_bytes);
        if sb.inode_count == 0 || u64::from(sb.inode_count) > max {
            return Err(ReadError::SuperblockField {
                what: "inode_count",
                value: sb.inode_count.into(),
                reason: format!("impossible for an inode table of {inode_bytes} bytes"),
            });
        }
        if sb.id_count == 0 {
            return Err(ReadError::SuperblockField {
                what: "id_count",
                value: 0,
                reason: "every inode needs an owner".into(),
            });
        }
        // The pointer arrays of the two-level tables must fit in the image.
        let frag_blocks = u64::from(sb.fragment_count).div_ceil(entries_per_block(16));
        if sb.fragment_count > 0 {
            self.slice(
                "fragment table index",
                sb.fragment_table_start,
                frag_blocks * 8,
            )?;
        }
        let id_blocks = u64::from(sb.id_count).div_ceil(entries_per_block(4));
        self.slice("id table index", sb.id_table_start, id_blocks * 8)?;
        Ok(())
    }

    pub fn superblock(&self) -> &Superblock {
        &self.sb
    }

    /// The image's first bytes (its superblock).
    pub fn head(&self) -> &[u8] {
        let bytes = self.backing.bytes();
        &bytes[..bytes.len().min(SUPERBLOCK_SIZE)]
    }

    /// Use `store` for this archive's decompressed blocks: read from it
    /// before decompressing, offer it what was decompressed. Once only.
    pub fn attach_store(&self, store: BlockStore) -> bool {
        self.store.set(store).is_ok()
    }

    /// Write the attached store's file for the next runs (see
    /// [`BlockStore::finish`]); nothing without a store.
    pub fn finish_store(&self) {
        if let Some(store) = self.store.get() {
            store.finish();
        }
    }

    /// Whether a block store with blocks of earlier runs is attached.
    pub fn has_stored_blocks(&self) -> bool {
        self.store.get().is_some_and(|s| !s.is_empty())
    }

    /// The data blocks of `file` the block store holds, as (offset in the
    /// file, length), in file order: what earlier runs read of it, which
    /// the FUSE server may hand the kernel before it asks. Empty without a
    /// store or for anything but a regular file.
    pub fn stored_blocks(&self, file: &Node) -> Vec<(u64, usize)> {
        let (Some(store), InodeBody::File(f)) = (self.store.get(), &file.inode.body) else {
            return Vec::new();
        };
        let bs = u64::from(self.sb.block_size);
        f.block_sizes
            .iter()
            .zip(file.block_offsets.iter())
            .enumerate()
            .filter(|&(_, (&word, &at))| {
                word & DATA_SIZE_MASK != 0 && word & DATA_UNCOMPRESSED == 0 && store.holds(at)
            })
            .filter_map(|(i, _)| {
                let start = i as u64 * bs;
                let len =
                    format::bytes_in_block(f.file_size.saturating_sub(start), self.sb.block_size)
                        as usize;
                (len > 0).then_some((start, len))
            })
            .collect()
    }

    /// Decompress the block stored at image offset `key` (`raw`, at most
    /// `max` bytes out; `exact` when its size is known), or take it from
    /// the block store when that has it.
    fn inflate(
        &self,
        key: u64,
        raw: &[u8],
        max: usize,
        exact: Option<usize>,
    ) -> Result<Vec<u8>, DecompressError> {
        let Some(store) = self.store.get() else {
            return decompress(self.sb.compressor, raw, max);
        };
        if let Some(block) = store.get(key, max)
            && exact.is_none_or(|n| n == block.len())
        {
            return Ok(block);
        }
        let block = decompress(self.sb.compressor, raw, max)?;
        store.offer(key, &block);
        Ok(block)
    }

    /// `len` bytes at `offset`, checked against the used part of the image.
    fn slice(&self, what: &'static str, offset: u64, size: u64) -> Result<&[u8], ReadError> {
        // Within the used length, which is within the mapping: both ends
        // fit in a usize.
        let range = offset
            .checked_add(size)
            .filter(|&e| e <= self.len)
            .and_then(|end| Some(usize::try_from(offset).ok()?..usize::try_from(end).ok()?));
        match range {
            Some(range) => Ok(&self.backing.bytes()[range]),
            None => Err(ReadError::OutOfBounds {
                what,
                offset,
                size,
                len: self.len,
            }),
        }
    }

    fn read_u64_at(&self, what: &'static str, offset: u64) -> Result<u64, ReadError> {
        let b = self.slice(what, offset, 8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    /// Where the table (or area) starting at `start` must end: the next table
    /// start, or the end of the image.
    fn table_end(&self, start: u64) -> u64 {
        self.table_starts
            .iter()
            .copied()
            .find(|&s| s > start)
            .unwrap_or(self.len)
    }

    /// The metadata block at absolute `offset`, which must lie before `end`.
    fn metadata_block(
        &self,
        table: &'static str,
        offset: u64,
        end: u64,
    ) -> Result<Arc<MetaBlock>, ReadError> {
        if offset >= end {
            return Err(ReadError::MetadataBlock {
                table,
                offset,
                reason: format!("starts at or past the end of the table ({end})"),
            });
        }
        if let Some(block) = self.meta_cache.get(offset) {
            return Ok(block);
        }
        let header = self.slice("metadata block header", offset, 2)?;
        let header = u16::from_le_bytes([header[0], header[1]]);
        let stored = u64::from(header & !METADATA_UNCOMPRESSED);
        if stored == 0 || stored > METADATA_SIZE as u64 {
            return Err(ReadError::MetadataBlock {
                table,
                offset,
                reason: format!("stored length {stored} is not in 1..=8192"),
            });
        }
        let next = offset + 2 + stored;
        if next > end {
            return Err(ReadError::MetadataBlock {
                table,
                offset,
                reason: format!("its {stored} bytes run past the end of the table ({end})"),
            });
        }
        let raw = self.slice("metadata block", offset + 2, stored)?;
        let data = if header & METADATA_UNCOMPRESSED != 0 {
            raw.to_vec()
        } else {
            self.inflate(offset, raw, METADATA_SIZE, None)
                .map_err(|source| ReadError::Decompress {
                    what: "metadata block",
                    offset,
                    source,
                })?
        };
        let block = Arc::new(MetaBlock { data, next });
        self.meta_cache.insert(offset, block.clone());
        Ok(block)
    }

    /// A byte stream over the metadata blocks of a table, starting `offset`
    /// bytes into the block at absolute `block`.
    fn meta_reader(
        &self,
        table: &'static str,
        table_start: u64,
        block: u64,
        offset: u16,
    ) -> Result<MetaReader<'_>, ReadError> {
        let end = self.table_end(table_start);
        let first = self.metadata_block(table, block, end)?;
        if usize::from(offset) > first.data.len() {
            return Err(ReadError::MetadataBlock {
                table,
                offset: block,
                reason: format!(
                    "offset {offset} is past the {} bytes of the block",
                    first.data.len()
                ),
            });
        }
        Ok(MetaReader {
            archive: self,
            table,
            end,
            block_at: block,
            block: first,
            pos: usize::from(offset),
            error: None,
            consumed: 0,
        })
    }

    /// Entry `index` (of `entry_size` bytes) of a two-level table whose
    /// pointer array starts at `index_start`.
    fn table_entry(
        &self,
        table: &'static str,
        index_start: u64,
        entry_size: usize,
        index: u64,
        out: &mut [u8],
    ) -> Result<(), ReadError> {
        let per_block = entries_per_block(entry_size);
        let ptr_at = index_start
            .checked_add((index / per_block) * 8)
            .ok_or(ReadError::Limit {
                what: "table index",
                limit: u64::MAX,
            })?;
        let block = self.read_u64_at("table pointer", ptr_at)?;
        // Below per_block * entry_size, at most 8 KiB: an offset inside
        // the entry's block.
        let within = format::metadata_offset((index % per_block) * entry_size as u64);
        let mut reader = self.meta_reader(table, block, block, within)?;
        let location = format!("entry {index}");
        reader.finish("table entry", &location, |r| r.read_bytes(out))
    }

    fn load_ids(&self) -> Result<Vec<u32>, ReadError> {
        let count = self.sb.id_count;
        let mut ids = Vec::with_capacity(usize::from(count));
        let mut buf = [0u8; 4];
        // Read block by block: each pointer names a metadata block of up
        // to 2048 ids.
        for i in 0..count {
            self.table_entry(ID_TABLE, self.sb.id_table_start, 4, i.into(), &mut buf)?;
            ids.push(u32::from_le_bytes(buf));
        }
        Ok(ids)
    }

    fn load_xattr_header(&self) -> Result<Option<XattrTableHeader>, ReadError> {
        let start = self.sb.xattr_id_table_start;
        if start == TABLE_ABSENT {
            return Ok(None);
        }
        let bytes = self.slice(
            "xattr id table header",
            start,
            XattrTableHeader::SIZE as u64,
        )?;
        let header = XattrTableHeader::decode(&mut SliceSource::new(bytes)).map_err(|source| {
            ReadError::Decode {
                what: "xattr table header",
                table: XATTR_TABLE,
                location: format!("offset {start}"),
                source,
            }
        })?;
        if header.kv_start < SUPERBLOCK_SIZE as u64 || header.kv_start >= start {
            return Err(ReadError::SuperblockField {
                what: "xattr key/value start",
                value: header.kv_start,
                reason: format!("not before the xattr id table at {start}"),
            });
        }
        let blocks = u64::from(header.id_count).div_ceil(entries_per_block(XattrId::SIZE));
        self.slice(
            "xattr id table index",
            start + XattrTableHeader::SIZE as u64,
            blocks * 8,
        )?;
        Ok(Some(header))
    }

    /// The root directory.
    pub fn root(&self) -> Result<Node, ReadError> {
        let root = self.node(self.sb.root_inode)?;
        if !root.is_dir() {
            return Err(ReadError::WrongType {
                inode: inode_name(root.inode_ref),
                expected: "directory (the root)",
            });
        }
        Ok(root)
    }

    /// Decode the inode at `r` and check every index it holds.
    pub fn node(&self, r: InodeRef) -> Result<Node, ReadError> {
        let table_start = self.sb.inode_table_start;
        let block =
            table_start
                .checked_add(r.block_start())
                .ok_or_else(|| ReadError::BadInode {
                    inode: inode_name(r),
                    reason: "block offset overflows".into(),
                })?;
        let mut reader = self.meta_reader(INODE_TABLE, table_start, block, r.offset())?;
        let block_size = self.sb.block_size;
        let inode = reader.finish("inode", &inode_name(r), |src| {
            Inode::decode(src, block_size)
        })?;
        self.check_inode(r, inode)
    }

    fn check_inode(&self, r: InodeRef, inode: Inode) -> Result<Node, ReadError> {
        let name = || inode_name(r);
        let h = &inode.header;
        let id = |what, idx: u16| {
            self.ids
                .get(usize::from(idx))
                .copied()
                .ok_or_else(|| ReadError::IndexOutOfRange {
                    inode: name(),
                    what,
                    index: idx.into(),
                    count: self.ids.len() as u64,
                })
        };
        let uid = id("uid", h.uid_idx)?;
        let gid = id("gid", h.gid_idx)?;
        if h.inode_number == 0 || h.inode_number > self.sb.inode_count {
            return Err(ReadError::IndexOutOfRange {
                inode: name(),
                what: "inode number",
                index: h.inode_number.into(),
                count: self.sb.inode_count.into(),
            });
        }
        let xattr_idx = inode.body.xattr_idx();
        if xattr_idx != NO_XATTR {
            let count = self.xattr_header.map_or(0, |x| x.id_count);
            if xattr_idx >= count {
                return Err(ReadError::IndexOutOfRange {
                    inode: name(),
                    what: "xattr",
                    index: xattr_idx.into(),
                    count: count.into(),
                });
            }
        }
        let mut block_offsets: Arc<[u64]> = Arc::new([]);
        let (size, blocks, rdev) = match &inode.body {
            InodeBody::Dir(d) => {
                if d.file_size < DIR_SIZE_BIAS {
                    return Err(ReadError::Directory {
                        inode: name(),
                        reason: format!("size {} is below the minimum of 3", d.file_size),
                    });
                }
                let size = u64::from(d.file_size);
                (size, size.div_ceil(512), 0)
            }
            InodeBody::File(f) => {
                block_offsets = self.file_block_offsets(r, f)?.into();
                let stored = f.file_size.saturating_sub(f.sparse);
                (f.file_size, stored.div_ceil(512), 0)
            }
            InodeBody::Symlink(s) => (s.target.len() as u64, 0, 0),
            InodeBody::BlockDev(d) | InodeBody::CharDev(d) => {
                let (major, minor) = format::decode_rdev(d.rdev);
                (0, 0, libc::makedev(major, minor))
            }
            InodeBody::Fifo(_) | InodeBody::Socket(_) => (0, 0, 0),
        };
        let stat = Stat {
            ino: h.inode_number.into(),
            mode: inode.body.file_type_bits() | u32::from(h.permissions & 0o7777),
            nlink: inode.body.link_count(),
            uid,
            gid,
            rdev,
            size,
            blocks,
            mtime: i64::from(h.mtime),
        };
        Ok(Node {
            inode_ref: r,
            inode: Arc::new(inode),
            stat,
            block_offsets,
        })
    }

    /// Where each data block of a file starts, with every size word and the
    /// fragment index checked.
    fn file_block_offsets(
        &self,
        r: InodeRef,
        f: &format::FileInode,
    ) -> Result<Vec<u64>, ReadError> {
        if f.frag_index != NO_FRAGMENT && f.frag_index >= self.sb.fragment_count {
            return Err(ReadError::IndexOutOfRange {
                inode: inode_name(r),
                what: "fragment",
                index: f.frag_index.into(),
                count: self.sb.fragment_count.into(),
            });
        }
        let mut offsets = Vec::with_capacity(f.block_sizes.len());
        let mut at = f.blocks_start;
        for (i, &word) in f.block_sizes.iter().enumerate() {
            let stored = u64::from(word & DATA_SIZE_MASK);
            if stored > u64::from(self.sb.block_size)
                || word & !(DATA_SIZE_MASK | DATA_UNCOMPRESSED) != 0
            {
                return Err(ReadError::DataBlock {
                    inode: inode_name(r),
                    block: i as u64,
                    offset: at,
                    reason: format!(
                        "size word {word:#x} is larger than the block size {}",
                        self.sb.block_size
                    ),
                });
            }
            offsets.push(at);
            at = match at.checked_add(stored).filter(|&e| e <= self.len) {
                Some(e) => e,
                None => {
                    return Err(ReadError::DataBlock {
                        inode: inode_name(r),
                        block: i as u64,
                        offset: at,
                        reason: format!("{stored} bytes run past the end of the image"),
                    });
                }
            };
        }
        Ok(offsets)
    }

    /// Every entry of a directory, in stored (sorted) order.
    pub fn read_dir(&self, dir: &Node) -> Result<Vec<DirEntry>, ReadError> {
        let mut out = Vec::new();
        self.scan_dir(dir, None, |e| {
            out.push(e);
            Ok(true)
        })?;
        Ok(out)
    }

    /// Look up one name in a directory, using the directory index of an
    /// extended directory inode to skip to the right metadata block.
    pub fn lookup(&self, dir: &Node, name: &[u8]) -> Result<Option<Node>, ReadError> {
        let d = dir_inode(dir)?;
        // The last index entry whose first name is <= name: the listing is
        // sorted, so `name` can only be at or after that point.
        let start = d
            .index
            .iter()
            .take_while(|e| e.name.as_slice() <= name)
            .last()
            .map(|e| (e.start, e.index));
        let mut found = None;
        self.scan_dir(dir, start, |e| match e.name.as_slice().cmp(name) {
            std::cmp::Ordering::Less => Ok(true),
            std::cmp::Ordering::Equal => {
                found = Some(e.inode_ref);
                Ok(false)
            }
            std::cmp::Ordering::Greater => Ok(false),
        })?;
        found.map(|r| self.node(r)).transpose()
    }

    /// Resolve a path from the root (`/a/b`, `a/b`; `.` and empty components
    /// are skipped, `..` goes up). Symlinks are not followed: a symlink in
    /// the middle is not a directory (`None`), one at the end is returned.
    pub fn lookup_path(&self, path: &[u8]) -> Result<Option<Node>, ReadError> {
        self.walk_path(path, false)
    }

    /// Resolve a path from the root as the kernel would for `execve`:
    /// like [`Archive::lookup_path`], but following symlinks, in the middle
    /// (`/bin -> usr/bin`) and at the end, relative ones from their
    /// directory. `None` when a component is missing, not a directory, or
    /// after 40 links (the kernel's ELOOP limit).
    pub fn follow_path(&self, path: &[u8]) -> Result<Option<Node>, ReadError> {
        self.walk_path(path, true)
    }

    /// The one path walker behind [`Archive::lookup_path`] and
    /// [`Archive::follow_path`]. A hostile image cannot make it loop or climb
    /// out: `..` stops at the root, and at most [`MAX_SYMLINKS`] links are
    /// followed (a cycle ends as `None`), so the pending components never
    /// hold more than the path and 40 link targets.
    fn walk_path(&self, path: &[u8], follow_symlinks: bool) -> Result<Option<Node>, ReadError> {
        // Components still to walk: borrowed from `path`, owned when they
        // come from a symlink's target (spliced in front of the rest).
        let mut todo: VecDeque<Cow<'_, [u8]>> =
            path.split(|&b| b == b'/').map(Cow::Borrowed).collect();
        let mut stack = vec![self.root()?];
        let mut links = 0;
        while let Some(part) = todo.pop_front() {
            match &*part {
                b"" | b"." => {}
                b".." => {
                    if stack.len() > 1 {
                        stack.pop();
                    }
                }
                name => {
                    let Some(cur) = stack.last() else {
                        return Ok(None);
                    };
                    if !cur.is_dir() {
                        return Ok(None);
                    }
                    let Some(node) = self.lookup(cur, name)? else {
                        return Ok(None);
                    };
                    if !follow_symlinks || !node.is_symlink() {
                        stack.push(node);
                        continue;
                    }
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Ok(None);
                    }
                    let target = self.read_link(&node)?;
                    if target.first() == Some(&b'/') {
                        stack.truncate(1);
                    }
                    for comp in target.split(|&b| b == b'/').rev() {
                        todo.push_front(Cow::Owned(comp.to_vec()));
                    }
                }
            }
        }
        Ok(stack.pop())
    }

    /// Decompress up to `max_blocks` data blocks of a file into the data
    /// cache, in file order, skipping blocks already there: a warm-up ahead
    /// of a reader that will want them (the FUSE server does this for the
    /// job's program while the container is still being set up). Returns
    /// how many blocks it loaded (decompressed, or read from the block
    /// store).
    pub fn prefetch(&self, file: &Node, max_blocks: usize) -> Result<usize, ReadError> {
        self.prefetch_from(file, 0, max_blocks)
    }

    /// [`Archive::prefetch`] from data block `first` on.
    pub fn prefetch_from(
        &self,
        file: &Node,
        first: usize,
        max_blocks: usize,
    ) -> Result<usize, ReadError> {
        let InodeBody::File(f) = &file.inode.body else {
            return Ok(0);
        };
        let bs = u64::from(self.sb.block_size);
        let mut done = 0;
        for (i, &word) in f
            .block_sizes
            .iter()
            .enumerate()
            .skip(first)
            .take(max_blocks)
        {
            if word & DATA_SIZE_MASK == 0 || word & DATA_UNCOMPRESSED != 0 {
                continue;
            }
            let Some(&at) = file.block_offsets.get(i) else {
                break;
            };
            if self.data_cache.get(at).is_some() {
                continue;
            }
            let expected =
                format::bytes_in_block(f.file_size - i as u64 * bs, self.sb.block_size) as usize;
            self.block_bytes(file, f, i, expected)?;
            done += 1;
        }
        Ok(done)
    }

    /// Walk a directory listing, calling `visit` for each entry until it
    /// returns `Ok(false)`. `start` = (directory-table block, byte offset in
    /// the listing) from the directory index.
    fn scan_dir(
        &self,
        dir: &Node,
        start: Option<(u32, u32)>,
        mut visit: impl FnMut(DirEntry) -> Result<bool, ReadError>,
    ) -> Result<(), ReadError> {
        let d = dir_inode(dir)?;
        let dname = || inode_name(dir.inode_ref);
        let listing = u64::from(d.file_size - DIR_SIZE_BIAS);
        let (block_rel, skipped) = match start {
            Some((block, index)) => (u64::from(block), u64::from(index)),
            None => (u64::from(d.block_start), 0),
        };
        if listing == 0 {
            return Ok(());
        }
        if skipped >= listing {
            return Err(ReadError::Directory {
                inode: dname(),
                reason: format!("index position {skipped} is past the listing of {listing} bytes"),
            });
        }
        let offset = format::metadata_offset(u64::from(d.block_offset) + skipped);
        let table_start = self.sb.directory_table_start;
        let mut reader = self.meta_reader(
            DIRECTORY_TABLE,
            table_start,
            table_start.saturating_add(block_rel),
            offset,
        )?;
        let left = listing - skipped;
        let inode_count = self.sb.inode_count;
        while reader.consumed < left {
            let header = reader.finish("directory header", &dname(), format::DirHeader::decode)?;
            for _ in 0..header.count {
                let e = reader.finish("directory entry", &dname(), format::DirEntry::decode)?;
                if reader.consumed > left {
                    return Err(ReadError::Directory {
                        inode: dname(),
                        reason: format!("entries run past the listing size of {listing} bytes"),
                    });
                }
                check_name(dir.inode_ref, &e.name)?;
                if !(1..=7).contains(&e.inode_type) {
                    return Err(ReadError::Directory {
                        inode: dname(),
                        reason: format!(
                            "entry {:?} has unknown type {}",
                            String::from_utf8_lossy(&e.name),
                            e.inode_type
                        ),
                    });
                }
                let ino = i64::from(header.inode_number) + i64::from(e.inode_delta);
                let Some(ino) = u32::try_from(ino)
                    .ok()
                    .filter(|i| (1..=inode_count).contains(i))
                else {
                    return Err(ReadError::Directory {
                        inode: dname(),
                        reason: format!(
                            "entry {:?} has inode number {ino}, outside 1..={inode_count}",
                            String::from_utf8_lossy(&e.name)
                        ),
                    });
                };
                let entry = DirEntry {
                    inode_ref: InodeRef::new(u64::from(header.start), e.offset),
                    ino,
                    inode_type: e.inode_type,
                    name: e.name,
                };
                if !visit(entry)? {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// The target of a symlink.
    pub fn read_link(&self, node: &Node) -> Result<Vec<u8>, ReadError> {
        match &node.inode.body {
            InodeBody::Symlink(s) => Ok(s.target.clone()),
            _ => Err(ReadError::WrongType {
                inode: inode_name(node.inode_ref),
                expected: "symlink",
            }),
        }
    }

    pub fn stat(&self, node: &Node) -> Stat {
        node.stat
    }

    /// A regular file's whole content when it is at most `max` bytes;
    /// `None` for anything else (a directory, a link, a larger file). For
    /// the small files read out of an image before it is mounted (its
    /// stored config, /etc/passwd).
    pub fn read_whole(&self, file: &Node, max: u64) -> Result<Option<Vec<u8>>, ReadError> {
        let size = file.stat().size;
        let Some(len) = usize::try_from(size)
            .ok()
            .filter(|_| file.is_file() && size <= max)
        else {
            return Ok(None);
        };
        let mut bytes = vec![0u8; len];
        let mut filled = 0;
        while filled < len {
            let n = self.read_at(file, filled as u64, &mut bytes[filled..])?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        bytes.truncate(filled);
        Ok(Some(bytes))
    }

    /// Read file bytes at `offset` into `buf`; returns how many were read
    /// (0 at or past the end). Touches only the blocks that cover the range;
    /// holes are zeroes without any image access.
    pub fn read_at(&self, file: &Node, offset: u64, buf: &mut [u8]) -> Result<usize, ReadError> {
        let f = file_inode(file)?;
        if offset >= f.file_size {
            return Ok(0);
        }
        let want = capped_len(f.file_size - offset, buf.len());
        let bs = u64::from(self.sb.block_size);
        let mut done = 0usize;
        while done < want {
            let pos = offset + done as u64;
            let block = pos / bs;
            let within = format::offset_in_block(pos, self.sb.block_size) as usize;
            let n;
            if let Some(index) = block_index(f, block) {
                let expected =
                    format::bytes_in_block(f.file_size - block * bs, self.sb.block_size) as usize;
                n = (expected - within).min(want - done);
                let out = &mut buf[done..done + n];
                match self.block_bytes(file, f, index, expected)? {
                    BlockBytes::Hole => out.fill(0),
                    BlockBytes::Raw(raw) => out.copy_from_slice(&raw[within..within + n]),
                    BlockBytes::Cached(data) => out.copy_from_slice(&data[within..within + n]),
                }
            } else {
                let (frag, from, left) = self.tail(file, f, block, within)?;
                n = left.min(want - done);
                buf[done..done + n].copy_from_slice(&frag[from..from + n]);
            }
            done += n;
        }
        Ok(done)
    }

    /// Call `with` on up to `len` bytes of `file` at `offset` (none at or
    /// past the end), without a copy when they lie in one block or in the
    /// file's tail: the cached decompressed block (or the image's own bytes
    /// for a block stored raw) is lent out. The FUSE server replies from
    /// it: a copy and a zero-fill less per request. Anything else (a range
    /// over two blocks, a hole) goes through a buffer.
    pub fn with_bytes<R>(
        &self,
        file: &Node,
        offset: u64,
        len: usize,
        with: impl FnOnce(&[u8]) -> R,
    ) -> Result<R, ReadError> {
        let f = file_inode(file)?;
        if offset >= f.file_size {
            return Ok(with(&[]));
        }
        let want = capped_len(f.file_size - offset, len);
        let bs = u64::from(self.sb.block_size);
        let block = offset / bs;
        let within = format::offset_in_block(offset, self.sb.block_size) as usize;
        if let Some(index) = block_index(f, block) {
            let expected =
                format::bytes_in_block(f.file_size - block * bs, self.sb.block_size) as usize;
            if within + want <= expected {
                match self.block_bytes(file, f, index, expected)? {
                    BlockBytes::Raw(raw) => return Ok(with(&raw[within..within + want])),
                    BlockBytes::Cached(data) => return Ok(with(&data[within..within + want])),
                    BlockBytes::Hole => {}
                }
            }
        } else {
            let (frag, from, left) = self.tail(file, f, block, within)?;
            if want <= left {
                return Ok(with(&frag[from..from + want]));
            }
        }
        let mut buf = vec![0u8; want];
        let n = self.read_at(file, offset, &mut buf)?;
        Ok(with(&buf[..n]))
    }

    /// The fragment holding `file`'s tail, where the byte `within` the
    /// tail's block `block` starts in it, and how many tail bytes follow.
    fn tail(
        &self,
        file: &Node,
        f: &format::FileInode,
        block: u64,
        within: usize,
    ) -> Result<(Arc<Vec<u8>>, usize, usize), ReadError> {
        let bs = u64::from(self.sb.block_size);
        let tail_start = f.block_sizes.len() as u64 * bs;
        let tail_len =
            format::bytes_in_block(f.file_size - tail_start, self.sb.block_size) as usize;
        if f.frag_index == NO_FRAGMENT || block * bs != tail_start {
            return Err(ReadError::BadInode {
                inode: inode_name(file.inode_ref),
                reason: format!(
                    "file of {} bytes has {} blocks and no fragment for the rest",
                    f.file_size,
                    f.block_sizes.len()
                ),
            });
        }
        let left = tail_len - within;
        let frag = self.fragment(file, f.frag_index)?;
        let from = (f.frag_offset as usize)
            .checked_add(within)
            .filter(|&s| s + left <= frag.len())
            .ok_or_else(|| ReadError::BadInode {
                inode: inode_name(file.inode_ref),
                reason: format!(
                    "tail of {tail_len} bytes at offset {} is outside fragment {} ({} bytes)",
                    f.frag_offset,
                    f.frag_index,
                    frag.len()
                ),
            })?;
        Ok((frag, from, left))
    }

    /// Data block `i` of `file` (`expected` bytes once decompressed): a
    /// hole, the image's bytes of a block stored raw, or the decompressed
    /// block from the cache.
    fn block_bytes(
        &self,
        file: &Node,
        f: &format::FileInode,
        i: usize,
        expected: usize,
    ) -> Result<BlockBytes<'_>, ReadError> {
        let word = f.block_sizes[i];
        let stored = u64::from(word & DATA_SIZE_MASK);
        if stored == 0 {
            return Ok(BlockBytes::Hole);
        }
        let at = file
            .block_offsets
            .get(i)
            .copied()
            .ok_or_else(|| ReadError::BadInode {
                inode: inode_name(file.inode_ref),
                reason: format!("no offset for block {i}"),
            })?;
        let bad = |reason: String| ReadError::DataBlock {
            inode: inode_name(file.inode_ref),
            block: i as u64,
            offset: at,
            reason,
        };
        if word & DATA_UNCOMPRESSED != 0 {
            // Stored raw: straight out of the mapping, no cache.
            if stored != expected as u64 {
                return Err(bad(format!(
                    "stored uncompressed with {stored} bytes, expected {expected}"
                )));
            }
            return Ok(BlockBytes::Raw(self.slice("data block", at, stored)?));
        }
        let data = self.data_cache.get_or_load(at, || {
            let raw = self.slice("data block", at, stored)?;
            self.inflate(at, raw, expected, Some(expected))
                .map(Arc::new)
                .map_err(|e| bad(e.to_string()))
        })?;
        // The same offset may be claimed by two files with different sizes
        // in a hostile image: check the cached block against this file.
        if data.len() != expected {
            return Err(bad(format!(
                "decompressed to {} bytes, expected {expected}",
                data.len()
            )));
        }
        Ok(BlockBytes::Cached(data))
    }

    /// The decompressed fragment block `index`.
    fn fragment(&self, file: &Node, index: u32) -> Result<Arc<Vec<u8>>, ReadError> {
        let entry = self.fragment_entry(index)?;
        self.fragment_cache
            .get_or_load(entry.start, || self.load_fragment(file, index, &entry))
    }

    fn load_fragment(
        &self,
        file: &Node,
        index: u32,
        entry: &FragmentEntry,
    ) -> Result<Arc<Vec<u8>>, ReadError> {
        let stored = u64::from(entry.size & DATA_SIZE_MASK);
        let bad = |reason: String| ReadError::DataBlock {
            inode: inode_name(file.inode_ref),
            block: u64::from(index),
            offset: entry.start,
            reason: format!("fragment {index}: {reason}"),
        };
        if stored == 0
            || stored > u64::from(self.sb.block_size)
            || entry.size & !(DATA_SIZE_MASK | DATA_UNCOMPRESSED) != 0
        {
            return Err(bad(format!("bad size word {:#x}", entry.size)));
        }
        let raw = self.slice("fragment block", entry.start, stored)?;
        let data = if entry.size & DATA_UNCOMPRESSED != 0 {
            raw.to_vec()
        } else {
            self.inflate(entry.start, raw, self.sb.block_size as usize, None)
                .map_err(|e| bad(e.to_string()))?
        };
        Ok(Arc::new(data))
    }

    /// The node's extended attributes, with full names (`user.foo`).
    pub fn xattrs(&self, node: &Node) -> Result<Vec<Xattr>, ReadError> {
        let idx = node.inode.body.xattr_idx();
        if idx == NO_XATTR {
            return Ok(Vec::new());
        }
        let name = || inode_name(node.inode_ref);
        let header = self.xattr_header.ok_or_else(|| ReadError::Xattr {
            inode: name(),
            reason: "the image has no xattr table".into(),
        })?;
        let mut buf = [0u8; XattrId::SIZE];
        self.table_entry(
            XATTR_TABLE,
            self.sb.xattr_id_table_start + XattrTableHeader::SIZE as u64,
            XattrId::SIZE,
            idx.into(),
            &mut buf,
        )?;
        let id =
            XattrId::decode(&mut SliceSource::new(&buf)).map_err(|source| ReadError::Decode {
                what: "xattr id",
                table: XATTR_TABLE,
                location: format!("entry {idx}"),
                source,
            })?;
        let kv = header.kv_start;
        let at = |r: u64| kv.saturating_add(r >> 16);
        let mut reader = self.meta_reader(
            XATTR_TABLE,
            kv,
            at(id.xattr_ref),
            InodeRef(id.xattr_ref).offset(),
        )?;
        let mut out = Vec::new();
        let loc = name();
        for _ in 0..id.count {
            let (ty, key) = reader.finish("xattr key", &loc, |r| {
                let ty = r.read_u16()?;
                let len = usize::from(r.read_u16()?);
                if len > 255 {
                    return Err(FormatError::NameTooLong(len));
                }
                Ok((ty, r.read_vec(len)?))
            })?;
            let full = format::join_xattr_name(ty, &key).ok_or_else(|| ReadError::Xattr {
                inode: name(),
                reason: format!("unknown xattr type {ty}"),
            })?;
            let read_value = |r: &mut MetaReader<'_>| {
                r.finish("xattr value", &loc, |r| {
                    let len = r.read_u32()? as usize;
                    // XATTR_SIZE_MAX: the kernel refuses bigger values.
                    if len > 65536 {
                        return Err(FormatError::OutOfRange {
                            what: "xattr value size",
                            value: len as u64,
                        });
                    }
                    r.read_vec(len)
                })
            };
            let value = if ty & format::xattr_type::OUT_OF_LINE != 0 {
                // The value is a u64 reference to a value stored elsewhere.
                let raw = read_value(&mut reader)?;
                let r = raw
                    .get(..8)
                    .map(|b| {
                        let mut a = [0u8; 8];
                        a.copy_from_slice(b);
                        u64::from_le_bytes(a)
                    })
                    .ok_or_else(|| ReadError::Xattr {
                        inode: name(),
                        reason: "out-of-line value reference shorter than 8 bytes".into(),
                    })?;
                let mut other = self.meta_reader(XATTR_TABLE, kv, at(r), InodeRef(r).offset())?;
                read_value(&mut other)?
            } else {
                read_value(&mut reader)?
            };
            out.push((full, value));
        }
        Ok(out)
    }
}

fn dir_inode(node: &Node) -> Result<&format::DirInode, ReadError> {
    match &node.inode.body {
        InodeBody::Dir(d) => Ok(d),
        _ => Err(ReadError::WrongType {
            inode: inode_name(node.inode_ref),
            expected: "directory",
        }),
    }
}

/// A name from a hostile image must be one path component.
fn check_name(dir: InodeRef, name: &[u8]) -> Result<(), ReadError> {
    let reason = if name.is_empty() {
        "empty"
    } else if name == b"." || name == b".." {
        "is . or .."
    } else if name.contains(&b'/') {
        "contains '/'"
    } else if name.contains(&0) {
        "contains a NUL byte"
    } else {
        return Ok(());
    };
    Err(ReadError::BadName {
        inode: inode_name(dir),
        name: String::from_utf8_lossy(name).into_owned(),
        reason,
    })
}

/// A [`ByteSource`] over consecutive metadata blocks of one table. Errors
/// below the format layer (bounds, decompression) are kept in `error`, since
/// `ByteSource` can only report [`FormatError`]s.
struct MetaReader<'a> {
    archive: &'a Archive,
    table: &'static str,
    end: u64,
    block_at: u64,
    block: Arc<MetaBlock>,
    pos: usize,
    error: Option<ReadError>,
    /// Bytes read so far (directory listings are measured in these).
    consumed: u64,
}

impl MetaReader<'_> {
    /// Run a decode step, turning its failure into a [`ReadError`] that
    /// names what was decoded and where.
    fn finish<T>(
        &mut self,
        what: &'static str,
        location: &str,
        step: impl FnOnce(&mut Self) -> Result<T, FormatError>,
    ) -> Result<T, ReadError> {
        let at = (self.block_at, self.pos);
        match step(self) {
            Ok(v) => Ok(v),
            Err(source) => Err(self.error.take().unwrap_or_else(|| ReadError::Decode {
                what,
                table: self.table,
                location: format!("{location} (metadata block {}, offset {})", at.0, at.1),
                source,
            })),
        }
    }
}

impl ByteSource for MetaReader<'_> {
    fn read_bytes(&mut self, buf: &mut [u8]) -> Result<(), FormatError> {
        let mut done = 0;
        while done < buf.len() {
            if self.pos >= self.block.data.len() {
                let next = self.block.next;
                match self.archive.metadata_block(self.table, next, self.end) {
                    Ok(b) => {
                        self.block = b;
                        self.block_at = next;
                        self.pos = 0;
                    }
                    Err(e) => {
                        self.error = Some(e);
                        return Err(FormatError::Truncated {
                            needed: buf.len() - done,
                        });
                    }
                }
                continue;
            }
            let n = (buf.len() - done).min(self.block.data.len() - self.pos);
            buf[done..done + n].copy_from_slice(&self.block.data[self.pos..self.pos + n]);
            self.pos += n;
            done += n;
        }
        self.consumed += buf.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::squashfs::format::{
        CompressorId, DirHeader, FileInode, InodeHeader, flags, inode_type,
    };

    /// Raw bytes as uncompressed metadata blocks (2-byte header each).
    fn metadata_blocks(raw: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in raw.chunks(METADATA_SIZE) {
            let header = format::raw_metadata_header(chunk.len()).expect("at most 8 KiB");
            out.extend_from_slice(&header.to_le_bytes());
            out.extend_from_slice(chunk);
        }
        out
    }

    /// A tiny image: a root directory holding one file whose inode
    /// straddles the first two inode-table metadata blocks.
    fn synthetic_image(file_at: u16) -> Vec<u8> {
        let header = |ty, n| InodeHeader {
            inode_type: ty,
            permissions: 0o640,
            uid_idx: 0,
            gid_idx: 0,
            mtime: 1234,
            inode_number: n,
        };
        let data_start = SUPERBLOCK_SIZE as u64;
        let content = b"hello, straddling inode";
        let mut dir_listing = Vec::new();
        DirHeader {
            count: 1,
            start: 0,
            inode_number: 2,
        }
        .encode(&mut dir_listing);
        format::DirEntry {
            offset: file_at,
            inode_delta: 0,
            inode_type: inode_type::BASIC_FILE,
            name: b"f".to_vec(),
        }
        .encode(&mut dir_listing)
        .expect("encode entry");
        let mut inodes = Vec::new();
        Inode {
            header: header(inode_type::BASIC_DIR, 1),
            body: InodeBody::Dir(format::DirInode {
                extended: false,
                block_start: 0,
                block_offset: 0,
                file_size: u32::try_from(dir_listing.len()).expect("small") + DIR_SIZE_BIAS,
                link_count: 2,
                parent_inode: 3,
                xattr_idx: NO_XATTR,
                index: Vec::new(),
            }),
        }
        .encode(&mut inodes)
        .expect("encode dir");
        inodes.resize(usize::from(file_at), 0xEE);
        Inode {
            header: header(inode_type::BASIC_FILE, 2),
            body: InodeBody::File(FileInode {
                extended: false,
                blocks_start: data_start,
                file_size: content.len() as u64,
                sparse: 0,
                link_count: 1,
                frag_index: NO_FRAGMENT,
                frag_offset: 0,
                xattr_idx: NO_XATTR,
                block_sizes: vec![format::data_size_word(content.len(), true).expect("small")],
            }),
        }
        .encode(&mut inodes)
        .expect("encode file");
        let mut image = vec![0u8; SUPERBLOCK_SIZE];
        image.extend_from_slice(content);
        let inode_table_start = image.len() as u64;
        image.extend(metadata_blocks(&inodes));
        let directory_table_start = image.len() as u64;
        image.extend(metadata_blocks(&dir_listing));
        let id_block = image.len() as u64;
        image.extend(metadata_blocks(&1000u32.to_le_bytes()));
        let id_table_start = image.len() as u64;
        image.extend_from_slice(&id_block.to_le_bytes());
        let sb = Superblock {
            inode_count: 2,
            mkfs_time: 0,
            block_size: 4096,
            fragment_count: 0,
            compressor: CompressorId::Gzip,
            block_log: 12,
            flags: flags::NO_FRAGMENTS | flags::NO_XATTRS,
            id_count: 1,
            root_inode: InodeRef::new(0, 0),
            bytes_used: image.len() as u64,
            id_table_start,
            xattr_id_table_start: TABLE_ABSENT,
            inode_table_start,
            directory_table_start,
            fragment_table_start: TABLE_ABSENT,
            export_table_start: TABLE_ABSENT,
        };
        let mut sb_bytes = Vec::new();
        sb.encode(&mut sb_bytes);
        image[..SUPERBLOCK_SIZE].copy_from_slice(&sb_bytes);
        image
    }

    #[test]
    fn inode_straddling_two_metadata_blocks_decodes() {
        for file_at in [40u16, 8180, 8190, 8191] {
            let a = Archive::from_bytes(synthetic_image(file_at)).expect("open");
            let root = a.root().expect("root");
            let entries = a.read_dir(&root).expect("readdir");
            assert_eq!(entries.len(), 1);
            assert_eq!(entries[0].name, b"f");
            assert_eq!(entries[0].ino, 2);
            let f = a.lookup(&root, b"f").expect("lookup").expect("found");
            assert_eq!(f.inode_ref(), InodeRef::new(0, file_at));
            let st = a.stat(&f);
            assert_eq!(st.mode, libc::S_IFREG | 0o640);
            assert_eq!((st.uid, st.gid, st.mtime, st.nlink), (1000, 1000, 1234, 1));
            let mut buf = [0u8; 64];
            let n = a.read_at(&f, 0, &mut buf).expect("read");
            assert_eq!(&buf[..n], b"hello, straddling inode");
            assert_eq!(a.read_at(&f, 7, &mut buf[..5]).expect("read"), 5);
            assert_eq!(&buf[..5], b"strad");
            assert_eq!(a.read_at(&f, 100, &mut buf).expect("read"), 0);
            assert!(a.lookup(&root, b"g").expect("lookup").is_none());
            assert!(fuzz_walk(&synthetic_image(file_at)).is_ok());
        }
    }

    #[test]
    fn inode_ref_past_the_table_is_an_error_naming_it() {
        let a = Archive::from_bytes(synthetic_image(40)).expect("open");
        let err = a.node(InodeRef::new(1 << 20, 0)).expect_err("out of table");
        assert!(err.to_string().contains("inode table"), "{err}");
        let err = a
            .node(InodeRef::new(0, 9000))
            .expect_err("offset past block");
        assert!(err.to_string().contains("offset 9000"), "{err}");
    }

    #[test]
    fn names_must_be_single_components() {
        let r = InodeRef(0);
        for ok in [&b"a"[..], b"...", b".a", b"a b", &[0xff, 0xfe]] {
            assert!(check_name(r, ok).is_ok(), "{ok:?}");
        }
        for bad in [&b""[..], b".", b"..", b"a/b", b"/", b"a\0"] {
            assert!(check_name(r, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn inode_count_bound_grows_with_the_table() {
        assert!(max_inodes_in(0) >= 409);
        assert!(max_inodes_in(231) > 1000);
        assert!(max_inodes_in(231) < u64::from(u32::MAX));
        assert_eq!(max_inodes_in(u64::MAX), u64::MAX);
    }

    /// A real image from the writer: merged-/usr style links, a link
    /// chain, an absolute link, a loop, and a 3-block file.
    fn linked_image(dir: &Path) -> Archive {
        use crate::squashfs::writer::{EntryMeta, Writer, WriterOptions};
        let path = dir.join("links.sqfs");
        let meta = |mode| EntryMeta {
            mode,
            ..EntryMeta::default()
        };
        let options = WriterOptions {
            block_size: 4096,
            ..WriterOptions::default()
        };
        let mut w = Writer::create(&path, options).expect("create");
        w.add_dir(b"usr", meta(0o755)).expect("usr");
        w.add_dir(b"usr/bin", meta(0o755)).expect("usr/bin");
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        w.add_file(b"usr/bin/busybox", meta(0o755), &mut &data[..])
            .expect("busybox");
        w.add_symlink(b"usr/bin/true", meta(0o777), b"busybox")
            .expect("true");
        w.add_symlink(b"bin", meta(0o777), b"usr/bin").expect("bin");
        w.add_dir(b"sbin", meta(0o755)).expect("sbin");
        w.add_symlink(b"sbin/init", meta(0o777), b"/bin/../bin/true")
            .expect("init");
        w.add_symlink(b"loop-a", meta(0o777), b"loop-b").expect("a");
        w.add_symlink(b"loop-b", meta(0o777), b"loop-a").expect("b");
        w.finish().expect("finish");
        Archive::open(&path).expect("open")
    }

    #[test]
    fn follow_path_follows_links_like_execve() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = linked_image(dir.path());
        let busybox = a
            .lookup_path(b"usr/bin/busybox")
            .expect("read")
            .expect("found");
        for path in [
            &b"/bin/true"[..],
            b"/usr/bin/true",
            b"bin/busybox",
            b"/sbin/init",
            b"/sbin/../bin/./true",
        ] {
            let got = a.follow_path(path).expect("read").expect("resolves");
            assert_eq!(got.inode_ref(), busybox.inode_ref(), "{path:?}");
        }
        assert!(a.follow_path(b"/bin/false").expect("read").is_none());
        assert!(a.follow_path(b"/bin/true/x").expect("read").is_none());
        assert!(a.follow_path(b"/loop-a").expect("read").is_none());
        assert!(a.follow_path(b"/").expect("read").expect("root").is_dir());
    }

    #[test]
    fn the_block_store_is_read_before_decompressing_and_filled_after() {
        let dir = tempfile::tempdir().expect("tempdir");
        let want: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let read_all = |a: &Archive| {
            let file = a
                .follow_path(b"/bin/busybox")
                .expect("read")
                .expect("found");
            let mut buf = vec![0u8; 10_000];
            assert_eq!(a.read_at(&file, 0, &mut buf).expect("read"), 10_000);
            buf
        };
        let options = |id: u8| StoreOptions {
            dir: dir.path().join("store"),
            budget: 1 << 20,
            identity: [id; 32],
            secret: crate::trust::UserSecret::from_bytes([9; 32]),
        };
        // A first run fills the store: metadata, data blocks, the fragment.
        let a = linked_image(dir.path());
        assert!(a.attach_store(BlockStore::open(options(1)).expect("store")));
        assert_eq!(read_all(&a), want);
        a.finish_store();
        let store = BlockStore::open(options(1)).expect("store");
        assert!(store.len() >= 4, "{} blocks kept", store.len());
        // The next one reads the same bytes through it.
        let b = linked_image(dir.path());
        assert!(b.attach_store(store));
        assert_eq!(read_all(&b), want);
        // And the store wins over the image: a block it holds is not
        // decompressed again (a fabricated one shows through).
        let c = linked_image(dir.path());
        let file = c
            .follow_path(b"/bin/busybox")
            .expect("read")
            .expect("found");
        let first = file.block_offsets[0];
        let fabricated = BlockStore::open(options(2)).expect("store");
        fabricated.offer(first, &[0x5a; 4096]);
        fabricated.finish();
        assert!(c.attach_store(BlockStore::open(options(2)).expect("store")));
        let mut buf = vec![0u8; 4096];
        c.read_at(&file, 0, &mut buf).expect("read");
        assert_eq!(buf, vec![0x5a; 4096]);
        // A block of the wrong size for the file is not used.
        let d = linked_image(dir.path());
        let wrong = BlockStore::open(options(3)).expect("store");
        wrong.offer(first, &[0x5a; 100]);
        wrong.finish();
        assert!(d.attach_store(BlockStore::open(options(3)).expect("store")));
        assert_eq!(read_all(&d), want);
    }

    #[test]
    fn lookup_path_does_not_follow_links() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = linked_image(dir.path());
        // A link at the end is the link itself, a link in the middle is not
        // a directory.
        for path in [&b"/bin"[..], b"usr/bin/true", b"/loop-a", b"sbin/init"] {
            let got = a.lookup_path(path).expect("read").expect("found");
            assert!(got.is_symlink(), "{path:?}");
        }
        assert!(a.lookup_path(b"/bin/true").expect("read").is_none());
        assert!(a.lookup_path(b"/bin/busybox").expect("read").is_none());
        assert!(a.lookup_path(b"/usr/bin/true/x").expect("read").is_none());
        assert!(a.lookup_path(b"/nope").expect("read").is_none());
        // `..` stops at the root (a path cannot climb out of the image).
        let busybox = a
            .lookup_path(b"/../../usr/./bin//busybox")
            .expect("read")
            .expect("found");
        assert!(busybox.is_file());
        assert!(a.lookup_path(b"").expect("read").expect("root").is_dir());
        assert!(a.lookup_path(b"..").expect("read").expect("root").is_dir());
    }

    #[test]
    fn follow_path_follows_at_most_the_kernels_link_limit() {
        use crate::squashfs::writer::{EntryMeta, Writer, WriterOptions};
        let meta = |mode| EntryMeta {
            mode,
            ..EntryMeta::default()
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("chain.sqfs");
        let mut w = Writer::create(&path, WriterOptions::default()).expect("create");
        w.add_file(b"f", meta(0o755), &mut &b"x"[..]).expect("f");
        // l0 -> l1 -> ... -> l40 -> f: resolving l0 follows 41 links, l1
        // follows 40.
        let max = MAX_SYMLINKS as usize;
        for i in 0..=max {
            let target = if i == max {
                b"f".to_vec()
            } else {
                format!("l{}", i + 1).into_bytes()
            };
            w.add_symlink(format!("l{i}").as_bytes(), meta(0o777), &target)
                .expect("link");
        }
        w.finish().expect("finish");
        let a = Archive::open(&path).expect("open");
        assert!(a.follow_path(b"/l0").expect("read").is_none());
        let f = a.follow_path(b"/l1").expect("read").expect("40 links");
        assert!(f.is_file());
        // Not following, the first link is what the path names.
        assert!(
            a.lookup_path(b"/l0")
                .expect("read")
                .expect("l0")
                .is_symlink()
        );
    }

    #[test]
    fn with_bytes_lends_what_read_at_copies() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = linked_image(dir.path());
        let file = a
            .follow_path(b"/bin/busybox")
            .expect("read")
            .expect("found");
        // 4 KiB blocks, 10 000 bytes: two blocks and a tail in a fragment;
        // ranges inside a block, over a boundary, in the tail, past the end.
        for offset in [0u64, 100, 4095, 4096, 8000, 8192, 9999, 10_000, 20_000] {
            for len in [0usize, 1, 100, 4096, 8192, 20_000] {
                let mut want = vec![0u8; len];
                let n = a.read_at(&file, offset, &mut want).expect("read_at");
                let got = a
                    .with_bytes(&file, offset, len, |b| b.to_vec())
                    .expect("with_bytes");
                assert_eq!(got, want[..n], "offset {offset} len {len}");
            }
        }
        let dir_node = a.root().expect("root");
        assert!(a.with_bytes(&dir_node, 0, 10, |b| b.len()).is_err());
    }

    #[test]
    fn prefetch_fills_the_data_cache_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = linked_image(dir.path());
        let file = a
            .follow_path(b"/bin/busybox")
            .expect("read")
            .expect("found");
        // 10 000 bytes at 4 KiB blocks: 2 full blocks, the tail in a
        // fragment (not a data block).
        assert_eq!(a.prefetch(&file, 1).expect("prefetch"), 1);
        assert_eq!(a.prefetch(&file, 64).expect("prefetch"), 1);
        assert_eq!(a.prefetch(&file, 64).expect("prefetch"), 0);
        let mut buf = vec![0u8; 10_000];
        assert_eq!(a.read_at(&file, 0, &mut buf).expect("read"), 10_000);
        let want: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        assert_eq!(buf, want);
        let dir_node = a.root().expect("root");
        assert_eq!(a.prefetch(&dir_node, 8).expect("not a file"), 0);
    }
}
