//! The syscalls of `--join`: an abstract unix socket (no file, nothing in
//! /dev/shm; it vanishes with its last fd), SO_PEERCRED, pidfd_open(2),
//! poll(2) and setns(2).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, UnixAddr};

pub use nix::sched::CloneFlags;
pub use nix::sys::socket::UnixCredentials;

fn stream_socket() -> nix::Result<OwnedFd> {
    socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
}

/// bind(2) + listen(2) on the abstract name; EADDRINUSE when another
/// process holds it.
pub fn bind_abstract(name: &[u8]) -> nix::Result<OwnedFd> {
    let fd = stream_socket()?;
    let addr = UnixAddr::new_abstract(name)?;
    socket::bind(fd.as_raw_fd(), &addr)?;
    socket::listen(&fd, socket::Backlog::MAXCONN)?;
    Ok(fd)
}

/// connect(2) to the abstract name; ECONNREFUSED when nobody holds it.
pub fn connect_abstract(name: &[u8]) -> nix::Result<OwnedFd> {
    let fd = stream_socket()?;
    let addr = UnixAddr::new_abstract(name)?;
    socket::connect(fd.as_raw_fd(), &addr)?;
    Ok(fd)
}

/// accept4(2) with SOCK_CLOEXEC.
pub fn accept(listener: BorrowedFd<'_>) -> nix::Result<OwnedFd> {
    let raw = socket::accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC)?;
    // SAFETY: accept4 returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// getsockopt(SO_PEERCRED): the pid, uid and gid of the peer.
pub fn peer_credentials(sock: BorrowedFd<'_>) -> nix::Result<UnixCredentials> {
    socket::getsockopt(&sock, socket::sockopt::PeerCredentials)
}

/// pidfd_open(2): a descriptor that becomes readable when `pid` exits.
pub fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1;
    // no memory is shared with the kernel.
    let rc = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let raw = i32::try_from(rc).map_err(|_| std::io::Error::other("pidfd out of range"))?;
    // SAFETY: the kernel returned a fresh descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// poll(2) for readability; returns which of `fds` are readable (or hung
/// up). `timeout_ms` < 0 waits forever.
pub fn poll_readable(fds: &[BorrowedFd<'_>], timeout_ms: i32) -> nix::Result<Vec<bool>> {
    use nix::poll::{PollFd, PollFlags};
    let mut polls: Vec<PollFd<'_>> = fds
        .iter()
        .map(|fd| PollFd::new(*fd, PollFlags::POLLIN))
        .collect();
    poll_until_events(&mut polls, timeout_ms)?;
    Ok(polls
        .iter()
        .map(|p| p.revents().is_some_and(|r| !r.is_empty()))
        .collect())
}

/// poll(2) `polls`, again after a signal; `timeout_ms` < 0 waits forever.
fn poll_until_events(polls: &mut [nix::poll::PollFd<'_>], timeout_ms: i32) -> nix::Result<()> {
    use nix::poll::PollTimeout;
    let timeout = if timeout_ms < 0 {
        PollTimeout::NONE
    } else {
        PollTimeout::try_from(timeout_ms).unwrap_or(PollTimeout::MAX)
    };
    loop {
        match nix::poll::poll(polls, timeout) {
            Ok(_) => return Ok(()),
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// poll(2) for a hangup only (the peer closed its end), ignoring data:
/// true when it came, false at the timeout. `timeout_ms` < 0 waits forever.
pub fn poll_hangup(fd: BorrowedFd<'_>, timeout_ms: i32) -> nix::Result<bool> {
    use nix::poll::{PollFd, PollFlags};
    // No requested events: poll reports POLLHUP and POLLERR regardless.
    let mut polls = [PollFd::new(fd, PollFlags::empty())];
    poll_until_events(&mut polls, timeout_ms)?;
    Ok(polls[0].revents().is_some_and(|r| !r.is_empty()))
}

/// setns(2) into the namespace of `fd`.
pub fn setns(fd: BorrowedFd<'_>, kind: CloneFlags) -> nix::Result<()> {
    nix::sched::setns(fd.as_fd(), kind)
}

/// sendmsg(2) one byte with several descriptors as SCM_RIGHTS.
pub fn send_fds(sock: BorrowedFd<'_>, fds: &[BorrowedFd<'_>]) -> nix::Result<()> {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let raw: Vec<i32> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let iov = [std::io::IoSlice::new(b"J")];
    let cmsg = [ControlMessage::ScmRights(&raw)];
    // EPIPE, not SIGPIPE, when the peer is gone.
    sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsg, MsgFlags::MSG_NOSIGNAL, None).map(|_| ())
}

/// recvmsg(2) the descriptors [`send_fds`] sent (close-on-exec), in order;
/// empty at EOF.
pub fn recv_fds(sock: BorrowedFd<'_>) -> nix::Result<Vec<OwnedFd>> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let mut byte = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 4]);
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut out = Vec::new();
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for fd in fds {
                // SAFETY: SCM_RIGHTS installed `fd` in this process just
                // now; the OwnedFd is its only owner.
                out.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Ok(out)
}
