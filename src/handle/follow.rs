// redis-hook: whole file (`Engine::follow`, traces loaded on any engine).
//! `Engine::follow`: a subscription to a trace that may be loaded on
//! another engine sharing the storage (the Redis driver), read from the
//! driver's event stream.

use std::sync::atomic::Ordering;

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::event::Cursor;
use crate::id::TraceId;
use crate::subscribe::Subscription;

impl Engine {
    /// Follows trace `id` wherever it is loaded: every stored event, then
    /// live ones. Same as [`follow_from`](Engine::follow_from) from
    /// `Cursor::Seq(0)`.
    ///
    /// # Errors
    /// As [`follow_from`](Engine::follow_from).
    pub fn follow(&self, id: &str) -> Result<Subscription> {
        self.follow_from(id, Cursor::Seq(0))
    }

    /// A [`Subscription`] to trace `id` from `cursor`, for a trace loaded
    /// on *any* engine sharing this engine's storage (the Redis driver), or
    /// stored and loaded nowhere.
    ///
    /// The contract is [`Trace::subscribe_from`](crate::Trace::subscribe_from)'s:
    /// replay, then live events, each event with `seq >=` the cursor (or
    /// `timestamp >=` it) exactly once and in seq order; a gap in the seqs
    /// (events the writer dropped) arrives as one `Delivery::Lagged`; the
    /// stream ends after `complete`, or when the trace is released (by
    /// whichever engine owns it), or when it is removed. Differences:
    ///
    /// * a trace loaded on this engine is subscribed to directly (the
    ///   in-memory history, no storage round trip);
    /// * otherwise the whole stored stream is replayed (Redis keeps every
    ///   event of a trace; `history_limit` does not apply), and events
    ///   arrive once their owner's worker has written them (every
    ///   `flush_interval`, 5 ms by default);
    /// * a reader that falls behind is not skipped ahead: the server keeps
    ///   what it has not read, and at most `subscriber_buffer` events wait
    ///   in this engine for it.
    ///
    /// At most `max_follows` such subscriptions (of other engines' traces)
    /// are open per engine.
    ///
    /// # Examples
    /// ```no_run
    /// # fn main() -> tracepool::Result<()> {
    /// use tracepool::{Cursor, Delivery, Engine};
    /// let engine = Engine::builder().redis("redis://127.0.0.1:6379/0").build()?;
    /// // A trace another instance created and still writes:
    /// let mut sub = engine.follow_from("20261128093000000001", Cursor::Seq(1))?;
    /// while let Some(d) = sub.blocking_recv() {
    ///     if let Delivery::Event(ev) = d {
    ///         println!("{} {}", ev.seq, ev.kind);
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `InvalidId`; `NotFound` when storage does not have the trace;
    /// `NotLoaded` when it is not loaded here and the driver cannot follow
    /// traces (every driver but Redis); `LimitExceeded` (`"follows"`) at
    /// `max_follows`; `LimitExceeded` (`"subscribers"`) for a trace loaded
    /// here at `max_subscribers`; `Storage`; `ShutDown`.
    pub fn follow_from(&self, id: &str, cursor: Cursor) -> Result<Subscription> {
        self.check_running()?;
        let tid = TraceId::parse(id)?;
        if let Some(c) = self.acquire_loaded(tid) {
            return self.wrap(c).subscribe_from(cursor);
        }
        let core = self.core();
        let limit = core.config.max_follows;
        let counted =
            core.counters
                .follows
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < limit).then_some(n + 1)
                });
        if counted.is_err() {
            return Err(Error::LimitExceeded {
                what: "follows",
                limit,
            });
        }
        let (from_seq, min_ts) = match cursor {
            Cursor::Seq(n) => (n.max(1), i64::MIN),
            Cursor::Time(ms) => (1, ms),
        };
        let feed = core
            .driver
            .follow(id, from_seq, core.config.subscriber_buffer);
        match feed {
            Ok(Some(feed)) => Ok(Subscription::remote(
                core.clone() as std::sync::Arc<dyn crate::event::log::LogHost>,
                tid,
                feed,
                from_seq,
                min_ts,
            )),
            Ok(None) => {
                core.counters.follows.fetch_sub(1, Ordering::AcqRel);
                Err(Error::NotLoaded)
            }
            Err(e) => {
                core.counters.follows.fetch_sub(1, Ordering::AcqRel);
                Err(e)
            }
        }
    }
}
