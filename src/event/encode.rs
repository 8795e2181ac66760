//! Turning a [`Record`] into its wire bytes: the reference's payload shapes.
//!
//! Runs wherever an event is first needed in encoded form — on a worker
//! handing it to the driver, on a subscriber's or `events()`'s read, at
//! release for readers still behind — always under the trace's lock, into
//! the event log's arena. Nodes are written by the trace (which owns them)
//! through [`NodeWriter`]; every other payload is built from the record
//! alone.

use bytes::BytesMut;

use super::Event;
use super::json::JsonOut;
use super::record::{NodeSnap, PayloadRec, Record};
use super::value::as_str;
use super::wire::{self, Envelope};
use crate::id::ShortId;

/// Writes the nodes that `node_start` and `node_updated` payloads carry.
pub(crate) trait NodeWriter {
    /// Writes node `n` as the reference's `TraceNode`: as it was created
    /// when `snap` is `None`, else with the changeable fields of `snap`.
    fn write_node(&self, out: &mut JsonOut<'_>, n: u32, snap: Option<&NodeSnap>);
}

/// Encodes one recorded event of trace `trace_id`.
pub(crate) fn encode(
    arena: &mut BytesMut,
    trace_id: &str,
    rec: &Record,
    nodes: &dyn NodeWriter,
) -> Event {
    let env = Envelope {
        seq: rec.seq,
        kind: rec.kind,
        trace_id,
        node_id: rec.node.as_ref().map_or("", ShortId::as_str),
        space_id: rec.space.as_ref().map_or("", ShortId::as_str),
        timestamp: rec.ts,
    };
    wire::encode(arena, env, |out| write_payload(out, trace_id, rec, nodes))
}

fn write_payload(out: &mut JsonOut<'_>, trace_id: &str, rec: &Record, nodes: &dyn NodeWriter) {
    let node_id = rec.node.as_ref().map_or("", ShortId::as_str);
    let space_id = rec.space.as_ref().map_or("", ShortId::as_str);
    if let PayloadRec::Encoded(b) = &rec.payload {
        out.json(b);
        return;
    }
    out.begin_obj();
    match &rec.payload {
        PayloadRec::Init => {
            out.key("trace_id").str(trace_id);
        }
        PayloadRec::NodeStart(n) => {
            out.key("node");
            nodes.write_node(out, *n, None);
        }
        PayloadRec::NodeUpdated { node, snap } => {
            out.key("node");
            nodes.write_node(out, *node, Some(snap));
        }
        PayloadRec::NodesStart { first, count } => {
            out.key("nodes").begin_arr();
            for n in *first..*first + *count {
                out.elem();
                nodes.write_node(out, n, None);
            }
            out.end_arr();
        }
        PayloadRec::NodeComplete {
            end_time,
            duration,
            output,
        } => {
            out.key("node_id").ascii_str(node_id);
            out.key("status").raw(b"\"success\"").value_done();
            out.key("end_time").int(*end_time);
            out.key("duration").int(*duration);
            if let Some(o) = output {
                out.key("output").json(o);
            }
        }
        PayloadRec::NodeFailed {
            status,
            end_time,
            duration,
            error,
        } => {
            out.key("node_id").ascii_str(node_id);
            out.key("status").ascii_str(status.as_str());
            out.key("end_time").int(*end_time);
            out.key("duration").int(*duration);
            out.key("error").str(as_str(error));
        }
        PayloadRec::LogAdded { level, msg, data } => {
            // The reference's TraceLog has no JSON tags: Go field names.
            out.key("Timestamp").int(rec.ts);
            out.key("Level").ascii_str(level.as_str());
            out.key("Message").str(as_str(msg));
            match data {
                Some(d) => out.key("Data").json(d),
                None => out.key("Data").raw(b"null").value_done(),
            };
            out.key("NodeID").ascii_str(node_id);
        }
        PayloadRec::Memory { key, value, title } => {
            out.key("type").ascii_str(space_id);
            out.key("item").begin_obj();
            out.key("id").str(as_str(key));
            out.key("type").ascii_str(space_id);
            if let Some(t) = title {
                out.key("title").str(as_str(t));
            }
            out.key("content").json(value);
            out.key("timestamp").int(rec.ts);
            out.end_obj();
        }
        PayloadRec::MemoryDelete { key } => {
            out.key("space_id").ascii_str(space_id);
            match key {
                Some(k) => out.key("key").str(as_str(k)),
                None => out.key("cleared").bool(true),
            };
        }
        PayloadRec::Complete { status, total } => {
            out.key("trace_id").str(trace_id);
            out.key("status").ascii_str(status.as_str());
            out.key("total_duration").int(*total);
        }
        PayloadRec::Encoded(_) => {}
    }
    out.end_obj();
}
