//! Reference catalogue §8.1 (trace_basic_test.go), ported: creation, custom
//! ids, exists/remove, list, open/load on the in-memory driver.

mod common;

use common::*;
use serde_json::json;
use tracepool::{Error, EventKind, NodeOptions, TraceOptions, TraceStatus};

#[test]
fn new_trace_has_id_is_loaded_and_gets_a_root_on_first_add() {
    let engine = engine(4, 1);
    let trace = engine.create(TraceOptions::new()).unwrap();
    assert!(!trace.id().is_empty());
    assert_eq!(
        trace.id().len(),
        20,
        "generated ids are YYYYMMDD + 12 digits"
    );
    assert!(trace.id().bytes().all(|b| b.is_ascii_digit()));
    assert!(engine.is_loaded(trace.id()));
    assert_eq!(trace.status(), TraceStatus::Pending);
    assert!(trace.root().unwrap().is_none());
    assert!(trace.current_nodes().unwrap().is_empty());

    let n = trace
        .add(
            "test input",
            NodeOptions::new()
                .label("First Node")
                .node_type("test")
                .icon("test"),
        )
        .unwrap();
    let root = trace.root().unwrap().expect("root after add");
    assert_eq!(root.id, n.id());
    assert_eq!(root.label, "First Node");
    assert_eq!(root.node_type, "test");
    assert_eq!(root.icon, "test");
    assert_eq!(root.input, Some(json!("test input")));
    assert!(root.parent_ids.is_empty());
    assert_eq!(n.id().len(), 12);
    assert!(
        n.id()
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
    );
    assert_eq!(trace.status(), TraceStatus::Running);

    // init then node_start, seq 1 and 2.
    let ev = history(&trace);
    assert_eq!(kinds(&ev), [EventKind::Init, EventKind::NodeStart]);
    assert_contiguous_from(&ev, 1);
    assert_eq!(ev[0].data(), json!({ "trace_id": trace.id() }));
    assert_eq!(ev[0].node_id(), "");
    assert_eq!(ev[0].space_id(), "");
    assert_eq!(ev[1].node_id(), n.id());
    assert!(ev.iter().all(|e| e.trace_id() == trace.id()));
}

#[test]
fn custom_id_and_options_are_kept() {
    let engine = engine(4, 1);
    let id = tracepool::gen_trace_id();
    let trace = engine
        .create(
            TraceOptions::new()
                .id(id.clone())
                .created_by("test@example.com")
                .team_id("team-001")
                .tenant_id("tenant-001")
                .metadata("test", "value"),
        )
        .unwrap();
    assert_eq!(trace.id(), id);
    let info = engine.info(&id).unwrap();
    assert_eq!(info.id, id);
    assert_eq!(info.created_by.as_deref(), Some("test@example.com"));
    assert_eq!(info.team_id.as_deref(), Some("team-001"));
    assert_eq!(info.tenant_id.as_deref(), Some("tenant-001"));
    assert_eq!(info.metadata.get("test"), Some(&json!("value")));
    assert_eq!(info.driver, driver_name());
    assert!(!info.archived);
    assert_eq!(trace.trace_info().unwrap(), info);

    // The same id again while loaded.
    assert!(matches!(
        engine.create(TraceOptions::new().id(id.clone())),
        Err(Error::AlreadyLoaded)
    ));
    // Ids with every allowed character class.
    let t2 = engine
        .create(TraceOptions::new().id("Abc_def-123"))
        .unwrap();
    assert_eq!(t2.id(), "Abc_def-123");
    let long = "x".repeat(64);
    let t3 = engine.create(TraceOptions::new().id(long.clone())).unwrap();
    assert_eq!(t3.id(), long);
}

#[test]
fn exists_and_remove() {
    let engine = engine(4, 1);
    let trace = engine.create(TraceOptions::new()).unwrap();
    let id = trace.id().to_owned();
    assert!(engine.exists(&id).unwrap());
    engine.remove(&id).unwrap();
    assert!(!engine.exists(&id).unwrap());
    assert!(!engine.is_loaded(&id));
    // Nothing left: neither loaded nor stored.
    assert!(matches!(engine.remove(&id), Err(Error::NotFound)));
    assert!(matches!(engine.info(&id), Err(Error::NotFound)));
    assert!(matches!(trace.root(), Err(Error::Released)));
    assert_eq!(engine.stats().in_use, 0);
}

