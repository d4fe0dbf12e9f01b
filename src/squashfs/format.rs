//! The squashfs 4.0 on-disk format, declared once: constants, the superblock,
//! inodes, directory headers and entries, fragment, id and xattr entries.
//!
//! Everything is little-endian. Each structure has a `decode` that reads it
//! from a [`ByteSource`] with every length checked, and an `encode` that
//! appends its bytes to a `Vec<u8>`. The writer and the reader both use these,
//! so the two can never disagree about a field. Layout from the kernel's
//! `fs/squashfs/squashfs_fs.h`; see also `shared/SQUASHFS-NOTES.md`.

/// `hsqs` read as a little-endian u32.
pub const MAGIC: u32 = 0x7371_7368;
pub const VERSION_MAJOR: u16 = 4;
pub const VERSION_MINOR: u16 = 0;
pub const SUPERBLOCK_SIZE: usize = 96;

/// Uncompressed size of a metadata block (inode, directory, fragment, id,
/// export and xattr tables are stored in these).
pub const METADATA_SIZE: usize = 8192;
/// Bit 15 of a metadata block's u16 header: stored uncompressed.
pub const METADATA_UNCOMPRESSED: u16 = 1 << 15;
/// Bit 24 of a data block's or fragment's u32 size word: stored uncompressed.
pub const DATA_UNCOMPRESSED: u32 = 1 << 24;
/// The low 24 bits of a data block size word: the stored length.
pub const DATA_SIZE_MASK: u32 = DATA_UNCOMPRESSED - 1;

/// A table start of all ones means "this table is absent".
pub const TABLE_ABSENT: u64 = u64::MAX;
/// `frag_index` of a file without a tail fragment.
pub const NO_FRAGMENT: u32 = u32::MAX;
/// `xattr_idx` of an inode without xattrs.
pub const NO_XATTR: u32 = u32::MAX;

pub const MIN_BLOCK_SIZE: u32 = 4096;
pub const MAX_BLOCK_SIZE: u32 = 1 << 20;
pub const DEFAULT_BLOCK_SIZE: u32 = 128 * 1024;

/// At most this many entries follow one directory header.
pub const DIR_ENTRIES_PER_HEADER: usize = 256;
/// The inode number delta stored in a directory entry is an i16.
pub const DIR_INODE_DELTA_MAX: i64 = i16::MAX as i64;
/// Longest name squashfs stores (the kernel's SQUASHFS_NAME_LEN).
pub const MAX_NAME_LEN: usize = 256;
/// A directory inode's `file_size` is the listing size plus this (the
/// kernel counts the "." and ".." entries that are never stored).
pub const DIR_SIZE_BIAS: u32 = 3;
/// Extended directory inodes carry one index entry per this many bytes of
/// listing, so a lookup in a huge directory skips straight to the right block.
pub const DIR_INDEX_STRIDE: usize = METADATA_SIZE;
/// Most distinct uids and gids an image can hold. Inodes refer to them by a
/// u16 index, but the superblock's `id_count` is a u16 too, so 65,536 ids
/// would be stored as a count of 0, which the kernel
/// (`squashfs_read_id_index_table`: "there should always be at least one id")
/// and unsquashfs ("Bad id count in super block") refuse. mksquashfs lets
/// the 65,536th id through (`SQUASHFS_IDS`) and writes such an unreadable
/// image; cairn stops one id earlier.
pub const MAX_IDS: usize = u16::MAX as usize;

/// Superblock flags.
pub mod flags {
    pub const UNCOMPRESSED_INODES: u16 = 0x0001;
    pub const UNCOMPRESSED_DATA: u16 = 0x0002;
    pub const CHECK: u16 = 0x0004;
    pub const UNCOMPRESSED_FRAGMENTS: u16 = 0x0008;
    pub const NO_FRAGMENTS: u16 = 0x0010;
    pub const ALWAYS_FRAGMENTS: u16 = 0x0020;
    pub const DUPLICATES: u16 = 0x0040;
    pub const EXPORTABLE: u16 = 0x0080;
    pub const UNCOMPRESSED_XATTRS: u16 = 0x0100;
    pub const NO_XATTRS: u16 = 0x0200;
    pub const COMPRESSOR_OPTIONS: u16 = 0x0400;
    pub const UNCOMPRESSED_IDS: u16 = 0x0800;
}

/// The compressor id stored in the superblock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompressorId {
    Gzip = 1,
    Lzma = 2,
    Lzo = 3,
    Xz = 4,
    Lz4 = 5,
    Zstd = 6,
}

