//! The local-disk driver: traces as files in the directory layout of the
//! reference's `local` driver (spec §5.2), and their archives.
//!
//! What it does differently from the reference (spec §9.4):
//! - whole documents are written to a temp file in the same directory and
//!   renamed over the old one, so a crash never leaves torn JSON;
//! - appends are batched (one open + one write per file per batch); a failed
//!   batch is rolled back — a trace's failed first batch leaves nothing — so
//!   the engine's retry neither duplicates lines nor finds a skeleton; a
//!   torn final line left by a crash is cut off before the next append;
//! - a new trace's directory is created exclusively (`mkdir`, no `-p`), so two
//!   traces with one id are never merged;
//! - no symbolic link below the base is ever followed, only regular files are
//!   read or written, and every read is capped ([`fs`]);
//! - trace ids are validated before they become paths, node and space file
//!   names are checked when read;
//! - archives are written to a temp file, fsynced, renamed, verified, and
//!   only then is the marker written and the directory removed; archived
//!   traces are read straight from the archive; `remove` deletes the
//!   directory, the archive and the marker.
//!
//! Files: [`layout`] (names), [`fs`] (symlink-safe file access, caps),
//! [`write`] (the batch writer, rollback, exclusive creation), [`recover`]
//! (crash repair before the first write), [`read`] (loading a trace from its
//! directory or archive), [`archive`] (writing and verifying archives),
//! [`catalog`] (exists, list, remove).

mod archive;
mod catalog;
mod fs;
mod layout;
mod read;
mod recover;
mod write;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard, TryLockError};

use super::{Driver, Durability, StoredTrace, WriteBatch};
use crate::error::Result;
use crate::id::validate_trace_id;
use crate::model::TraceInfo;

use fs::Dir;
use write::ReadyCache;

/// Stores traces as files in the reference's layout (spec §5.2):
///
/// ```text
/// <base>/<D>/<id>/trace_info.json      D = first 8 chars of the id, or "others"
///                 updates.jsonl        one event per line
///                 nodes/<node>.json
///                 logs/<node>.jsonl    one log entry per line
///                 spaces/<space>.json
///                 spaces/<space>/data.json
/// <base>/<D>/<id>.tar.gz               after archiving
/// <base>/<D>/.<id>.archived            archive marker (RFC 3339 time)
/// ```
///
/// No symbolic link below the base is followed, only regular files are read
/// or written, JSON documents are read up to
/// [`DEFAULT_MAX_DOCUMENT_SIZE`](LocalDriver::DEFAULT_MAX_DOCUMENT_SIZE) and
/// lines of the line files up to
/// [`DEFAULT_MAX_LINE_SIZE`](LocalDriver::DEFAULT_MAX_LINE_SIZE) bytes.
/// See `docs/STORAGE.md` for the formats, atomicity and durability levels.
///
/// # Examples
/// ```
/// # fn main() -> tracepool::Result<()> {
/// use tracepool::{Durability, Engine, LocalDriver, NodeOptions, TraceOptions};
/// let dir = tempfile::tempdir().unwrap();
/// let engine = Engine::builder()
///     .workers(1)
///     .driver(LocalDriver::new(dir.path(), Durability::Buffered)?)
///     .build()?;
/// let trace = engine.create(TraceOptions::new().id("example-trace"))?;
/// trace.add("input", NodeOptions::new().label("Step"))?;
/// trace.release()?;
/// engine.flush_blocking()?; // release does no I/O: wait for the worker
/// assert!(dir.path().join("example-/example-trace/trace_info.json").exists());
/// let again = engine.open("example-trace")?;
/// assert_eq!(again.all_nodes()?.len(), 1);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct LocalDriver {
    base: Dir,
    durability: Durability,
    max_document: u64,
    max_line: u64,
    /// Traces whose directories this process created or checked (and whose
    /// torn tails it repaired).
    ready: ReadyCache,
    /// Held (shared) by whoever may be about to create an entry in a shard
    /// directory; `remove` deletes an empty shard only when it can take it
    /// exclusively, so it never pulls a shard from under a trace being created.
    shard_use: ShardUse,
    /// The shard directory used last (where new traces go), kept open: a
    /// write or removal then opens only the trace's own directory. Dropped
    /// when that shard is deleted, and when an operation through it fails
    /// (someone else deleted it): the operation is then tried once more
    /// through a freshly opened shard.
    last_shard: Mutex<Option<(String, Arc<Dir>)>>,
    /// Unit tests: fail every batch just before its documents are renamed.
    #[cfg(test)]
    fail_before_renames: std::sync::atomic::AtomicBool,
}

