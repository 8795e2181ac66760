//! A minimal JSON writer for event payloads, straight into a trace's byte arena.
//!
//! Keys are `'static` and known to need no escaping, so they are written as
//! raw bytes; strings take a fast path when they need no escaping (checked
//! eight bytes at a time); caller values arrive as JSON bytes, serialized
//! by serde_json before the trace's lock was taken. Output is identical to
//! serde_json's compact form.
//!
//! [`JsonOut`] keeps the buffer's write position and capacity in its own
//! fields and writes through a raw pointer, so a piece costs one capacity
//! comparison and no update of the buffer itself; the buffer's length is
//! set once, when the writer is dropped (or before serde_json writes into
//! it). Numbers reserve their longest form once and are written in place.
//! Pieces of up to 32 bytes are copied inline rather than through a
//! `memcpy` call, and a timestamp that repeats ([`JsonOut::time`]: the
//! envelope's and a node's times, and consecutive events, are usually the
//! same millisecond) is formatted once per thread.

use std::cell::Cell;

use bytes::{BufMut, BytesMut};
#[cfg(test)]
use serde_json::Value;

use super::wire_buf::WireArena;

/// A buffer a [`JsonOut`] writes into: the event log's [`WireArena`], or a
/// `BytesMut` (caller values).
pub(crate) trait OutBuf {
    /// Where the buffer's bytes start.
    fn as_mut_ptr(&mut self) -> *mut u8;
    /// Bytes in the buffer.
    fn len(&self) -> usize;
    /// Bytes the buffer has room for from its start.
    fn capacity(&self) -> usize;
    /// Sets the length.
    ///
    /// # Safety
    /// `len <= capacity()`, and the first `len` bytes are initialized.
    unsafe fn set_len(&mut self, len: usize);
    /// Makes room for `n` more bytes.
    fn reserve(&mut self, n: usize);
    /// Appends `s`.
    fn append(&mut self, s: &[u8]);
}

impl OutBuf for BytesMut {
    #[inline(always)]
    fn as_mut_ptr(&mut self) -> *mut u8 {
        <[u8]>::as_mut_ptr(self)
    }
    #[inline(always)]
    fn len(&self) -> usize {
        BytesMut::len(self)
    }
    #[inline(always)]
    fn capacity(&self) -> usize {
        BytesMut::capacity(self)
    }
    #[inline(always)]
    unsafe fn set_len(&mut self, len: usize) {
        // SAFETY: the caller's.
        unsafe { BytesMut::set_len(self, len) }
    }
    fn reserve(&mut self, n: usize) {
        BytesMut::reserve(self, n);
    }
    fn append(&mut self, s: &[u8]) {
        BufMut::put_slice(self, s);
    }
}

impl OutBuf for WireArena {
    #[inline(always)]
    fn as_mut_ptr(&mut self) -> *mut u8 {
        WireArena::as_mut_ptr(self)
    }
    #[inline(always)]
    fn len(&self) -> usize {
        WireArena::len(self)
    }
    #[inline(always)]
    fn capacity(&self) -> usize {
        WireArena::capacity(self)
    }
    #[inline(always)]
    unsafe fn set_len(&mut self, len: usize) {
        // SAFETY: the caller's.
        unsafe { WireArena::set_len(self, len) }
    }
    fn reserve(&mut self, n: usize) {
        WireArena::reserve(self, n);
    }
    fn append(&mut self, s: &[u8]) {
        self.extend_from_slice(s);
    }
}

/// An [`OutBuf`] as an `io::Write` (for serde_json).
struct Writer<'a, B: OutBuf>(&'a mut B);

