//! Identifiers: trace ids (validated, stored inline), node and space ids
//! (12 characters of `[0-9a-z]`), id generation and the millisecond clock.
//!
//! Ids are kept in fixed-size inline buffers so that creating a trace or a
//! node allocates nothing: a trace id is at most 64 bytes, a node id exactly 12.

use std::fmt;
use std::hash::{Hash, Hasher};

use crate::error::{Error, Result};

/// Longest accepted trace id.
pub(crate) const MAX_TRACE_ID_LEN: usize = 64;

/// A validated trace id (`^[0-9A-Za-z_-]{1,64}$`), stored inline.
///
/// Aligned to 8 bytes, with the length last, so that moving one (into the
/// registry, a handle) is a few wide copies rather than byte-wise ones.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub(crate) struct TraceId {
    buf: [u8; MAX_TRACE_ID_LEN],
    len: u8,
}

impl TraceId {
    pub(crate) const EMPTY: TraceId = TraceId {
        len: 0,
        buf: [0; MAX_TRACE_ID_LEN],
    };

    /// Validates `id` and copies it inline.
    pub(crate) fn parse(id: &str) -> Result<TraceId> {
        validate_trace_id(id)?;
        let mut buf = [0u8; MAX_TRACE_ID_LEN];
        buf[..id.len()].copy_from_slice(id.as_bytes());
        Ok(TraceId {
            // At most MAX_TRACE_ID_LEN (64), checked above.
            len: u8::try_from(id.len()).unwrap_or(u8::MAX),
            buf,
        })
    }

    /// A fresh id: `YYYYMMDD` (UTC) followed by 12 random decimal digits.
    pub(crate) fn generate() -> TraceId {
        Self::generate_at(now_ms())
    }

    /// A fresh id dated from `now` (ms since the epoch), random digits.
    pub(crate) fn generate_at(now: i64) -> TraceId {
        Self::dated(now, fastrand::u64(0..SERIALS))
    }

    /// `YYYYMMDD` of `now` (UTC) followed by `serial` as 12 digits.
    pub(crate) fn dated(now: i64, serial: u64) -> TraceId {
        let mut buf = [0u8; MAX_TRACE_ID_LEN];
        buf[0..8].copy_from_slice(&date_digits(now.div_euclid(86_400_000)));
        write_digits(&mut buf[8..20], serial % SERIALS);
        TraceId { len: 20, buf }
    }

    pub(crate) fn as_str(&self) -> &str {
        let bytes = &self.buf[..self.len as usize];
        debug_assert!(bytes.is_ascii());
        // Safety: only `parse` (which accepts `[0-9A-Za-z_-]` only) and
        // `generate` (digits only) write `buf`, so the bytes are ASCII.
        unsafe { std::str::from_utf8_unchecked(bytes) }
    }
}

impl PartialEq for TraceId {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}
impl Eq for TraceId {}
impl Hash for TraceId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}
impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// How many 12-digit serials there are.
const SERIALS: u64 = 1_000_000_000_000;

/// Generated trace ids of one engine: `YYYYMMDD` + 12 digits, where the
/// digits count up from a random start chosen when the engine is built.
///
/// Ids of one engine are unique without asking storage (a counter, not a
/// draw: no birthday collisions), and two engines sharing storage collide
/// only if their runs of serials overlap. The driver creates a new trace's
/// storage exclusively, so an overlap is refused and counted, never merged.
#[derive(Debug)]
pub(crate) struct TraceIdGen {
    next: std::sync::atomic::AtomicU64,
    /// Tells this generator's blocks apart in the threads' caches.
    key: u64,
}

/// Serials a thread takes from a generator at a time (one shared atomic
/// operation per block, not per trace).
const ID_BLOCK: u64 = 64;

/// Distinguishes generators (engines) in the threads' caches.
static GENERATORS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

thread_local! {
    /// This thread's block of serials: (generator key, next, end).
    static ID_CACHE: std::cell::Cell<(u64, u64, u64)> = const { std::cell::Cell::new((0, 0, 0)) };
}

