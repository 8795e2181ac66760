//! # tracepool
//!
//! Execution traces for programs that cannot afford to slow down: AI agents,
//! workflow engines, request pipelines. A trace is a tree (a DAG after joins)
//! of steps — sequential nodes, parallel branches, joins — with inputs,
//! outputs, logs, status and timing, plus key-value *spaces*. Every change is
//! an [`Event`] with a per-trace, gap-free `seq`; events stream live to any
//! number of [`Subscription`]s with history replay and are handed to a
//! storage [`Driver`].
//!
//! Traces are checked out from a pool of preallocated slots; a few
//! long-lived workers serve all traces; release resets the slot in place and
//! returns it to the pool. Nothing is spawned per trace.
//!
//! ```
//! # fn main() -> tracepool::Result<()> {
//! use serde_json::json;
//! use tracepool::{Engine, NodeOptions, ParallelInput, TraceOptions};
//!
//! let engine = Engine::builder().capacity(64).workers(1).memory().build()?;
//! let trace = engine.create(TraceOptions::new().created_by("me"))?;
//! trace.add("user input", NodeOptions::new().label("Input"))?;
//! trace.info("Starting");
//! let branches = trace.parallel(vec![
//!     ParallelInput::new("task A", NodeOptions::new().label("Worker A")),
//!     ParallelInput::new("task B", NodeOptions::new().label("Worker B")),
//! ])?;
//! std::thread::scope(|s| {
//!     for b in &branches {
//!         s.spawn(move || b.complete(Some(json!({"done": true}))));
//!     }
//! });
//! trace.add("merge", NodeOptions::new().label("Merge"))?; // joins both branches
//! trace.complete(None)?;
//! trace.mark_complete()?;
//! trace.release()?;
//! # Ok(()) }
//! ```
//!
//! # Features
//!
//! - `http` (default): `tracepool::http`, the SSE endpoint and web viewer.
//! - `tracing`: `tracepool::layer::TraceLayer`, a `tracing_subscriber`
//!   layer that records `tracing` spans under trace roots as traces.
//! - `otel`: `EngineBuilder::otel_exporter` exports every released trace
//!   through an OpenTelemetry span exporter (`tracepool::otel`).
//!
//! [`Step`] guards ([`Trace::step`], [`current`], [`InStep`]) need no feature.
//!
//! See the README for the architecture and how tracepool differs from the
//! reference implementation it re-implements.

mod clock;
pub mod driver;
mod engine;
mod error;
mod event;
mod handle;
#[cfg(feature = "http")]
pub mod http;
mod id;
#[cfg(feature = "tracing")]
pub mod layer;
mod loom;
mod model;
mod observer;
mod options;
#[cfg(feature = "otel")]
pub mod otel;
mod pool;
mod ring;
mod spin_lock;
mod step;
mod subscribe;
mod trace;

pub use driver::{
    Doc, DocKind, Driver, Durability, EventRecord, FeedItem, FollowFeed, LocalDriver,
    LogLineRecord, MemoryDriver, StoreDriver, StoreOptions, StoredTrace, WriteBatch,
};
#[cfg(feature = "redis")]
pub use driver::{RedisDriver, RedisOptions};
pub use engine::{DEFAULT_STORE, Engine, EngineBuilder};
pub use error::{Error, Result};
pub use event::{Cursor, Delivery, Event, EventKind};
pub use handle::{Node, Trace};
pub use id::{gen_trace_id, validate_trace_id};
pub use model::{
    EngineStats, Level, LogEntry, NodeData, NodeStatus, SpaceData, SpaceInfo, TraceInfo,
    TraceStatus,
};
pub use options::{NodeOptions, ParallelInput, SpaceOptions, TRACEPARENT_KEY, TraceOptions};
pub use pool::Exhausted;
pub use step::{DetachedStep, InStep, InStepFuture, Step, current};
pub use subscribe::Subscription;

/// The README's examples, compiled as doc-tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
