//! The FUSE server's limits and failures, as root and as the ordinary
//! user: a server that cannot start its workers ends the run at once with
//! its reason (exit 125), not a hang; `--fuse-threads` and `fuse_threads`
//! are bounded; and the `--pid` init keeps none of the fds cairn inherited.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

fn fuse_works() -> bool {
    require(Path::new("/dev/fuse").exists(), "/dev/fuse")
}

/// The callers that can run a FUSE image.
fn fuse_runners() -> Vec<Who> {
    if !fuse_works() {
        return Vec::new();
    }
    runners("-Urm")
}

/// `--mount fuse` for root (whose default is the kernel mount); the
/// ordinary user gets FUSE anyway.
fn fuse_option(who: &Who) -> &'static [&'static str] {
    if matches!(who, Who::Me) && is_root() {
        &["--mount", "fuse"]
    } else {
        &[]
    }
}

/// Workers asked for, and the fd limit that keeps them from starting:
/// each worker clones the device (an fd of its own), while cairn and the
/// server's setup need far fewer than the limit.
const WORKERS: &str = "200";
const FD_LIMIT: &str = "64";

#[test]
fn a_server_that_cannot_start_its_workers_ends_the_run_with_its_reason() {
    if !require(have_tool("prlimit"), "prlimit") {
        return;
    }
    let img = busybox_sqfs();
    for who in fuse_runners() {
        for pid in [&[][..], &["--pid"][..]] {
            let what = format!("{} {pid:?}", who.label());
            let mut cmd = command_as(&who, "prlimit");
            cmd.arg(format!("--nofile={FD_LIMIT}:{FD_LIMIT}"))
                .arg("--")
                .arg(cairn_bin())
                .arg("run")
                .args(fuse_option(&who))
                .args(["--fuse-threads", WORKERS])
                .args(pid)
                .arg(img)
                .args(["--", "true"]);
            let start = Instant::now();
            // Before the fix this waited forever for the first LOOKUP.
            let out = output_within(&mut cmd, 20);
            let took = start.elapsed();
            let err = stderr_of(&out);
            assert_eq!(out.status.code(), Some(125), "{what}: {err}");
            assert!(took < Duration::from_secs(5), "{what}: took {took:?}");
            // The image, the server's own reason, and what it tried.
            assert!(err.contains(&img.display().to_string()), "{what}: {err}");
            assert!(err.contains("FUSE server"), "{what}: {err}");
            assert!(err.contains("Too many open files"), "{what}: {err}");
            assert!(
                err.contains(&format!("{WORKERS} worker threads")),
                "{what}: {err}"
            );
        }
    }
}

#[test]
fn fuse_threads_beyond_the_bound_are_refused_naming_the_option() {
    let img = busybox_sqfs();
    for who in callers() {
        let out = output_within(
            cairn_as(&who)
                .args(["run", "--fuse-threads", "20000"])
                .arg(img)
                .args(["--", "true"]),
            20,
        );
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(125), "{}: {err}", who.label());
        assert!(
            err.contains("--fuse-threads") && err.contains("20000") && err.contains("256"),
            "{}: {err}",
            who.label()
        );
    }
    // The same bound for the config key, naming the file.
    let dir = scratch("threads-config");
    let site = dir.join("cairn.toml");
    std::fs::write(&site, "[defaults]\nfuse_threads = 1000\n").expect("write the site config");
    for who in callers() {
        let out = output_within(
            cairn_as(&who)
                .env("CAIRN_CONFIG", &site)
                .env("XDG_CONFIG_HOME", &dir)
                .arg("run")
                .arg(img)
                .args(["--", "true"]),
            20,
        );
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(125), "{}: {err}", who.label());
        assert!(
            err.contains("fuse_threads")
                && err.contains("256")
                && err.contains(&site.display().to_string()),
            "{}: {err}",
            who.label()
        );
    }
}

#[test]
fn the_pid_init_keeps_none_of_the_fds_cairn_inherited() {
    let img = busybox_sqfs();
    for who in runners("-Urmp") {
        // fd 5 stands for anything a launcher leaves open (a file, a
        // socket); the job runs as root inside, where PID 1's fds are
        // within reach.
        let script = format!(
            "exec 5</etc/passwd; exec '{}' run --pid --uid 0 '{}' -- ls /proc/1/fd",
            cairn_bin().display(),
            img.display()
        );
        let out = output_within(command_as(&who, "sh").args(["-c", &script]), 60);
        assert_success(&out, &format!("--pid --uid 0 as {}", who.label()));
        let fds: Vec<String> = stdout_of(&out)
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        assert_eq!(fds, ["0", "1", "2"], "{}", who.label());
    }
}
