//! The persistence side of a trace's state: what a trace owes a persistent
//! driver besides its events ([`Unsaved`]: the dirty documents and the log
//! lines that left memory unwritten), taking what is queued for the driver
//! (events, and for persistent drivers the dirty documents and new log
//! lines, encoded in the reference's formats), putting it back after a failed
//! write, and rebuilding a trace from a [`StoredTrace`] on `open`.
//!
//! Everything here runs on a worker (or in `open`), under the slot lock,
//! never on the caller's hot path — except [`TraceState::stash_oldest_log_line`],
//! which encodes a log line that must leave memory before a worker took it.

use std::borrow::Cow;
use std::collections::VecDeque;

use smallvec::SmallVec;

use super::logs::{LogRec, Logs};
use super::spaces::SpaceRec;
use super::state::TraceState;
use super::tree::{NodeRec, Tree};
use crate::driver::format::{InfoDoc, PersistNode, SpaceDoc};
use crate::driver::{DocBuf, DocKind, StoredTrace};
use crate::error::{Error, Result};
use crate::event::value::{self, JsonMap, Val};
use crate::event::{Event, EventKind};
use crate::id::{ShortId, TraceId};
use crate::model::TraceStatus;

/// Dirty flag of a space (for document snapshots): its info document.
pub(crate) const SPACE_META: u8 = 1;
/// Dirty flag of a space: its data document.
pub(crate) const SPACE_DATA: u8 = 2;
/// Dirty flag of a space: it was deleted (replaces the other flags).
pub(crate) const SPACE_DELETED: u8 = 4;

/// Dirty-list capacity kept across a reset.
const RETAIN_DIRTY: usize = 1024;

/// What a trace owes a persistent driver besides its events and the log
/// lines still in memory (those are the [`EventLog`](crate::event::log::EventLog)'s
/// queue and [`Logs::flushed`]): the documents changed since the last batch
/// was taken — the info document, nodes and spaces, each listed once — and
/// the log lines that left memory before a worker took them, already
/// encoded. It stays empty for a driver that does not want documents (the
/// trace marks nothing then).
///
/// [`TraceState::take_writes`] empties it into a batch,
/// [`TraceState::restore_writes`] fills it again from a failed one.
#[derive(Debug, Default)]
pub(crate) struct Unsaved {
    /// The info document (`trace_info.json`) changed.
    info: bool,
    /// The nodes whose document changed, each once (a listed node's
    /// [`NodeRec::dirty`] is set).
    nodes: Vec<u32>,
    /// The spaces whose documents changed, each once, with what changed
    /// (`SPACE_*` flags).
    spaces: Vec<(ShortId, u8)>,
    /// Log lines that left memory before they were handed to the driver.
    lines: EncodedLines,
}

impl Unsaved {
    /// The info document changed.
    pub(crate) fn mark_info(&mut self) {
        self.info = true;
    }

    /// Node `n` of `tree` changed: lists it, unless it is listed already.
    pub(crate) fn mark_node(&mut self, tree: &mut Tree, n: u32) {
        let node = tree.node_mut(n);
        if !node.dirty {
            node.dirty = true;
            self.nodes.push(n);
        }
    }

    /// Space `id` changed (`flags`: which of its documents, `SPACE_*`); a
    /// deletion replaces whatever was listed for it.
    pub(crate) fn mark_space(&mut self, id: ShortId, flags: u8) {
        match self.spaces.iter_mut().find(|(s, _)| *s == id) {
            Some((_, f)) if flags & SPACE_DELETED != 0 => *f = SPACE_DELETED,
            Some((_, f)) => *f |= flags,
            None => self.spaces.push((id, flags)),
        }
    }

    /// Whether a document (info, node or space) is to be written.
    pub(crate) fn has_documents(&self) -> bool {
        self.info || !self.nodes.is_empty() || !self.spaces.is_empty()
    }

    /// Whether log lines that left memory wait for the driver.
    pub(crate) fn has_lines(&self) -> bool {
        !self.lines.is_empty()
    }

