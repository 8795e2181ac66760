//! Reference catalogue §8.4 (trace_node_test.go), plus the fixed tree
//! semantics: join links the join node under its parents, parallel after
//! parallel hangs under all current nodes, node-handle operations emit events
//! and never move the cursor, one terminal transition per node.

mod common;

use common::*;
use serde_json::json;
use tracepool::{Error, EventKind, Level, NodeOptions, NodeStatus, ParallelInput, TraceOptions};

fn pi(label: &'static str) -> ParallelInput {
    ParallelInput::new(label, NodeOptions::new().label(label))
}

#[test]
fn node_operations() {
    let engine = engine(2, 1);
    let trace = engine.create(TraceOptions::new()).unwrap();
    let n1 = trace
        .add(
            "input",
            NodeOptions::new()
                .label("Input Processing")
                .icon("input")
                .description("desc"),
        )
        .unwrap();
    trace.info("i").debug("d").warn("w");
    trace.complete(Some(json!({"result": "success"}))).unwrap();
    let n2 = trace
        .add("processing", NodeOptions::new().label("Processing"))
        .unwrap();
    trace.set_metadata("key1", "value1").unwrap();
    trace.complete(Some(json!({"status": "done"}))).unwrap();
    let cur = trace.current_nodes().unwrap();
    assert_eq!(cur.len(), 1);
    assert_eq!(cur[0].id, n2.id());
    assert_eq!(cur[0].status, NodeStatus::Completed);
    assert_eq!(cur[0].metadata["key1"], "value1");
    assert_eq!(cur[0].output, Some(json!({"status": "done"})));
    let d1 = n1.data().unwrap();
    assert_eq!(d1.status, NodeStatus::Completed);
    assert_eq!(d1.description, "desc");
    assert_eq!(d1.output, Some(json!({"result": "success"})));
    assert!(d1.end_time >= d1.start_time && d1.end_time > 0);
    // n1 was completed explicitly: the add did not complete it again.
    let ev = history(&trace);
    assert_eq!(
        kinds(&ev),
        [
            EventKind::Init,
            EventKind::NodeStart,
            EventKind::LogAdded,
            EventKind::LogAdded,
            EventKind::LogAdded,
            EventKind::NodeComplete,
            EventKind::NodeStart,
            EventKind::NodeUpdated,
            EventKind::NodeComplete,
        ]
    );
    assert_eq!(ev[5].data()["output"], json!({"result": "success"}));
    assert_eq!(ev[5].data()["status"], "success");
    assert_eq!(ev[7].data()["node"]["metadata"]["key1"], "value1");
    // Trace-level complete on an already completed current node: no event.
    trace.complete(None).unwrap();
    assert_eq!(history(&trace).len(), ev.len());
}

#[test]
fn parallel_operations_then_merge() {
    let engine = engine(2, 2);
    let trace = engine.create(TraceOptions::new()).unwrap();
    let root = trace.add("root", NodeOptions::new()).unwrap();
    let br = trace.parallel(vec![pi("A"), pi("B"), pi("C")]).unwrap();
    assert_eq!(br.len(), 3);
    for b in &br {
        assert_eq!(b.data().unwrap().parent_ids, [root.id()]);
    }
    assert_eq!(root.data().unwrap().children.len(), 3);
    // The branches log, then complete, at the same moment.
    let start = std::sync::Barrier::new(br.len());
    std::thread::scope(|s| {
        for (i, b) in br.iter().enumerate() {
            let start = &start;
            s.spawn(move || {
                b.info("working");
                start.wait();
                b.complete(Some(json!({"worker": i, "status": "ok"})))
                    .unwrap();
            });
        }
    });
    let merge = trace.add("merge", NodeOptions::new()).unwrap();
    trace.complete(Some(json!({"merged": true}))).unwrap();
    let md = merge.data().unwrap();
    assert_eq!(
        md.parent_ids,
        br.iter().map(|b| b.id().to_owned()).collect::<Vec<_>>()
    );
    for b in &br {
        assert_eq!(b.data().unwrap().children, [merge.id()]);
    }
    let ev = history(&trace);
    assert_one_terminal_max(&ev);
    // One node_start with `nodes` for the parallel, node_id "".
    let par: Vec<_> = ev
        .iter()
        .filter(|e| e.kind == EventKind::NodeStart && e.node_id().is_empty())
        .collect();
    assert_eq!(par.len(), 1);
    assert_eq!(
        started_ids(par[0]),
        br.iter().map(|b| b.id().to_owned()).collect::<Vec<_>>()
    );
    assert_eq!(par[0].data()["nodes"][1]["label"], "B");
    // All nodes once, root first.
    let all = trace.all_nodes().unwrap();
    assert_eq!(all.len(), 5);
    assert_eq!(all[0].id, root.id());
    assert_eq!(all[4].id, merge.id());
}

