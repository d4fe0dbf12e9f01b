//! `cairn run --join`: ranks started at once share one mount namespace and
//! one FUSE server; a rank that starts after the first finished still
//! joins; after the linger nothing of the job remains. As root and as the
//! ordinary user.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::*;

fn usable(who: &Who) -> bool {
    namespaces_work(who, "-Urm")
        && require(Path::new("/dev/fuse").exists(), "/dev/fuse")
        && require(have_tool("mksquashfs"), "mksquashfs")
}

fn image(name: &str) -> PathBuf {
    let dir = scratch(name);
    let img = dir.join("img.sqfs");
    busybox_sqfs_at(&img, &[]);
    img
}

fn rank(who: &Who, img: &Path, tag: &str, script: &str) -> std::process::Child {
    let mut cmd = cairn_as(who);
    cmd.args(["run", "--mount", "fuse", &format!("--join={tag}")])
        .arg(img)
        .args(["--", "/bin/sh", "-c", script])
        .env("CAIRN_JOIN_LINGER_MS", "1500")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.spawn().expect("spawn rank")
}

fn finish(child: std::process::Child) -> String {
    let out = child.wait_with_output().expect("wait");
    assert_success(&out, "rank");
    stdout_of(&out).trim().to_owned()
}

#[test]
fn four_ranks_share_one_namespace_and_one_server_and_late_ranks_join() {
    for who in callers().into_iter().filter(usable) {
        let img = image("join");
        let tag = format!("t-{}", std::process::id());
        // Each rank reports its mount namespace, then waits until all four
        // have started, so the FUSE servers can be counted meanwhile.
        let script = "readlink /proc/self/ns/mnt; sleep 1";
        let ranks: Vec<_> = (0..4).map(|_| rank(&who, &img, &tag, script)).collect();
        std::thread::sleep(Duration::from_millis(500));
        let servers = processes_mapping(&img, Some("cairn-fuse"));
        let namespaces: Vec<String> = ranks.into_iter().map(finish).collect();
        assert_eq!(
            servers.len(),
            1,
            "one FUSE server as {}: {servers:?}",
            who.label()
        );
        assert!(namespaces[0].starts_with("mnt:["), "{namespaces:?}");
        assert!(
            namespaces.iter().all(|n| *n == namespaces[0]),
            "one mount namespace as {}: {namespaces:?}",
            who.label()
        );
        // All four are done: a late rank (within the linger) still joins.
        let late = finish(rank(&who, &img, &tag, "readlink /proc/self/ns/mnt"));
        assert_eq!(late, namespaces[0], "late rank as {}", who.label());
        // After the linger the supervisor, the mount and the server go.
        assert!(
            wait_until(20, || processes_mapping(&img, None).is_empty()),
            "left over as {}: {:?}",
            who.label(),
            processes_mapping(&img, None)
        );
        // A new job with the same tag starts afresh.
        let fresh = finish(rank(&who, &img, &tag, "readlink /proc/self/ns/mnt"));
        assert!(fresh.starts_with("mnt:["), "{fresh}");
    }
}

#[test]
fn join_without_a_tag_or_with_pid_is_refused() {
    let Some(who) = callers().into_iter().find(usable) else {
        return;
    };
    let img = image("join-refused");
    let mut cmd = cairn_as(&who);
    cmd.args(["run", "--join"]).arg(&img).arg("true");
    cmd.env_remove("SLURM_JOB_ID")
        .env_remove("PMIX_NAMESPACE")
        .env_remove("OMPI_COMM_WORLD");
    let out = output(&mut cmd);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr_of(&out).contains("--join=TAG"),
        "{}",
        stderr_of(&out)
    );
    let out = output(
        cairn_as(&who)
            .args(["run", "--join=x", "--pid"])
            .arg(&img)
            .arg("true"),
    );
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr_of(&out).contains("--pid"), "{}", stderr_of(&out));
    // The launcher's tag works without =TAG.
    let mut cmd = cairn_as(&who);
    cmd.args(["run", "--join"])
        .arg(&img)
        .args(["--", "/bin/true"])
        .env("SLURM_JOB_ID", format!("{}", std::process::id()))
        .env("SLURM_STEP_ID", "0")
        .env("CAIRN_JOIN_LINGER_MS", "100");
    assert_success(&output(&mut cmd), "--join with SLURM_JOB_ID");
}
