//! The `tracing` Layer (feature `tracing`) on `tracing_subscriber`'s
//! registry: root spans start traces, spans become nodes at creation,
//! events become log lines, close completes or fails, the root's close
//! releases; spans entered across `.await` points and from several threads;
//! spans outside roots cost nothing in tracepool.

use serde_json::json;
use tracing::instrument::WithSubscriber;
use tracing::{Dispatch, Instrument, debug, error, info, info_span, warn};
use tracing_subscriber::layer::SubscriberExt;

use tracepool::layer::TraceLayer;
use tracepool::{Engine, Exhausted, Level, NodeData, NodeStatus, TraceStatus};

fn engine() -> Engine {
    Engine::builder()
        .capacity(8)
        .workers(1)
        .on_exhausted(Exhausted::Error)
        .memory()
        .build()
        .unwrap()
}

fn dispatch(layer: TraceLayer) -> Dispatch {
    Dispatch::new(tracing_subscriber::registry().with(layer))
}

fn by_label<'a>(nodes: &'a [NodeData], label: &str) -> &'a NodeData {
    nodes
        .iter()
        .find(|n| n.label == label)
        .unwrap_or_else(|| panic!("no node labelled {label}"))
}

#[test]
fn spans_events_and_fields_map_to_nodes_and_logs() {
    let engine = engine();
    let d = dispatch(TraceLayer::new(engine.clone()));
    tracing::dispatcher::with_default(&d, || {
        let root = info_span!(
            "request",
            tracepool.trace = true,
            tracepool.id = "req-map",
            method = "GET",
            n = 3u64
        );
        let _in_root = root.enter();
        let trace = engine
            .load("req-map")
            .expect("the root span checked a trace out");
        info!(user = "ann", "started");
        {
            let child = info_span!(
                "child",
                k = 1.5,
                flag = false,
                tracepool.note = "left out",
                out = tracing::field::Empty,
                tracepool.output = tracing::field::Empty
            );
            let _in_child = child.enter();
            tracing::trace!("fine detail");
            debug!(x = 1, "dbg");
            warn!("careful");
            child.record("out", 7);
            child.record("tracepool.output", "result");
            // A root span inside a recorded span is an ordinary node.
            let _nested = info_span!("nested", tracepool.trace = true).entered();
            assert_eq!(engine.list(), vec!["req-map".to_owned()]);
        }
        {
            let failing = info_span!("failing", error = tracing::field::Empty);
            failing.record("error", "boom");
        }
        drop(info_span!("failing at creation", error = %"bad input"));
        error!("bad thing");

        let nodes = trace.all_nodes().unwrap();
        assert_eq!(nodes.len(), 5);
        let (req, child, nested) = (
            by_label(&nodes, "request"),
            by_label(&nodes, "child"),
            by_label(&nodes, "nested"),
        );
        assert_eq!(req.input, Some(json!({"method": "GET", "n": 3})));
        assert_eq!(req.status, NodeStatus::Running);
        assert_eq!(child.parent_ids, vec![req.id.clone()]);
        assert_eq!(child.input, Some(json!({"k": 1.5, "flag": false})));
        assert_eq!(child.metadata.get("out"), Some(&json!(7)));
        assert_eq!(child.output, Some(json!("result")));
        assert_eq!(child.status, NodeStatus::Completed);
        assert_eq!(nested.parent_ids, vec![child.id.clone()]);
        assert!(nested.input.as_ref().is_none_or(|v| v.is_null()));
        for label in ["failing", "failing at creation"] {
            let n = by_label(&nodes, label);
            assert_eq!(n.status, NodeStatus::Failed, "{label}");
            assert_eq!(n.parent_ids, vec![req.id.clone()]);
        }
        let fail_log = |label: &str| {
            trace.logs(Some(&by_label(&nodes, label).id)).unwrap()[0]
                .message
                .clone()
        };
        assert_eq!(fail_log("failing"), "Node failed: boom");
        assert_eq!(fail_log("failing at creation"), "Node failed: bad input");

        let root_logs: Vec<_> = trace
            .logs(Some(&req.id))
            .unwrap()
            .into_iter()
            .map(|l| (l.level, l.message, l.data))
            .collect();
        assert_eq!(
            root_logs,
            vec![
                (Level::Info, "started".to_owned(), json!({"user": "ann"})),
                (
                    Level::Error,
                    "bad thing".to_owned(),
                    serde_json::Value::Null
                ),
            ]
        );
        let child_logs: Vec<_> = trace
            .logs(Some(&child.id))
            .unwrap()
            .into_iter()
            .map(|l| (l.level, l.message, l.data))
            .collect();
        assert_eq!(
            child_logs,
            vec![
                (
                    Level::Debug,
                    "fine detail".to_owned(),
                    serde_json::Value::Null
                ),
                (Level::Debug, "dbg".to_owned(), json!({"x": 1})),
                (Level::Warn, "careful".to_owned(), serde_json::Value::Null),
            ]
        );
    });
    // The root span closed: the trace was completed and released.
    assert!(!engine.is_loaded("req-map"));
    assert!(engine.list().is_empty());
}

