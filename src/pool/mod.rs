//! The slot pool: trace slots preallocated at build time, a lock-free free
//! list of their indices, and the exhaustion policy.
//!
//! A slot is checked out by `create`/`open` and checked back in by `release`
//! after its state was reset in place. Slots live in chunks that never move:
//! the first chunk holds the configured capacity; under [`Exhausted::Grow`]
//! each new chunk doubles the total. A slot's address is therefore stable for
//! the life of the engine, and handles refer to it by index plus generation.
//!
//! This module owns slot storage and checkout/checkin; what a slot contains
//! ([`TraceState`]) and its reset belong to `crate::trace`.

mod free_list;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::loom::AtomicU32;
use crate::trace::state::{Limits, TraceState};
use free_list::{FreeList, Links, NIL};

/// What `create`/`open` do when every slot is in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exhausted {
    /// Wait up to this long for a slot to be released, then fail with
    /// [`Error::PoolExhausted`].
    Wait(Duration),
    /// Fail at once with [`Error::PoolExhausted`].
    Error,
    /// Allocate more slots (the pool doubles; counted in `EngineStats::grown`).
    Grow,
}

impl Default for Exhausted {
    fn default() -> Self {
        Exhausted::Wait(Duration::from_millis(50))
    }
}

/// One trace slot.
#[derive(Debug)]
pub(crate) struct Slot {
    /// The trace held by this slot; one lock serialises every operation of a trace.
    pub(crate) state: Mutex<TraceState>,
    /// Serialises driver writes of this slot (worker batches and the final
    /// flush in `release`) so batches reach the driver in seq order.
    pub(crate) io: Mutex<()>,
    /// Free-list link.
    next_free: AtomicU32,
    /// `(generation << 8) | status` of the last trace released from this slot,
    /// so a stale handle can still report the status its trace ended with.
    pub(crate) released: AtomicU64,
}

/// Locks a mutex, recovering from poisoning: a panic elsewhere must not make
/// every later call panic too (state is kept consistent by construction).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

const MAX_CHUNKS: usize = 24;

/// Preallocated slots plus the free list.
#[derive(Debug)]
pub(crate) struct SlotPool {
    chunks: [OnceLock<Box<[Slot]>>; MAX_CHUNKS],
    base: usize,
    chunk_count: AtomicUsize,
    capacity: AtomicUsize,
    free: FreeList,
    in_use: AtomicUsize,
    peak: AtomicUsize,
    grown: AtomicUsize,
    grow_lock: Mutex<()>,
    waiters: AtomicUsize,
    wait_lock: Mutex<()>,
    wait_cv: Condvar,
    policy: Exhausted,
    limits: Limits,
}

impl Links for SlotPool {
    fn link(&self, idx: u32) -> &AtomicU32 {
        &self.get(idx).next_free
    }
}

impl SlotPool {
    pub(crate) fn new(capacity: usize, policy: Exhausted, limits: Limits) -> SlotPool {
        let pool = SlotPool {
            chunks: std::array::from_fn(|_| OnceLock::new()),
            base: capacity.max(1),
            chunk_count: AtomicUsize::new(0),
            capacity: AtomicUsize::new(0),
            free: FreeList::new(),
            in_use: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            grown: AtomicUsize::new(0),
            grow_lock: Mutex::new(()),
            waiters: AtomicUsize::new(0),
            wait_lock: Mutex::new(()),
            wait_cv: Condvar::new(),
            policy,
            limits,
        };
        pool.add_chunk();
        pool
    }

    /// Start index and length of chunk `k`: chunk 0 is `[0, base)`, chunk
    /// `k >= 1` is `[base * 2^(k-1), base * 2^k)`.
    fn chunk_bounds(&self, k: usize) -> (usize, usize) {
        if k == 0 {
            (0, self.base)
        } else {
            (self.base << (k - 1), self.base << (k - 1))
        }
    }

