//! Local driver round trip: a trace written by one engine is reopened by a
//! new engine on the same directory and continues exactly where it was.

use std::collections::HashSet;
use std::fs;
use std::path::Path;

use serde_json::{Value, json};
use tracepool::{
    Cursor, Durability, Engine, Error, Event, Exhausted, Level, LocalDriver, NodeData, NodeOptions,
    ParallelInput, SpaceOptions, Trace, TraceOptions, TraceStatus,
};

fn local(dir: &Path) -> Engine {
    Engine::builder()
        .capacity(8)
        .workers(1)
        .on_exhausted(Exhausted::Error)
        .local(dir)
        .build()
        .expect("build local engine")
}

fn sorted(mut nodes: Vec<NodeData>) -> Vec<NodeData> {
    nodes.sort_by(|a, b| a.id.cmp(&b.id));
    nodes
}

fn ids(nodes: &[NodeData]) -> Vec<String> {
    let mut v: Vec<String> = nodes.iter().map(|n| n.id.clone()).collect();
    v.sort();
    v
}

fn wire(events: &[Event]) -> Vec<(u64, String)> {
    events.iter().map(|e| (e.seq, e.to_json())).collect()
}

fn trace_dir(base: &Path, id: &str) -> std::path::PathBuf {
    let shard = if id.len() >= 8 { &id[..8] } else { "others" };
    base.join(shard).join(id)
}

fn stored_info(base: &Path, id: &str) -> Value {
    let bytes = fs::read(trace_dir(base, id).join("trace_info.json")).expect("trace_info.json");
    serde_json::from_slice(&bytes).expect("trace_info.json parses")
}

/// Builds a trace with every kind of write; returns its id.
fn build(trace: &Trace) -> (String, String) {
    let root = trace
        .add(
            json!({"q": "hello"}),
            NodeOptions::new().label("Root").metadata("m", 1),
        )
        .unwrap();
    trace.info("root log");
    root.log(Level::Warn, "root warn", json!([1, "two"]));
    let branches = trace
        .parallel(vec![
            ParallelInput::new("a", NodeOptions::new().label("A").node_type("worker")),
            ParallelInput::new("b", NodeOptions::new().label("B").icon("i")),
        ])
        .unwrap();
    branches[0].info("in a");
    branches[1].debug("in b");
    branches[0].complete(Some(json!({"ok": true}))).unwrap();
    branches[1].fail("boom").unwrap();
    let join = branches[0]
        .join(
            &[&branches[0], &branches[1]],
            "merge",
            NodeOptions::new().label("Join"),
        )
        .unwrap();
    join.info("joined");
    let sp = trace
        .create_space(
            SpaceOptions::new()
                .label("memory")
                .ttl(30)
                .metadata("s", "x"),
        )
        .unwrap();
    trace.set_space_value(&sp.id, "a", 1).unwrap();
    trace
        .set_space_value(&sp.id, "b", json!({"n": [1, 2]}))
        .unwrap();
    trace.set_space_value(&sp.id, "c", "gone soon").unwrap();
    trace.delete_space_value(&sp.id, "c").unwrap();
    trace.set_space_value(&sp.id, "a", 2).unwrap();
    let gone = trace
        .create_space(SpaceOptions::new().label("temp"))
        .unwrap();
    trace.set_space_value(&gone.id, "k", true).unwrap();
    trace.delete_space(&gone.id).unwrap();
    let empty = trace
        .create_space(SpaceOptions::new().label("empty"))
        .unwrap();
    let _ = empty;
    trace.set_output(json!("out")).unwrap();
    (sp.id, gone.id)
}

