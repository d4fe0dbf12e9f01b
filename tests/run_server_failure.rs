//! The FUSE server's limits and failures, as root and as the ordinary
//! user: `--fuse-threads` and `fuse_threads` are bounded; and the `--pid`
//! init keeps none of the fds cairn inherited.

mod common;

use common::*;

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
