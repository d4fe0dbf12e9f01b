//! A tar reader that reads a layer the way Go's archive/tar reads it.
//!
//! docker, containerd and umoci all unpack layers with Go's reader, so a
//! layer means what that reader says it means. Where two tar readers
//! disagree about the same bytes, an image can show one tree to the tool
//! that checks it and another to the one that runs it (tar "smuggling").
//! The tar crate disagrees with Go in several such places, so cairn reads
//! the stream itself and follows Go's `reader.go`:
//!
//! - PAX records are framed by their length prefix, not by newlines: a
//!   value may hold `\n` (the tar crate splits on it and loses the rest);
//! - a PAX `size` that does not parse refuses the entry (the tar crate
//!   ignores it and skips by the header's size);
//! - links, directories, devices and FIFOs store no data whatever their
//!   size field says (the tar crate skips `size` bytes, Go reads the next
//!   header right after them);
//! - the checksum may be the signed or the unsigned sum;
//! - a second PAX or GNU long-name header for the same entry replaces the
//!   first; a GNU long name wins over a PAX `path`;
//! - a global PAX header (`g`) is its own entry, applied to nothing;
//! - the layer may end at a header boundary, inside an entry's padding or
//!   after one zero block; anywhere else is a truncation.

use std::io::{self, Read};

/// Tar block size: entries start on block boundaries.
pub const BLOCK: u64 = 512;

/// Go's limit on the data of a PAX or GNU long-name header.
const MAX_SPECIAL: u64 = 1 << 20;

/// PAX records (key, value), in the order the header holds them.
pub type PaxRecords = Vec<(Vec<u8>, Vec<u8>)>;

/// One entry's header once the PAX and GNU headers before it are applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TarHeader {
    /// The type flag; an old-style regular file (`\0`) comes out as `0`,
    /// or `5` when its name ends in `/` (as Go reads it).
    pub typeflag: u8,
    pub name: Vec<u8>,
    pub linkname: Vec<u8>,
    pub mode: i64,
    pub uid: i64,
    pub gid: i64,
    /// The size the header (or a PAX `size` record) gives.
    pub size: i64,
    pub mtime: i64,
    pub devmajor: i64,
    pub devminor: i64,
    /// The PAX records that applied to the entry, in their order (sparse
    /// maps are read from these).
    pub pax: PaxRecords,
}

impl TarHeader {
    /// Bytes of data stored after the header: none for the types that
    /// carry none (whatever their size field says, as in Go).
    pub fn stored(&self) -> u64 {
        if self.header_only() {
            0
        } else {
            u64::try_from(self.size).unwrap_or(0)
        }
    }

