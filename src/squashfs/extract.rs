//! Extracting a squashfs image, possibly hostile, into a new directory
//! (`cairn unsquash`, like `unsquashfs -d DIR IMAGE`).
//!
//! Everything is extracted into a temporary directory beside DIR and renamed
//! into place at the end, so an error never leaves a half-extracted DIR.
//! Names come from the reader already checked to be single path components,
//! and every object is created exclusively (mkdir, O_EXCL, symlink, mknod,
//! link all fail on an existing name), so extraction never writes through a
//! symlink it created, even when a hostile image repeats a name. Hard links
//! are made only to what this extraction created, and `link(2)` does not
//! follow a symlink, so a link never reaches outside the tree either.
//!
//! Entries are made relative to a handle of their directory (`mkdirat`,
//! `openat`, ...) and a file or directory is set up through its own handle
//! (`fchmod`, `futimens`, ...): no entry costs a walk of its path from the
//! root (through /proc/self/fd), three or four per file before. A file's
//! blocks are written from the reader's cache, not copied into a buffer
//! first. The MPI test image into /dev/shm, as the user: 0.717 s -> 0.653
//! s (handles) -> 0.622 s (no copy); unsquashfs 0.672 s.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::io::Errno;

use crate::squashfs::format::{
    DATA_SIZE_MASK, FileInode, InodeBody, NO_FRAGMENT, bytes_in_block, decode_rdev,
};
use crate::squashfs::reader::{
    Archive, CacheSizes, InodeRef, Node, ReadError, WalkEvent, WalkLimits,
};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// One variant per failing step, each naming the path as the user knows it.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("cannot stat {path}")]
    Stat {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot list {path}")]
    List {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} already exists and is not empty")]
    NotEmpty { path: PathBuf },
    #[error("{path} already exists and is not a directory")]
    NotADirectory { path: PathBuf },
    #[error("{path} has no final component")]
    NoFinalComponent { path: PathBuf },
    /// The image cannot be read (open, walk, data, xattrs).
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("cannot create the temporary directory {path}")]
    TempDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot rename {from} to {to}")]
    Rename {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot create directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot link {path} to {target}")]
    Link {
        path: PathBuf,
        target: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot create {path}")]
    CreateFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot create symlink {path}")]
    Symlink {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot create device {path}")]
    Device {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("cannot create fifo {path}")]
    Fifo {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("cannot create socket {path}")]
    Socket {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("{path} is a directory reached as a leaf")]
    DirectoryAsLeaf { path: PathBuf },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot set the size of {path}")]
    SetSize {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot change the owner of {path}")]
    Owner {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot set the mode of {path}")]
    Mode {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot set the mtime of {path}")]
    Mtime {
        path: PathBuf,
        #[source]
        source: Errno,
    },
}

/// What an extraction may make: as root, everything the image says; as an
/// ordinary user, files it owns, without devices (mknod needs root) or
/// setuid/setgid bits (a user's own setuid program is not what the image
/// meant), and only `user.*` xattrs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtractOptions {
    /// Give every entry the image's owner.
    pub owners: bool,
    /// Create device nodes.
    pub devices: bool,
    /// Warn about each device node not created (the caller wanted them but
    /// is not root); quietly skipped otherwise.
    pub warn_devices: bool,
    /// Keep setuid/setgid bits.
    pub setid: bool,
    /// Set xattrs other than `user.*`.
    pub all_xattrs: bool,
}

impl ExtractOptions {
    /// Everything the caller can make: all of it as root, a user's share
    /// otherwise.
    pub fn for_caller() -> ExtractOptions {
        let root = rustix::process::geteuid().is_root();
        ExtractOptions {
            owners: root,
            devices: root,
            warn_devices: !root,
            setid: root,
            all_xattrs: root,
        }
    }
}

/// Extract `image` into `dir`, which must not exist yet or be an empty
/// directory (see the module doc).
pub fn extract(image: &Path, dir: &Path) -> Result<(), ExtractError> {
    extract_with(image, dir, ExtractOptions::for_caller())
}

/// [`extract`] with explicit [`ExtractOptions`].
pub fn extract_with(image: &Path, dir: &Path, options: ExtractOptions) -> Result<(), ExtractError> {
    check_destination(dir)?;
    let archive = Archive::open_with(image, READ_AHEAD_CACHES)?;
    let name = dir
        .file_name()
        .ok_or_else(|| ExtractError::NoFinalComponent {
            path: dir.to_path_buf(),
        })?;
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
    let handles = TempDir::create(&parent, &tmp_name).map_err(|source| ExtractError::TempDir {
        path: tmp.clone(),
        source,
    })?;
    let block_size = u64::from(archive.superblock().block_size).max(1);
    let ahead = ReadAhead {
        limit: (AHEAD_BYTES / block_size).clamp(8, READ_AHEAD_CACHES.data_blocks as u64 / 2),
        ..ReadAhead::default()
    };
    let mut ex = Extractor {
        archive: &archive,
        root: handles.root(),
        shown_root: tmp.clone(),
        options,
        links: HashMap::new(),
        dirs: Vec::new(),
        ahead: &ahead,
    };
    let walked = std::thread::scope(|scope| {
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        // As many decompressing threads as CPUs (the writing thread mostly
        // waits in the kernel), up to MAX_AHEAD_THREADS; none on one CPU.
        let threads = if cpus > 1 {
            cpus.min(MAX_AHEAD_THREADS)
        } else {
            0
        };
        for share in 0..threads {
            // Best effort: a share whose thread cannot start is left to
            // the extraction to decompress for itself.
            let _ = std::thread::Builder::new()
                .name("cairn-unpack-ahead".into())
                .spawn_scoped(scope, {
                    let (archive, ahead) = (&archive, &ahead);
                    move || read_ahead(archive, ahead, share, threads)
                });
        }
        let walked = archive.walk(WalkLimits::default(), |event| ex.visit(event));
        ahead.stop.store(true, Ordering::Relaxed);
        walked
    });
    let result = walked.and_then(|()| {
        handles
            .rename_to(name)
            .map_err(|source| ExtractError::Rename {
                from: tmp.clone(),
                to: dir.to_path_buf(),
                source,
            })
    });
    if let Err(e) = result {
        remove_tree(&handles.root());
        let _ = handles.remove();
        return Err(e);
    }
    Ok(())
}

/// `dir` must be absent or an empty directory.
fn check_destination(dir: &Path) -> Result<(), ExtractError> {
    match fs::symlink_metadata(dir) {
        Ok(meta) if meta.is_dir() => {
            let mut entries = fs::read_dir(dir).map_err(|source| ExtractError::List {
                path: dir.to_path_buf(),
                source,
            })?;
            if entries.next().is_some() {
                return Err(ExtractError::NotEmpty {
                    path: dir.to_path_buf(),
                });
            }
            Ok(())
        }
        Ok(_) => Err(ExtractError::NotADirectory {
            path: dir.to_path_buf(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(ExtractError::Stat {
            path: dir.to_path_buf(),
            source,
        }),
    }
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
/// may already carry read-only modes, so make them writable first. The
/// entries go; `root` itself stays.
pub fn remove_tree(root: &Path) {
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

/// The archive's caches for an extraction: room for what the read-ahead
/// threads decompress before the extraction wants it (32 MiB of data
/// and 8 MiB of fragments at 128 KiB blocks).
const READ_AHEAD_CACHES: CacheSizes = CacheSizes {
    metadata_blocks: 1024,
    fragments: 64,
    data_blocks: 256,
};

/// The most read-ahead threads an extraction starts.
const MAX_AHEAD_THREADS: usize = 4;

/// Bytes the read-ahead may be ahead of the extraction: at most half the
/// data cache at 128 KiB blocks (what it loads is still there when
/// wanted), and a bounded amount of memory at any block size.
const AHEAD_BYTES: u64 = 16 << 20;

/// Shared between the extraction and its read-ahead threads.
#[derive(Debug, Default)]
struct ReadAhead {
    /// Blocks the read-ahead threads may be ahead ([`AHEAD_BYTES`] in
    /// blocks).
    limit: u64,
    /// Blocks (data blocks and tails, see [`blocks_of`]) of the files the
    /// extraction has passed, in walk order.
    passed: AtomicU64,
    stop: AtomicBool,
}

/// What a file counts for the read-ahead's distance: its data blocks and
/// its tail (the extraction counts each as it writes it; a second name of
/// a file, which the read-ahead walks too, all at once).
fn blocks_of(node: &Node) -> u64 {
    match &node.inode().body {
        InodeBody::File(f) => f.block_sizes.len() as u64 + u64::from(f.frag_index != NO_FRAGMENT),
        _ => 0,
    }
}

/// Decompresses the files' blocks and tails into the archive's caches,
/// walking in the extraction's order and staying at most `ahead.limit`
/// blocks ahead of it: decompressing and writing the files then overlap
/// (decompressing was two thirds of the extraction's CPU). `threads` of
/// these walk alike, each decompressing its `share` of the runs of blocks
/// (every `threads`-th) and of the fragment blocks (by index, so that no
/// two decompress the same one). Errors are left for the extraction to
/// meet and report.
fn read_ahead(archive: &Archive, ahead: &ReadAhead, share: usize, threads: usize) {
    /// Blocks decompressed between two looks at the distance.
    const CHUNK: usize = 8;
    enum Halt {
        Stop,
        Read,
    }
    impl From<ReadError> for Halt {
        fn from(_: ReadError) -> Halt {
            Halt::Read
        }
    }
    let mut loaded = 0u64;
    // Runs of blocks seen so far, in walk order: the thread's own are
    // those with `runs % threads == share`.
    let mut runs = 0usize;
    let threads = threads.max(1);
    // Waits until `more` blocks fit in the distance.
    let wait_room = |loaded: u64, more: u64| -> Result<(), Halt> {
        while loaded + more > ahead.passed.load(Ordering::Acquire) + ahead.limit {
            if ahead.stop.load(Ordering::Relaxed) {
                return Err(Halt::Stop);
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        if ahead.stop.load(Ordering::Relaxed) {
            return Err(Halt::Stop);
        }
        Ok(())
    };
    let _ = archive.walk(WalkLimits::default(), |event| -> Result<(), Halt> {
        let WalkEvent::Leaf { node, .. } = event else {
            return Ok(());
        };
        let InodeBody::File(f) = &node.inode().body else {
            return Ok(());
        };
        let blocks = f.block_sizes.len();
        let mut at = 0;
        while at < blocks {
            let chunk = CHUNK.min(blocks - at);
            if runs % threads == share {
                wait_room(loaded, chunk as u64)?;
                archive.prefetch_from(node, at, chunk)?;
            }
            runs += 1;
            at += chunk;
            loaded += chunk as u64;
        }
        if f.frag_index != NO_FRAGMENT && f.file_size > 0 {
            if f.frag_index as usize % threads == share {
                wait_room(loaded, 1)?;
                // One byte of the tail loads its fragment block.
                archive.read_at(node, f.file_size - 1, &mut [0u8])?;
            }
            loaded += 1;
        }
        Ok(())
    });
}

struct Extractor<'a> {
    archive: &'a Archive,
    ahead: &'a ReadAhead,
    /// Where things are made: the temporary directory through its handle
    /// (`/proc/self/fd/N/.`), for the few calls that take a path.
    root: PathBuf,
    /// Handles of the directories from the root to the one being filled:
    /// entries are made and set up relative to the innermost (`*at` calls
    /// and the new file's own handle), so no call walks a path from the
    /// root, and none follows a symlink on the way.
    dirs: Vec<OwnedFd>,
    /// The same directory by its name, for messages.
    shown_root: PathBuf,
    options: ExtractOptions,
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

    fn visit(&mut self, event: WalkEvent<'_>) -> Result<(), ExtractError> {
        match event {
            WalkEvent::EnterDir { path, .. } => {
                let dir = if path.is_empty() {
                    self.open_root()
                } else {
                    self.make_dir(path)
                };
                let dir = dir.map_err(|source| ExtractError::CreateDir {
                    path: self.show(&self.path(path)),
                    source,
                })?;
                self.dirs.push(dir);
            }
            WalkEvent::LeaveDir { path, node } => {
                let dir = self.dirs.pop().ok_or_else(|| ExtractError::CreateDir {
                    path: self.show(&self.path(path)),
                    source: io::Error::other("left a directory never entered"),
                })?;
                self.set_attributes(&self.path(path), Made::Open(dir.as_fd()), node)?;
            }
            WalkEvent::Leaf { path, node, .. } => {
                let p = self.path(path);
                let (parent, name) = self.parent_of(path, &p)?;
                if let Some(first) = self.links.get(&node.inode_ref()) {
                    self.ahead
                        .passed
                        .fetch_add(blocks_of(node), Ordering::Release);
                    // linkat(2) without AT_SYMLINK_FOLLOW does not follow
                    // a symlink `first`: a link to a symlink is another
                    // symlink, never its target.
                    rustix::fs::linkat(
                        rustix::fs::CWD,
                        first,
                        parent,
                        name,
                        rustix::fs::AtFlags::empty(),
                    )
                    .map_err(|e| ExtractError::Link {
                        path: self.show(&p),
                        target: self.show(first),
                        source: e.into(),
                    })?;
                    return Ok(());
                }
                if self.create_leaf(&p, parent, name, node)? {
                    self.links.insert(node.inode_ref(), p);
                }
            }
        }
        Ok(())
    }

    /// The root: the temporary directory itself, by a handle of its own.
    fn open_root(&self) -> io::Result<OwnedFd> {
        use rustix::fs::{CWD, Mode, OFlags, openat};
        Ok(openat(
            CWD,
            &self.root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?)
    }

    /// Makes the directory `path` in the innermost one entered and opens
    /// it: owner-writable until LeaveDir sets the real mode. O_NOFOLLOW:
    /// what is opened is what mkdirat made (a hostile image repeating the
    /// name of a symlink made it fail already, with EEXIST).
    fn make_dir(&self, path: &[u8]) -> io::Result<OwnedFd> {
        use rustix::fs::{Mode, OFlags, mkdirat, openat};
        let parent = self
            .dirs
            .last()
            .ok_or_else(|| io::Error::other("a directory outside the root"))?;
        let name = last_component(path);
        mkdirat(parent, name, Mode::from_raw_mode(0o700))?;
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        Ok(openat(parent, name, flags, Mode::empty())?)
    }

    /// The innermost directory entered and `path`'s name in it.
    fn parent_of<'p>(
        &self,
        path: &'p [u8],
        p: &Path,
    ) -> Result<(BorrowedFd<'_>, &'p OsStr), ExtractError> {
        let parent = self.dirs.last().ok_or_else(|| ExtractError::CreateFile {
            path: self.show(p),
            source: io::Error::other("an entry outside the root"),
        })?;
        Ok((parent.as_fd(), OsStr::from_bytes(last_component(path))))
    }

    /// Create a non-directory named `name` in `parent` (`p` is its path,
    /// for messages); false if it was skipped (a device as a user).
    fn create_leaf(
        &self,
        p: &Path,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        node: &Node,
    ) -> Result<bool, ExtractError> {
        use rustix::fs::{FileType, Mode, OFlags, mknodat, openat, symlinkat};
        let perm = Mode::from_raw_mode(0o600);
        let made = match &node.inode().body {
            InodeBody::File(f) => {
                // O_EXCL | O_NOFOLLOW: a new file or nothing.
                let flags = OFlags::WRONLY
                    | OFlags::CREATE
                    | OFlags::EXCL
                    | OFlags::NOFOLLOW
                    | OFlags::CLOEXEC;
                let file = File::from(openat(parent, name, flags, perm).map_err(|e| {
                    ExtractError::CreateFile {
                        path: self.show(p),
                        source: e.into(),
                    }
                })?);
                self.write_contents(&file, p, node, f)?;
                self.set_attributes(p, Made::Open(file.as_fd()), node)?;
                return Ok(true);
            }
            InodeBody::Symlink(s) => {
                symlinkat(OsStr::from_bytes(&s.target), parent, name).map_err(|e| {
                    ExtractError::Symlink {
                        path: self.show(p),
                        source: e.into(),
                    }
                })?;
                self.set_attributes(p, Made::Symlink(parent, name), node)?;
                return Ok(true);
            }
            InodeBody::BlockDev(d) | InodeBody::CharDev(d) => {
                if !self.options.devices {
                    if self.options.warn_devices {
                        tracing::warn!(
                            "skipping device {}: creating devices needs root",
                            self.show(p).display()
                        );
                    } else {
                        tracing::debug!("skipping device {}", self.show(p).display());
                    }
                    return Ok(false);
                }
                let (major, minor) = decode_rdev(d.rdev);
                let ty = if matches!(node.inode().body, InodeBody::BlockDev(_)) {
                    FileType::BlockDevice
                } else {
                    FileType::CharacterDevice
                };
                mknodat(parent, name, ty, perm, rustix::fs::makedev(major, minor)).map_err(
                    |source| ExtractError::Device {
                        path: self.show(p),
                        source,
                    },
                )?;
                true
            }
            InodeBody::Fifo(_) => {
                mknodat(parent, name, FileType::Fifo, perm, 0).map_err(|source| {
                    ExtractError::Fifo {
                        path: self.show(p),
                        source,
                    }
                })?;
                true
            }
            InodeBody::Socket(_) => {
                mknodat(parent, name, FileType::Socket, perm, 0).map_err(|source| {
                    ExtractError::Socket {
                        path: self.show(p),
                        source,
                    }
                })?;
                true
            }
            InodeBody::Dir(_) => {
                return Err(ExtractError::DirectoryAsLeaf { path: self.show(p) });
            }
        };
        self.set_attributes(p, Made::Special(parent, name), node)?;
        Ok(made)
    }

    /// Write a file's data block by block; holes stay holes (never written,
    /// the final `set_len` covers a trailing one).
    fn write_contents(
        &self,
        file: &File,
        p: &Path,
        node: &Node,
        f: &FileInode,
    ) -> Result<(), ExtractError> {
        let block_size = self.archive.superblock().block_size;
        let mut off = 0u64;
        let mut block = 0usize;
        while off < f.file_size {
            let len = bytes_in_block(f.file_size - off, block_size) as usize;
            let hole = f
                .block_sizes
                .get(block)
                .is_some_and(|w| w & DATA_SIZE_MASK == 0);
            if !hole {
                // One whole block (or the tail) at a time: written from the
                // reader's cache as it is, no copy and no buffer to zero.
                let written = self.archive.with_bytes(node, off, len, |bytes| {
                    if bytes.len() != len {
                        return Err(ReadError::BadInode {
                            inode: format!("{:#x}", node.inode_ref().0),
                            reason: format!("short read of {} bytes at {off}", bytes.len()),
                        }
                        .into());
                    }
                    file.write_all_at(bytes, off)
                        .map_err(|source| ExtractError::Write {
                            path: self.show(p),
                            source,
                        })
                })?;
                written?;
            }
            off += len as u64;
            block += 1;
            self.ahead.passed.fetch_add(1, Ordering::Release);
        }
        file.set_len(f.file_size)
            .map_err(|source| ExtractError::SetSize {
                path: self.show(p),
                source,
            })
    }

    /// Owner (as root), mode (setuid/setgid only as root, like unsquashfs),
    /// xattrs (user.* always, others as root; failures are warnings) and
    /// mtime, of what was just made (`p` is its path, for messages and for
    /// the calls only a path reaches), never following a symlink.
    fn set_attributes(&self, p: &Path, made: Made<'_>, node: &Node) -> Result<(), ExtractError> {
        use rustix::fs::{AtFlags, Mode, Timespec, Timestamps, XattrFlags};
        let st = node.stat();
        if self.options.owners {
            match made {
                Made::Open(fd) => std::os::unix::fs::fchown(fd, Some(st.uid), Some(st.gid)),
                Made::Symlink(..) | Made::Special(..) => {
                    std::os::unix::fs::lchown(p, Some(st.uid), Some(st.gid))
                }
            }
            .map_err(|source| ExtractError::Owner {
                path: self.show(p),
                source,
            })?;
        }
        for (name, value) in self.archive.xattrs(node)? {
            if !self.options.all_xattrs && !name.starts_with(b"user.") {
                continue;
            }
            let key = OsStr::from_bytes(&name);
            let set = match made {
                Made::Open(fd) => rustix::fs::fsetxattr(fd, key, &value, XattrFlags::empty()),
                Made::Symlink(..) | Made::Special(..) => {
                    rustix::fs::lsetxattr(p, key, &value, XattrFlags::empty())
                }
            };
            if let Err(e) = set {
                tracing::warn!(
                    "cannot set xattr {} on {}: {e}",
                    key.to_string_lossy(),
                    self.show(p).display()
                );
            }
        }
        let mut mode = st.mode & 0o7777;
        if !self.options.setid {
            mode &= !0o6000;
        }
        let mode = Mode::from_raw_mode(mode);
        let chmod = match made {
            Made::Open(fd) => rustix::fs::fchmod(fd, mode),
            Made::Special(dir, name) => rustix::fs::chmodat(dir, name, mode, AtFlags::empty()),
            // A symlink has no mode of its own.
            Made::Symlink(..) => Ok(()),
        };
        chmod.map_err(|e| ExtractError::Mode {
            path: self.show(p),
            source: e.into(),
        })?;
        let t = Timespec {
            tv_sec: st.mtime,
            tv_nsec: 0,
        };
        let times = Timestamps {
            last_access: t,
            last_modification: t,
        };
        match made {
            Made::Open(fd) => rustix::fs::futimens(fd, &times),
            Made::Symlink(dir, name) | Made::Special(dir, name) => {
                rustix::fs::utimensat(dir, name, &times, AtFlags::SYMLINK_NOFOLLOW)
            }
        }
        .map_err(|e| ExtractError::Mtime {
            path: self.show(p),
            source: e,
        })
    }
}

/// What `set_attributes` sets up, and how it is reached.
#[derive(Clone, Copy)]
enum Made<'a> {
    /// A file or a directory, by its own handle.
    Open(BorrowedFd<'a>),
    /// A symlink, by its name in its directory.
    Symlink(BorrowedFd<'a>, &'a OsStr),
    /// A device, FIFO or socket (never opened: opening a FIFO blocks), by
    /// its name in its directory. The name is one cairn just made in a
    /// directory only cairn writes, so nothing else can stand there.
    Special(BorrowedFd<'a>, &'a OsStr),
}

/// The last component of a walk path ('/'-separated, non-empty).
fn last_component(path: &[u8]) -> &[u8] {
    path.rsplit(|&b| b == b'/').next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    //! Hostile images, made with cairn's own writer (everything stored raw)
    //! and then patched where the writer would refuse: whatever the image
    //! says, nothing is made outside DIR, and a refused image leaves
    //! neither DIR nor a temporary directory beside it.

    use super::*;
    use crate::squashfs::writer::{Compression, EntryMeta, Writer, WriterOptions};
    use std::os::unix::fs::MetadataExt;

    fn meta(mode: u16) -> EntryMeta {
        EntryMeta {
            mode,
            mtime: 1,
            ..EntryMeta::default()
        }
    }

    /// A scratch tree: `outside/` (must stay as it is), `work/image.sqfs`
    /// and `work/dest` (the extraction's DIR, relative `../../outside` from
    /// inside it).
    struct Sandbox {
        _tmp: tempfile::TempDir,
        outside: PathBuf,
        work: PathBuf,
        image: PathBuf,
        dest: PathBuf,
    }

    impl Sandbox {
        fn new() -> Sandbox {
            let tmp = tempfile::tempdir().expect("tempdir");
            let outside = tmp.path().join("outside");
            let work = tmp.path().join("work");
            fs::create_dir(&outside).expect("outside");
            fs::create_dir(&work).expect("work");
            fs::write(outside.join("target"), b"precious\n").expect("target");
            Sandbox {
                image: work.join("image.sqfs"),
                dest: work.join("dest"),
                outside,
                work,
                _tmp: tmp,
            }
        }

        /// Writes the image with `build`'s entries, everything raw, so
        /// names and inodes can be found and patched in its bytes.
        fn write(&self, build: impl FnOnce(&mut Writer)) {
            let options = WriterOptions {
                compression: Compression::None,
                block_size: 4096,
                mkfs_time: Some(0),
                durable: false,
            };
            let mut w = Writer::create(&self.image, options).expect("create");
            build(&mut w);
            w.finish().expect("finish");
        }

        fn bytes(&self) -> Vec<u8> {
            fs::read(&self.image).expect("read image")
        }

        fn put_bytes(&self, bytes: &[u8]) {
            fs::write(&self.image, bytes).expect("write image");
        }

        /// Replaces the one occurrence of `from` (a name) by `to`.
        fn patch_name(&self, from: &[u8], to: &[u8]) {
            assert_eq!(from.len(), to.len());
            let mut bytes = self.bytes();
            let at = unique(&bytes, from);
            bytes[at..at + to.len()].copy_from_slice(to);
            self.put_bytes(&bytes);
        }

        fn extract(&self) -> Result<(), ExtractError> {
            extract(&self.image, &self.dest)
        }

        /// `outside/` holds its one file, unchanged and not linked to.
        fn assert_outside_untouched(&self) {
            let names: Vec<_> = fs::read_dir(&self.outside)
                .expect("list outside")
                .map(|e| e.expect("entry").file_name())
                .collect();
            assert_eq!(names, vec![OsStr::new("target")]);
            let target = self.outside.join("target");
            assert_eq!(fs::read(&target).expect("target"), b"precious\n");
            assert_eq!(fs::metadata(&target).expect("stat").nlink(), 1);
        }

        /// A refused image: nothing at DIR, no temporary directory beside it.
        fn assert_refused(&self, result: Result<(), ExtractError>) -> ExtractError {
            let err = result.expect_err("a hostile image must be refused");
            assert!(!self.dest.exists(), "{} left behind", self.dest.display());
            let left: Vec<_> = fs::read_dir(&self.work)
                .expect("list work")
                .map(|e| e.expect("entry").file_name())
                .collect();
            assert_eq!(left, vec![OsStr::new("image.sqfs")], "after {err}");
            self.assert_outside_untouched();
            err
        }
    }

    /// The index of the one occurrence of `needle` in `haystack`.
    fn unique(haystack: &[u8], needle: &[u8]) -> usize {
        let hits: Vec<usize> = haystack
            .windows(needle.len())
            .enumerate()
            .filter(|(_, w)| *w == needle)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(hits.len(), 1, "{needle:?} occurs {} times", hits.len());
        hits[0]
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
    }

    fn index(v: u64) -> usize {
        usize::try_from(v).expect("a small test image")
    }

    /// Where `path`'s inode is: its position in the image file (small
    /// images: the inode table is one raw metadata block, after its 2-byte
    /// header), its offset in that block, and its inode number.
    fn inode_of(image: &Path, path: &[u8]) -> (usize, u16, u32) {
        let archive = Archive::open(image).expect("open");
        let node = archive.lookup_path(path).expect("read").expect("found");
        let r = node.inode_ref();
        assert_eq!(r.block_start(), 0, "one metadata block");
        let start = index(archive.superblock().inode_table_start);
        (
            start + 2 + usize::from(r.offset()),
            r.offset(),
            node.inode().header.inode_number,
        )
    }

    #[test]
    fn a_good_image_extracts_with_its_links_inside() {
        let s = Sandbox::new();
        s.write(|w| {
            w.add_dir(b"d", meta(0o755)).expect("d");
            w.add_file(b"d/f", meta(0o644), &mut &b"data"[..])
                .expect("f");
            w.add_hardlink(b"d/g", b"d/f").expect("g");
            w.add_symlink(b"out", meta(0o777), b"../../outside/target")
                .expect("out");
            w.add_hardlink(b"out2", b"out").expect("out2");
        });
        s.extract().expect("extract");
        let f = fs::metadata(s.dest.join("d/f")).expect("f");
        let g = fs::metadata(s.dest.join("d/g")).expect("g");
        assert_eq!((f.dev(), f.ino(), f.nlink()), (g.dev(), g.ino(), 2));
        // A hard link to a symlink that points out is one more symlink,
        // never a link to its target.
        for name in ["out", "out2"] {
            let l = fs::symlink_metadata(s.dest.join(name)).expect(name);
            assert!(l.file_type().is_symlink(), "{name}");
            assert_eq!(
                fs::read_link(s.dest.join(name)).expect("readlink"),
                Path::new("../../outside/target")
            );
        }
        s.assert_outside_untouched();
    }

    #[test]
    fn names_with_dot_dot_or_a_slash_are_refused() {
        for (from, to) in [(&b"Qz"[..], &b".."[..]), (b"aQb", b"a/b"), (b"Qx", b".\0")] {
            let s = Sandbox::new();
            s.write(|w| {
                w.add_file(from, meta(0o644), &mut &b"payload"[..])
                    .expect("file");
            });
            s.patch_name(from, to);
            s.assert_refused(s.extract());
        }
    }

    #[test]
    fn a_repeated_name_never_writes_through_a_symlink() {
        // `esc` is a symlink out of DIR; a second `esc` (patched from `esd`)
        // is a directory with a file, or a file: creating either fails on
        // the existing name instead of following the link.
        let dir_then_file = |w: &mut Writer| {
            w.add_dir(b"esd", meta(0o755)).expect("dir");
            w.add_file(b"esd/pwned", meta(0o644), &mut &b"x"[..])
                .expect("file");
        };
        let file = |w: &mut Writer| {
            w.add_file(b"esd", meta(0o644), &mut &b"x"[..])
                .expect("file");
        };
        for (link, second) in [
            (
                &b"../../outside"[..],
                &dir_then_file as &dyn Fn(&mut Writer),
            ),
            (b"../../outside/pwned", &file),
        ] {
            let s = Sandbox::new();
            s.write(|w| {
                w.add_symlink(b"esc", meta(0o777), link).expect("link");
                second(w);
            });
            s.patch_name(b"esd", b"esc");
            s.assert_refused(s.extract());
        }
    }

    #[test]
    fn a_directory_loop_is_refused() {
        let s = Sandbox::new();
        s.write(|w| {
            w.add_dir(b"loopdir", meta(0o755)).expect("loopdir");
            w.add_dir(b"loopdir/child1", meta(0o755)).expect("child1");
        });
        let (_, dir_offset, dir_number) = inode_of(&s.image, b"loopdir");
        // child1's entry in loopdir's listing (the only one): a 12-byte
        // header (count, start block, base inode number), then offset,
        // inode number delta, type, name size, name. Point it at loopdir.
        let mut bytes = s.bytes();
        let name = unique(&bytes, b"child1");
        let entry = name - 8;
        let header = entry - 12;
        let base = u32_at(&bytes, header + 8);
        let delta = i16::try_from(i64::from(dir_number) - i64::from(base)).expect("delta");
        bytes[entry..entry + 2].copy_from_slice(&dir_offset.to_le_bytes());
        bytes[entry + 2..entry + 4].copy_from_slice(&delta.to_le_bytes());
        s.put_bytes(&bytes);
        let err = s.assert_refused(s.extract());
        assert!(err.to_string().contains("loop"), "{err}");
    }

    #[test]
    fn a_truncated_image_is_refused() {
        let s = Sandbox::new();
        s.write(|w| {
            let data: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
            w.add_file(b"blocks", meta(0o644), &mut &data[..])
                .expect("blocks");
            w.add_file(b"small", meta(0o644), &mut &b"tail"[..])
                .expect("small");
        });
        let good = s.bytes();
        // The file is padded to 4 KiB like mksquashfs's; what counts is
        // what the superblock says it uses.
        let used = index(
            Archive::open(&s.image)
                .expect("open")
                .superblock()
                .bytes_used,
        );
        for len in [0, 50, 96, used / 2, used - 1] {
            s.put_bytes(&good[..len]);
            s.assert_refused(s.extract());
        }
    }

    #[test]
    fn an_absurd_file_size_is_refused() {
        let s = Sandbox::new();
        s.write(|w| {
            w.add_file(b"big", meta(0o644), &mut &[7u8; 10_000][..])
                .expect("big");
        });
        let (at, _, _) = inode_of(&s.image, b"big");
        let mut bytes = s.bytes();
        // A basic file inode (type 2): its u32 file size is at +28.
        assert_eq!(u16::from_le_bytes([bytes[at], bytes[at + 1]]), 2);
        bytes[at + 28..at + 32].copy_from_slice(&u32::MAX.to_le_bytes());
        s.put_bytes(&bytes);
        s.assert_refused(s.extract());
    }

    #[test]
    fn a_destination_in_use_is_refused_untouched() {
        let s = Sandbox::new();
        s.write(|w| w.add_dir(b"d", meta(0o755)).expect("d"));
        fs::create_dir(&s.dest).expect("dest");
        fs::write(s.dest.join("keep"), b"k").expect("keep");
        assert!(matches!(s.extract(), Err(ExtractError::NotEmpty { .. })));
        assert_eq!(fs::read(s.dest.join("keep")).expect("kept"), b"k");
        fs::remove_dir_all(&s.dest).expect("rm");
        fs::write(&s.dest, b"a file").expect("file");
        assert!(matches!(
            s.extract(),
            Err(ExtractError::NotADirectory { .. })
        ));
    }
}
