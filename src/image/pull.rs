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

use crate::image::cache::{Cache, CacheError, ImageRecord, KeyLock, now, write_atomic};
use crate::image::digest::{Digest, HashingReader};
use crate::image::import::{ImportError, Progress, flatten_into};
use crate::image::layer::GrowingBlob;
use crate::image::oci::{self, Index, Manifest, OciError};
use crate::image::registry::reference::RegistryRef;
use crate::image::registry::{ClientOptions, Registry, RegistryError};
use crate::image::source::{ResolvedImage, SourceError, resolve_source};
use crate::image::spec::{ImageSource, ManifestSelector, PlatformSpec};
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

/// One platform's manifest: its bytes, as staged, their digest, which names
/// the image in the cache, and what they say.
struct PlatformManifest {
    bytes: Vec<u8>,
    digest: Digest,
    manifest: Manifest,
}

/// Manifest bytes of one platform, from a manifest or an index.
async fn platform_manifest(
    registry: &Registry,
    reference: &RegistryRef,
    platform: Option<&PlatformSpec>,
) -> Result<PlatformManifest, PullError> {
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
            return Ok(PlatformManifest {
                bytes,
                digest,
                manifest,
            });
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
    PullJob::new(cache, reference, options, progress)?.run()
}

/// One pull: what it was asked for, where it writes, and the registry
/// client with the runtime its downloads run on.
struct PullJob<'a> {
    cache: &'a Cache,
    reference: &'a RegistryRef,
    options: &'a PullOptions,
    progress: &'a dyn PullProgress,
    /// The canonical reference: the image's name in the cache and errors.
    name: String,
    runtime: tokio::runtime::Runtime,
    registry: Registry,
}

/// A pull's staging OCI layout in the cache's temp dir. It outlives a
/// failed pull on purpose: the next one resumes with its verified blobs.
struct Staging {
    dir: PathBuf,
    blob_dir: PathBuf,
}

/// The blobs a pull still fetches, and the config's digest.
struct WantedBlobs {
    config: Digest,
    /// (digest, size): the config first (the flatten needs it to start),
    /// then the layers top first, the order the flattener consumes them.
    blobs: Vec<(Digest, u64)>,
}

/// What the downloads and the flatten share while both run.
struct Transfers {
    /// (digest, size) of each blob, in download order.
    blobs: Vec<(Digest, u64)>,
    /// Per blob: its file as it grows, which the flatten reads.
    growing: Vec<Arc<GrowingBlob>>,
    /// Per blob: bytes received so far.
    counters: Vec<Arc<AtomicU64>>,
    /// Set when the flatten failed: the downloads stop.
    cancel: AtomicBool,
}

impl Transfers {
    fn new(blobs: Vec<(Digest, u64)>) -> Transfers {
        Transfers {
            growing: blobs.iter().map(|_| GrowingBlob::new()).collect(),
            counters: blobs.iter().map(|_| Arc::new(AtomicU64::new(0))).collect(),
            blobs,
            cancel: AtomicBool::new(false),
        }
    }

    /// Blob `digest` as it downloads, if it is among those fetched.
    fn growing_blob(&self, digest: &Digest) -> Option<&Arc<GrowingBlob>> {
        let index = self.blobs.iter().position(|(d, _)| d == digest)?;
        Some(&self.growing[index])
    }
}

/// What the downloads did: the bytes received, and how long it took.
struct Downloaded {
    bytes: u64,
    time: Duration,
}

/// The flattened image's writer, not finished yet, and when the flatten
/// started.
struct Flattened {
    writer: Writer,
    start: Instant,
}

/// The image downloaded and flattened into `target`.
struct Built {
    target: PathBuf,
    /// When the downloads started (the timeline's zero).
    start: Instant,
    downloaded: Downloaded,
    flattened: Flattened,
}

