//! The in-process FUSE server: a read-only filesystem over a squashfs
//! [`Archive`], served by `fuser` with several worker threads on a
//! `/dev/fuse` fd that the caller mounted with mount(2) (no libfuse, no
//! fusermount), plus the pure pieces it needs: node-id mapping, the mount
//! data string, and the conversion of a squashfs stat to FUSE attributes.
//!
//! Order of use (the kernel queues its INIT request when mount(2) succeeds,
//! and `serve` answers it first):
//! 1. [`open_device`] opens `/dev/fuse`;
//! 2. [`mount`] mounts it at the target (inside the job's user + mount
//!    namespace, where FUSE may be mounted without privilege);
//! 3. [`serve`], in the helper process outside that namespace, answers
//!    requests until the last user of the mount is gone (the kernel then
//!    drops the connection and the read on the fd returns `ENODEV`).
//!
//! Node ids: FUSE's root is 1; any other inode reference `r` is node id
//! `r + 2`. The mapping is its own inverse table, so every worker decodes a
//! node id without shared state. A side effect of `fuser`'s API (it uses the
//! node id as `st_ino`) is that `st_ino` is that node id, not the inode
//! number stored in the image; hard links share an inode reference, hence
//! an `st_ino`, as they must.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, InitFlags, IoctlFlags, KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyOpen, ReplyStatfs,
    ReplyXattr, Request, SessionACL,
};
use nix::mount::MsFlags;

use super::ahead;
use crate::squashfs::format::inode_type;
use crate::squashfs::reader::{Archive, DirEntry, InodeRef, Node, ReadError, Stat, StoreOptions};
use crate::sync::lock;
use crate::sys;

/// What went wrong opening, mounting or serving a FUSE filesystem.
#[derive(Debug, thiserror::Error)]
pub enum FuseError {
    #[error("cannot open {path}")]
    OpenDevice {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot mount the FUSE filesystem at {target} (mount data {data:?})")]
    Mount {
        target: PathBuf,
        data: String,
        #[source]
        source: nix::Error,
    },
    #[error("cannot read the squashfs root directory")]
    Root(#[source] ReadError),
    #[error("FUSE handshake with the kernel failed")]
    Handshake(#[source] std::io::Error),
    /// fuser starts the workers (and clones the device for each) inside
    /// its session loop, so a failure to start them ends up here too.
    #[error(
        "FUSE session with {threads} worker threads{} ended with an error",
        clone_note(.clone_fd)
    )]
    Session {
        threads: usize,
        clone_fd: bool,
        #[source]
        source: std::io::Error,
    },
}

fn clone_note(clone_fd: &bool) -> &'static str {
    if *clone_fd {
        " (a /dev/fuse fd each)"
    } else {
        ""
    }
}

/// The most worker threads a server runs (`--fuse-threads`, the config's
/// `fuse_threads`). Each worker blocks in a read of the device with a
/// 16 MiB request buffer (fuser sizes it for the largest write) and, with
/// `clone_fd`, holds a device fd of its own: 256 of them already reserve
/// 4 GiB of address space and 256 fds, while the requests a job keeps in
/// flight are bound by its own threads doing I/O (and the kernel's
/// `max_background`, 12 by default, for readahead). More than this is a
/// typo, not a tuning: 20000 workers cannot even start on most nodes.
pub const MAX_THREADS: usize = 256;

/// How the server runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeOptions {
    /// Worker threads reading requests from the device.
    pub threads: usize,
    /// How long the kernel may cache entries and attributes. The image
    /// never changes, so this can be long.
    pub ttl: Duration,
    /// Give each worker its own cloned `/dev/fuse` fd (`FUSE_DEV_IOC_CLONE`):
    /// the kernel then queues replies per fd instead of all workers waking
    /// on one. Falls back to a shared fd when `/dev/fuse` cannot be opened.
    pub clone_fd: bool,
    /// The node-local block cache the server reads from and fills.
    pub store: Option<StoreOptions>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            threads: cores.clamp(2, 8),
            ttl: Duration::from_secs(24 * 3600),
            clone_fd: true,
            store: None,
        }
    }
}

/// The node id of an inode reference: the root is FUSE's 1, any other
/// reference `r` is `r + 2` (0 is invalid in FUSE and 1 is taken). `None`
/// only for references that cannot come from a valid image (top 2 values).
pub fn node_id(r: InodeRef, root: InodeRef) -> Option<u64> {
    if r == root {
        Some(INodeNo::ROOT.0)
    } else {
        r.0.checked_add(2)
    }
}

/// The inode reference of a node id, the inverse of [`node_id`]; `None`
/// for 0 (never a valid FUSE node id).
pub fn inode_ref(node: u64, root: InodeRef) -> Option<InodeRef> {
    match node {
        0 => None,
        1 => Some(root),
        n => Some(InodeRef(n - 2)),
    }
}

