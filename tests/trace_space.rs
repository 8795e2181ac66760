//! Reference catalogue §8.5 (trace_space_test.go), with the fixed event
//! semantics: `memory_add` for a new key, `memory_update` when overwriting,
//! unknown spaces are `SpaceNotFound`.

mod common;

use common::*;
use serde_json::json;
use tracepool::{Error, EventKind, SpaceOptions, TraceOptions};

#[test]
fn space_operations() {
    let engine = engine(2, 1);
    let trace = engine.create(TraceOptions::new()).unwrap();
    let sp = trace
        .create_space(
            SpaceOptions::new()
                .label("Test Space")
                .icon("database")
                .description("a space")
                .ttl(3600),
        )
        .unwrap();
    assert_eq!(sp.id.len(), 12);
    trace.set_space_value(&sp.id, "key1", "value1").unwrap();
    trace
        .set_space_value(&sp.id, "key2", json!({"nested": "data"}))
        .unwrap();
    trace.set_space_value(&sp.id, "key3", 12345).unwrap();
    assert_eq!(
        trace.get_space_value(&sp.id, "key1").unwrap(),
        Some(json!("value1"))
    );
    assert_eq!(
        trace.get_space_value(&sp.id, "key2").unwrap(),
        Some(json!({"nested": "data"}))
    );
    assert_eq!(
        trace.get_space_value(&sp.id, "key3").unwrap(),
        Some(json!(12345))
    );
    assert_eq!(trace.get_space_value(&sp.id, "nope").unwrap(), None);
    assert!(trace.has_space_value(&sp.id, "key1"));
    assert!(!trace.has_space_value(&sp.id, "nonexistent"));
    assert_eq!(trace.space_keys(&sp.id).unwrap(), ["key1", "key2", "key3"]);

    trace.delete_space_value(&sp.id, "key1").unwrap();
    assert!(!trace.has_space_value(&sp.id, "key1"));
    trace.delete_space_value(&sp.id, "key1").unwrap(); // missing key: fine
    trace.clear_space_values(&sp.id).unwrap();
    assert!(trace.space_keys(&sp.id).unwrap().is_empty());
    assert_eq!(trace.spaces().unwrap().len(), 1);
    assert!(trace.has_space(&sp.id));
    trace.delete_space(&sp.id).unwrap();
    assert!(!trace.has_space(&sp.id));
    assert!(trace.spaces().unwrap().is_empty());

    let ev = history(&trace);
    assert_eq!(
        kinds(&ev),
        [
            EventKind::Init,
            EventKind::SpaceCreated,
            EventKind::MemoryAdd,
            EventKind::MemoryAdd,
            EventKind::MemoryAdd,
            EventKind::MemoryDelete,
            EventKind::MemoryDelete,
            EventKind::MemoryDelete,
            EventKind::SpaceDeleted,
        ]
    );
    assert!(
        ev[1..]
            .iter()
            .all(|e| e.space_id() == sp.id && e.node_id().is_empty())
    );
    let created = ev[1].data();
    assert_eq!(created["id"], sp.id.as_str());
    assert_eq!(created["label"], "Test Space");
    assert_eq!(created["ttl"], 3600);
    let add = ev[3].data();
    assert_eq!(add["type"], sp.id.as_str());
    assert_eq!(add["item"]["id"], "key2");
    assert_eq!(add["item"]["title"], "Test Space");
    assert_eq!(add["item"]["content"], json!({"nested": "data"}));
    assert_eq!(ev[5].data(), json!({"space_id": sp.id, "key": "key1"}));
    assert_eq!(ev[7].data(), json!({"space_id": sp.id, "cleared": true}));
    assert_eq!(ev[8].data(), json!({"space_id": sp.id}));
}

#[test]
fn overwrite_emits_memory_update() {
    let engine = engine(2, 1);
    let trace = engine.create(TraceOptions::new()).unwrap();
    let sp = trace.create_space(SpaceOptions::new()).unwrap();
    trace.set_space_value(&sp.id, "k", 1).unwrap();
    trace.set_space_value(&sp.id, "k", 2).unwrap();
    trace.set_space_value(&sp.id, "j", 3).unwrap();
    let ev = history(&trace);
    assert_eq!(
        kinds(&ev[2..]),
        [
            EventKind::MemoryAdd,
            EventKind::MemoryUpdate,
            EventKind::MemoryAdd
        ]
    );
    assert_eq!(ev[3].data()["item"]["content"], 2);
    // The first event is a snapshot: it still says 1.
    assert_eq!(ev[2].data()["item"]["content"], 1);
    assert_eq!(trace.get_space_value(&sp.id, "k").unwrap(), Some(json!(2)));
    // Keys keep insertion order across overwrites.
    assert_eq!(trace.space_keys(&sp.id).unwrap(), ["k", "j"]);
}

