//! The reader's fuzz harness, in the library so that the cargo-fuzz target
//! (`fuzz/fuzz_targets/reader.rs`) and the seed-replay test run the same
//! code: open an image from bytes, walk the whole tree, stat everything,
//! read every file, every link target and every xattr, within budgets.

use super::{Archive, CacheSizes, ReadError, WalkEvent, WalkLimits};

/// Budgets that keep one fuzz input fast whatever it claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FuzzBudget {
    pub max_entries: u64,
    pub max_depth: usize,
    /// File bytes read per file, and in total.
    pub max_file_bytes: u64,
    pub max_total_bytes: u64,
    /// Paths also resolved with `lookup_path` (exercises the dir index).
    pub max_lookups: u64,
}

impl Default for FuzzBudget {
    fn default() -> Self {
        Self {
            max_entries: 20_000,
            max_depth: 256,
            max_file_bytes: 4 << 20,
            max_total_bytes: 32 << 20,
            max_lookups: 1000,
        }
    }
}

/// What a harness run saw (tests assert on it for good seed images).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FuzzSummary {
    pub dirs: u64,
    pub leaves: u64,
    pub file_bytes: u64,
    pub xattrs: u64,
}

/// Open `bytes` as an image and exercise every reader entry point on it.
/// Any error is a normal outcome for a fuzz input; panics, hangs and huge
/// allocations are the bugs this looks for.
pub fn fuzz_walk(bytes: &[u8]) -> Result<FuzzSummary, ReadError> {
    fuzz_walk_with(bytes, FuzzBudget::default())
}

pub fn fuzz_walk_with(bytes: &[u8], budget: FuzzBudget) -> Result<FuzzSummary, ReadError> {
    let archive = Archive::from_bytes_with(
        bytes.to_vec(),
        CacheSizes {
            metadata_blocks: 64,
            fragments: 4,
            data_blocks: 4,
        },
    )?;
    let limits = WalkLimits {
        max_depth: budget.max_depth,
        max_entries: budget.max_entries,
    };
    let mut sum = FuzzSummary::default();
    let mut lookups = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    archive.walk(limits, |event| -> Result<(), ReadError> {
        let (path, node) = match event {
            WalkEvent::EnterDir { path, node } => {
                sum.dirs += 1;
                (path, node)
            }
            WalkEvent::LeaveDir { .. } => return Ok(()),
            WalkEvent::Leaf { path, node, .. } => {
                sum.leaves += 1;
                (path, node)
            }
        };
        let _ = archive.stat(node);
        sum.xattrs += archive.xattrs(node)?.len() as u64;
        if node.is_symlink() {
            archive.read_link(node)?;
        }
        if node.is_file() {
            // The stored form a build copies from a base image.
            archive.stored_file(node)?;
            let size = archive.stat(node).size;
            let mut off = 0u64;
            while off < size.min(budget.max_file_bytes) && sum.file_bytes < budget.max_total_bytes {
                let n = archive.read_at(node, off, &mut buf)?;
                if n == 0 {
                    break;
                }
                off += n as u64;
                sum.file_bytes += n as u64;
            }
            // An unaligned read across a block edge.
            if size > 3 {
                archive.read_at(node, size / 2 - 1, &mut buf[..3])?;
            }
        }
        if lookups < budget.max_lookups && !path.is_empty() {
            lookups += 1;
            let found = archive.lookup_path(path)?;
            if found.map(|n| n.inode_ref()) != Some(node.inode_ref()) {
                return Err(ReadError::Directory {
                    inode: super::inode_name(node.inode_ref()),
                    reason: format!(
                        "lookup of {:?} disagrees with the listing",
                        String::from_utf8_lossy(path)
                    ),
                });
            }
        }
        Ok(())
    })?;
    Ok(sum)
}
