//! Wire buffers: the reference-counted chunks of memory that encoded events
//! live in, the arena that writes events into them, and the reader-side
//! cache of prepaid references.
//!
//! # Chunks
//!
//! A chunk is one allocation: a header (an atomic reference count and the
//! capacity) followed by the bytes. An event's bytes ([`WireBytes`]) are a
//! chunk pointer, an offset and a length (16 bytes), and own one reference.
//! Cloning one increments the count (`Relaxed`), dropping one decrements it
//! (`Release`), and whoever takes it to zero frees the chunk after an
//! `Acquire` fence: the same protocol as `Arc`. Counts beyond `isize::MAX`
//! abort the process (as `Arc` does), so the count cannot overflow.
//!
//! # Writing
//!
//! [`WireArena`] owns references to its current chunk and writes the event
//! in progress right after the last one it split off; [`WireArena::split`]
//! hands the event's range out as [`WireBytes`]. The bytes of a range that
//! was split off are never written again while a reference other than the
//! arena's own exists: the arena only writes past its split point, and it
//! goes back to the start of its chunk only when the count says that every
//! reference left is its own (an `Acquire` load, which orders every other
//! holder's last read before the reuse). A chunk that is still shared and
//! full is left to its holders, and the arena moves to a fresh one (copying
//! the event in progress, as `BytesMut` does).
//!
//! # Prepaid references
//!
//! Taking a reference costs an atomic read-modify-write on a word that every
//! reader of the trace shares. [`RefCache`] (one per reader, and one in the
//! arena) takes [`PREPAY`] references at once and hands them out one by one
//! with no atomic operation, as long as the events come from the same
//! chunk; leftovers go back with one `fetch_sub` when the chunk changes or
//! the cache is flushed or dropped. A prepaid reference is an ordinary
//! reference that nobody holds yet, so it keeps the chunk alive (and not
//! reusable) exactly like one held by an event: every reference, prepaid or
//! handed out, is counted, and each is given back exactly once (by the
//! [`WireBytes`] it became, or by the cache that held it).
//!
//! `loom_model_prepaid_references` (run with `RUSTFLAGS="--cfg
//! tracepool_loom"`) checks a reader with prepaid references handing an
//! event to a consumer while the writer tries to take the chunk back and
//! then lets go of it.

use std::alloc::{Layout, alloc, dealloc, handle_alloc_error};
use std::ptr::NonNull;
use std::sync::atomic::Ordering;

#[cfg(tracepool_loom)]
use loom::sync::atomic::fence;
#[cfg(not(tracepool_loom))]
use std::sync::atomic::fence;

use crate::loom::AtomicUsize;

/// References a cache (or the arena) takes at once.
#[cfg(not(tracepool_loom))]
pub(crate) const PREPAY: usize = 128;
/// References a cache (or the arena) takes at once (small, so the model
/// runs out of them).
#[cfg(tracepool_loom)]
pub(crate) const PREPAY: usize = 2;

/// Smallest chunk the arena allocates.
const MIN_CHUNK: usize = 16 * 1024;
/// Counts above this abort (as `Arc`'s do): far below `usize::MAX`, so the
/// increments racing past the check cannot wrap the count.
const MAX_REFS: usize = isize::MAX as usize;
/// Largest chunk: offsets and lengths are `u32`.
const MAX_CAP: usize = u32::MAX as usize;

/// The start of a chunk; its bytes follow it.
#[repr(C)]
struct Header {
    refs: AtomicUsize,
    cap: usize,
}

/// A pointer to a live chunk (the holder owns at least one reference).
#[derive(Clone, Copy, PartialEq, Eq)]
struct Chunk(NonNull<Header>);

impl Chunk {
    fn layout(cap: usize) -> Layout {
        match Layout::from_size_align(
            std::mem::size_of::<Header>() + cap,
            std::mem::align_of::<Header>(),
        ) {
            Ok(l) => l,
            Err(_) => capacity_overflow(),
        }
    }

