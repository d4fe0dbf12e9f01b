//! `cairn unsquash IMAGE DIR`: extract a squashfs image into a new directory,
//! like `unsquashfs -d DIR IMAGE`.
//!
//! Everything is extracted into a temporary directory beside DIR and renamed
//! into place at the end, so an error never leaves a half-extracted DIR.
//! Names come from the reader already checked to be single path components,
//! and every object is created exclusively (mkdir, O_EXCL, symlink, mknod,
//! link all fail on an existing name), so extraction never writes through a
//! symlink it created, even when a hostile image repeats a name.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::squashfs::format::{DATA_SIZE_MASK, InodeBody, bytes_in_block, decode_rdev};
use crate::squashfs::reader::{Archive, InodeRef, Node, ReadError, WalkEvent, WalkLimits};

#[derive(Debug, clap::Args)]
pub struct UnsquashArgs {
    /// The squashfs image to extract.
    pub image: PathBuf,
    /// Where to extract it: must not exist yet (or be an empty directory).
    pub dir: PathBuf,
}

pub fn execute(args: UnsquashArgs) -> anyhow::Result<i32> {
    unsquash(&args.image, &args.dir).with_context(|| {
        format!(
            "cannot unsquash {} into {}",
            args.image.display(),
            args.dir.display()
        )
    })?;
    Ok(0)
}

/// Extract `image` into `dir` (see the module doc).
pub fn unsquash(image: &Path, dir: &Path) -> anyhow::Result<()> {
    match fs::symlink_metadata(dir) {
        Ok(meta) if meta.is_dir() => {
            let mut entries =
                fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
            if entries.next().is_some() {
                bail!("{} already exists and is not empty", dir.display());
            }
        }
        Ok(_) => bail!("{} already exists and is not a directory", dir.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot stat {}", dir.display())),
    }
    let archive = Archive::open(image)?;
    let name = dir
        .file_name()
        .with_context(|| format!("{} has no final component", dir.display()))?;
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp_name = format!(
        ".{}.unsquash-{}",
        name.to_string_lossy(),
        std::process::id()
    );
    let tmp = parent.join(&tmp_name);
    // The temporary directory is made and then only reached through
    // handles: the parent's (so the final rename lands beside it) and its
    // own, used as the root of every path below (/proc/self/fd/N). Whoever
    // else may write to the parent (its owner, a group) can rename the
    // name, but cannot make cairn write anywhere but into the directory it
    // made (0700: nobody else gets into it meanwhile).
    let handles = TempDir::create(&parent, &tmp_name)
        .with_context(|| format!("cannot create the temporary directory {}", tmp.display()))?;
    let mut ex = Extractor {
        archive: &archive,
        root: handles.root(),
        shown_root: tmp.clone(),
        as_root: nix::unistd::geteuid().is_root(),
        links: HashMap::new(),
    };
    let result = archive
        .walk(WalkLimits::default(), |event| ex.visit(event))
        .and_then(|()| {
            handles
                .rename_to(name)
                .with_context(|| format!("cannot rename {} to {}", tmp.display(), dir.display()))
        });
    if let Err(e) = result {
        remove_tree(&handles.root());
        let _ = handles.remove();
        return Err(e);
    }
    Ok(())
}

/// The temporary directory of an extraction, held by handles.
struct TempDir {
    parent: OwnedFd,
    dir: OwnedFd,
    name: String,
}

impl TempDir {
    fn create(parent: &Path, name: &str) -> std::io::Result<TempDir> {
        use rustix::fs::{AtFlags, CWD, Mode, OFlags, mkdirat, openat};
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let parent = openat(CWD, parent, flags, Mode::empty())?;
        mkdirat(&parent, name, Mode::from_raw_mode(0o700))?;
        let dir = openat(&parent, name, flags | OFlags::NOFOLLOW, Mode::empty())?;
        // What was opened is the directory just made: ours, empty, 0700.
        let st = rustix::fs::fstat(&dir)?;
        let same = rustix::fs::statat(&parent, name, AtFlags::SYMLINK_NOFOLLOW)?;
        if st.st_uid != rustix::process::geteuid().as_raw()
            || (st.st_dev, st.st_ino) != (same.st_dev, same.st_ino)
        {
            return Err(std::io::Error::other("it was replaced while being made"));
        }
        Ok(TempDir {
            parent,
            dir,
            name: name.to_owned(),
        })
    }

    /// The directory as a path through its handle. The trailing `.` makes
    /// the path the directory itself, not the /proc link to it, even for
    /// calls that do not follow a final symbolic link (lchown, utimensat).
    fn root(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}/.", self.dir.as_raw_fd()))
    }

    fn rename_to(&self, final_name: &OsStr) -> std::io::Result<()> {
        rustix::fs::renameat(&self.parent, self.name.as_str(), &self.parent, final_name)?;
        Ok(())
    }

    fn remove(&self) -> std::io::Result<()> {
        rustix::fs::unlinkat(
            &self.parent,
            self.name.as_str(),
            rustix::fs::AtFlags::REMOVEDIR,
        )?;
        Ok(())
    }
}

