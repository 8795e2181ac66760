//! The engine: registry of loaded traces, the slot pool, the workers and the
//! driver, behind one cheap-to-clone handle.
//!
//! ```text
//! Engine ──Arc──> EngineInner (Drop = shutdown)
//!                   ├── Core (shared with workers and subscriptions)
//!                   │     ├── SlotPool      preallocated slots + lock-free free list
//!                   │     ├── Registry      trace id -> (slot, generation)
//!                   │     ├── WorkerQueue[] slots with pending writes, per worker
//!                   │     ├── Counters      engine-wide statistics
//!                   │     └── Driver        memory | custom
//!                   └── Workers             runtime + exit latch
//! ```

mod builder;
mod registry;
mod workers;

pub use builder::EngineBuilder;

use std::fmt::Display;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::driver::{Driver, WriteBatch};
use crate::error::{Error, Result};
use crate::id::{TraceId, now_ms};
use crate::model::Level;
use crate::model::{EngineStats, TraceInfo, TraceStatus};
use crate::options::TraceOptions;
use crate::pool::{SlotPool, lock};
use crate::subscribe::detach_all;
use crate::trace::Trace;
use crate::trace::persist::WriteScratch;
use crate::trace::state::{Limits, Target, TraceState};
use builder::Config;
use registry::Registry;
use workers::{WAKE_AT, WorkerQueue, Workers};

/// Engine-wide counters.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) events_emitted: AtomicU64,
    pub(crate) events_persisted: AtomicU64,
    pub(crate) events_dropped: AtomicU64,
    pub(crate) history_evicted: AtomicU64,
    pub(crate) events_lagged: AtomicU64,
    pub(crate) logs_dropped: AtomicU64,
    pub(crate) persist_errors: AtomicU64,
    pub(crate) bytes_written: AtomicU64,
    pub(crate) subscribers: AtomicUsize,
}

/// The state shared by the engine handle, the workers, trace handles and
/// subscriptions.
#[derive(Debug)]
pub(crate) struct Core {
    pub(crate) pool: SlotPool,
    pub(crate) registry: Registry,
    pub(crate) driver: Arc<dyn Driver>,
    pub(crate) config: Config,
    pub(crate) counters: Counters,
    pub(crate) queues: Box<[WorkerQueue]>,
    /// Set by `shutdown`: every later call fails with `ShutDown`.
    pub(crate) shut: AtomicBool,
    /// Tells the workers to drain their queues once more and exit.
    pub(crate) stopping: AtomicBool,
}

impl Core {
    /// Runs `f` on the state of the trace at `(idx, generation)` under its slot lock.
    /// A stale generation gives `Released`; afterwards, new pending writes put
    /// the slot on its worker's queue.
    pub(crate) fn with_state<R>(
        &self,
        idx: u32,
        generation: u64,
        f: impl FnOnce(&mut TraceState) -> Result<R>,
    ) -> Result<R> {
        if self.shut.load(Ordering::Relaxed) {
            return Err(Error::ShutDown);
        }
        let slot = self.pool.get(idx);
        let mut st = lock(&slot.state);
        if st.generation != generation || !st.live {
            return Err(Error::Released);
        }
        let r = f(&mut st);
        self.enqueue(idx, &mut st);
        r
    }

