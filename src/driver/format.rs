//! The reference's storage formats (spec §5), shared by every persistent
//! driver: `trace_info.json`, node documents (`persistNode`, PascalCase keys,
//! children by id), space documents, space data maps, log lines (PascalCase)
//! and event lines (the wire format).
//!
//! Encoders produce exactly what the reference writes (documents indented
//! with two spaces, lines compact); decoders accept what the reference
//! writes and return [`Error::Corrupt`] naming the file or key for anything
//! else. Two fields are tracepool's own additions to `trace_info.json`:
//! `__tracepool_root` (the root node id) and `__tracepool_current` (the
//! current-node set), so a reopened trace continues exactly where it was;
//! the reference ignores unknown keys.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::event::{Event, EventKind};
use crate::model::{
    Level, LogEntry, NodeData, NodeStatus, SpaceData, SpaceInfo, TraceInfo, TraceStatus,
};

fn is_zero(v: &i64) -> bool {
    *v == 0
}

fn is_none_or_empty(m: &Option<Map<String, Value>>) -> bool {
    m.as_ref().is_none_or(|m| m.is_empty())
}

/// `nodes/<id>.json` (reference `persistNode`).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct PersistNode<'a> {
    #[serde(rename = "ID", borrow)]
    pub(crate) id: Cow<'a, str>,
    #[serde(
        rename = "ParentIDs",
        default,
        skip_serializing_if = "Vec::is_empty",
        borrow
    )]
    pub(crate) parent_ids: Vec<Cow<'a, str>>,
    #[serde(
        rename = "ChildrenIDs",
        default,
        skip_serializing_if = "Vec::is_empty",
        borrow
    )]
    pub(crate) children_ids: Vec<Cow<'a, str>>,
    #[serde(
        rename = "Label",
        default,
        skip_serializing_if = "str::is_empty",
        borrow
    )]
    pub(crate) label: Cow<'a, str>,
    #[serde(
        rename = "Type",
        default,
        skip_serializing_if = "str::is_empty",
        borrow
    )]
    pub(crate) node_type: Cow<'a, str>,
    #[serde(
        rename = "Icon",
        default,
        skip_serializing_if = "str::is_empty",
        borrow
    )]
    pub(crate) icon: Cow<'a, str>,
    #[serde(
        rename = "Description",
        default,
        skip_serializing_if = "str::is_empty",
        borrow
    )]
    pub(crate) description: Cow<'a, str>,
    #[serde(rename = "Metadata", default, skip_serializing_if = "is_none_or_empty")]
    pub(crate) metadata: Option<Map<String, Value>>,
    #[serde(rename = "Status")]
    pub(crate) status: NodeStatus,
    #[serde(rename = "Input", default, skip_serializing_if = "Option::is_none")]
    pub(crate) input: Option<Value>,
    #[serde(rename = "Output", default, skip_serializing_if = "Option::is_none")]
    pub(crate) output: Option<Value>,
    #[serde(rename = "CreatedAt", default)]
    pub(crate) created_at: i64,
    #[serde(rename = "StartTime", default)]
    pub(crate) start_time: i64,
    #[serde(rename = "EndTime", default, skip_serializing_if = "is_zero")]
    pub(crate) end_time: i64,
    #[serde(rename = "UpdatedAt", default)]
    pub(crate) updated_at: i64,
}

/// `trace_info.json`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct InfoDoc<'a> {
    #[serde(borrow)]
    pub(crate) id: Cow<'a, str>,
    #[serde(default, borrow)]
    pub(crate) driver: Cow<'a, str>,
    pub(crate) status: TraceStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) options: Option<Value>,
    #[serde(default)]
    pub(crate) created_at: i64,
    #[serde(default)]
    pub(crate) updated_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) archived_at: Option<i64>,
    #[serde(default)]
    pub(crate) archived: bool,
    #[serde(
        rename = "__yao_created_by",
        default,
        skip_serializing_if = "Option::is_none",
        borrow
    )]
    pub(crate) created_by: Option<Cow<'a, str>>,
    #[serde(
        rename = "__yao_updated_by",
        default,
        skip_serializing_if = "Option::is_none",
        borrow
    )]
    pub(crate) updated_by: Option<Cow<'a, str>>,
    #[serde(
        rename = "__yao_team_id",
        default,
        skip_serializing_if = "Option::is_none",
        borrow
    )]
    pub(crate) team_id: Option<Cow<'a, str>>,
    #[serde(
        rename = "__yao_tenant_id",
        default,
        skip_serializing_if = "Option::is_none",
        borrow
    )]
    pub(crate) tenant_id: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "is_none_or_empty")]
    pub(crate) metadata: Option<Map<String, Value>>,
    #[serde(
        rename = "__tracepool_root",
        default,
        skip_serializing_if = "Option::is_none",
        borrow
    )]
    pub(crate) root: Option<Cow<'a, str>>,
    #[serde(
        rename = "__tracepool_current",
        default,
        skip_serializing_if = "Option::is_none",
        borrow
    )]
    pub(crate) current: Option<Vec<Cow<'a, str>>>,
}

