//! Persistence benchmarks (one group per comparison, run side by side):
//!
//! * `persist_local`: a trace persisted through tracepool's local driver
//!   (write-behind, one append per file per batch, documents replaced
//!   atomically) against the reference's way of writing the same trace: for
//!   every event, open-append-close of `updates.jsonl`, plus open-append-close
//!   of the node's log file for a log line and a truncate-and-write of the
//!   node's document for a node start or completion;
//! * `persist_store`: the same through the store driver (one key per event,
//!   one atomic batch per flush) against the reference's store scheme (the
//!   whole `updates` array read, extended and rewritten for every event),
//!   both on fjall;
//! * `release_pending`: latency of `release` with N events still queued;
//! * `storage`: the Go package's simple loop (create, one node completed,
//!   release, then remove), every trace persisted before it is removed, in
//!   rounds of [`ROUND`] traces (create and release them, `flush`, remove
//!   them), through tracepool's local, store and memory drivers, next to
//!   `storage/floor`: only the file-system work the reference layout needs
//!   for the same trace, done directly with `std::fs` on the caller's thread
//!   (the trace's directory and `nodes/`, `updates.jsonl` written once, the
//!   node document and `trace_info.json` each written to a temporary file
//!   and renamed into place, then the three files and two directories
//!   removed) with the very bytes tracepool writes. No implementation of
//!   that layout does less; `storage/local` over `storage/floor` is the
//!   local driver's overhead.
//!
//! Run: `cargo bench --bench storage` (set `TRACEPOOL_BENCH_DIR` to put the
//! files of the `storage` group elsewhere, e.g. on a tmpfs: `/dev/shm`).

use std::io::Write;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

#[path = "support/floor.rs"]
mod floor;
use floor::{ROUND, bench_dir, floor_round, simple_round, simple_trace_files};
use tracepool::{Cursor, Engine, NodeOptions, TraceOptions};

const EVENTS: u64 = 200;

fn engine_local(dir: &std::path::Path) -> Engine {
    Engine::builder()
        .capacity(4)
        .workers(1)
        .local(dir)
        .build()
        .unwrap()
}

fn engine_store(dir: &std::path::Path) -> Engine {
    Engine::builder()
        .capacity(4)
        .workers(1)
        .store(dir.join("db"))
        .build()
        .unwrap()
}

/// One trace of `EVENTS` events (a node and log lines), released: every
/// event persisted when `release` returns.
fn run_trace(e: &Engine) {
    let t = e.create(TraceOptions::new()).unwrap();
    t.add(1, NodeOptions::new().label("step")).unwrap();
    for _ in 0..EVENTS - 2 {
        t.info("working");
    }
    t.release().unwrap();
}

/// The event lines of such a trace, to write the reference's way.
fn sample_events() -> Vec<tracepool::Event> {
    let e = Engine::builder()
        .capacity(1)
        .workers(1)
        .memory()
        .build()
        .unwrap();
    let t = e.create(TraceOptions::new()).unwrap();
    t.add(1, NodeOptions::new().label("step")).unwrap();
    for _ in 0..EVENTS - 2 {
        t.info("working");
    }
    t.events(Cursor::Seq(0)).unwrap()
}

/// The event lines of such a trace, to write the reference's way.
fn sample_lines() -> Vec<Vec<u8>> {
    sample_events()
        .iter()
        .map(|ev| ev.to_json().into_bytes())
        .collect()
}

/// One file operation of the reference's local driver.
enum RefOp {
    /// Open with O_APPEND|O_CREATE, write a line, close.
    Append(String, Vec<u8>),
    /// Truncate and write a whole document.
    Write(String, Vec<u8>),
}

/// What the reference's local driver does for the sample trace, in order:
/// `trace_info.json`, then per event an append to `updates.jsonl` plus the
/// node document (node start / completion) or the node's log line.
fn reference_ops() -> Vec<RefOp> {
    let mut ops = vec![RefOp::Write(
        "trace_info.json".into(),
        br#"{"id":"t","driver":"local","status":"pending","created_at":1,"updated_at":1,"archived":false}"#
            .to_vec(),
    )];
    for ev in sample_events() {
        ops.push(RefOp::Append(
            "updates.jsonl".into(),
            ev.to_json().into_bytes(),
        ));
        let data = ev.data();
        match ev.kind {
            tracepool::EventKind::LogAdded => ops.push(RefOp::Append(
                format!("logs/{}.jsonl", ev.node_id()),
                serde_json::to_vec(&data).unwrap(),
            )),
            tracepool::EventKind::NodeStart | tracepool::EventKind::NodeComplete => {
                ops.push(RefOp::Write(
                    format!("nodes/{}.json", ev.node_id()),
                    serde_json::to_vec_pretty(&data).unwrap(),
                ))
            }
            _ => {}
        }
    }
    ops
}

