//! Decompressors for the reader, one per compressor mksquashfs writes (not written yet).
