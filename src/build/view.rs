//! A stage as its layers describe it, without unpacking it: what is at a
//! path (looked up in the layers top-down, then in the base image), and a
//! skeleton of it, the few entries a COPY looks at or writes through (its
//! destination and the paths of what it copies, with the symlinks on the
//! way and their targets), made in a directory with their modes, mtimes
//! and owners. COPY runs on the skeleton and its layer is the skeleton's
//! diff, as on the whole tree: an edited file near the end of a Dockerfile
//! costs its own bytes, not an unpack of the image.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::image::entry::{LayerPath, Resolved, ancestors, resolve_in_root};
use crate::image::flatten::{EntryKind, LayerItem};
use crate::image::layer::{LayerError, for_each_item};
use crate::squashfs::format::InodeBody;
use crate::squashfs::reader::{Archive, ReadError};

use super::copy::{CopyError, set_mtime};
use super::snapshot::Owners;
use super::{IoFailure, io_err};

/// Symlinks followed while resolving one path (as `copy::resolve`).
const MAX_LINKS: usize = 40;

#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Copy(#[from] CopyError),
    #[error(transparent)]
    Io(#[from] IoFailure),
    #[error("{path}: more than {MAX_LINKS} symbolic links")]
    Loop { path: String },
}

/// What is at a path of the stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    Dir {
        mode: u32,
        mtime: u32,
        owner: (u32, u32),
    },
    Symlink {
        target: Vec<u8>,
        mtime: u32,
        owner: (u32, u32),
    },
    /// Anything else: the skeleton holds an empty file in its place.
    Other {
        mode: u32,
        mtime: u32,
        owner: (u32, u32),
    },
}

/// One layer's entries by path (without the data), its whiteouts and
/// opaque directories. A layer file never changes (it is named by its
/// digest): a build reads each once, however many COPYs look at it.
#[derive(Debug, Default)]
pub struct LayerIndex {
    entries: HashMap<Vec<u8>, Found>,
    whiteouts: HashSet<Vec<u8>>,
    opaque: HashSet<Vec<u8>>,
}

impl LayerIndex {
    /// The index of the uncompressed tar layer at `path`.
    pub fn read(path: &Path) -> Result<LayerIndex, ViewError> {
        let mut index = LayerIndex::default();
        let file = fs::File::open(path).map_err(io_err("opening", path))?;
        let label = path.display().to_string();
        for_each_item(&label, io::BufReader::new(file), |_, item, _, _| {
            match item {
                LayerItem::Entry { path, kind, meta } => {
                    let owner = (meta.uid, meta.gid);
                    let (mode, mtime) = (u32::from(meta.mode), meta.mtime);
                    let found = match kind {
                        EntryKind::Dir => Found::Dir { mode, mtime, owner },
                        EntryKind::Symlink(target) => Found::Symlink {
                            target,
                            mtime,
                            owner,
                        },
                        _ => Found::Other { mode, mtime, owner },
                    };
                    index.entries.insert(path, found);
                }
                LayerItem::Whiteout(p) => {
                    index.whiteouts.insert(p);
                }
                LayerItem::Opaque(p) => {
                    index.opaque.insert(p);
                }
                LayerItem::Ignore => {}
            }
            Ok(true)
        })?;
        Ok(index)
    }
}

#[derive(Debug)]
pub struct StageView<'a> {
    base: Option<&'a Archive>,
    /// Bottom first.
    layers: Vec<Arc<LayerIndex>>,
}

impl<'a> StageView<'a> {
    /// The view of `base` under `layers`, bottom first.
    pub fn new(base: Option<&'a Archive>, layers: Vec<Arc<LayerIndex>>) -> StageView<'a> {
        StageView { base, layers }
    }

    /// What is at `path` (relative to the root, no symlink followed).
    pub fn lookup(&self, path: &[u8]) -> Result<Option<Found>, ViewError> {
        for layer in self.layers.iter().rev() {
            if let Some(found) = layer.entries.get(path) {
                return Ok(Some(found.clone()));
            }
            if layer.whiteouts.contains(path) {
                return Ok(None);
            }
            for a in ancestors(path) {
                if layer.whiteouts.contains(a) || layer.opaque.contains(a) {
                    return Ok(None);
                }
                if let Some(Found::Symlink { .. } | Found::Other { .. }) = layer.entries.get(a) {
                    return Ok(None);
                }
            }
        }
        let Some(base) = self.base else {
            return Ok(None);
        };
        let Some(node) = base.lookup_path(path)? else {
            return Ok(None);
        };
        let stat = node.stat();
        let owner = (stat.uid, stat.gid);
        let mtime = u32::try_from(stat.mtime).unwrap_or(0);
        let mode = stat.mode & 0o7777;
        Ok(Some(match &node.inode().body {
            InodeBody::Dir(_) => Found::Dir { mode, mtime, owner },
            InodeBody::Symlink(s) => Found::Symlink {
                target: s.target.clone(),
                mtime,
                owner,
            },
            _ => Found::Other { mode, mtime, owner },
        }))
    }
}

/// A skeleton being made in `root`.
#[derive(Debug)]
pub struct Skeleton<'v, 'a> {
    view: &'v StageView<'a>,
    root: PathBuf,
    made: HashSet<Vec<u8>>,
    /// Directories made, with their mode and mtime, set at the end.
    dirs: Vec<(PathBuf, u32, u32)>,
    pub owners: Owners,
}

impl<'v, 'a> Skeleton<'v, 'a> {
    pub fn new(view: &'v StageView<'a>, root: &Path) -> Skeleton<'v, 'a> {
        Skeleton {
            view,
            root: root.to_path_buf(),
            made: HashSet::new(),
            dirs: Vec::new(),
            owners: Owners::new(),
        }
    }

