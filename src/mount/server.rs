//! The FUSE server of a run as a process of its own, outside the job, and
//! the namespace holder that keeps the job's teardown off its exit path.
//!
//! cairn (still single-threaded) double-forks before entering any
//! namespace: the grandchild is reparented away at once, so it is never a
//! child the job has to reap and never a zombie of it (cairn reaps the
//! intermediate child later, once it has surely exited, so the fork of the
//! grandchild is not on cairn's critical path). It leaves the job's
//! session, puts /dev/null on its standard fds (it must not hold the job's
//! output pipes open), keeps only a status pipe and a socket, names itself
//! `cairn-fuse` and says "ready" on the pipe. cairn then enters the user
//! namespace, opens `/dev/fuse` there (the kernel refuses a FUSE mount
//! whose device fd was opened in another user namespace: EINVAL), mounts
//! it as the image root and sends the fd over the socket (SCM_RIGHTS); only
//! then does the server read the kernel's INIT (a read before the mount
//! fails with EPERM) and start its worker threads. The first access to the
//! mount waits for that INIT reply. When the last process of the job's
//! mount namespace exits the kernel drops the mount, the server's read of
//! the device returns ENODEV and it exits by itself; a daemon the job
//! leaves keeps both alive. If the server is killed, the job's accesses
//! fail with ENOTCONN, nothing hangs.
//!
//! Teardown off the critical path: the last process of a mount namespace
//! unmounts everything in it on its way out (`put_mnt_ns` in `do_exit`:
//! an RCU grace period, the FUSE connection's abort, for the kernel mount
//! the squashfs `kill_sb` and the loop device's autoclear), before its
//! parent can see it exit. So with the mounted fd cairn also sends an fd of
//! its mount namespace (`/proc/self/ns/mnt`), and the server holds it until
//! cairn's process (which becomes the job by execve) has exited, watched by
//! a pidfd opened before the fork; then it closes it. The job's exit thus
//! only drops one reference, the unmount runs in the server right after,
//! and the rule above still holds: the mount lives as long as any process
//! uses it (a daemon, a joined rank) and goes with the last. For a kernel
//! mount the same process runs as a bare holder (no archive to serve).
//!
//! A server that dies during setup: cairn closes its own copy of the fuse
//! fd as soon as it has sent it, before anything looks into the mount, so
//! the server's fds are the connection's last and its death aborts it
//! (the kernel fails the waiting requests with ECONNABORTED, later ones
//! with ENOTCONN) instead of leaving a request nobody will ever answer. The
//! server keeps its status pipe for its whole life and writes there why it
//! stopped, before it lets go of the device, so the mount step that fails
//! finds the reason waiting (see [`Server::failure`]).
//!
//! Who reaps the server ([`Ending`]). When cairn execs the job, the
//! server outlives cairn's process by construction (it holds the mount
//! namespace until that process has exited), so nothing of cairn is left to
//! reap it: its parent is PID 1 or the nearest child subreaper, as for any
//! daemon, and a PID 1 that never reaps keeps its zombie. No topology fixes
//! that: whatever process cairn adds between has the same last exit, and a
//! child of the job's process would be the job's to wait for. With
//! `--pid` cairn stays, outside the job's PID namespace where the job
//! cannot see it: it makes itself a child subreaper before the double
//! fork, so the server becomes its child, and after the job's end it lets
//! go of the channel; the server then exits on its own and cairn reaps it
//! before it exits itself ([`Server::release`]). The price: no helper may
//! outlive cairn then, so none holds the mount namespace, and its teardown
//! is back in cairn's exit (a kernel mount gets no holder at all).
//!
//! Warm mounts (ns::warm). A run that leaves its mount warm reserves the
//! rendezvous socket before the fork; the helper inherits it, and with the
//! handover gets a second message: the run's user namespace and the *base*
//! mount namespace that holds only the image (the run itself went on into
//! a copy of it). A thread of the helper then serves later runs from the
//! base until the linger after the last has passed, and drops it; the
//! rule above then ends the server as before (the mount goes with the last
//! process of any run's namespace). For a kernel mount the bare holder does
//! the same and exits when that thread is done.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::mount::fuse::{self, ServeOptions};
use crate::spec::env::exec_candidates;
use crate::squashfs::reader::{Archive, BlockStore};
use crate::sys::process::{self as sys, ForkResult};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("start the FUSE server for {image}: {step} failed")]
    Spawn {
        image: PathBuf,
        step: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("the FUSE server for {image} did not start: {message}")]
    NotReady { image: PathBuf, message: String },
    #[error("the FUSE server for {image} stopped before it got the mount: {reason}")]
    Gone { image: PathBuf, reason: String },
}

