//! The slot pool: slots preallocated at build time, a lock-free free list of
//! their indices, the queue of callers waiting for a slot, and the
//! exhaustion policy.
//!
//! A slot is checked out by `create`/`open`, and checked back in once its
//! occupant was released and reset. Between the two it is *in use*, and
//! after a release that still has writes for the storage driver it is
//! *draining* (not in use, not yet free); `free + in_use + draining` is the
//! capacity at every moment ([`SlotPool::gauges`]).
//!
//! Slots live in chunks that never move: the first chunk holds the
//! configured capacity; under [`Exhausted::Grow`] each new chunk doubles the
//! total. A slot's address is stable for the life of the pool, so handles
//! refer to it by index plus generation (a [`SlotKey`]).
//!
//! This module is generic over what a slot holds: it owns storage, checkout
//! and checkin and waiting, not the trace state nor the handles that refer
//! to a slot (those are `crate::trace`'s), and it never resets a slot itself.

mod free_list;
mod waiters;

use std::future::{Future, poll_fn};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::task::Poll;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::loom::AtomicU32;
use free_list::{FreeList, Links, NIL};
use waiters::Waiters;

/// What `create`/`open` do when every slot is in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exhausted {
    /// Wait up to this long for a slot to be released, then fail with
    /// [`Error::PoolExhausted`]. [`Engine::create`](crate::Engine::create)
    /// blocks the calling thread while it waits;
    /// [`Engine::create_async`](crate::Engine::create_async) does not.
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

/// One checkout of a slot: its index and the generation of its occupant.
/// How handles, readers, the registry and the workers name the trace a
/// slot was checked out for. A key whose generation is not the slot's
/// current one is stale (its trace was released). Where only the slot is
/// meant (free list, worker queues), a bare `u32` index is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SlotKey {
    /// The slot's index in the pool.
    pub(crate) idx: u32,
    /// The generation of the occupant (bumped when the slot is reset).
    pub(crate) generation: u64,
}

impl SlotKey {
    /// The checkout `generation` of slot `idx`.
    pub(crate) const fn new(idx: u32, generation: u64) -> SlotKey {
        SlotKey { idx, generation }
    }
}

/// One slot: what it holds and its free-list link.
///
/// Aligned to 128 bytes (two cache lines, the prefetcher's pair), so that
/// two threads on neighbouring slots never share a line, whatever the size
/// of `T`.
#[derive(Debug)]
#[repr(align(128))]
pub(crate) struct Slot<T> {
    value: T,
    next_free: AtomicU32,
}

impl<T> std::ops::Deref for Slot<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

/// Locks a mutex, recovering from poisoning: a panic elsewhere must not make
/// every later call panic too (state is kept consistent by construction).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

const MAX_CHUNKS: usize = 24;
const GAUGE_SHIFT: u32 = 32;
const IN_USE_ONE: u64 = 1;
const DRAINING_ONE: u64 = 1 << GAUGE_SHIFT;

/// A point-in-time view of the pool's occupancy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gauges {
    pub(crate) capacity: usize,
    pub(crate) in_use: usize,
    pub(crate) draining: usize,
    pub(crate) free: usize,
    pub(crate) peak: usize,
    pub(crate) grown: usize,
}

/// Preallocated slots, the free list and the waiters.
pub(crate) struct SlotPool<T> {
    chunks: [OnceLock<Box<[Slot<T>]>>; MAX_CHUNKS],
    base: usize,
    chunk_count: AtomicUsize,
    capacity: AtomicUsize,
    free: FreeList,
    /// In-use slots (low 32 bits) and draining slots (high 32 bits), in one
    /// word so that a slot moves from one to the other in one step.
    gauges: AtomicU64,
    peak: AtomicUsize,
    /// The lowest and highest index ever checked out: every slot that was
    /// ever used lies in `touched_lo..=touched_hi` (`lo > hi`: none yet), so
    /// a scan of used slots (`flush` publishing live counters) skips the
    /// rest of a mostly idle pool.
    touched_lo: std::sync::atomic::AtomicU32,
    touched_hi: std::sync::atomic::AtomicU32,
    grown: AtomicUsize,
    grow_lock: Mutex<()>,
    waiters: Waiters,
    policy: Exhausted,
    make: Box<dyn Fn() -> T + Send + Sync>,
}

