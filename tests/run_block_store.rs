//! The FUSE server's block store, end to end, as root and as the ordinary
//! user: a run leaves the blocks it decompressed in the caller's own store
//! (a 0700 directory of theirs, a 0600 file), the next run reads the same
//! bytes through it, a damaged store costs nothing but a decompression,
//! and a store directory that is not the caller's private one is not used.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

fn runners() -> Vec<Who> {
    if !require(Path::new("/dev/fuse").exists(), "/dev/fuse") {
        return Vec::new();
    }
    common::runners("-Urm")
}

/// `md5sum /bin/busybox` inside the busybox image, through FUSE, with the
/// block store at `store`.
fn busybox_sum(who: &Who, store: &Path) -> Output {
    let mut cmd = cairn_as(who);
    cmd.env("CAIRN_BLOCK_CACHE", store)
        .args(["run", "--mount", "fuse"])
        .arg(busybox_sqfs())
        .args(["--", "md5sum", "/bin/busybox"]);
    output_within(&mut cmd, 60)
}

fn host_sum() -> String {
    let out = output(Command::new("md5sum").arg(busybox_rootfs().join("bin/busybox")));
    assert_success(&out, "md5sum on the host");
    stdout_of(&out)
        .split_whitespace()
        .next()
        .expect("a sum")
        .to_owned()
}

fn sum_of(out: &Output, what: &str) -> String {
    assert_success(out, what);
    stdout_of(out)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// The store files in `dir` (the server writes them once the mount is
/// gone, just after cairn's exit).
fn store_files(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "blocks"))
                .collect()
        })
        .unwrap_or_default()
}

fn uid_of(who: &Who) -> u32 {
    match who {
        Who::Me => nix::unistd::geteuid().as_raw(),
        Who::User(u) => u.uid,
    }
}

#[test]
fn a_second_run_reads_what_the_first_decompressed() {
    let want = host_sum();
    for who in runners() {
        let store = scratch("block-store").join("cache/blocks");
        assert_eq!(sum_of(&busybox_sum(&who, &store), "first run"), want);
        assert!(
            wait_until(20, || store_files(&store).len() == 1),
            "{who:?}: no store file in {}",
            store.display()
        );
        let file = store_files(&store).remove(0);
        let dir_meta = fs::metadata(&store).expect("store dir");
        let file_meta = fs::metadata(&file).expect("store file");
        assert_eq!(dir_meta.mode() & 0o777, 0o700, "{who:?}");
        assert_eq!(file_meta.mode() & 0o777, 0o600, "{who:?}");
        assert_eq!(dir_meta.uid(), uid_of(&who), "{who:?}");
        assert_eq!(file_meta.uid(), uid_of(&who), "{who:?}");
        // busybox is ~2 MB of 128 KiB blocks: most of it was read.
        assert!(file_meta.len() > 1 << 20, "{who:?}: {}", file_meta.len());

        assert_eq!(sum_of(&busybox_sum(&who, &store), "second run"), want);

        // Damage every block: the checksums refuse them, the image is
        // decompressed again, the job sees the right bytes.
        let mut bytes = fs::read(&file).expect("read store");
        let end = bytes.len() - bytes.len() / 64;
        for b in &mut bytes[64..end] {
            *b ^= 0xa5;
        }
        fs::write(&file, &bytes).expect("damage store");
        assert_eq!(sum_of(&busybox_sum(&who, &store), "damaged store"), want);
        // That run wrote the blocks again: the store is whole.
        assert!(
            wait_until(20, || fs::read(&file).is_ok_and(|now| now != bytes)),
            "{who:?}: the damaged store was not rewritten"
        );
        assert_eq!(sum_of(&busybox_sum(&who, &store), "repaired store"), want);
        // Nothing but the store file and the image's kept facts (what
        // `prepare` learned of it, see run::facts) is left in the
        // directory, both the user's own and closed to others.
        assert!(wait_until(20, || {
            fs::read_dir(&store).expect("store dir").count() == 2
        }));
        let facts: Vec<_> = fs::read_dir(&store)
            .expect("store dir")
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "facts"))
            .collect();
        assert_eq!(facts.len(), 1, "{who:?}: one facts file");
        let meta = facts[0].metadata().expect("facts file");
        assert_eq!(meta.mode() & 0o777, 0o600, "{who:?}");
        assert_eq!(meta.uid(), uid_of(&who), "{who:?}");
    }
}

#[test]
fn a_store_directory_open_to_others_is_not_used() {
    let want = host_sum();
    for who in runners() {
        let store = scratch("block-store-open").join("blocks");
        fs::create_dir(&store).expect("mkdir");
        fs::set_permissions(&store, fs::Permissions::from_mode(0o777)).expect("chmod");
        assert_eq!(sum_of(&busybox_sum(&who, &store), "open store dir"), want);
        // Give a server that would write one the time to do it.
        std::thread::sleep(std::time::Duration::from_millis(500));
        assert!(store_files(&store).is_empty(), "{who:?} wrote into it");
    }
}

#[test]
fn off_runs_without_a_store() {
    let want = host_sum();
    for who in runners() {
        let mut cmd = cairn_as(&who);
        cmd.env("CAIRN_BLOCK_CACHE", "off")
            .args(["run", "--mount", "fuse"])
            .arg(busybox_sqfs())
            .args(["--", "md5sum", "/bin/busybox"]);
        assert_eq!(
            sum_of(&output_within(&mut cmd, 60), "block cache off"),
            want
        );
    }
}
