//! Per-trace bounds: each one reached and reported. Bounded operations are
//! all-or-nothing; log text beyond `max_log_bytes` leaves memory (not
//! storage), counted; `open` restores a stored trace beyond the bounds and
//! applies them to later operations; the engine-wide write-behind bound
//! drops the emitting trace's oldest queued events, counted.

mod common;

use common::*;
use serde_json::json;
use tracepool::{
    Cursor, Engine, Error, EventKind, NodeOptions, ParallelInput, SpaceOptions, TraceOptions,
};

fn limit(r: tracepool::Result<impl std::fmt::Debug>) -> (&'static str, usize) {
    match r {
        Err(Error::LimitExceeded { what, limit }) => (what, limit),
        other => panic!("expected LimitExceeded, got {other:?}"),
    }
}

fn small() -> Engine {
    Engine::builder()
        .capacity(2)
        .workers(1)
        .max_nodes(5)
        .max_spaces(2)
        .max_space_entries(3)
        .max_subscribers(2)
        .memory()
        .build()
        .unwrap()
}

#[test]
fn nodes_are_bounded_and_a_parallel_that_does_not_fit_adds_nothing() {
    let engine = small();
    let t = engine.create(TraceOptions::new()).unwrap();
    let root = t.add("root", NodeOptions::new()).unwrap();
    t.parallel(vec![
        ParallelInput::new(1, NodeOptions::new()),
        ParallelInput::new(2, NodeOptions::new()),
    ])
    .unwrap();
    let before = history(&t).len();
    // 3 nodes; 3 more do not fit: nothing is added.
    let r = t.parallel(vec![
        ParallelInput::new(3, NodeOptions::new()),
        ParallelInput::new(4, NodeOptions::new()),
        ParallelInput::new(5, NodeOptions::new()),
    ]);
    assert_eq!(limit(r), ("nodes", 5));
    assert_eq!(t.all_nodes().unwrap().len(), 3);
    assert_eq!(history(&t).len(), before, "no event, no auto-completion");
    assert_eq!(t.current_nodes().unwrap().len(), 2);
    // Two more fit, one at a time, by every way of adding.
    let a = root.add("a", NodeOptions::new()).unwrap();
    let j = root.join(&[&a], "j", NodeOptions::new());
    assert!(j.is_ok());
    assert_eq!(limit(t.add("x", NodeOptions::new())), ("nodes", 5));
    assert_eq!(limit(root.add("x", NodeOptions::new())), ("nodes", 5));
    assert_eq!(
        limit(root.join(&[&a], "x", NodeOptions::new())),
        ("nodes", 5)
    );
    assert_eq!(t.all_nodes().unwrap().len(), 5);
}

#[test]
fn spaces_and_their_entries_are_bounded_and_overwrites_always_work() {
    let engine = small();
    let t = engine.create(TraceOptions::new()).unwrap();
    let s1 = t.create_space(SpaceOptions::new().label("a")).unwrap();
    t.create_space(SpaceOptions::new().label("b")).unwrap();
    assert_eq!(limit(t.create_space(SpaceOptions::new())), ("spaces", 2));
    for k in ["k1", "k2", "k3"] {
        t.set_space_value(&s1.id, k, 1).unwrap();
    }
    assert_eq!(
        limit(t.set_space_value(&s1.id, "k4", 1)),
        ("space_entries", 3)
    );
    // Overwriting an existing key at the bound succeeds.
    t.set_space_value(&s1.id, "k2", json!({"new": true}))
        .unwrap();
    assert_eq!(t.space_keys(&s1.id).unwrap(), ["k1", "k2", "k3"]);
    // Deleting makes room again.
    t.delete_space_value(&s1.id, "k1").unwrap();
    t.set_space_value(&s1.id, "k4", 4).unwrap();
    t.delete_space(&s1.id).unwrap();
    t.create_space(SpaceOptions::new()).unwrap();
}

#[test]
fn subscribers_are_bounded() {
    let engine = small();
    let t = engine.create(TraceOptions::new()).unwrap();
    let a = t.subscribe().unwrap();
    let _b = t.subscribe_from(Cursor::Seq(1)).unwrap();
    assert_eq!(limit(t.subscribe()), ("subscribers", 2));
    drop(a);
    t.subscribe().unwrap();
}

#[test]
fn log_text_leaves_memory_but_not_the_event_stream_or_storage() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::builder()
        .capacity(2)
        .workers(1)
        .max_log_bytes(16 * 1024)
        .history_limit(16)
        .local(dir.path())
        .build()
        .unwrap();
    let t = engine.create(TraceOptions::new()).unwrap();
    let root = t.add("root", NodeOptions::new()).unwrap();
    let line = "x".repeat(200);
    for i in 0..2_000 {
        root.log(tracepool::Level::Info, format!("{i} {line}"), json!(i));
    }
    // Only the newest lines are in memory, in order.
    let logs = t.logs(None).unwrap();
    assert!(logs.len() < 100, "{} lines in memory", logs.len());
    assert!(!logs.is_empty());
    let first: usize = logs[0].message.split(' ').next().unwrap().parse().unwrap();
    for (k, l) in logs.iter().enumerate() {
        assert!(l.message.starts_with(&format!("{} ", first + k)));
    }
    assert_eq!(first + logs.len(), 2_000);
    let id = t.id().to_owned();
    drop(root);
    drop(t);
    engine.flush_blocking().unwrap();
    let st = engine.stats();
    assert_eq!(st.logs_evicted as usize, first);
    // Every log_added event was emitted and persisted; every line is in storage.
    assert_eq!(st.events_emitted, 2 + 2_000);
    assert_eq!(st.events_persisted, st.events_emitted);
    let stored = engine.read_stored(&id).unwrap();
    assert_eq!(stored.logs.len(), 2_000);
    assert_eq!(
        stored
            .events
            .iter()
            .filter(|e| e.kind == EventKind::LogAdded)
            .count(),
        2_000
    );
    for (i, l) in stored.logs.iter().enumerate() {
        assert!(
            l.message.starts_with(&format!("{i} ")),
            "line {i}: {}",
            l.message
        );
    }
}

