//! Encoding later yields what was true at emission: every event encoded
//! lazily (on first read, after the trace went on changing) is byte for byte
//! the event encoded the moment it was recorded; the node payload is what
//! serde_json writes for the reference's `TraceNode`; and every event's
//! bytes are serde_json's compact form, with offsets on the right fields.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::state::{Limits, Target, TraceState};
use super::tree::{NodeSpec, NodeSpecs};
use crate::event::value::{self, Val};
use crate::event::{Cursor, Event, EventKind};
use crate::id::TraceId;
use crate::model::{Level, NodeStatus};
use crate::options::{NodeOptions, SpaceOptions, TraceOptions};

fn limits(max_log_bytes: usize) -> Limits {
    Limits {
        history: 100_000,
        subscriber_buffer: 10,
        pending: 100_000,
        persists: true,
        documents: false,
        driver: "memory",
        max_nodes: 10_000,
        max_log_bytes,
        max_subscribers: 10,
        max_space_entries: 1_000,
        max_trace_space_entries: 10_000,
        max_spaces: 10,
        pending_bytes: 1 << 30,
        leases: false,
    }
}

fn state(max_log_bytes: usize) -> TraceState {
    let mut st = TraceState::new(limits(max_log_bytes), Arc::default());
    st.events.eager = Some(Vec::new());
    st.start(TraceId::parse("t-1").unwrap(), TraceOptions::new(), 1_000);
    st
}

fn spec(input: &Value, opts: NodeOptions) -> NodeSpec {
    NodeSpec::new(input, opts).unwrap()
}

fn j(v: Value) -> Val {
    value::json(&v).unwrap()
}

fn text(s: &str) -> Val {
    value::text(&[s])
}

/// A chainable log line, as a handle writes it.
fn log(st: &mut TraceState, t: Target, level: Level, msg: &str, mut data: Option<Val>) {
    st.log(t, level, &mut value::LogText::new(msg), &mut data);
}

/// Every retained event, encoded now (lazily), against the eager copies.
fn assert_lazy_equals_eager(st: &mut TraceState) -> Vec<Event> {
    let (log, src) = st.split();
    let lazy = log.snapshot(Cursor::Seq(0), &src);
    let eager = st.events.eager.as_ref().unwrap();
    assert_eq!(lazy.len(), eager.len(), "history retains every event");
    for (l, e) in lazy.iter().zip(eager) {
        assert_eq!(l.seq, e.seq);
        assert_eq!(
            l.to_json(),
            e.to_json(),
            "event {} ({}) changed between emission and encoding",
            e.seq,
            e.kind
        );
    }
    lazy
}

#[test]
fn every_kind_encoded_late_is_what_it_was_when_emitted() {
    // Small log budget: old lines leave memory (their events are encoded
    // first).
    let mut st = state(2_000);
    let root = st
        .add(&mut spec(
            &json!({"q": "a\"b"}),
            NodeOptions::new().label("Root").metadata("m", 1),
        ))
        .unwrap();
    let child = st
        .add(&mut spec(&json!(7), NodeOptions::new().label("Child")))
        .unwrap();
    st.set_output(Target::Node(child), Some(j(json!({"first": true}))))
        .unwrap();
    st.set_metadata(Target::Node(child), "k", j(json!("v1")))
        .unwrap();
    let mut specs: NodeSpecs = (0..3)
        .map(|i| spec(&json!(i), NodeOptions::new().label("Branch")))
        .collect();
    let (first, count) = st.parallel(None, &mut specs).unwrap();
    log(
        &mut st,
        Target::Current,
        Level::Info,
        "on every branch",
        Some(j(json!({"n": 1}))),
    );
    st.set_status(first, NodeStatus::Skipped).unwrap();
    st.fail(
        Target::Node(first + 1),
        &text("boom"),
        &text("Node failed: boom"),
    )
    .unwrap();
    st.complete(Target::Node(first + 2), Some(Some(j(json!([1, 2])))))
        .unwrap();
    let space = st
        .create_space(SpaceOptions::new().label("Mem").metadata("x", true))
        .unwrap();
    st.set_space_value(&space.id, "key", text("key"), j(json!(1)))
        .unwrap();
    st.set_space_value(&space.id, "key", text("key"), j(json!(2)))
        .unwrap();
    st.set_space_value(&space.id, "other", text("other"), j(json!("o")))
        .unwrap();
    st.delete_space_value(&space.id, "other", text("other"))
        .unwrap();
    for i in 0..40 {
        log(
            &mut st,
            Target::Node(root),
            Level::Warn,
            &format!("line {i} {}", "x".repeat(40)),
            None,
        );
    }
    // Everything the records could wrongly point at changes afterwards.
    st.set_output(Target::Node(child), Some(j(json!({"second": true}))))
        .unwrap();
    st.set_metadata(Target::Node(child), "k", j(json!("v2")))
        .unwrap();
    st.set_metadata(Target::Node(root), "m", j(json!(2)))
        .unwrap();
    st.set_space_value(&space.id, "key", text("key"), j(json!(3)))
        .unwrap();
    st.clear_space_values(&space.id).unwrap();
    st.add(&mut spec(&Value::Null, NodeOptions::new().label("After")))
        .unwrap();
    // Lazily encode part now, the rest after more changes.
    {
        let (log, src) = st.split();
        log.snapshot(Cursor::Seq(30), &src);
    }
    st.delete_space(&space.id).unwrap();
    assert!(st.mark_cancelled(&text("stop")));
    assert!(st.stat_logs_evicted > 0, "log lines left memory");
    let lazy = assert_lazy_equals_eager(&mut st);
    let kinds: HashSet<EventKind> = lazy.iter().map(|e| e.kind).collect();
    for k in EventKind::ALL {
        assert!(kinds.contains(&k), "no {k} event in the scenario");
    }
    assert_eq!(count, 3);
}

