//! The wire format of an event, written once into a trace's byte arena.
//!
//! ```text
//! {"type":"node_start","trace_id":"…","node_id":"…","space_id":"","timestamp":1732000000000,"data":{…},"seq":2}
//! ```
//!
//! The envelope keys and payloads are those of the reference (snake_case
//! envelope and payloads, PascalCase log entries); `seq` is added last.
//! Trace ids and node/space ids are validated ASCII, so they are written
//! without escaping.

use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::json::JsonOut;
use super::{Event, EventKind, corrupt};
use crate::error::Result;

/// Size of a fresh arena chunk; events are carved out of it without allocating.
pub(crate) const ARENA_CHUNK: usize = 16 * 1024;

fn put_int(buf: &mut BytesMut, v: impl itoa::Integer) {
    let mut b = itoa::Buffer::new();
    buf.put_slice(b.format(v).as_bytes());
}

/// Serializes one event into `arena` and splits its bytes off.
///
/// Returns the shared bytes and the byte range of the `data` value inside them.
#[allow(clippy::too_many_arguments)]
pub(crate) fn encode(
    arena: &mut BytesMut,
    seq: u64,
    kind: EventKind,
    trace_id: &str,
    node_id: &str,
    space_id: &str,
    timestamp: i64,
    data: impl FnOnce(&mut JsonOut<'_>),
) -> (Bytes, (usize, usize)) {
    if arena.capacity() - arena.len() < 1024 {
        arena.reserve(ARENA_CHUNK);
    }
    arena.put_slice(br#"{"type":""#);
    arena.put_slice(kind.as_str().as_bytes());
    arena.put_slice(br#"","trace_id":""#);
    arena.put_slice(trace_id.as_bytes());
    arena.put_slice(br#"","node_id":""#);
    arena.put_slice(node_id.as_bytes());
    arena.put_slice(br#"","space_id":""#);
    arena.put_slice(space_id.as_bytes());
    arena.put_slice(br#"","timestamp":"#);
    put_int(arena, timestamp);
    arena.put_slice(br#","data":"#);
    let start = arena.len();
    data(&mut JsonOut::new(arena));
    let end = arena.len();
    arena.put_slice(br#","seq":"#);
    put_int(arena, seq);
    arena.put_u8(b'}');
    (arena.split().freeze(), (start, end))
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(default)]
    trace_id: String,
    #[serde(default)]
    node_id: String,
    #[serde(default)]
    space_id: String,
    #[serde(default)]
    timestamp: i64,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    #[serde(default)]
    seq: u64,
}

/// Decodes a wire-format event. A missing `seq` (events written by the
/// reference) decodes as 0; the caller numbers such events.
pub(crate) fn decode(bytes: Bytes, location: &str) -> Result<Event> {
    let env: Envelope<'_> =
        serde_json::from_slice(&bytes).map_err(|e| corrupt(location, format!("bad event: {e}")))?;
    let kind = EventKind::parse(env.kind)
        .ok_or_else(|| corrupt(location, format!("unknown event type {:?}", env.kind)))?;
    let data_range = match env.data {
        Some(raw) => {
            let s = raw.get();
            let off = s.as_ptr() as usize - bytes.as_ptr() as usize;
            (off, off + s.len())
        }
        None => (0, 0),
    };
    let ev = Event {
        seq: env.seq,
        kind,
        trace_id: env.trace_id,
        node_id: env.node_id,
        space_id: env.space_id,
        timestamp: env.timestamp,
        bytes: Bytes::new(),
        data_range,
    };
    Ok(Event { bytes, ..ev })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trip() {
        let mut arena = BytesMut::new();
        let (b, r) = encode(
            &mut arena,
            7,
            EventKind::NodeStart,
            "t1",
            "abcdefghijkl",
            "",
            42,
            |o| {
                o.value(&json!({"node": {"id": "x"}}));
            },
        );
        let text = std::str::from_utf8(&b).unwrap();
        assert_eq!(
            text,
            r#"{"type":"node_start","trace_id":"t1","node_id":"abcdefghijkl","space_id":"","timestamp":42,"data":{"node":{"id":"x"}},"seq":7}"#
        );
        assert_eq!(&text[r.0..r.1], r#"{"node":{"id":"x"}}"#);
        let ev = decode(b.clone(), "mem").unwrap();
        assert_eq!(ev.seq, 7);
        assert_eq!(ev.kind, EventKind::NodeStart);
        assert_eq!(ev.data(), json!({"node": {"id": "x"}}));
        assert_eq!(ev.to_json(), text);
    }

    #[test]
    fn decode_rejects_garbage() {
        assert!(decode(Bytes::from_static(b"{\"type\":\"nope\"}"), "f").is_err());
        assert!(decode(Bytes::from_static(b"\x00\xff"), "f").is_err());
        let no_seq = br#"{"type":"init","trace_id":"t","node_id":"","space_id":"","timestamp":1,"data":{"trace_id":"t"}}"#;
        let ev = decode(Bytes::from_static(no_seq), "f").unwrap();
        assert_eq!(ev.seq, 0);
        assert_eq!(ev.data()["trace_id"], "t");
    }
}
