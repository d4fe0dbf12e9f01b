//! OCI image layout documents as cairn needs them: index, manifest, image
//! config (and docker's `manifest.json`), parsed leniently from untrusted
//! JSON (unknown fields are the norm in the wild), plus the pure choice of a
//! manifest from an index by tag, digest or platform.

use super::digest::{Digest, DigestError};
use super::spec::{ManifestSelector, PlatformSpec};
use serde::Deserialize;
use std::collections::BTreeMap;

pub const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("parsing {what}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{what}: bad digest")]
    Digest {
        what: String,
        #[source]
        source: DigestError,
    },
    #[error("{what} lists no manifest")]
    NoManifest { what: String },
    #[error("{what} has no manifest tagged {tag:?} (tags: {tags})")]
    NoTag {
        what: String,
        tag: String,
        tags: String,
    },
    #[error("{what} has no manifest with digest {digest}")]
    NoDigest { what: String, digest: String },
    #[error("{what} has no manifest for platform {platform} (platforms: {platforms})")]
    NoPlatform {
        what: String,
        platform: String,
        platforms: String,
    },
    #[error(
        "{what} has {count} manifests and none for the host platform {platform}: name one with :TAG, @DIGEST or --platform"
    )]
    Ambiguous {
        what: String,
        count: usize,
        platform: String,
    },
    #[error("{what}: config has {diff_ids} rootfs.diff_ids for {layers} layers")]
    DiffIdCount {
        what: String,
        diff_ids: usize,
        layers: usize,
    },
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Platform {
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub variant: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub platform: Option<Platform>,
}

impl Descriptor {
    pub fn digest(&self, what: &str) -> Result<Digest, OciError> {
        Digest::parse(&self.digest).map_err(|source| OciError::Digest {
            what: what.to_owned(),
            source,
        })
    }

    pub fn is_index(&self) -> bool {
        self.media_type == MEDIA_INDEX || self.media_type == MEDIA_DOCKER_LIST
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Index {
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    /// An index has `manifests` instead of `config`; kept to tell them apart.
    #[serde(default)]
    pub manifests: Option<Vec<Descriptor>>,
}

/// The runtime part of an image config (`config` in the OCI image config).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RuntimeConfig {
    #[serde(rename = "Env", default)]
    pub env: Option<Vec<String>>,
    #[serde(rename = "Entrypoint", default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default)]
    pub cmd: Option<Vec<String>>,
    #[serde(rename = "WorkingDir", default)]
    pub working_dir: Option<String>,
    #[serde(rename = "User", default)]
    pub user: Option<String>,
    #[serde(rename = "Labels", default)]
    pub labels: Option<BTreeMap<String, String>>,
    /// Keys only (the values are empty objects).
    #[serde(rename = "ExposedPorts", default)]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(rename = "Volumes", default)]
    pub volumes: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(rename = "StopSignal", default)]
    pub stop_signal: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RootFs {
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub architecture: Option<String>,
    #[serde(default)]
    pub os: Option<String>,
    #[serde(default)]
    pub variant: Option<String>,
    #[serde(default)]
    pub created: Option<String>,
    #[serde(default)]
    pub config: Option<RuntimeConfig>,
    #[serde(default)]
    pub rootfs: RootFs,
}

impl ImageConfig {
    /// The uncompressed layer digests, one per layer, bottom first.
    pub fn diff_ids(&self, what: &str, layers: usize) -> Result<Vec<Digest>, OciError> {
        if self.rootfs.diff_ids.len() != layers {
            return Err(OciError::DiffIdCount {
                what: what.to_owned(),
                diff_ids: self.rootfs.diff_ids.len(),
                layers,
            });
        }
        self.rootfs
            .diff_ids
            .iter()
            .map(|d| {
                Digest::parse(d).map_err(|source| OciError::Digest {
                    what: format!("{what}: rootfs.diff_ids"),
                    source,
                })
            })
            .collect()
    }
}

/// One image of a `docker save` archive's `manifest.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct DockerArchiveImage {
    #[serde(rename = "Config")]
    pub config: String,
    #[serde(rename = "RepoTags", default)]
    pub repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    pub layers: Vec<String>,
}

