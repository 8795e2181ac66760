//! Heap test, fan-out (own process, `harness = false`): one trace with 8
//! live subscribers, each log line delivered to all of them, against the
//! same trace shape with 1 subscriber. Delivering an event to another
//! subscriber must allocate nothing: the 8-subscriber phase may allocate no
//! more per event than the 1-subscriber phase (plus a margin far below one
//! block per extra subscriber), and what it delivered is not retained
//! beyond the traces' bounded histories.

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

use std::time::Duration;

use tracepool::{Delivery, Engine, Exhausted, NodeOptions, Subscription, Trace, TraceOptions};

#[path = "heap_support/phase.rs"]
mod phase;

use phase::{Checks, measure, wait_until_engine_threads_idle};

/// Events per measured phase (more than the history keeps, so eviction
/// runs in both phases).
const EVENTS: usize = 20_000;
const MANY: usize = 8;
/// How much more the 8-subscriber phase may allocate per event than the
/// 1-subscriber one. One block per extra subscriber would be 7.
const MARGIN_BLOCKS_PER_EVENT: f64 = 0.05;

/// Reads every delivery that is ready; returns how many events it got.
fn drain(sub: &mut Subscription) -> usize {
    let mut n = 0;
    loop {
        match sub.try_recv() {
            Ok(Some(Delivery::Event(_))) => n += 1,
            Ok(Some(other)) => panic!("unexpected delivery {other:?}"),
            Ok(None) => panic!("the stream ended early"),
            Err(()) => return n,
        }
    }
}

/// A trace with a root node and `n` subscribers that have read its history.
fn trace_with_subscribers(e: &Engine, n: usize) -> (Trace, Vec<Subscription>) {
    let t = e.create(TraceOptions::new()).expect("create");
    t.add("in", NodeOptions::new().label("root")).expect("add");
    let mut subs: Vec<_> = (0..n).map(|_| t.subscribe().expect("subscribe")).collect();
    for s in &mut subs {
        drain(s);
    }
    (t, subs)
}

/// One log line, read by every subscriber.
fn deliver(t: &Trace, subs: &mut [Subscription]) {
    t.info("a line every subscriber reads");
    for s in subs.iter_mut() {
        assert_eq!(drain(s), 1);
    }
}

fn main() {
    let started = std::time::Instant::now();
    let _profiler = dhat::Profiler::builder().testing().build();
    let engine = Engine::builder()
        .capacity(4)
        .workers(1)
        .flush_interval(Duration::from_secs(3600))
        .on_exhausted(Exhausted::Error)
        .memory()
        .build()
        .expect("engine");
    wait_until_engine_threads_idle(2);

    let (one, mut one_subs) = trace_with_subscribers(&engine, 1);
    let (many, mut many_subs) = trace_with_subscribers(&engine, MANY);
    // Warm-up: both histories full, every reusable buffer made.
    for _ in 0..EVENTS {
        deliver(&one, &mut one_subs);
        deliver(&many, &mut many_subs);
    }
    let p1 = measure(EVENTS, |_| deliver(&one, &mut one_subs));
    let p8 = measure(EVENTS, |_| deliver(&many, &mut many_subs));
    println!("heap test, fan-out: {EVENTS} events after warm-up");
    for (n, p) in [(1, p1), (MANY, p8)] {
        println!(
            "  {n} subscriber(s): {:.4} blocks, {:.1} bytes per event; retained {} bytes in {} blocks",
            p.blocks, p.bytes, p.retained_bytes, p.retained_blocks
        );
    }
    let mut checks = Checks::new(started);
    checks.check(
        "an extra subscriber allocates nothing per event",
        p8.blocks <= p1.blocks + MARGIN_BLOCKS_PER_EVENT,
    );
    // Both histories are full: what a phase adds, it evicts. Wire bytes live
    // in 16 KiB chunks shared by consecutive events, so a phase may end
    // holding a chunk the other phase then frees: the two together retain at
    // most the chunks still in use.
    checks.check(
        "the two phases together retain at most the chunks in use",
        p1.retained_bytes + p8.retained_bytes <= 4 * 16 * 1024,
    );
    drop(one_subs);
    drop(many_subs);
    one.release().expect("release");
    many.release().expect("release");
    checks.finish("the fan-out");
}
