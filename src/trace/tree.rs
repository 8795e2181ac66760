//! The node tree of a trace: an arena of node records indexed by id, the
//! root and the cursor (current nodes), and how a node is written into
//! event payloads and snapshots.
//!
//! Nodes are only ever appended while a trace is loaded, and a node's
//! creation-time fields (id, parents, label, type, icon, description,
//! input, initial metadata, created/start time) never change afterwards:
//! a recorded `node_start` refers to its node by index and is encoded from
//! these fields whenever it is first read (see `payload`). Children are only
//! appended, so a `node_updated` record keeps how many there were.

use std::borrow::Cow;
use std::collections::VecDeque;

use serde::Serialize;
use smallvec::SmallVec;

use crate::error::Result;
use crate::event::record::NodeSnap;
use crate::event::value::{self, JsonMap, Val};
use crate::id::{IdMap, ShortId};
use crate::model::{NodeData, NodeStatus};
use crate::options::NodeOptions;

/// Node-arena capacity kept across a reset.
const RETAIN_NODES: usize = 1024;

/// A node to create, with the caller's values already serialized (built
/// before the trace lock is taken).
#[derive(Debug)]
pub(crate) struct NodeSpec {
    pub(crate) input: Option<Val>,
    pub(crate) label: Cow<'static, str>,
    pub(crate) node_type: Cow<'static, str>,
    pub(crate) icon: Cow<'static, str>,
    pub(crate) description: Cow<'static, str>,
    pub(crate) metadata: JsonMap,
    pub(crate) auto_complete_parent: Option<bool>,
}

impl NodeSpec {
    /// Serializes `input` and the options' metadata.
    ///
    /// # Errors
    /// `InvalidValue` when either does not serialize.
    pub(crate) fn new<T: Serialize + ?Sized>(input: &T, opts: NodeOptions) -> Result<NodeSpec> {
        Ok(NodeSpec {
            input: value::json_opt(input)?,
            metadata: JsonMap::from_map(&opts.metadata)?,
            label: opts.label,
            node_type: opts.node_type,
            icon: opts.icon,
            description: opts.description,
            auto_complete_parent: opts.auto_complete_parent,
        })
    }

    /// Whether adding this node completes the running current nodes.
    pub(crate) fn auto_completes(&self) -> bool {
        self.auto_complete_parent != Some(false)
    }
}

/// The branches of one `parallel` call (inline up to four: no allocation).
pub(crate) type NodeSpecs = SmallVec<[NodeSpec; 4]>;

/// One node.
#[derive(Debug)]
pub(crate) struct NodeRec {
    pub(crate) id: ShortId,
    pub(crate) parents: SmallVec<[u32; 2]>,
    pub(crate) children: SmallVec<[u32; 4]>,
    pub(crate) label: Cow<'static, str>,
    pub(crate) node_type: Cow<'static, str>,
    pub(crate) icon: Cow<'static, str>,
    pub(crate) description: Cow<'static, str>,
    /// The metadata now.
    pub(crate) metadata: JsonMap,
    /// The metadata object when the node was created.
    pub(crate) initial_metadata: Option<Val>,
    pub(crate) auto_complete_parent: Option<bool>,
    pub(crate) status: NodeStatus,
    pub(crate) input: Option<Val>,
    pub(crate) output: Option<Val>,
    pub(crate) created_at: i64,
    pub(crate) start_time: i64,
    pub(crate) end_time: i64,
    pub(crate) updated_at: i64,
    /// Listed in the trace's dirty nodes (document snapshots).
    pub(crate) dirty: bool,
}

impl NodeRec {
    /// The changeable fields now (for a `node_updated` record).
    pub(crate) fn snap(&self) -> NodeSnap {
        NodeSnap {
            status: self.status,
            end_time: self.end_time,
            updated_at: self.updated_at,
            children: u32::try_from(self.children.len()).unwrap_or(u32::MAX),
            metadata: self.metadata.object().cloned(),
            output: self.output.clone(),
        }
    }
}

