//! [`Trace`]: the handle to one loaded trace.

use std::fmt::Display;
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use super::node::Node;
use super::{HandleCore, failure};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::event::log::LogHost;
use crate::event::value::{self, Val};
use crate::event::{Cursor, Event};
use crate::id::TraceId;
use crate::model::{Level, LogEntry, NodeData, SpaceData, SpaceInfo, TraceInfo, TraceStatus};
use crate::options::{NodeOptions, ParallelInput, SpaceOptions};
use crate::pool::SlotKey;
use crate::subscribe::Subscription;
use crate::trace::state::{Target, TraceState};
use crate::trace::tree::{NodeSpec, NodeSpecs};

/// A handle to a loaded trace. Cheap to clone; `Send + Sync`; usable from
/// many threads at once (operations on one trace are serialised by its slot lock).
///
/// # Lifecycle
///
/// Handles of one trace (every clone of it, and every [`Node`] of it) share
/// a count. **Dropping the last handle releases the trace**, like
/// [`release`](Trace::release) (counted in `EngineStats::auto_released`),
/// unless it was created with `TraceOptions::keep_loaded(true)`: an early
/// `return` or `?` cannot leak its pool slot. A
/// [`Subscription`] is not a handle.
///
/// After a release, every `Result` method returns [`Error::Released`],
/// `bool` methods return `false` and chainable logs do nothing.
///
/// # Examples
/// ```
/// # fn main() -> tracepool::Result<()> {
/// use serde_json::json;
/// use tracepool::{Engine, NodeOptions, NodeStatus, TraceOptions};
/// let engine = Engine::builder().workers(1).capacity(4).memory().build()?;
/// let trace = engine.create(TraceOptions::new())?;
/// let step1 = trace.add("user input", NodeOptions::new().label("Input"))?;
/// trace.info("Starting").debug("details");
/// trace.add("process", NodeOptions::new().label("Process"))?; // completes step1
/// assert_eq!(step1.data()?.status, NodeStatus::Completed);
/// trace.complete(Some(json!({"validated": true})))?;
/// assert_eq!(trace.all_nodes()?.len(), 2);
/// assert_eq!(trace.logs(None)?.len(), 2);
/// trace.release()?;
/// assert!(matches!(trace.root(), Err(tracepool::Error::Released)));
/// # Ok(()) }
/// ```
#[must_use = "dropping the last handle releases the trace"]
pub struct Trace {
    core: HandleCore,
    id: TraceId,
}

impl std::fmt::Debug for Trace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trace")
            .field("id", &self.id)
            .field("slot", &self.core.key.idx)
            .field("generation", &self.core.key.generation)
            .finish()
    }
}

impl Clone for Trace {
    fn clone(&self) -> Trace {
        Trace {
            core: self.core.acquire(),
            id: self.id,
        }
    }
}

impl Trace {
    /// Wraps a handle whose lease the caller already counted.
    pub(crate) fn new(engine: &Engine, key: SlotKey, id: TraceId) -> Trace {
        Trace {
            core: HandleCore::counted(engine, key),
            id,
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut TraceState) -> Result<R>) -> Result<R> {
        self.core.with(f)
    }

    fn node_handle(&self, st: &mut TraceState, n: u32) -> Node {
        Node::counted(&self.core.engine, self.core.key, st, n)
    }

    // otel-hook: (engine, slot key): the checkout of this handle (step guards).
    pub(crate) fn parts(&self) -> (&Engine, SlotKey) {
        (&self.core.engine, self.core.key) // otel-hook:
    } // otel-hook:

    /// The trace id.
    pub fn id(&self) -> &str {
        self.id.as_str()
    }

    /// The engine this trace belongs to.
    pub fn engine(&self) -> &Engine {
        &self.core.engine
    }

    /// Adds a node after the current nodes (the first call creates the root).
    ///
    /// Unless `opts.auto_complete_parent(false)`, running current nodes are
    /// completed first (`node_complete` each). The new node's parents are
    /// *all* current nodes (an implicit join after `parallel`), and it becomes
    /// the only current node.
    ///
    /// `input` is any `Serialize` value (`json!(..)`, a string, a number,
    /// a struct); `null` means none.
    ///
    /// # Errors
    /// `InvalidValue` (the input or metadata does not serialize),
    /// `LimitExceeded` (`"nodes"`), `TraceFinished`, `Released`, `ShutDown`.
    pub fn add(&self, input: impl Serialize, opts: NodeOptions) -> Result<Node> {
        // Built before the lock and read by reference under it (not moved
        // out of its `Result`: see `NodeSpec::new`).
        let mut spec = NodeSpec::of_options(opts);
        let spec = match spec {
            Ok(ref mut s) => s,
            Err(e) => return Err(e),
        };
        spec.set_input(&input)?;
        self.with(|st| {
            let n = st.add(spec)?;
            Ok(self.node_handle(st, n))
        })
    }

