//! How a trace's records become payloads: [`TraceSource`], the view of a
//! trace that the event encoder reads what records refer to through — its
//! nodes (written as the reference's `TraceNode`), its in-memory log lines
//! and its spaces' titles.

use super::logs::Logs;
use super::spaces::Spaces;
use super::tree::Tree;
use crate::event::encode::{LogLine, Source};
use crate::event::json::JsonOut;
use crate::event::record::NodeSnap;
use crate::id::{ShortId, TraceId};
use crate::model::NodeStatus;

/// A trace as the event encoder sees it (borrowed next to its event log).
#[derive(Debug, Clone, Copy)]
pub(crate) struct TraceSource<'a> {
    pub(crate) id: &'a TraceId,
    pub(crate) tree: &'a Tree,
    pub(crate) logs: &'a Logs,
    pub(crate) spaces: &'a Spaces,
}

impl TraceSource<'_> {
    /// The ids of nodes `idx` as JSON strings, comma-separated (the
    /// brackets are the caller's).
    #[inline(always)]
    fn write_ids(&self, out: &mut JsonOut<'_>, idx: &[u32]) {
        for (k, id) in self.tree.ids_of(idx).enumerate() {
            // Node ids are generated: letters and digits.
            let open: &[u8] = if k == 0 { b"\"" } else { b",\"" };
            out.pieces((open, id.as_bytes(), b"\"".as_slice()));
        }
    }
}

impl Source for TraceSource<'_> {
    fn trace_id(&self) -> &str {
        self.id.as_str()
    }

    fn node_id(&self, n: u32) -> &str {
        self.tree.node(n).id.as_str()
    }

    fn start_time(&self, n: u32) -> i64 {
        self.tree.node(n).start_time
    }

    fn node_bytes(&self, n: u32) -> usize {
        let r = self.tree.node(n);
        r.label.len()
            + r.node_type.len()
            + r.icon.len()
            + r.description.len()
            + r.input.as_ref().map_or(0, |v| v.len())
            + r.initial_metadata.as_ref().map_or(0, |v| v.len())
            + 16 * (r.parents.len() + r.children.len())
    }

    /// In few, large pieces: this is the biggest payload of the hot path.
    fn write_node(&self, out: &mut JsonOut<'_>, n: u32, snap: Option<&NodeSnap>) {
        let r = self.tree.node(n);
        let (status, end_time, updated_at, children, metadata, output) = match snap {
            Some(s) => (
                s.status,
                s.end_time,
                s.updated_at,
                (s.children as usize).min(r.children.len()),
                s.metadata.as_ref(),
                s.output.as_ref(),
            ),
            None => (
                NodeStatus::Running,
                0,
                r.created_at,
                0,
                r.initial_metadata.as_ref(),
                None,
            ),
        };
        // In a local copy of the writer: its position stays in registers.
        out.local(|out| {
            out.pieces((
                b"{\"id\":\"".as_slice(),
                r.id.as_str().as_bytes(),
                b"\",\"parent_ids\":[".as_slice(),
            ));
            self.write_ids(out, &r.parents);
            out.raw(b"],\"children\":[");
            self.write_ids(out, &r.children[..children]);
            out.raw(b"],\"label\":").str(&r.label);
            if r.node_type.is_empty() && r.icon.is_empty() && r.description.is_empty() {
                out.raw(b",\"type\":\"\",\"icon\":\"\",\"description\":\"\"");
            } else {
                out.raw(b",\"type\":").str(&r.node_type);
                out.raw(b",\"icon\":").str(&r.icon);
                out.raw(b",\"description\":").str(&r.description);
            }
            if let Some(m) = metadata {
                out.raw(b",\"metadata\":").json(m);
            }
            if let Some(a) = r.auto_complete_parent {
                out.raw(if a {
                    b",\"auto_complete_parent\":true".as_slice()
                } else {
                    b",\"auto_complete_parent\":false"
                });
            }
            out.raw(match status {
                NodeStatus::Pending => b",\"status\":\"pending\"".as_slice(),
                NodeStatus::Running => b",\"status\":\"running\"",
                NodeStatus::Completed => b",\"status\":\"completed\"",
                NodeStatus::Failed => b",\"status\":\"failed\"",
                NodeStatus::Skipped => b",\"status\":\"skipped\"",
                NodeStatus::Cancelled => b",\"status\":\"cancelled\"",
            });
            if let Some(v) = &r.input {
                out.raw(b",\"input\":").json(v);
            }
            if let Some(v) = output {
                out.raw(b",\"output\":").json(v);
            }
            out.raw(b",\"created_at\":").time(r.created_at);
            out.raw(b",\"start_time\":").time(r.start_time);
            if end_time == 0 {
                out.raw(b",\"end_time\":0,\"updated_at\":");
            } else {
                out.raw(b",\"end_time\":").time(end_time);
                out.raw(b",\"updated_at\":");
            }
            out.time(updated_at).raw(b"}").value_done();
        });
    }

    fn log_line(&self, line: u64) -> Option<LogLine<'_>> {
        let rel = usize::try_from(line).ok()?.checked_sub(self.logs.base)?;
        self.logs.lines.get(rel).map(|l| LogLine {
            level: l.level,
            msg: &l.msg,
            data: l.data.as_deref(),
            node: l.node,
        })
    }

    fn space_title(&self, space: &ShortId) -> Option<&str> {
        self.spaces
            .list
            .iter()
            .find(|s| s.id == *space)
            .filter(|s| !s.label.is_empty())
            .map(|s| &*s.label)
    }
}