    /// A chunk of `cap` bytes whose count starts at `refs` (all the caller's).
    fn new(cap: usize, refs: usize) -> Chunk {
        if cap > MAX_CAP {
            capacity_overflow();
        }
        let layout = Chunk::layout(cap);
        // SAFETY: the layout is not zero-sized (it holds a header).
        let p = unsafe { alloc(layout) }.cast::<Header>();
        let Some(p) = NonNull::new(p) else {
            handle_alloc_error(layout)
        };
        // SAFETY: `p` is fresh memory, aligned for and large enough for a header.
        unsafe {
            p.as_ptr().write(Header {
                refs: AtomicUsize::new(refs),
                cap,
            })
        };
        Chunk(p)
    }

    fn header(&self) -> &Header {
        // SAFETY: the holder of a `Chunk` owns a reference, so the chunk is
        // allocated and its header initialized.
        unsafe { self.0.as_ref() }
    }

    fn cap(self) -> usize {
        self.header().cap
    }

    /// The first byte (the bytes follow the header).
    fn data(self) -> *mut u8 {
        // SAFETY: the allocation is a header followed by `cap` bytes.
        unsafe { self.0.as_ptr().add(1).cast::<u8>() }
    }

    /// Takes `n` more references (the caller owns one, so the chunk is alive).
    #[inline(always)]
    fn acquire(self, n: usize) {
        // Relaxed, as `Arc::clone`: a new reference is made from one the
        // caller holds, which already orders what it may read.
        let old = self.header().refs.fetch_add(n, Ordering::Relaxed);
        if old > MAX_REFS {
            std::process::abort();
        }
    }

    /// Gives back `n` references; frees the chunk if they were the last.
    ///
    /// # Safety
    /// The caller owns `n` references, and uses none of them after.
    #[inline(always)]
    unsafe fn release(self, n: usize) {
        if self.header().refs.fetch_sub(n, Ordering::Release) != n {
            return;
        }
        // Every other holder's last use happened before its decrement
        // (`Release`); this fence orders them before the free.
        fence(Ordering::Acquire);
        // SAFETY: the count reached zero: nobody else holds the chunk.
        unsafe { self.free() };
    }

    /// Whether the count is `own`, the references of the caller.
    fn is_unique(self, own: usize) -> bool {
        // Acquire: synchronizes with every other holder's `Release`
        // decrement, so their reads happen before the caller's writes.
        self.header().refs.load(Ordering::Acquire) == own
    }

    /// # Safety
    /// No reference to the chunk is left.
    #[cold]
    unsafe fn free(self) {
        let cap = self.cap();
        #[cfg(test)]
        // SAFETY: the chunk is still allocated; nobody else reads it (a
        // read after the free would see the poison).
        unsafe {
            std::ptr::write_bytes(self.data(), 0xdd, cap);
        }
        #[cfg(test)]
        tests::count_free();
        // SAFETY: allocated by `Chunk::new` with this layout; the header
        // is dropped once, here.
        unsafe {
            std::ptr::drop_in_place(self.0.as_ptr());
            dealloc(self.0.as_ptr().cast::<u8>(), Chunk::layout(cap));
        }
    }
}

#[cold]
#[inline(never)]
fn capacity_overflow() -> ! {
    panic!("wire buffer of 4 GiB or more");
}

/// The bytes of one encoded event: a range of a chunk, holding one
/// reference to it (see the module docs). Immutable.
pub(crate) struct WireBytes {
    /// `None` for no bytes.
    chunk: Option<Chunk>,
    off: u32,
    len: u32,
}

// SAFETY: the bytes never change while referenced, and the count is atomic.
unsafe impl Send for WireBytes {}
// SAFETY: as for `Send`: `&WireBytes` only reads.
unsafe impl Sync for WireBytes {}