/// The `data` string of the FUSE mount(2): the fd the server reads, the
/// root's type, and who mounted it. `default_permissions` makes the kernel
/// check mode bits itself (the server never sees the caller's credentials
/// decisions); `allow_other` lets other users (inside the same user
/// namespace: the kernel refuses callers outside the mount's user namespace
/// whatever the option says) use the mount.
pub fn mount_data(fd: i32, uid: u32, gid: u32, allow_other: bool) -> String {
    let mut data =
        format!("fd={fd},rootmode=40000,user_id={uid},group_id={gid},default_permissions");
    if allow_other {
        data.push_str(",allow_other");
    }
    data
}

/// Mount flags: read-only (the image is immutable; writes fail with `EROFS`
/// in the VFS before reaching the server), and no setuid or device files
/// (inside a user namespace the kernel forces these two anyway).
pub fn mount_flags() -> MsFlags {
    MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV
}

/// Open `/dev/fuse` for one mount.
pub fn open_device() -> Result<OwnedFd, FuseError> {
    sys::fuse::open_dev_fuse().map_err(|source| FuseError::OpenDevice {
        path: PathBuf::from(sys::fuse::DEV_FUSE),
        source,
    })
}

/// Mount the FUSE connection of `fuse_fd` read-only at `target` as the
/// calling user (`fuse.cairn`, source `cairn`).
pub fn mount(target: &Path, fuse_fd: BorrowedFd<'_>, allow_other: bool) -> Result<(), FuseError> {
    let data = mount_data(
        fuse_fd.as_raw_fd(),
        nix::unistd::getuid().as_raw(),
        nix::unistd::getgid().as_raw(),
        allow_other,
    );
    tracing::debug!(target = %target.display(), %data, "mounting FUSE");
    sys::fuse::mount_fuse("cairn", target, "fuse.cairn", mount_flags(), &data).map_err(|source| {
        FuseError::Mount {
            target: target.to_path_buf(),
            data,
            source,
        }
    })
}

/// Serve `archive` on a mounted `/dev/fuse` fd until the kernel drops the
/// connection (the mount is gone), then return `Ok`. Blocks the caller;
/// starts `options.threads` worker threads, so call it after any namespace
/// setup.
pub fn serve(
    archive: Arc<Archive>,
    fuse_fd: OwnedFd,
    options: ServeOptions,
) -> Result<(), FuseError> {
    prepare(archive, options)?.serve(fuse_fd)
}

/// A filesystem ready to serve: the part of [`serve`] that needs no
/// mounted fd (the root inode read, the `/dev/fuse` clone probe), done
/// ahead so that the mount's first access waits only for the handshake.
pub struct Prepared {
    fs: SquashFs,
    config: fuser::Config,
    /// Files to push into the kernel's page cache (see [`push`]).
    pushes: Receiver<Push>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("threads", &self.config.n_threads)
            .field("clone_fd", &self.config.clone_fd)
            .finish_non_exhaustive()
    }
}

/// Prepare serving `archive` (see [`Prepared`]). Starts no thread.
pub fn prepare(archive: Arc<Archive>, options: ServeOptions) -> Result<Prepared, FuseError> {
    let (queue, pushes) = mpsc::sync_channel(PUSH_QUEUE);
    let fs = SquashFs::new(archive, options.ttl, queue)?;
    let mut config = fuser::Config::default();
    config.acl = SessionACL::All;
    // Bounded here too, for callers that skipped the config's check.
    config.n_threads = Some(options.threads.clamp(1, MAX_THREADS));
    // Cloning opens /dev/fuse again (and fuser gives up entirely if that
    // fails); where this process cannot open it (no /dev, a root-only
    // device and an fd handed over by someone else), the workers share one.
    config.clone_fd = options.clone_fd && sys::fuse::open_dev_fuse().is_ok();
    Ok(Prepared { fs, config, pushes })
}

/// Files waiting for [`push`]; a full queue drops the push (the reads
/// then come as requests, as without it). Holds a whole read-ahead window.
const PUSH_QUEUE: usize = 512;

/// A file to hand the kernel before it asks.
enum Push {
    /// A file whose first read was answered up to `from`: the blocks of
    /// the rest that the block store holds.
    Stored { ino: INodeNo, node: Node, from: u64 },
    /// Bytes `from..to` of a file the job is about to read (see [`ahead`]).
    Range {
        ino: INodeNo,
        node: Node,
        from: u64,
        to: u64,
    },
}

