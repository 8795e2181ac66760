//! OpenTelemetry export of released traces (feature `otel`).
//!
//! `Engine::builder().otel_exporter(exporter)` takes any
//! `opentelemetry_sdk::trace::SpanExporter` — OTLP (`opentelemetry-otlp`) to
//! Jaeger, Tempo or a collector, the SDK's in-memory exporter in tests, your
//! own. Every trace is exported **once, when it is released** by any path
//! (explicit `release`, its last handle dropped, idle reaping, `shutdown`,
//! `remove`).
//!
//! # Mapping
//!
//! | tracepool | OpenTelemetry |
//! |---|---|
//! | trace id | trace id: the first 16 bytes of SHA-256(trace id) |
//! | node | span: name = label (`"node"` when empty), start = `start_time`, end = `end_time`, or the release time for a node still running |
//! | node id | span id: the 12-character id read as a base-36 `u64` (0 becomes 1) |
//! | first parent | parent span id; the root has none |
//! | further parents (a join) | links to those parents' spans (attribute `tracepool.link = "join"`) |
//! | `Completed` / `Failed`, `Cancelled` / other | status `Ok` / `Error(reason)` / `Unset` |
//! | log lines of the node | span events: name = message, attribute `level`, and the data's fields (data that is not an object: attribute `data`) |
//! | node metadata | attributes, after `tracepool.trace_id` and `tracepool.node_id`; the root span also gets the trace's metadata and `tracepool.created_by` / `team_id` / `tenant_id` |
//! | `TraceOptions::parent(traceparent)` (metadata `traceparent`) | a link from the root span to that remote span (`tracepool.link = "traceparent"`) |
//!
//! The reason of a failed node is the text it was failed with (its
//! `Node failed: ...` log line, while that line is in memory); a cancelled
//! node's status is `Error("cancelled")`. Attribute values: JSON booleans,
//! integers, floats and strings as such, arrays of one of those kinds as
//! arrays, anything else as its JSON text. Attributes per span, events per
//! span, attributes per event and links per span are capped by
//! [`SpanLimits`] (the SDK's defaults, 128 each, or
//! [`EngineBuilder::otel_span_limits`]); what is cut is counted in the
//! span's `dropped_*` counts. Log lines evicted from memory by
//! `max_log_bytes` before the release are not exported. A trace opened from
//! storage and released again is exported again, with the same ids.
//!
//! # Cost and threads
//!
//! When an exporter is configured, `release` copies the trace's nodes and
//! in-memory log lines (under the slot's lock, on the releasing thread: the
//! only cost the caller pays) and puts the copy on a bounded queue
//! ([`EngineBuilder::otel_queue`], default 2,048 traces). One thread,
//! `tracepool-otel`, started with the engine, turns queued traces into spans
//! and hands them to the exporter in batches of up to 512 spans. A trace
//! that finds the queue full, or whose spans were in a batch the exporter
//! refused, is counted in `EngineStats::otel_dropped`. The export thread
//! enters the tokio runtime the engine was built in, if any, so exporters
//! that need one (OTLP over gRPC: build the engine inside a multi-threaded
//! runtime) work; OTLP over HTTP with a blocking client needs none.
//! [`Engine::flush_otel_blocking`] waits for the queue; `shutdown` (and the
//! last engine handle's drop) exports what is queued, then shuts the
//! exporter down. Without an exporter nothing of this exists and `release`
//! is unchanged.
//!
//! # Examples
//! ```
//! # fn main() -> tracepool::Result<()> {
//! use opentelemetry_sdk::trace::InMemorySpanExporter;
//! use tracepool::{Engine, NodeOptions, TraceOptions};
//!
//! let exporter = InMemorySpanExporter::default(); // or an OTLP exporter
//! let engine = Engine::builder().memory().otel_exporter(exporter.clone()).build()?;
//! let trace = engine.create(TraceOptions::new())?;
//! let root = trace.add("question", NodeOptions::new().label("Answer"))?;
//! root.info("thinking");
//! trace.complete(None)?;
//! drop(root);
//! drop(trace); // released: exported
//! engine.flush_otel_blocking()?;
//! let spans = exporter.get_finished_spans().expect("spans");
//! assert_eq!(spans.len(), 1);
//! assert_eq!(spans[0].name, "Answer");
//! assert_eq!(spans[0].events[0].name, "thinking");
//! # Ok(()) }
//! ```

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use opentelemetry::trace::{
    Event as OtelEvent, Link, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId,
    TraceState,
};
use opentelemetry::{Array, InstrumentationScope, KeyValue, StringValue, Value as OtelValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter, SpanLimits, SpanLinks};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::engine::{Engine, EngineBuilder};
use crate::error::{Error, Result};
use crate::model::{Level, LogEntry, NodeData, NodeStatus, TraceInfo};
use crate::observer::{ObserverSetup, ReleaseObserver, TraceSnapshot};
use crate::options::TRACEPARENT_KEY;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Default bound of the export queue, in traces.
const DEFAULT_QUEUE: usize = 2048;
/// Most spans handed to the exporter in one call (the SDK's batch default).
const MAX_BATCH: usize = 512;

