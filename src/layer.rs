//! A [`tracing_subscriber::Layer`] that records `tracing` spans as traces
//! (feature `tracing`).
//!
//! Code instrumented with `tracing` (`#[instrument]`, `info_span!`,
//! `info!`, ...) gets tracepool traces — live event streams, the SSE viewer,
//! storage — with no other change: add [`TraceLayer`] to the subscriber and
//! mark the spans that start a trace.
//!
//! # Mapping
//!
//! - **Root spans.** A span with the field `tracepool.trace = true`, or whose
//!   name was given to [`TraceLayerBuilder::root_spans`], starts a trace:
//!   it checks a trace out of the engine's pool (`Engine::create`, which
//!   waits for a free slot under `Exhausted::Wait`) and is the trace's root
//!   node. `tracepool.id = "..."` names the trace (a caller-given id, see
//!   `TraceOptions::id`); `tracepool.parent = "<traceparent>"` (or a field
//!   `traceparent`) carries an incoming W3C context (`TraceOptions::parent`).
//!   A root span inside another recorded span is an ordinary node.
//! - **Spans → nodes, at creation.** A span whose parent span is recorded
//!   becomes a node when it is *created* (not when entered): label = the
//!   span's name, input = its fields as a JSON object (`null` when it has
//!   none; fields named `tracepool.*` are left out), added as a child of
//!   the parent span's node (`Node::add`; the trace's cursor does not move).
//!   Creating rather than entering keeps the tree's order and start times
//!   the order in which the code made its spans, also for spans that are
//!   entered many times (across `.await` points) or never.
//! - **Events → log lines** on the node of the event's innermost recorded
//!   span: message = the `message` field, data = the other fields as a JSON
//!   object (`null` when there are none). Levels: `TRACE` and `DEBUG` →
//!   `Debug`, `INFO` → `Info`, `WARN` → `Warn`, `ERROR` → `Error`.
//! - **Recorded fields** (`span.record(..)` after creation) become node
//!   metadata (`Node::set_metadata`); `tracepool.output` sets the node's
//!   output.
//! - **Close → finish.** When a span closes (its last handle is dropped),
//!   its node completes, or fails if a field `error` has a value (given at
//!   creation or recorded later; the value, displayed, is the reason). A
//!   root span's close completes its node, then marks the trace complete
//!   (`Trace::mark_complete`) and releases it (no I/O; the slot drains on a
//!   worker).
//! - **Spans outside any root** are ignored: no allocation, no lock and no
//!   counter in tracepool (the layer looks at the parent span's extensions
//!   and at the callsite's field names, nothing more). So are events outside
//!   recorded spans.
//!
//! A span that cannot be recorded (the pool is exhausted, the id is taken,
//! `max_nodes` is reached) is skipped with its descendants; the
//! application's spans are never affected.
//!
//! Install the subscriber as the global default (`set_global_default`,
//! `.init()`) when spans cross threads or tasks: `tracing_subscriber`'s
//! registry closes a parent span through the default subscriber of the
//! thread where its last child closes, so with a thread-local default
//! (`with_default`, `set_default`) on some threads only, a root span whose
//! last child closes elsewhere never closes, and its trace is not released.
//!
//! With the `tracing` feature, [`current`](crate::current) also returns the
//! node of the current span, so [`Step`](crate::Step) guards opened inside
//! instrumented code nest under the span's node.
//!
//! # Examples
//! ```
//! # fn main() -> tracepool::Result<()> {
//! use tracepool::layer::TraceLayer;
//! use tracing_subscriber::layer::SubscriberExt;
//!
//! let engine = tracepool::Engine::builder().workers(1).capacity(16).memory().build()?;
//! let subscriber = tracing_subscriber::registry().with(TraceLayer::new(engine.clone()));
//! tracing::subscriber::with_default(subscriber, || {
//!     let request = tracing::info_span!("request", tracepool.trace = true, tracepool.id = "req-1", path = "/search");
//!     let _in = request.enter();
//!     let trace = engine.load("req-1").expect("loaded while the root span is open");
//!     {
//!         let _db = tracing::info_span!("query", table = "docs").entered();
//!         tracing::info!(rows = 3, "fetched");
//!     }
//!     let nodes = trace.all_nodes().unwrap();
//!     assert_eq!(nodes.len(), 2);
//!     assert_eq!(nodes[1].label, "query");
//!     assert_eq!(nodes[1].input, Some(serde_json::json!({"table": "docs"})));
//!     assert_eq!(trace.logs(None).unwrap()[0].message, "fetched");
//! });
//! // The root span closed: the trace was completed and released.
//! assert!(!engine.is_loaded("req-1"));
//! # Ok(()) }
//! ```

