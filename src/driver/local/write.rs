//! The batch writer: applies one [`WriteBatch`] to a trace directory — event
//! lines, then log lines, then documents — after making sure the trace's
//! directories exist, and undoes what a failed batch did.
//!
//! - A new trace ([`WriteBatch::is_new_trace`]) gets its directory from an
//!   exclusive `mkdir`: if the directory, an archive or an archive marker of
//!   that id exists, the batch fails with [`Error::AlreadyExists`] and
//!   nothing is written or touched.
//! - A batch that created the trace directory and then failed (a full disk)
//!   removes the directory again: no skeleton trace is left behind, and the
//!   engine's retry starts from nothing.
//! - Any other failed batch is rolled back: appends are cut back to their
//!   old length (files the batch created are removed), temp files and the
//!   directories the batch created are removed. Documents already renamed
//!   into place stay (each is whole; the retry rewrites them).
//!
//! The only state kept across batches is [`ReadyCache`], the bounded set of
//! traces whose directories this process created or checked.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use super::fs::{Access, Dir, Sync};
use super::layout::{self, INFO, LOGS, NODES, SPACE_DATA, SPACES, UPDATES, is_short_id};
use super::{Durability, LocalDriver, OpenShard, WriteBatch};
use crate::driver::DocKind;
use crate::error::{Error, Result};
use crate::id::validate_trace_id;

/// How many traces [`ReadyCache`] remembers before it is cleared (it only
/// saves `mkdir` calls and crash-repair scans).
const READY_CAP: usize = 4096;

/// Bytes of event lines kept in a worker's scratch buffer between batches.
const SCRATCH_KEEP: usize = 1 << 20;

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Traces whose directories this process created or checked (and whose
/// torn tails it repaired). Cleared of a trace by `remove`, `archive` and a
/// failed batch.
#[derive(Debug, Default)]
pub(super) struct ReadyCache(Mutex<HashSet<String>>);

impl ReadyCache {
    fn lock(&self) -> MutexGuard<'_, HashSet<String>> {
        crate::driver::lock(&self.0)
    }

    fn contains(&self, id: &str) -> bool {
        self.lock().contains(id)
    }

    fn insert(&self, id: &str) {
        let mut set = self.lock();
        if set.len() >= READY_CAP {
            set.clear();
        }
        set.insert(id.to_owned());
    }

    /// Forgets trace `id` (its directories are checked again before the next write).
    pub(super) fn forget(&self, id: &str) {
        self.lock().remove(id);
    }
}

/// A trace's shard and directory, opened for a batch.
#[derive(Debug)]
struct TraceDirs {
    shard: std::sync::Arc<Dir>,
    trace: Dir,
    /// Whether this batch created the trace directory.
    created: bool,
}

