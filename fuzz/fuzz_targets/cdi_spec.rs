//! Fuzz target `cdi_spec`: CDI spec files (`/etc/cdi/*.json|yaml`), written
//! by vendors' tools or by anyone who can write a spec directory a site
//! points cairn at. Each input is parsed as JSON and as YAML. Errors are
//! fine; panics, hangs and a spec that passes with a relative path, an
//! invalid kind or device name are not.
//! Seeds: `cargo +nightly fuzz run cdi_spec tests/fixtures/cdi`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cairn::run::cdi::fuzz_spec(data);
});
