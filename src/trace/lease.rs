//! The lease of a slot: which handles refer to it, whether its checkout is
//! over, and whether the slot must keep the engine alive.
//!
//! Every handle of one checkout (a `Trace`, a `Node`, their clones) counts
//! in the lease. The checkout ends exactly once, by whichever comes first:
//!
//! - the last handle is dropped (unless the occupant asked to stay loaded
//!   without handles, [`Lease::open`]'s `keep`): [`Lease::drop_handle`]
//!   returns [`Dropped::Last`] and the caller releases the slot;
//! - an explicit release: [`Lease::close`];
//! - idle reaping of an occupant that stays loaded without handles:
//!   [`Lease::close_if_unused`], which only succeeds while no handle exists.
//!
//! A new handle through `load` ([`Lease::acquire`]) is counted only while the
//! checkout is open, so a handle obtained concurrently with the last drop
//! either keeps the occupant (it came first) or is refused (the drop came
//! first): never both.
//!
//! The lease lives in the slot's state and changes only under the slot's
//! lock, so these races are settled by the lock. Handles that outlived their
//! checkout (stale handles, of any earlier occupant of the slot) stay counted
//! in [`Lease::handles`]: while any handle refers to the slot, the slot holds
//! one reference to the engine (taken when the count leaves zero, given back
//! when it returns to zero), which is what keeps the engine's memory alive
//! under every handle. A handle therefore owns no reference count of its own:
//! creating one under the slot's lock (a node added) costs no atomic
//! operation, and dropping one costs the slot's lock.

/// What dropping one handle did to the checkout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dropped {
    /// Other handles remain, or the occupant stays loaded without handles.
    Still,
    /// This was the last handle: the checkout is over and the caller must
    /// release the slot.
    Last,
    /// The handle's checkout was already over.
    Stale,
}

/// The lease of one slot (guarded by the slot's lock).
#[derive(Debug, Default)]
pub(crate) struct Lease {
    /// Every handle that refers to this slot, whatever checkout it belongs
    /// to. Non-zero: the slot holds a reference to the engine.
    handles: u64,
    /// The generation of the current (or last) checkout.
    generation: u64,
    /// Handles of that checkout.
    live: u64,
    /// Dropping its last handle does not end the checkout.
    keep: bool,
    /// The checkout is not over.
    open: bool,
}

/// Whether a change made the slot take or give back its engine reference.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pin {
    /// Nothing to do.
    Unchanged,
    /// The first handle: the caller takes a reference to the engine for the slot.
    Take,
    /// The last handle: the caller gives the slot's reference back (after
    /// everything else it does with the engine).
    GiveBack,
}

impl Lease {
    /// Starts the checkout of `generation` with `handles` handles. With
    /// `keep`, dropping the last handle does not end it.
    pub(crate) fn open(&mut self, generation: u64, keep: bool, handles: u64) -> Pin {
        self.generation = generation;
        self.live = handles;
        self.keep = keep;
        self.open = true;
        self.count_in(handles)
    }

    /// Counts one more handle of `generation` obtained by id (`load`): only
    /// while that checkout is open (`None`: refused, nothing counted).
    pub(crate) fn acquire(&mut self, generation: u64) -> Option<Pin> {
        if !self.is_open(generation) {
            return None;
        }
        self.live += 1;
        Some(self.count_in(1))
    }

    /// Counts a handle made from an existing one (a clone, a node added): it
    /// belongs to the checkout of `generation` if that is still open, and
    /// is stale like its origin otherwise. The existing handle keeps the
    /// engine reference, so nothing is taken.
    pub(crate) fn add_handle(&mut self, generation: u64) {
        debug_assert!(self.handles > 0, "a handle made from none");
        if self.is_open(generation) {
            self.live += 1;
        }
        self.handles += 1;
    }

    /// Uncounts one handle of `generation`.
    pub(crate) fn drop_handle(&mut self, generation: u64) -> (Dropped, Pin) {
        debug_assert!(self.handles > 0, "a handle dropped twice");
        let outcome = if !self.is_open(generation) || self.live == 0 {
            Dropped::Stale
        } else {
            self.live -= 1;
            if self.live == 0 && !self.keep {
                self.open = false;
                Dropped::Last
            } else {
                Dropped::Still
            }
        };
        self.handles = self.handles.saturating_sub(1);
        let pin = if self.handles == 0 {
            Pin::GiveBack
        } else {
            Pin::Unchanged
        };
        (outcome, pin)
    }

