//! Switch between `std` and `loom` synchronisation primitives.
//!
//! Lock-free code (the slot free list) imports its atomics from here, so the
//! same code is model-checked when built with `RUSTFLAGS="--cfg tracepool_loom"`.

#[cfg(tracepool_loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64};
#[cfg(not(tracepool_loom))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64};