    /// Links, character and block devices, directories and FIFOs.
    fn header_only(&self) -> bool {
        matches!(self.typeflag, b'1'..=b'6')
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TarError {
    #[error("the layer ends inside a tar header (at byte {offset})")]
    TruncatedHeader { offset: u64 },
    #[error("the layer ends inside the data of entry {name}: {expected} bytes stored, {got} there")]
    TruncatedData {
        name: String,
        expected: u64,
        got: u64,
    },
    #[error("bad {field} in the tar header at byte {offset} ({name}): {why}")]
    Header {
        offset: u64,
        name: String,
        field: &'static str,
        why: String,
    },
    #[error("{what} (at byte {offset})")]
    EndMarker { offset: u64, what: &'static str },
    #[error(transparent)]
    Io(#[from] io::Error),
}

fn show(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

/// Reads tar entries from a stream; see the module documentation.
pub struct TarReader<R> {
    inner: R,
    /// Bytes consumed from `inner`.
    pos: u64,
    /// Stored data of the current entry not read yet, and in all.
    remaining: u64,
    stored: u64,
    /// Padding after the current entry's data.
    pad: u64,
    /// The current entry's name, for errors.
    current: Vec<u8>,
    done: bool,
}

impl<R: Read> TarReader<R> {
    pub fn new(inner: R) -> Self {
        TarReader {
            inner,
            pos: 0,
            remaining: 0,
            stored: 0,
            pad: 0,
            current: Vec::new(),
            done: false,
        }
    }

    /// The stream, positioned after what the reader consumed.
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Bytes consumed from the stream so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The next entry (PAX, GNU long-name and long-link headers applied),
    /// or None at the end of the archive. What the caller left unread of
    /// the previous entry's data is skipped.
    pub fn next_entry(&mut self) -> Result<Option<TarHeader>, TarError> {
        if self.done {
            return Ok(None);
        }
        let mut pax: Option<PaxRecords> = None;
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        loop {
            self.skip_data()?;
            if !self.skip_padding()? {
                return self.end();
            }
            let at = self.pos;
            let Some(mut hdr) = self.read_header()? else {
                return self.end();
            };
            self.start_data(&hdr)?;
            match hdr.typeflag {
                b'x' | b'g' => {
                    let data = self.read_special()?;
                    let records = parse_pax(&data).map_err(|why| TarError::Header {
                        offset: at,
                        name: show(&hdr.name),
                        field: "pax record",
                        why,
                    })?;
                    if hdr.typeflag == b'g' {
                        // Go hands a global header out as an entry of its
                        // own; docker, containerd and umoci then ignore it.
                        hdr.pax = records;
                        return Ok(Some(hdr));
                    }
                    pax = Some(records);
                }
                b'L' | b'K' => {
                    let data = self.read_special()?;
                    let value = until_nul(&data).to_vec();
                    if hdr.typeflag == b'L' {
                        long_name = Some(value);
                    } else {
                        long_link = Some(value);
                    }
                }
                _ => {
                    if let Some(records) = pax {
                        merge_pax(&mut hdr, records).map_err(|(field, why)| TarError::Header {
                            offset: at,
                            name: show(&hdr.name),
                            field,
                            why,
                        })?;
                    }
                    if let Some(name) = long_name.filter(|n| !n.is_empty()) {
                        hdr.name = name;
                    }
                    if let Some(link) = long_link.filter(|n| !n.is_empty()) {
                        hdr.linkname = link;
                    }
                    if hdr.typeflag == 0 {
                        hdr.typeflag = if hdr.name.ends_with(b"/") { b'5' } else { b'0' };
                    }
                    // The PAX records may have changed the size, and the
                    // type decides whether there is data at all.
                    self.start_data(&hdr)?;
                    return Ok(Some(hdr));
                }
            }
        }
    }

    fn end(&mut self) -> Result<Option<TarHeader>, TarError> {
        self.done = true;
        Ok(None)
    }

    /// Sets up reading the data `hdr` stores (refusing a negative size
    /// where there is data, as Go does).
    fn start_data(&mut self, hdr: &TarHeader) -> Result<(), TarError> {
        let stored = hdr.stored();
        if hdr.size < 0 && !hdr.header_only() {
            return Err(TarError::Header {
                offset: self.pos,
                name: show(&hdr.name),
                field: "size",
                why: format!("negative size {}", hdr.size),
            });
        }
        self.remaining = stored;
        self.stored = stored;
        self.pad = (BLOCK - stored % BLOCK) % BLOCK;
        self.current.clone_from(&hdr.name);
        Ok(())
    }

    /// Reads up to `buf.len()` bytes of the current entry's data; 0 at its
    /// end, or where the stream ends early (the caller compares what it
    /// read with [`TarHeader::stored`]).
    pub fn read_data(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = usize::try_from(self.remaining).map_or(buf.len(), |r| r.min(buf.len()));
        if want == 0 {
            return Ok(0);
        }
        let n = self.inner.read(&mut buf[..want])?;
        self.pos += n as u64;
        self.remaining -= n as u64;
        Ok(n)
    }

    fn skip_data(&mut self) -> Result<(), TarError> {
        let mut sink = [0u8; 8192];
        while self.remaining > 0 {
            if self.read_data(&mut sink)? == 0 {
                return Err(TarError::TruncatedData {
                    name: show(&self.current),
                    expected: self.stored,
                    got: self.stored - self.remaining,
                });
            }
        }
        Ok(())
    }

    /// Skips the padding after the data; false when the stream ends in it
    /// (Go: a clean end).
    fn skip_padding(&mut self) -> Result<bool, TarError> {
        let mut pad = [0u8; 512];
        let want = usize::try_from(self.pad).unwrap_or(0).min(pad.len());
        let got = self.read_full(&mut pad[..want])?;
        self.pad = 0;
        Ok(got == want)
    }

    /// Reads until `buf` is full or the stream ends; returns the count.
    fn read_full(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.inner.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.pos += filled as u64;
        Ok(filled)
    }

    /// The data of a PAX or GNU long-name header (at most 1 MiB, as Go).
    fn read_special(&mut self) -> Result<Vec<u8>, TarError> {
        if self.remaining > MAX_SPECIAL {
            return Err(TarError::Header {
                offset: self.pos,
                name: show(&self.current),
                field: "size",
                why: format!(
                    "an extended header of {} bytes (at most {MAX_SPECIAL})",
                    self.remaining
                ),
            });
        }
        let mut data = vec![0u8; usize::try_from(self.remaining).unwrap_or(0)];
        let got = self.read_full(&mut data)?;
        self.remaining = 0;
        if got < data.len() {
            return Err(TarError::TruncatedData {
                name: show(&self.current),
                expected: self.stored,
                got: got as u64,
            });
        }
        Ok(data)
    }

    /// One header block, parsed; None at a clean end (the stream ends
    /// here, or one or two zero blocks do).
    fn read_header(&mut self) -> Result<Option<TarHeader>, TarError> {
        let offset = self.pos;
        let mut blk = [0u8; 512];
        match self.read_full(&mut blk)? {
            0 => return Ok(None),
            512 => {}
            _ => return Err(TarError::TruncatedHeader { offset }),
        }
        if blk.iter().all(|b| *b == 0) {
            return match self.read_full(&mut blk)? {
                0 => Ok(None),
                512 if blk.iter().all(|b| *b == 0) => Ok(None),
                512 => Err(TarError::EndMarker {
                    offset: offset + BLOCK,
                    what: "a zero block followed by a header (an end-of-archive marker cut in half)",
                }),
                _ => Err(TarError::EndMarker {
                    offset: offset + BLOCK,
                    what: "the layer ends inside its second end-of-archive block",
                }),
            };
        }
        parse_header(&blk)
            .map(Some)
            .map_err(|(field, why)| TarError::Header {
                offset,
                name: show(until_nul(&blk[..100])),
                field,
                why,
            })
    }
}

fn until_nul(b: &[u8]) -> &[u8] {
    b.iter().position(|c| *c == 0).map_or(b, |n| &b[..n])
}

/// The header formats Go tells apart by their magic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    V7,
    Ustar,
    Star,
    Gnu,
}

/// Parses one non-zero header block as Go's `readHeader` does.
fn parse_header(blk: &[u8; 512]) -> Result<TarHeader, (&'static str, String)> {
    // The checksum counts its own field as spaces; old tars summed signed
    // bytes, and Go accepts either sum.
    let stated = parse_octal(&blk[148..156]).map_err(|why| ("checksum", why))?;
    let (mut unsigned, mut signed) = (0i64, 0i64);
    for (i, b) in blk.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { *b };
        unsigned += i64::from(b);
        signed += i64::from(i8::from_le_bytes([b]));
    }
    if stated != unsigned && stated != signed {
        return Err((
            "checksum",
            format!("the header says {stated}, its bytes sum to {unsigned}"),
        ));
    }
    let format = match (&blk[257..263], &blk[263..265], &blk[508..512]) {
        (b"ustar\0", _, b"tar\0") => Format::Star,
        (b"ustar\0", _, _) => Format::Ustar,
        (b"ustar ", b" \0", _) => Format::Gnu,
        _ => Format::V7,
    };
    let number = |field: &'static str, range: std::ops::Range<usize>| {
        tar_number(&blk[range]).map_err(|why| (field, why))
    };
    let mut hdr = TarHeader {
        typeflag: blk[156],
        name: until_nul(&blk[..100]).to_vec(),
        linkname: until_nul(&blk[157..257]).to_vec(),
        size: number("size", 124..136)?,
        mode: number("mode", 100..108)?,
        uid: number("uid", 108..116)?,
        gid: number("gid", 116..124)?,
        mtime: number("mtime", 136..148)?,
        ..TarHeader::default()
    };
    if format == Format::V7 {
        return Ok(hdr);
    }
    hdr.devmajor = number("device major", 329..337)?;
    hdr.devminor = number("device minor", 337..345)?;
    let prefix = match format {
        Format::Ustar => until_nul(&blk[345..500]),
        Format::Star => until_nul(&blk[345..476]),
        _ => {
            // GNU headers hold atime and ctime where USTAR has its prefix;
            // Go before 1.8 wrote a prefix there, so where those times do
            // not parse and the bytes are ASCII, Go reads them as a prefix.
            let time_ok = |b: &[u8]| b[0] == 0 || tar_number(b).is_ok();
            let prefix = until_nul(&blk[345..500]);
            if time_ok(&blk[345..357]) && time_ok(&blk[357..369]) || !prefix.is_ascii() {
                &[][..]
            } else {
                prefix
            }
        }
    };
    if !prefix.is_empty() {
        let mut name = prefix.to_vec();
        name.push(b'/');
        name.extend_from_slice(&hdr.name);
        hdr.name = name;
    }
    Ok(hdr)
}

/// Go's `parseOctal`, for the checksum (never base-256).
fn parse_octal(field: &[u8]) -> Result<i64, String> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        return Err(format!("not an octal number: {:?}", show(field)));
    }
    tar_number(field)
}

