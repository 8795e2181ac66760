//! The engine: registry of loaded traces, the slot pool, the workers, the
//! ticker and the driver, behind one cheap-to-clone handle.
//!
//! ```text
//! Engine ──Arc──> EngineInner (Drop = shutdown)
//!                   ├── Core (shared with workers, handles and subscriptions)
//!                   │     ├── SlotPool<TraceSlot>  preallocated slots, free list, leases, waiters
//!                   │     ├── Registry             trace id -> loaded / draining slot
//!                   │     ├── WorkerQueue[]        slots with something for their worker
//!                   │     ├── FlushState           flush epochs, recent storage errors
//!                   │     ├── Counters             engine-wide statistics
//!                   │     └── Driver               memory | local | store | custom
//!                   ├── Workers                    N threads: writes, drains, archives
//!                   └── Ticker                     1 thread: timed waits, idle reaping
//! ```
//!
//! # Lifecycle
//!
//! Every `Trace` and `Node` handle of one checkout counts in the slot's
//! lease. Dropping the last one releases the trace (unless it was created
//! with `TraceOptions::keep_loaded(true)`); so do `release`, `remove`,
//! `shutdown` and, for kept traces, `idle_timeout`. A release never does
//! I/O: the slot drains on its worker and is then reset and free; `flush`
//! waits for the driver.

mod builder;
mod core;
mod flush;
mod lease; // redis-hook
mod registry;
mod ticker;
mod workers;

pub use builder::{DEFAULT_STORE, EngineBuilder};
pub(crate) use core::Core;

use std::fmt::Display;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::driver::{Driver, StoredTrace};
use crate::error::{Error, Result};
use crate::id::{TraceId, TraceIdGen, now_ms};
use crate::model::{EngineStats, TraceInfo, TraceStatus};
use crate::options::TraceOptions;
use crate::pool::SlotKey;
use crate::pool::{SlotPool, lock};
use crate::trace::TraceSlot;
use crate::trace::lease::Pin;
use crate::trace::state::Limits;
pub(crate) use builder::Config; // otel-hook: (was a private `use`)
use core::{Counters, ReleaseKind};
use flush::{FlushState, Signal};
use registry::{Entry, Registry};
use ticker::{Ticker, TickerShared};
use workers::{WorkerQueue, Workers};

/// A slot checked out for a trace, with one handle counted in its lease:
/// what `create`, `load` and `open` give the handle module to wrap.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Checkout {
    pub(crate) key: SlotKey,
    pub(crate) id: TraceId,
}

/// The owner of the threads; shuts the engine down when the last handle goes.
#[derive(Debug)]
pub(crate) struct EngineInner {
    pub(crate) core: Arc<Core>,
    workers: Mutex<Option<Workers>>,
    ticker: Mutex<Option<Ticker>>,
}

impl Drop for EngineInner {
    fn drop(&mut self) {
        let _ = self.shutdown_blocking();
    }
}

impl EngineInner {
    /// Marks the engine shut down and releases every loaded trace. `false`
    /// if it was shut down before.
    fn begin_shutdown(&self) -> bool {
        let core = &self.core;
        if core.shut.swap(true, Ordering::AcqRel) {
            return false;
        }
        for (_, key) in core.registry.loaded_entries() {
            let _ = core.close_and_release(key, ReleaseKind::Shutdown);
        }
        true
    }

    /// Stops the workers (they finish what is queued) and the ticker, then
    /// flushes the driver.
    fn finish_shutdown(&self) -> Result<()> {
        let core = &self.core;
        core.stopping.store(true, Ordering::Release);
        for q in core.queues.iter() {
            q.wake();
        }
        if let Some(mut w) = lock(&self.workers).take() {
            w.join();
        }
        if let Some(mut t) = lock(&self.ticker).take() {
            t.stop();
        }
        core.drains.wake_all();
        crate::observer::on_shutdown(&core.config.observer); // otel-hook:
        let flushed = core.driver.flush(); // redis-hook
        core.driver.shutdown(); // redis-hook
        flushed // redis-hook
    }

