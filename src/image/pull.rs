//! The pull driver: resolves a registry reference to one platform's
//! manifest (following an index nested one level), then, under the cache's
//! per-digest lock (so N concurrent pulls make one download and one
//! flatten), downloads the config and layer blobs in parallel into a
//! staging OCI layout in the cache's temp dir and flattens that layout with
//! the same resolver and flattener as `cairn import`, writing the squashfs
//! straight into the cache.
//!
//! Download and flatten overlap: blobs are fetched config first, then layers
//! top first (the order the flattener, which walks top-down, wants them),
//! into files that only grow; each layer is a [`GrowingBlob`] the layer
//! reader follows, so the flatten starts as soon as the config is in and
//! reads each layer while it is still arriving. Nothing is unpacked to disk;
//! the compressed blobs are removed with the staging dir at the end. A blob
//! is marked `.verified` after its digest check and fsync, so a killed pull
//! resumes with what it had. Any failure (a digest mismatch anywhere, the
//! registry gone) stops both sides and leaves no image in the cache: the
//! writer's temp file only becomes the image when everything verified.

use crate::image::cache::{Cache, CacheError, ImageRecord, now, write_atomic};
use crate::image::digest::{Digest, HashingReader};
use crate::image::import::{ImportError, Progress, flatten_into};
use crate::image::layer::GrowingBlob;
use crate::image::oci::{self, Index, Manifest, OciError};
use crate::image::reference::{ImageSource, ManifestSelector, PlatformSpec};
use crate::image::registry::reference::RegistryRef;
use crate::image::registry::{ClientOptions, Registry, RegistryError};
use crate::image::source::{ResolvedImage, SourceError, resolve};
use crate::squashfs::writer::{WriteError, Writer, WriterOptions};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("starting the download runtime")]
    Runtime(#[source] std::io::Error),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error("{reference}: reading its manifest")]
    Oci {
        reference: String,
        #[source]
        source: OciError,
    },
    #[error("{reference}: indexes nested more than {MAX_INDEX_LEVELS} levels deep (at {digest})")]
    NestedIndex { reference: String, digest: Digest },
    #[error("{reference}: {step} {path}")]
    Stage {
        reference: String,
        step: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{reference}: a download task failed")]
    Task { reference: String },
    #[error("{reference}: resolving the downloaded image")]
    Resolve {
        reference: String,
        #[source]
        source: SourceError,
    },
    #[error("{reference}: flattening")]
    Flatten {
        reference: String,
        #[source]
        source: ImportError,
    },
    #[error("{reference}: writing {path}")]
    Write {
        reference: String,
        path: PathBuf,
        #[source]
        source: WriteError,
    },
}

/// What the CLI shows while pulling (see also [`Progress`] for the flatten).
pub trait PullProgress: Progress + Sync {
    /// The manifest was resolved: `blobs` are (digest, size) still to fetch.
    fn downloading(&self, _reference: &str, _digest: &Digest, _blobs: &[(Digest, u64)]) {}
    /// Bytes received so far for blob `index` of the list above.
    fn received(&self, _index: usize, _bytes: u64) {}
    fn blob_done(&self, _index: usize, _digest: &Digest, _size: u64) {}
    /// Another process holds the lock for this image.
    fn waiting(&self, _reference: &str) {}
    fn flattening(&self, _layers: usize) {}
}

/// A [`PullProgress`] that shows nothing.
#[derive(Debug, Default)]
pub struct Quiet;
impl Progress for Quiet {}
impl PullProgress for Quiet {}

#[derive(Debug, Clone)]
pub struct PullOptions {
    pub platform: Option<PlatformSpec>,
    pub client: ClientOptions,
    /// Parallel blob downloads.
    pub jobs: usize,
    /// Write here instead of into the cache (no name recorded).
    pub output: Option<PathBuf>,
    pub writer: WriterOptions,
    /// mtime of what cairn adds to the image.
    pub mtime: u32,
}

#[derive(Debug, Clone)]
pub struct PullOutcome {
    /// The canonical reference the cache name was set to.
    pub name: String,
    pub digest: Digest,
    pub path: PathBuf,
    /// False when the image was already complete in the cache.
    pub fetched: bool,
    pub downloaded_bytes: u64,
    pub layers: usize,
    pub image_bytes: u64,
    /// Wall time from the start of the downloads to the last one's end,
    /// and of the flatten (which overlaps the downloads); 0 if cached.
    pub download_time: Duration,
    pub flatten_time: Duration,
}

/// Index levels followed from the reference to a manifest: an index whose
/// chosen entry is itself an index (some registries' multi-arch + attestation
/// layouts) is followed once; deeper nesting is refused.
const MAX_INDEX_LEVELS: usize = 2;

/// Manifest bytes of one platform, from a manifest or an index.
async fn platform_manifest(
    registry: &Registry,
    reference: &RegistryRef,
    platform: Option<&PlatformSpec>,
) -> Result<(Vec<u8>, Digest, Manifest), PullError> {
    let name = reference.to_string();
    let oci_err = |source| PullError::Oci {
        reference: name.clone(),
        source,
    };
    let host = PlatformSpec::host();
    let want = platform.unwrap_or(&host);
    let (mut bytes, mut digest) = registry.manifest(reference).await?;
    for _ in 0..=MAX_INDEX_LEVELS {
        let what = format!("{name}: manifest {digest}");
        let probe: serde_json::Value = oci::parse_json(&what, &bytes).map_err(oci_err)?;
        // Told by content: media types are optional in old manifests.
        if probe.get("manifests").is_none() || probe.get("config").is_some() {
            let manifest: Manifest = oci::parse_json(&what, &bytes).map_err(oci_err)?;
            return Ok((bytes, digest, manifest));
        }
        let index: Index = oci::parse_json(&what, &bytes).map_err(oci_err)?;
        let chosen = oci::select_manifest(&what, &index, &ManifestSelector::Default, Some(want))
            .map_err(oci_err)?;
        let child = chosen.digest(&what).map_err(oci_err)?;
        tracing::debug!("{what}: index entry {child} chosen");
        (bytes, digest) = registry.manifest(&reference.with_digest(child)).await?;
    }
    Err(PullError::NestedIndex {
        reference: name,
        digest,
    })
}

/// Writes the OCI layout skeleton around the manifest in `dir`.
fn stage_layout(
    dir: &Path,
    manifest_bytes: &[u8],
    digest: &Digest,
    media_type: &str,
) -> Result<(), std::io::Error> {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs)?;
    let to_io = |e: CacheError| std::io::Error::other(e.to_string());
    write_atomic(&blobs.join(digest.hex()), manifest_bytes).map_err(to_io)?;
    write_atomic(
        &dir.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .map_err(to_io)?;
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": oci::MEDIA_INDEX,
        "manifests": [{
            "mediaType": if media_type.is_empty() {
                "application/vnd.oci.image.manifest.v1+json"
            } else {
                media_type
            },
            "digest": digest.to_string(),
            "size": manifest_bytes.len(),
        }],
    });
    write_atomic(&dir.join("index.json"), index.to_string().as_bytes()).map_err(to_io)?;
    Ok(())
}

