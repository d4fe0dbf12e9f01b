//! Fuzz target `image_oci`: arbitrary bytes as OCI index/manifest/config,
//! docker manifest.json, cairn's image.json, a source reference and a
//! platform. Harness: `cairn::image::fuzz::fuzz_documents`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cairn::image::fuzz::fuzz_documents(data);
});
