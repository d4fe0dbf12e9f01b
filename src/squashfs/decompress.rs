//! Decompressors for the reader, one per compressor mksquashfs writes: gzip
//! (zlib streams, via flate2 with zlib-rs), lzma and xz (liblzma), lzo (a
//! bounded LZO1X decoder written here), lz4 (lz4_flex, raw block format) and
//! zstd.
//!
//! Every call takes the largest output the caller accepts (8 KiB for a
//! metadata block, the block size for a data block or fragment) and never
//! allocates more than that, whatever the compressed bytes claim: input comes
//! from untrusted images.

use std::io::Read;

use super::format::CompressorId;

/// Memory a hostile lzma/xz header may make liblzma reserve (its dictionary).
/// squashfs dictionaries never exceed the block size (1 MiB), so this leaves
/// room without letting an image ask for gigabytes.
const LZMA_MEMLIMIT: u64 = 64 << 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecompressError {
    #[error("{compressor} data is corrupt: {reason}")]
    Corrupt {
        compressor: &'static str,
        reason: String,
    },
    #[error("{compressor} data decompresses to more than {limit} bytes")]
    TooLarge {
        compressor: &'static str,
        limit: usize,
    },
}

fn corrupt(compressor: CompressorId, reason: impl ToString) -> DecompressError {
    DecompressError::Corrupt {
        compressor: compressor.name(),
        reason: reason.to_string(),
    }
}

/// Decompress `input` (one squashfs block) with `compressor`; fails if the
/// result would be longer than `max_out` bytes.
pub fn decompress(
    compressor: CompressorId,
    input: &[u8],
    max_out: usize,
) -> Result<Vec<u8>, DecompressError> {
    let out = match compressor {
        // squashfs "gzip" blocks are zlib streams (2-byte header, adler32).
        CompressorId::Gzip => {
            read_bounded(compressor, flate2::read::ZlibDecoder::new(input), max_out)?
        }
        CompressorId::Xz => {
            let stream = liblzma::stream::Stream::new_stream_decoder(LZMA_MEMLIMIT, 0)
                .map_err(|e| corrupt(compressor, e))?;
            read_bounded(
                compressor,
                liblzma::read::XzDecoder::new_stream(input, stream),
                max_out,
            )?
        }
        // squashfs-tools writes the legacy "lzma alone" format (13-byte header).
        CompressorId::Lzma => {
            let stream = liblzma::stream::Stream::new_lzma_decoder(LZMA_MEMLIMIT)
                .map_err(|e| corrupt(compressor, e))?;
            read_bounded(
                compressor,
                liblzma::read::XzDecoder::new_stream(input, stream),
                max_out,
            )?
        }
        CompressorId::Lz4 => {
            let mut out = vec![0u8; max_out];
            let n = lz4_flex::block::decompress_into(input, &mut out)
                .map_err(|e| corrupt(compressor, e))?;
            out.truncate(n);
            out
        }
        // The bulk API decodes into a buffer of exactly `max_out` bytes and
        // needs no window allocation, so frame headers cannot inflate memory.
        CompressorId::Zstd => zstd_decompress(input, max_out).map_err(|e| {
            // zstd reports "Destination buffer is too small" for oversize output.
            corrupt(compressor, e)
        })?,
        CompressorId::Lzo => lzo1x_decompress(input, max_out)?,
    };
    Ok(out)
}

