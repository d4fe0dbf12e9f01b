//! `cairn build` on a busybox base (a squashfs file named in FROM), as root
//! and as the test user without any /etc/subuid entry: the image it makes
//! runs with its config; the cache (a second build runs nothing, `touch`
//! is a hit, an edit misses from its COPY on, `--no-cache` reruns, a failed
//! RUN stores nothing and leaves no name); the seccomp filter (chown,
//! mknod of a device succeed without effect, a FIFO is real, no file
//! outside belongs to anyone but the user); bad input refused with 125.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::build::ran_and_cached;
use common::registry::cairn_in;
use common::*;

/// A context directory readable by `who`, with a Dockerfile.
fn context(label: &str, dockerfile: &str) -> PathBuf {
    let dir = scratch(label).join("ctx");
    fs::create_dir_all(&dir).expect("mkdir ctx");
    fs::write(dir.join("Dockerfile"), dockerfile).expect("Dockerfile");
    dir
}

/// Makes everything under `dir` readable and writable by `who` (the
/// scratch directory is root's).
fn hand_to(who: &Who, dir: &Path) {
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).expect("chmod scratch");
    if let Who::User(user) = who {
        run_ok(
            std::process::Command::new("chown")
                .arg("-R")
                .arg(format!("{}:{}", user.uid, user.gid))
                .arg(dir),
            "chown scratch",
        );
    }
}

/// The squashfs file a name of `cache` points at.
fn cached_image(cache: &Path, name: &str) -> PathBuf {
    let record: serde_json::Value =
        serde_json::from_slice(&fs::read(cache.join("refs").join(name)).expect("ref"))
            .expect("ref json");
    let digest = record["digest"].as_str().expect("digest");
    cache.join("images").join(format!(
        "sha256-{}.sqfs",
        digest.trim_start_matches("sha256:")
    ))
}

/// `cairn build` as `who` in `cache`: the output.
fn build(who: &Who, cache: &Path, ctx: &Path, extra: &[&str]) -> std::process::Output {
    let mut cmd = cairn_in(who, cache);
    cmd.arg("build")
        .args(extra)
        .arg("--build-arg")
        .arg(format!("BASE={}", busybox_sqfs().display()))
        .arg(ctx);
    output(&mut cmd)
}

#[track_caller]
fn build_ok(who: &Who, cache: &Path, ctx: &Path, extra: &[&str]) -> String {
    let out = build(who, cache, ctx, extra);
    assert_success(&out, &format!("cairn build as {}", who.label()));
    // stdout is the image's digest alone (`digest=$(cairn build ...)`).
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("sha256:") && stdout.lines().count() == 1,
        "stdout of cairn build: {stdout:?}"
    );
    stderr_of(&out)
}

/// `cairn run NAME -- ARGS` as `who`: stdout.
#[track_caller]
fn run_in(who: &Who, cache: &Path, name: &str, args: &[&str]) -> String {
    let mut cmd = cairn_in(who, cache);
    without_warm_runs(&mut cmd);
    cmd.args(["run", name]);
    if !args.is_empty() {
        cmd.arg("--").args(args);
    }
    run_ok(&mut cmd, &format!("cairn run {name} as {}", who.label()))
}

