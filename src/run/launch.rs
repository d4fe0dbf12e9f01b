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
//!
//! Warm mounts (ns::warm): a run of a squashfs image first looks for a warm
//! mount of it; found, it enters that mount's user namespace and base and
//! unshares its own copy, attaches nothing and binds its root from the
//! base. Otherwise it attaches the image as above, mounts it into a base of
//! its own, hands the base to its helper (which keeps it for later runs)
//! and goes on in a copy; either way the run's own plan is the same.

use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::error_chain;
use crate::mount::executor::{self, Linux, MountError};
use crate::mount::plan::{self, RootSource};
use crate::mount::server::{self, ServerError};
use crate::ns::join::{self, JoinError, Role};
use crate::ns::userns::{self, UsernsError};
use crate::ns::warm::{self, WarmBase};
use crate::run::env;
use crate::run::request::{RootImage, RunRequest};
use crate::run::timings::Timings;
use crate::run::tree::SquashTree;
use crate::spec::env::exec_candidates;
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
    #[error("image {image}: not a usable squashfs image")]
    Image {
        image: PathBuf,
        #[source]
        source: crate::squashfs::reader::ReadError,
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
    #[error("--seccomp: install the filter failed")]
    Seccomp(#[source] std::io::Error),
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
    let warmth = Warmth::find(req, timings);
    let mut run = RunHandles::attach(req, leader, warmth, timings)?;
    run.enter_namespaces(req)?;
    timings.mark("namespaces");
    let root = run.root_source(req, timings)?;
    let root = if run.publishes {
        run.make_warm_base(req, root, timings)?
    } else {
        run.open_namespace_files(req.namespaces.pid)?;
        root
    };
    let steps = plan::plan(&req.mount.clone().with_root(root));
    timings.mark("plan");
    let (to_root, after_root) = split_at_root(&steps);
    // The root is mounted here, also with --pid (before the init's fork),
    // so that the fuse fd is handed over and closed before any process
    // exists that could keep a copy of it across the first access.
    run.mount_root(to_root, timings)?;
    if req.namespaces.pid {
        run_under_init(req, run, after_root, timings)
    } else {
        Err(exec_in_place(req, run, after_root, timings))
    }
}

/// Whether this run uses a warm mount, leaves its own warm, or neither
/// (see ns::warm).
enum Warmth {
    Off,
    /// A warm mount of the image is there: how to enter it.
    Enter(WarmEntry),
    /// Cold, and its mount stays warm after it: the reserved socket, for
    /// the helper.
    Publish(OwnedFd),
}

impl Warmth {
    /// Look for a warm mount of the request's image (same user, image bytes,
    /// id maps and kind of mount), else reserve its name. A squashfs image
    /// only (a directory has nothing to keep warm), and not with a linger of
    /// 0. A `--pid` run enters a warm mount but leaves none: cairn reaps its
    /// helper then, so none may outlive it (see mount::server).
    fn find(req: &RunRequest, timings: &mut Timings) -> Warmth {
        let RootImage::Squashfs { image, kernel } = &req.mount.root else {
            return Warmth::Off;
        };
        if req.warm_linger.is_zero() {
            timings.set_run("cold");
            return Warmth::Off;
        }
        let key = warm::WarmKey {
            uid: sys::geteuid(),
            image: &image.identity,
            maps: [
                req.uid_map.inside,
                req.uid_map.outside,
                req.uid_map.count,
                req.gid_map.inside,
                req.gid_map.outside,
                req.gid_map.count,
            ],
            kernel: *kernel,
        };
        let name = warm::socket_name(&key, req.secret.as_ref());
        let found = Self::enter_or_reserve(&name, req.namespaces.pid);
        timings.mark("warm lookup");
        match &found {
            Warmth::Enter(entry) => {
                timings.set_run("warm");
                timings.label(
                    "entered",
                    match entry {
                        WarmEntry::Handed(_) => "helper",
                        WarmEntry::Entered(_) => "anchor",
                    },
                );
            }
            Warmth::Off | Warmth::Publish(_) => timings.set_run("cold"),
        }
        found
    }

    /// Enter the warm mount of `name`, else take the name (not with `--pid`,
    /// see [`Warmth::find`]); when another run took it between our look and
    /// our bind, look again: it is setting the mount up, and waiting for it
    /// beats mounting the image once more.
    fn enter_or_reserve(name: &str, pid_ns: bool) -> Warmth {
        if warm::enter_through_anchor(name) {
            return Warmth::Enter(WarmEntry::Entered(name.to_owned()));
        }
        for _ in 0..warm::RACE_TRIES {
            match warm::enter_existing(name) {
                warm::Lookup::Found(base) => return Warmth::Enter(WarmEntry::Handed(base)),
                warm::Lookup::Unusable => return Warmth::Off,
                warm::Lookup::Nobody if pid_ns => return Warmth::Off,
                warm::Lookup::Nobody => {}
            }
            if let Some(listener) = warm::reserve(name) {
                return Warmth::Publish(listener);
            }
            std::thread::sleep(warm::RACE_PAUSE);
        }
        Warmth::Off
    }
}

/// How a warm run enters the warm mount ([`RunHandles::enter_namespaces`]).
enum WarmEntry {
    /// The helper handed over its namespaces.
    Handed(WarmBase),
    /// In them already, through the anchor: the warm socket's name, to
    /// tell the helper.
    Entered(String),
}

/// What a run holds open from attaching the image until cairn becomes the
/// job (or setup fails): one owner, so that dropping it is the cleanup on
/// every path, early returns included. A phase takes out what it hands on
/// (the fuse fd to the server, the namespace files to the join supervisor)
/// or must close at a given moment; whatever is left goes with the struct.
///
/// Fields drop in declaration order; no cleanup among them waits for
/// another, so that order does not matter. When matters: the fuse fd is
/// closed right after the handover and the loop device fd right after the
/// root mount, both by [`RunHandles::mount_root`] itself; and the `--pid`
/// init drops the whole struct before it closes every inherited fd by
/// number ([`start_init`]), since an `OwnedFd` dropped after that would
/// close a number that may be in use again.
struct RunHandles {
    image: AttachedImage,
    /// `--join` leader: its socket, until the join supervisor takes it.
    leader: Option<join::Leader>,
    /// The leader's user and mount namespace files, for the supervisor.
    join_ns: Option<(OwnedFd, OwnedFd)>,
    /// The job's mount namespace, for the helper to hold.
    held_mnt_ns: Option<OwnedFd>,
    /// A warm run: how it enters the warm mount.
    warm_entry: Option<WarmEntry>,
    /// This run leaves its mount warm: its helper has the reserved socket
    /// and gets the base once made ([`RunHandles::make_warm_base`]).
    publishes: bool,
}

/// The image root once attached, before any namespace exists.
///
/// The helper process outside the namespaces is the FUSE server, or for a
/// kernel mount a bare holder; either holds the mount namespace until the
/// job has exited, so the unmount is not in the job's exit path (see
/// mount::server). With `--pid` cairn stays and reaps the server, so no
/// helper may outlive it: none holds the namespace then, and a kernel
/// mount gets no holder (the price of leaving nothing to PID 1).
enum AttachedImage {
    /// Nothing to attach: a directory is bound as it is.
    Directory(PathBuf),
    /// Already mounted in a warm mount's base (ns::warm), whose helper is
    /// another run's.
    Warm(PathBuf),
    /// On a loop device, for the kernel to mount.
    Loop {
        image: PathBuf,
        device: PathBuf,
        /// Held until the image is mounted: the loop device is autoclear
        /// and would detach when its last fd closes without a mount.
        /// Close-on-exec.
        fd: Option<OwnedFd>,
        /// Only an optimisation: without it the job's exit unmounts.
        holder: Option<server::Server>,
    },
    /// Served by cairn's FUSE server.
    Fuse {
        server: server::Server,
        /// cairn's copy of the connection, opened inside the user
        /// namespace; its only copy until it is handed to the server.
        device: Option<OwnedFd>,
    },
}

impl AttachedImage {
    /// The helper process, if there is one (see the type's doc).
    fn helper_mut(&mut self) -> Option<&mut server::Server> {
        match self {
            AttachedImage::Directory(_) | AttachedImage::Warm(_) => None,
            AttachedImage::Loop { holder, .. } => holder.as_mut(),
            AttachedImage::Fuse { server, .. } => Some(server),
        }
    }

    /// The FUSE server, asked why it stopped when a mount step fails.
    fn fuse_server(&self) -> Option<&server::Server> {
        match self {
            AttachedImage::Fuse { server, .. } => Some(server),
            _ => None,
        }
    }
}

impl RunHandles {
    /// Attach the image: a squashfs file to a loop device (and its holder)
    /// or to a FUSE server. Call while single-threaded, before entering the
    /// namespaces: the helper forks and stays in the host's.
    fn attach(
        req: &RunRequest,
        leader: Option<join::Leader>,
        warmth: Warmth,
        timings: &mut Timings,
    ) -> Result<Self, LaunchError> {
        let (warm_entry, publish) = match warmth {
            Warmth::Off => (None, None),
            Warmth::Enter(entry) => (Some(entry), None),
            Warmth::Publish(listener) => (None, Some(listener)),
        };
        let publish = publish.map(|listener| server::WarmSetup {
            listener,
            linger: req.warm_linger,
            image: squashfs_path(req),
        });
        let publishes = publish.is_some();
        let image = match &req.mount.root {
            RootImage::Directory(dir) => AttachedImage::Directory(dir.clone()),
            RootImage::Squashfs { image, .. } if warm_entry.is_some() => {
                AttachedImage::Warm(image.path.clone())
            }
            RootImage::Squashfs {
                image,
                kernel: true,
            } => attach_loop(&image.path, req.namespaces.pid, publish, timings)?,
            RootImage::Squashfs {
                image,
                kernel: false,
            } => start_fuse_server(req, image, publish, timings)?,
        };
        Ok(RunHandles {
            image,
            leader,
            join_ns: None,
            held_mnt_ns: None,
            warm_entry,
            publishes,
        })
    }

    /// Enter the namespaces: a warm run the warm mount's user namespace and
    /// a copy of its base, any other a new user and mount namespace; both
    /// then the requested extra namespaces (a new network namespace gets its
    /// loopback interface up).
    fn enter_namespaces(&mut self, req: &RunRequest) -> Result<(), LaunchError> {
        match self.warm_entry.take() {
            Some(WarmEntry::Entered(name)) => {
                userns::enter_from_base(req.namespaces)?;
                warm::tell_joined(&name);
            }
            Some(WarmEntry::Handed(base)) => {
                // A root run with a kernel mount made no user namespace: its
                // holder then handed over the one we are already in.
                let no_user = join::is_current_user_namespace(base.user.as_fd())?;
                join::enter(base.user.as_fd(), base.mnt.as_fd(), no_user)?;
                userns::enter_from_base(req.namespaces)?;
                if let Some(conn) = base.conn {
                    warm::hand_own_namespace(conn);
                }
            }
            None => userns::enter(req.namespaces, req.uid_map, req.gid_map)?,
        }
        if req.namespaces.net {
            crate::sys::net::netdevice_set_up("lo").map_err(LaunchError::Loopback)?;
        }
        Ok(())
    }

    /// A run that leaves its mount warm: mount the image in the base (see
    /// plan::warm_base), keep the base's namespace files, move on into a
    /// copy of it, and hand the helper its connection, this run's mount
    /// namespace and the base. All before anything looks into the mount
    /// (the copy does not): the server only serves once it has the fd.
    /// The run's own root is then a bind from the base.
    fn make_warm_base(
        &mut self,
        req: &RunRequest,
        source: RootSource,
        timings: &mut Timings,
    ) -> Result<RootSource, LaunchError> {
        executor::apply_plan(&mut Linux, &plan::warm_base(source))?;
        let base = WarmBase {
            user: open_ns("/proc/self/ns/user")?,
            mnt: open_ns("/proc/self/ns/mnt")?,
            conn: None,
        };
        userns::leave_base()?;
        self.open_namespace_files(req.namespaces.pid)?;
        self.hand_over(Some(base))?;
        timings.mark("warm base");
        Ok(RootSource::Warm {
            image: squashfs_path(req),
            root: plan::WARM_ROOT.into(),
        })
    }

    /// The namespace files, opened right after entering, while the host's
    /// /proc is still at /proc (the image may have none): the leader keeps
    /// them for the join supervisor, the helper holds the mount namespace
    /// (not with `--pid`: no helper may outlive cairn then).
    fn open_namespace_files(&mut self, pid_ns: bool) -> Result<(), LaunchError> {
        if self.leader.is_some() {
            self.join_ns = Some((
                open_ns("/proc/self/ns/user")?,
                open_ns("/proc/self/ns/mnt")?,
            ));
        }
        if self.image.helper_mut().is_some() && !pid_ns {
            self.held_mnt_ns = match &self.join_ns {
                Some((_, mnt)) => mnt.try_clone().ok(),
                None => open_ns("/proc/self/ns/mnt").ok(),
            };
        }
        Ok(())
    }

    /// The planner's root. A FUSE root's `/dev/fuse` is opened here, inside
    /// the user namespace: the kernel refuses a FUSE mount whose fd was
    /// opened in another user namespace (EINVAL).
    fn root_source(
        &mut self,
        req: &RunRequest,
        timings: &mut Timings,
    ) -> Result<RootSource, LaunchError> {
        match &mut self.image {
            AttachedImage::Directory(dir) => Ok(RootSource::Directory(dir.clone())),
            AttachedImage::Warm(image) => Ok(RootSource::Warm {
                image: image.clone(),
                root: plan::WARM_ROOT.into(),
            }),
            AttachedImage::Loop { image, device, .. } => Ok(RootSource::Kernel {
                image: image.clone(),
                device: device.clone(),
            }),
            AttachedImage::Fuse { server, device } => {
                // The server is set up (the status pipe said so) but waits
                // for the mounted fd before it reads the device.
                server.wait_ready()?;
                let fd = crate::mount::fuse::open_device().map_err(LaunchError::FuseDevice)?;
                timings.mark("fuse ready");
                let root = RootSource::Fuse {
                    image: server.image.clone(),
                    fd: fd.as_raw_fd(),
                    uid: req.uid_map.inside,
                    gid: req.gid_map.inside,
                };
                *device = Some(fd);
                Ok(root)
            }
        }
    }

    /// Apply the plan up to the image root, then hand the FUSE server its
    /// connection and the helper the mount namespace. cairn's copy of the
    /// connection is closed here, before anything looks into the mount: a
    /// server that dies then aborts the connection (see mount::server).
    /// The loop device fd goes too: the mount holds the device now, and
    /// only the mount should (autoclear detaches it when the mount goes).
    fn mount_root(
        &mut self,
        steps: &[plan::MountStep],
        timings: &mut Timings,
    ) -> Result<(), LaunchError> {
        executor::apply_plan(&mut Linux, steps)?;
        self.hand_over(None)?;
        timings.mark("root mounted");
        Ok(())
    }

    /// Once the image is mounted: the FUSE server gets its connection, the
    /// helper the mount namespace to hold (and the warm base, when this run
    /// makes one), and the loop device fd is closed. Done once: a second
    /// call finds nothing left to hand.
    fn hand_over(&mut self, warm_base: Option<WarmBase>) -> Result<(), LaunchError> {
        let mnt_ns = self.held_mnt_ns.as_ref().map(|f| f.as_fd());
        match &mut self.image {
            AttachedImage::Directory(_) | AttachedImage::Warm(_) => {}
            AttachedImage::Loop { fd, holder, .. } => {
                // A bare holder that is gone costs only the fast exit.
                if let Some(holder) = holder {
                    let _ = holder.mounted(None, mnt_ns, warm_base);
                }
                drop(fd.take());
            }
            AttachedImage::Fuse { server, device } => {
                server.mounted(device.take(), mnt_ns, warm_base)?
            }
        }
        Ok(())
    }

    /// `--join` leader: hand the namespace files to the supervisor that
    /// serves the other ranks.
    fn start_join_supervisor(
        &mut self,
        linger: std::time::Duration,
        timings: &mut Timings,
    ) -> Result<(), LaunchError> {
        if let (Some(leader), Some((user, mnt))) = (self.leader.take(), self.join_ns.take()) {
            leader.start_supervisor(user, mnt, linger)?;
            timings.mark("join supervisor");
        }
        Ok(())
    }

    /// Reap the intermediate child of the helper's double fork: the job
    /// must not inherit it as a zombie child (see server::Server::reap).
    fn reap_helper(&mut self) {
        if let Some(helper) = self.image.helper_mut() {
            helper.reap();
        }
    }

    /// `--pid`, once the job is over: let the helper go and reap it (see
    /// server::Server::release); everything else is let go with it.
    fn release_helper(self) {
        match self.image {
            AttachedImage::Directory(_) | AttachedImage::Warm(_) => {}
            AttachedImage::Loop { holder, .. } => {
                if let Some(holder) = holder {
                    holder.release();
                }
            }
            AttachedImage::Fuse { server, .. } => server.release(),
        }
    }
}

/// A kernel mount: attach the image to a loop device and, without `--pid`,
/// start the bare holder (see [`AttachedImage`]).
fn attach_loop(
    image: &Path,
    pid_ns: bool,
    warm: Option<server::WarmSetup>,
    timings: &mut Timings,
) -> Result<AttachedImage, LaunchError> {
    let (device, fd) =
        crate::sys::loopdev::attach(image).map_err(|source| LaunchError::LoopDevice {
            image: image.to_path_buf(),
            source,
        })?;
    timings.mark("loop device");
    let holder = if pid_ns {
        None
    } else {
        let holder = server::start_holder(image.to_path_buf(), warm).ok();
        timings.mark("holder");
        holder
    };
    Ok(AttachedImage::Loop {
        image: image.to_path_buf(),
        device,
        fd: Some(fd),
        holder,
    })
}

/// A FUSE root: start the server (it waits for the connection until the
/// root is mounted).
fn start_fuse_server(
    req: &RunRequest,
    image: &SquashTree,
    warm: Option<server::WarmSetup>,
    timings: &mut Timings,
) -> Result<AttachedImage, LaunchError> {
    let ending = if req.namespaces.pid {
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
    let archive = image.archive().map_err(|source| LaunchError::Image {
        image: image.path.clone(),
        source,
    })?;
    let server = server::start(
        image.path.clone(),
        archive,
        req.serve_options(),
        warmup(req),
        ending,
        warm,
    )?;
    timings.mark("fuse server");
    Ok(AttachedImage::Fuse {
        server,
        device: None,
    })
}

/// The canonical path of the request's squashfs image (a directory's for a
/// directory), as warm mounts report it.
fn squashfs_path(req: &RunRequest) -> PathBuf {
    match &req.mount.root {
        RootImage::Directory(dir) => dir.clone(),
        RootImage::Squashfs { image, .. } => image.path.clone(),
    }
}

/// Open one of this process's namespace files.
fn open_ns(path: &str) -> Result<OwnedFd, LaunchError> {
    std::fs::File::open(path)
        .map(OwnedFd::from)
        .map_err(|source| {
            JoinError::Io {
                step: "open the namespace files in /proc/self/ns",
                source,
            }
            .into()
        })
}

/// The plan up to and including the image root, and the steps after it
/// (they look into the root).
fn split_at_root(steps: &[plan::MountStep]) -> (&[plan::MountStep], &[plan::MountStep]) {
    let root = steps
        .iter()
        .position(|s| matches!(s, plan::MountStep::Root { .. }))
        .map_or(0, |i| i + 1);
    steps.split_at(root)
}

/// Without `--pid`: the steps after the root, the join supervisor, then
/// cairn lets go of every handle and becomes the job. Returns only on
/// failure.
fn exec_in_place(
    req: &RunRequest,
    mut run: RunHandles,
    after_root: &[plan::MountStep],
    timings: &mut Timings,
) -> LaunchError {
    if let Err(err) = mount_rest(after_root, run.image.fuse_server(), timings) {
        return err;
    }
    if let Err(err) = run.start_join_supervisor(req.join_linger, timings) {
        return err;
    }
    run.reap_helper();
    drop(run);
    become_job(req, timings)
}

/// `--pid`: the new PID namespace takes effect for children only, so cairn
/// forks its init, then waits outside and passes signals on. Returns the
/// job's exit status.
fn run_under_init(
    req: &RunRequest,
    mut run: RunHandles,
    after_root: &[plan::MountStep],
    timings: &mut Timings,
) -> Result<i32, LaunchError> {
    let signals = block_forwarded_signals()?;
    // cairn, outside, is what the launcher sees and signals: the init must
    // not outlive it (a `kill -9` of cairn would leave the job running,
    // out of reach in its own PID namespace).
    let supervisor = crate::sys::pidfd::pidfd_open(sys::getpid()).ok();
    match sys::fork().map_err(|source| LaunchError::Process {
        step: "fork the PID namespace's init",
        source,
    })? {
        ForkResult::Child => start_init(req, run, after_root, supervisor, &signals, timings),
        ForkResult::Parent { child } => {
            run.reap_helper();
            let code = supervise(child, &signals);
            // The job is over: let the server go and reap it.
            run.release_helper();
            code
        }
    }
}

/// Block the forwarded signals and SIGCHLD: cairn and the init take them
/// with sigwaitinfo.
fn block_forwarded_signals() -> Result<SigSet, LaunchError> {
    let mut signals = SigSet::empty();
    for s in FORWARDED {
        signals.add(s);
    }
    signals.add(Signal::SIGCHLD);
    sys::sigprocmask_block(&signals).map_err(|source| LaunchError::Process {
        step: "block signals",
        source,
    })?;
    Ok(signals)
}

/// The forked child of `--pid`, PID 1 of the new namespace: the steps
/// after the root, then the init. `supervisor` is a pidfd of cairn.
fn start_init(
    req: &RunRequest,
    run: RunHandles,
    after_root: &[plan::MountStep],
    supervisor: Option<OwnedFd>,
    signals: &SigSet,
    timings: &mut Timings,
) -> ! {
    // SIGKILL to a PID namespace's init ends every process in it.
    // getppid() is 0 in the new namespace, so the pidfd tells whether
    // cairn died before the death signal was armed.
    let armed = sys::set_parent_death_signal(Signal::SIGKILL).is_ok();
    if armed
        && let Some(cairn) = &supervisor
        && crate::sys::poll::poll_readable(&[cairn.as_fd()], 0)
            .is_ok_and(|ready| ready.first() == Some(&true))
    {
        sys::exit_immediately(125);
    }
    drop(supervisor);
    // /proc of the new PID namespace can only be mounted from inside it:
    // the steps after the root are the init's.
    let applied = mount_rest(after_root, run.image.fuse_server(), timings);
    // Before the init closes every inherited fd (see `init`).
    drop(run);
    let code = match applied {
        Ok(()) => init(req, timings, signals),
        Err(err) => report(&err),
    };
    sys::exit_immediately(code)
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
    // Last before exec (after no_new_privs, which an unprivileged filter
    // needs): cairn's own setup above is not filtered.
    if req.seccomp {
        let installed = crate::run::fakeroot::program()
            .map_err(std::io::Error::other)
            .and_then(|p| crate::sys::seccomp::set_mode_filter(&p));
        if let Err(e) = installed {
            return LaunchError::Seccomp(e);
        }
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
    let candidates = exec_candidates(program.as_bytes(), path.as_bytes(), None);
    let mut denied = None;
    for candidate in candidates {
        let Ok(path) = CString::new(candidate) else {
            continue;
        };
        // A PATH entry that lacks the command is passed over with an
        // access(2) check: a failed execve(2) first builds a whole new
        // address space, then throws it away (with a user's PATH of ten
        // entries, most of the time before the job starts). The execve
        // still decides when the check lets a candidate through.
        let checked = nix::unistd::faccessat(
            nix::fcntl::AT_FDCWD,
            path.as_c_str(),
            nix::unistd::AccessFlags::X_OK,
            nix::fcntl::AtFlags::AT_EACCESS,
        );
        let failed = match checked {
            Err(e @ (nix::Error::ENOENT | nix::Error::ENOTDIR | nix::Error::EACCES)) => e,
            _ => sys::execve(&path, &argv, &envp),
        };
        match failed {
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
