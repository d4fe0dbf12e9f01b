//! `--join[=TAG]`: ranks of one job on one node (same user, image and tag)
//! share one user + mount namespace and one mount.
//!
//! Election by an abstract unix socket named from (uid, image dev+ino,
//! tag), keyed by the user's secret so that no other user can compute the
//! name in advance and squat it: the first rank whose bind(2) succeeds is the leader and sets the
//! container up as usual; it then double-forks a small supervisor (named
//! `cairn-join`, reparented away from the job) that holds the namespace
//! fds and the listening socket. Later ranks connect, check SO_PEERCRED
//! (same uid only), receive the user and mount namespace fds by
//! SCM_RIGHTS, setns(2) into them and exec. The supervisor tracks every
//! rank with a pidfd and exits once the last is gone and a linger has
//! passed (so ranks that start after the first finished still join); the
//! namespace, the mount and the FUSE server then go with the last process.
//! A leader that dies during setup closes the socket: waiting ranks see
//! EOF and run the election again. Nothing is left in the file system.
//!
//! Abstract names are visible to every user of the node (`/proc/net/unix`)
//! once bound, so a name may still be taken by someone else (seen in an
//! earlier step with the same tag, or with no secret at hand). A name held
//! by another uid, or bound and never listened on, is not a reason to
//! fail: every rank walks the same sequence of names (`NAME`, `NAME/1`,
//! ...) past the squatted ones, so the ranks of a job still meet.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use crate::sys::pidfd::pidfd_open;
use crate::sys::poll::poll_readable;
use crate::sys::process::{self, ForkResult};
use crate::sys::setns::{CloneFlags, setns};
use crate::sys::socket;

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error(
        "--join: no tag given and none found in the environment (SLURM_JOB_ID, PMIX_NAMESPACE, OMPI_COMM_WORLD); use --join=TAG"
    )]
    NoTag,
    #[error("--join: {step} failed")]
    Sys {
        step: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("--join: {step} failed")]
    Io {
        step: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("--join: no leader could be elected after {tries} attempts (last name tried {name:?})")]
    NoLeader { tries: u32, name: String },
    #[error("--join cannot be combined with {option}")]
    Unsupported { option: &'static str },
}

/// The tag: given, else from the launcher's environment (pure).
pub fn tag(
    given: Option<&str>,
    env: &[(std::ffi::OsString, std::ffi::OsString)],
) -> Result<String, JoinError> {
    if let Some(t) = given.filter(|t| !t.is_empty()) {
        return Ok(t.to_string());
    }
    let var = |k: &str| {
        env.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.to_string_lossy().into_owned())
            .filter(|v| !v.is_empty())
    };
    if let Some(job) = var("SLURM_JOB_ID") {
        let step = var("SLURM_STEP_ID").unwrap_or_default();
        return Ok(format!("slurm-{job}.{step}"));
    }
    for k in [
        "PMIX_NAMESPACE",
        "OMPI_COMM_WORLD",
        "OMPI_MCA_ess_base_jobid",
    ] {
        if let Some(v) = var(k) {
            return Ok(format!("{k}-{v}"));
        }
    }
    Err(JoinError::NoTag)
}

/// FNV-1a, to fit any tag into the socket name.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The abstract socket name of (uid, image, tag) (pure). With the user's
/// secret, the image and tag part is a MAC under it: nobody else can know
/// the name before it is bound. Without one (no private directory could
/// be had), a plain hash, which others can compute: squatting it then only
/// moves the ranks to the next name (see [`elect`]).
pub fn socket_name(
    uid: u32,
    dev: u64,
    ino: u64,
    tag: &str,
    secret: Option<&crate::trust::UserSecret>,
) -> String {
    match secret {
        Some(s) => {
            let mac =
                s.key(JOIN_PURPOSE)
                    .mac(&[&dev.to_le_bytes(), &ino.to_le_bytes(), tag.as_bytes()]);
            let hex = crate::trust::secret::short_hex(&mac);
            format!("cairn-join/{uid}/{hex}")
        }
        None => format!(
            "cairn-join/{uid}/{dev:x}:{ino:x}/{:016x}",
            fnv1a(tag.as_bytes())
        ),
    }
}

