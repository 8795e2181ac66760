//! Micro-benchmarks of tracepool's hot path, each next to the blocking port
//! of the reference design (`support/baseline.rs`, rows `baseline_blocking`:
//! its round trips are futex wake-ups, so read these ratios as an upper
//! bound; the Go-shaped port is compared on whole loops in `reference.rs`).
//!
//! ```text
//! cargo bench --bench micro
//! ```

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use serde_json::Value;

#[path = "support/scenarios.rs"]
#[allow(unreachable_pub)]
mod scenarios;

#[path = "support/baseline.rs"]
mod baseline;

use baseline::{BSub, Baseline};
use scenarios::{Lvl, ScenarioEngine, SubscribeEngine};

/// Operations timed per trace: the trace is replaced every `BLOCK` operations,
/// outside the timed region, so its history and node arena stay small.
const BLOCK: u64 = 256;

fn engine() -> tracepool::Engine {
    tracepool::Engine::builder()
        .capacity(64)
        .memory()
        .build()
        .expect("engine")
}

/// Times `op` on a trace that already has a root node, in blocks of `BLOCK`.
fn blocks<E: ScenarioEngine>(e: &E, iters: u64, mut op: impl FnMut(&E, &E::Trace)) -> Duration {
    let mut total = Duration::ZERO;
    let mut done = 0;
    while done < iters {
        let t = e.create();
        e.add(&t, Value::Null, "root");
        let n = BLOCK.min(iters - done);
        let start = Instant::now();
        for _ in 0..n {
            op(e, &t);
        }
        total += start.elapsed();
        e.release(t);
        done += n;
    }
    total
}

fn add_complete<E: ScenarioEngine>(e: &E, t: &E::Trace) {
    black_box(e.add(t, Value::from(1u64), "step"));
    e.complete(t, Value::Bool(true));
}

fn log_line<E: ScenarioEngine>(e: &E, t: &E::Trace) {
    e.log(t, Lvl::Info, "one log line");
}

fn bench_add_complete(c: &mut Criterion) {
    let (tp, bl) = (engine(), Baseline::default());
    let mut g = c.benchmark_group("add_complete");
    g.bench_function("tracepool", |b| {
        b.iter_custom(|n| blocks(&tp, n, add_complete))
    });
    g.bench_function("baseline_blocking", |b| {
        b.iter_custom(|n| blocks(&bl, n, add_complete))
    });
    g.finish();
}

fn bench_log(c: &mut Criterion) {
    let (tp, bl) = (engine(), Baseline::default());
    let mut g = c.benchmark_group("log_line");
    g.bench_function("tracepool", |b| b.iter_custom(|n| blocks(&tp, n, log_line)));
    g.bench_function("baseline_blocking", |b| {
        b.iter_custom(|n| blocks(&bl, n, log_line))
    });
    g.finish();
}

/// One log event emitted and received by each of `subs` subscribers.
fn fanout_tracepool(e: &tracepool::Engine, subs: usize, iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    let mut done = 0;
    while done < iters {
        let t = ScenarioEngine::create(e);
        e.add(&t, Value::Null, "root");
        let mut ss: Vec<_> = (0..subs).map(|_| e.subscribe(&t)).collect();
        for s in &mut ss {
            while let Ok(Some(_)) = s.try_recv() {}
        }
        let n = BLOCK.min(iters - done);
        let start = Instant::now();
        for _ in 0..n {
            t.info("fan out");
            for s in &mut ss {
                black_box(s.try_recv().expect("event ready"));
            }
        }
        total += start.elapsed();
        ScenarioEngine::release(e, t);
        done += n;
    }
    total
}

fn fanout_baseline(e: &Baseline, subs: usize, iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    let mut done = 0;
    while done < iters {
        let t = e.create();
        e.add(&t, Value::Null, "root");
        let mut ss: Vec<BSub> = (0..subs).map(|_| e.subscribe(&t)).collect();
        // Let the replay tasks and the forwarder settle, then empty the channels.
        std::thread::sleep(Duration::from_millis(5));
        for s in &mut ss {
            s.try_drain();
        }
        let n = BLOCK.min(iters - done);
        let start = Instant::now();
        for _ in 0..n {
            e.log(&t, Lvl::Info, "fan out");
            black_box(BSub::recv_each(&mut ss));
        }
        total += start.elapsed();
        e.release(t);
        done += n;
    }
    total
}

fn bench_fanout(c: &mut Criterion) {
    let (tp, bl) = (engine(), Baseline::default());
    let mut g = c.benchmark_group("fanout");
    for subs in [1usize, 10, 100] {
        g.bench_with_input(BenchmarkId::new("tracepool", subs), &subs, |b, &s| {
            b.iter_custom(|n| fanout_tracepool(&tp, s, n))
        });
        g.bench_with_input(
            BenchmarkId::new("baseline_blocking", subs),
            &subs,
            |b, &s| b.iter_custom(|n| fanout_baseline(&bl, s, n)),
        );
    }
    g.finish();
}

// ---- slot checkout + release --------------------------------------------------

/// The real slot pool: `create` + `release` of an empty trace (id generation,
/// registry, `init` event, hand-off to a worker that resets the slot in place
/// and returns it). The pool-versus-allocation comparison of a stand-in state
/// is `benches/pool.rs`; the same cycle on 1 and 2 threads is
/// `benches/contention.rs`.
fn bench_slot(c: &mut Criterion) {
    let tp = engine();
    let mut g = c.benchmark_group("slot");
    g.bench_function("tracepool_create_release", |b| {
        b.iter(|| {
            let t = tp.create(tracepool::TraceOptions::new()).expect("create");
            t.release().expect("release");
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_add_complete,
    bench_log,
    bench_fanout,
    bench_slot
);
criterion_main!(benches);