pub fn parse_json<'a, T: Deserialize<'a>>(what: &str, bytes: &'a [u8]) -> Result<T, OciError> {
    serde_json::from_slice(bytes).map_err(|source| OciError::Json {
        what: what.to_owned(),
        source,
    })
}

fn platform_matches(p: &Platform, want: &PlatformSpec) -> bool {
    p.os == want.os
        && p.architecture == want.architecture
        && match (&want.variant, &p.variant) {
            (None, _) => true,
            (Some(w), Some(v)) => w == v,
            // arm64 images often omit the (implied) v8 variant.
            (Some(w), None) => want.architecture == "arm64" && w == "v8",
        }
}

fn show_platform(p: &Option<Platform>) -> String {
    match p {
        Some(p) => match &p.variant {
            Some(v) => format!("{}/{}/{}", p.os, p.architecture, v),
            None => format!("{}/{}", p.os, p.architecture),
        },
        None => "unspecified".to_owned(),
    }
}

/// Chooses a descriptor from an index. `platform` is the explicit
/// `--platform` (else the host's is tried when there are several).
pub fn select_manifest<'a>(
    what: &str,
    index: &'a Index,
    select: &ManifestSelector,
    platform: Option<&PlatformSpec>,
) -> Result<&'a Descriptor, OciError> {
    let candidates: Vec<&Descriptor> = match select {
        ManifestSelector::Tag(tag) => {
            let found: Vec<&Descriptor> = index
                .manifests
                .iter()
                .filter(|d| d.annotations.get(ANNOTATION_REF_NAME) == Some(tag))
                .collect();
            if found.is_empty() {
                let tags: Vec<&str> = index
                    .manifests
                    .iter()
                    .filter_map(|d| d.annotations.get(ANNOTATION_REF_NAME).map(String::as_str))
                    .collect();
                return Err(OciError::NoTag {
                    what: what.to_owned(),
                    tag: tag.clone(),
                    tags: if tags.is_empty() {
                        "none".to_owned()
                    } else {
                        tags.join(", ")
                    },
                });
            }
            found
        }
        ManifestSelector::Digest(digest) => {
            let want = digest.to_string();
            let found: Vec<&Descriptor> = index
                .manifests
                .iter()
                .filter(|d| d.digest == want)
                .collect();
            if found.is_empty() {
                return Err(OciError::NoDigest {
                    what: what.to_owned(),
                    digest: want,
                });
            }
            found
        }
        ManifestSelector::Default => index.manifests.iter().collect(),
    };
    if candidates.is_empty() {
        return Err(OciError::NoManifest {
            what: what.to_owned(),
        });
    }
    // An explicit platform must match whenever descriptors say theirs.
    if let Some(want) = platform {
        let with_platform: Vec<&&Descriptor> =
            candidates.iter().filter(|d| d.platform.is_some()).collect();
        if with_platform.is_empty() {
            return first_or_ambiguous(what, &candidates, want);
        }
        return with_platform
            .iter()
            .find(|d| {
                d.platform
                    .as_ref()
                    .is_some_and(|p| platform_matches(p, want))
            })
            .map(|d| **d)
            .ok_or_else(|| OciError::NoPlatform {
                what: what.to_owned(),
                platform: want.to_string(),
                platforms: candidates
                    .iter()
                    .map(|d| show_platform(&d.platform))
                    .collect::<Vec<_>>()
                    .join(", "),
            });
    }
    if candidates.len() == 1 {
        return Ok(candidates[0]);
    }
    let host = PlatformSpec::host();
    if let Some(d) = candidates.iter().find(|d| {
        d.platform
            .as_ref()
            .is_some_and(|p| platform_matches(p, &host))
    }) {
        return Ok(d);
    }
    first_or_ambiguous(what, &candidates, &host)
}