#[test]
fn lazy_encoding_under_concurrent_mutation_matches_eager() {
    let st = Arc::new(Mutex::new(state(1 << 20)));
    let (root, space) = {
        let mut s = st.lock().unwrap();
        let root = s
            .add(&mut spec(&json!("root"), NodeOptions::new()))
            .unwrap();
        let space = s.create_space(SpaceOptions::new().label("S")).unwrap();
        (root, space.id)
    };
    std::thread::scope(|sc| {
        for t in 0..3 {
            let st = &st;
            let space = &space;
            sc.spawn(move || {
                for i in 0..200 {
                    let mut s = st.lock().unwrap();
                    let n = s
                        .add_child(
                            root,
                            &mut spec(&json!({"t": t, "i": i}), NodeOptions::new().label("c")),
                        )
                        .unwrap();
                    log(
                        &mut s,
                        Target::Node(n),
                        Level::Info,
                        "work",
                        Some(j(json!(i))),
                    );
                    s.set_output(Target::Node(root), Some(j(json!([t, i]))))
                        .unwrap();
                    s.set_metadata(Target::Node(n), "i", j(json!(i))).unwrap();
                    s.set_space_value(space, "hot", text("hot"), j(json!(i)))
                        .unwrap();
                    s.complete(Target::Node(n), Some(Some(j(json!(t)))))
                        .unwrap();
                    drop(s);
                    std::thread::yield_now();
                }
            });
        }
        // A reader encoding as it goes, from moving cursors.
        let st = &st;
        sc.spawn(move || {
            for k in 0..300u64 {
                let mut s = st.lock().unwrap();
                let (log, src) = s.split();
                log.snapshot(Cursor::Seq(k * 7), &src);
                drop(s);
                std::thread::yield_now();
            }
        });
    });
    let mut s = st.lock().unwrap();
    let lazy = assert_lazy_equals_eager(&mut s);
    assert!(lazy.len() > 3 * 200 * 6);
}

/// The hand-written node payload is byte for byte what serde_json writes
/// for the reference's `TraceNode` shape, escaping included.
#[test]
fn node_payload_matches_serde_json() {
    let mut st = state(1 << 20);
    let root = st
        .add(&mut spec(
            &json!({"q": "a\"b"}),
            NodeOptions::new().label("Root"),
        ))
        .unwrap();
    let n = st
        .add(&mut spec(
            &json!(7),
            NodeOptions::new()
                .label("L \"quoted\"\n\\ ünï")
                .node_type("t")
                .icon("i")
                .description("d")
                .metadata("m", 1)
                .auto_complete_parent(false),
        ))
        .unwrap();
    st.set_output(Target::Node(n), Some(j(json!([1, {"x": null}]))))
        .unwrap();
    let (rid, nid) = (st.tree.node(root).id, st.tree.node(n).id);
    let r = st.tree.node(n);
    let (created, updated) = (r.created_at, r.updated_at);
    let ev = assert_lazy_equals_eager(&mut st).pop().unwrap();
    assert_eq!(ev.kind, EventKind::NodeUpdated);
    let want = json!({"node": {
        "id": nid.as_str(),
        "parent_ids": [rid.as_str()],
        "children": [],
        "label": "L \"quoted\"\n\\ ünï",
        "type": "t",
        "icon": "i",
        "description": "d",
        "metadata": {"m": 1},
        "auto_complete_parent": false,
        "status": "running",
        "input": 7,
        "output": [1, {"x": null}],
        "created_at": created,
        "start_time": created,
        "end_time": 0,
        "updated_at": updated,
    }});
    assert_eq!(ev.data_json(), serde_json::to_string(&want).unwrap());
}