/// Pulls `reference` into `cache` (or `options.output`).
pub fn pull(
    cache: &Cache,
    reference: &RegistryRef,
    options: &PullOptions,
    progress: &dyn PullProgress,
) -> Result<PullOutcome, PullError> {
    let name = reference.to_string();
    let stage_err = |step: &'static str, path: &Path| {
        let name = name.clone();
        let path = path.to_owned();
        move |source| PullError::Stage {
            reference: name,
            step,
            path,
            source,
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(PullError::Runtime)?;
    let registry = Registry::new(reference, options.client.clone())?;
    let (manifest_bytes, digest, manifest) = runtime.block_on(platform_manifest(
        &registry,
        reference,
        options.platform.as_ref(),
    ))?;
    cache.create()?;
    let finish_cached = |fetched: bool, downloaded: u64| -> Result<PullOutcome, PullError> {
        let cached = cache.image_path(&digest);
        let path = match &options.output {
            Some(out) => {
                copy_atomic(&cached, out).map_err(stage_err("copying the image to", out))?;
                out.clone()
            }
            None => {
                cache.set_ref(&name, &digest)?;
                cached
            }
        };
        let image_bytes = fs::metadata(&path).map_or(0, |m| m.len());
        Ok(PullOutcome {
            name: name.clone(),
            digest: digest.clone(),
            path,
            fetched,
            downloaded_bytes: downloaded,
            layers: manifest.layers.len(),
            image_bytes,
            download_time: Duration::ZERO,
            flatten_time: Duration::ZERO,
        })
    };
    if cache.has_image(&digest) {
        return finish_cached(false, 0);
    }
    let key = digest.hex().to_owned();
    let _lock = match cache.try_lock(&key)? {
        Some(l) => l,
        None => {
            progress.waiting(&name);
            cache.lock(&key)?
        }
    };
    // Whoever held the lock may have finished the job.
    if cache.has_image(&digest) {
        return finish_cached(false, 0);
    }
    if options.output.is_none() {
        // Under the lock, a writer's temp file for this image can only be
        // left by a killed pull: the flatten now starts during the download,
        // so a kill leaves one behind.
        remove_stale_temps(&cache.image_path(&digest));
    }
    let staging = cache.staging_dir(&key);
    stage_layout(&staging, &manifest_bytes, &digest, &manifest.media_type)
        .map_err(stage_err("staging", &staging))?;
    let blob_dir = staging.join("blobs/sha256");

    // Config and layers not already verified by an earlier, killed pull:
    // the config first (the flatten needs it to start), then the layers
    // top first, the order the flattener consumes them.
    let mut wanted: Vec<(Digest, u64)> = Vec::new();
    let config_digest = manifest
        .config
        .digest(&format!("{name}: manifest {digest}: config"))
        .map_err(|source| PullError::Oci {
            reference: name.clone(),
            source,
        })?;
    let descriptors = std::iter::once(&manifest.config).chain(manifest.layers.iter().rev());
    for desc in descriptors {
        let d = desc
            .digest(&format!("{name}: manifest {digest}"))
            .map_err(|source| PullError::Oci {
                reference: name.clone(),
                source,
            })?;
        let present = verified_marker(&blob_dir, &d).exists()
            && fs::metadata(blob_dir.join(d.hex())).is_ok_and(|m| m.len() == desc.size);
        if !present && !wanted.iter().any(|(w, _)| *w == d) {
            wanted.push((d, desc.size));
        }
    }
    progress.downloading(&name, &digest, &wanted);
    // Every blob file exists (empty) before anything reads the layout.
    for (d, _) in &wanted {
        let path = blob_dir.join(d.hex());
        fs::File::create(&path).map_err(stage_err("creating", &path))?;
    }
    let growing: Vec<Arc<GrowingBlob>> = wanted.iter().map(|_| GrowingBlob::new()).collect();
    let counters: Vec<Arc<AtomicU64>> =
        wanted.iter().map(|_| Arc::new(AtomicU64::new(0))).collect();
    let cancel = AtomicBool::new(false);
    let start = Instant::now();
    let timeline = Timeline {
        inner: progress,
        start,
    };
    let target = match &options.output {
        Some(out) => out.clone(),
        None => cache.image_path(&digest),
    };
    let layers = manifest.layers.len();

    let (downloaded, flattened) = std::thread::scope(|scope| {
        let downloads = scope.spawn(|| {
            let result = runtime.block_on(download_all(
                &registry,
                &wanted,
                &blob_dir,
                &counters,
                &growing,
                options.jobs.max(1),
                &timeline,
                &name,
                &cancel,
            ));
            // Wake any reader still waiting on a blob that will not come.
            for g in &growing {
                g.fail("the download was abandoned");
            }
            result.map(|bytes| (bytes, start.elapsed()))
        });
        let flattened = flatten_staged(
            &staging,
            &name,
            &config_digest,
            &wanted,
            &growing,
            &target,
            options,
            &timeline,
        );
        if flattened.is_err() {
            cancel.store(true, Ordering::Relaxed);
        }
        let downloaded = downloads.join().unwrap_or_else(|_| {
            Err(PullError::Task {
                reference: name.clone(),
            })
        });
        (downloaded, flattened)
    });
    let ((downloaded_bytes, download_time), (writer, flatten_start)) = match (downloaded, flattened)
    {
        (Ok(d), Ok(f)) => (d, f),
        // The downloads stopped because the flatten failed before it read
        // any layer (a layer's failure waits for the downloads, whose
        // digest check then names a corrupt blob): the flatten's error is
        // the cause.
        (Err(PullError::Task { .. }), Err(e)) if cancel.load(Ordering::Relaxed) => {
            return Err(e);
        }
        // The download's error is the cause of whatever the flatten saw.
        (Err(e), _) => return Err(e),
        (Ok(_), Err(e)) => {
            // The blobs all came and verified; the image itself is refused
            // (or a staged blob went bad on disk after a crash). Keep what
            // still verifies for the next attempt, which waiting pullers
            // make at once: they reuse the blobs instead of downloading
            // everything again, and a blob that went bad must not poison
            // them.
            drop_blobs_that_fail(&blob_dir);
            return Err(e);
        }
    };
    let write_err = |source| PullError::Write {
        reference: name.clone(),
        path: target.clone(),
        source,
    };
    let summary = writer.finish().map_err(write_err)?;
    tracing::info!(
        "+{:.3}s {name}: image written ({} bytes)",
        start.elapsed().as_secs_f64(),
        summary.bytes
    );
    if options.output.is_none() {
        cache.write_record(
            &ImageRecord {
                digest: digest.to_string(),
                source: format!("docker://{name}"),
                size: summary.bytes,
                stored: now(),
            },
            &digest,
        )?;
        cache.set_ref(&name, &digest)?;
    }
    let _ = fs::remove_dir_all(&staging);
    Ok(PullOutcome {
        name,
        digest,
        path: target,
        fetched: true,
        downloaded_bytes,
        layers,
        image_bytes: summary.bytes,
        download_time,
        flatten_time: flatten_start.elapsed(),
    })
}

/// Removes `.NAME.cairn-*.tmp` beside `image` (see `Writer::create`).
fn remove_stale_temps(image: &Path) {
    let (Some(dir), Some(file_name)) = (image.parent(), image.file_name()) else {
        return;
    };
    let prefix = format!(".{}.cairn-", file_name.to_string_lossy());
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) && name.ends_with(".tmp") {
            tracing::debug!("removing {name}, left by a killed pull");
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Marks blob `digest` of a staging layout as downloaded and verified.
fn verified_marker(blob_dir: &Path, digest: &Digest) -> PathBuf {
    blob_dir.join(format!("{}.verified", digest.hex()))
}

/// Check every staged blob marked verified against its digest again, and
/// remove those that fail (with their marker), and unmarked ones.
fn drop_blobs_that_fail(blob_dir: &Path) {
    let Ok(entries) = fs::read_dir(blob_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(digest) = Digest::from_hex(&name) else {
            continue;
        };
        let marker = verified_marker(blob_dir, &digest);
        let good = marker.exists()
            && fs::File::open(entry.path()).is_ok_and(|f| {
                let mut reader = HashingReader::new(f);
                std::io::copy(&mut reader, &mut std::io::sink()).is_ok()
                    && reader.finish().0 == digest
            });
        if !good {
            tracing::debug!("dropping staged blob {name}: it does not verify");
            let _ = fs::remove_file(entry.path());
            let _ = fs::remove_file(marker);
        }
    }
}

/// Resolves the staged layout once its config is there and flattens it into
/// a writer for `target` while the layers still download; the writer is
/// returned unfinished, with when the flatten started.
#[allow(clippy::too_many_arguments)]
fn flatten_staged(
    staging: &Path,
    name: &str,
    config: &Digest,
    wanted: &[(Digest, u64)],
    growing: &[Arc<GrowingBlob>],
    target: &Path,
    options: &PullOptions,
    progress: &Timeline<'_>,
) -> Result<(Writer, Instant), PullError> {
    // The config, if it is being downloaded, must be complete before the
    // layout can be resolved (its failure is reported by the download).
    if let Some(i) = wanted.iter().position(|(d, _)| d == config) {
        growing[i].wait_end();
        if !growing[i].succeeded() {
            return Err(PullError::Task {
                reference: format!("{name}: config {config}"),
            });
        }
    }
    let source = ImageSource::OciLayout {
        dir: staging.to_owned(),
        select: ManifestSelector::Default,
    };
    let mut image = resolve(&source, None).map_err(|source| PullError::Resolve {
        reference: name.to_owned(),
        source,
    })?;
    match &mut image {
        ResolvedImage::Layers { meta, layers } => {
            meta.source = format!("docker://{name}");
            // Layers still downloading are read as they grow.
            for layer in layers.iter_mut() {
                let Some(d) = &layer.digest else { continue };
                if let Some(i) = wanted.iter().position(|(w, _)| w == d) {
                    layer.growing = Some(Arc::clone(&growing[i]));
                }
            }
        }
        ResolvedImage::Directory { meta, .. } => {
            meta.source = format!("docker://{name}");
        }
    }
    let flatten_start = Instant::now();
    tracing::info!(
        "+{:.3}s {name}: flatten starts",
        progress.start.elapsed().as_secs_f64()
    );
    let layers = match &image {
        ResolvedImage::Layers { layers, .. } => layers.len(),
        ResolvedImage::Directory { .. } => 0,
    };
    progress.flattening(layers);
    let write_err = |source| PullError::Write {
        reference: name.to_owned(),
        path: target.to_owned(),
        source,
    };
    let mut writer = Writer::create(target, options.writer.clone()).map_err(write_err)?;
    if let Err(source) = flatten_into(&image, &mut writer, progress, options.mtime) {
        // A layer that does not decode may be a blob whose download is not
        // verified yet, i.e. a corrupt blob: let the downloads end, so that
        // their verdict (a digest mismatch naming the blob) is what the
        // pull reports; a layer whose blob verified is the layer's fault.
        for g in growing {
            g.wait_end();
        }
        return Err(PullError::Flatten {
            reference: name.to_owned(),
            source,
        });
    }
    tracing::info!(
        "+{:.3}s {name}: all layers flattened",
        progress.start.elapsed().as_secs_f64()
    );
    Ok((writer, flatten_start))
}

/// Forwards progress and logs a timeline (`-v`): when each blob is
/// downloaded and each layer's flatten starts, relative to the pull's start.
struct Timeline<'a> {
    inner: &'a dyn PullProgress,
    start: Instant,
}

impl Timeline<'_> {
    fn at(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }
}

