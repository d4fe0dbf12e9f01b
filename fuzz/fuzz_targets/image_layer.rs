//! Fuzz target `image_layer`: arbitrary bytes as a layer blob (gzip, zstd or
//! plain tar by magic) flattened as two layers: tar entries, whiteouts,
//! hard links, the flattener's plan. Harness: `cairn::image::fuzz::fuzz_layer`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = cairn::image::fuzz::fuzz_layer(data);
});
