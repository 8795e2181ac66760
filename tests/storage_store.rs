//! The embedded store driver (fjall): round trip through `open`, the key
//! scheme (a trace's first batch as one key, later batches one key per
//! kind, all under `P:T:`), remove, list, archive, and corrupt values
//! reported with their key.

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

/// A trace written in two batches: node `A`, a log line and a space
/// created and deleted, flushed (the first batch); then `A` completed and
/// another log line. Returns its id, `A`'s id and its event count.
fn two_batches(e: &Engine) -> (String, String, u64) {
    let t = e.create(TraceOptions::new()).unwrap();
    let a = t.add(1, NodeOptions::new().label("A")).unwrap();
    t.info("before");
    let gone = t.create_space(SpaceOptions::new().label("gone")).unwrap();
    t.delete_space(&gone.id).unwrap();
    e.flush_blocking().unwrap();
    a.complete(Some(json!(2))).unwrap();
    t.info("after");
    let n = t.events(Cursor::Seq(0)).unwrap().len() as u64;
    let (id, a) = (t.id().to_owned(), a.id().to_owned());
    t.release().unwrap();
    (id, a, n)
}

/// Every key/value of the store's trace keyspace (the engine shut down).
fn stored(path: &std::path::Path) -> (Vec<(String, Vec<u8>)>, String) {
    let db = fjall::Database::builder(path).open().unwrap();
    let kv = db
        .keyspace("trace", fjall::KeyspaceCreateOptions::default)
        .unwrap();
    let mut entries = Vec::new();
    for g in kv.iter() {
        let (k, v) = g.into_inner().unwrap();
        entries.push((String::from_utf8(k.to_vec()).unwrap(), v.to_vec()));
    }
    let meta = db
        .keyspace("meta", fjall::KeyspaceCreateOptions::default)
        .unwrap();
    let format = String::from_utf8(meta.get("format").unwrap().unwrap().to_vec()).unwrap();
    (entries, format)
}

#[test]
fn a_first_batch_is_one_key_and_later_batches_one_key_per_kind() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let (id, a, n) = {
        let e = engine(&path);
        let r = two_batches(&e);
        e.shutdown().unwrap();
        r
    };
    let (entries, format) = stored(&path);
    assert_eq!(format, "3");
    let keys: Vec<&String> = entries.iter().map(|(k, _)| k).collect();
    let p = format!("__trace:{id}:");
    assert!(keys.iter().all(|k| k.starts_with(&p)), "{keys:?}");
    // The first batch is one key holding the first event; the deleted
    // space left nothing behind, in it or beside it.
    let first = &entries
        .iter()
        .find(|(k, _)| *k == format!("{p}first"))
        .unwrap()
        .1;
    let first = String::from_utf8_lossy(first);
    assert!(first.starts_with(&format!("events:{:020} ", 1)), "{first}");
    assert!(first.contains(&format!("\nnode:{a} ")), "{first}");
    assert!(first.contains("\ninfo "), "{first}");
    assert!(first.contains("\ndeleted:space:"), "{first}");
    assert!(!keys.iter().any(|k| k.contains(":space:")), "{keys:?}");
    // Later batches: one key per batch of events and of log lines (from
    // their first seq / index), one per changed document.
    let lines = |part: &str| -> Vec<(&String, usize)> {
        entries
            .iter()
            .filter(|(k, _)| k.contains(part))
            .map(|(k, v)| (k, v.split(|b| *b == b'\n').count()))
            .collect()
    };
    let later = lines(":events:");
    assert!(
        !later.is_empty()
            && later
                .iter()
                .all(|(k, _)| *k > &format!("{p}events:{:020}", 1))
    );
    assert_eq!(lines(":logs:"), [(&format!("{p}logs:{:020}", 1), 1)]);
    assert!(keys.contains(&&format!("{p}node:{a}")), "{keys:?}");
    // Both read back as one trace, later keys winning over the sections.
    let e = engine(&path);
    let t = e.open(&id).unwrap();
    let node = t.node(&a).unwrap().unwrap();
    assert_eq!(node.status, NodeStatus::Completed);
    assert_eq!(node.output, Some(json!(2)));
    let logs: Vec<String> = t
        .logs(None)
        .unwrap()
        .into_iter()
        .map(|l| l.message)
        .collect();
    assert_eq!(logs, ["before", "after"]);
    let events = t.events(Cursor::Seq(0)).unwrap();
    assert_eq!(events.len() as u64, n);
    assert!(
        events
            .iter()
            .enumerate()
            .all(|(i, e)| e.seq == i as u64 + 1)
    );
    assert!(t.spaces().unwrap().is_empty());
    t.release().unwrap();
    drop(t);
    assert_eq!(e.info(&id).unwrap().id, id);
    e.remove(&id).unwrap();
    e.shutdown().unwrap();
    drop(e);
    assert!(stored(&path).0.is_empty());
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