use std::borrow::Cow;
use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level as TLevel, Subscriber};
use tracing_subscriber::Registry;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use crate::engine::Engine;
use crate::handle::{Node, Trace};
use crate::model::Level;
use crate::options::{NodeOptions, TraceOptions};

/// The field that makes a span a trace root (`tracepool.trace = true`).
pub const ROOT_FIELD: &str = "tracepool.trace";
/// The field that names a root span's trace (`tracepool.id = "..."`).
pub const ID_FIELD: &str = "tracepool.id";
/// The field that carries an incoming W3C `traceparent` on a root span.
pub const PARENT_FIELD: &str = "tracepool.parent";
/// A recorded value of this field becomes the node's output.
pub const OUTPUT_FIELD: &str = "tracepool.output";
/// A field with a value fails the span's node when the span closes.
pub const ERROR_FIELD: &str = "error";

/// What the layer keeps in a recorded span's extensions.
#[derive(Debug)]
struct SpanNode {
    node: Node,
    /// Root spans only: the trace they release on close.
    trace: Option<Trace>,
    /// The `error` field's value, if any: the node fails on close.
    error: Option<String>,
}

/// A `tracing_subscriber` layer that records spans under trace roots as
/// tracepool traces; see the [module docs](self) for the mapping.
///
/// # Examples
/// ```
/// # fn main() -> tracepool::Result<()> {
/// use tracing_subscriber::layer::SubscriberExt;
/// let engine = tracepool::Engine::builder().workers(1).memory().build()?;
/// let layer = tracepool::layer::TraceLayer::new(engine.clone());
/// let _default = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct TraceLayer {
    engine: Engine,
    roots: Box<[Cow<'static, str>]>,
}

/// Builds a [`TraceLayer`]; obtain one with [`TraceLayer::builder`].
///
/// # Examples
/// ```
/// # fn main() -> tracepool::Result<()> {
/// let engine = tracepool::Engine::builder().workers(1).memory().build()?;
/// let layer = tracepool::layer::TraceLayer::builder(engine)
///     .root_spans(["http_request", "job"])
///     .build();
/// # drop(layer);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct TraceLayerBuilder {
    engine: Engine,
    roots: Vec<Cow<'static, str>>,
}

impl TraceLayerBuilder {
    /// Spans with one of these names are trace roots too (as if they had
    /// `tracepool.trace = true`): useful for `#[instrument]`ed entry points
    /// and for spans made by libraries (`tower_http`'s `request`, ...).
    ///
    /// # Examples
    /// ```
    /// # fn main() -> tracepool::Result<()> {
    /// use tracing_subscriber::layer::SubscriberExt;
    /// let engine = tracepool::Engine::builder().workers(1).memory().build()?;
    /// let layer = tracepool::layer::TraceLayer::builder(engine.clone()).root_spans(["handle"]).build();
    /// tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
    ///     let _span = tracing::info_span!("handle", user = 7).entered();
    ///     assert_eq!(engine.list().len(), 1);
    /// });
    /// assert!(engine.list().is_empty());
    /// # Ok(()) }
    /// ```
    pub fn root_spans<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<Cow<'static, str>>,
    {
        self.roots.extend(names.into_iter().map(Into::into));
        self
    }

    /// The layer.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> tracepool::Result<()> {
    /// let engine = tracepool::Engine::builder().workers(1).memory().build()?;
    /// let layer = tracepool::layer::TraceLayer::builder(engine).build();
    /// # drop(layer);
    /// # Ok(()) }
    /// ```
    pub fn build(self) -> TraceLayer {
        TraceLayer {
            engine: self.engine,
            roots: self.roots.into_boxed_slice(),
        }
    }
}

