//! Storage drivers: where a trace's events go after they were emitted.
//!
//! The engine never calls a driver on the caller's hot path. Events queue in
//! the trace's slot and the engine's workers hand them over in batches
//! ([`WriteBatch`], one per trace per flush); `release` hands over whatever is
//! left before it returns. A driver sees each trace's batches in seq order,
//! never two batches of one trace at once.
//!
//! [`MemoryDriver`] persists nothing (a trace lives while it is loaded); it
//! counts what it was given.

mod memory;

pub use memory::MemoryDriver;

use bytes::Bytes;

use crate::error::Result;
use crate::event::{EventKind, StoredEvent};
use crate::model::TraceInfo;

/// One event as a driver sees it: numbering plus the shared wire bytes.
#[derive(Debug, Clone, Copy)]
pub struct EventRecord<'a> {
    /// Per-trace sequence number.
    pub seq: u64,
    /// Kind.
    pub kind: EventKind,
    /// Emission time (ms).
    pub timestamp: i64,
    /// Node id or `""`.
    pub node_id: &'a str,
    /// Space id or `""`.
    pub space_id: &'a str,
    /// The wire bytes of [`Event::to_json`](crate::Event::to_json) (one line, no newline).
    pub bytes: &'a Bytes,
}

/// The writes of one trace handed to a driver in one call.
#[derive(Debug)]
#[non_exhaustive]
pub struct WriteBatch<'a> {
    /// Trace id (validated: `^[0-9A-Za-z_-]{1,64}$`).
    pub trace_id: &'a str,
    events: &'a [StoredEvent],
}

impl<'a> WriteBatch<'a> {
    pub(crate) fn new(trace_id: &'a str, events: &'a [StoredEvent]) -> Self {
        WriteBatch { trace_id, events }
    }

    /// The events, in seq order.
    pub fn events(&self) -> impl ExactSizeIterator<Item = EventRecord<'a>> + 'a {
        self.events.iter().map(|e| EventRecord {
            seq: e.seq,
            kind: e.kind,
            timestamp: e.timestamp,
            node_id: e.node.as_ref().map_or("", |n| n.as_str()),
            space_id: e.space.as_ref().map_or("", |s| s.as_str()),
            bytes: &e.bytes,
        })
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether the batch holds no event.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Total wire bytes of the events.
    pub fn byte_len(&self) -> usize {
        self.events.iter().map(|e| e.bytes.len()).sum()
    }
}

/// A storage backend.
///
/// Implementations must be cheap to call from the engine's worker threads and
/// must not block on an async runtime.
pub trait Driver: Send + Sync + std::fmt::Debug + 'static {
    /// Short name reported in [`TraceInfo::driver`] (`"memory"`, `"local"`, ...).
    fn name(&self) -> &'static str;

    /// Persists one batch of one trace.
    ///
    /// # Errors
    /// [`Error::Storage`](crate::Error::Storage) naming the file or key; the
    /// engine counts the batch's events as dropped.
    fn write(&self, batch: &WriteBatch<'_>) -> Result<()>;

    /// Whether storage holds the trace.
    fn exists(&self, _trace_id: &str) -> Result<bool> {
        Ok(false)
    }

    /// Stored metadata of a trace that is not loaded.
    fn info(&self, _trace_id: &str) -> Result<Option<TraceInfo>> {
        Ok(None)
    }

    /// Deletes everything stored for the trace; `Ok(false)` if there was nothing.
    fn remove(&self, _trace_id: &str) -> Result<bool> {
        Ok(false)
    }

    /// Ids of stored traces.
    fn list(&self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }

    /// Makes everything written so far durable (called at shutdown).
    fn flush(&self) -> Result<()> {
        Ok(())
    }
}
