//! Locks shared by the reader's caches, the block store and the FUSE
//! server's workers.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Lock `m`, also when a thread panicked while holding it. Every update
/// under cairn's locks is a few map or cache operations: a panic elsewhere
/// cannot leave them inconsistent, and what a panicking worker leaves
/// behind is only a cache, still good to use.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
