//! Fault injection between the engine and its driver: the Nth write fails,
//! every write fails, writes succeed slowly. Operations (release included)
//! never see driver I/O (write-behind), failures are counted, retried and
//! reported by `flush`, in-memory state and subscribers stay consistent, a
//! failing driver cannot keep a released slot past `drain_timeout`, and once
//! the fault clears every event reaches storage exactly once, in order.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tracepool::{
    Cursor, Delivery, DocKind, Driver, Engine, Error, NodeOptions, ParallelInput, SpaceOptions,
    TraceOptions, WriteBatch,
};

/// Per trace: documents stored, by (kind, id).
type DocStore = HashMap<String, HashMap<(String, String), Vec<u8>>>;

/// A driver that records what it is given and fails on command.
#[derive(Debug, Default)]
struct FaultDriver {
    /// Fail the write with this 1-based call number (0: never).
    fail_nth: AtomicU64,
    /// Fail every write while set.
    fail_all: AtomicBool,
    /// Sleep this many ms in every write.
    delay_ms: AtomicU64,
    calls: AtomicU64,
    failures: AtomicU64,
    /// Per trace: event seqs in the order they were stored.
    events: Mutex<HashMap<String, Vec<u64>>>,
    /// Per trace: documents stored (kind, id) -> bytes.
    docs: Mutex<DocStore>,
    /// Per trace: log lines stored.
    logs: Mutex<HashMap<String, usize>>,
}

#[derive(Debug, Clone)]
struct Shared(Arc<FaultDriver>);

impl Driver for Shared {
    fn name(&self) -> &'static str {
        "fault"
    }

    fn wants_documents(&self) -> bool {
        true
    }

    fn write(&self, batch: &WriteBatch<'_>) -> tracepool::Result<()> {
        let d = &self.0;
        let n = d.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let delay = d.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            std::thread::sleep(Duration::from_millis(delay));
        }
        if d.fail_all.load(Ordering::SeqCst) || d.fail_nth.load(Ordering::SeqCst) == n {
            d.failures.fetch_add(1, Ordering::SeqCst);
            return Err(Error::Storage {
                location: format!("fault:{}", batch.trace_id),
                message: format!("injected failure on write {n}"),
                source: None,
            });
        }
        let id = batch.trace_id.to_owned();
        d.events
            .lock()
            .unwrap()
            .entry(id.clone())
            .or_default()
            .extend(batch.events().map(|e| e.seq));
        let mut docs = d.docs.lock().unwrap();
        let docs = docs.entry(id.clone()).or_default();
        for doc in batch.docs() {
            let kind = format!("{:?}", doc.kind);
            if doc.kind == DocKind::SpaceDeleted {
                docs.retain(|(k, i), _| !(i == doc.id && k.starts_with("Space")));
            } else {
                docs.insert((kind, doc.id.to_owned()), doc.bytes.to_vec());
            }
        }
        *d.logs.lock().unwrap().entry(id).or_default() += batch.log_lines().len();
        Ok(())
    }
}

fn engine(d: &Arc<FaultDriver>) -> Engine {
    Engine::builder()
        .capacity(8)
        .workers(1)
        .flush_interval(Duration::from_millis(2))
        .drain_timeout(Duration::from_millis(400))
        .driver(Shared(d.clone()))
        .build()
        .unwrap()
}

/// The events the driver stored for a trace (none yet: empty).
fn stored(d: &FaultDriver, id: &str) -> Vec<u64> {
    d.events
        .lock()
        .unwrap()
        .get(id)
        .cloned()
        .unwrap_or_default()
}

/// Runs a small workload with a subscriber; returns (trace id, events seen by
/// the subscriber, events in history).
fn workload(e: &Engine) -> (tracepool::Trace, tracepool::Subscription) {
    let t = e.create(TraceOptions::new()).unwrap();
    let sub = t.subscribe().unwrap();
    t.add(json!("in"), NodeOptions::new().label("root"))
        .unwrap();
    t.info("hello");
    let space = t.create_space(SpaceOptions::new().label("S")).unwrap();
    t.set_space_value(&space.id, "k", 1).unwrap();
    let b = t
        .parallel(vec![
            ParallelInput::new(1, NodeOptions::new()),
            ParallelInput::new(2, NodeOptions::new()),
        ])
        .unwrap();
    b[0].complete(Some(json!(true))).unwrap();
    b[1].fail("boom").unwrap();
    t.add(json!("merge"), NodeOptions::new()).unwrap();
    t.complete(None).unwrap();
    t.mark_complete().unwrap();
    (t, sub)
}