impl WireBytes {
    /// No bytes.
    pub(crate) const fn new() -> WireBytes {
        WireBytes {
            chunk: None,
            off: 0,
            len: 0,
        }
    }

    /// A copy of `s` in a chunk of its own.
    pub(crate) fn copy_from_slice(s: &[u8]) -> WireBytes {
        if s.is_empty() {
            return WireBytes::new();
        }
        let c = Chunk::new(s.len(), 1);
        // SAFETY: the chunk is fresh, `s.len()` bytes long, and `s` cannot
        // point into it.
        unsafe { std::ptr::copy_nonoverlapping(s.as_ptr(), c.data(), s.len()) };
        WireBytes {
            chunk: Some(c),
            // `Chunk::new` refused more than `u32::MAX` bytes.
            off: 0,
            len: s.len() as u32,
        }
    }

    /// Whether `self` and `other` are in the same chunk (tests).
    #[cfg(all(test, not(tracepool_loom)))]
    fn same_chunk(&self, other: &WireBytes) -> bool {
        self.chunk.is_some() && self.chunk == other.chunk
    }
}

impl std::ops::Deref for WireBytes {
    type Target = [u8];

    #[inline(always)]
    fn deref(&self) -> &[u8] {
        match self.chunk {
            // SAFETY: the reference this holds keeps the chunk allocated;
            // `off + len <= cap` and those bytes were written before the
            // split and are not written while referenced (module docs).
            Some(c) => unsafe {
                std::slice::from_raw_parts(c.data().add(self.off as usize), self.len as usize)
            },
            None => &[],
        }
    }
}

impl AsRef<[u8]> for WireBytes {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl Clone for WireBytes {
    #[inline(always)]
    fn clone(&self) -> WireBytes {
        if let Some(c) = self.chunk {
            c.acquire(1);
        }
        WireBytes {
            chunk: self.chunk,
            off: self.off,
            len: self.len,
        }
    }
}

impl Drop for WireBytes {
    #[inline(always)]
    fn drop(&mut self) {
        if let Some(c) = self.chunk {
            // SAFETY: this owns one reference and is going away.
            unsafe { c.release(1) };
        }
    }
}

impl PartialEq for WireBytes {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl std::fmt::Debug for WireBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self))
    }
}

/// Prepaid references to one chunk (see the module docs): a reader's, so
/// that sharing an event it reads costs no atomic operation.
#[derive(Default)]
pub(crate) struct RefCache {
    /// The chunk of the prepaid references, while `left > 0`.
    chunk: Option<Chunk>,
    left: usize,
}

// SAFETY: it owns `left` references (atomic counts) and reads nothing.
unsafe impl Send for RefCache {}
// SAFETY: through `&RefCache` only its count is read.
unsafe impl Sync for RefCache {}

impl std::fmt::Debug for RefCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefCache")
            .field("left", &self.left)
            .finish()
    }
}

impl RefCache {
    /// A clone of `b`, paid with a prepaid reference when there is one for
    /// its chunk.
    #[inline(always)]
    pub(crate) fn share(&mut self, b: &WireBytes) -> WireBytes {
        if let Some(c) = b.chunk {
            if self.left == 0 || self.chunk != Some(c) {
                self.refill(c);
            }
            // One prepaid reference becomes the clone's.
            self.left -= 1;
        }
        WireBytes {
            chunk: b.chunk,
            off: b.off,
            len: b.len,
        }
    }

    /// Gives back what is left and prepays [`PREPAY`] references to `c`
    /// (whose holder, the caller's borrowed bytes, keeps it alive).
    #[inline(never)]
    fn refill(&mut self, c: Chunk) {
        self.flush();
        c.acquire(PREPAY);
        self.chunk = Some(c);
        self.left = PREPAY;
    }

    /// Gives back the prepaid references left (one atomic operation).
    pub(crate) fn flush(&mut self) {
        let left = std::mem::take(&mut self.left);
        if let Some(c) = self.chunk.take()
            && left > 0
        {
            // SAFETY: the cache owns `left` references, given up here.
            unsafe { c.release(left) };
        }
    }

