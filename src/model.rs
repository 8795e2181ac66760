//! The data types callers read back: statuses, log levels, node, log, space
//! and trace snapshots, engine statistics.
//!
//! These are plain owned values (snapshots); holding one never blocks or pins
//! a trace slot.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Status of a node. Nodes are created `Running`; `Pending`, `Running` are
/// unfinished, every other status is terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    /// Not started.
    Pending,
    /// In progress (the status of every new node).
    #[default]
    Running,
    /// Finished successfully.
    Completed,
    /// Finished with an error.
    Failed,
    /// Skipped by the caller.
    Skipped,
    /// Stopped by `mark_cancelled`.
    Cancelled,
}

impl NodeStatus {
    /// The wire string (`"running"`, `"completed"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Pending => "pending",
            NodeStatus::Running => "running",
            NodeStatus::Completed => "completed",
            NodeStatus::Failed => "failed",
            NodeStatus::Skipped => "skipped",
            NodeStatus::Cancelled => "cancelled",
        }
    }

    /// `true` for every status except `Pending` and `Running`.
    pub fn is_terminal(self) -> bool {
        !matches!(self, NodeStatus::Pending | NodeStatus::Running)
    }
}

/// Status of a trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TraceStatus {
    /// Created, no node yet.
    #[default]
    Pending,
    /// The root node exists.
    Running,
    /// `mark_complete` was called.
    Completed,
    /// The trace failed (set by storage-level status transitions).
    Failed,
    /// `mark_cancelled` was called.
    Cancelled,
}

impl TraceStatus {
    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            TraceStatus::Pending => "pending",
            TraceStatus::Running => "running",
            TraceStatus::Completed => "completed",
            TraceStatus::Failed => "failed",
            TraceStatus::Cancelled => "cancelled",
        }
    }

    pub(crate) fn to_u8(self) -> u8 {
        self as u8
    }

    pub(crate) fn from_u8(v: u8) -> TraceStatus {
        match v {
            0 => TraceStatus::Pending,
            1 => TraceStatus::Running,
            2 => TraceStatus::Completed,
            3 => TraceStatus::Failed,
            _ => TraceStatus::Cancelled,
        }
    }
}

/// Log level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Debug detail.
    Debug,
    /// Information.
    Info,
    /// Warning.
    Warn,
    /// Error.
    Error,
}

impl Level {
    /// The wire string (`"debug"`, `"info"`, `"warn"`, `"error"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// Snapshot of one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeData {
    /// Node id (12 characters `[0-9a-z]`).
    pub id: String,
    /// Ids of the parents (empty for the root; several after a join).
    pub parent_ids: Vec<String>,
    /// Ids of the children, in the order they were linked.
    pub children: Vec<String>,
    /// Display label.
    pub label: String,
    /// Caller-defined type (`type` on the wire).
    #[serde(rename = "type")]
    pub node_type: String,
    /// Icon name.
    pub icon: String,
    /// Description.
    pub description: String,
    /// Metadata set with `set_metadata` or the options.
    pub metadata: Map<String, Value>,
    /// Current status.
    pub status: NodeStatus,
    /// Input given at creation.
    pub input: Option<Value>,
    /// Output, once set.
    pub output: Option<Value>,
    /// Creation time (ms).
    pub created_at: i64,
    /// Start time (ms); equal to `created_at`.
    pub start_time: i64,
    /// End time (ms); 0 while unfinished.
    pub end_time: i64,
    /// Last change (ms).
    pub updated_at: i64,
}

/// One log line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Time (ms).
    pub timestamp: i64,
    /// Level.
    pub level: Level,
    /// Message as given.
    pub message: String,
    /// Structured data given with the message (`Null` when none).
    pub data: Value,
    /// The node the line belongs to.
    pub node_id: String,
}

