//! Property tests for the tree semantics: random sequences of trace and node
//! operations keep the DAG consistent, the event stream gap-free, and every
//! node's lifecycle (one start, at most one terminal event, terminal status
//! never changes).

mod common;

use std::collections::{HashMap, HashSet};

use common::*;
use proptest::prelude::*;
use serde_json::json;
use tracepool::{
    Engine, Error, EventKind, Node, NodeOptions, NodeStatus, ParallelInput, Trace, TraceOptions,
};

#[derive(Debug, Clone)]
enum Op {
    Add { auto: bool },
    Parallel { n: usize, auto: bool },
    Complete { pick: usize },
    Fail { pick: usize },
    NodeAdd { pick: usize },
    NodeParallel { pick: usize, n: usize },
    Join { picks: Vec<usize> },
    SetOutput,
    Info,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => any::<bool>().prop_map(|auto| Op::Add { auto }),
        2 => (1usize..=4, any::<bool>()).prop_map(|(n, auto)| Op::Parallel { n, auto }),
        3 => any::<usize>().prop_map(|pick| Op::Complete { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Fail { pick }),
        2 => any::<usize>().prop_map(|pick| Op::NodeAdd { pick }),
        1 => (any::<usize>(), 1usize..=3).prop_map(|(pick, n)| Op::NodeParallel { pick, n }),
        2 => prop::collection::vec(any::<usize>(), 1..=3).prop_map(|picks| Op::Join { picks }),
        1 => Just(Op::SetOutput),
        1 => Just(Op::Info),
    ]
}

struct Model {
    trace: Trace,
    nodes: Vec<Node>,
    /// Expected current node ids.
    current: Vec<String>,
    /// Nodes seen in a terminal status, and that status.
    terminal: HashMap<String, NodeStatus>,
}

impl Model {
    fn status(&self, id: &str) -> NodeStatus {
        self.trace.node(id).unwrap().expect("node exists").status
    }

    fn current_ids(&self) -> Vec<String> {
        self.trace
            .current_nodes()
            .unwrap()
            .into_iter()
            .map(|n| n.id)
            .collect()
    }

    fn statuses(&self, ids: &[String]) -> Vec<NodeStatus> {
        ids.iter().map(|id| self.status(id)).collect()
    }

    /// The previous current nodes after an add/parallel: completed if they
    /// were running and `auto`, unchanged otherwise.
    fn check_auto(&self, prev: &[String], before: &[NodeStatus], auto: bool) {
        for (id, st) in prev.iter().zip(before) {
            let now = self.status(id);
            if auto && !st.is_terminal() {
                assert_eq!(now, NodeStatus::Completed, "auto-complete of {id}");
            } else {
                assert_eq!(now, *st, "{id} must be untouched");
            }
        }
    }

