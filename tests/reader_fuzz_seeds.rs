//! Replays every file of fuzz/corpus-seed/reader/ through the same harness
//! the cargo-fuzz target calls (`fuzz_walk`), so the harness and the
//! reader's hostile-input paths run in CI without nightly or cargo-fuzz.
//! good-* seeds must pass and show their content, bad-* must fail, mut-*
//! may do either; none may panic. Then a small deterministic mutation loop
//! over the good seeds (byte flips, overwrites, truncations) as a poor
//! man's fuzzer.

mod common;

use std::fs;
use std::path::PathBuf;

use cairn::squashfs::reader::fuzz_walk;

fn seeds() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus-seed/reader");
    let mut out: Vec<_> = fs::read_dir(&dir)
        .expect("fuzz/corpus-seed/reader exists")
        .map(|e| {
            let p = e.expect("entry").path();
            let name = p.file_name().expect("name").to_string_lossy().into_owned();
            (name, fs::read(&p).expect("read seed"))
        })
        .collect();
    out.sort();
    out
}

#[test]
fn every_seed_replays_through_the_harness() {
    let seeds = seeds();
    assert!(seeds.len() >= 10, "only {} seeds", seeds.len());
    let mut good = 0;
    for (name, bytes) in &seeds {
        assert!(bytes.len() <= 64 * 1024, "{name} is over 64 KiB");
        let result = fuzz_walk(bytes);
        if name.starts_with("good-") {
            let sum = result.unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(sum.leaves >= 40, "{name}: {sum:?}");
            assert!(sum.file_bytes >= 40_000, "{name}: {sum:?}");
            assert!(sum.xattrs >= 1, "{name}: {sum:?}");
            good += 1;
        } else if name.starts_with("bad-") {
            assert!(result.is_err(), "{name} was accepted: {result:?}");
        }
    }
    assert!(good >= 5);
}

/// A random index below `len` (`x % len`, in range by construction).
fn pick(x: u64, len: usize) -> usize {
    usize::try_from(x % len as u64).expect("below len")
}

#[test]
fn mutated_good_seeds_never_panic() {
    let mut rng = common::XorShift::new(0x9e37_79b9_7f4a_7c15);
    let mut next = move || rng.next_u64();
    // CAIRN_FUZZ_ROUNDS=N runs longer by hand.
    let rounds: u32 = std::env::var("CAIRN_FUZZ_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600);
    for (name, bytes) in seeds().into_iter().filter(|(n, _)| n.starts_with("good-")) {
        for round in 0..rounds {
            let mut b = bytes.clone();
            match next() % 4 {
                0 => {
                    for _ in 0..1 + next() % 8 {
                        let at = pick(next(), b.len());
                        b[at] ^= 1 << (next() % 8);
                    }
                }
                1 => {
                    // Interesting values at a random spot: lengths, counts
                    // and offsets are where readers go wrong.
                    let at = pick(next(), b.len() - 8);
                    let v: u64 = [0, 1, 0xff, 0xffff, 0x8000, u64::MAX, 1 << 31, 8193]
                        [(next() % 8) as usize];
                    let width = [1usize, 2, 4, 8][(next() % 4) as usize];
                    b[at..at + width].copy_from_slice(&v.to_le_bytes()[..width]);
                }
                2 => {
                    let len = pick(next(), b.len());
                    b.truncate(len);
                }
                _ => {
                    // Superblock fields specifically.
                    let at = pick(next(), 96);
                    b[at] = next().to_le_bytes()[0];
                }
            }
            // A panic here fails the test; the name and round reproduce it.
            let r = std::panic::catch_unwind(|| fuzz_walk(&b));
            assert!(r.is_ok(), "{name} round {round}: the harness panicked");
        }
    }
}
