//! From the command line's options to a validated [`RunRequest`]: the image
//! is checked (a directory, or a squashfs file whose superblock and root
//! directory open), the mount mode chosen, binds are parsed and checked,
//! `--env-file` files are read, the identity files are generated. All
//! file-system reads happen here, before any namespace exists, so the
//! planners downstream stay pure. A squashfs image is only chosen here
//! ([`RootImage`]): `launch` attaches it.

use std::ffi::OsString;
use std::fs;
use std::io::Read;

use crate::squashfs::format::SUPERBLOCK_SIZE;
use std::path::{Path, PathBuf};

use crate::config::{MountMode, Policy};
use crate::image::meta::{IMAGE_META_PATH, ImageMeta, MetaError, RunConfig};
use crate::mount::fuse::ServeOptions;
use crate::mount::plan::{BindMount, HomeMount, Mask, MountRequest, TmpMount};
use crate::ns::idmap::{self, IdMap, IdMapError, caller_maps};
use crate::ns::join::{self, JoinError};
use crate::ns::userns::ExtraNamespaces;
use crate::run::binds::{self, BindError};
use crate::run::edits::{self, CheckedEdits, EditError, HostDirs, NamedEdits};
use crate::run::env::{self, EnvError, EnvOp};
use crate::run::facts::{FactsFile, Remembering};
use crate::run::identity::{self, Identity};
use crate::run::image_config::{self, ImageConfigError};
use crate::run::policy::{self, PolicyError};
use crate::run::tree::{ImageTree, Kind, SquashTree};
use crate::squashfs::reader::{ReadError, StoreOptions, identity as image_identity};
use crate::trust::UserSecret;
use std::time::Duration;

/// The squashfs superblock magic, "hsqs" on disk.
const SQUASHFS_MAGIC: &[u8; 4] = b"hsqs";

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("image {path}: cannot read it")]
    ImageMissing {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("image {path}: not a usable squashfs image")]
    BadSquashfs {
        path: PathBuf,
        #[source]
        source: ReadError,
    },
    #[error("image {path}: cannot read its stored config")]
    ImageConfig {
        path: PathBuf,
        #[source]
        source: MetaError,
    },
    #[error(transparent)]
    User(#[from] ImageConfigError),
    #[error(transparent)]
    Join(#[from] JoinError),
    #[error("--mount kernel: {reason}")]
    KernelMountRefused { reason: &'static str },
    #[error("image {path}: neither a directory nor a squashfs file")]
    NotAnImage { path: PathBuf },
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error(transparent)]
    Edits(#[from] EditError),
    #[error(transparent)]
    Env(#[from] EnvError),
    #[error(transparent)]
    IdMap(#[from] IdMapError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("--env-file {path}: cannot read it")]
    EnvFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--home: $HOME is not set")]
    NoHome,
    #[error("--home: {home} does not exist on the host")]
    HomeMissing { home: PathBuf },
    #[error("--home: the image has neither {home} nor its parent directory")]
    HomeTarget { home: PathBuf },
    #[error("--cd {0}: must be an absolute path")]
    RelativeCd(PathBuf),
}

/// One environment option as given, in command-line order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvOption {
    Env(String),
    EnvFile(PathBuf),
    Unset(String),
    Clean,
}

/// The options of `cairn run`, as plain data (the CLI fills it from clap).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub image: PathBuf,
    pub command: Vec<OsString>,
    pub binds: Vec<String>,
    pub home: bool,
    pub private_tmp: bool,
    pub cd: Option<PathBuf>,
    pub env: Vec<EnvOption>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub pid: bool,
    pub net_none: bool,
    pub writable: bool,
    /// A `cairn build` stage: a directory image written in place, with its
    /// own `/tmp`, `/etc/passwd` and `/etc/group` (a RUN's `useradd` must
    /// be able to rewrite them) and no stored config applied (the build
    /// passes the stage's environment, user and directory itself).
    pub build_stage: bool,
    pub timings: bool,
    /// `--seccomp` (see [`crate::run::fakeroot`]).
    pub seccomp: bool,
    pub mount: MountMode,
    /// `--join[=TAG]`: `Some("")` for the launcher's default tag.
    pub join: Option<String>,
    /// Site defaults, hooks and CDI devices, applied in order.
    pub edits: Vec<NamedEdits>,
    /// The site's policy (the default allows everything).
    pub policy: Policy,
    /// FUSE server worker threads (`None`: the server's default).
    pub fuse_threads: Option<usize>,
    /// `--join`: how long the namespace outlives its last rank.
    pub join_linger: Duration,
    /// How long the image stays mounted after the last job using it, for
    /// the next run of it (zero: warm runs off). `Default` gives zero: a
    /// test's run leaves nothing behind unless it asks.
    pub warm_linger: Duration,
    /// The FUSE server's block cache: directory and budget in bytes.
    pub block_cache: Option<(PathBuf, u64)>,
    /// The user's secret (see [`crate::trust`]): keys the block store's
    /// MACs and the `--join` rendezvous name. Without it the run has no
    /// block store and a guessable join name.
    pub secret: Option<UserSecret>,
}

/// The caller as the host sees it.
#[derive(Debug, Clone)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub user: String,
    pub group: String,
    pub home: PathBuf,
    pub env: Vec<(OsString, OsString)>,
    pub cwd: PathBuf,
}

impl Caller {
    /// The calling process: its ids and their names from the host's user
    /// database, with the environment and current directory the CLI read.
    pub fn current(env: Vec<(OsString, OsString)>, cwd: PathBuf) -> Self {
        let uid = crate::sys::process::geteuid();
        let gid = crate::sys::process::getegid();
        let var = |k: &str| env::lookup(&env, k).map(|v| v.to_os_string());
        let pw = crate::sys::process::getpwuid(uid);
        let user = pw
            .as_ref()
            .map(|p| p.0.clone())
            .or_else(|| var("USER").map(|u| u.to_string_lossy().into_owned()))
            .unwrap_or_else(|| format!("user{uid}"));
        let home = var("HOME")
            .map(PathBuf::from)
            .or_else(|| pw.as_ref().map(|p| p.1.clone()))
            .unwrap_or_else(|| PathBuf::from("/"));
        let group = crate::sys::process::getgrgid(gid).unwrap_or_else(|| user.clone());
        Caller {
            uid,
            gid,
            user,
            group,
            home,
            env,
            cwd,
        }
    }
}

/// The image the run mounts as its root, as the request chose it. A
/// squashfs file still has to be attached (to a loop device for the
/// kernel, or to cairn's FUSE server): `launch` does that, and only then
/// gives the planner its [`crate::mount::plan::RootSource`].
#[derive(Debug, Clone)]
pub enum RootImage {
    /// A rootfs directory on the host (absolute, canonical).
    Directory(PathBuf),
    /// A squashfs file, opened with cairn's reader; `kernel`: mounted by
    /// the kernel on a loop device, else served by cairn's FUSE server.
    Squashfs { image: SquashTree, kernel: bool },
}

/// Everything `launch` needs, validated.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// The mounts, the image not attached yet.
    pub mount: MountRequest<RootImage>,
    pub uid_map: IdMap,
    pub gid_map: IdMap,
    pub namespaces: ExtraNamespaces,
    pub env: Vec<(OsString, OsString)>,
    pub command: Vec<OsString>,
    pub cwd: PathBuf,
    pub timings: bool,
    /// Install the `--seccomp` filter before exec.
    pub seccomp: bool,
    /// FUSE server worker threads (`None`: the server's default).
    pub fuse_threads: Option<usize>,
    /// `--join`: how long the namespace outlives its last rank.
    pub join_linger: Duration,
    /// How long the image stays mounted after the last job using it, for
    /// the next run of it (zero: warm runs off).
    pub warm_linger: Duration,
    /// The FUSE server's block cache: directory and budget in bytes.
    pub block_cache: Option<(PathBuf, u64)>,
    pub secret: Option<UserSecret>,
}

