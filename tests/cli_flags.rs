//! The command line's flags: values that cannot work are clear errors (exit
//! status 2, no panic, no allocation abort), storage flags exclude each
//! other, help and version, and a closed stdout.

mod cli_support;

use std::process::Stdio;

use cli_support::{field, run, run_ok, show, stderr, stdout};

/// Runs `args` and asserts a usage error (status 2) whose message contains
/// every one of `says`.
fn usage_error(args: &[&str], says: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let out = run(args, dir.path());
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{args:?}:\n{}", show(&out));
    assert!(!err.contains("panicked"), "{args:?}:\n{}", show(&out));
    for s in says {
        assert!(err.contains(s), "{args:?}: {s:?} not in:\n{}", show(&out));
    }
    assert!(
        !dir.path().join("traces.db").exists(),
        "{args:?} created storage before failing"
    );
}

#[test]
fn values_that_cannot_work_are_usage_errors() {
    usage_error(&["--capacity", "100000000"], &["--capacity", "4194304"]);
    usage_error(&["run", "--workers", "100000"], &["--workers", "256"]);
    usage_error(&["--workers", "0"], &["--workers", "at least 1"]);
    // Not a u64.
    usage_error(&["--traces", "18446744073709551616"], &["--traces"]);
    usage_error(&["--traces", "-1"], &["--traces"]);
    usage_error(&["--concurrency", "1.5"], &["--concurrency"]);
    usage_error(&["--capacity", "lots"], &["--capacity", "\"lots\""]);
    usage_error(&["--traces"], &["--traces needs a value"]);
    usage_error(&["--frobnicate"], &["unknown argument", "--frobnicate"]);
    usage_error(&["serve", "--port", "1"], &["unknown argument", "--port"]);
}

#[test]
fn rate_flags_that_cannot_work_are_usage_errors() {
    usage_error(&["--rate", "0"], &["--rate must be at least 1"]);
    usage_error(&["run", "--rate", "5", "--duration", "0"], &["--duration"]);
    usage_error(&["--rate"], &["--rate needs a value"]);
    usage_error(&["--rate", "1.5"], &["--rate", "whole number"]);
    usage_error(&["--duration", "5"], &["--duration needs --rate"]);
    usage_error(
        &["--memory", "--duration", "5", "--traces", "10"],
        &["--duration needs --rate"],
    );
    usage_error(
        &["--rate", "100", "--traces", "10"],
        &["--traces and --rate cannot be used together"],
    );
    usage_error(
        &["--traces", "10", "--rate", "100", "--duration", "1"],
        &["--traces and --rate cannot be used together"],
    );
    usage_error(
        &["--rate", "1", "--duration", "100000000"],
        &["--duration", "31536000"],
    );
    usage_error(
        &["--rate", "18446744073709551615", "--duration", "2"],
        &["too many traces"],
    );
}

