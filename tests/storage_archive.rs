//! Archiving with the local driver: atomic archive + marker, archived traces
//! stay readable without extraction, `remove` deletes every artefact, and
//! leftovers of a crash mid-archive do not break reads.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use tracepool::{
    Cursor, Driver, Durability, Engine, Exhausted, LocalDriver, NodeOptions, ParallelInput,
    SpaceOptions, TraceOptions, TraceStatus,
};

fn engine(base: &Path) -> Engine {
    Engine::builder()
        .capacity(4)
        .workers(1)
        .on_exhausted(Exhausted::Wait(std::time::Duration::from_secs(5)))
        .local(base)
        .build()
        .unwrap()
}

fn shard(base: &Path, id: &str) -> PathBuf {
    base.join(if id.len() >= 8 { &id[..8] } else { "others" })
}

/// A finished trace with a few nodes, logs and a space.
fn fill(trace: &tracepool::Trace) {
    trace.add("in", NodeOptions::new().label("Root")).unwrap();
    trace.info("hello");
    let br = trace
        .parallel(vec![
            ParallelInput::new(1, NodeOptions::new().label("A")),
            ParallelInput::new(2, NodeOptions::new().label("B")),
        ])
        .unwrap();
    br[0].complete(Some(json!("a"))).unwrap();
    br[1].complete(None).unwrap();
    let sp = trace
        .create_space(SpaceOptions::new().label("mem"))
        .unwrap();
    trace.set_space_value(&sp.id, "k", json!({"v": 1})).unwrap();
}

fn archive_entries(path: &Path) -> Vec<(String, Vec<u8>)> {
    let f = fs::File::open(path).unwrap();
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(f));
    let mut out = Vec::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let p = e.path().unwrap().display().to_string();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        out.push((p, data));
    }
    out
}

#[test]
fn auto_archive_on_mark_complete() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    let engine = engine(base);
    let trace = engine
        .create(TraceOptions::new().auto_archive(true).created_by("me"))
        .unwrap();
    let id = trace.id().to_owned();
    fill(&trace);
    let nodes = trace.all_nodes().unwrap();
    let events = trace.events(Cursor::Seq(0)).unwrap();
    trace.mark_complete().unwrap();
    // The archive is made by the trace's worker: wait for it.
    engine.flush_blocking().unwrap();
    let events_len = events.len() + 1; // + complete

    let d = shard(base, &id);
    let archive = d.join(format!("{id}.tar.gz"));
    let marker = d.join(format!(".{id}.archived"));
    assert!(archive.is_file(), "archive written");
    assert!(marker.is_file(), "marker written");
    assert!(!d.join(&id).exists(), "directory removed");
    let stamp = fs::read_to_string(&marker).unwrap();
    assert!(
        stamp.len() == 20 && stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T',
        "RFC 3339: {stamp}"
    );
    // No temp files left: the shard holds the archive, the marker and its
    // (empty) temp directory.
    let mut names: Vec<String> = fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 3, "{names:?}");
    assert_eq!(names[0], format!(".{id}.archived"));
    assert_eq!(names[1], ".tmp");
    assert_eq!(fs::read_dir(d.join(".tmp")).unwrap().count(), 0);

    // Entries relative to the trace dir; trace_info.json rewritten archived.
    let entries = archive_entries(&archive);
    assert_eq!(entries[0].0, "trace_info.json");
    let info: Value = serde_json::from_slice(&entries[0].1).unwrap();
    assert_eq!(info["archived"], true);
    assert!(info["archived_at"].as_i64().unwrap() > 0);
    assert_eq!(info["status"], "completed");
    assert!(entries.iter().any(|(p, _)| p == "updates.jsonl"));
    assert!(
        entries
            .iter()
            .all(|(p, _)| !p.starts_with('/') && !p.contains(".."))
    );
    assert!(
        entries
            .iter()
            .filter(|(p, _)| p.starts_with("nodes/") && p.ends_with(".json"))
            .count()
            == 3
    );

    // Still loaded; release is clean.
    assert!(engine.is_loaded(&id));
    assert!(trace.trace_info().unwrap().archived);
    trace.release().unwrap();
    assert_eq!(engine.stats().persist_errors, 0);

    // Readable from the archive, by this engine and a new one.
    let info = engine.info(&id).unwrap();
    assert!(info.archived);
    assert_eq!(info.status, TraceStatus::Completed);
    let engine2 = self::engine(base);
    assert!(engine2.exists(&id).unwrap());
    let t = engine2.open(&id).unwrap();
    assert_eq!(t.all_nodes().unwrap().len(), nodes.len());
    assert_eq!(t.events(Cursor::Seq(0)).unwrap().len(), events_len);
    assert_eq!(t.status(), TraceStatus::Completed);
    assert!(t.trace_info().unwrap().archived);
    assert_eq!(t.logs(None).unwrap().len(), 1);
    assert_eq!(t.spaces().unwrap().len(), 1);
    t.release().unwrap();
    // Reads had no side effects: nothing extracted.
    assert!(!d.join(&id).exists());
    let driver = LocalDriver::new(base, Durability::Buffered).unwrap();
    assert_eq!(driver.list().unwrap(), vec![id.clone()]);

    // create with the id of an archived trace
    assert!(matches!(
        engine2.create(TraceOptions::new().id(id.clone())),
        Err(tracepool::Error::AlreadyExists)
    ));

    // remove deletes archive and marker
    engine2.remove(&id).unwrap();
    assert!(!archive.exists());
    assert!(!marker.exists());
    assert!(!engine2.exists(&id).unwrap());
    assert!(driver.list().unwrap().is_empty());
}

