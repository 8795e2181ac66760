//! One trace of 10 nodes with one log line each, in tracepool, in
//! tokio-tracing (spans + events on a bare `tracing_subscriber::Registry`)
//! and in fastrace (spans + events, reporter that discards) — same run.
//!
//! The peers record less than tracepool: they keep no per-trace history,
//! serialize nothing and have no subscribers; tracepool also produces the
//! wire JSON of every event. The comparison is the cost a caller pays to
//! record the same shape.
//!
//! ```text
//! cargo bench --bench peers
//! ```

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::Value;

const LABELS: [&str; 10] = [
    "node_0", "node_1", "node_2", "node_3", "node_4", "node_5", "node_6", "node_7", "node_8",
    "node_9",
];

struct Discard;

impl fastrace::collector::Reporter for Discard {
    fn report(&mut self, spans: Vec<fastrace::collector::SpanRecord>) {
        black_box(spans);
    }
}

fn bench_peers(c: &mut Criterion) {
    let engine = tracepool::Engine::builder()
        .capacity(64)
        .memory()
        .build()
        .expect("engine");
    fastrace::set_reporter(Discard, fastrace::collector::Config::default());

    let mut g = c.benchmark_group("peers_10_nodes_10_logs");
    g.bench_function("tracepool", |b| {
        b.iter(|| {
            let t = engine
                .create(tracepool::TraceOptions::new())
                .expect("create");
            for (i, l) in LABELS.iter().enumerate() {
                black_box(
                    t.add(
                        Value::from(i as u64),
                        tracepool::NodeOptions::new().label(*l),
                    )
                    .expect("add"),
                );
                t.info("log line");
            }
            t.complete(None).expect("complete");
            t.release().expect("release");
        })
    });

    g.bench_function("tracing_registry", |b| {
        let _guard = tracing::subscriber::set_default(tracing_subscriber::Registry::default());
        b.iter(|| {
            let root = tracing::info_span!("trace");
            let _r = root.enter();
            for (i, l) in LABELS.iter().enumerate() {
                let span = tracing::info_span!("node", label = *l, input = i as u64);
                let _e = span.enter();
                tracing::info!("log line");
            }
        })
    });

    g.bench_function("fastrace_discard", |b| {
        b.iter(|| {
            let root = fastrace::Span::root("trace", fastrace::prelude::SpanContext::random());
            let _g = root.set_local_parent();
            for l in LABELS.iter() {
                let _s = fastrace::local::LocalSpan::enter_with_local_parent(*l)
                    .with_property(|| ("label", *l));
                fastrace::local::LocalSpan::add_event(fastrace::Event::new("log line"));
            }
        })
    });
    g.finish();
    fastrace::flush();
}

criterion_group!(benches, bench_peers);
criterion_main!(benches);