#[test]
fn the_root_close_completes_marks_complete_and_releases() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::builder()
        .capacity(4)
        .workers(1)
        .local(dir.path())
        .build()
        .unwrap();
    let d = dispatch(TraceLayer::new(engine.clone()));
    tracing::dispatcher::with_default(&d, || {
        let root = info_span!("job", tracepool.trace = true, tracepool.id = "job-1");
        root.in_scope(|| {
            let _s = info_span!("step").entered();
            info!("working");
        });
        assert!(engine.is_loaded("job-1"));
    });
    assert!(!engine.is_loaded("job-1"));
    engine.flush_blocking().unwrap();
    let stored = engine.read_stored("job-1").unwrap();
    assert_eq!(stored.info.status, TraceStatus::Completed);
    assert_eq!(stored.nodes.len(), 2);
    assert!(
        stored
            .nodes
            .iter()
            .all(|n| n.status == NodeStatus::Completed)
    );
    assert_eq!(stored.logs.len(), 1);
    assert_eq!(engine.stats().auto_released, 0); // released explicitly
}

#[tracing::instrument(skip_all, fields(id = id))]
fn handle_job(id: u64) -> u64 {
    info!("handling");
    nested_work(id)
}

#[tracing::instrument]
fn nested_work(n: u64) -> u64 {
    debug!(n, "nested");
    n * 2
}

#[test]
fn root_spans_by_name_and_instrumented_functions() {
    let engine = engine();
    let layer = TraceLayer::builder(engine.clone())
        .root_spans(["handle_job"])
        .build();
    let d = dispatch(layer);
    let dir_engine = engine.clone();
    tracing::dispatcher::with_default(&d, || {
        // Instrumented code, no other change: each call is a trace.
        assert_eq!(handle_job(21), 42);
        assert_eq!(handle_job(1), 2);
        // Observe one call while it runs, through a step inside it.
        let _root = info_span!("handle_job", id = 5u64).entered();
        let node = tracepool::current().expect("the span's node is current");
        let nodes = dir_engine
            .load(&dir_engine.list()[0])
            .unwrap()
            .all_nodes()
            .unwrap();
        assert_eq!(nodes[0].label, "handle_job");
        assert_eq!(nodes[0].input, Some(json!({"id": 5})));
        assert_eq!(node.id(), nodes[0].id);
    });
    let s = engine.stats();
    assert_eq!(s.in_use, 0);
    assert!(s.events_emitted > 0);
}

#[test]
fn steps_inside_a_span_nest_under_its_node() {
    let engine = engine();
    let d = dispatch(TraceLayer::new(engine.clone()));
    tracing::dispatcher::with_default(&d, || {
        let _root = info_span!("req", tracepool.trace = true, tracepool.id = "req-steps").entered();
        let trace = engine.load("req-steps").unwrap();
        let span_node = tracepool::current().unwrap();
        let step = trace.step("manual").unwrap(); // current: the span's node
        let inner = trace.step("inner").unwrap(); // current: `step`
        assert_eq!(
            step.data().unwrap().parent_ids,
            vec![span_node.id().to_owned()]
        );
        assert_eq!(inner.data().unwrap().parent_ids, vec![step.id().to_owned()]);
    });
}

