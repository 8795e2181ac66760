//! Many subscribers of one trace, read through the lock-free path (events
//! published by whichever subscriber read them first): readers racing the
//! writer across eviction and lag, and readers of a released trace whose
//! slot is reset and reused by the next trace.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tracepool::{Cursor, Delivery, Engine, EventKind, NodeOptions, Subscription, TraceOptions};

/// What one subscription received: checks the stream's rules as it goes
/// (seq order, no gap but a reported one, no event of another trace).
struct Check {
    trace_id: String,
    /// Seq of the next event expected.
    next: u64,
    events: u64,
    missed: u64,
    lagged_last: bool,
    ended: bool,
}

impl Check {
    fn new(trace_id: &str, from: u64) -> Check {
        Check {
            trace_id: trace_id.to_owned(),
            next: from.max(1),
            events: 0,
            missed: 0,
            lagged_last: false,
            ended: false,
        }
    }

    fn take(&mut self, d: Option<Delivery>) {
        assert!(!self.ended, "a delivery after the end");
        match d {
            None => self.ended = true,
            Some(Delivery::Lagged { missed }) => {
                assert!(missed > 0, "an empty lag");
                assert!(!self.lagged_last, "two lags in a row");
                self.next += missed;
                self.missed += missed;
                self.lagged_last = true;
            }
            Some(Delivery::Event(e)) => {
                assert_eq!(e.trace_id(), self.trace_id, "an event of another trace");
                assert_eq!(
                    e.seq, self.next,
                    "out of order, duplicated or an unreported gap"
                );
                self.next += 1;
                self.events += 1;
                self.lagged_last = false;
            }
        }
    }
}

/// Reads `sub` until its stream ends, with `try_recv` (spinning) or
/// `blocking_recv`, alternating per subscription.
fn drain(mut sub: Subscription, mut check: Check, blocking: bool) -> Check {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check.ended {
        assert!(Instant::now() < deadline, "the stream never ended");
        if blocking {
            check.take(sub.blocking_recv());
        } else {
            match sub.try_recv() {
                Ok(d) => check.take(d),
                Err(()) => std::thread::yield_now(),
            }
        }
    }
    assert!(sub.try_recv().is_ok_and(|d| d.is_none()), "ended for good");
    check
}

/// 8 subscribers on 4 threads read while the writer emits far more than the
/// history keeps: every subscriber sees each event once, in order, gaps
/// only where it was told (`Lagged`), and the stream ends after `complete`.
#[test]
fn readers_race_the_writer_across_eviction() {
    let engine = Engine::builder()
        .memory()
        .workers(1)
        .capacity(4)
        .history_limit(96)
        .subscriber_buffer(40)
        .max_subscribers(16)
        .build()
        .unwrap();
    let trace = engine.create(TraceOptions::new()).unwrap();
    // Log lines go to the current node.
    let _node = trace.add("in", NodeOptions::new()).unwrap();
    let id = trace.id().to_owned();
    let subs: Vec<Subscription> = (0..8).map(|_| trace.subscribe().unwrap()).collect();
    let go = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    let mut it = subs.into_iter().enumerate();
    for _ in 0..4 {
        let pair: Vec<_> = it.by_ref().take(2).collect();
        let (id, go) = (id.clone(), go.clone());
        readers.push(std::thread::spawn(move || {
            while !go.load(Ordering::Acquire) {
                std::hint::spin_loop();
            }
            let mut out = Vec::new();
            let mut pair = pair.into_iter();
            // The first subscription of the pair is read a little first, so
            // that the two take turns being the one that publishes.
            if let Some((i, a)) = pair.next() {
                let (j, b) = pair.next().unwrap();
                let hb = std::thread::spawn({
                    let id = id.clone();
                    move || drain(b, Check::new(&id, 1), j % 2 == 1)
                });
                out.push(drain(a, Check::new(&id, 1), i % 2 == 1));
                out.push(hb.join().unwrap());
            }
            out
        }));
    }
    go.store(true, Ordering::Release);
    const LINES: u64 = 20_000;
    for i in 0..LINES {
        trace.info(if i % 2 == 0 { "even" } else { "odd" });
        if i % 64 == 0 {
            // Let the readers keep up some of the time (and lag some).
            std::thread::yield_now();
        }
    }
    trace.mark_complete().unwrap();
    let total = LINES + 3; // init, node_start, the lines, complete
    let checks: Vec<Check> = readers
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    assert_eq!(checks.len(), 8);
    for c in &checks {
        assert_eq!(c.next, total + 1, "read up to complete");
        assert_eq!(
            c.events + c.missed,
            total,
            "every event delivered or reported"
        );
    }
    engine.shutdown().unwrap();
}

