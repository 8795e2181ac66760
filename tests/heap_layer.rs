//! Heap test of the `tracing` Layer (own process, `harness = false`,
//! feature `tracing`): after warm-up, a steady stream of instrumented
//! requests (a root span and 10 nested spans with one event each) through
//! `Registry` + `TraceLayer` retains 0 bytes per request; spans and events
//! outside any root allocate nothing more than on a bare `Registry`.

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

use std::time::Duration;

use tracing::{Dispatch, info, info_span};
use tracing_subscriber::layer::SubscriberExt;

#[path = "heap_support/phase.rs"]
mod phase;

use phase::{Checks, measure};

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
        "  per request: {:.2} allocations ({:.1} bytes); retained after {REQUESTS}: {} bytes in {} blocks",
        requests.blocks, requests.bytes, requests.retained_bytes, requests.retained_blocks
    );
    println!(
        "  outside any root, per span + event: {:.3} allocations with the layer, {:.3} on a bare Registry; retained {} bytes",
        layer_outside.blocks, bare_outside.blocks, layer_outside.retained_bytes
    );
    println!(
        "  engine: {} events emitted, {} traces in use at the end",
        stats.events_emitted, stats.in_use
    );

    let mut checks = Checks::new(started);
    checks.check(
        "a steady stream of requests retains 0 bytes",
        requests.retains_nothing(),
    );
    checks.check(
        "spans outside roots allocate nothing in tracepool",
        layer_outside.blocks <= bare_outside.blocks && layer_outside.retained_bytes == 0,
    );
    checks.check("every request's trace was released", stats.in_use == 0);
    checks.finish("the tracing Layer");
}
