//! The main job (`tracepool` / `tracepool run`) as a user runs it: on the
//! in-memory driver and on the local driver, where a second run reopens a
//! trace kept by the first and skips what it did not keep; with a failing
//! disk; and interrupted by Ctrl-C.

mod cli_support;

use std::path::Path;
use std::time::Duration;

use cli_support::{field, number_after, run_ok, show, stderr, stdout};
use tracepool::{Engine, EventKind, NodeOptions, TraceOptions, TraceStatus};

/// Metadata that marks the traces the main job keeps (see `tracepool run --help`).
const KEPT_BY: (&str, &str) = ("kept_by", "tracepool run");

#[test]
fn memory_driver_run_is_clean() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_ok(
        &["--memory", "--traces", "500", "--workers", "2"],
        dir.path(),
    );
    assert!(out.contains("driver memory"), "{out}");
    assert!(
        field(&out, "order violations").contains("order violations  0   lagged 0   dropped 0   missing complete 0   unfinished subscribers 0"),
        "{out}"
    );
    assert!(field(&out, "errors").ends_with("none"), "{out}");
    assert!(field(&out, "result").contains("ok"), "{out}");
    assert!(
        field(&out, "live tasks").contains("before 2, after 2 (workers 2)"),
        "{out}"
    );
    assert!(
        !dir.path().join("traces.db").exists(),
        "memory run wrote files"
    );
}

/// `--rate 200 --duration 1`: an open-loop run ends with a
/// machine-readable `rate_result` line that agrees with the summary. Only
/// the structure and the counts are checked, not whether a busy machine
/// kept up with the rate.
#[test]
fn open_loop_run_reports_a_rate_result_that_adds_up() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_ok(
        &["--memory", "--rate", "200", "--duration", "1"],
        dir.path(),
    );
    let last = out.lines().last().unwrap_or_default();
    let fields: std::collections::HashMap<&str, &str> = last
        .strip_prefix("rate_result ")
        .unwrap_or_else(|| panic!("the last line is not rate_result:\n{out}"))
        .split_whitespace()
        .map(|kv| {
            kv.split_once('=')
                .unwrap_or_else(|| panic!("{kv:?} in {last:?}"))
        })
        .collect();
    let num = |k: &str| -> f64 {
        let v = fields
            .get(k)
            .unwrap_or_else(|| panic!("no {k} in {last:?}"));
        v.parse().unwrap_or_else(|_| panic!("{k}={v} in {last:?}"))
    };
    assert_eq!(num("offered"), 200.0, "{out}");
    assert_eq!(num("duration_s"), 1.0, "{out}");
    let completed = num("completed");
    assert!(completed > 0.0 && completed <= 200.0, "{out}");
    assert_eq!(completed + num("not_started"), 200.0, "{out}");
    // Traces completed per second over the 1 s duration.
    assert!((num("achieved") - completed).abs() < 0.051, "{out}");
    assert_eq!(num("dropped"), 0.0, "{out}");
    assert_eq!(num("persist_errors"), 0.0, "{out}");
    assert!(
        num("lag_max_ms") >= 0.0 && num("lag_end_ms") >= 0.0,
        "{out}"
    );
    if cfg!(target_os = "linux") {
        assert!(num("rss_growth_pct").is_finite(), "{out}");
    }
    assert_eq!(fields.get("checks"), Some(&"ok"), "{out}");
    let sustained = fields.get("sustained").copied();
    assert!(matches!(sustained, Some("yes" | "no")), "{out}");
    // The summary says the same.
    assert!(
        field(&out, "traces ").contains(&format!("{completed} in")),
        "{out}"
    );
    let rate = field(&out, "rate ");
    assert!(
        rate.contains("offered 200 traces/s for 1 s (200 scheduled)")
            && rate.contains(&format!("({completed} completed in 1.000 s")),
        "{out}"
    );
    assert!(field(&out, "schedule lag").contains("max "), "{out}");
    assert!(field(&out, "memory (RSS)").contains("peak "), "{out}");
    let verdict = field(&out, "sustained");
    assert!(
        verdict.contains(&format!(
            "sustained         {}",
            sustained.unwrap_or_default()
        )),
        "{out}"
    );
    if sustained == Some("yes") {
        assert!(num("achieved") >= 198.0, "{out}");
    }
    assert!(field(&out, "result").contains("ok"), "{out}");
}

