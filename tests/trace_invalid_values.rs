//! Caller values that do not serialize to JSON, through the public API:
//! every method taking an `impl Serialize` value returns
//! `Error::InvalidValue` and leaves the trace as it was — no event (the
//! next event gets the next seq), no node, no log line, no space value, no
//! step made current — and the trace works afterwards. The chainable
//! `log(level, msg, data)` returns its handle, drops the line and counts it
//! in `EngineStats::logs_dropped`.
//!
//! The methods whose values are `serde_json::Value` (`complete`,
//! `ParallelInput`, the options' metadata) cannot be given such a value.

use std::collections::BTreeMap;

use serde::ser::{Error as _, Serialize, Serializer};
use serde_json::json;
use tracepool::{
    Cursor, Engine, Error, EventKind, Level, LogEntry, Node, NodeData, NodeOptions, SpaceData,
    SpaceOptions, Trace, TraceInfo, TraceOptions,
};

/// Values that fail to serialize, each in its own way.
#[derive(Debug, Clone, Copy)]
enum Invalid {
    /// Fails at once.
    Fails,
    /// A map with non-string keys, which serde_json refuses.
    TupleKeys,
    /// Fails after a valid prefix longer than a value kept inline (so it
    /// is written twice, the second time into the shared buffer).
    FailsMidway,
}

const INVALID: [Invalid; 3] = [Invalid::Fails, Invalid::TupleKeys, Invalid::FailsMidway];

impl Serialize for Invalid {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Invalid::Fails => Err(S::Error::custom("bad")),
            Invalid::TupleKeys => BTreeMap::from([((1, 2), "v")]).serialize(s),
            Invalid::FailsMidway => ("x".repeat(100), 7, Invalid::Fails).serialize(s),
        }
    }
}

/// Everything a caller can read of a trace.
#[derive(Debug, PartialEq)]
struct Seen {
    events: Vec<String>,
    nodes: Vec<NodeData>,
    current: Vec<NodeData>,
    logs: Vec<LogEntry>,
    spaces: Vec<Option<SpaceData>>,
    info: TraceInfo,
}

fn seen(trace: &Trace) -> Seen {
    Seen {
        events: trace
            .events(Cursor::Seq(0))
            .unwrap()
            .iter()
            .map(|e| e.to_json())
            .collect(),
        nodes: trace.all_nodes().unwrap(),
        current: trace.current_nodes().unwrap(),
        logs: trace.logs(None).unwrap(),
        spaces: trace
            .spaces()
            .unwrap()
            .iter()
            .map(|s| trace.space_data(&s.id).unwrap())
            .collect(),
        info: trace.trace_info().unwrap(),
    }
}

fn last_seq(trace: &Trace) -> u64 {
    trace.events(Cursor::Seq(0)).unwrap().last().unwrap().seq
}

/// Calls `call` with every invalid value: each call returns `InvalidValue`
/// and leaves the trace as it was.
fn assert_refused<T: std::fmt::Debug>(
    trace: &Trace,
    what: &str,
    call: impl Fn(Invalid) -> tracepool::Result<T>,
) {
    for bad in INVALID {
        let before = seen(trace);
        let r = call(bad);
        assert!(
            matches!(r, Err(Error::InvalidValue)),
            "{what} with {bad:?}: {r:?}"
        );
        assert_eq!(seen(trace), before, "{what} with {bad:?} changed the trace");
    }
}

/// The trace works after the refusals: `call` succeeds, and its first
/// event, of kind `kind`, follows the events before it without a gap.
fn assert_works<T>(trace: &Trace, kind: EventKind, call: impl FnOnce() -> tracepool::Result<T>) {
    let last = last_seq(trace);
    call().unwrap();
    let after = trace.events(Cursor::Seq(last + 1)).unwrap();
    assert_eq!(
        after.first().map(|e| (e.seq, e.kind)),
        Some((last + 1, kind))
    );
}

fn engine() -> Engine {
    Engine::builder().memory().build().unwrap()
}

/// A trace with a root node and a space holding one key.
fn trace_with_root(engine: &Engine) -> (Trace, Node, String) {
    let trace = engine.create(TraceOptions::new()).unwrap();
    let root = trace.add("in", NodeOptions::new().label("root")).unwrap();
    let space = trace
        .create_space(SpaceOptions::new().label("S"))
        .unwrap()
        .id;
    trace.set_space_value(&space, "k", 1).unwrap();
    (trace, root, space)
}

