//! The engine's shared core: the pool of trace slots, the registry, the
//! workers' queues, the driver, the counters, and the life of a slot from
//! checkout to release, drain and checkin.
//!
//! ```text
//!  checkout ──> Live ──release──> (writes left?) ──no──> reset ──> free
//!   (create,     │ handles          │yes
//!    open)       │ operate          v
//!                │             Draining ──worker wrote the last batch──> reset ──> free
//!                │                  │  (a failing driver: retried with backoff
//!                │                  │   up to drain_timeout, then dropped, counted)
//!                │                  └──remove: pending writes discarded──> reset ──> free
//! ```
//!
//! `release` (explicit, on the last handle's drop, on idle, at shutdown)
//! never does I/O: it detaches the subscribers, and either resets the slot
//! at once or marks it draining and leaves the rest to the slot's worker.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, MutexGuard};
use std::task::Waker;
use std::time::Instant;

use super::builder::Config;
use super::flush::{FlushState, Signal};
use super::registry::Registry;
use super::ticker::TickerShared;
use super::workers::{WAKE_AT, WorkerQueue};
use crate::driver::{Driver, WriteBatch};
use crate::error::{Error, Result};
use crate::event::encode::Source;
use crate::event::log::{EventLog, LogHost};
use crate::event::value::{LogText, Val};
use crate::id::{TraceId, TraceIdGen, now_ms};
use crate::model::Level;
use crate::pool::{SlotKey, SlotPool, lock};
use crate::spin_lock::SpinGuard;
use crate::trace::TraceSlot;
use crate::trace::lease::{Dropped, Pin};
use crate::trace::persist::WriteScratch;
use crate::trace::state::{Phase, Target, TraceState};

/// Engine-wide counters.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) events_emitted: Striped,
    pub(crate) events_persisted: AtomicU64,
    pub(crate) events_dropped: Striped,
    pub(crate) events_discarded: AtomicU64,
    pub(crate) history_evicted: Striped,
    pub(crate) events_lagged: Striped,
    pub(crate) logs_dropped: Striped,
    pub(crate) logs_evicted: Striped,
    pub(crate) persist_errors: AtomicU64,
    pub(crate) bytes_written: AtomicU64,
    pub(crate) subscribers: AtomicUsize,
    pub(crate) auto_released: AtomicU64,
    pub(crate) idle_released: AtomicU64,
    pub(crate) step_errors: AtomicU64, // otel-hook: (step guards)
    pub(crate) leases_lost: AtomicU64, // redis-hook
    pub(crate) follows: AtomicUsize,   // redis-hook
}

/// A counter that threads add to without contending: one cell per stripe,
/// each on its own cache line; a thread always adds to the same stripe.
/// Reading sums the stripes.
#[derive(Debug, Default)]
pub(crate) struct Striped([StripeCell; STRIPES]);

const STRIPES: usize = 8;

#[derive(Debug, Default)]
#[repr(align(128))]
struct StripeCell(AtomicU64);

thread_local! {
    static STRIPE: usize = {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES
    };
}

