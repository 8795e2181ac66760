//! [`EngineBuilder`]: pool size, workers, bounds and the storage driver.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::Engine;
use crate::driver::{Driver, Durability, LocalDriver, MemoryDriver, StoreDriver, StoreOptions};
use crate::error::{Error, Result};
use crate::pool::Exhausted;

/// Where the default driver (the embedded store, [`EngineBuilder::store`])
/// keeps traces when no driver is chosen: `./traces.db`, relative to the
/// working directory.
pub const DEFAULT_STORE: &str = "./traces.db";

/// Settings of an engine, fixed at build time.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) capacity: usize,
    pub(crate) workers: usize,
    pub(crate) exhausted: Exhausted,
    pub(crate) history_limit: usize,
    pub(crate) subscriber_buffer: usize,
    pub(crate) write_queue_limit: usize,
    pub(crate) flush_interval: Duration,
    pub(crate) durability: Durability,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) drain_timeout: Duration,
    pub(crate) max_nodes: usize,
    pub(crate) max_log_bytes: usize,
    pub(crate) max_subscribers: usize,
    pub(crate) max_space_entries: usize,
    pub(crate) max_trace_space_entries: usize,
    pub(crate) max_spaces: usize,
    pub(crate) pending_bytes_limit: usize,
    pub(crate) store_write_buffer: usize,
    pub(crate) observer: Option<Arc<dyn crate::observer::ReleaseObserver>>, // otel-hook:
    pub(crate) max_follows: usize,                                          // redis-hook
}

/// Default bounds (see the builder methods and the README's memory budget).
pub(crate) mod defaults {
    use std::time::Duration;

    pub(crate) const CAPACITY: usize = 1024;
    pub(crate) const HISTORY: usize = 4096;
    pub(crate) const SUBSCRIBER_BUFFER: usize = 1024;
    pub(crate) const WRITE_QUEUE: usize = 65_536;
    pub(crate) const MAX_NODES: usize = 4096;
    pub(crate) const MAX_LOG_BYTES: usize = 1 << 20;
    pub(crate) const MAX_SUBSCRIBERS: usize = 1024;
    pub(crate) const MAX_SPACE_ENTRIES: usize = 4096;
    pub(crate) const MAX_TRACE_SPACE_ENTRIES: usize = 16_384;
    pub(crate) const MAX_SPACES: usize = 1024;
    pub(crate) const PENDING_BYTES: usize = 256 << 20;
    pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(600);
    pub(crate) const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
    pub(crate) const FLUSH_INTERVAL: Duration = Duration::from_millis(5);
    pub(crate) const MAX_FOLLOWS: usize = 1024; // redis-hook
}

/// The largest capacity and node count a pool can index (slot and node
/// indices are `u32`).
const MAX_INDEX: usize = (u32::MAX / 2) as usize;
/// The most worker threads an engine starts.
const MAX_WORKERS: usize = 1024;

#[derive(Debug)]
enum DriverChoice {
    Memory,
    Local(PathBuf),
    Store(PathBuf),
    Custom(Arc<dyn Driver>),
    #[cfg(feature = "redis")] // redis-hook
    Redis(String), // redis-hook
}

/// Builds an [`Engine`]. Obtain one with [`Engine::builder`].
///
/// # Examples
/// ```
/// # fn main() -> tracepool::Result<()> {
/// use std::time::Duration;
/// use tracepool::{Engine, Exhausted};
/// let engine = Engine::builder()
///     .capacity(64)
///     .workers(1)
///     .on_exhausted(Exhausted::Wait(Duration::from_millis(50)))
///     .history_limit(4096)
///     .subscriber_buffer(1024)
///     .memory()
///     .build()?;
/// assert_eq!(engine.stats().capacity, 64);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct EngineBuilder {
    config: Config,
    driver: DriverChoice,
    /// An exporter's settings, installed at `build` (otel-hook).
    pub(crate) observer_setup: Option<Box<dyn crate::observer::ObserverSetup>>,
    #[cfg(feature = "redis")] // redis-hook
    redis: crate::driver::RedisOptions, // redis-hook
}