/// The byte the server writes once it is about to serve; its pid (4 bytes,
/// little-endian) follows in the same write.
const READY: u8 = b'R';

/// How long a failing mount step waits for the server's reason when the
/// step lost the connection: the server writes it before it lets go of the
/// device, so it is normally there already; this only covers a server that
/// could not keep a copy of the device (out of fds) and so aborted the
/// connection a moment before it wrote.
pub const REASON_WAIT: Duration = Duration::from_secs(2);

/// How long cairn (`--pid`) waits for the server to exit once it let go
/// of it. The server then only writes its block store (a large store is
/// rewritten whole) and exits; a server stuck beyond this is left to PID 1
/// rather than holding back the job's exit status.
pub const RELEASE_WAIT: Duration = Duration::from_secs(10);

/// Whose child the server is when it exits (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// cairn execs the job: the server holds the job's mount namespace
    /// until cairn's process has exited, serves until the kernel drops the
    /// mount, and is reaped by PID 1 or a subreaper.
    AfterCairn,
    /// `--pid`: cairn stays until the job's end; the server exits when
    /// cairn lets go of the channel and cairn, its subreaper, reaps it.
    ReapedByCairn,
}

/// A run that leaves its mount warm (see ns::warm): what its helper needs
/// beyond the mount itself. The listener is inherited by the helper's fork;
/// the base comes with the handover ([`Server::mounted`]).
#[derive(Debug)]
pub struct WarmSetup {
    /// The reserved socket, listening; the helper accepts once it has the
    /// base.
    pub listener: OwnedFd,
    pub linger: Duration,
    /// The image's canonical path, for `cairn ps`.
    pub image: PathBuf,
}

/// A started server: the read end of its status pipe and cairn's end of
/// the socket the fds go over.
#[derive(Debug)]
pub struct Server {
    pub image: PathBuf,
    /// The read end of the status pipe.
    status: std::fs::File,
    /// cairn's end of the socket pair the fuse fd is sent over; with
    /// [`Ending::ReapedByCairn`] kept until [`Server::release`]: its hangup
    /// tells the server to exit.
    chan: Option<OwnedFd>,
    /// The intermediate child of the double fork, not reaped yet.
    intermediate: Option<sys::Pid>,
    /// Whether the server watches cairn's process (pidfd_open worked), so
    /// that it may hold the mount namespace until cairn's exit.
    holds: bool,
    ending: Ending,
    /// The server's own pid, from its "ready" message.
    pid: Option<i32>,
    /// It has a warm socket and waits for the base after the handover.
    warm: bool,
}

/// What the server warms up while cairn is still setting the container
/// up (when a core is idle, see [`idle_core`]): the program the job will
/// exec, found as the run's `execve` will find it (the job's PATH when the name has no '/'). Its
/// first data blocks, and its ELF interpreter's, are decompressed into the
/// reader's cache, so the job's first page faults through the fresh mount
/// are copies, not decompressions on the job's critical path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Warmup {
    pub program: Vec<u8>,
    /// The job's PATH.
    pub search_path: Vec<u8>,
    /// The job's working directory inside (for a relative `./prog`).
    pub cwd: Vec<u8>,
}

/// Data blocks warmed for the program itself (4 MiB at 128 KiB blocks:
/// half the reader's default data cache) and for its ELF interpreter.
const WARM_PROGRAM_BLOCKS: usize = 32;
const WARM_INTERPRETER_BLOCKS: usize = 4;

impl Warmup {
    /// The paths `execve` will try, in order (pure): those of
    /// [`exec_candidates`], relative ones resolved against the job's
    /// working directory (this side reads the image from outside).
    pub fn candidates(&self) -> Vec<Vec<u8>> {
        // An empty name is no program (each candidate would be a PATH
        // directory): nothing to warm.
        if self.program.is_empty() {
            return Vec::new();
        }
        exec_candidates(&self.program, &self.search_path, Some(&self.cwd))
    }
}

