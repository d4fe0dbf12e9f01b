//! The registry client: Registry API v2 through `oci-client` (anonymous,
//! basic, bearer-token auth), manifests fetched raw (OCI and Docker schema 2
//! manifests and indexes, parsed by [`crate::image::oci`]), blobs streamed
//! to files with their digest and size verified, transient failures
//! (refused/reset connections, timeouts, 5xx, 429) retried with backoff.

pub mod auth;
pub mod reference;

use crate::image::digest::Digest;
use auth::Credentials;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use reference::RegistryRef;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Manifest media types cairn accepts (schema 1 is long dead).
pub const ACCEPTED_MANIFESTS: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("reading CA certificate {path}")]
    Ca {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("fetching manifest {reference} from {registry} (after {attempts} attempts)")]
    Manifest {
        reference: String,
        registry: String,
        attempts: u32,
        #[source]
        source: Box<OciDistributionError>,
    },
    #[error(
        "manifest {reference} from {registry}: digest is {actual}, not the {expected} asked for"
    )]
    ManifestDigest {
        reference: String,
        registry: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("downloading blob {digest} of {reference} from {registry} (after {attempts} attempts)")]
    Blob {
        reference: String,
        registry: String,
        digest: Digest,
        attempts: u32,
        #[source]
        source: Box<OciDistributionError>,
    },
    #[error("blob {digest} of {reference} from {registry} fails its digest check: {detail}")]
    BlobDigest {
        reference: String,
        registry: String,
        digest: Digest,
        detail: String,
    },
    #[error(
        "blob {digest} of {reference} from {registry} has {actual} bytes, the manifest says {expected}"
    )]
    BlobSize {
        reference: String,
        registry: String,
        digest: Digest,
        expected: u64,
        actual: u64,
    },
    #[error("writing blob {digest} to {path}")]
    Write {
        digest: Digest,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// How to reach a registry.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// Explicit credentials (else the auth files, else anonymous).
    pub creds: Option<Credentials>,
    /// An extra PEM CA certificate to trust besides the system roots.
    pub ca: Option<PathBuf>,
    /// Registries (`host[:port]`) the site allows over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// Attempts per request on transient errors (at least 1).
    pub attempts: u32,
    /// First backoff delay, doubled on each retry.
    pub backoff: Duration,
}

/// Is this failure worth another attempt?
fn transient(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::RequestError(r) => {
            r.is_connect() || r.is_timeout() || r.is_body() || r.is_request() || r.is_decode()
        }
        OciDistributionError::ServerError { code, .. } => *code >= 500 || *code == 429,
        OciDistributionError::IoError(_) => true,
        _ => false,
    }
}

/// One repository of one registry.
#[derive(Clone)]
pub struct Registry {
    client: Arc<Client>,
    auth: RegistryAuth,
    reference: RegistryRef,
    options: ClientOptions,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Registry({})", self.reference)
    }
}

impl Registry {
    /// A client for `reference`'s registry: HTTPS with the system roots
    /// (plus `options.ca`), plain HTTP only for the site's insecure
    /// registries and for loopback ones (not even those when a CA is
    /// given: that asks for TLS).
    pub fn new(reference: &RegistryRef, options: ClientOptions) -> Result<Registry, RegistryError> {
        let insecure = options
            .insecure_registries
            .iter()
            .any(|r| r.eq_ignore_ascii_case(&reference.registry));
        let mut config = ClientConfig {
            protocol: if insecure || (reference.is_loopback() && options.ca.is_none()) {
                ClientProtocol::HttpsExcept(vec![reference.registry.clone()])
            } else {
                ClientProtocol::Https
            },
            platform_resolver: None,
            connect_timeout: Some(Duration::from_secs(15)),
            read_timeout: Some(Duration::from_secs(60)),
            user_agent: concat!("cairn/", env!("CARGO_PKG_VERSION")),
            ..ClientConfig::default()
        };
        if let Some(path) = &options.ca {
            let data = std::fs::read(path).map_err(|source| RegistryError::Ca {
                path: path.clone(),
                source,
            })?;
            config.extra_root_certificates.push(Certificate {
                encoding: CertificateEncoding::Pem,
                data,
            });
        }
        let auth = match &options.creds {
            Some(c) => RegistryAuth::Basic(c.user.clone(), c.password.clone()),
            None => RegistryAuth::Anonymous,
        };
        Ok(Registry {
            client: Arc::new(Client::new(config)),
            auth,
            reference: reference.clone(),
            options,
        })
    }

