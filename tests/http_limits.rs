//! The abuse bounds of the HTTP server (`tracepool::http::Limits`), each
//! driven with raw sockets on 127.0.0.1: a request head that never ends,
//! connections and event streams beyond their caps, an event-stream reader
//! that stops reading, and over-long `Last-Event-ID` and query values.
#![cfg(feature = "http")]

mod http_support;

use std::io::{BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use http_support::{Server, SseStream, engine, get, get_not_stream, read_response, wait_until};
use serde_json::{Value, json};
use tracepool::http::{HttpOptions, Limits};
use tracepool::{Engine, TraceOptions};

/// Limits for a test: the defaults with `f` applied.
fn limits(f: impl FnOnce(&mut Limits)) -> HttpOptions {
    let mut l = Limits::default();
    f(&mut l);
    HttpOptions::new().limits(l)
}

/// A raw connection whose reads fail after `deadline` instead of hanging.
fn raw(server: &Server, deadline: Duration) -> TcpStream {
    let s = TcpStream::connect(server.addr).expect("connect");
    s.set_read_timeout(Some(deadline)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Reads until the server closes the connection; returns the bytes read.
/// Panics when the read deadline of `s` passes first.
fn read_until_closed(s: &mut TcpStream) -> usize {
    let mut total = 0;
    let mut buf = [0u8; 64 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return total,
            Ok(n) => total += n,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return total,
            Err(e) => panic!("the server did not close the connection: {e}"),
        }
    }
}

/// Asserts a JSON error answer and returns its body.
fn assert_json_error(r: &http_support::Response, status: u16, code: &str) -> Value {
    assert_eq!(r.status, status, "{}", r.text());
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "content type {:?}",
        r.header("content-type")
    );
    let v = r.json();
    assert_eq!(v["code"], code, "{v}");
    assert!(!v["error"].as_str().unwrap().is_empty());
    v
}

#[test]
fn a_connection_that_never_finishes_its_request_head_is_closed_after_the_timeout() {
    const TIMEOUT: Duration = Duration::from_millis(300);
    let server = Server::start_with(engine(), limits(|l| l.header_read_timeout = TIMEOUT));

    // Slowloris: half a request head, then nothing.
    let started = Instant::now();
    let mut partial = raw(&server, Duration::from_secs(10));
    partial
        .write_all(b"GET /traces HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        .unwrap();
    // And a connection that sends nothing at all.
    let mut silent = raw(&server, Duration::from_secs(10));

    // Meanwhile, whole requests are served.
    assert_eq!(get(server.addr, "/traces", &[]).status, 200);

    assert_eq!(
        read_until_closed(&mut partial),
        0,
        "closed without an answer"
    );
    assert_eq!(read_until_closed(&mut silent), 0);
    let waited = started.elapsed();
    assert!(
        waited >= TIMEOUT - Duration::from_millis(50),
        "closed after {waited:?}, before the timeout"
    );
    let counters = server.counters.clone();
    wait_until(10, "both timeouts counted", || {
        counters.snapshot().header_timeouts == 2
    });
}

#[test]
fn connections_beyond_the_cap_get_a_json_503_and_are_closed() {
    let server = Server::start_with(
        engine(),
        limits(|l| {
            l.max_connections = 2;
            l.header_read_timeout = Duration::from_secs(60);
        }),
    );
    // Two idle connections take both places (accepted in connect order).
    let first = raw(&server, Duration::from_secs(10));
    let _second = raw(&server, Duration::from_secs(10));

    let mut third = BufReader::new(raw(&server, Duration::from_secs(10)));
    third
        .get_mut()
        .write_all(b"GET /traces HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let r = read_response(&mut third);
    let v = assert_json_error(&r, 503, "too_many_connections");
    assert!(v["error"].as_str().unwrap().contains('2'), "{v}");
    assert_eq!(read_until_closed(third.get_mut()), 0, "then closed");
    assert_eq!(server.counters.snapshot().connections_refused, 1);
    assert_eq!(server.counters.snapshot().connections, 2);

    // A place frees up when a connection ends.
    drop(first);
    let counters = server.counters.clone();
    wait_until(10, "the closed connection to be counted out", || {
        counters.snapshot().connections == 1
    });
    assert_eq!(get(server.addr, "/traces", &[]).status, 200);
}

#[test]
fn event_streams_beyond_the_cap_get_a_json_503() {
    let server = Server::start_with(engine(), limits(|l| l.max_sse_streams = 2));
    let t = server.engine.create(TraceOptions::new()).unwrap();
    let path = format!("/traces/{}/events", t.id());

    let first = SseStream::open(server.addr, &path, &[]);
    let second = SseStream::open(server.addr, &path, &[]);
    assert_eq!((first.status, second.status), (200, 200));
    assert_eq!(server.counters.snapshot().sse_streams, 2);

    let r = get_not_stream(server.addr, &path, &[]);
    assert_json_error(&r, 503, "too_many_streams");
    assert_eq!(server.counters.snapshot().sse_streams_refused, 1);
    // Other endpoints are not capped.
    assert_eq!(get(server.addr, "/traces", &[]).status, 200);

    // A place frees up when a stream ends.
    drop(first);
    let counters = server.counters.clone();
    wait_until(10, "the closed stream to be counted out", || {
        counters.snapshot().sse_streams == 1
    });
    let mut again = SseStream::open(server.addr, &path, &[]);
    assert_eq!(again.status, 200);
    t.mark_complete().unwrap();
    assert_eq!(again.collect_rest().len(), 2, "init and complete");
    drop(second);
}

/// An engine that keeps little history, so a stalled reader costs little.
/// An engine whose subscribers may fall 512 events behind: with events of
/// 64 KiB, a reader that stops reading has far more waiting for it (32 MiB)
/// than socket buffers hold, however fast the writer runs.
fn deep_buffer_engine() -> Engine {
    Engine::builder()
        .capacity(8)
        .workers(1)
        .memory()
        .history_limit(512)
        .subscriber_buffer(512)
        .build()
        .expect("engine")
}

#[test]
fn an_event_stream_whose_reader_stops_reading_is_closed_and_counted() {
    // Long enough that the reader that does read is never that late, even
    // on a busy machine.
    const TIMEOUT: Duration = Duration::from_secs(1);
    let server = Server::start_with(
        deep_buffer_engine(),
        limits(|l| l.sse_write_timeout = TIMEOUT),
    );
    let t = server.engine.create(TraceOptions::new()).unwrap();
    let space = t
        .create_space(tracepool::SpaceOptions::new().label("big"))
        .unwrap();
    let path = format!("/traces/{}/events", t.id());

    // A reader that reads everything, all along.
    let mut reader = SseStream::open(server.addr, &path, &[]);
    assert_eq!(reader.status, 200);
    let reading = std::thread::spawn(move || reader.collect_rest());

    // A reader that sends its request and never reads.
    let mut stalled = raw(&server, Duration::from_secs(20));
    stalled
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .unwrap();
    let counters = server.counters.clone();
    wait_until(10, "both streams open", || {
        counters.snapshot().sse_streams == 2
    });

    // Far more than the socket buffers hold: the stalled stream's writes block.
    let big = "x".repeat(64 * 1024);
    for i in 0..400 {
        t.set_space_value(&space.id, "blob", json!([i, big]))
            .unwrap();
    }
    wait_until(20, "the stalled stream to be closed and counted", || {
        counters.snapshot().sse_write_timeouts == 1
    });
    assert_eq!(counters.snapshot().sse_streams, 1, "its slot is free");
    // The server closed its socket: what it had buffered, then the end.
    assert!(read_until_closed(&mut stalled) > 0);
    let engine = server.engine.clone();
    wait_until(10, "its subscription to be dropped", || {
        engine.stats().subscribers == 1
    });

    // The reader that kept reading was not touched.
    t.mark_complete().unwrap();
    let got = reading.join().expect("reader");
    assert_eq!(got.last().unwrap().event.as_deref(), Some("complete"));
    assert_eq!(counters.snapshot().sse_write_timeouts, 1);
}

#[test]
fn a_quiet_stream_that_is_read_is_never_closed_by_the_write_timeout() {
    let server = Server::start_with(
        engine(),
        limits(|l| l.sse_write_timeout = Duration::from_millis(100))
            .keep_alive(Duration::from_millis(20)),
    );
    let t = server.engine.create(TraceOptions::new()).unwrap();
    let mut s = SseStream::open(server.addr, &format!("/traces/{}/events", t.id()), &[]);
    // Ten times the write timeout of keep-alives only.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(1) {
        assert!(s.next_block().is_some(), "the stream stays open");
    }
    t.mark_complete().unwrap();
    let rest = s.collect_rest();
    assert_eq!(rest.last().unwrap().event.as_deref(), Some("complete"));
    assert_eq!(server.counters.snapshot().sse_write_timeouts, 0);
}

#[test]
fn long_last_event_id_and_query_values_get_a_json_400_that_does_not_echo_them() {
    let server = Server::start(engine());
    let t = server.engine.create(TraceOptions::new()).unwrap();
    let events = format!("/traces/{}/events", t.id());
    let long_seq = format!("{}1", "0".repeat(299)); // a valid seq, 300 bytes long
    let long_text = "A".repeat(300);

    let check = |path: &str, headers: &[(&str, &str)], code: &str, value: &str| {
        let r = get_not_stream(server.addr, path, headers);
        let v = assert_json_error(&r, 400, code);
        let message = v["error"].as_str().unwrap();
        assert!(
            !r.text().contains(&value[..64]),
            "{path}: the value is echoed: {message}"
        );
        assert!(message.len() < 200, "{path}: {message}");
    };
    check(
        &events,
        &[("Last-Event-ID", &long_seq)],
        "invalid_cursor",
        &long_seq,
    );
    check(
        &events,
        &[("Last-Event-ID", &long_text)],
        "invalid_cursor",
        &long_text,
    );
    check(
        &format!("{events}?since_seq={long_seq}"),
        &[],
        "invalid_query",
        &long_seq,
    );
    check(
        &format!("/traces?after={long_text}"),
        &[],
        "invalid_query",
        &long_text,
    );
    check(
        &format!("/traces?limit={long_seq}"),
        &[],
        "invalid_query",
        &long_seq,
    );
    check(
        &format!("/traces?{long_text}=1"),
        &[],
        "invalid_query",
        &long_text,
    );
    check(
        &format!("/traces/{}?x={long_text}", t.id()),
        &[],
        "invalid_query",
        &long_text,
    );

    // Bad values under the cap are quoted only in part.
    let r = get(
        server.addr,
        &format!("/traces?after={}", "B".repeat(200)),
        &[],
    );
    let v = assert_json_error(&r, 400, "invalid_query");
    assert!(
        !v["error"].as_str().unwrap().contains(&"B".repeat(64)),
        "{v}"
    );
    let r = get(server.addr, &format!("/{}", "c".repeat(2000)), &[]);
    let v = assert_json_error(&r, 404, "no_route");
    assert!(
        !v["error"].as_str().unwrap().contains(&"c".repeat(64)),
        "{v}"
    );

    // At the cap, values are taken.
    let at_cap = format!("{}1", "0".repeat(255));
    let mut s = SseStream::open(server.addr, &events, &[("Last-Event-ID", &at_cap)]);
    assert_eq!(s.status, 200);
    t.mark_complete().unwrap();
    let rest = s.collect_rest();
    assert_eq!(rest.first().unwrap().seq(), 2, "resumed after seq 1");
}

#[test]
fn the_limits_have_the_documented_defaults() {
    let l = Limits::default();
    assert_eq!(l.header_read_timeout, Duration::from_secs(10));
    assert_eq!(l.max_connections, 1024);
    assert_eq!(l.max_sse_streams, 256);
    assert_eq!(l.sse_write_timeout, Duration::from_secs(30));
    assert_eq!(l.max_value_len, 256);
}

#[test]
fn serve_applies_the_socket_limits_it_is_given() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let mut l = Limits::default();
    l.header_read_timeout = Duration::from_millis(200);
    l.max_connections = 1;
    rt.spawn(tracepool::http::serve(listener, engine(), l));

    let mut slow = TcpStream::connect(addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\n").unwrap();
    // The only place is taken: the next connection is refused...
    let r = get_not_stream(addr, "/traces", &[]);
    assert_json_error(&r, 503, "too_many_connections");
    // ...until the slow one is closed by the header-read timeout.
    assert_eq!(read_until_closed(&mut slow), 0);
    let started = Instant::now();
    loop {
        let r = get_not_stream(addr, "/traces", &[]);
        if r.status == 200 {
            break;
        }
        // The closed connection may not be counted out yet.
        assert_eq!(r.status, 503);
        assert!(started.elapsed() < Duration::from_secs(10), "never freed");
        std::thread::yield_now();
    }
    rt.shutdown_timeout(Duration::from_secs(1));
}

#[test]
fn a_router_mounted_elsewhere_frees_and_ends_a_stalled_stream_itself() {
    const TIMEOUT: Duration = Duration::from_millis(500);
    let engine = deep_buffer_engine();
    let opts = limits(|l| l.sse_write_timeout = TIMEOUT);
    let counters = opts.counters();
    let app = axum::Router::new().nest("/live", tracepool::http::router_with(engine.clone(), opts));
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

    let t = engine.create(TraceOptions::new()).unwrap();
    let space = t
        .create_space(tracepool::SpaceOptions::new().label("big"))
        .unwrap();
    // The head is read, then nothing for a while.
    let mut stalled = SseStream::open(addr, &format!("/live/traces/{}/events", t.id()), &[]);
    assert_eq!(stalled.status, 200);
    let big = "x".repeat(64 * 1024);
    for i in 0..400 {
        t.set_space_value(&space.id, "blob", json!([i, big]))
            .unwrap();
    }
    wait_until(20, "the stalled stream to be counted", || {
        counters.snapshot().sse_write_timeouts == 1
    });
    assert_eq!(
        counters.snapshot().sse_streams,
        0,
        "its slot is free at once"
    );
    // axum::serve keeps the socket; once it drains, the response ends
    // (before `complete`: the trace is still running).
    let got = stalled.collect_rest();
    assert!(!got.is_empty());
    assert!(got.iter().all(|m| m.event.as_deref() != Some("complete")));
    assert!(!t.is_complete());
    rt.shutdown_timeout(Duration::from_secs(1));
}
