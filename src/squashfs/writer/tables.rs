//! The tables after the inodes and directories: fragment, export, id and
//! xattr tables (each indexed by a list of its metadata blocks), the
//! padding, and the superblock's flags.

use super::metadata::{BuiltTables, MetaWriter, TableBuilder};
use super::{Compression, Output, WriteError, encode_err};
use crate::squashfs::format::{
    self, FragmentEntry, NO_XATTR, TABLE_ABSENT, XattrId, XattrTableHeader, fit, flags,
};

/// One inode's xattrs as stored: (type, name without prefix, value), sorted.
pub(super) type XattrSet = Vec<(u16, Vec<u8>, Vec<u8>)>;

/// Write a table stored as metadata blocks followed by the list of their
/// absolute positions (fragment, export, id tables); returns the position
/// of that list, which is what the superblock points at.
pub(super) fn write_indexed_table(
    out: &mut Output,
    entries: &[u8],
    comp: Compression,
    block_size: u32,
) -> Result<u64, WriteError> {
    let mut meta = MetaWriter::new(comp, block_size);
    meta.write(entries);
    let (table, starts) = meta.finish();
    let table_start = out.pos;
    out.write_all(&table)?;
    let list_start = out.pos;
    let mut list = Vec::with_capacity(starts.len() * 8);
    for s in starts {
        list.extend_from_slice(&(table_start + s).to_le_bytes());
    }
    out.write_all(&list)?;
    Ok(list_start)
}

/// Where each table went, as the superblock records it.
#[derive(Debug)]
pub(super) struct TableStarts {
    pub(super) inode_table_start: u64,
    pub(super) directory_table_start: u64,
    pub(super) fragment_table_start: u64,
    pub(super) export_table_start: u64,
    pub(super) id_table_start: u64,
    pub(super) xattr_id_table_start: u64,
    /// End of the last table, before the padding.
    pub(super) bytes_used: u64,
    /// Size of the image: `bytes_used` padded to 4 KiB.
    pub(super) padded: u64,
}

/// Write the tables that follow the data, in mksquashfs's order (inode,
/// directory, fragment, export, id and xattr tables), then pad to 4 KiB.
pub(super) fn write_tables(
    out: &mut Output,
    built: &BuiltTables,
    fragments: &[FragmentEntry],
    comp: Compression,
    bs: u32,
) -> Result<TableStarts, WriteError> {
    let inode_table_start = out.pos;
    out.write_all(&built.inode_table)?;
    let directory_table_start = out.pos;
    out.write_all(&built.dir_table)?;
    let fragment_table_start = if fragments.is_empty() {
        TABLE_ABSENT
    } else {
        let mut bytes = Vec::new();
        for f in fragments {
            f.encode(&mut bytes);
        }
        write_indexed_table(out, &bytes, comp, bs)?
    };
    let mut export = Vec::with_capacity(built.export.len() * 8);
    for r in &built.export {
        export.extend_from_slice(&r.0.to_le_bytes());
    }
    let export_table_start = write_indexed_table(out, &export, comp, bs)?;
    let mut ids = Vec::with_capacity(built.ids.len() * 4);
    for id in &built.ids {
        ids.extend_from_slice(&id.to_le_bytes());
    }
    let id_table_start = write_indexed_table(out, &ids, comp, bs)?;
    let xattr_id_table_start = if built.xattr_ids.is_empty() {
        TABLE_ABSENT
    } else {
        write_xattr_table(out, built, comp, bs)?
    };
    let bytes_used = out.pos;
    let padded = bytes_used.div_ceil(4096) * 4096;
    let pad_len: usize = fit("padding", padded - bytes_used)
        .map_err(encode_err(|| "the padding to 4 KiB".into()))?;
    let pad = vec![0u8; pad_len];
    out.write_all(&pad)?;
    Ok(TableStarts {
        inode_table_start,
        directory_table_start,
        fragment_table_start,
        export_table_start,
        id_table_start,
        xattr_id_table_start,
        bytes_used,
        padded,
    })
}

/// The xattr tables: the key/value area, the xattr ids in metadata
/// blocks, then the header with the list of those blocks; returns the
/// position of the header, which is what the superblock points at.
fn write_xattr_table(
    out: &mut Output,
    built: &BuiltTables,
    comp: Compression,
    bs: u32,
) -> Result<u64, WriteError> {
    let kv_start = out.pos;
    out.write_all(&built.xattr_kv)?;
    let mut id_bytes = Vec::new();
    for x in &built.xattr_ids {
        x.encode(&mut id_bytes);
    }
    let mut meta = MetaWriter::new(comp, bs);
    meta.write(&id_bytes);
    let (table, starts) = meta.finish();
    let ids_start = out.pos;
    out.write_all(&table)?;
    let header_start = out.pos;
    let mut head = Vec::new();
    XattrTableHeader {
        kv_start,
        id_count: built.xattr_id_count,
    }
    .encode(&mut head);
    for s in starts {
        head.extend_from_slice(&(ids_start + s).to_le_bytes());
    }
    out.write_all(&head)?;
    Ok(header_start)
}

/// The superblock's flags for an image compressed with `comp`.
pub(super) fn superblock_flags(comp: Compression, has_xattrs: bool) -> u16 {
    let uncompressed = if comp == Compression::None {
        flags::UNCOMPRESSED_INODES
            | flags::UNCOMPRESSED_DATA
            | flags::UNCOMPRESSED_FRAGMENTS
            | flags::UNCOMPRESSED_XATTRS
            | flags::UNCOMPRESSED_IDS
    } else {
        0
    };
    // Tails of files of any size go to fragments (mksquashfs's
    // -always-use-fragments), which the flag records.
    let mut sb_flags =
        flags::DUPLICATES | flags::EXPORTABLE | flags::ALWAYS_FRAGMENTS | uncompressed;
    if !has_xattrs {
        sb_flags |= flags::NO_XATTRS;
    }
    if comp.options_payload().is_some() {
        sb_flags |= flags::COMPRESSOR_OPTIONS;
    }
    sb_flags
}