/// What a batch did so far, to undo it if it fails.
#[derive(Debug, Default)]
struct Undo {
    /// Appends, by directory relative to the trace directory (`""` or `logs`).
    appends: Vec<(&'static str, super::fs::Appended)>,
    /// Temp documents (directory relative to the trace directory, name), in
    /// the order they are renamed; the first `renamed` of them are in place.
    temps: Vec<(String, String)>,
    renamed: usize,
    /// Directories the batch created: (parent relative to the trace
    /// directory, name).
    dirs: Vec<(String, String)>,
}

impl Undo {
    /// Best effort: the batch already failed; what cannot be undone stays
    /// (the next first write of the trace repairs torn tails and temp files).
    fn run(&self, trace: &Dir) {
        let in_dir = |rel: &str, f: &mut dyn FnMut(&Dir)| {
            if rel.is_empty() {
                f(trace);
            } else if let Ok(Some(d)) = trace.open_path(rel, Access::Write) {
                f(&d);
            }
        };
        for (rel, name) in &self.temps[self.renamed..] {
            in_dir(rel, &mut |d| {
                let _ = d.remove_file(name);
            });
        }
        for (rel, a) in self.appends.iter().rev() {
            in_dir(rel, &mut |d| {
                let _ = d.undo_append(a);
            });
        }
        for (rel, name) in self.dirs.iter().rev() {
            in_dir(rel, &mut |d| {
                let _ = d.remove_tree(name);
            });
        }
    }
}

/// Where a document goes.
#[derive(Debug, Clone, Copy)]
enum Slot {
    Trace,
    Nodes,
    Spaces,
    /// `spaces/<id>/`: index into the batch's space data directories.
    SpaceData(usize),
}

/// One step of a batch's document phase, after its temp files are written.
#[derive(Debug)]
enum Step {
    Rename {
        slot: Slot,
        tmp: String,
        target: String,
    },
    DeleteSpace {
        id: String,
    },
}

/// The directories a batch's documents go to, opened (or created) on first use.
#[derive(Debug, Default)]
struct DocDirs {
    /// The trace directory was made by this batch: nothing is in it yet,
    /// so subdirectories are made (not looked up) and renames into it skip
    /// the check of what they replace.
    fresh: bool,
    nodes: Option<Dir>,
    spaces: Option<Dir>,
    /// Whether `nodes/`, `spaces/` were made by this batch.
    nodes_made: bool,
    spaces_made: bool,
    /// `spaces/<id>/` directories, and whether this batch made each.
    space_data: Vec<Dir>,
    space_data_made: Vec<bool>,
    sync_trace: bool,
    sync_nodes: bool,
    sync_spaces: bool,
    sync_space_data: Vec<usize>,
}

impl DocDirs {
    /// Opens `name` in `parent`, making it if missing: `mkdir` first when
    /// `parent` was made by this batch (the subdirectory cannot exist yet).
    fn open_or_make(parent: &Dir, name: &str, parent_fresh: bool) -> Result<(Dir, bool)> {
        if parent_fresh {
            parent.make_or_open_dir(name)
        } else {
            parent.open_or_make_dir(name)
        }
    }

    /// Whether the directory of `slot` was made by this batch.
    fn is_fresh(&self, slot: Slot) -> bool {
        match slot {
            Slot::Trace => self.fresh,
            Slot::Nodes => self.nodes_made,
            Slot::Spaces => self.spaces_made,
            Slot::SpaceData(i) => self.space_data_made.get(i).copied().unwrap_or(false),
        }
    }

    /// `nodes/`, made on first use (then removed again if the batch fails).
    fn nodes(&mut self, trace: &Dir, undo: &mut Undo) -> Result<&Dir> {
        if self.nodes.is_none() {
            let (d, made) = Self::open_or_make(trace, NODES, self.fresh)?;
            self.nodes_made = made;
            if made {
                undo.dirs.push((String::new(), NODES.to_owned()));
                self.sync_trace = true;
            }
            self.nodes = Some(d);
        }
        Ok(self.nodes.as_ref().expect("opened above"))
    }

    /// `spaces/`, made on first use (then removed again if the batch fails).
    fn spaces(&mut self, trace: &Dir, undo: &mut Undo) -> Result<&Dir> {
        if self.spaces.is_none() {
            let (d, made) = Self::open_or_make(trace, SPACES, self.fresh)?;
            self.spaces_made = made;
            if made {
                undo.dirs.push((String::new(), SPACES.to_owned()));
                self.sync_trace = true;
            }
            self.spaces = Some(d);
        }
        Ok(self.spaces.as_ref().expect("opened above"))
    }

    fn get<'a>(&'a self, trace: &'a Dir, slot: Slot) -> Result<&'a Dir> {
        let d = match slot {
            Slot::Trace => Some(trace),
            Slot::Nodes => self.nodes.as_ref(),
            Slot::Spaces => self.spaces.as_ref(),
            Slot::SpaceData(i) => self.space_data.get(i),
        };
        d.ok_or_else(|| Error::storage(trace.path().display().to_string(), "directory not opened"))
    }
}

fn checked<'a>(dir: &Dir, id: &'a str) -> Result<&'a str> {
    if is_short_id(id) {
        Ok(id)
    } else {
        Err(Error::storage(
            dir.path().display().to_string(),
            format!("invalid node or space id {id:?}"),
        ))
    }
}

