//! What every dhat heap test shares: measuring a phase of repeated work
//! (allocations per iteration, bytes retained), waiting until the engine's
//! own threads are idle, and reporting named checks. Included by path from
//! the heap tests that do not run the reference scenarios.

use std::time::{Duration, Instant};

/// What one measured phase did.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Phase {
    /// Blocks allocated per iteration.
    pub(crate) blocks: f64,
    /// Bytes allocated per iteration.
    pub(crate) bytes: f64,
    /// Live bytes after the phase minus live bytes before it.
    pub(crate) retained_bytes: i64,
    /// Live blocks after the phase minus live blocks before it.
    pub(crate) retained_blocks: i64,
}

impl Phase {
    /// Whether the phase left nothing live behind.
    #[allow(dead_code)] // not every heap test can ask it (heap_fanout's history is full)
    pub(crate) fn retains_nothing(&self) -> bool {
        self.retained_bytes == 0 && self.retained_blocks == 0
    }
}

/// Runs `f(i)` for `i` in `0..n` between two heap statistics.
pub(crate) fn measure(n: usize, mut f: impl FnMut(u64)) -> Phase {
    let a = dhat::HeapStats::get();
    for i in 0..n {
        f(std::hint::black_box(i as u64));
    }
    let b = dhat::HeapStats::get();
    Phase {
        blocks: (b.total_blocks - a.total_blocks) as f64 / n as f64,
        bytes: (b.total_bytes - a.total_bytes) as f64 / n as f64,
        retained_bytes: b.curr_bytes as i64 - a.curr_bytes as i64,
        retained_blocks: b.curr_blocks as i64 - a.curr_blocks as i64,
    }
}

/// The state letter of each thread named `tracepool-*`
/// (`/proc/self/task/*/stat`: `pid (comm) state ...`).
fn engine_thread_states() -> Vec<char> {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task (Linux)")
        .filter_map(Result::ok)
        .filter_map(|t| {
            let comm = std::fs::read_to_string(t.path().join("comm")).ok()?;
            let stat = std::fs::read_to_string(t.path().join("stat")).ok()?;
            let state = stat.rsplit_once(") ")?.1.chars().next()?;
            comm.starts_with("tracepool-").then_some(state)
        })
        .collect()
}

/// Waits (at most 10 s) until the engine's `n` threads have been asleep
/// (`S`) in five looks in a row, 2 ms apart (the sleep paces the looks; a
/// thread briefly blocked on a lock while starting is awake again by the
/// next look). Each engine thread allocates once as it starts, a
/// millisecond or two after the build: waiting keeps that out of a
/// measurement.
#[allow(dead_code)] // not every heap test builds its engine right before measuring
pub(crate) fn wait_until_engine_threads_idle(n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut asleep_in_a_row = 0;
    while asleep_in_a_row < 5 {
        let states = engine_thread_states();
        if states.len() == n && states.iter().all(|&s| s == 'S') {
            asleep_in_a_row += 1;
        } else {
            asleep_in_a_row = 0;
        }
        assert!(
            Instant::now() < deadline,
            "the engine's threads never went idle: {states:?}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Named checks, printed as they are made; [`Checks::finish`] prints the
/// closing `N passed, N failed` line and fails the process (through a dhat
/// assertion, which writes `dhat-heap.json`) if any failed.
pub(crate) struct Checks {
    started: Instant,
    passed: usize,
    failed: usize,
}

impl Checks {
    /// Checks of a test that started at `started`.
    pub(crate) fn new(started: Instant) -> Checks {
        Checks {
            started,
            passed: 0,
            failed: 0,
        }
    }

    /// Prints and counts one check.
    pub(crate) fn check(&mut self, name: &str, ok: bool) {
        println!("  {} ... {}", name, if ok { "ok" } else { "FAILED" });
        if ok {
            self.passed += 1;
        } else {
            self.failed += 1;
        }
    }

    /// Prints the totals; fails the process, naming `what`, if a check failed.
    pub(crate) fn finish(self, what: &str) {
        println!(
            "{} passed, {} failed ({:.1} s)",
            self.passed,
            self.failed,
            self.started.elapsed().as_secs_f64()
        );
        dhat::assert!(self.failed == 0, "heap test failed: {}", what);
    }
}
