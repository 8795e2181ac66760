//! Traces and nodes: the handles callers hold and the per-slot state they
//! operate on.
//!
//! A [`Trace`] or [`Node`] handle is `(engine, slot index, generation)` (plus
//! the node's index). Every call locks the slot, checks the generation, and
//! operates on [`state::TraceState`]; a handle kept after its trace was
//! released gets [`Error::Released`](crate::Error::Released) and never touches
//! the slot's next occupant.

mod handle;
mod node;
pub(crate) mod persist;
pub(crate) mod state;

pub use handle::Trace;
pub use node::Node;