/// A numeric header field as Go's archive/tar reads it: base-256 when the
/// first byte's high bit is set, as a big-endian two's complement number
/// (GNU tar and Python's tarfile write negative mtimes this way; the tar
/// crate would read them as huge unsigned values); else octal, with
/// surrounding spaces and NULs ignored (an empty field is 0).
pub fn tar_number(field: &[u8]) -> Result<i64, String> {
    let bad = |why: &str| format!("{why}: {:?}", String::from_utf8_lossy(field));
    if let Some(first) = field.first().filter(|b| **b & 0x80 != 0) {
        // -a-1 == !a: invert a negative number's bytes, read it unsigned.
        let invert = if first & 0x40 != 0 { 0xff } else { 0 };
        let mut x: u64 = 0;
        for (i, byte) in field.iter().enumerate() {
            let mut c = byte ^ invert;
            if i == 0 {
                c &= 0x7f;
            }
            if x >> 56 != 0 {
                return Err(bad("base-256 number overflows 64 bits"));
            }
            x = (x << 8) | u64::from(c);
        }
        let x = i64::try_from(x).map_err(|_| bad("base-256 number overflows 64 bits"))?;
        return Ok(if invert == 0xff { !x } else { x });
    }
    let trimmed = field
        .iter()
        .position(|b| *b != b' ' && *b != 0)
        .map_or(&[][..], |start| {
            let end = field
                .iter()
                .rposition(|b| *b != b' ' && *b != 0)
                .map_or(start, |e| e + 1);
            &field[start..end]
        });
    // Go then reads up to the first NUL still inside.
    let digits = until_nul(trimmed);
    if digits.is_empty() {
        return Ok(0);
    }
    std::str::from_utf8(digits)
        .ok()
        .and_then(|d| u64::from_str_radix(d, 8).ok())
        .and_then(|v| i64::try_from(v).ok())
        .ok_or_else(|| bad("not an octal number"))
}

