//! Walking a directory of the host as image entries: the one walker behind
//! `cairn squash DIR` and `cairn import dir:DIR`.
//!
//! Entries come depth-first, each directory before its children and the
//! children sorted by name bytes, so the same tree always gives the same
//! sequence (and the same image bytes). A second name of a multiply-linked
//! non-directory comes as [`HostKind::Hardlink`] to the first name seen.
//! Symlinks are never followed.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{AtFlags, CWD, Dir, FileType, Mode, OFlags, openat, readlinkat, statat};

use crate::squashfs::format;
use crate::squashfs::reader::Xattr;
use crate::squashfs::writer::{EntryMeta, SpecialKind};

#[derive(Debug, thiserror::Error)]
pub enum HostDirError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read the extended attributes of {path}")]
    Xattr {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: device {what} {value} does not fit in 32 bits")]
    DeviceNumber {
        path: PathBuf,
        what: &'static str,
        value: u64,
    },
}

/// Whose files these are in the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owners {
    /// The owners on the host (root packing a rootfs).
    Keep,
    /// Everything owned by these ids (an ordinary user cannot own other
    /// users' files, so recording the host owners would be a lie later).
    All { uid: u32, gid: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKind {
    Dir,
    File {
        size: u64,
        /// The file has holes on disk.
        holes: bool,
    },
    Symlink(Vec<u8>),
    Special(SpecialKind),
    /// Another name for the entry at this image path.
    Hardlink(Vec<u8>),
}

/// One entry: its path in the image (relative, '/'-separated, b"" for the
/// root), what it is, and its metadata (unused for hard links).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEntry {
    pub path: Vec<u8>,
    pub host_path: PathBuf,
    pub kind: HostKind,
    pub meta: EntryMeta,
}

/// One entry still to visit: its name in an open parent directory (`None`
/// for the root, opened by path), and its paths on the host and in the
/// image.
struct Pending {
    parent: Option<Arc<Dir>>,
    name: OsString,
    host_path: PathBuf,
    path: Vec<u8>,
}

/// Walk `root`, calling `visit` for every entry with a reader of its data
/// (empty for anything but a regular file). Files whose (dev, inode) is in
/// `skip` are left out: the image being written may lie inside `root`.
///
/// Below the root, everything is reached relative to its parent's open
/// directory (`fstatat`, `openat` with `O_NOFOLLOW`, `readlinkat`, the
/// `f*xattr` calls on the opened file): the kernel walks one component per
/// entry instead of the whole path (a measurable part of the walk on large
/// trees), and a directory renamed or swapped for a symlink during the walk
/// cannot lead it outside the tree.
pub fn walk<E: From<HostDirError>>(
    root: &Path,
    owners: Owners,
    skip: &[(u64, u64)],
    mut visit: impl FnMut(HostEntry, &mut dyn Read) -> Result<(), E>,
) -> Result<(), E> {
    let mut walker = Walker {
        owners,
        skip,
        links: HashMap::new(),
        // Depth-first with an explicit stack: children pushed in reverse
        // order come off sorted, and a deep tree cannot overflow the call
        // stack. A directory stays open while children of it are on the
        // stack, so the open descriptors are bounded by the depth.
        stack: vec![Pending {
            parent: None,
            name: root.as_os_str().to_owned(),
            host_path: root.to_owned(),
            path: Vec::new(),
        }],
    };
    while let Some(pending) = walker.stack.pop() {
        if let Some((entry, mut data)) = walker.entry(pending)? {
            visit(entry, &mut data)?;
        }
    }
    Ok(())
}

/// An entry and a reader of its data.
type Visit = (HostEntry, Box<dyn Read>);

struct Walker<'a> {
    owners: Owners,
    skip: &'a [(u64, u64)],
    /// The image path of the first name of each multiply-linked file.
    links: HashMap<(u64, u64), Vec<u8>>,
    stack: Vec<Pending>,
}

