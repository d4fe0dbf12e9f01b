//! Layer entry names: normalising tar paths the way the OCI layer spec asks
//! (leading `/` and `./` dropped, `.` components ignored) and refusing the
//! ones that could escape the image root (`..`, NUL), and telling whiteouts
//! (`.wh.NAME`), opaque markers (`.wh..wh..opq`) and aufs bookkeeping
//! (`.wh..wh.*`) apart from ordinary entries, and resolving an entry's
//! parents through the symlinks of its own layer, inside the image root.
//! Pure functions, no I/O.

/// Prefix of an OCI whiteout file name.
pub const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// Name of the opaque-directory marker.
pub const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
/// Prefix of aufs metadata entries (hard-link dirs etc.), which carry no content.
pub const AUFS_META_PREFIX: &[u8] = b".wh..wh.";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EntryPathError {
    #[error("path {path:?} has a '..' component")]
    DotDot { path: String },
    #[error("path {path:?} contains a NUL byte")]
    Nul { path: String },
    #[error("whiteout {path:?} names no valid entry")]
    BadWhiteout { path: String },
    #[error("path {path:?} lies below a whiteout entry")]
    UnderWhiteout { path: String },
    #[error("path {path:?} is empty")]
    Empty { path: String },
}

fn show(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).into_owned()
}

/// Normalises a tar path to the writer's form: components joined by '/', no
/// leading '/', no empty or "." components; b"" is the root. `..` anywhere
/// is refused rather than resolved: a layer has no business walking up, and
/// resolving it lexically would hide a hostile entry instead of naming it.
pub fn normalize_path(raw: &[u8]) -> Result<Vec<u8>, EntryPathError> {
    if raw.contains(&0) {
        return Err(EntryPathError::Nul { path: show(raw) });
    }
    let mut out = Vec::with_capacity(raw.len());
    for comp in raw.split(|b| *b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => return Err(EntryPathError::DotDot { path: show(raw) }),
            _ => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(comp);
            }
        }
    }
    Ok(out)
}

/// Splits a normalised path into (parent, name); the root has no parent.
pub fn split_parent(path: &[u8]) -> Option<(&[u8], &[u8])> {
    if path.is_empty() {
        return None;
    }
    Some(match path.iter().rposition(|b| *b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&b""[..], path),
    })
}

/// Every proper ancestor of a normalised path, root (b"") first.
pub fn ancestors(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    let root = (!path.is_empty()).then_some(&path[..0]);
    root.into_iter().chain(
        path.iter()
            .enumerate()
            .filter(|(_, b)| **b == b'/')
            .map(move |(i, _)| &path[..i]),
    )
}

/// Joins a parent and a name into a normalised path.
pub fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut out = parent.to_vec();
    if !out.is_empty() {
        out.push(b'/');
    }
    out.extend_from_slice(name);
    out
}

/// What a (normalised) tar path means to the flattener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathRole {
    /// An ordinary entry at this path.
    Entry(Vec<u8>),
    /// `.wh.NAME`: NAME (this path) and everything below it is deleted from
    /// the layers underneath.
    Whiteout(Vec<u8>),
    /// `.wh..wh..opq`: the lower layers' children of this directory are hidden.
    Opaque(Vec<u8>),
    /// aufs bookkeeping (`.wh..wh.plnk` ...): not part of the image.
    Ignore,
}

/// Classifies a raw tar path: normalises it, then recognises whiteouts.
pub fn classify(raw: &[u8]) -> Result<PathRole, EntryPathError> {
    let path = normalize_path(raw)?;
    let Some((parent, name)) = split_parent(&path) else {
        return Ok(PathRole::Entry(path));
    };
    // A whiteout is a leaf: something stored below one is a malformed layer
    // (and `.wh..wh.` directories are aufs' own, never image content).
    if parent
        .split(|b| *b == b'/')
        .any(|c| c.starts_with(WHITEOUT_PREFIX))
    {
        if parent
            .split(|b| *b == b'/')
            .any(|c| c.starts_with(AUFS_META_PREFIX))
        {
            return Ok(PathRole::Ignore);
        }
        return Err(EntryPathError::UnderWhiteout { path: show(raw) });
    }
    if name == OPAQUE_MARKER {
        return Ok(PathRole::Opaque(parent.to_vec()));
    }
    if name.starts_with(AUFS_META_PREFIX) {
        return Ok(PathRole::Ignore);
    }
    if let Some(target) = name.strip_prefix(WHITEOUT_PREFIX) {
        if target.is_empty() || target == b"." || target == b".." {
            return Err(EntryPathError::BadWhiteout { path: show(raw) });
        }
        return Ok(PathRole::Whiteout(join(parent, target)));
    }
    Ok(PathRole::Entry(path))
}

/// Normalises a hard-link target; unlike an entry path it may not be the root.
pub fn normalize_link_target(raw: &[u8]) -> Result<Vec<u8>, EntryPathError> {
    let path = normalize_path(raw)?;
    if path.is_empty() {
        return Err(EntryPathError::Empty { path: show(raw) });
    }
    Ok(path)
}

