//! Replays the image fuzz targets' seed corpora (fuzz/corpus-seed/image_*, registry)
//! through the same harnesses the fuzz targets call, plus a deterministic
//! mutation loop over each seed: no input may panic or hang. Also pins what
//! the seeds must give: good layers flatten, hostile ones are refused.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use cairn::image::archive::{ArchiveIndex, BlobLocation};
use cairn::image::fuzz::{fuzz_archive, fuzz_documents, fuzz_layer, fuzz_registry};

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus-seed")
        .join(target);
    let mut paths: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("entry").path())
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no seeds in {}", dir.display());
    paths
        .into_iter()
        .map(|p| {
            let name = p.file_name().expect("name").to_string_lossy().into_owned();
            (name, fs::read(&p).expect("read seed"))
        })
        .collect()
}

/// Cheap deterministic mutations: byte flips, truncations, duplications.
fn mutations(data: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rng = common::XorShift::new(0x9e37_79b9_7f4a_7c15 ^ data.len() as u64);
    for _ in 0..24 {
        let x = rng.next_u64();
        if data.is_empty() {
            break;
        }
        let i = usize::try_from(x % data.len() as u64).expect("below len");
        let mut m = data.to_vec();
        m[i] ^= (x >> 32).to_le_bytes()[0] | 1;
        out.push(m);
        out.push(data[..i].to_vec());
    }
    let mut doubled = data.to_vec();
    doubled.extend_from_slice(data);
    out.push(doubled);
    out
}

#[test]
fn layer_seeds_give_their_outcome_and_survive_mutation() {
    for (name, data) in seeds("image_layer") {
        let result = fuzz_layer(&data);
        if name.starts_with("good") || name == "whiteouts.tar" || name == "long.tar" {
            assert!(result.is_ok(), "{name}: {:?}", result.err());
        }
        if name.starts_with("hostile") || name.starts_with("truncated") {
            assert!(result.is_err(), "{name} must be refused");
        }
        for m in mutations(&data) {
            let _ = fuzz_layer(&m);
        }
    }
}

#[test]
fn archive_seeds_index_as_an_import_reads_them_and_survive_mutation() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus-seed/image_archive");
    let open = |name: &str| ArchiveIndex::open(&dir.join(name));
    let docker = open("docker-archive.tar").expect("docker-archive.tar");
    // Layers docker save links from other directories, by symlink and hard link.
    let layer = docker.location("aaa/layer.tar").expect("aaa/layer.tar");
    for linked in ["bbb/layer.tar", "ccc/layer.tar", "./bbb/layer.tar"] {
        assert_eq!(docker.location(linked).as_ref(), Some(&layer), "{linked}");
    }
    assert!(
        matches!(layer, BlobLocation::Member { size: 54, .. }),
        "{layer:?}"
    );
    for name in ["oci-archive.tar", "oci-archive-dot-pax.tar"] {
        let oci = open(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(oci.contains("index.json"), "{name}");
    }
    for name in ["long-names-gnu.tar", "long-names-pax.tar"] {
        let long = open(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(long.contains("short"), "{name}");
    }
    let hostile = open("links-hostile.tar").expect("links-hostile.tar");
    for name in ["a", "b", "up", "hl"] {
        assert!(!hostile.contains(name), "{name} leads somewhere");
    }
    assert!(
        open("dotdot-name.tar").is_err(),
        "a member named with .. was indexed"
    );
    for (_, data) in seeds("image_archive") {
        fuzz_archive(&data);
        for m in mutations(&data) {
            fuzz_archive(&m);
        }
    }
}

#[test]
fn document_seeds_survive_mutation() {
    for (_, data) in seeds("image_oci") {
        fuzz_documents(&data);
        for m in mutations(&data) {
            fuzz_documents(&m);
        }
    }
}

#[test]
fn registry_seeds_survive_mutation() {
    for (_, data) in seeds("registry") {
        fuzz_registry(&data);
        for m in mutations(&data) {
            fuzz_registry(&m);
        }
    }
}