#[test]
fn node_fail() {
    let engine = engine(2, 1);
    let trace = engine.create(TraceOptions::new()).unwrap();
    trace.add("x", NodeOptions::new()).unwrap();
    trace.fail("test error").unwrap();
    let cur = trace.current_nodes().unwrap();
    assert_eq!(cur[0].status, NodeStatus::Failed);
    let ev = history(&trace);
    assert_eq!(
        kinds(&ev),
        [
            EventKind::Init,
            EventKind::NodeStart,
            EventKind::LogAdded,
            EventKind::NodeFailed,
        ]
    );
    let log = ev[2].data();
    assert_eq!(log["Level"], "error");
    assert_eq!(log["Message"], "Node failed: test error");
    let f = ev[3].data();
    assert_eq!(f["status"], "failed");
    assert_eq!(f["error"], "test error");
    // Already failed: trace-level fail/complete skip it, node-level refuse.
    trace.fail("again").unwrap();
    trace.complete(None).unwrap();
    assert_eq!(history(&trace).len(), 4);
    let node = trace.node_handle_by_id(&cur[0].id).unwrap();
    assert!(matches!(node.complete(None), Err(Error::NodeFinished)));
    assert!(matches!(node.fail("x"), Err(Error::NodeFinished)));
    assert!(matches!(
        node.set_status(NodeStatus::Running),
        Err(Error::NodeFinished)
    ));
    assert_eq!(node.data().unwrap().status, NodeStatus::Failed);
}

#[test]
fn chaining_before_root_then_add() {
    let engine = engine(2, 1);
    let trace = engine.create(TraceOptions::new()).unwrap();
    let n = trace
        .info("Step 1")
        .debug("d")
        .warn("w")
        .add("next", NodeOptions::new())
        .unwrap();
    assert_eq!(trace.root().unwrap().unwrap().id, n.id());
    assert!(trace.logs(None).unwrap().is_empty());
    engine.flush_blocking().unwrap();
    assert_eq!(engine.stats().logs_dropped, 3);
    // No root: current-node operations say so.
    let t2 = engine.create(TraceOptions::new()).unwrap();
    assert!(matches!(t2.set_output(json!(1)), Err(Error::NoRoot)));
    assert!(matches!(t2.complete(None), Err(Error::NoRoot)));
    assert!(matches!(t2.parallel(vec![pi("a")]), Err(Error::NoRoot)));
    assert!(matches!(t2.parallel(vec![]), Err(Error::EmptyParallel)));
}

#[test]
fn complete_with_output() {
    let engine = engine(2, 1);
    let trace = engine.create(TraceOptions::new()).unwrap();
    trace.add("x", NodeOptions::new()).unwrap();
    trace
        .complete(Some(json!({"result": "success", "count": 42})))
        .unwrap();
    let cur = trace.current_nodes().unwrap();
    assert_eq!(
        cur[0].output,
        Some(json!({"result": "success", "count": 42}))
    );
    assert_eq!(cur[0].output.as_ref().unwrap()["count"].as_i64(), Some(42));
}

