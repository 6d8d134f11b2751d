//! Locks that outlive a panic elsewhere.

use std::sync::{Mutex, MutexGuard};

/// A poisoned lock only means another thread panicked while holding it; every value
/// guarded in this crate is valid between any two statements, so keep using it.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