/// The node tree of one trace.
#[derive(Debug, Default)]
pub(crate) struct Tree {
    pub(crate) nodes: Vec<NodeRec>,
    index: IdMap<ShortId, u32>,
    pub(crate) root: Option<u32>,
    /// The cursor: where `Trace::add` attaches the next node.
    pub(crate) current: SmallVec<[u32; 4]>,
}

/// A node index as stored in the arena (`u32`). Node counts are bounded by
/// `max_nodes`, which the builder keeps below `u32::MAX`, and by `open`
/// (which rejects a stored trace with more nodes than that).
pub(crate) fn arena_index(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl Tree {
    /// Number of nodes.
    pub(crate) fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Node `n` (an index this tree handed out).
    pub(crate) fn node(&self, n: u32) -> &NodeRec {
        &self.nodes[n as usize]
    }

    /// Node `n`, mutably.
    pub(crate) fn node_mut(&mut self, n: u32) -> &mut NodeRec {
        &mut self.nodes[n as usize]
    }

    /// Appends a running node under `parents` (linked as their child);
    /// the caller checked the node bound.
    pub(crate) fn new_node(&mut self, parents: &[u32], spec: NodeSpec, ts: i64) -> u32 {
        let idx = arena_index(self.nodes.len());
        let id = loop {
            // One hash per new node: insert, and retry on the (astronomically
            // rare) collision.
            let id = ShortId::generate();
            if let std::collections::hash_map::Entry::Vacant(v) = self.index.entry(id) {
                v.insert(idx);
                break id;
            }
        };
        let initial_metadata = spec.metadata.object().cloned();
        // Written straight into the arena's spare room (a `push` of a
        // record this size builds it on the stack and copies it over).
        self.nodes.reserve(1);
        let len = self.nodes.len();
        self.nodes.spare_capacity_mut()[0].write(NodeRec {
            id,
            parents: SmallVec::from_slice(parents),
            children: SmallVec::new(),
            label: spec.label,
            node_type: spec.node_type,
            icon: spec.icon,
            description: spec.description,
            metadata: spec.metadata,
            initial_metadata,
            auto_complete_parent: spec.auto_complete_parent,
            status: NodeStatus::Running,
            input: spec.input,
            output: None,
            created_at: ts,
            start_time: ts,
            end_time: 0,
            updated_at: ts,
            dirty: false,
        });
        // SAFETY: the element at `len` was just initialized (the spare room
        // reserved above), so the first `len + 1` are.
        unsafe { self.nodes.set_len(len + 1) };
        for &p in parents {
            self.nodes[p as usize].children.push(idx);
        }
        idx
    }

    /// Appends a node read from storage (links are set afterwards).
    pub(crate) fn restore_node(&mut self, rec: NodeRec) -> u32 {
        let idx = arena_index(self.nodes.len());
        self.index.insert(rec.id, idx);
        self.nodes.push(rec);
        idx
    }

    /// Resolves a node id of this trace.
    pub(crate) fn find(&self, id: &str) -> Option<u32> {
        ShortId::parse(id).and_then(|s| self.index.get(&s).copied())
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

    /// A snapshot of node `n`.
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
            metadata: r.metadata.to_map(),
            status: r.status,
            input: r.input.as_deref().map(value::decode),
            output: r.output.as_deref().map(value::decode),
            created_at: r.created_at,
            start_time: r.start_time,
            end_time: r.end_time,
            updated_at: r.updated_at,
        }
    }

    /// Clears the tree, keeping capacity up to a cap.
    pub(crate) fn reset(&mut self) {
        self.nodes.clear();
        if self.nodes.capacity() > RETAIN_NODES {
            self.nodes.shrink_to(RETAIN_NODES);
        }
        self.index.clear();
        if self.index.capacity() > RETAIN_NODES {
            self.index.shrink_to(RETAIN_NODES);
        }
        self.root = None;
        self.current.clear();
    }
}
