//! The reader's library API on real mksquashfs images: reads at random
//! offsets equal the source bytes, lookup in a directory big enough to have
//! a directory index, path lookup, stat/readlink/xattrs against the source
//! tree, and concurrent reads from several threads sharing one `Archive`.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

use cairn::squashfs::format::InodeBody;
use cairn::squashfs::reader::{Archive, CacheSizes, Node};

const BIG_DIR_ENTRIES: usize = 5000;

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    common::XorShift::new(seed).bytes(len)
}

/// Source tree and images (default 128 KiB zstd, and 4 KiB gzip), built once.
struct Fixture {
    src: PathBuf,
    images: Vec<PathBuf>,
}

fn fixture() -> Option<&'static Fixture> {
    static FIX: OnceLock<Option<Fixture>> = OnceLock::new();
    FIX.get_or_init(|| {
        if !common::require(common::have_tool("mksquashfs"), "mksquashfs") {
            return None;
        }
        let work = common::scratch("reader-api");
        let src = work.join("src");
        fs::create_dir_all(src.join("big")).expect("mkdir");
        fs::create_dir_all(src.join("a/b/c")).expect("mkdir");
        fs::write(src.join("random.bin"), pseudo_random(2_500_000, 42)).expect("write");
        // Mixed: compressible runs and random bytes, tail in a fragment.
        let mut mixed = vec![0u8; 700_000];
        mixed.extend(pseudo_random(300_123, 7));
        fs::write(src.join("mixed.bin"), &mixed).expect("write");
        {
            let f = fs::File::create(src.join("sparse")).expect("sparse");
            use std::os::unix::fs::FileExt;
            f.write_all_at(b"data in the middle", 3 << 20)
                .expect("write");
            f.set_len(6 << 20).expect("len");
        }
        for i in 0..BIG_DIR_ENTRIES {
            fs::write(src.join(format!("big/name-{i:06}")), i.to_string()).expect("big");
        }
        fs::write(src.join("a/b/c/deep.txt"), b"deep\n").expect("deep");
        std::os::unix::fs::symlink("a/b/c/deep.txt", src.join("link")).expect("symlink");
        fs::set_permissions(src.join("a/b"), fs::Permissions::from_mode(0o750)).expect("chmod");
        let out = common::output(
            Command::new("setfattr")
                .args(["-n", "user.k", "-v", "v1"])
                .arg(src.join("a/b/c/deep.txt")),
        );
        common::assert_success(&out, "setfattr");
        let mut images = Vec::new();
        for (name, opts) in [
            ("zstd.sqfs", &["-comp", "zstd"][..]),
            ("gzip-4k.sqfs", &["-comp", "gzip", "-b", "4K"][..]),
        ] {
            let img = work.join(name);
            common::mksquashfs(&src, &img, opts);
            images.push(img);
        }
        Some(Fixture { src, images })
    })
    .as_ref()
}

fn file_node(a: &Archive, path: &str) -> Node {
    a.lookup_path(path.as_bytes())
        .expect("lookup")
        .unwrap_or_else(|| panic!("{path} not found"))
}

#[test]
fn archive_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Archive>();
    check::<Node>();
}

#[test]
fn random_offset_reads_match_the_source() {
    let Some(fix) = fixture() else { return };
    for img in &fix.images {
        let a = Archive::open(img).expect("open");
        for name in ["random.bin", "mixed.bin", "sparse", "a/b/c/deep.txt"] {
            let want = fs::read(fix.src.join(name)).expect("source");
            let node = file_node(&a, name);
            assert_eq!(a.stat(&node).size, want.len() as u64);
            let mut seed = 99u64;
            for _ in 0..300 {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let off = (seed >> 20) as usize % (want.len() + 10);
                let len = ((seed >> 8) as usize % 9000) + 1;
                let mut buf = vec![0xAAu8; len];
                let n = a.read_at(&node, off as u64, &mut buf).expect("read_at");
                let end = (off + len).min(want.len());
                let expect = if off >= want.len() {
                    &[][..]
                } else {
                    &want[off..end]
                };
                assert_eq!(
                    n,
                    expect.len(),
                    "{name} at {off}+{len} in {}",
                    img.display()
                );
                assert_eq!(&buf[..n], expect, "{name} at {off}+{len}");
            }
            // A whole sequential read in 64 KiB pieces.
            let mut all = Vec::new();
            let mut buf = vec![0u8; 65536];
            loop {
                let n = a.read_at(&node, all.len() as u64, &mut buf).expect("read");
                if n == 0 {
                    break;
                }
                all.extend_from_slice(&buf[..n]);
            }
            assert!(all == want, "{name} sequential read differs");
        }
    }
}

