//! `cairn run DIR` end to end, as root and as the ordinary user: namespaces,
//! identity, the read-only image, exit codes, cairn becoming the job, fds,
//! NO_NEW_PRIVS, `--timings`, the environment rules and the security
//! properties (setuid bits, mknod, low ports, signalling host processes).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Output, Stdio};

use common::*;

/// `cairn run [OPTS] ROOT -- sh -c SCRIPT` as `who`.
fn run_sh(who: &Who, opts: &[&str], script: &str) -> Output {
    let mut cmd = cairn_as(who);
    cmd.arg("run")
        .args(opts)
        .arg(busybox_rootfs())
        .args(["--", "/bin/sh", "-c", script]);
    output_within(&mut cmd, 30)
}

#[track_caller]
fn ok_stdout(who: &Who, opts: &[&str], script: &str) -> String {
    let out = run_sh(who, opts, script);
    assert_success(
        &out,
        &format!("cairn run {opts:?} sh -c {script:?} as {}", who.label()),
    );
    stdout_of(&out)
}

#[test]
fn user_and_mount_namespaces_are_new_the_others_are_the_hosts() {
    for who in runners("-Urm") {
        let host = ok_stdout_host(&who);
        let inside = ok_stdout(
            &who,
            &[],
            "for n in user mnt net pid ipc; do readlink /proc/self/ns/$n; done",
        );
        let host: Vec<&str> = host.lines().collect();
        let inside: Vec<&str> = inside.lines().collect();
        assert_eq!(inside.len(), 5, "{inside:?}");
        assert_ne!(inside[0], host[0], "user namespace must be new");
        assert_ne!(inside[1], host[1], "mount namespace must be new");
        assert_eq!(inside[2..], host[2..], "net, pid, ipc must be the host's");
    }
}

/// The namespaces of a host process run as `who`.
fn ok_stdout_host(who: &Who) -> String {
    let out = output(command_as(who, "sh").args([
        "-c",
        "for n in user mnt net pid ipc; do readlink /proc/self/ns/$n; done",
    ]));
    assert_success(&out, "host readlink");
    stdout_of(&out)
}

#[test]
fn id_inside_equals_the_callers() {
    for who in runners("-Urm") {
        let name = match &who {
            Who::Me => nix::unistd::User::from_uid(nix::unistd::geteuid())
                .ok()
                .flatten()
                .map(|u| u.name)
                .expect("own name"),
            Who::User(u) => u.name.clone(),
        };
        let out = ok_stdout(
            &who,
            &[],
            "id -u; id -g; id -un; grep \"^$(id -un):\" /etc/passwd",
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], who.uid().to_string(), "{out}");
        assert_eq!(lines[1], who.gid().to_string(), "{out}");
        assert_eq!(lines[2], name, "{out}");
        assert!(
            lines[3].starts_with(&format!("{name}:x:{}:", who.uid())),
            "{out}"
        );
    }
}

#[test]
fn uid_and_gid_options_map_the_caller() {
    for who in runners("-Urm") {
        let out = ok_stdout(
            &who,
            &["--uid", "0", "--gid", "0"],
            "id -u; id -g; echo $HOME",
        );
        assert_eq!(out, "0\n0\n/root\n", "as {}", who.label());
        let out = ok_stdout(&who, &["--uid", "4242", "--gid", "4343"], "id -u; id -g");
        assert_eq!(out, "4242\n4343\n", "as {}", who.label());
    }
}

#[test]
fn passwd_and_group_are_generated_without_touching_the_image() {
    let image_passwd = std::fs::read(busybox_rootfs().join("etc/passwd")).expect("passwd");
    for who in runners("-Urm") {
        let out = ok_stdout(&who, &[], "cat /etc/passwd; echo ---; cat /etc/group");
        let (passwd, group) = out.split_once("---\n").expect("separator");
        assert!(passwd.starts_with("root:x:0:0:"), "{passwd}");
        assert!(passwd.contains("nobody:x:65534:"), "{passwd}");
        assert!(
            passwd.contains(&format!(":x:{}:{}:", who.uid(), who.gid())),
            "{passwd}"
        );
        assert!(group.contains(&format!(":x:{}:", who.gid())), "{group}");
        assert!(group.contains("root:x:0:"), "{group}");
    }
    assert_eq!(
        std::fs::read(busybox_rootfs().join("etc/passwd")).expect("passwd"),
        image_passwd,
        "the image's passwd must be unchanged"
    );
}

