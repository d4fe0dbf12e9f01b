//! One layer as a stream of [`LayerItem`]s: the blob is read on its own
//! thread (decompressed by magic: gzip, zstd or none), hashed as it streams
//! (compressed digest and size against the manifest, uncompressed digest
//! against the config's diff_id) and handed over through a bounded channel,
//! so upcoming layers decompress while the writer consumes the current one
//! and memory stays bounded. Tar entries are turned into items here: paths
//! normalised, whiteouts recognised, PAX owners/mtimes/xattrs applied,
//! PAX GNU sparse files expanded, and every malformed entry refused with the
//! layer and entry named. Where tar readers disagree, cairn reads a layer
//! as Go's archive/tar does (docker, containerd and umoci use it): numeric
//! fields, PAX records, sparse maps and how a layer may end.
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
use super::sparse::{self, Fragment, SparseError, SparseFormat, SparseReader, SparseRecords};
use super::tarstream::{TarError, TarHeader, TarReader};
use crate::sync::{lock, wait};

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
        value: i64,
    },
    #[error("layer {layer}: entry {path}: bad GNU sparse file")]
    Sparse {
        layer: String,
        path: String,
        #[source]
        source: super::sparse::SparseError,
    },
    #[error(
        "layer {layer}: truncated: the layer ends inside the tar header after entry {after} (at byte {offset})"
    )]
    TruncatedHeader {
        layer: String,
        after: String,
        offset: u64,
    },
    #[error(
        "layer {layer}: entry {path}: truncated: the header says {expected} bytes of data, the layer ends after {got}"
    )]
    TruncatedData {
        layer: String,
        path: String,
        expected: u64,
        got: u64,
    },
    #[error("layer {layer}: after entry {after}: {what}")]
    EndMarker {
        layer: String,
        after: String,
        what: &'static str,
    },
    #[error("layer {layer}: entry {path}: unsupported tar entry type {kind}")]
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
        let mut state = lock(&self.state);
        f(&mut state);
        drop(state);
        self.changed.notify_all();
    }

    /// The first `written` bytes of the file are final. Readers are woken
    /// per [`CHUNK`] of new bytes, not per network read: a wakeup per 16 KiB
    /// packet costs the flatten more than it gains.
    pub fn advance(&self, written: u64) {
        let mut state = lock(&self.state);
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
        lock(&self.state).end.is_some()
    }

    /// Waits until the download is over, either way.
    pub fn wait_end(&self) {
        let mut state = lock(&self.state);
        while state.end.is_none() {
            state = wait(&self.changed, state);
        }
    }

    /// Did the download complete (and verify)?
    pub fn succeeded(&self) -> bool {
        matches!(lock(&self.state).end, Some(Ok(())))
    }

    /// Waits until bytes beyond `pos` are written (their count) or the blob
    /// is complete (0) or failed (an error).
    fn wait_beyond(&self, pos: u64) -> io::Result<u64> {
        let mut state = lock(&self.state);
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
            state = wait(&self.changed, state);
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

/// An mtime as squashfs stores it: seconds since 1970 in an unsigned 32-bit
/// field (the kernel and unsquashfs read it unsigned, so 2038-2106 fit).
/// Earlier times become 0 (1970-01-01), later ones u32::MAX (2106-02-07):
/// the nearest time the image can hold. (mksquashfs 4.5 wraps them modulo
/// 2^32 instead, which turns 1960 into 2096.)
pub fn squashfs_mtime(secs: i64) -> u32 {
    crate::squashfs::format::mtime_field(secs)
}

/// What an entry's PAX records say beyond the fields [`TarReader`]
/// applies itself (path, link, owners, size, mtime): xattrs and a sparse
/// map.
#[derive(Debug, Default)]
struct PaxFields {
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    sparse: SparseRecords,
}

impl PaxFields {
    /// Reads the records the way Go's mergePAX merges them: of records
    /// with the same key the last counts, and an empty value sets no xattr.
    fn read(records: &[(Vec<u8>, Vec<u8>)]) -> PaxFields {
        let mut fields = PaxFields::default();
        for (key, value) in records {
            if fields.sparse.record(key, value) {
                continue;
            }
            if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                fields.xattrs.retain(|(n, _)| n != name);
                fields.xattrs.push((name.to_vec(), value.to_vec()));
            }
        }
        fields.xattrs.retain(|(_, v)| !v.is_empty());
        fields.xattrs.sort();
        fields
    }
}

