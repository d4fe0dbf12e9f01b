//! The image's tree as the planner reads it before any namespace exists: a
//! rootfs directory on the host, or a squashfs file read through cairn's own
//! reader (nothing is mounted yet). Only the few questions the request
//! needs: what a path is (symlinks not followed), a symlink's target, and a
//! small file's contents.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use crate::squashfs::reader::Archive;

/// What a path inside the image is, symlinks not followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Symlink,
    Other,
}

/// Largest file `read` returns (passwd, group): a hostile image must not
/// make cairn allocate gigabytes before the job starts.
pub const MAX_READ: u64 = 16 * 1024 * 1024;

/// Read access to an image's tree by absolute paths inside it.
pub trait ImageTree {
    /// The image as the user named it (for messages).
    fn image_path(&self) -> &Path;
    fn kind(&self, inside: &Path) -> Option<Kind>;
    fn read_link(&self, inside: &Path) -> Option<PathBuf>;
    /// A regular file's contents (at most [`MAX_READ`] bytes).
    fn read(&self, inside: &Path) -> Option<Vec<u8>>;
}

/// The host path of an absolute path inside a directory image.
fn host_path(image: &Path, inside: &Path) -> PathBuf {
    image.join(inside.strip_prefix("/").unwrap_or(inside))
}

impl ImageTree for Path {
    fn image_path(&self) -> &Path {
        self
    }
    fn kind(&self, inside: &Path) -> Option<Kind> {
        let ft = std::fs::symlink_metadata(host_path(self, inside))
            .ok()?
            .file_type();
        Some(if ft.is_dir() {
            Kind::Dir
        } else if ft.is_file() {
            Kind::File
        } else if ft.is_symlink() {
            Kind::Symlink
        } else {
            Kind::Other
        })
    }
    fn read_link(&self, inside: &Path) -> Option<PathBuf> {
        std::fs::read_link(host_path(self, inside)).ok()
    }
    fn read(&self, inside: &Path) -> Option<Vec<u8>> {
        let path = host_path(self, inside);
        let meta = std::fs::metadata(&path).ok()?;
        if !meta.is_file() || meta.len() > MAX_READ {
            return None;
        }
        std::fs::read(path).ok()
    }
}

impl ImageTree for PathBuf {
    fn image_path(&self) -> &Path {
        self
    }
    fn kind(&self, inside: &Path) -> Option<Kind> {
        ImageTree::kind(self.as_path(), inside)
    }
    fn read_link(&self, inside: &Path) -> Option<PathBuf> {
        ImageTree::read_link(self.as_path(), inside)
    }
    fn read(&self, inside: &Path) -> Option<Vec<u8>> {
        ImageTree::read(self.as_path(), inside)
    }
}

/// A squashfs image file, opened; read with cairn's reader, which is set
/// up on first use (see [`SquashTree::archive`]).
#[derive(Debug, Clone)]
pub struct SquashTree {
    pub path: PathBuf,
    /// The image file's identity (the block store's and kept facts' key).
    pub identity: crate::squashfs::reader::Identity,
    file: Arc<std::fs::File>,
    archive: Arc<OnceLock<Arc<Archive>>>,
}

impl SquashTree {
    /// The image `file` at canonical `path`, whose identity is `identity`;
    /// nothing read yet.
    pub fn new(
        path: PathBuf,
        file: std::fs::File,
        identity: crate::squashfs::reader::Identity,
    ) -> Self {
        SquashTree {
            path,
            identity,
            file: Arc::new(file),
            archive: Arc::default(),
        }
    }

    /// The image through cairn's reader: mapped, superblock and tables
    /// checked, root inode read, on the first call. A run that answers
    /// from kept facts (see `run::facts`) and enters a warm mount never
    /// needs it.
    pub fn archive(&self) -> Result<Arc<Archive>, crate::squashfs::reader::ReadError> {
        if let Some(archive) = self.archive.get() {
            return Ok(archive.clone());
        }
        let archive = Archive::from_file(
            &self.file,
            &self.path,
            crate::squashfs::reader::CacheSizes::default(),
        )?;
        archive.root()?;
        // Two threads racing here both built a good archive; either will do.
        Ok(self.archive.get_or_init(|| Arc::new(archive)).clone())
    }

    fn node(&self, inside: &Path) -> Option<crate::squashfs::reader::Node> {
        use std::os::unix::ffi::OsStrExt;
        self.archive()
            .ok()?
            .lookup_path(inside.as_os_str().as_bytes())
            .ok()
            .flatten()
    }
}

impl ImageTree for SquashTree {
    fn image_path(&self) -> &Path {
        &self.path
    }
    fn kind(&self, inside: &Path) -> Option<Kind> {
        let node = self.node(inside)?;
        Some(if node.is_dir() {
            Kind::Dir
        } else if node.is_file() {
            Kind::File
        } else if node.is_symlink() {
            Kind::Symlink
        } else {
            Kind::Other
        })
    }
    fn read_link(&self, inside: &Path) -> Option<PathBuf> {
        use std::os::unix::ffi::OsStringExt;
        let node = self.node(inside)?;
        let target = self.archive().ok()?.read_link(&node).ok()?;
        Some(PathBuf::from(std::ffi::OsString::from_vec(target)))
    }
    fn read(&self, inside: &Path) -> Option<Vec<u8>> {
        let node = self.node(inside)?;
        self.archive().ok()?.read_whole(&node, MAX_READ).ok()?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_tree_answers_from_the_host() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::create_dir(dir.path().join("etc")).expect("mkdir");
        std::fs::write(dir.path().join("etc/passwd"), "root:x:0:0::/:/bin/sh\n").expect("w");
        std::os::unix::fs::symlink("/etc", dir.path().join("link")).expect("ln");
        let t = dir.path();
        assert_eq!(t.kind(Path::new("/etc")), Some(Kind::Dir));
        assert_eq!(t.kind(Path::new("/etc/passwd")), Some(Kind::File));
        assert_eq!(t.kind(Path::new("/link")), Some(Kind::Symlink));
        assert_eq!(t.kind(Path::new("/nope")), None);
        assert_eq!(
            ImageTree::read_link(t, Path::new("/link")),
            Some(PathBuf::from("/etc"))
        );
        assert_eq!(
            t.read(Path::new("/etc/passwd")).as_deref(),
            Some(&b"root:x:0:0::/:/bin/sh\n"[..])
        );
        assert_eq!(t.read(Path::new("/etc")), None);
    }
}
