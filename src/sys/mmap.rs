//! mmap(2) of a read-only image file.

use std::fs::File;
use std::io;

use memmap2::Mmap;

/// Map the whole of `file` read-only and shared.
///
/// The mapping is only ever read through `&[u8]`. squashfs images are
/// immutable by contract: cairn writes them to a temporary file and renames
/// them into place, so nothing truncates or rewrites a published image while
/// it is mapped. A file changed behind cairn's back by someone else could
/// still produce SIGBUS or odd bytes; the reader bounds-checks every offset,
/// so odd bytes give an error, not undefined behaviour in safe code.
pub fn mmap_readonly(file: &File) -> io::Result<Mmap> {
    // SAFETY: see the function comment: the file is treated as immutable and
    // the mapping is read-only; memmap2 keeps the length and pointer valid
    // for the lifetime of the returned `Mmap`.
    unsafe { Mmap::map(file) }
}
