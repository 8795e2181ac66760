//! Events: their kinds, the immutable [`Event`] value handed to readers,
//! and how a trace records them.
//!
//! Every state change of a trace produces exactly one event per affected
//! node (or space), numbered with a per-trace, gap-free `seq` starting at 1.
//! On the caller's thread an event is only *recorded* ([`record`]): its
//! numbering plus the few fields that can change later (status, times,
//! output and metadata as shared bytes), no JSON. The wire bytes are
//! produced once, later, off the caller's thread — by a worker handing it to
//! the driver, by the first subscriber reading it, by `events()` — and
//! cached in the history, so every reader shares them ([`encode`]). A record
//! only points at data that never changes after emission, so encoding later
//! yields exactly what was true when the event happened.
//!
//! [`log`] holds a trace's history and its readers' wakers; [`publish`] is
//! its lock-free read path; [`value`] serializes caller values before any
//! lock is taken.

pub(crate) mod encode;
pub(crate) mod json;
pub(crate) mod log;
pub(crate) mod publish;
pub(crate) mod record;
pub(crate) mod value;
pub(crate) mod wire;
pub(crate) mod wire_buf;

use bytes::Bytes;
use serde_json::Value;

use self::wire_buf::{RefCache, WireBytes};

use crate::error::{Error, Result};

/// The kind of an event; the wire `type` string is [`EventKind::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// The trace was created (`init`).
    Init,
    /// One node (`data.node`) or parallel branches (`data.nodes`) started (`node_start`).
    NodeStart,
    /// A node completed (`node_complete`).
    NodeComplete,
    /// A node failed or was cancelled (`node_failed`).
    NodeFailed,
    /// A node's output, metadata or status changed (`node_updated`, data `{"node": ..}`).
    NodeUpdated,
    /// A log line (`log_added`, PascalCase payload).
    LogAdded,
    /// A new key in a space (`memory_add`).
    MemoryAdd,
    /// An existing key overwritten (`memory_update`).
    MemoryUpdate,
    /// A key deleted, or all keys cleared (`memory_delete`).
    MemoryDelete,
    /// A space created (`space_created`).
    SpaceCreated,
    /// A space deleted (`space_deleted`).
    SpaceDeleted,
    /// The trace finished: completed or cancelled (`complete`).
    Complete,
}

impl EventKind {
    /// Every kind, in declaration order.
    pub const ALL: [EventKind; 12] = [
        EventKind::Init,
        EventKind::NodeStart,
        EventKind::NodeComplete,
        EventKind::NodeFailed,
        EventKind::NodeUpdated,
        EventKind::LogAdded,
        EventKind::MemoryAdd,
        EventKind::MemoryUpdate,
        EventKind::MemoryDelete,
        EventKind::SpaceCreated,
        EventKind::SpaceDeleted,
        EventKind::Complete,
    ];

    /// The wire `type` string, e.g. `"node_start"`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Init => "init",
            EventKind::NodeStart => "node_start",
            EventKind::NodeComplete => "node_complete",
            EventKind::NodeFailed => "node_failed",
            EventKind::NodeUpdated => "node_updated",
            EventKind::LogAdded => "log_added",
            EventKind::MemoryAdd => "memory_add",
            EventKind::MemoryUpdate => "memory_update",
            EventKind::MemoryDelete => "memory_delete",
            EventKind::SpaceCreated => "space_created",
            EventKind::SpaceDeleted => "space_deleted",
            EventKind::Complete => "complete",
        }
    }

    /// Parses a wire `type` string.
    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One event of a trace: an immutable snapshot taken when it was emitted.
///
/// An `Event` is its wire bytes plus where the envelope fields sit in them:
/// cloning one copies nothing (the bytes are shared), and [`trace_id`],
/// [`node_id`] and [`space_id`] are slices of those bytes. [`Event::data`]
/// decodes the payload and [`Event::to_json`] returns the exact wire text.
///
/// [`trace_id`]: Event::trace_id
/// [`node_id`]: Event::node_id
/// [`space_id`]: Event::space_id
///
/// # Examples
/// ```
/// # fn main() -> tracepool::Result<()> {
/// use tracepool::{Engine, Cursor, EventKind, NodeOptions, TraceOptions};
/// let engine = Engine::builder().memory().workers(1).capacity(4).build()?;
/// let trace = engine.create(TraceOptions::new())?;
/// let node = trace.add("input", NodeOptions::new().label("Step"))?;
/// let events = trace.events(Cursor::Seq(0))?;
/// assert_eq!(events[0].kind, EventKind::Init);
/// assert_eq!(events[1].seq, 2);
/// assert_eq!(events[1].node_id(), node.id());
/// assert_eq!(events[1].trace_id(), trace.id());
/// assert_eq!(events[1].data()["node"]["label"], "Step");
/// assert!(events[1].to_json().starts_with(r#"{"type":"node_start","#));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Event {
    /// Per-trace sequence number, from 1, gap-free.
    pub seq: u64,
    /// Kind.
    pub kind: EventKind,
    /// Emission time, ms since the epoch (non-decreasing within a trace).
    pub timestamp: i64,
    pub(crate) bytes: WireBytes,
    pub(crate) at: Offsets,
}

