//! Fuzz target `registry`: a registry reference (first line), a docker or
//! podman auth file (the rest), `--creds` and base64 as cairn reads them.
//! Harness: `cairn::image::fuzz::fuzz_registry`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cairn::image::fuzz::fuzz_registry(data);
});
