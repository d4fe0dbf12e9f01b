//! Checked directory handles: a directory of the caller's own, reached from
//! `/` one component at a time, each opened with `O_NOFOLLOW|O_DIRECTORY`
//! from its parent's handle and judged on that handle.
//!
//! Why handles: a check by path (`lstat`, then `open` by the same path)
//! can be raced. Another user who controls any directory along the path
//! swaps it between the check and the use (`renameat2(RENAME_EXCHANGE)` in
//! a loop wins a few times in a hundred). A handle cannot be swapped: once
//! a directory is open and judged, every later `*at` call goes into that
//! very directory, whatever happens to its name.
//!
//! The rules ([`judge`], pure, so tested exhaustively apart from the
//! walk):
//! - every component belongs to root or to the caller;
//! - none is writable by group or others, except sticky root-owned
//!   directories (`/tmp`, `/var/tmp`) on the way: the shared ancestors.
//!   Another user can create a name in one first (the owner check on that
//!   entry refuses it), but cannot rename or remove the caller's; below a
//!   shared ancestor no symbolic link is followed;
//! - a symbolic link is followed only where nobody else could have made or
//!   swapped it (owned by root or the caller, in a directory only they can
//!   write), so `/var/tmp -> /tmp` on a site's node still works;
//! - the last directory is the caller's and closed to everyone (0700).
//!
//! Missing components are created 0700 on the way (when asked), with
//! `mkdirat` from the parent's handle, and then judged like the others: a
//! name another user created first in the meantime is refused, not used.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component as PathPart, Path, PathBuf};

use rustix::fs::{AtFlags, CWD, Mode, OFlags};

/// Symbolic links followed in one walk at most (the kernel's own limit).
const MAX_LINKS: u32 = 40;

/// What one component of a path is, as `lstat`/`fstat` saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Component {
    pub owner: u32,
    /// The whole `st_mode`: type and permission bits.
    pub mode: u32,
}

/// Why a component may not be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Owned by another user.
    ForeignOwner { owner: u32 },
    /// Writable by group or others, and not the one sticky shared ancestor.
    OpenToOthers { mode: u32 },
    /// The directory itself: the caller's, but readable or writable by
    /// others.
    NotPrivate { mode: u32 },
    /// A symbolic link below a directory others can write to: it may be
    /// theirs to swap.
    SharedSymlink,
    /// Neither a directory nor a symbolic link.
    NotDirectory,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::ForeignOwner { owner } => write!(f, "it belongs to uid {owner}"),
            Refusal::OpenToOthers { mode } => write!(
                f,
                "others may write to it (mode {:04o}) and it is not a sticky root-owned directory such as /tmp",
                mode & 0o7777
            ),
            Refusal::NotPrivate { mode } => write!(
                f,
                "it is open to others (mode {:04o}, needs 0700)",
                mode & 0o7777
            ),
            Refusal::SharedSymlink => {
                write!(
                    f,
                    "it is a symbolic link in a directory others may write to"
                )
            }
            Refusal::NotDirectory => write!(f, "it is not a directory"),
        }
    }
}

/// The judgement of one component (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A directory to go into; `shared`: it (or an ancestor) is the sticky
    /// shared ancestor, so everything below must be the caller's own.
    Enter {
        shared: bool,
    },
    /// A symbolic link nobody else can have made: follow it.
    Follow,
    Refuse(Refusal),
}

const S_IFMT: u32 = 0o170_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFLNK: u32 = 0o120_000;
const S_ISVTX: u32 = 0o1000;

/// Where a component stands in the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// An ancestor of the directory asked for.
    Inner,
    /// The directory asked for, which must be the caller's and closed to
    /// everyone else (0700): the block store, the secret.
    Private,
    /// The directory asked for, which must be written by nobody but its
    /// owner, the caller or root, and may be readable (0755): the image
    /// cache (a site may keep a shared one, root's).
    Owned,
}

