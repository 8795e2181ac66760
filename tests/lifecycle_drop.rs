//! Handles that cannot leak a slot: dropping the last `Trace`/`Node` handle
//! releases the trace, `keep_loaded` opts out (and idle traces are reaped),
//! `load` returns a counted handle, a subscription is not a handle.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use common::*;
use tracepool::{Engine, Error, EventKind, Exhausted, NodeOptions, Trace, TraceOptions};

fn memory(capacity: usize, policy: Exhausted) -> Engine {
    Engine::builder()
        .capacity(capacity)
        .workers(1)
        .on_exhausted(policy)
        .memory()
        .build()
        .unwrap()
}

/// Polls `f` until it holds or `secs` pass.
fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The request handler of a user who forgot `release` on the error path.
fn handle_request(engine: &Engine, i: usize) -> tracepool::Result<usize> {
    let trace = engine.create(TraceOptions::new())?;
    trace.add(i, NodeOptions::new().label("request"))?;
    if i.is_multiple_of(2) {
        // An early return: no release.
        return Err(Error::NoRoot);
    }
    trace.info("done");
    Ok(i)
}

#[test]
fn ten_thousand_dropped_traces_never_exhaust_a_pool_of_eight() {
    let engine = memory(8, Exhausted::Wait(Duration::from_secs(5)));
    for i in 0..10_000 {
        match handle_request(&engine, i) {
            Ok(_) | Err(Error::NoRoot) => {}
            Err(e) => panic!("request {i}: {e}"),
        }
    }
    engine.flush_blocking().unwrap();
    let st = engine.stats();
    assert_eq!((st.in_use, st.draining, st.free), (0, 0, 8), "{st:?}");
    assert_eq!(st.auto_released, 10_000);
    assert_eq!(st.peak_in_use, 1);
    assert!(engine.list().is_empty());
}

#[test]
fn the_last_drop_unregisters_before_it_returns() {
    let engine = memory(4, Exhausted::Error);
    let trace = engine.create(TraceOptions::new()).unwrap();
    let id = trace.id().to_owned();
    let copy = trace.clone();
    let loaded = engine.load(&id).unwrap();
    drop(trace);
    drop(copy);
    assert!(engine.is_loaded(&id), "a loaded handle still counts");
    assert_eq!(loaded.all_nodes().unwrap().len(), 0);
    drop(loaded);
    assert!(!engine.is_loaded(&id));
    assert!(matches!(engine.load(&id), Err(Error::NotLoaded)));
    assert_eq!(engine.stats().in_use, 0);
    assert_eq!(engine.stats().auto_released, 1);
}

#[test]
fn node_handles_keep_their_trace_loaded() {
    let engine = memory(4, Exhausted::Error);
    let trace = engine.create(TraceOptions::new()).unwrap();
    let id = trace.id().to_owned();
    let root = trace.add("in", NodeOptions::new().label("root")).unwrap();
    drop(trace);
    assert!(engine.is_loaded(&id));
    let child = root.add("c", NodeOptions::new()).unwrap();
    drop(root);
    child.complete(None).unwrap();
    assert!(engine.is_loaded(&id));
    drop(child);
    assert!(!engine.is_loaded(&id));
}

#[test]
fn a_subscription_is_not_a_handle_and_ends_after_the_drop() {
    let engine = memory(4, Exhausted::Error);
    let trace = engine.create(TraceOptions::new()).unwrap();
    let id = trace.id().to_owned();
    let mut sub = trace.subscribe().unwrap();
    trace.add("in", NodeOptions::new()).unwrap();
    trace.info("x");
    drop(trace);
    assert!(!engine.is_loaded(&id));
    let got = within(10, move || events_only(drain_blocking(&mut sub)));
    assert_eq!(
        kinds(&got),
        [EventKind::Init, EventKind::NodeStart, EventKind::LogAdded]
    );
}

#[test]
fn explicit_release_wins_over_remaining_handles() {
    let engine = memory(4, Exhausted::Error);
    let trace = engine.create(TraceOptions::new()).unwrap();
    let node = trace.add("in", NodeOptions::new()).unwrap();
    let other = trace.clone();
    trace.release().unwrap();
    assert!(matches!(other.root(), Err(Error::Released)));
    assert!(matches!(node.data(), Err(Error::Released)));
    assert!(matches!(other.release(), Err(Error::Released)));
    // Dropping the stale handles releases nothing else.
    let next = engine.create(TraceOptions::new()).unwrap();
    drop(other);
    drop(node);
    drop(trace);
    assert!(next.root().is_ok());
    assert_eq!(engine.stats().in_use, 1);
    assert_eq!(engine.stats().auto_released, 0);
}

#[test]
fn keep_loaded_stays_by_id_until_released() {
    let engine = memory(4, Exhausted::Error);
    let trace = engine
        .create(TraceOptions::new().keep_loaded(true))
        .unwrap();
    let id = trace.id().to_owned();
    trace.add("in", NodeOptions::new()).unwrap();
    drop(trace);
    assert!(engine.is_loaded(&id), "kept without handles");
    let again = engine.load(&id).unwrap();
    assert_eq!(again.all_nodes().unwrap().len(), 1);
    drop(again);
    assert!(engine.is_loaded(&id));
    engine.release(&id).unwrap();
    assert!(!engine.is_loaded(&id));
    assert_eq!(engine.stats().auto_released, 0);
}