#[test]
fn list_is_sorted_and_tracks_loaded_traces() {
    let engine = engine(8, 1);
    assert!(engine.list().is_empty());
    // Kept loaded by id (the reference's way), not by handles.
    let ids: Vec<String> = (0..3)
        .map(|_| {
            engine
                .create(TraceOptions::new().keep_loaded(true))
                .unwrap()
                .id()
                .to_owned()
        })
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(engine.list(), sorted);
    engine.release(&ids[1]).unwrap();
    let mut rest = vec![ids[0].clone(), ids[2].clone()];
    rest.sort();
    assert_eq!(engine.list(), rest);
}

#[test]
fn open_and_load_on_the_memory_driver() {
    let engine = engine(4, 1);
    let trace = engine.create(TraceOptions::new()).unwrap();
    trace.add("in", NodeOptions::new().label("A")).unwrap();
    let id = trace.id().to_owned();

    let opened = engine.open(&id).unwrap();
    assert_eq!(opened.id(), id);
    assert_eq!(opened.root().unwrap().unwrap().label, "A");
    let loaded = engine.load(&id).unwrap();
    loaded.add("more", NodeOptions::new().label("B")).unwrap();
    // All handles see the same trace.
    assert_eq!(trace.all_nodes().unwrap().len(), 2);
    assert_eq!(opened.all_nodes().unwrap().len(), 2);

    let unknown = tracepool::gen_trace_id();
    assert!(matches!(engine.open(&unknown), Err(Error::NotFound)));
    assert!(matches!(engine.load(&unknown), Err(Error::NotLoaded)));
    assert!(!engine.is_loaded(&unknown));
    assert!(!engine.exists(&unknown).unwrap());

    engine.release(&id).unwrap();
    if on_redis() {
        // Released to Redis: stored, and opened again whole.
        let again = engine.open(&id).unwrap();
        assert_eq!(again.all_nodes().unwrap().len(), 2);
        again.release().unwrap();
    } else {
        // Released from the memory driver: gone.
        assert!(matches!(engine.open(&id), Err(Error::NotFound)));
    }
    assert!(matches!(engine.load(&id), Err(Error::NotLoaded)));
    assert!(matches!(opened.root(), Err(Error::Released)));
    assert!(matches!(loaded.root(), Err(Error::Released)));
}

#[test]
fn concurrent_creation_gives_distinct_loaded_traces() {
    let engine = engine(16, 2);
    let traces: Vec<tracepool::Trace> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..10)
            .map(|_| {
                let e = engine.clone();
                s.spawn(move || e.create(TraceOptions::new()).unwrap())
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ids: Vec<String> = traces.iter().map(|t| t.id().to_owned()).collect();
    let uniq: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(uniq.len(), 10);
    for id in &ids {
        assert!(engine.is_loaded(id));
    }
    assert_eq!(engine.list().len(), 10);
    assert_eq!(engine.stats().in_use, 10);
    drop(traces);
    assert_eq!(engine.stats().in_use, 0, "the last handles released them");
}

#[test]
fn shutdown_makes_every_call_fail_with_shut_down() {
    let engine = engine(4, 1);
    let trace = engine.create(TraceOptions::new()).unwrap();
    let node = trace.add("in", NodeOptions::new()).unwrap();
    let mut sub = trace.subscribe().unwrap();
    engine.shutdown().unwrap();
    assert!(matches!(
        engine.create(TraceOptions::new()),
        Err(Error::ShutDown)
    ));
    assert!(matches!(
        trace.add("x", NodeOptions::new()),
        Err(Error::ShutDown)
    ));
    assert!(matches!(node.complete(None), Err(Error::ShutDown)));
    assert!(matches!(engine.load(trace.id()), Err(Error::ShutDown)));
    // The subscription got what was emitted before and then ended.
    let got = events_only(drain_blocking(&mut sub));
    assert_eq!(kinds(&got), [EventKind::Init, EventKind::NodeStart]);
    engine.shutdown().unwrap(); // idempotent
    assert_eq!(engine.stats().live_tasks, 0);
}
