//! The import driver: streams a resolved image's layers top-down through
//! the [`Flattener`] into a [`TreeSink`] (upcoming layers decompressing on
//! their own threads meanwhile), or walks a rootfs directory; then adds the
//! mount points the runtime needs and `/.cairn/image.json`.

use super::bottom::{BottomError, ImageBottom};
use super::flatten::{EntryKind, FlattenError, Flattener, LayerItem, fixup_index};
use super::hostdir::{self, HostDirError, HostKind, Owners};
use super::layer::{LayerError, LayerSpec, LayerStream, for_each_item};
use super::meta::{IMAGE_META_PATH, ImageMeta, MetaError};
use super::sink::{EntryMeta, TreeSink};
use super::source::ResolvedImage;
use std::collections::VecDeque;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Layers decompressing ahead of the one being written (2-core machines
/// gain nothing from more; memory is ~2 MiB per layer in flight).
const LOOKAHEAD: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error(transparent)]
    Flatten(#[from] FlattenError),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    HostDir(#[from] HostDirError),
    /// Boxed: a reader's error is large, and every import returns this.
    #[error(transparent)]
    Bottom(Box<BottomError>),
}

impl From<BottomError> for ImportError {
    fn from(e: BottomError) -> ImportError {
        ImportError::Bottom(Box::new(e))
    }
}

/// Progress callbacks (a TTY progress bar in the CLI; nothing in tests).
pub trait Progress {
    fn layer(&self, _number: usize, _total: usize, _label: &str) {}
    /// Uncompressed bytes processed so far, all layers together.
    fn bytes(&self, _total: u64) {}
}

/// A [`Progress`] that shows nothing.
#[derive(Debug, Default)]
pub struct NoProgress;
impl Progress for NoProgress {}

/// Mount points `cairn run` binds over: they must exist in a read-only image.
pub const RUNTIME_DIRS: &[&str] = &["dev", "proc", "sys", "tmp", "home"];
pub const RUNTIME_FILES: &[&str] = &["etc/passwd", "etc/group", "etc/hosts", "etc/resolv.conf"];

#[derive(Debug, Clone, Default)]
pub struct ImportSummary {
    pub layers: usize,
    /// Uncompressed layer bytes read.
    pub layer_bytes: u64,
    /// Runtime mount points cairn had to add.
    pub added_paths: Vec<String>,
}

/// Flattens `image` into `sink`, then adds the runtime mount points and the
/// metadata file. `mtime` is used for what cairn itself adds.
pub fn flatten_into(
    image: &ResolvedImage,
    sink: &mut dyn TreeSink,
    progress: &dyn Progress,
    mtime: u32,
) -> Result<ImportSummary, ImportError> {
    flatten_over(None, image, sink, progress, mtime)
}

/// [`flatten_into`] with a squashfs image under the layers (`cairn
/// build`'s base), read in place.
pub fn flatten_over(
    bottom: Option<&ImageBottom>,
    image: &ResolvedImage,
    sink: &mut dyn TreeSink,
    progress: &dyn Progress,
    mtime: u32,
) -> Result<ImportSummary, ImportError> {
    let counter = Arc::new(AtomicU64::new(0));
    let (mut flattener, layers) = match image {
        ResolvedImage::Layers { layers, .. } => (
            flatten_layers(bottom, layers, sink, progress, &counter)?,
            layers.len() + usize::from(bottom.is_some()),
        ),
        ResolvedImage::Directory { root, .. } => (walk_directory(root, sink)?, 0),
    };
    let mut summary = ImportSummary {
        layers,
        layer_bytes: counter.load(Ordering::Relaxed),
        added_paths: Vec::new(),
    };
    let meta = |mode| EntryMeta {
        mode,
        uid: 0,
        gid: 0,
        mtime,
        xattrs: Vec::new(),
    };
    for dir in RUNTIME_DIRS {
        let mode = if *dir == "tmp" { 0o1777 } else { 0o755 };
        if flattener.ensure(sink, dir.as_bytes(), true, meta(mode))? {
            summary.added_paths.push(format!("/{dir}"));
        }
    }
    for file in RUNTIME_FILES {
        if flattener.ensure(sink, file.as_bytes(), false, meta(0o644))? {
            summary.added_paths.push(format!("/{file}"));
        }
    }
    write_meta(image.meta(), sink, mtime)?;
    Ok(summary)
}

/// Writes `/.cairn/image.json` (layers' own `.cairn` entries were dropped
/// by the flattener, so the path is free).
fn write_meta(meta: &ImageMeta, sink: &mut dyn TreeSink, mtime: u32) -> Result<(), ImportError> {
    let json = meta.to_json()?;
    let entry = |mode| EntryMeta {
        mode,
        uid: 0,
        gid: 0,
        mtime,
        xattrs: Vec::new(),
    };
    let sink_err = |path: &str, source| FlattenError::Sink {
        layer: "cairn metadata".into(),
        path: path.to_owned(),
        source,
    };
    sink.dir(b".cairn", entry(0o755))
        .map_err(|e| sink_err(".cairn", e))?;
    sink.file(
        IMAGE_META_PATH.as_bytes(),
        entry(0o644),
        &mut json.as_slice(),
    )
    .map_err(|e| sink_err(IMAGE_META_PATH, e))?;
    Ok(())
}