impl Striped {
    /// Adds `n` (nothing for 0).
    pub(crate) fn add(&self, n: u64) {
        if n > 0 {
            let i = STRIPE.with(|s| *s);
            self.0[i].0.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// The sum.
    pub(crate) fn get(&self) -> u64 {
        self.0.iter().map(|c| c.0.load(Ordering::Relaxed)).sum()
    }
}

fn add(c: &AtomicU64, n: u64) {
    if n > 0 {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

/// Adds `delta` (negative: subtracts) to a gauge.
fn add_signed(c: &AtomicUsize, delta: isize) {
    if delta >= 0 {
        c.fetch_add(delta.unsigned_abs(), Ordering::AcqRel);
    } else {
        c.fetch_sub(delta.unsigned_abs(), Ordering::AcqRel);
    }
}

/// Why a trace is released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReleaseKind {
    /// `release`/`remove`.
    Explicit,
    /// Its last handle was dropped.
    Auto,
    /// It stayed loaded without handles and was idle for `idle_timeout`.
    Idle,
    /// The engine shut down.
    Shutdown,
}

/// What a release did.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Released {
    /// The slot is draining (writes left for the driver).
    pub(crate) draining: bool,
    /// Nothing of this trace ever reached the driver.
    pub(crate) never_written: bool,
}

/// What a worker's visit of a slot came to.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Outcome {
    /// Nothing left to do for now.
    Done,
    /// A live trace's batch failed; it is queued again for the next pass.
    Failed {
        /// The flush epoch its writes were queued at.
        epoch: u64,
    },
    /// A draining slot's batch failed; retry after a pause.
    Retry {
        /// The checkout whose drain failed.
        key: SlotKey,
        /// The flush epoch its writes were queued at.
        epoch: u64,
        /// When the drain gives up.
        deadline: Instant,
    },
}

/// A slot whose queued writes a worker took ([`Core::take`]): it holds the
/// slot's io lock until [`Core::finish`] is given the outcome.
#[derive(Debug)]
pub(crate) struct Taken<'a> {
    /// The slot and the generation its writes were taken from.
    pub(crate) key: SlotKey,
    _io: MutexGuard<'a, ()>,
    epoch: u64,
    archive: bool,
    release: bool, // redis-hook
    /// There is a batch for the driver (else only an archive to make).
    pub(crate) wrote: bool,
    new_trace: bool,
    id: TraceId,
}

impl Taken<'_> {
    /// The batch of the writes taken into `w` (its events made contiguous).
    fn batch<'w>(&'w self, w: &'w WriteScratch) -> WriteBatch<'w> {
        let (events, _) = w.events.as_slices();
        debug_assert_eq!(events.len(), w.events.len());
        WriteBatch::new(
            self.id.as_str(),
            events,
            &w.docs,
            &w.logs,
            &w.buf,
            self.new_trace,
        )
        .releasing(self.release) // redis-hook
    }
}

/// The slot a worker visits ([`Core::take`]), and why.
#[derive(Debug, Clone, Copy)]
pub(crate) enum VisitOf {
    /// A slot taken from its worker's queue, whatever it holds.
    Queued(u32),
    /// A retry of the failed drain of checkout `key`: nothing if the slot
    /// holds another generation by now.
    Retry(SlotKey),
}

impl VisitOf {
    fn idx(self) -> u32 {
        match self {
            VisitOf::Queued(idx) => idx,
            VisitOf::Retry(key) => key.idx,
        }
    }
}

/// What the first half of a worker's visit of a slot came to.
#[derive(Debug)]
pub(crate) enum Visit<'a> {
    /// Nothing to hand over: the visit is over.
    Done(Outcome),
    /// Writes (or an archive) to hand over, then [`Core::finish`].
    Taken(Taken<'a>),
}

/// Empties `v` and gives its allocation back with another lifetime (the
/// in-place `collect` of an empty vector reuses the buffer), so a worker
/// keeps one buffer of batches across wake-ups.
fn recycle<'b>(mut v: Vec<WriteBatch<'_>>) -> Vec<WriteBatch<'b>> {
    v.clear();
    v.into_iter().map(|_| unreachable!()).collect()
}

/// The state shared by the engine handle, the workers, trace handles and
/// subscriptions.
#[derive(Debug)]
pub(crate) struct Core {
    pub(crate) pool: SlotPool<TraceSlot>,
    pub(crate) registry: Registry,
    pub(crate) driver: Arc<dyn Driver>,
    pub(crate) config: Config,
    pub(crate) counters: Counters,
    pub(crate) queues: Box<[WorkerQueue]>,
    pub(crate) flush: FlushState,
    /// Woken whenever a draining slot finished.
    pub(crate) drains: Signal,
    pub(crate) ticker: Arc<TickerShared>,
    pub(crate) ids: TraceIdGen,
    /// Set by `shutdown`: every later call fails with `ShutDown`.
    pub(crate) shut: AtomicBool,
    /// Tells the workers to finish what is queued and exit.
    pub(crate) stopping: AtomicBool,
    pub(crate) alive_workers: AtomicUsize,
}

