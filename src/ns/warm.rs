//! Warm runs: a run of a squashfs image leaves its mount warm for a short
//! while (the linger), and the next run of the same image by the same user
//! with the same id map starts from it instead of mounting afresh.
//!
//! What is kept warm is a *base* mount namespace holding nothing but the
//! image: the host's tree with the image root mounted on `/tmp` (see
//! `mount::plan::warm_base`). No run's binds, files
//! or overlays are in it. A run — the first one too — enters the base's
//! user namespace and base, unshares a mount namespace of its own (a copy:
//! its image mount shares the base's superblock, so page cache, dentries and
//! the FUSE server's caches are warm), and there applies its own plan,
//! whose root is a bind of the base's image root. Runs with different
//! binds, environment, `-w` or `--pid` share nothing but the read-only
//! image.
//!
//! The rendezvous is an abstract unix socket named from (uid, the image's
//! identity: device, inode, size, mtime, ctime and superblock, the id maps,
//! kernel or FUSE), keyed by the user's secret so that no other user can
//! compute the name in advance. The helper process of the first run (its
//! FUSE server, or the kernel mount's holder) listens on it once the base
//! exists; a later run connects, checks SO_PEERCRED (same uid, or it goes
//! cold), asks with one byte and receives the user and base mount namespace
//! fds by SCM_RIGHTS. A name held by another uid only makes the run cold:
//! squatting costs the warmth, never the job.
//!
//! Faster, where the kernel gives a connection's peer as a pidfd (Linux
//! 6.5, SO_PEERPIDFD): the helper of a FUSE mount also starts an *anchor*
//! (`sys::anchor`: cairn exec'd again by a child of the helper), a process
//! that lives in the user namespace and the base and listens on a second
//! name. A run connects there, checks the peer's uid as above, and enters
//! both namespaces with one `setns(2)` on the anchor's pidfd: no wait for
//! the helper to be scheduled, which on a busy node was most of a warm
//! start. Then it sends the helper its own mount namespace (`J`), which
//! the helper tracks like an `E` run (by the connection's pidfd). The
//! anchor goes with the linger; a run that entered just before still holds
//! the base's mount in its own namespace. Without an anchor (older kernel,
//! kernel mount, none yet) a run asks the helper.
//!
//! The helper tracks each run that entered with a pidfd (the first run's
//! process, then every peer's), and once the last has exited and the linger
//! has passed with no new one it closes the socket and the base. The mount
//! then goes with the last process of any run's namespace, and the FUSE
//! server (its read of the device returns ENODEV) or the holder exits.
//! Nothing is left in the file system at any time. `cairn ps` finds the
//! user's warm mounts in `/proc/net/unix` and asks each for its status;
//! `cairn stop` asks one to end.

use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::sys::pidfd::pidfd_open;
use crate::sys::poll::poll_readable;
use crate::sys::process;
use crate::sys::socket;

/// The context the warm name's key is derived under.
const WARM_PURPOSE: &str = "cairn 2026-12 warm rendezvous";
/// The prefix of every warm socket name (then `{uid}/`).
const PREFIX: &str = "cairn-warm/";
/// The prefix of an anchor's name: the warm socket's name with this
/// instead of [`PREFIX`] (not listed by `cairn ps`, see
/// [`listening_names`]).
const ANCHOR_PREFIX: &str = "cairn-warm-anchor/";

/// How long a run waits for the helper's answer. The helper answers at once
/// when its base exists; while the first run is still setting up (a job
/// array's runs starting together) a new run waits for it rather than
/// mounting the image once more.
const ANSWER_WAIT: Duration = Duration::from_secs(10);
/// How long the helper waits for a connected peer's request byte.
const REQUEST_WAIT_MS: i32 = 1000;

/// Requests, one byte each.
const ENTER: u8 = b'E';
const STATUS: u8 = b'S';
const STOP: u8 = b'Q';
const STOP_FORCED: u8 = b'F';
/// Not a request: a run that entered through the anchor says so, with its
/// own mount namespace (the byte [`socket::send_fds`] sends).
const JOINED: u8 = b'J';