/// Every event kind, with strings that need escaping, long strings (longer
/// than an arena chunk too), unicode and big numbers: the bytes written are
/// serde_json's own compact form of what they parse to, and the envelope
/// offsets point at the fields they name.
#[test]
fn every_kind_is_serde_json_compact_form() {
    let weird = "q\"u\\o\te\n\r\u{1}\u{1f}\u{7f} ünïcode 😀 \u{2028}";
    let mut st = TraceState::new(limits(1 << 30), Arc::default());
    st.start(
        TraceId::parse("trace-every_kind").unwrap(),
        TraceOptions::new(),
        1_000,
    );
    let mut roots = Vec::new();
    for round in 0..3usize {
        let long = format!("{}{weird}", "L".repeat(30 + round * 40_000));
        let root = st
            .add(&mut spec(
                &json!({"q": weird, "big": u64::MAX, "neg": i64::MIN, "f": 1.5e300}),
                NodeOptions::new()
                    .label(weird.to_string())
                    .node_type(if round == 0 { "" } else { "llm" })
                    .icon("🔥")
                    .description(long.clone())
                    .metadata("k", json!("v\n")),
            ))
            .unwrap();
        roots.push(root);
        let child = st
            .add_child(
                root,
                &mut spec(
                    &json!(7),
                    NodeOptions::new()
                        .label("Child")
                        .auto_complete_parent(round == 1),
                ),
            )
            .unwrap();
        log(
            &mut st,
            Target::Node(child),
            Level::Debug,
            "plain",
            Some(j(json!({"n": 1}))),
        );
        log(&mut st, Target::Node(child), Level::Warn, weird, None);
        log(&mut st, Target::Node(child), Level::Error, &long, None);
        log(&mut st, Target::Node(child), Level::Info, "ünï", None);
        st.set_output(Target::Node(child), Some(j(json!({"out": weird}))))
            .unwrap();
        st.set_metadata(Target::Node(child), "k2", j(json!([1, {"x": "y"}])))
            .unwrap();
        st.complete(Target::Node(child), Some(Some(j(json!(u64::MAX)))))
            .unwrap();
        let mut specs: NodeSpecs = (0..3)
            .map(|i| spec(&json!(i), NodeOptions::new().label(long.clone())))
            .collect();
        let (first, _) = st.parallel(Some(root), &mut specs).unwrap();
        st.set_status(first, NodeStatus::Skipped).unwrap();
        st.fail(Target::Node(first + 1), &text(weird), &text(&long))
            .unwrap();
        st.complete(Target::Node(first + 2), None).unwrap();
        let space = st
            .create_space(
                SpaceOptions::new()
                    .label(if round == 1 { "" } else { weird })
                    .metadata("x", true),
            )
            .unwrap();
        st.set_space_value(&space.id, weird, text(weird), j(json!({"v": long})))
            .unwrap();
        st.set_space_value(&space.id, weird, text(weird), j(json!(-2)))
            .unwrap();
        st.set_space_value(&space.id, "o", text("o"), j(json!("o")))
            .unwrap();
        st.delete_space_value(&space.id, "o", text("o")).unwrap();
        st.clear_space_values(&space.id).unwrap();
        st.delete_space(&space.id).unwrap();
        st.complete(Target::Node(root), Some(Some(j(json!(weird)))))
            .unwrap();
    }
    assert!(st.mark_cancelled(&text(weird)));
    let (log, src) = st.split();
    let events = log.snapshot(Cursor::Seq(0), &src);
    let mut kinds = HashSet::new();
    for ev in &events {
        kinds.insert(ev.kind);
        let v: Value = serde_json::from_slice(&ev.bytes).unwrap();
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            ev.to_json(),
            "event {} ({})",
            ev.seq,
            ev.kind
        );
        assert_eq!(v["type"], ev.kind.as_str());
        assert_eq!(v["seq"], ev.seq);
        assert_eq!(v["timestamp"], ev.timestamp);
        assert_eq!(v["trace_id"], ev.trace_id());
        assert_eq!(v["node_id"], ev.node_id());
        assert_eq!(v["space_id"], ev.space_id());
        assert_eq!(serde_json::to_string(&v["data"]).unwrap(), ev.data_json());
    }
    for k in EventKind::ALL {
        assert!(kinds.contains(&k), "no {k} event");
    }
    let cancelled = events.last().unwrap().data();
    assert_eq!(cancelled["status"], "cancelled");
    assert!(events.iter().any(|e| e.data_json().contains("\\u0001")));
}