/// Judge one component (pure). `below_shared`: a sticky shared ancestor was
/// passed.
pub fn judge(c: Component, caller: u32, below_shared: bool, position: Position) -> Verdict {
    let last = position != Position::Inner;
    let mine = c.owner == caller;
    // Root is trusted anywhere: nobody else can make a root-owned entry,
    // and root can do anything to the caller's files anyway.
    if !mine && c.owner != 0 {
        return Verdict::Refuse(Refusal::ForeignOwner { owner: c.owner });
    }
    match c.mode & S_IFMT {
        S_IFLNK if below_shared => return Verdict::Refuse(Refusal::SharedSymlink),
        S_IFLNK => return Verdict::Follow,
        S_IFDIR => {}
        _ => return Verdict::Refuse(Refusal::NotDirectory),
    }
    if c.mode & 0o022 != 0 {
        // In a sticky directory only an entry's owner (or the directory's:
        // root here) may rename or remove it; what lies below is then
        // judged entry by entry.
        let sticky_root = c.mode & S_ISVTX != 0 && c.owner == 0;
        if sticky_root && !last {
            return Verdict::Enter { shared: true };
        }
        return Verdict::Refuse(Refusal::OpenToOthers { mode: c.mode });
    }
    // A private directory is the caller's; one only written by its owner
    // may be root's (a site's shared image cache).
    if position == Position::Private && !mine {
        return Verdict::Refuse(Refusal::ForeignOwner { owner: c.owner });
    }
    if position == Position::Private && c.mode & 0o077 != 0 {
        return Verdict::Refuse(Refusal::NotPrivate { mode: c.mode });
    }
    Verdict::Enter {
        shared: below_shared,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("{path} is not an absolute path")]
    NotAbsolute { path: PathBuf },
    #[error("refusing {path}: {refusal}")]
    Refused { path: PathBuf, refusal: Refusal },
    #[error("{path}: more than {MAX_LINKS} symbolic links")]
    TooManyLinks { path: PathBuf },
    #[error("{step} {path} failed")]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_error<'a>(
    step: &'static str,
    path: &'a Path,
) -> impl FnOnce(rustix::io::Errno) -> TrustError + 'a {
    move |e| TrustError::Io {
        step,
        path: path.to_path_buf(),
        source: e.into(),
    }
}

fn component(st: &rustix::fs::Stat) -> Component {
    Component {
        owner: st.st_uid,
        mode: st.st_mode,
    }
}

/// A directory of the caller's own, checked as the module doc says, held
/// open: everything inside is reached from [`OwnDir::fd`].
#[derive(Debug)]
pub struct OwnDir {
    fd: OwnedFd,
    path: PathBuf,
    caller: u32,
}

/// One directory of the walk so far.
struct Step {
    fd: OwnedFd,
    shared: bool,
    /// Its name in the path as resolved (for messages).
    name: OsString,
}

impl OwnDir {
    /// Open `path` (absolute) as the caller's private directory (0700),
    /// creating what is missing (0700) when `create`.
    pub fn open(path: &Path, caller: u32, create: bool) -> Result<OwnDir, TrustError> {
        Self::open_as(path, caller, create, Position::Private)
    }

    /// Open `path` (absolute) as a directory only its owner (the caller or
    /// root) writes (others may read it), creating what is missing (0755
    /// less the umask) when `create`.
    pub fn open_owned(path: &Path, caller: u32, create: bool) -> Result<OwnDir, TrustError> {
        Self::open_as(path, caller, create, Position::Owned)
    }