impl Default for EngineBuilder {
    fn default() -> Self {
        EngineBuilder {
            config: Config {
                capacity: defaults::CAPACITY,
                workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
                exhausted: Exhausted::default(),
                history_limit: defaults::HISTORY,
                subscriber_buffer: defaults::SUBSCRIBER_BUFFER,
                write_queue_limit: defaults::WRITE_QUEUE,
                flush_interval: defaults::FLUSH_INTERVAL,
                durability: Durability::Buffered,
                idle_timeout: Some(defaults::IDLE_TIMEOUT),
                drain_timeout: defaults::DRAIN_TIMEOUT,
                max_nodes: defaults::MAX_NODES,
                max_log_bytes: defaults::MAX_LOG_BYTES,
                max_subscribers: defaults::MAX_SUBSCRIBERS,
                max_space_entries: defaults::MAX_SPACE_ENTRIES,
                max_trace_space_entries: defaults::MAX_TRACE_SPACE_ENTRIES,
                max_spaces: defaults::MAX_SPACES,
                pending_bytes_limit: defaults::PENDING_BYTES,
                store_write_buffer: StoreOptions::DEFAULT_WRITE_BUFFER,
                observer: None, // otel-hook:
                max_follows: defaults::MAX_FOLLOWS, // redis-hook
            },
            driver: DriverChoice::Store(PathBuf::from(DEFAULT_STORE)),
            #[cfg(feature = "redis")] // redis-hook
            redis: crate::driver::RedisOptions::default(), // redis-hook
            observer_setup: None, // otel-hook:
        }
    }
}

impl EngineBuilder {
    /// Number of trace slots preallocated at build (default 1024).
    pub fn capacity(mut self, n: usize) -> Self {
        self.config.capacity = n;
        self
    }

    /// Number of long-lived worker tasks shared by all traces (default: number of cores).
    pub fn workers(mut self, n: usize) -> Self {
        self.config.workers = n;
        self
    }

    /// What `create`/`open` do when every slot is in use
    /// (default `Exhausted::Wait(50 ms)`).
    pub fn on_exhausted(mut self, policy: Exhausted) -> Self {
        self.config.exhausted = policy;
        self
    }

    /// Events kept in memory per trace (default 4096). Older events leave the
    /// in-memory history (counted in `EngineStats::history_evicted`); they are
    /// still handed to the driver.
    pub fn history_limit(mut self, n: usize) -> Self {
        self.config.history_limit = n;
        self
    }

    /// How many *live* events a subscriber may fall behind before it gets
    /// `Delivery::Lagged` (default 1024). It does not limit the replay of
    /// the retained history a subscription starts with.
    pub fn subscriber_buffer(mut self, n: usize) -> Self {
        self.config.subscriber_buffer = n;
        self
    }

    /// Events per trace waiting for the driver before the oldest is dropped
    /// and counted in `EngineStats::events_dropped` (default 65536).
    pub fn write_queue_limit(mut self, n: usize) -> Self {
        self.config.write_queue_limit = n;
        self
    }

    /// Bytes of events waiting for the driver, engine-wide (default 256 MiB).
    /// Beyond it, the oldest queued events of the trace that is emitting are
    /// dropped and counted in `EngineStats::events_dropped`. Each trace
    /// publishes its queued bytes in steps of 64 KiB, so the total may
    /// overshoot by up to that much per trace.
    pub fn pending_bytes_limit(mut self, bytes: usize) -> Self {
        self.config.pending_bytes_limit = bytes;
        self
    }

    /// Nodes per trace (default 4,096). An operation that would go beyond
    /// fails whole with `Error::LimitExceeded { what: "nodes", .. }` (a
    /// `parallel` that does not fit adds no branch).
    pub fn max_nodes(mut self, n: usize) -> Self {
        self.config.max_nodes = n;
        self
    }

    /// Log bytes kept in memory per trace (default 1 MiB: each line counts
    /// its encoded payload plus a fixed record overhead). Beyond it, the
    /// oldest lines leave memory (they stay in storage, and their
    /// `log_added` events were emitted and persisted), counted in
    /// `EngineStats::logs_evicted`; `Trace::logs` returns the lines still in memory.
    pub fn max_log_bytes(mut self, bytes: usize) -> Self {
        self.config.max_log_bytes = bytes;
        self
    }

    /// Subscriptions per trace (default 1,024); beyond:
    /// `Error::LimitExceeded { what: "subscribers", .. }`.
    pub fn max_subscribers(mut self, n: usize) -> Self {
        self.config.max_subscribers = n;
        self
    }

    /// Keys per space (default 4,096); a new key beyond it gives
    /// `Error::LimitExceeded { what: "space_entries", .. }` (overwriting an
    /// existing key always works).
    pub fn max_space_entries(mut self, n: usize) -> Self {
        self.config.max_space_entries = n;
        self
    }