/// Subscribers of a trace that is released while they are behind, reading
/// on their own threads while the slot is reset and reused by new traces
/// (one slot): each reads exactly its own trace's events — from its pinned
/// block, then from the frozen history — and its stream ends.
#[test]
fn readers_of_a_released_slot_never_see_the_next_occupant() {
    let engine = Engine::builder()
        .memory()
        .workers(1)
        .capacity(1)
        .max_subscribers(8)
        .build()
        .unwrap();
    for round in 0..20u64 {
        let trace = engine.create(TraceOptions::new()).unwrap();
        let node = trace.add("in", NodeOptions::new()).unwrap();
        let id = trace.id().to_owned();
        let mut subs: Vec<Subscription> = (0..3).map(|_| trace.subscribe().unwrap()).collect();
        // Published and pinned: every subscriber reads the first events.
        for _ in 0..10 {
            trace.info("before");
        }
        let mut checks: Vec<Check> = subs.iter().map(|_| Check::new(&id, 1)).collect();
        for (s, c) in subs.iter_mut().zip(&mut checks) {
            for _ in 0..5 {
                c.take(s.try_recv().expect("ready"));
            }
        }
        // More than a block more, so the readers cross blocks.
        let n = 100 + round * 7;
        for _ in 0..n {
            trace.info("after");
        }
        let readers: Vec<_> = subs
            .into_iter()
            .zip(checks)
            .enumerate()
            .map(|(i, (s, c))| std::thread::spawn(move || drain(s, c, i == 0)))
            .collect();
        // Released while they read; the slot goes to the next trace at once.
        drop(node);
        trace.release().unwrap();
        let next = engine.create(TraceOptions::new()).unwrap();
        let _next_node = next.add("in", NodeOptions::new()).unwrap();
        let mut other = next.subscribe_from(Cursor::Seq(0)).unwrap();
        for _ in 0..200 {
            next.info("next occupant");
        }
        next.mark_complete().unwrap();
        let mut seen = Check::new(next.id(), 1);
        while !seen.ended {
            seen.take(other.blocking_recv());
        }
        drop(other);
        next.release().unwrap();
        for r in readers {
            let c = r.join().unwrap();
            // init, node_start, 10 + n lines: nothing lost (the history
            // keeps them all).
            assert_eq!(c.events, 12 + n, "round {round}");
            assert_eq!(c.missed, 0);
        }
    }
    engine.shutdown().unwrap();
}

/// A subscriber that reads lock-free stops exactly at `complete`.
#[test]
fn lock_free_delivery_ends_after_complete() {
    let engine = Engine::builder()
        .memory()
        .workers(1)
        .capacity(2)
        .build()
        .unwrap();
    let trace = engine.create(TraceOptions::new()).unwrap();
    let mut subs: Vec<Subscription> = (0..4).map(|_| trace.subscribe().unwrap()).collect();
    let _node = trace.add("in", NodeOptions::new()).unwrap();
    trace.info("one");
    trace.mark_complete().unwrap();
    for s in &mut subs {
        let mut kinds = Vec::new();
        while let Ok(Some(Delivery::Event(e))) = s.try_recv() {
            kinds.push(e.kind);
        }
        assert_eq!(
            kinds,
            [
                EventKind::Init,
                EventKind::NodeStart,
                EventKind::LogAdded,
                EventKind::Complete
            ]
        );
        assert_eq!(s.try_recv(), Ok(None));
        assert_eq!(s.next_seq(), 5);
    }
    engine.shutdown().unwrap();
}
