//! GNU sparse files in tar layers, in the PAX formats GNU tar writes with
//! `--sparse --format=pax` (0.0, 0.1 and its default 1.0): the tar crate
//! hands such an entry over as a regular file named `GNUSparseFile.N/NAME`
//! whose stored data holds only the non-hole fragments (and, in 1.0, the
//! fragment map in front of them). This module reads the map the way Go's
//! archive/tar reads it (docker, containerd and umoci all use it, so an
//! image means what they make of it) and expands the fragments back into
//! the file, holes as zeros. (Old GNU sparse entries, type 'S', are
//! refused: docker, containerd and umoci refuse them too.)
//!
//! Pure parsing over `Read`; no I/O of its own.

use std::io::{self, Read};

/// Fragments a map may list: 16 bytes each in memory, so a hostile map
/// costs at most 256 MiB (Go has no limit; real sparse files stay far
/// below it).
pub const MAX_FRAGMENTS: usize = 16 << 20;

/// Tar block size: the 1.0 map is stored in whole blocks.
const BLOCK: usize = 512;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SparseError {
    #[error("GNU sparse record {key} has the non-number {value:?}")]
    Number { key: &'static str, value: String },
    #[error("GNU.sparse.offset and GNU.sparse.numbytes records do not alternate")]
    RecordOrder,
    #[error("GNU.sparse.numblocks says {blocks} fragments but the map has {numbers} numbers")]
    Count { blocks: u64, numbers: usize },
    #[error("sparse map lists {count} fragments (at most {MAX_FRAGMENTS} are read)")]
    TooMany { count: u64 },
    #[error(
        "sparse map fragment {index} (offset {offset}, length {length}) is negative, overlaps the one before or ends past the file size {size}"
    )]
    Fragment {
        index: usize,
        offset: i64,
        length: i64,
        size: i64,
    },
    #[error("sparse map is cut short by the end of the entry's data")]
    MapTruncated,
    #[error("sparse map places {mapped} bytes of data but the entry stores {stored}")]
    DataSize { mapped: u64, stored: u64 },
    #[error("sparse file size {size} is negative")]
    NegativeSize { size: i64 },
    #[error("reading the sparse map")]
    Read(String),
}

/// One stored fragment of a sparse file: `length` bytes at `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment {
    pub offset: u64,
    pub length: u64,
}

/// Which GNU PAX sparse format an entry uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SparseFormat {
    /// 0.0 (repeated offset/numbytes records) or 0.1 (`GNU.sparse.map`):
    /// the map is in the PAX records.
    Records,
    /// 1.0: the map is at the start of the entry's data.
    InData,
}

/// The GNU sparse records of one entry's PAX header, gathered in order.
#[derive(Debug, Default, Clone)]
pub struct SparseRecords {
    major: Vec<u8>,
    minor: Vec<u8>,
    name: Vec<u8>,
    size: Vec<u8>,
    realsize: Vec<u8>,
    numblocks: Vec<u8>,
    map: Vec<u8>,
    /// 0.0's `GNU.sparse.offset` / `GNU.sparse.numbytes` values, in order.
    pairs: Vec<Vec<u8>>,
    pairs_out_of_order: bool,
}

fn show(v: &[u8]) -> String {
    String::from_utf8_lossy(v).into_owned()
}

/// A decimal number as Go's strconv.ParseInt(s, 10, 64) reads it.
fn decimal(key: &'static str, value: &[u8]) -> Result<i64, SparseError> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| SparseError::Number {
            key,
            value: show(value),
        })
}

