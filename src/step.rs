//! Step guards: a node that finishes itself when the guard goes out of scope.
//!
//! [`Trace::step`] / [`Node::step`] (and their `_with` forms) add a node and
//! return a [`Step`]: it derefs to the [`Node`], [`Step::output`] sets the
//! output, and when it is dropped the node completes — or fails with
//! `"panicked"` when the thread is unwinding from a panic, so an early
//! `return`, a `?` or a panic can never leave a node running. [`Step::fail`]
//! fails it at once, [`Step::finish`] completes it and returns the result.
//!
//! Steps nest like `tracing` spans: a step is *current* on its thread from
//! its creation to its drop ([`current`] returns the innermost one), and a
//! step opened while another step of the same trace is current becomes its
//! child. A `Step` is therefore `!Send`: it belongs to the thread whose
//! current-step stack it is on.
//!
//! For async code, [`Trace::step_detached`] returns a [`DetachedStep`]
//! (`Send`), which is current only while a future it was attached to with
//! [`InStep::in_step`] is being polled — like `tracing::Instrument`. Steps
//! opened inside such a future (and held across its `.await` points) travel
//! with the future's task, not with the thread that happens to poll it.
//!
//! ```
//! # fn main() -> tracepool::Result<()> {
//! use serde_json::json;
//! use tracepool::{Engine, NodeStatus, TraceOptions};
//!
//! let engine = Engine::builder().workers(1).capacity(4).memory().build()?;
//! let trace = engine.create(TraceOptions::new())?;
//! {
//!     let plan = trace.step("Plan")?;
//!     let search = trace.step("Search")?; // child of "Plan": it is current
//!     search.info("3 hits");
//!     search.output(json!({"hits": 3}))?;
//! } // "Search" completes, then "Plan"
//! let nodes = trace.all_nodes()?;
//! assert_eq!(nodes[1].parent_ids, vec![nodes[0].id.clone()]);
//! assert!(nodes.iter().all(|n| n.status == NodeStatus::Completed));
//! # Ok(()) }
//! ```

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt::Display;
use std::future::Future;
use std::marker::PhantomData;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use serde_json::Value;

use crate::engine::Engine;
use crate::error::Result;
use crate::handle::{Node, Trace};
use crate::model::NodeStatus;
use crate::options::NodeOptions;
use crate::pool::SlotKey;

/// Identifies each step's entry on a current-step stack.
static TOKENS: AtomicU64 = AtomicU64::new(1);

/// One entry of a current-step stack.
#[derive(Debug)]
struct Frame {
    token: u64,
    node: Node,
}

thread_local! {
    /// The steps current on this thread, innermost last. Futures attached
    /// to a detached step move their part of it in and out around each poll.
    static STACK: RefCell<Vec<Frame>> = const { RefCell::new(Vec::new()) };
}

fn push_current(node: &Node) -> u64 {
    let token = TOKENS.fetch_add(1, Ordering::Relaxed);
    let frame = Frame {
        token,
        node: node.clone(),
    };
    // During thread-local teardown the step is simply not current.
    let _ = STACK.try_with(|s| s.borrow_mut().push(frame));
    token
}

fn remove_current(token: u64) {
    let frame = STACK
        .try_with(|s| {
            let mut s = s.borrow_mut();
            s.iter()
                .rposition(|f| f.token == token)
                .map(|i| s.remove(i))
        })
        .ok()
        .flatten();
    // The node handle drops outside the borrow.
    drop(frame);
}

/// The innermost step current on this thread (or task, inside
/// [`InStep::in_step`]), if any: its node.
///
/// With the `tracing` feature, when no step is current, the node of the
/// current `tracing` span is returned if `tracepool::layer::TraceLayer`
/// records that span (so steps opened inside `#[instrument]`ed code nest
/// under the span's node).
///
/// # Examples
/// ```
/// # fn main() -> tracepool::Result<()> {
/// use tracepool::{Engine, TraceOptions};
/// let engine = Engine::builder().workers(1).capacity(4).memory().build()?;
/// let trace = engine.create(TraceOptions::new())?;
/// assert!(tracepool::current().is_none());
/// let step = trace.step("Load")?;
/// assert_eq!(tracepool::current().map(|n| n.id().to_owned()), Some(step.id().to_owned()));
/// drop(step);
/// assert!(tracepool::current().is_none());
/// # Ok(()) }
/// ```
pub fn current() -> Option<Node> {
    let top = STACK
        .try_with(|s| s.borrow().last().map(|f| f.node.clone()))
        .ok()
        .flatten();
    #[cfg(feature = "tracing")]
    if top.is_none() {
        return crate::layer::current_span_node();
    }
    top
}