impl Walker<'_> {
    /// Stat and classify one entry (a directory's children go on the
    /// stack); `None` for a skipped file.
    fn entry(&mut self, pending: Pending) -> Result<Option<Visit>, HostDirError> {
        let Pending {
            parent,
            name,
            host_path,
            path,
        } = pending;
        let read_err = |source: rustix::io::Errno| HostDirError::Read {
            path: host_path.clone(),
            source: source.into(),
        };
        let at = match &parent {
            Some(dir) => dir.fd().map_err(read_err)?,
            None => CWD,
        };
        let st = statat(at, &name, AtFlags::SYMLINK_NOFOLLOW).map_err(read_err)?;
        let ft = FileType::from_raw_mode(st.st_mode);
        let id = (st.st_dev, st.st_ino);
        if ft == FileType::RegularFile && self.skip.contains(&id) {
            return Ok(None);
        }
        let open = |flags: OFlags| {
            openat(
                at,
                &name,
                flags | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY,
                Mode::empty(),
            )
            .map_err(read_err)
        };
        let mut data: Box<dyn Read> = Box::new(io::empty());
        // Read from the descriptor while it is at hand (directories and
        // regular files); `None`: from the path below.
        let mut xattrs = None;
        let kind = if ft == FileType::Directory {
            let mut dir = Dir::new(open(OFlags::DIRECTORY)?).map_err(read_err)?;
            let names = list_dir(&mut dir).map_err(read_err)?;
            let fd = dir.fd().map_err(read_err)?;
            xattrs = Some(read_xattrs(&host_path, Xattrs::Fd(fd))?);
            self.push_children(Arc::new(dir), names, &host_path, &path);
            HostKind::Dir
        } else if st.st_nlink > 1
            && let Some(first) = self.links.get(&id)
        {
            return Ok(Some((
                HostEntry {
                    path,
                    host_path,
                    kind: HostKind::Hardlink(first.clone()),
                    meta: EntryMeta::default(),
                },
                data,
            )));
        } else {
            if st.st_nlink > 1 {
                self.links.insert(id, path.clone());
            }
            match ft {
                FileType::RegularFile => {
                    let file = fs::File::from(open(OFlags::empty())?);
                    xattrs = Some(read_xattrs(&host_path, Xattrs::Fd(file.as_fd()))?);
                    data = Box::new(file);
                    // Holes on disk (fewer 512-byte blocks than bytes): the
                    // image counts its zero blocks as sparse, as mksquashfs
                    // does.
                    let size = u64::try_from(st.st_size).unwrap_or(0);
                    let blocks = u64::try_from(st.st_blocks).unwrap_or(0);
                    HostKind::File {
                        size,
                        holes: blocks.saturating_mul(512) < size,
                    }
                }
                FileType::Symlink => {
                    let target = readlinkat(at, &name, Vec::new()).map_err(read_err)?;
                    HostKind::Symlink(target.into_bytes())
                }
                _ => HostKind::Special(special_kind(ft, st.st_rdev, &host_path)?),
            }
        };
        let xattrs = match xattrs {
            Some(read) => read,
            // Symlinks and special files are not opened (opening a device
            // can have effects): by path, not following.
            None => read_xattrs(&host_path, Xattrs::Path)?,
        };
        let (uid, gid) = match self.owners {
            Owners::Keep => (st.st_uid, st.st_gid),
            Owners::All { uid, gid } => (uid, gid),
        };
        let meta = EntryMeta {
            mode: (st.st_mode & 0o7777) as u16,
            uid,
            gid,
            mtime: format::mtime_field(st.st_mtime),
            xattrs,
        };
        let entry = HostEntry {
            path,
            host_path,
            kind,
            meta,
        };
        Ok(Some((entry, data)))
    }

    /// Queue a directory's children so that they come off the stack in
    /// name-byte order, each holding the open directory.
    fn push_children(&mut self, dir: Arc<Dir>, mut names: Vec<OsString>, host: &Path, path: &[u8]) {
        names.sort_by(|a, b| b.as_bytes().cmp(a.as_bytes()));
        for name in names {
            let mut child = path.to_vec();
            if !child.is_empty() {
                child.push(b'/');
            }
            child.extend_from_slice(name.as_bytes());
            self.stack.push(Pending {
                parent: Some(Arc::clone(&dir)),
                host_path: host.join(&name),
                name,
                path: child,
            });
        }
    }
}

/// The names in a directory, without `.` and `..`.
fn list_dir(dir: &mut Dir) -> Result<Vec<OsString>, rustix::io::Errno> {
    let mut names = Vec::new();
    while let Some(entry) = dir.read() {
        let name = entry?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            names.push(OsString::from_vec(name));
        }
    }
    Ok(names)
}

/// A device, FIFO or socket from its file type and `st_rdev`.
fn special_kind(ft: FileType, rdev: u64, host_path: &Path) -> Result<SpecialKind, HostDirError> {
    // glibc's dev_t holds 32-bit majors and minors, but they come out of
    // the kernel's encoding as u64.
    let number = |what, value: u64| {
        u32::try_from(value).map_err(|_| HostDirError::DeviceNumber {
            path: host_path.to_owned(),
            what,
            value,
        })
    };
    let major = number("major", u64::from(rustix::fs::major(rdev)))?;
    let minor = number("minor", u64::from(rustix::fs::minor(rdev)))?;
    Ok(match ft {
        FileType::CharacterDevice => SpecialKind::CharDevice { major, minor },
        FileType::BlockDevice => SpecialKind::BlockDevice { major, minor },
        FileType::Fifo => SpecialKind::Fifo,
        _ => SpecialKind::Socket,
    })
}

/// The xattrs of `path` (not following a symlink at the end), as
/// [`walk`] reads them.
pub(crate) fn read_xattrs_of_path(path: &Path) -> Result<Vec<Xattr>, HostDirError> {
    read_xattrs(path, Xattrs::Path)
}

