//! The **blocking** Rust port of the *reference's design* (YaoApp/yao `trace`,
//! version B; reference spec §3, §6.1, §7), kept only to compare against and
//! reported as the labelled `baseline_blocking` row.
//!
//! Its callers are OS threads that block on every round trip to a trace's
//! state worker (`blocking_send` + `blocking_recv`, a futex wake-up and a park
//! each, ~13 µs on the project's VM), and its driver only serializes: it
//! overstates the Go original's cost (where a goroutine hand-off is a
//! fraction of a microsecond) by up to ~6x. The ratios against "the
//! reference" come from the Go-shaped port, `go_baseline.rs`, which runs the
//! same design on tasks and models the Go figures' store driver. This file
//! stays because the heap profile (`profiling/heap_profile.rs`) and the task
//! test (`tests/tasks_steady.rs`) use it.
//!
//! Not part of the library: included with `#[path]` by the benches, the
//! profiling programs and the tests that need it.
//!
//! What is ported, on purpose, because it is what tracepool replaces:
//! - per trace, a spawned **state-worker task** owning the manager state,
//!   fed by a command channel of capacity **100**; every state read (root,
//!   current nodes, spaces, history, completed flag) is a command plus a
//!   one-shot reply channel — a round trip; setters are fire-and-forget;
//! - per trace, a **pubsub** with a bus channel of capacity **1000** and a
//!   spawned **forwarding task** that fans events out to subscriber channels
//!   with non-blocking sends (full → dropped);
//! - **subscriptions** replay history from a spawned task (blocking sends,
//!   5 s timeout each), buffer `max(1000, history + 100)`;
//! - node objects (`Arc<Mutex<TraceNode>>`) and events (`Arc<TraceUpdate>`
//!   with `serde_json::Value` payloads) allocated per operation; every node
//!   save and every event serialized for the driver;
//! - **unbounded** in-memory history;
//! - **release** sets the closed flag, cancels, closes the command channel
//!   and stops the pubsub — without waiting for any task.
//!
//! The tasks run on a multi-thread tokio runtime the [`Baseline`] owns (the
//! equivalent of Go's scheduler). Callers must not be runtime threads (the
//! caller side blocks on replies, like a goroutine would).

#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio::sync::{mpsc, oneshot, watch};

use crate::scenarios::{Lvl, ScenarioEngine, SubscribeEngine};

/// Command channel capacity of the state worker (reference: 100).
pub const COMMAND_CAPACITY: usize = 100;
/// Pubsub bus capacity (reference: 1000).
pub const BUS_CAPACITY: usize = 1000;
/// Replay send timeout (reference: 5 s).
const REPLAY_TIMEOUT: Duration = Duration::from_secs(5);

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn short_id() -> String {
    const A: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    (0..12).map(|_| A[fastrand::usize(..36)] as char).collect()
}

// ---- data model (reference §2) ------------------------------------------------

/// A node, shared by pointer between the state worker, handles and parents.
#[derive(Debug, Default)]
pub struct TraceNode {
    id: String,
    parent_ids: Vec<String>,
    children: Vec<NodeRef>,
    label: String,
    node_type: String,
    icon: String,
    description: String,
    metadata: Map<String, Value>,
    status: &'static str,
    input: Value,
    output: Value,
    created_at: i64,
    start_time: i64,
    end_time: i64,
    updated_at: i64,
}

type NodeRef = Arc<Mutex<TraceNode>>;

/// The node's JSON, children included recursively (the reference serializes
/// the `Children []*TraceNode` field as nested nodes).
fn node_value(n: &TraceNode) -> Value {
    let children: Vec<Value> = n
        .children
        .iter()
        .map(|c| node_value(&c.lock().unwrap()))
        .collect();
    json!({
        "id": n.id,
        "parent_ids": n.parent_ids,
        "children": children,
        "label": n.label,
        "type": n.node_type,
        "icon": n.icon,
        "description": n.description,
        "metadata": n.metadata,
        "status": n.status,
        "input": n.input,
        "output": n.output,
        "created_at": n.created_at,
        "start_time": n.start_time,
        "end_time": n.end_time,
        "updated_at": n.updated_at,
    })
}

