//! Checking container edits (`spec::edits`: what a site default, a hook
//! (`--hook NAME`) or a CDI device (`--device vendor.com/class=name`) adds
//! to a run: binds, environment changes and device nodes). Config and CDI
//! both produce that one shape; `request::prepare` applies them in order,
//! after the image config and before the user's own `--env` options (and
//! their binds before the user's `-b`, so the user wins in both).
//!
//! [`check_edits`] turns them into what the planner needs, with every check
//! done before any namespace exists:
//! - a bind's source must exist (canonical); a destination missing in a
//!   read-only image becomes a [`SkeletonEntry`] (a mount point in a
//!   read-only overlay layer above the image, see `mount::plan`; with
//!   `--writable-tmpfs` the same layer lies under the upper layer).
//!   A missing destination under a directory that is the host's inside
//!   (`/dev`, `/proc`, `/sys`, `/tmp`, the bound home) is refused: a mount
//!   point there would have to be created on the host.
//! - a device node must exist on the host as a character or block device
//!   (an unprivileged user namespace cannot mknod, so the host's node is
//!   bound). The container's `/dev` is the host's `/dev` (recursive bind):
//!   a device at the same path under `/dev` is already there and costs no
//!   mount; a different path under `/dev` must already exist on the host (it
//!   is bound over, in this mount namespace only), since cairn cannot create
//!   a file in the host's `/dev`; a path outside `/dev` is bound like any
//!   edit bind, its mount point created in the skeleton when missing.
//! - environment edits become [`EnvOp`]s placed before the user's.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use crate::mount::plan::BindMount;
use crate::mount::plan::SkeletonEntry;
use crate::run::binds::{self, BindError};
use crate::run::env::EnvOp;
use crate::run::tree::ImageTree;
pub use crate::spec::edits::{ContainerEdits, DeviceNode, EditBind, EnvEdit, NamedEdits};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EditError {
    #[error("{origin}: bind source {src} must be an absolute path")]
    RelativeSource { origin: String, src: PathBuf },
    #[error("{origin}: bind source {src} does not exist")]
    MissingSource { origin: String, src: PathBuf },
    #[error("{origin}: bind destination {dst} must be an absolute path without '..' above /")]
    BadDestination { origin: String, dst: PathBuf },
    #[error("{origin}: bind destination {dst}")]
    Destination {
        origin: String,
        dst: PathBuf,
        #[source]
        source: BindError,
    },
    #[error(
        "{origin}: bind destination {dst} is missing in the image and lies under {host_dir}, which is a host directory inside the container (cairn cannot create a mount point there)"
    )]
    UnderHostDirectory {
        origin: String,
        dst: PathBuf,
        host_dir: PathBuf,
    },
    #[error("{origin}: device {path} must be an absolute path")]
    RelativeDevice { origin: String, path: PathBuf },
    #[error("{origin}: device node {host_path} does not exist on the host")]
    MissingDevice { origin: String, host_path: PathBuf },
    #[error("{origin}: {host_path} on the host is not a character or block device")]
    NotADevice { origin: String, host_path: PathBuf },
    #[error(
        "{origin}: device {host_path} cannot appear at {path}: the container's /dev is the host's, which has no {path} to bind over (use the same path, or one outside /dev)"
    )]
    DeviceInHostDev {
        origin: String,
        host_path: PathBuf,
        path: PathBuf,
    },
}

/// Container edits checked against the host and the image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckedEdits {
    /// Binds (device nodes included), in order; mounted before the user's.
    pub binds: Vec<BindMount>,
    /// Mount points the image lacks.
    pub skeleton: Vec<SkeletonEntry>,
    /// Environment operations, placed before the user's.
    pub env: Vec<EnvOp>,
}

/// What the container's tree has from the host rather than the image
/// (gathered by `prepare`): missing mount points cannot be created there.
#[derive(Debug, Clone, Default)]
pub struct HostDirs {
    /// Paths inside bound from the host (`/dev`, `/proc`, `/sys`, `/tmp`,
    /// the home target).
    pub dirs: Vec<PathBuf>,
    /// Is `/dev` the host's `/dev`?
    pub host_dev: bool,
}