#[test]
fn idle_keep_loaded_traces_are_reaped_but_never_under_a_handle() {
    let engine = Engine::builder()
        .capacity(4)
        .workers(1)
        .idle_timeout(Some(Duration::from_millis(60)))
        .memory()
        .build()
        .unwrap();
    let held = engine
        .create(TraceOptions::new().keep_loaded(true))
        .unwrap();
    let idle = engine
        .create(TraceOptions::new().keep_loaded(true))
        .unwrap();
    let (held_id, idle_id) = (held.id().to_owned(), idle.id().to_owned());
    let mut sub = idle.subscribe().unwrap();
    drop(idle);
    assert!(
        eventually(10, || !engine.is_loaded(&idle_id)),
        "the idle trace was reaped"
    );
    assert_eq!(engine.stats().idle_released, 1);
    // Its subscription ended after what was emitted.
    let got = events_only(drain_blocking(&mut sub));
    assert_eq!(kinds(&got), [EventKind::Init]);
    // The one with a handle stays, however long it is idle. (This sleep
    // proves an absence: five idle timeouts pass without a reap.)
    std::thread::sleep(Duration::from_millis(300));
    assert!(engine.is_loaded(&held_id));
    assert!(held.root().is_ok());
    drop(held);
    assert!(eventually(10, || !engine.is_loaded(&held_id)));
    assert_eq!(engine.stats().idle_released, 2);
}

#[test]
fn activity_keeps_an_idle_keeper_loaded() {
    let engine = Engine::builder()
        .capacity(4)
        .workers(1)
        .idle_timeout(Some(Duration::from_millis(150)))
        .memory()
        .build()
        .unwrap();
    let id = {
        let t = engine
            .create(TraceOptions::new().keep_loaded(true))
            .unwrap();
        t.add("in", NodeOptions::new()).unwrap();
        t.id().to_owned()
    };
    // Events every 30 ms (pacing) for 450 ms (three idle timeouts): still
    // loaded.
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(450) {
        engine.load(&id).unwrap().info("tick");
        std::thread::sleep(Duration::from_millis(30));
    }
    assert!(engine.is_loaded(&id));
    assert!(eventually(10, || !engine.is_loaded(&id)));
}

#[test]
fn reads_after_the_last_drop_see_storage_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::builder()
        .capacity(4)
        .workers(1)
        .local(dir.path())
        .build()
        .unwrap();
    let id = {
        let t = engine.create(TraceOptions::new()).unwrap();
        t.add("in", NodeOptions::new().label("root")).unwrap();
        for i in 0..50 {
            t.info(format!("line {i}"));
        }
        t.id().to_owned()
    }; // dropped: released, draining
    assert!(!engine.is_loaded(&id));
    assert!(engine.exists(&id).unwrap());
    assert!(engine.list_stored().unwrap().contains(&id));
    let t = engine.open(&id).unwrap();
    assert_eq!(t.logs(None).unwrap().len(), 50);
    assert_eq!(t.events(tracepool::Cursor::Seq(0)).unwrap().len(), 52);
}

#[test]
fn a_drop_never_blocks_a_full_pool_waiter_forever() {
    // A waiter on a full pool gets the slot freed by another thread's drop,
    // woken by it (its own wait would last far longer than the 10 s allowed).
    let engine = memory(1, Exhausted::Wait(Duration::from_secs(120)));
    let t = engine.create(TraceOptions::new()).unwrap();
    let e = engine.clone();
    let waiter =
        std::thread::spawn(move || e.create(TraceOptions::new()).map(|t| t.id().to_owned()));
    // The waiter is queued for a slot before the drop (else the drop would
    // free a slot nobody waits for).
    assert!(
        eventually(10, || engine.stats().waiting == 1),
        "the waiter never queued"
    );
    assert!(!waiter.is_finished(), "the waiter returned on a full pool");
    drop(t);
    let got = within(10, move || waiter.join().unwrap());
    assert!(got.is_ok(), "{got:?}");
    let d = engine.stats();
    assert_eq!((d.auto_released, d.waiting), (2, 0), "{d:?}");
}

/// A driver whose writes wait until its gate opens: while the gate is
/// closed no released slot can finish draining, so the test knows exactly
/// how many are draining.
#[derive(Debug, Default, Clone)]
struct GatedDriver {
    gate: Arc<(Mutex<bool>, Condvar)>,
}

impl GatedDriver {
    fn open(&self) {
        *self.gate.0.lock().unwrap() = true;
        self.gate.1.notify_all();
    }
}

