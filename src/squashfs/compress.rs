//! Compressors for the writer (not written yet).