/// One tar entry, parsed: the item, and how to read its content.
#[derive(Debug)]
pub struct ParsedEntry {
    pub item: LayerItem,
    /// Bytes of the entry's data left to read (after a 1.0 sparse map).
    stored: u64,
    /// A PAX sparse file's stored fragments (the item's size is the real size).
    sparse: Option<Vec<Fragment>>,
}

impl ParsedEntry {
    /// The size of the content the item's reader yields.
    pub fn content_size(&self) -> u64 {
        match &self.item {
            LayerItem::Entry {
                kind: EntryKind::File { size },
                ..
            } => *size,
            _ => self.stored,
        }
    }
}

/// Turns one tar entry into a layer item. For a PAX sparse file of format
/// 1.0 this reads the fragment map at the start of the entry's data.
pub fn parse_entry(
    layer: &str,
    hdr: &TarHeader,
    data: &mut dyn Read,
) -> Result<ParsedEntry, LayerError> {
    let pax = PaxFields::read(&hdr.pax);
    // Until the sparse format is known, the entry goes by the header's
    // path (see `entry_name`).
    let in_header = EntryAt {
        layer,
        path: &hdr.name,
    };
    let sparse_format = pax.sparse.format().map_err(|e| in_header.sparse(e))?;
    let raw_path = entry_name(hdr, &pax.sparse, sparse_format);
    let at = EntryAt {
        layer,
        path: raw_path,
    };
    let path = match classify(raw_path).map_err(|e| at.bad_path(e))? {
        PathRole::Entry(p) => p,
        role => {
            return Ok(ParsedEntry {
                item: role_item(role),
                stored: hdr.stored(),
                sparse: None,
            });
        }
    };
    let meta = entry_meta(&at, hdr, pax.xattrs)?;
    let kind = entry_kind(&at, hdr)?;
    if path.is_empty() && kind != EntryKind::Dir {
        return Err(at.malformed("the image root is not a directory"));
    }
    let (kind, stored, sparse) = match (sparse_format, kind) {
        (None, kind) => (kind, hdr.stored(), None),
        (Some(format), EntryKind::File { size: stored }) => {
            let (size, stored, fragments) = sparse_file(&at, &pax.sparse, format, stored, data)?;
            (EntryKind::File { size }, stored, Some(fragments))
        }
        (Some(_), _) => return Err(at.malformed("a sparse map on an entry that is not a file")),
    };
    Ok(ParsedEntry {
        item: LayerItem::Entry { path, kind, meta },
        stored,
        sparse,
    })
}

/// Names an entry of a layer in the errors about it.
struct EntryAt<'a> {
    layer: &'a str,
    path: &'a [u8],
}

impl EntryAt<'_> {
    fn bad_path(&self, source: super::entry::EntryPathError) -> LayerError {
        LayerError::Path {
            layer: self.layer.to_owned(),
            path: show(self.path),
            source,
        }
    }

    fn range(&self, field: &'static str, value: i64) -> LayerError {
        LayerError::Range {
            layer: self.layer.to_owned(),
            path: show(self.path),
            field,
            value,
        }
    }

    fn malformed(&self, what: &'static str) -> LayerError {
        LayerError::Malformed {
            layer: self.layer.to_owned(),
            path: show(self.path),
            what,
        }
    }

    fn sparse(&self, source: SparseError) -> LayerError {
        LayerError::Sparse {
            layer: self.layer.to_owned(),
            path: show(self.path),
            source,
        }
    }

    fn entry_type(&self, kind: String) -> LayerError {
        LayerError::EntryType {
            layer: self.layer.to_owned(),
            path: show(self.path),
            kind,
        }
    }
}

