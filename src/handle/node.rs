//! [`Node`]: the handle to one node of a loaded trace.

use std::fmt::Display;

use serde::Serialize;
use serde_json::Value;
use smallvec::SmallVec;

use super::trace::specs_of;
use super::{HandleCore, failure};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::event::value::{self, Val};
use crate::id::ShortId;
use crate::model::{Level, NodeData, NodeStatus};
use crate::options::{NodeOptions, ParallelInput};
use crate::pool::SlotKey;
use crate::trace::state::{Target, TraceState};
use crate::trace::tree::NodeSpec;

/// A handle to a node. Cheap to clone; `Send + Sync`.
///
/// Node-level operations never move the trace's cursor (the current nodes)
/// and emit events like their trace-level counterparts. A node handle keeps
/// its trace loaded like a [`Trace`](crate::Trace) handle does: the trace is
/// released when the last handle of either kind is dropped.
///
/// # Examples
/// ```
/// # fn main() -> tracepool::Result<()> {
/// use tracepool::{Engine, NodeOptions, NodeStatus, TraceOptions};
/// let engine = Engine::builder().workers(1).capacity(4).memory().build()?;
/// let trace = engine.create(TraceOptions::new())?;
/// let root = trace.add("in", NodeOptions::new().label("Root"))?;
/// let a = root.add("a", NodeOptions::new().label("A"))?;
/// let b = root.add("b", NodeOptions::new().label("B"))?;
/// let j = root.join(&[&a, &b], "merge", NodeOptions::new().label("Join"))?;
/// assert_eq!(j.data()?.parent_ids, vec![a.id().to_owned(), b.id().to_owned()]);
/// a.complete(None)?;
/// assert!(matches!(a.complete(None), Err(tracepool::Error::NodeFinished)));
/// assert_eq!(trace.current_nodes()?[0].id, root.id()); // cursor unchanged
/// # Ok(()) }
/// ```
pub struct Node {
    core: HandleCore,
    node: u32,
    id: ShortId,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.id)
            .field("slot", &self.core.key.idx)
            .field("generation", &self.core.key.generation)
            .finish()
    }
}

impl Clone for Node {
    fn clone(&self) -> Node {
        Node {
            core: self.core.acquire(),
            node: self.node,
            id: self.id,
        }
    }
}

impl Node {
    /// A new handle of node `node` of the trace whose state `st` is (locked
    /// by the caller, who holds a handle of it): counted in its lease.
    pub(crate) fn counted(engine: &Engine, key: SlotKey, st: &mut TraceState, node: u32) -> Node {
        st.lease.add_handle(key.generation);
        Node {
            core: HandleCore::counted(engine, key),
            node,
            id: st.tree.node(node).id,
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut TraceState) -> Result<R>) -> Result<R> {
        self.core.with(f)
    }

    fn handle(&self, st: &mut TraceState, n: u32) -> Node {
        Node::counted(&self.core.engine, self.core.key, st, n)
    }

    // otel-hook: (engine, slot key): the checkout of this handle (step guards).
    pub(crate) fn parts(&self) -> (&Engine, SlotKey) {
        (&self.core.engine, self.core.key) // otel-hook:
    } // otel-hook:

    /// The node id (12 characters `[0-9a-z]`).
    pub fn id(&self) -> &str {
        self.id.as_str()
    }

    /// Adds a child of this node (`node_start`). The trace's cursor does not move.
    ///
    /// # Errors
    /// `TraceFinished`, `Released`, `ShutDown`.
    pub fn add(&self, input: impl Serialize, opts: NodeOptions) -> Result<Node> {
        // As in `Trace::add`: used where it is, not moved out.
        let mut spec = NodeSpec::of_options(opts);
        let spec = match spec {
            Ok(ref mut s) => s,
            Err(e) => return Err(e),
        };
        spec.set_input(&input)?;
        self.with(|st| {
            let n = st.add_child(self.node, spec)?;
            Ok(self.handle(st, n))
        })
    }

