//! The three exhaustion policies: `Error`, `Wait(d)` and `Grow`.

use std::time::{Duration, Instant};

use tracepool::{Engine, Error, Exhausted, NodeOptions, TraceOptions};

fn engine(capacity: usize, policy: Exhausted) -> Engine {
    Engine::builder()
        .capacity(capacity)
        .workers(1)
        .on_exhausted(policy)
        .memory()
        .build()
        .unwrap()
}

#[test]
fn error_policy_fails_at_once() {
    let engine = engine(2, Exhausted::Error);
    let a = engine.create(TraceOptions::new()).unwrap();
    let _b = engine.create(TraceOptions::new()).unwrap();
    let t0 = Instant::now();
    match engine.create(TraceOptions::new()) {
        Err(Error::PoolExhausted) => assert_eq!(engine.stats().capacity, 2),
        other => panic!("{other:?}"),
    }
    assert!(t0.elapsed() < Duration::from_millis(500));
    // A failed create leaves nothing behind.
    let st = engine.stats();
    assert_eq!((st.capacity, st.in_use, st.free, st.grown), (2, 2, 0, 0));
    assert_eq!(engine.list().len(), 2);
    // A custom id is not registered by a failed create either.
    assert!(matches!(
        engine.create(TraceOptions::new().id("custom")),
        Err(Error::PoolExhausted)
    ));
    assert!(!engine.is_loaded("custom"));
    a.release().unwrap();
    let c = engine.create(TraceOptions::new().id("custom")).unwrap();
    assert_eq!(c.id(), "custom");
}

/// Polls `engine.stats().waiting` until it is `n` (a bounded wait: the
/// callers announce themselves as they start waiting).
fn wait_for_waiters(engine: &Engine, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let waiting = engine.stats().waiting;
        if waiting == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{waiting} callers wait for a slot after 10 s, expected {n}"
        );
        std::thread::yield_now();
    }
}

#[test]
fn wait_policy_succeeds_when_a_slot_is_released_in_time() {
    let engine = engine(1, Exhausted::Wait(Duration::from_secs(5)));
    let a = engine.create(TraceOptions::new()).unwrap();
    a.add("x", NodeOptions::new()).unwrap();
    let e = engine.clone();
    let releaser = std::thread::spawn(move || {
        // Once the caller waits, keep it waiting a while (this sleep paces
        // the release; the waiting itself is observed), then release.
        wait_for_waiters(&e, 1);
        std::thread::sleep(Duration::from_millis(100));
        let released_at = Instant::now();
        a.release().unwrap();
        released_at
    });
    let t0 = Instant::now();
    let b = engine.create(TraceOptions::new()).unwrap();
    let (got_at, waited) = (Instant::now(), t0.elapsed());
    let released_at = releaser.join().unwrap();
    assert!(got_at >= released_at, "got a slot before one was released");
    // The caller was seen waiting before the 100 ms began.
    assert!(waited >= Duration::from_millis(100), "waited {waited:?}");
    assert!(waited < Duration::from_secs(5), "waited {waited:?}");
    assert!(b.root().unwrap().is_none());
    let st = engine.stats();
    assert_eq!((st.in_use, st.waiting), (1, 0), "{st:?}");
}

#[test]
fn wait_policy_fails_after_the_timeout() {
    let engine = engine(1, Exhausted::Wait(Duration::from_millis(100)));
    let _a = engine.create(TraceOptions::new()).unwrap();
    let t0 = Instant::now();
    let r = engine.create(TraceOptions::new());
    let waited = t0.elapsed();
    assert!(matches!(r, Err(Error::PoolExhausted)), "{r:?}");
    assert!(
        waited >= Duration::from_millis(100),
        "gave up after {waited:?}"
    );
    assert!(waited < Duration::from_secs(3), "gave up after {waited:?}");
    assert_eq!(engine.stats().in_use, 1);
}

