//! Fuzz target `cdi_spec`: CDI spec files (`/etc/cdi/*.json|yaml`), written
//! by vendors' tools or by anyone who can write a spec directory a site
//! points cairn at. Each input is parsed as JSON and as YAML. Errors are
//! fine; panics, hangs and a spec that passes with a relative path, an
//! invalid kind or device name are not.
//! Seeds: `cargo +nightly fuzz run cdi_spec tests/fixtures/cdi`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cairn_fuzz_cdi_spec(data);
});

fn cairn_fuzz_cdi_spec(data: &[u8]) {
    use cairn::run::cdi::{parse_spec, valid_device_name, valid_kind};
    use std::path::Path;
    for name in ["fuzz.json", "fuzz.yaml"] {
        let Ok(spec) = parse_spec(Path::new(name), data) else {
            continue;
        };
        assert!(valid_kind(&spec.kind), "{spec:?}");
        let edits = std::iter::once(&spec.edits).chain(spec.devices.iter().map(|d| &d.edits));
        for e in edits {
            for b in &e.edits.binds {
                assert!(b.src.is_absolute() && b.dst.is_absolute(), "{b:?}");
            }
            for d in &e.edits.devices {
                assert!(d.path.is_absolute() && d.host_path.is_absolute(), "{d:?}");
            }
        }
        for d in &spec.devices {
            assert!(valid_device_name(&d.name), "{d:?}");
        }
    }
}