fn persist_local(c: &mut Criterion) {
    let mut g = c.benchmark_group("persist_local");
    g.throughput(Throughput::Elements(EVENTS));
    g.measurement_time(Duration::from_secs(5));
    let dir = tempfile::tempdir().unwrap();
    let e = engine_local(dir.path());
    g.bench_function("tracepool_batched", |b| b.iter(|| run_trace(&e)));
    let ops = reference_ops();
    let ref_dir = tempfile::tempdir().unwrap();
    let mut n = 0u64;
    g.bench_function("reference_open_append_close", |b| {
        b.iter(|| {
            n += 1;
            let d = ref_dir.path().join(format!("t{n}"));
            for sub in ["nodes", "logs", "spaces"] {
                std::fs::create_dir_all(d.join(sub)).unwrap();
            }
            for op in &ops {
                match op {
                    RefOp::Append(rel, line) => {
                        let mut f = std::fs::OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(d.join(rel))
                            .unwrap();
                        f.write_all(line).unwrap();
                        f.write_all(b"\n").unwrap();
                    }
                    RefOp::Write(rel, doc) => std::fs::write(d.join(rel), doc).unwrap(),
                }
            }
        })
    });
    g.finish();
    e.shutdown().unwrap();
}

fn persist_store(c: &mut Criterion) {
    let mut g = c.benchmark_group("persist_store");
    g.throughput(Throughput::Elements(EVENTS));
    g.measurement_time(Duration::from_secs(5));
    let dir = tempfile::tempdir().unwrap();
    let e = engine_store(dir.path());
    g.bench_function("tracepool_key_per_event", |b| b.iter(|| run_trace(&e)));
    let lines = sample_lines();
    let ref_dir = tempfile::tempdir().unwrap();
    let db = fjall::Database::builder(ref_dir.path()).open().unwrap();
    let kv = db
        .keyspace("kv", fjall::KeyspaceCreateOptions::default)
        .unwrap();
    let mut n = 0u64;
    g.bench_function("reference_rewritten_array", |b| {
        b.iter(|| {
            n += 1;
            let key = format!("__trace:t{n}:updates");
            for line in &lines {
                let mut all: Vec<serde_json::Value> = match kv.get(&key).unwrap() {
                    Some(v) => serde_json::from_slice(&v).unwrap(),
                    None => Vec::new(),
                };
                all.push(serde_json::from_slice(line).unwrap());
                kv.insert(&key, serde_json::to_vec(&all).unwrap()).unwrap();
                db.persist(fjall::PersistMode::Buffer).unwrap();
            }
        })
    });
    g.finish();
    e.shutdown().unwrap();
}

fn release_pending(c: &mut Criterion) {
    let mut g = c.benchmark_group("release_pending");
    g.measurement_time(Duration::from_secs(5));
    for (name, local) in [("local", true), ("store", false)] {
        let dir = tempfile::tempdir().unwrap();
        // Workers never flush on their own here: everything is still queued at release.
        let b = Engine::builder()
            .capacity(4)
            .workers(1)
            .flush_interval(Duration::from_secs(3600));
        let e = if local {
            b.local(dir.path()).build().unwrap()
        } else {
            b.store(dir.path().join("db")).build().unwrap()
        };
        for pending in [10u64, 100, 1000] {
            g.bench_with_input(
                BenchmarkId::new(name, pending),
                &pending,
                |bch, &pending| {
                    bch.iter_custom(|iters| {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            let t = e.create(TraceOptions::new()).unwrap();
                            t.add(1, NodeOptions::new()).unwrap();
                            for _ in 0..pending.saturating_sub(2) {
                                t.info("queued");
                            }
                            let start = Instant::now();
                            t.release().unwrap();
                            total += start.elapsed();
                        }
                        total
                    })
                },
            );
        }
        e.shutdown().unwrap();
    }
    g.finish();
}

fn storage(c: &mut Criterion) {
    let mut g = c.benchmark_group("storage");
    g.throughput(Throughput::Elements(ROUND));
    g.measurement_time(Duration::from_secs(5));
    let files = simple_trace_files();
    let floor_dir = bench_dir();
    let mut n = 0u64;
    g.bench_function("floor", |b| {
        b.iter(|| floor_round(floor_dir.path(), &files, &mut n))
    });
    let mut ids = Vec::with_capacity(ROUND as usize);
    for name in ["local", "store", "memory"] {
        let dir = bench_dir();
        let builder = Engine::builder().capacity(2 * ROUND as usize).workers(1);
        let e = match name {
            "local" => builder.local(dir.path()),
            "store" => builder.store(dir.path().join("db")),
            _ => builder.memory(),
        }
        .build()
        .unwrap();
        g.bench_function(name, |b| b.iter(|| simple_round(&e, &mut ids)));
        e.shutdown().unwrap();
    }
    g.finish();
}

criterion_group!(
    benches,
    storage,
    persist_local,
    persist_store,
    release_pending
);
criterion_main!(benches);