    fn oci_ref(&self, r: &RegistryRef) -> Reference {
        match (&r.tag, &r.digest) {
            (_, Some(d)) => {
                Reference::with_digest(r.registry.clone(), r.repository.clone(), d.to_string())
            }
            (Some(t), None) => {
                Reference::with_tag(r.registry.clone(), r.repository.clone(), t.clone())
            }
            (None, None) => Reference::with_tag(
                r.registry.clone(),
                r.repository.clone(),
                "latest".to_owned(),
            ),
        }
    }

    async fn pause(&self, attempt: u32) {
        let factor = 1u32 << attempt.min(6);
        tokio::time::sleep(self.options.backoff * factor).await;
    }

    /// The raw bytes and digest of the manifest (or index) `r` names; a
    /// digest reference is checked against the bytes.
    pub async fn manifest(&self, r: &RegistryRef) -> Result<(Vec<u8>, Digest), RegistryError> {
        let oref = self.oci_ref(r);
        let attempts = self.options.attempts.max(1);
        let mut attempt = 0;
        let bytes = loop {
            attempt += 1;
            match self
                .client
                .pull_manifest_raw(&oref, &self.auth, ACCEPTED_MANIFESTS)
                .await
            {
                Ok((bytes, _)) => break bytes.to_vec(),
                Err(e) if transient(&e) && attempt < attempts => {
                    tracing::warn!("manifest {r}: {e}; retrying");
                    self.pause(attempt - 1).await;
                }
                Err(source) => {
                    return Err(RegistryError::Manifest {
                        reference: r.to_string(),
                        registry: r.registry.clone(),
                        attempts: attempt,
                        source: Box::new(source),
                    });
                }
            }
        };
        let actual = Digest::of_bytes(&bytes);
        if let Some(expected) = &r.digest
            && *expected != actual
        {
            return Err(RegistryError::ManifestDigest {
                reference: r.to_string(),
                registry: r.registry.clone(),
                expected: expected.clone(),
                actual,
            });
        }
        Ok((bytes, actual))
    }

    /// Downloads blob `digest` into `path` (created or truncated), verifies
    /// its digest and size and fsyncs it. `progress` counts bytes received.
    pub async fn blob_to_file(
        &self,
        digest: &Digest,
        size: u64,
        path: &Path,
        progress: &AtomicU64,
    ) -> Result<(), RegistryError> {
        let r = &self.reference;
        let oref = self.oci_ref(r);
        let write_err = |source| RegistryError::Write {
            digest: digest.clone(),
            path: path.to_owned(),
            source,
        };
        let attempts = self.options.attempts.max(1);
        let digest_text = digest.to_string();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut file = tokio::fs::File::create(path).await.map_err(write_err)?;
            let before = progress.load(Ordering::Relaxed);
            let mut counting = Counting {
                inner: &mut file,
                count: progress,
            };
            let result = self
                .client
                .pull_blob(&oref, digest_text.as_str(), &mut counting)
                .await;
            match result {
                Ok(()) => {
                    file.flush().await.map_err(write_err)?;
                    file.sync_all().await.map_err(write_err)?;
                    let actual = file.metadata().await.map_err(write_err)?.len();
                    if actual != size {
                        return Err(RegistryError::BlobSize {
                            reference: r.to_string(),
                            registry: r.registry.clone(),
                            digest: digest.clone(),
                            expected: size,
                            actual,
                        });
                    }
                    return Ok(());
                }
                Err(OciDistributionError::DigestError(e)) => {
                    return Err(RegistryError::BlobDigest {
                        reference: r.to_string(),
                        registry: r.registry.clone(),
                        digest: digest.clone(),
                        detail: e.to_string(),
                    });
                }
                Err(e) if transient(&e) && attempt < attempts => {
                    tracing::warn!("blob {digest}: {e}; retrying");
                    progress.store(before, Ordering::Relaxed);
                    self.pause(attempt - 1).await;
                }
                Err(source) => {
                    return Err(RegistryError::Blob {
                        reference: r.to_string(),
                        registry: r.registry.clone(),
                        digest: digest.clone(),
                        attempts: attempt,
                        source: Box::new(source),
                    });
                }
            }
        }
    }
}

/// An `AsyncWrite` that counts the bytes written through it.
struct Counting<'a, W> {
    inner: &'a mut W,
    count: &'a AtomicU64,
}

impl<W: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Counting<'_, W> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let poll = std::pin::Pin::new(&mut *self.inner).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = &poll {
            self.count.fetch_add(*n as u64, Ordering::Relaxed);
        }
        poll
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut *self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}
