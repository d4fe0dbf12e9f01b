//! The push driver: a flattened image (a squashfs file, usually from the
//! cache) sent to a registry as a standard single-layer OCI image.
//!
//! Phases: authenticate with the registry for pushing (so an unreachable
//! registry or refused credentials fail first); open the image and read
//! the metadata cairn stored in it; write its tree as one gzip'd tar layer
//! into a private staging directory of the cache ([`super::export`]),
//! digesting it on the way; make the image config (the stored Env, Cmd,
//! Entrypoint, WorkingDir, User, Labels, platform and creation time, with
//! `rootfs.diff_ids` naming the layer) and the OCI manifest; upload each
//! blob the registry does not have yet (asked with HEAD first); put the
//! manifest under the tag. The staging directory is removed at the end,
//! also on error, and `cairn gc` removes one a killed push left (its lock
//! is free then).
//!
//! The layer, config and manifest are reproducible: the same image pushed
//! twice gives the same manifest digest, and the second push uploads
//! nothing. For an image of the cache, the layer's digests are remembered
//! beside it (`sha256-<hex>.layer.json`, removed by `cairn gc` with the
//! image): a later push asks the registry for that blob first and writes
//! the layer only if the registry lacks it (writing it was 7.8 s of a 9.3 s
//! push of a 200 MB tree). The image file is read through a memory map, so a `cairn rm` +
//! `cairn gc` during the push cannot pull it from under the reader.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::cache::{Cache, CacheError, encode_name, image_key_of, write_atomic};
use super::digest::Digest;
use super::export::{ExportError, ExportedLayer, write_layer};
use super::meta::{ImageMeta, MetaError, RunConfig};
use super::registry::reference::RegistryRef;
use super::registry::{ClientOptions, Registry, RegistryError};
use super::spec::PlatformSpec;
use crate::squashfs::reader::{Archive, ReadError};

