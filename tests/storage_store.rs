//! The embedded store driver (fjall): round trip through `open`, the key
//! scheme (one key per event and per log line, all under `P:T:`), remove,
//! list, archive, and corrupt values reported with their key.

use serde_json::json;
use tracepool::{
    Cursor, Durability, Engine, Error, EventKind, NodeOptions, NodeStatus, ParallelInput,
    SpaceOptions, TraceOptions, TraceStatus,
};

fn engine(path: &std::path::Path) -> Engine {
    Engine::builder()
        .capacity(4)
        .workers(1)
        .durability(Durability::Buffered)
        .store(path)
        .build()
        .unwrap()
}

/// Builds a trace with every kind of content; returns its id and event count.
fn populate(e: &Engine) -> (String, u64) {
    let t = e
        .create(TraceOptions::new().created_by("tester").metadata("k", "v"))
        .unwrap();
    let root = t
        .add(json!("in"), NodeOptions::new().label("Root"))
        .unwrap();
    t.info("root log");
    let b = t
        .parallel(vec![
            ParallelInput::new(1, NodeOptions::new().label("A")),
            ParallelInput::new(2, NodeOptions::new().label("B")),
        ])
        .unwrap();
    b[0].warn("from A");
    b[0].complete(Some(json!({"a": 1}))).unwrap();
    let j = root
        .join(&[&b[0], &b[1]], 3, NodeOptions::new().label("J"))
        .unwrap();
    j.set_metadata("m", 1).unwrap();
    let s = t
        .create_space(SpaceOptions::new().label("S").ttl(60))
        .unwrap();
    t.set_space_value(&s.id, "x", 1).unwrap();
    t.set_space_value(&s.id, "y", json!({"n": true})).unwrap();
    t.set_space_value(&s.id, "x", 2).unwrap();
    let gone = t.create_space(SpaceOptions::new().label("gone")).unwrap();
    t.delete_space(&gone.id).unwrap();
    let n = t.events(Cursor::Seq(0)).unwrap().len() as u64;
    let id = t.id().to_owned();
    t.release().unwrap();
    (id, n)
}

#[test]
fn open_rebuilds_the_trace_and_numbering_continues() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let (id, n) = {
        let e = engine(&path);
        let r = populate(&e);
        e.shutdown().unwrap();
        r
    };
    let e = engine(&path);
    assert!(e.exists(&id).unwrap());
    assert!(!e.is_loaded(&id));
    let info = e.info(&id).unwrap();
    assert_eq!(info.driver, "store");
    assert_eq!(info.created_by.as_deref(), Some("tester"));
    assert_eq!(info.status, TraceStatus::Running);
    let t = e.open(&id).unwrap();
    let nodes = t.all_nodes().unwrap();
    let labels: Vec<&str> = nodes.iter().map(|n| n.label.as_str()).collect();
    assert_eq!(labels, ["Root", "A", "B", "J"]);
    let jn = &nodes[3];
    assert_eq!(
        jn.parent_ids,
        vec![nodes[1].id.clone(), nodes[2].id.clone()]
    );
    assert_eq!(jn.metadata["m"], 1);
    assert_eq!(nodes[1].status, NodeStatus::Completed);
    assert_eq!(nodes[1].output, Some(json!({"a": 1})));
    let cur: Vec<String> = t
        .current_nodes()
        .unwrap()
        .into_iter()
        .map(|n| n.id)
        .collect();
    assert_eq!(cur, vec![nodes[1].id.clone(), nodes[2].id.clone()]);
    let logs = t.logs(None).unwrap();
    assert_eq!(logs.len(), 2);
    assert_eq!(logs[0].message, "root log");
    assert_eq!(logs[1].node_id, nodes[1].id);
    let spaces = t.spaces().unwrap();
    assert_eq!(spaces.len(), 1);
    let data = t.space_data(&spaces[0].id).unwrap().unwrap();
    assert_eq!(data.data.keys().collect::<Vec<_>>(), ["x", "y"]);
    assert_eq!(data.data["x"], 2);
    assert_eq!(data.info.ttl, 60);
    let events = t.events(Cursor::Seq(0)).unwrap();
    assert_eq!(events.len() as u64, n);
    assert!(
        events
            .iter()
            .enumerate()
            .all(|(i, e)| e.seq == i as u64 + 1)
    );
    // Continue exactly where it was: the next add joins both current nodes.
    let next = t.add(4, NodeOptions::new().label("Next")).unwrap();
    let next = next.data().unwrap();
    assert_eq!(next.parent_ids, cur);
    assert_eq!(t.all_nodes().unwrap().len(), 5);
    let evs = t.events(Cursor::Seq(n + 1)).unwrap();
    assert_eq!(evs[0].seq, n + 1);
    assert!(evs.iter().any(|e| e.kind == EventKind::NodeStart));
    t.mark_complete().unwrap();
    t.release().unwrap();
    assert_eq!(e.info(&id).unwrap().status, TraceStatus::Completed);
}

