//! The embedded key-value store driver, on [fjall] (a pure-Rust LSM tree).
//!
//! Keys follow the reference's scheme (spec §5.3), with the prefix `P`
//! (default `__trace`) and the trace id `T`:
//!
//! | key | value |
//! |---|---|
//! | `P:T:info` | `trace_info.json` document |
//! | `P:T:node:N` | node document |
//! | `P:T:space:S` | space document |
//! | `P:T:space:S:data` | space key-values |
//! | `P:T:logs:<index>` | the log lines of one batch, joined by newlines (index: 20 digits, the first line's position in the trace's log) |
//! | `P:T:events:<seq>` | the events of one batch, joined by newlines (seq: 20 digits, the first event's) |
//! | `P:T:first` | the trace's first batch: a section per key above that it would have written (`<key> <length>\n<bytes>\n`, in write order; `deleted:space:S` for a space deleted within it) |
//! | `P:T:archive` | gzip'd JSON object `{key: value}` of an archived trace |
//!
//! Unlike the reference, events and log lines are appended as one key per
//! batch, so an append is O(1) (never a rewritten array), and every read of
//! a trace is a range scan of `P:T:` only (trace ids cannot contain `:`),
//! never a scan of the store. A new trace's first batch is a single key:
//! a short trace, released before the worker first writes it, costs one
//! insert and one tombstone (plus its index entry) instead of one per
//! document. A key written later (`info`, `node:N`, ...) wins over its
//! section in `first`. A second keyspace (`trace_ids`) indexes trace ids
//! for `list`; a third (`meta`) holds the store's format version.
//!
//! # Format versions
//!
//! Format 1 (tracepool 0.2) had one key per event (`P:T:event:<seq>`) and
//! per log line (`P:T:logs:N:<index>`) and no version key. Format 2 wrote
//! one key per batch of events and of log lines and recorded `format` in
//! the `meta` keyspace. Format 3 (this one) adds `first`. Opening a store
//! of an older format records `format = 3` (so older versions refuse it);
//! its keys are still read (a trace may hold several layouts: events merge
//! by seq, log lines by index), and writing goes on in format 3. A store of
//! a newer format is refused with [`Error::Config`](crate::Error::Config)
//! naming its path and versions.
//!
//! # Writes
//!
//! The engine hands the batches of every trace one worker visits on one
//! wake-up to [`Driver::write_group`]: they become one atomic fjall write
//! batch and one persist per [`Durability`] (`Buffered`: handed to the OS;
//! `Flush`: `fdatasync`; `Fsync`: `fsync`) — group commit. Keys are built
//! in buffers reused across the group.
//!
//! A new trace's first batch ([`WriteBatch::is_new_trace`]) is written only
//! if the store holds no key of that trace (nor does an earlier batch of
//! the group): the check and the commit happen under the driver's creation
//! lock, which every group with such a batch takes, and a fjall store is
//! opened by one process only — so an id collision is
//! [`Error::AlreadyExists`](crate::Error::AlreadyExists) for that batch
//! alone (the rest of the group commits) and never merges two traces.
//!
//! fjall poisons a store whose journal write or sync failed (a full disk):
//! every later write fails. The driver then closes the store and reopens it
//! before its next write (a reopen recovers the journal), so writing resumes
//! once the cause is gone. A failed group can still reach the journal (fjall
//! flushes its buffer when the store is closed) and come back with the
//! reopen: the keys of the traces whose first batch it held are removed
//! right after the reopen, so a failed first write leaves nothing behind
//! and its retry finds nothing.
//!
//! # Memory
//!
//! fjall's memory is bounded by the write buffer
//! ([`StoreOptions::write_buffer`], `EngineBuilder::store_write_buffer`,
//! default 64 MiB): memtables and block cache are sized from it, so the
//! heap levels off within it instead of growing to fjall's defaults
//! (about 165 MiB measured).
//!
//! fjall was chosen over redb by measurement (`docs/kv-choice`): appending
//! events one key each, one transaction per batch, fjall wrote 6x faster
//! without fsync and 1.6x faster with an fsync per batch, while redb's range
//! scans were 1.2-1.4x faster; a trace store writes far more than it reads.

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError, RwLock, RwLockReadGuard};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use super::format::{decode_info, decode_log_line, decode_node, decode_space, decode_space_data};
use super::{DocKind, Driver, Durability, StoredTrace, WriteBatch, lock};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::id::validate_trace_id;
use crate::model::{SpaceData, TraceInfo};

/// The embedded store driver on fjall: the reference's key scheme
/// (`<prefix>:<trace>:info`, `node:<id>`, `space:<id>`, `space:<id>:data`)
/// with one key per batch of events (`events:<first seq>`) and of log
/// lines (`logs:<first index>`), so appends are O(1), and every read of a
/// trace is a range scan of that trace's keys only. A second keyspace
/// indexes trace ids for `list`, a third records the format version (a
/// store of a newer format is refused; one of format 1 is read and
/// upgraded). The batches a worker hands over together
/// ([`Driver::write_group`]) are one atomic write batch, persisted once per
/// [`Durability`]. fjall's memory is bounded by the write buffer
/// ([`StoreOptions::write_buffer`], default 64 MiB). A store poisoned by a
/// failed write (a full disk) is reopened before the next write.
///
/// # Examples
/// ```
/// # fn main() -> tracepool::Result<()> {
/// use tracepool::{Engine, NodeOptions, TraceOptions};
/// let dir = tempfile::tempdir().unwrap();
/// let engine = Engine::builder().workers(1).capacity(4).store(dir.path().join("traces.db")).build()?;
/// let trace = engine.create(TraceOptions::new())?;
/// trace.add("in", NodeOptions::new().label("Step"))?;
/// let id = trace.id().to_owned();
/// trace.release()?;
/// let again = engine.open(&id)?;
/// assert_eq!(again.root()?.unwrap().label, "Step");
/// # Ok(()) }
/// ```
pub struct StoreDriver {
    /// The open store; `None` after a failed reopen (tried again on next use).
    store: RwLock<Option<Store>>,
    /// A write failed: fjall may have poisoned the store; reopen before writing.
    damaged: AtomicBool,
    /// Taken by every new trace's first batch around its check and commit.
    creating: Mutex<()>,
    /// Traces whose first batch failed (it may still have reached the
    /// journal): their keys are removed once the store is reopened.
    orphans: Mutex<HashSet<String>>,
    prefix: String,
    durability: Durability,
    path: PathBuf,
    options: StoreOptions,
    /// Tests: the next commit is written, then reported as failed (as a
    /// batch that reached the journal before its sync failed).
    #[cfg(test)]
    fail_next_commit: AtomicBool,
}

impl std::fmt::Debug for StoreDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreDriver")
            .field("path", &self.path)
            .field("prefix", &self.prefix)
            .field("durability", &self.durability)
            .field("damaged", &self.damaged.load(Ordering::Relaxed))
            .finish()
    }
}

/// The fjall handles of an open store.
struct Store {
    db: Database,
    kv: Keyspace,
    index: Keyspace,
}

