//! The wire format of an event.
//!
//! ```text
//! {"type":"node_start","trace_id":"…","node_id":"…","space_id":"","timestamp":1732000000000,"data":{…},"seq":2}
//! ```
//!
//! The envelope keys and payloads are those of the reference (snake_case
//! envelope and payloads, PascalCase log entries); `seq` is added last.
//! Trace ids and node/space ids are validated ASCII, so they are written
//! without escaping, and an [`Event`] finds them by offset.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::json::JsonOut;
use super::wire_buf::{WireArena, WireBytes};
use super::{Event, EventKind, Offsets, corrupt};
use crate::error::Result;

/// Size of a fresh arena chunk; events are carved out of it without allocating.
pub(crate) const ARENA_CHUNK: usize = 16 * 1024;

/// An offset into an event's bytes (an event of 4 GiB or more has its
/// fields read as empty).
fn offset(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The envelope fields of one event.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Envelope<'a> {
    pub(crate) seq: u64,
    pub(crate) kind: EventKind,
    pub(crate) trace_id: &'a str,
    pub(crate) node_id: &'a str,
    pub(crate) space_id: &'a str,
    pub(crate) timestamp: i64,
}

/// The envelope up to the trace id's text, `{"type":"<kind>","trace_id":"`,
/// as one piece.
fn head(kind: EventKind) -> &'static [u8] {
    macro_rules! head {
        ($kind:literal) => {
            concat!("{\"type\":\"", $kind, "\",\"trace_id\":\"").as_bytes()
        };
    }
    match kind {
        EventKind::Init => head!("init"),
        EventKind::NodeStart => head!("node_start"),
        EventKind::NodeComplete => head!("node_complete"),
        EventKind::NodeFailed => head!("node_failed"),
        EventKind::NodeUpdated => head!("node_updated"),
        EventKind::LogAdded => head!("log_added"),
        EventKind::MemoryAdd => head!("memory_add"),
        EventKind::MemoryUpdate => head!("memory_update"),
        EventKind::MemoryDelete => head!("memory_delete"),
        EventKind::SpaceCreated => head!("space_created"),
        EventKind::SpaceDeleted => head!("space_deleted"),
        EventKind::Complete => head!("complete"),
    }
}