impl Core {
    pub(crate) fn queue_of(&self, idx: u32) -> &WorkerQueue {
        &self.queues[idx as usize % self.queues.len()]
    }

    /// Runs `f` on the state of the live trace `key` under its slot lock.
    /// A stale generation gives `Released`; afterwards, the slot is queued
    /// for its worker if it has writes, and subscribers that waited for the
    /// events `f` emitted are woken once the lock is dropped.
    pub(crate) fn with_state<R>(
        &self,
        key: SlotKey,
        f: impl FnOnce(&mut TraceState) -> Result<R>,
    ) -> Result<R> {
        if self.shut.load(Ordering::Relaxed) {
            return Err(Error::ShutDown);
        }
        let slot = self.pool.get(key.idx);
        let mut st = slot.state.lock();
        if !st.is_live(key.generation) {
            return Err(Error::Released);
        }
        // redis-hook: begin (another engine took this trace's lease)
        if let Some(lost) = &st.handoff.lease_lost {
            return Err(super::lease::leased_error(lost));
        }
        // redis-hook: end
        let r = f(&mut st);
        self.enqueue(key.idx, &mut st);
        unlock_and_wake(st);
        r
    }

    /// Chainable logging: never fails; a log that cannot be written (stale
    /// handle, shut-down engine, no current node, finished trace) is counted.
    pub(crate) fn log_chained(
        &self,
        key: SlotKey,
        target: Target,
        level: Level,
        msg: &str,
        data: &mut Option<Val>,
    ) {
        let mut text = LogText::new(msg);
        let r = self.with_state(key, |st| {
            st.log(target, level, &mut text, data);
            Ok(())
        });
        if r.is_err() {
            self.counters.logs_dropped.add(1);
        }
    }

    /// Puts the slot on its worker's queue (once) if it has something for it.
    pub(crate) fn enqueue(&self, idx: u32, st: &mut TraceState) {
        if !st.limits.persists {
            // A driver that keeps nothing is handed nothing (one test
            // instead of the several of `has_writes`, on every operation).
            debug_assert!(!st.has_writes());
            return;
        }
        if st.handoff.queued {
            if st.events.pending_count() == WAKE_AT {
                self.queue_of(idx).wake();
            }
            return;
        }
        // Counters alone do not queue a slot: they are collected at
        // release, at a worker's visit, and by `flush`.
        if !st.has_writes() {
            return;
        }
        if st.handoff.queue(|| self.flush.epoch()) {
            self.queue_of(idx).push(idx);
        }
    }

    /// Queues a slot again after a failed batch, keeping the older epoch.
    fn requeue(&self, idx: u32, st: &mut TraceState, epoch: u64) {
        if st.handoff.requeue(epoch) {
            self.queue_of(idx).push(idx);
        }
    }

    /// Moves a slot's counters into the engine-wide ones.
    pub(crate) fn collect_stats(&self, st: &mut TraceState) {
        let [emitted, evicted, dropped, logs_dropped, logs_evicted] = st.take_stats();
        let c = &self.counters;
        c.events_emitted.add(emitted);
        c.history_evicted.add(evicted);
        c.events_dropped.add(dropped);
        c.logs_dropped.add(logs_dropped);
        c.logs_evicted.add(logs_evicted);
    }

    /// Counts the outcome of one batch of trace `id` (`n` events, `bytes`
    /// bytes) and records a failure for `flush`.
    fn count_write(&self, id: &TraceId, n: u64, bytes: u64, r: &Result<()>) {
        match r {
            Ok(()) => {
                add(&self.counters.events_persisted, n);
                add(&self.counters.bytes_written, bytes);
            }
            Err(Error::AlreadyExists) => {
                self.counters.persist_errors.fetch_add(1, Ordering::Relaxed);
                self.flush.record_error(&Error::Storage {
                    location: format!("trace {}", id.as_str()),
                    message: "storage already holds a trace with this id: this trace's writes \
                              are dropped (never merged into the other trace)"
                        .into(),
                    source: None,
                });
            }
            // redis-hook: begin
            Err(Error::Leased { owner, .. }) => {
                self.counters.persist_errors.fetch_add(1, Ordering::Relaxed);
                self.flush
                    .record_error(&super::lease::lost_error(id, owner));
            }
            // redis-hook: end
            Err(e) => {
                self.counters.persist_errors.fetch_add(1, Ordering::Relaxed);
                self.flush.record_error(e);
            }
        }
    }

