//! The workers: a fixed number of long-lived tasks, started once by `build`,
//! that hand queued events to the driver in batches (group commit).
//!
//! Slot `i` belongs to worker `i % workers`. A trace that emits events puts
//! its slot index on its worker's queue (once: the slot's `queued` flag keeps
//! it from being queued twice). A worker wakes every `flush_interval`, or
//! earlier when a slot's queue grows past [`WAKE_AT`], swaps each queued
//! slot's pending events into its own buffer (no allocation: the two buffers
//! trade places) and writes them with one driver call per trace.
//!
//! The workers run on a small multi-thread tokio runtime owned by the engine
//! (one thread per worker). Nothing here is spawned per trace or per
//! subscription; `shutdown` stops the workers and waits for them to exit.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::Core;
use crate::error::{Error, Result};
use crate::pool::lock;
use crate::trace::persist::WriteScratch;

/// A slot with this many pending events wakes its worker at once.
pub(crate) const WAKE_AT: usize = 1024;

/// One worker's queue of slot indices with pending writes.
#[derive(Debug, Default)]
pub(crate) struct WorkerQueue {
    items: Mutex<Vec<u32>>,
    notify: Notify,
}

impl WorkerQueue {
    pub(crate) fn push(&self, idx: u32) {
        lock(&self.items).push(idx);
    }

    pub(crate) fn wake(&self) {
        self.notify.notify_one();
    }
}

/// The runtime and the exit latch of the workers.
#[derive(Debug)]
pub(crate) struct Workers {
    runtime: Option<tokio::runtime::Runtime>,
    exited: Arc<(Mutex<usize>, Condvar)>,
    count: usize,
}

impl Workers {
    /// Starts `core.config.workers` worker tasks on a runtime of their own.
    pub(crate) fn start(core: &Arc<Core>) -> Result<Workers> {
        let count = core.config.workers;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(count)
            .thread_name("tracepool-worker")
            .enable_time()
            .build()
            .map_err(|e| Error::Config(format!("cannot start the worker runtime: {e}")))?;
        let exited = Arc::new((Mutex::new(0usize), Condvar::new()));
        for w in 0..count {
            let core = core.clone();
            let exited = exited.clone();
            runtime.spawn(async move {
                worker_loop(&core, w).await;
                let (m, cv) = &*exited;
                *lock(m) += 1;
                cv.notify_all();
            });
        }
        Ok(Workers {
            runtime: Some(runtime),
            exited,
            count,
        })
    }

    /// Tasks alive on the workers' runtime.
    pub(crate) fn live_tasks(&self) -> usize {
        self.runtime
            .as_ref()
            .map_or(0, |r| r.metrics().num_alive_tasks())
    }

    /// Waits (bounded) for every worker to exit, then stops the runtime.
    /// The caller has set `core.stopping` and woken the queues.
    pub(crate) fn join(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.exited;
        let mut n = lock(m);
        while *n < self.count {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            n = cv
                .wait_timeout(n, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let all = *n >= self.count;
        drop(n);
        if let Some(rt) = self.runtime.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                // Inside some runtime: blocking on the threads is not allowed here.
                rt.shutdown_background();
            } else {
                rt.shutdown_timeout(Duration::from_secs(1));
            }
        }
        all
    }
}

async fn worker_loop(core: &Core, w: usize) {
    let queue = &core.queues[w];
    let mut batch: Vec<u32> = Vec::new();
    let mut scratch = WriteScratch::default();
    let mut tick = tokio::time::interval(core.config.flush_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = core.stopping.load(Ordering::Acquire);
        std::mem::swap(&mut *lock(&queue.items), &mut batch);
        for idx in batch.drain(..) {
            core.flush_slot(idx, &mut scratch);
        }
        if stopping {
            return;
        }
        tokio::select! {
            _ = queue.notify.notified() => {}
            _ = tick.tick() => {}
        }
    }
}
