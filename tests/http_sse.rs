//! The SSE endpoint `GET /traces/{id}/events`, over a real socket: message
//! format and order, resume, lag, fan-out to many clients, disconnects,
//! end of stream.
#![cfg(feature = "http")]

mod http_support;

use std::thread;
use std::time::{Duration, Instant};

use http_support::{Server, SseMessage, SseStream, engine, get, wait_until};
use serde_json::json;
use tracepool::http::HttpOptions;
use tracepool::{
    Cursor, Engine, Event, NodeOptions, ParallelInput, SpaceOptions, Trace, TraceOptions,
};

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A trace with one event of (almost) every kind, finished.
fn busy_trace(engine: &Engine) -> Trace {
    let t = engine
        .create(TraceOptions::new().created_by("test"))
        .unwrap();
    t.add(json!({"q": "hi"}), NodeOptions::new().label("Input"))
        .unwrap();
    t.info("line with \"quotes\" and a\nnewline")
        .warn("careful");
    let b = t
        .parallel(vec![
            ParallelInput::new("a", NodeOptions::new().label("A")),
            ParallelInput::new("b", NodeOptions::new().label("B")),
        ])
        .unwrap();
    b[0].complete(Some(json!({"ok": 1}))).unwrap();
    b[1].fail("boom").unwrap();
    let s = t.create_space(SpaceOptions::new().label("S")).unwrap();
    t.set_space_value(&s.id, "k", json!([1, 2])).unwrap();
    t.set_space_value(&s.id, "k", json!("over")).unwrap();
    t.delete_space_value(&s.id, "k").unwrap();
    t.add("merge", NodeOptions::new().label("Merge")).unwrap();
    t.complete(Some(json!("done"))).unwrap();
    t.mark_complete().unwrap();
    t
}

/// Asserts that `m` is exactly the SSE message of `ev`.
fn assert_message(m: &SseMessage, ev: &Event) {
    assert_eq!(m.id.as_deref(), Some(ev.seq.to_string().as_str()), "{m:?}");
    assert_eq!(m.event.as_deref(), Some(ev.kind.as_str()));
    assert_eq!(m.data.as_deref(), Some(ev.to_json().as_str()));
    assert_eq!(
        m.raw,
        format!("id: {}\nevent: {}\ndata: {}", ev.seq, ev.kind, ev.to_json())
    );
}

fn events_path(t: &Trace) -> String {
    format!("/traces/{}/events", t.id())
}

#[test]
fn history_is_replayed_in_order_with_the_wire_json_and_the_stream_ends_after_complete() {
    let server = Server::start(engine());
    let t = busy_trace(&server.engine);
    let expected = t.events(Cursor::Seq(0)).unwrap();
    assert!(expected.len() > 15);

    let mut s = SseStream::open(server.addr, &events_path(&t), &[]);
    assert_eq!(s.status, 200);
    assert_eq!(s.header("content-type"), Some("text/event-stream"));
    assert_eq!(s.header("cache-control"), Some("no-cache"));
    let got = s.collect_rest(); // returns only because the response ended
    assert_eq!(got.len(), expected.len());
    for (m, ev) in got.iter().zip(&expected) {
        assert_message(m, ev);
        // The data is the wire JSON, with the seq inside.
        let v: serde_json::Value = serde_json::from_str(m.data.as_deref().unwrap()).unwrap();
        assert_eq!(v["seq"], ev.seq);
        assert_eq!(v["type"], ev.kind.as_str());
        assert_eq!(v["trace_id"], t.id());
    }
    assert_eq!(got.last().unwrap().event.as_deref(), Some("complete"));
}

