//! The local-disk driver: owns the on-disk layout of the reference's `local`
//! driver (spec §5.2) — one directory per trace with `trace_info.json`,
//! `updates.jsonl`, `nodes/`, `logs/` and `spaces/` — and its archives
//! (`<id>.tar.gz` plus a `.<id>.archived` marker).
//!
//! What it does differently from the reference (spec §9.4):
//! - whole documents are written to a temp file in the same directory and
//!   renamed over the old one, so a crash never leaves torn JSON;
//! - appends are batched (one open + one write per file per batch), a failed
//!   batch is rolled back so the engine's retry does not duplicate lines, and
//!   a torn final line left by a crash is cut off before the next append;
//! - trace ids are validated before they become paths, node and space file
//!   names are checked when read;
//! - archives are written to a temp file, fsynced, renamed, verified, and
//!   only then is the marker written and the directory removed; archived
//!   traces are read straight from the archive (no extraction, no side
//!   effects); `remove` deletes the directory, the archive and the marker.
//!
//! The only state kept across calls is a bounded set of traces whose
//! directories this process already created (to skip `mkdir` calls).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use serde_json::{Map, Value};

use super::format::{self, StoredTrace};
use super::{DocKind, Driver, Durability, WriteBatch};
use crate::error::{Error, Result};
use crate::event::{Event, EventKind};
use crate::id::{civil_from_days, now_ms, validate_trace_id};
use crate::model::{LogEntry, SpaceData, TraceInfo};

/// How many traces the "directory already created" set remembers before it
/// is cleared (it only saves `mkdir` calls).
/// Per-shard directory of temp archives and markers (`<base>/<D>/.tmp`).
const SHARD_TMP: &str = ".tmp";
const READY_CAP: usize = 4096;

/// Bytes of event lines kept in a worker's scratch buffer between batches.
const SCRATCH_KEEP: usize = 1 << 20;

