//! Fuzz target `run_specs`: the command-line and file parsers of `cairn run`
//! that take text from users and job scripts: bind specs, `--env K=V`,
//! `--env-file` contents and `--unset-env` globs. Errors are fine; panics,
//! hangs (a glob that backtracks exponentially) and escaping binds are not.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cairn_fuzz_run_specs(data);
});

fn cairn_fuzz_run_specs(data: &[u8]) {
    use std::path::{Component, Path};
    let text = String::from_utf8_lossy(data);
    if let Ok(spec) = cairn::spec::bind::parse_bind(&text) {
        assert!(spec.dst.is_absolute());
        assert!(!spec.dst.components().any(|c| c == Component::ParentDir));
    }
    let _ = cairn::run::env::parse_assignment(&text);
    let _ = cairn::run::env::parse_env_file(Path::new("fuzz.env"), data);
    let (pattern, name) = data.split_at(data.len() / 2);
    let _ = cairn::run::env::glob_match(pattern, name);
}