#[derive(Debug, thiserror::Error)]
pub enum WarmError {
    #[error("warm mount {name:?}: {step} failed")]
    Sys {
        name: String,
        step: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("warm mount {name:?}: {step} failed")]
    Io {
        name: String,
        step: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("warm mount {name:?}: unexpected answer {answer:?}")]
    Answer { name: String, answer: String },
}

/// What makes two runs share a warm mount: same user, same image bytes,
/// same id maps, same kind of mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarmKey<'a> {
    pub uid: u32,
    /// The image file's identity (`squashfs::reader::identity`).
    pub image: &'a [u8; 32],
    /// uid map then gid map: inside, outside, count.
    pub maps: [u32; 6],
    pub kernel: bool,
}

/// The abstract socket name of `key` (pure). With the user's secret, a MAC
/// under it: nobody else can know the name before it is bound. Without one,
/// a plain hash, which others can compute: squatting it only makes this
/// user's runs cold.
pub fn socket_name(key: &WarmKey<'_>, secret: Option<&crate::trust::UserSecret>) -> String {
    let maps: Vec<u8> = key.maps.iter().flat_map(|m| m.to_le_bytes()).collect();
    let kind = [u8::from(key.kernel)];
    let parts: [&[u8]; 3] = [key.image, &maps, &kind];
    let digest = match secret {
        Some(s) => s.key(WARM_PURPOSE).mac(&parts),
        None => {
            let mut h = blake3::Hasher::new();
            h.update(b"cairn warm name, no secret\0");
            crate::trust::secret::hash_parts(h, &parts)
        }
    };
    let hex = crate::trust::secret::short_hex(&digest);
    format!("{PREFIX}{}/{hex}", key.uid)
}

/// The namespaces of a warm mount, as a run receives them.
#[derive(Debug)]
pub struct WarmBase {
    pub user: OwnedFd,
    pub mnt: OwnedFd,
    /// A run's connection to the helper, for [`hand_own_namespace`].
    pub conn: Option<OwnedFd>,
}

/// A warm run, in its own copy of the base now: give the helper that mount
/// namespace to hold until the run's process has exited, so that its
/// teardown (every mount of the namespace, an RCU grace period) runs in the
/// helper, not in the job's exit, as for the run that made the base (see
/// mount::server). Best effort: without it the job's exit pays.
pub fn hand_own_namespace(conn: OwnedFd) {
    if let Ok(own) = std::fs::File::open("/proc/self/ns/mnt") {
        let _ = socket::send_fds(conn.as_fd(), &[own.as_fd()]);
    }
}

/// What [`enter_existing`] found.
#[derive(Debug)]
pub enum Lookup {
    /// A warm mount of this user's: its namespaces.
    Found(WarmBase),
    /// Nobody listens on the name (none, or one being set up right now).
    Nobody,
    /// Someone listens but gives nothing usable: another uid, no answer in
    /// time, or a holder ending as we came.
    Unusable,
}

/// Connect to the warm mount of `name`, if there is one of this user's, and
/// receive its namespaces.
pub fn enter_existing(name: &str) -> Lookup {
    let conn = match connect_own(name) {
        Ok(Some(conn)) => conn,
        Ok(None) => return Lookup::Unusable,
        Err(_) => return Lookup::Nobody,
    };
    if let Err((step, e)) = request(conn.as_fd(), ENTER) {
        tracing::debug!("warm mount {name:?}: {step}: {e}; running cold");
        return Lookup::Unusable;
    }
    let Ok(fds) = socket::recv_fds(conn.as_fd()) else {
        return Lookup::Unusable;
    };
    let mut fds = fds.into_iter();
    match (fds.next(), fds.next()) {
        (Some(user), Some(mnt)) => Lookup::Found(WarmBase {
            user,
            mnt,
            conn: Some(conn),
        }),
        // EOF: the holder was ending (its linger passed as we came).
        _ => Lookup::Unusable,
    }
}

