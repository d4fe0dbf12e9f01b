//! The squashfs reader (not written yet).
