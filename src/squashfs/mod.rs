//! squashfs 4.0: the on-disk format (declared once), a parallel writer, a
//! memory-mapped, thread-safe reader, the compressors each side needs, and
//! an extractor for possibly hostile images.

pub mod compress;
pub mod decompress;
pub mod extract;
pub mod format;
pub mod reader;
pub mod roundtrip;
pub mod writer;
