//! COPY and ADD of local files: which files a source names (globs, the
//! context's `.dockerignore`), the hash of what would be copied (the step's
//! cache key: relative paths, types, modes and contents, never the
//! context's own path or mtimes), and the copy into a stage tree.
//!
//! Docker's rules: a directory source copies its contents; several sources
//! (or a glob matching several) need a destination ending in `/`; a file
//! goes to `DEST/NAME` when the destination ends in `/` or is a directory
//! in the stage, else to `DEST` itself; parents are created. Symlinks in
//! the stage are followed as inside the image (an absolute target starts
//! at the stage's root, `..` stops there), so a copy never lands outside
//! the tree. Files keep their modes (or get `--chmod`) and mtimes; owners
//! are root's (or `--chown`'s), recorded by the caller.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::ignore::Ignore;
use super::snapshot::with_access;
use super::{IoFailure, io_err};

/// Symlinks followed while resolving one path (Linux's own limit).
const MAX_LINKS: usize = 40;

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("COPY source {source_name}: not found in {root}")]
    NotFound { source_name: String, root: String },
    #[error("COPY source {source_name}: leaves the {root}")]
    Outside { source_name: String, root: String },
    #[error("COPY source {source_name}: excluded by .dockerignore")]
    Ignored { source_name: String },
    #[error("COPY with several sources ({count}) needs a destination ending in '/': {dest}")]
    DestNotDir { count: usize, dest: String },
    #[error("COPY destination {dest}: more than {MAX_LINKS} symlinks")]
    Loop { dest: String },
    #[error(transparent)]
    Io(#[from] IoFailure),
}

/// Where sources are read from.
#[derive(Debug, Clone, Copy)]
pub enum SourceRoot<'a> {
    /// The build context, less what `.dockerignore` leaves out.
    Context { dir: &'a Path, ignore: &'a Ignore },
    /// Another stage's tree (`COPY --from`).
    Stage { dir: &'a Path },
}

impl SourceRoot<'_> {
    fn dir(&self) -> &Path {
        match self {
            SourceRoot::Context { dir, .. } | SourceRoot::Stage { dir } => dir,
        }
    }

    fn describe(&self) -> String {
        match self {
            SourceRoot::Context { dir, .. } => format!("build context {}", dir.display()),
            SourceRoot::Stage { .. } => "source stage".to_owned(),
        }
    }

    fn ignored(&self, rel: &str) -> bool {
        match self {
            SourceRoot::Context { ignore, .. } => ignore.matches(rel),
            SourceRoot::Stage { .. } => false,
        }
    }

    /// Whether an ignored directory must still be walked for exceptions.
    fn walk_ignored(&self, rel: &str) -> bool {
        match self {
            SourceRoot::Context { ignore, .. } => ignore.may_contain_exceptions(rel),
            SourceRoot::Stage { .. } => false,
        }
    }
}

/// One thing to copy: where it is, and its path below the destination
/// (empty for a file source copied as the destination itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub host: PathBuf,
    /// Relative to the source root ('/'-separated), for `.dockerignore`.
    pub rel: String,
    /// Below the destination.
    pub target: Vec<u8>,
    pub kind: ItemKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemKind {
    Dir { mode: u32 },
    File { mode: u32, size: u64 },
    Symlink(Vec<u8>),
}

/// The whole copy: items in order (parents before children), and whether
/// the destination is a directory.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub items: Vec<Item>,
    pub dest_is_dir: bool,
}

