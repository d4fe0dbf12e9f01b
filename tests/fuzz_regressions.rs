//! Replays fuzz/regressions/<target>/: inputs that once crashed, hung or ran
//! out of memory in a fuzz target (fuzz/run-ci.sh copies them there when CI's
//! fuzzing step fails; they are committed with the fix). Each goes through
//! its target's harness, the same function the target calls, so a fixed
//! bug stays fixed without nightly or cargo-fuzz. Also checks that every
//! target in fuzz/Cargo.toml has its harness listed here, so a new target
//! cannot lose its regressions.

use std::fs;
use std::path::{Path, PathBuf};

/// A fuzz target's harness: panics on the bug the target looks for.
type Harness = fn(&[u8]);

/// The harness each target in fuzz/fuzz_targets/ calls, by target name.
const HARNESSES: &[(&str, Harness)] = &[
    ("reader", |d| {
        let _ = cairn::squashfs::reader::fuzz_walk(d);
    }),
    ("image_layer", |d| {
        let _ = cairn::image::fuzz::fuzz_layer(d);
    }),
    ("image_archive", cairn::image::fuzz::fuzz_archive),
    ("image_oci", cairn::image::fuzz::fuzz_documents),
    ("registry", cairn::image::fuzz::fuzz_registry),
    ("roundtrip", |d| {
        if let Err(e) = cairn::squashfs::roundtrip::fuzz_roundtrip(d) {
            panic!("{e}");
        }
    }),
    ("run_specs", cairn::run::fuzz::fuzz_run_specs),
    ("cdi_spec", cairn::run::cdi::fuzz_spec),
    ("site_config", cairn::config::fuzz::fuzz_site_config),
    ("dockerfile", cairn::build::fuzz::fuzz_dockerfile),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn harness(target: &str) -> Option<Harness> {
    HARNESSES
        .iter()
        .find(|(t, _)| *t == target)
        .map(|(_, h)| *h)
}

#[test]
fn every_fuzz_target_has_a_harness_here() {
    let manifest = fs::read_to_string(fuzz_dir().join("Cargo.toml")).expect("fuzz/Cargo.toml");
    let targets: Vec<&str> = manifest
        .lines()
        .filter_map(|l| l.strip_prefix("name = \""))
        .filter_map(|l| l.strip_suffix('"'))
        .filter(|name| *name != "cairn-fuzz")
        .collect();
    assert!(targets.len() >= 9, "{targets:?}");
    for t in targets {
        assert!(
            harness(t).is_some(),
            "fuzz target {t} has no harness in HARNESSES"
        );
        let source = fuzz_dir().join("fuzz_targets").join(format!("{t}.rs"));
        assert!(source.is_file(), "{}", source.display());
    }
}

#[test]
fn regression_inputs_replay_through_their_harness() {
    let dir = fuzz_dir().join("regressions");
    let Ok(targets) = fs::read_dir(&dir) else {
        return; // none kept yet
    };
    let mut replayed = 0;
    for target in targets {
        let target = target.expect("entry").path();
        let name = target
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        if !target.is_dir() {
            continue; // the README
        }
        let run = harness(&name)
            .unwrap_or_else(|| panic!("fuzz/regressions/{name}: no fuzz target of that name"));
        let mut inputs: Vec<PathBuf> = fs::read_dir(&target)
            .expect("read regressions")
            .map(|e| e.expect("entry").path())
            .collect();
        inputs.sort();
        for input in inputs {
            let data = fs::read(&input).expect("read input");
            eprintln!("replaying {}", input.display());
            run(&data);
            replayed += 1;
        }
    }
    eprintln!("{replayed} regression inputs replayed");
}