#[test]
fn writes_to_an_archived_trace_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let driver = std::sync::Arc::new(LocalDriver::new(tmp.path(), Durability::Fsync).unwrap());
    // A refused batch is retried until drain_timeout: keep it short here.
    let engine = Engine::builder()
        .capacity(4)
        .workers(1)
        .drain_timeout(std::time::Duration::from_millis(300))
        .local(tmp.path())
        .build()
        .unwrap();
    let t = engine.create(TraceOptions::new().id("arch-1")).unwrap();
    fill(&t);
    t.release().unwrap();
    engine.flush_blocking().unwrap();
    driver.archive("arch-1").unwrap();
    // Archiving again is a no-op.
    driver.archive("arch-1").unwrap();
    assert!(driver.exists("arch-1").unwrap());
    assert!(!tmp.path().join("others/arch-1").exists());
    let t = engine.open("arch-1").unwrap();
    assert!(t.trace_info().unwrap().archived);
    // The trace is not finished, so it accepts a mutation, but storage refuses it.
    t.add("more", NodeOptions::new()).unwrap();
    t.release().unwrap();
    // Release does no I/O; the refusal comes back through flush.
    let err = engine.flush_blocking().unwrap_err();
    assert!(err.to_string().contains("archived"), "{err}");
    assert!(
        !tmp.path().join("others/arch-1").exists(),
        "no directory recreated"
    );
    // The refused batch is retried until the drain's deadline (release +
    // drain_timeout). An `open` started now would wait its own
    // drain_timeout, ending a moment after that deadline: a race with the
    // drain's last attempt that a loaded machine loses now and then
    // ("still on their way ... try again later"). Wait for the drain to
    // give up first.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while engine.stats().draining > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the drain never ended"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(engine.open("arch-1").unwrap().all_nodes().unwrap().len(), 3);
}

#[test]
fn crash_leftovers_do_not_break_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    let driver = LocalDriver::new(base, Durability::Buffered).unwrap();
    let engine = engine(base);
    for id in ["crash-a", "crash-b", "crash-c"] {
        let t = engine.create(TraceOptions::new().id(id)).unwrap();
        fill(&t);
        t.release().unwrap();
    }
    engine.flush_blocking().unwrap();
    let others = base.join("others");

    // 1. A partially written temp archive (crash while writing it).
    fs::create_dir_all(others.join(".tmp")).unwrap();
    fs::write(
        others.join(".tmp/.crash-a.tar.gz.tmp.00ff00ff00ff00ff"),
        b"\x1f\x8b\x08garbage",
    )
    .unwrap();
    let t = engine.open("crash-a").unwrap();
    assert_eq!(t.all_nodes().unwrap().len(), 3);
    engine.release("crash-a").unwrap();
    assert!(engine.info("crash-a").unwrap().id == "crash-a");
    assert_eq!(
        driver.list().unwrap(),
        vec!["crash-a", "crash-b", "crash-c"]
    );
    // Archiving still works afterwards, and remove cleans the leftover too.
    driver.archive("crash-a").unwrap();
    assert_eq!(
        engine.open("crash-a").unwrap().all_nodes().unwrap().len(),
        3
    );
    engine.remove("crash-a").unwrap();
    // The shard's temp directory goes away with its last leftover.
    let left: Vec<String> = fs::read_dir(&others)
        .unwrap()
        .chain(fs::read_dir(others.join(".tmp")).into_iter().flatten())
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("crash-a"))
        .collect();
    assert!(left.is_empty(), "{left:?}");

    // 2. Crash after the archive was renamed into place, before the marker:
    //    the directory is still authoritative.
    driver.archive("crash-b").unwrap();
    let archived_copy = fs::read(others.join("crash-b.tar.gz")).unwrap();
    engine.remove("crash-b").unwrap();
    let t = engine.create(TraceOptions::new().id("crash-b")).unwrap();
    t.add("only", NodeOptions::new()).unwrap();
    t.release().unwrap();
    engine.flush_blocking().unwrap();
    fs::write(others.join("crash-b.tar.gz"), &archived_copy).unwrap();
    let t = engine.open("crash-b").unwrap();
    assert_eq!(
        t.all_nodes().unwrap().len(),
        1,
        "directory wins without a marker"
    );
    assert!(!t.trace_info().unwrap().archived);
    t.release().unwrap();

    // 3. Crash after the marker, before the directory was removed: the
    //    archive is authoritative, and archiving again finishes the job.
    let c_dir = others.join("crash-c");
    let backup = tmp.path().join("backup-c");
    copy_dir(&c_dir, &backup);
    driver.archive("crash-c").unwrap();
    copy_dir(&backup, &c_dir);
    fs::remove_file(c_dir.join("trace_info.json")).unwrap(); // half-deleted
    let t = engine.open("crash-c").unwrap();
    assert!(t.trace_info().unwrap().archived);
    assert_eq!(t.all_nodes().unwrap().len(), 3);
    t.release().unwrap();
    driver.archive("crash-c").unwrap();
    assert!(!c_dir.exists());
    assert!(engine.info("crash-c").unwrap().archived);
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            fs::copy(e.path(), target).unwrap();
        }
    }
}