/// A space with its key-value data.
#[derive(Debug, Default)]
struct TraceSpace {
    id: String,
    label: String,
    created_at: i64,
    updated_at: i64,
    data: Map<String, Value>,
}

fn space_value(s: &TraceSpace) -> Value {
    json!({
        "id": s.id, "label": s.label, "type": "", "icon": "", "description": "",
        "ttl": 0, "metadata": {}, "created_at": s.created_at, "updated_at": s.updated_at,
    })
}

/// The event envelope (`TraceUpdate`, reference §2.8), one allocation per event
/// plus its `Value` payload.
#[derive(Debug, Serialize)]
pub struct TraceUpdate {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub trace_id: String,
    pub node_id: String,
    pub space_id: String,
    pub timestamp: i64,
    pub data: Value,
}

/// An event as delivered to subscribers.
pub type Update = Arc<TraceUpdate>;

// ---- driver -------------------------------------------------------------------

/// The baseline's in-memory driver: like tracepool's memory driver it keeps
/// nothing and counts what it is given, but every save serializes its record
/// (the reference's drivers write JSON).
#[derive(Debug, Default)]
pub struct MemDriver {
    writes: AtomicU64,
    bytes: AtomicU64,
}

impl MemDriver {
    fn save<T: Serialize + ?Sized>(&self, v: &T) {
        let b = serde_json::to_vec(v).unwrap_or_default();
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(b.len() as u64, Ordering::Relaxed);
    }
    fn save_node(&self, n: &NodeRef) {
        let v = node_value(&n.lock().unwrap());
        self.save(&v);
    }
    /// `(writes, bytes)` so far.
    pub fn received(&self) -> (u64, u64) {
        (
            self.writes.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }
}

// ---- state worker (reference §7.2) --------------------------------------------

#[derive(Default)]
struct ManagerState {
    root: Option<NodeRef>,
    current: Vec<NodeRef>,
    spaces: HashMap<String, Arc<Mutex<TraceSpace>>>,
    status: &'static str,
    completed: bool,
    updates: Vec<Update>,
}

/// A space operation, run by the state worker.
type SpaceFn = Box<dyn FnOnce(&mut ManagerState) -> Option<Value> + Send>;

enum Cmd {
    SetRoot(NodeRef),
    SetCurrent(Vec<NodeRef>),
    SetStatus(&'static str),
    AddUpdate(Update),
    PutSpace(String, Arc<Mutex<TraceSpace>>),
    GetRoot(oneshot::Sender<Option<NodeRef>>),
    GetCurrent(oneshot::Sender<Vec<NodeRef>>),
    GetSpace(String, oneshot::Sender<Option<Arc<Mutex<TraceSpace>>>>),
    GetUpdates(i64, oneshot::Sender<Vec<Update>>),
    MarkCompleted(oneshot::Sender<bool>),
    IsCompleted(oneshot::Sender<bool>),
    /// A space operation run inside the worker (driver I/O included).
    SpaceOp(SpaceFn, oneshot::Sender<Option<Value>>),
}

async fn state_worker(mut rx: mpsc::Receiver<Cmd>) {
    let mut st = ManagerState {
        status: "pending",
        updates: Vec::with_capacity(100),
        ..ManagerState::default()
    };
    // Version B: range over the channel until it is closed.
    while let Some(cmd) = rx.recv().await {
        match cmd {
            Cmd::SetRoot(n) => st.root = Some(n),
            Cmd::SetCurrent(v) => st.current = v,
            Cmd::SetStatus(s) => st.status = s,
            Cmd::AddUpdate(u) => st.updates.push(u),
            Cmd::PutSpace(id, s) => {
                st.spaces.insert(id, s);
            }
            Cmd::GetRoot(r) => {
                let _ = r.send(st.root.clone());
            }
            Cmd::GetCurrent(r) => {
                let _ = r.send(st.current.clone());
            }
            Cmd::GetSpace(id, r) => {
                let _ = r.send(st.spaces.get(&id).cloned());
            }
            Cmd::GetUpdates(since, r) => {
                let _ = r.send(
                    st.updates
                        .iter()
                        .filter(|u| u.timestamp >= since)
                        .cloned()
                        .collect(),
                );
            }
            Cmd::MarkCompleted(r) => {
                let was = st.completed;
                st.completed = true;
                let _ = r.send(was);
            }
            Cmd::IsCompleted(r) => {
                let _ = r.send(st.completed);
            }
            Cmd::SpaceOp(f, r) => {
                let _ = r.send(f(&mut st));
            }
        }
    }
}

// ---- pubsub (reference §6.1) --------------------------------------------------

struct PubSub {
    bus: mpsc::Sender<Update>,
    subs: Arc<RwLock<HashMap<u64, mpsc::Sender<Update>>>>,
    stop: Mutex<Option<watch::Sender<bool>>>,
    stopped: AtomicBool,
    next_id: AtomicU64,
}

impl PubSub {
    fn start(rt: &tokio::runtime::Handle) -> PubSub {
        let (bus, mut bus_rx) = mpsc::channel::<Update>(BUS_CAPACITY);
        let (stop_tx, mut stop_rx) = watch::channel(false);
        let subs: Arc<RwLock<HashMap<u64, mpsc::Sender<Update>>>> = Arc::default();
        let fwd_subs = subs.clone();
        // The forward task: one per trace, lives until Stop.
        rt.spawn(async move {
            loop {
                tokio::select! {
                    _ = stop_rx.changed() => return,
                    ev = bus_rx.recv() => {
                        let Some(ev) = ev else { return };
                        let subs = fwd_subs.read().unwrap();
                        for tx in subs.values() {
                            // Non-blocking: a full subscriber loses the event.
                            let _ = tx.try_send(ev.clone());
                        }
                    }
                }
            }
        });
        PubSub {
            bus,
            subs,
            stop: Mutex::new(Some(stop_tx)),
            stopped: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
        }
    }

