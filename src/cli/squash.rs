//! `cairn squash DIR OUT.sqfs`: make a squashfs image from a directory, like
//! mksquashfs. Walks DIR without following symlinks, sorted by name (so two
//! runs give the same bytes), keeps modes, mtimes, xattrs (user., trusted.,
//! security.), hard links, devices, fifos and sockets; keeps owners when run
//! as root and records the caller's uid/gid otherwise.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::squashfs::format;
use crate::squashfs::writer::{Compression, EntryMeta, SpecialKind, Writer, WriterOptions};

#[derive(Debug, clap::Args)]
pub struct SquashArgs {
    /// The directory to pack.
    pub dir: PathBuf,
    /// The image file to write (replaced atomically).
    pub out: PathBuf,
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
    if !n.is_power_of_two()
        || n < u64::from(format::MIN_BLOCK_SIZE)
        || n > u64::from(format::MAX_BLOCK_SIZE)
    {
        bail!("--block-size {text:?}: must be a power of two from 4K to 1M");
    }
    Ok(n as u32)
}

/// Who the entries' owners become.
#[derive(Debug, Clone, Copy)]
enum Owners {
    Keep,
    /// An ordinary user cannot own other users' files: record the caller.
    Caller {
        uid: u32,
        gid: u32,
    },
}

pub fn execute(args: SquashArgs) -> anyhow::Result<i32> {
    let compression =
        Compression::from_name(&args.comp, args.level).with_context(|| match args.level {
            Some(l) => format!("--comp {} --level {l}", args.comp),
            None => format!("--comp {}", args.comp),
        })?;
    let block_size = parse_block_size(&args.block_size)?;
    let meta = fs::symlink_metadata(&args.dir)
        .with_context(|| format!("cannot read the directory {}", args.dir.display()))?;
    if !meta.is_dir() {
        bail!("{} is not a directory", args.dir.display());
    }
    let owners = if nix::unistd::geteuid().is_root() {
        Owners::Keep
    } else {
        Owners::Caller {
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
        }
    };
    let options = WriterOptions {
        compression,
        block_size,
        mkfs_time: None,
    };
    let mut writer = Writer::create(&args.out, options)
        .with_context(|| format!("cannot write the image {}", args.out.display()))?;
    let skip = [
        fs::metadata(&args.out).ok(),
        fs::metadata(writer.temp_path()).ok(),
    ]
    .into_iter()
    .flatten()
    .map(|m| (m.dev(), m.ino()))
    .collect();
    let mut walker = Walker {
        writer: &mut writer,
        owners,
        links: HashMap::new(),
        skip,
    };
    walker.add(&args.dir, b"", &meta)?;
    walker.walk(&args.dir, Vec::new())?;
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

struct Walker<'a> {
    writer: &'a mut Writer,
    owners: Owners,
    /// (dev, ino) of multiply-linked non-directories -> first image path.
    links: HashMap<(u64, u64), Vec<u8>>,
    /// (dev, ino) of the output and its temporary file, skipped when they
    /// lie inside DIR (as mksquashfs skips its own output).
    skip: Vec<(u64, u64)>,
}