/// The name of the anchor of the warm socket `name` (pure).
pub fn anchor_name(name: &str) -> String {
    format!(
        "{ANCHOR_PREFIX}{}",
        name.strip_prefix(PREFIX).unwrap_or(name)
    )
}

/// Enter the warm mount of `name` through its anchor, if it has one of
/// this user's. `true`: this process is now in the warm mount's user
/// namespace and base (one setns on the anchor's pidfd; see the module
/// doc), and tells the helper once in its own copy ([`tell_joined`]).
/// `false`: nothing changed; ask the helper ([`enter_existing`]).
pub fn enter_through_anchor(name: &str) -> bool {
    use crate::sys::setns::{CloneFlags, setns};
    let Ok(conn) = socket::connect_abstract(anchor_name(name).as_bytes()) else {
        return false;
    };
    // Another uid's anchor (a squatter of a name computed without a
    // secret) is never entered; the helper's name says why, if it is
    // squatted too.
    if !socket::peer_credentials(conn.as_fd()).is_ok_and(|c| c.uid() == process::geteuid()) {
        return false;
    }
    let Ok(anchor) = socket::peer_pidfd(conn.as_fd()) else {
        return false;
    };
    let both = CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS;
    match setns(anchor.as_fd(), both) {
        Ok(()) => true,
        Err(e) => {
            // The anchor ending with its linger (ESRCH), or a kernel that
            // refuses: the helper is asked, as without an anchor.
            tracing::debug!("warm mount {name:?}: setns through its anchor: {e}");
            false
        }
    }
}

/// A run that entered through the anchor, now in its own copy of the
/// base: hand the helper that namespace ([`hand_own_namespace`]), which
/// also tells it the run exists (its `J` on a new connection). Best
/// effort: a helper that is ending has nothing left to count.
pub fn tell_joined(name: &str) {
    if let Ok(Some(conn)) = connect_own(name) {
        hand_own_namespace(conn);
    }
}

/// How often a run that found nobody on the name, and then could not take
/// it, looks again: another run took it in between (runs of a job array
/// starting together), and is setting the mount up right now. Bounded: a
/// name bound by someone who never listens costs at most this many pauses.
pub const RACE_TRIES: u32 = 10;
/// The pause between those looks.
pub const RACE_PAUSE: Duration = Duration::from_millis(1);

/// Reserve `name` for this run's helper: a listening socket, handed to
/// the helper, which accepts only once the base exists. `None` when the
/// name is taken (another run publishes it, or a squatter).
pub fn reserve(name: &str) -> Option<OwnedFd> {
    match socket::bind_abstract(name.as_bytes()) {
        Ok(listener) => Some(listener),
        Err(e) => {
            tracing::debug!("warm mount {name:?} not published: {e}");
            None
        }
    }
}

/// A connection to `name` whose holder runs as this user; `Ok(None)` when
/// another uid holds it.
fn connect_own(name: &str) -> Result<Option<OwnedFd>, nix::Error> {
    let conn = socket::connect_abstract(name.as_bytes())?;
    let cred = socket::peer_credentials(conn.as_fd())?;
    if cred.uid() != process::geteuid() {
        tracing::warn!(
            "warm mount {name:?} is held by uid {}, not by this user; running cold",
            cred.uid()
        );
        return Ok(None);
    }
    Ok(Some(conn))
}

/// Send the one-byte request `op` and wait (at most [`ANSWER_WAIT`]) until
/// the answer can be read; on failure, the step that failed.
fn request(conn: BorrowedFd<'_>, op: u8) -> Result<(), (&'static str, nix::Error)> {
    match nix::unistd::write(conn, &[op]) {
        Ok(1) => {}
        Ok(_) => return Err(("send the request", nix::Error::EIO)),
        Err(e) => return Err(("send the request", e)),
    }
    let wait = i32::try_from(ANSWER_WAIT.as_millis()).unwrap_or(i32::MAX);
    match poll_readable(&[conn], wait) {
        Ok(ready) if ready.first() == Some(&true) => Ok(()),
        Ok(_) => Err(("wait for the answer", nix::Error::ETIMEDOUT)),
        Err(e) => Err(("wait for the answer", e)),
    }
}

