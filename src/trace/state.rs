//! The state of one trace, as held by a slot, and the operations that
//! change it.
//!
//! [`TraceState`] ties together what a trace owns: its metadata and
//! lifecycle phase, the node [`Tree`], the in-memory [`Logs`], the
//! [`Spaces`], the [`EventLog`] every change is recorded in, and what it
//! owes a persistent driver besides its events ([`Unsaved`]). Every
//! mutation runs under the slot's lock and records its events in the same
//! critical section (numbering an event, retaining it and queueing it for
//! the driver is one step of the log, the single sequencer), so replay and
//! live delivery can never disagree on order. Caller values arrive already
//! serialized; nothing is encoded here on the hot path.
//!
//! Every per-trace collection is bounded (nodes, spaces, keys per space,
//! subscribers: an operation that would cross the bound fails whole with
//! `Error::LimitExceeded`; log text: the oldest lines leave memory; history
//! and the write-behind queue: the oldest events leave them, counted).
//!
//! [`TraceState::reset`] clears everything in place for the slot's next
//! occupant, keeping buffer capacity up to a cap so that one huge trace does
//! not pin memory forever. This module does not know about the registry,
//! the workers or the driver.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use crate::event::value::{LogText, Val};
use serde_json::{Map, Value};
use smallvec::SmallVec;

use super::handoff::Handoff;
use super::lease::Lease;
use super::logs::{LINE_OVERHEAD, LogRec, Logs};
use super::payload::TraceSource;
use super::persist::Unsaved;
use super::spaces::Spaces;
use super::tree::{NodeSpec, NodeSpecs, Tree, arena_index};
use crate::error::{Error, Result};
use crate::event::EventKind;
use crate::event::log::{EventLog, LogLimits};
use crate::event::record::PayloadRec;
use crate::id::{ShortId, TraceId, now_ms};
use crate::model::{Level, NodeStatus, TraceInfo, TraceStatus};
use crate::options::TraceOptions;

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

impl Limits {
    fn log(&self) -> LogLimits {
        LogLimits {
            history: self.history,
            subscriber_buffer: self.subscriber_buffer,
            pending: self.pending,
            pending_bytes: self.pending_bytes,
            persists: self.persists,
            max_readers: self.max_subscribers,
        }
    }
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
    pub(crate) tree: Tree,
    pub(crate) logs: Logs,
    pub(crate) spaces: Spaces,
    /// The events: numbering, history, write-behind queue, readers.
    pub(crate) events: EventLog,
    /// The handles that refer to this slot. Survives resets: handles of
    /// earlier occupants stay counted until they are dropped.
    pub(crate) lease: Lease,
    /// The slot's part in the worker protocol (queued, a batch in flight,
    /// what storage made of the trace). Owned by the engine's workers.
    pub(crate) handoff: Handoff,
    pub(crate) limits: Limits,
    /// The documents and evicted log lines not yet handed to the driver
    /// (persistent drivers only).
    pub(crate) unsaved: Unsaved,
    // Counters since the last time the engine collected them (the event
    // counters are the log's).
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
            tree: Tree::default(),
            logs: Logs::default(),
            spaces: Spaces::default(),
            events: EventLog::new(limits.log(), pending_total),
            lease: Lease::default(),
            handoff: Handoff::default(),
            limits,
            unsaved: Unsaved::default(),
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
    pub(crate) fn start(&mut self, id: TraceId, opts: TraceOptions, now: i64) {
        let ts = now.max(self.last_ts);
        self.last_ts = ts;
        self.phase = Phase::Live;
        self.handoff.new_trace = true;
        self.id = id;
        self.created_by = opts.created_by;
        self.team_id = opts.team_id;
        self.tenant_id = opts.tenant_id;
        self.metadata = opts.metadata;
        self.auto_archive = opts.auto_archive;
        self.created_at = ts;
        self.updated_at = ts;
        self.touch_info();
        self.emit(EventKind::Init, ts, PayloadRec::Init);
    }

    /// Whether anything is left for the driver: queued events or lines,
    /// dirty documents, or an archive to make.
    pub(crate) fn has_writes(&self) -> bool {
        self.events.has_pending()
            || self.unsaved.has_lines()
            || (self.limits.documents
                && (self.unsaved.has_documents() || self.logs.flushed < self.logs.end()))
            || (self.archive_requested && !self.archived)
    }