impl RunRequest {
    /// How the FUSE server serves this run's image.
    pub fn serve_options(&self) -> ServeOptions {
        let mut options = ServeOptions::default();
        if let Some(threads) = self.fuse_threads {
            options.threads = threads.max(1);
        }
        if let (Some((dir, budget)), RootImage::Squashfs { image: sq, .. }, Some(secret)) =
            (&self.block_cache, &self.mount.root, &self.secret)
        {
            options.store = Some(StoreOptions {
                dir: dir.clone(),
                budget: *budget,
                identity: sq.identity,
                secret: secret.clone(),
            });
        }
        options
    }
}

/// Is `path` (inside the image) a directory there, symlinks not followed?
fn image_has_dir(image: &dyn ImageTree, path: &str) -> bool {
    image.kind(&Path::new("/").join(path)) == Some(Kind::Dir)
}

/// The image as found on disk: a rootfs directory, or a squashfs file whose
/// superblock and root inode were read (so a corrupt image fails here,
/// before any namespace exists).
#[derive(Debug, Clone)]
pub enum Image {
    Directory(PathBuf),
    Squashfs(SquashTree),
}

impl Image {
    fn tree(&self) -> &dyn ImageTree {
        match self {
            Image::Directory(dir) => dir,
            Image::Squashfs(sq) => sq,
        }
    }

    /// The image's canonical path on the host.
    fn path(&self) -> &Path {
        match self {
            Image::Directory(dir) => dir,
            Image::Squashfs(sq) => &sq.path,
        }
    }
}

/// Check the image: a directory (canonical path) or a squashfs file
/// (recognised by its magic, whatever its name), opened and identified.
/// Its superblock and tables are checked by [`check_squashfs`] (before any
/// namespace exists) unless its earlier runs' kept facts vouch for it.
pub fn check_image(path: &Path) -> Result<Image, RequestError> {
    let missing = |source| RequestError::ImageMissing {
        path: path.to_path_buf(),
        source,
    };
    let meta = fs::metadata(path).map_err(missing)?;
    if meta.is_dir() {
        return path.canonicalize().map(Image::Directory).map_err(missing);
    }
    // The superblock's bytes: the magic, and part of the identity.
    let mut file = fs::File::open(path).map_err(missing)?;
    let mut head = Vec::with_capacity(SUPERBLOCK_SIZE);
    Read::by_ref(&mut file)
        .take(SUPERBLOCK_SIZE as u64)
        .read_to_end(&mut head)
        .map_err(missing)?;
    if !head.starts_with(SQUASHFS_MAGIC) {
        return Err(RequestError::NotAnImage {
            path: path.to_path_buf(),
        });
    }
    let canonical = path.canonicalize().map_err(missing)?;
    let identity = image_identity(&file.metadata().map_err(missing)?, &head);
    Ok(Image::Squashfs(SquashTree::new(canonical, file, identity)))
}

/// Read a squashfs image's superblock, tables and root inode, so that a
/// corrupt image fails before any namespace exists. Skipped when kept
/// facts of this very image (identity and MAC checked) answer the run's
/// questions: an earlier run read it whole.
fn check_squashfs(found: &Image, kept: Option<&Remembering<'_>>) -> Result<(), RequestError> {
    match found {
        Image::Squashfs(sq) if kept.is_none_or(|k| !k.has_facts()) => sq
            .archive()
            .map(drop)
            .map_err(|source| RequestError::BadSquashfs {
                path: sq.path.clone(),
                source,
            }),
        _ => Ok(()),
    }
}

/// Resolve an image file that generated or host content replaces; `None`
/// when the image lacks it (a read-only image cannot gain a file).
fn image_file(image: &dyn ImageTree, path: &str) -> Option<PathBuf> {
    let inside = binds::resolve_in_image(image, Path::new(path)).ok()?;
    (image.kind(&inside) == Some(Kind::File)).then_some(inside)
}

/// Decide kernel or FUSE (pure). The kernel's squashfs cannot be mounted
/// from a non-initial user namespace, so the kernel path needs a caller
/// with CAP_SYS_ADMIN (root) whose ids map to themselves: then no user
/// namespace is created at all. `Ok(true)` = kernel.
pub fn use_kernel(
    via: MountMode,
    root_caller: bool,
    identity_maps: bool,
) -> Result<bool, RequestError> {
    let allowed = root_caller && identity_maps;
    match via {
        MountMode::Fuse => Ok(false),
        MountMode::Auto => Ok(allowed),
        MountMode::Kernel if allowed => Ok(true),
        MountMode::Kernel => Err(RequestError::KernelMountRefused {
            reason: if root_caller {
                "--uid/--gid need a user namespace, where the kernel refuses to mount squashfs"
            } else {
                "only root may mount squashfs with the kernel (use --mount fuse)"
            },
        }),
    }
}

