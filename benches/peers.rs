//! tracepool next to the two Rust tracing stacks users compare it with, on
//! the same shapes, in one process:
//!
//! - `peers_10_nodes_10_logs`: one trace of 10 nodes with one log line each;
//! - `peers_request`: a request of 16 steps × 3 log lines, where the first
//!   line of each step carries a one-field `json!` value (built at the call
//!   site on every side).
//!
//! What each side records (the peers record less; the comparison is the cost
//! a caller pays to record the same shape):
//!
//! - **tracepool** (memory driver, default workers): a trace; per step a node
//!   (id, parents, label, input, status, timestamps; the previous step
//!   completed); per line a log entry (level, message, data) on the node; and
//!   per operation a seq-numbered event (`node_start`, `node_complete`,
//!   `log_added`, …) kept in the trace's history for replay and encoded as
//!   wire JSON for subscribers and the driver. Release hands the last writes
//!   to the driver (the memory driver keeps nothing) on a worker thread.
//! - **tokio-tracing on a bare `tracing_subscriber::Registry`**: per span a
//!   slot in the Registry's sharded slab (metadata, parent, ref count; the
//!   span's *field values are not stored* — no layer records them); events
//!   are dispatched to the Registry, which keeps nothing of them (with no
//!   layer, an event is not recorded at all). This is the configuration the
//!   issue names; any real use adds layers (fmt, OpenTelemetry), which cost more.
//! - **fastrace**, with its global collector and a reporter that discards the
//!   finished trace (`Config::default()`): per span a record in the thread's
//!   local span queue (name, ids, start/end instants, properties as string
//!   pairs), per event a record with its properties (the `json!` value is
//!   turned into its JSON string, since fastrace properties are strings); at
//!   the root's drop the spans go to the collector thread, which assembles
//!   `SpanRecord`s and hands them to the reporter.
//!
//! Background work of one engine does not run while another is timed: each
//! tracepool row builds its engine, then flushes and shuts it down before the
//! next row; each fastrace row ends with `fastrace::flush()` (the collector
//! drains everything). Work an engine moves to its own background threads
//! *while it is timed* (tracepool's workers, fastrace's collector) is its
//! design and is not counted on the caller's thread, on either side.
//!
//! Throughput is set to the recorded items (root + nodes/spans + log
//! lines/events): criterion's `elem/s` gives the cost per item on each side.
//!
//! ```text
//! cargo bench --bench peers
//! ```

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::{Value, json};
use tracepool::{Level, NodeOptions, TraceOptions};

const LABELS: [&str; 10] = [
    "node_0", "node_1", "node_2", "node_3", "node_4", "node_5", "node_6", "node_7", "node_8",
    "node_9",
];

const STEPS: [&str; 16] = [
    "step_00", "step_01", "step_02", "step_03", "step_04", "step_05", "step_06", "step_07",
    "step_08", "step_09", "step_10", "step_11", "step_12", "step_13", "step_14", "step_15",
];

struct Discard;

impl fastrace::collector::Reporter for Discard {
    fn report(&mut self, spans: Vec<fastrace::collector::SpanRecord>) {
        black_box(spans);
    }
}

fn tracepool_engine() -> tracepool::Engine {
    tracepool::Engine::builder()
        .capacity(64)
        .memory()
        .build()
        .expect("engine")
}

/// Times `f` on a fresh tracepool engine, then drains and stops it.
fn tracepool_row(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    f: impl Fn(&tracepool::Engine),
) {
    let engine = tracepool_engine();
    g.bench_function("tracepool", |b| b.iter(|| f(&engine)));
    engine.flush_blocking().expect("flush");
    engine.shutdown().expect("shutdown");
}

// ---- 10 nodes + 10 logs ---------------------------------------------------------

fn ten_tracepool(engine: &tracepool::Engine) {
    let t = engine.create(TraceOptions::new()).expect("create");
    for (i, l) in LABELS.iter().enumerate() {
        black_box(
            t.add(Value::from(i as u64), NodeOptions::new().label(*l))
                .expect("add"),
        );
        t.info("log line");
    }
    t.complete(None).expect("complete");
    t.release().expect("release");
}

