//! The `tracepool` command line.
//!
//! * `tracepool` (or `tracepool run`): the main job — the reference's five
//!   benchmark scenarios over many traces, each with a live subscriber that
//!   checks it saw every event in order; prints progress and a summary.
//! * `tracepool serve [--addr 127.0.0.1:7070] [--demo]`: the HTTP live view
//!   (feature `http`).

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tracepool::{Delivery, Engine, EventKind, Subscription};

#[path = "../benches/support/scenarios.rs"]
#[allow(unreachable_pub)]
mod scenarios;

use scenarios::{Scenario, ScenarioEngine, ThreadPool};

const USAGE: &str = "\
usage: tracepool [run] [--traces N] [--concurrency N] [--capacity N] [--workers N]
                       [--memory | --dir DIR] [--keep-every N]
       tracepool serve [--addr HOST:PORT] [--demo]

run     the main job: the five reference scenarios over N traces (default 20000),
        each with a live subscriber that checks every event arrives in order.
        Runs on the default driver (local disk under ./traces; --dir DIR elsewhere,
        --memory for the in-memory driver). Like the reference's benchmark, each
        trace is removed after release, except every Nth (--keep-every, default
        1000), which stays on disk; the next run opens one of those and checks it.
serve   the HTTP live view and web viewer (default address 127.0.0.1:7070);
        --demo keeps generating traces to watch";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (cmd, rest) = match args.first().map(String::as_str) {
        Some("run") => ("run", &args[1..]),
        Some("serve") => ("serve", &args[1..]),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => ("run", &args[..]),
    };
    let result = match cmd {
        "serve" => serve(rest),
        _ => RunOptions::parse(rest).and_then(run),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tracepool: {e}");
            ExitCode::from(2)
        }
    }
}

fn value_of<'a>(args: &'a [String], i: &mut usize, flag: &str) -> Result<&'a str, String> {
    *i += 1;
    args.get(*i)
        .map(String::as_str)
        .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
}

fn number(s: &str, flag: &str) -> Result<usize, String> {
    s.replace('_', "")
        .parse::<usize>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{flag}: expected a positive number, got {s:?}"))
}

#[cfg(feature = "http")]
fn serve(args: &[String]) -> Result<ExitCode, String> {
    let mut addr: std::net::SocketAddr = "127.0.0.1:7070".parse().expect("valid default");
    let mut demo = false;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--addr" => {
                let v = value_of(args, &mut i, "--addr")?;
                addr = v.parse().map_err(|e| format!("--addr {v:?}: {e}"))?;
            }
            "--demo" => demo = true,
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
        i += 1;
    }
    let engine = Engine::builder().build().map_err(|e| e.to_string())?;
    tracepool::http::serve_blocking(engine, addr, demo).map_err(|e| e.to_string())?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(not(feature = "http"))]
fn serve(_args: &[String]) -> Result<ExitCode, String> {
    Err("this build has no HTTP support (enable the `http` feature)".into())
}

struct RunOptions {
    traces: usize,
    concurrency: usize,
    capacity: usize,
    workers: Option<usize>,
    memory: bool,
    dir: Option<String>,
    keep_every: usize,
}

impl RunOptions {
    fn parse(args: &[String]) -> Result<RunOptions, String> {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let mut o = RunOptions {
            traces: 20_000,
            concurrency: cores,
            capacity: 1024,
            workers: None,
            memory: false,
            dir: None,
            keep_every: 1000,
        };
        let mut i = 0;
        while i < args.len() {
            let flag = args[i].as_str();
            match flag {
                "--traces" => o.traces = number(value_of(args, &mut i, flag)?, flag)?,
                "--concurrency" => o.concurrency = number(value_of(args, &mut i, flag)?, flag)?,
                "--capacity" => o.capacity = number(value_of(args, &mut i, flag)?, flag)?,
                "--workers" => o.workers = Some(number(value_of(args, &mut i, flag)?, flag)?),
                "--memory" => o.memory = true,
                "--dir" => o.dir = Some(value_of(args, &mut i, flag)?.to_owned()),
                "--keep-every" => o.keep_every = number(value_of(args, &mut i, flag)?, flag)?,
                other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
            }
            i += 1;
        }
        Ok(o)
    }
}