    /// Prepaid references left (tests).
    #[cfg(test)]
    pub(crate) fn left(&self) -> usize {
        self.left
    }
}

impl Drop for RefCache {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Where events are encoded: the event in progress, written right into the
/// current chunk after the last event split off. The subset of `BytesMut`
/// that the JSON writer uses; the view (`as_mut_ptr`, `len`, `capacity`)
/// starts at the split point.
pub(crate) struct WireArena {
    /// The current chunk; `None` before the first reservation.
    chunk: Option<Chunk>,
    /// The arena's own reference plus those it prepaid for splits.
    prepaid: RefCache,
    /// The event in progress: `start..end`.
    start: usize,
    end: usize,
}

// SAFETY: it owns references (atomic counts) and writes only bytes no
// reference other than its own can read.
unsafe impl Send for WireArena {}

impl std::fmt::Debug for WireArena {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WireArena")
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .finish()
    }
}

impl Default for WireArena {
    fn default() -> Self {
        WireArena::new()
    }
}

impl WireArena {
    /// An arena without a chunk (it allocates on the first reservation).
    pub(crate) const fn new() -> WireArena {
        WireArena {
            chunk: None,
            prepaid: RefCache {
                chunk: None,
                left: 0,
            },
            start: 0,
            end: 0,
        }
    }

    /// Bytes of the event in progress.
    #[inline(always)]
    pub(crate) fn len(&self) -> usize {
        self.end - self.start
    }

    /// Whether no event is in progress.
    #[inline(always)]
    pub(crate) fn is_empty(&self) -> bool {
        self.end == self.start
    }

    /// Room from the split point on (the event in progress included).
    #[inline(always)]
    pub(crate) fn capacity(&self) -> usize {
        self.chunk.map_or(0, |c| c.cap() - self.start)
    }

    /// The split point: the event in progress starts here, valid for
    /// writes of [`capacity`](WireArena::capacity) bytes.
    #[inline(always)]
    pub(crate) fn as_mut_ptr(&mut self) -> *mut u8 {
        match self.chunk {
            // SAFETY: `start <= cap`.
            Some(c) => unsafe { c.data().add(self.start) },
            None => NonNull::dangling().as_ptr(),
        }
    }

    /// Sets the length of the event in progress.
    ///
    /// # Safety
    /// `len <= capacity()`, and the first `len` bytes from the split point
    /// were written.
    #[inline(always)]
    pub(crate) unsafe fn set_len(&mut self, len: usize) {
        debug_assert!(len <= self.capacity());
        self.end = self.start + len;
    }

    /// Drops the event in progress.
    pub(crate) fn clear(&mut self) {
        self.end = self.start;
    }

    /// Makes room for `n` more bytes. When the chunk has too little, the
    /// event in progress moves: to the start of the chunk if no reference
    /// other than the arena's is left and it fits, else into a fresh chunk
    /// (at least twice as large as the event, and at least 16 KiB).
    #[inline(always)]
    pub(crate) fn reserve(&mut self, n: usize) {
        let room = self.chunk.map_or(0, |c| c.cap() - self.end);
        if n > room {
            self.grow(n);
        }
    }

