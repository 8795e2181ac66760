//! Shared body of the `heap_<scenario>` tests (each its own process, `harness = false`).
//!
//! The dhat profiler starts first, so the engine's construction and the
//! warm-up are tracked too; the measurement is the difference between the
//! heap statistics after warm-up (every slot used once, then a few more
//! cycles) and after [`CYCLES`] more create → scenario → mark complete →
//! release cycles. Branches run inline on the test thread; the engine's one
//! worker is idle (flush interval one hour; the memory driver is handed
//! nothing, and a released slot is free at once).

use std::hint::black_box;
use std::time::Duration;

use serde_json::Value;

use crate::scenarios::{self, Inline, Lvl, Scenario, ScenarioEngine};

mod phase;

use phase::{Checks, measure, wait_until_engine_threads_idle};

/// Measured cycles.
pub(crate) const CYCLES: usize = 10_000;
/// Slots: small, so warm-up touches every one.
const CAPACITY: usize = 4;

/// A do-nothing engine: running the scenario harness against it counts the
/// allocations the harness itself makes (job boxes, the job vector, clones),
/// so they can be told apart from the engine's.
#[derive(Clone, Copy)]
struct NullEngine;

impl ScenarioEngine for NullEngine {
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
    fn log(&self, _: &(), _: Lvl, msg: &'static str) {
        black_box(msg);
    }
    fn node_complete(&self, _: &(), output: Value) {
        black_box(output);
    }
    fn node_info(&self, _: &(), msg: &'static str) {
        black_box(msg);
    }
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

fn cycle<E: ScenarioEngine>(e: &E, s: Scenario) {
    let t = e.create();
    scenarios::run(e, &t, s, &Inline);
    e.mark_complete(&t);
    e.release(black_box(t));
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs the heap test for `s`; `max_blocks_per_cycle` is the regression
/// bound (measured, plus a small margin). Prints a closing `N passed, N failed`
/// line; exits non-zero (through a dhat assertion, which writes
/// `dhat-heap.json`) on failure.
pub(crate) fn main(s: Scenario, max_blocks_per_cycle: f64) {
    let started = std::time::Instant::now();
    let _profiler = dhat::Profiler::builder().testing().build();
    let engine = tracepool::Engine::builder()
        .capacity(CAPACITY)
        .workers(1)
        .flush_interval(Duration::from_secs(3600))
        .on_exhausted(tracepool::Exhausted::Error)
        .memory()
        .build()
        .expect("engine");

    // Each engine thread (one worker, the ticker) makes an allocation of
    // its own as it starts, a millisecond or two after the build: wait until
    // both sleep in their idle wait, so that does not land in the
    // measurement.
    wait_until_engine_threads_idle(2);

    // Warm-up: every slot holds a trace of this scenario at once, then a few
    // sequential cycles more.
    let held: Vec<_> = (0..CAPACITY)
        .map(|_| {
            let t = ScenarioEngine::create(&engine);
            scenarios::run(&engine, &t, s, &Inline);
            ScenarioEngine::mark_complete(&engine, &t);
            t
        })
        .collect();
    for t in held {
        ScenarioEngine::release(&engine, t);
    }
    for _ in 0..env_usize("HEAP_WARMUP", 16) {
        cycle(&engine, s);
    }
    // The same number of harness runs, so its one-time allocations are done too.
    for _ in 0..16 {
        cycle(&NullEngine, s);
    }

    let n = env_usize("HEAP_CYCLES", CYCLES);
    let total = measure(n, |_| cycle(&engine, s));
    let harness = measure(n, |_| cycle(&NullEngine, s));
    let engine_blocks = total.blocks - harness.blocks;
    let engine_bytes = total.bytes - harness.bytes;

    println!(
        "heap test, scenario {}: {} cycles after warm-up ({} slots)",
        s.name(),
        CYCLES,
        CAPACITY
    );
    println!(
        "  allocations per cycle: {:.3} blocks, {:.1} bytes (of which the scenario harness: {:.3} blocks, {:.1} bytes; engine: {:.3} blocks, {:.1} bytes)",
        total.blocks, total.bytes, harness.blocks, harness.bytes, engine_blocks, engine_bytes
    );
    println!(
        "  retained after {} cycles: {} bytes in {} blocks (live bytes minus the warm-up level)",
        n, total.retained_bytes, total.retained_blocks
    );
    println!(
        "  goal (docs/PERFORMANCE.md, performance goals): <= 2 allocations per simple lifecycle; engine share here: {engine_blocks:.3}"
    );

    let mut checks = Checks::new(started);
    checks.check("retains 0 bytes", total.retains_nothing());
    checks.check(
        &format!(
            "allocations per cycle {:.3} <= bound {max_blocks_per_cycle}",
            total.blocks
        ),
        total.blocks <= max_blocks_per_cycle,
    );
    checks.finish(&format!("scenario {}", s.name()));
}