impl<B: OutBuf> std::io::Write for Writer<'_, B> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.append(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Copies `s` to `dst`; pieces of up to 32 bytes are copied inline (two
/// overlapping loads and stores) instead of through a `memcpy` call.
///
/// # Safety
/// `dst` must be valid for writes of `s.len()` bytes and not overlap `s`.
#[inline(always)]
pub(crate) unsafe fn copy_to(dst: *mut u8, s: &[u8]) {
    let n = s.len();
    let src = s.as_ptr();
    // SAFETY: each pair of (possibly overlapping) copies below reads within
    // `s` and writes within the `n` bytes the caller guarantees at `dst`,
    // covering all of them; `memcpy` gets the same bounds.
    unsafe {
        if n > 32 {
            std::ptr::copy_nonoverlapping(src, dst, n);
        } else if n >= 16 {
            copy_ends::<[u8; 16]>(src, dst, n);
        } else if n >= 8 {
            copy_ends::<u64>(src, dst, n);
        } else if n >= 4 {
            copy_ends::<u32>(src, dst, n);
        } else if n > 0 {
            // 1 to 3 bytes: first, middle and last (some the same byte).
            *dst = *src;
            *dst.add(n / 2) = *src.add(n / 2);
            *dst.add(n - 1) = *src.add(n - 1);
        }
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
#[inline(always)]
pub(crate) fn is_plain(s: &[u8]) -> bool {
    plain_words(s, 0)
}

/// Whether `s` is ASCII and needs no escaping in a JSON string (so it is
/// valid UTF-8 too): [`is_plain`], with any byte of 0x80 and above refused.
#[inline(always)]
pub(crate) fn is_plain_ascii(s: &[u8]) -> bool {
    plain_words(s, HIGH)
}

/// The high bit of every byte of a word.
const HIGH: u64 = 0x8080_8080_8080_8080;

/// Whether any byte of `v` is a control character, `"` or `\\`, or meets
/// `refuse`: each such byte sets its high bit in a mask (a byte below 0x20;
/// a byte equal to `"` or `\\`, which the xor makes zero).
#[inline(always)]
fn word_needs_escape(v: u64, refuse: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let ctl = v.wrapping_sub(ONES * 0x20) & !v & HIGH;
    let q = v ^ (ONES * u64::from(b'"'));
    let q = q.wrapping_sub(ONES) & !q & HIGH;
    let bs = v ^ (ONES * u64::from(b'\\'));
    let bs = bs.wrapping_sub(ONES) & !bs & HIGH;
    ctl | q | bs | (v & refuse) != 0
}

/// [`is_plain`] with the bytes whose bits meet `refuse` refused as well
/// (`0`: none; [`HIGH`]: every non-ASCII byte). Eight bytes at a time, the
/// last eight overlapping the words before them; a shorter string as one
/// word of its bytes (some read twice) padded with spaces. A byte read
/// twice is judged the same way twice.
#[inline(always)]
fn plain_words(s: &[u8], refuse: u64) -> bool {
    let n = s.len();
    let word = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&s[i..i + 8]);
        u64::from_le_bytes(b)
    };
    let half = |i: usize| {
        let mut b = [0u8; 4];
        b.copy_from_slice(&s[i..i + 4]);
        u64::from(u32::from_le_bytes(b))
    };
    if n >= 8 {
        let mut i = 0;
        while i + 8 <= n {
            if word_needs_escape(word(i), refuse) {
                return false;
            }
            i += 8;
        }
        i == n || !word_needs_escape(word(n - 8), refuse)
    } else if n >= 4 {
        !word_needs_escape(half(0) | half(n - 4) << 32, refuse)
    } else if n > 0 {
        let v = u64::from(s[0])
            | u64::from(s[n / 2]) << 8
            | u64::from(s[n - 1]) << 16
            | 0x2020_2020_2000_0000;
        !word_needs_escape(v, refuse)
    } else {
        true
    }
}

/// Two-digit decimal strings `00` to `99`, back to back.
const DIGITS2: &[u8; 200] = b"\
    0001020304050607080910111213141516171819\
    2021222324252627282930313233343536373839\
    4041424344454647484950515253545556575859\
    6061626364656667686970717273747576777879\
    8081828384858687888990919293949596979899";

/// The last timestamp written on this thread: its value, and its digits
/// (`len` of them, at most 16; 0: none kept).
#[derive(Debug, Clone, Copy)]
struct LastTime {
    ms: i64,
    len: usize,
    digits: [u8; 16],
}

thread_local! {
    static LAST_TIME: Cell<LastTime> = const {
        Cell::new(LastTime {
            ms: 0,
            len: 0,
            digits: [0; 16],
        })
    };
}

/// Sets `buf`'s length to `len` (bytes a [`JsonOut`] wrote), runs `f` on
/// it, and returns its memory, length and capacity after. Out of line and
/// taking no `&mut JsonOut`, so that a writer's fields can stay in
/// registers ([`JsonOut::local`]).
#[cold]
#[inline(never)]
fn on_buf<B: OutBuf, R>(
    buf: &mut B,
    len: usize,
    f: impl FnOnce(&mut B) -> R,
) -> (*mut u8, usize, usize, R) {
    // SAFETY: the `JsonOut` that this is called for keeps `len` within the
    // capacity, and its first `len` bytes initialized (its invariants).
    unsafe { buf.set_len(len) };
    let r = f(buf);
    (buf.as_mut_ptr(), buf.len(), buf.capacity(), r)
}