    fn open_as(
        path: &Path,
        caller: u32,
        create: bool,
        wanted: Position,
    ) -> Result<OwnDir, TrustError> {
        let at = |last: bool| if last { wanted } else { Position::Inner };
        if !path.is_absolute() {
            return Err(TrustError::NotAbsolute {
                path: path.to_path_buf(),
            });
        }
        let root = rustix::fs::openat(
            CWD,
            "/",
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io_error("open", Path::new("/")))?;
        let mut names: Vec<OsString> = Vec::new();
        push_parts(&mut names, path);
        let mut walk = vec![Step {
            fd: root,
            shared: false,
            name: OsString::new(),
        }];
        Self::judge_open(&mut walk, at(names.is_empty()), caller)?;
        let mut links = 0u32;
        // `names` is a stack: the next component is at the end.
        while let Some(name) = names.pop() {
            if name == ".." {
                if walk.len() > 1 {
                    walk.pop();
                }
                continue;
            }
            let last = names.is_empty();
            let parent = walk.last().is_some_and(|s| s.shared);
            let shown = shown_path(&walk, Some(&name));
            let Some(dir) = walk.last() else {
                break;
            };
            let st = match rustix::fs::statat(&dir.fd, &name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(rustix::io::Errno::NOENT) if create => {
                    // A private directory's path is made private too; a
                    // cache others may read keeps their way in (0755 less
                    // the umask, as mkdir -p would).
                    let mode = if wanted == Position::Private {
                        0o700
                    } else {
                        0o755
                    };
                    match rustix::fs::mkdirat(&dir.fd, &name, Mode::from_raw_mode(mode)) {
                        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                        Err(e) => return Err(io_error("create", &shown)(e)),
                    }
                    rustix::fs::statat(&dir.fd, &name, AtFlags::SYMLINK_NOFOLLOW)
                        .map_err(io_error("stat", &shown))?
                }
                Err(e) => return Err(io_error("stat", &shown)(e)),
            };
            match judge(component(&st), caller, parent, at(last)) {
                Verdict::Refuse(refusal) => {
                    return Err(TrustError::Refused {
                        path: shown,
                        refusal,
                    });
                }
                Verdict::Follow => {
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(TrustError::TooManyLinks {
                            path: path.to_path_buf(),
                        });
                    }
                    let target = rustix::fs::readlinkat(&dir.fd, &name, Vec::new())
                        .map_err(io_error("read the link", &shown))?;
                    let target = Path::new(OsStr::from_bytes(target.as_bytes()));
                    if target.is_absolute() {
                        walk.truncate(1);
                    }
                    push_parts(&mut names, target);
                    if names.is_empty() {
                        // A link to `/`: judge the root as the last one.
                        Self::judge_open(&mut walk, wanted, caller)?;
                    }
                }
                Verdict::Enter { .. } => {
                    let fd = rustix::fs::openat(
                        &dir.fd,
                        &name,
                        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(io_error("open", &shown))?;
                    walk.push(Step {
                        fd,
                        shared: false,
                        name,
                    });
                    // The verdict that counts is the one on the handle:
                    // the name may have changed since the stat.
                    Self::judge_open(&mut walk, at(last), caller)?;
                }
            }
        }
        let path = shown_path(&walk, None);
        let Some(step) = walk.pop() else {
            return Err(TrustError::NotAbsolute { path });
        };
        Ok(OwnDir {
            fd: step.fd,
            path,
            caller,
        })
    }

    /// Judge the last directory of `walk` on its handle; record whether it
    /// is (below) the shared ancestor.
    fn judge_open(walk: &mut [Step], position: Position, caller: u32) -> Result<(), TrustError> {
        let path = shown_path(walk, None);
        let Some((step, before)) = walk.split_last_mut() else {
            return Ok(());
        };
        let st = rustix::fs::fstat(&step.fd).map_err(io_error("stat", &path))?;
        let below = before.last().is_some_and(|s| s.shared);
        match judge(component(&st), caller, below, position) {
            Verdict::Enter { shared } => {
                step.shared = shared;
                Ok(())
            }
            Verdict::Follow => Err(TrustError::Refused {
                path,
                refusal: Refusal::NotDirectory,
            }),
            Verdict::Refuse(refusal) => Err(TrustError::Refused { path, refusal }),
        }
    }