/// `*`, `?` and `[...]` within one path component (Go's `filepath.Match`
/// for one name).
pub fn fnmatch(pattern: &[u8], name: &[u8]) -> bool {
    fn class(p: &[u8], c: u8) -> Option<(bool, usize)> {
        // p starts after '['; returns (matched, length consumed incl. ']').
        let mut i = 0;
        let negated = matches!(p.first(), Some(b'^') | Some(b'!'));
        if negated {
            i += 1;
        }
        let mut hit = false;
        let mut first = true;
        while i < p.len() {
            if p[i] == b']' && !first {
                return Some((hit != negated, i + 1));
            }
            first = false;
            let mut lo = p[i];
            if lo == b'\\' && i + 1 < p.len() {
                i += 1;
                lo = p[i];
            }
            let mut hi = lo;
            if i + 2 < p.len() && p[i + 1] == b'-' && p[i + 2] != b']' {
                hi = p[i + 2];
                i += 2;
            }
            if lo <= c && c <= hi {
                hit = true;
            }
            i += 1;
        }
        None
    }
    let (mut p, mut n) = (0, 0);
    let (mut star, mut star_n) = (None, 0);
    while n < name.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    star = Some(p);
                    star_n = n;
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    n += 1;
                    continue;
                }
                b'[' => {
                    if let Some((true, len)) = class(&pattern[p + 1..], name[n]) {
                        p += 1 + len;
                        n += 1;
                        continue;
                    }
                }
                b'\\' if p + 1 < pattern.len() && pattern[p + 1] == name[n] => {
                    p += 2;
                    n += 1;
                    continue;
                }
                c if c == name[n] => {
                    p += 1;
                    n += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some(s) => {
                star_n += 1;
                n = star_n;
                p = s + 1;
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

fn has_glob(text: &str) -> bool {
    text.contains(['*', '?', '['])
}

/// The cleaned components of a source path (leading `/` and `.` dropped);
/// `None` if `..` would leave the root.
fn components(source: &str) -> Option<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for part in source.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop()?;
            }
            name => out.push(name.to_owned()),
        }
    }
    Some(out)
}

/// The host paths and relative paths a source names in `root`.
fn expand_source(root: &SourceRoot, source: &str) -> Result<Vec<(PathBuf, String)>, CopyError> {
    let outside = || CopyError::Outside {
        source_name: source.to_owned(),
        root: root.describe(),
    };
    let parts = components(source).ok_or_else(outside)?;
    let mut found = vec![(PathBuf::new(), Vec::<String>::new())];
    for part in &parts {
        let mut next = Vec::new();
        for (_, rel) in found {
            let dir = resolve(root.dir(), &rel.join("/"), true).map_err(|_| outside())?;
            if has_glob(part) {
                let Ok(entries) = fs::read_dir(&dir) else {
                    continue;
                };
                let mut names: Vec<OsString> = entries.flatten().map(|e| e.file_name()).collect();
                names.sort();
                for name in names {
                    if fnmatch(part.as_bytes(), name.as_bytes()) {
                        let mut r = rel.clone();
                        r.push(name.to_string_lossy().into_owned());
                        next.push((PathBuf::new(), r));
                    }
                }
            } else {
                let mut r = rel.clone();
                r.push(part.clone());
                next.push((PathBuf::new(), r));
            }
        }
        found = next;
    }
    let mut out = Vec::new();
    for (_, rel) in found {
        let rel = rel.join("/");
        // The source itself is followed if it is a symlink (as Docker does),
        // inside the root.
        let host = resolve(root.dir(), &rel, true).map_err(|_| outside())?;
        if fs::symlink_metadata(&host).is_err() {
            continue;
        }
        if !rel.is_empty() && root.ignored(&rel) && !brought_back(root, &host, &rel)? {
            continue;
        }
        out.push((host, rel));
    }
    if out.is_empty() {
        let ignored = components(source)
            .map(|p| p.join("/"))
            .is_some_and(|rel| !rel.is_empty() && root.ignored(&rel));
        if ignored {
            return Err(CopyError::Ignored {
                source_name: source.to_owned(),
            });
        }
        // A glob that matches nothing is an error too, as in Docker ("no
        // source files were specified").
        return Err(CopyError::NotFound {
            source_name: source.to_owned(),
            root: root.describe(),
        });
    }
    Ok(out)
}

/// Whether an ignored source is still there for Docker: a directory that a
/// `!` exception brings something below back into (the context Docker
/// sends holds it, with only what the exceptions keep, so `COPY logs /x/`
/// with `logs` and `!logs/keep.log` copies keep.log).
fn brought_back(root: &SourceRoot, host: &Path, rel: &str) -> Result<bool, CopyError> {
    if !fs::metadata(host).is_ok_and(|m| m.is_dir()) || !root.walk_ignored(rel) {
        return Ok(false);
    }
    let mut kept = Vec::new();
    walk(root, host, rel, Vec::new(), &mut kept)?;
    Ok(!kept.is_empty())
}

