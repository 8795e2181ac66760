//! Create/release contention (issue 9, point 2's measurement): the
//! throughput of `create` + `release` of an empty trace with 1 thread and with
//! 2 threads (both cores) on one engine with `workers(1)`, memory driver, 64
//! slots. Each iteration takes a slot from the free list, registers the id,
//! emits `init`, then unregisters and hands the slot to the worker to reset
//! and return — the registry and free-list paths a concurrent map or
//! per-worker free lists would change. Time = wall time / create+release
//! pairs of all threads.
//!
//! Compare the engine before and after a change with medians of 5 runs:
//!
//! ```text
//! profiling/contention.sh            # 5 runs, medians (run it on each state)
//! cargo bench --bench contention     # one run
//! ```

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

fn cycles(e: &tracepool::Engine, n: u64) {
    for _ in 0..n {
        let t = e.create(tracepool::TraceOptions::new()).expect("create");
        t.release().expect("release");
    }
}

fn spread(e: &tracepool::Engine, iters: u64, threads: u64) -> Duration {
    let start = Instant::now();
    if threads == 1 {
        cycles(e, iters);
    } else {
        std::thread::scope(|s| {
            for w in 0..threads {
                s.spawn(move || cycles(e, iters / threads + u64::from(w < iters % threads)));
            }
        });
    }
    start.elapsed()
}

fn bench_contention(c: &mut Criterion) {
    let mut g = c.benchmark_group("contention");
    for threads in [1u64, 2] {
        let e = tracepool::Engine::builder()
            .capacity(64)
            .workers(1)
            .memory()
            .build()
            .expect("engine");
        g.bench_with_input(
            BenchmarkId::new("create_release", threads),
            &threads,
            |b, &t| b.iter_custom(|n| spread(&e, n, t)),
        );
        e.flush_blocking().expect("flush");
        e.shutdown().expect("shutdown");
    }
    g.finish();
}

criterion_group!(benches, bench_contention);
criterion_main!(benches);