thread_local! {
    /// One zstd decompression context per thread, reused for every block
    /// (one made per block was a percent of an extraction's time).
    static ZSTD_DCTX: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// `zstd::bulk::decompress` (a buffer of at most `max_out` bytes, no window
/// allocation) with the thread's context.
fn zstd_decompress(input: &[u8], max_out: usize) -> std::io::Result<Vec<u8>> {
    ZSTD_DCTX.with(|cell| {
        let mut slot = cell.borrow_mut();
        let ctx = match slot.as_mut() {
            Some(ctx) => ctx,
            None => slot.insert(zstd::bulk::Decompressor::new()?),
        };
        ctx.decompress(input, max_out)
    })
}

/// Read a decoder to the end, but at most `max_out + 1` bytes, so an
/// oversize block is detected without ever holding more than that.
fn read_bounded(
    compressor: CompressorId,
    reader: impl Read,
    max_out: usize,
) -> Result<Vec<u8>, DecompressError> {
    let mut out = Vec::with_capacity(max_out.min(1 << 20));
    reader
        .take(max_out as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| corrupt(compressor, e))?;
    if out.len() > max_out {
        return Err(DecompressError::TooLarge {
            compressor: compressor.name(),
            limit: max_out,
        });
    }
    Ok(out)
}

/// An LZO1X decoder (the format of `lzo1x_decompress_safe`) that checks every
/// input read, every back-reference distance and the output limit. The
/// lzokay-native crate indexes its output with unchecked distances and grows
/// it without bound, which a hostile image turns into a panic or an
/// allocation of hundreds of MB, so the reader does not use it.
fn lzo1x_decompress(input: &[u8], max_out: usize) -> Result<Vec<u8>, DecompressError> {
    let mut d = LzoDecoder {
        input,
        ip: 0,
        out: Vec::with_capacity(max_out.min(1 << 20)),
        max_out,
    };
    d.run()?;
    Ok(d.out)
}

struct LzoDecoder<'a> {
    input: &'a [u8],
    ip: usize,
    out: Vec<u8>,
    max_out: usize,
}

