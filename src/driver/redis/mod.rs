//! The Redis driver (feature `redis`): many engines, on many machines, share
//! traces through one Redis (or Valkey) server or cluster.
//!
//! * `conn.rs`: the driver's runtime thread and its connections;
//! * `keys.rs`: the key layout (every key of a trace shares the hash tag
//!   `{<trace id>}`);
//! * `write.rs`: a batch is one Lua script (one round trip), applied only
//!   while this engine holds the trace's lease;
//! * `read.rs`: `load`, `exists`, `info`, `list` (a sorted-set index),
//!   `remove`, `archive`;
//! * `lease.rs`: taking, renewing and giving up leases;
//! * `follow.rs`: following the event streams of traces other engines write.
//!
//! `docs/SCALE-OUT.md` describes the layout, the lease protocol and what is
//! guaranteed.

mod conn;
mod follow;
mod keys;
mod lease;
mod read;
mod write;

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Driver, FollowFeed, StoredTrace, WriteBatch, lock};
use crate::error::{Error, Result};
use crate::model::TraceInfo;
use conn::Io;
use keys::Keys;

/// Settings of a [`RedisDriver`]; [`RedisOptions::default`] has the values
/// documented on each method.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use tracepool::RedisOptions;
///
/// let opts = RedisOptions::new()
///     .prefix("myapp:traces:")
///     .lease_ttl(Duration::from_secs(5));
/// assert_eq!(opts.lease_ttl_value(), Duration::from_secs(5));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisOptions {
    prefix: String,
    lease_ttl: Duration,
    owner: Option<String>,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            prefix: String::from("tracepool:"),
            lease_ttl: Duration::from_secs(10),
            owner: None,
        }
    }
}

impl RedisOptions {
    /// The defaults: prefix `"tracepool:"`, lease TTL 10 s, a generated
    /// owner id.
    pub fn new() -> Self {
        RedisOptions::default()
    }

    /// The prefix of every key the driver writes (default `"tracepool:"`):
    /// engines with the same prefix share traces, others do not see them.
    /// At most 128 bytes, without `{`, `}`, spaces or control characters
    /// (checked by [`RedisDriver::connect`]).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long a trace's lease lasts without renewal (default 10 s, at
    /// least 100 ms): after a crash of its owner, another engine can open
    /// the trace this long after the owner's last renewal. Owners renew
    /// every third of it.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// The id this driver's engine is known by in leases and in
    /// [`Error::Leased`] (default: `<host>/<pid>/<random>`). It must be
    /// unique among the engines sharing the server.
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = Some(owner.into());
        self
    }

    /// The key prefix set.
    pub fn prefix_value(&self) -> &str {
        &self.prefix
    }

    /// The lease TTL set.
    pub fn lease_ttl_value(&self) -> Duration {
        self.lease_ttl
    }

    /// Checks the settings.
    fn check(&self) -> Result<()> {
        let p = &self.prefix;
        if p.len() > 128
            || p.chars()
                .any(|c| c == '{' || c == '}' || c.is_whitespace() || c.is_control())
        {
            return Err(Error::Config(format!(
                "invalid Redis key prefix {:?}: at most 128 bytes, no braces, spaces or control characters",
                p.chars().take(40).collect::<String>()
            )));
        }
        if self.lease_ttl < Duration::from_millis(100) {
            return Err(Error::Config("lease_ttl must be at least 100 ms".into()));
        }
        if self.lease_ttl > Duration::from_secs(24 * 3600) {
            return Err(Error::Config("lease_ttl must be at most 24 hours".into()));
        }
        if let Some(o) = &self.owner
            && (o.is_empty() || o.len() > 200 || o.chars().any(char::is_control))
        {
            return Err(Error::Config(
                "the Redis owner id must be 1 to 200 bytes without control characters".into(),
            ));
        }
        Ok(())
    }
}

/// What this engine knows of a trace whose lease it holds.
#[derive(Debug, Clone)]
pub(super) struct Held {
    /// The id of the stream's last entry when this engine last wrote or
    /// read it: a lease that expired may be taken again only if the
    /// stream still ends there (nobody else wrote meanwhile).
    known: String,
}

/// Shared with the tasks on the driver's runtime.
#[derive(Debug, Default)]
struct Shared {
    /// Traces whose lease this engine holds.
    held: Mutex<HashMap<String, Held>>,
    /// A renewal is running.
    renewing: AtomicBool,
}

/// A script's answer.
#[derive(Debug)]
enum Reply {
    /// `{'ok', x}`.
    Ok(String),
    /// `{'leased', owner, pttl}`.
    Leased { owner: String, pttl: u64 },
    /// `{'exists'}`.
    Exists,
    /// `{'missing'}`.
    Missing,
    /// `{'retry'}`.
    Retry,
}

