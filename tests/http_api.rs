//! The JSON endpoints, HTTP errors, the viewer page and mounting the router
//! in another axum application, over a real socket.
#![cfg(feature = "http")]

mod http_support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http_support::{Server, SseStream, engine, get, request};
use serde_json::{Value, json};
use tracepool::{
    Driver, Engine, NodeOptions, ParallelInput, Result, SpaceOptions, Trace, TraceInfo,
    TraceOptions, TraceStatus, WriteBatch,
};

/// Asserts a JSON error answer: status, JSON content type, code, a message.
fn assert_json_error(r: &http_support::Response, status: u16, code: &str, what: &str) -> Value {
    assert_eq!(r.status, status, "{what}: {}", r.text());
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{what}: content type {:?}",
        r.header("content-type")
    );
    let v: Value = r.json();
    assert_eq!(v["code"], code, "{what}");
    assert!(!v["error"].as_str().unwrap().is_empty(), "{what}");
    v
}

/// An engine on the local driver (so traces are stored) in `dir`.
fn local_engine(dir: &Path) -> Engine {
    Engine::builder()
        .capacity(16)
        .workers(1)
        .local(dir)
        .build()
        .expect("local engine")
}

/// A trace id of the test day, ordered by `n`.
fn test_id(n: u64) -> String {
    format!("20250101{n:012}")
}

#[test]
fn traces_lists_loaded_traces_by_descending_id_with_status_and_node_count() {
    let server = Server::start(engine());
    let a = server
        .engine
        .create(
            TraceOptions::new()
                .id("20250101000000000001")
                .metadata("name", "a"),
        )
        .unwrap();
    a.add("x", NodeOptions::new()).unwrap();
    a.add("y", NodeOptions::new()).unwrap();
    a.mark_complete().unwrap();
    let b = server
        .engine
        .create(
            TraceOptions::new()
                .id("20250101000000000002")
                .created_by("bob"),
        )
        .unwrap();

    let r = get(server.addr, "/traces", &[]);
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    let v = r.json();
    assert_eq!(v["driver"], "memory");
    let list = v["traces"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["id"], b.id(), "descending id");
    assert_eq!(list[0]["status"], "pending");
    assert_eq!(list[0]["node_count"], 0);
    assert_eq!(list[0]["created_by"], "bob");
    assert_eq!(list[1]["id"], a.id());
    assert_eq!(list[1]["status"], "completed");
    assert_eq!(list[1]["node_count"], 2);
    assert_eq!(list[1]["loaded"], true);
    assert_eq!(list[1]["metadata"]["name"], "a");
    assert!(list[1]["created_at"].as_i64().unwrap() > 0);

    assert_eq!(v["next"], Value::Null, "one page");

    server.engine.release(a.id()).unwrap();
    let v = get(server.addr, "/traces", &[]).json();
    assert_eq!(v["traces"].as_array().unwrap().len(), 1);
}

#[test]
fn trace_detail_has_info_each_node_once_with_parents_spaces_with_values_and_logs() {
    let server = Server::start(engine());
    let t = server.engine.create(TraceOptions::new()).unwrap();
    let root = t.add("in", NodeOptions::new().label("Root")).unwrap();
    root.info("hello");
    let b = t
        .parallel(vec![
            ParallelInput::new("a", NodeOptions::new().label("A")),
            ParallelInput::new("b", NodeOptions::new().label("B")),
        ])
        .unwrap();
    b[0].complete(None).unwrap();
    b[1].fail("bad").unwrap();
    let join = b[0]
        .join(&[&b[0], &b[1]], "j", NodeOptions::new().label("Join"))
        .unwrap();
    let s = t
        .create_space(SpaceOptions::new().label("Results"))
        .unwrap();
    t.set_space_value(&s.id, "first", json!(1)).unwrap();
    t.set_space_value(&s.id, "second", json!({"deep": [true]}))
        .unwrap();

    let r = get(server.addr, &format!("/traces/{}", t.id()), &[]);
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["info"]["id"], t.id());
    assert_eq!(v["info"]["status"], "running");
    assert_eq!(v["loaded"], true);
    let nodes = v["nodes"].as_array().unwrap();
    assert_eq!(
        nodes.len(),
        4,
        "each node once, also the join with two parents"
    );
    assert_eq!(nodes[0]["id"], root.id());
    assert_eq!(nodes[0]["parent_ids"], json!([]));
    let by_label = |l: &str| nodes.iter().find(|n| n["label"] == l).unwrap().clone();
    assert_eq!(by_label("A")["parent_ids"], json!([root.id()]));
    assert_eq!(by_label("A")["status"], "completed");
    assert_eq!(by_label("B")["status"], "failed");
    let j = by_label("Join");
    assert_eq!(j["id"], join.id());
    assert_eq!(j["parent_ids"], json!([b[0].id(), b[1].id()]));
    let spaces = v["spaces"].as_array().unwrap();
    assert_eq!(spaces.len(), 1);
    assert_eq!(spaces[0]["info"]["label"], "Results");
    assert_eq!(
        spaces[0]["data"],
        json!({"first": 1, "second": {"deep": [true]}})
    );
    let keys: Vec<&String> = spaces[0]["data"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["first", "second"], "insertion order");
    let logs = v["logs"].as_array().unwrap();
    assert!(
        logs.iter()
            .any(|l| l["message"] == "hello" && l["node_id"] == root.id())
    );
}

