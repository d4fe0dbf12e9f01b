//! Compressors for the writer: the [`Compression`] choice (algorithm and
//! level), its validation, the compressor-options block some algorithms need
//! after the superblock, and block compression with per-thread reusable
//! contexts (a zstd or zlib context is costly to set up per 128 KiB block).
//!
//! Every function here returns `None` when compressing does not make a block
//! smaller: squashfs then stores the block raw with its "uncompressed" bit.

use std::cell::RefCell;

use super::format::CompressorId;

/// The compression algorithm and level of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Zstd {
        level: i32,
    },
    Gzip {
        level: u32,
    },
    Xz {
        level: u32,
    },
    Lz4,
    /// Everything stored raw (like `mksquashfs -noI -noD -noF -noX`); the
    /// superblock still has to name a compressor, gzip as mksquashfs does.
    None,
}

impl Default for Compression {
    fn default() -> Self {
        Self::Zstd { level: 3 }
    }
}

/// A compression choice that squashfs or the compressor cannot take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompressError {
    #[error("unknown compressor {0:?} (expected zstd, gzip, xz, lz4 or none)")]
    UnknownCompressor(String),
    #[error("compression level {level} is out of range for {name} ({range})")]
    LevelOutOfRange {
        name: &'static str,
        level: i64,
        range: &'static str,
    },
    #[error("{name} takes no compression level (got {level})")]
    NoLevel { name: &'static str, level: i64 },
}

impl Compression {
    /// Build a choice from a name and an optional level, as the CLI gets them.
    pub fn from_name(name: &str, level: Option<i64>) -> Result<Self, CompressError> {
        // The defaults first; a given level is range-checked as the i64 it
        // came as, and only then narrowed.
        let default = match name {
            "zstd" => Self::Zstd { level: 3 },
            "gzip" => Self::Gzip { level: 9 },
            "xz" => Self::Xz { level: 6 },
            "lz4" => Self::Lz4,
            "none" => Self::None,
            other => return Err(CompressError::UnknownCompressor(other.to_string())),
        };
        let Some(l) = level else {
            return Ok(default);
        };
        if let Self::Lz4 | Self::None = default {
            return Err(CompressError::NoLevel {
                name: default.name(),
                level: l,
            });
        }
        let (lo, hi, range) = default.level_range();
        let out_of_range = || CompressError::LevelOutOfRange {
            name: default.name(),
            level: l,
            range,
        };
        if l < lo || l > hi {
            return Err(out_of_range());
        }
        let comp = match default {
            Self::Zstd { .. } => Self::Zstd {
                level: i32::try_from(l).map_err(|_| out_of_range())?,
            },
            Self::Gzip { .. } => Self::Gzip {
                level: u32::try_from(l).map_err(|_| out_of_range())?,
            },
            Self::Xz { .. } => Self::Xz {
                level: u32::try_from(l).map_err(|_| out_of_range())?,
            },
            Self::Lz4 | Self::None => default,
        };
        comp.validate()?;
        Ok(comp)
    }

    fn level_range(self) -> (i64, i64, &'static str) {
        match self {
            Self::Zstd { .. } => (1, 22, "1..=22"),
            Self::Gzip { .. } => (1, 9, "1..=9"),
            Self::Xz { .. } => (0, 9, "0..=9"),
            Self::Lz4 | Self::None => (0, 0, "none"),
        }
    }