/// Symlinks followed while resolving one path before giving up (the limit
/// of umoci's securejoin).
pub const MAX_SYMLINKS: usize = 255;

/// What a path is in the layer being applied, as far as resolving the
/// parents of a later entry of that layer goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerPath {
    /// A symlink of this layer, with its target.
    Symlink(Vec<u8>),
    /// Another non-directory of this layer.
    NonDirectory,
    /// A directory, or nothing this layer has named (lower layers are
    /// applied later, top-down: to this layer they are directories).
    Directory,
}

/// Where an entry's path leads once its parents are resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// The path to use (normalised, inside the root).
    At(Vec<u8>),
    /// A parent is a non-directory other than a symlink (this path).
    BelowNonDirectory(Vec<u8>),
    /// More than [`MAX_SYMLINKS`] symlinks.
    Loop,
}

/// Resolves the parents of a normalised `path` through the layer's own
/// symlinks (`lookup` says what a path is), as umoci's securejoin does, but
/// scoped to the image root: an absolute target starts again at the root,
/// `..` stops at the root, so the result never leaves it. The last
/// component is not followed: an entry at a symlink's own path replaces it.
pub fn resolve_parents(path: &[u8], lookup: impl FnMut(&[u8]) -> LayerPath) -> Resolved {
    resolve_in_root(path, false, MAX_SYMLINKS, lookup)
}

