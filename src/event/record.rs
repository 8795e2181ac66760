//! What the caller's thread records per event: numbering, timestamp and a
//! compact payload record — no JSON is written under the trace lock.
//!
//! A record holds the fields that can change after the event (a node's
//! status, times, output, metadata) by value, and caller values as the
//! immutable JSON [`Bytes`] they were serialized to before the lock was
//! taken. Everything else it refers to — a node's creation-time fields, by
//! index — never changes while the trace is loaded, so encoding a record
//! later yields exactly the event that happened.

use super::encode::Source;
use super::value::Val;

use super::{Event, EventKind};
use crate::id::ShortId;
use crate::model::{NodeStatus, TraceStatus};

/// A node's changeable fields at one moment (for `node_updated`).
#[derive(Debug, Clone)]
pub(crate) struct NodeSnap {
    pub(crate) status: NodeStatus,
    pub(crate) end_time: i64,
    pub(crate) updated_at: i64,
    /// Children are only ever appended: the node's first `children`.
    pub(crate) children: u32,
    /// The metadata object (`None`: empty).
    pub(crate) metadata: Option<Val>,
    /// The output (`None`: none).
    pub(crate) output: Option<Val>,
}

/// The payload of an event not yet encoded. Node events name their node by
/// index (its id and creation-time fields are the tree's, immutable); a log
/// line by its index in the trace's whole log (its record is encoded before
/// the line leaves memory).
#[derive(Debug, Clone)]
pub(crate) enum PayloadRec {
    /// `init`: `{"trace_id": ..}`.
    Init,
    /// `node_start` of one node, as it was created.
    NodeStart(u32),
    /// `node_start` of parallel branches (contiguous indices), as created.
    NodesStart { first: u32, count: u32 },
    /// `node_complete` (end time: the event's timestamp).
    NodeComplete { node: u32, output: Option<Val> },
    /// `node_failed` (failed or cancelled); `error` is text.
    NodeFailed {
        node: u32,
        status: NodeStatus,
        error: Val,
    },
    /// `node_updated`: the whole node at that moment.
    NodeUpdated { node: u32, snap: Box<NodeSnap> },
    /// `log_added` of this line of the trace's log; `bytes`: its text and
    /// data together (for the byte bound before it is encoded).
    LogAdded { line: u64, bytes: u32 },
    /// `memory_add` / `memory_update`: `key` is text, `value` JSON.
    Memory {
        space: ShortId,
        key: Val,
        value: Val,
    },
    /// `memory_delete` of a key (text), or of all keys (`None`).
    MemoryDelete { space: ShortId, key: Option<Val> },
    /// `complete` (completed or cancelled).
    Complete { status: TraceStatus, total: i64 },
    /// A payload encoded when the event happened (rare events: spaces).
    Encoded { space: ShortId, payload: Val },
}

/// An event recorded but not yet encoded.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub(crate) seq: u64,
    pub(crate) ts: i64,
    pub(crate) kind: EventKind,
    pub(crate) payload: PayloadRec,
}

impl PayloadRec {
    /// Whether it may own memory (shared bytes, a boxed snapshot): if no
    /// record of a history does, the history is emptied without dropping
    /// each (`EventLog::reset`). Exhaustive on purpose: a new variant must
    /// say.
    #[inline]
    pub(crate) fn may_own(&self) -> bool {
        match self {
            PayloadRec::Init
            | PayloadRec::NodeStart(_)
            | PayloadRec::NodesStart { .. }
            | PayloadRec::LogAdded { .. }
            | PayloadRec::Complete { .. } => false,
            PayloadRec::NodeComplete { output, .. } => output.as_ref().is_some_and(Val::is_shared),
            PayloadRec::NodeFailed { error, .. } => error.is_shared(),
            PayloadRec::NodeUpdated { .. } => true,
            PayloadRec::Memory { key, value, .. } => key.is_shared() || value.is_shared(),
            PayloadRec::MemoryDelete { key, .. } => key.as_ref().is_some_and(Val::is_shared),
            PayloadRec::Encoded { payload, .. } => payload.is_shared(),
        }
    }

    /// Roughly what the encoded event will take (for the write-behind
    /// queue's byte bound before it is encoded).
    #[inline(always)]
    pub(crate) fn approx_len(&self, src: &dyn Source) -> usize {
        let b = |o: &Option<Val>| o.as_ref().map_or(0, |v| v.len());
        140 + match self {
            PayloadRec::Init | PayloadRec::Complete { .. } => 40,
            PayloadRec::NodeStart(n) => 320 + src.node_bytes(*n),
            PayloadRec::NodeUpdated { node, snap } => {
                320 + src.node_bytes(*node) + b(&snap.output) + b(&snap.metadata)
            }
            PayloadRec::NodesStart { first, count } => (*first..*first + *count)
                .map(|n| 320 + src.node_bytes(n))
                .sum(),
            PayloadRec::NodeComplete { output, .. } => 80 + b(output),
            PayloadRec::NodeFailed { error, .. } => 80 + error.len(),
            PayloadRec::LogAdded { bytes, .. } => 100 + *bytes as usize,
            PayloadRec::Memory { key, value, .. } => 100 + key.len() + value.len(),
            PayloadRec::MemoryDelete { key, .. } => 40 + b(key),
            PayloadRec::Encoded { payload, .. } => payload.len(),
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