    fn apply(&mut self, op: &Op) {
        let pick = |p: usize, len: usize| p % len;
        match op {
            Op::Add { auto } => {
                let prev = self.current.clone();
                let before = self.statuses(&prev);
                let had_root = !self.nodes.is_empty();
                let n = self
                    .trace
                    .add("x", NodeOptions::new().auto_complete_parent(*auto))
                    .unwrap();
                let d = n.data().unwrap();
                if had_root {
                    assert_eq!(d.parent_ids, prev, "parents = previous current nodes");
                } else {
                    assert!(d.parent_ids.is_empty());
                    assert_eq!(self.trace.root().unwrap().unwrap().id, n.id());
                }
                assert_eq!(d.status, NodeStatus::Running);
                self.check_auto(&prev, &before, *auto);
                self.current = vec![n.id().to_owned()];
                assert_eq!(self.current_ids(), self.current);
                self.nodes.push(n);
            }
            Op::Parallel { n, auto } => {
                let inputs = (0..*n)
                    .map(|i| {
                        ParallelInput::new(json!(i), NodeOptions::new().auto_complete_parent(*auto))
                    })
                    .collect();
                if self.nodes.is_empty() {
                    assert!(matches!(self.trace.parallel(inputs), Err(Error::NoRoot)));
                    return;
                }
                let prev = self.current.clone();
                let before = self.statuses(&prev);
                let br = self.trace.parallel(inputs).unwrap();
                assert_eq!(br.len(), *n);
                for b in &br {
                    assert_eq!(b.data().unwrap().parent_ids, prev);
                }
                self.check_auto(&prev, &before, *auto);
                self.current = br.iter().map(|b| b.id().to_owned()).collect();
                assert_eq!(self.current_ids(), self.current);
                self.nodes.extend(br);
            }
            Op::Complete { pick: p } | Op::Fail { pick: p } => {
                if self.nodes.is_empty() {
                    return;
                }
                let node = self.nodes[pick(*p, self.nodes.len())].clone();
                let was = self.status(node.id());
                let (r, want) = if matches!(op, Op::Complete { .. }) {
                    (node.complete(Some(json!("out"))), NodeStatus::Completed)
                } else {
                    (node.fail("boom"), NodeStatus::Failed)
                };
                if was.is_terminal() {
                    assert!(matches!(r, Err(Error::NodeFinished)), "{r:?}");
                    assert_eq!(self.status(node.id()), was);
                } else {
                    r.unwrap();
                    assert_eq!(self.status(node.id()), want);
                }
            }
            Op::NodeAdd { pick: p } => {
                if self.nodes.is_empty() {
                    return;
                }
                let parent = self.nodes[pick(*p, self.nodes.len())].clone();
                let c = parent.add("c", NodeOptions::new()).unwrap();
                assert_eq!(c.data().unwrap().parent_ids, [parent.id()]);
                assert!(parent.data().unwrap().children.contains(&c.id().to_owned()));
                self.nodes.push(c);
            }
            Op::NodeParallel { pick: p, n } => {
                if self.nodes.is_empty() {
                    return;
                }
                let parent = self.nodes[pick(*p, self.nodes.len())].clone();
                let br = parent
                    .parallel(
                        (0..*n)
                            .map(|i| ParallelInput::new(json!(i), NodeOptions::new()))
                            .collect(),
                    )
                    .unwrap();
                for b in &br {
                    assert_eq!(b.data().unwrap().parent_ids, [parent.id()]);
                }
                self.nodes.extend(br);
            }
            Op::Join { picks } => {
                if self.nodes.is_empty() {
                    return;
                }
                let parents: Vec<Node> = picks
                    .iter()
                    .map(|p| self.nodes[pick(*p, self.nodes.len())].clone())
                    .collect();
                let mut want: Vec<String> = Vec::new();
                for p in &parents {
                    if !want.iter().any(|w| w == p.id()) {
                        want.push(p.id().to_owned());
                    }
                }
                let refs: Vec<&Node> = parents.iter().collect();
                let j = parents[0].join(&refs, "j", NodeOptions::new()).unwrap();
                assert_eq!(j.data().unwrap().parent_ids, want);
                for p in &parents {
                    let kids = p.data().unwrap().children;
                    assert_eq!(kids.iter().filter(|k| *k == j.id()).count(), 1);
                }
                self.nodes.push(j);
            }
            Op::SetOutput => {
                let r = self.trace.set_output(json!({"o": 1}));
                if self.nodes.is_empty() {
                    assert!(matches!(r, Err(Error::NoRoot)));
                } else {
                    r.unwrap();
                }
            }
            Op::Info => {
                self.trace.info("info");
            }
        }
        // The cursor only moves on trace-level add/parallel.
        assert_eq!(self.current_ids(), self.current, "after {op:?}");
        // Terminal statuses never change.
        for (id, st) in &self.terminal {
            assert_eq!(
                self.status(id),
                *st,
                "terminal status of {id} changed after {op:?}"
            );
        }
        for n in &self.nodes {
            let st = self.status(n.id());
            if st.is_terminal() {
                self.terminal.entry(n.id().to_owned()).or_insert(st);
            }
        }
    }