/// `--join`: the abstract socket name of (user, image, tag, secret), from a stat of
/// the image (no open: a rank that finds a leader never opens the image).
pub fn join_socket(opts: &RunOptions, caller: &Caller) -> Result<Option<String>, RequestError> {
    use std::os::unix::fs::MetadataExt;
    let Some(given) = &opts.join else {
        return Ok(None);
    };
    if opts.pid {
        return Err(JoinError::Unsupported { option: "--pid" }.into());
    }
    if opts.net_none {
        return Err(JoinError::Unsupported {
            option: "--net none",
        }
        .into());
    }
    let tag = join::tag(Some(given), &caller.env)?;
    let meta = fs::metadata(&opts.image).map_err(|source| RequestError::ImageMissing {
        path: opts.image.clone(),
        source,
    })?;
    Ok(Some(join::socket_name(
        caller.uid,
        meta.dev(),
        meta.ino(),
        &tag,
        opts.secret.as_ref(),
    )))
}

/// The options of a rank that joined a leader's namespaces: the image is
/// the leader's mounted root (`/`, read as a directory image: its stored
/// config, the generated passwd); binds, hooks, devices, the home and the
/// policy are the leader's, already in place and checked.
pub fn follower_options(opts: &RunOptions) -> RunOptions {
    RunOptions {
        image: PathBuf::from("/"),
        command: opts.command.clone(),
        cd: opts.cd.clone(),
        env: opts.env.clone(),
        uid: opts.uid,
        gid: opts.gid,
        timings: opts.timings,
        seccomp: opts.seccomp,
        ..RunOptions::default()
    }
}

/// Validate options into a request. Each phase decides one part of the
/// run from the options and what the phases before it decided; their
/// order is also the order in which problems are reported.
pub fn prepare(opts: &RunOptions, caller: &Caller) -> Result<RunRequest, RequestError> {
    let found = check_image(&opts.image)?;
    let kept = kept_facts(&found, opts, caller.uid);
    check_squashfs(&found, kept.as_ref().map(|(_, r)| r))?;
    let image: &dyn ImageTree = match &kept {
        Some((_, remembering)) => remembering,
        None => found.tree(),
    };
    let meta = match opts.build_stage {
        true => None,
        false => image_meta(&found, kept.as_ref().map(|(_, r)| r), &opts.image)?,
    };
    let config = meta.as_ref().map(|m| &m.config);
    let id_files = IdentityFiles::read(image);
    let (uid_map, gid_map) = id_maps(opts, caller, config, &id_files)?;
    let defaults = DefaultBinds::decide(opts, caller, image)?;
    let from_host = defaults.host_dirs();
    let mut user_binds = check_user_binds(opts, caller, image, &from_host)?;
    // Site policy: the image's location, the user's binds, the mount mode.
    let mount_via = policy::check_run(
        &opts.policy,
        found.path(),
        opts.mount,
        &opts.binds,
        &user_binds,
    )?;
    let mut edits = container_edits(opts, image, &from_host, &defaults.system)?;
    // `-w -b` onto a missing destination: its mount points come from the
    // same skeleton layer (see `mount::plan`).
    edits::into_skeleton(&mut user_binds, &mut edits.skeleton);
    let who = job_identity(caller, &uid_map, &gid_map);
    let mounted = mounted_paths(&from_host, &edits.binds, &user_binds);
    let mut etc = etc_files(image, id_files, &who, defaults.home.as_ref(), &mounted);
    if opts.build_stage {
        etc.generated.clear();
    }
    let edit_env = std::mem::take(&mut edits.env);
    let env = job_env(opts, caller, config, edit_env, &defaults.tmp, &etc.home)?;
    let cwd = working_dir(config, opts.cd.as_ref())?;
    let command = image_config::command(config, &opts.command);
    let root = root_image(&found, mount_via, caller.uid, &uid_map, &gid_map)?;
    if let Some((file, remembering)) = kept
        && remembering.learned()
    {
        file.save(&remembering.into_facts());
    }
    Ok(RunRequest {
        namespaces: ExtraNamespaces {
            net: opts.net_none,
            pid: opts.pid,
            no_user: matches!(root, RootImage::Squashfs { kernel: true, .. }),
        },
        mount: mount_request(opts, root, defaults, edits, user_binds, etc),
        uid_map,
        gid_map,
        env,
        command,
        cwd,
        timings: opts.timings,
        seccomp: opts.seccomp,
        fuse_threads: opts.fuse_threads,
        join_linger: opts.join_linger,
        warm_linger: opts.warm_linger,
        block_cache: opts.block_cache.clone(),
        secret: opts.secret.clone(),
    })
}

/// A squashfs image's facts kept by its earlier runs (see
/// [`crate::run::facts`]), when there is a block store directory and a user
/// secret to keep them with; a directory image is asked directly (its
/// answers are a few `lstat`s).
fn kept_facts<'a>(
    found: &'a Image,
    opts: &RunOptions,
    uid: u32,
) -> Option<(FactsFile, Remembering<'a>)> {
    let Image::Squashfs(sq) = found else {
        return None;
    };
    let (dir, _) = opts.block_cache.as_ref()?;
    let (file, facts) = FactsFile::open(dir, opts.secret.as_ref()?, &sq.identity, uid)?;
    Some((file, Remembering::new(sq, facts)))
}

/// The image's stored config, if it has one.
fn image_meta(
    found: &Image,
    kept: Option<&Remembering<'_>>,
    path: &Path,
) -> Result<Option<ImageMeta>, RequestError> {
    let meta_error = |source| RequestError::ImageConfig {
        path: path.to_path_buf(),
        source,
    };
    match (found, kept) {
        (Image::Directory(dir), _) => ImageMeta::from_dir(dir).map_err(meta_error),
        (Image::Squashfs(_), Some(kept)) => match kept.meta_bytes().map_err(meta_error)? {
            Some(bytes) => ImageMeta::from_json(IMAGE_META_PATH, &bytes)
                .map(Some)
                .map_err(meta_error),
            None => Ok(None),
        },
        (Image::Squashfs(sq), None) => {
            let archive = sq.archive().map_err(|source| RequestError::BadSquashfs {
                path: sq.path.clone(),
                source,
            })?;
            ImageMeta::from_archive(&archive).map_err(meta_error)
        }
    }
}

/// The image's `/etc/passwd` and `/etc/group`, each as its path inside
/// (symlinks resolved) and its text, read once: the image's `User` is
/// looked up in them and the generated files are them with the job's
/// entries. `None` when the image lacks one (a read-only image cannot gain
/// a file); a file that cannot be read counts as empty.
struct IdentityFiles {
    passwd: Option<(PathBuf, String)>,
    group: Option<(PathBuf, String)>,
}

