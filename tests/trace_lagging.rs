//! Lagging subscribers. The retained history a subscription starts with is
//! replayed whole (`subscriber_buffer` does not apply to it; only events
//! evicted from history are skipped). Past the replay, a reader more than
//! `subscriber_buffer` events behind gets exactly one
//! `Delivery::Lagged { missed }` per gap, `missed` equal to the number of
//! skipped seqs, then continues in order.

mod common;

use common::*;
use tracepool::{
    Cursor, Delivery, Engine, EventKind, Node, NodeOptions, Subscription, Trace, TraceOptions,
};

fn ev(d: Option<Delivery>) -> tracepool::Event {
    match d {
        Some(Delivery::Event(e)) => e,
        other => panic!("expected an event, got {other:?}"),
    }
}

fn lagged(d: Option<Delivery>) -> u64 {
    match d {
        Some(Delivery::Lagged { missed }) => missed,
        other => panic!("expected Lagged, got {other:?}"),
    }
}

#[test]
fn one_lagged_per_gap_with_exact_missed_counts() {
    let engine = engine_with(2, 1, 1000, 8);
    let trace = engine.create(TraceOptions::new()).unwrap();
    let root = trace.add("root", NodeOptions::new()).unwrap();
    for _ in 0..48 {
        root.info("x");
    }
    // 50 events exist: the replay delivers all of them, although the
    // subscriber may fall only 8 behind live events.
    let mut sub = trace.subscribe().unwrap();
    for seq in 1..=50 {
        assert_eq!(ev(sub.blocking_recv()).seq, seq);
    }
    assert_eq!(sub.try_recv(), Err(()));
    // Live events: a gap.
    for _ in 0..20 {
        root.info("y");
    }
    assert_eq!(lagged(sub.blocking_recv()), 12);
    for seq in 63..=70 {
        assert_eq!(ev(sub.blocking_recv()).seq, seq);
    }
    // Within the bound: no lag.
    for _ in 0..8 {
        root.info("z");
    }
    for seq in 71..=78 {
        assert_eq!(ev(sub.blocking_recv()).seq, seq);
    }
    trace.mark_complete().unwrap();
    let last = ev(sub.blocking_recv());
    assert_eq!((last.seq, last.kind), (79, EventKind::Complete));
    assert!(sub.blocking_recv().is_none());
    engine.flush_blocking().unwrap();
    assert_eq!(engine.stats().events_lagged, 12);
}

/// The replay is not bounded by `subscriber_buffer`: 3,000 retained events
/// with a buffer of 16 arrive whole, without `Lagged`.
#[test]
fn replay_of_the_retained_history_is_whole() {
    let engine = engine_with(2, 1, 4096, 16);
    let trace = engine.create(TraceOptions::new()).unwrap();
    let root = trace.add("root", NodeOptions::new()).unwrap();
    for _ in 0..2997 {
        root.info("x");
    }
    trace.mark_complete().unwrap();
    assert_eq!(history(&trace).len(), 3000);
    let mut sub = trace.subscribe().unwrap();
    let got = events_only(drain_blocking(&mut sub));
    assert_eq!(got.len(), 3000);
    assert_contiguous_from(&got, 1);
    // Also from a cursor inside the history, and after the trace was released.
    let mut from = trace.subscribe_from(Cursor::Seq(1001)).unwrap();
    trace.release().unwrap();
    let got = events_only(drain_blocking(&mut from));
    assert_eq!(got.len(), 2000);
    assert_contiguous_from(&got, 1001);
}

#[test]
fn cursor_older_than_history_is_reported_as_lag() {
    let engine = engine_with(2, 1, 16, 1024);
    let trace = engine.create(TraceOptions::new()).unwrap();
    let root = trace.add("root", NodeOptions::new()).unwrap();
    for _ in 0..38 {
        root.info("x");
    }
    // 40 events, the last 16 retained: 25..=40.
    let hist = history(&trace);
    assert_eq!(hist.first().unwrap().seq, 25);
    assert_eq!(hist.len(), 16);
    engine.flush_blocking().unwrap();
    assert_eq!(engine.stats().history_evicted, 24);

    let mut sub = trace.subscribe_from(Cursor::Seq(10)).unwrap();
    assert_eq!(lagged(sub.blocking_recv()), 15);
    for seq in 25..=40 {
        assert_eq!(ev(sub.blocking_recv()).seq, seq);
    }
    // A time cursor older than the retained history: the evicted part is lag too.
    let mut by_time = trace.subscribe_from(Cursor::Time(0)).unwrap();
    assert_eq!(lagged(by_time.blocking_recv()), 24);
    assert_eq!(ev(by_time.blocking_recv()).seq, 25);
    // A cursor inside the retained history: no lag.
    let mut inside = trace.subscribe_from(Cursor::Seq(30)).unwrap();
    assert_eq!(ev(inside.blocking_recv()).seq, 30);
}

