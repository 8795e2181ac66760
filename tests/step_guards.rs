//! Step guards: nesting through the current step, completion on drop,
//! failure while panicking, `fail`/`finish`, stale guards, detached steps
//! attached to futures (current per task, across `.await` points),
//! cancellation.

mod common;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use common::engine;
use serde_json::json;
use tracepool::{Error, InStep, NodeData, NodeOptions, NodeStatus, TraceOptions};

fn by_label<'a>(nodes: &'a [NodeData], label: &str) -> &'a NodeData {
    nodes
        .iter()
        .find(|n| n.label == label)
        .unwrap_or_else(|| panic!("no node labelled {label}"))
}

/// Returns `Pending` once (waking itself), then `Ready`: an `.await` point
/// where other futures of the same task get polled.
struct YieldNow(bool);

impl Future for YieldNow {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

fn yield_now() -> YieldNow {
    YieldNow(false)
}

#[test]
fn steps_nest_through_the_current_step_and_complete_on_drop() {
    let engine = engine(4, 1);
    let trace = engine.create(TraceOptions::new()).unwrap();
    assert!(tracepool::current().is_none());
    {
        let outer = trace.step("outer").unwrap();
        assert_eq!(tracepool::current().unwrap().id(), outer.id());
        {
            let inner = trace
                .step_with(json!({"q": 1}), NodeOptions::new().label("inner"))
                .unwrap();
            assert_eq!(tracepool::current().unwrap().id(), inner.id());
            inner.info("working");
            inner.output(json!("out")).unwrap();
            let leaf = inner.step("leaf").unwrap(); // Node::step, current is `inner`
            assert_eq!(leaf.data().unwrap().parent_ids, vec![inner.id().to_owned()]);
            assert_eq!(inner.data().unwrap().status, NodeStatus::Running);
        }
        assert_eq!(tracepool::current().unwrap().id(), outer.id());
        assert_eq!(outer.data().unwrap().status, NodeStatus::Running);
    }
    assert!(tracepool::current().is_none());
    let nodes = trace.all_nodes().unwrap();
    assert_eq!(nodes.len(), 3);
    let (outer, inner, leaf) = (
        by_label(&nodes, "outer"),
        by_label(&nodes, "inner"),
        by_label(&nodes, "leaf"),
    );
    assert!(outer.parent_ids.is_empty());
    assert_eq!(inner.parent_ids, vec![outer.id.clone()]);
    assert_eq!(leaf.parent_ids, vec![inner.id.clone()]);
    assert_eq!(inner.input, Some(json!({"q": 1})));
    assert_eq!(inner.output, Some(json!("out")));
    for n in &nodes {
        assert_eq!(n.status, NodeStatus::Completed, "{}", n.label);
        assert!(n.end_time >= n.start_time);
    }
    // Inner steps finished before outer ones.
    assert!(leaf.end_time <= inner.end_time && inner.end_time <= outer.end_time);
}

#[test]
fn sequential_top_level_steps_follow_trace_add() {
    let engine = engine(4, 1);
    let trace = engine.create(TraceOptions::new()).unwrap();
    drop(trace.step("one").unwrap());
    drop(trace.step("two").unwrap());
    let nodes = trace.all_nodes().unwrap();
    // Like `trace.add`: the second step comes after the first.
    assert_eq!(
        by_label(&nodes, "two").parent_ids,
        vec![by_label(&nodes, "one").id.clone()]
    );
    assert_eq!(trace.current_nodes().unwrap()[0].label, "two");
}

#[test]
fn a_step_of_another_trace_is_not_a_parent() {
    let engine = engine(4, 1);
    let a = engine.create(TraceOptions::new()).unwrap();
    let b = engine.create(TraceOptions::new()).unwrap();
    let sa = a.step("in a").unwrap();
    let sb = b.step("in b").unwrap(); // current is `sa`, of trace a
    assert!(sb.data().unwrap().parent_ids.is_empty());
    assert_eq!(b.root().unwrap().unwrap().id, sb.id());
    // Node::step: the current step of the same trace wins over the node.
    let root_a = a.root().unwrap().unwrap();
    let other = a.add(
        "x",
        NodeOptions::new()
            .label("other")
            .auto_complete_parent(false),
    );
    let other = other.unwrap();
    drop(sb);
    let child = other.step("child").unwrap(); // current: `sa` (same trace)
    assert_eq!(child.data().unwrap().parent_ids, vec![sa.id().to_owned()]);
    drop(child);
    drop(sa);
    let child2 = other.step("child2").unwrap(); // nothing current: child of `other`
    assert_eq!(
        child2.data().unwrap().parent_ids,
        vec![other.id().to_owned()]
    );
    assert_eq!(root_a.label, "in a");
}

#[test]
fn out_of_order_drops_keep_the_stack_consistent() {
    let engine = engine(4, 1);
    let trace = engine.create(TraceOptions::new()).unwrap();
    let a = trace.step("a").unwrap();
    let b = trace.step("b").unwrap();
    let b_id = b.id().to_owned();
    drop(a);
    assert_eq!(tracepool::current().unwrap().id(), b_id);
    drop(b);
    assert!(tracepool::current().is_none());
}

#[test]
fn a_panic_fails_the_open_steps() {
    let engine = engine(4, 1);
    let trace = engine.create(TraceOptions::new()).unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _outer = trace.step("outer").unwrap();
        let _inner = trace.step("inner").unwrap();
        panic!("boom");
    }));
    assert!(r.is_err());
    assert!(tracepool::current().is_none());
    let nodes = trace.all_nodes().unwrap();
    for n in &nodes {
        assert_eq!(n.status, NodeStatus::Failed, "{}", n.label);
        let logs = trace.logs(Some(&n.id)).unwrap();
        assert_eq!(logs.last().unwrap().message, "Node failed: panicked");
    }
}

