//! Warm runs (`cairn run IMAGE.sqfs` leaves its mount warm for a linger):
//! two runs in a row share one server and the second says "warm" in
//! `--timings`; per-run binds, environment, `-w`, `/tmp` and working
//! directory do not leak from one run into the next; another user or
//! another id map never enters the mount; an image replaced or rewritten in
//! place is a new image; after the linger no process, socket, mount or
//! loop device remains; `cairn stop` ends an idle warm mount at once and
//! refuses one with jobs unless forced; a killed idle server leaves the
//! next run working; a linger of 0 is off; `--join` and concurrent runs
//! share one server. As root (FUSE and the kernel mount) and as the
//! ordinary user.
//!
//! Every other test file runs with warm runs off (`CAIRN_WARM_LINGER=0`,
//! set by `common::command_as`); this one sets its own linger on each run.
//! Each test uses an image file of its own in a scratch directory of its
//! own, so parallel tests never share a warm mount, and stops its warm
//! mounts at the end (`cairn stop --force IMAGE`, never `--all`: parallel
//! tests of the same user would be hit).

mod common;

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::*;

/// The linger of tests that need the mount to stay between two runs: long
/// enough for a loaded machine, and each test stops its mounts at the end.
const LINGER: &str = "20s";

/// Run `body` for each caller and mount mode, on a private image of
/// `name` that is stopped at the end (`what` names the case in messages).
fn each_case(name: &str, mut body: impl FnMut(&Who, &'static str, &str, &Path)) {
    for who in fuse_runners() {
        for mode in mount_modes(&who) {
            let what = format!("as {} via {mode}", who.label());
            let img = private_image(name);
            let _stop = StopOnDrop::new(&who, &img);
            body(&who, mode, &what, &img);
        }
    }
}

/// A private copy of the busybox image in a scratch directory of its own.
fn private_image(name: &str) -> PathBuf {
    let img = scratch(name).join("img.sqfs");
    fs::copy(busybox_sqfs(), &img).expect("copy image");
    fs::set_permissions(&img, fs::Permissions::from_mode(0o644)).expect("chmod image");
    img
}

/// A world-writable host directory for binds and gates.
fn host_dir(name: &str) -> PathBuf {
    let dir = scratch(name);
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).expect("chmod");
    dir
}

/// Stops the warm mounts of an image as a user when dropped (at the end of
/// the test, or when it fails), so that nothing lingers for long.
struct StopOnDrop {
    who: Who,
    img: PathBuf,
}

impl StopOnDrop {
    fn new(who: &Who, img: &Path) -> StopOnDrop {
        StopOnDrop {
            who: who.clone(),
            img: img.to_path_buf(),
        }
    }
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = cairn_as(&self.who)
            .args(["stop", "--force"])
            .arg(&self.img)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// `cairn run --timings --mount MODE [OPTS] IMG -- sh -c SCRIPT` as `who`
/// with `CAIRN_WARM_LINGER=linger`, not yet started.
fn run_cmd(
    who: &Who,
    mode: &str,
    linger: &str,
    opts: &[&str],
    img: &Path,
    script: &str,
) -> std::process::Command {
    let mut cmd = cairn_as(who);
    cmd.args(["run", "--timings", "--mount", mode])
        .args(opts)
        .arg(img)
        .args(["--", "/bin/sh", "-c", script])
        .env(WARM_LINGER_VAR, linger);
    cmd
}

/// Run (see [`run_cmd`]) and wait for it, at most a minute.
fn run(who: &Who, mode: &str, linger: &str, opts: &[&str], img: &Path, script: &str) -> Output {
    output_within(&mut run_cmd(who, mode, linger, opts, img, script), 60)
}

/// Start a run in the background with piped output.
fn spawn_run(
    who: &Who,
    mode: &str,
    linger: &str,
    opts: &[&str],
    img: &Path,
    script: &str,
) -> Child {
    run_cmd(who, mode, linger, opts, img, script)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cairn run")
}

/// Wait for a background run, at most `secs`.
fn finish_within(mut child: Child, secs: u64) -> Output {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("wait");
            panic!(
                "a background run did not finish within {secs}s\nstdout:\n{}\nstderr:\n{}",
                stdout_of(&out),
                stderr_of(&out)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("wait")
}

/// "warm" or "cold": the `run` key of the `--timings` JSON on stderr.
fn kind_of(out: &Output) -> Option<String> {
    stderr_of(out)
        .lines()
        .filter(|l| l.trim_start().starts_with('{'))
        .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
        .find_map(|v| {
            v.get("run")
                .map(|k| k.as_str().unwrap_or("not a string").to_owned())
        })
}

/// [`kind_of`], which must be there.
#[track_caller]
fn kind(out: &Output) -> String {
    kind_of(out).unwrap_or_else(|| {
        panic!(
            "no --timings JSON with a \"run\" key on stderr:\n{}",
            stderr_of(out)
        )
    })
}

/// Assert success and the kind of run; the job's stdout.
#[track_caller]
fn expect_run(out: &Output, want: &str, what: &str) -> String {
    assert_success(out, what);
    assert_eq!(
        kind(out),
        want,
        "{what}: expected a {want} run\nstderr:\n{}",
        stderr_of(out)
    );
    stdout_of(out)
}

/// `cairn ps --json` as `who`: the caller's warm mounts.
#[track_caller]
fn ps(who: &Who) -> Vec<Value> {
    let out = output_within(cairn_as(who).args(["ps", "--json"]), 30);
    assert_success(&out, &format!("cairn ps --json as {}", who.label()));
    let v: Value = serde_json::from_str(stdout_of(&out).trim())
        .unwrap_or_else(|e| panic!("cairn ps --json: {e}\n{}", stdout_of(&out)));
    v.as_array()
        .unwrap_or_else(|| panic!("cairn ps --json is not an array: {v}"))
        .clone()
}

/// The warm mounts of `img` that `who`'s `cairn ps --json` lists.
#[track_caller]
fn ps_of(who: &Who, img: &Path) -> Vec<Value> {
    let canonical = fs::canonicalize(img).expect("canonicalize");
    ps(who)
        .into_iter()
        .filter(|m| m["image"].as_str() == Some(&*canonical.to_string_lossy()))
        .collect()
}

/// The pid of a `cairn ps` entry, as a string like [`processes_mapping`]'s.
fn pid_of(entry: &Value) -> String {
    entry["pid"]
        .as_u64()
        .unwrap_or_else(|| panic!("no pid in {entry}"))
        .to_string()
}

/// The helpers keeping `img` warm: the FUSE servers (processes named
/// cairn-fuse that map it) or, for the kernel mount (whose holder maps
/// nothing), the pids `cairn ps` gives for it.
#[track_caller]
fn servers(who: &Who, img: &Path, mode: &str) -> Vec<String> {
    if mode == "kernel" {
        ps_of(who, img).iter().map(pid_of).collect()
    } else {
        processes_mapping(img, Some("cairn-fuse"))
    }
}

fn alive(pid: &str) -> bool {
    // A zombie whose threads have all exited (its fds are closed) is gone
    // for our purposes: its parent, init, may take a moment to reap it.
    let zombie = fs::read_to_string(format!("/proc/{pid}/stat")).map(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'))
    });
    match zombie {
        Err(_) => false,
        Ok(false) => true,
        Ok(true) => fs::read_dir(format!("/proc/{pid}/task")).is_ok_and(|d| d.count() > 1),
    }
}

/// The namespaces `pid` holds open as fds (`mnt:[...]`, `user:[...]`).
fn namespaces_held_by(pid: &str) -> Vec<String> {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| fs::read_link(e.path()).ok())
                .map(|l| l.to_string_lossy().into_owned())
                .filter(|l| l.starts_with("mnt:[") || l.starts_with("user:["))
                .collect()
        })
        .unwrap_or_default()
}

