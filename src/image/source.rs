//! Resolving an import source to what the flattener needs: the layers (where
//! each blob is, its digests and size) and the image metadata, for OCI
//! layouts (index -> manifest -> config), oci-archive and docker-archive
//! files (read in place through an [`ArchiveIndex`]), plain rootfs tarballs
//! and directories. Every small JSON blob is verified against its digest
//! and size before it is parsed; layers are verified as they stream.

use super::archive::{ArchiveError, ArchiveIndex, BlobLocation};
use super::digest::Digest;
use super::layer::LayerSpec;
use super::meta::{ImageMeta, LayerMeta, RunConfig};
use super::oci::{
    Descriptor, DockerArchiveImage, ImageConfig, Index, Manifest, OciError, parse_json,
    select_manifest,
};
use super::spec::{ImageSource, ManifestSelector, PlatformSpec};
use std::io::{self, Read};
use std::path::PathBuf;

/// The largest JSON document (index, manifest, config) cairn reads.
const JSON_LIMIT: u64 = 64 * 1024 * 1024;
/// Nested indexes followed before giving up (a loop is hostile).
const MAX_INDEX_DEPTH: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(transparent)]
    Oci(#[from] OciError),
    #[error("{source_name}: {what} not found")]
    Missing { source_name: String, what: String },
    #[error("{source_name}: reading {what} from {location}")]
    Read {
        source_name: String,
        what: String,
        location: String,
        #[source]
        source: io::Error,
    },
    #[error("{source_name}: {what} is larger than {limit} bytes")]
    TooLarge {
        source_name: String,
        what: String,
        limit: u64,
    },
    #[error("{source_name}: blob {what}: digest mismatch: expected {expected}, got {actual}")]
    Digest {
        source_name: String,
        what: String,
        expected: String,
        actual: String,
    },
    #[error(
        "{source_name}: blob {what}: size mismatch: descriptor says {expected} bytes, got {actual}"
    )]
    Size {
        source_name: String,
        what: String,
        expected: u64,
        actual: u64,
    },
    #[error("{source_name}: layer {digest} has unsupported media type {media_type:?}")]
    MediaType {
        source_name: String,
        digest: String,
        media_type: String,
    },
    #[error("{source_name}: indexes nested deeper than {MAX_INDEX_DEPTH} levels")]
    TooDeep { source_name: String },
    #[error("{source_name}: manifest.json lists no image")]
    EmptyDockerArchive { source_name: String },
    #[error("{source_name}: {path} is not a directory")]
    NotDirectory { source_name: String, path: PathBuf },
}

/// What an import source resolved to.
#[derive(Debug, Clone)]
pub enum ResolvedImage {
    /// Layers to flatten, bottom first.
    Layers {
        layers: Vec<LayerSpec>,
        meta: ImageMeta,
    },
    /// A root filesystem directory taken as it is.
    Directory { root: PathBuf, meta: ImageMeta },
}

impl ResolvedImage {
    pub fn meta(&self) -> &ImageMeta {
        match self {
            ResolvedImage::Layers { meta, .. } | ResolvedImage::Directory { meta, .. } => meta,
        }
    }
}

/// Where an OCI layout's files are: a directory or an archive.
enum Store {
    Dir(PathBuf),
    Archive(ArchiveIndex),
}

struct Reader<'a> {
    name: &'a str,
    store: Store,
}