/// Best-effort removal of what a partly extracted tree holds: directories
/// may already carry read-only modes, so make them writable first.
fn remove_tree(root: &Path) {
    fn make_writable(dir: &Path) {
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
        if let Ok(entries) = fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    make_writable(&e.path());
                }
            }
        }
    }
    make_writable(root);
    // The entries, not `root` itself: its name is removed by the caller,
    // through the parent's handle.
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let p = entry.path();
        let removed = if entry.file_type().is_ok_and(|t| t.is_dir()) {
            fs::remove_dir_all(&p)
        } else {
            fs::remove_file(&p)
        };
        if let Err(e) = removed {
            tracing::warn!("cannot remove {}: {e}", p.display());
        }
    }
}

struct Extractor<'a> {
    archive: &'a Archive,
    /// Where things are made: the temporary directory through its handle.
    root: PathBuf,
    /// The same directory by its name, for messages.
    shown_root: PathBuf,
    as_root: bool,
    /// First path of every non-directory inode extracted: later entries with
    /// the same inode ref become hard links to it.
    links: HashMap<InodeRef, PathBuf>,
}

impl Extractor<'_> {
    /// `p` (below [`Extractor::root`]) as the user knows it.
    fn show(&self, p: &Path) -> PathBuf {
        match p.strip_prefix(&self.root) {
            Ok(rel) => self.shown_root.join(rel),
            Err(_) => p.to_path_buf(),
        }
    }

    fn path(&self, rel: &[u8]) -> PathBuf {
        if rel.is_empty() {
            self.root.clone()
        } else {
            self.root.join(OsStr::from_bytes(rel))
        }
    }

    fn visit(&mut self, event: WalkEvent<'_>) -> anyhow::Result<()> {
        match event {
            WalkEvent::EnterDir { path, .. } => {
                if !path.is_empty() {
                    let p = self.path(path);
                    // Owner-writable until LeaveDir sets the real mode.
                    DirBuilder::new().mode(0o700).create(&p).with_context(|| {
                        format!("cannot create directory {}", self.show(&p).display())
                    })?;
                }
            }
            WalkEvent::LeaveDir { path, node } => {
                let p = self.path(path);
                self.set_attributes(&p, node, false)?;
            }
            WalkEvent::Leaf { path, node, .. } => {
                let p = self.path(path);
                if let Some(first) = self.links.get(&node.inode_ref()) {
                    fs::hard_link(first, &p).with_context(|| {
                        format!(
                            "cannot link {} to {}",
                            self.show(&p).display(),
                            self.show(first).display()
                        )
                    })?;
                    return Ok(());
                }
                if self.create_leaf(&p, node)? {
                    self.links.insert(node.inode_ref(), p);
                }
            }
        }
        Ok(())
    }

    /// Create a non-directory; false if it was skipped (a device as a user).
    fn create_leaf(&self, p: &Path, node: &Node) -> anyhow::Result<bool> {
        use rustix::fs::{CWD, FileType, Mode, mknodat};
        let perm = Mode::from_raw_mode(0o600);
        let made = match &node.inode().body {
            InodeBody::File(f) => {
                let file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(p)
                    .with_context(|| format!("cannot create {}", self.show(p).display()))?;
                self.write_contents(&file, p, node, f)?;
                true
            }
            InodeBody::Symlink(s) => {
                std::os::unix::fs::symlink(OsStr::from_bytes(&s.target), p)
                    .with_context(|| format!("cannot create symlink {}", self.show(p).display()))?;
                self.set_attributes(p, node, true)?;
                return Ok(true);
            }
            InodeBody::BlockDev(d) | InodeBody::CharDev(d) => {
                if !self.as_root {
                    tracing::warn!(
                        "skipping device {}: creating devices needs root",
                        self.show(p).display()
                    );
                    return Ok(false);
                }
                let (major, minor) = decode_rdev(d.rdev);
                let ty = if matches!(node.inode().body, InodeBody::BlockDev(_)) {
                    FileType::BlockDevice
                } else {
                    FileType::CharacterDevice
                };
                mknodat(CWD, p, ty, perm, rustix::fs::makedev(major, minor))
                    .with_context(|| format!("cannot create device {}", self.show(p).display()))?;
                true
            }
            InodeBody::Fifo(_) => {
                mknodat(CWD, p, FileType::Fifo, perm, 0)
                    .with_context(|| format!("cannot create fifo {}", self.show(p).display()))?;
                true
            }
            InodeBody::Socket(_) => {
                mknodat(CWD, p, FileType::Socket, perm, 0)
                    .with_context(|| format!("cannot create socket {}", self.show(p).display()))?;
                true
            }
            InodeBody::Dir(_) => bail!(
                "{} is a directory reached as a leaf",
                self.show(p).display()
            ),
        };
        self.set_attributes(p, node, false)?;
        Ok(made)
    }

    /// Write a file's data block by block; holes stay holes (never written,
    /// the final `set_len` covers a trailing one).
    fn write_contents(
        &self,
        file: &File,
        p: &Path,
        node: &Node,
        f: &crate::squashfs::format::FileInode,
    ) -> anyhow::Result<()> {
        let block_size = self.archive.superblock().block_size;
        let mut buf = vec![0u8; block_size as usize];
        let mut off = 0u64;
        let mut block = 0usize;
        while off < f.file_size {
            let len = bytes_in_block(f.file_size - off, block_size) as usize;
            let hole = f
                .block_sizes
                .get(block)
                .is_some_and(|w| w & DATA_SIZE_MASK == 0);
            if !hole {
                let n = self
                    .archive
                    .read_at(node, off, &mut buf[..len])
                    .map_err(anyhow::Error::from)?;
                if n != len {
                    return Err(ReadError::BadInode {
                        inode: format!("{:#x}", node.inode_ref().0),
                        reason: format!("short read of {n} bytes at {off}"),
                    }
                    .into());
                }
                file.write_all_at(&buf[..len], off)
                    .with_context(|| format!("cannot write {}", self.show(p).display()))?;
            }
            off += len as u64;
            block += 1;
        }
        file.set_len(f.file_size)
            .with_context(|| format!("cannot set the size of {}", self.show(p).display()))?;
        Ok(())
    }

    /// Owner (as root), mode (setuid/setgid only as root, like unsquashfs),
    /// xattrs (user.* always, others as root; failures are warnings) and
    /// mtime, without following symlinks.
    fn set_attributes(&self, p: &Path, node: &Node, is_symlink: bool) -> anyhow::Result<()> {
        let st = node.stat();
        if self.as_root {
            std::os::unix::fs::lchown(p, Some(st.uid), Some(st.gid)).with_context(|| {
                format!("cannot change the owner of {}", self.show(p).display())
            })?;
        }
        for (name, value) in self.archive.xattrs(node)? {
            if !self.as_root && !name.starts_with(b"user.") {
                continue;
            }
            let key = OsStr::from_bytes(&name);
            if let Err(e) = rustix::fs::lsetxattr(p, key, &value, rustix::fs::XattrFlags::empty()) {
                tracing::warn!(
                    "cannot set xattr {} on {}: {e}",
                    key.to_string_lossy(),
                    self.show(p).display()
                );
            }
        }
        if !is_symlink {
            let mut mode = st.mode & 0o7777;
            if !self.as_root {
                mode &= !0o6000;
            }
            fs::set_permissions(p, fs::Permissions::from_mode(mode))
                .with_context(|| format!("cannot set the mode of {}", self.show(p).display()))?;
        }
        let t = rustix::fs::Timespec {
            tv_sec: st.mtime,
            tv_nsec: 0,
        };
        rustix::fs::utimensat(
            rustix::fs::CWD,
            p,
            &rustix::fs::Timestamps {
                last_access: t,
                last_modification: t,
            },
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .with_context(|| format!("cannot set the mtime of {}", self.show(p).display()))?;
        Ok(())
    }
}
