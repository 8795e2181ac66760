//! The state of one trace, as held by a slot: node arena, cursor, logs,
//! spaces, the seq-numbered event history and the write-behind queue.
//!
//! Every mutation runs under the slot's lock and emits its events in the same
//! critical section: numbering an event, appending it to history, queueing it
//! for the driver and waking subscribers is one step (the single sequencer),
//! so replay and live delivery can never disagree on order.
//!
//! Every per-trace collection is bounded (nodes, spaces, keys per space,
//! subscribers: an operation that would cross the bound fails whole with
//! `Error::LimitExceeded`; log text: the oldest lines leave memory; history
//! and the write-behind queue: the oldest events leave them, counted).
//!
//! [`TraceState::reset`] clears everything in place for the slot's next
//! occupant, keeping buffer capacity up to a cap so that one huge trace does
//! not pin memory forever. This module does not know about the registry, the
//! workers or the driver.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use bytes::BytesMut;
use serde_json::{Map, Value};
use smallvec::SmallVec;

use crate::error::{Error, Result};
use crate::event::json::JsonOut;
use crate::event::{EventKind, StoredEvent, wire};
use crate::id::{ShortId, TraceId, now_ms};
use crate::model::{
    Level, LogEntry, NodeData, NodeStatus, SpaceData, SpaceInfo, TraceInfo, TraceStatus,
};
use crate::options::{NodeOptions, ParallelInput, SpaceOptions, TraceOptions};
use crate::subscribe::SubShared;
use crate::trace::persist::EncodedLines;

/// Per-slot bounds, from the builder.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Events kept in memory per trace.
    pub(crate) history: usize,
    /// Events a subscriber may fall behind live events before `Lagged`.
    pub(crate) subscriber_buffer: usize,
    /// Events waiting for the driver before the oldest is dropped (and counted).
    pub(crate) pending: usize,
    /// The driver keeps what it is given: events are queued for it.
    pub(crate) persists: bool,
    /// The driver wants document snapshots and log lines (persistent drivers).
    pub(crate) documents: bool,
    /// The driver's name, written into `trace_info.json`.
    pub(crate) driver: &'static str,
    /// Nodes per trace.
    pub(crate) max_nodes: usize,
    /// Log bytes kept in memory per trace.
    pub(crate) max_log_bytes: usize,
    /// Subscriptions per trace.
    pub(crate) max_subscribers: usize,
    /// Keys per space.
    pub(crate) max_space_entries: usize,
    /// Keys in all spaces of a trace together.
    pub(crate) max_trace_space_entries: usize,
    /// Spaces per trace.
    pub(crate) max_spaces: usize,
    /// Queued event bytes, engine-wide.
    pub(crate) pending_bytes: usize,
    // redis-hook: the driver leases traces to one engine at a time.
    pub(crate) leases: bool, // redis-hook
}

/// Where a slot's occupant is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// No trace: the slot is free (or being set up).
    Free,
    /// A loaded trace: handles operate on it.
    Live,
    /// Released, with writes still on their way to the driver; no handle
    /// reaches it any more.
    Draining,
}

/// A trace publishes its queued bytes to the engine-wide total in steps of
/// this size (so emitting an event touches no shared counter); the
/// engine-wide bound is checked at each step.
const PENDING_STEP: usize = 64 * 1024;

/// Dirty flags of a space (for document snapshots).
pub(crate) const SPACE_META: u8 = 1;
pub(crate) const SPACE_DATA: u8 = 2;
pub(crate) const SPACE_DELETED: u8 = 4;

// Capacity kept across a reset; anything larger is released.
const RETAIN_NODES: usize = 1024;
const RETAIN_LOGS: usize = 4096;
const RETAIN_LOG_TEXT: usize = 256 * 1024;
const RETAIN_SPACES: usize = 64;
const RETAIN_SPACE_KEYS: usize = 1024;
const RETAIN_PENDING: usize = 4096;
const RETAIN_ARENA: usize = 1024 * 1024;
/// What one log line costs against `max_log_bytes` besides its encoded bytes.
pub(crate) const LOG_LINE_OVERHEAD: usize = std::mem::size_of::<LogRec>();

#[derive(Debug)]
pub(crate) struct NodeRec {
    pub(crate) id: ShortId,
    pub(crate) parents: SmallVec<[u32; 2]>,
    pub(crate) children: SmallVec<[u32; 4]>,
    pub(crate) label: Cow<'static, str>,
    pub(crate) node_type: Cow<'static, str>,
    pub(crate) icon: Cow<'static, str>,
    pub(crate) description: Cow<'static, str>,
    pub(crate) metadata: Map<String, Value>,
    pub(crate) auto_complete_parent: Option<bool>,
    pub(crate) status: NodeStatus,
    pub(crate) input: Option<Value>,
    pub(crate) output: Option<Value>,
    pub(crate) created_at: i64,
    pub(crate) start_time: i64,
    pub(crate) end_time: i64,
    pub(crate) updated_at: i64,
    /// Listed in `TraceState::dirty_nodes`.
    pub(crate) dirty: bool,
}

#[derive(Debug)]
pub(crate) struct LogRec {
    pub(crate) timestamp: i64,
    pub(crate) level: Level,
    /// Byte range of the message in the trace's log text (offsets from the
    /// first byte ever logged; `TraceState::log_text` starts at `text_base`).
    pub(crate) msg: (usize, usize),
    pub(crate) data: Value,
    pub(crate) node: u32,
    /// What this line counts against `max_log_bytes`.
    pub(crate) cost: usize,
}

#[derive(Debug)]
pub(crate) struct SpaceRec {
    pub(crate) id: ShortId,
    pub(crate) label: Cow<'static, str>,
    pub(crate) space_type: Cow<'static, str>,
    pub(crate) icon: Cow<'static, str>,
    pub(crate) description: Cow<'static, str>,
    pub(crate) ttl: u64,
    pub(crate) metadata: Map<String, Value>,
    pub(crate) created_at: i64,
    pub(crate) updated_at: i64,
    pub(crate) data: Map<String, Value>,
}

/// Which nodes a trace-level operation addresses.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target {
    /// The trace's current nodes.
    Current,
    /// One node.
    Node(u32),
}

