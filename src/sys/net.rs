//! netdevice(7): bringing the loopback interface up in a new network
//! namespace with the SIOCGIFFLAGS/SIOCSIFFLAGS ioctls (no `ip` binary).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// IFF_UP (a c_int in libc) as the c_short `ifr_flags` holds; the assertion
/// below proves at compile time that the narrowing keeps its value.
#[allow(clippy::cast_possible_truncation)]
const IFF_UP: libc::c_short = libc::IFF_UP as libc::c_short;
const _: () = assert!(IFF_UP as libc::c_int == libc::IFF_UP);

/// Set IFF_UP on the interface `name` (e.g. "lo") of the current network
/// namespace.
pub fn netdevice_set_up(name: &str) -> io::Result<()> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: socket(2) with constant arguments; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
        // c_char is i8 on x86_64 and u8 on aarch64: the same byte either way.
        *dst = libc::c_char::from_ne_bytes([*src]);
    }
    // SAFETY: SIOCGIFFLAGS reads the name from and writes the flags into
    // `req`, which lives for the whole call.
    let rc = unsafe {
        libc::ioctl(
            sock.as_raw_fd(),
            super::ioctl_request(libc::SIOCGIFFLAGS),
            &mut req,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: after SIOCGIFFLAGS the union holds ifru_flags.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    req.ifr_ifru.ifru_flags = flags | IFF_UP;
    // SAFETY: SIOCSIFFLAGS reads `req`, which lives for the whole call.
    let rc = unsafe {
        libc::ioctl(
            sock.as_raw_fd(),
            super::ioctl_request(libc::SIOCSIFFLAGS),
            &req,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