fn comm_of(pid: &str) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

fn uid_of(pid: &str) -> Option<u32> {
    fs::metadata(format!("/proc/{pid}")).ok().map(|m| m.uid())
}

/// The abstract socket names (`@cairn-warm/...`) bound by `pid`'s sockets.
fn warm_sockets_of(pid: &str) -> Vec<String> {
    let inodes: HashSet<String> = fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| fs::read_link(e.path()).ok())
                .filter_map(|l| {
                    let l = l.to_string_lossy().into_owned();
                    l.strip_prefix("socket:[")
                        .and_then(|r| r.strip_suffix(']'))
                        .map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default();
    // Listening sockets only: a connection the helper accepted (a `cairn
    // ps` that just got its answer) shows the same name until it closes.
    unix_sockets()
        .into_iter()
        .filter(|(inode, path, listening)| {
            *listening && inodes.contains(inode) && path.starts_with("@cairn-warm/")
        })
        .map(|(_, path, _)| path)
        .collect()
}

/// As /proc/net/unix lists it (`@`...): the anchor's name of the warm
/// socket listed as `listed`.
fn listed_anchor_of(listed: &str) -> String {
    format!(
        "@{}",
        cairn::ns::warm::anchor_name(listed.trim_start_matches('@'))
    )
}

/// Does something listen on the name /proc/net/unix lists as `listed`?
fn listening_on(listed: &str) -> bool {
    unix_sockets()
        .iter()
        .any(|(_, path, listening)| *listening && path == listed)
}

/// (inode, path) of every named unix socket in /proc/net/unix.
/// The named unix sockets: inode, name, and whether it listens (the
/// __SO_ACCEPTCON flag).
fn unix_sockets() -> Vec<(String, String, bool)> {
    fs::read_to_string("/proc/net/unix")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let listening = u32::from_str_radix(f.get(3)?, 16).is_ok_and(|v| v & 0x1_0000 != 0);
            Some((f.get(6)?.to_string(), f.get(7)?.to_string(), listening))
        })
        .collect()
}

fn loop_devices_of(img: &Path) -> String {
    stdout_of(&output(
        std::process::Command::new("losetup").arg("-j").arg(img),
    ))
    .trim()
    .to_owned()
}

/// Everything of `img` that a warm mount could leave, as text ("" when
/// nothing): processes mapping it, the given pids alive, the given socket
/// names bound, loop devices on it, and mounts of it or of those loop
/// devices in this process's mount table.
fn leftovers(img: &Path, pids: &[String], names: &[String], loops: &[String]) -> String {
    let mut left = Vec::new();
    let mapping = processes_mapping(img, None);
    if !mapping.is_empty() {
        left.push(format!("processes mapping the image: {mapping:?}"));
    }
    for pid in pids.iter().filter(|p| alive(p)) {
        left.push(format!("helper {pid} ({}) alive", comm_of(pid)));
    }
    let bound: HashSet<String> = unix_sockets().into_iter().map(|(_, p, _)| p).collect();
    for name in names.iter().filter(|n| bound.contains(*n)) {
        left.push(format!("socket {name} bound"));
    }
    let loops_now = loop_devices_of(img);
    if !loops_now.is_empty() {
        left.push(format!("loop devices: {loops_now}"));
    }
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let img_text = img.display().to_string();
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if line.contains(&img_text) || loops.iter().any(|d| fields.iter().any(|f| f == d)) {
            left.push(format!("mount: {line}"));
        }
    }
    left.join("\n")
}

/// The loop device paths in `losetup -j` output (`/dev/loop3: []: (...)`).
fn loop_paths(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.split(':').next())
        .map(str::to_owned)
        .collect()
}

/// `cairn stop [--force] IMG` as `who`.
fn stop(who: &Who, img: &Path, force: bool) -> Output {
    let mut cmd = cairn_as(who);
    cmd.arg("stop");
    if force {
        cmd.arg("--force");
    }
    output_within(cmd.arg(img), 30)
}

/// The script of a job that waits (at most a minute) until the file `go`
/// exists in the bind at /mnt, after saying "started" in `/mnt/started.PID`.
const GATED: &str = "touch /mnt/started.$$; i=0; while [ ! -e /mnt/go ]; do sleep 0.05; \
    i=$((i+1)); [ $i -gt 1200 ] && exit 9; done; cat /etc/os-release";

/// A job held at a gate (a host directory bound at /mnt) until
/// [`open_gate`], once it has started; the job and its gate.
fn start_gated_job(
    who: &Who,
    mode: &str,
    linger: &str,
    img: &Path,
    gate_name: &str,
    what: &str,
) -> (Child, PathBuf) {
    let gate = host_dir(gate_name);
    let bind = format!("{}:/mnt", gate.display());
    let job = spawn_run(who, mode, linger, &["-b", &bind], img, GATED);
    assert!(
        wait_until(30, || started(&gate) == 1),
        "{what}: the job started"
    );
    (job, gate)
}

fn started(gate: &Path) -> usize {
    fs::read_dir(gate)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("started."))
                .count()
        })
        .unwrap_or(0)
}

fn open_gate(gate: &Path) {
    fs::write(gate.join("go"), b"").expect("open the gate");
}

/// Wait until `who`'s `cairn ps` shows `jobs` jobs on `img`'s one warm
/// mount; that entry.
#[track_caller]
fn wait_for_jobs(who: &Who, img: &Path, jobs: u64) -> Value {
    let mut last = Vec::new();
    let ok = wait_until(30, || {
        last = ps_of(who, img);
        last.len() == 1 && last[0]["jobs"].as_u64() == Some(jobs)
    });
    assert!(
        ok,
        "cairn ps as {} never showed one warm mount of {} with {jobs} jobs: {last:?}",
        who.label(),
        img.display()
    );
    last.remove(0)
}

