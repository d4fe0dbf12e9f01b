//! The `run_specs` fuzz target's harness, shared with the seed and
//! regression tests: the text a run takes from users and job scripts (bind
//! specs, `--env K=V`, `--env-file` contents, `--unset-env` globs) and from
//! the image (its config's `User` looked up in its own `/etc/passwd` and
//! `/etc/group`, which cairn then extends). Errors are fine; panics, hangs
//! (a glob that backtracks exponentially) and escaping binds are not.

use std::path::{Component, Path};

use crate::run::env::{glob_match, parse_assignment, parse_env_file, parse_unset};
use crate::run::facts::Facts;
use crate::run::identity::{Identity, group_for, home_of, passwd_for};
use crate::run::image_config::user_ids;
use crate::spec::bind::parse_bind;

/// Runs every parser over `data`; panics when an invariant breaks.
pub fn fuzz_run_specs(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(spec) = parse_bind(&text) {
        assert!(spec.dst.is_absolute(), "{text:?} -> {spec:?}");
        assert!(
            !spec.dst.components().any(|c| c == Component::ParentDir),
            "{text:?} -> {spec:?}"
        );
    }
    let _ = parse_assignment(&text);
    let _ = parse_unset(&text);
    let _ = parse_env_file(Path::new("fuzz.env"), data);
    let (pattern, name) = data.split_at(data.len() / 2);
    let _ = glob_match(pattern, name);
    image_identity(&text);
    // Kept facts are MACed before they are decoded; the decoder must
    // still never panic, and what it accepts must encode back to itself.
    if let Some(facts) = Facts::decode(data) {
        assert_eq!(Facts::decode(&facts.encode()), Some(facts));
    }
}

/// The first line as the image config's `User`, the rest as the image's
/// passwd and group files: what cairn writes must keep the image's lines.
fn image_identity(text: &str) {
    let (user, files) = text.split_once('\n').unwrap_or((text, ""));
    let _ = user_ids(user, files, files);
    let who = Identity {
        user: "alice".into(),
        group: "staff".into(),
        uid: 1000,
        gid: 100,
        home: "/home/alice".into(),
        shell: "/bin/sh".into(),
    };
    let passwd = passwd_for(files, &who);
    assert!(
        passwd.starts_with(files),
        "the image's passwd lines were lost"
    );
    let _ = home_of(&passwd, who.uid);
    let group = group_for(files, &who);
    assert!(
        group.starts_with(files),
        "the image's group lines were lost"
    );
}
