//! The `storage` bench group's comparison, alternating: rounds of the Go
//! package's simple loop ([`floor::ROUND`] traces created, one node each
//! completed, released, flushed, removed) on `floor` (only the file work of
//! the reference layout, with `std::fs`), tracepool's local driver, the
//! store driver and the memory driver, one round of each in turn, until
//! `--secs` have passed; prints the median time per trace of each and the
//! ratios to the floor.
//!
//! Why alternate: on ext4 the cost of creating an inode grows with the
//! inodes deleted in the last seconds (the allocator skips recently deleted
//! inodes, `recently_deleted` in the kernel's profile), so an engine timed
//! right after another one that churned files pays for the other's
//! deletions. Alternating rounds gives every engine the same history.
//!
//! ```sh
//! cargo run --release --example storage_floor -- --dir /tmp/floor --secs 20
//! cargo run --release --example storage_floor -- --dir /dev/shm/floor --secs 20   # tmpfs
//! ```

#[path = "support/args.rs"]
mod args;

use args::{arg, median};

use std::time::{Duration, Instant};

use tracepool::Engine;

#[path = "../benches/support/floor.rs"]
mod floor;

use floor::{ROUND, floor_round, simple_round, simple_trace_files};

fn main() -> tracepool::Result<()> {
    let base =
        std::path::PathBuf::from(arg("--dir").unwrap_or_else(|| "/tmp/storage_floor".into()));
    let secs: f64 = arg("--secs").and_then(|s| s.parse().ok()).unwrap_or(20.0);
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).map_err(|e| tracepool::Error::io(&base, e))?;
    let files = simple_trace_files();
    let engine = |name: &str| -> tracepool::Result<Engine> {
        let b = Engine::builder().capacity(2 * ROUND as usize).workers(1);
        match name {
            "local" => b.local(base.join("local")),
            "store" => b.store(base.join("store")),
            _ => b.memory(),
        }
        .build()
    };
    let (local, store, memory) = (engine("local")?, engine("store")?, engine("memory")?);
    let floor_dir = base.join("floor");
    std::fs::create_dir_all(&floor_dir).map_err(|e| tracepool::Error::io(&floor_dir, e))?;
    let names = ["floor", "local", "store", "memory"];
    let mut times: [Vec<f64>; 4] = Default::default();
    let (mut n, mut ids) = (0u64, Vec::with_capacity(ROUND as usize));
    let until = Instant::now() + Duration::from_secs_f64(secs);
    while Instant::now() < until {
        for (i, t) in times.iter_mut().enumerate() {
            let start = Instant::now();
            match i {
                0 => floor_round(&floor_dir, &files, &mut n),
                1 => simple_round(&local, &mut ids),
                2 => simple_round(&store, &mut ids),
                _ => simple_round(&memory, &mut ids),
            }
            t.push(start.elapsed().as_secs_f64() * 1e6 / ROUND as f64);
        }
    }
    let rounds = times[0].len();
    let meds: Vec<f64> = times.iter_mut().map(|t| median(t)).collect();
    println!(
        "{} ({rounds} alternating rounds of {ROUND} traces; µs per trace, median):",
        base.display()
    );
    for (name, m) in names.iter().zip(&meds) {
        println!("  {name:<7} {m:10.1} µs   {:6.2}x the floor", m / meds[0]);
    }
    for e in [local, store, memory] {
        e.shutdown()?;
    }
    let _ = std::fs::remove_dir_all(&base);
    Ok(())
}
