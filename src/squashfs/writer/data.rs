//! The data pipeline: file content read in windows of blocks, compressed
//! in parallel on rayon, all-zero blocks kept as holes, whole files and
//! runs of full blocks deduplicated (by hash, then a byte compare), and
//! tails packed into fragment blocks compressed in the background.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io::Read;
use std::sync::Arc;

use rayon::prelude::*;

use super::tree::Kind;
use super::{Compression, EntryMeta, WriteError, Writer, encode_err, show};
use crate::squashfs::format::{
    self, DATA_UNCOMPRESSED, FormatError, FragmentEntry, NO_FRAGMENT, fit,
};

/// Where a regular file's content sits in the image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct FileData {
    pub(super) size: u64,
    pub(super) blocks_start: u64,
    pub(super) block_sizes: Vec<u32>,
    /// (fragment index, offset inside the fragment block).
    pub(super) fragment: Option<(u32, u32)>,
    /// Bytes of holes (all-zero blocks not stored).
    pub(super) sparse: u64,
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

/// Compressed fragment blocks: (bytes, stored raw).
pub(super) type StoredBatch = Vec<(Vec<u8>, bool)>;

/// One window of blocks compressed (with each block's hash), and the
/// next window, read meanwhile.
struct CompressedWindow {
    blocks: Vec<(Block, u64)>,
    read_ahead: Result<Vec<Vec<u8>>, WriteError>,
}

/// Key of the duplicate-file table: size and a hash of the block and tail
/// hashes. Only finds candidates: equality is decided by a byte compare.
pub(super) type ContentKey = (u64, u64);

/// Blocks compressed together (and read ahead meanwhile): enough to keep
/// every rayon thread busy, small enough to bound memory.
fn window() -> usize {
    (rayon::current_num_threads() * 4).max(8)
}

impl Writer {
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

    /// Store one file's content: whole-file duplicates first (before any
    /// compressing), then the blocks window by window, then the tail.
    fn write_file_data(
        &mut self,
        path: &[u8],
        data: &mut dyn Read,
    ) -> Result<FileData, WriteError> {
        let bs = self.options.block_size;
        let window = window();
        // Fragment blocks compressed meanwhile go out between files.
        self.drain_fragments(false)?;
        let start = self.out_mut()?.pos;
        let mut file = FileData {
            blocks_start: start,
            ..FileData::default()
        };
        let mut hasher = DefaultHasher::new();
        let mut tail: Option<Vec<u8>> = None;
        let mut next = Self::read_batch(path, data, bs as usize, window)?;
        // The whole file is in this first batch (a short last block, or the
        // batch ended before the window filled): look for a duplicate before
        // compressing anything, comparing with the candidate's decompressed
        // blocks (decompressing is far cheaper than compressing).
        let whole = next.last().is_some_and(|b| b.len() < bs as usize) || next.len() < window;
        if whole
            && !next.is_empty()
            && let Some(prev) = self.whole_file_duplicate(&next)?
        {
            self.duplicate_files += 1;
            return Ok(prev);
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
            let compressed = self.compress_window(path, data, batch, ended, window)?;
            self.store_blocks(path, &mut file, &mut hasher, compressed.blocks)?;
            next = compressed.read_ahead?;
        }
        self.place_file(file, hasher, tail, start)
    }

    /// A file stored already with the content of `batch` (the whole file,
    /// its last block possibly short): found by hash, confirmed by
    /// comparing with the candidate's blocks decompressed and its tail.
    fn whole_file_duplicate(&mut self, batch: &[Vec<u8>]) -> Result<Option<FileData>, WriteError> {
        let bs = self.options.block_size as usize;
        let (full, short) = match batch.last() {
            Some(b) if b.len() < bs => (&batch[..batch.len() - 1], Some(&b[..])),
            _ => (batch, None),
        };
        let mut h = DefaultHasher::new();
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
        let candidate = self.file_at(self.dedup.get(&key));
        if let Some(prev) = candidate
            && self.same_plain_blocks(&prev, full)?
            && self.same_tail(&prev, short)?
        {
            return Ok(Some(prev));
        }
        Ok(None)
    }

    /// Compress one window of full blocks on the rayon pool while this
    /// thread reads the next window (or, at the end of the file, compresses
    /// the first block itself).
    fn compress_window(
        &self,
        path: &[u8],
        data: &mut dyn Read,
        batch: Vec<Vec<u8>>,
        ended: bool,
        window: usize,
    ) -> Result<CompressedWindow, WriteError> {
        let comp = self.options.compression;
        let bs = self.options.block_size;
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
        Ok(CompressedWindow {
            blocks: slots.into_iter().flatten().collect(),
            read_ahead,
        })
    }

    /// Write a window's compressed blocks in order (holes are not written)
    /// and record them in `file`; `hasher` takes each block's hash.
    fn store_blocks(
        &mut self,
        path: &[u8],
        file: &mut FileData,
        hasher: &mut DefaultHasher,
        blocks: Vec<(Block, u64)>,
    ) -> Result<(), WriteError> {
        let bs = self.options.block_size;
        let out = self.out_mut()?;
        for (block, digest) in blocks {
            digest.hash(hasher);
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
        Ok(())
    }

    /// The file's blocks (from `start`) are written: drop them again if
    /// the whole file is a duplicate, else share an earlier file's equal
    /// blocks, pack the tail into a fragment, and remember the content.
    fn place_file(
        &mut self,
        mut file: FileData,
        mut hasher: DefaultHasher,
        tail: Option<Vec<u8>>,
        start: u64,
    ) -> Result<FileData, WriteError> {
        let blocks_key: ContentKey = (file.block_sizes.len() as u64, hasher.clone().finish());
        if let Some(t) = &tail {
            file.size += t.len() as u64;
            block_hash(t).0.hash(&mut hasher);
        }
        let key: ContentKey = (file.size, hasher.finish());
        let candidate = self.file_at(self.dedup.get(&key));
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
            self.share_block_run(&mut file, blocks_key, start)?;
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

    /// The same blocks with another tail (a file appended to, a patched
    /// copy): share the blocks (forgetting the ones just written from
    /// `start`), store only the tail. Otherwise remember this run.
    fn share_block_run(
        &mut self,
        file: &mut FileData,
        blocks_key: ContentKey,
        start: u64,
    ) -> Result<(), WriteError> {
        let same_run = self.file_at(self.block_runs.get(&blocks_key));
        if let Some(prev) = same_run
            && self.same_blocks(&prev, file)?
        {
            self.out_mut()?.rewind(start)?;
            file.blocks_start = prev.blocks_start;
            self.shared_block_runs += 1;
        } else {
            self.block_runs.insert(blocks_key, self.nodes.len());
        }
        Ok(())
    }

    /// The content of node `idx` when it is a file: a dedup candidate.
    fn file_at(&self, idx: Option<&usize>) -> Option<FileData> {
        match idx.and_then(|&i| self.nodes.get(i)).map(|n| &n.kind) {
            Some(Kind::File(prev)) => Some(prev.clone()),
            _ => None,
        }
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

    pub(super) fn seal_fragment(&mut self) -> Result<(), WriteError> {
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
    pub(super) fn launch_fragments(&mut self) {
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
    pub(super) fn drain_fragments(&mut self, all: bool) -> Result<(), WriteError> {
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
}

#[cfg(test)]
mod tests {
    use super::super::tests::{meta, scratch_out};
    use super::*;
    use crate::squashfs::writer::WriterOptions;

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
}
