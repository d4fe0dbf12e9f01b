//! The squashfs writer: entries arrive in any order through `add_*`, file
//! data streams straight to a temporary file beside the output (blocks
//! compressed in parallel with rayon, tails packed into fragment blocks,
//! duplicate files and all-zero blocks not stored twice), and `finish` lays
//! out the metadata (inodes, directories, fragment, export, id and xattr
//! tables), writes the superblock, pads to 4 KiB, fsyncs and renames.
//!
//! Memory is bounded by the number of entries, not by the size of the data:
//! only a window of blocks is in flight at any time.
//!
//! Layout: superblock, compressor options, data and fragment blocks, inode
//! table, directory table, fragment table, export table, id table, xattr
//! table (the order mksquashfs uses).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

pub use super::compress::{CompressError, Compression};
use super::format::{
    self, DATA_UNCOMPRESSED, DIR_ENTRIES_PER_HEADER, DIR_INODE_DELTA_MAX, DIR_SIZE_BIAS,
    DeviceInode, DirEntry, DirHeader, DirIndexEntry, DirInode, FileInode, FormatError,
    FragmentEntry, Inode, InodeBody, InodeHeader, InodeRef, IpcInode, METADATA_SIZE,
    METADATA_UNCOMPRESSED, NO_FRAGMENT, NO_XATTR, SUPERBLOCK_SIZE, Superblock, SymlinkInode,
    TABLE_ABSENT, XattrId, XattrTableHeader, fit, flags,
};

/// Longest name a Linux filesystem hands out (NAME_MAX).
const NAME_MAX: usize = 255;

/// Options of one image.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    pub compression: Compression,
    /// Power of two, 4 KiB ..= 1 MiB.
    pub block_size: u32,
    /// `None`: `$SOURCE_DATE_EPOCH` if set, else the newest entry mtime.
    pub mkfs_time: Option<u32>,
}

impl Default for WriterOptions {
    fn default() -> Self {
        Self {
            compression: Compression::default(),
            block_size: format::DEFAULT_BLOCK_SIZE,
            mkfs_time: None,
        }
    }
}

/// Metadata of one entry. `mode` is the permission bits only (0o7777); the
/// type is given by which `add_*` is called.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryMeta {
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u32,
    /// Full names: `b"user.x"`, `b"security.capability"`.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecialKind {
    CharDevice { major: u32, minor: u32 },
    BlockDevice { major: u32, minor: u32 },
    Fifo,
    Socket,
}