    /// Keeps one log line that leaves memory, encoded by `encode` into the
    /// buffer it is given. Returns its bytes.
    fn stash_line(&mut self, encode: impl FnOnce(&mut Vec<u8>) -> DocBuf) -> usize {
        let before = self.lines.buf.len();
        let d = encode(&mut self.lines.buf);
        self.lines.lines.push(d);
        self.lines.buf.len() - before
    }

    /// Moves the stashed log lines into `w` (see [`EncodedLines::drain_into`]).
    fn take_lines(&mut self, w: &mut WriteScratch) {
        self.lines.drain_into(w);
    }

    /// Puts the log lines of a failed batch back in front of the stashed
    /// ones (see [`EncodedLines::prepend`]). Returns their bytes.
    fn put_back_lines(&mut self, w: &WriteScratch) -> usize {
        self.lines.prepend(w)
    }

    /// Whether the info document is to be written; it is not any more.
    fn take_info(&mut self) -> bool {
        std::mem::take(&mut self.info)
    }

    /// The listed nodes, in the order they changed, unlisted (their
    /// [`NodeRec::dirty`] in `tree` cleared); the list keeps its capacity.
    fn take_nodes(&mut self, tree: &mut Tree) -> std::vec::Drain<'_, u32> {
        self.unmark_nodes(tree);
        self.nodes.drain(..)
    }

    /// Clears [`NodeRec::dirty`] of the listed nodes of `tree` (the caller
    /// empties the list).
    fn unmark_nodes(&self, tree: &mut Tree) {
        for &n in &self.nodes {
            tree.node_mut(n).dirty = false;
        }
    }

    /// The listed spaces with their flags, in the order they first changed;
    /// the list keeps its capacity.
    fn take_spaces(&mut self) -> std::vec::Drain<'_, (ShortId, u8)> {
        self.spaces.drain(..)
    }

    /// Forgets everything listed and stashed (the nodes of `tree` are
    /// unlisted), keeping the capacity.
    pub(crate) fn discard(&mut self, tree: &mut Tree) {
        self.lines.clear();
        self.info = false;
        self.unmark_nodes(tree);
        self.nodes.clear();
        self.spaces.clear();
    }

    /// Empties it for the slot's next occupant (whose tree is new), giving
    /// back the memory of unusually long lists.
    pub(crate) fn reset(&mut self) {
        self.lines.clear();
        self.info = false;
        clear_capped(&mut self.nodes, RETAIN_DIRTY);
        clear_capped(&mut self.spaces, RETAIN_DIRTY);
    }
}

/// Empties `v`, shrinking its capacity to `cap` if it is more.
fn clear_capped<T>(v: &mut Vec<T>, cap: usize) {
    v.clear();
    if v.capacity() > cap {
        v.shrink_to(cap);
    }
}

/// Reusable buffers for one batch (owned by a worker).
#[derive(Debug, Default)]
pub(crate) struct WriteScratch {
    pub(crate) events: VecDeque<Event>,
    pub(crate) buf: Vec<u8>,
    pub(crate) docs: Vec<DocBuf>,
    pub(crate) logs: Vec<DocBuf>,
}

/// Log lines already encoded for the driver, waiting for the next batch: lines
/// that left memory before a worker took them, and lines of a failed batch.
#[derive(Debug, Default)]
struct EncodedLines {
    /// The lines' bytes, one after the other.
    buf: Vec<u8>,
    /// Each line: its node, its index in the node's log and its range in `buf`.
    lines: Vec<DocBuf>,
}

impl EncodedLines {
    /// Whether no line is held.
    fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Drops every line, giving back the memory of an unusually big buffer.
    fn clear(&mut self) {
        self.buf.clear();
        self.lines.clear();
        if self.buf.capacity() > 64 * 1024 {
            self.buf = Vec::new();
        }
    }

    /// Appends every line to `w`'s log lines (in order) and empties itself.
    fn drain_into(&mut self, w: &mut WriteScratch) {
        let base = w.buf.len();
        w.buf.extend_from_slice(&self.buf);
        w.logs.extend(self.lines.iter().map(|d| DocBuf {
            range: (d.range.0 + base, d.range.1 + base),
            ..*d
        }));
        self.clear();
    }

