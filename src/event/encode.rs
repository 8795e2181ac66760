//! Turning a [`Record`] into its wire bytes: the reference's payload shapes.
//!
//! Runs wherever an event is first needed in encoded form — on a worker
//! handing it to the driver, on a subscriber's or `events()`'s read, at
//! release for readers still behind — always under the trace's lock, into
//! the event log's arena. What a record refers to by index (nodes, log
//! lines, a space's title) is read through the trace's [`Source`].

use super::Event;
use super::json::JsonOut;
use super::record::{NodeSnap, PayloadRec, Record};
use super::wire::{self, Envelope};
use super::wire_buf::WireArena;
use crate::id::ShortId;
use crate::model::{Level, NodeStatus, TraceStatus};

/// One log line, as a `log_added` payload needs it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LogLine<'a> {
    pub(crate) level: Level,
    /// Text.
    pub(crate) msg: &'a [u8],
    /// JSON; `None` for `null`.
    pub(crate) data: Option<&'a [u8]>,
    /// The node (index) it was logged on.
    pub(crate) node: u32,
}

/// What records refer to, as the trace holding them sees it.
pub(crate) trait Source {
    /// The trace id.
    fn trace_id(&self) -> &str;
    /// The id of node `n`.
    fn node_id(&self, n: u32) -> &str;
    /// When node `n` started.
    fn start_time(&self, n: u32) -> i64;
    /// What node `n`'s creation-time strings and values take (for byte bounds).
    fn node_bytes(&self, n: u32) -> usize;
    /// Writes node `n` as the reference's `TraceNode`: as it was created
    /// when `snap` is `None`, else with the changeable fields of `snap`.
    fn write_node(&self, out: &mut JsonOut<'_>, n: u32, snap: Option<&NodeSnap>);
    /// Line `line` (index in the trace's whole log), while in memory.
    fn log_line(&self, line: u64) -> Option<LogLine<'_>>;
    /// The label of space `space` as text (`None`: no label, or no such space).
    fn space_title(&self, space: &ShortId) -> Option<&str>;
}

/// The envelope's node and space ids of a record.
fn subject<'s>(rec: &Record, src: &'s dyn Source) -> (&'s str, Option<ShortId>) {
    match &rec.payload {
        PayloadRec::NodeStart(n)
        | PayloadRec::NodeComplete { node: n, .. }
        | PayloadRec::NodeFailed { node: n, .. }
        | PayloadRec::NodeUpdated { node: n, .. } => (src.node_id(*n), None),
        PayloadRec::LogAdded { line, .. } => (
            src.log_line(*line).map_or("", |l| src.node_id(l.node)),
            None,
        ),
        PayloadRec::Memory { space, .. }
        | PayloadRec::MemoryDelete { space, .. }
        | PayloadRec::Encoded { space, .. } => ("", Some(*space)),
        PayloadRec::Init | PayloadRec::NodesStart { .. } | PayloadRec::Complete { .. } => {
            ("", None)
        }
    }
}

/// Encodes one recorded event.
pub(crate) fn encode(arena: &mut WireArena, rec: &Record, src: &dyn Source) -> Event {
    let (node_id, space) = subject(rec, src);
    let env = Envelope {
        seq: rec.seq,
        kind: rec.kind,
        trace_id: src.trace_id(),
        node_id,
        space_id: space.as_ref().map_or("", ShortId::as_str),
        timestamp: rec.ts,
    };
    wire::encode(arena, env, |out| write_payload(out, rec, node_id, src))
}