fn text(v: &redis::Value) -> Option<String> {
    match v {
        redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        redis::Value::SimpleString(s) => Some(s.clone()),
        redis::Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

fn parse_reply(v: redis::Value, location: &str) -> Result<Reply> {
    let bad = || Error::storage(location, "redis: a script answered something unexpected");
    let redis::Value::Array(items) = v else {
        return Err(bad());
    };
    let word = items.first().and_then(text).ok_or_else(bad)?;
    Ok(match word.as_str() {
        "ok" => Reply::Ok(items.get(1).and_then(text).unwrap_or_default()),
        "leased" => Reply::Leased {
            owner: items.get(1).and_then(text).unwrap_or_default(),
            pttl: items
                .get(2)
                .and_then(text)
                .and_then(|t| t.parse::<i64>().ok())
                .map_or(0, |n| u64::try_from(n).unwrap_or(0)),
        },
        "exists" => Reply::Exists,
        "missing" => Reply::Missing,
        "retry" => Reply::Retry,
        _ => return Err(bad()),
    })
}

/// The Redis driver: traces in Redis (or Valkey), shared by every engine
/// that uses the same server and key prefix.
///
/// * **Layout**: per trace, an info document, hashes of node, space and
///   space-data documents (the reference's formats), one list of log lines
///   per node, and one Stream of events whose entry ids are the events'
///   seqs (`<seq>-0`), so a replay from any seq is one range read; every
///   key of a trace shares the hash tag `{<trace id>}` (Redis Cluster
///   works); a sorted set indexes trace ids by creation time.
/// * **Writes**: one Lua script per batch (one round trip), atomic and
///   idempotent, applied only while this engine holds the trace's lease.
///   `flush` returns once the server acknowledged every batch (with the
///   server's own persistence settings: `appendfsync always` makes an
///   acknowledged batch durable).
/// * **Leases**: a trace is writable on one engine at a time; `open` on
///   another engine gives [`Error::Leased`] until the owner releases it or
///   stops renewing it for [`RedisOptions::lease_ttl`].
/// * **Following**: [`Engine::follow`](crate::Engine::follow) streams a
///   trace that any engine writes.
/// * **Archive**: marks the stored info `archived: true` (with
///   `archived_at`); the data stays as written (no compaction: remove
///   traces you no longer need).
///
/// The async client runs on a runtime thread of the driver's own; every
/// call made through the (synchronous) [`Driver`] trait waits at most 10 s.
///
/// # Examples
/// ```no_run
/// # fn main() -> tracepool::Result<()> {
/// use std::time::Duration;
/// use tracepool::{Engine, NodeOptions, TraceOptions};
///
/// let a = Engine::builder()
///     .redis("redis://127.0.0.1:6379/0")
///     .lease_ttl(Duration::from_secs(5))
///     .build()?;
/// let trace = a.create(TraceOptions::new())?;
/// trace.add("in", NodeOptions::new().label("Step"))?;
/// a.flush_blocking()?; // the server has it
///
/// // Another engine (here in the same process) follows it live...
/// let b = Engine::builder().redis("redis://127.0.0.1:6379/0").build()?;
/// let mut sub = b.follow(trace.id())?;
/// assert!(sub.blocking_recv().is_some()); // `init`
/// // ...and cannot open it while `a` holds it.
/// assert!(matches!(b.open(trace.id()), Err(tracepool::Error::Leased { .. })));
/// # Ok(()) }
/// ```
pub struct RedisDriver {
    io: Arc<Io>,
    keys: Keys,
    owner: String,
    lease_ttl: Duration,
    shared: Arc<Shared>,
    mux: Arc<follow::Mux>,
}

impl std::fmt::Debug for RedisDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisDriver")
            .field("server", &self.io.location)
            .field("cluster", &self.io.is_cluster())
            .field("keys", &self.keys)
            .field("owner", &self.owner)
            .field("lease_ttl", &self.lease_ttl)
            .finish_non_exhaustive()
    }
}

/// `<host>/<pid>/<random>`.
fn default_owner() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_owned());
    format!("{host}/{}/{:08x}", std::process::id(), fastrand::u32(..))
}