// ---- builder ------------------------------------------------------------------

/// An exporter behind a vtable (`SpanExporter::export` returns `impl Future`).
trait DynExporter: Send + Sync + fmt::Debug {
    fn export_blocking(&self, batch: Vec<SpanData>) -> OTelSdkResult;
    fn shutdown_exporter(&self) -> OTelSdkResult;
    fn set_resource_once(&mut self, resource: &Resource);
}

impl<E: SpanExporter + 'static> DynExporter for E {
    fn export_blocking(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        futures_executor::block_on(self.export(batch))
    }

    fn shutdown_exporter(&self) -> OTelSdkResult {
        self.shutdown()
    }

    fn set_resource_once(&mut self, resource: &Resource) {
        self.set_resource(resource);
    }
}

/// The OpenTelemetry settings of an [`EngineBuilder`].
#[derive(Debug)]
pub(crate) struct OtelSettings {
    exporter: Option<Box<dyn DynExporter>>,
    queue: usize,
    limits: SpanLimits,
    resource: Option<Resource>,
}

impl Default for OtelSettings {
    fn default() -> Self {
        OtelSettings {
            exporter: None,
            queue: DEFAULT_QUEUE,
            limits: SpanLimits::default(),
            resource: None,
        }
    }
}

impl ObserverSetup for OtelSettings {
    /// Starts the export thread if an exporter was given: its observer.
    fn install(self: Box<Self>) -> Result<Option<Arc<dyn ReleaseObserver>>> {
        let Some(mut exporter) = self.exporter else {
            return Ok(None);
        };
        if self.queue == 0 {
            return Err(Error::Config("otel_queue must be at least 1".into()));
        }
        let resource = self.resource.unwrap_or_else(|| Resource::builder().build());
        exporter.set_resource_once(&resource);
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            progress: Condvar::new(),
            dropped: AtomicU64::new(0),
            cap: self.queue,
        });
        let runtime = tokio::runtime::Handle::try_current().ok();
        let limits = self.limits;
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("tracepool-otel".into())
            .spawn(move || {
                let _entered = runtime.as_ref().map(|r| r.enter());
                export_loop(&s, exporter.as_ref(), &limits);
            })
            .map_err(|e| Error::Config(format!("cannot start the otel export thread: {e}")))?;
        Ok(Some(Arc::new(OtelObserver {
            shared,
            thread: Mutex::new(Some(thread)),
        })))
    }

    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any> {
        self
    }
}

