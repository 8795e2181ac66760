//! Switch between `std` and `loom` synchronisation primitives.
//!
//! The lock-free and hand-off code of the pool (free list, lease words,
//! waiter queue) and of the event log's lock-free read path
//! (`event::publish`) imports its primitives from here, so the same code is
//! model-checked when built with `RUSTFLAGS="--cfg tracepool_loom"`.

/// `loom`'s `AtomicWaker` under the `futures` crate's signature.
#[cfg(tracepool_loom)]
#[derive(Debug, Default)]
pub(crate) struct AtomicWaker(loom::future::AtomicWaker);

#[cfg(tracepool_loom)]
impl AtomicWaker {
    pub(crate) fn register(&self, waker: &std::task::Waker) {
        self.0.register_by_ref(waker);
    }

    pub(crate) fn wake(&self) {
        self.0.wake();
    }
}
#[cfg(tracepool_loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize};
#[cfg(tracepool_loom)]
pub(crate) use loom::sync::{Arc, Mutex, MutexGuard};

#[cfg(not(tracepool_loom))]
pub(crate) use futures_util::task::AtomicWaker;
#[cfg(not(tracepool_loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize};
#[cfg(not(tracepool_loom))]
pub(crate) use std::sync::{Arc, Mutex, MutexGuard};

/// `loom`'s `UnsafeCell`: every access goes through `with` / `with_mut`, so
/// that loom can check that no read overlaps a write.
#[cfg(tracepool_loom)]
pub(crate) use loom::cell::UnsafeCell;

/// `std`'s `UnsafeCell` under `loom`'s access API (`with` / `with_mut`).
#[cfg(not(tracepool_loom))]
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(tracepool_loom))]
impl<T> UnsafeCell<T> {
    pub(crate) fn new(v: T) -> UnsafeCell<T> {
        UnsafeCell(std::cell::UnsafeCell::new(v))
    }

    /// Runs `f` with a shared pointer to the value.
    #[inline(always)]
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    /// Runs `f` with an exclusive pointer to the value.
    #[inline(always)]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}
