//! A minimal JSON writer for event payloads, straight into a trace's byte arena.
//!
//! Keys are `'static` and known to need no escaping, so they are written as
//! raw bytes; strings take a fast path when they need no escaping (checked
//! eight bytes at a time); caller values (`serde_json::Value`) go through
//! serde_json. Output is identical to serde_json's compact form.
//!
//! The pieces of an event are short (keys, ids, digits): [`put`] copies
//! pieces of up to 32 bytes inline rather than through a `memcpy` call, and
//! a timestamp that repeats ([`JsonOut::time`]: the envelope's and a node's
//! times, and consecutive events, are usually the same millisecond) is
//! formatted once per thread.

use bytes::{BufMut, BytesMut};
use serde_json::Value;

/// Appends `s` to `buf`; pieces of up to 32 bytes are copied inline (two
/// overlapping loads and stores) instead of through a `memcpy` call.
#[inline(always)]
pub(crate) fn put(buf: &mut BytesMut, s: &[u8]) {
    let n = s.len();
    if n > 32 {
        buf.extend_from_slice(s);
        return;
    }
    buf.reserve(n);
    let src = s.as_ptr();
    let dst = buf.spare_capacity_mut().as_mut_ptr().cast::<u8>();
    // SAFETY: `reserve(n)` leaves at least `n` bytes of spare capacity
    // after the length, and `s` has `n` bytes: each pair of (possibly
    // overlapping) copies below reads within `s` and writes within those
    // `n` bytes, covering all of them; then the length takes them in.
    unsafe {
        if n >= 16 {
            copy_ends::<[u8; 16]>(src, dst, n);
        } else if n >= 8 {
            copy_ends::<u64>(src, dst, n);
        } else if n >= 4 {
            copy_ends::<u32>(src, dst, n);
        } else {
            for i in 0..n {
                *dst.add(i) = *src.add(i);
            }
        }
        buf.set_len(buf.len() + n);
    }
}

/// Copies `n` bytes (`size_of::<T>() <= n <= 2 * size_of::<T>()`) from
/// `src` to `dst` as two unaligned `T`s, the first at the start and the
/// second ending at `n` (they overlap when `n` is less than twice the size).
///
/// # Safety
/// `src` must be readable and `dst` writable for `n` bytes, and `n` within
/// the bounds above.
#[inline(always)]
unsafe fn copy_ends<T: Copy>(src: *const u8, dst: *mut u8, n: usize) {
    let w = std::mem::size_of::<T>();
    // SAFETY: both reads and both writes lie within the first `n` bytes of
    // `src` and `dst` (the caller's bounds: `w <= n`).
    unsafe {
        let (a, b) = (
            src.cast::<T>().read_unaligned(),
            src.add(n - w).cast::<T>().read_unaligned(),
        );
        dst.cast::<T>().write_unaligned(a);
        dst.add(n - w).cast::<T>().write_unaligned(b);
    }
}

/// Whether `s` needs no escaping in a JSON string: no control character,
/// `"` or `\`. Eight bytes at a time: a byte below 0x20, and a byte equal
/// to `"` or `\` (a zero byte after the xor), sets its high bit in a mask.
#[inline]
pub(crate) fn is_plain(s: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut words = s.chunks_exact(8);
    for w in &mut words {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        let v = u64::from_le_bytes(b);
        let ctl = v.wrapping_sub(ONES * 0x20) & !v & HIGH;
        let q = v ^ (ONES * u64::from(b'"'));
        let q = q.wrapping_sub(ONES) & !q & HIGH;
        let bs = v ^ (ONES * u64::from(b'\\'));
        let bs = bs.wrapping_sub(ONES) & !bs & HIGH;
        if ctl | q | bs != 0 {
            return false;
        }
    }
    words
        .remainder()
        .iter()
        .all(|&b| b >= 0x20 && b != b'"' && b != b'\\')
}

/// The last timestamp written on this thread and its digits.
#[derive(Debug, Clone, Copy)]
struct LastTime {
    ms: i64,
    len: u8,
    digits: [u8; 20],
}