const INFO: &str = "trace_info.json";
const UPDATES: &str = "updates.jsonl";

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
    base: PathBuf,
    durability: Durability,
    max_file: u64,
    /// Traces whose directories this process created or checked (and whose
    /// torn tails it repaired). Cleared by `remove` and `archive`.
    ready: Mutex<HashSet<String>>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl LocalDriver {
    /// Files larger than this are refused with [`Error::Corrupt`] instead of
    /// being read (256 MiB). Change it with [`LocalDriver::max_file_size`].
    pub const DEFAULT_MAX_FILE_SIZE: u64 = 256 << 20;

    /// A driver storing traces under `base` (created with mode 0755 if missing).
    ///
    /// # Errors
    /// [`Error::Storage`] naming `base` when it cannot be created.
    pub fn new(base: impl Into<PathBuf>, durability: Durability) -> Result<LocalDriver> {
        let base = base.into();
        mkdir_all(&base)?;
        Ok(LocalDriver {
            base,
            durability,
            max_file: Self::DEFAULT_MAX_FILE_SIZE,
            ready: Mutex::new(HashSet::new()),
        })
    }

    /// Sets the size above which a stored file is refused as corrupt
    /// (default [`LocalDriver::DEFAULT_MAX_FILE_SIZE`]).
    pub fn max_file_size(mut self, bytes: u64) -> Self {
        self.max_file = bytes;
        self
    }

    /// The base directory.
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// The durability level.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Directory of trace `id` (`<base>/<D>/<id>`), after validating the id.
    ///
    /// # Errors
    /// [`Error::InvalidId`].
    pub fn trace_dir(&self, id: &str) -> Result<PathBuf> {
        validate_trace_id(id)?;
        Ok(self.shard_dir(id).join(id))
    }

    /// Archive of trace `id` (`<base>/<D>/<id>.tar.gz`), after validating the id.
    ///
    /// # Errors
    /// [`Error::InvalidId`].
    pub fn archive_path(&self, id: &str) -> Result<PathBuf> {
        validate_trace_id(id)?;
        Ok(self.shard_dir(id).join(format!("{id}.tar.gz")))
    }

    fn shard_dir(&self, id: &str) -> PathBuf {
        self.base.join(shard(id))
    }

    fn marker_path(&self, id: &str) -> PathBuf {
        self.shard_dir(id).join(format!(".{id}.archived"))
    }

    fn is_ready(&self, id: &str) -> bool {
        lock(&self.ready).contains(id)
    }

    fn set_ready(&self, id: &str) {
        let mut r = lock(&self.ready);
        if r.len() >= READY_CAP {
            r.clear();
        }
        r.insert(id.to_owned());
    }

    fn forget(&self, id: &str) {
        lock(&self.ready).remove(id);
    }

    fn fsync(&self) -> bool {
        self.durability == Durability::Fsync
    }

    // ---- writing ----------------------------------------------------------------

    /// Makes sure the trace's directories exist (once per process) and that
    /// files left by a crashed writer are usable: torn final lines of the
    /// append-only files are cut off, stray temp files removed.
    fn prepare(&self, id: &str, dir: &Path) -> Result<()> {
        if self.is_ready(id) {
            return Ok(());
        }
        let marker = self.marker_path(id);
        if exists(&marker)? {
            return Err(storage(
                dir,
                format!("cannot write: trace {id} is archived (read-only)"),
            ));
        }
        let shard = self.shard_dir(id);
        let shard_new = !exists(&shard)?;
        if shard_new {
            mkdir_all(&shard)?;
        }
        let dir_new = mkdir(dir)?;
        for sub in ["nodes", "logs", "spaces"] {
            mkdir(&dir.join(sub))?;
        }
        if self.fsync() {
            sync_dir(dir)?;
            if dir_new {
                sync_dir(&shard)?;
            }
            if shard_new {
                sync_dir(&self.base)?;
            }
        }
        if !dir_new {
            self.repair(dir)?;
        }
        self.set_ready(id);
        Ok(())
    }

    /// Cuts torn final lines and removes temp files of a directory written
    /// by an earlier (possibly killed) process.
    fn repair(&self, dir: &Path) -> Result<()> {
        repair_tail(&dir.join(UPDATES), self.fsync())?;
        let logs = dir.join("logs");
        for name in list_names(&logs, ".jsonl")? {
            repair_tail(&logs.join(format!("{name}.jsonl")), self.fsync())?;
        }
        let spaces = dir.join("spaces");
        let mut dirs = vec![dir.to_path_buf(), dir.join("nodes"), logs, spaces.clone()];
        if let Some(rd) = read_dir_opt(&spaces)? {
            for e in rd {
                let e = e.map_err(|e| Error::io(&spaces, e))?;
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    dirs.push(e.path());
                }
            }
        }
        for d in dirs {
            let Some(rd) = read_dir_opt(&d)? else {
                continue;
            };
            for e in rd {
                let e = e.map_err(|e| Error::io(&d, e))?;
                let name = e.file_name();
                let name = name.to_string_lossy();
                if name.starts_with('.') && name.contains(".tmp.") {
                    remove_file_opt(&e.path())?;
                }
            }
        }
        Ok(())
    }

    fn apply(&self, dir: &Path, batch: &WriteBatch<'_>) -> Result<()> {
        // (file, length before this batch) of every append, for rollback.
        let mut appended: Vec<(PathBuf, u64)> = Vec::new();
        let r = self.apply_inner(dir, batch, &mut appended);
        if r.is_err() {
            // The engine retries the whole batch: undo the appends so that
            // the retry does not duplicate lines.
            for (path, len) in appended.iter().rev() {
                if let Ok(f) = OpenOptions::new().write(true).open(path) {
                    let _ = f.set_len(*len);
                }
            }
        }
        r
    }

    fn apply_inner(
        &self,
        dir: &Path,
        batch: &WriteBatch<'_>,
        appended: &mut Vec<(PathBuf, u64)>,
    ) -> Result<()> {
        let mut sync_dirs: Vec<PathBuf> = Vec::new();
        let n_events = batch.len();
        // 1. Event lines: one append.
        if n_events > 0 {
            let path = dir.join(UPDATES);
            let sync = match self.durability {
                Durability::Buffered => Sync::None,
                Durability::Flush => Sync::Data,
                Durability::Fsync => Sync::All,
            };
            let len = SCRATCH.with(|cell| {
                let mut buf = cell.borrow_mut();
                buf.clear();
                for e in batch.events() {
                    buf.extend_from_slice(e.bytes);
                    buf.push(b'\n');
                }
                let r = append(&path, &buf, sync);
                if buf.capacity() > SCRATCH_KEEP {
                    *buf = Vec::new();
                }
                r
            })?;
            appended.push((path, len));
        }
        // 2. Log lines: one append per node file.
        if batch.log_lines().len() != 0 {
            let mut groups: Vec<(&str, Vec<u8>)> = Vec::new();
            let mut index: HashMap<&str, usize> = HashMap::new();
            for l in batch.log_lines() {
                if !is_short_id(l.node_id) {
                    return Err(storage(
                        dir,
                        format!("invalid node id {:?} in a log line", l.node_id),
                    ));
                }
                let i = *index.entry(l.node_id).or_insert_with(|| {
                    groups.push((l.node_id, Vec::new()));
                    groups.len() - 1
                });
                groups[i].1.extend_from_slice(l.bytes);
                groups[i].1.push(b'\n');
            }
            let sync = if self.fsync() { Sync::All } else { Sync::None };
            for (node, bytes) in &groups {
                let path = dir.join("logs").join(format!("{node}.jsonl"));
                let len = append(&path, bytes, sync)?;
                appended.push((path, len));
            }
            if self.fsync() {
                sync_dirs.push(dir.join("logs"));
            }
        }
        if self.fsync() && n_events > 0 {
            sync_dirs.push(dir.to_path_buf());
        }
        // 3. Documents: every temp file first, then the renames in order, so
        //    that a crash leaves as few half-applied batches as possible.
        let mut temps: Vec<Option<(PathBuf, PathBuf)>> = Vec::with_capacity(batch.docs().len());
        let r = self.write_temps(dir, batch, &mut temps, &mut sync_dirs);
        if let Err(e) = r {
            remove_temps(&temps);
            return Err(e);
        }
        for (i, doc) in batch.docs().enumerate() {
            let res = match (&temps[i], doc.kind) {
                (None, DocKind::SpaceDeleted) => {
                    let spaces = dir.join("spaces");
                    remove_file_opt(&spaces.join(format!("{}.json", doc.id)))
                        .and_then(|()| remove_dir_all_opt(&spaces.join(doc.id)).map(|_| ()))
                }
                (Some((tmp, target)), _) => {
                    fs::rename(tmp, target).map_err(|e| Error::io(target, e))
                }
                (None, _) => Ok(()),
            };
            if let Err(e) = res {
                remove_temps(&temps[i..]);
                return Err(e);
            }
        }
        if self.fsync() {
            sync_dirs.sort();
            sync_dirs.dedup();
            for d in &sync_dirs {
                sync_dir(d)?;
            }
        }
        Ok(())
    }

    fn write_temps(
        &self,
        dir: &Path,
        batch: &WriteBatch<'_>,
        temps: &mut Vec<Option<(PathBuf, PathBuf)>>,
        sync_dirs: &mut Vec<PathBuf>,
    ) -> Result<()> {
        for doc in batch.docs() {
            let target = match doc.kind {
                DocKind::Info => dir.join(INFO),
                DocKind::Node => dir
                    .join("nodes")
                    .join(format!("{}.json", checked(dir, doc.id)?)),
                DocKind::Space => dir
                    .join("spaces")
                    .join(format!("{}.json", checked(dir, doc.id)?)),
                DocKind::SpaceData => {
                    let sdir = dir.join("spaces").join(checked(dir, doc.id)?);
                    if mkdir(&sdir)? && self.fsync() {
                        sync_dirs.push(dir.join("spaces"));
                    }
                    sdir.join("data.json")
                }
                DocKind::SpaceDeleted => {
                    checked(dir, doc.id)?;
                    if self.fsync() {
                        sync_dirs.push(dir.join("spaces"));
                    }
                    temps.push(None);
                    continue;
                }
            };
            let tmp = write_temp(&target, doc.bytes, self.fsync())?;
            if self.fsync()
                && let Some(p) = target.parent()
            {
                sync_dirs.push(p.to_path_buf());
            }
            temps.push(Some((tmp, target)));
        }
        Ok(())
    }

    // ---- reading ----------------------------------------------------------------

    /// Where the trace's data lives right now: the archive once the marker
    /// exists, else the directory, else an archive without a marker.
    fn locate(&self, id: &str) -> Result<Option<Place>> {
        validate_trace_id(id)?;
        let dir = self.shard_dir(id).join(id);
        let archive = self.shard_dir(id).join(format!("{id}.tar.gz"));
        if exists(&self.marker_path(id))? {
            if exists(&archive)? {
                return Ok(Some(Place::Archive(archive)));
            }
            if exists(&dir)? {
                return Ok(Some(Place::Dir(dir)));
            }
            return Err(Error::corrupt(
                archive.display().to_string(),
                "the trace is marked archived but its archive is missing",
            ));
        }
        if exists(&dir)? {
            return Ok(Some(Place::Dir(dir)));
        }
        if exists(&archive)? {
            return Ok(Some(Place::Archive(archive)));
        }
        Ok(None)
    }

    /// Reads an archive into memory: file entries by relative path.
    /// With `only`, stops after that entry.
    fn read_archive(&self, path: &Path, only: Option<&str>) -> Result<BTreeMap<String, Vec<u8>>> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let loc = path.display().to_string();
        let bad = |e: io::Error| Error::corrupt(loc.clone(), format!("bad archive: {e}"));
        let mut ar = tar::Archive::new(GzDecoder::new(BufReader::new(file)));
        let mut out = BTreeMap::new();
        let mut total = 0u64;
        let total_cap = self.max_file.saturating_mul(4);
        for entry in ar.entries().map_err(bad)? {
            let mut entry = entry.map_err(bad)?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let raw = entry.path().map_err(bad)?.into_owned();
            let Some(rel) = normalize(&raw) else {
                return Err(Error::corrupt(
                    loc.clone(),
                    format!("unsafe archive entry {}", raw.display()),
                ));
            };
            let size = entry.size();
            if size > self.max_file {
                return Err(Error::corrupt(
                    entry_loc(path, &rel),
                    format!("{size} bytes, larger than the {} byte limit", self.max_file),
                ));
            }
            if only.is_some_and(|o| o != rel) {
                continue;
            }
            total += size;
            if total > total_cap {
                return Err(Error::corrupt(
                    loc.clone(),
                    format!("archive holds more than {total_cap} bytes"),
                ));
            }
            let mut data = Vec::with_capacity(size as usize);
            entry.read_to_end(&mut data).map_err(bad)?;
            let done = only.is_some();
            out.insert(rel, data);
            if done {
                return Ok(out);
            }
        }
        if only.is_none() {
            // Read to the end so that the gzip trailer (CRC, length) is checked.
            io::copy(&mut ar.into_inner(), &mut io::sink()).map_err(bad)?;
        }
        Ok(out)
    }

    fn source(&self, place: Place) -> Result<Source> {
        Ok(match place {
            Place::Dir(d) => Source::Dir(d),
            Place::Archive(p) => {
                let files = self.read_archive(&p, None)?;
                Source::Archive(p, files)
            }
        })
    }

    fn load_from(&self, id: &str, src: &Source) -> Result<StoredTrace> {
        let cap = self.max_file;
        let info_loc = src.location(INFO);
        let Some(bytes) = src.read(INFO, cap)? else {
            return Err(Error::corrupt(info_loc, "trace_info.json is missing"));
        };
        let (info, root, current) = format::decode_info(&bytes, &info_loc)?;
        if info.id != id {
            return Err(Error::corrupt(
                info_loc,
                format!("names trace {:?}, expected {id:?}", info.id),
            ));
        }
        let mut nodes = Vec::new();
        for name in src.names("nodes", ".json")? {
            let rel = format!("nodes/{name}.json");
            let loc = src.location(&rel);
            let Some(bytes) = src.read(&rel, cap)? else {
                continue;
            };
            let node = format::decode_node(&bytes, &loc)?;
            if node.id != name {
                return Err(Error::corrupt(loc, format!("holds node {:?}", node.id)));
            }
            nodes.push(node);
        }
        let known: HashSet<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
        let mut logs = Vec::new();
        let mut orphan = None;
        for name in src.names("logs", ".jsonl")? {
            let rel = format!("logs/{name}.jsonl");
            let loc = src.location(&rel);
            let Some(bytes) = src.read(&rel, cap)? else {
                continue;
            };
            let lines = format::decode_log_lines(&bytes, &loc)?;
            if let Some(l) = lines.iter().find(|l| l.node_id != name) {
                return Err(Error::corrupt(
                    loc,
                    format!("holds a log line of node {:?}", l.node_id),
                ));
            }
            if !lines.is_empty() && !known.contains(name.as_str()) && orphan.is_none() {
                // Reported after the node checks, which explain more.
                orphan = Some(Error::corrupt(loc, format!("log of missing node {name}")));
            }
            logs.extend(lines);
        }
        let mut spaces = Vec::new();
        for name in src.names("spaces", ".json")? {
            let rel = format!("spaces/{name}.json");
            let loc = src.location(&rel);
            let Some(bytes) = src.read(&rel, cap)? else {
                continue;
            };
            let info = format::decode_space(&bytes, &loc)?;
            if info.id != name {
                return Err(Error::corrupt(loc, format!("holds space {:?}", info.id)));
            }
            let drel = format!("spaces/{name}/data.json");
            let data = match src.read(&drel, cap)? {
                Some(b) => format::decode_space_data(&b, &src.location(&drel))?,
                None => Map::new(),
            };
            spaces.push(SpaceData { info, data });
        }
        spaces.sort_by_key(|s| s.info.created_at);
        let events = match src.read(UPDATES, cap)? {
            Some(b) => format::decode_event_lines(&b, &src.location(UPDATES))?,
            None => Vec::new(),
        };
        let logs = order_logs(logs, &events);
        let stored =
            StoredTrace::assemble(info, root, current, nodes, logs, spaces, events, &|nid| {
                src.location(&format!("nodes/{nid}.json"))
            })?;
        match orphan {
            Some(e) => Err(e),
            None => Ok(stored),
        }
    }
}