/// Runs one layer's items through the flattener, preferring the producer's
/// error (digest mismatch, corrupt compression) over the symptom it caused.
fn run_layer(
    spec: &LayerSpec,
    mut stream: LayerStream,
    mut each: impl FnMut(u64, LayerItem, u64, &mut dyn io::Read) -> Result<bool, LayerError>,
) -> Result<(), LayerError> {
    let result = for_each_item(&spec.label, &mut stream, &mut each);
    match result {
        Ok(()) => match stream.take_error() {
            Some(e) => Err(e),
            None => Ok(()),
        },
        Err(e) => {
            // A blob that fails its digest explains any oddity in its
            // content: read it to the end so the digest error wins.
            let _ = io::copy(&mut stream, &mut io::sink());
            Err(stream.take_error().unwrap_or(e))
        }
    }
}

fn flatten_layers(
    bottom: Option<&ImageBottom>,
    layers: &[LayerSpec],
    sink: &mut dyn TreeSink,
    progress: &dyn Progress,
    counter: &Arc<AtomicU64>,
) -> Result<Flattener, ImportError> {
    let total = layers.len();
    // The bottom image, if any, is layer 0 of the flattener.
    let under = usize::from(bottom.is_some());
    let labels = bottom.map(ImageBottom::label).into_iter();
    let mut flattener = Flattener::new(
        labels
            .chain(layers.iter().map(|l| l.label.clone()))
            .collect(),
    );
    // Streams for the layers about to be flattened, top first.
    let mut upcoming: VecDeque<(usize, LayerStream)> = VecDeque::new();
    let mut next_to_spawn = total;
    for l in (0..total).rev() {
        while next_to_spawn > 0 && next_to_spawn + LOOKAHEAD > l {
            next_to_spawn -= 1;
            let stream = LayerStream::spawn(&layers[next_to_spawn], Arc::clone(counter));
            upcoming.push_back((next_to_spawn, stream));
        }
        let Some((index, stream)) = upcoming.pop_front() else {
            break;
        };
        debug_assert_eq!(index, l);
        let spec = &layers[l];
        progress.layer(total - l, total + under, &spec.label);
        tracing::debug!(layer = %spec.label, "flattening layer {}/{}", total - l, total + under);
        flattener.begin_layer(l + under);
        run_layer(spec, stream, |ordinal, item, _size, data| {
            flattener.entry(sink, ordinal, item, data)?;
            progress.bytes(counter.load(Ordering::Relaxed));
            Ok(true)
        })?;
        let fixups = flattener.end_layer();
        if !fixups.is_empty() {
            // Hard links to shadowed entries of this layer: read it again
            // (verified again) up to the last entry they need.
            let wanted = fixup_index(&fixups);
            let last = fixups.iter().map(|f| f.ordinal).max().unwrap_or(0);
            let stream = LayerStream::spawn(spec, Arc::new(AtomicU64::new(0)));
            run_layer(spec, stream, |ordinal, item, size, data| {
                if let Some(i) = wanted.get(&ordinal) {
                    if let LayerItem::Entry {
                        kind: EntryKind::File { .. },
                        meta,
                        ..
                    } = item
                    {
                        flattener.apply_fixup(sink, &fixups[*i], meta, size, data)?;
                    }
                }
                Ok(ordinal < last)
            })?;
        }
    }
    if let Some(bottom) = bottom {
        progress.layer(total + 1, total + 1, &bottom.label());
        flattener.begin_layer(0);
        bottom.feed(&mut flattener, sink)?;
    }
    flattener.finish()?;
    Ok(flattener)
}

/// One tar (plain, gzip or zstd) flattened into `sink` as it is, by the
/// same rules as a layer (hostile paths refused, links resolved inside):
/// no runtime mount points, no metadata. `ADD` of a local archive.
pub fn flatten_archive(spec: &LayerSpec, sink: &mut dyn TreeSink) -> Result<(), ImportError> {
    let counter = Arc::new(AtomicU64::new(0));
    flatten_layers(
        None,
        std::slice::from_ref(spec),
        sink,
        &NoProgress,
        &counter,
    )?;
    Ok(())
}

/// Feeds a rootfs directory to the flattener as one layer (names taken
/// literally: no whiteouts in a directory), hard links found by inode. The
/// sink's own files are skipped: the image may be written inside the tree.
fn walk_directory(root: &Path, sink: &mut dyn TreeSink) -> Result<Flattener, ImportError> {
    let mut flattener = Flattener::new(vec![root.display().to_string()]);
    flattener.begin_layer(0);
    let skip = sink.own_files();
    let mut ordinal = 0u64;
    hostdir::walk::<ImportError>(root, Owners::Keep, &skip, |entry, data| {
        let kind = match entry.kind {
            HostKind::Dir => EntryKind::Dir,
            HostKind::File { size, .. } => EntryKind::File { size },
            HostKind::Symlink(target) => EntryKind::Symlink(target),
            HostKind::Special(kind) => EntryKind::Special(kind),
            HostKind::Hardlink(first) => EntryKind::Hardlink(first),
        };
        let item = LayerItem::Entry {
            path: entry.path,
            kind,
            meta: entry.meta,
        };
        flattener.entry(sink, ordinal, item, data)?;
        ordinal += 1;
        Ok(())
    })?;
    flattener.end_layer();
    flattener.finish()?;
    Ok(flattener)
}
