//! Reference catalogue §8.2 (trace_lifecycle_test.go), ported to fixed
//! semantics: release is synchronous and safe while other threads write,
//! a second release is `NotLoaded`, stale handles give `Released`, finished
//! traces refuse mutations with `TraceFinished`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use tracepool::{
    Error, EventKind, Level, NodeOptions, NodeStatus, ParallelInput, SpaceOptions, TraceOptions,
    TraceStatus,
};

/// Polls `f` (for at most 10 s) until it holds.
fn wait_until(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::yield_now();
    }
}

/// How long a writer keeps going before the test gives up on the release.
const WRITER_DEADLINE: Duration = Duration::from_secs(20);

#[test]
fn release_while_writing() {
    let engine = engine(4, 2);
    let trace = engine.create(TraceOptions::new()).unwrap();
    trace.add("root", NodeOptions::new()).unwrap();
    // Writers that have written at least once.
    let writing = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..20)
        .map(|i| {
            let t = trace.clone();
            let writing = writing.clone();
            std::thread::spawn(move || {
                let deadline = Instant::now() + WRITER_DEADLINE;
                // Writes until the release: returns how many writes succeeded.
                for n in 0usize.. {
                    t.info(format!("writer {i} tick"));
                    // A Result method tells us whether the trace is still there.
                    match t.set_metadata("tick", i) {
                        Ok(()) if n == 0 => {
                            writing.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(()) => {}
                        Err(Error::Released) => return n,
                        Err(e) => panic!("unexpected error {e:?}"),
                    }
                    assert!(
                        Instant::now() < deadline,
                        "writer {i} never saw the release"
                    );
                }
                unreachable!()
            })
        })
        .collect();
    // Released while every writer writes.
    wait_until("every writer to write", || {
        writing.load(Ordering::Relaxed) == 20
    });
    let id = trace.id().to_owned();
    within(5, move || engine.release(&id)).unwrap();
    for h in handles {
        let writes = h.join().unwrap();
        assert!(writes > 0, "a writer ended before it wrote");
    }
    assert!(matches!(trace.set_metadata("k", 1), Err(Error::Released)));
}

#[test]
fn release_during_space_ops() {
    let engine = engine(4, 2);
    let trace = engine.create(TraceOptions::new()).unwrap();
    let space = trace.create_space(SpaceOptions::new().label("S")).unwrap();
    let writing = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..10)
        .map(|i| {
            let t = trace.clone();
            let sid = space.id.clone();
            let writing = writing.clone();
            std::thread::spawn(move || {
                let key = format!("key_{i}");
                let deadline = Instant::now() + WRITER_DEADLINE;
                // Until the release (the only way out).
                for n in 0usize.. {
                    match t.set_space_value(&sid, &key, i) {
                        Ok(()) => match t.get_space_value(&sid, &key) {
                            // Only this thread writes this key.
                            Ok(v) => assert_eq!(v, Some(json!(i))),
                            Err(Error::Released) => return,
                            Err(e) => panic!("unexpected error {e:?}"),
                        },
                        Err(Error::Released) => return,
                        Err(e) => panic!("unexpected error {e:?}"),
                    }
                    if n == 0 {
                        writing.fetch_add(1, Ordering::Relaxed);
                    }
                    assert!(
                        Instant::now() < deadline,
                        "writer {i} never saw the release"
                    );
                }
            })
        })
        .collect();
    wait_until("every writer to write", || {
        writing.load(Ordering::Relaxed) == 10
    });
    trace.release().unwrap();
    for h in handles {
        h.join().unwrap();
    }
    assert!(!trace.has_space(&space.id));
}

#[test]
fn release_after_mark_complete_then_operations_are_refused() {
    let engine = engine(4, 1);
    let trace = engine.create(TraceOptions::new()).unwrap();
    let root = trace.add("root", NodeOptions::new()).unwrap();
    trace.mark_complete().unwrap();
    assert!(trace.is_complete());
    assert_eq!(trace.status(), TraceStatus::Completed);
    trace.release().unwrap();
    trace.info("after"); // no panic, nothing happens
    assert!(matches!(trace.set_output(json!(1)), Err(Error::Released)));
    assert!(matches!(
        trace.add("x", NodeOptions::new()),
        Err(Error::Released)
    ));
    assert!(matches!(root.complete(None), Err(Error::Released)));
    // The status it ended with is still reported.
    assert_eq!(trace.status(), TraceStatus::Completed);
    assert!(
        !trace.is_complete(),
        "bool methods give false when released"
    );
}