impl Driver for LocalDriver {
    fn name(&self) -> &'static str {
        "local"
    }

    fn wants_documents(&self) -> bool {
        true
    }

    fn write(&self, batch: &WriteBatch<'_>) -> Result<()> {
        let id = batch.trace_id;
        validate_trace_id(id)?;
        if batch.is_empty() {
            return Ok(());
        }
        let dir = self.shard_dir(id).join(id);
        let cached = self.is_ready(id);
        self.prepare(id, &dir)?;
        let mut r = self.apply(&dir, batch);
        if r.is_err() {
            // Re-check the directories (and repair) before the next attempt.
            self.forget(id);
            if cached {
                // The cache may be stale (another process archived or removed
                // the trace): check again and retry once. A failed batch was
                // rolled back, so the retry cannot duplicate lines.
                self.prepare(id, &dir)?;
                r = self.apply(&dir, batch);
                if r.is_err() {
                    self.forget(id);
                }
            }
        }
        r
    }

    fn load(&self, trace_id: &str) -> Result<Option<StoredTrace>> {
        let Some(place) = self.locate(trace_id)? else {
            return Ok(None);
        };
        let src = self.source(place)?;
        self.load_from(trace_id, &src).map(Some)
    }

    fn archive(&self, id: &str) -> Result<()> {
        validate_trace_id(id)?;
        let shard = self.shard_dir(id);
        let dir = shard.join(id);
        let archive = shard.join(format!("{id}.tar.gz"));
        let marker = self.marker_path(id);
        self.forget(id);
        if exists(&marker)? {
            // Already archived; finish a removal a crash may have interrupted.
            if exists(&archive)? {
                remove_dir_all_opt(&dir)?;
            }
            return Ok(());
        }
        if !exists(&dir)? {
            return Err(Error::NotFound);
        }
        // trace_info.json as it goes into the archive: archived, with the time.
        let info_path = dir.join(INFO);
        let Some(info_bytes) = read_capped(&info_path, self.max_file)? else {
            return Err(Error::corrupt(
                info_path.display().to_string(),
                "trace_info.json is missing",
            ));
        };
        let info_json = mark_archived(&info_bytes, now_ms())
            .map_err(|m| Error::corrupt(info_path.display().to_string(), m))?;
        let items = walk(&dir)?;
        // Temp files of the shard live in `<shard>/.tmp/`, so that cleaning
        // up after a crash never lists the (large) shard directory itself.
        let tmp_dir = shard.join(SHARD_TMP);
        mkdir(&tmp_dir)?;
        let tmp = tmp_dir.join(format!(".{id}.tar.gz.tmp.{:016x}", fastrand::u64(..)));
        let written = self
            .write_archive(&tmp, &dir, &items, &info_json)
            .and_then(|()| fs::rename(&tmp, &archive).map_err(|e| Error::io(&archive, e)));
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        sync_dir(&shard)?;
        if let Err(e) = self.verify_archive(&archive, &dir, &items, &info_json) {
            let _ = fs::remove_file(&archive);
            return Err(e);
        }
        let stamp = rfc3339(now_ms());
        let tmp = write_temp_in(&tmp_dir, &marker, stamp.as_bytes(), true)?;
        fs::rename(&tmp, &marker).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            Error::io(&marker, e)
        })?;
        sync_dir(&shard)?;
        remove_dir_all_opt(&dir)?;
        if self.fsync() {
            sync_dir(&shard)?;
        }
        Ok(())
    }

    fn exists(&self, id: &str) -> Result<bool> {
        validate_trace_id(id)?;
        let shard = self.shard_dir(id);
        Ok(exists(&shard.join(id))?
            || exists(&self.marker_path(id))?
            || exists(&shard.join(format!("{id}.tar.gz")))?)
    }

    fn info(&self, id: &str) -> Result<Option<TraceInfo>> {
        let Some(place) = self.locate(id)? else {
            return Ok(None);
        };
        let (bytes, loc) = match &place {
            Place::Dir(d) => {
                let p = d.join(INFO);
                (read_capped(&p, self.max_file)?, p.display().to_string())
            }
            Place::Archive(p) => (
                self.read_archive(p, Some(INFO))?.remove(INFO),
                entry_loc(p, INFO),
            ),
        };
        let Some(bytes) = bytes else {
            return Err(Error::corrupt(loc, "trace_info.json is missing"));
        };
        let (info, _, _) = format::decode_info(&bytes, &loc)?;
        Ok(Some(info))
    }

    fn remove(&self, id: &str) -> Result<bool> {
        validate_trace_id(id)?;
        let shard = self.shard_dir(id);
        self.forget(id);
        let mut found = remove_dir_all_opt(&shard.join(id))?;
        found |= remove_file_opt_found(&shard.join(format!("{id}.tar.gz")))?;
        // Temp archives or markers a crash left behind (in the shard's small
        // temp directory: the shard itself is never listed here).
        let prefixes = [
            format!(".{id}.tar.gz.tmp."),
            format!("..{id}.archived.tmp."),
        ];
        let tmp_dir = shard.join(SHARD_TMP);
        if let Some(rd) = read_dir_opt(&tmp_dir)? {
            for e in rd {
                let e = e.map_err(|e| Error::io(&tmp_dir, e))?;
                let name = e.file_name();
                let name = name.to_string_lossy();
                if prefixes.iter().any(|p| name.starts_with(p.as_str())) {
                    remove_file_opt(&e.path())?;
                }
            }
        }
        found |= remove_file_opt_found(&self.marker_path(id))?;
        if self.fsync() && exists(&shard)? {
            sync_dir(&shard)?;
        }
        // Drop the temp and shard directories when this was the shard's last
        // trace (fails harmlessly otherwise).
        let _ = fs::remove_dir(&tmp_dir);
        let _ = fs::remove_dir(&shard);
        self.forget(id);
        Ok(found)
    }

    fn list(&self) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        let Some(rd) = read_dir_opt(&self.base)? else {
            return Ok(ids);
        };
        for sd in rd {
            let sd = sd.map_err(|e| Error::io(&self.base, e))?;
            if !sd.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let sname = sd.file_name();
            let Some(sname) = sname.to_str() else {
                continue;
            };
            let spath = sd.path();
            let Some(rd) = read_dir_opt(&spath)? else {
                continue;
            };
            for e in rd {
                let e = e.map_err(|e| Error::io(&spath, e))?;
                let name = e.file_name();
                let Some(name) = name.to_str() else { continue };
                let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
                let id = if is_dir {
                    name
                } else if let Some(stem) = name.strip_suffix(".tar.gz") {
                    stem
                } else {
                    continue;
                };
                if validate_trace_id(id).is_ok() && shard(id) == sname {
                    ids.push(id.to_owned());
                }
            }
        }
        ids.sort();
        ids.dedup();
        Ok(ids)
    }
}