#[test]
fn concurrency_is_lowered_to_traces_and_capacity_with_a_note() {
    let dir = tempfile::tempdir().unwrap();
    for huge in ["1000000", "100000000000"] {
        let out = run(
            &["--memory", "--traces", "10", "--concurrency", huge],
            dir.path(),
        );
        assert!(out.status.success(), "{}", show(&out));
        assert!(
            stderr(&out).contains(&format!(
                "--concurrency {huge} is more than --traces 10: using 10"
            )),
            "{}",
            show(&out)
        );
        assert!(stdout(&out).contains("concurrency 10,"), "{}", show(&out));
        assert!(field(&stdout(&out), "traces ").contains("10 in"));
    }
    let out = run(
        &[
            "--memory",
            "--traces",
            "50",
            "--concurrency",
            "9",
            "--capacity",
            "4",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        stderr(&out).contains("--concurrency 9 is more than --capacity 4"),
        "{}",
        show(&out)
    );
    assert!(stdout(&out).contains("concurrency 4,"), "{}", show(&out));
}

#[test]
fn storage_flags_exclude_each_other() {
    usage_error(&["--memory", "--dir", "x"], &["--dir and --memory"]);
    usage_error(&["--dir", "x", "--memory"], &["--dir and --memory"]);
    usage_error(&["--local", "a", "--store", "b"], &["--local and --store"]);
    usage_error(&["--memory", "--memory"], &["--memory is given twice"]);
    usage_error(&["--dir", "a", "--dir", "b"], &["--dir is given twice"]);
    usage_error(&["--dir", ""], &["--dir", "empty"]);
    usage_error(&["--local", ""], &["--local", "empty"]);
    usage_error(&["--store", ""], &["--store", "empty"]);
    usage_error(&["--redis", "127.0.0.1:6379"], &["--redis", "redis://"]);
    usage_error(
        &["--redis", "redis://127.0.0.1/", "--memory"],
        &["--redis and --memory"],
    );
    usage_error(
        &["--redis", "redis://127.0.0.1/", "--dir", "x"],
        &["--dir and --redis"],
    );
    usage_error(
        &["serve", "--memory", "--dir", "x"],
        &["--dir and --memory"],
    );
    usage_error(&["serve", "--demo", "--dir", "x"], &["--demo and --dir"]);
    usage_error(
        &["serve", "--demo", "--local", "x"],
        &["--demo and --local"],
    );
}

#[test]
fn each_storage_flag_runs_the_job_where_it_says() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_ok(&["--traces", "20", "--local", "here"], dir.path());
    assert!(out.contains("driver local (here)"), "{out}");
    assert!(dir.path().join("here").is_dir());
    let out = run_ok(&["--traces", "20", "--store", "db"], dir.path());
    assert!(out.contains("driver store (db)"), "{out}");
    assert!(dir.path().join("db").is_dir());
    let out = run_ok(&["--traces", "20", "--dir", "there"], dir.path());
    assert!(out.contains("driver store (there)"), "{out}");
    assert!(dir.path().join("there").is_dir());
    assert!(!dir.path().join("traces.db").exists());
    // No flag: the default driver, the embedded store in ./traces.db.
    let out = run_ok(&["--traces", "20"], dir.path());
    assert!(out.contains("driver store (./traces.db)"), "{out}");
    assert!(dir.path().join("traces.db").is_dir());
}

#[test]
fn help_and_version() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_ok(&["--version"], dir.path());
    assert_eq!(
        out.trim(),
        format!("tracepool {}", env!("CARGO_PKG_VERSION"))
    );
    let out = run_ok(&["--help"], dir.path());
    assert!(out.contains("tracepool serve --help"), "{out}");
    for args in [
        &["run", "--help"][..],
        &["help", "run"],
        &["--traces", "5", "-h"],
    ] {
        let out = run_ok(args, dir.path());
        assert!(out.contains("usage: tracepool [run]"), "{args:?}: {out}");
        assert!(out.contains("--keep-every N"), "{args:?}: {out}");
        assert!(out.contains("--redis URL"), "{args:?}: {out}");
        assert!(out.contains("--rate N"), "{args:?}: {out}");
        assert!(out.contains("--duration S"), "{args:?}: {out}");
        assert!(out.contains("rate_result"), "{args:?}: {out}");
    }
    for args in [
        &["serve", "--help"][..],
        &["help", "serve"],
        &["serve", "--demo", "-h"],
    ] {
        let out = run_ok(args, dir.path());
        assert!(out.contains("usage: tracepool serve"), "{args:?}: {out}");
        assert!(out.contains("--addr HOST:PORT"), "{args:?}: {out}");
        assert!(
            out.contains("in-memory driver of their own"),
            "{args:?}: {out}"
        );
    }
    assert!(!dir.path().join("traces.db").exists());
}

/// `tracepool | head -1`: the reader goes away; tracepool finishes its job
/// without a word about it.
#[test]
fn a_closed_stdout_is_quiet() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["--memory", "--traces", "300"][..],
        &["--help"],
        &["serve", "--help"],
        &["--version"],
    ] {
        // A pipe whose read end is closed before tracepool starts: its first
        // write to stdout fails (EPIPE), whatever the timing.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = cli_support::bin()
            .args(args)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let err = stderr(&out);
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe"),
            "{args:?}:\n{}",
            show(&out)
        );
        assert_eq!(out.status.code(), Some(0), "{args:?}:\n{}", show(&out));
    }
}