impl TraceLayer {
    /// A layer recording into `engine`; roots are the spans with
    /// `tracepool.trace = true`.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> tracepool::Result<()> {
    /// use tracing_subscriber::layer::SubscriberExt;
    /// let engine = tracepool::Engine::builder().workers(1).memory().build()?;
    /// let subscriber = tracing_subscriber::registry().with(tracepool::layer::TraceLayer::new(engine));
    /// # drop(subscriber);
    /// # Ok(()) }
    /// ```
    pub fn new(engine: Engine) -> TraceLayer {
        TraceLayer::builder(engine).build()
    }

    /// A builder, to name root spans.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> tracepool::Result<()> {
    /// let engine = tracepool::Engine::builder().workers(1).memory().build()?;
    /// let layer = tracepool::layer::TraceLayer::builder(engine).root_spans(["request"]).build();
    /// # drop(layer);
    /// # Ok(()) }
    /// ```
    pub fn builder(engine: Engine) -> TraceLayerBuilder {
        TraceLayerBuilder {
            engine,
            roots: Vec::new(),
        }
    }

    /// Whether a new span with no recorded parent starts a trace. Reads the
    /// root field's value only when the callsite declares it; allocates nothing.
    fn is_root(&self, attrs: &Attributes<'_>) -> bool {
        let meta = attrs.metadata();
        if self.roots.iter().any(|r| r == meta.name()) {
            return true;
        }
        if meta.fields().field(ROOT_FIELD).is_none() {
            return false;
        }
        let mut v = RootFlag(false);
        attrs.record(&mut v);
        v.0
    }
}

/// Reads `tracepool.trace`.
struct RootFlag(bool);

impl Visit for RootFlag {
    fn record_bool(&mut self, field: &Field, value: bool) {
        if field.name() == ROOT_FIELD {
            self.0 = value;
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == ROOT_FIELD {
            self.0 = value == "true";
        }
    }

    fn record_debug(&mut self, _field: &Field, _value: &dyn fmt::Debug) {}
}

/// Collects a span's or event's fields.
#[derive(Default)]
struct Fields {
    /// The other fields (input, log data, recorded metadata).
    map: Map<String, Value>,
    /// `message` (events).
    message: Option<String>,
    /// `error`.
    error: Option<String>,
    /// `tracepool.id`.
    id: Option<String>,
    /// `tracepool.parent` / `traceparent`.
    parent: Option<String>,
    /// `tracepool.output`.
    output: Option<Value>,
}

impl Fields {
    fn put(&mut self, field: &Field, value: Value) {
        let name = field.name();
        match name {
            "message" => self.message = Some(text(value)),
            ID_FIELD => self.id = Some(text(value)),
            PARENT_FIELD => self.parent = Some(text(value)),
            OUTPUT_FIELD => self.output = Some(value),
            _ if name.starts_with("tracepool.") => {}
            _ => {
                if name == ERROR_FIELD {
                    self.error = Some(text(value.clone()));
                } else if name == "traceparent" {
                    self.parent.get_or_insert_with(|| text(value.clone()));
                }
                self.map.insert(name.to_owned(), value);
            }
        }
    }