/// Writes `ms`, a timestamp not written last on this thread, at `dst` and
/// keeps its digits (when they take at most 16 bytes); returns how many
/// bytes it wrote.
///
/// # Safety
/// `dst` must be valid for writes of 20 bytes (the most an i64 takes).
#[inline(never)]
unsafe fn new_time(dst: *mut u8, ms: i64) -> usize {
    let mut b = itoa::Buffer::new();
    let text = b.format(ms).as_bytes();
    // SAFETY: the caller's 20 bytes at `dst`; `text` is on this stack.
    unsafe { copy_to(dst, text) };
    let mut t = LastTime {
        ms,
        len: text.len(),
        digits: [0; 16],
    };
    if let Some(d) = t.digits.get_mut(..text.len()) {
        d.copy_from_slice(text);
        LAST_TIME.with(|c| c.set(t));
    }
    text.len()
}

/// A tuple of byte slices that [`JsonOut::pieces`] writes one after the
/// other. A tuple rather than an array: each piece is then its own
/// expression, and a piece of constant length is copied as such.
pub(crate) trait Pieces {
    /// Their lengths added up.
    fn total(&self) -> usize;

    /// Writes them, in order.
    ///
    /// # Safety
    /// `out` must have room for [`Pieces::total`] more bytes.
    unsafe fn write_unchecked<B: OutBuf>(self, out: &mut JsonOut<'_, B>);
}

/// `&[u8]`, once per name it is given (a tuple's element types).
macro_rules! byte_slice {
    ($p:ident) => {
        &[u8]
    };
}

/// [`Pieces`] for tuples of these many slices.
macro_rules! pieces_for_tuples {
    ($($p:ident),+) => {
        impl Pieces for ($(byte_slice!($p),)+) {
            #[inline(always)]
            fn total(&self) -> usize {
                let ($($p,)+) = self;
                // Slices in memory: their lengths add up without overflow.
                0 $(+ $p.len())+
            }

            #[inline(always)]
            unsafe fn write_unchecked<B: OutBuf>(self, out: &mut JsonOut<'_, B>) {
                let ($($p,)+) = self;
                // SAFETY: the caller's room for all of them; each takes
                // its own share of it.
                unsafe { $(out.put_unchecked($p);)+ }
            }
        }
    };
}

pieces_for_tuples!(a, b);
pieces_for_tuples!(a, b, c);
pieces_for_tuples!(a, b, c, d);
pieces_for_tuples!(a, b, c, d, e);
pieces_for_tuples!(a, b, c, d, e, f);
pieces_for_tuples!(a, b, c, d, e, f, g);

/// Writes one JSON value (objects and arrays nested) into a buffer.
///
/// Invariants: `base` is the start of `buf`'s memory, valid for writes of
/// `cap` bytes (`buf`'s capacity); the first `len <= cap` of them are
/// initialized (what `buf` held, then what was written). `buf`'s own length
/// lags behind until [`JsonOut::sync`] (on drop, and before `buf` is used
/// directly).
#[derive(Debug)]
pub(crate) struct JsonOut<'a, B: OutBuf = WireArena> {
    buf: &'a mut B,
    base: *mut u8,
    len: usize,
    cap: usize,
    /// A value was just written at this level: the next key or element
    /// needs a comma first.
    comma: bool,
}

impl<B: OutBuf> Drop for JsonOut<'_, B> {
    fn drop(&mut self) {
        self.sync();
    }
}

impl<'a, B: OutBuf> JsonOut<'a, B> {
    /// A writer appending to `buf`.
    pub(crate) fn new(buf: &'a mut B) -> Self {
        let (base, len, cap) = (buf.as_mut_ptr(), buf.len(), buf.capacity());
        JsonOut {
            buf,
            base,
            len,
            cap,
            comma: false,
        }
    }

    /// Bytes in the buffer (for offsets into what is written).
    #[inline(always)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Sets the buffer's length to what was written.
    #[inline(always)]
    fn sync(&mut self) {
        // SAFETY: `len <= cap`, the buffer's capacity, and the first `len`
        // bytes are initialized (the invariants of `JsonOut`).
        unsafe { self.buf.set_len(self.len) }
    }

