//! Two engines on one real `redis-server` (started by the test): the
//! storage layout, leases between engines, following a trace another
//! engine writes (exactly once, in order, to its end), the HTTP live view
//! of one engine streaming the other's trace, and a Redis restart in the
//! middle of a run.
#![cfg(all(feature = "redis", feature = "http"))]

mod http_support;
mod redis_support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::json;
use tracepool::{
    Cursor, Delivery, Engine, Error, Event, EventKind, NodeOptions, SpaceOptions, Subscription,
    TraceOptions,
};

use redis_support::{RedisServer, builder_on, keys, pair, shared, unique_prefix, wait_until};

/// Receives until the subscription ends, failing after `secs`.
fn drain(sub: Subscription, secs: u64) -> Vec<Delivery> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sub = sub;
        let mut out = Vec::new();
        while let Some(d) = sub.blocking_recv() {
            out.push(d);
        }
        let _ = tx.send(out);
    });
    rx.recv_timeout(Duration::from_secs(secs))
        .unwrap_or_else(|_| panic!("the subscription did not end within {secs} s"))
}

fn events(ds: &[Delivery]) -> Vec<Event> {
    ds.iter()
        .map(|d| match d {
            Delivery::Event(e) => e.clone(),
            Delivery::Lagged { missed } => panic!("unexpected Lagged {{ missed: {missed} }}"),
        })
        .collect()
}

fn seqs(evs: &[Event]) -> Vec<u64> {
    evs.iter().map(|e| e.seq).collect()
}

#[test]
fn a_trace_round_trips_through_redis_with_every_kind_of_write() {
    let (a, b, prefix) = pair(8);
    let t = a
        .create(TraceOptions::new().created_by("me").metadata("k", "v"))
        .unwrap();
    let root = t
        .add(json!({"q": 1}), NodeOptions::new().label("Root"))
        .unwrap();
    t.info("root log");
    root.warn("careful");
    let br = t
        .parallel(vec![
            tracepool::ParallelInput::new("x", NodeOptions::new().label("X")),
            tracepool::ParallelInput::new("y", NodeOptions::new().label("Y")),
        ])
        .unwrap();
    br[0].info("in x");
    br[1].complete(Some(json!({"y": true}))).unwrap();
    let sp = t
        .create_space(SpaceOptions::new().label("Results"))
        .unwrap();
    t.set_space_value(&sp.id, "a", json!(1)).unwrap();
    t.set_space_value(&sp.id, "b", json!([2])).unwrap();
    let gone = t.create_space(SpaceOptions::new().label("Gone")).unwrap();
    t.delete_space(&gone.id).unwrap();
    t.add("merge", NodeOptions::new().label("Merge")).unwrap();
    let id = t.id().to_owned();
    let before = t.events(Cursor::Seq(0)).unwrap();
    let nodes = t.all_nodes().unwrap();
    let logs = t.logs(None).unwrap();
    drop((root, br));
    t.release().unwrap();
    a.flush_blocking().unwrap();

    // The index lists it; another engine reads it back whole.
    assert!(b.list_stored().unwrap().contains(&id));
    assert!(b.exists(&id).unwrap());
    assert_eq!(b.info(&id).unwrap().created_by.as_deref(), Some("me"));
    let again = b.open(&id).unwrap();
    let after = again.events(Cursor::Seq(0)).unwrap();
    assert_eq!(
        before
            .iter()
            .map(|e| (e.seq, e.to_json()))
            .collect::<Vec<_>>(),
        after
            .iter()
            .map(|e| (e.seq, e.to_json()))
            .collect::<Vec<_>>()
    );
    let mut n1: Vec<_> = nodes
        .iter()
        .map(|n| (n.id.clone(), n.status.as_str()))
        .collect();
    let mut n2: Vec<_> = again
        .all_nodes()
        .unwrap()
        .iter()
        .map(|n| (n.id.clone(), n.status.as_str()))
        .collect();
    n1.sort();
    n2.sort();
    assert_eq!(n1, n2);
    assert_eq!(
        logs.iter().map(|l| &l.message).collect::<Vec<_>>(),
        again
            .logs(None)
            .unwrap()
            .iter()
            .map(|l| &l.message)
            .collect::<Vec<_>>()
    );
    assert_eq!(again.space_keys(&sp.id).unwrap(), ["a", "b"]);
    assert!(!again.has_space(&gone.id));
    // Numbering continues; the next add joins the merge node.
    let next = again.add("more", NodeOptions::new().label("More")).unwrap();
    assert_eq!(next.data().unwrap().parent_ids.len(), 1);
    let last = again.events(Cursor::Seq(0)).unwrap();
    assert_eq!(last.last().unwrap().seq, before.last().unwrap().seq + 2);
    drop(next);
    again.release().unwrap();
    b.flush_blocking().unwrap();

    // Every key shares the trace's hash tag; remove deletes all of them.
    let all = keys(shared(), &prefix);
    let tagged: Vec<&String> = all
        .iter()
        .filter(|k| k.contains(&format!("{{{id}}}")))
        .collect();
    assert!(tagged.len() >= 7, "{all:?}");
    assert!(
        tagged.iter().all(|k| !k.ends_with(":lease")),
        "a released trace holds no lease: {all:?}"
    );
    b.remove(&id).unwrap();
    assert_eq!(keys(shared(), &prefix), Vec::<String>::new());
    assert!(!b.exists(&id).unwrap());
    assert!(matches!(b.remove(&id), Err(Error::NotFound)));
}