/// The context the join name's key is derived under.
const JOIN_PURPOSE: &str = "cairn 2026-12 join rendezvous";

/// The `n`th name of the walk past squatted names (pure): `name` itself,
/// then `name/1`, `name/2`, ...
pub fn nth_name(name: &str, n: u32) -> String {
    if n == 0 {
        name.to_owned()
    } else {
        format!("{name}/{n}")
    }
}

/// Names tried past squatters before giving up.
const NAMES: u32 = 64;
/// Consecutive refused connections after which a bound name counts as
/// squatted: a cairn leader listens right after it binds (one syscall
/// later), so a name bound but refusing connections for this long
/// (about 1 s with the pauses) is not a leader's.
const REFUSED_LIMIT: u32 = 100;

/// The outcome of the election.
#[derive(Debug)]
pub enum Role {
    /// Set the container up, then [`Leader::start_supervisor`].
    Leader(Leader),
    /// Enter these namespaces (user, mount).
    Follower { user: OwnedFd, mnt: OwnedFd },
}

#[derive(Debug)]
pub struct Leader {
    listener: OwnedFd,
}

/// Elect: bind, else connect and receive the namespaces, else again; past
/// a name another user holds (or squats without listening), on to the
/// next name of the walk.
pub fn elect(name: &str) -> Result<Role, JoinError> {
    let me = process::geteuid();
    const TRIES: u32 = 500;
    let mut n = 0u32;
    let mut current = nth_name(name, 0);
    let mut refused = 0u32;
    // Tries per name (reset for each new name of the walk).
    let mut attempt = 0u32;
    let next_name = |n: &mut u32, current: &mut String, why: &str| {
        *n += 1;
        tracing::warn!("--join: the rendezvous {current:?} {why}; trying the next name");
        *current = nth_name(name, *n);
    };
    while attempt < TRIES && n < NAMES {
        attempt += 1;
        match socket::bind_abstract(current.as_bytes()) {
            Ok(listener) => return Ok(Role::Leader(Leader { listener })),
            Err(nix::Error::EADDRINUSE) => {}
            Err(source) => {
                return Err(JoinError::Sys {
                    step: "bind the join socket",
                    source,
                });
            }
        }
        let conn = match socket::connect_abstract(current.as_bytes()) {
            Ok(c) => c,
            // The holder went away between our bind and connect; or it is
            // bound and not listening: a leader between bind and listen,
            // or a squatter.
            Err(nix::Error::ECONNREFUSED) | Err(nix::Error::ENOENT) => {
                refused += 1;
                if refused >= REFUSED_LIMIT {
                    refused = 0;
                    next_name(&mut n, &mut current, "is bound but nobody listens");
                    attempt = 0;
                } else {
                    std::thread::sleep(Duration::from_millis(2 + u64::from(attempt % 16)));
                }
                continue;
            }
            Err(source) => {
                return Err(JoinError::Sys {
                    step: "connect to the join socket",
                    source,
                });
            }
        };
        refused = 0;
        let cred = socket::peer_credentials(conn.as_fd()).map_err(|source| JoinError::Sys {
            step: "SO_PEERCRED",
            source,
        })?;
        if cred.uid() != me {
            next_name(
                &mut n,
                &mut current,
                &format!("is held by uid {}, not by this user", cred.uid()),
            );
            attempt = 0;
            continue;
        }
        match socket::recv_fds(conn.as_fd()) {
            Ok(fds) if fds.len() == 2 => {
                let mut fds = fds.into_iter();
                if let (Some(user), Some(mnt)) = (fds.next(), fds.next()) {
                    return Ok(Role::Follower { user, mnt });
                }
            }
            // EOF: the leader died during setup, or the supervisor was
            // closing; elect again (a short pause lets the socket go).
            _ => std::thread::sleep(Duration::from_millis(2 + u64::from(attempt % 8))),
        }
    }
    Err(JoinError::NoLeader {
        tries: attempt,
        name: current,
    })
}