impl IdentityFiles {
    fn read(image: &dyn ImageTree) -> Self {
        let read = |path: &str| {
            let inside = image_file(image, path)?;
            let text = image
                .read(&inside)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            Some((inside, text))
        };
        IdentityFiles {
            passwd: read("/etc/passwd"),
            group: read("/etc/group"),
        }
    }

    fn passwd_text(&self) -> &str {
        self.passwd.as_ref().map_or("", |(_, text)| text)
    }

    fn group_text(&self) -> &str {
        self.group.as_ref().map_or("", |(_, text)| text)
    }
}

/// The job's uid and gid maps: the ids inside are the image's `User`
/// unless `--uid` or `--gid` is given, checked before any namespace (the
/// kernel's answer to an id it cannot map is a bare EINVAL from the
/// uid_map write).
fn id_maps(
    opts: &RunOptions,
    caller: &Caller,
    config: Option<&RunConfig>,
    files: &IdentityFiles,
) -> Result<(IdMap, IdMap), RequestError> {
    let (want_uid, want_gid, from) = match config.and_then(|c| c.user.as_deref()) {
        Some(spec) if !spec.is_empty() && opts.uid.is_none() && opts.gid.is_none() => {
            let (u, g) = image_config::user_ids(spec, files.passwd_text(), files.group_text())?;
            let what = |id| format!("the image's User {spec:?} gives {id}");
            (Some(u), g, Some((what("uid"), what("gid"))))
        }
        _ => (opts.uid, opts.gid, None),
    };
    let (uid_what, gid_what) = from.unwrap_or_else(|| ("--uid".into(), "--gid".into()));
    let want_uid = want_uid
        .map(|id| idmap::check_inside(&uid_what, id))
        .transpose()?;
    let want_gid = want_gid
        .map(|id| idmap::check_inside(&gid_what, id))
        .transpose()?;
    Ok(caller_maps(caller.uid, caller.gid, want_uid, want_gid))
}

/// The host directories every run binds: `/dev`, `/proc` and `/sys`,
/// `/tmp` and, with `--home`, the home. The site's policy treats them as
/// default binds: forbidden paths inside them are masked, not refused.
struct DefaultBinds {
    /// The system directories the image has a mount point for.
    system: Vec<PathBuf>,
    tmp: TmpMount,
    home: Option<HomeMount>,
}

impl DefaultBinds {
    fn decide(
        opts: &RunOptions,
        caller: &Caller,
        image: &dyn ImageTree,
    ) -> Result<Self, RequestError> {
        Ok(DefaultBinds {
            system: ["/dev", "/proc", "/sys"]
                .into_iter()
                .filter(|d| image_has_dir(image, &d[1..]))
                .map(PathBuf::from)
                .collect(),
            tmp: tmp_mount(opts, caller, image),
            home: home_mount(opts, caller, image)?,
        })
    }

    /// The masks of the host's `/dev`, `/proc`, `/sys` (not a fresh proc
    /// or sysfs), `/tmp` and `--home`, each once.
    fn masks(&self, opts: &RunOptions) -> Vec<Mask> {
        let mut binds: Vec<(&Path, &Path)> = self
            .system
            .iter()
            .filter(|d| !(opts.pid && d.as_path() == Path::new("/proc")))
            .filter(|d| !(opts.net_none && d.as_path() == Path::new("/sys")))
            .map(|d| (d.as_path(), d.as_path()))
            .collect();
        if let TmpMount::Host(dir) = &self.tmp {
            binds.push((dir, Path::new("/tmp")));
        }
        if let Some(h) = &self.home {
            binds.push((&h.source, &h.target));
        }
        let mut masks = Vec::new();
        for (src, dst) in binds {
            for mask in masks_for(&opts.policy, src, dst) {
                if !masks.contains(&mask) {
                    masks.push(mask);
                }
            }
        }
        masks
    }

    /// The container's directories that come from the host rather than the
    /// image (`/dev`, `/proc`, `/sys`, `/tmp`, the bound home): a mount point
    /// missing in the image cannot be created under them.
    fn host_dirs(&self) -> Vec<PathBuf> {
        let mut dirs = self.system.clone();
        if !matches!(self.tmp, TmpMount::None) {
            dirs.push(PathBuf::from("/tmp"));
        }
        if let Some(h) = &self.home {
            dirs.push(h.target.clone());
        }
        dirs
    }
}

/// What goes on the container's `/tmp`: nothing when the image has no
/// `/tmp`, a private tmpfs with `--private-tmp`, else the host's `$TMPDIR`
/// (or `/tmp`).
fn tmp_mount(opts: &RunOptions, caller: &Caller, image: &dyn ImageTree) -> TmpMount {
    // A build stage's /tmp is its own: what a RUN leaves there is in the
    // layer, as with any builder.
    if !image_has_dir(image, "tmp") || opts.build_stage {
        return TmpMount::None;
    }
    if opts.private_tmp {
        return TmpMount::Private;
    }
    let host_tmp = env::lookup(&caller.env, "TMPDIR")
        .map(PathBuf::from)
        .and_then(|p| p.canonicalize().ok())
        .filter(|p| p.is_dir())
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    // The host's /tmp is a default bind: when the site forbids it as a
    // source, masking it whole is what --private-tmp does.
    match policy::forbidden_source(&opts.policy, &host_tmp) {
        Some(forbidden) => {
            tracing::info!(
                "host {} is refused by forbidden_bind_sources ({forbidden}): /tmp is a private tmpfs",
                host_tmp.display()
            );
            TmpMount::Private
        }
        None => TmpMount::Host(host_tmp),
    }
}

/// `--home`: the caller's `$HOME` bound at the same path, over a tmpfs on
/// its parent when the image lacks the home itself.
fn home_mount(
    opts: &RunOptions,
    caller: &Caller,
    image: &dyn ImageTree,
) -> Result<Option<HomeMount>, RequestError> {
    if !opts.home {
        return Ok(None);
    }
    let target = env::lookup(&caller.env, "HOME")
        .map(PathBuf::from)
        .ok_or(RequestError::NoHome)?;
    let source = target
        .canonicalize()
        .map_err(|_| RequestError::HomeMissing {
            home: target.clone(),
        })?;
    let target = binds::normalize_absolute(&target).ok_or(RequestError::NoHome)?;
    // --home is a default bind for the site's policy: refused when
    // forbidden itself, forbidden paths inside it masked.
    policy::check_default_bind(&opts.policy, &source, &target)?;
    let rel = target.strip_prefix("/").unwrap_or(&target);
    let tmpfs_parent = if image_has_dir(image, &rel.to_string_lossy()) {
        None
    } else {
        match target.parent() {
            Some(parent)
                if parent != Path::new("/")
                    && image_has_dir(image, &parent.to_string_lossy()[1..]) =>
            {
                Some(parent.to_path_buf())
            }
            _ => return Err(RequestError::HomeTarget { home: target }),
        }
    };
    Ok(Some(HomeMount {
        source,
        target,
        tmpfs_parent,
    }))
}

