//! A flattened image back into ONE OCI layer: the squashfs tree written as
//! a POSIX (ustar + PAX) tar stream, gzip-compressed, with the layer's
//! `diff_id` (sha256 of the tar) and blob digest (sha256 of the gzip)
//! computed while it streams to its file. `cairn push` sends the result.
//!
//! The stream is deterministic: the same image gives the same bytes. The
//! walk follows the squashfs directory order (sorted by name, as the format
//! requires), every header field comes from the image (no clock, no host
//! user names), PAX headers all have one fixed name, and the gzip header
//! holds no time or file name.
//!
//! What an entry carries: type, mode with its setuid/setgid/sticky bits,
//! numeric uid/gid, mtime, size, symlink target, device numbers and xattrs
//! (PAX `SCHILY.xattr.NAME`, as docker, containerd and umoci read them).
//! A path or link target longer than the ustar field, an id or a size past
//! what the octal fields hold, go in PAX records. An inode reached under
//! several names is written once, then as tar hard links to its first name.
//! The root directory is written as `./`, so its owner, mode and mtime
//! travel too.
//!
//! Left out, on purpose:
//! - `/.cairn`, cairn's own metadata: the image config carries what it says,
//!   and `cairn import`/`cairn pull` drop a layer's `.cairn` anyway;
//! - sockets, with a warning: tar has no type for them (Go's `archive/tar`,
//!   which docker and umoci use, refuses them too), and a socket is only
//!   the leftover name of a server that ran while the image was built.
//!
//! Refused: a name beginning with `.wh.` (possible in an image imported
//! from a directory), which every consumer of the layer would take for a
//! whiteout and not as the file it is.

use std::collections::HashMap;
use std::io::{self, Write};

use flate2::Compression;

use super::digest::{Digest, HashingWriter};
use super::flatten::is_cairn_own;
use super::pargz::ParallelGz;
use super::tarwrite::{EntryHeader, TarWriter};
use crate::squashfs::format::{InodeBody, InodeRef, decode_rdev};
use crate::squashfs::reader::{Archive, Node, ReadError, WalkEvent, WalkLimits};

/// How much file data is read from the image at a time.
const READ_CHUNK: usize = 128 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("writing the layer")]
    Write(#[from] io::Error),
    #[error(
        "/{path} is named like a whiteout (.wh.*): a layer cannot carry it as a file; rename it in the image"
    )]
    WhiteoutName { path: String },
    #[error("/{path}: the image gives {expected} bytes but only {actual} could be read")]
    ShortFile {
        path: String,
        expected: u64,
        actual: u64,
    },
}

/// What [`write_layer`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedLayer {
    /// sha256 of the uncompressed tar (the config's `rootfs.diff_ids`).
    pub diff_id: Digest,
    /// Bytes of the uncompressed tar.
    pub tar_size: u64,
    /// sha256 of the gzip stream (the blob's digest in the manifest).
    pub digest: Digest,
    /// Bytes of the gzip stream.
    pub size: u64,
    /// Entries written (hard links included, the root's `./` too).
    pub entries: u64,
    /// Sockets left out (see the module doc), by path.
    pub skipped_sockets: Vec<String>,
}

/// Writes the tree of `archive` to `out` as one gzip-compressed tar layer
/// (see the module doc). `out` gets exactly the blob's bytes; it is flushed
/// but not synced.
pub fn write_layer<W: Write>(archive: &Archive, out: W) -> Result<ExportedLayer, ExportError> {
    let blob = HashingWriter::new(out);
    // Level 6, the default of gzip itself and of Go's compress/gzip, which
    // docker and skopeo use, in members compressed on every core (see
    // `pargz`). Each member's header has no mtime and no file name,
    // so the header is the same every time.
    let gzip = ParallelGz::new(blob, Compression::default());
    let (tar, written) = write_tar(archive, HashingWriter::new(gzip))?;
    let (gzip, diff_id, tar_size) = tar.into_parts();
    let blob = gzip.finish().map_err(ExportError::Write)?;
    let (mut out, digest, size) = blob.into_parts();
    out.flush().map_err(ExportError::Write)?;
    Ok(ExportedLayer {
        diff_id,
        tar_size,
        digest,
        size,
        entries: written.entries,
        skipped_sockets: written.skipped_sockets,
    })
}

