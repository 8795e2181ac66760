//! How tracepool's costs grow (issue 9, point 5): one bench group,
//! `scaling`, with four curves. `profiling/plot_scaling.py` draws them from
//! criterion's saved estimates into `docs/scaling-*.svg`.
//!
//! - `scaling/event_vs_nodes/{log,add}/N`: one event on a trace that already
//!   holds N nodes (10, 1,000, 100,000; a chain built with `add`).
//!   `log` = one `info` line on the current node (1 event); `add` = one more
//!   node, which completes the previous one (2 events: `node_complete`,
//!   `node_start`). The trace is rebuilt when it has grown by
//!   `max(N / 10, 64)` nodes, outside the timed region, so "N" means N to
//!   N + max(N/10, 64). Throughput = events.
//! - `scaling/event_vs_subscribers/S`: one log event emitted and received by
//!   each of S subscribers (1, 10, 100, 1,000; `max_subscribers(1024)`), all
//!   on the bench thread (`try_recv` per subscriber). Time per emitted event;
//!   the slope between points is the cost per extra subscriber (target:
//!   <= 2 µs at 100, <= 20 ns per extra subscriber).
//! - `scaling/event_vs_traces/TxK`: T threads (1 or 2: both cores) each
//!   emitting log lines round-robin over its K own traces (K = 1, 8, 64,
//!   512), all started together; time = wall time / events of all threads,
//!   i.e. the machine's cost per event with T×K traces live at once.
//! - `scaling/release_vs_nodes/{call,drained}/N`: `release()` of a trace of
//!   N nodes (10, 1,000, 100,000) whose writes were already flushed:
//!   `call` = the caller's cost (the call returns at once), `drained` =
//!   `release()` + `flush_blocking()` (until a worker has handed the last
//!   writes over and reset the slot; the reset keeps at most a capped
//!   capacity). Building a 100,000-node trace takes far longer than releasing
//!   it, so each criterion sample times at most `RELEASE_CAP[N]` releases and
//!   scales their total to the iterations asked for: the figure is the mean of
//!   the releases actually timed (read the mean; criterion's slope statistics
//!   are not independent here).
//!
//! ```text
//! cargo bench --bench scaling
//! cargo bench --bench scaling -- --warm-up-time 0.5 --measurement-time 1   # quick
//! python3 profiling/plot_scaling.py        # SVG plots into docs/
//! ```

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use serde_json::Value;
use tracepool::{Engine, NodeOptions, Trace, TraceOptions};

const SIZES: [usize; 3] = [10, 1_000, 100_000];
const SUBSCRIBERS: [usize; 4] = [1, 10, 100, 1_000];
const TRACES: [(usize, usize); 5] = [(1, 1), (2, 1), (2, 8), (2, 64), (2, 512)];

fn engine(capacity: usize) -> Engine {
    Engine::builder()
        .capacity(capacity)
        .max_nodes(110_000)
        .max_subscribers(1024)
        .memory()
        .build()
        .expect("engine")
}

/// A trace holding `n` nodes (a chain: each `add` completes the previous).
fn build(e: &Engine, n: usize) -> Trace {
    let t = e.create(TraceOptions::new()).expect("create");
    for i in 0..n {
        black_box(
            t.add(Value::from(i as u64), NodeOptions::new().label("node"))
                .expect("add"),
        );
    }
    t
}

fn event_vs_nodes(c: &mut Criterion) {
    let mut g = c.benchmark_group("scaling");
    for n in SIZES {
        for op in ["log", "add"] {
            let e = engine(4);
            let headroom = (n / 10).max(64);
            let mut cur: Option<(Trace, usize)> = None;
            g.throughput(Throughput::Elements(if op == "add" { 2 } else { 1 }));
            g.bench_with_input(
                BenchmarkId::new(format!("event_vs_nodes/{op}"), n),
                &n,
                |b, &n| {
                    b.iter_custom(|iters| {
                        let mut total = Duration::ZERO;
                        let mut left = iters;
                        while left > 0 {
                            if cur.as_ref().is_none_or(|(_, grown)| *grown >= headroom) {
                                if let Some((t, _)) = cur.take() {
                                    t.release().expect("release");
                                }
                                cur = Some((build(&e, n), 0));
                            }
                            let (t, grown) = cur.as_mut().expect("trace");
                            let k = if op == "add" {
                                left.min((headroom - *grown) as u64)
                            } else {
                                left
                            };
                            let start = Instant::now();
                            for _ in 0..k {
                                if op == "add" {
                                    black_box(
                                        t.add(Value::Null, NodeOptions::new().label("more"))
                                            .expect("add"),
                                    );
                                } else {
                                    t.info("one log line");
                                }
                            }
                            total += start.elapsed();
                            if op == "add" {
                                *grown += k as usize;
                            }
                            left -= k;
                        }
                        total
                    })
                },
            );
            if let Some((t, _)) = cur.take() {
                t.release().expect("release");
            }
            e.flush_blocking().expect("flush");
            e.shutdown().expect("shutdown");
        }
    }
    g.finish();
}