impl LocalDriver {
    fn write_archive(
        &self,
        tmp: &Path,
        dir: &Path,
        items: &[Item],
        info_json: &[u8],
    ) -> Result<()> {
        let file = create_new(tmp)?;
        let io_err = |e: io::Error| Error::io(tmp, e);
        let gz = GzEncoder::new(BufWriter::new(file), Compression::default());
        let mut tar = tar::Builder::new(gz);
        let mtime = now_ms().max(0) as u64 / 1000;
        for item in items {
            let mut h = tar::Header::new_gnu();
            h.set_mtime(mtime);
            if item.is_dir {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                tar.append_data(&mut h, format!("{}/", item.rel), io::empty())
                    .map_err(io_err)?;
                continue;
            }
            let data: Cow<'_, [u8]> = if item.rel == INFO {
                Cow::Borrowed(info_json)
            } else {
                let p = dir.join(&item.rel);
                match read_capped(&p, self.max_file)? {
                    Some(d) => Cow::Owned(d),
                    None => return Err(storage(&p, "file vanished while archiving")),
                }
            };
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            h.set_size(data.len() as u64);
            tar.append_data(&mut h, &item.rel, &data[..])
                .map_err(io_err)?;
        }
        let gz = tar.into_inner().map_err(io_err)?;
        let buf = gz.finish().map_err(io_err)?;
        let file = buf.into_inner().map_err(|e| io_err(e.into_error()))?;
        file.sync_all().map_err(io_err)?;
        Ok(())
    }

    /// Re-reads the written archive and compares it with what was meant to go
    /// in, and with the directory as it is now.
    fn verify_archive(
        &self,
        archive: &Path,
        dir: &Path,
        items: &[Item],
        info_json: &[u8],
    ) -> Result<()> {
        let fail = |what: String| storage(archive, format!("archive verification failed: {what}"));
        let files = self.read_archive(archive, None)?;
        let expected: Vec<&Item> = items.iter().filter(|i| !i.is_dir).collect();
        if files.len() != expected.len() {
            return Err(fail(format!(
                "{} files in the archive, {} in the directory",
                files.len(),
                expected.len()
            )));
        }
        for item in &expected {
            let want = if item.rel == INFO {
                info_json.len() as u64
            } else {
                item.size
            };
            match files.get(&item.rel) {
                Some(d) if d.len() as u64 == want => {}
                Some(d) => {
                    return Err(fail(format!(
                        "{}: {} bytes, expected {want}",
                        item.rel,
                        d.len()
                    )));
                }
                None => return Err(fail(format!("{} is missing", item.rel))),
            }
        }
        if files.get(INFO).map(Vec::as_slice) != Some(info_json) {
            return Err(fail("trace_info.json differs".into()));
        }
        let now = walk(dir)?;
        let same = now.len() == items.len()
            && now
                .iter()
                .zip(items)
                .all(|(a, b)| a.rel == b.rel && a.is_dir == b.is_dir && a.size == b.size);
        if !same {
            return Err(fail("the directory changed while it was archived".into()));
        }
        Ok(())
    }
}

