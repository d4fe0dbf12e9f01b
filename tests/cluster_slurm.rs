//! `cairn run --join` under a real one-node Slurm (Debian's slurm-wlm 22.05
//! with munge), started by tests/slurm/start.sh in a scratch directory and
//! torn down by a guard even when a test fails: `srun -n 4` tasks see their
//! SLURM_* environment and share one mount namespace and one FUSE server;
//! `scancel` delivers SIGTERM to the job inside the container and srun
//! reports it. As root and as the ordinary user (srun runs the tasks as the
//! submitting user).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;

/// One Slurm at a time in this binary: the tests share the machine's
/// resources and a serial order keeps their logs readable.
static SLURM: Mutex<()> = Mutex::new(());

/// A running private Slurm; stopped and removed on drop.
struct Slurm {
    dir: PathBuf,
    conf: PathBuf,
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/slurm")
        .join(name)
}

impl Slurm {
    fn start() -> Slurm {
        let dir = scratch("slurm");
        let slurm = Slurm {
            conf: dir.join("slurm.conf"),
            dir,
        };
        let out = output_within(Command::new(script("start.sh")).arg(&slurm.dir), 60);
        assert_success(&out, "tests/slurm/start.sh");
        slurm
    }

    /// `cmd` as `who` talking to this Slurm.
    fn command(&self, who: &Who, cmd: &str) -> Command {
        let mut c = command_as(who, cmd);
        c.env("SLURM_CONF", &self.conf)
            // The supervisor's linger is only waited for at the end.
            .env("CAIRN_JOIN_LINGER_MS", "300");
        c
    }
}