    /// The directory's handle (`O_PATH`): a `dirfd` for `*at` calls.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The path it was reached by, symbolic links resolved (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Open a file inside that only the caller can have written: a regular
    /// file (no symbolic link followed), owned by the caller, closed to
    /// everyone else. `Ok(None)` when there is no such file or it is not
    /// one of the caller's own (a stranger's file is never read).
    pub fn open_own_file(&self, name: &str, flags: OFlags) -> io::Result<Option<File>> {
        let fd = match rustix::fs::openat(
            &self.fd,
            name,
            flags | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) | Err(rustix::io::Errno::LOOP) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let st = rustix::fs::fstat(&fd)?;
        let own =
            st.st_uid == self.caller && st.st_mode & S_IFMT == 0o100_000 && st.st_mode & 0o077 == 0;
        Ok(own.then(|| File::from(fd)))
    }

    /// Create a new file inside (`O_EXCL`, 0600), opened for reading and
    /// writing.
    pub fn create_file(&self, name: &str) -> io::Result<File> {
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?;
        Ok(File::from(fd))
    }

    /// An unnamed file inside (`O_TMPFILE`, 0600), for [`OwnDir::link_as`]
    /// once complete; `None` where the filesystem cannot.
    pub fn unnamed_file(&self) -> Option<File> {
        rustix::fs::openat(
            &self.fd,
            ".",
            OFlags::RDWR | OFlags::TMPFILE | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .ok()
        .map(File::from)
    }

    /// Give an open file (unnamed, or named elsewhere) the name `name`
    /// inside; fails if the name exists.
    pub fn link_as(&self, file: &File, name: &str) -> io::Result<()> {
        // linkat through /proc follows the fd to the open file; AT_EMPTY_PATH
        // would need CAP_DAC_READ_SEARCH.
        let proc = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(file));
        rustix::fs::linkat(CWD, proc.as_str(), &self.fd, name, AtFlags::SYMLINK_FOLLOW)?;
        Ok(())
    }

    /// Rename `from` to `to`, both inside.
    pub fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        rustix::fs::renameat(&self.fd, from, &self.fd, to)?;
        Ok(())
    }

    /// Remove the file `name` inside.
    pub fn remove(&self, name: &OsStr) -> io::Result<()> {
        rustix::fs::unlinkat(&self.fd, name, AtFlags::empty())?;
        Ok(())
    }

    /// The names inside, with `lstat` facts (owner, mode, size, mtime).
    pub fn list(&self) -> io::Result<Vec<(OsString, rustix::fs::Stat)>> {
        let fd = rustix::fs::openat(
            &self.fd,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let mut out = Vec::new();
        for entry in rustix::fs::Dir::read_from(&fd)? {
            let entry = entry?;
            let name = entry.file_name();
            if name == c"." || name == c".." {
                continue;
            }
            if let Ok(st) = rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
                out.push((OsStr::from_bytes(name.to_bytes()).to_os_string(), st));
            }
        }
        Ok(out)
    }
}

/// Push the parts of `path` onto the stack `names` so that its first part
/// comes out first.
fn push_parts(names: &mut Vec<OsString>, path: &Path) {
    let parts: Vec<OsString> = path
        .components()
        .filter_map(|p| match p {
            PathPart::Normal(n) => Some(n.to_os_string()),
            PathPart::ParentDir => Some(OsString::from("..")),
            PathPart::RootDir | PathPart::CurDir | PathPart::Prefix(_) => None,
        })
        .collect();
    names.extend(parts.into_iter().rev());
}

