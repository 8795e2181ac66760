//! The one error type of the crate.
//!
//! Every fallible operation returns [`Result<T>`](crate::Result). Variants are
//! typed so that callers can match on what went wrong instead of parsing
//! strings; each message names the id, key or path involved.

use std::path::PathBuf;

/// Errors returned by tracepool.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A trace id that does not match `^[0-9A-Za-z_-]{1,64}$` (checked before
    /// an id reaches a path or a storage key).
    #[error("invalid trace id: ids must match ^[0-9A-Za-z_-]{{1,64}}$")]
    InvalidId,
    /// `create` with an id that is already loaded.
    #[error("a trace with this id is already loaded")]
    AlreadyLoaded,
    /// `create` with an id that storage already holds: use `open` to resume it.
    #[error("a trace with this id already exists in storage (use open to resume it)")]
    AlreadyExists,
    /// The id names no loaded trace.
    #[error("no loaded trace has this id")]
    NotLoaded,
    /// The id is neither loaded nor in storage.
    #[error("trace not found (neither loaded nor in storage)")]
    NotFound,
    /// The handle refers to a trace that was released; its slot may now hold another trace.
    #[error("trace handle is stale: the trace was released")]
    Released,
    /// Every slot is in use and the exhaustion policy gave up.
    #[error("trace pool exhausted: every slot is in use")]
    PoolExhausted,
    /// `parallel` was called with no inputs.
    #[error("parallel inputs cannot be empty")]
    EmptyParallel,
    /// `join` was called with no parent nodes.
    #[error("join needs at least one parent node")]
    EmptyJoin,
    /// The operation needs a root node; call `add` first.
    #[error("trace has no root node yet: call add first")]
    NoRoot,
    /// The node already reached a terminal status.
    #[error("node is already finished")]
    NodeFinished,
    /// A node id (or a node handle of another trace) that this trace does not contain.
    #[error("node not found in this trace")]
    NodeNotFound,
    /// The trace was marked complete or cancelled; it accepts no more mutations.
    #[error("trace is finished (marked complete or cancelled)")]
    TraceFinished,
    /// The space id is unknown in this trace.
    #[error("space not found in this trace")]
    SpaceNotFound,
    /// The engine was shut down.
    #[error("engine is shut down")]
    ShutDown,
    /// A caller value that does not serialize to JSON (e.g. a map with
    /// non-string keys); nothing was recorded.
    #[error("invalid value: it does not serialize to JSON")]
    InvalidValue,
    /// A per-trace bound was reached; the operation changed nothing.
    /// `what` is `"nodes"`, `"subscribers"`, `"space_entries"` or `"spaces"`.
    #[error("limit exceeded: at most {limit} {what} (see the engine builder)")]
    LimitExceeded {
        /// Which bound.
        what: &'static str,
        /// Its value.
        limit: usize,
    },
    /// A storage driver failed.
    #[error("storage error at {location}: {message}")]
    Storage {
        /// The file or key involved.
        location: String,
        /// What went wrong.
        message: String,
        /// The underlying I/O error, when there is one.
        #[source]
        source: Option<std::io::Error>,
    },
    /// Stored data that does not parse.
    #[error("corrupt data at {location}: {message}")]
    Corrupt {
        /// The file or key involved.
        location: String,
        /// What is wrong with it.
        message: String,
    },
    /// An invalid builder setting.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The trace is leased to another engine sharing the storage (Redis
    /// driver): it is writable on one engine at a time. `open` and `remove`
    /// give this until the owner releases the trace or its lease expires;
    /// the operations of a trace whose lease was taken over by another
    /// engine (this engine stalled past the lease) give it too.
    #[error(
        "trace is leased to another engine ({owner}); its lease expires in {expires_in_ms} ms unless renewed"
    )]
    Leased {
        /// The engine holding the lease (its owner id, `host/pid/random`;
        /// empty when the lease has expired since and nobody holds it).
        owner: String,
        /// How long the lease lasts if its owner stops renewing it (ms).
        expires_in_ms: u64,
    },
}

impl Error {
    /// Builds an [`Error::Storage`] from an I/O error and the path it concerns.
    pub fn io(path: impl Into<PathBuf>, err: std::io::Error) -> Self {
        let path = path.into();
        Error::Storage {
            location: path.display().to_string(),
            message: err.to_string(),
            source: Some(err),
        }
    }

    /// Builds an [`Error::Storage`] naming `location`, without an I/O error
    /// behind it (a refused file, a store that reported a failure).
    pub(crate) fn storage(location: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Storage {
            location: location.into(),
            message: message.into(),
            source: None,
        }
    }

    /// Builds an [`Error::Corrupt`] naming `location`.
    pub fn corrupt(location: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Corrupt {
            location: location.into(),
            message: message.into(),
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
