//! Reference catalogue §8.3 (trace_concurrent_test.go) with exact counts, and
//! 64 threads sharing one trace: exact node/log/event counts, contiguous seqs,
//! one terminal event per node.

mod common;

use std::collections::HashSet;
use std::sync::Barrier;

use common::*;
use serde_json::json;
use tracepool::{
    Delivery, Error, EventKind, NodeOptions, NodeStatus, ParallelInput, SpaceOptions, TraceOptions,
};

#[test]
fn concurrent_node_operations() {
    let engine = engine(2, 1);
    let trace = engine.create(TraceOptions::new()).unwrap();
    trace.add("root", NodeOptions::new()).unwrap();
    let inputs = (1..=5)
        .map(|i| ParallelInput::new(json!(i), NodeOptions::new().label(format!("Worker {i}"))))
        .collect();
    let nodes = trace.parallel(inputs).unwrap();
    std::thread::scope(|s| {
        for (i, n) in nodes.iter().enumerate() {
            s.spawn(move || {
                n.info("working").debug("detail");
                n.set_metadata("worker_id", i + 1).unwrap();
                n.complete(Some(json!({ "worker": i + 1 }))).unwrap();
            });
        }
    });
    for (i, n) in nodes.iter().enumerate() {
        let d = n.data().unwrap();
        assert_eq!(d.status, NodeStatus::Completed);
        assert_eq!(d.metadata["worker_id"], json!(i + 1));
        assert_eq!(d.output, Some(json!({ "worker": i + 1 })));
        assert_eq!(trace.logs(Some(n.id())).unwrap().len(), 2);
    }
    let ev = history(&trace);
    // init, root start, root auto-complete, parallel start, 5 x (2 logs, updated, complete)
    assert_eq!(ev.len(), 4 + 5 * 4);
    assert_contiguous_from(&ev, 1);
    assert_eq!(count(&ev, EventKind::NodeComplete), 6);
    assert_one_terminal_max(&ev);
}

#[test]
fn concurrent_space_operations() {
    let engine = engine(2, 1);
    let trace = engine.create(TraceOptions::new()).unwrap();
    let sp = trace.create_space(SpaceOptions::new().label("S")).unwrap();
    std::thread::scope(|s| {
        for i in 0..10 {
            let (t, id) = (&trace, &sp.id);
            s.spawn(move || {
                t.set_space_value(id, &format!("key_{i}"), format!("value_{i}"))
                    .unwrap()
            });
        }
    });
    assert_eq!(trace.space_keys(&sp.id).unwrap().len(), 10);
    std::thread::scope(|s| {
        for i in 0..10 {
            let (t, id) = (&trace, &sp.id);
            s.spawn(move || {
                assert_eq!(
                    t.get_space_value(id, &format!("key_{i}")).unwrap(),
                    Some(json!(format!("value_{i}")))
                );
            });
        }
    });
    let ev = history(&trace);
    assert_eq!(count(&ev, EventKind::MemoryAdd), 10);
    assert_eq!(count(&ev, EventKind::MemoryUpdate), 0);
}

