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
//!    squashfs later: a kernel or FUSE mount, same step), or for
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
    /// A squashfs file not attached yet (the request's choice: kernel or
    /// FUSE); `launch` replaces it with `Kernel` or `Fuse` before planning.
    Squashfs { image: PathBuf, kernel: bool },
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountRequest {
    pub root: RootSource,
    pub writable: bool,
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

/// Turn a request into the ordered mount steps.
pub fn plan(req: &MountRequest) -> Vec<MountStep> {
    let stage = Path::new(STAGE_MOUNTPOINT);
    let new_root = PathBuf::from(NEW_ROOT);
    let mut steps = vec![
        MountStep::MakeRslave { target: "/".into() },
        MountStep::Tmpfs {
            target: stage.into(),
            options: "mode=0755".into(),
            purpose: TmpfsPurpose::Staging,
        },
    ];
    let mut dirs = vec![OLD_ROOT, NEW_ROOT, FILES];
    let skeleton = !req.skeleton.is_empty();
    if req.writable {
        dirs.extend([LOWER, "/upper", "/work"]);
    } else if skeleton {
        dirs.push(LOWER);
    }
    if skeleton {
        dirs.push(SKELETON);
    }
    for d in dirs {
        steps.push(MountStep::MakeDir {
            path: under(STAGE_MOUNTPOINT, Path::new(d)),
            mode: 0o755,
        });
    }
    steps.push(MountStep::PivotToStage {
        new_root: stage.into(),
        put_old: under(STAGE_MOUNTPOINT, Path::new(OLD_ROOT)),
    });
    let host = |p: &Path| under(OLD_ROOT, p);
    let inside = |p: &Path| under(NEW_ROOT, p);
    let root_source = match &req.root {
        RootSource::Directory(dir) => RootSource::Directory(host(dir)),
        RootSource::Kernel { image, device } => RootSource::Kernel {
            image: image.clone(),
            device: host(device),
        },
        other => other.clone(),
    };
    // Missing mount points come from the skeleton layer, above the image,
    // also under a writable overlay: creating them in the upper layer would
    // need write permission on the image's directories, which an ordinary
    // user mapped to itself lacks in a root-owned image.
    let mut lowers = Vec::new();
    if skeleton {
        steps.extend(skeleton_steps(&req.skeleton));
        lowers.push(PathBuf::from(SKELETON));
    }
    lowers.push(PathBuf::from(LOWER));
    if req.writable {
        steps.push(MountStep::Root {
            source: root_source,
            target: LOWER.into(),
        });
        steps.push(MountStep::Overlay {
            lowers,
            upper: "/upper".into(),
            work: "/work".into(),
            target: new_root.clone(),
        });
    } else if skeleton {
        steps.push(MountStep::Root {
            source: root_source,
            target: LOWER.into(),
        });
        steps.push(MountStep::ReadOnlyOverlay {
            lowers,
            target: new_root.clone(),
        });
    } else {
        steps.push(MountStep::Root {
            source: root_source,
            target: new_root.clone(),
        });
    }
    for dir in &req.system {
        let target = inside(dir);
        if req.new_proc && dir == Path::new("/proc") {
            steps.push(MountStep::Proc { target });
        } else if req.new_sys && dir == Path::new("/sys") {
            steps.push(MountStep::Sysfs { target });
        } else {
            steps.push(MountStep::Bind {
                source: host(dir),
                target,
                recursive: true,
            });
        }
    }
    match &req.tmp {
        TmpMount::None => {}
        TmpMount::Host(dir) => steps.push(MountStep::Bind {
            source: host(dir),
            target: inside(Path::new("/tmp")),
            recursive: true,
        }),
        TmpMount::Private => steps.push(MountStep::Tmpfs {
            target: inside(Path::new("/tmp")),
            options: "mode=1777".into(),
            purpose: TmpfsPurpose::PrivateTmp,
        }),
    }
    if let Some(home) = &req.home {
        if let Some(parent) = &home.tmpfs_parent {
            steps.push(MountStep::Tmpfs {
                target: inside(parent),
                options: "mode=0755".into(),
                purpose: TmpfsPurpose::HomeParent,
            });
            steps.push(MountStep::MakeDir {
                path: inside(&home.target),
                mode: 0o755,
            });
        }
        steps.push(MountStep::Bind {
            source: host(&home.source),
            target: inside(&home.target),
            recursive: true,
        });
    }
    let mut masking = Masking::default();
    for mask in &req.masks {
        masking.push(mask, &mut steps);
    }
    for bind in &req.binds {
        for dir in &bind.create_dirs {
            steps.push(MountStep::MakeDir {
                path: inside(dir),
                mode: 0o755,
            });
        }
        if let Some(file) = &bind.create_file {
            steps.push(MountStep::WriteFile {
                path: inside(file),
                contents: Vec::new(),
            });
        }
        let target = inside(&bind.dst);
        steps.push(MountStep::Bind {
            source: host(&bind.src),
            target: target.clone(),
            recursive: true,
        });
        if bind.read_only {
            steps.push(MountStep::RemountReadOnly {
                target,
                harden: false,
            });
        }
        for mask in &bind.masks {
            masking.push(mask, &mut steps);
        }
    }
    for (path, contents) in &req.generated {
        let name = path.file_name().map(PathBuf::from).unwrap_or_default();
        let staged = Path::new(FILES).join(name);
        steps.push(MountStep::WriteFile {
            path: staged.clone(),
            contents: contents.clone(),
        });
        steps.push(MountStep::Bind {
            source: staged,
            target: inside(path),
            recursive: false,
        });
    }
    for (file, dst) in &req.host_files {
        steps.push(MountStep::Bind {
            source: host(file),
            target: inside(dst),
            recursive: false,
        });
        // Read-only: a job run by root must not rewrite the host's file.
        steps.push(MountStep::RemountReadOnly {
            target: inside(dst),
            harden: false,
        });
    }
    if !req.writable {
        steps.push(MountStep::RemountReadOnly {
            target: new_root.clone(),
            harden: true,
        });
    }
    steps.push(MountStep::EnterRoot { new_root });
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn basic() -> MountRequest {
        MountRequest {
            root: RootSource::Directory("/images/alpine".into()),
            writable: false,
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
