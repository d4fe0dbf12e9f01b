//! What a run learned of a squashfs image before any namespace existed,
//! kept for the image's next runs.
//!
//! Why: `prepare` asks the image a few dozen questions (its stored config,
//! `/etc/passwd` and `/etc/group`, what `/tmp`, `/home`, `/etc/hosts`...
//! are, where a bind's destination leads). Through cairn's reader each one
//! walks directories in compressed metadata blocks, and the small files
//! live in fragment blocks that must be decompressed whole: on a Debian
//! image about 1.2 ms, most of a warm run's own CPU time. The answers
//! depend only on the image's bytes, so they are kept per image identity
//! (the block store's: device, inode, size, times and superblock, so an
//! image rewritten in place is a new image) and the next run answers from
//! them, asking the image only what no run has asked before.
//!
//! They live beside the block store (the same directory, reached through
//! the same checked handles, under the same budget and pruning), one small
//! file per image, `<identity>.facts`: a magic, a MAC under a key derived
//! from the user's secret and bound to the identity, then the answers. A
//! file that does not verify (another user's, another image's, damaged) is
//! ignored and replaced; nothing is taken from it.
//!
//! Answers, after the MAC: records of a tag byte, a path (u32 length, then
//! bytes) and the answer: for `kind` one byte; for a link target, a file's
//! bytes or the stored config, a presence byte then (u32 length, bytes).

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use rustix::fs::OFlags;

use crate::image::meta::{ImageMeta, MetaError};
use crate::run::tree::{ImageTree, Kind, SquashTree};
use crate::squashfs::reader::Identity;
use crate::trust::secret::MacKey;
use crate::trust::{OwnDir, UserSecret};

const MAGIC: &[u8; 8] = b"CAIRNFC1";
const MAC_LEN: usize = 32;
/// The context the facts' MAC key is derived under.
const PURPOSE: &str = "cairn 2026-12 image facts v1";
/// Facts larger than this are not kept (an image whose passwd is
/// megabytes just answers from its own bytes each run).
const MAX_FILE: usize = 1 << 20;

const TAG_KIND: u8 = 1;
const TAG_LINK: u8 = 2;
const TAG_FILE: u8 = 3;
const TAG_META: u8 = 4;

/// The answers an image gave, by the path asked about (bytes, as inside).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Facts {
    kinds: BTreeMap<Vec<u8>, Option<Kind>>,
    links: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    files: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// The stored config's bytes (`Some(None)`: the image has none).
    meta: Option<Option<Vec<u8>>>,
}

fn kind_byte(kind: Option<Kind>) -> u8 {
    match kind {
        None => 0,
        Some(Kind::Dir) => 1,
        Some(Kind::File) => 2,
        Some(Kind::Symlink) => 3,
        Some(Kind::Other) => 4,
    }
}

fn byte_kind(b: u8) -> Option<Option<Kind>> {
    Some(match b {
        0 => None,
        1 => Some(Kind::Dir),
        2 => Some(Kind::File),
        3 => Some(Kind::Symlink),
        4 => Some(Kind::Other),
        _ => return None,
    })
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    // Lengths fit: nothing over MAX_READ is ever recorded.
    out.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn put_maybe(out: &mut Vec<u8>, value: &Option<Vec<u8>>) {
    match value {
        None => out.push(0),
        Some(bytes) => {
            out.push(1);
            put_bytes(out, bytes);
        }
    }
}

/// A cursor over the answers; `None` from any read means "not whole".
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = self.0.get(..4)?;
        let len = usize::try_from(u32::from_le_bytes(len.try_into().ok()?)).ok()?;
        let rest = &self.0[4..];
        if len > rest.len() {
            return None;
        }
        let (bytes, rest) = rest.split_at(len);
        self.0 = rest;
        Some(bytes)
    }

    fn maybe(&mut self) -> Option<Option<Vec<u8>>> {
        match self.byte()? {
            0 => Some(None),
            1 => Some(Some(self.bytes()?.to_vec())),
            _ => None,
        }
    }
}

