//! Reading a stored trace back: where it lives (its directory or its
//! archive), and loading it — documents read whole up to the document cap,
//! line files streamed line by line up to the line cap — into a
//! [`StoredTrace`], with every file and line that does not decode reported
//! as [`Error::Corrupt`] naming it. Reads never follow a link below the base
//! and read nothing but regular files ([`fs`](super::fs)); they have no side
//! effects.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};

use serde_json::Map;

use super::LocalDriver;
use super::fs::{self, Access, Dir, Kind};
use super::layout::{self, INFO, LOGS, NODES, SPACE_DATA, SPACES, UPDATES, is_short_id};
use crate::driver::format::{self, StoredTrace};
use crate::error::{Error, Result};
use crate::id::validate_trace_id;
use crate::model::{SpaceData, TraceInfo};

/// Where a trace's data lives.
#[derive(Debug)]
pub(super) enum Place {
    /// Its directory.
    Dir(Dir),
    /// Its archive: the shard and the archive's name in it.
    Archive(Dir, String),
}

/// A trace's files, on disk or decompressed from its archive.
#[derive(Debug)]
enum Source {
    Dir(Dir),
    Archive(String, BTreeMap<String, Vec<u8>>),
}

impl LocalDriver {
    /// Where the trace's data lives right now: the archive once the marker
    /// exists, else the directory, else an archive without a marker.
    pub(super) fn locate(&self, id: &str) -> Result<Option<Place>> {
        validate_trace_id(id)?;
        let Some(shard) = self.base.open_dir(layout::shard(id), Access::Read)? else {
            return Ok(None);
        };
        let archive = layout::archive_name(id);
        if shard.has(&layout::marker_name(id))? {
            if shard.has(&archive)? {
                return Ok(Some(Place::Archive(shard, archive)));
            }
            if let Some(dir) = shard.open_dir(id, Access::Read)? {
                return Ok(Some(Place::Dir(dir)));
            }
            return Err(Error::corrupt(
                shard.child(&archive).display().to_string(),
                "the trace is marked archived but its archive is missing",
            ));
        }
        if let Some(dir) = shard.open_dir(id, Access::Read)? {
            return Ok(Some(Place::Dir(dir)));
        }
        if shard.has(&archive)? {
            return Ok(Some(Place::Archive(shard, archive)));
        }
        Ok(None)
    }

    /// [`Driver::load`](crate::Driver::load) of the local driver.
    pub(super) fn load_trace(&self, id: &str) -> Result<Option<StoredTrace>> {
        let Some(place) = self.locate(id)? else {
            return Ok(None);
        };
        let src = match place {
            Place::Dir(d) => Source::Dir(d),
            Place::Archive(shard, name) => {
                let files = self.read_archive(&shard, &name, None)?;
                Source::Archive(shard.child(&name).display().to_string(), files)
            }
        };
        self.load_from(id, &src).map(Some)
    }

    /// [`Driver::info`](crate::Driver::info) of the local driver.
    pub(super) fn read_info(&self, id: &str) -> Result<Option<TraceInfo>> {
        let Some(place) = self.locate(id)? else {
            return Ok(None);
        };
        let (bytes, loc) = match &place {
            Place::Dir(d) => (
                d.read_file(INFO, self.max_document)?,
                d.child(INFO).display().to_string(),
            ),
            Place::Archive(shard, name) => (
                self.read_archive(shard, name, Some(INFO))?.remove(INFO),
                archive_location(&shard.child(name).display().to_string(), INFO),
            ),
        };
        let Some(bytes) = bytes else {
            return Err(Error::corrupt(loc, "trace_info.json is missing"));
        };
        let (info, _, _) = format::decode_info(&bytes, &loc)?;
        Ok(Some(info))
    }