#[test]
fn concurrent_release_and_mark_cancelled_finish_quickly() {
    for _ in 0..50 {
        let engine = engine(4, 2);
        let trace = engine.create(TraceOptions::new()).unwrap();
        trace.add("root", NodeOptions::new()).unwrap();
        let id = trace.id().to_owned();
        let (r1, r2) = within(5, {
            let engine = engine.clone();
            move || {
                std::thread::scope(|s| {
                    let a = s.spawn(|| engine.mark_cancelled(&id, "test cancel"));
                    let b = s.spawn(|| engine.release(&id));
                    (a.join().unwrap(), b.join().unwrap())
                })
            }
        });
        r2.unwrap();
        match r1 {
            Ok(()) => {}
            // The release won: the trace is gone.
            Err(Error::NotLoaded) | Err(Error::Released) => {}
            Err(e) => panic!("unexpected error {e:?}"),
        }
        assert_eq!(engine.stats().in_use, 0);
    }
}

#[test]
fn operations_after_release() {
    let engine = engine(4, 1);
    let trace = engine.create(TraceOptions::new()).unwrap();
    trace.add("root", NodeOptions::new()).unwrap();
    trace.release().unwrap();
    trace.info("i").debug("d").error("e").warn("w");
    trace.log(Level::Info, "x", json!({"a": 1}));
    assert!(matches!(trace.root(), Err(Error::Released)));
    assert!(matches!(trace.current_nodes(), Err(Error::Released)));
    assert!(!trace.is_complete());
    assert!(matches!(
        trace.events(tracepool::Cursor::Seq(0)),
        Err(Error::Released)
    ));
    assert!(matches!(trace.subscribe(), Err(Error::Released)));
}

#[test]
fn second_release_is_not_loaded_and_stale_handle_release_is_released() {
    let engine = engine(4, 1);
    let trace = engine.create(TraceOptions::new()).unwrap();
    let id = trace.id().to_owned();
    engine.release(&id).unwrap();
    assert!(matches!(engine.release(&id), Err(Error::NotLoaded)));
    assert!(matches!(trace.release(), Err(Error::Released)));

    let t2 = engine.create(TraceOptions::new()).unwrap();
    t2.release().unwrap();
    assert!(matches!(t2.release(), Err(Error::Released)));
    assert!(matches!(engine.release(t2.id()), Err(Error::NotLoaded)));
    if on_redis() {
        // The slots drain (each lease goes with its trace's last batch).
        engine.flush_blocking().unwrap();
    }
    assert_eq!(engine.stats().in_use, 0);
    assert_eq!(engine.stats().free, 4);
}

#[test]
fn release_emits_no_event_and_hands_everything_to_the_driver() {
    let (engine, driver) = counting_engine(4, 1);
    let trace = engine.create(TraceOptions::new()).unwrap();
    let mut sub = trace.subscribe().unwrap();
    trace.add("root", NodeOptions::new()).unwrap();
    trace.info("x");
    let before = history(&trace).len();
    assert_eq!(before, 3);
    trace.release().unwrap();
    let got = events_only(drain_blocking(&mut sub));
    assert_eq!(got.len(), 3, "no event for the release itself");
    // The slot drains on its worker; flush waits for it.
    engine.flush_blocking().unwrap();
    let st = engine.stats();
    assert_eq!(st.events_emitted, 3);
    assert_eq!(st.events_persisted, 3);
    assert_eq!(driver.events.load(std::sync::atomic::Ordering::Relaxed), 3);
    assert_eq!((st.events_dropped, st.draining, st.in_use), (0, 0, 0));
}

/// The engine's own view: slots, events and its worker threads. (Threads
/// and tasks as a user sees them: `tests/tasks_steady.rs`.)
#[test]
fn rapid_create_release_loop_returns_every_slot_and_keeps_the_workers() {
    let engine = engine(4, 2);
    assert_eq!(engine.stats().live_tasks, 2);
    for i in 0..100 {
        let trace = engine.create(TraceOptions::new()).unwrap();
        trace.add("x", NodeOptions::new()).unwrap();
        trace.info(format!("iteration {i}"));
        trace.mark_complete().unwrap();
        let id = trace.id().to_owned();
        engine.release(&id).unwrap();
        if on_redis() {
            // Stored: removed from storage.
            engine.remove(&id).unwrap();
        } else {
            assert!(matches!(engine.remove(&id), Err(Error::NotFound)));
        }
    }
    let st = engine.stats();
    assert_eq!(st.live_tasks, 2);
    assert_eq!(st.in_use, 0);
    assert_eq!(st.free, 4);
    assert_eq!(st.events_emitted, 100 * 4);
}

