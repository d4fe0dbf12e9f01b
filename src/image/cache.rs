//! The node-local image cache: flattened images stored by manifest digest
//! (`images/sha256-<hex>.sqfs` plus `.json`), names pointing at digests
//! (`refs/<name>`), per-digest `flock(2)` locks (`locks/`, released by the
//! kernel when a process dies) and staging directories (`tmp/<key>/`, named
//! like their lock so `gc` can tell abandoned ones). Every file appears by
//! temp file + fsync + rename + fsync(dir), and a name is written only
//! after its image is complete, so readers never see a partial image.

use crate::image::digest::Digest;
use crate::image::registry::reference::RegistryRef;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache: {step} {path}")]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cache: locking {path}")]
    Lock {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("cache: {path} is not valid json")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("no image named {name:?} in the cache {root}")]
    NoSuchName { name: String, root: PathBuf },
    #[error("image name {name:?} is empty or too long")]
    BadName { name: String },
    #[error("refusing the image cache {root}: another user could change what is read from it")]
    Untrusted {
        root: PathBuf,
        #[source]
        source: crate::trust::TrustError,
    },
}

/// The entries of a cache directory; none when it does not exist yet.
fn list_dir(dir: &Path) -> Result<Vec<fs::DirEntry>, CacheError> {
    match fs::read_dir(dir) {
        Ok(entries) => entries
            .collect::<Result<_, _>>()
            .map_err(io_err("listing", dir)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(CacheError::Io {
            step: "listing",
            path: dir.to_path_buf(),
            source,
        }),
    }
}

fn io_err<'a>(step: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CacheError + 'a {
    move |source| CacheError::Io {
        step,
        path: path.to_owned(),
        source,
    }
}

/// What a name points at (the content of `refs/<name>`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RefRecord {
    pub name: String,
    pub digest: String,
    /// Seconds since the epoch when the name was (re)pointed.
    pub pulled: u64,
}

/// Facts about a stored image (`images/sha256-<hex>.json`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImageRecord {
    pub digest: String,
    /// Where it came from: `docker://...` or an import source.
    pub source: String,
    pub size: u64,
    pub stored: u64,
}

/// One line of `cairn images`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// `None` for an image no name points at (what `gc` removes).
    pub name: Option<String>,
    pub digest: String,
    pub size: u64,
    pub pulled: u64,
}

/// What `gc` removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcSummary {
    pub images: Vec<String>,
    pub temp: Vec<PathBuf>,
    pub bytes: u64,
}

/// An exclusive lock on one cache key, held until dropped.
#[derive(Debug)]
pub struct KeyLock {
    _lock: Flock<File>,
    pub key: String,
}

/// A cache directory (which may not exist yet).
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The file name a cache name is stored under: every byte outside
/// `[A-Za-z0-9._-:@+]` becomes `%XX`, so `/` cannot escape `refs/`.
pub fn encode_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':' | b'@' | b'+') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.starts_with('.') {
        out.replace_range(0..1, "%2E");
    }
    out
}

/// The key (`sha256-<hex>` minus prefix: the hex) of an image file name,
/// or of a writer's temp file beside it (`.sha256-<hex>.sqfs.cairn-*.tmp`).
pub fn image_key_of(file_name: &str) -> Option<&str> {
    let rest = file_name
        .strip_prefix(".sha256-")
        .or_else(|| file_name.strip_prefix("sha256-"))?;
    let hex = rest.get(..64)?;
    Digest::from_hex(hex).map(|_| hex)
}

/// Renders seconds since the epoch as `YYYY-MM-DD HH:MM` UTC.
pub fn format_time(secs: u64) -> String {
    // In i128: every u64 day count fits, so no cast can wrap.
    let days = i128::from(secs / 86400);
    let rem = secs % 86400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i128::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// The names a user's `NAME` may be stored under: literally (imports), and
/// as a canonical registry reference (`ubuntu` = docker.io/library/ubuntu:latest).
pub fn candidate_names(name: &str) -> Vec<String> {
    let mut out = Vec::new();
    if !name.starts_with("docker://") {
        out.push(name.to_owned());
    }
    if let Ok(r) = RegistryRef::parse(name) {
        let canonical = r.to_string();
        if !out.contains(&canonical) {
            out.push(canonical);
        }
    }
    out
}

/// Writes `data` to `path` atomically: temp file, fsync, rename, fsync(dir).
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), CacheError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let temp = dir.join(format!(".{name}.{}-{nanos:08x}.tmp", std::process::id()));
    let result = (|| {
        let mut f = File::create(&temp).map_err(io_err("creating", &temp))?;
        f.write_all(data).map_err(io_err("writing", &temp))?;
        f.sync_all().map_err(io_err("syncing", &temp))?;
        fs::rename(&temp, path).map_err(io_err("renaming onto", path))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Makes renames and unlinks in `dir` durable.
pub fn sync_dir(dir: &Path) -> Result<(), CacheError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("syncing directory", dir))
}