#[test]
fn errors_are_json_with_a_status_and_a_code() {
    let server = Server::start(engine());
    let t = server.engine.create(TraceOptions::new()).unwrap();
    let check = |path: &str, headers: &[(&str, &str)], status: u16, code: &str| {
        let r = get(server.addr, path, headers);
        assert_eq!(r.status, status, "{path}: {}", r.text());
        assert!(
            r.header("content-type")
                .unwrap()
                .starts_with("application/json"),
            "{path}"
        );
        let v: Value = r.json();
        assert_eq!(v["code"], code, "{path}");
        assert!(!v["error"].as_str().unwrap().is_empty());
    };
    // Unknown trace (valid id).
    check("/traces/20990101000000000000", &[], 404, "not_found");
    check("/traces/nope/events", &[], 404, "not_found");
    // Invalid ids: bad characters, too long.
    check("/traces/bad.id", &[], 400, "invalid_id");
    check("/traces/a%20b/events", &[], 400, "invalid_id");
    check(
        &format!("/traces/{}", "x".repeat(65)),
        &[],
        400,
        "invalid_id",
    );
    // Bad cursors.
    let ev = format!("/traces/{}/events", t.id());
    check(&format!("{ev}?since_seq=abc"), &[], 400, "invalid_cursor");
    check(&format!("{ev}?since=-x"), &[], 400, "invalid_cursor");
    check(&ev, &[("Last-Event-ID", "seven")], 400, "invalid_cursor");
    // Unknown route.
    check("/nothing/here", &[], 404, "no_route");
    // A released trace is gone.
    server.engine.release(t.id()).unwrap();
    check(&format!("/traces/{}", t.id()), &[], 404, "not_found");
    // The server is still fine after all that.
    assert_eq!(get(server.addr, "/traces", &[]).status, 200);
}

#[test]
fn the_viewer_page_is_self_contained_html() {
    let server = Server::start(engine());
    let r = get(server.addr, "/", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    let html = r.text();
    assert!(html.starts_with("<!doctype html>"));
    assert!(html.contains("EventSource"));
    // No external resource: no CDN, no web fonts, no remote script or style.
    // (The SVG namespace URI is an identifier, never fetched.)
    let external = html
        .replace("http://www.w3.org/2000/svg", "")
        .matches("http")
        .count();
    assert_eq!(
        external, 0,
        "the page must not load anything from elsewhere"
    );
    assert!(!html.contains("<script src"));
    assert!(!html.contains("@import"));
    assert!(!html.contains("url("));
}

#[test]
fn the_router_mounts_under_a_prefix_in_another_axum_app() {
    use axum::Router;
    use axum::routing::get as route_get;

    let engine = engine();
    let t = engine.create(TraceOptions::new()).unwrap();
    t.add("x", NodeOptions::new()).unwrap();
    t.mark_complete().unwrap();
    let app = Router::new()
        .route("/health", route_get(|| async { "ok" }))
        .nest("/trace", tracepool::http::router(engine.clone()));

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move { axum::serve(listener, app).await });

    assert_eq!(get(addr, "/health", &[]).text(), "ok");
    let v = get(addr, "/trace/traces", &[]).json();
    assert_eq!(v["traces"][0]["id"], t.id());
    assert_eq!(
        get(addr, &format!("/trace/traces/{}", t.id()), &[]).json()["info"]["status"],
        "completed"
    );
    let got =
        SseStream::open(addr, &format!("/trace/traces/{}/events", t.id()), &[]).collect_rest();
    assert_eq!(got.len(), 3);
    let page = get(addr, "/trace", &[]);
    assert_eq!(page.status, 200);
    assert!(
        page.text().contains("location.pathname"),
        "the page finds its base path"
    );
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
}