/// Hand the kernel, ahead of its requests, file data it is about to ask
/// for (FUSE_NOTIFY_STORE into the file's page cache):
/// - the blocks of each file read that the block store holds: what earlier
///   runs read of it. A program's exec then faults in pages that are
///   already there instead of sending a read per 128 KiB (the kernel caps
///   a FUSE mount's readahead at its default);
/// - the files a read-ahead window names (see [`ahead`]), and the rest of
///   a file read in a stream.
///
/// Each would otherwise be a round trip through the server while the job
/// waits. Threads of their own (sharing the queue), never a worker: a
/// store waits for a page the job's readahead has locked, which only a
/// worker's reply unlocks.
fn push(archive: &Archive, notifier: &fuser::Notifier, pushes: &Mutex<Receiver<Push>>) {
    let block_size = archive.superblock().block_size;
    let bs = u64::from(block_size);
    loop {
        let Ok(push) = lock(pushes).recv() else {
            return;
        };
        let (ino, node, blocks) = match push {
            Push::Stored { ino, node, from } => {
                let blocks = archive.stored_blocks(&node);
                let rest = blocks.into_iter().filter(|&(offset, _)| offset >= from);
                (ino, node, rest.collect::<Vec<_>>())
            }
            Push::Range {
                ino,
                node,
                from,
                to,
            } => {
                // Block by block, the first one from `from` on.
                let mut blocks = Vec::new();
                let mut at = from;
                while at < to {
                    let end = ((at / bs + 1) * bs).min(to);
                    // Never past one block.
                    let len = crate::squashfs::format::bytes_in_block(end - at, block_size);
                    blocks.push((at, len as usize));
                    at = end;
                }
                (ino, node, blocks)
            }
        };
        for (offset, len) in blocks {
            // Straight from the cached block. ENOENT (the kernel already
            // forgot the inode) comes back as Ok; any other error, or a
            // read error, ends this file's push.
            let pushed = archive.with_bytes(&node, offset, len, |bytes| {
                notifier.store(ino, offset, bytes)
            });
            if !matches!(pushed, Ok(Ok(()))) {
                break;
            }
        }
    }
}

impl Prepared {
    /// Serve on the mounted fd until the connection ends (see [`serve`]).
    pub fn serve(self, fuse_fd: OwnedFd) -> Result<(), FuseError> {
        let archive = self.fs.archive.clone();
        let workers = self.config.n_threads.unwrap_or(1);
        let clone_fd = self.config.clone_fd;
        let session = fuser::Session::from_fd(self.fs, fuse_fd, SessionACL::All, self.config)
            .map_err(FuseError::Handshake)?;
        let pushes = Arc::new(Mutex::new(self.pushes));
        // Pushes that decompress are bound by the CPU: two threads then
        // push twice as fast (measured: read-all 0.67 -> 0.57 s, store
        // off). Pushes that copy from the block store are not, and a second
        // thread only adds contention (0.40 -> 0.46 s).
        let threads = if archive.has_stored_blocks() { 1 } else { 2 };
        for _ in 0..threads {
            let notifier = session.notifier();
            let pushes = pushes.clone();
            let archive = archive.clone();
            // Without the thread the reads just come as requests.
            let _ = std::thread::Builder::new()
                .name("cairn-push".into())
                .spawn(move || push(&archive, &notifier, &pushes));
        }
        // fuser returns Ok when a read on the device gives ENODEV: unmounted.
        session.run().map_err(|source| FuseError::Session {
            threads: workers,
            clone_fd,
            source,
        })
    }
}

/// The FUSE file type of an `st_mode`.
pub fn file_type(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        _ => FileType::RegularFile,
    }
}

/// The FUSE (kernel `new_encode_dev`) encoding of a glibc `makedev` value:
/// FUSE carries `rdev` as 32 bits, minor split around a 12-bit major.
pub fn fuse_rdev(rdev: u64) -> u32 {
    let major = libc::major(rdev);
    let minor = libc::minor(rdev);
    (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)
}

