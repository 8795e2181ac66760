//! Traces and nodes: the handles callers hold and the per-slot state they
//! operate on.
//!
//! A [`Trace`] or [`Node`] handle is `(engine, slot index, generation)` (plus
//! the node's index). Every call locks the slot, checks the generation, and
//! operates on [`state::TraceState`]; a handle kept after its trace was
//! released gets [`Error::Released`](crate::Error::Released) and never touches
//! the slot's next occupant.

/// The chainable logging methods shared by [`Trace`] and [`Node`]; each
/// handle provides `chain_log(level, msg, data) -> &Self`.
macro_rules! chainable_logs {
    ($ty:ty, $on:literal) => {
        #[doc = concat!("Logs at `info` on ", $on, " (dropped and counted in `EngineStats::logs_dropped` when there is nowhere to log).")]
        pub fn info(&self, msg: impl AsRef<str>) -> &$ty {
            self.chain_log(Level::Info, msg.as_ref(), Value::Null)
        }
        #[doc = concat!("Logs at `debug` on ", $on, ".")]
        pub fn debug(&self, msg: impl AsRef<str>) -> &$ty {
            self.chain_log(Level::Debug, msg.as_ref(), Value::Null)
        }
        #[doc = concat!("Logs at `warn` on ", $on, ".")]
        pub fn warn(&self, msg: impl AsRef<str>) -> &$ty {
            self.chain_log(Level::Warn, msg.as_ref(), Value::Null)
        }
        #[doc = concat!("Logs at `error` on ", $on, ".")]
        pub fn error(&self, msg: impl AsRef<str>) -> &$ty {
            self.chain_log(Level::Error, msg.as_ref(), Value::Null)
        }
        #[doc = concat!("Logs a message with structured data on ", $on, ".")]
        pub fn log(&self, level: Level, msg: impl AsRef<str>, data: impl Into<Value>) -> &$ty {
            self.chain_log(level, msg.as_ref(), data.into())
        }
    };
}

mod handle;
mod node;
pub(crate) mod persist;
pub(crate) mod state;

pub use handle::Trace;
pub use node::Node;

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};

use state::{Limits, TraceState};

/// What one pool slot holds: a trace's state and what the engine keeps next
/// to it.
#[derive(Debug)]
pub(crate) struct TraceSlot {
    /// The trace; one lock serialises every operation of a trace.
    pub(crate) state: Mutex<TraceState>,
    /// Serialises driver writes of this slot (a worker holds it from taking
    /// a batch until the driver returned), so batches reach the driver in
    /// seq order and a removal can wait for a write in flight.
    pub(crate) io: Mutex<()>,
    /// `(generation << 8) | status` of the last trace released from this slot,
    /// so a stale handle can still report the status its trace ended with.
    pub(crate) released: AtomicU64,
    /// When the occupant was last obtained through `load`/`open` (ms since
    /// the epoch), for idle reaping of traces that stay loaded without handles.
    pub(crate) last_load: AtomicI64,
}

impl TraceSlot {
    pub(crate) fn new(limits: Limits, pending_total: Arc<AtomicUsize>) -> TraceSlot {
        TraceSlot {
            state: Mutex::new(TraceState::new(limits, pending_total)),
            io: Mutex::new(()),
            released: AtomicU64::new(0),
            last_load: AtomicI64::new(0),
        }
    }
}