/// `spaces/<id>.json`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SpaceDoc<'a> {
    #[serde(borrow)]
    pub(crate) id: Cow<'a, str>,
    #[serde(default, borrow)]
    pub(crate) label: Cow<'a, str>,
    #[serde(rename = "type", default, borrow)]
    pub(crate) space_type: Cow<'a, str>,
    #[serde(default, borrow)]
    pub(crate) icon: Cow<'a, str>,
    #[serde(default, borrow)]
    pub(crate) description: Cow<'a, str>,
    #[serde(default)]
    pub(crate) ttl: u64,
    #[serde(default, skip_serializing_if = "is_none_or_empty")]
    pub(crate) metadata: Option<Map<String, Value>>,
    #[serde(default)]
    pub(crate) created_at: i64,
    #[serde(default)]
    pub(crate) updated_at: i64,
}

/// One line of `logs/<node>.jsonl` (no JSON tags in the reference: Go field names).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct LogLine<'a> {
    #[serde(rename = "Timestamp")]
    pub(crate) timestamp: i64,
    #[serde(rename = "Level")]
    pub(crate) level: Level,
    #[serde(rename = "Message", borrow)]
    pub(crate) message: Cow<'a, str>,
    #[serde(rename = "Data", default)]
    pub(crate) data: Value,
    #[serde(rename = "NodeID", borrow)]
    pub(crate) node_id: Cow<'a, str>,
}

/// A trace as read back from storage, before it is loaded into a slot.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct StoredTrace {
    /// Trace metadata (with the stored status).
    pub info: TraceInfo,
    /// Root node id, when the trace has nodes.
    pub root: Option<String>,
    /// The current-node set (the cursor).
    pub current: Vec<String>,
    /// Every node once (order: as stored; the engine rebuilds the DAG by id).
    pub nodes: Vec<NodeData>,
    /// Log lines in the order they were written (by time, then per node).
    pub logs: Vec<LogEntry>,
    /// Spaces with their values, in creation order.
    pub spaces: Vec<SpaceData>,
    /// Event history in seq order (seqs 1..=N, gap-free).
    pub events: Vec<Event>,
}

// ---- decoders -----------------------------------------------------------------

/// Decodes `trace_info.json`. Returns the info plus the root and current ids.
pub fn decode_info(
    bytes: &[u8],
    location: &str,
) -> Result<(TraceInfo, Option<String>, Option<Vec<String>>)> {
    let d: InfoDoc<'_> = serde_json::from_slice(bytes)
        .map_err(|e| Error::corrupt(location, format!("bad trace info: {e}")))?;
    crate::id::validate_trace_id(&d.id)
        .map_err(|_| Error::corrupt(location, format!("bad trace id {:?}", d.id)))?;
    let info = TraceInfo {
        id: d.id.into_owned(),
        driver: d.driver.into_owned(),
        status: d.status,
        created_at: d.created_at,
        updated_at: d.updated_at,
        created_by: d.created_by.map(Cow::into_owned),
        team_id: d.team_id.map(Cow::into_owned),
        tenant_id: d.tenant_id.map(Cow::into_owned),
        metadata: d.metadata.unwrap_or_default(),
        archived: d.archived,
    };
    let current = d
        .current
        .map(|v| v.into_iter().map(Cow::into_owned).collect());
    Ok((info, d.root.map(Cow::into_owned), current))
}