/// The `PT_INTERP` path of a 64-bit little-endian ELF file whose first
/// bytes are `head` (pure; `None` for anything else, a static binary, or
/// an interpreter beyond `head`).
pub fn elf_interpreter(head: &[u8]) -> Option<&[u8]> {
    const PT_INTERP: u32 = 3;
    let u16_at = |at: usize| -> Option<u16> {
        Some(u16::from_le_bytes(
            head.get(at..at.checked_add(2)?)?.try_into().ok()?,
        ))
    };
    let u32_at = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(
            head.get(at..at.checked_add(4)?)?.try_into().ok()?,
        ))
    };
    let u64_at = |at: usize| -> Option<usize> {
        let v = u64::from_le_bytes(head.get(at..at.checked_add(8)?)?.try_into().ok()?);
        usize::try_from(v).ok()
    };
    // ELFCLASS64, ELFDATA2LSB.
    if head.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let phoff = u64_at(0x20)?;
    let phentsize = usize::from(u16_at(0x36)?);
    let phnum = usize::from(u16_at(0x38)?);
    if phentsize < 0x38 {
        return None;
    }
    for i in 0..phnum {
        let ph = phoff.checked_add(i.checked_mul(phentsize)?)?;
        if u32_at(ph)? != PT_INTERP {
            continue;
        }
        let offset = u64_at(ph.checked_add(8)?)?;
        let size = u64_at(ph.checked_add(32)?)?;
        let path = head.get(offset..offset.checked_add(size)?)?;
        // The stored path ends with its NUL.
        let path = path.split(|&b| b == 0).next()?;
        return (!path.is_empty()).then_some(path);
    }
    None
}

/// Whether a core is idle for the warm-up (pure). The warm-up only pays
/// off on a core nothing else wants: on a busy node it competes with the
/// job and its neighbours, and it may decompress blocks the job never
/// reads, so it is skipped there. Of the scheduling entities runnable right
/// now (the numerator of `/proc/loadavg`'s fourth field) three are normally
/// ours: this thread, the server's main thread and cairn, still setting up
/// (33 of 40 samples at the warm-up's start here). The others must leave a
/// core of `cpus` for the warm-up beside cairn's. Not the 1-minute load
/// average: that counts the user's own runs of a moment ago (a batch
/// script's loop of runs keeps it above 1 on an idle 2-core node) and
/// skipped the warm-up where it gains most: there a cold `cairn run IMG --
/// true` took 10.0 ms with that rule and 8.65 ms with this one (16.3 and
/// 12.3 ms with the block store off), in interleaved rounds.
pub fn idle_core(loadavg: &str, cpus: usize) -> bool {
    let Some(running) = loadavg
        .split_whitespace()
        .nth(3)
        .and_then(|field| field.split('/').next())
        .and_then(|n| n.parse::<usize>().ok())
    else {
        return false;
    };
    cpus >= 2 && running <= cpus + 1
}

/// Warm the reader's cache with the job's program (see [`Warmup`]); every
/// failure just ends the warm-up (the job's own exec reports real errors).
fn warm(archive: &Archive, warmup: &Warmup) {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    if !idle_core(&loadavg, cpus) {
        return;
    }
    for candidate in warmup.candidates() {
        let Ok(Some(node)) = archive.follow_path(&candidate) else {
            continue;
        };
        // execve skips what it cannot run the same way; a directory or a
        // file without any execute bit is not what it will run.
        if !node.is_file() || node.stat().mode & 0o111 == 0 {
            continue;
        }
        let _ = archive.prefetch(&node, WARM_PROGRAM_BLOCKS);
        let mut head = vec![0u8; 4096];
        let Ok(n) = archive.read_at(&node, 0, &mut head) else {
            return;
        };
        if let Some(interp) = elf_interpreter(&head[..n])
            && let Ok(Some(ld)) = archive.follow_path(interp)
        {
            let _ = archive.prefetch(&ld, WARM_INTERPRETER_BLOCKS);
        }
        return;
    }
}

/// What the helper process does once cairn has mounted.
#[derive(Debug)]
enum Role {
    /// Serve the archive on the fuse fd cairn sends.
    Serve(Arc<Archive>, ServeOptions, Warmup),
    /// Only hold the mount namespace (a kernel mount).
    Hold,
}