thread_local! {
    static LAST_TIME: std::cell::Cell<LastTime> = const {
        std::cell::Cell::new(LastTime {
            ms: 0,
            len: 0,
            digits: [0; 20],
        })
    };
}

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

    /// Bytes in the buffer (for offsets into what is written).
    pub(crate) fn len(&self) -> usize {
        self.buf.len()
    }

    /// The buffer, to split the written bytes off.
    pub(crate) fn buf(&mut self) -> &mut BytesMut {
        self.buf
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
        put(self.buf, key.as_bytes());
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
        put(self.buf, text);
        self
    }

    /// Bytes known to need no escaping (validated ids), without quotes.
    pub(crate) fn ascii(&mut self, s: &str) -> &mut Self {
        debug_assert!(s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\'));
        put(self.buf, s.as_bytes());
        self
    }

    /// A string value known to need no escaping (validated ids, enum names).
    pub(crate) fn ascii_str(&mut self, s: &str) -> &mut Self {
        debug_assert!(s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\'));
        self.buf.put_u8(b'"');
        put(self.buf, s.as_bytes());
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
        if is_plain(s.as_bytes()) {
            self.buf.put_u8(b'"');
            put(self.buf, s.as_bytes());
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
        put(self.buf, b.format(v).as_bytes());
        self.comma = true;
        self
    }

    /// A timestamp (an integer): the digits of the last one this thread
    /// wrote are reused when it repeats (0, an unset time, is not kept).
    pub(crate) fn time(&mut self, ms: i64) -> &mut Self {
        let last = LAST_TIME.with(std::cell::Cell::get);
        if last.ms == ms && last.len > 0 {
            put(self.buf, &last.digits[..usize::from(last.len).min(20)]);
        } else {
            let mut b = itoa::Buffer::new();
            let text = b.format(ms).as_bytes();
            put(self.buf, text);
            if ms != 0 {
                let mut t = LastTime {
                    ms,
                    len: 0,
                    digits: [0; 20],
                };
                if let Some(d) = t.digits.get_mut(..text.len()) {
                    d.copy_from_slice(text);
                    t.len = text.len() as u8;
                    LAST_TIME.with(|c| c.set(t));
                }
            }
        }
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
        put(self.buf, v);
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
    fn put_copies_every_length() {
        let src: Vec<u8> = (0..80u8).map(|i| b'a' + i % 26).collect();
        for n in 0..=80 {
            let mut buf = BytesMut::new();
            buf.put_slice(b"<");
            put(&mut buf, &src[..n]);
            put(&mut buf, b">");
            assert_eq!(&buf[1..=n], &src[..n]);
            assert_eq!(buf.len(), n + 2);
            assert_eq!(buf[n + 1], b'>');
        }
    }

    #[test]
    fn is_plain_matches_the_byte_test() {
        let naive = |s: &[u8]| s.iter().all(|&b| b >= 0x20 && b != b'"' && b != b'\\');
        // Every byte value at every position of a 17-byte string.
        for pos in 0..17 {
            for b in 0..=255u8 {
                let mut s = vec![b'x'; 17];
                s[pos] = b;
                assert_eq!(is_plain(&s), naive(&s), "byte {b:#x} at {pos}");
                assert_eq!(is_plain(&s[pos..]), naive(&s[pos..]));
            }
        }
        // Neighbours that could borrow into each other.
        for (a, b) in [
            (0x1f, 0x20),
            (0x20, 0x1f),
            (0x00, 0xff),
            (0x21, 0x22),
            (0x5b, 0x5c),
        ] {
            let s = [b'y', a, b, b'y', b'y', b'y', b'y', b'y'];
            assert_eq!(is_plain(&s), naive(&s), "{a:#x} {b:#x}");
        }
        assert!(is_plain("ünïcode and plain text".as_bytes()));
    }

    #[test]
    fn time_repeats_are_written_again() {
        let mut buf = BytesMut::new();
        let mut o = JsonOut::new(&mut buf);
        o.begin_arr();
        for ms in [
            1_795_934_562_089i64,
            1_795_934_562_089,
            -5,
            -5,
            0,
            i64::MIN,
            i64::MIN,
        ] {
            o.elem().time(ms);
        }
        o.end_arr();
        assert_eq!(
            std::str::from_utf8(&buf).unwrap(),
            "[1795934562089,1795934562089,-5,-5,0,-9223372036854775808,-9223372036854775808]"
        );
    }

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
