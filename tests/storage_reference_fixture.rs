//! A trace directory written the way the reference's local driver writes it
//! (spec §5.2; formats §2 and §5.1), built by hand, opens and continues.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use tracepool::{
    Cursor, Engine, Error, EventKind, Exhausted, Level, NodeOptions, NodeStatus, TraceStatus,
};

const ID: &str = "20250101123456789012";
const ROOT: &str = "rootnode0001";
const A: &str = "branchaaaaaa";
const B: &str = "branchbbbbbb";
const MERGE: &str = "mergenode001";
const SPACE: &str = "memspace0001";
const T0: i64 = 1_735_700_000_000;

fn write_pretty(path: &Path, v: &Value) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    // Go's json.MarshalIndent(v, "", "  "): two-space indentation.
    fs::write(path, serde_json::to_string_pretty(v).unwrap()).unwrap();
}

fn lines(path: &Path, vs: &[Value]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut s = String::new();
    for v in vs {
        s.push_str(&serde_json::to_string(v).unwrap());
        s.push('\n');
    }
    fs::write(path, s).unwrap();
}

/// `persistNode`: PascalCase, children by id, empty fields omitted.
fn persist_node(
    id: &str,
    parents: &[&str],
    children: &[&str],
    label: &str,
    status: &str,
    t: i64,
    end: i64,
) -> Value {
    let mut m = serde_json::Map::new();
    m.insert("ID".into(), json!(id));
    if !parents.is_empty() {
        m.insert("ParentIDs".into(), json!(parents));
    }
    if !children.is_empty() {
        m.insert("ChildrenIDs".into(), json!(children));
    }
    m.insert("Label".into(), json!(label));
    m.insert("Type".into(), json!("step"));
    m.insert("Status".into(), json!(status));
    m.insert("Input".into(), json!({"from": label}));
    if end != 0 {
        m.insert("Output".into(), json!({"done": label}));
    }
    m.insert("CreatedAt".into(), json!(t));
    m.insert("StartTime".into(), json!(t));
    if end != 0 {
        m.insert("EndTime".into(), json!(end));
    }
    m.insert("UpdatedAt".into(), json!(end.max(t)));
    Value::Object(m)
}

/// The in-memory/event shape of a node (`TraceNode`, snake_case).
fn trace_node(id: &str, parents: &[&str], label: &str, t: i64) -> Value {
    json!({
        "id": id, "parent_ids": parents, "children": [],
        "label": label, "type": "step", "icon": "", "description": "",
        "status": "running", "input": {"from": label},
        "created_at": t, "start_time": t, "end_time": 0, "updated_at": t
    })
}

fn update(kind: &str, node: &str, space: &str, t: i64, data: Value) -> Value {
    json!({"type": kind, "trace_id": ID, "node_id": node, "space_id": space, "timestamp": t, "data": data})
}

fn trace_log(node: &str, level: &str, msg: &str, data: Value, t: i64) -> Value {
    json!({"Timestamp": t, "Level": level, "Message": msg, "Data": data, "NodeID": node})
}

