//! The block store: decompressed blocks of one image kept on node-local
//! disk between runs, so that a job's second start pages its program in
//! with a copy instead of a decompression.
//!
//! Why: every `cairn run` is a fresh mount, and the kernel's page cache of
//! a FUSE (or squashfs) mount goes with it, so each run decompresses again
//! the blocks its program touches (about 2 MB of gzip for busybox's `true`,
//! most of a cold start). The image never changes, so what one run
//! decompressed is valid for the next: the FUSE server offers each block it
//! decompresses to this store and, when the mount is gone (off the job's
//! exit path), writes the store file for the next run to read.
//!
//! One file per image, `<dir>/<identity>.blocks`, written whole to an
//! unnamed (or temporary) file and renamed over the old one (readers never
//! see a partial file; two servers of one image just race to the last
//! rename). The identity hashes the image file's device, inode, size,
//! times and superblock, so a rewritten image gets a new file.
//!
//! The store lives where other users can reach (`/var/tmp` by default), so
//! it trusts nothing it has not checked (see [`crate::trust`]): the
//! directory is opened as the caller's own private directory, one checked
//! handle per component, and every file inside is reached from that
//! handle; and every block, and the index, carries a MAC under a key
//! derived from the user's secret, bound to the image's identity and the
//! block's place in it. A block written by anyone else (or moved from
//! another image, or damaged by a crash) never verifies: the run then
//! decompresses it, never uses wrong bytes. A directory that fails the
//! checks is refused with a warning and the run goes on without a store.
//! The whole directory is kept under a byte budget by removing the least
//! recently used files.
//!
//! Layout, little-endian: a 96-byte header (magic, identity, entry count,
//! index offset, the index's MAC), the blocks, then the index: per block
//! its image offset, file offset, length and MAC, 40 bytes each.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use rustix::fs::OFlags;

use crate::sync::lock;
use crate::trust::secret::MacKey;
use crate::trust::{OwnDir, UserSecret};

const MAGIC: &[u8; 8] = b"CAIRNBK2";
/// Bytes before the first block: magic, identity, entry count, index
/// position and the index MAC, padded.
const HEADER_LEN: usize = 96;
const HEADER: u64 = HEADER_LEN as u64;
const ENTRY: usize = 40;
/// Bytes of a block's MAC kept in the index (128 bits).
const BLOCK_MAC: usize = 16;
/// The context the store's MAC key is derived under.
const PURPOSE: &str = "cairn 2026-12 block store v2";
/// Blocks waiting for the writer thread; more are dropped, not waited for:
/// the read path never blocks on the store.
const QUEUE: usize = 64;
/// A temporary file untouched this long belongs to a server that died.
const STALE_TEMP: Duration = Duration::from_secs(3600);

/// Which image a store file belongs to.
pub type Identity = [u8; 32];

/// The identity of an image file (pure): its device, inode, size and
/// modification and change times, and its superblock (`head`, the first
/// bytes). Rewriting an image in place changes its times; a copy is
/// another inode. blake3, like the run's other hashes: every `cairn run`
/// computes this, and a second hash function is a second CPU feature probe
/// at each start (CPUID, a VM exit of several microseconds apiece on
/// virtual machines). Store files keyed by the earlier SHA-256 identity
/// are no longer found and age out of the budget.
pub fn identity(meta: &fs::Metadata, head: &[u8]) -> Identity {
    let mut h = blake3::Hasher::new();
    h.update(b"cairn block store v2\0");
    for v in [meta.dev(), meta.ino(), meta.size()] {
        h.update(&v.to_le_bytes());
    }
    // The times are signed: their two's complement bytes (as the same bits
    // in a u64).
    for v in [
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ctime(),
        meta.ctime_nsec(),
    ] {
        h.update(&v.to_le_bytes());
    }
    h.update(&head[..head.len().min(96)]);
    h.finalize().into()
}