#[test]
fn os_release_is_the_images() {
    for who in runners("-Urm") {
        let out = ok_stdout(&who, &[], "cat /etc/os-release");
        assert!(out.contains("ID=cairn-test"), "{out}");
    }
}

#[test]
fn hosts_and_resolv_conf_come_from_the_host() {
    for who in runners("-Urm") {
        let out = ok_stdout(&who, &[], "cat /etc/hosts");
        let host = std::fs::read_to_string("/etc/hosts").expect("host /etc/hosts");
        assert_eq!(out, host);
        // Read-only even for root: the host's file must not change.
        let out = run_sh(&who, &[], "echo >> /etc/hosts");
        assert!(!out.status.success(), "as {}", who.label());
        assert_eq!(std::fs::read_to_string("/etc/hosts").expect("hosts"), host);
    }
}

#[test]
fn the_image_is_read_only_nosuid_nodev() {
    for who in runners("-Urm") {
        let out = run_sh(&who, &[], "touch /etc/cairn-write-test");
        assert!(!out.status.success(), "write into the image must fail");
        assert!(stderr_of(&out).contains("Read-only"), "{}", stderr_of(&out));
        assert!(!busybox_rootfs().join("etc/cairn-write-test").exists());
        let out = ok_stdout(&who, &[], r#"awk '$5 == "/"' /proc/self/mountinfo"#);
        let opts = out.split_whitespace().nth(5).expect("mount options");
        for flag in ["ro", "nosuid", "nodev"] {
            assert!(
                opts.split(',').any(|o| o == flag),
                "{flag} missing in {out}"
            );
        }
    }
}

#[test]
fn root_is_pivoted_and_the_host_tree_is_gone() {
    for who in runners("-Urm") {
        let out = ok_stdout(
            &who,
            &[],
            "ls /; echo ---; grep -c oldroot /proc/self/mountinfo || true",
        );
        let (ls, count) = out.split_once("---\n").expect("separator");
        assert!(!ls.contains("oldroot") && !ls.contains("newroot"), "{ls}");
        assert_eq!(count.trim(), "0", "{out}");
    }
}

#[test]
fn cd_sets_the_working_directory() {
    for who in runners("-Urm") {
        assert_eq!(ok_stdout(&who, &[], "pwd"), "/\n");
        assert_eq!(ok_stdout(&who, &["--cd", "/etc"], "pwd"), "/etc\n");
        let out = run_sh(&who, &["--cd", "/no/such/dir"], "pwd");
        assert_eq!(out.status.code(), Some(125), "{}", stderr_of(&out));
        assert!(
            stderr_of(&out).contains("/no/such/dir"),
            "{}",
            stderr_of(&out)
        );
    }
}

#[test]
fn exit_status_passes_through() {
    for who in runners("-Urm") {
        for code in [0, 1, 7, 124] {
            let out = run_sh(&who, &[], &format!("exit {code}"));
            assert_eq!(out.status.code(), Some(code), "as {}", who.label());
        }
    }
}

#[test]
fn a_job_killed_by_a_signal_ends_cairn_by_that_signal() {
    for who in runners("-Urm") {
        // cairn is the job (no process in between), so the job's death by
        // SIGTERM is cairn's: a shell reports it as 128+15.
        let out = run_sh(&who, &[], "kill -TERM $$");
        assert_eq!(out.status.signal(), Some(15), "{:?}", out.status);
        let shell = output(cairn_as(&who).arg("run").arg(busybox_rootfs()).args([
            "/bin/sh",
            "-c",
            "kill -USR1 $$",
        ]));
        assert_eq!(shell.status.signal(), Some(10));
        // Through a shell on the host, the conventional 128+N.
        let out = output(command_as(&who, "sh").args([
            "-c",
            "\"$0\" run \"$1\" /bin/sh -c 'kill -TERM $$'; echo $?",
            &cairn_bin().to_string_lossy(),
            &busybox_rootfs().to_string_lossy(),
        ]));
        assert_eq!(stdout_of(&out).trim(), "143");
    }
}

#[test]
fn command_not_found_is_127_and_not_executable_is_126() {
    for who in runners("-Urm") {
        let out = output(
            cairn_as(&who)
                .arg("run")
                .arg(busybox_rootfs())
                .arg("no-such-cmd"),
        );
        assert_eq!(out.status.code(), Some(127), "{}", stderr_of(&out));
        assert!(
            stderr_of(&out).contains("no-such-cmd"),
            "{}",
            stderr_of(&out)
        );
        let out = output(
            cairn_as(&who)
                .arg("run")
                .arg(busybox_rootfs())
                .arg("/bin/nope"),
        );
        assert_eq!(out.status.code(), Some(127), "{}", stderr_of(&out));
        let out = output(
            cairn_as(&who)
                .arg("run")
                .arg(busybox_rootfs())
                .arg("/etc/os-release"),
        );
        assert_eq!(out.status.code(), Some(126), "{}", stderr_of(&out));
        assert!(
            stderr_of(&out).contains("/etc/os-release"),
            "{}",
            stderr_of(&out)
        );
    }
}

#[test]
fn cairn_errors_are_125_and_name_the_path() {
    let dir = scratch("run-errors");
    let sqfs = dir.join("image.bin");
    std::fs::write(&sqfs, b"hsqs\x00\x00\x00\x00 not really").expect("write");
    std::fs::set_permissions(&sqfs, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let missing = dir.join("missing-image");
    for who in callers() {
        let out = output(cairn_as(&who).arg("run").arg(&missing).arg("true"));
        assert_eq!(out.status.code(), Some(125));
        assert!(
            stderr_of(&out).contains("missing-image"),
            "{}",
            stderr_of(&out)
        );
        let out = output(cairn_as(&who).arg("run").arg(&sqfs).arg("true"));
        assert_eq!(out.status.code(), Some(125));
        assert!(
            stderr_of(&out).contains("image.bin: not a usable squashfs image"),
            "{}",
            stderr_of(&out)
        );
        let out = output(cairn_as(&who).args(["run", "--no-such-option"]));
        assert_eq!(out.status.code(), Some(125));
        let out = output(
            cairn_as(&who)
                .args(["run", "--net", "bogus"])
                .arg(busybox_rootfs()),
        );
        assert_eq!(out.status.code(), Some(125));
    }
}

#[test]
fn cairn_becomes_the_job() {
    for who in runners("-Urm") {
        let child = cairn_as(&who)
            .arg("run")
            .arg(busybox_rootfs())
            .args(["--", "/bin/sh", "-c", "echo $$"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn");
        let pid = child.id();
        let out = child.wait_with_output().expect("wait");
        assert_success(&out, "echo $$");
        assert_eq!(
            stdout_of(&out).trim(),
            pid.to_string(),
            "as {}",
            who.label()
        );
    }
}

#[test]
fn the_job_inherits_only_fds_0_1_2() {
    for who in runners("-Urm") {
        // Leak fd 7 into cairn on purpose: it must not reach the job.
        let out = output(command_as(&who, "sh").args([
            "-c",
            "exec 7</dev/null; exec \"$0\" run \"$1\" ls /proc/self/fd",
            &cairn_bin().to_string_lossy(),
            &busybox_rootfs().to_string_lossy(),
        ]));
        assert_success(&out, "ls /proc/self/fd");
        let fds: Vec<&str> = stdout_of(&out)
            .split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
            .leak()
            .iter()
            .map(String::as_str)
            .collect();
        // 0-2 plus the directory fd ls itself opens.
        assert_eq!(fds, ["0", "1", "2", "3"], "as {}", who.label());
    }
}

#[test]
fn the_job_gets_the_callers_signal_dispositions() {
    for who in runners("-Urm") {
        // The same command on the host: cairn (a Rust program ignoring
        // SIGPIPE internally) must hand the job what its caller had.
        let host =
            output(command_as(&who, "grep").args(["-E", "^Sig(Ign|Blk)", "/proc/self/status"]));
        for opts in [&[][..], &["--pid"][..]] {
            let out = output(
                cairn_as(&who)
                    .arg("run")
                    .args(opts)
                    .arg(busybox_rootfs())
                    .args(["grep", "-E", "^Sig(Ign|Blk)", "/proc/self/status"]),
            );
            assert_success(&out, "grep SigIgn");
            assert_eq!(
                stdout_of(&out),
                stdout_of(&host),
                "{opts:?} as {}",
                who.label()
            );
        }
    }
}

#[test]
fn no_new_privs_is_set() {
    for who in runners("-Urm") {
        let out = ok_stdout(&who, &[], "grep NoNewPrivs /proc/self/status");
        assert_eq!(out.split_whitespace().nth(1), Some("1"), "{out}");
    }
}

#[test]
fn a_setuid_root_binary_in_the_image_gives_no_root() {
    let Some(user) = ordinary_user() else { return };
    if !namespaces_work(&user, "-Urm") {
        return;
    }
    let suid = busybox_rootfs().join("usr/local/bin/suid-busybox");
    let mode = std::fs::metadata(&suid)
        .expect("suid busybox")
        .permissions()
        .mode();
    assert!(mode & 0o4000 != 0, "fixture must be setuid");
    // busybox picks the applet from argv[0]: call the setuid copy as "id"
    // through a symlink in the (host-shared) /tmp.
    let dir = scratch("suid-link");
    let link = dir.join("id");
    std::os::unix::fs::symlink("/usr/local/bin/suid-busybox", &link).expect("symlink");
    let out = ok_stdout(&user, &[], &format!("{} -u", link.display()));
    assert_eq!(out.trim(), user.uid().to_string());
}

#[test]
fn mknod_fails() {
    for who in runners("-Urm") {
        let out = run_sh(&who, &["--private-tmp"], "mknod /tmp/null-dev c 1 3");
        assert!(!out.status.success(), "mknod must fail as {}", who.label());
        assert!(
            stderr_of(&out).contains("not permitted"),
            "{}",
            stderr_of(&out)
        );
    }
}

#[test]
fn binding_a_port_below_1024_fails() {
    let unprivileged_start: u32 =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1024);
    if unprivileged_start <= 80 {
        eprintln!("SKIP: this host lets anyone bind port 80");
        return;
    }
    let Some(user) = ordinary_user() else { return };
    if !namespaces_work(&user, "-Urm") {
        return;
    }
    let out = run_sh(&user, &[], "timeout 5 nc -l -p 80");
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("Permission denied"),
        "{}",
        stderr_of(&out)
    );
}

#[test]
fn signalling_a_root_owned_host_process_fails() {
    let Some(user) = ordinary_user() else { return };
    if !namespaces_work(&user, "-Urm") {
        return;
    }
    let owner = std::fs::metadata("/proc/1").map(|m| std::os::unix::fs::MetadataExt::uid(&m));
    assert_eq!(owner.ok(), Some(0), "host PID 1 should be root's");
    let out = run_sh(&user, &[], "kill -0 1");
    assert!(!out.status.success());
    assert!(
        stderr_of(&out).contains("not permitted"),
        "{}",
        stderr_of(&out)
    );
}

#[test]
fn a_setuid_cairn_binary_is_refused() {
    if !is_root() {
        eprintln!("SKIP: making a setuid-root copy needs root");
        return;
    }
    let dir = scratch("suid-cairn");
    let bin = dir.join("cairn");
    copy_executable(cairn_bin(), &bin);
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o4755)).expect("chmod");
    for who in callers() {
        let out = output(
            command_as(&who, &bin)
                .arg("run")
                .arg(busybox_rootfs())
                .arg("true"),
        );
        assert_eq!(out.status.code(), Some(125), "{}", stderr_of(&out));
        assert!(stderr_of(&out).contains("setuid"), "{}", stderr_of(&out));
    }
}

