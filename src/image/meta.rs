//! The image metadata cairn stores inside every flattened image, as one
//! JSON file at `/.cairn/image.json`: the runtime config (Env, Entrypoint,
//! Cmd, WorkingDir, User, Labels) that `cairn run` applies, and where the
//! image came from (source, manifest and config digests, layers). The
//! schema is versioned; readers refuse versions they do not know.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};

/// Path of the metadata file inside the image (relative to its root).
pub const IMAGE_META_PATH: &str = ".cairn/image.json";
/// The schema version this cairn writes and reads.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("reading image metadata {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("parsing image metadata {path}")]
    Parse {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "image metadata {path} has schema version {version}; this cairn reads version {SCHEMA_VERSION}"
    )]
    Version { path: String, version: u32 },
    #[error("reading {IMAGE_META_PATH} from the squashfs image")]
    Archive {
        #[source]
        source: crate::squashfs::reader::ReadError,
    },
    #[error("{IMAGE_META_PATH} in the squashfs image is not a regular file of at most 16 MiB")]
    NotAFile,
    #[error("encoding image metadata")]
    Encode {
        #[source]
        source: serde_json::Error,
    },
}

/// How the image's processes are started (the OCI config's `config`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `ExposedPorts` (`80/tcp`), `Volumes` and `StopSignal`: cairn's runs
    /// use none of them, but a built or pulled image keeps them for push.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub exposed_ports: BTreeSet<String>,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub volumes: BTreeSet<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
}

/// One source layer, bottom first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerMeta {
    /// Digest of the blob as stored (compressed), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Digest of the uncompressed tar, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff_id: Option<String>,
    /// Size of the blob as stored, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageMeta {
    pub schema_version: u32,
    /// The source as given to `cairn import` (`oci:DIR:TAG` ...).
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default)]
    pub config: RunConfig,
    #[serde(default)]
    pub layers: Vec<LayerMeta>,
}

impl ImageMeta {
    pub fn new(source: String) -> ImageMeta {
        ImageMeta {
            schema_version: SCHEMA_VERSION,
            source,
            ..ImageMeta::default()
        }
    }

    /// The JSON stored in the image (pretty, stable field order, newline).
    pub fn to_json(&self) -> Result<Vec<u8>, MetaError> {
        let mut out =
            serde_json::to_vec_pretty(self).map_err(|source| MetaError::Encode { source })?;
        out.push(b'\n');
        Ok(out)
    }

    /// Parses the stored JSON; `path` only names it in errors.
    pub fn from_json(path: &str, bytes: &[u8]) -> Result<ImageMeta, MetaError> {
        #[derive(Deserialize)]
        struct Version {
            schema_version: u32,
        }
        let version: Version =
            serde_json::from_slice(bytes).map_err(|source| MetaError::Parse {
                path: path.to_owned(),
                source,
            })?;
        if version.schema_version != SCHEMA_VERSION {
            return Err(MetaError::Version {
                path: path.to_owned(),
                version: version.schema_version,
            });
        }
        serde_json::from_slice(bytes).map_err(|source| MetaError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// Reads the metadata of an image mounted or extracted at `root`;
    /// `None` when the image has none (not made by `cairn import`).
    pub fn from_dir(root: &Path) -> Result<Option<ImageMeta>, MetaError> {
        let path = root.join(IMAGE_META_PATH);
        match std::fs::read(&path) {
            Ok(bytes) => ImageMeta::from_json(&path.display().to_string(), &bytes).map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(MetaError::Read { path, source }),
        }
    }
}

impl ImageMeta {
    /// Reads the metadata stored in a squashfs image; `None` when the image
    /// has none (not made by `cairn import`).
    pub fn from_archive(
        archive: &crate::squashfs::reader::Archive,
    ) -> Result<Option<ImageMeta>, MetaError> {
        match ImageMeta::bytes_from_archive(archive)? {
            Some(bytes) => ImageMeta::from_json(IMAGE_META_PATH, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// The stored metadata's bytes, unparsed (what a run keeps between
    /// runs, see `run::facts`); `None` when the image has none.
    pub fn bytes_from_archive(
        archive: &crate::squashfs::reader::Archive,
    ) -> Result<Option<Vec<u8>>, MetaError> {
        let err = |source| MetaError::Archive { source };
        let Some(node) = archive
            .lookup_path(IMAGE_META_PATH.as_bytes())
            .map_err(err)?
        else {
            return Ok(None);
        };
        archive
            .read_whole(&node, 16 * 1024 * 1024)
            .map_err(err)?
            .ok_or(MetaError::NotAFile)
            .map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_json() {
        let mut m = ImageMeta::new("oci:/x:latest".into());
        m.config.env = vec!["PATH=/bin".into()];
        m.config.cmd = Some(vec!["sh".into()]);
        m.config.labels.insert("a".into(), "b".into());
        m.layers.push(LayerMeta {
            digest: Some("sha256:00".into()),
            size: Some(3),
            ..LayerMeta::default()
        });
        let json = m.to_json().expect("json");
        assert_eq!(ImageMeta::from_json("t", &json).expect("parse"), m);
    }

    #[test]
    fn refuses_other_schema_versions() {
        let e = ImageMeta::from_json("t", br#"{"schema_version":2,"source":"x"}"#).expect_err("v2");
        assert!(matches!(e, MetaError::Version { version: 2, .. }));
        assert!(ImageMeta::from_json("t", b"{}").is_err());
    }

    #[test]
    fn reads_from_a_directory() {
        let dir = tempfile::tempdir().expect("tmp");
        assert_eq!(ImageMeta::from_dir(dir.path()).expect("none"), None);
        std::fs::create_dir(dir.path().join(".cairn")).expect("mkdir");
        let m = ImageMeta::new("tar:/r.tar".into());
        std::fs::write(dir.path().join(IMAGE_META_PATH), m.to_json().expect("json"))
            .expect("write");
        assert_eq!(ImageMeta::from_dir(dir.path()).expect("some"), Some(m));
    }
}