#[test]
fn two_consecutive_runs_share_one_server_and_the_second_is_warm() {
    each_case("warm-two", |who, mode, what, img| {
        let script = "cat /etc/os-release; readlink /proc/self/ns/mnt >&2";
        let first = run(who, mode, LINGER, &[], img, script);
        let text = expect_run(&first, "cold", &format!("first run {what}"));
        assert!(text.contains("cairn test image"), "{what}: {text}");
        let before = servers(who, img, mode);
        assert_eq!(before.len(), 1, "{what}: one warm server: {before:?}");
        let pid = &before[0];
        assert_eq!(comm_of(pid), "cairn-fuse", "{what}: the helper {pid}");
        if let Who::User(u) = &who {
            assert_eq!(uid_of(pid), Some(u.uid), "{what}: the helper's owner");
        }
        // cairn ps agrees, and the mount is idle.
        let listed = ps_of(who, img);
        assert_eq!(listed.len(), 1, "{what}: {listed:?}");
        let entry = &listed[0];
        assert_eq!(&pid_of(entry), pid, "{what}: {entry}");
        assert_eq!(entry["jobs"].as_u64(), Some(0), "{what}: {entry}");
        assert!(entry["idle_ms"].is_u64(), "{what}: {entry}");
        assert_eq!(entry["linger_ms"].as_u64(), Some(20_000), "{what}: {entry}");
        assert_eq!(entry["mount"].as_str(), Some(mode), "{what}: {entry}");

        let second = run(who, mode, LINGER, &[], img, script);
        let text = expect_run(&second, "warm", &format!("second run {what}"));
        assert!(text.contains("cairn test image"), "{what}: {text}");
        let after = servers(who, img, mode);
        assert_eq!(after, before, "{what}: the same single server");
        assert!(alive(pid), "{what}: the server {pid} is gone");
        // Each run has a mount namespace of its own, not the base the
        // helper holds. (Two runs one after the other cannot be told
        // apart by namespace: the first one's is gone, and the kernel
        // may give its inode number to the next.)
        let ns = |out: &Output| {
            stderr_of(out)
                .lines()
                .find(|l| l.starts_with("mnt:["))
                .map(str::to_owned)
                .unwrap_or_else(|| panic!("no mount namespace in {}", stderr_of(out)))
        };
        let held = namespaces_held_by(pid);
        assert!(
            held.iter().any(|n| n.starts_with("mnt:[")),
            "{what}: the helper holds no mount namespace: {held:?}"
        );
        assert!(
            !held.contains(&ns(&second)),
            "{what}: the warm run ran in the helper's namespace {held:?}"
        );
        // A third run too, and still one server.
        let third = run(who, mode, LINGER, &[], img, "true");
        expect_run(&third, "warm", &format!("third run {what}"));
        assert_eq!(servers(who, img, mode), before, "{what}");
        if mode == "kernel" {
            assert_eq!(
                loop_paths(&loop_devices_of(img)).len(),
                1,
                "{what}: one loop device: {}",
                loop_devices_of(img)
            );
        }
    });
}

/// How a warm run entered (the `entered` key of `--timings`): "anchor" or
/// "helper".
#[track_caller]
fn entered(out: &Output) -> String {
    stderr_of(out)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
        .find_map(|v| v.get("entered").and_then(|e| e.as_str()).map(str::to_owned))
        .unwrap_or_else(|| panic!("no \"entered\" in --timings:\n{}", stderr_of(out)))
}

/// Does this kernel give a connection's peer as a pidfd (SO_PEERPIDFD,
/// Linux 6.5), which the anchor needs?
fn kernel_has_peer_pidfd() -> bool {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (6, 5)
}

/// The anchors of `who`'s warm mounts: (pid, parent pid) of each process
/// named cairn-anchor of that uid.
fn anchors_of(who: &Who) -> Vec<(String, String)> {
    fs::read_dir("/proc")
        .expect("proc")
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_string_lossy().into_owned();
            let stat = fs::read_to_string(e.path().join("stat")).ok()?;
            // pid (comm) state ppid ...
            let (comm, rest) = stat.split_once(" (")?.1.rsplit_once(") ")?;
            let ppid = rest.split_whitespace().nth(1)?.to_owned();
            (comm == "cairn-anchor" && uid_of(&pid) == Some(who.uid())).then_some((pid, ppid))
        })
        .collect()
}

/// A FUSE mount's helper starts an anchor: a warm run enters through it
/// (one setns, no answer awaited) and is still counted as the mount's job
/// (it tells the helper); with the anchor gone (killed) runs ask the
/// helper and stay warm. A kernel mount has no anchor: its runs ask.
#[test]
fn a_warm_run_enters_through_the_anchor_or_else_asks_the_helper() {
    each_case("warm-anchor", |who, mode, what, img| {
        let first = run(who, mode, LINGER, &[], img, "true");
        expect_run(&first, "cold", &format!("first run {what}"));
        let helper = pid_of(&ps_of(who, img)[0]);
        let with_anchor = mode == "fuse" && kernel_has_peer_pidfd();
        // The helper's children named cairn-anchor. (Between its exec and
        // its renaming the anchor is named "exe": a loaded machine may
        // look in that moment, so wait for it.)
        let helpers_anchors = || -> Vec<(String, String)> {
            anchors_of(who)
                .into_iter()
                .filter(|(_, ppid)| *ppid == helper)
                .collect()
        };
        if with_anchor {
            wait_until(10, || helpers_anchors().len() == 1);
        }
        let anchors = helpers_anchors();
        if mode == "kernel" {
            assert!(anchors.is_empty(), "{what}: an anchor: {anchors:?}");
        } else if with_anchor {
            assert_eq!(anchors.len(), 1, "{what}: the helper's anchor: {anchors:?}");
            // Listening on the helper's name with the anchor's prefix.
            let helper_names = warm_sockets_of(&helper);
            assert_eq!(helper_names.len(), 1, "{what}: {helper_names:?}");
            let name = listed_anchor_of(&helper_names[0]);
            assert!(listening_on(&name), "{what}: nothing listens on {name}");
        }
        // A job that entered is the mount's job while it runs.
        let (job, gate) = start_gated_job(who, mode, LINGER, img, "warm-anchor-gate", what);
        wait_for_jobs(who, img, 1);
        open_gate(&gate);
        let out = finish_within(job, 60);
        let text = expect_run(&out, "warm", &format!("the gated job {what}"));
        assert!(text.contains("cairn test image"), "{what}: {text}");
        let want = if with_anchor { "anchor" } else { "helper" };
        assert_eq!(entered(&out), want, "{what}");
        wait_for_jobs(who, img, 0);
        if with_anchor {
            let (anchor, _) = &anchors[0];
            let raw: i32 = anchor.parse().expect("pid");
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(raw),
                nix::sys::signal::Signal::SIGKILL,
            )
            .expect("kill -9 the anchor");
            assert!(
                wait_until(10, || !alive(anchor)),
                "{what}: the anchor survived kill -9"
            );
            let out = run(who, mode, LINGER, &[], img, "cat /etc/os-release");
            let text = expect_run(&out, "warm", &format!("a run without the anchor {what}"));
            assert!(text.contains("cairn test image"), "{what}: {text}");
            assert_eq!(entered(&out), "helper", "{what}");
        }
        assert_eq!(servers(who, img, mode), vec![helper.clone()], "{what}");
    });
}

