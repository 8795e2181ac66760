//! Archives: `<D>/<id>.tar.gz` (a gzip'd tar of the trace directory) plus the
//! marker `<D>/.<id>.archived`.
//!
//! Archiving writes the archive to a temp file in the shard's `.tmp`
//! directory, fsyncs it (not at [`Durability::Buffered`](crate::Durability::Buffered),
//! whose promise is surviving a killed process, which the page cache keeps:
//! no `fsync` anywhere then) and renames it into place, verifies it (every entry
//! decompressed, gzip CRC included, compared with the directory, which must
//! be unchanged), writes the marker atomically, and only then removes the
//! directory. A crash at any point leaves a readable trace. Reading an
//! archive decompresses it in memory (documents capped like files on disk,
//! line files capped per line); nothing is extracted onto disk.

use std::collections::BTreeMap;
use std::io::{self, BufReader, BufWriter, Read};
use std::path::{Component, Path};

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use serde_json::{Map, Value};

use super::fs::{self, Access, Dir, Kind};
use super::layout::{self, INFO, SHARD_TMP};
use super::read::archive_location;
use super::{Durability, LocalDriver};
use crate::error::{Error, Result};
use crate::id::{civil_from_days, now_ms, validate_trace_id};

/// One entry of a trace directory, as archived.
#[derive(Debug, Clone, PartialEq)]
struct Item {
    rel: String,
    is_dir: bool,
    size: u64,
}

impl LocalDriver {
    /// [`Driver::archive`](crate::Driver::archive) of the local driver.
    pub(super) fn archive_trace(&self, id: &str) -> Result<()> {
        validate_trace_id(id)?;
        self.ready.forget(id);
        // The shard's `.tmp` is used below: keep `remove` of another trace
        // from deleting it (or the shard) meanwhile.
        let _in_use = self.shard_use.hold();
        let Some(shard) = self.base.open_dir(layout::shard(id), Access::Write)? else {
            return Err(Error::NotFound);
        };
        let archive = layout::archive_name(id);
        let marker = layout::marker_name(id);
        if shard.has(&marker)? {
            // Already archived; finish a removal a crash may have interrupted.
            if shard.has(&archive)? {
                shard.remove_tree(id)?;
            }
            return Ok(());
        }
        let Some(dir) = shard.open_dir(id, Access::Read)? else {
            return Err(Error::NotFound);
        };
        // trace_info.json as it goes into the archive: archived, with the time.
        let Some(info_bytes) = dir.read_file(INFO, self.max_document)? else {
            return Err(Error::corrupt(
                dir.child(INFO).display().to_string(),
                "trace_info.json is missing",
            ));
        };
        let info_json = mark_archived(&info_bytes, now_ms())
            .map_err(|m| Error::corrupt(dir.child(INFO).display().to_string(), m))?;
        let items = walk(&dir)?;
        let (tmp_dir, _) = shard.open_or_make_dir(SHARD_TMP)?;
        let tmp = format!(
            "{}{:016x}",
            layout::temp_archive_prefix(id),
            fastrand::u64(..)
        );
        let written = self
            .write_archive(&tmp_dir, &tmp, &dir, &items, &info_json)
            .and_then(|()| tmp_dir.rename(&tmp, &shard, &archive, false));
        if let Err(e) = written {
            let _ = tmp_dir.remove_file(&tmp);
            return Err(e);
        }
        let sync = self.durability != Durability::Buffered;
        if sync {
            shard.sync()?;
        }
        if let Err(e) = self.verify_archive(&shard, &archive, &dir, &items, &info_json) {
            let _ = shard.remove_file(&archive);
            return Err(e);
        }
        let stamp = rfc3339(now_ms());
        let tmp = tmp_dir.write_temp(&marker, stamp.as_bytes(), sync)?;
        if let Err(e) = tmp_dir.rename(&tmp, &shard, &marker, false) {
            let _ = tmp_dir.remove_file(&tmp);
            return Err(e);
        }
        if sync {
            shard.sync()?;
        }
        drop(dir);
        shard.remove_tree(id)?;
        if self.fsync() {
            shard.sync()?;
        }
        Ok(())
    }

