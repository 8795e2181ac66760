//! The hot path under a profiler: repeats one workload `--iters` times so
//! that an instruction counter (callgrind) or a sampling profiler (perf) sees
//! the steady state. Instruction counts do not depend on what else the
//! machine runs, so two builds can be compared on a busy machine:
//!
//! ```sh
//! cargo build --release --example hot_path
//! for n in 2000 4000; do
//!   valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.$n \
//!     target/release/examples/hot_path --which tracepool --iters $n
//! done
//! # instructions per iteration = (total(4000) - total(2000)) / 2000
//! ```
//!
//! Workloads (`--workload`):
//! - `peers` (default): one trace of 10 nodes with one log line each
//!   (tracepool: create, 10 × add + info, complete, release; tracing: a root
//!   span with 10 child spans and one event each on a bare `Registry`;
//!   fastrace: a root span with 10 local spans and one event each);
//! - `request`: 16 steps × 3 log lines, the first line of each step with a
//!   one-field value.
//!
//! `--subscribers N` attaches N subscriptions to each tracepool trace (read
//! to the end after the trace is released).

#[path = "support/args.rs"]
mod args;

use args::arg;

use std::hint::black_box;

use serde_json::json;
use tracepool::{Engine, Level, NodeOptions, TraceOptions};

const LABELS: [&str; 16] = [
    "node_0", "node_1", "node_2", "node_3", "node_4", "node_5", "node_6", "node_7", "node_8",
    "node_9", "node_10", "node_11", "node_12", "node_13", "node_14", "node_15",
];

struct Discard;

impl fastrace::collector::Reporter for Discard {
    fn report(&mut self, spans: Vec<fastrace::collector::SpanRecord>) {
        black_box(spans);
    }
}

fn tracepool_once(engine: &Engine, workload: &str, subscribers: usize) {
    let t = engine.create(TraceOptions::new()).expect("create");
    let subs: Vec<_> = (0..subscribers)
        .map(|_| t.subscribe().expect("subscribe"))
        .collect();
    match workload {
        "empty" => {}
        "request" => {
            for (i, l) in LABELS.iter().enumerate() {
                black_box(t.add(i as u64, NodeOptions::new().label(*l)).expect("add"));
                t.log(Level::Info, "step started", json!({ "step": i }));
                t.info("working");
                t.info("done");
            }
        }
        _ => {
            for (i, l) in LABELS[..10].iter().enumerate() {
                black_box(t.add(i as u64, NodeOptions::new().label(*l)).expect("add"));
                t.info("log line");
            }
        }
    }
    if workload != "empty" {
        t.complete(None).expect("complete");
    }
    t.release().expect("release");
    for mut s in subs {
        while let Some(d) = s.blocking_recv() {
            black_box(d);
        }
    }
}

fn tracing_once(workload: &str) {
    let root = tracing::info_span!("trace");
    let _r = root.enter();
    match workload {
        "request" => {
            for (i, l) in LABELS.iter().enumerate() {
                let span = tracing::info_span!("node", label = *l, input = i as u64);
                let _e = span.enter();
                tracing::info!(step = i, "step started");
                tracing::info!("working");
                tracing::info!("done");
            }
        }
        _ => {
            for (i, l) in LABELS[..10].iter().enumerate() {
                let span = tracing::info_span!("node", label = *l, input = i as u64);
                let _e = span.enter();
                tracing::info!("log line");
            }
        }
    }
}

fn fastrace_once(workload: &str) {
    let root = fastrace::Span::root("trace", fastrace::prelude::SpanContext::random());
    let _g = root.set_local_parent();
    match workload {
        "request" => {
            for (i, l) in LABELS.iter().enumerate() {
                let _s = fastrace::local::LocalSpan::enter_with_local_parent(*l)
                    .with_property(|| ("label", *l));
                fastrace::local::LocalSpan::add_event(
                    fastrace::Event::new("step started").with_property(|| ("step", i.to_string())),
                );
                fastrace::local::LocalSpan::add_event(fastrace::Event::new("working"));
                fastrace::local::LocalSpan::add_event(fastrace::Event::new("done"));
            }
        }
        _ => {
            for l in LABELS[..10].iter() {
                let _s = fastrace::local::LocalSpan::enter_with_local_parent(*l)
                    .with_property(|| ("label", *l));
                fastrace::local::LocalSpan::add_event(fastrace::Event::new("log line"));
            }
        }
    }
}

fn main() {
    let which = arg("--which").unwrap_or_else(|| "tracepool".into());
    let workload = arg("--workload").unwrap_or_else(|| "peers".into());
    let iters: usize = arg("--iters")
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let subscribers: usize = arg("--subscribers")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    match which.as_str() {
        "tracing" => {
            let _guard = tracing::subscriber::set_default(tracing_subscriber::Registry::default());
            for _ in 0..100 {
                tracing_once(&workload);
            }
            for _ in 0..iters {
                tracing_once(&workload);
            }
        }
        "fastrace" => {
            fastrace::set_reporter(Discard, fastrace::collector::Config::default());
            for _ in 0..100 {
                fastrace_once(&workload);
            }
            for _ in 0..iters {
                fastrace_once(&workload);
            }
            fastrace::flush();
        }
        _ => {
            let engine = Engine::builder()
                .capacity(64)
                .workers(1)
                .memory()
                .build()
                .expect("engine");
            for _ in 0..100 {
                tracepool_once(&engine, &workload, subscribers);
            }
            for _ in 0..iters {
                tracepool_once(&engine, &workload, subscribers);
            }
        }
    }
}