#[test]
fn fail_finish_and_errors() {
    let engine = engine(4, 1);
    let trace = engine.create(TraceOptions::new()).unwrap();
    let s = trace.step("fails").unwrap();
    let node = s.node().clone();
    s.fail("bad input");
    assert_eq!(node.data().unwrap().status, NodeStatus::Failed);
    assert_eq!(
        trace.logs(Some(node.id())).unwrap()[0].message,
        "Node failed: bad input"
    );
    assert_eq!(engine.stats().step_errors, 0);

    let s = trace.step("finishes").unwrap();
    let node = s.node().clone();
    s.finish().unwrap();
    assert_eq!(node.data().unwrap().status, NodeStatus::Completed);

    // Finished through the handle: `finish` reports it, a drop says nothing.
    let s = trace.step("twice").unwrap();
    s.complete(None).unwrap();
    assert!(matches!(s.finish(), Err(Error::NodeFinished)));
    let s = trace.step("dropped after complete").unwrap();
    s.complete(None).unwrap();
    drop(s);

    // `fail` on a finished node is counted, not returned.
    let s = trace.step("late").unwrap();
    s.complete(None).unwrap();
    s.fail("too late");
    assert_eq!(engine.stats().step_errors, 1);
}

#[test]
fn a_step_outliving_its_trace_does_nothing() {
    let engine = engine(4, 1);
    let trace = engine.create(TraceOptions::new()).unwrap();
    let s = trace.step("kept").unwrap();
    let detached = trace.step_detached("kept too").unwrap();
    trace.release().unwrap();
    let before = engine.stats();
    drop(s); // completes nothing, no panic
    drop(detached);
    let after = engine.stats();
    assert_eq!(before, after);
    // A released trace's step cannot fail: counted.
    let trace = engine.create(TraceOptions::new()).unwrap();
    let s = trace.step("x").unwrap();
    trace.release().unwrap();
    s.fail("after release");
    assert_eq!(engine.stats().step_errors, 1);
}

#[test]
fn a_step_keeps_its_trace_loaded() {
    let engine = engine(4, 1);
    let trace = engine.create(TraceOptions::new()).unwrap();
    let id = trace.id().to_owned();
    let s = trace.step("holder").unwrap();
    drop(trace);
    assert!(engine.is_loaded(&id));
    drop(s); // the last handle: the trace is released
    assert!(!engine.is_loaded(&id));
    assert_eq!(engine.stats().auto_released, 1);
}

#[test]
fn steps_are_current_per_thread() {
    let engine = engine(4, 2);
    let trace = engine.create(TraceOptions::new()).unwrap();
    let root = trace.step("root").unwrap();
    let root_node = root.node().clone();
    std::thread::scope(|s| {
        for i in 0..4 {
            let root_node = root_node.clone();
            s.spawn(move || {
                // Nothing is current on a new thread.
                assert!(tracepool::current().is_none());
                let mine = root_node.step(format!("worker {i}")).unwrap();
                let sub = root_node.step("sub").unwrap(); // current: `mine`
                assert_eq!(sub.data().unwrap().parent_ids, vec![mine.id().to_owned()]);
            });
        }
    });
    drop(root);
    let nodes = trace.all_nodes().unwrap();
    assert_eq!(nodes.len(), 9);
    for n in nodes.iter().filter(|n| n.label.starts_with("worker")) {
        assert_eq!(n.parent_ids, vec![root_node.id().to_owned()]);
        assert_eq!(n.children.len(), 1);
    }
}