impl TableBuilder<'_> {
    /// The index of `id` in the id table, adding it if new: at most
    /// [`format::MAX_IDS`] distinct ids, so that their count fits the
    /// superblock's u16 `id_count`.
    pub(super) fn id(&mut self, id: u32) -> Result<u16, WriteError> {
        if let Some(&i) = self.id_index.get(&id) {
            return Ok(i);
        }
        let i = self.id_count;
        let count = i.checked_add(1).ok_or(WriteError::TooMany {
            what: "distinct uids and gids in the id table",
            count: self.ids.len() as u64 + 1,
            max: format::MAX_IDS as u64,
        })?;
        self.ids.push(id);
        self.id_index.insert(id, i);
        self.id_count = count;
        Ok(i)
    }

    /// The xattr id of node `idx`'s set (identical sets share one), or
    /// NO_XATTR.
    pub(super) fn xattr(&mut self, idx: usize) -> Result<u32, WriteError> {
        let xattrs = &self.nodes[idx].meta.xattrs;
        if xattrs.is_empty() {
            return Ok(NO_XATTR);
        }
        let mut set: XattrSet = xattrs
            .iter()
            .filter_map(|(n, v)| {
                format::split_xattr_name(n).map(|(t, rest)| (t, rest.to_vec(), v.clone()))
            })
            .collect();
        set.sort();
        set.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
        if let Some(&i) = self.xattr_index.get(&set) {
            return Ok(i);
        }
        // Xattr ids are u32 and NO_XATTR (u32::MAX) means none.
        let i = self.xattr_id_count;
        if i == NO_XATTR {
            return Err(WriteError::TooMany {
                what: "distinct xattr sets",
                count: u64::from(i) + 1,
                max: u64::from(NO_XATTR),
            });
        }
        // Names and values were checked as entries were added (see
        // `check_meta`); a tar can still carry a set of more than 4 GiB.
        let encode = |source| WriteError::Encode {
            what: format!("the xattrs of {}", self.path_of(idx)),
            source,
        };
        let mut bytes = Vec::new();
        for (t, name, value) in &set {
            let name_len: u16 = fit("xattr name length", name.len() as u64).map_err(encode)?;
            let value_len: u32 = fit("xattr value length", value.len() as u64).map_err(encode)?;
            bytes.extend_from_slice(&t.to_le_bytes());
            bytes.extend_from_slice(&name_len.to_le_bytes());
            bytes.extend_from_slice(name);
            bytes.extend_from_slice(&value_len.to_le_bytes());
            bytes.extend_from_slice(value);
        }
        let id = XattrId {
            xattr_ref: self.xattr_kv.position().0,
            count: fit("xattr count", set.len() as u64).map_err(encode)?,
            size: fit("xattr set size", bytes.len() as u64).map_err(encode)?,
        };
        self.xattr_kv.write(&bytes);
        self.xattr_ids.push(id);
        self.xattr_index.insert(set, i);
        self.xattr_id_count = i + 1;
        Ok(i)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::tests::{meta, scratch_out};
    use crate::squashfs::format::{SliceSource, Superblock};
    use crate::squashfs::writer::{EntryMeta, WriteError, Writer, WriterOptions};

    /// The superblock counts distinct uids and gids in a u16: 65,535 ids
    /// fit, the 65,536th is refused by name (it would be stored as a count
    /// of 0, which the kernel and unsquashfs reject).
    #[test]
    fn id_table_holds_65535_ids_and_refuses_the_next() {
        // Owner 0/0 (the root directory) and i/i for files 1..n: n ids.
        let write = |n: u32, out: &Path| {
            let mut w = Writer::create(out, WriterOptions::default()).expect("create");
            for i in 1..n {
                let owner = EntryMeta {
                    uid: i,
                    gid: i,
                    ..meta(1)
                };
                w.add_file(format!("f{i}").as_bytes(), owner, &mut &b""[..])
                    .expect("file");
            }
            w.finish()
        };
        let (_dir, out) = scratch_out("ids.sqfs");
        write(65_535, &out).expect("65,535 ids fit");
        let bytes = std::fs::read(&out).expect("read image");
        let sb = Superblock::decode(&mut SliceSource::new(&bytes)).expect("superblock");
        assert_eq!(sb.id_count, 65_535);

        let (_dir, out) = scratch_out("too-many.sqfs");
        let err = write(65_536, &out).expect_err("65,536 ids do not fit");
        assert!(
            matches!(
                err,
                WriteError::TooMany {
                    what: "distinct uids and gids in the id table",
                    count: 65_536,
                    max: 65_535,
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "too many distinct uids and gids in the id table: 65536 (squashfs holds at most 65535)"
        );
        assert!(!out.exists());
    }

    #[test]
    fn xattrs_longer_than_their_length_fields_are_refused() {
        let (_dir, out) = scratch_out("xattr.sqfs");
        let mut w = Writer::create(&out, WriterOptions::default()).expect("create");
        let mut name = b"user.".to_vec();
        name.resize(5 + 65_536, b'n');
        let long_name = EntryMeta {
            xattrs: vec![(name, b"v".to_vec())],
            ..meta(1)
        };
        let err = w
            .add_file(b"f", long_name, &mut &b""[..])
            .expect_err("name too long");
        assert!(
            matches!(
                &err,
                WriteError::TooLarge {
                    what: "xattr name length",
                    value: 65_536,
                    ..
                }
            ),
            "{err:?}"
        );
    }
}
