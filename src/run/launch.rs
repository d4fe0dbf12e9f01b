//! The run sequence: enter the namespaces, apply the mount plan, then become
//! the job. Without `--pid` cairn execs the job itself (no process stays in
//! between, signals reach the job natively). With `--pid` a fork is needed:
//! the child is PID 1 of the new namespace, a tiny init that forks the job,
//! reaps every zombie, forwards signals and exits with the job's status;
//! cairn waits for it and forwards signals to it, then reaps the FUSE
//! server (see mount::server). Either way cairn mounts the image root
//! itself and closes its copy of the FUSE connection before anything looks
//! into the mount, the init included: with `--pid` the init only applies
//! the steps after the root (its /proc must be mounted from inside).

use std::ffi::{CString, OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::error_chain;
use crate::mount::executor::{self, Linux, MountError};
use crate::mount::plan::{self, RootSource};
use crate::mount::server::{self, ServerError};
use crate::ns::join::{self, JoinError, Role};
use crate::ns::userns::{self, UsernsError};
use crate::run::env;
use crate::run::request::RunRequest;
use crate::run::timings::Timings;
use crate::spec::env::path_search;
use crate::sys::process::{self as sys, ForkResult, Pid, SigSet, Signal, SignalOrigin, WaitStatus};

/// The signals cairn and its init pass on to the job (Slurm sends SIGTERM
/// at the time limit).
pub const FORWARDED: [Signal; 6] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGQUIT,
];

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error(transparent)]
    Join(#[from] JoinError),
    #[error(transparent)]
    FuseServer(#[from] ServerError),
    /// The server died after the handover, while cairn set the container
    /// up; `step` is the setup step that noticed, if one did.
    #[error("the FUSE server for {image} stopped while the container was set up: {reason}")]
    ServerStopped {
        image: PathBuf,
        reason: String,
        #[source]
        step: Option<Box<LaunchError>>,
    },
    #[error("open /dev/fuse failed")]
    FuseDevice(#[source] crate::mount::fuse::FuseError),
    #[error("attach {image} to a loop device failed")]
    LoopDevice {
        image: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Namespaces(#[from] UsernsError),
    #[error("bring up the loopback interface of the new network namespace failed")]
    Loopback(#[source] std::io::Error),
    #[error(transparent)]
    Mount(#[from] MountError),
    #[error("--cd {dir}: cannot change to it inside the container")]
    Cd {
        dir: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("prctl(PR_SET_NO_NEW_PRIVS) failed")]
    NoNewPrivs(#[source] nix::Error),
    #[error("mark inherited file descriptors close-on-exec failed")]
    CloseRange(#[source] std::io::Error),
    #[error("close the inherited file descriptors of the PID namespace's init failed")]
    CloseInherited(#[source] std::io::Error),
    #[error("{step} failed")]
    Process {
        step: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("command {command:?} has a NUL byte")]
    NulInArgument { command: OsString },
    #[error("{command}: command not found")]
    NotFound { command: String },
    #[error("{command}: cannot execute")]
    NotExecutable {
        command: String,
        #[source]
        source: nix::Error,
    },
}

impl LaunchError {
    /// The exit code DESIGN.md gives this failure: 127 not found, 126 not
    /// executable, 125 everything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            LaunchError::NotFound { .. } => 127,
            LaunchError::NotExecutable { .. } => 126,
            _ => 125,
        }
    }
}

/// The outcome of a `--join` election, held before the request is
/// prepared so that a rank which finds a leader never opens the image.
#[derive(Debug)]
pub enum Joined {
    /// This rank sets the container up and then serves the others.
    Leader(join::Leader),
    /// This rank is now in the leader's namespaces, its root the image.
    Follower,
}

/// `--join`: bind the job's socket (leader) or receive the leader's
/// namespaces and enter them (follower). Call while single-threaded.
pub fn join_or_lead(name: &str, timings: &mut Timings) -> Result<Joined, LaunchError> {
    match join::elect(name)? {
        Role::Follower { user, mnt } => {
            use std::os::fd::AsFd;
            // A root leader with a kernel mount made no user namespace:
            // it then handed over the one we are already in.
            let no_user = join::is_current_user_namespace(user.as_fd())?;
            join::enter(user.as_fd(), mnt.as_fd(), no_user)?;
            timings.mark("joined");
            Ok(Joined::Follower)
        }
        Role::Leader(l) => {
            timings.mark("elected");
            Ok(Joined::Leader(l))
        }
    }
}

/// A follower's job: already in the namespaces, only the exec is left.
/// Returns only on failure.
pub fn exec_follower(req: &RunRequest, timings: &mut Timings) -> LaunchError {
    become_job(req, timings)
}

/// Run the request (`leader`: this rank won a `--join` election). Without
/// `--pid` this only returns on failure (the process has become the job);
/// with `--pid` it returns the job's exit status (128+N after signal N).
pub fn launch(
    req: &RunRequest,
    leader: Option<join::Leader>,
    timings: &mut Timings,
) -> Result<i32, LaunchError> {
    let mut mount = req.mount.clone();
    let pid_ns = req.namespaces.pid;
    // Held until the image is mounted: the loop device (autoclear: it
    // would detach when its last fd closes without a mount). Close-on-exec.
    let mut loop_fd = None;
    // The helper process outside the namespaces: the FUSE server, or for a
    // kernel mount a bare holder; either holds the mount namespace until
    // the job has exited, so the unmount is not in the job's exit path
    // (see mount::server). With --pid cairn stays and reaps the server, so
    // no helper may outlive it: none holds the namespace then, and a kernel
    // mount gets no holder (the price of leaving nothing to PID 1).
    let mut helper = None;
    let mut serves_fuse = false;
    if let RootSource::Squashfs { image, kernel } = &req.mount.root {
        if *kernel {
            let (device, fd) =
                crate::sys::loopdev::attach(image).map_err(|source| LaunchError::LoopDevice {
                    image: image.clone(),
                    source,
                })?;
            mount.root = RootSource::Kernel {
                image: image.clone(),
                device,
            };
            loop_fd = Some(fd);
            timings.mark("loop device");
            if !pid_ns {
                // Only an optimisation: without it the job's exit unmounts.
                helper = server::start_holder(image.clone()).ok();
                timings.mark("holder");
            }
        } else if let Some(sq) = &req.squashfs {
            let ending = if pid_ns {
                // Before the double fork: the server, orphaned when the
                // intermediate child exits, becomes our child, not PID 1's.
                // Without it PID 1 reaps the server, as without --pid.
                if let Err(e) = sys::set_child_subreaper() {
                    tracing::debug!("PR_SET_CHILD_SUBREAPER: {e}");
                }
                server::Ending::ReapedByCairn
            } else {
                server::Ending::AfterCairn
            };
            helper = Some(server::start(
                image.clone(),
                sq.archive.clone(),
                req.serve_options(),
                warmup(req),
                ending,
            )?);
            serves_fuse = true;
            timings.mark("fuse server");
        }
    }
    userns::enter(req.namespaces, req.uid_map, req.gid_map)?;
    if req.namespaces.net {
        crate::sys::net::netdevice_set_up("lo").map_err(LaunchError::Loopback)?;
    }
    // The namespace files, opened now, while the host's /proc is still at
    // /proc (the image may have none): the leader keeps them for the join
    // supervisor, the helper holds the mount namespace.
    let open_ns = |p: &str| {
        std::fs::File::open(p)
            .map(std::os::fd::OwnedFd::from)
            .map_err(|source| JoinError::Io {
                step: "open the namespace files in /proc/self/ns",
                source,
            })
    };
    let ns_fds = match &leader {
        Some(_) => Some((
            open_ns("/proc/self/ns/user")?,
            open_ns("/proc/self/ns/mnt")?,
        )),
        None => None,
    };
    let mnt_ns = match (&helper, &ns_fds) {
        (None, _) => None,
        _ if pid_ns => None,
        (Some(_), Some((_, mnt))) => mnt.try_clone().ok(),
        (Some(_), None) => open_ns("/proc/self/ns/mnt").ok(),
    };
    timings.mark("namespaces");
    // Opened here, inside the user namespace: the kernel refuses a FUSE
    // mount whose /dev/fuse fd was opened in another user namespace (EINVAL).
    let mut fuse_fd = None;
    if let Some(server) = helper.as_mut().filter(|_| serves_fuse) {
        use std::os::fd::AsRawFd;
        // The server is set up (the status pipe said so) but waits for the
        // mounted fd before it reads the device.
        server.wait_ready()?;
        let fd = crate::mount::fuse::open_device().map_err(LaunchError::FuseDevice)?;
        timings.mark("fuse ready");
        mount.root = RootSource::Fuse {
            image: server.image.clone(),
            fd: fd.as_raw_fd(),
            uid: req.uid_map.inside,
            gid: req.gid_map.inside,
        };
        fuse_fd = Some(fd);
    }
    let steps = plan::plan(&mount);
    timings.mark("plan");
    let root = steps
        .iter()
        .position(|s| matches!(s, plan::MountStep::Root { .. }))
        .map_or(0, |i| i + 1);
    let (to_root, after_root) = steps.split_at(root);
    // The root is mounted here, also with --pid (before the init's fork),
    // so that the fuse fd is handed over and closed before any process
    // exists that could keep a copy of it across the first access.
    mount_root(
        to_root,
        Handover {
            helper: helper.as_mut(),
            fuse_fd,
            mnt_ns: mnt_ns.as_ref(),
        },
        timings,
    )?;
    drop(loop_fd);
    let server = helper.as_ref().filter(|_| serves_fuse);
    if !pid_ns {
        mount_rest(after_root, server, timings)?;
        if let (Some(l), Some((user, mnt))) = (leader, ns_fds) {
            l.start_supervisor(user, mnt, req.join_linger)?;
            timings.mark("join supervisor");
        }
        if let Some(h) = helper.as_mut() {
            h.reap();
        }
        drop(helper);
        drop(mnt_ns);
        let err = become_job(req, timings);
        return Err(err);
    }
    // --pid: the new PID namespace takes effect for children only.
    let mut signals = SigSet::empty();
    for s in FORWARDED {
        signals.add(s);
    }
    signals.add(Signal::SIGCHLD);
    sys::sigprocmask_block(&signals).map_err(|source| LaunchError::Process {
        step: "block signals",
        source,
    })?;
    // cairn, outside, is what the launcher sees and signals: the init must
    // not outlive it (a `kill -9` of cairn would leave the job running,
    // out of reach in its own PID namespace).
    let supervisor = crate::sys::pidfd::pidfd_open(sys::getpid()).ok();
    match sys::fork().map_err(|source| LaunchError::Process {
        step: "fork the PID namespace's init",
        source,
    })? {
        ForkResult::Child => {
            // SIGKILL to a PID namespace's init ends every process in it.
            // getppid() is 0 in the new namespace, so the pidfd tells
            // whether cairn died before the death signal was armed.
            let armed = sys::set_parent_death_signal(Signal::SIGKILL).is_ok();
            if armed
                && let Some(cairn) = &supervisor
                && crate::sys::poll::poll_readable(&[std::os::fd::AsFd::as_fd(cairn)], 0)
                    .is_ok_and(|ready| ready.first() == Some(&true))
            {
                sys::exit_immediately(125);
            }
            drop(supervisor);
            // /proc of the new PID namespace can only be mounted from
            // inside it: the steps after the root are the init's.
            let applied = mount_rest(after_root, server, timings);
            drop(helper);
            let code = match applied {
                Ok(()) => init(req, timings, &signals),
                Err(err) => report(&err),
            };
            sys::exit_immediately(code)
        }
        ForkResult::Parent { child } => {
            if let Some(h) = helper.as_mut() {
                h.reap();
            }
            let code = supervise(child, &signals);
            // The job is over: let the server go and reap it.
            if let Some(h) = helper {
                h.release();
            }
            code
        }
    }
}

/// The program the job will exec, for the FUSE server to warm up.
fn warmup(req: &RunRequest) -> server::Warmup {
    server::Warmup {
        program: req
            .command
            .first()
            .map(|p| p.as_bytes().to_vec())
            .unwrap_or_default(),
        search_path: env::lookup(&req.env, "PATH")
            .unwrap_or(OsStr::new(env::DEFAULT_PATH))
            .as_bytes()
            .to_vec(),
        cwd: req.cwd.as_os_str().as_bytes().to_vec(),
    }
}

/// What goes to the helper process once the root is mounted.
struct Handover<'a> {
    helper: Option<&'a mut server::Server>,
    /// The FUSE connection (a FUSE root only): cairn's only copy, closed
    /// once it is handed over.
    fuse_fd: Option<std::os::fd::OwnedFd>,
    /// The job's mount namespace, for the helper to hold.
    mnt_ns: Option<&'a std::os::fd::OwnedFd>,
}

/// Apply the plan up to the image root, then hand the FUSE server its
/// connection and the helper the mount namespace. cairn's copy of the
/// connection is closed here, before anything looks into the mount: a
/// server that dies then aborts the connection (see mount::server).
fn mount_root(
    steps: &[plan::MountStep],
    handover: Handover<'_>,
    timings: &mut Timings,
) -> Result<(), LaunchError> {
    use std::os::fd::AsFd;
    executor::apply_plan(&mut Linux, steps)?;
    let Handover {
        helper,
        fuse_fd,
        mnt_ns,
    } = handover;
    let serves_fuse = fuse_fd.is_some();
    if let Some(helper) = helper {
        let sent = helper.mounted(fuse_fd, mnt_ns.map(|f| f.as_fd()));
        // A bare holder that is gone costs only the fast exit.
        if serves_fuse {
            sent?;
        }
    }
    timings.mark("root mounted");
    Ok(())
}

/// Apply the steps after the root (they look into it). On a FUSE root,
/// when a step fails, or even when all went through, ask the server
/// whether it stopped meanwhile: its reason (it could not start its
/// workers, ...) says more than the ENOTCONN of the step that noticed.
fn mount_rest(
    steps: &[plan::MountStep],
    server: Option<&server::Server>,
    timings: &mut Timings,
) -> Result<(), LaunchError> {
    let applied = (|| {
        if server.is_some() {
            list_looked_into(steps);
            timings.mark("listed");
        }
        executor::apply_plan(&mut Linux, steps)?;
        timings.mark("mounts");
        Ok::<_, LaunchError>(())
    })();
    let Some(server) = server else {
        return applied;
    };
    // Only a lost connection waits for the reason (it is normally there
    // already, see server::REASON_WAIT); any other outcome just looks.
    let wait = match &applied {
        Err(e) if connection_lost(e) => server::REASON_WAIT,
        _ => std::time::Duration::ZERO,
    };
    match server.failure(wait) {
        Some(reason) => Err(LaunchError::ServerStopped {
            image: server.image.clone(),
            reason,
            step: applied.err().map(Box::new),
        }),
        None => applied,
    }
}

/// Whether `err` comes from a FUSE connection that is gone: the kernel
/// fails the requests it aborted with ECONNABORTED, later ones with
/// ENOTCONN.
fn connection_lost(err: &LaunchError) -> bool {
    let lost = |errno: i32| errno == libc::ENOTCONN || errno == libc::ECONNABORTED;
    let mut source: Option<&dyn std::error::Error> = Some(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.raw_os_error().is_some_and(lost)
        {
            return true;
        }
        if let Some(errno) = e.downcast_ref::<nix::Error>()
            && lost(*errno as i32)
        {
            return true;
        }
        source = e.source();
    }
    false
}

/// List, once each, the image's directories that `steps` mount into. On a
/// FUSE root each name the kernel does not know costs a LOOKUP round trip
/// through the server while the job waits (9 in a plain run: /dev, /proc,
/// /sys, /tmp, /etc, /etc/hosts, ...); a listing is one READDIRPLUS that
/// hands it every entry of a directory, the job's own /usr and /bin too.
/// The first read of a listing is enough. An error only leaves the lookups
/// to come one by one.
fn list_looked_into(steps: &[plan::MountStep]) {
    use plan::MountStep::{Bind, Proc, Sysfs};
    let mut dirs: Vec<&std::path::Path> = Vec::new();
    for step in steps {
        let (Bind { target, .. } | Proc { target } | Sysfs { target }) = step else {
            continue;
        };
        if let Some(dir) = target.parent()
            && !dirs.contains(&dir)
        {
            dirs.push(dir);
        }
    }
    for dir in dirs {
        if let Ok(mut entries) = std::fs::read_dir(dir) {
            let _ = entries.next();
        }
    }
}

/// Print a setup failure of a forked process and give its exit code.
fn report(err: &LaunchError) -> i32 {
    eprintln!("cairn: {}", error_chain(err));
    err.exit_code()
}

fn status_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

/// cairn's side of `--pid`: forward signals to the init, return its status.
/// Only signals someone sent (kill) are forwarded: a terminal's ^C reaches
/// cairn, the init and the job at once (one process group), and forwarding
/// it too would deliver it to the job two or three times.
fn supervise(child: Pid, signals: &SigSet) -> Result<i32, LaunchError> {
    loop {
        let (sig, origin) = sys::sigwaitinfo(signals).map_err(|source| LaunchError::Process {
            step: "sigwaitinfo",
            source,
        })?;
        if sig == Signal::SIGCHLD {
            match sys::waitpid(Some(child), Some(sys::WaitPidFlag::WNOHANG)) {
                Ok(status) => {
                    if let Some(code) = status_code(status) {
                        return Ok(code);
                    }
                }
                Err(source) => {
                    return Err(LaunchError::Process {
                        step: "waitpid the init",
                        source,
                    });
                }
            }
        } else if origin == SignalOrigin::Sent {
            let _ = sys::kill(child, sig);
        }
    }
}

/// PID 1 of the new PID namespace: fork the job, reap every zombie, forward
/// signals, exit with the job's status. It keeps only fds 0-2: anything
/// else cairn inherited (the launcher's fds, cairn's own) would stay open
/// in PID 1 for the job's whole life, where a `--uid 0` job reaches it
/// through `/proc/1/fd` (the job itself gets only 0-2 anyway, see
/// [`become_job`]). The caller has dropped every fd it owns: nothing may
/// close one of these again.
fn init(req: &RunRequest, timings: &mut Timings, signals: &SigSet) -> i32 {
    if let Err(e) = sys::close_all_except(&[0, 1, 2]) {
        return report(&LaunchError::CloseInherited(e));
    }
    let job = match sys::fork() {
        Ok(ForkResult::Child) => {
            let err = become_job(req, timings);
            sys::exit_immediately(report(&err))
        }
        Ok(ForkResult::Parent { child }) => child,
        Err(source) => {
            return report(&LaunchError::Process {
                step: "fork the job",
                source,
            });
        }
    };
    loop {
        let Ok((sig, origin)) = sys::sigwaitinfo(signals) else {
            return 125;
        };
        if sig != Signal::SIGCHLD {
            if origin == SignalOrigin::Sent {
                let _ = sys::kill(job, sig);
            }
            continue;
        }
        // Reap everything: orphans of the job are re-parented to us.
        loop {
            match sys::waitpid(None, Some(sys::WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(status) => {
                    if status.pid() == Some(job)
                        && let Some(code) = status_code(status)
                    {
                        return code;
                    }
                }
            }
        }
    }
}

/// The last steps in the job's own process: working directory, no new
/// privileges, only fds 0-2, environment, execve. Returns only on failure.
fn become_job(req: &RunRequest, timings: &mut Timings) -> LaunchError {
    if let Err(source) = crate::sys::mount::chdir(&req.cwd) {
        return LaunchError::Cd {
            dir: req.cwd.clone(),
            source,
        };
    }
    if let Err(e) = sys::prctl_set_no_new_privs() {
        return LaunchError::NoNewPrivs(e);
    }
    if let Err(e) = sys::close_range_cloexec(3) {
        return LaunchError::CloseRange(e);
    }
    if let Err(source) = sys::signal_default(Signal::SIGPIPE) {
        return LaunchError::Process {
            step: "restore the default SIGPIPE action",
            source,
        };
    }
    if let Err(source) = sys::sigprocmask_clear() {
        return LaunchError::Process {
            step: "unblock signals",
            source,
        };
    }
    timings.mark("exec_prep");
    timings.print();
    exec_command(&req.command, &req.env)
}

fn cstring(s: &OsStr) -> Result<CString, LaunchError> {
    CString::new(s.as_bytes()).map_err(|_| LaunchError::NulInArgument {
        command: s.to_os_string(),
    })
}

/// execve the command, searching the job's own PATH (not cairn's) when the
/// name has no '/'. Errors map to 127 (not found) or 126 (not executable).
pub fn exec_command(command: &[OsString], job_env: &[(OsString, OsString)]) -> LaunchError {
    let Some(program) = command.first() else {
        return LaunchError::NotFound {
            command: String::new(),
        };
    };
    let name = program.to_string_lossy().into_owned();
    let prepared = (|| {
        let argv = command
            .iter()
            .map(|a| cstring(a))
            .collect::<Result<Vec<_>, _>>()?;
        let envp = job_env
            .iter()
            .map(|(k, v)| {
                let mut kv = k.clone();
                kv.push("=");
                kv.push(v);
                cstring(&kv)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok::<_, LaunchError>((argv, envp))
    })();
    let (argv, envp) = match prepared {
        Ok(p) => p,
        Err(e) => return e,
    };
    let path = env::lookup(job_env, "PATH").unwrap_or(OsStr::new(env::DEFAULT_PATH));
    let candidates: Vec<PathBuf> = match path_search(program.as_bytes(), path.as_bytes()) {
        None => vec![PathBuf::from(program)],
        Some(dirs) => dirs
            .into_iter()
            .map(|dir| {
                let dir = if dir.is_empty() {
                    Path::new(".")
                } else {
                    Path::new(OsStr::from_bytes(dir))
                };
                dir.join(program)
            })
            .collect(),
    };
    let mut denied = None;
    for candidate in candidates {
        let Ok(path) = cstring(candidate.as_os_str()) else {
            continue;
        };
        match sys::execve(&path, &argv, &envp) {
            nix::Error::ENOENT | nix::Error::ENOTDIR => continue,
            nix::Error::EACCES => denied = Some(nix::Error::EACCES),
            other => {
                return LaunchError::NotExecutable {
                    command: name,
                    source: other,
                };
            }
        }
    }
    match denied {
        Some(source) => LaunchError::NotExecutable {
            command: name,
            source,
        },
        None => LaunchError::NotFound { command: name },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_with_path(path: &str) -> Vec<(OsString, OsString)> {
        vec![("PATH".into(), path.into())]
    }

    // Only failing execs are tried here: a successful one would replace the
    // test process.
    #[test]
    fn missing_commands_are_127() {
        let err = exec_command(&["/no/such/program".into()], &env_with_path("/usr/bin"));
        assert!(matches!(err, LaunchError::NotFound { .. }), "{err:?}");
        assert_eq!(err.exit_code(), 127);
        let err = exec_command(
            &["no-such-program-xyz".into()],
            &env_with_path("/nope:/usr/bin"),
        );
        assert_eq!(err.exit_code(), 127);
        assert_eq!(err.to_string(), "no-such-program-xyz: command not found");
    }

    #[test]
    fn non_executable_files_are_126() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("data");
        std::fs::write(&file, "not a program").expect("write");
        let err = exec_command(&[file.clone().into()], &[]);
        assert!(matches!(err, LaunchError::NotExecutable { .. }), "{err:?}");
        assert_eq!(err.exit_code(), 126);
        // Found on PATH but not executable: 126 too, after trying the rest.
        let path = format!("/nope:{}", dir.path().display());
        let err = exec_command(&["data".into()], &env_with_path(&path));
        assert_eq!(err.exit_code(), 126);
        // A directory is not executable.
        let err = exec_command(&[dir.path().into()], &[]);
        assert_eq!(err.exit_code(), 126);
    }

    #[test]
    fn nul_in_an_argument_is_a_cairn_error() {
        let err = exec_command(&["a\0b".into()], &[]);
        assert_eq!(err.exit_code(), 125);
    }

    #[test]
    fn error_chain_joins_sources() {
        let err = LaunchError::Loopback(std::io::Error::from_raw_os_error(libc::EPERM));
        assert!(error_chain(&err).starts_with("bring up the loopback interface"));
        assert!(error_chain(&err).contains("Operation not permitted"));
    }
}