/// The entry's path as written in the layer, before it is normalised.
fn entry_name<'a>(
    hdr: &'a TarHeader,
    sparse: &'a SparseRecords,
    format: Option<SparseFormat>,
) -> &'a [u8] {
    // Go names a sparse file after GNU.sparse.name (the header holds
    // GNUSparseFile.N/NAME), even when a `path` record is present.
    match (format, sparse.name()) {
        (Some(_), Some(name)) => name,
        _ => &hdr.name,
    }
}

/// What a path that names no entry of its own (a whiteout, an opaque
/// marker, or one cairn ignores) is in the layer.
fn role_item(role: PathRole) -> LayerItem {
    match role {
        PathRole::Whiteout(p) => LayerItem::Whiteout(p),
        PathRole::Opaque(p) => LayerItem::Opaque(p),
        _ => LayerItem::Ignore,
    }
}

/// The owners, mode, mtime and xattrs of an entry, in what squashfs holds.
fn entry_meta(
    at: &EntryAt<'_>,
    hdr: &TarHeader,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
) -> Result<EntryMeta, LayerError> {
    let mode = hdr.mode & 0o7777;
    Ok(EntryMeta {
        // Masked to 0o7777 above, so it fits.
        mode: u16::try_from(mode).map_err(|_| at.range("mode", mode))?,
        uid: u32::try_from(hdr.uid).map_err(|_| at.range("uid", hdr.uid))?,
        gid: u32::try_from(hdr.gid).map_err(|_| at.range("gid", hdr.gid))?,
        mtime: squashfs_mtime(hdr.mtime),
        xattrs,
    })
}

/// The kind of entry a type flag makes, with its link target or device
/// numbers; the types cairn does not unpack are refused.
fn entry_kind(at: &EntryAt<'_>, hdr: &TarHeader) -> Result<EntryKind, LayerError> {
    let kind = match hdr.typeflag {
        // '7' (contiguous file) is a regular file to every reader.
        b'0' | b'7' => EntryKind::File { size: hdr.stored() },
        b'S' => {
            // Go's archive/tar reads old GNU sparse files, but docker,
            // containerd and umoci then refuse the type flag: an image
            // with one runs nowhere else, so cairn refuses it too.
            return Err(at.entry_type("GNUSparse (an old GNU sparse file, which docker, containerd and umoci refuse too; GNU tar writes a portable one with --format=pax)".to_owned()));
        }
        b'5' => EntryKind::Dir,
        b'2' => symlink_kind(at, &hdr.linkname)?,
        b'1' => {
            EntryKind::Hardlink(normalize_link_target(&hdr.linkname).map_err(|e| at.bad_path(e))?)
        }
        b'3' => {
            let (major, minor) = device(at, hdr)?;
            EntryKind::Special(SpecialKind::CharDevice { major, minor })
        }
        b'4' => {
            let (major, minor) = device(at, hdr)?;
            EntryKind::Special(SpecialKind::BlockDevice { major, minor })
        }
        b'6' => EntryKind::Special(SpecialKind::Fifo),
        other => return Err(at.entry_type(type_name(other))),
    };
    Ok(kind)
}

/// A symbolic link to `target` (non-empty, without NUL bytes).
fn symlink_kind(at: &EntryAt<'_>, target: &[u8]) -> Result<EntryKind, LayerError> {
    if target.is_empty() {
        return Err(at.malformed("symbolic link with an empty target"));
    }
    if target.contains(&0) {
        return Err(at.malformed("symbolic link target contains a NUL byte"));
    }
    // Stored as-is: it is only ever resolved inside the container's root.
    Ok(EntryKind::Symlink(target.to_vec()))
}

/// A device entry's (major, minor).
fn device(at: &EntryAt<'_>, hdr: &TarHeader) -> Result<(u32, u32), LayerError> {
    let major = u32::try_from(hdr.devmajor).map_err(|_| at.range("device major", hdr.devmajor))?;
    let minor = u32::try_from(hdr.devminor).map_err(|_| at.range("device minor", hdr.devminor))?;
    Ok((major, minor))
}