impl TraceIdGen {
    pub(crate) fn new() -> TraceIdGen {
        TraceIdGen {
            next: std::sync::atomic::AtomicU64::new(fastrand::u64(0..SERIALS)),
            key: GENERATORS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// The next id, dated from `now`. Serials are unique per generator:
    /// each thread takes a block of them at a time.
    pub(crate) fn next(&self, now: i64) -> TraceId {
        let n = ID_CACHE.with(|c| {
            let (key, next, end) = c.get();
            if key == self.key && next < end {
                c.set((key, next + 1, end));
                return next;
            }
            let start = self
                .next
                .fetch_add(ID_BLOCK, std::sync::atomic::Ordering::Relaxed);
            c.set((self.key, start + 1, start + ID_BLOCK));
            start
        });
        TraceId::dated(now, n)
    }
}

/// `v` as `out.len()` decimal digits (zero-padded; higher digits dropped),
/// two at a time.
fn write_digits(out: &mut [u8], mut v: u64) {
    let mut pairs = out.rchunks_exact_mut(2);
    for pair in &mut pairs {
        let two = (v % 100) as u8;
        pair[0] = b'0' + two / 10;
        pair[1] = b'0' + two % 10;
        v /= 100;
    }
    if let [b] = pairs.into_remainder() {
        *b = b'0' + (v % 10) as u8;
    }
}

thread_local! {
    /// The last day this thread dated an id on, and its `YYYYMMDD`.
    static DATE: std::cell::Cell<(i64, [u8; 8])> = const { std::cell::Cell::new((i64::MIN, [0; 8])) };
}

/// `YYYYMMDD` (UTC) of day `day` since the epoch; computed once per day
/// and thread.
fn date_digits(day: i64) -> [u8; 8] {
    DATE.with(|c| {
        let (cached, digits) = c.get();
        if cached == day {
            return digits;
        }
        let (y, m, d) = civil_from_days(day);
        let mut digits = [0u8; 8];
        // Years outside 0..=9999 print their last four digits.
        write_digits(&mut digits[0..4], y.rem_euclid(10_000).unsigned_abs());
        write_digits(&mut digits[4..6], u64::from(m));
        write_digits(&mut digits[6..8], u64::from(d));
        c.set((day, digits));
        digits
    })
}

/// The bytes a trace id may hold, `[0-9A-Za-z_-]`, as a table (one load
/// per byte instead of three range checks: every `remove` and `open`
/// validates its id).
const ID_BYTES: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
        i += 1;
    }
    t
};

/// Checks a trace id against `^[0-9A-Za-z_-]{1,64}$`.
///
/// This is the only gate between caller-supplied ids and file paths or
/// storage keys, so it rejects `..`, `/`, `:`, NUL and the empty string.
///
/// # Errors
/// [`Error::InvalidId`] naming the rejected id.
pub fn validate_trace_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= MAX_TRACE_ID_LEN
        && id.bytes().all(|b| ID_BYTES[usize::from(b)]);
    if ok { Ok(()) } else { Err(Error::InvalidId) }
}

/// Generates a trace id: `YYYYMMDD` (UTC date) followed by 12 random digits,
/// 20 characters in all, like the reference's `GenTraceID`.
///
/// # Examples
/// ```
/// let id = tracepool::gen_trace_id();
/// assert_eq!(id.len(), 20);
/// assert!(id.bytes().all(|b| b.is_ascii_digit()));
/// ```
pub fn gen_trace_id() -> String {
    TraceId::generate().as_str().to_owned()
}

const NODE_ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// How many node/space ids there are: 36^12 (below 2^63).
pub(crate) const ID_SPACE: u64 = 4_738_381_338_321_616_896;

/// The two characters of every base-36 number below 36^2, as a
/// little-endian `u16` (the first character in the low byte).
static DIGIT_PAIRS: [u16; 1296] = {
    let mut t = [0u16; 1296];
    let mut i = 0;
    while i < 1296 {
        let (a, b) = (NODE_ALPHABET[i / 36], NODE_ALPHABET[i % 36]);
        // The more significant digit is written first.
        t[i] = (a as u16) | ((b as u16) << 8);
        i += 1;
    }
    t
};