impl Server {
    /// Hand the mounted fuse fd (if this is a FUSE server) and an fd of the
    /// job's mount namespace to the server (SCM_RIGHTS): it may now read
    /// the kernel's INIT (a read of `/dev/fuse` before the mount fails with
    /// EPERM). The first access to the mount waits for the server's INIT
    /// reply, so no further sync is needed. cairn's copy of the fuse fd is
    /// closed on return, before anything looks into the mount: if the
    /// server dies, the connection then aborts and the access fails with
    /// ECONNABORTED or ENOTCONN instead of waiting forever. The namespace
    /// fd is held until cairn's process exits (see the module doc); without
    /// it (None, no pidfd, or `--pid`) the job's exit unmounts as before.
    ///
    /// A run that leaves its mount warm sends the base (its user namespace
    /// and base mount namespace, see ns::warm) as a second message, which
    /// such a helper waits for; without it (None, or nothing sent at all)
    /// the helper's socket closes unused and the mount is not kept warm.
    pub fn mounted(
        &mut self,
        fuse_fd: Option<OwnedFd>,
        mnt_ns: Option<BorrowedFd<'_>>,
        warm_base: Option<crate::ns::warm::WarmBase>,
    ) -> Result<(), ServerError> {
        // Kept for ReapedByCairn: its hangup is the server's signal to exit.
        let taken = match self.ending {
            Ending::AfterCairn => self.chan.take(),
            Ending::ReapedByCairn => None,
        };
        let Some(chan) = taken.as_ref().or(self.chan.as_ref()) else {
            return Ok(());
        };
        let mut fds: Vec<BorrowedFd<'_>> = fuse_fd.iter().map(|f| f.as_fd()).collect();
        if self.holds {
            fds.extend(mnt_ns);
        }
        if fds.is_empty() {
            return Ok(());
        }
        match crate::sys::socket::send_fds(chan.as_fd(), &fds) {
            Ok(()) => {
                if let Some(base) = warm_base.filter(|_| self.warm) {
                    // A helper that cannot take it only leaves the mount cold.
                    let base = [base.user.as_fd(), base.mnt.as_fd()];
                    let _ = crate::sys::socket::send_fds(chan.as_fd(), &base);
                }
                Ok(())
            }
            // The server's end is gone (EPIPE): it died after saying ready.
            Err(source) => match self.failure(REASON_WAIT) {
                Some(reason) => Err(ServerError::Gone {
                    image: self.image.clone(),
                    reason,
                }),
                None => Err(ServerError::Spawn {
                    image: self.image.clone(),
                    step: "send the fuse fd to the server",
                    source,
                }),
            },
        }
    }

    /// Why the server stopped, if it did: what it wrote on its status pipe
    /// after "ready" (it writes only on failure and keeps the pipe open
    /// while it serves), or that it exited without a word. Waits at most
    /// `wait` for either; `None` means it is still there and silent.
    pub fn failure(&self, wait: Duration) -> Option<String> {
        let ms = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX);
        let ready = crate::sys::poll::poll_readable(&[self.status.as_fd()], ms).ok()?;
        if ready.first() != Some(&true) {
            return None;
        }
        let mut message = vec![0u8; 4096];
        // Readable: this read does not block. The server writes its reason
        // in one write, shorter than PIPE_BUF, so it arrives whole.
        let n = (&self.status).read(&mut message).unwrap_or(0);
        if n == 0 {
            return Some("it exited without saying why (killed?)".into());
        }
        message.truncate(n);
        Some(String::from_utf8_lossy(&message).trim_end().to_owned())
    }

    /// Reap the intermediate child of the double fork. It exits right
    /// after forking the server, so once the server has said ready (or
    /// cairn is about to exec) this does not wait; the job must not
    /// inherit it as a zombie child.
    pub fn reap(&mut self) {
        if let Some(pid) = self.intermediate.take() {
            let _ = sys::waitpid(Some(pid), None);
        }
    }

    /// Wait until the server says it serves (or died): a server that
    /// cannot start gives a clean error instead of a mount that fails with
    /// ENOTCONN later.
    pub fn wait_ready(&mut self) -> Result<(), ServerError> {
        let ready = self.read_status();
        self.reap();
        ready
    }

    /// [`Ending::ReapedByCairn`]: let go of the server after the job's end
    /// and reap it once it has exited (at most [`RELEASE_WAIT`]). cairn is
    /// its subreaper, so it is cairn's child by now. Nothing to do for
    /// [`Ending::AfterCairn`].
    pub fn release(mut self) {
        if self.ending != Ending::ReapedByCairn {
            return;
        }
        // The hangup the server waits for.
        drop(self.chan.take());
        let Some(pid) = self.pid.map(sys::Pid::from_raw) else {
            return;
        };
        // ECHILD: not our child (the subreaper could not be set), PID 1
        // reaps it. Otherwise the pid cannot be reused under us until we
        // reap it, so a pidfd of it is the server's.
        let no_hang = Some(sys::WaitPidFlag::WNOHANG);
        if !matches!(
            sys::waitpid(Some(pid), no_hang),
            Ok(sys::WaitStatus::StillAlive)
        ) {
            return;
        }
        // A pidfd, for a wait with a timeout (waitpid has none).
        if let Ok(pidfd) = crate::sys::pidfd::pidfd_open(pid.as_raw()) {
            let ms = i32::try_from(RELEASE_WAIT.as_millis()).unwrap_or(i32::MAX);
            let _ = crate::sys::poll::poll_readable(&[pidfd.as_fd()], ms);
        }
        // A server still running past the wait is left to PID 1.
        let _ = sys::waitpid(Some(pid), no_hang);
    }

    fn read_status(&mut self) -> Result<(), ServerError> {
        let image = self.image.clone();
        let not_ready = move |message: String| ServerError::NotReady {
            image: image.clone(),
            message,
        };
        let mut file = &self.status;
        let mut first = [0u8; 1];
        match file.read(&mut first) {
            Ok(1) if first[0] == READY => {
                let mut pid = [0u8; 4];
                file.read_exact(&mut pid)
                    .map_err(|e| not_ready(format!("read its pid: {e}")))?;
                self.pid = Some(i32::from_le_bytes(pid));
                Ok(())
            }
            Ok(1) => {
                let mut rest = Vec::new();
                let _ = file.read_to_end(&mut rest);
                let mut message = vec![first[0]];
                message.extend(rest);
                Err(not_ready(
                    String::from_utf8_lossy(&message).trim_end().to_owned(),
                ))
            }
            Ok(_) => Err(not_ready("it exited before serving".into())),
            Err(e) => Err(not_ready(e.to_string())),
        }
    }
}

