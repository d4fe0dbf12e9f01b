//! The `cdi_spec` fuzz target's checks, run in CI over its seeds (the spec
//! files in tests/fixtures/cdi: `bad-*` must be refused, the others parse)
//! and over mutations of them: truncations and byte flips never panic, and a
//! spec that parses has a valid kind and device names and absolute paths.
//! Hostile YAML (deep nesting, alias bombs) is refused without exhausting
//! the stack or memory.

mod common;

use std::path::{Path, PathBuf};

use cairn::run::cdi::{CdiError, fuzz_spec, parse_spec};

fn check(data: &[u8]) {
    fuzz_spec(data);
}

fn seeds() -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cdi");
    let mut seeds: Vec<_> = std::fs::read_dir(&dir)
        .expect("fixtures")
        .map(|e| e.expect("entry").path())
        .map(|p| {
            let bytes = std::fs::read(&p).expect("read seed");
            (p, bytes)
        })
        .collect();
    seeds.sort();
    assert!(seeds.len() >= 4, "{seeds:?}");
    seeds
}

#[test]
fn seeds_parse_or_fail_as_named() {
    for (path, bytes) in seeds() {
        let name = path.file_name().expect("name").to_string_lossy();
        let result = parse_spec(&path, &bytes);
        if name.starts_with("bad-") {
            let err = result.expect_err(&name);
            assert!(
                err.to_string().contains(&*path.to_string_lossy()),
                "{name}: the error names the file: {err}"
            );
        } else {
            result.unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        check(&bytes);
    }
}

#[test]
fn mutated_seeds_never_panic() {
    let mut rng = common::XorShift::new(0x2545_f491_4f6c_dd1d);
    let mut next = || rng.next_u64();
    for (_, bytes) in seeds() {
        for cut in (0..bytes.len()).step_by(7) {
            check(&bytes[..cut]);
        }
        for _ in 0..300 {
            let mut m = bytes.clone();
            for _ in 0..(1 + next() % 4) {
                let at = usize::try_from(next() % m.len() as u64).expect("below len");
                m[at] = match next() % 4 {
                    0 => b'/',
                    1 => b'"',
                    2 => b':',
                    _ => (next() & 0xff) as u8,
                };
            }
            check(&m);
        }
    }
}

#[test]
fn hostile_yaml_is_refused_cleanly() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(matches!(
        parse_spec(Path::new("deep.yaml"), deep.as_bytes()),
        Err(CdiError::Malformed { .. })
    ));
    assert!(parse_spec(Path::new("deep.json"), deep.as_bytes()).is_err());
    // A "billion laughs" alias bomb: each level doubles ten times.
    let mut bomb = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    let names = ["b", "c", "d", "e", "f", "g", "h", "i"];
    let mut prev = "a";
    for n in names {
        bomb.push_str(&format!(
            "{n}: &{n} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
        ));
        prev = n;
    }
    bomb.push_str("cdiVersion: 0.6.0\nkind: x.com/y\ndevices: [{name: a}]\n");
    // In keys cairn ignores, the aliases are never expanded: harmless.
    let ignored = parse_spec(Path::new("bomb.yaml"), bomb.as_bytes()).expect("ignored keys");
    assert!(ignored.edits.edits.env.is_empty());
    // Where cairn reads them, refused before 9^9 strings are built (the
    // first nested list is no env entry, and serde_norway limits alias
    // expansion besides).
    bomb.push_str("containerEdits: {env: *i}\n");
    let err = parse_spec(Path::new("bomb.yaml"), bomb.as_bytes()).expect_err("bomb");
    assert!(matches!(err, CdiError::Malformed { .. }), "{err}");
}
