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

#[cfg(test)]
mod tests {
    //! Every event kind, with strings that need escaping, long strings
    //! (longer than an arena chunk too), unicode and big numbers: the bytes
    //! written are serde_json's own compact form of what they parse to, and
    //! the envelope offsets point at the fields they name.

    use std::collections::HashSet;
    use std::sync::Arc;

    use serde_json::{Value, json};

    use crate::event::value::{self, Val};
    use crate::event::{Cursor, EventKind};
    use crate::id::TraceId;
    use crate::model::{Level, NodeStatus};
    use crate::options::{NodeOptions, SpaceOptions, TraceOptions};
    use crate::trace::state::{Limits, Target, TraceState};
    use crate::trace::tree::{NodeSpec, NodeSpecs};

    fn spec(input: &Value, opts: NodeOptions) -> NodeSpec {
        NodeSpec::new(input, opts).unwrap()
    }

    fn j(v: Value) -> Val {
        value::json(&v).unwrap()
    }

    fn text(s: &str) -> Val {
        value::text(&[s])
    }

    #[test]
    fn every_kind_is_serde_json_compact_form() {
        let limits = Limits {
            history: 100_000,
            subscriber_buffer: 10,
            pending: 100_000,
            persists: true,
            documents: false,
            driver: "memory",
            max_nodes: 10_000,
            max_log_bytes: 1 << 30,
            max_subscribers: 10,
            max_space_entries: 1_000,
            max_trace_space_entries: 10_000,
            max_spaces: 10,
            pending_bytes: 1 << 30,
            leases: false,
        };
        let weird = "q\"u\\o\te\n\r\u{1}\u{1f}\u{7f} ünïcode 😀 \u{2028}";
        let mut st = TraceState::new(limits, Arc::default());
        st.start(
            TraceId::parse("trace-every_kind").unwrap(),
            TraceOptions::new(),
            1_000,
        );
        let mut roots = Vec::new();
        for round in 0..3usize {
            let long = format!("{}{weird}", "L".repeat(30 + round * 40_000));
            let root = st
                .add(spec(
                    &json!({"q": weird, "big": u64::MAX, "neg": i64::MIN, "f": 1.5e300}),
                    NodeOptions::new()
                        .label(weird.to_string())
                        .node_type(if round == 0 { "" } else { "llm" })
                        .icon("🔥")
                        .description(long.clone())
                        .metadata("k", json!("v\n")),
                ))
                .unwrap();
            roots.push(root);
            let child = st
                .add_child(
                    root,
                    spec(
                        &json!(7),
                        NodeOptions::new()
                            .label("Child")
                            .auto_complete_parent(round == 1),
                    ),
                )
                .unwrap();
            st.log(
                Target::Node(child),
                Level::Debug,
                text("plain"),
                Some(j(json!({"n": 1}))),
            );
            st.log(Target::Node(child), Level::Warn, text(weird), None);
            st.log(Target::Node(child), Level::Error, text(&long), None);
            st.log(Target::Node(child), Level::Info, text("ünï"), None);
            st.set_output(Target::Node(child), Some(j(json!({"out": weird}))))
                .unwrap();
            st.set_metadata(Target::Node(child), "k2", j(json!([1, {"x": "y"}])))
                .unwrap();
            st.complete(Target::Node(child), Some(Some(j(json!(u64::MAX)))))
                .unwrap();
            let specs: NodeSpecs = (0..3)
                .map(|i| spec(&json!(i), NodeOptions::new().label(long.clone())))
                .collect();
            let (first, _) = st.parallel(Some(root), specs).unwrap();
            st.set_status(first, NodeStatus::Skipped).unwrap();
            st.fail(Target::Node(first + 1), &text(weird), &text(&long))
                .unwrap();
            st.complete(Target::Node(first + 2), None).unwrap();
            let space = st
                .create_space(
                    SpaceOptions::new()
                        .label(if round == 1 { "" } else { weird })
                        .metadata("x", true),
                )
                .unwrap();
            st.set_space_value(&space.id, weird, text(weird), j(json!({"v": long})))
                .unwrap();
            st.set_space_value(&space.id, weird, text(weird), j(json!(-2)))
                .unwrap();
            st.set_space_value(&space.id, "o", text("o"), j(json!("o")))
                .unwrap();
            st.delete_space_value(&space.id, "o", text("o")).unwrap();
            st.clear_space_values(&space.id).unwrap();
            st.delete_space(&space.id).unwrap();
            st.complete(Target::Node(root), Some(Some(j(json!(weird)))))
                .unwrap();
        }
        assert!(st.mark_cancelled(&text(weird)));
        let (log, src) = st.split();
        let events = log.snapshot(Cursor::Seq(0), &src);
        let mut kinds = HashSet::new();
        for ev in &events {
            kinds.insert(ev.kind);
            let v: Value = serde_json::from_slice(&ev.bytes).unwrap();
            assert_eq!(
                serde_json::to_string(&v).unwrap(),
                ev.to_json(),
                "event {} ({})",
                ev.seq,
                ev.kind
            );
            assert_eq!(v["type"], ev.kind.as_str());
            assert_eq!(v["seq"], ev.seq);
            assert_eq!(v["timestamp"], ev.timestamp);
            assert_eq!(v["trace_id"], ev.trace_id());
            assert_eq!(v["node_id"], ev.node_id());
            assert_eq!(v["space_id"], ev.space_id());
            assert_eq!(serde_json::to_string(&v["data"]).unwrap(), ev.data_json());
        }
        for k in EventKind::ALL {
            assert!(kinds.contains(&k), "no {k} event");
        }
        let cancelled = events.last().unwrap().data();
        assert_eq!(cancelled["status"], "cancelled");
        assert!(events.iter().any(|e| e.data_json().contains("\\u0001")));
    }
}
