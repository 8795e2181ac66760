//! Task and thread steady state (own process, `harness = false`).
//!
//! tracepool: after warm-up, 10,000 create → subscribe → scenario → mark
//! complete → release cycles (subscriber drained after release) leave tokio's
//! alive-task count and the process thread count exactly where they were.
//!
//! The baseline port of the reference design runs the same cycles; its
//! per-trace tasks (state worker, pubsub forwarder, replay per subscription)
//! are printed, not asserted.

use std::time::{Duration, Instant};

#[path = "../benches/support/scenarios.rs"]
#[allow(unreachable_pub)]
mod scenarios;

#[path = "../benches/support/baseline.rs"]
mod baseline;

use scenarios::{Inline, Scenario, ScenarioEngine, SubscribeEngine};

const CYCLES: usize = 10_000;
const BASELINE_CYCLES: usize = 1_000;
const CAPACITY: usize = 8;

fn threads() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:").map(|v| v.trim().parse().ok()))
                .flatten()
        })
        .unwrap_or(0)
}

fn tracepool_cycles(e: &tracepool::Engine, n: usize, offset: usize) -> usize {
    let mut delivered = 0;
    for i in 0..n {
        let t = ScenarioEngine::create(e);
        let mut sub = e.subscribe(&t);
        scenarios::run(e, &t, Scenario::ALL[(i + offset) % 5], &Inline);
        ScenarioEngine::mark_complete(e, &t);
        ScenarioEngine::release(e, t);
        delivered += e.drain(&mut sub, Duration::from_secs(1));
    }
    delivered
}

fn main() {
    let started = Instant::now();
    let mut passed = 0;
    let mut failed = 0;

    // ---- tracepool --------------------------------------------------------------
    let engine = tracepool::Engine::builder()
        .capacity(CAPACITY)
        .workers(2)
        .memory()
        .build()
        .expect("engine");
    // Warm-up: every slot holds a subscribed trace at once, then some cycles.
    let held: Vec<_> = (0..CAPACITY)
        .map(|i| {
            let t = ScenarioEngine::create(&engine);
            let sub = engine.subscribe(&t);
            scenarios::run(&engine, &t, Scenario::ALL[i % 5], &Inline);
            ScenarioEngine::mark_complete(&engine, &t);
            (t, sub)
        })
        .collect();
    for (t, mut sub) in held {
        ScenarioEngine::release(&engine, t);
        engine.drain(&mut sub, Duration::from_secs(1));
    }
    tracepool_cycles(&engine, 100, 0);
    std::thread::sleep(Duration::from_millis(50));
    let (tasks0, threads0) = (engine.stats().live_tasks, threads());
    let t0 = Instant::now();
    let delivered = tracepool_cycles(&engine, CYCLES, 0);
    let elapsed = t0.elapsed();
    std::thread::sleep(Duration::from_millis(50));
    let (tasks1, threads1) = (engine.stats().live_tasks, threads());
    let stats = engine.stats();
    println!(
        "tracepool: {CYCLES} cycles with a subscriber each in {:.2} s, {delivered} events delivered",
        elapsed.as_secs_f64()
    );
    println!(
        "  alive tokio tasks: {tasks0} after warm-up, {tasks1} after; threads: {threads0} after warm-up, {threads1} after; workers {}, subscribers now {}",
        stats.workers, stats.subscribers
    );
    for (name, ok) in [
        ("tracepool alive tasks unchanged", tasks0 == tasks1),
        ("tracepool threads unchanged", threads0 == threads1),
        ("tracepool alive tasks == workers", tasks1 == stats.workers),
        ("no subscriber left", stats.subscribers == 0),
    ] {
        println!("  {name} ... {}", if ok { "ok" } else { "FAILED" });
        if ok {
            passed += 1;
        } else {
            failed += 1;
        }
    }
    drop(engine);

    // ---- baseline (printed, not asserted) ----------------------------------------
    let b = baseline::Baseline::new(2);
    let base_tasks = b.live_tasks();
    let base_threads = threads();
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
    std::thread::sleep(Duration::from_millis(200));
    println!(
        "baseline: {BASELINE_CYCLES} cycles with a subscriber each in {:.2} s, {delivered} events delivered",
        elapsed.as_secs_f64()
    );
    println!(
        "  alive tokio tasks: {base_tasks} idle, {open_tasks} with one subscribed trace open (state worker + forwarder + replay), peak {peak} between cycles, {right_after} right after the last release, {} after 200 ms",
        b.live_tasks()
    );
    println!("  threads: {base_threads} before, {} after", threads());

    println!(
        "{passed} passed, {failed} failed ({:.1} s)",
        started.elapsed().as_secs_f64()
    );
    if failed > 0 {
        std::process::exit(1);
    }
}