fn shown_path(walk: &[Step], next: Option<&OsStr>) -> PathBuf {
    let mut p = PathBuf::from("/");
    for step in walk.iter().skip(1) {
        p.push(&step.name);
    }
    if let Some(n) = next {
        p.push(n);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    const ME: u32 = 1000;
    const OTHER: u32 = 1002;

    fn dir(owner: u32, mode: u32) -> Component {
        Component {
            owner,
            mode: S_IFDIR | mode,
        }
    }

    /// Every combination of owner, type, permission bits, position and
    /// "below the shared ancestor", against the rules as the module doc
    /// states them, written out independently of `judge`.
    #[test]
    fn judge_follows_the_rules_for_every_combination() {
        let kinds = [S_IFDIR, S_IFLNK, 0o100_000, 0o140_000];
        for owner in [ME, 0, OTHER] {
            for kind in kinds {
                for bits in 0..0o2000u32 {
                    for below in [false, true] {
                        for position in [Position::Inner, Position::Private, Position::Owned] {
                            let last = position != Position::Inner;
                            let private = position == Position::Private;
                            let c = Component {
                                owner,
                                mode: kind | bits,
                            };
                            let v = judge(c, ME, below, position);
                            let trusted_owner = owner == ME || owner == 0;
                            let others_write = bits & 0o022 != 0;
                            let shared_root = bits & S_ISVTX != 0 && owner == 0;
                            match v {
                                Verdict::Enter { shared } => {
                                    assert!(trusted_owner, "{c:?} {below} {last}");
                                    assert_eq!(kind, S_IFDIR);
                                    assert_eq!(shared, below || others_write);
                                    if others_write {
                                        assert!(shared_root && !last, "{c:?}");
                                    }
                                    if private {
                                        assert!(owner == ME && bits & 0o077 == 0, "{c:?}");
                                    }
                                }
                                Verdict::Follow => {
                                    assert!(trusted_owner && kind == S_IFLNK && !below);
                                }
                                Verdict::Refuse(_) => {
                                    let enterable = trusted_owner
                                        && kind == S_IFDIR
                                        && (!others_write || (shared_root && !last))
                                        && (!private || (owner == ME && bits & 0o077 == 0));
                                    let followable = trusted_owner && kind == S_IFLNK && !below;
                                    assert!(!enterable && !followable, "{c:?} {below} {last}");
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn judge_examples() {
        // /tmp: the shared ancestor; below it only the caller's own.
        assert_eq!(
            judge(dir(0, 0o1777), ME, false, Position::Inner),
            Verdict::Enter { shared: true }
        );
        // A shared directory in a shared directory (a site's /tmp/projects).
        assert_eq!(
            judge(dir(0, 0o1777), ME, true, Position::Inner),
            Verdict::Enter { shared: true }
        );
        // But not a sticky directory of another user: they may rename what
        // is in it.
        assert!(matches!(
            judge(dir(OTHER, 0o1777), ME, false, Position::Inner),
            Verdict::Refuse(Refusal::ForeignOwner { .. })
        ));
        assert!(matches!(
            judge(dir(ME, 0o1777), ME, false, Position::Inner),
            Verdict::Refuse(Refusal::OpenToOthers { .. })
        ));
        // A root-owned directory below it, closed to others, is fine.
        assert_eq!(
            judge(dir(0, 0o755), ME, true, Position::Inner),
            Verdict::Enter { shared: true }
        );
        // The planted parent of the issue: /var/tmp/cairn-$USER made 0777
        // by someone else, or by the caller and left open.
        assert!(matches!(
            judge(dir(OTHER, 0o777), ME, true, Position::Inner),
            Verdict::Refuse(Refusal::ForeignOwner { owner: OTHER })
        ));
        assert!(matches!(
            judge(dir(ME, 0o777), ME, true, Position::Inner),
            Verdict::Refuse(Refusal::OpenToOthers { .. })
        ));
        assert!(matches!(
            judge(dir(ME, 0o755), ME, true, Position::Private),
            Verdict::Refuse(Refusal::NotPrivate { .. })
        ));
        assert_eq!(
            judge(dir(ME, 0o700), ME, true, Position::Private),
            Verdict::Enter { shared: true }
        );
    }

    /// The path-based walk the handles replace (racy, but right when
    /// nothing moves): whether `path` passes, following links by `judge`.
    fn model(path: &Path, caller: u32) -> bool {
        let pos = |last: bool| {
            if last {
                Position::Private
            } else {
                Position::Inner
            }
        };
        let mut names: Vec<OsString> = Vec::new();
        push_parts(&mut names, path);
        let mut at = PathBuf::from("/");
        let mut shared = Vec::new();
        let root = fs::symlink_metadata("/").expect("stat /");
        match judge(comp(&root), caller, false, pos(names.is_empty())) {
            Verdict::Enter { shared: s } => shared.push(s),
            _ => return false,
        }
        let mut links = 0;
        while let Some(name) = names.pop() {
            if name == ".." {
                at.pop();
                if shared.len() > 1 {
                    shared.pop();
                }
                continue;
            }
            let below = shared.last().copied().unwrap_or(false);
            let next = at.join(&name);
            let Ok(meta) = fs::symlink_metadata(&next) else {
                return false;
            };
            match judge(comp(&meta), caller, below, pos(names.is_empty())) {
                Verdict::Enter { shared: s } => {
                    at = next;
                    shared.push(s);
                }
                Verdict::Follow => {
                    links += 1;
                    if links > MAX_LINKS {
                        return false;
                    }
                    let target = fs::read_link(&next).expect("readlink");
                    if target.is_absolute() {
                        at = PathBuf::from("/");
                        shared.truncate(1);
                    }
                    push_parts(&mut names, &target);
                }
                Verdict::Refuse(_) => return false,
            }
        }
        true
    }

    use std::fs;

    fn comp(m: &fs::Metadata) -> Component {
        Component {
            owner: m.uid(),
            mode: m.mode(),
        }
    }

    /// A small deterministic generator (no rand dependency for one test).
    struct Lcg(u64);
    impl Lcg {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) % n
        }

        /// An index below `n`.
        fn index(&mut self, n: usize) -> usize {
            usize::try_from(self.below(n as u64)).expect("below a usize")
        }
    }

    /// Random chains of directories and links (owners, modes, links at any
    /// component, `..`) under a base outside the shared /tmp and under it:
    /// the handle walk agrees with the path model on every one, and what it
    /// opens is the directory the model reached.
    #[test]
    fn the_walk_agrees_with_the_path_model_on_random_trees() {
        let me = crate::sys::process::geteuid();
        let root = me == 0;
        let bases = [
            tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).expect("tempdir"),
            tempfile::tempdir().expect("tempdir"),
        ];
        let modes = [
            0o700, 0o700, 0o700, 0o755, 0o750, 0o770, 0o777, 0o1777, 0o711,
        ];
        let mut rng = Lcg(0x5eed);
        let mut checked = 0;
        for round in 0..300 {
            let base = bases[round % 2].path().join(format!("r{round}"));
            fs::create_dir(&base).expect("mkdir");
            let depth = 1 + rng.index(4);
            let mut path = base.clone();
            let mut made = Vec::new();
            for i in 0..depth {
                let name = format!("c{i}");
                match rng.below(6) {
                    // A link to a sibling directory (relative or absolute).
                    0 => {
                        let real = path.join(format!("{name}.real"));
                        fs::create_dir(&real).expect("mkdir");
                        let target = if rng.below(2) == 0 {
                            PathBuf::from(format!("{name}.real"))
                        } else {
                            real.clone()
                        };
                        std::os::unix::fs::symlink(&target, path.join(&name)).expect("ln");
                        made.push(real);
                    }
                    // A `..` detour.
                    1 => {
                        fs::create_dir(path.join(&name)).expect("mkdir");
                        fs::create_dir(path.join(format!("{name}.x"))).expect("mkdir");
                        made.push(path.join(&name));
                        path = path.join(format!("{name}.x"));
                        path.push("..");
                    }
                    _ => {
                        fs::create_dir(path.join(&name)).expect("mkdir");
                        made.push(path.join(&name));
                    }
                }
                path.push(&name);
            }
            // Owners and modes last (a 0700 directory of another user
            // would stop the test's own mkdirs).
            for d in made.iter().rev() {
                if root && rng.below(8) == 0 {
                    std::os::unix::fs::chown(d, Some(OTHER), None).expect("chown");
                }
                let mode = modes[rng.index(modes.len())];
                fs::set_permissions(d, fs::Permissions::from_mode(mode)).expect("chmod");
            }
            let want = model(&path, me);
            let got = OwnDir::open(&path, me, false);
            assert_eq!(got.is_ok(), want, "{}: {got:?}", path.display());
            if let Ok(d) = got {
                let st = rustix::fs::fstat(d.fd()).expect("fstat");
                let meta = fs::metadata(&path).expect("stat");
                assert_eq!((st.st_dev, st.st_ino), (meta.dev(), meta.ino()));
                checked += 1;
            }
            // Let the tempdir go: no 0700 directory of another user left.
            for d in &made {
                let _ = fs::set_permissions(d, fs::Permissions::from_mode(0o700));
                let _ = std::os::unix::fs::chown(d, Some(me), None);
            }
        }
        assert!(
            checked > 10,
            "only {checked} accepted paths: the test tests little"
        );
    }

    #[test]
    fn missing_directories_are_created_private() {
        let base = tempfile::tempdir().expect("tempdir");
        let me = crate::sys::process::geteuid();
        let path = base.path().join("a/b/c");
        let d = OwnDir::open(&path, me, true).expect("create");
        assert_eq!(d.path(), path.as_path());
        for p in ["a", "a/b", "a/b/c"] {
            let m = fs::metadata(base.path().join(p)).expect("stat");
            assert_eq!(m.mode() & 0o777, 0o700, "{p}");
        }
        assert!(matches!(
            OwnDir::open(Path::new("relative"), me, true),
            Err(TrustError::NotAbsolute { .. })
        ));
    }

    /// A directory swapped for another one while it is in use: what was
    /// opened stays what is used (the handle), whatever the name now is.
    #[test]
    fn a_renamed_directory_does_not_move_what_is_opened() {
        let base = tempfile::tempdir().expect("tempdir");
        let me = crate::sys::process::geteuid();
        let good = base.path().join("store");
        let d = OwnDir::open(&good, me, true).expect("open");
        let evil = base.path().join("evil");
        fs::create_dir(&evil).expect("mkdir");
        fs::rename(&good, base.path().join("moved")).expect("mv");
        fs::rename(&evil, &good).expect("mv");
        d.create_file("f").expect("create");
        assert!(base.path().join("moved/f").exists());
        assert!(!good.join("f").exists());
        // A stranger's file inside is not read back; nor one open to others.
        if me == 0 {
            let f = base.path().join("moved/theirs");
            fs::write(&f, b"x").expect("write");
            fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).expect("chmod");
            std::os::unix::fs::chown(&f, Some(OTHER), None).expect("chown");
            assert!(
                d.open_own_file("theirs", OFlags::RDONLY)
                    .expect("open")
                    .is_none()
            );
        }
        let f = base.path().join("moved/open");
        fs::write(&f, b"x").expect("write");
        fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(
            d.open_own_file("open", OFlags::RDONLY)
                .expect("open")
                .is_none()
        );
        std::os::unix::fs::symlink("f", base.path().join("moved/link")).expect("ln");
        assert!(
            d.open_own_file("link", OFlags::RDONLY)
                .expect("open")
                .is_none()
        );
        assert!(
            d.open_own_file("f", OFlags::RDONLY)
                .expect("open")
                .is_some()
        );
    }
}
