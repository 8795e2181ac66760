//! Storage drivers: where a trace's events go after they were emitted.
//!
//! The engine never calls a driver on the caller's hot path. Events queue in
//! the trace's slot and the engine's workers hand them over in batches
//! ([`WriteBatch`], one per trace per flush; the traces one worker visits on
//! one wake-up together, in one [`Driver::write_group`] call); after
//! `release` the slot drains on its worker. A driver sees each trace's batches in seq order, never two
//! batches of one trace at once. Reads (`load`, `exists`, `info`, `list`)
//! and `remove` are called on the caller's thread (or off it, by the
//! engine's `*_async` methods).
//!
//! Besides events, a batch carries *documents* (trace info, node, space and
//! space-data snapshots, written whole) and *log lines* (appended), already
//! encoded in the reference's formats ([`format`](mod@format)), for drivers that ask for
//! them ([`Driver::wants_documents`]). A driver applies a batch in this order:
//! event lines, log lines, then documents.
//!
//! [`MemoryDriver`] persists nothing (a trace lives while it is loaded), so
//! nothing is queued for it.
//!
//! # Drivers shared by many engines
//!
//! A driver that many engines (processes, machines) share, like
//! [`RedisDriver`], makes a trace writable on one engine at a time with
//! *leases* ([`Driver::lease_renewal`], [`Driver::acquire_lease`],
//! [`Driver::renew_leases`], [`Driver::release_lease`],
//! [`WriteBatch::is_release`]) and lets any engine follow a trace that
//! another one writes ([`Driver::follow`], a [`FollowFeed`]). Every one of
//! these hooks has a default that does nothing, so a driver for one engine
//! implements none of them.

pub mod format;
mod local;
mod memory;
#[cfg(feature = "redis")]
mod redis;
mod store;
#[cfg(test)]
mod test_batch;

pub use format::StoredTrace;
pub use local::LocalDriver;
pub use memory::MemoryDriver;
#[cfg(feature = "redis")]
pub use redis::{RedisDriver, RedisOptions};
pub use store::{StoreDriver, StoreOptions};

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use crate::error::Result;
use crate::event::{Event, EventKind};
use crate::model::TraceInfo;

/// One event as a driver sees it: numbering plus the shared wire bytes.
#[derive(Debug, Clone, Copy)]
pub struct EventRecord<'a> {
    /// Per-trace sequence number.
    pub seq: u64,
    /// Kind.
    pub kind: EventKind,
    /// Emission time (ms).
    pub timestamp: i64,
    /// Node id or `""`.
    pub node_id: &'a str,
    /// Space id or `""`.
    pub space_id: &'a str,
    /// The wire bytes of [`Event::to_json`](crate::Event::to_json) (one line, no newline).
    pub bytes: &'a [u8],
}

/// How far a batch must have travelled before it counts as persisted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Handed to the operating system (`write`, `rename`): survives a killed
    /// process, not a power cut. The default.
    #[default]
    Buffered,
    /// Also `fdatasync` the event log of each batch.
    Flush,
    /// `fsync` every file written and the directories of renamed files.
    Fsync,
}

/// What a [`Doc`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DocKind {
    /// `trace_info.json` (the id is the trace id).
    Info,
    /// A node document (`nodes/<id>.json`).
    Node,
    /// A space document (`spaces/<id>.json`).
    Space,
    /// A space's key-values (`spaces/<id>/data.json`).
    SpaceData,
    /// The space was deleted: remove its document and data (bytes are empty).
    SpaceDeleted,
}

/// One whole document to write (atomically replacing the previous version).
#[derive(Debug, Clone, Copy)]
pub struct Doc<'a> {
    /// What it is.
    pub kind: DocKind,
    /// Node or space id (the trace id for [`DocKind::Info`]).
    pub id: &'a str,
    /// The encoded document.
    pub bytes: &'a [u8],
}