/// The state of one trace (or of an empty slot).
#[derive(Debug)]
pub(crate) struct TraceState {
    /// Bumped on every reset; handles carry the generation they were made for.
    pub(crate) generation: u64,
    pub(crate) phase: Phase,
    pub(crate) id: TraceId,
    pub(crate) created_by: Option<String>,
    pub(crate) team_id: Option<String>,
    pub(crate) tenant_id: Option<String>,
    pub(crate) metadata: Map<String, Value>,
    pub(crate) auto_archive: bool,
    pub(crate) archived: bool,
    /// `mark_complete` asked for an archive that no worker made yet.
    pub(crate) archive_requested: bool,
    pub(crate) status: TraceStatus,
    pub(crate) finished: bool,
    pub(crate) created_at: i64,
    pub(crate) updated_at: i64,
    pub(crate) last_ts: i64,
    pub(crate) nodes: Vec<NodeRec>,
    pub(crate) node_index: HashMap<ShortId, u32>,
    pub(crate) root: Option<u32>,
    pub(crate) current: SmallVec<[u32; 4]>,
    pub(crate) logs: VecDeque<LogRec>,
    /// Log lines that left memory so far: the index (in the trace's whole
    /// log) of `logs[0]`.
    pub(crate) logs_base: usize,
    /// What the lines in `logs` count against `max_log_bytes`.
    pub(crate) log_bytes: usize,
    pub(crate) log_text: String,
    /// Offset of `log_text[0]` in the trace's log text.
    pub(crate) text_base: usize,
    pub(crate) spaces: Vec<SpaceRec>,
    /// Keys in all spaces together.
    pub(crate) space_entries: usize,
    /// Cleared key-value maps of earlier spaces, reused by `create_space`.
    spare_maps: Vec<Map<String, Value>>,
    pub(crate) history: VecDeque<StoredEvent>,
    /// Seq of the next event (1 for a fresh trace).
    pub(crate) next_seq: u64,
    /// Timestamp of the newest event evicted from history (for time cursors).
    pub(crate) evicted_max_ts: i64,
    arena: BytesMut,
    /// Events not yet handed to the driver (write-behind queue).
    pub(crate) pending: VecDeque<StoredEvent>,
    /// Bytes of `pending` plus `unflushed_lines`.
    pub(crate) pending_bytes: usize,
    /// The part of `pending_bytes` added to `pending_total`.
    pub(crate) pending_published: usize,
    /// Queued bytes of every trace of the engine (shared by all slots).
    pub(crate) pending_total: Arc<AtomicUsize>,
    /// Log lines that left memory before they were handed to the driver,
    /// already encoded (persistent drivers only).
    pub(crate) unflushed_lines: EncodedLines,
    pub(crate) subs: Vec<Arc<SubShared>>,
    /// The slot index sits in its worker's queue. Owned by the worker
    /// protocol: survives resets so an index is never queued twice.
    pub(crate) queued: bool,
    /// The flush epoch when the slot was last queued (see `engine::flush`).
    pub(crate) queued_epoch: u64,
    /// A worker is writing a batch taken from this slot.
    pub(crate) in_flight: bool,
    /// Created (not opened) by this engine, and no batch of it written yet:
    /// the driver creates its storage exclusively.
    pub(crate) new_trace: bool,
    /// Storage refused the trace (its id exists there): its writes are
    /// dropped and counted, never merged into the other trace.
    // redis-hook: also set when another engine took the trace's lease.
    pub(crate) write_refused: bool,
    // redis-hook: the driver holds (or will take) this trace's lease for this
    // redis-hook: engine; its drain sends a release batch that gives it up.
    pub(crate) lease_held: bool, // redis-hook
    // redis-hook: another engine took the lease: (owner, expiry in ms since
    // redis-hook: the epoch); operations give `Leased`, writes are dropped.
    pub(crate) lease_lost: Option<Box<(String, i64)>>, // redis-hook
    /// When a draining slot gives up on a failing driver.
    pub(crate) drain_deadline: Option<Instant>,
    pub(crate) limits: Limits,
    // Document snapshots not yet handed to the driver (persistent drivers only).
    pub(crate) info_dirty: bool,
    pub(crate) dirty_nodes: Vec<u32>,
    pub(crate) dirty_spaces: Vec<(ShortId, u8)>,
    /// Log lines before this index (in the trace's whole log) were handed to
    /// the driver (or sit encoded in `unflushed_lines`).
    pub(crate) logs_flushed: usize,
    // Counters since the last time the engine collected them.
    pub(crate) stat_emitted: u64,
    pub(crate) stat_evicted: u64,
    pub(crate) stat_pending_dropped: u64,
    pub(crate) stat_logs_dropped: u64,
    pub(crate) stat_logs_evicted: u64,
}

impl TraceState {
    pub(crate) fn new(limits: Limits, pending_total: Arc<AtomicUsize>) -> TraceState {
        TraceState {
            generation: 1,
            phase: Phase::Free,
            id: TraceId::EMPTY,
            created_by: None,
            team_id: None,
            tenant_id: None,
            metadata: Map::new(),
            auto_archive: false,
            archived: false,
            archive_requested: false,
            status: TraceStatus::Pending,
            finished: false,
            created_at: 0,
            updated_at: 0,
            last_ts: 0,
            nodes: Vec::new(),
            node_index: HashMap::new(),
            root: None,
            current: SmallVec::new(),
            logs: VecDeque::new(),
            logs_base: 0,
            log_bytes: 0,
            log_text: String::new(),
            text_base: 0,
            spaces: Vec::new(),
            space_entries: 0,
            spare_maps: Vec::new(),
            history: VecDeque::new(),
            next_seq: 1,
            evicted_max_ts: i64::MIN,
            arena: BytesMut::new(),
            pending: VecDeque::new(),
            pending_bytes: 0,
            pending_published: 0,
            pending_total,
            unflushed_lines: EncodedLines::default(),
            subs: Vec::new(),
            queued: false,
            queued_epoch: 0,
            in_flight: false,
            new_trace: false,
            write_refused: false,
            lease_held: false, // redis-hook
            lease_lost: None,  // redis-hook
            drain_deadline: None,
            limits,
            info_dirty: false,
            dirty_nodes: Vec::new(),
            dirty_spaces: Vec::new(),
            logs_flushed: 0,
            stat_emitted: 0,
            stat_evicted: 0,
            stat_pending_dropped: 0,
            stat_logs_dropped: 0,
            stat_logs_evicted: 0,
        }
    }

    /// Whether handles may operate on this state (a live trace of this generation).
    pub(crate) fn is_live(&self, generation: u64) -> bool {
        self.generation == generation && self.phase == Phase::Live
    }

    /// A timestamp for the current operation: the clock, but never earlier
    /// than the previous event of this trace (timestamps are non-decreasing).
    pub(crate) fn tick(&mut self) -> i64 {
        let t = now_ms().max(self.last_ts);
        self.last_ts = t;
        t
    }

    /// Takes a fresh slot into use for a new trace and emits `init`.
    /// `new_trace`: created here (storage must not have it), not opened.
    pub(crate) fn start(&mut self, id: TraceId, opts: TraceOptions, now: i64) {
        let ts = now.max(self.last_ts);
        self.last_ts = ts;
        self.phase = Phase::Live;
        self.new_trace = true;
        self.id = id;
        self.created_by = opts.created_by;
        self.team_id = opts.team_id;
        self.tenant_id = opts.tenant_id;
        self.metadata = opts.metadata;
        self.auto_archive = opts.auto_archive;
        self.created_at = ts;
        self.updated_at = ts;
        self.touch_info();
        self.emit(EventKind::Init, None, None, ts, &Payload::Init);
    }

    /// Whether anything is left for the driver: queued events or lines,
    /// dirty documents, or an archive to make.
    pub(crate) fn has_writes(&self) -> bool {
        !self.pending.is_empty()
            || !self.unflushed_lines.is_empty()
            || (self.limits.documents
                && (self.info_dirty
                    || !self.dirty_nodes.is_empty()
                    || !self.dirty_spaces.is_empty()
                    || self.logs_flushed < self.logs_base + self.logs.len()))
            || (self.archive_requested && !self.archived)
    }

