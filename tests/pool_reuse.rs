//! Slot reuse hygiene (capacity 1): a reused slot shows nothing of its
//! previous trace, and stale Trace/Node/Subscription handles give `Released`
//! (or `false`, or nothing) without touching the new occupant.
//!
//! Values are `serde_json::Value`, so no public route can store an `Arc` in a
//! trace to observe its drop with a `Weak`; instead the second occupant is
//! checked to be empty in every respect.

mod common;

use common::*;
use serde_json::json;
use tracepool::{
    Cursor, Delivery, Error, EventKind, Level, NodeOptions, NodeStatus, ParallelInput,
    SpaceOptions, TraceOptions, TraceStatus,
};

#[test]
fn reused_slot_shows_nothing_of_the_previous_trace() {
    let engine = engine(1, 1);
    let t1 = engine
        .create(TraceOptions::new().created_by("first").metadata("k", "v"))
        .unwrap();
    let root = t1.add("in", NodeOptions::new().label("R")).unwrap();
    t1.parallel(vec![
        ParallelInput::new("a", NodeOptions::new()),
        ParallelInput::new("b", NodeOptions::new()),
    ])
    .unwrap();
    t1.info("hello");
    let sp = t1.create_space(SpaceOptions::new().label("S")).unwrap();
    t1.set_space_value(&sp.id, "big", json!("x".repeat(100_000)))
        .unwrap();
    let mut sub = t1.subscribe().unwrap();
    t1.mark_complete().unwrap();
    let id1 = t1.id().to_owned();
    let t1_events = history(&t1);
    t1.release().unwrap();
    assert_eq!(engine.stats().free, 1);

    let t2 = engine.create(TraceOptions::new()).unwrap();
    assert_ne!(t2.id(), id1);
    assert_eq!(engine.stats().in_use, 1);
    assert!(t2.root().unwrap().is_none());
    assert!(t2.all_nodes().unwrap().is_empty());
    assert!(t2.current_nodes().unwrap().is_empty());
    assert!(t2.logs(None).unwrap().is_empty());
    assert!(t2.spaces().unwrap().is_empty());
    assert!(!t2.has_space(&sp.id));
    assert!(t2.space_data(&sp.id).unwrap().is_none());
    assert!(t2.node(root.id()).unwrap().is_none());
    assert_eq!(t2.status(), TraceStatus::Pending);
    assert!(!t2.is_complete());
    let info = t2.trace_info().unwrap();
    assert_eq!(info.created_by, None);
    assert!(info.metadata.is_empty());
    assert_eq!(info.status, TraceStatus::Pending);
    let ev = history(&t2);
    assert_eq!(kinds(&ev), [EventKind::Init]);
    assert_eq!(ev[0].seq, 1);
    assert_eq!(ev[0].trace_id(), t2.id());
    // The subscription kept from the first occupant is still counted (the
    // reset neither dropped nor duplicated it) ...
    assert_eq!(engine.stats().subscribers, 1);
    // The new occupant works normally.
    let r2 = t2.add("x", NodeOptions::new()).unwrap();
    assert_eq!(t2.all_nodes().unwrap().len(), 1);
    assert_eq!(r2.data().unwrap().parent_ids, Vec::<String>::new());
    // ... and it delivers the first occupant's events only, then ends.
    assert_eq!(events_only(drain_blocking(&mut sub)), t1_events);
    drop(sub);
    assert_eq!(engine.stats().subscribers, 0);
    // And the first occupant's handles are all stale.
    assert!(matches!(root.data(), Err(Error::Released)));
    assert!(matches!(t1.all_nodes(), Err(Error::Released)));
    assert!(matches!(t1.logs(None), Err(Error::Released)));
    assert!(matches!(t1.spaces(), Err(Error::Released)));
    assert!(matches!(t1.events(Cursor::Seq(0)), Err(Error::Released)));
}

