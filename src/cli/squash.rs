//! `cairn squash DIR OUT.sqfs`: make a squashfs image from a directory, like
//! mksquashfs. Walks DIR without following symlinks, sorted by name (so two
//! runs give the same bytes), keeps modes, mtimes, xattrs (user., trusted.,
//! security.), hard links, devices, fifos and sockets; keeps owners when run
//! as root and records the caller's uid/gid otherwise.

use std::fs;
use std::path::PathBuf;

use anyhow::{Context, bail};

use super::settings::HostEnv;
use crate::image::hostdir::{self, HostKind, Owners};
use crate::squashfs::format;
use crate::squashfs::writer::{Compression, Writer, WriterOptions};

#[derive(Debug, clap::Args)]
pub struct SquashArgs {
    /// The directory to pack.
    pub dir: PathBuf,
    /// The image file to write (replaced atomically).
    pub out: PathBuf,
    #[command(flatten)]
    pub compression: CompressionArgs,
    /// fsync the image before it replaces OUT (by default it is written
    /// as mksquashfs and cp write files: the kernel writes it back later).
    #[arg(long)]
    pub sync: bool,
}

/// How an image is compressed: shared by every command that writes one.
#[derive(Debug, Clone, clap::Args)]
pub struct CompressionArgs {
    /// Compressor: zstd, gzip, xz, lz4 or none.
    #[arg(long = "comp", default_value = "zstd")]
    pub comp: String,
    /// Compression level (zstd 1-22, gzip 1-9, xz 0-9).
    #[arg(long, allow_negative_numbers = true)]
    pub level: Option<i64>,
    /// Data block size: 4K to 1M, a power of two (e.g. 4K, 128K, 1M or bytes).
    #[arg(long = "block-size", default_value = "128K")]
    pub block_size: String,
}

impl CompressionArgs {
    /// Validated writer options; errors name the option and its value.
    /// `mkfs_time`: the image's creation time (`$SOURCE_DATE_EPOCH`), else
    /// the writer picks one.
    pub fn writer_options(&self, mkfs_time: Option<u32>) -> anyhow::Result<WriterOptions> {
        let compression =
            Compression::from_name(&self.comp, self.level).with_context(|| match self.level {
                Some(l) => format!("--comp {} --level {l}", self.comp),
                None => format!("--comp {}", self.comp),
            })?;
        Ok(WriterOptions {
            compression,
            block_size: parse_block_size(&self.block_size)?,
            mkfs_time,
            durable: true,
        })
    }
}

/// Parse a block size like `4K`, `128k`, `1M` or `131072`.
pub fn parse_block_size(text: &str) -> anyhow::Result<u32> {
    let t = text.trim();
    let (digits, mult) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1024u64),
        Some('m' | 'M') => (&t[..t.len() - 1], 1024 * 1024),
        _ => (t, 1),
    };
    let n: u64 = digits
        .parse()
        .ok()
        .and_then(|n: u64| n.checked_mul(mult))
        .with_context(|| format!("--block-size {text:?}: not a size (use e.g. 4K, 128K, 1M)"))?;
    match u32::try_from(n) {
        Ok(n)
            if n.is_power_of_two()
                && (format::MIN_BLOCK_SIZE..=format::MAX_BLOCK_SIZE).contains(&n) =>
        {
            Ok(n)
        }
        _ => bail!("--block-size {text:?}: must be a power of two from 4K to 1M"),
    }
}

pub fn execute(args: SquashArgs, env: &HostEnv) -> anyhow::Result<i32> {
    let options = WriterOptions {
        durable: args.sync,
        ..args.compression.writer_options(env.source_date_epoch())?
    };
    let meta = fs::symlink_metadata(&args.dir)
        .with_context(|| format!("cannot read the directory {}", args.dir.display()))?;
    if !meta.is_dir() {
        bail!("{} is not a directory", args.dir.display());
    }
    // An ordinary user cannot own other users' files: record the caller.
    let owners = if nix::unistd::geteuid().is_root() {
        Owners::Keep
    } else {
        Owners::All {
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
        }
    };
    let mut writer = Writer::create(&args.out, options)
        .with_context(|| format!("cannot write the image {}", args.out.display()))?;
    let skip = writer.own_files();
    hostdir::walk::<anyhow::Error>(&args.dir, owners, &skip, |entry, data| {
        let path = &entry.path;
        let added = match entry.kind {
            HostKind::Dir => writer.add_dir(path, entry.meta),
            HostKind::File { holes, .. } => writer
                .add_file_with_holes(path, entry.meta, data, holes)
                .map(|_| ()),
            HostKind::Symlink(target) => writer.add_symlink(path, entry.meta, &target),
            HostKind::Special(kind) => writer.add_special(path, entry.meta, kind),
            HostKind::Hardlink(first) => writer.add_hardlink(path, &first),
        };
        added.with_context(|| format!("cannot add {}", entry.host_path.display()))
    })?;
    let summary = writer
        .finish()
        .with_context(|| format!("cannot write the image {}", args.out.display()))?;
    tracing::info!(
        bytes = summary.bytes,
        inodes = summary.inodes,
        files = summary.files,
        data_bytes = summary.data_bytes,
        duplicates = summary.duplicate_files,
        shared_block_runs = summary.shared_block_runs,
        "wrote {}",
        args.out.display()
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_sizes_parse() {
        assert_eq!(parse_block_size("4K").expect("4K"), 4096);
        assert_eq!(parse_block_size("128k").expect("128k"), 131072);
        assert_eq!(parse_block_size("1M").expect("1M"), 1 << 20);
        assert_eq!(parse_block_size("65536").expect("bytes"), 65536);
        for bad in ["3K", "2M", "2K", "abc", "", "100000"] {
            assert!(parse_block_size(bad).is_err(), "{bad}");
        }
    }
}