/// Writes the fixture; returns the trace directory and the number of events.
fn write_fixture(base: &Path, complete: bool) -> (PathBuf, usize) {
    let dir = base.join(&ID[..8]).join(ID);
    write_pretty(
        &dir.join("trace_info.json"),
        &json!({
            "id": ID,
            "driver": "local",
            "status": "pending",
            "options": [base.display().to_string()],
            "created_at": T0,
            "updated_at": T0,
            "archived": false,
            "__yao_created_by": "user-1",
            "__yao_team_id": "team-1",
            "__yao_tenant_id": "tenant-1",
            "metadata": {"source": "fixture"}
        }),
    );
    write_pretty(
        &dir.join(format!("nodes/{ROOT}.json")),
        &persist_node(ROOT, &[], &[A, B], "Root", "completed", T0 + 1, T0 + 2),
    );
    write_pretty(
        &dir.join(format!("nodes/{A}.json")),
        &persist_node(A, &[ROOT], &[MERGE], "A", "completed", T0 + 3, T0 + 5),
    );
    write_pretty(
        &dir.join(format!("nodes/{B}.json")),
        &persist_node(B, &[ROOT], &[MERGE], "B", "completed", T0 + 3, T0 + 6),
    );
    write_pretty(
        &dir.join(format!("nodes/{MERGE}.json")),
        &persist_node(MERGE, &[A, B], &[], "Merge", "running", T0 + 7, 0),
    );
    let root_logs = [
        trace_log(ROOT, "info", "starting %s", json!(["job"]), T0 + 1),
        trace_log(ROOT, "debug", "details", Value::Null, T0 + 2),
    ];
    let a_logs = [trace_log(
        A,
        "warn",
        "slow branch",
        json!([{"ms": 500}]),
        T0 + 4,
    )];
    lines(&dir.join(format!("logs/{ROOT}.jsonl")), &root_logs);
    lines(&dir.join(format!("logs/{A}.jsonl")), &a_logs);
    write_pretty(
        &dir.join(format!("spaces/{SPACE}.json")),
        &json!({
            "id": SPACE, "label": "Memory", "type": "kv", "icon": "db", "description": "scratch",
            "ttl": 60, "metadata": {"owner": "a"}, "created_at": T0 + 3, "updated_at": T0 + 4
        }),
    );
    write_pretty(
        &dir.join(format!("spaces/{SPACE}/data.json")),
        &json!({"key1": "value1", "key2": 123, "key3": {"nested": "data"}}),
    );
    let mut ups = vec![
        update("init", "", "", T0, json!({"trace_id": ID})),
        update(
            "node_start",
            ROOT,
            "",
            T0 + 1,
            json!({"node": trace_node(ROOT, &[], "Root", T0 + 1)}),
        ),
        update("log_added", ROOT, "", T0 + 1, root_logs[0].clone()),
        update("log_added", ROOT, "", T0 + 2, root_logs[1].clone()),
        update(
            "node_complete",
            ROOT,
            "",
            T0 + 2,
            json!({"node_id": ROOT, "status": "success", "end_time": T0 + 2, "duration": 1}),
        ),
        update(
            "node_start",
            "",
            "",
            T0 + 3,
            json!({"nodes": [trace_node(A, &[ROOT], "A", T0 + 3), trace_node(B, &[ROOT], "B", T0 + 3)]}),
        ),
        update(
            "space_created",
            "",
            SPACE,
            T0 + 3,
            json!({"id": SPACE, "label": "Memory"}),
        ),
        update(
            "memory_add",
            "",
            SPACE,
            T0 + 4,
            json!({"type": SPACE, "item": {"id": "key1", "type": SPACE, "title": "Memory", "content": "value1", "timestamp": T0 + 4}}),
        ),
        update("log_added", A, "", T0 + 4, a_logs[0].clone()),
        update(
            "node_complete",
            A,
            "",
            T0 + 5,
            json!({"node_id": A, "status": "success", "end_time": T0 + 5, "duration": 2, "output": {"done": "A"}}),
        ),
        update(
            "node_complete",
            B,
            "",
            T0 + 6,
            json!({"node_id": B, "status": "success", "end_time": T0 + 6, "duration": 3}),
        ),
        update(
            "node_start",
            MERGE,
            "",
            T0 + 7,
            json!({"node": trace_node(MERGE, &[A, B], "Merge", T0 + 7)}),
        ),
    ];
    if complete {
        ups.push(update(
            "complete",
            "",
            "",
            T0 + 8,
            json!({"trace_id": ID, "status": "completed", "total_duration": 8}),
        ));
    }
    lines(&dir.join("updates.jsonl"), &ups);
    (dir, ups.len())
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

#[test]
fn reference_directory_opens_and_continues() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, n_events) = write_fixture(tmp.path(), false);
    let engine = engine(tmp.path());
    assert!(engine.exists(ID).unwrap());
    let info = engine.info(ID).unwrap();
    assert_eq!(info.created_by.as_deref(), Some("user-1"));
    assert_eq!(info.team_id.as_deref(), Some("team-1"));
    assert_eq!(info.tenant_id.as_deref(), Some("tenant-1"));
    assert!(!info.archived);

    let trace = engine.open(ID).unwrap();
    // Nodes: root with two parallel children and a merge node with two parents.
    let root = trace.root().unwrap().expect("root");
    assert_eq!(root.id, ROOT);
    let mut kids = root.children.clone();
    kids.sort();
    assert_eq!(kids, vec![A.to_owned(), B.to_owned()]);
    let all = trace.all_nodes().unwrap();
    assert_eq!(all.len(), 4);
    let merge = trace.node(MERGE).unwrap().expect("merge");
    assert_eq!(merge.parent_ids, vec![A.to_owned(), B.to_owned()]);
    assert_eq!(merge.status, NodeStatus::Running);
    assert_eq!(merge.input, Some(json!({"from": "Merge"})));
    let a = trace.node(A).unwrap().unwrap();
    assert_eq!(a.status, NodeStatus::Completed);
    assert_eq!(a.output, Some(json!({"done": "A"})));
    assert_eq!(a.end_time, T0 + 5);
    // The reference does not store the cursor: the leaves are current.
    let current: Vec<String> = trace
        .current_nodes()
        .unwrap()
        .into_iter()
        .map(|n| n.id)
        .collect();
    assert_eq!(current, vec![MERGE.to_owned()]);
    assert_eq!(trace.status(), TraceStatus::Running);

    // Logs: raw messages and args, in order.
    let logs = trace.logs(None).unwrap();
    assert_eq!(logs.len(), 3);
    assert_eq!(logs[0].message, "starting %s");
    assert_eq!(logs[0].data, json!(["job"]));
    assert_eq!(logs[1].level, Level::Debug);
    assert_eq!(logs[2].node_id, A);
    assert_eq!(trace.logs(Some(ROOT)).unwrap().len(), 2);

    // Spaces.
    let sp = trace.space_data(SPACE).unwrap().expect("space");
    assert_eq!(sp.info.label, "Memory");
    assert_eq!(sp.info.ttl, 60);
    assert_eq!(sp.data.len(), 3);
    assert_eq!(sp.data["key2"], json!(123));
    assert_eq!(sp.data["key3"]["nested"], "data");

    // Events: numbered 1..N by position.
    let events = trace.events(Cursor::Seq(0)).unwrap();
    assert_eq!(events.len(), n_events);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1);
        // Replays (subscriptions, SSE) carry the number in the wire JSON too.
        let wire: serde_json::Value = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(wire["seq"], i as u64 + 1, "{}", e.to_json());
    }
    assert_eq!(events[0].kind, EventKind::Init);
    assert_eq!(events[5].kind, EventKind::NodeStart);
    assert_eq!(events[5].data()["nodes"][1]["id"], B);

    // Continue: the new node joins the merge node; numbering continues.
    let next = trace.add("more", NodeOptions::new().label("Next")).unwrap();
    assert_eq!(next.data().unwrap().parent_ids, vec![MERGE.to_owned()]);
    trace.info("continued");
    let after = trace.events(Cursor::Seq(n_events as u64 + 1)).unwrap();
    assert!(after.len() >= 2);
    assert_eq!(after[0].seq, n_events as u64 + 1);
    // (auto-completing the merge node, then starting the new one)
    assert!(after.iter().any(|e| e.kind == EventKind::NodeStart));
    trace.release().unwrap();
    engine.flush_blocking().unwrap();

    // What we appended is readable by both: reference lines untouched, ours added.
    let text = fs::read_to_string(dir.join("updates.jsonl")).unwrap();
    let all_lines: Vec<&str> = text.lines().collect();
    assert_eq!(all_lines.len(), n_events + after.len());
    assert!(!all_lines[0].contains("\"seq\""));
    assert!(all_lines[n_events].contains(&format!("\"seq\":{}", n_events + 1)));
    let merge_doc: Value =
        serde_json::from_slice(&fs::read(dir.join(format!("nodes/{MERGE}.json"))).unwrap())
            .unwrap();
    assert_eq!(merge_doc["ChildrenIDs"], json!([next.id()]));
    let info_doc: Value =
        serde_json::from_slice(&fs::read(dir.join("trace_info.json")).unwrap()).unwrap();
    assert_eq!(info_doc["__yao_created_by"], "user-1");

    let trace = engine.open(ID).unwrap();
    assert_eq!(trace.all_nodes().unwrap().len(), 5);
    let events = trace.events(Cursor::Seq(0)).unwrap();
    assert_eq!(events.len(), n_events + after.len());
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1);
    }
    assert_eq!(trace.logs(None).unwrap().len(), 4);
}

#[test]
fn reference_trace_with_complete_event_is_finished() {
    let tmp = tempfile::tempdir().unwrap();
    write_fixture(tmp.path(), true);
    let engine = engine(tmp.path());
    let trace = engine.open(ID).unwrap();
    assert!(trace.is_complete());
    // The stored status says "pending" (the reference never updates it);
    // the terminal event decides.
    assert_eq!(trace.status(), TraceStatus::Completed);
    assert!(matches!(
        trace.add("x", NodeOptions::new()),
        Err(Error::TraceFinished)
    ));
}
