//! COPY and `.dockerignore` in `cairn build` checked against `buildah bud`
//! (Debian's buildah, which follows Docker's rules): the same context and
//! Dockerfile (`FROM scratch` and COPYs only, so buildah needs no base)
//! built by both, buildah's image pushed to an OCI layout and unpacked by
//! umoci as root, cairn's squashfs extracted (`cairn unsquash` for the
//! build as root, `unsquashfs` as root for the build as the test user), and
//! the trees compared entry by entry: the path set, type, mode, owner,
//! size, content sha256, symlink target, and the mtime of everything but
//! directories. `COPY --from` of an earlier stage too, and its cache: a
//! build with nothing changed runs nothing, an edit in the source stage
//! reaches the steps that copy from it.
//!
//! buildah runs as root with vfs storage, `--isolation chroot`, its
//! `--root`/`--runroot` and TMPDIR in the test's scratch directory, in a
//! mount namespace of its own whose /var/lib is a scratch directory too:
//! `buildah push` otherwise records its blobs in root's global blob-info
//! cache (/var/lib/containers/cache). Nothing outside the scratch
//! directory is written.
//!
//! Not compared, and why:
//! - directory mtimes (copying into a directory moves its mtime; neither
//!   Docker nor buildah promise them);
//! - what cairn adds to every image it makes, absent from buildah's: the
//!   mount points `cairn run` binds over in a read-only image (empty
//!   directories and files, `cairn::image::import::RUNTIME_DIRS` and
//!   `RUNTIME_FILES`) and `/.cairn` (its metadata). The test checks they
//!   are empty.
//! - sub-second mtimes: buildah rounds them to the nearest second (Go's
//!   archive/tar writer does for its headers), a squashfs keeps whole
//!   seconds and cairn truncates as `stat` does. The contexts' mtimes are
//!   whole seconds, so the seconds must agree.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::build::ran_and_cached;
use common::registry::cairn_in;
use common::*;