/// A driver whose storage holds one finished trace.
#[derive(Debug)]
struct OneStoredTrace(TraceInfo);

impl Driver for OneStoredTrace {
    fn name(&self) -> &'static str {
        "fake"
    }
    fn write(&self, _batch: &WriteBatch<'_>) -> Result<()> {
        Ok(())
    }
    fn exists(&self, id: &str) -> Result<bool> {
        Ok(id == self.0.id)
    }
    fn info(&self, id: &str) -> Result<Option<TraceInfo>> {
        Ok((id == self.0.id).then(|| self.0.clone()))
    }
    fn list(&self) -> Result<Vec<String>> {
        Ok(vec![self.0.id.clone()])
    }
}

#[test]
fn stored_traces_are_listed_when_the_driver_can_list_them() {
    let stored = TraceInfo {
        id: "20200101000000000001".into(),
        driver: "fake".into(),
        status: TraceStatus::Completed,
        created_at: 1_577_836_800_000,
        updated_at: 1_577_836_800_000,
        created_by: Some("yesterday".into()),
        team_id: None,
        tenant_id: None,
        metadata: Default::default(),
        archived: false,
    };
    let engine = Engine::builder()
        .capacity(4)
        .workers(1)
        .driver(OneStoredTrace(stored.clone()))
        .build()
        .unwrap();
    let server = Server::start(engine);
    let live = server.engine.create(TraceOptions::new()).unwrap();

    let v = get(server.addr, "/traces", &[]).json();
    let list = v["traces"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["id"], live.id());
    assert_eq!(list[0]["loaded"], true);
    assert_eq!(list[1]["id"], stored.id);
    assert_eq!(list[1]["loaded"], false);
    assert_eq!(list[1]["node_count"], Value::Null);
    assert_eq!(list[1]["status"], "completed");

    // Its detail: the stored metadata, no live state; no event stream.
    let d = get(server.addr, &format!("/traces/{}", stored.id), &[]).json();
    assert_eq!(d["loaded"], false);
    assert_eq!(d["info"]["created_by"], "yesterday");
    let r = get(server.addr, &format!("/traces/{}/events", stored.id), &[]);
    assert_eq!(r.status, 404);
}

#[test]
fn wrong_methods_get_a_json_405_that_names_the_allowed_ones() {
    let server = Server::start(engine());
    let t = server.engine.create(TraceOptions::new()).unwrap();
    let detail = format!("/traces/{}", t.id());
    let events = format!("{detail}/events");
    for (method, path) in [
        ("POST", "/traces"),
        ("DELETE", detail.as_str()),
        ("PUT", events.as_str()),
        ("POST", "/"),
        ("PATCH", "/stats"),
    ] {
        let r = request(server.addr, method, path, &[("Content-Length", "0")]);
        let what = format!("{method} {path}");
        assert_json_error(&r, 405, "method_not_allowed", &what);
        let allow = r.header("allow").unwrap_or_default();
        assert!(allow.contains("GET"), "{what}: Allow {allow:?}");
    }
    // The routes still answer GET.
    assert_eq!(get(server.addr, &detail, &[]).status, 200);
}

#[test]
fn a_trace_id_that_does_not_decode_to_utf8_gets_a_json_400() {
    let server = Server::start(engine());
    for path in ["/traces/%FF", "/traces/ab%80cd", "/traces/%C3%28/events"] {
        let r = get(server.addr, path, &[]);
        assert_json_error(&r, 400, "invalid_id", path);
    }
}