/// A PAX sparse file's real size, the stored bytes left to read (after a
/// 1.0 map, which is read from `data`) and its validated fragments.
fn sparse_file(
    at: &EntryAt<'_>,
    records: &SparseRecords,
    format: SparseFormat,
    stored: u64,
    data: &mut dyn Read,
) -> Result<(u64, u64, Vec<Fragment>), LayerError> {
    let mut stored = stored;
    let map = match format {
        SparseFormat::Records => records.map_from_records(),
        SparseFormat::InData => sparse::read_map_in_data(data).and_then(|(map, used)| {
            stored = stored.checked_sub(used).ok_or(SparseError::MapTruncated)?;
            Ok(map)
        }),
    }
    .map_err(|e| at.sparse(e))?;
    let size = match records.real_size() {
        Ok(Some(size)) => size,
        Ok(None) => stored,
        Err(e) => return Err(at.sparse(e)),
    };
    let fragments = sparse::validate(&map, size, stored).map_err(|e| at.sparse(e))?;
    Ok((size, stored, fragments))
}

/// A tar type flag cairn does not unpack, named for the error.
fn type_name(flag: u8) -> String {
    let what = match flag {
        b'x' | b'g' => "a PAX header without an entry",
        b'L' | b'K' => "a GNU long name without an entry",
        b'D' => "a GNU directory dump",
        b'M' => "a GNU multi-volume continuation",
        b'N' => "an old GNU long-name list",
        b'V' => "a GNU volume label",
        _ => "unknown",
    };
    if flag.is_ascii_graphic() {
        format!("'{}' ({what})", char::from(flag))
    } else {
        format!("{flag:#04x} ({what})")
    }
}

/// Counts the bytes read from a tar entry's stored data.
struct Stored<'a> {
    data: &'a mut dyn Read,
    read: u64,
}

impl Read for Stored<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.data.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

/// An entry's content as the flattener reads it: the tar entry's data, or
/// a PAX sparse file's expansion of it.
enum EntryData<'a> {
    Plain(Stored<'a>),
    Sparse(SparseReader<Stored<'a>>),
}

impl Read for EntryData<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            EntryData::Plain(s) => s.read(buf),
            EntryData::Sparse(s) => s.read(buf),
        }
    }
}

impl EntryData<'_> {
    /// Reads what the consumer left of the stored data (never expanding
    /// holes), so the layer's end is known to lie after the whole entry;
    /// returns the stored bytes read in all.
    fn finish(self) -> io::Result<u64> {
        let mut stored = match self {
            EntryData::Plain(s) => s,
            EntryData::Sparse(s) => s.into_stored(),
        };
        io::copy(&mut stored, &mut io::sink())?;
        Ok(stored.read)
    }
}

/// Reads a tar entry's stored data through the [`TarReader`].
struct EntryBytes<'a, R> {
    tar: &'a mut TarReader<R>,
}

impl<R: Read> Read for EntryBytes<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.tar.read_data(buf)
    }
}

/// A tar reader's error as the layer's error, naming the entry read last.
fn tar_error(layer: &str, last: &str, e: TarError) -> LayerError {
    match e {
        TarError::TruncatedHeader { offset } => LayerError::TruncatedHeader {
            layer: layer.to_owned(),
            after: last.to_owned(),
            offset,
        },
        TarError::TruncatedData {
            name,
            expected,
            got,
        } => LayerError::TruncatedData {
            layer: layer.to_owned(),
            path: name,
            expected,
            got,
        },
        TarError::Header {
            offset,
            name,
            field,
            why,
        } => LayerError::Header {
            layer: layer.to_owned(),
            path: name,
            field,
            source: io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{why} (tar header at byte {offset})"),
            ),
        },
        TarError::EndMarker { what, .. } => LayerError::EndMarker {
            layer: layer.to_owned(),
            after: last.to_owned(),
            what,
        },
        TarError::Io(source) => LayerError::Tar {
            layer: layer.to_owned(),
            after: last.to_owned(),
            source,
        },
    }
}