#[test]
fn spans_entered_across_awaits_on_a_multi_threaded_runtime() {
    let engine = engine();
    let d = dispatch(TraceLayer::new(engine.clone()));
    // As with a global default subscriber: the registry closes a parent
    // span through the default subscriber of the thread where its last child
    // closes (here: a runtime worker, when a task's future is dropped).
    let for_workers = d.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .on_thread_start(move || std::mem::forget(tracing::dispatcher::set_default(&for_workers)))
        .build()
        .unwrap();
    let checked = rt.block_on(
        async {
            let root = info_span!("req", tracepool.trace = true, tracepool.id = "req-async");
            async {
                let mut tasks = Vec::new();
                for i in 0..4u64 {
                    let fut = async move {
                        for step in 0..3u64 {
                            tokio::task::yield_now().await;
                            info!(step, "tick");
                        }
                        async {
                            tokio::task::yield_now().await;
                            info!("inner work");
                        }
                        .instrument(info_span!("inner"))
                        .await;
                    };
                    // Created while `req` is current: its child.
                    let span = info_span!("task", i);
                    tasks.push(tokio::spawn(fut.instrument(span).with_current_subscriber()));
                }
                for t in tasks {
                    t.await.unwrap();
                }
                let trace = engine.load("req-async").unwrap();
                let nodes = trace.all_nodes().unwrap();
                assert_eq!(nodes.len(), 1 + 4 + 4);
                let req = by_label(&nodes, "req");
                for task in nodes.iter().filter(|n| n.label == "task") {
                    assert_eq!(task.parent_ids, vec![req.id.clone()]);
                    assert_eq!(task.status, NodeStatus::Completed);
                    let logs = trace.logs(Some(&task.id)).unwrap();
                    assert_eq!(logs.len(), 3);
                    assert!(logs.iter().all(|l| l.message == "tick"));
                    assert_eq!(task.children.len(), 1);
                    let inner = trace.node(&task.children[0]).unwrap().unwrap();
                    assert_eq!(inner.label, "inner");
                    assert_eq!(
                        trace.logs(Some(&inner.id)).unwrap()[0].message,
                        "inner work"
                    );
                }
                true
            }
            .instrument(root)
            .await
        }
        .with_subscriber(d.clone()),
    );
    assert!(checked);
    assert!(!engine.is_loaded("req-async"));
}

#[test]
fn spans_from_several_threads() {
    let engine = engine();
    let d = dispatch(TraceLayer::new(engine.clone()));
    tracing::dispatcher::with_default(&d, || {
        let root = info_span!("req", tracepool.trace = true, tracepool.id = "req-threads");
        let trace = engine.load("req-threads").unwrap();
        std::thread::scope(|s| {
            for i in 0..4u64 {
                let (root, d) = (root.clone(), d.clone());
                s.spawn(move || {
                    tracing::dispatcher::with_default(&d, || {
                        let span = info_span!(parent: &root, "worker", i);
                        let _in = span.enter();
                        info!(i, "on a thread");
                        root.in_scope(|| info!("to the root"));
                    })
                });
            }
        });
        let nodes = trace.all_nodes().unwrap();
        assert_eq!(nodes.len(), 5);
        let req = by_label(&nodes, "req");
        let workers: Vec<_> = nodes.iter().filter(|n| n.label == "worker").collect();
        assert_eq!(workers.len(), 4);
        for w in workers {
            assert_eq!(w.parent_ids, vec![req.id.clone()]);
            assert_eq!(w.status, NodeStatus::Completed);
            assert_eq!(trace.logs(Some(&w.id)).unwrap().len(), 1);
        }
        assert_eq!(trace.logs(Some(&req.id)).unwrap().len(), 4);
    });
    assert!(engine.list().is_empty());
}

#[test]
fn spans_outside_roots_change_nothing_in_tracepool() {
    let engine = engine();
    let d = dispatch(TraceLayer::new(engine.clone()));
    tracing::dispatcher::with_default(&d, || {
        let before = engine.stats();
        for i in 0..100u64 {
            let span = info_span!("plain", i, tracepool.trace = false);
            let _in = span.enter();
            info!(y = 2, "event");
            info_span!("child").in_scope(|| warn!("w"));
        }
        info!("no span at all");
        assert_eq!(engine.stats(), before);
        assert!(engine.list().is_empty());
        assert!(tracepool::current().is_none());
    });
}

#[test]
fn a_root_that_cannot_get_a_slot_is_skipped() {
    let engine = Engine::builder()
        .capacity(1)
        .workers(1)
        .on_exhausted(Exhausted::Error)
        .memory()
        .build()
        .unwrap();
    let d = dispatch(TraceLayer::new(engine.clone()));
    tracing::dispatcher::with_default(&d, || {
        let _a = info_span!("a", tracepool.trace = true, tracepool.id = "a").entered();
        let _b =
            info_span!(parent: None, "b", tracepool.trace = true, tracepool.id = "b").entered();
        info!("logged on nothing");
        let _c = info_span!("c").entered(); // child of `b`: not recorded
        assert_eq!(engine.list(), vec!["a".to_owned()]);
        assert_eq!(engine.load("a").unwrap().all_nodes().unwrap().len(), 1);
    });
    assert!(engine.list().is_empty());
}