    fn publish(&self, u: Update) {
        if self.stopped.load(Ordering::Relaxed) {
            return;
        }
        // Non-blocking; a full bus drops the event.
        let _ = self.bus.try_send(u);
    }

    fn subscribe_with_history(
        &self,
        rt: &tokio::runtime::Handle,
        history: Vec<Update>,
        buffer: usize,
    ) -> mpsc::Receiver<Update> {
        let (tx, rx) = mpsc::channel(buffer);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.subs.write().unwrap().insert(id, tx);
        let subs = self.subs.clone();
        // The replay task: one per subscription.
        rt.spawn(async move {
            let Some(tx) = subs.read().unwrap().get(&id).cloned() else {
                return;
            };
            for u in history {
                match tokio::time::timeout(REPLAY_TIMEOUT, tx.send(u)).await {
                    Ok(Ok(())) => {}
                    _ => return,
                }
            }
        });
        rx
    }

    /// Closes the stop channel and every subscriber channel; waits for nothing.
    fn stop(&self) {
        if self.stopped.swap(true, Ordering::AcqRel) {
            return;
        }
        drop(self.stop.lock().unwrap().take());
        self.subs.write().unwrap().clear();
    }
}

// ---- manager (reference §3) ---------------------------------------------------

/// One trace of the baseline (the reference's `Manager`).
pub struct Manager {
    id: String,
    tx: RwLock<Option<mpsc::Sender<Cmd>>>,
    closed: AtomicBool,
    cancelled: AtomicBool,
    pubsub: PubSub,
    driver: Arc<MemDriver>,
    rt: tokio::runtime::Handle,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager").field("id", &self.id).finish()
    }
}

impl Manager {
    /// `safeSend`: false once closed.
    fn safe_send(&self, c: Cmd) -> bool {
        if self.closed.load(Ordering::Acquire) {
            return false;
        }
        let tx = match &*self.tx.read().unwrap() {
            Some(tx) => tx.clone(),
            None => return false,
        };
        tx.blocking_send(c).is_ok()
    }

    fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Cmd, default: T) -> T {
        let (r, rx) = oneshot::channel();
        if !self.safe_send(make(r)) {
            return default;
        }
        rx.blocking_recv().unwrap_or(default)
    }

    fn check_ctx(&self) -> bool {
        !self.cancelled.load(Ordering::Acquire)
    }

    /// `addUpdateAndBroadcast`: driver, history (fire-and-forget), pubsub.
    fn emit(&self, kind: &'static str, node_id: &str, space_id: &str, ts: i64, data: Value) {
        let u = Arc::new(TraceUpdate {
            kind,
            trace_id: self.id.clone(),
            node_id: node_id.to_owned(),
            space_id: space_id.to_owned(),
            timestamp: ts,
            data,
        });
        self.driver.save(&*u);
        self.safe_send(Cmd::AddUpdate(u.clone()));
        self.pubsub.publish(u);
    }

    fn root(&self) -> Option<NodeRef> {
        self.ask(Cmd::GetRoot, None)
    }
    fn current(&self) -> Vec<NodeRef> {
        self.ask(Cmd::GetCurrent, Vec::new())
    }

    fn new_node(&self, parent_ids: Vec<String>, input: Value, label: &str, ts: i64) -> NodeRef {
        Arc::new(Mutex::new(TraceNode {
            id: short_id(),
            parent_ids,
            label: label.to_owned(),
            status: "running",
            input,
            created_at: ts,
            start_time: ts,
            updated_at: ts,
            ..TraceNode::default()
        }))
    }

    /// A node handle's `Complete` (also used for auto-complete).
    fn complete_node(&self, n: &NodeRef, output: Option<Value>) {
        let ts = now_ms();
        let (id, data) = {
            let mut g = n.lock().unwrap();
            if let Some(o) = output {
                g.output = o;
            }
            g.status = "completed";
            g.end_time = ts;
            g.updated_at = ts;
            let data = json!({
                "node_id": g.id, "status": "success", "end_time": ts,
                "duration": ts - g.start_time, "output": g.output,
            });
            (g.id.clone(), data)
        };
        self.driver.save_node(n);
        self.emit("node_complete", &id, "", ts, data);
    }

    fn auto_complete(&self, current: &[NodeRef]) {
        for c in current {
            let running = matches!(c.lock().unwrap().status, "running" | "pending");
            if running {
                self.complete_node(c, None);
            }
        }
    }

    fn add(&self, input: Value, label: &str) -> NodeRef {
        assert!(self.check_ctx(), "context canceled");
        let ts = now_ms();
        let Some(_root) = self.root() else {
            let node = self.new_node(Vec::new(), input, label, ts);
            self.driver.save_node(&node);
            self.safe_send(Cmd::SetRoot(node.clone()));
            self.safe_send(Cmd::SetCurrent(vec![node.clone()]));
            self.safe_send(Cmd::SetStatus("running"));
            let (id, data) = {
                let g = node.lock().unwrap();
                (g.id.clone(), json!({ "node": node_value(&g) }))
            };
            self.emit("node_start", &id, "", ts, data);
            return node;
        };
        let current = self.current();
        self.auto_complete(&current);
        let parent_ids = current
            .iter()
            .map(|c| c.lock().unwrap().id.clone())
            .collect();
        let node = self.new_node(parent_ids, input, label, ts);
        for c in &current {
            c.lock().unwrap().children.push(node.clone());
            self.driver.save_node(c);
        }
        self.driver.save_node(&node);
        self.safe_send(Cmd::SetCurrent(vec![node.clone()]));
        let (id, data) = {
            let g = node.lock().unwrap();
            (g.id.clone(), json!({ "node": node_value(&g) }))
        };
        self.emit("node_start", &id, "", ts, data);
        node
    }