#[test]
fn stale_handles_do_not_touch_the_new_occupant() {
    let engine = engine(1, 1);
    let t1 = engine.create(TraceOptions::new()).unwrap();
    let r1 = t1.add("in", NodeOptions::new()).unwrap();
    let c1 = r1.add("child", NodeOptions::new()).unwrap();
    let s1 = t1.create_space(SpaceOptions::new()).unwrap();
    let mut old_sub = t1.subscribe().unwrap();
    let old_events = history(&t1);
    t1.release().unwrap();

    // New occupant of the same slot, with the same shape (node indices 0 and 1).
    let t2 = engine.create(TraceOptions::new()).unwrap();
    let r2 = t2.add("in2", NodeOptions::new()).unwrap();
    let c2 = r2.add("child2", NodeOptions::new()).unwrap();
    let s2 = t2.create_space(SpaceOptions::new()).unwrap();
    t2.set_space_value(&s2.id, "k", 1).unwrap();
    let before = history(&t2);
    let nodes_before = t2.all_nodes().unwrap();
    let logs_dropped = engine.stats().logs_dropped;

    let rel = |what: &str, r: tracepool::Result<()>| {
        assert!(matches!(r, Err(Error::Released)), "{what}: {r:?}");
    };
    // Trace handle: every mutating method, with the new occupant's ids too.
    rel("add", t1.add("x", NodeOptions::new()).map(drop));
    rel(
        "parallel",
        t1.parallel(vec![ParallelInput::new("x", NodeOptions::new())])
            .map(drop),
    );
    rel("set_output", t1.set_output(json!(1)));
    rel("set_metadata", t1.set_metadata("k", 1));
    rel("complete", t1.complete(Some(json!(1))));
    rel("fail", t1.fail("x"));
    rel("mark_complete", t1.mark_complete());
    rel("mark_cancelled", t1.mark_cancelled("x"));
    rel(
        "create_space",
        t1.create_space(SpaceOptions::new()).map(drop),
    );
    for sid in [&s1.id, &s2.id] {
        rel("delete_space", t1.delete_space(sid));
        rel("set_space_value", t1.set_space_value(sid, "k", 2));
        rel("delete_space_value", t1.delete_space_value(sid, "k"));
        rel("clear_space_values", t1.clear_space_values(sid));
        rel("get_space_value", t1.get_space_value(sid, "k").map(drop));
        rel("space_keys", t1.space_keys(sid).map(drop));
        rel("space", t1.space(sid).map(drop));
        rel("space_data", t1.space_data(sid).map(drop));
        assert!(!t1.has_space(sid));
        assert!(!t1.has_space_value(sid, "k"));
    }
    rel("subscribe", t1.subscribe().map(drop));
    rel(
        "subscribe_from",
        t1.subscribe_from(Cursor::Seq(1)).map(drop),
    );
    rel("release", t1.release());
    rel("root", t1.root().map(drop));
    rel("node", t1.node(r2.id()).map(drop));
    rel("node_handle_by_id", t1.node_handle_by_id(r2.id()).map(drop));
    rel("current_nodes", t1.current_nodes().map(drop));
    rel("trace_info", t1.trace_info().map(drop));
    assert!(!t1.is_complete());
    assert_eq!(t1.status(), TraceStatus::Running);
    t1.info("i").debug("d").warn("w").error("e");
    t1.log(Level::Info, "m", json!(1));

    // Node handles (same slot and node indices as r2/c2).
    for n in [&r1, &c1] {
        rel("node.add", n.add("x", NodeOptions::new()).map(drop));
        rel(
            "node.parallel",
            n.parallel(vec![ParallelInput::new("x", NodeOptions::new())])
                .map(drop),
        );
        rel(
            "node.join",
            n.join(&[&r1, &c1], "x", NodeOptions::new()).map(drop),
        );
        rel("node.set_output", n.set_output(json!(1)));
        rel("node.set_metadata", n.set_metadata("k", 1));
        rel("node.set_status", n.set_status(NodeStatus::Skipped));
        rel("node.complete", n.complete(None));
        rel("node.fail", n.fail("x"));
        rel("node.data", n.data().map(drop));
        n.info("i").debug("d").warn("w").error("e");
        n.log(Level::Warn, "m", json!(1));
    }
    // A live receiver with a stale parent does not link anything either.
    assert!(matches!(
        r2.join(&[&r1], "x", NodeOptions::new()),
        Err(Error::NodeNotFound)
    ));

    // The old subscription yields only the old trace's events, then ends.
    let got = events_only(drain_blocking(&mut old_sub));
    assert_eq!(got, old_events);
    assert!(old_sub.blocking_recv().is_none());

    // Nothing changed in the new occupant.
    assert_eq!(history(&t2), before);
    assert_eq!(t2.all_nodes().unwrap(), nodes_before);
    assert!(t2.logs(None).unwrap().is_empty());
    assert_eq!(t2.get_space_value(&s2.id, "k").unwrap(), Some(json!(1)));
    assert_eq!(c2.data().unwrap().status, NodeStatus::Running);
    assert!(!t2.is_complete());
    assert!(engine.is_loaded(t2.id()));
    // Chainable logs through stale handles were counted as dropped.
    assert_eq!(engine.stats().logs_dropped, logs_dropped + 5 + 2 * 5);
}

