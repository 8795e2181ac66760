//! Subscribers attached while 8 threads write: each sees exactly the events
//! with seq >= its cursor (or timestamp >= its time cursor), in order, no
//! gaps, no duplicates — through async `recv`, `blocking_recv` and `Stream`.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
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

fn expected(all: &[Event], c: Cursor) -> Vec<Event> {
    all.iter()
        .filter(|e| match c {
            Cursor::Seq(n) => e.seq >= n,
            Cursor::Time(ms) => e.timestamp >= ms,
        })
        .cloned()
        .collect()
}

#[test]
fn subscribers_attached_during_writes_see_exactly_their_suffix() {
    let total = 3 + WRITERS * PER_WRITER * 2 + 1;
    let engine = engine_with(2, 2, total + 16, total + 16);
    let trace = engine.create(TraceOptions::new()).unwrap();
    let root = trace.add("root", NodeOptions::new()).unwrap();
    let space = trace.create_space(SpaceOptions::new()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let writing = Arc::new(AtomicBool::new(true));
    let start = Arc::new(Barrier::new(WRITERS + 1));

    let mut seen: Vec<Seen> = Vec::new();
    std::thread::scope(|s| {
        for w in 0..WRITERS {
            let (root, trace, space, start) = (&root, &trace, &space, start.clone());
            s.spawn(move || {
                start.wait();
                for k in 0..PER_WRITER {
                    root.info(format!("w{w} k{k}"));
                    trace
                        .set_space_value(&space.id, &format!("w{w}_{k}"), k)
                        .unwrap();
                    if k % 16 == 0 {
                        std::thread::yield_now();
                    }
                }
            });
        }
        start.wait();

        let mut blocking = Vec::new();
        let mut tasks = Vec::new();
        for i in 0..12 {
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
        // Wait for the writers (they are the only other scoped threads
        // besides the blocking readers, which end after `complete`).
        let t = trace.clone();
        let w = writing.clone();
        s.spawn(move || {
            // Completed once every writer's events are in.
            while t.events(Cursor::Seq(0)).unwrap().len() < total - 1 {
                std::thread::sleep(Duration::from_millis(1));
            }
            t.mark_complete().unwrap();
            w.store(false, Ordering::Release);
        });
        for t in tasks {
            let r = rt.block_on(async { tokio::time::timeout(Duration::from_secs(20), t).await });
            seen.push(r.expect("async subscriber ended").unwrap());
        }
        for b in blocking {
            seen.push(b.join().unwrap());
        }
    });
    assert!(!writing.load(Ordering::Acquire));

    let all = history(&trace);
    assert_eq!(all.len(), total);
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
