//! The handles callers hold: [`Trace`] and [`Node`], and how an engine hands
//! them out (`create`, `load`, `open`).
//!
//! A handle is an engine plus a [`SlotKey`] (slot index and generation) —
//! plus, for a node, the node's index — sharing one [`HandleCore`]: every
//! call serializes the caller's values first (no lock held), then locks the
//! slot, checks the generation and operates on the trace's state. A handle
//! kept after its trace was released gets
//! [`Error::Released`](crate::Error::Released) and never touches the slot's
//! next occupant. Every handle of one checkout counts in the slot's lease:
//! dropping the last one releases the trace.

/// The chainable logging methods shared by [`Trace`] and [`Node`]; each
/// handle provides `chain_log(level, msg, &mut data) -> &Self`.
macro_rules! chainable_logs {
    ($ty:ty, $on:literal) => {
        #[doc = concat!("Logs at `info` on ", $on, " (dropped and counted in `EngineStats::logs_dropped` when there is nowhere to log).")]
        pub fn info(&self, msg: impl AsRef<str>) -> &$ty {
            self.chain_log(Level::Info, msg.as_ref(), &mut None)
        }
        #[doc = concat!("Logs at `debug` on ", $on, ".")]
        pub fn debug(&self, msg: impl AsRef<str>) -> &$ty {
            self.chain_log(Level::Debug, msg.as_ref(), &mut None)
        }
        #[doc = concat!("Logs at `warn` on ", $on, ".")]
        pub fn warn(&self, msg: impl AsRef<str>) -> &$ty {
            self.chain_log(Level::Warn, msg.as_ref(), &mut None)
        }
        #[doc = concat!("Logs at `error` on ", $on, ".")]
        pub fn error(&self, msg: impl AsRef<str>) -> &$ty {
            self.chain_log(Level::Error, msg.as_ref(), &mut None)
        }
        #[doc = concat!("Logs a message with structured data on ", $on, " (any `Serialize` value: `json!(..)`, a number, a string, a struct; `null` for none). A value that does not serialize drops the line (counted in `EngineStats::logs_dropped`).")]
        pub fn log(&self, level: Level, msg: impl AsRef<str>, data: impl serde::Serialize) -> &$ty {
            // Serialized where it stays until the lock (not moved there).
            let mut val = None;
            match crate::event::value::json_opt_into(&mut val, &data) {
                Ok(()) => self.chain_log(level, msg.as_ref(), &mut val),
                Err(_) => {
                    self.core.count_dropped_log();
                    self
                }
            }
        }
    };
}

mod checkout;
mod follow; // redis-hook
mod node;
mod trace;

pub use node::Node;
pub use trace::Trace;

use std::mem::ManuallyDrop;

use crate::engine::Engine;
use crate::error::Result;
use crate::event::value::{self, Val};
use crate::model::Level;
use crate::pool::SlotKey;
use crate::trace::state::{Target, TraceState};

/// What every handle is: an engine and the key of its trace's slot. Every
/// handle counts in its slot's lease (`trace::lease`); dropping it uncounts.
///
/// The engine is an alias that owns no reference count: the slot holds one
/// reference to the engine for as long as any handle refers to it, so a
/// handle costs no atomic operation on the engine's shared count (a node
/// added is counted under the slot's lock the add holds anyway).
struct HandleCore {
    engine: ManuallyDrop<Engine>,
    key: SlotKey,
}

impl HandleCore {
    /// Wraps a key whose lease already counts this handle (and whose slot
    /// holds its engine reference).
    fn counted(engine: &Engine, key: SlotKey) -> HandleCore {
        HandleCore {
            // SAFETY: the slot's engine reference outlives this handle: it
            // is given back only when the last handle of the slot drops.
            engine: unsafe { engine.alias() },
            key,
        }
    }

    /// Counts another handle of this trace (a clone of a released handle is
    /// just as stale as the original).
    fn acquire(&self) -> HandleCore {
        self.engine.core().add_handle(self.key);
        HandleCore::counted(&self.engine, self.key)
    }

    /// Runs `f` on the trace's state under its slot lock.
    fn with<R>(&self, f: impl FnOnce(&mut TraceState) -> Result<R>) -> Result<R> {
        self.engine.core().with_state(self.key, f)
    }

    /// Chainable logging to `target`: never fails, counts what it drops.
    fn log(&self, target: Target, level: Level, msg: &str, data: &mut Option<Val>) {
        self.engine
            .core()
            .log_chained(self.key, target, level, msg, data);
    }

    /// Counts a chainable log line that could not be recorded.
    fn count_dropped_log(&self) {
        self.engine.core().counters.logs_dropped.add(1);
    }
}

impl Drop for HandleCore {
    fn drop(&mut self) {
        let pin = self.engine.core().drop_handle(self.key);
        // SAFETY: the slot's reference is given back only by the last
        // handle of the slot, and nothing of the engine is used after it.
        unsafe { self.engine.give_back_pin(pin) };
    }
}

impl std::fmt::Debug for HandleCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandleCore")
            .field("slot", &self.key.idx)
            .field("generation", &self.key.generation)
            .finish()
    }
}

/// The error text and the log line of a failure (`fail`).
fn failure(err: &dyn std::fmt::Display) -> (Val, Val) {
    let msg = err.to_string();
    (value::text(&[&msg]), value::text(&["Node failed: ", &msg]))
}
