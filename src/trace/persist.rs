//! The persistence side of a trace's state: taking what is queued for the
//! driver (events, and for persistent drivers the dirty documents and new log
//! lines, encoded in the reference's formats), putting it back after a failed
//! write, and rebuilding a trace from a [`StoredTrace`] on `open`.
//!
//! Everything here runs on a worker (or in `open`), under the slot lock,
//! never on the caller's hot path — except [`TraceState::stash_oldest_log_line`],
//! which encodes a log line that must leave memory before a worker took it.

use std::borrow::Cow;
use std::collections::VecDeque;

use smallvec::SmallVec;

use super::logs::LogRec;
use super::spaces::SpaceRec;
use super::state::{SPACE_DATA, SPACE_DELETED, SPACE_META, TraceState};
use super::tree::NodeRec;
use crate::driver::format::{InfoDoc, PersistNode, SpaceDoc};
use crate::driver::{DocBuf, DocKind, StoredTrace};
use crate::error::{Error, Result};
use crate::event::value::{self, JsonMap, Val};
use crate::event::{Event, EventKind};
use crate::id::{ShortId, TraceId};
use crate::model::TraceStatus;

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
pub(crate) struct EncodedLines {
    buf: Vec<u8>,
    lines: Vec<DocBuf>,
}

impl EncodedLines {
    pub(crate) fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    pub(crate) fn clear(&mut self) {
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

impl TraceState {
    /// Encodes the log line at `logs.lines[rel]` (its index in the whole
    /// log is `logs.base + rel`) as one line of the node's log file: the
    /// reference's `TraceLog` (Go field names), compact.
    fn encode_log_line(&self, rel: usize, buf: &mut Vec<u8>) -> DocBuf {
        let l = &self.logs.lines[rel];
        let node = self.tree.node(l.node).id;
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
            n: (self.logs.base + rel) as u64,
        }
    }

    /// The oldest in-memory log line is about to leave memory before it was
    /// handed to the driver: keep it, encoded, for the next batch.
    pub(crate) fn stash_oldest_log_line(&mut self) {
        let mut lines = std::mem::take(&mut self.unflushed_lines);
        let before = lines.buf.len();
        let d = self.encode_log_line(0, &mut lines.buf);
        lines.lines.push(d);
        let added = lines.buf.len() - before;
        self.unflushed_lines = lines;
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
        self.unflushed_lines.drain_into(w);
        let from = self.logs.flushed.max(self.logs.base) - self.logs.base;
        for rel in from..self.logs.lines.len() {
            let d = self.encode_log_line(rel, &mut w.buf);
            w.logs.push(d);
        }
        self.logs.flushed = self.logs.end();
        let dirty = std::mem::take(&mut self.dirty_nodes);
        for &n in &dirty {
            self.tree.node_mut(n).dirty = false;
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
        self.dirty_nodes = dirty;
        self.dirty_nodes.clear();
        let spaces = std::mem::take(&mut self.dirty_spaces);
        for &(id, flags) in &spaces {
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
        self.dirty_spaces = spaces;
        self.dirty_spaces.clear();
        if self.info_dirty {
            self.info_dirty = false;
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
        let added = self.unflushed_lines.prepend(w);
        let (log, src) = self.split();
        log.add_pending_bytes(added, &src);
        for d in &w.docs {
            match d.kind {
                DocKind::Info => self.info_dirty = true,
                DocKind::Node => {
                    if let Some(n) = self.find_node(d.id.as_str()) {
                        self.touch_node(n);
                    }
                }
                DocKind::Space => self.touch_space(d.id, SPACE_META),
                DocKind::SpaceData => self.touch_space(d.id, SPACE_DATA),
                DocKind::SpaceDeleted => self.touch_space(d.id, SPACE_DELETED),
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