#[test]
fn timings_prints_json_on_stderr() {
    for who in runners("-Urm") {
        let out = run_sh(&who, &["--timings"], "true");
        assert_success(&out, "--timings");
        let line = stderr_of(&out)
            .lines()
            .find(|l| l.starts_with('{'))
            .map(str::to_owned)
            .expect("a JSON line");
        let v: serde_json::Value = serde_json::from_str(&line).expect("valid JSON");
        for phase in ["prepare", "namespaces", "mounts", "total"] {
            assert!(v[phase].is_u64(), "{phase} missing in {line}");
        }
    }
}

#[test]
fn command_with_and_without_double_dash() {
    for who in runners("-Urm") {
        let out = output(
            cairn_as(&who)
                .arg("run")
                .arg(busybox_rootfs())
                .args(["echo", "-n", "a", "--env", "b"]),
        );
        assert_success(&out, "no --");
        assert_eq!(stdout_of(&out), "a --env b");
        let out = output(
            cairn_as(&who)
                .arg("run")
                .arg(busybox_rootfs())
                .args(["--", "echo", "x"]),
        );
        assert_eq!(stdout_of(&out), "x\n");
    }
}

/// `env` inside as a sorted list of lines.
fn env_inside(who: &Who, opts: &[&str], host_env: &[(&str, &str)]) -> Vec<String> {
    let mut cmd = cairn_as(who);
    for (k, v) in host_env {
        cmd.env(k, v);
    }
    cmd.arg("run").args(opts).arg(busybox_rootfs()).arg("env");
    let out = output_within(&mut cmd, 30);
    assert_success(&out, "env");
    let mut lines: Vec<String> = stdout_of(&out).lines().map(str::to_owned).collect();
    lines.sort();
    lines
}

