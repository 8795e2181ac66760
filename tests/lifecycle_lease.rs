//! A trace held under a lease (a driver with `lease_renewal`, as Redis)
//! gives the lease up with its last batch, however its release and its
//! worker's batches interleave. The case that once leaked a lease: the
//! trace is released while its worker is writing a batch it took while the
//! trace was live (so not the last one); that batch finishing must not end
//! the drain, the batch that gives the lease up is still to come. Otherwise
//! the engine keeps renewing a lease of a trace it no longer has, and every
//! other engine gets `Leased` for that id.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tracepool::{Driver, Engine, Exhausted, MemoryDriver, TraceOptions, WriteBatch};

/// What the driver saw, and the gate its writes wait at.
#[derive(Debug, Default)]
struct Seen {
    /// Trace ids whose lease is held (taken, not yet given up).
    held: HashSet<String>,
    /// Writes that entered the driver.
    writes: usize,
    /// Batches marked as a trace's last one.
    releases: usize,
    open: bool,
}

#[derive(Debug, Default)]
struct Shared {
    seen: Mutex<Seen>,
    cv: Condvar,
}

impl Shared {
    /// Waits (at most 10 s) until `f` holds.
    fn wait_for(&self, what: &str, f: impl Fn(&Seen) -> bool) {
        let seen = self.seen.lock().unwrap();
        let (_seen, timeout) = self
            .cv
            .wait_timeout_while(seen, Duration::from_secs(10), |s| !f(s))
            .unwrap();
        assert!(!timeout.timed_out(), "timed out waiting for {what}");
    }

    fn update(&self, f: impl FnOnce(&mut Seen)) {
        f(&mut self.seen.lock().unwrap());
        self.cv.notify_all();
    }
}

/// The memory driver with leases kept as a set, and writes that wait at a
/// gate once they entered (so the test knows a worker is inside one).
#[derive(Debug)]
struct LeasingDriver {
    shared: Arc<Shared>,
    inner: MemoryDriver,
}

impl Driver for LeasingDriver {
    fn name(&self) -> &'static str {
        "leasing"
    }
    fn write(&self, batch: &WriteBatch<'_>) -> tracepool::Result<()> {
        self.shared.update(|s| s.writes += 1);
        self.shared.wait_for("the gate", |s| s.open);
        self.inner.write(batch)?;
        self.shared.update(|s| {
            if batch.is_new_trace() {
                s.held.insert(batch.trace_id.to_owned());
            }
            if batch.is_release() {
                s.releases += 1;
                s.held.remove(batch.trace_id);
            }
        });
        Ok(())
    }
    common::delegate_reads!();
    fn lease_renewal(&self) -> Option<Duration> {
        Some(Duration::from_secs(3600))
    }
    fn acquire_lease(&self, id: &str, _creating: bool) -> tracepool::Result<()> {
        self.shared.update(|s| {
            s.held.insert(id.to_owned());
        });
        Ok(())
    }
    fn release_lease(&self, id: &str) -> tracepool::Result<()> {
        self.shared.update(|s| {
            s.held.remove(id);
        });
        Ok(())
    }
}

fn engine(shared: &Arc<Shared>) -> Engine {
    Engine::builder()
        .driver(LeasingDriver {
            shared: shared.clone(),
            inner: MemoryDriver::new(),
        })
        .capacity(4)
        // A released trace drains (its lease goes with its last batch):
        // a full pool waits for one.
        .on_exhausted(Exhausted::Wait(Duration::from_secs(10)))
        .workers(1)
        // The worker visits only when told to (a flush or a release).
        .flush_interval(Duration::from_secs(3600))
        .build()
        .unwrap()
}

#[test]
fn a_trace_released_while_its_batch_is_written_still_gives_its_lease_up() {
    for by_drop in [false, true] {
        let shared = Arc::new(Shared::default());
        let e = Arc::new(engine(&shared));
        let t = e.create(TraceOptions::new().id("leased-1")).unwrap();
        t.info("before the release");
        // A flush makes the worker take the live trace's batch; the write
        // waits at the closed gate.
        let flusher = {
            let e = e.clone();
            std::thread::spawn(move || e.flush_blocking())
        };
        shared.wait_for("the worker inside a write", |s| s.writes == 1);
        // Released while that batch is in the driver.
        if by_drop {
            drop(t);
        } else {
            t.release().unwrap();
        }
        shared.update(|s| s.open = true);
        flusher.join().unwrap().unwrap();
        e.flush_blocking().unwrap();
        let seen = shared.seen.lock().unwrap();
        assert!(
            seen.held.is_empty(),
            "by_drop={by_drop}: the lease of {:?} was never given up",
            seen.held
        );
        assert_eq!(seen.releases, 1, "by_drop={by_drop}: one last batch");
        assert_eq!(
            seen.writes, 2,
            "by_drop={by_drop}: the live batch, the last"
        );
        drop(seen);
        assert_eq!(e.stats().draining, 0);
    }
}

#[test]
fn every_trace_gives_its_lease_up_once_however_release_and_writes_interleave() {
    // No gate: releases race the worker's visits freely.
    let shared = Arc::new(Shared::default());
    shared.update(|s| s.open = true);
    let e = engine(&shared);
    for round in 0..200 {
        let ids: Vec<String> = (0..3).map(|i| format!("t-{round}-{i}")).collect();
        let ts: Vec<_> = ids
            .iter()
            .map(|id| e.create(TraceOptions::new().id(id)).unwrap())
            .collect();
        for (i, t) in ts.iter().enumerate() {
            t.info(format!("line {i}"));
        }
        // Let the worker take some of them while they are live.
        e.flush_blocking().unwrap();
        for (i, t) in ts.into_iter().enumerate() {
            t.info("after the flush");
            if i % 2 == 0 {
                t.release().unwrap();
            } else {
                drop(t);
            }
        }
    }
    e.flush_blocking().unwrap();
    let seen = shared.seen.lock().unwrap();
    assert!(
        seen.held.is_empty(),
        "leases never given up: {:?}",
        seen.held
    );
    assert_eq!(seen.releases, 600);
}