#[test]
fn an_image_is_built_run_and_its_cache_hit_and_missed() {
    for who in runners("-Urm") {
        let label = format!("build-cache-{}", who.label());
        let ctx = context(
            &label,
            "ARG BASE\n\
             FROM $BASE\n\
             ARG GREETING=hello\n\
             ENV MESSAGE=\"$GREETING from cairn\" OTHER=x\n\
             WORKDIR /app\n\
             COPY a.txt ./\n\
             RUN cat a.txt > copied && echo run-$GREETING > /app/ran\n\
             COPY b.txt /app/b/\n\
             RUN cat /app/b/b.txt >> copied && echo said-b\n\
             LABEL org.example.who=\"$GREETING\"\n\
             ENTRYPOINT [\"/bin/sh\", \"-c\", \"echo $MESSAGE; cat /app/copied; pwd\"]\n",
        );
        fs::write(ctx.join("a.txt"), "A\n").expect("a");
        fs::write(ctx.join("b.txt"), "B\n").expect("b");
        let cache = ctx.parent().expect("parent").join("cache");
        hand_to(&who, ctx.parent().expect("parent"));

        let first = build_ok(&who, &cache, &ctx, &["-t", "app"]);
        assert_eq!(ran_and_cached(&first), (5, 0), "{first}");
        // One stage: a RUN's stdout is on stderr as it is, unprefixed.
        assert!(first.contains("\nsaid-b\n"), "{first}");
        let out = run_in(&who, &cache, "app", &[]);
        assert_eq!(out, "hello from cairn\nA\nB\n/app\n", "as {}", who.label());
        let ran = run_in(&who, &cache, "app", &[]);
        assert!(ran.contains("hello from cairn"));

        // Nothing changed: nothing runs.
        let again = build_ok(&who, &cache, &ctx, &["-t", "app"]);
        assert_eq!(ran_and_cached(&again), (0, 5), "{again}");
        assert!(again.contains("already built"), "{again}");
        // touch alone: still all hits.
        std::thread::sleep(std::time::Duration::from_millis(20));
        run_ok(
            std::process::Command::new("touch")
                .arg(ctx.join("a.txt"))
                .arg(ctx.join("b.txt")),
            "touch",
        );
        let touched = build_ok(&who, &cache, &ctx, &["-t", "app"]);
        assert_eq!(ran_and_cached(&touched), (0, 5), "{touched}");
        // An edit of b.txt misses from its COPY on.
        fs::write(ctx.join("b.txt"), "B2\n").expect("edit b");
        let edited = build_ok(&who, &cache, &ctx, &["-t", "app"]);
        assert_eq!(ran_and_cached(&edited), (2, 3), "{edited}");
        assert_eq!(
            run_in(&who, &cache, "app", &[]),
            "hello from cairn\nA\nB2\n/app\n"
        );
        // A build arg changes the RUN that sees it (and what follows).
        let arg = build_ok(
            &who,
            &cache,
            &ctx,
            &["-t", "app2", "--build-arg", "GREETING=hi"],
        );
        // The ENV that uses it comes before every step that changes files.
        assert_eq!(ran_and_cached(&arg), (5, 0), "{arg}");
        assert_eq!(
            run_in(&who, &cache, "app2", &["cat", "/app/ran"]),
            "run-hi\n"
        );
        // --no-cache runs everything again.
        let fresh = build_ok(&who, &cache, &ctx, &["-t", "app", "--no-cache"]);
        assert_eq!(ran_and_cached(&fresh), (5, 0), "{fresh}");

        // A failing RUN: status 1, the step named, no name, nothing stored
        // for it; the steps before it are kept.
        fs::write(
            ctx.join("Dockerfile"),
            "ARG BASE\nFROM $BASE\nCOPY a.txt /\nRUN echo partial > /p && exit 3\n",
        )
        .expect("Dockerfile");
        let steps_before = fs::read_dir(cache.join("build/steps"))
            .expect("steps")
            .count();
        let out = build(&who, &cache, &ctx, &["-t", "broken"]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
        let err = stderr_of(&out);
        assert!(
            err.contains("Dockerfile:4") && err.contains("status 3"),
            "{err}"
        );
        let images = run_ok(cairn_in(&who, &cache).arg("images"), "images");
        assert!(!images.contains("broken"), "{images}");
        let steps_after = fs::read_dir(cache.join("build/steps"))
            .expect("steps")
            .count();
        assert_eq!(steps_after, steps_before + 1, "only the COPY was stored");
        let leftovers: Vec<_> = fs::read_dir(cache.join("tmp"))
            .expect("tmp")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(leftovers.is_empty(), "work dirs left: {leftovers:?}");

        // build-cache lists and prunes.
        let listed = run_ok(cairn_in(&who, &cache).arg("build-cache"), "build-cache");
        assert!(listed.contains("RUN cat a.txt"), "{listed}");
        run_ok(
            cairn_in(&who, &cache).args(["build-cache", "prune"]),
            "prune",
        );
        assert_eq!(
            fs::read_dir(cache.join("build/steps"))
                .expect("steps")
                .count(),
            0
        );
        let out = build(&who, &cache, &ctx, &["-t", "after-prune"]);
        let (ran, _) = ran_and_cached(&format!("{}\n1 ran, 0 from the cache", stderr_of(&out)));
        assert_eq!(
            (out.status.code(), ran),
            (Some(1), 1),
            "{}",
            stderr_of(&out)
        );
    }
}

#[test]
fn the_filter_makes_id_calls_succeed_without_effect_and_fifos_real() {
    for who in runners("-Urm") {
        let label = format!("build-filter-{}", who.label());
        let ctx = context(
            &label,
            "ARG BASE\n\
             FROM $BASE\n\
             RUN echo x > /owned && chown 65534:65534 /owned && mknod /devnode c 1 3 \
                 && mkfifo /fifo && chmod 4755 /owned && id -u > /uid\n\
             USER 1234:5678\n\
             RUN id -u > /as-user && id -g >> /as-user\n",
        );
        let cache = ctx.parent().expect("parent").join("cache");
        hand_to(&who, ctx.parent().expect("parent"));
        build_ok(&who, &cache, &ctx, &["-t", "filter"]);
        let out = run_in(&who, &cache, "filter", &["cat", "/uid", "/as-user"]);
        assert_eq!(out, "0\n1234\n5678\n", "as {}", who.label());
        // What the image records (squashfs-tools as the oracle): the chown
        // was swallowed, so /owned is root's; the RUN as USER 1234:5678
        // made a file of theirs; the FIFO is one; mknod made nothing.
        let listing = run_ok(
            std::process::Command::new("unsquashfs")
                .args(["-lln", "-d", ""])
                .arg(cached_image(&cache, "filter")),
            "unsquashfs -lln",
        );
        let line = |path: &str| {
            listing
                .lines()
                .find(|l| l.ends_with(path))
                .unwrap_or_else(|| panic!("{path} not in\n{listing}"))
                .to_owned()
        };
        assert!(
            line(" /owned").starts_with("-rwsr-xr-x 0/0 "),
            "{}",
            line(" /owned")
        );
        assert!(
            line(" /as-user").starts_with("-rw-r--r-- 1234/5678 "),
            "{}",
            line(" /as-user")
        );
        assert!(line(" /fifo").starts_with("p"), "{}", line(" /fifo"));
        assert!(!listing.contains("/devnode"), "{listing}");
        // Nothing the build left outside belongs to anyone but the user.
        let uid = match &who {
            Who::User(u) => u.uid,
            Who::Me => 0,
        };
        let walk = std::process::Command::new("find")
            .arg(&cache)
            .args(["!", "-uid", &uid.to_string()])
            .output()
            .expect("find");
        assert_eq!(stdout_of(&walk), "", "files of another owner in the cache");
        let setuid = std::process::Command::new("find")
            .arg(&cache)
            .args(["-perm", "-4000"])
            .output()
            .expect("find");
        assert_eq!(stdout_of(&setuid), "", "setuid files left in the cache");
    }
}

#[test]
fn bad_input_is_refused_with_125_naming_it() {
    let Some(who) = ordinary_user() else { return };
    if !namespaces_work(&who, "-Urm") {
        return;
    }
    let ctx = context("build-bad", "FROM scratch\nCOPY missing.txt /\n");
    let cache = ctx.parent().expect("parent").join("cache");
    hand_to(&who, ctx.parent().expect("parent"));
    let cases: &[(&str, &str)] = &[
        ("FROM scratch\nCOPY missing.txt /\n", "missing.txt"),
        (
            "FROM scratch\nCOPY ../outside /\n",
            "leaves the build context",
        ),
        (
            "FROM scratch\nADD https://example.com/x /\n",
            "not supported",
        ),
        ("FROM scratch\nHEALTHCHECK CMD true\n", "HEALTHCHECK"),
        ("RUN true\n", "FROM"),
        (
            "FROM scratch\nCOPY --chmod=999 Dockerfile /\n",
            "--chmod=999",
        ),
        ("FROM /nonexistent/image.sqfs\n", "/nonexistent/image.sqfs"),
        ("FROM scratch\nUSER nobody\nWORKDIR /x\n", "nobody"),
    ];
    for (dockerfile, names) in cases {
        fs::write(ctx.join("Dockerfile"), dockerfile).expect("Dockerfile");
        let out = output(
            cairn_in(&who, &cache)
                .arg("build")
                .args(["-t", "bad"])
                .arg(&ctx),
        );
        assert_eq!(
            out.status.code(),
            Some(125),
            "{dockerfile}: {}",
            stderr_of(&out)
        );
        assert!(
            stderr_of(&out).contains(names),
            "{dockerfile}: {}",
            stderr_of(&out)
        );
    }
    let images = run_ok(cairn_in(&who, &cache).arg("images"), "images");
    assert!(!images.contains("bad"), "{images}");
    let out = output(cairn_in(&who, &cache).arg("build").arg(&ctx));
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr_of(&out).contains("-t NAME"), "{}", stderr_of(&out));
    let _ = fs::metadata(&ctx).map(|m| (m.mode(), m.permissions().mode()));
}