pub const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error(
        "{reference}: a push needs a tag, not a digest (the manifest's digest is known only once it is made)"
    )]
    DigestReference { reference: String },
    #[error("opening the image {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: ReadError,
    },
    #[error("reading the metadata of the image {path}")]
    Meta {
        path: PathBuf,
        #[source]
        source: MetaError,
    },
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error("staging the layer: {step} {path}")]
    Stage {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing the layer of {path}")]
    Export {
        path: PathBuf,
        #[source]
        source: ExportError,
    },
    #[error("encoding the image {what}")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("starting the upload runtime")]
    Runtime(#[source] std::io::Error),
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// What the CLI shows while pushing.
pub trait PushProgress {
    /// The layer is being written from the image's tree.
    fn exporting(&self, _image: &Path) {}
    fn exported(&self, _layer: &ExportedLayer) {}
    /// The layer remembered from an earlier push is in the registry: not
    /// written again.
    fn remembered(&self, _layer: &ExportedLayer) {}
    /// Blob `digest` (`what`: "layer" or "config") is being uploaded.
    fn uploading(&self, _what: &str, _digest: &Digest, _size: u64) {}
    /// The registry has blob `digest` already: not sent again.
    fn skipped(&self, _what: &str, _digest: &Digest) {}
    /// Blob `digest` linked from repository `from` of the same registry.
    fn mounted(&self, _what: &str, _digest: &Digest, _from: &str) {}
}

/// A [`PushProgress`] that shows nothing.
#[derive(Debug, Default)]
pub struct QuietPush;
impl PushProgress for QuietPush {}

#[derive(Debug, Clone)]
pub struct PushOptions {
    pub client: ClientOptions,
}

#[derive(Debug, Clone)]
pub struct PushOutcome {
    /// The digest of the manifest put under the tag.
    pub manifest_digest: Digest,
    /// The layers' blob digests, bottom first.
    pub layers: Vec<Digest>,
    pub config_digest: Digest,
    /// Blobs sent, blobs mounted from another repository of the registry
    /// (see [`BlobPlaces`]), and blobs the repository had already.
    pub uploaded: Vec<Digest>,
    pub mounted: Vec<Digest>,
    pub skipped: Vec<Digest>,
}

/// Pushes the squashfs image at `image` to `reference`: as `built` when
/// given (a built image's layers, see `build::store`), else as one layer
/// written from its tree, staged in `cache`.
pub fn push(
    cache: &Cache,
    image: &Path,
    built: Option<Vec<BlobLayer>>,
    reference: &RegistryRef,
    options: &PushOptions,
    progress: &dyn PushProgress,
) -> Result<PushOutcome, PushError> {
    if reference.digest.is_some() {
        return Err(PushError::DigestReference {
            reference: reference.to_string(),
        });
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(PushError::Runtime)?;
    let registry = Registry::new(reference, options.client.clone())?;
    // An unreachable registry or refused credentials fail before the layer
    // is written, which takes a while for a big image.
    runtime.block_on(registry.authorize_push())?;
    let archive = Archive::open(image).map_err(|source| PushError::Open {
        path: image.to_owned(),
        source,
    })?;
    let meta = ImageMeta::from_archive(&archive).map_err(|source| PushError::Meta {
        path: image.to_owned(),
        source,
    })?;
    let record = layer_record_path(cache, image);
    let remembered = record.as_deref().and_then(read_layer_record);
    let mut places = BlobPlaces::load(cache, &reference.registry);
    let mut sent = Sent::default();
    let (layers, created_by, _staging) = match (built, remembered) {
        (Some(layers), _) => (layers, "cairn build", None),
        (None, Some(layer))
            if runtime.block_on(sent.check(
                &registry,
                &mut places,
                "layer",
                &layer.digest,
                progress,
            ))? =>
        {
            progress.remembered(&layer);
            (vec![BlobLayer::of(&layer, None)], ONE_LAYER, None)
        }
        _ => {
            let staging = cache.staging("push")?;
            progress.exporting(image);
            let layer_path = staging.dir.join("layer.tar.gz");
            let layer = export_layer(&archive, &layer_path).map_err(|e| match e {
                LayerFileError::Io { step, source } => PushError::Stage {
                    step,
                    path: layer_path.clone(),
                    source,
                },
                LayerFileError::Export(source) => PushError::Export {
                    path: image.to_owned(),
                    source,
                },
            })?;
            progress.exported(&layer);
            if let Some(record) = &record {
                write_layer_record(record, &layer);
            }
            (
                vec![BlobLayer::of(&layer, Some(layer_path))],
                ONE_LAYER,
                Some(staging),
            )
        }
    };
    drop(archive);
    let documents = image_documents(meta.as_ref(), &layers, created_by)?;
    let pushed = runtime.block_on(upload(
        &registry,
        &mut places,
        &mut sent,
        &layers,
        &documents,
        progress,
    ));
    // What reached the repository is remembered even when the push failed
    // later: a retry mounts it instead of sending it again.
    places.save();
    pushed?;
    Ok(PushOutcome {
        manifest_digest: documents.manifest_digest,
        config_digest: documents.config_digest,
        layers: layers.into_iter().map(|l| l.digest).collect(),
        uploaded: sent.uploaded,
        mounted: sent.mounted,
        skipped: sent.skipped,
    })
}

/// The history line of an image pushed as its squashfs tree.
const ONE_LAYER: &str = "cairn push: the image's squashfs tree as one layer";

/// One layer blob of a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobLayer {
    /// sha256 of the uncompressed tar.
    pub diff_id: Digest,
    /// sha256 of the gzip blob, and its size.
    pub digest: Digest,
    pub size: u64,
    /// The blob's file; `None` when the registry is known to have it.
    pub path: Option<PathBuf>,
}

impl BlobLayer {
    fn of(layer: &ExportedLayer, path: Option<PathBuf>) -> BlobLayer {
        BlobLayer {
            diff_id: layer.diff_id.clone(),
            digest: layer.digest.clone(),
            size: layer.size,
            path,
        }
    }
}

/// The bytes `export` writes for a tree: a new version when they change,
/// so that a remembered layer is never one the exporter no longer makes.
const LAYER_FORMAT: u32 = 2;

/// What is remembered of an image's layer (see the module doc).
#[derive(Debug, Serialize, Deserialize)]
struct LayerRecord {
    format: u32,
    diff_id: String,
    tar_size: u64,
    digest: String,
    size: u64,
    entries: u64,
    skipped_sockets: Vec<String>,
}

/// Where the layer of `image` is remembered: beside it, when it is an
/// image of `cache` (named by its digest; a file elsewhere may change).
fn layer_record_path(cache: &Cache, image: &Path) -> Option<PathBuf> {
    let name = image.file_name()?.to_str()?;
    let hex = image_key_of(name).filter(|_| !name.starts_with('.') && name.ends_with(".sqfs"))?;
    let images = cache.root().join("images");
    let same = fs::canonicalize(image.parent()?).ok()? == fs::canonicalize(&images).ok()?;
    same.then(|| images.join(format!("sha256-{hex}.layer.json")))
}

/// The remembered layer, if there is a readable record of this format.
fn read_layer_record(path: &Path) -> Option<ExportedLayer> {
    let record: LayerRecord = serde_json::from_slice(&fs::read(path).ok()?).ok()?;
    (record.format == LAYER_FORMAT).then_some(())?;
    Some(ExportedLayer {
        diff_id: Digest::parse(&record.diff_id).ok()?,
        tar_size: record.tar_size,
        digest: Digest::parse(&record.digest).ok()?,
        size: record.size,
        entries: record.entries,
        skipped_sockets: record.skipped_sockets,
    })
}

/// Remember `layer` at `path`; a failure only costs the next push a
/// rewrite of the layer, so it is logged, not fatal.
fn write_layer_record(path: &Path, layer: &ExportedLayer) {
    let record = LayerRecord {
        format: LAYER_FORMAT,
        diff_id: layer.diff_id.to_string(),
        tar_size: layer.tar_size,
        digest: layer.digest.to_string(),
        size: layer.size,
        entries: layer.entries,
        skipped_sockets: layer.skipped_sockets.clone(),
    };
    let written = serde_json::to_vec(&record)
        .map_err(|e| e.to_string())
        .and_then(|bytes| write_atomic(path, &bytes).map_err(|e| e.to_string()));
    if let Err(e) = written {
        tracing::debug!("cannot remember the layer at {}: {e}", path.display());
    }
}

enum LayerFileError {
    Io {
        step: &'static str,
        source: std::io::Error,
    },
    Export(ExportError),
}

/// Writes the layer blob of `archive` to a new file at `path`.
fn export_layer(archive: &Archive, path: &Path) -> Result<ExportedLayer, LayerFileError> {
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|source| LayerFileError::Io {
            step: "creating",
            source,
        })?;
    let out = std::io::BufWriter::with_capacity(1 << 20, file);
    write_layer(archive, out).map_err(LayerFileError::Export)
}

/// The image config and manifest, as bytes and digests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageDocuments {
    pub config: Vec<u8>,
    pub config_digest: Digest,
    pub manifest: Vec<u8>,
    pub manifest_digest: Digest,
}