// ---- sources ------------------------------------------------------------------------

#[derive(Debug)]
enum Place {
    Dir(PathBuf),
    Archive(PathBuf),
}

/// A trace's files, on disk or decompressed from its archive.
#[derive(Debug)]
enum Source {
    Dir(PathBuf),
    Archive(PathBuf, BTreeMap<String, Vec<u8>>),
}

impl Source {
    fn location(&self, rel: &str) -> String {
        match self {
            Source::Dir(d) => d.join(rel).display().to_string(),
            Source::Archive(p, _) => entry_loc(p, rel),
        }
    }

    fn read(&self, rel: &str, cap: u64) -> Result<Option<Cow<'_, [u8]>>> {
        match self {
            Source::Dir(d) => Ok(read_capped(&d.join(rel), cap)?.map(Cow::Owned)),
            Source::Archive(_, files) => Ok(files.get(rel).map(|v| Cow::Borrowed(v.as_slice()))),
        }
    }

    /// Ids (12 chars `[0-9a-z]`) of the files `<sub>/<id><suffix>`, sorted;
    /// other names are ignored.
    fn names(&self, sub: &str, suffix: &str) -> Result<Vec<String>> {
        match self {
            Source::Dir(d) => list_names(&d.join(sub), suffix),
            Source::Archive(_, files) => {
                let prefix = format!("{sub}/");
                Ok(files
                    .keys()
                    .filter_map(|k| k.strip_prefix(&prefix)?.strip_suffix(suffix))
                    .filter(|s| is_short_id(s))
                    .map(str::to_owned)
                    .collect())
            }
        }
    }
}