/// Decodes a node document.
pub fn decode_node(bytes: &[u8], location: &str) -> Result<NodeData> {
    let n: PersistNode<'_> = serde_json::from_slice(bytes)
        .map_err(|e| Error::corrupt(location, format!("bad node: {e}")))?;
    if crate::id::ShortId::parse(&n.id).is_none() {
        return Err(Error::corrupt(location, format!("bad node id {:?}", n.id)));
    }
    let own = |v: Vec<Cow<'_, str>>| v.into_iter().map(Cow::into_owned).collect::<Vec<_>>();
    Ok(NodeData {
        id: n.id.into_owned(),
        parent_ids: own(n.parent_ids),
        children: own(n.children_ids),
        label: n.label.into_owned(),
        node_type: n.node_type.into_owned(),
        icon: n.icon.into_owned(),
        description: n.description.into_owned(),
        metadata: n.metadata.unwrap_or_default(),
        status: n.status,
        input: n.input.filter(|v| !v.is_null()),
        output: n.output.filter(|v| !v.is_null()),
        created_at: n.created_at,
        start_time: n.start_time,
        end_time: n.end_time,
        updated_at: n.updated_at,
    })
}

/// Decodes a space document.
pub fn decode_space(bytes: &[u8], location: &str) -> Result<SpaceInfo> {
    let s: SpaceDoc<'_> = serde_json::from_slice(bytes)
        .map_err(|e| Error::corrupt(location, format!("bad space: {e}")))?;
    if crate::id::ShortId::parse(&s.id).is_none() {
        return Err(Error::corrupt(location, format!("bad space id {:?}", s.id)));
    }
    Ok(SpaceInfo {
        id: s.id.into_owned(),
        label: s.label.into_owned(),
        space_type: s.space_type.into_owned(),
        icon: s.icon.into_owned(),
        description: s.description.into_owned(),
        ttl: s.ttl,
        metadata: s.metadata.unwrap_or_default(),
        created_at: s.created_at,
        updated_at: s.updated_at,
    })
}

/// Decodes a space's key-value document (`spaces/<id>/data.json`).
pub fn decode_space_data(bytes: &[u8], location: &str) -> Result<Map<String, Value>> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::corrupt(location, format!("bad space data: {e}")))
}

/// Decodes a log file (`logs/<node>.jsonl`). A torn final line (no trailing
/// newline: the writer was killed mid-append) is ignored; any other bad line
/// is corrupt.
pub fn decode_log_lines(bytes: &[u8], location: &str) -> Result<Vec<LogEntry>> {
    let mut out = Vec::new();
    for_each_line(bytes, location, |line, loc| {
        out.push(decode_log_line(line, loc)?);
        Ok(())
    })?;
    Ok(out)
}

/// Decodes one log line (without its newline); `location` names the file and line.
pub(crate) fn decode_log_line(line: &[u8], location: &str) -> Result<LogEntry> {
    let l: LogLine<'_> = serde_json::from_slice(line)
        .map_err(|e| Error::corrupt(location, format!("bad log line: {e}")))?;
    Ok(LogEntry {
        timestamp: l.timestamp,
        level: l.level,
        message: l.message.into_owned(),
        data: l.data,
        node_id: l.node_id.into_owned(),
    })
}

/// Decodes an event log (`updates.jsonl`). Events without `seq` (written by
/// the reference) are numbered by position; numbered events must be 1..=N.
/// A torn final line is ignored.
pub fn decode_event_lines(bytes: &[u8], location: &str) -> Result<Vec<Event>> {
    let mut out: Vec<Event> = Vec::new();
    for_each_line(bytes, location, |line, loc| {
        push_event_line(&mut out, line, loc)
    })?;
    Ok(out)
}

/// Decodes one event line (without its newline) and appends it to `events`,
/// the event log read so far: an event without `seq` gets the next number, a
/// numbered one must have it.
pub(crate) fn push_event_line(events: &mut Vec<Event>, line: &[u8], location: &str) -> Result<()> {
    let mut ev = Event::from_json(line, location)?;
    let expect = events.len() as u64 + 1;
    if ev.seq == 0 {
        ev = ev.numbered(expect);
    } else if ev.seq != expect {
        return Err(Error::corrupt(
            location,
            format!("event seq {} where {expect} was expected", ev.seq),
        ));
    }
    events.push(ev);
    Ok(())
}

/// The content of one line of a line file, or `None` for a blank line
/// (skipped). A trailing `\r` is dropped.
pub(crate) fn line_content(line: &[u8]) -> Option<&[u8]> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    (!line.iter().all(u8::is_ascii_whitespace)).then_some(line)
}