impl LocalDriver {
    /// JSON documents (`trace_info.json`, node and space documents, space
    /// data) larger than this are refused with [`Error::Corrupt`](crate::Error::Corrupt)
    /// instead of being read (64 MiB). Change it with
    /// [`LocalDriver::max_document_size`].
    pub const DEFAULT_MAX_DOCUMENT_SIZE: u64 = 64 << 20;

    /// A line of a line file (`updates.jsonl`, `logs/<node>.jsonl`) longer
    /// than this is refused with [`Error::Corrupt`](crate::Error::Corrupt)
    /// naming the file and line (16 MiB). Line files are read line by line
    /// and have no total limit. Change it with [`LocalDriver::max_line_size`].
    pub const DEFAULT_MAX_LINE_SIZE: u64 = 16 << 20;

    /// A driver storing traces under `base` (created with mode 0755 if
    /// missing). `base` is resolved once, here: links in it are followed,
    /// links below it never are.
    ///
    /// # Errors
    /// [`Error::Storage`](crate::Error::Storage) naming `base` when it cannot
    /// be created or opened.
    pub fn new(base: impl Into<PathBuf>, durability: Durability) -> Result<LocalDriver> {
        let base = Dir::open_base(&base.into())?;
        Ok(LocalDriver {
            base,
            durability,
            max_document: Self::DEFAULT_MAX_DOCUMENT_SIZE,
            max_line: Self::DEFAULT_MAX_LINE_SIZE,
            ready: ReadyCache::default(),
            shard_use: ShardUse::default(),
            last_shard: Mutex::new(None),
            #[cfg(test)]
            fail_before_renames: Default::default(),
        })
    }

    /// Sets the size above which a stored JSON document is refused as
    /// corrupt (default [`LocalDriver::DEFAULT_MAX_DOCUMENT_SIZE`]); it also
    /// caps the documents inside an archive.
    pub fn max_document_size(mut self, bytes: u64) -> Self {
        self.max_document = bytes;
        self
    }

    /// Sets the length above which a line of a line file is refused as
    /// corrupt (default [`LocalDriver::DEFAULT_MAX_LINE_SIZE`]).
    pub fn max_line_size(mut self, bytes: u64) -> Self {
        self.max_line = bytes;
        self
    }

    /// The base directory.
    pub fn base(&self) -> &Path {
        self.base.path()
    }

    /// The durability level.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Directory of trace `id` (`<base>/<D>/<id>`), after validating the id.
    ///
    /// # Errors
    /// [`Error::InvalidId`](crate::Error::InvalidId).
    pub fn trace_dir(&self, id: &str) -> Result<PathBuf> {
        validate_trace_id(id)?;
        Ok(self.base().join(layout::shard(id)).join(id))
    }

    /// Archive of trace `id` (`<base>/<D>/<id>.tar.gz`), after validating the id.
    ///
    /// # Errors
    /// [`Error::InvalidId`](crate::Error::InvalidId).
    pub fn archive_path(&self, id: &str) -> Result<PathBuf> {
        validate_trace_id(id)?;
        Ok(self
            .base()
            .join(layout::shard(id))
            .join(layout::archive_name(id)))
    }

    fn fsync(&self) -> bool {
        self.durability == Durability::Fsync
    }

