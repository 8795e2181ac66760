//! Which traces are stored: `exists`, `list` and `remove`, and the removal
//! of shard directories that became empty.
//!
//! A shard directory (`<base>/<D>`, one per day for generated ids) is shared
//! by every trace of that day, so it is deleted only when it is empty *and*
//! nobody is about to create something in it: `remove` takes the driver's
//! shard lock exclusively, without waiting, and leaves the shard in place if
//! it cannot (a trace is being created or archived), so no operation on one
//! trace ever makes another trace's write fail.

use super::LocalDriver;
use super::fs::{Access, Dir, Kind};
use super::layout::{self, SHARD_TMP};
use crate::error::Result;
use crate::id::validate_trace_id;

impl LocalDriver {
    /// [`Driver::exists`](crate::Driver::exists) of the local driver:
    /// the directory, the archive or the marker is there.
    pub(super) fn has_trace(&self, id: &str) -> Result<bool> {
        validate_trace_id(id)?;
        let Some(shard) = self.base.open_dir(layout::shard(id), Access::Read)? else {
            return Ok(false);
        };
        Ok(shard.has(id)?
            || shard.has(&layout::marker_name(id))?
            || shard.has(&layout::archive_name(id))?)
    }

    /// [`Driver::list`](crate::Driver::list) of the local driver: trace
    /// directories and archives, sorted. Links and other special files are
    /// not traces and are skipped.
    pub(super) fn list_traces(&self) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        for s in self.base.entries()? {
            if s.kind != Kind::Dir {
                continue;
            }
            let Some(shard) = self.base.open_dir(&s.name, Access::Read)? else {
                continue;
            };
            for e in shard.entries()? {
                let id = match e.kind {
                    Kind::Dir => e.name.as_str(),
                    Kind::File => match e.name.strip_suffix(".tar.gz") {
                        Some(stem) => stem,
                        None => continue,
                    },
                    Kind::Other => continue,
                };
                if validate_trace_id(id).is_ok() && layout::shard(id) == s.name {
                    ids.push(id.to_owned());
                }
            }
        }
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    /// [`Driver::remove`](crate::Driver::remove) of the local driver: the
    /// directory, the archive, the marker and any temp archive or marker a
    /// crash left behind. Links are removed, never followed.
    pub(super) fn remove_trace(&self, id: &str) -> Result<bool> {
        validate_trace_id(id)?;
        self.ready.forget(id);
        let name = layout::shard(id);
        // Nothing found, or a failure, through a stale shard: look again.
        let found = self
            .in_shard(
                name,
                false,
                |shard| self.remove_in_shard(&shard.dir, id),
                |r| matches!(r, Ok(false) | Err(_)),
            )?
            .unwrap_or(false);
        // Today's shard is where new traces go: keep it (removing it only to
        // make it again on the next create costs a rmdir and a mkdir per
        // trace). Older shards go when they are empty.
        if name != layout::shard_of_today() {
            self.drop_shard_if_empty(name);
        }
        self.ready.forget(id);
        Ok(found)
    }

    /// Removes trace `id`'s directory, archive and markers from `shard`;
    /// whether anything of it was there.
    fn remove_in_shard(&self, shard: &Dir, id: &str) -> Result<bool> {
        let mut found = shard.remove_tree(id)?;
        found |= shard.remove_file(&layout::archive_name(id))?;
        // Temp archives or markers a crash left behind (in the shard's small
        // temp directory: the shard itself is never listed here).
        if let Some(tmp) = shard.open_dir(SHARD_TMP, Access::Write)? {
            let prefixes = [
                layout::temp_archive_prefix(id),
                layout::temp_marker_prefix(id),
            ];
            for e in tmp.entries()? {
                if prefixes.iter().any(|p| e.name.starts_with(p.as_str())) {
                    tmp.remove_tree(&e.name)?;
                }
            }
        }
        found |= shard.remove_file(&layout::marker_name(id))?;
        if self.fsync() {
            shard.sync()?;
        }
        Ok(found)
    }

    /// Deletes the shard `name` (and its temp directory) if both are empty
    /// and no trace is being created or archived right now; otherwise leaves
    /// it (an empty shard is harmless). Never waits.
    pub(super) fn drop_shard_if_empty(&self, name: &str) {
        let Some(_exclusive) = self.shard_use.try_exclusive() else {
            return;
        };
        self.forget_shard(name);
        if let Ok(Some(shard)) = self.base.open_dir(name, Access::Write) {
            let _ = shard.remove_empty_dir(SHARD_TMP);
        }
        let _ = self.base.remove_empty_dir(name);
    }
}