    fn write_archive(
        &self,
        tmp_dir: &Dir,
        tmp: &str,
        dir: &Dir,
        items: &[Item],
        info_json: &[u8],
    ) -> Result<()> {
        let path = tmp_dir.child(tmp);
        let io_err = |e: io::Error| Error::io(&path, e);
        let file = tmp_dir.create_new(tmp)?;
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
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            if item.rel == INFO {
                h.set_size(info_json.len() as u64);
                tar.append_data(&mut h, &item.rel, info_json)
                    .map_err(io_err)?;
                continue;
            }
            let (parent, name) = item.rel.rsplit_once('/').unwrap_or(("", &item.rel));
            let opened = if parent.is_empty() {
                dir.open_read(name)?
            } else {
                match dir.open_path(parent, Access::Read)? {
                    Some(d) => d.open_read(name)?,
                    None => None,
                }
            };
            let Some((file, len)) = opened else {
                return Err(Error::storage(
                    dir.child(&item.rel).display().to_string(),
                    "file vanished while archiving",
                ));
            };
            // Exactly the size listed (the verification compares it).
            h.set_size(item.size);
            if len < item.size {
                return Err(Error::storage(
                    dir.child(&item.rel).display().to_string(),
                    "file shrank while archiving",
                ));
            }
            tar.append_data(&mut h, &item.rel, file.take(item.size))
                .map_err(io_err)?;
        }
        let gz = tar.into_inner().map_err(io_err)?;
        let buf = gz.finish().map_err(io_err)?;
        let file = buf.into_inner().map_err(|e| io_err(e.into_error()))?;
        if self.durability != Durability::Buffered {
            fs::sync_file(&file).map_err(io_err)?;
        }
        Ok(())
    }

    /// Re-reads the written archive and compares it with what was meant to go
    /// in, and with the directory as it is now.
    fn verify_archive(
        &self,
        shard: &Dir,
        archive: &str,
        dir: &Dir,
        items: &[Item],
        info_json: &[u8],
    ) -> Result<()> {
        let fail = |what: String| {
            Error::storage(
                shard.child(archive).display().to_string(),
                format!("archive verification failed: {what}"),
            )
        };
        let files = self.read_archive(shard, archive, None)?;
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
        if now != items {
            return Err(fail("the directory changed while it was archived".into()));
        }
        Ok(())
    }

    /// Reads the archive `name` in `shard` into memory: file entries by
    /// relative path. With `only`, stops after that entry. JSON documents
    /// are capped like files on disk; line files (`.jsonl`) are capped per
    /// line and not in total.
    pub(super) fn read_archive(
        &self,
        shard: &Dir,
        name: &str,
        only: Option<&str>,
    ) -> Result<BTreeMap<String, Vec<u8>>> {
        let path = shard.child(name);
        let loc = path.display().to_string();
        let Some((file, len)) = shard.open_read(name)? else {
            return Err(Error::io(&path, io::ErrorKind::NotFound.into()));
        };
        let bad = |e: io::Error| Error::corrupt(loc.clone(), format!("bad archive: {e}"));
        let mut ar = tar::Archive::new(GzDecoder::new(BufReader::new(file.take(len))));
        let mut out = BTreeMap::new();
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
            if only.is_some_and(|o| o != rel) {
                continue;
            }
            let entry_loc = archive_location(&loc, &rel);
            let data = if rel.ends_with(".jsonl") {
                fs::read_line_file(BufReader::new(&mut entry), &entry_loc, self.max_line).map_err(
                    |e| match e {
                        Error::Storage { message, .. } => {
                            Error::corrupt(loc.clone(), format!("bad archive: {message}"))
                        }
                        e => e,
                    },
                )?
            } else {
                let size = entry.size();
                if size > self.max_document {
                    return Err(Error::corrupt(
                        entry_loc,
                        format!(
                            "{size} bytes, larger than the {} byte limit",
                            self.max_document
                        ),
                    ));
                }
                let mut data = Vec::with_capacity(size as usize);
                entry.read_to_end(&mut data).map_err(bad)?;
                data
            };
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

/// The trace directory's entries: `trace_info.json` first, then the rest in
/// lexical depth-first order, directories before their contents. Hidden
/// names (temp files) are skipped; a link or any other special file is
/// refused ([`Error::Corrupt`] naming it): it cannot go into an archive.
fn walk(dir: &Dir) -> Result<Vec<Item>> {
    fn rec(dir: &Dir, rel: &str, out: &mut Vec<Item>) -> Result<()> {
        let mut entries: Vec<_> = dir
            .entries()?
            .into_iter()
            .filter(|e| !e.name.starts_with('.'))
            .collect();
        entries.sort_by(|a, b| {
            let first = |n: &str| !(rel.is_empty() && n == INFO);
            (first(&a.name), &a.name).cmp(&(first(&b.name), &b.name))
        });
        for e in entries {
            let r = if rel.is_empty() {
                e.name.clone()
            } else {
                format!("{rel}/{}", e.name)
            };
            match e.kind {
                Kind::Dir => {
                    out.push(Item {
                        rel: r.clone(),
                        is_dir: true,
                        size: 0,
                    });
                    if let Some(sub) = dir.open_dir(&e.name, Access::Read)? {
                        rec(&sub, &r, out)?;
                    }
                }
                Kind::File => {
                    let Some(size) = dir.file_size(&e.name)? else {
                        continue;
                    };
                    out.push(Item {
                        rel: r,
                        is_dir: false,
                        size,
                    });
                }
                Kind::Other => {
                    return Err(Access::Read.refuse(
                        &dir.child(&e.name),
                        "is not a regular file or directory; cannot archive it",
                    ));
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_archive_is_fsynced_except_at_buffered() {
        use crate::driver::Driver;
        use crate::driver::test_batch::TestBatch;
        for (durability, synced) in [
            (Durability::Buffered, false),
            (Durability::Flush, true),
            (Durability::Fsync, true),
        ] {
            let tmp = tempfile::tempdir().unwrap();
            let d = LocalDriver::new(tmp.path(), durability).unwrap();
            let id = "archive-sync-test";
            let batch = TestBatch::new(id, true)
                .event(1, "")
                .node("node00000001")
                .info(Some("node00000001"));
            d.write(&batch.batch()).unwrap();
            let before = fs::SYNCS.with(|c| c.get());
            d.archive(id).unwrap();
            let syncs = fs::SYNCS.with(|c| c.get()) - before;
            assert_eq!(syncs > 0, synced, "{durability:?}: {syncs} syncs");
            assert!(d.load(id).unwrap().is_some(), "archived and readable");
        }
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
}
