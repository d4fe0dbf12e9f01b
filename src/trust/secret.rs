//! The per-user secret: 32 random bytes in a 0600 file (`secret`) in one
//! of the caller's checked private directories ([`super::OwnDir`]).
//!
//! Why a secret: a check of who owns a file can be made, but bytes read
//! back from a place others can reach are better not trusted on ownership
//! alone (an admin's copy, a restored backup, a directory that was once
//! open). A MAC under a key only the user can read makes a block or an
//! index written by anyone else fail to verify, and a rendezvous name
//! derived from it cannot be guessed in advance by another user.
//!
//! Each use derives its own key (BLAKE3's key derivation with a context
//! string), so a MAC made for one purpose never verifies for another.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use rustix::fs::OFlags;

use super::dir::{OwnDir, TrustError};

const FILE: &str = "secret";
const LEN: usize = 32;

/// The user's secret. Its `Debug` shows nothing of it; shared, not copied,
/// by the options that carry it.
#[derive(Clone, PartialEq, Eq)]
pub struct UserSecret(std::sync::Arc<[u8; LEN]>);

impl std::fmt::Debug for UserSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UserSecret(..)")
    }
}

/// A key derived from the secret for one purpose.
#[derive(Clone, PartialEq, Eq)]
pub struct MacKey([u8; LEN]);

impl std::fmt::Debug for MacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MacKey(..)")
    }
}

impl MacKey {
    /// A keyed BLAKE3 hasher: feed it, then `finalize()`.
    pub fn hasher(&self) -> blake3::Hasher {
        blake3::Hasher::new_keyed(&self.0)
    }

    /// The MAC of `parts`, each prefixed by its length (so that parts
    /// cannot be shifted into one another).
    pub fn mac(&self, parts: &[&[u8]]) -> [u8; LEN] {
        hash_parts(self.hasher(), parts)
    }
}

/// `parts` through `h`, each prefixed by its length (so that parts cannot
/// be shifted into one another): [`MacKey::mac`] with a keyed hasher, a
/// plain hash of the same parts with an unkeyed one.
pub fn hash_parts(mut h: blake3::Hasher, parts: &[&[u8]]) -> [u8; LEN] {
    for p in parts {
        h.update(&(p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize().into()
}

/// The first 128 bits of `digest` in hex: how a name derived from a MAC or
/// an identity is spelt (the rendezvous sockets, the block store's files).
pub fn short_hex(digest: &[u8]) -> String {
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

impl UserSecret {
    /// A secret from known bytes (tests, and a second user's in tests).
    pub fn from_bytes(bytes: [u8; LEN]) -> UserSecret {
        UserSecret(std::sync::Arc::new(bytes))
    }

    /// The key for `purpose` (a fixed, unique context string such as
    /// `"cairn 2026 block store"`).
    pub fn key(&self, purpose: &str) -> MacKey {
        MacKey(blake3::derive_key(purpose, &self.0[..]))
    }

    /// The secret kept in `dir`, created there if it has none yet. Two
    /// processes creating it at once agree on one: each writes its own to
    /// a temporary name and links it into place, and the loser reads the
    /// winner's.
    pub fn in_dir(dir: &OwnDir) -> Result<UserSecret, TrustError> {
        let io = |step: &'static str| {
            let path = dir.path().join(FILE);
            move |source: std::io::Error| TrustError::Io { step, path, source }
        };
        if let Some(secret) = read(dir).map_err(io("read"))? {
            return Ok(secret);
        }
        let mut bytes = [0u8; LEN];
        getrandom(&mut bytes).map_err(io("draw random bytes for"))?;
        let temp = format!(".{FILE}.{}.tmp", std::process::id());
        let mut file = dir.create_file(&temp).map_err(io("create"))?;
        let written = file
            .write_all(&bytes)
            .and_then(|()| file.sync_all())
            .and_then(|()| dir.link_as(&file, FILE));
        let _ = dir.remove(temp.as_ref());
        match written {
            Ok(()) => Ok(UserSecret::from_bytes(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read(dir)
                .map_err(io("read"))?
                .ok_or_else(|| io("read")(std::io::Error::other("not a secret of this user"))),
            Err(e) => Err(io("create")(e)),
        }
    }

    /// The secret of the first of `dirs` that is the caller's own private
    /// directory (created when missing). A directory that fails the checks
    /// is skipped with a warning that says why; `None` when none will do,
    /// and what needs the secret then goes without.
    pub fn find(dirs: &[PathBuf], caller: u32) -> Option<UserSecret> {
        for d in dirs {
            match OwnDir::open(d, caller, true).and_then(|dir| UserSecret::in_dir(&dir)) {
                Ok(s) => return Some(s),
                Err(e) => tracing::warn!("not keeping cairn's per-user secret there: {e}"),
            }
        }
        None
    }
}

/// The secret file, if there is a whole one of the caller's own.
fn read(dir: &OwnDir) -> std::io::Result<Option<UserSecret>> {
    let Some(mut file) = dir.open_own_file(FILE, OFlags::RDONLY)? else {
        return Ok(None);
    };
    let mut bytes = Vec::with_capacity(LEN + 1);
    Read::by_ref(&mut file)
        .take(LEN as u64 + 1)
        .read_to_end(&mut bytes)?;
    Ok(<[u8; LEN]>::try_from(bytes.as_slice())
        .ok()
        .map(UserSecret::from_bytes))
}

fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = buf.get_mut(filled..).unwrap_or_default();
        filled += rustix::rand::getrandom(rest, rustix::rand::GetRandomFlags::empty())?;
    }
    Ok(())
}

/// The directories the secret is looked for in, in order (pure): the
/// node-local private directory (fast, off the shared home's file
/// servers, read by every rank of a job), then one in the user's home for
/// when another user has squatted the node-local name.
pub fn default_dirs(user: Option<&str>, home: Option<&Path>) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(u) = user.filter(|u| !u.is_empty() && !u.contains('/')) {
        dirs.push(PathBuf::from(format!("/var/tmp/cairn-{u}")));
    }
    if let Some(h) = home.filter(|h| h.is_absolute()) {
        dirs.push(h.join(".cache/cairn/private"));
    }
    dirs
}