    /// Whether a worker should look at this slot: writes, or counters to collect.
    pub(crate) fn wants_worker(&self) -> bool {
        self.stat_emitted
            | self.stat_evicted
            | self.stat_pending_dropped
            | self.stat_logs_dropped
            | self.stat_logs_evicted
            != 0
            || self.has_writes()
    }

    /// Drops everything queued for the driver (events, lines, dirty
    /// documents, an archive request). Returns the number of events dropped.
    pub(crate) fn discard_writes(&mut self) -> u64 {
        let n = self.pending.len() as u64;
        self.pending.clear();
        self.unflushed_lines.clear();
        self.pending_bytes = 0;
        self.unpublish_pending();
        self.info_dirty = false;
        for &n in &self.dirty_nodes {
            self.nodes[n as usize].dirty = false;
        }
        self.dirty_nodes.clear();
        self.dirty_spaces.clear();
        self.logs_flushed = self.logs_base + self.logs.len();
        self.archive_requested = false;
        n
    }

    /// Takes what this slot published back out of the engine-wide total.
    pub(crate) fn unpublish_pending(&mut self) {
        if self.pending_published > 0 {
            self.pending_total
                .fetch_sub(self.pending_published, Ordering::Relaxed);
            self.pending_published = 0;
        }
    }

    /// Clears the slot in place for its next occupant and bumps the generation.
    /// Pending writes must have been taken and subscribers detached before.
    pub(crate) fn reset(&mut self) {
        self.generation += 1;
        self.phase = Phase::Free;
        self.id = TraceId::EMPTY;
        self.created_by = None;
        self.team_id = None;
        self.tenant_id = None;
        self.metadata.clear();
        self.auto_archive = false;
        self.archived = false;
        self.archive_requested = false;
        self.status = TraceStatus::Pending;
        self.finished = false;
        self.created_at = 0;
        self.updated_at = 0;
        self.last_ts = 0;
        clear_capped(&mut self.nodes, RETAIN_NODES);
        self.node_index.clear();
        if self.node_index.capacity() > RETAIN_NODES {
            self.node_index.shrink_to(RETAIN_NODES);
        }
        self.root = None;
        self.current.clear();
        self.logs.clear();
        if self.logs.capacity() > RETAIN_LOGS {
            self.logs.shrink_to(RETAIN_LOGS);
        }
        self.logs_base = 0;
        self.log_bytes = 0;
        self.log_text.clear();
        if self.log_text.capacity() > RETAIN_LOG_TEXT {
            self.log_text.shrink_to(RETAIN_LOG_TEXT);
        }
        self.text_base = 0;
        for sp in self.spaces.drain(..) {
            let mut data = sp.data;
            if self.spare_maps.len() < RETAIN_SPACES && data.len() <= RETAIN_SPACE_KEYS {
                data.clear();
                self.spare_maps.push(data);
            }
        }
        if self.spaces.capacity() > RETAIN_SPACES {
            self.spaces.shrink_to(RETAIN_SPACES);
        }
        self.space_entries = 0;
        self.history.clear();
        if self.history.capacity() > self.limits.history + 1 {
            self.history.shrink_to(self.limits.history + 1);
        }
        self.next_seq = 1;
        self.evicted_max_ts = i64::MIN;
        if self.arena.capacity() > RETAIN_ARENA {
            self.arena = BytesMut::new();
        } else {
            // History and the write queue are empty now: unless a reader still
            // holds an event, the chunk is unique again and `reserve` takes
            // it back from its start instead of allocating a new one.
            self.arena.clear();
            self.arena.reserve(wire::ARENA_CHUNK);
        }
        debug_assert!(self.pending.is_empty());
        self.pending.clear();
        if self.pending.capacity() > RETAIN_PENDING {
            self.pending.shrink_to(RETAIN_PENDING);
        }
        self.pending_bytes = 0;
        self.unpublish_pending();
        self.unflushed_lines.clear();
        self.subs.clear();
        self.in_flight = false;
        self.new_trace = false;
        self.write_refused = false;
        self.lease_held = false; // redis-hook
        self.lease_lost = None; // redis-hook
        self.drain_deadline = None;
        self.info_dirty = false;
        clear_capped(&mut self.dirty_nodes, RETAIN_NODES);
        clear_capped(&mut self.dirty_spaces, RETAIN_SPACES);
        self.logs_flushed = 0;
    }

    // ---- dirty tracking (document snapshots) ------------------------------

    pub(crate) fn touch_node(&mut self, n: u32) {
        if !self.limits.documents {
            return;
        }
        let node = &mut self.nodes[n as usize];
        if !node.dirty {
            node.dirty = true;
            self.dirty_nodes.push(n);
        }
    }

    pub(crate) fn touch_space(&mut self, id: ShortId, flags: u8) {
        if !self.limits.documents {
            return;
        }
        match self.dirty_spaces.iter_mut().find(|(s, _)| *s == id) {
            Some((_, f)) if flags & SPACE_DELETED != 0 => *f = SPACE_DELETED,
            Some((_, f)) => *f |= flags,
            None => self.dirty_spaces.push((id, flags)),
        }
    }

    pub(crate) fn touch_info(&mut self) {
        self.info_dirty = self.limits.documents;
    }

    // ---- emission ---------------------------------------------------------