/// FUSE attributes of a squashfs stat, under node id `node`.
pub fn file_attr(node: u64, st: &Stat, block_size: u32) -> FileAttr {
    let mtime = if st.mtime >= 0 {
        UNIX_EPOCH + Duration::from_secs(st.mtime.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(st.mtime.unsigned_abs())
    };
    FileAttr {
        ino: INodeNo(node),
        size: st.size,
        blocks: st.blocks,
        atime: mtime,
        mtime,
        ctime: mtime,
        crtime: mtime,
        kind: file_type(st.mode),
        perm: (st.mode & 0o7777) as u16,
        nlink: st.nlink,
        uid: st.uid,
        gid: st.gid,
        rdev: fuse_rdev(st.rdev),
        blksize: block_size,
        flags: 0,
    }
}

/// Reply-offset layout of a directory listing: `.` and `..` come first,
/// then the stored entries. The offset handed to the kernel with each entry
/// is where the next `readdir` resumes.
const DOT_ENTRIES: u64 = 2;

/// Directory listings kept decoded, so a large directory read in many
/// kernel-sized chunks is decoded once, not once per chunk.
const LISTING_CACHE: usize = 256;

/// Files whose directory is remembered for the read-ahead; more are
/// forgotten all together (a forgotten file starts no window).
const FILE_DIRS: usize = 1 << 17;

/// The filesystem: the archive plus small shared caches. Every method is
/// `&self` and safe to run on any worker.
struct SquashFs {
    archive: Arc<Archive>,
    root: InodeRef,
    block_size: u32,
    ttl: Duration,
    /// Set in `init` when the kernel lets us skip OPEN / OPENDIR requests.
    no_open: bool,
    no_opendir: bool,
    listings: Mutex<HashMap<InodeRef, Arc<Vec<DirEntry>>>>,
    /// Node id of the parent of each directory seen in a lookup or listing
    /// (for `..`): the image stores only the parent's inode number.
    parents: Mutex<HashMap<InodeRef, u64>>,
    /// Inodes whose read error was already logged.
    warned: Mutex<HashSet<InodeRef>>,
    /// Where files go to be pushed (see [`push`]).
    push_queue: SyncSender<Push>,
    /// The files whose first read came already.
    read: Mutex<HashSet<InodeRef>>,
    /// The directory each file was last seen in, and its index in the
    /// listing when known, for the read-ahead (see [`ahead`]).
    file_dirs: Mutex<HashMap<InodeRef, (InodeRef, Option<usize>)>>,
    streams: Mutex<ahead::Streams<InodeRef>>,
}

impl SquashFs {
    fn new(
        archive: Arc<Archive>,
        ttl: Duration,
        push_queue: SyncSender<Push>,
    ) -> Result<Self, FuseError> {
        let root = archive.root().map_err(FuseError::Root)?.inode_ref();
        let block_size = archive.superblock().block_size;
        let fs = Self {
            archive,
            root,
            block_size,
            ttl,
            no_open: false,
            no_opendir: false,
            listings: Mutex::new(HashMap::new()),
            parents: Mutex::new(HashMap::new()),
            warned: Mutex::new(HashSet::new()),
            push_queue,
            read: Mutex::new(HashSet::new()),
            file_dirs: Mutex::new(HashMap::new()),
            streams: Mutex::new(ahead::Streams::new()),
        };
        lock(&fs.parents).insert(root, INodeNo::ROOT.0);
        Ok(fs)
    }

    /// Log a corrupt-image error once per inode and turn it into `EIO`.
    fn io_error(&self, what: &str, r: InodeRef, err: &ReadError) -> Errno {
        if lock(&self.warned).insert(r) {
            tracing::warn!(inode = r.0, "FUSE {what}: {err}");
        }
        Errno::EIO
    }

    fn node(&self, ino: INodeNo) -> Result<Node, Errno> {
        let r = inode_ref(ino.0, self.root).ok_or(Errno::EINVAL)?;
        self.archive
            .node(r)
            .map_err(|e| self.io_error("inode", r, &e))
    }

    fn attr_of(&self, node: &Node) -> Result<FileAttr, Errno> {
        let id = node_id(node.inode_ref(), self.root).ok_or(Errno::EIO)?;
        Ok(file_attr(id, node.stat(), self.block_size))
    }

    fn listing(&self, dir: &Node) -> Result<Arc<Vec<DirEntry>>, Errno> {
        let r = dir.inode_ref();
        if let Some(l) = lock(&self.listings).get(&r) {
            return Ok(l.clone());
        }
        let entries = self
            .archive
            .read_dir(dir)
            .map_err(|e| self.io_error("readdir", r, &e))?;
        let entries = Arc::new(entries);
        let mut cache = lock(&self.listings);
        if cache.len() >= LISTING_CACHE {
            cache.clear();
        }
        cache.insert(r, entries.clone());
        Ok(entries)
    }

    fn remember_parent(&self, child: &Node, parent: INodeNo) {
        if child.is_dir() {
            lock(&self.parents).insert(child.inode_ref(), parent.0);
        }
    }

    fn parent_of(&self, dir: &Node) -> u64 {
        // The kernel reaches a directory only through its parent, so the
        // parent is known; the root's parent is itself.
        lock(&self.parents)
            .get(&dir.inode_ref())
            .copied()
            .unwrap_or(INodeNo::ROOT.0)
    }

    /// Note where a file was seen, for the read-ahead.
    fn remember_dir(&self, file: &Node, dir: InodeRef, index: Option<usize>) {
        if file.is_file() {
            let mut dirs = lock(&self.file_dirs);
            if dirs.len() >= FILE_DIRS {
                dirs.clear();
            }
            dirs.insert(file.inode_ref(), (dir, index));
        }
    }

    /// The first read of `file` came, to be answered up to `replied`:
    /// push the rest of it (what the block store holds of it, or all of it
    /// when it is read in a stream), and whatever files a read-ahead window
    /// names (see [`ahead`]).
    fn first_read(&self, ino: INodeNo, file: Node, replied: u64) {
        let queue = &self.push_queue;
        let seen = lock(&self.file_dirs).get(&file.inode_ref()).copied();
        let tree = Walk {
            fs: self,
            last: RefCell::new(None),
        };
        let stream = seen.and_then(|(dir, index)| {
            let index = index.or_else(|| {
                let entries = tree.entries(dir)?;
                entries.iter().position(|e| e.inode_ref == file.inode_ref())
            })?;
            match lock(&self.streams).first_read(&tree, (dir, index)) {
                ahead::Plan::Alone => None,
                ahead::Plan::Stream(files) => Some(files),
            }
        });
        let size = file.stat().size;
        let _ = match &stream {
            // Read in a stream: all of it will be, the rest goes ahead.
            Some(_) if replied < size => queue.try_send(Push::Range {
                ino,
                to: size.min(replied.saturating_add(ahead::REST_OF_FILE)),
                node: file,
                from: replied,
            }),
            _ if self.archive.has_stored_blocks() => queue.try_send(Push::Stored {
                ino,
                node: file,
                from: replied,
            }),
            _ => Ok(()),
        };
        for (dir, index) in stream.into_iter().flatten() {
            let Some(r) = tree
                .entries(dir)
                .and_then(|e| Some(e.get(index)?.inode_ref))
            else {
                continue;
            };
            let (Ok(node), Some(id)) = (self.archive.node(r), node_id(r, self.root)) else {
                continue;
            };
            let to = node.stat().size;
            let _ = queue.try_send(Push::Range {
                ino: INodeNo(id),
                node,
                from: 0,
                to,
            });
        }
    }

    fn dir_node(&self, ino: INodeNo) -> Result<Node, Errno> {
        let node = self.node(ino)?;
        if node.is_dir() {
            Ok(node)
        } else {
            Err(Errno::ENOTDIR)
        }
    }
}

/// The image as the read-ahead walks it (see [`ahead::Tree`]), through
/// the server's listing cache and what it knows of directories' parents.
struct Walk<'a> {
    fs: &'a SquashFs,
    /// The listing asked for last: a walk asks for one listing many times.
    last: RefCell<Option<(InodeRef, Arc<Vec<DirEntry>>)>>,
}