/// Replaces the body of `section` in a `first` value by `body`.
fn with_section(first: &[u8], section: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = first;
    while !rest.is_empty() {
        let eol = rest.iter().position(|b| *b == b'\n').unwrap();
        let header = std::str::from_utf8(&rest[..eol]).unwrap();
        let (name, len) = header.rsplit_once(' ').unwrap();
        let len: usize = len.parse().unwrap();
        let old = &rest[eol + 1..eol + 1 + len];
        let new = if name == section { body } else { old };
        out.extend_from_slice(format!("{name} {}\n", new.len()).as_bytes());
        out.extend_from_slice(new);
        out.push(b'\n');
        rest = &rest[eol + 2 + len..];
    }
    out
}

#[test]
fn a_corrupt_value_is_reported_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let (id, a, _) = {
        let e = engine(&path);
        let r = two_batches(&e);
        e.shutdown().unwrap();
        r
    };
    let p = format!("__trace:{id}:");
    let (entries, _) = stored(&path);
    let first = entries
        .iter()
        .find(|(k, _)| *k == format!("{p}first"))
        .unwrap()
        .1
        .clone();
    let node_key = format!("{p}node:{a}");
    let node = entries
        .iter()
        .find(|(k, _)| *k == node_key)
        .unwrap()
        .1
        .clone();
    // Changes the store directly (the engine closed): `Some` puts, `None` removes.
    let put_or_remove = |key: &str, value: Option<&[u8]>| {
        let db = fjall::Database::builder(&path).open().unwrap();
        let kv = db
            .keyspace("trace", fjall::KeyspaceCreateOptions::default)
            .unwrap();
        match value {
            Some(v) => kv.insert(key, v).unwrap(),
            None => kv.remove(key).unwrap(),
        }
        db.persist(fjall::PersistMode::SyncAll).unwrap();
    };
    let put = |key: &str, value: &[u8]| put_or_remove(key, Some(value));
    let corrupt_at = || {
        let e = engine(&path);
        let location = match e.open(&id) {
            Err(Error::Corrupt { location, .. }) => location,
            other => panic!("expected Corrupt, got {other:?}"),
        };
        // The failed open left no trace loaded and the slot free.
        assert!(!e.is_loaded(&id));
        assert_eq!(e.stats().in_use, 0);
        location
    };
    // A key of its own.
    put(&node_key, b"{\"ID\": 12, truncated");
    assert_eq!(corrupt_at(), node_key);
    put(&node_key, &node);
    // A document inside `first` (its own key, written later, wins: the
    // info section is read only while there is no `info` key).
    put(&format!("{p}info"), b"[");
    assert_eq!(corrupt_at(), format!("{p}info"));
    put_or_remove(&format!("{p}info"), None);
    put(
        &format!("{p}first"),
        &with_section(&first, "info", b"{\"id\": 1"),
    );
    assert_eq!(corrupt_at(), format!("{p}first (section info)"));
    // A `first` value whose sections do not parse.
    put(&format!("{p}first"), &first[..first.len() - 3]);
    assert_eq!(corrupt_at(), format!("{p}first"));
    put(&format!("{p}first"), &first);
    let e = engine(&path);
    e.open(&id).unwrap().release().unwrap();
    // Invalid ids never reach the store.
    for bad in ["../../etc", "a:b", "a/b", ".", ".."] {
        assert!(matches!(e.open(bad), Err(Error::InvalidId)), "{bad}");
    }
}