    /// Runs `f` on a copy of this writer, then takes its position back.
    ///
    /// A function handed `&mut JsonOut` reads and writes the position
    /// through memory, again after every byte it stores (the compiler
    /// cannot tell that those bytes are not the writer's own fields); the
    /// copy is a local whose address is never taken (no method hands
    /// `&mut self` to a function that is not inlined), so it lives in
    /// registers. `f` must not hand the copy to a function that is not
    /// inlined either (such as [`Source::write_node`]), or it ends up in
    /// memory again.
    ///
    /// [`Source::write_node`]: super::encode::Source::write_node
    #[inline(always)]
    pub(crate) fn local<R>(&mut self, f: impl FnOnce(&mut JsonOut<'_, B>) -> R) -> R {
        let mut w = JsonOut {
            buf: &mut *self.buf,
            base: self.base,
            len: self.len,
            cap: self.cap,
            comma: self.comma,
        };
        let r = f(&mut w);
        (self.base, self.len, self.cap, self.comma) = (w.base, w.len, w.cap, w.comma);
        r
    }

    /// Runs `f` on the buffer itself (lengths in sync), then takes its new
    /// length, capacity and memory.
    #[inline(always)]
    fn with_buf<R>(&mut self, f: impl FnOnce(&mut B) -> R) -> R {
        let (base, len, cap, r) = on_buf(&mut *self.buf, self.len, f);
        (self.base, self.len, self.cap) = (base, len, cap);
        r
    }

    /// Makes room for `n` more bytes.
    #[inline(always)]
    pub(crate) fn reserve(&mut self, n: usize) {
        if n > self.cap - self.len {
            self.with_buf(|b| b.reserve(n));
        }
    }

    /// Appends `s`, for which there is room.
    ///
    /// # Safety
    /// `self.cap - self.len >= s.len()`.
    #[inline(always)]
    unsafe fn put_unchecked(&mut self, s: &[u8]) {
        debug_assert!(self.cap - self.len >= s.len());
        // SAFETY: the caller's room: `len + s.len() <= cap`, so the
        // destination lies within the buffer's memory past what is
        // initialized, which no `&[u8]` (`s`) can point into.
        unsafe { copy_to(self.base.add(self.len), s) };
        self.len += s.len();
    }

    /// Appends one byte, for which there is room.
    ///
    /// # Safety
    /// `self.cap > self.len`.
    #[inline(always)]
    unsafe fn byte_unchecked(&mut self, b: u8) {
        debug_assert!(self.cap > self.len);
        // SAFETY: the caller's room: `len < cap`.
        unsafe { *self.base.add(self.len) = b };
        self.len += 1;
    }

    /// Appends `s`.
    #[inline(always)]
    fn put(&mut self, s: &[u8]) {
        self.reserve(s.len());
        // SAFETY: just reserved.
        unsafe { self.put_unchecked(s) }
    }

    /// Raw pieces one after the other (JSON text the caller made valid:
    /// punctuation, keys, ids known to need no escaping), a tuple of byte
    /// slices, with one reservation for all of them.
    #[inline(always)]
    pub(crate) fn pieces(&mut self, parts: impl Pieces) -> &mut Self {
        self.reserve(parts.total());
        // SAFETY: just reserved room for all of `parts`.
        unsafe { parts.write_unchecked(self) };
        self
    }

    /// Appends one byte.
    #[inline(always)]
    fn byte(&mut self, b: u8) {
        self.reserve(1);
        // SAFETY: just reserved.
        unsafe { self.byte_unchecked(b) }
    }

    /// Appends `"s"`.
    #[inline(always)]
    fn quoted(&mut self, s: &[u8]) {
        self.reserve(s.len() + 2);
        // SAFETY: just reserved room for the quotes and `s`.
        unsafe {
            self.byte_unchecked(b'"');
            self.put_unchecked(s);
            self.byte_unchecked(b'"');
        }
    }

    /// `{`
    #[inline(always)]
    pub(crate) fn begin_obj(&mut self) -> &mut Self {
        self.byte(b'{');
        self.comma = false;
        self
    }

    /// `}`
    #[inline(always)]
    pub(crate) fn end_obj(&mut self) -> &mut Self {
        self.byte(b'}');
        self.comma = true;
        self
    }

    /// `"key":` (with a leading comma when needed). `key` must need no escaping.
    #[inline(always)]
    pub(crate) fn key(&mut self, key: &'static str) -> &mut Self {
        self.reserve(key.len() + 4);
        // SAFETY: just reserved room for a comma, the quotes, the colon and
        // the key.
        unsafe {
            if self.comma {
                self.byte_unchecked(b',');
            }
            self.byte_unchecked(b'"');
            self.put_unchecked(key.as_bytes());
            self.put_unchecked(b"\":");
        }
        self.comma = false;
        self
    }

    /// Raw JSON text (punctuation and keys written together), no separator
    /// logic: the caller writes a complete, valid piece.
    #[inline(always)]
    pub(crate) fn raw(&mut self, text: &'static [u8]) -> &mut Self {
        self.put(text);
        self
    }

    /// Bytes known to need no escaping (validated ids), without quotes.
    #[inline(always)]
    pub(crate) fn ascii(&mut self, s: &str) -> &mut Self {
        debug_assert!(s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\'));
        self.put(s.as_bytes());
        self
    }

    /// A string value known to need no escaping (validated ids, enum names).
    #[inline(always)]
    pub(crate) fn ascii_str(&mut self, s: &str) -> &mut Self {
        debug_assert!(s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\'));
        self.quoted(s.as_bytes());
        self.comma = true;
        self
    }

    /// Marks that a complete value was written with `raw` pieces.
    #[inline(always)]
    pub(crate) fn value_done(&mut self) -> &mut Self {
        self.comma = true;
        self
    }

    /// A string value.
    #[inline(always)]
    pub(crate) fn str(&mut self, s: &str) -> &mut Self {
        if is_plain(s.as_bytes()) {
            self.quoted(s.as_bytes());
        } else {
            self.escaped(s);
        }
        self.comma = true;
        self
    }

    /// A string value from text bytes (a [`super::value::Val`] made by
    /// [`super::value::text`]): as [`JsonOut::str`] of
    /// [`super::value::as_str`] of them (invalid UTF-8 is written as `""`),
    /// without checking UTF-8 when they are plain ASCII.
    #[inline(always)]
    pub(crate) fn text(&mut self, s: &[u8]) -> &mut Self {
        if is_plain_ascii(s) {
            self.quoted(s);
            self.comma = true;
            self
        } else {
            self.str(super::value::as_str(s))
        }
    }

    /// A string that needs escaping, through serde_json.
    #[inline(always)]
    fn escaped(&mut self, s: &str) {
        // serde_json cannot fail on a str written to a buffer.
        self.with_buf(|b| {
            let _ = serde_json::to_writer(Writer(b), s);
        });
    }

    /// An integer value.
    #[inline(always)]
    pub(crate) fn int(&mut self, v: impl itoa::Integer) -> &mut Self {
        self.reserve(40);
        let mut b = itoa::Buffer::new();
        let text = b.format(v).as_bytes();
        // SAFETY: just reserved 40 bytes, the most an integer (i128) takes.
        unsafe { self.put_unchecked(text) };
        self.comma = true;
        self
    }

    /// A signed integer value (as [`JsonOut::int`]; quicker between -99
    /// and 99: durations are mostly 0).
    #[inline(always)]
    pub(crate) fn sint(&mut self, v: i64) -> &mut Self {
        if v < 0 {
            self.reserve(21);
            // SAFETY: just reserved room for the sign and the 20 digits of
            // `uint` (which finds that room there).
            unsafe { self.byte_unchecked(b'-') };
        }
        self.uint(v.unsigned_abs())
    }

    /// An unsigned integer value (as [`JsonOut::int`]; quicker below 100).
    #[inline(always)]
    pub(crate) fn uint(&mut self, v: u64) -> &mut Self {
        self.reserve(20);
        if v < 100 {
            // SAFETY: just reserved 20 bytes; this writes 1 or 2 (`v < 100`
            // indexes the table within its 200 bytes).
            unsafe {
                let d = DIGITS2.as_ptr().add(2 * v as usize);
                if v < 10 {
                    self.byte_unchecked(*d.add(1));
                } else {
                    self.put_unchecked(&*d.cast::<[u8; 2]>());
                }
            }
        } else {
            let mut b = itoa::Buffer::new();
            let text = b.format(v).as_bytes();
            // SAFETY: just reserved 20 bytes, the most digits of a u64.
            unsafe { self.put_unchecked(text) };
        }
        self.comma = true;
        self
    }

    /// A timestamp (an integer): the digits of the last one this thread
    /// wrote are reused when it repeats (0, an unset time, is not kept).
    #[inline(always)]
    pub(crate) fn time(&mut self, ms: i64) -> &mut Self {
        self.reserve(20);
        if ms == 0 {
            // SAFETY: just reserved 20 bytes.
            unsafe { self.byte_unchecked(b'0') };
            self.comma = true;
            return self;
        }
        // `ms` is not 0: the initial `LastTime` (0) does not match it.
        let last = LAST_TIME.with(Cell::get);
        if last.ms == ms {
            // SAFETY: just reserved 20 bytes: all 16 bytes of `digits` fit
            // (those past `len` are written but not taken in), and
            // `last.len <= 16`.
            unsafe {
                self.base
                    .add(self.len)
                    .cast::<[u8; 16]>()
                    .write_unaligned(last.digits);
            }
            self.len += last.len.min(16);
        } else {
            // SAFETY: just reserved 20 bytes, the most an i64 takes.
            self.len += unsafe { new_time(self.base.add(self.len), ms) };
        }
        self.comma = true;
        self
    }

    /// A value already serialized as JSON (a caller value stored as bytes).
    #[inline(always)]
    pub(crate) fn json(&mut self, v: &[u8]) -> &mut Self {
        self.put(v);
        self.comma = true;
        self
    }

    /// A caller map, through serde_json (tests: payloads take caller values
    /// as bytes serialized before the lock, through [`json`](Self::json)).
    #[cfg(test)]
    pub(crate) fn map(&mut self, m: &serde_json::Map<String, Value>) -> &mut Self {
        self.with_buf(|b| {
            let _ = serde_json::to_writer(Writer(b), m);
        });
        self.comma = true;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn text_of(buf: &BytesMut) -> &str {
        std::str::from_utf8(buf).unwrap()
    }

    #[test]
    fn put_copies_every_length() {
        let src: Vec<u8> = (0..80u8).map(|i| b'a' + i % 26).collect();
        for n in 0..=80 {
            let mut buf = BytesMut::new();
            buf.put_slice(b"<");
            {
                let mut o = JsonOut::new(&mut buf);
                o.json(&src[..n]).raw(b">");
                assert_eq!(o.len(), n + 2);
            }
            assert_eq!(&buf[1..=n], &src[..n]);
            assert_eq!(buf.len(), n + 2);
            assert_eq!(buf[n + 1], b'>');
        }
    }

    #[test]
    fn grows_from_nothing_and_around_serde_json() {
        // An empty buffer, a buffer split down to a few bytes of room, and
        // one with plenty: every piece kind, growing at every step.
        let map = json!({"k": [1, 2.5, null], "s": "t\"u"});
        let map = map.as_object().unwrap();
        let long = "x".repeat(300);
        let mut want = String::new();
        for i in 0..50 {
            want.push_str(&format!(
                "{{\"a\":\"{long}\",\"b\":\"e\\\"s\\n\",\"c\":{i},\"d\":{},\"e\":{},\"m\":{},\"t\":[true,false],\"id\":\"abc\"}}",
                -i,
                1_700_000_000_000i64 + i,
                serde_json::to_string(map).unwrap()
            ));
        }
        for room in [0usize, 3, 64, 100_000] {
            let mut buf = BytesMut::with_capacity(room + 8);
            buf.put_slice(b"12345678");
            drop(buf.split());
            let mut o = JsonOut::new(&mut buf);
            for i in 0..50i64 {
                o.begin_obj();
                o.key("a").str(&long);
                o.key("b").str("e\"s\n");
                o.key("c").uint(i as u64);
                o.key("d").int(-i);
                o.key("e").time(1_700_000_000_000 + i);
                o.key("m").map(map);
                o.key("t").raw(b"[true,false]").value_done();
                o.key("id").ascii_str("abc");
                o.end_obj();
            }
            assert_eq!(o.len(), want.len());
            drop(o);
            assert_eq!(text_of(&buf), want, "room {room}");
        }
    }

    #[test]
    fn writes_into_a_wire_arena_across_chunks() {
        // The event log's arena: the same output as into a `BytesMut`, also
        // when the event in progress moves to a fresh chunk (an event split
        // off before holds the old one) at every piece kind.
        let map = json!({"k": [1, 2.5, null], "s": "t\"u"});
        let map = map.as_object().unwrap();
        let long = "y".repeat(700);
        fn write<B: OutBuf>(
            o: &mut JsonOut<'_, B>,
            long: &str,
            map: &serde_json::Map<String, Value>,
        ) {
            for i in 0..40i64 {
                o.begin_obj();
                o.key("a").str(long);
                o.key("b").str("e\"s\n");
                o.key("d").int(-i);
                o.key("e").time(1_700_000_000_000 + i);
                o.key("m").map(map);
                o.key("id").ascii_str("abc");
                o.end_obj();
            }
        }
        let mut want = BytesMut::new();
        write(&mut JsonOut::new(&mut want), &long, map);
        for room in [0usize, 1, 5, 30, 1000] {
            let mut arena = WireArena::new();
            arena.reserve(1);
            let fill = arena.capacity() - room;
            arena.extend_from_slice(&vec![b'#'; fill]);
            let held = arena.split();
            write(&mut JsonOut::new(&mut arena), &long, map);
            let got = arena.split();
            assert_eq!(&got[..], &want[..], "room {room}");
            assert!(held.iter().all(|&b| b == b'#') && held.len() == fill);
        }
    }

    #[test]
    fn numbers_match_their_decimal_form() {
        let mut vals: Vec<u64> = (0..=1000).collect();
        for p in 0..20 {
            let x = 10u64.pow(p);
            vals.extend([x - 1, x, x + 1]);
        }
        vals.extend([u64::MAX, u64::MAX - 1, i64::MAX as u64]);
        for v in vals {
            let mut buf = BytesMut::new();
            JsonOut::new(&mut buf).uint(v);
            assert_eq!(text_of(&buf), v.to_string());
            let s = v as i64;
            let mut buf = BytesMut::new();
            JsonOut::new(&mut buf)
                .int(s)
                .raw(b",")
                .int(s.wrapping_neg())
                .raw(b",")
                .sint(s)
                .raw(b",")
                .sint(s.wrapping_neg());
            let n = s.wrapping_neg();
            assert_eq!(text_of(&buf), format!("{s},{n},{s},{n}"));
        }
        let mut buf = BytesMut::new();
        JsonOut::new(&mut buf)
            .sint(i64::MIN)
            .raw(b",")
            .int(u128::MAX)
            .raw(b",")
            .int(i128::MIN);
        assert_eq!(
            text_of(&buf),
            format!("{},{},{}", i64::MIN, u128::MAX, i128::MIN)
        );
    }

    #[test]
    fn is_plain_matches_the_byte_test() {
        let naive = |s: &[u8]| s.iter().all(|&b| b >= 0x20 && b != b'"' && b != b'\\');
        let naive_ascii = |s: &[u8]| naive(s) && s.is_ascii();
        // Every byte value at every position of a 17-byte string.
        for pos in 0..17 {
            for b in 0..=255u8 {
                let mut s = vec![b'x'; 17];
                s[pos] = b;
                assert_eq!(is_plain(&s), naive(&s), "byte {b:#x} at {pos}");
                assert_eq!(is_plain(&s[pos..]), naive(&s[pos..]));
                assert_eq!(is_plain_ascii(&s), naive_ascii(&s), "byte {b:#x} at {pos}");
                assert_eq!(is_plain_ascii(&s[pos..]), naive_ascii(&s[pos..]));
            }
        }
        // Neighbours that could borrow into each other.
        for (a, b) in [
            (0x1f, 0x20),
            (0x20, 0x1f),
            (0x00, 0xff),
            (0x21, 0x22),
            (0x5b, 0x5c),
            (0x7f, 0x80),
        ] {
            let s = [b'y', a, b, b'y', b'y', b'y', b'y', b'y'];
            assert_eq!(is_plain(&s), naive(&s), "{a:#x} {b:#x}");
            assert_eq!(is_plain_ascii(&s), naive_ascii(&s), "{a:#x} {b:#x}");
        }
        assert!(is_plain("ünïcode and plain text".as_bytes()));
        assert!(!is_plain_ascii("ünïcode and plain text".as_bytes()));
        assert!(is_plain_ascii(b"plain \x7f text"));
    }

    #[test]
    fn is_plain_at_every_length_and_position() {
        // The short forms (one padded word, two overlapping halves) and the
        // overlapping last word: a byte at each position of each length.
        let naive = |s: &[u8]| s.iter().all(|&b| b >= 0x20 && b != b'"' && b != b'\\');
        for len in 0..=25 {
            assert!(is_plain(&vec![b'a'; len]));
            assert!(is_plain_ascii(&vec![b'a'; len]));
            for pos in 0..len {
                for b in [0x00, 0x1f, 0x20, b'"', b'\\', b'a', 0x7f, 0x80, 0xc3, 0xff] {
                    let mut s = vec![b'a'; len];
                    s[pos] = b;
                    assert_eq!(is_plain(&s), naive(&s), "{b:#x} at {pos} of {len}");
                    assert_eq!(
                        is_plain_ascii(&s),
                        naive(&s) && s.is_ascii(),
                        "{b:#x} at {pos} of {len}"
                    );
                }
            }
        }
    }

    #[test]
    fn pieces_write_in_order() {
        let long = [b'z'; 70];
        let mut buf = BytesMut::new();
        JsonOut::new(&mut buf)
            .pieces((b"[".as_slice(), b"".as_slice()))
            .pieces((b"\"".as_slice(), long.as_slice(), b"\",".as_slice()))
            .pieces((
                b"1".as_slice(),
                b",".as_slice(),
                b"22".as_slice(),
                b",".as_slice(),
                b"333".as_slice(),
                b",".as_slice(),
                b"4444]".as_slice(),
            ));
        let want = format!("[\"{}\",1,22,333,4444]", "z".repeat(70));
        assert_eq!(text_of(&buf), want);
    }

    #[test]
    fn text_is_str_of_the_text() {
        let long = "y".repeat(70);
        let cases: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"plain".to_vec(),
            long.clone().into_bytes(),
            format!("{long}\"{long}").into_bytes(),
            "ünïcode 😀 \u{2028}".as_bytes().to_vec(),
            b"ctl \x00 \x1f \x7f tab\t".to_vec(),
            b"bad utf-8 \xff\xfe".to_vec(),
            b"\xc3".to_vec(),
        ];
        for c in cases {
            let mut buf = BytesMut::new();
            JsonOut::new(&mut buf).text(&c);
            let want = serde_json::to_string(super::super::value::as_str(&c)).unwrap();
            assert_eq!(text_of(&buf), want);
        }
    }

    #[test]
    fn time_repeats_are_written_again() {
        let mut buf = BytesMut::new();
        let mut o = JsonOut::new(&mut buf);
        o.raw(b"[");
        for (i, ms) in [
            1_795_934_562_089i64,
            1_795_934_562_089,
            -5,
            -5,
            0,
            0,
            i64::MIN,
            i64::MIN,
            9_999_999_999_999_999,
            9_999_999_999_999_999,
            10_000_000_000_000_000,
            10_000_000_000_000_000,
            1_795_934_562_090,
        ]
        .into_iter()
        .enumerate()
        {
            if i > 0 {
                o.raw(b",");
            }
            o.time(ms);
        }
        o.raw(b"]");
        drop(o);
        assert_eq!(
            text_of(&buf),
            "[1795934562089,1795934562089,-5,-5,0,0,-9223372036854775808,-9223372036854775808,\
             9999999999999999,9999999999999999,10000000000000000,10000000000000000,1795934562090]"
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
        o.key("d").raw(b"[").str("x").raw(b",");
        o.begin_obj().key("n").raw(b"true").value_done().end_obj();
        o.raw(b"]").value_done();
        o.key("e")
            .map(json!({"k": [1, 2.5, null], "s": "t"}).as_object().unwrap());
        o.key("f").json(b"null");
        o.key("g").ascii_str("id_1");
        o.key("h").text("tëxt \u{1}".as_bytes());
        o.end_obj();
        drop(o);
        let got: Value = serde_json::from_slice(&buf).unwrap();
        let want = json!({
            "a": "plain",
            "b": "needs \"escaping\"\n\\ and ünïcode",
            "c": -42,
            "d": ["x", {"n": true}],
            "e": {"k": [1, 2.5, null], "s": "t"},
            "f": null,
            "g": "id_1",
            "h": "tëxt \u{1}"
        });
        assert_eq!(got, want);
        assert_eq!(text_of(&buf), serde_json::to_string(&want).unwrap());
    }
}
