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

use bytes::Bytes;
use smallvec::SmallVec;

use super::state::{LogRec, NodeRec, SPACE_DATA, SPACE_DELETED, SPACE_META, SpaceRec, TraceState};
use crate::driver::format::{InfoDoc, LogLine, PersistNode, SpaceDoc};
use crate::driver::{DocBuf, DocKind, StoredTrace};
use crate::error::{Error, Result};
use crate::event::StoredEvent;
use crate::id::{ShortId, TraceId};
use crate::model::TraceStatus;

/// Reusable buffers for one batch (owned by a worker).
#[derive(Debug, Default)]
pub(crate) struct WriteScratch {
    pub(crate) events: VecDeque<StoredEvent>,
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
    /// Encodes the log line at `logs[rel]` (its index in the whole log is
    /// `logs_base + rel`) as one line of the node's log file.
    fn encode_log_line(&self, rel: usize, buf: &mut Vec<u8>) -> DocBuf {
        let l = &self.logs[rel];
        let node = self.nodes[l.node as usize].id;
        let line = LogLine {
            timestamp: l.timestamp,
            level: l.level,
            message: Cow::Borrowed(self.log_msg(l)),
            data: l.data.clone(),
            node_id: Cow::Borrowed(node.as_str()),
        };
        let start = buf.len();
        // Serializing these plain structs into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *buf, &line);
        DocBuf {
            kind: DocKind::Node,
            id: node,
            range: (start, buf.len()),
            n: (self.logs_base + rel) as u64,
        }
    }

    /// The oldest in-memory log line is about to leave memory before it was
    /// handed to the driver: keep it, encoded, for the next batch.
    pub(crate) fn stash_oldest_log_line(&mut self) {
        let mut lines = std::mem::take(&mut self.unflushed_lines);
        let before = lines.buf.len();
        let d = self.encode_log_line(0, &mut lines.buf);
        lines.lines.push(d);
        self.pending_bytes += lines.buf.len() - before;
        self.unflushed_lines = lines;
        self.account_pending();
    }