/// One log line to append to a node's log.
#[derive(Debug, Clone, Copy)]
pub struct LogLineRecord<'a> {
    /// The node the line belongs to.
    pub node_id: &'a str,
    /// Position of the line in the trace's log (0-based, gap-free, in write order).
    pub index: u64,
    /// One compact JSON line (no newline).
    pub bytes: &'a [u8],
}

/// A document or log line inside a batch's byte buffer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DocBuf {
    pub(crate) kind: DocKind,
    pub(crate) id: crate::id::ShortId,
    pub(crate) range: (usize, usize),
    /// For log lines: the line's index in the trace's log.
    pub(crate) n: u64,
}

/// The writes of one trace handed to a driver in one call.
#[derive(Debug)]
#[non_exhaustive]
pub struct WriteBatch<'a> {
    /// Trace id (validated: `^[0-9A-Za-z_-]{1,64}$`).
    pub trace_id: &'a str,
    events: &'a [Event],
    docs: &'a [DocBuf],
    logs: &'a [DocBuf],
    buf: &'a [u8],
    new_trace: bool,
    release: bool,
}

impl<'a> WriteBatch<'a> {
    pub(crate) fn new(
        trace_id: &'a str,
        events: &'a [Event],
        docs: &'a [DocBuf],
        logs: &'a [DocBuf],
        buf: &'a [u8],
        new_trace: bool,
    ) -> Self {
        WriteBatch {
            trace_id,
            events,
            docs,
            logs,
            buf,
            new_trace,
            release: false,
        }
    }

    /// Marks the batch as its trace's last (see [`WriteBatch::is_release`]).
    pub(crate) fn releasing(mut self, release: bool) -> Self {
        self.release = release;
        self
    }

    /// Whether the trace was released and this is its last batch, sent only
    /// to drivers with leases ([`Driver::lease_renewal`]): after applying
    /// it, the driver gives up the trace's lease (the Redis driver also
    /// appends a `released` marker that ends the trace's followers). Such a
    /// batch may hold nothing else ([`is_empty`](WriteBatch::is_empty)).
    pub fn is_release(&self) -> bool {
        self.release
    }

    /// Whether this is the first batch of a trace that this engine created
    /// (not opened from storage), and no earlier batch of it succeeded.
    ///
    /// A driver creates such a trace's storage *exclusively*: if the trace
    /// already exists (an id collision with another engine or an earlier
    /// run), it writes nothing and returns [`Error::AlreadyExists`](crate::Error::AlreadyExists),
    /// so two traces are never merged. A first batch that fails must leave
    /// nothing behind, because the engine retries it as a first batch.
    pub fn is_new_trace(&self) -> bool {
        self.new_trace
    }

    /// Documents to write whole, in the order they changed.
    pub fn docs(&self) -> impl ExactSizeIterator<Item = Doc<'a>> + 'a {
        let (buf, trace_id) = (self.buf, self.trace_id);
        self.docs.iter().map(move |d| Doc {
            kind: d.kind,
            id: if d.kind == DocKind::Info {
                trace_id
            } else {
                d.id.as_str()
            },
            bytes: &buf[d.range.0..d.range.1],
        })
    }

    /// Log lines to append, in the order they were written.
    pub fn log_lines(&self) -> impl ExactSizeIterator<Item = LogLineRecord<'a>> + 'a {
        let buf = self.buf;
        self.logs.iter().map(move |d| LogLineRecord {
            node_id: d.id.as_str(),
            index: d.n,
            bytes: &buf[d.range.0..d.range.1],
        })
    }

    /// The events, in seq order.
    pub fn events(&self) -> impl ExactSizeIterator<Item = EventRecord<'a>> + 'a {
        self.events.iter().map(|e| EventRecord {
            seq: e.seq,
            kind: e.kind,
            timestamp: e.timestamp,
            node_id: e.node_id(),
            space_id: e.space_id(),
            bytes: &e.bytes,
        })
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether the batch holds nothing at all (no event, line or document).
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.docs.is_empty() && self.logs.is_empty()
    }

