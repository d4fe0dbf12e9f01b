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