    /// Starts parallel branches under all current nodes (auto-completing the
    /// running ones unless every input opts out); the branches become the
    /// current nodes. One `node_start` event carries all branches.
    ///
    /// # Errors
    /// `EmptyParallel`, `NoRoot`, `InvalidValue`, `LimitExceeded`
    /// (`"nodes"`: all branches or none), `TraceFinished`, `Released`, `ShutDown`.
    pub fn parallel(&self, inputs: Vec<ParallelInput>) -> Result<Vec<Node>> {
        let mut specs = specs_of(inputs)?;
        self.with(|st| {
            let (first, count) = st.parallel(None, &mut specs)?;
            Ok((first..first + count)
                .map(|n| self.node_handle(st, n))
                .collect())
        })
    }

    fn chain_log(&self, level: Level, msg: &str, data: &mut Option<Val>) -> &Trace {
        self.core.log(Target::Current, level, msg, data);
        self
    }

    chainable_logs!(Trace, "every current node");

    /// Sets the output of every current node (`node_updated` each).
    ///
    /// # Errors
    /// `InvalidValue`, `NoRoot`, `TraceFinished`, `Released`, `ShutDown`.
    pub fn set_output(&self, output: impl Serialize) -> Result<()> {
        let output = value::json_opt(&output)?;
        self.with(|st| st.set_output(Target::Current, output))
    }

    /// Sets a metadata key on every current node (`node_updated` each).
    ///
    /// # Errors
    /// `InvalidValue`, `NoRoot`, `TraceFinished`, `Released`, `ShutDown`.
    pub fn set_metadata(&self, key: &str, value: impl Serialize) -> Result<()> {
        let value = value::json(&value)?;
        let key_json = value::key_json(key);
        self.with(|st| st.set_metadata_with(Target::Current, key, &key_json, value))
    }

    /// Completes every unfinished current node (`node_complete` each);
    /// finished ones are skipped. `Some(output)` sets their output first.
    ///
    /// # Errors
    /// `InvalidValue`, `NoRoot`, `TraceFinished`, `Released`, `ShutDown`.
    pub fn complete(&self, output: Option<Value>) -> Result<()> {
        let output = output.map(|v| value::json_opt(&v)).transpose()?;
        self.with(|st| st.complete(Target::Current, output))
    }

    /// Fails every unfinished current node: an `error` log line
    /// (`"Node failed: <err>"`), then `node_failed`.
    ///
    /// # Errors
    /// `NoRoot`, `TraceFinished`, `Released`, `ShutDown`.
    pub fn fail(&self, err: impl Display) -> Result<()> {
        let (error, line) = failure(&err);
        self.with(|st| st.fail(Target::Current, &error, &line))
    }

    /// The root node, once the first `add` happened.
    pub fn root(&self) -> Result<Option<NodeData>> {
        self.with(|st| Ok(st.tree.root.map(|r| st.tree.node_data(r))))
    }

    /// A node by id (`None` if this trace has no such node).
    pub fn node(&self, node_id: &str) -> Result<Option<NodeData>> {
        self.with(|st| Ok(st.find_node(node_id).map(|n| st.tree.node_data(n))))
    }

    /// A handle to a node by id, for node-level operations.
    ///
    /// # Errors
    /// `NodeNotFound`, `Released`, `ShutDown`.
    pub fn node_handle_by_id(&self, node_id: &str) -> Result<Node> {
        self.with(|st| {
            st.find_node(node_id)
                .map(|n| self.node_handle(st, n))
                .ok_or(Error::NodeNotFound)
        })
    }

    /// The current nodes (the cursor).
    pub fn current_nodes(&self) -> Result<Vec<NodeData>> {
        self.with(|st| {
            Ok(st
                .tree
                .current
                .iter()
                .map(|&n| st.tree.node_data(n))
                .collect())
        })
    }