impl Facts {
    /// Set the answer of reading the file `inside` (how the tests forge
    /// kept facts).
    pub fn set_file(&mut self, inside: &[u8], bytes: Option<Vec<u8>>) {
        self.files.insert(inside.to_vec(), bytes);
    }

    /// The answers as bytes (deterministic: sorted by path).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (path, kind) in &self.kinds {
            out.push(TAG_KIND);
            put_bytes(&mut out, path);
            out.push(kind_byte(*kind));
        }
        for (tag, map) in [(TAG_LINK, &self.links), (TAG_FILE, &self.files)] {
            for (path, value) in map {
                out.push(tag);
                put_bytes(&mut out, path);
                put_maybe(&mut out, value);
            }
        }
        if let Some(meta) = &self.meta {
            out.push(TAG_META);
            put_bytes(&mut out, b"");
            put_maybe(&mut out, meta);
        }
        out
    }

    /// The answers from bytes [`Facts::encode`] wrote; `None` for anything
    /// else (the caller then asks the image).
    pub fn decode(bytes: &[u8]) -> Option<Facts> {
        let mut facts = Facts::default();
        let mut at = Cursor(bytes);
        while let Some(tag) = at.byte() {
            let path = at.bytes()?.to_vec();
            match tag {
                TAG_KIND => {
                    facts.kinds.insert(path, byte_kind(at.byte()?)?);
                }
                TAG_LINK => {
                    facts.links.insert(path, at.maybe()?);
                }
                TAG_FILE => {
                    facts.files.insert(path, at.maybe()?);
                }
                TAG_META if path.is_empty() => facts.meta = Some(at.maybe()?),
                _ => return None,
            }
        }
        Some(facts)
    }
}

/// The name of image `identity`'s facts file.
fn file_name(identity: &Identity) -> String {
    format!("{}.facts", crate::trust::secret::short_hex(identity))
}

fn mac(key: &MacKey, identity: &Identity, answers: &[u8]) -> [u8; MAC_LEN] {
    key.mac(&[b"facts", identity, answers])
}

/// A facts file's bytes: magic, MAC, answers; `None` when too large to
/// keep.
fn seal(key: &MacKey, identity: &Identity, facts: &Facts) -> Option<Vec<u8>> {
    let answers = facts.encode();
    if answers.len() > MAX_FILE - MAGIC.len() - MAC_LEN {
        return None;
    }
    let mut out = Vec::with_capacity(MAGIC.len() + MAC_LEN + answers.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&mac(key, identity, &answers));
    out.extend_from_slice(&answers);
    Some(out)
}

/// The facts in a file's bytes, if they are whole and their MAC verifies
/// for this image under this key.
fn unseal(key: &MacKey, identity: &Identity, bytes: &[u8]) -> Option<Facts> {
    let rest = bytes.strip_prefix(MAGIC)?;
    let (got, answers) = rest.split_at_checked(MAC_LEN)?;
    let got: [u8; MAC_LEN] = got.try_into().ok()?;
    // blake3's Hash compares in constant time.
    if blake3::Hash::from_bytes(got) != blake3::Hash::from_bytes(mac(key, identity, answers)) {
        return None;
    }
    Facts::decode(answers)
}

/// The name and bytes of the facts file that holds `facts` for image
/// `identity` under `secret`: what a run of its owner writes (the tests
/// forge files with it, under the owner's key and under a stranger's).
pub fn sealed(
    facts: &Facts,
    secret: &UserSecret,
    identity: &Identity,
) -> Option<(String, Vec<u8>)> {
    let bytes = seal(&secret.key(PURPOSE), identity, facts)?;
    Some((file_name(identity), bytes))
}

/// Where an image's facts are kept: its file in the block store's
/// directory, and the key its MAC is made with.
pub struct FactsFile {
    dir: OwnDir,
    name: String,
    key: MacKey,
    identity: Identity,
}

