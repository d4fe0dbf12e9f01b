//! The `site_config` fuzz target's harness, run in CI over the files of
//! site-config/ and their truncations and byte flips: the parser and the
//! resolver never panic on a broken site or user file.

mod common;

use std::fs;
use std::path::Path;

use cairn::config::fuzz::fuzz_site_config;

fn seeds() -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("site-config");
    let mut files = vec![root.join("cairn.toml")];
    let examples = fs::read_dir(root.join("examples")).expect("site-config/examples");
    files.extend(examples.flatten().map(|e| e.path()));
    files.iter().map(|f| fs::read(f).expect("seed")).collect()
}

#[test]
fn site_files_and_their_mutations_never_panic() {
    let mut rng = common::XorShift::new(0x2545_f491_4f6c_dd1d);
    for seed in seeds() {
        fuzz_site_config(&seed);
        for cut in (0..seed.len()).step_by(7) {
            fuzz_site_config(&seed[..cut]);
        }
        for _ in 0..300 {
            let state = rng.next_u64();
            let mut mutated = seed.clone();
            if mutated.is_empty() {
                break;
            }
            let at = usize::try_from(state % mutated.len() as u64).expect("below len");
            let bytes = b"[]=\"'.\n#0a-_:/";
            mutated[at] = bytes[(state >> 32) as usize % bytes.len()];
            fuzz_site_config(&mutated);
        }
    }
}

#[test]
fn hostile_shapes_never_panic() {
    let deep = format!("a = {}1{}", "[".repeat(5000), "]".repeat(5000));
    for text in [
        deep.as_str(),
        "[hooks.mpi]\nbinds = [\"rel:/x\", \"/a:/../..\"]\ndevices = [\"/dev/x:/a:/b\"]\n",
        "[policy]\nimage_paths = [\"\", \"/\", \"//..\"]\nmount_modes = [\"floppy\"]\n",
        "[defaults]\nfuse_threads = 18446744073709551615\ncache_dir = \"~nobody/../\"\n",
        "[defaults.env.set]\n\"\" = \"x\"\n[defaults.join]\nlinger_ms = -1\n",
    ] {
        fuzz_site_config(text.as_bytes());
    }
}
