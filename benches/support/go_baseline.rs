//! The **Go-shaped** Rust port of the reference design: the row the ratios
//! against "the reference" are taken from.
//!
//! Not part of the library: included with `#[path]` by the benches and the
//! profiling programs (next to `scenarios.rs`, which it uses for
//! [`Scenario`]).
//!
//! # What it models, and why it differs from `baseline.rs`
//!
//! `baseline.rs` (kept as the labelled `baseline_blocking` row) drives the
//! same design from OS threads that block on `blocking_send` /
//! `blocking_recv`: every round trip to a trace's state worker is a futex
//! wake-up of a runtime thread and a park of the caller (~13 µs each on this
//! VM), where the Go original's goroutine hand-off costs a fraction of a
//! microsecond. That overstated the reference's cost by up to ~6x.
//!
//! Here the **caller is a task** too, as the Go benchmark loop is a
//! goroutine: every loop body runs on a tokio task of a multi-thread runtime
//! with 2 worker threads (`GOMAXPROCS = 2` on this VM) and *awaits* its round
//! trips (`send().await`, `oneshot` `.await`), so a round trip is two task
//! switches on the same worker (tokio's LIFO slot), like Go's run-next slot.
//! Parallel branches are **spawned tasks**, one per branch, awaited like a
//! `sync.WaitGroup` (the reference starts one goroutine per branch).
//!
//! Per trace (the reference's version B, spec §3, §6.1, §7), as in
//! `baseline.rs`:
//! - a spawned **state-worker task** owning the manager state, fed by a command
//!   channel of capacity 100; getters (root, current nodes, spaces, history,
//!   completed flag) are a command plus a one-shot reply, setters are sent
//!   without a reply; space key-value operations run *inside* the worker,
//!   driver I/O included;
//! - a **pubsub** with a bus of capacity 1000 and a spawned **forwarding
//!   task**; subscriptions replay history from a spawned task;
//! - nodes are `Arc<Mutex<TraceNode>>` (Go: `*TraceNode`, mutated in place),
//!   events `Arc<TraceUpdate>` with `serde_json::Value` payloads (Go:
//!   `*TraceUpdate` with `interface{}` data);
//! - `Release` sets the closed flag, cancels, closes the command channel and
//!   stops the pubsub without waiting; `Remove` = `Release` + `DeleteTrace`.
//!
//! **The driver is the reference's store driver on an in-memory key-value
//! map** ([`KvStore`]), because that is the configuration the Go figures in
//! docs/PERFORMANCE.md were measured with ("Store driver on an in-memory
//! map"). Spec §5.3, work per call:
//! - `SaveUpdate`: under the driver's mutex, read `P:T:updates` (one JSON array
//!   of every event so far), decode it, append, re-encode the whole array,
//!   write it back — O(events) per event, as in Go;
//! - `SaveNode` / `SaveSpace` / `SaveTraceInfo`: encode, `Set`;
//! - `SaveLog`: encode, `Push` onto the node's log list;
//! - `SetSpaceKey`: read the space's data map, decode, insert, re-encode,
//!   `Set`; `GetSpaceKey`: read, decode, look up;
//! - `New` checks `Exists` (one `Get` of the info key); `DeleteTrace` lists
//!   **every key** of the store (`Keys()`) and deletes those with the trace's
//!   prefix.
//!
//! # Versions (read before quoting a ratio)
//!
//! The Go figures were measured at commit 5a3f9a6a, the reference's version
//! **C** (spec §0): state behind a `sync.Mutex` instead of a state goroutine,
//! events pushed through a process-wide event service instead of a per-trace
//! pubsub. This port keeps version **B**'s task structure (state worker and
//! forwarder per trace), the design tracepool replaces and the one issue 9
//! asks to port; its round trips are awaited task switches, which C replaces
//! by a mutex. The driver work (above) is the same in B and C and dominates
//! the Go figures. How close each loop lands to the Go figure is measured by
//! `profiling/go_loops.sh` and stated in `docs/PERFORMANCE.md`; no sleep or
//! padding is added anywhere to move it.

#![allow(dead_code, unreachable_pub)]

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::sync::{mpsc, oneshot, watch};