/// Resolves `path` (inside the image, '/'-separated) below `root` as the
/// kernel would inside the image: symlinks followed with `root` as `/`,
/// `..` stopping at it. With `follow_last`, a symlink at the end is
/// followed too. The result need not exist.
pub fn resolve(root: &Path, path: &str, follow_last: bool) -> Result<PathBuf, CopyError> {
    let mut resolved: Vec<OsString> = Vec::new();
    let mut pending: VecDeque<OsString> = path
        .split('/')
        .map(|s| OsString::from(s.to_owned()))
        .collect();
    let mut links = 0;
    let here = |resolved: &[OsString]| {
        let mut p = root.to_path_buf();
        p.extend(resolved);
        p
    };
    while let Some(part) = pending.pop_front() {
        match part.as_bytes() {
            b"" | b"." => {}
            b".." => {
                resolved.pop();
            }
            _ => {
                let candidate = here(&resolved).join(&part);
                let last = pending.iter().all(|p| p.is_empty() || p == ".");
                match fs::symlink_metadata(&candidate) {
                    Ok(m) if m.file_type().is_symlink() && (follow_last || !last) => {
                        links += 1;
                        if links > MAX_LINKS {
                            return Err(CopyError::Loop {
                                dest: path.to_owned(),
                            });
                        }
                        let target = fs::read_link(&candidate)
                            .map_err(io_err("reading the link", &candidate))?;
                        let target = target.into_os_string().into_vec();
                        if target.starts_with(b"/") {
                            resolved.clear();
                        }
                        for (i, t) in target.split(|&b| b == b'/').enumerate() {
                            pending.insert(i, OsString::from_vec(t.to_vec()));
                        }
                    }
                    _ => resolved.push(part),
                }
            }
        }
    }
    Ok(here(&resolved))
}

/// What `sources` name in `root`, to be copied to `dest` (inside the
/// image, absolute; `dest_exists_as_dir`: the stage has a directory there).
pub fn plan(
    root: &SourceRoot,
    sources: &[String],
    dest: &str,
    dest_exists_as_dir: bool,
) -> Result<Plan, CopyError> {
    let mut found = Vec::new();
    for source in sources {
        found.extend(expand_source(root, source)?);
    }
    let several = found.len() > 1 || sources.len() > 1;
    if several && !dest.ends_with('/') {
        return Err(CopyError::DestNotDir {
            count: found.len().max(sources.len()),
            dest: dest.to_owned(),
        });
    }
    let dest_is_dir = dest.ends_with('/') || several || dest_exists_as_dir;
    let mut plan = Plan {
        items: Vec::new(),
        dest_is_dir,
    };
    for (host, rel) in found {
        let meta = fs::metadata(&host).map_err(io_err("reading", &host))?;
        if meta.is_dir() {
            plan.dest_is_dir = true;
            walk(root, &host, &rel, Vec::new(), &mut plan.items)?;
        } else {
            let name = host
                .file_name()
                .map(|n| n.as_bytes().to_vec())
                .unwrap_or_default();
            let target = if dest_is_dir { name } else { Vec::new() };
            plan.items.push(item(&host, rel, target, &meta)?);
        }
    }
    Ok(plan)
}

fn item(host: &Path, rel: String, target: Vec<u8>, meta: &fs::Metadata) -> Result<Item, CopyError> {
    let mode = meta.mode() & 0o7777;
    let kind = if meta.file_type().is_symlink() {
        let link = fs::read_link(host).map_err(io_err("reading the link", host))?;
        ItemKind::Symlink(link.into_os_string().into_vec())
    } else if meta.is_dir() {
        ItemKind::Dir { mode }
    } else {
        ItemKind::File {
            mode,
            size: meta.len(),
        }
    };
    Ok(Item {
        host: host.to_path_buf(),
        rel,
        target,
        kind,
    })
}

