//! The engine's one hook for exporters: when a trace is released, by any
//! path (explicit `release`, its last handle dropped, idle reaping,
//! `shutdown`, `remove`), the engine hands a [`ReleaseObserver`] a
//! [`TraceSnapshot`] of it before the slot is reset.
//!
//! The snapshot is built under the slot's lock on the releasing thread
//! (it copies the trace's nodes and the log lines still in memory), so a
//! release costs that copy **only when an observer is configured**; the
//! observer must not do I/O in [`ReleaseObserver::released`] (the OTel
//! exporter puts the snapshot on a bounded queue that its own thread drains).
//! Without an observer a release is unchanged.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use crate::error::Result;
use crate::id::now_ms;
use crate::model::{LogEntry, NodeData, TraceInfo};
use crate::trace::state::TraceState;

/// What a released trace looked like at its release.
#[derive(Debug, Clone)]
#[cfg_attr(not(feature = "otel"), allow(dead_code))]
pub(crate) struct TraceSnapshot {
    /// The trace's info (status, metadata, ...).
    pub(crate) info: TraceInfo,
    /// Every node once: root first, then breadth-first.
    pub(crate) nodes: Vec<NodeData>,
    /// The log lines still in memory (`max_log_bytes`), in write order.
    pub(crate) logs: Vec<LogEntry>,
    /// When the trace was released (ms since the epoch): the end of the
    /// nodes still running.
    pub(crate) released_at: i64,
}

impl TraceSnapshot {
    /// Copies what an exporter needs out of a live trace's state. Called
    /// under the slot's lock, only when an observer is configured.
    pub(crate) fn of(st: &TraceState, driver: &str) -> TraceSnapshot {
        TraceSnapshot {
            info: st.trace_info(driver),
            nodes: st
                .tree
                .bfs_order()
                .into_iter()
                .map(|n| st.tree.node_data(n))
                .collect(),
            logs: st.logs.entries(&st.tree, None),
            released_at: now_ms(),
        }
    }
}

/// Hands a trace being released to the observer, if one is configured
/// (called by `Core::release_locked` under the slot's lock).
pub(crate) fn on_release(
    observer: &Option<Arc<dyn ReleaseObserver>>,
    st: &TraceState,
    driver: &str,
) {
    if let Some(o) = observer {
        o.released(TraceSnapshot::of(st, driver));
    }
}

/// Lets the observer pass on what it holds and stop (engine shutdown,
/// after the workers stopped).
pub(crate) fn on_shutdown(observer: &Option<Arc<dyn ReleaseObserver>>) {
    if let Some(o) = observer {
        o.shutdown();
    }
}

/// What builder methods of an exporter gather, turned into the engine's
/// [`ReleaseObserver`] when the engine is built (so the engine does not
/// depend on any exporter).
#[cfg_attr(not(feature = "otel"), allow(dead_code))]
pub(crate) trait ObserverSetup: Send + Debug + 'static {
    /// Starts what the observer needs; `None` when it is not configured.
    fn install(self: Box<Self>) -> Result<Option<Arc<dyn ReleaseObserver>>>;
    /// For the builder methods that fill it in.
    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any>;
}

/// Receives every released trace. Implementations queue the snapshot and
/// return at once (the caller holds a slot lock); they never block on I/O.
pub(crate) trait ReleaseObserver: Send + Sync + Debug {
    /// A trace was released. Called once per checkout, under its slot lock.
    fn released(&self, snapshot: TraceSnapshot);
    /// Snapshots this observer could not pass on (full queue, failed export).
    fn dropped(&self) -> u64;
    /// Waits (at most `timeout`) until every snapshot handed over before the
    /// call was passed on.
    #[cfg_attr(not(feature = "otel"), allow(dead_code))]
    fn flush(&self, timeout: Duration) -> Result<()>;
    /// Passes on what is queued, then stops. Idempotent.
    fn shutdown(&self);
}