    /// Moves everything queued for the driver into `w` (which must be empty).
    pub(crate) fn take_writes(&mut self, w: &mut WriteScratch) {
        std::mem::swap(&mut self.pending, &mut w.events);
        self.pending_bytes = 0;
        self.unpublish_pending();
        if !self.limits.documents {
            return;
        }
        self.unflushed_lines.drain_into(w);
        let from = self.logs_flushed.max(self.logs_base) - self.logs_base;
        for rel in from..self.logs.len() {
            let d = self.encode_log_line(rel, &mut w.buf);
            w.logs.push(d);
        }
        self.logs_flushed = self.logs_base + self.logs.len();
        let dirty = std::mem::take(&mut self.dirty_nodes);
        for &n in &dirty {
            let r = &mut self.nodes[n as usize];
            r.dirty = false;
            let r = &self.nodes[n as usize];
            let ids =
                |v: &[u32]| -> Vec<Cow<'_, str>> { self.ids_of(v).map(Cow::Borrowed).collect() };
            let doc = PersistNode {
                id: Cow::Borrowed(r.id.as_str()),
                parent_ids: ids(&r.parents),
                children_ids: ids(&r.children),
                label: Cow::Borrowed(&r.label),
                node_type: Cow::Borrowed(&r.node_type),
                icon: Cow::Borrowed(&r.icon),
                description: Cow::Borrowed(&r.description),
                metadata: (!r.metadata.is_empty()).then(|| r.metadata.clone()),
                status: r.status,
                input: r.input.clone(),
                output: r.output.clone(),
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
            let Some(sp) = self.spaces.iter().find(|s| s.id == id) else {
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
                    let _ = serde_json::to_writer_pretty(b, &sp.data);
                });
            }
        }
        self.dirty_spaces = spaces;
        self.dirty_spaces.clear();
        if self.info_dirty {
            self.info_dirty = false;
            let ids =
                |v: &[u32]| -> Vec<Cow<'_, str>> { self.ids_of(v).map(Cow::Borrowed).collect() };
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
                    .root
                    .map(|r| Cow::Borrowed(self.nodes[r as usize].id.as_str())),
                current: self.root.map(|_| ids(&self.current)),
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
        while let Some(ev) = w.events.pop_back() {
            if self.pending.len() >= self.limits.pending {
                self.stat_pending_dropped += 1 + w.events.len() as u64;
                w.events.clear();
                break;
            }
            self.pending_bytes += ev.bytes.len();
            self.pending.push_front(ev);
        }
        if !self.limits.documents {
            return;
        }
        // The lines keep their encoding; newer lines are already queued
        // behind them (or still in memory, after `logs_flushed`).
        self.pending_bytes += self.unflushed_lines.prepend(w);
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
            let idx = u32::try_from(self.nodes.len())
                .ok()
                .filter(|&i| i < u32::MAX)
                .ok_or_else(|| Error::corrupt(loc("nodes"), "too many nodes"))?;
            self.node_index.insert(sid, idx);
            self.nodes.push(NodeRec {
                id: sid,
                parents: SmallVec::new(),
                children: SmallVec::new(),
                label: Cow::Owned(n.label.clone()),
                node_type: Cow::Owned(n.node_type.clone()),
                icon: Cow::Owned(n.icon.clone()),
                description: Cow::Owned(n.description.clone()),
                metadata: n.metadata.clone(),
                auto_complete_parent: None,
                status: n.status,
                input: n.input.clone(),
                output: n.output.clone(),
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
            for p in &n.parent_ids {
                let p = find(self, p)?;
                self.nodes[i].parents.push(p);
            }
            for c in &n.children {
                let c = find(self, c)?;
                self.nodes[i].children.push(c);
            }
        }
        self.root = match root {
            Some(r) => Some(find(self, &r)?),
            None => None,
        };
        for c in &current {
            let c = find(self, c)?;
            self.current.push(c);
        }
        for l in logs {
            let node = find(self, &l.node_id)?;
            let start = self.log_text.len();
            self.log_text.push_str(&l.message);
            // What the line's event payload takes, roughly: its text, its
            // data as JSON and the keys around them.
            let data_len = serde_json::to_vec(&l.data).map_or(0, |v| v.len());
            let cost = l.message.len() + data_len + 96 + super::state::LOG_LINE_OVERHEAD;
            self.log_bytes += cost;
            self.logs.push_back(LogRec {
                timestamp: l.timestamp,
                level: l.level,
                msg: (start, self.log_text.len()),
                data: l.data,
                node,
                cost,
            });
            last_ts = last_ts.max(l.timestamp);
        }
        // Everything restored is in storage already.
        self.logs_flushed = self.logs.len();
        for sd in spaces {
            self.space_entries += sd.data.len();
            let sid = ShortId::parse(&sd.info.id).ok_or_else(|| {
                Error::corrupt(loc("spaces"), format!("bad space id {:?}", sd.info.id))
            })?;
            self.spaces.push(SpaceRec {
                id: sid,
                label: Cow::Owned(sd.info.label),
                space_type: Cow::Owned(sd.info.space_type),
                icon: Cow::Owned(sd.info.icon),
                description: Cow::Owned(sd.info.description),
                ttl: sd.info.ttl,
                metadata: sd.info.metadata,
                created_at: sd.info.created_at,
                updated_at: sd.info.updated_at,
                data: sd.data,
            });
        }
        let skip = events.len().saturating_sub(self.limits.history);
        let mut finished = matches!(
            self.status,
            TraceStatus::Completed | TraceStatus::Cancelled | TraceStatus::Failed
        );
        let mut next_seq = 1;
        for (i, ev) in events.into_iter().enumerate() {
            next_seq = ev.seq + 1;
            last_ts = last_ts.max(ev.timestamp);
            if ev.kind == crate::event::EventKind::Complete {
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
            if i < skip {
                self.evicted_max_ts = ev.timestamp;
                continue;
            }
            let short = |s: &str| {
                if s.is_empty() {
                    None
                } else {
                    ShortId::parse(s)
                }
            };
            self.history.push_back(StoredEvent {
                seq: ev.seq,
                kind: ev.kind,
                timestamp: ev.timestamp,
                node: short(&ev.node_id),
                space: short(&ev.space_id),
                bytes: Bytes::clone(&ev.bytes),
                data_range: ev.data_range,
            });
        }
        if self.status == TraceStatus::Pending && self.root.is_some() {
            // Stored by the reference, whose stored status stays `pending`.
            self.status = TraceStatus::Running;
        }
        self.next_seq = next_seq;
        self.finished = finished;
        self.last_ts = last_ts;
        Ok(())
    }
}
