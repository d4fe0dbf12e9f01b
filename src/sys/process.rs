//! Processes: fork(2), execve(2), waitpid(2), kill(2), sigprocmask(2),
//! prctl(2) PR_SET_NO_NEW_PRIVS and PR_SET_CHILD_SUBREAPER, close_range(2)
//! and the ids of the caller.

use std::ffi::CStr;
use std::io;

pub use nix::sys::signal::{SigSet, Signal};
pub use nix::sys::wait::{WaitPidFlag, WaitStatus};
pub use nix::unistd::{ForkResult, Pid};

/// fork(2). Only call it while the process has a single thread (cairn never
/// starts one before the job runs), so the child is a consistent copy.
pub fn fork() -> nix::Result<ForkResult> {
    // SAFETY: cairn is single-threaded when it forks (asserted before the
    // namespaces are entered), so no lock can be held by a vanished thread.
    unsafe { nix::unistd::fork() }
}

/// execve(2); returns only on failure.
pub fn execve<A: AsRef<CStr>, E: AsRef<CStr>>(path: &CStr, argv: &[A], envp: &[E]) -> nix::Error {
    match nix::unistd::execve(path, argv, envp) {
        Err(e) => e,
        Ok(never) => match never {},
    }
}

/// waitpid(2).
pub fn waitpid(pid: Option<Pid>, flags: Option<WaitPidFlag>) -> nix::Result<WaitStatus> {
    nix::sys::wait::waitpid(pid, flags)
}

/// kill(2).
pub fn kill(pid: Pid, signal: Signal) -> nix::Result<()> {
    nix::sys::signal::kill(pid, signal)
}

/// sigprocmask(2) SIG_BLOCK.
pub fn sigprocmask_block(set: &SigSet) -> nix::Result<()> {
    set.thread_block()
}

/// sigprocmask(2) SIG_SETMASK to the empty set (before exec of the job).
pub fn sigprocmask_clear() -> nix::Result<()> {
    SigSet::empty().thread_set_mask()
}

/// prctl(2) PR_SET_NO_NEW_PRIVS: execve can never grant privileges again.
pub fn prctl_set_no_new_privs() -> nix::Result<()> {
    nix::sys::prctl::set_no_new_privs()
}

/// CLOSE_RANGE_CLOEXEC (a u32 in libc) as the c_int flags argument of
/// close_range; the assertion proves at compile time that it does not wrap.
#[allow(clippy::cast_possible_wrap)]
const CLOSE_RANGE_CLOEXEC: libc::c_int = libc::CLOSE_RANGE_CLOEXEC as libc::c_int;
const _: () = assert!(CLOSE_RANGE_CLOEXEC >= 0);

/// close_range(2) by its system call number: musl has no wrapper. Returns
/// the raw result (0, or -1 with errno set). Async-signal-safe: a forked
/// child may call it.
///
/// # Safety
/// Closing descriptors (flags 0) must not pull one from under a Rust object
/// that still uses it.
pub unsafe fn close_range(first: u32, last: u32, flags: libc::c_int) -> libc::c_long {
    // Widened to long, as syscall(3) reads its variadic arguments (the
    // upper half of a register holding an int passed through `...` is
    // undefined).
    // SAFETY: close_range takes three integers and touches no memory; the
    // caller answers for the descriptors (above).
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            libc::c_long::from(first),
            libc::c_long::from(last),
            libc::c_long::from(flags),
        )
    }
}

/// close_range(2) with CLOSE_RANGE_CLOEXEC on every descriptor from `first`
/// up: they close at execve, while cairn can still report an exec failure.
pub fn close_range_cloexec(first: u32) -> io::Result<()> {
    // SAFETY: close_range only changes descriptor flags; no Rust object
    // relies on the CLOEXEC flag of a descriptor.
    let rc = unsafe { close_range(first, u32::MAX, CLOSE_RANGE_CLOEXEC) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// _exit(2): leave a forked child without running the parent's atexit
/// handlers or flushing its copies of stdio buffers.
pub fn exit_immediately(code: i32) -> ! {
    // SAFETY: _exit is always safe to call; it never returns.
    unsafe { libc::_exit(code) }
}

/// geteuid(2).
pub fn geteuid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// getegid(2).
pub fn getegid() -> u32 {
    nix::unistd::getegid().as_raw()
}

/// prctl(PR_SET_PDEATHSIG): the caller gets `sig` when its parent exits.
pub fn set_parent_death_signal(sig: nix::sys::signal::Signal) -> nix::Result<()> {
    nix::sys::prctl::set_pdeathsig(sig)
}

/// prctl(PR_SET_CHILD_SUBREAPER): orphaned descendants of the caller
/// are re-parented to it instead of to PID 1, so it can reap them.
pub fn set_child_subreaper() -> nix::Result<()> {
    nix::sys::prctl::set_child_subreaper(true)
}

/// getpid(2).
pub fn getpid() -> i32 {
    nix::unistd::getpid().as_raw()
}

/// getpwuid_r(3): name, home and shell of a user id, when it has an entry.
pub fn getpwuid(uid: u32) -> Option<(String, std::path::PathBuf, std::path::PathBuf)> {
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)).ok()??;
    Some((user.name, user.dir, user.shell))
}

