//! `tracepool serve` as a user runs it: `--demo` keeps its traces apart
//! (in memory, nothing left on disk), `--addr` takes host names, and a
//! listen failure says so.
#![cfg(all(unix, feature = "http"))]

mod cli_support;

use std::time::Duration;

use cli_support::{Running, http_get, run, show, stderr};

/// Starts `tracepool serve args` in `cwd`; returns it with the address it
/// listens on, once it answers HTTP (so its Ctrl-C handler is in place).
fn start(args: &[&str], cwd: &std::path::Path) -> (Running, String) {
    let mut cmd = cli_support::bin();
    cmd.arg("serve").args(args).current_dir(cwd);
    let mut server = Running::start(cmd);
    let line = server.stdout_line(Duration::from_secs(60), |l| {
        l.starts_with("listening on http://")
    });
    let addr = line["listening on http://".len()..].trim().to_owned();
    let answer = http_get(&addr, "/traces");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    (server, addr)
}

#[test]
fn demo_keeps_its_traces_in_memory_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = start(&["--demo", "--addr", "127.0.0.1:0"], dir.path());
    let answer = http_get(&addr, "/traces");
    assert!(answer.contains(r#""driver":"memory""#), "{answer}");
    server.interrupt();
    let (status, out, err) = server.wait(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "{out}\n{err}");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "serve --demo left {left:?} behind");
}

#[test]
fn addr_takes_a_host_name() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = start(&["--memory", "--addr", "localhost:0"], dir.path());
    assert!(addr.starts_with("127.0.0.1:"), "IPv4 first: {addr}");
    server.interrupt();
    let (status, out, err) = server.wait(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "{out}\n{err}");
}

#[test]
fn a_listen_failure_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = run(&["serve", "--memory", "--addr", &addr], dir.path());
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        err.contains(&format!("cannot listen on {addr}")),
        "{}",
        show(&out)
    );
    assert!(!err.contains("invalid configuration"), "{}", show(&out));

    let out = run(&["serve", "--addr", "127.0.0.1"], dir.path());
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        stderr(&out).contains("expected HOST:PORT"),
        "{}",
        show(&out)
    );
}
