//! Reference catalogue §8.9 (trace_resource_test.go), the parts that do not
//! need storage: trace info, all nodes, node by id, logs, events, spaces.

mod common;

use common::*;
use serde_json::json;
use tracepool::{Error, EventKind, Level, NodeOptions, SpaceOptions, TraceOptions};

#[test]
fn trace_info() {
    let engine = engine(2, 1);
    let trace = engine
        .create(
            TraceOptions::new()
                .created_by("user@example.com")
                .team_id("team")
                .tenant_id("tenant")
                .metadata("test_key", "test_value"),
        )
        .unwrap();
    let info = trace.trace_info().unwrap();
    assert_eq!(info.id, trace.id());
    assert_eq!(info.driver, driver_name());
    assert_eq!(info.created_by.as_deref(), Some("user@example.com"));
    assert_eq!(info.team_id.as_deref(), Some("team"));
    assert_eq!(info.tenant_id.as_deref(), Some("tenant"));
    assert_eq!(info.metadata["test_key"], "test_value");
    assert_eq!(info.status, tracepool::TraceStatus::Pending);
    assert!(info.created_at > 0);
}

#[test]
fn all_nodes() {
    let engine = engine(2, 1);
    let trace = engine.create(TraceOptions::new()).unwrap();
    assert!(trace.all_nodes().unwrap().is_empty());
    let n1 = trace
        .add("1", NodeOptions::new().label("Node 1").icon("a"))
        .unwrap();
    let n2 = trace
        .add("2", NodeOptions::new().label("Node 2").icon("b"))
        .unwrap();
    let n3 = trace
        .add("3", NodeOptions::new().label("Node 3").icon("c"))
        .unwrap();
    n3.complete(None).unwrap();
    // n2 and n1 were auto-completed already.
    assert!(matches!(n2.complete(None), Err(Error::NodeFinished)));
    assert!(matches!(n1.complete(None), Err(Error::NodeFinished)));
    let all = trace.all_nodes().unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(
        all.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(),
        [n1.id(), n2.id(), n3.id()]
    );
    assert_eq!(
        all.iter().map(|n| n.label.as_str()).collect::<Vec<_>>(),
        ["Node 1", "Node 2", "Node 3"]
    );
}

#[test]
fn node_by_id() {
    let engine = engine(2, 1);
    let trace = engine.create(TraceOptions::new()).unwrap();
    let n = trace
        .add(
            "test input",
            NodeOptions::new().label("L").icon("I").description("D"),
        )
        .unwrap();
    let d = trace.node(n.id()).unwrap().unwrap();
    assert_eq!(d.id, n.id());
    assert_eq!(d.label, "L");
    assert_eq!(d.icon, "I");
    assert_eq!(d.description, "D");
    assert_eq!(d.input, Some(json!("test input")));
    assert_eq!(d, n.data().unwrap());
    assert!(trace.node("000000000000").unwrap().is_none());
    assert!(trace.node("not a node id").unwrap().is_none());
    assert!(matches!(
        trace.node_handle_by_id("000000000000"),
        Err(Error::NodeNotFound)
    ));
}

#[test]
fn all_logs() {
    let engine = engine(2, 1);
    let trace = engine.create(TraceOptions::new()).unwrap();
    assert!(trace.logs(None).unwrap().is_empty());
    let n = trace.add("x", NodeOptions::new()).unwrap();
    n.log(Level::Info, "info msg", json!({"a": 1}));
    n.log(Level::Debug, "debug msg", json!({"b": 2}));
    n.log(Level::Warn, "warn msg", json!({"c": 3}));
    n.log(Level::Error, "error msg", json!({"d": 4}));
    let logs = trace.logs(None).unwrap();
    assert_eq!(logs.len(), 4);
    assert_eq!(
        logs.iter().map(|l| l.level).collect::<Vec<_>>(),
        [Level::Info, Level::Debug, Level::Warn, Level::Error]
    );
    assert_eq!(
        logs.iter().map(|l| l.message.as_str()).collect::<Vec<_>>(),
        ["info msg", "debug msg", "warn msg", "error msg"]
    );
    assert_eq!(logs[2].data, json!({"c": 3}));
    assert!(logs.iter().all(|l| l.node_id == n.id() && l.timestamp > 0));
}