impl RedisDriver {
    /// Connects to the server at `url` (`redis://[user:password@]host:port/db`,
    /// `rediss://` is not supported). A server in cluster mode is detected
    /// and used as a cluster; `url` may then list several seed nodes
    /// separated by commas.
    ///
    /// # Errors
    /// `Config` for a bad URL or option; `Storage` when the server cannot
    /// be reached.
    pub fn connect(url: &str, options: RedisOptions) -> Result<RedisDriver> {
        options.check()?;
        let io = Io::connect(url)?;
        Ok(RedisDriver {
            io: Arc::new(io),
            keys: Keys::new(&options.prefix),
            owner: options.owner.unwrap_or_else(default_owner),
            lease_ttl: options.lease_ttl,
            shared: Arc::default(),
            mux: Arc::default(),
        })
    }

    /// This engine's id in leases (see [`RedisOptions::owner`]).
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Whether the server is a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.io.is_cluster()
    }

    fn lease_ttl_ms(&self) -> u64 {
        u64::try_from(self.lease_ttl.as_millis()).unwrap_or(u64::MAX)
    }

    /// The last stream entry this engine knows of a trace whose lease it holds.
    fn known(&self, id: &str) -> Option<String> {
        lock(&self.shared.held).get(id).map(|h| h.known.clone())
    }

    fn hold(&self, id: &str, held: Held) {
        lock(&self.shared.held).insert(id.to_owned(), held);
    }

    fn forget(&self, id: &str) {
        lock(&self.shared.held).remove(id);
    }
}

impl Driver for RedisDriver {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn wants_documents(&self) -> bool {
        true
    }

    fn write(&self, batch: &WriteBatch<'_>) -> Result<()> {
        self.write_batch(batch)
    }

    fn load(&self, trace_id: &str) -> Result<Option<StoredTrace>> {
        self.load_stored(trace_id)
    }

    fn archive(&self, trace_id: &str) -> Result<()> {
        self.archive_stored(trace_id)
    }

    fn exists(&self, trace_id: &str) -> Result<bool> {
        self.exists_stored(trace_id)
    }

    fn info(&self, trace_id: &str) -> Result<Option<TraceInfo>> {
        self.info_stored(trace_id)
    }

    fn remove(&self, trace_id: &str) -> Result<bool> {
        self.remove_stored(trace_id)
    }

    fn list(&self) -> Result<Vec<String>> {
        self.list_stored()
    }

    fn lease_renewal(&self) -> Option<Duration> {
        Some(self.lease_ttl / 3)
    }

    fn acquire_lease(&self, trace_id: &str, creating: bool) -> Result<()> {
        self.acquire(trace_id, creating)
    }

    fn release_lease(&self, trace_id: &str) -> Result<()> {
        self.give_up(trace_id)
    }

    fn renew_leases(&self) {
        self.renew_all();
    }

    fn follow(
        &self,
        trace_id: &str,
        from_seq: u64,
        buffer: usize,
    ) -> Result<Option<Box<dyn FollowFeed>>> {
        crate::id::validate_trace_id(trace_id)?;
        let key = self.keys.trace(trace_id).events();
        // What storage holds now is read here, before `follow` returns: a
        // trace removed right afterwards still gives its followers that.
        let seed = self.read_stream_from(&key, from_seq, buffer.max(2))?;
        if seed.is_empty() && !self.exists_stored(trace_id)? {
            return Err(Error::NotFound);
        }
        let feed = self.mux.follow(&self.io, key, from_seq, buffer, seed);
        Ok(Some(Box::new(feed)))
    }

    fn shutdown(&self) {
        self.mux.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_checked() {
        assert!(RedisOptions::new().check().is_ok());
        for bad in ["a{b", "a}b", "a b", "a\nb"] {
            assert!(matches!(
                RedisOptions::new().prefix(bad).check(),
                Err(Error::Config(_))
            ));
        }
        assert!(
            RedisOptions::new()
                .lease_ttl(Duration::from_millis(10))
                .check()
                .is_err()
        );
        assert!(RedisOptions::new().owner("").check().is_err());
    }

    #[test]
    fn script_replies_are_parsed() {
        use redis::Value::{Array, BulkString, Int};
        let r = parse_reply(
            Array(vec![
                BulkString(b"leased".to_vec()),
                BulkString(b"h/1/2".to_vec()),
                Int(950),
            ]),
            "k",
        )
        .unwrap();
        assert!(matches!(r, Reply::Leased { ref owner, pttl: 950 } if owner == "h/1/2"));
        let r = parse_reply(
            Array(vec![
                BulkString(b"ok".to_vec()),
                BulkString(b"5-0".to_vec()),
            ]),
            "k",
        );
        assert!(matches!(r, Ok(Reply::Ok(ref id)) if id == "5-0"));
        assert!(parse_reply(Int(1), "k").is_err());
        assert!(default_owner().split('/').count() >= 3);
    }
}