    /// The collected fields as one JSON value (`null` when there are none).
    fn into_value(map: Map<String, Value>) -> Value {
        if map.is_empty() {
            Value::Null
        } else {
            Value::Object(map)
        }
    }
}

/// A JSON value as text (strings without quotes).
fn text(v: Value) -> String {
    match v {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

impl Visit for Fields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, serde_json::json!(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        let v = i64::try_from(value).map_or_else(|_| Value::from(value.to_string()), Value::from);
        self.put(field, v);
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        let v = u64::try_from(value).map_or_else(|_| Value::from(value.to_string()), Value::from);
        self.put(field, v);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::Bool(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::from(value));
    }

    fn record_bytes(&mut self, field: &Field, value: &[u8]) {
        use std::fmt::Write;
        let mut hex = String::with_capacity(value.len() * 2);
        for b in value {
            let _ = write!(hex, "{b:02x}");
        }
        self.put(field, Value::String(hex));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::String(value.to_string()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::String(format!("{value:?}")));
    }
}

fn level_of(l: &TLevel) -> Level {
    match *l {
        TLevel::ERROR => Level::Error,
        TLevel::WARN => Level::Warn,
        TLevel::INFO => Level::Info,
        _ => Level::Debug,
    }
}

impl<S> Layer<S> for TraceLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let name = attrs.metadata().name();
        // A child of a recorded span: a node under the parent's node (added
        // while the parent's extensions are read-locked; the new span's own
        // extensions are another lock).
        let added = span.parent().and_then(|parent| {
            let ext = parent.extensions();
            let p = ext.get::<SpanNode>()?;
            let mut f = Fields::default();
            attrs.record(&mut f);
            let opts = NodeOptions::new().label(name);
            Some(
                p.node
                    .add(Fields::into_value(f.map), opts)
                    .map(|node| (node, f.error)),
            )
        });
        match added {
            Some(Ok((node, error))) => span.extensions_mut().insert(SpanNode {
                node,
                trace: None,
                error,
            }),
            // `max_nodes`, a finished or released trace: not recorded.
            Some(Err(_)) => {}
            None => self.new_root(attrs, &span, name),
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let mut ext = span.extensions_mut();
        let Some(data) = ext.get_mut::<SpanNode>() else {
            return;
        };
        let mut f = Fields::default();
        values.record(&mut f);
        if f.error.is_some() {
            data.error = f.error;
        }
        if let Some(out) = f.output {
            let _ = data.node.set_output(out);
        }
        for (k, v) in f.map {
            if k != ERROR_FIELD {
                let _ = data.node.set_metadata(&k, v);
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let Some(scope) = ctx.event_scope(event) else {
            return;
        };
        for span in scope {
            let ext = span.extensions();
            if let Some(data) = ext.get::<SpanNode>() {
                let mut f = Fields::default();
                event.record(&mut f);
                // `error` stays in the data: it fails spans, not events.
                let msg = f.message.unwrap_or_default();
                data.node.log(
                    level_of(event.metadata().level()),
                    msg,
                    Fields::into_value(f.map),
                );
                return;
            }
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else {
            return;
        };
        let Some(data) = span.extensions_mut().remove::<SpanNode>() else {
            return;
        };
        // Errors are ignored: a node finished through another handle, or a
        // trace released before this span closed, leaves nothing to do.
        let _ = match &data.error {
            Some(e) => data.node.fail(e),
            None => data.node.complete(None),
        };
        if let Some(trace) = &data.trace {
            let _ = trace.mark_complete();
            let _ = trace.release();
        }
    }
}

impl TraceLayer {
    /// A span without a recorded parent: a new trace if it is a root.
    fn new_root<S>(
        &self,
        attrs: &Attributes<'_>,
        span: &tracing_subscriber::registry::SpanRef<'_, S>,
        name: &'static str,
    ) where
        S: for<'a> LookupSpan<'a>,
    {
        if !self.is_root(attrs) {
            return;
        }
        let mut f = Fields::default();
        attrs.record(&mut f);
        let mut opts = TraceOptions::new();
        if let Some(id) = f.id {
            opts = opts.id(id);
        }
        if let Some(p) = f.parent {
            opts = opts.parent(p);
        }
        let Ok(trace) = self.engine.create(opts) else {
            return;
        };
        let Ok(node) = trace.add(Fields::into_value(f.map), NodeOptions::new().label(name)) else {
            return; // `trace` drops: released
        };
        span.extensions_mut().insert(SpanNode {
            node,
            trace: Some(trace),
            error: f.error,
        });
    }
}

/// The node of the current `tracing` span (or its nearest recorded
/// ancestor), when the default subscriber is built on a [`Registry`] with a
/// [`TraceLayer`]. Used by [`current`](crate::current).
pub(crate) fn current_span_node() -> Option<Node> {
    tracing::dispatcher::get_default(|d| {
        let registry = d.downcast_ref::<Registry>()?;
        let current = d.current_span();
        let span = registry.span(current.id()?)?;
        span.scope().find_map(|s| {
            s.extensions()
                .get::<SpanNode>()
                .map(|data| data.node.clone())
        })
    })
}