/// What the live subscribers found.
#[derive(Default)]
struct Checks {
    delivered: AtomicU64,
    order_violations: AtomicU64,
    lagged: AtomicU64,
    missing_complete: AtomicU64,
    outstanding: AtomicUsize,
    checked: AtomicU64,
}

/// Follows one trace's events: seqs must be 1, 2, 3, ... and the stream must
/// end right after `complete`.
async fn check(mut sub: Subscription, checks: Arc<Checks>) {
    let mut expect = 1u64;
    let mut delivered = 0u64;
    let mut complete = false;
    while let Some(d) = sub.recv().await {
        match d {
            Delivery::Event(ev) => {
                if ev.seq != expect || complete {
                    checks.order_violations.fetch_add(1, Ordering::Relaxed);
                }
                expect = ev.seq + 1;
                delivered += 1;
                complete |= ev.kind == EventKind::Complete;
            }
            Delivery::Lagged { missed } => {
                checks.lagged.fetch_add(missed, Ordering::Relaxed);
                expect += missed;
            }
        }
    }
    if !complete {
        checks.missing_complete.fetch_add(1, Ordering::Relaxed);
    }
    checks.delivered.fetch_add(delivered, Ordering::Relaxed);
    checks.checked.fetch_add(1, Ordering::Relaxed);
    checks.outstanding.fetch_sub(1, Ordering::AcqRel);
}

/// Opens a trace kept by an earlier run and checks it is whole: nodes, a
/// gap-free event history ending with `complete`.
fn reopen_previous(engine: &Engine, id: &str) -> Result<(), String> {
    let t = engine
        .open(id)
        .map_err(|e| format!("cannot open trace {id} from a previous run: {e}"))?;
    let nodes = t.all_nodes().map_err(|e| e.to_string())?;
    let events = t
        .events(tracepool::Cursor::Seq(0))
        .map_err(|e| e.to_string())?;
    let gap_free = events
        .iter()
        .enumerate()
        .all(|(i, e)| e.seq == i as u64 + 1);
    let complete = events.last().is_some_and(|e| e.kind == EventKind::Complete);
    println!(
        "reopened trace {id} from a previous run: {} nodes, {} events (seq 1..{}, {}), status {}",
        nodes.len(),
        events.len(),
        events.len(),
        if gap_free && complete {
            "gap-free, ends with complete"
        } else {
            "NOT WHOLE"
        },
        t.status().as_str()
    );
    t.release().map_err(|e| e.to_string())?;
    if gap_free && complete && !nodes.is_empty() {
        Ok(())
    } else {
        Err(format!("trace {id} from a previous run is not whole"))
    }
}