/// The MAC of the block at image offset `key` of image `identity`.
fn block_mac(mac: &MacKey, identity: &Identity, key: u64, bytes: &[u8]) -> [u8; BLOCK_MAC] {
    let mut h = mac.hasher();
    h.update(b"block\0");
    h.update(identity);
    h.update(&key.to_le_bytes());
    h.update(&(bytes.len() as u64).to_le_bytes());
    h.update(bytes);
    let mut out = [0u8; BLOCK_MAC];
    h.finalize_xof().fill(&mut out);
    out
}

/// The MAC of a store file's header fields and index.
fn index_mac(mac: &MacKey, head: &[u8], index: &[u8]) -> [u8; 32] {
    mac.mac(&[b"index", head, index])
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    /// Where the block's bytes are in the store file.
    at: u64,
    len: u32,
    mac: [u8; BLOCK_MAC],
}

/// The store file of the previous runs, read-only.
#[derive(Debug)]
struct Existing {
    file: File,
    index: HashMap<u64, Entry>,
    bytes: u64,
}

/// Blocks this run decompressed, written by a thread to a temporary file.
#[derive(Debug)]
struct Writer {
    queue: SyncSender<(u64, Vec<u8>)>,
    thread: JoinHandle<Option<Written>>,
}

/// What the writer thread wrote.
#[derive(Debug)]
struct Written {
    /// The name the file gets before it is renamed into place.
    temp: String,
    /// Whether it has that name already (no O_TMPFILE here).
    named: bool,
    file: File,
    index: HashMap<u64, Entry>,
    end: u64,
}

/// Where and how big a block store is, and the key its blocks are
/// authenticated with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// The user's store directory (created 0700 when missing).
    pub dir: PathBuf,
    /// Budget of the whole directory, bytes; also the most one image's
    /// file holds.
    pub budget: u64,
    pub identity: Identity,
    /// The user's secret (see [`crate::trust::secret`]).
    pub secret: UserSecret,
}

/// An image's block store for one server's life: reads from the previous
/// runs' file, collects what this run decompresses, [`BlockStore::finish`]
/// writes the new file.
#[derive(Debug)]
pub struct BlockStore {
    options: StoreOptions,
    dir: OwnDir,
    /// The store file's name inside `dir`.
    name: String,
    mac: MacKey,
    existing: Option<Existing>,
    writer: Mutex<Option<Writer>>,
    /// Bytes accepted for writing so far (with the existing file's: the
    /// budget caps the new file).
    accepted: Mutex<u64>,
    /// Blocks of the existing file that failed their MAC: offered again,
    /// so the next file has them right.
    damaged: Mutex<HashSet<u64>>,
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Read a store file's index, if the file is the caller's own, one of
/// `identity`, whole, and its index verifies under `mac`.
fn read_existing(dir: &OwnDir, name: &str, identity: &Identity, mac: &MacKey) -> Option<Existing> {
    let file = dir.open_own_file(name, OFlags::RDONLY).ok()??;
    let size = file.metadata().ok()?.len();
    let mut header = [0u8; HEADER_LEN];
    file.read_exact_at(&mut header, 0).ok()?;
    if &header[..8] != MAGIC || header[8..40] != identity[..] {
        return None;
    }
    let count = le_u64(&header, 40);
    let index_at = le_u64(&header, 48);
    let index_len = count.checked_mul(ENTRY as u64)?;
    if index_at < HEADER || index_at.checked_add(index_len)? != size {
        return None;
    }
    let mut raw = vec![0u8; usize::try_from(index_len).ok()?];
    file.read_exact_at(&mut raw, index_at).ok()?;
    if index_mac(mac, &header[..56], &raw)[..] != header[56..88] {
        return None;
    }
    let mut index = HashMap::with_capacity(raw.len() / ENTRY);
    for e in raw.chunks_exact(ENTRY) {
        let mut m = [0u8; BLOCK_MAC];
        m.copy_from_slice(&e[24..24 + BLOCK_MAC]);
        let entry = Entry {
            at: le_u64(e, 8),
            len: u32::try_from(le_u64(e, 16)).ok()?,
            mac: m,
        };
        if entry.at < HEADER || entry.at.checked_add(entry.len.into())? > index_at {
            return None;
        }
        index.insert(le_u64(e, 0), entry);
    }
    Some(Existing {
        file,
        index,
        bytes: index_at - HEADER,
    })
}

impl BlockStore {
    /// The store of an image: the previous runs' file when there is a
    /// valid one. `None` when the directory cannot be used (not the
    /// caller's, open to others, reached through a directory another user
    /// controls, not creatable): the run goes on without, with a warning
    /// when someone else's hand is the reason.
    pub fn open(options: StoreOptions) -> Option<BlockStore> {
        if options.budget == 0 {
            return None;
        }
        let caller = crate::sys::process::geteuid();
        let dir = match OwnDir::open(&options.dir, caller, true) {
            Ok(d) => d,
            Err(e) => {
                match e {
                    crate::trust::TrustError::Refused { .. } => {
                        tracing::warn!("block store off: {e}")
                    }
                    _ => tracing::debug!("block store off: {e}"),
                }
                return None;
            }
        };
        let hex = crate::trust::secret::short_hex(&options.identity);
        let name = format!("{hex}.blocks");
        let mac = options.secret.key(PURPOSE);
        let existing = read_existing(&dir, &name, &options.identity, &mac);
        let accepted = existing.as_ref().map_or(0, |e| e.bytes);
        Some(BlockStore {
            options,
            dir,
            name,
            mac,
            existing,
            writer: Mutex::new(None),
            accepted: Mutex::new(accepted),
            damaged: Mutex::new(HashSet::new()),
        })
    }

