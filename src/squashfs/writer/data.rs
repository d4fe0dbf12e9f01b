//! File content: read in windows of blocks and handed to the compression
//! pipeline (`pipeline.rs`), all-zero blocks kept as holes, whole files and
//! runs of full blocks deduplicated (by hash, then a byte compare), and
//! tails packed into fragment blocks that go through the same pipeline.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io::Read;
use std::sync::Arc;

use super::pipeline::{Input, Outcome, Owner};
use super::tree::Kind;
use super::{EntryMeta, WriteError, Writer, encode_err, show};
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
    /// Its blocks are still in the pipeline (the file's id there): the
    /// fields above but `size` and `fragment` are filled in once the
    /// pipeline has written them.
    pub(super) pending: Option<u64>,
}

/// A block's size word: at most the block size (1 MiB), so this fails only
/// if that bound is broken.
fn size_word(outcome: &Outcome) -> Result<u32, FormatError> {
    match outcome {
        Outcome::Hole | Outcome::Mark => Ok(0),
        Outcome::Stored { bytes, raw } => format::data_size_word(bytes.len(), *raw),
    }
}

/// Where a file's blocks went so far, filled in as the pipeline writes
/// them in order; complete at the file's end mark.
#[derive(Debug, Default)]
pub(super) struct Placement {
    /// Position of the first stored block (none yet: all holes so far).
    start: Option<u64>,
    block_sizes: Vec<u32>,
    sparse: u64,
    /// The source has holes: report them (an extended inode).
    holes: bool,
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

/// Fill `buf` from `data`, short only at the end of the data. One read per
/// block where the source allows it: `read_to_end` on a `Take` starts at
/// 8 KiB reads and doubles, five system calls for a 128 KiB block.
fn read_full(data: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match data.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Key of the duplicate-file table: size and a hash of the block and tail
/// hashes. Only finds candidates: equality is decided by a byte compare.
pub(super) type ContentKey = (u64, u64);

/// Blocks read at a time: a file that fits is checked for a duplicate
/// before any of it is compressed.
const WINDOW: usize = 8;

/// A block as read, hashed right away while it is in the cache.
struct Chunk {
    /// A block buffer; only `..len` was read (the rest is stale bytes,
    /// left for the buffer's next use).
    data: Vec<u8>,
    len: usize,
    /// [`block_hash`]'s hash.
    digest: u64,
    zero: bool,
}

impl Chunk {
    fn new(data: Vec<u8>, len: usize) -> Chunk {
        let (digest, zero) = block_hash(&data[..len]);
        Chunk {
            data,
            len,
            digest,
            zero,
        }
    }

    fn bytes(&self) -> &[u8] {
        &self.data[..self.len]
    }

    /// The buffer holding exactly the block (a full block's buffer is).
    fn into_block(mut self) -> Vec<u8> {
        self.data.truncate(self.len);
        self.data
    }

    /// What a full block adds to its file's hash: 0 for a hole (stored as
    /// none, whatever its hash). A tail adds its digest.
    fn block_key(&self) -> u64 {
        if self.zero { 0 } else { self.digest }
    }
}

/// A file read whole in one batch: its full blocks, its tail, and the keys
/// the duplicate tables know it by (the same `place_file` computes for a
/// file submitted block by block).
struct WholeFile<'a> {
    full: &'a [Chunk],
    tail: Option<&'a Chunk>,
    /// (block count, hash of the block keys): `block_runs`.
    blocks_key: ContentKey,
    /// (size, hash of the block keys and the tail's digest): `dedup`.
    key: ContentKey,
}

impl WholeFile<'_> {
    fn of(batch: &[Chunk], block_size: usize) -> WholeFile<'_> {
        let (full, tail) = match batch.last() {
            Some(b) if b.len < block_size => (&batch[..batch.len() - 1], Some(b)),
            _ => (batch, None),
        };
        let mut h = DefaultHasher::new();
        let mut size = 0u64;
        for b in full {
            b.block_key().hash(&mut h);
            size += b.len as u64;
        }
        let blocks_key = (full.len() as u64, h.clone().finish());
        if let Some(t) = tail {
            t.digest.hash(&mut h);
            size += t.len as u64;
        }
        WholeFile {
            full,
            tail,
            blocks_key,
            key: (size, h.finish()),
        }
    }
}

