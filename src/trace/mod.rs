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
