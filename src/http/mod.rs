//! The HTTP live view (cargo feature `http`): JSON endpoints, a server-sent
//! events stream per trace, and a self-contained web viewer.
//!
//! [`router`] returns an [`axum::Router`] to mount in your own axum
//! application; [`serve`] runs it on a listener with the socket-level
//! [`Limits`] (header-read timeout, connection cap) that a router alone
//! cannot apply; [`serve_blocking`] is what `tracepool serve` runs.
//!
//! # Endpoints
//!
//! | route | answer |
//! |---|---|
//! | `GET /` | the web viewer: one HTML page, no external resource |
//! | `GET /traces?limit=N&after=ID` | one page of `{"driver", "traces": [{id, status, created_at, updated_at, node_count, loaded, created_by, metadata}], "next"}`: loaded traces first, then stored ones (`node_count: null`), each group in descending id order; `next` is the `after` of the next page, `null` on the last one |
//! | `GET /traces/{id}` | `{"info", "loaded", "nodes", "spaces", "logs"}`: every node once (root first, then breadth-first, each with `parent_ids` and `children`), every space with its key-values, every log line; read from storage when the trace is not loaded |
//! | `GET /traces/{id}/events` | `text/event-stream`, see below |
//! | `GET /stats` | `{"http": HttpStats, "engine": EngineStats}` |
//!
//! `limit` defaults to 100 and is lowered to 1,000 at most; a page reads at
//! most `limit` trace-info files from storage. Every error is JSON,
//! `{"error": "<message>", "code": "<code>"}`, with the status and code
//! listed in `docs/HTTP.md` (`invalid_id`, `invalid_query`,
//! `invalid_cursor`, `not_found`, `no_route`, `method_not_allowed`,
//! `leased`, `too_many_streams`, `too_many_follows`, `too_many_connections`,
//! `shut_down`, `storage`).
//! A message never repeats a long value sent by the client.
//!
//! # Limits
//!
//! [`Limits`] bounds what one client can hold: the router caps concurrent
//! event streams (beyond: `503 too_many_streams`), closes an event stream
//! whose reader stopped reading for [`Limits::sse_write_timeout`] (counted
//! in [`HttpStats::sse_write_timeouts`]), and refuses `Last-Event-ID` and
//! query values longer than [`Limits::max_value_len`]; [`serve`] also closes
//! connections that do not send a request head in time and caps concurrent
//! connections (beyond: `503 too_many_connections`, then close).
//!
//! # The event stream
//!
//! One SSE message per event, in `seq` order, with the reference's wire JSON
//! ([`Event::to_json`](crate::Event::to_json)) as data:
//!
//! ```text
//! id: 7
//! event: node_start
//! data: {"type":"node_start","trace_id":"…","node_id":"…","space_id":"","timestamp":…,"data":{…},"seq":7}
//!
//! ```
//!
//! The event's shared wire bytes are written as they are: nothing is
//! re-encoded per client.
//!
//! * **Where it starts**: the `Last-Event-ID` header (sent by a browser's
//!   `EventSource` when it reconnects) resumes after that seq, so a
//!   reconnecting client sees no gap and no duplicate; otherwise
//!   `?since_seq=N` starts at the event with `seq >= N` and `?since=MS` at
//!   the first event with `timestamp >= MS`; without any, the whole
//!   retained history is replayed, then live events follow.
//! * **Lagging**: a client that falls more than the engine's
//!   `subscriber_buffer` behind gets one message `event: lagged` with data
//!   `{"missed": N}` (and no `id`), then the stream goes on.
//! * **Keep-alive**: a comment line (`: keep-alive`) after
//!   [`HttpOptions::keep_alive`] without an event (15 s by default).
//! * **End**: the response ends after the `complete` event, or once the
//!   trace was released and every event emitted before the release was sent,
//!   or when [`serve_with_shutdown`]'s shutdown signal fires, or when the
//!   reader stopped reading (see [`Limits::sse_write_timeout`]). A request
//!   that would start past the end of a finished trace gets
//!   `204 No Content`, which tells an `EventSource` to stop reconnecting.
//!
//! A client that disconnects only drops its own subscription; the writer
//! never waits for readers.
//!
//! # Examples
//!
//! Mounting the live view under `/trace` in an existing axum application:
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use axum::{Router, routing::get};
//! use tracepool::Engine;
//!
//! let engine = Engine::builder().memory().build().expect("engine");
//! let app = Router::new()
//!     .route("/health", get(|| async { "ok" }))
//!     .nest("/trace", tracepool::http::router(engine.clone()));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:7070").await?;
//! axum::serve(listener, app).await
//! # }
//! ```
//!
//! Serving the live view alone, with the socket-level limits:
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use tracepool::Engine;
//! use tracepool::http::{self, Limits};
//!
//! let engine = Engine::builder().memory().build().expect("engine");
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:7070").await?;
//! http::serve(listener, engine, Limits::default()).await
//! # }
//! ```