#[test]
fn live_events_follow_the_history_without_gap_or_duplicate() {
    let server = Server::start(engine());
    let t = server.engine.create(TraceOptions::new()).unwrap();
    t.add("in", NodeOptions::new().label("Root")).unwrap();

    let mut s = SseStream::open(server.addr, &events_path(&t), &[]);
    assert_eq!(s.status, 200);
    let first = s.next_message().unwrap();
    assert_eq!(first.seq(), 1);

    let writer = {
        let t = t.clone();
        thread::spawn(move || {
            for i in 0..50 {
                t.info(format!("live line {i}"));
                if i % 10 == 0 {
                    // Pacing: the stream catches up in between.
                    thread::sleep(Duration::from_millis(5));
                }
            }
            t.mark_complete().unwrap();
        })
    };
    let mut got = vec![first];
    got.extend(s.collect_rest());
    writer.join().unwrap();
    let expected = t.events(Cursor::Seq(0)).unwrap();
    assert_eq!(got.len(), expected.len());
    for (m, ev) in got.iter().zip(&expected) {
        assert_message(m, ev);
    }
}

#[test]
fn last_event_id_resumes_after_a_dropped_connection_with_no_gap_and_no_duplicate() {
    let server = Server::start(engine());
    let t = server.engine.create(TraceOptions::new()).unwrap();
    t.add("in", NodeOptions::new()).unwrap();
    for i in 0..20 {
        t.info(format!("before {i}"));
    }

    // First connection: read 10 messages, then drop it mid-stream.
    let mut seen = Vec::new();
    {
        let mut s = SseStream::open(server.addr, &events_path(&t), &[]);
        for _ in 0..10 {
            seen.push(s.next_message().unwrap());
        }
    }
    // Events keep coming while nobody is connected.
    for i in 0..20 {
        t.info(format!("while away {i}"));
    }
    let last = seen.last().unwrap().id.clone().unwrap();
    assert_eq!(last, "10");
    let mut s = SseStream::open(server.addr, &events_path(&t), &[("Last-Event-ID", &last)]);
    assert_eq!(s.status, 200);
    let writer = {
        let t = t.clone();
        thread::spawn(move || {
            for i in 0..20 {
                t.info(format!("after {i}"));
            }
            t.mark_complete().unwrap();
        })
    };
    seen.extend(s.collect_rest());
    writer.join().unwrap();

    let seqs: Vec<u64> = seen.iter().map(SseMessage::seq).collect();
    let expected = t.events(Cursor::Seq(0)).unwrap();
    assert_eq!(seqs, (1..=expected.len() as u64).collect::<Vec<_>>());
    for (m, ev) in seen.iter().zip(&expected) {
        assert_message(m, ev);
    }

    // The header wins over the query string (a browser keeps the URL it
    // first used when it reconnects).
    let mut s = SseStream::open(
        server.addr,
        &format!("{}?since_seq=1", events_path(&t)),
        &[("Last-Event-ID", "40")],
    );
    assert_eq!(s.next_message().unwrap().seq(), 41);
    // An empty Last-Event-ID (a browser that saw no id yet) means "from the start".
    let mut s = SseStream::open(server.addr, &events_path(&t), &[("Last-Event-ID", "")]);
    assert_eq!(s.next_message().unwrap().seq(), 1);
}

#[test]
fn since_seq_and_since_time_choose_where_the_stream_starts() {
    let server = Server::start(engine());
    let t = server.engine.create(TraceOptions::new()).unwrap();
    t.add("in", NodeOptions::new()).unwrap();
    for i in 0..5 {
        t.info(format!("early {i}"));
    }
    // The late events get a later millisecond than every early one (event
    // timestamps may trail the system clock by up to 1 ms).
    let early = t.events(Cursor::Seq(0)).unwrap().last().unwrap().timestamp;
    wait_until(10, "the clock to pass the early events", || {
        now_ms() > early + 1
    });
    t.info("late 0").info("late 1");
    t.mark_complete().unwrap();
    let all = t.events(Cursor::Seq(0)).unwrap();

    let got = SseStream::open(
        server.addr,
        &format!("{}?since_seq=4", events_path(&t)),
        &[],
    )
    .collect_rest();
    assert_eq!(got.first().unwrap().seq(), 4);
    assert_eq!(got.len(), all.len() - 3);

    let ts = all
        .iter()
        .find(|e| e.to_json().contains("late 0"))
        .unwrap()
        .timestamp;
    let got = SseStream::open(server.addr, &format!("{}?since={ts}", events_path(&t)), &[])
        .collect_rest();
    let want: Vec<u64> = all
        .iter()
        .filter(|e| e.timestamp >= ts)
        .map(|e| e.seq)
        .collect();
    assert_eq!(got.iter().map(SseMessage::seq).collect::<Vec<_>>(), want);
    assert!(got[0].data.as_deref().unwrap().contains("late 0"));
}