/// A node or space id: 12 characters of `[0-9a-z]`, stored inline.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ShortId([u8; 12]);

impl ShortId {
    /// Placeholder where an id is not applicable.
    pub(crate) const EMPTY: ShortId = ShortId([b'0'; 12]);

    pub(crate) fn generate() -> ShortId {
        // One random 64-bit fraction `v / 2^64`; each multiplication by 36
        // moves the next base-36 digit into the high word (no division).
        // 64 bits cover 36^12 (< 2^63), so every id is reachable.
        let mut v = fastrand::u64(..);
        let mut b = [0u8; 12];
        for x in b.iter_mut() {
            let t = u128::from(v) * 36;
            *x = NODE_ALPHABET[(t >> 64) as usize];
            v = t as u64;
        }
        ShortId(b)
    }

    /// The id whose base-36 value is `v` (`v < ID_SPACE`): the digits are
    /// built two at a time in two words and stored with two writes (a
    /// byte-by-byte build read back as words stalls the CPU's store
    /// forwarding on the hot path).
    #[inline]
    pub(crate) fn from_number(mut v: u64) -> ShortId {
        debug_assert!(v < ID_SPACE);
        let mut pair = || {
            let p = DIGIT_PAIRS[(v % 1296) as usize];
            v /= 1296;
            u64::from(p)
        };
        // Least significant pairs first: characters 10-11, 8-9, then 6-7 .. 0-1.
        let hi = pair() << 16 | pair();
        let mut lo = 0u64;
        for shift in [48, 32, 16, 0] {
            lo |= pair() << shift;
        }
        let mut b = [0u8; 12];
        b[..8].copy_from_slice(&lo.to_le_bytes());
        b[8..].copy_from_slice(&(hi as u32).to_le_bytes());
        ShortId(b)
    }

    /// The base-36 value of this id (the inverse of [`ShortId::from_number`]).
    pub(crate) fn number(&self) -> u64 {
        self.0.iter().fold(0u64, |v, &c| {
            let d = if c.is_ascii_digit() {
                c - b'0'
            } else {
                c - b'a' + 10
            };
            v * 36 + u64::from(d)
        })
    }

    /// Parses a 12-character `[0-9a-z]` id; `None` for anything else.
    pub(crate) fn parse(s: &str) -> Option<ShortId> {
        let bytes = s.as_bytes();
        if bytes.len() != 12
            || !bytes
                .iter()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
        {
            return None;
        }
        let mut b = [0u8; 12];
        b.copy_from_slice(bytes);
        Some(ShortId(b))
    }

