//! Hand-corrupted images: each made here from a good mksquashfs image by
//! patching bytes. `cairn unsquash` must fail cleanly on every one: exit
//! 125, a message naming the image, no panic, no hang (run under a
//! timeout), and nothing left at DIR or beside it. The in-process harness
//! (`fuzz_walk`) must return an error for each as well.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use cairn::squashfs::format::InodeBody;
use cairn::squashfs::reader::{Archive, fuzz_walk};

/// A good image with uncompressed metadata and data (`-noI -noD -noF`), so
/// the test can find and patch inodes and directory entries directly.
struct Good {
    bytes: Vec<u8>,
    work: PathBuf,
}

fn good() -> Option<&'static Good> {
    static GOOD: OnceLock<Option<Good>> = OnceLock::new();
    GOOD.get_or_init(|| {
        if !common::require(common::have_tool("mksquashfs"), "mksquashfs") {
            return None;
        }
        let work = common::scratch("unsquash-corrupt");
        let src = work.join("src");
        fs::create_dir_all(src.join("d/sub")).expect("mkdir");
        fs::write(src.join("d/sub/inner"), b"inner\n").expect("write");
        fs::write(src.join("blocks"), vec![b'b'; 200_000]).expect("write");
        fs::write(src.join("small"), b"a small file in a fragment\n").expect("write");
        std::os::unix::fs::symlink("small", src.join("link")).expect("symlink");
        let img = work.join("good.sqfs");
        common::mksquashfs(&src, &img, &["-noI", "-noD", "-noF", "-noX"]);
        let bytes = fs::read(&img).expect("read image");
        Some(Good { bytes, work })
    })
    .as_ref()
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// An offset or size of the small test image, as an index.
fn index(v: u64) -> usize {
    usize::try_from(v).expect("the test image is small")
}

/// A value of the small test image as the u32 field it is patched into.
fn field(v: impl TryInto<u32>) -> u32 {
    v.try_into()
        .unwrap_or_else(|_| panic!("the test image is small"))
}

fn put_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Absolute offset of an inode in an image with uncompressed metadata
/// (each metadata block is a 2-byte header and the raw bytes).
fn inode_pos(bytes: &[u8], a: &Archive, path: &str) -> usize {
    let node = a.lookup_path(path.as_bytes()).expect("lookup").expect(path);
    let r = node.inode_ref();
    index(u64_at(bytes, 64) + r.block_start() + 2 + u64::from(r.offset()))
}

/// Absolute offset of a directory's listing (its first header).
fn listing_pos(bytes: &[u8], a: &Archive, path: &str) -> usize {
    let node = a.lookup_path(path.as_bytes()).expect("lookup").expect(path);
    let InodeBody::Dir(d) = &node.inode().body else {
        panic!("{path} is not a directory")
    };
    index(u64_at(bytes, 72) + u64::from(d.block_start) + 2 + u64::from(d.block_offset))
}

/// Every corruption, by name.
fn corruptions(g: &Good) -> Vec<(&'static str, Vec<u8>)> {
    let good = &g.bytes;
    let a = Archive::from_bytes(good.clone()).expect("the good image opens");
    let used = index(u64_at(good, 40));
    let mut out = Vec::new();
    for (name, cut) in [
        ("truncated-empty", 0),
        ("truncated-50", 50),
        ("truncated-superblock", 96),
        ("truncated-half", used / 2),
        ("truncated-last-byte", used - 1),
    ] {
        out.push((name, good[..cut].to_vec()));
    }
    let patched = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = good.clone();
        f(&mut b);
        b
    };
    out.push(("bad-magic", patched(&|b| b[0] = b'X')));
    out.push(("bad-version", patched(&|b| put_u16(b, 28, 5))));
    out.push(("bad-block-log", patched(&|b| put_u16(b, 22, 12))));
    out.push((
        "directory-table-past-end",
        patched(&|b| put_u64(b, 72, used as u64 + 4096)),
    ));
    out.push((
        "id-table-past-end",
        patched(&|b| put_u64(b, 48, u64::MAX - 7)),
    ));
    out.push(("inode-count-huge", patched(&|b| put_u32(b, 4, u32::MAX))));
    // d's only entry is "sub": point it at d itself, then at the root.
    let d = a.lookup_path(b"d").expect("lookup").expect("d").inode_ref();
    let root = a.root().expect("root").inode_ref();
    let listing = listing_pos(good, &a, "d");
    for (name, target) in [
        ("dir-entry-points-at-itself", d),
        ("dir-entry-points-at-root", root),
    ] {
        out.push((
            name,
            patched(&|b| {
                put_u32(b, listing + 4, field(target.block_start()));
                put_u16(b, listing + 12, target.offset());
            }),
        ));
    }
    let blocks = inode_pos(good, &a, "blocks");
    // Inode header: type, mode, uid_idx at +4, gid_idx at +6.
    out.push((
        "uid-index-out-of-range",
        patched(&|b| put_u16(b, blocks + 4, 200)),
    ));
    // Basic file inode: blocks_start +16, frag +20, frag offset +24,
    // size +28, then the block size words from +32.
    out.push((
        "block-size-word-too-big",
        patched(&|b| put_u32(b, blocks + 32, (1 << 17) + 1)),
    ));
    out.push((
        "block-runs-past-end",
        patched(&|b| put_u32(b, blocks + 16, field(used - 10))),
    ));
    let small = inode_pos(good, &a, "small");
    out.push((
        "fragment-index-out-of-range",
        patched(&|b| put_u32(b, small + 20, 9999)),
    ));
    out.push((
        "fragment-offset-out-of-range",
        patched(&|b| put_u32(b, small + 24, 1 << 20)),
    ));
    out.push(("inode-type-unknown", patched(&|b| put_u16(b, small, 99))));
    out.push((
        "symlink-target-huge",
        patched(&|b| {
            let l = inode_pos(good, &a, "link");
            put_u32(b, l + 20, u32::MAX);
        }),
    ));
    out.push((
        "metadata-length-zero",
        patched(&|b| {
            let at = index(u64_at(good, 64));
            put_u16(b, at, 0x8000);
        }),
    ));
    out.push((
        "dir-listing-size-huge",
        patched(&|b| {
            // The root's basic dir inode: file_size (u16) at +24.
            let r = index(u64_at(good, 64) + root.block_start() + 2 + u64::from(root.offset()));
            put_u16(b, r + 24, 0xffff);
        }),
    ));
    out.push((
        "entry-name-with-slash",
        patched(&|b| {
            // The first entry name in d's listing ("sub") becomes "s/b".
            b[listing + 12 + 8 + 1] = b'/';
        }),
    ));
    out.push((
        "entry-name-dotdot",
        patched(&|b| {
            // "sub" (stored length - 1 = 2) becomes "..".
            put_u16(b, listing + 12 + 6, 1);
            b[listing + 12 + 8] = b'.';
            b[listing + 12 + 9] = b'.';
        }),
    ));
    out
}