/// What the helper of a warm mount tells `cairn ps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarmStatus {
    /// The socket name (for [`stop`]).
    pub name: String,
    /// The helper's pid (the FUSE server, or the kernel mount's holder).
    pub pid: i32,
    /// Runs whose processes are still alive.
    pub jobs: u32,
    /// Since when nothing runs (None while jobs run).
    pub idle_ms: Option<u64>,
    pub linger_ms: u64,
    pub kernel: bool,
    pub image: PathBuf,
}

impl WarmStatus {
    /// The one-line answer (pure): `pid jobs idle|- linger kernel image`.
    fn line(&self) -> String {
        let idle = self
            .idle_ms
            .map_or_else(|| "-".to_string(), |ms| ms.to_string());
        format!(
            "{} {} {idle} {} {} {}\n",
            self.pid,
            self.jobs,
            self.linger_ms,
            u8::from(self.kernel),
            self.image.display()
        )
    }

    /// Parse [`WarmStatus::line`] (pure).
    fn parse(name: &str, line: &str) -> Option<WarmStatus> {
        let mut f = line.trim_end_matches('\n').splitn(6, ' ');
        let pid = f.next()?.parse().ok()?;
        let jobs = f.next()?.parse().ok()?;
        let idle_ms = match f.next()? {
            "-" => None,
            ms => Some(ms.parse().ok()?),
        };
        let linger_ms = f.next()?.parse().ok()?;
        let kernel = f.next()? == "1";
        let image = PathBuf::from(f.next()?);
        Some(WarmStatus {
            name: name.to_owned(),
            pid,
            jobs,
            idle_ms,
            linger_ms,
            kernel,
            image,
        })
    }
}

/// The abstract names of listening sockets of `uid`'s warm mounts, from
/// the lines of `/proc/net/unix` (pure).
pub fn listening_names(proc_net_unix: &str, uid: u32) -> Vec<String> {
    const ACCEPTING: u32 = 0x0001_0000;
    let prefix = format!("@{PREFIX}{uid}/");
    let mut names: Vec<String> = proc_net_unix
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let flags = u32::from_str_radix(fields.get(3)?, 16).ok()?;
            let path = fields.get(7)?;
            (flags & ACCEPTING != 0 && path.starts_with(&prefix))
                .then(|| path.trim_start_matches('@').to_owned())
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The caller's warm mounts on this node (those whose helper answers).
pub fn list() -> Vec<WarmStatus> {
    let table = std::fs::read_to_string("/proc/net/unix").unwrap_or_default();
    listening_names(&table, process::geteuid())
        .iter()
        .filter_map(|name| status(name).ok())
        .collect()
}

/// Ask the helper of `name` for its status.
pub fn status(name: &str) -> Result<WarmStatus, WarmError> {
    let answer = ask(name, STATUS)?;
    WarmStatus::parse(name, &answer).ok_or_else(|| WarmError::Answer {
        name: name.to_owned(),
        answer,
    })
}

/// What [`stop`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopOutcome {
    /// The warm mount is ended: no new run enters it; with jobs still
    /// running (forced) they keep their view and the mount goes with them.
    Stopped,
    /// Refused: these many jobs still run (not forced).
    Busy { jobs: u32 },
}

/// Ask the helper of `name` to end its warm mount now.
pub fn stop(name: &str, force: bool) -> Result<StopOutcome, WarmError> {
    let answer = ask(name, if force { STOP_FORCED } else { STOP })?;
    let answer = answer.trim_end();
    if answer == "stopped" {
        return Ok(StopOutcome::Stopped);
    }
    match answer
        .strip_prefix("busy ")
        .and_then(|n| n.parse::<u32>().ok())
    {
        Some(jobs) => Ok(StopOutcome::Busy { jobs }),
        None => Err(WarmError::Answer {
            name: name.to_owned(),
            answer: answer.to_owned(),
        }),
    }
}