/// Fork the server for `archive`. Call while single-threaded, before
/// entering the user namespace (the server stays in the host's namespaces).
/// The fuse fd itself comes later through [`Server::mounted`]: the kernel
/// only accepts a `/dev/fuse` fd opened in the mounting user namespace.
/// With [`Ending::ReapedByCairn`] the caller must have made itself a child
/// subreaper first.
pub fn start(
    image: PathBuf,
    archive: Arc<Archive>,
    options: ServeOptions,
    warmup: Warmup,
    ending: Ending,
    warm: Option<WarmSetup>,
) -> Result<Server, ServerError> {
    spawn(image, Role::Serve(archive, options, warmup), ending, warm)
}

/// Fork a bare namespace holder (a kernel mount has no server): it takes
/// the mount namespace fd through [`Server::mounted`] and closes it once
/// cairn's process has exited, so the unmount (squashfs `kill_sb`, loop
/// autoclear) runs there, not in the job's exit. Same rules as [`start`];
/// only for a cairn that execs the job (with `--pid` cairn reaps its
/// helpers, so none may outlive it; see the module doc).
pub fn start_holder(image: PathBuf, warm: Option<WarmSetup>) -> Result<Server, ServerError> {
    spawn(image, Role::Hold, Ending::AfterCairn, warm)
}

fn spawn(
    image: PathBuf,
    role: Role,
    ending: Ending,
    warm: Option<WarmSetup>,
) -> Result<Server, ServerError> {
    let spawn = |step, source| ServerError::Spawn {
        image: image.clone(),
        step,
        source,
    };
    let (status_r, status_w) = sys::pipe().map_err(|e| spawn("pipe", e))?;
    let (chan_cairn, chan_server) = sys::socketpair().map_err(|e| spawn("socketpair", e))?;
    // cairn's own process, which becomes the job: the server holds the
    // namespace until it exits. Without pidfds (Linux < 5.3) it does not
    // hold it at all, and the job's exit unmounts as before.
    let caller = match ending {
        Ending::AfterCairn => crate::sys::pidfd::pidfd_open(sys::getpid()).ok(),
        Ending::ReapedByCairn => None,
    };
    let holds = caller.is_some();
    // Warm needs the holder to know when the runs end (the pidfds); and a
    // `--pid` run's helper may not outlive it (the caller does not publish
    // then).
    let warm = warm.filter(|_| holds);
    let publishes = warm.is_some();
    match sys::fork().map_err(|e| spawn("fork", e))? {
        ForkResult::Child => {
            // The intermediate child: fork the server and leave at once,
            // so the server is reparented (to init or a subreaper).
            match sys::fork() {
                Ok(ForkResult::Child) => {
                    drop(status_r);
                    drop(chan_cairn);
                    let code = run_server(role, ending, status_w, chan_server, caller, warm);
                    // Through the lock: the release watcher may be writing
                    // the block store.
                    leave(None, code)
                }
                Ok(ForkResult::Parent { .. }) => sys::exit_immediately(0),
                Err(e) => {
                    let mut status = std::fs::File::from(status_w);
                    let _ = write!(status, "fork the server process: {e}");
                    sys::exit_immediately(1)
                }
            }
        }
        ForkResult::Parent { child } => {
            drop(status_w);
            drop(chan_server);
            drop(caller);
            // The helper has its copy of the listener: the name is its.
            drop(warm);
            Ok(Server {
                image,
                status: std::fs::File::from(status_r),
                chan: Some(chan_cairn),
                intermediate: Some(child),
                holds,
                ending,
                pid: None,
                warm: publishes,
            })
        }
    }
}

