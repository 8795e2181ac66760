//! The main job (`tracepool` / `tracepool run`) as a user runs it: on the
//! in-memory driver and on the local driver, where a second run reopens a
//! trace kept by the first.

use std::process::Command;

fn run(args: &[&str], cwd: &std::path::Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tracepool"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run tracepool");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "tracepool {args:?} failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn field(summary: &str, line: &str) -> String {
    summary
        .lines()
        .find(|l| l.trim_start().starts_with(line))
        .unwrap_or_else(|| panic!("no {line:?} line in:\n{summary}"))
        .to_owned()
}

#[test]
fn memory_driver_run_is_clean() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        &["--memory", "--traces", "500", "--workers", "2"],
        dir.path(),
    );
    assert!(out.contains("driver memory"), "{out}");
    assert!(
        field(&out, "order violations").contains("order violations  0   lagged 0   dropped 0   missing complete 0   unfinished subscribers 0"),
        "{out}"
    );
    assert!(field(&out, "result").contains("ok"), "{out}");
    assert!(
        field(&out, "live tasks").contains("before 2, after 2 (workers 2)"),
        "{out}"
    );
    assert!(
        !dir.path().join("traces").exists(),
        "memory run wrote files"
    );
}

#[test]
fn local_driver_runs_and_a_second_run_reopens_a_kept_trace() {
    let dir = tempfile::tempdir().unwrap();
    let first = run(&["--traces", "300", "--keep-every", "100"], dir.path());
    assert!(first.contains("driver local"), "{first}");
    assert!(field(&first, "result").contains("ok"), "{first}");
    // 300 traces, every 100th kept: 3 stay on disk under ./traces.
    assert!(
        field(&first, "storage").contains("3 traces kept in storage"),
        "{first}"
    );
    assert!(!first.contains("reopened"), "nothing to reopen yet");
    let second = run(&["run", "--traces", "50", "--dir", "traces"], dir.path());
    let reopened = field(&second, "reopened trace");
    assert!(
        reopened.contains("gap-free, ends with complete") && reopened.contains("status completed"),
        "{second}"
    );
    assert!(field(&second, "result").contains("ok"), "{second}");
}

#[test]
fn bad_arguments_are_rejected_with_usage() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tracepool"))
        .args(["--traces", "zero"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--traces"));
}