    /// Hands the writes of every slot of `group` (slot `i`'s in
    /// `scratches[i]`) to the driver in one [`Driver::write_group`] call
    /// (one commit for the store driver), counts each outcome, and leaves
    /// one result per slot in `results`. `batches` is a reused buffer.
    pub(crate) fn write_group(
        &self,
        group: &[Taken<'_>],
        scratches: &mut [WriteScratch],
        batches: &mut Vec<WriteBatch<'static>>,
        results: &mut Vec<Result<()>>,
    ) {
        let scratches = &mut scratches[..group.len()];
        for w in scratches.iter_mut() {
            w.events.make_contiguous();
        }
        let mut list: Vec<WriteBatch<'_>> = recycle(std::mem::take(batches));
        list.extend(group.iter().zip(scratches.iter()).map(|(t, w)| t.batch(w)));
        results.clear();
        self.driver.write_group(&list, results);
        // A driver that gave fewer results than batches: the rest failed.
        results.truncate(list.len());
        while results.len() < list.len() {
            results.push(Err(Error::storage(
                format!("driver {}", self.driver.name()),
                "write_group returned no result for this batch",
            )));
        }
        for ((t, b), r) in group.iter().zip(&list).zip(results.iter()) {
            self.count_write(&t.id, b.len() as u64, b.byte_len() as u64, r);
        }
        *batches = recycle(list);
    }

    /// A worker's visit of a slot (`of`): collects counters, hands queued
    /// writes to the driver, makes a requested archive, and finishes a
    /// drain.
    pub(crate) fn process(&self, of: VisitOf, w: &mut WriteScratch) -> Outcome {
        match self.take(of, w) {
            Visit::Done(outcome) => outcome,
            Visit::Taken(t) => {
                let result = if t.wrote {
                    w.events.make_contiguous();
                    let batch = t.batch(w);
                    let r = self.driver.write(&batch);
                    self.count_write(&t.id, batch.len() as u64, batch.byte_len() as u64, &r);
                    r
                } else {
                    Ok(())
                };
                self.finish(t, w, result)
            }
        }
    }

    /// The first half of a worker's visit of a slot (`of`): collects
    /// counters and moves the queued writes into `w`. [`Visit::Taken`]
    /// holds the slot's io lock until [`finish`](Core::finish) is given the
    /// outcome of the writes.
    pub(crate) fn take(&self, of: VisitOf, w: &mut WriteScratch) -> Visit<'_> {
        let idx = of.idx();
        let slot = self.pool.get(idx);
        let io = lock(&slot.io);
        let mut st = slot.state.lock();
        match of {
            VisitOf::Retry(key) if key.generation != st.generation => {
                return Visit::Done(Outcome::Done);
            }
            VisitOf::Retry(_) => {}
            VisitOf::Queued(_) => st.handoff.queued = false,
        }
        self.collect_stats(&mut st);
        if st.phase == Phase::Free {
            return Visit::Done(Outcome::Done);
        }
        let key = SlotKey::new(idx, st.generation);
        let epoch = st.handoff.queued_epoch;
        if st.handoff.write_refused {
            // Storage has another trace of this id: nothing more may reach it.
            let n = st.discard_writes();
            self.counters.events_dropped.add(n);
        } else {
            st.take_writes(w);
        }
        let archive = st.archive_requested && !st.archived;
        // redis-hook: a draining trace's lease goes with its last batch.
        let release = st.phase == Phase::Draining && st.handoff.lease_held; // redis-hook
        let wrote = !w.is_empty() || release; // redis-hook
        if !wrote && !archive {
            if st.phase == Phase::Draining {
                self.finish_drain(idx, &mut st);
            }
            return Visit::Done(Outcome::Done);
        }
        let new_trace = st.handoff.new_trace;
        let id = st.id;
        st.handoff.in_flight = true;
        drop(st);
        Visit::Taken(Taken {
            key,
            _io: io,
            epoch,
            archive,
            release,
            wrote,
            new_trace,
            id,
        })
    }

