//! Crash safety of the local and the store driver: a child process (this
//! test binary, re-run in child mode) writes traces as fast as it can with
//! `Durability::Fsync` and is killed with SIGKILL at random moments; every
//! stored trace must then open cleanly or report `Corrupt` naming a file or
//! key, no JSON document may be torn (local), and every trace the child
//! reported as released (and flushed) must have at least the events it
//! reported.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tracepool::{
    Cursor, Driver, Durability, Engine, Error, Exhausted, LocalDriver, NodeOptions, ParallelInput,
    SpaceOptions, TraceOptions,
};

const CHILD_ENV: &str = "TRACEPOOL_STORAGE_KILL_DIR";
const DRIVER_ENV: &str = "TRACEPOOL_STORAGE_KILL_DRIVER";

/// The driver under test, on `path`.
fn on_driver(b: tracepool::EngineBuilder, driver: &str, path: &Path) -> tracepool::EngineBuilder {
    match driver {
        "local" => b.local(path),
        "store" => b.store(path),
        other => panic!("unknown driver {other}"),
    }
}

/// Child mode: only does something when started by `sigkill_child` (with
/// `--ignored` and its environment). Ignored in a normal run, so that it is
/// not reported as a passing test when it did nothing.
#[test]
#[ignore = "the child process of sigkill_at_random_moments(_store)"]
fn child_writer() {
    let (Ok(dir), Ok(driver)) = (std::env::var(CHILD_ENV), std::env::var(DRIVER_ENV)) else {
        return;
    };
    let b = Engine::builder()
        .capacity(8)
        .workers(1)
        .on_exhausted(Exhausted::Wait(Duration::from_secs(1)))
        .durability(Durability::Fsync);
    let engine = on_driver(b, &driver, Path::new(&dir))
        .build()
        .expect("child engine");
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let threads: Vec<_> = (0..2)
        .map(|w| {
            let engine = engine.clone();
            let out = Arc::clone(&out);
            std::thread::spawn(move || {
                for i in 0u64.. {
                    let n = write_one(&engine, w * 1_000_000 + i).expect("write trace");
                    let mut o = out.lock().unwrap_or_else(|e| e.into_inner());
                    let _ = writeln!(o, "released {} {}", n.0, n.1);
                    let _ = o.flush();
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}

/// Writes one trace and releases it; returns its id and event count.
fn write_one(engine: &Engine, i: u64) -> tracepool::Result<(String, usize)> {
    let t = engine.create(TraceOptions::new().created_by("child"))?;
    t.add(json!({"i": i}), NodeOptions::new().label("root"))?;
    for k in 0..(i % 4 + 1) {
        t.info(format!("root log {k}"));
    }
    let branches = t.parallel(
        (0..3)
            .map(|b| ParallelInput::new(json!(b), NodeOptions::new().label("branch")))
            .collect(),
    )?;
    let sp = t.create_space(SpaceOptions::new().label("mem"))?;
    for (k, b) in branches.iter().enumerate() {
        b.info("working");
        t.set_space_value(
            &sp.id,
            &format!("k{k}"),
            json!({"v": k, "pad": "x".repeat(64)}),
        )?;
        b.complete(Some(json!({"k": k})))?;
    }
    t.add("merge", NodeOptions::new().label("merge"))?;
    t.warn("merged");
    if i.is_multiple_of(3) {
        t.mark_complete()?;
    }
    let id = t.id().to_owned();
    let n = t.events(Cursor::Seq(0))?.len();
    t.release()?;
    // Release does no I/O: reported as released once storage has it.
    engine.flush_blocking()?;
    Ok((id, n))
}

fn json_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            json_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "json") {
            out.push(p);
        }
    }
}

#[test]
fn sigkill_at_random_moments() {
    sigkill_child("local", 24);
}

#[test]
fn sigkill_at_random_moments_store() {
    sigkill_child("store", 20);
}

/// Kills a child writing to `driver` `kills` times, then checks what it left.
fn sigkill_child(driver: &str, kills_wanted: usize) {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("traces");
    let exe = std::env::current_exe().unwrap();
    let mut released: HashMap<String, usize> = HashMap::new();
    let mut kills = 0;
    while kills < kills_wanted {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "child_writer",
                "--ignored",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(CHILD_ENV, &base)
            .env(DRIVER_ENV, driver)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(l) => lines.push(l),
                    Err(_) => break,
                }
            }
            lines
        });
        // Pacing: the kill lands at a random moment of the child's work.
        std::thread::sleep(Duration::from_millis(fastrand::u64(20..=150)));
        if let Ok(Some(status)) = child.try_wait() {
            panic!("child exited on its own: {status}");
        }
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
        kills += 1;
        for line in reader.join().unwrap() {
            // The harness's "test child_writer ... " may precede the first line.
            let Some(at) = line.find("released ") else {
                continue;
            };
            let mut parts = line[at..].split_whitespace().skip(1);
            let (Some(id), Some(n)) = (parts.next(), parts.next()) else {
                panic!("bad child line {line:?}");
            };
            let n: usize = n.parse().unwrap();
            let e = released.entry(id.to_owned()).or_insert(0);
            *e = (*e).max(n);
        }
    }
    let write_phase = started.elapsed();

    // No torn JSON document anywhere (the local driver's files).
    let mut docs = Vec::new();
    if driver == "local" {
        json_files(&base, &mut docs);
    }
    for p in &docs {
        let bytes = std::fs::read(p).unwrap();
        assert!(
            serde_json::from_slice::<serde_json::Value>(&bytes).is_ok(),
            "torn JSON document {}",
            p.display()
        );
    }

    // Every stored trace opens or is reported corrupt, naming the file or key.
    let b = Engine::builder()
        .capacity(4)
        .workers(1)
        .on_exhausted(Exhausted::Error);
    let engine = on_driver(b, driver, &base).build().unwrap();
    let ids = engine.list_stored().unwrap();
    if driver == "local" {
        let direct = LocalDriver::new(&base, Durability::Buffered).unwrap();
        assert_eq!(direct.list().unwrap(), ids);
    }
    let (mut ok, mut corrupt) = (0, 0);
    for id in &ids {
        match engine.open(id) {
            Ok(t) => {
                let events = t.events(Cursor::Seq(0)).unwrap();
                for (i, e) in events.iter().enumerate() {
                    assert_eq!(e.seq, i as u64 + 1, "{id}");
                }
                if let Some(&n) = released.get(id) {
                    assert!(
                        events.len() >= n,
                        "{id}: {} events, {n} were released",
                        events.len()
                    );
                }
                t.release().unwrap();
                ok += 1;
            }
            Err(e @ Error::Corrupt { .. }) => {
                let msg = e.to_string();
                let named = match driver {
                    "local" => base.display().to_string(),
                    _ => format!(":{id}:"),
                };
                assert!(msg.contains(&named), "Corrupt without a file or key: {msg}");
                assert!(
                    !released.contains_key(id),
                    "released trace {id} does not open: {msg}"
                );
                if std::env::var("STORAGE_KILL_VERBOSE").is_ok() {
                    eprintln!("corrupt: {msg}");
                }
                corrupt += 1;
            }
            Err(e) => panic!("{id}: unexpected error {e:?}"),
        }
    }
    for id in released.keys() {
        assert!(ids.contains(id), "released trace {id} is not stored");
    }
    assert!(!released.is_empty(), "the child never released a trace");
    eprintln!(
        "storage_kill ({driver}): {kills} kills, {} traces stored, {} released, {ok} open, {corrupt} corrupt \
         (unreleased, killed mid-write), {} documents parsed; write phase {:?}, total {:?}",
        ids.len(),
        released.len(),
        docs.len(),
        write_phase,
        started.elapsed()
    );
    drop(engine);
    let engine_dropped = started.elapsed();
    drop(tmp);
    eprintln!(
        "storage_kill ({driver}): engine dropped at {engine_dropped:?}, directory removed at {:?}",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(60));
}
