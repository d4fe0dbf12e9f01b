//! The squashfs writer: entries arrive in any order through `add_*`, file
//! data streams straight to a temporary file beside the output (blocks
//! compressed in parallel by a pool of threads, `pipeline`, and written in
//! order; tails packed into fragment blocks,
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
//!
//! The parts: `tree` (the entries as added, and their inode numbers),
//! `data` (blocks, holes, duplicates, fragments), `pipeline` (the worker
//! threads and the ticket order), `metadata` (the metadata
//! block writer and the inodes), `dirs` (directory listings and their
//! index), `tables` (fragment, export, id and xattr tables, superblock
//! flags); this file holds the public types and `finish`, which runs them
//! in order.

mod copy;
mod data;
mod dirs;
mod metadata;
mod pipeline;
mod tables;
mod tree;

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use super::compress::{CompressError, Compression};
use super::format::{self, FormatError, FragmentEntry, SUPERBLOCK_SIZE, Superblock, fit};
use data::{ContentKey, Placement};
use metadata::TableBuilder;
use tables::{superblock_flags, write_tables};
use tree::{Kind, Node, number_inodes};

/// Options of one image.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    pub compression: Compression,
    /// Power of two, 4 KiB ..= 1 MiB.
    pub block_size: u32,
    /// `None`: the newest entry mtime. (The CLI passes `$SOURCE_DATE_EPOCH`
    /// here; the library reads no environment.)
    pub mkfs_time: Option<u32>,
    /// fsync the image (and its directory) around the rename onto the
    /// output. The cache's images are durable: later runs trust them
    /// without reading them through. `cairn squash` writes its output as
    /// mksquashfs, cp or tar do, and asks for this with `--sync` only: the
    /// fsync's journal commit is a fixed wait (20-90 ms on this project's
    /// test machines, whatever the size) that writeback started early with
    /// sync_file_range did not shorten (measured).
    pub durable: bool,
}

