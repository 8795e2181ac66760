//! The web viewer in a real browser: headless Chromium opens the viewer of
//! a running `tracepool serve --demo` on a trace that has just started,
//! follows it live over SSE until it completes, and the rendered DOM must
//! show that trace's nodes, statuses and logs exactly as the server has
//! them. A screenshot of the page is saved too.
//!
//! Needs Debian's `chromium` package (or `CHROMIUM=/path/to/chrome`), so it
//! is `#[ignore]`d: a plain `cargo test` reports it as ignored, and
//!
//! ```sh
//! cargo test --test browser_viewer -- --ignored
//! ```
//!
//! runs it (CI does), failing when no Chromium is found.
#![cfg(feature = "http")]

mod http_support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use http_support::{SseStream, get};
use serde_json::Value;

/// Kills and reaps a child process when dropped.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn find_chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for name in [
            "chromium",
            "chromium-browser",
            "google-chrome",
            "google-chrome-stable",
        ] {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// Runs headless Chromium with the required flags, a fresh profile and
/// `extra` arguments; returns its stdout. Fails the test after `limit`.
fn run_chromium(chrome: &Path, extra: &[String], limit: Duration) -> String {
    let profile = tempfile::tempdir().expect("profile dir");
    let mut cmd = Command::new(chrome);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,900",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .args(extra)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    let mut child = Reaped(cmd.spawn().expect("start chromium"));
    let mut stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut s);
        let _ = tx.send(s);
    });
    let out = rx
        .recv_timeout(limit)
        .unwrap_or_else(|_| panic!("chromium did not finish within {limit:?}"));
    let _ = child.0.wait();
    out
}

/// A running `tracepool serve --demo` and the directory it stores into:
/// the server is stopped first, then the directory is removed.
struct DemoServer {
    _child: Reaped,
    _dir: tempfile::TempDir,
}

/// Starts `tracepool serve --demo` on a free port; returns it and its address.
fn start_demo_server() -> (DemoServer, SocketAddr) {
    // The default driver writes to ./traces.db: keep that out of the source tree.
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = Reaped(
        Command::new(env!("CARGO_BIN_EXE_tracepool"))
            .current_dir(dir.path())
            .args(["serve", "--demo", "--addr", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tracepool serve"),
    );
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("listening on http://") {
                let _ = tx.send(addr.trim().to_owned());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("`tracepool serve --demo` did not print `listening on http://<addr>` (see its stderr above)");
    let server = DemoServer {
        _child: child,
        _dir: dir,
    };
    (server, addr.parse().expect("socket address"))
}

/// Waits for a demo trace that has just started (preferably the `complex`
/// scenario: space, parallel branches, join).
fn fresh_trace(addr: SocketAddr) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut fallback = None;
    while Instant::now() < deadline {
        let v = get(addr, "/traces", &[]).json();
        for t in v["traces"].as_array().unwrap() {
            let young = t["status"] != "completed" && t["node_count"].as_u64().unwrap_or(0) <= 1;
            if young && t["metadata"]["scenario"] == "complex" {
                return t["id"].as_str().unwrap().to_owned();
            }
            if young && fallback.is_none() {
                fallback = Some((Instant::now(), t["id"].as_str().unwrap().to_owned()));
            }
        }
        if let Some((at, id)) = &fallback
            && at.elapsed() > Duration::from_secs(4)
        {
            return id.clone();
        }
        std::thread::sleep(Duration::from_millis(40));
    }
    panic!("the demo started no trace within 30 s");
}

/// Follows the trace's event stream until it ends (after `complete`), then
/// sends `GET /traces/{id}` as it is then, or `None` when the trace did not
/// complete while loaded.
fn watch_until_complete(addr: SocketAddr, id: String) -> mpsc::Receiver<Option<Value>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut events = SseStream::open(addr, &format!("/traces/{id}/events"), &[]);
        let completed = events.status == 200
            && events
                .collect_rest()
                .iter()
                .any(|m| m.event.as_deref() == Some("complete"));
        let detail = completed
            .then(|| get(addr, &format!("/traces/{id}"), &[]))
            .filter(|r| r.status == 200)
            .map(|r| r.json())
            .filter(|v| v["info"]["status"] == "completed" && v["loaded"] == true);
        let _ = tx.send(detail);
    });
    rx
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}

/// The value of attribute `name` in the opening tag starting at `tag`.
fn attr(tag: &str, name: &str) -> Option<String> {
    let open = &tag[..tag.find('>')?];
    let key = format!(" {name}=\"");
    let start = open.find(&key)? + key.len();
    let len = open[start..].find('"')?;
    Some(unescape(&open[start..start + len]))
}

/// The text right after `marker` (up to the next tag).
fn text_after(s: &str, marker: &str) -> Option<String> {
    let start = s.find(marker)? + marker.len();
    let len = s[start..].find('<')?;
    Some(unescape(s[start..start + len].trim()))
}

/// Blocks of `html` that start with `start` (each up to the next one).
fn blocks<'a>(html: &'a str, start: &str) -> Vec<&'a str> {
    let idx: Vec<usize> = html.match_indices(start).map(|(i, _)| i).collect();
    idx.iter()
        .enumerate()
        .map(|(k, &i)| &html[i..idx.get(k + 1).copied().unwrap_or(html.len())])
        .collect()
}