#[test]
fn per_run_binds_env_overlay_tmp_and_cwd_do_not_leak_into_the_next_run() {
    for who in fuse_runners() {
        for mode in mount_modes(&who) {
            let what = format!("as {} via {mode}", who.label());
            // A directory of the caller's in the image, for `-w` writes
            // (the overlay copies up only what the caller may own: the
            // image's /etc is root's).
            let dir = scratch("warm-leak");
            let img = dir.join("img.sqfs");
            let (uid, gid) = (who.uid(), who.gid());
            busybox_sqfs_with(&dir.join("root"), &img, &[], |root| {
                let shared = root.join("shared");
                fs::create_dir(&shared).expect("mkdir");
                std::os::unix::fs::chown(&shared, Some(uid), Some(gid)).expect("chown");
            });
            let _stop = StopOnDrop::new(&who, &img);
            let dir_a = host_dir("warm-leak-a");
            let dir_c = host_dir("warm-leak-c");
            fs::write(dir_a.join("only-in-a"), "a\n").expect("write");
            fs::write(dir_c.join("only-in-c"), "c\n").expect("write");
            let bind_a = format!("{}:/mnt", dir_a.display());
            let bind_c = format!("{}:/mnt", dir_c.display());
            // A (cold): its bind, variable, overlay write, private /tmp and
            // working directory.
            let a = run(
                &who,
                mode,
                LINGER,
                &[
                    "-b",
                    &bind_a,
                    "-e",
                    "X=a",
                    "-w",
                    "--private-tmp",
                    "-c",
                    "/mnt",
                ],
                &img,
                "echo X=$X; pwd; ls /mnt; echo a > /shared/written-by-a && echo a > /tmp/tmp-by-a \
                 && echo a > /mnt/written-through-a && echo WROTE",
            );
            let text = expect_run(&a, "cold", &format!("run A {what}"));
            for want in ["X=a", "/mnt", "only-in-a", "WROTE"] {
                assert!(
                    text.lines().any(|l| l == want),
                    "{what}: A lacks {want}: {text}"
                );
            }
            assert!(dir_a.join("written-through-a").exists(), "{what}: A's bind");
            // B (warm), no options: none of A's.
            let probe = "echo X=${X-unset}; pwd; ls -A /mnt | sed 's/^/mnt: /'; \
                 for f in /shared/written-by-a /tmp/tmp-by-a; do [ -e $f ] && echo LEAK $f; done; \
                 touch /shared/probe 2>/dev/null && echo WRITABLE; \
                 grep -c ' /mnt ' /proc/self/mountinfo | sed 's/^/mnt mounts: /'";
            let b = run(&who, mode, LINGER, &[], &img, probe);
            let text = expect_run(&b, "warm", &format!("run B {what}"));
            assert!(text.lines().any(|l| l == "X=unset"), "{what}: B: {text}");
            assert!(text.lines().any(|l| l == "/"), "{what}: B's cwd: {text}");
            assert!(!text.contains("mnt: "), "{what}: A's bind in B: {text}");
            assert!(
                text.contains("mnt mounts: 0"),
                "{what}: a mount on /mnt in B: {text}"
            );
            assert!(!text.contains("LEAK"), "{what}: {text}");
            assert!(
                !text.contains("WRITABLE"),
                "{what}: B's image is writable: {text}"
            );
            // C (warm) with its own bind, variable and overlay: its own only.
            let c = run(
                &who,
                mode,
                LINGER,
                &["-b", &bind_c, "-e", "X=c", "-w"],
                &img,
                "echo X=$X; ls /mnt; [ -e /shared/written-by-a ] && echo LEAK; \
                 echo c > /shared/written-by-c && echo WROTE",
            );
            let text = expect_run(&c, "warm", &format!("run C {what}"));
            for want in ["X=c", "only-in-c", "WROTE"] {
                assert!(
                    text.lines().any(|l| l == want),
                    "{what}: C lacks {want}: {text}"
                );
            }
            assert!(
                !text.contains("only-in-a") && !text.contains("LEAK"),
                "{what}: {text}"
            );
            // D (warm) again without options: nothing of C's.
            let d = run(
                &who,
                mode,
                LINGER,
                &[],
                &img,
                &format!("{probe}; [ -e /shared/written-by-c ] && echo LEAK c; true"),
            );
            let text = expect_run(&d, "warm", &format!("run D {what}"));
            assert!(text.lines().any(|l| l == "X=unset"), "{what}: D: {text}");
            assert!(
                !text.contains("mnt: ") && !text.contains("LEAK"),
                "{what}: D: {text}"
            );
            assert!(!text.contains("WRITABLE"), "{what}: D: {text}");
            // A run with --pid on the warm mount has its own PID namespace
            // (the job is PID 2 under cairn's init), and the next run not.
            let count = "echo pid=$$; ls /proc | grep -c '^[0-9]' | sed 's/^/procs=/'";
            let p = run(&who, mode, LINGER, &["--pid"], &img, count);
            assert_success(&p, &format!("--pid {what}"));
            let text = stdout_of(&p);
            assert!(text.contains("pid=2\n"), "{what}: --pid: {text}");
            let procs = |text: &str| -> u32 {
                text.lines()
                    .find_map(|l| l.strip_prefix("procs="))
                    .and_then(|n| n.trim().parse().ok())
                    .unwrap_or_else(|| panic!("no count in {text}"))
            };
            // init, the job, ls, grep, sed and maybe a subshell.
            assert!(procs(&text) <= 8, "{what}: --pid sees others: {text}");
            let e = run(&who, mode, LINGER, &[], &img, count);
            let text = expect_run(&e, "warm", &format!("after --pid {what}"));
            assert!(!text.contains("pid=2\n"), "{what}: {text}");
            assert!(procs(&text) > 8, "{what}: the host's processes: {text}");
        }
    }
}

#[test]
fn another_user_never_enters_the_first_users_warm_mount() {
    let Some((first, second)) = two_users() else {
        return;
    };
    if !fuse_works() {
        return;
    }
    let users = [Who::User(first.clone()), Who::User(second.clone()), Who::Me];
    if !users.iter().all(|w| namespaces_work(w, "-Urm")) {
        return;
    }
    let img = private_image("warm-users");
    let _stops: Vec<StopOnDrop> = users.iter().map(|w| StopOnDrop::new(w, &img)).collect();
    let mut seen: Vec<(String, u32)> = Vec::new();
    for (n, who) in users.iter().enumerate() {
        let what = format!("as {}", who.label());
        let out = run(who, "fuse", LINGER, &[], &img, "id -u");
        let text = expect_run(&out, "cold", &format!("first run {what}"));
        assert_eq!(text.trim(), who.uid().to_string(), "{what}");
        let servers = processes_mapping(&img, Some("cairn-fuse"));
        assert_eq!(
            servers.len(),
            n + 1,
            "{what}: one server per user: {servers:?}"
        );
        let owners: HashSet<u32> = servers.iter().filter_map(|p| uid_of(p)).collect();
        assert_eq!(
            owners.len(),
            n + 1,
            "{what}: servers of distinct users: {servers:?}"
        );
        assert!(owners.contains(&who.uid()), "{what}: {owners:?}");
        let mine: Vec<&String> = servers
            .iter()
            .filter(|p| uid_of(p) == Some(who.uid()))
            .collect();
        seen.push((mine[0].clone(), who.uid()));
        // The user's own second run is warm, on its own server.
        let again = run(who, "fuse", LINGER, &[], &img, "id -u");
        expect_run(&again, "warm", &format!("second run {what}"));
        assert_eq!(
            processes_mapping(&img, Some("cairn-fuse")).len(),
            n + 1,
            "{what}: no new server for a warm run"
        );
    }
    // Each user's cairn ps lists its own warm mount only.
    for (who, (pid, _)) in users.iter().zip(&seen) {
        let listed = ps_of(who, &img);
        assert_eq!(listed.len(), 1, "ps as {}: {listed:?}", who.label());
        assert_eq!(&pid_of(&listed[0]), pid, "ps as {}", who.label());
    }
    // Stopping is per user too: the second user's stop leaves the first's.
    let out = stop(&users[1], &img, false);
    assert_success(&out, "cairn stop as the second user");
    assert!(
        wait_until(5, || !alive(&seen[1].0)),
        "the second user's server is still there"
    );
    assert!(
        alive(&seen[0].0),
        "the first user's server went with the second's stop"
    );
    assert!(
        alive(&seen[2].0),
        "root's server went with the second user's stop"
    );
}

