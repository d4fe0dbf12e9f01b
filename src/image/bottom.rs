//! A squashfs image as the bottom layer of a flatten (`cairn build`'s base
//! image under its step layers): walked in place instead of exported to a
//! tar and parsed back. Its entries become the same [`LayerItem`]s a tar
//! of it would give; a regular file's content is read only if the
//! flattener writes it, and is offered to the sink in its stored form
//! first when the image's blocks may be copied as they are.

use super::flatten::{EntryKind, FlattenError, Flattener, LayerItem, fixup_index};
use super::layer::squashfs_mtime;
use super::sink::{EntryMeta, SpecialKind, StoredSource, TreeSink};
use crate::squashfs::format::{InodeBody, decode_rdev};
use crate::squashfs::reader::{Archive, InodeRef, Node, ReadError, WalkEvent, WalkLimits};
use std::collections::HashMap;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::Arc;

/// The image under the layers.
#[derive(Debug, Clone)]
pub struct ImageBottom {
    pub path: PathBuf,
    pub archive: Arc<Archive>,
    /// Its blocks may be copied into the output without being read: an
    /// image cairn wrote into its cache. A squashfs file named by the user
    /// is read through (a corrupt block is then an error here, not a
    /// corrupt output).
    pub copy_blocks: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum BottomError {
    #[error("reading the image {path}")]
    Read {
        path: String,
        #[source]
        source: ReadError,
    },
    #[error(transparent)]
    Flatten(#[from] FlattenError),
}

/// What the walk's callback fails with: the flattener's error, or the
/// reader's (turned into [`BottomError::Read`] with the image's path).
enum Failure {
    Read(ReadError),
    Flatten(FlattenError),
}

impl From<ReadError> for Failure {
    fn from(e: ReadError) -> Failure {
        Failure::Read(e)
    }
}

impl ImageBottom {
    pub fn label(&self) -> String {
        format!("the base image {}", self.path.display())
    }

    /// Feeds the image to `flattener` as its current layer, then writes
    /// what hard links to its shadowed entries need (the items `end_layer`
    /// names, read again).
    pub fn feed(
        &self,
        flattener: &mut Flattener,
        sink: &mut dyn TreeSink,
    ) -> Result<(), BottomError> {
        self.walk_items(|n, item, node, data| {
            if self.copy_blocks && node.is_file() {
                let stored = StoredSource {
                    image: 0,
                    archive: Arc::clone(&self.archive),
                    node: node.clone(),
                };
                flattener.entry_stored(sink, n, item, data, stored)
            } else {
                flattener.entry(sink, n, item, data)
            }
        })?;
        let fixups = flattener.end_layer();
        if fixups.is_empty() {
            return Ok(());
        }
        let wanted = fixup_index(&fixups);
        self.walk_items(|n, item, _, data| match (wanted.get(&n), item) {
            (
                Some(&i),
                LayerItem::Entry {
                    kind: EntryKind::File { size },
                    meta,
                    ..
                },
            ) => flattener.apply_fixup(sink, &fixups[i], meta, size, data),
            _ => Ok(()),
        })
    }

    /// Calls `each(ordinal, item, node, content)` for every item of the
    /// image, in the order of a walk (the same on every call).
    fn walk_items(
        &self,
        mut each: impl FnMut(u64, LayerItem, &Node, &mut dyn Read) -> Result<(), FlattenError>,
    ) -> Result<(), BottomError> {
        let archive = &*self.archive;
        let mut first_names: HashMap<InodeRef, Vec<u8>> = HashMap::new();
        let mut ordinal = 0u64;
        let walked = archive.walk(WalkLimits::default(), |event| -> Result<(), Failure> {
            let (path, node) = match event {
                WalkEvent::LeaveDir { .. } => return Ok(()),
                WalkEvent::EnterDir { path, node } | WalkEvent::Leaf { path, node, .. } => {
                    (path, node)
                }
            };
            let Some(item) = item_of(archive, path, node, &mut first_names)? else {
                return Ok(());
            };
            let mut data = NodeReader {
                archive,
                node,
                offset: 0,
            };
            ordinal += 1;
            each(ordinal - 1, item, node, &mut data).map_err(Failure::Flatten)
        });
        match walked {
            Ok(()) => Ok(()),
            Err(Failure::Flatten(e)) => Err(e.into()),
            Err(Failure::Read(source)) => Err(BottomError::Read {
                path: self.path.display().to_string(),
                source,
            }),
        }
    }
}

/// The layer item a tar of the image would hold for `node` at `path`
/// (`None`: cairn's own directory, which the output gets anew). A second
/// name of an inode is a hard link to its first.
fn item_of(
    archive: &Archive,
    path: &[u8],
    node: &Node,
    first_names: &mut HashMap<InodeRef, Vec<u8>>,
) -> Result<Option<LayerItem>, ReadError> {
    if super::flatten::is_cairn_own(path) {
        return Ok(None);
    }
    let stat = node.stat();
    if !node.is_dir() && stat.nlink > 1 {
        if let Some(first) = first_names.get(&node.inode_ref()) {
            return Ok(Some(LayerItem::Entry {
                path: path.to_vec(),
                kind: EntryKind::Hardlink(first.clone()),
                meta: EntryMeta::default(),
            }));
        }
        first_names.insert(node.inode_ref(), path.to_vec());
    }
    let mut xattrs = archive.xattrs(node)?;
    xattrs.retain(|(_, v)| !v.is_empty());
    xattrs.sort();
    let meta = EntryMeta {
        // Masked to the permission bits: fits.
        mode: (stat.mode & 0o7777) as u16,
        uid: stat.uid,
        gid: stat.gid,
        mtime: squashfs_mtime(stat.mtime),
        xattrs,
    };
    let kind = match &node.inode().body {
        InodeBody::Dir(_) => EntryKind::Dir,
        InodeBody::File(f) => EntryKind::File { size: f.file_size },
        InodeBody::Symlink(s) => EntryKind::Symlink(s.target.clone()),
        InodeBody::CharDev(d) => {
            let (major, minor) = decode_rdev(d.rdev);
            EntryKind::Special(SpecialKind::CharDevice { major, minor })
        }
        InodeBody::BlockDev(d) => {
            let (major, minor) = decode_rdev(d.rdev);
            EntryKind::Special(SpecialKind::BlockDevice { major, minor })
        }
        InodeBody::Fifo(_) => EntryKind::Special(SpecialKind::Fifo),
        InodeBody::Socket(_) => EntryKind::Special(SpecialKind::Socket),
    };
    Ok(Some(LayerItem::Entry {
        path: path.to_vec(),
        kind,
        meta,
    }))
}

/// A file's content, decompressed as it is read.
struct NodeReader<'a> {
    archive: &'a Archive,
    node: &'a Node,
    offset: u64,
}

impl Read for NodeReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self
            .archive
            .read_at(self.node, self.offset, buf)
            .map_err(io::Error::other)?;
        self.offset += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::archive::BlobLocation;
    use crate::image::import::{NoProgress, flatten_over};
    use crate::image::layer::LayerSpec;
    use crate::image::meta::ImageMeta;
    use crate::image::source::ResolvedImage;
    use crate::image::tarwrite::{EntryHeader, TarWriter};
    use crate::squashfs::writer::{Compression, Writer, WriterOptions};
    use std::collections::BTreeMap;
    use std::fs;
    use std::path::Path;