/// One request and its one-line answer.
fn ask(name: &str, op: u8) -> Result<String, WarmError> {
    let sys = |step, source| WarmError::Sys {
        name: name.to_owned(),
        step,
        source,
    };
    let conn = match connect_own(name) {
        Ok(Some(c)) => c,
        Ok(None) => return Err(sys("connect (held by another user)", nix::Error::EPERM)),
        Err(e) => return Err(sys("connect", e)),
    };
    request(conn.as_fd(), op).map_err(|(step, e)| sys(step, e))?;
    let mut answer = String::new();
    std::fs::File::from(conn)
        .take(8192)
        .read_to_string(&mut answer)
        .map_err(|source| WarmError::Io {
            name: name.to_owned(),
            step: "read the answer",
            source,
        })?;
    Ok(answer)
}

/// The helper's side: what it holds for later runs.
pub struct Holding {
    pub listener: OwnedFd,
    pub base: WarmBase,
    pub linger: Duration,
    pub kernel: bool,
    pub image: PathBuf,
    /// Called once the mount has been idle for [`IDLE_TRIM`] (the FUSE
    /// server drops its caches): memory a lingering mount keeps is then
    /// what the kernel keeps for it.
    pub on_idle: Option<Box<dyn Fn() + Send>>,
}

/// How long a warm mount stays idle before its helper gives memory back:
/// long enough that a script's back-to-back runs never pay for it.
pub const IDLE_TRIM: Duration = Duration::from_secs(2);

/// A run that entered a warm mount: its process (a pidfd: the run's
/// process becomes its job), its connection until it has sent its own
/// mount namespace, and that namespace, held until the process has exited.
struct Run {
    process: OwnedFd,
    conn: Option<OwnedFd>,
    own_ns: Option<OwnedFd>,
}

/// The helper's loop: hand the base to same-uid runs, track them, answer
/// `cairn ps`/`cairn stop`, and return (dropping the socket and the base)
/// once the linger has passed after the last run, or when stopped. `first`
/// is a pidfd of the run that made the base.
pub fn hold(holding: Holding, first: Option<OwnedFd>) {
    // A kernel mount's base is in the host's user namespace (a root run):
    // no anchor, its runs ask.
    let anchor = match holding.kernel {
        false => start_anchor(&holding),
        true => None,
    };
    serve_runs(&holding, first);
    // Before the listener closes (with `holding`): a run that enters
    // through the anchor from now on finds nobody to tell, and needs
    // nobody (its namespace holds the mount).
    if let Some(anchor) = anchor {
        anchor.end();
    }
}

/// Start the anchor of the warm socket `holding.listener` (see the module
/// doc); `None` when it cannot be (the runs then ask the helper).
fn start_anchor(holding: &Holding) -> Option<crate::sys::anchor::Anchor> {
    let name = socket::abstract_name(holding.listener.as_fd())?;
    let anchor = anchor_name(std::str::from_utf8(&name).ok()?);
    let (user, mnt) = (holding.base.user.as_fd(), holding.base.mnt.as_fd());
    match crate::sys::anchor::start(user, mnt, anchor.as_bytes()) {
        Ok(started) => Some(started),
        Err(e) => {
            tracing::debug!("warm mount: no anchor: {e}");
            None
        }
    }
}

