//! The squashfs writer (not written yet).