impl Default for WriterOptions {
    fn default() -> Self {
        Self {
            compression: Compression::default(),
            block_size: format::DEFAULT_BLOCK_SIZE,
            mkfs_time: None,
            durable: true,
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
    #[error("cannot start the compression threads")]
    Threads(#[source] std::io::Error),
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

/// Streams a squashfs image into a temporary file; see the module doc.
#[derive(Debug)]
pub struct Writer {
    options: WriterOptions,
    output: PathBuf,
    temp: PathBuf,
    out: Option<Output>,
    nodes: Vec<Node>,
    paths: HashMap<Vec<u8>, usize>,
    /// Blocks compressing and being written, in ticket order.
    pipeline: pipeline::Pipeline,
    /// Files whose blocks are in the pipeline, by their id there.
    placing: HashMap<u64, Placement>,
    /// Files placed completely before their node was inserted.
    placed: HashMap<u64, (u64, Placement)>,
    /// The node of each file still in the pipeline.
    file_nodes: HashMap<u64, usize>,
    /// The id the next file in the pipeline gets.
    next_file: u64,
    /// Fragment block being filled.
    frag_buf: Vec<u8>,
    /// Sealed blocks in the pipeline (not written yet), kept for duplicate
    /// compares; they follow `fragments` in index order.
    /// `None` for a block copied from another image (never compared).
    frag_unwritten: std::collections::VecDeque<Option<Arc<Vec<u8>>>>,
    /// Fragment blocks copied from other images: (source, its index) ->
    /// index here.
    copied_fragments: HashMap<(u32, u32), u32>,
    /// The last fragment block read back and decompressed for a compare.
    frag_cache: Option<(u32, Arc<Vec<u8>>)>,
    /// Fragment blocks sealed so far (the index of the one being filled).
    frag_sealed: u32,
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

impl Writer {
    /// Starts writing to a temporary file beside `output` (same directory).
    pub fn create(output: &Path, options: WriterOptions) -> Result<Writer, WriteError> {
        let bs = options.block_size;
        if !bs.is_power_of_two() || !(format::MIN_BLOCK_SIZE..=format::MAX_BLOCK_SIZE).contains(&bs)
        {
            return Err(WriteError::BlockSize(bs));
        }
        options.compression.validate()?;
        let temp = temp_path_for(output);
        let pipeline =
            pipeline::Pipeline::start(options.compression, bs).map_err(WriteError::Threads)?;
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
            output: output.to_path_buf(),
            temp: temp.clone(),
            out: Some(Output {
                file: std::io::BufWriter::with_capacity(1 << 20, file),
                path: temp,
                pos: 0,
            }),
            nodes: Vec::new(),
            paths: HashMap::new(),
            pipeline,
            placing: HashMap::new(),
            placed: HashMap::new(),
            file_nodes: HashMap::new(),
            next_file: 0,
            frag_buf: Vec::new(),
            frag_unwritten: std::collections::VecDeque::new(),
            copied_fragments: HashMap::new(),
            frag_cache: None,
            frag_sealed: 0,
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

    fn out_mut(&mut self) -> Result<&mut Output, WriteError> {
        let temp = &self.temp;
        self.out.as_mut().ok_or_else(|| already_finished(temp))
    }

    /// Writes the tables and superblock, pads to 4 KiB, fsyncs, renames
    /// onto the output.
    pub fn finish(mut self) -> Result<WriteSummary, WriteError> {
        self.seal_fragment()?;
        self.pump(true)?;
        // Every file's blocks are written now; a node still waiting for
        // them would describe data that is not there.
        if self
            .nodes
            .iter()
            .any(|n| matches!(&n.kind, Kind::File(f) if f.pending.is_some()))
        {
            return Err(WriteError::Write {
                path: self.temp.clone(),
                source: std::io::Error::other("a file's blocks never left the data pipeline"),
            });
        }
        let mkfs_time = self.options.mkfs_time.unwrap_or(self.newest_mtime);
        self.sort_and_date_dirs(mkfs_time);
        self.check_inode_count()?;
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

        let temp = &self.temp;
        let out = self.out.as_mut().ok_or_else(|| already_finished(temp))?;
        let at = write_tables(out, &built, &self.fragments, comp, bs)?;
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
            flags: superblock_flags(comp, !built.xattr_ids.is_empty()),
            id_count: built.id_count,
            root_inode: root_ref,
            bytes_used: at.bytes_used,
            id_table_start: at.id_table_start,
            xattr_id_table_start: at.xattr_id_table_start,
            inode_table_start: at.inode_table_start,
            directory_table_start: at.directory_table_start,
            fragment_table_start: at.fragment_table_start,
            export_table_start: at.export_table_start,
        };
        self.commit(&sb, at.padded)?;
        Ok(WriteSummary {
            bytes: at.padded,
            inodes: inode_count,
            files,
            data_bytes: self.data_bytes,
            duplicate_files: self.duplicate_files,
            shared_block_runs: self.shared_block_runs,
            fragments: sb.fragment_count,
            mkfs_time,
        })
    }

    /// Writes the superblock over its placeholder, cuts the file at
    /// `padded`, fsyncs it and renames it onto the output (the rename made
    /// durable too).
    fn commit(&mut self, sb: &Superblock, padded: u64) -> Result<(), WriteError> {
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
        let durable = self.options.durable;
        if durable {
            file.sync_all().map_err(|source| WriteError::Sync {
                path: temp.clone(),
                source,
            })?;
        }
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
        if let Some(dir) = self.output.parent().filter(|_| durable) {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

/// The error of a writer used after `finish` (or after a failed one).
fn already_finished(temp: &Path) -> WriteError {
    WriteError::Write {
        path: temp.to_path_buf(),
        source: std::io::Error::other("writer already finished"),
    }
}

fn finished() -> WriteError {
    WriteError::Write {
        path: PathBuf::new(),
        source: std::io::Error::other("writer already finished"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::squashfs::format::{ByteSource, SliceSource};

    pub(super) fn meta(mtime: u32) -> EntryMeta {
        EntryMeta {
            mode: 0o644,
            mtime,
            ..EntryMeta::default()
        }
    }

    pub(super) fn scratch_out(name: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join(name);
        (dir, out)
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
}
