//! The lease of a checked-out slot: how many handles refer to its occupant,
//! and whether the checkout is over.
//!
//! Every handle of one checkout (a `Trace`, a `Node`, anything holding one)
//! counts in the slot's lease. The checkout ends exactly once, by whichever
//! comes first:
//!
//! - the last handle is dropped (unless the occupant asked to stay loaded
//!   without handles, [`Lease::open`]'s `keep`): [`Lease::drop_handle`]
//!   returns [`Dropped::Last`];
//! - an explicit release: [`Lease::close`];
//! - idle reaping of an occupant that stays loaded without handles:
//!   [`Lease::close_if_unused`], which only succeeds while no handle exists.
//!
//! The caller that ends the checkout gets `true` / `Dropped::Last` and must
//! release the slot; everyone else is told the checkout is already over. A
//! new handle ([`Lease::acquire`], e.g. `engine.load(id)`) is counted only
//! while the checkout is open, so a handle obtained concurrently with the
//! last drop either keeps the occupant (it came first) or is refused (the
//! drop came first): never both.
//!
//! # Layout
//!
//! One `AtomicU64` per slot:
//!
//! ```text
//!  63 ........................ 25   24    23 ............... 0
//! [ generation, low 39 bits      ][keep][ count | PINNED | CLOSED ]
//! ```
//!
//! The generation ties the word to one occupant: a stale handle of an
//! earlier occupant (a different generation) neither counts nor uncounts.
//! Two generations 2^39 reuses apart share a tag; a handle would have to be
//! kept across exactly that many reuses of its slot to be mistaken. A count
//! that would reach [`PINNED`] saturates there: the checkout then never ends
//! by dropping handles (only by an explicit release), instead of wrapping.
//!
//! Loom models of the races (last drop vs explicit release vs a concurrent
//! `acquire`) are at the end of this file.

use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};

use crate::loom::AtomicU64;

const COUNT_BITS: u32 = 24;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;
const KEEP: u64 = 1 << COUNT_BITS;
const TAG_SHIFT: u32 = COUNT_BITS + 1;
const TAG_MASK: u64 = (1 << (64 - TAG_SHIFT)) - 1;
/// The count of a checkout that is over.
const CLOSED: u64 = COUNT_MASK;
/// A saturated count: the checkout no longer ends by dropping handles.
const PINNED: u64 = COUNT_MASK - 1;

fn tag(generation: u64) -> u64 {
    (generation & TAG_MASK) << TAG_SHIFT
}

fn same_generation(word: u64, generation: u64) -> bool {
    word & !(KEEP | COUNT_MASK) == tag(generation)
}

/// What dropping one handle did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dropped {
    /// Other handles remain, or the occupant stays loaded without handles.
    Still,
    /// This was the last handle: the checkout is over and the caller must
    /// release the slot.
    Last,
    /// The handle did not count (its checkout was already over).
    Stale,
}

/// The lease word of one slot.
#[derive(Debug)]
pub(crate) struct Lease {
    word: AtomicU64,
}

impl Default for Lease {
    fn default() -> Self {
        Lease::new()
    }
}

impl Lease {
    /// A lease of a free slot (closed).
    pub(crate) fn new() -> Lease {
        Lease {
            word: AtomicU64::new(CLOSED),
        }
    }

    /// Starts the checkout of `generation` with `handles` handles. With
    /// `keep`, dropping the last handle does not end it.
    pub(crate) fn open(&self, generation: u64, keep: bool, handles: u64) {
        let keep = if keep { KEEP } else { 0 };
        self.word
            .store(tag(generation) | keep | handles.min(PINNED), Release);
    }

    /// Counts one more handle of `generation`. `false` (and nothing counted)
    /// when that checkout is over.
    pub(crate) fn acquire(&self, generation: u64) -> bool {
        let mut w = self.word.load(Acquire);
        loop {
            let count = w & COUNT_MASK;
            if !same_generation(w, generation) || count == CLOSED {
                return false;
            }
            if count == PINNED {
                return true;
            }
            match self.word.compare_exchange_weak(w, w + 1, AcqRel, Acquire) {
                Ok(_) => return true,
                Err(actual) => w = actual,
            }
        }
    }

    /// Uncounts one handle of `generation`.
    pub(crate) fn drop_handle(&self, generation: u64) -> Dropped {
        let mut w = self.word.load(Acquire);
        loop {
            let count = w & COUNT_MASK;
            if !same_generation(w, generation) || count == CLOSED || count == 0 {
                return Dropped::Stale;
            }
            if count == PINNED {
                return Dropped::Still;
            }
            let (next, outcome) = if count > 1 || w & KEEP != 0 {
                (w - 1, Dropped::Still)
            } else {
                ((w & !COUNT_MASK) | CLOSED, Dropped::Last)
            };
            match self.word.compare_exchange_weak(w, next, AcqRel, Acquire) {
                Ok(_) => return outcome,
                Err(actual) => w = actual,
            }
        }
    }

    /// Ends the checkout of `generation` whatever its count. `true` if this
    /// call ended it (the caller releases the slot).
    pub(crate) fn close(&self, generation: u64) -> bool {
        let mut w = self.word.load(Acquire);
        loop {
            if !same_generation(w, generation) || w & COUNT_MASK == CLOSED {
                return false;
            }
            match self
                .word
                .compare_exchange_weak(w, (w & !COUNT_MASK) | CLOSED, AcqRel, Acquire)
            {
                Ok(_) => return true,
                Err(actual) => w = actual,
            }
        }
    }

    /// Ends the checkout of `generation` only if no handle refers to it.
    pub(crate) fn close_if_unused(&self, generation: u64) -> bool {
        let w = self.word.load(Acquire);
        if !same_generation(w, generation) || w & COUNT_MASK != 0 {
            return false;
        }
        self.word
            .compare_exchange(w, (w & !COUNT_MASK) | CLOSED, AcqRel, Acquire)
            .is_ok()
    }