#[test]
fn one_key_per_batch_of_events_and_of_log_lines_all_under_the_trace_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let (id, n) = {
        let e = engine(&path);
        let r = populate(&e);
        e.shutdown().unwrap();
        r
    };
    let db = fjall::Database::builder(&path).open().unwrap();
    let kv = db
        .keyspace("trace", fjall::KeyspaceCreateOptions::default)
        .unwrap();
    let mut entries = Vec::new();
    for g in kv.iter() {
        let (k, v) = g.into_inner().unwrap();
        entries.push((String::from_utf8(k.to_vec()).unwrap(), v.to_vec()));
    }
    let keys: Vec<&String> = entries.iter().map(|(k, _)| k).collect();
    let p = format!("__trace:{id}:");
    assert!(keys.iter().all(|k| k.starts_with(&p)), "{keys:?}");
    // Each batch's events are one key, from its first seq, one line each.
    let lines = |part: &str| -> Vec<(&String, usize)> {
        entries
            .iter()
            .filter(|(k, _)| k.contains(part))
            .map(|(k, v)| (k, v.split(|b| *b == b'\n').count()))
            .collect()
    };
    let events = lines(":events:");
    assert_eq!(events.iter().map(|(_, n)| *n as u64).sum::<u64>(), n);
    assert_eq!(events[0].0, &format!("{p}events:{:020}", 1));
    assert_eq!(lines(":logs:").iter().map(|(_, n)| n).sum::<usize>(), 2);
    assert_eq!(keys.iter().filter(|k| k.ends_with(":info")).count(), 1);
    assert_eq!(keys.iter().filter(|k| k.contains(":node:")).count(), 4);
    // The deleted space left nothing behind.
    assert_eq!(keys.iter().filter(|k| k.contains(":space:")).count(), 2);
    // The store records its format.
    let meta = db
        .keyspace("meta", fjall::KeyspaceCreateOptions::default)
        .unwrap();
    assert_eq!(meta.get("format").unwrap().unwrap().to_vec(), b"2");
}

#[test]
fn remove_list_and_already_exists() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(&dir.path().join("db"));
    let (a, _) = populate(&e);
    let (b, _) = populate(&e);
    let mut want = vec![a.clone(), b.clone()];
    want.sort();
    assert_eq!(e.list_stored().unwrap(), want);
    assert!(matches!(
        e.create(TraceOptions::new().id(&a)),
        Err(Error::AlreadyExists)
    ));
    e.remove(&a).unwrap();
    assert!(!e.exists(&a).unwrap());
    assert!(matches!(e.open(&a), Err(Error::NotFound)));
    assert!(matches!(e.remove(&a), Err(Error::NotFound)));
    assert_eq!(e.list_stored().unwrap(), vec![b.clone()]);
    assert!(e.exists(&b).unwrap());
}

#[test]
fn auto_archive_keeps_the_trace_readable_and_remove_deletes_it() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(&dir.path().join("db"));
    let t = e.create(TraceOptions::new().auto_archive(true)).unwrap();
    t.add(1, NodeOptions::new().label("only")).unwrap();
    t.info("hello");
    t.mark_complete().unwrap();
    let id = t.id().to_owned();
    let n = t.events(Cursor::Seq(0)).unwrap().len();
    t.release().unwrap();
    let info = e.info(&id).unwrap();
    assert!(info.archived);
    assert_eq!(info.status, TraceStatus::Completed);
    let t = e.open(&id).unwrap();
    assert_eq!(t.root().unwrap().unwrap().label, "only");
    assert_eq!(t.logs(None).unwrap().len(), 1);
    assert_eq!(t.events(Cursor::Seq(0)).unwrap().len(), n);
    assert!(t.trace_info().unwrap().archived);
    t.release().unwrap();
    e.remove(&id).unwrap();
    assert!(!e.exists(&id).unwrap());
    assert!(matches!(e.info(&id), Err(Error::NotFound)));
}

#[test]
fn a_corrupt_value_is_reported_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let id = {
        let e = engine(&path);
        let (id, _) = populate(&e);
        e.shutdown().unwrap();
        id
    };
    let node_key = {
        let db = fjall::Database::builder(&path).open().unwrap();
        let kv = db
            .keyspace("trace", fjall::KeyspaceCreateOptions::default)
            .unwrap();
        let key = kv
            .prefix(format!("__trace:{id}:node:").as_bytes())
            .next()
            .unwrap()
            .key()
            .unwrap()
            .to_vec();
        kv.insert(&key, b"{\"ID\": 12, truncated").unwrap();
        db.persist(fjall::PersistMode::SyncAll).unwrap();
        String::from_utf8(key).unwrap()
    };
    let e = engine(&path);
    match e.open(&id) {
        Err(Error::Corrupt { location, .. }) => assert_eq!(location, node_key),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // The failed open left no trace loaded and the slot free.
    assert!(!e.is_loaded(&id));
    assert_eq!(e.stats().in_use, 0);
    // Invalid ids never reach the store.
    for bad in ["../../etc", "a:b", "a/b", ".", ".."] {
        assert!(matches!(e.open(bad), Err(Error::InvalidId)), "{bad}");
    }
}