#[test]
fn stats_reports_the_http_and_engine_counters() {
    let server = Server::start(engine());
    let _t = server.engine.create(TraceOptions::new()).unwrap();
    let v = get(server.addr, "/stats", &[]).json();
    assert_eq!(v["http"]["sse_streams"], 0);
    assert_eq!(v["http"]["sse_write_timeouts"], 0);
    assert!(v["http"]["connections"].as_u64().unwrap() >= 1, "this one");
    assert_eq!(v["engine"]["in_use"], 1);
}

/// The ids of one page and its `next`.
fn page(server: &Server, query: &str) -> (Vec<(String, bool)>, Value) {
    let r = get(server.addr, &format!("/traces{query}"), &[]);
    assert_eq!(r.status, 200, "{query}: {}", r.text());
    let v = r.json();
    let ids = v["traces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["id"].as_str().unwrap().to_owned(),
                t["loaded"].as_bool().unwrap(),
            )
        })
        .collect();
    (ids, v["next"].clone())
}

#[test]
fn traces_are_listed_a_page_at_a_time_loaded_first_then_stored_each_by_descending_id() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(local_engine(dir.path()));
    // Stored traces (created, finished, released), in no particular order.
    for n in [3, 9, 1, 7, 5] {
        let t = server
            .engine
            .create(TraceOptions::new().id(test_id(n)))
            .unwrap();
        t.add("x", NodeOptions::new()).unwrap();
        t.mark_complete().unwrap();
        server.engine.release(t.id()).unwrap();
    }
    // Loaded traces: the handles keep them loaded.
    let loaded: Vec<Trace> = [4, 8, 2]
        .into_iter()
        .map(|n| {
            server
                .engine
                .create(TraceOptions::new().id(test_id(n)))
                .unwrap()
        })
        .collect();
    let want: Vec<(String, bool)> = [(8, true), (4, true), (2, true)]
        .into_iter()
        .chain([(9, false), (7, false), (5, false), (3, false), (1, false)])
        .map(|(n, l)| (test_id(n), l))
        .collect();

    // One page holds everything by default.
    let (all, next) = page(&server, "");
    assert_eq!(all, want);
    assert_eq!(next, Value::Null);
    // Pages of 3: the loaded ones, then the stored ones.
    let (p1, next) = page(&server, "?limit=3");
    assert_eq!(p1, want[..3]);
    assert_eq!(next, test_id(2));
    let (p2, next) = page(&server, &format!("?limit=3&after={}", test_id(2)));
    assert_eq!(p2, want[3..6]);
    assert_eq!(next, test_id(5));
    let (p3, next) = page(&server, &format!("?after={}&limit=3", test_id(5)));
    assert_eq!(p3, want[6..]);
    assert_eq!(next, Value::Null, "the last page");
    // A page that ends exactly at the end says so.
    let (p, next) = page(&server, "?limit=8");
    assert_eq!(p.len(), 8);
    assert_eq!(next, Value::Null);
    // Continuing after a trace that is gone meanwhile: among stored ids below it.
    let (p, _) = page(&server, &format!("?limit=2&after={}", test_id(6)));
    assert_eq!(p, want[5..7]);
    // A larger limit than the most allowed is lowered, not refused.
    assert_eq!(page(&server, "?limit=5000").0, want);

    for (query, what) in [
        ("?limit=0", "limit 0"),
        ("?limit=ten", "limit not a number"),
        ("?limit=-1", "negative limit"),
        ("?after=not.an.id", "after not an id"),
    ] {
        let r = get(server.addr, &format!("/traces{query}"), &[]);
        assert_json_error(&r, 400, "invalid_query", what);
    }
    drop(loaded);
}

/// A driver with many stored traces that counts the trace infos read.
#[derive(Debug)]
struct ManyStored {
    ids: Vec<String>,
    info_reads: Arc<AtomicUsize>,
}

