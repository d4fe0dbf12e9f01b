//! Fuzz target `dockerfile`: `cairn build`'s front end — a Dockerfile
//! parsed, words expanded, a `.dockerignore` parsed and matched.
//! Harness: `cairn::build::fuzz::fuzz_dockerfile`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cairn::build::fuzz::fuzz_dockerfile(data);
});
