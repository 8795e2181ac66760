//! The driver's connection to Redis and the runtime it runs on.
//!
//! The `Driver` trait is synchronous and is called from the engine's worker
//! threads and from callers' threads (some of them inside an async
//! runtime). The async client therefore runs on a runtime of the driver's
//! own (one I/O-enabled thread, `tracepool-redis`): a call spawns its future
//! there and waits for the answer on a plain channel, bounded by a deadline.
//! Waiting on a channel works on any thread, also one that is running an
//! async task (where `Runtime::block_on` would panic).
//!
//! Commands go through one multiplexed connection that reconnects by itself
//! (the `redis` crate's `ConnectionManager`), or a cluster connection when
//! the server runs in cluster mode (detected at connect). Following uses a
//! dedicated connection of its own (see `follow.rs`).

use std::future::Future;
use std::sync::mpsc;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value};

use crate::error::{Error, Result};

/// How long one call may take before it fails with `Storage`.
pub(super) const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A connection for commands: one server, or a cluster.
#[derive(Clone)]
pub(super) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Conn::Single(_) => "Conn::Single",
            Conn::Cluster(_) => "Conn::Cluster",
        })
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// The runtime, the client and the command connection.
pub(super) struct Io {
    /// `Some` until the driver is dropped.
    rt: Option<tokio::runtime::Runtime>,
    pub(super) handle: tokio::runtime::Handle,
    pub(super) conn: Conn,
    /// The client of a single server (the follow connection is made from
    /// it); `None` on a cluster.
    pub(super) client: Option<redis::Client>,
    /// Where the server is, for error messages (the URL without a password).
    pub(super) location: String,
}

impl std::fmt::Debug for Io {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Io")
            .field("location", &self.location)
            .field("conn", &self.conn)
            .finish_non_exhaustive()
    }
}

impl Drop for Io {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            // Never blocks (dropping a runtime inside another one would panic).
            rt.shutdown_background();
        }
    }
}

/// A `Storage` error naming `location`.
pub(super) fn storage(location: impl Into<String>, e: &RedisError) -> Error {
    Error::storage(location, format!("redis: {e}"))
}

/// The URL as it may appear in messages: without a password.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://…@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

impl Io {
    /// Starts the runtime thread and connects to `url` (a cluster when the
    /// server says it runs in cluster mode; then `url` may list several
    /// seed nodes separated by commas).
    pub(super) fn connect(url: &str) -> Result<Io> {
        let location = redact(url);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("tracepool-redis")
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| Error::io(format!("redis runtime for {location}"), e))?;
        let handle = rt.handle().clone();
        let urls: Vec<String> = url
            .split(',')
            .map(|u| u.trim().to_owned())
            .filter(|u| !u.is_empty())
            .collect();
        let first = urls
            .first()
            .cloned()
            .ok_or_else(|| Error::Config("the Redis URL is empty".into()))?;
        let client = redis::Client::open(first.as_str())
            .map_err(|e| Error::Config(format!("invalid Redis URL {location}: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT))
            .set_number_of_retries(3)
            .set_max_delay(Duration::from_millis(500));
        let single_client = client.clone();
        let connected = run_on(&handle, &location, async move {
            let mut single = ConnectionManager::new_with_config(single_client, config).await?;
            let info: String = redis::cmd("INFO")
                .arg("cluster")
                .query_async(&mut single)
                .await?;
            Ok((single, info.contains("cluster_enabled:1")))
        });
        let (single, cluster) = match connected {
            Ok(v) => v,
            Err(e) => {
                rt.shutdown_background();
                return Err(e);
            }
        };
        let conn = if cluster {
            let cc = run_on(&handle, &location, async move {
                redis::cluster::ClusterClientBuilder::new(urls)
                    .connection_timeout(CONNECT_TIMEOUT)
                    .response_timeout(CALL_TIMEOUT)
                    .retries(3)
                    .build()?
                    .get_async_connection()
                    .await
            });
            match cc {
                Ok(cc) => Conn::Cluster(cc),
                Err(e) => {
                    rt.shutdown_background();
                    return Err(e);
                }
            }
        } else {
            Conn::Single(single)
        };
        Ok(Io {
            rt: Some(rt),
            handle,
            client: (!cluster).then_some(client),
            conn,
            location,
        })
    }

    /// Whether the server is a Redis Cluster.
    pub(super) fn is_cluster(&self) -> bool {
        matches!(self.conn, Conn::Cluster(_))
    }

    /// Runs `fut` on the driver's runtime and waits (at most
    /// [`CALL_TIMEOUT`] plus a margin) for its result. A failure is
    /// `Storage` naming `location`.
    pub(super) fn run<T, F>(&self, location: &str, fut: F) -> Result<T>
    where
        T: Send + 'static,
        F: Future<Output = RedisResult<T>> + Send + 'static,
    {
        run_on(&self.handle, location, fut)
    }
}

/// Runs `fut` on the runtime of `handle` and waits (at most
/// [`CALL_TIMEOUT`] plus a margin) for its result. A failure is `Storage`
/// naming `location`.
pub(super) fn run_on<T, F>(handle: &tokio::runtime::Handle, location: &str, fut: F) -> Result<T>
where
    T: Send + 'static,
    F: Future<Output = RedisResult<T>> + Send + 'static,
{
    let (tx, rx) = mpsc::sync_channel(1);
    handle.spawn(async move {
        let r = tokio::time::timeout(CALL_TIMEOUT, fut).await;
        let _ = tx.send(r);
    });
    match rx.recv_timeout(CALL_TIMEOUT + Duration::from_secs(2)) {
        Ok(Ok(Ok(v))) => Ok(v),
        Ok(Ok(Err(e))) => Err(storage(location, &e)),
        Ok(Err(_)) | Err(mpsc::RecvTimeoutError::Timeout) => Err(Error::storage(
            location,
            format!("redis: no answer within {CALL_TIMEOUT:?}"),
        )),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(Error::storage(
            location,
            "redis: the driver's runtime stopped",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(
            redact("redis://user:secret@10.0.0.1:6379/0"),
            "redis://…@10.0.0.1:6379/0"
        );
        assert_eq!(redact("redis://127.0.0.1/"), "redis://127.0.0.1/");
    }
}
