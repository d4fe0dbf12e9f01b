//! Write-then-read check: turn arbitrary bytes into a small tree, write it
//! with [`Writer`], read it back with [`Archive`] and compare every entry.
//!
//! This is the harness of the `roundtrip` fuzz target and of
//! `tests/roundtrip_seeds.rs`. The bytes drive a generator that only produces
//! valid trees (unique names, parents that are directories, hard links to
//! existing non-directories), so any writer error or any difference after
//! reading back is a bug in the writer or the reader: it is returned as
//! `Err` (the fuzz target panics on it).

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::Path;

use super::compress::Compression;
use super::reader::Archive;
use super::writer::{EntryMeta, SpecialKind, Writer, WriterOptions};

/// What the generator put at one path.
#[derive(Debug, Clone)]
enum Expect {
    Dir,
    File(Vec<u8>),
    Symlink(Vec<u8>),
    Special(SpecialKind),
    /// Another name for the entry at this path.
    HardLink(Vec<u8>),
}

#[derive(Debug, Clone)]
struct Entry {
    expect: Expect,
    meta: EntryMeta,
}

/// Pulls values out of the fuzz input; past its end everything reads 0.
struct Bytes<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    fn u16(&mut self) -> u16 {
        u16::from(self.u8()) | (u16::from(self.u8()) << 8)
    }

    fn done(&self) -> bool {
        self.pos >= self.data.len()
    }
}

/// How many entries one input may create: keeps each run fast.
const MAX_ENTRIES: usize = 200;
/// Largest file one op may create (a few blocks at the smallest block size).
const MAX_FILE: usize = 40_000;

fn file_content(b: &mut Bytes) -> Vec<u8> {
    let len = usize::from(b.u16()) % MAX_FILE;
    let kind = b.u8() % 4;
    let seed = b.u8();
    match kind {
        // All zeroes: exercises sparse blocks.
        0 => vec![0; len],
        // A short repeating pattern: compresses well, dedups across files.
        1 => (0..len)
            .map(|i| seed.wrapping_add((i % 7).to_le_bytes()[0]))
            .collect(),
        // Poorly compressible: blocks stored uncompressed.
        2 => {
            let mut x = u32::from(seed) | 1;
            (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    // The low byte.
                    x.to_le_bytes()[0]
                })
                .collect()
        }
        // Zero runs inside data: holes in the middle of a file.
        _ => (0..len)
            .map(|i| if (i / 4096) % 2 == 0 { 0 } else { seed })
            .collect(),
    }
}

fn meta(b: &mut Bytes) -> EntryMeta {
    let mut xattrs = Vec::new();
    if b.u8() % 4 == 0 {
        xattrs.push((b"user.k".to_vec(), vec![b.u8(); usize::from(b.u8() % 20)]));
        if b.u8() % 2 == 0 {
            xattrs.push((b"security.capability".to_vec(), vec![1, 2, 3]));
        }
    }
    EntryMeta {
        mode: b.u16() & 0o7777,
        uid: u32::from(b.u8() % 4) * 1000,
        gid: u32::from(b.u8() % 3) * 100,
        mtime: u32::from(b.u16()) * 1000,
        xattrs,
    }
}

/// Generate a valid tree from `data`: `(options, ordered entries)`.
fn generate(data: &[u8]) -> (WriterOptions, Vec<(Vec<u8>, Entry)>) {
    let mut b = Bytes { data, pos: 0 };
    let block_size = [4096, 8192, 65536, 131_072][usize::from(b.u8() % 4)];
    let compression = match b.u8() % 5 {
        0 => Compression::Zstd { level: 1 },
        1 => Compression::Gzip { level: 1 },
        2 => Compression::Xz { level: 0 },
        3 => Compression::Lz4,
        _ => Compression::None,
    };
    let options = WriterOptions {
        compression,
        block_size,
        mkfs_time: Some(1),
        // Fuzzed thousands of times a second: no fsync.
        durable: false,
    };
    let mut dirs: Vec<Vec<u8>> = vec![Vec::new()];
    let mut linkable: Vec<Vec<u8>> = Vec::new();
    let mut entries: Vec<(Vec<u8>, Entry)> = Vec::new();
    let mut taken = std::collections::BTreeSet::new();
    while !b.done() && entries.len() < MAX_ENTRIES {
        let op = b.u8() % 7;
        let parent = dirs[usize::from(b.u8()) % dirs.len()].clone();
        // Names from a small alphabet so lookups and sorting get exercised,
        // plus the occasional 255-byte name.
        let name: Vec<u8> = if b.u8() == 255 {
            vec![b'L'; 255]
        } else {
            format!("n{}", b.u8() % 40).into_bytes()
        };
        let mut path = parent.clone();
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(&name);
        if !taken.insert(path.clone()) {
            continue;
        }
        let entry_meta = meta(&mut b);
        let expect = match op {
            0 => {
                dirs.push(path.clone());
                Expect::Dir
            }
            1 | 2 => {
                linkable.push(path.clone());
                Expect::File(file_content(&mut b))
            }
            3 => {
                linkable.push(path.clone());
                let len = usize::from(b.u8()) + 1;
                Expect::Symlink(vec![b'a' + b.u8() % 26; len])
            }
            4 => {
                linkable.push(path.clone());
                Expect::Special(match b.u8() % 4 {
                    0 => SpecialKind::CharDevice {
                        major: u32::from(b.u8()),
                        minor: u32::from(b.u16()) * 16,
                    },
                    1 => SpecialKind::BlockDevice {
                        major: u32::from(b.u8()),
                        minor: u32::from(b.u8()),
                    },
                    2 => SpecialKind::Fifo,
                    _ => SpecialKind::Socket,
                })
            }
            _ if !linkable.is_empty() => {
                let target = linkable[usize::from(b.u8()) % linkable.len()].clone();
                Expect::HardLink(target)
            }
            _ => {
                taken.remove(&path);
                continue;
            }
        };
        entries.push((
            path,
            Entry {
                expect,
                meta: entry_meta,
            },
        ));
    }
    (options, entries)
}

