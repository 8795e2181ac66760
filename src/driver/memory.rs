//! The in-memory driver: persists nothing, counts what it is given.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{Driver, WriteBatch};
use crate::error::Result;

/// Keeps nothing: a trace lives while it is loaded and is gone after release.
/// Counts the batches, events and bytes it receives.
///
/// # Examples
/// ```
/// # fn main() -> tracepool::Result<()> {
/// let engine = tracepool::Engine::builder().memory().workers(1).build()?;
/// let trace = engine.create(tracepool::TraceOptions::new())?;
/// let id = trace.id().to_owned();
/// trace.release()?;
/// assert!(!engine.exists(&id)?);
/// # Ok(()) }
/// ```
#[derive(Debug, Default)]
pub struct MemoryDriver {
    batches: AtomicU64,
    events: AtomicU64,
    bytes: AtomicU64,
}

impl MemoryDriver {
    /// A new driver.
    pub fn new() -> Self {
        Self::default()
    }

    /// `(batches, events, bytes)` received so far.
    pub fn received(&self) -> (u64, u64, u64) {
        (
            self.batches.load(Ordering::Relaxed),
            self.events.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }
}

impl Driver for MemoryDriver {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn write(&self, batch: &WriteBatch<'_>) -> Result<()> {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.events.fetch_add(batch.len() as u64, Ordering::Relaxed);
        self.bytes
            .fetch_add(batch.byte_len() as u64, Ordering::Relaxed);
        Ok(())
    }
}