/// [`resolve_parents`], following the last component too when
/// `follow_last`, and giving up after `max_links` symlinks. `lookup` sees
/// each path on the way, in order (it may act on it: a build's skeleton
/// makes what it is asked about).
pub fn resolve_in_root(
    path: &[u8],
    follow_last: bool,
    max_links: usize,
    mut lookup: impl FnMut(&[u8]) -> LayerPath,
) -> Resolved {
    let (dirs, name) = if follow_last {
        (path, None)
    } else {
        match split_parent(path) {
            Some((parent, name)) => (parent, Some(name)),
            None => return Resolved::At(Vec::new()),
        }
    };
    let mut todo: std::collections::VecDeque<Vec<u8>> =
        dirs.split(|b| *b == b'/').map(<[u8]>::to_vec).collect();
    let mut current: Vec<u8> = Vec::new();
    let mut followed = 0;
    while let Some(component) = todo.pop_front() {
        match component.as_slice() {
            b"" | b"." => continue,
            b".." => {
                current = split_parent(&current).map_or_else(Vec::new, |(p, _)| p.to_vec());
                continue;
            }
            _ => {}
        }
        let next = join(&current, &component);
        match lookup(&next) {
            LayerPath::Symlink(target) => {
                followed += 1;
                if followed > max_links {
                    return Resolved::Loop;
                }
                // A relative target starts from the link's own directory.
                if target.first() == Some(&b'/') {
                    current.clear();
                }
                for c in target.split(|b| *b == b'/').rev() {
                    todo.push_front(c.to_vec());
                }
            }
            LayerPath::NonDirectory => return Resolved::BelowNonDirectory(next),
            LayerPath::Directory => current = next,
        }
    }
    Resolved::At(match name {
        Some(name) => join(&current, name),
        None => current,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_prefixes_and_dots() {
        assert_eq!(normalize_path(b"./etc/passwd").expect("ok"), b"etc/passwd");
        assert_eq!(normalize_path(b"/etc//passwd").expect("ok"), b"etc/passwd");
        assert_eq!(normalize_path(b"etc/./x/").expect("ok"), b"etc/x");
        assert_eq!(normalize_path(b"./").expect("ok"), b"");
        assert_eq!(normalize_path(b"/").expect("ok"), b"");
        assert_eq!(normalize_path(b"").expect("ok"), b"");
    }

    #[test]
    fn refuses_dotdot_and_nul() {
        assert!(matches!(
            normalize_path(b"../etc"),
            Err(EntryPathError::DotDot { .. })
        ));
        assert!(matches!(
            normalize_path(b"a/../../b"),
            Err(EntryPathError::DotDot { .. })
        ));
        assert!(matches!(
            normalize_path(b"a/.."),
            Err(EntryPathError::DotDot { .. })
        ));
        assert!(matches!(
            normalize_path(b"a\0b"),
            Err(EntryPathError::Nul { .. })
        ));
        assert!(normalize_path(b"a/..b/c..").is_ok());
    }

    #[test]
    fn classifies_whiteouts() {
        assert_eq!(
            classify(b"etc/.wh.motd").expect("ok"),
            PathRole::Whiteout(b"etc/motd".to_vec())
        );
        assert_eq!(
            classify(b"./.wh.opt").expect("ok"),
            PathRole::Whiteout(b"opt".to_vec())
        );
        assert_eq!(
            classify(b"usr/share/.wh..wh..opq").expect("ok"),
            PathRole::Opaque(b"usr/share".to_vec())
        );
        assert_eq!(
            classify(b".wh..wh..opq").expect("ok"),
            PathRole::Opaque(Vec::new())
        );
        assert_eq!(classify(b".wh..wh.plnk").expect("ok"), PathRole::Ignore);
        assert_eq!(
            classify(b".wh..wh.plnk/123.456").expect("ok"),
            PathRole::Ignore
        );
        assert_eq!(
            classify(b"usr/bin/ls").expect("ok"),
            PathRole::Entry(b"usr/bin/ls".to_vec())
        );
        assert_eq!(classify(b"./").expect("ok"), PathRole::Entry(Vec::new()));
    }

    #[test]
    fn refuses_bad_whiteouts() {
        for bad in [&b"a/.wh."[..], b"a/.wh..", b".wh..."] {
            assert!(
                matches!(classify(bad), Err(EntryPathError::BadWhiteout { .. })),
                "{}",
                show(bad)
            );
        }
        assert!(matches!(
            classify(b"a/.wh.b/c"),
            Err(EntryPathError::UnderWhiteout { .. })
        ));
        assert!(matches!(
            classify(b"a/.wh.../x"),
            Err(EntryPathError::UnderWhiteout { .. })
        ));
    }

    #[test]
    fn splits_and_ancestors() {
        assert_eq!(split_parent(b"a/b/c"), Some((&b"a/b"[..], &b"c"[..])));
        assert_eq!(split_parent(b"a"), Some((&b""[..], &b"a"[..])));
        assert_eq!(split_parent(b""), None);
        let anc: Vec<&[u8]> = ancestors(b"a/b/c").collect();
        assert_eq!(anc, vec![&b""[..], b"a", b"a/b"]);
        assert_eq!(ancestors(b"a").collect::<Vec<_>>(), vec![&b""[..]]);
        assert!(ancestors(b"").next().is_none());
        assert_eq!(join(b"", b"x"), b"x");
        assert_eq!(join(b"a", b"x"), b"a/x");
    }

    #[test]
    fn link_targets() {
        assert_eq!(normalize_link_target(b"/bin/sh").expect("ok"), b"bin/sh");
        assert!(normalize_link_target(b"./").is_err());
        assert!(normalize_link_target(b"../../etc/shadow").is_err());
    }

    /// `path` through a layer made of `links` (symlink, target) and
    /// `files` (non-directories).
    fn resolve_in_layer(path: &str, links: &[(&str, &str)], files: &[&str]) -> Resolved {
        resolve_parents(path.as_bytes(), |p| {
            if let Some((_, t)) = links.iter().find(|(l, _)| l.as_bytes() == p) {
                LayerPath::Symlink(t.as_bytes().to_vec())
            } else if files.iter().any(|f| f.as_bytes() == p) {
                LayerPath::NonDirectory
            } else {
                LayerPath::Directory
            }
        })
    }

    fn at(p: &str) -> Resolved {
        Resolved::At(p.as_bytes().to_vec())
    }

    #[test]
    fn resolves_parents_through_the_layers_symlinks() {
        assert_eq!(resolve_in_layer("a/b/c", &[], &[]), at("a/b/c"));
        assert_eq!(
            resolve_in_layer("x", &[("x", "y")], &[]),
            at("x"),
            "last not followed"
        );
        assert_eq!(
            resolve_in_layer("d/s/t", &[("d/s", "real")], &[]),
            at("d/real/t")
        );
        assert_eq!(
            resolve_in_layer("d/s/t", &[("d/s", "/etc")], &[]),
            at("etc/t")
        );
        assert_eq!(
            resolve_in_layer("d/s/t", &[("d/s", "../up/./x/")], &[]),
            at("up/x/t")
        );
        // Chains, including through a directory reached by a link.
        assert_eq!(
            resolve_in_layer("a/f", &[("a", "b"), ("b", "c/d"), ("c", "/z")], &[]),
            at("z/d/f")
        );
        assert_eq!(
            resolve_in_layer("d/s/f", &[("d/s", "t")], &["d/t"]),
            Resolved::BelowNonDirectory(b"d/t".to_vec())
        );
        assert_eq!(
            resolve_in_layer("f/x", &[], &["f"]),
            Resolved::BelowNonDirectory(b"f".to_vec())
        );
        assert_eq!(
            resolve_in_layer("a/x", &[("a", "b"), ("b", "a")], &[]),
            Resolved::Loop
        );
        assert_eq!(resolve_in_layer("", &[], &[]), at(""));
    }

    #[test]
    fn resolution_never_leaves_the_root() {
        for target in ["../../../../etc", "/../..", "..", "/", "../../"] {
            let got = resolve_in_layer("d/s/passwd", &[("d/s", target)], &[]);
            let Resolved::At(p) = got else {
                panic!("{target}: {got:?}");
            };
            assert!(
                normalize_path(&p).expect("normal") == p && !p.starts_with(b"/"),
                "{target}"
            );
            assert!(
                p == b"etc/passwd" || p == b"passwd",
                "{target}: {}",
                show(&p)
            );
        }
    }
}