/// Every COPY rule of the context below, in one image.
const DOCKERFILE: &str = "\
FROM scratch
# A file into a trailing-slash destination: the parents are made.
COPY a.txt /dst/nested/deep/
# Several sources into a directory.
COPY a.txt b.txt /multi/
# A directory source: its contents (hidden ones, an empty directory,
# symlinks kept as symlinks, modes), with and without a trailing slash.
COPY src /app/src
COPY src/ /app/src2/
# A file to a new name, in new directories too.
COPY a.txt /renamed.txt
COPY a.txt /new/dir/name.txt
# Globs: a directory a glob matches is copied as its contents.
COPY *.txt /globs/
COPY src/?.c /cglobs/
COPY src/*.c src/u* src/.h* /star/
COPY --chmod=0640 src /chmod/
COPY --chmod=0600 b.txt /chmod-file
COPY --chown=1000:1000 src /chown/
# --chown owns the directories it makes.
COPY --chown=1000:1000 a.txt /newp/sub/
COPY .hidden /
# An ignored directory holding an exception: only what it brings back.
COPY logs /logs/
COPY docs /docs/
# An existing directory as a destination without '/'.
COPY b.txt /multi
# A symlink named as a source is followed.
COPY src/link-to-main /linked
COPY src/dirlink /dl/
# Relative to WORKDIR.
WORKDIR /w
COPY a.txt rel/
COPY --chmod=0600 b.txt named
# The whole context, less what .dockerignore leaves out.
COPY . /all/
";

/// `**` patterns, a `!` exception inside an excluded directory, the last
/// matching line winning both ways.
const DOCKERIGNORE: &str = "\
# build products anywhere
**/*.o
**/.*.swp
build
logs
!logs/keep.log
docs/**/secret
*.md
!docs/*.md
docs/b.md
";

/// The files of the main context: path, content, mode.
const FILES: &[(&str, &str, u32)] = &[
    ("a.txt", "a\n", 0o644),
    ("b.txt", "bb\n", 0o644),
    ("notes.md", "notes\n", 0o644),
    (".hidden", "hidden\n", 0o644),
    ("src/main.c", "int main(void) { return 0; }\n", 0o755),
    ("src/x.c", "x\n", 0o600),
    ("src/ab.c", "ab\n", 0o644),
    ("src/readonly.txt", "ro\n", 0o444),
    ("src/util/helper.h", "#define H 1\n", 0o644),
    ("src/util/thing.o", "obj\n", 0o644),
    ("src/util/deep/deeper/leaf.txt", "leaf\n", 0o644),
    ("src/.hiddendir/h.txt", "hh\n", 0o644),
    ("src/.main.c.swp", "swap\n", 0o644),
    ("src/private/p.txt", "p\n", 0o644),
    ("logs/app.log", "log\n", 0o644),
    ("logs/keep.log", "keep\n", 0o644),
    ("logs/sub/x.log", "sub\n", 0o644),
    ("build/out.o", "obj\n", 0o644),
    ("docs/a.md", "da\n", 0o644),
    ("docs/b.md", "db\n", 0o644),
    ("docs/readme.txt", "r\n", 0o644),
    ("docs/secret/key.pem", "key\n", 0o600),
    ("docs/inner/secret/k2", "key2\n", 0o600),
];

/// Directories whose mode is not 0755, and an empty one.
const DIRS: &[(&str, u32)] = &[
    ("src/empty", 0o755),
    ("src/util", 0o750),
    ("src/private", 0o700),
];

/// Symlinks of the main context: kept as they are inside copied
/// directories (the absolute and the dangling one too).
const LINKS: &[(&str, &str)] = &[
    ("src/link-to-main", "main.c"),
    ("src/abs-link", "/etc/passwd"),
    ("src/dirlink", "util"),
    ("src/dangling", "nowhere"),
];

/// Writes `files` (and their parents), `dirs` and `links` below `ctx`.
fn write_tree(
    ctx: &Path,
    files: &[(&str, &str, u32)],
    dirs: &[(&str, u32)],
    links: &[(&str, &str)],
) {
    for (path, content, _) in files {
        let path = ctx.join(path);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(&path, content).expect("write");
    }
    for (path, _) in dirs {
        fs::create_dir_all(ctx.join(path)).expect("mkdir");
    }
    for (path, target) in links {
        symlink(target, ctx.join(path)).expect("symlink");
    }
    for (path, _, mode) in files {
        fs::set_permissions(ctx.join(path), fs::Permissions::from_mode(*mode)).expect("chmod");
    }
    for (path, mode) in dirs {
        fs::set_permissions(ctx.join(path), fs::Permissions::from_mode(*mode)).expect("chmod");
    }
}

/// Gives `dir` to `who` (`chown -R -h`: symlinks themselves, never what
/// they point at), and sets the mtime of everything in it but directories
/// to distinct whole seconds, the same for the same relative paths.
fn prepare(who: &Who, dir: &Path) {
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).expect("chmod");
    if let Who::User(user) = who {
        run_ok(
            Command::new("chown")
                .args(["-R", "-h"])
                .arg(format!("{}:{}", user.uid, user.gid))
                .arg(dir),
            "chown the context",
        );
    }
    let mut paths: Vec<String> = entries(dir, false)
        .into_iter()
        .filter(|(_, e)| e.kind != "dir")
        .map(|(p, _)| p)
        .collect();
    paths.sort();
    for (i, rel) in paths.iter().enumerate() {
        let secs = 1_500_000_000 + 86_413 * i64::try_from(i).expect("index");
        let t = nix::sys::time::TimeVal::new(secs, 0);
        nix::sys::stat::lutimes(&dir.join(rel), &t, &t).expect("lutimes");
    }
}

/// A directory of the scratch area with a context in it: `ctx` below.
fn context(label: &str, dockerfile: &str, dockerignore: &str) -> PathBuf {
    let work = scratch(label);
    let ctx = work.join("ctx");
    fs::create_dir_all(&ctx).expect("mkdir ctx");
    fs::write(ctx.join("Dockerfile"), dockerfile).expect("Dockerfile");
    fs::write(ctx.join(".dockerignore"), dockerignore).expect(".dockerignore");
    ctx
}

/// What is compared of one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    sha256: String,
    target: String,
    /// Not for directories (None).
    mtime: Option<i64>,
}

/// Every entry below `root` (not `root` itself), by relative path.
fn entries(root: &Path, hash: bool) -> BTreeMap<String, Entry> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).expect("read_dir") {
            let path = e.expect("entry").path();
            let rel = path
                .strip_prefix(root)
                .expect("below root")
                .to_string_lossy()
                .into_owned();
            let md = fs::symlink_metadata(&path).expect("lstat");
            let kind = file_kind(&md.file_type());
            if kind == "dir" {
                stack.push(path.clone());
            }
            let file = kind == "file";
            out.insert(
                rel,
                Entry {
                    kind,
                    mode: md.mode() & 0o7777,
                    uid: md.uid(),
                    gid: md.gid(),
                    size: if file { md.len() } else { 0 },
                    sha256: if file && hash {
                        sha256_file(&path)
                    } else {
                        String::new()
                    },
                    target: if kind == "symlink" {
                        String::from_utf8_lossy(
                            fs::read_link(&path)
                                .expect("readlink")
                                .as_os_str()
                                .as_bytes(),
                        )
                        .into_owned()
                    } else {
                        String::new()
                    },
                    mtime: (kind != "dir").then(|| md.mtime()),
                },
            );
        }
    }
    out
}

/// cairn's own additions to every image (see the top of this file): the
/// empty mount points, their parents, and /.cairn.
fn cairn_addition(path: &str, entry: &Entry) -> bool {
    use cairn::image::import::{RUNTIME_DIRS, RUNTIME_FILES};
    let parent = |p: &str| p.rsplit_once('/').map(|(parent, _)| parent.to_owned());
    path == ".cairn"
        || path.starts_with(".cairn/")
        || (RUNTIME_DIRS.contains(&path) && entry.kind == "dir")
        || (RUNTIME_FILES.contains(&path) && entry.kind == "file" && entry.size == 0)
        || (entry.kind == "dir"
            && RUNTIME_FILES
                .iter()
                .any(|f| parent(f).as_deref() == Some(path)))
}

/// The differences between cairn's tree and buildah's, one per line.
fn differences(cairn: &Path, buildah: &Path) -> Vec<String> {
    let c = entries(cairn, true);
    let b = entries(buildah, true);
    let mut problems = Vec::new();
    for (path, want) in &b {
        match c.get(path) {
            None => problems.push(format!("missing in cairn's: {path}")),
            Some(got) if got != want => problems.push(format!(
                "differs: {path}\n    cairn:   {got:?}\n    buildah: {want:?}"
            )),
            Some(_) => {}
        }
    }
    for (path, got) in &c {
        if b.contains_key(path) {
            continue;
        }
        if cairn_addition(path, got) {
            // Anything below a mount point is none: it shows as extra.
            continue;
        }
        problems.push(format!("extra in cairn's: {path} {got:?}"));
    }
    problems
}

/// buildah run as root, its state in `work` (see the top of this file).
fn buildah(work: &Path, args: &[&str]) -> Command {
    let varlib = work.join("varlib");
    let tmp = work.join("tmp");
    fs::create_dir_all(&varlib).expect("mkdir varlib");
    fs::create_dir_all(&tmp).expect("mkdir tmp");
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-ec"])
        .arg("mount --bind \"$0\" /var/lib && exec buildah \"$@\"")
        .arg(&varlib)
        .args(["--storage-driver", "vfs", "--root"])
        .arg(work.join("root"))
        .arg("--runroot")
        .arg(work.join("run"))
        .args(args)
        .env("TMPDIR", &tmp)
        .env("BUILDAH_ISOLATION", "chroot");
    cmd
}

/// `buildah bud` of `ctx`, pushed to an OCI layout in `work` and unpacked
/// there by umoci: the image's root directory.
fn buildah_tree(work: &Path, ctx: &Path, name: &str) -> PathBuf {
    run_ok(
        buildah(
            work,
            &["bud", "--quiet", "--isolation", "chroot", "-t", name],
        )
        .arg(ctx),
        "buildah bud",
    );
    let layout = work.join("oci");
    run_ok(
        buildah(work, &["push", "--quiet", name]).arg(format!("oci:{}:{name}", layout.display())),
        "buildah push",
    );
    let bundle = work.join(format!("bundle-{name}"));
    run_ok(
        Command::new("umoci")
            .args(["unpack", "--image"])
            .arg(format!("{}:{name}", layout.display()))
            .arg(&bundle),
        "umoci unpack",
    );
    bundle.join("rootfs")
}

/// `cairn build` of `ctx` as `who` to a squashfs file, extracted as root
/// (`cairn unsquash` for root's build, `unsquashfs` for the user's): its
/// root directory.
fn cairn_tree(who: &Who, ctx: &Path, name: &str) -> PathBuf {
    let work = ctx.parent().expect("work");
    let image = work.join(format!("{name}.sqfs"));
    run_ok(
        cairn_in(who, &work.join("cache"))
            .args(["build", "-q", "-t", name, "-o"])
            .arg(&image)
            .arg(ctx),
        &format!("cairn build as {}", who.label()),
    );
    let tree = work.join(format!("tree-{name}"));
    match who {
        Who::Me => run_ok(
            cairn_as(&Who::Me).arg("unsquash").arg(&image).arg(&tree),
            "cairn unsquash",
        ),
        Who::User(_) => run_ok(
            Command::new("unsquashfs")
                .args(["-q", "-no-progress", "-d"])
                .arg(&tree)
                .arg(&image),
            "unsquashfs",
        ),
    };
    tree
}

/// root, with buildah, umoci and unsquashfs: a skip, or a failure under
/// CAIRN_MUST_WORK=1.
fn tools() -> bool {
    require(is_root(), "root (buildah bud and umoci unpack as root)")
        && require(
            have_tool("buildah") && have_tool("umoci"),
            "buildah and umoci (tests/setup-host.sh)",
        )
        && require(
            have_tool("unsquashfs") && have_tool("unshare"),
            "unsquashfs and unshare",
        )
}

#[track_caller]
fn assert_same(cairn: &Path, buildah: &Path, what: &str) {
    let problems = differences(cairn, buildah);
    assert!(
        problems.is_empty(),
        "{what}: cairn's tree {} differs from buildah's {}:\n{}",
        cairn.display(),
        buildah.display(),
        problems.join("\n")
    );
}

#[test]
fn copy_rules_and_dockerignore_match_buildah() {
    if !tools() {
        return;
    }
    let oracle_ctx = context("buildah-copy", DOCKERFILE, DOCKERIGNORE);
    write_tree(&oracle_ctx, FILES, DIRS, LINKS);
    prepare(&Who::Me, &oracle_ctx);
    let oracle_work = oracle_ctx.parent().expect("work");
    let oracle = buildah_tree(oracle_work, &oracle_ctx, "copy-edges");
    // What the oracle must hold for the comparison to mean something.
    for path in [
        "app/src/util/deep/deeper/leaf.txt",
        "app/src/empty",
        "all/logs/keep.log",
        "logs/keep.log",
        "all/docs/a.md",
        "star/deep/deeper/leaf.txt",
    ] {
        assert!(
            fs::symlink_metadata(oracle.join(path)).is_ok(),
            "buildah's image has no {path}"
        );
    }
    for path in [
        "all/notes.md",
        "all/docs/b.md",
        "all/build",
        "logs/app.log",
        "all/src/util/thing.o",
    ] {
        assert!(
            fs::symlink_metadata(oracle.join(path)).is_err(),
            "buildah's image has {path}"
        );
    }
    for who in callers() {
        let ctx = context(
            &format!("cairn-copy-{}", who.label()),
            DOCKERFILE,
            DOCKERIGNORE,
        );
        write_tree(&ctx, FILES, DIRS, LINKS);
        prepare(&who, &ctx);
        let tree = cairn_tree(&who, &ctx, "copy-edges");
        assert_same(&tree, &oracle, &format!("built as {}", who.label()));
    }
}

/// The context of the `.dockerignore` cases: `COPY . /all/` of it.
const IGNORE_FILES: &[(&str, &str, u32)] = &[
    ("a/1.txt", "1\n", 0o644),
    ("a/b/2.txt", "2\n", 0o644),
    ("a/b/c/3.txt", "3\n", 0o644),
    ("a/x/c/4.log", "4\n", 0o644),
    ("a/x/5.h", "5\n", 0o644),
    ("d/e/6.c", "6\n", 0o644),
    ("d/7.c", "7\n", 0o644),
    (".git/HEAD", "ref\n", 0o644),
    (".git/objects/o", "o\n", 0o644),
    ("node_modules/m/i.js", "i\n", 0o644),
    ("node_modules/m/node_modules/n/j.js", "j\n", 0o644),
    ("keep/k.txt", "k\n", 0o644),
    ("keep/sub/s.txt", "s\n", 0o644),
    ("top.txt", "t\n", 0o644),
    ("top.log", "l\n", 0o644),
    (".env", "e\n", 0o600),
    ("README.md", "r\n", 0o644),
];

/// `.dockerignore` cases; with the paths below /all the documented rule
/// keeps where buildah deviates from it.
const IGNORE_CASES: &[(&str, Option<&[&str]>)] = &[
    ("**/*.txt\n", None),
    ("a\n!a/b/c/3.txt\n", None),
    ("**/c\n!a/x/c/4.log\n", None),
    // Last match wins: keep is back, keep/sub out again.
    ("*\n!keep\nkeep/sub\n", None),
    (".*\n!.git/HEAD\n", None),
    ("/a/b\na/x/\n!/a/b/c/*.txt\n", None),
    ("**/*.txt\n!keep/**\nkeep/sub/*.txt\n", None),
    ("*.txt\n*/*.txt\n!**/2.txt\n", None),
    ("a/?/c\nd/[e]\n", None),
    ("**/node_modules/**\n!README*\nREADME.md\n", None),
    // buildah 1.28 deviates here: it walks an excluded directory only when
    // an exception's text starts with the directory's path (the classic
    // builder's rule), so `d` is skipped and its .c files lost. Docker's
    // documented rule ("the last line of the .dockerignore that matches a
    // particular file determines whether it's included or excluded"),
    // which BuildKit's context walk implements (it walks every excluded
    // directory once an exception has a wildcard), keeps them.
    ("**\n!**/*.c\n", Some(&["d", "d/7.c", "d/e", "d/e/6.c"])),
];

