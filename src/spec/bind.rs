//! Bind specs, `SRC[:DST[:ro]]` (pure): the parser shared by `-b/--bind`,
//! the site config's binds and hooks, and the errors of a bind, whether the
//! spec is malformed or the host or the image refuse it (the run's checks
//! produce the latter).
//!
//! Every malformed form gets its own error: empty, empty source, relative or
//! `..`-escaping destination, unknown option, too many fields, a bad escape.
//!
//! A `:` inside a path is written `\:` and a backslash `\\` (Apptainer's
//! escape for the same spec); any other backslash is refused rather than
//! guessed at, so that every spec has exactly one meaning.

use std::path::{Component, Path, PathBuf};

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

/// At most this many symlinks are followed while resolving (as the kernel's
/// ELOOP limit).
pub const MAX_SYMLINKS: usize = 40;

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
}
