//! The registry client: Registry API v2 through `oci-client` (anonymous,
//! basic, bearer-token auth), manifests fetched raw (OCI and Docker schema 2
//! manifests and indexes, parsed by [`crate::image::oci`]), blobs streamed
//! to files that only grow (so the flattener can read them while they
//! download, see [`GrowingBlob`]) with their digest and size verified,
//! transient failures (refused/reset connections, timeouts, 5xx, 429)
//! retried with backoff. Untrusted certificates and refused credentials are
//! not transient: they fail at once, saying what to give. For `cairn push`:
//! blobs checked with HEAD, mounted from another repository of the
//! registry when a push left them there, else uploaded from files as one
//! streamed PUT each (read in chunks as they are sent, never whole in
//! memory), and the manifest put as raw bytes, so its digest is the one
//! cairn computed.

pub mod auth;
pub mod reference;

use crate::error::error_chain_deduplicated;
use crate::image::digest::Digest;
use crate::image::layer::GrowingBlob;
use auth::Credentials;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use reference::RegistryRef;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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
    #[error("{registry} refused access to {reference}: {why}")]
    Denied {
        reference: String,
        registry: String,
        why: String,
        #[source]
        source: Box<OciDistributionError>,
    },
    #[error(
        "{registry}: certificate not trusted ({detail}); give the CA with --ca or the site's ca_file"
    )]
    Untrusted { registry: String, detail: String },
    #[error("authenticating with {registry} to push {reference} (after {attempts} attempts)")]
    PushAuth {
        reference: String,
        registry: String,
        attempts: u32,
        #[source]
        source: Box<OciDistributionError>,
    },
    #[error(
        "asking {registry} whether it has blob {digest} of {reference} (after {attempts} attempts)"
    )]
    BlobCheck {
        reference: String,
        registry: String,
        digest: Digest,
        attempts: u32,
        #[source]
        source: Box<OciDistributionError>,
    },
    #[error("uploading blob {digest} of {reference} to {registry} (after {attempts} attempts)")]
    Upload {
        reference: String,
        registry: String,
        digest: Digest,
        attempts: u32,
        #[source]
        source: Box<OciDistributionError>,
    },
    #[error("putting manifest {reference} to {registry} (after {attempts} attempts)")]
    ManifestPut {
        reference: String,
        registry: String,
        attempts: u32,
        #[source]
        source: Box<OciDistributionError>,
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
        // AWS-LC is built without its static constructor (.cargo/config.toml):
        // its CPU probe runs here, once, before any TLS. Skipped, TLS would
        // still work, on its generic code without AES-NI and friends.
        aws_lc_rs::init();
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
            // A blob is one PUT of the whole stream after the POST that
            // opens the upload (the spec's monolithic push, as containerd
            // pushes), not oci-client's PATCH per 4 MiB: docker-registry
            // saves its hash state at every PATCH, and a built image's
            // push took 1.18x skopeo's chunked, 0.94x monolithic.
            use_monolithic_push: true,
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

    /// The reference this client was made for.
    pub fn reference(&self) -> &RegistryRef {
        &self.reference
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

    /// The retry bookkeeping of one request: `what` names it in the
    /// warnings, `give_up` makes its own error variant from the last
    /// registry error and the number of attempts made.
    fn retries<G>(&self, what: String, give_up: G) -> Retries<'_, G>
    where
        G: Fn(OciDistributionError, u32) -> RegistryError,
    {
        Retries {
            registry: self,
            what,
            give_up,
            failed: 0,
        }
    }

    /// The failures no retry can mend, as their own errors: an untrusted
    /// certificate, refused (or missing) credentials. Any other failure
    /// comes back for the retry policy ([`Retries::after`]).
    fn lasting(
        &self,
        r: &RegistryRef,
        e: OciDistributionError,
    ) -> Result<OciDistributionError, RegistryError> {
        if untrusted_certificate(&e) {
            return Err(RegistryError::Untrusted {
                registry: r.registry.clone(),
                detail: error_chain_deduplicated(&e),
            });
        }
        if denied(&e) {
            let why = match &self.options.creds {
                Some(c) => format!("the credentials of user {} were refused", c.user),
                None => "no credentials given (use --creds USER:PASS, or an entry in \
                         $REGISTRY_AUTH_FILE or ~/.docker/config.json)"
                    .to_owned(),
            };
            return Err(RegistryError::Denied {
                reference: r.to_string(),
                registry: r.registry.clone(),
                why,
                source: Box::new(e),
            });
        }
        Ok(e)
    }

    /// Runs `attempt`, a request about `r`, until it succeeds, fails in a
    /// lasting way ([`Registry::lasting`]) or the retry policy gives up
    /// (`what` and `give_up` as for [`Registry::retries`]).
    async fn with_retries<T, F, Fut, G>(
        &self,
        r: &RegistryRef,
        what: String,
        mut attempt: F,
        give_up: G,
    ) -> Result<T, RegistryError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, OciDistributionError>>,
        G: Fn(OciDistributionError, u32) -> RegistryError,
    {
        let mut retries = self.retries(what, give_up);
        loop {
            match attempt().await {
                Ok(value) => return Ok(value),
                Err(e) => retries.after(self.lasting(r, e)?).await?,
            }
        }
    }

    /// The raw bytes and digest of the manifest (or index) `r` names; a
    /// digest reference is checked against the bytes.
    pub async fn manifest(&self, r: &RegistryRef) -> Result<(Vec<u8>, Digest), RegistryError> {
        let oref = self.oci_ref(r);
        let (client, auth) = (&self.client, &self.auth);
        let (bytes, _) = self
            .with_retries(
                r,
                format!("manifest {r}"),
                || client.pull_manifest_raw(&oref, auth, ACCEPTED_MANIFESTS),
                |source, attempts| RegistryError::Manifest {
                    reference: r.to_string(),
                    registry: r.registry.clone(),
                    attempts,
                    source: Box::new(source),
                },
            )
            .await?;
        let bytes = bytes.to_vec();
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
    /// its digest and size and fsyncs it. `progress` counts the bytes in
    /// the file; `growing` tells readers following the file how far it is
    /// written and how the download ended (also on error). The file only
    /// grows: a retry downloads the blob again and skips what is already
    /// written, so a reader never sees bytes change under it.
    pub async fn blob_to_file(
        &self,
        digest: &Digest,
        size: u64,
        path: &Path,
        progress: &AtomicU64,
        growing: &GrowingBlob,
    ) -> Result<(), RegistryError> {
        let result = self
            .blob_attempts(digest, size, path, progress, growing)
            .await;
        match &result {
            Ok(()) => growing.finish(),
            Err(e) => growing.fail(&e.to_string()),
        }
        result
    }

    async fn blob_attempts(
        &self,
        digest: &Digest,
        size: u64,
        path: &Path,
        progress: &AtomicU64,
        growing: &GrowingBlob,
    ) -> Result<(), RegistryError> {
        let r = &self.reference;
        let oref = self.oci_ref(r);
        let write_err = |source| RegistryError::Write {
            digest: digest.clone(),
            path: path.to_owned(),
            source,
        };
        let mut retries = self.retries(format!("blob {digest}"), |source, attempts| {
            RegistryError::Blob {
                reference: r.to_string(),
                registry: r.registry.clone(),
                digest: digest.clone(),
                attempts,
                source: Box::new(source),
            }
        });
        let digest_text = digest.to_string();
        // Written synchronously from the task: page-cache writes are short,
        // and a reader may only be told about bytes already in the file.
        let mut file = std::fs::File::create(path).map_err(write_err)?;
        let mut written = 0u64;
        progress.store(0, Ordering::Relaxed);
        loop {
            let mut appender = Appender {
                file: &mut file,
                seen: 0,
                written: &mut written,
                count: progress,
                growing,
                limit: size,
            };
            let result = self
                .client
                .pull_blob(&oref, digest_text.as_str(), &mut appender)
                .await;
            match result {
                Ok(()) => {
                    file.sync_all().map_err(write_err)?;
                    let actual = file.metadata().map_err(write_err)?.len();
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
                Err(e) if untrusted_certificate(&e) => {
                    return Err(RegistryError::Untrusted {
                        registry: r.registry.clone(),
                        detail: error_chain_deduplicated(&e),
                    });
                }
                Err(OciDistributionError::IoError(e))
                    if e.kind() == std::io::ErrorKind::FileTooLarge =>
                {
                    return Err(RegistryError::BlobSize {
                        reference: r.to_string(),
                        registry: r.registry.clone(),
                        digest: digest.clone(),
                        expected: size,
                        actual: written,
                    });
                }
                Err(e) => retries.after(e).await?,
            }
        }
    }
}

impl Registry {
    /// Gets what pushing to the repository needs (a bearer token with the
    /// `pull,push` scope, or the basic credentials) before any upload, so
    /// that refused credentials fail before the first byte is sent.
    pub async fn authorize_push(&self) -> Result<(), RegistryError> {
        let r = &self.reference;
        let oref = self.oci_ref(r);
        let (client, auth) = (&self.client, &self.auth);
        self.with_retries(
            r,
            format!("authentication for {r}"),
            || client.auth(&oref, auth, RegistryOperation::Push),
            |source, attempts| RegistryError::PushAuth {
                reference: r.to_string(),
                registry: r.registry.clone(),
                attempts,
                source: Box::new(source),
            },
        )
        .await?;
        Ok(())
    }

    /// Does the repository have blob `digest` already (HEAD)?
    pub async fn has_blob(&self, digest: &Digest) -> Result<bool, RegistryError> {
        let r = &self.reference;
        let oref = self.oci_ref(r);
        let text = digest.to_string();
        let client = &self.client;
        self.with_retries(
            r,
            format!("blob check {digest}"),
            || client.blob_exists(&oref, &text),
            |source, attempts| RegistryError::BlobCheck {
                reference: r.to_string(),
                registry: r.registry.clone(),
                digest: digest.clone(),
                attempts,
                source: Box::new(source),
            },
        )
        .await
    }

    /// Links blob `digest`, which repository `from` of the same registry
    /// holds, into this one without sending it (the distribution spec's
    /// cross-repository mount): `true` once the registry says it is there.
    /// One attempt, and any failure is `false` (the registry may refuse:
    /// no read access there, the blob gone, or it opened an upload
    /// instead), so the caller uploads as it would have.
    pub async fn mount_blob(&self, digest: &Digest, from: &str) -> bool {
        let r = &self.reference;
        let source = Reference::with_tag(r.registry.clone(), from.to_owned(), "latest".into());
        match self
            .client
            .mount_blob(&self.oci_ref(r), &source, &digest.to_string())
            .await
        {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!("mount of {digest} from {from} into {r} refused: {e}");
                false
            }
        }
    }

    /// Uploads blob `digest`, the `size` bytes of the file at `path`, as
    /// the body of one PUT read as it is sent; a retry starts a new upload.
    pub async fn push_blob_file(
        &self,
        digest: &Digest,
        path: &Path,
        size: u64,
    ) -> Result<(), RegistryError> {
        let text = digest.to_string();
        let client = &self.client;
        let oref = self.oci_ref(&self.reference);
        self.with_retries(
            &self.reference,
            format!("upload of blob {digest}"),
            || client.push_blob_stream(&oref, file_chunks(path.to_owned()), &text, Some(size)),
            |source, attempts| self.upload_failed(digest, source, attempts),
        )
        .await?;
        Ok(())
    }

    /// Uploads a small blob (an image config) from memory.
    pub async fn push_blob_bytes(
        &self,
        digest: &Digest,
        bytes: &[u8],
    ) -> Result<(), RegistryError> {
        let text = digest.to_string();
        let client = &self.client;
        let oref = self.oci_ref(&self.reference);
        self.with_retries(
            &self.reference,
            format!("upload of blob {digest}"),
            || client.push_blob(&oref, bytes.to_vec(), &text),
            |source, attempts| self.upload_failed(digest, source, attempts),
        )
        .await?;
        Ok(())
    }

    fn upload_failed(
        &self,
        digest: &Digest,
        source: OciDistributionError,
        attempts: u32,
    ) -> RegistryError {
        RegistryError::Upload {
            reference: self.reference.to_string(),
            registry: self.reference.registry.clone(),
            digest: digest.clone(),
            attempts,
            source: Box::new(source),
        }
    }

    /// Puts `bytes`, a manifest of type `media_type`, under the
    /// reference's tag, as they are (its digest is theirs).
    pub async fn push_manifest(
        &self,
        bytes: &[u8],
        media_type: &'static str,
    ) -> Result<(), RegistryError> {
        let r = &self.reference;
        let oref = self.oci_ref(r);
        let content_type = http::HeaderValue::from_static(media_type);
        let client = &self.client;
        self.with_retries(
            r,
            format!("manifest {r}"),
            || client.push_manifest_raw(&oref, bytes.to_vec(), content_type.clone()),
            |source, attempts| RegistryError::ManifestPut {
                reference: r.to_string(),
                registry: r.registry.clone(),
                attempts,
                source: Box::new(source),
            },
        )
        .await?;
        Ok(())
    }
}

/// Bytes per read of a file being uploaded (the body of one PUT, sent as
/// it is read).
const UPLOAD_CHUNK: usize = 4 << 20;

/// The file at `path` as a stream of chunks, opened at the first poll (a
/// retry gets a fresh stream from the start).
fn file_chunks(
    path: PathBuf,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, OciDistributionError>> + Send + 'static {
    futures_util::stream::try_unfold((path, None), next_chunk)
}

/// The next chunk of the file (read synchronously: a local file, on the
/// runtime's single thread), or `None` at its end.
async fn next_chunk(
    (path, file): (PathBuf, Option<std::fs::File>),
) -> Result<Option<(bytes::Bytes, (PathBuf, Option<std::fs::File>))>, OciDistributionError> {
    use std::io::Read;
    let mut file = match file {
        Some(f) => f,
        None => std::fs::File::open(&path)?,
    };
    let mut buf = vec![0u8; UPLOAD_CHUNK];
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    if filled == 0 {
        return Ok(None);
    }
    buf.truncate(filled);
    Ok(Some((bytes::Bytes::from(buf), (path, Some(file)))))
}

/// One request's attempts so far (see [`Registry::retries`]): the retry
/// policy the manifest and blob downloads share.
struct Retries<'r, G> {
    registry: &'r Registry,
    what: String,
    give_up: G,
    /// Attempts that failed so far.
    failed: u32,
}

impl<G> Retries<'_, G>
where
    G: Fn(OciDistributionError, u32) -> RegistryError,
{
    /// After a failed attempt: `Ok` once the backoff is waited out when
    /// the error is [`transient`] and attempts remain (at least 1 in all),
    /// else the request's own error with the number of attempts made. The
    /// caller turns the errors no retry can mend (untrusted certificate,
    /// refused credentials, digest or size) into their variants first.
    async fn after(&mut self, error: OciDistributionError) -> Result<(), RegistryError> {
        self.failed += 1;
        if transient(&error) && self.failed < self.registry.options.attempts.max(1) {
            tracing::warn!("{}: {error}; retrying", self.what);
            self.registry.pause(self.failed - 1).await;
            Ok(())
        } else {
            Err((self.give_up)(error, self.failed))
        }
    }
}

/// An `AsyncWrite` that appends one download attempt's bytes to the blob
/// file, skipping the prefix earlier attempts already wrote, and reports
/// the file's length to the progress counter and to followers.
struct Appender<'a> {
    file: &'a mut std::fs::File,
    /// Bytes of this attempt's stream seen so far.
    seen: u64,
    /// Length of the file (over all attempts).
    written: &'a mut u64,
    count: &'a AtomicU64,
    growing: &'a GrowingBlob,
    /// The size the manifest gives: a registry sending more is refused
    /// before it fills the disk.
    limit: u64,
}

