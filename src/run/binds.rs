//! `-b/--bind SRC[:DST[:ro]]`: parsing (pure) and the checks against the host
//! and the image that turn a spec into a bind the mount plan can use.
//!
//! Every malformed form gets its own error: empty, empty source, relative or
//! `..`-escaping destination, unknown option, a bad escape, missing source,
//! destination missing in the image (or under a host directory inside, or
//! behind `..`, where even `-w` cannot create it), destination a symlink
//! that leads out of the image. Errors about a destination reached through
//! an image symlink name that symlink.
//!
//! A `:` inside a path is written `\:` and a backslash `\\` (Apptainer's
//! escape for the same spec); any other backslash is refused rather than
//! guessed at, so that every spec has exactly one meaning.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

use crate::mount::plan::Mask;
use crate::run::tree::{ImageTree, Kind};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BindError {
    #[error("empty bind spec (expected SRC[:DST[:ro]])")]
    Empty,
    #[error("bind {spec:?}: empty source path")]
    EmptySource { spec: String },
    #[error("bind {spec:?}: empty destination path")]
    EmptyDestination { spec: String },
    #[error("bind {spec:?}: destination {dst:?} must be an absolute path inside the image")]
    RelativeDestination { spec: String, dst: String },
    #[error("bind {spec:?}: destination {dst:?} escapes the image root with '..'")]
    EscapingDestination { spec: String, dst: String },
    #[error(
        "bind {spec:?}: unknown option {option:?} (only 'ro' or 'rw'; write \\: for a ':' inside a path)"
    )]
    UnknownOption { spec: String, option: String },
    #[error(
        "bind {spec:?}: too many ':' fields (expected SRC[:DST[:ro]]; write \\: for a ':' inside a path)"
    )]
    TooManyFields { spec: String },
    #[error(
        "bind {spec:?}: a '\\' must be followed by ':' or '\\' (\\: is a ':' inside a path, \\\\ a backslash)"
    )]
    BadEscape { spec: String },
    #[error("bind source {src} does not exist or cannot be reached")]
    MissingSource { src: PathBuf },
    #[error(
        "bind destination {dst} does not exist in the image {image} (a read-only image cannot create it; --writable-tmpfs can)"
    )]
    MissingDestination { dst: PathBuf, image: PathBuf },
    #[error(
        "bind destination {dst}{via} does not exist in the image {image} (a read-only image cannot create it; --writable-tmpfs can)"
    )]
    MissingBehindSymlink {
        dst: PathBuf,
        via: Via,
        image: PathBuf,
    },
    #[error(
        "bind destination {dst}{via} is {resolved}, which does not exist in the image and cannot be created, with or without --writable-tmpfs ('..' after a missing directory)"
    )]
    UncreatableDestination {
        dst: PathBuf,
        via: Via,
        resolved: PathBuf,
    },
    #[error(
        "bind destination {dst}{via} is missing in the image under {host_dir}, which is the host's directory inside the container: cairn cannot create a mount point there (with or without --writable-tmpfs)"
    )]
    UnderHostDirectory {
        dst: PathBuf,
        via: Via,
        host_dir: PathBuf,
    },
    #[error("bind destination {dst}{via} leads out of the image ('..' above its root)")]
    DestinationOutsideImage { dst: PathBuf, via: Via },
    #[error(
        "bind destination {dst}: more than {MAX_SYMLINKS} image symlinks to follow (a loop?) at {link}"
    )]
    SymlinkLoop { dst: PathBuf, link: PathBuf },
    #[error("bind destination {dst} is the image root itself")]
    DestinationIsRoot { dst: PathBuf },
}

/// A parsed bind spec: `src` as given (maybe relative), `dst` absolute and
/// lexically normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindSpec {
    pub src: PathBuf,
    pub dst: PathBuf,
    pub read_only: bool,
}

/// Split a spec at its unescaped `:`s and undo the escapes (`\:` a colon,
/// `\\` a backslash); `None` for any other backslash, a trailing one too.
fn split_fields(spec: &str) -> Option<Vec<String>> {
    let mut fields = vec![String::new()];
    let mut chars = spec.chars();
    while let Some(c) = chars.next() {
        let field = fields.last_mut()?;
        match c {
            '\\' => match chars.next() {
                Some(escaped @ (':' | '\\')) => field.push(escaped),
                _ => return None,
            },
            ':' => fields.push(String::new()),
            other => field.push(other),
        }
    }
    Some(fields)
}

/// Parse `SRC[:DST[:ro|rw]]`; DST defaults to SRC (which must then be absolute).
/// `\:` is a `:` inside SRC or DST, `\\` a backslash.
pub fn parse_bind(spec: &str) -> Result<BindSpec, BindError> {
    if spec.is_empty() {
        return Err(BindError::Empty);
    }
    let owned = || spec.to_string();
    let fields = split_fields(spec).ok_or_else(|| BindError::BadEscape { spec: owned() })?;
    let mut fields = fields.iter().map(String::as_str);
    let src = fields.next().unwrap_or_default();
    let dst = fields.next();
    let option = fields.next();
    if fields.next().is_some() {
        return Err(BindError::TooManyFields { spec: owned() });
    }
    if src.is_empty() {
        return Err(BindError::EmptySource { spec: owned() });
    }
    let read_only = match option {
        None | Some("rw") => false,
        Some("ro") => true,
        Some(other) => {
            return Err(BindError::UnknownOption {
                spec: owned(),
                option: other.to_string(),
            });
        }
    };
    let dst = match dst {
        None => src,
        Some("") => return Err(BindError::EmptyDestination { spec: owned() }),
        Some(d) => d,
    };
    if !dst.starts_with('/') {
        return Err(BindError::RelativeDestination {
            spec: owned(),
            dst: dst.to_string(),
        });
    }
    let dst_norm =
        normalize_absolute(Path::new(dst)).ok_or_else(|| BindError::EscapingDestination {
            spec: owned(),
            dst: dst.to_string(),
        })?;
    Ok(BindSpec {
        src: PathBuf::from(src),
        dst: dst_norm,
        read_only,
    })
}