#[test]
fn the_id_map_is_part_of_the_key() {
    for who in fuse_runners() {
        let what = format!("as {}", who.label());
        let img = private_image("warm-idmap");
        let _stop = StopOnDrop::new(&who, &img);
        let other = if who.uid() == 0 { "4321" } else { "0" };
        let map = ["--uid", other, "--gid", other];
        let out = run(&who, "fuse", LINGER, &[], &img, "id -u");
        let text = expect_run(&out, "cold", &format!("own ids {what}"));
        assert_eq!(text.trim(), who.uid().to_string(), "{what}");
        let out = run(&who, "fuse", LINGER, &map, &img, "id -u");
        let text = expect_run(&out, "cold", &format!("--uid {other} {what}"));
        assert_eq!(text.trim(), other, "{what}");
        let out = run(&who, "fuse", LINGER, &map, &img, "id -u");
        let text = expect_run(&out, "warm", &format!("--uid {other} again {what}"));
        assert_eq!(text.trim(), other, "{what}");
        let out = run(&who, "fuse", LINGER, &[], &img, "id -u");
        let text = expect_run(&out, "warm", &format!("own ids again {what}"));
        assert_eq!(text.trim(), who.uid().to_string(), "{what}");
        let servers = processes_mapping(&img, Some("cairn-fuse"));
        assert_eq!(
            servers.len(),
            2,
            "{what}: one server per id map: {servers:?}"
        );
        assert_eq!(ps_of(&who, &img).len(), 2, "{what}: cairn ps");
    }
}

/// Two busybox images that differ in /etc/version ("v1" or "v2").
fn versioned_images() -> (PathBuf, PathBuf) {
    let dir = scratch("warm-versions");
    let mut made = Vec::new();
    for v in ["v1", "v2"] {
        let img = dir.join(format!("{v}.sqfs"));
        busybox_sqfs_with(&dir.join(v), &img, &[], |root| {
            fs::write(root.join("etc/version"), format!("{v}\n")).expect("write version");
        });
        made.push(img);
    }
    let v2 = made.pop().expect("v2");
    (made.pop().expect("v1"), v2)
}

#[test]
fn an_image_replaced_or_rewritten_in_place_is_a_new_image() {
    let runners = fuse_runners();
    if runners.is_empty() {
        return;
    }
    let (v1, v2) = versioned_images();
    let bytes_v1 = fs::read(&v1).expect("read v1");
    for who in runners {
        for mode in mount_modes(&who) {
            let what = format!("as {} via {mode}", who.label());
            let dir = scratch("warm-rewrite");
            let img = dir.join("img.sqfs");
            fs::copy(&v1, &img).expect("copy v1");
            fs::set_permissions(&img, fs::Permissions::from_mode(0o644)).expect("chmod");
            let _stop = StopOnDrop::new(&who, &img);
            let version = "cat /etc/version";
            let out = run(&who, mode, LINGER, &[], &img, version);
            assert_eq!(expect_run(&out, "cold", &format!("v1 {what}")), "v1\n");
            let out = run(&who, mode, LINGER, &[], &img, version);
            assert_eq!(
                expect_run(&out, "warm", &format!("v1 again {what}")),
                "v1\n"
            );
            // A job running on v1 keeps its view when the file is replaced.
            let gate = host_dir("warm-rewrite-gate");
            let bind = format!("{}:/mnt", gate.display());
            let job = spawn_run(
                &who,
                mode,
                LINGER,
                &["-b", &bind],
                &img,
                "touch /mnt/started.$$; i=0; while [ ! -e /mnt/go ]; do sleep 0.05; \
                 i=$((i+1)); [ $i -gt 1200 ] && exit 9; done; cat /etc/version",
            );
            assert!(
                wait_until(30, || started(&gate) == 1),
                "{what}: the job started"
            );

            // Replaced: a new file renamed over the old one (a new inode).
            let new = dir.join("img.sqfs.new");
            fs::copy(&v2, &new).expect("copy v2");
            fs::set_permissions(&new, fs::Permissions::from_mode(0o644)).expect("chmod");
            fs::rename(&new, &img).expect("rename");
            let out = run(&who, mode, LINGER, &[], &img, version);
            assert_eq!(expect_run(&out, "cold", &format!("v2 {what}")), "v2\n");
            let out = run(&who, mode, LINGER, &[], &img, version);
            assert_eq!(
                expect_run(&out, "warm", &format!("v2 again {what}")),
                "v2\n"
            );
            open_gate(&gate);
            let out = finish_within(job, 60);
            assert_success(&out, &format!("the job on v1 {what}"));
            assert_eq!(stdout_of(&out), "v1\n", "{what}: the running job's view");

            // Rewritten in place: the same inode, new bytes (most likely of
            // the same size: then only the times tell).
            let inode = fs::metadata(&img).expect("stat").ino();
            fs::write(&img, &bytes_v1).expect("rewrite in place");
            assert_eq!(fs::metadata(&img).expect("stat").ino(), inode, "same inode");
            let out = run(&who, mode, LINGER, &[], &img, version);
            assert_eq!(
                expect_run(&out, "cold", &format!("v1 in place {what}")),
                "v1\n"
            );
            let out = run(&who, mode, LINGER, &[], &img, version);
            assert_eq!(
                expect_run(&out, "warm", &format!("v1 in place again {what}")),
                "v1\n"
            );
        }
    }
}

