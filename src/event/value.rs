//! Caller values as JSON bytes, produced before any trace lock is taken.
//!
//! Inputs, outputs, metadata, space values, log data and log text are
//! serialized on the caller's thread and kept as a [`Val`]: up to
//! [`INLINE`] bytes inline (most values: numbers, short strings, one-field
//! objects, log lines), longer ones as shared [`Bytes`] carved out of a
//! per-thread arena. The trace stores and snapshots them by copy or
//! reference count, events point at them, and nothing is re-serialized or
//! deep-copied under the lock. A short value costs no atomic operation and
//! no allocation; an arena chunk is reused once every value carved from it
//! is gone, so steady-state recording allocates nothing.

use std::cell::RefCell;

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;

use super::json::copy_to;
use crate::error::{Error, Result};

/// Size of a fresh per-thread chunk.
const CHUNK: usize = 16 * 1024;
/// A chunk that grew beyond this (one huge value) is not kept.
const KEEP: usize = 256 * 1024;
/// Longest value kept inline.
pub(crate) const INLINE: usize = 23;

/// The bytes of one caller value (JSON, or text): inline when short.
#[derive(Clone)]
pub(crate) enum Val {
    /// `len` bytes of `buf`.
    Inline { len: u8, buf: [u8; INLINE] },
    /// A slice of a shared arena chunk.
    Shared(Bytes),
}

impl Default for Val {
    fn default() -> Self {
        Val::Inline {
            len: 0,
            buf: [0; INLINE],
        }
    }
}

impl std::ops::Deref for Val {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        match self {
            Val::Inline { len, buf } => &buf[..*len as usize],
            Val::Shared(b) => b,
        }
    }
}

impl std::fmt::Debug for Val {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self))
    }
}

impl PartialEq for Val {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Val {
    /// Whether it refers to shared bytes (an inline value owns no memory).
    #[inline]
    pub(crate) fn is_shared(&self) -> bool {
        matches!(self, Val::Shared(_))
    }

    /// `b` kept inline (at most [`INLINE`] bytes).
    #[inline]
    fn inline(b: &[u8]) -> Val {
        let mut buf = [0; INLINE];
        copy_short(&mut buf[..b.len()], b);
        Val::Inline {
            len: b.len() as u8,
            buf,
        }
    }
}

/// Copies `src` over `dst` (the same length) without a `memcpy` call for
/// the few bytes of an inline value's pieces (see [`copy_to`]).
#[inline(always)]
fn copy_short(dst: &mut [u8], src: &[u8]) {
    assert_eq!(dst.len(), src.len());
    // SAFETY: `dst` is writable for `src.len()` bytes (checked above) and,
    // being an exclusive borrow, does not overlap `src`.
    unsafe { copy_to(dst.as_mut_ptr(), src) }
}

/// A writer into an inline value's bytes: refuses what does not fit, so
/// that a short value never touches the per-thread arena.
struct InlineWriter<'a> {
    len: usize,
    buf: &'a mut [u8; INLINE],
}