    fn parallel(&self, labels: &[&str]) -> Vec<NodeRef> {
        assert!(self.check_ctx(), "context canceled");
        assert!(self.root().is_some(), "root node does not exist");
        let current = self.current();
        self.auto_complete(&current);
        let parent = current[0].clone();
        let parent_id = parent.lock().unwrap().id.clone();
        let ts = now_ms();
        let children: Vec<NodeRef> = labels
            .iter()
            .map(|l| self.new_node(vec![parent_id.clone()], Value::Null, l, ts))
            .collect();
        parent
            .lock()
            .unwrap()
            .children
            .extend(children.iter().cloned());
        for c in &children {
            self.driver.save_node(c);
        }
        self.driver.save_node(&parent);
        self.safe_send(Cmd::SetCurrent(children.clone()));
        let nodes: Vec<Value> = children
            .iter()
            .map(|c| node_value(&c.lock().unwrap()))
            .collect();
        self.emit("node_start", "", "", ts, json!({ "nodes": nodes }));
        children
    }

    fn log_on(&self, n: &NodeRef, level: &'static str, msg: &str) {
        let ts = now_ms();
        let node_id = n.lock().unwrap().id.clone();
        let log = json!({
            "Timestamp": ts, "Level": level, "Message": msg, "Data": [], "NodeID": node_id,
        });
        self.driver.save(&log);
        self.emit("log_added", &node_id, "", ts, log);
    }

    fn log(&self, level: &'static str, msg: &str) {
        for n in self.current() {
            self.log_on(&n, level, msg);
        }
    }

    fn complete(&self, output: Value) {
        assert!(self.check_ctx(), "context canceled");
        for n in self.current() {
            self.complete_node(&n, Some(output.clone()));
        }
    }

    fn create_space(&self, label: &str) -> String {
        assert!(self.check_ctx(), "context canceled");
        let ts = now_ms();
        let space = TraceSpace {
            id: short_id(),
            label: label.to_owned(),
            created_at: ts,
            updated_at: ts,
            data: Map::new(),
        };
        let v = space_value(&space);
        self.driver.save(&v);
        let id = space.id.clone();
        self.safe_send(Cmd::PutSpace(id.clone(), Arc::new(Mutex::new(space))));
        self.emit("space_created", "", &id, ts, v);
        id
    }

    fn get_space(&self, id: &str) -> Option<Arc<Mutex<TraceSpace>>> {
        self.ask(|r| Cmd::GetSpace(id.to_owned(), r), None)
    }

    fn set_space_value(&self, space_id: &str, key: &str, value: Value) {
        assert!(self.check_ctx(), "context canceled");
        let space = self.get_space(space_id).expect("space not found");
        let driver = self.driver.clone();
        let (k, v) = (key.to_owned(), value.clone());
        let ts = now_ms();
        let label = self.ask(
            move |r| {
                Cmd::SpaceOp(
                    Box::new(move |_st| {
                        let mut s = space.lock().unwrap();
                        s.data.insert(k, v);
                        s.updated_at = ts;
                        // SetSpaceKey + SaveSpace, inside the worker.
                        driver.save(&s.data);
                        driver.save(&space_value(&s));
                        Some(Value::String(s.label.clone()))
                    }),
                    r,
                )
            },
            None,
        );
        let data = json!({
            "type": space_id,
            "item": { "id": key, "type": space_id, "title": label, "content": value, "timestamp": ts },
        });
        self.emit("memory_add", "", space_id, ts, data);
    }

    fn get_space_value(&self, space_id: &str, key: &str) -> Option<Value> {
        let space = self.get_space(space_id)?;
        let key = key.to_owned();
        self.ask(
            move |r| {
                Cmd::SpaceOp(
                    Box::new(move |_st| space.lock().unwrap().data.get(&key).cloned()),
                    r,
                )
            },
            None,
        )
    }