impl LocalDriver {
    /// [`Driver::write`](crate::Driver::write) of the local driver.
    pub(super) fn write_batch(&self, batch: &WriteBatch<'_>) -> Result<()> {
        let id = batch.trace_id;
        validate_trace_id(id)?;
        if batch.is_empty() {
            return Ok(());
        }
        let new = batch.is_new_trace();
        let cached = !new && self.ready.contains(id);
        let mut r = self.write_once(batch, cached);
        if r.is_err() {
            // Re-check the directories (and repair) before the next attempt.
            self.ready.forget(id);
            if cached && !matches!(r, Err(Error::AlreadyExists)) {
                // The cache may be stale (another process archived or removed
                // the trace): check again and retry once. A failed batch was
                // rolled back, so the retry cannot duplicate lines.
                r = self.write_once(batch, false);
                if r.is_err() {
                    self.ready.forget(id);
                }
            }
        }
        r
    }

    fn write_once(&self, batch: &WriteBatch<'_>, cached: bool) -> Result<()> {
        let id = batch.trace_id;
        let dirs = match cached.then(|| self.open_trace_dirs(id)).transpose()? {
            Some(Some(dirs)) => dirs,
            _ => self.make_trace_dirs(id, batch.is_new_trace())?,
        };
        let known = cached && !dirs.created;
        let r = if known {
            self.apply(&dirs.trace, batch, false)
        } else {
            self.finish_trace_dir(&dirs)
                .and_then(|()| self.apply(&dirs.trace, batch, dirs.created))
        };
        match r {
            Ok(()) => {
                if !known {
                    self.ready.insert(id);
                }
                Ok(())
            }
            Err(e) => {
                if dirs.created {
                    // Everything in the directory came from this batch: take it
                    // all away, so that no skeleton trace is left and the retry
                    // (a first batch again) starts from nothing.
                    let TraceDirs { shard, trace, .. } = dirs;
                    drop(trace);
                    let _ = shard.remove_tree(id);
                    drop(shard);
                    self.drop_shard_if_empty(layout::shard(id));
                }
                Err(e)
            }
        }
    }

    /// Opens the directories of a trace known to exist; `None` if they do
    /// not (any more).
    fn open_trace_dirs(&self, id: &str) -> Result<Option<TraceDirs>> {
        let open = |shard: &OpenShard| {
            Ok(shard
                .dir
                .open_dir(id, Access::Write)?
                .map(|trace| TraceDirs {
                    shard: shard.dir.clone(),
                    trace,
                    created: false,
                }))
        };
        // Not found through a stale shard: look again.
        let dirs = self.in_shard(layout::shard(id), false, open, |r| matches!(r, Ok(None)))?;
        Ok(dirs.flatten())
    }

    /// Creates (or opens) the trace's shard and directory. For a new trace
    /// the directory must not exist (exclusive `mkdir`), nor an archive or
    /// marker of the id: [`Error::AlreadyExists`].
    fn make_trace_dirs(&self, id: &str, new: bool) -> Result<TraceDirs> {
        let name = layout::shard(id);
        // Until the trace directory exists the shard may be empty: keep
        // `remove` of another trace from deleting it meanwhile.
        let in_use = self.shard_use.hold();
        // A storage error through a stale shard (`mkdir` in a deleted
        // directory): once more through a freshly opened (or made) one.
        let (shard, created) = self
            .in_shard(
                name,
                true,
                |shard| {
                    let created = self.make_trace_dir(&shard.dir, id, new)?;
                    Ok((shard.clone(), created))
                },
                |r| matches!(r, Err(Error::Storage { .. })),
            )?
            .ok_or_else(|| {
                Error::storage(
                    self.base.child(name).display().to_string(),
                    "shard directory vanished right after it was created",
                )
            })?;
        let opened = shard.dir.open_dir(id, Access::Write);
        drop(in_use);
        let trace = opened.and_then(|trace| {
            let trace = trace.ok_or_else(|| {
                Error::storage(
                    shard.dir.child(id).display().to_string(),
                    "trace directory vanished while it was being created",
                )
            })?;
            if self.fsync() && shard.made {
                self.base.sync()?;
            }
            Ok(trace)
        });
        match trace {
            Ok(trace) => Ok(TraceDirs {
                shard: shard.dir,
                trace,
                created,
            }),
            Err(e) => {
                if created {
                    let _ = shard.dir.remove_tree(id);
                }
                Err(e)
            }
        }
    }