/// Where the envelope's string fields and the payload sit in an event's bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Offsets {
    pub(crate) trace: (u32, u32),
    pub(crate) node: (u32, u32),
    pub(crate) space: (u32, u32),
    pub(crate) data: (u32, u32),
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        self.seq == other.seq
            && self.kind == other.kind
            && self.timestamp == other.timestamp
            && self.bytes == other.bytes
    }
}

impl Event {
    fn slice(&self, (a, b): (u32, u32)) -> &str {
        let (a, b) = (a as usize, b as usize);
        // The ranges are checked when the event is built: ASCII ids (or a
        // validated UTF-8 slice of a decoded event).
        std::str::from_utf8(self.bytes.get(a..b).unwrap_or_default()).unwrap_or_default()
    }

    /// The trace id.
    pub fn trace_id(&self) -> &str {
        self.slice(self.at.trace)
    }

    /// The node id, `""` when not applicable.
    pub fn node_id(&self) -> &str {
        self.slice(self.at.node)
    }

    /// The space id, `""` when not applicable.
    pub fn space_id(&self) -> &str {
        self.slice(self.at.space)
    }

    /// The payload (`data` of the wire envelope), decoded.
    pub fn data(&self) -> Value {
        let (a, b) = self.at.data;
        self.bytes
            .get(a as usize..b as usize)
            .and_then(|d| serde_json::from_slice(d).ok())
            .unwrap_or(Value::Null)
    }

    /// The payload's JSON text, undecoded.
    pub fn data_json(&self) -> &str {
        self.slice(self.at.data)
    }

    /// The wire format: the reference's snake_case envelope
    /// (`type`, `trace_id`, `node_id`, `space_id`, `timestamp`, `data`) plus `seq`.
    pub fn to_json(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// The wire bytes (the text of [`Event::to_json`]).
    pub fn wire_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The wire bytes as [`Bytes`], shared with this event (no copy): for
    /// callers that hand them on as `Bytes`, such as a response body.
    pub fn to_bytes(&self) -> Bytes {
        Bytes::from_owner(self.bytes.clone())
    }

    /// A clone of this event whose reference to the shared bytes is paid
    /// from `refs` (no atomic operation while it has prepaid references to
    /// the event's chunk).
    #[inline(always)]
    pub(crate) fn share(&self, refs: &mut RefCache) -> Event {
        Event {
            seq: self.seq,
            kind: self.kind,
            timestamp: self.timestamp,
            bytes: refs.share(&self.bytes),
            at: self.at,
        }
    }

    /// Decodes one wire-format event (as written by [`Event::to_json`]).
    ///
    /// # Errors
    /// [`Error::Corrupt`] naming `location` when the text is not an event.
    pub fn from_json(text: &[u8], location: &str) -> Result<Event> {
        wire::decode(text, location)
    }

    /// Numbers an event read without `seq` (written by the reference): sets
    /// `seq` and appends `"seq":N` to its wire bytes, so that replays carry it.
    pub(crate) fn numbered(mut self, seq: u64) -> Event {
        let text = &self.bytes[..];
        let end = text
            .iter()
            .rposition(|b| !b.is_ascii_whitespace())
            .map_or(0, |i| i + 1);
        if end > 0 && text[end - 1] == b'}' {
            let mut v = Vec::with_capacity(end + 28);
            v.extend_from_slice(&text[..end - 1]);
            let mut n = itoa::Buffer::new();
            v.extend_from_slice(b",\"seq\":");
            v.extend_from_slice(n.format(seq).as_bytes());
            v.push(b'}');
            self.bytes = WireBytes::copy_from_slice(&v);
        }
        self.seq = seq;
        self
    }
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Event")
            .field("seq", &self.seq)
            .field("kind", &self.kind)
            .field("trace_id", &self.trace_id())
            .field("node_id", &self.node_id())
            .field("space_id", &self.space_id())
            .field("timestamp", &self.timestamp)
            .finish_non_exhaustive()
    }
}

/// What a subscription yields.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// The next event, in seq order.
    Event(Event),
    /// The subscriber fell behind its bound (or its cursor is older than the
    /// retained history); `missed` events were skipped and the stream continues
    /// with the oldest event still within the bound.
    Lagged {
        /// How many events were skipped.
        missed: u64,
    },
}

/// Where a subscription (or an `events` query) starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cursor {
    /// Events with `seq >= n` (`Seq(0)` and `Seq(1)` mean everything).
    Seq(u64),
    /// Events with `timestamp >= ms` (ms since the epoch, inclusive).
    Time(i64),
}

/// Helper for decoders: builds a corrupt error.
pub(crate) fn corrupt(location: &str, what: impl std::fmt::Display) -> Error {
    Error::corrupt(location, what.to_string())
}