    fn add_chunk(&self) -> bool {
        let k = self.chunk_count.load(Ordering::Acquire);
        if k >= MAX_CHUNKS {
            return false;
        }
        let (start, len) = self.chunk_bounds(k);
        if start + len > NIL as usize {
            return false;
        }
        let slots: Box<[Slot]> = (0..len)
            .map(|_| Slot {
                state: Mutex::new(TraceState::new(self.limits)),
                io: Mutex::new(()),
                next_free: AtomicU32::new(NIL),
                released: AtomicU64::new(0),
            })
            .collect();
        if self.chunks[k].set(slots).is_err() {
            return false;
        }
        self.chunk_count.store(k + 1, Ordering::Release);
        self.capacity.store(start + len, Ordering::Release);
        // Push in reverse so that low indices are handed out first.
        for i in (start..start + len).rev() {
            self.free.push(self, i as u32);
        }
        true
    }

    /// The slot at `idx`. Indices come only from this pool, so they are in range.
    pub(crate) fn get(&self, idx: u32) -> &Slot {
        let i = idx as usize;
        let k = if i < self.base {
            0
        } else {
            (usize::BITS - (i / self.base).leading_zeros()) as usize
        };
        let (start, _) = self.chunk_bounds(k);
        let chunk = self.chunks[k]
            .get()
            .expect("slot index from this pool refers to an allocated chunk");
        &chunk[i - start]
    }

    /// Iterates over every allocated slot index.
    pub(crate) fn indices(&self) -> std::ops::Range<u32> {
        0..self.capacity.load(Ordering::Acquire) as u32
    }

    fn took(&self) {
        let n = self.in_use.fetch_add(1, Ordering::AcqRel) + 1;
        self.peak.fetch_max(n, Ordering::AcqRel);
    }

    /// Checks out a free slot, applying the exhaustion policy.
    pub(crate) fn checkout(&self) -> Result<u32> {
        if let Some(i) = self.free.pop(self) {
            self.took();
            return Ok(i);
        }
        match self.policy {
            Exhausted::Error => Err(self.exhausted()),
            Exhausted::Grow => loop {
                {
                    let _g = lock(&self.grow_lock);
                    if let Some(i) = self.free.pop(self) {
                        self.took();
                        return Ok(i);
                    }
                    let before = self.capacity.load(Ordering::Acquire);
                    if !self.add_chunk() {
                        return Err(self.exhausted());
                    }
                    self.grown.fetch_add(
                        self.capacity.load(Ordering::Acquire) - before,
                        Ordering::AcqRel,
                    );
                }
                if let Some(i) = self.free.pop(self) {
                    self.took();
                    return Ok(i);
                }
            },
            Exhausted::Wait(timeout) => {
                let deadline = Instant::now() + timeout;
                let mut g = lock(&self.wait_lock);
                self.waiters.fetch_add(1, Ordering::SeqCst);
                std::sync::atomic::fence(Ordering::SeqCst);
                let result = loop {
                    if let Some(i) = self.free.pop(self) {
                        self.took();
                        break Ok(i);
                    }
                    let now = Instant::now();
                    if now >= deadline {
                        break Err(self.exhausted());
                    }
                    g = self
                        .wait_cv
                        .wait_timeout(g, deadline - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                };
                self.waiters.fetch_sub(1, Ordering::SeqCst);
                result
            }
        }
    }

    fn exhausted(&self) -> Error {
        Error::PoolExhausted
    }

    /// Returns a reset slot to the free list and wakes one waiter.
    pub(crate) fn checkin(&self, idx: u32) {
        self.free.push(self, idx);
        self.in_use.fetch_sub(1, Ordering::AcqRel);
        // Pairs with the fence in `checkout`: either the waiter sees the
        // pushed index or we see the waiter.
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.waiters.load(Ordering::SeqCst) > 0 {
            let _g = lock(&self.wait_lock);
            self.wait_cv.notify_one();
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity.load(Ordering::Acquire)
    }
    pub(crate) fn in_use(&self) -> usize {
        self.in_use.load(Ordering::Acquire)
    }
    pub(crate) fn peak(&self) -> usize {
        self.peak.load(Ordering::Acquire)
    }
    pub(crate) fn grown(&self) -> usize {
        self.grown.load(Ordering::Acquire)
    }
}