/// Puts log lines (read file by file) back in the order they were written:
/// the order of their `log_added` events. Lines without an event (the
/// event log lost its tail) follow, per node in file order; the final sort
/// by time (stable) in `StoredTrace::assemble` keeps this order.
fn order_logs(logs: Vec<LogEntry>, events: &[Event]) -> Vec<LogEntry> {
    let mut by_node: HashMap<String, VecDeque<LogEntry>> = HashMap::new();
    let mut nodes: Vec<String> = Vec::new();
    let total = logs.len();
    for l in logs {
        by_node
            .entry(l.node_id.clone())
            .or_insert_with(|| {
                nodes.push(l.node_id.clone());
                VecDeque::new()
            })
            .push_back(l);
    }
    let mut out = Vec::with_capacity(total);
    for e in events {
        if e.kind != EventKind::LogAdded {
            continue;
        }
        if let Some(l) = by_node
            .get_mut(e.node_id.as_str())
            .and_then(VecDeque::pop_front)
        {
            out.push(l);
        }
    }
    for n in &nodes {
        if let Some(rest) = by_node.remove(n) {
            out.extend(rest);
        }
    }
    out
}

fn entry_loc(archive: &Path, rel: &str) -> String {
    format!("{}!/{rel}", archive.display())
}

/// Turns an archive entry path into `a/b/c`, refusing absolute paths and `..`.
fn normalize(p: &Path) -> Option<String> {
    let mut parts = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => parts.push(s.to_str()?),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// One entry of a trace directory, as archived.
#[derive(Debug, Clone, PartialEq)]
struct Item {
    rel: String,
    is_dir: bool,
    size: u64,
}

/// The trace directory's entries: `trace_info.json` first, then the rest in
/// lexical depth-first order, directories before their contents. Hidden
/// names (temp files) and anything that is not a plain file or directory
/// are skipped.
fn walk(dir: &Path) -> Result<Vec<Item>> {
    fn rec(dir: &Path, rel: &str, out: &mut Vec<Item>) -> Result<()> {
        let mut entries = Vec::new();
        for e in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
            let e = e.map_err(|e| Error::io(dir, e))?;
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with('.') {
                continue;
            }
            let t = e.file_type().map_err(|err| Error::io(e.path(), err))?;
            entries.push((name.to_owned(), t));
        }
        entries.sort_by(|a, b| {
            let first = |n: &str| !(rel.is_empty() && n == INFO);
            (first(&a.0), &a.0).cmp(&(first(&b.0), &b.0))
        });
        for (name, t) in entries {
            let r = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let p = dir.join(&name);
            if t.is_dir() {
                out.push(Item {
                    rel: r.clone(),
                    is_dir: true,
                    size: 0,
                });
                rec(&p, &r, out)?;
            } else if t.is_file() {
                let size = fs::metadata(&p).map_err(|e| Error::io(&p, e))?.len();
                out.push(Item {
                    rel: r,
                    is_dir: false,
                    size,
                });
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    rec(dir, "", &mut out)?;
    Ok(out)
}

/// `trace_info.json` with `archived: true` and `archived_at` (ms), keeping
/// the key order of the reference (`archived_at` just before `archived`).
fn mark_archived(bytes: &[u8], now: i64) -> std::result::Result<Vec<u8>, String> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("bad trace info: {e}"))?;
    let Value::Object(m) = v else {
        return Err("trace info is not an object".into());
    };
    let mut out = Map::with_capacity(m.len() + 1);
    let mut placed = false;
    for (k, v) in m {
        match k.as_str() {
            "archived_at" => {}
            "archived" => {
                out.insert("archived_at".into(), Value::from(now));
                out.insert("archived".into(), Value::Bool(true));
                placed = true;
            }
            _ => {
                out.insert(k, v);
            }
        }
    }
    if !placed {
        out.insert("archived_at".into(), Value::from(now));
        out.insert("archived".into(), Value::Bool(true));
    }
    serde_json::to_vec_pretty(&Value::Object(out)).map_err(|e| e.to_string())
}

/// RFC 3339 UTC time of `ms` (e.g. `2025-11-18T09:30:00Z`).
fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

// ---- file helpers -------------------------------------------------------------------

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `<D>` of the layout: the first 8 characters of the id, or `others`.
fn shard(id: &str) -> &str {
    if id.len() >= 8 { &id[..8] } else { "others" }
}

fn is_short_id(s: &str) -> bool {
    s.len() == 12
        && s.bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
}

fn checked<'a>(dir: &Path, id: &'a str) -> Result<&'a str> {
    if is_short_id(id) {
        Ok(id)
    } else {
        Err(storage(dir, format!("invalid node or space id {id:?}")))
    }
}