impl FactsFile {
    /// The facts file of the image `identity` in `dir` (the block store's
    /// directory, which the CLI has checked), with what it holds when it
    /// verifies. `None` when the directory cannot be used: the run then
    /// asks the image, as without a store.
    pub fn open(
        dir: &Path,
        secret: &UserSecret,
        identity: &Identity,
        caller: u32,
    ) -> Option<(FactsFile, Facts)> {
        let dir = OwnDir::open(dir, caller, false).ok()?;
        let file = FactsFile {
            name: file_name(identity),
            dir,
            key: secret.key(PURPOSE),
            identity: *identity,
        };
        let facts = file.read().unwrap_or_default();
        Some((file, facts))
    }

    /// The kept facts, if there is a whole file of the user's own whose MAC
    /// verifies for this image.
    fn read(&self) -> Option<Facts> {
        let file = self.dir.open_own_file(&self.name, OFlags::RDONLY).ok()??;
        let mut bytes = Vec::new();
        file.take(MAX_FILE as u64 + 1)
            .read_to_end(&mut bytes)
            .ok()?;
        unseal(&self.key, &self.identity, &bytes)
    }

    /// Keep `facts` for the next runs: written whole under a temporary
    /// name, then renamed over the old file (a reader sees the old or the
    /// new file, never a part). Failures only cost the next run time.
    pub fn save(&self, facts: &Facts) {
        let Some(bytes) = seal(&self.key, &self.identity, facts) else {
            return;
        };
        let temp = format!(".{}.{}.tmp", self.name, std::process::id());
        let written = self.dir.create_file(&temp).and_then(|mut file| {
            file.write_all(&bytes)?;
            self.dir.rename(&temp, &self.name)
        });
        if let Err(e) = written {
            tracing::debug!("image facts not kept in {}: {e}", self.dir.path().display());
            let _ = self.dir.remove(temp.as_ref());
        }
    }
}

/// A squashfs image's tree that answers from kept facts and asks the image
/// only what they lack, learning the answer.
pub struct Remembering<'a> {
    image: &'a SquashTree,
    facts: RefCell<Facts>,
    learned: Cell<bool>,
}

impl<'a> Remembering<'a> {
    pub fn new(image: &'a SquashTree, facts: Facts) -> Self {
        Remembering {
            image,
            facts: RefCell::new(facts),
            learned: Cell::new(false),
        }
    }

    /// Whether earlier runs left any facts (then they read the image).
    pub fn has_facts(&self) -> bool {
        *self.facts.borrow() != Facts::default()
    }

    /// Whether the image was asked anything the facts lacked.
    pub fn learned(&self) -> bool {
        self.learned.get()
    }

    /// The facts, with what this run learned.
    pub fn into_facts(self) -> Facts {
        self.facts.into_inner()
    }

    /// The image's stored config as bytes (`None` when it has none).
    pub fn meta_bytes(&self) -> Result<Option<Vec<u8>>, MetaError> {
        if let Some(meta) = &self.facts.borrow().meta {
            return Ok(meta.clone());
        }
        // Errors are not facts: a run that hits one stops, and the next
        // asks again.
        let archive = self
            .image
            .archive()
            .map_err(|source| MetaError::Archive { source })?;
        let meta = ImageMeta::bytes_from_archive(&archive)?;
        self.facts.borrow_mut().meta = Some(meta.clone());
        self.learned.set(true);
        Ok(meta)
    }

    /// The answer kept in `map` for `inside`, or the image's, learned.
    fn answer<T: Clone>(
        &self,
        map: impl Fn(&mut Facts) -> &mut BTreeMap<Vec<u8>, T>,
        inside: &Path,
        ask: impl FnOnce() -> T,
    ) -> T {
        let key = inside.as_os_str().as_bytes();
        if let Some(known) = map(&mut self.facts.borrow_mut()).get(key) {
            return known.clone();
        }
        let value = ask();
        map(&mut self.facts.borrow_mut()).insert(key.to_vec(), value.clone());
        self.learned.set(true);
        value
    }
}