#[test]
fn concurrent_all_pattern() {
    let engine = engine(4, 2);
    let trace = engine.create(TraceOptions::new()).unwrap();
    trace.add("root", NodeOptions::new()).unwrap();
    let space = trace.create_space(SpaceOptions::new()).unwrap();
    let t = trace.clone();
    let writing = Arc::new(AtomicUsize::new(0));
    within(30, move || {
        std::thread::scope(|s| {
            for i in 0..10 {
                let t = t.clone();
                let sid = space.id.clone();
                let writing = writing.clone();
                s.spawn(move || {
                    let deadline = Instant::now() + WRITER_DEADLINE;
                    // Writes until the trace is finished or released.
                    for j in 0usize.. {
                        t.info(format!("child {i} {j}"));
                        // 20 keys per child (overwritten): within the bounds.
                        let key = format!("child_{i}_{}", j % 20);
                        match t.set_space_value(&sid, &key, j) {
                            Ok(()) if j == 0 => {
                                writing.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(()) => {}
                            Err(Error::TraceFinished) | Err(Error::Released) => return,
                            Err(e) => panic!("unexpected {e:?}"),
                        }
                        assert!(Instant::now() < deadline, "child {i} never saw the end");
                    }
                });
            }
            // Completed and released while every child writes.
            wait_until("every child to write", || {
                writing.load(Ordering::Relaxed) == 10
            });
            t.mark_complete().unwrap();
            t.release().unwrap();
        });
    });
    assert_eq!(engine.stats().in_use, 0);
}

#[test]
fn mutations_after_mark_complete_are_trace_finished() {
    let engine = engine(4, 1);
    let trace = engine.create(TraceOptions::new()).unwrap();
    let root = trace.add("root", NodeOptions::new()).unwrap();
    let space = trace.create_space(SpaceOptions::new()).unwrap();
    trace.set_space_value(&space.id, "k", 1).unwrap();
    trace.mark_complete().unwrap();
    let n_events = history(&trace).len();
    let logs_dropped = engine.stats().logs_dropped;

    let fin = |r: tracepool::Result<()>| {
        assert!(matches!(r, Err(Error::TraceFinished)), "got {r:?}");
    };
    fin(trace.add("x", NodeOptions::new()).map(drop));
    fin(trace
        .parallel(vec![ParallelInput::new("a", NodeOptions::new())])
        .map(drop));
    fin(trace.set_output(json!(1)));
    fin(trace.set_metadata("k", 1));
    fin(trace.complete(None));
    fin(trace.fail("x"));
    fin(trace.create_space(SpaceOptions::new()).map(drop));
    fin(trace.delete_space(&space.id));
    fin(trace.set_space_value(&space.id, "k", 2));
    fin(trace.delete_space_value(&space.id, "k"));
    fin(trace.clear_space_values(&space.id));
    fin(root.add("x", NodeOptions::new()).map(drop));
    fin(root
        .parallel(vec![ParallelInput::new("a", NodeOptions::new())])
        .map(drop));
    fin(root.join(&[&root], "x", NodeOptions::new()).map(drop));
    fin(root.set_output(json!(1)));
    fin(root.set_metadata("k", 1));
    fin(root.set_status(NodeStatus::Skipped));
    fin(root.complete(None));
    fin(root.fail("x"));
    // Chainable logs are dropped and counted.
    trace.info("a").warn("b");
    root.info("c");
    engine.flush_blocking().unwrap();
    assert_eq!(engine.stats().logs_dropped, logs_dropped + 3);

    // Reads still work, and nothing was emitted.
    assert_eq!(history(&trace).len(), n_events);
    assert_eq!(
        trace.get_space_value(&space.id, "k").unwrap(),
        Some(json!(1))
    );
    assert_eq!(trace.root().unwrap().unwrap().status, NodeStatus::Running);
    // mark_complete again: no second `complete`.
    trace.mark_complete().unwrap();
    trace.mark_cancelled("late").unwrap();
    let ev = history(&trace);
    assert_eq!(count(&ev, EventKind::Complete), 1);
    assert_eq!(ev.len(), n_events);
    assert_eq!(trace.status(), TraceStatus::Completed);
}

#[test]
fn mark_complete_emits_one_complete_and_leaves_nodes_running() {
    let engine = engine(4, 1);
    let trace = engine.create(TraceOptions::new()).unwrap();
    assert!(!trace.is_complete());
    trace.add("root", NodeOptions::new()).unwrap();
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| trace.mark_complete().unwrap());
        }
    });
    assert!(trace.is_complete());
    let ev = history(&trace);
    assert_eq!(count(&ev, EventKind::Complete), 1);
    let last = ev.last().unwrap();
    assert_eq!(last.kind, EventKind::Complete);
    let d = last.data();
    assert_eq!(d["status"], "completed");
    assert_eq!(d["trace_id"], trace.id());
    assert!(d["total_duration"].as_i64().unwrap() >= 0);
    assert_eq!(last.node_id(), "");
    assert_eq!(trace.root().unwrap().unwrap().status, NodeStatus::Running);
    assert_eq!(trace.status(), TraceStatus::Completed);
}