    /// Check the level is one the algorithm accepts.
    pub fn validate(self) -> Result<(), CompressError> {
        let level = match self {
            Self::Zstd { level } => i64::from(level),
            Self::Gzip { level } | Self::Xz { level } => i64::from(level),
            Self::Lz4 | Self::None => return Ok(()),
        };
        let (lo, hi, range) = self.level_range();
        if level < lo || level > hi {
            return Err(CompressError::LevelOutOfRange {
                name: self.name(),
                level,
                range,
            });
        }
        Ok(())
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Zstd { .. } => "zstd",
            Self::Gzip { .. } => "gzip",
            Self::Xz { .. } => "xz",
            Self::Lz4 => "lz4",
            Self::None => "none",
        }
    }

    /// The id stored in the superblock.
    pub fn id(self) -> CompressorId {
        match self {
            Self::Zstd { .. } => CompressorId::Zstd,
            Self::Gzip { .. } | Self::None => CompressorId::Gzip,
            Self::Xz { .. } => CompressorId::Xz,
            Self::Lz4 => CompressorId::Lz4,
        }
    }

    /// The compressor-options payload written (as an uncompressed metadata
    /// block) right after the superblock, if this algorithm needs one.
    /// lz4 must have it: unsquashfs and the kernel refuse an lz4 image
    /// without the version word. The others are read with their defaults
    /// (xz: dictionary = block size, which is what we use).
    pub fn options_payload(self) -> Option<Vec<u8>> {
        match self {
            Self::Lz4 => {
                // struct lz4_comp_opts { u32 version = 1 (LZ4_LEGACY); u32 flags }
                let mut v = Vec::with_capacity(8);
                v.extend_from_slice(&1u32.to_le_bytes());
                v.extend_from_slice(&0u32.to_le_bytes());
                Some(v)
            }
            _ => None,
        }
    }

    /// Compress one block (data, fragment or metadata). `None` means "store
    /// it raw": compression failed to shrink it, or the choice is `None`.
    pub fn compress(self, input: &[u8], block_size: u32) -> Option<Vec<u8>> {
        if input.is_empty() {
            return None;
        }
        let out = match self {
            Self::Zstd { level } => zstd_compress(level, input),
            Self::Gzip { level } => gzip_compress(level, input),
            Self::Xz { level } => xz_compress(level, block_size, input),
            Self::Lz4 => Some(lz4_flex::block::compress(input)),
            Self::None => None,
        }?;
        (out.len() < input.len()).then_some(out)
    }
}

impl Compression {
    /// Decompress a block this choice wrote, at most `max` bytes: the writer
    /// reads a fragment block back to byte-compare a duplicate candidate.
    /// `None` if the data does not decode (then it is not a duplicate). The
    /// reader's bounded decoders do the work, so both sides agree on the format.
    pub fn decompress(self, input: &[u8], max: usize) -> Option<Vec<u8>> {
        match self {
            // Everything of a `None` image is stored with the raw flag.
            Self::None => Some(input.to_vec()),
            _ => super::decompress::decompress(self.id(), input, max).ok(),
        }
    }
}

thread_local! {
    /// One zstd context per thread and level, reused for every block.
    static ZSTD: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
    /// One zlib context per thread and level.
    static ZLIB: RefCell<Option<(u32, flate2::Compress)>> = const { RefCell::new(None) };
}

fn zstd_compress(level: i32, input: &[u8]) -> Option<Vec<u8>> {
    ZSTD.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|(l, _)| *l != level) {
            *slot = Some((level, zstd::bulk::Compressor::new(level).ok()?));
        }
        let (_, ctx) = slot.as_mut()?;
        // Room for one byte less than the input: if it does not fit, the
        // block is stored raw anyway.
        let mut out = Vec::with_capacity(input.len().saturating_sub(1));
        ctx.compress_to_buffer(input, &mut out).ok()?;
        Some(out)
    })
}

fn gzip_compress(level: u32, input: &[u8]) -> Option<Vec<u8>> {
    ZLIB.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|(l, _)| *l != level) {
            // squashfs "gzip" is a zlib stream (header + adler32), window 15.
            *slot = Some((
                level,
                flate2::Compress::new(flate2::Compression::new(level), true),
            ));
        }
        let (_, ctx) = slot.as_mut()?;
        ctx.reset();
        // Room for the worst case (zlib's deflateBound): a stream cut short
        // by a full output buffer leaves state behind that reset() does not
        // clear with the zlib-rs backend, and the next block on this thread
        // came out corrupt (found by the write-then-read fuzz harness).
        let mut out = Vec::with_capacity(input.len() + input.len() / 1000 + 64);
        let status = ctx
            .compress_vec(input, &mut out, flate2::FlushCompress::Finish)
            .ok();
        if status != Some(flate2::Status::StreamEnd) {
            // Never reuse a context whose stream did not end cleanly.
            *slot = None;
            return None;
        }
        Some(out)
    })
}