#[test]
fn stale_release_does_not_release_a_new_trace_with_the_same_id() {
    let engine = engine(1, 1);
    let old = engine.create(TraceOptions::new().id("same-id")).unwrap();
    old.release().unwrap();
    let new = engine.create(TraceOptions::new().id("same-id")).unwrap();
    new.add("x", NodeOptions::new()).unwrap();
    assert!(matches!(old.release(), Err(Error::Released)));
    assert!(matches!(
        old.add("y", NodeOptions::new()),
        Err(Error::Released)
    ));
    assert!(engine.is_loaded("same-id"));
    assert_eq!(
        engine.load("same-id").unwrap().all_nodes().unwrap().len(),
        1
    );
    assert_eq!(new.all_nodes().unwrap().len(), 1);
    // The engine-level release by id releases the current occupant.
    engine.release("same-id").unwrap();
    assert!(matches!(new.root(), Err(Error::Released)));
}

#[test]
fn subscription_made_before_release_ignores_the_next_occupant() {
    let engine = engine(1, 1);
    let t1 = engine.create(TraceOptions::new()).unwrap();
    t1.add("x", NodeOptions::new()).unwrap();
    let mut sub = t1.subscribe_from(Cursor::Seq(100)).unwrap(); // waits for seq 100
    t1.release().unwrap();
    let t2 = engine.create(TraceOptions::new()).unwrap();
    let r = t2.add("y", NodeOptions::new()).unwrap();
    for _ in 0..200 {
        r.info("new occupant");
    }
    assert!(sub.blocking_recv().is_none());
    match sub.try_recv() {
        Ok(None) => {}
        other => panic!("{other:?}"),
    }
    // Dropping the old subscription does not unsubscribe anyone from t2.
    let mut live = t2.subscribe_from(Cursor::Seq(203)).unwrap();
    drop(sub);
    r.info("after");
    match live.blocking_recv() {
        Some(Delivery::Event(e)) => assert_eq!(e.seq, 203),
        other => panic!("{other:?}"),
    }
}

#[test]
fn many_reuses_of_one_slot_start_fresh_each_time() {
    let engine = engine(1, 1);
    let mut stale = Vec::new();
    for i in 0..50 {
        let t = engine.create(TraceOptions::new()).unwrap();
        assert_eq!(kinds(&history(&t)), [EventKind::Init]);
        assert!(t.all_nodes().unwrap().is_empty());
        let n = t.add(json!(i), NodeOptions::new()).unwrap();
        for _ in 0..i {
            n.info("x");
        }
        assert_eq!(t.logs(None).unwrap().len(), i);
        t.release().unwrap();
        stale.push((t, n));
    }
    for (t, n) in &stale {
        assert!(matches!(t.root(), Err(Error::Released)));
        assert!(matches!(n.complete(None), Err(Error::Released)));
    }
    let st = engine.stats();
    assert_eq!(
        (st.capacity, st.in_use, st.free, st.peak_in_use),
        (1, 0, 1, 1)
    );
}