/// Check every edit in order: sources and device nodes on the host,
/// destinations in the image (see the module doc).
pub fn check_edits<T: ImageTree + ?Sized>(
    edits: &[NamedEdits],
    image: &T,
    host: &HostDirs,
) -> Result<CheckedEdits, EditError> {
    let mut out = CheckedEdits::default();
    for named in edits {
        let origin = named.origin.as_str();
        for device in &named.edits.devices {
            if let Some(bind) = check_device(origin, device, image, host)? {
                out.binds.push(bind);
            }
        }
        for bind in &named.edits.binds {
            out.binds.push(check_edit_bind(origin, bind, image, host)?);
        }
        out.env.extend(named.edits.env.iter().map(env_op));
    }
    into_skeleton(&mut out.binds, &mut out.skeleton);
    Ok(out)
}

/// Move the mount points binds need created into the skeleton layer (which
/// lies under the writable overlay's upper layer too: creating them there
/// would need write permission on the image's own directories).
pub fn into_skeleton(binds: &mut [BindMount], skeleton: &mut Vec<SkeletonEntry>) {
    for bind in binds {
        for dir in std::mem::take(&mut bind.create_dirs) {
            push_once(skeleton, SkeletonEntry::Dir(dir));
        }
        if let Some(file) = bind.create_file.take() {
            push_once(skeleton, SkeletonEntry::File(file));
        }
    }
}

fn push_once(entries: &mut Vec<SkeletonEntry>, entry: SkeletonEntry) {
    if !entries.contains(&entry) {
        entries.push(entry);
    }
}

/// The environment operation of an edit.
pub fn env_op(edit: &EnvEdit) -> EnvOp {
    match edit {
        EnvEdit::Set(k, v) => EnvOp::Set(k.into(), v.into()),
        EnvEdit::Prepend(k, v) => EnvOp::Prepend(k.into(), v.into()),
        EnvEdit::Append(k, v) => EnvOp::Append(k.into(), v.into()),
        EnvEdit::Unset(glob) => EnvOp::Unset(glob.clone()),
    }
}

/// A hook's or device's bind: unlike `-b`, a missing destination becomes a
/// mount point to create (in the skeleton or the writable overlay).
fn check_edit_bind<T: ImageTree + ?Sized>(
    origin: &str,
    bind: &EditBind,
    image: &T,
    host: &HostDirs,
) -> Result<BindMount, EditError> {
    if !bind.src.is_absolute() {
        return Err(EditError::RelativeSource {
            origin: origin.into(),
            src: bind.src.clone(),
        });
    }
    let src = bind
        .src
        .canonicalize()
        .map_err(|_| EditError::MissingSource {
            origin: origin.into(),
            src: bind.src.clone(),
        })?;
    let dst = binds::normalize_absolute(&bind.dst)
        .filter(|_| bind.dst.is_absolute())
        .ok_or_else(|| EditError::BadDestination {
            origin: origin.into(),
            dst: bind.dst.clone(),
        })?;
    mount_point(origin, src, &dst, bind.read_only, image, host)
}

/// Resolve `dst` in the image; the missing components become directories
/// to create, the last one an empty file when `src` is not a directory.
fn mount_point<T: ImageTree + ?Sized>(
    origin: &str,
    src: PathBuf,
    dst: &Path,
    read_only: bool,
    image: &T,
    host: &HostDirs,
) -> Result<BindMount, EditError> {
    let wrap = |source| EditError::Destination {
        origin: origin.into(),
        dst: dst.to_path_buf(),
        source,
    };
    let (existing, missing) = binds::resolve_partially(image, dst).map_err(wrap)?;
    if missing.is_empty() {
        return Ok(BindMount {
            src,
            dst: existing,
            read_only,
            ..BindMount::default()
        });
    }
    // A symlink in the image may lead here with `..` left in the rest.
    if missing.iter().any(|c| c == "." || c == "..") {
        return Err(wrap(BindError::MissingDestination {
            dst: dst.to_path_buf(),
            image: image.image_path().to_path_buf(),
        }));
    }
    let bind = binds::created_mount_point(src, existing, &missing, read_only);
    if let Some(dir) = host.dirs.iter().find(|d| bind.dst.starts_with(d)) {
        return Err(EditError::UnderHostDirectory {
            origin: origin.into(),
            dst: dst.to_path_buf(),
            host_dir: dir.clone(),
        });
    }
    Ok(bind)
}