impl Cache {
    pub fn at(root: impl Into<PathBuf>) -> Cache {
        Cache { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Refuse a cache another user could write into: its root and its
    /// four subdirectories (created when missing) must be reachable only
    /// through directories root or the caller own and nobody else writes
    /// (one sticky `/tmp`-like ancestor allowed), and be the caller's own
    /// (see [`crate::trust`]). Once that holds, nobody but the caller (and
    /// root) can create, rename or replace anything in the cache, so the
    /// path-based work below is safe; an image read from it is what the
    /// caller stored.
    pub fn verify(&self, uid: u32) -> Result<(), CacheError> {
        for sub in ["", "images", "refs", "locks", "tmp"] {
            let dir = if sub.is_empty() {
                self.root.clone()
            } else {
                self.root.join(sub)
            };
            crate::trust::OwnDir::open_owned(&dir, uid, true).map_err(|source| {
                CacheError::Untrusted {
                    root: self.root.clone(),
                    source,
                }
            })?;
        }
        Ok(())
    }

    /// Creates the cache's directories (idempotent).
    pub fn create(&self) -> Result<(), CacheError> {
        for sub in ["images", "refs", "locks", "tmp"] {
            let p = self.root.join(sub);
            fs::create_dir_all(&p).map_err(io_err("creating", &p))?;
        }
        Ok(())
    }

    pub fn image_path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("images")
            .join(format!("sha256-{}.sqfs", digest.hex()))
    }

    pub fn record_path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("images")
            .join(format!("sha256-{}.json", digest.hex()))
    }

    /// A staging directory for `key` (guard it with [`Cache::lock`]).
    pub fn staging_dir(&self, key: &str) -> PathBuf {
        self.root.join("tmp").join(key)
    }

    fn ref_path(&self, name: &str) -> PathBuf {
        self.root.join("refs").join(encode_name(name))
    }