    /// Adds parallel children of this node (one `node_start` with `nodes`).
    ///
    /// # Errors
    /// `EmptyParallel`, `TraceFinished`, `Released`, `ShutDown`.
    pub fn parallel(&self, inputs: Vec<ParallelInput>) -> Result<Vec<Node>> {
        let mut specs = specs_of(inputs)?;
        self.with(|st| {
            let (first, count) = st.parallel(Some(self.node), &mut specs)?;
            Ok((first..first + count).map(|n| self.handle(st, n)).collect())
        })
    }

    /// A new node whose parents are `parents`, linked as a child of each
    /// (duplicates are ignored). The receiver only names the trace.
    ///
    /// # Errors
    /// `EmptyJoin`; `NodeNotFound` for a node of another trace;
    /// `TraceFinished`, `Released`, `ShutDown`.
    pub fn join(
        &self,
        parents: &[&Node],
        input: impl Serialize,
        opts: NodeOptions,
    ) -> Result<Node> {
        let mut idxs: SmallVec<[u32; 4]> = SmallVec::new();
        for p in parents {
            if p.core.key != self.core.key {
                return Err(Error::NodeNotFound);
            }
            idxs.push(p.node);
        }
        let mut spec = NodeSpec::of_options(opts);
        let spec = match spec {
            Ok(ref mut s) => s,
            Err(e) => return Err(e),
        };
        spec.set_input(&input)?;
        self.with(|st| {
            let n = st.join(&idxs, spec)?;
            Ok(self.handle(st, n))
        })
    }

    fn chain_log(&self, level: Level, msg: &str, data: &mut Option<Val>) -> &Node {
        self.core.log(Target::Node(self.node), level, msg, data);
        self
    }

    chainable_logs!(Node, "this node");

    /// Sets the output (`node_updated`).
    ///
    /// # Errors
    /// `TraceFinished`, `Released`, `ShutDown`.
    pub fn set_output(&self, output: impl Serialize) -> Result<()> {
        let output = value::json_opt(&output)?;
        self.with(|st| st.set_output(Target::Node(self.node), output))
    }

    /// Sets a metadata key (`node_updated`).
    ///
    /// # Errors
    /// `TraceFinished`, `Released`, `ShutDown`.
    pub fn set_metadata(&self, key: &str, value: impl Serialize) -> Result<()> {
        let value = value::json(&value)?;
        let key_json = value::key_json(key);
        self.with(|st| st.set_metadata_with(Target::Node(self.node), key, &key_json, value))
    }

    /// Sets the status. `Completed`, `Failed` and `Cancelled` finish the node
    /// exactly like [`complete`](Node::complete) / [`fail`](Node::fail)
    /// (one `node_complete` or `node_failed`, end time set); `Skipped` is
    /// terminal too (`node_updated`, end time set); `Pending`/`Running` emit
    /// `node_updated`.
    ///
    /// # Errors
    /// `NodeFinished` if the node is already terminal; `TraceFinished`,
    /// `Released`, `ShutDown`.
    pub fn set_status(&self, status: NodeStatus) -> Result<()> {
        self.with(|st| st.set_status(self.node, status))
    }

    /// Completes the node (`node_complete`); `Some(output)` sets the output first.
    ///
    /// # Errors
    /// `NodeFinished` if already terminal; `TraceFinished`, `Released`, `ShutDown`.
    pub fn complete(&self, output: Option<Value>) -> Result<()> {
        let output = output.map(|v| value::json_opt(&v)).transpose()?;
        self.with(|st| st.complete(Target::Node(self.node), output))
    }

    /// Fails the node: an `error` log line, then `node_failed`.
    ///
    /// # Errors
    /// `NodeFinished` if already terminal; `TraceFinished`, `Released`, `ShutDown`.
    pub fn fail(&self, err: impl Display) -> Result<()> {
        let (error, line) = failure(&err);
        self.with(|st| st.fail(Target::Node(self.node), &error, &line))
    }

    /// A snapshot of the node.
    ///
    /// # Errors
    /// `Released`, `ShutDown`.
    pub fn data(&self) -> Result<NodeData> {
        self.with(|st| Ok(st.tree.node_data(self.node)))
    }
}