    const BS: u32 = 4096;

    fn options() -> WriterOptions {
        WriterOptions {
            compression: Compression::Zstd { level: 3 },
            block_size: BS,
            mkfs_time: Some(0),
            durable: false,
        }
    }

    fn meta(mode: u16, uid: u32) -> EntryMeta {
        EntryMeta {
            mode,
            uid,
            gid: uid,
            mtime: 7,
            xattrs: Vec::new(),
        }
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i: usize| {
                let b = i.to_le_bytes();
                b[0].wrapping_mul(31).wrapping_add(seed) ^ b[1]
            })
            .collect()
    }

    /// Every kind of entry, files of several blocks and of a tail only,
    /// holes, hard links, xattrs, cairn's own metadata.
    fn base(dir: &Path) -> PathBuf {
        let path = dir.join("base.sqfs");
        let mut w = Writer::create(&path, options()).expect("create");
        w.add_dir(b"d", meta(0o755, 0)).expect("d");
        w.add_file(
            b"d/big",
            meta(0o644, 5),
            &mut &pattern(3 * 4096 + 100, 1)[..],
        )
        .expect("big");
        w.add_file(b"d/small", meta(0o600, 0), &mut &pattern(300, 2)[..])
            .expect("small");
        let mut holes = vec![0u8; 2 * 4096];
        holes.extend(pattern(5000, 3));
        w.add_file_with_holes(b"d/holes", meta(0o644, 0), &mut &holes[..], true)
            .expect("holes");
        w.add_file(b"d/hard", meta(0o755, 0), &mut &pattern(5000, 4)[..])
            .expect("hard");
        w.add_hardlink(b"d/hard2", b"d/hard").expect("hard2");
        w.add_file(b"d/gone", meta(0o644, 0), &mut &pattern(10, 5)[..])
            .expect("gone");
        w.add_file(b"d/replaced", meta(0o644, 0), &mut &pattern(9000, 6)[..])
            .expect("replaced");
        let mut x = meta(0o644, 0);
        x.xattrs = vec![(b"user.k".to_vec(), b"v".to_vec())];
        w.add_file(b"d/xattr", x, &mut &b"x"[..]).expect("xattr");
        w.add_symlink(b"s", meta(0o777, 0), b"d/big").expect("s");
        w.add_special(b"fifo", meta(0o644, 0), SpecialKind::Fifo)
            .expect("fifo");
        let null = SpecialKind::CharDevice { major: 1, minor: 3 };
        w.add_special(b"null", meta(0o666, 0), null).expect("null");
        w.add_dir(b".cairn", meta(0o755, 0)).expect(".cairn");
        w.add_file(b".cairn/image.json", meta(0o644, 0), &mut &b"{}"[..])
            .expect("json");
        w.finish().expect("finish");
        path
    }

    /// A layer above it: a whiteout, a file replaced (the first name of a
    /// hard-linked inode: the other name keeps the old content), a new
    /// file, a link to a file of the base.
    fn layer(dir: &Path) -> PathBuf {
        let path = dir.join("layer.tar");
        let mut tar = TarWriter {
            out: fs::File::create(&path).expect("layer"),
            entries: 0,
        };
        let header = |path: &str, typeflag: u8, size: u64, link: &str| EntryHeader {
            path: path.as_bytes().to_vec(),
            typeflag,
            mode: 0o644,
            size,
            mtime: 9,
            linkname: link.as_bytes().to_vec(),
            ..EntryHeader::default()
        };
        let put = |tar: &mut TarWriter<fs::File>, h: EntryHeader, data: &[u8]| {
            tar.entry::<io::Error>(&h, |out| out.write_all(data))
                .expect("entry");
        };
        put(&mut tar, header("d/.wh.gone", b'0', 0, ""), b"");
        put(&mut tar, header("d/hard", b'0', 3, ""), b"new");
        put(&mut tar, header("d/replaced", b'0', 4, ""), b"four");
        put(&mut tar, header("d/added", b'0', 5, ""), b"added");
        put(&mut tar, header("d/link", b'1', 0, "d/big"), b"");
        tar.finish().expect("end");
        path
    }

    fn flatten(dir: &Path, base: &Path, layer: &Path, copy: bool) -> PathBuf {
        let out = dir.join(format!("out-{copy}.sqfs"));
        let bottom = ImageBottom {
            path: base.to_path_buf(),
            archive: Arc::new(Archive::open(base).expect("base")),
            copy_blocks: copy,
        };
        let image = ResolvedImage::Layers {
            layers: vec![LayerSpec {
                label: "layer".into(),
                location: BlobLocation::File(layer.to_path_buf()),
                digest: None,
                size: None,
                diff_id: None,
                media_type: Some("application/vnd.oci.image.layer.v1.tar".into()),
                growing: None,
            }],
            meta: ImageMeta::new("test".into()),
        };
        let mut w = Writer::create(&out, options()).expect("out");
        flatten_over(Some(&bottom), &image, &mut w, &NoProgress, 0).expect("flatten");
        w.finish().expect("finish");
        out
    }

    /// (mode, uid, nlink, content or link target, xattrs).
    type Seen = (u32, u32, u32, Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>);

    fn tree(path: &Path) -> BTreeMap<Vec<u8>, Seen> {
        let a = Archive::open(path).expect("open");
        let mut out = BTreeMap::new();
        a.walk(WalkLimits::default(), |event| -> Result<(), ReadError> {
            let (path, node) = match event {
                WalkEvent::LeaveDir { .. } => return Ok(()),
                WalkEvent::EnterDir { path, node } | WalkEvent::Leaf { path, node, .. } => {
                    (path, node)
                }
            };
            let body = if node.is_file() {
                a.read_whole(node, 1 << 20)?.unwrap_or_default()
            } else if node.is_symlink() {
                a.read_link(node)?
            } else {
                Vec::new()
            };
            let s = node.stat();
            out.insert(
                path.to_vec(),
                (s.mode, s.uid, s.nlink, body, a.xattrs(node)?),
            );
            Ok(())
        })
        .expect("walk");
        out
    }

    #[test]
    fn copied_blocks_make_the_same_tree_as_reading_the_base() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = base(dir.path());
        let layer = layer(dir.path());
        let read = flatten(dir.path(), &base, &layer, false);
        let copied = flatten(dir.path(), &base, &layer, true);
        let (t_read, t_copied) = (tree(&read), tree(&copied));
        assert_eq!(t_read, t_copied);
        assert!(!t_copied.contains_key(&b"d/gone"[..]));
        assert_eq!(t_copied[&b"d/hard"[..]].3, b"new");
        assert_eq!(t_copied[&b"d/hard2"[..]].3, pattern(5000, 4));
        assert_eq!(t_copied[&b"d/link"[..]].3, pattern(3 * 4096 + 100, 1));
        assert_eq!(t_copied[&b"d/link"[..]].2, 2);
        assert_eq!(t_copied[&b".cairn/image.json"[..]].3.first(), Some(&b'{'));
        // The copy holds the base's very bytes for what it did not read.
        let (b, c) = (
            Archive::open(&base).expect("b"),
            Archive::open(&copied).expect("c"),
        );
        for name in [&b"d/big"[..], b"d/holes", b"d/small"] {
            let nb = b.lookup_path(name).expect("lookup").expect("in base");
            let nc = c.lookup_path(name).expect("lookup").expect("in copy");
            let (sb, sc) = (
                b.stored_file(&nb).expect("b").expect("file"),
                c.stored_file(&nc).expect("c").expect("file"),
            );
            assert_eq!(sb.blocks, sc.blocks);
            assert_eq!(sb.tail.map(|t| t.block), sc.tail.map(|t| t.block));
            assert_eq!(sb.sparse, sc.sparse);
        }
    }

    #[test]
    fn squashfs_tools_read_the_copy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = base(dir.path());
        let layer = layer(dir.path());
        let copied = flatten(dir.path(), &base, &layer, true);
        let out = dir.path().join("x");
        let status = std::process::Command::new("unsquashfs")
            .args(["-q", "-no-progress", "-no-xattrs", "-d"])
            .arg(&out)
            .arg(&copied)
            .stdout(std::process::Stdio::null())
            .status();
        match status {
            Ok(s) => assert!(s.success(), "unsquashfs failed on the copy"),
            Err(_) if std::env::var_os("CAIRN_MUST_WORK").is_none() => {
                eprintln!("no unsquashfs: not checked with squashfs-tools");
                return;
            }
            Err(e) => panic!("unsquashfs: {e}"),
        }
        assert_eq!(
            fs::read(out.join("d/big")).expect("big"),
            pattern(3 * 4096 + 100, 1)
        );
        let mut holes = vec![0u8; 2 * 4096];
        holes.extend(pattern(5000, 3));
        assert_eq!(fs::read(out.join("d/holes")).expect("holes"), holes);
        assert_eq!(
            fs::read(out.join("d/hard2")).expect("hard2"),
            pattern(5000, 4)
        );
        assert_eq!(
            fs::read(out.join("d/small")).expect("small"),
            pattern(300, 2)
        );
    }
}
