//! A lock-free LIFO of free slot indices (a Treiber stack), with a flag
//! saying that callers wait for a slot.
//!
//! The links live next to the slots (each slot has an `AtomicU32` "next free"
//! field, reached through [`Links`]), so pushing and popping never allocate and
//! the list can grow with the pool. The head packs a 31-bit tag, the
//! *waiting* flag and the 32-bit index of the top slot; every push and pop
//! bumps the tag, so a pop that raced with a pop-push of the same index (ABA)
//! fails its CAS and retries instead of corrupting the list.
//!
//! The waiting flag lives in the same word so that a push and a waiter's
//! announcement are ordered by that one atomic: a push either sees the flag
//! (and the pusher wakes a waiter) or happened before it was set (and the
//! waiter's next pop finds the pushed index). No fence is needed.
//!
//! This module owns only the list; whether a popped slot is reset, and who may
//! touch it, is the pool's business.

use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed};

use crate::loom::{AtomicU32, AtomicU64};

/// Index meaning "no slot".
pub(crate) const NIL: u32 = u32::MAX;

/// Access to the per-slot "next free" links.
pub(crate) trait Links {
    /// The link of slot `idx`.
    fn link(&self, idx: u32) -> &AtomicU32;
}

/// Tagged Treiber stack of slot indices.
#[derive(Debug)]
pub(crate) struct FreeList {
    head: AtomicU64,
}

const WAITING: u64 = 1 << 32;
const TAG_SHIFT: u32 = 33;

fn pack(tag: u64, waiting: u64, idx: u32) -> u64 {
    (tag << TAG_SHIFT) | waiting | u64::from(idx)
}

/// (tag, waiting flag bit, top index)
fn unpack(v: u64) -> (u64, u64, u32) {
    // The low 32 bits are the index.
    (
        v >> TAG_SHIFT,
        v & WAITING,
        (v & u64::from(u32::MAX)) as u32,
    )
}

fn next_tag(tag: u64) -> u64 {
    (tag + 1) & ((1 << (64 - TAG_SHIFT)) - 1)
}

impl FreeList {
    /// An empty list.
    pub(crate) fn new() -> Self {
        FreeList {
            head: AtomicU64::new(pack(0, 0, NIL)),
        }
    }

    /// Pushes `idx` (the caller must own the slot: it is not in the list).
    /// Returns whether the waiting flag was set at that moment.
    pub(crate) fn push<L: Links + ?Sized>(&self, links: &L, idx: u32) -> bool {
        debug_assert_ne!(idx, NIL);
        let mut head = self.head.load(Acquire);
        loop {
            let (tag, waiting, top) = unpack(head);
            links.link(idx).store(top, Relaxed);
            match self.head.compare_exchange_weak(
                head,
                pack(next_tag(tag), waiting, idx),
                AcqRel,
                Acquire,
            ) {
                Ok(_) => return waiting != 0,
                Err(actual) => head = actual,
            }
        }
    }

    /// Pops a free index, or `None` when the list is empty.
    pub(crate) fn pop<L: Links + ?Sized>(&self, links: &L) -> Option<u32> {
        let mut head = self.head.load(Acquire);
        loop {
            let (tag, waiting, top) = unpack(head);
            if top == NIL {
                return None;
            }
            // May read a link that a concurrent pop/push is rewriting; the
            // tag makes the CAS below fail in that case.
            let next = links.link(top).load(Relaxed);
            match self.head.compare_exchange_weak(
                head,
                pack(next_tag(tag), waiting, next),
                AcqRel,
                Acquire,
            ) {
                Ok(_) => return Some(top),
                Err(actual) => head = actual,
            }
        }
    }

    /// Sets or clears the waiting flag (the waiter queue does it under its
    /// lock, when it stops or starts being empty).
    pub(crate) fn set_waiting(&self, on: bool) {
        let flag = if on { WAITING } else { 0 };
        let mut head = self.head.load(Acquire);
        loop {
            if head & WAITING == flag {
                return;
            }
            match self
                .head
                .compare_exchange_weak(head, (head & !WAITING) | flag, AcqRel, Acquire)
            {
                Ok(_) => return,
                Err(actual) => head = actual,
            }
        }
    }
}