/// What [`write_tar`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WrittenTar {
    pub entries: u64,
    pub skipped_sockets: Vec<String>,
}

/// Writes the tree of `archive` to `out` as an uncompressed tar (see the
/// module doc; `cairn build` streams a base image into its flatten this
/// way); returns `out`, flushed.
pub fn write_tar<W: Write>(archive: &Archive, out: W) -> Result<(W, WrittenTar), ExportError> {
    let mut tar = TarWriter { out, entries: 0 };
    let mut links: HashMap<InodeRef, Vec<u8>> = HashMap::new();
    let mut skipped_sockets = Vec::new();
    archive.walk(WalkLimits::default(), |event| -> Result<(), ExportError> {
        let (path, node) = match event {
            WalkEvent::LeaveDir { .. } => return Ok(()),
            WalkEvent::EnterDir { path, node } | WalkEvent::Leaf { path, node, .. } => (path, node),
        };
        if is_cairn_own(path) {
            return Ok(());
        }
        check_name(path)?;
        if let InodeBody::Socket(_) = node.inode().body {
            let shown = String::from_utf8_lossy(path).into_owned();
            tracing::warn!("/{shown}: a socket, left out of the layer (tar cannot hold one)");
            skipped_sockets.push(shown);
            return Ok(());
        }
        write_node(&mut tar, archive, path, node, &mut links)
    })?;
    tar.finish().map_err(ExportError::Write)?;
    let TarWriter { mut out, entries } = tar;
    out.flush().map_err(ExportError::Write)?;
    Ok((
        out,
        WrittenTar {
            entries,
            skipped_sockets,
        },
    ))
}

/// Refuses a name a layer reader would take for a whiteout.
fn check_name(path: &[u8]) -> Result<(), ExportError> {
    let name = path.rsplit(|&b| b == b'/').next().unwrap_or(path);
    if name.starts_with(b".wh.") {
        return Err(ExportError::WhiteoutName {
            path: String::from_utf8_lossy(path).into_owned(),
        });
    }
    Ok(())
}

/// Writes one node: as a hard link when its inode was written before under
/// another name, else as itself (remembered when it has other names).
fn write_node<W: Write>(
    tar: &mut TarWriter<W>,
    archive: &Archive,
    path: &[u8],
    node: &Node,
    links: &mut HashMap<InodeRef, Vec<u8>>,
) -> Result<(), ExportError> {
    let stat = node.stat();
    let mut header = EntryHeader {
        path: path.to_vec(),
        typeflag: b'0',
        mode: stat.mode & 0o7777,
        uid: stat.uid,
        gid: stat.gid,
        size: 0,
        // Squashfs stores u32 seconds: never negative.
        mtime: u64::try_from(stat.mtime).unwrap_or(0),
        linkname: Vec::new(),
        device: (0, 0),
        xattrs: Vec::new(),
    };
    // A hard link carries the inode's owner, mode, mtime and xattrs too, so
    // that an unpacker that applies a link entry's metadata to the inode it
    // names leaves the inode as it was.
    header.xattrs = archive.xattrs(node)?;
    if !node.is_dir()
        && let Some(first) = links.get(&node.inode_ref())
    {
        header.typeflag = b'1';
        header.linkname = first.clone();
        return tar.entry(&header, |_| Ok(()));
    }
    match &node.inode().body {
        InodeBody::Dir(_) => {
            header.typeflag = b'5';
            // The root is `./`; every directory name ends in `/`.
            header.path = if path.is_empty() {
                b"./".to_vec()
            } else {
                [path, &b"/"[..]].concat()
            };
            return tar.entry(&header, |_| Ok(()));
        }
        InodeBody::File(f) => {
            header.size = f.file_size;
        }
        InodeBody::Symlink(s) => {
            header.typeflag = b'2';
            header.linkname = s.target.clone();
        }
        InodeBody::CharDev(d) | InodeBody::BlockDev(d) => {
            header.typeflag = if matches!(node.inode().body, InodeBody::CharDev(_)) {
                b'3'
            } else {
                b'4'
            };
            header.device = decode_rdev(d.rdev);
        }
        InodeBody::Fifo(_) => header.typeflag = b'6',
        // Filtered out by the caller (see the module doc).
        InodeBody::Socket(_) => return Ok(()),
    }
    if stat.nlink > 1 {
        links.insert(node.inode_ref(), path.to_vec());
    }
    let size = header.size;
    tar.entry(&header, |out| copy_file(archive, node, path, size, out))
}

