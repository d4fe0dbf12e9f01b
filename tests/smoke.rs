//! The binary starts, and cairn's own errors exit 125 (DESIGN.md).

mod common;

use common::*;

#[test]
fn help_exits_zero() {
    let out = output(cairn_as(&Who::Me).arg("--help"));
    assert_success(&out, "cairn --help");
    assert!(stdout_of(&out).contains("Usage"));
}

#[test]
fn bad_option_exits_125() {
    let out = output(cairn_as(&Who::Me).arg("--no-such-option"));
    assert_eq!(out.status.code(), Some(125), "{}", stderr_of(&out));
}

#[test]
fn ordinary_user_can_start_cairn() {
    let Some(user) = ordinary_user() else { return };
    let out = output(cairn_as(&user).arg("--version"));
    assert_success(&out, "cairn --version as the test user");
}

/// cairn starts without Rust's runtime start (src/sys/entry.rs), which
/// did two things cairn relies on. A closed stdout is reopened on
/// /dev/null first, so that no file cairn opens later becomes fd 1 (and
/// the job's stdout): the job finds /dev/null there. (Without it the job's
/// fd 1 is closed, or is whatever cairn opened last.)
#[test]
fn a_closed_stdout_is_dev_null_not_the_next_file_opened() {
    let dir = scratch("closed-stdout");
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg("exec \"$0\" run -b \"$1:/tmp\" \"$2\" -- sh -c \"$3\" >&-")
        .arg(cairn_bin())
        .arg(&dir)
        .arg(busybox_sqfs())
        .arg("if [ -c /proc/self/fd/1 ]; then r=null; else r=other; fi; echo $r > /tmp/fd1")
        .status()
        .expect("sh");
    assert_eq!(status.code(), Some(0), "{status:?}");
    let seen = std::fs::read_to_string(dir.join("fd1")).expect("the job's note");
    assert_eq!(seen, "null\n");
}

/// And SIGPIPE is ignored: `cairn config show | true` is a broken pipe that
/// cairn's output ignores (exit 0), not cairn killed by the signal.
#[test]
fn a_closed_pipe_is_an_error_not_death_by_sigpipe() {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    let mut child = std::process::Command::new(cairn_bin())
        .args(["config", "show"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn cairn");
    drop(child.stdout.take());
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let status = child.wait().expect("wait");
    assert_eq!(status.signal(), None, "killed: {status:?}: {err}");
    assert_eq!(status.code(), Some(0), "{err}");
}
