//! `--pid` (PID 1 init that reaps and forwards), `--net none`,
//! `-w/--writable-tmpfs`, and signals sent to cairn reaching the job, as root
//! and as the ordinary user.

mod common;

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

fn run_sh(who: &Who, opts: &[&str], script: &str) -> Output {
    output(
        cairn_as(who)
            .arg("run")
            .args(opts)
            .arg(busybox_rootfs())
            .args(["/bin/sh", "-c", script]),
    )
}

#[test]
fn pid_namespace_has_an_init_as_pid_1_and_its_own_proc() {
    for who in runners("-Urmp") {
        let out = run_sh(
            &who,
            &["--pid"],
            "echo $$; ls /proc | grep -c '^[0-9]'; cat /proc/1/cmdline | tr '\\0' ' '",
        );
        assert_success(&out, "--pid");
        let text = stdout_of(&out);
        let lines: Vec<&str> = text.lines().collect();
        // The job is PID 2, forked by cairn's init, PID 1.
        assert_eq!(lines[0], "2", "{text}");
        let procs: u32 = lines[1].trim().parse().expect("count");
        assert!(
            procs <= 4,
            "only the init, the job and its children: {text}"
        );
        assert!(
            lines[2].contains("cairn"),
            "PID 1 must be cairn's init: {text}"
        );
    }
}

#[test]
fn pid_init_passes_the_job_status_through() {
    for who in runners("-Urmp") {
        assert_eq!(run_sh(&who, &["--pid"], "exit 3").status.code(), Some(3));
        assert_eq!(run_sh(&who, &["--pid"], "true").status.code(), Some(0));
        let out = run_sh(&who, &["--pid"], "kill -TERM $$");
        assert_eq!(out.status.code(), Some(128 + 15), "{:?}", out.status);
        let out = output(
            cairn_as(&who)
                .args(["run", "--pid"])
                .arg(busybox_rootfs())
                .arg("no-such-cmd"),
        );
        assert_eq!(out.status.code(), Some(127), "{}", stderr_of(&out));
    }
}

#[test]
fn pid_init_reaps_orphaned_zombies() {
    for who in runners("-Urmp") {
        // The inner shell exits at once, leaving `sleep` orphaned to PID 1;
        // once it exits it must be reaped, not left a zombie.
        let out = run_sh(
            &who,
            &["--pid"],
            "sh -c 'sleep 0.2 &'; sleep 1; ps -o pid,stat,comm | grep -c ' Z ' || true",
        );
        assert_success(&out, "zombie check");
        assert_eq!(
            stdout_of(&out).trim(),
            "0",
            "zombies left: {}",
            stdout_of(&out)
        );
    }
}

#[test]
fn net_none_has_only_loopback_up() {
    for who in runners("-Urmn") {
        let out = run_sh(
            &who,
            &["--net", "none"],
            "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; ls /sys/class/net; ip link show lo",
        );
        assert_success(&out, "--net none");
        let text = stdout_of(&out);
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("lo"), "{text}");
        assert_eq!(lines.next(), Some("lo"), "{text}");
        let link = lines.collect::<Vec<_>>().join("\n");
        assert!(link.contains("UP"), "lo must be up: {text}");
    }
}

/// A copy of the busybox image owned by `who`, as a rootfs a user unpacked
/// themselves would be (files of an unmapped owner stay read-only to the
/// job even in an overlay).
fn image_owned_by(who: &Who, name: &str) -> std::path::PathBuf {
    let image = scratch(name).join("rootfs");
    copy_busybox_rootfs(&image);
    if is_root() {
        let ok = Command::new("chown")
            .args(["-R", "-h", &format!("{}:{}", who.uid(), who.gid())])
            .arg(&image)
            .status()
            .expect("chown");
        assert!(ok.success());
    }
    image
}

#[test]
fn writable_tmpfs_writes_succeed_and_vanish() {
    for who in runners("-Urm") {
        let image = image_owned_by(&who, "writable");
        let run = |opt: &str, script: &str| {
            output(
                cairn_as(&who)
                    .arg("run")
                    .arg(opt)
                    .arg(&image)
                    .args(["/bin/sh", "-c", script]),
            )
        };
        let out = run(
            "-w",
            "echo hi > /etc/cairn-written && cat /etc/cairn-written && rm /etc/os-release && echo removed",
        );
        assert_success(&out, "-w");
        assert_eq!(stdout_of(&out), "hi\nremoved\n");
        assert!(!image.join("etc/cairn-written").exists());
        assert!(image.join("etc/os-release").exists());
        let out = run(
            "--writable-tmpfs",
            "test -e /etc/cairn-written; echo $?; cat /etc/os-release",
        );
        assert_success(&out, "second -w run");
        assert!(stdout_of(&out).starts_with("1\n"), "{}", stdout_of(&out));
        assert!(stdout_of(&out).contains("ID=cairn-test"));
        // A bind destination missing from the image is created in the
        // overlay (directories, or an empty file for a file source).
        let src = scratch("writable-bind");
        fs::write(src.join("hello"), "from the host\n").expect("write");
        let _ = Command::new("chmod")
            .args(["-R", "a+rX"])
            .arg(&src)
            .status();
        let dir_spec = format!("{}:/new/dir", src.display());
        let file_spec = format!("{}:/etc/hello", src.join("hello").display());
        let out = output(
            cairn_as(&who)
                .args(["run", "-w", "-b", &dir_spec, "-b", &file_spec])
                .arg(&image)
                .args(["/bin/sh", "-c", "cat /new/dir/hello /etc/hello"]),
        );
        assert_success(&out, "-w with new bind destinations");
        assert_eq!(stdout_of(&out), "from the host\nfrom the host\n");
        assert!(!image.join("new").exists() && !image.join("etc/hello").exists());
        let out = output(
            cairn_as(&who)
                .args(["run", "-b", &dir_spec])
                .arg(&image)
                .arg("true"),
        );
        assert_eq!(out.status.code(), Some(125), "{}", stderr_of(&out));
        assert!(stderr_of(&out).contains("does not exist in the image"));
        // Without -w the same image stays read-only.
        let out = run("--private-tmp", "touch /etc/cairn-written");
        assert!(!out.status.success());
    }
}

