//! The one executor: applies a mount plan through the [`MountSyscalls`]
//! trait, logs each step at debug level and wraps a failure with the step
//! that failed. Unit tests run it against a recording fake.

use std::io;
use std::path::{Path, PathBuf};

use crate::mount::plan::{MountStep, NEW_ROOT, OLD_ROOT, RootSource, TmpfsPurpose};
use crate::sys::mount::{FsFlags, MntFlags, MsFlags};

/// The syscalls the mount plan needs, so that a test can record them.
pub trait MountSyscalls {
    fn mount(
        &mut self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()>;
    fn umount2(&mut self, target: &Path, flags: MntFlags) -> io::Result<()>;
    fn pivot_root(&mut self, new_root: &Path, put_old: &Path) -> io::Result<()>;
    fn chdir(&mut self, path: &Path) -> io::Result<()>;
    fn statvfs_flags(&mut self, path: &Path) -> io::Result<FsFlags>;
    fn mkdir(&mut self, path: &Path, mode: u32) -> io::Result<()>;
    fn write_file(&mut self, path: &Path, contents: &[u8]) -> io::Result<()>;
}

/// The real syscalls.
#[derive(Debug, Default)]
pub struct Linux;

impl MountSyscalls for Linux {
    fn mount(
        &mut self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()> {
        Ok(crate::sys::mount::mount(
            source, target, fstype, flags, data,
        )?)
    }
    fn umount2(&mut self, target: &Path, flags: MntFlags) -> io::Result<()> {
        Ok(crate::sys::mount::umount2(target, flags)?)
    }
    fn pivot_root(&mut self, new_root: &Path, put_old: &Path) -> io::Result<()> {
        Ok(crate::sys::mount::pivot_root(new_root, put_old)?)
    }
    fn chdir(&mut self, path: &Path) -> io::Result<()> {
        Ok(crate::sys::mount::chdir(path)?)
    }
    fn statvfs_flags(&mut self, path: &Path) -> io::Result<FsFlags> {
        Ok(crate::sys::mount::statvfs_flags(path)?)
    }
    fn mkdir(&mut self, path: &Path, mode: u32) -> io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().mode(mode).create(path)
    }
    fn write_file(&mut self, path: &Path, contents: &[u8]) -> io::Result<()> {
        std::fs::write(path, contents)
    }
}

/// A mount step that failed, with its paths.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("make {target} a recursive slave mount failed")]
    MakeRslave {
        target: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("mount tmpfs ({purpose:?}) on {} failed", shown(target))]
    Tmpfs {
        target: PathBuf,
        purpose: TmpfsPurpose,
        #[source]
        source: io::Error,
    },
    #[error("create directory {} failed", shown(path))]
    MakeDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("write {path} failed")]
    WriteFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("pivot_root into the staging tmpfs {new_root} failed")]
    PivotToStage {
        new_root: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("mount the image root {} failed", shown(image))]
    Root {
        image: PathBuf,
        target: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "mount overlay (writable tmpfs) on {target} failed (overlayfs in a user namespace needs Linux >= 5.11)"
    )]
    Overlay {
        target: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "mount the read-only overlay that adds missing bind mount points ({}) on {target} failed (overlayfs in a user namespace needs Linux >= 5.11)",
        lowers
    )]
    ReadOnlyOverlay {
        lowers: String,
        target: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("bind {} on {} failed", shown(from), shown(target))]
    Bind {
        from: PathBuf,
        target: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("mount a new proc on {} failed", shown(target))]
    Proc {
        target: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("mount a new sysfs on {} failed", shown(target))]
    Sysfs {
        target: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("remount {} read-only failed", shown(target))]
    RemountReadOnly {
        target: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("pivot_root into {new_root} failed")]
    EnterRoot {
        new_root: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("detach the warm image root at {} failed", shown(target))]
    Detach {
        target: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A path of the plan as the user knows it: `/oldroot/X` is the host's `/X`,
/// `/newroot/X` the container's `/X`; staging paths stay as they are.
pub fn shown(path: &Path) -> String {
    if let Ok(rest) = path.strip_prefix(OLD_ROOT) {
        format!("host /{}", rest.display())
    } else if let Ok(rest) = path.strip_prefix(NEW_ROOT) {
        format!("container /{}", rest.display())
    } else {
        path.display().to_string()
    }
}

/// `ST_RELATIME` of statvfs(3), the kernel's `MNT_RELATIME`.
const ST_RELATIME: libc::c_ulong = 0x1000;

/// The mount flags of a bind's filesystem that a read-only remount must keep:
/// in a user namespace the kernel locks nosuid/nodev/noexec and the atime
/// flags of a mount that came from a more privileged namespace, and a
/// remount that drops one fails with EPERM.
pub fn kept_flags(flags: FsFlags) -> MsFlags {
    let pairs = [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        // nix names ST_RELATIME for glibc only; statvfs(3) gives the
        // kernel's bit (MNT_RELATIME, 0x1000) with either C library.
        (FsFlags::from_bits_retain(ST_RELATIME), MsFlags::MS_RELATIME),
    ];
    pairs
        .iter()
        .filter(|(st, _)| flags.contains(*st))
        .fold(MsFlags::empty(), |acc, (_, ms)| acc | *ms)
}

fn overlay_options(lowers: &[PathBuf], upper: &Path, work: &Path, userxattr: bool) -> String {
    let mut opts = format!(
        "{},upperdir={},workdir={}",
        read_only_overlay_options(lowers, false),
        upper.display(),
        work.display()
    );
    if userxattr {
        // Without CAP_SYS_ADMIN in the init namespace overlayfs cannot use
        // trusted.* xattrs; userxattr switches it to user.overlay.*.
        opts.push_str(",userxattr");
    }
    opts
}

/// `lowerdir=A:B` of a read-only overlay: no upperdir, no workdir, so the
/// kernel needs at least two lower layers and allows no writes.
fn read_only_overlay_options(lowers: &[PathBuf], userxattr: bool) -> String {
    let joined = lowers
        .iter()
        .map(|l| l.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let mut opts = format!("lowerdir={joined}");
    if userxattr {
        opts.push_str(",userxattr");
    }
    opts
}

/// Apply one step.
pub fn apply_step(sys: &mut dyn MountSyscalls, step: &MountStep) -> Result<(), MountError> {
    tracing::debug!(?step, "mount step");
    let hardened = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    match step {
        MountStep::MakeRslave { target } => sys
            .mount(
                None,
                target,
                None,
                MsFlags::MS_REC | MsFlags::MS_SLAVE,
                None,
            )
            .map_err(|source| MountError::MakeRslave {
                target: target.clone(),
                source,
            }),
        MountStep::Tmpfs {
            target,
            options,
            purpose,
        } => sys
            .mount(
                Some(Path::new("tmpfs")),
                target,
                Some("tmpfs"),
                hardened,
                Some(options),
            )
            .map_err(|source| MountError::Tmpfs {
                target: target.clone(),
                purpose: *purpose,
                source,
            }),
        MountStep::MakeDir { path, mode } => {
            sys.mkdir(path, *mode)
                .map_err(|source| MountError::MakeDir {
                    path: path.clone(),
                    source,
                })
        }
        MountStep::WriteFile { path, contents } => {
            sys.write_file(path, contents)
                .map_err(|source| MountError::WriteFile {
                    path: path.clone(),
                    source,
                })
        }
        MountStep::PivotToStage { new_root, put_old } => sys
            .pivot_root(new_root, put_old)
            .and_then(|()| sys.chdir(Path::new("/")))
            .map_err(|source| MountError::PivotToStage {
                new_root: new_root.clone(),
                source,
            }),
        MountStep::Root { source, target } => {
            let rbind = |sys: &mut dyn MountSyscalls, from: &Path| {
                sys.mount(
                    Some(from),
                    target,
                    None,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None,
                )
            };
            // The image the error names, and the mount.
            let (image, mounted) = match source {
                RootSource::Directory(dir) => (dir, rbind(sys, dir)),
                RootSource::Warm { image, root } => (image, rbind(sys, root)),
                RootSource::Kernel { image, device } => (
                    image,
                    sys.mount(
                        Some(device),
                        target,
                        Some("squashfs"),
                        hardened | MsFlags::MS_RDONLY,
                        None,
                    ),
                ),
                RootSource::Fuse {
                    image,
                    fd,
                    uid,
                    gid,
                } => {
                    let data = crate::mount::fuse::mount_data(*fd, *uid, *gid, true);
                    let mounted = sys.mount(
                        Some(Path::new("cairn")),
                        target,
                        Some("fuse.cairn"),
                        crate::mount::fuse::mount_flags(),
                        Some(&data),
                    );
                    (image, mounted)
                }
            };
            mounted.map_err(|source| MountError::Root {
                image: image.clone(),
                target: target.clone(),
                source,
            })
        }
        MountStep::Overlay {
            lowers,
            upper,
            work,
            target,
        } => {
            let overlay = Some(Path::new("overlay"));
            let with = overlay_options(lowers, upper, work, true);
            sys.mount(overlay, target, Some("overlay"), hardened, Some(&with))
                .or_else(|_| {
                    let without = overlay_options(lowers, upper, work, false);
                    sys.mount(overlay, target, Some("overlay"), hardened, Some(&without))
                })
                .map_err(|source| MountError::Overlay {
                    target: target.clone(),
                    source,
                })
        }
        MountStep::ReadOnlyOverlay { lowers, target } => {
            let overlay = Some(Path::new("overlay"));
            let flags = hardened | MsFlags::MS_RDONLY;
            // userxattr first (unprivileged overlayfs reads user.overlay.*
            // only), then without it for kernels or callers that refuse it.
            let with = read_only_overlay_options(lowers, true);
            sys.mount(overlay, target, Some("overlay"), flags, Some(&with))
                .or_else(|_| {
                    let without = read_only_overlay_options(lowers, false);
                    sys.mount(overlay, target, Some("overlay"), flags, Some(&without))
                })
                .map_err(|source| MountError::ReadOnlyOverlay {
                    lowers: read_only_overlay_options(lowers, false),
                    target: target.clone(),
                    source,
                })
        }
        MountStep::Bind {
            source: from,
            target,
            recursive,
        } => {
            let mut flags = MsFlags::MS_BIND;
            if *recursive {
                flags |= MsFlags::MS_REC;
            }
            sys.mount(Some(from), target, None, flags, None)
                .map_err(|source| MountError::Bind {
                    from: from.clone(),
                    target: target.clone(),
                    source,
                })
        }
        MountStep::Proc { target } => sys
            .mount(
                Some(Path::new("proc")),
                target,
                Some("proc"),
                hardened | MsFlags::MS_NOEXEC,
                None,
            )
            .map_err(|source| MountError::Proc {
                target: target.clone(),
                source,
            }),
        MountStep::Sysfs { target } => sys
            .mount(
                Some(Path::new("sysfs")),
                target,
                Some("sysfs"),
                hardened | MsFlags::MS_NOEXEC,
                None,
            )
            .map_err(|source| MountError::Sysfs {
                target: target.clone(),
                source,
            }),
        MountStep::RemountReadOnly { target, harden } => sys
            .statvfs_flags(target)
            .and_then(|current| {
                let mut flags = MsFlags::MS_REMOUNT
                    | MsFlags::MS_BIND
                    | MsFlags::MS_RDONLY
                    | kept_flags(current);
                if *harden {
                    flags |= hardened;
                }
                sys.mount(None, target, None, flags, None)
            })
            .map_err(|source| MountError::RemountReadOnly {
                target: target.clone(),
                source,
            }),
        MountStep::Detach { target } => {
            sys.umount2(target, MntFlags::MNT_DETACH)
                .map_err(|source| MountError::Detach {
                    target: target.clone(),
                    source,
                })
        }
        MountStep::EnterRoot { new_root } => {
            // pivot_root(".", ".") stacks the old root on top of the new one
            // at "/", so no put_old directory is needed in a read-only image;
            // the detach then drops the whole host tree from this namespace.
            let dot = Path::new(".");
            sys.chdir(new_root)
                .and_then(|()| sys.pivot_root(dot, dot))
                .and_then(|()| sys.umount2(dot, MntFlags::MNT_DETACH))
                .and_then(|()| sys.chdir(Path::new("/")))
                .map_err(|source| MountError::EnterRoot {
                    new_root: new_root.clone(),
                    source,
                })
        }
    }
}

/// Apply a whole plan, stopping at the first failure.
pub fn apply_plan(sys: &mut dyn MountSyscalls, steps: &[MountStep]) -> Result<(), MountError> {
    steps.iter().try_for_each(|step| apply_step(sys, step))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mount::plan::{MountRequest, TmpMount, plan};

    /// Records each call as one line; `fail_on` makes a call containing that
    /// text fail with EPERM.
    #[derive(Default)]
    struct Recorder {
        calls: Vec<String>,
        fail_on: Option<String>,
        statvfs: Option<FsFlags>,
    }

    impl Recorder {
        fn record(&mut self, call: String) -> io::Result<()> {
            let fail = self.fail_on.as_ref().is_some_and(|f| call.contains(f));
            self.calls.push(call);
            if fail {
                Err(io::Error::from_raw_os_error(libc::EPERM))
            } else {
                Ok(())
            }
        }
    }

    impl MountSyscalls for Recorder {
        fn mount(
            &mut self,
            source: Option<&Path>,
            target: &Path,
            fstype: Option<&str>,
            flags: MsFlags,
            data: Option<&str>,
        ) -> io::Result<()> {
            self.record(format!(
                "mount {:?} {} {:?} {:?} {:?}",
                source,
                target.display(),
                fstype,
                flags,
                data
            ))
        }
        fn umount2(&mut self, target: &Path, flags: MntFlags) -> io::Result<()> {
            self.record(format!("umount2 {} {:?}", target.display(), flags))
        }
        fn pivot_root(&mut self, new_root: &Path, put_old: &Path) -> io::Result<()> {
            self.record(format!(
                "pivot_root {} {}",
                new_root.display(),
                put_old.display()
            ))
        }
        fn chdir(&mut self, path: &Path) -> io::Result<()> {
            self.record(format!("chdir {}", path.display()))
        }
        fn statvfs_flags(&mut self, path: &Path) -> io::Result<FsFlags> {
            self.record(format!("statvfs {}", path.display()))?;
            Ok(self
                .statvfs
                .unwrap_or(FsFlags::ST_NOSUID | FsFlags::from_bits_retain(ST_RELATIME)))
        }
        fn mkdir(&mut self, path: &Path, mode: u32) -> io::Result<()> {
            self.record(format!("mkdir {} {:o}", path.display(), mode))
        }
        fn write_file(&mut self, path: &Path, contents: &[u8]) -> io::Result<()> {
            self.record(format!("write {} {}", path.display(), contents.len()))
        }
    }

    fn request() -> MountRequest {
        MountRequest {
            root: RootSource::Directory("/img".into()),
            writable: false,
            writable_root: false,
            system: vec!["/dev".into()],
            new_proc: false,
            new_sys: false,
            tmp: TmpMount::Private,
            home: None,
            binds: vec![],
            generated: vec![("/etc/group".into(), b"root:x:0:\n".to_vec())],
            host_files: vec![],
            skeleton: vec![],
            masks: vec![],
        }
    }

    #[test]
    fn executes_the_exact_syscall_sequence() {
        let mut rec = Recorder::default();
        apply_plan(&mut rec, &plan(&request())).expect("apply");
        let expected = [
            "mount None / None MsFlags(MS_REC | MS_SLAVE) None",
            "mount Some(\"tmpfs\") /tmp Some(\"tmpfs\") MsFlags(MS_NOSUID | MS_NODEV) Some(\"mode=0755\")",
            "mkdir /tmp/oldroot 755",
            "mkdir /tmp/newroot 755",
            "mkdir /tmp/files 755",
            "pivot_root /tmp /tmp/oldroot",
            "chdir /",
            "mount Some(\"/oldroot/img\") /newroot None MsFlags(MS_BIND | MS_REC) None",
            "mount Some(\"/oldroot/dev\") /newroot/dev None MsFlags(MS_BIND | MS_REC) None",
            "mount Some(\"tmpfs\") /newroot/tmp Some(\"tmpfs\") MsFlags(MS_NOSUID | MS_NODEV) Some(\"mode=1777\")",
            "write /files/group 10",
            "mount Some(\"/files/group\") /newroot/etc/group None MsFlags(MS_BIND) None",
            "statvfs /newroot",
            "mount None /newroot None MsFlags(MS_RDONLY | MS_NOSUID | MS_NODEV | MS_REMOUNT | MS_BIND | MS_RELATIME) None",
            "chdir /newroot",
            "pivot_root . .",
            "umount2 . MntFlags(MNT_DETACH)",
            "chdir /",
        ];
        assert_eq!(rec.calls, expected);
    }

    #[test]
    fn remount_keeps_locked_flags() {
        let mut rec = Recorder {
            statvfs: Some(FsFlags::ST_NOEXEC | FsFlags::ST_NOATIME),
            ..Recorder::default()
        };
        apply_step(
            &mut rec,
            &MountStep::RemountReadOnly {
                target: "/newroot/mnt".into(),
                harden: false,
            },
        )
        .expect("remount");
        assert_eq!(
            rec.calls[1],
            "mount None /newroot/mnt None MsFlags(MS_RDONLY | MS_NOEXEC | MS_REMOUNT | MS_NOATIME | MS_BIND) None"
        );
    }

    #[test]
    fn a_failure_names_the_step_and_stops() {
        let mut rec = Recorder {
            fail_on: Some("/newroot/dev".into()),
            ..Recorder::default()
        };
        let err = apply_plan(&mut rec, &plan(&request())).expect_err("must fail");
        assert!(
            matches!(&err, MountError::Bind { from, target, .. }
                if from == Path::new("/oldroot/dev") && target == Path::new("/newroot/dev")),
            "{err:?}"
        );
        assert_eq!(err.to_string(), "bind host /dev on container /dev failed");
        assert!(rec.calls.last().is_some_and(|c| c.contains("/newroot/dev")));
    }

    #[test]
    fn overlay_retries_without_userxattr() {
        let mut rec = Recorder {
            fail_on: Some("userxattr".into()),
            ..Recorder::default()
        };
        apply_step(
            &mut rec,
            &MountStep::Overlay {
                lowers: vec!["/lower".into()],
                upper: "/upper".into(),
                work: "/work".into(),
                target: "/newroot".into(),
            },
        )
        .expect("overlay");
        assert_eq!(rec.calls.len(), 2);
        assert!(rec.calls[1].contains("lowerdir=/lower,upperdir=/upper,workdir=/work\""));
    }

    #[test]
    fn skeleton_overlay_is_read_only_and_its_failure_is_its_own_error() {
        let mut req = request();
        req.skeleton = vec![crate::mount::plan::SkeletonEntry::Dir("/opt/mpi".into())];
        let mut rec = Recorder::default();
        apply_plan(&mut rec, &plan(&req)).expect("apply");
        let at = rec
            .calls
            .iter()
            .position(|c| c.starts_with("mkdir /skeleton/opt "))
            .expect("skeleton mkdir");
        assert_eq!(
            rec.calls[at..at + 4].to_vec(),
            vec![
                "mkdir /skeleton/opt 755",
                "mkdir /skeleton/opt/mpi 755",
                "mount Some(\"/oldroot/img\") /lower None MsFlags(MS_BIND | MS_REC) None",
                "mount Some(\"overlay\") /newroot Some(\"overlay\") MsFlags(MS_RDONLY | MS_NOSUID | MS_NODEV) Some(\"lowerdir=/skeleton:/lower,userxattr\")",
            ]
        );
        // Both tries refused: one error naming the layers and the target.
        let mut rec = Recorder {
            fail_on: Some("lowerdir=/skeleton".into()),
            ..Recorder::default()
        };
        let err = apply_plan(&mut rec, &plan(&req)).expect_err("refused");
        assert!(
            matches!(&err, MountError::ReadOnlyOverlay { target, .. } if target == Path::new("/newroot")),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("lowerdir=/skeleton:/lower"),
            "{err}"
        );
        assert_eq!(
            rec.calls.iter().filter(|c| c.contains("overlay")).count(),
            2
        );
    }

    #[test]
    fn a_warm_root_binds_from_the_base_then_detaches_it() {
        let mut req = request();
        req.root = RootSource::Warm {
            image: "/img.sqfs".into(),
            root: crate::mount::plan::WARM_ROOT.into(),
        };
        let mut rec = Recorder::default();
        apply_plan(&mut rec, &plan(&req)).expect("warm");
        let bind = rec
            .calls
            .iter()
            .position(|c| {
                c.starts_with("mount Some(\"/oldroot/tmp\") /newroot None") && c.contains("MS_REC")
            })
            .unwrap_or_else(|| panic!("{:#?}", rec.calls));
        assert!(
            rec.calls[bind + 1] == "umount2 /oldroot/tmp MntFlags(MNT_DETACH)",
            "{:#?}",
            rec.calls
        );
    }

    #[test]
    fn squashfs_roots_mount_by_kernel_or_fuse() {
        let mut req = request();
        req.root = RootSource::Kernel {
            image: "/img.sqfs".into(),
            device: "/dev/loop7".into(),
        };
        let mut rec = Recorder::default();
        apply_plan(&mut rec, &plan(&req)).expect("kernel");
        assert!(
            rec.calls.iter().any(|c| c
                .starts_with("mount Some(\"/oldroot/dev/loop7\") /newroot Some(\"squashfs\")")
                && c.contains("MS_RDONLY")
                && c.contains("MS_NOSUID")
                && c.contains("MS_NODEV")),
            "{:#?}",
            rec.calls
        );
        req.root = RootSource::Fuse {
            image: "/img.sqfs".into(),
            fd: 9,
            uid: 1000,
            gid: 100,
        };
        let mut rec = Recorder::default();
        apply_plan(&mut rec, &plan(&req)).expect("fuse");
        assert!(
            rec.calls.iter().any(|c| c
                .starts_with("mount Some(\"cairn\") /newroot Some(\"fuse.cairn\")")
                && c.contains("fd=9,rootmode=40000,user_id=1000,group_id=100")
                && c.contains("allow_other")
                && c.contains("MS_RDONLY")),
            "{:#?}",
            rec.calls
        );
    }
}