/// `Trace::add` with an invalid input makes no node: on an empty trace no
/// root (the trace stays pending), after the root no node after it (and
/// the root is not auto-completed).
#[test]
fn trace_add_refuses_an_invalid_input() {
    let engine = engine();
    let trace = engine.create(TraceOptions::new()).unwrap();
    assert_refused(&trace, "Trace::add on an empty trace", |bad| {
        trace.add(bad, NodeOptions::new().label("root"))
    });
    assert!(trace.root().unwrap().is_none());
    assert_eq!(trace.status(), tracepool::TraceStatus::Pending);
    assert_works(&trace, EventKind::NodeStart, || {
        trace.add("in", NodeOptions::new().label("root"))
    });
    assert_refused(&trace, "Trace::add", |bad| {
        trace.add(bad, NodeOptions::new().label("next"))
    });
    // A valid add auto-completes the root first.
    assert_works(&trace, EventKind::NodeComplete, || {
        trace.add(json!({"ok": true}), NodeOptions::new().label("next"))
    });
    assert_eq!(trace.all_nodes().unwrap().len(), 2);
}

/// `Node::add` and `Node::join` with an invalid input make no node and
/// link nothing under the parents.
#[test]
fn node_add_and_join_refuse_an_invalid_input() {
    let engine = engine();
    let (trace, root, _) = trace_with_root(&engine);
    assert_refused(&trace, "Node::add", |bad| {
        root.add(bad, NodeOptions::new().label("child"))
    });
    let a = root.add("a", NodeOptions::new().label("a")).unwrap();
    let b = root.add("b", NodeOptions::new().label("b")).unwrap();
    assert_refused(&trace, "Node::join", |bad| {
        root.join(&[&a, &b], bad, NodeOptions::new().label("join"))
    });
    assert_works(&trace, EventKind::NodeStart, || {
        root.join(&[&a, &b], "merge", NodeOptions::new().label("join"))
    });
    assert_eq!(root.data().unwrap().children.len(), 2);
    assert_eq!(a.data().unwrap().children.len(), 1);
}

/// `set_output` and `set_metadata` with an invalid value, on the trace's
/// current nodes and on one node, leave output and metadata as they were
/// and emit no `node_updated`.
#[test]
fn set_output_and_set_metadata_refuse_an_invalid_value() {
    let engine = engine();
    let (trace, root, _) = trace_with_root(&engine);
    root.set_output(json!({"first": 1})).unwrap();
    root.set_metadata("m", "v").unwrap();
    assert_refused(&trace, "Trace::set_output", |bad| trace.set_output(bad));
    assert_refused(&trace, "Trace::set_metadata", |bad| {
        trace.set_metadata("m", bad)
    });
    assert_refused(&trace, "Node::set_output", |bad| root.set_output(bad));
    assert_refused(&trace, "Node::set_metadata", |bad| {
        root.set_metadata("m", bad)
    });
    // A new key: not added.
    assert_refused(&trace, "Node::set_metadata (new key)", |bad| {
        root.set_metadata("other", bad)
    });
    let data = root.data().unwrap();
    assert_eq!(data.output, Some(json!({"first": 1})));
    assert_eq!(data.metadata.get("m"), Some(&json!("v")));
    assert!(!data.metadata.contains_key("other"));
    assert_works(&trace, EventKind::NodeUpdated, || trace.set_output(2));
    assert_works(&trace, EventKind::NodeUpdated, || root.set_metadata("m", 3));
}

/// `set_space_value` with an invalid value adds no key and keeps an
/// existing key's value: no `memory_add` nor `memory_update`.
#[test]
fn set_space_value_refuses_an_invalid_value() {
    let engine = engine();
    let (trace, _, space) = trace_with_root(&engine);
    assert_refused(&trace, "set_space_value (existing key)", |bad| {
        trace.set_space_value(&space, "k", bad)
    });
    assert_refused(&trace, "set_space_value (new key)", |bad| {
        trace.set_space_value(&space, "new", bad)
    });
    assert_eq!(trace.space_keys(&space).unwrap(), ["k"]);
    assert_eq!(trace.get_space_value(&space, "k").unwrap(), Some(json!(1)));
    assert_works(&trace, EventKind::MemoryUpdate, || {
        trace.set_space_value(&space, "k", 2)
    });
    assert_works(&trace, EventKind::MemoryAdd, || {
        trace.set_space_value(&space, "new", 3)
    });
}