/// [`hold`]'s loop: serve and track runs until the linger or a stop.
fn serve_runs(holding: &Holding, first: Option<OwnedFd>) {
    let mut runs: Vec<Run> = first
        .into_iter()
        .map(|process| Run {
            process,
            conn: None,
            own_ns: None,
        })
        .collect();
    let mut idle_since = Instant::now();
    let mut trimmed = false;
    loop {
        let timeout = if runs.is_empty() {
            let idle = idle_since.elapsed();
            let left = holding.linger.saturating_sub(idle);
            if left.is_zero() {
                return;
            }
            if !trimmed && idle >= IDLE_TRIM {
                if let Some(trim) = &holding.on_idle {
                    trim();
                }
                trimmed = true;
            }
            let next = if trimmed {
                left
            } else {
                left.min(IDLE_TRIM - idle)
            };
            // Rounded up: waking a millisecond early would only loop.
            i32::try_from(next.as_millis() + 1).unwrap_or(i32::MAX)
        } else {
            trimmed = false;
            -1
        };
        // The listener, then each run's process and connection.
        let mut fds: Vec<BorrowedFd<'_>> = vec![holding.listener.as_fd()];
        let mut slots: Vec<(usize, bool)> = Vec::new();
        for (i, run) in runs.iter().enumerate() {
            fds.push(run.process.as_fd());
            slots.push((i, false));
            if let Some(conn) = &run.conn {
                fds.push(conn.as_fd());
                slots.push((i, true));
            }
        }
        let Ok(ready) = poll_readable(&fds, timeout) else {
            return;
        };
        let mut ended = vec![false; runs.len()];
        for (&(i, is_conn), _) in slots
            .iter()
            .zip(ready.get(1..).unwrap_or(&[]))
            .filter(|(_, r)| **r)
        {
            if is_conn {
                let run = &mut runs[i];
                let received = run
                    .conn
                    .take()
                    .and_then(|c| socket::recv_fds(c.as_fd()).ok());
                run.own_ns = received.and_then(|fds| fds.into_iter().next());
            } else {
                ended[i] = true;
            }
        }
        let before = runs.len();
        let mut i = 0;
        // Dropping an ended run's namespace may unmount here: that is the
        // point of holding it.
        runs.retain(|_| {
            i += 1;
            !ended[i - 1]
        });
        if before > 0 && runs.is_empty() {
            idle_since = Instant::now();
        }
        if ready.first().copied().unwrap_or(false)
            && serve_one(holding, &mut runs, idle_since) == Served::Stop
        {
            return;
        }
    }
}

#[derive(PartialEq, Eq)]
enum Served {
    Continue,
    Stop,
}