    /// The second half of a worker's visit: given the outcome of the
    /// writes taken into `w` by [`take`](Core::take), makes a requested
    /// archive, restores and requeues failed writes (or refuses the trace),
    /// finishes a drain, and releases the slot's io lock.
    pub(crate) fn finish(&self, t: Taken<'_>, w: &mut WriteScratch, result: Result<()>) -> Outcome {
        let Taken {
            key,
            _io,
            epoch,
            archive,
            release,
            wrote,
            new_trace,
            id,
        } = t;
        let idx = key.idx;
        let slot = self.pool.get(idx);
        let archived = result.is_ok() && archive && {
            match self.driver.archive(id.as_str()) {
                Ok(()) => true,
                Err(e) => {
                    self.counters.persist_errors.fetch_add(1, Ordering::Relaxed);
                    self.flush.record_error(&e);
                    false
                }
            }
        };

        // The slot cannot have been reset meanwhile: a release or removal
        // waits for `in_flight` (release marks the slot draining, removal
        // takes the io lock).
        let mut st = slot.state.lock();
        st.handoff.in_flight = false;
        if result.is_ok() && archive {
            // Made or failed, an archive is attempted once.
            st.archive_requested = false;
            st.archived |= archived;
        }
        let mut give_up_lease = false; // redis-hook
        let outcome = match result {
            Ok(()) => {
                if wrote {
                    st.handoff.new_trace = false;
                }
                // redis-hook: begin
                if release {
                    st.handoff.lease_held = false;
                }
                // redis-hook: end
                Outcome::Done
            }
            // redis-hook: begin
            Err(Error::Leased {
                owner,
                expires_in_ms,
            }) => {
                // Another engine took the lease: nothing more of this
                // trace may reach storage, and its operations give `Leased`.
                st.handoff.write_refused = true;
                st.handoff.lease_lost = Some(super::lease::lost(owner, expires_in_ms));
                st.handoff.lease_held = false;
                let n = w.events.len() as u64 + st.discard_writes();
                self.counters.events_dropped.add(n);
                add(&self.counters.leases_lost, 1);
                Outcome::Done
            }
            // redis-hook: end
            Err(Error::AlreadyExists) if new_trace => {
                st.handoff.lease_held = false; // redis-hook
                st.handoff.write_refused = true;
                let n = w.events.len() as u64 + st.discard_writes();
                self.counters.events_dropped.add(n);
                Outcome::Done
            }
            Err(_) => {
                st.restore_writes(w);
                match st.phase {
                    Phase::Live => {
                        self.requeue(idx, &mut st, epoch);
                        Outcome::Failed { epoch }
                    }
                    Phase::Draining if st.handoff.drain_expired() => {
                        // A failing driver cannot keep a slot forever.
                        give_up_lease = st.handoff.lease_held; // redis-hook
                        let n = st.discard_writes();
                        self.counters.events_dropped.add(n);
                        Outcome::Done
                    }
                    Phase::Draining => Outcome::Retry {
                        key,
                        epoch,
                        deadline: st.handoff.drain_deadline.unwrap_or_else(Instant::now),
                    },
                    Phase::Free => Outcome::Done,
                }
            }
        };
        w.clear();
        if st.phase == Phase::Draining && matches!(outcome, Outcome::Done) {
            // Still holding its lease, the trace was released while this
            // batch (taken when it was live, so not its last) was written:
            // the last batch, which gives the lease up, is still to come.
            if st.owes_last_batch() {
                self.requeue(idx, &mut st, epoch);
            } else {
                self.finish_drain(idx, &mut st);
            }
        }
        drop(st); // redis-hook
        // redis-hook: begin (the drain gave up: stop renewing the lease; it expires)
        if give_up_lease {
            let _ = self.driver.release_lease(id.as_str());
        }
        // redis-hook: end
        outcome
    }

