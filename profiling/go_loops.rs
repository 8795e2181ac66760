//! The Go original's benchmark loops (`trace_bench_test.go`, spec §8.13), op
//! for op, on tracepool's memory driver — and on the two Rust ports of the
//! reference design — printing the time per loop. `profiling/go_loops.sh`
//! runs it in 5 fresh processes and prints medians and their ratios to the
//! Go package's own figures (listed in [docs/PERFORMANCE.md](docs/PERFORMANCE.md)).
//! The loops match the Go ones operation for operation; the values differ
//! where Go writes strings (`"test"`, `"result"`, `"value_j"`, the space
//! "Test Space") and the scenarios write numbers and "Bench".
//!
//! ```sh
//! cargo run --release --example go_loops -- [--engine tracepool|go_baseline|baseline_blocking|harness]
//!                                           [--secs 1] [--loop NAME] [--tsv]
//!                                           [--driver memory|local|store --dir D]
//! ```
//!
//! The loops (each iteration: create, body, release, remove):
//! - `simple`: add, complete;
//! - `complex`: scenario `i mod 5` (sequential, parallel, space, logging,
//!   complex flow);
//! - `concurrent_simple`, `concurrent_complex`: the same on 2 threads (Go:
//!   `RunParallel` on GOMAXPROCS = 2 goroutines sharing N; each thread keeps
//!   its own rotation counter); time per loop = wall time / loops;
//! - `subscription`: subscribe, add, complete, mark complete, drain until the
//!   stream ends (10 ms timeout), drop the subscription;
//! - `space_operations`: a space, 10 sets, 10 gets.
//!
//! Timing is Go's: run N loops, grow N until one run takes at least `--secs`,
//! report that run's time / N. The tracepool engine: memory driver, 1,024
//! slots, default workers; one engine per process, as in Go. With
//! `--driver local|store --dir D` it persists to the local (reference
//! layout) or store driver under `D`, and every trace is flushed to storage
//! before it is removed (`engine.flush_blocking()` before each `remove`):
//! the Go package's local driver writes each change before it returns.
//!
//! Parallel branches are completed from 2 long-lived threads (`ThreadPool`,
//! Go starts a goroutine per branch); like Go's scheduler, which keeps idle
//! threads spinning for work before it parks them, the threads (and the
//! caller waiting for its branches) look for work for 50 µs before they
//! sleep. `--engine harness` runs the same loops
//! on an engine that does nothing, which measures the harness itself: for
//! `complex` and `concurrent_complex` that is the cross-thread hand-off of the
//! branches (2 of the 5 scenarios hand branches to the threads and wait).
//! The Go-shaped baseline (`benches/support/go_baseline.rs`) runs its loops
//! as tokio tasks and its branches as spawned tasks.

use std::hint::black_box;
use std::time::Duration;

use serde_json::Value;

#[path = "../benches/support/scenarios.rs"]
#[allow(unreachable_pub)]
mod scenarios;

#[path = "../benches/support/baseline.rs"]
mod baseline;

#[path = "../benches/support/go_baseline.rs"]
mod go_baseline;

#[path = "../benches/support/loops.rs"]
mod loops;

use loops::{IdBuf, Loops, timed};
use scenarios::{Lvl, ScenarioEngine, SubscribeEngine, ThreadPool};

/// The loops, in the order of the Go package's benchmark file.
const LOOPS: [&str; 6] = [
    "simple",
    "complex",
    "concurrent_simple",
    "concurrent_complex",
    "subscription",
    "space_operations",
];

// ---- an engine that does nothing (the harness's own cost) ---------------------

#[derive(Clone, Copy, Debug, Default)]
struct Nothing;

