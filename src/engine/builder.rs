//! [`EngineBuilder`]: pool size, workers, bounds and the storage driver.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::Engine;
use crate::driver::{Driver, Durability, LocalDriver, MemoryDriver, StoreDriver};
use crate::error::{Error, Result};
use crate::pool::Exhausted;

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
}

#[derive(Debug)]
enum DriverChoice {
    Memory,
    Local(PathBuf),
    Store(PathBuf),
    Custom(Arc<dyn Driver>),
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
}

impl Default for EngineBuilder {
    fn default() -> Self {
        EngineBuilder {
            config: Config {
                capacity: 1024,
                workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
                exhausted: Exhausted::default(),
                history_limit: 4096,
                subscriber_buffer: 1024,
                write_queue_limit: 65_536,
                flush_interval: Duration::from_millis(5),
                durability: Durability::Buffered,
            },
            driver: DriverChoice::Local(PathBuf::from("./traces")),
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

    /// How many events a subscriber may fall behind before it gets
    /// `Delivery::Lagged` (default 1024).
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
    pub fn local(mut self, base: impl Into<PathBuf>) -> Self {
        self.driver = DriverChoice::Local(base.into());
        self
    }

    /// Embedded key-value store driver ([`StoreDriver`], on fjall) in the
    /// directory `path`, with the [`durability`](EngineBuilder::durability)
    /// set on this builder.
    pub fn store(mut self, path: impl Into<PathBuf>) -> Self {
        self.driver = DriverChoice::Store(path.into());
        self
    }

    /// Any driver.
    pub fn driver(mut self, driver: impl Driver) -> Self {
        self.driver = DriverChoice::Custom(Arc::new(driver));
        self
    }

    /// Builds the engine: allocates the slots and starts the workers.
    ///
    /// Works with or without an ambient tokio runtime: the workers run on a
    /// small runtime owned by the engine, so they can neither be starved by
    /// the application's runtime nor block it.
    ///
    /// # Errors
    /// [`Error::Config`] for a zero capacity, worker count or bound, or a
    /// driver that is not available.
    pub fn build(self) -> Result<Engine> {
        let c = &self.config;
        for (name, v) in [
            ("capacity", c.capacity),
            ("workers", c.workers),
            ("history_limit", c.history_limit),
            ("subscriber_buffer", c.subscriber_buffer),
            ("write_queue_limit", c.write_queue_limit),
        ] {
            if v == 0 {
                return Err(Error::Config(format!("{name} must be at least 1")));
            }
        }
        if c.capacity > (u32::MAX / 2) as usize {
            return Err(Error::Config("capacity is too large".into()));
        }
        let driver: Arc<dyn Driver> = match self.driver {
            DriverChoice::Memory => Arc::new(MemoryDriver::new()),
            DriverChoice::Custom(d) => d,
            DriverChoice::Local(p) => Arc::new(LocalDriver::new(p, self.config.durability)?),
            DriverChoice::Store(p) => Arc::new(StoreDriver::open(p, self.config.durability)?),
        };
        Engine::start(self.config, driver)
    }
}
