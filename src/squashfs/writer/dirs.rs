//! Directory listings: entries grouped under headers, with index points
//! every 8 KiB of listing, and the directories emitted in post-order.

use super::SpecialKind;
use super::metadata::TableBuilder;
use super::tree::Kind;
use super::{WriteError, encode_err};
use crate::squashfs::format::{
    self, DIR_ENTRIES_PER_HEADER, DIR_INODE_DELTA_MAX, DIR_SIZE_BIAS, DirEntry, DirHeader,
    DirIndexEntry, DirInode, FormatError, InodeBody, InodeRef, METADATA_SIZE, NO_XATTR, fit,
};

/// One directory entry to be listed, as [`plan_listing`] needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ListedEntry {
    name: Vec<u8>,
    inode_number: u32,
    inode_ref: InodeRef,
    basic_type: u16,
}

/// A directory listing laid out: its bytes, and the index points (offset
/// of a header inside the listing, name of its first entry).
#[derive(Debug, Clone, PartialEq, Eq)]
struct PlannedListing {
    bytes: Vec<u8>,
    index: Vec<(u32, Vec<u8>)>,
}

/// Lay out a directory listing (entries sorted by name). A new header starts
/// after 256 entries, when the inode metadata block changes, when the inode
/// number delta leaves the i16 range, and (with an index point, as mksquashfs
/// does) when the listing since the last index point would pass 8 KiB, so
/// that a lookup in a huge directory can jump straight to a header. A
/// position past the u32 fields that hold it is an error naming the field.
fn plan_listing(entries: &[ListedEntry]) -> Result<PlannedListing, FormatError> {
    let mut bytes = Vec::new();
    let mut index = Vec::new();
    let mut header_pos: Option<usize> = None;
    let mut header = DirHeader {
        count: 0,
        start: 0,
        inode_number: 0,
    };
    let mut last_index_pos = 0usize;
    for e in entries {
        let entry_len = 8 + e.name.len();
        let block: u32 = fit(
            "directory header inode block start",
            e.inode_ref.block_start(),
        )?;
        let delta = i64::from(e.inode_number) - i64::from(header.inode_number);
        let needs_index =
            header_pos.is_some() && bytes.len() + entry_len - last_index_pos > METADATA_SIZE;
        let new_header = header_pos.is_none()
            || header.count as usize == DIR_ENTRIES_PER_HEADER
            || block != header.start
            || !(-DIR_INODE_DELTA_MAX - 1..=DIR_INODE_DELTA_MAX).contains(&delta)
            || needs_index;
        if new_header {
            if let Some(pos) = header_pos {
                let mut h = Vec::with_capacity(DirHeader::SIZE);
                header.encode(&mut h);
                bytes[pos..pos + DirHeader::SIZE].copy_from_slice(&h);
            }
            if needs_index {
                index.push((
                    fit("directory index position", bytes.len() as u64)?,
                    e.name.clone(),
                ));
                last_index_pos = bytes.len();
            }
            header = DirHeader {
                count: 0,
                start: block,
                inode_number: e.inode_number,
            };
            header_pos = Some(bytes.len());
            bytes.extend_from_slice(&[0; DirHeader::SIZE]);
        }
        // In i16 range: a delta outside it started a new header above.
        let delta = i64::from(e.inode_number) - i64::from(header.inode_number);
        let inode_delta = i16::try_from(delta).map_err(|_| FormatError::OutOfRange {
            what: "directory entry inode delta",
            value: delta.unsigned_abs(),
        })?;
        DirEntry {
            offset: e.inode_ref.offset(),
            inode_delta,
            inode_type: e.basic_type,
            name: e.name.clone(),
        }
        .encode(&mut bytes)?;
        header.count += 1;
    }
    if let Some(pos) = header_pos {
        let mut h = Vec::with_capacity(DirHeader::SIZE);
        header.encode(&mut h);
        bytes[pos..pos + DirHeader::SIZE].copy_from_slice(&h);
    }
    Ok(PlannedListing { bytes, index })
}

impl TableBuilder<'_> {
    /// Emit a directory in post-order: subdirectories, then the other
    /// children's inodes, then the listing, then the directory's inode
    /// (which needs the listing's position). Recursion depth is the tree
    /// depth, at most PATH_MAX / 2.
    pub(super) fn emit_dir(&mut self, idx: usize, parent_number: u32) -> Result<(), WriteError> {
        let nodes = self.nodes;
        let Kind::Dir { children, .. } = &nodes[idx].kind else {
            return Ok(());
        };
        let my_number = self.numbers[idx];
        let mut subdirs = 0u32;
        for (_, c) in children {
            if matches!(nodes[*c].kind, Kind::Dir { .. }) {
                subdirs += 1;
                self.emit_dir(*c, my_number)?;
            }
        }
        for (_, c) in children {
            if !self.emitted[*c] {
                self.emit_leaf(*c)?;
            }
        }
        let entries: Vec<ListedEntry> = children
            .iter()
            .map(|(name, c)| ListedEntry {
                name: name.clone(),
                inode_number: self.numbers[*c],
                inode_ref: self.refs[*c],
                basic_type: basic_type_of(&nodes[*c].kind),
            })
            .collect();
        let listing_start = self.dirs.position();
        let base = self.dirs.uncompressed_position();
        let listing = || format!("the directory listing of {}", self.path_of(idx));
        let planned = plan_listing(&entries).map_err(encode_err(listing))?;
        let size = (planned.bytes.len() as u64).saturating_add(DIR_SIZE_BIAS.into());
        let file_size: u32 = fit("directory file_size", size).map_err(encode_err(listing))?;
        self.dirs.write(&planned.bytes);
        let index = planned
            .index
            .into_iter()
            .map(|(at, name)| {
                Ok(DirIndexEntry {
                    index: at,
                    start: fit(
                        "directory index block start",
                        self.dirs.block_start_of(base + u64::from(at)),
                    )?,
                    name,
                })
            })
            .collect::<Result<Vec<_>, FormatError>>()
            .map_err(encode_err(|| {
                format!("the directory index of {}", self.path_of(idx))
            }))?;
        let block_start = fit("directory block start", listing_start.block_start())
            .map_err(encode_err(|| format!("the inode of {}", self.path_of(idx))))?;
        let xattr_idx = self.xattr(idx)?;
        let extended = !index.is_empty() || xattr_idx != NO_XATTR || file_size > 0xffff;
        let body = InodeBody::Dir(DirInode {
            extended,
            block_start,
            block_offset: listing_start.offset(),
            file_size,
            link_count: 2 + subdirs,
            parent_inode: parent_number,
            xattr_idx,
            index,
        });
        let header = self.header(idx, body.inode_type())?;
        self.write_inode(idx, header, body)
    }
}