#[test]
fn lookup_in_a_big_directory_uses_the_index() {
    let Some(fix) = fixture() else { return };
    for img in &fix.images {
        let a = Archive::open(img).expect("open");
        let big = file_node(&a, "big");
        match &big.inode().body {
            InodeBody::Dir(d) => assert!(
                !d.index.is_empty(),
                "a {BIG_DIR_ENTRIES}-entry directory should have an index"
            ),
            other => panic!("big is {other:?}"),
        }
        let entries = a.read_dir(&big).expect("read_dir");
        assert_eq!(entries.len(), BIG_DIR_ENTRIES);
        for e in &entries {
            let n = a.lookup(&big, &e.name).expect("lookup").expect("found");
            assert_eq!(n.inode_ref(), e.inode_ref);
            assert_eq!(a.stat(&n).ino, u64::from(e.ino));
        }
        for missing in [&b"a"[..], b"name-", b"name-0025005", b"name-999999", b"zzz"] {
            assert!(a.lookup(&big, missing).expect("lookup").is_none());
        }
        let n = file_node(&a, "big/name-004321");
        let mut buf = [0u8; 16];
        let len = a.read_at(&n, 0, &mut buf).expect("read");
        assert_eq!(&buf[..len], b"4321");
    }
}

#[test]
fn paths_stat_links_and_xattrs_match_the_source() {
    let Some(fix) = fixture() else { return };
    let a = Archive::open(&fix.images[0]).expect("open");
    assert!(a.lookup_path(b"/a/b/nothing").expect("lookup").is_none());
    assert!(a.lookup_path(b"random.bin/x").expect("lookup").is_none());
    let deep = file_node(&a, "/a/b/../b/./c/deep.txt");
    for name in ["a/b", "a/b/c/deep.txt", "link", "sparse", "big"] {
        let node = file_node(&a, name);
        let st = a.stat(&node);
        let meta = fs::symlink_metadata(fix.src.join(name)).expect("lstat");
        assert_eq!(st.mode, meta.mode(), "{name}");
        assert_eq!(st.uid, meta.uid(), "{name}");
        assert_eq!(st.gid, meta.gid(), "{name}");
        assert_eq!(st.mtime, meta.mtime(), "{name}");
        if !node.is_dir() {
            assert_eq!(st.size, meta.len(), "{name}");
        }
    }
    let link = file_node(&a, "link");
    assert_eq!(a.read_link(&link).expect("readlink"), b"a/b/c/deep.txt");
    assert!(a.read_link(&deep).is_err());
    assert_eq!(
        a.xattrs(&deep).expect("xattrs"),
        vec![(b"user.k".to_vec(), b"v1".to_vec())]
    );
    assert!(a.xattrs(&link).expect("xattrs").is_empty());
    let root = a.root().expect("root");
    let names: Vec<_> = a
        .read_dir(&root)
        .expect("readdir")
        .into_iter()
        .map(|e| String::from_utf8_lossy(&e.name).into_owned())
        .collect();
    assert_eq!(
        names,
        ["a", "big", "link", "mixed.bin", "random.bin", "sparse"]
    );
}

#[test]
fn concurrent_reads_from_several_threads() {
    let Some(fix) = fixture() else { return };
    for caches in [
        CacheSizes {
            metadata_blocks: 4,
            fragments: 1,
            data_blocks: 2,
        },
        CacheSizes::default(),
    ] {
        let a = Arc::new(Archive::open_with(&fix.images[1], caches).expect("open"));
        let src: &'static Path = &fix.src;
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let a = Arc::clone(&a);
                std::thread::spawn(move || {
                    let want = fs::read(src.join("random.bin")).expect("source");
                    let node = file_node(&a, "random.bin");
                    let mut seed = t + 1;
                    for _ in 0..400 {
                        seed = seed
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        let off = (seed >> 16) as usize % want.len();
                        let mut buf = [0u8; 4096];
                        let n = a.read_at(&node, off as u64, &mut buf).expect("read");
                        assert_eq!(&buf[..n], &want[off..(off + 4096).min(want.len())]);
                        let name = format!("name-{:06}", (seed >> 40) as usize % BIG_DIR_ENTRIES);
                        let big = file_node(&a, "big");
                        assert!(a.lookup(&big, name.as_bytes()).expect("lookup").is_some());
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("reader thread panicked");
        }
    }
}
