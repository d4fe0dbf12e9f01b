//! /dev/fuse and the FUSE mount(2): opening the device and mounting it with
//! our own options, so no fusermount (setuid helper) is ever needed.
//!
//! Both calls go through nix's safe wrappers; nothing here needs `unsafe`.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;

use nix::mount::MsFlags;

/// The FUSE character device.
pub const DEV_FUSE: &str = "/dev/fuse";

/// open(2) `/dev/fuse` read-write and close-on-exec (std always sets
/// `O_CLOEXEC`: the fd must not leak into the job; the caller passes it on
/// explicitly when it wants to).
pub fn open_dev_fuse() -> io::Result<OwnedFd> {
    let file = OpenOptions::new().read(true).write(true).open(DEV_FUSE)?;
    Ok(OwnedFd::from(file))
}

/// mount(2) a FUSE filesystem at `target`. `fstype` is `fuse` or
/// `fuse.SUBTYPE`; `data` carries `fd=N,rootmode=...,user_id=...`.
pub fn mount_fuse(
    source: &str,
    target: &Path,
    fstype: &str,
    flags: MsFlags,
    data: &str,
) -> nix::Result<()> {
    nix::mount::mount(Some(source), target, Some(fstype), flags, Some(data))
}
