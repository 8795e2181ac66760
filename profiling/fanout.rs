//! Fan-out under a profiler: the loop of `scaling/event_vs_subscribers`
//! (one log event emitted, then each of S subscribers `try_recv`s it, all
//! on this thread), repeated `--events` times, with the time per event and
//! per subscriber printed. A fixed amount of work, so two builds can be
//! compared by cycles or instructions on a busy machine:
//!
//! ```sh
//! cargo build --release --example fanout
//! target/release/examples/fanout --subs 100 --events 200000
//! perf stat -e cycles:u,instructions:u target/release/examples/fanout --subs 100
//! perf record -g target/release/examples/fanout --subs 100 --events 2000000
//! ```

#[path = "support/args.rs"]
mod args;

use args::arg;

use std::hint::black_box;
use std::time::Instant;

use tracepool::{Engine, NodeOptions, TraceOptions};

fn main() {
    let subs: usize = arg("--subs").and_then(|s| s.parse().ok()).unwrap_or(100);
    let events: u64 = arg("--events")
        .and_then(|s| s.parse().ok())
        .unwrap_or(200_000);
    let e = Engine::builder()
        .capacity(4)
        .max_subscribers(subs.max(1))
        .memory()
        .build()
        .expect("engine");
    let t = e.create(TraceOptions::new()).expect("create");
    black_box(t.add("in", NodeOptions::new().label("node")).expect("add"));
    let mut ss: Vec<_> = (0..subs)
        .map(|_| t.subscribe().expect("subscribe"))
        .collect();
    for s in &mut ss {
        while let Ok(Some(_)) = s.try_recv() {}
    }
    let start = Instant::now();
    for _ in 0..events {
        t.info("fan out");
        for s in &mut ss {
            black_box(s.try_recv().expect("event ready"));
        }
    }
    let ns = start.elapsed().as_nanos() as f64 / events as f64;
    println!(
        "fanout: {subs} subscribers, {events} events: {:.3} µs per event, {:.2} ns per subscriber",
        ns / 1e3,
        ns / subs.max(1) as f64
    );
    drop(ss);
    t.release().expect("release");
    e.shutdown().expect("shutdown");
}