#[test]
fn dockerignore_patterns_match_buildah() {
    if !tools() {
        return;
    }
    let dockerfile = "FROM scratch\nCOPY . /all/\n";
    let oracle_work = scratch("buildah-ignore");
    let whos = callers();
    for (number, (ignore, documented)) in IGNORE_CASES.iter().enumerate() {
        let label = format!("ignore-{number}");
        let oracle_ctx = oracle_work.join(&label);
        fs::create_dir_all(&oracle_ctx).expect("mkdir");
        fs::write(oracle_ctx.join("Dockerfile"), dockerfile).expect("Dockerfile");
        fs::write(oracle_ctx.join(".dockerignore"), ignore).expect(".dockerignore");
        write_tree(&oracle_ctx, IGNORE_FILES, &[], &[]);
        prepare(&Who::Me, &oracle_ctx);
        let oracle = buildah_tree(&oracle_work, &oracle_ctx, &label);
        for who in &whos {
            let ctx = context(
                &format!("cairn-{label}-{}", who.label()),
                dockerfile,
                ignore,
            );
            write_tree(&ctx, IGNORE_FILES, &[], &[]);
            prepare(who, &ctx);
            let tree = cairn_tree(who, &ctx, &label);
            let what = format!(".dockerignore {ignore:?}, built as {}", who.label());
            match documented {
                None => assert_same(&tree, &oracle, &what),
                Some(paths) => {
                    let got: Vec<String> = entries(&tree.join("all"), false).into_keys().collect();
                    assert_eq!(got, *paths, "{what}: the documented rule");
                    let sources = entries(&ctx, false);
                    for (path, entry) in entries(&tree.join("all"), true) {
                        let source = &sources[&path];
                        assert_eq!(
                            (
                                entry.kind,
                                entry.mode,
                                entry.uid,
                                entry.gid,
                                entry.size,
                                entry.mtime
                            ),
                            (source.kind, source.mode, 0, 0, source.size, source.mtime),
                            "{what}: {path}"
                        );
                    }
                }
            }
        }
    }
}

