//! Reading inside archives without extracting them: an index of a tar file
//! (oci-archive, docker-archive: a tar of tars) mapping member names to
//! their byte ranges, so a blob is read by seeking to its offset and taking
//! its size; and [`BlobLocation`], where a blob's bytes are (a plain file or
//! an archive member), which can be opened again any number of times.

use super::entry::normalize_path;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("opening archive {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("reading the members of archive {path}")]
    Index {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("archive {path}: member {member:?} has a bad name")]
    Name { path: PathBuf, member: String },
}

/// Where a blob's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobLocation {
    File(PathBuf),
    Member {
        archive: PathBuf,
        offset: u64,
        size: u64,
    },
}

impl BlobLocation {
    /// Opens the blob for one sequential read.
    pub fn open(&self) -> io::Result<Box<dyn Read + Send>> {
        match self {
            BlobLocation::File(path) => Ok(Box::new(File::open(path)?)),
            BlobLocation::Member {
                archive,
                offset,
                size,
            } => {
                let mut file = File::open(archive)?;
                file.seek(SeekFrom::Start(*offset))?;
                Ok(Box::new(file.take(*size)))
            }
        }
    }
}

impl std::fmt::Display for BlobLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BlobLocation::File(p) => write!(f, "{}", p.display()),
            BlobLocation::Member {
                archive, offset, ..
            } => {
                write!(f, "{} at offset {offset}", archive.display())
            }
        }
    }
}

#[derive(Debug, Clone)]
enum Member {
    Data {
        offset: u64,
        size: u64,
    },
    /// A symbolic or hard link to another member (docker save links
    /// identical layers); the target is resolved on lookup.
    Link(Vec<u8>),
    Dir,
}

/// The members of a tar archive, by normalised name.
#[derive(Debug)]
pub struct ArchiveIndex {
    path: PathBuf,
    members: HashMap<Vec<u8>, Member>,
}

impl ArchiveIndex {
    /// Reads the archive's headers only (data is skipped by seeking).
    pub fn open(path: &Path) -> Result<ArchiveIndex, ArchiveError> {
        let file = File::open(path).map_err(|source| ArchiveError::Open {
            path: path.to_owned(),
            source,
        })?;
        ArchiveIndex::read(path, io::BufReader::new(file))
    }

    /// Indexes the archive at `path` as read from `reader` (the file, or
    /// its bytes in memory for the fuzz harness).
    pub(crate) fn read(
        path: &Path,
        reader: impl Read + Seek,
    ) -> Result<ArchiveIndex, ArchiveError> {
        let index_err = |source| ArchiveError::Index {
            path: path.to_owned(),
            source,
        };
        let mut archive = tar::Archive::new(reader);
        let mut members = HashMap::new();
        for entry in archive.entries_with_seek().map_err(index_err)? {
            let entry = entry.map_err(index_err)?;
            let raw = entry.path_bytes().into_owned();
            let name = normalize_path(&raw).map_err(|_| ArchiveError::Name {
                path: path.to_owned(),
                member: String::from_utf8_lossy(&raw).into_owned(),
            })?;
            let kind = entry.header().entry_type();
            let member = if kind.is_dir() {
                Member::Dir
            } else if kind.is_symlink() {
                // A symlink's target is relative to its own directory.
                let target = entry.link_name_bytes().unwrap_or_default().into_owned();
                let base = name
                    .iter()
                    .rposition(|b| *b == b'/')
                    .map_or(&name[..0], |i| &name[..i]);
                let mut joined = base.to_vec();
                if target.starts_with(b"/") {
                    joined.clear();
                } else if !joined.is_empty() {
                    joined.push(b'/');
                }
                joined.extend_from_slice(&target);
                Member::Link(resolve_dots(&joined))
            } else if kind.is_hard_link() {
                let target = entry.link_name_bytes().unwrap_or_default().into_owned();
                Member::Link(normalize_path(&target).unwrap_or_default())
            } else {
                Member::Data {
                    offset: entry.raw_file_position(),
                    size: entry.size(),
                }
            };
            members.insert(name, member);
        }
        Ok(ArchiveIndex {
            path: path.to_owned(),
            members,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The member's bytes, following up to 8 links inside the archive.
    pub fn location(&self, name: &str) -> Option<BlobLocation> {
        let mut key = normalize_path(name.as_bytes()).ok()?;
        for _ in 0..8 {
            match self.members.get(&key)? {
                Member::Data { offset, size } => {
                    return Some(BlobLocation::Member {
                        archive: self.path.clone(),
                        offset: *offset,
                        size: *size,
                    });
                }
                Member::Link(target) => key = target.clone(),
                Member::Dir => return None,
            }
        }
        None
    }

    pub fn contains(&self, name: &str) -> bool {
        self.location(name).is_some()
    }

    /// Every member's normalised name (the fuzz harness looks each up).
    pub(crate) fn names(&self) -> impl Iterator<Item = &[u8]> {
        self.members.keys().map(Vec::as_slice)
    }
}

/// Lexically resolves `.` and `..` in an archive-internal path (never
/// leaves the archive: `..` at the top is dropped).
fn resolve_dots(path: &[u8]) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for comp in path.split(|b| *b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.join(&b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_dots_inside_the_archive() {
        assert_eq!(resolve_dots(b"a/../b/./c"), b"b/c");
        assert_eq!(resolve_dots(b"../../x"), b"x");
        assert_eq!(resolve_dots(b"abc/layer.tar"), b"abc/layer.tar");
    }

    #[test]
    fn indexes_members_and_reads_by_offset() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("a.tar");
        let mut b = tar::Builder::new(File::create(&path).expect("create"));
        let mut h = tar::Header::new_gnu();
        h.set_size(5);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "./blobs/one", &b"hello"[..])
            .expect("append");
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "x/layer.tar", "../blobs/one")
            .expect("link");
        b.finish().expect("finish");
        drop(b);
        let idx = ArchiveIndex::open(&path).expect("index");
        for name in ["blobs/one", "./blobs/one", "x/layer.tar"] {
            let mut s = String::new();
            idx.location(name)
                .expect("member")
                .open()
                .expect("open")
                .read_to_string(&mut s)
                .expect("read");
            assert_eq!(s, "hello", "{name}");
        }
        assert!(idx.location("nope").is_none());
    }
}
