//! A slot's part in the worker protocol: whether its index sits in its
//! worker's queue, whether a batch of it is being written, when a drain
//! gives up, and what storage made of the trace so far (new, refused, its
//! lease). The engine's workers and release path own these flags (see
//! `engine::core` and `engine::workers`); the trace keeps them under its
//! slot lock, marks a trace it starts [`new`](Handoff::new_trace), and
//! clears them (but the queue's) on reset.

use std::time::Instant;

/// How a slot's writes are being handed to the driver (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Handoff {
    /// The slot index sits in its worker's queue. Owned by the worker
    /// protocol: survives resets so an index is never queued twice.
    pub(crate) queued: bool,
    /// The flush epoch when the slot was last queued (see `engine::flush`).
    pub(crate) queued_epoch: u64,
    /// A worker is writing a batch taken from this slot.
    pub(crate) in_flight: bool,
    /// Created (not opened) by this engine, and no batch of it written yet:
    /// the driver creates its storage exclusively.
    pub(crate) new_trace: bool,
    /// Storage refused the trace (its id exists there): its writes are
    /// dropped and counted, never merged into the other trace.
    // redis-hook: also set when another engine took the trace's lease.
    pub(crate) write_refused: bool,
    // redis-hook: the driver holds (or will take) this trace's lease for this
    // redis-hook: engine; its drain sends a release batch that gives it up.
    pub(crate) lease_held: bool, // redis-hook
    // redis-hook: another engine took the lease: (owner, expiry in ms since
    // redis-hook: the epoch); operations give `Leased`, writes are dropped.
    pub(crate) lease_lost: Option<Box<(String, i64)>>, // redis-hook
    /// When a draining slot gives up on a failing driver.
    pub(crate) drain_deadline: Option<Instant>,
}

impl Handoff {
    /// Marks the slot queued at flush epoch `epoch()` unless it is queued
    /// already (then the epoch is not read). Returns whether it was not
    /// (the caller then pushes the slot index onto its worker's queue).
    pub(crate) fn queue(&mut self, epoch: impl FnOnce() -> u64) -> bool {
        if self.queued {
            return false;
        }
        self.queued = true;
        self.queued_epoch = epoch();
        true
    }

    /// [`queue`](Handoff::queue) for writes queued at `epoch` that failed:
    /// a slot queued already keeps the older of the two epochs.
    pub(crate) fn requeue(&mut self, epoch: u64) -> bool {
        if self.queued {
            self.queued_epoch = self.queued_epoch.min(epoch);
            return false;
        }
        self.queue(|| epoch)
    }

    /// Whether a draining slot's [`drain_deadline`](Handoff::drain_deadline)
    /// has passed (it gives up on a failing driver then).
    pub(crate) fn drain_expired(&self) -> bool {
        self.drain_deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Clears the flags for the slot's next occupant, except
    /// [`queued`](Handoff::queued) and its epoch (the index may still sit
    /// in the worker's queue).
    pub(crate) fn reset(&mut self) {
        self.in_flight = false;
        self.new_trace = false;
        self.write_refused = false;
        self.lease_held = false; // redis-hook
        self.lease_lost = None; // redis-hook
        self.drain_deadline = None;
    }
}
