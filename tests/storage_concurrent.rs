//! Concurrent storage operations on different traces never make each other
//! fail: several threads create, write, release, reopen, archive and remove
//! traces of the same day (one shard directory) on one engine, for the local
//! and the store driver. Every call must succeed, and after `shutdown` the
//! engine must report no persist error and no dropped event.

use std::path::Path;
use std::sync::Barrier;

use serde_json::json;
use tracepool::{Cursor, Engine, Error, Exhausted, NodeOptions, TraceOptions};

const THREADS: usize = 4;
const ROUNDS: usize = 400;

/// What one round does with its trace after releasing it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum After {
    /// Remove it at once (most rounds: the hot path of issue 10, point 0).
    Remove,
    /// Reopen it, check it, add to it, release it, then remove it.
    Reopen,
    /// Archive it (`auto_archive` + `mark_complete`), read it back, remove it.
    Archive,
    /// Keep it (in another shard): it must still be there at the end.
    Keep,
}

fn plan(round: usize) -> After {
    match round % 20 {
        0 => After::Archive,
        5 | 15 => After::Reopen,
        10 => After::Keep,
        _ => After::Remove,
    }
}

/// One thread's rounds; returns the ids it kept.
fn churn(engine: &Engine, thread: usize, start: &Barrier) -> Vec<String> {
    start.wait();
    let mut kept = Vec::new();
    for round in 0..ROUNDS {
        let after = plan(round + thread);
        let what = format!("thread {thread} round {round} ({after:?})");
        let mut opts = TraceOptions::new().auto_archive(after == After::Archive);
        if after == After::Keep {
            // Kept traces live in a shard of their own, so that the day's
            // shard directory does become empty between rounds.
            opts = opts.id(format!("kept-trace-{thread}-{round}"));
        }
        let t = engine
            .create(opts)
            .unwrap_or_else(|e| panic!("{what}: create: {e}"));
        let id = t.id().to_owned();
        t.add(
            json!({"thread": thread, "round": round}),
            NodeOptions::new().label("step"),
        )
        .unwrap_or_else(|e| panic!("{what}: add: {e}"));
        t.info("working");
        t.complete(Some(json!({"ok": true})))
            .unwrap_or_else(|e| panic!("{what}: complete: {e}"));
        if after == After::Archive {
            t.mark_complete()
                .unwrap_or_else(|e| panic!("{what}: mark_complete (archive): {e}"));
        }
        let events = t.events(Cursor::Seq(0)).unwrap().len();
        t.release()
            .unwrap_or_else(|e| panic!("{what}: release: {e}"));
        match after {
            After::Remove => {}
            After::Keep => {
                kept.push(id);
                continue;
            }
            After::Reopen => {
                let again = engine
                    .open(&id)
                    .unwrap_or_else(|e| panic!("{what}: open: {e}"));
                assert_eq!(
                    again.events(Cursor::Seq(0)).unwrap().len(),
                    events,
                    "{what}"
                );
                again.info("reopened");
                again
                    .release()
                    .unwrap_or_else(|e| panic!("{what}: release after open: {e}"));
            }
            After::Archive => {
                let info = engine
                    .info(&id)
                    .unwrap_or_else(|e| panic!("{what}: info: {e}"));
                assert!(info.archived, "{what}");
                let stored = engine
                    .read_stored(&id)
                    .unwrap_or_else(|e| panic!("{what}: read archived: {e}"));
                assert_eq!(stored.events.len(), events, "{what}");
            }
        }
        if round % 50 == 0 {
            engine
                .list_stored()
                .unwrap_or_else(|e| panic!("{what}: list_stored: {e}"));
        }
        engine
            .remove(&id)
            .unwrap_or_else(|e| panic!("{what}: remove: {e}"));
        assert!(!engine.exists(&id).unwrap(), "{what}: removed but exists");
    }
    kept
}

fn run(engine: Engine) {
    let start = Barrier::new(THREADS);
    let kept: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|thread| {
                let (engine, start) = (&engine, &start);
                s.spawn(move || churn(engine, thread, start))
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a churn thread panicked"))
            .collect()
    });
    for id in &kept {
        let t = engine.open(id).unwrap_or_else(|e| panic!("kept {id}: {e}"));
        assert_eq!(t.all_nodes().unwrap().len(), 1, "{id}");
        t.release().unwrap();
    }
    let mut stored = engine.list_stored().unwrap();
    stored.sort();
    let mut want = kept.clone();
    want.sort();
    assert_eq!(stored, want, "exactly the kept traces are stored");
    engine.shutdown().unwrap();
    let s = engine.stats();
    assert_eq!(s.persist_errors, 0, "{s:?}");
    assert_eq!(s.events_dropped, 0, "{s:?}");
    assert!(s.events_persisted > 0, "{s:?}");
    assert!(matches!(engine.list_stored(), Err(Error::ShutDown)));
}

fn builder() -> tracepool::EngineBuilder {
    Engine::builder()
        .capacity(16)
        .workers(2)
        .on_exhausted(Exhausted::Wait(std::time::Duration::from_secs(10)))
}

#[test]
fn local_driver_create_release_remove_from_many_threads() {
    let dir = tempfile::tempdir().unwrap();
    run(builder().local(dir.path()).build().unwrap());
    assert_only_kept_files(dir.path());
}

#[test]
fn store_driver_create_release_remove_from_many_threads() {
    let dir = tempfile::tempdir().unwrap();
    run(builder().store(dir.path().join("db")).build().unwrap());
}

/// Nothing but shard directories, their temp directories and kept traces.
fn assert_only_kept_files(base: &Path) {
    for shard in std::fs::read_dir(base).unwrap() {
        let shard = shard.unwrap();
        assert!(shard.file_type().unwrap().is_dir());
        for e in std::fs::read_dir(shard.path()).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            if name == ".tmp" {
                let left: Vec<_> = std::fs::read_dir(e.path()).unwrap().collect();
                assert!(left.is_empty(), "leftover temp files: {left:?}");
                continue;
            }
            assert!(
                e.file_type().unwrap().is_dir() && !name.starts_with('.'),
                "unexpected {}",
                e.path().display()
            );
        }
    }
}
