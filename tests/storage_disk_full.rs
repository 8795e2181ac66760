//! A full filesystem, for the local and the store driver (issue 10, points 3
//! and 5): traffic on a full disk gets storage errors, counted, and never a
//! panic; no trace is left behind half-created (every trace storage lists
//! opens: a failed first write leaves nothing); once space is freed, a trace that was loaded throughout
//! and new traces are written completely again.
//!
//! Each scenario runs in a child process (this test binary, re-run) inside
//! its own mount namespace (`unshare --mount`), on a small tmpfs it mounts
//! there, so the mount never outlives the test. It needs root (CI runs as
//! root): if the namespace or the tmpfs cannot be set up, the test FAILS —
//! it is never skipped silently.

use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;
use tracepool::{Cursor, Engine, Error, Exhausted, NodeOptions, TraceOptions};

const CHILD_ENV: &str = "TRACEPOOL_DISK_FULL_DRIVER";
const DIR_ENV: &str = "TRACEPOOL_DISK_FULL_DIR";
/// Size of the tmpfs: room for the store's journal and a few traces.
const TMPFS_SIZE: &str = "24m";

#[test]
fn local_driver_on_a_full_disk() {
    run_child("local");
}

#[test]
fn store_driver_on_a_full_disk() {
    run_child("store");
}