impl Walk<'_> {
    fn entries(&self, dir: InodeRef) -> Option<Arc<Vec<DirEntry>>> {
        if let Some((r, entries)) = &*self.last.borrow()
            && *r == dir
        {
            return Some(entries.clone());
        }
        let entries = self.fs.listing(&self.fs.archive.node(dir).ok()?).ok()?;
        *self.last.borrow_mut() = Some((dir, entries.clone()));
        Some(entries)
    }
}

impl ahead::Tree for Walk<'_> {
    type Dir = InodeRef;

    fn len(&self, dir: InodeRef) -> usize {
        self.entries(dir).map_or(0, |e| e.len())
    }

    fn entry(&self, dir: InodeRef, index: usize) -> ahead::Entry<InodeRef> {
        let entries = self.entries(dir);
        let Some(e) = entries.as_ref().and_then(|e| e.get(index)) else {
            return ahead::Entry::Other;
        };
        match e.inode_type {
            inode_type::BASIC_FILE => match self.fs.archive.node(e.inode_ref) {
                Ok(node) => ahead::Entry::File(node.stat().size),
                Err(_) => ahead::Entry::Other,
            },
            inode_type::BASIC_DIR => ahead::Entry::Dir(e.inode_ref),
            _ => ahead::Entry::Other,
        }
    }

    fn parent(&self, dir: InodeRef) -> Option<ahead::Pos<InodeRef>> {
        if dir == self.fs.root {
            return None;
        }
        let id = *lock(&self.fs.parents).get(&dir)?;
        let up = inode_ref(id, self.fs.root)?;
        let index = self.entries(up)?.iter().position(|e| e.inode_ref == dir)?;
        Some((up, index))
    }
}

/// `DirEntry::inode_type` (basic squashfs types 1..=7) as a FUSE type.
fn entry_type(inode_type: u16) -> FileType {
    match inode_type {
        1 => FileType::Directory,
        3 => FileType::Symlink,
        4 => FileType::BlockDevice,
        5 => FileType::CharDevice,
        6 => FileType::NamedPipe,
        7 => FileType::Socket,
        _ => FileType::RegularFile,
    }
}

/// The reply to `getxattr`/`listxattr`: the size when asked for it (size
/// 0), the bytes when they fit, else `ERANGE`.
fn reply_sized(reply: ReplyXattr, size: u32, bytes: &[u8]) {
    if size == 0 {
        match u32::try_from(bytes.len()) {
            Ok(n) => reply.size(n),
            Err(_) => reply.error(Errno::E2BIG),
        }
    } else if bytes.len() > size as usize {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(bytes);
    }
}

