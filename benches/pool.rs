//! The design card's pool question, decided by numbers (issue 9, point 6):
//! `object_pool::Pool` vs a tracepool-style pool vs plain `Box` allocation,
//! like for like.
//!
//! Every variant does the same work per iteration on the same struct
//! ([`SlotState`]: a stand-in for a trace slot's state with the kinds of
//! buffers tracepool keeps — node records, a node-id index, log records, a
//! text arena, an event byte arena and its index, a history queue):
//! **acquire** a state, **fill** it with one small trace (3 nodes, 3 log
//! lines, 8 events of ~120 bytes), then give it back:
//!
//! - `box`: `Box::new(SlotState::new())` (each container allocated at its
//!   initial capacity), fill, drop (every buffer freed);
//! - `object_pool`: `object_pool::Pool::pull` (a `Mutex<Vec<T>>`; `pull`
//!   falls back to `SlotState::new` when empty), fill, `reset()` (clear,
//!   keep capacity: `object_pool` has no reset hook, so the caller does it),
//!   drop the `Reusable` (pushed back under the mutex);
//! - `free_list`: a tracepool-style pool written here (the engine's own is
//!   internal): preallocated `Box<SlotState>`es and a lock-free free list of
//!   their indices (a Treiber stack with a generation tag against ABA); pop an
//!   index, fill, `reset()`, push the index back.
//!
//! Each at 1 thread and at 2 threads contending for the same pool (both
//! cores; time = wall time / acquisitions of both threads).
//!
//! ```text
//! cargo bench --bench pool
//! ```

use std::cell::UnsafeCell;
use std::collections::{HashMap, VecDeque};
use std::hint::black_box;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

// ---- the state: the same struct for every variant ----------------------------

/// A node record (indices into the text arena, no owned strings). Its fields
/// are written, as a slot's are, and read by no one here.
#[derive(Debug, Clone, Copy)]
#[allow(dead_code)]
struct NodeRec {
    id: [u8; 12],
    parent: u32,
    label: (u32, u32),
    status: u8,
    input: u64,
    output: u64,
    created_at: i64,
    start_time: i64,
    end_time: i64,
    updated_at: i64,
}

/// A stand-in for a trace slot's state.
#[derive(Debug)]
struct SlotState {
    nodes: Vec<NodeRec>,
    node_index: HashMap<[u8; 12], u32>,
    logs: Vec<(i64, u32, (u32, u32))>,
    text: String,
    arena: Vec<u8>,
    events: Vec<(u64, u32, u32)>,
    history: VecDeque<u64>,
}

impl SlotState {
    /// A fresh state, each container at its initial capacity.
    fn new() -> SlotState {
        SlotState {
            nodes: Vec::with_capacity(16),
            node_index: HashMap::with_capacity(16),
            logs: Vec::with_capacity(16),
            text: String::with_capacity(256),
            arena: Vec::with_capacity(4096),
            events: Vec::with_capacity(64),
            history: VecDeque::with_capacity(64),
        }
    }

    fn text(&mut self, s: &str) -> (u32, u32) {
        let a = self.text.len() as u32;
        self.text.push_str(s);
        (a, self.text.len() as u32)
    }

    fn event(&mut self, seq: u64, body: &[u8]) {
        let a = self.arena.len() as u32;
        self.arena.extend_from_slice(body);
        self.events.push((seq, a, self.arena.len() as u32));
        self.history.push_back(seq);
    }

    /// One small trace: 3 nodes, 3 log lines, 8 events.
    fn fill(&mut self) {
        const BODY: &[u8] = br#"{"type":"node_start","trace_id":"20261129123456789012","node_id":"abcdefghijkl","space_id":"","timestamp":1764380000000,"seq":1}"#;
        let mut seq = 0;
        for (i, label) in ["prepare", "work", "finish"].into_iter().enumerate() {
            let mut id = [b'a'; 12];
            id[0] = b'0' + i as u8;
            let label = self.text(label);
            self.node_index.insert(id, self.nodes.len() as u32);
            self.nodes.push(NodeRec {
                id,
                parent: i as u32,
                label,
                status: 1,
                input: i as u64,
                output: 0,
                created_at: 1_764_380_000_000,
                start_time: 1_764_380_000_000,
                end_time: 0,
                updated_at: 1_764_380_000_000,
            });
            seq += 1;
            self.event(seq, BODY);
            let msg = self.text("one log line");
            self.logs.push((1_764_380_000_000, i as u32, msg));
            seq += 1;
            self.event(seq, BODY);
        }
        for _ in 0..2 {
            seq += 1;
            self.event(seq, BODY);
        }
    }

