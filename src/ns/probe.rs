//! Probes for `cairn check`: each runs in a forked child (so cairn itself
//! never enters a namespace) and reports back through a pipe what failed.

use std::io::{Read, Write};
use std::path::Path;

use crate::mount::executor::{Linux, MountSyscalls};
use crate::ns::idmap::caller_maps;
use crate::ns::userns::{self, ExtraNamespaces};
use crate::sys::mount::MsFlags;
use crate::sys::process::{self as sys, ForkResult, WaitStatus};

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("probe: {step} failed")]
    Setup {
        step: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("{0}")]
    Failed(String),
}

/// Run `body` in a forked child; `Ok` when it returned `Ok`, else its error
/// text.
fn in_child(body: impl FnOnce() -> Result<(), String>) -> Result<(), ProbeError> {
    let (read_end, write_end) = sys::pipe().map_err(|source| ProbeError::Setup {
        step: "pipe",
        source,
    })?;
    match sys::fork().map_err(|source| ProbeError::Setup {
        step: "fork",
        source,
    })? {
        ForkResult::Child => {
            drop(read_end);
            let code = match body() {
                Ok(()) => 0,
                Err(text) => {
                    let _ = std::fs::File::from(write_end).write_all(text.as_bytes());
                    1
                }
            };
            sys::exit_immediately(code)
        }
        ForkResult::Parent { child } => {
            drop(write_end);
            let mut text = String::new();
            let _ = std::fs::File::from(read_end).read_to_string(&mut text);
            let status = sys::waitpid(Some(child), None).map_err(|source| ProbeError::Setup {
                step: "waitpid",
                source,
            })?;
            match status {
                WaitStatus::Exited(_, 0) => Ok(()),
                _ if !text.is_empty() => Err(ProbeError::Failed(text)),
                other => Err(ProbeError::Failed(format!("probe ended with {other:?}"))),
            }
        }
    }
}

fn chain(err: &dyn std::error::Error) -> String {
    crate::error::error_chain(err)
}

fn enter() -> Result<(), String> {
    let (uid, gid) = caller_maps(sys::geteuid(), sys::getegid(), None, None);
    userns::enter(ExtraNamespaces::default(), uid, gid).map_err(|e| chain(&e))
}

/// Can this process create a user + mount namespace and map its ids?
pub fn user_namespace() -> Result<(), ProbeError> {
    in_child(enter)
}

/// Can overlayfs be mounted inside a user namespace (for `--writable-tmpfs`)?
pub fn overlay_in_user_namespace() -> Result<(), ProbeError> {
    in_child(|| {
        enter()?;
        let mut linux = Linux;
        let io = |what: &str, e: std::io::Error| format!("{what}: {e}");
        linux
            .mount(
                None,
                Path::new("/"),
                None,
                MsFlags::MS_REC | MsFlags::MS_SLAVE,
                None,
            )
            .map_err(|e| io("make / rslave", e))?;
        linux
            .mount(
                Some(Path::new("tmpfs")),
                Path::new("/tmp"),
                Some("tmpfs"),
                MsFlags::empty(),
                None,
            )
            .map_err(|e| io("mount tmpfs on /tmp", e))?;
        for d in ["/tmp/l", "/tmp/u", "/tmp/w", "/tmp/m"] {
            linux.mkdir(Path::new(d), 0o755).map_err(|e| io(d, e))?;
        }
        let opts = "lowerdir=/tmp/l,upperdir=/tmp/u,workdir=/tmp/w";
        let overlay = Some(Path::new("overlay"));
        linux
            .mount(
                overlay,
                Path::new("/tmp/m"),
                Some("overlay"),
                MsFlags::empty(),
                Some(&format!("{opts},userxattr")),
            )
            .or_else(|_| {
                linux.mount(
                    overlay,
                    Path::new("/tmp/m"),
                    Some("overlay"),
                    MsFlags::empty(),
                    Some(opts),
                )
            })
            .map_err(|e| io("mount overlay", e))
    })
}