    /// A draining slot handed everything over: reset it and make it free.
    /// Called under the slot's io and state locks.
    fn finish_drain(&self, idx: u32, st: &mut TraceState) {
        let at = SlotKey::new(idx, st.generation);
        let id = st.id;
        self.collect_stats(st);
        st.reset();
        self.registry.drained(&id, at);
        self.pool.checkin_drained(idx);
        self.drains.wake_all();
    }

    /// Releases the live trace `key`, whose lease the caller ended under the
    /// slot's lock, which it still holds (`st`, the state of slot
    /// `key.idx`): detaches its subscribers (each gets every event emitted
    /// before this, then its stream ends), unregisters it, and resets the
    /// slot at once or leaves it draining for its worker. No I/O.
    ///
    /// # Errors
    /// `Released` if that trace is not live (already released).
    pub(crate) fn release_locked(
        &self,
        key: SlotKey,
        kind: ReleaseKind,
        mut st: SpinGuard<'_, TraceState>,
    ) -> Result<Released> {
        let SlotKey { idx, generation } = key;
        let slot = self.pool.get(idx);
        if !st.is_live(generation) {
            return Err(Error::Released);
        }
        {
            let (log, src) = st.split();
            log.detach_readers(&src);
        }
        slot.released.store(
            (generation << 8) | u64::from(st.status.to_u8()),
            Ordering::Release,
        );
        match kind {
            ReleaseKind::Auto => add(&self.counters.auto_released, 1),
            ReleaseKind::Idle => add(&self.counters.idle_released, 1),
            ReleaseKind::Explicit | ReleaseKind::Shutdown => {}
        }
        crate::observer::on_release(&self.config.observer, &st, self.driver.name()); // otel-hook:
        let id = st.id;
        let never_written = st.handoff.new_trace;
        // A big trace is reset by its worker, not on the caller's thread
        // (dropping 100,000 node records takes milliseconds).
        let draining = st.owes_last_batch() || st.handoff.in_flight || st.is_big();
        if draining {
            st.phase = Phase::Draining;
            st.handoff.drain_deadline = Some(Instant::now() + self.config.drain_timeout);
            self.registry.released(&id, key, true);
            self.pool.start_draining();
            let q = self.queue_of(idx);
            if st.handoff.queue(|| self.flush.epoch()) {
                q.push(idx);
            }
            if self.pool.has_waiters() || self.pool.is_scarce() {
                // Somebody waits for a slot, or few are free: drain now, not
                // at the next tick.
                q.wake();
            }
            unlock_and_wake(st);
        } else {
            self.collect_stats(&mut st);
            self.registry.released(&id, key, false);
            st.reset();
            unlock_and_wake(st);
            self.pool.checkin(idx);
        }
        Ok(Released {
            draining,
            never_written,
        })
    }

    /// Checks out a free slot (see [`SlotPool::checkout`](crate::pool::SlotPool::checkout)).
    pub(crate) fn checkout(&self) -> Result<u32> {
        self.pool.checkout(|| self.hurry_drains())
    }

    /// Checks out a free slot without blocking the thread.
    pub(crate) async fn checkout_async(&self, ticker: &Arc<TickerShared>) -> Result<u32> {
        self.pool
            .checkout_async(|d| ticker.sleep(d), || self.hurry_drains())
            .await
    }

    /// A caller is about to wait for a free slot: wake the workers if slots
    /// are draining, so that they are freed now rather than at the next
    /// tick. (A release while somebody waits wakes its worker itself.)
    fn hurry_drains(&self) {
        if self.pool.gauges().draining > 0 {
            for q in self.queues.iter() {
                q.wake();
            }
        }
    }