/// Enter the leader's namespaces: the user namespace first (it owns the
/// mount namespace; joining our own current one is EINVAL, so skipped when
/// the run has none, root with the kernel mount), then the mount namespace,
/// which also sets the root and cwd to the container's root.
pub fn enter(user: BorrowedFd<'_>, mnt: BorrowedFd<'_>, no_user: bool) -> Result<(), JoinError> {
    if !no_user {
        setns(user, CloneFlags::CLONE_NEWUSER).map_err(|source| JoinError::Sys {
            step: "setns into the user namespace",
            source,
        })?;
    }
    setns(mnt, CloneFlags::CLONE_NEWNS).map_err(|source| JoinError::Sys {
        step: "setns into the mount namespace",
        source,
    })
}

/// Is `user` (a user namespace fd) the namespace this process is in?
pub fn is_current_user_namespace(user: BorrowedFd<'_>) -> Result<bool, JoinError> {
    let theirs = nix::sys::stat::fstat(user).map_err(|source| JoinError::Sys {
        step: "fstat the received user namespace",
        source,
    })?;
    let ours = nix::sys::stat::stat("/proc/self/ns/user").map_err(|source| JoinError::Sys {
        step: "stat /proc/self/ns/user",
        source,
    })?;
    Ok((theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino))
}

impl Leader {
    /// Fork the supervisor (double fork: never a child of the job). It
    /// holds `user` and `mnt` (this run's namespaces) and serves later
    /// ranks, and stays `linger` after the last one (ranks of one job
    /// rarely start at the same instant). Call once the container is set
    /// up, while single-threaded.
    pub fn start_supervisor(
        self,
        user: OwnedFd,
        mnt: OwnedFd,
        linger: Duration,
    ) -> Result<(), JoinError> {
        let leader = pidfd_open(process::getpid()).map_err(|source| JoinError::Io {
            step: "pidfd_open of the leader",
            source,
        })?;
        let fork = |source| JoinError::Sys {
            step: "fork the join supervisor",
            source,
        };
        match process::fork().map_err(fork)? {
            ForkResult::Child => match process::fork() {
                Ok(ForkResult::Child) => {
                    let code = supervise(self.listener, user, mnt, leader, linger);
                    process::exit_immediately(code)
                }
                Ok(ForkResult::Parent { .. }) => process::exit_immediately(0),
                Err(_) => process::exit_immediately(1),
            },
            ForkResult::Parent { child } => {
                let _ = process::waitpid(Some(child), None);
                Ok(())
            }
        }
    }
}

