//! Damaged storage: `open` reports `Error::Corrupt` naming the file (and the
//! line for line files) and never panics; invalid ids are refused before any
//! file is touched.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use tracepool::{
    Cursor, Driver, Durability, Engine, Error, Exhausted, LocalDriver, NodeOptions, ParallelInput,
    SpaceOptions, TraceOptions,
};

struct Fixture {
    _tmp: tempfile::TempDir,
    base: PathBuf,
    dir: PathBuf,
    id: String,
    root: String,
    branch: String,
    space: String,
    events: usize,
}

fn engine(base: &Path) -> Engine {
    Engine::builder()
        .capacity(4)
        .workers(1)
        .on_exhausted(Exhausted::Error)
        .local(base)
        .build()
        .unwrap()
}

/// A stored trace: root -> two branches, logs on root and a branch, one space.
fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().to_path_buf();
    let e = engine(&base);
    let t = e.create(TraceOptions::new().id("corrupt-trace-1")).unwrap();
    let root = t.add("in", NodeOptions::new().label("Root")).unwrap();
    t.info("root log");
    let br = t
        .parallel(vec![
            ParallelInput::new(1, NodeOptions::new().label("A")),
            ParallelInput::new(2, NodeOptions::new().label("B")),
        ])
        .unwrap();
    br[0].info("branch log 1");
    br[0].info("branch log 2");
    let sp = t.create_space(SpaceOptions::new().label("s")).unwrap();
    t.set_space_value(&sp.id, "k", 1).unwrap();
    let events = t.events(Cursor::Seq(0)).unwrap().len();
    let (root, branch) = (root.id().to_owned(), br[0].id().to_owned());
    t.release().unwrap();
    e.flush_blocking().unwrap();
    let dir = base.join("corrupt-").join("corrupt-trace-1");
    assert!(dir.join("trace_info.json").is_file());
    Fixture {
        _tmp: tmp,
        base,
        dir,
        id: "corrupt-trace-1".into(),
        root,
        branch,
        space: sp.id,
        events,
    }
}

/// Opens the trace in a fresh engine and expects `Corrupt` naming `needle`.
fn expect_corrupt(f: &Fixture, needle: &str) -> String {
    let e = engine(&f.base);
    match e.open(&f.id) {
        Err(err @ Error::Corrupt { .. }) => {
            let msg = err.to_string();
            assert!(msg.contains(needle), "{msg:?} does not name {needle:?}");
            msg
        }
        Err(other) => panic!("expected Corrupt naming {needle}, got {other:?}"),
        Ok(_) => panic!("expected Corrupt naming {needle}, but open succeeded"),
    }
}

