//! The `run_specs` fuzz target's harness (`cairn::run::fuzz::fuzz_run_specs`),
//! run in CI over generated inputs: bind specs, `--env`, `--env-file`,
//! `--unset-env` globs and the image's `User` with its passwd and group never
//! panic, a parsed bind destination is absolute without `..`, and globs
//! built to make a backtracking matcher explode still answer quickly.

mod common;

use cairn::run::env::glob_match;
use cairn::run::fuzz::fuzz_run_specs;
use cairn::spec::bind::parse_bind;

fn check(data: &[u8]) {
    fuzz_run_specs(data);
}

#[test]
fn generated_specs_never_panic() {
    // Inputs from a small alphabet of the characters these parsers care about.
    let alphabet = b"/:.ro wx=*?#\n\r\\a0";
    let mut rng = common::XorShift::new(0x9e37_79b9_7f4a_7c15);
    for _ in 0..20_000 {
        let state = rng.next_u64();
        let len = (state % 40) as usize;
        let mut s = state;
        let input: Vec<u8> = (0..len)
            .map(|_| {
                s = s.rotate_left(5) ^ 0x5851_f42d_4c95_7f2d;
                alphabet[usize::try_from(s % alphabet.len() as u64).expect("below len")]
            })
            .collect();
        check(&input);
    }
}

#[test]
fn escaping_binds_are_refused() {
    for spec in ["/x:/../etc", "/x:/a/../../b", "/x:..", "/x:/a/..//../c:ro"] {
        assert!(parse_bind(spec).is_err(), "{spec} accepted");
    }
}

#[test]
fn pathological_globs_finish() {
    // "a*a*a*...b" against "aaaa...": exponential for naive backtracking.
    let pattern: Vec<u8> = b"a*".repeat(30).into_iter().chain(*b"b").collect();
    let name = vec![b'a'; 60];
    // A backtracking matcher would take years here; the linear one returns.
    assert!(!glob_match(&pattern, &name));
}
