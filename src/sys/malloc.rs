//! malloc_trim(3): give the heap's free memory back to the kernel.

/// Return free heap memory to the kernel (a warm FUSE server gone idle).
/// glibc keeps freed memory in its arenas until asked; musl's allocator
/// returns emptied groups to the kernel as it goes and has no such call.
pub fn trim() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim takes a plain integer and only walks glibc's own
    // arenas under their locks; it is safe to call from any thread at any
    // time.
    unsafe {
        libc::malloc_trim(0);
    }
}