fn event_vs_subscribers(c: &mut Criterion) {
    let mut g = c.benchmark_group("scaling");
    g.throughput(Throughput::Elements(1));
    let e = engine(4);
    for s in SUBSCRIBERS {
        let t = build(&e, 1);
        let mut subs: Vec<_> = (0..s).map(|_| t.subscribe().expect("subscribe")).collect();
        for sub in &mut subs {
            while let Ok(Some(_)) = sub.try_recv() {}
        }
        g.bench_with_input(BenchmarkId::new("event_vs_subscribers", s), &s, |b, _| {
            b.iter(|| {
                t.info("fan out");
                for sub in &mut subs {
                    black_box(sub.try_recv().expect("event ready"));
                }
            })
        });
        drop(subs);
        t.release().expect("release");
    }
    e.flush_blocking().expect("flush");
    e.shutdown().expect("shutdown");
    g.finish();
}

fn event_vs_traces(c: &mut Criterion) {
    let mut g = c.benchmark_group("scaling");
    for (threads, per) in TRACES {
        let e = engine(threads * per + 8);
        let sets: Vec<Vec<Trace>> = (0..threads)
            .map(|_| (0..per).map(|_| build(&e, 1)).collect())
            .collect();
        g.throughput(Throughput::Elements(1));
        g.bench_with_input(
            BenchmarkId::new("event_vs_traces", format!("{threads}x{per}")),
            &(threads, per),
            |b, _| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    std::thread::scope(|sc| {
                        for (w, set) in sets.iter().enumerate() {
                            let n = iters / threads as u64
                                + u64::from((w as u64) < iters % threads as u64);
                            sc.spawn(move || {
                                for i in 0..n as usize {
                                    set[i % set.len()].info("one log line");
                                }
                            });
                        }
                    });
                    start.elapsed()
                })
            },
        );
        for t in sets.into_iter().flatten() {
            t.release().expect("release");
        }
        e.flush_blocking().expect("flush");
        e.shutdown().expect("shutdown");
    }
    g.finish();
}

/// Releases timed per criterion sample at most, by trace size (see the
/// module docs).
fn release_cap(n: usize) -> u64 {
    match n {
        0..=100 => u64::MAX,
        101..=10_000 => 64,
        _ => 2,
    }
}

fn release_vs_nodes(c: &mut Criterion) {
    let mut g = c.benchmark_group("scaling");
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(10);
    let e = engine(4);
    for n in SIZES {
        for kind in ["call", "drained"] {
            g.bench_with_input(
                BenchmarkId::new(format!("release_vs_nodes/{kind}"), n),
                &n,
                |b, &n| {
                    b.iter_custom(|iters| {
                        if iters == 0 {
                            return Duration::ZERO;
                        }
                        let timed = iters.min(release_cap(n));
                        let mut total = Duration::ZERO;
                        for _ in 0..timed {
                            let t = build(&e, n);
                            e.flush_blocking().expect("flush");
                            let start = Instant::now();
                            t.release().expect("release");
                            if kind == "drained" {
                                e.flush_blocking().expect("flush");
                            }
                            total += start.elapsed();
                            e.flush_blocking().expect("flush");
                        }
                        total.mul_f64(iters as f64 / timed as f64)
                    })
                },
            );
        }
    }
    e.flush_blocking().expect("flush");
    e.shutdown().expect("shutdown");
    g.finish();
}

criterion_group!(
    benches,
    event_vs_nodes,
    event_vs_subscribers,
    event_vs_traces,
    release_vs_nodes
);
criterion_main!(benches);
