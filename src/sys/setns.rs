//! setns(2): entering another process's namespaces (`--join`).

use std::os::fd::{AsFd, BorrowedFd};

pub use nix::sched::CloneFlags;

/// setns(2) into the namespace of `fd`.
pub fn setns(fd: BorrowedFd<'_>, kind: CloneFlags) -> nix::Result<()> {
    nix::sched::setns(fd.as_fd(), kind)
}
