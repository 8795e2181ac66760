//! 10,000 create -> scenario -> release cycles with a subscriber on each
//! trace: afterwards the engine is back to its idle shape (tasks == workers,
//! nothing in use, no subscribers) and every event was accounted for.

mod common;

use std::sync::mpsc;

use common::*;
use serde_json::json;
use tracepool::{Delivery, EventKind, Node, NodeOptions, ParallelInput, TraceOptions};

const CYCLES: usize = 10_000;
const WORKERS: usize = 2;
const CAPACITY: usize = 4;
/// init, root start, log, root complete (auto), parallel start,
/// 2 x branch complete, merge start, merge complete, complete.
const EVENTS_PER_CYCLE: usize = 10;

#[test]
fn ten_thousand_cycles_leave_the_engine_idle() {
    let (engine, driver) = counting_engine(CAPACITY, WORKERS);
    // Two long-lived threads complete the branches.
    let mut senders = Vec::new();
    let (done_tx, done_rx) = mpsc::channel::<tracepool::Result<()>>();
    let mut threads = Vec::new();
    for _ in 0..2 {
        let (tx, rx) = mpsc::channel::<Node>();
        let done = done_tx.clone();
        threads.push(std::thread::spawn(move || {
            for n in rx {
                done.send(n.complete(Some(json!({"done": true})))).unwrap();
            }
        }));
        senders.push(tx);
    }
    drop(done_tx);

    let kinds_expected = [
        EventKind::Init,
        EventKind::NodeStart,
        EventKind::LogAdded,
        EventKind::NodeComplete,
        EventKind::NodeStart,
        EventKind::NodeComplete,
        EventKind::NodeComplete,
        EventKind::NodeStart,
        EventKind::NodeComplete,
        EventKind::Complete,
    ];
    for i in 0..CYCLES {
        let trace = engine.create(TraceOptions::new()).unwrap();
        let mut sub = trace.subscribe().unwrap();
        trace
            .add(json!(i), NodeOptions::new().label("Input"))
            .unwrap();
        trace.info("Starting");
        let branches = trace
            .parallel(vec![
                ParallelInput::new("A", NodeOptions::new()),
                ParallelInput::new("B", NodeOptions::new()),
            ])
            .unwrap();
        for (b, tx) in branches.into_iter().zip(&senders) {
            tx.send(b).unwrap();
        }
        for _ in 0..2 {
            done_rx.recv().unwrap().unwrap();
        }
        trace.add("merge", NodeOptions::new()).unwrap();
        trace.complete(None).unwrap();
        trace.mark_complete().unwrap();
        let mut n = 0;
        while let Some(d) = sub.blocking_recv() {
            match d {
                Delivery::Event(e) => {
                    assert_eq!(e.kind, kinds_expected[n], "cycle {i}, event {n}");
                    assert_eq!(e.seq, n as u64 + 1);
                    n += 1;
                }
                Delivery::Lagged { missed } => panic!("cycle {i}: lagged {missed}"),
            }
        }
        assert_eq!(n, EVENTS_PER_CYCLE, "cycle {i}");
        if i % 2 == 0 {
            drop(sub);
            trace.release().unwrap();
        } else {
            // Release with the (ended) subscription still alive, then drop it.
            engine.release(trace.id()).unwrap();
            drop(sub);
        }
    }
    drop(senders);
    for t in threads {
        t.join().unwrap();
    }

    // Released slots drain on the workers: after a flush all are free.
    engine.flush_blocking().unwrap();
    let st = engine.stats();
    assert_eq!(st.live_tasks, WORKERS, "{st:?}");
    assert_eq!(st.workers, WORKERS);
    assert_eq!(st.in_use, 0);
    assert_eq!(st.free, CAPACITY);
    assert_eq!(st.capacity, CAPACITY);
    assert_eq!(st.subscribers, 0);
    assert_eq!(st.peak_in_use, 1);
    assert_eq!(st.events_emitted, (CYCLES * EVENTS_PER_CYCLE) as u64);
    assert_eq!(st.events_persisted, (CYCLES * EVENTS_PER_CYCLE) as u64);
    assert_eq!(
        driver.events.load(std::sync::atomic::Ordering::Relaxed),
        (CYCLES * EVENTS_PER_CYCLE) as u64
    );
    assert_eq!((st.events_dropped, st.draining), (0, 0));
    assert_eq!(st.events_lagged, 0);
    assert!(engine.list().is_empty());
}

/// The same with several traces alive at once, released out of order.
#[test]
fn interleaved_cycles_return_every_slot() {
    let engine = engine(8, WORKERS);
    let mut live = std::collections::VecDeque::new();
    for i in 0..2000 {
        let t = engine.create(TraceOptions::new()).unwrap();
        let sub = t.subscribe().unwrap();
        t.add(json!(i), NodeOptions::new()).unwrap();
        live.push_back((t, sub));
        if live.len() == 8 {
            // Release the middle one, then the oldest.
            let (t, _s) = live.remove(4).unwrap();
            t.release().unwrap();
            let (t, mut s) = live.pop_front().unwrap();
            t.release().unwrap();
            assert_eq!(events_only(drain_blocking(&mut s)).len(), 2);
        }
    }
    for (t, _) in live.drain(..) {
        t.mark_complete().unwrap();
        t.release().unwrap();
    }
    let st = engine.stats();
    assert_eq!((st.in_use, st.free, st.subscribers), (0, 8, 0));
    assert_eq!(st.live_tasks, WORKERS);
}
