//! Entering the user namespace (with the mount namespace and, on request,
//! the network and PID namespaces) and writing the caller's id maps.

use crate::ns::idmap::IdMap;
use crate::sys::user_namespaces as sys;

/// What failed while entering the namespaces.
#[derive(Debug, thiserror::Error)]
pub enum UsernsError {
    #[error("cairn has {0} threads; unshare(CLONE_NEWUSER) needs a single-threaded process")]
    Threaded(usize),
    #[error("unshare({flags:?}) failed: user namespaces may be disabled (see `cairn check`)")]
    Unshare {
        flags: sys::CloneFlags,
        #[source]
        source: nix::Error,
    },
    #[error("write /proc/self/setgroups failed")]
    Setgroups(#[source] std::io::Error),
    #[error("write /proc/self/uid_map {line:?} failed")]
    UidMap {
        line: String,
        #[source]
        source: std::io::Error,
    },
    #[error("write /proc/self/gid_map {line:?} failed")]
    GidMap {
        line: String,
        #[source]
        source: std::io::Error,
    },
}

/// Which extra namespaces to create beside the user and mount namespaces.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExtraNamespaces {
    pub net: bool,
    pub pid: bool,
    /// No user namespace: root mounting squashfs with the kernel, which
    /// refuses to from any but the initial user namespace. Root keeps its
    /// ids (the maps are identity then) and mounts in its own mount
    /// namespace.
    pub no_user: bool,
}

/// The unshare(2) flags for a run.
pub fn clone_flags(extra: ExtraNamespaces) -> sys::CloneFlags {
    let mut flags = sys::CloneFlags::CLONE_NEWNS;
    if !extra.no_user {
        flags |= sys::CloneFlags::CLONE_NEWUSER;
    }
    if extra.net {
        flags |= sys::CloneFlags::CLONE_NEWNET;
    }
    if extra.pid {
        flags |= sys::CloneFlags::CLONE_NEWPID;
    }
    flags
}

/// Unshare the namespaces and map the caller's ids. Must run before any
/// thread exists: the kernel refuses CLONE_NEWUSER in a threaded process.
pub fn enter(extra: ExtraNamespaces, uid: IdMap, gid: IdMap) -> Result<(), UsernsError> {
    if cfg!(debug_assertions) {
        let threads = sys::thread_count().unwrap_or(1);
        if threads != 1 {
            return Err(UsernsError::Threaded(threads));
        }
    }
    let flags = clone_flags(extra);
    sys::unshare(flags).map_err(|source| UsernsError::Unshare { flags, source })?;
    if extra.no_user {
        return Ok(());
    }
    sys::write_setgroups("deny").map_err(UsernsError::Setgroups)?;
    let line = uid.line();
    sys::write_uid_map(&line).map_err(|source| UsernsError::UidMap { line, source })?;
    let line = gid.line();
    sys::write_gid_map(&line).map_err(|source| UsernsError::GidMap { line, source })?;
    Ok(())
}

/// A warm run, already in the warm mount's user namespace and base mount
/// namespace (ns::warm): unshare a mount namespace of its own (a copy of
/// the base) and the extra namespaces the run asks for; the id maps are
/// the user namespace's already.
pub fn enter_from_base(extra: ExtraNamespaces) -> Result<(), UsernsError> {
    let flags = clone_flags(ExtraNamespaces {
        no_user: true,
        ..extra
    });
    sys::unshare(flags).map_err(|source| UsernsError::Unshare { flags, source })
}

/// The run that makes a warm base: unshare a copy of the base for itself,
/// leaving the base as it is for the warm mount's helper to keep.
pub fn leave_base() -> Result<(), UsernsError> {
    let flags = sys::CloneFlags::CLONE_NEWNS;
    sys::unshare(flags).map_err(|source| UsernsError::Unshare { flags, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_follow_the_request() {
        let base = sys::CloneFlags::CLONE_NEWUSER | sys::CloneFlags::CLONE_NEWNS;
        assert_eq!(clone_flags(ExtraNamespaces::default()), base);
        assert_eq!(
            clone_flags(ExtraNamespaces {
                net: true,
                pid: true,
                no_user: false,
            }),
            base | sys::CloneFlags::CLONE_NEWNET | sys::CloneFlags::CLONE_NEWPID
        );
        assert_eq!(
            clone_flags(ExtraNamespaces {
                no_user: true,
                ..ExtraNamespaces::default()
            }),
            sys::CloneFlags::CLONE_NEWNS
        );
    }

    #[test]
    #[cfg(debug_assertions)]
    fn a_threaded_process_is_refused_before_unshare() {
        // Keep a second thread alive for the whole call, whatever the
        // harness does, so unshare is never reached in the test process.
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let helper = std::thread::spawn(move || {
            let _ = rx.recv();
        });
        let (uid, gid) = crate::ns::idmap::caller_maps(1000, 1000, None, None);
        let result = enter(ExtraNamespaces::default(), uid, gid);
        drop(tx);
        helper.join().expect("join");
        assert!(
            matches!(result, Err(UsernsError::Threaded(n)) if n >= 2),
            "{result:?}"
        );
    }
}