impl std::io::Write for InlineWriter<'_> {
    #[inline]
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.write_all(b).map(|()| b.len())
    }

    #[inline]
    fn write_all(&mut self, b: &[u8]) -> std::io::Result<()> {
        let end = self.len + b.len();
        if end > INLINE {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        copy_short(&mut self.buf[self.len..end], b);
        self.len = end;
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

thread_local! {
    static ARENA: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// Writes one value into the per-thread arena with `f` and keeps it: inline
/// when short (the arena's bytes are then reused), else split off shared.
fn with_arena<R>(f: impl FnOnce(&mut BytesMut) -> R) -> (Val, R) {
    ARENA.with(|a| {
        let mut arena = a.borrow_mut();
        if arena.capacity() - arena.len() < 256 {
            if !arena.is_empty() {
                drop(arena.split());
            }
            // Takes the chunk back when every value carved from it is gone.
            arena.reserve(CHUNK);
        }
        let start = arena.len();
        let r = f(&mut arena);
        let n = arena.len() - start;
        let val = if n <= INLINE {
            let v = Val::inline(&arena[start..]);
            arena.truncate(start);
            v
        } else {
            if start > 0 {
                // Bytes an earlier split left behind: not part of this value.
                drop(arena.split_to(start));
            }
            Val::Shared(arena.split().freeze())
        };
        if arena.capacity() > KEEP {
            *arena = BytesMut::new();
        }
        (val, r)
    })
}

/// A caller value as JSON.
///
/// # Errors
/// [`Error::InvalidValue`] when it does not serialize to JSON (e.g. a map
/// with non-string keys).
pub(crate) fn json<T: Serialize + ?Sized>(v: &T) -> Result<Val> {
    let mut val = Val::default();
    json_into(&mut val, v)?;
    Ok(val)
}

/// [`json`] written into `dst` where it lies. Most values (numbers, short
/// strings, one-field objects) fit inline: their bytes are written straight
/// into `dst`'s inline buffer, not into a buffer of their own that is then
/// moved into place (a move reads the bytes back wider than they were
/// written, piece by piece, which stalls the CPU until its stores drain;
/// read under the trace's lock, after its atomic instruction, they cost
/// nothing). A longer value stops at the first piece that does not fit (the
/// writer's error) and is written again into the arena.
///
/// # Errors
/// As [`json`] (`dst` is then left empty).
pub(crate) fn json_into<T: Serialize + ?Sized>(dst: &mut Val, v: &T) -> Result<()> {
    *dst = Val::default();
    if let Val::Inline { len, buf } = dst {
        let mut w = InlineWriter { len: 0, buf };
        match serde_json::to_writer(&mut w, v) {
            Ok(()) => {
                *len = w.len as u8;
                return Ok(());
            }
            Err(e) if e.is_io() => {}
            Err(_) => return Err(Error::InvalidValue),
        }
    }
    let (val, r) = with_arena(|arena| serde_json::to_writer(arena.writer(), v));
    match r {
        Ok(()) => {
            *dst = val;
            Ok(())
        }
        Err(_) => Err(Error::InvalidValue),
    }
}

/// A caller value as JSON, `None` for `null` (absent input or output).
///
/// # Errors
/// As [`json`].
pub(crate) fn json_opt<T: Serialize + ?Sized>(v: &T) -> Result<Option<Val>> {
    let mut val = None;
    json_opt_into(&mut val, v)?;
    Ok(val)
}

/// [`json_opt`] written into `dst` where it lies (see [`json_into`]).
///
/// # Errors
/// As [`json`].
#[inline]
pub(crate) fn json_opt_into<T: Serialize + ?Sized>(dst: &mut Option<Val>, v: &T) -> Result<()> {
    let val = dst.insert(Val::default());
    json_into(val, v)?;
    // The length first: the bytes of any other inline value are not read
    // back here (see `json_into`).
    if val.len() == 4 && **val == *b"null" {
        *dst = None;
    }
    Ok(())
}

/// JSON written by `f` (payloads encoded when their event happens).
pub(crate) fn write(f: impl FnOnce(&mut super::json::JsonOut<'_, BytesMut>)) -> Val {
    with_arena(|arena| f(&mut super::json::JsonOut::new(arena))).0
}

/// Text copied as is (log messages): `parts` concatenated.
pub(crate) fn text(parts: &[&str]) -> Val {
    if let [p] = parts
        && p.len() <= INLINE
    {
        return Val::inline(p.as_bytes());
    }
    with_arena(|arena| {
        for p in parts {
            arena.put_slice(p.as_bytes());
        }
    })
    .0
}

/// The text of a log line on its way into the line's record under the
/// trace lock. Short text (at most [`INLINE`] bytes) is copied straight
/// into the record's inline bytes there: no value is assembled before the
/// lock and then copied along, which would read freshly written bytes back
/// wider than they were written. Longer text was made shared bytes before
/// the lock (`long`).
#[derive(Debug)]
pub(crate) struct LogText<'a> {
    short: &'a str,
    long: Option<Val>,
}

impl<'a> LogText<'a> {
    /// Text from the caller (made shared bytes now if long).
    #[inline]
    pub(crate) fn new(text: &'a str) -> LogText<'a> {
        LogText {
            short: text,
            long: (text.len() > INLINE).then(|| self::text(&[text])),
        }
    }

    /// Text already made a value.
    pub(crate) fn of_val(v: Val) -> LogText<'static> {
        LogText {
            short: "",
            long: Some(v),
        }
    }

    /// Its length in bytes.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.long.as_ref().map_or(self.short.len(), |v| v.len())
    }

    /// Whether it is stored as shared bytes (not inline).
    #[inline]
    pub(crate) fn is_shared(&self) -> bool {
        self.long.is_some()
    }

    /// Stores the text in `dst`, an empty inline value of a record just
    /// built in place (`Val::default()`); `last`: this is the text's last
    /// use (a long text moves instead of being shared again).
    #[inline(always)]
    pub(crate) fn store(&mut self, dst: &mut Val, last: bool) {
        match &mut self.long {
            Some(v) if last => *dst = std::mem::take(v),
            Some(v) => *dst = v.clone(),
            None => {
                if let Val::Inline { len, buf } = dst {
                    let b = self.short.as_bytes();
                    copy_short(&mut buf[..b.len()], b);
                    *len = b.len() as u8;
                }
            }
        }
    }
}

/// The text of a value made by [`text`] (valid UTF-8 by construction).
pub(crate) fn as_str(b: &[u8]) -> &str {
    std::str::from_utf8(b).unwrap_or_default()
}

/// Decodes stored JSON bytes back into a value (snapshots, documents).
pub(crate) fn decode(b: &[u8]) -> serde_json::Value {
    serde_json::from_slice(b).unwrap_or(serde_json::Value::Null)
}

/// A JSON object kept as its entries' encoded keys and values plus the
/// encoded object itself (node metadata): setting a key re-joins the bytes
/// (no serialization: keys and values were serialized before the trace's
/// lock), and an event or snapshot shares the object.
#[derive(Debug, Clone, Default)]
pub(crate) struct JsonMap {
    entries: Vec<MapEntry>,
    object: Option<Val>,
}

/// One key of a [`JsonMap`]: the key, the key as a JSON string, the value.
#[derive(Debug, Clone)]
struct MapEntry {
    key: String,
    key_json: Val,
    value: Val,
}

/// A metadata key as a JSON string, serialized before the trace's lock.
pub(crate) fn key_json(key: &str) -> Val {
    // A `str` always serializes.
    json(key).unwrap_or_default()
}

impl JsonMap {
    /// Encodes a caller map.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] when a value does not serialize.
    #[inline]
    pub(crate) fn from_map(m: &serde_json::Map<String, serde_json::Value>) -> Result<JsonMap> {
        // Most nodes have no metadata: built in place, no call.
        if m.is_empty() {
            return Ok(JsonMap::default());
        }
        JsonMap::encode(m)
    }

    fn encode(m: &serde_json::Map<String, serde_json::Value>) -> Result<JsonMap> {
        let mut map = JsonMap::default();
        map.entries.reserve(m.len());
        for (k, v) in m {
            map.entries.push(MapEntry {
                key: k.clone(),
                key_json: key_json(k),
                value: json(v)?,
            });
        }
        map.join();
        Ok(map)
    }

    /// Sets `key` (a new key goes last; an existing one keeps its place);
    /// `key_json` is [`key_json`]`(key)`.
    pub(crate) fn insert(&mut self, key: &str, key_json: &Val, value: Val) {
        match self.entries.iter_mut().find(|e| e.key == key) {
            Some(e) => e.value = value,
            None => self.entries.push(MapEntry {
                key: key.to_owned(),
                key_json: key_json.clone(),
                value,
            }),
        }
        self.join();
    }

    fn join(&mut self) {
        self.object = (!self.entries.is_empty()).then(|| {
            with_arena(|arena| {
                arena.put_u8(b'{');
                for (i, e) in self.entries.iter().enumerate() {
                    if i > 0 {
                        arena.put_u8(b',');
                    }
                    arena.put_slice(&e.key_json);
                    arena.put_u8(b':');
                    arena.put_slice(&e.value);
                }
                arena.put_u8(b'}');
            })
            .0
        });
    }

    /// The encoded object, `None` when empty.
    pub(crate) fn object(&self) -> Option<&Val> {
        self.object.as_ref()
    }

    /// Whether there are no keys.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Decodes the object (snapshots).
    pub(crate) fn to_map(&self) -> serde_json::Map<String, serde_json::Value> {
        self.entries
            .iter()
            .map(|e| (e.key.clone(), decode(&e.value)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn short_copies_copy_every_length_exactly() {
        let src: Vec<u8> = (1..=40).collect();
        for n in 0..=40 {
            let mut dst = [0u8; 40];
            copy_short(&mut dst[..n], &src[..n]);
            assert_eq!(&dst[..n], &src[..n], "length {n}");
            assert!(dst[n..].iter().all(|&b| b == 0), "length {n}: wrote past");
        }
    }

    #[test]
    fn values_round_trip_and_null_is_absent() {
        let v = json(&json!({"k": [1, "two", null]})).unwrap();
        assert_eq!(&v[..], br#"{"k":[1,"two",null]}"#);
        assert_eq!(decode(&v), json!({"k": [1, "two", null]}));
        assert!(json_opt(&serde_json::Value::Null).unwrap().is_none());
        assert_eq!(&json_opt("x").unwrap().unwrap()[..], br#""x""#);
        assert_eq!(
            as_str(&text(&["Node failed: ", "boom"])),
            "Node failed: boom"
        );
    }

    #[test]
    fn json_maps_keep_insertion_order_and_rejoin() {
        let mut src = serde_json::Map::new();
        src.insert("b".into(), json!(1));
        src.insert("a\"q".into(), json!({"x": [true]}));
        let mut m = JsonMap::from_map(&src).unwrap();
        assert_eq!(&m.object().unwrap()[..], br#"{"b":1,"a\"q":{"x":[true]}}"#);
        m.insert("b", &key_json("b"), json(&"two").unwrap());
        m.insert("c", &key_json("c"), json(&serde_json::Value::Null).unwrap());
        // A key that needs escaping, set later: escaped once, before the lock.
        let key = "line\nbreak \"quoted\" \u{1}";
        m.insert(key, &key_json(key), json(&2).unwrap());
        assert_eq!(
            decode(m.object().unwrap()),
            json!({"b": "two", "a\"q": {"x": [true]}, "c": null, key: 2})
        );
        assert_eq!(
            m.to_map().keys().collect::<Vec<_>>(),
            ["b", "a\"q", "c", key]
        );
        // Byte for byte serde_json's compact form.
        assert_eq!(
            &m.object().unwrap()[..],
            serde_json::to_vec(&m.to_map()).unwrap().as_slice()
        );
    }

    #[test]
    fn values_at_the_inline_boundary_are_whole_either_way() {
        // Strings whose JSON is 21..=26 bytes: inline up to INLINE bytes,
        // then written again into the arena after the inline writer refused.
        for n in 19..=24 {
            let s = "x".repeat(n);
            let v = json(&s).unwrap();
            assert_eq!(v.len(), n + 2);
            assert_eq!(matches!(v, Val::Inline { .. }), n + 2 <= INLINE);
            assert_eq!(decode(&v), serde_json::Value::String(s.clone()));
            let t = text(&[&s]);
            assert_eq!(as_str(&t), s);
            assert_eq!(matches!(t, Val::Inline { .. }), n <= INLINE);
        }
        // A long value refused early, and a map whose bad key comes after
        // more than INLINE bytes: the error is still InvalidValue.
        let long = json!({"k": "y".repeat(1000), "n": [1, 2, 3]});
        assert_eq!(decode(&json(&long).unwrap()), long);
        let mut bad = std::collections::BTreeMap::new();
        bad.insert(vec![0u8], 1);
        assert!(matches!(
            json(&("y".repeat(40), bad)),
            Err(Error::InvalidValue)
        ));
    }

    #[test]
    fn a_value_that_does_not_serialize_is_an_error() {
        let mut m = std::collections::HashMap::new();
        m.insert(vec![1u8], 1);
        assert!(matches!(json(&m), Err(Error::InvalidValue)));
        // The arena is still usable.
        assert_eq!(&json(&1).unwrap()[..], b"1");
    }
}