    /// Keys in all spaces of one trace together (default 16,384): with
    /// `max_spaces` spaces of `max_space_entries` keys each, a trace could
    /// otherwise hold millions. Beyond it, a new key gives
    /// `Error::LimitExceeded { what: "space_entries", .. }`.
    pub fn max_trace_space_entries(mut self, n: usize) -> Self {
        self.config.max_trace_space_entries = n;
        self
    }

    /// Spaces per trace (default 1,024); beyond:
    /// `Error::LimitExceeded { what: "spaces", .. }`.
    pub fn max_spaces(mut self, n: usize) -> Self {
        self.config.max_spaces = n;
        self
    }

    /// How long a trace created with `TraceOptions::keep_loaded(true)` stays
    /// loaded with no handle and no activity (no event, no `load`/`open` of
    /// it) before the workers release it, counted in
    /// `EngineStats::idle_released` (default 10 minutes; `None`: never).
    /// Traces with a handle are never released under it.
    pub fn idle_timeout(mut self, d: Option<Duration>) -> Self {
        self.config.idle_timeout = d;
        self
    }

    /// How long a released trace's last batch is retried when the driver
    /// fails (with backoff) before its events are dropped and counted, so a
    /// failing driver cannot exhaust the pool; also the longest `flush`,
    /// `shutdown` and reads of a draining id wait (default 30 s).
    pub fn drain_timeout(mut self, d: Duration) -> Self {
        self.config.drain_timeout = d;
        self
    }

    /// How often workers hand queued events to the driver (default 5 ms).
    pub fn flush_interval(mut self, d: Duration) -> Self {
        self.config.flush_interval = d;
        self
    }

    /// When a batch counts as persisted for the built-in persistent drivers
    /// (default [`Durability::Buffered`]).
    pub fn durability(mut self, d: Durability) -> Self {
        self.config.durability = d;
        self
    }

    /// In-memory driver: nothing is persisted; a trace lives while it is loaded.
    pub fn memory(mut self) -> Self {
        self.driver = DriverChoice::Memory;
        self
    }

    /// Local-disk driver ([`LocalDriver`]) in the reference's directory
    /// layout under `base`, with the [`durability`](EngineBuilder::durability)
    /// set on this builder. `build` creates `base` if it is missing.
    ///
    /// The layout is the Yao engine's own (a directory it wrote opens here
    /// and vice versa); it costs some 30 file-system calls per trace, which
    /// is why it is not the default: see [`store`](EngineBuilder::store).
    pub fn local(mut self, base: impl Into<PathBuf>) -> Self {
        self.driver = DriverChoice::Local(base.into());
        self
    }

    /// Embedded key-value store driver ([`StoreDriver`], on fjall) in the
    /// directory `path`, with the [`durability`](EngineBuilder::durability)
    /// set on this builder and a write buffer of
    /// [`store_write_buffer`](EngineBuilder::store_write_buffer) bytes.
    ///
    /// **The default driver**, in `./traces.db` ([`DEFAULT_STORE`]): of the
    /// drivers that need no server it sustains the most traces a second
    /// with every trace persisted (all of a worker's traces go to storage in
    /// one commit); use [`local`](EngineBuilder::local) for the reference's
    /// directory layout.
    pub fn store(mut self, path: impl Into<PathBuf>) -> Self {
        self.driver = DriverChoice::Store(path.into());
        self
    }

    /// The memory the [`store`](EngineBuilder::store) driver's fjall store
    /// may hold (block cache and memtables), in bytes: default 64 MiB, at
    /// least 4 MiB (`build` fails with [`Error::Config`] below that). The
    /// store's heap levels off within it instead of growing with the traces
    /// written (see [`StoreOptions::write_buffer`]).
    pub fn store_write_buffer(mut self, bytes: usize) -> Self {
        self.config.store_write_buffer = bytes;
        self
    }

    /// Any driver.
    pub fn driver(mut self, driver: impl Driver) -> Self {
        self.driver = DriverChoice::Custom(Arc::new(driver));
        self
    }