impl EngineBuilder {
    /// Changes this builder's OpenTelemetry settings (made on first use).
    fn with_otel(mut self, f: impl FnOnce(&mut OtelSettings)) -> Self {
        let mut settings = match self.observer_setup.take().map(|s| s.into_any().downcast()) {
            Some(Ok(s)) => s,
            _ => Box::<OtelSettings>::default(),
        };
        f(&mut settings);
        self.observer_setup = Some(settings);
        self
    }
}

impl EngineBuilder {
    /// Exports every trace, once, when it is released, through `exporter`
    /// (feature `otel`): any `opentelemetry_sdk` span exporter, e.g.
    /// `opentelemetry_otlp::SpanExporter` or the SDK's
    /// `InMemorySpanExporter`. See the [`otel`](crate::otel) module for the
    /// mapping, the queue and the thread.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> tracepool::Result<()> {
    /// let exporter = opentelemetry_sdk::trace::InMemorySpanExporter::default();
    /// let engine = tracepool::Engine::builder().memory().otel_exporter(exporter).build()?;
    /// # drop(engine);
    /// # Ok(()) }
    /// ```
    pub fn otel_exporter<E: SpanExporter + 'static>(self, exporter: E) -> Self {
        self.with_otel(|o| o.exporter = Some(Box::new(exporter)))
    }

    /// Released traces waiting for the exporter (default 2,048). A release
    /// that finds the queue full drops its trace from the export, counted in
    /// `EngineStats::otel_dropped`; the release itself never waits.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> tracepool::Result<()> {
    /// let exporter = opentelemetry_sdk::trace::InMemorySpanExporter::default();
    /// let engine = tracepool::Engine::builder()
    ///     .memory()
    ///     .otel_exporter(exporter)
    ///     .otel_queue(256)
    ///     .build()?;
    /// assert_eq!(engine.stats().otel_dropped, 0);
    /// # Ok(()) }
    /// ```
    pub fn otel_queue(self, traces: usize) -> Self {
        self.with_otel(|o| o.queue = traces)
    }

    /// Caps on attributes, events and links per exported span (default: the
    /// SDK's `SpanLimits::default()`, 128 each).
    ///
    /// # Examples
    /// ```
    /// # fn main() -> tracepool::Result<()> {
    /// use opentelemetry_sdk::trace::SpanLimits;
    /// let limits = SpanLimits { max_events_per_span: 16, ..SpanLimits::default() };
    /// let engine = tracepool::Engine::builder()
    ///     .memory()
    ///     .otel_exporter(opentelemetry_sdk::trace::InMemorySpanExporter::default())
    ///     .otel_span_limits(limits)
    ///     .build()?;
    /// # drop(engine);
    /// # Ok(()) }
    /// ```
    pub fn otel_span_limits(self, limits: SpanLimits) -> Self {
        self.with_otel(|o| o.limits = limits)
    }

    /// The resource handed to the exporter (`SpanExporter::set_resource`)
    /// at build: the service name and the like. Default:
    /// `Resource::builder().build()` (`OTEL_SERVICE_NAME`,
    /// `OTEL_RESOURCE_ATTRIBUTES`, the SDK's attributes).
    ///
    /// # Examples
    /// ```
    /// # fn main() -> tracepool::Result<()> {
    /// use opentelemetry_sdk::Resource;
    /// let engine = tracepool::Engine::builder()
    ///     .memory()
    ///     .otel_exporter(opentelemetry_sdk::trace::InMemorySpanExporter::default())
    ///     .otel_resource(Resource::builder().with_service_name("search-api").build())
    ///     .build()?;
    /// # drop(engine);
    /// # Ok(()) }
    /// ```
    pub fn otel_resource(self, resource: Resource) -> Self {
        self.with_otel(|o| o.resource = Some(resource))
    }
}

