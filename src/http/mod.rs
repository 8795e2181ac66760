//! The HTTP live view (cargo feature `http`): JSON endpoints, a server-sent
//! events stream per trace, and a self-contained web viewer.
//!
//! [`router`] returns an [`axum::Router`] to mount in your own axum
//! application; [`serve`] runs it on a listener; [`serve_blocking`] is what
//! `tracepool serve` runs.
//!
//! # Endpoints
//!
//! | route | answer |
//! |---|---|
//! | `GET /` | the web viewer: one HTML page, no external resource |
//! | `GET /traces` | `{"driver", "traces": [{id, status, created_at, updated_at, node_count, loaded, created_by, metadata}]}`, newest first: loaded traces, then (when the driver can list them) stored ones, whose `node_count` is `null` |
//! | `GET /traces/{id}` | `{"info", "loaded", "nodes", "spaces", "logs"}`: every node once (root first, then breadth-first, each with `parent_ids` and `children`), every space with its key-values, every log line |
//! | `GET /traces/{id}/events` | `text/event-stream`, see below |
//!
//! Errors are JSON, `{"error": "<message>", "code": "<code>"}`: `400
//! invalid_id` for a malformed trace id, `400 invalid_cursor` for a bad
//! `Last-Event-ID`, `since_seq` or `since`, `404 not_found` for a trace that
//! is neither loaded nor stored (and for the event stream of a trace that is
//! not loaded), `404 no_route` for an unknown path, `503 shut_down` once the
//! engine is shut down.
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
//!   or when [`serve`]'s shutdown signal fires. A request that would start
//!   past the end of a finished trace gets `204 No Content`, which tells an
//!   `EventSource` to stop reconnecting.
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

mod api;
pub mod demo;
mod sse;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::engine::Engine;
use crate::error::{Error, Result};

/// Settings of the live view; [`HttpOptions::default`] is what [`router`] uses.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    keep_alive: Duration,
    stored_limit: usize,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            keep_alive: Duration::from_secs(15),
            stored_limit: 200,
        }
    }
}

impl HttpOptions {
    /// The defaults: keep-alive comments every 15 s, at most 200 stored
    /// (not loaded) traces listed by `GET /traces`.
    pub fn new() -> Self {
        HttpOptions::default()
    }

    /// How long an event stream may stay silent before a keep-alive
    /// comment is sent (clamped to at least 10 ms).
    pub fn keep_alive(mut self, every: Duration) -> Self {
        self.keep_alive = every.max(Duration::from_millis(10));
        self
    }

    /// How many stored traces that are not loaded `GET /traces` lists at
    /// most (newest ids first); `0` lists loaded traces only.
    pub fn stored_limit(mut self, n: usize) -> Self {
        self.stored_limit = n;
        self
    }
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
        .fallback(api::no_route)
        .with_state(state)
}

/// Serves [`router`] on `listener` until `shutdown` completes.
///
/// When `shutdown` completes, open event streams end, the listener stops
/// accepting, and this returns once the connections in flight are done.
/// The engine is left running: shut it down yourself if you own it.
///
/// # Errors
/// I/O errors of the listener.
pub async fn serve<F>(engine: Engine, listener: TcpListener, shutdown: F) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    serve_with(engine, HttpOptions::default(), listener, shutdown).await
}

/// [`serve`] with explicit options.
///
/// # Errors
/// I/O errors of the listener.
pub async fn serve_with<F>(
    engine: Engine,
    opts: HttpOptions,
    listener: TcpListener,
    shutdown: F,
) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = watch::channel(false);
    let app = build(engine, opts, Some(rx));
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            let _ = tx.send(true);
        })
        .await
}

/// Runs the live view until Ctrl-C (or SIGTERM): what `tracepool serve` does.
///
/// Builds its own multi-threaded tokio runtime (call it from synchronous
/// code, not from inside a runtime), binds `addr`, prints
/// `listening on http://<address>` on stdout (the bound address, so port 0
/// shows the port chosen), and serves [`router`]. With `demo`, it also runs
/// the [`demo`] generator, so there is always a trace to watch. On the
/// signal, event streams end, connections get up to 5 s to finish, and the
/// engine is shut down (flushing its driver).
///
/// # Errors
/// [`Error::Config`] when the runtime cannot be built or `addr` cannot be
/// bound (in use, not local, no permission); the error of
/// [`Engine::shutdown`].
///
/// # Panics
/// When called from inside a tokio runtime (tokio refuses to block there).
pub fn serve_blocking(engine: Engine, addr: SocketAddr, demo: bool) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("tracepool-http")
        .enable_all()
        .build()
        .map_err(|e| Error::Config(format!("cannot start the HTTP runtime: {e}")))?;
    let served: Result<()> = rt.block_on(async {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| Error::Config(format!("cannot listen on {addr}: {e}")))?;
        let local = listener.local_addr().unwrap_or(addr);
        println!("listening on http://{local}");
        if demo {
            println!("demo: generating traces (open http://{local}/ to watch)");
            tokio::spawn(demo::run(engine.clone()));
        }
        use std::io::Write as _;
        let _ = std::io::stdout().flush();

        let stop = Arc::new(tokio::sync::Notify::new());
        let server = serve(engine.clone(), listener, {
            let stop = stop.clone();
            async move { stop.notified().await }
        });
        tokio::select! {
            r = server => r.map_err(|e| Error::Config(format!("HTTP server on {local} failed: {e}"))),
            _ = async {
                shutdown_signal().await;
                stop.notify_one();
                tokio::time::sleep(Duration::from_secs(5)).await;
            } => Ok(()),
        }
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    let shut = engine.shutdown();
    served.and(shut)
}

/// Completes on Ctrl-C or, on Unix, SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