/// cairn running `script` in the busybox image with `opts`, once the
/// script has created `ready` (it must then keep running). A job that
/// ends first, or is not ready by `deadline`, fails the test with cairn's
/// stderr.
fn start_job(who: &Who, opts: &[&str], script: &str, ready: &Path, deadline: Instant) -> Child {
    let mut child = cairn_as(who)
        .arg("run")
        .args(opts)
        .arg(busybox_rootfs())
        .args(["/bin/sh", "-c", script])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cairn");
    while !ready.exists() {
        if Instant::now() > deadline || child.try_wait().expect("try_wait").is_some() {
            let _ = child.kill();
            panic!(
                "job never got ready ({:?})",
                child.wait_with_output().map(|o| stderr_of(&o))
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// Start a job that traps `sig`, send `sig` to cairn's pid, and check the
/// job's trap ran (it writes a marker, then exits 0).
fn signal_reaches_job(who: &Who, opts: &[&str], sig: Signal) {
    let dir = scratch("signal");
    let ready = dir.join("ready");
    let marker = dir.join("marker");
    let name = sig.as_str().trim_start_matches("SIG");
    let script = format!(
        "trap 'echo {name} > {m}; exit 0' {name}; echo > {r}; while :; do sleep 0.05; done",
        m = marker.display(),
        r = ready.display()
    );
    // A test run started in the background by a non-interactive shell
    // (`cargo test &`) inherits SIGINT and SIGQUIT ignored, and an ignored
    // signal stays ignored through cairn into the job, whose shell may not
    // trap it (POSIX): the job would never see it. This test is about
    // cairn's forwarding, so it starts from the default disposition.
    cairn::sys::process::signal_default(sig).expect("default disposition");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut child = start_job(who, opts, &script, &ready, deadline);
    kill(
        Pid::from_raw(i32::try_from(child.id()).expect("a pid fits pid_t")),
        sig,
    )
    .expect("kill cairn");
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "{sig} sent to cairn {opts:?} as {} did not end the job",
                who.label()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        fs::read_to_string(&marker).ok().as_deref(),
        Some(format!("{name}\n").as_str()),
        "{sig} with {opts:?} as {}: status {status:?}",
        who.label()
    );
    assert_eq!(status.code(), Some(0), "{status:?} {:?}", status.signal());
}

const SIGNALS: [Signal; 5] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

#[test]
fn signals_sent_to_cairn_reach_the_job() {
    for who in runners("-Urm") {
        for sig in SIGNALS {
            signal_reaches_job(&who, &[], sig);
        }
    }
}

#[test]
fn signals_sent_to_cairn_reach_the_job_through_the_pid_init() {
    for who in runners("-Urmp") {
        for sig in SIGNALS {
            signal_reaches_job(&who, &["--pid"], sig);
        }
    }
}

#[test]
fn an_image_without_mount_points_still_runs() {
    // A minimal image: only /bin. No /dev, /proc, /sys, /tmp or /etc to
    // bind onto; cairn must not need to create anything in it.
    let dir = scratch("bare-image");
    let image = dir.join("rootfs");
    fs::create_dir_all(image.join("bin")).expect("mkdir");
    fs::copy("/bin/busybox", image.join("bin/busybox")).expect("copy");
    std::os::unix::fs::symlink("busybox", image.join("bin/sh")).expect("ln");
    let _ = Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(&image)
        .status();
    for who in runners("-Urm") {
        let out = output(
            cairn_as(&who)
                .arg("run")
                .arg(&image)
                .args(["/bin/sh", "-c", "echo ok"]),
        );
        assert_success(&out, "bare image");
        assert_eq!(stdout_of(&out), "ok\n");
    }
    assert!(!Path::new(&image.join("etc")).exists());
}

/// Live processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    fs::read_dir("/proc")
        .expect("proc")
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let cmdline = fs::read(e.path().join("cmdline")).ok()?;
            (name.bytes().all(|b| b.is_ascii_digit())
                && String::from_utf8_lossy(&cmdline).contains(needle))
            .then_some(name)
        })
        .collect()
}

#[test]
fn killing_cairn_ends_a_job_in_its_pid_namespace() {
    // cairn outside is what a launcher signals: with --pid, a SIGKILL it
    // cannot forward must still not leave the job running unseen.
    for who in runners("-Urmp") {
        let dir = scratch("pid-kill");
        let ready = dir.join("ready");
        let script = format!(
            "echo > {r}; while :; do sleep 0.05; done",
            r = ready.display()
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut child = start_job(&who, &["--pid"], &script, &ready, deadline);
        // As the test user, cairn runs under setpriv: kill what it became.
        let needle = ready.display().to_string();
        let cairn_pid = processes_mentioning(&needle)
            .into_iter()
            .filter_map(|p| p.parse::<i32>().ok())
            .min()
            .expect("cairn's process");
        kill(Pid::from_raw(cairn_pid), Signal::SIGKILL).expect("kill cairn");
        let _ = child.wait();
        assert!(
            wait_until(10, || processes_mentioning(&needle).is_empty()),
            "{}: job still running after cairn was killed: {:?}",
            who.label(),
            processes_mentioning(&needle)
        );
    }
}
