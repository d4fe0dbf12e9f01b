//! The anchor of a warm mount (ns::warm): a child process of the helper
//! that lives in the warm mount's user namespace and base mount namespace
//! and listens on an abstract name, so that a later run of the same user
//! can enter both namespaces with one `setns(2)` on the pidfd its
//! connection gives (SO_PEERPIDFD names the process that called listen),
//! without waiting for the helper to be scheduled and answer.
//!
//! The helper is multi-threaded when it starts the anchor (the FUSE server
//! and its warm-up threads run), so the child may only make system calls
//! until it exits: everything it needs (the socket address, the parent's
//! pid) is prepared before the fork, and it calls libc's thin syscall
//! wrappers only (no allocation, no lock another thread could have held).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// A running anchor: its pid, for [`Anchor::end`].
#[derive(Debug)]
pub struct Anchor {
    pid: libc::pid_t,
}

/// Fork the anchor: named `cairn-anchor`, it enters `user` then `mnt`
/// (setns), becomes dumpable again (entering a user namespace made it not,
/// and a non-dumpable process's namespaces cannot be entered through its
/// pidfd), binds and listens on the abstract `name`, then accepts and
/// closes connections until it is killed. It dies with the thread that
/// started it (PR_SET_PDEATHSIG), so a killed helper leaves no anchor.
/// EADDRINUSE and the like end the child (status 1): the runs then ask
/// the helper instead.
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
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: fork in a multi-threaded process: the child below makes only
    // system calls through libc's wrappers (async-signal-safe) and leaves
    // by _exit, never returning into Rust code that could allocate or take
    // a lock held by another thread at the fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        anchor_child(parent, user, mnt, &addr, addr_len);
    }
    Ok(Anchor { pid })
}

/// The child's whole life, in the child of [`start`]'s fork (never
/// returns). System calls only: see the module doc.
fn anchor_child(
    parent: libc::pid_t,
    user: libc::c_int,
    mnt: libc::c_int,
    addr: &libc::sockaddr_un,
    addr_len: libc::socklen_t,
) -> ! {
    let die = || -> ! { crate::sys::process::exit_immediately(1) };
    // First: until renamed it is a copy of the helper, named like it.
    // SAFETY: a NUL-terminated literal, read during the call only.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"cairn-anchor".as_ptr(), 0, 0, 0) };
    // SAFETY: setns on a descriptor the helper keeps open across the fork.
    if unsafe { libc::setns(user, libc::CLONE_NEWUSER) } != 0 {
        die();
    }
    // SAFETY: as above; this process is single-threaded, as setns wants.
    if unsafe { libc::setns(mnt, libc::CLONE_NEWNS) } != 0 {
        die();
    }
    // After the setns: gaining the namespace's capabilities clears the
    // parent-death signal (and the dumpable flag, below).
    // SAFETY: prctl with integer arguments.
    let pdeathsig = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    // SAFETY: getppid has no preconditions.
    let ppid = unsafe { libc::getppid() };
    // The starting thread may have ended before the prctl.
    if pdeathsig != 0 || ppid != parent {
        die();
    }
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) };
    // Nothing of the helper's: not the fuse device (the connection must
    // end with the server), not the base's files (this process holds the
    // base by being in it), not the helper's sockets. No Rust object of
    // the child owns them.
    // SAFETY: close_range on raw numbers; see above.
    unsafe { libc::close_range(0, u32::MAX, 0) };
    // SAFETY: socket(2) with integer arguments.
    let sock = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
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
    // A connection is only how a run finds this process: accept and close
    // it, so that closed ones do not fill the backlog.
    loop {
        let (null_addr, null_len) = (std::ptr::null_mut(), std::ptr::null_mut());
        // SAFETY: accept4 without a peer address (both pointers null).
        let conn = unsafe { libc::accept4(sock, null_addr, null_len, libc::SOCK_CLOEXEC) };
        if conn >= 0 {
            // SAFETY: close of the descriptor accept4 just returned.
            unsafe { libc::close(conn) };
        } else if io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            die();
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