/// The supervisor's loop: hand the namespaces to same-uid ranks, track
/// them, leave after the last one plus the linger.
fn supervise(
    listener: OwnedFd,
    user: OwnedFd,
    mnt: OwnedFd,
    leader: OwnedFd,
    linger: Duration,
) -> i32 {
    use std::os::fd::AsRawFd;
    let _ = process::setsid();
    let _ = process::set_name(c"cairn-join");
    let _ = process::sigprocmask_clear();
    let _ = process::stdio_to_dev_null();
    let keep = [
        0,
        1,
        2,
        listener.as_raw_fd(),
        user.as_raw_fd(),
        mnt.as_raw_fd(),
        leader.as_raw_fd(),
    ];
    if process::close_all_except(&keep).is_err() {
        return 1;
    }
    let me = process::geteuid();
    let mut ranks: Vec<OwnedFd> = vec![leader];
    let linger_ms = i32::try_from(linger.as_millis()).unwrap_or(i32::MAX);
    loop {
        let mut fds: Vec<BorrowedFd<'_>> = vec![listener.as_fd()];
        fds.extend(ranks.iter().map(|r| r.as_fd()));
        let timeout = if ranks.is_empty() { linger_ms } else { -1 };
        let Ok(ready) = poll_readable(&fds, timeout) else {
            return 1;
        };
        if ranks.is_empty() && !ready.iter().any(|r| *r) {
            return 0;
        }
        let mut gone: Vec<usize> = ready
            .iter()
            .enumerate()
            .skip(1)
            .filter(|(_, r)| **r)
            .map(|(i, _)| i - 1)
            .collect();
        gone.sort_unstable();
        for i in gone.into_iter().rev() {
            ranks.remove(i);
        }
        if ready.first().copied().unwrap_or(false) {
            let Ok(conn) = socket::accept(listener.as_fd()) else {
                continue;
            };
            let Ok(cred) = socket::peer_credentials(conn.as_fd()) else {
                continue;
            };
            if cred.uid() != me {
                continue;
            }
            // Track before handing over: the rank's pid becomes the job's
            // (cairn execs), so its exit is the rank's end.
            let tracked = pidfd_open(cred.pid()).ok();
            if socket::send_fds(conn.as_fd(), &[user.as_fd(), mnt.as_fd()]).is_ok()
                && let Some(p) = tracked
            {
                ranks.push(p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::env::from_pairs as env;

    #[test]
    fn tag_from_option_or_launcher() {
        assert_eq!(tag(Some("x"), &[]).expect("given"), "x");
        let slurm = env(&[
            ("SLURM_JOB_ID", "42"),
            ("SLURM_STEP_ID", "3"),
            ("PMIX_NAMESPACE", "p"),
        ]);
        assert_eq!(tag(None, &slurm).expect("slurm"), "slurm-42.3");
        assert_eq!(
            tag(Some(""), &slurm).expect("empty means default"),
            "slurm-42.3"
        );
        let pmix = env(&[("PMIX_NAMESPACE", "prterun-1")]);
        assert_eq!(tag(None, &pmix).expect("pmix"), "PMIX_NAMESPACE-prterun-1");
        let ompi = env(&[("OMPI_COMM_WORLD", "w")]);
        assert_eq!(tag(None, &ompi).expect("ompi"), "OMPI_COMM_WORLD-w");
        assert!(matches!(
            tag(None, &env(&[("HOME", "/")])),
            Err(JoinError::NoTag)
        ));
    }

    #[test]
    fn socket_names_separate_users_images_tags_and_secrets() {
        let mine = crate::trust::UserSecret::from_bytes([1; 32]);
        let theirs = crate::trust::UserSecret::from_bytes([2; 32]);
        for secret in [None, Some(&mine)] {
            let a = socket_name(1000, 0x801, 42, "t", secret);
            assert_eq!(a, socket_name(1000, 0x801, 42, "t", secret));
            assert_ne!(a, socket_name(1001, 0x801, 42, "t", secret));
            assert_ne!(a, socket_name(1000, 0x802, 42, "t", secret));
            assert_ne!(a, socket_name(1000, 0x801, 43, "t", secret));
            assert_ne!(a, socket_name(1000, 0x801, 42, "u", secret));
            let long = socket_name(u32::MAX, u64::MAX, u64::MAX, &"x".repeat(4096), secret);
            // Room for the walk's suffixes within the 107 bytes of sun_path.
            assert!(nth_name(&long, NAMES).len() < 100);
        }
        // Without the secret, another user cannot compute the name.
        assert_ne!(
            socket_name(1000, 0x801, 42, "t", Some(&mine)),
            socket_name(1000, 0x801, 42, "t", Some(&theirs))
        );
        assert_ne!(
            socket_name(1000, 0x801, 42, "t", Some(&mine)),
            socket_name(1000, 0x801, 42, "t", None)
        );
        assert_eq!(nth_name("n", 0), "n");
        assert_eq!(nth_name("n", 3), "n/3");
    }
}