/// Re-runs this binary's `child_scenario` in a new mount namespace.
fn run_child(driver: &str) {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--"])
        .arg(&exe)
        .args([
            "--exact",
            "child_scenario",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_ENV, driver)
        .env(DIR_ENV, tmp.path())
        .output()
        .unwrap_or_else(|e| {
            panic!("disk-full test: cannot run `unshare --mount` (util-linux, root needed): {e}")
        });
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "disk-full scenario ({driver}) failed: {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("disk-full scenario done"),
        "the child did not run the scenario:\n{stdout}\n{stderr}"
    );
    eprintln!(
        "{}",
        stdout
            .lines()
            .filter(|l| l.contains("disk-full "))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Child mode: only does something when started by `run_child` (with
/// `--ignored` and its environment). Ignored in a normal run, so that it is
/// not reported as a passing test when it did nothing.
#[test]
#[ignore = "the child process of local_driver_on_a_full_disk and store_driver_on_a_full_disk"]
fn child_scenario() {
    let (Ok(driver), Ok(dir)) = (std::env::var(CHILD_ENV), std::env::var(DIR_ENV)) else {
        return;
    };
    let mnt = PathBuf::from(dir).join("tmpfs");
    fs::create_dir_all(&mnt).unwrap();
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={TMPFS_SIZE}"), "tmpfs"])
        .arg(&mnt)
        .status()
        .expect("run mount");
    assert!(
        status.success(),
        "cannot mount a tmpfs on {} (root needed)",
        mnt.display()
    );
    scenario(&driver, &mnt);
    println!("disk-full scenario done");
}

fn engine(driver: &str, mnt: &Path) -> Engine {
    // A released trace whose last batch keeps failing gives up after
    // 200 ms (its slot is then free again); a create waits for that.
    let b = Engine::builder()
        .capacity(8)
        .workers(1)
        .drain_timeout(std::time::Duration::from_millis(200))
        .on_exhausted(Exhausted::Wait(std::time::Duration::from_secs(10)));
    match driver {
        "local" => b.local(mnt.join("traces")),
        "store" => b.store(mnt.join("traces.db")),
        other => panic!("unknown driver {other}"),
    }
    .build()
    .unwrap()
}

/// One trace: a few nodes, logs and a space value; returns its id, its
/// event count and what the flush after its release returned (release
/// itself does no I/O).
fn one_trace(e: &Engine, i: usize) -> (String, usize, tracepool::Result<()>) {
    let t = e.create(TraceOptions::new()).unwrap();
    t.add(json!({"i": i}), NodeOptions::new().label("root"))
        .unwrap();
    t.info("working");
    let sp = t
        .create_space(tracepool::SpaceOptions::new().label("s"))
        .unwrap();
    t.set_space_value(&sp.id, "pad", json!("x".repeat(2000)))
        .unwrap();
    t.add("next", NodeOptions::new()).unwrap();
    t.complete(Some(json!({"pad": "y".repeat(2000)}))).unwrap();
    let id = t.id().to_owned();
    let n = t.events(Cursor::Seq(0)).unwrap().len();
    t.release().unwrap();
    (id, n, e.flush_blocking())
}

/// Flushes until a flush meets no storage error (errors of batches that
/// failed before space was freed may still be reported once).
fn settle(e: &Engine) {
    let mut last = None;
    for _ in 0..5 {
        match e.flush_blocking() {
            Ok(()) => return,
            Err(err) => last = Some(err),
        }
    }
    panic!("storage did not recover: {last:?}");
}

/// Fills the filesystem of `path` with one file, up to ENOSPC.
fn fill(path: &Path) -> File {
    let mut f = File::create(path).unwrap();
    let chunk = vec![0xa5u8; 64 * 1024];
    let mut written = 0usize;
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n,
            Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => panic!("filling the disk: {e}"),
        }
        assert!(
            written < 1 << 30,
            "the disk never filled: is {} a tmpfs?",
            path.display()
        );
    }
    f
}

fn scenario(driver: &str, mnt: &Path) {
    let e = engine(driver, mnt);
    // 1. A healthy disk: everything is written.
    let mut good: Vec<(String, usize)> = Vec::new();
    for i in 0..5 {
        let (id, n, r) = one_trace(&e, i);
        r.unwrap_or_else(|err| panic!("healthy disk: {err}"));
        good.push((id, n));
    }
    // A trace loaded before, during and after the full disk.
    let keeper = e.create(TraceOptions::new()).unwrap();
    keeper
        .add("before", NodeOptions::new().label("keeper"))
        .unwrap();
    let keeper_id = keeper.id().to_owned();

    // 2. The disk fills up.
    let ballast_path = mnt.join("ballast");
    let ballast = fill(&ballast_path);
    let errors_before = e.stats().persist_errors;
    let (mut failed, mut written) = (0, 0);
    for i in 0..40 {
        let (id, n, r) = one_trace(&e, 100 + i);
        match r {
            Ok(()) => {
                written += 1;
                good.push((id, n));
            }
            Err(Error::Storage { .. }) => failed += 1,
            Err(other) => panic!("full disk: expected a storage error, got {other:?}"),
        }
        keeper.info(format!("while full {i}"));
    }
    assert!(
        failed > 0,
        "nothing failed on a full disk ({written} written)"
    );
    let s = e.stats();
    assert!(
        s.persist_errors > errors_before,
        "errors are counted: {s:?}"
    );
    assert!(s.events_dropped > 0, "{s:?}");

    // 3. No failed trace was left half-created: storage lists only traces
    //    that open, each with every event its release reported.
    check_stored(&e, &good, &[&keeper_id]);

    // 4. Space is freed: the loaded trace and new traces are written again.
    drop(ballast);
    fs::remove_file(&ballast_path).unwrap();
    keeper.info("after");
    let keeper_events = keeper.events(Cursor::Seq(0)).unwrap().len();
    keeper.release().unwrap();
    settle(&e);
    for i in 0..5 {
        let (id, n, r) = one_trace(&e, 200 + i);
        r.unwrap_or_else(|err| panic!("after space was freed: {err}"));
        good.push((id, n));
    }
    good.push((keeper_id, keeper_events));
    check_stored(&e, &good, &[]);
    let s = e.stats();
    e.shutdown().unwrap();
    println!(
        "disk-full {driver}: {failed} of 40 flushes failed on the full disk, {written} fit; \
         {} persist errors, {} events dropped; {} traces stored and whole",
        s.persist_errors,
        s.events_dropped,
        good.len()
    );
}

/// Every stored trace opens — no skeleton of a failed first write — and
/// each of `good` (released without error) is stored with at least the
/// events its release reported. A trace whose release failed may be stored
/// with what its earlier batches wrote. `loaded` traces are not checked.
fn check_stored(e: &Engine, good: &[(String, usize)], loaded: &[&str]) {
    // Released traces still draining are listed too: wait until each was
    // written or given up.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while e.stats().draining > 0 {
        assert!(std::time::Instant::now() < deadline, "drains never ended");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let stored = e.list_stored().unwrap();
    for id in &stored {
        if loaded.contains(&id.as_str()) {
            continue;
        }
        let t = e
            .open(id)
            .unwrap_or_else(|err| panic!("stored trace {id} does not open (a skeleton?): {err}"));
        let events = t.events(Cursor::Seq(0)).unwrap().len();
        assert!(events > 0, "{id}: stored without events");
        if let Some((_, n)) = good.iter().find(|(g, _)| g == id) {
            assert!(events >= *n, "{id}: {events} events, {n} were released");
        }
        t.release().unwrap_or_else(|err| panic!("{id}: {err}"));
    }
    for (id, _) in good {
        assert!(stored.contains(id), "{id} was released but is not stored");
    }
}