    fn shutdown_blocking(&self) -> Result<()> {
        if !self.begin_shutdown() {
            return Ok(());
        }
        let flushed = self.core.flush_blocking();
        let finished = self.finish_shutdown();
        flushed.and(finished)
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

/// Runs a blocking storage call off the async caller's thread: on tokio's
/// blocking pool inside a tokio runtime, else on a short-lived thread.
async fn run_blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let lost = || Error::Storage {
        location: String::from("storage"),
        message: String::from("the storage call did not complete (it panicked or was cancelled)"),
        source: None,
    };
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        return handle.spawn_blocking(f).await.map_err(|_| lost())?;
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("tracepool-io".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(|e| Error::Storage {
            location: String::from("storage"),
            message: format!("cannot start a thread for the storage call: {e}"),
            source: Some(e),
        })?;
    rx.await.map_err(|_| lost())?
}

impl Engine {
    /// A builder with the defaults: 1024 slots, one worker per core,
    /// `Exhausted::Wait(50 ms)`, the embedded store driver in
    /// `./traces.db` ([`DEFAULT_STORE`](crate::DEFAULT_STORE)).
    pub fn builder() -> EngineBuilder {
        EngineBuilder::default()
    }

    pub(crate) fn start(config: Config, driver: Arc<dyn Driver>) -> Result<Engine> {
        // Calibrate the event clock now rather than on the first event.
        crate::clock::init();
        let persists = driver.persists();
        let limits = Limits {
            history: config.history_limit,
            subscriber_buffer: config.subscriber_buffer,
            pending: config.write_queue_limit,
            persists,
            documents: persists && driver.wants_documents(),
            driver: driver.name(),
            max_nodes: config.max_nodes,
            max_log_bytes: config.max_log_bytes,
            max_subscribers: config.max_subscribers,
            max_space_entries: config.max_space_entries,
            max_trace_space_entries: config.max_trace_space_entries,
            max_spaces: config.max_spaces,
            pending_bytes: config.pending_bytes_limit,
            leases: persists && driver.lease_renewal().is_some(), // redis-hook
        };
        let pending_total = Arc::new(AtomicUsize::new(0));
        let ticker_shared = Arc::new(TickerShared::default());
        let core = Arc::new(Core {
            pool: SlotPool::new(config.capacity, config.exhausted, move || {
                TraceSlot::new(limits, pending_total.clone())
            }),
            registry: Registry::with_capacity(config.capacity),
            driver,
            queues: (0..config.workers)
                .map(|_| WorkerQueue::default())
                .collect(),
            flush: FlushState::new(config.workers),
            drains: Signal::default(),
            ticker: ticker_shared.clone(),
            ids: TraceIdGen::new(),
            config,
            counters: Counters::default(),
            shut: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            alive_workers: AtomicUsize::new(0),
        });
        let mut workers = Workers::start(&core)?;
        let weak = Arc::downgrade(&core);
        let reap_every = core
            .config
            .idle_timeout
            .map(|t| (t / 4).clamp(Duration::from_millis(10), Duration::from_secs(1)));
        // redis-hook: begin (the ticker also renews the leases of a shared driver)
        let renew_every = core.driver.lease_renewal();
        let period = match (reap_every, renew_every) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let chore = move || {
            if let Some(core) = weak.upgrade() {
                core.reap_idle();
                core.driver.renew_leases();
            }
        };
        // redis-hook: end
        let ticker = match Ticker::start(ticker_shared, period, chore) {
            Ok(t) => t,
            Err(e) => {
                core.stopping.store(true, Ordering::Release);
                for q in core.queues.iter() {
                    q.wake();
                }
                workers.join();
                return Err(e);
            }
        };
        Ok(Engine {
            inner: Arc::new(EngineInner {
                core,
                workers: Mutex::new(Some(workers)),
                ticker: Mutex::new(Some(ticker)),
            }),
        })
    }

    pub(crate) fn core(&self) -> &Arc<Core> {
        &self.inner.core
    }

    /// This engine, as a value that owns no reference count (a handle's):
    /// it must not be dropped, only forgotten.
    ///
    /// # Safety
    /// The engine must stay alive for as long as the alias is used: a
    /// handle's alias is covered by the reference its slot holds while any
    /// handle refers to it (see `trace::lease`).
    pub(crate) unsafe fn alias(&self) -> std::mem::ManuallyDrop<Engine> {
        // SAFETY: the pointer comes from a live `Arc`; the alias is never
        // dropped (ManuallyDrop), so the count is not decremented for it.
        std::mem::ManuallyDrop::new(Engine {
            inner: unsafe { Arc::from_raw(Arc::as_ptr(&self.inner)) },
        })
    }

    /// Takes the slot's reference to the engine when its lease says so.
    pub(crate) fn take_pin(&self, pin: Pin) {
        if pin == Pin::Take {
            // SAFETY: `self` is a live `Arc` (the count is at least one).
            unsafe { Arc::increment_strong_count(Arc::as_ptr(&self.inner)) };
        }
    }

    /// Gives a slot's reference to the engine back when its lease says so.
    /// This may drop the engine (shut it down, free it): the caller must
    /// not use `self` (nor anything of the engine) afterwards.
    ///
    /// # Safety
    /// The slot took a reference ([`take_pin`](Engine::take_pin)) that was
    /// not given back yet; `self` may be the handle's alias.
    pub(crate) unsafe fn give_back_pin(&self, pin: Pin) {
        if pin == Pin::GiveBack {
            // SAFETY: the slot's reference, taken by `take_pin`.
            unsafe { Arc::decrement_strong_count(Arc::as_ptr(&self.inner)) };
        }
    }

    pub(crate) fn check_running(&self) -> Result<()> {
        if self.core().shut.load(Ordering::Relaxed) {
            Err(Error::ShutDown)
        } else {
            Ok(())
        }
    }

    // ---- create ----------------------------------------------------------------

    /// Validates a caller-given id: not loaded, not draining. Returns it.
    fn custom_id(&self, opts: &TraceOptions) -> Result<Option<TraceId>> {
        let Some(s) = &opts.id else {
            return Ok(None);
        };
        let id = TraceId::parse(s)?;
        match self.core().registry.get(&id) {
            Some(Entry::Loaded(_)) => Err(Error::AlreadyLoaded),
            // Released a moment ago; storage is about to have it.
            Some(Entry::Draining(_)) => Err(Error::AlreadyExists),
            None => Ok(Some(id)),
        }
    }

    /// See the public `create` (`crate::handle`).
    pub(crate) fn create_checkout(&self, opts: TraceOptions) -> Result<Checkout> {
        self.check_running()?;
        let custom = self.custom_id(&opts)?;
        if let Some(id) = &custom
            && self.core().driver.exists(id.as_str())?
        {
            return Err(Error::AlreadyExists);
        }
        // redis-hook: begin (a given id's lease is taken now; a generated one's in the first batch)
        if let Some(id) = custom {
            return self.with_lease(&id, true, || {
                let idx = self.core().checkout()?;
                self.start_in(idx, custom, opts)
            });
        }
        // redis-hook: end
        let idx = self.core().checkout()?;
        self.start_in(idx, custom, opts)
    }

    /// See the public `create_async` (`crate::handle`).
    pub(crate) async fn create_async_checkout(&self, opts: TraceOptions) -> Result<Checkout> {
        self.check_running()?;
        let custom = self.custom_id(&opts)?;
        if let Some(id) = custom {
            let driver = self.core().driver.clone();
            if run_blocking(move || driver.exists(id.as_str())).await? {
                return Err(Error::AlreadyExists);
            }
        }
        let ticker = self.core().ticker.clone();
        // redis-hook: begin (a given id's lease is taken now, given up if the create fails)
        if let Some(id) = custom
            && self.core().driver.lease_renewal().is_some()
        {
            let engine = self.clone();
            run_blocking(move || engine.with_lease(&id, true, || Ok(()))).await?;
            let started = match self.core().checkout_async(&ticker).await {
                Ok(idx) => self.start_in(idx, custom, opts),
                Err(e) => Err(e),
            };
            if started.is_err() {
                let driver = self.core().driver.clone();
                let _ = run_blocking(move || driver.release_lease(id.as_str())).await;
            }
            return started;
        }
        // redis-hook: end
        let idx = self.core().checkout_async(&ticker).await?;
        self.start_in(idx, custom, opts)
    }

    /// Starts a trace in the checked-out slot `idx` (returned to the pool on error).
    fn start_in(&self, idx: u32, custom: Option<TraceId>, opts: TraceOptions) -> Result<Checkout> {
        let core = self.core();
        let slot = core.pool.get(idx);
        // One clock read dates the generated id and the `init` event.
        let now = now_ms();
        // Hold the (free) slot's lock while the id is registered, so that a
        // concurrent `load` of the id waits until the trace is started.
        let mut st = slot.state.lock();
        let key = SlotKey::new(idx, st.generation);
        let id = loop {
            let id = custom.unwrap_or_else(|| core.ids.next(now));
            if core.registry.insert_if_absent(id, key) {
                break Ok(id);
            }
            if custom.is_some() {
                break Err(Error::AlreadyLoaded);
            }
            // A caller-given id equal to this generated one is loaded: take
            // the next serial.
        };
        match id {
            Ok(id) => {
                let pin = st.lease.open(key.generation, opts.keep_loaded, 1);
                self.take_pin(pin);
                slot.note_lease(&st.lease);
                st.start(id, opts, now);
                st.handoff.lease_held = st.limits.leases; // redis-hook
                core.enqueue(idx, &mut st);
                drop(st);
                core.ticker.nudge();
                Ok(Checkout { key, id })
            }
            Err(e) => {
                drop(st);
                core.pool.checkin(idx);
                Err(e)
            }
        }
    }

    // ---- loaded traces --------------------------------------------------------

    /// A counted handle to the loaded trace `tid`, if any.
    pub(crate) fn acquire_loaded(&self, tid: TraceId) -> Option<Checkout> {
        let core = self.core();
        let key = core.registry.loaded(&tid)?;
        let slot = core.pool.get(key.idx);
        {
            let mut st = slot.state.lock();
            let pin = st.lease.acquire(key.generation)?;
            self.take_pin(pin);
            slot.note_lease(&st.lease);
        }
        slot.last_load.store(now_ms(), Ordering::Relaxed);
        Some(Checkout { key, id: tid })
    }

    /// See the public `load` (`crate::handle`).
    pub(crate) fn load_checkout(&self, id: &str) -> Result<Checkout> {
        self.check_running()?;
        let tid = TraceId::parse(id)?;
        self.acquire_loaded(tid).ok_or(Error::NotLoaded)
    }

    /// Runs `f` on the state of the loaded trace `tid` without taking a handle.
    fn with_loaded<R>(
        &self,
        tid: &TraceId,
        f: impl FnOnce(&mut crate::trace::state::TraceState) -> Result<R>,
    ) -> Result<R> {
        let key = self.core().registry.loaded(tid).ok_or(Error::NotLoaded)?;
        match self.core().with_state(key, f) {
            Err(Error::Released) => Err(Error::NotLoaded),
            r => r,
        }
    }

    /// Whether the id names a loaded trace (`false` for invalid ids and for
    /// released traces that are still draining).
    pub fn is_loaded(&self, id: &str) -> bool {
        TraceId::parse(id).is_ok_and(|t| self.core().registry.loaded(&t).is_some())
    }

    /// Ids of the loaded traces, sorted.
    pub fn list(&self) -> Vec<String> {
        self.core().registry.loaded_ids_sorted()
    }

    // ---- storage reads ----------------------------------------------------------

    fn draining_slot(&self, tid: &TraceId) -> Option<u32> {
        match self.core().registry.get(tid) {
            Some(Entry::Draining(at)) => Some(at.idx),
            _ => None,
        }
    }

    /// Waits (at most `drain_timeout`) until `tid` is not draining.
    fn wait_drained_blocking(&self, tid: &TraceId) {
        let Some(idx) = self.draining_slot(tid) else {
            return;
        };
        let core = self.core();
        core.queue_of(idx).wake();
        let deadline = Instant::now() + core.config.drain_timeout;
        core.drains
            .wait_blocking(deadline, || self.draining_slot(tid).is_none());
    }

    /// [`wait_drained_blocking`](Engine::wait_drained_blocking) without blocking the thread.
    async fn wait_drained(&self, tid: &TraceId) {
        let Some(idx) = self.draining_slot(tid) else {
            return;
        };
        let core = self.core();
        core.queue_of(idx).wake();
        let timeout = core.ticker.sleep(core.config.drain_timeout);
        core.drains
            .wait(timeout, || self.draining_slot(tid).is_none())
            .await;
    }

    /// See the public `open` (`crate::handle`).
    pub(crate) fn open_checkout(&self, id: &str) -> Result<Checkout> {
        self.check_running()?;
        let tid = TraceId::parse(id)?;
        if let Some(t) = self.acquire_loaded(tid) {
            return Ok(t);
        }
        self.wait_drained_blocking(&tid);
        // redis-hook: begin (the lease first; given up if the open fails)
        self.with_lease(&tid, false, || {
            let stored = self.core().driver.load(id)?.ok_or(Error::NotFound)?;
            check_stored(&tid, &stored)?;
            let idx = self.core().checkout()?;
            self.install(idx, tid, stored)
        })
        // redis-hook: end
    }

    /// See the public `open_async` (`crate::handle`).
    pub(crate) async fn open_async_checkout(&self, id: &str) -> Result<Checkout> {
        self.check_running()?;
        let tid = TraceId::parse(id)?;
        if let Some(t) = self.acquire_loaded(tid) {
            return Ok(t);
        }
        self.wait_drained(&tid).await;
        // redis-hook: begin (the lease first; given up if the open fails)
        let engine = self.clone();
        let stored = run_blocking(move || {
            engine.with_lease(&tid, false, || {
                let stored = engine
                    .core()
                    .driver
                    .load(tid.as_str())?
                    .ok_or(Error::NotFound)?;
                check_stored(&tid, &stored)?;
                Ok(stored)
            })
        })
        .await?;
        let ticker = self.core().ticker.clone();
        let installed = match self.core().checkout_async(&ticker).await {
            Ok(idx) => self.install(idx, tid, stored),
            Err(e) => Err(e),
        };
        if installed.is_err() && self.core().driver.lease_renewal().is_some() {
            let driver = self.core().driver.clone();
            let _ = run_blocking(move || driver.release_lease(tid.as_str())).await;
        }
        installed
        // redis-hook: end
    }

    /// Rebuilds `stored` in the checked-out slot `idx` (returned on error).
    fn install(&self, idx: u32, tid: TraceId, stored: StoredTrace) -> Result<Checkout> {
        let core = self.core();
        let slot = core.pool.get(idx);
        let mut st = slot.state.lock();
        if let Err(e) = st.restore(tid, stored) {
            drop(st);
            core.pool.checkin(idx);
            return Err(e);
        }
        let key = SlotKey::new(idx, st.generation);
        if core.registry.insert_if_absent(tid, key) {
            st.handoff.lease_held = st.limits.leases; // redis-hook
            let pin = st.lease.open(key.generation, false, 1);
            self.take_pin(pin);
            slot.note_lease(&st.lease);
            slot.last_load.store(now_ms(), Ordering::Relaxed);
            drop(st);
            return Ok(Checkout { key, id: tid });
        }
        // Opened concurrently by someone else (use theirs), or still
        // draining after `drain_timeout` (the driver keeps failing).
        st.discard_writes();
        st.reset();
        drop(st);
        core.pool.checkin(idx);
        if self.draining_slot(&tid).is_some() {
            return Err(Error::Storage {
                location: format!("trace {}", tid.as_str()),
                message: "released, and its last writes are still on their way to storage \
                          (the driver keeps failing); try again later"
                    .into(),
                source: None,
            });
        }
        self.acquire_loaded(tid).ok_or(Error::NotLoaded)
    }

    /// Whether the trace is loaded or in storage (an id released a moment
    /// ago is looked up once its last writes reached storage).
    ///
    /// # Errors
    /// `InvalidId`, `Storage`, `ShutDown`.
    pub fn exists(&self, id: &str) -> Result<bool> {
        self.check_running()?;
        let tid = TraceId::parse(id)?;
        if self.core().registry.loaded(&tid).is_some() {
            return Ok(true);
        }
        self.wait_drained_blocking(&tid);
        self.core().driver.exists(id)
    }

    /// [`exists`](Engine::exists) with storage read off the thread.
    ///
    /// # Errors
    /// As [`exists`](Engine::exists).
    pub async fn exists_async(&self, id: &str) -> Result<bool> {
        self.check_running()?;
        let tid = TraceId::parse(id)?;
        if self.core().registry.loaded(&tid).is_some() {
            return Ok(true);
        }
        self.wait_drained(&tid).await;
        let driver = self.core().driver.clone();
        run_blocking(move || driver.exists(tid.as_str())).await
    }

    /// Metadata of a loaded or stored trace.
    ///
    /// # Errors
    /// `InvalidId`, `NotFound`, `Corrupt`, `Storage`, `ShutDown`.
    pub fn info(&self, id: &str) -> Result<TraceInfo> {
        self.check_running()?;
        let tid = TraceId::parse(id)?;
        let driver = self.driver_name();
        match self.with_loaded(&tid, |st| Ok(st.trace_info(driver))) {
            Err(Error::NotLoaded) => {}
            r => return r,
        }
        self.wait_drained_blocking(&tid);
        self.core().driver.info(id)?.ok_or(Error::NotFound)
    }

    /// [`info`](Engine::info) with storage read off the thread.
    ///
    /// # Errors
    /// As [`info`](Engine::info).
    pub async fn info_async(&self, id: &str) -> Result<TraceInfo> {
        self.check_running()?;
        let tid = TraceId::parse(id)?;
        let name = self.driver_name();
        match self.with_loaded(&tid, |st| Ok(st.trace_info(name))) {
            Err(Error::NotLoaded) => {}
            r => return r,
        }
        self.wait_drained(&tid).await;
        let driver = self.core().driver.clone();
        run_blocking(move || driver.info(tid.as_str()))
            .await?
            .ok_or(Error::NotFound)
    }

    /// Reads a stored trace without loading it into a slot: its info, nodes,
    /// logs, spaces and events as storage has them (what a loaded trace has
    /// not yet handed to the driver is not included).
    ///
    /// # Errors
    /// `InvalidId`, `NotFound` (also for the in-memory driver, which stores
    /// nothing), `Corrupt` naming the file or key, `Storage`, `ShutDown`.
    pub fn read_stored(&self, id: &str) -> Result<StoredTrace> {
        self.check_running()?;
        let tid = TraceId::parse(id)?;
        self.wait_drained_blocking(&tid);
        self.core().driver.load(id)?.ok_or(Error::NotFound)
    }

    /// Ids of the traces in storage (loaded or not), sorted; released traces
    /// still handing their last writes to the driver are included. Empty for
    /// the in-memory driver.
    ///
    /// # Errors
    /// `Storage`, `ShutDown`.
    pub fn list_stored(&self) -> Result<Vec<String>> {
        self.check_running()?;
        let ids = self.core().driver.list()?;
        Ok(self.with_draining(ids))
    }

    /// [`list_stored`](Engine::list_stored) with storage read off the thread.
    ///
    /// # Errors
    /// As [`list_stored`](Engine::list_stored).
    pub async fn list_stored_async(&self) -> Result<Vec<String>> {
        self.check_running()?;
        let driver = self.core().driver.clone();
        let ids = run_blocking(move || driver.list()).await?;
        Ok(self.with_draining(ids))
    }

    fn with_draining(&self, mut ids: Vec<String>) -> Vec<String> {
        if self.core().driver.persists() {
            ids.extend(self.core().registry.draining_ids());
        }
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    // ---- release, remove, flush ------------------------------------------------

    /// Releases a loaded trace. Returns at once and does no I/O: the id is
    /// unregistered (a later `load` gets `NotLoaded`), remaining handles get
    /// `Released`, each subscriber gets every event emitted before the
    /// release and then its stream ends. If the trace still has writes for
    /// the driver, its slot is *draining* until a worker has handed them
    /// over (see [`flush`](Engine::flush)); then it is reset and free.
    /// Release emits no event.
    ///
    /// # Errors
    /// `InvalidId`; `NotLoaded` (also for a second release); `ShutDown`.
    pub fn release(&self, id: &str) -> Result<()> {
        self.check_running()?;
        let tid = TraceId::parse(id)?;
        let core = self.core();
        let key = core.registry.loaded(&tid).ok_or(Error::NotLoaded)?;
        match core.close_and_release(key, ReleaseKind::Explicit) {
            None | Some(Err(Error::Released)) => Err(Error::NotLoaded),
            Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(e),
        }
    }

    /// Releases through a handle: `Released` if the handle is stale.
    pub(crate) fn release_handle(&self, key: SlotKey) -> Result<()> {
        self.check_running()?;
        let core = self.core();
        match core.close_and_release(key, ReleaseKind::Explicit) {
            None => Err(Error::Released),
            Some(r) => r.map(|_| ()),
        }
    }

    /// Releases the trace if loaded and deletes everything storage holds for
    /// it. Writes still queued for it are discarded instead of written (a
    /// trace removed before any of it reached storage costs no storage work),
    /// counted in `EngineStats::events_discarded`.
    ///
    /// # Errors
    /// `InvalidId`, `NotFound` when it is neither loaded nor stored, `Storage`, `ShutDown`.
    pub fn remove(&self, id: &str) -> Result<()> {
        self.check_running()?;
        let tid = TraceId::parse(id)?;
        let (known, skip_storage) = self.release_for_removal(&tid)?;
        // redis-hook: begin (nothing stored, but a given id's lease may be held)
        if skip_storage && self.core().driver.lease_renewal().is_some() {
            let _ = self.core().driver.release_lease(id);
        }
        // redis-hook: end
        let stored = !skip_storage && self.core().driver.remove(id)?;
        if known || stored {
            Ok(())
        } else {
            Err(Error::NotFound)
        }
    }

    /// [`remove`](Engine::remove) with storage work off the thread.
    ///
    /// # Errors
    /// As [`remove`](Engine::remove).
    pub async fn remove_async(&self, id: &str) -> Result<()> {
        self.check_running()?;
        let tid = TraceId::parse(id)?;
        let engine = self.clone();
        let (known, skip_storage) = run_blocking(move || engine.release_for_removal(&tid)).await?;
        let driver = self.core().driver.clone();
        // redis-hook: begin (nothing stored, but a given id's lease may be held)
        if skip_storage && driver.lease_renewal().is_some() {
            let d = driver.clone();
            let _ = run_blocking(move || d.release_lease(tid.as_str())).await;
        }
        // redis-hook: end
        let stored = !skip_storage && run_blocking(move || driver.remove(tid.as_str())).await?;
        if known || stored {
            Ok(())
        } else {
            Err(Error::NotFound)
        }
    }

    /// The engine's part of `remove`: release a loaded trace, discard a
    /// draining one's writes. Returns (known here, nothing to remove in storage).
    fn release_for_removal(&self, tid: &TraceId) -> Result<(bool, bool)> {
        let core = self.core();
        let mut known = false;
        let mut never_written = false;
        let mut entry = core.registry.get(tid);
        if let Some(Entry::Loaded(key)) = entry {
            if let Some(Ok(r)) = core.close_and_release(key, ReleaseKind::Explicit) {
                known = true;
                never_written = r.never_written && !r.draining;
            }
            // Released, here or by a last handle's drop meanwhile: it may
            // be draining now.
            entry = core.registry.get(tid);
        }
        if let Some(Entry::Draining(key)) = entry
            && let Some(never) = core.discard_draining(key)
        {
            known = true;
            never_written = never;
        }
        Ok((known, never_written))
    }

    /// Waits until every event emitted, every release (including releases by
    /// a last handle's drop) and every archive made before the call has been
    /// handed to the driver with the configured durability (drained slots
    /// are free by then). Waits at most `drain_timeout`.
    ///
    /// # Errors
    /// The first `Storage` error the driver reported while this waited (a
    /// failed batch is retried; its loss is counted in `EngineStats`);
    /// `Storage` naming `flush` when `drain_timeout` passed first; `ShutDown`.
    pub async fn flush(&self) -> Result<()> {
        self.check_running()?;
        self.core().flush_async().await
    }

    /// [`flush`](Engine::flush), blocking the calling thread.
    ///
    /// With a driver whose calls are bounded local I/O (the store and local
    /// drivers: [`Driver::flushes_on_caller`](crate::Driver::flushes_on_caller)),
    /// a worker found parked with writes queued is not woken: this thread
    /// writes that worker's queue itself (waking a parked thread takes tens
    /// of microseconds on a virtual machine). `drain_timeout` then bounds
    /// the wait for the other workers, not that write.
    ///
    /// # Errors
    /// As [`flush`](Engine::flush).
    ///
    /// # Examples
    /// ```
    /// # fn main() -> tracepool::Result<()> {
    /// let dir = tempfile::tempdir().unwrap();
    /// let engine = tracepool::Engine::builder().store(dir.path().join("db")).build()?;
    /// let t = engine.create(tracepool::TraceOptions::new())?;
    /// let id = t.id().to_owned();
    /// t.add("input", tracepool::NodeOptions::new().label("step"))?;
    /// t.release()?;
    /// engine.flush_blocking()?; // storage has it now
    /// assert_eq!(engine.read_stored(&id)?.nodes.len(), 1);
    /// # Ok(()) }
    /// ```
    pub fn flush_blocking(&self) -> Result<()> {
        self.check_running()?;
        self.core().flush_blocking()
    }

    /// Cancels a loaded trace: unfinished nodes become `cancelled` (one
    /// `node_failed` each), then one `complete` with status `cancelled`.
    /// A finished trace is left as it is.
    ///
    /// # Errors
    /// `InvalidId`, `NotLoaded`, `ShutDown`.
    pub fn mark_cancelled(&self, id: &str, reason: impl Display) -> Result<()> {
        self.check_running()?;
        let tid = TraceId::parse(id)?;
        let reason = crate::event::value::text(&[&reason.to_string()]);
        self.with_loaded(&tid, |st| {
            st.mark_cancelled(&reason);
            Ok(())
        })
    }

    /// Engine-wide counters. Takes no slot lock: pool gauges are read live
    /// (`free + in_use + draining == capacity`), per-trace counters are
    /// published by the workers and are exact after [`flush`](Engine::flush).
    pub fn stats(&self) -> EngineStats {
        let core = self.core();
        let g = core.pool.gauges();
        let c = &core.counters;
        let r = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        EngineStats {
            capacity: g.capacity,
            in_use: g.in_use,
            free: g.free,
            draining: g.draining,
            waiting: core.pool.waiting(),
            peak_in_use: g.peak,
            grown: g.grown,
            workers: core.config.workers,
            live_tasks: core.alive_workers.load(Ordering::Acquire),
            events_emitted: c.events_emitted.get(),
            events_persisted: r(&c.events_persisted),
            events_dropped: c.events_dropped.get(),
            events_discarded: r(&c.events_discarded),
            subscribers: c.subscribers.load(Ordering::Relaxed),
            history_evicted: c.history_evicted.get(),
            events_lagged: c.events_lagged.get(),
            logs_dropped: c.logs_dropped.get(),
            logs_evicted: c.logs_evicted.get(),
            persist_errors: r(&c.persist_errors),
            bytes_written: r(&c.bytes_written),
            auto_released: r(&c.auto_released),
            idle_released: r(&c.idle_released),
            step_errors: r(&c.step_errors), // otel-hook:
            otel_dropped: core.config.observer.as_ref().map_or(0, |o| o.dropped()), // otel-hook:
            leases_lost: r(&c.leases_lost), // redis-hook
        }
    }

    /// Name of the storage driver.
    pub fn driver_name(&self) -> &'static str {
        self.core().driver.name()
    }

    /// Shuts the engine down: releases every loaded trace (handles left get
    /// `ShutDown`, subscriptions end after what was emitted), waits (at most
    /// `drain_timeout`) until the driver has everything, stops the workers
    /// and the ticker, and flushes the driver. Later calls on the engine or
    /// its handles give `ShutDown`. Idempotent; also run when the last
    /// handle of the engine (including trace handles) is dropped.
    ///
    /// # Errors
    /// The first `Storage` error met while flushing.
    pub fn shutdown(&self) -> Result<()> {
        self.inner.shutdown_blocking()
    }

    /// [`shutdown`](Engine::shutdown) for async code: waits for the driver
    /// without blocking the thread.
    ///
    /// # Errors
    /// As [`shutdown`](Engine::shutdown).
    pub async fn shutdown_async(&self) -> Result<()> {
        if !self.inner.begin_shutdown() {
            return Ok(());
        }
        let flushed = self.core().flush_async().await;
        let inner = self.inner.clone();
        let finished = run_blocking(move || inner.finish_shutdown()).await;
        flushed.and(finished)
    }

    pub(crate) fn released_status(&self, key: SlotKey) -> Option<TraceStatus> {
        let v = self
            .core()
            .pool
            .get(key.idx)
            .released
            .load(Ordering::Acquire);
        (v >> 8 == key.generation).then(|| TraceStatus::from_u8((v & 0xff) as u8))
    }
}

fn check_stored(tid: &TraceId, stored: &StoredTrace) -> Result<()> {
    if stored.info.id != tid.as_str() {
        return Err(Error::corrupt(
            format!("trace {}", tid.as_str()),
            format!("stored trace info names trace {:?}", stored.info.id),
        ));
    }
    Ok(())
}
