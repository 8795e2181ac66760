//! Reading traces back, listing, removing and archiving.
//!
//! `load` is two round trips: one `MULTI` of the info, node, space and
//! space-data documents and the whole event stream (a consistent snapshot:
//! no batch lands in the middle of it), then one pipeline of the log lists
//! of the nodes it found. `list` reads the sorted-set index (never `KEYS`
//! or `SCAN`). `remove` deletes every key of the trace in one script, unless
//! another engine holds its lease.

use std::collections::HashMap;
use std::sync::LazyLock;

use redis::Script;
use redis::streams::StreamRangeReply;

use super::keys::TraceKeys;
use super::{RedisDriver, Reply, parse_reply};
use crate::driver::StoredTrace;
use crate::driver::format::{
    decode_info, decode_log_line, decode_node, decode_space, decode_space_data, order_logs,
};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::model::{SpaceData, TraceInfo};

/// KEYS: 1 lease, 2 info, 3 nodes, 4 spaces, 5 data, 6 events, 7 meta,
/// [8 index], then every log list. ARGV: 1 token, 2 node count the caller
/// saw, 3 trace id, 4 index given ('1').
/// Replies `{'ok', 1|0}` (removed, or nothing was there), `{'leased', owner,
/// pttl}`, or `{'retry'}` (a node was added since the caller listed them).
const REMOVE: &str = r"
local lease = redis.call('GET', KEYS[1])
if lease and lease ~= ARGV[1] then
  return {'leased', lease, redis.call('PTTL', KEYS[1])}
end
if redis.call('HLEN', KEYS[3]) ~= tonumber(ARGV[2]) then return {'retry'} end
local existed = redis.call('EXISTS', KEYS[2], KEYS[6])
local first_log = 8
if ARGV[4] == '1' then
  if redis.call('ZREM', KEYS[8], ARGV[3]) > 0 then existed = 1 end
  first_log = 9
end
for i = 1, 7 do redis.call('DEL', KEYS[i]) end
for i = first_log, #KEYS do redis.call('DEL', KEYS[i]) end
if existed > 0 then return {'ok', '1'} end
return {'ok', '0'}
";

/// KEYS: 1 lease, 2 info. ARGV: 1 token, 2 the info document read, 3 the
/// archived one. Replaces the info only if it is unchanged and nobody else
/// holds the lease. Replies `{'ok', ''}`, `{'leased', owner, pttl}`,
/// `{'retry'}`.
const ARCHIVE: &str = r"
local lease = redis.call('GET', KEYS[1])
if lease and lease ~= ARGV[1] then
  return {'leased', lease, redis.call('PTTL', KEYS[1])}
end
if redis.call('GET', KEYS[2]) ~= ARGV[2] then return {'retry'} end
redis.call('SET', KEYS[2], ARGV[3])
return {'ok', ''}
";

static REMOVE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(REMOVE));
static ARCHIVE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(ARCHIVE));

/// How often `remove` and `archive` start again when a concurrent change
/// got in between their read and their script.
const ATTEMPTS: usize = 5;

type Snapshot = (
    Option<Vec<u8>>,
    HashMap<String, Vec<u8>>,
    HashMap<String, Vec<u8>>,
    HashMap<String, Vec<u8>>,
    StreamRangeReply,
);

