//! How handles are obtained from an engine: `create`, `load`, `open` and
//! their async twins wrap the slot the engine checked out for them.

use super::Trace;
use crate::engine::{Checkout, Engine};
use crate::error::Result;
use crate::options::TraceOptions;

impl Engine {
    /// A handle of a checked-out slot.
    pub(super) fn wrap(&self, c: Checkout) -> Trace {
        Trace::new(self, c.key, c.id)
    }

    /// Creates a trace in a free slot and emits its `init` event.
    ///
    /// With a generated id this does no I/O: ids are `YYYYMMDD` + 12 digits,
    /// unique per engine without asking storage (the driver creates a new
    /// trace's storage exclusively, so a clash with a trace stored by another
    /// engine is refused and counted in `EngineStats::persist_errors`, never
    /// merged). With a caller-given id, `create` asks storage once whether
    /// the id exists. When every slot is in use and the policy is
    /// [`Exhausted::Wait`](crate::Exhausted::Wait), this **blocks the calling
    /// thread** until a slot is free or the wait times out; in async code use
    /// [`create_async`](Engine::create_async).
    ///
    /// The trace stays loaded while a handle to it exists (the returned
    /// [`Trace`], its clones, its [`Node`](crate::Node)s): dropping the last
    /// one releases it, unless `TraceOptions::keep_loaded(true)`.
    ///
    /// # Errors
    /// `InvalidId` for a malformed custom id, `AlreadyLoaded` when the id is
    /// loaded, `AlreadyExists` when storage has it (use [`open`](Engine::open)),
    /// `PoolExhausted` per the exhaustion policy, `Storage`, `ShutDown`.
    #[must_use = "dropping the last handle releases the trace"]
    pub fn create(&self, opts: TraceOptions) -> Result<Trace> {
        let c = self.create_checkout(opts)?;
        Ok(self.wrap(c))
    }

    /// [`create`](Engine::create) for async code: when every slot is in use
    /// it waits for a free one (the [`Exhausted::Wait`](crate::Exhausted::Wait)
    /// timeout applies) without blocking the thread, and a caller-given id is
    /// looked up in storage off the thread. Cancel safe: a dropped future
    /// holds no slot.
    ///
    /// # Errors
    /// As [`create`](Engine::create).
    #[must_use = "dropping the last handle releases the trace"]
    pub async fn create_async(&self, opts: TraceOptions) -> Result<Trace> {
        let c = self.create_async_checkout(opts).await?;
        Ok(self.wrap(c))
    }

    /// A handle to a loaded trace. The handle counts like the one `create`
    /// returned: the trace stays loaded while any handle exists.
    ///
    /// # Errors
    /// `InvalidId`, `NotLoaded`, `ShutDown`.
    #[must_use = "dropping the last handle releases the trace"]
    pub fn load(&self, id: &str) -> Result<Trace> {
        let c = self.load_checkout(id)?;
        Ok(self.wrap(c))
    }

    /// Loads a trace from storage into a slot, rebuilding its state: root,
    /// every node (a DAG, each node once), the current nodes, status, spaces
    /// and their values, logs and the event history with its seqs (new events
    /// continue the numbering). A loaded trace is returned as is (another
    /// counted handle). An id released a moment ago is read once its last
    /// writes reached storage. The trace stays loaded while a handle exists.
    ///
    /// The in-memory driver stores nothing, so for it this only finds loaded traces.
    ///
    /// # Errors
    /// `InvalidId`, `NotFound`, `Corrupt` (naming the file or key),
    /// `Storage`, `PoolExhausted`, `ShutDown`.
    #[must_use = "dropping the last handle releases the trace"]
    pub fn open(&self, id: &str) -> Result<Trace> {
        let c = self.open_checkout(id)?;
        Ok(self.wrap(c))
    }

    /// [`open`](Engine::open) for async code: storage is read off the
    /// thread, and a full pool is waited for without blocking it.
    ///
    /// # Errors
    /// As [`open`](Engine::open).
    #[must_use = "dropping the last handle releases the trace"]
    pub async fn open_async(&self, id: &str) -> Result<Trace> {
        let c = self.open_async_checkout(id).await?;
        Ok(self.wrap(c))
    }
}