use crate::scenarios::Scenario;

/// Command channel capacity of the state worker (reference: 100).
pub const COMMAND_CAPACITY: usize = 100;
/// Pubsub bus capacity (reference: 1000).
pub const BUS_CAPACITY: usize = 1000;
/// Replay send timeout (reference: 5 s).
const REPLAY_TIMEOUT: Duration = Duration::from_secs(5);
/// The store driver's default key prefix (reference: `__trace`).
const PREFIX: &str = "__trace";

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

// ---- the in-memory key-value store (the Go benchmark's stand-in store) --------

/// An in-memory key-value store with the operations the reference's store
/// driver uses (`Get`, `Set`, `Has`, `Del`, `Keys`, `Push`). Values are JSON
/// strings; `Get` hands out a shared reference (Go returns the string header,
/// no copy).
#[derive(Debug, Default)]
pub struct KvStore {
    strings: Mutex<HashMap<String, Arc<str>>>,
    lists: Mutex<HashMap<String, Vec<String>>>,
}

impl KvStore {
    fn get(&self, k: &str) -> Option<Arc<str>> {
        self.strings.lock().unwrap().get(k).cloned()
    }
    fn set(&self, k: String, v: String) {
        self.strings.lock().unwrap().insert(k, Arc::from(v));
    }
    fn push(&self, k: String, v: String) {
        self.lists.lock().unwrap().entry(k).or_default().push(v);
    }
    /// Every key of the store (the reference's `Keys()`: a full listing).
    fn keys(&self) -> Vec<String> {
        let mut ks: Vec<String> = self.strings.lock().unwrap().keys().cloned().collect();
        ks.extend(self.lists.lock().unwrap().keys().cloned());
        ks
    }
    fn del(&self, k: &str) {
        if self.strings.lock().unwrap().remove(k).is_none() {
            self.lists.lock().unwrap().remove(k);
        }
    }
    /// Keys currently stored (a removed trace leaves none).
    pub fn len(&self) -> usize {
        self.strings.lock().unwrap().len() + self.lists.lock().unwrap().len()
    }
}

// ---- data model (reference §2) ------------------------------------------------

/// A node, shared by pointer between the state worker, handles and parents.
#[derive(Debug, Default)]
pub struct TraceNode {
    id: String,
    parent_ids: Vec<String>,
    children: Vec<NodeRef>,
    label: String,
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

/// The node as events carry it (children nested, as Go's `Children
/// []*TraceNode` marshals).
fn node_value(n: &TraceNode) -> Value {
    let children: Vec<Value> = n
        .children
        .iter()
        .map(|c| node_value(&c.lock().unwrap()))
        .collect();
    json!({
        "id": n.id, "parent_ids": n.parent_ids, "children": children,
        "label": n.label, "type": "", "icon": n.icon, "description": n.description,
        "metadata": n.metadata, "status": n.status, "input": n.input, "output": n.output,
        "created_at": n.created_at, "start_time": n.start_time, "end_time": n.end_time,
        "updated_at": n.updated_at,
    })
}

/// The store driver's compact node record (`persistNode`: children by id).
#[derive(Serialize)]
struct PersistNode<'a> {
    id: &'a str,
    parent_ids: &'a [String],
    children_ids: Vec<String>,
    label: &'a str,
    icon: &'a str,
    description: &'a str,
    metadata: &'a Map<String, Value>,
    status: &'a str,
    input: &'a Value,
    output: &'a Value,
    created_at: i64,
    start_time: i64,
    end_time: i64,
    updated_at: i64,
}

#[derive(Debug, Default)]
struct TraceSpace {
    id: String,
    label: String,
    created_at: i64,
    updated_at: i64,
}

fn space_value(s: &TraceSpace) -> Value {
    json!({
        "id": s.id, "label": s.label, "type": "", "icon": "", "description": "",
        "ttl": 0, "metadata": {}, "created_at": s.created_at, "updated_at": s.updated_at,
    })
}

/// The event envelope (`TraceUpdate`, reference §2.8).
#[derive(Debug, Serialize, Deserialize)]
pub struct TraceUpdate {
    #[serde(rename = "type")]
    pub kind: Cow<'static, str>,
    pub trace_id: String,
    pub node_id: String,
    pub space_id: String,
    pub timestamp: i64,
    pub data: Value,
}

