//! The in-memory driver: persists nothing.

use super::{Driver, WriteBatch};
use crate::error::Result;

/// Keeps nothing: a trace lives while it is loaded and is gone after release.
///
/// The engine queues nothing for a driver that keeps nothing, so with this
/// driver a release frees its slot at once and `EngineStats::events_persisted`
/// and `bytes_written` stay 0.
///
/// # Examples
/// ```
/// # fn main() -> tracepool::Result<()> {
/// let engine = tracepool::Engine::builder().memory().workers(1).build()?;
/// let trace = engine.create(tracepool::TraceOptions::new())?;
/// let id = trace.id().to_owned();
/// trace.release()?;
/// assert!(!engine.exists(&id)?);
/// assert_eq!(engine.stats().free, engine.stats().capacity);
/// # Ok(()) }
/// ```
#[derive(Debug, Default)]
pub struct MemoryDriver {
    _private: (),
}

impl MemoryDriver {
    /// A new driver.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Driver for MemoryDriver {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn persists(&self) -> bool {
        false
    }

    fn write(&self, _batch: &WriteBatch<'_>) -> Result<()> {
        Ok(())
    }
}
