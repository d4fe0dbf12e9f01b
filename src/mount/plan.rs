//! The mount plan (pure): a run's mounts as an ordered `Vec<MountStep>`.
//!
//! The sequence, inside a fresh user + mount namespace:
//! 1. make every mount a slave, so nothing we do propagates to the host;
//! 2. mount a staging tmpfs on the host's `/tmp` and `pivot_root` into it,
//!    the host tree landing at `/oldroot`: from then on no later mount can
//!    hide a host path we still need (an image or a bind source under
//!    `/tmp`), and the generated files and overlay layers live in memory
//!    that only this namespace sees;
//! 3. mount the image root at `/newroot` (a directory: recursive bind; a
//!    squashfs file: a kernel or FUSE mount, same step), or for
//!    `--writable-tmpfs` at `/lower` with an overlay on `/newroot`; or, when
//!    container edits bind onto paths a read-only image lacks, at `/lower`
//!    with a read-only overlay `lowerdir=/skeleton:/lower` on `/newroot`,
//!    where `/skeleton` (in the staging tmpfs) holds just the missing mount
//!    points (no upper layer: nothing is writable, the image is untouched);
//! 4. bind `/dev`, `/proc`, `/sys`, `/tmp`, home, user binds, the generated
//!    passwd/group and the host's hosts/resolv.conf onto it; each bind that
//!    shows a host path the site forbids gets it masked right after (an
//!    empty read-only tmpfs on a directory, an empty read-only file bound
//!    on anything else);
//! 5. remount the image root read-only, nosuid, nodev;
//! 6. `pivot_root` into `/newroot` and detach the old root.

use std::path::{Path, PathBuf};

/// Where the staging tmpfs is mounted on the host side (bubblewrap's choice
/// too: every host has a `/tmp` directory).
pub const STAGE_MOUNTPOINT: &str = "/tmp";
/// The host's root, after the first pivot_root into the staging tmpfs.
pub const OLD_ROOT: &str = "/oldroot";
/// The container's root while it is assembled.
pub const NEW_ROOT: &str = "/newroot";
/// The image root below the overlay, for `--writable-tmpfs`.
pub const LOWER: &str = "/lower";
/// Generated files (passwd, group) in the staging tmpfs.
pub const FILES: &str = "/files";
/// The mount points a read-only image lacks, in the staging tmpfs: the upper
/// of the two lower layers of the read-only overlay.
pub const SKELETON: &str = "/skeleton";

/// Where the warm base holds the image root: on the host's `/tmp` (see
/// [`warm_base`]).
pub const WARM_ROOT: &str = "/tmp";

/// The empty file bound over a masked non-directory (in the staging tmpfs).
pub const MASK_FILE: &str = "/files/masked";

/// A host path the site forbids, hidden where a bind shows it (a path
/// inside the container): nothing of it is readable there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mask {
    /// A directory: an empty read-only tmpfs over it.
    Dir(PathBuf),
    /// A file, socket or device: an empty read-only file bound over it.
    File(PathBuf),
}

/// A mount point that a read-only image lacks, created in the skeleton
/// layer (its parent directories too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkeletonEntry {
    /// A directory (the mount point of a directory bind).
    Dir(PathBuf),
    /// An empty file (the mount point of a file or device-node bind).
    File(PathBuf),
}

/// A bind to mount, as the run produces it after checking it against the
/// host and the image: `src` absolute and canonical, `dst` the path inside
/// the image after resolving the image's own symlinks (so the mount lands
/// where the job will look).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BindMount {
    pub src: PathBuf,
    pub dst: PathBuf,
    pub read_only: bool,
    /// `--writable-tmpfs` only: directories to create (in order, inside the
    /// image) before the bind, because the destination is missing.
    pub create_dirs: Vec<PathBuf>,
    /// `--writable-tmpfs` only: an empty file to create as the mount point of
    /// a file bind.
    pub create_file: Option<PathBuf>,
    /// Forbidden host paths below `src`, masked after the bind (site and
    /// hook binds only: a user's `-b` like that is refused).
    pub masks: Vec<Mask>,
}

/// What provides the image's root tree: a directory, or a squashfs file
/// mounted by the kernel (on a loop device) or by cairn's FUSE server, each
/// one variant here and one match arm in the executor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootSource {
    /// A rootfs directory on the host (absolute, canonical).
    Directory(PathBuf),
    /// A squashfs file on a loop device (host path), mounted by the kernel.
    Kernel { image: PathBuf, device: PathBuf },
    /// A squashfs file served by cairn's FUSE server on the `/dev/fuse`
    /// descriptor `fd`; `uid`/`gid` are the mounter's ids in its namespace.
    Fuse {
        image: PathBuf,
        fd: i32,
        uid: u32,
        gid: u32,
    },
    /// A squashfs file already mounted at `root` (a host path,
    /// [`WARM_ROOT`]) in the warm base this run's mount namespace was
    /// copied from (see [`warm_base`] and ns::warm): bound from there, on
    /// the same superblock, then detached there.
    Warm { image: PathBuf, root: PathBuf },
}