    /// Ends the checkout of `generation` whatever its count. `true` if this
    /// call ended it (the caller releases the slot).
    pub(crate) fn close(&mut self, generation: u64) -> bool {
        if !self.is_open(generation) {
            return false;
        }
        self.open = false;
        true
    }

    /// Ends the checkout of `generation` only if no handle refers to it.
    pub(crate) fn close_if_unused(&mut self, generation: u64) -> bool {
        if !self.is_open(generation) || self.live != 0 {
            return false;
        }
        self.open = false;
        true
    }

    /// Whether the open checkout keeps its occupant loaded without handles
    /// and has none now (a candidate for idle reaping).
    pub(crate) fn keeper_without_handles(&self) -> bool {
        self.open && self.keep && self.live == 0
    }

    /// Handles that refer to this slot (any checkout).
    #[cfg(test)]
    pub(crate) fn handles(&self) -> u64 {
        self.handles
    }

    fn is_open(&self, generation: u64) -> bool {
        self.open && self.generation == generation
    }

    fn count_in(&mut self, n: u64) -> Pin {
        let was = self.handles;
        self.handles += n;
        if was == 0 && n > 0 {
            Pin::Take
        } else {
            Pin::Unchanged
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_drop_ends_the_checkout_once_and_gives_the_engine_back() {
        let mut l = Lease::default();
        assert_eq!(l.open(7, false, 1), Pin::Take);
        assert_eq!(l.acquire(7), Some(Pin::Unchanged));
        assert_eq!(l.drop_handle(7), (Dropped::Still, Pin::Unchanged));
        assert_eq!(l.drop_handle(7), (Dropped::Last, Pin::GiveBack));
        assert_eq!(l.acquire(7), None, "no handle after the checkout ended");
        assert!(!l.close(7));
        assert_eq!(l.handles(), 0);
    }

    #[test]
    fn keep_loaded_survives_the_last_drop_and_is_reaped_only_unused() {
        let mut l = Lease::default();
        assert_eq!(l.open(3, true, 1), Pin::Take);
        assert!(!l.close_if_unused(3), "a handle exists");
        assert_eq!(l.drop_handle(3), (Dropped::Still, Pin::GiveBack));
        assert!(l.keeper_without_handles());
        assert_eq!(l.acquire(3), Some(Pin::Take), "load revives it");
        assert!(!l.close_if_unused(3));
        assert_eq!(l.drop_handle(3), (Dropped::Still, Pin::GiveBack));
        assert!(l.close_if_unused(3));
        assert_eq!(l.acquire(3), None);
        assert!(!l.keeper_without_handles());
    }

    #[test]
    fn stale_handles_stay_counted_across_later_checkouts() {
        let mut l = Lease::default();
        assert_eq!(l.open(1, false, 1), Pin::Take);
        l.add_handle(1); // a node of checkout 1
        assert!(l.close(1), "released explicitly");
        l.add_handle(1); // a clone of a stale handle: stale too
        assert_eq!(l.acquire(1), None);
        // The slot's next occupant: the stale handles still pin the engine.
        assert_eq!(l.open(2, false, 1), Pin::Unchanged);
        assert_eq!(l.drop_handle(1), (Dropped::Stale, Pin::Unchanged));
        assert!(!l.close(1));
        assert_eq!(l.drop_handle(2), (Dropped::Last, Pin::Unchanged));
        assert_eq!(l.drop_handle(1), (Dropped::Stale, Pin::Unchanged));
        assert_eq!(l.drop_handle(1), (Dropped::Stale, Pin::GiveBack));
        assert_eq!(l.handles(), 0);
    }

    #[test]
    fn handles_made_from_a_live_one_keep_the_checkout() {
        let mut l = Lease::default();
        assert_eq!(l.open(4, false, 1), Pin::Take);
        l.add_handle(4); // a node
        assert_eq!(
            l.drop_handle(4),
            (Dropped::Still, Pin::Unchanged),
            "the trace handle"
        );
        assert_eq!(
            l.drop_handle(4),
            (Dropped::Last, Pin::GiveBack),
            "the node was the last"
        );
    }
}
