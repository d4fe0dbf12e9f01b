//! Processes: fork(2), execve(2), waitpid(2), kill(2), sigprocmask(2),
//! prctl(2) PR_SET_NO_NEW_PRIVS, close_range(2) and the ids of the caller.

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

/// close_range(2) with CLOSE_RANGE_CLOEXEC on every descriptor from `first`
/// up: they close at execve, while cairn can still report an exec failure.
pub fn close_range_cloexec(first: u32) -> io::Result<()> {
    // SAFETY: close_range only changes descriptor flags; no Rust object
    // relies on the CLOEXEC flag of a descriptor.
    let rc =
        unsafe { libc::close_range(first, u32::MAX, libc::CLOSE_RANGE_CLOEXEC as libc::c_int) };
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
