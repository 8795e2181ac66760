//! Two OS processes on one real `redis-server`: engine A runs in a child
//! process (this test binary, re-run in child mode and driven through its
//! stdin), engine B in the test process.
//!
//! * B follows A's trace and B's HTTP view streams it, each event exactly
//!   once, in order, to its `complete`;
//! * `kill -9` of A in the middle of a trace: B gets `Leased` until the
//!   lease expires, then opens the trace with every event A flushed and
//!   continues the numbering;
//! * A stalls (SIGSTOP) past its lease, B takes the trace over and writes;
//!   when A wakes (SIGCONT) its next write is refused, counted in
//!   `leases_lost`, and its operations give `Leased`: the stream never
//!   interleaves the two writers.
//!
//! Run with `--nocapture` to see what happened (each test prints a few
//! lines).
#![cfg(all(feature = "redis", feature = "http"))]

mod http_support;
mod redis_support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tracepool::{Cursor, Delivery, Engine, Error, EventKind, NodeOptions, TraceOptions};

use redis_support::{builder_on, shared, unique_prefix};

const CHILD: &str = "TRACEPOOL_REDIS_CHILD";
const LEASE_MS: u64 = 900;

/// Child mode: engine A, driven by commands on stdin, answering on stdout
/// with lines starting with `A `. Does nothing unless started by a test.
#[test]
fn child_engine() {
    let Ok(spec) = std::env::var(CHILD) else {
        return;
    };
    let mut parts = spec.split(' ');
    let (url, prefix, id) = (
        parts.next().unwrap().to_owned(),
        parts.next().unwrap().to_owned(),
        parts.next().unwrap().to_owned(),
    );
    let engine = Engine::builder()
        .redis(url)
        .redis_prefix(prefix)
        .lease_ttl(Duration::from_millis(LEASE_MS))
        .capacity(4)
        .workers(1)
        .drain_timeout(Duration::from_secs(3))
        .build()
        .expect("child engine");
    let trace = engine.create(TraceOptions::new().id(&id)).expect("create");
    let node = trace
        .add("work", NodeOptions::new().label("A's step"))
        .expect("add");
    let last = |t: &tracepool::Trace| {
        t.events(Cursor::Seq(0))
            .map_or(0, |e| e.last().map_or(0, |e| e.seq))
    };
    let say = |s: String| {
        let mut out = std::io::stdout().lock();
        // On a line of its own: libtest may have started one ("test ... ").
        let _ = writeln!(out, "\n@@A {s}");
        let _ = out.flush();
    };
    say(format!("ready pid={}", std::process::id()));
    for line in std::io::stdin().lock().lines() {
        let line = line.unwrap_or_default();
        let mut words = line.split_whitespace();
        match words.next() {
            Some("emit") => {
                let n: usize = words.next().and_then(|w| w.parse().ok()).unwrap_or(1);
                for i in 0..n {
                    node.info(format!("a {i}"));
                }
                say(format!("emitted {}", last(&trace)));
            }
            Some("flush") => match engine.flush_blocking() {
                Ok(()) => say(format!("flushed {}", last(&trace))),
                Err(e) => say(format!("flush-error {e}")),
            },
            Some("complete") => {
                node.complete(None).expect("complete node");
                trace.mark_complete().expect("mark_complete");
                say(format!("completed {}", last(&trace)));
            }
            Some("op") => match trace.add("more", NodeOptions::new()) {
                Ok(_) => say("op ok".into()),
                Err(Error::Leased { owner, .. }) => say(format!("op leased owner={owner:?}")),
                Err(e) => say(format!("op error {e}")),
            },
            Some("stats") => {
                let s = engine.stats();
                say(format!(
                    "stats leases_lost={} events_dropped={} persist_errors={}",
                    s.leases_lost, s.events_dropped, s.persist_errors
                ));
            }
            _ => break,
        }
    }
}

/// Engine A in a child process.
struct ChildA {
    child: Child,
    stdin: ChildStdin,
    /// A's answers (lines starting with `@@A `), read by a thread.
    answers: mpsc::Receiver<String>,
    pid: u32,
}