/// A device node: `None` when it is already there (same path in the host's
/// `/dev`), else the bind that puts it in place.
fn check_device<T: ImageTree + ?Sized>(
    origin: &str,
    device: &DeviceNode,
    image: &T,
    host: &HostDirs,
) -> Result<Option<BindMount>, EditError> {
    for p in [&device.host_path, &device.path] {
        if !p.is_absolute() {
            return Err(EditError::RelativeDevice {
                origin: origin.into(),
                path: p.clone(),
            });
        }
    }
    let missing = || EditError::MissingDevice {
        origin: origin.into(),
        host_path: device.host_path.clone(),
    };
    let meta = std::fs::metadata(&device.host_path).map_err(|_| missing())?;
    let kind = meta.file_type();
    if !kind.is_char_device() && !kind.is_block_device() {
        return Err(EditError::NotADevice {
            origin: origin.into(),
            host_path: device.host_path.clone(),
        });
    }
    let path =
        binds::normalize_absolute(&device.path).ok_or_else(|| EditError::RelativeDevice {
            origin: origin.into(),
            path: device.path.clone(),
        })?;
    if host.host_dev && path.starts_with("/dev") {
        let host_path = binds::normalize_absolute(&device.host_path);
        if host_path.as_deref() == Some(path.as_path()) {
            return Ok(None);
        }
        // The container's /dev is the host's: bind over a node that exists
        // there (a mount in this namespace only; the host never sees it).
        if std::fs::symlink_metadata(&path).is_err() {
            return Err(EditError::DeviceInHostDev {
                origin: origin.into(),
                host_path: device.host_path.clone(),
                path,
            });
        }
        return Ok(Some(BindMount {
            src: device.host_path.clone(),
            dst: path,
            read_only: false,
            ..BindMount::default()
        }));
    }
    let host_dirs = HostDirs {
        dirs: host
            .dirs
            .iter()
            .filter(|d| !(host.host_dev && d.as_path() == Path::new("/dev")))
            .cloned()
            .collect(),
        host_dev: host.host_dev,
    };
    mount_point(
        origin,
        device.host_path.clone(),
        &path,
        false,
        image,
        &host_dirs,
    )
    .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(origin: &str, edits: ContainerEdits) -> NamedEdits {
        NamedEdits {
            origin: origin.into(),
            edits,
        }
    }

    fn image(dir: &Path) -> PathBuf {
        let image = dir.join("img");
        for d in ["dev", "usr/local", "opt", "tmp"] {
            std::fs::create_dir_all(image.join(d)).expect("mkdir");
        }
        std::os::unix::fs::symlink("/usr/local", image.join("local")).expect("ln");
        image.canonicalize().expect("canon")
    }

    fn host_dirs() -> HostDirs {
        HostDirs {
            dirs: vec!["/dev".into(), "/tmp".into()],
            host_dev: true,
        }
    }

    fn bind(src: &Path, dst: &str, read_only: bool) -> EditBind {
        EditBind {
            src: src.to_path_buf(),
            dst: dst.into(),
            read_only,
        }
    }

    #[test]
    fn missing_destinations_become_skeleton_entries_in_read_only_images() {
        let dir = tempfile::tempdir().expect("tmp");
        let image = image(dir.path());
        let lib = dir.path().join("lib");
        std::fs::create_dir(&lib).expect("mkdir");
        let file = dir.path().join("libx.so");
        std::fs::write(&file, "x").expect("write");
        let lib = lib.canonicalize().expect("canon");
        let edits = vec![named(
            "hook mpi",
            ContainerEdits {
                binds: vec![
                    bind(&lib, "/local/nvidia/lib", true),
                    bind(&file, "/local/nvidia/libx.so", false),
                    bind(&lib, "/opt", false),
                ],
                env: vec![EnvEdit::Prepend(
                    "LD_LIBRARY_PATH".into(),
                    "/usr/local/nvidia/lib".into(),
                )],
                devices: vec![],
            },
        )];
        let checked = check_edits(&edits, &image, &host_dirs()).expect("check");
        // Resolved through the image's own symlink /local -> /usr/local.
        assert_eq!(checked.binds[0].dst, PathBuf::from("/usr/local/nvidia/lib"));
        assert!(checked.binds[0].read_only);
        assert!(
            checked
                .binds
                .iter()
                .all(|b| b.create_dirs.is_empty() && b.create_file.is_none())
        );
        assert_eq!(
            checked.skeleton,
            vec![
                SkeletonEntry::Dir("/usr/local/nvidia".into()),
                SkeletonEntry::Dir("/usr/local/nvidia/lib".into()),
                SkeletonEntry::File("/usr/local/nvidia/libx.so".into()),
            ]
        );
        assert_eq!(
            checked.env,
            vec![EnvOp::Prepend(
                "LD_LIBRARY_PATH".into(),
                "/usr/local/nvidia/lib".into()
            )]
        );
    }

    #[test]
    fn each_bad_bind_names_its_origin() {
        let dir = tempfile::tempdir().expect("tmp");
        let image = image(dir.path());
        let check = |b: EditBind| {
            check_edits(
                &[named(
                    "hook mpi",
                    ContainerEdits {
                        binds: vec![b],
                        ..ContainerEdits::default()
                    },
                )],
                &image,
                &host_dirs(),
            )
            .expect_err("refused")
        };
        let err = check(bind(Path::new("/usr/lib/x/openmpi-nope"), "/opt/mpi", true));
        assert_eq!(
            err.to_string(),
            "hook mpi: bind source /usr/lib/x/openmpi-nope does not exist"
        );
        assert!(matches!(
            check(bind(Path::new("lib"), "/opt", true)),
            EditError::RelativeSource { .. }
        ));
        assert!(matches!(
            check(bind(dir.path(), "opt", true)),
            EditError::BadDestination { .. }
        ));
        assert!(matches!(
            check(bind(dir.path(), "/../x", true)),
            EditError::BadDestination { .. }
        ));
        let err = check(bind(dir.path(), "/tmp/new", true));
        assert!(
            matches!(err, EditError::UnderHostDirectory { .. }),
            "{err:?}"
        );
        assert!(err.to_string().starts_with("hook mpi: "), "{err}");
        assert!(matches!(
            check(bind(dir.path(), "/", true)),
            EditError::Destination {
                source: BindError::DestinationIsRoot { .. },
                ..
            }
        ));
    }

    #[test]
    fn devices_at_the_same_path_in_the_host_dev_cost_nothing() {
        let dir = tempfile::tempdir().expect("tmp");
        let image = image(dir.path());
        let device = |host: &str, path: &str| DeviceNode {
            host_path: host.into(),
            path: path.into(),
        };
        let check = |d: DeviceNode| {
            check_edits(
                &[named(
                    "device cairn.test/gpu=0",
                    ContainerEdits {
                        devices: vec![d],
                        ..ContainerEdits::default()
                    },
                )],
                &image,
                &host_dirs(),
            )
        };
        let same = check(device("/dev/null", "/dev/null")).expect("same");
        assert!(same.binds.is_empty() && same.skeleton.is_empty());
        // Another existing node of the host's /dev: bound over.
        let over = check(device("/dev/null", "/dev/zero")).expect("over");
        assert_eq!(over.binds[0].src, PathBuf::from("/dev/null"));
        assert_eq!(over.binds[0].dst, PathBuf::from("/dev/zero"));
        assert!(over.skeleton.is_empty());
        // Outside /dev: a file mount point in the skeleton.
        let outside = check(device("/dev/null", "/opt/gpu0")).expect("outside");
        assert_eq!(
            outside.skeleton,
            vec![SkeletonEntry::File("/opt/gpu0".into())]
        );
        let err = check(device("/dev/null", "/dev/cairn-no-such-node")).expect_err("no node");
        assert!(matches!(err, EditError::DeviceInHostDev { .. }), "{err:?}");
        let err =
            check(device("/dev/cairn-no-such-gpu", "/dev/cairn-no-such-gpu")).expect_err("missing");
        assert_eq!(
            err.to_string(),
            "device cairn.test/gpu=0: device node /dev/cairn-no-such-gpu does not exist on the host"
        );
        let err = check(device("/etc/hostname", "/dev/x")).expect_err("not a device");
        assert!(
            matches!(
                err,
                EditError::NotADevice { .. } | EditError::MissingDevice { .. }
            ),
            "{err:?}"
        );
        assert!(matches!(
            check(device("dev/null", "/dev/null")),
            Err(EditError::RelativeDevice { .. })
        ));
    }
}