fn basic_type_of(kind: &Kind) -> u16 {
    use format::inode_type::*;
    match kind {
        Kind::Dir { .. } => BASIC_DIR,
        Kind::File(_) => BASIC_FILE,
        Kind::Symlink(_) => BASIC_SYMLINK,
        Kind::Special(SpecialKind::BlockDevice { .. }) => BASIC_BLOCK_DEV,
        Kind::Special(SpecialKind::CharDevice { .. }) => BASIC_CHAR_DEV,
        Kind::Special(SpecialKind::Fifo) => BASIC_FIFO,
        Kind::Special(SpecialKind::Socket) => BASIC_SOCKET,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::squashfs::format::SliceSource;

    fn entry(name: &str, number: u32, block: u64, offset: u16) -> ListedEntry {
        ListedEntry {
            name: name.as_bytes().to_vec(),
            inode_number: number,
            inode_ref: InodeRef::new(block, offset),
            basic_type: format::inode_type::BASIC_FILE,
        }
    }

    /// Decode a planned listing back into (header, entries) runs.
    fn decode_listing(bytes: &[u8]) -> Vec<(DirHeader, Vec<DirEntry>)> {
        let mut src = SliceSource::new(bytes);
        let mut runs = Vec::new();
        while src.position() < bytes.len() {
            let h = DirHeader::decode(&mut src).expect("header");
            let es = (0..h.count)
                .map(|_| DirEntry::decode(&mut src).expect("entry"))
                .collect();
            runs.push((h, es));
        }
        runs
    }

    #[test]
    fn listing_one_header_for_close_entries() {
        let entries = vec![
            entry("a", 5, 0, 10),
            entry("b", 3, 0, 50),
            entry("c", 7, 0, 90),
        ];
        let planned = plan_listing(&entries).expect("plan");
        let runs = decode_listing(&planned.bytes);
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].0.count, 3);
        assert_eq!(runs[0].0.inode_number, 5);
        assert_eq!(runs[0].1[1].inode_delta, -2);
        assert_eq!(runs[0].1[2].offset, 90);
        assert!(planned.index.is_empty());
    }

    #[test]
    fn listing_splits_at_256_entries() {
        let entries: Vec<_> = (0..600)
            .map(|i| entry(&format!("f{i:04}"), i + 1, 0, 0))
            .collect();
        let runs = decode_listing(&plan_listing(&entries).expect("plan").bytes);
        let counts: Vec<u32> = runs.iter().map(|r| r.0.count).collect();
        assert_eq!(counts, vec![256, 256, 88]);
    }

    #[test]
    fn listing_splits_on_block_change_and_large_delta() {
        let entries = vec![
            entry("a", 1, 0, 0),
            entry("b", 2, 8000, 4),
            entry("c", 40000, 8000, 8),
            entry("d", 40001, 8000, 12),
            entry("e", 3, 8000, 16),
        ];
        let runs = decode_listing(&plan_listing(&entries).expect("plan").bytes);
        let shape: Vec<(u32, u32, u32)> = runs
            .iter()
            .map(|r| (r.0.count, r.0.start, r.0.inode_number))
            .collect();
        assert_eq!(
            shape,
            vec![(1, 0, 1), (1, 8000, 2), (2, 8000, 40000), (1, 8000, 3)]
        );
    }

    #[test]
    fn listing_index_every_8k() {
        let entries: Vec<_> = (0..2000)
            .map(|i| entry(&format!("{i:0100}"), i + 1, 0, 0))
            .collect();
        let planned = plan_listing(&entries).expect("plan");
        // 2000 entries of 108 bytes + headers: about 26 steps of 8 KiB.
        assert!(planned.index.len() >= 25, "{}", planned.index.len());
        for (at, name) in &planned.index {
            // Every index point is a header whose first entry is `name`.
            let mut src = SliceSource::new(&planned.bytes[*at as usize..]);
            let h = DirHeader::decode(&mut src).expect("header at index point");
            assert!(h.count >= 1);
            assert_eq!(&DirEntry::decode(&mut src).expect("entry").name, name);
        }
        let points: Vec<u32> = planned.index.iter().map(|p| p.0).collect();
        assert!(points.windows(2).all(|w| w[1] - w[0] <= 8192));
    }
}