#[test]
fn reopened_trace_continues_where_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    let (id, space_id, gone_id, nodes, root, current, logs, events, space_data, empty_space);
    {
        let engine = local(base);
        let trace = engine
            .create(
                TraceOptions::new()
                    .created_by("alice")
                    .team_id("team")
                    .tenant_id("tenant")
                    .metadata("k", "v"),
            )
            .unwrap();
        id = trace.id().to_owned();
        (space_id, gone_id) = build(&trace);
        nodes = sorted(trace.all_nodes().unwrap());
        root = trace.root().unwrap().expect("root");
        current = ids(&trace.current_nodes().unwrap());
        logs = trace.logs(None).unwrap();
        events = trace.events(Cursor::Seq(0)).unwrap();
        space_data = trace.space_data(&space_id).unwrap().expect("space");
        empty_space = trace
            .spaces()
            .unwrap()
            .into_iter()
            .find(|s| s.label == "empty")
            .expect("empty space");
        trace.release().unwrap();
        assert!(!engine.is_loaded(&id));
        // Stored, not loaded: exists and info come from storage.
        assert!(engine.exists(&id).unwrap());
        let info = engine.info(&id).unwrap();
        assert_eq!(info.id, id);
        assert_eq!(info.driver, "local");
        assert_eq!(info.created_by.as_deref(), Some("alice"));
        assert_eq!(info.status, TraceStatus::Running);
    }
    assert_eq!(nodes.len(), 4);
    assert!(!current.is_empty());

    // The files are where the reference puts them.
    let tdir = trace_dir(base, &id);
    assert!(tdir.join("updates.jsonl").is_file());
    for n in &nodes {
        assert!(tdir.join(format!("nodes/{}.json", n.id)).is_file());
    }
    assert!(tdir.join(format!("spaces/{space_id}.json")).is_file());
    assert!(tdir.join(format!("spaces/{space_id}/data.json")).is_file());
    assert!(!tdir.join(format!("spaces/{gone_id}.json")).exists());
    assert!(!tdir.join(format!("spaces/{gone_id}")).exists());
    let on_disk = stored_info(base, &id);
    assert_eq!(on_disk["__yao_created_by"], "alice");
    assert_eq!(on_disk["archived"], false);
    // Documents are 2-space indented, lines compact.
    let node_text = fs::read_to_string(tdir.join(format!("nodes/{}.json", root.id))).unwrap();
    assert!(node_text.starts_with("{\n  \"ID\": "), "{node_text}");
    let updates = fs::read_to_string(tdir.join("updates.jsonl")).unwrap();
    assert_eq!(updates.lines().count(), events.len());
    assert!(updates.ends_with('\n'));

    // A new engine on the same directory.
    let engine = local(base);
    assert!(engine.list().is_empty());
    assert!(engine.exists(&id).unwrap());
    assert_eq!(engine.info(&id).unwrap().team_id.as_deref(), Some("team"));
    let trace = engine.open(&id).unwrap();
    assert_eq!(trace.root().unwrap().as_ref(), Some(&root));
    let reopened = sorted(trace.all_nodes().unwrap());
    assert_eq!(
        reopened, nodes,
        "every node once, same parents and children"
    );
    assert_eq!(ids(&trace.current_nodes().unwrap()), current);
    assert_eq!(trace.status(), TraceStatus::Running);
    let info = trace.trace_info().unwrap();
    assert_eq!(info.tenant_id.as_deref(), Some("tenant"));
    assert_eq!(info.metadata.get("k"), Some(&json!("v")));
    assert_eq!(trace.logs(None).unwrap(), logs);
    assert_eq!(
        trace.space_data(&space_id).unwrap(),
        Some(space_data.clone())
    );
    assert_eq!(space_data.data.get("a"), Some(&json!(2)));
    assert!(space_data.data.get("c").is_none());
    assert!(!trace.has_space(&gone_id));
    assert_eq!(
        trace
            .space_data(&empty_space.id)
            .unwrap()
            .unwrap()
            .data
            .len(),
        0
    );
    let reloaded = trace.events(Cursor::Seq(0)).unwrap();
    assert_eq!(wire(&reloaded), wire(&events));
    for (i, e) in reloaded.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1);
    }

    // The next add joins the current nodes; no second root.
    let next = trace.add("next", NodeOptions::new().label("Next")).unwrap();
    let next = next.data().unwrap();
    let mut parents = next.parent_ids.clone();
    parents.sort();
    assert_eq!(parents, current);
    let all = trace.all_nodes().unwrap();
    assert_eq!(all.len(), 5);
    assert_eq!(all.iter().filter(|n| n.parent_ids.is_empty()).count(), 1);
    let after = trace.events(Cursor::Seq(events.len() as u64 + 1)).unwrap();
    assert!(!after.is_empty());
    assert_eq!(after[0].seq, events.len() as u64 + 1);
    trace.mark_complete().unwrap();
    trace.release().unwrap();
    engine.flush_blocking().unwrap();
    assert_eq!(stored_info(base, &id)["status"], "completed");

    // And once more: the continuation was persisted too.
    let trace = engine.open(&id).unwrap();
    assert_eq!(trace.all_nodes().unwrap().len(), 5);
    assert_eq!(trace.status(), TraceStatus::Completed);
    let all_events = trace.events(Cursor::Seq(0)).unwrap();
    for (i, e) in all_events.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1);
    }
    assert!(all_events.len() > events.len() + 1);
    trace.release().unwrap();
}