    /// Puts the log lines of a failed batch in front of the lines held here
    /// (they are older). Returns their bytes.
    fn prepend(&mut self, w: &WriteScratch) -> usize {
        if w.logs.is_empty() {
            return 0;
        }
        let mut buf = Vec::with_capacity(self.buf.len() + w.buf.len());
        let mut lines = Vec::with_capacity(self.lines.len() + w.logs.len());
        for d in &w.logs {
            let start = buf.len();
            buf.extend_from_slice(&w.buf[d.range.0..d.range.1]);
            lines.push(DocBuf {
                range: (start, buf.len()),
                ..*d
            });
        }
        let added = buf.len();
        for d in &self.lines {
            let start = buf.len();
            buf.extend_from_slice(&self.buf[d.range.0..d.range.1]);
            lines.push(DocBuf {
                range: (start, buf.len()),
                ..*d
            });
        }
        self.buf = buf;
        self.lines = lines;
        added
    }
}

impl WriteScratch {
    pub(crate) fn clear(&mut self) {
        self.events.clear();
        self.buf.clear();
        self.docs.clear();
        self.logs.clear();
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.events.is_empty() && self.docs.is_empty() && self.logs.is_empty()
    }

    /// Bytes of the events, log lines and documents held.
    pub(crate) fn byte_len(&self) -> usize {
        self.events.iter().map(|e| e.bytes.len()).sum::<usize>() + self.buf.len()
    }

    /// Gives back the memory of an unusually big batch (a worker keeps one
    /// scratch per trace of its largest group).
    pub(crate) fn trim(&mut self) {
        if self.buf.capacity() > 256 << 10 {
            self.buf = Vec::new();
        }
        if self.events.capacity() > 4096 {
            self.events = Default::default();
        }
        if self.docs.capacity() > 4096 {
            self.docs = Vec::new();
        }
        if self.logs.capacity() > 4096 {
            self.logs = Vec::new();
        }
    }
}

fn push_doc(w: &mut WriteScratch, kind: DocKind, id: ShortId, f: impl FnOnce(&mut Vec<u8>)) {
    let start = w.buf.len();
    f(&mut w.buf);
    w.docs.push(DocBuf {
        kind,
        id,
        range: (start, w.buf.len()),
        n: 0,
    });
}

/// Encodes the log line at `logs.lines[rel]` (its index in the whole log is
/// `logs.base + rel`; its node is `tree`'s) as one line of the node's log
/// file: the reference's `TraceLog` (Go field names), compact.
fn encode_log_line(logs: &Logs, tree: &Tree, rel: usize, buf: &mut Vec<u8>) -> DocBuf {
    let l = &logs.lines[rel];
    let node = tree.node(l.node).id;
    let start = buf.len();
    buf.extend_from_slice(b"{\"Timestamp\":");
    buf.extend_from_slice(itoa::Buffer::new().format(l.timestamp).as_bytes());
    buf.extend_from_slice(b",\"Level\":\"");
    buf.extend_from_slice(l.level.as_str().as_bytes());
    buf.extend_from_slice(b"\",\"Message\":");
    // Serializing a str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *buf, value::as_str(&l.msg));
    buf.extend_from_slice(b",\"Data\":");
    buf.extend_from_slice(l.data.as_deref().unwrap_or(b"null"));
    buf.extend_from_slice(b",\"NodeID\":\"");
    buf.extend_from_slice(node.as_str().as_bytes());
    buf.extend_from_slice(b"\"}");
    DocBuf {
        kind: DocKind::Node,
        id: node,
        range: (start, buf.len()),
        n: (logs.base + rel) as u64,
    }
}

