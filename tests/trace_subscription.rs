//! Reference catalogue §8.6 (trace_subscription_test.go) and §8.7 (leak
//! tests), ported to fixed semantics: seq/time cursors apply to history and
//! live events; streams end after `complete` is delivered, or after release
//! once everything emitted before it was delivered; dropping unsubscribes.

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use serde_json::json;
use tracepool::{Cursor, Delivery, Error, EventKind, NodeOptions, SpaceOptions, TraceOptions};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn subscription_sees_every_event_then_ends_after_complete() {
    let engine = engine(2, 1);
    let trace = engine.create(TraceOptions::new()).unwrap();
    let mut sub = trace.subscribe().unwrap();
    trace.info("dropped: no root");
    trace.add("x", NodeOptions::new()).unwrap();
    trace.complete(Some(json!({"k": 1}))).unwrap();
    let sp = trace.create_space(SpaceOptions::new()).unwrap();
    trace.set_space_value(&sp.id, "k", "v").unwrap();
    trace.mark_complete().unwrap();
    let got = events_only(drain_blocking(&mut sub));
    assert_eq!(
        kinds(&got),
        [
            EventKind::Init,
            EventKind::NodeStart,
            EventKind::NodeComplete,
            EventKind::SpaceCreated,
            EventKind::MemoryAdd,
            EventKind::Complete,
        ]
    );
    assert_eq!(got, history(&trace));
    // Ended for good.
    assert!(sub.blocking_recv().is_none());
    assert_eq!(sub.try_recv(), Ok(None));
}

#[test]
fn subscribe_from_seq_applies_to_history_and_live() {
    let engine = engine(2, 1);
    let trace = engine.create(TraceOptions::new()).unwrap();
    trace
        .add("s1", NodeOptions::new().label("Processing"))
        .unwrap();
    trace.info("one");
    trace.complete(Some(json!("step1 result"))).unwrap();
    let resume = history(&trace).last().unwrap().seq + 1; // 5
    assert_eq!(resume, 5);
    // A cursor in the future: nothing until the writer reaches it.
    let mut future = trace.subscribe_from(Cursor::Seq(resume + 2)).unwrap();
    let mut from_here = trace.subscribe_from(Cursor::Seq(resume)).unwrap();
    assert_eq!(from_here.try_recv(), Err(()));
    trace
        .add("s2", NodeOptions::new().label("Finalizing"))
        .unwrap();
    trace.info("two");
    trace.complete(Some(json!("step2 result"))).unwrap();
    trace.mark_complete().unwrap();
    // A replay subscription made afterwards.
    let mut replay = trace.subscribe_from(Cursor::Seq(resume)).unwrap();

    let all = history(&trace);
    let expect: Vec<_> = all.iter().filter(|e| e.seq >= resume).cloned().collect();
    assert_eq!(expect[0].data()["node"]["label"], "Finalizing");
    assert_eq!(events_only(drain_blocking(&mut from_here)), expect);
    assert_eq!(events_only(drain_blocking(&mut replay)), expect);
    assert_eq!(events_only(drain_blocking(&mut future)), expect[2..]);
    // Seq(0) and Seq(1) both mean everything.
    let mut s0 = trace.subscribe_from(Cursor::Seq(0)).unwrap();
    let mut s1 = trace.subscribe_from(Cursor::Seq(1)).unwrap();
    assert_eq!(events_only(drain_blocking(&mut s0)), all);
    assert_eq!(events_only(drain_blocking(&mut s1)), all);
    // Past the end of a finished trace: ends at once.
    let mut past = trace.subscribe_from(Cursor::Seq(1000)).unwrap();
    assert!(past.blocking_recv().is_none());
}

