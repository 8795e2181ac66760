//! Heap allocations per persisted trace, per driver (issue 11, point 1:
//! "where the local driver spends"): N simple lifecycles (create, one node
//! completed, release) in rounds of `--round` traces, each round flushed to
//! storage and then removed, counted by dhat after a warm-up. Counts every
//! allocation of the process: the caller's thread, the engine's workers and
//! the driver (fjall's own threads included for the store).
//!
//! ```sh
//! cargo run --release --example persist_allocs -- --driver local --dir /tmp/pa --n 5000 [--json dhat.json]
//! ```

#[path = "support/args.rs"]
mod args;

use args::arg;

use tracepool::Engine;

#[path = "../benches/support/floor.rs"]
mod floor;

use floor::simple_round_of;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

fn main() -> tracepool::Result<()> {
    // `--json PATH`: also write dhat's profile there (for dh_view.html).
    let _profiler = match arg("--json") {
        Some(path) => dhat::Profiler::builder().file_name(path).build(),
        None => dhat::Profiler::builder().testing().build(),
    };
    let driver = arg("--driver").unwrap_or_else(|| "local".into());
    let dir =
        std::path::PathBuf::from(arg("--dir").unwrap_or_else(|| "/tmp/persist_allocs".into()));
    let n: u64 = arg("--n").and_then(|s| s.parse().ok()).unwrap_or(5000);
    let k: u64 = arg("--round").and_then(|s| s.parse().ok()).unwrap_or(32);
    let b = Engine::builder().capacity(2 * k as usize).workers(1);
    let engine = match driver.as_str() {
        "memory" => b.memory(),
        "store" => b.store(dir.join("db")),
        _ => b.local(&dir),
    }
    .build()?;
    let mut ids = Vec::with_capacity(k as usize);
    // Warm-up: pools, caches and buffers reach their steady size.
    for _ in 0..(1000 / k).max(1) {
        simple_round_of(&engine, k, &mut ids);
    }
    let before = dhat::HeapStats::get();
    let rounds = (n / k).max(1);
    for _ in 0..rounds {
        simple_round_of(&engine, k, &mut ids);
    }
    let after = dhat::HeapStats::get();
    let traces = (rounds * k) as f64;
    println!(
        "{driver}: {} persisted-then-removed traces: {:.1} allocations and {:.0} bytes allocated per trace; live heap {} -> {} bytes",
        rounds * k,
        (after.total_blocks - before.total_blocks) as f64 / traces,
        (after.total_bytes - before.total_bytes) as f64 / traces,
        before.curr_bytes,
        after.curr_bytes,
    );
    engine.shutdown()?;
    Ok(())
}
