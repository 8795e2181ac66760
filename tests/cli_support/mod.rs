//! Helpers for the tests that run the `tracepool` binary as a user does
//! (`tests/cli_*.rs`; each uses a subset).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The binary under test.
pub(crate) fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tracepool"))
}

/// Runs `tracepool args` in `cwd` to the end.
pub(crate) fn run(args: &[&str], cwd: &Path) -> Output {
    bin()
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .expect("run tracepool")
}

/// stdout and stderr of `out`, for assertion messages.
pub(crate) fn show(out: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub(crate) fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(crate) fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `tracepool args` in `cwd` and asserts it succeeded; returns stdout.
pub(crate) fn run_ok(args: &[&str], cwd: &Path) -> String {
    let out = run(args, cwd);
    assert!(
        out.status.success(),
        "tracepool {args:?} failed:\n{}",
        show(&out)
    );
    stdout(&out)
}

/// The summary line starting (after indentation) with `label`.
pub(crate) fn field(summary: &str, label: &str) -> String {
    summary
        .lines()
        .find(|l| l.trim_start().starts_with(label))
        .unwrap_or_else(|| panic!("no {label:?} line in:\n{summary}"))
        .to_owned()
}

/// The number right after `word ` in `line` (`"... 12 persist errors"` with
/// `word` = `""` is not supported: give the word before the number).
pub(crate) fn number_after(line: &str, word: &str) -> f64 {
    let at = line
        .find(word)
        .unwrap_or_else(|| panic!("no {word:?} in {line:?}"))
        + word.len();
    line[at..]
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number after {word:?} in {line:?}"))
}

/// A running `tracepool` whose output lines arrive on channels.
pub(crate) struct Running {
    pub(crate) child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
    /// Every line read so far, per stream.
    pub(crate) out_lines: Vec<String>,
    pub(crate) err_lines: Vec<String>,
}

/// Why no line came.
fn ended(e: mpsc::RecvTimeoutError, timeout: Duration) -> String {
    match e {
        mpsc::RecvTimeoutError::Timeout => format!("none within {timeout:?}"),
        mpsc::RecvTimeoutError::Disconnected => "tracepool closed the stream".into(),
    }
}

fn lines_of(r: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Running {
    /// Starts `cmd` with piped stdout and stderr.
    pub(crate) fn start(mut cmd: Command) -> Running {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tracepool");
        let stdout = lines_of(child.stdout.take().expect("stdout"));
        let stderr = lines_of(child.stderr.take().expect("stderr"));
        Running {
            child,
            stdout,
            stderr,
            out_lines: Vec::new(),
            err_lines: Vec::new(),
        }
    }

    /// Waits (until `timeout`) for a stdout line for which `pred` holds.
    pub(crate) fn stdout_line(&mut self, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) => {
                    self.out_lines.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(e) => panic!(
                    "no such stdout line ({}); stdout so far:\n{}\nstderr:\n{}",
                    ended(e, timeout),
                    self.out_lines.join("\n"),
                    self.drain_stderr()
                ),
            }
        }
    }

    /// Waits (until `timeout`) for a stderr line for which `pred` holds.
    pub(crate) fn stderr_line(&mut self, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    self.err_lines.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(e) => panic!(
                    "no such stderr line ({}); stderr so far:\n{}",
                    ended(e, timeout),
                    self.err_lines.join("\n")
                ),
            }
        }
    }

    fn drain_stderr(&mut self) -> String {
        while let Ok(l) = self.stderr.try_recv() {
            self.err_lines.push(l);
        }
        self.err_lines.join("\n")
    }

    /// Sends SIGINT, as Ctrl-C in a terminal does.
    pub(crate) fn interrupt(&self) {
        let ok = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -INT failed");
    }

    /// Waits (until `timeout`) for the process to exit; returns its status
    /// and the rest of stdout and stderr.
    pub(crate) fn wait(mut self, timeout: Duration) -> (ExitStatus, String, String) {
        let deadline = Instant::now() + timeout;
        let mut out = std::mem::take(&mut self.out_lines);
        let mut err = std::mem::take(&mut self.err_lines);
        // The readers end when the process closes its output.
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(l) => out.push(l),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = self.child.kill();
                    panic!(
                        "tracepool did not exit within {timeout:?}; stdout:\n{}",
                        out.join("\n")
                    );
                }
            }
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(l) => err.push(l),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = self.child.kill();
                    panic!("tracepool did not close stderr within {timeout:?}");
                }
            }
        }
        let status = self.child.wait().expect("wait for tracepool");
        (status, out.join("\n") + "\n", err.join("\n") + "\n")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` over plain HTTP/1.1 on `addr`; returns the whole response.
pub(crate) fn http_get(addr: &str, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).expect("read response");
    body
}
