//! Walking a directory of the host as image entries: the one walker behind
//! `cairn squash DIR` and `cairn import dir:DIR`.
//!
//! Entries come depth-first, each directory before its children and the
//! children sorted by name bytes, so the same tree always gives the same
//! sequence (and the same image bytes). A second name of a multiply-linked
//! non-directory comes as [`HostKind::Hardlink`] to the first name seen.
//! Symlinks are never followed.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

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

/// Walk `root`, calling `visit` for every entry with a reader of its data
/// (empty for anything but a regular file). Files whose (dev, inode) is in
/// `skip` are left out: the image being written may lie inside `root`.
pub fn walk<E: From<HostDirError>>(
    root: &Path,
    owners: Owners,
    skip: &[(u64, u64)],
    mut visit: impl FnMut(HostEntry, &mut dyn Read) -> Result<(), E>,
) -> Result<(), E> {
    let read_err = |path: &Path, source| HostDirError::Read {
        path: path.to_owned(),
        source,
    };
    let mut links: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
    // Depth-first with an explicit stack: children pushed in reverse order
    // come off sorted, and a deep tree cannot overflow the call stack.
    let mut stack: Vec<(PathBuf, Vec<u8>)> = vec![(root.to_owned(), Vec::new())];
    while let Some((host_path, path)) = stack.pop() {
        let md = fs::symlink_metadata(&host_path).map_err(|e| read_err(&host_path, e))?;
        let ft = md.file_type();
        if ft.is_file() && skip.contains(&(md.dev(), md.ino())) {
            continue;
        }
        let mut data: Box<dyn Read> = Box::new(io::empty());
        let kind = if ft.is_dir() {
            let mut names: Vec<std::ffi::OsString> = fs::read_dir(&host_path)
                .and_then(|entries| entries.map(|e| e.map(|e| e.file_name())).collect())
                .map_err(|e| read_err(&host_path, e))?;
            names.sort_by(|a, b| b.as_bytes().cmp(a.as_bytes()));
            for name in names {
                let mut child = path.clone();
                if !child.is_empty() {
                    child.push(b'/');
                }
                child.extend_from_slice(name.as_bytes());
                stack.push((host_path.join(&name), child));
            }
            HostKind::Dir
        } else if md.nlink() > 1
            && let Some(first) = links.get(&(md.dev(), md.ino()))
        {
            HostKind::Hardlink(first.clone())
        } else {
            if md.nlink() > 1 {
                links.insert((md.dev(), md.ino()), path.clone());
            }
            if ft.is_file() {
                data = Box::new(fs::File::open(&host_path).map_err(|e| read_err(&host_path, e))?);
                // Holes on disk (fewer 512-byte blocks than bytes): the
                // image counts its zero blocks as sparse, as mksquashfs does.
                HostKind::File {
                    size: md.len(),
                    holes: md.blocks().saturating_mul(512) < md.len(),
                }
            } else if ft.is_symlink() {
                let target = fs::read_link(&host_path).map_err(|e| read_err(&host_path, e))?;
                HostKind::Symlink(target.as_os_str().as_bytes().to_vec())
            } else {
                // glibc's dev_t holds 32-bit majors and minors, but nix
                // hands them out as u64.
                let number = |what, value: u64| {
                    u32::try_from(value).map_err(|_| HostDirError::DeviceNumber {
                        path: host_path.clone(),
                        what,
                        value,
                    })
                };
                let major = number("major", nix::sys::stat::major(md.rdev()))?;
                let minor = number("minor", nix::sys::stat::minor(md.rdev()))?;
                HostKind::Special(if ft.is_char_device() {
                    SpecialKind::CharDevice { major, minor }
                } else if ft.is_block_device() {
                    SpecialKind::BlockDevice { major, minor }
                } else if ft.is_fifo() {
                    SpecialKind::Fifo
                } else {
                    SpecialKind::Socket
                })
            }
        };
        let meta = if matches!(kind, HostKind::Hardlink(_)) {
            EntryMeta::default()
        } else {
            let (uid, gid) = match owners {
                Owners::Keep => (md.uid(), md.gid()),
                Owners::All { uid, gid } => (uid, gid),
            };
            EntryMeta {
                mode: (md.mode() & 0o7777) as u16,
                uid,
                gid,
                mtime: format::mtime_field(md.mtime()),
                xattrs: read_xattrs(&host_path)?,
            }
        };
        let entry = HostEntry {
            path,
            host_path,
            kind,
            meta,
        };
        visit(entry, &mut data)?;
    }
    Ok(())
}

/// The xattrs of `path` (not following a symlink) that squashfs can store,
/// sorted. Other prefixes (`system.*`: POSIX ACLs) are skipped with a
/// warning; ones this caller may not read (an ordinary user and
/// `trusted.*`) and filesystems without xattrs give nothing.
fn read_xattrs(path: &Path) -> Result<Vec<Xattr>, HostDirError> {
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
        match rustix::fs::llistxattr(path, &mut list[..]) {
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
            match rustix::fs::lgetxattr(path, OsStr::from_bytes(name), &mut value[..]) {
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
    use std::os::unix::fs::symlink;

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