    #[cold]
    #[inline(never)]
    fn grow(&mut self, n: usize) {
        let used = self.len();
        let Some(need) = used.checked_add(n) else {
            capacity_overflow()
        };
        let own = 1 + self.prepaid.left;
        if let Some(c) = self.chunk
            && c.cap() >= need
            && c.is_unique(own)
        {
            // SAFETY: every reference left is the arena's (acquired: every
            // other holder's reads happened before), so nobody reads the
            // chunk; `ptr::copy` allows the overlap.
            unsafe { std::ptr::copy(c.data().add(self.start), c.data(), used) };
            (self.start, self.end) = (0, used);
            return;
        }
        let cap = need
            .max(MIN_CHUNK)
            .max(used.saturating_mul(2))
            .min(MAX_CAP.max(need));
        let fresh = Chunk::new(cap, 1 + PREPAY);
        if let Some(old) = self.chunk {
            // SAFETY: `used` initialized bytes at `start` of the old chunk
            // (still alive: the arena holds it) into the fresh one.
            unsafe {
                std::ptr::copy_nonoverlapping(old.data().add(self.start), fresh.data(), used)
            };
        }
        self.let_go();
        self.chunk = Some(fresh);
        self.prepaid = RefCache {
            chunk: Some(fresh),
            left: PREPAY,
        };
        (self.start, self.end) = (0, used);
    }

    /// Gives back every reference of the arena to its chunk.
    fn let_go(&mut self) {
        self.prepaid.flush();
        if let Some(c) = self.chunk.take() {
            // SAFETY: the arena's own reference, given up here.
            unsafe { c.release(1) };
        }
        (self.start, self.end) = (0, 0);
    }

    /// Appends `s`.
    pub(crate) fn extend_from_slice(&mut self, s: &[u8]) {
        self.reserve(s.len());
        let p = self.as_mut_ptr();
        // SAFETY: just reserved; the room past the event in progress is
        // not referenced, and `s` cannot point into it.
        unsafe {
            std::ptr::copy_nonoverlapping(s.as_ptr(), p.add(self.len()), s.len());
            self.set_len(self.len() + s.len());
        }
    }

    /// Splits the event in progress off as shared bytes; the next one
    /// starts after it.
    pub(crate) fn split(&mut self) -> WireBytes {
        let Some(c) = self.chunk else {
            return WireBytes::new();
        };
        if self.is_empty() {
            return WireBytes::new();
        }
        // Owns no reference (never dropped): the pattern that the cache
        // clones, paying with one of its references.
        let b = std::mem::ManuallyDrop::new(WireBytes {
            chunk: Some(c),
            // `cap <= u32::MAX`.
            off: self.start as u32,
            len: self.len() as u32,
        });
        self.start = self.end;
        // The arena holds a reference to `c`: the cache can prepay.
        self.prepaid.share(&b)
    }
}

impl Drop for WireArena {
    fn drop(&mut self) {
        self.let_go();
    }
}

#[cfg(all(test, not(tracepool_loom)))]
mod unit_tests {
    use super::*;

    fn refs(b: &WireBytes) -> usize {
        b.chunk
            .map_or(0, |c| c.header().refs.load(Ordering::Relaxed))
    }

    #[test]
    fn splits_share_one_chunk_and_count_prepaid_references() {
        let mut a = WireArena::new();
        a.extend_from_slice(b"one");
        let x = a.split();
        a.extend_from_slice(b"two!");
        let y = a.split();
        assert_eq!((&x[..], &y[..]), (&b"one"[..], &b"two!"[..]));
        assert!(x.same_chunk(&y));
        // The arena's own, what it prepaid, less the two handed out, plus
        // the two the splits hold.
        assert_eq!(refs(&x), 1 + PREPAY);
        let z = x.clone();
        assert_eq!(refs(&x), 2 + PREPAY);
        drop(z);
        assert_eq!(refs(&x), 1 + PREPAY);
        // More splits than prepaid: the arena prepays again.
        let many: Vec<_> = (0..PREPAY + 3)
            .map(|_| {
                a.extend_from_slice(b"e");
                a.split()
            })
            .collect();
        assert!(many.iter().all(|m| m.same_chunk(&x) && &m[..] == b"e"));
        assert_eq!(refs(&x), 1 + 2 * PREPAY);
        drop(many);
        assert_eq!(refs(&x), 1 + 2 * PREPAY - (PREPAY + 3));
        drop(a);
        // The arena gave back its own and its prepaid references.
        assert_eq!(refs(&x), 2);
        assert_eq!(&y[..], b"two!");
    }