#[cfg(test)]
impl Links for Vec<AtomicU32> {
    fn link(&self, idx: u32) -> &AtomicU32 {
        &self[idx as usize]
    }
}

#[cfg(all(test, not(tracepool_loom)))]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::Arc;

    fn links(n: u32) -> Vec<AtomicU32> {
        (0..n).map(|_| AtomicU32::new(NIL)).collect()
    }

    #[test]
    fn lifo_and_empty() {
        let l = links(3);
        let f = FreeList::new();
        assert_eq!(f.pop(&l), None);
        for i in 0..3 {
            f.push(&l, i);
        }
        assert_eq!(f.pop(&l), Some(2));
        assert_eq!(f.pop(&l), Some(1));
        assert_eq!(f.pop(&l), Some(0));
        assert_eq!(f.pop(&l), None);
    }

    #[test]
    fn threads_never_share_an_index() {
        let n = 64u32;
        let l = Arc::new(links(n));
        let f = Arc::new(FreeList::new());
        for i in 0..n {
            f.push(&*l, i);
        }
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let (l, f) = (l.clone(), f.clone());
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        let mut held = Vec::new();
                        for _ in 0..3 {
                            if let Some(i) = f.pop(&*l) {
                                held.push(i);
                            }
                        }
                        for i in held {
                            f.push(&*l, i);
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let mut seen = HashSet::new();
        while let Some(i) = f.pop(&*l) {
            assert!(seen.insert(i), "index {i} listed twice");
        }
        assert_eq!(seen.len(), n as usize);
    }
}

/// Loom model: run with
/// `RUSTFLAGS="--cfg tracepool_loom" CARGO_TARGET_DIR=target/loom cargo test --release --lib free_list`.
#[cfg(all(test, tracepool_loom))]
mod loom_model {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    fn links(n: u32) -> Vec<AtomicU32> {
        (0..n).map(|_| AtomicU32::new(NIL)).collect()
    }

    /// Two threads pop and push concurrently while a third pops: no index is
    /// ever handed out twice and none is lost.
    #[test]
    fn pop_push_race_keeps_every_index_once() {
        loom::model(|| {
            let l = Arc::new(links(3));
            let f = Arc::new(FreeList::new());
            for i in 0..3 {
                f.push(&*l, i);
            }
            let t1 = {
                let (l, f) = (l.clone(), f.clone());
                thread::spawn(move || {
                    let a = f.pop(&*l);
                    if let Some(a) = a {
                        f.push(&*l, a);
                    }
                })
            };
            let t2 = {
                let (l, f) = (l.clone(), f.clone());
                thread::spawn(move || f.pop(&*l))
            };
            let taken = f.pop(&*l);
            t1.join().unwrap();
            let taken2 = t2.join().unwrap();
            let mut all: Vec<u32> = taken.into_iter().chain(taken2).collect();
            while let Some(i) = f.pop(&*l) {
                all.push(i);
            }
            all.sort_unstable();
            assert_eq!(all, vec![0, 1, 2]);
        });
    }

    /// The ABA shape: a pop reads `top` and its link, another thread pops
    /// `top` and its successor and pushes `top` back; the first pop must not
    /// install the stale successor.
    #[test]
    fn aba_is_detected_by_the_tag() {
        loom::model(|| {
            let l = Arc::new(links(2));
            let f = Arc::new(FreeList::new());
            f.push(&*l, 1);
            f.push(&*l, 0); // list: 0 -> 1
            let t = {
                let (l, f) = (l.clone(), f.clone());
                thread::spawn(move || {
                    let a = f.pop(&*l);
                    let b = f.pop(&*l);
                    if let Some(a) = a {
                        f.push(&*l, a);
                    }
                    b
                })
            };
            let mine = f.pop(&*l);
            let theirs = t.join().unwrap();
            let mut all: Vec<u32> = mine.into_iter().chain(theirs).collect();
            while let Some(i) = f.pop(&*l) {
                all.push(i);
            }
            all.sort_unstable();
            assert_eq!(all, vec![0, 1]);
        });
    }
}