/// Hold the mount namespace `mnt` until the process of `caller` (a pidfd)
/// has exited, then close it: the unmount then runs here if the job was
/// the namespace's last process. A thread, so the FUSE workers keep
/// serving meanwhile (the job's accesses need them).
fn hold_until_exit(caller: OwnedFd, mnt: OwnedFd) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("cairn-hold".into())
        .spawn(move || {
            // An error here (never expected from poll on a pidfd) ends the
            // hold early: the job's exit then unmounts, as without it.
            let _ = crate::sys::poll::poll_readable(&[caller.as_fd()], -1);
            drop(mnt);
        })
        .map(drop)
}

/// Taken by whichever thread ends the server first (the main thread when
/// the session ends, the release watcher when cairn lets go): the other
/// must not exit the process in the middle of the block store's write.
static LEAVING: Mutex<()> = Mutex::new(());

/// Keep what this run decompressed for the next (the block store), then
/// exit the whole process.
fn leave(archive: Option<&Archive>, code: i32) -> ! {
    let _leaving = LEAVING.lock();
    if let Some(archive) = archive {
        archive.finish_store();
    }
    sys::exit_immediately(code)
}

/// [`Ending::ReapedByCairn`]: a thread that ends the server when cairn's
/// end of `chan` hangs up (cairn released it after the job's end, or died).
/// Started before "ready", so a server that cannot start it fails cleanly.
fn watch_release(chan: &OwnedFd, archive: Option<Arc<Archive>>) -> std::io::Result<()> {
    let chan = chan.try_clone()?;
    std::thread::Builder::new()
        .name("cairn-release".into())
        .spawn(move || {
            // Only the hangup: the handover makes the socket readable too.
            let _ = crate::sys::poll::poll_hangup(chan.as_fd(), -1);
            leave(archive.as_deref(), 0)
        })
        .map(drop)
}

