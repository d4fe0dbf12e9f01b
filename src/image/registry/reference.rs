//! `docker://[HOST[:PORT]/]REPO[:TAG|@sha256:DIGEST]` references with the
//! Docker Hub short-name conventions (`ubuntu` is
//! `docker.io/library/ubuntu:latest`). Pure parsing, no I/O.

use crate::image::digest::{Digest, DigestError};
use std::fmt;

/// The registry a reference without a host part means.
pub const DEFAULT_REGISTRY: &str = "docker.io";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RefError {
    #[error("image reference {value:?} names no repository")]
    Empty { value: String },
    #[error("image reference {value:?}: bad digest")]
    Digest {
        value: String,
        #[source]
        source: DigestError,
    },
    #[error("image reference {value:?}: invalid {part} {text:?}")]
    Invalid {
        value: String,
        part: &'static str,
        text: String,
    },
}

/// A parsed registry reference; `Display` gives its canonical name
/// (`host/repo:tag` or `host/repo@sha256:...`, no `docker://`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryRef {
    pub registry: String,
    pub repository: String,
    /// Always set when there is no digest (`latest` by default).
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl fmt::Display for RegistryRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

fn valid_component(c: &str) -> bool {
    !c.is_empty()
        && c.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
        && c.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
}

fn valid_tag(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 128
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Is the first path component a registry host (has a dot or a port, or is
/// `localhost`), as Docker decides it?
fn is_host(first: &str) -> bool {
    first.contains('.') || first.contains(':') || first == "localhost" || first.starts_with('[')
}

impl RegistryRef {
    /// Parses a reference, with or without the `docker://` prefix.
    pub fn parse(value: &str) -> Result<RegistryRef, RefError> {
        let rest = value.strip_prefix("docker://").unwrap_or(value);
        let invalid = |part, text: &str| RefError::Invalid {
            value: value.to_owned(),
            part,
            text: text.to_owned(),
        };
        let (rest, digest) = match rest.split_once('@') {
            Some((r, d)) => (
                r,
                Some(Digest::parse(d).map_err(|source| RefError::Digest {
                    value: value.to_owned(),
                    source,
                })?),
            ),
            None => (rest, None),
        };
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if name.is_empty() {
            return Err(RefError::Empty {
                value: value.to_owned(),
            });
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, repo)) if is_host(first) => (first.to_owned(), repo.to_owned()),
            _ => (DEFAULT_REGISTRY.to_owned(), name.to_owned()),
        };
        let registry = match registry.as_str() {
            "index.docker.io" | "registry-1.docker.io" => DEFAULT_REGISTRY.to_owned(),
            _ => registry,
        };
        let repository = if registry == DEFAULT_REGISTRY && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        if let Some(bad) = repository.split('/').find(|c| !valid_component(c)) {
            return Err(invalid("repository component", bad));
        }
        if let Some(t) = tag
            && !valid_tag(t)
        {
            return Err(invalid("tag", t));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_owned()),
            (None, None) => Some("latest".to_owned()),
            (None, Some(_)) => None,
        };
        Ok(RegistryRef {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// Plain HTTP is allowed only for the loopback registries.
    pub fn is_loopback(&self) -> bool {
        let host = match self.registry.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(""),
            None => self.registry.split(':').next().unwrap_or(""),
        };
        matches!(host, "localhost" | "127.0.0.1" | "::1")
    }

    /// The same repository pinned to `digest` (the manifest actually pulled).
    pub fn with_digest(&self, digest: Digest) -> RegistryRef {
        RegistryRef {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: None,
            digest: Some(digest),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> RegistryRef {
        RegistryRef::parse(s).expect(s)
    }

    #[test]
    fn docker_hub_short_names() {
        assert_eq!(p("ubuntu").to_string(), "docker.io/library/ubuntu:latest");
        assert_eq!(
            p("docker://ubuntu:24.04").to_string(),
            "docker.io/library/ubuntu:24.04"
        );
        assert_eq!(p("user/app").to_string(), "docker.io/user/app:latest");
        assert_eq!(
            p("index.docker.io/library/debian:12").to_string(),
            "docker.io/library/debian:12"
        );
    }

    #[test]
    fn hosts_ports_and_digests() {
        let r = p("docker://127.0.0.1:5000/a/b:v1");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("127.0.0.1:5000", "a/b")
        );
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert!(r.is_loopback());
        let hex = "a".repeat(64);
        let r = p(&format!("localhost:5000/x@sha256:{hex}"));
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.map(|d| d.hex().to_owned()), Some(hex.clone()));
        assert!(p("localhost/x").is_loopback());
        assert!(p("[::1]:5000/x").is_loopback());
        assert!(!p("ghcr.io/x/y").is_loopback());
        assert!(!p("localhost.evil.com/x").is_loopback());
        let r = p(&format!("quay.io/a/b:t@sha256:{hex}"));
        assert_eq!(r.tag.as_deref(), Some("t"));
        assert_eq!(r.to_string(), format!("quay.io/a/b:t@sha256:{hex}"));
    }

    #[test]
    fn refuses_bad_references() {
        assert!(RegistryRef::parse("").is_err());
        assert!(RegistryRef::parse("docker://").is_err());
        assert!(RegistryRef::parse("Ubuntu").is_err());
        assert!(RegistryRef::parse("ubuntu:").is_err());
        assert!(RegistryRef::parse("ubuntu@sha256:xyz").is_err());
        assert!(RegistryRef::parse("a//b").is_err());
    }
}