fn run(o: RunOptions) -> Result<ExitCode, String> {
    let mut builder = Engine::builder().capacity(o.capacity);
    if let Some(w) = o.workers {
        builder = builder.workers(w);
    }
    if o.memory {
        builder = builder.memory();
    } else if let Some(dir) = &o.dir {
        builder = builder.local(dir);
    }
    let engine = builder.build().map_err(|e| e.to_string())?;
    let previous = engine.list_stored().map_err(|e| e.to_string())?;
    let before = engine.stats();
    println!(
        "tracepool main job: {} traces over {} scenarios, concurrency {}, driver {}, {} slots, {} workers",
        o.traces,
        Scenario::ALL.len(),
        o.concurrency,
        engine.driver_name(),
        before.capacity,
        before.workers
    );
    if let Some(id) = previous.last() {
        reopen_previous(&engine, id)?;
    }
    // The application's side: a small runtime for the subscriber checks and
    // a few threads that complete parallel branches.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("subscriber")
        .build()
        .map_err(|e| e.to_string())?;
    let branches = Arc::new(ThreadPool::new(2));
    let checks = Arc::new(Checks::default());
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();

    let workers: Vec<_> = (0..o.concurrency)
        .map(|_| {
            let (engine, branches, checks, next, done) = (
                engine.clone(),
                branches.clone(),
                checks.clone(),
                next.clone(),
                done.clone(),
            );
            let handle = rt.handle().clone();
            let total = o.traces;
            let keep_every = o.keep_every;
            std::thread::spawn(move || -> Result<(), String> {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        return Ok(());
                    }
                    let trace = ScenarioEngine::create(&engine);
                    let sub = trace.subscribe().map_err(|e| e.to_string())?;
                    checks.outstanding.fetch_add(1, Ordering::AcqRel);
                    handle.spawn(check(sub, checks.clone()));
                    scenarios::run(&engine, &trace, Scenario::ALL[i % 5], &*branches);
                    ScenarioEngine::mark_complete(&engine, &trace);
                    let id = trace.id().to_owned();
                    ScenarioEngine::release(&engine, trace);
                    if i % keep_every != 0 {
                        // NotFound: the driver keeps nothing (in-memory).
                        match engine.remove(&id) {
                            Ok(()) | Err(tracepool::Error::NotFound) => {}
                            Err(e) => return Err(e.to_string()),
                        }
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    // Progress, once a second.
    let mut last = (Instant::now(), 0usize);
    while done.load(Ordering::Relaxed) < o.traces && !workers.iter().all(|w| w.is_finished()) {
        std::thread::sleep(Duration::from_millis(100));
        if last.0.elapsed() >= Duration::from_secs(1) {
            let n = done.load(Ordering::Relaxed);
            let rate = (n - last.1) as f64 / last.0.elapsed().as_secs_f64();
            eprintln!(
                "  [{:>5.1}s] {:>9} / {} traces  {:>9.0} traces/s  {} slots in use",
                started.elapsed().as_secs_f64(),
                n,
                o.traces,
                rate,
                engine.stats().in_use
            );
            last = (Instant::now(), n);
        }
    }
    for w in workers {
        w.join()
            .map_err(|_| "a trace thread panicked".to_string())??;
    }
    let elapsed = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(30);
    while checks.outstanding.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let unfinished = checks.outstanding.load(Ordering::Acquire);
    // Everything released is handed to the driver (drained slots are free).
    let flushed = engine.flush_blocking();
    let after = engine.stats();
    let traces = done.load(Ordering::Relaxed);
    let secs = elapsed.as_secs_f64();
    let delivered = checks.delivered.load(Ordering::Relaxed);
    let violations = checks.order_violations.load(Ordering::Relaxed);
    let lagged = checks.lagged.load(Ordering::Relaxed);
    let missing = checks.missing_complete.load(Ordering::Relaxed);
    println!("summary:");
    println!(
        "  traces            {traces} in {secs:.2} s = {:.0} traces/s",
        traces as f64 / secs
    );
    println!(
        "  events            {} emitted = {:.0} events/s; {} persisted by the driver, {} discarded (removed before written)",
        after.events_emitted,
        after.events_emitted as f64 / secs,
        after.events_persisted,
        after.events_discarded
    );
    println!(
        "  storage           {} events persisted, {} bytes written ({:.1} MB/s), {} persist errors; {} traces kept in storage",
        after.events_persisted,
        after.bytes_written,
        after.bytes_written as f64 / secs / 1e6,
        after.persist_errors,
        engine.list_stored().map(|v| v.len()).unwrap_or(0)
    );
    println!(
        "  delivered         {delivered} events to {} live subscribers",
        checks.checked.load(Ordering::Relaxed)
    );
    println!(
        "  order violations  {violations}   lagged {lagged}   dropped {}   missing complete {missing}   unfinished subscribers {unfinished}",
        after.events_dropped
    );
    println!(
        "  slots             capacity {}, peak in use {}, in use now {}, draining {}, grown {}; auto-released {}",
        after.capacity,
        after.peak_in_use,
        after.in_use,
        after.draining,
        after.grown,
        after.auto_released
    );
    if let Err(e) = &flushed {
        println!("  flush             {e}");
    }
    println!(
        "  live tasks        before {}, after {} (workers {})",
        before.live_tasks, after.live_tasks, after.workers
    );
    let persists = engine.driver_name() != "memory";
    let ok = violations == 0
        && flushed.is_ok()
        && after.events_dropped == 0
        && after.persist_errors == 0
        && after.draining == 0
        && (!persists || after.events_persisted + after.events_discarded == after.events_emitted)
        && missing == 0
        && unfinished == 0
        && delivered == after.events_emitted;
    engine.shutdown().map_err(|e| e.to_string())?;
    if ok {
        println!("  result            ok: every subscriber saw every event of its trace, in order");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("  result            FAILED");
        Ok(ExitCode::FAILURE)
    }
}
