//! One layer as a stream of [`LayerItem`]s: the blob is read on its own
//! thread (decompressed by magic: gzip, zstd or none), hashed as it streams
//! (compressed digest and size against the manifest, uncompressed digest
//! against the config's diff_id) and handed over through a bounded channel,
//! so upcoming layers decompress while the writer consumes the current one
//! and memory stays bounded. Tar entries are turned into items here: paths
//! normalised, whiteouts recognised, PAX owners/mtimes/xattrs applied, and
//! every malformed entry refused with the layer and entry named.
//!
//! A blob still being downloaded ([`GrowingBlob`]) is read as it grows:
//! the reader waits for more bytes instead of taking the current end of
//! the file for the end of the blob, so a pull flattens a layer while its
//! download is still running.

use super::archive::BlobLocation;
use super::digest::{Digest, HashingReader};
use super::entry::{PathRole, classify, normalize_link_target};
use super::flatten::{EntryKind, FlattenError, LayerItem};
use super::sink::{EntryMeta, SpecialKind};
use std::io::{self, BufRead, BufReader, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex};

/// Chunks handed from a decompressing thread to the consumer.
const CHUNK: usize = 256 * 1024;
/// Chunks in flight per layer: bounds memory to ~2 MiB per decoding layer.
const CHANNEL_DEPTH: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("layer {layer}: opening blob {location}")]
    Open {
        layer: String,
        location: String,
        #[source]
        source: io::Error,
    },
    #[error("layer {layer}: reading or decompressing the blob")]
    Read {
        layer: String,
        #[source]
        source: io::Error,
    },
    #[error("layer {layer}: blob digest mismatch: expected {expected}, got {actual}")]
    Digest {
        layer: String,
        expected: String,
        actual: String,
    },
    #[error("layer {layer}: blob size mismatch: expected {expected} bytes, got {actual}")]
    Size {
        layer: String,
        expected: u64,
        actual: u64,
    },
    #[error(
        "layer {layer}: uncompressed digest mismatch: config rootfs.diff_ids says {expected}, got {actual}"
    )]
    DiffId {
        layer: String,
        expected: String,
        actual: String,
    },
    #[error("layer {layer}: reading the tar stream after entry {after}")]
    Tar {
        layer: String,
        after: String,
        #[source]
        source: io::Error,
    },
    #[error("layer {layer}: entry {path}: bad path")]
    Path {
        layer: String,
        path: String,
        #[source]
        source: super::entry::EntryPathError,
    },
    #[error("layer {layer}: entry {path}: bad {field}")]
    Header {
        layer: String,
        path: String,
        field: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("layer {layer}: entry {path}: {field} {value} out of range")]
    Range {
        layer: String,
        path: String,
        field: &'static str,
        value: u64,
    },
    #[error("layer {layer}: entry {path}: unsupported tar entry type {kind:?}")]
    EntryType {
        layer: String,
        path: String,
        kind: String,
    },
    #[error("layer {layer}: entry {path}: {what}")]
    Malformed {
        layer: String,
        path: String,
        what: &'static str,
    },
    #[error(transparent)]
    Flatten(#[from] FlattenError),
}

/// A layer as the manifest (or archive) describes it.
#[derive(Debug, Clone)]
pub struct LayerSpec {
    /// How errors name the layer: its digest, else its file.
    pub label: String,
    pub location: BlobLocation,
    /// Digest and size of the blob as stored (compressed).
    pub digest: Option<Digest>,
    pub size: Option<u64>,
    /// Digest of the uncompressed tar (config `rootfs.diff_ids`).
    pub diff_id: Option<Digest>,
    pub media_type: Option<String>,
    /// Set while the blob file is still being written by a download: the
    /// reader then follows it (see [`GrowingBlob`]).
    pub growing: Option<Arc<GrowingBlob>>,
}

/// How far a downloading blob file is written, and how the download ended.
#[derive(Debug, Default)]
struct GrowState {
    written: u64,
    /// `written` when readers were last woken.
    woken: u64,
    /// `Some(Ok)` once complete and verified, `Some(Err(why))` if it failed.
    end: Option<Result<(), String>>,
}

