//! Unix stream sockets for `--join` and the mount server: an abstract
//! socket (no file, nothing in /dev/shm; it vanishes with its last fd),
//! SO_PEERCRED, and descriptors passed as SCM_RIGHTS.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, UnixAddr};

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

/// getsockname(2) of a socket bound to an abstract name: the name.
pub fn abstract_name(sock: BorrowedFd<'_>) -> Option<Vec<u8>> {
    let addr: UnixAddr = socket::getsockname(sock.as_raw_fd()).ok()?;
    addr.as_abstract().map(<[u8]>::to_vec)
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

/// getsockopt(SO_PEERPIDFD): a pidfd of the process that made the peer's
/// end (for a connection to a listener, the process that called listen),
/// exact even if it has exited since. ENOPROTOOPT before Linux 6.5.
pub fn peer_pidfd(sock: BorrowedFd<'_>) -> nix::Result<OwnedFd> {
    socket::getsockopt(&sock, socket::sockopt::PeerPidfd)
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
    recv_byte_and_fds(sock).map(|(_, fds)| fds)
}

/// recvmsg(2) one byte and the descriptors that came with it
/// (close-on-exec), in order; `None` and no descriptors at EOF.
pub fn recv_byte_and_fds(sock: BorrowedFd<'_>) -> nix::Result<(Option<u8>, Vec<OwnedFd>)> {
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
    let got = msg.bytes;
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
    Ok(((got == 1).then_some(byte[0]), out))
}