/// The store's format: 1, one key per event and per log line, no version
/// key (tracepool 0.2 and earlier); 2, one key per batch of events and of
/// log lines, and the version key `format` in the `meta` keyspace; 3, a new
/// trace's first batch as one `first` key. Older formats are read (and
/// upgraded by writing on in this one); a newer one is refused.
pub(crate) const FORMAT: u64 = 3;
const FORMAT_KEY: &[u8] = b"format";

/// The smallest write buffer (fjall's memtables need some room).
const MIN_WRITE_BUFFER: usize = 4 << 20;

/// Refuses to turn a directory that holds something else (the local
/// driver's trace directories, say, from `--dir` of an older version whose
/// default driver was the local one) into a store: a store is opened only
/// where nothing is yet, or where fjall's `version` file is.
fn refuse_foreign_directory(path: &std::path::Path) -> Result<()> {
    let Ok(mut entries) = std::fs::read_dir(path) else {
        return Ok(()); // missing (created by fjall) or unreadable (fjall says why)
    };
    if entries.next().is_none() || path.join("version").is_file() {
        return Ok(());
    }
    Err(Error::Config(format!(
        "{} is not empty and is not a tracepool store (no fjall `version` file): if it \
         holds traces of the local driver, open it with `.local(dir)` (`--local DIR`)",
        path.display()
    )))
}

impl Store {
    fn open(path: &std::path::Path, options: &StoreOptions) -> Result<Store> {
        let loc = path.display().to_string();
        let fail = |e: fjall::Error| Error::storage(&loc, e.to_string());
        let budget = options.write_buffer as u64;
        // The budget: a quarter for the trace keyspace's memtable, a 32nd
        // for the index's, a 16th for the block cache (fjall seals a full
        // memtable and flushes it in the background while the next one
        // fills). Big memtables are what make the store fast: a trace
        // written and removed within one memtable costs no table writes
        // (measured: 200,000 simple traces in 7.4 s with a quarter of 64
        // MiB, 12.1 s with an eighth; peak heaps 60 and 30 MiB).
        refuse_foreign_directory(path)?;
        // fjall's flushes and compactions run on background threads, one
        // per core up to 4 by default. Half the cores: they compete with
        // the engine's own workers, and with two or more of them fjall's
        // first worker spins re-queuing compaction requests while the
        // others are busy (measured on 2 cores: ~7% of the CPU of a
        // write-and-remove loop).
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let db = Database::builder(path)
            .cache_size(budget / 16)
            .worker_threads((cores / 2).clamp(1, 4))
            .open()
            .map_err(fail)?;
        let memtable = |share: u64| {
            let size = (budget / share).max(1 << 20);
            move || KeyspaceCreateOptions::default().max_memtable_size(size)
        };
        let kv = db.keyspace("trace", memtable(4)).map_err(fail)?;
        let index = db.keyspace("trace_ids", memtable(32)).map_err(fail)?;
        let meta = db.keyspace("meta", memtable(64)).map_err(fail)?;
        match meta.get(FORMAT_KEY).map_err(fail)? {
            Some(v) => {
                let version = std::str::from_utf8(&v)
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or_else(|| {
                        Error::corrupt(format!("{loc}: meta:format"), "bad format version")
                    })?;
                if version > FORMAT {
                    return Err(Error::Config(format!(
                        "the store at {loc} has format version {version}; this tracepool \
                         reads versions 1 to {FORMAT} (a newer tracepool wrote it)"
                    )));
                }
                if version < FORMAT {
                    // Written in this format from now on: older versions
                    // must refuse it.
                    meta.insert(FORMAT_KEY, FORMAT.to_string())
                        .and_then(|()| db.persist(PersistMode::SyncAll))
                        .map_err(fail)?;
                }
            }
            None => {
                // A new store, or one of format 1 (no version key): record
                // the version it is written in from now on.
                meta.insert(FORMAT_KEY, FORMAT.to_string())
                    .and_then(|()| db.persist(PersistMode::SyncAll))
                    .map_err(fail)?;
            }
        }
        Ok(Store { db, kv, index })
    }
}

/// Settings of a [`StoreDriver`] beyond its path and durability, for
/// [`StoreDriver::open_with`].
///
/// # Examples
/// ```
/// # fn main() -> tracepool::Result<()> {
/// use tracepool::{Durability, StoreDriver, StoreOptions};
/// let dir = tempfile::tempdir().unwrap();
/// let options = StoreOptions::new().write_buffer(16 << 20).prefix("app");
/// let driver = StoreDriver::open_with(dir.path().join("db"), Durability::Buffered, options)?;
/// # drop(driver);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct StoreOptions {
    prefix: String,
    write_buffer: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            prefix: "__trace".into(),
            write_buffer: Self::DEFAULT_WRITE_BUFFER,
        }
    }
}

impl StoreOptions {
    /// The default [`write_buffer`](StoreOptions::write_buffer): 64 MiB.
    pub const DEFAULT_WRITE_BUFFER: usize = 64 << 20;

    /// The defaults: prefix `__trace`, a 64 MiB write buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// The key prefix (`[0-9A-Za-z_-]`, like trace ids; default `__trace`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The memory fjall may hold for the store, in bytes (default 64 MiB,
    /// at least 4 MiB): a quarter is the trace keyspace's memtable (the
    /// in-memory part of the LSM tree; a full one is sealed and written to
    /// a table in the background while the next one fills), a 32nd the
    /// index's, a 16th the block cache (read blocks). The store's heap
    /// levels off within this budget (measured: a peak of 60 MiB with the
    /// default over 200,000 persisted-then-removed traces, where fjall's
    /// own defaults grow to about 165 MiB). A bigger buffer is faster for
    /// traces that are removed soon after they are written.
    /// fjall records a keyspace's memtable size when it creates it: for a
    /// store created earlier, only the block cache follows this setting.
    pub fn write_buffer(mut self, bytes: usize) -> Self {
        self.write_buffer = bytes;
        self
    }
}

fn utf8<'a>(bytes: &'a [u8], key: &str) -> Result<&'a str> {
    std::str::from_utf8(bytes).map_err(|_| Error::corrupt(key, "value is not UTF-8"))
}

impl StoreDriver {
    /// Opens (or creates) the store at `path` (a directory) with the default
    /// key prefix `__trace` and a 64 MiB write buffer ([`StoreOptions`]).
    ///
    /// # Errors
    /// `Config` for a store written by a newer tracepool (see
    /// [`open_with`](StoreDriver::open_with)); `Storage` when the store
    /// cannot be opened.
    pub fn open(path: impl Into<PathBuf>, durability: Durability) -> Result<StoreDriver> {
        Self::with_prefix(path, "__trace", durability)
    }

    /// Opens the store with a custom key prefix (`[0-9A-Za-z_-]`, like trace ids).
    ///
    /// # Errors
    /// `Config` for a bad prefix or a store written by a newer tracepool;
    /// `Storage` when the store cannot be opened.
    pub fn with_prefix(
        path: impl Into<PathBuf>,
        prefix: &str,
        durability: Durability,
    ) -> Result<StoreDriver> {
        Self::open_with(path, durability, StoreOptions::new().prefix(prefix))
    }