/// A blob file that a download is appending to. The downloader reports
/// bytes that are in the file (`advance`) and how it ended (`finish` /
/// `fail`); readers block until the bytes they want are there. The file
/// only ever grows: a retried download skips what is already written.
#[derive(Debug, Default)]
pub struct GrowingBlob {
    state: Mutex<GrowState>,
    changed: Condvar,
}

impl GrowingBlob {
    pub fn new() -> Arc<GrowingBlob> {
        Arc::new(GrowingBlob::default())
    }

    fn update(&self, f: impl FnOnce(&mut GrowState)) {
        // A poisoned lock only means a reader panicked: keep going.
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut state);
        drop(state);
        self.changed.notify_all();
    }

    /// The first `written` bytes of the file are final. Readers are woken
    /// per [`CHUNK`] of new bytes, not per network read: a wakeup per 16 KiB
    /// packet costs the flatten more than it gains.
    pub fn advance(&self, written: u64) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.written = state.written.max(written);
        let wake = state.written >= state.woken + CHUNK as u64;
        if wake {
            state.woken = state.written;
        }
        drop(state);
        if wake {
            self.changed.notify_all();
        }
    }

    /// The download is complete and verified (no effect after a failure).
    pub fn finish(&self) {
        self.update(|s| {
            s.end.get_or_insert(Ok(()));
        });
    }

    /// The download failed or was abandoned (no effect once finished).
    pub fn fail(&self, why: &str) {
        self.update(|s| {
            s.end.get_or_insert_with(|| Err(why.to_owned()));
        });
    }

    /// Is the download over (either way)?
    pub fn ended(&self) -> bool {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .end
            .is_some()
    }

    /// Waits until the download is over, either way.
    pub fn wait_end(&self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        while state.end.is_none() {
            state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Did the download complete (and verify)?
    pub fn succeeded(&self) -> bool {
        matches!(
            self.state.lock().unwrap_or_else(|p| p.into_inner()).end,
            Some(Ok(()))
        )
    }

    /// Waits until bytes beyond `pos` are written (their count) or the blob
    /// is complete (0) or failed (an error).
    fn wait_beyond(&self, pos: u64) -> io::Result<u64> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(Err(why)) = &state.end {
                return Err(io::Error::other(why.clone()));
            }
            if state.written > pos {
                return Ok(state.written - pos);
            }
            if state.end.is_some() {
                return Ok(0);
            }
            state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// Reads a [`GrowingBlob`]'s file from its start, following it as it grows.
struct FollowReader {
    file: std::fs::File,
    pos: u64,
    blob: Arc<GrowingBlob>,
}

impl Read for FollowReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        if out.is_empty() {
            return Ok(0);
        }
        let available = self.blob.wait_beyond(self.pos)?;
        if available == 0 {
            return Ok(0);
        }
        let want = out
            .len()
            .min(usize::try_from(available).unwrap_or(usize::MAX));
        let n = self.file.read_at(&mut out[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "downloaded blob file is shorter than reported",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// Opens a layer's blob: a plain sequential read, or a follow-reader while
/// it downloads.
fn open_blob(spec: &LayerSpec) -> io::Result<Box<dyn Read + Send>> {
    match (&spec.growing, &spec.location) {
        (Some(blob), BlobLocation::File(path)) => Ok(Box::new(FollowReader {
            file: std::fs::File::open(path)?,
            pos: 0,
            blob: Arc::clone(blob),
        })),
        _ => spec.location.open(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// Compression told by the stream's first bytes (media types lie).
pub fn sniff(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

enum Msg {
    Data(Vec<u8>),
    End,
}

/// The uncompressed bytes of one layer, produced by a background thread.
pub struct LayerStream {
    label: String,
    rx: Receiver<Msg>,
    buf: Vec<u8>,
    pos: usize,
    done: bool,
    error: Arc<Mutex<Option<LayerError>>>,
    /// Uncompressed bytes handed out, added to a counter shared with the
    /// progress display.
    consumed: Arc<AtomicU64>,
}

impl std::fmt::Debug for LayerStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerStream")
            .field("label", &self.label)
            .finish()
    }
}

impl LayerStream {
    /// Starts decompressing `spec` on a new thread.
    pub fn spawn(spec: &LayerSpec, consumed: Arc<AtomicU64>) -> LayerStream {
        let (tx, rx) = sync_channel(CHANNEL_DEPTH);
        let error = Arc::new(Mutex::new(None));
        let slot = Arc::clone(&error);
        let thread_spec = spec.clone();
        let spawned = std::thread::Builder::new()
            .name("cairn-layer".into())
            .spawn(move || {
                if let Err(e) = produce(&thread_spec, &tx) {
                    if let Ok(mut s) = slot.lock() {
                        *s = Some(e);
                    }
                }
            });
        if let Err(source) = spawned {
            if let Ok(mut s) = error.lock() {
                *s = Some(LayerError::Read {
                    layer: spec.label.clone(),
                    source,
                });
            }
        }
        LayerStream {
            label: spec.label.clone(),
            rx,
            buf: Vec::new(),
            pos: 0,
            done: false,
            error,
            consumed,
        }
    }

    /// The producer's error, if it failed (it explains any read error).
    pub fn take_error(&self) -> Option<LayerError> {
        self.error.lock().ok().and_then(|mut e| e.take())
    }
}

impl Read for LayerStream {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            if self.done {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Msg::Data(chunk)) => {
                    self.buf = chunk;
                    self.pos = 0;
                }
                Ok(Msg::End) => self.done = true,
                Err(_) => {
                    return Err(io::Error::other(format!(
                        "layer {}: blob stream failed",
                        self.label
                    )));
                }
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        self.consumed.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Reads `reader` to its end in chunks sent to `tx`; false if the consumer left.
fn pump(reader: &mut dyn Read, tx: &SyncSender<Msg>) -> io::Result<bool> {
    loop {
        let mut chunk = vec![0u8; CHUNK];
        let mut filled = 0;
        while filled < CHUNK {
            match reader.read(&mut chunk[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if filled == 0 {
            return Ok(true);
        }
        chunk.truncate(filled);
        if tx.send(Msg::Data(chunk)).is_err() {
            return Ok(false);
        }
        if filled < CHUNK {
            return Ok(true);
        }
    }
}

fn produce(spec: &LayerSpec, tx: &SyncSender<Msg>) -> Result<(), LayerError> {
    let layer = || spec.label.clone();
    let read_err = |source| LayerError::Read {
        layer: layer(),
        source,
    };
    let raw = open_blob(spec).map_err(|source| LayerError::Open {
        layer: layer(),
        location: spec.location.to_string(),
        source,
    })?;
    let mut compressed = BufReader::with_capacity(CHUNK, HashingReader::new(raw));
    let kind = sniff(compressed.fill_buf().map_err(read_err)?);
    // Each arm streams the uncompressed bytes and hands back the compressed
    // reader, so bytes after the end of the compressed stream are hashed too.
    let (mut compressed, uncompressed, pumped) = match kind {
        Compression::None => {
            let mut hashed = HashingReader::new(compressed);
            let pumped = pump(&mut hashed, tx);
            let (inner, d, n) = hashed.into_parts();
            (inner, (d, n), pumped)
        }
        Compression::Gzip => {
            let mut hashed = HashingReader::new(flate2::bufread::MultiGzDecoder::new(compressed));
            let pumped = pump(&mut hashed, tx);
            let (inner, d, n) = hashed.into_parts();
            (inner.into_inner(), (d, n), pumped)
        }
        Compression::Zstd => {
            let decoder = zstd::stream::read::Decoder::with_buffer(compressed).map_err(read_err)?;
            let mut hashed = HashingReader::new(decoder);
            let pumped = pump(&mut hashed, tx);
            let (inner, d, n) = hashed.into_parts();
            (inner.finish(), (d, n), pumped)
        }
    };
    if let Ok(false) = pumped {
        return Ok(());
    }
    // Even when decompression failed, hash the whole blob: a corrupt blob
    // is reported as the digest mismatch it is, not as its symptom.
    let drained = io::copy(&mut compressed, &mut io::sink());
    let (blob_digest, blob_size) = compressed.into_inner().finish();
    if let Some(expected) = &spec.digest {
        if *expected != blob_digest {
            return Err(LayerError::Digest {
                layer: layer(),
                expected: expected.to_string(),
                actual: blob_digest.to_string(),
            });
        }
    }
    pumped.map_err(read_err)?;
    drained.map_err(read_err)?;
    if let Some(expected) = spec.size {
        if expected != blob_size {
            return Err(LayerError::Size {
                layer: layer(),
                expected,
                actual: blob_size,
            });
        }
    }
    if let Some(expected) = &spec.diff_id {
        if *expected != uncompressed.0 {
            return Err(LayerError::DiffId {
                layer: layer(),
                expected: expected.to_string(),
                actual: uncompressed.0.to_string(),
            });
        }
    }
    let _ = tx.send(Msg::End);
    Ok(())
}

fn show(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

/// Parses a PAX mtime ("1700000000.123456789", possibly negative).
fn pax_mtime(value: &[u8]) -> Option<u32> {
    let s = std::str::from_utf8(value).ok()?;
    let whole = s.split('.').next()?;
    let secs: i64 = whole.parse().ok()?;
    Some(secs.clamp(0, i64::from(u32::MAX)) as u32)
}

/// A numeric header field left empty (all NUL or spaces, as some writers
/// do) reads as 0, the way Go's archive/tar (hence docker, umoci) reads it.
fn lenient(parsed: io::Result<u64>, raw: &[u8]) -> io::Result<u64> {
    match parsed {
        Ok(v) => Ok(v),
        Err(_) if raw.iter().all(|b| *b == 0 || *b == b' ') => Ok(0),
        Err(e) => Err(e),
    }
}

/// Turns one tar entry into a layer item.
pub fn parse_entry<R: Read>(
    layer: &str,
    entry: &mut tar::Entry<'_, R>,
) -> Result<LayerItem, LayerError> {
    let raw_path = entry.path_bytes().into_owned();
    let path_str = || show(&raw_path);
    let path = match classify(&raw_path).map_err(|source| LayerError::Path {
        layer: layer.to_owned(),
        path: path_str(),
        source,
    })? {
        PathRole::Entry(p) => p,
        PathRole::Whiteout(p) => return Ok(LayerItem::Whiteout(p)),
        PathRole::Opaque(p) => return Ok(LayerItem::Opaque(p)),
        PathRole::Ignore => return Ok(LayerItem::Ignore),
    };
    let header_err = |field: &'static str| {
        let path = path_str();
        move |source| LayerError::Header {
            layer: layer.to_owned(),
            path,
            field,
            source,
        }
    };
    let range = |field: &'static str, value: u64| LayerError::Range {
        layer: layer.to_owned(),
        path: path_str(),
        field,
        value,
    };
    let mut uid = None;
    let mut gid = None;
    let mut mtime = None;
    let mut xattrs = Vec::new();
    if let Some(pax) = entry.pax_extensions().map_err(header_err("pax header"))? {
        for ext in pax {
            let ext = ext.map_err(header_err("pax header"))?;
            let key = ext.key_bytes();
            let value = ext.value_bytes();
            match key {
                b"uid" => {
                    uid = std::str::from_utf8(value)
                        .ok()
                        .and_then(|v| v.parse::<u64>().ok())
                }
                b"gid" => {
                    gid = std::str::from_utf8(value)
                        .ok()
                        .and_then(|v| v.parse::<u64>().ok())
                }
                b"mtime" => mtime = pax_mtime(value),
                _ => {
                    if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                        xattrs.push((name.to_vec(), value.to_vec()));
                    }
                }
            }
        }
    }
    let header = entry.header();
    let old = header.as_old();
    let mode =
        lenient(header.mode().map(u64::from), &old.mode).map_err(header_err("mode"))? & 0o7777;
    let uid = match uid {
        Some(u) => u,
        None => lenient(header.uid(), &old.uid).map_err(header_err("uid"))?,
    };
    let gid = match gid {
        Some(g) => g,
        None => lenient(header.gid(), &old.gid).map_err(header_err("gid"))?,
    };
    let uid = u32::try_from(uid).map_err(|_| range("uid", uid))?;
    let gid = u32::try_from(gid).map_err(|_| range("gid", gid))?;
    let mtime = match mtime {
        Some(m) => m,
        None => lenient(header.mtime(), &old.mtime)
            .map_err(header_err("mtime"))?
            .min(u64::from(u32::MAX)) as u32,
    };
    xattrs.sort();
    let meta = EntryMeta {
        mode: mode as u16,
        uid,
        gid,
        mtime,
        xattrs,
    };
    let malformed = |what: &'static str| LayerError::Malformed {
        layer: layer.to_owned(),
        path: path_str(),
        what,
    };
    let device = |entry: &tar::Entry<'_, R>| -> Result<(u32, u32), LayerError> {
        let h = entry.header();
        let major = h.device_major().map_err(header_err("device major"))?;
        let minor = h.device_minor().map_err(header_err("device minor"))?;
        Ok((major.unwrap_or(0), minor.unwrap_or(0)))
    };
    let ty = header.entry_type();
    let kind = match ty {
        tar::EntryType::Regular | tar::EntryType::Continuous => {
            EntryKind::File { size: entry.size() }
        }
        tar::EntryType::Directory => EntryKind::Dir,
        tar::EntryType::Symlink => {
            let target = entry
                .link_name_bytes()
                .map(|t| t.into_owned())
                .unwrap_or_default();
            if target.is_empty() {
                return Err(malformed("symbolic link with an empty target"));
            }
            if target.contains(&0) {
                return Err(malformed("symbolic link target contains a NUL byte"));
            }
            // Stored as-is: it is only ever resolved inside the container's root.
            EntryKind::Symlink(target)
        }
        tar::EntryType::Link => {
            let target = entry
                .link_name_bytes()
                .map(|t| t.into_owned())
                .unwrap_or_default();
            let target = normalize_link_target(&target).map_err(|source| LayerError::Path {
                layer: layer.to_owned(),
                path: path_str(),
                source,
            })?;
            EntryKind::Hardlink(target)
        }
        tar::EntryType::Char => {
            let (major, minor) = device(entry)?;
            EntryKind::Special(SpecialKind::CharDevice { major, minor })
        }
        tar::EntryType::Block => {
            let (major, minor) = device(entry)?;
            EntryKind::Special(SpecialKind::BlockDevice { major, minor })
        }
        tar::EntryType::Fifo => EntryKind::Special(SpecialKind::Fifo),
        other => {
            return Err(LayerError::EntryType {
                layer: layer.to_owned(),
                path: path_str(),
                kind: format!("{other:?}"),
            });
        }
    };
    if path.is_empty() && kind != EntryKind::Dir {
        return Err(malformed("the image root is not a directory"));
    }
    Ok(LayerItem::Entry { path, kind, meta })
}

/// Calls `each(ordinal, item, size, data)` for every tar entry of `reader`
/// until it returns false, then reads the stream to its end (so the
/// producer can check the digests of the whole blob).
pub fn for_each_item<R: Read>(
    layer: &str,
    reader: R,
    mut each: impl FnMut(u64, LayerItem, u64, &mut dyn Read) -> Result<bool, LayerError>,
) -> Result<(), LayerError> {
    let mut archive = tar::Archive::new(reader);
    let mut last = String::from("(none: first entry)");
    let tar_err = |last: &str, source| LayerError::Tar {
        layer: layer.to_owned(),
        after: last.to_owned(),
        source,
    };
    {
        let entries = archive.entries().map_err(|e| tar_err(&last, e))?;
        for (ordinal, entry) in entries.enumerate() {
            let mut entry = entry.map_err(|e| tar_err(&last, e))?;
            last = show(&entry.path_bytes());
            let item = parse_entry(layer, &mut entry)?;
            let size = entry.size();
            if !each(ordinal as u64, item, size, &mut entry)? {
                return Ok(());
            }
        }
    }
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(|source| LayerError::Read {
        layer: layer.to_owned(),
        source,
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_compression() {
        assert_eq!(sniff(&[0x1f, 0x8b, 8, 0]), Compression::Gzip);
        assert_eq!(sniff(&[0x28, 0xb5, 0x2f, 0xfd, 0]), Compression::Zstd);
        assert_eq!(sniff(b"etc/"), Compression::None);
        assert_eq!(sniff(b""), Compression::None);
    }

    fn layer_file(bytes: &[u8]) -> (tempfile::TempDir, LayerSpec) {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("blob");
        std::fs::write(&path, bytes).expect("write");
        let spec = LayerSpec {
            label: "sha256:test".into(),
            location: BlobLocation::File(path),
            digest: None,
            size: None,
            diff_id: None,
            media_type: None,
            growing: None,
        };
        (dir, spec)
    }

    fn drain(spec: &LayerSpec) -> (Vec<u8>, Option<LayerError>) {
        let mut stream = LayerStream::spawn(spec, Arc::new(AtomicU64::new(0)));
        let mut out = Vec::new();
        let _ = stream.read_to_end(&mut out);
        (out, stream.take_error())
    }

    #[test]
    fn growing_blob_is_read_as_it_grows() {
        let data: Vec<u8> = (0..900_000u32).map(|i| (i % 253) as u8).collect();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        io::Write::write_all(&mut gz, &data).expect("gz");
        let gz = gz.finish().expect("gz");
        let (_dir, mut spec) = layer_file(b"");
        let blob = GrowingBlob::new();
        spec.growing = Some(Arc::clone(&blob));
        spec.digest = Some(Digest::of_bytes(&gz));
        spec.size = Some(gz.len() as u64);
        let BlobLocation::File(path) = spec.location.clone() else {
            panic!("file location");
        };
        let reader = std::thread::spawn(move || drain(&spec));
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        let mut written = 0u64;
        for chunk in gz.chunks(7_000) {
            io::Write::write_all(&mut file, chunk).expect("write");
            written += chunk.len() as u64;
            blob.advance(written);
        }
        assert!(!blob.ended());
        blob.finish();
        let (out, err) = reader.join().expect("reader");
        assert!(err.is_none(), "{err:?}");
        assert!(out == data);
        assert!(blob.succeeded());
    }

    #[test]
    fn growing_blob_failure_reaches_the_reader() {
        let (_dir, mut spec) = layer_file(b"");
        let blob = GrowingBlob::new();
        spec.growing = Some(Arc::clone(&blob));
        let reader = std::thread::spawn(move || drain(&spec));
        blob.fail("registry went away");
        blob.finish();
        let (out, err) = reader.join().expect("reader");
        assert!(out.is_empty());
        assert!(matches!(err, Some(LayerError::Read { .. })), "{err:?}");
        assert!(blob.ended() && !blob.succeeded());
    }

    #[test]
    fn stream_decompresses_and_verifies_digests() {
        let data: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        io::Write::write_all(&mut gz, &data).expect("gz");
        let gz = gz.finish().expect("gz");
        let (_dir, mut spec) = layer_file(&gz);
        spec.digest = Some(Digest::of_bytes(&gz));
        spec.size = Some(gz.len() as u64);
        spec.diff_id = Some(Digest::of_bytes(&data));
        let (out, err) = drain(&spec);
        assert!(err.is_none(), "{err:?}");
        assert!(out == data);
        spec.diff_id = Some(Digest::of_bytes(b"other"));
        assert!(matches!(drain(&spec).1, Some(LayerError::DiffId { .. })));
        spec.diff_id = None;
        spec.size = Some(1);
        assert!(matches!(drain(&spec).1, Some(LayerError::Size { .. })));
        spec.size = None;
        spec.digest = Some(Digest::of_bytes(b"other"));
        assert!(matches!(drain(&spec).1, Some(LayerError::Digest { .. })));
    }

    #[test]
    fn stream_reads_zstd_and_plain() {
        let data = b"plain tar bytes, more or less".repeat(1000);
        let zst = zstd::encode_all(data.as_slice(), 3).expect("zstd");
        for blob in [&zst, &data] {
            let (_dir, mut spec) = layer_file(blob);
            spec.diff_id = Some(Digest::of_bytes(&data));
            let (out, err) = drain(&spec);
            assert!(err.is_none(), "{err:?}");
            assert!(out == data);
        }
    }

    #[test]
    fn empty_numeric_fields_read_as_zero() {
        let bad = || Err(io::Error::other("not a number"));
        assert_eq!(lenient(bad(), &[0; 8]).expect("nul"), 0);
        assert_eq!(lenient(bad(), b"       \0").expect("spaces"), 0);
        assert!(lenient(bad(), b"12x4567\0").is_err());
        assert_eq!(lenient(Ok(5), b"garbage!").expect("ok"), 5);
    }

    #[test]
    fn parses_pax_mtimes() {
        assert_eq!(pax_mtime(b"1700000000.5"), Some(1_700_000_000));
        assert_eq!(pax_mtime(b"-5"), Some(0));
        assert_eq!(pax_mtime(b"99999999999"), Some(u32::MAX));
        assert_eq!(pax_mtime(b"x"), None);
    }
}