impl CompressorId {
    pub fn from_u16(raw: u16) -> Result<Self, FormatError> {
        Ok(match raw {
            1 => Self::Gzip,
            2 => Self::Lzma,
            3 => Self::Lzo,
            4 => Self::Xz,
            5 => Self::Lz4,
            6 => Self::Zstd,
            _ => return Err(FormatError::UnknownCompressor(raw)),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Gzip => "gzip",
            Self::Lzma => "lzma",
            Self::Lzo => "lzo",
            Self::Xz => "xz",
            Self::Lz4 => "lz4",
            Self::Zstd => "zstd",
        }
    }
}

/// Inode type numbers. Extended types are the basic type plus 7.
pub mod inode_type {
    pub const BASIC_DIR: u16 = 1;
    pub const BASIC_FILE: u16 = 2;
    pub const BASIC_SYMLINK: u16 = 3;
    pub const BASIC_BLOCK_DEV: u16 = 4;
    pub const BASIC_CHAR_DEV: u16 = 5;
    pub const BASIC_FIFO: u16 = 6;
    pub const BASIC_SOCKET: u16 = 7;
    pub const EXT_DIR: u16 = 8;
    pub const EXT_FILE: u16 = 9;
    pub const EXT_SYMLINK: u16 = 10;
    pub const EXT_BLOCK_DEV: u16 = 11;
    pub const EXT_CHAR_DEV: u16 = 12;
    pub const EXT_FIFO: u16 = 13;
    pub const EXT_SOCKET: u16 = 14;
    /// Distance between a basic type and its extended twin.
    pub const EXTENDED_OFFSET: u16 = 7;
}

/// xattr key prefixes squashfs can store; the type sits in a u16 beside the
/// name without its prefix. `system.*` (POSIX ACLs) has no type.
pub mod xattr_type {
    pub const USER: u16 = 0;
    pub const TRUSTED: u16 = 1;
    pub const SECURITY: u16 = 2;
    /// Set on a key whose value is stored out of line (a u64 reference to
    /// a value stored elsewhere); the writer may use it for shared values.
    pub const OUT_OF_LINE: u16 = 0x100;
    pub const PREFIXES: [(u16, &[u8]); 3] = [
        (USER, b"user."),
        (TRUSTED, b"trusted."),
        (SECURITY, b"security."),
    ];
}

/// What can go wrong decoding a structure. Callers (the reader) add where
/// in the image it happened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("unexpected end of data: needed {needed} more bytes")]
    Truncated { needed: usize },
    #[error("bad magic {0:#010x}: not a squashfs image")]
    BadMagic(u32),
    #[error("unsupported squashfs version {0}.{1} (only 4.0 is supported)")]
    BadVersion(u16, u16),
    #[error("unknown compressor id {0}")]
    UnknownCompressor(u16),
    #[error("bad block size {size} with block_log {log}")]
    BadBlockSize { size: u32, log: u16 },
    #[error("unknown inode type {0}")]
    UnknownInodeType(u16),
    #[error("name of {0} bytes is longer than {MAX_NAME_LEN}")]
    NameTooLong(usize),
    #[error("{what} is {value}, out of range")]
    OutOfRange { what: &'static str, value: u64 },
}

/// `value` as the integer type of the on-disk field `what`, or
/// [`FormatError::OutOfRange`] naming that field: how an encoder (or the
/// writer laying out a table) narrows a count, size or offset.
pub fn fit<T: TryFrom<u64>>(what: &'static str, value: u64) -> Result<T, FormatError> {
    T::try_from(value).map_err(|_| FormatError::OutOfRange { what, value })
}

/// The bytes of a block that holds what is left of a file: `remaining`,
/// capped at `block_size`. Computed in u32, so it needs no narrowing cast.
pub fn bytes_in_block(remaining: u64, block_size: u32) -> u32 {
    // A `remaining` past u32::MAX is certainly more than one block.
    u32::try_from(remaining).map_or(block_size, |r| r.min(block_size))
}

/// Where byte `pos` of a file falls inside its data block.
pub fn offset_in_block(pos: u64, block_size: u32) -> u32 {
    // The remainder is below block_size, a u32.
    #[allow(clippy::cast_possible_truncation)]
    let offset = (pos % u64::from(block_size)) as u32;
    offset
}

/// Where uncompressed position `pos` of a metadata table falls inside its
/// 8 KiB block: the low 16 bits of a metadata reference.
pub fn metadata_offset(pos: u64) -> u16 {
    const { assert!(METADATA_SIZE <= 1 << 16) };
    // The remainder is below METADATA_SIZE, which fits in a u16 (checked
    // above at compile time).
    #[allow(clippy::cast_possible_truncation)]
    let offset = (pos % METADATA_SIZE as u64) as u16;
    offset
}

/// The u16 header of a metadata block stored raw: its length (at most
/// 8 KiB) with [`METADATA_UNCOMPRESSED`] set.
pub fn raw_metadata_header(len: usize) -> Result<u16, FormatError> {
    if len > METADATA_SIZE {
        return Err(FormatError::OutOfRange {
            what: "metadata block length",
            value: len as u64,
        });
    }
    Ok(fit::<u16>("metadata block length", len as u64)? | METADATA_UNCOMPRESSED)
}

/// The u32 size word of a data or fragment block: its stored length (24
/// bits) with [`DATA_UNCOMPRESSED`] set if it is stored raw.
pub fn data_size_word(len: usize, raw: bool) -> Result<u32, FormatError> {
    let word = fit::<u32>("data block length", len as u64)?;
    if word & !DATA_SIZE_MASK != 0 {
        return Err(FormatError::OutOfRange {
            what: "data block length",
            value: len as u64,
        });
    }
    Ok(word | if raw { DATA_UNCOMPRESSED } else { 0 })
}

/// A seconds-since-the-epoch time as the u32 squashfs stores. Before the
/// epoch rounds up to 0, as mksquashfs does ("cannot be stored in Squashfs.
/// Rounding to 1970-01-01"); after 2106 it saturates at u32::MAX, where
/// mksquashfs would truncate the time_t into an earlier date.
pub fn mtime_field(secs: i64) -> u32 {
    u32::try_from(secs.max(0)).unwrap_or(u32::MAX)
}

/// A directory entry's i16 inode delta as its u16 on-disk bits, and back
/// (two's complement, as the kernel reads it).
fn delta_bits(delta: i16) -> u16 {
    u16::from_le_bytes(delta.to_le_bytes())
}

fn delta_from_bits(bits: u16) -> i16 {
    i16::from_le_bytes(bits.to_le_bytes())
}

/// Where `decode` functions get their bytes: a plain slice, or the reader's
/// stream over consecutive metadata blocks (an inode may straddle two).
pub trait ByteSource {
    /// Fill `buf` completely or fail with [`FormatError::Truncated`].
    fn read_bytes(&mut self, buf: &mut [u8]) -> Result<(), FormatError>;

    fn read_u16(&mut self) -> Result<u16, FormatError> {
        let mut b = [0; 2];
        self.read_bytes(&mut b)?;
        Ok(u16::from_le_bytes(b))
    }