    // redis-hook: begin
    /// Redis driver ([`RedisDriver`](crate::RedisDriver), feature `redis`)
    /// on the server at `url` (`redis://host:port/db`; a server in cluster
    /// mode is detected, and `url` may then list several seed nodes
    /// separated by commas), with [`redis_prefix`](EngineBuilder::redis_prefix)
    /// and [`lease_ttl`](EngineBuilder::lease_ttl). `build` connects and
    /// fails with `Storage` when the server cannot be reached. Engines on
    /// one server and prefix share traces: see [`Engine::follow`] and
    /// `docs/SCALE-OUT.md`.
    ///
    /// # Examples
    /// ```no_run
    /// # fn main() -> tracepool::Result<()> {
    /// use std::time::Duration;
    /// use tracepool::Engine;
    /// let engine = Engine::builder()
    ///     .redis("redis://127.0.0.1:6379/0")
    ///     .redis_prefix("myapp:")
    ///     .lease_ttl(Duration::from_secs(10))
    ///     .build()?;
    /// assert_eq!(engine.driver_name(), "redis");
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "redis")]
    pub fn redis(mut self, url: impl Into<String>) -> Self {
        self.driver = DriverChoice::Redis(url.into());
        self
    }

    /// The prefix of every Redis key (default `"tracepool:"`): engines with
    /// the same prefix on one server share traces. At most 128 bytes,
    /// without braces, spaces or control characters.
    #[cfg(feature = "redis")]
    pub fn redis_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.redis = self.redis.prefix(prefix);
        self
    }

    /// How long a trace's lease lasts without renewal on the Redis driver
    /// (default 10 s, at least 100 ms). The owning engine's ticker renews
    /// it every third of that; after a crash of the owner another engine
    /// can open the trace once it expired.
    #[cfg(feature = "redis")]
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.redis = self.redis.lease_ttl(ttl);
        self
    }

    /// Open [`Engine::follow`] subscriptions of traces not loaded here,
    /// per engine (default 1,024); beyond:
    /// `Error::LimitExceeded { what: "follows", .. }`.
    pub fn max_follows(mut self, n: usize) -> Self {
        self.config.max_follows = n;
        self
    }
    // redis-hook: end

    /// Builds the engine: allocates the slots and starts the workers.
    ///
    /// Works with or without an ambient tokio runtime: the workers run on a
    /// small runtime owned by the engine, so they can neither be starved by
    /// the application's runtime nor block it.
    ///
    /// # Errors
    /// [`Error::Config`] for a zero capacity, worker count, bound or
    /// interval, a capacity or node bound beyond what a `u32` index holds,
    /// more than 1,024 workers, or a driver that is not available.
    pub fn build(self) -> Result<Engine> {
        let c = &self.config;
        for (name, v) in [
            ("capacity", c.capacity),
            ("workers", c.workers),
            ("history_limit", c.history_limit),
            ("subscriber_buffer", c.subscriber_buffer),
            ("write_queue_limit", c.write_queue_limit),
            ("max_nodes", c.max_nodes),
            ("max_subscribers", c.max_subscribers),
            ("max_space_entries", c.max_space_entries),
            ("max_trace_space_entries", c.max_trace_space_entries),
            ("max_spaces", c.max_spaces),
            ("pending_bytes_limit", c.pending_bytes_limit),
            ("store_write_buffer", c.store_write_buffer),
            ("max_follows", c.max_follows), // redis-hook
        ] {
            if v == 0 {
                return Err(Error::Config(format!("{name} must be at least 1")));
            }
        }
        for (name, v) in [("capacity", c.capacity), ("max_nodes", c.max_nodes)] {
            if v > MAX_INDEX {
                return Err(Error::Config(format!("{name} must be at most {MAX_INDEX}")));
            }
        }
        if c.workers > MAX_WORKERS {
            return Err(Error::Config(format!(
                "workers must be at most {MAX_WORKERS}"
            )));
        }
        for (name, d) in [
            ("flush_interval", c.flush_interval),
            ("drain_timeout", c.drain_timeout),
        ] {
            if d.is_zero() {
                return Err(Error::Config(format!("{name} must be positive")));
            }
        }
        if c.idle_timeout.is_some_and(|d| d.is_zero()) {
            return Err(Error::Config(
                "idle_timeout must be positive (None disables it)".into(),
            ));
        }
        let driver: Arc<dyn Driver> = match self.driver {
            DriverChoice::Memory => Arc::new(MemoryDriver::new()),
            DriverChoice::Custom(d) => d,
            DriverChoice::Local(p) => Arc::new(LocalDriver::new(p, self.config.durability)?),
            DriverChoice::Store(p) => Arc::new(StoreDriver::open_with(
                p,
                self.config.durability,
                StoreOptions::new().write_buffer(self.config.store_write_buffer),
            )?),
            // redis-hook: begin
            #[cfg(feature = "redis")]
            DriverChoice::Redis(url) => {
                Arc::new(crate::driver::RedisDriver::connect(&url, self.redis)?)
            } // redis-hook: end
        };
        let mut config = self.config;
        if let Some(setup) = self.observer_setup {
            config.observer = setup.install()?; // otel-hook:
        }
        Engine::start(config, driver) // otel-hook: (was `self.config`)
    }
}