fn xz_compress(level: u32, block_size: u32, input: &[u8]) -> Option<Vec<u8>> {
    // The kernel decodes xz with a preallocated dictionary of block-size
    // bytes: a preset's default 8 MiB dictionary would make it refuse the
    // image, so cap the dictionary at the block size (as mksquashfs does).
    let mut opts = liblzma::stream::LzmaOptions::new_preset(level).ok()?;
    opts.dict_size(block_size.max(8192));
    let mut filters = liblzma::stream::Filters::new();
    filters.lzma2(&opts);
    // CRC32: the kernel's xz decoder does not do CRC64 everywhere.
    let mut stream =
        liblzma::stream::Stream::new_stream_encoder(&filters, liblzma::stream::Check::Crc32)
            .ok()?;
    let mut out = Vec::with_capacity(input.len() + 128);
    loop {
        // total_in counts bytes taken from `input`, so it fits in a usize;
        // failing that, the block is stored raw like any other xz failure.
        let consumed = usize::try_from(stream.total_in()).ok()?;
        let status = stream
            .process_vec(
                input.get(consumed..)?,
                &mut out,
                liblzma::stream::Action::Finish,
            )
            .ok()?;
        if status == liblzma::stream::Status::StreamEnd {
            return Some(out);
        }
        if out.len() >= input.len() {
            return None;
        }
        out.reserve(input.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_levels_are_checked() {
        assert_eq!(
            Compression::from_name("zstd", None),
            Ok(Compression::Zstd { level: 3 })
        );
        assert_eq!(
            Compression::from_name("gzip", Some(6)),
            Ok(Compression::Gzip { level: 6 })
        );
        assert!(matches!(
            Compression::from_name("zstd", Some(23)),
            Err(CompressError::LevelOutOfRange { .. })
        ));
        assert!(matches!(
            Compression::from_name("xz", Some(-1)),
            Err(CompressError::LevelOutOfRange { .. })
        ));
        assert!(matches!(
            Compression::from_name("lz4", Some(1)),
            Err(CompressError::NoLevel { .. })
        ));
        assert!(matches!(
            Compression::from_name("lzo", None),
            Err(CompressError::UnknownCompressor(_))
        ));
    }

    #[test]
    fn every_compressor_shrinks_text_and_refuses_noise() {
        let text: Vec<u8> = b"squashfs ".iter().cycle().take(100_000).copied().collect();
        // A simple xorshift: incompressible bytes without a rand dependency.
        let mut x = 0x1234_5678_9abc_def0u64;
        let noise: Vec<u8> = (0..100_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()[0]
            })
            .collect();
        for comp in [
            Compression::Zstd { level: 3 },
            Compression::Gzip { level: 9 },
            Compression::Xz { level: 6 },
            Compression::Lz4,
        ] {
            let out = comp.compress(&text, 131072).expect("text compresses");
            assert!(out.len() < text.len() / 10, "{comp:?}");
            assert_eq!(comp.compress(&noise, 131072), None, "{comp:?}");
        }
        assert_eq!(Compression::None.compress(&text, 131072), None);
    }

    #[test]
    fn zstd_output_decompresses() {
        let text: Vec<u8> = (0..50_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let out = Compression::Zstd { level: 3 }
            .compress(&text, 131072)
            .expect("compresses");
        let back = zstd::bulk::decompress(&out, text.len()).expect("decompress");
        assert_eq!(back, text);
        for comp in [
            Compression::Zstd { level: 3 },
            Compression::Gzip { level: 6 },
            Compression::Xz { level: 1 },
            Compression::Lz4,
        ] {
            let c = comp.compress(&text, 131072).expect("compresses");
            let back = comp.decompress(&c, text.len());
            assert!(back.as_deref() == Some(&text[..]), "{comp:?}");
        }
    }
}
