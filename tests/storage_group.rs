//! Group commit (issue 11, point 3): a worker hands the batches of every
//! trace it visits on one wake-up to `Driver::write_group` in one call, and
//! finishes each trace with its own result — one refused trace
//! (`AlreadyExists`) or one failed trace does not hold the others back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tracepool::{Driver, Engine, Error, NodeOptions, TraceOptions, WriteBatch};

/// Records every group; refuses the first batch of one trace id, fails
/// every batch of another until told otherwise.
#[derive(Debug, Default)]
struct Recorder {
    groups: Mutex<Vec<usize>>,
    events: Mutex<HashMap<String, u64>>,
    refuse: Mutex<String>,
    fail: Mutex<String>,
    /// Says it does not commit groups: gets one trace per call.
    single: Mutex<bool>,
}

#[derive(Debug, Clone)]
struct Shared(Arc<Recorder>);

impl Driver for Shared {
    fn name(&self) -> &'static str {
        "recorder"
    }

    fn write(&self, batch: &WriteBatch<'_>) -> tracepool::Result<()> {
        let mut results = Vec::new();
        self.write_group(std::slice::from_ref(batch), &mut results);
        results.pop().unwrap()
    }

    fn commits_groups(&self) -> bool {
        !*self.0.single.lock().unwrap()
    }

    fn write_group(&self, batches: &[WriteBatch<'_>], results: &mut Vec<tracepool::Result<()>>) {
        let d = &self.0;
        d.groups.lock().unwrap().push(batches.len());
        for b in batches {
            if b.is_new_trace() && *d.refuse.lock().unwrap() == b.trace_id {
                results.push(Err(Error::AlreadyExists));
            } else if *d.fail.lock().unwrap() == b.trace_id {
                results.push(Err(Error::Storage {
                    location: b.trace_id.to_owned(),
                    message: "injected failure".into(),
                    source: None,
                }));
            } else {
                *d.events
                    .lock()
                    .unwrap()
                    .entry(b.trace_id.to_owned())
                    .or_default() += b.len() as u64;
                results.push(Ok(()));
            }
        }
    }
}

fn traces(e: &Engine, ids: &[String]) -> Vec<tracepool::Trace> {
    ids.iter()
        .map(|id| {
            let t = e.create(TraceOptions::new().id(id)).unwrap();
            t.add(json!(1), NodeOptions::new().label("step")).unwrap();
            t.info("a line");
            t
        })
        .collect()
}

#[test]
fn one_worker_wake_up_is_one_group_and_each_trace_keeps_its_outcome() {
    let d = Arc::new(Recorder::default());
    *d.refuse.lock().unwrap() = "trace-3".into();
    *d.fail.lock().unwrap() = "trace-5".into();
    let e = Engine::builder()
        .capacity(64)
        .workers(1)
        // The worker wakes for the flush only: every trace is queued then.
        .flush_interval(Duration::from_secs(30))
        .drain_timeout(Duration::from_secs(2))
        .driver(Shared(d.clone()))
        .build()
        .unwrap();
    let ids: Vec<String> = (0..16).map(|i| format!("trace-{i}")).collect();
    let ts = traces(&e, &ids);
    // One trace refused, one failing: the flush reports an error.
    assert!(e.flush_blocking().is_err());
    let groups = d.groups.lock().unwrap().clone();
    assert_eq!(
        groups[0], 16,
        "the first wake-up hands every trace over: {groups:?}"
    );
    {
        let events = d.events.lock().unwrap();
        for id in &ids {
            let stored = events.get(id).copied().unwrap_or(0);
            match id.as_str() {
                "trace-3" | "trace-5" => assert_eq!(stored, 0, "{id}"),
                _ => assert!(stored >= 3, "{id}: {stored} events"),
            }
        }
    }
    let stats = e.stats();
    assert!(stats.persist_errors >= 2, "{stats:?}");
    // The refused trace's writes are dropped for good; the failing one's
    // are kept and land once the driver recovers, in a later group.
    d.fail.lock().unwrap().clear();
    for t in &ts {
        t.info("more");
    }
    e.flush_blocking().unwrap();
    let events = d.events.lock().unwrap().clone();
    assert!(!events.contains_key("trace-3"), "{events:?}");
    assert!(events["trace-5"] >= 4, "{events:?}");
    assert!(events["trace-0"] >= 4, "{events:?}");
    drop(ts);
    e.shutdown().unwrap();
}

#[test]
fn a_driver_that_does_not_commit_groups_gets_one_trace_per_call() {
    let d = Arc::new(Recorder::default());
    *d.single.lock().unwrap() = true;
    let e = Engine::builder()
        .capacity(64)
        .workers(1)
        .flush_interval(Duration::from_secs(30))
        .driver(Shared(d.clone()))
        .build()
        .unwrap();
    let ids: Vec<String> = (0..8).map(|i| format!("single-{i}")).collect();
    let ts = traces(&e, &ids);
    e.flush_blocking().unwrap();
    let groups = d.groups.lock().unwrap().clone();
    assert_eq!(groups, vec![1; 8], "one trace per call: {groups:?}");
    assert_eq!(d.events.lock().unwrap().len(), 8);
    drop(ts);
    e.shutdown().unwrap();
}