impl SparseRecords {
    /// Takes one PAX record; false if it is not a GNU sparse record. Like
    /// a Go map, a repeated key keeps its last value.
    pub fn record(&mut self, key: &[u8], value: &[u8]) -> bool {
        let slot = match key {
            b"GNU.sparse.major" => &mut self.major,
            b"GNU.sparse.minor" => &mut self.minor,
            b"GNU.sparse.name" => &mut self.name,
            b"GNU.sparse.size" => &mut self.size,
            b"GNU.sparse.realsize" => &mut self.realsize,
            b"GNU.sparse.numblocks" => &mut self.numblocks,
            b"GNU.sparse.map" => &mut self.map,
            b"GNU.sparse.offset" | b"GNU.sparse.numbytes" => {
                // Go's parsePAX: offsets at even places, numbytes at odd
                // ones, no commas (they are joined into a 0.1 map).
                let want_offset = self.pairs.len() % 2 == 0;
                if want_offset != (key == b"GNU.sparse.offset") || value.contains(&b',') {
                    self.pairs_out_of_order = true;
                }
                self.pairs.push(value.to_vec());
                return true;
            }
            _ => return false,
        };
        *slot = value.to_vec();
        true
    }

    /// The 0.1 map, or 0.0's records joined into one.
    fn joined_map(&self) -> Vec<u8> {
        if self.pairs.is_empty() {
            self.map.clone()
        } else {
            self.pairs.join(&b","[..])
        }
    }

    /// The format these records announce, as Go's readGNUSparsePAXHeaders
    /// tells it: None when the entry is not sparse, or uses a version
    /// nobody knows (Go then reads it as a plain file, and so does cairn).
    pub fn format(&self) -> Result<Option<SparseFormat>, SparseError> {
        if self.pairs_out_of_order {
            return Err(SparseError::RecordOrder);
        }
        let (major, minor) = (self.major.as_slice(), self.minor.as_slice());
        Ok(match (major, minor) {
            (b"0", b"0" | b"1") => Some(SparseFormat::Records),
            (b"1", b"0") => Some(SparseFormat::InData),
            _ if !major.is_empty() || !minor.is_empty() => None,
            _ if !self.joined_map().is_empty() => Some(SparseFormat::Records),
            _ => None,
        })
    }

    /// `GNU.sparse.name`: the file's real name, when set.
    pub fn name(&self) -> Option<&[u8]> {
        (!self.name.is_empty()).then_some(self.name.as_slice())
    }

    /// The file's real size (`GNU.sparse.size`, else `GNU.sparse.realsize`);
    /// None when neither is set (the header's size then stands).
    pub fn real_size(&self) -> Result<Option<u64>, SparseError> {
        let (key, value) = if !self.size.is_empty() {
            ("GNU.sparse.size", &self.size)
        } else if !self.realsize.is_empty() {
            ("GNU.sparse.realsize", &self.realsize)
        } else {
            return Ok(None);
        };
        let size = decimal(key, value)?;
        u64::try_from(size)
            .map(Some)
            .map_err(|_| SparseError::NegativeSize { size })
    }

    /// The map of formats 0.0 and 0.1 (Go's readGNUSparseMap0x1).
    pub fn map_from_records(&self) -> Result<Vec<(i64, i64)>, SparseError> {
        let blocks = decimal("GNU.sparse.numblocks", &self.numblocks)?;
        let blocks = u64::try_from(blocks).map_err(|_| SparseError::Number {
            key: "GNU.sparse.numblocks",
            value: show(&self.numblocks),
        })?;
        if blocks > MAX_FRAGMENTS as u64 {
            return Err(SparseError::TooMany { count: blocks });
        }
        let map = self.joined_map();
        let numbers: Vec<&[u8]> = if map.is_empty() {
            Vec::new()
        } else {
            map.split(|b| *b == b',').collect()
        };
        if numbers.len() as u64 != 2 * blocks {
            return Err(SparseError::Count {
                blocks,
                numbers: numbers.len(),
            });
        }
        numbers
            .chunks_exact(2)
            .map(|pair| {
                Ok((
                    decimal("GNU.sparse.map", pair[0])?,
                    decimal("GNU.sparse.map", pair[1])?,
                ))
            })
            .collect()
    }
}

