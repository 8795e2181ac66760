//! Where a driver's simple lifecycle spends its time: rounds of the Go
//! package's simple loop ([`floor::ROUND`] traces created, one node each
//! completed, released; one flush; every trace removed) on one driver
//! (`--driver store`, the default, `memory` or `local`), each phase timed on its own and divided by the traces of the
//! round. Prints the medians per trace of create + release, flush, remove
//! and the whole round.
//!
//! ```sh
//! cargo run --release --example store_phases -- --dir /tmp/phases --secs 20
//! cargo run --release --example store_phases -- --dir /dev/shm/phases --secs 20   # tmpfs
//! cargo run --release --example store_phases -- --driver memory --secs 20
//! cargo run --release --example store_phases -- --write-buffer 256   # MiB (default 64)
//! ```

#[path = "support/args.rs"]
mod args;

use args::{arg, median};

use std::time::{Duration, Instant};

use tracepool::Engine;

#[path = "../benches/support/floor.rs"]
mod floor;

use floor::{ROUND, create_released, remove_all};

fn main() -> tracepool::Result<()> {
    let base = std::path::PathBuf::from(arg("--dir").unwrap_or_else(|| "/tmp/store_phases".into()));
    let secs: f64 = arg("--secs").and_then(|s| s.parse().ok()).unwrap_or(20.0);
    let _ = std::fs::remove_dir_all(&base);
    let driver = arg("--driver").unwrap_or_else(|| "store".into());
    let mut builder = Engine::builder().capacity(2 * ROUND as usize).workers(1);
    if let Some(mib) = arg("--write-buffer").and_then(|s| s.parse::<usize>().ok()) {
        builder = builder.store_write_buffer(mib << 20);
    }
    let engine = match driver.as_str() {
        "memory" => builder.memory(),
        "local" => builder.local(base.join("local")),
        _ => builder.store(base.join("store")),
    }
    .build()?;
    let per = |d: Duration| d.as_secs_f64() * 1e6 / ROUND as f64;
    let mut phases: [Vec<f64>; 4] = Default::default();
    let mut ids = Vec::with_capacity(ROUND as usize);
    let began = Instant::now();
    let until = began + Duration::from_secs_f64(secs);
    while Instant::now() < until {
        let start = Instant::now();
        create_released(&engine, ROUND, false, &mut ids)?;
        let created = Instant::now();
        engine.flush_blocking()?;
        let flushed = Instant::now();
        // The memory driver keeps nothing: its remove finds nothing.
        remove_all(&engine, &mut ids, driver == "memory")?;
        let removed = Instant::now();
        phases[0].push(per(created - start));
        phases[1].push(per(flushed - created));
        phases[2].push(per(removed - flushed));
        phases[3].push(per(removed - start));
    }
    let rounds = phases[0].len();
    let mean = per(began.elapsed()) / rounds as f64;
    let p99 = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[(v.len() * 99 / 100).min(v.len() - 1)]
    };
    let p99s: Vec<f64> = phases.iter().map(|v| p99(v)).collect();
    println!(
        "{driver} in {} ({rounds} rounds of {ROUND} traces; µs per trace, median):",
        base.display()
    );
    for (name, v) in ["create+release", "flush", "remove", "round"]
        .iter()
        .zip(phases.iter_mut())
    {
        println!("  {name:<15} {:8.2} µs", median(v));
    }
    println!(
        "  p99: create+release {:.2}, flush {:.2}, remove {:.2}, round {:.2} µs",
        p99s[0], p99s[1], p99s[2], p99s[3]
    );
    println!("  mean            {mean:8.2} µs (the whole run / traces)");
    engine.shutdown()?;
    let _ = std::fs::remove_dir_all(&base);
    Ok(())
}
