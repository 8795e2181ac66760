//! Threads and tasks as a user sees them (own process, `harness = false`, so
//! that no other test's threads are counted).
//!
//! An application calls tracepool from its own tokio runtime. The engine
//! starts `workers + 1` OS threads when it is built (see
//! `docs/ARCHITECTURE.md`) and nothing per trace or per subscription. So,
//! after a warm-up and a `flush`, 10,000 create → work → release cycles —
//! `create` and `create_async`, with and without a subscription, released
//! explicitly, by id, or by dropping the last handle — must leave both
//!
//! - the OS threads of the process (`/proc/self/task`), and
//! - the tasks alive on the *caller's* runtime (`num_alive_tasks`)
//!
//! exactly where they were, and neither may ever be higher while a trace of
//! a cycle is live (sampled in every cycle, after the work and before the
//! release): a thread or task per trace would show there even if it ended
//! with its trace.
//!
//! The baseline port of the reference design runs similar cycles afterwards;
//! its per-trace tasks (state worker, pubsub forwarder, replay per
//! subscription) are printed, not asserted.

use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tracepool::{
    Cursor, Delivery, Engine, Exhausted, NodeOptions, Subscription, Trace, TraceOptions,
};

#[path = "../benches/support/scenarios.rs"]
#[allow(unreachable_pub)]
mod scenarios;

#[path = "../benches/support/baseline.rs"]
mod baseline;

use scenarios::{Inline, Scenario, ScenarioEngine, SubscribeEngine};

const CYCLES: usize = 10_000;
const WARM_UP_CYCLES: usize = 100;
const BASELINE_CYCLES: usize = 1_000;
const CAPACITY: usize = 8;
const WORKERS: usize = 2;

/// The process's threads by name (`/proc/self/task/*/comm`), sorted.
fn threads() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task (this test needs Linux)")
        .filter_map(|e| {
            // A thread that exits meanwhile has no `comm` any more: skip it.
            std::fs::read_to_string(e.ok()?.path().join("comm")).ok()
        })
        .map(|s| s.trim_end().to_owned())
        .collect();
    names.sort();
    names
}

/// How the thread names of `after` differ from `before` (name: count
/// before -> count after), for failure messages.
fn thread_diff(before: &[String], after: &[String]) -> String {
    let count = |v: &[String], n: &str| v.iter().filter(|x| *x == n).count();
    let mut names: Vec<&String> = before.iter().chain(after).collect();
    names.sort();
    names.dedup();
    let changed: Vec<String> = names
        .into_iter()
        .filter(|n| count(before, n) != count(after, n))
        .map(|n| format!("{n:?}: {} -> {}", count(before, n), count(after, n)))
        .collect();
    format!(
        "{} -> {} threads ({})",
        before.len(),
        after.len(),
        changed.join(", ")
    )
}

/// What a user can see: the process's threads and the tasks alive on the
/// runtime the calls are made from.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    threads: Vec<String>,
    tasks: usize,
}

fn seen(rt: &Handle) -> Seen {
    Seen {
        threads: threads(),
        tasks: rt.metrics().num_alive_tasks(),
    }
}

/// The most threads and tasks seen while a cycle's trace was live.
#[derive(Debug, Default)]
struct Peak {
    threads: Option<Vec<String>>,
    tasks: usize,
    samples: usize,
}

impl Peak {
    fn sample(&mut self, rt: &Handle) {
        let s = seen(rt);
        if self
            .threads
            .as_ref()
            .is_none_or(|t| s.threads.len() > t.len())
        {
            self.threads = Some(s.threads);
        }
        self.tasks = self.tasks.max(s.tasks);
        self.samples += 1;
    }
}

/// Reads a subscription to its end (it ends after `complete` or after the
/// release); returns how many events it delivered.
async fn drain(mut sub: Subscription) -> usize {
    let mut n = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), sub.recv()).await {
            Ok(Some(Delivery::Event(_))) => n += 1,
            Ok(Some(Delivery::Lagged { missed })) => panic!("lagged {missed}"),
            Ok(None) => return n,
            Err(_) => panic!("a subscription did not end within 10 s"),
        }
    }
}

