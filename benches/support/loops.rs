//! The Go original's benchmark loops (`trace_bench_test.go`, spec §8.13) over
//! the `ScenarioEngine` trait: each iteration creates a trace, runs the body,
//! releases and removes it, as the Go loops do. Used by `benches/reference.rs`
//! and `profiling/go_loops.rs` (the Go-shaped baseline has its async twin in
//! `go_baseline.rs`).

#![allow(dead_code, unreachable_pub)]

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::baseline;
use crate::scenarios::{self, BranchRunner, Scenario, SubscribeEngine};

/// A trace id copied to the stack, so the loop allocates nothing of its own.
#[derive(Debug)]
pub struct IdBuf {
    buf: [u8; 64],
    len: usize,
}

impl IdBuf {
    /// Copies `s` (ids are at most 64 bytes).
    pub fn new(s: &str) -> IdBuf {
        let mut buf = [0u8; 64];
        let len = s.len().min(64);
        buf[..len].copy_from_slice(&s.as_bytes()[..len]);
        IdBuf { buf, len }
    }
    /// The id.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

/// What the loops need beyond the scenarios: the id, and `Remove`.
pub trait Loops: SubscribeEngine {
    /// The trace's id.
    fn id_of(t: &Self::Trace) -> IdBuf;
    /// `Remove` after `Release`.
    fn remove(&self, id: &str);
}

/// Set for an engine on a driver that persists (local, store): `remove`
/// first waits until everything released so far reached storage
/// (`flush_blocking`), so every trace of the loops is persisted before it is
/// removed (the Go package's drivers write each change before returning).
pub static FLUSH_BEFORE_REMOVE: AtomicBool = AtomicBool::new(false);

impl Loops for tracepool::Engine {
    fn id_of(t: &tracepool::Trace) -> IdBuf {
        IdBuf::new(t.id())
    }
    /// `Engine::remove` after `release`: discards writes still queued, asks
    /// the memory driver; `NotFound` (nothing queued, nothing stored) is the
    /// Go `Remove`'s "not an error".
    fn remove(&self, id: &str) {
        if FLUSH_BEFORE_REMOVE.load(Ordering::Relaxed) {
            self.flush_blocking().expect("flush");
        }
        match tracepool::Engine::remove(self, id) {
            Ok(()) | Err(tracepool::Error::NotFound) => {}
            Err(e) => panic!("remove: {e}"),
        }
    }
}

impl Loops for baseline::Baseline {
    fn id_of(t: &Arc<baseline::Manager>) -> IdBuf {
        IdBuf::new(t.id())
    }
    /// The blocking port's driver stores nothing: `Remove` is its `Release`
    /// (a no-op after the release).
    fn remove(&self, id: &str) {
        self.release_id(id);
    }
}

/// Release + remove.
pub fn end<E: Loops>(e: &E, t: E::Trace) {
    let id = E::id_of(&t);
    e.release(t);
    e.remove(id.as_str());
}

/// `BenchmarkSimpleTrace*`: create, add, complete, release, remove.
pub fn simple<E: Loops>(e: &E) {
    let t = e.create();
    scenarios::simple(e, &t);
    end(e, t);
}

/// `BenchmarkComplexTrace*`: create, scenario `i mod 5`, release, remove.
pub fn complex<E: Loops, R: BranchRunner>(e: &E, i: usize, runner: &R) {
    let t = e.create();
    scenarios::run(e, &t, Scenario::ALL[i % 5], runner);
    end(e, t);
}

/// `BenchmarkSubscription`: create, subscribe, add, complete, mark complete,
/// drain (10 ms timeout), cancel, release, remove.
pub fn subscription<E: Loops>(e: &E) -> usize {
    let t = e.create();
    let mut sub = e.subscribe(&t);
    scenarios::simple(e, &t);
    e.mark_complete(&t);
    let n = e.drain(&mut sub, Duration::from_millis(10));
    drop(sub); // cancel
    end(e, t);
    n
}

/// `BenchmarkSpaceOperations`: create, a space, 10 sets, 10 gets, release, remove.
pub fn space_operations<E: Loops>(e: &E) {
    let t = e.create();
    scenarios::space_ops(e, &t);
    end(e, t);
}

/// `n` loops of `name` on this thread; `rot` is this thread's rotation
/// counter for `complex`.
pub fn run_n<E: Loops, R: BranchRunner>(e: &E, name: &str, n: u64, rot: &mut usize, runner: &R) {
    for _ in 0..n {
        match name {
            "simple" | "concurrent_simple" => simple(e),
            "complex" | "concurrent_complex" => {
                *rot += 1;
                complex(e, *rot, runner);
            }
            "subscription" => {
                black_box(subscription(e));
            }
            "space_operations" => space_operations(e),
            other => panic!("unknown loop {other}"),
        }
    }
}

/// `n` loops of `name`: on this thread, or split over `threads` threads
/// started together (Go's `RunParallel`; each keeps its own rotation
/// counter). Returns the wall time.
pub fn timed<E: Loops, R: BranchRunner + Sync>(
    e: &E,
    name: &str,
    n: u64,
    threads: usize,
    runner: &R,
) -> Duration {
    let threads = threads.max(1) as u64;
    let start = std::time::Instant::now();
    if threads == 1 {
        let mut rot = 0;
        run_n(e, name, n, &mut rot, runner);
    } else {
        std::thread::scope(|s| {
            for w in 0..threads {
                s.spawn(move || {
                    let per = n / threads + u64::from(w < n % threads);
                    let mut rot = 0;
                    run_n(e, name, per, &mut rot, runner);
                });
            }
        });
    }
    start.elapsed()
}