impl Driver for ManyStored {
    fn name(&self) -> &'static str {
        "many"
    }
    fn write(&self, _batch: &WriteBatch<'_>) -> Result<()> {
        Ok(())
    }
    fn exists(&self, id: &str) -> Result<bool> {
        Ok(self.ids.iter().any(|i| i == id))
    }
    fn info(&self, id: &str) -> Result<Option<TraceInfo>> {
        self.info_reads.fetch_add(1, Ordering::SeqCst);
        Ok(self.ids.iter().any(|i| i == id).then(|| TraceInfo {
            id: id.to_owned(),
            driver: "many".into(),
            status: TraceStatus::Completed,
            created_at: 1_735_689_600_000,
            updated_at: 1_735_689_600_000,
            created_by: None,
            team_id: None,
            tenant_id: None,
            metadata: Default::default(),
            archived: false,
        }))
    }
    fn list(&self) -> Result<Vec<String>> {
        Ok(self.ids.clone())
    }
}

#[test]
fn a_page_reads_at_most_limit_trace_infos_from_storage() {
    let info_reads = Arc::new(AtomicUsize::new(0));
    let ids: Vec<String> = (0..1500).map(test_id).collect();
    let engine = Engine::builder()
        .capacity(4)
        .workers(1)
        .driver(ManyStored {
            ids: ids.clone(),
            info_reads: info_reads.clone(),
        })
        .build()
        .unwrap();
    let server = Server::start(engine);
    let reads = || info_reads.swap(0, Ordering::SeqCst);

    let (p, next) = page(&server, "");
    assert_eq!(p.len(), 100, "the default page");
    assert_eq!(reads(), 100);
    assert_eq!(p[0].0, test_id(1499));
    assert_eq!(next, test_id(1400));
    let (p, _) = page(&server, "?limit=7");
    assert_eq!(p.len(), 7);
    assert_eq!(reads(), 7);
    let (p, next) = page(&server, "?limit=100000");
    assert_eq!(p.len(), 1000, "the largest page");
    assert_eq!(reads(), 1000);
    // Walking every page lists each trace once.
    let mut seen = p;
    let mut next = next;
    while let Some(after) = next.as_str() {
        let (p, n) = page(&server, &format!("?limit=1000&after={after}"));
        assert!(reads() <= 1000);
        seen.extend(p);
        next = n;
    }
    let mut want: Vec<(String, bool)> = ids.into_iter().map(|i| (i, false)).collect();
    want.reverse();
    assert_eq!(seen, want);
}

#[test]
fn the_detail_of_a_stored_trace_has_its_nodes_logs_and_spaces_from_storage() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(local_engine(dir.path()));
    let t = server.engine.create(TraceOptions::new()).unwrap();
    let root = t.add("in", NodeOptions::new().label("Root")).unwrap();
    root.info("hello").warn("careful");
    let b = t
        .parallel(vec![
            ParallelInput::new("a", NodeOptions::new().label("A")),
            ParallelInput::new("b", NodeOptions::new().label("B")),
        ])
        .unwrap();
    b[0].info("in a");
    b[0].complete(Some(json!({"ok": 1}))).unwrap();
    b[1].fail("bad").unwrap();
    let join = b[0]
        .join(&[&b[0], &b[1]], "j", NodeOptions::new().label("Join"))
        .unwrap();
    join.add("after", NodeOptions::new().label("After"))
        .unwrap();
    let s = t
        .create_space(SpaceOptions::new().label("Results"))
        .unwrap();
    t.set_space_value(&s.id, "first", json!(1)).unwrap();
    t.set_space_value(&s.id, "second", json!({"deep": [true]}))
        .unwrap();
    t.mark_complete().unwrap();
    let path = format!("/traces/{}", t.id());
    let live = get(server.addr, &path, &[]).json();
    assert_eq!(live["loaded"], true);
    assert_eq!(live["nodes"].as_array().unwrap().len(), 5);

    server.engine.release(t.id()).unwrap();
    drop(t);
    let r = get(server.addr, &path, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let stored = r.json();
    assert_eq!(stored["loaded"], false);
    assert_eq!(stored["info"]["id"], live["info"]["id"]);
    assert_eq!(stored["info"]["status"], "completed");
    assert_eq!(stored["nodes"], live["nodes"], "same nodes, same order");
    assert_eq!(stored["spaces"], live["spaces"]);
    assert_eq!(stored["logs"], live["logs"]);
}