impl ChildA {
    fn start(prefix: &str, id: &str) -> ChildA {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["child_engine", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD, format!("{} {prefix} {id}", shared().url()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the child engine");
        let stdin = child.stdin.take().unwrap();
        let stdout: ChildStdout = child.stdout.take().unwrap();
        let (tx, answers) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if let Some(rest) = line.strip_prefix("@@A ")
                    && tx.send(rest.to_owned()).is_err()
                {
                    return;
                }
            }
        });
        let mut a = ChildA {
            child,
            stdin,
            answers,
            pid: 0,
        };
        let ready = a.answer();
        a.pid = ready
            .strip_prefix("ready pid=")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {ready:?}"));
        a
    }

    /// A's next answer, within 30 s.
    fn answer(&mut self) -> String {
        self.answers
            .recv_timeout(Duration::from_secs(30))
            .expect("an answer from A within 30 s (A exited or hangs)")
    }

    fn ask(&mut self, cmd: &str) -> String {
        writeln!(self.stdin, "{cmd}").expect("write to A");
        self.stdin.flush().expect("flush to A");
        self.answer()
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("sh")
            .arg("-c")
            .arg(format!("kill -{sig} {}", self.pid))
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{sig} {}", self.pid);
    }
}

impl Drop for ChildA {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn number_after(line: &str, word: &str) -> u64 {
    line.strip_prefix(word)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("expected `{word} N`, got {line:?}"))
}

fn engine_b(prefix: &str) -> Engine {
    builder_on(shared(), prefix)
        .lease_ttl(Duration::from_millis(LEASE_MS))
        .capacity(8)
        .workers(1)
        .build()
        .expect("engine b")
}

#[test]
fn b_follows_and_serves_over_http_a_trace_that_process_a_writes() {
    let prefix = unique_prefix();
    let id = format!("proc-follow-{}", fastrand::u32(..));
    let mut a = ChildA::start(&prefix, &id);
    let b = engine_b(&prefix);
    let server = http_support::Server::start(b.clone());
    // A's first batch is in Redis once A flushed.
    assert!(a.ask("flush").starts_with("flushed"));
    let sub = b.follow(&id).expect("follow A's trace");
    let mut sse = http_support::SseStream::open(server.addr, &format!("/traces/{id}/events"), &[]);
    assert_eq!(sse.status, 200);
    sse.set_timeout(Duration::from_secs(30));
    let reader = std::thread::spawn(move || {
        let mut sub = sub;
        let mut got = Vec::new();
        while let Some(d) = sub.blocking_recv() {
            got.push(d);
        }
        got
    });
    for _ in 0..10 {
        a.ask("emit 30");
    }
    let last = number_after(&a.ask("complete"), "completed");
    let deliveries = reader.join().unwrap();
    let seqs: Vec<u64> = deliveries
        .iter()
        .map(|d| match d {
            Delivery::Event(e) => e.seq,
            Delivery::Lagged { missed } => panic!("Lagged {missed}"),
        })
        .collect();
    assert_eq!(
        seqs,
        (1..=last).collect::<Vec<_>>(),
        "exactly once, in order"
    );
    assert!(matches!(deliveries.last(), Some(Delivery::Event(e)) if e.kind == EventKind::Complete));
    let msgs = sse.collect_rest();
    let http: Vec<u64> = msgs.iter().map(|m| m.seq()).collect();
    assert_eq!(http, seqs, "HTTP on B streams A's trace");
    println!(
        "[follow] A (pid {}) wrote {last} events; B's follow got seqs 1..={last} once each, \
         ending with `complete`; B's HTTP stream /traces/{id}/events sent {} messages, the same seqs",
        a.pid,
        http.len()
    );
}

