//! `-b/--bind SRC[:DST[:ro]]`: the checks against the host and the image
//! that turn a parsed spec (`spec::bind`) into a bind the mount plan can use.
//!
//! Every refusal gets its own error (`spec::bind::BindError`): missing
//! source, destination missing in the image (or under a host directory
//! inside, or behind `..`, where even `-w` cannot create it), destination a
//! symlink that leads out of the image. Errors about a destination reached
//! through an image symlink name that symlink.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::mount::plan::BindMount;
use crate::run::tree::{ImageTree, Kind};
pub use crate::spec::bind::{
    BindError, BindSpec, MAX_SYMLINKS, Via, normalize_absolute, parse_bind,
};

/// Check a parsed bind: the source exists (relative to `cwd`), the
/// destination exists in the image and does not lead out of it. With
/// `writable` (an overlay over the image) a missing destination is created:
/// its missing directories, and an empty file when the source is a file.
/// `host_dirs` are the container's directories that come from the host
/// (`/dev`, `/tmp`, the bound home, ...): a mount point made in the image
/// under one of them would be hidden by it, so a destination missing there
/// is refused, as is one whose missing part climbs back with `..` (an image
/// symlink's target): neither can be created, `-w` or not.
pub fn check_bind<T: ImageTree + ?Sized>(
    spec: &BindSpec,
    cwd: &Path,
    image: &T,
    writable: bool,
    host_dirs: &[PathBuf],
) -> Result<BindMount, BindError> {
    let src = cwd.join(&spec.src);
    let src = src
        .canonicalize()
        .map_err(|_| BindError::MissingSource { src: src.clone() })?;
    let Resolved {
        existing,
        missing,
        via,
    } = resolve_traced(image, &spec.dst)?;
    if missing.is_empty() {
        return Ok(BindMount {
            src,
            dst: existing,
            read_only: spec.read_only,
            ..BindMount::default()
        });
    }
    // Where the mount point would be: a plain join, to show it as the
    // kernel would walk it (`..` kept).
    let resolved = missing.iter().fold(existing.clone(), |p, c| p.join(c));
    let dst = spec.dst.clone();
    let image_path = image.image_path().to_path_buf();
    if missing.iter().any(|c| c == "." || c == "..") {
        return Err(BindError::UncreatableDestination { dst, via, resolved });
    }
    if let Some(dir) = host_dirs.iter().find(|d| resolved.starts_with(d)) {
        return Err(BindError::UnderHostDirectory {
            dst,
            via,
            host_dir: dir.clone(),
        });
    }
    if !writable {
        return Err(match via.0 {
            None => BindError::MissingDestination {
                dst,
                image: image_path,
            },
            Some(_) => BindError::MissingBehindSymlink {
                dst,
                via,
                image: image_path,
            },
        });
    }
    Ok(created_mount_point(src, existing, &missing, spec.read_only))
}

/// A bind whose destination is `existing` (in the image) plus the `missing`
/// components: those become directories to create in order, the last one
/// an empty file instead when `src` is not a directory.
pub fn created_mount_point(
    src: PathBuf,
    existing: PathBuf,
    missing: &[OsString],
    read_only: bool,
) -> BindMount {
    let mut path = existing;
    let mut create_dirs = Vec::new();
    for comp in missing {
        path.push(comp);
        create_dirs.push(path.clone());
    }
    let create_file = if src.is_dir() {
        None
    } else {
        create_dirs.pop()
    };
    BindMount {
        src,
        dst: path,
        read_only,
        create_dirs,
        create_file,
        masks: Vec::new(),
    }
}

/// The host path of an absolute path inside the image.
pub fn under_image(image: &Path, inside: &Path) -> PathBuf {
    image.join(inside.strip_prefix("/").unwrap_or(inside))
}

/// Resolve an absolute path inside the image the way the job will see it:
/// the image is the root, so an absolute symlink (`/var/run -> /run`) means
/// the image's `/run`. The result has no symlink left, so the mount lands
/// where the job looks even though it is made before pivot_root. A symlink
/// whose `..` climbs above the image root leads out of the image: refused,
/// and so is the image root itself as a destination.
pub fn resolve_in_image<T: ImageTree + ?Sized>(
    image: &T,
    dst: &Path,
) -> Result<PathBuf, BindError> {
    let (resolved, missing) = resolve_partially(image, dst)?;
    if missing.is_empty() {
        Ok(resolved)
    } else {
        Err(BindError::MissingDestination {
            dst: dst.to_path_buf(),
            image: image.image_path().to_path_buf(),
        })
    }
}

/// [`resolve_in_image`] up to the first missing component: the resolved
/// existing part and the components left over (empty when all exist).
pub fn resolve_partially<T: ImageTree + ?Sized>(
    image: &T,
    dst: &Path,
) -> Result<(PathBuf, Vec<OsString>), BindError> {
    let r = resolve_traced(image, dst)?;
    Ok((r.existing, r.missing))
}