/// Calls `each(ordinal, item, size, data)` for every tar entry of `reader`
/// until it returns false, then reads the stream to its end (so the
/// producer can check the digests of the whole blob). `size` is the
/// length of the content `data` yields (a sparse file's real size).
pub fn for_each_item<R: Read>(
    layer: &str,
    reader: R,
    mut each: impl FnMut(u64, LayerItem, u64, &mut dyn Read) -> Result<bool, LayerError>,
) -> Result<(), LayerError> {
    let mut tar = TarReader::new(reader);
    let mut last = String::from("(none: first entry)");
    let mut ordinal = 0u64;
    while let Some(hdr) = tar.next_entry().map_err(|e| tar_error(layer, &last, e))? {
        last = show(&hdr.name);
        if hdr.typeflag == b'g' {
            // A global PAX header: docker, containerd and umoci ignore it.
            continue;
        }
        let mut bytes = EntryBytes { tar: &mut tar };
        let parsed = parse_entry(layer, &hdr, &mut bytes)?;
        let size = parsed.content_size();
        let stored = Stored {
            data: &mut bytes,
            read: 0,
        };
        let mut data = match parsed.sparse {
            Some(fragments) => EntryData::Sparse(SparseReader::new(stored, fragments, size)),
            None => EntryData::Plain(stored),
        };
        if !each(ordinal, parsed.item, size, &mut data)? {
            return Ok(());
        }
        ordinal += 1;
        let read = data.finish().map_err(|source| LayerError::Read {
            layer: layer.to_owned(),
            source,
        })?;
        if read != parsed.stored {
            return Err(LayerError::TruncatedData {
                layer: layer.to_owned(),
                path: last,
                expected: parsed.stored,
                got: read,
            });
        }
    }
    io::copy(&mut tar.into_inner(), &mut io::sink()).map_err(|source| LayerError::Read {
        layer: layer.to_owned(),
        source,
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::tarstream::{pax_time, tar_number};

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
    fn numbers_read_like_go() {
        assert_eq!(tar_number(b"0000644\0"), Ok(0o644));
        assert_eq!(tar_number(b"  644 \0"), Ok(0o644));
        // Empty fields (all NUL or spaces, as some writers leave them) are 0.
        assert_eq!(tar_number(&[0; 8]), Ok(0));
        assert_eq!(tar_number(b"       \0"), Ok(0));
        assert!(tar_number(b"12x4567\0").is_err());
        assert!(tar_number(b"1 2\0").is_err());
        // Base-256, two's complement: GNU tar's and Python's negative mtimes.
        let mut neg = [0xffu8; 12];
        neg[11] = 0xfe;
        assert_eq!(tar_number(&neg), Ok(-2));
        let mut pos = [0u8; 8];
        pos[0] = 0x80;
        pos[4..].copy_from_slice(&4_000_000_000u32.to_be_bytes());
        assert_eq!(tar_number(&pos), Ok(4_000_000_000));
        let mut big = [0u8; 12];
        big[0] = 0x80;
        big[4..].copy_from_slice(&9_000_000_000i64.to_be_bytes());
        assert_eq!(tar_number(&big), Ok(9_000_000_000));
        let mut before_1970 = [0xffu8; 12];
        before_1970[4..].copy_from_slice(&(-315_619_200i64).to_be_bytes());
        assert_eq!(tar_number(&before_1970), Ok(-315_619_200));
        // More than 64 bits: refused, as Go refuses it.
        let mut huge = [0u8; 12];
        huge[0] = 0x80;
        huge[3] = 1;
        assert!(tar_number(&huge).is_err());
    }

    #[test]
    fn mtimes_clamp_to_what_squashfs_holds() {
        assert_eq!(squashfs_mtime(-315_619_200), 0);
        assert_eq!(squashfs_mtime(-1), 0);
        assert_eq!(squashfs_mtime(1_700_000_000), 1_700_000_000);
        // 2100: past i32 but inside squashfs's unsigned field.
        assert_eq!(squashfs_mtime(4_102_444_800), 4_102_444_800);
        assert_eq!(squashfs_mtime(7_258_118_400), u32::MAX);
    }

    #[test]
    fn parses_pax_times() {
        assert_eq!(pax_time(b"1700000000.5"), Some(1_700_000_000));
        assert_eq!(pax_time(b"-5"), Some(-5));
        assert_eq!(pax_time(b"-1.5"), Some(-2));
        assert_eq!(pax_time(b"-1.000"), Some(-1));
        assert_eq!(pax_time(b"99999999999"), Some(99_999_999_999));
        assert_eq!(pax_time(b"x"), None);
        assert_eq!(pax_time(b"1.5x"), None);
        assert_eq!(pax_time(b"-9223372036854775808.5"), Some(i64::MIN));
    }

    /// A raw tar header (GNU magic), checksummed.
    fn header(name: &str, kind: u8, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_mode(0o644);
        h.set_size(size);
        h.set_mtime(1_700_000_000);
        h.as_old_mut().linkflag[0] = kind;
        h.set_cksum();
        h
    }

    fn pad(out: &mut Vec<u8>) {
        out.resize(out.len().div_ceil(512) * 512, 0);
    }

    fn entry(out: &mut Vec<u8>, h: &tar::Header, data: &[u8]) {
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        pad(out);
    }

    fn pax(out: &mut Vec<u8>, records: &[(&str, &str)]) {
        let mut data = Vec::new();
        for (k, v) in records {
            let body = format!(" {k}={v}\n");
            let mut len = body.len() + 1;
            while format!("{len}{body}").len() != len {
                len += 1;
            }
            data.extend_from_slice(format!("{len}{body}").as_bytes());
        }
        entry(out, &header("PaxHeaders/x", b'x', data.len() as u64), &data);
    }

    type Items = Vec<(LayerItem, u64, Vec<u8>)>;

    fn items(tar: &[u8]) -> Result<Items, LayerError> {
        let mut out = Vec::new();
        for_each_item("sha256:test", tar, |_, item, size, data| {
            let mut content = Vec::new();
            data.read_to_end(&mut content)
                .map_err(|source| LayerError::Read {
                    layer: "test".into(),
                    source,
                })?;
            out.push((item, size, content));
            Ok(true)
        })?;
        Ok(out)
    }

    fn file_at(items: &Items, i: usize) -> (String, u64, &[u8], u32) {
        match &items[i] {
            (
                LayerItem::Entry {
                    path,
                    kind: EntryKind::File { size },
                    meta,
                },
                _,
                content,
            ) => (show(path), *size, content.as_slice(), meta.mtime),
            other => panic!("not a file: {other:?}"),
        }
    }

    #[test]
    fn a_layer_may_end_right_after_the_last_data() {
        let mut tar = Vec::new();
        entry(&mut tar, &header("a", b'0', 3), b"aaa");
        tar.extend_from_slice(header("b", b'0', 6).as_bytes());
        tar.extend_from_slice(b"hello\n");
        // No padding, no end-of-archive blocks (what umoci insert writes).
        let got = items(&tar).expect("clean end");
        assert_eq!(got.len(), 2);
        assert_eq!(file_at(&got, 1).2, b"hello\n");
        // Part of the padding, or the padding and one zero block: also fine.
        for extra in [100usize, 506, 506 + 512] {
            let mut t = tar.clone();
            t.resize(t.len() + extra, 0);
            assert_eq!(items(&t).expect("padding").len(), 2, "{extra}");
        }
        // A layer ending right after a data-less entry's header.
        let mut dir_last = Vec::new();
        entry(&mut dir_last, &header("d/", b'5', 0), b"");
        assert_eq!(items(&dir_last).expect("dir").len(), 1);
    }

    #[test]
    fn a_truncated_layer_is_refused() {
        let mut tar = Vec::new();
        entry(&mut tar, &header("a", b'0', 3), b"aaa");
        tar.extend_from_slice(header("b", b'0', 600).as_bytes());
        tar.extend_from_slice(&[7; 300]);
        // Mid-data, the entry's content not even read by the consumer.
        let e = for_each_item("sha256:l", &tar[..], |_, _, _, _| Ok(true)).expect_err("mid-data");
        assert!(
            matches!(
                &e,
                LayerError::TruncatedData { path, expected: 600, got: 300, .. } if path == "b"
            ),
            "{e}"
        );
        assert!(e.to_string().contains("sha256:l"), "{e}");
        // Mid-header.
        let e = items(&tar[..512 + 512 + 100]).expect_err("mid-header");
        assert!(
            matches!(&e, LayerError::TruncatedHeader { after, .. } if after == "a"),
            "{e}"
        );
        // A zero block followed by something else, or by half a block.
        let mut t = tar[..1024].to_vec();
        t.extend_from_slice(&[0; 512]);
        t.extend_from_slice(header("c", b'0', 0).as_bytes());
        assert!(matches!(items(&t), Err(LayerError::EndMarker { .. })));
        let mut t = tar[..1024].to_vec();
        t.extend_from_slice(&[0; 700]);
        assert!(matches!(items(&t), Err(LayerError::EndMarker { .. })));
    }

    #[test]
    fn negative_base_256_mtimes_clamp_to_1970() {
        let mut h = header("old", b'0', 0);
        let mut field = [0xffu8; 12];
        field[4..].copy_from_slice(&(-315_619_200i64).to_be_bytes());
        h.as_old_mut().mtime = field;
        h.set_cksum();
        let mut future = header("future", b'0', 0);
        let mut field = [0u8; 12];
        field[0] = 0x80;
        field[4..].copy_from_slice(&10_413_792_000i64.to_be_bytes());
        future.as_old_mut().mtime = field;
        future.set_cksum();
        let mut tar = Vec::new();
        entry(&mut tar, &h, b"");
        entry(&mut tar, &future, b"");
        pax(&mut tar, &[("mtime", "-86400.25")]);
        entry(&mut tar, &header("pax", b'0', 0), b"");
        let got = items(&tar).expect("layer");
        assert_eq!(file_at(&got, 0).3, 0);
        assert_eq!(file_at(&got, 1).3, u32::MAX);
        assert_eq!(file_at(&got, 2).3, 0);
    }

    fn sparse_1_0_tar(name_record: &str) -> Vec<u8> {
        let mut data = b"2\n1024\n5\n4000\n0\n".to_vec();
        pad(&mut data);
        data.extend_from_slice(b"hello");
        let mut tar = Vec::new();
        pax(
            &mut tar,
            &[
                ("GNU.sparse.major", "1"),
                ("GNU.sparse.minor", "0"),
                ("GNU.sparse.name", name_record),
                ("GNU.sparse.realsize", "4000"),
            ],
        );
        entry(
            &mut tar,
            &header("GNUSparseFile.1/f", b'0', data.len() as u64),
            &data,
        );
        tar
    }

    fn expected_sparse() -> Vec<u8> {
        let mut want = vec![0u8; 4000];
        want[1024..1029].copy_from_slice(b"hello");
        want
    }

    #[test]
    fn pax_sparse_1_0_is_expanded() {
        let got = items(&sparse_1_0_tar("dir/f")).expect("sparse");
        let (path, size, content, _) = file_at(&got, 0);
        assert_eq!((path.as_str(), size), ("dir/f", 4000));
        assert!(content == expected_sparse());
        assert_eq!(got[0].1, 4000);
    }

    #[test]
    fn pax_sparse_0_x_is_expanded() {
        let v01 = [
            ("GNU.sparse.size", "4000"),
            ("GNU.sparse.numblocks", "2"),
            ("GNU.sparse.name", "f01"),
            ("GNU.sparse.map", "1024,5,4000,0"),
        ];
        let v00 = [
            ("GNU.sparse.size", "4000"),
            ("GNU.sparse.numblocks", "2"),
            ("GNU.sparse.offset", "1024"),
            ("GNU.sparse.numbytes", "5"),
            ("GNU.sparse.offset", "4000"),
            ("GNU.sparse.numbytes", "0"),
        ];
        for (records, name) in [(&v01[..], "f01"), (&v00[..], "f00")] {
            let mut tar = Vec::new();
            pax(&mut tar, records);
            entry(&mut tar, &header(name, b'0', 5), b"hello");
            let got = items(&tar).expect("sparse");
            let (path, size, content, _) = file_at(&got, 0);
            assert_eq!((path.as_str(), size), (name, 4000));
            assert!(content == expected_sparse(), "{name}");
        }
    }

    #[test]
    fn old_gnu_sparse_is_refused_like_go_tools_refuse_it() {
        let mut h = header("old-sparse", b'S', 512);
        let gnu = h.as_gnu_mut().expect("gnu header");
        let octal = |v: u64| {
            let mut f = [0u8; 12];
            let s = format!("{v:011o}");
            f[..11].copy_from_slice(s.as_bytes());
            f
        };
        gnu.sparse[0].offset = octal(1024);
        gnu.sparse[0].numbytes = octal(512);
        gnu.sparse[1].offset = octal(4096);
        gnu.sparse[1].numbytes = octal(0);
        gnu.realsize = octal(4096);
        h.set_cksum();
        let mut tar = Vec::new();
        entry(&mut tar, &h, &[0u8; 512]);
        let e = items(&tar).expect_err("old GNU sparse");
        assert!(
            matches!(&e, LayerError::EntryType { path, .. } if path == "old-sparse"),
            "{e}"
        );
        assert!(e.to_string().contains("--format=pax"), "{e}");
    }

    #[test]
    fn bad_sparse_maps_are_refused() {
        // The map places more data than the entry stores.
        let mut tar = Vec::new();
        pax(
            &mut tar,
            &[
                ("GNU.sparse.size", "4000"),
                ("GNU.sparse.numblocks", "1"),
                ("GNU.sparse.map", "0,9"),
            ],
        );
        entry(&mut tar, &header("f", b'0', 5), b"hello");
        let e = items(&tar).expect_err("unreferenced");
        assert!(
            matches!(&e, LayerError::Sparse { path, .. } if path == "f"),
            "{e}"
        );
        // A map cut short by the entry's end.
        let mut tar = Vec::new();
        pax(
            &mut tar,
            &[
                ("GNU.sparse.major", "1"),
                ("GNU.sparse.minor", "0"),
                ("GNU.sparse.realsize", "4000"),
            ],
        );
        entry(&mut tar, &header("g", b'0', 4), b"2\n1\n");
        assert!(matches!(items(&tar), Err(LayerError::Sparse { .. })));
        // A sparse map on a directory.
        let mut tar = Vec::new();
        pax(
            &mut tar,
            &[("GNU.sparse.numblocks", "0"), ("GNU.sparse.map", "0,0")],
        );
        entry(&mut tar, &header("d/", b'5', 0), b"");
        assert!(matches!(items(&tar), Err(LayerError::Malformed { .. })));
    }

    #[test]
    fn pax_records_merge_like_go() {
        let mut tar = Vec::new();
        pax(
            &mut tar,
            &[
                ("uid", ""),
                ("SCHILY.xattr.user.a", "1"),
                ("SCHILY.xattr.user.e", ""),
            ],
        );
        entry(&mut tar, &header("f", b'0', 0), b"");
        let got = items(&tar).expect("layer");
        let LayerItem::Entry { meta, .. } = &got[0].0 else {
            panic!("entry");
        };
        assert_eq!(meta.xattrs, vec![(b"user.a".to_vec(), b"1".to_vec())]);
        let mut tar = Vec::new();
        pax(&mut tar, &[("uid", "12x")]);
        entry(&mut tar, &header("f", b'0', 0), b"");
        assert!(matches!(
            items(&tar),
            Err(LayerError::Header { field: "uid", .. })
        ));
    }
}
