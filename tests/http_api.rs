//! The JSON endpoints, HTTP errors, the viewer page and mounting the router
//! in another axum application, over a real socket.
#![cfg(feature = "http")]

mod http_support;

use http_support::{Server, SseStream, engine, get};
use serde_json::{Value, json};
use tracepool::{
    Driver, Engine, NodeOptions, ParallelInput, Result, SpaceOptions, TraceInfo, TraceOptions,
    TraceStatus, WriteBatch,
};

#[test]
fn traces_lists_loaded_traces_newest_first_with_status_and_node_count() {
    let server = Server::start(engine());
    let a = server
        .engine
        .create(TraceOptions::new().metadata("name", "a"))
        .unwrap();
    a.add("x", NodeOptions::new()).unwrap();
    a.add("y", NodeOptions::new()).unwrap();
    a.mark_complete().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5));
    let b = server
        .engine
        .create(TraceOptions::new().created_by("bob"))
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
    assert_eq!(list[0]["id"], b.id(), "newest first");
    assert_eq!(list[0]["status"], "pending");
    assert_eq!(list[0]["node_count"], 0);
    assert_eq!(list[0]["created_by"], "bob");
    assert_eq!(list[1]["id"], a.id());
    assert_eq!(list[1]["status"], "completed");
    assert_eq!(list[1]["node_count"], 2);
    assert_eq!(list[1]["loaded"], true);
    assert_eq!(list[1]["metadata"]["name"], "a");
    assert!(list[1]["created_at"].as_i64().unwrap() > 0);

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