/// Splits a PAX header's data into its records, each framed by its own
/// length ("LEN key=value\n"), as Go's `parsePAX` does: a record's value
/// may contain newlines. Refuses what Go refuses: a bad length, a missing
/// newline or `=`, an empty key, NUL in a key or in a path-like value.
pub fn parse_pax(mut data: &[u8]) -> Result<PaxRecords, String> {
    let mut records = Vec::new();
    while !data.is_empty() {
        let bad = |why: &str| format!("{why} in {:?}", show(&data[..data.len().min(64)]));
        let space = data
            .iter()
            .position(|b| *b == b' ')
            .ok_or_else(|| bad("no length"))?;
        let digits = &data[..space];
        let digits = digits.strip_prefix(b"+").unwrap_or(digits);
        let len = std::str::from_utf8(digits)
            .ok()
            .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|d| d.parse::<usize>().ok())
            .filter(|n| (5..=data.len()).contains(n) && *n > space + 1)
            .ok_or_else(|| bad("a bad record length"))?;
        let record = &data[space + 1..len - 1];
        if data[len - 1] != b'\n' {
            return Err(bad("a record not ending in a newline"));
        }
        let eq = record
            .iter()
            .position(|b| *b == b'=')
            .ok_or_else(|| bad("a record without '='"))?;
        let (key, value) = (&record[..eq], &record[eq + 1..]);
        let pathlike = matches!(key, b"path" | b"linkpath" | b"uname" | b"gname");
        if key.is_empty() || (pathlike && value.contains(&0)) || key.contains(&0) {
            return Err(bad("an empty key or a NUL byte"));
        }
        records.push((key.to_vec(), value.to_vec()));
        data = &data[len..];
    }
    Ok(records)
}

