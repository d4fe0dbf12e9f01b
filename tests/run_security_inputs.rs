//! `cairn run` inputs that used to be accepted silently or to fail with a
//! raw errno, with the real binary, as root and as the ordinary user:
//! `--unset-env` globs, unmappable `--uid/--gid`, bind destinations that
//! image symlinks lead into host directories, binds over the image's
//! `/etc`, colons in bind paths, ANSI colours in piped logs, and site
//! policy's forbidden bind sources below a bound directory.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

/// A private copy of the busybox rootfs in a fresh scratch directory.
fn image(name: &str) -> (PathBuf, PathBuf) {
    let base = scratch(name);
    let image = base.join("img");
    copy_busybox_rootfs(&image);
    (base, image)
}

/// `cairn run OPTS IMAGE /bin/sh -c SCRIPT` as `who`, with the site file
/// `site` (none: an empty one) and no user file.
fn run_with(who: &Who, site: Option<&Path>, opts: &[&str], image: &Path, script: &str) -> Output {
    let dir = shared_dir().join("no-config");
    fs::create_dir_all(&dir).expect("mkdir");
    let empty = dir.join("cairn.toml");
    fs::write(&empty, "").expect("write empty site file");
    output_within(
        cairn_as(who)
            .env("CAIRN_CONFIG", site.unwrap_or(&empty))
            .env("XDG_CONFIG_HOME", &dir)
            .env_remove("CAIRN_CACHE")
            .arg("run")
            .args(opts)
            .arg(image)
            .args(["/bin/sh", "-c", script]),
        60,
    )
}

fn run(who: &Who, opts: &[&str], image: &Path, script: &str) -> Output {
    run_with(who, None, opts, image, script)
}

#[track_caller]
fn assert_refused(out: &Output, needles: &[&str]) {
    let err = stderr_of(out);
    assert_eq!(out.status.code(), Some(125), "stderr: {err}");
    for n in needles {
        assert!(err.contains(n), "{n:?} missing from: {err}");
    }
}

#[test]
fn bad_unset_env_globs_are_refused() {
    let (_base, image) = image("unset-env");
    for who in callers() {
        let out = run(&who, &["--unset-env", "["], &image, "true");
        assert_refused(&out, &["--unset-env \"[\"", "only '*' and '?'"]);
        let out = run(&who, &["--unset-env", ""], &image, "true");
        assert_refused(&out, &["--unset-env \"\"", "empty glob"]);
    }
    for who in runners("-Urm") {
        let out = run(
            &who,
            &["-e", "KEEP=1", "-e", "DROP_A=1", "--unset-env", "DROP_*"],
            &image,
            "echo ${KEEP:-}${DROP_A:-}",
        );
        assert_success(&out, "a good glob");
        assert_eq!(stdout_of(&out), "1\n");
    }
}

#[test]
fn unmappable_ids_are_refused_before_the_uid_map_write() {
    let (_base, image) = image("ids");
    for who in callers() {
        for option in ["--uid", "--gid"] {
            let out = run(&who, &[option, "4294967295"], &image, "true");
            assert_refused(
                &out,
                &[&format!("{option} 4294967295: "), "cannot be an id"],
            );
            assert!(
                !stderr_of(&out).contains("uid_map \""),
                "{}",
                stderr_of(&out)
            );
        }
    }
    for who in runners("-Urm") {
        let out = run(&who, &["--uid", "4294967294"], &image, "id -u");
        assert_success(&out, "the largest mappable uid");
        assert_eq!(stdout_of(&out), "4294967294\n");
    }
}

/// Does `bytes` hold an ANSI escape (ESC)?
fn has_escape(bytes: &[u8]) -> bool {
    bytes.contains(&0x1b)
}

