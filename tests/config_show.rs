//! `cairn config show [--json]`: each value with its origin (default, site,
//! user, environment, command line), policy marked site-only, hooks with
//! their contents; and the configured cache directory used by `cairn
//! images` and by `cairn run NAME`, as root and as the ordinary user.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    fs::write(path, text).expect("write");
}

fn cairn(who: &Who, site: &Path, xdg: &Path) -> Command {
    let mut cmd = cairn_as(who);
    cmd.env("CAIRN_CONFIG", site)
        .env("XDG_CONFIG_HOME", xdg)
        .env_remove("CAIRN_CACHE")
        .env_remove("CAIRN_JOIN_LINGER_MS")
        .env_remove("CAIRN_WARM_LINGER");
    cmd
}

/// The line of `key` in the text output.
fn line_of<'a>(text: &'a str, key: &str) -> &'a str {
    let prefix = format!("{key} = ");
    text.lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no {key} in:\n{text}"))
}

#[test]
fn each_value_names_its_origin() {
    let dir = scratch("cfg-show");
    let site = dir.join("site.toml");
    let xdg = dir.join("xdg");
    let user = xdg.join("cairn/config.toml");
    write(
        &site,
        "[defaults]\nmount = \"fuse\"\nfuse_threads = 3\ncache_dir = \"/site/cache\"\n\
         [defaults.join]\nlinger_ms = 100\n\
         [defaults.env]\nprepend = { PATH = \"/opt/site/bin\" }\n\
         [policy]\nimage_paths = [\"/scratch\"]\n\
         [hooks.host-mpi]\ndescription = \"host MPI\"\nbinds = [\"/usr/lib:/opt/host-mpi/lib:ro\"]\n\
         [hooks.host-mpi.env]\nprepend = { LD_LIBRARY_PATH = \"/opt/host-mpi/lib\" }\n",
    );
    write(
        &user,
        "[defaults]\nfuse_threads = 5\nhooks = [\"host-mpi\"]\n",
    );
    let site_s = site.display().to_string();
    let user_s = user.display().to_string();
    for who in callers() {
        let out = output(
            cairn(&who, &site, &xdg)
                .env("CAIRN_CACHE", "/env/cache")
                .args(["config", "show", "--mount", "kernel"]),
        );
        assert_success(&out, "config show");
        let text = stdout_of(&out);
        assert!(
            text.contains(&format!("# site config: {site_s} (read)")),
            "{text}"
        );
        assert!(
            text.contains(&format!("# user config: {user_s} (read)")),
            "{text}"
        );
        assert_eq!(
            line_of(&text, "mount"),
            "mount = \"kernel\"  # from command-line"
        );
        assert_eq!(
            line_of(&text, "fuse_threads"),
            format!("fuse_threads = 5  # from user {user_s}")
        );
        assert_eq!(
            line_of(&text, "cache_dir"),
            "cache_dir = \"/env/cache\"  # from environment CAIRN_CACHE"
        );
        assert_eq!(
            line_of(&text, "join.linger_ms").split(" (").next(),
            Some(format!("join.linger_ms = 100  # from site {site_s}").as_str())
        );
        assert_eq!(
            line_of(&text, "env.prepend.PATH"),
            format!("env.prepend.PATH = \"/opt/site/bin\"  # from site {site_s}")
        );
        assert_eq!(
            line_of(&text, "hooks"),
            format!("hooks = [\"host-mpi\"]  # from user {user_s}")
        );
        assert_eq!(
            line_of(&text, "join.auto"),
            "join.auto = false  # from default"
        );
        assert!(
            text.contains(&format!(
                "[policy]  # site-only: users cannot override it; from site {site_s}"
            )),
            "{text}"
        );
        assert_eq!(
            line_of(&text, "image_paths"),
            "image_paths = [\"/scratch\"]"
        );
        assert!(text.contains("[hooks.host-mpi]"), "{text}");
        assert!(
            text.contains("env.prepend.LD_LIBRARY_PATH = \"/opt/host-mpi/lib\""),
            "{text}"
        );

        // The same as JSON.
        let out = output(
            cairn(&who, &site, &xdg)
                .env("CAIRN_CACHE", "/env/cache")
                .args(["config", "show", "--json", "--fuse-threads", "7"]),
        );
        assert_success(&out, "config show --json");
        let json: serde_json::Value = serde_json::from_str(&stdout_of(&out)).expect("json");
        let entry = |key: &str| {
            json["defaults"]
                .as_array()
                .expect("defaults")
                .iter()
                .find(|d| d["key"] == key)
                .unwrap_or_else(|| panic!("{key} in {json}"))
                .clone()
        };
        assert_eq!(entry("mount")["value"], "fuse");
        assert_eq!(entry("mount")["origin"]["kind"], "site");
        assert_eq!(entry("mount")["origin"]["from"], site_s.as_str());
        assert_eq!(entry("fuse_threads")["value"], 7);
        assert_eq!(entry("fuse_threads")["origin"]["kind"], "command-line");
        assert_eq!(entry("cache_dir")["origin"]["kind"], "environment");
        assert_eq!(entry("cache_dir")["origin"]["from"], "CAIRN_CACHE");
        assert_eq!(entry("cdi_spec_dirs")["origin"]["kind"], "default");
        assert_eq!(json["policy"]["site_only"], true);
        assert_eq!(json["policy"]["values"]["image_paths"][0], "/scratch");
        assert_eq!(
            json["hooks"]["host-mpi"]["binds"][0],
            "/usr/lib:/opt/host-mpi/lib:ro"
        );
        assert_eq!(json["active_hooks"][0], "host-mpi");
    }
}