/// The server process: detach, keep only what it needs, serve.
fn run_server(
    role: Role,
    ending: Ending,
    status: OwnedFd,
    chan: OwnedFd,
    caller: Option<OwnedFd>,
    warm_setup: Option<WarmSetup>,
) -> i32 {
    let mut status = std::fs::File::from(status);
    let fail = |status: &mut std::fs::File, what: &str| {
        // One write (the reason is short): cairn reads it in one go.
        let _ = status.write_all(what.as_bytes());
        1
    };
    if let Err(e) = sys::setsid() {
        return fail(&mut status, &format!("setsid: {e}"));
    }
    let _ = sys::set_name(c"cairn-fuse");
    // Not the job's directory: the server must not pin a host mount.
    let _ = crate::sys::mount::chdir(std::path::Path::new("/"));
    if let Err(e) = sys::sigprocmask_clear() {
        return fail(&mut status, &format!("clear the signal mask: {e}"));
    }
    // Errors go back to cairn on the status pipe, never to the standard
    // fds: the server must not hold the job's stderr open.
    if let Err(e) = sys::stdio_to_dev_null() {
        return fail(&mut status, &format!("/dev/null on the standard fds: {e}"));
    }
    let mut keep = vec![0, 1, 2, status.as_raw_fd(), chan.as_raw_fd()];
    keep.extend(caller.as_ref().map(|c| c.as_raw_fd()));
    keep.extend(warm_setup.as_ref().map(|w| w.listener.as_raw_fd()));
    if let Err(e) = sys::close_all_except(&keep) {
        return fail(&mut status, &format!("close inherited descriptors: {e}"));
    }
    // Everything that does not need the mounted fd is done before "ready",
    // off the path between cairn's mount and its first access to it; the
    // warm-up runs beside, while cairn sets up and the job starts.
    let mut served = None;
    let prepared = match role {
        Role::Serve(archive, options, warmup) => {
            // The block cache first: the warm-up and the job's first reads
            // may then copy instead of decompress.
            if let Some(store) = options.store.clone().and_then(BlockStore::open) {
                archive.attach_store(store);
            }
            let shared = archive.clone();
            served = Some(archive.clone());
            let _ = std::thread::Builder::new()
                .name("cairn-warm".into())
                .spawn(move || warm(&shared, &warmup));
            match fuse::prepare(archive, options) {
                Ok(p) => Some(p),
                Err(e) => {
                    let chain = crate::error::error_chain(&e);
                    return fail(&mut status, &chain);
                }
            }
        }
        Role::Hold => None,
    };
    if ending == Ending::ReapedByCairn
        && let Err(e) = watch_release(&chan, served.clone())
    {
        return fail(&mut status, &format!("start the release watcher: {e}"));
    }
    let mut ready = vec![READY];
    ready.extend(sys::getpid().to_le_bytes());
    // A bare holder's status is not waited for (cairn only reaps the
    // intermediate child): cairn may be gone already, which is no reason
    // not to hold.
    if status.write_all(&ready).is_err() && prepared.is_some() {
        return 1;
    }
    let Some(prepared) = prepared else {
        drop(status);
        hold(chan, caller, warm_setup);
        return 0;
    };
    // Wait for cairn's mount; EOF means cairn gave up before mounting.
    let mut fds = match crate::sys::socket::recv_fds(chan.as_fd()) {
        Ok(fds) if !fds.is_empty() => fds.into_iter(),
        Ok(_) => return 0,
        Err(e) => return fail(&mut status, &format!("receive the fuse fd: {e}")),
    };
    let Some(fuse_fd) = fds.next() else {
        return 0;
    };
    if let Some(setup) = warm_setup {
        let archive = served.clone();
        let trim = move || {
            if let Some(archive) = &archive {
                archive.drop_caches();
            }
            crate::sys::malloc::trim();
        };
        keep_warm(&chan, setup, caller.as_ref(), false, Some(Box::new(trim)));
    }
    drop(chan);
    if let (Some(caller), Some(mnt)) = (caller, fds.next())
        && let Err(e) = hold_until_exit(caller, mnt)
    {
        // The thread could not start: the fds went with its closure, so
        // the job's exit unmounts, as without a holder. Not a failure to
        // report on the status pipe: serving goes on.
        eprintln!("cairn-fuse: start the namespace holder: {e}");
    }
    // A copy of the device kept until the reason is written: the last
    // device fd's close aborts the connection, and the mount step of cairn
    // that fails then must find the reason already there. Without the copy
    // (no fd left) cairn waits a moment for it instead.
    let device = fuse_fd.try_clone().ok();
    let code = match prepared.serve(fuse_fd) {
        Ok(()) => 0,
        Err(e) => fail(&mut status, &crate::error::error_chain(&e)),
    };
    drop(device);
    // The mount is gone and the job with it (or serving failed).
    leave(served.as_deref(), code)
}

/// A bare holder: wait for cairn's mount namespace, then for cairn's
/// process to exit, then let the namespace go (here, with the unmount, if
/// nothing else uses it).
///
/// Warm (the kernel mount's holder, see ns::warm): the base is held by a
/// thread like a FUSE server's; the process stays until that thread is done
/// and the caller has exited.
fn hold(chan: OwnedFd, caller: Option<OwnedFd>, warm: Option<WarmSetup>) {
    let Ok(fds) = crate::sys::socket::recv_fds(chan.as_fd()) else {
        return;
    };
    let warm_thread = warm.and_then(|w| keep_warm(&chan, w, caller.as_ref(), true, None));
    drop(chan);
    if let (Some(caller), Some(mnt)) = (caller, fds.into_iter().next()) {
        let _ = crate::sys::poll::poll_readable(&[caller.as_fd()], -1);
        drop(mnt);
    }
    if let Some(thread) = warm_thread {
        let _ = thread.join();
    }
}