    fn mark_complete(&self) {
        // Unreachable worker answers "newly marked" (false = was not completed).
        if self.ask(Cmd::MarkCompleted, false) {
            return;
        }
        self.safe_send(Cmd::SetStatus("completed"));
        let ts = now_ms();
        let total = self
            .root()
            .map(|r| ts - r.lock().unwrap().created_at)
            .unwrap_or(0);
        self.emit(
            "complete",
            "",
            "",
            ts,
            json!({ "trace_id": self.id, "status": "completed", "total_duration": total }),
        );
    }

    /// `SubscribeFrom(since)`.
    fn subscribe_from(&self, since: i64) -> mpsc::Receiver<Update> {
        let history = self.ask(|r| Cmd::GetUpdates(since, r), Vec::new());
        let buffer = 1000.max(history.len() + 100);
        self.pubsub
            .subscribe_with_history(&self.rt, history, buffer)
    }

    /// Whether the trace was marked complete (one round trip).
    pub fn is_complete(&self) -> bool {
        self.ask(Cmd::IsCompleted, true)
    }

    /// The trace id.
    pub fn id(&self) -> &str {
        &self.id
    }
}

// ---- the engine: registry + runtime -------------------------------------------

struct BaselineInner {
    rt: tokio::runtime::Runtime,
    registry: Mutex<HashMap<String, Arc<Manager>>>,
    driver: Arc<MemDriver>,
}

/// The baseline engine: a registry of managers and the runtime their tasks run on.
#[derive(Clone)]
pub struct Baseline {
    inner: Arc<BaselineInner>,
}

impl std::fmt::Debug for Baseline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Baseline").finish_non_exhaustive()
    }
}

impl Default for Baseline {
    fn default() -> Self {
        Baseline::new(std::thread::available_parallelism().map_or(2, |n| n.get()))
    }
}

impl Baseline {
    /// A baseline whose tasks run on `threads` runtime threads.
    pub fn new(threads: usize) -> Baseline {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("baseline")
            .enable_time()
            .build()
            .expect("baseline runtime");
        Baseline {
            inner: Arc::new(BaselineInner {
                rt,
                registry: Mutex::new(HashMap::new()),
                driver: Arc::default(),
            }),
        }
    }

    /// Tasks alive on the baseline's runtime (state workers, forwarders, replays).
    pub fn live_tasks(&self) -> usize {
        self.inner.rt.metrics().num_alive_tasks()
    }

    /// Loaded traces.
    pub fn loaded(&self) -> usize {
        self.inner.registry.lock().unwrap().len()
    }

    /// The driver's counters.
    pub fn driver(&self) -> &MemDriver {
        &self.inner.driver
    }

    /// `Release`: closed flag, cancel, close the command channel, stop the
    /// pubsub. Waits for nothing.
    pub fn release_id(&self, id: &str) {
        let m = self.inner.registry.lock().unwrap().remove(id);
        if let Some(m) = m {
            m.closed.store(true, Ordering::Release);
            m.cancelled.store(true, Ordering::Release);
            drop(m.tx.write().unwrap().take());
            m.pubsub.stop();
        }
    }
}

/// A node handle of the baseline.
#[derive(Clone)]
pub struct BNode {
    mgr: Arc<Manager>,
    node: NodeRef,
}

impl ScenarioEngine for Baseline {
    type Trace = Arc<Manager>;
    type Node = BNode;