/// The masks of a default bind of the canonical `src` at `dst`: one per
/// forbidden source below `src` that exists now (a mount needs something
/// to cover; one made later during the job stays visible). A symlink shows
/// nothing by itself, and covering it would follow it at mount time.
fn masks_for(policy: &Policy, src: &Path, dst: &Path) -> Vec<Mask> {
    policy::masked_paths(policy, src, dst)
        .into_iter()
        .filter_map(|(host, inside)| {
            let kind = fs::symlink_metadata(&host).ok()?.file_type();
            if kind.is_symlink() {
                None
            } else if kind.is_dir() {
                Some(Mask::Dir(inside))
            } else {
                Some(Mask::File(inside))
            }
        })
        .collect()
}

/// The user's `-b` binds, parsed and checked against the host and the
/// image (`from_host`: see [`DefaultBinds::host_dirs`]).
fn check_user_binds(
    opts: &RunOptions,
    caller: &Caller,
    image: &dyn ImageTree,
    from_host: &[PathBuf],
) -> Result<Vec<BindMount>, RequestError> {
    let checked = opts
        .binds
        .iter()
        .map(|spec| {
            let parsed = binds::parse_bind(spec)?;
            binds::check_bind(&parsed, &caller.cwd, image, opts.writable, from_host)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(checked)
}

/// Check the site's, hooks' and devices' container edits against the host
/// and the image (`from_host`: see [`DefaultBinds::host_dirs`]).
fn container_edits(
    opts: &RunOptions,
    image: &dyn ImageTree,
    from_host: &[PathBuf],
    system: &[PathBuf],
) -> Result<CheckedEdits, RequestError> {
    if opts.edits.is_empty() {
        return Ok(CheckedEdits::default());
    }
    let host = HostDirs {
        host_dev: system.iter().any(|d| d == Path::new("/dev")),
        dirs: from_host.to_vec(),
    };
    let mut edits = edits::check_edits(&opts.edits, image, &host)?;
    // The site's and hooks' binds are default binds too: masked inside.
    for bind in &mut edits.binds {
        bind.masks = masks_for(&opts.policy, &bind.src, &bind.dst);
    }
    Ok(edits)
}

/// The job's identity: the caller's name and home with the ids inside.
fn job_identity(caller: &Caller, uid_map: &IdMap, gid_map: &IdMap) -> Identity {
    Identity {
        user: caller.user.clone(),
        group: caller.group.clone(),
        uid: uid_map.inside,
        gid: gid_map.inside,
        home: caller.home.clone(),
        shell: PathBuf::from("/bin/sh"),
    }
}

/// Every destination inside the container that a mount covers: the
/// host's directories, then the edits' binds and the user's.
fn mounted_paths<'a>(
    from_host: &'a [PathBuf],
    edit_binds: &'a [BindMount],
    user_binds: &'a [BindMount],
) -> Vec<&'a Path> {
    from_host
        .iter()
        .map(PathBuf::as_path)
        .chain(edit_binds.iter().chain(user_binds).map(|b| b.dst.as_path()))
        .collect()
}

/// What cairn puts into the image's `/etc`, and the job's home.
struct EtcFiles {
    /// The image's passwd and group with the job's entries (path inside,
    /// contents).
    generated: Vec<(PathBuf, Vec<u8>)>,
    /// The host's hosts and resolv.conf (canonical host path, path inside).
    host_files: Vec<(PathBuf, PathBuf)>,
    /// The job's `$HOME` inside.
    home: PathBuf,
}

/// The generated passwd and group and the host's hosts and resolv.conf
/// over the image's own, less those a mount in `mounted` covers (see
/// [`leave_out_covered`]); and the job's home.
fn etc_files(
    image: &dyn ImageTree,
    files: IdentityFiles,
    who: &Identity,
    bound_home: Option<&HomeMount>,
    mounted: &[&Path],
) -> EtcFiles {
    let passwd = identity::passwd_for(files.passwd_text(), who);
    // With --home the bound home is the job's home, whatever id it has
    // inside; otherwise the home of its passwd entry.
    let home = match bound_home {
        Some(h) => h.target.clone(),
        None => identity::home_of(&passwd, who.uid).unwrap_or_else(|| who.home.clone()),
    };
    let mut generated = Vec::new();
    if let Some((path, _)) = files.passwd {
        generated.push((path, passwd.into_bytes()));
    }
    if let Some((path, text)) = files.group {
        generated.push((path, identity::group_for(&text, who).into_bytes()));
    }
    let mut host_files = ["/etc/hosts", "/etc/resolv.conf"]
        .into_iter()
        .filter_map(|f| {
            let inside = image_file(image, f)?;
            let host = Path::new(f).canonicalize().ok().filter(|h| h.is_file())?;
            Some((host, inside))
        })
        .collect::<Vec<_>>();
    leave_out_covered(&mut generated, &mut host_files, mounted, who);
    EtcFiles {
        generated,
        host_files,
        home,
    }
}

/// The mount among `mounts` (container paths) that `path` lies at or
/// under, if any.
fn covered_by<'a>(path: &Path, mounts: &[&'a Path]) -> Option<&'a Path> {
    mounts.iter().copied().find(|m| path.starts_with(m))
}

/// A bind onto /etc (or onto one of the files cairn puts there) wins: the
/// generated passwd/group and the host's hosts/resolv.conf under one of
/// `mounted` are left out. Bound anyway, each would land inside the bound
/// host directory, or fail with a bare ENOENT where it has no such file.
/// Leaving out a generated file is worth a warning: the job's user may
/// have no name then.
fn leave_out_covered(
    generated: &mut Vec<(PathBuf, Vec<u8>)>,
    host_files: &mut Vec<(PathBuf, PathBuf)>,
    mounted: &[&Path],
    who: &Identity,
) {
    generated.retain(|(path, _)| match covered_by(path, mounted) {
        None => true,
        Some(mount) => {
            tracing::warn!(
                "the bind on {} covers {}: the job sees the bound one (if any), without the entry cairn writes for uid {} gid {}",
                mount.display(),
                path.display(),
                who.uid,
                who.gid
            );
            false
        }
    });
    host_files.retain(|(_, inside)| covered_by(inside, mounted).is_none());
}