/// Lexically normalise an absolute path (`.` dropped, `..` applied); `None`
/// when a `..` would climb above `/`.
pub fn normalize_absolute(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::from("/");
    for comp in path.components() {
        match comp {
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Normal(n) => out.push(n),
            Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// The image symlink a bind destination went through, for messages: the
/// last one followed (path inside the image, target as stored), if any.
/// Boxed: errors that carry it stay small.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Via(pub Option<Box<(PathBuf, PathBuf)>>);

impl std::fmt::Display for Via {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.as_deref() {
            Some((link, target)) => write!(
                f,
                " (through the image's symlink {} -> {})",
                link.display(),
                target.display()
            ),
            None => Ok(()),
        }
    }
}

/// A bind checked against the host and the image: `src` absolute and
/// canonical, `dst` the path inside the image after resolving the image's
/// own symlinks (so the mount lands where the job will look).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CheckedBind {
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
) -> Result<CheckedBind, BindError> {
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
        return Ok(CheckedBind {
            src,
            dst: existing,
            read_only: spec.read_only,
            ..CheckedBind::default()
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
) -> CheckedBind {
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
    CheckedBind {
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

/// At most this many symlinks are followed while resolving (as the kernel's
/// ELOOP limit).
const MAX_SYMLINKS: usize = 40;

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

    #[test]
    fn source_only_binds_at_the_same_path() {
        assert_eq!(
            ok("/data"),
            BindSpec {
                src: "/data".into(),
                dst: "/data".into(),
                read_only: false
            }
        );
    }

    #[test]
    fn source_and_destination() {
        let b = ok("/scratch/x:/mnt");
        assert_eq!(b.src, PathBuf::from("/scratch/x"));
        assert_eq!(b.dst, PathBuf::from("/mnt"));
        assert!(!b.read_only);
    }

    #[test]
    fn read_only_and_read_write_options() {
        assert!(ok("/a:/mnt:ro").read_only);
        assert!(!ok("/a:/mnt:rw").read_only);
    }

    #[test]
    fn relative_source_is_kept_for_the_check() {
        assert_eq!(ok("data:/mnt").src, PathBuf::from("data"));
    }

    #[test]
    fn destination_is_normalised() {
        assert_eq!(ok("/a:/mnt/./x/../y/").dst, PathBuf::from("/mnt/y"));
    }

    #[test]
    fn each_malformed_form_has_its_own_error() {
        assert_eq!(parse_bind(""), Err(BindError::Empty));
        assert!(matches!(
            parse_bind(":/mnt"),
            Err(BindError::EmptySource { .. })
        ));
        assert!(matches!(
            parse_bind("/a:"),
            Err(BindError::EmptyDestination { .. })
        ));
        assert!(matches!(
            parse_bind("/a:mnt"),
            Err(BindError::RelativeDestination { .. })
        ));
        assert!(matches!(
            parse_bind("data"),
            Err(BindError::RelativeDestination { .. })
        ));
        assert!(matches!(
            parse_bind("/a:/../etc"),
            Err(BindError::EscapingDestination { .. })
        ));
        assert!(matches!(
            parse_bind("/a:/mnt:rx"),
            Err(BindError::UnknownOption { .. })
        ));
        assert!(matches!(
            parse_bind("/a:/mnt:ro:x"),
            Err(BindError::TooManyFields { .. })
        ));
    }

    #[test]
    fn escaped_colons_and_backslashes_are_part_of_the_path() {
        let b = ok(r"/data/run\:1:/mnt/a\:b:ro");
        assert_eq!(b.src, PathBuf::from("/data/run:1"));
        assert_eq!(b.dst, PathBuf::from("/mnt/a:b"));
        assert!(b.read_only);
        // The destination defaults to the unescaped source.
        assert_eq!(ok(r"/x\:y").dst, PathBuf::from("/x:y"));
        assert_eq!(ok(r"/back\\slash").src, PathBuf::from(r"/back\slash"));
        // `\\:` is a backslash, then a field separator.
        let b = ok(r"/a\\:/mnt");
        assert_eq!(
            (b.src, b.dst),
            (PathBuf::from(r"/a\"), PathBuf::from("/mnt"))
        );
        for bad in [r"/a\b:/mnt", r"/a:/mnt\", r"\", r"/a\ro"] {
            assert_eq!(
                parse_bind(bad),
                Err(BindError::BadEscape { spec: bad.into() }),
                "{bad}"
            );
        }
        let msg = parse_bind("/a:b:/c:ro").expect_err("fields").to_string();
        assert!(msg.contains(r"\:"), "{msg}");
    }

    #[test]
    fn normalize_rejects_climbing_above_root() {
        assert_eq!(normalize_absolute(Path::new("/a/../..")), None);
        assert_eq!(normalize_absolute(Path::new("/")), Some(PathBuf::from("/")));
        assert_eq!(
            normalize_absolute(Path::new("/a/b/..")),
            Some(PathBuf::from("/a"))
        );
    }

    fn check_bind_ro(spec: &BindSpec, cwd: &Path, image: &Path) -> Result<CheckedBind, BindError> {
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