#[test]
fn subscribe_from_time_applies_to_history_and_live() {
    let engine = engine(2, 1);
    let trace = engine.create(TraceOptions::new()).unwrap();
    trace
        .add("s1", NodeOptions::new().label("Processing"))
        .unwrap();
    trace.info("one");
    trace.complete(Some(json!("step1 result"))).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let resume = now + 25;
    // A time cursor slightly in the future, attached now: events emitted
    // before that time are filtered out of the live stream as well.
    let mut live = trace.subscribe_from(Cursor::Time(resume)).unwrap();
    trace.info("before resume"); // timestamp < resume
    std::thread::sleep(Duration::from_millis(40));
    trace
        .add("s2", NodeOptions::new().label("Finalizing"))
        .unwrap();
    trace.info("two");
    trace.complete(Some(json!("step2 result"))).unwrap();
    trace.mark_complete().unwrap();
    let mut replay = trace.subscribe_from(Cursor::Time(resume)).unwrap();

    let all = history(&trace);
    let expect: Vec<_> = all
        .iter()
        .filter(|e| e.timestamp >= resume)
        .cloned()
        .collect();
    assert!(all.iter().any(|e| e.timestamp < resume
        && e.kind == EventKind::LogAdded
        && e.data()["Message"] == "before resume"));
    assert_eq!(expect.len(), 4, "{expect:?}");
    assert_eq!(expect[0].data()["node"]["label"], "Finalizing");
    let got_live = events_only(drain_blocking(&mut live));
    let got_replay = events_only(drain_blocking(&mut replay));
    assert_eq!(got_live, expect);
    assert_eq!(got_replay, expect);
    assert!(got_live.iter().all(|e| e.timestamp >= resume));
    assert_eq!(trace.events(Cursor::Time(resume)).unwrap(), expect);
}

#[test]
fn is_complete() {
    let engine = engine(2, 1);
    let trace = engine.create(TraceOptions::new()).unwrap();
    assert!(!trace.is_complete());
    trace.mark_complete().unwrap();
    assert!(trace.is_complete());
}

#[test]
fn multiple_subscribers_get_the_same_stream() {
    let engine = engine(2, 1);
    let trace = engine.create(TraceOptions::new()).unwrap();
    let subs: Vec<_> = (0..3).map(|_| trace.subscribe().unwrap()).collect();
    trace.add("x", NodeOptions::new()).unwrap();
    trace.complete(None).unwrap();
    trace.mark_complete().unwrap();
    let all = history(&trace);
    assert_eq!(all.len(), 4);
    let readers: Vec<_> = subs
        .into_iter()
        .map(|mut s| std::thread::spawn(move || events_only(drain_blocking(&mut s))))
        .collect();
    for r in readers {
        assert_eq!(r.join().unwrap(), all);
    }
}

#[test]
fn stream_ends_after_release_once_everything_was_delivered() {
    let engine = engine(1, 1);
    let trace = engine.create(TraceOptions::new()).unwrap();
    let mut sub = trace.subscribe().unwrap();
    let root = trace.add("x", NodeOptions::new()).unwrap();
    // Read part of it before the release.
    let first = sub.blocking_recv().unwrap();
    assert!(matches!(&first, Delivery::Event(e) if e.seq == 1));
    root.info("a");
    root.info("b");
    let all = history(&trace);
    trace.release().unwrap();
    // The slot gets a new occupant that writes: none of it reaches `sub`.
    let t2 = engine.create(TraceOptions::new()).unwrap();
    t2.add("other", NodeOptions::new()).unwrap();
    t2.info("other log");
    let rest = events_only(drain_blocking(&mut sub));
    assert_eq!(rest, all[1..]);
    assert!(rest.iter().all(|e| e.trace_id() == trace.id()));
    assert!(sub.blocking_recv().is_none());
    // New subscriptions on the released handle are refused.
    assert!(matches!(trace.subscribe(), Err(Error::Released)));
    drop(sub);
    assert_eq!(engine.stats().subscribers, 0);
}

#[test]
fn waiting_subscriber_is_woken_by_release() {
    let engine = engine(1, 1);
    let trace = engine.create(TraceOptions::new()).unwrap();
    trace.add("x", NodeOptions::new()).unwrap();
    let mut sub = trace.subscribe().unwrap();
    let reader = std::thread::spawn(move || events_only(drain_blocking(&mut sub)));
    std::thread::sleep(Duration::from_millis(30));
    trace.info("late");
    std::thread::sleep(Duration::from_millis(10));
    trace.release().unwrap();
    let got = within(5, move || reader.join().unwrap());
    assert_eq!(
        kinds(&got),
        [EventKind::Init, EventKind::NodeStart, EventKind::LogAdded]
    );
}