/// What goes on the container's `/tmp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TmpMount {
    /// The image has no `/tmp`: nothing.
    None,
    /// Bind this host directory (`$TMPDIR` or `/tmp`).
    Host(PathBuf),
    /// `--private-tmp`: a fresh tmpfs.
    Private,
}

/// `--home`: bind the host home at the same path inside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HomeMount {
    pub source: PathBuf,
    pub target: PathBuf,
    /// The image lacks `target` but has this parent directory: a tmpfs goes
    /// over the parent and the home directory is created in it.
    pub tmpfs_parent: Option<PathBuf>,
}

/// Everything the planner needs, as plain data gathered beforehand.
///
/// `Root` is what provides the root tree. The planner takes a
/// [`RootSource`], which names an attached image only (a loop device, a
/// FUSE connection); a caller that gathers the rest before it attaches a
/// squashfs image keeps its own choice of image there, and
/// [`MountRequest::with_root`] swaps in the `RootSource` once attached. So
/// an image that is not attached cannot reach the planner or the executor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountRequest<Root = RootSource> {
    pub root: Root,
    pub writable: bool,
    /// A directory image written in place (a `cairn build` stage): the root
    /// is not remounted read-only, so the job's writes land in the tree.
    pub writable_root: bool,
    /// Host directories bound recursively at the same path (`/dev`, `/proc`,
    /// `/sys`), the ones the image has a mount point for.
    pub system: Vec<PathBuf>,
    /// `--pid`: a fresh procfs for the new PID namespace instead of `/proc`.
    pub new_proc: bool,
    /// `--net none`: a fresh sysfs showing the new network namespace.
    pub new_sys: bool,
    pub tmp: TmpMount,
    pub home: Option<HomeMount>,
    pub binds: Vec<BindMount>,
    /// Generated files (path inside, contents) bound over the image's own.
    pub generated: Vec<(PathBuf, Vec<u8>)>,
    /// Host files (canonical host path, path inside) bound over the image's
    /// (`/etc/hosts`, `/etc/resolv.conf`); canonical because a host symlink
    /// such as systemd's resolv.conf would not resolve below `/oldroot`.
    pub host_files: Vec<(PathBuf, PathBuf)>,
    /// Mount points the read-only image lacks (paths inside, symlinks
    /// resolved); non-empty only without `writable`, where the overlay's
    /// upper layer creates them instead.
    pub skeleton: Vec<SkeletonEntry>,
    /// Forbidden host paths that `system`, `tmp` or `home` show, masked
    /// after those are bound (a bind's own are in [`BindMount::masks`]).
    pub masks: Vec<Mask>,
}

impl<Root> MountRequest<Root> {
    /// The same request with `root` as its root tree.
    pub fn with_root<New>(self, root: New) -> MountRequest<New> {
        let MountRequest {
            root: _,
            writable,
            writable_root,
            system,
            new_proc,
            new_sys,
            tmp,
            home,
            binds,
            generated,
            host_files,
            skeleton,
            masks,
        } = self;
        MountRequest {
            root,
            writable,
            writable_root,
            system,
            new_proc,
            new_sys,
            tmp,
            home,
            binds,
            generated,
            host_files,
            skeleton,
            masks,
        }
    }
}

/// Why a tmpfs is mounted (for logs and errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TmpfsPurpose {
    Staging,
    PrivateTmp,
    HomeParent,
    /// Empty and read-only over a forbidden host directory.
    Mask,
}

/// One step of the plan; the executor maps each to its syscalls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountStep {
    /// `mount --make-rslave /`: no mount event reaches the host.
    MakeRslave {
        target: PathBuf,
    },
    Tmpfs {
        target: PathBuf,
        options: String,
        purpose: TmpfsPurpose,
    },
    MakeDir {
        path: PathBuf,
        mode: u32,
    },
    WriteFile {
        path: PathBuf,
        contents: Vec<u8>,
    },
    /// pivot_root into the staging tmpfs, the old root at `put_old`.
    PivotToStage {
        new_root: PathBuf,
        put_old: PathBuf,
    },
    /// The image's root tree at `target`.
    Root {
        source: RootSource,
        target: PathBuf,
    },
    /// A writable overlay; `lowers` first = topmost (the skeleton, when
    /// bind mount points are missing, above the image).
    Overlay {
        lowers: Vec<PathBuf>,
        upper: PathBuf,
        work: PathBuf,
        target: PathBuf,
    },
    /// A read-only overlay of the lower layers (first = topmost), no upper.
    ReadOnlyOverlay {
        lowers: Vec<PathBuf>,
        target: PathBuf,
    },
    Bind {
        source: PathBuf,
        target: PathBuf,
        recursive: bool,
    },
    Proc {
        target: PathBuf,
    },
    Sysfs {
        target: PathBuf,
    },
    /// Remount a bind read-only, keeping the flags the kernel locked; with
    /// `harden` also nosuid and nodev (the image root).
    RemountReadOnly {
        target: PathBuf,
        harden: bool,
    },
    /// umount2(MNT_DETACH): the warm base's image root, once bound from
    /// there, uncovering the host's `/tmp` below.
    Detach {
        target: PathBuf,
    },
    /// chdir + pivot_root(".", ".") + umount2(".", MNT_DETACH).
    EnterRoot {
        new_root: PathBuf,
    },
}

