//! The cost of the ecosystem integrations (feature `tracing`): the same
//! instrumented request — 10 nested spans, one event in each, the outermost
//! span a trace root (`tracepool.trace = true`) — on a bare
//! `tracing_subscriber::Registry`, on `Registry` + tracepool's `TraceLayer`,
//! and written with tracepool's `Step` guards directly (same labels, inputs
//! and log data as the Layer records). Same run, same machine.
//!
//! The Layer's overhead per span is (`registry_layer` − `registry_bare`) / 10;
//! it includes checking a trace out of the pool and releasing it once per
//! request.
//!
//! ```text
//! cargo bench --features tracing --bench ecosystem
//! ```

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use tracing::{info, info_span};
use tracing_subscriber::layer::SubscriberExt;

/// Spans per request (the root included).
const SPANS: u64 = 10;

fn nested(depth: u64) {
    if depth == 0 {
        return;
    }
    let _span = info_span!("step", depth).entered();
    info!(depth, "working");
    nested(depth - 1);
}

/// The instrumented request: 10 nested spans with one event each.
fn request() {
    let _root = info_span!("request", tracepool.trace = true, depth = SPANS).entered();
    info!(depth = SPANS, "working");
    nested(SPANS - 1);
}

fn steps_nested(trace: &tracepool::Trace, depth: u64) {
    if depth == 0 {
        return;
    }
    let step = trace
        .step_with(
            json!({ "depth": depth }),
            tracepool::NodeOptions::new().label("step"),
        )
        .expect("step");
    step.log(tracepool::Level::Info, "working", json!({ "depth": depth }));
    steps_nested(trace, depth - 1);
}

/// The same request with `Step` guards: a trace, 10 nested steps with one
/// log line each, marked complete and released (as the Layer's root close does).
fn request_with_steps(engine: &tracepool::Engine) {
    let trace = engine
        .create(tracepool::TraceOptions::new())
        .expect("create");
    {
        let root = trace
            .step_with(
                json!({ "depth": SPANS }),
                tracepool::NodeOptions::new().label("request"),
            )
            .expect("root step");
        root.log(tracepool::Level::Info, "working", json!({ "depth": SPANS }));
        steps_nested(&trace, SPANS - 1);
    }
    trace.mark_complete().expect("mark complete");
    trace.release().expect("release");
}

fn engine() -> tracepool::Engine {
    tracepool::Engine::builder()
        .capacity(64)
        .workers(1)
        .memory()
        .build()
        .expect("engine")
}

fn bench_ecosystem(c: &mut Criterion) {
    let mut g = c.benchmark_group("ecosystem");
    g.bench_function("registry_bare", |b| {
        let _default = tracing::subscriber::set_default(tracing_subscriber::registry());
        b.iter(request)
    });
    let e = engine();
    g.bench_function("registry_layer", |b| {
        let layer = tracepool::layer::TraceLayer::new(e.clone());
        let _default = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));
        b.iter(request)
    });
    assert_eq!(e.stats().in_use, 0, "every request's trace was released");
    let e = engine();
    g.bench_function("step_guards", |b| {
        b.iter(|| request_with_steps(black_box(&e)))
    });
    g.finish();
}

criterion_group!(benches, bench_ecosystem);
criterion_main!(benches);
