//! Fuzz target `image_archive`: arbitrary bytes as an oci-archive or
//! docker-archive (the outer tar an import indexes and reads in place), every
//! member looked up through the links between members.
//! Harness: `cairn::image::fuzz::fuzz_archive`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cairn::image::fuzz::fuzz_archive(data);
});