/// Serializes one event into `arena` and splits its bytes off; `data`
/// writes the payload.
pub(crate) fn encode(
    arena: &mut WireArena,
    env: Envelope<'_>,
    data: impl FnOnce(&mut JsonOut<'_>),
) -> Event {
    if !arena.is_empty() {
        // Every event is split off whole; nothing should be left over.
        arena.clear();
    }
    if arena.capacity() < 1024 {
        arena.reserve(ARENA_CHUNK);
    }
    let at = {
        let mut out = JsonOut::new(arena);
        let (trace, node, space) = out.local(|out| {
            let head = head(env.kind);
            let (t, n, sp) = (env.trace_id, env.node_id, env.space_id);
            const NODE: &[u8] = br#"","node_id":""#;
            const SPACE: &[u8] = br#"","space_id":""#;
            let at = out.len() + head.len();
            let trace = (at, at + t.len());
            let at = trace.1 + NODE.len();
            let node = (at, at + n.len());
            let at = node.1 + SPACE.len();
            let space = (at, at + sp.len());
            debug_assert!(
                [t, n, sp]
                    .iter()
                    .all(|s| s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\'))
            );
            out.pieces((
                head,
                t.as_bytes(),
                NODE,
                n.as_bytes(),
                SPACE,
                sp.as_bytes(),
                br#"","timestamp":"#.as_slice(),
            ));
            out.time(env.timestamp).raw(br#","data":"#);
            let offsets = |(a, b): (usize, usize)| (offset(a), offset(b));
            (offsets(trace), offsets(node), offsets(space))
        });
        let start = offset(out.len());
        data(&mut out);
        let end = offset(out.len());
        out.local(|out| {
            out.raw(br#","seq":"#).uint(env.seq).raw(b"}");
        });
        // Dropping `out` sets the arena's length to what it wrote.
        Offsets {
            trace,
            node,
            space,
            data: (start, end),
        }
    };
    Event {
        seq: env.seq,
        kind: env.kind,
        timestamp: env.timestamp,
        bytes: arena.split(),
        at,
    }
}

#[derive(Deserialize)]
struct RawEnvelope<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(default, borrow)]
    trace_id: Option<&'a RawValue>,
    #[serde(default, borrow)]
    node_id: Option<&'a RawValue>,
    #[serde(default, borrow)]
    space_id: Option<&'a RawValue>,
    #[serde(default)]
    timestamp: i64,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    #[serde(default)]
    seq: u64,
}

/// Decodes a wire-format event. A missing `seq` (events written by the
/// reference) decodes as 0; the caller numbers such events. The event's
/// bytes are a copy of `bytes`.
pub(crate) fn decode(bytes: &[u8], location: &str) -> Result<Event> {
    if u32::try_from(bytes.len()).is_err() {
        return Err(corrupt(location, "event of 4 GiB or more"));
    }
    let env: RawEnvelope<'_> =
        serde_json::from_slice(bytes).map_err(|e| corrupt(location, format!("bad event: {e}")))?;
    let kind = EventKind::parse(env.kind)
        .ok_or_else(|| corrupt(location, format!("unknown event type {:?}", env.kind)))?;
    let base = bytes.as_ptr() as usize;
    let range = |raw: &RawValue| -> (u32, u32) {
        let s = raw.get();
        let off = s.as_ptr() as usize - base;
        (offset(off), offset(off + s.len()))
    };
    // An id is a plain JSON string: its offsets are those of its text.
    let id = |raw: Option<&RawValue>, name: &str| -> Result<(u32, u32)> {
        let Some(raw) = raw else { return Ok((0, 0)) };
        let s = raw.get();
        if s == "null" {
            return Ok((0, 0));
        }
        if s.len() < 2 || !s.starts_with('"') || !s.ends_with('"') || s.contains('\\') {
            return Err(corrupt(location, format!("bad {name}: {s}")));
        }
        let (a, b) = range(raw);
        Ok((a + 1, b - 1))
    };
    let at = Offsets {
        trace: id(env.trace_id, "trace_id")?,
        node: id(env.node_id, "node_id")?,
        space: id(env.space_id, "space_id")?,
        data: env.data.map_or((0, 0), range),
    };
    let (seq, timestamp) = (env.seq, env.timestamp);
    Ok(Event {
        seq,
        kind,
        timestamp,
        bytes: WireBytes::copy_from_slice(bytes),
        at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trip() {
        let mut arena = WireArena::new();
        // Something already in the arena before this event.
        arena.extend_from_slice(b"previous");
        let _ = arena.split();
        let ev = encode(
            &mut arena,
            Envelope {
                seq: 7,
                kind: EventKind::NodeStart,
                trace_id: "t1",
                node_id: "abcdefghijkl",
                space_id: "",
                timestamp: 42,
            },
            |o| {
                o.json(br#"{"node":{"id":"x"}}"#);
            },
        );
        let text = ev.to_json();
        assert_eq!(
            text,
            r#"{"type":"node_start","trace_id":"t1","node_id":"abcdefghijkl","space_id":"","timestamp":42,"data":{"node":{"id":"x"}},"seq":7}"#
        );
        assert_eq!(ev.trace_id(), "t1");
        assert_eq!(ev.node_id(), "abcdefghijkl");
        assert_eq!(ev.space_id(), "");
        assert_eq!(ev.data_json(), r#"{"node":{"id":"x"}}"#);
        let back = decode(&ev.bytes, "mem").unwrap();
        assert_eq!(back.seq, 7);
        assert_eq!(back.kind, EventKind::NodeStart);
        assert_eq!(back.at, ev.at);
        assert_eq!(back.data(), json!({"node": {"id": "x"}}));
        assert_eq!(back, ev);
    }

    #[test]
    fn heads_name_their_kind() {
        for k in EventKind::ALL {
            assert_eq!(
                head(k),
                format!(r#"{{"type":"{}","trace_id":""#, k.as_str()).as_bytes()
            );
        }
    }

    #[test]
    fn decode_rejects_garbage() {
        assert!(decode(b"{\"type\":\"nope\"}", "f").is_err());
        assert!(decode(b"\x00\xff", "f").is_err());
        assert!(
            decode(br#"{"type":"init","trace_id":"a\"b","data":{}}"#, "f").is_err(),
            "an escaped id is refused"
        );
        let no_seq = br#"{"type":"init","trace_id":"t","node_id":"","space_id":"","timestamp":1,"data":{"trace_id":"t"}}"#;
        let ev = decode(no_seq, "f").unwrap();
        assert_eq!(ev.seq, 0);
        assert_eq!(ev.trace_id(), "t");
        assert_eq!(ev.data()["trace_id"], "t");
    }
}