fn drain(mut sub: tracepool::Subscription) -> Vec<u64> {
    let mut seqs = Vec::new();
    while let Some(d) = sub.blocking_recv() {
        match d {
            Delivery::Event(ev) => seqs.push(ev.seq),
            Delivery::Lagged { missed } => panic!("lagged {missed}"),
        }
    }
    seqs
}

fn wait_until(mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    false
}

#[test]
fn every_write_failing_is_counted_and_state_stays_consistent_then_recovers() {
    let d = Arc::new(FaultDriver::default());
    d.fail_all.store(true, Ordering::SeqCst);
    let e = engine(&d);
    let (t, sub) = workload(&e);
    let id = t.id().to_owned();
    let n = t.events(Cursor::Seq(0)).unwrap().len() as u64;
    // In-memory state is complete although nothing could be written.
    assert_eq!(t.all_nodes().unwrap().len(), 4);
    assert_eq!(t.logs(None).unwrap().len(), 2); // "hello" + the failure log
    assert!(
        wait_until(|| e.stats().persist_errors >= 2),
        "worker retried"
    );
    assert!(stored(&d, &id).is_empty());
    // While the fault lasts, release still returns at once, releases the
    // trace and ends the subscription; flush reports the storage error.
    t.release().unwrap();
    assert!(!e.is_loaded(&id));
    assert_eq!(drain(sub), (1..=n).collect::<Vec<_>>());
    let err = e.flush_blocking().unwrap_err();
    assert!(matches!(err, Error::Storage { .. }), "{err:?}");
    assert!(err.to_string().contains("injected failure"), "{err}");
    // The draining slot retries until drain_timeout, then gives up: the
    // loss is counted and the slot is free again.
    assert!(wait_until(|| e.stats().draining == 0), "drain gave up");
    e.flush_blocking().unwrap();
    let s = e.stats();
    assert_eq!(s.events_dropped, n, "{s:?}");
    assert_eq!(s.events_persisted, 0);
    assert_eq!((s.in_use, s.free), (0, 8));
    // The fault clears: later traces are written completely.
    d.fail_all.store(false, Ordering::SeqCst);
    let (t2, sub2) = workload(&e);
    let id2 = t2.id().to_owned();
    t2.release().unwrap();
    let seen = drain(sub2);
    e.flush_blocking().unwrap();
    assert_eq!(stored(&d, &id2), seen);
    assert_eq!(e.stats().events_persisted, seen.len() as u64);
}

#[test]
fn a_failed_batch_is_retried_and_lands_exactly_once_in_order() {
    for nth in 1..=4 {
        let d = Arc::new(FaultDriver::default());
        d.fail_nth.store(nth, Ordering::SeqCst);
        let e = engine(&d);
        let t = e.create(TraceOptions::new()).unwrap();
        let id = t.id().to_owned();
        // Spread the work over several batches: each step waits until the
        // worker has handed the driver one more batch (so the 4th call,
        // failing or not, exists).
        for i in 0..6u64 {
            t.add(json!(i), NodeOptions::new()).unwrap();
            t.info("step");
            assert!(
                wait_until(|| d.calls.load(Ordering::SeqCst) > i),
                "nth={nth}: no batch for step {i}"
            );
        }
        t.mark_complete().unwrap();
        let n = t.events(Cursor::Seq(0)).unwrap().len() as u64;
        t.release().unwrap();
        // A flush reports the injected failure if it met it; the retry
        // lands, so the next flush is clean.
        if let Err(e) = e.flush_blocking() {
            assert!(e.to_string().contains("injected failure"), "{e}");
        }
        e.flush_blocking().unwrap();
        assert_eq!(d.failures.load(Ordering::SeqCst), 1, "nth={nth}");
        assert_eq!(
            stored(&d, &id),
            (1..=n).collect::<Vec<_>>(),
            "nth={nth}: every event once, in seq order"
        );
        // Documents were retried too: every node has its latest document,
        // and every log line arrived once.
        let docs = d.docs.lock().unwrap();
        let nodes = docs[&id].keys().filter(|(k, _)| k == "Node").count();
        assert_eq!(nodes, 6, "nth={nth}");
        assert_eq!(d.logs.lock().unwrap()[&id], 6, "nth={nth}");
        let info = &docs[&id][&("Info".to_owned(), id.clone())];
        let info: serde_json::Value = serde_json::from_slice(info).unwrap();
        assert_eq!(info["status"], "completed");
        let s = e.stats();
        assert_eq!(s.persist_errors, 1);
        assert_eq!(s.events_dropped, 0);
        assert_eq!(s.events_persisted, n);
    }
}

