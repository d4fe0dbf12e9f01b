//! The anchor of a warm mount (ns::warm): a process that lives in the warm
//! mount's user namespace and base mount namespace and listens on an
//! abstract name, so that a later run of the same user can enter both
//! namespaces with one `setns(2)` on the pidfd its connection gives
//! (SO_PEERPIDFD names the process that called listen), without waiting
//! for the helper to be scheduled and answer.
//!
//! The helper forks it, and the child, once in the namespaces and
//! listening, execs cairn's own binary again (`/proc/self/exe`, argv[0]
//! [`ANCHOR_ARGV0`], the socket as fd 3), which [`serve_if_anchor`] turns
//! into the accept loop before anything else. Why exec: a fork would keep
//! a copy of the helper's memory (its caches, its keys) in a process that
//! a job with capabilities in that user namespace (a `--uid 0` run of that
//! warm mount) may read with ptrace; a fresh image holds nothing. It also
//! leaves the anchor dumpable, with the user namespace as its memory's
//! namespace, which entering it through its pidfd needs.
//!
//! The helper is multi-threaded when it starts the anchor (the FUSE server
//! and its warm-up threads run), so until the exec the child makes system
//! calls only: everything it needs (the socket address, argv, the parent's
//! pid) is prepared before the fork, and it calls libc's thin syscall
//! wrappers only (no allocation, no lock another thread could have held).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;

/// A running anchor: its pid, for [`Anchor::end`].
#[derive(Debug)]
pub struct Anchor {
    pid: libc::pid_t,
}

/// argv[0] of the anchor (and its name in `ps`).
pub const ANCHOR_ARGV0: &std::ffi::CStr = c"cairn-anchor";

/// The fd the anchor's listening socket has across the exec.
const ANCHOR_FD: libc::c_int = 3;

/// Start the anchor: it enters `user` then `mnt` (setns), binds and
/// listens on the abstract `name`, and execs cairn as [`ANCHOR_ARGV0`],
/// which accepts and closes connections until it is killed. It dies with
/// the thread that started it (PR_SET_PDEATHSIG, kept across the exec),
/// so a killed helper leaves no anchor. EADDRINUSE and the like end the
/// child (status 1): the runs then ask the helper instead.
pub fn start(user: BorrowedFd<'_>, mnt: BorrowedFd<'_>, name: &[u8]) -> io::Result<Anchor> {
    // SAFETY: sockaddr_un is plain data; all-zero is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::sa_family_t::try_from(libc::AF_UNIX)
        .map_err(|_| io::Error::from_raw_os_error(libc::EAFNOSUPPORT))?;
    // Abstract: a NUL first, then the name (no terminator).
    if name.len() + 1 > addr.sun_path.len() {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    for (slot, &b) in addr.sun_path[1..].iter_mut().zip(name) {
        *slot = libc::c_char::from_ne_bytes([b]);
    }
    let path_offset = std::mem::offset_of!(libc::sockaddr_un, sun_path);
    let addr_len = libc::socklen_t::try_from(path_offset + 1 + name.len())
        .map_err(|_| io::Error::from_raw_os_error(libc::ENAMETOOLONG))?;
    let (user, mnt) = (user.as_raw_fd(), mnt.as_raw_fd());
    let argv = [ANCHOR_ARGV0.as_ptr(), std::ptr::null()];
    let envp = [std::ptr::null::<libc::c_char>()];
    let exec = Exec {
        path: c"/proc/self/exe",
        argv: &argv,
        envp: &envp,
    };
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: fork in a multi-threaded process: the child below makes only
    // system calls through libc's wrappers (async-signal-safe) and leaves
    // by execve or _exit, never returning into Rust code that could
    // allocate or take a lock held by another thread at the fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        anchor_child(parent, user, mnt, &addr, addr_len, &exec);
    }
    Ok(Anchor { pid })
}

/// What the child execs, prepared before the fork.
struct Exec<'a> {
    path: &'static std::ffi::CStr,
    argv: &'a [*const libc::c_char; 2],
    envp: &'a [*const libc::c_char; 1],
}