impl Walker<'_> {
    /// Add the children of `dir` (image path `prefix`), sorted by name.
    fn walk(&mut self, dir: &Path, prefix: Vec<u8>) -> anyhow::Result<()> {
        let mut names: Vec<std::ffi::OsString> = fs::read_dir(dir)
            .with_context(|| format!("cannot list {}", dir.display()))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .with_context(|| format!("cannot list {}", dir.display()))?;
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            let path = dir.join(&name);
            let mut image_path = prefix.clone();
            if !image_path.is_empty() {
                image_path.push(b'/');
            }
            image_path.extend_from_slice(name.as_bytes());
            let meta = fs::symlink_metadata(&path)
                .with_context(|| format!("cannot stat {}", path.display()))?;
            if meta.is_file() && self.skip.contains(&(meta.dev(), meta.ino())) {
                continue;
            }
            self.add(&path, &image_path, &meta)?;
            if meta.is_dir() {
                self.walk(&path, image_path)?;
            }
        }
        Ok(())
    }

    fn entry_meta(&self, path: &Path, meta: &fs::Metadata) -> anyhow::Result<EntryMeta> {
        let (uid, gid) = match self.owners {
            Owners::Keep => (meta.uid(), meta.gid()),
            Owners::Caller { uid, gid } => (uid, gid),
        };
        Ok(EntryMeta {
            mode: (meta.mode() & 0o7777) as u16,
            uid,
            gid,
            mtime: meta.mtime().clamp(0, i64::from(u32::MAX)) as u32,
            xattrs: read_xattrs(path)?,
        })
    }

    fn add(&mut self, path: &Path, image_path: &[u8], meta: &fs::Metadata) -> anyhow::Result<()> {
        let ft = meta.file_type();
        if !ft.is_dir() && meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if let Some(first) = self.links.get(&key) {
                self.writer
                    .add_hardlink(image_path, first)
                    .with_context(|| format!("cannot add {}", path.display()))?;
                return Ok(());
            }
            self.links.insert(key, image_path.to_vec());
        }
        let em = self.entry_meta(path, meta)?;
        let added = if ft.is_dir() {
            self.writer.add_dir(image_path, em)
        } else if ft.is_file() {
            let mut file =
                fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
            self.writer.add_file(image_path, em, &mut file).map(|_| ())
        } else if ft.is_symlink() {
            let target = fs::read_link(path)
                .with_context(|| format!("cannot read link {}", path.display()))?;
            self.writer
                .add_symlink(image_path, em, target.as_os_str().as_bytes())
        } else {
            let rdev = meta.rdev();
            let (major, minor) = (
                nix::sys::stat::major(rdev) as u32,
                nix::sys::stat::minor(rdev) as u32,
            );
            let kind = if ft.is_char_device() {
                SpecialKind::CharDevice { major, minor }
            } else if ft.is_block_device() {
                SpecialKind::BlockDevice { major, minor }
            } else if ft.is_fifo() {
                SpecialKind::Fifo
            } else {
                SpecialKind::Socket
            };
            self.writer.add_special(image_path, em, kind)
        };
        added.with_context(|| format!("cannot add {}", path.display()))
    }
}

/// The xattrs squashfs can store; others (system.*: POSIX ACLs) are
/// skipped with a warning.
fn read_xattrs(path: &Path) -> anyhow::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut list = vec![0u8; 4096];
    let len = loop {
        match rustix::fs::llistxattr(path, &mut list[..]) {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) => list.resize(list.len() * 4, 0),
            // Filesystems without xattr support.
            Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => {
                return Err(std::io::Error::from(e))
                    .with_context(|| format!("cannot list the xattrs of {}", path.display()));
            }
        }
        if list.len() > 1 << 24 {
            bail!("xattr list of {} is too large", path.display());
        }
    };
    let mut out = Vec::new();
    for name in list[..len].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        if format::split_xattr_name(name).is_none() {
            tracing::warn!(
                "{}: skipping xattr {} (squashfs stores only user., trusted. and security.)",
                path.display(),
                String::from_utf8_lossy(name)
            );
            continue;
        }
        let name_os = OsStr::from_bytes(name);
        let mut value = vec![0u8; 4096];
        let n = loop {
            match rustix::fs::lgetxattr(path, name_os, &mut value[..]) {
                Ok(n) => break n,
                Err(rustix::io::Errno::RANGE) if value.len() < 1 << 24 => {
                    value.resize(value.len() * 4, 0);
                }
                Err(e) => {
                    return Err(std::io::Error::from(e)).with_context(|| {
                        format!(
                            "cannot read xattr {} of {}",
                            String::from_utf8_lossy(name),
                            path.display()
                        )
                    });
                }
            }
        };
        value.truncate(n);
        out.push((name.to_vec(), value));
    }
    Ok(out)
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
