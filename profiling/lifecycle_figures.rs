//! The lifecycle figures: what a dropped handle, a release, a replay and an
//! unbounded trace cost. Uses only calls that every tracepool version has,
//! so the same program measures an older build too.
//!
//! ```sh
//! cargo run --release --example lifecycle_figures
//! ```
//!
//! 1. Dropped handles: on `capacity(4)` with the default `Exhausted::Wait(50 ms)`,
//!    4 requests that drop their trace without `release`, then one more
//!    `create`: how long it takes and what it returns; then 10,000 such
//!    requests on `capacity(8)`.
//! 2. `release` latency on a tokio worker with the default local driver
//!    (a trace of 50 events each), and `mark_complete` with `auto_archive`.
//! 3. Replay: a trace of 3,003 events (defaults: history 4,096, subscriber
//!    buffer 1,024), then a fresh `subscribe()`: what it delivers.
//! 4. Bounds: 500,000 log lines of 200 bytes on one trace with
//!    `history_limit(16)` (resident memory before and after), and how many
//!    subscriptions one trace accepts (up to 100,000).

use std::time::{Duration, Instant};

use tracepool::{Delivery, Engine, NodeOptions, TraceOptions};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmRSS:")
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

fn request(engine: &Engine, i: usize) -> tracepool::Result<()> {
    let t = engine.create(TraceOptions::new())?;
    t.add(i, NodeOptions::new().label("request"))?;
    t.info("working");
    Ok(()) // no release: the handle is dropped
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn dropped_handles() {
    let engine = Engine::builder().capacity(4).memory().build().unwrap();
    for i in 0..4 {
        request(&engine, i).unwrap();
    }
    let t0 = Instant::now();
    let r = engine.create(TraceOptions::new());
    let took = t0.elapsed();
    println!(
        "1. capacity 4, 4 requests dropped their handle: the 5th create took {:.1} ms and {}; in use: {}",
        took.as_secs_f64() * 1e3,
        match &r {
            Ok(_) => "succeeded".to_owned(),
            Err(e) => format!("failed: {e}"),
        },
        engine.stats().in_use
    );
    drop(r);
    let engine = Engine::builder().capacity(8).memory().build().unwrap();
    let t0 = Instant::now();
    let mut failed = 0;
    let mut first_error = None;
    for i in 0..10_000 {
        if let Err(e) = request(&engine, i) {
            failed += 1;
            first_error.get_or_insert(e.to_string());
            if failed >= 20 {
                break;
            }
        }
    }
    println!(
        "   capacity 8, 10,000 requests that drop their handle: {} failed{} in {:.2} s; in use after: {}",
        failed,
        first_error.map_or(String::new(), |e| format!(
            " (first: {e}; stopped after 20)"
        )),
        t0.elapsed().as_secs_f64(),
        engine.stats().in_use
    );
}

fn release_latency() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::builder()
        .capacity(64)
        .local(dir.path())
        .build()
        .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    let (release, archive) = rt.block_on(async {
        let e = engine.clone();
        tokio::spawn(async move {
            let mut release = Vec::new();
            let mut archive = Vec::new();
            for i in 0..400 {
                let auto = i % 4 == 0;
                let t = e.create(TraceOptions::new().auto_archive(auto)).unwrap();
                let root = t.add(i, NodeOptions::new().label("root")).unwrap();
                for k in 0..47 {
                    root.info(format!("line {k}"));
                }
                if auto {
                    let t0 = Instant::now();
                    t.mark_complete().unwrap();
                    archive.push(t0.elapsed());
                }
                let t0 = Instant::now();
                t.release().unwrap();
                release.push(t0.elapsed());
                // Let the workers write, as between requests.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            (release, archive)
        })
        .await
        .unwrap()
    });
    let show = |name: &str, mut v: Vec<Duration>| {
        v.sort();
        println!(
            "   {name}: p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs ({} calls)",
            percentile(&v, 0.5).as_secs_f64() * 1e6,
            percentile(&v, 0.99).as_secs_f64() * 1e6,
            v.last().unwrap().as_secs_f64() * 1e6,
            v.len()
        );
    };
    println!("2. on a tokio worker, local driver, traces of 50 events:");
    show("release", release);
    show("mark_complete with auto_archive", archive);
}

fn replay() {
    let engine = Engine::builder().memory().build().unwrap();
    let t = engine.create(TraceOptions::new()).unwrap();
    let root = t.add("root", NodeOptions::new()).unwrap();
    for i in 0..3_000 {
        root.info(format!("{i}"));
    }
    t.mark_complete().unwrap();
    let history = t.events(tracepool::Cursor::Seq(0)).unwrap().len();
    let mut sub = t.subscribe().unwrap();
    let (mut events, mut lagged, mut first) = (0, Vec::new(), None);
    while let Some(d) = sub.blocking_recv() {
        match d {
            Delivery::Event(e) => {
                first.get_or_insert(e.seq);
                events += 1;
            }
            Delivery::Lagged { missed } => lagged.push(missed),
        }
    }
    println!(
        "3. a trace of {history} events, a fresh subscribe(): {events} events from seq {}, Lagged {:?}",
        first.unwrap_or(0),
        lagged
    );
}

fn bounds() {
    let engine = Engine::builder()
        .history_limit(16)
        .memory()
        .build()
        .unwrap();
    let t = engine.create(TraceOptions::new()).unwrap();
    let root = t.add("root", NodeOptions::new()).unwrap();
    let line = "x".repeat(200);
    let before = rss_kib();
    for _ in 0..500_000 {
        root.info(&line);
    }
    let after = rss_kib();
    println!(
        "4. 500,000 log lines of 200 B, history_limit(16): resident memory +{:.1} MiB; {} lines in memory",
        (after.saturating_sub(before)) as f64 / 1024.0,
        t.logs(None).unwrap().len()
    );
    let t2 = engine.create(TraceOptions::new()).unwrap();
    let mut subs = Vec::new();
    let mut refused = None;
    for _ in 0..100_000 {
        match t2.subscribe() {
            Ok(s) => subs.push(s),
            Err(e) => {
                refused = Some(e.to_string());
                break;
            }
        }
    }
    println!(
        "   subscriptions on one trace: {} accepted{}",
        subs.len(),
        refused.map_or(String::new(), |e| format!(", then: {e}"))
    );
}

fn main() {
    dropped_handles();
    release_latency();
    replay();
    bounds();
}