impl Engine {
    /// Waits (blocking, at most `drain_timeout`) until every trace released
    /// before the call has been handed to the OpenTelemetry exporter (or
    /// counted in `EngineStats::otel_dropped`). Returns at once without an
    /// exporter. In async code, call it from `spawn_blocking`.
    ///
    /// # Errors
    /// `Storage` naming the OTel export when `drain_timeout` passed first;
    /// `ShutDown` (shutdown has exported everything).
    ///
    /// # Examples
    /// ```
    /// # fn main() -> tracepool::Result<()> {
    /// let exporter = opentelemetry_sdk::trace::InMemorySpanExporter::default();
    /// let engine = tracepool::Engine::builder().memory().otel_exporter(exporter.clone()).build()?;
    /// let trace = engine.create(tracepool::TraceOptions::new())?;
    /// trace.add("x", tracepool::NodeOptions::new().label("Only"))?;
    /// trace.release()?;
    /// engine.flush_otel_blocking()?;
    /// assert_eq!(exporter.get_finished_spans().unwrap().len(), 1);
    /// # Ok(()) }
    /// ```
    pub fn flush_otel_blocking(&self) -> Result<()> {
        let core = self.core();
        if core.shut.load(Ordering::Relaxed) {
            return Err(Error::ShutDown);
        }
        match &core.config.observer {
            Some(o) => o.flush(core.config.drain_timeout),
            None => Ok(()),
        }
    }
}

// ---- the queue and the export thread ------------------------------------------------

#[derive(Debug, Default)]
struct Queue {
    items: VecDeque<TraceSnapshot>,
    /// Snapshots ever queued.
    accepted: u64,
    /// Snapshots ever handled by the export thread (exported or dropped).
    done: u64,
    /// No more snapshots: export what is queued and stop.
    closing: bool,
    /// The export thread has exited.
    exited: bool,
}

#[derive(Debug)]
struct Shared {
    queue: Mutex<Queue>,
    /// Wakes the export thread.
    wake: Condvar,
    /// Wakes `flush` callers.
    progress: Condvar,
    dropped: AtomicU64,
    cap: usize,
}

/// The engine's release observer: queues snapshots for the export thread.
#[derive(Debug)]
struct OtelObserver {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl ReleaseObserver for OtelObserver {
    fn released(&self, snapshot: TraceSnapshot) {
        let s = &self.shared;
        let mut q = lock(&s.queue);
        if q.closing || q.items.len() >= s.cap {
            drop(q);
            s.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        q.items.push_back(snapshot);
        q.accepted += 1;
        drop(q);
        s.wake.notify_one();
    }

    fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    fn flush(&self, timeout: Duration) -> Result<()> {
        let s = &self.shared;
        let deadline = Instant::now() + timeout;
        let mut q = lock(&s.queue);
        let target = q.accepted;
        while q.done < target && !q.exited {
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Storage {
                    location: "otel export".into(),
                    message: format!(
                        "released traces still waiting for the exporter after {timeout:?}"
                    ),
                    source: None,
                });
            }
            q = s
                .progress
                .wait_timeout(q, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        Ok(())
    }

    fn shutdown(&self) {
        lock(&self.shared.queue).closing = true;
        self.shared.wake.notify_all();
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
    }
}

impl Drop for OtelObserver {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Marks the export thread gone (also when an exporter panicked through it),
/// so `flush` does not wait for it.
struct ExitMark<'a>(&'a Shared);

impl Drop for ExitMark<'_> {
    fn drop(&mut self) {
        lock(&self.0.queue).exited = true;
        self.0.progress.notify_all();
    }
}

fn export_loop(s: &Shared, exporter: &dyn DynExporter, limits: &SpanLimits) {
    let _exit = ExitMark(s);
    let scope = InstrumentationScope::builder("tracepool")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build();
    loop {
        let batch: Vec<TraceSnapshot> = {
            let mut q = lock(&s.queue);
            while q.items.is_empty() && !q.closing {
                q = s.wake.wait(q).unwrap_or_else(|e| e.into_inner());
            }
            if q.items.is_empty() {
                break;
            }
            q.items.drain(..).collect()
        };
        let n = batch.len() as u64;
        let failed = export_batch(exporter, batch, limits, &scope);
        if failed > 0 {
            s.dropped.fetch_add(failed, Ordering::Relaxed);
        }
        lock(&s.queue).done += n;
        s.progress.notify_all();
    }
    let _ = exporter.shutdown_exporter();
}

/// Hands the spans of `batch` to the exporter, at most [`MAX_BATCH`] per
/// call. Returns how many traces had spans in a refused (or panicking) call.
fn export_batch(
    exporter: &dyn DynExporter,
    batch: Vec<TraceSnapshot>,
    limits: &SpanLimits,
    scope: &InstrumentationScope,
) -> u64 {
    let mut failed = vec![false; batch.len()];
    let mut spans: Vec<SpanData> = Vec::new();
    // The traces with spans in `spans`, in order, each once.
    let mut owners: Vec<usize> = Vec::new();
    let mut send = |spans: &mut Vec<SpanData>, owners: &mut Vec<usize>| {
        if spans.is_empty() {
            return;
        }
        let chunk = std::mem::take(spans);
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            exporter.export_blocking(chunk)
        }))
        .is_ok_and(|r| r.is_ok());
        if !ok {
            for &o in owners.iter() {
                failed[o] = true;
            }
        }
        owners.clear();
    };
    for (i, snap) in batch.iter().enumerate() {
        for span in trace_spans(snap, limits, scope) {
            spans.push(span);
            if owners.last() != Some(&i) {
                owners.push(i);
            }
            if spans.len() >= MAX_BATCH {
                send(&mut spans, &mut owners);
            }
        }
    }
    send(&mut spans, &mut owners);
    failed.iter().filter(|&&f| f).count() as u64
}

