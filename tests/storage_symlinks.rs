//! Symbolic links in the storage directory are never followed (issue 10,
//! point 1). A stored file or directory replaced by a link to a copy outside
//! the base is refused: reads (`open`, `info`) give `Corrupt` naming it,
//! writes give `Storage` naming it, `remove` never deletes through a link,
//! and the outside copy is left byte for byte as it was.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use tracepool::{Engine, Error, Exhausted, NodeOptions, TraceOptions};

const ID: &str = "linked-trace-1";

struct Fixture {
    _tmp: tempfile::TempDir,
    base: PathBuf,
    dir: PathBuf,
    outside: PathBuf,
    root: String,
}

fn engine(base: &Path) -> Engine {
    Engine::builder()
        .capacity(4)
        .workers(1)
        .on_exhausted(Exhausted::Error)
        .drain_timeout(std::time::Duration::from_millis(200))
        .local(base)
        .build()
        .unwrap()
}

/// A stored trace (root node with a log line) and an empty directory
/// outside the base.
fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    let e = engine(&base);
    let t = e.create(TraceOptions::new().id(ID)).unwrap();
    let root = t.add("in", NodeOptions::new().label("Root")).unwrap();
    t.info("root log");
    let root = root.id().to_owned();
    t.release().unwrap();
    let dir = base.join(&ID[..8]).join(ID);
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    Fixture {
        _tmp: tmp,
        base,
        dir,
        outside,
        root,
    }
}

/// Moves `rel` (a file or directory of the trace) outside the base and puts
/// a link to it in its place. Line files get an unfinished last line, which
/// a write through the link would cut off.
fn link_out(f: &Fixture, rel: &str) {
    let inside = f.dir.join(rel);
    let target = f.outside.join(rel.replace('/', "_"));
    fs::rename(&inside, &target).unwrap();
    if rel.ends_with(".jsonl") {
        let mut bytes = fs::read(&target).unwrap();
        bytes.extend_from_slice(b"{\"unfinished\": ");
        fs::write(&target, bytes).unwrap();
    }
    symlink(&target, &inside).unwrap();
}

fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(snapshot(&p));
        } else {
            out.insert(p.clone(), fs::read(&p).unwrap());
        }
    }
    out
}

fn names(err: &Error, needle: &str) -> bool {
    err.to_string().contains(needle)
}

#[test]
fn reads_refuse_a_link_as_corrupt_naming_it() {
    for rel in [
        "trace_info.json".to_owned(),
        "updates.jsonl".to_owned(),
        "nodes".to_owned(),
        "logs".to_owned(),
    ] {
        let f = fixture();
        link_out(&f, &rel);
        let outside = snapshot(&f.outside);
        let e = engine(&f.base);
        match e.open(ID) {
            Err(err @ Error::Corrupt { .. }) => {
                assert!(names(&err, &rel), "{rel}: {err}");
                assert!(names(&err, "symbolic link"), "{rel}: {err}");
            }
            Err(other) => panic!("{rel}: expected Corrupt, got {other:?}"),
            Ok(_) => panic!("{rel}: open followed the link"),
        }
        if rel == "trace_info.json" {
            assert!(matches!(e.info(ID), Err(Error::Corrupt { .. })), "{rel}");
        }
        assert_eq!(snapshot(&f.outside), outside, "{rel}: outside untouched");
    }
    // A node document and a log file.
    let f = fixture();
    link_out(&f, &format!("nodes/{}.json", f.root));
    let err = engine(&f.base).open(ID).map(|_| ()).unwrap_err();
    assert!(
        matches!(err, Error::Corrupt { .. }) && names(&err, &f.root),
        "{err}"
    );
    let f = fixture();
    link_out(&f, &format!("logs/{}.jsonl", f.root));
    let err = engine(&f.base).open(ID).map(|_| ()).unwrap_err();
    assert!(
        matches!(err, Error::Corrupt { .. }) && names(&err, &f.root),
        "{err}"
    );
}

#[test]
fn writes_refuse_a_link_as_a_storage_error_and_touch_nothing_outside() {
    let cases = [
        ("updates.jsonl", "updates.jsonl"),
        ("logs/{root}.jsonl", "logs/"),
        ("trace_info.json", "trace_info.json"),
        ("nodes/{root}.json", "nodes/"),
        ("nodes", "nodes"),
    ];
    for (rel, needle) in cases {
        let f = fixture();
        let rel = rel.replace("{root}", &f.root);
        let e = engine(&f.base);
        // Loaded from storage while the files were still regular ...
        let t = e.open(ID).unwrap();
        // ... then a file is replaced by a link; the next batch (the first
        // write of this process to the trace: it repairs torn tails first)
        // must not write through it.
        link_out(&f, &rel);
        let outside = snapshot(&f.outside);
        let root = t.node_handle_by_id(&f.root).unwrap();
        root.info("after the swap");
        root.set_metadata("k", 1).unwrap();
        t.add("next", NodeOptions::new()).unwrap();
        t.release().unwrap();
        // Release does no I/O; the refused batch is reported by flush.
        match e.flush_blocking() {
            Err(err @ Error::Storage { .. }) => {
                assert!(names(&err, needle), "{rel}: {err}");
                assert!(names(&err, "symbolic link"), "{rel}: {err}");
            }
            other => panic!("{rel}: expected a Storage error, got {other:?}"),
        }
        assert_eq!(snapshot(&f.outside), outside, "{rel}: outside untouched");
        e.shutdown().unwrap_or(());
    }
}

#[test]
fn remove_never_deletes_through_a_link() {
    // The shard directory is a link to a directory holding a copy of the trace.
    let f = fixture();
    let shard = f.base.join(&ID[..8]);
    let moved = f.outside.join("shard");
    fs::rename(&shard, &moved).unwrap();
    symlink(&moved, &shard).unwrap();
    let outside = snapshot(&f.outside);
    let e = engine(&f.base);
    let err = e.remove(ID).unwrap_err();
    assert!(
        matches!(err, Error::Storage { .. }) && names(&err, &ID[..8]),
        "{err}"
    );
    assert_eq!(
        snapshot(&f.outside),
        outside,
        "nothing deleted through the link"
    );
    assert!(matches!(e.open(ID), Err(Error::Corrupt { .. })));

    // The trace directory is a link: remove deletes the link itself.
    let f = fixture();
    let moved = f.outside.join("trace");
    fs::rename(&f.dir, &moved).unwrap();
    symlink(&moved, &f.dir).unwrap();
    let outside = snapshot(&f.outside);
    let e = engine(&f.base);
    e.remove(ID).unwrap();
    assert!(fs::symlink_metadata(&f.dir).is_err(), "the link is gone");
    assert_eq!(snapshot(&f.outside), outside, "its target is untouched");
    assert!(!e.exists(ID).unwrap());
}
