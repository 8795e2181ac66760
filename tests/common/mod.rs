//! Helpers shared by the integration tests (each test file uses a subset).
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};

use serde_json::Value;
use tracepool::{Cursor, Delivery, Engine, Event, EventKind, Exhausted, Trace};

#[cfg(feature = "redis")]
#[path = "../redis_support/mod.rs"]
mod redis_support;

/// Whether this test crate runs the reference catalogue on the Redis
/// driver: `tests/redis_catalogue.rs` includes every catalogue file
/// (`tests/trace_*.rs` marked "Reference catalogue") again, and there
/// [`engine`] and [`engine_with`] build engines on a real `redis-server`
/// (a fresh key prefix each). Elsewhere they use the in-memory driver.
pub(crate) fn on_redis() -> bool {
    env!("CARGO_CRATE_NAME") == "redis_catalogue"
}

/// The driver name the catalogue's engines report.
pub(crate) fn driver_name() -> &'static str {
    if on_redis() { "redis" } else { "memory" }
}

/// The catalogue's engine builder: in-memory, or Redis (see [`on_redis`]).
/// On Redis a released trace's slot drains (its lease goes with its last
/// batch), so a full pool waits for a slot instead of failing.
fn catalogue_builder() -> tracepool::EngineBuilder {
    #[cfg(feature = "redis")]
    if on_redis() {
        let server = redis_support::shared();
        return redis_support::builder_on(server, &redis_support::unique_prefix());
    }
    Engine::builder().on_exhausted(Exhausted::Error).memory()
}

/// A small engine of the catalogue (in-memory, or Redis: [`on_redis`]).
pub(crate) fn engine(capacity: usize, workers: usize) -> Engine {
    catalogue_builder()
        .capacity(capacity)
        .workers(workers)
        .build()
        .expect("build engine")
}

/// A small engine of the catalogue with explicit history and subscriber bounds.
pub(crate) fn engine_with(
    capacity: usize,
    workers: usize,
    history: usize,
    sub_buffer: usize,
) -> Engine {
    catalogue_builder()
        .capacity(capacity)
        .workers(workers)
        .history_limit(history)
        .subscriber_buffer(sub_buffer)
        .build()
        .expect("build engine")
}

/// The whole retained history of a trace.
pub(crate) fn history(trace: &Trace) -> Vec<Event> {
    trace.events(Cursor::Seq(0)).expect("events")
}

/// The kinds of some events, in order.
pub(crate) fn kinds(events: &[Event]) -> Vec<EventKind> {
    events.iter().map(|e| e.kind).collect()
}

/// How many events of one kind.
pub(crate) fn count(events: &[Event], kind: EventKind) -> usize {
    events.iter().filter(|e| e.kind == kind).count()
}

/// Asserts that the seqs are exactly `first..first + len`.
pub(crate) fn assert_contiguous_from(events: &[Event], first: u64) {
    for (i, e) in events.iter().enumerate() {
        assert_eq!(
            e.seq,
            first + i as u64,
            "event #{i} ({:?}) has seq {} (expected {})",
            e.kind,
            e.seq,
            first + i as u64
        );
    }
}

/// The ids of the nodes started by a `node_start` event (one, or the
/// parallel branches of a `nodes` payload).
pub(crate) fn started_ids(e: &Event) -> Vec<String> {
    assert_eq!(e.kind, EventKind::NodeStart);
    let d = e.data();
    if let Some(nodes) = d.get("nodes").and_then(Value::as_array) {
        nodes
            .iter()
            .map(|n| n["id"].as_str().expect("node id").to_owned())
            .collect()
    } else {
        vec![d["node"]["id"].as_str().expect("node id").to_owned()]
    }
}

/// Per node id: how many `node_start` entries mention it.
pub(crate) fn start_counts(events: &[Event]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for e in events.iter().filter(|e| e.kind == EventKind::NodeStart) {
        for id in started_ids(e) {
            *m.entry(id).or_insert(0) += 1;
        }
    }
    m
}

