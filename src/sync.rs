//! Locks shared by the reader's caches, the block store, the FUSE
//! server's workers and a pull's downloads and flatten.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

/// Lock `m`, also when a thread panicked while holding it. Every update
/// under cairn's locks is a few map or cache operations: a panic elsewhere
/// cannot leave them inconsistent, and what a panicking worker leaves
/// behind is only a cache, still good to use.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Waits on `c`, releasing `guard` meanwhile, and takes the lock back also
/// when a thread panicked while holding it (for the reason given at
/// [`lock`]).
pub fn wait<'a, T>(c: &Condvar, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    c.wait(guard).unwrap_or_else(PoisonError::into_inner)
}
