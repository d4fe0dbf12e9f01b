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
