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
use crate::id::{ID_SPACE, IdMap, ShortId};
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
    /// Callers use the spec where it lies in the returned `Result` (`Ok(ref
    /// mut spec)`) rather than moving it out with `?`: the move would read
    /// the just-written record back at once, wider than it was written,
    /// which stalls (see `crate::ring`).
    ///
    /// # Errors
    /// `InvalidValue` when either does not serialize.
    pub(crate) fn new<T: Serialize + ?Sized>(input: &T, opts: NodeOptions) -> Result<NodeSpec> {
        let mut spec = NodeSpec::of_options(opts)?;
        spec.set_input(input)?;
        Ok(spec)
    }

    /// A spec without input (see [`NodeSpec::set_input`]): the options'
    /// metadata serialized.
    ///
    /// # Errors
    /// `InvalidValue` when the metadata does not serialize.
    #[inline]
    pub(crate) fn of_options(opts: NodeOptions) -> Result<NodeSpec> {
        Ok(NodeSpec {
            input: None,
            metadata: JsonMap::from_map(&opts.metadata)?,
            label: opts.label,
            node_type: opts.node_type,
            icon: opts.icon,
            description: opts.description,
            auto_complete_parent: opts.auto_complete_parent,
        })
    }

    /// Serializes `input` into the spec where it lies (its bytes are not
    /// moved before the lock: see [`value::json_into`]).
    ///
    /// # Errors
    /// `InvalidValue` when it does not serialize.
    #[inline]
    pub(crate) fn set_input<T: Serialize + ?Sized>(&mut self, input: &T) -> Result<()> {
        value::json_opt_into(&mut self.input, input)
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
    /// Listed in the trace's [`Unsaved`](super::persist::Unsaved) nodes
    /// (document snapshots); set and cleared by it only.
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

/// Step between the id numbers of consecutive nodes: coprime with
/// [`ID_SPACE`] (odd, not a multiple of 3), so that index → id is one-to-one
/// within a trace, and large, so that consecutive ids look unrelated.
const ID_STEP: u64 = 2_928_480_718_740_974_081;
/// The inverse of [`ID_STEP`] modulo [`ID_SPACE`] (id → index).
const ID_STEP_INV: u64 = 3_251_198_494_093_940_225;
const _: () =
    assert!(ID_STEP < ID_SPACE && !ID_STEP.is_multiple_of(2) && !ID_STEP.is_multiple_of(3));

/// The node tree of one trace.
///
/// Node ids are numbered, not drawn: node `i` of a trace gets the id whose
/// base-36 value is `salt + i × ID_STEP` (mod 36^12), with a random `salt`
/// per trace. Ids are therefore unique within a trace by construction and
/// resolve back to their index with arithmetic, so creating a node touches
/// no hash map. Only nodes read from storage (whose ids were made elsewhere)
/// and the rare new node whose number a stored node already uses are kept
/// in `index`.
#[derive(Debug, Default)]
pub(crate) struct Tree {
    pub(crate) nodes: Vec<NodeRec>,
    /// Ids not numbered by this tree: stored nodes, and replacements drawn
    /// at random for a number a stored node took.
    index: IdMap<ShortId, u32>,
    /// The id number of node 0.
    salt: u64,
    /// The id number of the next node.
    next_number: u64,
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
    ///
    /// The spec's fields move into the node (it is left empty): it is
    /// passed by reference because it was built before the trace lock was
    /// taken, and reading it here copies each field once, into the arena.
    pub(crate) fn new_node(&mut self, parents: &[u32], spec: &mut NodeSpec, ts: i64) -> u32 {
        let idx = arena_index(self.nodes.len());
        let mut id = ShortId::from_number(self.take_number());
        if !self.index.is_empty() {
            id = self.unless_taken(id, idx);
        }
        let initial_metadata = spec.metadata.object().cloned();
        // Written straight into the arena's spare room (a `push` of a
        // record this size builds it on the stack and copies it over).
        self.nodes.reserve(1);
        let len = self.nodes.len();
        self.nodes.spare_capacity_mut()[0].write(NodeRec {
            id,
            parents: SmallVec::from_slice(parents),
            children: SmallVec::new(),
            label: std::mem::take(&mut spec.label),
            node_type: std::mem::take(&mut spec.node_type),
            icon: std::mem::take(&mut spec.icon),
            description: std::mem::take(&mut spec.description),
            metadata: std::mem::take(&mut spec.metadata),
            initial_metadata,
            auto_complete_parent: spec.auto_complete_parent,
            status: NodeStatus::Running,
            input: spec.input.take(),
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
        // Its number is skipped: numbering stays in step with the index.
        self.take_number();
        self.index.insert(rec.id, idx);
        self.nodes.push(rec);
        idx
    }

    /// The id number of the node about to be appended (numbering starts
    /// afresh, with a new salt, at a trace's first node).
    #[inline]
    fn take_number(&mut self) -> u64 {
        if self.nodes.is_empty() {
            self.salt = fastrand::u64(..ID_SPACE);
            self.next_number = self.salt;
        }
        let n = self.next_number;
        // Both are below ID_SPACE < 2^63: the sum does not overflow.
        let next = n + ID_STEP;
        self.next_number = if next >= ID_SPACE {
            next - ID_SPACE
        } else {
            next
        };
        n
    }

    /// `id` for node `idx`, unless a stored node has it: then a random id
    /// that no node has (kept in the index).
    #[cold]
    fn unless_taken(&mut self, id: ShortId, idx: u32) -> ShortId {
        if self.find_id(id).is_none() {
            return id;
        }
        loop {
            let id = ShortId::generate();
            if self.find_id(id).is_none() {
                self.index.insert(id, idx);
                return id;
            }
        }
    }

    /// Resolves a node id of this trace.
    pub(crate) fn find(&self, id: &str) -> Option<u32> {
        ShortId::parse(id).and_then(|s| self.find_id(s))
    }

    fn find_id(&self, id: ShortId) -> Option<u32> {
        if let Some(&n) = self.index.get(&id) {
            return Some(n);
        }
        // The index whose number this id would be.
        let d = (id.number() + ID_SPACE - self.salt) % ID_SPACE;
        let n = (u128::from(d) * u128::from(ID_STEP_INV) % u128::from(ID_SPACE)) as u64;
        let n = u32::try_from(n).ok()?;
        (self.nodes.get(n as usize)?.id == id).then_some(n)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> NodeSpec {
        NodeSpec::new(&1, NodeOptions::new()).unwrap()
    }

    #[test]
    fn the_step_is_invertible() {
        let p = u128::from(ID_STEP) * u128::from(ID_STEP_INV) % u128::from(ID_SPACE);
        assert_eq!(p, 1);
    }

    #[test]
    fn numbered_ids_are_unique_and_resolve_to_their_node() {
        let mut t = Tree::default();
        let mut seen = std::collections::HashSet::new();
        for i in 0..20_000u32 {
            let parents: &[u32] = if i == 0 { &[] } else { &[0] };
            assert_eq!(t.new_node(parents, &mut spec(), 0), i);
        }
        for (i, n) in t.nodes.iter().enumerate() {
            assert!(seen.insert(n.id), "duplicate id {:?}", n.id);
            assert_eq!(t.find(n.id.as_str()), Some(i as u32));
        }
        assert!(t.index.is_empty(), "numbered ids need no index");
        // An id of the right shape that no node has is not found.
        let id5 = t.nodes[5].id.as_str().to_owned();
        let last = if id5.ends_with('z') { "y" } else { "z" };
        let other = format!("{}{last}", &id5[..11]);
        assert_eq!(t.find(&other), None);
        assert_eq!(t.find("not-an-id"), None);
        // A new trace in the same tree numbers afresh (another salt).
        let first = t.nodes[0].id;
        t.reset();
        t.new_node(&[], &mut spec(), 0);
        assert_ne!(t.nodes[0].id, first);
        assert_eq!(t.find(first.as_str()), None);
    }

    #[test]
    fn a_stored_node_with_the_next_number_is_not_shadowed() {
        // Nodes of another trace, read back into a fresh tree.
        let mut src = Tree::default();
        for i in 0..3u32 {
            let parents: &[u32] = if i == 0 { &[] } else { &[i - 1] };
            src.new_node(parents, &mut spec(), 0);
        }
        let stored: Vec<NodeRec> = std::mem::take(&mut src.nodes);
        let ids: Vec<ShortId> = stored.iter().map(|n| n.id).collect();
        let mut t = Tree::default();
        for rec in stored {
            t.restore_node(rec);
        }
        // The next number is the id of stored node 1.
        t.next_number = ids[1].number();
        let n = t.new_node(&[2], &mut spec(), 0);
        assert_eq!(n, 3);
        let new_id = t.nodes[3].id;
        assert!(!ids.contains(&new_id), "new node took a stored id");
        for (i, id) in ids.iter().chain([&new_id]).enumerate() {
            assert_eq!(t.find(id.as_str()), Some(i as u32), "{id:?}");
        }
        // Numbering goes on after the replacement.
        let m = t.new_node(&[3], &mut spec(), 0);
        assert_eq!(t.find(t.nodes[m as usize].id.as_str()), Some(m));
    }
}