/// The OCI image config, fields in the order the spec lists them.
#[derive(Serialize)]
struct ConfigDoc<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    created: Option<&'a str>,
    architecture: &'a str,
    os: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    variant: Option<&'a str>,
    config: RuntimeDoc<'a>,
    rootfs: RootFsDoc,
    history: Vec<HistoryDoc<'a>>,
}

/// The runtime part, in the OCI (docker) names.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RuntimeDoc<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "no_strings")]
    env: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    entrypoint: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cmd: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    working_dir: Option<&'a str>,
    #[serde(skip_serializing_if = "no_labels")]
    labels: &'a std::collections::BTreeMap<String, String>,
    #[serde(skip_serializing_if = "no_keys")]
    exposed_ports: std::collections::BTreeMap<&'a str, Empty>,
    #[serde(skip_serializing_if = "no_keys")]
    volumes: std::collections::BTreeMap<&'a str, Empty>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_signal: Option<&'a str>,
}

/// The `{}` the OCI config maps exposed ports and volumes to.
#[derive(Serialize)]
struct Empty {}

fn no_keys(map: &std::collections::BTreeMap<&str, Empty>) -> bool {
    map.is_empty()
}

/// The OCI config's `{"KEY": {}}` set of `keys`.
fn key_set(keys: &std::collections::BTreeSet<String>) -> std::collections::BTreeMap<&str, Empty> {
    keys.iter().map(|k| (k.as_str(), Empty {})).collect()
}

