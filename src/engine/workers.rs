//! The workers: a fixed number of long-lived threads, started once by
//! `build`, that hand queued writes to the driver in batches (group commit),
//! drain released slots, make archives and collect per-trace counters.
//!
//! Slot `i` belongs to worker `i % workers`. A trace with something for its
//! worker (events, documents, counters, an archive, a release) puts its slot
//! index on that worker's queue once (the `queued` flag of the slot's
//! `Handoff` keeps it from being queued twice). A worker wakes every
//! `flush_interval`, or earlier when woken (a slot with many pending
//! events, a flush, a release),
//! takes the writes of every queued slot and hands them to the driver in
//! one call (a group: one commit for the store driver; at most
//! `MAX_GROUP` traces or `MAX_GROUP_BYTES` each; one trace per call for a
//! driver that does not commit groups, so a slot is freed as soon as its
//! own batch is written), finishes each slot with its own outcome, then
//! retries draining slots whose last batch failed (with backoff, up to
//! `drain_timeout`), and reports the flush epoch
//! it completed.
//!
//! Workers are plain threads: a driver call may block (it is I/O), and no
//! timer or caller waits behind it. Nothing here is spawned per trace.
//!
//! # A blocking flush runs an idle worker's pass itself
//!
//! Waking a parked thread takes tens of microseconds on a virtual machine
//! (its CPU may be halted), which is more than a whole pass of a few dozen
//! traces costs. So `flush_blocking`, finding a worker parked with writes
//! queued, claims that worker's queue (`busy`) and runs the pass on its own
//! thread, for one worker (it wakes the others first, so they run
//! meanwhile), and only for a driver whose calls are bounded local work
//! ([`Driver::flushes_on_caller`](crate::driver::Driver::flushes_on_caller)).
//! The worker stays parked; if it wakes meanwhile it waits until the pass
//! is over. A draining slot whose batch failed in such a pass is handed to
//! the worker for its retries. `flush` (async) never writes on its task.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::core::{Core, Outcome, Taken, Visit, VisitOf};
use super::flush::SPIN;
use crate::driver::WriteBatch;
use crate::error::{Error, Result};
use crate::pool::{SlotKey, lock};
use crate::trace::persist::WriteScratch;

/// A slot with this many pending events wakes its worker at once.
pub(crate) const WAKE_AT: usize = 1024;

/// The most traces, and about the most bytes, a worker hands to the driver
/// in one [`Driver::write_group`](crate::driver::Driver::write_group) call
/// (it holds their slots' io locks meanwhile).
const MAX_GROUP: usize = 256;
const MAX_GROUP_BYTES: usize = 8 << 20;

/// First and longest pause before a draining slot's failed batch is retried.
const RETRY_FIRST: Duration = Duration::from_millis(10);
const RETRY_MAX: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
struct QueueInner {
    items: Vec<u32>,
    woken: bool,
    /// The worker is parked with nothing of its own pending: its last pass
    /// wrote everything it took and no failed drain waits for a retry. A
    /// flush then counts it as done without waking it, unless `items` holds
    /// something.
    idle: bool,
    /// A flushing thread runs this worker's pass (see the module docs):
    /// the worker must not start one until it is over.
    busy: bool,
    /// The worker waits for `busy` to end (only then is it signalled: a
    /// parked worker woken for nothing costs a context switch).
    awaits_pass: bool,
    /// Draining slots whose batch failed in a flushing thread's pass, for
    /// the worker's retries.
    handed: Vec<Retry>,
}

/// One worker's queue of slot indices with something to do.
#[derive(Debug, Default)]
pub(crate) struct WorkerQueue {
    inner: Mutex<QueueInner>,
    cv: Condvar,
    /// The buffers of a flushing thread's pass (see the module docs), kept
    /// across flushes.
    helper: Mutex<PassBuffers>,
}

/// The reused buffers of a flushing thread's pass: the slot indices taken
/// from the queue and the group's write buffers (empty between passes).
#[derive(Default)]
struct PassBuffers {
    items: Vec<u32>,
    writes: GroupBuffers,
}