impl Progress for Timeline<'_> {
    fn layer(&self, number: usize, total: usize, label: &str) {
        tracing::info!(
            "+{:.3}s flattening layer {number}/{total} {label}",
            self.at()
        );
        self.inner.layer(number, total, label);
    }
    fn bytes(&self, total: u64) {
        self.inner.bytes(total);
    }
}

impl PullProgress for Timeline<'_> {
    fn downloading(&self, reference: &str, digest: &Digest, blobs: &[(Digest, u64)]) {
        self.inner.downloading(reference, digest, blobs);
    }
    fn received(&self, index: usize, bytes: u64) {
        self.inner.received(index, bytes);
    }
    fn blob_done(&self, index: usize, digest: &Digest, size: u64) {
        tracing::info!("+{:.3}s blob {digest} downloaded ({size} bytes)", self.at());
        self.inner.blob_done(index, digest, size);
    }
    fn waiting(&self, reference: &str) {
        self.inner.waiting(reference);
    }
    fn flattening(&self, layers: usize) {
        self.inner.flattening(layers);
    }
}

/// Copies a cached image to `out` by temp file + fsync + rename.
fn copy_atomic(from: &Path, out: &Path) -> Result<(), std::io::Error> {
    let dir = out.parent().filter(|p| !p.as_os_str().is_empty());
    let dir = dir.unwrap_or(Path::new("."));
    let file_name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(".{file_name}.cairn-{}.tmp", std::process::id()));
    let result = (|| {
        fs::copy(from, &temp)?;
        fs::File::open(&temp)?.sync_all()?;
        fs::rename(&temp, out)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Downloads `wanted` (at most `jobs` at once, started in list order) into
/// `blob_dir`, each verified, fsynced and marked verified; returns the
/// bytes received. Stops early when `cancel` is set (the flatten failed).
#[allow(clippy::too_many_arguments)]
async fn download_all(
    registry: &Registry,
    wanted: &[(Digest, u64)],
    blob_dir: &Path,
    counters: &[Arc<AtomicU64>],
    growing: &[Arc<GrowingBlob>],
    jobs: usize,
    progress: &dyn PullProgress,
    name: &str,
    cancel: &AtomicBool,
) -> Result<u64, PullError> {
    let semaphore = Arc::new(tokio::sync::Semaphore::new(jobs));
    let mut tasks = tokio::task::JoinSet::new();
    for (index, (digest, size)) in wanted.iter().enumerate() {
        let registry = registry.clone();
        let digest = digest.clone();
        let size = *size;
        let counter = Arc::clone(&counters[index]);
        let blob = Arc::clone(&growing[index]);
        let semaphore = Arc::clone(&semaphore);
        let path = blob_dir.join(digest.hex());
        let marker = verified_marker(blob_dir, &digest);
        tasks.spawn(async move {
            let _permit = semaphore.acquire_owned().await;
            let result = registry
                .blob_to_file(&digest, size, &path, &counter, &blob)
                .await;
            if result.is_err() {
                // Nothing unverified stays behind (a resumed pull refetches it).
                let _ = std::fs::remove_file(&path);
            }
            result?;
            std::fs::File::create(&marker).map_err(|source| RegistryError::Write {
                digest: digest.clone(),
                path: marker.clone(),
                source,
            })?;
            Ok::<(usize, Digest, u64), RegistryError>((index, digest, size))
        });
    }
    let mut done = vec![false; wanted.len()];
    while !tasks.is_empty() {
        if cancel.load(Ordering::Relaxed) {
            // The flatten gave up, perhaps because a blob that failed its
            // digest check was removed under it: that blob's own error, if
            // a task has one, is the cause to report.
            tasks.abort_all();
            while let Some(joined) = tasks.join_next().await {
                if let Ok(Err(e)) = joined {
                    return Err(e.into());
                }
            }
            return Err(PullError::Task {
                reference: name.to_owned(),
            });
        }
        match tokio::time::timeout(Duration::from_millis(100), tasks.join_next()).await {
            Err(_) => {}
            Ok(None) => break,
            Ok(Some(Ok(Ok((index, digest, size))))) => {
                done[index] = true;
                progress.received(index, size);
                progress.blob_done(index, &digest, size);
            }
            Ok(Some(Ok(Err(e)))) => return Err(e.into()),
            Ok(Some(Err(_))) => {
                return Err(PullError::Task {
                    reference: name.to_owned(),
                });
            }
        }
        for (index, counter) in counters.iter().enumerate() {
            if !done[index] {
                progress.received(index, counter.load(Ordering::Relaxed));
            }
        }
    }
    // The markers must survive a crash only after the blobs they vouch for.
    crate::image::cache::sync_dir(blob_dir)?;
    Ok(counters.iter().map(|c| c.load(Ordering::Relaxed)).sum())
}