impl LzoDecoder<'_> {
    fn err(&self, reason: &str) -> DecompressError {
        DecompressError::Corrupt {
            compressor: "lzo",
            reason: format!("{reason} at input byte {}", self.ip),
        }
    }

    fn byte(&mut self) -> Result<usize, DecompressError> {
        let b = *self
            .input
            .get(self.ip)
            .ok_or_else(|| self.err("input ends early"))?;
        self.ip += 1;
        Ok(usize::from(b))
    }

    fn le16(&mut self) -> Result<usize, DecompressError> {
        let lo = self.byte()?;
        let hi = self.byte()?;
        Ok(lo | (hi << 8))
    }

    /// A length extension: a run of zero bytes (255 each) and a final
    /// non-zero byte, added to `base`.
    fn long_length(&mut self, base: usize) -> Result<usize, DecompressError> {
        let mut zeros = 0usize;
        while self.byte()? == 0 {
            zeros += 1;
        }
        self.ip -= 1;
        let last = self.byte()?;
        // zeros < input length, so this cannot overflow usize on 64-bit;
        // saturate anyway so 32-bit targets stay correct.
        Ok(zeros
            .saturating_mul(255)
            .saturating_add(base)
            .saturating_add(last))
    }

    fn too_large(&self) -> DecompressError {
        DecompressError::TooLarge {
            compressor: "lzo",
            limit: self.max_out,
        }
    }

    fn literals(&mut self, len: usize) -> Result<(), DecompressError> {
        let end = self
            .ip
            .checked_add(len)
            .filter(|&e| e <= self.input.len())
            .ok_or_else(|| self.err("literal run past the end of input"))?;
        if self.out.len() + len > self.max_out {
            return Err(self.too_large());
        }
        self.out.extend_from_slice(&self.input[self.ip..end]);
        self.ip = end;
        Ok(())
    }

    fn copy_match(&mut self, dist: usize, len: usize) -> Result<(), DecompressError> {
        if dist == 0 || dist > self.out.len() {
            return Err(self.err("back-reference before the start of output"));
        }
        if len > self.max_out - self.out.len() {
            return Err(self.too_large());
        }
        let start = self.out.len() - dist;
        // Byte by byte: the source may overlap what is being written.
        for i in 0..len {
            let b = self.out[start + i];
            self.out.push(b);
        }
        Ok(())
    }

    fn run(&mut self) -> Result<(), DecompressError> {
        // `state` is the number of literals the previous instruction copied
        // (4 meaning "4 or more"); it changes how codes 0..15 are read.
        let mut state = 0usize;
        match self.input.first().copied() {
            Some(b) if b >= 22 => {
                self.ip = 1;
                self.literals(usize::from(b) - 17)?;
                state = 4;
            }
            Some(b) if b >= 18 => {
                self.ip = 1;
                let n = usize::from(b) - 17;
                self.literals(n)?;
                state = n;
            }
            _ => {}
        }
        loop {
            let inst = self.byte()?;
            let (dist, len, next_state);
            if inst >= 64 {
                // M2: 3..8 bytes within 2 KiB.
                let h = self.byte()?;
                dist = (h << 3) + ((inst >> 2) & 7) + 1;
                len = (inst >> 5) + 1;
                next_state = inst & 3;
            } else if inst >= 32 {
                // M3: within 16 KiB.
                len = match inst & 0x1f {
                    0 => self.long_length(31)? + 2,
                    l => l + 2,
                };
                let v = self.le16()?;
                dist = (v >> 2) + 1;
                next_state = v & 3;
            } else if inst >= 16 {
                // M4: 16..48 KiB, or the end-of-stream marker.
                len = match inst & 7 {
                    0 => self.long_length(7)? + 2,
                    l => l + 2,
                };
                let v = self.le16()?;
                let d = ((inst & 8) << 11) + (v >> 2);
                if d == 0 {
                    return Ok(());
                }
                dist = d + 16384;
                next_state = v & 3;
            } else if state == 0 {
                // A run of 4 or more literals.
                let n = match inst {
                    0 => self.long_length(15)? + 3,
                    l => l + 3,
                };
                self.literals(n)?;
                state = 4;
                continue;
            } else if state < 4 {
                // M1 after 1..3 literals: 2 bytes within 1 KiB.
                let h = self.byte()?;
                dist = (inst >> 2) + (h << 2) + 1;
                len = 2;
                next_state = inst & 3;
            } else {
                // M1 after a literal run: 3 bytes at 2..3 KiB.
                let h = self.byte()?;
                dist = (inst >> 2) + (h << 2) + 2049;
                len = 3;
                next_state = inst & 3;
            }
            self.copy_match(dist, len)?;
            self.literals(next_state)?;
            state = next_state;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zlib_roundtrip_and_limit() {
        use std::io::Write;
        let data: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&data).expect("compress");
        let packed = enc.finish().expect("finish");
        assert_eq!(
            decompress(CompressorId::Gzip, &packed, 20_000).expect("fits"),
            data
        );
        assert!(matches!(
            decompress(CompressorId::Gzip, &packed, 8192),
            Err(DecompressError::TooLarge { .. })
        ));
        assert!(decompress(CompressorId::Gzip, &packed[..10], 20_000).is_err());
    }

    #[test]
    fn zstd_lz4_xz_roundtrip_and_limit() {
        let data: Vec<u8> = (0..50_000u32).map(|i| (i * 7 % 13) as u8).collect();
        let z = zstd::bulk::compress(&data, 3).expect("zstd");
        assert_eq!(
            decompress(CompressorId::Zstd, &z, 50_000).expect("zstd"),
            data
        );
        assert!(decompress(CompressorId::Zstd, &z, 49_999).is_err());
        let l = lz4_flex::block::compress(&data);
        assert_eq!(
            decompress(CompressorId::Lz4, &l, 50_000).expect("lz4"),
            data
        );
        assert!(decompress(CompressorId::Lz4, &l, 100).is_err());
        let mut x = Vec::new();
        liblzma::read::XzEncoder::new(&data[..], 1)
            .read_to_end(&mut x)
            .expect("xz");
        assert_eq!(decompress(CompressorId::Xz, &x, 50_000).expect("xz"), data);
        assert!(matches!(
            decompress(CompressorId::Xz, &x, 1000),
            Err(DecompressError::TooLarge { .. })
        ));
    }

    #[test]
    fn lzo_decodes_literals_matches_and_end_marker() {
        // 0x15 = 22 - 1 => first byte >= 18: copy 4 literals (state 4);
        // then an M2 match: inst 0x40 (len 3, D=0, S=0) with H=0 -> dist 1;
        // then the end marker 0x11 0x00 0x00.
        let input = [21u8, b'a', b'b', b'c', b'd', 0x40, 0x00, 0x11, 0x00, 0x00];
        let out = lzo1x_decompress(&input, 100).expect("decode");
        assert_eq!(out, b"abcdddd");
        assert!(matches!(
            lzo1x_decompress(&input, 5),
            Err(DecompressError::TooLarge { .. })
        ));
    }

    #[test]
    fn lzo_rejects_hostile_input_without_panicking() {
        // A match before any output, a truncated stream, a huge length run.
        for input in [
            &[0x40u8, 0x00][..],
            &[21, b'a'][..],
            &[0x00, 0x00, 0x00, 0x00, 0x01][..],
            &[][..],
            &[0x20, 0, 0, 0, 1, 0xff, 0xff][..],
        ] {
            assert!(lzo1x_decompress(input, 8192).is_err(), "{input:?}");
        }
    }
}