    /// Whether a released trace still owes its worker a batch: anything of
    /// [`has_writes`](TraceState::has_writes), or the last batch that gives
    /// its lease up (redis-hook).
    pub(crate) fn owes_last_batch(&self) -> bool {
        self.has_writes() || self.handoff.lease_held
    }

    /// Whether resetting this trace is too much work for a caller's
    /// thread (its worker does it).
    pub(crate) fn is_big(&self) -> bool {
        self.tree.len() > 1024 || self.logs.lines.len() > 4096 || self.spaces.entries > 4096
    }

    /// Whether counters wait to be collected.
    pub(crate) fn has_stats(&self) -> bool {
        self.events.has_stats() || self.stat_logs_dropped | self.stat_logs_evicted != 0
    }

    /// Drops everything queued for the driver (events, lines, dirty
    /// documents, an archive request). Returns the number of events dropped.
    pub(crate) fn discard_writes(&mut self) -> u64 {
        let n = self.events.discard_pending();
        self.unsaved.discard(&mut self.tree);
        self.logs.flushed = self.logs.end();
        self.archive_requested = false;
        n
    }

    /// Clears the slot in place for its next occupant and bumps the generation.
    /// Pending writes must have been taken and readers detached before.
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
        self.tree.reset();
        self.logs.reset();
        self.spaces.reset();
        self.events.reset();
        self.unsaved.reset();
        self.handoff.reset();
    }

    // ---- dirty tracking (document snapshots) ------------------------------

    /// Node `n`'s document is to be written again (persistent drivers only).
    pub(crate) fn touch_node(&mut self, n: u32) {
        if self.limits.documents {
            self.unsaved.mark_node(&mut self.tree, n);
        }
    }

    /// Space `id`'s documents (`flags`, see [`SPACE_META`](super::persist::SPACE_META)
    /// and the others) are to be written again (persistent drivers only).
    pub(crate) fn touch_space(&mut self, id: ShortId, flags: u8) {
        if self.limits.documents {
            self.unsaved.mark_space(id, flags);
        }
    }

    /// The info document is to be written again (persistent drivers only).
    pub(crate) fn touch_info(&mut self) {
        if self.limits.documents {
            self.unsaved.mark_info();
        }
    }

    // ---- emission ---------------------------------------------------------

    /// Records one event (numbered by the log; encoded later, when first
    /// read). Returns its seq.
    #[inline(always)]
    pub(crate) fn emit(&mut self, kind: EventKind, ts: i64, payload: PayloadRec) -> u64 {
        self.emit_with(kind, ts, move |_| payload)
    }

    /// [`TraceState::emit`] with the payload built by `make` (from the
    /// trace as the encoder sees it) in the event's slot of the history:
    /// for the hot events, whose `make` captures the payload's parts, so
    /// that no record is assembled and then copied.
    #[inline(always)]
    pub(crate) fn emit_with(
        &mut self,
        kind: EventKind,
        ts: i64,
        make: impl FnOnce(&TraceSource<'_>) -> PayloadRec,
    ) -> u64 {
        self.updated_at = ts;
        let (log, src) = self.split();
        log.push(kind, ts, || make(&src), &src)
    }

    /// The event log, and the rest of the trace as the encoder's source.
    pub(crate) fn split(&mut self) -> (&mut EventLog, TraceSource<'_>) {
        (
            &mut self.events,
            TraceSource {
                id: &self.id,
                tree: &self.tree,
                logs: &self.logs,
                spaces: &self.spaces,
            },
        )
    }

    // ---- checks -------------------------------------------------------------

    pub(crate) fn check_open(&self) -> Result<()> {
        if self.finished {
            Err(Error::TraceFinished)
        } else {
            Ok(())
        }
    }

    /// Fails unless `more` nodes fit under `max_nodes`.
    fn check_nodes(&self, more: usize) -> Result<()> {
        let limit = self.limits.max_nodes;
        if self.tree.len().saturating_add(more) > limit {
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
        self.tree.find(id)
    }

    fn targets(&self, t: Target) -> SmallVec<[u32; 4]> {
        match t {
            Target::Current => self.tree.current.clone(),
            Target::Node(n) => SmallVec::from_slice(&[n]),
        }
    }

    // ---- nodes --------------------------------------------------------------

    fn new_node(&mut self, parents: &[u32], spec: &mut NodeSpec, ts: i64) -> u32 {
        let idx = self.tree.new_node(parents, spec, ts);
        self.touch_node(idx);
        for &p in parents {
            self.touch_node(p);
        }
        idx
    }

    /// Moves `n` to a terminal status and emits `node_complete`/`node_failed`.
    /// Returns false (and does nothing) if the node is already terminal: this
    /// compare-and-set is what keeps terminal events to one per node.
    fn finish_node(&mut self, n: u32, status: NodeStatus, error: Option<&Val>, ts: i64) -> bool {
        let node = self.tree.node_mut(n);
        if node.status.is_terminal() {
            return false;
        }
        node.status = status;
        node.end_time = ts;
        node.updated_at = ts;
        self.touch_node(n);
        if status == NodeStatus::Completed {
            self.emit_with(EventKind::NodeComplete, ts, |src| {
                PayloadRec::NodeComplete {
                    node: n,
                    output: src.tree.node(n).output.clone(),
                }
            });
        } else {
            self.emit_with(EventKind::NodeFailed, ts, |_| PayloadRec::NodeFailed {
                node: n,
                status,
                error: error.cloned().unwrap_or_default(),
            });
        }
        true
    }

    fn auto_complete_current(&mut self, ts: i64) {
        for i in 0..self.tree.current.len() {
            let n = self.tree.current[i];
            self.finish_node(n, NodeStatus::Completed, None, ts);
        }
    }

    fn emit_node_start(&mut self, idx: u32, ts: i64) {
        self.emit_with(EventKind::NodeStart, ts, |_| PayloadRec::NodeStart(idx));
    }

    /// `Trace::add`: a node after the current nodes (or the root).
    pub(crate) fn add(&mut self, spec: &mut NodeSpec) -> Result<u32> {
        self.check_open()?;
        self.check_nodes(1)?;
        let ts = self.tick();
        let idx = if self.tree.root.is_none() {
            let idx = self.new_node(&[], spec, ts);
            self.tree.root = Some(idx);
            self.status = TraceStatus::Running;
            self.tree.current.clear();
            idx
        } else {
            if spec.auto_completes() {
                self.auto_complete_current(ts);
            }
            // The cursor moves to the new node: its old nodes are the parents.
            let mut parents = std::mem::take(&mut self.tree.current);
            let idx = self.new_node(&parents, spec, ts);
            parents.clear();
            self.tree.current = parents;
            idx
        };
        self.tree.current.push(idx);
        self.touch_info();
        self.emit_node_start(idx, ts);
        Ok(idx)
    }

    /// `Node::add`: a child of `parent`; the cursor does not move.
    pub(crate) fn add_child(&mut self, parent: u32, spec: &mut NodeSpec) -> Result<u32> {
        self.check_open()?;
        self.check_nodes(1)?;
        let ts = self.tick();
        let idx = self.new_node(&[parent], spec, ts);
        self.emit_node_start(idx, ts);
        Ok(idx)
    }

    /// `Trace::parallel` (`under == None`: under all current nodes, moving the
    /// cursor) and `Node::parallel` (`under == Some(n)`: children of `n`).
    /// Returns the index of the first branch and the count; branches are
    /// contiguous.
    pub(crate) fn parallel(
        &mut self,
        under: Option<u32>,
        specs: &mut NodeSpecs,
    ) -> Result<(u32, u32)> {
        self.check_open()?;
        if specs.is_empty() {
            return Err(Error::EmptyParallel);
        }
        // All branches or none.
        self.check_nodes(specs.len())?;
        let parents: SmallVec<[u32; 4]> = match under {
            Some(n) => SmallVec::from_slice(&[n]),
            None => {
                if self.tree.root.is_none() {
                    return Err(Error::NoRoot);
                }
                self.tree.current.clone()
            }
        };
        let ts = self.tick();
        if under.is_none() && specs.iter().any(NodeSpec::auto_completes) {
            self.auto_complete_current(ts);
        }
        let first = arena_index(self.tree.len());
        let count = arena_index(specs.len());
        for spec in specs.iter_mut() {
            self.new_node(&parents, spec, ts);
        }
        if under.is_none() {
            self.tree.current.clear();
            self.tree.current.extend(first..first + count);
            self.touch_info();
        }
        self.emit(
            EventKind::NodeStart,
            ts,
            PayloadRec::NodesStart { first, count },
        );
        Ok((first, count))
    }

    /// `Node::join`: a node whose parents are `parents`, linked under each.
    pub(crate) fn join(&mut self, parents: &[u32], spec: &mut NodeSpec) -> Result<u32> {
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
        let idx = self.new_node(&uniq, spec, ts);
        self.emit_node_start(idx, ts);
        Ok(idx)
    }

    fn require_targets(&self, t: Target) -> Result<SmallVec<[u32; 4]>> {
        self.check_open()?;
        if matches!(t, Target::Current) && self.tree.root.is_none() {
            return Err(Error::NoRoot);
        }
        Ok(self.targets(t))
    }

    fn updated(&mut self, n: u32, ts: i64) {
        let node = self.tree.node_mut(n);
        node.updated_at = ts;
        let snap = Box::new(node.snap());
        self.touch_node(n);
        self.emit(
            EventKind::NodeUpdated,
            ts,
            PayloadRec::NodeUpdated { node: n, snap },
        );
    }

    /// Sets the output of the targets (`None`: no output).
    pub(crate) fn set_output(&mut self, t: Target, output: Option<Val>) -> Result<()> {
        let targets = self.require_targets(t)?;
        let ts = self.tick();
        for n in targets {
            self.tree.node_mut(n).output = output.clone();
            self.updated(n, ts);
        }
        Ok(())
    }

    /// Sets a metadata key (to a serialized value) on the targets, the key
    /// serialized here.
    #[cfg(test)]
    pub(crate) fn set_metadata(&mut self, t: Target, key: &str, value: Val) -> Result<()> {
        self.set_metadata_with(t, key, &crate::event::value::key_json(key), value)
    }

    /// Sets a metadata key (to a serialized value) on the targets;
    /// `key_json` is the key as a JSON string, serialized before the lock.
    pub(crate) fn set_metadata_with(
        &mut self,
        t: Target,
        key: &str,
        key_json: &Val,
        value: Val,
    ) -> Result<()> {
        let targets = self.require_targets(t)?;
        let ts = self.tick();
        for n in targets {
            self.tree
                .node_mut(n)
                .metadata
                .insert(key, key_json, value.clone());
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
                self.finish_node(n, status, None, ts);
            }
            _ => {
                let node = self.tree.node_mut(n);
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
    /// skipped; for one node, a terminal node is an error. `Some(output)`
    /// sets the output first (`Some(None)`: a `null` output, i.e. none).
    pub(crate) fn complete(&mut self, t: Target, output: Option<Option<Val>>) -> Result<()> {
        let targets = self.require_targets(t)?;
        if let Target::Node(n) = t {
            self.ensure_unfinished(n)?;
        }
        let ts = self.tick();
        for n in targets {
            if self.tree.node(n).status.is_terminal() {
                continue;
            }
            if let Some(out) = &output {
                self.tree.node_mut(n).output = out.clone();
            }
            self.finish_node(n, NodeStatus::Completed, None, ts);
        }
        Ok(())
    }

    /// Fails the targets: an error log line `line` on each, then
    /// `node_failed` with `error`.
    pub(crate) fn fail(&mut self, t: Target, error: &Val, line: &Val) -> Result<()> {
        let targets = self.require_targets(t)?;
        if let Target::Node(n) = t {
            self.ensure_unfinished(n)?;
        }
        let ts = self.tick();
        for n in targets {
            if self.tree.node(n).status.is_terminal() {
                continue;
            }
            let mut text = LogText::of_val(line.clone());
            self.push_log(n, Level::Error, &mut text, true, None, ts);
            self.finish_node(n, NodeStatus::Failed, Some(error), ts);
        }
        Ok(())
    }

    fn ensure_unfinished(&self, n: u32) -> Result<()> {
        if self.tree.node(n).status.is_terminal() {
            Err(Error::NodeFinished)
        } else {
            Ok(())
        }
    }

    // ---- logs ---------------------------------------------------------------

    /// Appends a log line of node `n` and its `log_added` event; `last`:
    /// the text's last use (see [`LogText::store`]).
    fn push_log(
        &mut self,
        n: u32,
        level: Level,
        msg: &mut LogText<'_>,
        last: bool,
        data: Option<Val>,
        ts: i64,
    ) {
        let line = self.logs.end() as u64;
        let text_bytes = LogRec::text_bytes(msg.len(), data.as_ref());
        let bytes = u32::try_from(text_bytes).unwrap_or(u32::MAX);
        let cost = text_bytes + LINE_OVERHEAD;
        // The seq its `log_added` gets next (the line is in the log first,
        // so that the event's size can be reckoned from it).
        let seq = self.events.next_seq();
        let owns = msg.is_shared() || data.as_ref().is_some_and(Val::is_shared);
        let rec = self.logs.push_with(cost, owns, || LogRec {
            timestamp: ts,
            level,
            msg: Val::default(),
            data,
            node: n,
            seq,
            cost,
        });
        msg.store(&mut rec.msg, last);
        let seq = self.emit_with(EventKind::LogAdded, ts, |_| PayloadRec::LogAdded {
            line,
            bytes,
        });
        debug_assert_eq!(self.logs.lines.back().map(|l| l.seq), Some(seq));
        self.evict_logs();
    }

    /// Lets the oldest log lines leave memory until the rest fits in
    /// `max_log_bytes` (they stay in storage: a line not yet handed to the
    /// driver is encoded for it first, and so is its event).
    fn evict_logs(&mut self) {
        while self.logs.over(self.limits.max_log_bytes) {
            if let Some(seq) = self.logs.lines.front().map(|l| l.seq) {
                let (log, src) = self.split();
                log.encode_seq(seq, &src);
            }
            if self.limits.documents && self.logs.base >= self.logs.flushed {
                self.stash_oldest_log_line();
                self.logs.flushed = self.logs.base + 1;
            }
            if self.logs.pop_oldest().is_none() {
                break;
            }
            self.stat_logs_evicted += 1;
        }
    }

    /// Chainable logging: never fails; a log with nowhere to go is counted.
    ///
    /// `msg` and `data` are passed by reference: they were made before the
    /// lock, and are copied once, into the line's record.
    pub(crate) fn log(
        &mut self,
        t: Target,
        level: Level,
        msg: &mut LogText<'_>,
        data: &mut Option<Val>,
    ) {
        if self.finished || (matches!(t, Target::Current) && self.tree.current.is_empty()) {
            self.stat_logs_dropped += 1;
            return;
        }
        let ts = self.tick();
        match t {
            Target::Node(n) => self.push_log(n, level, msg, true, data.take(), ts),
            Target::Current => {
                // Every current node gets the line; the last one takes the
                // values themselves (one current node: no copy).
                let last = self.tree.current.len() - 1;
                for i in 0..last {
                    let n = self.tree.current[i];
                    self.push_log(n, level, msg, false, data.clone(), ts);
                }
                let n = self.tree.current[last];
                self.push_log(n, level, msg, true, data.take(), ts);
            }
        }
    }

    // ---- trace-level terminal transitions -----------------------------------

    fn total_duration(&self, ts: i64) -> i64 {
        self.tree
            .root
            .map(|r| ts - self.tree.node(r).created_at)
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
        let total = self.total_duration(ts);
        self.emit(
            EventKind::Complete,
            ts,
            PayloadRec::Complete {
                status: TraceStatus::Completed,
                total,
            },
        );
        true
    }

    /// Cancels every unfinished node (`node_failed`, status `cancelled`), then
    /// emits `complete` with status `cancelled`. Does nothing on a finished trace.
    pub(crate) fn mark_cancelled(&mut self, reason: &Val) -> bool {
        if self.finished {
            return false;
        }
        let ts = self.tick();
        for n in self.tree.bfs_order() {
            self.finish_node(n, NodeStatus::Cancelled, Some(reason), ts);
        }
        self.finished = true;
        self.status = TraceStatus::Cancelled;
        self.touch_info();
        let total = self.total_duration(ts);
        self.emit(
            EventKind::Complete,
            ts,
            PayloadRec::Complete {
                status: TraceStatus::Cancelled,
                total,
            },
        );
        true
    }

    // ---- snapshots ----------------------------------------------------------

    /// `Trace::trace_info`.
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

    /// Counters gathered since the last call, reset to zero: events
    /// emitted, evicted from history, dropped from the write queue; log
    /// lines dropped, evicted.
    pub(crate) fn take_stats(&mut self) -> [u64; 5] {
        let [emitted, evicted, dropped] = self.events.take_stats();
        let s = [
            emitted,
            evicted,
            dropped,
            self.stat_logs_dropped,
            self.stat_logs_evicted,
        ];
        self.stat_logs_dropped = 0;
        self.stat_logs_evicted = 0;
        s
    }
}
