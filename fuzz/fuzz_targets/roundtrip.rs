//! Fuzz target `roundtrip`: bytes drive a generator of valid trees that are
//! written with cairn's squashfs writer and read back with its reader; any
//! difference is a bug. Harness: `cairn::squashfs::roundtrip::fuzz_roundtrip`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = cairn::squashfs::roundtrip::fuzz_roundtrip(data) {
        panic!("{e}");
    }
});