/// An event as delivered to subscribers.
pub type Update = Arc<TraceUpdate>;

// ---- the store driver (reference §5.3) ----------------------------------------

/// One trace's store driver: the key scheme and the work of each call.
#[derive(Debug)]
struct StoreDriver {
    kv: Arc<KvStore>,
    /// The per-driver-instance mutex `SaveUpdate` takes.
    updates: Mutex<()>,
}

/// The stored array followed by the new event, encoded as one JSON array.
struct Appended<'a>(&'a [TraceUpdate], &'a TraceUpdate);

impl Serialize for Appended<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len() + 1))?;
        for u in self.0 {
            seq.serialize_element(u)?;
        }
        seq.serialize_element(self.1)?;
        seq.end()
    }
}

impl StoreDriver {
    fn new(kv: Arc<KvStore>) -> StoreDriver {
        StoreDriver {
            kv,
            updates: Mutex::new(()),
        }
    }

    fn exists(&self, trace: &str) -> bool {
        self.kv
            .get(&format!("{PREFIX}:{trace}:info"))
            .and_then(|s| serde_json::from_str::<Value>(&s).ok())
            .is_some()
    }

    fn save_trace_info(&self, trace: &str, info: &Value) {
        let v = serde_json::to_string(info).unwrap_or_default();
        self.kv.set(format!("{PREFIX}:{trace}:info"), v);
    }

    /// Read the whole `updates` array, decode, append, re-encode, write.
    fn save_update(&self, u: &TraceUpdate) {
        let _g = self.updates.lock().unwrap();
        let key = format!("{PREFIX}:{}:updates", u.trace_id);
        let all: Vec<TraceUpdate> = self
            .kv
            .get(&key)
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default();
        let v = serde_json::to_string(&Appended(&all, u)).unwrap_or_default();
        self.kv.set(key, v);
    }

    fn save_node(&self, trace: &str, n: &NodeRef) {
        let g = n.lock().unwrap();
        let rec = PersistNode {
            id: &g.id,
            parent_ids: &g.parent_ids,
            children_ids: g
                .children
                .iter()
                .map(|c| c.lock().unwrap().id.clone())
                .collect(),
            label: &g.label,
            icon: &g.icon,
            description: &g.description,
            metadata: &g.metadata,
            status: g.status,
            input: &g.input,
            output: &g.output,
            created_at: g.created_at,
            start_time: g.start_time,
            end_time: g.end_time,
            updated_at: g.updated_at,
        };
        let v = serde_json::to_string(&rec).unwrap_or_default();
        self.kv.set(format!("{PREFIX}:{trace}:node:{}", g.id), v);
    }

    fn save_log(&self, trace: &str, node: &str, log: &Value) {
        let v = serde_json::to_string(log).unwrap_or_default();
        self.kv.push(format!("{PREFIX}:{trace}:logs:{node}"), v);
    }

    fn save_space(&self, trace: &str, s: &TraceSpace) {
        let v = serde_json::to_string(&space_value(s)).unwrap_or_default();
        self.kv.set(format!("{PREFIX}:{trace}:space:{}", s.id), v);
    }

    /// Read the space's data map, decode, insert, re-encode, write.
    fn set_space_key(&self, trace: &str, space: &str, key: &str, value: &Value) {
        let k = format!("{PREFIX}:{trace}:space:{space}:data");
        let mut data: Map<String, Value> = self
            .kv
            .get(&k)
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default();
        data.insert(key.to_owned(), value.clone());
        let v = serde_json::to_string(&data).unwrap_or_default();
        self.kv.set(k, v);
    }

    /// Read the space's data map, decode, look the key up.
    fn get_space_key(&self, trace: &str, space: &str, key: &str) -> Option<Value> {
        let k = format!("{PREFIX}:{trace}:space:{space}:data");
        let mut data: Map<String, Value> = self
            .kv
            .get(&k)
            .and_then(|s| serde_json::from_str(&s).ok())?;
        data.remove(key)
    }

