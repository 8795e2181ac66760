//! Reference catalogue §8.8 (trace_autocomplete_test.go), ported with exact
//! event assertions.

mod common;

use common::*;
use serde_json::json;
use tracepool::{EventKind, NodeOptions, NodeStatus, ParallelInput, TraceOptions};

fn status(trace: &tracepool::Trace, id: &str) -> NodeStatus {
    trace.node(id).unwrap().expect("node exists").status
}

#[test]
fn auto_complete_parent_default() {
    let engine = engine(2, 1);
    let trace = engine.create(TraceOptions::new()).unwrap();
    let s1 = trace.add("s1", NodeOptions::new().label("Step 1")).unwrap();
    let cur = trace.current_nodes().unwrap();
    assert_eq!(cur.len(), 1);
    assert_eq!(cur[0].status, NodeStatus::Running);
    let s2 = trace.add("s2", NodeOptions::new().label("Step 2")).unwrap();
    assert_eq!(status(&trace, s1.id()), NodeStatus::Completed);
    let cur = trace.current_nodes().unwrap();
    assert_eq!(cur.len(), 1);
    assert_eq!(cur[0].id, s2.id());
    assert_eq!(cur[0].status, NodeStatus::Running);
}

#[test]
fn auto_complete_parent_disabled() {
    let engine = engine(2, 1);
    let trace = engine.create(TraceOptions::new()).unwrap();
    let s1 = trace.add("s1", NodeOptions::new()).unwrap();
    let s2 = trace
        .add("s2", NodeOptions::new().auto_complete_parent(false))
        .unwrap();
    assert_eq!(status(&trace, s1.id()), NodeStatus::Running);
    assert_eq!(status(&trace, s2.id()), NodeStatus::Running);
    assert_eq!(count(&history(&trace), EventKind::NodeComplete), 0);
}