impl<T> std::fmt::Debug for SlotPool<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlotPool")
            .field("gauges", &self.gauges())
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl<T> Links for SlotPool<T> {
    fn link(&self, idx: u32) -> &AtomicU32 {
        &self.get(idx).next_free
    }
}

impl<T> SlotPool<T> {
    /// A pool of `capacity` slots, each holding `make()`.
    pub(crate) fn new(
        capacity: usize,
        policy: Exhausted,
        make: impl Fn() -> T + Send + Sync + 'static,
    ) -> SlotPool<T> {
        let pool = SlotPool {
            chunks: std::array::from_fn(|_| OnceLock::new()),
            base: capacity.max(1),
            chunk_count: AtomicUsize::new(0),
            capacity: AtomicUsize::new(0),
            free: FreeList::new(),
            gauges: AtomicU64::new(0),
            peak: AtomicUsize::new(0),
            touched_lo: std::sync::atomic::AtomicU32::new(u32::MAX),
            touched_hi: std::sync::atomic::AtomicU32::new(0),
            grown: AtomicUsize::new(0),
            grow_lock: Mutex::new(()),
            waiters: Waiters::default(),
            policy,
            make: Box::new(make),
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
        if start + len >= NIL as usize {
            return false;
        }
        let slots: Box<[Slot<T>]> = (0..len)
            .map(|_| Slot {
                value: (self.make)(),
                next_free: AtomicU32::new(NIL),
            })
            .collect();
        if self.chunks[k].set(slots).is_err() {
            return false;
        }
        self.chunk_count.store(k + 1, Ordering::Release);
        self.capacity.store(start + len, Ordering::Release);
        // Push in reverse so that low indices are handed out first. Indices
        // are below NIL (checked above), so they fit in a u32.
        for i in (start..start + len).rev() {
            self.free.push(self, i as u32);
        }
        true
    }

    /// The slot at `idx`. Indices come only from this pool, so they are in range.
    pub(crate) fn get(&self, idx: u32) -> &Slot<T> {
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

    /// Every allocated slot index.
    pub(crate) fn indices(&self) -> std::ops::Range<u32> {
        // The capacity never exceeds NIL (see `add_chunk`).
        0..u32::try_from(self.capacity.load(Ordering::Acquire)).unwrap_or(NIL)
    }

    /// Every slot index that was ever checked out (and some never used
    /// between them), in order.
    pub(crate) fn touched_indices(&self) -> std::ops::RangeInclusive<u32> {
        let lo = self.touched_lo.load(Ordering::Acquire);
        let hi = self.touched_hi.load(Ordering::Acquire);
        if lo > hi {
            #[allow(clippy::reversed_empty_ranges)]
            return 1..=0;
        }
        lo..=hi
    }

    fn pop(&self) -> Option<u32> {
        let i = self.free.pop(self)?;
        // Read first: the range rarely changes, so no write in the common case.
        if i < self.touched_lo.load(Ordering::Relaxed) {
            self.touched_lo.fetch_min(i, Ordering::AcqRel);
        }
        if i > self.touched_hi.load(Ordering::Relaxed) {
            self.touched_hi.fetch_max(i, Ordering::AcqRel);
        }
        let n = self.gauges.fetch_add(IN_USE_ONE, Ordering::AcqRel) + IN_USE_ONE;
        let in_use = (n & (DRAINING_ONE - 1)) as usize;
        // Read first: a new peak is rare, so no write in the common case.
        if in_use > self.peak.load(Ordering::Relaxed) {
            self.peak.fetch_max(in_use, Ordering::AcqRel);
        }
        Some(i)
    }

    /// Checks out a free slot without waiting: `Ok(None)` when the policy is
    /// `Wait` and every slot is taken.
    fn checkout_now(&self) -> Result<Option<u32>> {
        if let Some(i) = self.pop() {
            return Ok(Some(i));
        }
        match self.policy {
            Exhausted::Error => Err(Error::PoolExhausted),
            Exhausted::Grow => self.grow_and_pop().map(Some),
            Exhausted::Wait(_) => Ok(None),
        }
    }

    fn grow_and_pop(&self) -> Result<u32> {
        loop {
            {
                let _g = lock(&self.grow_lock);
                if let Some(i) = self.pop() {
                    return Ok(i);
                }
                let before = self.capacity.load(Ordering::Acquire);
                if !self.add_chunk() {
                    return Err(Error::PoolExhausted);
                }
                self.grown.fetch_add(
                    self.capacity.load(Ordering::Acquire) - before,
                    Ordering::AcqRel,
                );
            }
            if let Some(i) = self.pop() {
                return Ok(i);
            }
        }
    }

    /// Checks out a free slot, applying the exhaustion policy; `Wait` blocks
    /// the calling thread. `before_wait` runs once if the caller is about
    /// to wait (the engine hurries draining slots then).
    pub(crate) fn checkout(&self, before_wait: impl FnOnce()) -> Result<u32> {
        if let Some(i) = self.checkout_now()? {
            return Ok(i);
        }
        let Exhausted::Wait(timeout) = self.policy else {
            return Err(Error::PoolExhausted);
        };
        before_wait();
        self.waiters
            .wait_take(&self.free, Instant::now() + timeout, || self.pop())
            .ok_or(Error::PoolExhausted)
    }

    /// Checks out a free slot, applying the exhaustion policy; `Wait` waits
    /// without blocking the thread, until a slot is free or `sleep(timeout)`
    /// completes. Cancel safe: a dropped future holds no slot and passes on
    /// any wake-up it received. `before_wait` as for [`checkout`](SlotPool::checkout).
    pub(crate) async fn checkout_async<S: Future<Output = ()>>(
        &self,
        sleep: impl FnOnce(Duration) -> S,
        before_wait: impl FnOnce(),
    ) -> Result<u32> {
        if let Some(i) = self.checkout_now()? {
            return Ok(i);
        }
        let Exhausted::Wait(timeout) = self.policy else {
            return Err(Error::PoolExhausted);
        };
        before_wait();
        let sleep = sleep(timeout);
        let mut sleep = std::pin::pin!(sleep);
        let mut place = self.waiters.place(&self.free);
        poll_fn(|cx| {
            if let Poll::Ready(i) = self.waiters.poll_take(&mut place, cx, &mut || self.pop()) {
                return Poll::Ready(Ok(i));
            }
            if sleep.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(Error::PoolExhausted));
            }
            Poll::Pending
        })
        .await
    }

