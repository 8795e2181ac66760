//! A minimal JSON writer for event payloads, straight into a trace's byte arena.
//!
//! Keys are `'static` and known to need no escaping, so they are written as
//! raw bytes; strings take a fast path when they need no escaping; caller
//! values (`serde_json::Value`) go through serde_json. Output is identical
//! to serde_json's compact form.

use bytes::{BufMut, BytesMut};
use serde_json::Value;

/// Writes one JSON value (objects and arrays nested) into a buffer.
#[derive(Debug)]
pub(crate) struct JsonOut<'a> {
    buf: &'a mut BytesMut,
    /// A value was just written at this level: the next key or element
    /// needs a comma first.
    comma: bool,
}

impl<'a> JsonOut<'a> {
    pub(crate) fn new(buf: &'a mut BytesMut) -> Self {
        JsonOut { buf, comma: false }
    }

    fn sep(&mut self) {
        if self.comma {
            self.buf.put_u8(b',');
        }
    }

    /// `{`
    pub(crate) fn begin_obj(&mut self) -> &mut Self {
        self.buf.put_u8(b'{');
        self.comma = false;
        self
    }

    /// `}`
    pub(crate) fn end_obj(&mut self) -> &mut Self {
        self.buf.put_u8(b'}');
        self.comma = true;
        self
    }

    /// `[`
    pub(crate) fn begin_arr(&mut self) -> &mut Self {
        self.buf.put_u8(b'[');
        self.comma = false;
        self
    }

    /// `]`
    pub(crate) fn end_arr(&mut self) -> &mut Self {
        self.buf.put_u8(b']');
        self.comma = true;
        self
    }

    /// `"key":` (with a leading comma when needed). `key` must need no escaping.
    pub(crate) fn key(&mut self, key: &'static str) -> &mut Self {
        self.sep();
        self.buf.put_u8(b'"');
        self.buf.put_slice(key.as_bytes());
        self.buf.put_slice(b"\":");
        self.comma = false;
        self
    }

    /// Separator before an array element.
    pub(crate) fn elem(&mut self) -> &mut Self {
        self.sep();
        self.comma = false;
        self
    }

    /// Raw JSON text (punctuation and keys written together), no separator
    /// logic: the caller writes a complete, valid piece.
    pub(crate) fn raw(&mut self, text: &'static [u8]) -> &mut Self {
        self.buf.put_slice(text);
        self
    }

    /// Bytes known to need no escaping (validated ids), without quotes.
    pub(crate) fn ascii(&mut self, s: &str) -> &mut Self {
        debug_assert!(s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\'));
        self.buf.put_slice(s.as_bytes());
        self
    }

    /// A string value known to need no escaping (validated ids, enum names).
    pub(crate) fn ascii_str(&mut self, s: &str) -> &mut Self {
        debug_assert!(s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\'));
        self.buf.put_u8(b'"');
        self.buf.put_slice(s.as_bytes());
        self.buf.put_u8(b'"');
        self.comma = true;
        self
    }

    /// Marks that a complete value was written with `raw` pieces.
    pub(crate) fn value_done(&mut self) -> &mut Self {
        self.comma = true;
        self
    }

    /// A string value.
    pub(crate) fn str(&mut self, s: &str) -> &mut Self {
        if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
            self.buf.put_u8(b'"');
            self.buf.put_slice(s.as_bytes());
            self.buf.put_u8(b'"');
        } else {
            // serde_json cannot fail on a str written to a BytesMut.
            let _ = serde_json::to_writer((&mut *self.buf).writer(), s);
        }
        self.comma = true;
        self
    }

    /// An integer value.
    pub(crate) fn int(&mut self, v: impl itoa::Integer) -> &mut Self {
        let mut b = itoa::Buffer::new();
        self.buf.put_slice(b.format(v).as_bytes());
        self.comma = true;
        self
    }

    /// `true` / `false`.
    pub(crate) fn bool(&mut self, v: bool) -> &mut Self {
        self.buf
            .put_slice(if v { b"true".as_slice() } else { b"false" });
        self.comma = true;
        self
    }

    /// A value already serialized as JSON (a caller value stored as bytes).
    pub(crate) fn json(&mut self, v: &[u8]) -> &mut Self {
        self.buf.put_slice(v);
        self.comma = true;
        self
    }

    /// A caller map, through serde_json.
    pub(crate) fn map(&mut self, m: &serde_json::Map<String, Value>) -> &mut Self {
        let _ = serde_json::to_writer((&mut *self.buf).writer(), m);
        self.comma = true;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn matches_serde_json() {
        let mut buf = BytesMut::new();
        let mut o = JsonOut::new(&mut buf);
        o.begin_obj();
        o.key("a").str("plain");
        o.key("b").str("needs \"escaping\"\n\\ and ünïcode");
        o.key("c").int(-42i64);
        o.key("d").begin_arr();
        o.elem().str("x");
        o.elem().begin_obj().key("n").bool(true).end_obj();
        o.end_arr();
        o.key("e")
            .map(json!({"k": [1, 2.5, null], "s": "t"}).as_object().unwrap());
        o.key("f").json(b"null");
        o.key("g").ascii_str("id_1");
        o.end_obj();
        let got: Value = serde_json::from_slice(&buf).unwrap();
        let want = json!({
            "a": "plain",
            "b": "needs \"escaping\"\n\\ and ünïcode",
            "c": -42,
            "d": ["x", {"n": true}],
            "e": {"k": [1, 2.5, null], "s": "t"},
            "f": null,
            "g": "id_1"
        });
        assert_eq!(got, want);
        assert_eq!(
            std::str::from_utf8(&buf).unwrap(),
            serde_json::to_string(&want).unwrap()
        );
    }
}