#[test]
fn piped_log_lines_carry_no_colours() {
    // A WARN line: a device node an ordinary user cannot create.
    let base = scratch("log-colours");
    let src = base.join("src");
    fs::create_dir_all(&src).expect("mkdir");
    fs::write(src.join("f"), "x\n").expect("write");
    let img = base.join("dev.sqfs");
    mksquashfs(&src, &img, &["-p", "null c 666 root root 1 3"]);
    if let Some(user) = ordinary_user() {
        let out = output(
            cairn_as(&user)
                .arg("unsquash")
                .arg(&img)
                .arg(base.join(format!("out-{}", user.label()))),
        );
        assert_success(&out, "unsquash as the ordinary user");
        let err = stderr_of(&out);
        assert!(
            err.contains("WARN") && err.contains("skipping device"),
            "{err}"
        );
        assert!(!has_escape(&out.stderr), "colours in a pipe: {err:?}");
    }
    // Every level of a run, root and user paths alike.
    let (_base, image) = image("log-colours-run");
    for who in runners("-Urm") {
        let out = output(
            cairn_as(&who)
                .env("CAIRN_LOG", "debug")
                .arg("run")
                .arg(&image)
                .arg("true"),
        );
        assert_success(&out, "run with debug logs");
        assert!(stderr_of(&out).contains("DEBUG"), "{}", stderr_of(&out));
        assert!(!has_escape(&out.stderr), "{:?}", stderr_of(&out));
    }
    // On a terminal (script(1) gives one) colours stay, unless NO_COLOR.
    if have_tool("script") && runners("-Urm").iter().any(|w| matches!(w, Who::Me)) {
        let line = format!("{} run {} true", cairn_bin().display(), image.display());
        let tty = |no_color: Option<&str>| {
            let mut cmd = Command::new("script");
            without_warm_runs(&mut cmd);
            cmd.args(["-qec", &line, "/dev/null"])
                .env("CAIRN_LOG", "debug")
                .env_remove("NO_COLOR");
            if let Some(v) = no_color {
                cmd.env("NO_COLOR", v);
            }
            let out = output(&mut cmd);
            assert_success(&out, "run on a terminal");
            assert!(stdout_of(&out).contains("DEBUG"), "{}", stdout_of(&out));
            out.stdout
        };
        assert!(has_escape(&tty(None)), "no colours on a terminal");
        assert!(
            has_escape(&tty(Some(""))),
            "an empty NO_COLOR counts as unset"
        );
        assert!(!has_escape(&tty(Some("1"))), "colours despite NO_COLOR");
    }
}

#[test]
fn escaped_colons_bind_paths_that_contain_colons() {
    let (base, image) = image("bind-colon");
    let src = base.join("run:1");
    fs::create_dir_all(&src).expect("mkdir");
    fs::write(src.join("f"), "colon\n").expect("write");
    fs::create_dir_all(image.join("mnt/in:side")).expect("mkdir");
    let escaped = src.display().to_string().replace(':', "\\:");
    for who in callers() {
        // Unescaped, `run:1` splits into fields: a clear refusal.
        let spec = format!("{}:/mnt", src.display());
        let out = run(&who, &["-b", &spec], &image, "true");
        assert_refused(&out, &["unknown option \"/mnt\"", "write \\: for a ':'"]);
        let out = run(&who, &["-b", &format!("{spec}:ro")], &image, "true");
        assert_refused(&out, &["too many ':' fields", "write \\: for a ':'"]);
        let out = run(&who, &["-b", "/tmp\\x:/mnt"], &image, "true");
        assert_refused(&out, &["'\\' must be followed by ':' or '\\'"]);
    }
    for who in runners("-Urm") {
        let spec = format!("{escaped}:/mnt/in\\:side:ro");
        let out = run(&who, &["-b", &spec], &image, "cat '/mnt/in:side/f'");
        assert_success(&out, "bind with escaped colons");
        assert_eq!(stdout_of(&out), "colon\n");
    }
}

