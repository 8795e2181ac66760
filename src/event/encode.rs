//! Turning a [`Record`] into its wire bytes: the reference's payload shapes.
//!
//! Runs wherever an event is first needed in encoded form — on a worker
//! handing it to the driver, on a subscriber's or `events()`'s read, at
//! release for readers still behind — always under the trace's lock, into
//! the event log's arena. What a record refers to by index (nodes, log
//! lines, a space's title) is read through the trace's [`Source`].

use bytes::BytesMut;

use super::Event;
use super::json::JsonOut;
use super::record::{NodeSnap, PayloadRec, Record};
use super::value::as_str;
use super::wire::{self, Envelope};
use crate::id::ShortId;
use crate::model::Level;

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
pub(crate) fn encode(arena: &mut BytesMut, rec: &Record, src: &dyn Source) -> Event {
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

fn write_payload(out: &mut JsonOut<'_>, rec: &Record, node_id: &str, src: &dyn Source) {
    if let PayloadRec::Encoded { payload, .. } = &rec.payload {
        out.json(payload);
        return;
    }
    out.begin_obj();
    match &rec.payload {
        PayloadRec::Init => {
            out.key("trace_id").str(src.trace_id());
        }
        PayloadRec::NodeStart(n) => {
            out.key("node");
            src.write_node(out, *n, None);
        }
        PayloadRec::NodeUpdated { node, snap } => {
            out.key("node");
            src.write_node(out, *node, Some(snap));
        }
        PayloadRec::NodesStart { first, count } => {
            out.key("nodes").begin_arr();
            for n in *first..*first + *count {
                out.elem();
                src.write_node(out, n, None);
            }
            out.end_arr();
        }
        PayloadRec::NodeComplete { node, output } => {
            out.key("node_id").ascii_str(node_id);
            out.key("status").ascii_str("success");
            out.key("end_time").time(rec.ts);
            out.key("duration").int(rec.ts - src.start_time(*node));
            if let Some(o) = output {
                out.key("output").json(o);
            }
        }
        PayloadRec::NodeFailed {
            node,
            status,
            error,
        } => {
            out.key("node_id").ascii_str(node_id);
            out.key("status").ascii_str(status.as_str());
            out.key("end_time").time(rec.ts);
            out.key("duration").int(rec.ts - src.start_time(*node));
            out.key("error").str(as_str(error));
        }
        PayloadRec::LogAdded { line, .. } => {
            // The reference's TraceLog has no JSON tags: Go field names.
            // (The line is in memory: its record is encoded before it leaves.)
            let l = src.log_line(*line);
            out.key("Timestamp").time(rec.ts);
            out.key("Level")
                .ascii_str(l.map_or(Level::Info, |l| l.level).as_str());
            out.key("Message").str(as_str(l.map_or(b"", |l| l.msg)));
            match l.and_then(|l| l.data) {
                Some(d) => out.key("Data").json(d),
                None => out.key("Data").json(b"null"),
            };
            out.key("NodeID").ascii_str(node_id);
        }
        PayloadRec::Memory { space, key, value } => {
            out.key("type").ascii_str(space.as_str());
            out.key("item").begin_obj();
            out.key("id").str(as_str(key));
            out.key("type").ascii_str(space.as_str());
            if let Some(t) = src.space_title(space) {
                out.key("title").str(t);
            }
            out.key("content").json(value);
            out.key("timestamp").time(rec.ts);
            out.end_obj();
        }
        PayloadRec::MemoryDelete { space, key } => {
            out.key("space_id").ascii_str(space.as_str());
            match key {
                Some(k) => out.key("key").str(as_str(k)),
                None => out.key("cleared").bool(true),
            };
        }
        PayloadRec::Complete { status, total } => {
            out.key("trace_id").str(src.trace_id());
            out.key("status").ascii_str(status.as_str());
            out.key("total_duration").int(*total);
        }
        PayloadRec::Encoded { .. } => {}
    }
    out.end_obj();
}