impl std::fmt::Debug for PassBuffers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PassBuffers")
            .field("scratches", &self.writes.scratches.len())
            .finish_non_exhaustive()
    }
}

impl WorkerQueue {
    pub(crate) fn push(&self, idx: u32) {
        lock(&self.inner).items.push(idx);
    }

    pub(crate) fn wake(&self) {
        lock(&self.inner).woken = true;
        self.cv.notify_one();
    }

    /// Waits until woken or `until`, then moves the queued indices into
    /// `out` (and failed drains handed over into `retries`) and returns the
    /// flush epoch the pass covers. The worker is idle while it waits if
    /// `retries` is empty (see [`QueueInner::idle`]).
    ///
    /// The epoch is read under the queue's lock, right before the indices
    /// are taken: a flush requested before that read was requested after
    /// every push it must see, and pushes take this lock, so they are in
    /// `out` (read after the take, a slot queued in between would be
    /// reported written).
    fn wait_and_take(
        &self,
        until: Instant,
        out: &mut Vec<u32>,
        retries: &mut Vec<Retry>,
        spin: bool,
        core: &Core,
    ) -> u64 {
        let mut q = lock(&self.inner);
        q.idle = retries.is_empty();
        if spin {
            // Right after a pass that wrote something, more work (the
            // flush a caller waits for, the next trace of a loop) tends to
            // follow within microseconds: poll for it a little before
            // sleeping, yielding the CPU between polls.
            let spin_until = Instant::now() + SPIN;
            while !q.woken && Instant::now() < spin_until.min(until) {
                drop(q);
                std::thread::yield_now();
                q = lock(&self.inner);
            }
        }
        while !q.woken {
            let now = Instant::now();
            if now >= until {
                break;
            }
            q = self
                .cv
                .wait_timeout(q, until - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        // A flushing thread runs this worker's pass: wait until it is over.
        while q.busy {
            q.awaits_pass = true;
            q = self.cv.wait(q).unwrap_or_else(|e| e.into_inner());
        }
        q.awaits_pass = false;
        q.woken = false;
        q.idle = false;
        retries.append(&mut q.handed);
        let epoch = core.flush.epoch();
        std::mem::swap(&mut q.items, out);
        epoch
    }

    /// For a flush of epoch `target`: counts an idle worker with nothing
    /// queued as done (no wake-up, no pass); if `claim`, claims an idle
    /// worker's queue for the caller to run its pass
    /// ([`run_claimed`](WorkerQueue::run_claimed)) and returns `true`;
    /// wakes any other worker.
    pub(crate) fn flush(&self, worker: usize, target: u64, core: &Core, claim: bool) -> bool {
        let mut q = lock(&self.inner);
        if q.idle && !q.busy {
            if q.items.is_empty() {
                // Under the queue lock: the worker is not in a pass meanwhile.
                core.flush.complete(worker, target);
                return false;
            }
            if claim {
                q.busy = true;
                return true;
            }
        }
        q.woken = true;
        drop(q);
        self.cv.notify_one();
        false
    }

    /// Runs the pass of worker `worker`, whose queue the caller claimed
    /// with [`flush`](WorkerQueue::flush), on the calling thread, then
    /// reports the epoch it covers and lets the worker go on.
    pub(crate) fn run_claimed(&self, worker: usize, core: &Core) {
        let mut bufs = lock(&self.helper);
        let bufs = &mut *bufs;
        let epoch = {
            let mut q = lock(&self.inner);
            std::mem::swap(&mut q.items, &mut bufs.items);
            core.flush.epoch()
        };
        let mut handed = Vec::new();
        let mut group = Group {
            taken: Vec::with_capacity(bufs.items.len().min(MAX_GROUP)),
            bytes: 0,
            bufs: std::mem::take(&mut bufs.writes),
        };
        let blocked = pass(
            core,
            &mut bufs.items,
            &mut group,
            &mut handed,
            Instant::now(),
        );
        let blocked = handed.iter().fold(blocked, |b, r| b.min(r.epoch));
        bufs.writes = group.bufs;
        let signal = {
            let mut q = lock(&self.inner);
            q.busy = false;
            if !handed.is_empty() {
                q.handed.append(&mut handed);
                q.idle = false;
                q.woken = true;
            }
            q.awaits_pass || q.woken
        };
        if signal {
            self.cv.notify_one();
        }
        core.flush.complete(worker, epoch.min(blocked));
    }

    fn is_empty(&self) -> bool {
        lock(&self.inner).items.is_empty()
    }
}

/// A draining slot whose last batch failed, waiting to be retried.
#[derive(Debug)]
struct Retry {
    /// The checkout whose drain failed.
    key: SlotKey,
    at: Instant,
    pause: Duration,
    /// The flush epoch its writes were queued at (holds flushes back).
    epoch: u64,
    /// When the drain gives up (the last attempt is made then).
    deadline: Instant,
}

impl Retry {
    /// The first attempt again of the failed last batch of checkout `key`,
    /// shortly after `now`.
    fn first(key: SlotKey, epoch: u64, deadline: Instant, now: Instant) -> Retry {
        Retry {
            key,
            at: (now + RETRY_FIRST).min(deadline),
            pause: RETRY_FIRST,
            epoch,
            deadline,
        }
    }

    /// Schedules the next attempt: the pause doubles, and the last attempt
    /// is made at the deadline.
    fn later(&mut self, now: Instant) {
        self.pause = (self.pause * 2).min(RETRY_MAX);
        self.at = (now + self.pause).min(self.deadline);
    }
}

/// The worker threads.
#[derive(Debug)]
pub(crate) struct Workers {
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Starts `core.config.workers` worker threads.
    pub(crate) fn start(core: &Arc<Core>) -> Result<Workers> {
        let mut threads = Vec::with_capacity(core.config.workers);
        for w in 0..core.config.workers {
            let c = core.clone();
            c.alive_workers.fetch_add(1, Ordering::AcqRel);
            let spawned = std::thread::Builder::new()
                .name("tracepool-worker".into())
                .spawn(move || {
                    worker_loop(&c, w);
                    c.alive_workers.fetch_sub(1, Ordering::AcqRel);
                    c.flush.retire(w);
                });
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    core.alive_workers.fetch_sub(1, Ordering::AcqRel);
                    core.stopping.store(true, Ordering::Release);
                    for q in core.queues.iter() {
                        q.wake();
                    }
                    for t in threads {
                        let _ = t.join();
                    }
                    return Err(Error::Config(format!(
                        "cannot start worker thread {w}: {e}"
                    )));
                }
            }
        }
        Ok(Workers { threads })
    }