#[test]
fn after_the_linger_no_process_socket_mount_or_loop_device_remains() {
    each_case("warm-linger", |who, mode, what, img| {
        let (job, gate) = start_gated_job(who, mode, "1s", img, "warm-linger-gate", what);
        let entry = wait_for_jobs(who, img, 1);
        assert_eq!(entry["linger_ms"].as_u64(), Some(1000), "{what}: {entry}");
        assert!(
            entry["idle_ms"].is_null(),
            "{what}: idle while a job runs: {entry}"
        );
        let pid = pid_of(&entry);
        assert_eq!(comm_of(&pid), "cairn-fuse", "{what}: the helper {pid}");
        if mode == "fuse" {
            assert_eq!(servers(who, img, mode), vec![pid.clone()], "{what}");
        }
        let mut names = warm_sockets_of(&pid);
        assert_eq!(
            names.len(),
            1,
            "{what}: the helper's warm socket: {names:?}"
        );
        assert!(
            names[0].starts_with(&format!("@cairn-warm/{}/", who.uid())),
            "{what}: {names:?}"
        );
        // The anchor's name goes too (where there is one).
        names.push(listed_anchor_of(&names[0]));
        let loops = loop_paths(&loop_devices_of(img));
        if mode == "kernel" {
            assert_eq!(loops.len(), 1, "{what}: one loop device: {loops:?}");
        }
        open_gate(&gate);
        let out = finish_within(job, 60);
        expect_run(&out, "cold", &format!("the job {what}"));
        let ended = Instant::now();
        // Right after the job the mount is still warm (the linger has
        // only begun), unless this machine was too slow to look.
        let listed = ps_of(who, img);
        if ended.elapsed() < Duration::from_millis(700) {
            assert_eq!(
                listed.len(),
                1,
                "{what}: gone before the linger: {listed:?}"
            );
            assert!(alive(&pid), "{what}: the helper left before the linger");
        }
        // Then nothing remains.
        let mut left = String::new();
        let gone = wait_until(10, || {
            left = leftovers(img, std::slice::from_ref(&pid), &names, &loops);
            left.is_empty()
        });
        assert!(gone, "{what}: 10s after a 1s linger:\n{left}");
        assert!(
            ps_of(who, img).is_empty(),
            "{what}: cairn ps still lists it"
        );
        assert!(
            ended.elapsed() >= Duration::from_millis(900),
            "{what}: the warm mount went before its linger"
        );
    });
}

#[test]
fn stop_ends_an_idle_warm_mount_at_once_and_refuses_one_with_jobs_unless_forced() {
    each_case("warm-stop", |who, mode, what, img| {
        // Idle: stopped at once, and the next run is cold.
        let out = run(who, mode, "60s", &[], img, "true");
        expect_run(&out, "cold", &format!("first run {what}"));
        let listed = ps_of(who, img);
        assert_eq!(listed.len(), 1, "{what}: {listed:?}");
        let idle = pid_of(&listed[0]);
        let out = stop(who, img, false);
        assert_success(&out, &format!("cairn stop of an idle mount {what}"));
        let mut left = String::new();
        let gone = wait_until(3, || {
            left = leftovers(img, std::slice::from_ref(&idle), &[], &[]);
            left.is_empty()
        });
        assert!(gone, "{what}: 3s after cairn stop:\n{left}");
        assert!(
            ps_of(who, img).is_empty(),
            "{what}: still listed after stop"
        );

        // With a job running: refused (125), the mount stays and serves.
        let (job, gate) = start_gated_job(who, mode, "60s", img, "warm-stop-gate", what);
        let busy = pid_of(&wait_for_jobs(who, img, 1));
        let out = stop(who, img, false);
        assert_eq!(
            out.status.code(),
            Some(125),
            "{what}: cairn stop with a job running\nstdout:\n{}\nstderr:\n{}",
            stdout_of(&out),
            stderr_of(&out)
        );
        assert!(
            !stderr_of(&out).trim().is_empty(),
            "{what}: no reason given"
        );
        assert!(alive(&busy), "{what}: a refused stop ended the helper");
        let out = run(who, mode, "60s", &[], img, "cat /etc/os-release");
        let text = expect_run(&out, "warm", &format!("a run beside the job {what}"));
        assert!(text.contains("cairn test image"), "{what}: {text}");
        let entry = wait_for_jobs(who, img, 1);
        assert_eq!(pid_of(&entry), busy, "{what}: {entry}");

        // Forced: no new run enters, the running job goes on.
        let out = stop(who, img, true);
        assert_success(&out, &format!("cairn stop --force {what}"));
        assert!(
            wait_until(3, || ps_of(who, img).is_empty()),
            "{what}: still listed after stop --force: {:?}",
            ps_of(who, img)
        );
        let out = run(who, mode, "60s", &[], img, "cat /etc/os-release");
        let text = expect_run(&out, "cold", &format!("a run after stop --force {what}"));
        assert!(text.contains("cairn test image"), "{what}: {text}");
        let fresh = ps_of(who, img);
        assert_eq!(fresh.len(), 1, "{what}: {fresh:?}");
        assert_ne!(
            pid_of(&fresh[0]),
            busy,
            "{what}: the stopped helper was entered"
        );
        open_gate(&gate);
        let out = finish_within(job, 60);
        assert_success(&out, &format!("the job after stop --force {what}"));
        assert!(
            stdout_of(&out).contains("cairn test image"),
            "{what}: the job could not read its image after stop --force: {}",
            stdout_of(&out)
        );
        // The stopped helper goes with its last job.
        assert!(
            wait_until(10, || !alive(&busy)),
            "{what}: the force-stopped helper {busy} outlived its job"
        );
        // And the fresh one is stopped at once too.
        let fresh = pid_of(&fresh[0]);
        assert_success(&stop(who, img, false), &format!("stop the fresh {what}"));
        let mut left = String::new();
        let gone = wait_until(3, || {
            left = leftovers(img, std::slice::from_ref(&fresh), &[], &[]);
            left.is_empty()
        });
        assert!(gone, "{what}: 3s after the last cairn stop:\n{left}");
    });
}

#[test]
fn killing_the_idle_server_leaves_the_next_run_working() {
    each_case("warm-kill", |who, mode, what, img| {
        let out = run(who, mode, LINGER, &[], img, "true");
        expect_run(&out, "cold", &format!("first run {what}"));
        let listed = ps_of(who, img);
        assert_eq!(listed.len(), 1, "{what}: {listed:?}");
        let pid = pid_of(&listed[0]);
        let names = warm_sockets_of(&pid);
        assert_eq!(names.len(), 1, "{what}: the helper's socket: {names:?}");
        let raw: i32 = pid.parse().expect("pid");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(raw),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("kill -9 the helper");
        let mut left = String::new();
        let gone = wait_until(10, || {
            left = leftovers(img, std::slice::from_ref(&pid), &names, &[]);
            left.is_empty()
        });
        assert!(
            gone,
            "{what}: 10s after kill -9 of the idle helper:\n{left}"
        );
        let out = run(who, mode, LINGER, &[], img, "cat /etc/os-release");
        let text = expect_run(&out, "cold", &format!("the run after kill -9 {what}"));
        assert!(text.contains("cairn test image"), "{what}: {text}");
        let now = servers(who, img, mode);
        assert_eq!(
            now.len(),
            1,
            "{what}: a fresh server: {now:?}; cairn ps: {:?}; the run's stderr: {}",
            ps_of(who, img),
            stderr_of(&out)
        );
        assert_ne!(now[0], pid, "{what}");
        // The fresh one serves the next run warm.
        let out = run(who, mode, LINGER, &[], img, "cat /etc/os-release");
        let text = expect_run(&out, "warm", &format!("the run after that {what}"));
        assert!(text.contains("cairn test image"), "{what}: {text}");
    });
}