    /// The trace directory `id` in `shard`: made (`true`) or found. For a
    /// new trace it must not exist, nor an archive or marker of the id.
    fn make_trace_dir(&self, shard: &Dir, id: &str, new: bool) -> Result<bool> {
        if shard.has(&layout::marker_name(id))? {
            if new {
                return Err(Error::AlreadyExists);
            }
            return Err(Error::storage(
                shard.child(id).display().to_string(),
                format!("cannot write: trace {id} is archived (read-only)"),
            ));
        }
        if new && shard.has(&layout::archive_name(id))? {
            return Err(Error::AlreadyExists);
        }
        let created = shard.make_dir(id)?;
        if new && !created {
            return Err(Error::AlreadyExists);
        }
        Ok(created)
    }

    /// First write to a trace in this process: what a crashed writer left
    /// is repaired, and new directories are synced at [`Durability::Fsync`].
    /// The subdirectories (`nodes/`, `logs/`, `spaces/`) are made when the
    /// first file goes into them: a trace without logs has no `logs/`
    /// (readers treat a missing subdirectory as empty), which saves a
    /// `mkdir` now and a `rmdir` at removal per empty one.
    fn finish_trace_dir(&self, dirs: &TraceDirs) -> Result<()> {
        if self.fsync() {
            dirs.trace.sync()?;
            if dirs.created {
                dirs.shard.sync()?;
            }
        }
        if !dirs.created {
            self.repair(&dirs.trace)?;
        }
        Ok(())
    }

    /// Applies the batch; on failure undoes what it did and returns the
    /// error. `fresh`: the trace directory was made by this batch.
    fn apply(&self, trace: &Dir, batch: &WriteBatch<'_>, fresh: bool) -> Result<()> {
        let mut undo = Undo::default();
        let r = self.apply_steps(trace, batch, fresh, &mut undo);
        if r.is_err() {
            undo.run(trace);
        }
        r
    }