#[test]
fn auto_complete_parent_parallel() {
    let engine = engine(2, 1);
    let trace = engine.create(TraceOptions::new()).unwrap();
    let root = trace.add("root", NodeOptions::new()).unwrap();
    let br = trace
        .parallel(
            (0..3)
                .map(|i| ParallelInput::new(json!(i), NodeOptions::new()))
                .collect(),
        )
        .unwrap();
    assert_eq!(status(&trace, root.id()), NodeStatus::Completed);
    for b in &br {
        assert_eq!(status(&trace, b.id()), NodeStatus::Running);
    }
    let n = history(&trace).len();
    let merge = trace.add("merge", NodeOptions::new()).unwrap();
    for b in &br {
        assert_eq!(status(&trace, b.id()), NodeStatus::Completed);
    }
    assert_eq!(status(&trace, merge.id()), NodeStatus::Running);
    // Three node_complete in current-node order, then one node_start with three parents.
    let ev = history(&trace);
    let new = &ev[n..];
    assert_eq!(
        kinds(new),
        [
            EventKind::NodeComplete,
            EventKind::NodeComplete,
            EventKind::NodeComplete,
            EventKind::NodeStart
        ]
    );
    for (e, b) in new.iter().zip(&br) {
        assert_eq!(e.node_id(), b.id());
    }
    assert_eq!(
        new[3].data()["node"]["parent_ids"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

#[test]
fn auto_complete_parent_concurrent() {
    let engine = engine(2, 2);
    let trace = engine.create(TraceOptions::new()).unwrap();
    trace.add("root", NodeOptions::new()).unwrap();
    let br = trace
        .parallel(
            (0..3)
                .map(|i| ParallelInput::new(json!(i), NodeOptions::new()))
                .collect(),
        )
        .unwrap();
    // The three complete at the same moment.
    let start = std::sync::Barrier::new(br.len());
    std::thread::scope(|s| {
        for b in &br {
            let start = &start;
            s.spawn(move || {
                start.wait();
                b.complete(Some(json!({"done": true}))).unwrap();
            });
        }
    });
    for b in &br {
        assert_eq!(status(&trace, b.id()), NodeStatus::Completed);
    }
    let n = history(&trace).len();
    let merge = trace.add("merge", NodeOptions::new()).unwrap();
    let md = merge.data().unwrap();
    assert_eq!(md.status, NodeStatus::Running);
    assert_eq!(md.parent_ids.len(), 3);
    // Already completed branches are not completed again.
    assert_eq!(kinds(&history(&trace)[n..]), [EventKind::NodeStart]);
    assert_one_terminal_max(&history(&trace));
}

#[test]
fn auto_complete_parent_with_failed_node() {
    let engine = engine(2, 1);
    let trace = engine.create(TraceOptions::new()).unwrap();
    let s1 = trace.add("s1", NodeOptions::new()).unwrap();
    s1.fail("boom").unwrap();
    assert_eq!(status(&trace, s1.id()), NodeStatus::Failed);
    let s2 = trace.add("s2", NodeOptions::new()).unwrap();
    assert_eq!(status(&trace, s1.id()), NodeStatus::Failed);
    assert_eq!(status(&trace, s2.id()), NodeStatus::Running);
    let ev = history(&trace);
    assert_eq!(count(&ev, EventKind::NodeComplete), 0);
    assert_eq!(count(&ev, EventKind::NodeFailed), 1);
}

#[test]
fn auto_complete_parent_with_completed_node() {
    let engine = engine(2, 1);
    let trace = engine.create(TraceOptions::new()).unwrap();
    let s1 = trace.add("s1", NodeOptions::new()).unwrap();
    s1.complete(Some(json!({"result": "manual"}))).unwrap();
    let before = trace.node(s1.id()).unwrap().unwrap();
    assert_eq!(before.status, NodeStatus::Completed);
    assert_eq!(before.output, Some(json!({"result": "manual"})));
    let s2 = trace.add("s2", NodeOptions::new()).unwrap();
    let after = trace.node(s1.id()).unwrap().unwrap();
    // Untouched by the auto-complete (only linked to its new child).
    assert_eq!(after.status, before.status);
    assert_eq!(after.output, before.output);
    assert_eq!(after.end_time, before.end_time);
    assert_eq!(after.children, [s2.id()]);
    assert_eq!(status(&trace, s2.id()), NodeStatus::Running);
    assert_eq!(count(&history(&trace), EventKind::NodeComplete), 1);
}

#[test]
fn auto_complete_parent_events() {
    let engine = engine(2, 1);
    let trace = engine.create(TraceOptions::new()).unwrap();
    let mut sub = trace.subscribe().unwrap();
    let s1 = trace.add("s1", NodeOptions::new().label("Step 1")).unwrap();
    let s2 = trace.add("s2", NodeOptions::new().label("Step 2")).unwrap();
    trace.mark_complete().unwrap();
    let got = events_only(drain_blocking(&mut sub));
    assert_eq!(
        kinds(&got),
        [
            EventKind::Init,
            EventKind::NodeStart,
            EventKind::NodeComplete,
            EventKind::NodeStart,
            EventKind::Complete
        ]
    );
    assert_eq!(got[1].data()["node"]["id"], s1.id());
    assert_eq!(got[2].node_id(), s1.id());
    let d = got[2].data();
    assert_eq!(d["node_id"], s1.id());
    assert_eq!(d["status"], "success");
    assert_eq!(got[2].timestamp, d["end_time"].as_i64().unwrap());
    assert_eq!(got[3].data()["node"]["label"], "Step 2");
    assert_eq!(got[3].node_id(), s2.id());
}

#[test]
fn auto_complete_parent_sequential_chain() {
    let engine = engine(2, 1);
    let trace = engine.create(TraceOptions::new()).unwrap();
    let mut ids = Vec::new();
    for i in 0..10 {
        let n = trace
            .add(json!(i), NodeOptions::new().label(format!("Step {i}")))
            .unwrap();
        ids.push(n.id().to_owned());
        for (j, id) in ids.iter().enumerate() {
            let want = if j < i {
                NodeStatus::Completed
            } else {
                NodeStatus::Running
            };
            assert_eq!(status(&trace, id), want, "after add {i}, node {j}");
        }
    }
    let all = trace.all_nodes().unwrap();
    assert_eq!(all.len(), 10);
    assert_eq!(
        all.iter()
            .filter(|n| n.status == NodeStatus::Completed)
            .count(),
        9
    );
    assert_eq!(
        all.iter()
            .filter(|n| n.status == NodeStatus::Running)
            .count(),
        1
    );
    assert_eq!(all.iter().map(|n| n.id.clone()).collect::<Vec<_>>(), ids);
}