#[test]
fn summary_figures_are_exact_and_split_engine_and_storage_time() {
    let dir = tempfile::tempdir().unwrap();
    // Two in-memory traces take about a millisecond: the elapsed time must
    // say so (not a multiple of a progress-polling interval, 0.1 s). The
    // fastest of three runs, so that one run slowed down by a busy machine
    // does not fail it.
    let runs: Vec<(f64, String)> = (0..3)
        .map(|_| {
            let out = run_ok(&["--memory", "--traces", "2", "--workers", "1"], dir.path());
            (number_after(&field(&out, "traces "), " in "), out)
        })
        .collect();
    let fastest = runs
        .iter()
        .map(|(secs, _)| *secs)
        .fold(f64::INFINITY, f64::min);
    assert!(
        fastest < 0.09,
        "2 in-memory traces took {fastest} s at best? {}",
        runs[0].1
    );
    let out = runs[0].1.clone();
    // The memory driver writes nothing, so it reports no bytes written.
    let storage = field(&out, "storage ");
    assert!(
        storage.contains("nothing written") && !storage.contains("bytes written"),
        "{out}"
    );
    // Where the time went: the engine, and storage (summed driver calls).
    assert!(field(&out, "engine time").contains(" s: "), "{out}");
    let storage_time = field(&out, "storage time");
    assert!(storage_time.contains("driver calls"), "{out}");

    // On the default driver, bytes are written and storage takes time.
    let out = run_ok(
        &["--traces", "20", "--keep-every", "1", "--dir", "t"],
        dir.path(),
    );
    assert!(field(&out, "storage ").contains("bytes written"), "{out}");
    assert!(
        number_after(&field(&out, "storage time"), "wall time of") >= 1.0,
        "driver calls counted"
    );
}

#[test]
fn local_driver_runs_and_a_second_run_reopens_a_kept_trace() {
    let dir = tempfile::tempdir().unwrap();
    let first = run_ok(
        &[
            "--traces",
            "300",
            "--keep-every",
            "100",
            "--local",
            "traces",
        ],
        dir.path(),
    );
    assert!(first.contains("driver local"), "{first}");
    assert!(field(&first, "result").contains("ok"), "{first}");
    // 300 traces, every 100th kept: 3 stay on disk under ./traces.
    assert!(
        field(&first, "storage ").contains("3 traces kept in storage"),
        "{first}"
    );
    assert!(!first.contains("reopen"), "nothing to reopen yet");
    let second = run_ok(&["run", "--traces", "50", "--local", "traces"], dir.path());
    let reopened = field(&second, "reopened trace");
    assert!(
        reopened.contains("gap-free, ends with complete") && reopened.contains("status completed"),
        "{second}"
    );
    assert!(field(&second, "result").contains("ok"), "{second}");
}

/// Writes traces into `store` the way other programs (or a killed run)
/// leave them.
fn add_strangers(store: &Path) {
    let engine = Engine::builder()
        .local(store)
        .capacity(8)
        .workers(1)
        .build()
        .unwrap();
    let kept = |id: &str| TraceOptions::new().id(id).metadata(KEPT_BY.0, KEPT_BY.1);
    // Not the main job's, whole, and the newest of all.
    let t = engine
        .create(TraceOptions::new().id("zzzz-foreign-whole"))
        .unwrap();
    t.add("x", NodeOptions::new()).unwrap();
    t.complete(None).unwrap();
    t.mark_complete().unwrap();
    t.release().unwrap();
    // Not the main job's, still running.
    let t = engine
        .create(TraceOptions::new().id("zzzz-running-foreign"))
        .unwrap();
    t.add("x", NodeOptions::new()).unwrap();
    t.release().unwrap();
    // Marked as the main job's but running (a concurrent or killed run).
    let t = engine.create(kept("zzzz-running-kept")).unwrap();
    t.add("x", NodeOptions::new()).unwrap();
    t.release().unwrap();
    // Marked, complete, then its last event lost.
    let t = engine.create(kept("zzzz-partial-kept")).unwrap();
    t.add("x", NodeOptions::new()).unwrap();
    t.complete(None).unwrap();
    t.mark_complete().unwrap();
    t.release().unwrap();
    engine.shutdown().unwrap();
    let updates = store.join("zzzz-par/zzzz-partial-kept/updates.jsonl");
    let text = std::fs::read_to_string(&updates).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(lines[lines.len() - 1]).unwrap()["type"],
        "complete"
    );
    std::fs::write(&updates, lines[..lines.len() - 1].join("\n") + "\n").unwrap();
    // Unreadable, and the last by id (what the reopen check used to take).
    let bad = store.join("zzzz-unr/zzzz-unreadable");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("trace_info.json"), "{ not json").unwrap();
}

