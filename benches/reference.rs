//! The reference's benchmark set (spec §8.13), in the Go loops' shape (each
//! iteration: create, body, release, remove), with three rows per group, so
//! one run gives the ratios:
//!
//! - `tracepool`: the library, memory driver, 1,024 slots, default workers;
//!   driven from the bench thread (branches on 2 long-lived threads);
//! - `baseline_go`: the **Go-shaped** port of the reference design
//!   (`support/go_baseline.rs`): loop bodies and branches are tokio tasks on a
//!   2-thread runtime awaiting their round trips, the reference's store
//!   driver on an in-memory key-value map (the configuration of the Go
//!   figures). The ratios against "the reference" are taken from this row;
//! - `baseline_blocking`: the older port (`support/baseline.rs`), driven from
//!   OS threads blocking on every round trip (`blocking_send` /
//!   `blocking_recv`) with a driver that only serializes. Kept as a second,
//!   labelled row: its futex wake-ups overstate the reference's cost.
//!
//! ```text
//! cargo bench --bench reference
//! cargo bench --bench reference -- --warm-up-time 1 --measurement-time 3   # quick
//! ```

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};

#[path = "support/scenarios.rs"]
#[allow(unreachable_pub)]
mod scenarios;

#[path = "support/baseline.rs"]
mod baseline;

#[path = "support/go_baseline.rs"]
mod go_baseline;

#[path = "support/loops.rs"]
mod loops;

use baseline::Baseline;
use go_baseline::{GoBaseline, Loop};
use scenarios::ThreadPool;

fn tracepool_engine() -> tracepool::Engine {
    tracepool::Engine::builder()
        .capacity(1024)
        .memory()
        .build()
        .expect("engine")
}

/// One group: the three rows of `name` (a loop of `support/loops.rs`), the
/// Go-shaped row on `tasks` tasks, the others on `threads` threads.
fn group(c: &mut Criterion, name: &str, lp: Loop, threads: usize) {
    let runner = ThreadPool::new(2);
    let mut g = c.benchmark_group(name);
    {
        let tp = tracepool_engine();
        g.bench_function("tracepool", |b| {
            b.iter_custom(|n| loops::timed(&tp, name, n, threads, &runner))
        });
        // The workers' last writes, before another engine is timed.
        tp.flush_blocking().expect("flush");
        tp.shutdown().expect("shutdown");
    }
    {
        let go = GoBaseline::new(2);
        g.bench_function("baseline_go", |b| {
            b.iter_custom(|n| go.time(lp, n, threads))
        });
        black_box(go.core().loaded());
    }
    {
        let bl = Baseline::default();
        g.bench_function("baseline_blocking", |b| {
            b.iter_custom(|n| loops::timed(&bl, name, n, threads, &runner))
        });
    }
    g.finish();
}

/// `BenchmarkSimpleTrace*`: create, add, complete, release, remove.
fn bench_simple(c: &mut Criterion) {
    group(c, "simple", Loop::Simple, 1);
}

/// `BenchmarkComplexTrace*`: iteration `i` runs scenario `i mod 5`.
fn bench_complex(c: &mut Criterion) {
    group(c, "complex", Loop::Complex, 1);
}

/// `BenchmarkConcurrent*`: the same on 2 threads (Go: `RunParallel`,
/// GOMAXPROCS = 2); time per loop of the whole machine.
fn bench_concurrent(c: &mut Criterion) {
    group(c, "concurrent_simple", Loop::Simple, 2);
    group(c, "concurrent_complex", Loop::Complex, 2);
}

/// `BenchmarkSubscription`: create, subscribe, add, complete, mark complete,
/// drain (up to 10 ms), cancel, release, remove.
fn bench_subscription(c: &mut Criterion) {
    group(c, "subscription", Loop::Subscription, 1);
}

/// `BenchmarkSpaceOperations`: create, a space, 10 sets, 10 gets, release, remove.
fn bench_space(c: &mut Criterion) {
    group(c, "space_operations", Loop::SpaceOperations, 1);
}

criterion_group!(
    benches,
    bench_simple,
    bench_complex,
    bench_concurrent,
    bench_subscription,
    bench_space
);
criterion_main!(benches);