/// Reads the 1.0 map from the start of an entry's data (Go's
/// readGNUSparseMap1x0): newline-terminated decimal numbers, the count
/// first, then offset and length of each fragment, in whole 512-byte
/// blocks. Returns the map and the bytes it took.
pub fn read_map_in_data(data: &mut dyn Read) -> Result<(Vec<(i64, i64)>, u64), SparseError> {
    let mut reader = MapReader {
        data,
        block: [0; BLOCK],
        at: BLOCK,
        consumed: 0,
        token: Vec::new(),
    };
    let count = reader.number()?;
    let count = u64::try_from(count).map_err(|_| SparseError::Number {
        key: "sparse map count",
        value: count.to_string(),
    })?;
    let capacity = usize::try_from(count)
        .ok()
        .filter(|&c| c <= MAX_FRAGMENTS)
        .ok_or(SparseError::TooMany { count })?;
    let mut map = Vec::with_capacity(capacity);
    for _ in 0..count {
        let offset = reader.number()?;
        let length = reader.number()?;
        map.push((offset, length));
    }
    Ok((map, reader.consumed))
}

/// Newline-separated tokens read block by block, never past the block
/// holding the last newline needed.
struct MapReader<'a> {
    data: &'a mut dyn Read,
    block: [u8; BLOCK],
    at: usize,
    consumed: u64,
    token: Vec<u8>,
}

impl MapReader<'_> {
    fn next_block(&mut self) -> Result<(), SparseError> {
        let mut filled = 0;
        while filled < BLOCK {
            match self.data.read(&mut self.block[filled..]) {
                Ok(0) => return Err(SparseError::MapTruncated),
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(SparseError::Read(e.to_string())),
            }
        }
        self.at = 0;
        self.consumed += BLOCK as u64;
        Ok(())
    }

    fn number(&mut self) -> Result<i64, SparseError> {
        self.token.clear();
        loop {
            if self.at == BLOCK {
                self.next_block()?;
            }
            let b = self.block[self.at];
            self.at += 1;
            if b == b'\n' {
                return decimal("sparse map", &self.token);
            }
            // A token no number needs: a hostile map, not a long number.
            if self.token.len() > 64 {
                return Err(SparseError::Number {
                    key: "sparse map",
                    value: show(&self.token),
                });
            }
            self.token.push(b);
        }
    }
}

/// Checks a map against the file size and the data the entry stores, as
/// Go does (validateSparseEntries, and reading to the end would fail with
/// errMissData or errUnrefData when the stored data is short or long).
pub fn validate(map: &[(i64, i64)], size: u64, stored: u64) -> Result<Vec<Fragment>, SparseError> {
    // Sizes come from i64 records: the saturation never bites.
    let size_i = i64::try_from(size).unwrap_or(i64::MAX);
    let mut fragments = Vec::with_capacity(map.len());
    let mut previous_end = 0i64;
    let mut mapped = 0u64;
    for (index, &(offset, length)) in map.iter().enumerate() {
        let bad = || SparseError::Fragment {
            index,
            offset,
            length,
            size: size_i,
        };
        // Negative numbers fail the conversions: refused, as Go refuses them.
        let (Ok(offset_u), Ok(length_u)) = (u64::try_from(offset), u64::try_from(length)) else {
            return Err(bad());
        };
        let end = offset.checked_add(length).ok_or_else(bad)?;
        if end > size_i || offset < previous_end {
            return Err(bad());
        }
        previous_end = end;
        mapped += length_u;
        fragments.push(Fragment {
            offset: offset_u,
            length: length_u,
        });
    }
    if mapped != stored {
        return Err(SparseError::DataSize { mapped, stored });
    }
    Ok(fragments)
}

/// A sparse file's content: the stored fragments from `stored`, zeros
/// between and after them, `size` bytes in all.
#[derive(Debug)]
pub struct SparseReader<R> {
    stored: R,
    fragments: Vec<Fragment>,
    next: usize,
    pos: u64,
    size: u64,
}

impl<R: Read> SparseReader<R> {
    pub fn new(stored: R, fragments: Vec<Fragment>, size: u64) -> SparseReader<R> {
        SparseReader {
            stored,
            fragments,
            next: 0,
            pos: 0,
            size,
        }
    }