/// The contents of directory `dir` (relative path `rel` in the source
/// root), below `target`, sorted, less what is ignored.
fn walk(
    root: &SourceRoot,
    dir: &Path,
    rel: &str,
    target: Vec<u8>,
    items: &mut Vec<Item>,
) -> Result<(), CopyError> {
    let mut names: Vec<OsString> = fs::read_dir(dir)
        .map_err(io_err("reading", dir))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()
        .map_err(io_err("reading", dir))?;
    names.sort();
    for name in names {
        let host = dir.join(&name);
        let child_rel = if rel.is_empty() {
            name.to_string_lossy().into_owned()
        } else {
            format!("{rel}/{}", name.to_string_lossy())
        };
        let child_target = crate::image::entry::join(&target, name.as_bytes());
        let meta = fs::symlink_metadata(&host).map_err(io_err("reading", &host))?;
        let ignored = root.ignored(&child_rel);
        if meta.is_dir() {
            if ignored && !root.walk_ignored(&child_rel) {
                continue;
            }
            let start = items.len();
            if !ignored {
                items.push(item(&host, child_rel.clone(), child_target.clone(), &meta)?);
            }
            walk(root, &host, &child_rel, child_target.clone(), items)?;
            // An ignored directory walked for its exceptions is copied only
            // as the parent of what they bring back.
            if ignored && items.len() > start {
                items.insert(start, item(&host, child_rel, child_target, &meta)?);
            }
        } else if ignored {
            continue;
        } else if meta.file_type().is_file() || meta.file_type().is_symlink() {
            items.push(item(&host, child_rel, child_target, &meta)?);
        } else {
            tracing::warn!(
                "{}: not a file, directory or symlink: not copied",
                host.display()
            );
        }
    }
    Ok(())
}

/// Hashes what the plan would copy: targets, types, modes, sizes, contents
/// and link targets (not host paths, not mtimes).
pub fn content_key(plan: &Plan) -> Result<String, CopyError> {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&[u8::from(plan.dest_is_dir)]);
    for item in &plan.items {
        hasher.update(&(item.target.len() as u64).to_le_bytes());
        hasher.update(&item.target);
        match &item.kind {
            ItemKind::Dir { mode } => {
                hasher.update(b"d");
                hasher.update(&mode.to_le_bytes());
            }
            ItemKind::Symlink(link) => {
                hasher.update(b"l");
                hasher.update(&(link.len() as u64).to_le_bytes());
                hasher.update(link);
            }
            ItemKind::File { mode, size } => {
                hasher.update(b"f");
                hasher.update(&mode.to_le_bytes());
                hasher.update(&size.to_le_bytes());
                let mut file = fs::File::open(&item.host).map_err(io_err("reading", &item.host))?;
                let mut content = blake3::Hasher::new();
                let copied =
                    io::copy(&mut file, &mut content).map_err(io_err("reading", &item.host))?;
                hasher.update(&copied.to_le_bytes());
                hasher.update(content.finalize().as_bytes());
            }
        }
    }
    Ok(hasher.finalize().to_hex().to_string())
}

/// How the copied entries are changed on the way.
#[derive(Debug, Clone, Copy, Default)]
pub struct Apply {
    /// `--chmod`: the mode of every copied file and directory.
    pub chmod: Option<u32>,
}

/// Removes whatever is at `path` (not following a symlink), a directory
/// with all it holds.
fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            crate::squashfs::extract::remove_tree(path);
            fs::remove_dir(path)
        }
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Creates the directories of `path` (inside the image) that are missing,
/// following symlinks inside `root`; returns the host path and the image
/// paths (relative to `root`) of what it created.
fn make_dirs(root: &Path, path: &str, created: &mut Vec<PathBuf>) -> Result<PathBuf, CopyError> {
    let mut so_far = String::new();
    for part in path.split('/').filter(|p| !p.is_empty() && *p != ".") {
        so_far.push('/');
        so_far.push_str(part);
        let host = resolve(root, &so_far, true)?;
        match fs::symlink_metadata(&host) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                remove_any(&host).map_err(io_err("replacing", &host))?;
                mkdir(&host)?;
                created.push(host);
            }
            Err(_) => {
                mkdir(&host)?;
                created.push(host);
            }
        }
    }
    resolve(root, path, true)
}