#[test]
fn mark_cancelled_cancels_unfinished_nodes_once() {
    let engine = engine(4, 1);
    let trace = engine.create(TraceOptions::new()).unwrap();
    let _root = trace.add("root", NodeOptions::new()).unwrap();
    let br = trace
        .parallel(vec![
            ParallelInput::new("a", NodeOptions::new()),
            ParallelInput::new("b", NodeOptions::new()),
            ParallelInput::new("c", NodeOptions::new()),
        ])
        .unwrap();
    br[0].complete(None).unwrap();
    br[1].fail("boom").unwrap();
    let side = br[0].add("side", NodeOptions::new()).unwrap();
    let before = history(&trace).len();

    let id = trace.id().to_owned();
    engine.mark_cancelled(&id, "client went away").unwrap();
    engine.mark_cancelled(&id, "again").unwrap(); // finished: nothing
    trace.mark_complete().unwrap(); // finished: nothing

    let ev = history(&trace);
    let new = &ev[before..];
    // root was auto-completed by parallel; a completed, b failed: only c and side.
    let cancelled: Vec<&str> = new
        .iter()
        .filter(|e| e.kind == EventKind::NodeFailed)
        .map(|e| e.node_id())
        .collect();
    let mut expect = vec![br[2].id(), side.id()];
    expect.sort();
    let mut got = cancelled.clone();
    got.sort();
    assert_eq!(got, expect);
    for e in new.iter().filter(|e| e.kind == EventKind::NodeFailed) {
        let d = e.data();
        assert_eq!(d["status"], "cancelled");
        assert_eq!(d["error"], "client went away");
    }
    assert_eq!(new.len(), 3, "two node_failed + one complete");
    let last = new.last().unwrap();
    assert_eq!(last.kind, EventKind::Complete);
    assert_eq!(last.data()["status"], "cancelled");
    assert_eq!(count(&ev, EventKind::Complete), 1);
    assert_one_terminal_max(&ev);

    assert_eq!(trace.status(), TraceStatus::Cancelled);
    assert!(trace.is_complete());
    let st = |id: &str| trace.node(id).unwrap().unwrap().status;
    assert_eq!(st(br[0].id()), NodeStatus::Completed);
    assert_eq!(st(br[1].id()), NodeStatus::Failed);
    assert_eq!(st(br[2].id()), NodeStatus::Cancelled);
    assert_eq!(st(side.id()), NodeStatus::Cancelled);
    assert!(trace.node(side.id()).unwrap().unwrap().end_time > 0);
    assert!(matches!(
        trace.add("x", NodeOptions::new()),
        Err(Error::TraceFinished)
    ));
    trace.release().unwrap();
    assert!(matches!(
        engine.mark_cancelled(&id, "x"),
        Err(Error::NotLoaded)
    ));
    assert_eq!(trace.status(), TraceStatus::Cancelled);
}

#[test]
fn mark_cancelled_without_nodes() {
    let engine = engine(2, 1);
    let trace = engine.create(TraceOptions::new()).unwrap();
    trace.mark_cancelled("nothing to do").unwrap();
    let ev = history(&trace);
    assert_eq!(kinds(&ev), [EventKind::Init, EventKind::Complete]);
    assert_eq!(ev[1].data()["status"], "cancelled");
    assert_eq!(ev[1].data()["total_duration"], 0);
}