impl tracepool::Driver for GatedDriver {
    fn name(&self) -> &'static str {
        "gated"
    }

    fn write(&self, _batch: &tracepool::WriteBatch<'_>) -> tracepool::Result<()> {
        let mut open = self.gate.0.lock().unwrap();
        while !*open {
            open = self.gate.1.wait(open).unwrap();
        }
        Ok(())
    }
}

/// Opens the gate when dropped, also when an assertion fails with it
/// closed (the engine is not left with a worker stuck in `write`).
struct OpenOnDrop(GatedDriver);

impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        self.0.open();
    }
}

/// A trace with a node: it owes the driver writes, so its release drains.
fn busy_trace(engine: &Engine) -> Trace {
    let t = engine.create(TraceOptions::new()).unwrap();
    t.add("x", NodeOptions::new()).unwrap();
    t
}

/// `(in_use, draining, free)`.
fn gauges(engine: &Engine) -> (usize, usize, usize) {
    let s = engine.stats();
    assert_eq!(s.capacity, 8, "{s:?}");
    (s.in_use, s.draining, s.free)
}

#[test]
fn pool_gauges_add_up_in_every_snapshot() {
    // `free` is derived as `capacity - in_use - draining`, so their sum says
    // nothing: the gauges are checked against what the test knows, the
    // traces it holds (in use) and the released ones whose writes the gated
    // driver holds back (draining).
    let driver = GatedDriver::default();
    let engine = Engine::builder()
        .capacity(8)
        .workers(1)
        .on_exhausted(Exhausted::Wait(Duration::from_secs(5)))
        .driver(driver.clone())
        .build()
        .unwrap();
    // Declared after the engine: dropped (the gate opened) before it.
    let _open_at_exit = OpenOnDrop(driver.clone());
    assert_eq!(gauges(&engine), (0, 0, 8));

    // Quiescent, the gate closed.
    let a = busy_trace(&engine);
    let b = busy_trace(&engine);
    let c = busy_trace(&engine);
    assert_eq!(gauges(&engine), (3, 0, 5), "three traces held");
    let a2 = a.clone();
    drop(a);
    assert_eq!(gauges(&engine), (3, 0, 5), "a clone keeps its trace in use");
    drop(b);
    assert_eq!(gauges(&engine), (2, 1, 5), "a released trace drains");
    drop(a2);
    assert_eq!(
        gauges(&engine),
        (1, 2, 5),
        "the last handle of a released it"
    );
    let s = engine.stats();
    assert_eq!(
        (s.peak_in_use, s.auto_released, s.waiting),
        (3, 2, 0),
        "{s:?}"
    );
    driver.open();
    engine.flush_blocking().unwrap();
    assert_eq!(gauges(&engine), (1, 0, 7), "drained slots are free again");

    // Churn: two threads create and drop one trace at a time while the test
    // holds two. Checked in every snapshot: what no construction makes true.
    const CHURNERS: usize = 2;
    let d = busy_trace(&engine);
    let held = 2;
    let stop = Arc::new(AtomicBool::new(false));
    let made = Arc::new(AtomicUsize::new(0));
    let churn: Vec<_> = (0..CHURNERS)
        .map(|_| {
            let (e, stop, made) = (engine.clone(), stop.clone(), made.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let t = busy_trace(&e);
                    made.fetch_add(1, Ordering::Relaxed);
                    drop(t);
                }
            })
        })
        .collect();
    let mut peak = 3;
    // At least 300 ms and 200 churned traces; no time limit is asserted
    // (the bound below only ends a test whose churn is stuck).
    let until = Instant::now() + Duration::from_millis(300);
    let stuck = Instant::now() + Duration::from_secs(120);
    while Instant::now() < until || made.load(Ordering::Relaxed) < 200 {
        assert!(Instant::now() < stuck, "the churn stopped making progress");
        let s = engine.stats();
        assert_eq!(s.capacity, 8, "{s:?}");
        // The held traces are in use; each churner has at most one more.
        assert!((held..=held + CHURNERS).contains(&s.in_use), "{s:?}");
        // Not implied by `free` (which saturates): the counted slots fit.
        assert!(s.in_use + s.draining <= s.capacity, "{s:?}");
        assert_eq!(s.free, s.capacity - s.in_use - s.draining, "{s:?}");
        assert!(s.waiting <= CHURNERS, "{s:?}");
        // The peak never falls, and never exceeds what could be held.
        assert!(
            (peak..=held + CHURNERS).contains(&s.peak_in_use),
            "peak {peak} before: {s:?}"
        );
        peak = s.peak_in_use;
    }
    stop.store(true, Ordering::Relaxed);
    for t in churn {
        t.join().unwrap();
    }
    assert_eq!(gauges(&engine).0, held, "the churners hold nothing");
    drop((c, d));
    assert_eq!(gauges(&engine).0, 0);
    engine.flush_blocking().unwrap();
    let s = engine.stats();
    assert_eq!((s.in_use, s.draining, s.free), (0, 0, 8), "{s:?}");
    // Every trace was released by its last drop, once.
    let made = made.load(Ordering::Relaxed) as u64;
    assert_eq!(s.auto_released, 2 + made + 2, "{s:?}");
}