/// The child of [`start`]'s fork until its exec (never returns). System
/// calls only: see the module doc.
fn anchor_child(
    parent: libc::pid_t,
    user: libc::c_int,
    mnt: libc::c_int,
    addr: &libc::sockaddr_un,
    addr_len: libc::socklen_t,
    exec: &Exec<'_>,
) -> ! {
    let die = || -> ! { crate::sys::process::exit_immediately(1) };
    // First: until the exec it is a copy of the helper, named like it.
    // SAFETY: a NUL-terminated literal, read during the call only.
    unsafe { libc::prctl(libc::PR_SET_NAME, ANCHOR_ARGV0.as_ptr(), 0, 0, 0) };
    // SAFETY: setns on a descriptor the helper keeps open across the fork.
    if unsafe { libc::setns(user, libc::CLONE_NEWUSER) } != 0 {
        die();
    }
    // SAFETY: as above; this process is single-threaded, as setns wants.
    if unsafe { libc::setns(mnt, libc::CLONE_NEWNS) } != 0 {
        die();
    }
    // After the setns: gaining the namespace's capabilities clears the
    // parent-death signal. The exec keeps it.
    // SAFETY: prctl with integer arguments.
    let pdeathsig = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    // SAFETY: getppid has no preconditions.
    let ppid = unsafe { libc::getppid() };
    // The starting thread may have ended before the prctl.
    if pdeathsig != 0 || ppid != parent {
        die();
    }
    // Nothing of the helper's goes on: not the fuse device (the connection
    // must end with the server), not the base's files (this process holds
    // the base by being in it), not the helper's sockets. No Rust object
    // of the child owns them.
    // SAFETY: close_range on raw numbers; see above.
    unsafe { crate::sys::process::close_range(0, u32::MAX, 0) };
    // SAFETY: socket(2) with integer arguments; it gets fd 0 (all closed).
    let sock = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) };
    if sock < 0 {
        die();
    }
    let addr_ptr: *const libc::sockaddr = (addr as *const libc::sockaddr_un).cast();
    // SAFETY: `addr` is a valid sockaddr_un of at least `addr_len` bytes.
    if unsafe { libc::bind(sock, addr_ptr, addr_len) } != 0 {
        die();
    }
    // SAFETY: listen(2) with integer arguments.
    if unsafe { libc::listen(sock, libc::SOMAXCONN) } != 0 {
        die();
    }
    // SAFETY: dup2 of our own descriptor onto a free number.
    if unsafe { libc::dup2(sock, ANCHOR_FD) } != ANCHOR_FD {
        die();
    }
    // SAFETY: close of the original, now copied to ANCHOR_FD.
    unsafe { libc::close(sock) };
    // SAFETY: a NUL-terminated path and NULL-terminated argv and envp
    // arrays of NUL-terminated strings, all alive in the parent's (copied)
    // memory for the call.
    unsafe { libc::execve(exec.path.as_ptr(), exec.argv.as_ptr(), exec.envp.as_ptr()) };
    die()
}

/// If this process is an anchor (argv[0] is [`ANCHOR_ARGV0`] and fd 3 a
/// listening socket), be one: accept and close connections until killed
/// (a connection is only how a run finds this process; closing it keeps
/// the backlog from filling). Else return at once: a `cairn` that someone
/// named so runs as usual.
pub fn serve_if_anchor(argv0: Option<&std::ffi::OsStr>) {
    if argv0.is_none_or(|a| a.as_bytes() != ANCHOR_ARGV0.to_bytes()) {
        return;
    }
    let mut listening: libc::c_int = 0;
    let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>()).unwrap_or(4);
    let value: *mut libc::c_void = (&mut listening as *mut libc::c_int).cast();
    // SAFETY: getsockopt into a c_int whose size `len` gives.
    let rc = unsafe {
        libc::getsockopt(
            ANCHOR_FD,
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            value,
            &mut len,
        )
    };
    if rc != 0 || listening != 1 {
        return;
    }
    let _ = crate::sys::process::set_name(ANCHOR_ARGV0);
    loop {
        let (null_addr, null_len) = (std::ptr::null_mut(), std::ptr::null_mut());
        // SAFETY: accept4 without a peer address (both pointers null).
        let conn = unsafe { libc::accept4(ANCHOR_FD, null_addr, null_len, libc::SOCK_CLOEXEC) };
        if conn >= 0 {
            // SAFETY: close of the descriptor accept4 just returned.
            unsafe { libc::close(conn) };
        } else if io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            crate::sys::process::exit_immediately(1);
        }
    }
}

impl Anchor {
    /// Kill the anchor and reap it (no zombie left beside a server that
    /// keeps serving running jobs). Its name goes with its socket.
    pub fn end(self) {
        // SAFETY: kill of our own child, which only this struct reaps: its
        // pid cannot have been reused before the waitpid below.
        unsafe { libc::kill(self.pid, libc::SIGKILL) };
        let mut status = 0;
        // SAFETY: waitpid for that child, with a valid status pointer.
        while unsafe { libc::waitpid(self.pid, &mut status, 0) } < 0
            && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
        {}
    }
}