    fn read_u32(&mut self) -> Result<u32, FormatError> {
        let mut b = [0; 4];
        self.read_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn read_u64(&mut self) -> Result<u64, FormatError> {
        let mut b = [0; 8];
        self.read_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Read `len` bytes into a new vector. `len` comes from the image, so the
    /// vector grows as bytes actually arrive instead of trusting it upfront.
    fn read_vec(&mut self, len: usize) -> Result<Vec<u8>, FormatError> {
        let mut out = Vec::with_capacity(len.min(4096));
        let mut chunk = [0u8; 4096];
        let mut left = len;
        while left > 0 {
            let n = left.min(chunk.len());
            self.read_bytes(&mut chunk[..n])?;
            out.extend_from_slice(&chunk[..n]);
            left -= n;
        }
        Ok(out)
    }
}

/// A [`ByteSource`] over a byte slice.
#[derive(Debug, Clone)]
pub struct SliceSource<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> SliceSource<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> usize {
        self.pos
    }
}

impl ByteSource for SliceSource<'_> {
    fn read_bytes(&mut self, buf: &mut [u8]) -> Result<(), FormatError> {
        let rest = &self.data[self.pos..];
        if rest.len() < buf.len() {
            return Err(FormatError::Truncated {
                needed: buf.len() - rest.len(),
            });
        }
        buf.copy_from_slice(&rest[..buf.len()]);
        self.pos += buf.len();
        Ok(())
    }
}

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Name lengths are stored as `len - 1` (a name is never empty), at most
/// [`MAX_NAME_LEN`] - 1.
fn name_len_field(name: &[u8]) -> Result<u16, FormatError> {
    if name.len() > MAX_NAME_LEN {
        return Err(FormatError::NameTooLong(name.len()));
    }
    match name.len().checked_sub(1) {
        Some(field) => fit("name length", field as u64),
        None => Err(FormatError::OutOfRange {
            what: "name length",
            value: 0,
        }),
    }
}

/// The 96-byte superblock at offset 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    pub inode_count: u32,
    pub mkfs_time: u32,
    pub block_size: u32,
    pub fragment_count: u32,
    pub compressor: CompressorId,
    pub block_log: u16,
    pub flags: u16,
    pub id_count: u16,
    pub root_inode: InodeRef,
    /// Bytes of the image actually used (before the 4 KiB padding).
    pub bytes_used: u64,
    pub id_table_start: u64,
    pub xattr_id_table_start: u64,
    pub inode_table_start: u64,
    pub directory_table_start: u64,
    pub fragment_table_start: u64,
    pub export_table_start: u64,
}

impl Superblock {
    pub fn decode(src: &mut impl ByteSource) -> Result<Self, FormatError> {
        let magic = src.read_u32()?;
        if magic != MAGIC {
            return Err(FormatError::BadMagic(magic));
        }
        let inode_count = src.read_u32()?;
        let mkfs_time = src.read_u32()?;
        let block_size = src.read_u32()?;
        let fragment_count = src.read_u32()?;
        let compressor = CompressorId::from_u16(src.read_u16()?)?;
        let block_log = src.read_u16()?;
        let flags = src.read_u16()?;
        let id_count = src.read_u16()?;
        let major = src.read_u16()?;
        let minor = src.read_u16()?;
        if (major, minor) != (VERSION_MAJOR, VERSION_MINOR) {
            return Err(FormatError::BadVersion(major, minor));
        }
        if !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size)
            || !block_size.is_power_of_two()
            || u32::from(block_log) != block_size.trailing_zeros()
        {
            return Err(FormatError::BadBlockSize {
                size: block_size,
                log: block_log,
            });
        }
        Ok(Self {
            inode_count,
            mkfs_time,
            block_size,
            fragment_count,
            compressor,
            block_log,
            flags,
            id_count,
            root_inode: InodeRef(src.read_u64()?),
            bytes_used: src.read_u64()?,
            id_table_start: src.read_u64()?,
            xattr_id_table_start: src.read_u64()?,
            inode_table_start: src.read_u64()?,
            directory_table_start: src.read_u64()?,
            fragment_table_start: src.read_u64()?,
            export_table_start: src.read_u64()?,
        })
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        put_u32(out, MAGIC);
        put_u32(out, self.inode_count);
        put_u32(out, self.mkfs_time);
        put_u32(out, self.block_size);
        put_u32(out, self.fragment_count);
        put_u16(out, self.compressor as u16);
        put_u16(out, self.block_log);
        put_u16(out, self.flags);
        put_u16(out, self.id_count);
        put_u16(out, VERSION_MAJOR);
        put_u16(out, VERSION_MINOR);
        put_u64(out, self.root_inode.0);
        put_u64(out, self.bytes_used);
        put_u64(out, self.id_table_start);
        put_u64(out, self.xattr_id_table_start);
        put_u64(out, self.inode_table_start);
        put_u64(out, self.directory_table_start);
        put_u64(out, self.fragment_table_start);
        put_u64(out, self.export_table_start);
    }

    pub fn has_flag(&self, flag: u16) -> bool {
        self.flags & flag != 0
    }
}

/// A reference to an inode (or a position in any metadata table): the byte
/// offset of its metadata block from the table start in the upper 48 bits,
/// the offset inside the uncompressed block in the lower 16.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InodeRef(pub u64);

impl InodeRef {
    pub fn new(block_start: u64, offset: u16) -> Self {
        Self((block_start << 16) | u64::from(offset))
    }

    /// Offset of the metadata block from the start of its table.
    pub fn block_start(self) -> u64 {
        self.0 >> 16
    }

    /// Offset inside the uncompressed metadata block.
    pub fn offset(self) -> u16 {
        (self.0 & 0xffff) as u16
    }
}

/// The 16-byte header every inode starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InodeHeader {
    pub inode_type: u16,
    /// Permission bits only (`mode & 0o7777`); the type comes from `inode_type`.
    pub permissions: u16,
    pub uid_idx: u16,
    pub gid_idx: u16,
    pub mtime: u32,
    pub inode_number: u32,
}

impl InodeHeader {
    pub fn decode(src: &mut impl ByteSource) -> Result<Self, FormatError> {
        Ok(Self {
            inode_type: src.read_u16()?,
            permissions: src.read_u16()?,
            uid_idx: src.read_u16()?,
            gid_idx: src.read_u16()?,
            mtime: src.read_u32()?,
            inode_number: src.read_u32()?,
        })
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        put_u16(out, self.inode_type);
        put_u16(out, self.permissions);
        put_u16(out, self.uid_idx);
        put_u16(out, self.gid_idx);
        put_u32(out, self.mtime);
        put_u32(out, self.inode_number);
    }
}