/// The job's environment: the host's, the image's `Env` over it, then the
/// container edits' operations and the user's options after them, in
/// command-line order (so the user's override the edits').
fn job_env(
    opts: &RunOptions,
    caller: &Caller,
    config: Option<&RunConfig>,
    edit_env: Vec<EnvOp>,
    tmp: &TmpMount,
    home: &Path,
) -> Result<Vec<(OsString, OsString)>, RequestError> {
    let mut ops = edit_env;
    for opt in &opts.env {
        match opt {
            EnvOption::Env(text) => ops.push(env::parse_assignment(text)?),
            EnvOption::EnvFile(path) => {
                let contents = fs::read(path).map_err(|source| RequestError::EnvFile {
                    path: path.clone(),
                    source,
                })?;
                ops.extend(env::parse_env_file(path, &contents)?);
            }
            EnvOption::Unset(glob) => ops.push(env::parse_unset(glob)?),
            EnvOption::Clean => ops.push(EnvOp::Clear),
        }
    }
    // The host's $TMPDIR is the container's /tmp (or a private tmpfs is):
    // the host path means nothing inside, so TMPDIR does not pass through.
    let host_env = caller
        .env
        .iter()
        .filter(|(k, _)| k != "TMPDIR" || matches!(tmp, TmpMount::None))
        .cloned();
    let host_env = image_config::merge_env(host_env, config);
    let mut job_env = env::compose_env(host_env, home, &ops);
    if image_config::path_from_host(config, &ops) {
        env::set_path(&mut job_env, env::reach_image_bins);
    }
    Ok(job_env)
}

/// The job's working directory: `--cd`, else the image's `WorkingDir`,
/// else `/`; absolute either way.
fn working_dir(config: Option<&RunConfig>, cd: Option<&PathBuf>) -> Result<PathBuf, RequestError> {
    match image_config::working_dir(config, cd) {
        Some(dir) if dir.is_absolute() => Ok(dir),
        Some(dir) => Err(RequestError::RelativeCd(dir)),
        None => Ok(PathBuf::from("/")),
    }
}

/// The image as the run mounts it: a squashfs file by the kernel or by
/// FUSE, as [`use_kernel`] decides for the mode the policy left.
fn root_image(
    found: &Image,
    mount_via: MountMode,
    caller_uid: u32,
    uid_map: &IdMap,
    gid_map: &IdMap,
) -> Result<RootImage, RequestError> {
    match found {
        Image::Directory(dir) => Ok(RootImage::Directory(dir.clone())),
        Image::Squashfs(sq) => {
            let identity_maps =
                uid_map.inside == uid_map.outside && gid_map.inside == gid_map.outside;
            let kernel = use_kernel(mount_via, caller_uid == 0, identity_maps)?;
            Ok(RootImage::Squashfs {
                image: sq.clone(),
                kernel,
            })
        }
    }
}