#[test]
fn detached_steps_are_current_per_task_across_awaits() {
    let engine = engine(4, 1);
    let trace = engine.create(TraceOptions::new()).unwrap();
    // Two futures polled in turn on one thread (one task): a step opened in
    // one and held across `.await` must never become the other's parent.
    let task = |name: &'static str| {
        let step = trace.step_detached(name).unwrap();
        async move {
            let me = tracepool::current().expect("current inside in_step");
            let held = me.step(format!("{name}/held")).unwrap();
            yield_now().await;
            let deeper = tracepool::current()
                .unwrap()
                .step(format!("{name}/deeper"))
                .unwrap();
            yield_now().await;
            deeper.info("deep work");
            drop(deeper);
            yield_now().await;
            drop(held);
            name
        }
        .in_step(step)
    };
    let (a, b) = futures_executor::block_on(futures_util::future::join(task("A"), task("B")));
    assert_eq!((a, b), ("A", "B"));
    assert!(tracepool::current().is_none());
    let nodes = trace.all_nodes().unwrap();
    assert_eq!(nodes.len(), 6);
    for name in ["A", "B"] {
        let top = by_label(&nodes, name);
        let held = by_label(&nodes, &format!("{name}/held"));
        let deeper = by_label(&nodes, &format!("{name}/deeper"));
        assert_eq!(held.parent_ids, vec![top.id.clone()], "{name}/held");
        assert_eq!(deeper.parent_ids, vec![held.id.clone()], "{name}/deeper");
        for n in [top, held, deeper] {
            assert_eq!(n.status, NodeStatus::Completed, "{}", n.label);
        }
    }
}

#[test]
fn detached_steps_on_a_multi_threaded_runtime() {
    let engine = engine(4, 1);
    let trace = engine.create(TraceOptions::new()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let request = trace.step_detached("request").unwrap();
    let request_id = request.id().to_owned();
    rt.block_on(
        async {
            let mut handles = Vec::new();
            for i in 0..8 {
                // Opened while `request` is current: its child.
                let child = trace.step_detached(format!("task {i}")).unwrap();
                handles.push(tokio::spawn(
                    async move {
                        for _ in 0..3 {
                            tokio::task::yield_now().await;
                            tracepool::current().unwrap().info("tick");
                        }
                        let s = tracepool::current().unwrap().step_detached("io").unwrap();
                        async { tokio::task::yield_now().await }.in_step(s).await;
                    }
                    .in_step(child),
                ));
            }
            for h in handles {
                h.await.unwrap();
            }
        }
        .in_step(request),
    );
    let nodes = trace.all_nodes().unwrap();
    assert_eq!(nodes.len(), 1 + 8 + 8);
    for i in 0..8 {
        let t = by_label(&nodes, &format!("task {i}"));
        assert_eq!(t.parent_ids, vec![request_id.clone()]);
        assert_eq!(t.children.len(), 1);
        assert_eq!(trace.logs(Some(&t.id)).unwrap().len(), 3);
    }
    assert!(nodes.iter().all(|n| n.status == NodeStatus::Completed));
}

#[test]
fn a_dropped_future_cancels_its_step_and_a_panicking_one_fails_it() {
    let engine = engine(4, 1);
    let trace = engine.create(TraceOptions::new()).unwrap();
    let s = trace.step_detached("abandoned").unwrap();
    let node = s.node().clone();
    let mut fut = Box::pin(
        async {
            yield_now().await;
            yield_now().await;
        }
        .in_step(s),
    );
    // Poll once, then drop it before it returns.
    let waker = std::task::Waker::noop();
    assert!(
        fut.as_mut()
            .poll(&mut Context::from_waker(waker))
            .is_pending()
    );
    assert!(tracepool::current().is_none());
    drop(fut);
    assert_eq!(node.data().unwrap().status, NodeStatus::Cancelled);

    let s = trace.step_detached("panics").unwrap();
    let node = s.node().clone();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        futures_executor::block_on(
            async {
                let _inner = tracepool::current().unwrap().step("inner").unwrap();
                panic!("boom");
            }
            .in_step(s),
        )
    }));
    assert!(r.is_err());
    assert!(tracepool::current().is_none());
    assert_eq!(node.data().unwrap().status, NodeStatus::Failed);
    let inner = by_label(&trace.all_nodes().unwrap(), "inner").clone();
    assert_eq!(inner.status, NodeStatus::Failed);
    assert_eq!(inner.parent_ids, vec![node.id().to_owned()]);
}