/// One entry of an extended directory inode's index: where the listing
/// crosses into a new metadata block, and the first name stored there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirIndexEntry {
    /// Byte offset of this point in the directory listing.
    pub index: u32,
    /// Start of the directory-table metadata block, relative to the table.
    pub start: u32,
    pub name: Vec<u8>,
}

/// A directory inode (basic or extended; `extended` says which is stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirInode {
    pub extended: bool,
    /// Start of the listing's first metadata block, relative to the table.
    pub block_start: u32,
    /// Offset of the listing inside that (uncompressed) block.
    pub block_offset: u16,
    /// Listing size plus [`DIR_SIZE_BIAS`].
    pub file_size: u32,
    pub link_count: u32,
    pub parent_inode: u32,
    pub xattr_idx: u32,
    pub index: Vec<DirIndexEntry>,
}

/// A regular file inode (basic or extended).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInode {
    pub extended: bool,
    /// Absolute offset of the first data block in the image.
    pub blocks_start: u64,
    pub file_size: u64,
    /// Bytes saved by holes (extended only).
    pub sparse: u64,
    pub link_count: u32,
    pub frag_index: u32,
    /// Offset of the tail inside its fragment block.
    pub frag_offset: u32,
    pub xattr_idx: u32,
    /// One size word per full (or, without a fragment, final) block.
    pub block_sizes: Vec<u32>,
}

impl FileInode {
    /// How many block size words follow a file inode of `file_size` bytes.
    pub fn block_count(file_size: u64, block_size: u32, has_fragment: bool) -> u64 {
        let bs = u64::from(block_size);
        if has_fragment {
            file_size / bs
        } else {
            file_size.div_ceil(bs)
        }
    }

