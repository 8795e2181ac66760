//! [`Ring`]: a growable first-in first-out buffer whose push builds the new
//! element straight in its slot.
//!
//! A trace's history and its in-memory log lines are rings that every event
//! appends to. `VecDeque::push_back(value)` keeps `value` alive across its
//! possible grow call, so the compiler first assembles the element on the
//! stack and then copies it into the buffer — and copying a record whose
//! fields were just written one by one reads them back with wide loads that
//! cannot be forwarded from the narrow stores still in flight (a stall of
//! some 10-20 cycles per record on the hot path). [`Ring::push_back_with`]
//! makes room first and calls its constructor only then, so the element's
//! fields are stored once, in place.
//!
//! Only what the trace needs is here: push at the back, pop at the front,
//! indexing from the front, iteration in order, and capacity kept across
//! `clear` up to a cap.

use std::fmt;
use std::mem::MaybeUninit;

/// A growable ring buffer (see the module docs).
///
/// Invariant: `buf.len()` is the capacity (its slots are `MaybeUninit`, so
/// any length is valid); the `len` slots from `head` on (wrapping at the
/// capacity) are initialized, every other slot is not.
pub(crate) struct Ring<T> {
    buf: Vec<MaybeUninit<T>>,
    head: usize,
    len: usize,
}

impl<T> Default for Ring<T> {
    fn default() -> Self {
        Ring::new()
    }
}

impl<T> Ring<T> {
    /// An empty ring (allocates nothing).
    pub(crate) fn new() -> Ring<T> {
        Ring {
            buf: Vec::new(),
            head: 0,
            len: 0,
        }
    }

    /// Elements held.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds nothing.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Elements it can hold without growing.
    #[inline]
    pub(crate) fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// The slot of the element `i` places after the front (`i <= len`, and
    /// `i < capacity`).
    #[inline(always)]
    fn slot(&self, i: usize) -> usize {
        let p = self.head + i;
        if p >= self.buf.len() {
            p - self.buf.len()
        } else {
            p
        }
    }

    /// Appends the element `make` builds and returns it. Room is made
    /// before `make` runs, so the element is built in its slot (see the
    /// module docs; what `make` captures is kept across the possible grow
    /// call, so it should capture parts, not a built element).
    #[inline(always)]
    pub(crate) fn push_back_with(&mut self, make: impl FnOnce() -> T) -> &mut T {
        if self.len == self.buf.len() {
            self.grow();
        }
        let s = self.slot(self.len);
        // SAFETY: `s < capacity` and the slot is not initialized (it is
        // outside the `len` initialized slots, the ring is not full).
        let slot = unsafe { self.buf.get_unchecked_mut(s) };
        self.len += 1;
        slot.write(make())
    }

    /// Appends `value`.
    #[inline]
    pub(crate) fn push_back(&mut self, value: T) {
        self.push_back_with(|| value);
    }

    /// Removes and returns the front element.
    #[inline]
    pub(crate) fn pop_front(&mut self) -> Option<T> {
        if self.len == 0 {
            return None;
        }
        let h = self.head;
        self.head = self.slot(1);
        self.len -= 1;
        // SAFETY: slot `h` was the front, initialized; it is now outside
        // the initialized range, so it is read exactly once.
        Some(unsafe { self.buf.get_unchecked(h).assume_init_read() })
    }

    /// The element `i` places after the front.
    #[inline]
    pub(crate) fn get(&self, i: usize) -> Option<&T> {
        if i >= self.len {
            return None;
        }
        // SAFETY: `i < len`: the slot is initialized.
        Some(unsafe { self.buf.get_unchecked(self.slot(i)).assume_init_ref() })
    }

    /// The front element.
    #[inline]
    pub(crate) fn front(&self) -> Option<&T> {
        self.get(0)
    }

    /// The back element.
    #[inline]
    pub(crate) fn back(&self) -> Option<&T> {
        self.len.checked_sub(1).and_then(|i| self.get(i))
    }