fn storage(path: &Path, message: impl Into<String>) -> Error {
    Error::Storage {
        location: path.display().to_string(),
        message: message.into(),
        source: None,
    }
}

fn exists(p: &Path) -> Result<bool> {
    match fs::symlink_metadata(p) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(p, e)),
    }
}

fn dir_builder() -> fs::DirBuilder {
    #[allow(unused_mut)]
    let mut b = fs::DirBuilder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o755);
    }
    b
}

fn mkdir_all(p: &Path) -> Result<()> {
    dir_builder()
        .recursive(true)
        .create(p)
        .map_err(|e| Error::io(p, e))
}

/// Creates one directory; `Ok(false)` if it was already there.
fn mkdir(p: &Path) -> Result<bool> {
    match dir_builder().create(p) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(Error::io(p, e)),
    }
}

fn sync_dir(p: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        File::open(p)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io(p, e))?;
    }
    #[cfg(not(unix))]
    let _ = p;
    Ok(())
}

fn file_options() -> OpenOptions {
    #[allow(unused_mut)]
    let mut o = OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o644);
    }
    o
}

fn create_new(p: &Path) -> Result<File> {
    file_options()
        .write(true)
        .create_new(true)
        .open(p)
        .map_err(|e| Error::io(p, e))
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Sync {
    None,
    Data,
    All,
}

/// Appends `bytes` in one write; returns the file's length before. On a
/// failed write the file is cut back to that length.
fn append(path: &Path, bytes: &[u8], sync: Sync) -> Result<u64> {
    let mut f = file_options()
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
    let r = f.write_all(bytes).and_then(|()| match sync {
        Sync::None => Ok(()),
        Sync::Data => f.sync_data(),
        Sync::All => f.sync_all(),
    });
    if let Err(e) = r {
        let _ = f.set_len(len);
        return Err(Error::io(path, e));
    }
    Ok(len)
}

/// Writes `bytes` to a new temp file next to `target` (`.<name>.tmp.<random>`)
/// and returns its path; the caller renames it over `target`.
fn write_temp(target: &Path, bytes: &[u8], sync: bool) -> Result<PathBuf> {
    let dir = target.parent().unwrap_or(Path::new("."));
    write_temp_in(dir, target, bytes, sync)
}

/// Like [`write_temp`], with the temp file in `dir` (same filesystem as `target`).
fn write_temp_in(dir: &Path, target: &Path, bytes: &[u8], sync: bool) -> Result<PathBuf> {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp.{:016x}", fastrand::u64(..)));
    let mut f = create_new(&tmp)?;
    let r = f
        .write_all(bytes)
        .and_then(|()| if sync { f.sync_all() } else { Ok(()) });
    if let Err(e) = r {
        drop(f);
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(&tmp, e));
    }
    Ok(tmp)
}

