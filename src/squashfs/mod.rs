//! squashfs 4.0: the on-disk format (declared once), a parallel writer, a
//! memory-mapped, thread-safe reader, and the compressors each side needs.

pub mod compress;
pub mod decompress;
pub mod format;
pub mod reader;
pub mod roundtrip;
pub mod writer;