    /// Shard directory `name`: the one kept open if it is that one, else
    /// opened (and made, if `make`; `None` if missing and not `make`) and
    /// kept open. Also says whether this call made it and whether it came
    /// from the cache (then a failure through it may mean someone else
    /// deleted it: see [`forget_shard`](LocalDriver::forget_shard)).
    fn shard_dir(&self, name: &str, make: bool) -> Result<Option<OpenShard>> {
        if let Some((n, d)) = &*super::lock(&self.last_shard)
            && n == name
        {
            return Ok(Some(OpenShard {
                dir: d.clone(),
                made: false,
                cached: true,
            }));
        }
        let (dir, made) = if make {
            let (d, made) = self.base.open_or_make_dir(name)?;
            (d, made)
        } else {
            match self.base.open_dir(name, fs::Access::Write)? {
                Some(d) => (d, false),
                None => return Ok(None),
            }
        };
        let dir = Arc::new(dir);
        *super::lock(&self.last_shard) = Some((name.to_owned(), dir.clone()));
        Ok(Some(OpenShard {
            dir,
            made,
            cached: false,
        }))
    }

    /// Runs `f` on shard `name` ([`shard_dir`](LocalDriver::shard_dir);
    /// `Ok(None)` when it is missing and not `make`). The shard kept open
    /// may be one someone else deleted (and perhaps made again): when `f`
    /// ran on it and `stale` says its outcome may come from that, the shard
    /// is forgotten and `f` runs once more on a freshly opened one.
    fn in_shard<T>(
        &self,
        name: &str,
        make: bool,
        f: impl Fn(&OpenShard) -> Result<T>,
        stale: impl Fn(&Result<T>) -> bool,
    ) -> Result<Option<T>> {
        let Some(shard) = self.shard_dir(name, make)? else {
            return Ok(None);
        };
        let r = f(&shard);
        if !(shard.cached && stale(&r)) {
            return r.map(Some);
        }
        drop(shard);
        self.forget_shard(name);
        match self.shard_dir(name, make)? {
            Some(fresh) => f(&fresh).map(Some),
            None => Ok(None),
        }
    }

    /// Stops keeping shard `name` open (it was deleted, or an operation
    /// through it failed).
    fn forget_shard(&self, name: &str) {
        let mut last = super::lock(&self.last_shard);
        if last.as_ref().is_some_and(|(n, _)| n == name) {
            *last = None;
        }
    }
}

/// A shard directory from [`LocalDriver::shard_dir`].
#[derive(Debug, Clone)]
struct OpenShard {
    dir: Arc<Dir>,
    /// Made by this call.
    made: bool,
    /// Kept open from an earlier operation.
    cached: bool,
}

impl Driver for LocalDriver {
    fn name(&self) -> &'static str {
        "local"
    }

    fn flushes_on_caller(&self) -> bool {
        true
    }

    fn wants_documents(&self) -> bool {
        true
    }

    fn write(&self, batch: &WriteBatch<'_>) -> Result<()> {
        self.write_batch(batch)
    }

    fn load(&self, trace_id: &str) -> Result<Option<StoredTrace>> {
        self.load_trace(trace_id)
    }

    fn archive(&self, id: &str) -> Result<()> {
        self.archive_trace(id)
    }

    fn exists(&self, id: &str) -> Result<bool> {
        self.has_trace(id)
    }

    fn info(&self, id: &str) -> Result<Option<TraceInfo>> {
        self.read_info(id)
    }

    fn remove(&self, id: &str) -> Result<bool> {
        self.remove_trace(id)
    }

    fn list(&self) -> Result<Vec<String>> {
        self.list_traces()
    }
}

/// The lock behind [`LocalDriver::shard_use`]: shared by users of a shard,
/// taken exclusively (and only if free at once) to delete an empty shard.
#[derive(Debug, Default)]
struct ShardUse(RwLock<()>);

impl ShardUse {
    /// Keeps every shard directory from being deleted while held.
    fn hold(&self) -> RwLockReadGuard<'_, ()> {
        self.0.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Exclusive use, if nobody holds the lock right now (never waits).
    fn try_exclusive(&self) -> Option<RwLockWriteGuard<'_, ()>> {
        match self.0.try_write() {
            Ok(g) => Some(g),
            Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }
}
