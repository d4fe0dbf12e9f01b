//! The only module with `unsafe` code. Each wrapper is named after the man
//! page of the call it wraps and carries a `// SAFETY:` note saying why the
//! call is sound. Everything else in the crate is `#![deny(unsafe_code)]`.
#![allow(unsafe_code)]

pub mod anchor;
pub mod fuse;
pub mod loopdev;
pub mod malloc;
pub mod mmap;
pub mod mount;
pub mod net;
pub mod pidfd;
pub mod poll;
pub mod process;
pub mod seccomp;
pub mod setns;
pub mod socket;
pub mod user_namespaces;

/// An ioctl request number as the C library's ioctl(2) takes it: glibc's
/// is unsigned long, musl's int (POSIX's). Every request cairn makes fits
/// in 32 bits (`_IOC` packs them so), and the kernel reads the int's bits.
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::unnecessary_cast
)]
pub(crate) const fn ioctl_request(request: libc::c_ulong) -> libc::Ioctl {
    request as libc::Ioctl
}