#[test]
fn multiple_spaces_are_independent() {
    let engine = engine(2, 1);
    let trace = engine.create(TraceOptions::new()).unwrap();
    let s1 = trace
        .create_space(SpaceOptions::new().label("Context"))
        .unwrap();
    let s2 = trace
        .create_space(SpaceOptions::new().label("Memory"))
        .unwrap();
    let s3 = trace
        .create_space(SpaceOptions::new().label("Cache"))
        .unwrap();
    trace.set_space_value(&s1.id, "a", 1).unwrap();
    trace.set_space_value(&s2.id, "b", 2).unwrap();
    trace.set_space_value(&s3.id, "c", 3).unwrap();
    assert_eq!(trace.get_space_value(&s1.id, "a").unwrap(), Some(json!(1)));
    assert!(!trace.has_space_value(&s2.id, "a"));
    let labels: Vec<_> = trace
        .spaces()
        .unwrap()
        .into_iter()
        .map(|s| s.label)
        .collect();
    assert_eq!(labels, ["Context", "Memory", "Cache"]);
}

#[test]
fn get_space_and_space_data() {
    let engine = engine(2, 1);
    let trace = engine.create(TraceOptions::new()).unwrap();
    let sp = trace
        .create_space(
            SpaceOptions::new()
                .label("L")
                .description("D")
                .ttl(7200)
                .space_type("cache")
                .metadata("type", "cache"),
        )
        .unwrap();
    let got = trace.space(&sp.id).unwrap().unwrap();
    assert_eq!(got, sp);
    assert_eq!(got.ttl, 7200);
    assert_eq!(got.label, "L");
    assert_eq!(got.description, "D");
    assert_eq!(got.space_type, "cache");
    assert_eq!(got.metadata["type"], "cache");
    assert!(trace.space("nonexistent").unwrap().is_none());
    assert!(trace.space_data("nonexistent").unwrap().is_none());

    trace.set_space_value(&sp.id, "key1", "value1").unwrap();
    trace.set_space_value(&sp.id, "key2", 123).unwrap();
    trace
        .set_space_value(&sp.id, "key3", json!({"nested": "data"}))
        .unwrap();
    let data = trace.space_data(&sp.id).unwrap().unwrap();
    assert_eq!(data.info.id, sp.id);
    assert_eq!(data.data.len(), 3);
    assert_eq!(data.data["key2"], json!(123));
    assert_eq!(data.data["key3"]["nested"], "data");
    assert!(data.info.updated_at >= sp.created_at);
}

#[test]
fn unknown_space_is_space_not_found() {
    let engine = engine(2, 1);
    let trace = engine.create(TraceOptions::new()).unwrap();
    let nf = |r: tracepool::Result<()>| assert!(matches!(r, Err(Error::SpaceNotFound)), "{r:?}");
    nf(trace.set_space_value("nope", "k", 1));
    nf(trace.delete_space_value("nope", "k"));
    nf(trace.clear_space_values("nope"));
    nf(trace.delete_space("nope"));
    nf(trace.get_space_value("nope", "k").map(drop));
    nf(trace.space_keys("nope").map(drop));
    assert!(!trace.has_space("nope"));
    assert!(!trace.has_space_value("nope", "k"));
    // A deleted space is unknown too.
    let sp = trace.create_space(SpaceOptions::new()).unwrap();
    trace.delete_space(&sp.id).unwrap();
    nf(trace.delete_space(&sp.id));
    nf(trace.set_space_value(&sp.id, "k", 1));
    assert_eq!(kinds(&history(&trace)).len(), 3, "no events for failures");
}

/// A space's metadata (serialized before the trace's lock) is in its
/// `space_created` event, in order, next to the other fields, and in the
/// space's info.
#[test]
fn space_metadata_reaches_its_created_event() {
    let engine = engine(2, 1);
    let trace = engine.create(TraceOptions::new()).unwrap();
    let sp = trace
        .create_space(
            SpaceOptions::new()
                .label("With metadata")
                .metadata("owner", "agent-7")
                .metadata("limits", json!({"max": 3, "tags": ["a", "b"]})),
        )
        .unwrap();
    let plain = trace
        .create_space(SpaceOptions::new().label("Without"))
        .unwrap();
    let ev = history(&trace);
    let created: Vec<_> = ev
        .iter()
        .filter(|e| e.kind == EventKind::SpaceCreated)
        .collect();
    assert_eq!(created.len(), 2);
    let data = created[0].data();
    assert_eq!(data["id"], json!(sp.id));
    assert_eq!(data["label"], json!("With metadata"));
    assert_eq!(
        data["metadata"],
        json!({"owner": "agent-7", "limits": {"max": 3, "tags": ["a", "b"]}})
    );
    let keys: Vec<_> = data["metadata"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["owner", "limits"], "insertion order is kept");
    let none = created[1].data();
    assert_eq!(none["id"], json!(plain.id));
    assert!(none.get("metadata").is_none(), "{none}");
    assert_eq!(
        trace.space(&sp.id).unwrap().unwrap().metadata["owner"],
        json!("agent-7")
    );
}