fn edit_json(path: &Path, f: impl FnOnce(&mut Value)) {
    let mut v: Value = serde_json::from_slice(&fs::read(path).unwrap()).unwrap();
    f(&mut v);
    fs::write(path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

#[test]
fn truncated_document() {
    let f = fixture();
    let p = f.dir.join(format!("nodes/{}.json", f.branch));
    let bytes = fs::read(&p).unwrap();
    fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    expect_corrupt(&f, &format!("nodes/{}.json", f.branch));
}

#[test]
fn garbage_bytes() {
    let f = fixture();
    fs::write(f.dir.join("trace_info.json"), b"\x00\xff\xfe garbage \x80").unwrap();
    expect_corrupt(&f, "trace_info.json");
    let f = fixture();
    fs::write(
        f.dir.join(format!("spaces/{}.json", f.space)),
        b"\xde\xad\xbe\xef",
    )
    .unwrap();
    expect_corrupt(&f, &format!("spaces/{}.json", f.space));
    let f = fixture();
    fs::write(
        f.dir.join(format!("logs/{}.jsonl", f.branch)),
        b"\x01\x02\x03\n",
    )
    .unwrap();
    expect_corrupt(&f, &format!("logs/{}.jsonl", f.branch));
}

#[test]
fn wrong_types() {
    let f = fixture();
    edit_json(&f.dir.join(format!("nodes/{}.json", f.root)), |v| {
        v["Status"] = json!(5)
    });
    expect_corrupt(&f, &format!("nodes/{}.json", f.root));
    let f = fixture();
    edit_json(&f.dir.join(format!("nodes/{}.json", f.root)), |v| {
        v["CreatedAt"] = json!("yesterday")
    });
    expect_corrupt(&f, &format!("nodes/{}.json", f.root));
    let f = fixture();
    fs::write(
        f.dir.join(format!("spaces/{}/data.json", f.space)),
        b"[1, 2, 3]",
    )
    .unwrap();
    expect_corrupt(&f, &format!("spaces/{}/data.json", f.space));
    let f = fixture();
    edit_json(&f.dir.join("trace_info.json"), |v| {
        v["status"] = json!({"no": 1})
    });
    expect_corrupt(&f, "trace_info.json");
    let f = fixture();
    edit_json(&f.dir.join("trace_info.json"), |v| {
        v["id"] = json!("../../etc")
    });
    expect_corrupt(&f, "trace_info.json");
    // A node file holding another node.
    let f = fixture();
    edit_json(&f.dir.join(format!("nodes/{}.json", f.branch)), |v| {
        v["ID"] = json!("zzzzzzzzzzzz")
    });
    expect_corrupt(&f, &format!("nodes/{}.json", f.branch));
}

#[test]
fn missing_root_and_missing_child() {
    // info names a root that has no file
    let f = fixture();
    edit_json(&f.dir.join("trace_info.json"), |v| {
        v["__tracepool_root"] = json!("nosuchnode00")
    });
    expect_corrupt(&f, "nodes/nosuchnode00.json");
    // the root's file is gone
    let f = fixture();
    fs::remove_file(f.dir.join(format!("nodes/{}.json", f.root))).unwrap();
    expect_corrupt(&f, "nodes/");
    // a node refers to a child that has no file
    let f = fixture();
    edit_json(&f.dir.join(format!("nodes/{}.json", f.branch)), |v| {
        v["ChildrenIDs"] = json!(["missingchild"])
    });
    let msg = expect_corrupt(&f, &format!("nodes/{}.json", f.branch));
    assert!(msg.contains("missingchild"), "{msg}");
    // trace_info.json itself is missing while the directory exists
    let f = fixture();
    fs::remove_file(f.dir.join("trace_info.json")).unwrap();
    expect_corrupt(&f, "trace_info.json");
}

#[test]
fn torn_final_line_is_ignored_and_repaired() {
    let f = fixture();
    let updates = f.dir.join("updates.jsonl");
    let mut bytes = fs::read(&updates).unwrap();
    bytes.extend_from_slice(br#"{"type":"node_start","trace_id":"corr"#);
    fs::write(&updates, &bytes).unwrap();
    let logs = f.dir.join(format!("logs/{}.jsonl", f.branch));
    let mut lb = fs::read(&logs).unwrap();
    lb.extend_from_slice(br#"{"Timestamp":1,"Lev"#);
    fs::write(&logs, &lb).unwrap();

    let e = engine(&f.base);
    let t = e.open(&f.id).unwrap();
    assert_eq!(t.events(Cursor::Seq(0)).unwrap().len(), f.events);
    assert_eq!(t.logs(Some(&f.branch)).unwrap().len(), 2);
    // Continue: the torn tails are cut before appending, numbering continues.
    t.add("more", NodeOptions::new()).unwrap();
    t.node_handle_by_id(&f.branch).unwrap().info("after crash");
    t.release().unwrap();
    let t = e.open(&f.id).unwrap();
    let evs = t.events(Cursor::Seq(0)).unwrap();
    assert!(evs.len() > f.events);
    for (i, ev) in evs.iter().enumerate() {
        assert_eq!(ev.seq, i as u64 + 1);
    }
    assert_eq!(t.logs(Some(&f.branch)).unwrap().len(), 3);
    t.release().unwrap();
}

#[test]
fn bad_line_in_the_middle_names_file_and_line() {
    let f = fixture();
    let updates = f.dir.join("updates.jsonl");
    let text = fs::read_to_string(&updates).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines[2] = "{\"type\": \"node_start\", oops";
    fs::write(&updates, lines.join("\n") + "\n").unwrap();
    expect_corrupt(&f, "updates.jsonl:3");
    // A line with a wrong seq is corrupt too.
    let f = fixture();
    let updates = f.dir.join("updates.jsonl");
    let text = fs::read_to_string(&updates).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines.remove(1);
    fs::write(&updates, lines.join("\n") + "\n").unwrap();
    expect_corrupt(&f, "updates.jsonl:2");
    // A bad log line in the middle.
    let f = fixture();
    let logs = f.dir.join(format!("logs/{}.jsonl", f.branch));
    let text = fs::read_to_string(&logs).unwrap();
    fs::write(&logs, format!("not json\n{text}")).unwrap();
    expect_corrupt(&f, &format!("logs/{}.jsonl:1", f.branch));
}

#[test]
fn huge_file_is_refused() {
    let f = fixture();
    let p = f.dir.join(format!("nodes/{}.json", f.branch));
    // Sparse: takes no disk space.
    let file = fs::OpenOptions::new().write(true).open(&p).unwrap();
    file.set_len(LocalDriver::DEFAULT_MAX_DOCUMENT_SIZE + 1)
        .unwrap();
    drop(file);
    let msg = expect_corrupt(&f, &format!("nodes/{}.json", f.branch));
    assert!(msg.contains("limit"), "{msg}");
    // A smaller cap set on the driver applies to every file.
    let f = fixture();
    let driver = LocalDriver::new(&f.base, Durability::Buffered)
        .unwrap()
        .max_document_size(64);
    match driver.load(&f.id) {
        Err(e @ Error::Corrupt { .. }) => assert!(e.to_string().contains(".json"), "{e}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn line_files_are_capped_per_line_not_in_total() {
    // A cap just above the fixture's longest line: the event log is several
    // times longer than that in total, and loads.
    let f = fixture();
    let updates = f.dir.join("updates.jsonl");
    let text = fs::read(&updates).unwrap();
    let longest = text.split(|&b| b == b'\n').map(<[u8]>::len).max().unwrap();
    let cap = longest as u64 + 16;
    assert!(
        text.len() as u64 > 3 * cap,
        "{} bytes, cap {cap}",
        text.len()
    );
    let capped = |f: &Fixture| {
        LocalDriver::new(&f.base, Durability::Buffered)
            .unwrap()
            .max_line_size(cap)
    };
    let stored = capped(&f).load(&f.id).unwrap().unwrap();
    assert_eq!(stored.events.len(), f.events);
    // A line longer than the cap is corrupt, named by file and line.
    let mut bytes = fs::read(&updates).unwrap();
    let n = bytes.iter().filter(|&&b| b == b'\n').count();
    bytes.extend_from_slice(format!("{{\"pad\": \"{}\"}}\n", "x".repeat(longest + 32)).as_bytes());
    fs::write(&updates, &bytes).unwrap();
    match capped(&f).load(&f.id) {
        Err(e @ Error::Corrupt { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(&format!("updates.jsonl:{}", n + 1)), "{msg}");
            assert!(msg.contains("limit"), "{msg}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // The same in a log file, and inside an archive.
    let f = fixture();
    let logs = f.dir.join(format!("logs/{}.jsonl", f.branch));
    let mut bytes = fs::read(&logs).unwrap();
    bytes.extend_from_slice(format!("{{\"pad\": \"{}\"}}\n", "x".repeat(longest + 32)).as_bytes());
    fs::write(&logs, &bytes).unwrap();
    let driver = capped(&f);
    match driver.load(&f.id) {
        Err(e @ Error::Corrupt { .. }) => {
            assert!(
                e.to_string().contains(&format!("{}.jsonl:3", f.branch)),
                "{e}"
            )
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    LocalDriver::new(&f.base, Durability::Buffered)
        .unwrap()
        .archive(&f.id)
        .unwrap();
    match driver.load(&f.id) {
        Err(e @ Error::Corrupt { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains(".tar.gz!/logs/") && msg.contains(".jsonl:3"),
                "{msg}"
            )
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn corrupt_archive_is_reported() {
    let f = fixture();
    let driver = LocalDriver::new(&f.base, Durability::Buffered).unwrap();
    driver.archive(&f.id).unwrap();
    let archive = f.base.join("corrupt-").join(format!("{}.tar.gz", f.id));
    let bytes = fs::read(&archive).unwrap();
    fs::write(&archive, &bytes[..bytes.len() / 2]).unwrap();
    expect_corrupt(&f, ".tar.gz");
    fs::write(&archive, b"not gzip at all").unwrap();
    expect_corrupt(&f, ".tar.gz");
    // Marker without archive.
    fs::remove_file(&archive).unwrap();
    expect_corrupt(&f, ".tar.gz");
}

fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    fn rec(d: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for e in fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.insert(p.clone(), Vec::new());
                rec(&p, out);
            } else {
                out.insert(p.clone(), fs::read(&p).unwrap());
            }
        }
    }
    rec(dir, &mut out);
    out
}

#[test]
fn invalid_ids_touch_nothing() {
    let f = fixture();
    // A decoy the traversal ids would reach.
    let before = snapshot(&f.base);
    let e = engine(&f.base);
    let driver = LocalDriver::new(&f.base, Durability::Fsync).unwrap();
    let abs = f.base.display().to_string();
    let bad = [
        "../../etc",
        "a/b",
        ".",
        "..",
        abs.as_str(),
        "/etc/passwd",
        "a\0b",
        "",
        "corrupt-trace-1/../x",
        "\\windows",
    ];
    for id in bad {
        let inv =
            |r: Result<(), Error>| assert!(matches!(r, Err(Error::InvalidId)), "{id:?}: {r:?}");
        inv(e.open(id).map(|_| ()));
        inv(e.create(TraceOptions::new().id(id)).map(|_| ()));
        inv(e.exists(id).map(|_| ()));
        inv(e.info(id).map(|_| ()));
        inv(e.remove(id));
        inv(driver.load(id).map(|_| ()));
        inv(driver.exists(id).map(|_| ()));
        inv(driver.info(id).map(|_| ()));
        inv(driver.remove(id).map(|_| ()));
        inv(driver.archive(id));
    }
    assert_eq!(snapshot(&f.base), before, "the directory is unchanged");
}
