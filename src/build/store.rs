//! `cairn build`'s cache, in the image cache under `build/`:
//!
//! - `steps/<key>.json`: one instruction's result ([`StepRecord`]), keyed
//!   by the hash of everything it depends on (see `engine`);
//! - `layers/sha256-<hex>.tar`: the layers the steps wrote, uncompressed,
//!   named by their sha256 (their `diff_id`), so equal layers are stored
//!   once;
//! - `bases/sha256-<hex>.json` and `layers/sha256-<hex>.tar.gz`: a base
//!   image (a cached squashfs) as one gzip layer, made the first time a
//!   build on it is flattened, for that and for `cairn push`;
//! - `images/<key>.json`: the image a whole build made ([`FinalRecord`]):
//!   a rebuild with nothing changed finds it and runs nothing.
//!
//! Every record is written atomically after the file it names, so a
//! record never names a missing or partial layer; a build that fails
//! writes no record for its failed step.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use std::io::Write;

use crate::image::cache::{Cache, CacheError, now, write_atomic};
use crate::image::digest::{Digest, HashingWriter};
use crate::image::meta::ImageMeta;
use crate::image::pargz::ParallelGz;
use crate::image::push::BlobLayer;

use super::{IoFailure, io_err};

/// The media type of a built image's base in its stored layer list: the
/// base is named by its squashfs image's digest, and becomes a gzip layer
/// only when the image is pushed.
pub const MEDIA_SQUASHFS_BASE: &str = "application/vnd.cairn.base.squashfs";

/// Bumped when what a step stores changes meaning: older records are then
/// misses.
pub const STEP_FORMAT: u32 = 1;

/// A layer a step wrote (absent when the step changed no file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRef {
    /// `sha256:<hex>` of the uncompressed tar.
    pub diff_id: String,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub format: u32,
    /// The instruction as run (after expansion), for `cairn build-cache`.
    pub instruction: String,
    pub layer: Option<LayerRef>,
    /// Seconds since the epoch when it was stored.
    pub created: u64,
    /// How long the step took when it ran.
    pub seconds: f64,
}

/// A base image as a gzip layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseRecord {
    pub diff_id: String,
    /// `sha256:<hex>` of the gzip blob (its file's name).
    pub digest: String,
    pub size: u64,
}

/// A file's sha256 by its identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct FileRecord {
    identity: String,
    digest: String,
}

/// The image a build made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalRecord {
    /// The image's key in the image cache.
    pub image: String,
    pub created: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Io(#[from] IoFailure),
    #[error("encoding {what}")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

/// The build cache of one image cache.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    /// The image cache's images (a base of the cache is found there).
    images: PathBuf,
}

/// Reads and parses a JSON record; a missing or unreadable one is `None`
/// (a miss: the step runs again and writes it anew).
fn read_record<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    let bytes = fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn write_record<T: Serialize>(
    path: &Path,
    what: &'static str,
    value: &T,
) -> Result<(), StoreError> {
    let mut bytes =
        serde_json::to_vec_pretty(value).map_err(|source| StoreError::Encode { what, source })?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)?;
    Ok(())
}