mod api;
pub mod demo;
mod serve;
mod sse;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use serde::Serialize;
use tokio::sync::watch;

use crate::engine::Engine;

pub use serve::{serve, serve_blocking, serve_with_shutdown};

/// Bounds on what clients can hold or send; [`Limits::default`] has the
/// values documented on each field.
///
/// The router applies the stream cap, the SSE write timeout and the value
/// length cap; the header-read timeout and the connection cap need the
/// sockets, so only [`serve`] (and `tracepool serve`) apply them. A
/// timeout of [`Duration::ZERO`] disables it.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tracepool::http::{HttpOptions, Limits};
///
/// let mut limits = Limits::default();
/// limits.max_sse_streams = 32;
/// limits.sse_write_timeout = Duration::from_secs(10);
/// let engine = tracepool::Engine::builder().memory().build().expect("engine");
/// let app = tracepool::http::router_with(engine, HttpOptions::new().limits(limits));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// How long a connection may take to send a complete request head
    /// (also the idle time allowed between two requests of a kept-alive
    /// connection); then the connection is closed. Default 10 s.
    /// Applied by [`serve`] only.
    pub header_read_timeout: Duration,
    /// Concurrent connections; one more is answered
    /// `503 too_many_connections` and closed. Default 1,024.
    /// Applied by [`serve`] only.
    pub max_connections: usize,
    /// Concurrent event streams (`GET /traces/{id}/events`); one more is
    /// answered `503 too_many_streams`. Default 256.
    pub max_sse_streams: usize,
    /// How long an event stream may wait for its reader to take more bytes
    /// (the socket's buffers are full) before it is closed and counted in
    /// [`HttpStats::sse_write_timeouts`]. Default 30 s; the stream is closed
    /// at most a quarter of it later. Its slot under
    /// [`max_sse_streams`](Self::max_sse_streams) is freed at once; the
    /// socket is closed at once by [`serve`], and otherwise as soon as the
    /// hosting server writes to it again.
    pub sse_write_timeout: Duration,
    /// Longest `Last-Event-ID` header, and longest query parameter name or
    /// value (as sent, percent-encoded), in bytes; a longer one is answered
    /// `400` without being echoed. Default 256.
    pub max_value_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 1024,
            max_sse_streams: 256,
            sse_write_timeout: Duration::from_secs(30),
            max_value_len: 256,
        }
    }
}

/// Settings of the live view; [`HttpOptions::default`] is what [`router`] uses.
///
/// Each `HttpOptions` value owns a set of counters ([`HttpCounters`]),
/// shared by its clones and by the router (and server) built from it.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    keep_alive: Duration,
    limits: Limits,
    counters: HttpCounters,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            keep_alive: Duration::from_secs(15),
            limits: Limits::default(),
            counters: HttpCounters::default(),
        }
    }
}

impl HttpOptions {
    /// The defaults: keep-alive comments every 15 s, [`Limits::default`],
    /// fresh counters.
    pub fn new() -> Self {
        HttpOptions::default()
    }

    /// How long an event stream may stay silent before a keep-alive
    /// comment is sent (clamped to at least 10 ms).
    pub fn keep_alive(mut self, every: Duration) -> Self {
        self.keep_alive = every.max(Duration::from_millis(10));
        self
    }

