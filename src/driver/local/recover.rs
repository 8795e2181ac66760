//! Crash repair: what a killed writer may have left in a trace directory,
//! fixed before this process first appends to it — a torn final line (no
//! trailing newline) of `updates.jsonl` or a log file is cut off, and stray
//! temp documents (`.<name>.tmp.<random>`) are deleted. Refuses, like every
//! write, to touch a link or anything but a regular file.

use super::LocalDriver;
use super::fs::{self, Access, Dir, Kind};
use super::layout::{LOGS, NODES, SPACES, UPDATES, is_short_id, is_temp_name};
use crate::error::Result;

impl LocalDriver {
    /// Cuts torn final lines and removes temp files of a trace directory
    /// written by an earlier (possibly killed) process.
    pub(super) fn repair(&self, trace: &Dir) -> Result<()> {
        self.cut_torn_tail(trace, UPDATES)?;
        let logs = trace.open_dir(LOGS, Access::Write)?;
        if let Some(logs) = &logs {
            for e in logs.entries()? {
                let is_log = e.name.strip_suffix(".jsonl").is_some_and(is_short_id);
                if is_log && e.kind == Kind::File {
                    self.cut_torn_tail(logs, &e.name)?;
                }
            }
        }
        remove_temps(trace)?;
        for sub in [NODES, SPACES] {
            if let Some(d) = trace.open_dir(sub, Access::Write)? {
                remove_temps(&d)?;
            }
        }
        if let Some(logs) = &logs {
            remove_temps(logs)?;
        }
        if let Some(spaces) = trace.open_dir(SPACES, Access::Write)? {
            for e in spaces.entries()? {
                if e.kind == Kind::Dir
                    && let Some(d) = spaces.open_dir(&e.name, Access::Write)?
                {
                    remove_temps(&d)?;
                }
            }
        }
        Ok(())
    }

    fn cut_torn_tail(&self, dir: &Dir, name: &str) -> Result<()> {
        match dir.open_read_write(name)? {
            Some((mut file, len)) => {
                fs::cut_torn_tail(&mut file, len, &dir.child(name), self.fsync())
            }
            None => Ok(()),
        }
    }
}

/// Removes the temp documents in `dir` (never a directory of that name).
fn remove_temps(dir: &Dir) -> Result<()> {
    for e in dir.entries()? {
        if e.kind != Kind::Dir && is_temp_name(&e.name) {
            dir.remove_file(&e.name)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::fs as stdfs;

    use super::*;

    #[test]
    fn torn_tail_is_cut() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Dir::open_base(tmp.path()).unwrap();
        let p = tmp.path().join("u.jsonl");
        let cut = |sync| {
            let (mut f, len) = dir.open_read_write("u.jsonl").unwrap().unwrap();
            fs::cut_torn_tail(&mut f, len, &p, sync).unwrap();
        };
        stdfs::write(&p, b"{\"a\":1}\n{\"b\":2}\n{\"c\"").unwrap();
        cut(false);
        assert_eq!(stdfs::read(&p).unwrap(), b"{\"a\":1}\n{\"b\":2}\n");
        stdfs::write(&p, b"no newline at all").unwrap();
        cut(true);
        assert_eq!(stdfs::read(&p).unwrap(), b"");
    }
}