impl Filesystem for SquashFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let caps = config.capabilities();
        // Everything here is an optimisation the image's immutability allows;
        // ask only for what this kernel offers.
        let wanted = InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_CACHE_SYMLINKS
            | InitFlags::FUSE_NO_OPEN_SUPPORT
            | InitFlags::FUSE_NO_OPENDIR_SUPPORT
            | InitFlags::FUSE_ASYNC_READ
            | InitFlags::FUSE_MAX_PAGES;
        let _ = config.add_capabilities(wanted & caps);
        self.no_open = caps.contains(InitFlags::FUSE_NO_OPEN_SUPPORT);
        self.no_opendir = caps.contains(InitFlags::FUSE_NO_OPENDIR_SUPPORT);
        // 1 MiB requests (the kernel caps max_pages at its own limit).
        let _ = config.set_max_write(1 << 20);
        if let Err(max) = config.set_max_readahead(1 << 20) {
            let _ = config.set_max_readahead(max);
        }
        let _ = config.set_max_background(64);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let dir = match self.dir_node(parent) {
            Ok(d) => d,
            Err(e) => return reply.error(e),
        };
        let found = match name.as_bytes() {
            b"." => Ok(Some(dir.clone())),
            b".." => self.node(INodeNo(self.parent_of(&dir))).map(Some),
            n => self
                .archive
                .lookup(&dir, n)
                .map_err(|e| self.io_error("lookup", dir.inode_ref(), &e)),
        };
        match found {
            Ok(Some(node)) => match self.attr_of(&node) {
                Ok(attr) => {
                    self.remember_parent(&node, parent);
                    self.remember_dir(&node, dir.inode_ref(), None);
                    reply.entry(&self.ttl, &attr, Generation(0));
                }
                Err(e) => reply.error(e),
            },
            // A negative entry with a TTL: the kernel caches the absence too
            // (node id 0 means "no such name, remember it").
            Ok(None) => {
                let mut attr = file_attr(0, &empty_stat(), self.block_size);
                attr.ino = INodeNo(0);
                reply.entry(&self.ttl, &attr, Generation(0));
            }
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.node(ino).and_then(|n| self.attr_of(&n)) {
            Ok(attr) => reply.attr(&self.ttl, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let node = match self.node(ino) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        if !node.is_symlink() {
            return reply.error(Errno::EINVAL);
        }
        match self.archive.read_link(&node) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(self.io_error("readlink", node.inode_ref(), &e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.acc_mode() != fuser::OpenAccMode::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        if self.no_open {
            // ENOSYS with FUSE_NO_OPEN_SUPPORT: the kernel stops sending
            // OPEN and treats every open as KEEP_CACHE.
            return reply.error(Errno::ENOSYS);
        }
        match self.node(ino) {
            Ok(n) if n.is_dir() => reply.error(Errno::EISDIR),
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let node = match self.node(ino) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        if !node.is_file() {
            return reply.error(if node.is_dir() {
                Errno::EISDIR
            } else {
                Errno::EINVAL
            });
        }
        // A file's first read, before its reply: the job's next read may
        // come as soon as the reply is out, and a read-ahead stream needs
        // its reads in the order they came.
        if offset == 0 && lock(&self.read).insert(node.inode_ref()) {
            let replied = node.stat().size.min(u64::from(size));
            self.first_read(ino, node.clone(), replied);
        }
        // Straight from the cached block when the range lies in one; the
        // reply is taken only once the bytes are there (an error after
        // that cannot happen, one before gets the reply below).
        let mut reply = Some(reply);
        let replied = self
            .archive
            .with_bytes(&node, offset, size as usize, |bytes| {
                if let Some(r) = reply.take() {
                    r.data(bytes);
                }
            });
        if let (Err(e), Some(r)) = (replied, reply) {
            r.error(self.io_error("read", node.inode_ref(), &e));
        }
    }

    // close(2) sends FLUSH even without OPEN: a round trip per file closed
    // (6 000 of them when a job reads /usr). Nothing is ever buffered here,
    // and ENOSYS tells the kernel so once and for all (it sets `no_flush`
    // and every later close succeeds without asking).
    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    /// SEEK_DATA / SEEK_HOLE: ENOSYS makes the kernel answer from the file
    /// size itself (all data, one hole at the end) and stop asking.
    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: i64,
        _whence: i32,
        reply: fuser::ReplyLseek,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if self.no_opendir {
            // As for open: the kernel then caches directory pages itself.
            return reply.error(Errno::ENOSYS);
        }
        match self.dir_node(ino) {
            Ok(_) => reply.opened(
                FileHandle(0),
                FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_CACHE_DIR,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let dir = match self.dir_node(ino) {
            Ok(d) => d,
            Err(e) => return reply.error(e),
        };
        let entries = match self.listing(&dir) {
            Ok(l) => l,
            Err(e) => return reply.error(e),
        };
        let mut pos = offset;
        if pos == 0 {
            if reply.add(ino, 1, FileType::Directory, ".") {
                return reply.ok();
            }
            pos = 1;
        }
        if pos == 1 {
            if reply.add(INodeNo(self.parent_of(&dir)), 2, FileType::Directory, "..") {
                return reply.ok();
            }
            pos = 2;
        }
        let skip = usize::try_from(pos - DOT_ENTRIES).unwrap_or(usize::MAX);
        for (i, e) in entries.iter().enumerate().skip(skip) {
            let Some(id) = node_id(e.inode_ref, self.root) else {
                return reply.error(Errno::EIO);
            };
            let next = i as u64 + DOT_ENTRIES + 1;
            if reply.add(
                INodeNo(id),
                next,
                entry_type(e.inode_type),
                OsStr::from_bytes(&e.name),
            ) {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let dir = match self.dir_node(ino) {
            Ok(d) => d,
            Err(e) => return reply.error(e),
        };
        let entries = match self.listing(&dir) {
            Ok(l) => l,
            Err(e) => return reply.error(e),
        };
        let mut pos = offset;
        // `.` and `..` carry no attributes: the kernel skips linking them
        // (they are never looked up through readdirplus).
        for (dot, name, id) in [(0, ".", ino.0), (1, "..", self.parent_of(&dir))] {
            if pos == dot {
                let mut attr = file_attr(id, &empty_stat(), self.block_size);
                attr.kind = FileType::Directory;
                if reply.add(
                    INodeNo(id),
                    dot + 1,
                    name,
                    &Duration::ZERO,
                    &attr,
                    Generation(0),
                ) {
                    return reply.ok();
                }
                pos = dot + 1;
            }
        }
        let skip = usize::try_from(pos - DOT_ENTRIES).unwrap_or(usize::MAX);
        for (i, e) in entries.iter().enumerate().skip(skip) {
            let node = match self.archive.node(e.inode_ref) {
                Ok(n) => n,
                Err(err) => return reply.error(self.io_error("readdirplus", e.inode_ref, &err)),
            };
            let attr = match self.attr_of(&node) {
                Ok(a) => a,
                Err(err) => return reply.error(err),
            };
            let next = i as u64 + DOT_ENTRIES + 1;
            if reply.add(
                attr.ino,
                next,
                OsStr::from_bytes(&e.name),
                &self.ttl,
                &attr,
                Generation(0),
            ) {
                break;
            }
            // Only once the entry is in the reply does the kernel know it.
            self.remember_parent(&node, ino);
            self.remember_dir(&node, dir.inode_ref(), Some(i));
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let sb = self.archive.superblock();
        let bs = u64::from(sb.block_size);
        reply.statfs(
            sb.bytes_used.div_ceil(bs),
            0,
            0,
            u64::from(sb.inode_count),
            0,
            sb.block_size,
            256,
            sb.block_size,
        );
    }

    /// No ioctl means anything on an image's files: "not a terminal", as
    /// for any regular file. The kernel forwards every ioctl on a FUSE file
    /// (it keeps no negative answer), and Python asks `isatty` (TCGETS) of
    /// each module it opens: 71 of the 72 requests of a warm python3 start.
    /// fuser's default answer logged a warning to stderr for each one.
    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        reply.error(Errno::ENOTTY);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let node = match self.node(ino) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        match self.archive.xattrs(&node) {
            Ok(xattrs) => match xattrs.iter().find(|(k, _)| k.as_slice() == name.as_bytes()) {
                Some((_, value)) => reply_sized(reply, size, value),
                None => reply.error(Errno::NO_XATTR),
            },
            Err(e) => reply.error(self.io_error("getxattr", node.inode_ref(), &e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let node = match self.node(ino) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        match self.archive.xattrs(&node) {
            Ok(xattrs) => {
                let mut names = Vec::new();
                for (k, _) in &xattrs {
                    names.extend_from_slice(k);
                    names.push(0);
                }
                reply_sized(reply, size, &names);
            }
            Err(e) => reply.error(self.io_error("listxattr", node.inode_ref(), &e)),
        }
    }

    fn access(&self, _req: &Request, _ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        // With default_permissions the kernel checks modes itself; only a
        // write can be refused here.
        if mask.contains(AccessFlags::W_OK) {
            reply.error(Errno::EROFS);
        } else {
            reply.ok();
        }
    }

    // Every modifying operation: read-only. The MS_RDONLY mount stops most
    // of them in the VFS; these answer whatever still arrives.

    fn setattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        reply.error(Errno::EROFS);
    }

    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn mkdir(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn unlink(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn rmdir(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _link_name: &OsStr,
        _target: &Path,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn rename(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _newparent: INodeNo,
        _newname: &OsStr,
        _flags: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _data: &[u8],
        _write_flags: fuser::WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: fuser::ReplyWrite,
    ) {
        reply.error(Errno::EROFS);
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn create(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: fuser::ReplyCreate,
    ) {
        reply.error(Errno::EROFS);
    }
}

/// A stat with nothing in it, for replies that carry no attributes.
fn empty_stat() -> Stat {
    Stat {
        ino: 0,
        mode: libc::S_IFDIR,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        size: 0,
        blocks: 0,
        mtime: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_round_trip_and_keep_the_root_at_1() {
        let root = InodeRef::new(0x1234, 0x56);
        assert_eq!(node_id(root, root), Some(1));
        assert_eq!(inode_ref(1, root), Some(root));
        for r in [
            InodeRef(0),
            InodeRef(1),
            InodeRef::new(0, 0x20),
            InodeRef::new(0x1_0000, 0x1ff0),
            InodeRef::new(1 << 40, 0x1ff0),
        ] {
            let id = node_id(r, root).expect("valid ref");
            assert!(id >= 2, "{r:?} -> {id} collides with 0 or the root");
            assert_eq!(inode_ref(id, root), Some(r));
        }
    }

    #[test]
    fn node_id_zero_is_invalid_and_overflow_is_refused() {
        let root = InodeRef(5);
        assert_eq!(inode_ref(0, root), None);
        assert_eq!(node_id(InodeRef(u64::MAX), root), None);
        assert_eq!(node_id(InodeRef(u64::MAX - 1), root), None);
        assert_eq!(node_id(InodeRef(u64::MAX - 2), root), Some(u64::MAX));
    }

    #[test]
    fn a_root_at_ref_0_still_maps_to_1_and_others_do_not_collide() {
        let root = InodeRef(0);
        assert_eq!(node_id(root, root), Some(1));
        assert_eq!(node_id(InodeRef(1), root), Some(3));
        assert_eq!(inode_ref(3, root), Some(InodeRef(1)));
    }

    #[test]
    fn mount_data_names_fd_owner_and_options() {
        assert_eq!(
            mount_data(7, 1000, 100, false),
            "fd=7,rootmode=40000,user_id=1000,group_id=100,default_permissions"
        );
        assert_eq!(
            mount_data(3, 0, 0, true),
            "fd=3,rootmode=40000,user_id=0,group_id=0,default_permissions,allow_other"
        );
    }

    #[test]
    fn mount_flags_are_read_only_nosuid_nodev() {
        let f = mount_flags();
        assert!(f.contains(MsFlags::MS_RDONLY));
        assert!(f.contains(MsFlags::MS_NOSUID));
        assert!(f.contains(MsFlags::MS_NODEV));
    }

    #[test]
    fn rdev_uses_the_kernel_new_encoding() {
        assert_eq!(fuse_rdev(libc::makedev(1, 3)), 0x103);
        assert_eq!(fuse_rdev(libc::makedev(4095, 255)), (4095 << 8) | 255);
        // Minor above 255: its high bits move above the major.
        assert_eq!(
            fuse_rdev(libc::makedev(8, 0x1234)),
            0x34 | (8 << 8) | (0x12 << 20)
        );
        assert_eq!(fuse_rdev(0), 0);
    }

    #[test]
    fn file_types_follow_the_mode() {
        assert_eq!(file_type(libc::S_IFDIR | 0o755), FileType::Directory);
        assert_eq!(file_type(libc::S_IFREG | 0o4755), FileType::RegularFile);
        assert_eq!(file_type(libc::S_IFLNK | 0o777), FileType::Symlink);
        assert_eq!(file_type(libc::S_IFCHR), FileType::CharDevice);
        assert_eq!(file_type(libc::S_IFBLK), FileType::BlockDevice);
        assert_eq!(file_type(libc::S_IFIFO), FileType::NamedPipe);
        assert_eq!(file_type(libc::S_IFSOCK), FileType::Socket);
        for (t, want) in [
            (1, FileType::Directory),
            (2, FileType::RegularFile),
            (3, FileType::Symlink),
            (4, FileType::BlockDevice),
            (5, FileType::CharDevice),
            (6, FileType::NamedPipe),
            (7, FileType::Socket),
        ] {
            assert_eq!(entry_type(t), want);
        }
    }

    #[test]
    fn attrs_carry_mode_bits_owner_times_and_size() {
        let st = Stat {
            ino: 9,
            mode: libc::S_IFREG | 0o4755,
            nlink: 2,
            uid: 1000,
            gid: 50,
            rdev: 0,
            size: 300_000,
            blocks: 592,
            mtime: 1_700_000_000,
        };
        let a = file_attr(42, &st, 131_072);
        assert_eq!(a.ino, INodeNo(42));
        assert_eq!(a.perm, 0o4755);
        assert_eq!(a.kind, FileType::RegularFile);
        assert_eq!((a.uid, a.gid, a.nlink), (1000, 50, 2));
        assert_eq!((a.size, a.blocks, a.blksize), (300_000, 592, 131_072));
        assert_eq!(a.mtime, UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        assert_eq!(a.ctime, a.mtime);
    }

    #[test]
    fn default_options_use_several_threads_and_long_ttls() {
        let o = ServeOptions::default();
        assert!(o.threads >= 2);
        assert!(o.ttl >= Duration::from_secs(3600));
    }
}