    /// Opens (or creates) the store at `path` with `options` (key prefix,
    /// write buffer).
    ///
    /// # Errors
    /// `Config` for a bad prefix, a write buffer under 4 MiB, or a store
    /// written by a newer tracepool (a format version this one does not
    /// know); `Corrupt` for an unreadable format version; `Storage` when
    /// the store cannot be opened.
    pub fn open_with(
        path: impl Into<PathBuf>,
        durability: Durability,
        options: StoreOptions,
    ) -> Result<StoreDriver> {
        let prefix = options.prefix.as_str();
        validate_trace_id(prefix)
            .map_err(|_| Error::Config(format!("invalid store key prefix {prefix:?}")))?;
        if options.write_buffer < MIN_WRITE_BUFFER {
            return Err(Error::Config(format!(
                "the store's write buffer must be at least {MIN_WRITE_BUFFER} bytes (4 MiB), not {}",
                options.write_buffer
            )));
        }
        let path = path.into();
        let store = Store::open(&path, &options)?;
        Ok(StoreDriver {
            store: RwLock::new(Some(store)),
            damaged: AtomicBool::new(false),
            creating: Mutex::new(()),
            orphans: Mutex::new(HashSet::new()),
            prefix: options.prefix.clone(),
            durability,
            path,
            options,
            #[cfg(test)]
            fail_next_commit: AtomicBool::new(false),
        })
    }

    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn trace_prefix(&self, id: &str) -> String {
        // One allocation of the exact size (`format!` grows its buffer).
        let mut p = String::with_capacity(self.prefix.len() + id.len() + 2);
        p.push_str(&self.prefix);
        p.push(':');
        p.push_str(id);
        p.push(':');
        p
    }

    /// Runs `f` on the open store, reopening it first if it is closed.
    fn reading<T>(&self, f: impl FnOnce(&Store) -> Result<T>) -> Result<T> {
        let guard = self.opened()?;
        let store = guard.as_ref().ok_or_else(|| self.closed())?;
        f(store)
    }

    /// Runs `f` on the open store, reopening it first if a write failed.
    fn writing<T>(&self, f: impl FnOnce(&Store) -> Result<T>) -> Result<T> {
        if self.damaged.load(Ordering::Acquire) {
            self.reopen()?;
        }
        self.reading(f)
    }