impl tokio::io::AsyncWrite for Appender<'_> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        use std::io::Write;
        let this = &mut *self;
        let n = buf.len() as u64;
        let end = this.seen + n;
        if end > this.limit {
            return std::task::Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::FileTooLarge,
                "the registry sent more bytes than the manifest gives",
            )));
        }
        if let Some(skip) = unwritten_from(this.seen, *this.written, buf.len()) {
            if let Err(e) = this.file.write_all(&buf[skip..]) {
                return std::task::Poll::Ready(Err(e));
            }
            *this.written = end;
            this.count.store(end, Ordering::Relaxed);
            this.growing.advance(end);
        }
        this.seen = end;
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// Where in a buffer of `len` bytes at stream offset `seen` the bytes not
/// yet in a file of `written` bytes start; `None` if all are there already.
fn unwritten_from(seen: u64, written: u64, len: usize) -> Option<usize> {
    let end = seen + len as u64;
    (end > written).then(|| usize::try_from(written.saturating_sub(seen)).unwrap_or(len))
}

/// Did the registry (or its token service) refuse the credentials?
fn denied(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => true,
        OciDistributionError::ServerError { code, .. } => *code == 401 || *code == 403,
        // A HEAD (blob check) answered 401/403.
        OciDistributionError::RequestError(r) => r
            .status()
            .is_some_and(|s| s.as_u16() == 401 || s.as_u16() == 403),
        OciDistributionError::RegistryError { envelope, .. } => {
            let text = format!("{envelope:?}").to_ascii_uppercase();
            text.contains("UNAUTHORIZED") || text.contains("DENIED")
        }
        _ => false,
    }
}

