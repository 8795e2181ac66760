//! Heap test, subscription cycle (own process, `harness = false`): create,
//! subscribe, add, complete, mark complete, read the stream to its end, drop
//! the subscription, release — the Go original's subscription benchmark
//! loop. After warm-up, 10,000 cycles retain 0 bytes and allocate at most
//! the bound: a subscription's shared part is reused from its slot and its
//! batch buffer from its thread, so a cycle allocates nothing.

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

use std::time::Duration;

use tracepool::{Delivery, Engine, EventKind, Exhausted, NodeOptions, TraceOptions};

#[path = "heap_support/phase.rs"]
mod phase;

use phase::{Checks, measure, wait_until_engine_threads_idle};

/// Measured allocations per cycle: 0.000 (debug build, 2026-11-29), plus a
/// small margin. Before the shared part and the buffer were reused: 2.
const MAX_BLOCKS_PER_CYCLE: f64 = 0.5;
const CYCLES: usize = 10_000;

fn cycle(e: &Engine) {
    let t = e.create(TraceOptions::new()).expect("create");
    let mut sub = t.subscribe().expect("subscribe");
    t.add("in", NodeOptions::new().label("step")).expect("add");
    t.complete(Some(serde_json::Value::Bool(true)))
        .expect("complete");
    t.mark_complete().expect("mark complete");
    let mut kinds = 0;
    let mut last = None;
    while let Some(d) = sub.blocking_recv() {
        if let Delivery::Event(ev) = d {
            kinds += 1;
            last = Some(ev.kind);
        }
    }
    assert_eq!((kinds, last), (4, Some(EventKind::Complete)));
    drop(sub);
    t.release().expect("release");
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
    // The engine's two threads (one worker, the ticker) allocate once as
    // they start: wait until both are idle.
    wait_until_engine_threads_idle(2);
    // Every slot used (and its reader parts made), then some more.
    for _ in 0..80 {
        cycle(&engine);
    }
    let p = measure(CYCLES, |_| cycle(&engine));
    println!("heap test, subscription cycle: {CYCLES} cycles after warm-up (4 slots)");
    println!(
        "  allocations per cycle: {:.3} blocks, {:.1} bytes",
        p.blocks, p.bytes
    );
    println!(
        "  retained: {} bytes in {} blocks",
        p.retained_bytes, p.retained_blocks
    );
    let mut checks = Checks::new(started);
    checks.check("retains 0 bytes", p.retains_nothing());
    checks.check(
        "allocations per cycle within the bound",
        p.blocks <= MAX_BLOCKS_PER_CYCLE,
    );
    checks.finish("the subscription cycle");
}
