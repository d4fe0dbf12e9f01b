//! The FUSE server's failures and its end, as root and as the ordinary
//! user: a server that cannot start its workers ends the run at once with
//! its reason (exit 125), not a hang; `--fuse-threads` and `fuse_threads`
//! are bounded; with `--pid` cairn reaps the server itself, even under a
//! subreaper that never reaps; and the `--pid` init keeps none of the fds
//! cairn inherited.

mod common;

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;

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

/// The env var that turns [`reaper_harness`] on: the command it runs,
/// its arguments separated by [`SEPARATOR`] (an environment value cannot
/// hold NUL bytes).
const HARNESS_COMMAND: &str = "CAIRN_TEST_REAPER_COMMAND";
const SEPARATOR: u8 = 0x1f;

/// A copy of this test binary the test user can execute.
fn harness_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test binary");
        let dst = shared_dir().join("reaper-harness");
        copy_executable(&exe, &dst);
        dst
    })
}

/// Run `command` as `who` under [`reaper_harness`]; its stdout.
fn under_a_reaper_that_never_reaps(who: &Who, command: &[OsString]) -> Output {
    let joined = command.join(std::ffi::OsStr::from_bytes(&[SEPARATOR]));
    let mut cmd = command_as(who, harness_bin());
    cmd.args(["--ignored", "--exact", "reaper_harness", "--nocapture"])
        .args(["--test-threads", "1"])
        .env(HARNESS_COMMAND, joined);
    output_within(&mut cmd, 60)
}

/// Not a test: the parent process of [`with_pid_cairn_reaps_its_server`].
/// It makes itself a child subreaper (orphans below it become its
/// children), runs the command, waits for that one process only (as a
/// launcher does), never reaps anything else, and after a grace period
/// prints its children (`CHILD pid comm state`) and the command's status.
#[test]
#[ignore = "a helper process that the --pid reaping test runs"]
fn reaper_harness() {
    let Some(command) = std::env::var_os(HARNESS_COMMAND) else {
        return;
    };
    let args: Vec<OsString> = command
        .as_bytes()
        .split(|&b| b == SEPARATOR)
        .map(|a| OsString::from_vec(a.to_vec()))
        .collect();
    nix::sys::prctl::set_child_subreaper(true).expect("PR_SET_CHILD_SUBREAPER");
    let (program, rest) = args.split_first().expect("a command");
    let status = Command::new(program)
        .args(rest)
        .status()
        .expect("run the command");
    // Long enough for a server left to us to see its mount go and exit.
    std::thread::sleep(Duration::from_millis(1500));
    let me = std::process::id().to_string();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces and parentheses.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = &stat[open + 1..close];
        let mut fields = stat[close + 1..].split_whitespace();
        let (Some(state), Some(ppid)) = (fields.next(), fields.next()) else {
            continue;
        };
        if ppid == me {
            println!(
                "CHILD {} {comm} {state}",
                entry.file_name().to_string_lossy()
            );
        }
    }
    println!("STATUS {:?}", status.code());
}

#[test]
fn with_pid_cairn_reaps_its_server_under_a_subreaper_that_never_reaps() {
    let img = busybox_sqfs();
    for who in fuse_runners() {
        let mut command: Vec<OsString> = vec![cairn_bin().into(), "run".into()];
        command.extend(fuse_option(&who).iter().map(OsString::from));
        command.extend(["--pid".into(), img.into(), "--".into()]);
        // The job reads through the mount, so the server surely served.
        command.extend(["cat".into(), "/etc/os-release".into()]);
        let out = under_a_reaper_that_never_reaps(&who, &command);
        let text = stdout_of(&out);
        assert_success(&out, "the reaper harness");
        assert!(text.contains("cairn test image"), "{}: {text}", who.label());
        assert!(text.contains("STATUS Some(0)"), "{}: {text}", who.label());
        // No server left to the harness, neither running nor defunct.
        let servers: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("CHILD ") && l.contains(" cairn-fuse "))
            .collect();
        assert!(servers.is_empty(), "{}: {servers:?}\n{text}", who.label());
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
