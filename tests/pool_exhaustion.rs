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

#[test]
fn wait_policy_succeeds_when_a_slot_is_released_in_time() {
    let engine = engine(1, Exhausted::Wait(Duration::from_secs(5)));
    let a = engine.create(TraceOptions::new()).unwrap();
    a.add("x", NodeOptions::new()).unwrap();
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        a.release().unwrap();
    });
    let t0 = Instant::now();
    let b = engine.create(TraceOptions::new()).unwrap();
    let waited = t0.elapsed();
    releaser.join().unwrap();
    assert!(waited >= Duration::from_millis(80), "waited {waited:?}");
    assert!(waited < Duration::from_secs(5), "waited {waited:?}");
    assert!(b.root().unwrap().is_none());
    assert_eq!(engine.stats().in_use, 1);
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
    let engine = engine(2, Exhausted::Wait(Duration::from_secs(5)));
    let held: Vec<_> = (0..2)
        .map(|_| engine.create(TraceOptions::new()).unwrap())
        .collect();
    let waiters: Vec<_> = (0..2)
        .map(|_| {
            let e = engine.clone();
            std::thread::spawn(move || {
                let t = e.create(TraceOptions::new());
                (t, Instant::now())
            })
        })
        .collect();
    // Give the waiters time to block (best effort: what is asserted below
    // holds either way).
    std::thread::sleep(Duration::from_millis(50));
    let released_at = Instant::now();
    for t in held {
        t.release().unwrap();
    }
    let got: Vec<_> = waiters.into_iter().map(|w| w.join().unwrap()).collect();
    for (t, at) in &got {
        assert!(t.is_ok(), "{t:?}");
        assert!(
            *at >= released_at,
            "a waiter got a slot before one was released"
        );
    }
    assert_eq!(engine.stats().in_use, 2);
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