    /// Numbers, serializes and records one event; wakes subscribers.
    pub(crate) fn emit(
        &mut self,
        kind: EventKind,
        node: Option<ShortId>,
        space: Option<ShortId>,
        ts: i64,
        payload: &Payload<'_>,
    ) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut arena = std::mem::take(&mut self.arena);
        let (bytes, data_range) = wire::encode(
            &mut arena,
            seq,
            kind,
            self.id.as_str(),
            node.as_ref().map_or("", |n| n.as_str()),
            space.as_ref().map_or("", |s| s.as_str()),
            ts,
            |out| self.write_payload(payload, out),
        );
        self.arena = arena;
        let ev = StoredEvent {
            seq,
            kind,
            timestamp: ts,
            node,
            space,
            bytes,
            data_range,
        };
        if self.history.len() >= self.limits.history
            && let Some(old) = self.history.pop_front()
        {
            self.evicted_max_ts = old.timestamp;
            self.stat_evicted += 1;
        }
        if self.limits.persists {
            if self.pending.len() >= self.limits.pending
                && let Some(old) = self.pending.pop_front()
            {
                // The driver is not keeping up and the bound is reached: drop
                // the oldest queued write and count it (never silent, never
                // unbounded).
                self.pending_bytes -= old.bytes.len();
                self.stat_pending_dropped += 1;
            }
            self.pending_bytes += ev.bytes.len();
            self.pending.push_back(ev.clone());
            self.account_pending();
        }
        self.history.push_back(ev);
        self.stat_emitted += 1;
        self.updated_at = ts;
        for s in &self.subs {
            s.wake();
        }
    }

    /// Publishes this trace's queued bytes to the engine-wide total once they
    /// grew by a step, and enforces the engine-wide bound: over it, this
    /// trace's oldest queued events are dropped (counted).
    pub(crate) fn account_pending(&mut self) {
        if self.pending_bytes < self.pending_published + PENDING_STEP {
            return;
        }
        let add = self.pending_bytes - self.pending_published;
        let total = self.pending_total.fetch_add(add, Ordering::Relaxed) + add;
        self.pending_published = self.pending_bytes;
        if total <= self.limits.pending_bytes {
            return;
        }
        let mut over = total - self.limits.pending_bytes;
        let mut freed = 0;
        while over > 0 {
            let Some(old) = self.pending.pop_front() else {
                break;
            };
            let n = old.bytes.len();
            freed += n;
            over = over.saturating_sub(n);
            self.stat_pending_dropped += 1;
        }
        let freed = freed.min(self.pending_published);
        self.pending_bytes -= freed;
        self.pending_published -= freed;
        self.pending_total.fetch_sub(freed, Ordering::Relaxed);
    }

    // ---- checks -------------------------------------------------------------

    fn check_open(&self) -> Result<()> {
        if self.finished {
            Err(Error::TraceFinished)
        } else {
            Ok(())
        }
    }

    /// Fails unless `more` nodes fit under `max_nodes`.
    fn check_nodes(&self, more: usize) -> Result<()> {
        let limit = self.limits.max_nodes;
        if self.nodes.len().saturating_add(more) > limit {
            Err(Error::LimitExceeded {
                what: "nodes",
                limit,
            })
        } else {
            Ok(())
        }
    }

    /// Resolves a node id of this trace.
    pub(crate) fn find_node(&self, id: &str) -> Option<u32> {
        ShortId::parse(id).and_then(|s| self.node_index.get(&s).copied())
    }

    fn find_space(&self, id: &str) -> Result<usize> {
        ShortId::parse(id)
            .and_then(|s| self.spaces.iter().position(|sp| sp.id == s))
            .ok_or(Error::SpaceNotFound)
    }

    fn targets(&self, t: Target) -> SmallVec<[u32; 4]> {
        match t {
            Target::Current => self.current.clone(),
            Target::Node(n) => SmallVec::from_slice(&[n]),
        }
    }

    // ---- nodes --------------------------------------------------------------

    /// Adds a node; the caller checked `check_nodes` (so the index fits).
    fn new_node(&mut self, parents: &[u32], input: Value, opts: NodeOptions, ts: i64) -> u32 {
        let idx = arena_index(self.nodes.len());
        let id = loop {
            // One hash per new node: insert, and retry on the (astronomically
            // rare) collision.
            let id = ShortId::generate();
            if let std::collections::hash_map::Entry::Vacant(v) = self.node_index.entry(id) {
                v.insert(idx);
                break id;
            }
        };
        self.nodes.push(NodeRec {
            id,
            parents: SmallVec::from_slice(parents),
            children: SmallVec::new(),
            label: opts.label,
            node_type: opts.node_type,
            icon: opts.icon,
            description: opts.description,
            metadata: opts.metadata,
            auto_complete_parent: opts.auto_complete_parent,
            status: NodeStatus::Running,
            input: if input.is_null() { None } else { Some(input) },
            output: None,
            created_at: ts,
            start_time: ts,
            end_time: 0,
            updated_at: ts,
            dirty: false,
        });
        self.touch_node(idx);
        for &p in parents {
            self.nodes[p as usize].children.push(idx);
            self.touch_node(p);
        }
        idx
    }

    /// Moves `n` to a terminal status and emits `node_complete`/`node_failed`.
    /// Returns false (and does nothing) if the node is already terminal: this
    /// compare-and-set is what keeps terminal events to one per node.
    fn finish_node(&mut self, n: u32, status: NodeStatus, error: &str, ts: i64) -> bool {
        let node = &mut self.nodes[n as usize];
        if node.status.is_terminal() {
            return false;
        }
        node.status = status;
        node.end_time = ts;
        node.updated_at = ts;
        let id = node.id;
        self.touch_node(n);
        if status == NodeStatus::Completed {
            self.emit(
                EventKind::NodeComplete,
                Some(id),
                None,
                ts,
                &Payload::NodeComplete(n),
            );
        } else {
            self.emit(
                EventKind::NodeFailed,
                Some(id),
                None,
                ts,
                &Payload::NodeFailed(n, error),
            );
        }
        true
    }

    fn auto_complete_current(&mut self, ts: i64) {
        for i in 0..self.current.len() {
            let n = self.current[i];
            self.finish_node(n, NodeStatus::Completed, "", ts);
        }
    }

    fn emit_node_start(&mut self, idx: u32, ts: i64) {
        let id = self.nodes[idx as usize].id;
        self.emit(
            EventKind::NodeStart,
            Some(id),
            None,
            ts,
            &Payload::NodeStart(idx),
        );
    }

    /// `Trace::add`: a node after the current nodes (or the root).
    pub(crate) fn add(&mut self, input: Value, opts: NodeOptions) -> Result<u32> {
        self.check_open()?;
        self.check_nodes(1)?;
        let ts = self.tick();
        let idx = if self.root.is_none() {
            let idx = self.new_node(&[], input, opts, ts);
            self.root = Some(idx);
            self.status = TraceStatus::Running;
            idx
        } else {
            if opts.auto_completes() {
                self.auto_complete_current(ts);
            }
            let parents = self.current.clone();
            self.new_node(&parents, input, opts, ts)
        };
        self.current.clear();
        self.current.push(idx);
        self.touch_info();
        self.emit_node_start(idx, ts);
        Ok(idx)
    }

    /// `Node::add`: a child of `parent`; the cursor does not move.
    pub(crate) fn add_child(
        &mut self,
        parent: u32,
        input: Value,
        opts: NodeOptions,
    ) -> Result<u32> {
        self.check_open()?;
        self.check_nodes(1)?;
        let ts = self.tick();
        let idx = self.new_node(&[parent], input, opts, ts);
        self.emit_node_start(idx, ts);
        Ok(idx)
    }

    /// `Trace::parallel` (`under == None`: under all current nodes, moving the
    /// cursor) and `Node::parallel` (`under == Some(n)`: children of `n`).
    /// Returns the index of the first branch; branches are contiguous.
    pub(crate) fn parallel(
        &mut self,
        under: Option<u32>,
        inputs: Vec<ParallelInput>,
    ) -> Result<(u32, u32)> {
        self.check_open()?;
        if inputs.is_empty() {
            return Err(Error::EmptyParallel);
        }
        // All branches or none.
        self.check_nodes(inputs.len())?;
        let parents: SmallVec<[u32; 4]> = match under {
            Some(n) => SmallVec::from_slice(&[n]),
            None => {
                if self.root.is_none() {
                    return Err(Error::NoRoot);
                }
                self.current.clone()
            }
        };
        let ts = self.tick();
        if under.is_none() && inputs.iter().any(|i| i.options.auto_completes()) {
            self.auto_complete_current(ts);
        }
        let first = arena_index(self.nodes.len());
        let count = arena_index(inputs.len());
        for pi in inputs {
            self.new_node(&parents, pi.input, pi.options, ts);
        }
        if under.is_none() {
            self.current.clear();
            self.current.extend(first..first + count);
            self.touch_info();
        }
        self.emit(
            EventKind::NodeStart,
            None,
            None,
            ts,
            &Payload::NodesStart(first, count),
        );
        Ok((first, count))
    }

    /// `Node::join`: a node whose parents are `parents`, linked under each.
    pub(crate) fn join(&mut self, parents: &[u32], input: Value, opts: NodeOptions) -> Result<u32> {
        self.check_open()?;
        if parents.is_empty() {
            return Err(Error::EmptyJoin);
        }
        self.check_nodes(1)?;
        let mut uniq: SmallVec<[u32; 4]> = SmallVec::new();
        for &p in parents {
            if !uniq.contains(&p) {
                uniq.push(p);
            }
        }
        let ts = self.tick();
        let idx = self.new_node(&uniq, input, opts, ts);
        self.emit_node_start(idx, ts);
        Ok(idx)
    }

    fn require_targets(&self, t: Target) -> Result<SmallVec<[u32; 4]>> {
        self.check_open()?;
        if matches!(t, Target::Current) && self.root.is_none() {
            return Err(Error::NoRoot);
        }
        Ok(self.targets(t))
    }

    fn updated(&mut self, n: u32, ts: i64) {
        self.nodes[n as usize].updated_at = ts;
        self.touch_node(n);
        let id = self.nodes[n as usize].id;
        self.emit(
            EventKind::NodeUpdated,
            Some(id),
            None,
            ts,
            &Payload::NodeUpdated(n),
        );
    }

    pub(crate) fn set_output(&mut self, t: Target, output: Value) -> Result<()> {
        let targets = self.require_targets(t)?;
        let ts = self.tick();
        for n in targets {
            self.nodes[n as usize].output = Some(output.clone());
            self.updated(n, ts);
        }
        Ok(())
    }

    pub(crate) fn set_metadata(&mut self, t: Target, key: &str, value: Value) -> Result<()> {
        let targets = self.require_targets(t)?;
        let ts = self.tick();
        for n in targets {
            self.nodes[n as usize]
                .metadata
                .insert(key.to_owned(), value.clone());
            self.updated(n, ts);
        }
        Ok(())
    }

    /// Sets a node's status. `Completed`, `Failed` and `Cancelled` finish the
    /// node like `complete`/`fail` do (one `node_complete`/`node_failed`, end
    /// time set); `Skipped` is terminal too (`node_updated`, end time set);
    /// `Pending`/`Running` emit `node_updated`.
    pub(crate) fn set_status(&mut self, n: u32, status: NodeStatus) -> Result<()> {
        self.check_open()?;
        self.ensure_unfinished(n)?;
        let ts = self.tick();
        match status {
            NodeStatus::Completed | NodeStatus::Failed | NodeStatus::Cancelled => {
                self.finish_node(n, status, "", ts);
            }
            _ => {
                let node = &mut self.nodes[n as usize];
                node.status = status;
                if status.is_terminal() {
                    node.end_time = ts;
                }
                self.updated(n, ts);
            }
        }
        Ok(())
    }

    /// Completes the targets. For `Target::Current`, terminal nodes are
    /// skipped; for one node, a terminal node is an error.
    pub(crate) fn complete(&mut self, t: Target, output: Option<Value>) -> Result<()> {
        let targets = self.require_targets(t)?;
        if let Target::Node(n) = t {
            self.ensure_unfinished(n)?;
        }
        let ts = self.tick();
        for n in targets {
            if self.nodes[n as usize].status.is_terminal() {
                continue;
            }
            if let Some(out) = &output {
                self.nodes[n as usize].output = Some(out.clone());
            }
            self.finish_node(n, NodeStatus::Completed, "", ts);
        }
        Ok(())
    }

    /// Fails the targets: an error log line on each, then `node_failed`.
    pub(crate) fn fail(&mut self, t: Target, error: &str) -> Result<()> {
        let targets = self.require_targets(t)?;
        if let Target::Node(n) = t {
            self.ensure_unfinished(n)?;
        }
        let ts = self.tick();
        for n in targets {
            if self.nodes[n as usize].status.is_terminal() {
                continue;
            }
            self.push_log(n, Level::Error, "Node failed: ", error, Value::Null, ts);
            self.finish_node(n, NodeStatus::Failed, error, ts);
        }
        Ok(())
    }

    fn ensure_unfinished(&self, n: u32) -> Result<()> {
        let node = &self.nodes[n as usize];
        if node.status.is_terminal() {
            Err(Error::NodeFinished)
        } else {
            Ok(())
        }
    }

    // ---- logs ---------------------------------------------------------------

    fn push_log(&mut self, n: u32, level: Level, prefix: &str, msg: &str, data: Value, ts: i64) {
        let start = self.text_base + self.log_text.len();
        self.log_text.push_str(prefix);
        self.log_text.push_str(msg);
        let end = self.text_base + self.log_text.len();
        let li = self.logs.len();
        self.logs.push_back(LogRec {
            timestamp: ts,
            level,
            msg: (start, end),
            data,
            node: n,
            cost: 0,
        });
        let id = self.nodes[n as usize].id;
        self.emit(
            EventKind::LogAdded,
            Some(id),
            None,
            ts,
            &Payload::LogAdded(li),
        );
        // The line costs what its event's payload takes, plus its record.
        let cost = self
            .history
            .back()
            .map_or(0, |e| e.data_range.1 - e.data_range.0)
            + LOG_LINE_OVERHEAD;
        if let Some(l) = self.logs.back_mut() {
            l.cost = cost;
        }
        self.log_bytes += cost;
        self.evict_logs();
    }

    /// Lets the oldest log lines leave memory until the rest fits in
    /// `max_log_bytes` (they stay in storage: a line not yet handed to the
    /// driver is encoded for it first).
    fn evict_logs(&mut self) {
        while self.log_bytes > self.limits.max_log_bytes && !self.logs.is_empty() {
            if self.limits.documents && self.logs_base >= self.logs_flushed {
                self.stash_oldest_log_line();
                self.logs_flushed = self.logs_base + 1;
            }
            let Some(l) = self.logs.pop_front() else {
                break;
            };
            self.log_bytes -= l.cost;
            self.logs_base += 1;
            self.stat_logs_evicted += 1;
            // Give the text of evicted lines back once it is most of the buffer.
            let live_from = self.logs.front().map_or(l.msg.1, |f| f.msg.0);
            let dead = live_from - self.text_base;
            if dead >= 4096 && dead * 2 >= self.log_text.len() {
                self.log_text.drain(..dead);
                self.text_base = live_from;
            }
        }
    }

    /// The text of a log line.
    pub(crate) fn log_msg(&self, l: &LogRec) -> &str {
        &self.log_text[l.msg.0 - self.text_base..l.msg.1 - self.text_base]
    }

    /// Chainable logging: never fails; a log with nowhere to go is counted.
    pub(crate) fn log(&mut self, t: Target, level: Level, msg: &str, data: Value) {
        if self.finished || (matches!(t, Target::Current) && self.current.is_empty()) {
            self.stat_logs_dropped += 1;
            return;
        }
        let ts = self.tick();
        let targets = self.targets(t);
        let last = targets.len().saturating_sub(1);
        let mut data = Some(data);
        for (i, n) in targets.into_iter().enumerate() {
            let d = if i == last {
                data.take().unwrap_or(Value::Null)
            } else {
                data.clone().unwrap_or(Value::Null)
            };
            self.push_log(n, level, "", msg, d, ts);
        }
    }

    // ---- trace-level terminal transitions -----------------------------------

    fn total_duration(&self, ts: i64) -> i64 {
        self.root
            .map(|r| ts - self.nodes[r as usize].created_at)
            .unwrap_or(0)
    }

    /// One `complete` event ever; later calls do nothing.
    pub(crate) fn mark_complete(&mut self) -> bool {
        if self.finished {
            return false;
        }
        let ts = self.tick();
        self.finished = true;
        self.status = TraceStatus::Completed;
        self.touch_info();
        let d = self.total_duration(ts);
        self.emit(
            EventKind::Complete,
            None,
            None,
            ts,
            &Payload::Complete(TraceStatus::Completed, d),
        );
        true
    }

    /// Cancels every unfinished node (`node_failed`, status `cancelled`), then
    /// emits `complete` with status `cancelled`. Does nothing on a finished trace.
    pub(crate) fn mark_cancelled(&mut self, reason: &str) -> bool {
        if self.finished {
            return false;
        }
        let ts = self.tick();
        for n in self.bfs_order() {
            self.finish_node(n, NodeStatus::Cancelled, reason, ts);
        }
        self.finished = true;
        self.status = TraceStatus::Cancelled;
        self.touch_info();
        let d = self.total_duration(ts);
        self.emit(
            EventKind::Complete,
            None,
            None,
            ts,
            &Payload::Complete(TraceStatus::Cancelled, d),
        );
        true
    }

    // ---- spaces -------------------------------------------------------------

    pub(crate) fn create_space(&mut self, opts: SpaceOptions) -> Result<SpaceInfo> {
        self.check_open()?;
        if self.spaces.len() >= self.limits.max_spaces {
            return Err(Error::LimitExceeded {
                what: "spaces",
                limit: self.limits.max_spaces,
            });
        }
        let ts = self.tick();
        let id = loop {
            let id = ShortId::generate();
            if !self.spaces.iter().any(|s| s.id == id) {
                break id;
            }
        };
        self.spaces.push(SpaceRec {
            id,
            label: opts.label,
            space_type: opts.space_type,
            icon: opts.icon,
            description: opts.description,
            ttl: opts.ttl,
            metadata: opts.metadata,
            created_at: ts,
            updated_at: ts,
            data: self.spare_maps.pop().unwrap_or_default(),
        });
        let si = self.spaces.len() - 1;
        self.touch_space(id, SPACE_META);
        self.emit(
            EventKind::SpaceCreated,
            None,
            Some(id),
            ts,
            &Payload::SpaceCreated(si),
        );
        Ok(space_info(&self.spaces[si]))
    }

    pub(crate) fn delete_space(&mut self, space: &str) -> Result<()> {
        self.check_open()?;
        let si = self.find_space(space)?;
        let ts = self.tick();
        let rec = self.spaces.remove(si);
        self.space_entries -= rec.data.len();
        let id = rec.id;
        let mut data = rec.data;
        if self.spare_maps.len() < RETAIN_SPACES && data.len() <= RETAIN_SPACE_KEYS {
            data.clear();
            self.spare_maps.push(data);
        }
        self.touch_space(id, SPACE_DELETED);
        self.emit(
            EventKind::SpaceDeleted,
            None,
            Some(id),
            ts,
            &Payload::SpaceDeleted(id),
        );
        Ok(())
    }

    pub(crate) fn set_space_value(&mut self, space: &str, key: &str, value: Value) -> Result<()> {
        self.check_open()?;
        let si = self.find_space(space)?;
        let data = &self.spaces[si].data;
        if !data.contains_key(key) {
            let (per_space, per_trace) = (
                self.limits.max_space_entries,
                self.limits.max_trace_space_entries,
            );
            let limit = if data.len() >= per_space {
                Some(per_space)
            } else if self.space_entries >= per_trace {
                Some(per_trace)
            } else {
                None
            };
            if let Some(limit) = limit {
                return Err(Error::LimitExceeded {
                    what: "space_entries",
                    limit,
                });
            }
        }
        let ts = self.tick();
        let sp = &mut self.spaces[si];
        let existed = sp.data.insert(key.to_owned(), value).is_some();
        if !existed {
            self.space_entries += 1;
        }
        let sp = &mut self.spaces[si];
        sp.updated_at = ts;
        let id = sp.id;
        self.touch_space(id, SPACE_META | SPACE_DATA);
        let kind = if existed {
            EventKind::MemoryUpdate
        } else {
            EventKind::MemoryAdd
        };
        self.emit(kind, None, Some(id), ts, &Payload::Memory(si, key));
        Ok(())
    }

    pub(crate) fn get_space_value(&self, space: &str, key: &str) -> Result<Option<Value>> {
        let si = self.find_space(space)?;
        Ok(self.spaces[si].data.get(key).cloned())
    }

    pub(crate) fn has_space_value(&self, space: &str, key: &str) -> bool {
        self.find_space(space)
            .map(|si| self.spaces[si].data.contains_key(key))
            .unwrap_or(false)
    }

    pub(crate) fn delete_space_value(&mut self, space: &str, key: &str) -> Result<()> {
        self.check_open()?;
        let si = self.find_space(space)?;
        let ts = self.tick();
        let sp = &mut self.spaces[si];
        if sp.data.shift_remove(key).is_some() {
            self.space_entries -= 1;
        }
        let sp = &mut self.spaces[si];
        sp.updated_at = ts;
        let id = sp.id;
        self.touch_space(id, SPACE_META | SPACE_DATA);
        self.emit(
            EventKind::MemoryDelete,
            None,
            Some(id),
            ts,
            &Payload::MemoryDelete(id, Some(key)),
        );
        Ok(())
    }

    pub(crate) fn clear_space_values(&mut self, space: &str) -> Result<()> {
        self.check_open()?;
        let si = self.find_space(space)?;
        let ts = self.tick();
        let sp = &mut self.spaces[si];
        self.space_entries -= sp.data.len();
        sp.data.clear();
        sp.updated_at = ts;
        let id = sp.id;
        self.touch_space(id, SPACE_META | SPACE_DATA);
        self.emit(
            EventKind::MemoryDelete,
            None,
            Some(id),
            ts,
            &Payload::MemoryDelete(id, None),
        );
        Ok(())
    }

    pub(crate) fn space(&self, space: &str) -> Option<SpaceInfo> {
        self.find_space(space)
            .ok()
            .map(|si| space_info(&self.spaces[si]))
    }

    pub(crate) fn space_keys(&self, space: &str) -> Result<Vec<String>> {
        let si = self.find_space(space)?;
        Ok(self.spaces[si].data.keys().cloned().collect())
    }

    pub(crate) fn space_data(&self, space: &str) -> Option<SpaceData> {
        self.find_space(space).ok().map(|si| {
            let sp = &self.spaces[si];
            SpaceData {
                info: space_info(sp),
                data: sp.data.clone(),
            }
        })
    }

    pub(crate) fn spaces(&self) -> Vec<SpaceInfo> {
        self.spaces.iter().map(space_info).collect()
    }

    // ---- snapshots ----------------------------------------------------------

    pub(crate) fn node_data(&self, n: u32) -> NodeData {
        let r = &self.nodes[n as usize];
        let ids = |v: &[u32]| -> Vec<String> { self.ids_of(v).map(str::to_owned).collect() };
        NodeData {
            id: r.id.as_str().to_owned(),
            parent_ids: ids(&r.parents),
            children: ids(&r.children),
            label: r.label.to_string(),
            node_type: r.node_type.to_string(),
            icon: r.icon.to_string(),
            description: r.description.to_string(),
            metadata: r.metadata.clone(),
            status: r.status,
            input: r.input.clone(),
            output: r.output.clone(),
            created_at: r.created_at,
            start_time: r.start_time,
            end_time: r.end_time,
            updated_at: r.updated_at,
        }
    }

    /// The ids of the nodes at `idx`, in order.
    pub(crate) fn ids_of<'s>(&'s self, idx: &[u32]) -> impl Iterator<Item = &'s str> {
        idx.iter().map(|&i| self.nodes[i as usize].id.as_str())
    }

    /// Every node once: root first, then breadth-first along children; nodes
    /// not reachable from the root (none in practice) follow in creation order.
    pub(crate) fn bfs_order(&self) -> Vec<u32> {
        let mut seen = vec![false; self.nodes.len()];
        let mut out = Vec::with_capacity(self.nodes.len());
        let mut queue = VecDeque::new();
        if let Some(r) = self.root {
            seen[r as usize] = true;
            queue.push_back(r);
        }
        loop {
            while let Some(n) = queue.pop_front() {
                out.push(n);
                for &c in &self.nodes[n as usize].children {
                    if !seen[c as usize] {
                        seen[c as usize] = true;
                        queue.push_back(c);
                    }
                }
            }
            match seen.iter().position(|s| !s) {
                Some(i) => {
                    seen[i] = true;
                    queue.push_back(arena_index(i));
                }
                None => break,
            }
        }
        out
    }

    fn log_entry(&self, l: &LogRec) -> LogEntry {
        LogEntry {
            timestamp: l.timestamp,
            level: l.level,
            message: self.log_msg(l).to_owned(),
            data: l.data.clone(),
            node_id: self.nodes[l.node as usize].id.as_str().to_owned(),
        }
    }

    /// The log lines still in memory, in write order; `Some(n)`: of node `n`.
    pub(crate) fn logs(&self, node: Option<u32>) -> Vec<LogEntry> {
        self.logs
            .iter()
            .filter(|l| node.is_none_or(|n| l.node == n))
            .map(|l| self.log_entry(l))
            .collect()
    }

    pub(crate) fn trace_info(&self, driver: &str) -> TraceInfo {
        TraceInfo {
            id: self.id.as_str().to_owned(),
            driver: driver.to_owned(),
            status: self.status,
            created_at: self.created_at,
            updated_at: self.updated_at,
            created_by: self.created_by.clone(),
            team_id: self.team_id.clone(),
            tenant_id: self.tenant_id.clone(),
            metadata: self.metadata.clone(),
            archived: self.archived,
        }
    }

    /// The first retained seq with `timestamp >= ms`.
    pub(crate) fn seq_at_time(&self, ms: i64) -> u64 {
        self.history
            .iter()
            .find(|e| e.timestamp >= ms)
            .map_or(self.next_seq, |e| e.seq)
    }

    /// Counters gathered since the last call, reset to zero.
    pub(crate) fn take_stats(&mut self) -> [u64; 5] {
        let s = [
            self.stat_emitted,
            self.stat_evicted,
            self.stat_pending_dropped,
            self.stat_logs_dropped,
            self.stat_logs_evicted,
        ];
        self.stat_emitted = 0;
        self.stat_evicted = 0;
        self.stat_pending_dropped = 0;
        self.stat_logs_dropped = 0;
        self.stat_logs_evicted = 0;
        s
    }
}