#[test]
fn harness_rejects_every_corruption_in_process() {
    let Some(g) = good() else { return };
    assert!(fuzz_walk(&g.bytes).is_ok(), "the good image must pass");
    for (name, bytes) in corruptions(g) {
        let r = fuzz_walk(&bytes);
        assert!(r.is_err(), "{name}: the harness accepted it: {r:?}");
    }
}

fn leftovers(parent: &Path, stem: &str) -> Vec<String> {
    fs::read_dir(parent)
        .expect("list")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(stem))
        .collect()
}

#[test]
fn unsquash_fails_cleanly_on_every_corruption() {
    let Some(g) = good() else { return };
    let dir = common::scratch("corrupt-images");
    for (name, bytes) in corruptions(g) {
        let img = dir.join(format!("{name}.sqfs"));
        fs::write(&img, &bytes).expect("write image");
        fs::set_permissions(&img, fs::Permissions::from_mode(0o644)).expect("chmod");
        for who in common::callers() {
            let stem = format!("out-{name}-{}", who.label());
            let dst = dir.join(&stem);
            let out = common::output(
                common::command_as(&who, "timeout")
                    .arg("60")
                    .arg(common::cairn_bin())
                    .arg("unsquash")
                    .arg(&img)
                    .arg(&dst),
            );
            let err = common::stderr_of(&out);
            assert_eq!(
                out.status.code(),
                Some(125),
                "{name} as {}: expected exit 125 (124 = hang)\n{err}",
                who.label()
            );
            assert!(
                err.contains(&img.display().to_string()),
                "{name}: message does not name the image: {err}"
            );
            assert!(!err.contains("panicked"), "{name}: {err}");
            assert!(!dst.exists(), "{name}: {} left behind", dst.display());
            assert!(
                leftovers(&dir, &stem).is_empty(),
                "{name}: temporary files left: {:?}",
                leftovers(&dir, &stem)
            );
        }
    }
    // The uncorrupted image still extracts, so the failures above come from
    // the corruptions, not from the setup.
    let good_img = g.work.join("good.sqfs");
    let dst = dir.join("good-out");
    let out = common::output(
        common::cairn_as(&common::Who::Me)
            .arg("unsquash")
            .arg(&good_img)
            .arg(&dst),
    );
    common::assert_success(&out, "unsquash of the good image");
    assert_eq!(
        fs::read(dst.join("d/sub/inner")).expect("inner"),
        b"inner\n"
    );
}

#[test]
fn missing_image_and_not_squashfs_exit_125() {
    let dir = common::scratch("unsquash-bad-input");
    let not_sqfs = dir.join("not.sqfs");
    fs::write(&not_sqfs, vec![0u8; 4096]).expect("write");
    for img in [dir.join("missing.sqfs"), not_sqfs] {
        let out = common::output(
            common::cairn_as(&common::Who::Me)
                .arg("unsquash")
                .arg(&img)
                .arg(dir.join("out")),
        );
        assert_eq!(out.status.code(), Some(125));
        assert!(common::stderr_of(&out).contains(&img.display().to_string()));
        assert!(!dir.join("out").exists());
    }
}