/// The step guards: `step_with` and `step_detached_with` (of a trace, of
/// a node, and under a current step) with an invalid input open no step:
/// no node, and the current step is unchanged; a step's `output` with an
/// invalid value leaves its output as it was.
#[test]
fn steps_refuse_an_invalid_value() {
    let engine = engine();
    let (trace, root, _) = trace_with_root(&engine);
    let current = || tracepool::current().map(|n| n.id().to_owned());
    assert_refused(&trace, "Trace::step_with", |bad| {
        trace.step_with(bad, NodeOptions::new().label("s"))
    });
    assert_refused(&trace, "Trace::step_detached_with", |bad| {
        trace.step_detached_with(bad, NodeOptions::new().label("s"))
    });
    assert_refused(&trace, "Node::step_with", |bad| {
        root.step_with(bad, NodeOptions::new().label("s"))
    });
    assert_refused(&trace, "Node::step_detached_with", |bad| {
        root.step_detached_with(bad, NodeOptions::new().label("s"))
    });
    assert_eq!(current(), None);
    let detached = root.step_detached("detached").unwrap();
    assert_refused(&trace, "DetachedStep::output", |bad| detached.output(bad));
    assert_works(&trace, EventKind::NodeUpdated, || detached.output("done"));
    let outer = trace.step("outer").unwrap();
    outer.output("kept").unwrap();
    // Under a current step, the step's node is its parent.
    assert_refused(&trace, "Trace::step_with under a step", |bad| {
        trace.step_with(bad, NodeOptions::new().label("inner"))
    });
    assert_refused(&trace, "Node::step_with under a step", |bad| {
        root.step_with(bad, NodeOptions::new().label("inner"))
    });
    assert_eq!(current(), Some(outer.id().to_owned()));
    assert_refused(&trace, "Step::output", |bad| outer.output(bad));
    assert_eq!(outer.data().unwrap().output, Some(json!("kept")));
    assert_works(&trace, EventKind::NodeStart, || {
        trace.step_with("ok", NodeOptions::new().label("inner"))
    });
    assert_works(&trace, EventKind::NodeUpdated, || outer.output("done"));
    assert_eq!(outer.data().unwrap().children.len(), 1);
}

/// The chainable `log(level, msg, data)` of a trace, a node and a step
/// with invalid data: returns its handle (the chain goes on), records no
/// line and no event, and counts the line in `logs_dropped` — one per
/// call, and no other line is counted.
#[test]
fn chainable_log_drops_and_counts_a_line_with_invalid_data() {
    let engine = engine();
    let (trace, root, _) = trace_with_root(&engine);
    let step = root.step("step").unwrap();
    let dropped = || engine.stats().logs_dropped;
    for bad in INVALID {
        let (before, count) = (seen(&trace), dropped());
        assert!(std::ptr::eq(trace.log(Level::Info, "trace", bad), &trace));
        assert!(std::ptr::eq(root.log(Level::Warn, "node", bad), &root));
        let node: &Node = &step;
        assert!(std::ptr::eq(step.log(Level::Error, "step", bad), node));
        assert_eq!(seen(&trace), before, "a line with {bad:?} was recorded");
        assert_eq!(dropped(), count + 3, "{bad:?}");
        // The chain goes on with the next line.
        let last = last_seq(&trace);
        trace.log(Level::Debug, "dropped", bad).info("after").log(
            Level::Info,
            "with data",
            json!({"ok": true}),
        );
        assert_eq!(dropped(), count + 4, "{bad:?}");
        let after = trace.events(Cursor::Seq(last + 1)).unwrap();
        let lines: Vec<(u64, String)> = after
            .iter()
            .map(|e| (e.seq, e.data()["Message"].as_str().unwrap().to_owned()))
            .collect();
        assert_eq!(
            lines,
            [
                (last + 1, "after".to_owned()),
                (last + 2, "with data".to_owned())
            ]
        );
    }
    let messages: Vec<String> = trace
        .logs(None)
        .unwrap()
        .into_iter()
        .map(|l| l.message)
        .collect();
    assert_eq!(messages.len(), 2 * INVALID.len());
    assert!(messages.iter().all(|m| m == "after" || m == "with data"));
    drop(step);
}