    /// Every node once: root first, then breadth-first.
    pub fn all_nodes(&self) -> Result<Vec<NodeData>> {
        self.with(|st| {
            Ok(st
                .tree
                .bfs_order()
                .into_iter()
                .map(|n| st.tree.node_data(n))
                .collect())
        })
    }

    /// Log lines in the order they were written; `Some(node_id)` for one node.
    ///
    /// # Errors
    /// `NodeNotFound` for an unknown node id, `Released`, `ShutDown`.
    pub fn logs(&self, node_id: Option<&str>) -> Result<Vec<LogEntry>> {
        self.with(|st| match node_id {
            None => Ok(st.logs.entries(&st.tree, None)),
            Some(id) => match st.find_node(id) {
                Some(n) => Ok(st.logs.entries(&st.tree, Some(n))),
                None => Err(Error::NodeNotFound),
            },
        })
    }

    /// Trace metadata.
    pub fn trace_info(&self) -> Result<TraceInfo> {
        let driver = self.core.engine.driver_name();
        self.with(|st| Ok(st.trace_info(driver)))
    }

    /// Trace status. For a released handle: the status the trace had when it
    /// was released, or `Cancelled` once its slot was reused more than once.
    pub fn status(&self) -> TraceStatus {
        match self.with(|st| Ok(st.status)) {
            Ok(s) => s,
            Err(_) => self
                .core
                .engine
                .released_status(self.core.key)
                .unwrap_or(TraceStatus::Cancelled),
        }
    }

    /// Marks the trace complete: one `complete` event, ever (later calls do
    /// nothing). Running nodes are left as they are. Afterwards the trace is
    /// finished: reads work, mutations return `TraceFinished`.
    ///
    /// With `TraceOptions::auto_archive(true)`, the trace's worker archives
    /// it after handing its last writes to the driver; this call does no I/O
    /// (use [`Engine::flush`] to wait for the archive; a failure is counted
    /// in `EngineStats::persist_errors` and reported by `flush`).
    ///
    /// # Errors
    /// `Released`, `ShutDown`.
    pub fn mark_complete(&self) -> Result<()> {
        self.with(|st| {
            if st.mark_complete() && st.auto_archive && st.limits.persists {
                st.archive_requested = true;
            }
            Ok(())
        })
    }

    /// Cancels the trace: unfinished nodes become `cancelled` (one
    /// `node_failed` each, `status: "cancelled"`, `error`: the reason), then
    /// one `complete` with status `cancelled`. A finished trace is left as it is.
    ///
    /// # Errors
    /// `Released`, `ShutDown`.
    pub fn mark_cancelled(&self, reason: impl Display) -> Result<()> {
        let reason = value::text(&[&reason.to_string()]);
        self.with(|st| {
            st.mark_cancelled(&reason);
            Ok(())
        })
    }

    /// Whether the trace was marked complete or cancelled (`false` when released).
    pub fn is_complete(&self) -> bool {
        self.with(|st| Ok(st.finished)).unwrap_or(false)
    }

    // ---- spaces ----------------------------------------------------------

    /// Creates a key-value space (`space_created`).
    ///
    /// # Errors
    /// `TraceFinished`, `Released`, `ShutDown`.
    pub fn create_space(&self, opts: SpaceOptions) -> Result<SpaceInfo> {
        let metadata = crate::trace::spaces::space_metadata_json(&opts);
        self.with(|st| st.create_space_with(opts, metadata.as_deref()))
    }

    /// A space's metadata (`None` if unknown).
    pub fn space(&self, space_id: &str) -> Result<Option<SpaceInfo>> {
        self.with(|st| Ok(st.space(space_id)))
    }

    /// Whether the space exists (`false` when released).
    pub fn has_space(&self, space_id: &str) -> bool {
        self.with(|st| Ok(st.space(space_id).is_some()))
            .unwrap_or(false)
    }

    /// Every space, in creation order.
    pub fn spaces(&self) -> Result<Vec<SpaceInfo>> {
        self.with(|st| Ok(st.spaces()))
    }

    /// Deletes a space (`space_deleted`).
    ///
    /// # Errors
    /// `SpaceNotFound`, `TraceFinished`, `Released`, `ShutDown`.
    pub fn delete_space(&self, space_id: &str) -> Result<()> {
        self.with(|st| st.delete_space(space_id))
    }