fn ten_tracing() {
    let root = tracing::info_span!("trace");
    let _r = root.enter();
    for (i, l) in LABELS.iter().enumerate() {
        let span = tracing::info_span!("node", label = *l, input = i as u64);
        let _e = span.enter();
        tracing::info!("log line");
    }
}

fn ten_fastrace() {
    let root = fastrace::Span::root("trace", fastrace::prelude::SpanContext::random());
    let _g = root.set_local_parent();
    for l in LABELS.iter() {
        let _s =
            fastrace::local::LocalSpan::enter_with_local_parent(*l).with_property(|| ("label", *l));
        fastrace::local::LocalSpan::add_event(fastrace::Event::new("log line"));
    }
}

fn bench_ten(c: &mut Criterion) {
    let mut g = c.benchmark_group("peers_10_nodes_10_logs");
    g.throughput(Throughput::Elements(21));
    tracepool_row(&mut g, ten_tracepool);
    g.bench_function("tracing_registry", |b| {
        let _guard = tracing::subscriber::set_default(tracing_subscriber::Registry::default());
        b.iter(ten_tracing)
    });
    g.bench_function("fastrace_discard", |b| b.iter(ten_fastrace));
    fastrace::flush();
    g.finish();
}

// ---- a request: 16 steps × 3 log lines ------------------------------------------

/// tracepool: a trace, a node per step (the next `add` completes it), three
/// log lines on it, the first with a one-field `json!` value; complete, release.
fn request_tracepool(engine: &tracepool::Engine) {
    let t = engine.create(TraceOptions::new()).expect("create");
    for (i, l) in STEPS.iter().enumerate() {
        black_box(
            t.add(Value::from(i as u64), NodeOptions::new().label(*l))
                .expect("add"),
        );
        t.log(Level::Info, "step started", json!({ "user": i }));
        t.info("step working");
        t.info("step done");
    }
    t.complete(None).expect("complete");
    t.release().expect("release");
}

/// tracing: a root span, a child span per step (label and input as fields),
/// three events in it, the first with the `json!` value as a field.
fn request_tracing() {
    let root = tracing::info_span!("request");
    let _r = root.enter();
    for (i, l) in STEPS.iter().enumerate() {
        let span = tracing::info_span!("step", label = *l, input = i as u64);
        let _e = span.enter();
        let v = json!({ "user": i });
        tracing::info!(data = %v, "step started");
        tracing::info!("step working");
        tracing::info!("step done");
    }
}

/// fastrace: a root span, a local span per step (input as a property), three
/// events on it, the first with the `json!` value as a (string) property.
fn request_fastrace() {
    let root = fastrace::Span::root("request", fastrace::prelude::SpanContext::random());
    let _g = root.set_local_parent();
    for (i, l) in STEPS.iter().enumerate() {
        let _s = fastrace::local::LocalSpan::enter_with_local_parent(*l)
            .with_property(|| ("input", i.to_string()));
        let v = json!({ "user": i });
        fastrace::local::LocalSpan::add_event(
            fastrace::Event::new("step started").with_property(|| ("data", v.to_string())),
        );
        fastrace::local::LocalSpan::add_event(fastrace::Event::new("step working"));
        fastrace::local::LocalSpan::add_event(fastrace::Event::new("step done"));
    }
}

fn bench_request(c: &mut Criterion) {
    let mut g = c.benchmark_group("peers_request");
    // root + 16 steps + 48 lines
    g.throughput(Throughput::Elements(65));
    tracepool_row(&mut g, request_tracepool);
    g.bench_function("tracing_registry", |b| {
        let _guard = tracing::subscriber::set_default(tracing_subscriber::Registry::default());
        b.iter(request_tracing)
    });
    g.bench_function("fastrace_discard", |b| b.iter(request_fastrace));
    fastrace::flush();
    g.finish();
}

fn setup(c: &mut Criterion) {
    fastrace::set_reporter(Discard, fastrace::collector::Config::default());
    bench_ten(c);
    bench_request(c);
}

criterion_group!(benches, setup);
criterion_main!(benches);
