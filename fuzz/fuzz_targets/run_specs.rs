//! Fuzz target `run_specs`: the text parsers of `cairn run`: bind specs,
//! `--env K=V`, `--env-file` contents and `--unset-env` globs from users and
//! job scripts, and the image config's `User` with the image's own passwd
//! and group files. Errors are fine; panics, hangs (a glob that backtracks
//! exponentially) and escaping binds are not.
//! Harness: `cairn::run::fuzz::fuzz_run_specs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cairn::run::fuzz::fuzz_run_specs(data);
});