impl<'a> PullJob<'a> {
    fn new(
        cache: &'a Cache,
        reference: &'a RegistryRef,
        options: &'a PullOptions,
        progress: &'a dyn PullProgress,
    ) -> Result<PullJob<'a>, PullError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(PullError::Runtime)?;
        let registry = Registry::new(reference, options.client.clone())?;
        Ok(PullJob {
            cache,
            reference,
            options,
            progress,
            name: reference.to_string(),
            runtime,
            registry,
        })
    }

    /// The pull's phases, in order; the lock is held from `lock_or_wait`
    /// to the end.
    fn run(self) -> Result<PullOutcome, PullError> {
        let image = self.resolve_manifest()?;
        self.cache.create()?;
        if self.cache.has_image(&image.digest) {
            return self.finish_from_cache(&image);
        }
        let _lock = self.lock_or_wait(&image.digest)?;
        // Whoever held the lock may have finished the job.
        if self.cache.has_image(&image.digest) {
            return self.finish_from_cache(&image);
        }
        self.remove_temps_of_killed_pulls(&image.digest);
        let staging = self.stage(&image)?;
        let wanted = self.wanted_blobs(&image, &staging.blob_dir)?;
        self.progress
            .downloading(&self.name, &image.digest, &wanted.blobs);
        self.create_blob_files(&staging.blob_dir, &wanted.blobs)?;
        let built = self.download_and_flatten(&image.digest, &staging, wanted)?;
        self.publish(&image, &staging, built)
    }

    fn resolve_manifest(&self) -> Result<PlatformManifest, PullError> {
        self.runtime.block_on(platform_manifest(
            &self.registry,
            self.reference,
            self.options.platform.as_ref(),
        ))
    }

    /// The image is complete in the cache: names it there, or copies it to
    /// `options.output`.
    fn finish_from_cache(&self, image: &PlatformManifest) -> Result<PullOutcome, PullError> {
        let cached = self.cache.image_path(&image.digest);
        let path = match &self.options.output {
            Some(out) => {
                copy_atomic(&cached, out).map_err(self.stage_err("copying the image to", out))?;
                out.clone()
            }
            None => {
                self.cache.set_ref(&self.name, &image.digest)?;
                cached
            }
        };
        let image_bytes = fs::metadata(&path).map_or(0, |m| m.len());
        Ok(PullOutcome {
            name: self.name.clone(),
            digest: image.digest.clone(),
            path,
            fetched: false,
            downloaded_bytes: 0,
            layers: image.manifest.layers.len(),
            image_bytes,
            download_time: Duration::ZERO,
            flatten_time: Duration::ZERO,
        })
    }

    /// Takes the cache's lock for this image, waiting (and saying so) while
    /// another process pulls it.
    fn lock_or_wait(&self, digest: &Digest) -> Result<KeyLock, PullError> {
        let key = digest.hex();
        match self.cache.try_lock(key)? {
            Some(lock) => Ok(lock),
            None => {
                self.progress.waiting(&self.name);
                Ok(self.cache.lock(key)?)
            }
        }
    }

    /// Removes the writer's temp files a killed pull left beside the image.
    fn remove_temps_of_killed_pulls(&self, digest: &Digest) {
        if self.options.output.is_none() {
            // Under the lock, a writer's temp file for this image can only be
            // left by a killed pull: the flatten now starts during the download,
            // so a kill leaves one behind.
            remove_stale_temps(&self.cache.image_path(digest));
        }
    }

    /// Writes the staging layout around the manifest (its blobs directory
    /// kept as an earlier, killed pull left it).
    fn stage(&self, image: &PlatformManifest) -> Result<Staging, PullError> {
        let dir = self.cache.staging_dir(image.digest.hex());
        stage_layout(
            &dir,
            &image.bytes,
            &image.digest,
            &image.manifest.media_type,
        )
        .map_err(self.stage_err("staging", &dir))?;
        let blob_dir = dir.join("blobs/sha256");
        Ok(Staging { dir, blob_dir })
    }

    /// The config and layers not already verified by an earlier, killed
    /// pull, each once.
    fn wanted_blobs(
        &self,
        image: &PlatformManifest,
        blob_dir: &Path,
    ) -> Result<WantedBlobs, PullError> {
        let (name, digest, manifest) = (&self.name, &image.digest, &image.manifest);
        let config = manifest
            .config
            .digest(&format!("{name}: manifest {digest}: config"))
            .map_err(|e| self.oci_err(e))?;
        let mut blobs: Vec<(Digest, u64)> = Vec::new();
        let descriptors = std::iter::once(&manifest.config).chain(manifest.layers.iter().rev());
        for desc in descriptors {
            let d = desc
                .digest(&format!("{name}: manifest {digest}"))
                .map_err(|e| self.oci_err(e))?;
            let present = verified_marker(blob_dir, &d).exists()
                && fs::metadata(blob_dir.join(d.hex())).is_ok_and(|m| m.len() == desc.size);
            if !present && !blobs.iter().any(|(w, _)| *w == d) {
                blobs.push((d, desc.size));
            }
        }
        Ok(WantedBlobs { config, blobs })
    }

    /// Creates the wanted blobs' files, empty: every blob file exists
    /// before anything reads the layout.
    fn create_blob_files(&self, blob_dir: &Path, blobs: &[(Digest, u64)]) -> Result<(), PullError> {
        for (d, _) in blobs {
            let path = blob_dir.join(d.hex());
            fs::File::create(&path).map_err(self.stage_err("creating", &path))?;
        }
        Ok(())
    }

    /// Downloads the wanted blobs on one thread while this one flattens the
    /// staged layout as they arrive; on failure, the error that caused the
    /// other side's (see [`both_or_cause`]).
    fn download_and_flatten(
        &self,
        digest: &Digest,
        staging: &Staging,
        wanted: WantedBlobs,
    ) -> Result<Built, PullError> {
        let transfers = Transfers::new(wanted.blobs);
        let start = Instant::now();
        let timeline = Timeline {
            inner: self.progress,
            start,
        };
        let target = match &self.options.output {
            Some(out) => out.clone(),
            None => self.cache.image_path(digest),
        };
        let (runtime, registry, name) = (&self.runtime, &self.registry, self.name.as_str());
        let (downloaded, flattened) = std::thread::scope(|scope| {
            let downloads = scope.spawn(|| {
                let jobs = self.options.jobs.max(1);
                let result = runtime.block_on(download_all(
                    registry,
                    &transfers,
                    &staging.blob_dir,
                    jobs,
                    &timeline,
                    name,
                ));
                // Wake any reader still waiting on a blob that will not come.
                for g in &transfers.growing {
                    g.fail("the download was abandoned");
                }
                result.map(|bytes| Downloaded {
                    bytes,
                    time: start.elapsed(),
                })
            });
            let flattened =
                self.flatten_staged(&staging.dir, &wanted.config, &transfers, &target, &timeline);
            if flattened.is_err() {
                transfers.cancel.store(true, Ordering::Relaxed);
            }
            let downloaded = downloads.join().unwrap_or_else(|_| {
                Err(PullError::Task {
                    reference: name.to_owned(),
                })
            });
            (downloaded, flattened)
        });
        let cancelled = transfers.cancel.load(Ordering::Relaxed);
        let (downloaded, flattened) =
            both_or_cause(downloaded, flattened, cancelled, &staging.blob_dir)?;
        Ok(Built {
            target,
            start,
            downloaded,
            flattened,
        })
    }

    /// Resolves the staged layout once its config is there, its layers
    /// still downloading read as they grow.
    fn resolve_staged(
        &self,
        staging: &Path,
        config: &Digest,
        transfers: &Transfers,
    ) -> Result<ResolvedImage, PullError> {
        let name = &self.name;
        // The config, if it is being downloaded, must be complete before the
        // layout can be resolved (its failure is reported by the download).
        if let Some(blob) = transfers.growing_blob(config) {
            blob.wait_end();
            if !blob.succeeded() {
                return Err(PullError::Task {
                    reference: format!("{name}: config {config}"),
                });
            }
        }
        let source = ImageSource::OciLayout {
            dir: staging.to_owned(),
            select: ManifestSelector::Default,
        };
        let mut image = resolve_source(&source, None).map_err(|source| PullError::Resolve {
            reference: name.clone(),
            source,
        })?;
        match &mut image {
            ResolvedImage::Layers { meta, layers } => {
                meta.source = format!("docker://{name}");
                for layer in layers.iter_mut() {
                    let Some(d) = &layer.digest else { continue };
                    if let Some(blob) = transfers.growing_blob(d) {
                        layer.growing = Some(Arc::clone(blob));
                    }
                }
            }
            ResolvedImage::Directory { meta, .. } => {
                meta.source = format!("docker://{name}");
            }
        }
        Ok(image)
    }

    /// Resolves the staged layout once its config is there and flattens it
    /// into a writer for `target` while the layers still download; the
    /// writer is returned unfinished.
    fn flatten_staged(
        &self,
        staging: &Path,
        config: &Digest,
        transfers: &Transfers,
        target: &Path,
        progress: &Timeline<'_>,
    ) -> Result<Flattened, PullError> {
        let name = &self.name;
        let image = self.resolve_staged(staging, config, transfers)?;
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
        let mut writer = Writer::create(target, self.options.writer.clone())
            .map_err(|e| self.write_err(target, e))?;
        if let Err(source) = flatten_into(&image, &mut writer, progress, self.options.mtime) {
            // A layer that does not decode may be a blob whose download is not
            // verified yet, i.e. a corrupt blob: let the downloads end, so that
            // their verdict (a digest mismatch naming the blob) is what the
            // pull reports; a layer whose blob verified is the layer's fault.
            for g in &transfers.growing {
                g.wait_end();
            }
            return Err(PullError::Flatten {
                reference: name.clone(),
                source,
            });
        }
        tracing::info!(
            "+{:.3}s {name}: all layers flattened",
            progress.start.elapsed().as_secs_f64()
        );
        Ok(Flattened {
            writer,
            start: flatten_start,
        })
    }

    /// Finishes the image, records it in the cache under its name (unless
    /// it went to `options.output`) and removes the staging layout.
    fn publish(
        &self,
        image: &PlatformManifest,
        staging: &Staging,
        built: Built,
    ) -> Result<PullOutcome, PullError> {
        let (name, digest) = (&self.name, &image.digest);
        let summary = built
            .flattened
            .writer
            .finish()
            .map_err(|e| self.write_err(&built.target, e))?;
        tracing::info!(
            "+{:.3}s {name}: image written ({} bytes)",
            built.start.elapsed().as_secs_f64(),
            summary.bytes
        );
        if self.options.output.is_none() {
            self.cache.write_record(
                &ImageRecord {
                    digest: digest.to_string(),
                    source: format!("docker://{name}"),
                    size: summary.bytes,
                    stored: now(),
                },
                digest,
            )?;
            self.cache.set_ref(name, digest)?;
        }
        let _ = fs::remove_dir_all(&staging.dir);
        Ok(PullOutcome {
            name: name.clone(),
            digest: digest.clone(),
            path: built.target,
            fetched: true,
            downloaded_bytes: built.downloaded.bytes,
            layers: image.manifest.layers.len(),
            image_bytes: summary.bytes,
            download_time: built.downloaded.time,
            flatten_time: built.flattened.start.elapsed(),
        })
    }

    fn oci_err(&self, source: OciError) -> PullError {
        PullError::Oci {
            reference: self.name.clone(),
            source,
        }
    }

    fn write_err(&self, target: &Path, source: WriteError) -> PullError {
        PullError::Write {
            reference: self.name.clone(),
            path: target.to_owned(),
            source,
        }
    }

    fn stage_err(
        &self,
        step: &'static str,
        path: &Path,
    ) -> impl FnOnce(std::io::Error) -> PullError {
        let reference = self.name.clone();
        let path = path.to_owned();
        move |source| PullError::Stage {
            reference,
            step,
            path,
            source,
        }
    }
}