#[test]
fn configured_cache_dir_serves_images_and_run() {
    let dir = scratch("cfg-cache");
    let cache = dir.join("site-cache");
    let site = dir.join("site.toml");
    let xdg = dir.join("xdg");
    write(
        &site,
        &format!(
            "[defaults]\ncache_dir = {:?}\n",
            cache.display().to_string()
        ),
    );
    // `cairn import --name` stores into $CAIRN_CACHE: the same directory.
    let out = output(
        Command::new(cairn_bin())
            .env("CAIRN_CACHE", &cache)
            .arg("import")
            .arg(format!("dir:{}", busybox_rootfs().display()))
            .args(["--name", "cfg-cache-test"]),
    );
    assert_success(&out, "cairn import --name");
    for who in callers() {
        let out = output(cairn(&who, &site, &xdg).args(["images", "-q"]));
        assert_success(&out, "cairn images");
        assert!(
            stdout_of(&out).contains("cfg-cache-test"),
            "{}",
            stdout_of(&out)
        );
        let out = output(cairn(&who, &site, &xdg).args(["config", "show"]));
        assert_success(&out, "config show");
        assert_eq!(
            line_of(&stdout_of(&out), "cache_dir"),
            format!(
                "cache_dir = {:?}  # from site {}",
                cache.display().to_string(),
                site.display()
            )
        );
        // Without the config the name is unknown.
        let out = output(
            cairn(&who, Path::new("/dev/null"), &xdg)
                .env("HOME", dir.join("nohome"))
                .args(["images", "-q"]),
        );
        assert_success(&out, "cairn images without config");
        assert!(!stdout_of(&out).contains("cfg-cache-test"));
    }
    for who in runners("-Urm") {
        let out = output(cairn(&who, &site, &xdg).args([
            "run",
            "cfg-cache-test",
            "cat",
            "/etc/os-release",
        ]));
        assert_success(&out, "cairn run NAME from the configured cache");
    }
}

#[test]
fn join_auto_joins_the_launchers_ranks() {
    let dir = scratch("cfg-join");
    let auto = dir.join("auto.toml");
    let off = dir.join("off.toml");
    let xdg = dir.join("xdg");
    write(&auto, "[defaults.join]\nauto = true\n");
    write(&off, "");
    let rank = |who: &Who, site: &Path, job: &str, extra: &[&str], script: &str| {
        let mut cmd = cairn(who, site, &xdg);
        cmd.env("SLURM_JOB_ID", job)
            .env("SLURM_STEP_ID", "0")
            .arg("run")
            .args(extra)
            .arg(busybox_rootfs())
            .args(["/bin/sh", "-c", script]);
        cmd
    };
    // Two ranks alive at once (the first waits for the second): with a
    // join they share one mount namespace, without they cannot.
    let pair = |who: &Who, site: &Path, job: &str| {
        let flag = dir.join(format!("{job}.done"));
        let first = rank(
            who,
            site,
            job,
            &[],
            &format!(
                "readlink /proc/self/ns/mnt; i=0; while [ ! -e {f} ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done",
                f = flag.display()
            ),
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn first rank");
        // Let the first rank set the namespace up before the second starts.
        std::thread::sleep(std::time::Duration::from_millis(500));
        let second = output(&mut rank(who, site, job, &[], "readlink /proc/self/ns/mnt"));
        fs::write(&flag, "").expect("flag");
        let first = first.wait_with_output().expect("first rank");
        assert_success(&first, "first rank");
        assert_success(&second, "second rank");
        (stdout_of(&first), stdout_of(&second))
    };
    for who in runners("-Urm") {
        let job = format!("cfg-join-{}-{}", std::process::id(), who.uid());
        let (a, b) = pair(&who, &auto, &job);
        assert_eq!(a, b, "join.auto = true: one namespace");
        let (a, b) = pair(&who, &off, &format!("{job}-off"));
        assert_ne!(a, b, "join.auto unset: a namespace each");
        // --pid cannot join: auto-join steps aside instead of failing.
        let out = output(&mut rank(
            &who,
            &auto,
            &format!("{job}-pid"),
            &["--pid"],
            "true",
        ));
        assert_success(&out, "--pid under join.auto");
    }
}