#[test]
fn after_kill_9_of_a_b_opens_the_trace_once_the_lease_expired() {
    let prefix = unique_prefix();
    let id = format!("proc-kill-{}", fastrand::u32(..));
    let mut a = ChildA::start(&prefix, &id);
    let b = engine_b(&prefix);
    a.ask("emit 100");
    let flushed = number_after(&a.ask("flush"), "flushed");
    // More events, not flushed: some may reach Redis, some not.
    let emitted = number_after(&a.ask("emit 50"), "emitted");
    a.signal("KILL");
    let killed = Instant::now();
    let _ = a.child.wait();
    let first = b.open(&id).map(|_| ());
    let owner = match &first {
        Err(Error::Leased { owner, .. }) => owner.clone(),
        other => panic!("B opened A's trace while A's lease was live: {other:?}"),
    };
    assert!(owner.contains(&format!("/{}/", a.pid)), "{owner}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let trace = loop {
        match b.open(&id) {
            Ok(t) => break t,
            Err(Error::Leased { .. }) => {
                assert!(Instant::now() < deadline, "the lease never expired");
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("open: {e}"),
        }
    };
    let waited = killed.elapsed();
    let events = trace.events(Cursor::Seq(0)).unwrap();
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    let n = seqs.len() as u64;
    assert_eq!(seqs, (1..=n).collect::<Vec<_>>());
    assert!(n >= flushed, "every flushed event: {n} < {flushed}");
    assert!(n <= emitted);
    trace.info("B continues");
    let next = trace.events(Cursor::Seq(0)).unwrap().last().unwrap().seq;
    assert_eq!(next, n + 1, "numbering continues");
    trace.release().unwrap();
    b.flush_blocking().unwrap();
    println!(
        "[kill -9] A (pid {}) flushed seq {flushed}, emitted up to {emitted}, was killed; \
         B's first open: {}; B opened it {:.2} s after the kill (lease {LEASE_MS} ms) with \
         seqs 1..={n} (every flushed event, plus {} written by A's worker before the kill); \
         B's next event got seq {next}",
        a.pid,
        first.unwrap_err(),
        waited.as_secs_f64(),
        n - flushed
    );
}

#[test]
fn a_stalled_owner_loses_its_lease_and_never_writes_after_the_new_owner() {
    let prefix = unique_prefix();
    let id = format!("proc-stall-{}", fastrand::u32(..));
    let mut a = ChildA::start(&prefix, &id);
    let b = engine_b(&prefix);
    a.ask("emit 20");
    let flushed = number_after(&a.ask("flush"), "flushed");
    // A stalls: no renewal, no write.
    a.signal("STOP");
    let stopped = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut refused = 0;
    let trace = loop {
        match b.open(&id) {
            Ok(t) => break t,
            Err(Error::Leased { .. }) => {
                refused += 1;
                assert!(Instant::now() < deadline, "A's lease never expired");
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("open: {e}"),
        }
    };
    let took = stopped.elapsed();
    assert!(refused > 0, "B opened before A's lease expired");
    trace.info("B took over");
    b.flush_blocking().unwrap();
    let b_seq = flushed + 1;
    // A wakes up and tries to go on.
    a.signal("CONT");
    let emitted = a.ask("emit 5");
    let flush = a.ask("flush");
    assert!(flush.starts_with("flush-error"), "{flush}");
    assert!(flush.contains("lease lost"), "{flush}");
    let stats = a.ask("stats");
    assert!(stats.contains("leases_lost=1"), "{stats}");
    assert!(!stats.contains("events_dropped=0"), "{stats}");
    let op = a.ask("op");
    assert!(op.starts_with("op leased"), "{op}");
    // The stream: A's events up to the takeover, then B's, nothing of A after.
    trace.info("B again");
    b.flush_blocking().unwrap();
    let stored = b.read_stored(&id).unwrap();
    let seqs: Vec<u64> = stored.events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=b_seq + 1).collect::<Vec<_>>());
    let tail: Vec<String> = stored.events[b_seq as usize - 1..]
        .iter()
        .map(|e| e.data()["Message"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(tail, ["B took over", "B again"]);
    assert_eq!(stored.logs.last().unwrap().message, "B again");
    trace.release().unwrap();
    b.flush_blocking().unwrap();
    println!(
        "[stall] A (pid {}) flushed seq {flushed} and was stopped (SIGSTOP); B got Leased {refused} \
         times, then opened the trace {:.2} s later and wrote seq {b_seq}; A woke (SIGCONT): \
         `{emitted}`, `{flush}`, `{stats}`, `{op}`; the stream is seqs 1..={} with B's two \
         events last",
        a.pid,
        took.as_secs_f64(),
        b_seq + 1
    );
}
