//! The FUSE server of a run as a process of its own, outside the job.
//!
//! cairn (still single-threaded) double-forks before entering any
//! namespace: the grandchild is reparented away at once, so it is never a
//! child the job has to reap and never a zombie of it. It leaves the job's
//! session, puts /dev/null on its standard fds (it must not hold the job's
//! output pipes open), keeps only a status pipe and a socket, names itself
//! `cairn-fuse` and says "ready" on the pipe. cairn then enters the user
//! namespace, opens `/dev/fuse` there (the kernel refuses a FUSE mount
//! whose device fd was opened in another user namespace: EINVAL), mounts
//! it as the image root and sends the fd over the socket (SCM_RIGHTS); only
//! then does the server read the kernel's INIT (a read before the mount
//! fails with EPERM) and start its worker threads. The first access to the
//! mount waits for that INIT reply. When the last process of the job's
//! mount namespace exits the kernel drops the mount, the server's read of
//! the device returns ENODEV and it exits by itself; a daemon the job
//! leaves keeps both alive. If the server is killed, the job's accesses
//! fail with ENOTCONN, nothing hangs.

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;

use crate::mount::fuse::{self, ServeOptions};
use crate::squashfs::reader::Archive;
use crate::sys::process::{self as sys, ForkResult};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("start the FUSE server for {image}: {step} failed")]
    Spawn {
        image: PathBuf,
        step: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("the FUSE server for {image} did not start: {message}")]
    NotReady { image: PathBuf, message: String },
}

/// The byte the server writes once it is about to serve.
const READY: u8 = b'R';

/// A started server: cairn's copy of the fuse fd (to mount, then close)
/// and the read end of its status pipe.
#[derive(Debug)]
pub struct Server {
    pub image: PathBuf,
    status: OwnedFd,
    /// cairn's end of the socket pair the fuse fd is sent over.
    chan: Option<OwnedFd>,
}

impl Server {
    /// Hand the mounted fuse fd to the server (SCM_RIGHTS): it may now
    /// read the kernel's INIT (a read of `/dev/fuse` before the mount fails
    /// with EPERM). The first access to the mount waits for the server's
    /// INIT reply, so no further sync is needed; if the server is gone the
    /// access fails with ENOTCONN.
    pub fn mounted(&mut self, fuse_fd: BorrowedFd<'_>) -> Result<(), ServerError> {
        let Some(chan) = self.chan.take() else {
            return Ok(());
        };
        sys::send_fd(chan.as_fd(), fuse_fd).map_err(|source| ServerError::Spawn {
            image: self.image.clone(),
            step: "send the fuse fd to the server",
            source,
        })
    }

    /// Wait until the server says it serves (or died): a server that
    /// cannot start gives a clean error instead of a mount that fails with
    /// ENOTCONN later.
    pub fn wait_ready(&self) -> Result<(), ServerError> {
        let mut file =
            std::fs::File::from(self.status.try_clone().map_err(|e| ServerError::NotReady {
                image: self.image.clone(),
                message: e.to_string(),
            })?);
        let mut first = [0u8; 1];
        match file.read(&mut first) {
            Ok(1) if first[0] == READY => Ok(()),
            Ok(1) => {
                let mut rest = Vec::new();
                let _ = file.read_to_end(&mut rest);
                let mut message = vec![first[0]];
                message.extend(rest);
                Err(ServerError::NotReady {
                    image: self.image.clone(),
                    message: String::from_utf8_lossy(&message).into_owned(),
                })
            }
            Ok(_) => Err(ServerError::NotReady {
                image: self.image.clone(),
                message: "it exited before serving".into(),
            }),
            Err(e) => Err(ServerError::NotReady {
                image: self.image.clone(),
                message: e.to_string(),
            }),
        }
    }
}

/// Fork the server for `archive`. Call while single-threaded, before
/// entering the user namespace (the server stays in the host's namespaces).
/// The fuse fd itself comes later through [`Server::mounted`]: the kernel
/// only accepts a `/dev/fuse` fd opened in the mounting user namespace.
pub fn start(
    image: PathBuf,
    archive: Arc<Archive>,
    options: ServeOptions,
) -> Result<Server, ServerError> {
    let spawn = |step, source| ServerError::Spawn {
        image: image.clone(),
        step,
        source,
    };
    let (status_r, status_w) = sys::pipe().map_err(|e| spawn("pipe", e))?;
    let (chan_cairn, chan_server) = sys::socketpair().map_err(|e| spawn("socketpair", e))?;
    match sys::fork().map_err(|e| spawn("fork", e))? {
        ForkResult::Child => {
            // The intermediate child: fork the server and leave at once,
            // so the server is reparented (to init or a subreaper).
            match sys::fork() {
                Ok(ForkResult::Child) => {
                    drop(status_r);
                    drop(chan_cairn);
                    let code = run_server(archive, options, status_w, chan_server);
                    sys::exit_immediately(code)
                }
                Ok(ForkResult::Parent { .. }) => sys::exit_immediately(0),
                Err(_) => sys::exit_immediately(1),
            }
        }
        ForkResult::Parent { child } => {
            drop(status_w);
            drop(chan_server);
            let _ = sys::waitpid(Some(child), None);
            Ok(Server {
                image,
                status: status_r,
                chan: Some(chan_cairn),
            })
        }
    }
}

/// The server process: detach, keep only what it needs, serve.
fn run_server(archive: Arc<Archive>, options: ServeOptions, status: OwnedFd, chan: OwnedFd) -> i32 {
    let mut status = std::fs::File::from(status);
    let fail = |status: &mut std::fs::File, what: &str| {
        use std::io::Write;
        let _ = status.write_all(what.as_bytes());
        1
    };
    if let Err(e) = sys::setsid() {
        return fail(&mut status, &format!("setsid: {e}"));
    }
    let _ = sys::set_name(c"cairn-fuse");
    // Not the job's directory: the server must not pin a host mount.
    let _ = crate::sys::mount::chdir(std::path::Path::new("/"));
    if let Err(e) = sys::sigprocmask_clear() {
        return fail(&mut status, &format!("clear the signal mask: {e}"));
    }
    // Errors before serving go back to cairn on the status pipe; after
    // that the server is silent (it must not hold the job's stderr open).
    if let Err(e) = sys::stdio_to_dev_null() {
        return fail(&mut status, &format!("/dev/null on the standard fds: {e}"));
    }
    let keep = [0, 1, 2, status.as_raw_fd(), chan.as_raw_fd()];
    if let Err(e) = sys::close_all_except(&keep) {
        return fail(&mut status, &format!("close inherited descriptors: {e}"));
    }
    {
        use std::io::Write;
        if status.write_all(&[READY]).is_err() {
            return 1;
        }
    }
    drop(status);
    // Wait for cairn's mount; EOF means cairn gave up before mounting.
    let fuse_fd = match sys::recv_fd(chan.as_fd()) {
        Ok(Some(fd)) => fd,
        Ok(None) => return 0,
        Err(e) => {
            eprintln!("cairn-fuse: receive the fuse fd: {e}");
            return 1;
        }
    };
    drop(chan);
    match fuse::serve(archive, fuse_fd, options) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("cairn-fuse: {}", crate::run::launch::error_chain(&e));
            1
        }
    }
}
