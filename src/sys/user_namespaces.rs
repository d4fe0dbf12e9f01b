//! user_namespaces(7) and unshare(2): entering new namespaces and writing the
//! id maps of our own process.

use std::fs;
use std::io;

pub use nix::sched::CloneFlags;

/// unshare(2).
pub fn unshare(flags: CloneFlags) -> nix::Result<()> {
    nix::sched::unshare(flags)
}

/// Write `/proc/self/setgroups`: "deny" must be written before an
/// unprivileged process may write its own gid_map (user_namespaces(7)).
pub fn write_setgroups(value: &str) -> io::Result<()> {
    fs::write("/proc/self/setgroups", value)
}

/// Write `/proc/self/uid_map`; the whole map in one write(2), as the kernel
/// accepts the file only once.
pub fn write_uid_map(lines: &str) -> io::Result<()> {
    fs::write("/proc/self/uid_map", lines)
}

/// Write `/proc/self/gid_map` (after [`write_setgroups`] "deny").
pub fn write_gid_map(lines: &str) -> io::Result<()> {
    fs::write("/proc/self/gid_map", lines)
}

/// The number of threads of this process (the `Threads:` line of
/// proc_pid_status(5)); `unshare(CLONE_NEWUSER)` fails with EINVAL when it
/// is more than one.
pub fn thread_count() -> io::Result<usize> {
    let status = fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| io::Error::other("no Threads line in /proc/self/status"))
}