#[test]
fn a_follower_on_another_engine_sees_every_event_once_in_order() {
    let (a, b, _) = pair(8);
    let t = a.create(TraceOptions::new()).unwrap();
    let id = t.id().to_owned();
    a.flush_blocking().unwrap();
    // Followed from the start while four threads write.
    let sub = b.follow(&id).unwrap();
    let reader = std::thread::spawn(move || drain(sub, 60));
    std::thread::scope(|s| {
        for w in 0..4 {
            let t = &t;
            s.spawn(move || {
                let node = t
                    .add(format!("w{w}"), NodeOptions::new().label("W"))
                    .unwrap();
                for i in 0..150 {
                    node.info(format!("line {i}"));
                }
            });
        }
    });
    t.mark_complete().unwrap();
    let emitted = t.events(Cursor::Seq(0)).unwrap();
    let got = events(&reader.join().unwrap());
    assert_eq!(seqs(&got), seqs(&emitted), "exactly once, in order");
    assert_eq!(got.last().unwrap().kind, EventKind::Complete);
    assert_eq!(
        got.iter().map(|e| e.to_json()).collect::<Vec<_>>(),
        emitted.iter().map(|e| e.to_json()).collect::<Vec<_>>()
    );
    // From a cursor: only seq >= 100.
    let from = events(&drain(b.follow_from(&id, Cursor::Seq(100)).unwrap(), 20));
    assert_eq!(
        seqs(&from),
        (100..=emitted.len() as u64).collect::<Vec<_>>()
    );
    // By time: the first event at or after a timestamp.
    let ts = emitted[300].timestamp;
    let by_time = events(&drain(b.follow_from(&id, Cursor::Time(ts)).unwrap(), 20));
    assert!(by_time.iter().all(|e| e.timestamp >= ts));
    assert_eq!(
        by_time.first().unwrap().seq,
        emitted.iter().find(|e| e.timestamp >= ts).unwrap().seq
    );
}