impl Drop for Slurm {
    fn drop(&mut self) {
        let _ = Command::new(script("stop.sh")).arg(&self.dir).status();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn usable(who: &Who) -> bool {
    namespaces_work(who, "-Urm") && require(Path::new("/dev/fuse").exists(), "/dev/fuse")
}

fn slurm_available() -> bool {
    require(is_root(), "root (to start slurmctld and slurmd)")
        && ["munged", "slurmctld", "slurmd", "srun", "scancel"]
            .iter()
            .all(|t| require(have_tool(t), &format!("{t} (tests/setup-host.sh)")))
}

/// The busybox test image as a squashfs made by `cairn squash`.
fn image() -> PathBuf {
    let img = scratch("slurm-img").join("img.sqfs");
    let out = output(
        Command::new(cairn_bin())
            .arg("squash")
            .arg(busybox_rootfs())
            .arg(&img),
    );
    assert_success(&out, "cairn squash");
    fs::set_permissions(&img, std::os::unix::fs::PermissionsExt::from_mode(0o644)).expect("chmod");
    img
}

/// Wait for a child with a deadline, sampling `watch` meanwhile.
fn wait_watching(mut child: std::process::Child, secs: u64, mut watch: impl FnMut()) -> Output {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("srun did not finish within {secs}s");
        }
        watch();
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("wait")
}

#[test]
fn srun_tasks_see_their_slurm_env_and_share_one_mount_and_one_server() {
    if !slurm_available() {
        return;
    }
    let _serial = SLURM.lock().unwrap_or_else(|e| e.into_inner());
    let slurm = Slurm::start();
    let img = image();
    for who in callers().into_iter().filter(usable) {
        for mode in ["fuse", "auto"] {
            // Each task reports itself, then stays a moment so the FUSE
            // servers can be counted while all four run.
            let child = slurm
                .command(&who, "srun")
                .args(["-n", "4", "--kill-on-bad-exit=1"])
                .arg(cairn_bin())
                .args(["run", "--join", "--mount", mode])
                .arg(&img)
                .args([
                    "--",
                    "sh",
                    "-c",
                    "echo task $SLURM_PROCID job $SLURM_JOB_ID step $SLURM_STEP_ID \
                     ns $(readlink /proc/self/ns/mnt); sleep 1",
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn srun");
            let mut servers = std::collections::BTreeSet::new();
            let out = wait_watching(child, 60, || {
                servers.extend(processes_mapping(&img, Some("cairn-fuse")));
            });
            let what = format!(
                "srun -n 4 cairn run --join --mount {mode} as {}",
                who.label()
            );
            assert_success(&out, &what);
            let stdout = stdout_of(&out);
            let mut tasks: Vec<(u32, String, String, String)> = stdout
                .lines()
                .filter_map(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    match f.as_slice() {
                        ["task", t, "job", j, "step", s, "ns", n] => Some((
                            t.parse().expect("SLURM_PROCID"),
                            j.to_string(),
                            s.to_string(),
                            n.to_string(),
                        )),
                        _ => None,
                    }
                })
                .collect();
            tasks.sort();
            let ids: Vec<u32> = tasks.iter().map(|t| t.0).collect();
            assert_eq!(ids, vec![0, 1, 2, 3], "{what}: SLURM_PROCID\n{stdout}");
            let (_, job, step, ns) = tasks[0].clone();
            assert!(job.parse::<u64>().is_ok(), "{what}: SLURM_JOB_ID {job}");
            assert!(step.parse::<u64>().is_ok(), "{what}: SLURM_STEP_ID {step}");
            assert!(ns.starts_with("mnt:["), "{what}: {stdout}");
            assert!(
                tasks.iter().all(|t| t.1 == job && t.2 == step && t.3 == ns),
                "{what}: one job, one step, one mount namespace\n{stdout}"
            );
            if mode == "fuse" {
                assert_eq!(servers.len(), 1, "{what}: one FUSE server: {servers:?}");
            }
            assert!(
                wait_until(20, || processes_mapping(&img, None).is_empty()),
                "{what}: left over: {:?}",
                processes_mapping(&img, None)
            );
        }
    }
}

#[test]
fn scancel_delivers_sigterm_inside_and_srun_reports_it() {
    if !slurm_available() {
        return;
    }
    let _serial = SLURM.lock().unwrap_or_else(|e| e.into_inner());
    let slurm = Slurm::start();
    let img = image();
    for who in callers().into_iter().filter(usable) {
        // Slurm signals every process of the step, the shell's `sleep` too:
        // the shell loops so that a `wait` ended by the sleep's death does
        // not end the script before the shell's own SIGTERM runs the trap.
        // (job script, srun's exit status Slurm 22.05 reports, its message):
        // a task that traps SIGTERM and exits 7 makes srun exit 7 ("Exited
        // with exit code 7"); one killed by SIGTERM makes srun exit 128+15.
        let cases = [
            (
                "trap 'echo term $SLURM_PROCID >/mnt/trap-$SLURM_PROCID; exit 7' TERM; \
                 echo up >/mnt/up-$SLURM_PROCID; while :; do sleep 1 & wait; done",
                7,
                "Exited with exit code 7",
            ),
            (
                "echo up >/mnt/up-$SLURM_PROCID; exec sleep 300",
                143,
                "Terminated",
            ),
        ];
        for (n, (job, status, message)) in cases.into_iter().enumerate() {
            let out_dir = scratch("slurm-out");
            let name = format!("cairn-cancel-{}-{n}-{}", std::process::id(), who.uid());
            let child = slurm
                .command(&who, "srun")
                .args(["-n", "2", "-J", &name])
                .arg(cairn_bin())
                .args(["run", "--join", "-b"])
                .arg(format!("{}:/mnt", out_dir.display()))
                .arg(&img)
                .args(["--", "sh", "-c", job])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn srun");
            let what = format!("scancel of case {n} as {}", who.label());
            let up = || (0..2).all(|t| out_dir.join(format!("up-{t}")).exists());
            assert!(wait_until(30, up), "{what}: the tasks did not start");
            let cancel = output(slurm.command(&who, "scancel").args(["-n", &name]));
            assert_success(&cancel, "scancel");
            let out = wait_watching(child, 60, || {});
            let stderr = stderr_of(&out);
            assert_eq!(
                out.status.code(),
                Some(status),
                "{what}: srun status\n{stderr}"
            );
            assert!(stderr.contains("CANCELLED"), "{what}: {stderr}");
            assert!(stderr.contains(message), "{what}: {stderr}");
            if status == 7 {
                for t in 0..2 {
                    let trap =
                        fs::read_to_string(out_dir.join(format!("trap-{t}"))).unwrap_or_default();
                    let listing: Vec<_> = fs::read_dir(&out_dir)
                        .expect("out dir")
                        .flatten()
                        .map(|e| e.file_name())
                        .collect();
                    assert_eq!(
                        trap.trim(),
                        format!("term {t}"),
                        "{what}: task {t} trap; {listing:?}\n{stderr}"
                    );
                }
            }
            assert!(
                wait_until(20, || processes_mapping(&img, None).is_empty()),
                "{what}: left over: {:?}",
                processes_mapping(&img, None)
            );
        }
    }
}

/// Another user squats the rendezvous of a job step (they can see the job
/// id in `squeue`; here the name is computed with the victim's secret, as
/// if seen in /proc/net/unix): `NAME` bound and never listened on,
/// `NAME/1` listening. `srun --join` ranks still meet in one namespace and
/// the step succeeds.
#[test]
fn srun_join_ranks_meet_past_a_squatted_name() {
    if !slurm_available() {
        return;
    }
    let (Some(victim), Some(evil)) = (test_user(), second_user()) else {
        require(false, "the test users cairn-test and cairn-evil");
        return;
    };
    let who = Who::User(victim.clone());
    if !usable(&who) {
        return;
    }
    let _serial = SLURM.lock().unwrap_or_else(|e| e.into_inner());
    let slurm = Slurm::start();
    let img = image();
    // A first run makes the victim's secret.
    assert_success(
        &output(
            cairn_as(&who)
                .args(["run", "--join=first"])
                .arg(&img)
                .args(["--", "true"]),
        ),
        "first run",
    );
    // An allocation whose first step will be step 0: its join tag is known.
    let alloc =
        output(
            slurm
                .command(&who, "salloc")
                .args(["--no-shell", "-n", "3", "-J", "cairn-squat"]),
        );
    assert_success(&alloc, "salloc --no-shell");
    let text = stderr_of(&alloc) + &stdout_of(&alloc);
    let job: u64 = text
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .next_back()
        .unwrap_or_else(|| panic!("no job id in: {text}"));
    let meta = fs::metadata(&img).expect("stat");
    let name = cairn::ns::join::socket_name(
        victim.uid,
        std::os::unix::fs::MetadataExt::dev(&meta),
        std::os::unix::fs::MetadataExt::ino(&meta),
        &format!("slurm-{job}.0"),
        Some(&secret_of(&victim)),
    );
    let squatter = Squatter::join(&evil, &name);
    let child = slurm
        .command(&who, "srun")
        .args(["--jobid", &job.to_string(), "-n", "3"])
        .arg(cairn_bin())
        .args(["run", "--join", "--mount", "fuse"])
        .arg(&img)
        .args([
            "--",
            "sh",
            "-c",
            "echo step $SLURM_STEP_ID ns $(readlink /proc/self/ns/mnt); sleep 1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn srun");
    let out = wait_watching(child, 60, || {});
    let _ = output(slurm.command(&who, "scancel").arg(job.to_string()));
    drop(squatter);
    assert_success(&out, "srun --join past a squatted name");
    let stdout = stdout_of(&out);
    let mut lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(
        lines.iter().all(|l| l.starts_with("step 0 ns mnt:[")),
        "{stdout}"
    );
    lines.dedup();
    assert_eq!(
        lines.len(),
        1,
        "one namespace for the three ranks: {stdout}"
    );
    let stderr = stderr_of(&out);
    assert!(
        stderr.contains("is bound but nobody listens")
            && stderr.contains(&format!("uid {}", evil.uid)),
        "the ranks walked past both names:\n{stderr}"
    );
}