#[test]
fn join_links_the_join_node_under_its_parents() {
    let engine = engine(2, 1);
    let trace = engine.create(TraceOptions::new()).unwrap();
    let root = trace.add("in", NodeOptions::new().label("Root")).unwrap();
    let a = root.add("a", NodeOptions::new().label("A")).unwrap();
    let b = root.add("b", NodeOptions::new().label("B")).unwrap();
    let j = root
        .join(&[&a, &b, &a], "merge", NodeOptions::new().label("Join"))
        .unwrap();
    let jd = j.data().unwrap();
    assert_eq!(jd.parent_ids, [a.id(), b.id()], "duplicates ignored");
    assert_eq!(a.data().unwrap().children, [j.id()]);
    assert_eq!(b.data().unwrap().children, [j.id()]);
    // Reachable from the root, once.
    let all = trace.all_nodes().unwrap();
    assert_eq!(
        all.iter().map(|n| n.label.as_str()).collect::<Vec<_>>(),
        ["Root", "A", "B", "Join"]
    );
    // The join emits node_start; the cursor did not move.
    let ev = history(&trace);
    assert_eq!(ev.last().unwrap().kind, EventKind::NodeStart);
    assert_eq!(ev.last().unwrap().node_id(), j.id());
    assert_eq!(
        ev.last().unwrap().data()["node"]["parent_ids"],
        json!([a.id(), b.id()])
    );
    assert_eq!(trace.current_nodes().unwrap()[0].id, root.id());
    assert!(matches!(
        root.join(&[], "x", NodeOptions::new()),
        Err(Error::EmptyJoin)
    ));
    // A node of another trace is not a parent here.
    let other = engine.create(TraceOptions::new()).unwrap();
    let foreign = other.add("f", NodeOptions::new()).unwrap();
    assert!(matches!(
        root.join(&[&a, &foreign], "x", NodeOptions::new()),
        Err(Error::NodeNotFound)
    ));
    assert_eq!(other.all_nodes().unwrap().len(), 1);
    assert_eq!(trace.all_nodes().unwrap().len(), 4);
}

#[test]
fn parallel_after_parallel_hangs_under_all_current_nodes() {
    let engine = engine(2, 1);
    let trace = engine.create(TraceOptions::new()).unwrap();
    trace.add("root", NodeOptions::new()).unwrap();
    let first = trace.parallel(vec![pi("A"), pi("B"), pi("C")]).unwrap();
    let second = trace.parallel(vec![pi("X"), pi("Y")]).unwrap();
    let first_ids: Vec<String> = first.iter().map(|n| n.id().to_owned()).collect();
    let second_ids: Vec<String> = second.iter().map(|n| n.id().to_owned()).collect();
    for n in &second {
        assert_eq!(n.data().unwrap().parent_ids, first_ids);
    }
    for n in &first {
        let d = n.data().unwrap();
        assert_eq!(d.children, second_ids);
        assert_eq!(d.status, NodeStatus::Completed, "auto-completed");
    }
    let cur: Vec<String> = trace
        .current_nodes()
        .unwrap()
        .into_iter()
        .map(|n| n.id)
        .collect();
    assert_eq!(cur, second_ids);
    let all = trace.all_nodes().unwrap();
    assert_eq!(all.len(), 6, "each node once");
    // Logs go to every current node.
    trace.info("both");
    assert_eq!(trace.logs(None).unwrap().len(), 2);
    // Then an add joins both.
    let m = trace.add("m", NodeOptions::new()).unwrap();
    assert_eq!(m.data().unwrap().parent_ids, second_ids);
    let ev = history(&trace);
    assert_one_terminal_max(&ev);
    let starts = start_counts(&ev);
    assert_eq!(starts.len(), 7);
    assert!(starts.values().all(|&c| c == 1));
}