fn write(path: &Path, options: WriterOptions, entries: &[(Vec<u8>, Entry)]) -> Result<(), String> {
    let mut writer = Writer::create(path, options).map_err(|e| format!("create: {e}"))?;
    for (p, e) in entries {
        let shown = String::from_utf8_lossy(p).into_owned();
        let meta = e.meta.clone();
        match &e.expect {
            Expect::Dir => writer.add_dir(p, meta),
            Expect::File(data) => writer.add_file(p, meta, &mut Cursor::new(data)).map(|_| ()),
            Expect::Symlink(t) => writer.add_symlink(p, meta, t),
            Expect::Special(k) => writer.add_special(p, meta, *k),
            Expect::HardLink(t) => writer.add_hardlink(p, t),
        }
        .map_err(|err| format!("writer refused valid entry {shown}: {err}"))?;
    }
    writer.finish().map_err(|e| format!("finish: {e}"))?;
    Ok(())
}

fn check(archive: &Archive, entries: &[(Vec<u8>, Entry)]) -> Result<(), String> {
    let by_path: BTreeMap<&[u8], &Entry> = entries.iter().map(|(p, e)| (p.as_slice(), e)).collect();
    for (path, entry) in entries {
        let shown = String::from_utf8_lossy(path).into_owned();
        let node = archive
            .lookup_path(path)
            .map_err(|e| format!("{shown}: {e}"))?
            .ok_or_else(|| format!("{shown}: missing after write"))?;
        // A hard link must be the very inode of its target.
        let (entry, target_node) = match &entry.expect {
            Expect::HardLink(target) => {
                let t = archive
                    .lookup_path(target)
                    .map_err(|e| format!("{shown}: {e}"))?
                    .ok_or_else(|| format!("{shown}: link target missing"))?;
                if t.inode_ref() != node.inode_ref() {
                    return Err(format!("{shown}: hard link is a different inode"));
                }
                let e = by_path
                    .get(target.as_slice())
                    .ok_or_else(|| format!("{shown}: target not generated"))?;
                (*e, t)
            }
            _ => (entry, node.clone()),
        };
        let st = archive.stat(&target_node);
        let m = &entry.meta;
        if st.mode & 0o7777 != u32::from(m.mode) || st.uid != m.uid || st.gid != m.gid {
            return Err(format!("{shown}: metadata {st:?} != {m:?}"));
        }
        if st.mtime != i64::from(m.mtime) {
            return Err(format!("{shown}: mtime {} != {}", st.mtime, m.mtime));
        }
        let mut want_x = m.xattrs.clone();
        let mut got_x = archive
            .xattrs(&target_node)
            .map_err(|e| format!("{shown}: {e}"))?;
        want_x.sort();
        got_x.sort();
        if want_x != got_x {
            return Err(format!("{shown}: xattrs differ"));
        }
        let ty = st.mode & libc::S_IFMT;
        match &entry.expect {
            Expect::Dir if ty != libc::S_IFDIR => return Err(format!("{shown}: not a dir")),
            Expect::File(data) => {
                if ty != libc::S_IFREG || st.size != data.len() as u64 {
                    return Err(format!("{shown}: not a file of {} bytes", data.len()));
                }
                let mut got = vec![0; data.len()];
                let mut off = 0;
                while off < got.len() {
                    let n = archive
                        .read_at(&target_node, off as u64, &mut got[off..])
                        .map_err(|e| format!("{shown}: {e}"))?;
                    if n == 0 {
                        return Err(format!("{shown}: short read at {off}"));
                    }
                    off += n;
                }
                if &got != data {
                    return Err(format!("{shown}: content differs"));
                }
            }
            Expect::Symlink(t) => {
                let got = archive
                    .read_link(&target_node)
                    .map_err(|e| format!("{shown}: {e}"))?;
                if &got != t {
                    return Err(format!("{shown}: symlink target differs"));
                }
            }
            Expect::Special(kind) => {
                let (want_ty, rdev) = match *kind {
                    SpecialKind::CharDevice { major, minor } => {
                        (libc::S_IFCHR, libc::makedev(major, minor))
                    }
                    SpecialKind::BlockDevice { major, minor } => {
                        (libc::S_IFBLK, libc::makedev(major, minor))
                    }
                    SpecialKind::Fifo => (libc::S_IFIFO, 0),
                    SpecialKind::Socket => (libc::S_IFSOCK, 0),
                };
                if ty != want_ty || st.rdev != rdev {
                    return Err(format!("{shown}: special {st:?} != {kind:?}"));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Generate a tree from `data`, write it to a temporary file, read it back
/// and compare. `Err` describes the first difference (a bug). With
/// `CAIRN_RT_KEEP` set the image is kept in the temporary directory, to look
/// at it with `unsquashfs`.
pub fn fuzz_roundtrip(data: &[u8]) -> Result<(), String> {
    let (options, entries) = generate(data);
    let dir = tempfile_dir().map_err(|e| format!("temp dir: {e}"))?;
    let image = dir.join("roundtrip.sqfs");
    let result = write(&image, options, &entries).and_then(|()| {
        let archive = Archive::open(&image).map_err(|e| format!("reading back: {e}"))?;
        check(&archive, &entries)
    });
    if std::env::var_os("CAIRN_RT_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

/// A private directory for one round trip (fuzzers run many in parallel).
fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "cairn-roundtrip-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
