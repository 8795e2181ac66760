//! Subscribers attached while 8 threads write: each sees exactly the events
//! with seq >= its cursor (or timestamp >= its time cursor), in order, no
//! gaps, no duplicates — through async `recv`, `blocking_recv` and `Stream`.

mod common;

use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use tracepool::{Cursor, Delivery, Event, NodeOptions, SpaceOptions, Trace, TraceOptions};

const WRITERS: usize = 8;
const PER_WRITER: usize = 400;

/// What a subscriber was attached with, and what it received.
struct Seen {
    cursor: Cursor,
    got: Vec<Delivery>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A cursor somewhere in what was written so far.
fn pick_cursor(trace: &Trace, i: usize) -> Cursor {
    let len = trace.events(Cursor::Seq(0)).unwrap().len() as u64;
    match i % 4 {
        0 => Cursor::Seq(0),
        1 => Cursor::Seq(len / 2 + 1),
        2 => Cursor::Seq(len + 3), // a little in the future
        _ => Cursor::Time(now_ms()),
    }
}

/// Waits (at most 20 s) until `flag` is set.
fn wait_for(flag: &AtomicBool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !flag.load(Ordering::Acquire) {
        assert!(
            std::time::Instant::now() < deadline,
            "the subscriptions were never all attached"
        );
        std::thread::yield_now();
    }
}

fn expected(all: &[Event], c: Cursor) -> Vec<Event> {
    all.iter()
        .filter(|e| match c {
            Cursor::Seq(n) => e.seq >= n,
            Cursor::Time(ms) => e.timestamp >= ms,
        })
        .cloned()
        .collect()
}

/// Iterations a writer may make before every subscription is attached
/// (then it waits for them), and makes at least after that.
const MAX_BEFORE: usize = 4_000;
const AFTER: usize = 16;

#[test]
fn subscribers_attached_during_writes_see_exactly_their_suffix() {
    // Every event fits in history and in each subscriber's buffer.
    let bound = 3 + WRITERS * (MAX_BEFORE + AFTER) * 2 + 1 + 16;
    let engine = engine_with(2, 2, bound, bound);
    let trace = engine.create(TraceOptions::new()).unwrap();
    let root = trace.add("root", NodeOptions::new()).unwrap();
    let space = trace.create_space(SpaceOptions::new()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let attached = AtomicBool::new(false);
    let start = Barrier::new(WRITERS + 1);

    let mut seen: Vec<Seen> = Vec::new();
    let iterations: usize = std::thread::scope(|s| {
        // The writers keep writing until every subscription is attached, and
        // a little longer: each subscription is made while they write.
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (root, trace, space, start, attached) =
                    (&root, &trace, &space, &start, &attached);
                s.spawn(move || {
                    start.wait();
                    // The iteration count to stop at (at least
                    // PER_WRITER), once every subscription is attached.
                    let mut stop_at = None;
                    for k in 0.. {
                        root.info(format!("w{w} k{k}"));
                        // At most 400 keys per writer: within the entry bound.
                        trace
                            .set_space_value(&space.id, &format!("w{w}_{}", k % 400), k)
                            .unwrap();
                        if k % 16 == 0 {
                            std::thread::yield_now();
                        }
                        if stop_at.is_none() {
                            if k + 1 == MAX_BEFORE {
                                wait_for(attached);
                            }
                            if attached.load(Ordering::Acquire) {
                                stop_at = Some((k + 1 + AFTER).max(PER_WRITER));
                            }
                        }
                        if stop_at == Some(k + 1) {
                            return k + 1;
                        }
                    }
                    unreachable!()
                })
            })
            .collect();
        start.wait();

        let mut blocking = Vec::new();
        let mut tasks = Vec::new();
        for i in 0..12 {
            // Pacing: spreads the cursors over the history being written.
            std::thread::sleep(Duration::from_micros(300));
            let cursor = pick_cursor(&trace, i);
            let mut sub = trace.subscribe_from(cursor).unwrap();
            match i % 3 {
                0 => blocking.push(s.spawn(move || Seen {
                    cursor,
                    got: drain_blocking(&mut sub),
                })),
                1 => tasks.push(rt.spawn(async move {
                    let mut got = Vec::new();
                    while let Some(d) = sub.recv().await {
                        got.push(d);
                    }
                    Seen { cursor, got }
                })),
                _ => tasks.push(rt.spawn(async move {
                    let got = sub.collect::<Vec<_>>().await;
                    Seen { cursor, got }
                })),
            }
        }
        attached.store(true, Ordering::Release);
        // Every writer's events are in: the trace completes, the streams end.
        let iterations = writers.into_iter().map(|w| w.join().unwrap()).sum();
        trace.mark_complete().unwrap();
        for t in tasks {
            let r = rt.block_on(async { tokio::time::timeout(Duration::from_secs(20), t).await });
            seen.push(r.expect("async subscriber ended").unwrap());
        }
        for b in blocking {
            seen.push(b.join().unwrap());
        }
        iterations
    });

    let all = history(&trace);
    // init, root start, space_created, 2 per iteration, complete.
    assert_eq!(all.len(), 3 + 2 * iterations + 1);
    assert_contiguous_from(&all, 1);
    assert_eq!(seen.len(), 12);
    for s in seen {
        let want = expected(&all, s.cursor);
        let got = events_only(s.got);
        assert_eq!(
            got.len(),
            want.len(),
            "cursor {:?}: got {} events, want {}",
            s.cursor,
            got.len(),
            want.len()
        );
        assert!(
            got == want,
            "cursor {:?}: stream differs from history",
            s.cursor
        );
        if let Cursor::Seq(n) = s.cursor {
            assert_contiguous_from(&got, n.max(1));
        }
    }
    assert_eq!(engine.stats().subscribers, 0);
}

/// Many subscribers from the start, each on its own reader, all get the
/// full history exactly once.
#[test]
fn full_history_subscribers_under_load() {
    let total = 2 + WRITERS * PER_WRITER + 1;
    let engine = engine_with(2, 2, total + 16, total + 16);
    let trace = engine.create(TraceOptions::new()).unwrap();
    let root = trace.add("root", NodeOptions::new()).unwrap();
    let subs: Vec<_> = (0..4).map(|_| trace.subscribe().unwrap()).collect();
    let readers: Vec<_> = subs
        .into_iter()
        .map(|mut s| std::thread::spawn(move || drain_blocking(&mut s)))
        .collect();
    std::thread::scope(|s| {
        for _ in 0..WRITERS {
            s.spawn(|| {
                for _ in 0..PER_WRITER {
                    root.info("x");
                }
            });
        }
    });
    trace.mark_complete().unwrap();
    let all = history(&trace);
    assert_eq!(all.len(), total);
    for r in readers {
        let got = events_only(within(20, move || r.join().unwrap()));
        assert!(got == all, "stream differs from history");
    }
}
