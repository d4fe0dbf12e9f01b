//! Content digests (`sha256:<hex>`): parsing them from untrusted JSON and
//! file names, and a reader (and a writer) that hashes and counts what
//! streams through it so a blob is verified while it is used, and digested
//! while it is made, never read twice.

use sha2::{Digest as _, Sha256};
use std::fmt;
use std::io::{self, Read, Write};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DigestError {
    #[error("digest {value:?} is not of the form sha256:<64 hex digits>")]
    Malformed { value: String },
    #[error("digest {value:?} uses algorithm {algorithm:?}; only sha256 is supported")]
    Algorithm { value: String, algorithm: String },
}

/// A sha256 content digest, stored as its 64 lower-case hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

impl Digest {
    /// Parses `sha256:<64 hex>`; other algorithms are refused by name.
    pub fn parse(value: &str) -> Result<Digest, DigestError> {
        let Some((algorithm, hex)) = value.split_once(':') else {
            return Err(DigestError::Malformed {
                value: value.to_owned(),
            });
        };
        if algorithm != "sha256" {
            return Err(DigestError::Algorithm {
                value: value.to_owned(),
                algorithm: algorithm.to_owned(),
            });
        }
        Digest::from_hex(hex).ok_or_else(|| DigestError::Malformed {
            value: value.to_owned(),
        })
    }

    /// A bare 64-digit lower-case hex string (as in blob file names).
    pub fn from_hex(hex: &str) -> Option<Digest> {
        (hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))).then(
            || Digest {
                hex: hex.to_owned(),
            },
        )
    }

    pub fn of_bytes(data: &[u8]) -> Digest {
        Digest {
            hex: hex(&Sha256::digest(data)),
        }
    }

    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Hashes (sha256) and counts every byte read through it.
#[derive(Debug)]
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// The wrapped reader back, with the digest and size of what was read.
    pub fn into_parts(self) -> (R, Digest, u64) {
        (
            self.inner,
            Digest {
                hex: hex(&self.hasher.finalize()),
            },
            self.count,
        )
    }

    /// The digest and size of everything read so far.
    pub fn finish(self) -> (Digest, u64) {
        (
            Digest {
                hex: hex(&self.hasher.finalize()),
            },
            self.count,
        )
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// Hashes (sha256) and counts every byte written through it: a layer's
/// `diff_id` and blob digest are computed while it is written.
#[derive(Debug)]
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// The wrapped writer back, with the digest and size of what went
    /// through (flush it yourself: this does not).
    pub fn into_parts(self) -> (W, Digest, u64) {
        (
            self.inner,
            Digest {
                hex: hex(&self.hasher.finalize()),
            },
            self.count,
        )
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_and_prints() {
        let d = Digest::parse(&format!("sha256:{EMPTY}")).expect("valid");
        assert_eq!(d.to_string(), format!("sha256:{EMPTY}"));
        assert_eq!(d, Digest::of_bytes(b""));
    }

    #[test]
    fn refuses_malformed() {
        assert!(matches!(
            Digest::parse(EMPTY),
            Err(DigestError::Malformed { .. })
        ));
        assert!(matches!(
            Digest::parse("sha512:00"),
            Err(DigestError::Algorithm { .. })
        ));
        assert!(Digest::parse("sha256:../../etc/passwd").is_err());
        assert!(Digest::parse(&format!("sha256:{}", EMPTY.to_uppercase())).is_err());
        assert!(Digest::parse(&format!("sha256:{EMPTY}0")).is_err());
    }

    #[test]
    fn hashing_reader_counts_and_hashes() {
        let mut r = HashingReader::new(&b"hello"[..]);
        let mut out = Vec::new();
        r.read_to_end(&mut out).expect("read");
        let (d, n) = r.finish();
        assert_eq!(n, 5);
        assert_eq!(d, Digest::of_bytes(b"hello"));
    }

    #[test]
    fn hashing_writer_counts_and_hashes_what_was_accepted() {
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"hel").expect("write");
        w.write_all(b"lo").expect("write");
        let (inner, d, n) = w.into_parts();
        assert_eq!((inner.as_slice(), n), (&b"hello"[..], 5));
        assert_eq!(d, Digest::of_bytes(b"hello"));
    }
}
