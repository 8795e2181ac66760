//! Running the router on a TCP listener, with the limits that need the
//! sockets: the header-read timeout and the connection cap.
//!
//! The accept loop is ours rather than `axum::serve`'s, which sets neither:
//! each connection is served by hyper's HTTP/1 server with a header-read
//! timer, under one permit of a semaphore sized to the connection cap. A
//! connection beyond the cap is answered `503` JSON by a short task (at
//! most [`MAX_REFUSING`] at once, each given [`REFUSAL_TIME`]) and closed.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::response::Response;
use axum::routing::future::RouteFuture;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};

use super::{HttpCounters, HttpOptions, Limits};
use crate::engine::Engine;
use crate::error::{Error, Result};

/// Refused connections answered at once; more are closed without an answer.
const MAX_REFUSING: usize = 64;

/// How long a refused connection may take to send its request head and
/// read the answer.
const REFUSAL_TIME: Duration = Duration::from_secs(1);

/// The request head of a refused connection is read up to this size.
const REFUSAL_HEAD_MAX: usize = 8 * 1024;

/// Serves [`router`](super::router) on `listener` with `limits`; it never
/// returns on its own: drop its task to stop it, or use
/// [`serve_with_shutdown`] for a graceful stop.
///
/// Unlike `axum::serve`, this applies every [`Limits`] field: a connection
/// that does not send a complete request head within
/// [`Limits::header_read_timeout`] is closed, and beyond
/// [`Limits::max_connections`] a connection gets `503` JSON
/// (`too_many_connections`) and is closed. Transient accept errors (the
/// process is out of file descriptors, a client reset) are retried, after
/// 1 s when they are not about one connection.
///
/// # Errors
/// None today (accept errors are retried); the `io::Result` matches
/// `axum::serve` and leaves room for listener errors.
///
/// # Examples
///
/// ```no_run
/// # async fn demo() -> std::io::Result<()> {
/// use tracepool::http::{self, Limits};
///
/// let engine = tracepool::Engine::builder().memory().build().expect("engine");
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:7070").await?;
/// http::serve(listener, engine, Limits::default()).await
/// # }
/// ```
pub async fn serve(listener: TcpListener, engine: Engine, limits: Limits) -> io::Result<()> {
    let opts = HttpOptions::new().limits(limits);
    serve_with_shutdown(listener, engine, opts, std::future::pending()).await
}

/// [`serve`] with explicit options, until `shutdown` completes.
///
/// When `shutdown` completes, the listener stops accepting, open event
/// streams end, idle connections are closed, and this returns once every
/// connection is done (a connection whose reader stopped reading is closed
/// after [`Limits::sse_write_timeout`], one still sending its request head
/// after [`Limits::header_read_timeout`]). The engine is left running: shut
/// it down yourself if you own it.
///
/// [`HttpOptions::counters`] reads the counters, connection counters
/// included.
///
/// # Errors
/// None today (see [`serve`]).
///
/// # Examples
///
/// ```no_run
/// # async fn demo() -> std::io::Result<()> {
/// use tracepool::http::{self, HttpOptions};
///
/// let engine = tracepool::Engine::builder().memory().build().expect("engine");
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
/// let server = tokio::spawn(http::serve_with_shutdown(
///     listener,
///     engine,
///     HttpOptions::new(),
///     async move {
///         let _ = stopped.await;
///     },
/// ));
/// // ... later:
/// let _ = stop.send(());
/// server.await.expect("server task")?;
/// # Ok(()) }
/// ```
pub async fn serve_with_shutdown<F>(
    listener: TcpListener,
    engine: Engine,
    opts: HttpOptions,
    shutdown: F,
) -> io::Result<()>
where
    F: Future<Output = ()>,
{
    let limits = opts.limits;
    let counters = opts.counters.clone();
    let (closing_tx, closing) = watch::channel(false);
    let router = super::build(engine, opts, Some(closing.clone()));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new());
    http.header_read_timeout(
        (!limits.header_read_timeout.is_zero()).then_some(limits.header_read_timeout),
    );
    // `acquire_many` below takes a u32.
    let max_connections = limits.max_connections.min(u32::MAX as usize);
    let permits = Arc::new(Semaphore::new(max_connections));
    let refusal = refusal_response(max_connections);
    let refusing = Arc::new(AtomicUsize::new(0));

    let mut shutdown = pin!(shutdown);
    loop {
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    if !is_connection_error(&e) {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            counters
                .inner
                .connections_refused
                .fetch_add(1, Ordering::Relaxed);
            refuse(stream, refusal.clone(), &refusing);
            continue;
        };
        let _ = stream.set_nodelay(true);
        // Counted from the moment it holds a place (not when its task first
        // runs), so `connections` and the cap always agree.
        let open = OpenConnection::new(counters.clone());
        tokio::spawn(connection(
            stream,
            permit,
            open,
            router.clone(),
            http.clone(),
            closing.clone(),
            counters.clone(),
        ));
    }

    let _ = closing_tx.send(true);
    drop(listener);
    // Every permit back: every connection task has ended.
    let _ = permits.acquire_many(max_connections as u32).await;
    Ok(())
}