#[test]
fn a_request_past_the_end_of_a_finished_trace_gets_204() {
    let server = Server::start(engine());
    let t = busy_trace(&server.engine);
    let last = t
        .events(Cursor::Seq(0))
        .unwrap()
        .last()
        .unwrap()
        .seq
        .to_string();
    let r = get(server.addr, &events_path(&t), &[("Last-Event-ID", &last)]);
    assert_eq!(r.status, 204, "{}", r.text());
    assert!(r.body.is_empty());
}

#[test]
fn a_lagging_client_gets_a_lagged_message_then_the_rest() {
    let engine = Engine::builder()
        .capacity(8)
        .workers(1)
        .memory()
        .history_limit(16)
        .subscriber_buffer(16)
        .build()
        .unwrap();
    let server = Server::start(engine);
    let t = server.engine.create(TraceOptions::new()).unwrap();
    t.add("in", NodeOptions::new()).unwrap();
    for i in 0..100 {
        t.info(format!("line {i}"));
    }
    t.mark_complete().unwrap();
    let newest = t.events(Cursor::Seq(0)).unwrap().last().unwrap().seq;

    let got = SseStream::open(server.addr, &events_path(&t), &[]).collect_rest();
    let lagged = &got[0];
    assert_eq!(lagged.event.as_deref(), Some("lagged"), "{got:?}");
    assert_eq!(lagged.id, None, "a lagged message carries no id");
    let missed = serde_json::from_str::<serde_json::Value>(lagged.data.as_deref().unwrap())
        .unwrap()["missed"]
        .as_u64()
        .unwrap();
    assert!(missed > 0);
    let rest: Vec<u64> = got[1..].iter().map(SseMessage::seq).collect();
    assert_eq!(
        rest.first().copied(),
        Some(missed + 1),
        "continues right after the skipped events"
    );
    assert_eq!(rest.last().copied(), Some(newest));
    assert!(rest.windows(2).all(|w| w[1] == w[0] + 1));
}

#[test]
fn a_hundred_clients_on_one_trace_each_receive_every_event() {
    const CLIENTS: usize = 100;
    let server = Server::start(engine());
    let t = server.engine.create(TraceOptions::new()).unwrap();
    t.add("in", NodeOptions::new().label("Root")).unwrap();
    let path = events_path(&t);

    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (addr, path) = (server.addr, path.clone());
            thread::spawn(move || {
                let mut s = SseStream::open(addr, &path, &[]);
                assert_eq!(s.status, 200);
                s.collect_rest()
            })
        })
        .collect();
    let engine = server.engine.clone();
    wait_until(20, "100 subscribers", || {
        engine.stats().subscribers >= CLIENTS
    });

    // The writer runs while every client is attached.
    for i in 0..200 {
        t.info(format!("fan-out {i}"));
        if i % 50 == 0 {
            let n = t.add(format!("step {i}"), NodeOptions::new()).unwrap();
            n.set_output(json!(i)).unwrap();
        }
    }
    t.mark_complete().unwrap();
    let expected = t.events(Cursor::Seq(0)).unwrap();

    for c in clients {
        let got = c.join().expect("client thread");
        assert_eq!(got.len(), expected.len());
        for (m, ev) in got.iter().zip(&expected) {
            assert_message(m, ev);
        }
    }
    wait_until(10, "subscriptions to end", || {
        engine.stats().subscribers == 0
    });
}

