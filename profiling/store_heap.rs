//! The store driver's heap over many persisted-then-removed simple traces
//! (issue 11, point 3): the heap must level off within the store's write
//! buffer. Runs N lifecycles (create, add a node, one log line, complete,
//! release) in rounds of 64, each round flushed, then removed, and prints
//! the live heap (every allocation of the process: the engine, fjall and
//! its threads) after every tenth of the run, and the peak.
//!
//! A counting allocator, not dhat: dhat records a backtrace per allocation,
//! too slow for 200,000 traces through fjall.
//!
//! ```sh
//! cargo run --release --example store_heap -- --n 200000 --write-buffer 64
//! ```

#[path = "support/args.rs"]
mod args;
#[path = "../benches/support/floor.rs"]
mod floor;

use args::arg;
use floor::{create_released, remove_all};

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use tracepool::Engine;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, forwarded.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract, forwarded.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            let now = LIVE.fetch_add(new_size, Ordering::Relaxed) + new_size;
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn mib(b: usize) -> f64 {
    b as f64 / (1 << 20) as f64
}

fn main() -> tracepool::Result<()> {
    let n: usize = arg("--n").and_then(|s| s.parse().ok()).unwrap_or(200_000);
    let buffer: usize = arg("--write-buffer")
        .and_then(|s| s.parse().ok())
        .unwrap_or(64);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let engine = Engine::builder()
        .capacity(128)
        .workers(1)
        .store(dir.path().join("db"))
        .store_write_buffer(buffer << 20)
        .build()?;
    let start = Instant::now();
    let base = LIVE.load(Ordering::Relaxed);
    println!(
        "write buffer {buffer} MiB; after build: {:.1} MiB live",
        mib(base)
    );
    let mut ids = Vec::with_capacity(64);
    let mut done = 0;
    let mut next_report = n / 10;
    while done < n {
        let k = 64.min(n - done);
        create_released(&engine, k as u64, true, &mut ids)?;
        engine.flush_blocking()?;
        remove_all(&engine, &mut ids, false)?;
        done += k;
        if done >= next_report {
            next_report += n / 10;
            println!(
                "{done:>8} traces  {:>7.1} s  live {:>6.1} MiB  peak {:>6.1} MiB",
                start.elapsed().as_secs_f64(),
                mib(LIVE.load(Ordering::Relaxed)),
                mib(PEAK.load(Ordering::Relaxed))
            );
        }
    }
    engine.shutdown()?;
    Ok(())
}