    /// The store's file (whether or not it exists yet), for messages.
    pub fn path(&self) -> PathBuf {
        self.dir.path().join(&self.name)
    }

    /// How many blocks the previous runs' file holds.
    pub fn len(&self) -> usize {
        self.existing.as_ref().map_or(0, |e| e.index.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the previous runs' file holds the block at image offset
    /// `key` (and it has not failed its MAC).
    pub fn holds(&self, key: u64) -> bool {
        self.existing
            .as_ref()
            .is_some_and(|e| e.index.contains_key(&key))
            && !lock(&self.damaged).contains(&key)
    }

    /// The decompressed block at image offset `key`, if the store has it
    /// whole and verified and it is at most `max` bytes.
    pub fn get(&self, key: u64, max: usize) -> Option<Vec<u8>> {
        let existing = self.existing.as_ref()?;
        let entry = existing.index.get(&key)?;
        let len = entry.len as usize;
        if len > max {
            return None;
        }
        let mut buf = vec![0u8; len];
        if existing.file.read_exact_at(&mut buf, entry.at).is_ok()
            && block_mac(&self.mac, &self.options.identity, key, &buf) == entry.mac
        {
            return Some(buf);
        }
        lock(&self.damaged).insert(key);
        None
    }

    /// Offer a block this run decompressed, for the next runs. Never
    /// blocks: when the writer is behind, or the budget is spent, the
    /// block is just not kept.
    pub fn offer(&self, key: u64, block: &[u8]) {
        if self.holds(key) {
            return;
        }
        {
            let mut accepted = lock(&self.accepted);
            let after = accepted.saturating_add(block.len() as u64);
            if after > self.options.budget {
                return;
            }
            *accepted = after;
        }
        let mut writer = lock(&self.writer);
        if writer.is_none() {
            *writer = self.start_writer();
        }
        if let Some(w) = writer.as_ref() {
            let _ = w.queue.try_send((key, block.to_vec()));
        }
    }

    fn start_writer(&self) -> Option<Writer> {
        let temp = format!(".{}.{}.tmp", self.name, std::process::id());
        // Unnamed until it is complete (O_TMPFILE): a server killed
        // mid-run leaves nothing behind. Where the filesystem cannot, a
        // named temporary file ([`prune`] removes it when stale).
        let (file, named) = match self.dir.unnamed_file() {
            Some(f) => (f, false),
            None => (self.dir.create_file(&temp).ok()?, true),
        };
        let (queue, blocks) = mpsc::sync_channel(QUEUE);
        let out = Written {
            temp,
            named,
            file,
            index: HashMap::new(),
            end: HEADER,
        };
        let mac = self.mac.clone();
        let identity = self.options.identity;
        let thread = std::thread::Builder::new()
            .name("cairn-store".into())
            .spawn(move || write_blocks(out, blocks, &mac, &identity))
            .ok()?;
        Some(Writer { queue, thread })
    }

    /// Write the new store file (the previous one's blocks and this run's)
    /// when this run added any, then keep the directory within its budget.
    /// Called once the mount is gone (later offers are dropped); errors
    /// only cost the next run a decompression, so they are logged, not
    /// returned.
    pub fn finish(&self) {
        *lock(&self.accepted) = u64::MAX;
        let writer = lock(&self.writer).take();
        let written = writer.and_then(|w| {
            drop(w.queue);
            w.thread.join().ok().flatten()
        });
        match written {
            Some(w) => {
                let temp = w.temp.clone();
                if let Err(e) = self.commit(w) {
                    tracing::debug!("block store {}: {e}", self.path().display());
                    let _ = self.dir.remove(OsStr::new(&temp));
                }
            }
            // Nothing new: mark the file used, for the budget's LRU order.
            None => {
                if let Some(e) = &self.existing {
                    let _ = e.file.set_modified(SystemTime::now());
                }
            }
        }
        prune(&self.dir, self.options.budget);
    }

    /// Add the existing file's blocks to this run's, write the index and
    /// header, rename over the old file.
    fn commit(&self, mut w: Written) -> io::Result<()> {
        if let Some(old) = &self.existing {
            let mut buf = Vec::new();
            for (&key, entry) in &old.index {
                if w.index.contains_key(&key) {
                    continue;
                }
                buf.resize(entry.len as usize, 0);
                old.file.read_exact_at(&mut buf, entry.at)?;
                if block_mac(&self.mac, &self.options.identity, key, &buf) != entry.mac {
                    continue;
                }
                w.file.write_all_at(&buf, w.end)?;
                w.index.insert(
                    key,
                    Entry {
                        at: w.end,
                        ..*entry
                    },
                );
                w.end += u64::from(entry.len);
            }
        }
        let mut index = Vec::with_capacity(w.index.len() * ENTRY);
        let mut keys: Vec<_> = w.index.iter().collect();
        keys.sort_unstable_by_key(|(k, _)| **k);
        for (&key, e) in keys {
            for v in [key, e.at, u64::from(e.len)] {
                index.extend_from_slice(&v.to_le_bytes());
            }
            index.extend_from_slice(&e.mac);
        }
        w.file.write_all_at(&index, w.end)?;
        let mut header = [0u8; HEADER_LEN];
        header[..8].copy_from_slice(MAGIC);
        header[8..40].copy_from_slice(&self.options.identity);
        header[40..48].copy_from_slice(&(w.index.len() as u64).to_le_bytes());
        header[48..56].copy_from_slice(&w.end.to_le_bytes());
        let sealed = index_mac(&self.mac, &header[..56], &index);
        header[56..88].copy_from_slice(&sealed);
        w.file.write_all_at(&header, 0)?;
        if !w.named {
            self.dir.link_as(&w.file, &w.temp)?;
        }
        self.dir.rename(&w.temp, &self.name)
    }
}

/// The writer thread: append each block after the header's room, until
/// the queue closes. `None` if nothing could be written.
fn write_blocks(
    mut out: Written,
    blocks: Receiver<(u64, Vec<u8>)>,
    mac: &MacKey,
    identity: &Identity,
) -> Option<Written> {
    let mut failed = false;
    for (key, block) in blocks {
        if failed || out.index.contains_key(&key) {
            continue;
        }
        let Ok(len) = u32::try_from(block.len()) else {
            continue;
        };
        if out.file.write_all_at(&block, out.end).is_err() {
            // A full disk: stop writing, keep draining (the queue's
            // senders must never block).
            failed = true;
            continue;
        }
        out.index.insert(
            key,
            Entry {
                at: out.end,
                len,
                mac: block_mac(mac, identity, key, &block),
            },
        );
        out.end += u64::from(len);
    }
    if failed || out.index.is_empty() {
        // A named temporary file is removed by the next run's prune once
        // stale; the writer has no handle on the directory.
        return None;
    }
    Some(out)
}

/// Keep the directory's store files within `budget` bytes, the most
/// recently used first; remove temporary files of servers long gone.
fn prune(dir: &OwnDir, budget: u64) {
    let Ok(entries) = dir.list() else {
        return;
    };
    let now = SystemTime::now();
    let mut stores = Vec::new();
    for (name, st) in entries {
        let text = name.to_string_lossy();
        let modified =
            SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(st.st_mtime).unwrap_or(0));
        let len = u64::try_from(st.st_size).unwrap_or(0);
        if text.starts_with('.') && text.ends_with(".tmp") {
            if now
                .duration_since(modified)
                .is_ok_and(|age| age > STALE_TEMP)
            {
                let _ = dir.remove(&name);
            }
        } else if text.ends_with(".blocks") || text.ends_with(".facts") {
            stores.push((modified, st.st_mtime_nsec, len, name));
        }
    }
    stores.sort_unstable_by_key(|s| std::cmp::Reverse((s.0, s.1)));
    let mut total = 0u64;
    for (_, _, len, name) in stores {
        total = total.saturating_add(len);
        if total > budget {
            let _ = dir.remove(&name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;
    use std::os::unix::fs::MetadataExt;
    use std::path::Path;

    fn options(dir: &Path, budget: u64, id: u8) -> StoreOptions {
        StoreOptions {
            dir: dir.to_path_buf(),
            budget,
            identity: [id; 32],
            secret: UserSecret::from_bytes([7; 32]),
        }
    }

    fn block(seed: u8, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| i.to_le_bytes()[0].wrapping_mul(seed))
            .collect()
    }

    #[test]
    fn blocks_offered_in_one_run_are_read_in_the_next() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("blocks");
        let store = BlockStore::open(options(&dir, 1 << 20, 1)).expect("store");
        assert!(store.is_empty());
        assert_eq!(store.get(100, 1 << 17), None);
        store.offer(100, &block(3, 1000));
        store.offer(5000, &block(7, 131072));
        store.finish();
        let mode = fs::metadata(&dir).expect("store").mode();
        assert_eq!(mode & 0o777, 0o700);

        let store = BlockStore::open(options(&dir, 1 << 20, 1)).expect("store");
        assert_eq!(store.len(), 2);
        assert_eq!(store.get(100, 1 << 17), Some(block(3, 1000)));
        assert_eq!(store.get(5000, 1 << 17), Some(block(7, 131072)));
        // Never more than the caller can take.
        assert_eq!(store.get(5000, 1000), None);
        assert_eq!(
            fs::metadata(store.path()).expect("store").mode() & 0o777,
            0o600
        );
        // A third run adds to what is there.
        store.offer(9000, &block(9, 10));
        store.finish();
        let store = BlockStore::open(options(&dir, 1 << 20, 1)).expect("store");
        assert_eq!(store.len(), 3);
        assert_eq!(store.get(100, 1 << 17), Some(block(3, 1000)));
        assert_eq!(store.get(9000, 10), Some(block(9, 10)));
        // Nothing else is left in the directory.
        let names: Vec<_> = fs::read_dir(&dir).expect("store").flatten().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn a_run_that_never_finishes_leaves_nothing() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("s");
        let store = BlockStore::open(options(&dir, 1 << 20, 1)).expect("store");
        store.offer(1, &block(3, 4096));
        // A server killed before `finish`: its writer goes with it.
        drop(store);
        assert_eq!(fs::read_dir(&dir).expect("dir").count(), 0);
    }

    #[test]
    fn another_image_does_not_see_the_blocks() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = BlockStore::open(options(&tmp.path().join("s"), 1 << 20, 1)).expect("store");
        store.offer(1, &block(3, 100));
        store.finish();
        let other = BlockStore::open(options(&tmp.path().join("s"), 1 << 20, 2)).expect("store");
        assert!(other.is_empty());
        assert_eq!(other.get(1, 100), None);
    }

    #[test]
    fn a_damaged_block_is_not_returned() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = BlockStore::open(options(&tmp.path().join("s"), 1 << 20, 1)).expect("store");
        store.offer(1, &block(3, 4096));
        store.offer(2, &block(5, 4096));
        let path = store.path().to_path_buf();
        store.finish();
        // Flip a byte of the first block written (just after the header).
        let f = OpenOptions::new().write(true).open(&path).expect("store");
        f.write_all_at(&[0xff], HEADER + 10).expect("store");
        let store = BlockStore::open(options(&tmp.path().join("s"), 1 << 20, 1)).expect("store");
        let good: Vec<_> = [1, 2].iter().filter_map(|&k| store.get(k, 4096)).collect();
        assert_eq!(good.len(), 1, "exactly the damaged block is refused");
        // The run decompresses it again and offers it: the next file has it.
        store.offer(1, &block(3, 4096));
        store.offer(2, &block(5, 4096));
        store.finish();
        let store = BlockStore::open(options(&tmp.path().join("s"), 1 << 20, 1)).expect("store");
        assert_eq!(store.get(1, 4096), Some(block(3, 4096)));
        assert_eq!(store.get(2, 4096), Some(block(5, 4096)));
    }