    #[test]
    fn a_chunk_is_freed_once_with_its_last_reference() {
        let before = tests::frees();
        let mut a = WireArena::new();
        a.extend_from_slice(b"abc");
        let x = a.split();
        let mut cache = RefCache::default();
        let y = cache.share(&x);
        drop(a);
        drop(x);
        assert_eq!(&y[..], b"abc");
        assert_eq!(refs(&y), PREPAY);
        drop(cache);
        assert_eq!(refs(&y), 1);
        assert_eq!(tests::frees(), before);
        drop(y);
        assert_eq!(tests::frees(), before + 1);
        // A copy has a chunk of its own.
        drop(WireBytes::copy_from_slice(b"copy").clone());
        assert_eq!(tests::frees(), before + 2);
    }

    #[test]
    fn a_unique_chunk_is_reused_from_its_start() {
        let mut a = WireArena::new();
        a.reserve(100);
        let base = a.as_mut_ptr();
        let cap = a.capacity();
        assert!(cap >= MIN_CHUNK);
        for _ in 0..10 {
            a.extend_from_slice(&[7; 1000]);
            drop(a.split());
        }
        assert_eq!(a.capacity(), cap - 10_000);
        // Everything split off is gone: the chunk is taken back.
        a.clear();
        a.reserve(cap);
        assert_eq!(a.as_mut_ptr(), base);
        assert_eq!(a.capacity(), cap);
        // One event still held: a fresh chunk instead.
        a.extend_from_slice(b"held");
        let held = a.split();
        a.reserve(cap);
        assert_ne!(a.as_mut_ptr(), base);
        assert_eq!(&held[..], b"held");
    }

    #[test]
    fn reserve_moves_the_event_in_progress() {
        let mut a = WireArena::new();
        a.reserve(10);
        let cap = a.capacity();
        a.extend_from_slice(&vec![1; cap - 8]);
        let first = a.split();
        a.extend_from_slice(b"partial");
        // No room for 100 more, and `first` holds the chunk: a fresh one,
        // with the partial event copied to its start.
        a.reserve(100);
        assert_eq!(a.len(), 7);
        let start2 = a.as_mut_ptr();
        a.extend_from_slice(b" event");
        let second = a.split();
        assert_eq!(&second[..], b"partial event");
        assert!(!second.same_chunk(&first));
        assert!(first.iter().all(|&b| b == 1));
        // A unique chunk: the event in progress moves to its start.
        drop(second);
        let big_first = {
            a.extend_from_slice(&vec![2; a.capacity() - 20]);
            a.split()
        };
        drop(big_first);
        a.extend_from_slice(b"moved");
        let base = a.as_mut_ptr();
        a.reserve(100);
        assert_ne!(a.as_mut_ptr(), base);
        assert_eq!(
            a.as_mut_ptr(),
            start2,
            "moved to the start of the same chunk"
        );
        let third = a.split();
        assert_eq!(&third[..], b"moved");
        // Big events grow the chunk (the event in progress kept).
        let huge = vec![3u8; 100_000];
        a.extend_from_slice(b"[");
        a.extend_from_slice(&huge);
        a.extend_from_slice(b"]");
        let h = a.split();
        assert_eq!(h.len(), 100_002);
        assert_eq!((h[0], h[1], h[100_001]), (b'[', 3, b']'));
    }