    /// Sets a key (`memory_add` for a new key, `memory_update` when overwriting).
    ///
    /// # Errors
    /// `InvalidValue`, `SpaceNotFound`, `LimitExceeded` (`"space_entries"`),
    /// `TraceFinished`, `Released`, `ShutDown`.
    pub fn set_space_value(&self, space_id: &str, key: &str, value: impl Serialize) -> Result<()> {
        let value = value::json(&value)?;
        let key_text = value::text(&[key]);
        self.with(|st| st.set_space_value(space_id, key, key_text, value))
    }

    /// A key's value (`None` if the key is absent).
    ///
    /// # Errors
    /// `SpaceNotFound`, `Released`, `ShutDown`.
    pub fn get_space_value(&self, space_id: &str, key: &str) -> Result<Option<Value>> {
        self.with(|st| st.get_space_value(space_id, key))
    }

    /// Whether the key exists (`false` for an unknown space or a released handle).
    pub fn has_space_value(&self, space_id: &str, key: &str) -> bool {
        self.with(|st| Ok(st.has_space_value(space_id, key)))
            .unwrap_or(false)
    }

    /// Deletes a key (`memory_delete`; a missing key is not an error).
    ///
    /// # Errors
    /// `SpaceNotFound`, `TraceFinished`, `Released`, `ShutDown`.
    pub fn delete_space_value(&self, space_id: &str, key: &str) -> Result<()> {
        let key_text = value::text(&[key]);
        self.with(|st| st.delete_space_value(space_id, key, key_text))
    }

    /// Deletes every key (`memory_delete` with `cleared: true`).
    ///
    /// # Errors
    /// `SpaceNotFound`, `TraceFinished`, `Released`, `ShutDown`.
    pub fn clear_space_values(&self, space_id: &str) -> Result<()> {
        self.with(|st| st.clear_space_values(space_id))
    }

    /// Keys in insertion order.
    ///
    /// # Errors
    /// `SpaceNotFound`, `Released`, `ShutDown`.
    pub fn space_keys(&self, space_id: &str) -> Result<Vec<String>> {
        self.with(|st| st.space_keys(space_id))
    }

    /// A space with all its values (`None` if unknown).
    pub fn space_data(&self, space_id: &str) -> Result<Option<SpaceData>> {
        self.with(|st| Ok(st.space_data(space_id)))
    }

    // ---- events ----------------------------------------------------------

    /// Subscribes to the whole retained history, then live events (see
    /// [`Subscription`] for the lag rule). A subscription does not keep the
    /// trace loaded.
    ///
    /// # Errors
    /// `LimitExceeded` (`"subscribers"`) at `max_subscribers`; `Released`, `ShutDown`.
    pub fn subscribe(&self) -> Result<Subscription> {
        self.subscribe_from(Cursor::Seq(0))
    }

    /// Subscribes from a cursor; the cursor applies to history and live
    /// events alike (see [`Subscription`]).
    ///
    /// # Errors
    /// `LimitExceeded` (`"subscribers"`) at `max_subscribers`; `Released`, `ShutDown`.
    pub fn subscribe_from(&self, cursor: Cursor) -> Result<Subscription> {
        let (reader, shared, cursor) = self.with(|st| st.events.add_reader(cursor))?;
        let host: Arc<dyn LogHost> = self.core.engine.core().clone();
        Ok(Subscription::new(
            host,
            self.core.key,
            reader,
            self.id,
            shared,
            cursor,
        ))
    }

    /// A snapshot of the retained history from a cursor.
    ///
    /// # Errors
    /// `Released`, `ShutDown`.
    pub fn events(&self, cursor: Cursor) -> Result<Vec<Event>> {
        self.with(|st| {
            let (log, src) = st.split();
            Ok(log.snapshot(cursor, &src))
        })
    }

    /// Releases the trace, like [`Engine::release`]: at once, without I/O,
    /// whatever other handles exist (they get `Released` afterwards).
    ///
    /// # Errors
    /// `Released` if this handle's trace was already released; `ShutDown`.
    pub fn release(&self) -> Result<()> {
        self.core.engine.release_handle(self.core.key)
    }
}

/// Serializes parallel inputs before the lock.
pub(super) fn specs_of(inputs: Vec<ParallelInput>) -> Result<NodeSpecs> {
    inputs
        .into_iter()
        .map(|pi| NodeSpec::new(&pi.input, pi.options))
        .collect()
}