#[test]
fn leases_keep_a_trace_on_one_engine_until_release() {
    let (a, b, prefix) = pair(8);
    let t = a.create(TraceOptions::new()).unwrap();
    t.add("x", NodeOptions::new().label("A")).unwrap();
    let id = t.id().to_owned();
    a.flush_blocking().unwrap();
    // Held by a: b cannot open, create, or remove it.
    match b.open(&id) {
        Err(Error::Leased {
            owner,
            expires_in_ms,
        }) => {
            assert!(!owner.is_empty());
            assert!(expires_in_ms <= 900, "{expires_in_ms}");
        }
        other => panic!("expected Leased, got {other:?}"),
    }
    assert!(matches!(
        b.create(TraceOptions::new().id(&id)),
        Err(Error::AlreadyExists)
    ));
    assert!(matches!(b.remove(&id), Err(Error::Leased { .. })));
    // A follower of b ends with a's release (the `released` marker).
    let sub = b.follow(&id).unwrap();
    let reader = std::thread::spawn(move || drain(sub, 30));
    // Renewed by a's ticker: still held well past the TTL.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(matches!(b.open(&id), Err(Error::Leased { .. })));
    t.info("still mine");
    t.release().unwrap();
    a.flush_blocking().unwrap(); // waits for the drain, which gives the lease up
    let got = events(&reader.join().unwrap());
    assert_eq!(got.last().unwrap().kind, EventKind::LogAdded);
    assert_eq!(seqs(&got), (1..=got.len() as u64).collect::<Vec<_>>());
    // Now b opens it and continues the numbering; a cannot.
    let t2 = b.open(&id).unwrap();
    t2.info("b's turn");
    let evs = t2.events(Cursor::Seq(0)).unwrap();
    assert_eq!(evs.last().unwrap().seq, got.len() as u64 + 1);
    assert!(matches!(a.open(&id), Err(Error::Leased { .. })));
    // A follower that starts now sees a's release marker as history (b's
    // `opened` marker follows it) and goes on with b's events.
    let ds = drain_until(a.follow(&id).unwrap(), got.len() + 1);
    assert!(matches!(ds.last(), Some(Delivery::Event(e)) if e.seq == got.len() as u64 + 1));
    // A given-id create takes the lease at once.
    let custom = format!("given-{}", fastrand::u64(..));
    let c = a.create(TraceOptions::new().id(&custom)).unwrap();
    assert!(matches!(b.open(&custom), Err(Error::Leased { .. })));
    // Leased before its first batch is written, AlreadyExists after.
    assert!(matches!(
        b.create(TraceOptions::new().id(&custom)),
        Err(Error::Leased { .. } | Error::AlreadyExists)
    ));
    drop(c);
    drop(t2);
    // Removed before anything of it was written: its lease goes too.
    let early = format!("early-{}", fastrand::u64(..));
    let e = a.create(TraceOptions::new().id(&early)).unwrap();
    drop(e);
    a.remove(&early).unwrap();
    assert!(matches!(b.open(&early), Err(Error::NotFound)));
    a.flush_blocking().unwrap();
    b.flush_blocking().unwrap();
    let left: Vec<String> = keys(shared(), &prefix)
        .into_iter()
        .filter(|k| k.ends_with(":lease"))
        .collect();
    assert!(
        left.is_empty(),
        "leases left after every trace ended: {left:?}"
    );
    assert_eq!(a.stats().leases_lost + b.stats().leases_lost, 0);
}

/// A renewal is prepared, then runs: a lease deleted in between (its trace
/// released or removed) must stay deleted. Simulated deterministically: a
/// lease vanishes (as on expiry, or a removal) under a held trace with
/// nothing written, and under one whose stream is as this engine left it;
/// the renewal takes back only the second. (A given-id trace created and
/// removed before its first batch used to stay leased for a whole TTL.)
#[test]
fn a_renewal_never_takes_back_the_lease_of_a_trace_with_nothing_written() {
    use tracepool::driver::Driver;
    let prefix = unique_prefix();
    let s = shared();
    let d = tracepool::RedisDriver::connect(
        &s.url(),
        tracepool::RedisOptions::new()
            .prefix(prefix.as_str())
            .lease_ttl(Duration::from_secs(30)),
    )
    .unwrap();
    let empty = format!("empty-{}", fastrand::u64(..));
    let written = format!("written-{}", fastrand::u64(..));
    let lease = |id: &str| format!("{prefix}{{{id}}}:lease");
    let mut c = s.client();
    // `written` exists in storage (one stream entry), `empty` does not.
    let _: String = redis::cmd("XADD")
        .arg(format!("{prefix}{{{written}}}:events"))
        .arg("1-0")
        .arg("e")
        .arg("{}")
        .query(&mut c)
        .unwrap();
    d.acquire_lease(&empty, true).unwrap();
    d.acquire_lease(&written, false).unwrap();
    let _: i64 = redis::cmd("DEL")
        .arg(lease(&empty))
        .arg(lease(&written))
        .query(&mut c)
        .unwrap();
    let exists = |c: &mut redis::Connection, id: &str| -> bool {
        redis::cmd("EXISTS").arg(lease(id)).query::<i64>(c).unwrap() == 1
    };
    // Both renewals go out together; once `written`'s is back, give the
    // other a moment more (they share one connection, in order).
    wait_until(10, "the renewal of `written`", || {
        d.renew_leases();
        exists(&mut c, &written)
    });
    std::thread::sleep(Duration::from_millis(100));
    assert!(!exists(&mut c, &empty), "a removed trace's lease came back");
    // The id is free for another engine's create.
    let other = tracepool::RedisDriver::connect(
        &s.url(),
        tracepool::RedisOptions::new().prefix(prefix.as_str()),
    )
    .unwrap();
    other.acquire_lease(&empty, true).unwrap();
    other.release_lease(&empty).unwrap();
    d.release_lease(&written).unwrap();
    d.shutdown();
    other.shutdown();
}