/// `{"node_id":"<id>","status":"<status>","end_time":` of a node's end.
fn end_head(out: &mut JsonOut<'_>, node_id: &str, status: NodeStatus) {
    out.raw(br#"{"node_id":""#).ascii(node_id);
    out.raw(match status {
        NodeStatus::Pending => br#"","status":"pending","end_time":"#.as_slice(),
        NodeStatus::Running => br#"","status":"running","end_time":"#,
        NodeStatus::Completed => br#"","status":"completed","end_time":"#,
        NodeStatus::Failed => br#"","status":"failed","end_time":"#,
        NodeStatus::Skipped => br#"","status":"skipped","end_time":"#,
        NodeStatus::Cancelled => br#"","status":"cancelled","end_time":"#,
    });
}

/// Writes the payload of `rec`, in few pieces: keys and the punctuation
/// around them are written together, with the enum values between them.
fn write_payload(out: &mut JsonOut<'_>, rec: &Record, node_id: &str, src: &dyn Source) {
    match &rec.payload {
        PayloadRec::NodeStart(n) => {
            out.raw(br#"{"node":"#);
            src.write_node(out, *n, None);
            out.raw(b"}");
        }
        PayloadRec::NodeUpdated { node, snap } => {
            out.raw(br#"{"node":"#);
            src.write_node(out, *node, Some(snap));
            out.raw(b"}");
        }
        PayloadRec::NodesStart { first, count } => {
            out.raw(br#"{"nodes":["#);
            for n in *first..*first + *count {
                if n != *first {
                    out.raw(b",");
                }
                src.write_node(out, n, None);
            }
            out.raw(b"]}");
        }
        // The rest in a local copy of the writer (no call hands it on).
        _ => out.local(|out| write_flat(out, rec, node_id, src)),
    }
    out.value_done();
}

/// [`write_payload`] of the kinds without a node object.
#[inline(always)]
fn write_flat(out: &mut JsonOut<'_>, rec: &Record, node_id: &str, src: &dyn Source) {
    match &rec.payload {
        PayloadRec::NodeStart(_)
        | PayloadRec::NodeUpdated { .. }
        | PayloadRec::NodesStart { .. } => {
            unreachable!("written by write_payload")
        }
        PayloadRec::Encoded { payload, .. } => {
            out.json(payload);
        }
        PayloadRec::Init => {
            // Trace ids are validated: letters, digits, `_` and `-`.
            out.raw(br#"{"trace_id":""#)
                .ascii(src.trace_id())
                .raw(br#""}"#);
        }
        PayloadRec::NodeComplete { node, output } => {
            out.raw(br#"{"node_id":""#).ascii(node_id);
            out.raw(br#"","status":"success","end_time":"#).time(rec.ts);
            out.raw(br#","duration":"#)
                .sint(rec.ts - src.start_time(*node));
            if let Some(o) = output {
                out.raw(br#","output":"#).json(o);
            }
            out.raw(b"}");
        }
        PayloadRec::NodeFailed {
            node,
            status,
            error,
        } => {
            end_head(out, node_id, *status);
            out.time(rec.ts);
            out.raw(br#","duration":"#)
                .sint(rec.ts - src.start_time(*node));
            out.raw(br#","error":"#).text(error).raw(b"}");
        }
        PayloadRec::LogAdded { line, .. } => {
            // The reference's TraceLog has no JSON tags: Go field names.
            // (The line is in memory: its record is encoded before it leaves.)
            let l = src.log_line(*line);
            out.raw(br#"{"Timestamp":"#).time(rec.ts);
            out.raw(match l.map_or(Level::Info, |l| l.level) {
                Level::Debug => br#","Level":"debug","Message":"#.as_slice(),
                Level::Info => br#","Level":"info","Message":"#,
                Level::Warn => br#","Level":"warn","Message":"#,
                Level::Error => br#","Level":"error","Message":"#,
            });
            out.text(l.map_or(b"", |l| l.msg));
            out.raw(br#","Data":"#)
                .json(l.and_then(|l| l.data).unwrap_or(b"null"));
            out.raw(br#","NodeID":""#).ascii(node_id).raw(br#""}"#);
        }
        PayloadRec::Memory { space, key, value } => {
            out.raw(br#"{"type":""#).ascii(space.as_str());
            out.raw(br#"","item":{"id":"#).text(key);
            out.raw(br#","type":""#).ascii(space.as_str()).raw(b"\"");
            if let Some(t) = src.space_title(space) {
                out.raw(br#","title":"#).str(t);
            }
            out.raw(br#","content":"#).json(value);
            out.raw(br#","timestamp":"#).time(rec.ts).raw(b"}}");
        }
        PayloadRec::MemoryDelete { space, key } => {
            out.raw(br#"{"space_id":""#).ascii(space.as_str());
            match key {
                Some(k) => out.raw(br#"","key":"#).text(k).raw(b"}"),
                None => out.raw(br#"","cleared":true}"#),
            };
        }
        PayloadRec::Complete { status, total } => {
            out.raw(br#"{"trace_id":""#).ascii(src.trace_id());
            out.raw(match status {
                TraceStatus::Pending => br#"","status":"pending","total_duration":"#.as_slice(),
                TraceStatus::Running => br#"","status":"running","total_duration":"#,
                TraceStatus::Completed => br#"","status":"completed","total_duration":"#,
                TraceStatus::Failed => br#"","status":"failed","total_duration":"#,
                TraceStatus::Cancelled => br#"","status":"cancelled","total_duration":"#,
            });
            out.sint(*total).raw(b"}");
        }
    }
}