    /// Total bytes of the events, log lines and documents.
    pub fn byte_len(&self) -> usize {
        self.events.iter().map(|e| e.bytes.len()).sum::<usize>() + self.buf.len()
    }
}

/// A storage backend.
///
/// Implementations must be cheap to call from the engine's worker threads and
/// must not block on an async runtime.
pub trait Driver: Send + Sync + std::fmt::Debug + 'static {
    /// Short name reported in [`TraceInfo::driver`] (`"memory"`, `"local"`, ...).
    fn name(&self) -> &'static str;

    /// Persists one batch of one trace.
    ///
    /// # Errors
    /// [`Error::Storage`](crate::Error::Storage) naming the file or key; the
    /// engine counts the batch's events as dropped.
    fn write(&self, batch: &WriteBatch<'_>) -> Result<()>;

    /// Whether [`write_group`](Driver::write_group) makes a group durable
    /// together (one commit), so that handing it many traces at once pays
    /// off (`false`, the default: the worker hands over one trace at a
    /// time, and each trace's slot is finished — freed, if it was released —
    /// as soon as its own batch is written, not after a whole group of
    /// them).
    fn commits_groups(&self) -> bool {
        false
    }

    /// Whether a call of this driver is bounded local work (files, an
    /// embedded store), so that `flush_blocking` may hand it an idle
    /// worker's queued writes on the flushing thread instead of waking the
    /// worker: that saves the wake-up of a parked thread, which takes tens
    /// of microseconds on a virtual machine. `false` (the default): every
    /// write happens on a worker, and `flush_blocking` waits at most
    /// `drain_timeout` even while a driver call hangs.
    fn flushes_on_caller(&self) -> bool {
        false
    }

    /// Persists several batches, each of a different trace, pushing one
    /// result per batch onto `results` (empty when called), in the order
    /// of `batches`. A worker hands over the batches of every trace it
    /// visits on one wake-up this way (at most 256 traces or 8 MiB per
    /// call) when the driver [`commits_groups`](Driver::commits_groups),
    /// so that it can make them durable together: one commit and one sync
    /// for the whole group ([`StoreDriver`] does); otherwise one at a time.
    ///
    /// Each batch keeps the semantics of [`write`](Driver::write): a
    /// new trace's first batch ([`WriteBatch::is_new_trace`]) is created
    /// exclusively, and one that fails with
    /// [`Error::AlreadyExists`](crate::Error::AlreadyExists) must not
    /// keep the other batches of the group from being written; a failed
    /// first batch leaves nothing behind. The default calls
    /// [`write`](Driver::write) for each batch.
    ///
    /// # Errors
    /// Per batch, in `results`, as for [`write`](Driver::write).
    fn write_group(&self, batches: &[WriteBatch<'_>], results: &mut Vec<Result<()>>) {
        results.extend(batches.iter().map(|b| self.write(b)));
    }

    /// Whether batches should carry documents and log lines (persistent
    /// drivers) or events only (the default).
    fn wants_documents(&self) -> bool {
        false
    }

    /// Whether the driver keeps what it is given (the default). A driver
    /// that keeps nothing ([`MemoryDriver`]) is given nothing: events are
    /// not queued for it, and a released trace's slot is free at once.
    fn persists(&self) -> bool {
        true
    }

    /// Reads a stored trace back (`Ok(None)` if storage does not have it).
    ///
    /// # Errors
    /// `Corrupt` naming the file or key that does not parse; `Storage`.
    fn load(&self, _trace_id: &str) -> Result<Option<StoredTrace>> {
        Ok(None)
    }

    /// Archives a stored trace (called by `mark_complete` with
    /// `TraceOptions::auto_archive`, after the trace's writes were handed over).
    /// Archived traces stay readable through `load` and `info`.
    fn archive(&self, _trace_id: &str) -> Result<()> {
        Ok(())
    }

    /// Whether storage holds the trace.
    fn exists(&self, _trace_id: &str) -> Result<bool> {
        Ok(false)
    }

    /// Stored metadata of a trace that is not loaded.
    fn info(&self, _trace_id: &str) -> Result<Option<TraceInfo>> {
        Ok(None)
    }

    /// Deletes everything stored for the trace; `Ok(false)` if there was nothing.
    fn remove(&self, _trace_id: &str) -> Result<bool> {
        Ok(false)
    }

    /// Ids of stored traces.
    fn list(&self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }

    /// Makes everything written so far durable (called at shutdown).
    fn flush(&self) -> Result<()> {
        Ok(())
    }

    /// `Some(every)` for a driver shared by many engines that leases each
    /// trace to one engine at a time (`None`, the default: no leases).
    /// The engine then calls [`renew_leases`](Driver::renew_leases) at
    /// that interval, takes a lease with
    /// [`acquire_lease`](Driver::acquire_lease) for `open` and `create`
    /// with a caller-given id (a generated id's lease is taken by the
    /// trace's first batch), and ends every trace with a batch marked
    /// [`WriteBatch::is_release`]. A batch of a trace whose lease another
    /// engine took is refused with [`Error::Leased`](crate::Error::Leased).
    fn lease_renewal(&self) -> Option<Duration> {
        None
    }

    /// Takes the lease of trace `trace_id` for this engine, synchronously
    /// (`open`; `creating`: `create` with a caller-given id, which must
    /// not exist in storage).
    ///
    /// # Errors
    /// [`Error::Leased`](crate::Error::Leased) when another engine holds
    /// it; `NotFound` (opening a trace storage does not have);
    /// `AlreadyExists` (creating one it has); `Storage`.
    fn acquire_lease(&self, _trace_id: &str, _creating: bool) -> Result<()> {
        Ok(())
    }

    /// Gives up a lease taken by [`acquire_lease`](Driver::acquire_lease)
    /// when the `open` or `create` that took it failed afterwards.
    ///
    /// # Errors
    /// `Storage`.
    fn release_lease(&self, _trace_id: &str) -> Result<()> {
        Ok(())
    }

    /// Renews every lease this engine holds. Called by the engine's ticker
    /// every [`lease_renewal`](Driver::lease_renewal); must not block (a
    /// driver starts the renewal on its own threads and returns), so an
    /// engine that stalls stops renewing and its leases expire.
    fn renew_leases(&self) {}

    /// A feed of trace `trace_id`'s stored events from seq `from_seq` on,
    /// then of the events its owner (any engine sharing the storage) writes
    /// later, for [`Engine::follow`](crate::Engine::follow). `buffer`
    /// bounds the items the feed holds for its reader. `Ok(None)` (the
    /// default): the driver cannot follow traces.
    ///
    /// # Errors
    /// `NotFound` when storage does not have the trace; `Storage`.
    fn follow(
        &self,
        _trace_id: &str,
        _from_seq: u64,
        _buffer: usize,
    ) -> Result<Option<Box<dyn FollowFeed>>> {
        Ok(None)
    }

    /// The engine shut down (called once, after its last batch): end the
    /// feeds handed out by [`follow`](Driver::follow) and stop background
    /// work. The default does nothing.
    fn shutdown(&self) {}
}

/// What a [`FollowFeed`] yields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum FeedItem {
    /// The next stored event (seqs increase; a jump is a gap: events its
    /// writer dropped).
    Event(Event),
    /// The trace was released by its owner: nothing follows for now.
    Released,
}

/// A source of a trace's stored events for
/// [`Engine::follow`](crate::Engine::follow), from
/// [`Driver::follow`]. The engine turns it into a
/// [`Subscription`](crate::Subscription) (cursor, lag, end).
pub trait FollowFeed: Send + std::fmt::Debug {
    /// The next item; `Ready(None)` when the feed ended (the trace was
    /// removed from storage). Registers `cx`'s waker when nothing is ready.
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<FeedItem>>;
}

/// Locks a driver's mutex. A panic while it was held cannot leave the
/// drivers' guarded state (caches, sets of ids) inconsistent, so a poisoned
/// lock is used as it is.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