#[test]
fn follows_are_bounded_and_end_when_the_trace_is_removed() {
    let prefix = unique_prefix();
    let a = builder_on(shared(), &prefix)
        .capacity(4)
        .workers(1)
        .build()
        .unwrap();
    let b = builder_on(shared(), &prefix)
        .capacity(4)
        .workers(1)
        .max_follows(2)
        .build()
        .unwrap();
    let t = a.create(TraceOptions::new()).unwrap();
    let id = t.id().to_owned();
    a.flush_blocking().unwrap();
    assert!(matches!(b.follow("nope-not-there"), Err(Error::NotFound)));
    assert!(matches!(b.follow("bad id"), Err(Error::InvalidId)));
    let s1 = b.follow(&id).unwrap();
    let s2 = b.follow(&id).unwrap();
    assert!(matches!(
        b.follow(&id),
        Err(Error::LimitExceeded {
            what: "follows",
            limit: 2
        })
    ));
    drop(s2);
    let s3 = b.follow(&id).unwrap();
    // Removal (by the owner) ends both followers.
    let r1 = std::thread::spawn(move || drain(s1, 30));
    let r3 = std::thread::spawn(move || drain(s3, 30));
    drop(t);
    a.remove(&id).unwrap();
    assert_eq!(events(&r1.join().unwrap()).len(), 1); // init
    assert_eq!(events(&r3.join().unwrap()).len(), 1);
    assert_eq!(keys(shared(), &prefix), Vec::<String>::new());
    // Shutting the follower's engine down ends its follows.
    let t = a.create(TraceOptions::new()).unwrap();
    a.flush_blocking().unwrap();
    let mut s = b.follow(t.id()).unwrap();
    assert!(matches!(s.blocking_recv(), Some(Delivery::Event(e)) if e.seq == 1));
    let r = std::thread::spawn(move || drain(s, 30));
    b.shutdown().unwrap();
    assert!(r.join().unwrap().is_empty());
    // Drivers that cannot follow: only traces loaded here.
    let m = Engine::builder().memory().build().unwrap();
    assert!(matches!(
        m.follow("20260101000000000001"),
        Err(Error::NotLoaded)
    ));
}

#[test]
fn a_stream_gap_arrives_as_one_lagged_and_archive_marks_the_info() {
    let (a, b, prefix) = pair(4);
    let t = a.create(TraceOptions::new()).unwrap();
    t.add("x", NodeOptions::new()).unwrap();
    let id = t.id().to_owned();
    let init = t.events(Cursor::Seq(0)).unwrap()[0].to_json();
    t.release().unwrap();
    a.flush_blocking().unwrap();
    // Events 3 and 4 never reached Redis (as if their writer had dropped
    // them): seq 5 follows the release marker of seqs 1-2.
    let mut c = shared().client();
    let key = format!("{prefix}{{{id}}}:events");
    let _: String = redis::cmd("XADD")
        .arg(&key)
        .arg("5-0")
        .arg("e")
        .arg(init.replace("\"seq\":1", "\"seq\":5"))
        .query(&mut c)
        .unwrap();
    let ds = drain_until(b.follow(&id).unwrap(), 4);
    assert!(matches!(ds[0], Delivery::Event(ref e) if e.seq == 1));
    assert!(matches!(ds[1], Delivery::Event(ref e) if e.seq == 2));
    assert_eq!(ds[2], Delivery::Lagged { missed: 2 });
    assert!(matches!(ds[3], Delivery::Event(ref e) if e.seq == 5));
    assert!(b.stats().events_lagged >= 2);

    // archive (auto_archive): the stored info says so; the data stays.
    let t = a.create(TraceOptions::new().auto_archive(true)).unwrap();
    t.add("x", NodeOptions::new()).unwrap();
    let id = t.id().to_owned();
    t.mark_complete().unwrap();
    drop(t);
    a.flush_blocking().unwrap();
    assert!(b.info(&id).unwrap().archived);
    let again = b.open(&id).unwrap();
    assert!(again.trace_info().unwrap().archived);
    assert_eq!(again.events(Cursor::Seq(0)).unwrap().len(), 3);
}