fn mkdir(host: &Path) -> Result<(), CopyError> {
    let parent = host.parent().unwrap_or(Path::new("/"));
    with_access(parent, || fs::DirBuilder::new().mode(0o755).create(host))
        .map_err(|e| io_err("creating", host)(e).into())
}

/// Copies `plan` to `dest` (inside the image) in the stage tree at `root`.
/// Returns the host paths of everything it created or wrote (for the
/// owners the caller records).
pub fn apply(root: &Path, plan: &Plan, dest: &str, how: Apply) -> Result<Vec<PathBuf>, CopyError> {
    let mut written = Vec::new();
    let dest_dir = if plan.dest_is_dir {
        make_dirs(root, dest, &mut written)?
    } else {
        let parent = Path::new(dest)
            .parent()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        make_dirs(root, &parent, &mut written)?;
        resolve(root, dest, false)?
    };
    // Directory mtimes are set last, deepest first: copying into a
    // directory moves its mtime.
    let mut dir_times = Vec::new();
    for item in &plan.items {
        let target = if item.target.is_empty() {
            dest_dir.clone()
        } else {
            // The parent was made (or followed) by an earlier item.
            let rel = String::from_utf8_lossy(&item.target).into_owned();
            let parent = match Path::new(&rel).parent() {
                Some(p) if !p.as_os_str().is_empty() => {
                    resolve(&dest_dir, &p.to_string_lossy(), true)?
                }
                _ => dest_dir.clone(),
            };
            let name = Path::new(&rel)
                .file_name()
                .map(OsStr::to_owned)
                .unwrap_or_default();
            // `resolve` keeps a result under `dest_dir` only when no link
            // pointed elsewhere; a link escaping the destination was
            // resolved inside the tree, which is what the image would do.
            let parent = if parent.starts_with(root) {
                parent
            } else {
                dest_dir.clone()
            };
            parent.join(name)
        };
        let src_meta = fs::symlink_metadata(&item.host).map_err(io_err("reading", &item.host))?;
        match &item.kind {
            ItemKind::Dir { mode } => {
                let target = match fs::symlink_metadata(&target) {
                    Ok(m) if m.is_dir() => target,
                    Ok(m) if m.file_type().is_symlink() => {
                        let followed = resolve(root, &image_path(root, &target), true)?;
                        if fs::metadata(&followed).is_ok_and(|m| m.is_dir()) {
                            followed
                        } else {
                            remove_any(&target).map_err(io_err("replacing", &target))?;
                            mkdir(&target)?;
                            target
                        }
                    }
                    Ok(_) => {
                        remove_any(&target).map_err(io_err("replacing", &target))?;
                        mkdir(&target)?;
                        target
                    }
                    Err(_) => {
                        mkdir(&target)?;
                        target
                    }
                };
                let mode = how.chmod.unwrap_or(*mode);
                dir_times.push((target.clone(), mode, src_meta.mtime()));
                written.push(target);
            }
            ItemKind::File { mode, .. } => {
                let parent = target.parent().unwrap_or(root).to_path_buf();
                with_access(&parent, || remove_any(&target))
                    .map_err(io_err("replacing", &target))?;
                let mut out = with_access(&parent, || {
                    fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .custom_flags(libc::O_NOFOLLOW)
                        .open(&target)
                })
                .map_err(io_err("creating", &target))?;
                let mut src = fs::File::open(&item.host).map_err(io_err("reading", &item.host))?;
                io::copy(&mut src, &mut out).map_err(io_err("writing", &target))?;
                let mode = how.chmod.unwrap_or(*mode);
                fs::set_permissions(&target, fs::Permissions::from_mode(mode))
                    .map_err(io_err("setting the mode of", &target))?;
                set_mtime(&target, src_meta.mtime(), false)?;
                written.push(target);
            }
            ItemKind::Symlink(link) => {
                let parent = target.parent().unwrap_or(root).to_path_buf();
                with_access(&parent, || remove_any(&target))
                    .map_err(io_err("replacing", &target))?;
                with_access(&parent, || {
                    std::os::unix::fs::symlink(OsStr::from_bytes(link), &target)
                })
                .map_err(io_err("creating", &target))?;
                set_mtime(&target, src_meta.mtime(), true)?;
                written.push(target);
            }
        }
    }
    for (dir, mode, mtime) in dir_times.into_iter().rev() {
        fs::set_permissions(&dir, fs::Permissions::from_mode(mode))
            .map_err(io_err("setting the mode of", &dir))?;
        set_mtime(&dir, mtime, false)?;
    }
    Ok(written)
}

