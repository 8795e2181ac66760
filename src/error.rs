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
    /// A trace id that does not match `^[0-9A-Za-z_-]{1,64}$`.
    #[error("invalid trace id {id:?}: ids must match ^[0-9A-Za-z_-]{{1,64}}$")]
    InvalidId {
        /// The rejected id (possibly truncated for display).
        id: String,
    },
    /// `create` with an id that is already loaded.
    #[error("trace {0} is already loaded")]
    AlreadyLoaded(String),
    /// `create` with an id that storage already holds: use `open` to resume it.
    #[error("trace {0} already exists in storage (use open to resume it)")]
    AlreadyExists(String),
    /// The id names no loaded trace.
    #[error("trace {0} is not loaded")]
    NotLoaded(String),
    /// The id is neither loaded nor in storage.
    #[error("trace {0} not found")]
    NotFound(String),
    /// The handle refers to a trace that was released; its slot may now hold another trace.
    #[error("trace handle is stale: the trace was released")]
    Released,
    /// Every slot is in use and the exhaustion policy gave up.
    #[error("trace pool exhausted: all {capacity} slots are in use")]
    PoolExhausted {
        /// Number of slots in the pool when the checkout failed.
        capacity: usize,
    },
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
    #[error("node {0} is already finished")]
    NodeFinished(String),
    /// A node id (or a node handle of another trace) that this trace does not contain.
    #[error("node {0} not found in this trace")]
    NodeNotFound(String),
    /// The trace was marked complete or cancelled; it accepts no more mutations.
    #[error("trace {0} is finished (marked complete or cancelled)")]
    TraceFinished(String),
    /// The space id is unknown in this trace.
    #[error("space {0} not found")]
    SpaceNotFound(String),
    /// The engine was shut down.
    #[error("engine is shut down")]
    ShutDown,
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