    /// Makes what the stage has along `path` (inside the image), as the
    /// kernel would walk it: symlinks followed inside the image (the
    /// last one too), `..` stopping at the root; stops below a
    /// non-directory (below what the stage lacks, nothing is found).
    pub fn add_path(&mut self, path: &str) -> Result<(), ViewError> {
        let mut failed = None;
        let resolved = resolve_in_root(path.as_bytes(), true, MAX_LINKS, |rel| {
            if failed.is_some() {
                return LayerPath::NonDirectory;
            }
            match self.make(rel) {
                Ok(Some(Found::Symlink { target, .. })) => LayerPath::Symlink(target),
                Ok(Some(Found::Other { .. })) => LayerPath::NonDirectory,
                Ok(Some(Found::Dir { .. }) | None) => LayerPath::Directory,
                Err(e) => {
                    failed = Some(e);
                    LayerPath::NonDirectory
                }
            }
        });
        if let Some(e) = failed {
            return Err(e);
        }
        match resolved {
            Resolved::Loop => Err(ViewError::Loop {
                path: path.to_owned(),
            }),
            Resolved::At(_) | Resolved::BelowNonDirectory(_) => Ok(()),
        }
    }

    /// Makes the entry at `rel` (its parents are made) as the stage has it.
    fn make(&mut self, rel: &[u8]) -> Result<Option<Found>, ViewError> {
        let found = self.view.lookup(rel)?;
        if self.made.contains(rel) {
            return Ok(found);
        }
        let host = self.root.join(OsStr::from_bytes(rel));
        match &found {
            Some(Found::Dir { mode, mtime, owner }) => {
                fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&host)
                    .map_err(io_err("creating", &host))?;
                self.dirs.push((host, *mode, *mtime));
                self.owners.insert(rel.to_vec(), *owner);
            }
            Some(Found::Symlink {
                target,
                mtime,
                owner,
            }) => {
                std::os::unix::fs::symlink(OsStr::from_bytes(target), &host)
                    .map_err(io_err("creating", &host))?;
                set_mtime(&host, (*mtime).into(), true)?;
                self.owners.insert(rel.to_vec(), *owner);
            }
            Some(Found::Other { mode, mtime, owner }) => {
                fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&host)
                    .map_err(io_err("creating", &host))?;
                fs::set_permissions(&host, fs::Permissions::from_mode(*mode))
                    .map_err(io_err("setting the mode of", &host))?;
                set_mtime(&host, (*mtime).into(), false)?;
                self.owners.insert(rel.to_vec(), *owner);
            }
            None => {}
        }
        self.made.insert(rel.to_vec());
        Ok(found)
    }

    /// Gives the directories made their modes and mtimes (deepest first:
    /// making a child moved its parent's mtime).
    pub fn finish(self) -> Result<Owners, ViewError> {
        for (dir, mode, mtime) in self.dirs.iter().rev() {
            fs::set_permissions(dir, fs::Permissions::from_mode(*mode))
                .map_err(io_err("setting the mode of", dir))?;
            set_mtime(dir, (*mtime).into(), false)?;
        }
        Ok(self.owners)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::tarwrite::{EntryHeader, TarWriter};
    use crate::squashfs::writer::{Compression, EntryMeta, Writer, WriterOptions};
    use std::os::unix::fs::MetadataExt;

    fn meta(mode: u16, uid: u32) -> EntryMeta {
        EntryMeta {
            mode,
            uid,
            gid: uid,
            mtime: 1000,
            xattrs: Vec::new(),
        }
    }

    /// A merged-/usr base (`lib -> usr/lib`), a file, a directory with a
    /// child; a layer that deletes the file, makes the directory opaque
    /// with a child of its own, and adds a symlink.
    fn stage(dir: &Path) -> (PathBuf, PathBuf) {
        let base = dir.join("base.sqfs");
        let options = WriterOptions {
            compression: Compression::Lz4,
            block_size: 4096,
            mkfs_time: Some(0),
            durable: false,
        };
        let mut w = Writer::create(&base, options).expect("create");
        w.add_dir(b"usr", meta(0o755, 0)).expect("usr");
        w.add_dir(b"usr/lib", meta(0o750, 3)).expect("usr/lib");
        w.add_symlink(b"lib", meta(0o777, 0), b"usr/lib")
            .expect("lib");
        w.add_dir(b"etc", meta(0o755, 0)).expect("etc");
        w.add_file(b"etc/motd", meta(0o644, 0), &mut &b"hi"[..])
            .expect("motd");
        w.add_dir(b"opt", meta(0o755, 0)).expect("opt");
        w.add_dir(b"opt/a", meta(0o755, 0)).expect("opt/a");
        w.add_file(b"opt/a/x", meta(0o644, 0), &mut &b"x"[..])
            .expect("x");
        w.finish().expect("finish");
        let layer = dir.join("layer.tar");
        let mut tar = TarWriter {
            out: fs::File::create(&layer).expect("layer"),
            entries: 0,
        };
        for (path, typeflag, link) in [
            ("etc/.wh.motd", b'0', ""),
            ("opt/a/", b'5', ""),
            ("opt/a/.wh..wh..opq", b'0', ""),
            ("opt/a/y", b'0', ""),
            ("app", b'2', "/opt/a"),
        ] {
            let h = EntryHeader {
                path: path.as_bytes().to_vec(),
                typeflag,
                mode: 0o755,
                uid: 7,
                gid: 7,
                mtime: 2000,
                linkname: link.as_bytes().to_vec(),
                ..EntryHeader::default()
            };
            tar.entry::<io::Error>(&h, |out| out.write_all(b""))
                .expect("entry");
        }
        tar.finish().expect("end");
        (base, layer)
    }

    #[test]
    fn the_view_sees_the_layers_over_the_base() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (base, layer) = stage(dir.path());
        let archive = Archive::open(&base).expect("open");
        let view = StageView::new(
            Some(&archive),
            vec![Arc::new(LayerIndex::read(&layer).expect("index"))],
        );
        let kind = |p: &str| view.lookup(p.as_bytes()).expect("lookup");
        assert!(matches!(kind("lib"), Some(Found::Symlink { target, .. }) if target == b"usr/lib"));
        assert!(matches!(
            kind("usr/lib"),
            Some(Found::Dir {
                mode: 0o750,
                owner: (3, 3),
                ..
            })
        ));
        assert_eq!(kind("etc/motd"), None);
        assert_eq!(kind("opt/a/x"), None);
        assert!(matches!(
            kind("opt/a/y"),
            Some(Found::Other { owner: (7, 7), .. })
        ));
        assert!(matches!(
            kind("opt/a"),
            Some(Found::Dir { mtime: 2000, .. })
        ));
        assert_eq!(kind("nothing/here"), None);
        assert_eq!(kind("etc/motd/below"), None);
    }

    #[test]
    fn a_skeleton_follows_symlinks_and_keeps_modes_times_and_owners() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (base, layer) = stage(dir.path());
        let archive = Archive::open(&base).expect("open");
        let view = StageView::new(
            Some(&archive),
            vec![Arc::new(LayerIndex::read(&layer).expect("index"))],
        );
        let root = dir.path().join("skeleton");
        fs::create_dir(&root).expect("root");
        let mut skeleton = Skeleton::new(&view, &root);
        skeleton.add_path("/lib/new/file").expect("lib");
        skeleton.add_path("/app/y").expect("app");
        skeleton.add_path("/etc/motd").expect("motd");
        let owners = skeleton.finish().expect("finish");
        assert_eq!(
            fs::read_link(root.join("lib")).expect("lib"),
            Path::new("usr/lib")
        );
        let usr_lib = fs::metadata(root.join("usr/lib")).expect("usr/lib");
        assert_eq!(usr_lib.mode() & 0o7777, 0o750);
        assert_eq!(usr_lib.mtime(), 1000);
        assert_eq!(owners.get(&b"usr/lib"[..]), Some(&(3, 3)));
        assert!(fs::symlink_metadata(root.join("usr/lib/new")).is_err());
        assert!(root.join("opt/a/y").is_file());
        assert!(fs::symlink_metadata(root.join("opt/a/x")).is_err());
        assert!(fs::symlink_metadata(root.join("etc/motd")).is_err());
        assert!(root.join("etc").is_dir());
    }
}