/// The results of both sides when both succeeded; else the error that is
/// the cause of the other side's (`cancelled`: the flatten failed and
/// stopped the downloads).
fn both_or_cause(
    downloaded: Result<Downloaded, PullError>,
    flattened: Result<Flattened, PullError>,
    cancelled: bool,
    blob_dir: &Path,
) -> Result<(Downloaded, Flattened), PullError> {
    match (downloaded, flattened) {
        (Ok(d), Ok(f)) => Ok((d, f)),
        // The downloads stopped because the flatten failed before it read
        // any layer (a layer's failure waits for the downloads, whose
        // digest check then names a corrupt blob): the flatten's error is
        // the cause.
        (Err(PullError::Task { .. }), Err(e)) if cancelled => Err(e),
        // The download's error is the cause of whatever the flatten saw.
        (Err(e), _) => Err(e),
        (Ok(_), Err(e)) => {
            // The blobs all came and verified; the image itself is refused
            // (or a staged blob went bad on disk after a crash). Keep what
            // still verifies for the next attempt, which waiting pullers
            // make at once: they reuse the blobs instead of downloading
            // everything again, and a blob that went bad must not poison
            // them.
            drop_blobs_that_fail(blob_dir);
            Err(e)
        }
    }
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

/// Downloads `transfers.blobs` (at most `jobs` at once, started in list
/// order) into `blob_dir`, each verified, fsynced and marked verified;
/// returns the bytes received. Stops early when `transfers.cancel` is set
/// (the flatten failed).
async fn download_all(
    registry: &Registry,
    transfers: &Transfers,
    blob_dir: &Path,
    jobs: usize,
    progress: &dyn PullProgress,
    name: &str,
) -> Result<u64, PullError> {
    let mut tasks = spawn_downloads(registry, transfers, blob_dir, jobs);
    let mut done = vec![false; transfers.blobs.len()];
    while !tasks.is_empty() {
        if transfers.cancel.load(Ordering::Relaxed) {
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
        for (index, counter) in transfers.counters.iter().enumerate() {
            if !done[index] {
                progress.received(index, counter.load(Ordering::Relaxed));
            }
        }
    }
    // The markers must survive a crash only after the blobs they vouch for.
    crate::image::cache::sync_dir(blob_dir)?;
    Ok(transfers
        .counters
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum())
}

/// A blob's download task: its index in the list, digest and size.
type DownloadTasks = tokio::task::JoinSet<Result<(usize, Digest, u64), RegistryError>>;

/// Starts a task per blob of `transfers` (each waits for one of `jobs`
/// permits) that downloads it into `blob_dir` and marks it verified.
fn spawn_downloads(
    registry: &Registry,
    transfers: &Transfers,
    blob_dir: &Path,
    jobs: usize,
) -> DownloadTasks {
    let semaphore = Arc::new(tokio::sync::Semaphore::new(jobs));
    let mut tasks = tokio::task::JoinSet::new();
    for (index, (digest, size)) in transfers.blobs.iter().enumerate() {
        let registry = registry.clone();
        let digest = digest.clone();
        let size = *size;
        let counter = Arc::clone(&transfers.counters[index]);
        let blob = Arc::clone(&transfers.growing[index]);
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
    tasks
}