    /// The body of a basic or extended file inode, with its block size
    /// words (how many: from the size, `block_size` and the fragment).
    fn decode(
        src: &mut impl ByteSource,
        extended: bool,
        block_size: u32,
    ) -> Result<Self, FormatError> {
        let (blocks_start, file_size, sparse, link_count, frag_index, frag_offset, xattr_idx);
        if extended {
            blocks_start = src.read_u64()?;
            file_size = src.read_u64()?;
            sparse = src.read_u64()?;
            link_count = src.read_u32()?;
            frag_index = src.read_u32()?;
            frag_offset = src.read_u32()?;
            xattr_idx = src.read_u32()?;
        } else {
            blocks_start = u64::from(src.read_u32()?);
            frag_index = src.read_u32()?;
            frag_offset = src.read_u32()?;
            file_size = u64::from(src.read_u32()?);
            sparse = 0;
            link_count = 1;
            xattr_idx = NO_XATTR;
        }
        let count = FileInode::block_count(file_size, block_size, frag_index != NO_FRAGMENT);
        // The count comes from the image: grow as words arrive, so a
        // hostile file_size fails with Truncated, not an allocation.
        let mut block_sizes = Vec::with_capacity(count.min(1024) as usize);
        for _ in 0..count {
            block_sizes.push(src.read_u32()?);
        }
        Ok(FileInode {
            extended,
            blocks_start,
            file_size,
            sparse,
            link_count,
            frag_index,
            frag_offset,
            xattr_idx,
            block_sizes,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SymlinkInode {
    pub extended: bool,
    pub link_count: u32,
    pub target: Vec<u8>,
    pub xattr_idx: u32,
}

/// Block and character devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInode {
    pub extended: bool,
    pub link_count: u32,
    /// Encoded as squashfs (and the kernel's old_encode_dev/new_encode_dev)
    /// does; see [`encode_rdev`].
    pub rdev: u32,
    pub xattr_idx: u32,
}

/// FIFOs and sockets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpcInode {
    pub extended: bool,
    pub link_count: u32,
    pub xattr_idx: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InodeBody {
    Dir(DirInode),
    File(FileInode),
    Symlink(SymlinkInode),
    BlockDev(DeviceInode),
    CharDev(DeviceInode),
    Fifo(IpcInode),
    Socket(IpcInode),
}

/// A whole inode: header and type-specific body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inode {
    pub header: InodeHeader,
    pub body: InodeBody,
}

impl DirInode {
    fn decode_basic(src: &mut impl ByteSource) -> Result<Self, FormatError> {
        let block_start = src.read_u32()?;
        let link_count = src.read_u32()?;
        let file_size = u32::from(src.read_u16()?);
        let block_offset = src.read_u16()?;
        let parent_inode = src.read_u32()?;
        Ok(DirInode {
            extended: false,
            block_start,
            block_offset,
            file_size,
            link_count,
            parent_inode,
            xattr_idx: NO_XATTR,
            index: Vec::new(),
        })
    }

    fn decode_extended(src: &mut impl ByteSource) -> Result<Self, FormatError> {
        let link_count = src.read_u32()?;
        let file_size = src.read_u32()?;
        let block_start = src.read_u32()?;
        let parent_inode = src.read_u32()?;
        let index_count = src.read_u16()?;
        let block_offset = src.read_u16()?;
        let xattr_idx = src.read_u32()?;
        let mut index = Vec::new();
        for _ in 0..index_count {
            let idx = src.read_u32()?;
            let start = src.read_u32()?;
            let name_size = src.read_u32()? as usize + 1;
            if name_size > MAX_NAME_LEN {
                return Err(FormatError::NameTooLong(name_size));
            }
            index.push(DirIndexEntry {
                index: idx,
                start,
                name: src.read_vec(name_size)?,
            });
        }
        Ok(DirInode {
            extended: true,
            block_start,
            block_offset,
            file_size,
            link_count,
            parent_inode,
            xattr_idx,
            index,
        })
    }
}

impl SymlinkInode {
    fn decode(src: &mut impl ByteSource, extended: bool) -> Result<Self, FormatError> {
        let link_count = src.read_u32()?;
        let target_size = src.read_u32()? as usize;
        // PATH_MAX: the kernel refuses longer targets as well.
        if target_size > 4096 {
            return Err(FormatError::OutOfRange {
                what: "symlink target size",
                value: target_size as u64,
            });
        }
        let target = src.read_vec(target_size)?;
        let xattr_idx = if extended { src.read_u32()? } else { NO_XATTR };
        Ok(SymlinkInode {
            extended,
            link_count,
            target,
            xattr_idx,
        })
    }
}

impl Inode {
    /// Decode an inode; `block_size` is needed to know how many block size
    /// words a file inode has. The header's `inode_type` decides the body.
    pub fn decode(src: &mut impl ByteSource, block_size: u32) -> Result<Self, FormatError> {
        use inode_type::*;
        let header = InodeHeader::decode(src)?;
        let body = match header.inode_type {
            BASIC_DIR => InodeBody::Dir(DirInode::decode_basic(src)?),
            EXT_DIR => InodeBody::Dir(DirInode::decode_extended(src)?),
            BASIC_FILE | EXT_FILE => InodeBody::File(FileInode::decode(
                src,
                header.inode_type == EXT_FILE,
                block_size,
            )?),
            BASIC_SYMLINK | EXT_SYMLINK => {
                InodeBody::Symlink(SymlinkInode::decode(src, header.inode_type == EXT_SYMLINK)?)
            }
            BASIC_BLOCK_DEV | BASIC_CHAR_DEV | EXT_BLOCK_DEV | EXT_CHAR_DEV => {
                let extended = header.inode_type >= EXT_DIR;
                let dev = DeviceInode {
                    extended,
                    link_count: src.read_u32()?,
                    rdev: src.read_u32()?,
                    xattr_idx: if extended { src.read_u32()? } else { NO_XATTR },
                };
                if matches!(header.inode_type, BASIC_BLOCK_DEV | EXT_BLOCK_DEV) {
                    InodeBody::BlockDev(dev)
                } else {
                    InodeBody::CharDev(dev)
                }
            }
            BASIC_FIFO | BASIC_SOCKET | EXT_FIFO | EXT_SOCKET => {
                let extended = header.inode_type >= EXT_DIR;
                let ipc = IpcInode {
                    extended,
                    link_count: src.read_u32()?,
                    xattr_idx: if extended { src.read_u32()? } else { NO_XATTR },
                };
                if matches!(header.inode_type, BASIC_FIFO | EXT_FIFO) {
                    InodeBody::Fifo(ipc)
                } else {
                    InodeBody::Socket(ipc)
                }
            }
            other => return Err(FormatError::UnknownInodeType(other)),
        };
        Ok(Self { header, body })
    }

    /// Append the inode's bytes. `header.inode_type` is recomputed from the
    /// body (and its `extended` flag), so the two cannot disagree. A value
    /// its field cannot hold (a basic inode's 32-bit size, a name) is an
    /// error naming the field; `out` may then hold part of the inode.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), FormatError> {
        let mut header = self.header;
        header.inode_type = self.body.inode_type();
        header.encode(out);
        match &self.body {
            InodeBody::Dir(d) if d.extended => {
                put_u32(out, d.link_count);
                put_u32(out, d.file_size);
                put_u32(out, d.block_start);
                put_u32(out, d.parent_inode);
                put_u16(out, fit("directory index count", d.index.len() as u64)?);
                put_u16(out, d.block_offset);
                put_u32(out, d.xattr_idx);
                for e in &d.index {
                    put_u32(out, e.index);
                    put_u32(out, e.start);
                    put_u32(out, u32::from(name_len_field(&e.name)?));
                    out.extend_from_slice(&e.name);
                }
            }
            InodeBody::Dir(d) => {
                put_u32(out, d.block_start);
                put_u32(out, d.link_count);
                put_u16(out, fit("basic directory file_size", d.file_size.into())?);
                put_u16(out, d.block_offset);
                put_u32(out, d.parent_inode);
            }
            InodeBody::File(f) if f.extended => {
                put_u64(out, f.blocks_start);
                put_u64(out, f.file_size);
                put_u64(out, f.sparse);
                put_u32(out, f.link_count);
                put_u32(out, f.frag_index);
                put_u32(out, f.frag_offset);
                put_u32(out, f.xattr_idx);
                f.block_sizes.iter().for_each(|&s| put_u32(out, s));
            }
            InodeBody::File(f) => {
                put_u32(out, fit("basic file blocks_start", f.blocks_start)?);
                put_u32(out, f.frag_index);
                put_u32(out, f.frag_offset);
                put_u32(out, fit("basic file file_size", f.file_size)?);
                f.block_sizes.iter().for_each(|&s| put_u32(out, s));
            }
            InodeBody::Symlink(s) => {
                put_u32(out, s.link_count);
                put_u32(out, fit("symlink target length", s.target.len() as u64)?);
                out.extend_from_slice(&s.target);
                if s.extended {
                    put_u32(out, s.xattr_idx);
                }
            }
            InodeBody::BlockDev(d) | InodeBody::CharDev(d) => {
                put_u32(out, d.link_count);
                put_u32(out, d.rdev);
                if d.extended {
                    put_u32(out, d.xattr_idx);
                }
            }
            InodeBody::Fifo(i) | InodeBody::Socket(i) => {
                put_u32(out, i.link_count);
                if i.extended {
                    put_u32(out, i.xattr_idx);
                }
            }
        }
        Ok(())
    }
}

impl InodeBody {
    /// The basic type number (1..=7) of this body, as directory entries store it.
    pub fn basic_type(&self) -> u16 {
        use inode_type::*;
        match self {
            Self::Dir(_) => BASIC_DIR,
            Self::File(_) => BASIC_FILE,
            Self::Symlink(_) => BASIC_SYMLINK,
            Self::BlockDev(_) => BASIC_BLOCK_DEV,
            Self::CharDev(_) => BASIC_CHAR_DEV,
            Self::Fifo(_) => BASIC_FIFO,
            Self::Socket(_) => BASIC_SOCKET,
        }
    }