    /// A handle of the checkout `key` was dropped: the last one releases
    /// the trace (unless it stays loaded without handles).
    ///
    /// Returns what the slot's engine reference needs: the caller gives it
    /// back ([`Engine::give_back_pin`](super::Engine::give_back_pin)) after
    /// this returns, when it was the last handle of the slot.
    pub(crate) fn drop_handle(&self, key: SlotKey) -> Pin {
        let slot = self.pool.get(key.idx);
        let mut st = slot.state.lock();
        let (outcome, pin) = st.lease.drop_handle(key.generation);
        slot.note_lease(&st.lease);
        if outcome == Dropped::Last {
            // Released in the same critical section that ended the checkout.
            let _ = self.release_locked(key, ReleaseKind::Auto, st);
        }
        pin
    }

    /// Counts a handle made from an existing one of slot `key` (a clone).
    pub(crate) fn add_handle(&self, key: SlotKey) {
        self.pool
            .get(key.idx)
            .state
            .lock()
            .lease
            .add_handle(key.generation);
    }

    /// Ends the checkout `key` and releases the slot (an explicit release,
    /// shutdown), in one critical section. `None` if that checkout was
    /// already over.
    pub(crate) fn close_and_release(
        &self,
        key: SlotKey,
        kind: ReleaseKind,
    ) -> Option<Result<Released>> {
        let slot = self.pool.get(key.idx);
        let mut st = slot.state.lock();
        if !st.lease.close(key.generation) {
            return None;
        }
        slot.note_lease(&st.lease);
        Some(self.release_locked(key, kind, st))
    }

    /// Collects the counters of every loaded trace (for `flush`: counters
    /// are exact afterwards).
    fn collect_live_stats(&self) {
        // Slots never checked out have nothing to publish.
        for idx in self.pool.touched_indices() {
            let slot = self.pool.get(idx);
            let mut st = slot.state.lock();
            if st.phase != Phase::Free && st.has_stats() {
                self.collect_stats(&mut st);
            }
        }
    }

    /// `remove` of the draining trace `key`: its pending writes are
    /// discarded (no file work) and the slot is freed. `Some(never_written)`
    /// if this call did it; `None` if the slot had drained meanwhile.
    pub(crate) fn discard_draining(&self, key: SlotKey) -> Option<bool> {
        let slot = self.pool.get(key.idx);
        // Waits for a batch in flight, so nothing of it lands after this.
        let _io = lock(&slot.io);
        let mut st = slot.state.lock();
        if st.generation != key.generation || st.phase != Phase::Draining {
            return None;
        }
        let never_written = st.handoff.new_trace;
        let n = st.discard_writes();
        add(&self.counters.events_discarded, n);
        self.finish_drain(key.idx, &mut st);
        Some(never_written)
    }

    /// Releases traces that stay loaded without handles and saw no activity
    /// (an event, or a handle obtained through `load`/`open`) for
    /// `idle_timeout`. Runs on the ticker; takes a slot lock only for
    /// candidates.
    pub(crate) fn reap_idle(&self) {
        let Some(timeout) = self.config.idle_timeout else {
            return;
        };
        if self.shut.load(Ordering::Relaxed) {
            return;
        }
        let timeout_ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
        let now = now_ms();
        for idx in self.pool.indices() {
            let slot = self.pool.get(idx);
            if !slot.idle_keeper.load(Ordering::Relaxed) {
                continue;
            }
            let mut st = slot.state.lock();
            if st.phase != Phase::Live {
                continue;
            }
            let last = st.updated_at.max(slot.last_load.load(Ordering::Relaxed));
            if now.saturating_sub(last) < timeout_ms {
                continue;
            }
            let key = SlotKey::new(idx, st.generation);
            if !st.lease.close_if_unused(key.generation) {
                continue;
            }
            slot.note_lease(&st.lease);
            let _ = self.release_locked(key, ReleaseKind::Idle, st);
        }
    }