impl ImageTree for Remembering<'_> {
    fn image_path(&self) -> &Path {
        self.image.image_path()
    }

    fn kind(&self, inside: &Path) -> Option<Kind> {
        self.answer(|f| &mut f.kinds, inside, || self.image.kind(inside))
    }

    fn read_link(&self, inside: &Path) -> Option<PathBuf> {
        self.answer(
            |f| &mut f.links,
            inside,
            || {
                self.image
                    .read_link(inside)
                    .map(|p| p.into_os_string().into_vec())
            },
        )
        .map(|bytes| PathBuf::from(std::ffi::OsString::from_vec(bytes)))
    }

    fn read(&self, inside: &Path) -> Option<Vec<u8>> {
        self.answer(|f| &mut f.files, inside, || self.image.read(inside))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Facts {
        let mut f = Facts::default();
        f.kinds.insert(b"/etc".to_vec(), Some(Kind::Dir));
        f.kinds.insert(b"/nope".to_vec(), None);
        f.kinds.insert(b"/dev/null".to_vec(), Some(Kind::Other));
        f.links.insert(b"/lib".to_vec(), Some(b"usr/lib".to_vec()));
        f.links.insert(b"/etc".to_vec(), None);
        f.files.insert(
            b"/etc/passwd".to_vec(),
            Some(b"root:x:0:0::/:/bin/sh\n".to_vec()),
        );
        f.files.insert(b"/etc/\xffodd".to_vec(), Some(Vec::new()));
        f.meta = Some(Some(b"{\"schema_version\":1}".to_vec()));
        f
    }

    #[test]
    fn facts_round_trip_and_refuse_anything_else() {
        let f = sample();
        let bytes = f.encode();
        assert_eq!(Facts::decode(&bytes), Some(f.clone()));
        assert_eq!(Facts::decode(b""), Some(Facts::default()));
        // Every strict prefix that cuts a record is refused, never read
        // as fewer facts than were written... unless it ends between
        // records, which is a valid shorter list.
        for cut in 0..bytes.len() {
            if let Some(shorter) = Facts::decode(&bytes[..cut]) {
                assert_eq!(Facts::decode(&shorter.encode()), Some(shorter.clone()));
                assert_ne!(shorter, f);
            }
        }
        let mut bad = bytes.clone();
        bad[0] = 9;
        assert_eq!(Facts::decode(&bad), None);
        let no_meta = Facts {
            meta: Some(None),
            ..Facts::default()
        };
        assert_eq!(Facts::decode(&no_meta.encode()), Some(no_meta));
    }

    fn secret(n: u8) -> UserSecret {
        UserSecret::from_bytes([n; 32])
    }

    #[test]
    fn kept_facts_come_back_only_for_the_same_image_and_secret() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("store");
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .expect("chmod");
        let me = crate::sys::process::geteuid();
        let (file, facts) = FactsFile::open(&dir, &secret(1), &[7; 32], me).expect("open");
        assert_eq!(facts, Facts::default());
        file.save(&sample());
        let (_, again) = FactsFile::open(&dir, &secret(1), &[7; 32], me).expect("open");
        assert_eq!(again, sample());
        // Another image, another secret: nothing.
        let (_, other) = FactsFile::open(&dir, &secret(1), &[8; 32], me).expect("open");
        assert_eq!(other, Facts::default());
        let (_, foreign) = FactsFile::open(&dir, &secret(2), &[7; 32], me).expect("open");
        assert_eq!(foreign, Facts::default());
        // A flipped byte anywhere: nothing (and no temporary file left).
        let path = dir.join(&file.name);
        let mut bytes = std::fs::read(&path).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).expect("write");
        let (_, damaged) = FactsFile::open(&dir, &secret(1), &[7; 32], me).expect("open");
        assert_eq!(damaged, Facts::default());
        let names: Vec<_> = std::fs::read_dir(&dir)
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(&file.name)]);
    }
}