    #[test]
    fn a_truncated_or_foreign_file_is_ignored() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = BlockStore::open(options(&tmp.path().join("s"), 1 << 20, 1)).expect("store");
        store.offer(1, &block(3, 4096));
        let path = store.path().to_path_buf();
        store.finish();
        let len = fs::metadata(&path).expect("store").len();
        let f = OpenOptions::new().write(true).open(&path).expect("store");
        f.set_len(len - 1).expect("store");
        assert!(
            BlockStore::open(options(&tmp.path().join("s"), 1 << 20, 1))
                .expect("store")
                .is_empty()
        );
        fs::write(&path, b"not a store").expect("store");
        let mut perms = fs::metadata(&path).expect("store").permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o600);
        fs::set_permissions(&path, perms).expect("store");
        assert!(
            BlockStore::open(options(&tmp.path().join("s"), 1 << 20, 1))
                .expect("store")
                .is_empty()
        );
    }

    #[test]
    fn the_budget_caps_a_file_and_the_directory() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = BlockStore::open(options(&tmp.path().join("s"), 10_000, 1)).expect("store");
        for key in 0..5 {
            store.offer(key, &block(3, 4000));
        }
        store.finish();
        let store = BlockStore::open(options(&tmp.path().join("s"), 10_000, 1)).expect("store");
        assert_eq!(store.len(), 2, "two 4000-byte blocks fit in 10000");
        drop(store);
        // A second image's file pushes the older one out.
        std::thread::sleep(Duration::from_millis(20));
        let other = BlockStore::open(options(&tmp.path().join("s"), 10_000, 2)).expect("store");
        other.offer(1, &block(5, 4000));
        other.offer(2, &block(5, 4000));
        other.finish();
        assert!(
            BlockStore::open(options(&tmp.path().join("s"), 10_000, 1))
                .expect("store")
                .is_empty()
        );
        assert_eq!(
            BlockStore::open(options(&tmp.path().join("s"), 10_000, 2))
                .expect("store")
                .len(),
            2
        );
    }

    #[test]
    fn a_directory_open_to_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("open");
        fs::create_dir(&dir).expect("store");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).expect("store");
        assert!(BlockStore::open(options(&dir, 1 << 20, 1)).is_none());
        assert!(BlockStore::open(options(&tmp.path().join("s"), 0, 1)).is_none());
    }

    #[test]
    fn the_identity_follows_the_file_and_its_superblock() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let a = tmp.path().join("a");
        let b = tmp.path().join("b");
        fs::write(&a, b"x").expect("store");
        fs::write(&b, b"x").expect("store");
        let ma = fs::metadata(&a).expect("store");
        let mb = fs::metadata(&b).expect("store");
        assert_eq!(identity(&ma, b"sb"), identity(&ma, b"sb"));
        assert_ne!(identity(&ma, b"sb"), identity(&ma, b"sB"));
        assert_ne!(identity(&ma, b"sb"), identity(&mb, b"sb"));
    }

    #[test]
    fn a_file_made_under_another_secret_never_verifies() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("s");
        // Another user's store file for the same image (same identity,
        // same name), copied in: its MACs were made under their secret.
        let theirs = StoreOptions {
            secret: UserSecret::from_bytes([8; 32]),
            ..options(&dir, 1 << 20, 1)
        };
        let store = BlockStore::open(theirs).expect("store");
        store.offer(1, &block(3, 4096));
        store.finish();
        let store = BlockStore::open(options(&dir, 1 << 20, 1)).expect("store");
        assert!(store.is_empty(), "a foreign index is not read");
        assert_eq!(store.get(1, 4096), None);
    }

    #[test]
    fn a_block_moved_to_another_place_never_verifies() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("s");
        let store = BlockStore::open(options(&dir, 1 << 20, 1)).expect("store");
        store.offer(1, &block(3, 4096));
        store.offer(2, &block(5, 4096));
        let path = store.path();
        store.finish();
        // Swap the two blocks' bytes (same length): each MAC is bound to
        // its image offset, so neither verifies.
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .expect("store");
        let (mut a, mut b) = (vec![0u8; 4096], vec![0u8; 4096]);
        f.read_exact_at(&mut a, HEADER).expect("read");
        f.read_exact_at(&mut b, HEADER + 4096).expect("read");
        f.write_all_at(&b, HEADER).expect("write");
        f.write_all_at(&a, HEADER + 4096).expect("write");
        let store = BlockStore::open(options(&dir, 1 << 20, 1)).expect("store");
        assert_eq!(store.len(), 2);
        assert_eq!(store.get(1, 4096), None);
        assert_eq!(store.get(2, 4096), None);
    }

    #[test]
    fn a_store_file_of_another_owner_or_open_to_others_is_not_read() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("s");
        let store = BlockStore::open(options(&dir, 1 << 20, 1)).expect("store");
        store.offer(1, &block(3, 4096));
        let path = store.path();
        store.finish();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        let store = BlockStore::open(options(&dir, 1 << 20, 1)).expect("store");
        assert!(
            store.is_empty(),
            "a store file readable by others is not trusted"
        );
    }

    #[test]
    fn a_parent_open_to_others_turns_the_store_off() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().expect("tempdir");
        let parent = tmp.path().join("cairn-u");
        fs::create_dir(&parent).expect("mkdir");
        fs::set_permissions(&parent, fs::Permissions::from_mode(0o777)).expect("chmod");
        // The last component would be fine; its parent is anyone's.
        assert!(BlockStore::open(options(&parent.join("blocks"), 1 << 20, 1)).is_none());
        // A symbolic link in a directory only the caller writes is
        // followed (not below /tmp, where it could be anyone's).
        let tmp = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).expect("tempdir");
        let me = crate::sys::process::geteuid();
        if OwnDir::open(tmp.path(), me, false).is_err() {
            // The checkout itself lies below a directory others may write.
            return;
        }
        let real = tmp.path().join("real");
        fs::create_dir(&real).expect("mkdir");
        std::os::unix::fs::symlink(&real, tmp.path().join("link")).expect("symlink");
        let store =
            BlockStore::open(options(&tmp.path().join("link/blocks"), 1 << 20, 1)).expect("store");
        store.offer(1, &block(3, 100));
        store.finish();
        assert!(real.join("blocks").is_dir());
        let meta = fs::metadata(real.join("blocks")).expect("stat");
        assert_eq!(meta.uid(), crate::sys::process::geteuid());
    }
}
