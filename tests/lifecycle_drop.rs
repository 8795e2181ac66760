//! Handles that cannot leak a slot: dropping the last `Trace`/`Node` handle
//! releases the trace, `keep_loaded` opts out (and idle traces are reaped),
//! `load` returns a counted handle, a subscription is not a handle.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tracepool::{Engine, Error, EventKind, Exhausted, NodeOptions, TraceOptions};

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

#[test]
fn pool_gauges_add_up_in_every_snapshot() {
    let (engine, _driver) = counting_engine(8, 1);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churn: Vec<_> = (0..2)
        .map(|_| {
            let (e, stop) = (engine.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let t = e.create(TraceOptions::new()).unwrap();
                    t.add("x", NodeOptions::new()).unwrap();
                }
            })
        })
        .collect();
    let mut saw_draining = false;
    let until = Instant::now() + Duration::from_millis(300);
    while Instant::now() < until {
        let s = engine.stats();
        assert_eq!(s.free + s.in_use + s.draining, s.capacity, "{s:?}");
        saw_draining |= s.draining > 0;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for c in churn {
        c.join().unwrap();
    }
    assert!(saw_draining, "released slots drain on the worker");
    engine.flush_blocking().unwrap();
    let s = engine.stats();
    assert_eq!((s.in_use, s.draining, s.free), (0, 0, 8));
}