#[test]
fn exists_list_remove_and_already_exists() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    let engine = local(base);
    let mut made = Vec::new();
    for custom in ["short", "custom-trace-id-1"] {
        let t = engine.create(TraceOptions::new().id(custom)).unwrap();
        t.add("x", NodeOptions::new()).unwrap();
        t.release().unwrap();
        made.push(custom.to_owned());
    }
    let t = engine.create(TraceOptions::new()).unwrap();
    t.add("x", NodeOptions::new()).unwrap();
    made.push(t.id().to_owned());
    t.release().unwrap();
    engine.flush_blocking().unwrap();
    made.sort();

    assert!(base.join("others/short/trace_info.json").is_file());
    assert!(
        base.join("custom-t/custom-trace-id-1/trace_info.json")
            .is_file()
    );
    let driver = LocalDriver::new(base, Durability::Buffered).unwrap();
    use tracepool::Driver;
    assert_eq!(driver.list().unwrap(), made);

    // create with an id that storage has
    match engine.create(TraceOptions::new().id("short")) {
        Err(Error::AlreadyExists) => {}
        other => panic!("expected AlreadyExists, got {other:?}"),
    }

    // remove: afterwards nothing is left for that id
    engine.remove("custom-trace-id-1").unwrap();
    assert!(!engine.exists("custom-trace-id-1").unwrap());
    assert!(
        !base.join("custom-t").exists(),
        "empty shard dir removed too"
    );
    assert!(matches!(
        engine.open("custom-trace-id-1"),
        Err(Error::NotFound)
    ));
    assert!(matches!(
        engine.remove("custom-trace-id-1"),
        Err(Error::NotFound)
    ));
    assert!(!driver.remove("custom-trace-id-1").unwrap());
    engine.remove("short").unwrap();
    assert!(!base.join("others/short").exists());
    let left: Vec<String> = driver.list().unwrap();
    assert_eq!(left.len(), 1);
    // removing a loaded trace releases it and deletes its files
    let t = engine.open(&left[0]).unwrap();
    let id = t.id().to_owned();
    engine.remove(&id).unwrap();
    assert!(!engine.is_loaded(&id));
    assert!(driver.list().unwrap().is_empty());
    let names: HashSet<_> = walk(base).into_iter().collect();
    assert!(names.iter().all(|p| !p.contains(&id)), "{names:?}");
}

#[test]
fn status_transitions_are_persisted() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    let engine = local(base);
    let fresh = engine.create(TraceOptions::new()).unwrap();
    let fresh_id = fresh.id().to_owned();
    fresh.release().unwrap();
    engine.flush_blocking().unwrap();
    assert_eq!(stored_info(base, &fresh_id)["status"], "pending");
    let done = engine.open(&fresh_id).unwrap();
    done.add("x", NodeOptions::new()).unwrap();
    done.mark_complete().unwrap();
    let cancelled = engine.create(TraceOptions::new()).unwrap();
    cancelled.add("y", NodeOptions::new()).unwrap();
    cancelled.mark_cancelled("stop").unwrap();
    let (a, b) = (done.id().to_owned(), cancelled.id().to_owned());
    done.release().unwrap();
    cancelled.release().unwrap();
    engine.flush_blocking().unwrap();
    assert_eq!(stored_info(base, &a)["status"], "completed");
    assert_eq!(stored_info(base, &b)["status"], "cancelled");
    let engine = local(base);
    assert_eq!(engine.info(&b).unwrap().status, TraceStatus::Cancelled);
    let t = engine.open(&b).unwrap();
    assert_eq!(t.status(), TraceStatus::Cancelled);
    assert!(matches!(
        t.add("z", NodeOptions::new()),
        Err(Error::TraceFinished)
    ));
    let nodes = t.all_nodes().unwrap();
    assert_eq!(nodes[0].status, tracepool::NodeStatus::Cancelled);
}

#[test]
fn durability_levels_all_round_trip() {
    for d in [Durability::Buffered, Durability::Flush, Durability::Fsync] {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::builder()
            .capacity(2)
            .workers(1)
            .durability(d)
            .local(dir.path())
            .build()
            .unwrap();
        let t = engine.create(TraceOptions::new()).unwrap();
        t.add("x", NodeOptions::new()).unwrap();
        t.info("hi");
        let id = t.id().to_owned();
        t.release().unwrap();
        let t = engine.open(&id).unwrap();
        assert_eq!(t.all_nodes().unwrap().len(), 1, "{d:?}");
        assert_eq!(t.logs(None).unwrap().len(), 1, "{d:?}");
    }
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        out.push(p.display().to_string());
        if p.is_dir() {
            out.extend(walk(&p));
        }
    }
    out
}