/// A trace subscribed to when `init` was its newest event (the replay),
/// then 29 live events: more than the buffer of 8.
fn replay_then_29_live(engine: &Engine) -> (Trace, Subscription, Node) {
    let trace = engine.create(TraceOptions::new()).unwrap();
    let sub = trace.subscribe().unwrap();
    let root = trace.add("root", NodeOptions::new()).unwrap();
    for _ in 0..28 {
        root.info("x");
    }
    (trace, sub, root)
}

#[test]
fn lag_is_reported_after_release_too() {
    let engine = engine_with(1, 1, 1000, 8);
    let (trace, mut sub, _root) = replay_then_29_live(&engine);
    trace.release().unwrap();
    // The subscription was made when `init` was the newest event: that is
    // its replay. The 29 live events behind it exceed the buffer of 8.
    assert_eq!(ev(sub.blocking_recv()).seq, 1);
    assert_eq!(lagged(sub.blocking_recv()), 21);
    for seq in 23..=30 {
        assert_eq!(ev(sub.blocking_recv()).seq, seq);
    }
    assert!(sub.blocking_recv().is_none());
}

/// The same on a live trace: the replay, the lag and the live events after
/// it come out in order, and nothing is left before the next event.
#[test]
fn lag_after_the_replay_is_reported_on_a_live_trace() {
    let engine = engine_with(1, 1, 1000, 8);
    let (_trace, mut sub, root) = replay_then_29_live(&engine);
    assert_eq!(ev(sub.try_recv().unwrap()).seq, 1);
    assert_eq!(lagged(sub.try_recv().unwrap()), 21);
    for seq in 23..=30 {
        assert_eq!(ev(sub.try_recv().unwrap()).seq, seq);
    }
    assert!(sub.try_recv().is_err(), "nothing more yet");
    root.info("y");
    assert_eq!(ev(sub.try_recv().unwrap()).seq, 31);
}

/// A slow reader racing a fast writer: every gap is reported once, the
/// accounting is exact and the order is kept.
#[test]
fn slow_reader_against_concurrent_writer() {
    const N: u64 = 3000;
    let engine = engine_with(2, 2, 4096, 16);
    let trace = engine.create(TraceOptions::new()).unwrap();
    let root = trace.add("root", NodeOptions::new()).unwrap();
    let mut sub = trace.subscribe().unwrap();
    let writer = {
        let trace = trace.clone();
        std::thread::spawn(move || {
            for i in 0..N {
                root.info("x");
                if i % 64 == 0 {
                    std::thread::yield_now();
                }
            }
            trace.mark_complete().unwrap();
        })
    };
    let mut next = 1u64; // the seq the reader expects next
    let mut missed_total = 0u64;
    let mut events = 0u64;
    let mut gaps = 0u64;
    let mut last_kind = None;
    let mut i = 0u64;
    while let Some(d) = sub.blocking_recv() {
        i += 1;
        if i.is_multiple_of(7) {
            // Pacing: the reader is slower than the writer.
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        match d {
            Delivery::Lagged { missed } => {
                assert!(missed > 0);
                // Consecutive Lagged items are covered (deterministically)
                // by `lagged_is_followed_by_an_event`.
                missed_total += missed;
                next += missed;
                gaps += 1;
            }
            Delivery::Event(e) => {
                assert_eq!(e.seq, next, "gap or duplicate not reported exactly");
                next += 1;
                events += 1;
                last_kind = Some(e.kind);
            }
        }
    }
    writer.join().unwrap();
    let total = 2 + N + 1;
    assert_eq!(last_kind, Some(EventKind::Complete));
    assert_eq!(events + missed_total, total);
    assert_eq!(next, total + 1);
    assert!(gaps > 0, "the reader was expected to lag at least once");
    engine.flush_blocking().unwrap();
    assert_eq!(engine.stats().events_lagged, missed_total);
}

/// One gap, one `Lagged`: the writer emitting more while the reader is
/// between the `Lagged` and the next event must not produce a second
/// `Lagged` for the same (contiguous) run of skipped seqs.
#[test]
fn lagged_is_followed_by_an_event() {
    let engine = engine_with(2, 1, 1000, 8);
    let trace = engine.create(TraceOptions::new()).unwrap();
    let mut sub = trace.subscribe().unwrap(); // replays `init` only
    let root = trace.add("root", NodeOptions::new()).unwrap();
    for _ in 0..48 {
        root.info("x");
    }
    assert_eq!(ev(sub.blocking_recv()).seq, 1);
    assert_eq!(lagged(sub.blocking_recv()), 41); // seqs 2..=42 skipped
    for _ in 0..20 {
        root.info("y"); // seqs 51..=70, before the reader got any event
    }
    // Seqs 2..=62 are one contiguous gap: the reader must now get an event
    // (seq 43, the oldest within its bound when the Lagged was delivered),
    // not a second Lagged.
    let d = sub.blocking_recv();
    assert!(
        matches!(&d, Some(Delivery::Event(_))),
        "second Lagged for one gap: {d:?}"
    );
}