/// One file's full blocks as they were submitted: for the duplicate
/// checks at its end.
struct Submitted {
    /// The file's id in the pipeline.
    file: u64,
    /// Ticket of its last block, if it has any.
    last: Option<u64>,
    count: u64,
    /// Hash of the block hashes (0 for holes), in order.
    hasher: DefaultHasher,
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
        let mut file = self.write_file_data(path, data, holes)?;
        if !holes {
            file.sparse = 0;
        }
        self.insert_file(path, meta, file)
    }

    /// The node of a file whose data is placed (or queued): returns its size.
    pub(super) fn insert_file(
        &mut self,
        path: &[u8],
        meta: EntryMeta,
        file: FileData,
    ) -> Result<u64, WriteError> {
        let size = file.size;
        let pending = file.pending;
        self.data_bytes += size;
        let idx = self.insert(path, meta, Kind::File(file))?;
        if let Some(id) = pending {
            // Its blocks may all be written already (then the placement
            // waits here), or not yet (then the end mark fills the node).
            match self.placed.remove(&id) {
                Some((start, placement)) => self.fill_node(idx, start, placement)?,
                None => {
                    self.file_nodes.insert(id, idx);
                }
            }
        }
        Ok(size)
    }

    /// Read up to `WINDOW` full blocks; the last one may be short (the tail).
    fn read_batch(&mut self, path: &[u8], data: &mut dyn Read) -> Result<Vec<Chunk>, WriteError> {
        let block_size = self.options.block_size as usize;
        let mut batch = Vec::new();
        while batch.len() < WINDOW {
            // A reused buffer: fresh 128 KiB allocations are mapped anew
            // each time, and their page faults showed in the profile.
            let mut buf = self.pipeline.buffer();
            let filled = read_full(data, &mut buf).map_err(|source| WriteError::ReadData {
                path: show(path),
                source,
            })?;
            let short = filled < block_size;
            if filled > 0 {
                batch.push(Chunk::new(buf, filled));
            } else {
                self.pipeline.recycle(buf);
            }
            if short {
                break;
            }
        }
        Ok(batch)
    }

    /// Store one file's content: a whole-file duplicate is found before
    /// anything is compressed when the file fits in one window; otherwise
    /// its blocks go to the pipeline, and the duplicate checks wait for
    /// them only when a candidate exists. The returned data is `pending`
    /// until the pipeline has written the blocks.
    fn write_file_data(
        &mut self,
        path: &[u8],
        data: &mut dyn Read,
        holes: bool,
    ) -> Result<FileData, WriteError> {
        let bs = self.options.block_size as usize;
        // Write out what the workers finished meanwhile.
        self.pump(false)?;
        let mut next = self.read_batch(path, data)?;
        // The whole file is in this first batch (a short last block, or the
        // batch ended before the window filled): look for a duplicate before
        // compressing anything, comparing with the candidate's decompressed
        // blocks (decompressing is far cheaper than compressing).
        let whole = next.last().is_some_and(|b| b.len < bs) || next.len() < WINDOW;
        let whole_file = whole.then(|| WholeFile::of(&next, bs));
        if let Some(w) = &whole_file
            && !next.is_empty()
            && let Some(prev) = self.whole_file_duplicate(w)?
        {
            for chunk in next {
                self.pipeline.recycle(chunk.data);
            }
            self.duplicate_files += 1;
            return Ok(prev);
        }
        if let Some(w) = &whole_file
            && let Some(file) = self.shared_run(w, holes)?
        {
            for chunk in next {
                self.pipeline.recycle(chunk.data);
            }
            return Ok(file);
        }
        let id = self.begin_file(holes);
        let mut sub = Submitted {
            file: id,
            last: None,
            count: 0,
            hasher: DefaultHasher::new(),
        };
        let mut tail: Option<Chunk> = None;
        while !next.is_empty() {
            let mut batch = next;
            // A short block can only be the last: it is the tail, which goes
            // to a fragment instead of a block of its own.
            if batch.last().is_some_and(|b| b.len < bs) {
                tail = batch.pop();
            }
            let ended = tail.is_some() || batch.len() < WINDOW;
            for block in batch {
                self.submit_block(&mut sub, block)?;
            }
            next = if ended {
                Vec::new()
            } else {
                self.read_batch(path, data)?
            };
        }
        self.place_file(sub, tail, whole)
    }

    /// Hash one full block and hand it to the pipeline (a hole needs no
    /// worker).
    fn submit_block(&mut self, sub: &mut Submitted, block: Chunk) -> Result<(), WriteError> {
        let owner = Owner::Block { file: sub.file };
        block.block_key().hash(&mut sub.hasher);
        let ticket = if block.zero {
            self.pipeline.recycle(block.data);
            self.pipeline.push(owner, Outcome::Hole)
        } else {
            self.submit(owner, Input::Owned(block.into_block()))?
        };
        sub.last = Some(ticket);
        sub.count += 1;
        Ok(())
    }

    /// A file stored already with the content of `batch` (the whole file,
    /// its last block possibly short): found by hash, confirmed by
    /// comparing with the candidate's blocks decompressed and its tail.
    fn whole_file_duplicate(&mut self, w: &WholeFile) -> Result<Option<FileData>, WriteError> {
        let (full, short) = (w.full, w.tail.map(Chunk::bytes));
        let Some(&idx) = self.dedup.get(&w.key) else {
            return Ok(None);
        };
        let candidate = self.file_at(idx)?;
        if let Some(prev) = candidate
            && self.same_plain_blocks(&prev, full)?
            && self.same_tail(&prev, short)?
        {
            return Ok(Some(prev));
        }
        Ok(None)
    }

    /// A file that fits in one window whose full blocks are stored already
    /// under another tail (a file appended to, a patched copy): share them
    /// and store only its tail, without compressing anything, and without
    /// waiting for the pipeline (found after compressing, the same check
    /// must wait for the file's own blocks: a barrier per such file, which
    /// on the 1 GB bench tree kept the cores 25% idle).
    fn shared_run(&mut self, w: &WholeFile, holes: bool) -> Result<Option<FileData>, WriteError> {
        let bs = self.options.block_size as usize;
        let (full, tail) = (w.full, w.tail);
        if full.is_empty() || full.iter().all(|c| c.zero) {
            return Ok(None);
        }
        let Some(&idx) = self.block_runs.get(&w.blocks_key) else {
            return Ok(None);
        };
        let Some(prev) = self.file_at(idx)? else {
            return Ok(None);
        };
        if !self.same_plain_blocks(&prev, full)? {
            return Ok(None);
        }
        let zeros = full.iter().filter(|c| c.zero).count() as u64;
        let mut file = FileData {
            size: w.key.0,
            blocks_start: prev.blocks_start,
            block_sizes: prev.block_sizes.clone(),
            sparse: if holes { zeros * bs as u64 } else { 0 },
            ..FileData::default()
        };
        if let Some(t) = tail {
            file.fragment = Some(self.add_fragment(t.bytes())?);
        }
        self.shared_block_runs += 1;
        // Remember the whole content for later duplicates (the node index
        // is the one `insert` is about to use).
        self.dedup.insert(w.key, self.nodes.len());
        Ok(Some(file))
    }

    /// The file's blocks are submitted: when a duplicate candidate exists,
    /// wait for them to be written and compare (dropping them again if
    /// the whole file, or its run of blocks, is stored already); pack the
    /// tail into a fragment; remember the content; mark the file's end.
    fn place_file(
        &mut self,
        sub: Submitted,
        tail: Option<Chunk>,
        checked_whole: bool,
    ) -> Result<FileData, WriteError> {
        let bs = u64::from(self.options.block_size);
        let blocks_key: ContentKey = (sub.count, sub.hasher.clone().finish());
        let mut size = sub.count * bs;
        let mut hasher = sub.hasher;
        if let Some(t) = &tail {
            size += t.len as u64;
            t.digest.hash(&mut hasher);
        }
        let key: ContentKey = (size, hasher.finish());
        // A file that fit in one window was compared before compressing
        // (whole, and its run of blocks).
        let whole_candidate = match self.dedup.get(&key) {
            Some(&idx) if !checked_whole => self.file_at(idx)?,
            _ => None,
        };
        let run_candidate = match self.block_runs.get(&blocks_key) {
            Some(&idx) if sub.count > 0 && !checked_whole => self.file_at(idx)?,
            _ => None,
        };
        // A file without blocks waits for nothing: its start is not read
        // (0, as mksquashfs writes for a tail-only file).
        let mut file = FileData {
            size,
            pending: (sub.count > 0).then_some(sub.file),
            ..FileData::default()
        };
        if sub.count == 0 {
            self.placing.remove(&sub.file);
        }
        if whole_candidate.is_some() || run_candidate.is_some() {
            // Settle this file's blocks now, to compare them.
            file = self.settle_blocks(&sub.file, sub.last, size)?;
            if let Some(prev) = whole_candidate
                && self.same_blocks(&prev, &file)?
                && self.same_tail(&prev, tail.as_ref().map(Chunk::bytes))?
            {
                self.out_mut()?.rewind(file.blocks_start)?;
                if let Some(t) = tail {
                    self.pipeline.recycle(t.data);
                }
                self.duplicate_files += 1;
                return Ok(prev);
            }
        }
        let stores_blocks = file.block_sizes.iter().any(|&w| w != 0);
        // The same blocks with another tail (a file appended to, a patched
        // copy): share them, store only the tail.
        let shared = match run_candidate {
            Some(prev)
                if file.pending.is_none() && stores_blocks && self.same_blocks(&prev, &file)? =>
            {
                self.out_mut()?.rewind(file.blocks_start)?;
                file.blocks_start = prev.blocks_start;
                self.shared_block_runs += 1;
                true
            }
            _ => false,
        };
        if !shared && sub.count > 0 {
            self.block_runs.insert(blocks_key, self.nodes.len());
        }
        if let Some(t) = tail {
            file.fragment = Some(self.add_fragment(t.bytes())?);
            self.pipeline.recycle(t.data);
        }
        // Remember this content for later duplicates (the node index is the
        // one `insert` is about to use).
        if size > 0 {
            self.dedup.insert(key, self.nodes.len());
        }
        if file.pending.is_some() {
            // After the tail: a fragment block it sealed is not part of
            // the file, and comes before the mark either way.
            self.pipeline
                .push(Owner::FileEnd { file: sub.file }, Outcome::Mark);
        }
        Ok(file)
    }

    /// Wait until the file's blocks are written (nothing after them is:
    /// its tail and end mark are not queued yet), and take its placement.
    fn settle_blocks(
        &mut self,
        file: &u64,
        last: Option<u64>,
        size: u64,
    ) -> Result<FileData, WriteError> {
        if let Some(last) = last {
            self.wait_through(last)?;
        }
        let placement = self
            .placing
            .remove(file)
            .ok_or_else(|| lost("a file placement"))?;
        // No blocks at all: 0, as for any file without blocks; only holes:
        // here, where its blocks would be (as mksquashfs).
        let pos = match last {
            Some(_) => self.out_mut()?.pos,
            None => 0,
        };
        Ok(FileData {
            size,
            blocks_start: placement.start.unwrap_or(pos),
            block_sizes: placement.block_sizes,
            fragment: None,
            sparse: if placement.holes { placement.sparse } else { 0 },
            pending: None,
        })
    }

    /// The content of node `idx` when it is a file: a dedup candidate,
    /// waited for if its blocks are still in the pipeline.
    fn file_at(&mut self, idx: usize) -> Result<Option<FileData>, WriteError> {
        loop {
            match self.nodes.get(idx).map(|n| &n.kind) {
                Some(Kind::File(prev)) if prev.pending.is_none() => return Ok(Some(prev.clone())),
                Some(Kind::File(_)) => {
                    // Its end mark is queued: write on until it is passed.
                    if !self.write_next(true)? {
                        return Err(lost("a file's end mark"));
                    }
                }
                _ => return Ok(None),
            }
        }
    }

    /// Byte compare of a candidate's tail with ours, wherever its fragment
    /// block is: being filled, in the pipeline, or written (then read back
    /// and decompressed, the last such block cached).
    fn same_tail(&mut self, prev: &FileData, tail: Option<&[u8]>) -> Result<bool, WriteError> {
        let (Some((index, offset)), Some(tail)) = (prev.fragment, tail) else {
            return Ok(prev.fragment.is_none() && tail.is_none());
        };
        // Fragment blocks in index order: written, then in the pipeline;
        // counted in usize, like the queues that hold them.
        let written = self.fragments.len();
        let position = index as usize;
        let block: Arc<Vec<u8>> = if index == self.frag_sealed {
            let from = offset as usize;
            return Ok(self.frag_buf.get(from..from + tail.len()) == Some(tail));
        } else if position >= written {
            match self.frag_unwritten.get(position - written) {
                Some(Some(b)) => b.clone(),
                _ => return Ok(false),
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
    fn same_plain_blocks(&mut self, prev: &FileData, blocks: &[Chunk]) -> Result<bool, WriteError> {
        if prev.block_sizes.len() != blocks.len() {
            return Ok(false);
        }
        let mut at = prev.blocks_start;
        for (&word, chunk) in prev.block_sizes.iter().zip(blocks) {
            let block = chunk.bytes();
            if word == 0 {
                if !chunk.zero {
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
        if self.frag_buf.capacity() == 0 {
            self.frag_buf = self.pipeline.buffer();
            self.frag_buf.clear();
        }
        self.frag_buf.extend_from_slice(tail);
        Ok((index, offset))
    }

    /// Hand the fragment block being filled to the pipeline; it keeps its
    /// index (the order of sealing is the order of writing).
    pub(super) fn seal_fragment(&mut self) -> Result<(), WriteError> {
        if self.frag_buf.is_empty() {
            return Ok(());
        }
        self.next_fragment_index()?;
        let block = Arc::new(std::mem::take(&mut self.frag_buf));
        self.frag_unwritten.push_back(Some(Arc::clone(&block)));
        self.submit(Owner::Fragment, Input::Shared(block))?;
        Ok(())
    }

    /// Takes the index of the fragment block being filled for a block
    /// sealed now (the order of sealing is the order of writing).
    pub(super) fn next_fragment_index(&mut self) -> Result<u32, WriteError> {
        // Fragment indexes are u32 and NO_FRAGMENT (u32::MAX) means none:
        // the block being filled must keep an index below it.
        let index = self.frag_sealed;
        self.frag_sealed =
            index
                .checked_add(1)
                .filter(|&n| n < NO_FRAGMENT)
                .ok_or(WriteError::TooMany {
                    what: "fragment blocks",
                    count: u64::from(index) + 1,
                    max: u64::from(NO_FRAGMENT) - 1,
                })?;
        Ok(index)
    }

    /// A new file's id in the pipeline, its placement waiting for its
    /// blocks (`holes`: the source has holes, reported in the inode).
    pub(super) fn begin_file(&mut self, holes: bool) -> u64 {
        let id = self.next_file;
        self.next_file += 1;
        self.placing.insert(
            id,
            Placement {
                holes,
                ..Placement::default()
            },
        );
        id
    }

    /// Writes out finished blocks while too many are in flight (that
    /// bounds memory).
    pub(super) fn make_room(&mut self) -> Result<(), WriteError> {
        while self.pipeline.is_full() {
            if !self.write_next(true)? {
                break;
            }
        }
        Ok(())
    }

    /// Queue a block for compression, once there is room for it.
    fn submit(&mut self, owner: Owner, input: Input) -> Result<u64, WriteError> {
        self.make_room()?;
        self.pipeline
            .submit(owner, input)
            .map_err(|_| lost("a compression worker"))
    }

    /// Write the oldest finished slot, waiting for it with `wait`; false
    /// when there is none (nothing in flight, or not done without `wait`).
    pub(super) fn write_next(&mut self, wait: bool) -> Result<bool, WriteError> {
        let Some((owner, outcome)) = self
            .pipeline
            .next_ready(wait)
            .map_err(|_| lost("a compression worker"))?
        else {
            return Ok(false);
        };
        self.write_slot(owner, outcome)?;
        Ok(true)
    }

    /// Write every slot that is finished; with `all`, wait for every one.
    pub(super) fn pump(&mut self, all: bool) -> Result<(), WriteError> {
        while self.write_next(all)? {}
        Ok(())
    }

    /// Write on until the slot of `ticket` is written.
    fn wait_through(&mut self, ticket: u64) -> Result<(), WriteError> {
        while self.pipeline.front() <= ticket {
            if !self.write_next(true)? {
                return Err(lost("a block in flight"));
            }
        }
        Ok(())
    }

    /// Put one slot into the image, in ticket order.
    fn write_slot(&mut self, owner: Owner, outcome: Outcome) -> Result<(), WriteError> {
        let bs = u64::from(self.options.block_size);
        match owner {
            Owner::Block { file } => {
                let word = size_word(&outcome).map_err(encode_err(|| "a data block".into()))?;
                let out = self.out.as_mut().ok_or_else(|| lost("the output"))?;
                let placement = self
                    .placing
                    .get_mut(&file)
                    .ok_or_else(|| lost("a file placement"))?;
                match outcome {
                    Outcome::Stored { bytes, .. } => {
                        placement.start.get_or_insert(out.pos);
                        out.write_all(&bytes)?;
                    }
                    Outcome::Hole => placement.sparse += bs,
                    Outcome::Mark => return Err(lost("a data block")),
                }
                placement.block_sizes.push(word);
            }
            Owner::FileEnd { file } => {
                let placement = self
                    .placing
                    .remove(&file)
                    .ok_or_else(|| lost("a file placement"))?;
                // Nothing stored: point at the current position (as mksquashfs).
                let start = match placement.start {
                    Some(start) => start,
                    None => self.out_mut()?.pos,
                };
                match self.file_nodes.remove(&file) {
                    Some(idx) => self.fill_node(idx, start, placement)?,
                    // Its node is not inserted yet: `add_file` fills it.
                    None => {
                        self.placed.insert(file, (start, placement));
                    }
                }
            }
            Owner::Fragment => {
                let Outcome::Stored { bytes, raw } = outcome else {
                    return Err(lost("a fragment block"));
                };
                let size = format::data_size_word(bytes.len(), raw)
                    .map_err(encode_err(|| "a fragment block".into()))?;
                let out = self.out_mut()?;
                let start = out.pos;
                out.write_all(&bytes)?;
                self.fragments.push(FragmentEntry { start, size });
                // The worker dropped its reference before reporting: the
                // buffer is free again unless a compare holds it.
                if let Some(Some(block)) = self.frag_unwritten.pop_front()
                    && let Ok(buf) = Arc::try_unwrap(block)
                {
                    self.pipeline.recycle(buf);
                }
            }
        }
        Ok(())
    }

    /// A file's blocks are all written: complete its node.
    pub(super) fn fill_node(
        &mut self,
        idx: usize,
        start: u64,
        placement: Placement,
    ) -> Result<(), WriteError> {
        let Some(Kind::File(file)) = self.nodes.get_mut(idx).map(|n| &mut n.kind) else {
            return Err(lost("a file node"));
        };
        file.blocks_start = start;
        file.block_sizes = placement.block_sizes;
        file.sparse = if placement.holes { placement.sparse } else { 0 };
        file.pending = None;
        Ok(())
    }
}

/// The error of a pipeline that lost track of a block: a worker died, or a
/// bug broke the order of tickets. Never a wrong image.
fn lost(what: &str) -> WriteError {
    WriteError::Write {
        path: std::path::PathBuf::new(),
        source: std::io::Error::other(format!("the data pipeline lost {what}")),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{meta, scratch_out};
    use super::*;
    use crate::squashfs::writer::{Compression, WriterOptions};

    #[test]
    fn dedup_stores_identical_content_once() {
        let (_dir, out) = scratch_out("dedup.sqfs");
        let opts = WriterOptions {
            compression: Compression::None,
            block_size: 4096,
            mkfs_time: Some(0),
            durable: true,
        };
        let content: Vec<u8> = (0..10_000u32).map(|i| (i % 253) as u8).collect();
        let mut w = Writer::create(&out, opts).expect("create");
        w.add_file(b"one", meta(1), &mut &content[..]).expect("one");
        w.pump(true).expect("pump");
        let after_one = w.out.as_ref().expect("out").pos;
        w.add_file(b"two", meta(1), &mut &content[..]).expect("two");
        w.pump(true).expect("pump");
        assert_eq!(w.out.as_ref().expect("out").pos, after_one);
        let mut other = content.clone();
        other[5000] ^= 1;
        w.add_file(b"three", meta(1), &mut &other[..])
            .expect("three");
        w.pump(true).expect("pump");
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
                durable: true,
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
            for i in 0..WINDOW + 2 {
                let tail: Vec<u8> = (0..3000usize)
                    .map(|j| (j * 7 + i).to_le_bytes()[0])
                    .collect();
                w.add_file(format!("t{i}").as_bytes(), meta(1), &mut &tail[..])
                    .expect("tail");
            }
            w.pump(true).expect("drain");
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
            durable: true,
        };
        let mut w = Writer::create(&out, opts).expect("create");
        let base: Vec<u8> = (0..3 * 4096u32).map(|i| (i % 251) as u8).collect();
        let mut a = base.clone();
        a.extend_from_slice(b"tail a");
        let mut b = base.clone();
        b.extend_from_slice(b"another tail b");
        w.add_file(b"a", meta(1), &mut &a[..]).expect("a");
        w.pump(true).expect("pump");
        let after_a = w.out.as_ref().expect("out").pos;
        w.add_file(b"b", meta(1), &mut &b[..]).expect("b");
        w.pump(true).expect("pump");
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
            durable: true,
        };
        let mut w = Writer::create(&out, opts).expect("create");
        // Compressible blocks, a hole and a tail.
        let mut content: Vec<u8> = (0..5 * 4096u32)
            .map(|i| u8::try_from(i / 100).expect("below 205"))
            .collect();
        content[4096..8192].fill(0);
        content.extend_from_slice(b"tail");
        w.add_file(b"one", meta(1), &mut &content[..]).expect("one");
        w.pump(true).expect("pump");
        let after_one = w.out.as_ref().expect("out").pos;
        w.add_file(b"two", meta(1), &mut &content[..]).expect("two");
        w.pump(true).expect("pump");
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