/// `base` + absolute `path`.
pub fn under(base: &str, path: &Path) -> PathBuf {
    Path::new(base).join(path.strip_prefix("/").unwrap_or(path))
}

/// The steps that build the skeleton layer: every entry with its parent
/// directories, each made once, parents first. The parents shadow the
/// image's directories' owner and mode in the merged view (overlayfs takes a
/// merged directory's attributes from its topmost layer), so they are 0755
/// like the directories images normally have there.
pub fn skeleton_steps(entries: &[SkeletonEntry]) -> Vec<MountStep> {
    let mut made = std::collections::BTreeSet::new();
    let mut steps = Vec::new();
    let mut make_dir = |path: &Path, steps: &mut Vec<MountStep>| {
        if made.insert(path.to_path_buf()) {
            steps.push(MountStep::MakeDir {
                path: under(SKELETON, path),
                mode: 0o755,
            });
        }
    };
    for entry in entries {
        let (path, is_file) = match entry {
            SkeletonEntry::Dir(p) => (p, false),
            SkeletonEntry::File(p) => (p, true),
        };
        let mut parents: Vec<&Path> = path
            .ancestors()
            .skip(1)
            .filter(|a| *a != Path::new("/") && !a.as_os_str().is_empty())
            .collect();
        parents.reverse();
        for parent in parents {
            make_dir(parent, &mut steps);
        }
        if is_file {
            steps.push(MountStep::WriteFile {
                path: under(SKELETON, path),
                contents: Vec::new(),
            });
        } else {
            make_dir(path, &mut steps);
        }
    }
    steps
}

/// The steps that mask forbidden host paths; the empty file that masks
/// non-directories is written once, at the first one.
#[derive(Default)]
struct Masking {
    file_written: bool,
}

impl Masking {
    fn push(&mut self, mask: &Mask, steps: &mut Vec<MountStep>) {
        let target = match mask {
            Mask::Dir(path) => {
                let target = under(NEW_ROOT, path);
                steps.push(MountStep::Tmpfs {
                    target: target.clone(),
                    options: "mode=0755".into(),
                    purpose: TmpfsPurpose::Mask,
                });
                target
            }
            Mask::File(path) => {
                if !self.file_written {
                    steps.push(MountStep::WriteFile {
                        path: MASK_FILE.into(),
                        contents: Vec::new(),
                    });
                    self.file_written = true;
                }
                let target = under(NEW_ROOT, path);
                steps.push(MountStep::Bind {
                    source: MASK_FILE.into(),
                    target: target.clone(),
                    recursive: false,
                });
                target
            }
        };
        // Read-only: a job must not plant files where the site said the
        // host's path is not to be seen.
        steps.push(MountStep::RemountReadOnly {
            target,
            harden: false,
        });
    }
}

/// The warm base (pure): what a run that leaves its mount warm mounts in
/// the namespace the helper keeps, before it copies that namespace for its
/// own plan. Nothing but the image root, on the host's `/tmp` (every host
/// has one; each run's stage covers it and its root step detaches it, so no
/// run sees it there). Host paths are as they are: the base has no stage.
///
/// A per-run plan whose root is [`RootSource::Warm`] binds the root from
/// there: after its own stage's pivot the image is at `/oldroot/tmp`,
/// uncovered when the stage moved to `/`.
pub fn warm_base(source: RootSource) -> Vec<MountStep> {
    vec![
        MountStep::MakeRslave { target: "/".into() },
        MountStep::Root {
            source,
            target: WARM_ROOT.into(),
        },
    ]
}

/// Turn a request into the ordered mount steps.
pub fn plan(req: &MountRequest) -> Vec<MountStep> {
    let mut planner = Planner {
        req,
        steps: Vec::new(),
        masking: Masking::default(),
    };
    planner.stage();
    planner.root();
    planner.system_dirs();
    planner.tmp();
    planner.home();
    planner.masks_and_binds();
    planner.files();
    planner.seal();
    planner.steps
}

/// A host path as seen from the staging root (the host's root is moved to
/// [`OLD_ROOT`]).
fn host(path: &Path) -> PathBuf {
    under(OLD_ROOT, path)
}