    pub(crate) fn as_str(&self) -> &str {
        debug_assert!(self.0.is_ascii());
        // Safety: only `generate` (from `NODE_ALPHABET`), `parse` (which
        // accepts `[0-9a-z]` only) and `EMPTY` (`'0'`s) build a ShortId, so
        // the bytes are ASCII.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }
}

impl fmt::Debug for ShortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// A fast, per-map seeded hasher for the engine's id maps (node index,
/// registry): ids are short and fixed-size, and SipHash's cost showed up on
/// every node creation. The seed is random per map, so ids read from storage
/// cannot be chosen to collide.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IdHasherBuilder(u64);

impl Default for IdHasherBuilder {
    fn default() -> Self {
        IdHasherBuilder(fastrand::u64(..) | 1)
    }
}

impl std::hash::BuildHasher for IdHasherBuilder {
    type Hasher = IdHasher;
    fn build_hasher(&self) -> IdHasher {
        IdHasher(self.0)
    }
}

/// See [`IdHasherBuilder`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct IdHasher(u64);

const MIX: u64 = 0x9E37_79B9_7F4A_7C15;

impl IdHasher {
    #[inline]
    fn mix(&mut self, v: u64) {
        let m = u128::from(self.0 ^ v) * u128::from(MIX);
        self.0 = (m as u64) ^ ((m >> 64) as u64);
    }
}

impl Hasher for IdHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.mix(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.mix(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59));
        }
    }

    #[inline]
    fn write_usize(&mut self, v: usize) {
        self.mix(v as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

/// A hash map keyed by ids, with [`IdHasher`].
pub(crate) type IdMap<K, V> = std::collections::HashMap<K, V, IdHasherBuilder>;

/// Milliseconds since the Unix epoch (see [`crate::clock`]).
#[inline(always)]
pub(crate) fn now_ms() -> i64 {
    crate::clock::now_ms()
}

/// Converts days since 1970-01-01 to a (year, month, day) civil date
/// (Howard Hinnant's algorithm).
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dated_ids_and_digits() {
        // 2025-11-18, then the next day, then back: the cached date follows.
        let day = 20_410 * 86_400_000;
        assert_eq!(TraceId::dated(day, 42).as_str(), "20251118000000000042");
        assert_eq!(
            TraceId::dated(day + 86_400_000, SERIALS - 1).as_str(),
            "20251119999999999999"
        );
        assert_eq!(TraceId::dated(day + 1, 7).as_str(), "20251118000000000007");
        assert_eq!(TraceId::dated(-1, 0).as_str(), "19691231000000000000");
        for (v, want) in [(0, "000"), (7, "007"), (123, "123"), (98765, "765")] {
            let mut out = [0u8; 3];
            write_digits(&mut out, v);
            assert_eq!(std::str::from_utf8(&out).unwrap(), want);
        }
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_410), (2025, 11, 18));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn trace_id_validation() {
        for bad in [
            "",
            "../x",
            "a/b",
            "a:b",
            ".",
            "..",
            "a\0b",
            "/abs",
            &"x".repeat(65),
        ] {
            assert!(TraceId::parse(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["a", "20251118123456789012", "A_b-9", &"x".repeat(64)] {
            assert_eq!(TraceId::parse(good).unwrap().as_str(), good);
        }
        // Every byte, alone and inside an id: exactly `[0-9A-Za-z_-]` pass
        // (a non-ASCII char's UTF-8 bytes never do).
        for b in 0..=255u8 {
            let allowed = b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
            let c = char::from(b).to_string();
            assert_eq!(validate_trace_id(&c).is_ok(), allowed, "byte {b}");
            assert_eq!(
                validate_trace_id(&format!("ab{c}cd")).is_ok(),
                allowed,
                "byte {b}"
            );
        }
    }

    #[test]
    fn numbers_and_ids_convert_both_ways() {
        // The digits, most significant first, as a plain loop would write them.
        fn digits(mut v: u64) -> String {
            let mut b = [b'0'; 12];
            for c in b.iter_mut().rev() {
                *c = NODE_ALPHABET[(v % 36) as usize];
                v /= 36;
            }
            String::from_utf8(b.to_vec()).unwrap()
        }
        let mut samples = vec![0, 1, 35, 36, 1295, 1296, ID_SPACE - 1, ID_SPACE / 2];
        samples.extend((0..1000).map(|_| fastrand::u64(..ID_SPACE)));
        for v in samples {
            let id = ShortId::from_number(v);
            assert_eq!(id.as_str(), digits(v), "{v}");
            assert_eq!(id.number(), v);
            assert_eq!(ShortId::parse(id.as_str()), Some(id));
        }
        assert_eq!(ShortId::from_number(ID_SPACE - 1).as_str(), "zzzzzzzzzzzz");
    }

    #[test]
    fn generated_ids_have_the_reference_shape() {
        let t = TraceId::generate();
        assert_eq!(t.as_str().len(), 20);
        assert!(TraceId::parse(t.as_str()).is_ok());
        let n = ShortId::generate();
        assert_eq!(ShortId::parse(n.as_str()), Some(n));
        assert!(ShortId::parse("ABCDEFGHIJKL").is_none());
    }
}