// ---- mapping ---------------------------------------------------------------------

/// The OpenTelemetry trace id of a tracepool trace: the first 16 bytes of
/// SHA-256 of its id.
///
/// # Examples
/// ```
/// let t = tracepool::otel::trace_id("20251118123456789012");
/// assert_eq!(t, tracepool::otel::trace_id("20251118123456789012"));
/// assert_ne!(t, opentelemetry::trace::TraceId::INVALID);
/// ```
pub fn trace_id(trace_id: &str) -> TraceId {
    let digest = Sha256::digest(trace_id.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    TraceId::from_bytes(b)
}

/// The OpenTelemetry span id of a node: its 12-character id read as a
/// base-36 number (0 becomes 1, an id that is not base-36 is hashed).
///
/// # Examples
/// ```
/// use opentelemetry::trace::SpanId;
/// assert_eq!(tracepool::otel::span_id("00000000000z"), SpanId::from(35u64));
/// assert_eq!(tracepool::otel::span_id("000000000000"), SpanId::from(1u64));
/// ```
pub fn span_id(node_id: &str) -> SpanId {
    let v = u64::from_str_radix(node_id, 36).unwrap_or_else(|_| {
        let digest = Sha256::digest(node_id.as_bytes());
        let mut b = [0u8; 8];
        b.copy_from_slice(&digest[..8]);
        u64::from_be_bytes(b)
    });
    SpanId::from(v.max(1))
}

/// Parses a W3C `traceparent` value into a remote span context (`None` when
/// it is malformed, or names the invalid all-zero trace or span).
///
/// # Examples
/// ```
/// let cx = tracepool::otel::parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
///     .expect("valid");
/// assert!(cx.is_remote() && cx.is_sampled());
/// assert!(tracepool::otel::parse_traceparent("garbage").is_none());
/// ```
pub fn parse_traceparent(value: &str) -> Option<SpanContext> {
    let mut parts = value.trim().split('-');
    let (version, tid, sid, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex(version, 2) || version.eq_ignore_ascii_case("ff") {
        return None;
    }
    if version == "00" && parts.next().is_some() {
        return None;
    }
    if !hex(tid, 32) || !hex(sid, 16) || !hex(flags, 2) {
        return None;
    }
    let t = TraceId::from_hex(tid).ok()?;
    let s = SpanId::from_hex(sid).ok()?;
    if t == TraceId::INVALID || s == SpanId::INVALID {
        return None;
    }
    let f = u8::from_str_radix(flags, 16).ok()?;
    Some(SpanContext::new(
        t,
        s,
        TraceFlags::new(f),
        true,
        TraceState::NONE,
    ))
}

fn time_of(ms: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// A JSON value as an attribute value.
fn attr_value(v: &Value) -> OtelValue {
    match v {
        Value::Bool(b) => OtelValue::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => OtelValue::I64(i),
            None => OtelValue::F64(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => OtelValue::String(StringValue::from(s.clone())),
        Value::Array(a) if !a.is_empty() => array_value(a).unwrap_or_else(|| json_text(v)),
        _ => json_text(v),
    }
}

fn json_text(v: &Value) -> OtelValue {
    OtelValue::String(StringValue::from(v.to_string()))
}

/// A homogeneous JSON array as an attribute array.
fn array_value(a: &[Value]) -> Option<OtelValue> {
    let arr = if a.iter().all(Value::is_boolean) {
        Array::Bool(a.iter().filter_map(Value::as_bool).collect())
    } else if a.iter().all(Value::is_i64) {
        Array::I64(a.iter().filter_map(Value::as_i64).collect())
    } else if a.iter().all(Value::is_number) {
        Array::F64(a.iter().filter_map(Value::as_f64).collect())
    } else if a.iter().all(Value::is_string) {
        Array::String(
            a.iter()
                .filter_map(Value::as_str)
                .map(|s| StringValue::from(s.to_owned()))
                .collect(),
        )
    } else {
        return None;
    };
    Some(OtelValue::Array(arr))
}

/// Collects attributes up to a cap, counting the rest.
struct Capped {
    items: Vec<KeyValue>,
    cap: usize,
    dropped: u32,
}

impl Capped {
    fn new(cap: u32) -> Capped {
        Capped {
            items: Vec::new(),
            cap: cap as usize,
            dropped: 0,
        }
    }

    fn push(&mut self, key: impl Into<opentelemetry::Key>, value: impl Into<OtelValue>) {
        if self.items.len() < self.cap {
            self.items.push(KeyValue::new(key, value));
        } else {
            self.dropped = self.dropped.saturating_add(1);
        }
    }

    fn extend_json(&mut self, map: &Map<String, Value>, skip: Option<&str>) {
        for (k, v) in map {
            if Some(k.as_str()) != skip {
                self.push(k.clone(), attr_value(v));
            }
        }
    }
}

fn level_str(l: Level) -> &'static str {
    l.as_str()
}

/// The text a node failed with: its `Node failed: ...` log line.
fn failure_text(logs: &[&LogEntry]) -> Option<String> {
    logs.iter()
        .rev()
        .filter(|l| l.level == Level::Error)
        .find_map(|l| l.message.strip_prefix("Node failed: "))
        .map(str::to_owned)
}

fn status_of(node: &NodeData, logs: &[&LogEntry]) -> Status {
    match node.status {
        NodeStatus::Completed => Status::Ok,
        NodeStatus::Failed => {
            Status::error(failure_text(logs).unwrap_or_else(|| String::from("failed")))
        }
        NodeStatus::Cancelled => Status::error("cancelled"),
        NodeStatus::Pending | NodeStatus::Running | NodeStatus::Skipped => Status::Unset,
    }
}

fn event_of(log: &LogEntry, limits: &SpanLimits) -> OtelEvent {
    let mut attrs = Capped::new(limits.max_attributes_per_event);
    attrs.push("level", level_str(log.level));
    match &log.data {
        Value::Null => {}
        Value::Object(m) => attrs.extend_json(m, None),
        other => attrs.push("data", attr_value(other)),
    }
    OtelEvent::new(
        log.message.clone(),
        time_of(log.timestamp),
        attrs.items,
        attrs.dropped,
    )
}

fn root_attributes(attrs: &mut Capped, info: &TraceInfo) {
    for (key, v) in [
        ("tracepool.created_by", &info.created_by),
        ("tracepool.team_id", &info.team_id),
        ("tracepool.tenant_id", &info.tenant_id),
    ] {
        if let Some(v) = v {
            attrs.push(key, v.clone());
        }
    }
    attrs.extend_json(&info.metadata, Some(TRACEPARENT_KEY));
}

/// The spans of one released trace.
fn trace_spans(
    snap: &TraceSnapshot,
    limits: &SpanLimits,
    scope: &InstrumentationScope,
) -> Vec<SpanData> {
    let tid = trace_id(&snap.info.id);
    let remote = snap
        .info
        .metadata
        .get(TRACEPARENT_KEY)
        .and_then(Value::as_str)
        .and_then(parse_traceparent);
    let mut logs: HashMap<&str, Vec<&LogEntry>> = HashMap::new();
    for l in &snap.logs {
        logs.entry(l.node_id.as_str()).or_default().push(l);
    }
    let local = |node_id: &str| {
        SpanContext::new(
            tid,
            span_id(node_id),
            TraceFlags::SAMPLED,
            false,
            TraceState::NONE,
        )
    };
    snap.nodes
        .iter()
        .map(|node| {
            let node_logs = logs.get(node.id.as_str()).map_or(&[][..], Vec::as_slice);
            let is_root = node.parent_ids.is_empty();

            let mut links = SpanLinks::default();
            let link_cap = limits.max_links_per_span as usize;
            let mut push_link = |cx: SpanContext, kind: &'static str| {
                if links.links.len() < link_cap {
                    let mut a = Capped::new(limits.max_attributes_per_link);
                    a.push("tracepool.link", kind);
                    links.links.push(Link::new(cx, a.items, a.dropped));
                } else {
                    links.dropped_count = links.dropped_count.saturating_add(1);
                }
            };
            if is_root && let Some(cx) = &remote {
                push_link(cx.clone(), "traceparent");
            }
            for p in node.parent_ids.iter().skip(1) {
                push_link(local(p), "join");
            }

            let mut attrs = Capped::new(limits.max_attributes_per_span);
            attrs.push("tracepool.trace_id", snap.info.id.clone());
            attrs.push("tracepool.node_id", node.id.clone());
            if is_root {
                root_attributes(&mut attrs, &snap.info);
            }
            attrs.extend_json(&node.metadata, None);

            let mut events = SpanEvents::default();
            let event_cap = limits.max_events_per_span as usize;
            for l in node_logs {
                if events.events.len() < event_cap {
                    events.events.push(event_of(l, limits));
                } else {
                    events.dropped_count = events.dropped_count.saturating_add(1);
                }
            }

            let start = if node.start_time > 0 {
                node.start_time
            } else {
                node.created_at
            };
            let end = if node.end_time > 0 {
                node.end_time
            } else {
                snap.released_at
            };
            let name: Cow<'static, str> = if node.label.is_empty() {
                Cow::Borrowed("node")
            } else {
                Cow::Owned(node.label.clone())
            };
            SpanData {
                span_context: local(&node.id),
                parent_span_id: node
                    .parent_ids
                    .first()
                    .map_or(SpanId::INVALID, |p| span_id(p)),
                parent_span_is_remote: false,
                span_kind: SpanKind::Internal,
                name,
                start_time: time_of(start),
                end_time: time_of(end.max(start)),
                attributes: attrs.items,
                dropped_attributes_count: attrs.dropped,
                events,
                links,
                status: status_of(node, node_logs),
                instrumentation_scope: scope.clone(),
            }
        })
        .collect()
}
