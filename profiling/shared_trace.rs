//! One trace written by many threads at once: T threads each add nodes
//! under the root and log lines on them, all into the same trace (so every
//! operation contends for that trace's lock), for `--ops` operations per
//! thread. Prints the wall time per operation, and the process's CPU time
//! per operation (what waiting for the lock burns). Run it on two builds,
//! alternating, to compare how they behave when one trace is shared:
//!
//! ```sh
//! cargo build --release --example shared_trace
//! target/release/examples/shared_trace --threads 8 --ops 200000
//! ```

#[path = "support/args.rs"]
mod args;

use args::arg;

use std::sync::Barrier;
use std::time::{Duration, Instant};

use tracepool::{Engine, NodeOptions, TraceOptions};

/// CPU time of the whole process so far (user + system), from
/// `/proc/self/stat` (clock ticks of 10 ms).
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15 (1-based), i.e. 11 and 12 after ")".
    let ticks: u64 = fields.get(11).and_then(|u| u.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|s| s.parse().ok()).unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

fn main() {
    let threads: usize = arg("--threads").and_then(|s| s.parse().ok()).unwrap_or(8);
    let ops: usize = arg("--ops").and_then(|s| s.parse().ok()).unwrap_or(200_000);
    let e = Engine::builder()
        .capacity(4)
        .max_nodes(threads * ops + 16)
        .max_log_bytes(usize::MAX)
        .memory()
        .build()
        .expect("engine");
    let t = e.create(TraceOptions::new()).expect("create");
    let root = t
        .add("root", NodeOptions::new().label("root"))
        .expect("root");
    let start_line = Barrier::new(threads + 1);
    let (wall, cpu) = std::thread::scope(|s| {
        for _ in 0..threads {
            let (root, start_line) = (&root, &start_line);
            s.spawn(move || {
                start_line.wait();
                let mut node = None;
                for i in 0..ops {
                    if i % 8 == 0 {
                        node = Some(
                            root.add(i as u64, NodeOptions::new().label("step"))
                                .expect("add"),
                        );
                    } else if let Some(n) = &node {
                        n.info("a log line");
                    }
                }
            });
        }
        let cpu = process_cpu();
        start_line.wait();
        let begin = Instant::now();
        (begin, cpu)
    });
    let (wall, cpu) = (wall.elapsed(), process_cpu().saturating_sub(cpu));
    let n = (threads * ops) as f64;
    println!(
        "shared_trace: {threads} threads x {ops} ops on one trace: {:.1} ns per op (wall), {:.1} ns CPU per op",
        wall.as_nanos() as f64 / n,
        cpu.as_nanos() as f64 / n
    );
    drop(root);
    t.release().expect("release");
    e.shutdown().expect("shutdown");
}