    /// Waits for every worker to exit. The caller has set `core.stopping`
    /// and woken the queues; workers finish what is queued first.
    pub(crate) fn join(&mut self) {
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A group of taken slots and its reused buffers.
#[derive(Default)]
struct Group<'a> {
    taken: Vec<Taken<'a>>,
    bytes: usize,
    bufs: GroupBuffers,
}

/// A group's write buffers, kept across wake-ups (and across flushes, for a
/// flushing thread's pass).
#[derive(Default)]
struct GroupBuffers {
    /// `scratches[i]` holds the writes of `taken[i]`.
    scratches: Vec<WriteScratch>,
    batches: Vec<WriteBatch<'static>>,
    results: Vec<Result<()>>,
}

impl<'a> Group<'a> {
    /// Takes slot `idx`'s writes into the group (handing the group over
    /// first if it holds that slot already or is full); `done` gets the
    /// outcome of every slot whose visit ended.
    fn add(&mut self, core: &'a Core, idx: u32, done: &mut impl FnMut(Outcome)) {
        // A slot's io lock is not reentrant: never take one slot twice.
        if self.taken.iter().any(|t| t.key.idx == idx) {
            self.hand_over(core, done);
        }
        let i = self.taken.len();
        let scratches = &mut self.bufs.scratches;
        if i == scratches.len() {
            scratches.push(WriteScratch::default());
        }
        let w = &mut scratches[i];
        match core.take(VisitOf::Queued(idx), w) {
            Visit::Done(outcome) => done(outcome),
            Visit::Taken(t) if !t.wrote => {
                // Only an archive to make.
                done(core.finish(t, w, Ok(())));
            }
            Visit::Taken(t) => {
                self.bytes += w.byte_len();
                self.taken.push(t);
                if self.taken.len() >= MAX_GROUP
                    || self.bytes >= MAX_GROUP_BYTES
                    || !core.driver.commits_groups()
                {
                    self.hand_over(core, done);
                }
            }
        }
    }

