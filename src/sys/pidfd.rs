//! pidfd_open(2): a descriptor that becomes readable when a process exits
//! (how `--join` and the mount server notice cairn or a rank is gone).

use std::os::fd::{FromRawFd, OwnedFd};

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