    fn push_free(&self, idx: u32) {
        if self.free.push(self, idx) {
            self.waiters.notify_one(&self.free);
        }
    }

    /// Returns an in-use slot, already reset, to the free list.
    pub(crate) fn checkin(&self, idx: u32) {
        self.gauges.fetch_sub(IN_USE_ONE, Ordering::AcqRel);
        self.push_free(idx);
    }

    /// An in-use slot starts draining (released, still writing).
    pub(crate) fn start_draining(&self) {
        // in_use >= 1 here, so subtracting one from the low half never borrows.
        self.gauges
            .fetch_add(DRAINING_ONE - IN_USE_ONE, Ordering::AcqRel);
    }

    /// Returns a drained slot, already reset, to the free list.
    pub(crate) fn checkin_drained(&self, idx: u32) {
        self.gauges.fetch_sub(DRAINING_ONE, Ordering::AcqRel);
        self.push_free(idx);
    }

    /// Whether a caller waits for a free slot.
    pub(crate) fn has_waiters(&self) -> bool {
        self.waiters.count() > 0
    }

    /// How many callers wait for a free slot.
    pub(crate) fn waiting(&self) -> usize {
        self.waiters.count()
    }

    /// Whether at most a quarter of the slots is free.
    pub(crate) fn is_scarce(&self) -> bool {
        let g = self.gauges();
        g.free.saturating_mul(4) <= g.capacity
    }

    /// Occupancy now: `free + in_use + draining == capacity`.
    pub(crate) fn gauges(&self) -> Gauges {
        let g = self.gauges.load(Ordering::Acquire);
        // Read after the gauges: the capacity only grows, so it is at least
        // what it was when those slots were counted.
        let capacity = self.capacity.load(Ordering::Acquire);
        let in_use = (g & (DRAINING_ONE - 1)) as usize;
        let draining = (g >> GAUGE_SHIFT) as usize;
        Gauges {
            capacity,
            in_use,
            draining,
            free: capacity.saturating_sub(in_use + draining),
            peak: self.peak.load(Ordering::Acquire),
            grown: self.grown.load(Ordering::Acquire),
        }
    }
}