#[test]
fn a_linger_of_zero_neither_leaves_nor_uses_a_warm_mount() {
    each_case("warm-zero", |who, mode, what, img| {
        let nothing_left = |img: &Path| {
            let mut left = String::new();
            let gone = wait_until(10, || {
                left = leftovers(img, &[], &[], &[]);
                left.is_empty() && ps_of(who, img).is_empty()
            });
            assert!(gone, "{what}: left after a run with linger 0:\n{left}");
        };
        // The environment.
        let out = run(who, mode, "0", &[], img, "cat /etc/os-release");
        expect_run(&out, "cold", &format!("linger 0 {what}"));
        nothing_left(img);
        // After a warm one, a run with 0 is cold and leaves the warm one.
        let out = run(who, mode, LINGER, &[], img, "true");
        expect_run(&out, "cold", &format!("linger {LINGER} {what}"));
        let warm = ps_of(who, img);
        assert_eq!(warm.len(), 1, "{what}: {warm:?}");
        let out = run(who, mode, "0", &[], img, "cat /etc/os-release");
        let text = expect_run(&out, "cold", &format!("linger 0 after a warm run {what}"));
        assert!(text.contains("cairn test image"), "{what}: {text}");
        let still = ps_of(who, img);
        assert_eq!(still.len(), 1, "{what}: {still:?}");
        assert_eq!(pid_of(&still[0]), pid_of(&warm[0]), "{what}");
        let out = run(who, mode, LINGER, &[], img, "true");
        expect_run(&out, "warm", &format!("linger {LINGER} again {what}"));
        assert_success(&stop(who, img, true), &format!("stop {what}"));
        nothing_left(img);
        // The command line wins over the environment, both ways.
        let out = run(who, mode, LINGER, &["--warm-linger", "0"], img, "true");
        expect_run(
            &out,
            "cold",
            &format!("--warm-linger 0, env {LINGER} {what}"),
        );
        nothing_left(img);
        let out = run(who, mode, "0", &["--warm-linger", "2s"], img, "true");
        expect_run(&out, "cold", &format!("--warm-linger 2s, env 0 {what}"));
        let listed = ps_of(who, img);
        assert_eq!(
            listed.len(),
            1,
            "{what}: --warm-linger 2s left none: {listed:?}"
        );
        assert_eq!(listed[0]["linger_ms"].as_u64(), Some(2000), "{what}");
    });
}

#[test]
fn linger_durations_in_milliseconds_count_from_the_end_of_the_last_job() {
    for who in fuse_runners() {
        let what = format!("as {}", who.label());
        let img = private_image("warm-ms");
        let _stop = StopOnDrop::new(&who, &img);
        let (job, gate) = start_gated_job(&who, "fuse", "500ms", &img, "warm-ms-gate", &what);
        let entry = wait_for_jobs(&who, &img, 1);
        assert_eq!(entry["linger_ms"].as_u64(), Some(500), "{what}: {entry}");
        // Far longer than the linger while the job runs: still there.
        std::thread::sleep(Duration::from_millis(1500));
        let entry = wait_for_jobs(&who, &img, 1);
        let pid = pid_of(&entry);
        open_gate(&gate);
        expect_run(&finish_within(job, 60), "cold", &format!("the job {what}"));
        let mut left = String::new();
        let gone = wait_until(10, || {
            left = leftovers(&img, std::slice::from_ref(&pid), &[], &[]);
            left.is_empty()
        });
        assert!(gone, "{what}: 10s after a 500ms linger:\n{left}");
    }
}

#[test]
fn join_still_works_with_warm_runs_on_and_a_warm_mount_serves_the_next_step() {
    for who in fuse_runners() {
        let what = format!("as {}", who.label());
        let img = private_image("warm-join");
        let _stop = StopOnDrop::new(&who, &img);
        let rank = |tag: &str, script: &str| {
            let mut cmd = run_cmd(
                &who,
                "fuse",
                LINGER,
                &[&format!("--join={tag}")],
                &img,
                script,
            );
            cmd.env("CAIRN_JOIN_LINGER_MS", "300")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            cmd.spawn().expect("spawn rank")
        };
        let ns_of = |out: &Output| {
            stdout_of(out)
                .lines()
                .find(|l| l.starts_with("mnt:["))
                .map(str::to_owned)
                .unwrap_or_else(|| panic!("no namespace: {}", stdout_of(out)))
        };
        // Step 0: four ranks at once share one namespace and one server.
        let tag = format!("warm-{}-{}", std::process::id(), who.uid());
        let script = "readlink /proc/self/ns/mnt; sleep 1";
        let ranks: Vec<Child> = (0..4).map(|_| rank(&format!("{tag}.0"), script)).collect();
        std::thread::sleep(Duration::from_millis(500));
        let during = processes_mapping(&img, Some("cairn-fuse"));
        let outs: Vec<Output> = ranks.into_iter().map(|r| finish_within(r, 60)).collect();
        for out in &outs {
            assert_success(out, &format!("rank of step 0 {what}"));
        }
        assert_eq!(
            during.len(),
            1,
            "{what}: one server for the step: {during:?}"
        );
        let namespaces: Vec<String> = outs.iter().map(ns_of).collect();
        assert!(
            namespaces.iter().all(|n| *n == namespaces[0]),
            "{what}: one mount namespace for the step: {namespaces:?}"
        );
        // The join supervisor's linger (300ms) passes; the warm mount stays
        // and serves the next step and a plain run.
        std::thread::sleep(Duration::from_millis(800));
        let servers_after = processes_mapping(&img, Some("cairn-fuse"));
        assert_eq!(
            servers_after,
            during,
            "{what}: the warm server after the step (alive: {}; cairn ps: {:?}; ranks' stderr: {:?})",
            during.first().is_some_and(|p| alive(p)),
            ps_of(&who, &img),
            outs.iter().map(stderr_of).collect::<Vec<_>>()
        );
        let ranks: Vec<Child> = (0..2).map(|_| rank(&format!("{tag}.1"), script)).collect();
        let outs: Vec<Output> = ranks.into_iter().map(|r| finish_within(r, 60)).collect();
        for out in &outs {
            assert_success(out, &format!("rank of step 1 {what}"));
        }
        let step1: Vec<String> = outs.iter().map(ns_of).collect();
        // (Not compared with step 0's: that namespace is gone, and the
        // kernel may give its inode number to step 1's.)
        assert_eq!(step1[0], step1[1], "{what}: step 1 shares a namespace");
        assert!(
            outs.iter().any(|o| kind_of(o).as_deref() == Some("warm")),
            "{what}: step 1 did not use the warm mount: {:?}",
            outs.iter().map(stderr_of).collect::<Vec<_>>()
        );
        let out = run(&who, "fuse", LINGER, &[], &img, "cat /etc/os-release");
        let text = expect_run(&out, "warm", &format!("a plain run after the steps {what}"));
        assert!(text.contains("cairn test image"), "{what}: {text}");
        assert_eq!(
            processes_mapping(&img, Some("cairn-fuse")),
            during,
            "{what}: still the one server"
        );
    }
}