/// Metadata of a trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceInfo {
    /// Trace id.
    pub id: String,
    /// Name of the storage driver (`"memory"`, `"local"`, `"store"`, ...).
    pub driver: String,
    /// Current status.
    pub status: TraceStatus,
    /// Creation time (ms).
    pub created_at: i64,
    /// Last change (ms).
    pub updated_at: i64,
    /// Creator, when given.
    pub created_by: Option<String>,
    /// Team, when given.
    pub team_id: Option<String>,
    /// Tenant, when given.
    pub tenant_id: Option<String>,
    /// Caller metadata.
    pub metadata: Map<String, Value>,
    /// Whether the trace was archived.
    pub archived: bool,
}

/// Metadata of a space.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpaceInfo {
    /// Space id (12 characters `[0-9a-z]`).
    pub id: String,
    /// Label.
    pub label: String,
    /// Caller-defined type (`type` on the wire).
    #[serde(rename = "type")]
    pub space_type: String,
    /// Icon.
    pub icon: String,
    /// Description.
    pub description: String,
    /// Time to live in seconds (informational, never enforced).
    pub ttl: u64,
    /// Caller metadata.
    pub metadata: Map<String, Value>,
    /// Creation time (ms).
    pub created_at: i64,
    /// Last change (ms), bumped by every value write.
    pub updated_at: i64,
}

/// A space with all its key-values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpaceData {
    /// The space metadata.
    pub info: SpaceInfo,
    /// Key-values in insertion order.
    pub data: Map<String, Value>,
}

/// Engine-wide counters, read with [`Engine::stats`](crate::Engine::stats).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineStats {
    /// Slots in the pool (grows only under `Exhausted::Grow`).
    pub capacity: usize,
    /// Slots holding a trace.
    pub in_use: usize,
    /// Free slots (`free + in_use + draining == capacity`).
    pub free: usize,
    /// Released slots still handing their last writes to the driver.
    pub draining: usize,
    /// Callers waiting for a free slot (`Exhausted::Wait`), threads and tasks.
    pub waiting: usize,
    /// Highest `in_use` seen.
    pub peak_in_use: usize,
    /// Slots added by `Exhausted::Grow`.
    pub grown: usize,
    /// Worker threads configured.
    pub workers: usize,
    /// Worker threads alive (equal to `workers` while running; the engine
    /// also runs one ticker thread, for timed waits and idle reaping).
    pub live_tasks: usize,
    /// Events emitted by all traces.
    pub events_emitted: u64,
    /// Events handed to the driver and written.
    pub events_persisted: u64,
    /// Events the driver could not take (write errors beyond `drain_timeout`,
    /// a full write queue, `pending_bytes_limit`, an id storage refused).
    pub events_dropped: u64,
    /// Queued events of traces removed before they were written (`remove`
    /// discards them instead of writing and deleting).
    pub events_discarded: u64,
    /// Live subscriptions.
    pub subscribers: usize,
    /// Events that fell out of a trace's in-memory history (`history_limit`).
    pub history_evicted: u64,
    /// Events skipped by lagging subscribers (sum of `Lagged::missed`).
    pub events_lagged: u64,
    /// Chainable log calls dropped (no current node, finished or released trace).
    pub logs_dropped: u64,
    /// Log lines that left memory under `max_log_bytes` (still in storage).
    pub logs_evicted: u64,
    /// Driver write failures.
    pub persist_errors: u64,
    /// Bytes handed to the driver.
    pub bytes_written: u64,
    /// Traces released because their last handle was dropped.
    pub auto_released: u64,
    /// Traces kept loaded without handles, released after `idle_timeout`.
    pub idle_released: u64,
    /// [`Step::fail`](crate::Step::fail) calls that could not fail their
    /// node (the trace was released or finished, the node already finished):
    /// `fail` returns nothing, so they are counted here.
    pub step_errors: u64,
    /// Released traces not exported to OpenTelemetry (feature `otel`): the
    /// export queue (`EngineBuilder::otel_queue`) was full, or the exporter
    /// returned an error for a batch holding spans of the trace. Always 0
    /// without an exporter.
    pub otel_dropped: u64,
    /// Traces whose lease another engine took while this one held it (a
    /// driver shared by many engines: this engine stalled past the lease).
    /// Their queued writes were dropped (counted in `events_dropped`) and
    /// their operations give `Error::Leased`.
    #[serde(default)]
    pub leases_lost: u64,
}