/// Streams a file's `size` bytes from the image into the tar.
fn copy_file(
    archive: &Archive,
    node: &Node,
    path: &[u8],
    size: u64,
    out: &mut dyn Write,
) -> Result<(), ExportError> {
    let mut buf = vec![0u8; READ_CHUNK];
    let mut offset = 0u64;
    while offset < size {
        let want = usize::try_from(size - offset).map_or(READ_CHUNK, |left| left.min(READ_CHUNK));
        let n = archive.read_at(node, offset, &mut buf[..want])?;
        if n == 0 {
            return Err(ExportError::ShortFile {
                path: String::from_utf8_lossy(path).into_owned(),
                expected: size,
                actual: offset,
            });
        }
        out.write_all(&buf[..n]).map_err(ExportError::Write)?;
        offset += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::tarstream::{TarHeader, TarReader};
    use crate::image::tarwrite::pax_record;
    use crate::squashfs::writer::{
        Compression as SqfsCompression, EntryMeta, SpecialKind, Writer, WriterOptions,
    };
    use std::io::Read;

    fn meta(mode: u16, uid: u32, mtime: u32) -> EntryMeta {
        EntryMeta {
            mode,
            uid,
            gid: uid,
            mtime,
            ..EntryMeta::default()
        }
    }

    /// A small image with every kind of entry the layer carries.
    fn image(dir: &std::path::Path) -> Archive {
        let path = dir.join("image.sqfs");
        let options = WriterOptions {
            compression: SqfsCompression::None,
            block_size: 4096,
            mkfs_time: Some(0),
            durable: false,
        };
        let mut w = Writer::create(&path, options).expect("create");
        let long = format!("d/{}", "n".repeat(150));
        w.add_dir(b"d", meta(0o755, 0, 5)).expect("d");
        w.add_file(b"d/f", meta(0o4755, 1000, 7), &mut &b"hello"[..])
            .expect("f");
        w.add_hardlink(b"d/g", b"d/f").expect("g");
        w.add_file(
            long.as_bytes(),
            meta(0o644, 3_000_000, 9),
            &mut &[7u8; 5000][..],
        )
        .expect("long");
        w.add_symlink(b"s", meta(0o777, 0, 1), b"d/f").expect("s");
        w.add_dir(b".cairn", meta(0o755, 0, 0)).expect(".cairn");
        w.add_file(b".cairn/image.json", meta(0o644, 0, 0), &mut &b"{}"[..])
            .expect("image.json");
        w.add_dir(b"tmp", meta(0o1777, 0, 3)).expect("tmp");
        let null = SpecialKind::CharDevice { major: 1, minor: 3 };
        w.add_special(b"tmp/null", meta(0o666, 0, 3), null)
            .expect("null");
        w.add_special(b"tmp/fifo", meta(0o600, 0, 3), SpecialKind::Fifo)
            .expect("fifo");
        w.add_special(b"tmp/sock", meta(0o755, 0, 3), SpecialKind::Socket)
            .expect("sock");
        w.finish().expect("finish");
        Archive::open(&path).expect("open")
    }

    /// Every entry of a gzip'd tar as cairn's own (Go-compatible) reader
    /// sees it, with its data.
    fn read_back(blob: &[u8]) -> Vec<(TarHeader, Vec<u8>)> {
        let mut tar = Vec::new();
        flate2::read::MultiGzDecoder::new(blob)
            .read_to_end(&mut tar)
            .expect("gunzip");
        let mut reader = TarReader::new(&tar[..]);
        let mut out = Vec::new();
        while let Some(header) = reader.next_entry().expect("header") {
            let mut data = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = reader.read_data(&mut buf).expect("data");
                if n == 0 {
                    break;
                }
                data.extend_from_slice(&buf[..n]);
            }
            out.push((header, data));
        }
        out
    }

    #[test]
    fn the_tree_becomes_one_reproducible_layer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let archive = image(dir.path());
        let mut blob = Vec::new();
        let layer = write_layer(&archive, &mut blob).expect("layer");
        assert_eq!(layer.digest, Digest::of_bytes(&blob));
        assert_eq!(layer.size, blob.len() as u64);
        let mut again = Vec::new();
        assert_eq!(write_layer(&archive, &mut again).expect("again"), layer);
        assert_eq!(again, blob, "same image, same bytes");

        let entries = read_back(&blob);
        let names: Vec<String> = entries
            .iter()
            .map(|(h, _)| String::from_utf8_lossy(&h.name).into_owned())
            .collect();
        let long = format!("d/{}", "n".repeat(150));
        assert_eq!(
            names,
            [
                "./",
                "d/",
                "d/f",
                "d/g",
                long.as_str(),
                "s",
                "tmp/",
                "tmp/fifo",
                "tmp/null"
            ],
            "sorted, .cairn and the socket left out"
        );
        let by_name = |n: &str| {
            entries
                .iter()
                .find(|(h, _)| h.name == n.as_bytes())
                .unwrap_or_else(|| panic!("{n}"))
        };
        let (f, data) = by_name("d/f");
        assert_eq!(
            (f.typeflag, f.mode, f.uid, f.mtime),
            (b'0', 0o4755, 1000, 7)
        );
        assert_eq!(data, b"hello");
        let (g, _) = by_name("d/g");
        assert_eq!((g.typeflag, g.linkname.as_slice()), (b'1', &b"d/f"[..]));
        let (l, data) = by_name(&long);
        assert_eq!((l.uid, l.size, data.len()), (3_000_000, 5000, 5000));
        let (s, _) = by_name("s");
        assert_eq!((s.typeflag, s.linkname.as_slice()), (b'2', &b"d/f"[..]));
        let (t, _) = by_name("tmp/");
        assert_eq!((t.typeflag, t.mode), (b'5', 0o1777));
        let (null, _) = by_name("tmp/null");
        assert_eq!((null.typeflag, null.devmajor, null.devminor), (b'3', 1, 3));
        let (fifo, _) = by_name("tmp/fifo");
        assert_eq!((fifo.typeflag, fifo.mode), (b'6', 0o600));
        assert_eq!(layer.entries, 9);
        assert_eq!(layer.skipped_sockets, vec!["tmp/sock".to_owned()]);
    }

    #[test]
    fn pax_records_count_their_own_length() {
        let record = |value: &[u8]| {
            let mut out = Vec::new();
            pax_record(&mut out, b"path", value);
            out
        };
        assert_eq!(record(b"x"), b"9 path=x\n");
        // 90 bytes of value: 99 in all; one more and the length needs a
        // third digit, so 100 cannot be and it is 101.
        let r = record(&[b'a'; 90]);
        assert_eq!(r.len(), 99);
        assert!(r.starts_with(b"99 path=a"));
        let r = record(&[b'a'; 91]);
        assert_eq!(r.len(), 101);
        assert!(r.starts_with(b"101 path=a"));
        assert!(r.ends_with(b"a\n"));
    }

    #[test]
    fn whiteout_names_and_cairn_files_are_recognised() {
        assert!(check_name(b"a/.wh.b").is_err());
        assert!(check_name(b".wh..wh..opq").is_err());
        assert!(check_name(b"a/b.wh.c").is_ok());
        assert!(is_cairn_own(b".cairn"));
        assert!(is_cairn_own(b".cairn/image.json"));
        assert!(!is_cairn_own(b".cairnx"));
        assert!(!is_cairn_own(b"a/.cairn"));
    }
}
