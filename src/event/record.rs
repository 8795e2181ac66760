//! What the caller's thread records per event: numbering, envelope ids and
//! a compact payload record — no JSON is written under the trace lock.
//!
//! A record holds the fields that can change after the event (a node's
//! status, times, output, metadata) by value, and caller values as the
//! immutable JSON [`Bytes`] they were serialized to before the lock was
//! taken. Everything else it refers to — a node's creation-time fields, by
//! index — never changes while the trace is loaded, so encoding a record
//! later yields exactly the event that happened.

use bytes::Bytes;

use super::{Event, EventKind};
use crate::id::ShortId;
use crate::model::{Level, NodeStatus, TraceStatus};

/// A node's changeable fields at one moment (for `node_updated`).
#[derive(Debug, Clone)]
pub(crate) struct NodeSnap {
    pub(crate) status: NodeStatus,
    pub(crate) end_time: i64,
    pub(crate) updated_at: i64,
    /// Children are only ever appended: the node's first `children`.
    pub(crate) children: u32,
    /// The metadata object (`None`: empty).
    pub(crate) metadata: Option<Bytes>,
    /// The output (`None`: none).
    pub(crate) output: Option<Bytes>,
}

/// The payload of an event not yet encoded.
#[derive(Debug, Clone)]
pub(crate) enum PayloadRec {
    /// `init`: `{"trace_id": ..}`.
    Init,
    /// `node_start` of one node, as it was created.
    NodeStart(u32),
    /// `node_start` of parallel branches (contiguous indices), as created.
    NodesStart { first: u32, count: u32 },
    /// `node_complete`.
    NodeComplete {
        end_time: i64,
        duration: i64,
        output: Option<Bytes>,
    },
    /// `node_failed` (failed or cancelled); `error` is text.
    NodeFailed {
        status: NodeStatus,
        end_time: i64,
        duration: i64,
        error: Bytes,
    },
    /// `node_updated`: the whole node at that moment.
    NodeUpdated { node: u32, snap: NodeSnap },
    /// `log_added`: `msg` is text, `data` JSON (`None`: `null`).
    LogAdded {
        level: Level,
        msg: Bytes,
        data: Option<Bytes>,
    },
    /// `memory_add` / `memory_update`: `key` and `title` are text, `value` JSON.
    Memory {
        key: Bytes,
        value: Bytes,
        title: Option<Bytes>,
    },
    /// `memory_delete` of a key (text), or of all keys (`None`).
    MemoryDelete { key: Option<Bytes> },
    /// `complete` (completed or cancelled).
    Complete { status: TraceStatus, total: i64 },
    /// A payload encoded when the event happened (rare events: spaces).
    Encoded(Bytes),
}

/// An event recorded but not yet encoded.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub(crate) seq: u64,
    pub(crate) ts: i64,
    pub(crate) kind: EventKind,
    pub(crate) node: Option<ShortId>,
    pub(crate) space: Option<ShortId>,
    pub(crate) payload: PayloadRec,
}

impl Record {
    /// Roughly what the encoded event will take (for the write-behind
    /// queue's byte bound before it is encoded).
    pub(crate) fn approx_len(&self) -> usize {
        let b = |o: &Option<Bytes>| o.as_ref().map_or(0, Bytes::len);
        140 + match &self.payload {
            PayloadRec::Init | PayloadRec::Complete { .. } => 40,
            PayloadRec::NodeStart(_) | PayloadRec::NodeUpdated { .. } => 320,
            PayloadRec::NodesStart { count, .. } => 320 * *count as usize,
            PayloadRec::NodeComplete { output, .. } => 80 + b(output),
            PayloadRec::NodeFailed { error, .. } => 80 + error.len(),
            PayloadRec::LogAdded { msg, data, .. } => 80 + msg.len() + b(data),
            PayloadRec::Memory { key, value, title } => 80 + key.len() + value.len() + b(title),
            PayloadRec::MemoryDelete { key } => 40 + b(key),
            PayloadRec::Encoded(p) => p.len(),
        }
    }
}

/// An event of a trace's history: recorded, or already encoded (and then
/// shared by every reader).
#[derive(Debug, Clone)]
pub(crate) enum Entry {
    Rec(Record),
    Wire(Event),
}

impl Entry {
    pub(crate) fn seq(&self) -> u64 {
        match self {
            Entry::Rec(r) => r.seq,
            Entry::Wire(e) => e.seq,
        }
    }

    pub(crate) fn timestamp(&self) -> i64 {
        match self {
            Entry::Rec(r) => r.ts,
            Entry::Wire(e) => e.timestamp,
        }
    }
}