/// The mounts of the run, its image not attached yet.
fn mount_request(
    opts: &RunOptions,
    root: RootImage,
    defaults: DefaultBinds,
    edits: CheckedEdits,
    user_binds: Vec<BindMount>,
    etc: EtcFiles,
) -> MountRequest<RootImage> {
    MountRequest {
        writable_root: opts.build_stage && matches!(root, RootImage::Directory(_)),
        root,
        writable: opts.writable,
        masks: defaults.masks(opts),
        system: defaults.system,
        new_proc: opts.pid,
        new_sys: opts.net_none,
        tmp: defaults.tmp,
        home: defaults.home,
        // The edits' binds first: a user's `-b` on the same path wins.
        binds: edits.binds.into_iter().chain(user_binds).collect(),
        generated: etc.generated,
        host_files: etc.host_files,
        skeleton: edits.skeleton,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squashfs_is_detected_by_magic_not_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("image.bin");
        fs::write(&file, b"hsqs\0\0\0\0").expect("write");
        assert!(matches!(
            check_image(&file).and_then(|found| check_squashfs(&found, None)),
            Err(RequestError::BadSquashfs { .. })
        ));
        let other = dir.path().join("image.sqfs");
        fs::write(&other, b"nope").expect("write");
        assert!(matches!(
            check_image(&other),
            Err(RequestError::NotAnImage { .. })
        ));
        assert!(matches!(
            check_image(&dir.path().join("missing")),
            Err(RequestError::ImageMissing { .. })
        ));
        assert!(check_image(dir.path()).is_ok());
    }

    fn caller(home: &Path, cwd: &Path) -> Caller {
        Caller {
            uid: 1234,
            gid: 5678,
            user: "alice".into(),
            group: "staff".into(),
            home: home.to_path_buf(),
            env: vec![
                ("HOME".into(), home.as_os_str().to_os_string()),
                ("SLURM_JOB_ID".into(), "7".into()),
            ],
            cwd: cwd.to_path_buf(),
        }
    }

    fn image(dir: &Path) -> PathBuf {
        let image = dir.join("img");
        for d in ["dev", "proc", "etc", "tmp", "home", "data"] {
            fs::create_dir_all(image.join(d)).expect("mkdir");
        }
        fs::write(image.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").expect("passwd");
        image.canonicalize().expect("canon")
    }

    #[test]
    fn prepare_gathers_what_the_planner_needs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let image = image(dir.path());
        let home = dir.path().join("home/alice");
        fs::create_dir_all(&home).expect("home");
        let home = home.canonicalize().expect("canon");
        let opts = RunOptions {
            image: image.clone(),
            binds: vec![format!("{}:/data:ro", home.display())],
            env: vec![
                EnvOption::Env("A=1".into()),
                EnvOption::Unset("SLURM_*".into()),
            ],
            uid: Some(0),
            ..RunOptions::default()
        };
        let req = prepare(&opts, &caller(&home, dir.path())).expect("prepare");
        assert!(
            matches!(&req.mount.root, RootImage::Directory(dir) if *dir == image),
            "{:?}",
            req.mount.root
        );
        // No /sys in this image: only /dev and /proc are bound.
        assert_eq!(
            req.mount.system,
            vec![PathBuf::from("/dev"), PathBuf::from("/proc")]
        );
        assert!(matches!(req.mount.tmp, TmpMount::Host(_)));
        assert_eq!(req.mount.binds.len(), 1);
        assert!(req.mount.binds[0].read_only);
        assert_eq!(req.uid_map.line(), "0 1234 1\n");
        assert_eq!(req.gid_map.line(), "5678 5678 1\n");
        // Only the image's /etc/passwd is replaced (it has no /etc/group).
        assert_eq!(req.mount.generated.len(), 1);
        let passwd = String::from_utf8(req.mount.generated[0].1.clone()).expect("utf8");
        // --uid 0: the image's root is the job's entry, nobody is added.
        assert!(
            passwd.contains("nobody") && !passwd.contains("alice"),
            "{passwd}"
        );
        assert_eq!(
            env::lookup(&req.env, "HOME"),
            Some(std::ffi::OsStr::new("/root"))
        );
        assert_eq!(env::lookup(&req.env, "A"), Some(std::ffi::OsStr::new("1")));
        assert_eq!(env::lookup(&req.env, "SLURM_JOB_ID"), None);
        assert_eq!(req.command, vec![OsString::from("/bin/sh")]);
        assert_eq!(req.cwd, PathBuf::from("/"));
    }

    #[test]
    fn home_binding_depends_on_what_the_image_has() {
        let dir = tempfile::tempdir().expect("tempdir");
        let image = image(dir.path());
        let home = dir.path().join("users/alice");
        fs::create_dir_all(&home).expect("home");
        let opts = RunOptions {
            image: image.clone(),
            home: true,
            private_tmp: true,
            ..RunOptions::default()
        };
        let who = caller(&home, dir.path());
        // Neither the home nor its parent in the image: refused.
        let err = prepare(&opts, &who).expect_err("no parent");
        assert!(matches!(err, RequestError::HomeTarget { .. }), "{err:?}");
        // The parent only: a tmpfs goes over it.
        let parent_inside = image.join(
            home.parent()
                .expect("parent")
                .strip_prefix("/")
                .expect("abs"),
        );
        fs::create_dir_all(&parent_inside).expect("mkdir");
        let req = prepare(&opts, &who).expect("prepare");
        assert_eq!(req.mount.tmp, TmpMount::Private);
        let h = req.mount.home.expect("home");
        assert_eq!(h.target, home);
        assert_eq!(h.tmpfs_parent.as_deref(), home.parent());
        assert_eq!(env::lookup(&req.env, "HOME"), Some(home.as_os_str()));
        // The home itself: a plain bind.
        fs::create_dir_all(parent_inside.join("alice")).expect("mkdir");
        let req = prepare(&opts, &who).expect("prepare");
        assert_eq!(req.mount.home.expect("home").tmpfs_parent, None);
    }

    #[test]
    fn container_edits_come_before_the_users_options() {
        use crate::mount::plan::SkeletonEntry;
        use crate::run::edits::{ContainerEdits, EditBind, EnvEdit};
        let dir = tempfile::tempdir().expect("tempdir");
        let image = image(dir.path());
        let lib = dir.path().join("lib");
        fs::create_dir(&lib).expect("mkdir");
        let lib = lib.canonicalize().expect("canon");
        let edit_bind = |dst: &str| EditBind {
            src: lib.clone(),
            dst: dst.into(),
            read_only: true,
        };
        let opts = RunOptions {
            image: image.clone(),
            binds: vec![format!("{}:/data", lib.display())],
            env: vec![EnvOption::Env("GPU=user".into())],
            edits: vec![NamedEdits {
                origin: "hook mpi".into(),
                edits: ContainerEdits {
                    binds: vec![edit_bind("/opt/mpi/lib"), edit_bind("/data")],
                    env: vec![
                        EnvEdit::Set("GPU".into(), "site".into()),
                        EnvEdit::Prepend("LD_LIBRARY_PATH".into(), "/opt/mpi/lib".into()),
                    ],
                    devices: vec![],
                },
            }],
            ..RunOptions::default()
        };
        let req = prepare(&opts, &caller(dir.path(), dir.path())).expect("prepare");
        let dsts: Vec<_> = req.mount.binds.iter().map(|b| b.dst.clone()).collect();
        // The edits' binds first, the user's -b last (it wins on /data).
        assert_eq!(
            dsts,
            vec![
                PathBuf::from("/opt/mpi/lib"),
                PathBuf::from("/data"),
                PathBuf::from("/data")
            ]
        );
        assert_eq!(
            req.mount.skeleton,
            vec![
                SkeletonEntry::Dir("/opt".into()),
                SkeletonEntry::Dir("/opt/mpi".into()),
                SkeletonEntry::Dir("/opt/mpi/lib".into())
            ]
        );
        assert_eq!(
            env::lookup(&req.env, "GPU"),
            Some(std::ffi::OsStr::new("user"))
        );
        assert_eq!(
            env::lookup(&req.env, "LD_LIBRARY_PATH"),
            Some(std::ffi::OsStr::new("/opt/mpi/lib"))
        );
        // A missing source names the origin.
        let mut bad = opts.clone();
        bad.edits[0].edits.binds[0].src = dir.path().join("nope");
        let err = prepare(&bad, &caller(dir.path(), dir.path())).expect_err("missing");
        assert!(
            err.to_string().starts_with("hook mpi: bind source "),
            "{err}"
        );
        // Without edits nothing changes: no skeleton, no overlay.
        let plain = RunOptions {
            image,
            ..RunOptions::default()
        };
        let req = prepare(&plain, &caller(dir.path(), dir.path())).expect("prepare");
        assert!(req.mount.skeleton.is_empty());
    }

    #[test]
    fn home_is_a_bind_for_the_policy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let image = image(dir.path());
        let home = dir.path().join("home/alice");
        fs::create_dir_all(&home).expect("home");
        let home = home.canonicalize().expect("canon");
        let opts = RunOptions {
            image,
            home: true,
            policy: Policy {
                forbidden_bind_sources: vec![home.parent().expect("parent").display().to_string()],
                ..Policy::default()
            },
            ..RunOptions::default()
        };
        let err = prepare(&opts, &caller(&home, dir.path())).expect_err("forbidden home");
        assert!(matches!(err, RequestError::Policy(_)), "{err:?}");
    }

    #[test]
    fn a_bind_over_etc_wins_over_the_generated_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let image = image(dir.path());
        fs::write(image.join("etc/group"), "root:x:0:\n").expect("group");
        fs::write(image.join("etc/hosts"), "").expect("hosts");
        std::os::unix::fs::symlink("/etc", image.join("conf")).expect("ln");
        let host_etc = dir.path().join("host-etc");
        fs::create_dir(&host_etc).expect("mkdir");
        fs::write(host_etc.join("passwd"), "x").expect("passwd");
        let with_binds = |binds: Vec<String>| RunOptions {
            image: image.clone(),
            binds,
            ..RunOptions::default()
        };
        let who = caller(dir.path(), dir.path());
        let plain = prepare(&with_binds(vec![]), &who).expect("plain");
        assert_eq!(plain.mount.generated.len(), 2);
        for dst in ["/etc", "/conf"] {
            let spec = format!("{}:{dst}", host_etc.display());
            let req = prepare(&with_binds(vec![spec]), &who).expect(dst);
            assert!(req.mount.generated.is_empty(), "{dst}");
            assert!(
                req.mount
                    .host_files
                    .iter()
                    .all(|(_, inside)| !inside.starts_with("/etc")),
                "{dst}"
            );
            assert_eq!(req.mount.binds[0].dst, PathBuf::from("/etc"));
        }
        // A bind onto the file itself: only that one is left out.
        let spec = format!("{}:/etc/passwd", host_etc.join("passwd").display());
        let req = prepare(&with_binds(vec![spec]), &who).expect("file");
        let paths: Vec<&Path> = req
            .mount
            .generated
            .iter()
            .map(|(p, _)| p.as_path())
            .collect();
        assert_eq!(paths, vec![Path::new("/etc/group")]);
    }

    #[test]
    fn unmappable_ids_are_refused_before_any_namespace() {
        let dir = tempfile::tempdir().expect("tempdir");
        let image = image(dir.path());
        for (uid, gid, option) in [
            (Some(u32::MAX), None, "--uid"),
            (None, Some(u32::MAX), "--gid"),
        ] {
            let opts = RunOptions {
                image: image.clone(),
                uid,
                gid,
                ..RunOptions::default()
            };
            let err = prepare(&opts, &caller(dir.path(), dir.path())).expect_err(option);
            assert!(matches!(err, RequestError::IdMap(_)), "{err:?}");
            assert!(
                err.to_string()
                    .starts_with(&format!("{option} 4294967295: ")),
                "{err}"
            );
        }
    }

    #[test]
    fn forbidden_paths_inside_default_binds_are_masked_and_refused_in_user_binds() {
        use crate::run::edits::{ContainerEdits, EditBind};
        let dir = tempfile::tempdir().expect("tempdir");
        let image = image(dir.path());
        let base = dir.path().canonicalize().expect("canon");
        let (tmp, home, site) = (base.join("tmp"), base.join("home"), base.join("site"));
        for d in [&tmp, &home.join(".ssh"), &site.join("keys")] {
            fs::create_dir_all(d).expect("mkdir");
        }
        fs::write(tmp.join("x"), "secret").expect("write");
        std::os::unix::fs::symlink("/etc", tmp.join("link")).expect("ln");
        fs::create_dir_all(image.join(home.strip_prefix("/").expect("abs"))).expect("mkdir");
        let forbidden = [
            tmp.join("x"),
            tmp.join("link"),
            tmp.join("gone"),
            home.join(".ssh"),
            site.join("keys"),
        ];
        let mut who = caller(&home, &base);
        who.env.push(("TMPDIR".into(), tmp.clone().into()));
        let opts = RunOptions {
            image: image.clone(),
            home: true,
            edits: vec![NamedEdits {
                origin: "hook site".into(),
                edits: ContainerEdits {
                    binds: vec![EditBind {
                        src: site.clone(),
                        dst: "/data".into(),
                        read_only: true,
                    }],
                    ..ContainerEdits::default()
                },
            }],
            policy: Policy {
                forbidden_bind_sources: forbidden.iter().map(|p| p.display().to_string()).collect(),
                ..Policy::default()
            },
            ..RunOptions::default()
        };
        let req = prepare(&opts, &who).expect("prepare");
        assert_eq!(req.mount.tmp, TmpMount::Host(tmp.clone()));
        // The symlink and the missing path get no mask.
        assert_eq!(
            req.mount.masks,
            vec![Mask::File("/tmp/x".into()), Mask::Dir(home.join(".ssh"))]
        );
        assert_eq!(
            req.mount.binds[0].masks,
            vec![Mask::Dir("/data/keys".into())]
        );
        // The same source as a user's -b is refused, naming what it holds.
        let user = RunOptions {
            binds: vec![format!("{}:/data", site.display())],
            edits: vec![],
            ..opts.clone()
        };
        let err = prepare(&user, &who).expect_err("-b over a forbidden path");
        let msg = err.to_string();
        assert!(
            msg.contains("forbidden_bind_sources")
                && msg.contains(&site.join("keys").display().to_string()),
            "{msg}"
        );
        // A forbidden $TMPDIR: /tmp becomes private.
        let mut private = opts.clone();
        private.policy.forbidden_bind_sources = vec![tmp.display().to_string()];
        let req = prepare(&private, &who).expect("prepare");
        assert_eq!(req.mount.tmp, TmpMount::Private);
        // The host's /proc is a default bind too; --pid's fresh one shows
        // nothing of the host's: no mask there.
        let mut proc = opts.clone();
        proc.policy.forbidden_bind_sources = vec!["/proc/sys".into()];
        proc.home = false;
        let req = prepare(&proc, &who).expect("prepare");
        assert_eq!(req.mount.masks, vec![Mask::Dir("/proc/sys".into())]);
        proc.pid = true;
        let req = prepare(&proc, &who).expect("prepare");
        assert!(req.mount.masks.is_empty(), "{:?}", req.mount.masks);
    }

    #[test]
    fn relative_cd_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = RunOptions {
            image: image(dir.path()),
            cd: Some("etc".into()),
            ..RunOptions::default()
        };
        let err = prepare(&opts, &caller(dir.path(), dir.path())).expect_err("relative");
        assert!(matches!(err, RequestError::RelativeCd(_)));
    }

    #[test]
    fn kernel_mounts_only_for_root_with_identity_maps() {
        assert!(!use_kernel(MountMode::Fuse, true, true).expect("fuse"));
        assert!(use_kernel(MountMode::Auto, true, true).expect("auto root"));
        assert!(!use_kernel(MountMode::Auto, false, true).expect("auto user"));
        assert!(!use_kernel(MountMode::Auto, true, false).expect("auto root --uid"));
        assert!(use_kernel(MountMode::Kernel, true, true).expect("kernel root"));
        let user = use_kernel(MountMode::Kernel, false, true).expect_err("user");
        assert!(user.to_string().contains("only root"), "{user}");
        let mapped = use_kernel(MountMode::Kernel, true, false).expect_err("mapped");
        assert!(mapped.to_string().contains("--uid/--gid"), "{mapped}");
    }
}