#[test]
fn clients_that_disconnect_mid_stream_disturb_neither_the_others_nor_the_writer() {
    let server = Server::start(engine());
    let t = server.engine.create(TraceOptions::new()).unwrap();
    t.add("in", NodeOptions::new()).unwrap();
    let path = events_path(&t);

    let quitters: Vec<_> = (0..10)
        .map(|_| {
            let mut s = SseStream::open(server.addr, &path, &[]);
            assert_eq!(s.status, 200);
            s.next_message().unwrap();
            s
        })
        .collect();
    let stayers: Vec<_> = (0..10)
        .map(|_| {
            let (addr, path) = (server.addr, path.clone());
            thread::spawn(move || SseStream::open(addr, &path, &[]).collect_rest())
        })
        .collect();
    let engine = server.engine.clone();
    wait_until(20, "20 subscribers", || engine.stats().subscribers >= 20);

    let started = Instant::now();
    for i in 0..100 {
        t.info(format!("line {i}"));
    }
    drop(quitters); // hang up mid-stream
    for i in 100..300 {
        t.info(format!("line {i}"));
    }
    t.mark_complete().unwrap();
    let writer_time = started.elapsed();
    // The writer never waits for a reader: 300 appends take far less than a second.
    assert!(
        writer_time < Duration::from_secs(2),
        "writer took {writer_time:?}"
    );

    let expected = t.events(Cursor::Seq(0)).unwrap();
    for c in stayers {
        let got = c.join().expect("client thread");
        assert_eq!(got.len(), expected.len());
        assert!(got.iter().zip(&expected).all(|(m, ev)| m.seq() == ev.seq));
    }
    // The hung-up clients' subscriptions were dropped with their connections.
    wait_until(10, "every subscription dropped", || {
        engine.stats().subscribers == 0
    });
    // The server still answers.
    assert_eq!(get(server.addr, "/traces", &[]).status, 200);
}

#[test]
fn the_stream_ends_when_the_trace_is_released() {
    let server = Server::start(engine());
    let t = server.engine.create(TraceOptions::new()).unwrap();
    t.add("in", NodeOptions::new()).unwrap();
    let mut s = SseStream::open(server.addr, &events_path(&t), &[]);
    let mut got = vec![s.next_message().unwrap(), s.next_message().unwrap()];
    t.info("last words");
    let expected = t.events(Cursor::Seq(0)).unwrap();
    server.engine.release(t.id()).unwrap();
    got.extend(s.collect_rest()); // ends: no hang
    assert_eq!(
        got.len(),
        expected.len(),
        "every event emitted before the release"
    );
    for (m, ev) in got.iter().zip(&expected) {
        assert_message(m, ev);
    }
    // Afterwards the trace is gone.
    assert_eq!(get(server.addr, &events_path(&t), &[]).status, 404);
}

#[test]
fn a_quiet_stream_gets_keep_alive_comments() {
    let server = Server::start_with(
        engine(),
        HttpOptions::new().keep_alive(Duration::from_millis(50)),
    );
    let t = server.engine.create(TraceOptions::new()).unwrap();
    let mut s = SseStream::open(server.addr, &events_path(&t), &[]);
    s.set_timeout(Duration::from_secs(5));
    let mut keep_alives = 0;
    let mut events = 0;
    let started = Instant::now();
    while keep_alives < 2 {
        let b = s.next_block().expect("stream stays open");
        if b.comments.iter().any(|c| c == "keep-alive") {
            keep_alives += 1;
        } else if b.id.is_some() {
            events += 1;
        }
    }
    assert_eq!(events, 1, "only init was emitted");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn server_shutdown_ends_open_streams() {
    let mut server = Server::start(engine());
    let t = server.engine.create(TraceOptions::new()).unwrap();
    let mut s = SseStream::open(server.addr, &events_path(&t), &[]);
    assert_eq!(s.next_message().unwrap().seq(), 1);
    let (addr, engine) = (server.addr, server.engine.clone());
    let client = thread::spawn(move || s.collect_rest());
    server.shutdown().expect("serve returns");
    assert!(client.join().unwrap().is_empty());
    // The engine is the caller's: still running.
    assert!(engine.load(t.id()).is_ok());
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "listener closed"
    );
}
