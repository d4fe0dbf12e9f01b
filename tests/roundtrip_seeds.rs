//! Write-then-read: many generated trees go through the squashfs writer and
//! come back through the reader unchanged. Same harness as the `roundtrip`
//! fuzz target (`cairn::squashfs::roundtrip::fuzz_roundtrip`), so the
//! target's logic runs in CI without nightly or cargo-fuzz.

mod common;

use cairn::squashfs::roundtrip::fuzz_roundtrip;

/// Generated inputs, deterministic so a failure reproduces.
fn inputs(count: usize) -> Vec<Vec<u8>> {
    let mut rng = common::XorShift::new(0x2545_f491_4f6c_dd1d);
    let mut next = move || rng.next_u64();
    (0..count)
        .map(|_| {
            let len = (next() % 1500) as usize;
            (0..len).map(|_| next().to_le_bytes()[0]).collect()
        })
        .collect()
}

#[test]
fn empty_input_is_an_empty_image() {
    fuzz_roundtrip(&[]).expect("empty tree round-trips");
}

#[test]
fn generated_trees_roundtrip() {
    let rounds = std::env::var("CAIRN_ROUNDTRIP_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(120);
    for (i, input) in inputs(rounds).iter().enumerate() {
        if let Err(e) = fuzz_roundtrip(input) {
            panic!("input #{i} ({} bytes): {e}\n{input:?}", input.len());
        }
    }
}