/// Per node id: how many terminal events (`node_complete` / `node_failed`).
pub(crate) fn terminal_counts(events: &[Event]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for e in events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::NodeComplete | EventKind::NodeFailed))
    {
        *m.entry(e.node_id().to_owned()).or_insert(0) += 1;
    }
    m
}

/// Asserts no node has more than one terminal event and returns the set of
/// nodes with one.
pub(crate) fn assert_one_terminal_max(events: &[Event]) -> HashSet<String> {
    let m = terminal_counts(events);
    for (id, n) in &m {
        assert_eq!(*n, 1, "node {id} has {n} terminal events");
    }
    m.into_keys().collect()
}

/// Drains a subscription with `blocking_recv` until it ends.
pub(crate) fn drain_blocking(sub: &mut tracepool::Subscription) -> Vec<Delivery> {
    let mut out = Vec::new();
    while let Some(d) = sub.blocking_recv() {
        out.push(d);
    }
    out
}

/// Only the events of some deliveries; panics on a `Lagged`.
pub(crate) fn events_only(ds: Vec<Delivery>) -> Vec<Event> {
    ds.into_iter()
        .map(|d| match d {
            Delivery::Event(e) => e,
            Delivery::Lagged { missed } => panic!("unexpected Lagged {{ missed: {missed} }}"),
        })
        .collect()
}

/// Runs `f` on another thread and fails the test if it does not finish in `secs`.
pub(crate) fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(std::time::Duration::from_secs(secs))
        .unwrap_or_else(|_| panic!("did not finish within {secs} s"))
}

/// A driver that keeps nothing but counts what it is handed (events per
/// trace id), so tests can check that every event reached "storage".
#[derive(Debug, Default, Clone)]
pub(crate) struct CountingDriver {
    pub(crate) events: std::sync::Arc<std::sync::atomic::AtomicU64>,
    pub(crate) batches: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl tracepool::Driver for CountingDriver {
    fn name(&self) -> &'static str {
        "counting"
    }

    fn write(&self, batch: &tracepool::WriteBatch<'_>) -> tracepool::Result<()> {
        use std::sync::atomic::Ordering::Relaxed;
        self.events.fetch_add(batch.len() as u64, Relaxed);
        self.batches.fetch_add(1, Relaxed);
        Ok(())
    }
}

/// A small engine on a [`CountingDriver`].
pub(crate) fn counting_engine(capacity: usize, workers: usize) -> (Engine, CountingDriver) {
    let d = CountingDriver::default();
    let e = Engine::builder()
        .capacity(capacity)
        .workers(workers)
        // Released slots drain on the workers: wait for one rather than fail.
        .on_exhausted(Exhausted::Wait(std::time::Duration::from_secs(5)))
        .driver(d.clone())
        .build()
        .expect("build engine");
    (e, d)
}

/// The reading and removing half of `tracepool::Driver`, handed to
/// `self.inner` (for test drivers that wrap a real one and change only how
/// it writes). Use inside `impl Driver for ...`.
#[allow(unused_macros)]
macro_rules! delegate_reads {
    () => {
        fn load(&self, id: &str) -> tracepool::Result<Option<tracepool::StoredTrace>> {
            self.inner.load(id)
        }
        fn exists(&self, id: &str) -> tracepool::Result<bool> {
            self.inner.exists(id)
        }
        fn info(&self, id: &str) -> tracepool::Result<Option<tracepool::TraceInfo>> {
            self.inner.info(id)
        }
        fn remove(&self, id: &str) -> tracepool::Result<bool> {
            self.inner.remove(id)
        }
        fn list(&self) -> tracepool::Result<Vec<String>> {
            self.inner.list()
        }
    };
}
#[allow(unused_imports)]
pub(crate) use delegate_reads;
