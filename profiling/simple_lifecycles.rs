//! N simple lifecycles (create, add, complete, release, flush, remove — the
//! Go package's simple loop, every trace persisted before it is removed) on
//! one driver, for `strace -c -f` (system calls per trace) and dhat-free
//! timing. `--keep` leaves the traces in storage (no remove), to see the
//! layout a trace leaves. `--batch K` runs K lifecycles (create, add a
//! node, one log line, complete, release), then one flush, then K removes
//! (the engine's workers hand the K traces over together: group commit).
//!
//! ```sh
//! cargo build --release --example simple_lifecycles
//! strace -c -f target/release/examples/simple_lifecycles --driver local --dir /tmp/sl --n 1000
//! target/release/examples/simple_lifecycles --driver store --dir /tmp/sl --n 1000
//! target/release/examples/simple_lifecycles --driver store --dir /tmp/sl --n 64000 --batch 64
//! ```

#[path = "support/args.rs"]
mod args;
#[path = "../benches/support/floor.rs"]
mod floor;

use args::arg;
use floor::{create_released, remove_all};

use std::time::Instant;

use tracepool::Engine;

fn main() -> tracepool::Result<()> {
    let driver = arg("--driver").unwrap_or_else(|| "local".into());
    let dir =
        std::path::PathBuf::from(arg("--dir").unwrap_or_else(|| "/tmp/simple_lifecycles".into()));
    let n: u64 = arg("--n").and_then(|s| s.parse().ok()).unwrap_or(1000);
    let keep = std::env::args().any(|a| a == "--keep");
    let batch: u64 = arg("--batch").and_then(|s| s.parse().ok()).unwrap_or(0);
    // Room for a whole batch of released traces that still drain.
    let capacity = 64.max(2 * batch as usize);
    let durability = match arg("--durability").as_deref() {
        Some("flush") => tracepool::Durability::Flush,
        Some("fsync") => tracepool::Durability::Fsync,
        _ => tracepool::Durability::Buffered,
    };
    let b = Engine::builder()
        .capacity(capacity)
        .workers(1)
        .durability(durability);
    let engine = match driver.as_str() {
        "memory" => b.memory(),
        "store" => match arg("--write-buffer").and_then(|s| s.parse::<usize>().ok()) {
            Some(mib) => b.store(dir.join("db")).store_write_buffer(mib << 20),
            None => b.store(dir.join("db")),
        },
        _ => b.local(&dir),
    }
    .build()?;
    let start = Instant::now();
    if batch > 0 {
        let mut ids = Vec::with_capacity(batch as usize);
        let mut done = 0;
        while done < n {
            let k = batch.min(n - done);
            create_released(&engine, k, true, &mut ids)?;
            // The k traces reach storage before they are removed.
            engine.flush_blocking()?;
            if keep {
                ids.clear();
            } else {
                remove_all(&engine, &mut ids, true)?;
            }
            done += k;
        }
    }
    let mut ids = Vec::with_capacity(1);
    for _ in 0..if batch > 0 { 0 } else { n } {
        create_released(&engine, 1, false, &mut ids)?;
        // Every trace reaches storage before it is removed.
        engine.flush_blocking()?;
        if keep {
            ids.clear();
        } else {
            // The memory driver keeps nothing: its remove finds nothing.
            remove_all(&engine, &mut ids, true)?;
        }
    }
    let took = start.elapsed();
    engine.shutdown()?;
    println!(
        "{driver}: {n} simple lifecycles (persisted{}, then {}) in {:.3} s = {:.1} µs each",
        if batch > 0 {
            format!(" {batch} per flush")
        } else {
            String::new()
        },
        if keep { "kept" } else { "removed" },
        took.as_secs_f64(),
        took.as_secs_f64() * 1e6 / n as f64
    );
    Ok(())
}
