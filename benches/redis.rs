//! The Redis driver (group `storage/redis`), against a `redis-server` the
//! bench starts on a free 127.0.0.1 port (it needs `redis-server` on the
//! `PATH`; nothing starts unless one of these benches is selected):
//!
//! * `pipelined_per_flush`: a trace of 200 events (a node and its log
//!   lines) persisted through the engine: every queued event, log line and
//!   document of a flush in one Lua script, one round trip;
//! * `one_command_per_event`: the same 200 event lines written with one
//!   `XADD` per event, each awaited (the reference's way of writing an
//!   event at a time);
//! * `follow_latency`: one event emitted on engine A until engine B's
//!   follower has it (A's worker flush interval, 5 ms by default, included:
//!   it dominates); `follow_latency_flush_1ms` with A flushing every 1 ms.
//!   Each also prints the p50 and p99 of 2,000 such latencies.
//!
//! Run: `cargo bench --bench redis`.

#[path = "../tests/redis_support/mod.rs"]
mod redis_support;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tracepool::{Cursor, Delivery, Engine, NodeOptions, TraceOptions};

use redis_support::RedisServer;

const EVENTS: u64 = 200;

/// The server, started when a bench first needs it.
fn server() -> &'static RedisServer {
    static S: OnceLock<RedisServer> = OnceLock::new();
    S.get_or_init(RedisServer::start)
}

fn engine(prefix: &str, flush_interval: Duration) -> Engine {
    Engine::builder()
        .redis(server().url())
        .redis_prefix(prefix)
        .capacity(8)
        .workers(1)
        .flush_interval(flush_interval)
        .build()
        .expect("engine on redis")
}

/// A trace of `EVENTS` events, released and flushed (every event in Redis
/// when this returns); returns its id.
fn run_trace(e: &Engine) -> String {
    let t = e.create(TraceOptions::new()).unwrap();
    let node = t.add(1, NodeOptions::new().label("step")).unwrap();
    for _ in 0..EVENTS - 2 {
        node.info("working");
    }
    let id = t.id().to_owned();
    drop(node);
    t.release().unwrap();
    e.flush_blocking().unwrap();
    id
}

fn sample_lines() -> Vec<Vec<u8>> {
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
    t.events(Cursor::Seq(0))
        .unwrap()
        .iter()
        .map(|ev| ev.to_json().into_bytes())
        .collect()
}

/// Engine A writes a trace, engine B follows it.
struct Follow {
    a: Engine,
    _b: Engine,
    trace: tracepool::Trace,
    node: tracepool::Node,
    sub: tracepool::Subscription,
}

impl Follow {
    /// A's workers flush every `flush` (the engine's default is 5 ms).
    fn start(flush: Duration) -> Follow {
        let prefix = redis_support::unique_prefix();
        let a = engine(&prefix, flush);
        let b = engine(&prefix, flush);
        let trace = a.create(TraceOptions::new()).unwrap();
        let node = trace.add(1, NodeOptions::new().label("step")).unwrap();
        a.flush_blocking().unwrap();
        let mut sub = b.follow(trace.id()).unwrap();
        for _ in 0..2 {
            sub.blocking_recv().unwrap();
        }
        let mut f = Follow {
            a,
            _b: b,
            trace,
            node,
            sub,
        };
        let mut samples: Vec<Duration> = (0..2000).map(|_| f.one()).collect();
        samples.sort();
        let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
        eprintln!(
            "storage/redis/follow_latency: emit on A -> delivery on B over {} events: \
             p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (A's flush interval {:?})",
            samples.len(),
            pct(0.50).as_secs_f64() * 1e3,
            pct(0.99).as_secs_f64() * 1e3,
            samples.last().unwrap().as_secs_f64() * 1e3,
            flush
        );
        f
    }

    /// One event emitted on A until B has it.
    fn one(&mut self) -> Duration {
        let start = Instant::now();
        self.node.info("ping");
        match self.sub.blocking_recv() {
            Some(Delivery::Event(_)) => start.elapsed(),
            other => panic!("follow ended: {other:?}"),
        }
    }

    fn finish(self) {
        let Follow {
            a,
            trace,
            node,
            sub,
            ..
        } = self;
        drop((sub, node));
        let id = trace.id().to_owned();
        trace.release().unwrap();
        a.flush_blocking().unwrap();
        a.remove(&id).unwrap();
    }
}

fn storage_redis(c: &mut Criterion) {
    let mut g = c.benchmark_group("storage/redis");
    g.throughput(Throughput::Elements(EVENTS));
    g.measurement_time(Duration::from_secs(5));
    // Workers flush only when told (release + flush): one script per trace.
    let mut engine_once: Option<Engine> = None;
    g.bench_function("pipelined_per_flush", |b| {
        let e = engine_once.get_or_insert_with(|| {
            engine(&redis_support::unique_prefix(), Duration::from_secs(3600))
        });
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let id = run_trace(e);
                total += start.elapsed();
                e.remove(&id).unwrap();
            }
            total
        })
    });
    if let Some(e) = engine_once.take() {
        e.shutdown().unwrap();
    }
    let lines = sample_lines();
    let mut con: Option<(redis::Connection, String)> = None;
    g.bench_function("one_command_per_event", |b| {
        let (con, key) = con.get_or_insert_with(|| {
            let key = format!("{}events", redis_support::unique_prefix());
            (server().client(), key)
        });
        let (con, key) = (&mut *con, &*key);
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                for (i, line) in lines.iter().enumerate() {
                    let _: String = redis::cmd("XADD")
                        .arg(key)
                        .arg(format!("{}-0", i + 1))
                        .arg("e")
                        .arg(line.as_slice())
                        .query(con)
                        .unwrap();
                }
                total += start.elapsed();
                let _: i64 = redis::cmd("DEL").arg(key).query(con).unwrap();
            }
            total
        })
    });
    g.throughput(Throughput::Elements(1));
    for (name, flush) in [
        ("follow_latency", Duration::from_millis(5)),
        ("follow_latency_flush_1ms", Duration::from_millis(1)),
    ] {
        let mut follow: Option<Follow> = None;
        g.bench_function(name, |b| {
            let f = follow.get_or_insert_with(|| Follow::start(flush));
            b.iter_custom(|iters| (0..iters).map(|_| f.one()).sum())
        });
        if let Some(f) = follow.take() {
            f.finish();
        }
    }
    g.finish();
}

criterion_group!(benches, storage_redis);
criterion_main!(benches);