    /// Clear everything, keep the capacity.
    fn reset(&mut self) {
        self.nodes.clear();
        self.node_index.clear();
        self.logs.clear();
        self.text.clear();
        self.arena.clear();
        self.events.clear();
        self.history.clear();
    }
}

// ---- the tracepool-style pool --------------------------------------------------

const NIL: u32 = u32::MAX;

/// Preallocated boxes and a lock-free free list of their indices: the head
/// word is `(tag << 32) | index`, the tag bumped on every change (ABA).
struct FreeList {
    head: AtomicU64,
    next: Box<[AtomicU32]>,
    slots: Box<[UnsafeCell<Box<SlotState>>]>,
}

// Safety: a slot's `UnsafeCell` is only touched by the holder of its index,
// and an index is held by one `Lease` at a time (the free list hands each out
// once until it is pushed back).
unsafe impl Sync for FreeList {}

impl FreeList {
    fn new(n: usize) -> FreeList {
        let list = FreeList {
            head: AtomicU64::new(u64::from(NIL)),
            next: (0..n).map(|_| AtomicU32::new(NIL)).collect(),
            slots: (0..n)
                .map(|_| UnsafeCell::new(Box::new(SlotState::new())))
                .collect(),
        };
        for i in (0..n as u32).rev() {
            list.push(i);
        }
        list
    }

    fn pop(&self) -> Option<u32> {
        let mut h = self.head.load(Ordering::Acquire);
        loop {
            let idx = h as u32;
            if idx == NIL {
                return None;
            }
            let next = self.next[idx as usize].load(Ordering::Relaxed);
            let new = (((h >> 32) + 1) << 32) | u64::from(next);
            match self
                .head
                .compare_exchange_weak(h, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Some(idx),
                Err(x) => h = x,
            }
        }
    }

    fn push(&self, idx: u32) {
        let mut h = self.head.load(Ordering::Relaxed);
        loop {
            self.next[idx as usize].store(h as u32, Ordering::Relaxed);
            let new = (((h >> 32) + 1) << 32) | u64::from(idx);
            match self
                .head
                .compare_exchange_weak(h, new, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(x) => h = x,
            }
        }
    }

    fn lease(&self) -> Lease<'_> {
        Lease {
            list: self,
            idx: self.pop().expect("pool has a free slot"),
        }
    }
}

/// A checked-out slot: reset and pushed back on drop.
struct Lease<'a> {
    list: &'a FreeList,
    idx: u32,
}

impl Lease<'_> {
    fn state(&mut self) -> &mut SlotState {
        // Safety: this lease holds `idx` (see `impl Sync for FreeList`).
        unsafe { &mut *self.list.slots[self.idx as usize].get() }
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        self.state().reset();
        self.list.push(self.idx);
    }
}

// ---- the three variants, one iteration each ------------------------------------

fn with_box() {
    let mut s = Box::new(SlotState::new());
    s.fill();
    black_box(&*s);
}

fn with_object_pool(pool: &object_pool::Pool<SlotState>) {
    let mut s = pool.pull(SlotState::new);
    s.fill();
    black_box(&*s);
    s.reset();
}

fn with_free_list(list: &FreeList) {
    let mut l = list.lease();
    let s = l.state();
    s.fill();
    black_box(&*s);
}

/// `iters` iterations of `f` split over `threads` threads started together;
/// the wall time.
fn spread(iters: u64, threads: u64, f: &(impl Fn() + Sync)) -> Duration {
    if threads == 1 {
        let start = Instant::now();
        for _ in 0..iters {
            f();
        }
        return start.elapsed();
    }
    let start = Instant::now();
    std::thread::scope(|s| {
        for w in 0..threads {
            s.spawn(move || {
                for _ in 0..iters / threads + u64::from(w < iters % threads) {
                    f();
                }
            });
        }
    });
    start.elapsed()
}

fn bench_pool(c: &mut Criterion) {
    let mut g = c.benchmark_group("pool");
    let op = object_pool::Pool::new(64, SlotState::new);
    let fl = FreeList::new(64);
    for threads in [1u64, 2] {
        g.bench_with_input(BenchmarkId::new("box", threads), &threads, |b, &t| {
            b.iter_custom(|n| spread(n, t, &with_box))
        });
        g.bench_with_input(
            BenchmarkId::new("object_pool", threads),
            &threads,
            |b, &t| b.iter_custom(|n| spread(n, t, &|| with_object_pool(&op))),
        );
        g.bench_with_input(BenchmarkId::new("free_list", threads), &threads, |b, &t| {
            b.iter_custom(|n| spread(n, t, &|| with_free_list(&fl)))
        });
    }
    g.finish();
}

criterion_group!(benches, bench_pool);
criterion_main!(benches);
