// redis-hook: whole file (leases of drivers shared by many engines).
//! Leases of drivers shared by many engines (the Redis driver): `open` and
//! `create` with a caller-given id take the trace's lease synchronously and
//! give it up again when they fail afterwards; a batch refused with
//! `Error::Leased` marks the trace lost (see `Core::process`), after which
//! its operations give `Leased` and its writes are dropped and counted.

use crate::error::{Error, Result};
use crate::id::{TraceId, now_ms};

use super::Engine;

/// The record of a lost lease kept in the trace's state.
pub(crate) fn lost(owner: String, expires_in_ms: u64) -> Box<(String, i64)> {
    let until = now_ms().saturating_add(i64::try_from(expires_in_ms).unwrap_or(i64::MAX));
    Box::new((owner, until))
}

/// What an operation on a trace whose lease was lost returns.
pub(crate) fn leased_error(lost: &(String, i64)) -> Error {
    Error::Leased {
        owner: lost.0.clone(),
        expires_in_ms: u64::try_from(lost.1.saturating_sub(now_ms())).unwrap_or(0),
    }
}

/// The storage error `flush` reports for a batch refused because another
/// engine took the trace's lease.
pub(crate) fn lost_error(id: &TraceId, owner: &str) -> Error {
    let by = if owner.is_empty() {
        String::from("it expired and the trace changed since")
    } else {
        format!("engine {owner} holds it")
    };
    Error::Storage {
        location: format!("trace {}", id.as_str()),
        message: format!(
            "lease lost ({by}): this engine stalled past the lease; its queued writes \
             of the trace are dropped and its operations give Leased"
        ),
        source: None,
    }
}

impl Engine {
    /// Runs `f` (which loads the trace `tid` into a slot) holding the
    /// trace's lease: takes it first (`creating`: `create` with a given id),
    /// and gives it up if `f` fails. A driver without leases is not asked.
    pub(super) fn with_lease<T>(
        &self,
        tid: &TraceId,
        creating: bool,
        f: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        let driver = &self.core().driver;
        if driver.lease_renewal().is_none() {
            return f();
        }
        driver.acquire_lease(tid.as_str(), creating)?;
        let r = f();
        if r.is_err() {
            let _ = driver.release_lease(tid.as_str());
        }
        r
    }
}
