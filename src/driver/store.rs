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
//! | `P:T:logs:N:<index>` | one log line (index: 20 digits, position in the trace's log) |
//! | `P:T:event:<seq>` | one event (seq: 20 digits) |
//! | `P:T:archive` | gzip'd JSON object `{key: value}` of an archived trace |
//!
//! Unlike the reference, events and log lines are one key each, so an append
//! is O(1) (never a rewritten array), and every read of a trace is a range
//! scan of `P:T:` only (trace ids cannot contain `:`), never a scan of the
//! store. A second keyspace indexes trace ids for `list`. Each batch is one
//! atomic fjall write batch; [`Durability`] decides how far it is persisted
//! (`Buffered`: handed to the OS; `Flush`: `fdatasync`; `Fsync`: `fsync`).
//!
//! A new trace's first batch ([`WriteBatch::is_new_trace`]) is written only
//! if the store holds no key of that trace: the check and the commit happen
//! under the driver's creation lock, which every such batch takes, and a
//! fjall store is opened by one process only — so an id collision is
//! [`Error::AlreadyExists`](crate::Error::AlreadyExists) and never merges
//! two traces.
//!
//! fjall poisons a store whose journal write or sync failed (a full disk):
//! every later write fails. The driver then closes the store and reopens it
//! before its next write (a reopen recovers the journal), so writing resumes
//! once the cause is gone. A failed batch can still reach the journal (fjall
//! flushes its buffer when the store is closed) and come back with the
//! reopen: if it was its trace's first, the trace's keys are removed right
//! after the reopen, so a failed first write leaves nothing behind and its
//! retry finds nothing.
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

use super::format::{decode_info, decode_log_lines, decode_node, decode_space, decode_space_data};
use super::{DocKind, Driver, Durability, StoredTrace, WriteBatch, lock};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::id::validate_trace_id;
use crate::model::{SpaceData, TraceInfo};

/// The embedded store driver on fjall: the reference's key scheme
/// (`<prefix>:<trace>:info`, `node:<id>`, `space:<id>`, `space:<id>:data`)
/// with one key per event (`event:<seq>`) and per log line
/// (`logs:<node>:<index>`), so appends are O(1), and every read of a trace is
/// a range scan of that trace's keys only. A second keyspace indexes trace
/// ids for `list`. Each batch is one atomic write batch, persisted per
/// [`Durability`]. A store poisoned by a failed write (a full disk) is
/// reopened before the next write.
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

impl Store {
    fn open(path: &std::path::Path) -> Result<Store> {
        let loc = path.display().to_string();
        let db = Database::builder(path)
            .open()
            .map_err(|e| Error::storage(&loc, e.to_string()))?;
        let kv = db
            .keyspace("trace", KeyspaceCreateOptions::default)
            .map_err(|e| Error::storage(&loc, e.to_string()))?;
        let index = db
            .keyspace("trace_ids", KeyspaceCreateOptions::default)
            .map_err(|e| Error::storage(&loc, e.to_string()))?;
        Ok(Store { db, kv, index })
    }
}

fn utf8<'a>(bytes: &'a [u8], key: &str) -> Result<&'a str> {
    std::str::from_utf8(bytes).map_err(|_| Error::corrupt(key, "value is not UTF-8"))
}

impl StoreDriver {
    /// Opens (or creates) the store at `path` (a directory) with the default
    /// key prefix `__trace`.
    ///
    /// # Errors
    /// `Storage` when the store cannot be opened.
    pub fn open(path: impl Into<PathBuf>, durability: Durability) -> Result<StoreDriver> {
        Self::with_prefix(path, "__trace", durability)
    }

    /// Opens the store with a custom key prefix (`[0-9A-Za-z_-]`, like trace ids).
    ///
    /// # Errors
    /// `Config` for a bad prefix; `Storage` when the store cannot be opened.
    pub fn with_prefix(
        path: impl Into<PathBuf>,
        prefix: &str,
        durability: Durability,
    ) -> Result<StoreDriver> {
        validate_trace_id(prefix)
            .map_err(|_| Error::Config(format!("invalid store key prefix {prefix:?}")))?;
        let path = path.into();
        let store = Store::open(&path)?;
        Ok(StoreDriver {
            store: RwLock::new(Some(store)),
            damaged: AtomicBool::new(false),
            creating: Mutex::new(()),
            orphans: Mutex::new(HashSet::new()),
            prefix: prefix.to_owned(),
            durability,
            path,
        })
    }

    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn trace_prefix(&self, id: &str) -> String {
        format!("{}:{id}:", self.prefix)
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
        let store = Store::open(&self.path)?;
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
        let prefix = self.trace_prefix(id);
        let indexed = store
            .index
            .contains_key(id.as_bytes())
            .map_err(|e| Error::storage(id, e.to_string()))?;
        match store.kv.prefix(prefix.as_bytes()).next() {
            Some(g) => {
                g.key()
                    .map_err(|e| Error::storage(&prefix, e.to_string()))?;
                Ok(true)
            }
            None => Ok(indexed),
        }
    }

