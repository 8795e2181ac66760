//! The state of a trace as a pool slot holds it: [`state::TraceState`]
//! and what it is made of — the node [`tree`], the in-memory [`logs`], the
//! [`spaces`] — plus [`persist`]ence (what is queued for the driver, and
//! rebuilding a trace from storage), the slot's [`lease`] (the handles
//! that refer to it) and its [`handoff`] flags (its part in the worker
//! protocol). The event log itself is
//! `crate::event::log`'s; the handles callers hold are `crate::handle`'s.

pub(crate) mod handoff;
pub(crate) mod lease;
pub(crate) mod logs;
pub(crate) mod payload;
pub(crate) mod persist;
pub(crate) mod spaces;
pub(crate) mod state;
pub(crate) mod tree;

#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::spin_lock::SpinLock;

use state::{Limits, TraceState};

/// What one pool slot holds: a trace's state and what the engine keeps next
/// to it.
#[derive(Debug)]
pub(crate) struct TraceSlot {
    /// The trace; one lock serialises every operation of a trace.
    pub(crate) state: SpinLock<TraceState>,
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
    /// The occupant stays loaded without handles and has none now (as its
    /// lease last said, see [`TraceSlot::note_lease`]): idle reaping looks at
    /// these slots only, without their locks.
    pub(crate) idle_keeper: AtomicBool,
}

impl TraceSlot {
    pub(crate) fn new(limits: Limits, pending_total: Arc<AtomicUsize>) -> TraceSlot {
        TraceSlot {
            state: SpinLock::new(TraceState::new(limits, pending_total)),
            io: Mutex::new(()),
            released: AtomicU64::new(0),
            last_load: AtomicI64::new(0),
            idle_keeper: AtomicBool::new(false),
        }
    }

    /// Copies what `lease` (this slot's, under its lock) says about idle
    /// reaping into the lock-free hint; called after every change of the
    /// lease that can change it. Writes only on a change.
    pub(crate) fn note_lease(&self, lease: &lease::Lease) {
        let idle = lease.keeper_without_handles();
        if self.idle_keeper.load(Ordering::Relaxed) != idle {
            self.idle_keeper.store(idle, Ordering::Relaxed);
        }
    }
}