/// The first `n` deliveries of a subscription (it need not have ended).
fn drain_until(mut sub: Subscription, n: usize) -> Vec<Delivery> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut out = Vec::new();
    while out.len() < n {
        assert!(Instant::now() < deadline, "only {out:?}");
        match sub.try_recv() {
            Ok(Some(d)) => out.push(d),
            Ok(None) => panic!("ended after {out:?}"),
            Err(()) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
    out
}

#[test]
fn the_http_view_of_one_engine_streams_a_trace_the_other_writes() {
    let (a, b, _) = pair(8);
    let server = http_support::Server::start(b.clone());
    let t = a.create(TraceOptions::new()).unwrap();
    let id = t.id().to_owned();
    a.flush_blocking().unwrap();
    let mut sse = http_support::SseStream::open(server.addr, &format!("/traces/{id}/events"), &[]);
    assert_eq!(sse.status, 200);
    sse.set_timeout(Duration::from_secs(20));
    let node = t.add("x", NodeOptions::new().label("Step")).unwrap();
    for i in 0..20 {
        node.info(format!("{i}"));
    }
    node.complete(None).unwrap();
    t.mark_complete().unwrap();
    let msgs = sse.collect_rest();
    let emitted = t.events(Cursor::Seq(0)).unwrap();
    assert_eq!(
        msgs.iter().map(|m| m.seq()).collect::<Vec<_>>(),
        seqs(&emitted)
    );
    assert_eq!(msgs.last().unwrap().event.as_deref(), Some("complete"));
    assert_eq!(msgs[1].data.as_deref(), Some(emitted[1].to_json().as_str()));
    // Resuming with Last-Event-ID, and the detail of a trace loaded elsewhere.
    let mut again = http_support::SseStream::open(
        server.addr,
        &format!("/traces/{id}/events"),
        &[("Last-Event-ID", "20")],
    );
    again.set_timeout(Duration::from_secs(20));
    let rest = again.collect_rest();
    assert_eq!(rest.first().unwrap().seq(), 21);
    a.flush_blocking().unwrap();
    let detail = http_support::get(server.addr, &format!("/traces/{id}"), &[]);
    let v = detail.json();
    assert_eq!(v["loaded"], false);
    assert_eq!(v["nodes"].as_array().unwrap().len(), 1);
    // Not there at all: 404 as before.
    let missing = http_support::get(server.addr, "/traces/not-there/events", &[]);
    assert_eq!(missing.status, 404);
}

#[test]
fn a_redis_restart_loses_nothing_that_flush_acknowledged() {
    let mut server = RedisServer::start_with(&[
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--save",
        "",
    ]);
    let prefix = unique_prefix();
    let ttl = Duration::from_millis(900);
    let a = builder_on(&server, &prefix)
        .lease_ttl(ttl)
        .drain_timeout(Duration::from_secs(5))
        .capacity(8)
        .workers(1)
        .build()
        .unwrap();
    let t = a.create(TraceOptions::new()).unwrap();
    let node = t.add("x", NodeOptions::new().label("W")).unwrap();
    let id = t.id().to_owned();
    for i in 0..40 {
        node.info(format!("before {i}"));
    }
    a.flush_blocking().unwrap();
    let acknowledged = t.events(Cursor::Seq(0)).unwrap().len();
    // SIGTERM: the server goes away while the trace keeps being written.
    server.stop();
    let stopped = Instant::now();
    for i in 0..40 {
        node.info(format!("while down {i}"));
    }
    let failed = a.flush_blocking();
    assert!(
        matches!(failed, Err(Error::Storage { .. })),
        "flush with the server down: {failed:?}"
    );
    assert!(a.stats().persist_errors > 0);
    let e = failed.unwrap_err().to_string();
    assert!(e.contains("redis"), "a clear error: {e}");
    // Down for longer than the lease: it expired meanwhile, nobody took it,
    // and the stream ends where `a` left it, so `a` takes it again.
    wait_until(10, "the lease to expire", || stopped.elapsed() > ttl * 2);
    server.restart();
    // The failed batches are retried and land: flush succeeds again.
    wait_until(30, "a flush after the restart", || {
        a.flush_blocking().is_ok()
    });
    for i in 0..10 {
        node.info(format!("after {i}"));
    }
    a.flush_blocking().unwrap();
    let emitted = t.events(Cursor::Seq(0)).unwrap();
    assert!(emitted.len() > acknowledged);
    // What Redis has is exactly what was emitted (nothing lost, nothing twice).
    let b = builder_on(&server, &prefix).build().unwrap();
    let stored = b.read_stored(&id).unwrap();
    assert_eq!(seqs(&stored.events), seqs(&emitted));
    let lines: HashSet<String> = stored.logs.iter().map(|l| l.message.clone()).collect();
    assert_eq!(lines.len(), 90);
    assert_eq!(stored.logs.len(), 90);
    drop(node);
    t.release().unwrap();
    a.flush_blocking().unwrap();
    assert_eq!(a.stats().events_dropped, 0);
    assert!(b.open(&id).is_ok());
}