/// A node index as stored in the arena (`u32`). Node counts are bounded by
/// `max_nodes`, which the builder keeps below `u32::MAX`, and by `open`
/// (which rejects a stored trace with more nodes than that).
fn arena_index(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn clear_capped<T>(v: &mut Vec<T>, cap: usize) {
    v.clear();
    if v.capacity() > cap {
        v.shrink_to(cap);
    }
}

pub(crate) fn space_info(sp: &SpaceRec) -> SpaceInfo {
    SpaceInfo {
        id: sp.id.as_str().to_owned(),
        label: sp.label.to_string(),
        space_type: sp.space_type.to_string(),
        icon: sp.icon.to_string(),
        description: sp.description.to_string(),
        ttl: sp.ttl,
        metadata: sp.metadata.clone(),
        created_at: sp.created_at,
        updated_at: sp.updated_at,
    }
}

// ---- wire payloads -----------------------------------------------------------

/// What an event carries; serialized by borrowing the state (no copies).
#[derive(Debug)]
pub(crate) enum Payload<'a> {
    Init,
    NodeStart(u32),
    /// Parallel branches: first index and count (contiguous).
    NodesStart(u32, u32),
    NodeComplete(u32),
    NodeFailed(u32, &'a str),
    NodeUpdated(u32),
    /// The log line at this index of `logs` (in memory when emitted).
    LogAdded(usize),
    /// memory_add / memory_update: space index and key.
    Memory(usize, &'a str),
    /// memory_delete: a key, or all keys (`None`).
    MemoryDelete(ShortId, Option<&'a str>),
    SpaceCreated(usize),
    SpaceDeleted(ShortId),
    Complete(TraceStatus, i64),
}

impl TraceState {
    fn write_ids(&self, out: &mut JsonOut<'_>, idx: &[u32]) {
        out.raw(b"[");
        for (k, id) in self.ids_of(idx).enumerate() {
            out.raw(if k == 0 { b"\"" } else { b",\"" });
            out.ascii(id).raw(b"\"");
        }
        out.raw(b"]");
    }

    /// A node as the reference's `TraceNode` (children by id). Written in
    /// few, large pieces: this is the biggest payload on the hot path.
    fn write_node(&self, out: &mut JsonOut<'_>, n: u32) {
        let r = &self.nodes[n as usize];
        out.raw(b"{\"id\":\"").ascii(r.id.as_str());
        out.raw(b"\",\"parent_ids\":");
        self.write_ids(out, &r.parents);
        out.raw(b",\"children\":");
        self.write_ids(out, &r.children);
        out.raw(b",\"label\":").str(&r.label);
        out.raw(b",\"type\":").str(&r.node_type);
        out.raw(b",\"icon\":").str(&r.icon);
        out.raw(b",\"description\":").str(&r.description);
        if !r.metadata.is_empty() {
            out.raw(b",\"metadata\":").map(&r.metadata);
        }
        if let Some(a) = r.auto_complete_parent {
            out.raw(if a {
                b",\"auto_complete_parent\":true".as_slice()
            } else {
                b",\"auto_complete_parent\":false"
            });
        }
        out.raw(b",\"status\":\"")
            .ascii(r.status.as_str())
            .raw(b"\"");
        if let Some(v) = &r.input {
            out.raw(b",\"input\":").value(v);
        }
        if let Some(v) = r.output.as_ref().filter(|v| !v.is_null()) {
            out.raw(b",\"output\":").value(v);
        }
        out.raw(b",\"created_at\":").int(r.created_at);
        out.raw(b",\"start_time\":").int(r.start_time);
        out.raw(b",\"end_time\":").int(r.end_time);
        out.raw(b",\"updated_at\":").int(r.updated_at);
        out.raw(b"}").value_done();
    }

    /// Writes the `data` of an event (the reference's payload structs).
    fn write_payload(&self, p: &Payload<'_>, out: &mut JsonOut<'_>) {
        out.begin_obj();
        match *p {
            Payload::Init => {
                out.key("trace_id").str(self.id.as_str());
            }
            Payload::NodeStart(n) | Payload::NodeUpdated(n) => {
                out.key("node");
                self.write_node(out, n);
            }
            Payload::NodesStart(first, count) => {
                out.key("nodes").begin_arr();
                for n in first..first + count {
                    out.elem();
                    self.write_node(out, n);
                }
                out.end_arr();
            }
            Payload::NodeComplete(n) => {
                let r = &self.nodes[n as usize];
                out.key("node_id").str(r.id.as_str());
                out.key("status").str("success");
                out.key("end_time").int(r.end_time);
                out.key("duration").int(r.end_time - r.start_time);
                if let Some(o) = r.output.as_ref().filter(|o| !o.is_null()) {
                    out.key("output").value(o);
                }
            }
            Payload::NodeFailed(n, error) => {
                let r = &self.nodes[n as usize];
                out.key("node_id").str(r.id.as_str());
                out.key("status").str(r.status.as_str());
                out.key("end_time").int(r.end_time);
                out.key("duration").int(r.end_time - r.start_time);
                out.key("error").str(error);
            }
            Payload::LogAdded(li) => {
                // The reference's TraceLog has no JSON tags: Go field names.
                let l = &self.logs[li];
                out.key("Timestamp").int(l.timestamp);
                out.key("Level").str(l.level.as_str());
                out.key("Message").str(self.log_msg(l));
                out.key("Data").value(&l.data);
                out.key("NodeID")
                    .str(self.nodes[l.node as usize].id.as_str());
            }
            Payload::Memory(si, key) => {
                let sp = &self.spaces[si];
                out.key("type").str(sp.id.as_str());
                out.key("item").begin_obj();
                out.key("id").str(key);
                out.key("type").str(sp.id.as_str());
                if !sp.label.is_empty() {
                    out.key("title").str(&sp.label);
                }
                out.key("content")
                    .value(sp.data.get(key).unwrap_or(&Value::Null));
                out.key("timestamp").int(sp.updated_at);
                out.end_obj();
            }
            Payload::MemoryDelete(id, key) => {
                out.key("space_id").str(id.as_str());
                match key {
                    Some(k) => out.key("key").str(k),
                    None => out.key("cleared").bool(true),
                };
            }
            Payload::SpaceCreated(si) => {
                // The payload is the space itself (the reference's TraceSpace).
                let sp = &self.spaces[si];
                out.key("id").str(sp.id.as_str());
                out.key("label").str(&sp.label);
                out.key("type").str(&sp.space_type);
                out.key("icon").str(&sp.icon);
                out.key("description").str(&sp.description);
                out.key("ttl").int(sp.ttl);
                if !sp.metadata.is_empty() {
                    out.key("metadata").map(&sp.metadata);
                }
                out.key("created_at").int(sp.created_at);
                out.key("updated_at").int(sp.updated_at);
            }
            Payload::SpaceDeleted(id) => {
                out.key("space_id").str(id.as_str());
            }
            Payload::Complete(status, total) => {
                out.key("trace_id").str(self.id.as_str());
                out.key("status").str(status.as_str());
                out.key("total_duration").int(total);
            }
        }
        out.end_obj();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn state() -> TraceState {
        let mut st = TraceState::new(
            Limits {
                history: 100,
                subscriber_buffer: 10,
                pending: 100,
                persists: false,
                documents: false,
                driver: "memory",
                max_nodes: 100,
                max_log_bytes: 1 << 20,
                max_subscribers: 10,
                max_space_entries: 10,
                max_trace_space_entries: 100,
                max_spaces: 10,
                pending_bytes: 1 << 20,
                leases: false, // redis-hook
            },
            Arc::default(),
        );
        st.start(TraceId::parse("t-1").unwrap(), TraceOptions::new(), 1_000);
        st
    }

    /// The hand-written node payload is byte for byte what serde_json writes
    /// for the reference's `TraceNode` shape, escaping included.
    #[test]
    fn node_payload_matches_serde_json() {
        let mut st = state();
        let root = st
            .add(json!({"q": "a\"b"}), NodeOptions::new().label("Root"))
            .unwrap();
        let n = st
            .add(
                json!(7),
                NodeOptions::new()
                    .label("L \"quoted\"\n\\ ünï")
                    .node_type("t")
                    .icon("i")
                    .description("d")
                    .metadata("m", 1)
                    .auto_complete_parent(false),
            )
            .unwrap();
        st.set_output(Target::Node(n), json!([1, {"x": null}]))
            .unwrap();
        let r = &st.nodes[n as usize];
        let (rid, nid) = (st.nodes[root as usize].id, r.id);
        let ev = st.history.back().unwrap();
        assert_eq!(ev.kind, EventKind::NodeUpdated);
        let data = &ev.bytes[ev.data_range.0..ev.data_range.1];
        let want = json!({"node": {
            "id": nid.as_str(),
            "parent_ids": [rid.as_str()],
            "children": [],
            "label": "L \"quoted\"\n\\ ünï",
            "type": "t",
            "icon": "i",
            "description": "d",
            "metadata": {"m": 1},
            "auto_complete_parent": false,
            "status": "running",
            "input": 7,
            "output": [1, {"x": null}],
            "created_at": r.created_at,
            "start_time": r.start_time,
            "end_time": 0,
            "updated_at": r.updated_at,
        }});
        assert_eq!(
            std::str::from_utf8(data).unwrap(),
            serde_json::to_string(&want).unwrap()
        );
        // The root, now with a child, in a parallel start: `nodes` array.
        let (first, count) = st
            .parallel(Some(root), vec![ParallelInput::new(1, NodeOptions::new())])
            .unwrap();
        assert_eq!(count, 1);
        let ev = st.history.back().unwrap();
        let v: Value = serde_json::from_slice(&ev.bytes[ev.data_range.0..ev.data_range.1]).unwrap();
        assert_eq!(v["nodes"][0]["id"], st.nodes[first as usize].id.as_str());
        assert_eq!(v["nodes"][0]["parent_ids"], json!([rid.as_str()]));
        assert_eq!(v["nodes"][0]["input"], 1);
    }
}