    /// The limits to apply (see [`Limits`]).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// A handle on the counters of the router (and server) built from
    /// these options; read it with [`HttpCounters::snapshot`].
    ///
    /// ```
    /// use tracepool::http::{self, HttpOptions};
    ///
    /// let engine = tracepool::Engine::builder().memory().build().expect("engine");
    /// let opts = HttpOptions::new();
    /// let counters = opts.counters();
    /// let _app = http::router_with(engine, opts);
    /// assert_eq!(counters.snapshot().sse_streams, 0);
    /// ```
    pub fn counters(&self) -> HttpCounters {
        self.counters.clone()
    }
}

/// The live counters of a router and of the server running it (a cheap,
/// shared handle: clones see the same counters).
#[derive(Debug, Clone, Default)]
pub struct HttpCounters {
    inner: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    sse_streams: AtomicUsize,
    sse_streams_refused: AtomicU64,
    sse_write_timeouts: AtomicU64,
    connections: AtomicUsize,
    connections_refused: AtomicU64,
    header_timeouts: AtomicU64,
}

impl HttpCounters {
    /// The counters now.
    pub fn snapshot(&self) -> HttpStats {
        let c = &self.inner;
        HttpStats {
            sse_streams: c.sse_streams.load(Ordering::Relaxed),
            sse_streams_refused: c.sse_streams_refused.load(Ordering::Relaxed),
            sse_write_timeouts: c.sse_write_timeouts.load(Ordering::Relaxed),
            connections: c.connections.load(Ordering::Relaxed),
            connections_refused: c.connections_refused.load(Ordering::Relaxed),
            header_timeouts: c.header_timeouts.load(Ordering::Relaxed),
        }
    }
}

/// The HTTP counters at one moment, from [`HttpCounters::snapshot`] or
/// `GET /stats` (field `http`).
///
/// The connection counters are kept by [`serve`] only: they stay 0 for a
/// router mounted in another server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct HttpStats {
    /// Event streams open now.
    pub sse_streams: usize,
    /// Event streams refused with `503 too_many_streams`.
    pub sse_streams_refused: u64,
    /// Event streams closed because their reader stopped reading for
    /// [`Limits::sse_write_timeout`].
    pub sse_write_timeouts: u64,
    /// Connections open now.
    pub connections: usize,
    /// Connections refused with `503 too_many_connections`.
    pub connections_refused: u64,
    /// Connections closed because their request head did not arrive within
    /// [`Limits::header_read_timeout`].
    pub header_timeouts: u64,
}

/// What every handler shares.
#[derive(Debug, Clone)]
struct AppState {
    engine: Engine,
    opts: Arc<HttpOptions>,
    /// Turns `true` when the server shuts down: open event streams end.
    closing: Option<watch::Receiver<bool>>,
}

/// The live view as an axum router with the default [`HttpOptions`]: mount
/// it (`Router::nest`, `Router::merge`) in your own application.
///
/// See the [module docs](self) for the routes. The viewer finds the API
/// relative to its own path, so it also works when the router is nested
/// under a prefix (`Router::nest("/trace", ..)`: open `/trace`).
///
/// The router applies the stream cap, the SSE write timeout and the value
/// length cap of [`Limits`]; the header-read timeout and the connection
/// cap are up to the server it is mounted in ([`serve`] applies them).
pub fn router(engine: Engine) -> Router {
    router_with(engine, HttpOptions::default())
}

/// [`router`] with explicit options.
pub fn router_with(engine: Engine, opts: HttpOptions) -> Router {
    build(engine, opts, None)
}

fn build(engine: Engine, opts: HttpOptions, closing: Option<watch::Receiver<bool>>) -> Router {
    let state = AppState {
        engine,
        opts: Arc::new(opts),
        closing,
    };
    Router::new()
        .route("/", get(api::viewer))
        .route("/traces", get(api::list))
        .route("/traces/", get(api::list))
        .route("/traces/{id}", get(api::detail))
        .route("/traces/{id}/events", get(sse::events))
        .route("/stats", get(api::stats))
        .fallback(api::no_route)
        // After the routes: it applies to the routes registered so far.
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            api::check_lengths,
        ))
        .with_state(state)
}