/// `cairn unsquash` as root (owners, setuid bits and xattrs kept).
fn unsquash(image: &Path, into: &Path) {
    run_ok(
        cairn_as(&Who::Me).arg("unsquash").arg(image).arg(into),
        "cairn unsquash",
    );
}

#[test]
fn a_built_image_is_pushed_as_its_layers_and_comes_back_the_same() {
    if !(require(is_root(), "root (umoci unpack keeps owners)")
        && require(have_tool("docker-registry"), "docker-registry")
        && require(have_tool("skopeo"), "skopeo")
        && require(have_tool("umoci"), "umoci"))
    {
        return;
    }
    let reg = common::registry::Registry::start("build-push", None);
    for who in runners("-Urm") {
        let label = format!("build-push-{}", who.label());
        let ctx = context(
            &label,
            "ARG BASE\n\
             FROM $BASE\n\
             COPY data /opt/data\n\
             RUN rm /etc/os-release && mkdir -p /opt/made && echo made > /opt/made/f \
                 && rm -r /opt/data/gone\n\
             USER 1000:1000\n\
             RUN echo mine > /opt/made/mine\n\
             CMD [\"cat\", \"/opt/made/f\"]\n",
        );
        fs::create_dir_all(ctx.join("data/gone")).expect("data");
        fs::write(ctx.join("data/keep"), "keep\n").expect("keep");
        fs::write(ctx.join("data/gone/x"), "x\n").expect("x");
        let dir = ctx.parent().expect("parent").to_path_buf();
        let cache = dir.join("cache");
        hand_to(&who, &dir);
        build_ok(&who, &cache, &ctx, &["-t", "pushme"]);
        let reference = format!(
            "docker://{}/build/pushme:{}",
            reg.host(),
            who.label()
                .replace(|c: char| !c.is_ascii_alphanumeric(), "-")
        );
        let out = output(cairn_in(&who, &cache).args(["push", "pushme", &reference]));
        assert_success(&out, "cairn push of the built image");
        let digest = stdout_of(&out).trim().to_owned();

        // One layer for the base, one per instruction that changed files.
        let inspect = run_ok(
            std::process::Command::new("skopeo")
                .args(["inspect", "--tls-verify=false"])
                .arg(&reference),
            "skopeo inspect",
        );
        let v: serde_json::Value = serde_json::from_str(&inspect).expect("inspect json");
        assert_eq!(v["Digest"], digest.as_str(), "{inspect}");
        assert_eq!(v["Layers"].as_array().map(Vec::len), Some(4), "{inspect}");

        // umoci's unpacking of the layers (whiteouts applied by umoci) is
        // the built tree.
        let rootfs = common::registry::unpack_pushed(&reference, &dir);
        let built = dir.join("built");
        unsquash(&cached_image(&cache, "pushme"), &built);
        common::tree::assert_same_tree(
            &built,
            &rootfs,
            &format!("built by {}, pushed, unpacked by umoci", who.label()),
        );
        assert!(!rootfs.join("opt/data/gone").exists());
        assert!(!rootfs.join("etc/os-release").exists());

        // `cairn pull` into another cache: the same tree, and it runs.
        let other = dir.join("other-cache");
        let pulled_ref = reference.trim_start_matches("docker://").to_owned();
        run_ok(
            cairn_in(&who, &other).args(["pull", "-q", &pulled_ref]),
            "cairn pull of the pushed image",
        );
        assert_eq!(run_in(&who, &other, &pulled_ref, &[]), "made\n");
        // A second push sends nothing new.
        let again = output(cairn_in(&who, &cache).args(["push", "pushme", &reference]));
        assert_success(&again, "second push");
        assert_eq!(stdout_of(&again).trim(), digest);
        assert!(
            stderr_of(&again).contains("0 blob(s) uploaded"),
            "{}",
            stderr_of(&again)
        );
    }
}

