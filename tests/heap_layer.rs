//! Heap test of the `tracing` Layer (own process, `harness = false`,
//! feature `tracing`): after warm-up, a steady stream of instrumented
//! requests (a root span and 10 nested spans with one event each) through
//! `Registry` + `TraceLayer` retains 0 bytes per request; spans and events
//! outside any root allocate nothing more than on a bare `Registry`.

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

use std::hint::black_box;
use std::time::Duration;

use tracing::{Dispatch, info, info_span};
use tracing_subscriber::layer::SubscriberExt;

/// Measured requests.
const REQUESTS: usize = 5_000;
/// Spans and events outside any root, per phase.
const OUTSIDE: usize = 5_000;

/// 10 nested spans, one event in each.
fn nested(depth: u64) {
    if depth == 0 {
        return;
    }
    let _span = info_span!("step", depth).entered();
    info!(depth, "working");
    nested(depth - 1);
}

/// One instrumented request: a trace root with 10 nested spans.
fn request(i: u64) {
    let _root = info_span!("request", tracepool.trace = true, i).entered();
    nested(10);
}

/// A span and an event with no root above them.
fn outside(i: u64) {
    let _span = info_span!("plain", i).entered();
    info!(i, "not traced");
}

#[derive(Debug, Clone, Copy)]
struct Phase {
    blocks: f64,
    retained_bytes: i64,
    retained_blocks: i64,
}

fn measure(n: usize, mut f: impl FnMut(u64)) -> Phase {
    let a = dhat::HeapStats::get();
    for i in 0..n {
        f(black_box(i as u64));
    }
    let b = dhat::HeapStats::get();
    Phase {
        blocks: (b.total_blocks - a.total_blocks) as f64 / n as f64,
        retained_bytes: b.curr_bytes as i64 - a.curr_bytes as i64,
        retained_blocks: b.curr_blocks as i64 - a.curr_blocks as i64,
    }
}

fn main() {
    let started = std::time::Instant::now();
    let _profiler = dhat::Profiler::builder().testing().build();
    let engine = tracepool::Engine::builder()
        .capacity(4)
        .workers(1)
        .flush_interval(Duration::from_secs(3600))
        .idle_timeout(None)
        .on_exhausted(tracepool::Exhausted::Error)
        .memory()
        .build()
        .expect("engine");
    let with_layer = Dispatch::new(
        tracing_subscriber::registry().with(tracepool::layer::TraceLayer::new(engine.clone())),
    );
    let bare = Dispatch::new(tracing_subscriber::registry());

    // Warm-up: callsites registered, the registry's slab and every pool
    // slot's buffers grown to what a request needs.
    tracing::dispatcher::with_default(&with_layer, || {
        for i in 0..200 {
            request(i);
            outside(i);
        }
    });
    tracing::dispatcher::with_default(&bare, || {
        for i in 0..200 {
            outside(i);
        }
    });

    let (requests, layer_outside) = tracing::dispatcher::with_default(&with_layer, || {
        (measure(REQUESTS, request), measure(OUTSIDE, outside))
    });
    let bare_outside = tracing::dispatcher::with_default(&bare, || measure(OUTSIDE, outside));
    let stats = engine.stats();

    println!(
        "heap test, tracing Layer: {REQUESTS} requests (root + 10 nested spans, one event each) after warm-up"
    );
    println!(
        "  per request: {:.2} allocations; retained after {REQUESTS}: {} bytes in {} blocks",
        requests.blocks, requests.retained_bytes, requests.retained_blocks
    );
    println!(
        "  outside any root, per span + event: {:.3} allocations with the layer, {:.3} on a bare Registry; retained {} bytes",
        layer_outside.blocks, bare_outside.blocks, layer_outside.retained_bytes
    );
    println!(
        "  engine: {} events emitted, {} traces in use at the end",
        stats.events_emitted, stats.in_use
    );

    let mut passed = 0;
    let mut failed = 0;
    let mut check = |name: &str, ok: bool| {
        println!("  {} ... {}", name, if ok { "ok" } else { "FAILED" });
        if ok {
            passed += 1;
        } else {
            failed += 1;
        }
    };
    check(
        "a steady stream of requests retains 0 bytes",
        requests.retained_bytes == 0 && requests.retained_blocks == 0,
    );
    check(
        "spans outside roots allocate nothing in tracepool",
        layer_outside.blocks <= bare_outside.blocks && layer_outside.retained_bytes == 0,
    );
    check("every request's trace was released", stats.in_use == 0);
    println!(
        "{passed} passed, {failed} failed ({:.1} s)",
        started.elapsed().as_secs_f64()
    );
    dhat::assert!(failed == 0, "heap test of the tracing Layer failed");
}