#[test]
fn dropping_unsubscribes() {
    let engine = engine(2, 1);
    let trace = engine.create(TraceOptions::new()).unwrap();
    let a = trace.subscribe().unwrap();
    let b = trace.subscribe_from(Cursor::Seq(5)).unwrap();
    assert_eq!(engine.stats().subscribers, 2);
    drop(a);
    assert_eq!(engine.stats().subscribers, 1);
    trace.add("x", NodeOptions::new()).unwrap();
    drop(b);
    assert_eq!(engine.stats().subscribers, 0);
    trace.info("still fine");
    assert_eq!(history(&trace).len(), 3);
}

/// §8.7 analogue: subscriptions of released, never-completed traces leave
/// nothing behind.
#[test]
fn client_disconnect_leaves_nothing_behind() {
    let engine = engine(2, 2);
    for _ in 0..10 {
        let trace = engine.create(TraceOptions::new()).unwrap();
        let mut sub = trace.subscribe().unwrap();
        trace.add("x", NodeOptions::new()).unwrap();
        let mut n = 0;
        while let Ok(Some(_)) = sub.try_recv() {
            n += 1;
        }
        assert_eq!(n, 2);
        drop(sub);
        trace.release().unwrap();
    }
    // Subscriptions kept past the release end, and are counted until dropped.
    let trace = engine.create(TraceOptions::new()).unwrap();
    let mut keep: Vec<_> = (0..5).map(|_| trace.subscribe().unwrap()).collect();
    trace.add("x", NodeOptions::new()).unwrap();
    trace.release().unwrap();
    for s in &mut keep {
        assert_eq!(events_only(drain_blocking(s)).len(), 2);
    }
    assert_eq!(engine.stats().subscribers, 5);
    drop(keep);
    let st = engine.stats();
    assert_eq!(st.subscribers, 0);
    assert_eq!(st.live_tasks, 2);
    assert_eq!(st.in_use, 0);
}

#[test]
fn async_recv_is_woken_by_live_events() {
    let engine = engine(2, 1);
    let trace = engine.create(TraceOptions::new()).unwrap();
    let mut sub = trace.subscribe().unwrap();
    let rt = runtime();
    let task = rt.spawn(async move {
        let mut got = Vec::new();
        while let Some(d) = sub.recv().await {
            got.push(d);
        }
        got
    });
    let writer = trace.clone();
    std::thread::spawn(move || {
        for i in 0..20 {
            std::thread::sleep(Duration::from_millis(2));
            writer.add(json!(i), NodeOptions::new()).unwrap();
        }
        writer.mark_complete().unwrap();
    });
    let got = rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(5), task).await })
        .expect("subscriber finished")
        .unwrap();
    let got = events_only(got);
    assert_eq!(got, history(&trace));
    assert_eq!(got.len(), 1 + 20 + 19 + 1);
}

#[test]
fn stream_impl_yields_the_same_items() {
    let engine = engine(2, 1);
    let trace = engine.create(TraceOptions::new()).unwrap();
    let sub = trace.subscribe_from(Cursor::Seq(2)).unwrap();
    let rt = runtime();
    let task = rt.spawn(async move { sub.collect::<Vec<Delivery>>().await });
    trace.add("a", NodeOptions::new()).unwrap();
    trace.info("x");
    trace.mark_complete().unwrap();
    let got = rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(5), task).await })
        .unwrap()
        .unwrap();
    assert_eq!(events_only(got), history(&trace)[1..]);
}

#[test]
fn subscribing_to_a_finished_trace_replays_and_ends() {
    let engine = engine(2, 1);
    let trace = engine.create(TraceOptions::new()).unwrap();
    trace.add("a", NodeOptions::new()).unwrap();
    trace.mark_complete().unwrap();
    let mut sub = trace.subscribe().unwrap();
    assert_eq!(
        kinds(&events_only(drain_blocking(&mut sub))),
        [EventKind::Init, EventKind::NodeStart, EventKind::Complete]
    );
    let mut cancelled = {
        let t = engine.create(TraceOptions::new()).unwrap();
        t.add("a", NodeOptions::new()).unwrap();
        let s = t.subscribe().unwrap();
        t.mark_cancelled("stop").unwrap();
        s
    };
    assert_eq!(
        kinds(&events_only(drain_blocking(&mut cancelled))),
        [
            EventKind::Init,
            EventKind::NodeStart,
            EventKind::NodeFailed,
            EventKind::Complete
        ]
    );
}