#[test]
fn concurrent_runs_of_one_image_share_one_server() {
    const RUNS: usize = 8;
    for who in fuse_runners() {
        let what = format!("as {}", who.label());
        let img = private_image("warm-many");
        let _stop = StopOnDrop::new(&who, &img);
        let gate = host_dir("warm-many-gate");
        let bind = format!("{}:/mnt", gate.display());
        let jobs: Vec<Child> = (0..RUNS)
            .map(|_| spawn_run(&who, "fuse", LINGER, &["-b", &bind], &img, GATED))
            .collect();
        let all_started = wait_until(60, || started(&gate) == RUNS);
        let servers = processes_mapping(&img, Some("cairn-fuse"));
        let listed = if all_started {
            ps_of(&who, &img)
        } else {
            Vec::new()
        };
        open_gate(&gate);
        let outs: Vec<Output> = jobs.into_iter().map(|j| finish_within(j, 90)).collect();
        assert!(
            all_started,
            "{what}: only {} of {RUNS} jobs started",
            started(&gate)
        );
        for out in &outs {
            assert_success(out, &format!("a concurrent run {what}"));
            assert!(stdout_of(out).contains("cairn test image"), "{what}");
        }
        let cold = outs.iter().filter(|o| kind(o) == "cold").count();
        assert_eq!(
            servers.len(),
            1,
            "{what}: one server for {RUNS} runs: {servers:?}"
        );
        assert_eq!(cold, 1, "{what}: one cold run of {RUNS}");
        assert_eq!(listed.len(), 1, "{what}: {listed:?}");
        assert_eq!(
            listed[0]["jobs"].as_u64(),
            Some(RUNS as u64),
            "{what}: {listed:?}"
        );
        // All done: the one server is idle and still warm.
        let entry = wait_for_jobs(&who, &img, 0);
        assert_eq!(pid_of(&entry), servers[0], "{what}");
    }
}

/// Another user holding the victim's warm rendezvous name before the
/// victim's first run: bound and never listened on, or listening and never
/// answering. The victim's runs neither
/// trust it nor wait on it: each is cold, succeeds and leaves no warm
/// mount (the name is taken); once the squatter is gone the next run
/// leaves one again.
/// The warm socket name `victim`'s FUSE runs of `img` use (default id
/// map), as cairn computes it; the victim's secret must exist.
fn fuse_warm_name(victim: &TestUser, img: &Path) -> String {
    let meta = fs::metadata(img).expect("stat");
    let head = fs::read(img).expect("read image");
    let identity = cairn::squashfs::reader::identity(&meta, &head[..96]);
    let (uid_map, gid_map) = cairn::ns::idmap::caller_maps(victim.uid, victim.gid, None, None);
    let key = cairn::ns::warm::WarmKey {
        uid: victim.uid,
        image: &identity,
        maps: [
            uid_map.inside,
            uid_map.outside,
            uid_map.count,
            gid_map.inside,
            gid_map.outside,
            gid_map.count,
        ],
        kernel: false,
    };
    cairn::ns::warm::socket_name(&key, Some(&secret_of(victim)))
}

/// Two test users, the first (the victim) able to run FUSE warm mounts,
/// and the victim as a caller; `None` where the machine cannot (a test
/// that must work fails in the checks instead).
fn victim_and_other_user() -> Option<(TestUser, TestUser, Who)> {
    let (victim, other) = two_users()?;
    let who = Who::User(victim.clone());
    (fuse_works() && namespaces_work(&who, "-Urm")).then_some((victim, other, who))
}

/// Another user who knows the anchor's name (here: told it) connects and
/// gets the anchor's pidfd, but cannot enter its namespaces with it
/// (setns: EPERM, the kernel's ptrace check), while the victim can.
#[test]
fn another_user_cannot_enter_through_the_anchor() {
    if !kernel_has_peer_pidfd() {
        return;
    }
    let Some((victim, evil, who)) = victim_and_other_user() else {
        return;
    };
    let img = private_image("warm-anchor-evil");
    let _stop = StopOnDrop::new(&who, &img);
    expect_run(
        &run(&who, "fuse", LINGER, &[], &img, "true"),
        "cold",
        "first run",
    );
    let anchor = cairn::ns::warm::anchor_name(&fuse_warm_name(&victim, &img));
    let listed = format!("@{anchor}");
    assert!(
        wait_until(10, || listening_on(&listed)),
        "the victim's anchor never listened on {listed}"
    );
    // Connect, take the peer's pidfd (SO_PEERPIDFD = 77), setns with it.
    let enter = "import ctypes, socket, sys\n\
        s = socket.socket(socket.AF_UNIX)\n\
        s.connect(b'\\0' + sys.argv[1].encode())\n\
        pidfd = s.getsockopt(socket.SOL_SOCKET, 77)\n\
        libc = ctypes.CDLL(None, use_errno=True)\n\
        rc = libc.setns(pidfd, 0x10000000 | 0x00020000)\n\
        print(rc, ctypes.get_errno())\n";
    let attempt = |user: &TestUser| {
        let out = output(
            command_as(&Who::User(user.clone()), "python3")
                .args(["-c", enter])
                .arg(&anchor),
        );
        assert_success(&out, &format!("the attempt as {}", user.name));
        stdout_of(&out).trim().to_owned()
    };
    assert_eq!(
        attempt(&evil),
        format!("-1 {}", libc::EPERM),
        "the other user"
    );
    assert_eq!(attempt(&victim), "0 0", "the victim (the test's control)");
}

#[test]
fn a_squatted_warm_name_makes_runs_cold_never_stuck() {
    let Some((victim, evil, who)) = victim_and_other_user() else {
        return;
    };
    let img = private_image("warm-squat");
    let _stop = StopOnDrop::new(&who, &img);
    // A first run with warm runs off makes the victim's secret, as any
    // earlier run of theirs would have.
    expect_run(&run(&who, "fuse", "0", &[], &img, "true"), "cold", "setup");
    let name = fuse_warm_name(&victim, &img);
    for listening in [false, true] {
        let what = if listening {
            "listening squatter"
        } else {
            "bound squatter"
        };
        let squatter = Squatter::hold(&evil, &[(&name, listening)]);
        let started = Instant::now();
        let out = run(&who, "fuse", LINGER, &[], &img, "cat /etc/os-release");
        expect_run(&out, "cold", what);
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{what}: the run waited on the squatter"
        );
        assert!(
            ps_of(&who, &img).is_empty(),
            "{what}: the run published a warm mount under a taken name"
        );
        drop(squatter);
    }
    // The squatter gone: the next run leaves its mount warm again.
    expect_run(
        &run(&who, "fuse", LINGER, &[], &img, "true"),
        "cold",
        "after",
    );
    expect_run(
        &run(&who, "fuse", LINGER, &[], &img, "true"),
        "warm",
        "after, again",
    );
    // The anchor's name squatted (before the helper starts its anchor):
    // another uid's listener is never entered, the runs ask the helper.
    stop(&who, &img, true);
    let anchor = cairn::ns::warm::anchor_name(&name);
    let squatter = Squatter::hold(&evil, &[(&anchor, true)]);
    expect_run(
        &run(&who, "fuse", LINGER, &[], &img, "true"),
        "cold",
        "anchor squatted",
    );
    let out = run(&who, "fuse", LINGER, &[], &img, "cat /etc/os-release");
    let text = expect_run(&out, "warm", "anchor squatted, again");
    assert!(text.contains("cairn test image"), "{text}");
    assert_eq!(entered(&out), "helper");
    drop(squatter);
}
