//! What a user specifies about an image before it is read: the source of
//! `cairn import` (`oci:DIR[:TAG|@DIGEST]`, `oci-archive:FILE[:TAG]`,
//! `docker-archive:FILE`, `tar:FILE`, `dir:DIR`), which manifest of a
//! layout to take, and `--platform os/arch[/variant]`. Pure parsing, no
//! I/O. (Registry references, `docker://...`, are `registry::reference`.)

use super::digest::{Digest, DigestError};
use std::fmt;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error(
        "source {value:?} has no known transport (oci:, oci-archive:, docker-archive:, tar:, dir:)"
    )]
    Transport { value: String },
    #[error("source {value:?} names no path")]
    EmptyPath { value: String },
    #[error("source {value:?}: bad digest")]
    Digest {
        value: String,
        #[source]
        source: DigestError,
    },
    #[error("platform {value:?} is not of the form os/arch[/variant]")]
    Platform { value: String },
}

/// Which manifest of an OCI layout to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestSelector {
    /// The single manifest, or the one for the requested/host platform.
    Default,
    /// The manifest annotated `org.opencontainers.image.ref.name` = tag.
    Tag(String),
    /// The manifest (or index) with this digest.
    Digest(Digest),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    OciLayout {
        dir: PathBuf,
        select: ManifestSelector,
    },
    OciArchive {
        file: PathBuf,
        select: ManifestSelector,
    },
    DockerArchive {
        file: PathBuf,
    },
    Tarball {
        file: PathBuf,
    },
    Directory {
        dir: PathBuf,
    },
}

impl fmt::Display for ImageSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sel = |s: &ManifestSelector| match s {
            ManifestSelector::Default => String::new(),
            ManifestSelector::Tag(t) => format!(":{t}"),
            ManifestSelector::Digest(d) => format!("@{d}"),
        };
        match self {
            ImageSource::OciLayout { dir, select } => {
                write!(f, "oci:{}{}", dir.display(), sel(select))
            }
            ImageSource::OciArchive { file, select } => {
                write!(f, "oci-archive:{}{}", file.display(), sel(select))
            }
            ImageSource::DockerArchive { file } => write!(f, "docker-archive:{}", file.display()),
            ImageSource::Tarball { file } => write!(f, "tar:{}", file.display()),
            ImageSource::Directory { dir } => write!(f, "dir:{}", dir.display()),
        }
    }
}

/// Splits `PATH[:TAG|@DIGEST]`. A ':' only starts a tag after the last '/',
/// so `oci:/srv/img:v1/layout` stays a path; a tag is what skopeo and umoci
/// write (`[A-Za-z0-9_.-]`, no '/').
fn split_selector(value: &str, rest: &str) -> Result<(PathBuf, ManifestSelector), SpecError> {
    let tail_start = rest.rfind('/').map_or(0, |i| i + 1);
    let tail = &rest[tail_start..];
    let (path, select) = if let Some(at) = tail.find("@sha256:") {
        let digest = Digest::parse(&tail[at + 1..]).map_err(|source| SpecError::Digest {
            value: value.to_owned(),
            source,
        })?;
        (&rest[..tail_start + at], ManifestSelector::Digest(digest))
    } else if let Some(colon) = tail.rfind(':') {
        let tag = &tail[colon + 1..];
        if tag.is_empty() {
            (&rest[..tail_start + colon], ManifestSelector::Default)
        } else {
            (
                &rest[..tail_start + colon],
                ManifestSelector::Tag(tag.to_owned()),
            )
        }
    } else {
        (rest, ManifestSelector::Default)
    };
    if path.is_empty() {
        return Err(SpecError::EmptyPath {
            value: value.to_owned(),
        });
    }
    Ok((PathBuf::from(path), select))
}

impl ImageSource {
    pub fn parse(value: &str) -> Result<ImageSource, SpecError> {
        let Some((transport, rest)) = value.split_once(':') else {
            return Err(SpecError::Transport {
                value: value.to_owned(),
            });
        };
        let plain = |rest: &str| {
            if rest.is_empty() {
                Err(SpecError::EmptyPath {
                    value: value.to_owned(),
                })
            } else {
                Ok(PathBuf::from(rest))
            }
        };
        match transport {
            "oci" => {
                let (dir, select) = split_selector(value, rest)?;
                Ok(ImageSource::OciLayout { dir, select })
            }
            "oci-archive" => {
                let (file, select) = split_selector(value, rest)?;
                Ok(ImageSource::OciArchive { file, select })
            }
            // skopeo writes `docker-archive:FILE:REF`; the reference inside is
            // only a name, the archive's manifest.json decides what is in it.
            "docker-archive" => {
                let (file, _) = split_selector(value, rest)?;
                Ok(ImageSource::DockerArchive { file })
            }
            "tar" => Ok(ImageSource::Tarball { file: plain(rest)? }),
            "dir" => Ok(ImageSource::Directory { dir: plain(rest)? }),
            _ => Err(SpecError::Transport {
                value: value.to_owned(),
            }),
        }
    }
}