/// `host` (below `root`) as a path inside the image.
fn image_path(root: &Path, host: &Path) -> String {
    let rel = host.strip_prefix(root).unwrap_or(host);
    format!("/{}", rel.to_string_lossy())
}

pub(super) fn set_mtime(path: &Path, secs: i64, symlink: bool) -> Result<(), CopyError> {
    use rustix::fs::{AtFlags, CWD, Timespec, Timestamps, utimensat};
    let at = Timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    let flags = if symlink {
        AtFlags::SYMLINK_NOFOLLOW
    } else {
        AtFlags::empty()
    };
    utimensat(
        CWD,
        path,
        &Timestamps {
            last_access: at,
            last_modification: at,
        },
        flags,
    )
    .map_err(|e| io_err("setting the mtime of", path)(e.into()).into())
}

/// Reads a small text file of the stage (passwd, group) for `--chown`
/// and USER names.
pub fn read_small(root: &Path, path: &str) -> Option<String> {
    let host = resolve(root, path, true).ok()?;
    let mut text = String::new();
    fs::File::open(host)
        .ok()?
        .take(16 * 1024 * 1024)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnmatch_is_go_filepath_match_for_one_name() {
        assert!(fnmatch(b"*.txt", b"a.txt"));
        assert!(!fnmatch(b"*.txt", b"a.txt.bak"));
        assert!(fnmatch(b"a?c", b"abc"));
        assert!(fnmatch(b"[a-c]x", b"bx"));
        assert!(!fnmatch(b"[^a-c]x", b"bx"));
        assert!(fnmatch(b"*", b""));
        assert!(fnmatch(b"\\*", b"*"));
        assert!(!fnmatch(b"\\*", b"a"));
    }

    #[test]
    fn an_ignored_directory_is_a_source_for_what_its_exceptions_keep() {
        let dir = tempfile::tempdir().expect("tmp");
        let ctx = dir.path();
        fs::create_dir_all(ctx.join("logs/sub")).expect("mkdir");
        fs::write(ctx.join("logs/app.log"), "a").expect("app");
        fs::write(ctx.join("logs/keep.log"), "k").expect("keep");
        fs::write(ctx.join("logs/sub/x.log"), "x").expect("x");
        let targets = |ignore: &str, source: &str| {
            let ignore = Ignore::parse(ignore).expect("ignore");
            let root = SourceRoot::Context {
                dir: ctx,
                ignore: &ignore,
            };
            plan(&root, &[source.into()], "/l/", false).map(|p| {
                p.items
                    .iter()
                    .map(|i| String::from_utf8_lossy(&i.target).into_owned())
                    .collect::<Vec<_>>()
            })
        };
        let kept = targets("logs\n!logs/keep.log\n", "logs").expect("kept");
        assert_eq!(kept, ["keep.log"]);
        let kept = targets("logs\n!logs/sub/x.log\n", "l*").expect("glob");
        assert_eq!(kept, ["sub", "sub/x.log"]);
        assert!(matches!(
            targets("logs\n", "logs"),
            Err(CopyError::Ignored { .. })
        ));
        // An exception that keeps nothing leaves nothing to copy.
        assert!(matches!(
            targets("logs\n!logs/none\n", "logs"),
            Err(CopyError::Ignored { .. })
        ));
    }

    #[test]
    fn resolve_stays_inside_the_root() {
        let dir = tempfile::tempdir().expect("tmp");
        let r = dir.path();
        fs::create_dir_all(r.join("usr/lib")).expect("mkdir");
        std::os::unix::fs::symlink("usr/lib", r.join("lib")).expect("lib");
        std::os::unix::fs::symlink("/etc", r.join("usr/lib/etc")).expect("abs");
        std::os::unix::fs::symlink("../../../../..", r.join("up")).expect("up");
        assert_eq!(
            resolve(r, "/lib/x", true).expect("lib"),
            r.join("usr/lib/x")
        );
        assert_eq!(
            resolve(r, "/lib/etc/passwd", true).expect("abs"),
            r.join("etc/passwd")
        );
        assert_eq!(resolve(r, "/up/tmp", true).expect("up"), r.join("tmp"));
        assert_eq!(resolve(r, "/lib", false).expect("last"), r.join("lib"));
        std::os::unix::fs::symlink("loop", r.join("loop")).expect("loop");
        assert!(matches!(
            resolve(r, "/loop/x", true),
            Err(CopyError::Loop { .. })
        ));
    }

    #[test]
    fn plans_follow_dockers_rules() {
        let dir = tempfile::tempdir().expect("tmp");
        let ctx = dir.path();
        fs::create_dir_all(ctx.join("src/sub")).expect("mkdir");
        fs::write(ctx.join("src/a.txt"), "a").expect("a");
        fs::write(ctx.join("src/sub/b.txt"), "b").expect("b");
        fs::write(ctx.join("src/skip.log"), "s").expect("s");
        fs::write(ctx.join("one"), "1").expect("one");
        fs::write(ctx.join("two"), "2").expect("two");
        let ignore = Ignore::parse("*/*.log\n").expect("ignore");
        let root = SourceRoot::Context {
            dir: ctx,
            ignore: &ignore,
        };
        let p = plan(&root, &["src".into()], "/app", false).expect("dir");
        let targets: Vec<String> = p
            .items
            .iter()
            .map(|i| String::from_utf8_lossy(&i.target).into_owned())
            .collect();
        assert_eq!(targets, ["a.txt", "sub", "sub/b.txt"]);
        let p = plan(&root, &["one".into()], "/x", false).expect("file");
        assert!(!p.dest_is_dir);
        assert_eq!(p.items[0].target, b"");
        assert!(matches!(
            plan(&root, &["one".into(), "two".into()], "/x", false),
            Err(CopyError::DestNotDir { .. })
        ));
        let p = plan(&root, &["t*".into(), "o?e".into()], "/x/", false).expect("glob");
        assert_eq!(p.items.len(), 2);
        assert!(matches!(
            plan(&root, &["../etc".into()], "/x", false),
            Err(CopyError::Outside { .. })
        ));
        assert!(matches!(
            plan(&root, &["src/skip.log".into()], "/x", false),
            Err(CopyError::Ignored { .. })
        ));
        assert!(matches!(
            plan(&root, &["nope".into()], "/x", false),
            Err(CopyError::NotFound { .. })
        ));
        let key1 =
            content_key(&plan(&root, &["src".into()], "/app", false).expect("p")).expect("k");
        let key2 =
            content_key(&plan(&root, &["src".into()], "/app", false).expect("p")).expect("k");
        assert_eq!(key1, key2);
        fs::write(ctx.join("src/a.txt"), "A").expect("edit");
        let key3 =
            content_key(&plan(&root, &["src".into()], "/app", false).expect("p")).expect("k");
        assert_ne!(key1, key3);

        let stage = tempfile::tempdir().expect("stage");
        fs::create_dir_all(stage.path().join("usr/local")).expect("mkdir");
        std::os::unix::fs::symlink("usr/local", stage.path().join("opt")).expect("opt");
        let p = plan(&root, &["src".into()], "/opt/app", false).expect("p");
        let written = apply(stage.path(), &p, "/opt/app", Apply::default()).expect("apply");
        assert!(stage.path().join("usr/local/app/sub/b.txt").is_file());
        assert!(written.contains(&stage.path().join("usr/local/app/a.txt")));
        let p = plan(&root, &["one".into()], "/etc/one.conf", false).expect("p");
        apply(
            stage.path(),
            &p,
            "/etc/one.conf",
            Apply { chmod: Some(0o600) },
        )
        .expect("apply");
        let m = fs::metadata(stage.path().join("etc/one.conf")).expect("one");
        assert_eq!(m.mode() & 0o777, 0o600);
    }
}
