//! Reference catalogue §8.6 (trace_subscription_test.go) and §8.7 (leak
//! tests), ported to fixed semantics: seq/time cursors apply to history and
//! live events; streams end after `complete` is delivered, or after release
//! once everything emitted before it was delivered; dropping unsubscribes.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt;
use serde_json::json;
use tracepool::{Cursor, Delivery, Error, EventKind, NodeOptions, SpaceOptions, TraceOptions};

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

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
    let resume = now_ms() + 100;
    // A time cursor slightly in the future, attached now: events emitted
    // before that time are filtered out of the live stream as well.
    let mut live = trace.subscribe_from(Cursor::Time(resume)).unwrap();
    trace.info("before resume"); // timestamp < resume (checked below)
    // Until the clock reaches the cursor (events are stamped with it, and
    // may trail the system clock by up to 1 ms).
    let deadline = Instant::now() + Duration::from_secs(10);
    while now_ms() < resume + 1 {
        assert!(Instant::now() < deadline, "the clock does not advance");
        std::thread::sleep(Duration::from_millis(1));
    }
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
    // The reader hands on each delivery as it gets it; its channel closes
    // when the stream ends.
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::Builder::new()
        .name("sub-reader".into())
        .spawn(move || {
            while let Some(d) = sub.blocking_recv() {
                tx.send(d).unwrap();
            }
        })
        .unwrap();
    let next_kind = || match rx.recv_timeout(Duration::from_secs(5)) {
        Ok(Delivery::Event(e)) => e.kind,
        other => panic!("expected an event, got {other:?}"),
    };
    // The replay, read: the reader then waits for live events.
    assert_eq!(next_kind(), EventKind::Init);
    assert_eq!(next_kind(), EventKind::NodeStart);
    trace.info("late");
    assert_eq!(next_kind(), EventKind::LogAdded, "woken by a live event");
    // The reader is blocked in `blocking_recv` again: the release must wake
    // it and end its stream.
    wait_until_asleep("sub-reader");
    trace.release().unwrap();
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(5)),
        Err(mpsc::RecvTimeoutError::Disconnected),
        "the stream ended after the release"
    );
    within(5, move || reader.join().unwrap());
}

/// Waits (at most 10 s) until the thread named `name` sleeps (state `S` in
/// `/proc/self/task/*/stat`): a reader blocked in `blocking_recv`.
fn wait_until_asleep(name: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let asleep = std::fs::read_dir("/proc/self/task")
            .expect("/proc/self/task (Linux)")
            .filter_map(Result::ok)
            .any(|t| {
                let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
                let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
                // `pid (comm) state ...`
                comm.trim_end() == name
                    && stat
                        .rsplit_once(") ")
                        .is_some_and(|(_, rest)| rest.starts_with('S'))
            });
        if asleep {
            return;
        }
        assert!(Instant::now() < deadline, "{name} never blocked");
        std::thread::yield_now();
    }
}

/// Counts its wake-ups.
#[derive(Debug, Default)]
struct WakeCount(AtomicUsize);

impl std::task::Wake for WakeCount {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// The same, step by step: a subscription that returned `Pending` is woken
/// by the next live event and by the release, and only then has something.
#[test]
fn a_pending_subscription_is_woken_by_a_live_event_and_by_release() {
    let engine = engine(1, 1);
    let trace = engine.create(TraceOptions::new()).unwrap();
    trace.add("x", NodeOptions::new()).unwrap();
    let mut sub = trace.subscribe().unwrap();
    let woken = Arc::new(WakeCount::default());
    let waker = Waker::from(woken.clone());
    let mut cx = Context::from_waker(&waker);
    let mut poll = || sub.poll_recv(&mut cx);
    let wakes = || woken.0.load(Ordering::SeqCst);

    let mut replay = Vec::new();
    while let Poll::Ready(d) = poll() {
        replay.push(d.expect("the stream goes on"));
    }
    assert_eq!(
        kinds(&events_only(replay)),
        [EventKind::Init, EventKind::NodeStart]
    );
    let before = wakes();
    trace.info("late");
    assert!(
        wakes() > before,
        "a live event wakes the pending subscription"
    );
    match poll() {
        Poll::Ready(Some(Delivery::Event(e))) => assert_eq!(e.kind, EventKind::LogAdded),
        other => panic!("expected the live event, got {other:?}"),
    }
    assert!(poll().is_pending());
    let before = wakes();
    trace.release().unwrap();
    assert!(
        wakes() > before,
        "the release wakes the pending subscription"
    );
    assert!(matches!(poll(), Poll::Ready(None)), "and its stream ends");
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
    let (ack, acks) = mpsc::channel::<u64>();
    let task = rt.spawn(async move {
        let mut got = Vec::new();
        while let Some(d) = sub.recv().await {
            if let Delivery::Event(e) = &d {
                let _ = ack.send(e.seq);
            }
            got.push(d);
        }
        got
    });
    let writer = trace.clone();
    std::thread::spawn(move || {
        // Each event is emitted once the task has received every earlier
        // one: the task is waiting (or about to) whenever one arrives.
        let caught_up = |t: &tracepool::Trace| {
            let last = t.events(Cursor::Seq(0)).unwrap().last().unwrap().seq;
            while acks.recv_timeout(Duration::from_secs(5)).expect("ack") < last {}
        };
        for i in 0..20 {
            caught_up(&writer);
            writer.add(json!(i), NodeOptions::new()).unwrap();
        }
        caught_up(&writer);
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