    #[test]
    fn a_cache_prepays_per_chunk_and_gives_leftovers_back() {
        let mut a = WireArena::new();
        a.extend_from_slice(b"x");
        let x = a.split();
        a.extend_from_slice(b"y");
        let y = a.split();
        let base = refs(&x);
        let mut cache = RefCache::default();
        let got: Vec<_> = (0..3).map(|_| cache.share(&x)).collect();
        assert_eq!(cache.left(), PREPAY - 3);
        assert_eq!(refs(&x), base + PREPAY);
        // Same chunk, other event: still prepaid.
        let gy = cache.share(&y);
        assert_eq!((&gy[..], cache.left()), (&b"y"[..], PREPAY - 4));
        // Another chunk: leftovers back, a new batch there.
        let other = WireBytes::copy_from_slice(b"other");
        let go = cache.share(&other);
        assert_eq!(refs(&x), base + 4);
        assert_eq!(refs(&other), 1 + PREPAY);
        assert_eq!(cache.left(), PREPAY - 1);
        drop((got, gy));
        assert_eq!(refs(&x), base);
        cache.flush();
        assert_eq!(refs(&other), 2);
        assert_eq!(&go[..], b"other");
        // Running out prepays again.
        let all: Vec<_> = (0..PREPAY + 1).map(|_| cache.share(&x)).collect();
        assert_eq!(refs(&x), base + 2 * PREPAY);
        assert_eq!(cache.left(), PREPAY - 1);
        drop(all);
        drop(cache);
        assert_eq!(refs(&x), base);
        // Empty bytes take no reference.
        let mut c = RefCache::default();
        let e = c.share(&WireBytes::new());
        assert!(e.is_empty() && c.left() == 0);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    /// Chunks freed (by every model thread under loom, which runs one
    /// model at a time).
    #[cfg(tracepool_loom)]
    static FREES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    #[cfg(not(tracepool_loom))]
    thread_local! {
        /// Chunks freed by this thread (tests run on threads of their own).
        static FREES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    /// Counts a chunk freed.
    pub(super) fn count_free() {
        #[cfg(tracepool_loom)]
        FREES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        #[cfg(not(tracepool_loom))]
        FREES.with(|f| f.set(f.get() + 1));
    }

    /// Chunks freed (by this thread, outside loom).
    #[cfg(not(tracepool_loom))]
    pub(super) fn frees() -> usize {
        FREES.with(std::cell::Cell::get)
    }

    /// A reader with prepaid references hands an event to a consumer that
    /// drops it, while the history drops the event, the reader gives its
    /// leftover back, and the writer tries to take its chunk back (it
    /// rewrites the chunk from its start only if every reference left is
    /// its own) and then drops its arena (with a prepaid reference left):
    /// every chunk is freed exactly once, and never rewritten or freed
    /// under a read (the read would see the new bytes or the poison).
    #[cfg(tracepool_loom)]
    #[test]
    fn loom_model_prepaid_references() {
        use super::*;
        use std::sync::atomic::AtomicUsize as Seen;
        // Executions that took the chunk back, and that did not.
        static REUSED: [Seen; 2] = [Seen::new(0), Seen::new(0)];
        loom::model(|| {
            FREES.store(0, Ordering::Relaxed);
            let mut arena = WireArena::new();
            arena.extend_from_slice(b"ab");
            let history = arena.split();
            let reader = loom::thread::spawn(move || {
                let mut cache = RefCache::default();
                let a = cache.share(&history);
                assert_eq!(cache.left(), PREPAY - 1);
                let consumer = loom::thread::spawn(move || {
                    assert_eq!(&a[..], b"ab");
                    drop(a);
                });
                drop(history);
                drop(cache);
                consumer.join().unwrap();
            });
            let start = arena.as_mut_ptr().wrapping_sub(2);
            let room = arena.capacity();
            arena.reserve(room + 1);
            let reused = arena.as_mut_ptr() == start;
            arena.extend_from_slice(b"XY");
            drop(arena);
            reader.join().unwrap();
            // Reused: one chunk; else the old one (freed by its last
            // holder) and the fresh one.
            let chunks = if reused { 1 } else { 2 };
            assert_eq!(FREES.load(Ordering::Relaxed), chunks);
            REUSED[usize::from(reused)].fetch_add(1, Ordering::Relaxed);
        });
        assert!(REUSED.iter().all(|n| n.load(Ordering::Relaxed) > 0));
    }
}