/// Closes one connection when told to (a stalled event stream).
#[derive(Debug, Clone, Default)]
pub(super) struct ConnectionCloser(Arc<Notify>);

impl ConnectionCloser {
    /// Drops the connection: its socket is closed at once.
    pub(super) fn close(&self) {
        self.0.notify_one();
    }
}

/// The router, with the connection's closer in each request's extensions.
#[derive(Debug, Clone)]
struct ConnectionService {
    router: Router,
    closer: ConnectionCloser,
}

impl hyper::service::Service<Request<Incoming>> for ConnectionService {
    type Response = Response;
    type Error = Infallible;
    type Future = RouteFuture<Infallible>;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        request.extensions_mut().insert(self.closer.clone());
        // A router is always ready: no `poll_ready` needed.
        tower_service::Service::call(&mut self.router.clone(), request)
    }
}

/// Counts a connection while it is open.
struct OpenConnection(HttpCounters);

impl OpenConnection {
    fn new(counters: HttpCounters) -> Self {
        counters.inner.connections.fetch_add(1, Ordering::Relaxed);
        OpenConnection(counters)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.inner.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves one connection until it ends, is closed by its closer, or the
/// server shuts down (gracefully: the request in flight finishes).
async fn connection(
    stream: TcpStream,
    permit: OwnedSemaphorePermit,
    open: OpenConnection,
    router: Router,
    http: http1::Builder,
    mut closing: watch::Receiver<bool>,
    counters: HttpCounters,
) {
    let _permit = permit;
    let _open = open;
    let closer = ConnectionCloser::default();
    let service = ConnectionService {
        router,
        closer: closer.clone(),
    };
    let mut conn = pin!(http.serve_connection(TokioIo::new(stream), service));
    let mut draining = false;
    loop {
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served
                    && e.is_timeout()
                {
                    counters.inner.header_timeouts.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
            // Dropping `conn` closes the socket.
            _ = closer.0.notified() => return,
            _ = closing.wait_for(|c| *c), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// The whole answer to a connection beyond the cap.
fn refusal_response(max: usize) -> Bytes {
    let body = serde_json::json!({
        "error": format!("{max} connections are open, the most this server allows; retry later"),
        "code": "too_many_connections",
    })
    .to_string();
    Bytes::from(format!(
        "HTTP/1.1 503 Service Unavailable\r\n\
         content-type: application/json\r\n\
         cache-control: no-store\r\n\
         connection: close\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    ))
}

/// Answers a connection beyond the cap with `503` JSON and closes it.
fn refuse(stream: TcpStream, answer: Bytes, refusing: &Arc<AtomicUsize>) {
    if refusing.fetch_add(1, Ordering::AcqRel) >= MAX_REFUSING {
        refusing.fetch_sub(1, Ordering::AcqRel);
        return; // dropped: closed without an answer
    }
    let refusing = refusing.clone();
    tokio::spawn(async move {
        let _ = tokio::time::timeout(REFUSAL_TIME, answer_refused(stream, answer)).await;
        refusing.fetch_sub(1, Ordering::AcqRel);
    });
}

/// Reads the request head first, so that closing after the answer does not
/// reset the connection before the client has read it.
async fn answer_refused(mut stream: TcpStream, answer: Bytes) -> io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while head.len() < REFUSAL_HEAD_MAX && !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    stream.write_all(&answer).await?;
    stream.shutdown().await
}

/// Accept errors about one connection only: accept the next one at once.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Runs the live view until Ctrl-C (or SIGTERM): what `tracepool serve` does.
///
/// Builds its own multi-threaded tokio runtime (call it from synchronous
/// code, not from inside a runtime), binds `addr`, prints
/// `listening on http://<address>` on stdout (the bound address, so port 0
/// shows the port chosen), and runs [`serve_with_shutdown`] with the default
/// [`HttpOptions`] (so every [`Limits`] default applies). With `demo`, it
/// also runs the [`demo`](super::demo) generator, so there is always a trace
/// to watch. On the signal, event streams end, connections get up to 5 s to
/// finish, and the engine is shut down (flushing its driver).
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
            tokio::spawn(super::demo::run(engine.clone()));
        }
        use std::io::Write as _;
        let _ = std::io::stdout().flush();

        let stop = Arc::new(Notify::new());
        let server = serve_with_shutdown(listener, engine.clone(), HttpOptions::default(), {
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