/// Two stages: the second copies from the first (by name and by number),
/// a directory's contents, a subdirectory, a single file.
const MULTI_STAGE: &str = "\
FROM scratch AS parts
COPY src /parts/
COPY --chmod=0600 a.txt /parts/a
FROM scratch
COPY --from=parts /parts/ /from/
COPY --from=parts /parts/util /util-only
COPY --from=0 /parts/a /single
";

#[test]
fn copy_from_a_stage_matches_buildah_and_its_cache_follows_the_stage() {
    if !tools() {
        return;
    }
    let oracle_ctx = context("buildah-from", MULTI_STAGE, DOCKERIGNORE);
    write_tree(&oracle_ctx, FILES, DIRS, LINKS);
    prepare(&Who::Me, &oracle_ctx);
    let oracle = buildah_tree(oracle_ctx.parent().expect("work"), &oracle_ctx, "from");
    assert!(oracle.join("from/util/deep/deeper/leaf.txt").is_file());
    for who in callers() {
        let ctx = context(
            &format!("cairn-from-{}", who.label()),
            MULTI_STAGE,
            DOCKERIGNORE,
        );
        write_tree(&ctx, FILES, DIRS, LINKS);
        prepare(&who, &ctx);
        let tree = cairn_tree(&who, &ctx, "from");
        assert_same(&tree, &oracle, &format!("built as {}", who.label()));
        // Nothing changed: every step from the cache, the first stage
        // never unpacked to find the COPY --from steps there.
        let work = ctx.parent().expect("work");
        let again = output(
            cairn_in(&who, &work.join("cache"))
                .args(["build", "-t", "from"])
                .arg(&ctx),
        );
        assert_success(&again, "the build again");
        assert_eq!(
            ran_and_cached(&stderr_of(&again)),
            (0, 5),
            "{}",
            stderr_of(&again)
        );
        // An edit in the first stage's sources: its steps from there on
        // (both), and the steps that copy from it, run again and see it.
        fs::write(ctx.join("src/main.c"), "int main(void) { return 1; }\n").expect("edit");
        let edited = output(
            cairn_in(&who, &work.join("cache"))
                .args(["build", "-t", "from2", "-o"])
                .arg(work.join("from2.sqfs"))
                .arg(&ctx),
        );
        assert_success(&edited, "the build after an edit");
        assert_eq!(
            ran_and_cached(&stderr_of(&edited)),
            (5, 0),
            "{}",
            stderr_of(&edited)
        );
        let listing = run_ok(
            Command::new("unsquashfs")
                .args(["-cat"])
                .arg(work.join("from2.sqfs"))
                .arg("from/main.c"),
            "unsquashfs -cat",
        );
        assert_eq!(listing, "int main(void) { return 1; }\n");
    }
}

