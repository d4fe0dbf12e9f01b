//! Gzip on every core: the stream is cut into fixed-size pieces, each
//! compressed on its own thread into an independent gzip member, and the
//! members are written in order. A sequence of members is one valid gzip
//! file (RFC 1952, 2.2): Go's `compress/gzip` (docker, containerd, umoci,
//! skopeo) and cairn's own layer reader (`MultiGzDecoder`) read it whole.
//!
//! Why: a push writes its layer from the image's tree, and one deflate
//! thread was most of its time (5.3 s for a 198 MB bookworm tree). The
//! output is deterministic: the pieces are cut at fixed offsets whatever
//! the number of threads, so the same input gives the same bytes and the
//! same digest. A piece of 1 MiB costs a fraction of a percent of size
//! against one stream (deflate's window is 32 KiB).

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::mpsc::{Receiver, sync_channel};

use flate2::Compression;
use flate2::write::GzEncoder;

/// Bytes of input per member.
pub const PIECE: usize = 1 << 20;

/// A `Write` that gzips what it is given into `out`, in members of
/// [`PIECE`] input bytes compressed in parallel. Call [`ParallelGz::finish`]
/// at the end (dropping it loses the buffered tail).
pub struct ParallelGz<W: Write> {
    out: W,
    level: Compression,
    buf: Vec<u8>,
    /// Members being compressed, oldest first.
    pending: VecDeque<Receiver<io::Result<Vec<u8>>>>,
    /// Members in flight at most (bounds memory: about 2x this in MiB).
    max_pending: usize,
    /// Whether any member was written (an empty input still needs one).
    wrote: bool,
}

impl<W: Write> std::fmt::Debug for ParallelGz<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParallelGz")
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

fn compress(level: Compression, piece: &[u8]) -> io::Result<Vec<u8>> {
    // No mtime and no name in the header: the same bytes every time.
    let mut gz = GzEncoder::new(Vec::with_capacity(piece.len() / 3 + 64), level);
    gz.write_all(piece)?;
    gz.finish()
}

impl<W: Write> ParallelGz<W> {
    pub fn new(out: W, level: Compression) -> Self {
        let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        ParallelGz {
            out,
            level,
            buf: Vec::with_capacity(PIECE),
            pending: VecDeque::new(),
            max_pending: threads * 2,
            wrote: false,
        }
    }

    /// Hand the buffered piece to a thread of its own.
    fn dispatch(&mut self) -> io::Result<()> {
        while self.pending.len() >= self.max_pending {
            self.write_oldest()?;
        }
        let piece = std::mem::replace(&mut self.buf, Vec::with_capacity(PIECE));
        let level = self.level;
        let (tx, rx) = sync_channel(1);
        std::thread::Builder::new()
            .name("cairn-gzip".into())
            .spawn(move || {
                let _ = tx.send(compress(level, &piece));
            })?;
        self.pending.push_back(rx);
        Ok(())
    }

    /// Wait for the oldest member and write it.
    fn write_oldest(&mut self) -> io::Result<()> {
        let Some(rx) = self.pending.pop_front() else {
            return Ok(());
        };
        let member = rx
            .recv()
            .map_err(|_| io::Error::other("a gzip thread ended without its member"))??;
        self.out.write_all(&member)?;
        self.wrote = true;
        Ok(())
    }

    /// Compress the tail, write every member in order, and return `out`.
    pub fn finish(mut self) -> io::Result<W> {
        if !self.buf.is_empty() {
            self.dispatch()?;
        }
        while !self.pending.is_empty() {
            self.write_oldest()?;
        }
        if !self.wrote {
            let empty = compress(self.level, &[])?;
            self.out.write_all(&empty)?;
        }
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: Write> Write for ParallelGz<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = PIECE - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == PIECE {
            self.dispatch()?;
        }
        Ok(n)
    }

    /// Members are written as they complete; a flush does not cut a piece
    /// short (that would make the bytes depend on when it is called).
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn gunzip(blob: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(blob)
            .read_to_end(&mut out)
            .expect("gunzip");
        out
    }

    fn gz(data: &[u8], writes: usize) -> Vec<u8> {
        let mut w = ParallelGz::new(Vec::new(), Compression::default());
        let step = data.len() / writes.max(1) + 1;
        for chunk in data.chunks(step) {
            w.write_all(chunk).expect("write");
        }
        w.finish().expect("finish")
    }

    #[test]
    fn members_read_back_whole_and_the_bytes_do_not_depend_on_the_writes() {
        let mut x = crate::image::digest::Digest::of_bytes(b"seed")
            .hex()
            .as_bytes()
            .to_vec();
        let mut data = Vec::new();
        while data.len() < 3 * PIECE + 12_345 {
            data.extend_from_slice(&x);
            data.extend_from_slice(b" some text that compresses ");
            x.rotate_left(1);
        }
        let one = gz(&data, 1);
        assert_eq!(gunzip(&one), data);
        assert_eq!(gz(&data, 977), one, "cut at fixed offsets, not at writes");
        // Four members (3 full pieces and the tail).
        let members = one.windows(3).filter(|w| *w == [0x1f, 0x8b, 8]).count();
        assert!(members >= 4, "{members}");
    }

    #[test]
    fn empty_and_exact_inputs_are_valid_gzip() {
        assert_eq!(gunzip(&gz(&[], 1)), Vec::<u8>::new());
        let exact = vec![7u8; PIECE];
        assert_eq!(gunzip(&gz(&exact, 3)), exact);
    }
}