    fn load_from(&self, id: &str, src: &Source) -> Result<StoredTrace> {
        let cap = self.max_document;
        let info_loc = src.location(INFO);
        let Some(bytes) = src.read_doc(INFO, cap)? else {
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
        for name in src.names(NODES, ".json")? {
            let rel = format!("{NODES}/{name}.json");
            let loc = src.location(&rel);
            let Some(bytes) = src.read_doc(&rel, cap)? else {
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
        for name in src.names(LOGS, ".jsonl")? {
            let rel = format!("{LOGS}/{name}.jsonl");
            let first = logs.len();
            src.read_lines(&rel, self.max_line, |line, loc| {
                let l = format::decode_log_line(line, loc)?;
                if l.node_id != name {
                    return Err(Error::corrupt(
                        src.location(&rel),
                        format!("holds a log line of node {:?}", l.node_id),
                    ));
                }
                logs.push(l);
                Ok(())
            })?;
            if logs.len() > first && !known.contains(name.as_str()) && orphan.is_none() {
                // Reported after the node checks, which explain more.
                orphan = Some(Error::corrupt(
                    src.location(&rel),
                    format!("log of missing node {name}"),
                ));
            }
        }
        let mut spaces = Vec::new();
        for name in src.names(SPACES, ".json")? {
            let rel = format!("{SPACES}/{name}.json");
            let loc = src.location(&rel);
            let Some(bytes) = src.read_doc(&rel, cap)? else {
                continue;
            };
            let info = format::decode_space(&bytes, &loc)?;
            if info.id != name {
                return Err(Error::corrupt(loc, format!("holds space {:?}", info.id)));
            }
            let drel = format!("{SPACES}/{name}/{SPACE_DATA}");
            let data = match src.read_doc(&drel, cap)? {
                Some(b) => format::decode_space_data(&b, &src.location(&drel))?,
                None => Map::new(),
            };
            spaces.push(SpaceData { info, data });
        }
        spaces.sort_by_key(|s| s.info.created_at);
        let mut events = Vec::new();
        src.read_lines(UPDATES, self.max_line, |line, loc| {
            format::push_event_line(&mut events, line, loc)
        })?;
        let logs = format::order_logs(logs, &events);
        let stored =
            StoredTrace::assemble(info, root, current, nodes, logs, spaces, events, &|nid| {
                src.location(&format!("{NODES}/{nid}.json"))
            })?;
        match orphan {
            Some(e) => Err(e),
            None => Ok(stored),
        }
    }
}

/// `archive.tar.gz!/nodes/x.json`: a file inside an archive.
pub(super) fn archive_location(archive: &str, rel: &str) -> String {
    format!("{archive}!/{rel}")
}

/// Splits `a/b/c.json` into (`a/b`, `c.json`).
fn split(rel: &str) -> (&str, &str) {
    rel.rsplit_once('/').unwrap_or(("", rel))
}

impl Source {
    fn location(&self, rel: &str) -> String {
        match self {
            Source::Dir(d) => d.child(rel).display().to_string(),
            Source::Archive(archive, _) => archive_location(archive, rel),
        }
    }

    /// Calls `f` with the directory holding `rel` (`None` if it does not exist).
    fn in_dir<T>(d: &Dir, rel: &str, f: impl FnOnce(&Dir, &str) -> Result<T>) -> Result<Option<T>> {
        let (parent, name) = split(rel);
        if parent.is_empty() {
            return f(d, name).map(Some);
        }
        match d.open_path(parent, Access::Read)? {
            Some(sub) => f(&sub, name).map(Some),
            None => Ok(None),
        }
    }

    /// A JSON document, whole; `None` if missing.
    fn read_doc(&self, rel: &str, cap: u64) -> Result<Option<Cow<'_, [u8]>>> {
        match self {
            Source::Dir(d) => Ok(Self::in_dir(d, rel, |dir, name| dir.read_file(name, cap))?
                .flatten()
                .map(Cow::Owned)),
            Source::Archive(_, files) => Ok(files.get(rel).map(|v| Cow::Borrowed(v.as_slice()))),
        }
    }

    /// The complete lines of a line file (none if it is missing).
    fn read_lines(
        &self,
        rel: &str,
        max_line: u64,
        f: impl FnMut(&[u8], &str) -> Result<()>,
    ) -> Result<()> {
        match self {
            Source::Dir(d) => {
                Self::in_dir(d, rel, |dir, name| dir.read_lines(name, max_line, f))?;
                Ok(())
            }
            Source::Archive(_, files) => match files.get(rel) {
                Some(bytes) => fs::for_each_line(&bytes[..], &self.location(rel), max_line, f),
                None => Ok(()),
            },
        }
    }

    /// Ids (12 chars `[0-9a-z]`) of the files `<sub>/<id><suffix>`, sorted;
    /// other names are ignored. In a directory, such a name that is not a
    /// regular file (a link, a FIFO) is corrupt.
    fn names(&self, sub: &str, suffix: &str) -> Result<Vec<String>> {
        match self {
            Source::Dir(d) => {
                let Some(dir) = d.open_dir(sub, Access::Read)? else {
                    return Ok(Vec::new());
                };
                let mut out = Vec::new();
                for e in dir.entries()? {
                    let Some(stem) = e.name.strip_suffix(suffix).filter(|s| is_short_id(s)) else {
                        continue;
                    };
                    if e.kind != Kind::File {
                        return Err(
                            Access::Read.refuse(&dir.child(&e.name), "is not a regular file")
                        );
                    }
                    out.push(stem.to_owned());
                }
                out.sort();
                Ok(out)
            }
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