/// Whether two handles belong to the same checkout of the same engine.
fn same_checkout(a: (&Engine, SlotKey), b: (&Engine, SlotKey)) -> bool {
    Arc::ptr_eq(&a.0.inner, &b.0.inner) && a.1 == b.1
}

/// The current node, when it belongs to the checkout `of`.
fn current_in(of: (&Engine, SlotKey)) -> Option<Node> {
    current().filter(|c| same_checkout(c.parts(), of))
}

/// What a step guard does at its end.
#[derive(Debug)]
struct Guard {
    node: Node,
    /// Its entry on a current-step stack.
    token: u64,
    /// Finished explicitly (`finish`, `fail`, a cancelled future).
    done: bool,
}

impl Guard {
    fn fail_now(&mut self, err: &dyn Display) {
        self.done = true;
        if self.node.fail(err).is_err() {
            let (engine, _) = self.node.parts();
            engine
                .core()
                .counters
                .step_errors
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    fn finish_now(&mut self) -> Result<()> {
        self.done = true;
        self.node.complete(None)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        remove_current(self.token);
        if self.done {
            return;
        }
        // Errors are ignored: a node finished through the handle, or a
        // trace released meanwhile, leaves nothing to do.
        if std::thread::panicking() {
            let _ = self.node.fail("panicked");
        } else {
            let _ = self.node.complete(None);
        }
    }
}

/// A node that completes when the guard is dropped; current on its thread
/// while it lives. Made by [`Trace::step`], [`Trace::step_with`],
/// [`Node::step`], [`Node::step_with`].
///
/// - Derefs to its [`Node`]: logs, metadata, children, `set_output`, ...
/// - Dropped: the node completes; while the thread panics it fails with
///   `"panicked"`. A node already finished through the handle, or a trace
///   released meanwhile, is left alone (no error, no event).
/// - [`finish`](Step::finish) completes it and returns the result;
///   [`fail`](Step::fail) fails it at once.
/// - Holds a node handle, so it keeps its trace loaded (see the README's
///   "Lifecycle").
///
/// `Step` is `!Send`: it is current on the thread that made it. Do not hold
/// one across an `.await` of a future that other tasks share a thread with,
/// unless that future runs inside [`InStep::in_step`] (which carries the
/// steps opened in it from poll to poll); for a step that moves between
/// threads use [`Trace::step_detached`].
///
/// # Examples
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use serde_json::json;
/// use tracepool::{Engine, NodeStatus, TraceOptions};
/// let engine = Engine::builder().workers(1).capacity(4).memory().build()?;
/// let trace = engine.create(TraceOptions::new())?;
///
/// fn parse(trace: &tracepool::Trace, text: &str) -> Result<u32, Box<dyn std::error::Error>> {
///     let step = trace.step("Parse")?;
///     step.info(text);
///     let n: u32 = text.trim().parse()?; // an early return completes the step too
///     step.output(json!(n))?;
///     Ok(n) // the step completes here
/// }
/// assert_eq!(parse(&trace, "42")?, 42);
/// assert_eq!(trace.all_nodes()?[0].status, NodeStatus::Completed);
///
/// let step = trace.step("Check")?;
/// step.fail("bad input"); // fails now
/// assert_eq!(trace.all_nodes()?[1].status, NodeStatus::Failed);
/// # Ok(()) }
/// ```
///
/// A `Step` cannot be sent to another thread:
/// ```compile_fail
/// # fn main() -> tracepool::Result<()> {
/// # let engine = tracepool::Engine::builder().memory().build()?;
/// # let trace = engine.create(tracepool::TraceOptions::new())?;
/// let step = trace.step("Local")?;
/// std::thread::spawn(move || drop(step));
/// # Ok(()) }
/// ```
#[must_use = "dropping a Step completes its node at once"]
#[derive(Debug)]
pub struct Step {
    guard: Guard,
    /// `!Send` and `!Sync`: the step is on this thread's current-step stack.
    _thread: PhantomData<*const ()>,
}

impl Step {
    fn open(node: Node) -> Step {
        let token = push_current(&node);
        Step {
            guard: Guard {
                node,
                token,
                done: false,
            },
            _thread: PhantomData,
        }
    }

    /// The step's node (also reachable through `Deref`).
    ///
    /// # Examples
    /// ```
    /// # fn main() -> tracepool::Result<()> {
    /// # let engine = tracepool::Engine::builder().workers(1).memory().build()?;
    /// # let trace = engine.create(tracepool::TraceOptions::new())?;
    /// let step = trace.step("Fetch")?;
    /// let handle: tracepool::Node = step.node().clone(); // Send + Sync, outlives the guard
    /// drop(step);
    /// assert_eq!(handle.data()?.status, tracepool::NodeStatus::Completed);
    /// # Ok(()) }
    /// ```
    pub fn node(&self) -> &Node {
        &self.guard.node
    }

    /// Sets the node's output (`node_updated`).
    ///
    /// # Errors
    /// `NodeFinished` is not returned here (the output of a finished node can
    /// be set); `TraceFinished`, `Released`, `ShutDown`.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> tracepool::Result<()> {
    /// # let engine = tracepool::Engine::builder().workers(1).memory().build()?;
    /// # let trace = engine.create(tracepool::TraceOptions::new())?;
    /// let step = trace.step("Sum")?;
    /// step.output(serde_json::json!(3))?;
    /// assert_eq!(step.data()?.output, Some(serde_json::json!(3)));
    /// # Ok(()) }
    /// ```
    pub fn output(&self, output: impl serde::Serialize) -> Result<()> {
        self.guard.node.set_output(output)
    }

    /// Completes the node now (`node_complete`) and ends the step.
    ///
    /// # Errors
    /// `NodeFinished` if the node was finished through the handle;
    /// `TraceFinished`, `Released`, `ShutDown`.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> tracepool::Result<()> {
    /// # let engine = tracepool::Engine::builder().workers(1).memory().build()?;
    /// # let trace = engine.create(tracepool::TraceOptions::new())?;
    /// let step = trace.step("Save")?;
    /// let node = step.node().clone();
    /// step.finish()?;
    /// assert_eq!(node.data()?.status, tracepool::NodeStatus::Completed);
    /// # Ok(()) }
    /// ```
    pub fn finish(mut self) -> Result<()> {
        self.guard.finish_now()
    }

    /// Fails the node now (an `error` log line, then `node_failed`) and ends
    /// the step. Returns nothing: when the node cannot be failed (its trace
    /// was released or finished, the node already finished), the call is
    /// counted in `EngineStats::step_errors`.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> tracepool::Result<()> {
    /// # let engine = tracepool::Engine::builder().workers(1).memory().build()?;
    /// # let trace = engine.create(tracepool::TraceOptions::new())?;
    /// let step = trace.step("Call API")?;
    /// let node = step.node().clone();
    /// step.fail("timed out");
    /// assert_eq!(node.data()?.status, tracepool::NodeStatus::Failed);
    /// # Ok(()) }
    /// ```
    pub fn fail(mut self, err: impl Display) {
        self.guard.fail_now(&err);
    }
}

impl Deref for Step {
    type Target = Node;

    fn deref(&self) -> &Node {
        &self.guard.node
    }
}

/// A step that may move between threads: `Send`, and current only inside
/// a future it is attached to with [`InStep::in_step`] (while that future
/// is polled). Made by [`Trace::step_detached`] and [`Node::step_detached`]
/// (and their `_with` forms).
///
/// Like [`Step`] it derefs to its [`Node`] and completes when dropped (fails
/// with `"panicked"` while the thread panics). Attached to a future, it
/// completes when the future returns, and is **cancelled**
/// (`NodeStatus::Cancelled`) when the future is dropped before that.
///
/// # Examples
/// ```
/// # fn main() -> tracepool::Result<()> {
/// use tracepool::{Engine, InStep, NodeStatus, TraceOptions};
/// let engine = Engine::builder().workers(1).capacity(4).memory().build()?;
/// let trace = engine.create(TraceOptions::new())?;
/// let io = trace.step_detached("io")?;
/// let node = io.node().clone();
/// let worker = std::thread::spawn(move || {
///     io.info("on another thread");
/// }); // dropped there: completed
/// worker.join().unwrap();
/// assert_eq!(node.data()?.status, NodeStatus::Completed);
/// # Ok(()) }
/// ```
#[must_use = "dropping a DetachedStep completes its node at once"]
#[derive(Debug)]
pub struct DetachedStep {
    guard: Guard,
}

impl DetachedStep {
    fn open(node: Node) -> DetachedStep {
        DetachedStep {
            guard: Guard {
                node,
                token: TOKENS.fetch_add(1, Ordering::Relaxed),
                done: false,
            },
        }
    }

    /// The step's node (also reachable through `Deref`).
    ///
    /// # Examples
    /// ```
    /// # fn main() -> tracepool::Result<()> {
    /// # let engine = tracepool::Engine::builder().workers(1).memory().build()?;
    /// # let trace = engine.create(tracepool::TraceOptions::new())?;
    /// let s = trace.step_detached("job")?;
    /// assert_eq!(s.node().data()?.label, "job");
    /// # Ok(()) }
    /// ```
    pub fn node(&self) -> &Node {
        &self.guard.node
    }

    /// Sets the node's output (`node_updated`).
    ///
    /// # Errors
    /// `TraceFinished`, `Released`, `ShutDown`.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> tracepool::Result<()> {
    /// # let engine = tracepool::Engine::builder().workers(1).memory().build()?;
    /// # let trace = engine.create(tracepool::TraceOptions::new())?;
    /// let s = trace.step_detached("job")?;
    /// s.output("done")?;
    /// # Ok(()) }
    /// ```
    pub fn output(&self, output: impl serde::Serialize) -> Result<()> {
        self.guard.node.set_output(output)
    }

    /// Completes the node now and ends the step.
    ///
    /// # Errors
    /// As [`Step::finish`].
    ///
    /// # Examples
    /// ```
    /// # fn main() -> tracepool::Result<()> {
    /// # let engine = tracepool::Engine::builder().workers(1).memory().build()?;
    /// # let trace = engine.create(tracepool::TraceOptions::new())?;
    /// trace.step_detached("job")?.finish()?;
    /// # Ok(()) }
    /// ```
    pub fn finish(mut self) -> Result<()> {
        self.guard.finish_now()
    }

    /// Fails the node now; as [`Step::fail`] (a failure to fail is counted
    /// in `EngineStats::step_errors`).
    ///
    /// # Examples
    /// ```
    /// # fn main() -> tracepool::Result<()> {
    /// # let engine = tracepool::Engine::builder().workers(1).memory().build()?;
    /// # let trace = engine.create(tracepool::TraceOptions::new())?;
    /// trace.step_detached("job")?.fail("disk full");
    /// assert_eq!(trace.all_nodes()?[0].status, tracepool::NodeStatus::Failed);
    /// # Ok(()) }
    /// ```
    pub fn fail(mut self, err: impl Display) {
        self.guard.fail_now(&err);
    }
}

impl Deref for DetachedStep {
    type Target = Node;

    fn deref(&self) -> &Node {
        &self.guard.node
    }
}

// ---- opening steps --------------------------------------------------------

fn label_opts(label: Cow<'static, str>) -> NodeOptions {
    NodeOptions::new().label(label)
}

/// Adds a step's node: under the current node when it belongs to the same
/// checkout, else through `fallback` (`trace.add` / `node.add`).
fn add_step_node<I: serde::Serialize + ?Sized>(
    of: (&Engine, SlotKey),
    input: &I,
    opts: NodeOptions,
    fallback: impl FnOnce(&I, NodeOptions) -> Result<Node>,
) -> Result<Node> {
    match current_in(of) {
        Some(parent) => parent.add(input, opts),
        None => fallback(input, opts),
    }
}

impl Trace {
    /// Opens a [`Step`] labelled `label` (input `null`). Its parent is the
    /// [`current`] step when that belongs to this trace; otherwise the node
    /// is added like [`Trace::add`] (after the current nodes, completing
    /// the running ones; the first one is the root).
    ///
    /// # Errors
    /// As [`Trace::add`]: `LimitExceeded`, `TraceFinished`, `Released`, `ShutDown`.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> tracepool::Result<()> {
    /// # let engine = tracepool::Engine::builder().workers(1).memory().build()?;
    /// let trace = engine.create(tracepool::TraceOptions::new())?;
    /// {
    ///     let _root = trace.step("Request")?;
    ///     let _db = trace.step("Query")?; // child of "Request"
    /// }
    /// let nodes = trace.all_nodes()?;
    /// assert_eq!(nodes[1].parent_ids, vec![nodes[0].id.clone()]);
    /// # Ok(()) }
    /// ```
    pub fn step(&self, label: impl Into<Cow<'static, str>>) -> Result<Step> {
        self.step_with(Value::Null, label_opts(label.into()))
    }

    /// Opens a [`Step`] with an input and node options; the parent is chosen
    /// as in [`step`](Trace::step).
    ///
    /// # Errors
    /// As [`Trace::add`].
    ///
    /// # Examples
    /// ```
    /// # fn main() -> tracepool::Result<()> {
    /// use serde_json::json;
    /// use tracepool::NodeOptions;
    /// # let engine = tracepool::Engine::builder().workers(1).memory().build()?;
    /// let trace = engine.create(tracepool::TraceOptions::new())?;
    /// let step = trace.step_with(json!({"q": "rust"}), NodeOptions::new().label("Search").icon("search"))?;
    /// assert_eq!(step.data()?.input, Some(json!({"q": "rust"})));
    /// # Ok(()) }
    /// ```
    pub fn step_with(&self, input: impl serde::Serialize, opts: NodeOptions) -> Result<Step> {
        let node = add_step_node(self.parts(), &input, opts, |i, o| self.add(i, o))?;
        Ok(Step::open(node))
    }

    /// Opens a [`DetachedStep`] labelled `label`: `Send`, current only inside
    /// a future it is attached to with [`InStep::in_step`]. Its parent is
    /// chosen as in [`step`](Trace::step), at this call.
    ///
    /// # Errors
    /// As [`Trace::add`].
    ///
    /// # Examples
    /// ```
    /// # fn main() -> tracepool::Result<()> {
    /// use tracepool::InStep;
    /// # let engine = tracepool::Engine::builder().workers(1).memory().build()?;
    /// let trace = engine.create(tracepool::TraceOptions::new())?;
    /// let fetch = async {
    ///     let inner = tracepool::current().expect("current inside in_step");
    ///     inner.info("fetching");
    ///     7
    /// };
    /// let n = futures_executor::block_on(fetch.in_step(trace.step_detached("Fetch")?));
    /// assert_eq!(n, 7);
    /// assert_eq!(trace.logs(None)?[0].message, "fetching");
    /// # Ok(()) }
    /// ```
    pub fn step_detached(&self, label: impl Into<Cow<'static, str>>) -> Result<DetachedStep> {
        self.step_detached_with(Value::Null, label_opts(label.into()))
    }

    /// [`step_detached`](Trace::step_detached) with an input and node options.
    ///
    /// # Errors
    /// As [`Trace::add`].
    ///
    /// # Examples
    /// ```
    /// # fn main() -> tracepool::Result<()> {
    /// # let engine = tracepool::Engine::builder().workers(1).memory().build()?;
    /// let trace = engine.create(tracepool::TraceOptions::new())?;
    /// let s = trace.step_detached_with(1, tracepool::NodeOptions::new().label("job"))?;
    /// assert_eq!(s.data()?.input, Some(serde_json::json!(1)));
    /// # Ok(()) }
    /// ```
    pub fn step_detached_with(
        &self,
        input: impl serde::Serialize,
        opts: NodeOptions,
    ) -> Result<DetachedStep> {
        let node = add_step_node(self.parts(), &input, opts, |i, o| self.add(i, o))?;
        Ok(DetachedStep::open(node))
    }
}

impl Node {
    /// Opens a [`Step`] labelled `label` (input `null`). Its parent is the
    /// [`current`] step when that belongs to this node's trace; otherwise
    /// the step is a child of this node (like [`Node::add`]).
    ///
    /// # Errors
    /// As [`Node::add`]: `LimitExceeded`, `TraceFinished`, `Released`, `ShutDown`.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> tracepool::Result<()> {
    /// use tracepool::NodeOptions;
    /// # let engine = tracepool::Engine::builder().workers(1).memory().build()?;
    /// let trace = engine.create(tracepool::TraceOptions::new())?;
    /// let root = trace.add("in", NodeOptions::new().label("Root"))?;
    /// let step = root.step("Work")?;
    /// assert_eq!(step.data()?.parent_ids, vec![root.id().to_owned()]);
    /// # Ok(()) }
    /// ```
    pub fn step(&self, label: impl Into<Cow<'static, str>>) -> Result<Step> {
        self.step_with(Value::Null, label_opts(label.into()))
    }

    /// Opens a [`Step`] with an input and node options; the parent is chosen
    /// as in [`Node::step`].
    ///
    /// # Errors
    /// As [`Node::add`].
    ///
    /// # Examples
    /// ```
    /// # fn main() -> tracepool::Result<()> {
    /// use tracepool::NodeOptions;
    /// # let engine = tracepool::Engine::builder().workers(1).memory().build()?;
    /// let trace = engine.create(tracepool::TraceOptions::new())?;
    /// let root = trace.add("in", NodeOptions::new().label("Root"))?;
    /// let step = root.step_with("x", NodeOptions::new().label("Work"))?;
    /// assert_eq!(step.data()?.label, "Work");
    /// # Ok(()) }
    /// ```
    pub fn step_with(&self, input: impl serde::Serialize, opts: NodeOptions) -> Result<Step> {
        let node = add_step_node(self.parts(), &input, opts, |i, o| self.add(i, o))?;
        Ok(Step::open(node))
    }

    /// Opens a [`DetachedStep`] labelled `label`; the parent is chosen as in
    /// [`Node::step`], at this call.
    ///
    /// # Errors
    /// As [`Node::add`].
    ///
    /// # Examples
    /// ```
    /// # fn main() -> tracepool::Result<()> {
    /// use tracepool::NodeOptions;
    /// # let engine = tracepool::Engine::builder().workers(1).memory().build()?;
    /// let trace = engine.create(tracepool::TraceOptions::new())?;
    /// let root = trace.add("in", NodeOptions::new().label("Root"))?;
    /// let job = root.step_detached("Job")?;
    /// std::thread::spawn(move || {
    ///     job.info("elsewhere");
    /// })
    /// .join()
    /// .unwrap();
    /// # Ok(()) }
    /// ```
    pub fn step_detached(&self, label: impl Into<Cow<'static, str>>) -> Result<DetachedStep> {
        self.step_detached_with(Value::Null, label_opts(label.into()))
    }

    /// [`Node::step_detached`] with an input and node options.
    ///
    /// # Errors
    /// As [`Node::add`].
    ///
    /// # Examples
    /// ```
    /// # fn main() -> tracepool::Result<()> {
    /// use tracepool::NodeOptions;
    /// # let engine = tracepool::Engine::builder().workers(1).memory().build()?;
    /// let trace = engine.create(tracepool::TraceOptions::new())?;
    /// let root = trace.add("in", NodeOptions::new().label("Root"))?;
    /// let job = root.step_detached_with(2, NodeOptions::new().label("Job"))?;
    /// assert_eq!(job.data()?.input, Some(serde_json::json!(2)));
    /// # Ok(()) }
    /// ```
    pub fn step_detached_with(
        &self,
        input: impl serde::Serialize,
        opts: NodeOptions,
    ) -> Result<DetachedStep> {
        let node = add_step_node(self.parts(), &input, opts, |i, o| self.add(i, o))?;
        Ok(DetachedStep::open(node))
    }
}

// ---- futures ----------------------------------------------------------------

/// Attaches a [`DetachedStep`] to a future, like `tracing::Instrument`.
///
/// Implemented for every [`Future`]. While the returned [`InStepFuture`] is
/// polled, the step is [`current`] (so steps opened in the future become its
/// children), and steps the future opens and holds across `.await` points
/// stay current for it alone — they are carried with the future, not left on
/// the polling thread. When the future returns, the step completes (or fails
/// with `"panicked"` if the poll panicked); dropped before that, it is
/// cancelled.
///
/// # Examples
/// ```
/// # fn main() -> tracepool::Result<()> {
/// use tracepool::{Engine, InStep, NodeStatus, TraceOptions};
/// let engine = Engine::builder().workers(1).capacity(4).memory().build()?;
/// let trace = engine.create(TraceOptions::new())?;
/// let request = trace.step_detached("Request")?;
/// let work = async {
///     let parse = tracepool::current().expect("Request is current").step("Parse")?;
///     std::future::ready(()).await; // `parse` stays current for this future
///     parse.info("parsed");
///     Ok::<_, tracepool::Error>(())
/// };
/// futures_executor::block_on(work.in_step(request))?;
/// let nodes = trace.all_nodes()?;
/// assert_eq!(nodes[1].label, "Parse");
/// assert_eq!(nodes[1].parent_ids, vec![nodes[0].id.clone()]);
/// assert!(nodes.iter().all(|n| n.status == NodeStatus::Completed));
/// # Ok(()) }
/// ```
pub trait InStep: Future + Sized {
    /// Wraps the future so that `step` is current while it is polled; the
    /// step completes when the future returns.
    fn in_step(self, step: DetachedStep) -> InStepFuture<Self>;
}

impl<F: Future> InStep for F {
    fn in_step(self, step: DetachedStep) -> InStepFuture<F> {
        let frames = vec![Frame {
            token: step.guard.token,
            node: step.guard.node.clone(),
        }];
        InStepFuture {
            inner: self,
            frames,
            slot: StepSlot(Some(step)),
        }
    }
}

/// Ends a future's step when the future is dropped: cancelled if it had not
/// returned yet.
#[derive(Debug)]
struct StepSlot(Option<DetachedStep>);

impl Drop for StepSlot {
    fn drop(&mut self) {
        if let Some(mut step) = self.0.take()
            && !std::thread::panicking()
        {
            step.guard.done = true;
            let _ = step.guard.node.set_status(NodeStatus::Cancelled);
        }
    }
}

pin_project_lite::pin_project! {
    /// A future with a [`DetachedStep`] attached; see [`InStep`].
    ///
    /// # Examples
    /// ```
    /// # fn main() -> tracepool::Result<()> {
    /// use tracepool::{InStep, InStepFuture};
    /// # let engine = tracepool::Engine::builder().workers(1).memory().build()?;
    /// # let trace = engine.create(tracepool::TraceOptions::new())?;
    /// let fut: InStepFuture<_> = async { 1 }.in_step(trace.step_detached("one")?);
    /// assert_eq!(futures_executor::block_on(fut), 1);
    /// # Ok(()) }
    /// ```
    #[must_use = "futures do nothing unless polled"]
    #[derive(Debug)]
    pub struct InStepFuture<F> {
        // Field order is drop order: the future (and the steps it holds)
        // first, then the carried stack entries, then the step itself.
        #[pin]
        inner: F,
        frames: Vec<Frame>,
        slot: StepSlot,
    }
}

/// Puts a future's stack entries back into it after a poll (also when the
/// poll panics).
struct Restore<'a> {
    frames: &'a mut Vec<Frame>,
    token: u64,
}

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        let token = self.token;
        let frames = &mut *self.frames;
        let _ = STACK.try_with(|s| {
            let mut s = s.borrow_mut();
            if let Some(at) = s.iter().rposition(|f| f.token == token) {
                frames.extend(s.drain(at..));
            }
        });
    }
}

impl<F: Future> Future for InStepFuture<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let Some(token) = this.slot.0.as_ref().map(|s| s.guard.token) else {
            // Already returned once: no step to make current.
            return this.inner.poll(cx);
        };
        let frames = this.frames;
        let _ = STACK.try_with(|s| s.borrow_mut().append(&mut *frames));
        let restore = Restore {
            frames: &mut *frames,
            token,
        };
        let out = this.inner.poll(cx);
        drop(restore);
        if out.is_ready() {
            let done = std::mem::take(frames);
            drop(done);
            // Completes the step now, not when the wrapper is dropped.
            drop(this.slot.0.take());
        }
        out
    }
}
