//! Switch between `std` and `loom` synchronisation primitives.
//!
//! The lock-free and hand-off code of the pool (free list, lease words,
//! waiter queue) imports its primitives from here, so the same code is
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