/// An OCI platform as `--platform` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformSpec {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl PlatformSpec {
    pub fn parse(value: &str) -> Result<PlatformSpec, SpecError> {
        let parts: Vec<&str> = value.split('/').collect();
        let bad = || SpecError::Platform {
            value: value.to_owned(),
        };
        if parts.iter().any(|p| p.is_empty()) {
            return Err(bad());
        }
        match parts.as_slice() {
            [os, arch] => Ok(PlatformSpec {
                os: (*os).to_owned(),
                architecture: (*arch).to_owned(),
                variant: None,
            }),
            [os, arch, variant] => Ok(PlatformSpec {
                os: (*os).to_owned(),
                architecture: (*arch).to_owned(),
                variant: Some((*variant).to_owned()),
            }),
            _ => Err(bad()),
        }
    }

    /// The platform cairn runs on, in OCI (GOARCH) names.
    pub fn host() -> PlatformSpec {
        PlatformSpec::for_rust_arch(std::env::consts::ARCH)
    }

    pub fn for_rust_arch(arch: &str) -> PlatformSpec {
        let (architecture, variant) = match arch {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", None),
            "x86" => ("386", None),
            "arm" => ("arm", Some("v7")),
            "powerpc64" => ("ppc64le", None),
            "riscv64" => ("riscv64", None),
            "s390x" => ("s390x", None),
            other => (other, None),
        };
        PlatformSpec {
            os: "linux".to_owned(),
            architecture: architecture.to_owned(),
            variant: variant.map(str::to_owned),
        }
    }
}

impl fmt::Display for PlatformSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_oci_layouts() {
        assert_eq!(
            ImageSource::parse("oci:/srv/img").expect("ok"),
            ImageSource::OciLayout {
                dir: "/srv/img".into(),
                select: ManifestSelector::Default
            }
        );
        assert_eq!(
            ImageSource::parse("oci:/srv/img:latest").expect("ok"),
            ImageSource::OciLayout {
                dir: "/srv/img".into(),
                select: ManifestSelector::Tag("latest".into())
            }
        );
        assert_eq!(
            ImageSource::parse("oci:/srv/a:b/img").expect("ok"),
            ImageSource::OciLayout {
                dir: "/srv/a:b/img".into(),
                select: ManifestSelector::Default
            }
        );
        assert_eq!(
            ImageSource::parse(&format!("oci:img@{D}")).expect("ok"),
            ImageSource::OciLayout {
                dir: "img".into(),
                select: ManifestSelector::Digest(Digest::parse(D).expect("d"))
            }
        );
        assert!(ImageSource::parse("oci:img@sha256:zz").is_err());
        assert!(ImageSource::parse("oci::tag").is_err());
    }

    #[test]
    fn parses_other_transports() {
        assert_eq!(
            ImageSource::parse("oci-archive:/x/a.tar:v2").expect("ok"),
            ImageSource::OciArchive {
                file: "/x/a.tar".into(),
                select: ManifestSelector::Tag("v2".into())
            }
        );
        assert_eq!(
            ImageSource::parse("docker-archive:/x/a.tar:busybox:latest").expect("ok"),
            ImageSource::DockerArchive {
                file: "/x/a.tar:busybox".into()
            }
        );
        assert_eq!(
            ImageSource::parse("docker-archive:/x/a.tar").expect("ok"),
            ImageSource::DockerArchive {
                file: "/x/a.tar".into()
            }
        );
        assert_eq!(
            ImageSource::parse("tar:/x/root.tar.gz").expect("ok"),
            ImageSource::Tarball {
                file: "/x/root.tar.gz".into()
            }
        );
        assert_eq!(
            ImageSource::parse("dir:/x/root").expect("ok"),
            ImageSource::Directory {
                dir: "/x/root".into()
            }
        );
        assert!(ImageSource::parse("docker://busybox").is_err());
        assert!(ImageSource::parse("/x/root").is_err());
        assert!(ImageSource::parse("tar:").is_err());
    }

    #[test]
    fn displays_round_trip() {
        for s in ["oci:/a:t", "oci-archive:/a.tar", "tar:/r.tar", "dir:/d"] {
            assert_eq!(ImageSource::parse(s).expect("ok").to_string(), s);
        }
    }

    #[test]
    fn parses_platforms() {
        assert_eq!(
            PlatformSpec::parse("linux/arm64/v8").expect("ok"),
            PlatformSpec {
                os: "linux".into(),
                architecture: "arm64".into(),
                variant: Some("v8".into())
            }
        );
        assert_eq!(
            PlatformSpec::parse("linux/amd64").expect("ok").to_string(),
            "linux/amd64"
        );
        for bad in ["linux", "linux/", "/amd64", "a/b/c/d"] {
            assert!(PlatformSpec::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(PlatformSpec::for_rust_arch("x86_64").architecture, "amd64");
        assert_eq!(PlatformSpec::for_rust_arch("aarch64").architecture, "arm64");
    }
}