/// The bytes of a stream entry's field, if it has it.
pub(super) fn field<'a>(map: &'a HashMap<String, redis::Value>, name: &str) -> Option<&'a [u8]> {
    match map.get(name)? {
        redis::Value::BulkString(b) => Some(b),
        redis::Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

impl RedisDriver {
    pub(super) fn exists_stored(&self, id: &str) -> Result<bool> {
        crate::id::validate_trace_id(id)?;
        let keys = self.keys.trace(id);
        let (info, events) = (keys.info(), keys.events());
        let mut conn = self.io.conn.clone();
        let n: i64 = self.io.run(&info.clone(), async move {
            redis::cmd("EXISTS")
                .arg(info)
                .arg(events)
                .query_async(&mut conn)
                .await
        })?;
        Ok(n > 0)
    }

    /// Up to `count` events of stream `key` from seq `from_seq` on, with
    /// their entry ids, stopping before the first entry that is not an event
    /// (a `released` marker: the follow task decides whether it is final).
    pub(super) fn read_stream_from(
        &self,
        key: &str,
        from_seq: u64,
        count: usize,
    ) -> Result<Vec<((u64, u64), Event)>> {
        let mut conn = self.io.conn.clone();
        let k = key.to_owned();
        let reply: StreamRangeReply = self.io.run(key, async move {
            redis::cmd("XRANGE")
                .arg(k)
                .arg(format!("{}-0", from_seq.max(1)))
                .arg("+")
                .arg("COUNT")
                .arg(count)
                .query_async(&mut conn)
                .await
        })?;
        let mut out = Vec::with_capacity(reply.ids.len());
        for e in &reply.ids {
            let (Some(id), Some(bytes)) = (super::keys::parse_id(&e.id), field(&e.map, "e")) else {
                break;
            };
            let loc = format!("{key}#{}", e.id);
            out.push((id, Event::from_json(bytes, &loc)?));
        }
        Ok(out)
    }

    pub(super) fn info_stored(&self, id: &str) -> Result<Option<TraceInfo>> {
        crate::id::validate_trace_id(id)?;
        let key = self.keys.trace(id).info();
        let mut conn = self.io.conn.clone();
        let k = key.clone();
        let bytes: Option<Vec<u8>> = self.io.run(&key, async move {
            redis::cmd("GET").arg(k).query_async(&mut conn).await
        })?;
        bytes
            .map(|b| decode_info(&b, &key).map(|(info, _, _)| info))
            .transpose()
    }

    pub(super) fn list_stored(&self) -> Result<Vec<String>> {
        let index = self.keys.index();
        let mut conn = self.io.conn.clone();
        let k = index.clone();
        self.io.run(&index, async move {
            redis::cmd("ZRANGE")
                .arg(k)
                .arg(0)
                .arg(-1)
                .query_async(&mut conn)
                .await
        })
    }

    /// The ids of the trace's nodes (to name their log lists).
    fn node_ids(&self, keys: &TraceKeys) -> Result<Vec<String>> {
        let nodes = keys.nodes();
        let mut conn = self.io.conn.clone();
        let k = nodes.clone();
        self.io.run(&nodes, async move {
            redis::cmd("HKEYS").arg(k).query_async(&mut conn).await
        })
    }

    pub(super) fn load_stored(&self, id: &str) -> Result<Option<StoredTrace>> {
        crate::id::validate_trace_id(id)?;
        let keys = self.keys.trace(id);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("GET")
            .arg(keys.info())
            .cmd("HGETALL")
            .arg(keys.nodes())
            .cmd("HGETALL")
            .arg(keys.spaces())
            .cmd("HGETALL")
            .arg(keys.data())
            .cmd("XRANGE")
            .arg(keys.events())
            .arg("-")
            .arg("+");
        let location = keys.at("info");
        let mut conn = self.io.conn.clone();
        let (info, nodes, spaces, data, stream): Snapshot = self
            .io
            .run(&location, async move { pipe.query_async(&mut conn).await })?;
        let Some(info) = info else {
            return Ok(None);
        };
        let (info, root, current) = decode_info(&info, &location)?;
        if info.id != id {
            return Err(Error::corrupt(
                location,
                format!("stored trace info names trace {:?}", info.id),
            ));
        }
        let node_loc = |n: &str| format!("{}#{n}", keys.nodes());
        let mut node_list = Vec::with_capacity(nodes.len());
        for (nid, bytes) in &nodes {
            let n = decode_node(bytes, &node_loc(nid))?;
            if &n.id != nid {
                return Err(Error::corrupt(
                    node_loc(nid),
                    format!("holds node {:?}", n.id),
                ));
            }
            node_list.push(n);
        }
        // The log lines of every node, in one pipeline.
        let mut ids: Vec<&String> = nodes.keys().collect();
        ids.sort();
        let mut logs = Vec::new();
        if !ids.is_empty() {
            let mut pipe = redis::pipe();
            for n in &ids {
                pipe.cmd("LRANGE").arg(keys.logs(n)).arg(0).arg(-1);
            }
            let mut conn = self.io.conn.clone();
            let lists: Vec<Vec<Vec<u8>>> = self
                .io
                .run(&location, async move { pipe.query_async(&mut conn).await })?;
            for (n, lines) in ids.iter().zip(lists) {
                let key = keys.logs(n);
                for (i, line) in lines.iter().enumerate() {
                    logs.push(decode_log_line(line, &format!("{key}:{}", i + 1))?);
                }
            }
        }
        let mut space_list = Vec::with_capacity(spaces.len());
        let mut data = data;
        for (sid, bytes) in &spaces {
            let loc = format!("{}#{sid}", keys.spaces());
            let info = decode_space(bytes, &loc)?;
            let values = match data.remove(sid) {
                Some(d) => decode_space_data(&d, &format!("{}#{sid}", keys.data()))?,
                None => Default::default(),
            };
            space_list.push(SpaceData { info, data: values });
        }
        space_list.sort_by_key(|s| s.info.created_at);
        let events = decode_stream(&stream, &keys.events())?;
        let logs = order_logs(logs, &events);
        StoredTrace::assemble(
            info, root, current, node_list, logs, space_list, events, &node_loc,
        )
        .map(Some)
    }

    pub(super) fn remove_stored(&self, id: &str) -> Result<bool> {
        crate::id::validate_trace_id(id)?;
        self.forget(id);
        let keys = self.keys.trace(id);
        let location = keys.at("lease");
        let has_index = !self.io.is_cluster();
        for _ in 0..ATTEMPTS {
            let nodes = self.node_ids(&keys)?;
            let mut inv = REMOVE_SCRIPT.prepare_invoke();
            inv.key(keys.lease())
                .key(keys.info())
                .key(keys.nodes())
                .key(keys.spaces())
                .key(keys.data())
                .key(keys.events())
                .key(keys.meta());
            if has_index {
                inv.key(self.keys.index());
            }
            for n in &nodes {
                inv.key(keys.logs(n));
            }
            inv.arg(self.owner.as_str())
                .arg(nodes.len())
                .arg(id)
                .arg(if has_index { "1" } else { "0" });
            let mut conn = self.io.conn.clone();
            let reply = self.io.run(&location, async move {
                inv.invoke_async::<redis::Value>(&mut conn).await
            })?;
            match parse_reply(reply, &location)? {
                Reply::Ok(existed) => {
                    let mut existed = existed == "1";
                    if !has_index {
                        existed |= self.unindex_on_cluster(id)?;
                    }
                    return Ok(existed);
                }
                Reply::Leased { owner, pttl } => {
                    return Err(Error::Leased {
                        owner,
                        expires_in_ms: pttl,
                    });
                }
                Reply::Retry => continue,
                other => {
                    return Err(Error::storage(
                        location,
                        format!("redis: unexpected reply to remove: {other:?}"),
                    ));
                }
            }
        }
        Err(Error::storage(
            location,
            "remove: the trace kept changing (another engine is writing it)",
        ))
    }

    fn unindex_on_cluster(&self, id: &str) -> Result<bool> {
        let index = self.keys.index();
        let mut conn = self.io.conn.clone();
        let (k, m) = (index.clone(), id.to_owned());
        let n: i64 = self.io.run(&index, async move {
            redis::cmd("ZREM")
                .arg(k)
                .arg(m)
                .query_async(&mut conn)
                .await
        })?;
        Ok(n > 0)
    }

    /// Marks the stored info `archived` (with `archived_at`); everything else
    /// stays as written. See the driver docs.
    pub(super) fn archive_stored(&self, id: &str) -> Result<()> {
        crate::id::validate_trace_id(id)?;
        let keys = self.keys.trace(id);
        let location = keys.at("info");
        for _ in 0..ATTEMPTS {
            let key = keys.info();
            let mut conn = self.io.conn.clone();
            let old: Option<Vec<u8>> = self.io.run(&location, async move {
                redis::cmd("GET").arg(key).query_async(&mut conn).await
            })?;
            let Some(old) = old else {
                return Err(Error::NotFound);
            };
            let mut doc: serde_json::Value = serde_json::from_slice(&old)
                .map_err(|e| Error::corrupt(&location, format!("bad trace info: {e}")))?;
            let Some(obj) = doc.as_object_mut() else {
                return Err(Error::corrupt(&location, "bad trace info: not an object"));
            };
            if obj.get("archived") == Some(&serde_json::Value::Bool(true)) {
                return Ok(());
            }
            obj.insert("archived".into(), true.into());
            obj.insert("archived_at".into(), crate::id::now_ms().into());
            let new = serde_json::to_vec_pretty(&doc)
                .map_err(|e| Error::storage(&location, e.to_string()))?;
            let mut inv = ARCHIVE_SCRIPT.prepare_invoke();
            inv.key(keys.lease())
                .key(keys.info())
                .arg(self.owner.as_str())
                .arg(old)
                .arg(new);
            let mut conn = self.io.conn.clone();
            let reply = self.io.run(&location, async move {
                inv.invoke_async::<redis::Value>(&mut conn).await
            })?;
            match parse_reply(reply, &location)? {
                Reply::Ok(_) => return Ok(()),
                Reply::Leased { owner, pttl } => {
                    return Err(Error::Leased {
                        owner,
                        expires_in_ms: pttl,
                    });
                }
                Reply::Retry => continue,
                other => {
                    return Err(Error::storage(
                        location,
                        format!("redis: unexpected reply to archive: {other:?}"),
                    ));
                }
            }
        }
        Err(Error::storage(
            location,
            "archive: the trace kept changing (another engine is writing it)",
        ))
    }
}

/// The events of a stream read whole (markers skipped), checked to be
/// numbered 1..=N like every persistent driver's event log.
fn decode_stream(stream: &StreamRangeReply, key: &str) -> Result<Vec<Event>> {
    let mut events: Vec<Event> = Vec::with_capacity(stream.ids.len());
    for entry in &stream.ids {
        let Some(bytes) = field(&entry.map, "e") else {
            continue; // a `released` marker
        };
        let loc = format!("{key}#{}", entry.id);
        let ev = Event::from_json(bytes, &loc)?;
        let expect = events.len() as u64 + 1;
        let at = super::keys::parse_id(&entry.id).map(|(ms, _)| ms);
        if ev.seq != expect || at != Some(ev.seq) {
            return Err(Error::corrupt(
                loc,
                format!(
                    "event seq {} (entry {}) where {expect} was expected",
                    ev.seq, entry.id
                ),
            ));
        }
        events.push(ev);
    }
    Ok(events)
}
