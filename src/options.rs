//! Builder-style option structs for traces, nodes, spaces and parallel branches.

use std::borrow::Cow;

use serde_json::{Map, Value};

/// Options for [`Engine::create`](crate::Engine::create).
///
/// # Examples
/// ```
/// use tracepool::TraceOptions;
/// let opts = TraceOptions::new().created_by("me").metadata("task", "demo");
/// assert_eq!(opts.created_by.as_deref(), Some("me"));
/// ```
#[derive(Debug, Clone, Default)]
pub struct TraceOptions {
    /// Custom id (validated); generated when `None`.
    pub id: Option<String>,
    /// Creator.
    pub created_by: Option<String>,
    /// Team.
    pub team_id: Option<String>,
    /// Tenant.
    pub tenant_id: Option<String>,
    /// Caller metadata.
    pub metadata: Map<String, Value>,
    /// Archive the trace when it is marked complete (drivers that support it).
    pub auto_archive: bool,
    /// Keep the trace loaded when its last handle is dropped (it stays
    /// reachable by id through `Engine::load`, as in the reference) until it
    /// is released, removed, or idle for the engine's `idle_timeout`.
    pub keep_loaded: bool,
}

impl TraceOptions {
    /// Default options: generated id, no metadata.
    pub fn new() -> Self {
        Self::default()
    }
    /// Uses `id` instead of a generated one.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }
    /// Sets the creator.
    pub fn created_by(mut self, v: impl Into<String>) -> Self {
        self.created_by = Some(v.into());
        self
    }
    /// Sets the team.
    pub fn team_id(mut self, v: impl Into<String>) -> Self {
        self.team_id = Some(v.into());
        self
    }
    /// Sets the tenant.
    pub fn tenant_id(mut self, v: impl Into<String>) -> Self {
        self.tenant_id = Some(v.into());
        self
    }
    /// Adds a metadata entry.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }
    /// Keeps the trace loaded without handles (see
    /// [`keep_loaded`](TraceOptions::keep_loaded)); by default, dropping the
    /// last `Trace`/`Node` handle releases the trace.
    pub fn keep_loaded(mut self, on: bool) -> Self {
        self.keep_loaded = on;
        self
    }

    /// Archives the trace on `mark_complete`.
    pub fn auto_archive(mut self, on: bool) -> Self {
        self.auto_archive = on;
        self
    }

    /// Carries an incoming W3C trace context (a `traceparent` header value,
    /// `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`) into the trace:
    /// with OpenTelemetry export (feature `otel`) the exported root span
    /// links to that remote span.
    ///
    /// The value is kept in the trace's metadata under the key
    /// [`TRACEPARENT_KEY`] (`"traceparent"`), so it is stored with the trace
    /// and a reopened trace keeps it. A value that does not parse as a
    /// `traceparent` is kept but links to nothing.
    ///
    /// # Examples
    /// ```
    /// use tracepool::TraceOptions;
    /// let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    /// let opts = TraceOptions::new().parent(tp);
    /// assert_eq!(opts.metadata[tracepool::TRACEPARENT_KEY], tp);
    /// ```
    pub fn parent(self, traceparent: impl Into<String>) -> Self {
        self.metadata(TRACEPARENT_KEY, traceparent.into())
    }
}

/// The trace-metadata key under which [`TraceOptions::parent`] keeps an
/// incoming W3C `traceparent`.
pub const TRACEPARENT_KEY: &str = "traceparent";

/// Options for a new node.
///
/// Text fields are `Cow<'static, str>`: string literals are stored without
/// allocating, owned `String`s are moved in.
///
/// # Examples
/// ```
/// use tracepool::NodeOptions;
/// let o = NodeOptions::new().label("Input").icon("processor").auto_complete_parent(false);
/// assert_eq!(o.label, "Input");
/// ```
#[derive(Debug, Clone, Default)]
pub struct NodeOptions {
    /// Label.
    pub label: Cow<'static, str>,
    /// Caller-defined type.
    pub node_type: Cow<'static, str>,
    /// Icon.
    pub icon: Cow<'static, str>,
    /// Description.
    pub description: Cow<'static, str>,
    /// Metadata.
    pub metadata: Map<String, Value>,
    /// Whether `add`/`parallel` complete the running current nodes first
    /// (`None` means yes).
    pub auto_complete_parent: Option<bool>,
}

impl NodeOptions {
    /// Empty options.
    #[inline]
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets the label.
    #[inline]
    pub fn label(mut self, v: impl Into<Cow<'static, str>>) -> Self {
        self.label = v.into();
        self
    }
    /// Sets the type.
    #[inline]
    pub fn node_type(mut self, v: impl Into<Cow<'static, str>>) -> Self {
        self.node_type = v.into();
        self
    }
    /// Sets the icon.
    #[inline]
    pub fn icon(mut self, v: impl Into<Cow<'static, str>>) -> Self {
        self.icon = v.into();
        self
    }
    /// Sets the description.
    #[inline]
    pub fn description(mut self, v: impl Into<Cow<'static, str>>) -> Self {
        self.description = v.into();
        self
    }
    /// Adds a metadata entry.
    #[inline]
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }
    /// Whether running current nodes are completed before this node is added (default true).
    #[inline]
    pub fn auto_complete_parent(mut self, on: bool) -> Self {
        self.auto_complete_parent = Some(on);
        self
    }
}

/// Options for a new space.
#[derive(Debug, Clone, Default)]
pub struct SpaceOptions {
    /// Label.
    pub label: Cow<'static, str>,
    /// Caller-defined type.
    pub space_type: Cow<'static, str>,
    /// Icon.
    pub icon: Cow<'static, str>,
    /// Description.
    pub description: Cow<'static, str>,
    /// Time to live in seconds (informational).
    pub ttl: u64,
    /// Metadata.
    pub metadata: Map<String, Value>,
}

impl SpaceOptions {
    /// Empty options.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets the label.
    pub fn label(mut self, v: impl Into<Cow<'static, str>>) -> Self {
        self.label = v.into();
        self
    }
    /// Sets the type.
    pub fn space_type(mut self, v: impl Into<Cow<'static, str>>) -> Self {
        self.space_type = v.into();
        self
    }
    /// Sets the icon.
    pub fn icon(mut self, v: impl Into<Cow<'static, str>>) -> Self {
        self.icon = v.into();
        self
    }
    /// Sets the description.
    pub fn description(mut self, v: impl Into<Cow<'static, str>>) -> Self {
        self.description = v.into();
        self
    }
    /// Sets the time to live (seconds, informational).
    pub fn ttl(mut self, secs: u64) -> Self {
        self.ttl = secs;
        self
    }
    /// Adds a metadata entry.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }
}

/// One branch of [`Trace::parallel`](crate::Trace::parallel).
#[derive(Debug, Clone)]
pub struct ParallelInput {
    /// Input of the branch node.
    pub input: Value,
    /// Options of the branch node.
    pub options: NodeOptions,
}

impl ParallelInput {
    /// A branch with `input` and `options`.
    pub fn new(input: impl Into<Value>, options: NodeOptions) -> Self {
        ParallelInput {
            input: input.into(),
            options,
        }
    }
}