fn has(lines: &[String], entry: &str) -> bool {
    lines.iter().any(|l| l == entry)
}

#[test]
fn environment_rules_apply_in_command_line_order() {
    let dir = scratch("env-file");
    let file = dir.join("vars.env");
    std::fs::write(&file, "# comment\nFROM_FILE=1\nORDER=file\n").expect("env file");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let file = file.to_string_lossy().into_owned();
    for who in runners("-Urm") {
        let host = [("SLURM_JOB_ID", "42"), ("OMPI_COMM_WORLD_RANK", "3")];
        let env = env_inside(&who, &[], &host);
        assert!(
            has(&env, "SLURM_JOB_ID=42") && has(&env, "OMPI_COMM_WORLD_RANK=3"),
            "{env:?}"
        );
        let home = match &who {
            Who::Me => "/root".to_string(),
            Who::User(u) => u.home.to_string_lossy().into_owned(),
        };
        assert!(has(&env, &format!("HOME={home}")), "{env:?}");

        let env = env_inside(
            &who,
            &[
                "--env",
                "ORDER=first",
                "--env-file",
                &file,
                "--unset-env",
                "SLURM_*",
                "--env",
                "SLURM_NEW=1",
            ],
            &host,
        );
        assert!(
            has(&env, "ORDER=file") && has(&env, "FROM_FILE=1"),
            "{env:?}"
        );
        assert!(
            !env.iter().any(|l| l.starts_with("SLURM_JOB_ID=")),
            "{env:?}"
        );
        assert!(has(&env, "SLURM_NEW=1"), "{env:?}");

        let env = env_inside(&who, &["--env-file", &file, "--env", "ORDER=last"], &host);
        assert!(has(&env, "ORDER=last"), "{env:?}");

        let env = env_inside(
            &who,
            &["--env", "BEFORE=1", "--clean-env", "--env", "AFTER=1"],
            &host,
        );
        assert!(has(&env, "AFTER=1"), "{env:?}");
        assert!(
            !env.iter()
                .any(|l| l.starts_with("BEFORE=") || l.starts_with("SLURM_")),
            "{env:?}"
        );

        let out = output(
            cairn_as(&who)
                .args(["run", "--env", "NOEQUALS"])
                .arg(busybox_rootfs())
                .arg("true"),
        );
        assert_eq!(out.status.code(), Some(125));
        assert!(stderr_of(&out).contains("NOEQUALS"), "{}", stderr_of(&out));
    }
}