/// Receive the warm base (the second message of the handover) and keep it
/// for later runs in a thread of its own (ns::warm::hold), which ends after
/// the linger. Without the base (the run did not send it) the listener
/// just closes: no warm mount. `caller` is the first run.
/// Hold the base for later runs (see [`crate::ns::warm::hold`]): a FUSE
/// server passes what to do once idle (`trim`); a kernel mount's holder
/// has nothing to give back.
fn keep_warm(
    chan: &OwnedFd,
    warm: WarmSetup,
    caller: Option<&OwnedFd>,
    kernel: bool,
    trim: Option<Box<dyn Fn() + Send>>,
) -> Option<std::thread::JoinHandle<()>> {
    let mut fds = crate::sys::socket::recv_fds(chan.as_fd()).ok()?.into_iter();
    let (user, mnt) = (fds.next()?, fds.next()?);
    let first = caller.and_then(|c| c.try_clone().ok());
    let holding = crate::ns::warm::Holding {
        listener: warm.listener,
        base: crate::ns::warm::WarmBase {
            user,
            mnt,
            conn: None,
        },
        linger: warm.linger,
        kernel,
        image: warm.image,
        on_idle: trim,
    };
    std::thread::Builder::new()
        .name("cairn-warm".into())
        .spawn(move || crate::ns::warm::hold(holding, first))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn warmup(program: &str, path: &str, cwd: &str) -> Warmup {
        Warmup {
            program: program.into(),
            search_path: path.into(),
            cwd: cwd.into(),
        }
    }

    #[test]
    fn candidates_follow_execve_and_path_rules() {
        let w = warmup("true", "/usr/bin:/bin", "/");
        assert_eq!(
            w.candidates(),
            vec![b"/usr/bin/true".to_vec(), b"/bin/true".to_vec()]
        );
        // A name with '/' is used as is, relative to the working directory.
        assert_eq!(
            warmup("/opt/x", "/bin", "/").candidates(),
            vec![b"/opt/x".to_vec()]
        );
        assert_eq!(
            warmup("./run.sh", "/bin", "/work").candidates(),
            vec![b"/work/./run.sh".to_vec()]
        );
        // Empty and relative PATH entries are the working directory.
        assert_eq!(
            warmup("x", ":bin:/sbin/", "/w").candidates(),
            vec![b"/w/x".to_vec(), b"/w/bin/x".to_vec(), b"/sbin/x".to_vec()]
        );
        assert!(warmup("", "/bin", "/").candidates().is_empty());
    }

    #[test]
    fn warm_up_only_with_an_idle_core() {
        assert!(idle_core("0.52 0.40 0.30 1/234 5678\n", 2));
        // This thread, the server's main thread and cairn: nothing else.
        assert!(idle_core("0.52 0.40 0.30 3/234 5678", 2));
        // A high average of runs that are over does not count.
        assert!(idle_core("3.00 1 1 2/200 3", 2));
        // Something else wants a core now.
        assert!(!idle_core("0.20 0.40 0.30 4/234 5678", 2));
        assert!(idle_core("0.20 0.40 0.30 4/234 5678", 4));
        assert!(!idle_core("0.20 0.40 0.30 66/900 5678", 64));
        assert!(!idle_core("0.00 0 0 1/1 1", 1));
        assert!(!idle_core("", 8));
        assert!(!idle_core("garbage", 8));
        assert!(!idle_core("0.1 0.1 0.1 x/2 3", 8));
    }

    /// An ELF64 header with `phnum` program headers at 64, the interpreter
    /// path (if any) after them.
    fn elf(interp: Option<&[u8]>) -> Vec<u8> {
        let mut b = vec![0u8; 64];
        b[..6].copy_from_slice(b"\x7fELF\x02\x01");
        b[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        b[0x36..0x38].copy_from_slice(&0x38u16.to_le_bytes());
        b[0x38..0x3a].copy_from_slice(&2u16.to_le_bytes());
        let path_at: u64 = 64 + 2 * 0x38;
        for (i, kind) in [1u32, if interp.is_some() { 3 } else { 1 }]
            .iter()
            .enumerate()
        {
            let mut ph = vec![0u8; 0x38];
            ph[..4].copy_from_slice(&kind.to_le_bytes());
            if *kind == 3 {
                let len = interp.map_or(0, |p| p.len() + 1) as u64;
                ph[8..16].copy_from_slice(&path_at.to_le_bytes());
                ph[32..40].copy_from_slice(&len.to_le_bytes());
            }
            assert_eq!(b.len(), 64 + i * 0x38);
            b.extend(ph);
        }
        if let Some(p) = interp {
            b.extend_from_slice(p);
            b.push(0);
        }
        b
    }

    #[test]
    fn elf_interpreter_reads_pt_interp() {
        let dynamic = elf(Some(b"/lib64/ld-linux-x86-64.so.2"));
        assert_eq!(
            elf_interpreter(&dynamic),
            Some(&b"/lib64/ld-linux-x86-64.so.2"[..])
        );
        assert_eq!(elf_interpreter(&elf(None)), None);
        // Truncated anywhere, or not an ELF64 LE file: no interpreter.
        for cut in [0, 5, 0x30, 64 + 0x38 + 10, dynamic.len() - 5] {
            assert_eq!(elf_interpreter(&dynamic[..cut]), None, "cut at {cut}");
        }
        assert_eq!(elf_interpreter(b"#!/bin/sh\necho hi\n"), None);
        let mut be = dynamic.clone();
        be[5] = 2;
        assert_eq!(elf_interpreter(&be), None);
        // A hostile program-header offset does not overflow.
        let mut wild = dynamic;
        wild[0x20..0x28].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(elf_interpreter(&wild), None);
    }
}