/// COPY on a skeleton of the stage (no `--chown`, or a numeric one: what
/// the COPY looks at is made from the layers, nothing unpacked) and on the
/// whole unpacked stage (`--chown` by name) make the same image: through a
/// symlink of the stage, into a 0555 directory, over a file, a directory
/// below a symlink, new parents. The base is an image of the cache (made
/// by `cairn import`): its blocks go into the output as they are, and
/// sqfsdiff reads both images whole.
#[test]
fn copy_on_a_skeleton_matches_copy_on_the_unpacked_stage() {
    if !require(have_tool("sqfsdiff"), "sqfsdiff (squashfs-tools-ng)") {
        return;
    }
    for who in runners("-Urm") {
        let label = format!("build-skeleton-{}", who.label());
        let steps = "FROM bb\n\
             RUN mkdir -p /opt/real/d /ro && ln -s /opt/real /lnk && echo old > /opt/real/f && chmod 0555 /ro\n\
             COPY CHOWN f.txt /lnk/\n\
             COPY CHOWN f.txt /ro/\n\
             COPY CHOWN f.txt /opt/real/f\n\
             COPY CHOWN d/ /lnk/d/\n\
             COPY CHOWN f.txt /new/deep/\n";
        let ctx = context(&label, &steps.replace("CHOWN", "--chown=0:0"));
        fs::write(ctx.join("f.txt"), "F\n").expect("f.txt");
        fs::create_dir(ctx.join("d")).expect("d");
        fs::write(ctx.join("d/g"), "G\n").expect("d/g");
        let top = ctx.parent().expect("parent").to_path_buf();
        let cache = top.join("cache");
        hand_to(&who, &top);
        run_ok(
            cairn_in(&who, &cache)
                .arg("import")
                .arg(format!("dir:{}", busybox_rootfs().display()))
                .args(["--name", "bb"]),
            "cairn import",
        );
        let skeleton = top.join("skeleton.sqfs");
        let out = build_ok(
            &who,
            &cache,
            &ctx,
            &["-t", "skel", "-o", &skeleton.display().to_string()],
        );
        assert_eq!(ran_and_cached(&out), (6, 0), "{out}");
        fs::write(
            ctx.join("Dockerfile"),
            steps.replace("CHOWN", "--chown=root:root"),
        )
        .expect("Dockerfile");
        let whole = top.join("whole.sqfs");
        let out = build_ok(
            &who,
            &cache,
            &ctx,
            &["-t", "whole", "-o", &whole.display().to_string()],
        );
        assert_eq!(ran_and_cached(&out), (5, 1), "{out}");
        let diff = output(
            std::process::Command::new("sqfsdiff")
                .arg("-a")
                .arg(&whole)
                .arg("-b")
                .arg(&skeleton),
        );
        // Their metadata differs (the layers' digests): nothing else.
        let report = stdout_of(&diff);
        let differences: Vec<&str> = report
            .lines()
            .filter(|l| *l != "regular file /.cairn/image.json differs")
            .collect();
        assert!(
            matches!(diff.status.code(), Some(0 | 1)) && differences.is_empty(),
            "as {}: the images differ:\n{report}{}",
            who.label(),
            stderr_of(&diff)
        );
        let seen = run_in(
            &who,
            &cache,
            "skel",
            &[
                "sh",
                "-c",
                "cat /opt/real/f.txt /ro/f.txt /opt/real/f /opt/real/d/g /new/deep/f.txt; \
                 readlink /lnk; stat -c %a /ro",
            ],
        );
        assert_eq!(
            seen,
            "F\nF\nF\nG\nF\n/opt/real\n555\n",
            "as {}",
            who.label()
        );
    }
}

