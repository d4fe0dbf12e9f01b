//! `cairn check` reports each piece for this host and user, exits 0 when
//! `cairn run` can work and 125 (with what an admin does) when it cannot.

mod common;

use common::*;

#[test]
fn check_reports_every_piece_and_passes_here() {
    for who in callers() {
        if !namespaces_work(&who, "-Urm") {
            continue;
        }
        let out = output(cairn_as(&who).arg("check"));
        assert_success(&out, "cairn check");
        let text = stdout_of(&out);
        for item in [
            "user namespaces",
            "/dev/fuse",
            "loop devices",
            "kernel squashfs",
            "overlayfs in a user namespace",
            "newuidmap/subuid",
        ] {
            assert!(text.contains(item), "{item} missing from:\n{text}");
        }
        assert!(
            text.lines().next().is_some_and(|l| l.starts_with("ok")),
            "{text}"
        );
        assert!(text.contains("cairn run can work"), "{text}");
        if who.uid() != 0 {
            assert!(
                text.lines()
                    .any(|l| l.starts_with("n/a") && l.contains("loop devices")),
                "loop devices are root only:\n{text}"
            );
        }
    }
}

#[test]
fn check_fails_and_says_what_to_do_without_user_namespaces() {
    let Some(user) = ordinary_user() else { return };
    if !namespaces_work(&user, "-Urm") {
        return;
    }
    // In a user namespace whose limit of nested namespaces is 0, cairn's
    // own unshare fails with ENOSPC, as on a host with the limit at 0.
    let out = output(command_as(&user, "unshare").args([
        "-Ur",
        "sh",
        "-c",
        "echo 0 > /proc/sys/user/max_user_namespaces && exec \"$0\" check",
        &cairn_bin().to_string_lossy(),
    ]));
    assert_eq!(out.status.code(), Some(125), "{}", stdout_of(&out));
    let text = stdout_of(&out);
    assert!(text.contains("MISSING  user namespaces"), "{text}");
    assert!(text.contains("max_user_namespaces"), "{text}");
    assert!(text.contains("cannot work"), "{text}");
}

/// A setgid copy of cairn (as root installs it by mistake): `cairn run`
/// refuses before it does anything, and `cairn check` says what to do.
#[test]
fn a_setuid_or_setgid_cairn_refuses_to_run() {
    use std::os::unix::fs::PermissionsExt;
    if !require(is_root(), "root (to set the setgid bit)") {
        return;
    }
    let dir = scratch("setgid-cairn");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
    let copy = dir.join("cairn");
    std::fs::copy(cairn_bin(), &copy).expect("copy cairn");
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o2755)).expect("chmod g+s");
    for who in callers() {
        let run = output(command_as(&who, &copy).args([
            "run",
            &busybox_sqfs().to_string_lossy(),
            "--",
            "true",
        ]));
        assert_eq!(run.status.code(), Some(125), "{}", stderr_of(&run));
        let err = stderr_of(&run);
        assert!(
            err.contains("setuid or setgid") && err.contains("chmod ug-s"),
            "{err}"
        );
        let check = output(command_as(&who, &copy).arg("check"));
        assert_eq!(check.status.code(), Some(125), "{}", stdout_of(&check));
        let text = stdout_of(&check);
        assert!(
            text.contains("setuid or setgid") && text.contains("chmod ug-s"),
            "{text}"
        );
    }
}