impl Store {
    pub fn of(cache: &Cache) -> Store {
        Store {
            root: cache.root().join("build"),
            images: cache.root().join("images"),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates the store's directories (idempotent).
    pub fn create(&self) -> Result<(), StoreError> {
        for sub in ["steps", "layers", "bases", "images"] {
            let p = self.root.join(sub);
            fs::create_dir_all(&p).map_err(io_err("creating", &p))?;
        }
        Ok(())
    }

    fn step_path(&self, key: &str) -> PathBuf {
        self.root.join("steps").join(format!("{key}.json"))
    }

    /// The path of a stored layer by its digest (`.tar` or `.tar.gz`).
    pub fn layer_path(&self, digest: &Digest, gzip: bool) -> PathBuf {
        let ext = if gzip { "tar.gz" } else { "tar" };
        self.root
            .join("layers")
            .join(format!("sha256-{}.{ext}", digest.hex()))
    }

    /// A step's record, if stored, of this format and with its layer file
    /// present.
    pub fn step(&self, key: &str) -> Option<StepRecord> {
        let record: StepRecord = read_record(&self.step_path(key))?;
        if record.format != STEP_FORMAT {
            return None;
        }
        if let Some(layer) = &record.layer {
            let digest = Digest::parse(&layer.diff_id).ok()?;
            if !self.layer_path(&digest, false).is_file() {
                return None;
            }
        }
        Some(record)
    }

    pub fn put_step(&self, key: &str, record: &StepRecord) -> Result<(), StoreError> {
        write_record(&self.step_path(key), "a build step", record)
    }

    /// Moves a written layer file into the store under its digest.
    pub fn put_layer(
        &self,
        file: &Path,
        digest: &Digest,
        gzip: bool,
    ) -> Result<PathBuf, StoreError> {
        let target = self.layer_path(digest, gzip);
        fs::rename(file, &target).map_err(io_err("storing the layer", &target))?;
        Ok(target)
    }

    fn base_path(&self, image: &Digest) -> PathBuf {
        self.root
            .join("bases")
            .join(format!("sha256-{}.json", image.hex()))
    }

    /// A base image's layer, if exported before and still there.
    pub fn base(&self, image: &Digest) -> Option<BaseRecord> {
        let record: BaseRecord = read_record(&self.base_path(image))?;
        let digest = Digest::parse(&record.digest).ok()?;
        self.layer_path(&digest, true).is_file().then_some(record)
    }

    pub fn put_base(&self, image: &Digest, record: &BaseRecord) -> Result<(), StoreError> {
        write_record(&self.base_path(image), "a base layer record", record)
    }

    fn final_path(&self, key: &str) -> PathBuf {
        self.root.join("images").join(format!("{key}.json"))
    }

    pub fn final_image(&self, key: &str) -> Option<FinalRecord> {
        read_record(&self.final_path(key))
    }

    pub fn put_final(&self, key: &str, image: &Digest) -> Result<(), StoreError> {
        let record = FinalRecord {
            image: image.to_string(),
            created: now(),
        };
        write_record(&self.final_path(key), "a build's image record", &record)
    }

    fn gzip_path(&self, diff_id: &Digest) -> PathBuf {
        self.root
            .join("gz")
            .join(format!("sha256-{}.json", diff_id.hex()))
    }

    /// The layers of a built image as gzip blobs for `cairn push`: `None`
    /// when `meta` is not a build's or a layer is no longer in the store
    /// (the push then writes the tree as one layer). A step's layer is
    /// stored uncompressed; its gzip is made once (in parallel members,
    /// the same bytes every time) and remembered by its diff_id.
    pub fn blob_layers(&self, meta: &ImageMeta) -> Option<Result<Vec<BlobLayer>, StoreError>> {
        if !meta.source.starts_with("build:") || meta.layers.is_empty() {
            tracing::debug!("not a built image: {}", meta.source);
            return None;
        }
        let mut out = Vec::new();
        for layer in &meta.layers {
            let digest = Digest::parse(layer.digest.as_deref()?).ok()?;
            if layer.media_type.as_deref() == Some(MEDIA_SQUASHFS_BASE) {
                match self.base_blob(&digest)? {
                    Ok(blob) => out.push(blob),
                    Err(e) => return Some(Err(e)),
                }
                continue;
            }
            let diff_id = Digest::parse(layer.diff_id.as_deref()?).ok()?;
            let gzip = layer
                .media_type
                .as_deref()
                .is_some_and(|m| m.ends_with("+gzip"));
            if gzip {
                let path = self.layer_path(&digest, true);
                let size = fs::metadata(&path).ok()?.len();
                out.push(BlobLayer {
                    diff_id,
                    digest,
                    size,
                    path: Some(path),
                });
                continue;
            }
            let tar = self.layer_path(&diff_id, false);
            if !tar.is_file() {
                return None;
            }
            match self.gzip_of(&diff_id, &tar) {
                Ok(blob) => out.push(blob),
                Err(e) => return Some(Err(e)),
            }
        }
        Some(Ok(out))
    }

    /// Where a base image is: the cache's image of that digest, or the
    /// squashfs file a build named (if it still has those bytes).
    fn base_image(&self, image: &Digest) -> Option<PathBuf> {
        let cached = self.images.join(format!("sha256-{}.sqfs", image.hex()));
        if cached.is_file() {
            return Some(cached);
        }
        let path = PathBuf::from(fs::read_to_string(self.base_source_path(image)).ok()?);
        let mut hashing = crate::image::digest::HashingReader::new(fs::File::open(&path).ok()?);
        io::copy(&mut hashing, &mut io::sink()).ok()?;
        (hashing.finish().0 == *image).then_some(path)
    }

    fn base_source_path(&self, image: &Digest) -> PathBuf {
        self.root
            .join("bases")
            .join(format!("sha256-{}.source", image.hex()))
    }

    /// Remembers the squashfs file a base image came from (a `FROM
    /// /path.sqfs`), for a push of what was built on it.
    pub fn put_base_source(&self, image: &Digest, path: &Path) {
        let file = self.base_source_path(image);
        if fs::read(&file).is_ok_and(|known| known == path.as_os_str().as_encoded_bytes()) {
            return;
        }
        if let Err(e) = write_atomic(&file, path.as_os_str().as_encoded_bytes()) {
            tracing::debug!("cannot remember where the base {image} is: {e}");
        }
    }

    /// The base image's gzip layer, exported now if it is not yet; `None`
    /// when the base image is gone.
    fn base_blob(&self, image: &Digest) -> Option<Result<BlobLayer, StoreError>> {
        let blob = |record: &BaseRecord| -> Option<BlobLayer> {
            let digest = Digest::parse(&record.digest).ok()?;
            Some(BlobLayer {
                diff_id: Digest::parse(&record.diff_id).ok()?,
                path: Some(self.layer_path(&digest, true)),
                digest,
                size: record.size,
            })
        };
        if let Some(record) = self.base(image) {
            return blob(&record).map(Ok);
        }
        let Some(path) = self.base_image(image) else {
            tracing::debug!("the base image {image} is gone: its layer cannot be made");
            return None;
        };
        let exported = (|| -> Result<BaseRecord, StoreError> {
            let archive = crate::squashfs::reader::Archive::open(&path)
                .map_err(|e| io_err("opening", &path)(io::Error::other(e)))?;
            let dir = self.root.join("bases");
            let temp = dir.join(format!(".{}.{}.tmp", image.hex(), std::process::id()));
            let out =
                io::BufWriter::new(fs::File::create(&temp).map_err(io_err("creating", &temp))?);
            let layer = crate::image::export::write_layer(&archive, out).map_err(|e| {
                let _ = fs::remove_file(&temp);
                StoreError::from(io_err("exporting", &path)(io::Error::other(e)))
            })?;
            self.put_layer(&temp, &layer.digest, true)?;
            let record = BaseRecord {
                diff_id: layer.diff_id.to_string(),
                digest: layer.digest.to_string(),
                size: layer.size,
            };
            self.put_base(image, &record)?;
            Ok(record)
        })();
        Some(exported.and_then(|record| {
            blob(&record).ok_or_else(|| {
                io_err("reading the record of", &path)(io::Error::other("bad digest")).into()
            })
        }))
    }

    /// The gzip blob of the stored tar `tar`, made now if it is not yet.
    fn gzip_of(&self, diff_id: &Digest, tar: &Path) -> Result<BlobLayer, StoreError> {
        let record_path = self.gzip_path(diff_id);
        if let Some(record) = read_record::<BaseRecord>(&record_path)
            && let Ok(digest) = Digest::parse(&record.digest)
        {
            let path = self.layer_path(&digest, true);
            if path.is_file() {
                return Ok(BlobLayer {
                    diff_id: diff_id.clone(),
                    digest,
                    size: record.size,
                    path: Some(path),
                });
            }
        }
        let dir = self.root.join("gz");
        fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
        let temp = dir.join(format!(".{}.{}.tmp", diff_id.hex(), std::process::id()));
        let written = (|| -> io::Result<(Digest, u64)> {
            let mut input = fs::File::open(tar)?;
            let out = io::BufWriter::new(fs::File::create(&temp)?);
            let mut gz = ParallelGz::new(HashingWriter::new(out), flate2::Compression::default());
            io::copy(&mut input, &mut gz)?;
            let (mut out, digest, size) = gz.finish()?.into_parts();
            out.flush()?;
            Ok((digest, size))
        })();
        let (digest, size) = match written {
            Ok(done) => done,
            Err(source) => {
                let _ = fs::remove_file(&temp);
                return Err(io_err("compressing", tar)(source).into());
            }
        };
        let path = self.put_layer(&temp, &digest, true)?;
        write_record(
            &record_path,
            "a layer's gzip record",
            &BaseRecord {
                diff_id: diff_id.to_string(),
                digest: digest.to_string(),
                size,
            },
        )?;
        Ok(BlobLayer {
            diff_id: diff_id.clone(),
            digest,
            size,
            path: Some(path),
        })
    }

    fn file_digest_path(&self, identity: &str) -> PathBuf {
        let key = Digest::of_bytes(identity.as_bytes());
        self.root.join("files").join(format!("{}.json", key.hex()))
    }

    /// The sha256 remembered for a file by its identity (see
    /// `engine::squashfs_file`).
    pub fn file_digest(&self, identity: &str) -> Option<Digest> {
        let record: FileRecord = read_record(&self.file_digest_path(identity))?;
        (record.identity == identity)
            .then(|| Digest::parse(&record.digest).ok())
            .flatten()
    }

    /// Remembers a file's sha256; a failure only costs a rehash.
    pub fn put_file_digest(&self, identity: &str, digest: &Digest) {
        let path = self.file_digest_path(identity);
        let record = FileRecord {
            identity: identity.to_owned(),
            digest: digest.to_string(),
        };
        let written = path
            .parent()
            .map_or(Ok(()), fs::create_dir_all)
            .map_err(|e| e.to_string())
            .and_then(|()| {
                write_record(&path, "a file digest", &record).map_err(|e| e.to_string())
            });
        if let Err(e) = written {
            tracing::debug!("cannot remember the digest of a base file: {e}");
        }
    }

    /// What `cairn build-cache` lists: every step record with its key.
    pub fn steps(&self) -> Vec<(String, StepRecord)> {
        let mut out = Vec::new();
        let Ok(entries) = fs::read_dir(self.root.join("steps")) else {
            return out;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(key) = name.strip_suffix(".json") else {
                continue;
            };
            if let Some(record) = read_record::<StepRecord>(&entry.path()) {
                out.push((key.to_owned(), record));
            }
        }
        out.sort_by(|a, b| a.1.created.cmp(&b.1.created).then(a.0.cmp(&b.0)));
        out
    }

    /// Bytes of every stored layer file.
    pub fn layer_bytes(&self) -> u64 {
        fs::read_dir(self.root.join("layers"))
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }

    /// Removes step records older than `before` (seconds since the epoch;
    /// `u64::MAX`: all of them, and the base layers and image records too),
    /// then every layer file no remaining record names. Returns the records
    /// and the bytes of layer files removed.
    pub fn prune(&self, before: u64) -> Result<(usize, u64), StoreError> {
        self.prune_aged(before, 0)
    }

    /// What `cairn gc` does to the build cache: layer files no record
    /// names, left by a build that failed or was killed. Files younger than
    /// an hour stay: a running build writes a layer before its record.
    pub fn gc(&self) -> Result<u64, StoreError> {
        self.prune_aged(0, 3600).map(|(_, bytes)| bytes)
    }

    fn prune_aged(&self, before: u64, min_age: u64) -> Result<(usize, u64), StoreError> {
        let mut removed = 0;
        let mut keep: Vec<String> = Vec::new();
        for (key, record) in self.steps() {
            if record.created < before {
                let path = self.step_path(&key);
                fs::remove_file(&path).map_err(io_err("removing", &path))?;
                removed += 1;
            } else if let Some(layer) = record.layer {
                keep.push(layer.diff_id);
            }
        }
        for sub in ["bases", "images", "gz"] {
            let Ok(entries) = fs::read_dir(self.root.join(sub)) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let record = read_record::<BaseRecord>(&path);
                // A step layer's gzip lives as long as the layer.
                let kept = match (sub, &record) {
                    ("gz", Some(gz)) => before != u64::MAX && keep.contains(&gz.diff_id),
                    _ => before != u64::MAX,
                };
                if !kept {
                    fs::remove_file(&path).map_err(io_err("removing", &path))?;
                } else if let Some(record) = record {
                    keep.push(record.digest);
                }
            }
        }
        let mut bytes = 0;
        if let Ok(entries) = fs::read_dir(self.root.join("layers")) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some(hex) = name
                    .strip_prefix("sha256-")
                    .and_then(|n| n.split('.').next())
                else {
                    continue;
                };
                if keep.iter().any(|k| k == &format!("sha256:{hex}")) {
                    continue;
                }
                let age = entry
                    .metadata()
                    .ok()
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| t.elapsed().ok())
                    .map_or(0, |d| d.as_secs());
                if age < min_age {
                    continue;
                }
                let path = entry.path();
                bytes += entry.metadata().map_or(0, |m| m.len());
                fs::remove_file(&path).map_err(io_err("removing", &path))?;
            }
        }
        Ok((removed, bytes))
    }
}