/// getgrgid_r(3): the name of a group id, when it has an entry.
pub fn getgrgid(gid: u32) -> Option<String> {
    let group = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid)).ok()??;
    Some(group.name)
}

/// pipe2(2) with O_CLOEXEC: (read end, write end).
pub fn pipe() -> nix::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
}

/// signal(2) SIG_DFL for `sig`. The Rust runtime ignores SIGPIPE at startup,
/// and an ignored signal stays ignored across execve: the job must get the
/// default back (a pipeline's writer should die of SIGPIPE, not see EPIPE).
pub fn signal_default(sig: Signal) -> nix::Result<()> {
    // SAFETY: installing SIG_DFL involves no handler code, so nothing can
    // run in signal context; the previous disposition is discarded.
    unsafe { nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigDfl) }.map(drop)
}

/// How a signal was sent, from its siginfo `si_code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalOrigin {
    /// kill(2), sigqueue(3), tgkill(2): someone meant this process.
    Sent,
    /// The kernel: a terminal's ^C/^\, SIGCHLD, a fault.
    Kernel,
}

/// sigwaitinfo(2): the next pending signal of `set` and where it came from.
pub fn sigwaitinfo(set: &SigSet) -> nix::Result<(Signal, SignalOrigin)> {
    // SAFETY: siginfo_t is plain old data; all-zero is a valid value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let raw: &libc::sigset_t = set.as_ref();
    // SAFETY: both pointers are valid for the call; `info` is written only.
    let signo = unsafe { libc::sigwaitinfo(raw, &mut info) };
    if signo < 0 {
        return Err(nix::Error::last());
    }
    let origin = match info.si_code {
        libc::SI_USER | libc::SI_QUEUE | libc::SI_TKILL => SignalOrigin::Sent,
        _ => SignalOrigin::Kernel,
    };
    Ok((Signal::try_from(signo)?, origin))
}

/// Close every descriptor except those in `keep` (close_range over the
/// gaps): a forked helper must hold nothing of cairn's but what it uses.
pub fn close_all_except(keep: &[i32]) -> io::Result<()> {
    let mut keep: Vec<u32> = keep.iter().filter_map(|&f| u32::try_from(f).ok()).collect();
    keep.sort_unstable();
    let mut first = 0u32;
    for k in keep.iter().copied().chain(std::iter::once(u32::MAX)) {
        if k > first {
            let last = if k == u32::MAX { u32::MAX } else { k - 1 };
            // SAFETY: close_range closes raw descriptors; the caller is a
            // freshly forked single-threaded helper that owns no Rust object
            // using the closed descriptors afterwards.
            let rc = unsafe { close_range(first, last, 0) };
            if rc < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        first = k.saturating_add(1);
    }
    Ok(())
}

/// setsid(2): a helper leaves the job's session and process group, so a
/// terminal's ^C or a kill of the job's group does not reach it.
pub fn setsid() -> nix::Result<()> {
    nix::unistd::setsid().map(|_| ())
}

/// dup2 `/dev/null` onto fds 0, 1 and 2 of a helper, so it keeps none of
/// the job's pipes open: whoever captures the job's output (srun, a test)
/// sees EOF when the job ends, not when a lingering helper does.
pub fn stdio_to_dev_null() -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    for target in [0, 1, 2] {
        // SAFETY: dup2 onto 0, 1 and 2 replaces the standard descriptors; no
        // Rust object owns them in the helper.
        if unsafe { libc::dup2(null.as_raw_fd(), target) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// prctl(PR_SET_NAME): the helper's name in ps and /proc/PID/comm.
pub fn set_name(name: &std::ffi::CStr) -> nix::Result<()> {
    nix::sys::prctl::set_name(name)
}

/// socketpair(2) AF_UNIX stream, close-on-exec: the channel a helper gets
/// a descriptor over.
pub fn socketpair() -> nix::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType};
    nix::sys::socket::socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
}

/// sendmsg(2) one byte with `fd` as SCM_RIGHTS ([`super::socket::send_fds`]
/// with one descriptor).
pub fn send_fd(
    sock: std::os::fd::BorrowedFd<'_>,
    fd: std::os::fd::BorrowedFd<'_>,
) -> nix::Result<()> {
    super::socket::send_fds(sock, &[fd])
}

/// recvmsg(2) the descriptor [`send_fd`] sent (close-on-exec); `None` at
/// EOF (the peer closed without sending). Extra descriptors are closed.
pub fn recv_fd(sock: std::os::fd::BorrowedFd<'_>) -> nix::Result<Option<std::os::fd::OwnedFd>> {
    Ok(super::socket::recv_fds(sock)?.into_iter().next())
}
