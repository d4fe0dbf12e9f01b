//! The pull driver: resolves a registry reference to one platform's
//! manifest, then (under the cache's per-digest lock, so N concurrent
//! pulls make one download and one flatten) downloads the config and layer
//! blobs in parallel into a staging OCI layout (each verified, fsynced and
//! renamed into place, so a killed pull resumes with what it had) and runs
//! the same resolver and flattener as `cairn import` over that layout,
//! writing the squashfs straight into the cache.
//!
//! Why download first, then flatten: the flattener walks layers top-down
//! (upper layers decide what lower ones may write), while registries serve
//! blobs in any order at link speed; with 4 parallel downloads the layers
//! are all present about when the smallest-first top layers would have
//! been, and the staged layout makes resume-after-kill free. The flatten
//! itself already overlaps decompression of upcoming layers with writing.

use crate::image::cache::{Cache, CacheError, ImageRecord, now, write_atomic};
use crate::image::digest::Digest;
use crate::image::import::{ImportError, Progress, flatten_into};
use crate::image::oci::{self, Index, Manifest, OciError};
use crate::image::reference::{ImageSource, ManifestSelector, PlatformSpec};
use crate::image::registry::reference::RegistryRef;
use crate::image::registry::{ClientOptions, Registry, RegistryError};
use crate::image::source::{ResolvedImage, SourceError, resolve};
use crate::squashfs::writer::{WriteError, Writer, WriterOptions};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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
    #[error("{reference}: index {digest} points at another index")]
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
pub trait PullProgress: Progress {
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
    /// Wall time of the blob downloads and of the flatten (0 if cached).
    pub download_time: Duration,
    pub flatten_time: Duration,
}

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
    let (bytes, digest) = registry.manifest(reference).await?;
    let what = format!("{name}: manifest {digest}");
    let probe: serde_json::Value = oci::parse_json(&what, &bytes).map_err(oci_err)?;
    if probe.get("manifests").is_none() {
        let manifest: Manifest = oci::parse_json(&what, &bytes).map_err(oci_err)?;
        return Ok((bytes, digest, manifest));
    }
    let index: Index = oci::parse_json(&what, &bytes).map_err(oci_err)?;
    let host = PlatformSpec::host();
    let want = platform.unwrap_or(&host);
    let chosen = oci::select_manifest(&what, &index, &ManifestSelector::Default, Some(want))
        .map_err(oci_err)?;
    let child = chosen.digest(&what).map_err(oci_err)?;
    if chosen.is_index() {
        return Err(PullError::NestedIndex {
            reference: name,
            digest: child,
        });
    }
    let pinned = reference.with_digest(child);
    let (bytes, digest) = registry.manifest(&pinned).await?;
    let what = format!("{name}: manifest {digest}");
    let manifest: Manifest = oci::parse_json(&what, &bytes).map_err(oci_err)?;
    if manifest.manifests.is_some() {
        return Err(PullError::NestedIndex {
            reference: name,
            digest,
        });
    }
    Ok((bytes, digest, manifest))
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
    let staging = cache.staging_dir(&key);
    stage_layout(&staging, &manifest_bytes, &digest, &manifest.media_type)
        .map_err(stage_err("staging", &staging))?;
    let blob_dir = staging.join("blobs/sha256");

    // Config and layers not already staged by an earlier, killed pull.
    let mut wanted: Vec<(Digest, u64)> = Vec::new();
    for desc in std::iter::once(&manifest.config).chain(manifest.layers.iter()) {
        let d = desc
            .digest(&format!("{name}: manifest {digest}"))
            .map_err(|source| PullError::Oci {
                reference: name.clone(),
                source,
            })?;
        let present = fs::metadata(blob_dir.join(d.hex())).is_ok_and(|m| m.len() == desc.size);
        if !present && !wanted.iter().any(|(w, _)| *w == d) {
            wanted.push((d, desc.size));
        }
    }
    // Smallest first: the config and small top layers are ready early.
    wanted.sort_by_key(|(_, size)| *size);
    progress.downloading(&name, &digest, &wanted);
    let counters: Vec<Arc<AtomicU64>> =
        wanted.iter().map(|_| Arc::new(AtomicU64::new(0))).collect();
    let download_start = Instant::now();
    runtime.block_on(download_all(
        &registry,
        &wanted,
        &blob_dir,
        &counters,
        options.jobs.max(1),
        progress,
        &name,
    ))?;
    let downloaded: u64 = counters.iter().map(|c| c.load(Ordering::Relaxed)).sum();
    drop(runtime);
    let download_time = download_start.elapsed();
    let flatten_start = Instant::now();

    let source = ImageSource::OciLayout {
        dir: staging.clone(),
        select: ManifestSelector::Default,
    };
    let mut image = resolve(&source, None).map_err(|source| PullError::Resolve {
        reference: name.clone(),
        source,
    })?;
    match &mut image {
        ResolvedImage::Layers { meta, .. } | ResolvedImage::Directory { meta, .. } => {
            meta.source = format!("docker://{name}");
        }
    }
    let layers = manifest.layers.len();
    progress.flattening(layers);
    let target = match &options.output {
        Some(out) => out.clone(),
        None => cache.image_path(&digest),
    };
    let write_err = |source| PullError::Write {
        reference: name.clone(),
        path: target.clone(),
        source,
    };
    let mut writer = Writer::create(&target, options.writer.clone()).map_err(write_err)?;
    if let Err(source) = flatten_into(&image, &mut writer, progress, options.mtime) {
        // A staged blob that fails now (disk trouble after a crash) must
        // not poison the next attempt: start it from scratch.
        let _ = fs::remove_dir_all(&staging);
        return Err(PullError::Flatten {
            reference: name,
            source,
        });
    }
    let summary = writer.finish().map_err(write_err)?;
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
        downloaded_bytes: downloaded,
        layers,
        image_bytes: summary.bytes,
        download_time,
        flatten_time: flatten_start.elapsed(),
    })
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

async fn download_all(
    registry: &Registry,
    wanted: &[(Digest, u64)],
    blob_dir: &Path,
    counters: &[Arc<AtomicU64>],
    jobs: usize,
    progress: &dyn PullProgress,
    name: &str,
) -> Result<(), PullError> {
    let semaphore = Arc::new(tokio::sync::Semaphore::new(jobs));
    let mut tasks = tokio::task::JoinSet::new();
    for (index, (digest, size)) in wanted.iter().enumerate() {
        let registry = registry.clone();
        let digest = digest.clone();
        let size = *size;
        let counter = Arc::clone(&counters[index]);
        let semaphore = Arc::clone(&semaphore);
        let final_path = blob_dir.join(digest.hex());
        let partial = blob_dir.join(format!("{}.partial", digest.hex()));
        tasks.spawn(async move {
            let _permit = semaphore.acquire_owned().await;
            registry
                .blob_to_file(&digest, size, &partial, &counter)
                .await?;
            tokio::fs::rename(&partial, &final_path)
                .await
                .map_err(|source| RegistryError::Write {
                    digest: digest.clone(),
                    path: final_path.clone(),
                    source,
                })?;
            Ok::<(usize, Digest, u64), RegistryError>((index, digest, size))
        });
    }
    let mut done = vec![false; wanted.len()];
    while !tasks.is_empty() {
        match tokio::time::timeout(Duration::from_millis(200), tasks.join_next()).await {
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
    // The renames must survive a crash before anything relies on them.
    crate::image::cache::sync_dir(blob_dir)?;
    Ok(())
}