/// What `finish` reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteSummary {
    /// Size of the image file (padded to 4 KiB).
    pub bytes: u64,
    pub inodes: u32,
    /// Regular file inodes.
    pub files: u64,
    /// Bytes of file content read.
    pub data_bytes: u64,
    /// Files whose content was already stored (only referenced again).
    pub duplicate_files: u64,
    /// Files whose full blocks were already stored (only their tail differs).
    pub shared_block_runs: u64,
    pub fragments: u32,
    pub mkfs_time: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("invalid block size {0}: must be a power of two from 4096 to 1048576")]
    BlockSize(u32),
    #[error("invalid compression")]
    Compression(#[from] CompressError),
    #[error("cannot create temporary file {path}")]
    CreateTemp {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read the data of {path}")]
    ReadData {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot sync {path}")]
    Sync {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot rename {from} to {to}")]
    Rename {
        from: PathBuf,
        to: PathBuf,
        source: std::io::Error,
    },
    #[error("bad path {path:?}: {reason}")]
    BadPath { path: String, reason: &'static str },
    #[error("{path:?} was added twice")]
    Duplicate { path: String },
    #[error("{path:?} is not a directory that was added")]
    NoSuchDirectory { path: String },
    #[error("cannot add {path:?}: {parent:?} is not a directory")]
    NotADirectory { path: String, parent: String },
    #[error("hard link {path:?}: target {target:?} was not added")]
    HardlinkTargetMissing { path: String, target: String },
    #[error("hard link {path:?}: target {target:?} is a directory")]
    HardlinkToDirectory { path: String, target: String },
    #[error(
        "{path:?}: xattr {name:?} cannot be stored in squashfs (only user., trusted. and security.)"
    )]
    UnsupportedXattr { path: String, name: String },
    #[error("{path:?}: {what} is too large ({value})")]
    TooLarge {
        path: String,
        what: &'static str,
        value: u64,
    },
    #[error("too many {what}: {count} (squashfs holds at most {max})")]
    TooMany {
        what: &'static str,
        count: u64,
        max: u64,
    },
    #[error("cannot encode {what}")]
    Encode {
        what: String,
        #[source]
        source: FormatError,
    },
}

/// The error for a field of `what` (an inode, a table) that its on-disk
/// type cannot hold.
fn encode_err(what: impl FnOnce() -> String) -> impl FnOnce(FormatError) -> WriteError {
    move |source| WriteError::Encode {
        what: what(),
        source,
    }
}

fn show(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

/// Where a regular file's content sits in the image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct FileData {
    size: u64,
    blocks_start: u64,
    block_sizes: Vec<u32>,
    /// (fragment index, offset inside the fragment block).
    fragment: Option<(u32, u32)>,
    /// Bytes of holes (all-zero blocks not stored).
    sparse: u64,
}

#[derive(Debug)]
enum Kind {
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
struct Node {
    meta: EntryMeta,
    kind: Kind,
    /// Directory entries naming this inode (hard links).
    links: u32,
}

/// Uncompressed metadata: 8 KiB blocks, each compressed on its own and
/// prefixed by a u16 length header (bit 15: stored raw).
#[derive(Debug)]
struct MetaWriter {
    compression: Compression,
    block_size: u32,
    out: Vec<u8>,
    cur: Vec<u8>,
    /// Start (relative to the table) of every block begun so far; the last
    /// one is the block being filled.
    block_starts: Vec<u64>,
}

impl MetaWriter {
    fn new(compression: Compression, block_size: u32) -> Self {
        Self {
            compression,
            block_size,
            out: Vec::new(),
            cur: Vec::with_capacity(METADATA_SIZE),
            block_starts: vec![0],
        }
    }

    /// The reference of the next byte written.
    fn position(&self) -> InodeRef {
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
    fn uncompressed_position(&self) -> u64 {
        (self.block_starts.len() as u64 - 1) * METADATA_SIZE as u64 + self.cur.len() as u64
    }

    /// Table-relative start of the block holding uncompressed offset `pos`
    /// (that block must be begun already).
    fn block_start_of(&self, pos: u64) -> u64 {
        let last = self.block_starts.len() - 1;
        // A block number past usize is certainly past the last block.
        let n = usize::try_from(pos / METADATA_SIZE as u64).map_or(last, |n| n.min(last));
        self.block_starts[n]
    }

    fn write(&mut self, mut data: &[u8]) {
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
    fn finish(mut self) -> (Vec<u8>, Vec<u64>) {
        if !self.cur.is_empty() {
            self.flush_block();
        }
        self.block_starts.pop();
        (self.out, self.block_starts)
    }
}

/// One directory entry to be listed, as [`plan_listing`] needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ListedEntry {
    name: Vec<u8>,
    inode_number: u32,
    inode_ref: InodeRef,
    basic_type: u16,
}

/// A directory listing laid out: its bytes, and the index points (offset
/// of a header inside the listing, name of its first entry).
#[derive(Debug, Clone, PartialEq, Eq)]
struct PlannedListing {
    bytes: Vec<u8>,
    index: Vec<(u32, Vec<u8>)>,
}

/// Lay out a directory listing (entries sorted by name). A new header starts
/// after 256 entries, when the inode metadata block changes, when the inode
/// number delta leaves the i16 range, and (with an index point, as mksquashfs
/// does) when the listing since the last index point would pass 8 KiB, so
/// that a lookup in a huge directory can jump straight to a header. A
/// position past the u32 fields that hold it is an error naming the field.
fn plan_listing(entries: &[ListedEntry]) -> Result<PlannedListing, FormatError> {
    let mut bytes = Vec::new();
    let mut index = Vec::new();
    let mut header_pos: Option<usize> = None;
    let mut header = DirHeader {
        count: 0,
        start: 0,
        inode_number: 0,
    };
    let mut last_index_pos = 0usize;
    for e in entries {
        let entry_len = 8 + e.name.len();
        let block: u32 = fit(
            "directory header inode block start",
            e.inode_ref.block_start(),
        )?;
        let delta = i64::from(e.inode_number) - i64::from(header.inode_number);
        let needs_index =
            header_pos.is_some() && bytes.len() + entry_len - last_index_pos > METADATA_SIZE;
        let new_header = header_pos.is_none()
            || header.count as usize == DIR_ENTRIES_PER_HEADER
            || block != header.start
            || !(-DIR_INODE_DELTA_MAX - 1..=DIR_INODE_DELTA_MAX).contains(&delta)
            || needs_index;
        if new_header {
            if let Some(pos) = header_pos {
                let mut h = Vec::with_capacity(DirHeader::SIZE);
                header.encode(&mut h);
                bytes[pos..pos + DirHeader::SIZE].copy_from_slice(&h);
            }
            if needs_index {
                index.push((
                    fit("directory index position", bytes.len() as u64)?,
                    e.name.clone(),
                ));
                last_index_pos = bytes.len();
            }
            header = DirHeader {
                count: 0,
                start: block,
                inode_number: e.inode_number,
            };
            header_pos = Some(bytes.len());
            bytes.extend_from_slice(&[0; DirHeader::SIZE]);
        }
        // In i16 range: a delta outside it started a new header above.
        let delta = i64::from(e.inode_number) - i64::from(header.inode_number);
        let inode_delta = i16::try_from(delta).map_err(|_| FormatError::OutOfRange {
            what: "directory entry inode delta",
            value: delta.unsigned_abs(),
        })?;
        DirEntry {
            offset: e.inode_ref.offset(),
            inode_delta,
            inode_type: e.basic_type,
            name: e.name.clone(),
        }
        .encode(&mut bytes)?;
        header.count += 1;
    }
    if let Some(pos) = header_pos {
        let mut h = Vec::with_capacity(DirHeader::SIZE);
        header.encode(&mut h);
        bytes[pos..pos + DirHeader::SIZE].copy_from_slice(&h);
    }
    Ok(PlannedListing { bytes, index })
}

/// A compressed (or raw) data block ready to be written.
#[derive(Debug)]
enum Block {
    /// All zero: stored as a hole (size word 0).
    Sparse,
    Stored {
        bytes: Vec<u8>,
        raw: bool,
    },
}

impl Block {
    /// A block is at most the block size (1 MiB), so this fails only if
    /// that bound is broken.
    fn size_word(&self) -> Result<u32, FormatError> {
        match self {
            Block::Sparse => Ok(0),
            Block::Stored { bytes, raw } => format::data_size_word(bytes.len(), *raw),
        }
    }
}

/// A fast hash of a block (four multiply-xor lanes over u64 words), and
/// whether the block is all zero, in one pass. The hash only finds
/// duplicate candidates: equality is decided by a byte compare, so a weak
/// but fast hash is right here (a CRC32 or SHA-256 cost 7-11% of the CPU).
fn block_hash(data: &[u8]) -> (u64, bool) {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut lanes = [data.len() as u64, 1, 2, 3];
    let mut any = 0u64;
    let mut chunks = data.chunks_exact(32);
    for c in &mut chunks {
        for (i, lane) in lanes.iter_mut().enumerate() {
            let mut w = [0u8; 8];
            w.copy_from_slice(&c[i * 8..i * 8 + 8]);
            let w = u64::from_le_bytes(w);
            any |= w;
            *lane = (lane.rotate_left(23) ^ w).wrapping_mul(K);
        }
    }
    for &b in chunks.remainder() {
        any |= u64::from(b);
        lanes[0] = (lanes[0].rotate_left(23) ^ u64::from(b)).wrapping_mul(K);
    }
    let h = lanes
        .iter()
        .fold(0u64, |h, &l| (h.rotate_left(29) ^ l).wrapping_mul(K));
    (h, any == 0)
}

/// Compress one block on a rayon worker; also returns the block's hash
/// (0 for holes), from which the file's hash is built in order, so hashing
/// runs in parallel too.
fn compress_block(comp: Compression, block_size: u32, data: Vec<u8>) -> (Block, u64) {
    let (digest, zero) = block_hash(&data);
    if zero {
        return (Block::Sparse, 0);
    }
    let block = match comp.compress(&data, block_size) {
        Some(bytes) => Block::Stored { bytes, raw: false },
        None => Block::Stored {
            bytes: data,
            raw: true,
        },
    };
    (block, digest)
}

/// The output file with its write position; writes go through a buffer.
#[derive(Debug)]
struct Output {
    file: std::io::BufWriter<File>,
    path: PathBuf,
    pos: u64,
}

impl Output {
    fn write_all(&mut self, data: &[u8]) -> Result<(), WriteError> {
        self.file
            .write_all(data)
            .map_err(|source| WriteError::Write {
                path: self.path.clone(),
                source,
            })?;
        self.pos += data.len() as u64;
        Ok(())
    }

    fn io_err(&self, source: std::io::Error) -> WriteError {
        WriteError::Write {
            path: self.path.clone(),
            source,
        }
    }

    /// Move the write position back to `pos` (forget a duplicate's blocks).
    fn rewind(&mut self, pos: u64) -> Result<(), WriteError> {
        self.file.flush().map_err(|e| self.io_err(e))?;
        self.file
            .get_mut()
            .seek(SeekFrom::Start(pos))
            .map_err(|e| self.io_err(e))?;
        self.pos = pos;
        Ok(())
    }

    /// Read back `len` bytes at `at` (for the byte compare of duplicates).
    fn read_at(&mut self, at: u64, buf: &mut [u8]) -> Result<(), WriteError> {
        self.file.flush().map_err(|e| self.io_err(e))?;
        self.file
            .get_ref()
            .read_exact_at(buf, at)
            .map_err(|e| self.io_err(e))
    }
}

/// Compressed fragment blocks: (bytes, stored raw).
type StoredBatch = Vec<(Vec<u8>, bool)>;

/// Key of the duplicate-file table: size and a hash of the block and tail
/// hashes. Only finds candidates: equality is decided by a byte compare.
type ContentKey = (u64, u64);

/// Streams a squashfs image into a temporary file; see the module doc.
#[derive(Debug)]
pub struct Writer {
    options: WriterOptions,
    mkfs_time_env: Option<u32>,
    output: PathBuf,
    temp: PathBuf,
    out: Option<Output>,
    nodes: Vec<Node>,
    paths: HashMap<Vec<u8>, usize>,
    /// Fragment block being filled.
    frag_buf: Vec<u8>,
    /// Sealed fragment blocks waiting to be compressed together.
    frag_pending: Vec<Arc<Vec<u8>>>,
    /// Blocks being compressed (not written yet), kept for duplicate
    /// compares; they follow `fragments` in index order.
    frag_unwritten: std::collections::VecDeque<Arc<Vec<u8>>>,
    /// The last fragment block read back and decompressed for a compare.
    frag_cache: Option<(u32, Arc<Vec<u8>>)>,
    /// Fragment blocks sealed so far (the index of the one being filled).
    frag_sealed: u32,
    /// Batches of fragment blocks being compressed, oldest first.
    frag_inflight: std::collections::VecDeque<std::sync::mpsc::Receiver<StoredBatch>>,
    fragments: Vec<FragmentEntry>,
    dedup: HashMap<ContentKey, usize>,
    /// Files by their full blocks alone: (block count, hash of block hashes).
    block_runs: HashMap<ContentKey, usize>,
    shared_block_runs: u64,
    data_bytes: u64,
    duplicate_files: u64,
    newest_mtime: u32,
    /// Set once the temporary file has become the output.
    renamed: bool,
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Not finished (dropped, or `finish` failed): remove the
        // half-written temporary file.
        self.out.take();
        if !self.renamed {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// Blocks compressed together (and read ahead meanwhile): enough to keep
/// every rayon thread busy, small enough to bound memory.
fn window() -> usize {
    (rayon::current_num_threads() * 4).max(8)
}

fn temp_path_for(output: &Path) -> PathBuf {
    let dir = output.parent().unwrap_or(Path::new("."));
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    dir.join(format!(
        ".{name}.cairn-{}-{nanos:08x}.tmp",
        std::process::id()
    ))
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
    /// Starts writing to a temporary file beside `output` (same directory).
    pub fn create(output: &Path, options: WriterOptions) -> Result<Writer, WriteError> {
        let bs = options.block_size;
        if !bs.is_power_of_two() || !(format::MIN_BLOCK_SIZE..=format::MAX_BLOCK_SIZE).contains(&bs)
        {
            return Err(WriteError::BlockSize(bs));
        }
        options.compression.validate()?;
        // A time past what the u32 mkfs_time holds is as invalid as one that
        // does not parse (mksquashfs refuses both; cairn's other readers of
        // the variable ignore them, and so does this one).
        let mkfs_time_env = std::env::var("SOURCE_DATE_EPOCH")
            .ok()
            .and_then(|v| v.trim().parse::<u32>().ok());
        let temp = temp_path_for(output);
        let file = OpenOptions::new()
            .write(true)
            .read(true)
            .create_new(true)
            .mode(0o644)
            .open(&temp)
            .map_err(|source| WriteError::CreateTemp {
                path: temp.clone(),
                source,
            })?;
        let mut writer = Writer {
            options,
            mkfs_time_env,
            output: output.to_path_buf(),
            temp: temp.clone(),
            out: Some(Output {
                file: std::io::BufWriter::with_capacity(1 << 20, file),
                path: temp,
                pos: 0,
            }),
            nodes: Vec::new(),
            paths: HashMap::new(),
            frag_buf: Vec::new(),
            frag_pending: Vec::new(),
            frag_unwritten: std::collections::VecDeque::new(),
            frag_cache: None,
            frag_sealed: 0,
            frag_inflight: std::collections::VecDeque::new(),
            fragments: Vec::new(),
            dedup: HashMap::new(),
            block_runs: HashMap::new(),
            shared_block_runs: 0,
            data_bytes: 0,
            duplicate_files: 0,
            newest_mtime: 0,
            renamed: false,
        };
        // The root exists from the start (implicitly until add_dir(b"")).
        writer.nodes.push(Node {
            meta: Self::implicit_meta(),
            kind: Kind::Dir {
                children: Vec::new(),
                implicit: true,
            },
            links: 1,
        });
        writer.paths.insert(Vec::new(), 0);
        // Placeholder superblock (written for real at finish), then the
        // compressor options as one raw metadata block.
        let mut head = vec![0u8; SUPERBLOCK_SIZE];
        if let Some(opts) = writer.options.compression.options_payload() {
            let header = format::raw_metadata_header(opts.len())
                .map_err(encode_err(|| "the compressor options".into()))?;
            head.extend_from_slice(&header.to_le_bytes());
            head.extend_from_slice(&opts);
        }
        writer.out_mut()?.write_all(&head)?;
        Ok(writer)
    }

    /// The temporary file being written (renamed onto the output at finish).
    pub fn temp_path(&self) -> &Path {
        &self.temp
    }

    /// (device, inode) of the files this writer owns: the temporary file and
    /// an existing output it will replace. A walker of a tree that contains
    /// them must skip them, or the image would read itself while growing.
    pub fn own_files(&self) -> Vec<(u64, u64)> {
        use std::os::unix::fs::MetadataExt;
        [&self.temp, &self.output]
            .into_iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| (m.dev(), m.ino()))
            .collect()
    }

    fn implicit_meta() -> EntryMeta {
        EntryMeta {
            mode: 0o755,
            ..EntryMeta::default()
        }
    }

    fn out_mut(&mut self) -> Result<&mut Output, WriteError> {
        let temp = self.temp.clone();
        self.out.as_mut().ok_or_else(|| WriteError::Write {
            path: temp,
            source: std::io::Error::other("writer already finished"),
        })
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
    fn prepare(&mut self, path: &[u8], meta: &EntryMeta) -> Result<usize, WriteError> {
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

    fn insert(&mut self, path: &[u8], meta: EntryMeta, kind: Kind) -> Result<usize, WriteError> {
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

    /// File data is streamed from `data` (never held whole in memory);
    /// returns the size read.
    pub fn add_file(
        &mut self,
        path: &[u8],
        meta: EntryMeta,
        data: &mut dyn Read,
    ) -> Result<u64, WriteError> {
        self.add_file_with_holes(path, meta, data, false)
    }

    /// [`Writer::add_file`] for a source that has holes (a sparse file on
    /// disk, a sparse tar entry): its all-zero blocks are counted as its
    /// `sparse` bytes, which takes an extended inode. Zero blocks are never
    /// stored either way; like mksquashfs, only a source with holes reports
    /// them (sqfsdiff compares the inode types).
    pub fn add_file_with_holes(
        &mut self,
        path: &[u8],
        meta: EntryMeta,
        data: &mut dyn Read,
        holes: bool,
    ) -> Result<u64, WriteError> {
        // Validate before reading anything, so a bad path costs no data.
        self.prepare(path, &meta)?;
        let mut file = self.write_file_data(path, data)?;
        if !holes {
            file.sparse = 0;
        }
        let size = file.size;
        self.data_bytes += size;
        self.insert(path, meta, Kind::File(file))?;
        Ok(size)
    }

    /// Read up to `window` full blocks; the last one may be short (the tail).
    fn read_batch(
        path: &[u8],
        data: &mut dyn Read,
        block_size: usize,
        window: usize,
    ) -> Result<Vec<Vec<u8>>, WriteError> {
        let mut batch = Vec::new();
        while batch.len() < window {
            // Not zero-filled: only the bytes read are ever touched.
            let mut buf = Vec::with_capacity(block_size);
            (&mut *data)
                .take(block_size as u64)
                .read_to_end(&mut buf)
                .map_err(|source| WriteError::ReadData {
                    path: show(path),
                    source,
                })?;
            let filled = buf.len();
            let short = filled < block_size;
            if filled > 0 {
                batch.push(buf);
            }
            if short {
                break;
            }
        }
        Ok(batch)
    }

    fn write_file_data(
        &mut self,
        path: &[u8],
        data: &mut dyn Read,
    ) -> Result<FileData, WriteError> {
        let comp = self.options.compression;
        let bs = self.options.block_size;
        let window = window();
        // Fragment blocks compressed meanwhile go out between files.
        self.drain_fragments(false)?;
        let start = self.out_mut()?.pos;
        let mut file = FileData {
            blocks_start: start,
            ..FileData::default()
        };
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        let mut tail: Option<Vec<u8>> = None;
        let mut next = Self::read_batch(path, data, bs as usize, window)?;
        // The whole file is in this first batch (a short last block, or the
        // batch ended before the window filled): look for a duplicate before
        // compressing anything, comparing with the candidate's decompressed
        // blocks (decompressing is far cheaper than compressing).
        let whole = next.last().is_some_and(|b| b.len() < bs as usize) || next.len() < window;
        if whole && !next.is_empty() {
            let (full, short) = match next.last() {
                Some(b) if b.len() < bs as usize => (&next[..next.len() - 1], Some(&b[..])),
                _ => (&next[..], None),
            };
            let mut h = std::collections::hash_map::DefaultHasher::new();
            let mut size = 0u64;
            for b in full {
                let (digest, zero) = block_hash(b);
                (if zero { 0 } else { digest }).hash(&mut h);
                size += b.len() as u64;
            }
            if let Some(t) = short {
                block_hash(t).0.hash(&mut h);
                size += t.len() as u64;
            }
            let key: ContentKey = (size, h.finish());
            let candidate = self.dedup.get(&key).and_then(|&other| {
                match self.nodes.get(other).map(|n| &n.kind) {
                    Some(Kind::File(prev)) => Some(prev.clone()),
                    _ => None,
                }
            });
            if let Some(prev) = candidate
                && self.same_plain_blocks(&prev, full)?
                && self.same_tail(&prev, short)?
            {
                self.duplicate_files += 1;
                return Ok(prev);
            }
        }
        while !next.is_empty() {
            let mut batch = next;
            // A short block can only be the last: it is the tail, which goes
            // to a fragment instead of a block of its own.
            if batch.last().is_some_and(|b| b.len() < bs as usize) {
                tail = batch.pop();
            }
            let ended = tail.is_some();
            if batch.is_empty() {
                // A small file: nothing but a tail, no blocks to compress.
                break;
            }
            let mut slots: Vec<Option<(Block, u64)>> = Vec::new();
            slots.resize_with(batch.len(), || None);
            let mut read_ahead = Ok(Vec::new());
            rayon::in_place_scope(|s| {
                let mut blocks = batch.into_iter();
                let mut slot_iter = slots.iter_mut();
                // At the end of the file there is nothing to read ahead: this
                // thread compresses the first block itself instead of idling
                // (a one-block file then needs no hand-off at all).
                let mine = if ended {
                    blocks.next().zip(slot_iter.next())
                } else {
                    None
                };
                for (block, slot) in blocks.zip(slot_iter) {
                    s.spawn(move |_| *slot = Some(compress_block(comp, bs, block)));
                }
                if let Some((block, slot)) = mine {
                    *slot = Some(compress_block(comp, bs, block));
                } else {
                    // Read the next window while this one compresses.
                    read_ahead = Self::read_batch(path, data, bs as usize, window);
                }
            });
            if slots.iter().any(Option::is_none) {
                return Err(WriteError::Write {
                    path: self.temp.clone(),
                    source: std::io::Error::other("a block compression task did not finish"),
                });
            }
            let out = self.out_mut()?;
            for (block, digest) in slots.into_iter().flatten() {
                digest.hash(&mut hasher);
                file.size += u64::from(bs);
                let word = block
                    .size_word()
                    .map_err(encode_err(|| format!("a data block of {:?}", show(path))))?;
                file.block_sizes.push(word);
                match block {
                    Block::Sparse => file.sparse += u64::from(bs),
                    Block::Stored { bytes, .. } => out.write_all(&bytes)?,
                }
            }
            next = read_ahead?;
        }
        let blocks_key: ContentKey = (file.block_sizes.len() as u64, hasher.clone().finish());
        if let Some(t) = &tail {
            file.size += t.len() as u64;
            block_hash(t).0.hash(&mut hasher);
        }
        let key: ContentKey = (file.size, hasher.finish());
        let candidate =
            self.dedup
                .get(&key)
                .and_then(|&other| match self.nodes.get(other).map(|n| &n.kind) {
                    Some(Kind::File(prev)) => Some(prev.clone()),
                    _ => None,
                });
        if let Some(prev) = candidate
            && self.same_blocks(&prev, &file)?
            && self.same_tail(&prev, tail.as_deref())?
        {
            self.out_mut()?.rewind(start)?;
            self.duplicate_files += 1;
            return Ok(prev);
        }
        let stores_blocks = file.block_sizes.iter().any(|&w| w != 0);
        if !stores_blocks {
            // Nothing stored: point at the current position (as mksquashfs).
            file.blocks_start = self.out_mut()?.pos;
        } else {
            // The same blocks with another tail (a file appended to, a
            // patched copy): share the blocks, store only the tail.
            let same_run = self.block_runs.get(&blocks_key).and_then(|&other| {
                match self.nodes.get(other).map(|n| &n.kind) {
                    Some(Kind::File(prev)) => Some(prev.clone()),
                    _ => None,
                }
            });
            if let Some(prev) = same_run
                && self.same_blocks(&prev, &file)?
            {
                self.out_mut()?.rewind(start)?;
                file.blocks_start = prev.blocks_start;
                self.shared_block_runs += 1;
            } else {
                self.block_runs.insert(blocks_key, self.nodes.len());
            }
        }
        if let Some(t) = tail {
            file.fragment = Some(self.add_fragment(&t)?);
        }
        // Remember this content for later duplicates (the node index is the
        // one `insert` is about to use).
        if file.size > 0 {
            self.dedup.insert(key, self.nodes.len());
        }
        Ok(file)
    }

    /// Byte compare of a candidate's tail with ours, wherever its fragment
    /// block is: being filled, waiting, being compressed, or written (then
    /// read back and decompressed, the last such block cached).
    fn same_tail(&mut self, prev: &FileData, tail: Option<&[u8]>) -> Result<bool, WriteError> {
        let (Some((index, offset)), Some(tail)) = (prev.fragment, tail) else {
            return Ok(prev.fragment.is_none() && tail.is_none());
        };
        // Fragment blocks in index order: written, then waiting, then
        // pending; counted in usize, like the queues that hold them.
        let written = self.fragments.len();
        let unwritten = self.frag_unwritten.len();
        let position = index as usize;
        let block: Arc<Vec<u8>> = if index == self.frag_sealed {
            let from = offset as usize;
            return Ok(self.frag_buf.get(from..from + tail.len()) == Some(tail));
        } else if position >= written + unwritten {
            match self.frag_pending.get(position - written - unwritten) {
                Some(b) => b.clone(),
                None => return Ok(false),
            }
        } else if position >= written {
            match self.frag_unwritten.get(position - written) {
                Some(b) => b.clone(),
                None => return Ok(false),
            }
        } else if let Some((i, b)) = &self.frag_cache
            && *i == index
        {
            b.clone()
        } else {
            let entry = self.fragments[index as usize];
            let len = (entry.size & format::DATA_SIZE_MASK) as usize;
            let mut stored = vec![0u8; len];
            self.out_mut()?.read_at(entry.start, &mut stored)?;
            let block = if entry.size & DATA_UNCOMPRESSED != 0 {
                stored
            } else {
                match self
                    .options
                    .compression
                    .decompress(&stored, self.options.block_size as usize)
                {
                    Some(b) => b,
                    None => return Ok(false),
                }
            };
            let block = Arc::new(block);
            self.frag_cache = Some((index, block.clone()));
            block
        };
        let from = offset as usize;
        Ok(block.get(from..from + tail.len()) == Some(tail))
    }

    /// Compare a candidate's stored blocks, decompressed, with plain blocks.
    fn same_plain_blocks(
        &mut self,
        prev: &FileData,
        blocks: &[Vec<u8>],
    ) -> Result<bool, WriteError> {
        if prev.block_sizes.len() != blocks.len() {
            return Ok(false);
        }
        let mut at = prev.blocks_start;
        for (&word, block) in prev.block_sizes.iter().zip(blocks) {
            if word == 0 {
                if block.iter().any(|&b| b != 0) {
                    return Ok(false);
                }
                continue;
            }
            let len = word & format::DATA_SIZE_MASK;
            let mut stored = vec![0u8; len as usize];
            self.out_mut()?.read_at(at, &mut stored)?;
            at += u64::from(len);
            let same = if word & DATA_UNCOMPRESSED != 0 {
                stored == *block
            } else {
                self.options
                    .compression
                    .decompress(&stored, self.options.block_size as usize)
                    .is_some_and(|plain| plain == *block)
            };
            if !same {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Byte compare of the stored blocks of a duplicate candidate.
    fn same_blocks(&mut self, prev: &FileData, new: &FileData) -> Result<bool, WriteError> {
        if prev.block_sizes != new.block_sizes {
            return Ok(false);
        }
        let stored: u64 = new
            .block_sizes
            .iter()
            .map(|&w| u64::from(w & format::DATA_SIZE_MASK))
            .sum();
        let out = self.out_mut()?;
        let mut a = vec![0u8; 1 << 16];
        let mut b = vec![0u8; 1 << 16];
        let mut done = 0u64;
        while done < stored {
            // Below a.len() (64 KiB) once capped.
            let n = usize::try_from(stored - done).map_or(a.len(), |left| left.min(a.len()));
            out.read_at(prev.blocks_start + done, &mut a[..n])?;
            out.read_at(new.blocks_start + done, &mut b[..n])?;
            if a[..n] != b[..n] {
                return Ok(false);
            }
            done += n as u64;
        }
        Ok(true)
    }

    /// Pack a tail into the fragment block being filled; returns
    /// (fragment index, offset).
    fn add_fragment(&mut self, tail: &[u8]) -> Result<(u32, u32), WriteError> {
        let bs = self.options.block_size as usize;
        if self.frag_buf.len() + tail.len() > bs {
            self.seal_fragment()?;
        }
        let index = self.frag_sealed;
        // At most the block size: a tail that would overflow sealed the
        // block above.
        let offset = fit("fragment offset", self.frag_buf.len() as u64)
            .map_err(encode_err(|| format!("fragment block {index}")))?;
        self.frag_buf.extend_from_slice(tail);
        Ok((index, offset))
    }

    fn seal_fragment(&mut self) -> Result<(), WriteError> {
        if self.frag_buf.is_empty() {
            return Ok(());
        }
        // Fragment indexes are u32 and NO_FRAGMENT (u32::MAX) means none:
        // the block being filled must keep an index below it.
        let next = self
            .frag_sealed
            .checked_add(1)
            .filter(|&n| n < NO_FRAGMENT)
            .ok_or(WriteError::TooMany {
                what: "fragment blocks",
                count: u64::from(self.frag_sealed) + 1,
                max: u64::from(NO_FRAGMENT) - 1,
            })?;
        let block = std::mem::take(&mut self.frag_buf);
        self.frag_sealed = next;
        self.frag_pending.push(Arc::new(block));
        if self.frag_pending.len() >= window() {
            self.launch_fragments();
        }
        Ok(())
    }

    /// Start compressing the sealed fragment blocks on the rayon pool; the
    /// results are written in order by [`Self::drain_fragments`], so the
    /// caller keeps reading small files meanwhile.
    fn launch_fragments(&mut self) {
        if self.frag_pending.is_empty() {
            return;
        }
        let comp = self.options.compression;
        let bs = self.options.block_size;
        let pending = std::mem::take(&mut self.frag_pending);
        self.frag_unwritten.extend(pending.iter().cloned());
        let (tx, rx) = std::sync::mpsc::channel();
        rayon::spawn(move || {
            let compressed: Vec<(Vec<u8>, bool)> = pending
                .into_par_iter()
                .map(|b| match comp.compress(&b, bs) {
                    Some(c) => (c, false),
                    None => (b.to_vec(), true),
                })
                .collect();
            // The writer may be gone (dropped after an error): nothing to do.
            let _ = tx.send(compressed);
        });
        self.frag_inflight.push_back(rx);
    }

    /// Write the compressed fragment batches that are ready, in order. With
    /// `all`, wait for every batch; otherwise wait only while too many are
    /// in flight (that bounds memory).
    fn drain_fragments(&mut self, all: bool) -> Result<(), WriteError> {
        while let Some(rx) = self.frag_inflight.front() {
            let batch = if all || self.frag_inflight.len() > 2 {
                rx.recv().ok()
            } else {
                match rx.try_recv() {
                    Ok(b) => Some(b),
                    Err(std::sync::mpsc::TryRecvError::Empty) => return Ok(()),
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => None,
                }
            };
            self.frag_inflight.pop_front();
            let Some(batch) = batch else {
                return Err(WriteError::Write {
                    path: self.temp.clone(),
                    source: std::io::Error::other("a fragment compression task failed"),
                });
            };
            for (bytes, raw) in batch {
                let out = self.out_mut()?;
                let start = out.pos;
                out.write_all(&bytes)?;
                let size = format::data_size_word(bytes.len(), raw)
                    .map_err(encode_err(|| "a fragment block".into()))?;
                self.fragments.push(FragmentEntry { start, size });
                self.frag_unwritten.pop_front();
            }
        }
        Ok(())
    }

    /// Writes the tables and superblock, pads to 4 KiB, fsyncs, renames
    /// onto the output.
    pub fn finish(mut self) -> Result<WriteSummary, WriteError> {
        self.seal_fragment()?;
        self.launch_fragments();
        self.drain_fragments(true)?;
        let mkfs_time = self
            .options
            .mkfs_time
            .or(self.mkfs_time_env)
            .unwrap_or(self.newest_mtime);
        for node in &mut self.nodes {
            if let Kind::Dir { children, implicit } = &mut node.kind {
                children.sort_by(|a, b| a.0.cmp(&b.0));
                if *implicit {
                    node.meta.mtime = mkfs_time;
                }
            }
        }
        // Inode numbers are 1..=inode_count in u32, and the root's parent
        // is inode_count + 1 (as mksquashfs numbers it): that must fit too.
        // Only inodes still in the tree count: removed ones keep their
        // place in `nodes` but get no number, so the count is at most this.
        if u32::try_from(self.nodes.len()).map_or(true, |n| n == u32::MAX) {
            return Err(WriteError::TooMany {
                what: "inodes",
                count: self.nodes.len() as u64,
                max: u64::from(u32::MAX) - 1,
            });
        }
        let (numbers, inode_count) = number_inodes(&self.nodes);
        let mut tables = TableBuilder::new(&self.options, &self.nodes, &numbers, &self.paths);
        tables.emit_dir(0, inode_count + 1)?;
        let root_ref = tables.refs[0];
        let mut built = tables.finish();
        built.export.truncate(inode_count as usize);
        let comp = self.options.compression;
        let bs = self.options.block_size;
        let files = self
            .nodes
            .iter()
            .zip(&numbers)
            .filter(|(n, number)| matches!(n.kind, Kind::File(_)) && **number != 0)
            .count() as u64;

        let out = self.out_mut()?;
        let inode_table_start = out.pos;
        out.write_all(&built.inode_table)?;
        let directory_table_start = out.pos;
        out.write_all(&built.dir_table)?;
        let fragment_table_start = if self.fragments.is_empty() {
            TABLE_ABSENT
        } else {
            let mut bytes = Vec::new();
            for f in &self.fragments {
                f.encode(&mut bytes);
            }
            write_indexed_table(self.out.as_mut().ok_or_else(finished)?, &bytes, comp, bs)?
        };
        let mut export = Vec::with_capacity(built.export.len() * 8);
        for r in &built.export {
            export.extend_from_slice(&r.0.to_le_bytes());
        }
        let out = self.out.as_mut().ok_or_else(finished)?;
        let export_table_start = write_indexed_table(out, &export, comp, bs)?;
        let mut ids = Vec::with_capacity(built.ids.len() * 4);
        for id in &built.ids {
            ids.extend_from_slice(&id.to_le_bytes());
        }
        let id_table_start = write_indexed_table(out, &ids, comp, bs)?;
        let xattr_id_table_start = if built.xattr_ids.is_empty() {
            TABLE_ABSENT
        } else {
            let kv_start = out.pos;
            out.write_all(&built.xattr_kv)?;
            let mut id_bytes = Vec::new();
            for x in &built.xattr_ids {
                x.encode(&mut id_bytes);
            }
            let mut meta = MetaWriter::new(comp, bs);
            meta.write(&id_bytes);
            let (table, starts) = meta.finish();
            let ids_start = out.pos;
            out.write_all(&table)?;
            let header_start = out.pos;
            let mut head = Vec::new();
            XattrTableHeader {
                kv_start,
                id_count: built.xattr_id_count,
            }
            .encode(&mut head);
            for s in starts {
                head.extend_from_slice(&(ids_start + s).to_le_bytes());
            }
            out.write_all(&head)?;
            header_start
        };
        let bytes_used = out.pos;
        let padded = bytes_used.div_ceil(4096) * 4096;
        let pad_len: usize = fit("padding", padded - bytes_used)
            .map_err(encode_err(|| "the padding to 4 KiB".into()))?;
        let pad = vec![0u8; pad_len];
        out.write_all(&pad)?;

        let uncompressed = if comp == Compression::None {
            flags::UNCOMPRESSED_INODES
                | flags::UNCOMPRESSED_DATA
                | flags::UNCOMPRESSED_FRAGMENTS
                | flags::UNCOMPRESSED_XATTRS
                | flags::UNCOMPRESSED_IDS
        } else {
            0
        };
        // Tails of files of any size go to fragments (mksquashfs's
        // -always-use-fragments), which the flag records.
        let mut sb_flags =
            flags::DUPLICATES | flags::EXPORTABLE | flags::ALWAYS_FRAGMENTS | uncompressed;
        if built.xattr_ids.is_empty() {
            sb_flags |= flags::NO_XATTRS;
        }
        if comp.options_payload().is_some() {
            sb_flags |= flags::COMPRESSOR_OPTIONS;
        }
        let sb = Superblock {
            inode_count,
            mkfs_time,
            block_size: bs,
            // Each fragment block's index is below NO_FRAGMENT (checked
            // as they are sealed), so the count fits.
            fragment_count: fit("fragment count", self.fragments.len() as u64)
                .map_err(encode_err(|| "the superblock".into()))?,
            compressor: comp.id(),
            block_log: fit("block_log", bs.trailing_zeros().into())
                .map_err(encode_err(|| "the superblock".into()))?,
            flags: sb_flags,
            id_count: built.id_count,
            root_inode: root_ref,
            bytes_used,
            id_table_start,
            xattr_id_table_start,
            inode_table_start,
            directory_table_start,
            fragment_table_start,
            export_table_start,
        };
        let mut sb_bytes = Vec::with_capacity(SUPERBLOCK_SIZE);
        sb.encode(&mut sb_bytes);
        let mut output = self.out.take().ok_or_else(finished)?;
        let temp = self.temp.clone();
        let io = |source| WriteError::Write {
            path: temp.clone(),
            source,
        };
        output.file.flush().map_err(io)?;
        let file = output.file.get_mut();
        file.write_all_at(&sb_bytes, 0).map_err(io)?;
        // A duplicate rewound at the very end may have left bytes beyond.
        file.set_len(padded).map_err(io)?;
        file.sync_all().map_err(|source| WriteError::Sync {
            path: temp.clone(),
            source,
        })?;
        drop(output);
        if let Err(source) = std::fs::rename(&self.temp, &self.output) {
            return Err(WriteError::Rename {
                from: self.temp.clone(),
                to: self.output.clone(),
                source,
            });
        }
        self.renamed = true;
        // Make the rename itself durable.
        if let Some(dir) = self.output.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(WriteSummary {
            bytes: padded,
            inodes: inode_count,
            files,
            data_bytes: self.data_bytes,
            duplicate_files: self.duplicate_files,
            shared_block_runs: self.shared_block_runs,
            fragments: sb.fragment_count,
            mkfs_time,
        })
    }
}

fn finished() -> WriteError {
    WriteError::Write {
        path: PathBuf::new(),
        source: std::io::Error::other("writer already finished"),
    }
}

/// Write a table stored as metadata blocks followed by the list of their
/// absolute positions (fragment, export, id tables); returns the position
/// of that list, which is what the superblock points at.
fn write_indexed_table(
    out: &mut Output,
    entries: &[u8],
    comp: Compression,
    block_size: u32,
) -> Result<u64, WriteError> {
    let mut meta = MetaWriter::new(comp, block_size);
    meta.write(entries);
    let (table, starts) = meta.finish();
    let table_start = out.pos;
    out.write_all(&table)?;
    let list_start = out.pos;
    let mut list = Vec::with_capacity(starts.len() * 8);
    for s in starts {
        list.extend_from_slice(&(table_start + s).to_le_bytes());
    }
    out.write_all(&list)?;
    Ok(list_start)
}

/// Inode numbers 1..=n in post-order (children sorted; a directory after
/// everything below it, so the root is last); a hard-linked inode gets its
/// number where it is first met. Directories must have sorted children.
/// Numbers the inodes reachable from the root (1, 2, ...); returns the
/// numbers (0 for removed nodes) and how many were numbered.
fn number_inodes(nodes: &[Node]) -> (Vec<u32>, u32) {
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

/// One inode's xattrs as stored: (type, name without prefix, value), sorted.
type XattrSet = Vec<(u16, Vec<u8>, Vec<u8>)>;

/// The metadata tables as built at finish.
#[derive(Debug)]
struct BuiltTables {
    inode_table: Vec<u8>,
    dir_table: Vec<u8>,
    /// Inode ref by inode number - 1.
    export: Vec<InodeRef>,
    ids: Vec<u32>,
    /// `ids.len()`, as the superblock stores it.
    id_count: u16,
    xattr_kv: Vec<u8>,
    xattr_ids: Vec<XattrId>,
    /// `xattr_ids.len()`, as the xattr table header stores it.
    xattr_id_count: u32,
}

#[derive(Debug)]
struct TableBuilder<'a> {
    nodes: &'a [Node],
    numbers: &'a [u32],
    /// Only to name an entry in an error.
    paths: &'a HashMap<Vec<u8>, usize>,
    inodes: MetaWriter,
    dirs: MetaWriter,
    xattr_kv: MetaWriter,
    refs: Vec<InodeRef>,
    emitted: Vec<bool>,
    export: Vec<InodeRef>,
    ids: Vec<u32>,
    id_count: u16,
    id_index: HashMap<u32, u16>,
    xattr_ids: Vec<XattrId>,
    xattr_id_count: u32,
    xattr_index: HashMap<XattrSet, u32>,
}

impl<'a> TableBuilder<'a> {
    fn new(
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
    fn path_of(&self, idx: usize) -> String {
        self.paths.iter().find(|&(_, &i)| i == idx).map_or_else(
            || format!("entry #{idx}"),
            |(p, _)| format!("{:?}", show(p)),
        )
    }

    /// The index of `id` in the id table, adding it if new: at most
    /// [`format::MAX_IDS`] distinct ids, so that their count fits the
    /// superblock's u16 `id_count`.
    fn id(&mut self, id: u32) -> Result<u16, WriteError> {
        if let Some(&i) = self.id_index.get(&id) {
            return Ok(i);
        }
        let i = self.id_count;
        let count = i.checked_add(1).ok_or(WriteError::TooMany {
            what: "distinct uids and gids in the id table",
            count: self.ids.len() as u64 + 1,
            max: format::MAX_IDS as u64,
        })?;
        self.ids.push(id);
        self.id_index.insert(id, i);
        self.id_count = count;
        Ok(i)
    }

    /// The xattr id of node `idx`'s set (identical sets share one), or
    /// NO_XATTR.
    fn xattr(&mut self, idx: usize) -> Result<u32, WriteError> {
        let xattrs = &self.nodes[idx].meta.xattrs;
        if xattrs.is_empty() {
            return Ok(NO_XATTR);
        }
        let mut set: XattrSet = xattrs
            .iter()
            .filter_map(|(n, v)| {
                format::split_xattr_name(n).map(|(t, rest)| (t, rest.to_vec(), v.clone()))
            })
            .collect();
        set.sort();
        set.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
        if let Some(&i) = self.xattr_index.get(&set) {
            return Ok(i);
        }
        // Xattr ids are u32 and NO_XATTR (u32::MAX) means none.
        let i = self.xattr_id_count;
        if i == NO_XATTR {
            return Err(WriteError::TooMany {
                what: "distinct xattr sets",
                count: u64::from(i) + 1,
                max: u64::from(NO_XATTR),
            });
        }
        // Names and values were checked as entries were added (see
        // `check_meta`); a tar can still carry a set of more than 4 GiB.
        let encode = |source| WriteError::Encode {
            what: format!("the xattrs of {}", self.path_of(idx)),
            source,
        };
        let mut bytes = Vec::new();
        for (t, name, value) in &set {
            let name_len: u16 = fit("xattr name length", name.len() as u64).map_err(encode)?;
            let value_len: u32 = fit("xattr value length", value.len() as u64).map_err(encode)?;
            bytes.extend_from_slice(&t.to_le_bytes());
            bytes.extend_from_slice(&name_len.to_le_bytes());
            bytes.extend_from_slice(name);
            bytes.extend_from_slice(&value_len.to_le_bytes());
            bytes.extend_from_slice(value);
        }
        let id = XattrId {
            xattr_ref: self.xattr_kv.position().0,
            count: fit("xattr count", set.len() as u64).map_err(encode)?,
            size: fit("xattr set size", bytes.len() as u64).map_err(encode)?,
        };
        self.xattr_kv.write(&bytes);
        self.xattr_ids.push(id);
        self.xattr_index.insert(set, i);
        self.xattr_id_count = i + 1;
        Ok(i)
    }

    fn header(&mut self, idx: usize, body_type: u16) -> Result<InodeHeader, WriteError> {
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

    fn write_inode(
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
    fn emit_leaf(&mut self, idx: usize) -> Result<(), WriteError> {
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

    /// Emit a directory in post-order: subdirectories, then the other
    /// children's inodes, then the listing, then the directory's inode
    /// (which needs the listing's position). Recursion depth is the tree
    /// depth, at most PATH_MAX / 2.
    fn emit_dir(&mut self, idx: usize, parent_number: u32) -> Result<(), WriteError> {
        let nodes = self.nodes;
        let Kind::Dir { children, .. } = &nodes[idx].kind else {
            return Ok(());
        };
        let my_number = self.numbers[idx];
        let mut subdirs = 0u32;
        for (_, c) in children {
            if matches!(nodes[*c].kind, Kind::Dir { .. }) {
                subdirs += 1;
                self.emit_dir(*c, my_number)?;
            }
        }
        for (_, c) in children {
            if !self.emitted[*c] {
                self.emit_leaf(*c)?;
            }
        }
        let entries: Vec<ListedEntry> = children
            .iter()
            .map(|(name, c)| ListedEntry {
                name: name.clone(),
                inode_number: self.numbers[*c],
                inode_ref: self.refs[*c],
                basic_type: basic_type_of(&nodes[*c].kind),
            })
            .collect();
        let listing_start = self.dirs.position();
        let base = self.dirs.uncompressed_position();
        let listing = || format!("the directory listing of {}", self.path_of(idx));
        let planned = plan_listing(&entries).map_err(encode_err(listing))?;
        let size = (planned.bytes.len() as u64).saturating_add(DIR_SIZE_BIAS.into());
        let file_size: u32 = fit("directory file_size", size).map_err(encode_err(listing))?;
        self.dirs.write(&planned.bytes);
        let index = planned
            .index
            .into_iter()
            .map(|(at, name)| {
                Ok(DirIndexEntry {
                    index: at,
                    start: fit(
                        "directory index block start",
                        self.dirs.block_start_of(base + u64::from(at)),
                    )?,
                    name,
                })
            })
            .collect::<Result<Vec<_>, FormatError>>()
            .map_err(encode_err(|| {
                format!("the directory index of {}", self.path_of(idx))
            }))?;
        let block_start = fit("directory block start", listing_start.block_start())
            .map_err(encode_err(|| format!("the inode of {}", self.path_of(idx))))?;
        let xattr_idx = self.xattr(idx)?;
        let extended = !index.is_empty() || xattr_idx != NO_XATTR || file_size > 0xffff;
        let body = InodeBody::Dir(DirInode {
            extended,
            block_start,
            block_offset: listing_start.offset(),
            file_size,
            link_count: 2 + subdirs,
            parent_inode: parent_number,
            xattr_idx,
            index,
        });
        let header = self.header(idx, body.inode_type())?;
        self.write_inode(idx, header, body)
    }

    fn finish(self) -> BuiltTables {
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

fn basic_type_of(kind: &Kind) -> u16 {
    use format::inode_type::*;
    match kind {
        Kind::Dir { .. } => BASIC_DIR,
        Kind::File(_) => BASIC_FILE,
        Kind::Symlink(_) => BASIC_SYMLINK,
        Kind::Special(SpecialKind::BlockDevice { .. }) => BASIC_BLOCK_DEV,
        Kind::Special(SpecialKind::CharDevice { .. }) => BASIC_CHAR_DEV,
        Kind::Special(SpecialKind::Fifo) => BASIC_FIFO,
        Kind::Special(SpecialKind::Socket) => BASIC_SOCKET,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::squashfs::format::{ByteSource, SliceSource};

    fn entry(name: &str, number: u32, block: u64, offset: u16) -> ListedEntry {
        ListedEntry {
            name: name.as_bytes().to_vec(),
            inode_number: number,
            inode_ref: InodeRef::new(block, offset),
            basic_type: format::inode_type::BASIC_FILE,
        }
    }

    /// Decode a planned listing back into (header, entries) runs.
    fn decode_listing(bytes: &[u8]) -> Vec<(DirHeader, Vec<DirEntry>)> {
        let mut src = SliceSource::new(bytes);
        let mut runs = Vec::new();
        while src.position() < bytes.len() {
            let h = DirHeader::decode(&mut src).expect("header");
            let es = (0..h.count)
                .map(|_| DirEntry::decode(&mut src).expect("entry"))
                .collect();
            runs.push((h, es));
        }
        runs
    }

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

    #[test]
    fn listing_one_header_for_close_entries() {
        let entries = vec![
            entry("a", 5, 0, 10),
            entry("b", 3, 0, 50),
            entry("c", 7, 0, 90),
        ];
        let planned = plan_listing(&entries).expect("plan");
        let runs = decode_listing(&planned.bytes);
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].0.count, 3);
        assert_eq!(runs[0].0.inode_number, 5);
        assert_eq!(runs[0].1[1].inode_delta, -2);
        assert_eq!(runs[0].1[2].offset, 90);
        assert!(planned.index.is_empty());
    }

    #[test]
    fn listing_splits_at_256_entries() {
        let entries: Vec<_> = (0..600)
            .map(|i| entry(&format!("f{i:04}"), i + 1, 0, 0))
            .collect();
        let runs = decode_listing(&plan_listing(&entries).expect("plan").bytes);
        let counts: Vec<u32> = runs.iter().map(|r| r.0.count).collect();
        assert_eq!(counts, vec![256, 256, 88]);
    }

    #[test]
    fn listing_splits_on_block_change_and_large_delta() {
        let entries = vec![
            entry("a", 1, 0, 0),
            entry("b", 2, 8000, 4),
            entry("c", 40000, 8000, 8),
            entry("d", 40001, 8000, 12),
            entry("e", 3, 8000, 16),
        ];
        let runs = decode_listing(&plan_listing(&entries).expect("plan").bytes);
        let shape: Vec<(u32, u32, u32)> = runs
            .iter()
            .map(|r| (r.0.count, r.0.start, r.0.inode_number))
            .collect();
        assert_eq!(
            shape,
            vec![(1, 0, 1), (1, 8000, 2), (2, 8000, 40000), (1, 8000, 3)]
        );
    }

    #[test]
    fn listing_index_every_8k() {
        let entries: Vec<_> = (0..2000)
            .map(|i| entry(&format!("{i:0100}"), i + 1, 0, 0))
            .collect();
        let planned = plan_listing(&entries).expect("plan");
        // 2000 entries of 108 bytes + headers: about 26 steps of 8 KiB.
        assert!(planned.index.len() >= 25, "{}", planned.index.len());
        for (at, name) in &planned.index {
            // Every index point is a header whose first entry is `name`.
            let mut src = SliceSource::new(&planned.bytes[*at as usize..]);
            let h = DirHeader::decode(&mut src).expect("header at index point");
            assert!(h.count >= 1);
            assert_eq!(&DirEntry::decode(&mut src).expect("entry").name, name);
        }
        let points: Vec<u32> = planned.index.iter().map(|p| p.0).collect();
        assert!(points.windows(2).all(|w| w[1] - w[0] <= 8192));
    }

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

    fn meta(mtime: u32) -> EntryMeta {
        EntryMeta {
            mode: 0o644,
            mtime,
            ..EntryMeta::default()
        }
    }

    fn scratch_out(name: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join(name);
        (dir, out)
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
    fn dedup_stores_identical_content_once() {
        let (_dir, out) = scratch_out("dedup.sqfs");
        let opts = WriterOptions {
            compression: Compression::None,
            block_size: 4096,
            mkfs_time: Some(0),
        };
        let content: Vec<u8> = (0..10_000u32).map(|i| (i % 253) as u8).collect();
        let mut w = Writer::create(&out, opts).expect("create");
        w.add_file(b"one", meta(1), &mut &content[..]).expect("one");
        let after_one = w.out.as_ref().expect("out").pos;
        w.add_file(b"two", meta(1), &mut &content[..]).expect("two");
        assert_eq!(w.out.as_ref().expect("out").pos, after_one);
        let mut other = content.clone();
        other[5000] ^= 1;
        w.add_file(b"three", meta(1), &mut &other[..])
            .expect("three");
        assert!(w.out.as_ref().expect("out").pos > after_one);
        let (Kind::File(a), Kind::File(b)) = (&w.nodes[1].kind, &w.nodes[2].kind) else {
            panic!("files expected");
        };
        assert_eq!(a, b);
        assert_eq!(a.block_sizes.len(), 2);
        assert!(a.fragment.is_some());
        let summary = w.finish().expect("finish");
        assert_eq!(summary.duplicate_files, 1);
        assert_eq!(summary.bytes % 4096, 0);
    }

    #[test]
    fn dedup_of_tails_compares_bytes_wherever_the_fragment_is() {
        for comp in [
            Compression::Zstd { level: 3 },
            Compression::Gzip { level: 6 },
        ] {
            let (_dir, out) = scratch_out("tails.sqfs");
            let opts = WriterOptions {
                compression: comp,
                block_size: 4096,
                mkfs_time: Some(0),
            };
            let mut w = Writer::create(&out, opts).expect("create");
            let small = b"the same small file\n".repeat(10);
            w.add_file(b"a", meta(1), &mut &small[..]).expect("a");
            // Candidate still in the fragment block being filled.
            w.add_file(b"b", meta(1), &mut &small[..]).expect("b");
            assert_eq!(w.duplicate_files, 1);
            // Same size and hash bucket is not enough: a different
            // content of the same length is stored.
            let mut other = small.clone();
            other[0] = b'T';
            w.add_file(b"o", meta(1), &mut &other[..]).expect("o");
            assert_eq!(w.duplicate_files, 1);
            // Push "a"'s fragment block out: distinct 3000-byte tails seal
            // a block each; then wait until everything is written.
            for i in 0..window() + 2 {
                let tail: Vec<u8> = (0..3000usize)
                    .map(|j| (j * 7 + i).to_le_bytes()[0])
                    .collect();
                w.add_file(format!("t{i}").as_bytes(), meta(1), &mut &tail[..])
                    .expect("tail");
            }
            w.launch_fragments();
            w.drain_fragments(true).expect("drain");
            assert!(w.fragments.len() > 1);
            // Now the candidate is read back from the image and decompressed.
            w.add_file(b"c", meta(1), &mut &small[..]).expect("c");
            assert_eq!(w.duplicate_files, 2, "{comp:?}");
            let idx = |p: &[u8]| w.paths[p];
            let (Kind::File(a), Kind::File(c), Kind::File(o)) = (
                &w.nodes[idx(b"a")].kind,
                &w.nodes[idx(b"c")].kind,
                &w.nodes[idx(b"o")].kind,
            ) else {
                panic!("files expected");
            };
            assert_eq!(a.fragment, c.fragment);
            assert_ne!(a.fragment, o.fragment);
            w.finish().expect("finish");
        }
    }

    #[test]
    fn same_blocks_with_another_tail_share_the_blocks() {
        let (_dir, out) = scratch_out("runs.sqfs");
        let opts = WriterOptions {
            compression: Compression::None,
            block_size: 4096,
            mkfs_time: Some(0),
        };
        let mut w = Writer::create(&out, opts).expect("create");
        let base: Vec<u8> = (0..3 * 4096u32).map(|i| (i % 251) as u8).collect();
        let mut a = base.clone();
        a.extend_from_slice(b"tail a");
        let mut b = base.clone();
        b.extend_from_slice(b"another tail b");
        w.add_file(b"a", meta(1), &mut &a[..]).expect("a");
        let after_a = w.out.as_ref().expect("out").pos;
        w.add_file(b"b", meta(1), &mut &b[..]).expect("b");
        assert_eq!(w.out.as_ref().expect("out").pos, after_a);
        let (Kind::File(fa), Kind::File(fb)) = (&w.nodes[1].kind, &w.nodes[2].kind) else {
            panic!("files expected");
        };
        assert_eq!(fa.blocks_start, fb.blocks_start);
        assert_eq!(fa.block_sizes, fb.block_sizes);
        assert_ne!(fa.fragment, fb.fragment);
        let s = w.finish().expect("finish");
        assert_eq!((s.duplicate_files, s.shared_block_runs), (0, 1));
    }

    #[test]
    fn failed_finish_leaves_nothing() {
        let (dir, out) = scratch_out("gone.sqfs");
        let mut w = Writer::create(&out, WriterOptions::default()).expect("create");
        w.add_file(b"f", meta(1), &mut &b"data"[..]).expect("f");
        let temp = w.temp_path().to_path_buf();
        // The rename fails: the output's place is a non-empty directory.
        std::fs::create_dir(&out).expect("mkdir");
        std::fs::write(out.join("x"), b"x").expect("x");
        assert!(matches!(w.finish(), Err(WriteError::Rename { .. })));
        assert!(!temp.exists());
        let left: Vec<_> = std::fs::read_dir(dir.path()).expect("ls").collect();
        assert_eq!(left.len(), 1, "{left:?}");
    }

    #[test]
    fn block_hash_sees_every_byte_and_zeroes() {
        let zero = vec![0u8; 4096 + 5];
        assert!(block_hash(&zero).1);
        let base = block_hash(&zero).0;
        for at in [0, 7, 8, 31, 32, 4095, 4100] {
            let mut d = zero.clone();
            d[at] = 1;
            let (h, z) = block_hash(&d);
            assert!(!z, "{at}");
            assert_ne!(h, base, "{at}");
        }
        assert_ne!(block_hash(&[0u8; 10]).0, block_hash(&[0u8; 11]).0);
    }

    #[test]
    fn whole_file_duplicates_are_found_before_compressing() {
        let (_dir, out) = scratch_out("pre.sqfs");
        let opts = WriterOptions {
            compression: Compression::Zstd { level: 3 },
            block_size: 4096,
            mkfs_time: Some(0),
        };
        let mut w = Writer::create(&out, opts).expect("create");
        // Compressible blocks, a hole and a tail.
        let mut content: Vec<u8> = (0..5 * 4096u32)
            .map(|i| u8::try_from(i / 100).expect("below 205"))
            .collect();
        content[4096..8192].fill(0);
        content.extend_from_slice(b"tail");
        w.add_file(b"one", meta(1), &mut &content[..]).expect("one");
        let after_one = w.out.as_ref().expect("out").pos;
        w.add_file(b"two", meta(1), &mut &content[..]).expect("two");
        assert_eq!(w.out.as_ref().expect("out").pos, after_one);
        assert_eq!(w.duplicate_files, 1);
        let mut other = content.clone();
        other[3 * 4096 + 1] ^= 0x55;
        w.add_file(b"three", meta(1), &mut &other[..])
            .expect("three");
        assert_eq!(w.duplicate_files, 1);
        let (Kind::File(a), Kind::File(b)) = (&w.nodes[1].kind, &w.nodes[2].kind) else {
            panic!("files expected");
        };
        assert_eq!(a, b);
        assert_eq!(a.block_sizes[1], 0);
        w.finish().expect("finish");
    }

    #[test]
    fn zero_blocks_become_holes() {
        let (_dir, out) = scratch_out("sparse.sqfs");
        let opts = WriterOptions {
            block_size: 4096,
            ..WriterOptions::default()
        };
        let mut w = Writer::create(&out, opts).expect("create");
        let mut data = vec![0u8; 3 * 4096];
        data[4096] = 1;
        w.add_file_with_holes(b"s", meta(1), &mut &data[..], true)
            .expect("file");
        w.add_file(b"t", meta(1), &mut &data[..]).expect("file");
        let Kind::File(f) = &w.nodes[1].kind else {
            panic!("file expected");
        };
        assert_eq!(f.block_sizes[0], 0);
        assert_ne!(f.block_sizes[1], 0);
        assert_eq!(f.block_sizes[2], 0);
        assert_eq!(f.sparse, 2 * 4096);
        assert_eq!(f.fragment, None);
        // A source without holes stores the same blocks but reports none.
        let Kind::File(g) = &w.nodes[2].kind else {
            panic!("file expected");
        };
        assert_eq!(g.block_sizes, f.block_sizes);
        assert_eq!(g.sparse, 0);
        w.finish().expect("finish");
    }

    /// The superblock counts distinct uids and gids in a u16: 65,535 ids
    /// fit, the 65,536th is refused by name (it would be stored as a count
    /// of 0, which the kernel and unsquashfs reject).
    #[test]
    fn id_table_holds_65535_ids_and_refuses_the_next() {
        // Owner 0/0 (the root directory) and i/i for files 1..n: n ids.
        let write = |n: u32, out: &Path| {
            let mut w = Writer::create(out, WriterOptions::default()).expect("create");
            for i in 1..n {
                let owner = EntryMeta {
                    uid: i,
                    gid: i,
                    ..meta(1)
                };
                w.add_file(format!("f{i}").as_bytes(), owner, &mut &b""[..])
                    .expect("file");
            }
            w.finish()
        };
        let (_dir, out) = scratch_out("ids.sqfs");
        write(65_535, &out).expect("65,535 ids fit");
        let bytes = std::fs::read(&out).expect("read image");
        let sb = Superblock::decode(&mut SliceSource::new(&bytes)).expect("superblock");
        assert_eq!(sb.id_count, 65_535);

        let (_dir, out) = scratch_out("too-many.sqfs");
        let err = write(65_536, &out).expect_err("65,536 ids do not fit");
        assert!(
            matches!(
                err,
                WriteError::TooMany {
                    what: "distinct uids and gids in the id table",
                    count: 65_536,
                    max: 65_535,
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "too many distinct uids and gids in the id table: 65536 (squashfs holds at most 65535)"
        );
        assert!(!out.exists());
    }

    #[test]
    fn xattrs_longer_than_their_length_fields_are_refused() {
        let (_dir, out) = scratch_out("xattr.sqfs");
        let mut w = Writer::create(&out, WriterOptions::default()).expect("create");
        let mut name = b"user.".to_vec();
        name.resize(5 + 65_536, b'n');
        let long_name = EntryMeta {
            xattrs: vec![(name, b"v".to_vec())],
            ..meta(1)
        };
        let err = w
            .add_file(b"f", long_name, &mut &b""[..])
            .expect_err("name too long");
        assert!(
            matches!(
                &err,
                WriteError::TooLarge {
                    what: "xattr name length",
                    value: 65_536,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn superblock_and_root_are_consistent() {
        let (_dir, out) = scratch_out("sb.sqfs");
        let mut w = Writer::create(
            &out,
            WriterOptions {
                mkfs_time: Some(1234),
                ..WriterOptions::default()
            },
        )
        .expect("create");
        w.add_file(b"d/e/f", meta(99), &mut &b"hello"[..])
            .expect("f");
        w.add_symlink(b"l", meta(5), b"d/e/f").expect("l");
        let s = w.finish().expect("finish");
        assert_eq!(s.inodes, 5);
        let bytes = std::fs::read(&out).expect("read image");
        let sb = Superblock::decode(&mut SliceSource::new(&bytes)).expect("superblock");
        assert_eq!(sb.mkfs_time, 1234);
        assert_eq!(sb.inode_count, 5);
        assert_eq!(bytes.len() as u64, s.bytes);
        assert!(sb.bytes_used <= s.bytes);
        let mut src =
            SliceSource::new(&bytes[usize::try_from(sb.export_table_start).expect("offset")..]);
        let first = src.read_u64().expect("pointer");
        assert!(first >= sb.inode_table_start);
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