    pub fn is_extended(&self) -> bool {
        match self {
            Self::Dir(d) => d.extended,
            Self::File(f) => f.extended,
            Self::Symlink(s) => s.extended,
            Self::BlockDev(d) | Self::CharDev(d) => d.extended,
            Self::Fifo(i) | Self::Socket(i) => i.extended,
        }
    }

    /// The type number stored in the inode header.
    pub fn inode_type(&self) -> u16 {
        self.basic_type()
            + if self.is_extended() {
                inode_type::EXTENDED_OFFSET
            } else {
                0
            }
    }

    pub fn link_count(&self) -> u32 {
        match self {
            Self::Dir(d) => d.link_count,
            Self::File(f) => f.link_count,
            Self::Symlink(s) => s.link_count,
            Self::BlockDev(d) | Self::CharDev(d) => d.link_count,
            Self::Fifo(i) | Self::Socket(i) => i.link_count,
        }
    }

    pub fn xattr_idx(&self) -> u32 {
        match self {
            Self::Dir(d) => d.xattr_idx,
            Self::File(f) => f.xattr_idx,
            Self::Symlink(s) => s.xattr_idx,
            Self::BlockDev(d) | Self::CharDev(d) => d.xattr_idx,
            Self::Fifo(i) | Self::Socket(i) => i.xattr_idx,
        }
    }

    /// The `S_IFMT` bits for this type, to rebuild a full `st_mode`.
    pub fn file_type_bits(&self) -> u32 {
        match self {
            Self::Dir(_) => libc::S_IFDIR,
            Self::File(_) => libc::S_IFREG,
            Self::Symlink(_) => libc::S_IFLNK,
            Self::BlockDev(_) => libc::S_IFBLK,
            Self::CharDev(_) => libc::S_IFCHR,
            Self::Fifo(_) => libc::S_IFIFO,
            Self::Socket(_) => libc::S_IFSOCK,
        }
    }
}

/// The header before a run of directory entries: all of them point into the
/// same inode metadata block, with inode numbers near `inode_number`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirHeader {
    /// Number of entries that follow (stored as count - 1).
    pub count: u32,
    /// Start of the inode metadata block, relative to the inode table.
    pub start: u32,
    pub inode_number: u32,
}

impl DirHeader {
    pub const SIZE: usize = 12;

    pub fn decode(src: &mut impl ByteSource) -> Result<Self, FormatError> {
        let count = src.read_u32()?;
        if count as usize >= DIR_ENTRIES_PER_HEADER {
            return Err(FormatError::OutOfRange {
                what: "directory header entry count",
                value: u64::from(count) + 1,
            });
        }
        Ok(Self {
            count: count + 1,
            start: src.read_u32()?,
            inode_number: src.read_u32()?,
        })
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        put_u32(out, self.count.saturating_sub(1));
        put_u32(out, self.start);
        put_u32(out, self.inode_number);
    }
}

/// One name in a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// Offset of the inode inside the metadata block named by the header.
    pub offset: u16,
    /// Inode number minus the header's `inode_number`.
    pub inode_delta: i16,
    /// Basic inode type (1..=7).
    pub inode_type: u16,
    pub name: Vec<u8>,
}

impl DirEntry {
    pub fn decode(src: &mut impl ByteSource) -> Result<Self, FormatError> {
        let offset = src.read_u16()?;
        let inode_delta = delta_from_bits(src.read_u16()?);
        let inode_type = src.read_u16()?;
        let name_len = usize::from(src.read_u16()?) + 1;
        if name_len > MAX_NAME_LEN {
            return Err(FormatError::NameTooLong(name_len));
        }
        Ok(Self {
            offset,
            inode_delta,
            inode_type,
            name: src.read_vec(name_len)?,
        })
    }

    /// Append the entry; an empty or too long name is an error.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), FormatError> {
        let name_len = name_len_field(&self.name)?;
        put_u16(out, self.offset);
        put_u16(out, delta_bits(self.inode_delta));
        put_u16(out, self.inode_type);
        put_u16(out, name_len);
        out.extend_from_slice(&self.name);
        Ok(())
    }
}

/// A fragment table entry: where a block of packed file tails is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragmentEntry {
    pub start: u64,
    /// Size word: stored length plus [`DATA_UNCOMPRESSED`] if stored raw.
    pub size: u32,
}

impl FragmentEntry {
    pub const SIZE: usize = 16;

    pub fn decode(src: &mut impl ByteSource) -> Result<Self, FormatError> {
        let start = src.read_u64()?;
        let size = src.read_u32()?;
        let _unused = src.read_u32()?;
        Ok(Self { start, size })
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        put_u64(out, self.start);
        put_u32(out, self.size);
        put_u32(out, 0);
    }
}

/// An entry of the xattr id table: where one inode's set of xattrs starts in
/// the xattr key/value area, how many there are and their total size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XattrId {
    /// Reference (block start << 16 | offset) into the key/value area.
    pub xattr_ref: u64,
    pub count: u32,
    pub size: u32,
}

impl XattrId {
    pub const SIZE: usize = 16;

    pub fn decode(src: &mut impl ByteSource) -> Result<Self, FormatError> {
        Ok(Self {
            xattr_ref: src.read_u64()?,
            count: src.read_u32()?,
            size: src.read_u32()?,
        })
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        put_u64(out, self.xattr_ref);
        put_u32(out, self.count);
        put_u32(out, self.size);
    }
}

/// The header at `xattr_id_table_start`, followed by u64 pointers to the
/// metadata blocks holding the [`XattrId`] entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XattrTableHeader {
    /// Absolute start of the key/value metadata blocks.
    pub kv_start: u64,
    pub id_count: u32,
}

impl XattrTableHeader {
    pub const SIZE: usize = 16;

    pub fn decode(src: &mut impl ByteSource) -> Result<Self, FormatError> {
        let kv_start = src.read_u64()?;
        let id_count = src.read_u32()?;
        let _unused = src.read_u32()?;
        Ok(Self { kv_start, id_count })
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        put_u64(out, self.kv_start);
        put_u32(out, self.id_count);
        put_u32(out, 0);
    }
}