/// Calls `f(line, "location:N")` for every complete, non-blank line.
fn for_each_line(
    bytes: &[u8],
    location: &str,
    mut f: impl FnMut(&[u8], &str) -> Result<()>,
) -> Result<()> {
    let complete = match bytes.iter().rposition(|&b| b == b'\n') {
        Some(i) => &bytes[..i],
        None => return Ok(()),
    };
    for (n, line) in complete.split(|&b| b == b'\n').enumerate() {
        if let Some(line) = line_content(line) {
            f(line, &format!("{location}:{}", n + 1))?;
        }
    }
    Ok(())
}

impl StoredTrace {
    /// Assembles and checks a stored trace: node ids unique, every parent and
    /// child id present, exactly one root (unless `root` names it), a current
    /// set of known nodes (or, for traces written by the reference, the leaves).
    ///
    /// `node_location` names the file or key of a node id for error messages.
    #[allow(clippy::too_many_arguments)]
    pub fn assemble(
        info: TraceInfo,
        root: Option<String>,
        current: Option<Vec<String>>,
        nodes: Vec<NodeData>,
        mut logs: Vec<LogEntry>,
        spaces: Vec<SpaceData>,
        events: Vec<Event>,
        node_location: &dyn Fn(&str) -> String,
    ) -> Result<StoredTrace> {
        let mut ids: HashMap<&str, usize> = HashMap::with_capacity(nodes.len());
        for (i, n) in nodes.iter().enumerate() {
            if ids.insert(n.id.as_str(), i).is_some() {
                return Err(Error::corrupt(node_location(&n.id), "duplicate node id"));
            }
        }
        for n in &nodes {
            for c in n.children.iter().chain(&n.parent_ids) {
                if !ids.contains_key(c.as_str()) {
                    return Err(Error::corrupt(
                        node_location(&n.id),
                        format!("refers to missing node {c}"),
                    ));
                }
            }
        }
        let root = if nodes.is_empty() {
            None
        } else {
            match root {
                Some(r) if ids.contains_key(r.as_str()) => Some(r),
                Some(r) => return Err(Error::corrupt(node_location(&r), "root node is missing")),
                None => {
                    // The reference does not record its root: the first node without parents.
                    match nodes.iter().find(|n| n.parent_ids.is_empty()) {
                        Some(n) => Some(n.id.clone()),
                        None => {
                            return Err(Error::corrupt(
                                node_location(&nodes[0].id),
                                "no root node found in trace",
                            ));
                        }
                    }
                }
            }
        };
        let current = match current {
            Some(c) => {
                if let Some(bad) = c.iter().find(|id| !ids.contains_key(id.as_str())) {
                    return Err(Error::corrupt(
                        node_location(bad),
                        "current node is missing",
                    ));
                }
                c
            }
            None => nodes
                .iter()
                .filter(|n| n.children.is_empty())
                .map(|n| n.id.clone())
                .collect(),
        };
        logs.sort_by_key(|l| l.timestamp);
        Ok(StoredTrace {
            info,
            root,
            current,
            nodes,
            logs,
            spaces,
            events,
        })
    }
}

/// Puts log lines (read file by file, or list by list) back in the order they were written:
/// the order of their `log_added` events. Lines without an event (the
/// event log lost its tail) follow, per node in file order; the final sort
/// by time (stable) in `StoredTrace::assemble` keeps this order.
pub(crate) fn order_logs(logs: Vec<LogEntry>, events: &[Event]) -> Vec<LogEntry> {
    let mut by_node: HashMap<String, VecDeque<LogEntry>> = HashMap::new();
    let mut nodes: Vec<String> = Vec::new();
    let total = logs.len();
    for l in logs {
        by_node
            .entry(l.node_id.clone())
            .or_insert_with(|| {
                nodes.push(l.node_id.clone());
                VecDeque::new()
            })
            .push_back(l);
    }
    let mut out = Vec::with_capacity(total);
    for e in events {
        if e.kind != EventKind::LogAdded {
            continue;
        }
        if let Some(l) = by_node.get_mut(e.node_id()).and_then(VecDeque::pop_front) {
            out.push(l);
        }
    }
    for n in &nodes {
        if let Some(rest) = by_node.remove(n) {
            out.extend(rest);
        }
    }
    out
}