    /// Chainable logging: never fails; a log that cannot be written (stale
    /// handle, shut-down engine, no current node, finished trace) is counted.
    pub(crate) fn log_chained(
        &self,
        idx: u32,
        generation: u64,
        target: Target,
        level: Level,
        msg: &str,
        data: serde_json::Value,
    ) {
        let r = self.with_state(idx, generation, |st| {
            st.log(target, level, msg, data);
            Ok(())
        });
        if r.is_err() {
            self.counters.logs_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Puts the slot on its worker's queue if it has pending writes.
    fn enqueue(&self, idx: u32, st: &mut TraceState) {
        let n = st.pending.len();
        if n == 0 {
            return;
        }
        let q = &self.queues[idx as usize % self.queues.len()];
        if !st.queued {
            st.queued = true;
            q.push(idx);
        }
        if n == WAKE_AT {
            q.wake();
        }
    }

    fn collect_stats(&self, st: &mut TraceState) {
        let [emitted, evicted, dropped, logs_dropped] = st.take_stats();
        let c = &self.counters;
        if emitted > 0 {
            c.events_emitted.fetch_add(emitted, Ordering::Relaxed);
        }
        if evicted > 0 {
            c.history_evicted.fetch_add(evicted, Ordering::Relaxed);
        }
        if dropped > 0 {
            c.events_dropped.fetch_add(dropped, Ordering::Relaxed);
        }
        if logs_dropped > 0 {
            c.logs_dropped.fetch_add(logs_dropped, Ordering::Relaxed);
        }
    }

    /// Hands one batch of trace `id` to the driver and counts the outcome.
    fn write_scratch(&self, id: &TraceId, w: &mut WriteScratch) -> Result<()> {
        if w.is_empty() {
            return Ok(());
        }
        let events = w.events.make_contiguous();
        let batch = WriteBatch::new(id.as_str(), events, &w.docs, &w.logs, &w.buf, false);
        let n = batch.len() as u64;
        let bytes = batch.byte_len() as u64;
        let c = &self.counters;
        let r = self.driver.write(&batch);
        match &r {
            Ok(()) => {
                c.events_persisted.fetch_add(n, Ordering::Relaxed);
                c.bytes_written.fetch_add(bytes, Ordering::Relaxed);
            }
            Err(_) => {
                c.persist_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        r
    }

    /// Worker side: writes what slot `idx` has queued. A failed write is put
    /// back into the slot and retried by the next flush (the write queue's
    /// bound still applies).
    pub(crate) fn flush_slot(&self, idx: u32, w: &mut WriteScratch) {
        let slot = self.pool.get(idx);
        let _io = lock(&slot.io);
        let (id, generation) = {
            let mut st = lock(&slot.state);
            st.queued = false;
            self.collect_stats(&mut st);
            if !st.live {
                return;
            }
            st.take_writes(w);
            if w.is_empty() {
                return;
            }
            (st.id, st.generation)
        };
        if self.write_scratch(&id, w).is_err() {
            let mut st = lock(&slot.state);
            if st.generation == generation && st.live {
                st.restore_writes(w);
                self.enqueue(idx, &mut st);
            }
        }
        w.clear();
    }

    /// Writes everything slot `idx` has queued on the calling thread, under
    /// the slot's locks (used by `release` and before archiving). `keep`
    /// decides whether a failed batch is put back (the trace lives on) or
    /// counted as dropped (the trace is going away).
    fn flush_locked(&self, st: &mut TraceState, keep: bool) -> Result<()> {
        RELEASE_SCRATCH.with(|cell| {
            let mut w = cell.borrow_mut();
            st.take_writes(&mut w);
            let id = st.id;
            let r = self.write_scratch(&id, &mut w);
            if r.is_err() {
                if keep {
                    st.restore_writes(&mut w);
                } else {
                    self.counters
                        .events_dropped
                        .fetch_add(w.events.len() as u64, Ordering::Relaxed);
                }
            }
            w.clear();
            r
        })
    }

    /// Releases the trace in slot `idx` (already removed from the registry):
    /// flushes its pending writes to the driver, hands unread events to its
    /// subscribers, resets the slot and returns it to the pool.
    fn release_slot(&self, idx: u32, generation: u64) -> Result<()> {
        let slot = self.pool.get(idx);
        let io = lock(&slot.io);
        let mut st = lock(&slot.state);
        if st.generation != generation || !st.live {
            return Err(Error::Released);
        }
        let written = self.flush_locked(&mut st, false);
        detach_all(&mut st);
        self.collect_stats(&mut st);
        slot.released.store(
            (generation << 8) | st.status.to_u8() as u64,
            Ordering::Release,
        );
        st.reset();
        drop(st);
        drop(io);
        self.pool.checkin(idx);
        written
    }

    /// Flushes a live trace synchronously and archives it in storage.
    pub(crate) fn archive_now(&self, idx: u32, generation: u64) -> Result<()> {
        let slot = self.pool.get(idx);
        let _io = lock(&slot.io);
        let mut st = lock(&slot.state);
        if st.generation != generation || !st.live {
            return Err(Error::Released);
        }
        self.flush_locked(&mut st, true)?;
        self.driver.archive(st.id.as_str())?;
        st.archived = true;
        Ok(())
    }
}

thread_local! {
    /// Scratch buffers for flushes done on a caller's thread (release, archive).
    static RELEASE_SCRATCH: std::cell::RefCell<WriteScratch> =
        std::cell::RefCell::new(WriteScratch::default());
}

/// The owner of the workers; shuts the engine down when the last handle goes.
#[derive(Debug)]
pub(crate) struct EngineInner {
    pub(crate) core: Arc<Core>,
    workers: Mutex<Option<Workers>>,
}

impl Drop for EngineInner {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

impl EngineInner {
    fn shutdown(&self) -> Result<()> {
        let core = &self.core;
        if core.shut.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        // Release every loaded trace: flushes its writes and ends its subscriptions.
        let mut first_err = None;
        for (id, (idx, generation)) in core.registry.entries() {
            if core.registry.remove_if(&id, (idx, generation))
                && let Err(e) = core.release_slot(idx, generation)
            {
                first_err.get_or_insert(e);
            }
        }
        core.stopping.store(true, Ordering::Release);
        for q in core.queues.iter() {
            q.wake();
        }
        if let Some(mut w) = lock(&self.workers).take() {
            w.join(Duration::from_secs(10));
        }
        if let Err(e) = core.driver.flush() {
            first_err.get_or_insert(e);
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// The trace engine. Cheap to clone (an `Arc` inside); `Send + Sync`.
///
/// # Examples
/// ```
/// # fn main() -> tracepool::Result<()> {
/// use serde_json::json;
/// use tracepool::{Engine, NodeOptions, ParallelInput, TraceOptions};
///
/// let engine = Engine::builder().capacity(16).workers(1).memory().build()?;
/// let trace = engine.create(TraceOptions::new().created_by("me"))?;
/// trace.add("user input", NodeOptions::new().label("Input"))?;
/// trace.info("Starting");
/// let branches = trace.parallel(vec![
///     ParallelInput::new("task A", NodeOptions::new().label("Worker A")),
///     ParallelInput::new("task B", NodeOptions::new().label("Worker B")),
/// ])?;
/// for b in &branches {
///     b.complete(Some(json!({"ok": true})))?;
/// }
/// let merge = trace.add("merge", NodeOptions::new().label("Merge"))?;
/// assert_eq!(merge.data()?.parent_ids.len(), 2);
/// trace.mark_complete()?;
/// engine.release(trace.id())?;
/// assert!(!engine.is_loaded(trace.id()));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Engine {
    pub(crate) inner: Arc<EngineInner>,
}

impl Engine {
    /// A builder with the defaults: 1024 slots, one worker per core,
    /// `Exhausted::Wait(50 ms)`, the local-disk driver under `./traces`.
    pub fn builder() -> EngineBuilder {
        EngineBuilder::default()
    }

    pub(crate) fn start(config: Config, driver: Arc<dyn Driver>) -> Result<Engine> {
        let limits = Limits {
            history: config.history_limit,
            subscriber_buffer: config.subscriber_buffer,
            pending: config.write_queue_limit,
            documents: driver.wants_documents(),
            driver: driver.name(),
        };
        let core = Arc::new(Core {
            pool: SlotPool::new(config.capacity, config.exhausted, limits),
            registry: Registry::with_capacity(config.capacity),
            driver,
            queues: (0..config.workers)
                .map(|_| WorkerQueue::default())
                .collect(),
            config,
            counters: Counters::default(),
            shut: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
        });
        let workers = Workers::start(&core)?;
        Ok(Engine {
            inner: Arc::new(EngineInner {
                core,
                workers: Mutex::new(Some(workers)),
            }),
        })
    }

    pub(crate) fn core(&self) -> &Arc<Core> {
        &self.inner.core
    }

    fn check_running(&self) -> Result<()> {
        if self.core().shut.load(Ordering::Relaxed) {
            Err(Error::ShutDown)
        } else {
            Ok(())
        }
    }

    /// Creates a trace in a free slot and emits its `init` event.
    ///
    /// # Errors
    /// `InvalidId` for a malformed custom id, `AlreadyLoaded` when the id is
    /// loaded, `AlreadyExists` when storage has it (use [`open`](Engine::open)),
    /// `PoolExhausted` per the exhaustion policy, `ShutDown`.
    pub fn create(&self, opts: TraceOptions) -> Result<Trace> {
        self.check_running()?;
        let core = self.core();
        let custom = match &opts.id {
            Some(s) => {
                let id = TraceId::parse(s)?;
                if core.registry.get(&id).is_some() {
                    return Err(Error::AlreadyLoaded);
                }
                if core.driver.exists(s)? {
                    return Err(Error::AlreadyExists);
                }
                Some(id)
            }
            None => None,
        };
        let idx = core.pool.checkout()?;
        let slot = core.pool.get(idx);
        // One clock read dates the generated id and the `init` event.
        let now = now_ms();
        // Hold the (free) slot's lock while the id is registered, so that a
        // concurrent `load` of the id waits until the trace is started.
        let mut st = lock(&slot.state);
        let mut attempts = 0;
        let id = loop {
            let id = match custom {
                Some(id) => id,
                None => {
                    let id = TraceId::generate_at(now);
                    match core.driver.exists(id.as_str()) {
                        Ok(false) => id,
                        Ok(true) if attempts < 8 => {
                            attempts += 1;
                            continue;
                        }
                        Ok(true) => break Err(Error::AlreadyExists),
                        Err(e) => break Err(e),
                    }
                }
            };
            if core.registry.insert_if_absent(id, (idx, st.generation)) {
                break Ok(id);
            }
            if custom.is_some() || attempts >= 8 {
                break Err(Error::AlreadyLoaded);
            }
            attempts += 1;
        };
        match id {
            Ok(id) => {
                st.start(id, opts, now);
                core.enqueue(idx, &mut st);
                let generation = st.generation;
                drop(st);
                Ok(Trace::new(self.clone(), idx, generation, id))
            }
            Err(e) => {
                drop(st);
                core.pool.checkin(idx);
                Err(e)
            }
        }
    }

    fn lookup(&self, id: &str) -> Result<(TraceId, u32, u64)> {
        self.check_running()?;
        let tid = TraceId::parse(id)?;
        match self.core().registry.get(&tid) {
            Some((idx, generation)) => Ok((tid, idx, generation)),
            None => Err(Error::NotLoaded),
        }
    }

    /// A handle to a loaded trace.
    ///
    /// # Errors
    /// `InvalidId`, `NotLoaded`, `ShutDown`.
    pub fn load(&self, id: &str) -> Result<Trace> {
        let (tid, idx, generation) = self.lookup(id)?;
        Ok(Trace::new(self.clone(), idx, generation, tid))
    }

    /// Loads a trace from storage into a slot, rebuilding its state: root,
    /// every node (a DAG, each node once), the current nodes, status, spaces
    /// and their values, logs and the event history with its seqs (new events
    /// continue the numbering). A loaded trace is returned as is.
    ///
    /// The in-memory driver stores nothing, so for it this only finds loaded traces.
    ///
    /// # Errors
    /// `InvalidId`, `NotFound`, `Corrupt` (naming the file or key),
    /// `Storage`, `PoolExhausted`, `ShutDown`.
    pub fn open(&self, id: &str) -> Result<Trace> {
        self.check_running()?;
        let tid = TraceId::parse(id)?;
        let core = self.core();
        if let Some((idx, generation)) = core.registry.get(&tid) {
            return Ok(Trace::new(self.clone(), idx, generation, tid));
        }
        let stored = core.driver.load(id)?.ok_or(Error::NotFound)?;
        if stored.info.id != id {
            return Err(Error::corrupt(
                format!("trace {id}"),
                format!("stored trace info names trace {:?}", stored.info.id),
            ));
        }
        let idx = core.pool.checkout()?;
        let slot = core.pool.get(idx);
        let mut st = lock(&slot.state);
        if let Err(e) = st.restore(tid, stored) {
            drop(st);
            core.pool.checkin(idx);
            return Err(e);
        }
        if core.registry.insert_if_absent(tid, (idx, st.generation)) {
            let generation = st.generation;
            drop(st);
            return Ok(Trace::new(self.clone(), idx, generation, tid));
        }
        // Opened concurrently by someone else: use theirs.
        st.reset();
        drop(st);
        core.pool.checkin(idx);
        self.load(id)
    }

    /// Whether the id names a loaded trace (`false` for invalid ids).
    pub fn is_loaded(&self, id: &str) -> bool {
        TraceId::parse(id).is_ok_and(|t| self.core().registry.get(&t).is_some())
    }

    /// Whether the trace is loaded or in storage.
    ///
    /// # Errors
    /// `InvalidId`, `Storage`, `ShutDown`.
    pub fn exists(&self, id: &str) -> Result<bool> {
        self.check_running()?;
        let tid = TraceId::parse(id)?;
        if self.core().registry.get(&tid).is_some() {
            return Ok(true);
        }
        self.core().driver.exists(id)
    }

    /// Metadata of a loaded or stored trace.
    ///
    /// # Errors
    /// `InvalidId`, `NotFound`, `Storage`, `ShutDown`.
    pub fn info(&self, id: &str) -> Result<TraceInfo> {
        match self.load(id) {
            Ok(t) => match t.trace_info() {
                Err(Error::Released) => self.stored_info(id),
                r => r,
            },
            Err(Error::NotLoaded) => self.stored_info(id),
            Err(e) => Err(e),
        }
    }

    /// Reads a stored trace without loading it into a slot: its info, nodes,
    /// logs, spaces and events as storage has them (what a loaded trace has
    /// not yet handed to the driver is not included).
    ///
    /// # Errors
    /// `InvalidId`, `NotFound` (also for the in-memory driver, which stores
    /// nothing), `Corrupt` naming the file or key, `Storage`, `ShutDown`.
    pub fn read_stored(&self, id: &str) -> Result<crate::driver::StoredTrace> {
        self.check_running()?;
        TraceId::parse(id)?;
        self.core().driver.load(id)?.ok_or(Error::NotFound)
    }

    fn stored_info(&self, id: &str) -> Result<TraceInfo> {
        self.core().driver.info(id)?.ok_or(Error::NotFound)
    }

    /// Ids of the loaded traces, sorted.
    pub fn list(&self) -> Vec<String> {
        self.core().registry.ids_sorted()
    }

    /// Ids of the traces in storage (loaded or not), sorted. Empty for the
    /// in-memory driver.
    ///
    /// # Errors
    /// `Storage`, `ShutDown`.
    pub fn list_stored(&self) -> Result<Vec<String>> {
        self.check_running()?;
        let mut ids = self.core().driver.list()?;
        ids.sort_unstable();
        Ok(ids)
    }

    /// Releases a loaded trace, synchronously: when this returns the trace is
    /// unregistered, its events were handed to the driver, its subscribers
    /// were given every event emitted before the release, and its slot is
    /// reset and free. Release emits no event.
    ///
    /// # Errors
    /// `InvalidId`; `NotLoaded` (also for a second release); `ShutDown`;
    /// `Storage` when the driver failed to take the last writes (the trace is
    /// released all the same, the failure is counted in `EngineStats`).
    pub fn release(&self, id: &str) -> Result<()> {
        self.check_running()?;
        let tid = TraceId::parse(id)?;
        let core = self.core();
        let (idx, generation) = core.registry.remove(&tid).ok_or(Error::NotLoaded)?;
        core.release_slot(idx, generation)
    }

    /// Releases through a handle: `Released` if the handle is stale.
    pub(crate) fn release_handle(&self, tid: &TraceId, idx: u32, generation: u64) -> Result<()> {
        self.check_running()?;
        let core = self.core();
        if !core.registry.remove_if(tid, (idx, generation)) {
            return Err(Error::Released);
        }
        core.release_slot(idx, generation)
    }

    /// Releases the trace if loaded and deletes everything storage holds for it.
    ///
    /// # Errors
    /// `InvalidId`, `NotFound` when it is neither loaded nor stored, `Storage`, `ShutDown`.
    pub fn remove(&self, id: &str) -> Result<()> {
        self.check_running()?;
        TraceId::parse(id)?;
        let was_loaded = match self.release(id) {
            Ok(()) => true,
            Err(Error::NotLoaded) => false,
            Err(e) => return Err(e),
        };
        let stored = self.core().driver.remove(id)?;
        if was_loaded || stored {
            Ok(())
        } else {
            Err(Error::NotFound)
        }
    }

    /// Cancels a loaded trace: unfinished nodes become `cancelled` (one
    /// `node_failed` each), then one `complete` with status `cancelled`.
    /// A finished trace is left as it is.
    ///
    /// # Errors
    /// `InvalidId`, `NotLoaded`, `ShutDown`.
    pub fn mark_cancelled(&self, id: &str, reason: impl Display) -> Result<()> {
        self.load(id)?.mark_cancelled(reason)
    }

    /// Engine-wide counters.
    pub fn stats(&self) -> EngineStats {
        let core = self.core();
        for idx in core.pool.indices() {
            let slot = core.pool.get(idx);
            let mut st = lock(&slot.state);
            core.collect_stats(&mut st);
        }
        let c = &core.counters;
        let capacity = core.pool.capacity();
        let in_use = core.pool.in_use();
        EngineStats {
            capacity,
            in_use,
            free: capacity.saturating_sub(in_use),
            peak_in_use: core.pool.peak(),
            grown: core.pool.grown(),
            workers: core.config.workers,
            live_tasks: lock(&self.inner.workers)
                .as_ref()
                .map_or(0, |w| w.live_tasks()),
            events_emitted: c.events_emitted.load(Ordering::Relaxed),
            events_persisted: c.events_persisted.load(Ordering::Relaxed),
            events_dropped: c.events_dropped.load(Ordering::Relaxed),
            subscribers: c.subscribers.load(Ordering::Relaxed),
            history_evicted: c.history_evicted.load(Ordering::Relaxed),
            events_lagged: c.events_lagged.load(Ordering::Relaxed),
            logs_dropped: c.logs_dropped.load(Ordering::Relaxed),
            persist_errors: c.persist_errors.load(Ordering::Relaxed),
            bytes_written: c.bytes_written.load(Ordering::Relaxed),
        }
    }

    /// Name of the storage driver.
    pub fn driver_name(&self) -> &'static str {
        self.core().driver.name()
    }

    /// Shuts the engine down: releases every loaded trace (flushing its writes
    /// and ending its subscriptions), stops the workers and waits for them to
    /// exit, then flushes the driver. Later calls on the engine or its handles
    /// give `ShutDown`. Idempotent; also run when the last handle is dropped.
    ///
    /// # Errors
    /// The first `Storage` error met while flushing.
    pub fn shutdown(&self) -> Result<()> {
        self.inner.shutdown()
    }

    pub(crate) fn released_status(&self, idx: u32, generation: u64) -> Option<TraceStatus> {
        let v = self.core().pool.get(idx).released.load(Ordering::Acquire);
        (v >> 8 == generation).then(|| TraceStatus::from_u8(v as u8))
    }
}