#[test]
fn open_restores_beyond_the_bounds_and_applies_them_afterwards() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let big = Engine::builder()
            .workers(1)
            .local(dir.path())
            .build()
            .unwrap();
        let t = big.create(TraceOptions::new()).unwrap();
        let root = t.add("root", NodeOptions::new()).unwrap();
        for i in 0..9 {
            root.add(i, NodeOptions::new()).unwrap();
        }
        let s = t.create_space(SpaceOptions::new()).unwrap();
        for k in 0..6 {
            t.set_space_value(&s.id, &format!("k{k}"), k).unwrap();
        }
        t.id().to_owned()
    };
    let engine = Engine::builder()
        .workers(1)
        .max_nodes(5)
        .max_space_entries(3)
        .local(dir.path())
        .build()
        .unwrap();
    let t = engine.open(&id).unwrap();
    assert_eq!(t.all_nodes().unwrap().len(), 10);
    let s = t.spaces().unwrap().remove(0);
    assert_eq!(t.space_keys(&s.id).unwrap().len(), 6);
    assert_eq!(limit(t.add("more", NodeOptions::new())), ("nodes", 5));
    assert_eq!(
        limit(t.set_space_value(&s.id, "new", 1)),
        ("space_entries", 3)
    );
    t.set_space_value(&s.id, "k0", "overwritten").unwrap();
}

#[test]
fn the_engine_wide_write_behind_bound_drops_the_oldest_queued_events() {
    // A driver that never finishes a write keeps everything queued.
    #[derive(Debug, Default)]
    struct Stuck;
    impl tracepool::Driver for Stuck {
        fn name(&self) -> &'static str {
            "stuck"
        }
        fn write(&self, _: &tracepool::WriteBatch<'_>) -> tracepool::Result<()> {
            Err(Error::Storage {
                location: "stuck".into(),
                message: "down".into(),
                source: None,
            })
        }
    }
    let engine = Engine::builder()
        .capacity(2)
        .workers(1)
        .pending_bytes_limit(256 * 1024)
        .write_queue_limit(1_000_000)
        .drain_timeout(std::time::Duration::from_millis(100))
        .driver(Stuck)
        .build()
        .unwrap();
    let t = engine.create(TraceOptions::new()).unwrap();
    let root = t.add("root", NodeOptions::new()).unwrap();
    let pad = "y".repeat(1000);
    for _ in 0..5_000 {
        root.info(&pad);
    }
    // The driver never takes a batch: flush reports it (and publishes the
    // counters).
    assert!(
        matches!(engine.flush_blocking(), Err(Error::Storage { .. })),
        "flush reports the failing driver"
    );
    let st = engine.stats();
    // About 5 MB were emitted; what stayed queued is within the bound (plus
    // one publishing step of 64 KiB).
    assert!(st.events_dropped > 4_000, "{st:?}");
    let queued_events = st.events_emitted - st.events_dropped;
    assert!(
        queued_events * 1_000 < 256 * 1024 + 64 * 1024 + 2_000,
        "{st:?}"
    );
}

#[test]
fn terminal_set_status_goes_through_complete_and_fail() {
    let engine = engine(2, 1);
    let t = engine.create(TraceOptions::new()).unwrap();
    let root = t.add("root", NodeOptions::new()).unwrap();
    let a = root.add("a", NodeOptions::new()).unwrap();
    let b = root.add("b", NodeOptions::new()).unwrap();
    let c = root.add("c", NodeOptions::new()).unwrap();
    let d = root.add("d", NodeOptions::new()).unwrap();
    a.set_status(tracepool::NodeStatus::Completed).unwrap();
    b.set_status(tracepool::NodeStatus::Failed).unwrap();
    c.set_status(tracepool::NodeStatus::Cancelled).unwrap();
    d.set_status(tracepool::NodeStatus::Pending).unwrap();
    for n in [&a, &b, &c] {
        let data = n.data().unwrap();
        assert!(data.end_time > 0, "end time set");
        assert!(matches!(n.complete(None), Err(Error::NodeFinished)));
        assert!(matches!(
            n.set_status(tracepool::NodeStatus::Completed),
            Err(Error::NodeFinished)
        ));
    }
    let events = history(&t);
    let of = |id: &str| -> Vec<EventKind> {
        events
            .iter()
            .filter(|e| e.node_id() == id && e.kind != EventKind::NodeStart)
            .map(|e| e.kind)
            .collect()
    };
    assert_eq!(of(a.id()), [EventKind::NodeComplete]);
    assert_eq!(of(b.id()), [EventKind::NodeFailed]);
    assert_eq!(of(c.id()), [EventKind::NodeFailed]);
    assert_eq!(of(d.id()), [EventKind::NodeUpdated]);
    let cancelled = events
        .iter()
        .find(|e| e.node_id() == c.id() && e.kind == EventKind::NodeFailed)
        .unwrap();
    assert_eq!(cancelled.data()["status"], "cancelled");
    assert_eq!(d.data().unwrap().end_time, 0);
}