/// Pack a device number the way squashfs stores it: the kernel's
/// `new_encode_dev` (12-bit major, 20-bit minor split around it).
pub fn encode_rdev(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

/// The inverse of [`encode_rdev`]: `(major, minor)`.
pub fn decode_rdev(rdev: u32) -> (u32, u32) {
    let major = (rdev >> 8) & 0xfff;
    let minor = (rdev & 0xff) | ((rdev >> 12) & 0xfff00);
    (major, minor)
}

/// Split a full xattr name (`user.foo`) into its squashfs type and the name
/// without the prefix; `None` for prefixes squashfs cannot store.
pub fn split_xattr_name(full: &[u8]) -> Option<(u16, &[u8])> {
    xattr_type::PREFIXES
        .iter()
        .find_map(|(ty, prefix)| full.strip_prefix(*prefix).map(|rest| (*ty, rest)))
}

/// The full xattr name for a squashfs type (without the out-of-line flag)
/// and a stored name.
pub fn join_xattr_name(ty: u16, name: &[u8]) -> Option<Vec<u8>> {
    let prefix = xattr_type::PREFIXES
        .iter()
        .find(|(t, _)| *t == ty & !xattr_type::OUT_OF_LINE)?
        .1;
    let mut full = prefix.to_vec();
    full.extend_from_slice(name);
    Some(full)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(inode: &Inode, block_size: u32) {
        let mut bytes = Vec::new();
        inode.encode(&mut bytes).expect("encode");
        let back = Inode::decode(&mut SliceSource::new(&bytes), block_size).expect("decode");
        assert_eq!(&back, inode);
    }

    fn header(ty: u16) -> InodeHeader {
        InodeHeader {
            inode_type: ty,
            permissions: 0o4755,
            uid_idx: 1,
            gid_idx: 2,
            mtime: 1_700_000_000,
            inode_number: 42,
        }
    }

    #[test]
    fn superblock_roundtrip_is_96_bytes() {
        let sb = Superblock {
            inode_count: 7,
            mkfs_time: 1,
            block_size: DEFAULT_BLOCK_SIZE,
            fragment_count: 2,
            compressor: CompressorId::Zstd,
            block_log: 17,
            flags: flags::EXPORTABLE,
            id_count: 1,
            root_inode: InodeRef::new(0x1234, 0x56),
            bytes_used: 4096,
            id_table_start: 1,
            xattr_id_table_start: TABLE_ABSENT,
            inode_table_start: 3,
            directory_table_start: 4,
            fragment_table_start: 5,
            export_table_start: 6,
        };
        let mut bytes = Vec::new();
        sb.encode(&mut bytes);
        assert_eq!(bytes.len(), SUPERBLOCK_SIZE);
        assert_eq!(&bytes[..4], b"hsqs");
        assert_eq!(Superblock::decode(&mut SliceSource::new(&bytes)), Ok(sb));
    }

    #[test]
    fn superblock_rejects_bad_block_log() {
        let mut bytes = vec![0u8; SUPERBLOCK_SIZE];
        bytes[..4].copy_from_slice(b"hsqs");
        bytes[12..16].copy_from_slice(&131072u32.to_le_bytes());
        bytes[20..22].copy_from_slice(&6u16.to_le_bytes());
        bytes[22..24].copy_from_slice(&16u16.to_le_bytes());
        bytes[28..30].copy_from_slice(&4u16.to_le_bytes());
        assert!(matches!(
            Superblock::decode(&mut SliceSource::new(&bytes)),
            Err(FormatError::BadBlockSize { .. })
        ));
    }

    #[test]
    fn every_inode_kind_roundtrips() {
        use inode_type::*;
        let file = FileInode {
            extended: false,
            blocks_start: 96,
            file_size: 300_000,
            sparse: 0,
            link_count: 1,
            frag_index: 3,
            frag_offset: 100,
            xattr_idx: NO_XATTR,
            block_sizes: vec![1000, 2000],
        };
        roundtrip(
            &Inode {
                header: header(BASIC_FILE),
                body: InodeBody::File(file.clone()),
            },
            DEFAULT_BLOCK_SIZE,
        );
        roundtrip(
            &Inode {
                header: header(EXT_FILE),
                body: InodeBody::File(FileInode {
                    extended: true,
                    file_size: 5 << 30,
                    frag_index: NO_FRAGMENT,
                    block_sizes: vec![0; 40960],
                    sparse: 5 << 30,
                    link_count: 3,
                    xattr_idx: 0,
                    ..file
                }),
            },
            DEFAULT_BLOCK_SIZE,
        );
        let dir = DirInode {
            extended: false,
            block_start: 8,
            block_offset: 9,
            file_size: 30,
            link_count: 3,
            parent_inode: 1,
            xattr_idx: NO_XATTR,
            index: vec![],
        };
        roundtrip(
            &Inode {
                header: header(BASIC_DIR),
                body: InodeBody::Dir(dir.clone()),
            },
            4096,
        );
        roundtrip(
            &Inode {
                header: header(EXT_DIR),
                body: InodeBody::Dir(DirInode {
                    extended: true,
                    xattr_idx: 4,
                    index: vec![DirIndexEntry {
                        index: 8192,
                        start: 100,
                        name: b"zzz".to_vec(),
                    }],
                    ..dir
                }),
            },
            4096,
        );
        roundtrip(
            &Inode {
                header: header(EXT_SYMLINK),
                body: InodeBody::Symlink(SymlinkInode {
                    extended: true,
                    link_count: 1,
                    target: b"../lib".to_vec(),
                    xattr_idx: 0,
                }),
            },
            4096,
        );
        roundtrip(
            &Inode {
                header: header(BASIC_CHAR_DEV),
                body: InodeBody::CharDev(DeviceInode {
                    extended: false,
                    link_count: 1,
                    rdev: encode_rdev(1, 3),
                    xattr_idx: NO_XATTR,
                }),
            },
            4096,
        );
        roundtrip(
            &Inode {
                header: header(EXT_FIFO),
                body: InodeBody::Fifo(IpcInode {
                    extended: true,
                    link_count: 2,
                    xattr_idx: 1,
                }),
            },
            4096,
        );
    }

    #[test]
    fn hostile_block_count_fails_without_allocating() {
        let mut bytes = Vec::new();
        header(inode_type::EXT_FILE).encode(&mut bytes);
        put_u64(&mut bytes, 0);
        put_u64(&mut bytes, u64::MAX); // file_size
        put_u64(&mut bytes, 0);
        put_u32(&mut bytes, 1);
        put_u32(&mut bytes, NO_FRAGMENT);
        put_u32(&mut bytes, 0);
        put_u32(&mut bytes, NO_XATTR);
        let err = Inode::decode(&mut SliceSource::new(&bytes), 4096).expect_err("truncated");
        assert!(matches!(err, FormatError::Truncated { .. }));
    }

    #[test]
    fn rdev_roundtrips_large_minors() {
        for (maj, min) in [(1, 3), (8, 1), (259, 65536), (4095, 0xfffff)] {
            assert_eq!(decode_rdev(encode_rdev(maj, min)), (maj, min));
        }
        // The classic 8-bit encoding stays compatible with old tools.
        assert_eq!(encode_rdev(1, 3), 0x103);
    }

    #[test]
    fn dir_entry_and_header_roundtrip() {
        let mut bytes = Vec::new();
        let h = DirHeader {
            count: 256,
            start: 8192,
            inode_number: 100,
        };
        h.encode(&mut bytes);
        let e = DirEntry {
            offset: 32,
            inode_delta: -5,
            inode_type: inode_type::BASIC_FILE,
            name: vec![b'a'; 255],
        };
        e.encode(&mut bytes).expect("encode");
        let mut src = SliceSource::new(&bytes);
        assert_eq!(DirHeader::decode(&mut src), Ok(h));
        assert_eq!(DirEntry::decode(&mut src), Ok(e));
        assert_eq!(src.position(), bytes.len());
    }

    #[test]
    fn encoders_refuse_values_their_fields_cannot_hold() {
        let basic_file = |blocks_start, file_size| Inode {
            header: header(inode_type::BASIC_FILE),
            body: InodeBody::File(FileInode {
                extended: false,
                blocks_start,
                file_size,
                sparse: 0,
                link_count: 1,
                frag_index: NO_FRAGMENT,
                frag_offset: 0,
                xattr_idx: NO_XATTR,
                block_sizes: Vec::new(),
            }),
        };
        let err = |inode: Inode| inode.encode(&mut Vec::new()).expect_err("out of range");
        assert_eq!(
            err(basic_file(0, 1 << 32)),
            FormatError::OutOfRange {
                what: "basic file file_size",
                value: 1 << 32
            }
        );
        assert_eq!(
            err(basic_file(1 << 32, 0)),
            FormatError::OutOfRange {
                what: "basic file blocks_start",
                value: 1 << 32
            }
        );
        let basic_dir = Inode {
            header: header(inode_type::BASIC_DIR),
            body: InodeBody::Dir(DirInode {
                extended: false,
                block_start: 0,
                block_offset: 0,
                file_size: 0x1_0000,
                link_count: 2,
                parent_inode: 1,
                xattr_idx: NO_XATTR,
                index: Vec::new(),
            }),
        };
        assert_eq!(
            err(basic_dir),
            FormatError::OutOfRange {
                what: "basic directory file_size",
                value: 0x1_0000
            }
        );
        let entry = |name: Vec<u8>| DirEntry {
            offset: 0,
            inode_delta: 0,
            inode_type: inode_type::BASIC_FILE,
            name,
        };
        let mut out = Vec::new();
        assert_eq!(
            entry(vec![b'a'; MAX_NAME_LEN + 1]).encode(&mut out),
            Err(FormatError::NameTooLong(MAX_NAME_LEN + 1))
        );
        assert!(entry(Vec::new()).encode(&mut out).is_err());
        assert!(out.is_empty(), "a refused entry appends nothing");
    }

    #[test]
    fn narrowing_helpers_check_or_saturate_by_rule() {
        assert_eq!(fit::<u16>("x", 65_535), Ok(65_535));
        assert_eq!(
            fit::<u16>("id count", 65_536),
            Err(FormatError::OutOfRange {
                what: "id count",
                value: 65_536
            })
        );
        assert_eq!(bytes_in_block(10, 4096), 10);
        assert_eq!(bytes_in_block(5000, 4096), 4096);
        assert_eq!(bytes_in_block(u64::MAX, 4096), 4096);
        assert_eq!(offset_in_block((1 << 40) + 5, 4096), 5);
        assert_eq!(metadata_offset(8191), 8191);
        assert_eq!(metadata_offset(8192 * 5 + 3), 3);
        assert_eq!(raw_metadata_header(8192), Ok(8192 | METADATA_UNCOMPRESSED));
        assert!(raw_metadata_header(8193).is_err());
        assert_eq!(data_size_word(100, true), Ok(100 | DATA_UNCOMPRESSED));
        assert_eq!(data_size_word(100, false), Ok(100));
        assert!(data_size_word(DATA_UNCOMPRESSED as usize, false).is_err());
        assert_eq!(mtime_field(-1), 0);
        assert_eq!(mtime_field(1_700_000_000), 1_700_000_000);
        assert_eq!(mtime_field(1 << 40), u32::MAX);
        for d in [i16::MIN, -5, 0, 7, i16::MAX] {
            assert_eq!(delta_from_bits(delta_bits(d)), d);
        }
        assert_eq!(delta_bits(-1), 0xffff);
    }

    #[test]
    fn xattr_names_split_and_join() {
        assert_eq!(
            split_xattr_name(b"security.capability"),
            Some((xattr_type::SECURITY, &b"capability"[..]))
        );
        assert_eq!(split_xattr_name(b"system.posix_acl_access"), None);
        assert_eq!(
            join_xattr_name(xattr_type::USER | xattr_type::OUT_OF_LINE, b"x"),
            Some(b"user.x".to_vec())
        );
    }
}