#[test]
fn bind_destinations_through_symlinks_into_host_directories_are_refused_clearly() {
    let (base, image) = image("bind-symlink");
    std::os::unix::fs::symlink("/tmp/nothere/x", image.join("out")).expect("ln");
    std::os::unix::fs::symlink("/opt/new", image.join("dangling")).expect("ln");
    let sqfs = base.join("img.sqfs");
    assert_success(
        &output(
            Command::new(cairn_bin())
                .arg("squash")
                .arg(&image)
                .arg(&sqfs),
        ),
        "cairn squash",
    );
    let src = base.join("src");
    fs::create_dir_all(&src).expect("mkdir");
    fs::write(src.join("f"), "bound\n").expect("write");
    let spec = |dst: &str| format!("{}:{dst}", src.display());
    let out_spec = spec("/out");
    for who in callers() {
        for img in [&image, &sqfs] {
            for w in [&[][..], &["-w"][..]] {
                let opts = [w, &["-b", &out_spec][..]].concat();
                let out = run(&who, &opts, img, "true");
                assert_refused(
                    &out,
                    &["/out", "symlink /out -> /tmp/nothere/x", "under /tmp,"],
                );
                let err = stderr_of(&out);
                assert!(
                    !err.contains("No such file") && !err.contains("--writable-tmpfs can"),
                    "{err}"
                );
            }
            // Read-only: the dangling link's target is missing, -w creates it.
            let out = run(&who, &["-b", &spec("/dangling")], img, "true");
            assert_refused(
                &out,
                &["symlink /dangling -> /opt/new", "--writable-tmpfs can"],
            );
        }
    }
    for who in runners("-Urm") {
        for img in [&image, &sqfs] {
            let out = run(
                &who,
                &["-w", "-b", &spec("/dangling")],
                img,
                "cat /opt/new/f",
            );
            assert_success(&out, "-w creates the target of a dangling image symlink");
            assert_eq!(stdout_of(&out), "bound\n");
        }
    }
}

#[test]
fn a_bind_over_etc_wins_over_the_generated_passwd_and_group() {
    let (base, image) = image("bind-etc");
    std::os::unix::fs::symlink("/etc", image.join("conf")).expect("ln");
    let sqfs = base.join("img.sqfs");
    assert_success(
        &output(
            Command::new(cairn_bin())
                .arg("squash")
                .arg(&image)
                .arg(&sqfs),
        ),
        "cairn squash",
    );
    let host_etc = base.join("host-etc");
    fs::create_dir_all(&host_etc).expect("mkdir");
    fs::write(host_etc.join("motd"), "from the host\n").expect("write");
    fs::write(host_etc.join("passwd"), "mine:x:7:7::/:/bin/sh\n").expect("write");
    for who in runners("-Urm") {
        for img in [&image, &sqfs] {
            for dst in ["/etc", "/conf"] {
                let spec = format!("{}:{dst}:ro", host_etc.display());
                let out = run(&who, &["-b", &spec], img, "cat /etc/motd /etc/passwd");
                assert_success(&out, &format!("-b over /etc as {dst}"));
                assert_eq!(stdout_of(&out), "from the host\nmine:x:7:7::/:/bin/sh\n");
                let err = stderr_of(&out);
                assert!(
                    err.contains("WARN the bind on /etc covers /etc/passwd")
                        && err.contains("/etc/group"),
                    "{err}"
                );
                // A WARN of a run, piped: no colours either.
                assert!(!has_escape(&out.stderr), "{err:?}");
            }
        }
        // Without the bind the job still gets its generated entry.
        let out = run(&who, &[], &image, "grep -c ':x:' /etc/passwd");
        assert_success(&out, "generated passwd");
    }
}

/// Prints each file's contents, or `UNREADABLE <path>`, and each
/// directory's entries as `LS <path>: <names>`.
fn probe_script(files: &[&Path], dirs: &[&Path]) -> String {
    let mut script = String::new();
    for f in files {
        let f = f.display();
        script.push_str(&format!("cat '{f}' 2>/dev/null || echo 'UNREADABLE {f}'; "));
    }
    for d in dirs {
        let d = d.display();
        script.push_str(&format!(
            "echo \"LS {d}: $(ls -A '{d}' 2>&1 | tr '\\n' ' ')\"; "
        ));
    }
    script
}