#[test]
fn tmp_is_the_hosts_unless_private() {
    let dir = scratch("tmp-visible");
    let marker = dir.join("marker");
    std::fs::write(&marker, "seen").expect("marker");
    std::fs::set_permissions(&marker, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let marker = marker.to_string_lossy().into_owned();
    assert!(
        Path::new(&marker).starts_with("/tmp"),
        "shared dir must be under /tmp"
    );
    for who in runners("-Urm") {
        let mut cmd = cairn_as(&who);
        cmd.env_remove("TMPDIR");
        cmd.arg("run").arg(busybox_rootfs()).args(["cat", &marker]);
        let out = output_within(&mut cmd, 30);
        assert_eq!(stdout_of(&out), "seen", "{}", stderr_of(&out));
        // $TMPDIR is what /tmp shows, and is not passed on as a host path.
        let mut cmd = cairn_as(&who);
        cmd.env("TMPDIR", &dir);
        cmd.arg("run").arg(busybox_rootfs()).args([
            "/bin/sh",
            "-c",
            "cat /tmp/marker; echo \" ${TMPDIR:-unset}\"",
        ]);
        let out = output_within(&mut cmd, 30);
        assert_eq!(stdout_of(&out), "seen unset\n", "{}", stderr_of(&out));
        let out = run_sh(
            &who,
            &["--private-tmp"],
            &format!("test ! -e {marker} && ls -A /tmp | wc -l"),
        );
        assert_eq!(stdout_of(&out).trim(), "0", "{}", stderr_of(&out));
    }
}
