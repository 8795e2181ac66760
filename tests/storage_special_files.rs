//! Special files in the storage directory never hang or flood a read or a
//! write (issue 10, point 2): a FIFO as `trace_info.json` or `updates.jsonl`
//! is reported at once — `Corrupt` naming it for reads, `Storage` for
//! writes — instead of blocking forever, and a link to `/dev/zero` is
//! refused before a byte is read.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use rustix::fs::{CWD, FileType, Mode, mknodat};
use tracepool::{Engine, Error, Exhausted, NodeOptions, TraceOptions};

const ID: &str = "special-trace-1";

/// Long enough for a slow machine, short enough to report a hang.
const HANG: Duration = Duration::from_secs(20);

fn engine(base: &Path) -> Engine {
    Engine::builder()
        .capacity(4)
        .workers(1)
        .on_exhausted(Exhausted::Error)
        .drain_timeout(std::time::Duration::from_millis(200))
        .local(base)
        .build()
        .unwrap()
}

/// A stored trace; returns the base and the trace directory.
fn stored(tmp: &tempfile::TempDir) -> (PathBuf, PathBuf) {
    let base = tmp.path().join("base");
    let e = engine(&base);
    let t = e.create(TraceOptions::new().id(ID)).unwrap();
    t.add("in", NodeOptions::new().label("Root")).unwrap();
    t.info("log line");
    t.release().unwrap();
    let dir = base.join(&ID[..8]).join(ID);
    (base, dir)
}

fn make_fifo(path: &Path) {
    let _ = fs::remove_file(path);
    mknodat(CWD, path, FileType::Fifo, Mode::from_raw_mode(0o644), 0).unwrap();
}

/// Runs `f` on another thread; fails the test if it does not return in time.
fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(HANG)
        .unwrap_or_else(|_| panic!("{what} did not return within {HANG:?}: it blocks"))
}

fn expect_corrupt<T: std::fmt::Debug>(r: tracepool::Result<T>, needles: &[&str]) {
    match r {
        Err(e @ Error::Corrupt { .. }) => {
            let msg = e.to_string();
            for n in needles {
                assert!(msg.contains(n), "{msg:?} does not say {n:?}");
            }
        }
        other => panic!("expected Corrupt saying {needles:?}, got {other:?}"),
    }
}

#[test]
fn a_fifo_as_a_stored_file_is_corrupt_and_nothing_blocks() {
    for rel in ["trace_info.json", "updates.jsonl"] {
        let tmp = tempfile::tempdir().unwrap();
        let (base, dir) = stored(&tmp);
        make_fifo(&dir.join(rel));
        let e = engine(&base);
        let e2 = e.clone();
        let opened = within(&format!("open with a FIFO as {rel}"), move || {
            e2.open(ID).map(|_| ())
        });
        expect_corrupt(opened, &[rel, "FIFO"]);
        if rel == "trace_info.json" {
            let e2 = e.clone();
            let info = within("info with a FIFO as trace_info.json", move || {
                e2.info(ID).map(|_| ())
            });
            expect_corrupt(info, &[rel, "FIFO"]);
            // Listing does not read files at all.
            let e2 = e.clone();
            let listed = within("list_stored", move || e2.list_stored()).unwrap();
            assert_eq!(listed, vec![ID.to_owned()]);
        }
    }
}

#[test]
fn a_link_to_dev_zero_is_refused_before_it_is_read() {
    for rel in ["trace_info.json", "updates.jsonl"] {
        let tmp = tempfile::tempdir().unwrap();
        let (base, dir) = stored(&tmp);
        fs::remove_file(dir.join(rel)).unwrap();
        std::os::unix::fs::symlink("/dev/zero", dir.join(rel)).unwrap();
        let e = engine(&base);
        let opened = within(&format!("open with {rel} -> /dev/zero"), move || {
            e.open(ID).map(|_| ())
        });
        expect_corrupt(opened, &[rel, "symbolic link"]);
    }
}

#[test]
fn writing_to_a_fifo_fails_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, dir) = stored(&tmp);
    let e = engine(&base);
    let t = e.open(ID).unwrap();
    // Swapped after the trace was loaded: the next batch appends to it.
    make_fifo(&dir.join("updates.jsonl"));
    t.add("next", NodeOptions::new()).unwrap();
    t.release().unwrap();
    let flushed = within("flush writing to a FIFO", move || e.flush_blocking());
    match flushed {
        Err(e @ Error::Storage { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("updates.jsonl") && msg.contains("FIFO"),
                "{msg}"
            );
        }
        other => panic!("expected a Storage error, got {other:?}"),
    }
}