#[test]
fn parallel_opting_out_of_auto_complete_keeps_parents_running() {
    let engine = engine(2, 1);
    let trace = engine.create(TraceOptions::new()).unwrap();
    let root = trace.add("root", NodeOptions::new()).unwrap();
    trace
        .parallel(vec![
            ParallelInput::new("a", NodeOptions::new().auto_complete_parent(false)),
            ParallelInput::new("b", NodeOptions::new().auto_complete_parent(false)),
        ])
        .unwrap();
    assert_eq!(root.data().unwrap().status, NodeStatus::Running);
    // One input that auto-completes is enough.
    let t2 = engine.create(TraceOptions::new()).unwrap();
    let r2 = t2.add("root", NodeOptions::new()).unwrap();
    t2.parallel(vec![
        ParallelInput::new("a", NodeOptions::new().auto_complete_parent(false)),
        ParallelInput::new("b", NodeOptions::new()),
    ])
    .unwrap();
    assert_eq!(r2.data().unwrap().status, NodeStatus::Completed);
}

#[test]
fn node_handle_operations_emit_events_and_keep_the_cursor() {
    let engine = engine(2, 1);
    let trace = engine.create(TraceOptions::new()).unwrap();
    let root = trace.add("root", NodeOptions::new()).unwrap();
    let n0 = history(&trace).len();
    let c = root.add("c", NodeOptions::new().label("C")).unwrap();
    let kids = root.parallel(vec![pi("K1"), pi("K2")]).unwrap();
    c.info("i").debug("d").warn("w").error("e");
    c.log(Level::Warn, "with data", json!({"k": 1}));
    c.set_output(json!({"o": 1})).unwrap();
    c.set_metadata("m", 2).unwrap();
    kids[0].set_status(NodeStatus::Skipped).unwrap();
    kids[1].fail("nope").unwrap();
    c.complete(None).unwrap();
    assert!(matches!(root.parallel(vec![]), Err(Error::EmptyParallel)));

    let ev = history(&trace);
    assert_eq!(
        kinds(&ev[n0..]),
        [
            EventKind::NodeStart,   // c
            EventKind::NodeStart,   // K1, K2
            EventKind::LogAdded,    // i
            EventKind::LogAdded,    // d
            EventKind::LogAdded,    // w
            EventKind::LogAdded,    // e
            EventKind::LogAdded,    // with data
            EventKind::NodeUpdated, // output
            EventKind::NodeUpdated, // metadata
            EventKind::NodeUpdated, // skipped
            EventKind::LogAdded,    // Node failed: nope
            EventKind::NodeFailed,
            EventKind::NodeComplete,
        ]
    );
    let e = &ev[n0 + 6];
    assert_eq!(e.data()["Data"], json!({"k": 1}));
    assert_eq!(e.data()["Level"], "warn");
    assert_eq!(e.data()["NodeID"], c.id());
    assert_eq!(ev[n0 + 2].data()["Data"], json!(null));
    assert_eq!(ev[n0 + 7].data()["node"]["output"], json!({"o": 1}));
    assert_eq!(ev[n0 + 9].data()["node"]["status"], "skipped");
    assert_eq!(ev[n0 + 12].data()["output"], json!({"o": 1}));
    // The cursor never moved.
    let cur = trace.current_nodes().unwrap();
    assert_eq!(cur.len(), 1);
    assert_eq!(cur[0].id, root.id());
    // A skipped node is terminal.
    assert!(kids[0].data().unwrap().end_time > 0);
    assert!(matches!(kids[0].complete(None), Err(Error::NodeFinished)));
    assert_eq!(c.data().unwrap().output, Some(json!({"o": 1})));
}

#[test]
fn add_with_auto_complete_disabled_keeps_old_current_running() {
    let engine = engine(2, 1);
    let trace = engine.create(TraceOptions::new()).unwrap();
    let a = trace.add("a", NodeOptions::new()).unwrap();
    let b = trace
        .add("b", NodeOptions::new().auto_complete_parent(false))
        .unwrap();
    assert_eq!(a.data().unwrap().status, NodeStatus::Running);
    assert_eq!(b.data().unwrap().parent_ids, [a.id()]);
    // a is no longer current: a later add does not complete it.
    let c = trace.add("c", NodeOptions::new()).unwrap();
    assert_eq!(a.data().unwrap().status, NodeStatus::Running);
    assert_eq!(b.data().unwrap().status, NodeStatus::Completed);
    assert_eq!(c.data().unwrap().parent_ids, [b.id()]);
}
