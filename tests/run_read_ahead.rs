//! The FUSE server's tree read-ahead, end to end, as root and as the
//! ordinary user: files read in tree order bring the next ones into the
//! page cache before the job opens them (seen with `fincore` inside the
//! container), reads in another order bring nothing, and whatever was
//! pushed is byte for byte the image's file, whatever its size or shape.

mod common;

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::*;

fn runners() -> Vec<Who> {
    if !require(Path::new("/dev/fuse").exists(), "/dev/fuse")
        || !require(have_tool("fincore"), "fincore (util-linux)")
    {
        return Vec::new();
    }
    common::runners("-Urm")
}

/// Bytes of file number `i`: different in every file, so a push into the
/// wrong file shows.
fn contents(i: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|k| (k * 31 + i * 7 + k / 251).to_le_bytes()[0])
        .collect()
}

/// The image: busybox, `fincore` with its libraries, and under /t
/// - `a/`: 40 files of 4000 bytes (`f00`..`f39`) with a subdirectory
///   `a/f19sub/` of 3 files in the middle of them;
/// - `mixed/`: files whose ends fall everywhere a push could get wrong
///   (empty, one byte, page and block edges, several blocks, a sparse one).
fn image() -> &'static Path {
    static IMG: OnceLock<PathBuf> = OnceLock::new();
    IMG.get_or_init(|| {
        let dir = scratch("read-ahead");
        let img = dir.join("read-ahead.sqfs");
        busybox_sqfs_with(
            &dir.join("root"),
            &img,
            &["-comp", "gzip"],
            add_fincore_and_trees,
        );
        let out = output(Command::new("chmod").args(["-R", "a+rX"]).arg(&dir));
        assert_success(&out, "chmod the image");
        img
    })
}

/// What [`image`] adds to the busybox rootfs at `root`: `fincore` with its
/// libraries, and the trees `t/a` and `t/mixed`.
fn add_fincore_and_trees(root: &Path) {
    let fincore = Command::new("sh")
        .arg("-c")
        .arg("command -v fincore")
        .output()
        .expect("sh");
    let fincore = String::from_utf8_lossy(&fincore.stdout).trim().to_owned();
    copy_executable(Path::new(&fincore), &root.join("usr/bin/fincore"));
    let ldd = output(Command::new("ldd").arg(&fincore));
    for lib in stdout_of(&ldd)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
    {
        let to = root.join(lib.trim_start_matches('/'));
        fs::create_dir_all(to.parent().expect("a parent")).expect("mkdir lib dir");
        fs::copy(lib, &to).expect("copy a library");
    }
    let a = root.join("t/a");
    fs::create_dir_all(a.join("f19sub")).expect("mkdir t/a");
    for i in 0..40 {
        fs::write(a.join(format!("f{i:02}")), contents(i, 4000)).expect("write");
    }
    for i in 0..3 {
        fs::write(a.join(format!("f19sub/g{i}")), contents(100 + i, 5000)).expect("write");
    }
    let mixed = root.join("t/mixed");
    fs::create_dir_all(&mixed).expect("mkdir t/mixed");
    let sizes = [
        0,
        1,
        4095,
        4096,
        4097,
        131_071,
        131_072,
        131_073,
        300_000,
        1 << 20,
    ];
    for (i, len) in sizes.into_iter().enumerate() {
        fs::write(mixed.join(format!("m{i:02}")), contents(200 + i, len)).expect("write");
    }
    // 1 MiB with 4 KiB of data in the middle: holes around it.
    let mut sparse = fs::File::create(mixed.join("sparse")).expect("create");
    sparse.set_len(1 << 20).expect("truncate");
    sparse.seek(SeekFrom::Start(500_000)).expect("seek");
    sparse.write_all(&contents(300, 4096)).expect("write");
}

/// `script` in the image through FUSE as uid 0 in the container, with the
/// block store off (every push decompresses) or in a store of its own.
/// As uid 0 the caller owns the image's files: mincore(2), under
/// `fincore`, tells the page cache's contents only to a file's owner (to
/// anyone else it says every page is there).
fn run(who: &Who, store: Option<&Path>, script: &str) -> String {
    let mut cmd = cairn_as(who);
    match store {
        Some(dir) => cmd.env("CAIRN_BLOCK_CACHE", dir),
        None => cmd.env("CAIRN_BLOCK_CACHE", "off"),
    };
    cmd.args(["run", "--mount", "fuse", "--uid", "0", "--gid", "0"])
        .arg(image())
        .args(["--", "sh", "-c", script]);
    let out = output_within(&mut cmd, 60);
    assert_success(&out, script);
    stdout_of(&out)
}

/// Bytes of each file in the page cache, by `fincore` (a file not read
/// has none unless something pushed it).
fn resident(report: &str) -> Vec<(String, u64)> {
    report
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let bytes = words.next()?.parse().ok()?;
            Some((words.next()?.to_owned(), bytes))
        })
        .collect()
}

const FINCORE: &str = "fincore --noheadings --bytes --output RES,FILE";

#[test]
fn files_read_in_tree_order_bring_the_next_ones_into_the_page_cache() {
    for who in runners() {
        // `ls` first, as any tree reader lists a directory before it reads
        // its files: the kernel only takes pages for inodes it knows.
        let script = format!(
            "ls /t/a >/dev/null && cat /t/a/f00 /t/a/f01 >/dev/null && sleep 1 && \
             {FINCORE} /t/a/f02 /t/a/f04 /t/a/f30"
        );
        let got = resident(&run(&who, None, &script));
        let want = [("/t/a/f02", true), ("/t/a/f04", true), ("/t/a/f30", false)];
        for ((file, bytes), (name, pushed)) in got.iter().zip(want) {
            assert_eq!(file, name);
            assert_eq!(
                *bytes > 0,
                pushed,
                "{} {file}: {bytes} bytes in the page cache ({got:?})",
                who.label()
            );
        }
        assert_eq!(got.len(), want.len(), "{got:?}");
    }
}

#[test]
fn files_read_out_of_order_bring_nothing() {
    for who in runners() {
        let script = format!(
            "ls /t/a >/dev/null && cat /t/a/f20 /t/a/f10 /t/a/f30 /t/a/f05 >/dev/null && \
             sleep 1 && {FINCORE} /t/a/f06 /t/a/f11 /t/a/f21 /t/a/f31"
        );
        let got = resident(&run(&who, None, &script));
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(
            got.iter().all(|(_, bytes)| *bytes == 0),
            "{}: {got:?}",
            who.label()
        );
    }
}

#[test]
fn what_a_tree_read_gets_is_the_image_byte_for_byte() {
    let root = image().parent().expect("a parent").join("root/t");
    let host = output(
        Command::new("sh")
            .arg("-c")
            .arg("find . -type f -exec md5sum {} + | sort -k 2")
            .current_dir(&root),
    );
    assert_success(&host, "md5sum on the host");
    let want = stdout_of(&host);
    assert_eq!(want.lines().count(), 54, "{want}");
    for who in runners() {
        let store = scratch("read-ahead-store").join("blocks");
        // Store off, then a first and a second run with a store (the
        // second pushes stored blocks too).
        for (what, store) in [
            ("off", None),
            ("first", Some(&store)),
            ("second", Some(&store)),
        ] {
            let got = run(
                &who,
                store.map(PathBuf::as_path),
                "cd /t && find . -type f -exec md5sum {} + | sort -k 2",
            );
            assert_eq!(got, want, "{} store {what}", who.label());
        }
    }
}