#[test]
fn wait_policy_serves_several_waiters() {
    // Their own wait would last far longer than the test allows them: only
    // the releases can serve them in time.
    let engine = engine(2, Exhausted::Wait(Duration::from_secs(120)));
    let held: Vec<_> = (0..2)
        .map(|_| engine.create(TraceOptions::new()).unwrap())
        .collect();
    let (tx, rx) = std::sync::mpsc::channel();
    let waiters: Vec<_> = (0..2)
        .map(|_| {
            let (e, tx) = (engine.clone(), tx.clone());
            std::thread::spawn(move || {
                let t = e.create(TraceOptions::new());
                let _ = tx.send((t, Instant::now()));
            })
        })
        .collect();
    // Both callers really wait: they are queued for a slot and neither has
    // returned.
    wait_for_waiters(&engine, 2);
    assert!(
        waiters.iter().all(|w| !w.is_finished()),
        "a caller returned although every slot is taken"
    );
    let released_at = Instant::now();
    let ids: Vec<String> = held.iter().map(|t| t.id().to_owned()).collect();
    for t in held {
        t.release().unwrap();
    }
    let mut served = Vec::new();
    for _ in 0..2 {
        let (t, at) = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("a waiter was not woken by the releases");
        let t = t.unwrap_or_else(|e| panic!("a waiter failed: {e:?}"));
        assert!(
            at >= released_at,
            "a waiter got a slot before one was released"
        );
        served.push(t);
    }
    for w in waiters {
        w.join().unwrap();
    }
    assert_ne!(
        served[0].id(),
        served[1].id(),
        "each waiter has its own trace"
    );
    assert!(served.iter().all(|t| !ids.iter().any(|id| id == t.id())));
    let st = engine.stats();
    assert_eq!((st.in_use, st.waiting, st.free), (2, 0, 0), "{st:?}");
}

#[test]
fn grow_policy_adds_slots() {
    let engine = engine(2, Exhausted::Grow);
    let traces: Vec<_> = (0..5)
        .map(|_| engine.create(TraceOptions::new()).unwrap())
        .collect();
    let st = engine.stats();
    assert_eq!(st.in_use, 5);
    assert!(st.capacity >= 5, "{st:?}");
    assert!(st.grown > 0);
    assert_eq!(st.grown, st.capacity - 2);
    assert_eq!(st.free, st.capacity - 5);
    assert_eq!(st.peak_in_use, 5);
    // Every trace works and is distinct.
    for (i, t) in traces.iter().enumerate() {
        t.add(serde_json::json!(i), NodeOptions::new()).unwrap();
    }
    for (i, t) in traces.iter().enumerate() {
        assert_eq!(t.root().unwrap().unwrap().input, Some(serde_json::json!(i)));
        assert_eq!(t.all_nodes().unwrap().len(), 1);
    }
    for t in &traces {
        t.release().unwrap();
    }
    let st2 = engine.stats();
    assert_eq!(st2.in_use, 0);
    assert_eq!(st2.free, st2.capacity);
    assert_eq!(st2.capacity, st.capacity, "the pool does not shrink");
}

#[test]
fn grow_policy_under_concurrency() {
    let engine = engine(1, Exhausted::Grow);
    let traces: Vec<tracepool::Trace> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..16)
            .map(|_| {
                let e = &engine;
                s.spawn(move || {
                    let t = e.create(TraceOptions::new()).unwrap();
                    t.add("x", NodeOptions::new()).unwrap();
                    t
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ids: Vec<String> = traces.iter().map(|t| t.id().to_owned()).collect();
    let st = engine.stats();
    assert_eq!(st.in_use, 16);
    assert!(st.capacity >= 16);
    assert_eq!(st.grown, st.capacity - 1);
    for id in ids {
        assert_eq!(engine.load(&id).unwrap().all_nodes().unwrap().len(), 1);
    }
}

/// Slots released while the pool had room drain at their worker's next
/// tick; a caller that then waits for a slot must not wait for that tick
/// (here an hour): waiting wakes the workers of draining slots.
#[test]
fn wait_policy_hurries_slots_that_are_still_draining() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::builder()
        .capacity(8)
        .workers(1)
        .flush_interval(Duration::from_secs(3600))
        .on_exhausted(Exhausted::Wait(Duration::from_secs(20)))
        .local(dir.path())
        .build()
        .unwrap();
    // Released with plenty of room: nobody is woken, they stay draining.
    for _ in 0..2 {
        let t = engine.create(TraceOptions::new()).unwrap();
        t.info("to write");
        t.release().unwrap();
    }
    assert_eq!(engine.stats().draining, 2);
    let held: Vec<_> = (0..6)
        .map(|_| engine.create(TraceOptions::new()).unwrap())
        .collect();
    assert_eq!(engine.stats().free, 0);
    let t0 = Instant::now();
    let t = engine.create(TraceOptions::new()).unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "waited {:?} for a draining slot",
        t0.elapsed()
    );
    drop(held);
    drop(t);
    engine.flush_blocking().unwrap();
    assert_eq!(engine.list_stored().unwrap().len(), 9);
}