fn work(engine: &Engine, trace: &Trace, i: usize) {
    scenarios::run(engine, trace, Scenario::ALL[i % 5], &Inline);
}

/// One create → work → release cycle, in one of four ways; samples `peak`
/// while the trace is live. Returns the events its subscription delivered.
async fn cycle(engine: &Engine, rt: &Handle, i: usize, peak: &mut Peak) -> usize {
    match i % 4 {
        // `create`, a subscription, `mark_complete`, `release` on the handle.
        0 => {
            let t = engine.create(TraceOptions::new()).expect("create");
            let sub = t.subscribe().expect("subscribe");
            work(engine, &t, i);
            t.mark_complete().expect("mark_complete");
            peak.sample(rt);
            t.release().expect("release");
            drain(sub).await
        }
        // `create_async`, no subscription, the handles dropped unfinished.
        1 => {
            let t = engine
                .create_async(TraceOptions::new())
                .await
                .expect("create_async");
            work(engine, &t, i);
            let node = t.add("last", NodeOptions::new()).expect("add");
            peak.sample(rt);
            drop(t);
            drop(node); // the last handle: releases the trace
            0
        }
        // `create_async`, a subscription, the last handle dropped.
        2 => {
            let t = engine
                .create_async(TraceOptions::new())
                .await
                .expect("create_async");
            let sub = t.subscribe().expect("subscribe");
            work(engine, &t, i);
            t.mark_complete().expect("mark_complete");
            peak.sample(rt);
            drop(t);
            drain(sub).await
        }
        // `create`, a subscription from a cursor, cancelled and released by id.
        _ => {
            let t = engine.create(TraceOptions::new()).expect("create");
            let sub = t.subscribe_from(Cursor::Seq(1)).expect("subscribe");
            work(engine, &t, i);
            engine
                .mark_cancelled(t.id(), "cycle over")
                .expect("mark_cancelled");
            peak.sample(rt);
            engine.release(t.id()).expect("release by id");
            drop(t); // stale now: releases nothing more
            drain(sub).await
        }
    }
}

struct Checks {
    passed: usize,
    failed: usize,
}

impl Checks {
    fn check(&mut self, name: &str, ok: bool, detail: impl FnOnce() -> String) {
        println!("  {name} ... {}", if ok { "ok" } else { "FAILED" });
        if ok {
            self.passed += 1;
        } else {
            println!("    {}", detail());
            self.failed += 1;
        }
    }
}