#[test]
fn slow_writes_slow_neither_operations_nor_release_and_flush_waits_for_them() {
    let d = Arc::new(FaultDriver::default());
    d.delay_ms.store(40, Ordering::SeqCst);
    let e = engine(&d);
    let t = e.create(TraceOptions::new()).unwrap();
    let id = t.id().to_owned();
    let started = Instant::now();
    for i in 0..200 {
        t.add(json!(i), NodeOptions::new()).unwrap();
    }
    // 200 operations while the driver needs 40 ms per batch: the caller never
    // waits for it (generous bound for a slow debug build on a busy machine).
    assert!(started.elapsed() < Duration::from_millis(1500));
    t.mark_complete().unwrap();
    let n = t.events(Cursor::Seq(0)).unwrap().len() as u64;
    t.release().unwrap();
    // release returns without waiting for the driver (which takes 40 ms a
    // batch; `lifecycle_gated` proves it with a driver that never returns);
    // the slot drains on the worker and flush waits for it.
    assert!(!e.is_loaded(&id));
    e.flush_blocking().unwrap();
    assert_eq!(stored(&d, &id), (1..=n).collect::<Vec<_>>());
    assert_eq!(e.stats().draining, 0);
}

#[test]
fn write_queue_bound_drops_oldest_and_counts_while_the_driver_is_down() {
    let d = Arc::new(FaultDriver::default());
    d.fail_all.store(true, Ordering::SeqCst);
    let e = Engine::builder()
        .capacity(2)
        .workers(1)
        .write_queue_limit(16)
        .flush_interval(Duration::from_millis(1))
        .driver(Shared(d.clone()))
        .build()
        .unwrap();
    let t = e.create(TraceOptions::new()).unwrap();
    t.add(0, NodeOptions::new()).unwrap();
    for _ in 0..100 {
        t.info("x");
    }
    // While the driver is down: two writes that started after the last
    // event failed (the first took the whole queue, the second retried what
    // the failure put back).
    let calls = d.calls.load(Ordering::SeqCst);
    assert!(
        wait_until(|| d.failures.load(Ordering::SeqCst) >= calls + 2),
        "no retry after a failed write ({} calls, {} failed)",
        d.calls.load(Ordering::SeqCst),
        d.failures.load(Ordering::SeqCst)
    );
    let emitted = t.events(Cursor::Seq(0)).unwrap().len() as u64;
    d.fail_all.store(false, Ordering::SeqCst);
    let id = t.id().to_owned();
    t.release().unwrap();
    // (The failures met while the driver was down may be reported first.)
    let _ = e.flush_blocking();
    e.flush_blocking().unwrap();
    let stored = stored(&d, &id);
    let s = e.stats();
    // The 16 newest were queued when the driver came back, and written.
    assert_eq!(
        stored.len(),
        16,
        "bounded, and written once the driver works"
    );
    assert_eq!(s.events_dropped + stored.len() as u64, emitted, "{s:?}");
    // What survived is the newest events, in order.
    assert_eq!(
        stored,
        (emitted - stored.len() as u64 + 1..=emitted).collect::<Vec<_>>()
    );
}