fn remove_temps(temps: &[Option<(PathBuf, PathBuf)>]) {
    for (tmp, _) in temps.iter().flatten() {
        let _ = fs::remove_file(tmp);
    }
}

/// Reads a whole file; `None` if missing; `Corrupt` naming it if larger than `cap`.
fn read_capped(p: &Path, cap: u64) -> Result<Option<Vec<u8>>> {
    let f = match File::open(p) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(p, e)),
    };
    let too_big = |n: u64| {
        Error::corrupt(
            p.display().to_string(),
            format!("file is {n} bytes, larger than the {cap} byte limit"),
        )
    };
    let len = f.metadata().map_err(|e| Error::io(p, e))?.len();
    if len > cap {
        return Err(too_big(len));
    }
    let mut data = Vec::with_capacity(len as usize);
    f.take(cap + 1)
        .read_to_end(&mut data)
        .map_err(|e| Error::io(p, e))?;
    if data.len() as u64 > cap {
        return Err(too_big(data.len() as u64));
    }
    Ok(Some(data))
}

fn read_dir_opt(p: &Path) -> Result<Option<fs::ReadDir>> {
    match fs::read_dir(p) {
        Ok(rd) => Ok(Some(rd)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(p, e)),
    }
}

/// Ids of the plain files `<dir>/<id><suffix>` (12 chars `[0-9a-z]`), sorted.
fn list_names(dir: &Path, suffix: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let Some(rd) = read_dir_opt(dir)? else {
        return Ok(out);
    };
    for e in rd {
        let e = e.map_err(|e| Error::io(dir, e))?;
        let name = e.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(suffix)) else {
            continue;
        };
        if is_short_id(stem) && e.file_type().is_ok_and(|t| t.is_file()) {
            out.push(stem.to_owned());
        }
    }
    out.sort();
    Ok(out)
}

fn remove_file_opt(p: &Path) -> Result<()> {
    remove_file_opt_found(p).map(|_| ())
}

fn remove_file_opt_found(p: &Path) -> Result<bool> {
    match fs::remove_file(p) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(p, e)),
    }
}

fn remove_dir_all_opt(p: &Path) -> Result<bool> {
    match fs::remove_dir_all(p) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(p, e)),
    }
}

/// Cuts a torn final line (no trailing newline) off an append-only file.
fn repair_tail(path: &Path, sync: bool) -> Result<()> {
    let mut f = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(path, e)),
    };
    let io_err = |e: io::Error| Error::io(path, e);
    let len = f.metadata().map_err(io_err)?.len();
    if len == 0 {
        return Ok(());
    }
    let mut last = [0u8; 1];
    f.seek(SeekFrom::Start(len - 1)).map_err(io_err)?;
    f.read_exact(&mut last).map_err(io_err)?;
    if last[0] == b'\n' {
        return Ok(());
    }
    // Find the last newline, reading backwards in chunks.
    let mut end = len;
    let mut buf = vec![0u8; 64 * 1024];
    let mut keep = 0;
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        f.seek(SeekFrom::Start(start)).map_err(io_err)?;
        f.read_exact(chunk).map_err(io_err)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            keep = start + i as u64 + 1;
            break;
        }
        end = start;
    }
    f.set_len(keep).map_err(io_err)?;
    if sync {
        f.sync_all().map_err(io_err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards() {
        assert_eq!(shard("20251118123456789012"), "20251118");
        assert_eq!(shard("abcdefgh"), "abcdefgh");
        assert_eq!(shard("short"), "others");
    }

    #[test]
    fn rfc3339_format() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_763_458_200_123), "2025-11-18T09:30:00Z");
    }

    #[test]
    fn archived_info_keeps_order() {
        let src = br#"{"id":"x","archived_at":null,"archived":false,"metadata":{"a":1}}"#;
        let out = mark_archived(src, 5).unwrap();
        let s = String::from_utf8(out).unwrap();
        let a = s.find("archived_at").unwrap();
        let b = s.find("\"archived\"").unwrap();
        assert!(a < b, "{s}");
        assert!(s.contains("\"archived\": true"));
        assert!(s.contains("\"archived_at\": 5"));
    }

    #[test]
    fn normalize_refuses_escapes() {
        assert_eq!(
            normalize(Path::new("./nodes/a.json")).as_deref(),
            Some("nodes/a.json")
        );
        assert_eq!(normalize(Path::new("../x")), None);
        assert_eq!(normalize(Path::new("/etc/passwd")), None);
        assert_eq!(normalize(Path::new(".")), None);
    }

    #[test]
    fn torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("u.jsonl");
        fs::write(&p, b"{\"a\":1}\n{\"b\":2}\n{\"c\"").unwrap();
        repair_tail(&p, false).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"{\"a\":1}\n{\"b\":2}\n");
        fs::write(&p, b"no newline at all").unwrap();
        repair_tail(&p, true).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"");
    }
}