/// A path of the job's tree as seen from the staging root.
fn inside(path: &Path) -> PathBuf {
    under(NEW_ROOT, path)
}

/// The steps of one request, appended phase by phase in the order the
/// executor must run them.
struct Planner<'a> {
    req: &'a MountRequest,
    steps: Vec<MountStep>,
    masking: Masking,
}

impl Planner<'_> {
    /// Whether the image needs a skeleton layer of missing mount points.
    fn skeleton(&self) -> bool {
        !self.req.skeleton.is_empty()
    }

    /// A private tmpfs stage with the directories the later steps mount
    /// on, made the root; the host's root moves to [`OLD_ROOT`].
    fn stage(&mut self) {
        let stage = Path::new(STAGE_MOUNTPOINT);
        self.steps.extend([
            MountStep::MakeRslave { target: "/".into() },
            MountStep::Tmpfs {
                target: stage.into(),
                options: "mode=0755".into(),
                purpose: TmpfsPurpose::Staging,
            },
        ]);
        let mut dirs = vec![OLD_ROOT, NEW_ROOT, FILES];
        if self.req.writable {
            dirs.extend([LOWER, "/upper", "/work"]);
        } else if self.skeleton() {
            dirs.push(LOWER);
        }
        if self.skeleton() {
            dirs.push(SKELETON);
        }
        for d in dirs {
            self.steps.push(MountStep::MakeDir {
                path: under(STAGE_MOUNTPOINT, Path::new(d)),
                mode: 0o755,
            });
        }
        self.steps.push(MountStep::PivotToStage {
            new_root: stage.into(),
            put_old: under(STAGE_MOUNTPOINT, Path::new(OLD_ROOT)),
        });
    }

    /// The image at [`NEW_ROOT`]: directly, or as the lower layer of an
    /// overlay (writable, or read-only with the skeleton above it).
    fn root(&mut self) {
        let source = match &self.req.root {
            RootSource::Directory(dir) => RootSource::Directory(host(dir)),
            RootSource::Kernel { image, device } => RootSource::Kernel {
                image: image.clone(),
                device: host(device),
            },
            fuse @ RootSource::Fuse { .. } => fuse.clone(),
            RootSource::Warm { image, root } => RootSource::Warm {
                image: image.clone(),
                root: host(root),
            },
        };
        let warm_root = match &source {
            RootSource::Warm { root, .. } => Some(root.clone()),
            _ => None,
        };
        let new_root = PathBuf::from(NEW_ROOT);
        if !self.req.writable && !self.skeleton() {
            self.steps.push(MountStep::Root {
                source,
                target: new_root,
            });
            self.detach_warm_base(warm_root);
            return;
        }
        // Missing mount points come from the skeleton layer, above the
        // image, also under a writable overlay: creating them in the upper
        // layer would need write permission on the image's directories,
        // which an ordinary user mapped to itself lacks in a root-owned
        // image.
        let mut lowers = Vec::new();
        if self.skeleton() {
            self.steps.extend(skeleton_steps(&self.req.skeleton));
            lowers.push(PathBuf::from(SKELETON));
        }
        lowers.push(PathBuf::from(LOWER));
        self.steps.push(MountStep::Root {
            source,
            target: LOWER.into(),
        });
        self.detach_warm_base(warm_root);
        self.steps.push(if self.req.writable {
            MountStep::Overlay {
                lowers,
                upper: "/upper".into(),
                work: "/work".into(),
                target: new_root,
            }
        } else {
            MountStep::ReadOnlyOverlay {
                lowers,
                target: new_root,
            }
        });
    }

    /// A warm root is bound from the base's image mount, which covers the
    /// host's `/tmp`: detached right after, before anything binds from there.
    fn detach_warm_base(&mut self, warm_root: Option<PathBuf>) {
        if let Some(target) = warm_root {
            self.steps.push(MountStep::Detach { target });
        }
    }

    /// /dev, /proc, /sys…: the host's, or a new proc/sysfs.
    fn system_dirs(&mut self) {
        for dir in &self.req.system {
            let target = inside(dir);
            self.steps
                .push(if self.req.new_proc && dir == Path::new("/proc") {
                    MountStep::Proc { target }
                } else if self.req.new_sys && dir == Path::new("/sys") {
                    MountStep::Sysfs { target }
                } else {
                    MountStep::Bind {
                        source: host(dir),
                        target,
                        recursive: true,
                    }
                });
        }
    }

    fn tmp(&mut self) {
        match &self.req.tmp {
            TmpMount::None => {}
            TmpMount::Host(dir) => self.steps.push(MountStep::Bind {
                source: host(dir),
                target: inside(Path::new("/tmp")),
                recursive: true,
            }),
            TmpMount::Private => self.steps.push(MountStep::Tmpfs {
                target: inside(Path::new("/tmp")),
                options: "mode=1777".into(),
                purpose: TmpfsPurpose::PrivateTmp,
            }),
        }
    }

    /// The home directory, on a tmpfs parent when the image lacks one.
    fn home(&mut self) {
        let Some(home) = &self.req.home else {
            return;
        };
        if let Some(parent) = &home.tmpfs_parent {
            self.steps.push(MountStep::Tmpfs {
                target: inside(parent),
                options: "mode=0755".into(),
                purpose: TmpfsPurpose::HomeParent,
            });
            self.steps.push(MountStep::MakeDir {
                path: inside(&home.target),
                mode: 0o755,
            });
        }
        self.steps.push(MountStep::Bind {
            source: host(&home.source),
            target: inside(&home.target),
            recursive: true,
        });
    }

    /// The request's masks, then each bind (its mount points created,
    /// read-only if asked) followed by the masks below it.
    fn masks_and_binds(&mut self) {
        for mask in &self.req.masks {
            self.masking.push(mask, &mut self.steps);
        }
        for bind in &self.req.binds {
            for dir in &bind.create_dirs {
                self.steps.push(MountStep::MakeDir {
                    path: inside(dir),
                    mode: 0o755,
                });
            }
            if let Some(file) = &bind.create_file {
                self.steps.push(MountStep::WriteFile {
                    path: inside(file),
                    contents: Vec::new(),
                });
            }
            let target = inside(&bind.dst);
            self.steps.push(MountStep::Bind {
                source: host(&bind.src),
                target: target.clone(),
                recursive: true,
            });
            if bind.read_only {
                self.steps.push(MountStep::RemountReadOnly {
                    target,
                    harden: false,
                });
            }
            for mask in &bind.masks {
                self.masking.push(mask, &mut self.steps);
            }
        }
    }

    /// Generated files (staged under [`FILES`]) and host files, bound over
    /// their paths.
    fn files(&mut self) {
        for (path, contents) in &self.req.generated {
            let name = path.file_name().map(PathBuf::from).unwrap_or_default();
            let staged = Path::new(FILES).join(name);
            self.steps.push(MountStep::WriteFile {
                path: staged.clone(),
                contents: contents.clone(),
            });
            self.steps.push(MountStep::Bind {
                source: staged,
                target: inside(path),
                recursive: false,
            });
        }
        for (file, dst) in &self.req.host_files {
            self.steps.push(MountStep::Bind {
                source: host(file),
                target: inside(dst),
                recursive: false,
            });
            // Read-only: a job run by root must not rewrite the host's file.
            self.steps.push(MountStep::RemountReadOnly {
                target: inside(dst),
                harden: false,
            });
        }
    }

    /// A read-only root stays read-only (and nosuid, nodev), then the job's
    /// tree becomes the root.
    fn seal(&mut self) {
        let new_root = PathBuf::from(NEW_ROOT);
        if !self.req.writable && !self.req.writable_root {
            self.steps.push(MountStep::RemountReadOnly {
                target: new_root.clone(),
                harden: true,
            });
        }
        self.steps.push(MountStep::EnterRoot { new_root });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn basic() -> MountRequest {
        MountRequest {
            root: RootSource::Directory("/images/alpine".into()),
            writable: false,
            writable_root: false,
            system: vec!["/dev".into(), "/proc".into(), "/sys".into()],
            new_proc: false,
            new_sys: false,
            tmp: TmpMount::Host("/tmp".into()),
            home: None,
            binds: vec![],
            generated: vec![("/etc/passwd".into(), b"root:x:0:0::/:/bin/sh\n".to_vec())],
            host_files: vec![("/etc/hosts".into(), "/etc/hosts".into())],
            skeleton: vec![],
            masks: vec![],
        }
    }

    fn bind(source: &str, target: &str, recursive: bool) -> MountStep {
        MountStep::Bind {
            source: source.into(),
            target: target.into(),
            recursive,
        }
    }

    #[test]
    fn a_warm_root_is_bound_from_the_base_which_is_then_detached() {
        let image = PathBuf::from("/data/app.sqfs");
        let mut req = basic();
        req.root = RootSource::Warm {
            image: image.clone(),
            root: WARM_ROOT.into(),
        };
        let steps = plan(&req);
        let root = steps
            .iter()
            .position(|s| matches!(s, MountStep::Root { .. }))
            .expect("a root step");
        assert_eq!(
            steps[root],
            MountStep::Root {
                source: RootSource::Warm {
                    image: image.clone(),
                    root: "/oldroot/tmp".into(),
                },
                target: NEW_ROOT.into(),
            }
        );
        // Right after the root, before the first bind from the host (the
        // host's /tmp is under the base's image mount until then).
        assert_eq!(
            steps[root + 1],
            MountStep::Detach {
                target: "/oldroot/tmp".into()
            }
        );
        let first_host_bind = steps
            .iter()
            .position(
                |s| matches!(s, MountStep::Bind { source, .. } if source.starts_with(OLD_ROOT)),
            )
            .expect("a host bind");
        assert!(first_host_bind > root + 1);
        // The rest is a directory image's plan, step for step.
        let mut dir = basic();
        dir.root = RootSource::Directory("/images/alpine".into());
        let mut dir_steps = plan(&dir);
        dir_steps.remove(root);
        let mut warm_steps = steps.clone();
        warm_steps.drain(root..root + 2);
        assert_eq!(warm_steps, dir_steps);

        // Under an overlay: the image at the lower layer, detached after it.
        req.writable = true;
        let steps = plan(&req);
        let root = steps
            .iter()
            .position(|s| matches!(s, MountStep::Root { .. }))
            .expect("a root step");
        assert!(
            matches!(&steps[root], MountStep::Root { target, .. } if target == Path::new(LOWER))
        );
        assert!(matches!(&steps[root + 1], MountStep::Detach { .. }));
        assert!(matches!(&steps[root + 2], MountStep::Overlay { .. }));
        // Only a warm root detaches anything.
        assert!(
            !plan(&basic())
                .iter()
                .any(|s| matches!(s, MountStep::Detach { .. }))
        );
    }

    #[test]
    fn the_warm_base_holds_only_the_image() {
        let source = RootSource::Fuse {
            image: "/data/app.sqfs".into(),
            fd: 7,
            uid: 0,
            gid: 0,
        };
        assert_eq!(
            warm_base(source.clone()),
            vec![
                MountStep::MakeRslave { target: "/".into() },
                MountStep::Root {
                    source,
                    target: "/tmp".into(),
                },
            ]
        );
    }

    #[test]
    fn basic_plan_is_the_known_good_sequence() {
        let steps = plan(&basic());
        let expected = vec![
            MountStep::MakeRslave { target: "/".into() },
            MountStep::Tmpfs {
                target: "/tmp".into(),
                options: "mode=0755".into(),
                purpose: TmpfsPurpose::Staging,
            },
            MountStep::MakeDir {
                path: "/tmp/oldroot".into(),
                mode: 0o755,
            },
            MountStep::MakeDir {
                path: "/tmp/newroot".into(),
                mode: 0o755,
            },
            MountStep::MakeDir {
                path: "/tmp/files".into(),
                mode: 0o755,
            },
            MountStep::PivotToStage {
                new_root: "/tmp".into(),
                put_old: "/tmp/oldroot".into(),
            },
            MountStep::Root {
                source: RootSource::Directory("/oldroot/images/alpine".into()),
                target: "/newroot".into(),
            },
            bind("/oldroot/dev", "/newroot/dev", true),
            bind("/oldroot/proc", "/newroot/proc", true),
            bind("/oldroot/sys", "/newroot/sys", true),
            bind("/oldroot/tmp", "/newroot/tmp", true),
            MountStep::WriteFile {
                path: "/files/passwd".into(),
                contents: b"root:x:0:0::/:/bin/sh\n".to_vec(),
            },
            bind("/files/passwd", "/newroot/etc/passwd", false),
            bind("/oldroot/etc/hosts", "/newroot/etc/hosts", false),
            MountStep::RemountReadOnly {
                target: "/newroot/etc/hosts".into(),
                harden: false,
            },
            MountStep::RemountReadOnly {
                target: "/newroot".into(),
                harden: true,
            },
            MountStep::EnterRoot {
                new_root: "/newroot".into(),
            },
        ];
        assert_eq!(steps, expected);
    }

    #[test]
    fn pid_and_net_get_fresh_proc_and_sysfs() {
        let mut req = basic();
        req.new_proc = true;
        req.new_sys = true;
        let steps = plan(&req);
        assert!(steps.contains(&MountStep::Proc {
            target: "/newroot/proc".into()
        }));
        assert!(steps.contains(&MountStep::Sysfs {
            target: "/newroot/sys".into()
        }));
        assert!(!steps.contains(&bind("/oldroot/proc", "/newroot/proc", true)));
    }

    #[test]
    fn writable_uses_an_overlay_and_no_read_only_remount() {
        let mut req = basic();
        req.writable = true;
        let steps = plan(&req);
        let root_at = steps
            .iter()
            .position(
                |s| matches!(s, MountStep::Root { target, .. } if target == Path::new("/lower")),
            )
            .expect("root at /lower");
        assert_eq!(
            steps[root_at + 1],
            MountStep::Overlay {
                lowers: vec!["/lower".into()],
                upper: "/upper".into(),
                work: "/work".into(),
                target: "/newroot".into()
            }
        );
        assert!(!steps.iter().any(|s| matches!(
            s,
            MountStep::RemountReadOnly { target, .. } if target == Path::new("/newroot")
        )));
        assert!(steps.contains(&MountStep::MakeDir {
            path: "/tmp/upper".into(),
            mode: 0o755
        }));
    }

    #[test]
    fn private_tmp_home_and_binds() {
        let mut req = basic();
        req.tmp = TmpMount::Private;
        req.home = Some(HomeMount {
            source: "/home/alice".into(),
            target: "/home/alice".into(),
            tmpfs_parent: Some("/home".into()),
        });
        req.binds = vec![
            BindMount {
                src: "/data".into(),
                dst: "/mnt".into(),
                read_only: true,
                ..BindMount::default()
            },
            BindMount {
                src: "/scratch".into(),
                dst: "/opt".into(),
                read_only: false,
                ..BindMount::default()
            },
        ];
        let steps = plan(&req);
        let tail: Vec<_> = steps
            .iter()
            .skip_while(|s| {
                !matches!(
                    s,
                    MountStep::Tmpfs {
                        purpose: TmpfsPurpose::PrivateTmp,
                        ..
                    }
                )
            })
            .take(7)
            .cloned()
            .collect();
        assert_eq!(
            tail,
            vec![
                MountStep::Tmpfs {
                    target: "/newroot/tmp".into(),
                    options: "mode=1777".into(),
                    purpose: TmpfsPurpose::PrivateTmp
                },
                MountStep::Tmpfs {
                    target: "/newroot/home".into(),
                    options: "mode=0755".into(),
                    purpose: TmpfsPurpose::HomeParent
                },
                MountStep::MakeDir {
                    path: "/newroot/home/alice".into(),
                    mode: 0o755
                },
                bind("/oldroot/home/alice", "/newroot/home/alice", true),
                bind("/oldroot/data", "/newroot/mnt", true),
                MountStep::RemountReadOnly {
                    target: "/newroot/mnt".into(),
                    harden: false
                },
                bind("/oldroot/scratch", "/newroot/opt", true),
            ]
        );
    }

    #[test]
    fn forbidden_paths_are_masked_right_after_the_bind_that_shows_them() {
        let mut req = basic();
        req.masks = vec![Mask::Dir("/tmp/secret".into())];
        req.binds = vec![
            BindMount {
                src: "/".into(),
                dst: "/host".into(),
                read_only: true,
                masks: vec![
                    Mask::Dir("/host/etc".into()),
                    Mask::File("/host/run/munge.sock".into()),
                    Mask::File("/host/var/key".into()),
                ],
                ..BindMount::default()
            },
            BindMount {
                src: "/data".into(),
                dst: "/host/etc".into(),
                ..BindMount::default()
            },
        ];
        let steps = plan(&req);
        let from = steps
            .iter()
            .position(|s| *s == bind("/oldroot/tmp", "/newroot/tmp", true))
            .expect("tmp bind");
        let ro = |t: &str| MountStep::RemountReadOnly {
            target: t.into(),
            harden: false,
        };
        let tmpfs = |t: &str| MountStep::Tmpfs {
            target: t.into(),
            options: "mode=0755".into(),
            purpose: TmpfsPurpose::Mask,
        };
        let expected = vec![
            bind("/oldroot/tmp", "/newroot/tmp", true),
            tmpfs("/newroot/tmp/secret"),
            ro("/newroot/tmp/secret"),
            bind("/oldroot/", "/newroot/host", true),
            ro("/newroot/host"),
            tmpfs("/newroot/host/etc"),
            ro("/newroot/host/etc"),
            MountStep::WriteFile {
                path: MASK_FILE.into(),
                contents: vec![],
            },
            bind(MASK_FILE, "/newroot/host/run/munge.sock", false),
            ro("/newroot/host/run/munge.sock"),
            bind(MASK_FILE, "/newroot/host/var/key", false),
            ro("/newroot/host/var/key"),
            // A later bind (of an allowed source) goes over the mask.
            bind("/oldroot/data", "/newroot/host/etc", true),
        ];
        assert_eq!(steps[from..from + expected.len()], expected[..]);
    }

    #[test]
    fn missing_bind_destinations_are_created_before_the_bind() {
        let mut req = basic();
        req.writable = true;
        req.binds = vec![
            BindMount {
                src: "/data".into(),
                dst: "/new/dir".into(),
                create_dirs: vec!["/new".into(), "/new/dir".into()],
                ..BindMount::default()
            },
            BindMount {
                src: "/etc/motd".into(),
                dst: "/motd".into(),
                create_file: Some("/motd".into()),
                ..BindMount::default()
            },
        ];
        let steps = plan(&req);
        let at = steps
            .iter()
            .position(|s| matches!(s, MountStep::MakeDir { path, .. } if path == Path::new("/newroot/new")))
            .expect("mkdir /new");
        assert_eq!(
            steps[at..at + 5].to_vec(),
            vec![
                MountStep::MakeDir {
                    path: "/newroot/new".into(),
                    mode: 0o755
                },
                MountStep::MakeDir {
                    path: "/newroot/new/dir".into(),
                    mode: 0o755
                },
                bind("/oldroot/data", "/newroot/new/dir", true),
                MountStep::WriteFile {
                    path: "/newroot/motd".into(),
                    contents: vec![]
                },
                bind("/oldroot/etc/motd", "/newroot/motd", true),
            ]
        );
    }

    fn mkdir(path: &str) -> MountStep {
        MountStep::MakeDir {
            path: path.into(),
            mode: 0o755,
        }
    }

    #[test]
    fn skeleton_makes_each_parent_once_then_the_mount_points() {
        let steps = skeleton_steps(&[
            SkeletonEntry::Dir("/usr/local/nvidia/lib".into()),
            SkeletonEntry::File("/usr/local/nvidia/bin/smi".into()),
            SkeletonEntry::Dir("/opt".into()),
        ]);
        assert_eq!(
            steps,
            vec![
                mkdir("/skeleton/usr"),
                mkdir("/skeleton/usr/local"),
                mkdir("/skeleton/usr/local/nvidia"),
                mkdir("/skeleton/usr/local/nvidia/lib"),
                mkdir("/skeleton/usr/local/nvidia/bin"),
                MountStep::WriteFile {
                    path: "/skeleton/usr/local/nvidia/bin/smi".into(),
                    contents: vec![],
                },
                mkdir("/skeleton/opt"),
            ]
        );
        assert!(skeleton_steps(&[]).is_empty());
    }

    #[test]
    fn missing_mount_points_of_a_read_only_image_come_from_a_skeleton_overlay() {
        let mut req = basic();
        req.skeleton = vec![SkeletonEntry::Dir("/opt/lib".into())];
        req.binds = vec![BindMount {
            src: "/usr/lib/mpi".into(),
            dst: "/opt/lib".into(),
            read_only: true,
            ..BindMount::default()
        }];
        let steps = plan(&req);
        let pivot = steps
            .iter()
            .position(|s| matches!(s, MountStep::PivotToStage { .. }))
            .expect("pivot");
        assert!(steps[..pivot].contains(&mkdir("/tmp/lower")));
        assert!(steps[..pivot].contains(&mkdir("/tmp/skeleton")));
        assert_eq!(
            steps[pivot + 1..pivot + 5].to_vec(),
            vec![
                mkdir("/skeleton/opt"),
                mkdir("/skeleton/opt/lib"),
                MountStep::Root {
                    source: RootSource::Directory("/oldroot/images/alpine".into()),
                    target: "/lower".into(),
                },
                MountStep::ReadOnlyOverlay {
                    lowers: vec!["/skeleton".into(), "/lower".into()],
                    target: "/newroot".into(),
                },
            ]
        );
        let at = steps
            .iter()
            .position(|s| *s == bind("/oldroot/usr/lib/mpi", "/newroot/opt/lib", true))
            .expect("bind");
        assert!(at > pivot + 4);
        // Still hardened and read-only at the end.
        assert_eq!(
            steps[steps.len() - 2],
            MountStep::RemountReadOnly {
                target: "/newroot".into(),
                harden: true
            }
        );
    }

    #[test]
    fn writable_images_put_the_skeleton_under_the_upper_layer_and_no_edits_cost_nothing() {
        let mut req = basic();
        req.writable = true;
        req.skeleton = vec![SkeletonEntry::Dir("/opt/lib".into())];
        let steps = plan(&req);
        assert!(
            !steps
                .iter()
                .any(|s| matches!(s, MountStep::ReadOnlyOverlay { .. }))
        );
        assert!(steps.contains(&mkdir("/tmp/skeleton")));
        assert!(steps.contains(&mkdir("/skeleton/opt/lib")));
        assert!(steps.contains(&MountStep::Overlay {
            lowers: vec!["/skeleton".into(), "/lower".into()],
            upper: "/upper".into(),
            work: "/work".into(),
            target: "/newroot".into(),
        }));
        let plain = plan(&basic());
        assert!(!plain.iter().any(|s| matches!(
            s,
            MountStep::ReadOnlyOverlay { .. } | MountStep::Overlay { .. }
        )));
        assert!(!plain.contains(&mkdir("/tmp/skeleton")));
    }

    #[test]
    fn image_without_tmp_or_system_dirs_gets_none() {
        let mut req = basic();
        req.system.clear();
        req.tmp = TmpMount::None;
        req.generated.clear();
        req.host_files.clear();
        let steps = plan(&req);
        assert!(!steps.iter().any(|s| matches!(s, MountStep::Bind { .. })));
        assert_eq!(steps.len(), 9);
    }
}