    /// Hands the group's writes to the driver in one call, then finishes
    /// each slot with its own result.
    fn hand_over(&mut self, core: &'a Core, done: &mut impl FnMut(Outcome)) {
        if self.taken.is_empty() {
            return;
        }
        let b = &mut self.bufs;
        core.write_group(
            &self.taken,
            &mut b.scratches,
            &mut b.batches,
            &mut b.results,
        );
        for ((t, w), r) in self
            .taken
            .drain(..)
            .zip(b.scratches.iter_mut())
            .zip(b.results.drain(..))
        {
            let outcome = core.finish(t, w, r);
            w.trim();
            done(outcome);
        }
        self.bytes = 0;
    }
}

/// One pass over the slots of `items` (left empty): their writes handed to
/// the driver in groups, each slot finished with its outcome. Returns the
/// oldest flush epoch of a write that failed and was queued again
/// (`u64::MAX`: none); a draining slot whose last batch failed is pushed
/// onto `retries` (its epoch holds flushes back too).
fn pass<'a>(
    core: &'a Core,
    items: &mut Vec<u32>,
    group: &mut Group<'a>,
    retries: &mut Vec<Retry>,
    now: Instant,
) -> u64 {
    let mut blocked = u64::MAX;
    let mut done = |outcome: Outcome| match outcome {
        Outcome::Done => {}
        Outcome::Failed { epoch } => blocked = blocked.min(epoch),
        Outcome::Retry {
            key,
            epoch,
            deadline,
        } => retries.push(Retry::first(key, epoch, deadline, now)),
    };
    for idx in items.drain(..) {
        group.add(core, idx, &mut done);
    }
    group.hand_over(core, &mut done);
    blocked
}

fn worker_loop(core: &Core, w: usize) {
    let queue = &core.queues[w];
    let interval = core.config.flush_interval;
    let mut items: Vec<u32> = Vec::new();
    let mut retries: Vec<Retry> = Vec::new();
    let mut scratch = WriteScratch::default();
    let mut group = Group::default();
    let mut next_tick = Instant::now() + interval;
    let mut worked = false;
    loop {
        let stopping = core.stopping.load(Ordering::Acquire);
        let next_retry = retries.iter().map(|r| r.at).min();
        let until = if stopping {
            // Finish what is queued at once; keep the retry pauses.
            next_retry.unwrap_or_else(Instant::now)
        } else {
            next_retry.map_or(next_tick, |r| r.min(next_tick))
        };
        let spin = worked && !stopping;
        let epoch = queue.wait_and_take(until, &mut items, &mut retries, spin, core);
        worked = !items.is_empty();
        let now = Instant::now();
        if now >= next_tick {
            next_tick = now + interval;
        }
        let mut blocked = pass(core, &mut items, &mut group, &mut retries, now);
        let now = Instant::now();
        let mut i = 0;
        while i < retries.len() {
            if retries[i].at > now {
                i += 1;
                continue;
            }
            let r = &mut retries[i];
            match core.process(VisitOf::Retry(r.key), &mut scratch) {
                Outcome::Retry { epoch, .. } => {
                    r.later(now);
                    r.epoch = r.epoch.min(epoch);
                    i += 1;
                }
                _ => {
                    retries.swap_remove(i);
                }
            }
        }
        for r in &retries {
            blocked = blocked.min(r.epoch);
        }
        core.flush.complete(w, epoch.min(blocked));
        if stopping && retries.is_empty() && queue.is_empty() {
            return;
        }
    }
}