/// A TLS failure because the registry's certificate chain is not trusted
/// (unknown issuer, self-signed, expired, wrong name): retrying cannot help.
fn untrusted_certificate(e: &OciDistributionError) -> bool {
    let mut source: Option<&dyn std::error::Error> = Some(e);
    while let Some(err) = source {
        let text = err.to_string();
        if text.contains("invalid peer certificate") || text.contains("UnknownIssuer") {
            return true;
        }
        source = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_append_only_what_is_missing() {
        // First attempt: everything is new.
        assert_eq!(unwritten_from(0, 0, 10), Some(0));
        assert_eq!(unwritten_from(10, 10, 5), Some(0));
        // A retry restarts at 0 over a file of 12 bytes.
        assert_eq!(unwritten_from(0, 12, 10), None);
        assert_eq!(unwritten_from(10, 12, 10), Some(2));
        assert_eq!(unwritten_from(12, 12, 1), Some(0));
        assert_eq!(unwritten_from(0, 12, 12), None);
        assert_eq!(unwritten_from(0, 0, 0), None);
    }

    #[test]
    fn retries_stop_after_the_attempts_or_at_a_lasting_error() {
        let reference = RegistryRef::parse("127.0.0.1:1/a/b:t").expect("reference");
        let options = ClientOptions {
            attempts: 3,
            backoff: Duration::ZERO,
            ..ClientOptions::default()
        };
        let registry = Registry::new(&reference, options).expect("registry");
        let server = |code| OciDistributionError::ServerError {
            code,
            url: "http://r/v2/".into(),
            message: String::new(),
        };
        let give_up = |source, attempts| RegistryError::Manifest {
            reference: "r".into(),
            registry: "g".into(),
            attempts,
            source: Box::new(source),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            // Transient: two retries, the third failure is final.
            let mut retries = registry.retries("manifest r".into(), give_up);
            assert!(retries.after(server(503)).await.is_ok());
            assert!(retries.after(server(429)).await.is_ok());
            let err = retries.after(server(503)).await.expect_err("third");
            assert!(
                matches!(err, RegistryError::Manifest { attempts: 3, .. }),
                "{err}"
            );
            // Not transient: final at the first failure.
            let mut retries = registry.retries("manifest r".into(), give_up);
            let err = retries.after(server(404)).await.expect_err("404");
            assert!(
                matches!(err, RegistryError::Manifest { attempts: 1, .. }),
                "{err}"
            );
            assert!(err.to_string().contains("after 1 attempts"), "{err}");
        });
        // attempts = 0 still makes one attempt.
        let once = Registry::new(&reference, ClientOptions::default()).expect("registry");
        runtime.block_on(async {
            let mut retries = once.retries("blob d".into(), give_up);
            let err = retries.after(server(503)).await.expect_err("one");
            assert!(
                matches!(err, RegistryError::Manifest { attempts: 1, .. }),
                "{err}"
            );
        });
    }

    #[test]
    fn untrusted_and_denied_are_not_transient() {
        let unauthorized = OciDistributionError::UnauthorizedError {
            url: "http://r/v2/".into(),
        };
        assert!(denied(&unauthorized));
        assert!(!transient(&unauthorized));
        let server = |code| OciDistributionError::ServerError {
            code,
            url: "http://r/v2/".into(),
            message: String::new(),
        };
        assert!(denied(&server(403)));
        assert!(!denied(&server(503)));
        assert!(transient(&server(503)) && transient(&server(429)));
        assert!(!untrusted_certificate(&server(503)));
        let tls = OciDistributionError::IoError(std::io::Error::other(
            "invalid peer certificate: UnknownIssuer",
        ));
        assert!(untrusted_certificate(&tls));
    }
}
