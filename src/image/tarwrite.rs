//! A tar stream writer for the layers cairn writes (`cairn push`'s export
//! of an image, `cairn build`'s layers): ustar headers, PAX extended
//! headers where ustar falls short (long names, large ids or sizes,
//! xattrs as `SCHILY.xattr.NAME`), data padded to blocks. Every header
//! field comes from the caller and PAX headers all have one fixed name, so
//! the same entries give the same bytes.

use std::io::{self, Write};

/// Tar block size: headers and data are padded to it.
const BLOCK: usize = 512;
/// Largest value of an 8-byte octal field (mode, uid, gid): 7 digits.
pub(crate) const MAX_OCTAL_8: u64 = 0o7_777_777;
/// Largest value of a 12-byte octal field (size, mtime): 11 digits.
const MAX_OCTAL_12: u64 = 0o77_777_777_777;
/// The name of every PAX extended header; its records name the entry.
const PAX_HEADER_NAME: &[u8] = b"././@PaxHeader";

/// One entry as the tar stream describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct EntryHeader {
    /// Relative path; directories end in `/`, the root is `./`.
    pub(crate) path: Vec<u8>,
    pub(crate) typeflag: u8,
    /// Permission bits with setuid/setgid/sticky (no type bits).
    pub(crate) mode: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    /// Bytes of data that follow (regular files only).
    pub(crate) size: u64,
    pub(crate) mtime: u64,
    /// Symlink target, or the first name of a hard link.
    pub(crate) linkname: Vec<u8>,
    /// (major, minor) of a device.
    pub(crate) device: (u32, u32),
    pub(crate) xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A tar stream writer: ustar headers, PAX extended headers where ustar
/// falls short, data padded to blocks, two zero blocks at the end.
pub(crate) struct TarWriter<W: Write> {
    pub(crate) out: W,
    pub(crate) entries: u64,
}

impl<W: Write> TarWriter<W> {
    /// Writes `header` (preceded by a PAX header when needed), then the
    /// entry's data through `data`, which must write exactly `header.size`
    /// bytes, then the padding.
    pub(crate) fn entry<E: From<io::Error>>(
        &mut self,
        header: &EntryHeader,
        data: impl FnOnce(&mut dyn Write) -> Result<(), E>,
    ) -> Result<(), E> {
        let records = pax_records(header);
        if !records.is_empty() {
            let pax = EntryHeader {
                path: PAX_HEADER_NAME.to_vec(),
                typeflag: b'x',
                mode: 0o644,
                size: records.len() as u64,
                ..EntryHeader::default()
            };
            self.block(&ustar_header(&pax))?;
            self.write(&records)?;
            self.pad(records.len() as u64)?;
        }
        self.block(&ustar_header(header))?;
        data(&mut self.out)?;
        self.pad(header.size)?;
        self.entries += 1;
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)
    }

    fn block(&mut self, block: &[u8; BLOCK]) -> io::Result<()> {
        self.write(block)
    }

    /// Zeros up to the next block boundary after `len` bytes of data.
    fn pad(&mut self, len: u64) -> io::Result<()> {
        let rest = len % BLOCK as u64;
        if rest == 0 {
            return Ok(());
        }
        let zeros = [0u8; BLOCK];
        // `rest` < BLOCK, so the slice bound fits.
        let fill = BLOCK - usize::try_from(rest).unwrap_or(0);
        self.write(&zeros[..fill])
    }

    /// The end-of-archive marker: two zero blocks.
    pub(crate) fn finish(&mut self) -> io::Result<()> {
        self.write(&[0u8; 2 * BLOCK])
    }
}

/// The PAX records `header` needs (empty when ustar holds it all): long
/// path or link target, ids or size too large for their octal fields,
/// xattrs (sorted by name, so the bytes do not depend on any order).
pub(crate) fn pax_records(header: &EntryHeader) -> Vec<u8> {
    let mut out = Vec::new();
    if header.path.len() > 100 {
        pax_record(&mut out, b"path", &header.path);
    }
    if header.linkname.len() > 100 {
        pax_record(&mut out, b"linkpath", &header.linkname);
    }
    if u64::from(header.uid) > MAX_OCTAL_8 {
        pax_record(&mut out, b"uid", header.uid.to_string().as_bytes());
    }
    if u64::from(header.gid) > MAX_OCTAL_8 {
        pax_record(&mut out, b"gid", header.gid.to_string().as_bytes());
    }
    if header.size > MAX_OCTAL_12 {
        pax_record(&mut out, b"size", header.size.to_string().as_bytes());
    }
    let mut xattrs: Vec<&(Vec<u8>, Vec<u8>)> = header.xattrs.iter().collect();
    xattrs.sort();
    for (name, value) in xattrs {
        pax_record(
            &mut out,
            &[&b"SCHILY.xattr."[..], name.as_slice()].concat(),
            value,
        );
    }
    out
}

/// Appends one PAX record, `LEN KEY=VALUE\n`, where LEN counts the whole
/// record including its own digits.
pub(crate) fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    // " " + "=" + "\n" around key and value.
    let body = key.len() + value.len() + 3;
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// One ustar header block. Fields the PAX records carry instead (a long
/// path, a large id or size) hold a truncated name or 0.
fn ustar_header(h: &EntryHeader) -> [u8; BLOCK] {
    let mut b = [0u8; BLOCK];
    put_bytes(&mut b[0..100], &h.path);
    put_octal(&mut b[100..108], u64::from(h.mode));
    put_octal(&mut b[108..116], clamp(u64::from(h.uid), MAX_OCTAL_8));
    put_octal(&mut b[116..124], clamp(u64::from(h.gid), MAX_OCTAL_8));
    put_octal(&mut b[124..136], clamp(h.size, MAX_OCTAL_12));
    put_octal(&mut b[136..148], clamp(h.mtime, MAX_OCTAL_12));
    b[156] = h.typeflag;
    put_bytes(&mut b[157..257], &h.linkname);
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    put_octal(&mut b[329..337], u64::from(h.device.0));
    put_octal(&mut b[337..345], u64::from(h.device.1));
    // The checksum is computed with its own field as spaces, then written
    // as six octal digits, NUL, space.
    b[148..156].copy_from_slice(b"        ");
    let sum: u64 = b.iter().map(|&x| u64::from(x)).sum();
    put_octal(&mut b[148..155], sum);
    b[155] = b' ';
    b
}

/// `value`, or 0 when it does not fit (a PAX record carries it then).
fn clamp(value: u64, max: u64) -> u64 {
    if value > max { 0 } else { value }
}

/// As much of `value` as fits in `field` (a PAX record has the whole).
fn put_bytes(field: &mut [u8], value: &[u8]) {
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
}

/// `value` in octal, zero-padded to fill `field` but its last byte, which
/// stays NUL. Callers keep `value` within the field.
fn put_octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    put_bytes(&mut field[..digits], text.as_bytes());
}