fn main() {
    let started = Instant::now();
    let mut checks = Checks {
        passed: 0,
        failed: 0,
    };

    // ---- tracepool, called from the application's runtime -----------------------
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let handle = rt.handle().clone();
    rt.block_on(async {
        let before_engine = seen(&handle);
        let engine = Engine::builder()
            .capacity(CAPACITY)
            .workers(WORKERS)
            .on_exhausted(Exhausted::Wait(Duration::from_secs(5)))
            .memory()
            .build()
            .expect("engine");
        let built = seen(&handle);

        // Warm-up: every slot holds a subscribed trace at once, then some
        // cycles of each kind.
        let mut warm_peak = Peak::default();
        let held: Vec<_> = (0..CAPACITY)
            .map(|i| {
                let t = engine.create(TraceOptions::new()).expect("create");
                let sub = t.subscribe().expect("subscribe");
                work(&engine, &t, i);
                t.mark_complete().expect("mark_complete");
                (t, sub)
            })
            .collect();
        for (t, sub) in held {
            t.release().expect("release");
            drain(sub).await;
        }
        for i in 0..WARM_UP_CYCLES {
            cycle(&engine, &handle, i, &mut warm_peak).await;
        }
        engine.flush().await.expect("flush after warm-up");
        let before = seen(&handle);

        let mut peak = Peak::default();
        let t0 = Instant::now();
        let mut delivered = 0;
        for i in 0..CYCLES {
            delivered += cycle(&engine, &handle, i, &mut peak).await;
        }
        let elapsed = t0.elapsed();
        engine.flush().await.expect("flush after the cycles");
        let after = seen(&handle);
        let stats = engine.stats();

        let peak_threads = peak.threads.clone().unwrap_or_default();
        println!(
            "tracepool: {CYCLES} cycles on the caller's runtime in {:.2} s, {delivered} events delivered",
            elapsed.as_secs_f64()
        );
        println!(
            "  OS threads: {} before the engine, {} once built, {} after warm-up, {} after the cycles, at most {} with a trace live ({} samples)",
            before_engine.threads.len(),
            built.threads.len(),
            before.threads.len(),
            after.threads.len(),
            peak_threads.len(),
            peak.samples
        );
        println!(
            "  tasks alive on the caller's runtime: {} before the engine, {} after warm-up, {} after the cycles, at most {} with a trace live",
            before_engine.tasks, before.tasks, after.tasks, peak.tasks
        );
        println!(
            "  engine: in use {}, draining {}, subscribers {}",
            stats.in_use, stats.draining, stats.subscribers
        );

        let engine_threads = built.threads.len() as i64 - before_engine.threads.len() as i64;
        checks.check(
            "the engine starts workers + 1 threads",
            engine_threads == WORKERS as i64 + 1,
            || thread_diff(&before_engine.threads, &built.threads),
        );
        checks.check(
            "OS threads unchanged by the cycles",
            after.threads == before.threads,
            || thread_diff(&before.threads, &after.threads),
        );
        checks.check(
            "no extra OS thread while a trace is live",
            peak.samples == CYCLES && peak_threads.len() == before.threads.len(),
            || {
                format!(
                    "{} samples; {}",
                    peak.samples,
                    thread_diff(&before.threads, &peak_threads)
                )
            },
        );
        checks.check(
            "caller's runtime tasks unchanged by the cycles",
            after.tasks == before.tasks,
            || format!("before {}, after {}", before.tasks, after.tasks),
        );
        checks.check(
            "no extra task on the caller's runtime while a trace is live",
            peak.tasks == before.tasks,
            || format!("before {}, at most {}", before.tasks, peak.tasks),
        );
        checks.check(
            "no subscriber left, every slot free",
            (stats.subscribers, stats.in_use, stats.draining) == (0, 0, 0),
            || format!("{stats:?}"),
        );
        drop(engine);
    });
    drop(rt);

    // ---- baseline (printed, not asserted) ----------------------------------------
    let b = baseline::Baseline::new(2);
    let base_tasks = b.live_tasks();
    let base_threads = threads().len();
    let t = b.create();
    let mut sub = b.subscribe(&t);
    let open_tasks = b.live_tasks();
    b.add(&t, serde_json::Value::Null, "step");
    b.mark_complete(&t);
    b.drain(&mut sub, Duration::from_millis(10));
    b.release(t);
    let mut peak = 0;
    let t0 = Instant::now();
    let mut delivered = 0;
    for i in 0..BASELINE_CYCLES {
        let t = b.create();
        let mut sub = b.subscribe(&t);
        scenarios::run(&b, &t, Scenario::ALL[i % 5], &Inline);
        b.mark_complete(&t);
        delivered += b.drain(&mut sub, Duration::from_millis(10));
        b.release(t);
        peak = peak.max(b.live_tasks());
    }
    let elapsed = t0.elapsed();
    let right_after = b.live_tasks();
    // Printed only: how long the reference's per-trace tasks linger.
    std::thread::sleep(Duration::from_millis(200));
    println!(
        "baseline: {BASELINE_CYCLES} cycles with a subscriber each in {:.2} s, {delivered} events delivered",
        elapsed.as_secs_f64()
    );
    println!(
        "  alive tokio tasks: {base_tasks} idle, {open_tasks} with one subscribed trace open (state worker + forwarder + replay), peak {peak} between cycles, {right_after} right after the last release, {} after 200 ms",
        b.live_tasks()
    );
    println!(
        "  threads: {base_threads} before, {} after",
        threads().len()
    );

    println!(
        "{} passed, {} failed ({:.1} s)",
        checks.passed,
        checks.failed,
        started.elapsed().as_secs_f64()
    );
    if checks.failed > 0 {
        std::process::exit(1);
    }
}
