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
    // Every slot used (and its reader parts made), then some more.
    for _ in 0..64 {
        cycle(&engine);
    }
    // The engine's threads allocate once as they start: let them settle.
    std::thread::sleep(Duration::from_millis(50));
    for _ in 0..16 {
        cycle(&engine);
    }
    let a = dhat::HeapStats::get();
    for _ in 0..CYCLES {
        cycle(&engine);
    }
    let b = dhat::HeapStats::get();
    let blocks = (b.total_blocks - a.total_blocks) as f64 / CYCLES as f64;
    let retained_bytes = b.curr_bytes as i64 - a.curr_bytes as i64;
    let retained_blocks = b.curr_blocks as i64 - a.curr_blocks as i64;
    println!("heap test, subscription cycle: {CYCLES} cycles after warm-up (4 slots)");
    println!(
        "  allocations per cycle: {blocks:.3} blocks, {:.1} bytes",
        (b.total_bytes - a.total_bytes) as f64 / CYCLES as f64
    );
    println!("  retained: {retained_bytes} bytes in {retained_blocks} blocks");
    let checks = [
        (
            "retains 0 bytes",
            retained_bytes == 0 && retained_blocks == 0,
        ),
        (
            "allocations per cycle within the bound",
            blocks <= MAX_BLOCKS_PER_CYCLE,
        ),
    ];
    let failed = checks.iter().filter(|c| !c.1).count();
    for (name, ok) in checks {
        println!("  {name} ... {}", if ok { "ok" } else { "FAILED" });
    }
    println!(
        "{} passed, {failed} failed ({:.1} s)",
        checks.len() - failed,
        started.elapsed().as_secs_f64()
    );
    dhat::assert!(failed == 0, "heap test failed for the subscription cycle");
}