impl Reader<'_> {
    fn location(&self, rel: &str) -> Option<BlobLocation> {
        match &self.store {
            Store::Dir(root) => {
                let path = root.join(rel);
                path.is_file().then_some(BlobLocation::File(path))
            }
            Store::Archive(index) => index.location(rel),
        }
    }

    fn blob_location(&self, digest: &Digest) -> Option<BlobLocation> {
        self.location(&format!("blobs/sha256/{}", digest.hex()))
    }

    fn missing(&self, what: &str) -> SourceError {
        SourceError::Missing {
            source_name: self.name.to_owned(),
            what: what.to_owned(),
        }
    }

    fn read_location(&self, what: &str, location: &BlobLocation) -> Result<Vec<u8>, SourceError> {
        let read_err = |source| SourceError::Read {
            source_name: self.name.to_owned(),
            what: what.to_owned(),
            location: location.to_string(),
            source,
        };
        let mut bytes = Vec::new();
        location
            .open()
            .map_err(read_err)?
            .take(JSON_LIMIT + 1)
            .read_to_end(&mut bytes)
            .map_err(read_err)?;
        if bytes.len() as u64 > JSON_LIMIT {
            return Err(SourceError::TooLarge {
                source_name: self.name.to_owned(),
                what: what.to_owned(),
                limit: JSON_LIMIT,
            });
        }
        Ok(bytes)
    }

    fn read_file(&self, rel: &str) -> Result<Vec<u8>, SourceError> {
        let location = self.location(rel).ok_or_else(|| self.missing(rel))?;
        self.read_location(rel, &location)
    }

    fn verify(&self, what: &str, bytes: &[u8], digest: &Digest) -> Result<(), SourceError> {
        let actual = Digest::of_bytes(bytes);
        if actual != *digest {
            return Err(SourceError::Digest {
                source_name: self.name.to_owned(),
                what: what.to_owned(),
                expected: digest.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(())
    }

    /// Reads a small blob named by a descriptor, checking size and digest.
    fn read_blob(&self, what: &str, desc: &Descriptor) -> Result<(Vec<u8>, Digest), SourceError> {
        let digest = desc.digest(what)?;
        let label = format!("{what} {digest}");
        let location = self
            .blob_location(&digest)
            .ok_or_else(|| self.missing(&label))?;
        let bytes = self.read_location(&label, &location)?;
        if bytes.len() as u64 != desc.size {
            return Err(SourceError::Size {
                source_name: self.name.to_owned(),
                what: label,
                expected: desc.size,
                actual: bytes.len() as u64,
            });
        }
        self.verify(&label, &bytes, &digest)?;
        Ok((bytes, digest))
    }
}

fn run_config(config: &ImageConfig) -> RunConfig {
    let rc = config.config.clone().unwrap_or_default();
    RunConfig {
        env: rc.env.unwrap_or_default(),
        entrypoint: rc.entrypoint,
        cmd: rc.cmd,
        working_dir: rc.working_dir.filter(|w| !w.is_empty()),
        user: rc.user.filter(|u| !u.is_empty()),
        labels: rc.labels.unwrap_or_default(),
        exposed_ports: rc.exposed_ports.unwrap_or_default().into_keys().collect(),
        volumes: rc.volumes.unwrap_or_default().into_keys().collect(),
        stop_signal: rc.stop_signal.filter(|s| !s.is_empty()),
    }
}

fn base_meta(source: &ImageSource, config: &ImageConfig) -> ImageMeta {
    let mut meta = ImageMeta::new(source.to_string());
    meta.os = config.os.clone();
    meta.architecture = config.architecture.clone();
    meta.variant = config.variant.clone();
    meta.created = config.created.clone();
    meta.config = run_config(config);
    meta
}

/// Layer media types cairn can read (compression itself is told by magic).
fn supported_layer_type(media_type: &str) -> bool {
    media_type.is_empty()
        || matches!(
            media_type,
            "application/vnd.oci.image.layer.v1.tar"
                | "application/vnd.oci.image.layer.v1.tar+gzip"
                | "application/vnd.oci.image.layer.v1.tar+zstd"
                | "application/vnd.oci.image.layer.nondistributable.v1.tar"
                | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
                | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
                | "application/vnd.docker.image.rootfs.diff.tar"
                | "application/vnd.docker.image.rootfs.diff.tar.gzip"
                | "application/vnd.docker.image.rootfs.diff.tar.zstd"
                | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
        )
}

fn resolve_oci(
    source: &ImageSource,
    reader: &Reader<'_>,
    select: &ManifestSelector,
    platform: Option<&PlatformSpec>,
) -> Result<ResolvedImage, SourceError> {
    let name = reader.name;
    let index_bytes = reader.read_file("index.json")?;
    let mut index: Index = parse_json(&format!("{name}: index.json"), &index_bytes)?;
    let mut select = select.clone();
    let mut what = format!("{name}: index.json");
    let (manifest, manifest_digest) = 'found: {
        for _ in 0..MAX_INDEX_DEPTH {
            let desc = select_manifest(&what, &index, &select, platform)?.clone();
            let (bytes, digest) = reader.read_blob("manifest", &desc)?;
            let blob_what = format!("{name}: manifest {digest}");
            // Tell an index from a manifest by content, not only media type.
            let is_index = desc.is_index()
                || serde_json::from_slice::<serde_json::Value>(&bytes)
                    .ok()
                    .is_some_and(|v| v.get("manifests").is_some() && v.get("config").is_none());
            if is_index {
                index = parse_json(&blob_what, &bytes)?;
                select = ManifestSelector::Default;
                what = blob_what;
                continue;
            }
            let manifest: Manifest = parse_json(&blob_what, &bytes)?;
            break 'found (manifest, digest);
        }
        return Err(SourceError::TooDeep {
            source_name: name.to_owned(),
        });
    };
    let (config_bytes, config_digest) = reader.read_blob("config", &manifest.config)?;
    let config: ImageConfig =
        parse_json(&format!("{name}: config {config_digest}"), &config_bytes)?;
    let diff_ids = config.diff_ids(
        &format!("{name}: config {config_digest}"),
        manifest.layers.len(),
    )?;
    let mut meta = base_meta(source, &config);
    meta.manifest_digest = Some(manifest_digest.to_string());
    meta.config_digest = Some(config_digest.to_string());
    let mut layers = Vec::new();
    for (desc, diff_id) in manifest.layers.iter().zip(diff_ids) {
        let digest = desc.digest(&format!("{name}: manifest {manifest_digest}: layer"))?;
        if !supported_layer_type(&desc.media_type) {
            return Err(SourceError::MediaType {
                source_name: name.to_owned(),
                digest: digest.to_string(),
                media_type: desc.media_type.clone(),
            });
        }
        let location = reader
            .blob_location(&digest)
            .ok_or_else(|| reader.missing(&format!("layer {digest}")))?;
        meta.layers.push(LayerMeta {
            digest: Some(digest.to_string()),
            diff_id: Some(diff_id.to_string()),
            size: Some(desc.size),
            media_type: (!desc.media_type.is_empty()).then(|| desc.media_type.clone()),
        });
        layers.push(LayerSpec {
            label: digest.to_string(),
            location,
            digest: Some(digest),
            size: Some(desc.size),
            diff_id: Some(diff_id),
            media_type: Some(desc.media_type.clone()),
            growing: None,
        });
    }
    Ok(ResolvedImage::Layers { layers, meta })
}

/// The digest a docker-archive member name carries (`<hex>.json`,
/// `<hex>.tar`, `blobs/sha256/<hex>`), if any.
fn digest_in_name(name: &str) -> Option<Digest> {
    let base = name.rsplit('/').next()?;
    let stem = base.split('.').next()?;
    Digest::from_hex(stem)
}

fn resolve_docker_archive(
    source: &ImageSource,
    reader: &Reader<'_>,
) -> Result<ResolvedImage, SourceError> {
    let name = reader.name;
    let manifest_bytes = reader.read_file("manifest.json")?;
    let images: Vec<DockerArchiveImage> =
        parse_json(&format!("{name}: manifest.json"), &manifest_bytes)?;
    let Some(image) = images.first() else {
        return Err(SourceError::EmptyDockerArchive {
            source_name: name.to_owned(),
        });
    };
    if images.len() > 1 {
        tracing::warn!(
            "{name}: manifest.json lists {} images; importing the first",
            images.len()
        );
    }
    let config_bytes = reader.read_file(&image.config)?;
    // Config files are named by their digest in both docker layouts.
    let config_digest = digest_in_name(&image.config);
    if let Some(d) = &config_digest {
        reader.verify(&format!("config {}", image.config), &config_bytes, d)?;
    }
    let what = format!("{name}: config {}", image.config);
    let config: ImageConfig = parse_json(&what, &config_bytes)?;
    let diff_ids = config.diff_ids(&what, image.layers.len())?;
    let mut meta = base_meta(source, &config);
    meta.config_digest = config_digest.map(|d| d.to_string());
    let mut layers = Vec::new();
    for (path, diff_id) in image.layers.iter().zip(diff_ids) {
        let location = reader
            .location(path)
            .ok_or_else(|| reader.missing(&format!("layer {path}")))?;
        let size = match &location {
            BlobLocation::Member { size, .. } => Some(*size),
            BlobLocation::File(_) => None,
        };
        // The OCI-blob layout names layers by their (compressed) digest;
        // the legacy `<id>/layer.tar` only has the config's diff_id.
        let digest = path
            .starts_with("blobs/sha256/")
            .then(|| digest_in_name(path))
            .flatten();
        meta.layers.push(LayerMeta {
            digest: Some(digest.as_ref().unwrap_or(&diff_id).to_string()),
            diff_id: Some(diff_id.to_string()),
            size,
            media_type: None,
        });
        layers.push(LayerSpec {
            label: digest.as_ref().unwrap_or(&diff_id).to_string(),
            location,
            digest,
            size,
            diff_id: Some(diff_id),
            media_type: None,
            growing: None,
        });
    }
    Ok(ResolvedImage::Layers { layers, meta })
}

fn source_name(source: &ImageSource) -> String {
    source.to_string()
}

/// Resolves a source; `platform` is `--platform` (else the host's).
pub fn resolve_source(
    source: &ImageSource,
    platform: Option<&PlatformSpec>,
) -> Result<ResolvedImage, SourceError> {
    let name = source_name(source);
    match source {
        ImageSource::OciLayout { dir, select } => {
            if !dir.is_dir() {
                return Err(SourceError::NotDirectory {
                    source_name: name,
                    path: dir.clone(),
                });
            }
            let reader = Reader {
                name: &name,
                store: Store::Dir(dir.clone()),
            };
            resolve_oci(source, &reader, select, platform)
        }
        ImageSource::OciArchive { file, select } => {
            let reader = Reader {
                name: &name,
                store: Store::Archive(ArchiveIndex::open(file)?),
            };
            resolve_oci(source, &reader, select, platform)
        }
        ImageSource::DockerArchive { file } => {
            let reader = Reader {
                name: &name,
                store: Store::Archive(ArchiveIndex::open(file)?),
            };
            resolve_docker_archive(source, &reader)
        }
        ImageSource::Tarball { file } => {
            let size = std::fs::metadata(file)
                .map_err(|source| SourceError::Read {
                    source_name: name.clone(),
                    what: "the tarball".into(),
                    location: file.display().to_string(),
                    source,
                })?
                .len();
            let mut meta = ImageMeta::new(name.clone());
            meta.layers.push(LayerMeta {
                size: Some(size),
                ..LayerMeta::default()
            });
            Ok(ResolvedImage::Layers {
                layers: vec![LayerSpec {
                    label: file.display().to_string(),
                    location: BlobLocation::File(file.clone()),
                    digest: None,
                    size: Some(size),
                    diff_id: None,
                    media_type: None,
                    growing: None,
                }],
                meta,
            })
        }
        ImageSource::Directory { dir } => {
            if !dir.is_dir() {
                return Err(SourceError::NotDirectory {
                    source_name: name,
                    path: dir.clone(),
                });
            }
            Ok(ResolvedImage::Directory {
                root: dir.clone(),
                meta: ImageMeta::new(name),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_in_member_names() {
        let hex = "a".repeat(64);
        assert!(digest_in_name(&format!("{hex}.json")).is_some());
        assert!(digest_in_name(&format!("blobs/sha256/{hex}")).is_some());
        assert!(digest_in_name(&format!("{hex}/layer.tar")).is_none());
        assert!(digest_in_name("manifest.json").is_none());
    }

    #[test]
    fn layer_media_types() {
        assert!(supported_layer_type(
            "application/vnd.oci.image.layer.v1.tar+gzip"
        ));
        assert!(supported_layer_type(""));
        assert!(!supported_layer_type(
            "application/vnd.oci.image.layer.v1.tar+gzip+encrypted"
        ));
    }
}