/// ADD of local tar archives (made here by GNU tar and Python's tarfile):
/// plain, gzip'd and zstd'd ones unpacked into the destination, merged
/// with what is there, owners and modes as the archive has them (or
/// `--chown`'s); a gzip'd file that is no tar copied as it is; an archive
/// with a `..` entry, and an xz'd one, refused with 125 and the file
/// named, nothing stored.
#[test]
fn add_unpacks_local_tar_archives() {
    for who in runners("-Urm") {
        let label = format!("build-add-{}", who.label());
        let ctx = context(
            &label,
            "ARG BASE\n\
             FROM $BASE\n\
             RUN mkdir -p /opt/app && echo kept > /opt/app/kept\n\
             ADD app.tar.gz /opt/\n\
             ADD plain.tar app.tar.zst /plain/\n\
             ADD note.gz /opt/\n\
             ADD --chown=7:8 app.tar.gz /chowned\n",
        );
        let src = ctx.parent().expect("parent").join("src");
        fs::create_dir_all(src.join("app/bin")).expect("src");
        fs::write(src.join("app/bin/tool"), "#!/bin/sh\necho tool\n").expect("tool");
        fs::set_permissions(src.join("app/bin/tool"), fs::Permissions::from_mode(0o754))
            .expect("chmod");
        std::os::unix::fs::symlink("bin/tool", src.join("app/link")).expect("link");
        fs::write(src.join("zfile"), "zstd\n").expect("zfile");
        let tar = |args: &[&str]| {
            run_ok(
                std::process::Command::new("tar")
                    .arg("-C")
                    .arg(&src)
                    .args(["--owner=1234", "--group=5678", "--numeric-owner"])
                    .args(args),
                "tar",
            )
        };
        tar(&["-czf", &ctx.join("app.tar.gz").display().to_string(), "app"]);
        tar(&["-cf", &ctx.join("plain.tar").display().to_string(), "zfile"]);
        tar(&[
            "--zstd",
            "-cf",
            &ctx.join("app.tar.zst").display().to_string(),
            "app",
        ]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, b"just a note\n").expect("gz");
        fs::write(ctx.join("note.gz"), gz.finish().expect("gz")).expect("note.gz");
        let cache = ctx.parent().expect("parent").join("cache");
        hand_to(&who, ctx.parent().expect("parent"));
        build_ok(&who, &cache, &ctx, &["-t", "added"]);
        let seen = run_in(
            &who,
            &cache,
            "added",
            &[
                "sh",
                "-c",
                "cd /opt/app && cat kept && sh bin/tool && readlink link && \
                 stat -c %a bin/tool /chowned/app/bin/tool && cat /plain/zfile && \
                 sh /plain/app/bin/tool && gzip -dc /opt/note.gz && ls /opt",
            ],
        );
        assert_eq!(
            seen,
            "kept\ntool\nbin/tool\n754\n754\nzstd\ntool\njust a note\napp\nnote.gz\n",
            "as {}",
            who.label()
        );
        // Owners, as the image holds them (a run shows only the user's).
        let image = cairn::squashfs::reader::Archive::open(&cached_image(&cache, "added"))
            .expect("the built image");
        for (path, owner) in [
            ("opt/app/bin/tool", (1234, 5678)),
            ("chowned/app/bin/tool", (7, 8)),
            ("opt/app/kept", (0, 0)),
            ("opt/note.gz", (0, 0)),
        ] {
            let node = image
                .lookup_path(path.as_bytes())
                .expect("lookup")
                .expect(path);
            assert_eq!((node.stat().uid, node.stat().gid), owner, "{path}");
        }
        // A hostile archive, an xz'd one: refused, naming the file.
        let evil = ctx.join("evil.tar");
        run_ok(
            std::process::Command::new("python3").arg("-c").arg(format!(
                "import io, tarfile\n\
                 t = tarfile.open({:?}, 'w')\n\
                 i = tarfile.TarInfo('../escaped'); i.size = 3\n\
                 t.addfile(i, io.BytesIO(b'bad'))\n\
                 t.close()\n",
                evil.display().to_string()
            )),
            "python3 tarfile",
        );
        tar(&["-cJf", &ctx.join("app.tar.xz").display().to_string(), "app"]);
        hand_to(&who, ctx.parent().expect("parent"));
        for (file, names) in [("evil.tar", "ADD evil.tar"), ("app.tar.xz", "xz")] {
            fs::write(
                ctx.join("Dockerfile"),
                format!("ARG BASE\nFROM $BASE\nADD {file} /x/\n"),
            )
            .expect("Dockerfile");
            let out = build(&who, &cache, &ctx, &["-t", "bad-add"]);
            let err = stderr_of(&out);
            assert_eq!(out.status.code(), Some(125), "{file}: {err}");
            assert!(err.contains(names) && err.contains(file), "{file}: {err}");
        }
        let images = run_ok(cairn_in(&who, &cache).arg("images"), "images");
        assert!(!images.contains("bad-add"), "{images}");
    }
}