// serde hands `skip_serializing_if` a reference to the field.
fn no_strings(list: &&[String]) -> bool {
    list.is_empty()
}

fn no_labels(labels: &&std::collections::BTreeMap<String, String>) -> bool {
    labels.is_empty()
}

#[derive(Serialize)]
struct RootFsDoc {
    #[serde(rename = "type")]
    kind: &'static str,
    diff_ids: Vec<String>,
}

#[derive(Serialize)]
struct HistoryDoc<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    created: Option<&'a str>,
    created_by: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ManifestDoc {
    schema_version: u32,
    media_type: &'static str,
    config: DescriptorDoc,
    layers: Vec<DescriptorDoc>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DescriptorDoc {
    media_type: &'static str,
    digest: String,
    size: u64,
}

/// The config and manifest of the image made of `layers` (bottom first):
/// pure, so the same metadata and layers always give the same bytes. An
/// image without cairn metadata (a plain squashfs file) gets an empty
/// runtime config and the host's platform.
pub fn image_documents(
    meta: Option<&ImageMeta>,
    layers: &[BlobLayer],
    created_by: &str,
) -> Result<ImageDocuments, PushError> {
    let host = PlatformSpec::host();
    let empty = RunConfig::default();
    let run = meta.map_or(&empty, |m| &m.config);
    let created = meta.and_then(|m| m.created.as_deref());
    let (architecture, variant) = match meta.and_then(|m| m.architecture.as_deref()) {
        Some(arch) => (arch, meta.and_then(|m| m.variant.as_deref())),
        None => (host.architecture.as_str(), host.variant.as_deref()),
    };
    let config = ConfigDoc {
        created,
        architecture,
        os: meta.and_then(|m| m.os.as_deref()).unwrap_or("linux"),
        variant,
        config: RuntimeDoc {
            user: run.user.as_deref(),
            env: &run.env,
            entrypoint: run.entrypoint.as_deref(),
            cmd: run.cmd.as_deref(),
            working_dir: run.working_dir.as_deref(),
            labels: &run.labels,
            exposed_ports: key_set(&run.exposed_ports),
            volumes: key_set(&run.volumes),
            stop_signal: run.stop_signal.as_deref(),
        },
        rootfs: RootFsDoc {
            kind: "layers",
            diff_ids: layers.iter().map(|l| l.diff_id.to_string()).collect(),
        },
        history: layers
            .iter()
            .map(|_| HistoryDoc {
                created,
                created_by,
            })
            .collect(),
    };
    let config = serde_json::to_vec(&config).map_err(|source| PushError::Encode {
        what: "config",
        source,
    })?;
    let config_digest = Digest::of_bytes(&config);
    let manifest = ManifestDoc {
        schema_version: 2,
        media_type: MEDIA_MANIFEST,
        config: DescriptorDoc {
            media_type: MEDIA_CONFIG,
            digest: config_digest.to_string(),
            size: config.len() as u64,
        },
        layers: layers
            .iter()
            .map(|l| DescriptorDoc {
                media_type: MEDIA_LAYER_GZIP,
                digest: l.digest.to_string(),
                size: l.size,
            })
            .collect(),
    };
    let manifest = serde_json::to_vec(&manifest).map_err(|source| PushError::Encode {
        what: "manifest",
        source,
    })?;
    Ok(ImageDocuments {
        manifest_digest: Digest::of_bytes(&manifest),
        config,
        config_digest,
        manifest,
    })
}

/// The blobs of a push so far, by how they reached the repository.
#[derive(Debug, Default)]
struct Sent {
    uploaded: Vec<Digest>,
    mounted: Vec<Digest>,
    skipped: Vec<Digest>,
}

impl Sent {
    /// Is blob `digest` in the repository now: there already (HEAD), or
    /// mounted from a repository of the registry an earlier push left it
    /// in? Either is remembered in `places`.
    async fn check(
        &mut self,
        registry: &Registry,
        places: &mut BlobPlaces,
        what: &str,
        digest: &Digest,
        progress: &dyn PushProgress,
    ) -> Result<bool, PushError> {
        let repo = &registry.reference().repository;
        if registry.has_blob(digest).await? {
            progress.skipped(what, digest);
            self.skipped.push(digest.clone());
            places.remember(digest, repo);
            return Ok(true);
        }
        for from in places.sources(digest, repo) {
            if registry.mount_blob(digest, &from).await {
                progress.mounted(what, digest, &from);
                self.mounted.push(digest.clone());
                places.remember(digest, repo);
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Blob `digest` was just sent to the repository.
    fn uploaded(&mut self, registry: &Registry, places: &mut BlobPlaces, digest: &Digest) {
        self.uploaded.push(digest.clone());
        places.remember(digest, &registry.reference().repository);
    }
}

/// The registry side (authenticated already): send the blobs it lacks
/// (layers, then config: the manifest may only name blobs it has), put the
/// manifest. A layer without a path is one `push` has just found in (or
/// mounted into) the repository.
async fn upload(
    registry: &Registry,
    places: &mut BlobPlaces,
    sent: &mut Sent,
    layers: &[BlobLayer],
    documents: &ImageDocuments,
    progress: &dyn PushProgress,
) -> Result<(), PushError> {
    for layer in layers {
        let Some(path) = &layer.path else {
            continue;
        };
        if sent
            .check(registry, places, "layer", &layer.digest, progress)
            .await?
        {
            continue;
        }
        progress.uploading("layer", &layer.digest, layer.size);
        registry
            .push_blob_file(&layer.digest, path, layer.size)
            .await?;
        sent.uploaded(registry, places, &layer.digest);
    }
    let config_digest = &documents.config_digest;
    if !sent
        .check(registry, places, "config", config_digest, progress)
        .await?
    {
        progress.uploading("config", config_digest, documents.config.len() as u64);
        registry
            .push_blob_bytes(config_digest, &documents.config)
            .await?;
        sent.uploaded(registry, places, config_digest);
    }
    registry
        .push_manifest(&documents.manifest, MEDIA_MANIFEST)
        .await?;
    Ok(())
}

/// How many repositories are remembered per blob, and how many blobs per
/// registry (the most recently pushed kept).
const PLACES_PER_BLOB: usize = 4;
const BLOBS_PER_REGISTRY: usize = 4096;

/// Where this cache's pushes left each blob in one registry: a push to
/// another repository of the registry mounts the blob from one of those
/// (the distribution spec's cross-repository mount: the registry links
/// what it holds, nothing is sent), as docker, containerd and skopeo do
/// with records of their own. Kept in `pushed/REGISTRY.json` of the cache,
/// newest first. A hint only: a mount the registry refuses (the blob gone,
/// no read access to that repository) is followed by the upload, and a
/// damaged or missing record is an empty one. Concurrent pushes may lose
/// each other's entries (the last writer's file wins): a lost entry costs
/// an upload, nothing else.
#[derive(Debug)]
pub struct BlobPlaces {
    path: PathBuf,
    entries: Vec<BlobPlace>,
    changed: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct BlobPlace {
    digest: String,
    repositories: Vec<String>,
}

impl BlobPlaces {
    fn load(cache: &Cache, registry: &str) -> BlobPlaces {
        // A registry name is a host and maybe a port, kept as it is; the
        // cache's own encoding of names keeps anything else (a '/', a
        // leading '.') from leaving `pushed/`.
        let path = cache
            .root()
            .join("pushed")
            .join(format!("{}.json", encode_name(registry)));
        let entries = fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        BlobPlaces {
            path,
            entries,
            changed: false,
        }
    }

    /// The repositories other than `repo` that hold `digest`, newest first.
    fn sources(&self, digest: &Digest, repo: &str) -> Vec<String> {
        let digest = digest.to_string();
        self.entries
            .iter()
            .find(|e| e.digest == digest)
            .map(|e| {
                e.repositories
                    .iter()
                    .filter(|r| r.as_str() != repo)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    fn remember(&mut self, digest: &Digest, repo: &str) {
        let digest = digest.to_string();
        let mut repositories = match self.entries.iter().position(|e| e.digest == digest) {
            Some(at) => self.entries.remove(at).repositories,
            None => Vec::new(),
        };
        repositories.retain(|r| r != repo);
        repositories.insert(0, repo.to_owned());
        repositories.truncate(PLACES_PER_BLOB);
        self.entries.insert(
            0,
            BlobPlace {
                digest,
                repositories,
            },
        );
        self.entries.truncate(BLOBS_PER_REGISTRY);
        self.changed = true;
    }

    /// Writes the record back if it changed; best effort (a record that
    /// cannot be written costs the next push its mounts).
    fn save(&self) {
        if !self.changed {
            return;
        }
        let path = &self.path;
        if let Some(dir) = path.parent()
            && let Err(e) = fs::create_dir_all(dir)
        {
            tracing::debug!(
                "not remembering where blobs were pushed: {}: {e}",
                dir.display()
            );
            return;
        }
        let bytes = serde_json::to_vec(&self.entries).unwrap_or_default();
        if let Err(e) = write_atomic(path, &bytes) {
            tracing::debug!("not remembering where blobs were pushed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u8) -> Digest {
        Digest::from_hex(&format!("{n:02x}").repeat(32)).expect("digest")
    }

    #[test]
    fn blob_places_keep_the_newest_repositories_and_survive_damage() {
        let dir = tempfile::tempdir().expect("tmp");
        let cache = Cache::at(dir.path());
        let mut places = BlobPlaces::load(&cache, "127.0.0.1:5000");
        assert!(places.sources(&digest(1), "a").is_empty());
        for repo in ["a", "b", "c", "d", "e", "b"] {
            places.remember(&digest(1), repo);
        }
        places.remember(&digest(2), "x");
        places.save();
        let file = dir.path().join("pushed/127.0.0.1:5000.json");
        assert!(file.is_file());
        let again = BlobPlaces::load(&cache, "127.0.0.1:5000");
        // Newest first, at most PLACES_PER_BLOB, never the target itself.
        assert_eq!(again.sources(&digest(1), "zz"), ["b", "e", "d", "c"]);
        assert_eq!(again.sources(&digest(1), "b"), ["e", "d", "c"]);
        assert_eq!(again.sources(&digest(2), "a"), ["x"]);
        // Another registry has its own record; a damaged one is empty.
        assert!(
            BlobPlaces::load(&cache, "other:5000")
                .sources(&digest(1), "q")
                .is_empty()
        );
        fs::write(&file, "[{").expect("damage");
        assert!(
            BlobPlaces::load(&cache, "127.0.0.1:5000")
                .sources(&digest(1), "q")
                .is_empty()
        );
        // A name that is not a host stays inside `pushed/`.
        let odd = BlobPlaces::load(&cache, "host/../x");
        assert_eq!(odd.path, dir.path().join("pushed/host%2F..%2Fx.json"));
        assert_eq!(
            BlobPlaces::load(&cache, "../../etc/x").path,
            dir.path().join("pushed/%2E.%2F..%2Fetc%2Fx.json")
        );
    }

    #[test]
    fn blob_places_keep_the_most_recent_blobs() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut places = BlobPlaces::load(&Cache::at(dir.path()), "r");
        for i in 0..=BLOBS_PER_REGISTRY {
            let d = Digest::from_hex(&format!("{i:064x}")).expect("digest");
            places.remember(&d, "repo");
        }
        assert_eq!(places.entries.len(), BLOBS_PER_REGISTRY);
        let oldest = Digest::from_hex(&format!("{:064x}", 0)).expect("digest");
        assert!(places.sources(&oldest, "other").is_empty());
        let newest = Digest::from_hex(&format!("{BLOBS_PER_REGISTRY:064x}")).expect("digest");
        assert_eq!(places.sources(&newest, "other"), ["repo"]);
    }

    fn layer() -> BlobLayer {
        BlobLayer {
            diff_id: Digest::of_bytes(b"tar"),
            digest: Digest::of_bytes(b"gz"),
            size: 2,
            path: None,
        }
    }

    #[test]
    fn config_and_manifest_carry_the_stored_config() {
        let mut meta = ImageMeta::new("oci:/x:t".into());
        meta.architecture = Some("arm64".into());
        meta.os = Some("linux".into());
        meta.created = Some("2024-01-02T03:04:05Z".into());
        meta.config.env = vec!["PATH=/bin".into(), "FOO=bar".into()];
        meta.config.cmd = Some(vec!["sh".into()]);
        meta.config.entrypoint = Some(vec![]);
        meta.config.working_dir = Some("/opt".into());
        meta.config.user = Some("1000:1000".into());
        meta.config
            .labels
            .insert("org.example".into(), "cairn".into());
        let docs = image_documents(Some(&meta), &[layer()], ONE_LAYER).expect("documents");
        assert_eq!(docs.config_digest, Digest::of_bytes(&docs.config));
        assert_eq!(docs.manifest_digest, Digest::of_bytes(&docs.manifest));
        let config: serde_json::Value = serde_json::from_slice(&docs.config).expect("config");
        assert_eq!(config["architecture"], "arm64");
        assert_eq!(config["os"], "linux");
        assert_eq!(config["created"], "2024-01-02T03:04:05Z");
        assert_eq!(config["config"]["Env"][1], "FOO=bar");
        assert_eq!(config["config"]["Cmd"][0], "sh");
        assert_eq!(config["config"]["Entrypoint"], serde_json::json!([]));
        assert_eq!(config["config"]["WorkingDir"], "/opt");
        assert_eq!(config["config"]["User"], "1000:1000");
        assert_eq!(config["config"]["Labels"]["org.example"], "cairn");
        assert_eq!(config["rootfs"]["type"], "layers");
        assert_eq!(
            config["rootfs"]["diff_ids"],
            serde_json::json!([layer().diff_id.to_string()])
        );
        assert_eq!(config["history"].as_array().map(Vec::len), Some(1));
        let manifest: serde_json::Value = serde_json::from_slice(&docs.manifest).expect("manifest");
        assert_eq!(manifest["schemaVersion"], 2);
        assert_eq!(manifest["mediaType"], MEDIA_MANIFEST);
        assert_eq!(manifest["config"]["mediaType"], MEDIA_CONFIG);
        assert_eq!(manifest["config"]["digest"], docs.config_digest.to_string());
        assert_eq!(manifest["config"]["size"], docs.config.len());
        assert_eq!(manifest["layers"][0]["mediaType"], MEDIA_LAYER_GZIP);
        assert_eq!(manifest["layers"][0]["digest"], layer().digest.to_string());
        assert_eq!(manifest["layers"][0]["size"], 2);
        // The same input, the same bytes.
        assert_eq!(
            image_documents(Some(&meta), &[layer()], ONE_LAYER).expect("again"),
            docs
        );
    }

    #[test]
    fn the_cairn_config_reads_back_as_it_was_stored() {
        // What `cairn pull` reads from the config we write.
        let mut meta = ImageMeta::new("dir:/x".into());
        meta.config.env = vec!["A=1".into()];
        meta.config.cmd = Some(vec!["/bin/true".into()]);
        let docs = image_documents(Some(&meta), &[layer()], ONE_LAYER).expect("documents");
        let parsed: crate::image::oci::ImageConfig =
            crate::image::oci::parse_json("config", &docs.config).expect("parse");
        let run = parsed.config.as_ref().expect("runtime config");
        assert_eq!(run.env, Some(vec!["A=1".to_owned()]));
        assert_eq!(run.cmd, Some(vec!["/bin/true".to_owned()]));
        assert_eq!(run.entrypoint, None);
        assert_eq!(run.labels, None);
        assert_eq!(
            parsed.diff_ids("config", 1).expect("diff ids"),
            vec![layer().diff_id]
        );
    }

    #[test]
    fn without_metadata_the_host_platform_and_no_runtime_config() {
        let docs = image_documents(None, &[layer()], ONE_LAYER).expect("documents");
        let config: serde_json::Value = serde_json::from_slice(&docs.config).expect("config");
        assert_eq!(config["architecture"], PlatformSpec::host().architecture);
        assert_eq!(config["os"], "linux");
        assert_eq!(config["config"], serde_json::json!({}));
        assert!(config.get("created").is_none());
    }
}