    /// The stored data, for draining what the reader did not read.
    pub fn into_stored(self) -> R {
        self.stored
    }
}

impl<R: Read> Read for SparseReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() || self.pos >= self.size {
            return Ok(0);
        }
        let want = (buf.len() as u64).min(self.size - self.pos);
        while self
            .fragments
            .get(self.next)
            .is_some_and(|f| self.pos >= f.offset + f.length)
        {
            self.next += 1;
        }
        match self.fragments.get(self.next) {
            Some(f) if self.pos >= f.offset => {
                // At most `buf.len()`: `want` is.
                let n =
                    usize::try_from(want.min(f.offset + f.length - self.pos)).unwrap_or(buf.len());
                let got = self.stored.read(&mut buf[..n])?;
                if got == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the sparse file's stored data ends before its map does",
                    ));
                }
                self.pos += got as u64;
                Ok(got)
            }
            next => {
                let hole_end = next.map_or(self.size, |f| f.offset);
                let n = usize::try_from(want.min(hole_end - self.pos)).unwrap_or(buf.len());
                buf[..n].fill(0);
                self.pos += n as u64;
                Ok(n)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(pairs: &[(&str, &str)]) -> SparseRecords {
        let mut r = SparseRecords::default();
        for (k, v) in pairs {
            assert!(r.record(k.as_bytes(), v.as_bytes()), "{k}");
        }
        r
    }

    #[test]
    fn tells_the_formats_apart_like_go() {
        let v10 = records(&[("GNU.sparse.major", "1"), ("GNU.sparse.minor", "0")]);
        assert_eq!(v10.format(), Ok(Some(SparseFormat::InData)));
        let v01 = records(&[("GNU.sparse.map", "0,5"), ("GNU.sparse.numblocks", "1")]);
        assert_eq!(v01.format(), Ok(Some(SparseFormat::Records)));
        let v00 = records(&[
            ("GNU.sparse.size", "10"),
            ("GNU.sparse.numblocks", "1"),
            ("GNU.sparse.offset", "2"),
            ("GNU.sparse.numbytes", "3"),
        ]);
        assert_eq!(v00.format(), Ok(Some(SparseFormat::Records)));
        assert_eq!(v00.map_from_records(), Ok(vec![(2, 3)]));
        assert_eq!(v00.real_size(), Ok(Some(10)));
        // An unknown version is a plain file to Go, and so to cairn.
        let v20 = records(&[("GNU.sparse.major", "2"), ("GNU.sparse.minor", "0")]);
        assert_eq!(v20.format(), Ok(None));
        assert_eq!(SparseRecords::default().format(), Ok(None));
        let mut r = SparseRecords::default();
        assert!(!r.record(b"path", b"x"));
    }

    #[test]
    fn refuses_bad_records() {
        let out_of_order = records(&[("GNU.sparse.numbytes", "3"), ("GNU.sparse.offset", "2")]);
        assert_eq!(out_of_order.format(), Err(SparseError::RecordOrder));
        let comma = records(&[("GNU.sparse.offset", "2,3"), ("GNU.sparse.numbytes", "3")]);
        assert_eq!(comma.format(), Err(SparseError::RecordOrder));
        let short = records(&[("GNU.sparse.map", "0,5,9"), ("GNU.sparse.numblocks", "2")]);
        assert!(matches!(
            short.map_from_records(),
            Err(SparseError::Count { blocks: 2, .. })
        ));
        let nan = records(&[("GNU.sparse.map", "0,x"), ("GNU.sparse.numblocks", "1")]);
        assert!(matches!(
            nan.map_from_records(),
            Err(SparseError::Number { .. })
        ));
        let negative = records(&[("GNU.sparse.realsize", "-1")]);
        assert!(matches!(
            negative.real_size(),
            Err(SparseError::NegativeSize { .. })
        ));
        // `size` wins over `realsize`, as in Go.
        let both = records(&[("GNU.sparse.realsize", "7"), ("GNU.sparse.size", "9")]);
        assert_eq!(both.real_size(), Ok(Some(9)));
    }

    fn map_blocks(text: &str) -> Vec<u8> {
        let mut v = text.as_bytes().to_vec();
        v.resize(v.len().div_ceil(BLOCK) * BLOCK, 0);
        v
    }

    #[test]
    fn reads_the_1_0_map_in_whole_blocks() {
        let mut data = map_blocks("2\n1024\n5\n4096\n0\n");
        data.extend_from_slice(b"hello");
        let mut r = &data[..];
        let (map, used) = read_map_in_data(&mut r).expect("map");
        assert_eq!(map, vec![(1024, 5), (4096, 0)]);
        assert_eq!(used, 512);
        assert_eq!(r, b"hello");
        // A map spilling into a second block.
        let long: String = std::iter::once("100\n".to_owned())
            .chain((0..100).map(|i| format!("{}\n1\n", i * 10)))
            .collect();
        let data = map_blocks(&long);
        let (map, used) = read_map_in_data(&mut &data[..]).expect("long map");
        assert_eq!(map.len(), 100);
        assert_eq!(used, data.len() as u64);
        assert!(used > 512);
    }

    #[test]
    fn refuses_bad_1_0_maps() {
        let cut = b"2\n1024\n5\n";
        assert_eq!(
            read_map_in_data(&mut &cut[..]),
            Err(SparseError::MapTruncated)
        );
        // The block's NUL padding is no number either.
        let data = map_blocks("2\n1024\n5\n");
        assert!(read_map_in_data(&mut &data[..]).is_err());
        let data = map_blocks("x\n");
        assert!(matches!(
            read_map_in_data(&mut &data[..]),
            Err(SparseError::Number { .. })
        ));
        let data = map_blocks("99999999999\n");
        assert!(matches!(
            read_map_in_data(&mut &data[..]),
            Err(SparseError::TooMany { .. })
        ));
        let data = map_blocks(&"7".repeat(100));
        assert!(matches!(
            read_map_in_data(&mut &data[..]),
            Err(SparseError::Number { .. })
        ));
    }

    #[test]
    fn validates_maps_against_size_and_data() {
        assert_eq!(
            validate(&[(0, 2), (10, 3), (20, 0)], 20, 5),
            Ok(vec![
                Fragment {
                    offset: 0,
                    length: 2
                },
                Fragment {
                    offset: 10,
                    length: 3
                },
                Fragment {
                    offset: 20,
                    length: 0
                },
            ])
        );
        for bad in [
            vec![(-1, 2)],
            vec![(0, -2)],
            vec![(5, 2), (6, 1)],
            vec![(0, 21)],
            vec![(i64::MAX, 2)],
        ] {
            assert!(
                matches!(validate(&bad, 20, 3), Err(SparseError::Fragment { .. })),
                "{bad:?}"
            );
        }
        assert_eq!(
            validate(&[(0, 2)], 20, 3),
            Err(SparseError::DataSize {
                mapped: 2,
                stored: 3
            })
        );
    }

    #[test]
    fn expands_holes_as_zeros() {
        let fragments = validate(&[(2, 3), (8, 2), (12, 0)], 14, 5).expect("map");
        let mut r = SparseReader::new(&b"abcde"[..], fragments, 14);
        let mut out = Vec::new();
        // Small reads cross every boundary.
        let mut buf = [0u8; 3];
        loop {
            let n = r.read(&mut buf).expect("read");
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        assert_eq!(out, b"\0\0abc\0\0\0de\0\0\0\0");
        // No fragments at all: all hole.
        let mut r = SparseReader::new(&b""[..], Vec::new(), 4);
        let mut out = Vec::new();
        r.read_to_end(&mut out).expect("read");
        assert_eq!(out, [0; 4]);
    }

    #[test]
    fn short_stored_data_is_an_error() {
        let fragments = vec![Fragment {
            offset: 0,
            length: 4,
        }];
        let mut r = SparseReader::new(&b"ab"[..], fragments, 4);
        let mut out = Vec::new();
        let e = r.read_to_end(&mut out).expect_err("short");
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }
}