    fn check_final(&self) {
        let all = self.trace.all_nodes().unwrap();
        let ids: Vec<&str> = all.iter().map(|n| n.id.as_str()).collect();
        let uniq: HashSet<&str> = ids.iter().copied().collect();
        assert_eq!(uniq.len(), ids.len(), "a node appears twice in all_nodes");
        let made: HashSet<&str> = self.nodes.iter().map(|n| n.id()).collect();
        assert_eq!(uniq, made, "all_nodes is exactly the nodes created");
        if let Some(first) = self.nodes.first() {
            assert_eq!(ids[0], first.id(), "root first");
        }
        let by_id: HashMap<&str, &tracepool::NodeData> =
            all.iter().map(|n| (n.id.as_str(), n)).collect();
        for (i, n) in all.iter().enumerate() {
            if i == 0 {
                assert!(n.parent_ids.is_empty(), "root has no parent");
            } else {
                assert!(!n.parent_ids.is_empty(), "non-root {} has no parent", n.id);
            }
            for p in &n.parent_ids {
                let pc = &by_id[p.as_str()].children;
                assert_eq!(pc.iter().filter(|c| **c == n.id).count(), 1);
            }
            for c in &n.children {
                let cp = &by_id[c.as_str()].parent_ids;
                assert_eq!(cp.iter().filter(|p| **p == n.id).count(), 1);
            }
        }
        let ev = history(&self.trace);
        assert_contiguous_from(&ev, 1);
        assert_eq!(ev[0].kind, EventKind::Init);
        let starts = start_counts(&ev);
        assert_eq!(starts.len(), all.len());
        for n in &all {
            assert_eq!(starts.get(&n.id), Some(&1), "node_start count of {}", n.id);
        }
        let term = terminal_counts(&ev);
        for n in &all {
            let c = term.get(&n.id).copied().unwrap_or(0);
            assert!(c <= 1, "{} has {c} terminal events", n.id);
            assert_eq!(c == 1, n.status.is_terminal(), "{}: {:?}", n.id, n.status);
            if c == 1 {
                let kind = ev
                    .iter()
                    .find(|e| {
                        matches!(e.kind, EventKind::NodeComplete | EventKind::NodeFailed)
                            && e.node_id() == n.id
                    })
                    .unwrap()
                    .kind;
                let want = if n.status == NodeStatus::Completed {
                    EventKind::NodeComplete
                } else {
                    EventKind::NodeFailed
                };
                assert_eq!(kind, want);
            }
        }
        // Events are time-ordered too.
        assert!(ev.windows(2).all(|w| w[0].timestamp <= w[1].timestamp));
    }
}

fn engine() -> Engine {
    Engine::builder()
        .capacity(2)
        .workers(1)
        .history_limit(100_000)
        .memory()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn tree_invariants_hold(ops in prop::collection::vec(op(), 1..40)) {
        let engine = engine();
        let trace = engine.create(TraceOptions::new()).unwrap();
        let mut m = Model { trace, nodes: Vec::new(), current: Vec::new(), terminal: HashMap::new() };
        for op in &ops {
            m.apply(op);
        }
        m.check_final();
        // mark_cancelled finishes every node, once.
        m.trace.mark_cancelled("end").unwrap();
        let ev = history(&m.trace);
        assert_one_terminal_max(&ev);
        assert_eq!(count(&ev, EventKind::Complete), 1);
        for n in m.trace.all_nodes().unwrap() {
            assert!(n.status.is_terminal());
            if let Some(st) = m.terminal.get(&n.id) {
                assert_eq!(n.status, *st);
            } else {
                assert_eq!(n.status, NodeStatus::Cancelled);
            }
        }
        m.trace.release().unwrap();
    }
}