    fn create(&self) -> Arc<Manager> {
        let id = tracepool::gen_trace_id();
        let handle = self.inner.rt.handle().clone();
        let (tx, rx) = mpsc::channel(COMMAND_CAPACITY);
        handle.spawn(state_worker(rx));
        let m = Arc::new(Manager {
            id: id.clone(),
            tx: RwLock::new(Some(tx)),
            closed: AtomicBool::new(false),
            cancelled: AtomicBool::new(false),
            pubsub: PubSub::start(&handle),
            driver: self.inner.driver.clone(),
            rt: handle,
        });
        let ts = now_ms();
        // SaveTraceInfo, then `init`.
        m.driver.save(&json!({
            "id": id, "driver": "memory", "status": "pending", "created_at": ts,
            "updated_at": ts, "metadata": {}, "archived": false,
        }));
        m.emit("init", "", "", ts, json!({ "trace_id": id }));
        self.inner.registry.lock().unwrap().insert(id, m.clone());
        m
    }
    fn add(&self, t: &Arc<Manager>, input: Value, label: &'static str) -> BNode {
        BNode {
            mgr: t.clone(),
            node: t.add(input, label),
        }
    }
    fn complete(&self, t: &Arc<Manager>, output: Value) {
        t.complete(output);
    }
    fn parallel(&self, t: &Arc<Manager>, labels: &[&'static str]) -> Vec<BNode> {
        t.parallel(labels)
            .into_iter()
            .map(|node| BNode {
                mgr: t.clone(),
                node,
            })
            .collect()
    }
    fn log(&self, t: &Arc<Manager>, level: Lvl, msg: &'static str) {
        let l = match level {
            Lvl::Debug => "debug",
            Lvl::Info => "info",
            Lvl::Warn => "warn",
        };
        t.log(l, msg);
    }
    fn node_complete(&self, n: &BNode, output: Value) {
        n.mgr.complete_node(&n.node, Some(output));
    }
    fn node_info(&self, n: &BNode, msg: &'static str) {
        n.mgr.log_on(&n.node, "info", msg);
    }
    fn create_space(&self, t: &Arc<Manager>, label: &'static str) -> String {
        t.create_space(label)
    }
    fn set_space_value(&self, t: &Arc<Manager>, space: &str, key: &'static str, v: Value) {
        t.set_space_value(space, key, v);
    }
    fn get_space_value(&self, t: &Arc<Manager>, space: &str, key: &'static str) -> Option<Value> {
        t.get_space_value(space, key)
    }
    fn mark_complete(&self, t: &Arc<Manager>) {
        t.mark_complete();
    }
    fn release(&self, t: Arc<Manager>) {
        self.release_id(&t.id);
    }
}

/// A baseline subscription: the subscriber channel plus the runtime handle
/// used to wait on it from a plain thread.
pub struct BSub {
    rx: mpsc::Receiver<Update>,
    rt: tokio::runtime::Handle,
}

impl SubscribeEngine for Baseline {
    type Sub = BSub;

    fn subscribe(&self, t: &Arc<Manager>) -> BSub {
        BSub {
            rx: t.subscribe_from(0),
            rt: self.inner.rt.handle().clone(),
        }
    }

    /// Reads until a `complete` event, the channel's close, or `timeout`
    /// (the reference's tests and benchmark drain "for up to 10 ms").
    fn drain(&self, sub: &mut BSub, timeout: Duration) -> usize {
        let rx = &mut sub.rx;
        sub.rt.block_on(async {
            let deadline = tokio::time::Instant::now() + timeout;
            let mut n = 0;
            loop {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(u)) => {
                        n += 1;
                        if u.kind == "complete" {
                            return n;
                        }
                    }
                    _ => return n,
                }
            }
        })
    }
}

impl BSub {
    /// Takes whatever is ready now, without waiting.
    pub fn try_drain(&mut self) -> usize {
        let mut n = 0;
        while self.rx.try_recv().is_ok() {
            n += 1;
        }
        n
    }

    /// Waits for one event on each subscription (one `block_on` for all).
    pub fn recv_each(subs: &mut [BSub]) -> usize {
        let Some(rt) = subs.first().map(|s| s.rt.clone()) else {
            return 0;
        };
        rt.block_on(async {
            let mut n = 0;
            for s in subs.iter_mut() {
                if s.rx.recv().await.is_some() {
                    n += 1;
                }
            }
            n
        })
    }
}