#[test]
fn reopen_check_skips_foreign_partial_and_running_traces() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("traces");
    let first = run_ok(
        &["--traces", "30", "--keep-every", "10", "--local", "traces"],
        dir.path(),
    );
    assert!(field(&first, "result").contains("ok"), "{first}");
    let kept = Engine::builder()
        .local(&store)
        .capacity(4)
        .workers(1)
        .build()
        .unwrap()
        .list_stored()
        .unwrap();
    assert_eq!(kept.len(), 3, "{first}");
    add_strangers(&store);

    let second = run_ok(&["--traces", "10", "--local", "traces"], dir.path());
    let reopened = field(&second, "reopened trace");
    assert!(
        kept.iter().any(|id| reopened.contains(id.as_str())),
        "reopened a trace the first run did not keep:\n{second}"
    );
    assert!(
        reopened.contains("gap-free, ends with complete"),
        "{second}"
    );
    assert!(
        second.contains("skipped 2 stored traces the main job did not keep"),
        "{second}"
    );
    for id in ["zzzz-running-kept", "zzzz-partial-kept", "zzzz-unreadable"] {
        assert!(
            second
                .lines()
                .any(|l| l.starts_with("reopen check: skipped trace") && l.contains(id)),
            "{id} not reported as skipped:\n{second}"
        );
    }
    assert!(field(&second, "result").contains("ok"), "{second}");
}

/// Runs the main job with every file write failing (as on a full disk):
/// `RLIMIT_FSIZE` 0, with `SIGXFSZ` ignored so that writes fail with EFBIG
/// instead of killing the process.
#[cfg(unix)]
fn run_on_failing_disk(args: &[&str], dir: &Path) -> std::process::Output {
    std::process::Command::new("sh")
        .args(["-c", r#"trap "" XFSZ; ulimit -f 0; exec "$0" "$@""#])
        .arg(env!("CARGO_BIN_EXE_tracepool"))
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

/// The local driver writes files only when traces go to storage: the job
/// runs, and every failed write is counted and reported.
#[cfg(unix)]
#[test]
fn a_failing_disk_is_counted_and_reported_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_on_failing_disk(&["--traces", "40", "--local", "traces"], dir.path());
    let (o, e) = (stdout(&out), stderr(&out));
    assert!(!e.contains("panicked"), "{}", show(&out));
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(field(&o, "traces ").contains("40 in"), "{}", show(&out));
    let errors = field(&o, "errors");
    assert!(
        errors.contains("storage") && !errors.ends_with("none"),
        "{}",
        show(&out)
    );
    assert!(field(&o, "result").contains("FAILED"), "{}", show(&out));
}

/// The default driver (the embedded store) writes its journal when it
/// opens: on a disk that takes no byte the job stops there, with the
/// cause, before any trace runs.
#[cfg(unix)]
#[test]
fn a_failing_disk_stops_the_default_driver_at_open_with_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_on_failing_disk(&["--traces", "40", "--dir", "traces"], dir.path());
    let e = stderr(&out);
    assert!(!e.contains("panicked"), "{}", show(&out));
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        e.contains("cannot open storage store (traces)") && e.contains("File too large"),
        "{}",
        show(&out)
    );
}

/// Ctrl-C: no new trace, the running ones cancelled, storage flushed, the
/// summary printed, exit status 130 — and every trace left in storage whole.
#[cfg(all(unix, feature = "http"))]
#[test]
fn ctrl_c_cancels_flushes_summarises_and_exits_130() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = cli_support::bin();
    cmd.args([
        "--traces",
        "100000000",
        "--keep-every",
        "3",
        "--dir",
        "traces",
    ])
    .current_dir(dir.path());
    let mut job = cli_support::Running::start(cmd);
    job.stdout_line(Duration::from_secs(60), |l| {
        l.starts_with("tracepool main job:")
    });
    // A progress line: traces are being run.
    job.stderr_line(Duration::from_secs(60), |l| l.contains("traces/s"));
    job.interrupt();
    let (status, out, err) = job.wait(Duration::from_secs(120));
    let shown = format!("{status}\n--- stdout\n{out}--- stderr\n{err}");
    assert_eq!(status.code(), Some(130), "{shown}");
    assert!(!err.contains("panicked"), "{shown}");
    assert!(out.contains("summary:"), "{shown}");
    assert!(field(&out, "interrupted").contains("by Ctrl-C"), "{shown}");
    assert!(field(&out, "result").contains("interrupted"), "{shown}");

    // `--dir traces`: the default driver, the embedded store.
    let engine = Engine::builder()
        .store(dir.path().join("traces"))
        .capacity(4)
        .workers(1)
        .build()
        .unwrap();
    let ids = engine.list_stored().unwrap();
    assert!(!ids.is_empty(), "no trace kept: {shown}");
    for id in ids {
        let t = engine
            .read_stored(&id)
            .unwrap_or_else(|e| panic!("{id}: {e}"));
        assert!(
            matches!(
                t.info.status,
                TraceStatus::Completed | TraceStatus::Cancelled
            ),
            "{id}: {:?}",
            t.info.status
        );
        assert!(
            t.events
                .iter()
                .enumerate()
                .all(|(i, e)| e.seq == i as u64 + 1),
            "{id}: seqs"
        );
        assert_eq!(
            t.events.last().map(|e| e.kind),
            Some(EventKind::Complete),
            "{id}"
        );
    }
}