    /// Deletes every key of trace `id`; `false` if there was none.
    fn delete_trace(&self, store: &Store, id: &str) -> Result<bool> {
        let live = self.scan(store, id)?;
        let indexed = store
            .index
            .contains_key(id.as_bytes())
            .map_err(|e| Error::storage(id, e.to_string()))?;
        if live.is_empty() && !indexed {
            return Ok(false);
        }
        let p = self.trace_prefix(id);
        let mut b = store.db.batch();
        for k in live.keys() {
            b.remove(&store.kv, format!("{p}{k}").as_bytes());
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

    /// The trace's keys: live ones, or the archived ones.
    fn trace_map(&self, store: &Store, id: &str) -> Result<BTreeMap<String, Vec<u8>>> {
        let mut live = self.scan(store, id)?;
        if live.contains_key("archive") {
            return Ok(self.archived_map(store, id)?.unwrap_or_default());
        }
        live.remove("archive");
        Ok(live)
    }

    fn decode(&self, id: &str, map: BTreeMap<String, Vec<u8>>) -> Result<Option<StoredTrace>> {
        let p = self.trace_prefix(id);
        let Some(info) = map.get("info") else {
            return Ok(None);
        };
        let (info, root, current) = decode_info(info, &format!("{p}info"))?;
        let mut nodes = Vec::new();
        let mut logs = Vec::new();
        let mut spaces: Vec<SpaceData> = Vec::new();
        let mut events: Vec<Event> = Vec::new();
        let mut data: BTreeMap<String, serde_json::Map<String, serde_json::Value>> =
            BTreeMap::new();
        for (k, v) in &map {
            let loc = format!("{p}{k}");
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
                ["logs", _, index] => {
                    let index: u64 = index
                        .parse()
                        .map_err(|_| Error::corrupt(&loc, "bad log index"))?;
                    let mut line = v.clone();
                    line.push(b'\n');
                    logs.extend(
                        decode_log_lines(&line, &loc)?
                            .into_iter()
                            .map(|l| (index, l)),
                    );
                }
                ["event", _] => {
                    let mut ev = Event::from_json(v, &loc)?;
                    let expect = events.len() as u64 + 1;
                    if ev.seq == 0 {
                        ev = ev.numbered(expect);
                    }
                    if ev.seq != expect {
                        return Err(Error::corrupt(
                            &loc,
                            format!("event seq {} where {expect} was expected", ev.seq),
                        ));
                    }
                    events.push(ev);
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
        // Keys group log lines by node; their index restores the write order.
        logs.sort_by_key(|(i, _)| *i);
        let logs = logs.into_iter().map(|(_, l)| l).collect();
        let loc = |n: &str| format!("{p}node:{n}");
        StoredTrace::assemble(info, root, current, nodes, logs, spaces, events, &loc).map(Some)
    }

    fn check(&self, id: &str) -> Result<()> {
        validate_trace_id(id)
    }

    /// The fjall batch of one write batch.
    fn build(&self, store: &Store, batch: &WriteBatch<'_>, p: &str) -> fjall::OwnedWriteBatch {
        let mut b = store.db.batch();
        let mut key = String::with_capacity(p.len() + 40);
        for ev in batch.events() {
            key.clear();
            key.push_str(p);
            key.push_str("event:");
            key.push_str(&format!("{:020}", ev.seq));
            b.insert(&store.kv, key.as_bytes(), &ev.bytes[..]);
        }
        for line in batch.log_lines() {
            key.clear();
            key.push_str(&format!("{p}logs:{}:{:020}", line.node_id, line.index));
            b.insert(&store.kv, key.as_bytes(), line.bytes);
        }
        for doc in batch.docs() {
            key.clear();
            match doc.kind {
                DocKind::Info => {
                    key.push_str(&format!("{p}info"));
                    b.insert(&store.index, batch.trace_id.as_bytes(), b"");
                }
                DocKind::Node => key.push_str(&format!("{p}node:{}", doc.id)),
                DocKind::Space => key.push_str(&format!("{p}space:{}", doc.id)),
                DocKind::SpaceData => key.push_str(&format!("{p}space:{}:data", doc.id)),
                DocKind::SpaceDeleted => {
                    b.remove(&store.kv, format!("{p}space:{}", doc.id).as_bytes());
                    b.remove(&store.kv, format!("{p}space:{}:data", doc.id).as_bytes());
                    continue;
                }
            }
            b.insert(&store.kv, key.as_bytes(), doc.bytes);
        }
        b
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
        let id = batch.trace_id;
        self.check(id)?;
        if batch.is_empty() {
            return Ok(());
        }
        let p = self.trace_prefix(id);
        let new = batch.is_new_trace();
        // A new trace: nothing of it may exist, checked and committed under
        // the creation lock that every new trace's first batch takes.
        let _creating = new.then(|| lock(&self.creating));
        self.writing(|store| {
            if new && self.holds(store, id)? {
                return Err(Error::AlreadyExists);
            }
            let r = self.commit(store, self.build(store, batch, &p), &p);
            // A failed batch may still reach the journal (fjall flushes its
            // buffer when the store is closed) and come back on reopen. If
            // it was the trace's first, remove it after the reopen, so that
            // no trace whose first write failed is left behind.
            if r.is_err() && (new || !self.holds(store, id).unwrap_or(true)) {
                lock(&self.orphans).insert(id.to_owned());
            }
            r
        })
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
            let mut live = self.scan(store, trace_id)?;
            if live.contains_key("archive") {
                return Err(Error::storage(
                    format!("{p}archive"),
                    "trace is already archived",
                ));
            }
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
            for k in live.keys() {
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
}
