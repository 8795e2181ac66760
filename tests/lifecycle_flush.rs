//! `flush_blocking` on an idle worker: for a driver whose calls are bounded
//! local work (`Driver::flushes_on_caller`), the flushing thread writes the
//! worker's queue itself instead of waking it; for any other driver the
//! worker writes. A draining slot whose batch failed in such a pass is
//! retried by the worker, and concurrent flushes from several threads,
//! racing releases, still see everything released before them stored.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use serde_json::json;
use tracepool::{
    Cursor, Driver, Engine, Error, MemoryDriver, NodeOptions, TraceOptions, WriteBatch,
};

/// The memory driver, recording which thread made each write; the first
/// `fail` writes fail.
#[derive(Debug)]
struct Recording {
    on_caller: bool,
    threads: Arc<Mutex<Vec<ThreadId>>>,
    fail: Arc<AtomicUsize>,
    inner: MemoryDriver,
}

impl Driver for Recording {
    fn name(&self) -> &'static str {
        "recording"
    }
    fn flushes_on_caller(&self) -> bool {
        self.on_caller
    }
    fn write(&self, batch: &WriteBatch<'_>) -> tracepool::Result<()> {
        self.threads
            .lock()
            .unwrap()
            .push(std::thread::current().id());
        let failing = self
            .fail
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return Err(Error::Storage {
                location: "recording".into(),
                message: "failing on purpose".into(),
                source: None,
            });
        }
        self.inner.write(batch)
    }
    common::delegate_reads!();
}

fn recording(on_caller: bool, fail: usize) -> (Engine, Arc<Mutex<Vec<ThreadId>>>) {
    let threads = Arc::new(Mutex::new(Vec::new()));
    let e = Engine::builder()
        .driver(Recording {
            on_caller,
            threads: threads.clone(),
            fail: Arc::new(AtomicUsize::new(fail)),
            inner: MemoryDriver::new(),
        })
        .workers(1)
        // The worker visits only when told to.
        .flush_interval(Duration::from_secs(3600))
        .drain_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    // Let the worker park (idle) before anything is queued.
    std::thread::sleep(Duration::from_millis(50));
    (e, threads)
}

#[test]
fn a_blocking_flush_writes_an_idle_workers_queue_on_its_own_thread() {
    for on_caller in [true, false] {
        let (e, threads) = recording(on_caller, 0);
        let t = e.create(TraceOptions::new()).unwrap();
        t.info("queued");
        e.flush_blocking().unwrap();
        let t2 = e.create(TraceOptions::new()).unwrap();
        t2.info("queued too");
        t2.release().unwrap();
        e.flush_blocking().unwrap();
        let me = std::thread::current().id();
        let writers = threads.lock().unwrap().clone();
        assert_eq!(writers.len(), 2, "on_caller={on_caller}");
        assert!(
            writers.iter().all(|w| (*w == me) == on_caller),
            "on_caller={on_caller}: the flushing thread {me:?}, writers {writers:?}"
        );
        assert_eq!(e.stats().draining, 0);
        drop(t);
    }
}

#[test]
fn a_failed_drain_in_a_flushing_threads_pass_is_retried_by_the_worker() {
    let (e, threads) = recording(true, 1);
    let t = e.create(TraceOptions::new()).unwrap();
    t.info("first attempt fails");
    t.release().unwrap();
    assert_eq!(e.stats().draining, 1);
    // The pass runs here and fails: the flush reports it.
    assert!(matches!(e.flush_blocking(), Err(Error::Storage { .. })));
    // The worker retries the drain (10 ms later) on its own thread.
    let deadline = Instant::now() + Duration::from_secs(10);
    while e.stats().draining > 0 {
        assert!(Instant::now() < deadline, "the drain was never retried");
        std::thread::sleep(Duration::from_millis(5));
    }
    e.flush_blocking().unwrap();
    let writers = threads.lock().unwrap().clone();
    assert_eq!(writers.len(), 2);
    assert_eq!(writers[0], std::thread::current().id());
    assert_ne!(writers[1], std::thread::current().id());
    assert_eq!(e.stats().events_dropped, 0);
}

#[test]
fn concurrent_flushes_see_everything_released_before_them() {
    let dir = tempfile::tempdir().unwrap();
    for local in [false, true] {
        let base = dir.path().join(if local { "local" } else { "store" });
        let builder = Engine::builder().capacity(64).workers(2);
        let e = if local {
            builder.local(&base)
        } else {
            builder.store(&base)
        }
        .build()
        .unwrap();
        std::thread::scope(|s| {
            for thread in 0..3 {
                let e = &e;
                s.spawn(move || {
                    for round in 0..150 {
                        let t = e.create(TraceOptions::new()).unwrap();
                        t.add(json!({ "round": round }), NodeOptions::new().label("step"))
                            .unwrap();
                        t.info("a line");
                        t.complete(Some(json!(true))).unwrap();
                        let emitted = t.events(Cursor::Seq(0)).unwrap().len();
                        let id = t.id().to_owned();
                        t.release().unwrap();
                        if round % 3 == thread % 3 {
                            e.flush_blocking().unwrap();
                            let stored = e.read_stored(&id).unwrap();
                            assert_eq!(
                                stored.events.len(),
                                emitted,
                                "local={local} thread {thread} round {round}"
                            );
                        }
                        if round % 2 == 0 {
                            e.remove(&id).unwrap();
                        }
                    }
                });
            }
        });
        e.flush_blocking().unwrap();
        let st = e.stats();
        assert_eq!((st.draining, st.in_use), (0, 0), "local={local}: {st:?}");
        assert_eq!(st.events_dropped, 0, "local={local}: {st:?}");
        assert_eq!(st.persist_errors, 0, "local={local}: {st:?}");
        assert_eq!(e.list_stored().unwrap().len(), 3 * 75, "local={local}");
        e.shutdown().unwrap();
    }
}
