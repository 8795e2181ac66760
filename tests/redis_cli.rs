//! `tracepool --redis URL` (the main job on Redis, and a second run that
//! reopens a trace the first one kept) and `tracepool serve --redis URL`
//! (the live view of a process streaming a trace that another engine on the
//! same server writes), each on a `redis-server` of its own.
#![cfg(all(unix, feature = "http", feature = "redis"))]

mod cli_support;
mod http_support;
mod redis_support;

use std::time::Duration;

use tracepool::{Cursor, Engine, NodeOptions, TraceOptions};

use cli_support::{Running, field, run, run_ok, show, stderr};
use redis_support::RedisServer;

#[test]
fn the_main_job_runs_on_redis_and_a_second_run_reopens_a_kept_trace() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let url = server.url();
    let first = run_ok(
        &["--redis", &url, "--traces", "300", "--keep-every", "100"],
        dir.path(),
    );
    assert!(
        first.contains("driver redis (redis://127.0.0.1:"),
        "{first}"
    );
    assert!(field(&first, "result").contains("ok"), "{first}");
    assert!(
        field(&first, "storage ").contains("3 traces kept in storage"),
        "{first}"
    );
    let second = run_ok(&["run", "--redis", &url, "--traces", "50"], dir.path());
    let reopened = field(&second, "reopened trace");
    assert!(
        reopened.contains("gap-free, ends with complete") && reopened.contains("status completed"),
        "{second}"
    );
    assert!(field(&second, "result").contains("ok"), "{second}");
    // Nothing on disk: everything went to Redis.
    assert!(!dir.path().join("traces.db").exists());
    // No server there: a clear runtime error, status 1.
    let out = run(
        &["--redis", "redis://127.0.0.1:1/0", "--traces", "1"],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        stderr(&out).contains("cannot open storage redis"),
        "{}",
        show(&out)
    );
}

#[test]
fn serve_streams_a_trace_that_another_engine_writes() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = cli_support::bin();
    cmd.args(["serve", "--redis", &server.url(), "--addr", "127.0.0.1:0"])
        .current_dir(dir.path());
    let mut serve = Running::start(cmd);
    let line = serve.stdout_line(Duration::from_secs(60), |l| {
        l.starts_with("listening on http://")
    });
    let addr: std::net::SocketAddr = line["listening on http://".len()..].trim().parse().unwrap();

    // Another engine (this test process) on the same server writes a trace.
    let writer = Engine::builder()
        .redis(server.url())
        .capacity(4)
        .workers(1)
        .build()
        .unwrap();
    let t = writer.create(TraceOptions::new()).unwrap();
    let id = t.id().to_owned();
    writer.flush_blocking().unwrap();
    let list = http_support::get(addr, "/traces", &[]);
    assert!(list.text().contains(&id), "{}", list.text());
    let mut sse = http_support::SseStream::open(addr, &format!("/traces/{id}/events"), &[]);
    assert_eq!(sse.status, 200);
    sse.set_timeout(Duration::from_secs(30));
    let node = t.add("x", NodeOptions::new().label("Step")).unwrap();
    node.info("hello from another process");
    node.complete(None).unwrap();
    t.mark_complete().unwrap();
    let emitted: Vec<u64> = t
        .events(Cursor::Seq(0))
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    let got: Vec<u64> = sse.collect_rest().iter().map(|m| m.seq()).collect();
    assert_eq!(got, emitted);
    drop((node, t));
    writer.shutdown().unwrap();
    serve.interrupt();
    let (status, out, err) = serve.wait(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "{out}\n{err}");
}
