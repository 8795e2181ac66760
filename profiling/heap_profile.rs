//! dhat heap profile of one scenario on tracepool or on the baseline port of
//! the reference design.
//!
//! ```text
//! cargo run --release --example heap_profile -- --scenario sequential --iters 10000 --engine tracepool
//! ```
//!
//! Scenarios: `simple` (add + complete), the five reference scenarios
//! (`sequential`, `parallel`, `space`, `logging`, `complex`), `subscription`
//! (simple + a subscriber drained to the end) and `space_ops` (a space,
//! 10 sets, 10 gets). Each iteration is create → scenario → mark complete →
//! release. Branches run inline. After `--warmup` iterations (default: 64)
//! the heap statistics are taken, then `--iters` more iterations run, then
//! (for both engines alike) the program sleeps 200 ms so asynchronous
//! teardown can finish, and takes them again.
//!
//! Prints one line per run (with `--tsv`, tab-separated for `table.sh`) and
//! writes `dhat-heap.json` (open it with DHAT's viewer, `dh_view.html`).

use std::time::Duration;

use dhat::HeapStats;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

#[path = "../benches/support/scenarios.rs"]
#[allow(unreachable_pub)]
mod scenarios;

#[path = "../benches/support/baseline.rs"]
mod baseline;

use scenarios::{Inline, Scenario, SubscribeEngine};

#[derive(Clone, Copy)]
enum Work {
    Simple,
    Scenario(Scenario),
    Subscription,
    SpaceOps,
}

impl Work {
    fn parse(s: &str) -> Option<Work> {
        match s {
            "simple" => Some(Work::Simple),
            "subscription" => Some(Work::Subscription),
            "space_ops" => Some(Work::SpaceOps),
            _ => Scenario::parse(s).map(Work::Scenario),
        }
    }
}

fn iteration<E: SubscribeEngine>(e: &E, w: Work) {
    let t = e.create();
    match w {
        Work::Simple => scenarios::simple(e, &t),
        Work::Scenario(s) => scenarios::run(e, &t, s, &Inline),
        Work::SpaceOps => scenarios::space_ops(e, &t),
        Work::Subscription => {
            let mut sub = e.subscribe(&t);
            scenarios::simple(e, &t);
            e.mark_complete(&t);
            std::hint::black_box(e.drain(&mut sub, Duration::from_millis(10)));
        }
    }
    e.mark_complete(&t);
    e.release(std::hint::black_box(t));
}

struct Report {
    bytes: f64,
    blocks: f64,
    peak: usize,
    retained: f64,
}

fn profile<E: SubscribeEngine>(e: &E, w: Work, warmup: usize, iters: usize) -> Report {
    for _ in 0..warmup {
        iteration(e, w);
    }
    std::thread::sleep(Duration::from_millis(200));
    let a = HeapStats::get();
    for _ in 0..iters {
        iteration(e, w);
    }
    std::thread::sleep(Duration::from_millis(200));
    let b = HeapStats::get();
    let n = iters.max(1) as f64;
    Report {
        bytes: (b.total_bytes - a.total_bytes) as f64 / n,
        blocks: (b.total_blocks - a.total_blocks) as f64 / n,
        peak: b.max_bytes,
        retained: (b.curr_bytes as f64 - a.curr_bytes as f64) / n,
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: heap_profile --scenario simple|sequential|parallel|space|logging|complex|subscription|space_ops \
         [--iters N] [--warmup N] [--engine tracepool|baseline] [--tsv]"
    );
    std::process::exit(2)
}

fn main() {
    let mut work = Work::Simple;
    let mut name = "simple".to_owned();
    let mut iters = 10_000usize;
    let mut warmup = 64usize;
    let mut engine = "tracepool".to_owned();
    let mut tsv = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--scenario" => {
                name = args.next().unwrap_or_else(|| usage());
                work = Work::parse(&name).unwrap_or_else(|| usage());
            }
            "--iters" => {
                iters = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| usage())
            }
            "--warmup" => {
                warmup = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| usage())
            }
            "--engine" => engine = args.next().unwrap_or_else(|| usage()),
            "--tsv" => tsv = true,
            _ => usage(),
        }
    }

    let profiler = dhat::Profiler::builder()
        .file_name("dhat-heap.json")
        .build();
    let r = match engine.as_str() {
        "tracepool" => {
            let e = tracepool::Engine::builder()
                .capacity(64)
                .workers(2)
                .memory()
                .build()
                .expect("engine");
            profile(&e, work, warmup, iters)
        }
        "baseline" => {
            let e = baseline::Baseline::new(2);
            profile(&e, work, warmup, iters)
        }
        _ => usage(),
    };
    if tsv {
        println!(
            "{name}\t{engine}\t{iters}\t{:.1}\t{:.2}\t{}\t{:.1}",
            r.bytes, r.blocks, r.peak, r.retained
        );
    } else {
        println!(
            "{name} on {engine}, {iters} iterations after {warmup} warm-up: \
             {:.1} bytes/iter and {:.2} blocks/iter allocated, peak live {} bytes, \
             retained growth {:.1} bytes/iter",
            r.bytes, r.blocks, r.peak, r.retained
        );
    }
    drop(profiler);
}