/// A destination resolved in the image up to its first missing component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The existing part, symlinks resolved.
    pub existing: PathBuf,
    /// The components left over (empty when all exist).
    pub missing: Vec<OsString>,
    /// The last image symlink followed, for messages.
    pub via: Via,
}

/// [`resolve_partially`], also naming the last image symlink followed.
pub fn resolve_traced<T: ImageTree + ?Sized>(image: &T, dst: &Path) -> Result<Resolved, BindError> {
    let missing = || BindError::MissingDestination {
        dst: dst.to_path_buf(),
        image: image.image_path().to_path_buf(),
    };
    let mut resolved = PathBuf::from("/");
    let mut pending: VecDeque<OsString> = VecDeque::new();
    let push_front = |pending: &mut VecDeque<OsString>, path: &Path| {
        for comp in path.components().rev() {
            pending.push_front(comp.as_os_str().to_os_string());
        }
    };
    push_front(&mut pending, dst);
    let mut followed = 0;
    // Set once a symlink was followed: a `..` above the root is then an
    // escape attempt (in the spec itself it was refused by the parser).
    let mut via = Via(None);
    while let Some(comp) = pending.pop_front() {
        match comp.to_str() {
            Some("/") => resolved = PathBuf::from("/"),
            Some(".") | Some("") => {}
            Some("..") => {
                if !resolved.pop() && via.0.is_some() {
                    return Err(BindError::DestinationOutsideImage {
                        dst: dst.to_path_buf(),
                        via,
                    });
                }
            }
            _ => {
                let candidate = resolved.join(&comp);
                let Some(kind) = image.kind(&candidate) else {
                    let mut rest = vec![comp];
                    rest.extend(pending);
                    return Ok(Resolved {
                        existing: resolved,
                        missing: rest,
                        via,
                    });
                };
                if kind == Kind::Symlink {
                    followed += 1;
                    if followed > MAX_SYMLINKS {
                        return Err(BindError::SymlinkLoop {
                            dst: dst.to_path_buf(),
                            link: candidate,
                        });
                    }
                    let target = image.read_link(&candidate).ok_or_else(missing)?;
                    push_front(&mut pending, &target);
                    via = Via(Some(Box::new((candidate, target))));
                } else {
                    resolved = candidate;
                }
            }
        }
    }
    if resolved == Path::new("/") {
        return Err(BindError::DestinationIsRoot {
            dst: dst.to_path_buf(),
        });
    }
    Ok(Resolved {
        existing: resolved,
        missing: Vec::new(),
        via,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(spec: &str) -> BindSpec {
        parse_bind(spec).expect(spec)
    }

    fn check_bind_ro(spec: &BindSpec, cwd: &Path, image: &Path) -> Result<BindMount, BindError> {
        check_bind(spec, cwd, image, false, &[])
    }

    #[test]
    fn writable_images_get_missing_destinations_created() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("img/opt")).expect("mkdir");
        std::fs::create_dir_all(dir.path().join("host")).expect("mkdir");
        std::fs::write(dir.path().join("file"), "x").expect("write");
        let image = dir.path().join("img").canonicalize().expect("canon");
        let cwd = dir.path();
        let b = check_bind(&ok("host:/opt/a/b"), cwd, &image, true, &[]).expect("dir");
        assert_eq!(b.dst, PathBuf::from("/opt/a/b"));
        assert_eq!(
            b.create_dirs,
            vec![PathBuf::from("/opt/a"), PathBuf::from("/opt/a/b")]
        );
        assert_eq!(b.create_file, None);
        let b = check_bind(&ok("file:/opt/f"), cwd, &image, true, &[]).expect("file");
        assert!(b.create_dirs.is_empty());
        assert_eq!(b.create_file, Some(PathBuf::from("/opt/f")));
        assert!(matches!(
            check_bind(&ok("host:/opt/a/b"), cwd, &image, false, &[]),
            Err(BindError::MissingDestination { .. })
        ));
        // Nothing to create when it exists.
        let b = check_bind(&ok("host:/opt"), cwd, &image, true, &[]).expect("exists");
        assert!(b.create_dirs.is_empty() && b.create_file.is_none());
    }

    #[test]
    fn destinations_that_cannot_be_created_name_the_symlink() {
        let dir = tempfile::tempdir().expect("tempdir");
        for d in ["img/tmp", "img/opt", "host"] {
            std::fs::create_dir_all(dir.path().join(d)).expect("mkdir");
        }
        let link = |target: &str, name: &str| {
            std::os::unix::fs::symlink(target, dir.path().join("img").join(name)).expect("ln");
        };
        link("/tmp/x", "to-tmp");
        link("/nowhere/../../x", "climbs");
        link("/opt/new", "dangling");
        let image = dir.path().join("img").canonicalize().expect("canon");
        let cwd = dir.path();
        let host_dirs = [PathBuf::from("/dev"), PathBuf::from("/tmp")];
        for writable in [false, true] {
            let check = |spec: &str| check_bind(&ok(spec), cwd, &image, writable, &host_dirs);
            // Into the host's /tmp: the mount point would be hidden by it.
            let err = check("host:/to-tmp").expect_err("to-tmp");
            assert!(
                matches!(&err, BindError::UnderHostDirectory { host_dir, .. }
                    if host_dir == Path::new("/tmp")),
                "{err:?}"
            );
            let msg = err.to_string();
            assert!(
                msg.contains("symlink /to-tmp -> /tmp/x") && !msg.contains("--writable-tmpfs can"),
                "{msg}"
            );
            // Written straight under /tmp too.
            let err = check("host:/tmp/y").expect_err("tmp/y");
            assert!(
                matches!(err, BindError::UnderHostDirectory { .. }),
                "{err:?}"
            );
            // '..' after a missing directory: nothing to create.
            let err = check("host:/climbs").expect_err("climbs");
            assert!(
                matches!(err, BindError::UncreatableDestination { .. }),
                "{err:?}"
            );
            assert!(
                err.to_string().contains("/climbs -> /nowhere/../../x"),
                "{err}"
            );
        }
        // A dangling link inside the image: -w creates its target.
        let err =
            check_bind(&ok("host:/dangling"), cwd, &image, false, &host_dirs).expect_err("ro");
        let msg = err.to_string();
        assert!(
            msg.contains("/dangling -> /opt/new") && msg.contains("--writable-tmpfs can"),
            "{msg}"
        );
        let b = check_bind(&ok("host:/dangling"), cwd, &image, true, &host_dirs).expect("-w");
        assert_eq!(b.dst, PathBuf::from("/opt/new"));
        assert_eq!(b.create_dirs, vec![PathBuf::from("/opt/new")]);
    }

    #[test]
    fn check_against_a_real_tree() {
        let dir = tempfile::tempdir().expect("tempdir");
        let image = dir.path().join("img").canonicalize();
        assert!(image.is_err());
        std::fs::create_dir_all(dir.path().join("img/mnt")).expect("mkdir");
        std::fs::create_dir_all(dir.path().join("img/opt")).expect("mkdir");
        std::fs::create_dir_all(dir.path().join("host")).expect("mkdir");
        std::os::unix::fs::symlink("../opt", dir.path().join("img/mnt/inner")).expect("ln");
        std::os::unix::fs::symlink("/", dir.path().join("img/mnt/out")).expect("ln");
        std::os::unix::fs::symlink("../../..", dir.path().join("img/mnt/up")).expect("ln");
        let image = dir.path().join("img").canonicalize().expect("canon");
        let cwd = dir.path();
        let checked = check_bind_ro(&ok("host:/mnt:ro"), cwd, &image).expect("check");
        assert_eq!(checked.dst, PathBuf::from("/mnt"));
        assert!(checked.read_only);
        let checked = check_bind_ro(&ok("host:/mnt/inner"), cwd, &image).expect("check");
        assert_eq!(checked.dst, PathBuf::from("/opt"));
        assert!(matches!(
            check_bind_ro(&ok("nothere:/mnt"), cwd, &image),
            Err(BindError::MissingSource { .. })
        ));
        assert!(matches!(
            check_bind_ro(&ok("host:/nothere"), cwd, &image),
            Err(BindError::MissingDestination { .. })
        ));
        assert!(matches!(
            check_bind_ro(&ok("host:/mnt/out"), cwd, &image),
            Err(BindError::DestinationIsRoot { .. })
        ));
        assert!(matches!(
            check_bind_ro(&ok("host:/"), cwd, &image),
            Err(BindError::DestinationIsRoot { .. })
        ));
        // Absolute symlinks are the image's own: /mnt/abs -> /opt.
        std::os::unix::fs::symlink("/opt", dir.path().join("img/mnt/abs")).expect("ln");
        let checked = check_bind_ro(&ok("host:/mnt/abs"), cwd, &image).expect("abs");
        assert_eq!(checked.dst, PathBuf::from("/opt"));
        // A loop is refused rather than followed forever.
        std::os::unix::fs::symlink("loop", dir.path().join("img/mnt/loop")).expect("ln");
        assert!(check_bind_ro(&ok("host:/mnt/loop"), cwd, &image).is_err());
        // A dangling link is a missing destination (the link named).
        std::os::unix::fs::symlink("/nowhere", dir.path().join("img/mnt/dangling")).expect("ln");
        assert!(matches!(
            check_bind_ro(&ok("host:/mnt/dangling"), cwd, &image),
            Err(BindError::MissingBehindSymlink { .. })
        ));
        assert!(matches!(
            check_bind_ro(&ok("host:/mnt/up"), cwd, &image),
            Err(BindError::DestinationOutsideImage { .. })
        ));
    }
}