    /// Whether the open checkout (of whatever generation) keeps its occupant
    /// loaded without handles and has none now: a cheap pre-check for idle
    /// reaping (the generation is then read under the slot's lock).
    pub(crate) fn keeper_without_handles(&self) -> bool {
        let w = self.word.load(Relaxed);
        w & KEEP != 0 && w & COUNT_MASK == 0
    }
}

#[cfg(all(test, not(tracepool_loom)))]
mod tests {
    use super::*;

    #[test]
    fn last_drop_ends_the_checkout_once() {
        let l = Lease::new();
        l.open(7, false, 1);
        assert!(l.acquire(7));
        assert_eq!(l.drop_handle(7), Dropped::Still);
        assert_eq!(l.drop_handle(7), Dropped::Last);
        assert_eq!(l.drop_handle(7), Dropped::Stale);
        assert!(!l.acquire(7), "no handle after the checkout ended");
        assert!(!l.close(7));
    }

    #[test]
    fn keep_loaded_survives_the_last_drop_and_is_reaped_only_unused() {
        let l = Lease::new();
        l.open(3, true, 1);
        assert!(!l.close_if_unused(3), "a handle exists");
        assert_eq!(l.drop_handle(3), Dropped::Still);
        assert!(l.keeper_without_handles());
        assert!(l.acquire(3), "load revives it");
        assert!(!l.close_if_unused(3));
        assert_eq!(l.drop_handle(3), Dropped::Still);
        assert!(l.close_if_unused(3));
        assert!(!l.acquire(3));
    }

    #[test]
    fn stale_generations_neither_count_nor_uncount() {
        let l = Lease::new();
        l.open(1, false, 1);
        assert!(l.close(1));
        l.open(2, false, 1);
        assert!(!l.acquire(1));
        assert_eq!(l.drop_handle(1), Dropped::Stale);
        assert!(!l.close(1));
        assert_eq!(l.drop_handle(2), Dropped::Last);
    }

    #[test]
    fn a_saturated_count_pins_instead_of_wrapping() {
        let l = Lease::new();
        l.open(5, false, PINNED - 1);
        assert!(l.acquire(5));
        assert!(l.acquire(5), "stays pinned");
        for _ in 0..4 {
            assert_eq!(l.drop_handle(5), Dropped::Still);
        }
        assert!(l.close(5), "an explicit release still ends it");
    }

    #[test]
    fn generations_wrap_at_the_tag_width() {
        let l = Lease::new();
        let g = TAG_MASK; // the largest tag, then it wraps to 0
        l.open(g, false, 1);
        assert!(l.acquire(g));
        assert!(!l.acquire(g + 1));
        assert_eq!(l.drop_handle(g), Dropped::Still);
        assert_eq!(l.drop_handle(g), Dropped::Last);
    }
}

/// Loom models: run with
/// `RUSTFLAGS="--cfg tracepool_loom" CARGO_TARGET_DIR=target/loom cargo test --release --lib loom_model`.
#[cfg(all(test, tracepool_loom))]
mod loom_model {
    use super::*;
    use loom::sync::Arc;
    use loom::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use loom::thread;

    /// One handle exists. Concurrently: it is dropped, the trace is released
    /// explicitly, and a `load` takes (and later drops) a second handle.
    /// Exactly one party ends the checkout, and never while the loaded
    /// handle is alive unless that party is the explicit release.
    #[test]
    fn last_drop_vs_release_vs_load() {
        loom::model(|| {
            let lease = Arc::new(Lease::new());
            lease.open(9, false, 1);
            let ended = Arc::new(AtomicUsize::new(0));
            // 1 while the loaded handle is alive.
            let loaded_alive = Arc::new(AtomicUsize::new(0));

            let dropper = {
                let (lease, ended, alive) = (lease.clone(), ended.clone(), loaded_alive.clone());
                thread::spawn(move || {
                    if lease.drop_handle(9) == Dropped::Last {
                        assert_eq!(alive.load(SeqCst), 0, "released under a live handle");
                        ended.fetch_add(1, SeqCst);
                    }
                })
            };
            let loader = {
                let (lease, ended, alive) = (lease.clone(), ended.clone(), loaded_alive.clone());
                thread::spawn(move || {
                    if lease.acquire(9) {
                        alive.store(1, SeqCst);
                        alive.store(0, SeqCst);
                        if lease.drop_handle(9) == Dropped::Last {
                            ended.fetch_add(1, SeqCst);
                        }
                    }
                })
            };
            if lease.close(9) {
                ended.fetch_add(1, SeqCst);
            }
            dropper.join().unwrap();
            loader.join().unwrap();
            assert_eq!(ended.load(SeqCst), 1, "the checkout ends exactly once");
            assert!(!lease.acquire(9));
        });
    }

    /// A keep-loaded trace with no handle: the idle reaper and a `load` race.
    /// Either the load wins (and the reaper gives up) or the reaper wins (and
    /// the load is refused); never both.
    #[test]
    fn reaper_vs_load() {
        loom::model(|| {
            let lease = Arc::new(Lease::new());
            lease.open(4, true, 0);
            let loader = {
                let lease = lease.clone();
                thread::spawn(move || lease.acquire(4))
            };
            let reaped = lease.close_if_unused(4);
            let loaded = loader.join().unwrap();
            assert!(reaped != loaded, "reaped={reaped} loaded={loaded}");
            if loaded {
                assert_eq!(lease.drop_handle(4), Dropped::Still, "keep-loaded");
                assert!(lease.close_if_unused(4));
            }
        });
    }
}