/// Parses a PAX time ("1700000000.123456789", possibly negative) as Go's
/// parsePAXTime does; the whole seconds, rounded towards minus infinity.
pub fn pax_time(value: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(value).ok()?;
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs = whole.parse::<i64>().ok()?;
    if whole.starts_with('+') {
        return None;
    }
    // "-1.5" is 1.5 seconds before 1970: second -2.
    let negative_fraction = whole.starts_with('-') && fraction.bytes().any(|b| b != b'0');
    Some(if negative_fraction {
        secs.saturating_sub(1)
    } else {
        secs
    })
}

/// Applies the PAX records to the header as Go's `mergePAX` does: of
/// records with the same key the last counts; an empty value leaves the
/// header's field alone; a malformed number refuses the entry.
fn merge_pax(hdr: &mut TarHeader, records: PaxRecords) -> Result<(), (&'static str, String)> {
    let last = |key: &[u8]| {
        records
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
            .filter(|v| !v.is_empty())
    };
    let int = |field: &'static str, v: &[u8]| {
        std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
            .ok_or((field, format!("pax record {:?}", show(v))))
    };
    let time = |field: &'static str, v: &[u8]| {
        pax_time(v).ok_or((field, format!("pax record {:?}", show(v))))
    };
    if let Some(v) = last(b"path") {
        hdr.name = v.to_vec();
    }
    if let Some(v) = last(b"linkpath") {
        hdr.linkname = v.to_vec();
    }
    if let Some(v) = last(b"uid") {
        hdr.uid = int("uid", v)?;
    }
    if let Some(v) = last(b"gid") {
        hdr.gid = int("gid", v)?;
    }
    if let Some(v) = last(b"size") {
        hdr.size = int("size", v)?;
    }
    if let Some(v) = last(b"mtime") {
        hdr.mtime = time("mtime", v)?;
    }
    // Go parses these too, and refuses the entry when they are malformed.
    for (key, field) in [(&b"atime"[..], "atime"), (b"ctime", "ctime")] {
        if let Some(v) = last(key) {
            time(field, v)?;
        }
    }
    hdr.pax = records;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(name: &str, typeflag: u8, size: u64, magic: &[u8; 8]) -> [u8; 512] {
        let mut b = [0u8; 512];
        b[..name.len()].copy_from_slice(name.as_bytes());
        b[100..108].copy_from_slice(b"0000644\0");
        b[108..116].copy_from_slice(b"0001750\0");
        b[116..124].copy_from_slice(b"0001750\0");
        b[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
        b[136..148].copy_from_slice(b"14614711240\0");
        b[156] = typeflag;
        b[257..265].copy_from_slice(magic);
        seal(&mut b);
        b
    }

    fn seal(b: &mut [u8; 512]) {
        b[148..156].fill(b' ');
        let sum: u32 = b.iter().map(|c| u32::from(*c)).sum();
        b[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    }

    const USTAR: &[u8; 8] = b"ustar\x0000";

    fn push(out: &mut Vec<u8>, hdr: &[u8; 512], data: &[u8]) {
        out.extend_from_slice(hdr);
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }

    fn record(key: &str, value: &[u8]) -> Vec<u8> {
        let body = [key.as_bytes(), b"=", value, b"\n"].concat();
        let mut len = body.len() + 2;
        while format!("{len} ").len() + body.len() != len {
            len += 1;
        }
        [format!("{len} ").as_bytes(), &body].concat()
    }

    fn all(tar: &[u8]) -> Result<Vec<(TarHeader, Vec<u8>)>, TarError> {
        let mut r = TarReader::new(tar);
        let mut out = Vec::new();
        while let Some(h) = r.next_entry()? {
            let mut data = Vec::new();
            let mut buf = [0u8; 100];
            loop {
                let n = r.read_data(&mut buf)?;
                if n == 0 {
                    break;
                }
                data.extend_from_slice(&buf[..n]);
            }
            out.push((h, data));
        }
        Ok(out)
    }

    #[test]
    fn pax_values_may_hold_newlines() {
        let records = [
            record("path", b"dir/two\nlines"),
            record("SCHILY.xattr.user.note", b"a\nb=c\n"),
        ]
        .concat();
        let mut tar = Vec::new();
        push(
            &mut tar,
            &block("PaxHeaders/x", b'x', records.len() as u64, USTAR),
            &records,
        );
        push(&mut tar, &block("short", b'0', 2, USTAR), b"hi");
        let got = all(&tar).expect("tar");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0.name, b"dir/two\nlines");
        assert_eq!(got[0].1, b"hi");
        assert_eq!(
            got[0].0.pax[1],
            (b"SCHILY.xattr.user.note".to_vec(), b"a\nb=c\n".to_vec())
        );
    }

    #[test]
    fn pax_records_are_framed_by_their_length() {
        assert_eq!(
            parse_pax(b"10 path=a\n12 uid=1234\n").expect("ok"),
            vec![
                (b"path".to_vec(), b"a".to_vec()),
                (b"uid".to_vec(), b"1234".to_vec())
            ]
        );
        // Each of these is its length's own size, except where the length
        // is what is wrong.
        for bad in [
            &b"10 path=ab\n"[..], // one short: no newline where it says
            b"12 path=a\n",       // past the end
            b"10 patha\n\n",      // no '='
            b"7 =abc\n",          // empty key
            b"4 a=\n",            // under 5
            b"x path=a\n",        // not a number
            b"9 path=ab",         // no newline at the end
            b"12 path=a\0b\n",    // NUL in a path
            b"8 a\0b=c\n",        // NUL in a key
            b"path=a\n",          // no length
        ] {
            assert!(parse_pax(bad).is_err(), "{:?}", show(bad));
        }
    }

    #[test]
    fn header_only_types_store_no_data_whatever_their_size() {
        // A symlink whose size field claims 512 bytes: Go reads the next
        // header right after it, so the "data" is an entry of its own.
        let mut tar = Vec::new();
        let mut link = block("link", b'2', 512, USTAR);
        link[157..163].copy_from_slice(b"target");
        seal(&mut link);
        tar.extend_from_slice(&link);
        push(&mut tar, &block("hidden", b'0', 3, USTAR), b"abc");
        let got = all(&tar).expect("tar");
        let names: Vec<_> = got.iter().map(|(h, _)| show(&h.name)).collect();
        assert_eq!(names, ["link", "hidden"]);
        assert_eq!(got[1].1, b"abc");
    }

    #[test]
    fn a_pax_size_wins_and_a_bad_one_is_refused() {
        let rec = record("size", b"5");
        let mut tar = Vec::new();
        push(&mut tar, &block("p", b'x', rec.len() as u64, USTAR), &rec);
        push(&mut tar, &block("f", b'0', 0, USTAR), b"hello");
        let got = all(&tar).expect("tar");
        assert_eq!((got[0].0.size, got[0].1.as_slice()), (5, &b"hello"[..]));
        let rec = record("size", b"5x");
        let mut tar = Vec::new();
        push(&mut tar, &block("p", b'x', rec.len() as u64, USTAR), &rec);
        push(&mut tar, &block("f", b'0', 0, USTAR), b"");
        assert!(matches!(
            all(&tar),
            Err(TarError::Header { field: "size", .. })
        ));
    }

    #[test]
    fn later_extended_headers_replace_earlier_ones() {
        let first = [record("path", b"one"), record("uid", b"7")].concat();
        let second = record("path", b"two");
        let mut tar = Vec::new();
        push(
            &mut tar,
            &block("p", b'x', first.len() as u64, USTAR),
            &first,
        );
        push(
            &mut tar,
            &block("p", b'x', second.len() as u64, USTAR),
            &second,
        );
        push(&mut tar, &block("L", b'L', 5, USTAR), b"gnu\0x");
        push(&mut tar, &block("f", b'0', 0, USTAR), b"");
        let got = all(&tar).expect("tar");
        // The second PAX header replaced the first (uid back to the
        // header's), and the GNU long name beat the PAX path.
        assert_eq!(got[0].0.name, b"gnu");
        assert_eq!(got[0].0.uid, 0o1750);
    }

    #[test]
    fn global_headers_are_entries_applied_to_nothing() {
        let rec = record("uid", b"42");
        let mut tar = Vec::new();
        push(
            &mut tar,
            &block("pax_global_header", b'g', rec.len() as u64, USTAR),
            &rec,
        );
        push(&mut tar, &block("f", b'0', 0, USTAR), b"");
        let got = all(&tar).expect("tar");
        assert_eq!(got[0].0.typeflag, b'g');
        assert_eq!(got[1].0.uid, 0o1750);
    }

    #[test]
    fn checksums_may_be_signed_and_prefixes_join_names() {
        let mut b = block("name", b'0', 0, USTAR);
        b[345..348].copy_from_slice(b"pre");
        b[500] = 0xe9; // a high byte outside the fields Go reads
        b[148..156].fill(b' ');
        let signed: i64 = b.iter().map(|c| i64::from(i8::from_le_bytes([*c]))).sum();
        b[148..156].copy_from_slice(format!("{signed:06o}\0 ").as_bytes());
        let mut tar = Vec::new();
        push(&mut tar, &b, b"");
        let got = all(&tar).expect("signed sum");
        assert_eq!(got[0].0.name, b"pre/name");
        b[148..156].copy_from_slice(b"0000001\0");
        let mut tar = Vec::new();
        push(&mut tar, &b, b"");
        assert!(matches!(
            all(&tar),
            Err(TarError::Header {
                field: "checksum",
                ..
            })
        ));
    }

    #[test]
    fn legacy_regular_files_with_a_slash_are_directories() {
        let mut tar = Vec::new();
        push(&mut tar, &block("d/", 0, 0, b"\0\0\0\0\0\0\0\0"), b"");
        push(&mut tar, &block("f", 0, 1, b"\0\0\0\0\0\0\0\0"), b"x");
        let got = all(&tar).expect("v7");
        assert_eq!((got[0].0.typeflag, got[1].0.typeflag), (b'5', b'0'));
    }

    #[test]
    fn oversized_extended_headers_are_refused() {
        let mut tar = Vec::new();
        tar.extend_from_slice(&block("p", b'x', MAX_SPECIAL + 1, USTAR));
        assert!(matches!(
            all(&tar),
            Err(TarError::Header { field: "size", .. })
        ));
    }
}