#[test]
fn logs_by_node() {
    let engine = engine(2, 1);
    let trace = engine.create(TraceOptions::new()).unwrap();
    let n1 = trace.add("1", NodeOptions::new()).unwrap();
    let n2 = trace.add("2", NodeOptions::new()).unwrap();
    n1.info("a").info("b");
    n2.info("c").info("d").info("e");
    let l1 = trace.logs(Some(n1.id())).unwrap();
    let l2 = trace.logs(Some(n2.id())).unwrap();
    assert_eq!(l1.len(), 2);
    assert_eq!(l2.len(), 3);
    assert!(l1.iter().all(|l| l.node_id == n1.id()));
    assert!(l2.iter().all(|l| l.node_id == n2.id()));
    assert_eq!(l2[2].message, "e");
    assert!(matches!(
        trace.logs(Some("000000000000")),
        Err(Error::NodeNotFound)
    ));
}

#[test]
fn events_with_resource_access() {
    let engine = engine(2, 1);
    let trace = engine.create(TraceOptions::new()).unwrap();
    let n = trace.add("1", NodeOptions::new()).unwrap();
    n.info("hello");
    n.complete(None).unwrap();
    let ev = history(&trace);
    assert_eq!(
        kinds(&ev),
        [
            EventKind::Init,
            EventKind::NodeStart,
            EventKind::LogAdded,
            EventKind::NodeComplete
        ]
    );
    assert_contiguous_from(&ev, 1);
    assert_eq!(trace.all_nodes().unwrap().len(), 1);
    assert_eq!(trace.logs(None).unwrap().len(), 1);
    // The wire format: snake_case envelope plus seq.
    let wire: serde_json::Value = serde_json::from_str(&ev[2].to_json()).unwrap();
    assert_eq!(wire["type"], "log_added");
    assert_eq!(wire["seq"], 3);
    assert_eq!(wire["trace_id"], trace.id());
    assert_eq!(wire["node_id"], n.id());
    assert_eq!(wire["space_id"], "");
    assert_eq!(wire["timestamp"], ev[2].timestamp);
    assert_eq!(wire["data"], ev[2].data());
    assert_eq!(wire["data"]["Message"], "hello");
    assert_eq!(wire["data"]["Data"], serde_json::Value::Null);
    // Event::from_json round-trips.
    let back = tracepool::Event::from_json(ev[2].to_json().as_bytes(), "test").unwrap();
    assert_eq!(back, ev[2]);
    // events() with cursors.
    assert_eq!(trace.events(tracepool::Cursor::Seq(3)).unwrap(), ev[2..]);
    assert_eq!(trace.events(tracepool::Cursor::Seq(1)).unwrap(), ev);
    assert!(trace.events(tracepool::Cursor::Seq(99)).unwrap().is_empty());
    let t = ev[3].timestamp;
    assert_eq!(
        trace.events(tracepool::Cursor::Time(t)).unwrap(),
        ev.iter()
            .filter(|e| e.timestamp >= t)
            .cloned()
            .collect::<Vec<_>>()
    );
    assert!(
        trace
            .events(tracepool::Cursor::Time(t + 1))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn all_spaces() {
    let engine = engine(2, 1);
    let trace = engine.create(TraceOptions::new()).unwrap();
    assert!(trace.spaces().unwrap().is_empty());
    let made: Vec<_> = (0..3)
        .map(|i| {
            trace
                .create_space(SpaceOptions::new().label(format!("S{i}")))
                .unwrap()
        })
        .collect();
    let got = trace.spaces().unwrap();
    assert_eq!(got, made);
}

#[test]
fn engine_info_reflects_status() {
    let engine = engine(2, 1);
    let trace = engine.create(TraceOptions::new()).unwrap();
    trace.add("x", NodeOptions::new()).unwrap();
    assert_eq!(
        engine.info(trace.id()).unwrap().status,
        tracepool::TraceStatus::Running
    );
    trace.mark_complete().unwrap();
    let info = engine.info(trace.id()).unwrap();
    assert_eq!(info.status, tracepool::TraceStatus::Completed);
    assert!(info.updated_at >= info.created_at);
}
