//! No caller ever waits for the driver: with a driver whose writes block
//! until a gate opens, `create`, 1,000 operations, `release`, `mark_complete`
//! with `auto_archive` and handle drops all return while the gate is closed
//! (the gate opens only after every call returned, under a 10 s watchdog:
//! a call that waited for the driver would hang the test). Then `flush`
//! returns and every read sees everything.

mod common;

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use common::within;
use serde_json::json;
use tracepool::{
    Cursor, Driver, Durability, Engine, LocalDriver, NodeOptions, SpaceOptions, TraceOptions,
    WriteBatch,
};

#[derive(Debug, Default)]
struct Gate {
    open: Mutex<bool>,
    cv: Condvar,
}

impl Gate {
    fn wait(&self) {
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.cv.wait(open).unwrap();
        }
    }

    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.cv.notify_all();
    }
}

/// The local driver behind a gate: writes and archives wait for it.
#[derive(Debug)]
struct GatedDriver {
    gate: Arc<Gate>,
    inner: LocalDriver,
}

impl Driver for GatedDriver {
    fn name(&self) -> &'static str {
        "gated"
    }
    fn wants_documents(&self) -> bool {
        true
    }
    fn write(&self, batch: &WriteBatch<'_>) -> tracepool::Result<()> {
        self.gate.wait();
        self.inner.write(batch)
    }
    fn archive(&self, id: &str) -> tracepool::Result<()> {
        self.gate.wait();
        self.inner.archive(id)
    }
    common::delegate_reads!();
}

/// The slowest of the calls made while the gate was closed.
fn timed<T>(slowest: &mut Duration, f: impl FnOnce() -> T) -> T {
    let t0 = Instant::now();
    let r = f();
    *slowest = (*slowest).max(t0.elapsed());
    r
}

#[test]
fn callers_never_wait_for_a_blocked_driver() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(Gate::default());
    let engine = Engine::builder()
        .capacity(8)
        .workers(1)
        .driver(GatedDriver {
            gate: gate.clone(),
            inner: LocalDriver::new(dir.path(), Durability::Buffered).unwrap(),
        })
        .build()
        .unwrap();

    let e = engine.clone();
    let (ids, slowest) = within(10, move || {
        let mut slowest = Duration::ZERO;
        let s = &mut slowest;
        // create with a generated id, then 1,000 operations.
        let t = timed(s, || {
            e.create(TraceOptions::new().created_by("gated")).unwrap()
        });
        let root = timed(s, || {
            t.add(json!({"q": 1}), NodeOptions::new().label("root"))
                .unwrap()
        });
        let space = timed(s, || {
            t.create_space(SpaceOptions::new().label("S")).unwrap()
        });
        for i in 0..996 {
            match i % 4 {
                0 => {
                    timed(s, || root.info(format!("line {i}")));
                }
                1 => timed(s, || {
                    t.set_space_value(&space.id, &format!("k{}", (i / 4) % 50), i)
                        .unwrap()
                }),
                2 => timed(s, || {
                    root.add(i, NodeOptions::new().label("child"))
                        .unwrap()
                        .complete(Some(json!(i)))
                        .unwrap()
                }),
                _ => timed(s, || root.set_metadata("last", i).unwrap()),
            }
        }
        timed(s, || t.mark_complete().unwrap());
        let released = t.id().to_owned();
        timed(s, || t.release().unwrap());

        // mark_complete with auto_archive, then the handles are dropped.
        let a = timed(s, || {
            e.create(TraceOptions::new().auto_archive(true)).unwrap()
        });
        let an = timed(s, || {
            a.add("in", NodeOptions::new().label("archived")).unwrap()
        });
        timed(s, || a.mark_complete().unwrap());
        let archived = a.id().to_owned();
        timed(s, || drop(an));
        timed(s, || drop(a));

        // A third trace that is only dropped.
        let d = timed(s, || e.create(TraceOptions::new()).unwrap());
        let dn = timed(s, || d.add("x", NodeOptions::new()).unwrap());
        let dropped = d.id().to_owned();
        timed(s, || drop(d));
        timed(s, || drop(dn));
        let st = e.stats();
        assert_eq!(st.in_use, 0, "{st:?}");
        assert_eq!(st.draining, 3, "{st:?}");
        assert_eq!(st.auto_released, 2);
        ((released, archived, dropped), slowest)
    });
    // Generous: a call that waited for the gate would not have returned.
    assert!(slowest < Duration::from_secs(2), "slowest call {slowest:?}");

    gate.open();
    engine.flush_blocking().unwrap();
    let st = engine.stats();
    assert_eq!((st.in_use, st.draining, st.free), (0, 0, 8), "{st:?}");
    assert_eq!(st.persist_errors, 0);
    assert_eq!(st.events_persisted, st.events_emitted);

    let (released, archived, dropped) = ids;
    let t = engine.open(&released).unwrap();
    assert_eq!(t.all_nodes().unwrap().len(), 1 + 249);
    assert_eq!(t.logs(None).unwrap().len(), 249);
    // init, root start, space created, 249 x (log, memory write, child
    // start + complete, node update), complete.
    let events = t.events(Cursor::Seq(0)).unwrap();
    assert_eq!(events.len(), 3 + 249 * 5 + 1);
    assert!(
        events
            .iter()
            .enumerate()
            .all(|(i, e)| e.seq == i as u64 + 1)
    );
    assert!(t.is_complete());
    let space = &t.spaces().unwrap()[0];
    assert_eq!(t.space_keys(&space.id).unwrap().len(), 50);
    drop(t);
    let info = engine.info(&archived).unwrap();
    assert!(info.archived, "archived by the worker after its last batch");
    assert_eq!(
        engine.open(&archived).unwrap().all_nodes().unwrap()[0].label,
        "archived"
    );
    assert_eq!(engine.open(&dropped).unwrap().all_nodes().unwrap().len(), 1);
}