#[test]
fn concurrent_space_creation() {
    let engine = engine(2, 1);
    let trace = engine.create(TraceOptions::new()).unwrap();
    let ids: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..10)
            .map(|i| {
                let t = &trace;
                s.spawn(move || {
                    t.create_space(SpaceOptions::new().label(format!("S{i}")))
                        .unwrap()
                        .id
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let spaces = trace.spaces().unwrap();
    assert_eq!(spaces.len(), 10);
    let got: HashSet<_> = spaces.iter().map(|s| s.id.clone()).collect();
    assert_eq!(got, ids.into_iter().collect::<HashSet<_>>());
    assert_eq!(count(&history(&trace), EventKind::SpaceCreated), 10);
}

#[test]
fn concurrent_subscribers_all_receive() {
    let engine = engine(2, 1);
    let trace = engine.create(TraceOptions::new()).unwrap();
    let subs: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..5)
            .map(|_| s.spawn(|| trace.subscribe().unwrap()))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(engine.stats().subscribers, 5);
    trace.add("x", NodeOptions::new()).unwrap();
    trace.mark_complete().unwrap();
    for mut sub in subs {
        let got = events_only(drain_blocking(&mut sub));
        assert_eq!(
            kinds(&got),
            [EventKind::Init, EventKind::NodeStart, EventKind::Complete]
        );
    }
    assert_eq!(engine.stats().subscribers, 0);
}

#[test]
fn concurrent_trace_creation() {
    let engine = engine(16, 2);
    let traces: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..10)
            .map(|_| s.spawn(|| engine.create(TraceOptions::new()).unwrap()))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ids: HashSet<_> = traces.iter().map(|t| t.id().to_owned()).collect();
    assert_eq!(ids.len(), 10);
    assert!(ids.iter().all(|id| engine.is_loaded(id)));
}

#[test]
fn concurrent_logging_without_root_is_dropped_and_counted() {
    let engine = engine(2, 1);
    let trace = engine.create(TraceOptions::new()).unwrap();
    std::thread::scope(|s| {
        for _ in 0..50 {
            s.spawn(|| {
                trace.info("i").debug("d").warn("w");
            });
        }
    });
    assert!(trace.logs(None).unwrap().is_empty());
    assert_eq!(kinds(&history(&trace)), [EventKind::Init]);
    // Per-trace counters are published by the workers: exact after a flush.
    engine.flush_blocking().unwrap();
    assert_eq!(engine.stats().logs_dropped, 150);
}

const THREADS: usize = 64;
const ITERS: usize = 10;

#[test]
fn sixty_four_threads_share_one_trace() {
    let engine = engine_with(2, 2, 8192, 8192);
    let trace = engine.create(TraceOptions::new()).unwrap();
    let root = trace.add("root", NodeOptions::new().label("Root")).unwrap();
    let own = trace
        .create_space(SpaceOptions::new().label("own"))
        .unwrap();
    let shared = trace
        .create_space(SpaceOptions::new().label("shared"))
        .unwrap();
    let barrier = Barrier::new(THREADS);
    std::thread::scope(|s| {
        for i in 0..THREADS {
            let (trace, root, own, shared, barrier) = (&trace, &root, &own, &shared, &barrier);
            s.spawn(move || {
                barrier.wait();
                for k in 0..ITERS {
                    trace.info(format!("t{i} k{k}"));
                    let child = root
                        .add(json!({"t": i, "k": k}), NodeOptions::new().label("child"))
                        .unwrap();
                    child.info("child log");
                    trace
                        .set_space_value(&own.id, &format!("t{i}_{k}"), k)
                        .unwrap();
                    trace.set_space_value(&shared.id, "hot", i).unwrap();
                    child.set_metadata("k", k).unwrap();
                    child.complete(Some(json!(k))).unwrap();
                }
            });
        }
    });
    trace.mark_complete().unwrap();

    let n = THREADS * ITERS;
    let nodes = trace.all_nodes().unwrap();
    assert_eq!(nodes.len(), 1 + n);
    assert_eq!(nodes[0].id, root.id());
    assert_eq!(nodes[0].children.len(), n);
    assert_eq!(nodes[0].status, NodeStatus::Running);
    let ids: HashSet<_> = nodes.iter().map(|d| d.id.clone()).collect();
    assert_eq!(ids.len(), 1 + n);
    assert!(
        nodes[1..]
            .iter()
            .all(|d| d.status == NodeStatus::Completed && d.parent_ids == [root.id()])
    );

    assert_eq!(trace.logs(None).unwrap().len(), 2 * n);
    assert_eq!(trace.logs(Some(root.id())).unwrap().len(), n);
    assert_eq!(trace.space_keys(&own.id).unwrap().len(), n);
    assert_eq!(trace.space_keys(&shared.id).unwrap(), ["hot"]);

    let ev = history(&trace);
    // init, root start, 2 x space_created, 7 per iteration, complete.
    assert_eq!(ev.len(), 4 + 7 * n + 1);
    assert_contiguous_from(&ev, 1);
    assert_eq!(count(&ev, EventKind::LogAdded), 2 * n);
    assert_eq!(count(&ev, EventKind::NodeStart), 1 + n);
    assert_eq!(count(&ev, EventKind::NodeUpdated), n);
    assert_eq!(count(&ev, EventKind::NodeComplete), n);
    assert_eq!(count(&ev, EventKind::NodeFailed), 0);
    assert_eq!(count(&ev, EventKind::MemoryAdd), n + 1);
    assert_eq!(count(&ev, EventKind::MemoryUpdate), n - 1);
    assert_eq!(count(&ev, EventKind::Complete), 1);
    assert_eq!(ev.last().unwrap().kind, EventKind::Complete);
    let done = assert_one_terminal_max(&ev);
    assert_eq!(done.len(), n);
    assert!(!done.contains(root.id()));
    let starts = start_counts(&ev);
    assert_eq!(starts.len(), 1 + n);
    assert!(starts.values().all(|&c| c == 1));
    // Timestamps never go backwards within a trace.
    assert!(ev.windows(2).all(|w| w[0].timestamp <= w[1].timestamp));
    if on_redis() {
        // Per-trace counters are published by the workers, exact after a
        // flush; Redis round trips keep them busier than the memory driver.
        engine.flush_blocking().unwrap();
    }
    let st = engine.stats();
    assert_eq!(st.events_emitted as usize, ev.len());
}

/// Branches completing themselves race the `add` that auto-completes them:
/// every branch gets exactly one `node_complete`.
#[test]
fn branch_completion_races_auto_complete() {
    let engine = engine(2, 2);
    for _ in 0..20 {
        let trace = engine.create(TraceOptions::new()).unwrap();
        trace.add("root", NodeOptions::new()).unwrap();
        let branches = trace
            .parallel(
                (0..THREADS)
                    .map(|i| ParallelInput::new(json!(i), NodeOptions::new()))
                    .collect(),
            )
            .unwrap();
        let barrier = Barrier::new(THREADS + 1);
        let (results, merge) = std::thread::scope(|s| {
            let hs: Vec<_> = branches
                .iter()
                .map(|b| {
                    let barrier = &barrier;
                    s.spawn(move || {
                        barrier.wait();
                        b.complete(Some(json!("self")))
                    })
                })
                .collect();
            barrier.wait();
            let merge = trace.add("merge", NodeOptions::new()).unwrap();
            let results: Vec<_> = hs.into_iter().map(|h| h.join().unwrap()).collect();
            (results, merge)
        });
        let ok = results.iter().filter(|r| r.is_ok()).count();
        let finished = results
            .iter()
            .filter(|r| matches!(r, Err(Error::NodeFinished)))
            .count();
        assert_eq!(ok + finished, THREADS, "{results:?}");

        let ev = history(&trace);
        assert_contiguous_from(&ev, 1);
        let done = assert_one_terminal_max(&ev);
        for b in &branches {
            assert!(done.contains(b.id()));
            assert_eq!(b.data().unwrap().status, NodeStatus::Completed);
        }
        // The completions done by `add` sit right before the merge's node_start.
        let merge_at = ev
            .iter()
            .position(|e| e.kind == EventKind::NodeStart && e.node_id == merge.id())
            .unwrap();
        let auto = ev[..merge_at]
            .iter()
            .rev()
            .take_while(|e| e.kind == EventKind::NodeComplete)
            .count();
        assert!(auto >= finished);
        assert_eq!(merge.data().unwrap().parent_ids.len(), THREADS);
        trace.release().unwrap();
    }
}

#[test]
fn subscriber_during_concurrent_writes_gets_no_duplicates() {
    let engine = engine_with(2, 2, 4096, 4096);
    let trace = engine.create(TraceOptions::new()).unwrap();
    let root = trace.add("root", NodeOptions::new()).unwrap();
    let mut sub = trace.subscribe().unwrap();
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..50 {
                    root.info("x");
                }
            });
        }
    });
    trace.mark_complete().unwrap();
    let got = drain_blocking(&mut sub);
    assert!(got.iter().all(|d| matches!(d, Delivery::Event(_))));
    let got = events_only(got);
    assert_eq!(got.len(), 2 + 400 + 1);
    assert_contiguous_from(&got, 1);
}
