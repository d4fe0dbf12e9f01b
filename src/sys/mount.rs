//! mount(2), umount2(2), pivot_root(2) and statvfs(3): the calls the mount
//! executor makes.

use std::path::Path;

pub use nix::mount::{MntFlags, MsFlags};
pub use nix::sys::statvfs::FsFlags;

/// mount(2).
pub fn mount(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> nix::Result<()> {
    nix::mount::mount(source, target, fstype, flags, data)
}

/// umount2(2).
pub fn umount2(target: &Path, flags: MntFlags) -> nix::Result<()> {
    nix::mount::umount2(target, flags)
}

/// pivot_root(2).
pub fn pivot_root(new_root: &Path, put_old: &Path) -> nix::Result<()> {
    nix::unistd::pivot_root(new_root, put_old)
}

/// statvfs(3): the mount flags of the filesystem holding `path`.
pub fn statvfs_flags(path: &Path) -> nix::Result<FsFlags> {
    nix::sys::statvfs::statvfs(path).map(|s| s.flags())
}

/// chdir(2).
pub fn chdir(path: &Path) -> nix::Result<()> {
    nix::unistd::chdir(path)
}