    fn apply_steps(
        &self,
        trace: &Dir,
        batch: &WriteBatch<'_>,
        fresh: bool,
        undo: &mut Undo,
    ) -> Result<()> {
        let fsync = self.fsync();
        let mut dirs = DocDirs {
            fresh,
            ..DocDirs::default()
        };
        let n_events = batch.len();
        // 1. Event lines: one append.
        if n_events > 0 {
            let sync = match self.durability {
                Durability::Buffered => Sync::None,
                Durability::Flush => Sync::Data,
                Durability::Fsync => Sync::All,
            };
            let appended = SCRATCH.with(|cell| {
                let mut buf = cell.borrow_mut();
                buf.clear();
                for e in batch.events() {
                    buf.extend_from_slice(e.bytes);
                    buf.push(b'\n');
                }
                let r = trace.append(UPDATES, &buf, sync, fresh);
                if buf.capacity() > SCRATCH_KEEP {
                    *buf = Vec::new();
                }
                r
            })?;
            dirs.sync_trace |= appended.created;
            undo.appends.push(("", appended));
        }
        // 2. Log lines: one append per node file.
        let mut sync_logs = None;
        if batch.log_lines().len() != 0 {
            let mut groups: Vec<(&str, Vec<u8>)> = Vec::new();
            let mut index: HashMap<&str, usize> = HashMap::new();
            for l in batch.log_lines() {
                checked(trace, l.node_id)?;
                let i = *index.entry(l.node_id).or_insert_with(|| {
                    groups.push((l.node_id, Vec::new()));
                    groups.len() - 1
                });
                groups[i].1.extend_from_slice(l.bytes);
                groups[i].1.push(b'\n');
            }
            let sync = if fsync { Sync::All } else { Sync::None };
            let (logs, made) = DocDirs::open_or_make(trace, LOGS, fresh)?;
            if made {
                undo.dirs.push((String::new(), LOGS.to_owned()));
                dirs.sync_trace = true;
            }
            for (node, bytes) in &groups {
                let a = logs.append(&format!("{node}.jsonl"), bytes, sync, made)?;
                undo.appends.push((LOGS, a));
            }
            sync_logs = Some(logs);
        }
        // 3. Documents: every temp file first, then the renames in order, so
        //    that a crash leaves as few half-applied batches as possible.
        let mut steps = Vec::with_capacity(batch.docs().len());
        for doc in batch.docs() {
            let (slot, rel, target) = match doc.kind {
                DocKind::Info => {
                    dirs.sync_trace = true;
                    (Slot::Trace, String::new(), INFO.to_owned())
                }
                DocKind::Node => {
                    let id = checked(trace, doc.id)?;
                    dirs.nodes(trace, undo)?;
                    dirs.sync_nodes = true;
                    (Slot::Nodes, NODES.to_owned(), format!("{id}.json"))
                }
                DocKind::Space => {
                    let id = checked(trace, doc.id)?;
                    dirs.spaces(trace, undo)?;
                    dirs.sync_spaces = true;
                    (Slot::Spaces, SPACES.to_owned(), format!("{id}.json"))
                }
                DocKind::SpaceData => {
                    let id = checked(trace, doc.id)?;
                    dirs.spaces(trace, undo)?;
                    let (d, made) = DocDirs::open_or_make(
                        dirs.get(trace, Slot::Spaces)?,
                        id,
                        dirs.spaces_made,
                    )?;
                    let rel = format!("{SPACES}/{id}");
                    if made {
                        undo.dirs.push((SPACES.to_owned(), id.to_owned()));
                        dirs.sync_spaces = true;
                    }
                    dirs.space_data.push(d);
                    dirs.space_data_made.push(made);
                    let i = dirs.space_data.len() - 1;
                    dirs.sync_space_data.push(i);
                    (Slot::SpaceData(i), rel, SPACE_DATA.to_owned())
                }
                DocKind::SpaceDeleted => {
                    let id = checked(trace, doc.id)?;
                    dirs.spaces(trace, undo)?;
                    dirs.sync_spaces = true;
                    steps.push(Step::DeleteSpace { id: id.to_owned() });
                    continue;
                }
            };
            let tmp = dirs
                .get(trace, slot)?
                .write_temp(&target, doc.bytes, fsync)?;
            undo.temps.push((rel, tmp.clone()));
            steps.push(Step::Rename { slot, tmp, target });
        }
        #[cfg(test)]
        if self
            .fail_before_renames
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            return Err(Error::storage(
                trace.path().display().to_string(),
                "injected failure before the renames",
            ));
        }
        for step in &steps {
            match step {
                Step::Rename { slot, tmp, target } => {
                    let d = dirs.get(trace, *slot)?;
                    d.rename(tmp, d, target, dirs.is_fresh(*slot))?;
                    undo.renamed += 1;
                }
                Step::DeleteSpace { id } => {
                    let spaces = dirs.get(trace, Slot::Spaces)?;
                    spaces.remove_file(&format!("{id}.json"))?;
                    spaces.remove_tree(id)?;
                }
            }
        }
        if fsync {
            if n_events > 0 || dirs.sync_trace {
                trace.sync()?;
            }
            if let Some(logs) = &sync_logs {
                logs.sync()?;
            }
            if dirs.sync_nodes {
                dirs.get(trace, Slot::Nodes)?.sync()?;
            }
            if dirs.sync_spaces {
                dirs.get(trace, Slot::Spaces)?.sync()?;
            }
            for &i in &dirs.sync_space_data {
                dirs.get(trace, Slot::SpaceData(i))?.sync()?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::fs as stdfs;
    use std::os::unix::fs::symlink;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use super::*;
    use crate::driver::Driver;
    use crate::driver::test_batch::TestBatch;

    const ID: &str = "write-test-trace";
    const NODE: &str = "node00000001";

    fn driver(base: &Path) -> LocalDriver {
        LocalDriver::new(base, Durability::Buffered).unwrap()
    }

    /// A complete first batch: init event, root node, a log line, the info.
    fn first(new: bool) -> TestBatch {
        TestBatch::new(ID, new)
            .event(1, "")
            .event(2, NODE)
            .node(NODE)
            .log(NODE)
            .info(Some(NODE))
    }

    /// A later batch: one more event and log line, the node and info again.
    fn later(seq: u64) -> TestBatch {
        TestBatch::new(ID, false)
            .event(seq, NODE)
            .log(NODE)
            .node(NODE)
            .info(Some(NODE))
    }

    /// Every file and directory below `dir` with its content.
    fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
        fn rec(d: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
            for e in stdfs::read_dir(d).unwrap() {
                let p = e.unwrap().path();
                let t = stdfs::symlink_metadata(&p).unwrap().file_type();
                if t.is_dir() {
                    out.insert(p.clone(), Vec::new());
                    rec(&p, out);
                } else if t.is_file() {
                    out.insert(p.clone(), stdfs::read(&p).unwrap());
                } else {
                    out.insert(p.clone(), b"<special>".to_vec());
                }
            }
        }
        let mut out = BTreeMap::new();
        rec(dir, &mut out);
        out
    }

    fn expect_storage(r: Result<()>, needle: &str) -> String {
        match r {
            Err(e @ Error::Storage { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains(needle), "{msg:?} does not name {needle:?}");
                msg
            }
            other => panic!("expected Storage naming {needle}, got {other:?}"),
        }
    }

    // ---- the shard kept open ---------------------------------------------------

    #[test]
    fn a_shard_deleted_behind_the_drivers_back_is_opened_again() {
        let tmp = tempfile::tempdir().unwrap();
        let d = driver(tmp.path());
        let shard = tmp.path().join(layout::shard(ID));
        // The shard is kept open after this write; then someone deletes it.
        d.write(&first(true).batch()).unwrap();
        stdfs::remove_dir_all(&shard).unwrap();
        // A new trace goes into a new shard (not into the deleted one).
        d.write(&first(true).batch()).unwrap();
        assert!(shard.join(ID).join(UPDATES).is_file());
        // A later batch of it finds it, and so does remove.
        d.write(&later(3).batch()).unwrap();
        assert_eq!(d.load(ID).unwrap().unwrap().events.len(), 3);
        // Deleted and made again by someone else while kept open: remove
        // still finds the trace in the new one.
        let moved = tmp.path().join("moved-away");
        stdfs::rename(&shard, &moved).unwrap();
        stdfs::create_dir(&shard).unwrap();
        stdfs::rename(moved.join(ID), shard.join(ID)).unwrap();
        stdfs::remove_dir_all(&moved).unwrap();
        assert_eq!(d.load(ID).unwrap().unwrap().events.len(), 3);
        assert!(d.remove(ID).unwrap());
        assert!(!shard.join(ID).exists());
        assert!(!d.remove(ID).unwrap());
    }

    // ---- exclusive creation --------------------------------------------------

    #[test]
    fn a_new_trace_is_created_exclusively() {
        let tmp = tempfile::tempdir().unwrap();
        let d = driver(tmp.path());
        d.write(&first(true).batch()).unwrap();
        let stored = d.load(ID).unwrap().unwrap();
        assert_eq!(stored.events.len(), 2);
        assert_eq!(stored.logs.len(), 1);
        // Another "new" trace with the id (a collision) writes nothing, and
        // neither does a fresh driver (no cache involved).
        let before = snapshot(tmp.path());
        for d in [d, driver(tmp.path())] {
            let other = TestBatch::new(ID, true).event(1, "").info(None);
            assert!(matches!(d.write(&other.batch()), Err(Error::AlreadyExists)));
            assert_eq!(
                snapshot(tmp.path()),
                before,
                "the existing trace is untouched"
            );
        }
        // Not new: written as usual.
        driver(tmp.path()).write(&later(3).batch()).unwrap();
    }

    #[test]
    fn an_archived_or_marked_id_already_exists() {
        let tmp = tempfile::tempdir().unwrap();
        let d = driver(tmp.path());
        d.write(&first(false).batch()).unwrap();
        d.archive(ID).unwrap();
        let before = snapshot(tmp.path());
        let b = first(true);
        assert!(matches!(d.write(&b.batch()), Err(Error::AlreadyExists)));
        assert_eq!(snapshot(tmp.path()), before);
        // An archive without its marker (a crash mid-archive) counts too.
        let shard = tmp.path().join(layout::shard(ID));
        stdfs::remove_file(shard.join(layout::marker_name(ID))).unwrap();
        let before = snapshot(tmp.path());
        assert!(matches!(d.write(&b.batch()), Err(Error::AlreadyExists)));
        assert_eq!(snapshot(tmp.path()), before);
    }

    // ---- rollback ------------------------------------------------------------

    #[test]
    fn a_failed_first_batch_leaves_nothing_and_its_retry_succeeds() {
        for new in [true, false] {
            let tmp = tempfile::tempdir().unwrap();
            let d = driver(tmp.path());
            d.fail_before_renames.store(true, Ordering::SeqCst);
            let b = first(new);
            expect_storage(d.write(&b.batch()), "injected failure");
            assert!(
                d.list().unwrap().is_empty(),
                "new={new}: no skeleton listed"
            );
            assert!(!d.exists(ID).unwrap(), "new={new}");
            assert!(
                !tmp.path().join(layout::shard(ID)).exists(),
                "new={new}: {:?}",
                snapshot(tmp.path())
            );
            // The engine retries the same batch, still flagged new.
            d.fail_before_renames.store(false, Ordering::SeqCst);
            d.write(&b.batch()).unwrap();
            let stored = d.load(ID).unwrap().unwrap();
            assert_eq!(stored.events.len(), 2, "new={new}: events once");
            assert_eq!(stored.logs.len(), 1, "new={new}: log lines once");
        }
    }

    #[test]
    fn a_failed_later_batch_is_rolled_back() {
        let tmp = tempfile::tempdir().unwrap();
        let d = driver(tmp.path());
        d.write(&first(false).batch()).unwrap();
        let before = snapshot(tmp.path());
        d.fail_before_renames.store(true, Ordering::SeqCst);
        // New files too: another node's log line.
        let b = later(3)
            .log("node00000002")
            .node("node00000002")
            .space("space0000001");
        expect_storage(d.write(&b.batch()), "injected failure");
        assert_eq!(
            snapshot(tmp.path()),
            before,
            "appends cut, temp and new files removed"
        );
        d.fail_before_renames.store(false, Ordering::SeqCst);
        d.write(&b.batch()).unwrap();
        let stored = d.load(ID).unwrap().unwrap();
        assert_eq!(stored.events.len(), 3);
        assert_eq!(stored.logs.len(), 3);
        assert_eq!(stored.nodes.len(), 2);
        assert_eq!(stored.spaces.len(), 1);
        assert_eq!(stored.spaces[0].data["k"], 1);
    }

    // ---- links and special files ---------------------------------------------

    /// A stored trace, a driver that has not written it yet (its first write
    /// repairs) and one that has (it writes straight away), and a file
    /// outside the base.
    struct Linked {
        tmp: tempfile::TempDir,
        base: PathBuf,
        dir: PathBuf,
        outside: PathBuf,
    }

    fn linked() -> Linked {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join("base");
        driver(&base).write(&first(false).batch()).unwrap();
        let dir = base.join(layout::shard(ID)).join(ID);
        let outside = tmp.path().join("outside");
        stdfs::create_dir(&outside).unwrap();
        Linked {
            tmp,
            base,
            dir,
            outside,
        }
    }

    /// Replaces `rel` in the trace directory by a link to a copy of it
    /// outside the base (with an unfinished line appended to line files).
    fn replace_by_link(l: &Linked, rel: &str) -> PathBuf {
        let inside = l.dir.join(rel);
        let target = l.outside.join(rel.replace('/', "_"));
        if inside.is_dir() {
            stdfs::rename(&inside, &target).unwrap();
        } else {
            let mut bytes = stdfs::read(&inside).unwrap();
            if rel.ends_with(".jsonl") {
                bytes.extend_from_slice(b"{\"unfinished\":");
            }
            stdfs::write(&target, bytes).unwrap();
            stdfs::remove_file(&inside).unwrap();
        }
        symlink(&target, &inside).unwrap();
        target
    }

    #[test]
    fn writes_never_follow_a_link_out_of_the_base() {
        let cases = [
            "updates.jsonl".to_owned(),
            format!("logs/{NODE}.jsonl"),
            format!("nodes/{NODE}.json"),
            "trace_info.json".to_owned(),
            "nodes".to_owned(),
            "logs".to_owned(),
        ];
        for rel in &cases {
            for warm in [false, true] {
                let l = linked();
                let d = driver(&l.base);
                if warm {
                    // The driver has written the trace before (cached as ready).
                    d.write(&later(3).batch()).unwrap();
                }
                replace_by_link(&l, rel);
                let outside = snapshot(&l.outside);
                let seq = if warm { 4 } else { 3 };
                let name = rel.split('/').next().unwrap();
                expect_storage(d.write(&later(seq).batch()), name);
                assert_eq!(
                    snapshot(&l.outside),
                    outside,
                    "{rel} (warm {warm}): outside untouched"
                );
                drop(l.tmp);
            }
        }
    }

    #[test]
    fn a_linked_shard_or_trace_directory_is_not_followed() {
        // The shard is a link: writes are refused, nothing outside changes.
        let l = linked();
        let shard = l.base.join(layout::shard(ID));
        let moved = l.outside.join("shard");
        stdfs::rename(&shard, &moved).unwrap();
        symlink(&moved, &shard).unwrap();
        let outside = snapshot(&l.outside);
        let d = driver(&l.base);
        expect_storage(d.write(&later(3).batch()), layout::shard(ID));
        expect_storage(d.remove(ID).map(|_| ()), layout::shard(ID));
        assert!(d.load(ID).is_err());
        assert_eq!(snapshot(&l.outside), outside);
        // The trace directory is a link: remove deletes the link only.
        let l = linked();
        let moved = l.outside.join("trace");
        stdfs::rename(&l.dir, &moved).unwrap();
        symlink(&moved, &l.dir).unwrap();
        let outside = snapshot(&l.outside);
        let d = driver(&l.base);
        expect_storage(d.write(&later(3).batch()), ID);
        assert!(matches!(d.load(ID), Err(Error::Corrupt { .. })));
        assert!(d.remove(ID).unwrap());
        assert!(!l.dir.exists() && stdfs::symlink_metadata(&l.dir).is_err());
        assert_eq!(snapshot(&l.outside), outside);
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        for rel in ["updates.jsonl".to_owned(), format!("logs/{NODE}.jsonl")] {
            let l = linked();
            let p = l.dir.join(&rel);
            stdfs::remove_file(&p).unwrap();
            rustix::fs::mknodat(
                rustix::fs::CWD,
                &p,
                rustix::fs::FileType::Fifo,
                rustix::fs::Mode::from_raw_mode(0o644),
                0,
            )
            .unwrap();
            let base = l.base.clone();
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let _ = tx.send(driver(&base).write(&later(3).batch()));
            });
            let r = rx
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("writing to a FIFO {rel} blocked"));
            let msg = expect_storage(r, &rel);
            assert!(msg.contains("FIFO"), "{msg}");
        }
    }
}