/// ADD of local archives, against buildah's: a gzip'd tar (owners 1234:5678,
/// modes, a symlink, a hard link, a directory merged with one a COPY
/// made), a plain tar, a gzip'd file that is no tar (copied as it is),
/// and `--chown` over an archive's owners.
const ADD_DOCKERFILE: &str = "\
FROM scratch
COPY a.txt /opt/app/kept
ADD app.tar.gz /opt/
ADD plain.tar /plain/
ADD note.gz /opt/
ADD --chown=7:8 app.tar.gz /chowned
";

/// The archives, made once with GNU tar (fixed mtimes and owners).
fn add_archives(work: &Path) -> PathBuf {
    let src = work.join("archive-src");
    let out = work.join("archives");
    fs::create_dir_all(src.join("app/bin")).expect("src");
    fs::create_dir_all(src.join("app/share/doc")).expect("src");
    fs::create_dir_all(&out).expect("out");
    fs::write(src.join("app/bin/tool"), "#!/bin/sh\necho tool\n").expect("tool");
    fs::set_permissions(src.join("app/bin/tool"), fs::Permissions::from_mode(0o754))
        .expect("chmod");
    fs::write(src.join("app/share/doc/README"), "readme\n").expect("readme");
    fs::hard_link(src.join("app/share/doc/README"), src.join("app/README")).expect("link");
    symlink("bin/tool", src.join("app/tool")).expect("symlink");
    fs::write(src.join("zfile"), "plain\n").expect("zfile");
    let tar = |args: &[&str]| {
        run_ok(
            Command::new("tar")
                .arg("-C")
                .arg(&src)
                .args([
                    "--owner=1234",
                    "--group=5678",
                    "--numeric-owner",
                    "--mtime=@1600000000",
                ])
                .args(args),
            "tar",
        )
    };
    tar(&["-czf", &out.join("app.tar.gz").display().to_string(), "app"]);
    tar(&["-cf", &out.join("plain.tar").display().to_string(), "zfile"]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, b"just a note\n").expect("gz");
    fs::write(out.join("note.gz"), gz.finish().expect("gz")).expect("note.gz");
    out
}