    /// The initialized slots as (up to) two ranges of the buffer: from the
    /// front to the end of the buffer, then from its start.
    fn ranges(&self) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
        let first = self.len.min(self.buf.len() - self.head);
        (self.head..self.head + first, 0..self.len - first)
    }

    /// The elements in order, as two slices (the second wraps around).
    fn as_slices(&self) -> (&[T], &[T]) {
        let (a, b) = self.ranges();
        let s = &self.buf[..];
        // SAFETY: both ranges cover initialized slots only, and
        // `MaybeUninit<T>` has the layout of `T`.
        unsafe { (assume_init_slice(&s[a]), assume_init_slice(&s[b])) }
    }

    /// The elements in order, mutable, as two slices.
    fn as_mut_slices(&mut self) -> (&mut [T], &mut [T]) {
        let (a, b) = self.ranges();
        // `b` ends at or before `a` starts: split there.
        let (lo, hi) = self.buf.split_at_mut(a.start);
        // SAFETY: as in `as_slices`.
        unsafe {
            (
                assume_init_slice_mut(&mut hi[..a.len()]),
                assume_init_slice_mut(&mut lo[b]),
            )
        }
    }

    /// The elements front to back.
    pub(crate) fn iter(&self) -> impl DoubleEndedIterator<Item = &T> + '_ {
        let (a, b) = self.as_slices();
        a.iter().chain(b)
    }

    /// The elements `from..to` places after the front, mutable (the range
    /// is clamped to the elements held).
    pub(crate) fn range_mut(&mut self, from: usize, to: usize) -> impl Iterator<Item = &mut T> {
        let to = to.min(self.len);
        let from = from.min(to);
        let (a, b) = self.as_mut_slices();
        let na = a.len();
        let a = &mut a[from.min(na)..to.min(na)];
        let b = &mut b[from.saturating_sub(na)..to.saturating_sub(na)];
        a.iter_mut().chain(b)
    }

    /// Empties the ring without dropping its elements: for elements the
    /// caller knows own no memory, where dropping each would only read it
    /// (and branch on its variant). Forgetting an element that does own
    /// memory leaks it (safely).
    pub(crate) fn forget_all(&mut self) {
        self.head = 0;
        self.len = 0;
    }

    /// Drops every element; the capacity stays.
    pub(crate) fn clear(&mut self) {
        let (a, b) = self.ranges();
        // Emptied first: a panicking drop leaks the rest rather than
        // dropping anything twice.
        self.head = 0;
        self.len = 0;
        for r in [a, b] {
            let s = &mut self.buf[r];
            // SAFETY: the range held initialized elements, and the ring no
            // longer counts them, so each is dropped exactly once.
            unsafe { std::ptr::drop_in_place(assume_init_slice_mut(s)) };
        }
    }

    /// Lowers the capacity to `cap` (or to the length, if greater).
    pub(crate) fn shrink_to(&mut self, cap: usize) {
        let cap = cap.max(self.len);
        if cap < self.buf.len() {
            self.realloc(cap);
        }
    }

    /// Doubles the capacity (at least 4). The buffer is reallocated in
    /// place where the allocator can (a large one is remapped, not copied:
    /// a log of millions of lines grows without copying them or faulting
    /// fresh pages in), then the part of the ring that wrapped around the
    /// old end is moved so that the elements stay contiguous modulo the
    /// new capacity.
    #[cold]
    #[inline(never)]
    fn grow(&mut self) {
        let old = self.buf.len();
        let cap = old.saturating_mul(2).max(4);
        self.buf.reserve_exact(cap - old);
        // SAFETY: the room was just reserved, and `MaybeUninit` slots need
        // no initialization.
        unsafe { self.buf.set_len(cap) };
        if self.head + self.len <= old {
            return;
        }
        // Wrapped: `head_len` elements at `[head, old)`, then `tail_len` at
        // `[0, tail_len)`.
        let head_len = old - self.head;
        let tail_len = self.len - head_len;
        let p = self.buf.as_mut_ptr();
        // SAFETY: both moves stay within the `cap` slots. Afterwards every
        // element sits exactly once in the `len` slots from `head` on
        // (modulo `cap`), in order, and the slots it left are outside them
        // (no longer counted as initialized).
        unsafe {
            if tail_len <= head_len {
                // The tail goes after the old end (`cap - old >= old >=
                // tail_len` slots are free there; no overlap).
                std::ptr::copy_nonoverlapping(p, p.add(old), tail_len);
            } else {
                // The head part goes to the new end (may overlap its old
                // place: `copy` is a memmove).
                let new_head = cap - head_len;
                std::ptr::copy(p.add(self.head), p.add(new_head), head_len);
                self.head = new_head;
            }
        }
    }

    /// Moves the elements, in order, to the front of a new buffer of `cap`
    /// slots (`cap >= len`).
    fn realloc(&mut self, cap: usize) {
        debug_assert!(cap >= self.len);
        let mut buf: Vec<MaybeUninit<T>> = Vec::with_capacity(cap);
        // SAFETY: `MaybeUninit` slots need no initialization.
        unsafe { buf.set_len(cap) };
        let (a, b) = self.ranges();
        let dst = buf.as_mut_ptr();
        // SAFETY: the ranges are initialized slots of the old buffer, `a`
        // then `b` in order; they fit in `cap >= len` slots of the new one,
        // which does not overlap the old. The old buffer is then freed
        // without dropping anything (its slots are `MaybeUninit`), so each
        // element is moved exactly once.
        unsafe {
            let src = self.buf.as_ptr();
            std::ptr::copy_nonoverlapping(src.add(a.start), dst, a.len());
            std::ptr::copy_nonoverlapping(src.add(b.start), dst.add(a.len()), b.len());
        }
        self.buf = buf;
        self.head = 0;
    }
}