/// Where to read an entry's xattrs from.
enum Xattrs<'a> {
    /// The entry's open descriptor.
    Fd(BorrowedFd<'a>),
    /// Its path, not following a symlink at the end.
    Path,
}

/// The xattrs of `path` (not following a symlink) that squashfs can store,
/// sorted. Other prefixes (`system.*`: POSIX ACLs) are skipped with a
/// warning; ones this caller may not read (an ordinary user and
/// `trusted.*`) and filesystems without xattrs give nothing.
fn read_xattrs(path: &Path, from: Xattrs<'_>) -> Result<Vec<Xattr>, HostDirError> {
    use rustix::io::Errno;
    let skippable = |e: Errno| {
        matches!(
            e,
            Errno::NOTSUP | Errno::ACCESS | Errno::PERM | Errno::NODATA
        )
    };
    let xattr_err = |e: Errno| HostDirError::Xattr {
        path: path.to_owned(),
        source: io::Error::from(e),
    };
    let mut list = vec![0u8; 4096];
    let len = loop {
        let listed = match from {
            Xattrs::Fd(fd) => rustix::fs::flistxattr(fd, &mut list[..]),
            Xattrs::Path => rustix::fs::llistxattr(path, &mut list[..]),
        };
        match listed {
            Ok(n) => break n,
            // The list grew between two calls, or it is longer than 4 KiB.
            Err(Errno::RANGE) if list.len() < 1 << 24 => list.resize(list.len() * 4, 0),
            Err(e) if skippable(e) => return Ok(Vec::new()),
            Err(e) => return Err(xattr_err(e)),
        }
    };
    let mut out = Vec::new();
    for name in list[..len].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        if format::split_xattr_name(name).is_none() {
            tracing::warn!(
                "{}: skipping xattr {} (squashfs stores only user., trusted. and security.)",
                path.display(),
                String::from_utf8_lossy(name)
            );
            continue;
        }
        let mut value = vec![0u8; 4096];
        let n = loop {
            let key = OsStr::from_bytes(name);
            let got = match from {
                Xattrs::Fd(fd) => rustix::fs::fgetxattr(fd, key, &mut value[..]),
                Xattrs::Path => rustix::fs::lgetxattr(path, key, &mut value[..]),
            };
            match got {
                Ok(n) => break Some(n),
                Err(Errno::RANGE) if value.len() < 1 << 24 => value.resize(value.len() * 4, 0),
                Err(e) if skippable(e) => break None,
                Err(e) => return Err(xattr_err(e)),
            }
        };
        if let Some(n) = n {
            value.truncate(n);
            out.push((name.to_vec(), value));
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, symlink};

    fn collect(root: &Path, owners: Owners) -> Vec<HostEntry> {
        let mut seen = Vec::new();
        walk::<HostDirError>(root, owners, &[], |e, data| {
            let mut sink = Vec::new();
            data.read_to_end(&mut sink)
                .map_err(|source| HostDirError::Read {
                    path: e.host_path.clone(),
                    source,
                })?;
            seen.push(e);
            Ok(())
        })
        .expect("walk");
        seen
    }

    #[test]
    fn sorted_depth_first_with_hard_links_and_symlinks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        fs::create_dir_all(root.join("b/sub")).expect("mkdir");
        fs::write(root.join("a"), b"x").expect("write");
        fs::write(root.join("b/sub/f"), b"yy").expect("write");
        fs::hard_link(root.join("a"), root.join("c")).expect("link");
        symlink("../a", root.join("b/l")).expect("symlink");
        let seen = collect(root, Owners::All { uid: 7, gid: 8 });
        let paths: Vec<&[u8]> = seen.iter().map(|e| e.path.as_slice()).collect();
        assert_eq!(
            paths,
            [&b""[..], b"a", b"b", b"b/l", b"b/sub", b"b/sub/f", b"c"]
        );
        assert_eq!(
            seen[1].kind,
            HostKind::File {
                size: 1,
                holes: false
            }
        );
        assert_eq!(seen[1].meta.uid, 7);
        assert_eq!(seen[3].kind, HostKind::Symlink(b"../a".to_vec()));
        assert_eq!(seen[6].kind, HostKind::Hardlink(b"a".to_vec()));
    }

    #[test]
    fn skipped_files_are_left_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("out.sqfs"), b"partial").expect("write");
        let md = fs::metadata(dir.path().join("out.sqfs")).expect("stat");
        let mut paths = Vec::new();
        walk::<HostDirError>(dir.path(), Owners::Keep, &[(md.dev(), md.ino())], |e, _| {
            paths.push(e.path);
            Ok(())
        })
        .expect("walk");
        assert_eq!(paths, [Vec::<u8>::new()]);
    }
}