    fn lock_file(&self, key: &str) -> Result<(File, PathBuf), CacheError> {
        let path = self.root.join("locks").join(format!("{key}.lock"));
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err("opening lock", &path))?;
        Ok((file, path))
    }

    /// Waits for the exclusive lock on `key` (e.g. a manifest digest's hex).
    pub fn lock(&self, key: &str) -> Result<KeyLock, CacheError> {
        let (mut file, path) = self.lock_file(key)?;
        loop {
            match Flock::lock(file, FlockArg::LockExclusive) {
                Ok(lock) => {
                    return Ok(KeyLock {
                        _lock: lock,
                        key: key.to_owned(),
                    });
                }
                Err((f, Errno::EINTR)) => file = f,
                Err((_, source)) => return Err(CacheError::Lock { path, source }),
            }
        }
    }

    /// The lock on `key` if nobody holds it.
    pub fn try_lock(&self, key: &str) -> Result<Option<KeyLock>, CacheError> {
        let (file, path) = self.lock_file(key)?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Some(KeyLock {
                _lock: lock,
                key: key.to_owned(),
            })),
            Err((_, Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, source)) => Err(CacheError::Lock { path, source }),
        }
    }

    /// Is the image complete in the cache (only complete ones exist)?
    pub fn has_image(&self, digest: &Digest) -> bool {
        self.image_path(digest).is_file()
    }

    pub fn write_record(&self, record: &ImageRecord, digest: &Digest) -> Result<(), CacheError> {
        let path = self.record_path(digest);
        let json = serde_json::to_vec_pretty(record).map_err(|source| CacheError::Json {
            path: path.clone(),
            source,
        })?;
        write_atomic(&path, &json)
    }

    /// Points `name` at `digest` (the image must be complete already).
    pub fn set_ref(&self, name: &str, digest: &Digest) -> Result<(), CacheError> {
        if name.is_empty() || name.len() > 200 {
            return Err(CacheError::BadName {
                name: name.to_owned(),
            });
        }
        let record = RefRecord {
            name: name.to_owned(),
            digest: digest.to_string(),
            pulled: now(),
        };
        let path = self.ref_path(name);
        let json = serde_json::to_vec(&record).map_err(|source| CacheError::Json {
            path: path.clone(),
            source,
        })?;
        write_atomic(&path, &json)
    }

    fn read_ref_file(&self, path: &Path) -> Option<RefRecord> {
        let bytes = fs::read(path).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// The record `name` (or its canonical form) is stored under.
    pub fn read_ref(&self, name: &str) -> Option<RefRecord> {
        candidate_names(name)
            .iter()
            .find_map(|n| self.read_ref_file(&self.ref_path(n)))
    }

    fn refs(&self) -> Result<Vec<RefRecord>, CacheError> {
        let dir = self.root.join("refs");
        let mut out = Vec::new();
        for entry in list_dir(&dir)? {
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            if let Some(r) = self.read_ref_file(&entry.path()) {
                out.push(r);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn image_files(&self) -> Result<Vec<(String, PathBuf)>, CacheError> {
        let dir = self.root.join("images");
        let mut out = Vec::new();
        for entry in list_dir(&dir)? {
            out.push((
                entry.file_name().to_string_lossy().into_owned(),
                entry.path(),
            ));
        }
        out.sort();
        Ok(out)
    }

    /// Named images (whose image file is complete), then unnamed ones.
    pub fn list(&self) -> Result<Vec<Listed>, CacheError> {
        let mut out = Vec::new();
        let refs = self.refs()?;
        for r in &refs {
            let Ok(digest) = Digest::parse(&r.digest) else {
                continue;
            };
            if let Ok(md) = fs::metadata(self.image_path(&digest)) {
                out.push(Listed {
                    name: Some(r.name.clone()),
                    digest: r.digest.clone(),
                    size: md.len(),
                    pulled: r.pulled,
                });
            }
        }
        for (name, path) in self.image_files()? {
            if name.starts_with('.') || !name.ends_with(".sqfs") {
                continue;
            }
            let Some(hex) = image_key_of(&name) else {
                continue;
            };
            let digest = format!("sha256:{hex}");
            if refs.iter().any(|r| r.digest == digest) {
                continue;
            }
            if let Ok(md) = fs::metadata(&path) {
                let pulled = md
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_secs());
                out.push(Listed {
                    name: None,
                    digest,
                    size: md.len(),
                    pulled,
                });
            }
        }
        Ok(out)
    }

    /// Removes the name `name` (the image stays until `gc`).
    pub fn remove_ref(&self, name: &str) -> Result<RefRecord, CacheError> {
        for n in candidate_names(name) {
            let path = self.ref_path(&n);
            if let Some(record) = self.read_ref_file(&path) {
                fs::remove_file(&path).map_err(io_err("removing", &path))?;
                sync_dir(&self.root.join("refs"))?;
                return Ok(record);
            }
        }
        Err(CacheError::NoSuchName {
            name: name.to_owned(),
            root: self.root.clone(),
        })
    }

    /// Removes images no name points at and staging files whose lock
    /// nobody holds (left by killed pulls), skipping anything locked.
    pub fn gc(&self) -> Result<GcSummary, CacheError> {
        let mut summary = GcSummary::default();
        if !self.root.join("locks").is_dir() {
            return Ok(summary);
        }
        let referenced: Vec<String> = self.refs()?.into_iter().map(|r| r.digest).collect();
        let remove = |path: &Path, summary: &mut GcSummary| -> Result<(), CacheError> {
            let size = fs::symlink_metadata(path).map_or(0, |m| m.len());
            let result = if path.is_dir() {
                fs::remove_dir_all(path)
            } else {
                fs::remove_file(path)
            };
            match result {
                Ok(()) => {
                    summary.bytes += size;
                    Ok(())
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(source) => Err(CacheError::Io {
                    step: "removing",
                    path: path.to_owned(),
                    source,
                }),
            }
        };
        for (name, path) in self.image_files()? {
            let Some(hex) = image_key_of(&name) else {
                continue;
            };
            let temp = name.starts_with('.');
            if !temp && referenced.contains(&format!("sha256:{hex}")) {
                continue;
            }
            // A pull holds this lock from its first byte to its name.
            let Some(_lock) = self.try_lock(hex)? else {
                continue;
            };
            // Re-check under the lock: a name may have just been written.
            if !temp
                && self
                    .refs()?
                    .iter()
                    .any(|r| r.digest == format!("sha256:{hex}"))
            {
                continue;
            }
            remove(&path, &mut summary)?;
            if temp {
                summary.temp.push(path);
            } else if name.ends_with(".sqfs") {
                summary.images.push(format!("sha256:{hex}"));
            }
        }
        let tmp = self.root.join("tmp");
        if let Ok(entries) = fs::read_dir(&tmp) {
            for entry in entries.flatten() {
                let key = entry.file_name().to_string_lossy().into_owned();
                let Some(_lock) = self.try_lock(&key)? else {
                    continue;
                };
                let path = entry.path();
                remove(&path, &mut summary)?;
                summary.temp.push(path);
            }
        }
        sync_dir(&self.root.join("images"))?;
        Ok(summary)
    }
}

/// The cached image file for a name or `docker://` reference, if complete.
/// No threads, no network: `cairn run` calls this before unsharing.
pub fn lookup(cache: &Cache, name: &str) -> Option<PathBuf> {
    let record = cache.read_ref(name)?;
    let digest = Digest::parse(&record.digest).ok()?;
    let path = cache.image_path(&digest);
    path.is_file().then_some(path)
}

/// A private directory of the cache's tmp area for one operation (an
/// import's image, a build's work, a push's layers), locked so that `gc`
/// leaves it alone, and removed with all it holds when dropped (a failed
/// operation leaves nothing). Made anew, 0700: a name already there is not
/// this operation's, and what it holds may be files only the user may
/// read.
#[derive(Debug)]
pub struct Staging {
    pub dir: PathBuf,
    _lock: KeyLock,
}

impl Drop for Staging {
    fn drop(&mut self) {
        crate::squashfs::extract::remove_tree(&self.dir);
        if let Err(e) = fs::remove_dir(&self.dir)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!("cannot remove {}: {e}", self.dir.display());
        }
    }
}

/// A place for `cairn import --name` to write its squashfs; hand it to
/// [`store_import`] once written.
#[derive(Debug)]
pub struct ImportSlot {
    pub path: PathBuf,
    _staging: Staging,
}

impl Cache {
    /// A [`Staging`] directory named after `kind` and this process.
    pub fn staging(&self, kind: &str) -> Result<Staging, CacheError> {
        use std::os::unix::fs::DirBuilderExt;
        self.create()?;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let key = format!("{kind}-{}-{nanos:08x}", std::process::id());
        let lock = self.lock(&key)?;
        let dir = self.staging_dir(&key);
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(io_err("creating", &dir))?;
        Ok(Staging { dir, _lock: lock })
    }

    pub fn import_slot(&self) -> Result<ImportSlot, CacheError> {
        let staging = self.staging("import")?;
        Ok(ImportSlot {
            path: staging.dir.join("image.sqfs"),
            _staging: staging,
        })
    }
}

/// Moves an imported squashfs into the cache under `name`. The image is
/// keyed by `digest` (the manifest's) when known, else by the file's own
/// sha256. Returns the cached path.
pub fn store_import(
    cache: &Cache,
    slot: ImportSlot,
    name: &str,
    digest: Option<Digest>,
    source: &str,
) -> Result<PathBuf, CacheError> {
    let digest = match digest {
        Some(d) => d,
        None => {
            let file = File::open(&slot.path).map_err(io_err("opening", &slot.path))?;
            let mut hashing = crate::image::digest::HashingReader::new(file);
            io::copy(&mut hashing, &mut io::sink()).map_err(io_err("reading", &slot.path))?;
            hashing.finish().0
        }
    };
    let _lock = cache.lock(digest.hex())?;
    let target = cache.image_path(&digest);
    let size = fs::metadata(&slot.path)
        .map_err(io_err("reading", &slot.path))?
        .len();
    fs::rename(&slot.path, &target).map_err(io_err("renaming onto", &target))?;
    sync_dir(&cache.root.join("images"))?;
    cache.write_record(
        &ImageRecord {
            digest: digest.to_string(),
            source: source.to_owned(),
            size,
            stored: now(),
        },
        &digest,
    )?;
    cache.set_ref(name, &digest)?;
    drop(slot);
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_names_as_single_file_names() {
        assert_eq!(
            encode_name("docker.io/library/ubuntu:24.04"),
            "docker.io%2Flibrary%2Fubuntu:24.04"
        );
        assert_eq!(encode_name("../x"), "%2E.%2Fx");
        assert_eq!(encode_name("a b%"), "a%20b%25");
        assert!(!encode_name("/etc/passwd").contains('/'));
    }

    #[test]
    fn image_keys() {
        let hex = "ab".repeat(32);
        assert_eq!(
            image_key_of(&format!("sha256-{hex}.sqfs")),
            Some(hex.as_str())
        );
        assert_eq!(
            image_key_of(&format!("sha256-{hex}.json")),
            Some(hex.as_str())
        );
        assert_eq!(
            image_key_of(&format!(".sha256-{hex}.sqfs.cairn-12-0000abcd.tmp")),
            Some(hex.as_str())
        );
        assert_eq!(image_key_of("sha256-xyz.sqfs"), None);
        assert_eq!(image_key_of("other"), None);
    }

    #[test]
    fn formats_times() {
        assert_eq!(format_time(0), "1970-01-01 00:00");
        assert_eq!(format_time(951_782_400), "2000-02-29 00:00");
        assert_eq!(format_time(1_764_374_400 + 3600 + 120), "2025-11-29 01:02");
    }

    #[test]
    fn candidate_names_cover_literal_and_canonical() {
        assert_eq!(
            candidate_names("ubuntu"),
            vec!["ubuntu", "docker.io/library/ubuntu:latest"]
        );
        assert_eq!(
            candidate_names("docker://ubuntu:24.04"),
            vec!["docker.io/library/ubuntu:24.04"]
        );
        assert_eq!(candidate_names("My Image"), vec!["My Image"]);
    }

    #[test]
    fn refs_images_rm_gc_and_lookup() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = Cache::at(dir.path());
        assert_eq!(lookup(&cache, "x"), None);
        assert_eq!(cache.list().expect("list"), vec![]);
        cache.create().expect("create");
        let d = Digest::of_bytes(b"image");
        // A name written before its image is not listed nor found.
        cache
            .set_ref("docker.io/library/x:latest", &d)
            .expect("ref");
        assert_eq!(lookup(&cache, "x"), None);
        assert!(cache.list().expect("list").is_empty());
        fs::write(cache.image_path(&d), b"sqfs").expect("image");
        assert_eq!(lookup(&cache, "x"), Some(cache.image_path(&d)));
        assert_eq!(
            lookup(&cache, "docker://x:latest"),
            Some(cache.image_path(&d))
        );
        let listed = cache.list().expect("list");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].size, 4);
        // gc keeps named images, removes unnamed ones and unlocked temps.
        let orphan = Digest::of_bytes(b"orphan");
        fs::write(cache.image_path(&orphan), b"old").expect("orphan");
        let temp = dir
            .path()
            .join("images")
            .join(format!(".sha256-{}.sqfs.cairn-1-0.tmp", orphan.hex()));
        fs::write(&temp, b"partial").expect("temp");
        fs::create_dir_all(cache.staging_dir("busy")).expect("staging");
        fs::create_dir_all(cache.staging_dir("dead")).expect("staging");
        let busy = cache.lock("busy").expect("lock");
        let summary = cache.gc().expect("gc");
        assert_eq!(summary.images, vec![orphan.to_string()]);
        assert!(!temp.exists());
        assert!(cache.staging_dir("busy").exists());
        assert!(!cache.staging_dir("dead").exists());
        assert!(cache.image_path(&d).exists());
        drop(busy);
        // rm by short name, then gc takes the image.
        assert_eq!(cache.remove_ref("x").expect("rm").digest, d.to_string());
        assert!(cache.remove_ref("x").is_err());
        assert_eq!(cache.gc().expect("gc").images, vec![d.to_string()]);
        assert!(cache.list().expect("list").is_empty());
    }

    #[test]
    fn locks_exclude_each_other() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = Cache::at(dir.path());
        cache.create().expect("create");
        let held = cache.lock("k").expect("lock");
        assert!(cache.try_lock("k").expect("try").is_none());
        drop(held);
        assert!(cache.try_lock("k").expect("try").is_some());
    }

    #[test]
    fn store_import_keys_by_content() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = Cache::at(dir.path());
        let slot = cache.import_slot().expect("slot");
        fs::write(&slot.path, b"squashfs bytes").expect("write");
        let path = store_import(&cache, slot, "mine", None, "dir:/x").expect("store");
        assert_eq!(path, cache.image_path(&Digest::of_bytes(b"squashfs bytes")));
        assert_eq!(lookup(&cache, "mine"), Some(path));
        assert!(cache.gc().expect("gc").temp.is_empty());
    }
}