/// Accept one connection on the listener and answer its request.
fn serve_one(holding: &Holding, runs: &mut Vec<Run>, idle_since: Instant) -> Served {
    let Ok(conn) = socket::accept(holding.listener.as_fd()) else {
        return Served::Continue;
    };
    let Ok(cred) = socket::peer_credentials(conn.as_fd()) else {
        return Served::Continue;
    };
    if cred.uid() != process::geteuid() {
        return Served::Continue;
    }
    let readable =
        poll_readable(&[conn.as_fd()], REQUEST_WAIT_MS).is_ok_and(|r| r.first() == Some(&true));
    let request = match readable {
        true => socket::recv_byte_and_fds(conn.as_fd()).ok(),
        false => None,
    };
    let Some((Some(op), fds)) = request else {
        return Served::Continue;
    };
    let answer = |text: String| {
        if let Ok(c) = conn.try_clone() {
            let _ = std::fs::File::from(c).write_all(text.as_bytes());
        }
    };
    match op {
        JOINED => {
            // Entered through the anchor and in its own copy already.
            // Tracked by the connection's pidfd: the very process that
            // connected, even if its job has ended by now.
            if let Ok(process) = socket::peer_pidfd(conn.as_fd()) {
                runs.push(Run {
                    process,
                    conn: None,
                    own_ns: fds.into_iter().next(),
                });
            }
        }
        ENTER => {
            // Tracked before the handover: the peer's pid becomes its
            // job's (cairn execs), so its exit is the run's end.
            let tracked = pidfd_open(cred.pid()).ok();
            let base = [holding.base.user.as_fd(), holding.base.mnt.as_fd()];
            if socket::send_fds(conn.as_fd(), &base).is_ok()
                && let Some(process) = tracked
            {
                runs.push(Run {
                    process,
                    conn: Some(conn),
                    own_ns: None,
                });
            }
        }
        STATUS => {
            let status = WarmStatus {
                name: String::new(),
                pid: process::getpid(),
                jobs: u32::try_from(runs.len()).unwrap_or(u32::MAX),
                idle_ms: runs
                    .is_empty()
                    .then(|| u64::try_from(idle_since.elapsed().as_millis()).unwrap_or(u64::MAX)),
                linger_ms: u64::try_from(holding.linger.as_millis()).unwrap_or(u64::MAX),
                kernel: holding.kernel,
                image: holding.image.clone(),
            };
            answer(status.line());
        }
        STOP if !runs.is_empty() => answer(format!("busy {}\n", runs.len())),
        STOP | STOP_FORCED => {
            answer("stopped\n".into());
            return Served::Stop;
        }
        _ => {}
    }
    Served::Continue
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(image: &[u8; 32]) -> WarmKey<'_> {
        WarmKey {
            uid: 1000,
            image,
            maps: [0, 1000, 1, 0, 1000, 1],
            kernel: false,
        }
    }

    #[test]
    fn names_separate_users_images_maps_kinds_and_secrets() {
        let mine = crate::trust::UserSecret::from_bytes([1; 32]);
        let theirs = crate::trust::UserSecret::from_bytes([2; 32]);
        let img = [7u8; 32];
        let other = [8u8; 32];
        for secret in [None, Some(&mine)] {
            let a = socket_name(&key(&img), secret);
            assert!(a.starts_with("cairn-warm/1000/"), "{a}");
            assert!(a.len() < 100);
            assert_eq!(a, socket_name(&key(&img), secret));
            assert_ne!(a, socket_name(&key(&other), secret));
            let mut k = key(&img);
            k.uid = 1001;
            assert_ne!(a, socket_name(&k, secret));
            let mut k = key(&img);
            k.maps[0] = 1000;
            assert_ne!(a, socket_name(&k, secret));
            let mut k = key(&img);
            k.kernel = true;
            assert_ne!(a, socket_name(&k, secret));
        }
        assert_ne!(
            socket_name(&key(&img), Some(&mine)),
            socket_name(&key(&img), Some(&theirs))
        );
        assert_ne!(
            socket_name(&key(&img), Some(&mine)),
            socket_name(&key(&img), None)
        );
    }

    #[test]
    fn status_lines_round_trip() {
        let s = WarmStatus {
            name: "n".into(),
            pid: 42,
            jobs: 0,
            idle_ms: Some(1500),
            linger_ms: 30000,
            kernel: false,
            image: "/data/my image.sqfs".into(),
        };
        assert_eq!(WarmStatus::parse("n", &s.line()), Some(s.clone()));
        let busy = WarmStatus {
            jobs: 3,
            idle_ms: None,
            kernel: true,
            ..s
        };
        assert_eq!(WarmStatus::parse("n", &busy.line()), Some(busy));
        assert_eq!(WarmStatus::parse("n", "garbage"), None);
        assert_eq!(WarmStatus::parse("n", "1 2 x 4 0 /i"), None);
    }

    #[test]
    fn an_anchor_is_named_after_its_warm_socket_and_not_listed_as_one() {
        let name = socket_name(&key(&[7; 32]), None);
        let anchor = anchor_name(&name);
        assert_eq!(
            anchor,
            name.replacen("cairn-warm/", "cairn-warm-anchor/", 1)
        );
        let table = format!(
            "Num       RefCount Protocol Flags    Type St Inode Path\n\
             0000000000000000: 00000002 00000000 00010000 0001 01 100 @{name}\n\
             0000000000000000: 00000002 00000000 00010000 0001 01 101 @{anchor}\n"
        );
        assert_eq!(listening_names(&table, 1000), vec![name]);
    }

    #[test]
    fn names_come_from_listening_sockets_of_the_user() {
        let table = "Num       RefCount Protocol Flags    Type St Inode Path\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 100 @cairn-warm/1000/aa\n\
            0000000000000000: 00000002 00000000 00000000 0001 03 101 @cairn-warm/1000/bb\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 102 @cairn-warm/1001/cc\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 103 @cairn-join/1000/dd\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 104 /run/x.sock\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 105\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 106 @cairn-warm/1000/aa\n";
        assert_eq!(listening_names(table, 1000), vec!["cairn-warm/1000/aa"]);
        assert_eq!(listening_names(table, 1001), vec!["cairn-warm/1001/cc"]);
        assert!(listening_names("", 1000).is_empty());
    }
}