/// Stages that do not need each other are built side by side: each RUN
/// waits (up to a minute) for a file the other creates in /dev/shm (the
/// host's, as every run has it), so a build of one stage after the other
/// would fail. The stage that fails first gives the build its error, and
/// the stages waiting on it stop.
#[test]
fn independent_stages_are_built_side_by_side() {
    for who in runners("-Urm") {
        let label = format!("build-parallel-{}", who.label());
        let token = format!("cairn-par-{}-{}", std::process::id(), who.label());
        let wait_for = |mine: &str, other: &str| {
            format!(
                "RUN touch /dev/shm/{token}-{mine} && i=0 && \
                 while [ ! -e /dev/shm/{token}-{other} ]; do \
                 i=$((i+1)); [ $i -lt 60 ] || exit 9; sleep 1; done && \
                 echo {mine} > /{mine}\n"
            )
        };
        // A RUN's background process ends with the RUN (its own PID
        // namespace), as in Docker: found by its unique argument.
        let lingering = format!("{}{}", 7_000_000 + std::process::id(), who.uid());
        let ctx = context(
            &label,
            &format!(
                "ARG BASE\n\
                 FROM $BASE AS left\n{}\
                 RUN sleep {lingering} & echo said-left && kill -0 $! && echo sleeping\n\
                 FROM $BASE AS right\n{}\
                 RUN echo said-right >&2\n\
                 FROM $BASE\n\
                 COPY --from=left /left /\n\
                 COPY --from=right /right /\n\
                 CMD [\"cat\", \"/left\", \"/right\"]\n",
                wait_for("left", "right"),
                wait_for("right", "left"),
            ),
        );
        let cache = ctx.parent().expect("parent").join("cache");
        hand_to(&who, ctx.parent().expect("parent"));
        let out = build(&who, &cache, &ctx, &["-t", "both"]);
        for side in ["left", "right"] {
            let _ = fs::remove_file(format!("/dev/shm/{token}-{side}"));
        }
        assert_success(&out, &format!("cairn build as {}", who.label()));
        let err = stderr_of(&out);
        assert_eq!(ran_and_cached(&err), (6, 0), "{err}");
        assert_eq!(run_in(&who, &cache, "both", &[]), "left\nright\n");
        // stdout is the digest alone; RUN output, stdout and stderr, is on
        // stderr, each line with its stage's prefix.
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.starts_with("sha256:") && stdout.lines().count() == 1,
            "{stdout}"
        );
        // "sleeping": the background process was there when its RUN ended.
        for said in [
            "[stage 0] said-left\n",
            "[stage 0] sleeping\n",
            "[stage 1] said-right\n",
        ] {
            assert!(err.contains(said), "{said:?} in {err}");
        }
        let left = std::process::Command::new("pgrep")
            .args(["-f", &format!("sleep {lingering}")])
            .output()
            .expect("pgrep");
        assert!(
            left.stdout.is_empty(),
            "a RUN's background process outlived the build: {}",
            String::from_utf8_lossy(&left.stdout)
        );

        // The broken stage fails at once; the build's error is its RUN's
        // (not the "stopped" of the stage that needed it), and no name.
        fs::write(
            ctx.join("Dockerfile"),
            "ARG BASE\n\
             FROM $BASE AS slow\n\
             RUN sleep 1 && echo slow > /slow\n\
             FROM $BASE AS broken\n\
             RUN echo failing on purpose && exit 4\n\
             FROM $BASE\n\
             COPY --from=slow /slow /\n\
             COPY --from=broken /slow /\n",
        )
        .expect("Dockerfile");
        let out = build(&who, &cache, &ctx, &["-t", "half"]);
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains("Dockerfile:5") && err.contains("status 4"),
            "{err}"
        );
        let images = run_ok(cairn_in(&who, &cache).arg("images"), "images");
        assert!(!images.contains("half"), "{images}");
    }
}