impl ScenarioEngine for Nothing {
    type Trace = ();
    type Node = ();
    fn create(&self) {}
    fn add(&self, _: &(), input: Value, _: &'static str) {
        black_box(input);
    }
    fn complete(&self, _: &(), output: Value) {
        black_box(output);
    }
    fn parallel(&self, _: &(), labels: &[&'static str]) -> Vec<()> {
        vec![(); labels.len()]
    }
    fn log(&self, _: &(), _: Lvl, _: &'static str) {}
    fn node_complete(&self, _: &(), output: Value) {
        black_box(output);
    }
    fn node_info(&self, _: &(), _: &'static str) {}
    fn create_space(&self, _: &(), _: &'static str) -> String {
        String::new()
    }
    fn set_space_value(&self, _: &(), _: &str, _: &'static str, v: Value) {
        black_box(v);
    }
    fn get_space_value(&self, _: &(), _: &str, _: &'static str) -> Option<Value> {
        None
    }
    fn mark_complete(&self, _: &()) {}
    fn release(&self, _: ()) {}
}

impl SubscribeEngine for Nothing {
    type Sub = ();
    fn subscribe(&self, _: &()) {}
    fn drain(&self, _: &mut (), _: Duration) -> usize {
        0
    }
}

impl Loops for Nothing {
    fn id_of(_: &()) -> IdBuf {
        IdBuf::new("")
    }
    fn remove(&self, _: &str) {}
}

/// Go's `testing.B` sizing: grow N until one run takes at least `target`,
/// report that run's time per loop (ns).
fn measure(target: Duration, mut run: impl FnMut(u64) -> Duration) -> (f64, u64) {
    run(16); // warm-up
    let mut n = 1u64;
    loop {
        let d = run(n);
        if d >= target || n >= 1_000_000_000 {
            return (d.as_nanos() as f64 / n as f64, n);
        }
        let per = (d.as_nanos() as f64 / n as f64).max(1.0);
        let want = (target.as_nanos() as f64 * 1.2 / per) as u64;
        n = want.clamp(n + 1, n * 100);
    }
}

fn main() {
    let mut engine = "tracepool".to_owned();
    let mut secs = 1.0f64;
    let mut only: Option<String> = None;
    let mut tsv = false;
    let mut driver = "memory".to_owned();
    let mut dir: Option<std::path::PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--engine" => engine = args.next().expect("--engine NAME"),
            "--secs" => secs = args.next().and_then(|s| s.parse().ok()).expect("--secs S"),
            "--loop" => only = args.next(),
            "--tsv" => tsv = true,
            "--driver" => driver = args.next().expect("--driver memory|local|store"),
            "--dir" => dir = args.next().map(Into::into),
            "-h" | "--help" => {
                println!(
                    "go_loops [--engine tracepool|go_baseline|baseline_blocking|harness] [--secs S] [--loop NAME] [--tsv] [--driver memory|local|store --dir D]\nloops: {}",
                    LOOPS.join(", ")
                );
                return;
            }
            other => panic!("unknown argument {other}"),
        }
    }
    let target = Duration::from_secs_f64(secs);
    let runner = ThreadPool::new(2);
    let builder = tracepool::Engine::builder().capacity(1024);
    let dir = || {
        dir.clone()
            .expect("--dir D (where the driver keeps traces)")
    };
    let tp = match driver.as_str() {
        "memory" => builder.memory(),
        "local" => builder.local(dir()),
        "store" => builder.store(dir()),
        other => panic!("unknown driver {other}"),
    }
    .build()
    .expect("engine");
    loops::FLUSH_BEFORE_REMOVE.store(driver != "memory", std::sync::atomic::Ordering::Relaxed);
    let blocking = (engine == "baseline_blocking").then(baseline::Baseline::default);
    let go = (engine == "go_baseline").then(go_baseline::GoBaseline::default);
    for name in LOOPS {
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        let threads = if name.starts_with("concurrent_") {
            2
        } else {
            1
        };
        let (ns, n) = match engine.as_str() {
            "tracepool" => measure(target, |n| timed(&tp, name, n, threads, &runner)),
            "harness" => measure(target, |n| timed(&Nothing, name, n, threads, &runner)),
            "baseline_blocking" => {
                let b = blocking.as_ref().expect("baseline");
                measure(target, |n| timed(b, name, n, threads, &runner))
            }
            "go_baseline" => {
                use go_baseline::Loop;
                let g = go.as_ref().expect("go baseline");
                let (lp, tasks) = match name {
                    "simple" => (Loop::Simple, 1),
                    "complex" => (Loop::Complex, 1),
                    "concurrent_simple" => (Loop::Simple, 2),
                    "concurrent_complex" => (Loop::Complex, 2),
                    "subscription" => (Loop::Subscription, 1),
                    _ => (Loop::SpaceOperations, 1),
                };
                measure(target, |n| g.time(lp, n, tasks))
            }
            other => panic!("unknown engine {other}"),
        };
        if tsv {
            println!("{engine}\t{name}\t{ns:.1}\t{n}");
        } else {
            println!(
                "{engine:>17} {name:<20} {:>10.3} µs/loop  (N = {n})",
                ns / 1e3
            );
        }
    }
    if let Some(g) = &go {
        // Everything removed: the store is empty again.
        assert_eq!(g.core().store().len(), 0, "go baseline left keys behind");
    }
    tp.flush_blocking().expect("flush");
}