#[derive(Debug)]
struct Rendered {
    status: String,
    /// node id -> (label, status)
    nodes: BTreeMap<String, (String, String)>,
    /// (node id, level, message)
    logs: Vec<(String, String, String)>,
    spaces: Vec<String>,
}

fn parse_dom(html: &str) -> Rendered {
    let status = html
        .find("id=\"trace-status\"")
        .and_then(|i| text_after(&html[i..], ">"))
        .unwrap_or_default();
    let mut nodes = BTreeMap::new();
    for b in blocks(html, "<div class=\"node") {
        let (Some(id), Some(st)) = (attr(b, "data-id"), attr(b, "data-status")) else {
            continue;
        };
        let label = text_after(b, "<div class=\"label\">").unwrap_or_default();
        nodes.insert(id, (label, st));
    }
    let mut logs = Vec::new();
    for b in blocks(html, "<div class=\"log\"") {
        let (Some(node), Some(level)) = (attr(b, "data-node"), attr(b, "data-level")) else {
            continue;
        };
        let msg = text_after(b, "<span class=\"msg\">").unwrap_or_default();
        logs.push((node, level, msg));
    }
    let spaces = blocks(html, "<div class=\"space\"")
        .iter()
        .filter_map(|b| text_after(b, "<div class=\"sname\">"))
        .collect();
    Rendered {
        status,
        nodes,
        logs,
        spaces,
    }
}

/// One attempt: `Ok(())`, or `Err(reason)` when the demo released the
/// trace before the browser got it (the caller retries with another).
fn check_one_trace(chrome: &Path, addr: SocketAddr, screenshot: &Path) -> Result<(), String> {
    let id = fresh_trace(addr);
    let truth = watch_until_complete(addr, id.clone());
    let url = format!("http://{addr}/#trace={id}");
    let started = Instant::now();
    // The page follows the trace live over SSE; virtual time only runs
    // out after the stream closed on `complete`.
    let html = run_chromium(
        chrome,
        &[
            "--virtual-time-budget=20000".into(),
            "--dump-dom".into(),
            url.clone(),
        ],
        Duration::from_secs(90),
    );
    let truth = truth
        .recv_timeout(Duration::from_secs(60))
        .expect("watcher")
        .ok_or_else(|| format!("trace {id} never completed while loaded"))?;
    eprintln!("chromium rendered trace {id} in {:?}", started.elapsed());

    let dom = parse_dom(&html);
    assert!(
        html.contains(&format!("data-id=\"{id}\"")),
        "the page shows trace {id}"
    );
    if dom.nodes.is_empty() {
        return Err(format!("no node rendered for {id} (released too early?)"));
    }
    assert_eq!(dom.status, "completed", "trace status badge");
    assert!(
        html.contains("data-stream=\"closed\""),
        "the stream closed after `complete`"
    );

    // Nodes: the same set, each with its label and status.
    let want: BTreeMap<String, (String, String)> = truth["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["id"].as_str().unwrap().to_owned(),
                (
                    n["label"].as_str().unwrap().to_owned(),
                    n["status"].as_str().unwrap().to_owned(),
                ),
            )
        })
        .collect();
    assert_eq!(dom.nodes, want, "rendered nodes (id -> label, status)");

    // Logs: every line, in order, with node and level.
    let want_logs: Vec<(String, String, String)> = truth["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["node_id"].as_str().unwrap().to_owned(),
                l["level"].as_str().unwrap().to_owned(),
                l["message"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(!want_logs.is_empty());
    assert_eq!(dom.logs, want_logs, "rendered logs (node, level, message)");

    // Spaces: each one by label.
    let want_spaces: Vec<String> = truth["spaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["info"]["label"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(dom.spaces, want_spaces);

    // The screenshot of the same page.
    let _ = std::fs::remove_file(screenshot);
    run_chromium(
        chrome,
        &[
            format!("--screenshot={}", screenshot.display()),
            "--virtual-time-budget=5000".into(),
            "--hide-scrollbars".into(),
            url,
        ],
        Duration::from_secs(90),
    );
    let png = std::fs::read(screenshot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    assert!(png.len() > 10_000, "a real picture, not a blank page");
    Ok(())
}

#[test]
#[ignore = "needs headless Chromium: cargo test --test browser_viewer -- --ignored"]
fn viewer_renders_a_live_demo_trace_in_headless_chromium() {
    let Some(chrome) = find_chromium() else {
        panic!(
            "no Chromium found: install Debian's `chromium` package or set \
             CHROMIUM=/path/to/chrome (or leave out `--ignored` to skip this test)"
        );
    };
    let (_server, addr) = start_demo_server();
    let screenshot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("viewer.png");
    let mut failures = Vec::new();
    for _ in 0..3 {
        match check_one_trace(&chrome, addr, &screenshot) {
            Ok(()) => {
                eprintln!("viewer screenshot: {}", screenshot.display());
                return;
            }
            Err(e) => failures.push(e),
        }
    }
    panic!("no attempt succeeded: {failures:?}");
}
