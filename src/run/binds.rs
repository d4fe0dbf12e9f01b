//! `-b/--bind SRC[:DST[:ro]]`: parsing (pure) and the checks against the host
//! and the image that turn a spec into a bind the mount plan can use.
//!
//! Every malformed form gets its own error: empty, empty source, relative or
//! `..`-escaping destination, unknown option, a bad escape, missing source,
//! destination missing in the image, destination a symlink that leads out
//! of the image.
//!
//! A `:` inside a path is written `\:` and a backslash `\\` (Apptainer's
//! escape for the same spec); any other backslash is refused rather than
//! guessed at, so that every spec has exactly one meaning.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

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
    #[error("bind destination {dst} is a symlink that leads out of the image (at {resolved})")]
    DestinationOutsideImage { dst: PathBuf, resolved: PathBuf },
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
}

/// Check a parsed bind: the source exists (relative to `cwd`), the
/// destination exists in the image and does not lead out of it. With
/// `writable` (an overlay over the image) a missing destination is created:
/// its missing directories, and an empty file when the source is a file.
pub fn check_bind<T: ImageTree + ?Sized>(
    spec: &BindSpec,
    cwd: &Path,
    image: &T,
    writable: bool,
) -> Result<CheckedBind, BindError> {
    let src = cwd.join(&spec.src);
    let src = src
        .canonicalize()
        .map_err(|_| BindError::MissingSource { src: src.clone() })?;
    let (existing, missing) = resolve_partially(image, &spec.dst)?;
    if missing.is_empty() {
        return Ok(CheckedBind {
            src,
            dst: existing,
            read_only: spec.read_only,
            ..CheckedBind::default()
        });
    }
    let creatable = missing.iter().all(|c| c != "." && c != "..");
    if !writable || !creatable {
        return Err(BindError::MissingDestination {
            dst: spec.dst.clone(),
            image: image.image_path().to_path_buf(),
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
    let missing = || BindError::MissingDestination {
        dst: dst.to_path_buf(),
        image: image.image_path().to_path_buf(),
    };
    let outside = |resolved: PathBuf| BindError::DestinationOutsideImage {
        dst: dst.to_path_buf(),
        resolved,
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
    let mut via_link = false;
    while let Some(comp) = pending.pop_front() {
        match comp.to_str() {
            Some("/") => resolved = PathBuf::from("/"),
            Some(".") | Some("") => {}
            Some("..") => {
                if !resolved.pop() && via_link {
                    return Err(outside(PathBuf::from("..")));
                }
            }
            _ => {
                let candidate = resolved.join(&comp);
                let Some(kind) = image.kind(&candidate) else {
                    let mut rest = vec![comp];
                    rest.extend(pending);
                    return Ok((resolved, rest));
                };
                if kind == Kind::Symlink {
                    followed += 1;
                    if followed > MAX_SYMLINKS {
                        return Err(outside(candidate));
                    }
                    let target = image.read_link(&candidate).ok_or_else(missing)?;
                    via_link = true;
                    push_front(&mut pending, &target);
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
    Ok((resolved, Vec::new()))
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
        check_bind(spec, cwd, image, false)
    }

    #[test]
    fn writable_images_get_missing_destinations_created() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("img/opt")).expect("mkdir");
        std::fs::create_dir_all(dir.path().join("host")).expect("mkdir");
        std::fs::write(dir.path().join("file"), "x").expect("write");
        let image = dir.path().join("img").canonicalize().expect("canon");
        let cwd = dir.path();
        let b = check_bind(&ok("host:/opt/a/b"), cwd, &image, true).expect("dir");
        assert_eq!(b.dst, PathBuf::from("/opt/a/b"));
        assert_eq!(
            b.create_dirs,
            vec![PathBuf::from("/opt/a"), PathBuf::from("/opt/a/b")]
        );
        assert_eq!(b.create_file, None);
        let b = check_bind(&ok("file:/opt/f"), cwd, &image, true).expect("file");
        assert!(b.create_dirs.is_empty());
        assert_eq!(b.create_file, Some(PathBuf::from("/opt/f")));
        assert!(matches!(
            check_bind(&ok("host:/opt/a/b"), cwd, &image, false),
            Err(BindError::MissingDestination { .. })
        ));
        // Nothing to create when it exists.
        let b = check_bind(&ok("host:/opt"), cwd, &image, true).expect("exists");
        assert!(b.create_dirs.is_empty() && b.create_file.is_none());
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
        // A dangling link is a missing destination.
        std::os::unix::fs::symlink("/nowhere", dir.path().join("img/mnt/dangling")).expect("ln");
        assert!(matches!(
            check_bind_ro(&ok("host:/mnt/dangling"), cwd, &image),
            Err(BindError::MissingDestination { .. })
        ));
        assert!(matches!(
            check_bind_ro(&ok("host:/mnt/up"), cwd, &image),
            Err(BindError::DestinationOutsideImage { .. })
        ));
    }
}