    fn opened(&self) -> Result<RwLockReadGuard<'_, Option<Store>>> {
        let guard = self.store.read().unwrap_or_else(PoisonError::into_inner);
        if guard.is_some() {
            return Ok(guard);
        }
        drop(guard);
        self.reopen()?;
        Ok(self.store.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn closed(&self) -> Error {
        Error::storage(self.location(), "the store is closed after a failed write")
    }

    /// Closes the store and opens it again (fjall recovers its journal),
    /// then removes the keys of failed first batches. A no-op if another
    /// thread reopened it meanwhile.
    fn reopen(&self) -> Result<()> {
        let mut guard = self.store.write().unwrap_or_else(PoisonError::into_inner);
        if guard.is_some() && !self.damaged.load(Ordering::Acquire) {
            return Ok(());
        }
        // The old handles must be gone (they hold the store's lock file)
        // before it can be opened again.
        *guard = None;
        let store = Store::open(&self.path, &self.options)?;
        self.damaged.store(false, Ordering::Release);
        let orphans: Vec<String> = lock(&self.orphans).iter().cloned().collect();
        for id in orphans {
            self.delete_trace(&store, &id)?;
            lock(&self.orphans).remove(&id);
        }
        *guard = Some(store);
        Ok(())
    }

    /// Commits `b` and persists it per the durability level; a failure
    /// marks the store for reopening.
    fn commit(&self, store: &Store, b: fjall::OwnedWriteBatch, location: &str) -> Result<()> {
        let mode = match self.durability {
            Durability::Buffered => PersistMode::Buffer,
            Durability::Flush => PersistMode::SyncData,
            Durability::Fsync => PersistMode::SyncAll,
        };
        let r = b
            .commit()
            .and_then(|()| store.db.persist(mode))
            .map_err(|e| Error::storage(location, e.to_string()));
        #[cfg(test)]
        let r = r.and_then(|()| {
            if self.fail_next_commit.swap(false, Ordering::AcqRel) {
                return Err(Error::storage(location, "injected failure"));
            }
            Ok(())
        });
        if r.is_err() {
            self.damaged.store(true, Ordering::Release);
        }
        r
    }

    /// Every key/value of one trace (range scan of `P:T:`), keys without the prefix.
    fn scan(&self, store: &Store, id: &str) -> Result<BTreeMap<String, Vec<u8>>> {
        let prefix = self.trace_prefix(id);
        let mut out = BTreeMap::new();
        for guard in store.kv.prefix(prefix.as_bytes()) {
            let (k, v) = guard
                .into_inner()
                .map_err(|e| Error::storage(&prefix, e.to_string()))?;
            let key = utf8(&k, &prefix)?;
            out.insert(key[prefix.len()..].to_owned(), v.to_vec());
        }
        Ok(out)
    }

    /// Whether the store holds anything of trace `id`.
    fn holds(&self, store: &Store, id: &str) -> Result<bool> {
        // A range probe of the trace's keys, not the index: a later batch
        // racing a `remove` can leave keys without an info document or an
        // index entry, and a new trace must not merge with them. (The
        // index lookup would save ~0.4 µs per new trace.)
        let prefix = self.trace_prefix(id);
        match store.kv.prefix(prefix.as_bytes()).next() {
            Some(g) => {
                g.key()
                    .map_err(|e| Error::storage(&prefix, e.to_string()))?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Deletes every key of trace `id`; `false` if there was none.
    fn delete_trace(&self, store: &Store, id: &str) -> Result<bool> {
        let p = self.trace_prefix(id);
        let mut b = store.db.batch();
        let mut keys = 0;
        for guard in store.kv.prefix(p.as_bytes()) {
            let k = guard.key().map_err(|e| Error::storage(&p, e.to_string()))?;
            b.remove(&store.kv, k);
            keys += 1;
        }
        // The index is looked up only when no key was found (a trace with
        // keys is indexed, or its index entry is gone: removing it again is
        // harmless).
        if keys == 0
            && !store
                .index
                .contains_key(id.as_bytes())
                .map_err(|e| Error::storage(id, e.to_string()))?
        {
            return Ok(false);
        }
        b.remove(&store.index, id.as_bytes());
        self.commit(store, b, &p)?;
        Ok(true)
    }

    fn archived_map(&self, store: &Store, id: &str) -> Result<Option<BTreeMap<String, Vec<u8>>>> {
        let key = format!("{}archive", self.trace_prefix(id));
        let Some(bytes) = store
            .kv
            .get(key.as_bytes())
            .map_err(|e| Error::storage(&key, e.to_string()))?
        else {
            return Ok(None);
        };
        let mut json = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_end(&mut json)
            .map_err(|e| Error::corrupt(&key, format!("bad archive: {e}")))?;
        let map: BTreeMap<String, String> = serde_json::from_slice(&json)
            .map_err(|e| Error::corrupt(&key, format!("bad archive: {e}")))?;
        Ok(Some(
            map.into_iter().map(|(k, v)| (k, v.into_bytes())).collect(),
        ))
    }

    /// The trace's keys: live ones, or the archived ones, with a `first`
    /// key replaced by the keys it stands for (their names returned too).
    fn trace_map(&self, store: &Store, id: &str) -> Result<TraceMap> {
        let mut map = self.scan(store, id)?;
        if map.contains_key("archive") {
            map = self.archived_map(store, id)?.unwrap_or_default();
        }
        let sections = explode_first(&mut map, &format!("{}first", self.trace_prefix(id)))?;
        Ok((map, sections))
    }

    fn decode(&self, id: &str, (map, sections): TraceMap) -> Result<Option<StoredTrace>> {
        let p = self.trace_prefix(id);
        let Some(info) = map.get("info") else {
            return Ok(None);
        };
        let (info, root, current) = decode_info(info, &value_location(&p, "info", &sections))?;
        let mut nodes = Vec::new();
        let mut logs = BTreeMap::new();
        let mut spaces: Vec<SpaceData> = Vec::new();
        let mut events: BTreeMap<u64, (Event, String)> = BTreeMap::new();
        let mut data: BTreeMap<String, serde_json::Map<String, serde_json::Value>> =
            BTreeMap::new();
        for (k, v) in &map {
            let loc = value_location(&p, k, &sections);
            let parts: Vec<&str> = k.split(':').collect();
            match parts.as_slice() {
                ["info"] => {}
                ["node", _] => nodes.push(decode_node(v, &loc)?),
                ["space", _] => spaces.push(SpaceData {
                    info: decode_space(v, &loc)?,
                    data: Default::default(),
                }),
                ["space", s, "data"] => {
                    data.insert((*s).to_owned(), decode_space_data(v, &loc)?);
                }
                // Format 1: one key per log line and per event.
                ["logs", _, index] => {
                    let index: u64 = index
                        .parse()
                        .map_err(|_| Error::corrupt(&loc, "bad log index"))?;
                    logs.insert(index, decode_log_line(v, &loc)?);
                }
                ["event", seq] => {
                    let seq: u64 = seq
                        .parse()
                        .map_err(|_| Error::corrupt(&loc, "bad event seq"))?;
                    let mut ev = Event::from_json(v, &loc)?;
                    if ev.seq == 0 {
                        ev = ev.numbered(seq);
                    }
                    events.insert(ev.seq, (ev, loc));
                }
                // Format 2: one key per batch, lines joined by newlines.
                ["logs", first] => {
                    let first: u64 = first
                        .parse()
                        .map_err(|_| Error::corrupt(&loc, "bad log index"))?;
                    for (i, line) in v.split(|b| *b == b'\n').enumerate() {
                        logs.insert(first + i as u64, decode_log_line(line, &loc)?);
                    }
                }
                ["events", first] => {
                    let first: u64 = first
                        .parse()
                        .map_err(|_| Error::corrupt(&loc, "bad event seq"))?;
                    for (i, line) in v.split(|b| *b == b'\n').enumerate() {
                        let ev = Event::from_json(line, &loc)?;
                        if ev.seq != first + i as u64 {
                            return Err(Error::corrupt(
                                &loc,
                                format!("event seq {} in a batch from {first}", ev.seq),
                            ));
                        }
                        events.insert(ev.seq, (ev, loc.clone()));
                    }
                }
                _ => return Err(Error::corrupt(&loc, "unexpected key")),
            }
        }
        for s in &mut spaces {
            if let Some(d) = data.remove(&s.info.id) {
                s.data = d;
            }
        }
        spaces.sort_by_key(|s| s.info.created_at);
        // Keys are sorted by node (format 1) or batch; a line's index
        // restores the write order (a batch written again after a failure
        // that still reached the store holds the same lines).
        let logs = logs.into_values().collect();
        let mut numbered = Vec::with_capacity(events.len());
        for (seq, (ev, loc)) in events {
            let expect = numbered.len() as u64 + 1;
            if seq != expect {
                return Err(Error::corrupt(
                    &loc,
                    format!("event seq {seq} where {expect} was expected"),
                ));
            }
            numbered.push(ev);
        }
        let events = numbered;
        let loc = |n: &str| value_location(&p, &format!("node:{n}"), &sections);
        StoredTrace::assemble(info, root, current, nodes, logs, spaces, events, &loc).map(Some)
    }

    fn check(&self, id: &str) -> Result<()> {
        validate_trace_id(id)
    }

    /// Adds the keys of `batch` to the fjall batch `b` (`key`, `value`:
    /// reused buffers).
    fn build(
        &self,
        store: &Store,
        b: &mut fjall::OwnedWriteBatch,
        batch: &WriteBatch<'_>,
        key: &mut Vec<u8>,
        value: &mut Vec<u8>,
    ) {
        key.clear();
        key.extend_from_slice(self.prefix.as_bytes());
        key.push(b':');
        key.extend_from_slice(batch.trace_id.as_bytes());
        key.push(b':');
        let base = key.len();
        if batch.is_new_trace() {
            // A new trace's first batch is one key (`first`): one insert
            // and, on removal, one tombstone for what is often the whole
            // trace (a short trace released before its first flush).
            key.extend_from_slice(b"first");
            value.clear();
            encode_first(batch, value);
            b.insert(&store.kv, &key[..], &value[..]);
            if batch.docs().any(|d| matches!(d.kind, DocKind::Info)) {
                b.insert(&store.index, batch.trace_id.as_bytes(), b"");
            }
            return;
        }
        let with = |key: &mut Vec<u8>, parts: &[&[u8]]| {
            key.truncate(base);
            for part in parts {
                key.extend_from_slice(part);
            }
        };
        // A batch's events are one key (`events:<first seq>`, the lines
        // joined by newlines), and so are its log lines.
        let mut events = batch.events();
        if let Some(first) = events.next() {
            with(key, &[b"events:"]);
            push_padded(key, first.seq);
            value.clear();
            value.extend_from_slice(first.bytes);
            for ev in events {
                value.push(b'\n');
                value.extend_from_slice(ev.bytes);
            }
            b.insert(&store.kv, &key[..], &value[..]);
        }
        let mut lines = batch.log_lines();
        if let Some(first) = lines.next() {
            with(key, &[b"logs:"]);
            push_padded(key, first.index);
            value.clear();
            value.extend_from_slice(first.bytes);
            for line in lines {
                value.push(b'\n');
                value.extend_from_slice(line.bytes);
            }
            b.insert(&store.kv, &key[..], &value[..]);
        }
        for doc in batch.docs() {
            let id = doc.id.as_bytes();
            match doc.kind {
                DocKind::Info => {
                    with(key, &[b"info"]);
                    b.insert(&store.index, batch.trace_id.as_bytes(), b"");
                }
                DocKind::Node => with(key, &[b"node:", id]),
                DocKind::Space => with(key, &[b"space:", id]),
                DocKind::SpaceData => with(key, &[b"space:", id, b":data"]),
                DocKind::SpaceDeleted => {
                    with(key, &[b"space:", id]);
                    b.remove(&store.kv, &key[..]);
                    with(key, &[b"space:", id, b":data"]);
                    b.remove(&store.kv, &key[..]);
                    continue;
                }
            }
            b.insert(&store.kv, &key[..], doc.bytes);
        }
    }

    /// Writes every batch of `batches` (of distinct traces) that is valid,
    /// not empty and, for a new trace, whose trace the store does not hold,
    /// in one fjall batch and one persist; `results[i]` (already `Ok` or
    /// the batch's error) becomes the outcome of `batches[i]`.
    fn write_all(&self, batches: &[WriteBatch<'_>], results: &mut [Result<()>]) {
        let new = batches
            .iter()
            .zip(results.iter())
            .any(|(b, r)| r.is_ok() && !b.is_empty() && b.is_new_trace());
        // A new trace: nothing of it may exist, checked and committed under
        // the creation lock that every new trace's first batch takes.
        let _creating = new.then(|| lock(&self.creating));
        let r = self.writing(|store| {
            let mut b = store.db.batch();
            let mut key = Vec::with_capacity(self.prefix.len() + 128);
            let mut value = Vec::new();
            // The ids written by this group (a new trace must not collide
            // with one of them either); only built for several batches.
            let cap = if batches.len() > 1 { batches.len() } else { 0 };
            let mut ids: HashSet<&str> = HashSet::with_capacity(cap);
            let mut written = 0;
            for (batch, r) in batches.iter().zip(results.iter_mut()) {
                if r.is_err() || batch.is_empty() {
                    continue;
                }
                let id = batch.trace_id;
                if batch.is_new_trace() {
                    match self.holds(store, id) {
                        Ok(false) if !ids.contains(id) => {}
                        Ok(_) => {
                            *r = Err(Error::AlreadyExists);
                            continue;
                        }
                        Err(e) => {
                            *r = Err(e);
                            continue;
                        }
                    }
                }
                if batches.len() > 1 {
                    ids.insert(id);
                }
                self.build(store, &mut b, batch, &mut key, &mut value);
                written += 1;
            }
            if written == 0 {
                return Ok(());
            }
            let location = match batches {
                [one] => self.trace_prefix(one.trace_id),
                _ => self.location(),
            };
            let r = self.commit(store, b, &location);
            if let Err(e) = &r {
                // A failed batch may still reach the journal (fjall flushes
                // its buffer when the store is closed) and come back on
                // reopen. If it was a trace's first, remove it after the
                // reopen, so that no trace whose first write failed is
                // left behind.
                let message = e.to_string();
                for (batch, r) in batches.iter().zip(results.iter_mut()) {
                    if r.is_err() || batch.is_empty() {
                        continue;
                    }
                    let id = batch.trace_id;
                    if batch.is_new_trace() || !self.holds(store, id).unwrap_or(true) {
                        lock(&self.orphans).insert(id.to_owned());
                    }
                    *r = Err(Error::storage(self.trace_prefix(id), message.clone()));
                }
            }
            Ok(())
        });
        if let Err(e) = r {
            // The store could not be (re)opened: nothing was written.
            let message = e.to_string();
            for (batch, r) in batches.iter().zip(results.iter_mut()) {
                if r.is_ok() && !batch.is_empty() {
                    *r = Err(Error::storage(self.location(), message.clone()));
                }
            }
        }
    }
}

/// Appends `n` as 20 decimal digits (zero-padded: keys sort by number).
fn push_padded(key: &mut Vec<u8>, mut n: u64) {
    let start = key.len();
    key.resize(start + 20, b'0');
    let mut i = key.len();
    while n > 0 {
        i -= 1;
        key[i] = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// Appends the header of one section of a `first` value: the name parts,
/// a space, the body's length and a newline (then come the body and a
/// newline).
fn push_header(out: &mut Vec<u8>, name: &[&[u8]], len: usize) {
    for part in name {
        out.extend_from_slice(part);
    }
    out.push(b' ');
    let mut digits = itoa::Buffer::new();
    out.extend_from_slice(digits.format(len).as_bytes());
    out.push(b'\n');
}

/// Appends one section (`<name> <length>\n<bytes>\n`) whose body is the
/// `parts` joined by newlines, without copying them twice.
fn push_joined<'b, I: Iterator<Item = &'b [u8]>>(
    out: &mut Vec<u8>,
    name: &[&[u8]],
    parts: impl Fn() -> I,
) {
    let len = parts()
        .map(|p| p.len() + 1)
        .sum::<usize>()
        .saturating_sub(1);
    push_header(out, name, len);
    for (i, part) in parts().enumerate() {
        if i > 0 {
            out.push(b'\n');
        }
        out.extend_from_slice(part);
    }
    out.push(b'\n');
}

/// Encodes a new trace's first batch as one value: a section per key it
/// would have had in format 2 (`events:<seq>`, `logs:<index>`, `info`,
/// `node:<id>`, `space:<id>`, `space:<id>:data`; a deleted space is a
/// `deleted:space:<id>` section), named as that key, in write order.
fn encode_first(batch: &WriteBatch<'_>, out: &mut Vec<u8>) {
    let mut number = Vec::with_capacity(20);
    if let Some(first) = batch.events().next() {
        number.clear();
        push_padded(&mut number, first.seq);
        push_joined(out, &[b"events:", &number], || {
            batch.events().map(|e| e.bytes)
        });
    }
    if let Some(first) = batch.log_lines().next() {
        number.clear();
        push_padded(&mut number, first.index);
        push_joined(out, &[b"logs:", &number], || {
            batch.log_lines().map(|l| l.bytes)
        });
    }
    for doc in batch.docs() {
        let id = doc.id.as_bytes();
        let name: &[&[u8]] = match doc.kind {
            DocKind::Info => &[b"info"],
            DocKind::Node => &[b"node:", id],
            DocKind::Space => &[b"space:", id],
            DocKind::SpaceData => &[b"space:", id, b":data"],
            DocKind::SpaceDeleted => &[b"deleted:space:", id],
        };
        push_joined(out, name, || std::iter::once(doc.bytes));
    }
}

/// Replaces the `first` key of a trace's key map by the keys its sections
/// stand for; a key written on its own wins over the section (it was
/// written later: `first` is the trace's first batch). Returns the names
/// taken from sections (their location is `first`, not a key of their own).
fn explode_first(map: &mut BTreeMap<String, Vec<u8>>, loc: &str) -> Result<HashSet<String>> {
    let mut taken = HashSet::new();
    let Some(value) = map.remove("first") else {
        return Ok(taken);
    };
    let mut sections: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut rest = &value[..];
    while !rest.is_empty() {
        let bad = || Error::corrupt(loc, "bad first-batch section");
        let eol = rest.iter().position(|b| *b == b'\n').ok_or_else(bad)?;
        let header = std::str::from_utf8(&rest[..eol]).map_err(|_| bad())?;
        let (name, len) = header.rsplit_once(' ').ok_or_else(bad)?;
        let len: usize = len.parse().map_err(|_| bad())?;
        let end = (eol + 1).checked_add(len).ok_or_else(bad)?;
        let body = rest.get(eol + 1..end).ok_or_else(bad)?;
        if rest.get(end) != Some(&b'\n') {
            return Err(bad());
        }
        rest = &rest[end + 1..];
        if let Some(space) = name.strip_prefix("deleted:") {
            sections.remove(space);
            sections.remove(&format!("{space}:data"));
        } else {
            sections.insert(name.to_owned(), body.to_vec());
        }
    }
    for (name, body) in sections {
        if let std::collections::btree_map::Entry::Vacant(v) = map.entry(name) {
            taken.insert(v.key().clone());
            v.insert(body);
        }
    }
    Ok(taken)
}

/// A trace's values by key name (without the `P:T:` prefix), and the names
/// that were sections of its `first` key.
type TraceMap = (BTreeMap<String, Vec<u8>>, HashSet<String>);

/// Where a value of a trace's key map is stored: its own key `P:T:<name>`,
/// or a section of `P:T:first`.
fn value_location(prefix: &str, name: &str, sections: &HashSet<String>) -> String {
    if sections.contains(name) {
        format!("{prefix}first (section {name})")
    } else {
        format!("{prefix}{name}")
    }
}

impl Driver for StoreDriver {
    fn name(&self) -> &'static str {
        "store"
    }

    fn wants_documents(&self) -> bool {
        true
    }

    fn write(&self, batch: &WriteBatch<'_>) -> Result<()> {
        let mut results = [self.check(batch.trace_id)];
        if results[0].is_ok() && !batch.is_empty() {
            self.write_all(std::slice::from_ref(batch), &mut results);
        }
        let [r] = results;
        r
    }

    /// One fjall batch and one persist (per [`Durability`]) for the whole
    /// group; a new trace that collides gets `AlreadyExists` while the
    /// others commit.
    fn commits_groups(&self) -> bool {
        true
    }

    fn flushes_on_caller(&self) -> bool {
        true
    }

    fn write_group(&self, batches: &[WriteBatch<'_>], results: &mut Vec<Result<()>>) {
        let start = results.len();
        results.extend(batches.iter().map(|b| self.check(b.trace_id)));
        let results = &mut results[start..];
        if batches
            .iter()
            .zip(results.iter())
            .any(|(b, r)| r.is_ok() && !b.is_empty())
        {
            self.write_all(batches, results);
        }
    }

    fn exists(&self, trace_id: &str) -> Result<bool> {
        self.check(trace_id)?;
        self.reading(|store| {
            store
                .index
                .contains_key(trace_id.as_bytes())
                .map_err(|e| Error::storage(trace_id, e.to_string()))
        })
    }

    fn info(&self, trace_id: &str) -> Result<Option<TraceInfo>> {
        self.check(trace_id)?;
        let key = format!("{}info", self.trace_prefix(trace_id));
        self.reading(|store| {
            if let Some(v) = store
                .kv
                .get(key.as_bytes())
                .map_err(|e| Error::storage(&key, e.to_string()))?
            {
                return Ok(Some(decode_info(&v, &key)?.0));
            }
            // Written only in the trace's first batch: inside `first`.
            let first = format!("{}first", self.trace_prefix(trace_id));
            if let Some(v) = store
                .kv
                .get(first.as_bytes())
                .map_err(|e| Error::storage(&first, e.to_string()))?
            {
                let mut map = BTreeMap::from([("first".to_owned(), v.to_vec())]);
                let sections = explode_first(&mut map, &first)?;
                if let Some(info) = map.get("info") {
                    let loc = value_location(&self.trace_prefix(trace_id), "info", &sections);
                    return Ok(Some(decode_info(info, &loc)?.0));
                }
            }
            match self.archived_map(store, trace_id)? {
                Some(map) => match map.get("info") {
                    Some(v) => Ok(Some(decode_info(v, &key)?.0)),
                    None => Err(Error::corrupt(
                        format!("{}archive", self.trace_prefix(trace_id)),
                        "archive has no info",
                    )),
                },
                None => Ok(None),
            }
        })
    }

    fn load(&self, trace_id: &str) -> Result<Option<StoredTrace>> {
        self.check(trace_id)?;
        let map = self.reading(|store| self.trace_map(store, trace_id))?;
        self.decode(trace_id, map)
    }

    fn remove(&self, trace_id: &str) -> Result<bool> {
        self.check(trace_id)?;
        self.writing(|store| self.delete_trace(store, trace_id))
    }

    fn list(&self) -> Result<Vec<String>> {
        self.reading(|store| {
            let mut ids = Vec::new();
            for guard in store.index.iter() {
                let k = guard
                    .key()
                    .map_err(|e| Error::storage("trace_ids", e.to_string()))?;
                ids.push(utf8(&k, "trace_ids")?.to_owned());
            }
            Ok(ids)
        })
    }

    /// Moves every key of the trace into one gzip'd archive value, in one
    /// atomic batch (the archive is verified before the batch is built).
    fn archive(&self, trace_id: &str) -> Result<()> {
        self.check(trace_id)?;
        let p = self.trace_prefix(trace_id);
        self.writing(|store| {
            let stored = self.scan(store, trace_id)?;
            if stored.contains_key("archive") {
                return Err(Error::storage(
                    format!("{p}archive"),
                    "trace is already archived",
                ));
            }
            let mut live = stored.clone();
            explode_first(&mut live, &format!("{p}first"))?;
            let Some(info) = live.get("info") else {
                return Err(Error::NotFound);
            };
            let mut info: serde_json::Value = serde_json::from_slice(info)
                .map_err(|e| Error::corrupt(format!("{p}info"), e.to_string()))?;
            info["archived"] = serde_json::Value::Bool(true);
            info["archived_at"] = serde_json::Value::from(crate::id::now_ms());
            let info =
                serde_json::to_vec_pretty(&info).map_err(|e| Error::storage(&p, e.to_string()))?;
            live.insert("info".to_owned(), info);
            let as_text: BTreeMap<&str, &str> = live
                .iter()
                .map(|(k, v)| Ok((k.as_str(), utf8(v, &format!("{p}{k}"))?)))
                .collect::<Result<_>>()?;
            let json =
                serde_json::to_vec(&as_text).map_err(|e| Error::storage(&p, e.to_string()))?;
            let archive_key = format!("{p}archive");
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            gz.write_all(&json)
                .and_then(|_| gz.try_finish())
                .map_err(|e| Error::storage(&archive_key, e.to_string()))?;
            let packed = gz
                .finish()
                .map_err(|e| Error::storage(&archive_key, e.to_string()))?;
            // Verify before anything is deleted.
            let mut check = Vec::new();
            flate2::read::GzDecoder::new(&packed[..])
                .read_to_end(&mut check)
                .map_err(|e| Error::storage(&archive_key, e.to_string()))?;
            if check != json {
                return Err(Error::storage(&archive_key, "archive verification failed"));
            }
            let mut b = store.db.batch();
            for k in stored.keys() {
                b.remove(&store.kv, format!("{p}{k}").as_bytes());
            }
            b.insert(&store.kv, archive_key.as_bytes(), packed);
            self.commit(store, b, &p)
        })
    }

    fn flush(&self) -> Result<()> {
        self.writing(|store| {
            store
                .db
                .persist(PersistMode::SyncAll)
                .map_err(|e| Error::storage(self.location(), e.to_string()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::test_batch::TestBatch;

    const ID: &str = "store-test-trace";
    const NODE: &str = "node00000001";

    fn first(new: bool) -> TestBatch {
        TestBatch::new(ID, new)
            .event(1, "")
            .event(2, NODE)
            .node(NODE)
            .log(NODE)
            .info(Some(NODE))
    }

    fn keys(d: &StoreDriver) -> BTreeMap<String, Vec<u8>> {
        d.reading(|s| d.scan(s, ID)).unwrap()
    }

    #[test]
    fn a_directory_of_something_else_is_not_made_a_store() {
        let dir = tempfile::tempdir().unwrap();
        // A local-driver base: a shard directory with a trace in it.
        std::fs::create_dir_all(dir.path().join("20261129/20261129000000000001")).unwrap();
        let r = StoreDriver::open(dir.path(), Durability::Buffered);
        assert!(
            matches!(&r, Err(Error::Config(m)) if m.contains("--local")),
            "{r:?}"
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "untouched"
        );
        // An empty directory and an existing store open.
        let empty = tempfile::tempdir().unwrap();
        drop(StoreDriver::open(empty.path(), Durability::Buffered).unwrap());
        StoreDriver::open(empty.path(), Durability::Buffered).unwrap();
    }

    #[test]
    fn a_new_trace_is_created_only_if_nothing_of_it_exists() {
        let tmp = tempfile::tempdir().unwrap();
        let d = StoreDriver::open(tmp.path().join("db"), Durability::Buffered).unwrap();
        d.write(&first(true).batch()).unwrap();
        assert_eq!(d.load(ID).unwrap().unwrap().events.len(), 2);
        let before = keys(&d);
        // A colliding new trace writes nothing.
        let other = TestBatch::new(ID, true).event(1, "").info(None);
        assert!(matches!(d.write(&other.batch()), Err(Error::AlreadyExists)));
        assert_eq!(keys(&d), before);
        // An archived one counts too.
        d.archive(ID).unwrap();
        let before = keys(&d);
        assert!(matches!(
            d.write(&first(true).batch()),
            Err(Error::AlreadyExists)
        ));
        assert_eq!(keys(&d), before);
        // So does a trace whose info was never written (events only).
        d.remove(ID).unwrap();
        d.write(&TestBatch::new(ID, false).event(1, "").batch())
            .unwrap();
        assert!(matches!(
            d.write(&first(true).batch()),
            Err(Error::AlreadyExists)
        ));
        // After remove, the id is free again.
        d.remove(ID).unwrap();
        d.write(&first(true).batch()).unwrap();
        assert!(d.exists(ID).unwrap());
    }

    fn trace(id: &str, new: bool) -> TestBatch {
        TestBatch::new(id, new).event(1, "").info(None)
    }

    fn group(d: &StoreDriver, batches: &[&TestBatch]) -> Vec<Result<()>> {
        let batches: Vec<WriteBatch<'_>> = batches.iter().map(|b| b.batch()).collect();
        let mut results = Vec::new();
        d.write_group(&batches, &mut results);
        assert_eq!(results.len(), batches.len());
        results
    }

    #[test]
    fn a_group_commits_all_but_the_colliding_new_trace() {
        let tmp = tempfile::tempdir().unwrap();
        let d = StoreDriver::open(tmp.path().join("db"), Durability::Flush).unwrap();
        d.write(&first(true).batch()).unwrap();
        let before = keys(&d);
        let (a, b) = (trace("group-a", true), trace("group-b", true));
        let more = TestBatch::new(ID, false).event(3, NODE);
        // ID collides; a, b and the next batch of an existing trace commit.
        let colliding = first(true);
        let r = group(&d, &[&a, &colliding, &b]);
        assert!(r[0].is_ok() && r[2].is_ok(), "{r:?}");
        assert!(matches!(r[1], Err(Error::AlreadyExists)));
        assert_eq!(keys(&d), before);
        assert!(d.exists("group-a").unwrap() && d.exists("group-b").unwrap());
        let r = group(
            &d,
            &[
                &more,
                &TestBatch::new("empty", true),
                &trace("bad id!", true),
            ],
        );
        assert!(r[0].is_ok() && r[1].is_ok(), "{r:?}");
        assert!(matches!(r[2], Err(Error::InvalidId)), "{r:?}");
        assert_eq!(d.load(ID).unwrap().unwrap().events.len(), 3);
        assert!(!d.exists("empty").unwrap());
        // Two new traces of one id in one group: the second collides.
        let r = group(&d, &[&trace("twice", true), &trace("twice", true)]);
        assert!(
            r[0].is_ok() && matches!(r[1], Err(Error::AlreadyExists)),
            "{r:?}"
        );
        let mut ids = d.list().unwrap();
        ids.sort();
        assert_eq!(ids, ["group-a", "group-b", ID, "twice"]);
    }

    #[test]
    fn a_failed_group_leaves_no_first_batch_behind() {
        let tmp = tempfile::tempdir().unwrap();
        let d = StoreDriver::open(tmp.path().join("db"), Durability::Buffered).unwrap();
        d.write(&first(true).batch()).unwrap();
        let (a, b) = (trace("failed-a", true), trace("failed-b", true));
        let more = TestBatch::new(ID, false).event(3, NODE);
        // The batch reaches the journal, then its persist "fails".
        d.fail_next_commit.store(true, Ordering::Release);
        let r = group(&d, &[&a, &more, &b]);
        assert!(
            r.iter().all(|r| matches!(r, Err(Error::Storage { .. }))),
            "{r:?}"
        );
        // The next write reopens the store and removes the new traces' keys.
        d.write(&trace("other", true).batch()).unwrap();
        for id in ["failed-a", "failed-b"] {
            assert!(!d.exists(id).unwrap(), "{id}");
            assert!(d.reading(|s| d.scan(s, id)).unwrap().is_empty(), "{id}");
        }
        // The existing trace stays; the retried group succeeds.
        assert!(d.exists(ID).unwrap());
        let r = group(&d, &[&a, &b]);
        assert!(r.iter().all(Result::is_ok), "{r:?}");
        assert!(d.exists("failed-a").unwrap() && d.exists("failed-b").unwrap());
    }

    #[test]
    fn the_format_version_is_recorded_and_a_newer_one_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("db");
        // A store of format 1: today's keys, no version key, written
        // directly through fjall.
        {
            let db = Database::builder(&path).open().unwrap();
            let kv = db
                .keyspace("trace", KeyspaceCreateOptions::default)
                .unwrap();
            let index = db
                .keyspace("trace_ids", KeyspaceCreateOptions::default)
                .unwrap();
            let t = first(true);
            let batch = t.batch();
            let p = format!("__trace:{ID}:");
            for ev in batch.events() {
                kv.insert(format!("{p}event:{:020}", ev.seq), ev.bytes)
                    .unwrap();
            }
            for line in batch.log_lines() {
                kv.insert(
                    format!("{p}logs:{}:{:020}", line.node_id, line.index),
                    line.bytes,
                )
                .unwrap();
            }
            for doc in batch.docs() {
                let key = match doc.kind {
                    DocKind::Info => format!("{p}info"),
                    DocKind::Node => format!("{p}node:{}", doc.id),
                    _ => unreachable!(),
                };
                kv.insert(key, doc.bytes).unwrap();
            }
            index.insert(ID, b"").unwrap();
            db.persist(PersistMode::SyncAll).unwrap();
        }
        // Its traces load as the same batch written by the driver does.
        let fresh = tempfile::tempdir().unwrap();
        let d = StoreDriver::open(fresh.path().join("db"), Durability::Buffered).unwrap();
        d.write(&first(true).batch()).unwrap();
        let expected = format!("{:?}", d.load(ID).unwrap().unwrap());
        drop(d);
        let d = StoreDriver::open(&path, Durability::Buffered).unwrap();
        assert_eq!(format!("{:?}", d.load(ID).unwrap().unwrap()), expected);
        assert_eq!(d.list().unwrap(), [ID]);
        let version = |d: &StoreDriver| {
            d.reading(|s| {
                let meta =
                    s.db.keyspace("meta", KeyspaceCreateOptions::default)
                        .unwrap();
                Ok(meta.get(FORMAT_KEY).unwrap().map(|v| v.to_vec()))
            })
            .unwrap()
        };
        // Opening it recorded the version.
        assert_eq!(version(&d), Some(FORMAT.to_string().into_bytes()));
        // Later batches are written in format 3; both layouts read as one.
        d.write(&TestBatch::new(ID, false).event(3, NODE).batch())
            .unwrap();
        let t = d.load(ID).unwrap().unwrap();
        let seqs: Vec<u64> = t.events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [1, 2, 3]);
        assert_eq!(t.logs.len(), 1);
        let keys: Vec<String> = keys(&d).into_keys().collect();
        assert!(keys.contains(&format!("events:{:020}", 3)), "{keys:?}");
        assert!(keys.contains(&format!("event:{:020}", 1)), "{keys:?}");
        drop(d);
        // A newer format is refused, naming the path and both versions.
        {
            let db = Database::builder(&path).open().unwrap();
            let meta = db.keyspace("meta", KeyspaceCreateOptions::default).unwrap();
            meta.insert(FORMAT_KEY, b"4").unwrap();
            db.persist(PersistMode::SyncAll).unwrap();
        }
        match StoreDriver::open(&path, Durability::Buffered) {
            Err(Error::Config(m)) => {
                assert!(m.contains(&path.display().to_string()), "{m}");
                assert!(m.contains("version 4") && m.contains("1 to 3"), "{m}");
            }
            other => panic!("a newer format opened: {other:?}"),
        }
    }

    #[test]
    fn a_format_2_store_is_read_and_upgraded() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("db");
        // Format 2: a trace's first batch in one key per kind (what a
        // later batch still writes), and `format = 2`.
        let expected = {
            let d = StoreDriver::open(&path, Durability::Buffered).unwrap();
            d.write(&first(false).batch()).unwrap();
            assert!(!keys(&d).contains_key("first"));
            d.reading(|s| {
                let meta =
                    s.db.keyspace("meta", KeyspaceCreateOptions::default)
                        .unwrap();
                meta.insert(FORMAT_KEY, b"2").unwrap();
                s.db.persist(PersistMode::SyncAll).unwrap();
                Ok(())
            })
            .unwrap();
            format!("{:?}", d.load(ID).unwrap().unwrap())
        };
        let d = StoreDriver::open(&path, Durability::Buffered).unwrap();
        assert_eq!(format!("{:?}", d.load(ID).unwrap().unwrap()), expected);
        let version = d
            .reading(|s| {
                let meta =
                    s.db.keyspace("meta", KeyspaceCreateOptions::default)
                        .unwrap();
                Ok(meta.get(FORMAT_KEY).unwrap().map(|v| v.to_vec()))
            })
            .unwrap();
        assert_eq!(version, Some(b"3".to_vec()));
        // A new trace is written in format 3 next to it; both read.
        d.write(&trace("other", true).batch()).unwrap();
        assert!(
            d.reading(|s| Ok(s.kv.contains_key("__trace:other:first").unwrap()))
                .unwrap()
        );
        assert_eq!(d.list().unwrap(), ["other", ID]);
        assert_eq!(d.info("other").unwrap().unwrap().id, "other");
        assert_eq!(d.info(ID).unwrap().unwrap().id, ID);
    }

    #[test]
    fn the_write_buffer_is_validated() {
        let tmp = tempfile::tempdir().unwrap();
        for bytes in [0, 1 << 20] {
            let options = StoreOptions::new().write_buffer(bytes);
            let r = StoreDriver::open_with(tmp.path().join("db"), Durability::Buffered, options);
            assert!(matches!(r, Err(Error::Config(_))), "{bytes}: {r:?}");
        }
        let r = crate::Engine::builder()
            .store(tmp.path().join("db"))
            .store_write_buffer(0)
            .build();
        assert!(matches!(r, Err(Error::Config(_))));
        let options = StoreOptions::new().write_buffer(8 << 20).prefix("p");
        let d =
            StoreDriver::open_with(tmp.path().join("db"), Durability::Buffered, options).unwrap();
        d.write(&trace("small", true).batch()).unwrap();
        assert!(d.exists("small").unwrap());
    }

    proptest::proptest! {
        /// `first` values that do not parse (random bytes, or a valid one
        /// truncated or with a byte changed) fail with `Corrupt` at the
        /// location given, never panic; a valid one yields its keys.
        #[test]
        fn first_values_never_panic(
            noise in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
            cut in 0usize..4096,
            flip in 0usize..4096,
            byte in proptest::num::u8::ANY,
        ) {
            let t = first(true);
            let mut valid = Vec::new();
            encode_first(&t.batch(), &mut valid);
            let mut map = BTreeMap::from([("first".to_owned(), valid.clone())]);
            let taken = explode_first(&mut map, "loc").unwrap();
            let node = format!("node:{}", NODE);
            proptest::prop_assert!(map.contains_key("info") && map.contains_key(&node));
            proptest::prop_assert_eq!(taken.len(), map.len());
            let mut flipped = valid.clone();
            let at = flip % flipped.len();
            flipped[at] = byte;
            let cut = valid[..cut % valid.len()].to_vec();
            let huge = format!("info {}\n{{}}\n", usize::MAX).into_bytes();
            for value in [noise, cut, flipped, huge] {
                let mut map = BTreeMap::from([("first".to_owned(), value)]);
                if let Err(e) = explode_first(&mut map, "loc") {
                    proptest::prop_assert!(
                        matches!(&e, Error::Corrupt { location, .. } if location == "loc"),
                        "{e:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn padded_numbers() {
        for n in [0, 7, 1234567890, u64::MAX] {
            let mut key = b"x:".to_vec();
            push_padded(&mut key, n);
            assert_eq!(key, format!("x:{n:020}").into_bytes());
        }
    }
}