    /// `Keys()` (every key of the store), delete those of the trace.
    fn delete_trace(&self, trace: &str) {
        let prefix = format!("{PREFIX}:{trace}:");
        for k in self.kv.keys() {
            if k.starts_with(&prefix) {
                self.kv.del(&k);
            }
        }
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
    /// A space operation run inside the worker (driver I/O included).
    SpaceOp(SpaceFn, oneshot::Sender<Option<Value>>),
}

async fn state_worker(mut rx: mpsc::Receiver<Cmd>) {
    let mut st = ManagerState {
        status: "pending",
        updates: Vec::with_capacity(100),
        ..ManagerState::default()
    };
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
    /// Starts the forwarding task (must run inside the runtime).
    fn start() -> PubSub {
        let (bus, mut bus_rx) = mpsc::channel::<Update>(BUS_CAPACITY);
        let (stop_tx, mut stop_rx) = watch::channel(false);
        let subs: Arc<RwLock<HashMap<u64, mpsc::Sender<Update>>>> = Arc::default();
        let fwd_subs = subs.clone();
        tokio::spawn(async move {
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
        let _ = self.bus.try_send(u);
    }

    fn subscribe_with_history(
        &self,
        history: Vec<Update>,
        buffer: usize,
    ) -> mpsc::Receiver<Update> {
        let (tx, rx) = mpsc::channel(buffer);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.subs.write().unwrap().insert(id, tx);
        let subs = self.subs.clone();
        // The replay task: one per subscription.
        tokio::spawn(async move {
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

    fn stop(&self) {
        if self.stopped.swap(true, Ordering::AcqRel) {
            return;
        }
        drop(self.stop.lock().unwrap().take());
        self.subs.write().unwrap().clear();
    }
}

// ---- manager (reference §3), every call async ---------------------------------

/// One trace (the reference's `Manager`).
pub struct Manager {
    id: String,
    tx: RwLock<Option<mpsc::Sender<Cmd>>>,
    closed: AtomicBool,
    cancelled: AtomicBool,
    pubsub: PubSub,
    drv: StoreDriver,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager").field("id", &self.id).finish()
    }
}

/// A node handle.
pub type Node = NodeRef;

impl Manager {
    /// `safeSend`: false once closed; otherwise awaits room in the channel.
    async fn safe_send(&self, c: Cmd) -> bool {
        if self.closed.load(Ordering::Acquire) {
            return false;
        }
        let tx = match &*self.tx.read().unwrap() {
            Some(tx) => tx.clone(),
            None => return false,
        };
        tx.send(c).await.is_ok()
    }

    /// A round trip: command plus one-shot reply, both awaited.
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Cmd, default: T) -> T {
        let (r, rx) = oneshot::channel();
        if !self.safe_send(make(r)).await {
            return default;
        }
        rx.await.unwrap_or(default)
    }

    fn check_ctx(&self) {
        assert!(!self.cancelled.load(Ordering::Acquire), "context canceled");
    }

    /// `addUpdateAndBroadcast`: driver, history (fire-and-forget), pubsub.
    async fn emit(&self, kind: &'static str, node_id: &str, space_id: &str, ts: i64, data: Value) {
        let u = Arc::new(TraceUpdate {
            kind: Cow::Borrowed(kind),
            trace_id: self.id.clone(),
            node_id: node_id.to_owned(),
            space_id: space_id.to_owned(),
            timestamp: ts,
            data,
        });
        self.drv.save_update(&u);
        self.safe_send(Cmd::AddUpdate(u.clone())).await;
        self.pubsub.publish(u);
    }

    async fn root(&self) -> Option<NodeRef> {
        self.ask(Cmd::GetRoot, None).await
    }
    async fn current(&self) -> Vec<NodeRef> {
        self.ask(Cmd::GetCurrent, Vec::new()).await
    }

    fn new_node(parent_ids: Vec<String>, input: Value, label: &str, ts: i64) -> NodeRef {
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
    pub async fn complete_node(&self, n: &NodeRef, output: Option<Value>) {
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
        self.drv.save_node(&self.id, n);
        self.emit("node_complete", &id, "", ts, data).await;
    }

    async fn auto_complete(&self, current: &[NodeRef]) {
        for c in current {
            let running = matches!(c.lock().unwrap().status, "running" | "pending");
            if running {
                self.complete_node(c, None).await;
            }
        }
    }

    /// `Add`.
    pub async fn add(&self, input: Value, label: &str) -> NodeRef {
        self.check_ctx();
        let ts = now_ms();
        if self.root().await.is_none() {
            let node = Self::new_node(Vec::new(), input, label, ts);
            self.drv.save_node(&self.id, &node);
            self.safe_send(Cmd::SetRoot(node.clone())).await;
            self.safe_send(Cmd::SetCurrent(vec![node.clone()])).await;
            self.safe_send(Cmd::SetStatus("running")).await;
            let (id, data) = {
                let g = node.lock().unwrap();
                (g.id.clone(), json!({ "node": node_value(&g) }))
            };
            self.emit("node_start", &id, "", ts, data).await;
            return node;
        }
        let current = self.current().await;
        self.auto_complete(&current).await;
        let parent_ids = current
            .iter()
            .map(|c| c.lock().unwrap().id.clone())
            .collect();
        let node = Self::new_node(parent_ids, input, label, ts);
        for c in &current {
            c.lock().unwrap().children.push(node.clone());
            self.drv.save_node(&self.id, c);
        }
        self.drv.save_node(&self.id, &node);
        self.safe_send(Cmd::SetCurrent(vec![node.clone()])).await;
        let (id, data) = {
            let g = node.lock().unwrap();
            (g.id.clone(), json!({ "node": node_value(&g) }))
        };
        self.emit("node_start", &id, "", ts, data).await;
        node
    }

    /// `Parallel`.
    pub async fn parallel(&self, labels: &[&str]) -> Vec<NodeRef> {
        self.check_ctx();
        assert!(self.root().await.is_some(), "root node does not exist");
        let current = self.current().await;
        self.auto_complete(&current).await;
        let parent = current[0].clone();
        let parent_id = parent.lock().unwrap().id.clone();
        let ts = now_ms();
        let children: Vec<NodeRef> = labels
            .iter()
            .map(|l| Self::new_node(vec![parent_id.clone()], Value::Null, l, ts))
            .collect();
        parent
            .lock()
            .unwrap()
            .children
            .extend(children.iter().cloned());
        for c in &children {
            self.drv.save_node(&self.id, c);
        }
        self.drv.save_node(&self.id, &parent);
        self.safe_send(Cmd::SetCurrent(children.clone())).await;
        let nodes: Vec<Value> = children
            .iter()
            .map(|c| node_value(&c.lock().unwrap()))
            .collect();
        self.emit("node_start", "", "", ts, json!({ "nodes": nodes }))
            .await;
        children
    }

    /// A log line on one node (`SaveLog`, then `log_added`).
    pub async fn log_on(&self, n: &NodeRef, level: &'static str, msg: &str) {
        let ts = now_ms();
        let node_id = n.lock().unwrap().id.clone();
        let log = json!({
            "Timestamp": ts, "Level": level, "Message": msg, "Data": [], "NodeID": node_id,
        });
        self.drv.save_log(&self.id, &node_id, &log);
        self.emit("log_added", &node_id, "", ts, log).await;
    }

    /// A trace-level log line: on every current node.
    pub async fn log(&self, level: &'static str, msg: &str) {
        for n in self.current().await {
            self.log_on(&n, level, msg).await;
        }
    }

    /// `Complete`: every current node.
    pub async fn complete(&self, output: Value) {
        self.check_ctx();
        for n in self.current().await {
            self.complete_node(&n, Some(output.clone())).await;
        }
    }

    /// `CreateSpace`.
    pub async fn create_space(&self, label: &str) -> String {
        self.check_ctx();
        let ts = now_ms();
        let space = TraceSpace {
            id: short_id(),
            label: label.to_owned(),
            created_at: ts,
            updated_at: ts,
        };
        self.drv.save_space(&self.id, &space);
        let v = space_value(&space);
        let id = space.id.clone();
        self.safe_send(Cmd::PutSpace(id.clone(), Arc::new(Mutex::new(space))))
            .await;
        self.emit("space_created", "", &id, ts, v).await;
        id
    }

    async fn get_space(&self, id: &str) -> Option<Arc<Mutex<TraceSpace>>> {
        self.ask(|r| Cmd::GetSpace(id.to_owned(), r), None).await
    }

    /// `SetSpaceValue`: space lookup (round trip), then `SetSpaceKey` +
    /// `SaveSpace` inside the worker (round trip), then `memory_add`.
    pub async fn set_space_value(self: &Arc<Self>, space_id: &str, key: &str, value: Value) {
        self.check_ctx();
        let space = self.get_space(space_id).await.expect("space not found");
        let ts = now_ms();
        let m = self.clone();
        let (sid, k, v) = (space_id.to_owned(), key.to_owned(), value.clone());
        let label = self
            .ask(
                move |r| {
                    Cmd::SpaceOp(
                        Box::new(move |_st| {
                            let mut s = space.lock().unwrap();
                            m.drv.set_space_key(&m.id, &sid, &k, &v);
                            s.updated_at = ts;
                            m.drv.save_space(&m.id, &s);
                            Some(Value::String(s.label.clone()))
                        }),
                        r,
                    )
                },
                None,
            )
            .await;
        let data = json!({
            "type": space_id,
            "item": { "id": key, "type": space_id, "title": label, "content": value, "timestamp": ts },
        });
        self.emit("memory_add", "", space_id, ts, data).await;
    }

    /// `GetSpaceValue`: space lookup (round trip), then `GetSpaceKey` inside
    /// the worker (round trip).
    pub async fn get_space_value(self: &Arc<Self>, space_id: &str, key: &str) -> Option<Value> {
        self.get_space(space_id).await?;
        let m = self.clone();
        let (sid, k) = (space_id.to_owned(), key.to_owned());
        self.ask(
            move |r| Cmd::SpaceOp(Box::new(move |_st| m.drv.get_space_key(&m.id, &sid, &k)), r),
            None,
        )
        .await
    }

    /// `MarkComplete`.
    pub async fn mark_complete(&self) {
        if self.ask(Cmd::MarkCompleted, false).await {
            return;
        }
        self.safe_send(Cmd::SetStatus("completed")).await;
        let ts = now_ms();
        let total = match self.root().await {
            Some(r) => ts - r.lock().unwrap().created_at,
            None => 0,
        };
        self.emit(
            "complete",
            "",
            "",
            ts,
            json!({ "trace_id": self.id, "status": "completed", "total_duration": total }),
        )
        .await;
    }

    /// `Subscribe()` = `SubscribeFrom(0)`.
    pub async fn subscribe(&self) -> mpsc::Receiver<Update> {
        let history = self.ask(|r| Cmd::GetUpdates(0, r), Vec::new()).await;
        let buffer = 1000.max(history.len() + 100);
        self.pubsub.subscribe_with_history(history, buffer)
    }

    /// The trace id.
    pub fn id(&self) -> &str {
        &self.id
    }
}

// ---- the engine: registry + store; the runtime is held apart ------------------

/// What tasks share: the registry and the key-value store.
#[derive(Debug, Default)]
pub struct Core {
    registry: Mutex<HashMap<String, Arc<Manager>>>,
    kv: Arc<KvStore>,
}

impl Core {
    /// `trace.New(ctx, "store", nil)`.
    pub async fn create(&self) -> Arc<Manager> {
        let id = tracepool::gen_trace_id();
        assert!(
            !self.registry.lock().unwrap().contains_key(&id),
            "trace ID already loaded in registry"
        );
        // `Exists` on a driver of its own.
        assert!(!StoreDriver::new(self.kv.clone()).exists(&id));
        let pubsub = PubSub::start();
        let (tx, rx) = mpsc::channel(COMMAND_CAPACITY);
        tokio::spawn(state_worker(rx));
        let m = Arc::new(Manager {
            id: id.clone(),
            tx: RwLock::new(Some(tx)),
            closed: AtomicBool::new(false),
            cancelled: AtomicBool::new(false),
            pubsub,
            drv: StoreDriver::new(self.kv.clone()),
        });
        let ts = now_ms();
        m.emit("init", "", "", ts, json!({ "trace_id": id })).await;
        let info = json!({
            "id": id, "driver": "store", "status": "pending", "options": [],
            "created_at": ts, "updated_at": ts, "created_by": "", "updated_by": "",
            "team_id": "", "tenant_id": "", "metadata": {}, "archived": false,
        });
        self.registry.lock().unwrap().insert(id.clone(), m.clone());
        m.drv.save_trace_info(&id, &info);
        m
    }

    /// `trace.Release(id)`: closed flag, cancel, close the command channel,
    /// stop the pubsub. Waits for nothing.
    pub fn release(&self, id: &str) -> bool {
        let m = self.registry.lock().unwrap().remove(id);
        match m {
            Some(m) => {
                m.closed.store(true, Ordering::Release);
                m.cancelled.store(true, Ordering::Release);
                drop(m.tx.write().unwrap().take());
                m.pubsub.stop();
                true
            }
            None => false,
        }
    }

    /// `trace.Remove(ctx, "store", id)`: `Release` (error ignored), then
    /// `DeleteTrace` on a new driver.
    pub fn remove(&self, id: &str) {
        self.release(id);
        StoreDriver::new(self.kv.clone()).delete_trace(id);
    }

    /// Loaded traces.
    pub fn loaded(&self) -> usize {
        self.registry.lock().unwrap().len()
    }

    /// The key-value store.
    pub fn store(&self) -> &KvStore {
        &self.kv
    }
}

/// The Go-shaped baseline: a 2-thread runtime (the Go scheduler) and the
/// shared [`Core`]. Callers on plain threads use [`GoBaseline::time`] to run
/// a loop as tasks on it.
pub struct GoBaseline {
    rt: tokio::runtime::Runtime,
    core: Arc<Core>,
}

impl std::fmt::Debug for GoBaseline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GoBaseline").finish_non_exhaustive()
    }
}

impl Default for GoBaseline {
    fn default() -> Self {
        GoBaseline::new(2)
    }
}

/// The loops of the reference's benchmarks (`trace_bench_test.go`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loop {
    /// create, add, complete, release, remove.
    Simple,
    /// create, scenario `i mod 5`, release, remove.
    Complex,
    /// create, subscribe, add, complete, mark complete, drain (<= 10 ms),
    /// drop the subscription, release, remove.
    Subscription,
    /// create, a space, 10 sets, 10 gets, release, remove.
    SpaceOperations,
}

impl GoBaseline {
    /// A baseline whose tasks run on `threads` runtime threads (GOMAXPROCS).
    pub fn new(threads: usize) -> GoBaseline {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("go-baseline")
            .enable_time()
            .build()
            .expect("go baseline runtime");
        GoBaseline {
            rt,
            core: Arc::default(),
        }
    }

    /// The shared state.
    pub fn core(&self) -> &Arc<Core> {
        &self.core
    }

    /// Tasks alive on the runtime (state workers, forwarders, replays).
    pub fn live_tasks(&self) -> usize {
        self.rt.metrics().num_alive_tasks()
    }

    /// Runs `iters` iterations of `lp`, split over `tasks` tasks started
    /// together (`tasks = 2`: Go's `RunParallel` on GOMAXPROCS = 2), and
    /// returns the wall time measured *inside* the runtime (from before the
    /// tasks are spawned to after the last one finished). The bench thread's
    /// own hand-off to the runtime is outside the timed region.
    pub fn time(&self, lp: Loop, iters: u64, tasks: usize) -> Duration {
        let core = self.core.clone();
        let tasks = tasks.max(1) as u64;
        self.rt
            .block_on(self.rt.spawn(async move {
                let start = Instant::now();
                let mut handles = Vec::with_capacity(tasks as usize);
                for w in 0..tasks {
                    let per = iters / tasks + u64::from(w < iters % tasks);
                    let core = core.clone();
                    handles.push(tokio::spawn(async move {
                        for i in 0..per as usize {
                            run_loop(&core, lp, i).await;
                        }
                    }));
                }
                for h in handles {
                    h.await.expect("loop task");
                }
                start.elapsed()
            }))
            .expect("timing task")
    }
}

/// One iteration of `lp` (iteration `i`, for the scenario rotation).
pub async fn run_loop(core: &Arc<Core>, lp: Loop, i: usize) {
    let m = core.create().await;
    match lp {
        Loop::Simple => simple(&m).await,
        Loop::Complex => run(&m, Scenario::ALL[i % 5]).await,
        Loop::Subscription => {
            let mut rx = m.subscribe().await;
            simple(&m).await;
            m.mark_complete().await;
            std::hint::black_box(drain(&mut rx, Duration::from_millis(10)).await);
            drop(rx); // cancel
        }
        Loop::SpaceOperations => space_ops(&m).await,
    }
    core.remove(&m.id); // Release + Remove
}

/// Reads until a `complete` event, the channel's close or `timeout`.
pub async fn drain(rx: &mut mpsc::Receiver<Update>, timeout: Duration) -> usize {
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
}

// ---- the scenarios, step for step as in `scenarios.rs` ------------------------

const STEPS: [&str; 5] = ["step_0", "step_1", "step_2", "step_3", "step_4"];
const KEYS: [&str; 10] = [
    "key_0", "key_1", "key_2", "key_3", "key_4", "key_5", "key_6", "key_7", "key_8", "key_9",
];

fn num(i: usize) -> Value {
    Value::from(i as u64)
}

/// `scenarios::simple`: add, complete.
pub async fn simple(m: &Arc<Manager>) {
    m.add(Value::from(0u64), "step").await;
    m.complete(Value::Bool(true)).await;
}

/// `scenarios::space_ops`: a space, 10 sets, 10 gets.
pub async fn space_ops(m: &Arc<Manager>) {
    let space = m.create_space("Bench").await;
    for (i, key) in KEYS.iter().enumerate() {
        m.set_space_value(&space, key, num(i)).await;
    }
    for key in KEYS.iter() {
        std::hint::black_box(m.get_space_value(&space, key).await);
    }
}

/// `scenarios::run`, with one spawned task per parallel branch (Go: one
/// goroutine per branch, then `wg.Wait()`).
pub async fn run(m: &Arc<Manager>, s: Scenario) {
    match s {
        Scenario::SequentialNodes => {
            for (i, label) in STEPS.iter().enumerate() {
                m.add(num(i), label).await;
                m.complete(num(i)).await;
            }
        }
        Scenario::ParallelNodes => {
            m.add(Value::Null, "root").await;
            let nodes = m.parallel(&["Task 1", "Task 2", "Task 3"]).await;
            let branches: Vec<_> = nodes
                .into_iter()
                .enumerate()
                .map(|(i, n)| {
                    let m = m.clone();
                    tokio::spawn(async move { m.complete_node(&n, Some(num(i))).await })
                })
                .collect();
            for b in branches {
                b.await.expect("branch");
            }
        }
        Scenario::WithSpace => {
            let space = m.create_space("Context").await;
            for (i, key) in KEYS.iter().take(5).enumerate() {
                m.set_space_value(&space, key, num(i)).await;
            }
            m.add(Value::Null, "process").await;
            m.complete(Value::Bool(true)).await;
        }
        Scenario::WithLogging => {
            m.log("info", "before root").await;
            m.add(Value::Null, "step1").await;
            m.log("debug", "debugging").await;
            m.complete(Value::Bool(true)).await;
            m.add(Value::Null, "step2").await;
            m.log("warn", "warning").await;
            m.complete(Value::Bool(true)).await;
        }
        Scenario::ComplexFlow => {
            let space = Arc::new(m.create_space("Shared").await);
            m.add(Value::Null, "prepare").await;
            m.log("info", "prepared").await;
            m.complete(Value::Bool(true)).await;
            let nodes = m.parallel(&["Task A", "Task B"]).await;
            let branches: Vec<_> = nodes
                .into_iter()
                .enumerate()
                .map(|(i, n)| {
                    let (m, space) = (m.clone(), space.clone());
                    tokio::spawn(async move {
                        m.log_on(&n, "info", "branch working").await;
                        m.set_space_value(&space, KEYS[i], num(i)).await;
                        m.complete_node(&n, Some(num(i))).await;
                    })
                })
                .collect();
            for b in branches {
                b.await.expect("branch");
            }
            m.add(Value::Null, "finalize").await;
            m.complete(Value::Bool(true)).await;
        }
    }
}
