//! Fuzz target `reader`: open arbitrary bytes as a squashfs image and walk,
//! stat, read, readlink and list xattrs of everything, within budgets. The
//! harness lives in the library (`cairn::squashfs::reader::fuzz_walk`) so
//! `tests/reader_fuzz_seeds.rs` replays the seed corpus through the same code.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Errors are the expected outcome for most inputs; panics, hangs and
    // runaway allocations are what the fuzzer reports.
    let _ = cairn::squashfs::reader::fuzz_walk(data);
});