    /// Waits (blocking, at most `drain_timeout`) until everything emitted,
    /// released or archived before the call is handed to the driver.
    pub(crate) fn flush_blocking(&self) -> Result<()> {
        let claim = self.driver.flushes_on_caller() && !self.stopping.load(Ordering::Acquire);
        let (mark, target, claimed) = self.start_flush(claim);
        if let Some(w) = claimed {
            // An idle worker's pass, run here: no wake-up (see `workers`).
            self.queues[w].run_claimed(w, self);
        }
        let deadline = Instant::now() + self.config.drain_timeout;
        let done = self
            .flush
            .signal
            .wait_blocking(deadline, || self.flush_done(mark, target));
        self.flush_result(mark, done)
    }

    /// [`flush_blocking`](Core::flush_blocking) without blocking the thread.
    pub(crate) async fn flush_async(&self) -> Result<()> {
        // Never writes on the task: the workers do.
        let (mark, target, _) = self.start_flush(false);
        let timeout = self.ticker.sleep(self.config.drain_timeout);
        let done = self
            .flush
            .signal
            .wait(timeout, || self.flush_done(mark, target))
            .await;
        self.flush_result(mark, done)
    }

    /// Starts a flush: publishes live counters, requests an epoch and tells
    /// every worker (idle ones are counted done at once). Returns the error
    /// mark, the target epoch to wait for, and, if `claim`, the worker
    /// whose queue the caller claimed to run its pass itself (at most one:
    /// the others are woken and run meanwhile).
    fn start_flush(&self, claim: bool) -> (u64, u64, Option<usize>) {
        self.collect_live_stats();
        let mark = self.flush.error_mark();
        let target = self.flush.request();
        let mut claimed = None;
        for (w, q) in self.queues.iter().enumerate() {
            if q.flush(w, target, self, claim && claimed.is_none()) {
                claimed = Some(w);
            }
        }
        (mark, target, claimed)
    }

    /// Whether the flush of `target` is over: every worker reached it, or a
    /// storage error was recorded since `mark`.
    fn flush_done(&self, mark: u64, target: u64) -> bool {
        self.flush.reached(target) || self.flush.error_mark() > mark
    }

    fn flush_result(&self, mark: u64, done: bool) -> Result<()> {
        if let Some(e) = self.flush.error_since(mark) {
            return Err(e);
        }
        if done {
            Ok(())
        } else {
            Err(super::flush::timed_out("flush", self.config.drain_timeout))
        }
    }
}

thread_local! {
    /// Wakers taken from a slot, woken after its lock is dropped (reused,
    /// so waking allocates nothing).
    static TO_WAKE: RefCell<Vec<Waker>> = const { RefCell::new(Vec::new()) };
}

/// Drops a slot's lock, then wakes the subscribers that waited for the
/// events emitted under it (a woken subscriber finds the lock free).
pub(crate) fn unlock_and_wake(mut st: SpinGuard<'_, TraceState>) {
    if !st.events.has_wakers() {
        return;
    }
    TO_WAKE.with(|w| {
        let Ok(mut wakers) = w.try_borrow_mut() else {
            // Re-entered from a waker: wake without the buffer.
            let mut own = Vec::new();
            st.events.take_wakers(&mut own);
            drop(st);
            own.into_iter().for_each(Waker::wake);
            return;
        };
        st.events.take_wakers(&mut wakers);
        drop(st);
        for w in wakers.drain(..) {
            w.wake();
        }
    });
}

impl LogHost for Core {
    fn with_log(&self, key: SlotKey, f: &mut dyn FnMut(&mut EventLog, &dyn Source, bool)) -> bool {
        let slot = self.pool.get(key.idx);
        let mut st = slot.state.lock();
        if !st.is_live(key.generation) {
            return false;
        }
        let finished = st.finished;
        let (log, src) = st.split();
        f(log, &src, finished);
        true
    }

    fn count_lagged(&self, missed: u64) {
        self.counters.events_lagged.add(missed);
    }

    fn count_follow(&self, delta: isize) {
        add_signed(&self.counters.follows, delta); // redis-hook
    }

    fn count_reader(&self, delta: isize) {
        add_signed(&self.counters.subscribers, delta);
    }
}