#[test]
fn forbidden_sources_inside_default_binds_are_masked_and_user_binds_refused() {
    let (base, image) = image("forbidden-inside");
    // Below the host /tmp (the default bind of /tmp shows `base`).
    let secret_dir = base.join("secret");
    let secret_file = base.join("secret-file");
    let open = base.join("open");
    // A site hook's bind source holding a forbidden directory.
    let site_src = base.join("site");
    let site_keys = site_src.join("keys");
    // A home outside /tmp (so that only --home shows it), removed at the end.
    let home_parent = tempfile::Builder::new()
        .prefix("cairn-forbidden-home-")
        .tempdir_in("/var/tmp")
        .expect("home in /var/tmp");
    let home = home_parent.path().join("home");
    let home_secret = home.join(".ssh");
    for d in [&secret_dir, &open, &site_keys, &home_secret] {
        fs::create_dir_all(d).expect("mkdir");
    }
    for (file, text) in [
        (secret_dir.join("f"), "SECRET-DIR\n"),
        (secret_file.clone(), "SECRET-FILE\n"),
        (open.join("f"), "open\n"),
        (site_keys.join("k"), "SECRET-SITE\n"),
        (site_src.join("motd"), "site\n"),
        (home_secret.join("id"), "SECRET-HOME\n"),
        (home.join("notes"), "home\n"),
    ] {
        fs::write(file, text).expect("write");
    }
    let chmod = Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(home_parent.path())
        .arg(&base)
        .status()
        .expect("chmod");
    assert!(chmod.success());
    fs::create_dir_all(image.join(home.strip_prefix("/").expect("absolute"))).expect("mkdir");
    let site = base.join("cairn.toml");
    let quoted = |p: &Path| format!("{:?}", p.display().to_string());
    fs::write(
        &site,
        format!(
            "[policy]\nforbidden_bind_sources = [{}, {}, {}, {}]\n[hooks.site]\nbinds = [\"{}:/data:ro\"]\n",
            quoted(&secret_dir),
            quoted(&secret_file),
            quoted(&site_keys),
            quoted(&home_secret),
            site_src.display()
        ),
    )
    .expect("write site file");
    fs::set_permissions(&site, std::os::unix::fs::PermissionsExt::from_mode(0o644)).expect("chmod");

    // An explicit -b whose source holds a forbidden path: refused.
    for who in callers() {
        let spec = format!("{}:/mnt", base.display());
        let out = run_with(&who, Some(&site), &["-b", &spec], &image, "true");
        assert_refused(
            &out,
            &[
                "forbidden_bind_sources",
                &format!("contains {}", secret_dir.display()),
                &site.display().to_string(),
            ],
        );
    }
    let files = [
        secret_dir.join("f"),
        secret_file.clone(),
        open.join("f"),
        PathBuf::from("/data/keys/k"),
        PathBuf::from("/data/motd"),
        home_secret.join("id"),
        home.join("notes"),
    ];
    let files: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let dirs = [
        secret_dir.as_path(),
        Path::new("/data/keys"),
        home_secret.as_path(),
    ];
    let script = probe_script(&files, &dirs);
    for who in runners("-Urm") {
        let out = output_within(
            cairn_as(&who)
                .env("CAIRN_CONFIG", &site)
                .env("XDG_CONFIG_HOME", &base)
                .env("HOME", &home)
                .env_remove("TMPDIR")
                .args(["run", "--home", "--hook", "site"])
                .arg(&image)
                .args(["/bin/sh", "-c", &script]),
            60,
        );
        assert_success(&out, &format!("masked run as {}", who.label()));
        let text = stdout_of(&out);
        assert!(!text.contains("SECRET"), "forbidden content inside: {text}");
        for readable in ["open\n", "site\n", "home\n"] {
            assert!(text.contains(readable), "{readable:?} missing: {text}");
        }
        assert!(
            text.contains(&format!("UNREADABLE {}", secret_dir.join("f").display())),
            "{text}"
        );
        for d in dirs {
            assert!(
                text.contains(&format!("LS {}: \n", d.display())),
                "{d:?} not empty: {text}"
            );
        }
        // The secret file reads as empty, and the masks are read-only.
        let out = output_within(
            cairn_as(&who)
                .env("CAIRN_CONFIG", &site)
                .env("XDG_CONFIG_HOME", &base)
                .env_remove("TMPDIR")
                .arg("run")
                .arg(&image)
                .args(["/bin/sh", "-c"])
                .arg(format!(
                    "wc -c < '{f}'; echo x > '{f}' || echo RO; touch '{d}/new' || echo RO",
                    f = secret_file.display(),
                    d = secret_dir.display()
                )),
            60,
        );
        assert_success(&out, "masks are empty and read-only");
        assert_eq!(stdout_of(&out), "0\nRO\nRO\n", "{}", stderr_of(&out));
    }
    assert_eq!(
        fs::read_to_string(&secret_file).expect("read"),
        "SECRET-FILE\n"
    );
}