/// # Safety
/// Every element of `s` is initialized.
unsafe fn assume_init_slice<T>(s: &[MaybeUninit<T>]) -> &[T] {
    // SAFETY: per the contract; `MaybeUninit<T>` has the layout of `T`.
    unsafe { &*(s as *const [MaybeUninit<T>] as *const [T]) }
}

/// # Safety
/// Every element of `s` is initialized.
unsafe fn assume_init_slice_mut<T>(s: &mut [MaybeUninit<T>]) -> &mut [T] {
    // SAFETY: per the contract; `MaybeUninit<T>` has the layout of `T`.
    unsafe { &mut *(s as *mut [MaybeUninit<T>] as *mut [T]) }
}

impl<T> std::ops::Index<usize> for Ring<T> {
    type Output = T;

    /// The element `i` places after the front.
    ///
    /// # Panics
    /// If `i >= len` (like a slice).
    #[track_caller]
    fn index(&self, i: usize) -> &T {
        match self.get(i) {
            Some(e) => e,
            None => panic!("ring index {i} out of range for length {}", self.len),
        }
    }
}

impl<T> Drop for Ring<T> {
    fn drop(&mut self) {
        self.clear();
    }
}

impl<T: fmt::Debug> fmt::Debug for Ring<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::Ring;
    use proptest::prelude::*;
    use std::collections::VecDeque;
    use std::rc::Rc;

    #[derive(Debug, Clone)]
    enum Op {
        Push(u16),
        Pop,
        Clear,
        Shrink(u8),
        Set(u8, u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => any::<u16>().prop_map(Op::Push),
            3 => Just(Op::Pop),
            1 => Just(Op::Clear),
            1 => any::<u8>().prop_map(Op::Shrink),
            2 => (any::<u8>(), any::<u16>()).prop_map(|(i, v)| Op::Set(i, v)),
        ]
    }

    proptest! {
        /// Any sequence of operations leaves the ring holding what a
        /// `VecDeque` given the same operations holds, element by element,
        /// through every accessor; and every element pushed is dropped
        /// exactly once.
        #[test]
        fn ring_matches_vecdeque(ops in proptest::collection::vec(op(), 0..300)) {
            let token = Rc::new(());
            let mut ring: Ring<(u16, Rc<()>)> = Ring::new();
            let mut model: VecDeque<u16> = VecDeque::new();
            for op in ops {
                match op {
                    Op::Push(v) => {
                        ring.push_back_with(|| (v, token.clone()));
                        model.push_back(v);
                    }
                    Op::Pop => {
                        prop_assert_eq!(ring.pop_front().map(|e| e.0), model.pop_front());
                    }
                    Op::Clear => {
                        ring.clear();
                        model.clear();
                    }
                    Op::Shrink(c) => {
                        ring.shrink_to(c as usize);
                        prop_assert!(ring.capacity() >= ring.len());
                    }
                    Op::Set(i, v) => {
                        let i = i as usize;
                        for r in ring.range_mut(i, i + 1) {
                            r.0 = v;
                        }
                        if let Some(m) = model.get_mut(i) {
                            *m = v;
                        }
                    }
                }
                prop_assert_eq!(ring.len(), model.len());
                prop_assert_eq!(ring.is_empty(), model.is_empty());
                let got: Vec<u16> = ring.iter().map(|e| e.0).collect();
                let want: Vec<u16> = model.iter().copied().collect();
                prop_assert_eq!(&got, &want);
                let back: Vec<u16> = ring.iter().rev().map(|e| e.0).collect();
                prop_assert_eq!(back, want.iter().rev().copied().collect::<Vec<_>>());
                for i in 0..=model.len() {
                    prop_assert_eq!(ring.get(i).map(|e| e.0), model.get(i).copied());
                }
                prop_assert_eq!(ring.front().map(|e| e.0), model.front().copied());
                prop_assert_eq!(ring.back().map(|e| e.0), model.back().copied());
                let n = model.len();
                let (a, b) = (n / 3, n - n / 4);
                let part: Vec<u16> = ring.range_mut(a, b).map(|e| e.0).collect();
                prop_assert_eq!(part, want[a..b].to_vec());
                prop_assert_eq!(Rc::strong_count(&token), 1 + n);
            }
            drop(ring);
            prop_assert_eq!(Rc::strong_count(&token), 1);
        }
    }

    /// Growing a wrapped ring moves whichever part is shorter: the part
    /// before the wrap (to the new end) or the part after it (past the
    /// old end). Both keep the order.
    #[test]
    fn growing_a_wrapped_ring_keeps_the_order() {
        for popped in 0..8 {
            let mut ring = Ring::new();
            let mut model = VecDeque::new();
            for v in 0..8 {
                ring.push_back(v);
                model.push_back(v);
            }
            for _ in 0..popped {
                assert_eq!(ring.pop_front(), model.pop_front());
            }
            // Refill to the capacity (wrapping), then one more: grows.
            let mut v = 100;
            while ring.len() < ring.capacity() {
                ring.push_back(v);
                model.push_back(v);
                v += 1;
            }
            ring.push_back(v);
            model.push_back(v);
            assert!(ring.capacity() > 8);
            let got: Vec<i32> = ring.iter().copied().collect();
            assert_eq!(
                got,
                model.iter().copied().collect::<Vec<_>>(),
                "popped {popped}"
            );
            while let Some(x) = model.pop_front() {
                assert_eq!(ring.pop_front(), Some(x));
            }
        }
    }

    #[test]
    fn range_mut_clamps_to_the_elements_held() {
        let mut ring = Ring::new();
        for v in 0..10 {
            ring.push_back(v);
        }
        // Wrap the front around the buffer's end.
        for _ in 0..7 {
            ring.pop_front();
        }
        for v in 10..17 {
            ring.push_back(v);
        }
        let (a, b) = ring.as_slices();
        assert!(!a.is_empty() && !b.is_empty(), "the ring wraps");
        let got: Vec<i32> = ring.range_mut(2, 100).map(|v| *v).collect();
        assert_eq!(got, (9..17).collect::<Vec<_>>());
        assert_eq!(ring.range_mut(5, 3).count(), 0);
        for v in ring.range_mut(0, 2) {
            *v += 100;
        }
        let all: Vec<i32> = ring.iter().copied().collect();
        let mut want: Vec<i32> = (7..17).collect();
        want[0] += 100;
        want[1] += 100;
        assert_eq!(all, want);
    }
}