impl TraceState {
    /// The oldest in-memory log line is about to leave memory before it was
    /// handed to the driver: keep it, encoded, for the next batch.
    pub(crate) fn stash_oldest_log_line(&mut self) {
        let (logs, tree) = (&self.logs, &self.tree);
        let added = self
            .unsaved
            .stash_line(|buf| encode_log_line(logs, tree, 0, buf));
        let (log, src) = self.split();
        log.add_pending_bytes(added, &src);
    }

    /// Moves everything queued for the driver into `w` (which must be empty).
    pub(crate) fn take_writes(&mut self, w: &mut WriteScratch) {
        let (log, src) = self.split();
        log.take_pending(&mut w.events, &src);
        if !self.limits.documents {
            return;
        }
        self.unsaved.take_lines(w);
        let from = self.logs.flushed.max(self.logs.base) - self.logs.base;
        for rel in from..self.logs.lines.len() {
            let d = encode_log_line(&self.logs, &self.tree, rel, &mut w.buf);
            w.logs.push(d);
        }
        self.logs.flushed = self.logs.end();
        for n in self.unsaved.take_nodes(&mut self.tree) {
            let r = self.tree.node(n);
            let ids = |v: &[u32]| -> Vec<Cow<'_, str>> {
                self.tree.ids_of(v).map(Cow::Borrowed).collect()
            };
            let doc = PersistNode {
                id: Cow::Borrowed(r.id.as_str()),
                parent_ids: ids(&r.parents),
                children_ids: ids(&r.children),
                label: Cow::Borrowed(&r.label),
                node_type: Cow::Borrowed(&r.node_type),
                icon: Cow::Borrowed(&r.icon),
                description: Cow::Borrowed(&r.description),
                metadata: (!r.metadata.is_empty()).then(|| r.metadata.to_map()),
                status: r.status,
                input: r.input.as_deref().map(value::decode),
                output: r.output.as_deref().map(value::decode),
                created_at: r.created_at,
                start_time: r.start_time,
                end_time: r.end_time,
                updated_at: r.updated_at,
            };
            push_doc(w, DocKind::Node, r.id, |b| {
                let _ = serde_json::to_writer_pretty(b, &doc);
            });
        }
        for (id, flags) in self.unsaved.take_spaces() {
            if flags & SPACE_DELETED != 0 {
                push_doc(w, DocKind::SpaceDeleted, id, |_| {});
                continue;
            }
            let Some(sp) = self.spaces.list.iter().find(|s| s.id == id) else {
                continue;
            };
            if flags & SPACE_META != 0 {
                let doc = SpaceDoc {
                    id: Cow::Borrowed(sp.id.as_str()),
                    label: Cow::Borrowed(&sp.label),
                    space_type: Cow::Borrowed(&sp.space_type),
                    icon: Cow::Borrowed(&sp.icon),
                    description: Cow::Borrowed(&sp.description),
                    ttl: sp.ttl,
                    metadata: (!sp.metadata.is_empty()).then(|| sp.metadata.clone()),
                    created_at: sp.created_at,
                    updated_at: sp.updated_at,
                };
                push_doc(w, DocKind::Space, id, |b| {
                    let _ = serde_json::to_writer_pretty(b, &doc);
                });
            }
            if flags & SPACE_DATA != 0 {
                push_doc(w, DocKind::SpaceData, id, |b| {
                    write_values_pretty(b, &sp.data);
                });
            }
        }
        if self.unsaved.take_info() {
            let ids = |v: &[u32]| -> Vec<Cow<'_, str>> {
                self.tree.ids_of(v).map(Cow::Borrowed).collect()
            };
            let doc = InfoDoc {
                id: Cow::Borrowed(self.id.as_str()),
                driver: Cow::Borrowed(self.limits.driver),
                status: self.status,
                options: None,
                created_at: self.created_at,
                updated_at: self.updated_at,
                archived_at: None,
                archived: self.archived,
                created_by: self.created_by.as_deref().map(Cow::Borrowed),
                updated_by: self.created_by.as_deref().map(Cow::Borrowed),
                team_id: self.team_id.as_deref().map(Cow::Borrowed),
                tenant_id: self.tenant_id.as_deref().map(Cow::Borrowed),
                metadata: (!self.metadata.is_empty()).then(|| self.metadata.clone()),
                root: self
                    .tree
                    .root
                    .map(|r| Cow::Borrowed(self.tree.node(r).id.as_str())),
                current: self.tree.root.map(|_| ids(&self.tree.current)),
            };
            // The info document goes last: it names the root and the cursor,
            // which the node documents before it must already describe.
            let start = w.buf.len();
            let _ = serde_json::to_writer_pretty(&mut w.buf, &doc);
            w.docs.push(DocBuf {
                kind: DocKind::Info,
                id: ShortId::EMPTY,
                range: (start, w.buf.len()),
                n: 0,
            });
        }
    }

    /// Puts back what a failed write took, so the next batch retries it.
    /// Events newer than the bound are kept; the oldest are dropped and counted.
    pub(crate) fn restore_writes(&mut self, w: &mut WriteScratch) {
        let (log, src) = self.split();
        log.restore_pending(&mut w.events, &src);
        if !self.limits.documents {
            return;
        }
        // The lines keep their encoding; newer lines are already queued
        // behind them (or still in memory, after `logs_flushed`).
        let added = self.unsaved.put_back_lines(w);
        let (log, src) = self.split();
        log.add_pending_bytes(added, &src);
        for d in &w.docs {
            match d.kind {
                DocKind::Info => self.unsaved.mark_info(),
                DocKind::Node => {
                    if let Some(n) = self.find_node(d.id.as_str()) {
                        self.unsaved.mark_node(&mut self.tree, n);
                    }
                }
                DocKind::Space => self.unsaved.mark_space(d.id, SPACE_META),
                DocKind::SpaceData => self.unsaved.mark_space(d.id, SPACE_DATA),
                DocKind::SpaceDeleted => self.unsaved.mark_space(d.id, SPACE_DELETED),
            }
        }
    }

    /// Rebuilds a trace from storage into this (free) slot. On error the slot
    /// is left reset.
    pub(crate) fn restore(&mut self, id: TraceId, stored: StoredTrace) -> Result<()> {
        let r = self.restore_inner(id, stored);
        if r.is_err() {
            self.discard_writes();
            self.reset();
        }
        r
    }

    fn restore_inner(&mut self, id: TraceId, stored: StoredTrace) -> Result<()> {
        let StoredTrace {
            info,
            root,
            current,
            nodes,
            logs,
            spaces,
            events,
            ..
        } = stored;
        let loc = |what: &str| format!("trace {}: {what}", id.as_str());
        let bad_value = |what: &str| Error::corrupt(loc(what), "a value does not serialize");
        self.phase = super::state::Phase::Live;
        self.id = id;
        self.created_by = info.created_by;
        self.team_id = info.team_id;
        self.tenant_id = info.tenant_id;
        self.metadata = info.metadata;
        self.archived = info.archived;
        self.status = info.status;
        self.created_at = info.created_at;
        self.updated_at = info.updated_at;
        let mut last_ts = info.updated_at;
        for n in &nodes {
            let sid = ShortId::parse(&n.id)
                .ok_or_else(|| Error::corrupt(loc("nodes"), format!("bad node id {:?}", n.id)))?;
            if self.tree.len() >= u32::MAX as usize - 1 {
                return Err(Error::corrupt(loc("nodes"), "too many nodes"));
            }
            let metadata = JsonMap::from_map(&n.metadata).map_err(|_| bad_value("nodes"))?;
            let json_opt = |v: &Option<serde_json::Value>| -> Result<Option<Val>> {
                match v {
                    Some(v) => value::json_opt(v).map_err(|_| bad_value("nodes")),
                    None => Ok(None),
                }
            };
            self.tree.restore_node(NodeRec {
                id: sid,
                parents: SmallVec::new(),
                children: SmallVec::new(),
                label: Cow::Owned(n.label.clone()),
                node_type: Cow::Owned(n.node_type.clone()),
                icon: Cow::Owned(n.icon.clone()),
                description: Cow::Owned(n.description.clone()),
                initial_metadata: metadata.object().cloned(),
                metadata,
                auto_complete_parent: None,
                status: n.status,
                input: json_opt(&n.input)?,
                output: json_opt(&n.output)?,
                created_at: n.created_at,
                start_time: n.start_time,
                end_time: n.end_time,
                updated_at: n.updated_at,
                dirty: false,
            });
            last_ts = last_ts.max(n.updated_at);
        }
        let find = |st: &TraceState, nid: &str| -> Result<u32> {
            st.find_node(nid).ok_or_else(|| {
                Error::corrupt(loc("nodes"), format!("refers to missing node {nid}"))
            })
        };
        for (i, n) in nodes.iter().enumerate() {
            let i = super::tree::arena_index(i);
            for p in &n.parent_ids {
                let p = find(self, p)?;
                self.tree.node_mut(i).parents.push(p);
            }
            for c in &n.children {
                let c = find(self, c)?;
                self.tree.node_mut(i).children.push(c);
            }
        }
        self.tree.root = match root {
            Some(r) => Some(find(self, &r)?),
            None => None,
        };
        for c in &current {
            let c = find(self, c)?;
            self.tree.current.push(c);
        }
        for l in logs {
            let node = find(self, &l.node_id)?;
            let msg = value::text(&[&l.message]);
            let data = value::json_opt(&l.data).map_err(|_| bad_value("logs"))?;
            self.logs
                .push(LogRec::new(l.timestamp, l.level, msg, data, node));
            last_ts = last_ts.max(l.timestamp);
        }
        // Everything restored is in storage already.
        self.logs.flushed = self.logs.end();
        for sd in spaces {
            let sid = ShortId::parse(&sd.info.id).ok_or_else(|| {
                Error::corrupt(loc("spaces"), format!("bad space id {:?}", sd.info.id))
            })?;
            let mut data = self.spaces.new_map();
            for (k, v) in &sd.data {
                data.insert(k.clone(), value::json(v).map_err(|_| bad_value("spaces"))?);
            }
            self.spaces.entries += data.len();
            let label = sd.info.label;
            self.spaces.list.push(SpaceRec {
                id: sid,
                label: Cow::Owned(label),
                space_type: Cow::Owned(sd.info.space_type),
                icon: Cow::Owned(sd.info.icon),
                description: Cow::Owned(sd.info.description),
                ttl: sd.info.ttl,
                metadata: sd.info.metadata,
                created_at: sd.info.created_at,
                updated_at: sd.info.updated_at,
                data,
            });
        }
        let mut finished = matches!(
            self.status,
            TraceStatus::Completed | TraceStatus::Cancelled | TraceStatus::Failed
        );
        for ev in events {
            last_ts = last_ts.max(ev.timestamp);
            if ev.kind == EventKind::Complete {
                finished = true;
                // The reference never updates the stored status (spec §9.4
                // #28): take it from the terminal event.
                if matches!(self.status, TraceStatus::Pending | TraceStatus::Running) {
                    self.status = match ev.data().get("status").and_then(|s| s.as_str()) {
                        Some("cancelled") => TraceStatus::Cancelled,
                        Some("failed") => TraceStatus::Failed,
                        _ => TraceStatus::Completed,
                    };
                }
            }
            self.events.restore_event(ev);
        }
        if self.status == TraceStatus::Pending && self.tree.root.is_some() {
            // Stored by the reference, whose stored status stays `pending`.
            self.status = TraceStatus::Running;
        }
        self.finished = finished;
        self.last_ts = last_ts;
        Ok(())
    }
}

/// A space's values as a pretty-printed JSON object (the `data` document).
fn write_values_pretty(buf: &mut Vec<u8>, data: &super::spaces::SpaceValues) {
    let map: serde_json::Map<String, serde_json::Value> = data
        .iter()
        .map(|(k, v)| (k.clone(), value::decode(v)))
        .collect();
    // Serializing a map of values into a Vec cannot fail.
    let _ = serde_json::to_writer_pretty(buf, &map);
}
