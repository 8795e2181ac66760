//! Handles keep their engine alive: an engine runs while any `Engine` or any
//! handle of it (live or stale, of any occupant of any slot) exists, and
//! shuts down when the last one goes. Handles own no reference count of
//! their own (their slot holds one for all of them), so this checks that the
//! slot's reference is taken and given back at the right moments.
//!
//! One test in this file: it counts the process's engine threads.

use std::time::{Duration, Instant};

use tracepool::{Engine, Error, NodeOptions, TraceOptions};

/// Threads of engines in this process (workers and tickers).
fn engine_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| {
                    std::fs::read_to_string(e.path().join("comm"))
                        .is_ok_and(|c| c.starts_with("tracepool-"))
                })
                .count()
        })
        .unwrap_or(0)
}

/// Polls until `f` holds of the engine thread count, or `secs` pass
/// (threads name themselves once started, and exit a moment after their
/// engine shut down).
fn threads_within(secs: u64, f: impl Fn(usize) -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f(engine_threads()) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

fn no_engine_threads_within(secs: u64) -> bool {
    threads_within(secs, |n| n == 0)
}

fn engine(capacity: usize) -> Engine {
    Engine::builder()
        .capacity(capacity)
        .workers(1)
        .memory()
        .build()
        .unwrap()
}

#[test]
fn handles_keep_their_engine_alive_until_the_last_one_goes() {
    if !std::path::Path::new("/proc/self/task").exists() {
        eprintln!("no /proc: skipped");
        return;
    }
    assert_eq!(engine_threads(), 0);

    // A node outlives its trace handle and the engine.
    let e = engine(4);
    assert!(threads_within(10, |n| n >= 2), "a worker and the ticker");
    let t = e.create(TraceOptions::new()).unwrap();
    let n = t.add(1, NodeOptions::new().label("outlives")).unwrap();
    drop(t);
    drop(e);
    // The node keeps the trace loaded and the engine running.
    n.info("still here");
    let child = n.add(2, NodeOptions::new()).unwrap();
    assert_eq!(child.data().unwrap().parent_ids, vec![n.id().to_owned()]);
    drop(n);
    assert!(engine_threads() >= 2, "the child still holds the engine");
    child.complete(None).unwrap();
    drop(child);
    assert!(
        no_engine_threads_within(10),
        "the engine shut down with its last handle"
    );

    // Stale handles of an earlier occupant of a reused slot.
    let e = engine(1);
    assert!(threads_within(10, |n| n >= 2));
    let t1 = e.create(TraceOptions::new()).unwrap();
    let n1 = t1.add(1, NodeOptions::new()).unwrap();
    let n1_clone = n1.clone();
    t1.release().unwrap();
    drop(t1);
    // The only slot is reused: the stale handles refer to it.
    let t2 = e.create(TraceOptions::new()).unwrap();
    let n2 = t2.add(2, NodeOptions::new()).unwrap();
    drop(e);
    drop(t2);
    n2.info("the new occupant is alive");
    assert!(n2.data().is_ok());
    // Dropping the last live handle releases the new occupant; the stale
    // ones still keep the engine running (their calls get `Released`, not
    // `ShutDown`).
    drop(n2);
    assert!(matches!(
        n1.add(3, NodeOptions::new()),
        Err(Error::Released)
    ));
    drop(n1);
    assert!(matches!(n1_clone.data(), Err(Error::Released)));
    assert!(engine_threads() >= 2, "a stale handle holds the engine");
    drop(n1_clone);
    assert!(
        no_engine_threads_within(10),
        "the engine shut down with its last (stale) handle"
    );

    // An engine dropped with no handle shuts down at once.
    let e = engine(2);
    let t = e.create(TraceOptions::new()).unwrap();
    drop(t);
    drop(e);
    assert!(no_engine_threads_within(10));
}