#[test]
fn add_of_archives_matches_buildah() {
    if !tools() {
        return;
    }
    let with_archives = |label: &str| {
        let ctx = context(label, ADD_DOCKERFILE, "");
        let work = ctx.parent().expect("work");
        let archives = add_archives(work);
        fs::write(ctx.join("a.txt"), "a\n").expect("a.txt");
        for name in ["app.tar.gz", "plain.tar", "note.gz"] {
            fs::copy(archives.join(name), ctx.join(name)).expect("archive");
        }
        ctx
    };
    let oracle_ctx = with_archives("buildah-add");
    prepare(&Who::Me, &oracle_ctx);
    let oracle = buildah_tree(oracle_ctx.parent().expect("work"), &oracle_ctx, "adds");
    for path in [
        "opt/app/bin/tool",
        "opt/app/kept",
        "plain/zfile",
        "opt/note.gz",
    ] {
        assert!(
            fs::symlink_metadata(oracle.join(path)).is_ok(),
            "buildah's image has no {path}"
        );
    }
    // buildah 1.28 keeps an archive's owners under `ADD --chown`; BuildKit
    // (Docker's builder) gives the extracted entries the --chown owner
    // since v0.23.0 (moby/buildkit#5987), as cairn does: the oracle is
    // brought to that rule.
    run_ok(
        Command::new("chown")
            .args(["-R", "-h", "7:8"])
            .arg(oracle.join("chowned/app")),
        "chown the oracle's --chown entries",
    );
    for who in callers() {
        let ctx = with_archives(&format!("cairn-add-{}", who.label()));
        prepare(&who, &ctx);
        let tree = cairn_tree(&who, &ctx, "adds");
        assert_same(&tree, &oracle, &format!("ADD built as {}", who.label()));
    }
}
