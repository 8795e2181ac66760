//! The reference's benchmark set (spec §8.13), tracepool and the baseline port
//! of the reference design side by side in every group, so one run gives the
//! ratio. Both engines use their in-memory driver.
//!
//! ```text
//! cargo bench --bench reference
//! cargo bench --bench reference -- --warm-up-time 1 --measurement-time 3   # quick
//! ```

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};

#[path = "support/scenarios.rs"]
#[allow(unreachable_pub)]
mod scenarios;

#[path = "support/baseline.rs"]
mod baseline;

use baseline::Baseline;
use scenarios::{Scenario, ScenarioEngine, SubscribeEngine, ThreadPool};

fn engines() -> (tracepool::Engine, Baseline) {
    let tp = tracepool::Engine::builder()
        .capacity(1024)
        .memory()
        .build()
        .expect("engine");
    (tp, Baseline::default())
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// New → add → complete → release (`BenchmarkSimpleTrace*`).
fn simple_cycle<E: ScenarioEngine>(e: &E) {
    let t = e.create();
    scenarios::simple(e, &t);
    e.release(t);
}

/// Iteration `i` runs scenario `i mod 5` (`BenchmarkComplexTrace*`).
fn complex_cycle<E: ScenarioEngine>(e: &E, i: usize, runner: &ThreadPool) {
    let t = e.create();
    scenarios::run(e, &t, Scenario::ALL[i % 5], runner);
    e.release(t);
}

fn bench_simple(c: &mut Criterion) {
    let (tp, bl) = engines();
    let mut g = c.benchmark_group("simple");
    g.bench_function("tracepool", |b| b.iter(|| simple_cycle(&tp)));
    g.bench_function("baseline", |b| b.iter(|| simple_cycle(&bl)));
    g.finish();
}

fn bench_complex(c: &mut Criterion) {
    let (tp, bl) = engines();
    let runner = ThreadPool::new(2);
    let mut g = c.benchmark_group("complex");
    let mut i = 0usize;
    g.bench_function("tracepool", |b| {
        b.iter(|| {
            i += 1;
            complex_cycle(&tp, i, &runner)
        })
    });
    let mut i = 0usize;
    g.bench_function("baseline", |b| {
        b.iter(|| {
            i += 1;
            complex_cycle(&bl, i, &runner)
        })
    });
    g.finish();
}

/// `iters` cycles spread over one thread per core (`RunParallel`); returns
/// the wall time, so the reported time is per cycle of the whole machine.
fn parallel<E: ScenarioEngine>(
    e: &E,
    iters: u64,
    runner: &Arc<ThreadPool>,
    complex: bool,
) -> Duration {
    let n = cores();
    let start = Instant::now();
    std::thread::scope(|s| {
        for w in 0..n {
            let per = iters / n as u64 + u64::from((w as u64) < iters % n as u64);
            let runner = runner.clone();
            s.spawn(move || {
                for i in 0..per as usize {
                    if complex {
                        complex_cycle(e, i, &runner);
                    } else {
                        simple_cycle(e);
                    }
                }
            });
        }
    });
    start.elapsed()
}

fn bench_concurrent(c: &mut Criterion) {
    let (tp, bl) = engines();
    let runner = Arc::new(ThreadPool::new(2));
    for (name, complex) in [("concurrent_simple", false), ("concurrent_complex", true)] {
        let mut g = c.benchmark_group(name);
        g.bench_function("tracepool", |b| {
            b.iter_custom(|iters| parallel(&tp, iters, &runner, complex))
        });
        g.bench_function("baseline", |b| {
            b.iter_custom(|iters| parallel(&bl, iters, &runner, complex))
        });
        g.finish();
    }
}

/// New, subscribe, add, complete, mark complete, drain (up to 10 ms), release
/// (`BenchmarkSubscription`).
fn subscription_cycle<E: SubscribeEngine>(e: &E) -> usize {
    let t = e.create();
    let mut sub = e.subscribe(&t);
    scenarios::simple(e, &t);
    e.mark_complete(&t);
    let n = e.drain(&mut sub, Duration::from_millis(10));
    e.release(t);
    n
}

fn bench_subscription(c: &mut Criterion) {
    let (tp, bl) = engines();
    let mut g = c.benchmark_group("subscription");
    g.bench_function("tracepool", |b| {
        b.iter(|| black_box(subscription_cycle(&tp)))
    });
    g.bench_function("baseline", |b| {
        b.iter(|| black_box(subscription_cycle(&bl)))
    });
    g.finish();
}

/// New, a space, 10 sets, 10 gets, release (`BenchmarkSpaceOperations`).
fn space_cycle<E: ScenarioEngine>(e: &E) {
    let t = e.create();
    scenarios::space_ops(e, &t);
    e.release(t);
}

fn bench_space(c: &mut Criterion) {
    let (tp, bl) = engines();
    let mut g = c.benchmark_group("space_operations");
    g.bench_function("tracepool", |b| b.iter(|| space_cycle(&tp)));
    g.bench_function("baseline", |b| b.iter(|| space_cycle(&bl)));
    g.finish();
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
