//! The Go package's simple loop in rounds, through tracepool's drivers, and
//! `floor_round`: only the file-system work the reference layout needs for
//! the same trace, done directly with `std::fs`. Shared by the `storage`
//! bench group and the profiling programs that run the same rounds; not
//! part of the library.

#![allow(dead_code, unreachable_pub)]

use std::io::Write;

use tracepool::{Engine, NodeOptions, TraceOptions};

/// Traces per round of the `storage` group (created and released, flushed
/// once, removed).
pub const ROUND: u64 = 32;

/// A temporary directory for the `storage` group, under
/// `TRACEPOOL_BENCH_DIR` when set.
pub fn bench_dir() -> tempfile::TempDir {
    match std::env::var_os("TRACEPOOL_BENCH_DIR") {
        Some(base) => tempfile::tempdir_in(base).unwrap(),
        None => tempfile::tempdir().unwrap(),
    }
}

/// One round of the Go package's simple loop: `ROUND` traces created, one
/// node each completed, released; one `flush` (every trace reaches
/// storage); then every trace removed.
pub fn simple_round(e: &Engine, ids: &mut Vec<String>) {
    simple_round_of(e, ROUND, ids);
}

/// [`simple_round`] of `k` traces.
pub fn simple_round_of(e: &Engine, k: u64, ids: &mut Vec<String>) {
    create_released(e, k, false, ids).unwrap();
    e.flush_blocking().unwrap();
    // The memory driver keeps nothing: its remove finds nothing.
    remove_all(e, ids, true).unwrap();
}

/// The first half of a round: `k` simple traces (a node completed, with
/// one log line if `log_line`) created and released; their ids are pushed
/// onto `ids`.
pub fn create_released(
    e: &Engine,
    k: u64,
    log_line: bool,
    ids: &mut Vec<String>,
) -> tracepool::Result<()> {
    for _ in 0..k {
        let t = e.create(TraceOptions::new())?;
        t.add(0, NodeOptions::new().label("step"))?;
        if log_line {
            t.info("one log line");
        }
        t.complete(Some(serde_json::json!(true)))?;
        ids.push(t.id().to_owned());
        t.release()?;
    }
    Ok(())
}

/// The last part of a round: every trace of `ids` removed (`ids` left
/// empty); `NotFound` is an error unless `missing_ok`.
pub fn remove_all(e: &Engine, ids: &mut Vec<String>, missing_ok: bool) -> tracepool::Result<()> {
    for id in ids.drain(..) {
        match e.remove(&id) {
            Ok(()) => {}
            Err(tracepool::Error::NotFound) if missing_ok => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

/// The files one simple trace leaves in the reference layout, as
/// tracepool's local driver writes them: `(path relative to the trace's
/// directory, bytes)` for `updates.jsonl`, the node document and
/// `trace_info.json`.
pub fn simple_trace_files() -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::builder()
        .capacity(4)
        .workers(1)
        .local(dir.path())
        .build()
        .unwrap();
    let t = e.create(TraceOptions::new()).unwrap();
    t.add(0, NodeOptions::new().label("step")).unwrap();
    t.complete(Some(serde_json::json!(true))).unwrap();
    let id = t.id().to_owned();
    t.release().unwrap();
    e.flush_blocking().unwrap();
    e.shutdown().unwrap();
    // <base>/<day>/<id>/...
    let day = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|d| d.unwrap().path())
        .find(|p| p.join(&id).is_dir())
        .unwrap();
    let root = day.join(&id);
    let mut files = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(&root).unwrap().to_path_buf();
                files.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    files.sort();
    let names: Vec<_> = files.iter().map(|f| f.0.display().to_string()).collect();
    assert_eq!(files.len(), 3, "a simple trace's files: {names:?}");
    files
}

/// The floor: the same files made and removed with `std::fs` directly.
/// Documents (every file but `updates.jsonl`) go through a temporary file
/// and a rename, as any crash-safe writer of this layout must do.
pub fn floor_round(base: &std::path::Path, files: &[(std::path::PathBuf, Vec<u8>)], n: &mut u64) {
    let mut dirs = Vec::with_capacity(ROUND as usize);
    for _ in 0..ROUND {
        *n += 1;
        let d = base.join(format!("t{n}"));
        std::fs::create_dir(&d).unwrap();
        std::fs::create_dir(d.join("nodes")).unwrap();
        for (rel, bytes) in files {
            let path = d.join(rel);
            if rel.as_os_str() == "updates.jsonl" {
                let mut f = std::fs::OpenOptions::new()
                    .create_new(true)
                    .append(true)
                    .open(&path)
                    .unwrap();
                f.write_all(bytes).unwrap();
            } else {
                let tmp = path.with_extension("tmp");
                std::fs::write(&tmp, bytes).unwrap();
                std::fs::rename(&tmp, &path).unwrap();
            }
        }
        dirs.push(d);
    }
    for d in dirs {
        for (rel, _) in files {
            std::fs::remove_file(d.join(rel)).unwrap();
        }
        std::fs::remove_dir(d.join("nodes")).unwrap();
        std::fs::remove_dir(&d).unwrap();
    }
}