fn first_or_ambiguous<'a>(
    what: &str,
    candidates: &[&'a Descriptor],
    platform: &PlatformSpec,
) -> Result<&'a Descriptor, OciError> {
    match candidates {
        [one] => Ok(one),
        _ => Err(OciError::Ambiguous {
            what: what.to_owned(),
            count: candidates.len(),
            platform: platform.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(digit: char, tag: Option<&str>, platform: Option<(&str, &str)>) -> String {
        let mut s = format!(
            r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{}","size":10"#,
            digit.to_string().repeat(64)
        );
        if let Some(t) = tag {
            s += &format!(r#","annotations":{{"{ANNOTATION_REF_NAME}":"{t}"}}"#);
        }
        if let Some((os, arch)) = platform {
            s += &format!(r#","platform":{{"os":"{os}","architecture":"{arch}"}}"#);
        }
        s + "}"
    }

    fn index(descs: &[String]) -> Index {
        parse_json(
            "index",
            format!(r#"{{"manifests":[{}]}}"#, descs.join(",")).as_bytes(),
        )
        .expect("index")
    }

    #[test]
    fn single_manifest_is_the_default() {
        let idx = index(&[desc('a', None, None)]);
        let d = select_manifest("i", &idx, &ManifestSelector::Default, None).expect("one");
        assert!(d.digest.ends_with("aaaa"));
    }

    #[test]
    fn selects_by_tag_and_digest() {
        let idx = index(&[desc('a', Some("v1"), None), desc('b', Some("v2"), None)]);
        let d = select_manifest("i", &idx, &ManifestSelector::Tag("v2".into()), None).expect("v2");
        assert!(d.digest.ends_with("bbbb"));
        let err = select_manifest("i", &idx, &ManifestSelector::Tag("v3".into()), None)
            .expect_err("no v3");
        assert!(err.to_string().contains("v1, v2"), "{err}");
        let dg = Digest::parse(&format!("sha256:{}", "a".repeat(64))).expect("d");
        let d = select_manifest("i", &idx, &ManifestSelector::Digest(dg), None).expect("a");
        assert!(d.digest.ends_with("aaaa"));
        assert!(matches!(
            select_manifest("i", &idx, &ManifestSelector::Default, None),
            Err(OciError::Ambiguous { .. })
        ));
    }

    #[test]
    fn selects_by_platform() {
        let idx = index(&[
            desc('a', None, Some(("linux", "arm64"))),
            desc('b', None, Some(("linux", "amd64"))),
            desc('c', None, Some(("linux", "riscv64"))),
        ]);
        let want = PlatformSpec::parse("linux/riscv64").expect("p");
        let d = select_manifest("i", &idx, &ManifestSelector::Default, Some(&want)).expect("c");
        assert!(d.digest.ends_with("cccc"));
        let want = PlatformSpec::parse("linux/s390x").expect("p");
        let err =
            select_manifest("i", &idx, &ManifestSelector::Default, Some(&want)).expect_err("none");
        assert!(err.to_string().contains("linux/amd64"), "{err}");
        let host = PlatformSpec::host();
        if host.architecture == "amd64" {
            let d = select_manifest("i", &idx, &ManifestSelector::Default, None).expect("host");
            assert!(d.digest.ends_with("bbbb"));
        }
    }

    #[test]
    fn arm64_variant_is_implied() {
        let p = Platform {
            os: "linux".into(),
            architecture: "arm64".into(),
            variant: None,
        };
        assert!(platform_matches(
            &p,
            &PlatformSpec::parse("linux/arm64/v8").expect("p")
        ));
        assert!(!platform_matches(
            &p,
            &PlatformSpec::parse("linux/arm/v7").expect("p")
        ));
    }

    #[test]
    fn config_diff_ids_must_match_layers() {
        let cfg: ImageConfig = parse_json(
            "config",
            format!(
                r#"{{"architecture":"amd64","config":{{"Env":["A=1"],"Cmd":["sh"]}},"rootfs":{{"type":"layers","diff_ids":["sha256:{}"]}}}}"#,
                "1".repeat(64)
            )
            .as_bytes(),
        )
        .expect("config");
        assert_eq!(cfg.diff_ids("c", 1).expect("one").len(), 1);
        assert!(matches!(
            cfg.diff_ids("c", 2),
            Err(OciError::DiffIdCount { .. })
        ));
        let rc = cfg.config.expect("runtime");
        assert_eq!(rc.cmd, Some(vec!["sh".to_owned()]));
        assert!(parse_json::<ImageConfig>("c", b"[1,2]").is_err());
    }
}
