//! Writing a batch: one Lua script per batch (one round trip), applied only
//! while this engine holds the trace's lease, atomic (Redis runs a script
//! to its end before any other command), and idempotent (a batch retried
//! after its answer was lost applies nothing twice: events are skipped up
//! to the stream's last seq, log lines up to `meta.logs`; documents are
//! replaced whole).

use std::sync::LazyLock;

use redis::Script;

use super::{Held, RedisDriver, Reply, parse_reply};
use crate::driver::{DocKind, WriteBatch};
use crate::error::{Error, Result};

/// KEYS: 1 lease, 2 info, 3 nodes, 4 spaces, 5 data, 6 events, 7 meta,
/// [8 index, when ARGV[8] == '1'], then one log list per node of the batch.
/// ARGV: 1 token, 2 lease ttl (ms), 3 new trace ('1'), 4 the stream's last
/// entry id as this engine last saw it ('' if none), 5 created_at (index
/// score), 6 trace id (index member), 7 release ('1'), 8 index key given
/// ('1'), 9 events, 10 log lines, 11 documents; then per event: seq, wire
/// JSON; per log line: log key number (0-based), line index, line; per
/// document: kind (i, n, s, d, x), id, body.
///
/// Replies `{'ok', <last entry id>}`, `{'exists'}` (a new trace whose id
/// storage has, or whose lease another engine holds) or
/// `{'leased', owner, pttl}` (another engine holds the lease, or it
/// expired and the stream changed since this engine last wrote: someone
/// else owned the trace meanwhile).
const WRITE: &str = r"
local token, ttl = ARGV[1], ARGV[2]
local new, known = ARGV[3] == '1', ARGV[4]
local release, has_index = ARGV[7] == '1', ARGV[8] == '1'
local ne, nl, nd = tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])
local function top()
  local last = redis.call('XREVRANGE', KEYS[6], '+', '-', 'COUNT', 1)
  if #last == 0 then return 0, '', '' end
  local id = last[1][1]
  local ms = string.match(id, '^(%d+)')
  return tonumber(ms), ms, id
end
local lease = redis.call('GET', KEYS[1])
if lease ~= token then
  if lease then
    if new then return {'exists'} end
    return {'leased', lease, redis.call('PTTL', KEYS[1])}
  end
  if new then
    if redis.call('EXISTS', KEYS[2], KEYS[6]) > 0 then return {'exists'} end
  else
    local _, _, id = top()
    if id ~= known then return {'leased', '', 0} end
  end
end
redis.call('SET', KEYS[1], token, 'PX', ttl)
local seq_top = top()
local last_id = nil
local i = 12
for _ = 1, ne do
  if tonumber(ARGV[i]) > seq_top then
    last_id = ARGV[i] .. '-0'
    redis.call('XADD', KEYS[6], last_id, 'e', ARGV[i + 1])
  end
  i = i + 2
end
local first_log = has_index and 9 or 8
if nl > 0 then
  local next_log = tonumber(redis.call('HGET', KEYS[7], 'logs') or '0')
  for _ = 1, nl do
    local idx = tonumber(ARGV[i + 1])
    if idx >= next_log then
      redis.call('RPUSH', KEYS[first_log + tonumber(ARGV[i])], ARGV[i + 2])
      next_log = idx + 1
    end
    i = i + 3
  end
  redis.call('HSET', KEYS[7], 'logs', string.format('%d', next_log))
end
for _ = 1, nd do
  local kind, id, body = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if kind == 'i' then
    redis.call('SET', KEYS[2], body)
    if has_index then redis.call('ZADD', KEYS[8], 'NX', ARGV[5], ARGV[6]) end
  elseif kind == 'n' then redis.call('HSET', KEYS[3], id, body)
  elseif kind == 's' then redis.call('HSET', KEYS[4], id, body)
  elseif kind == 'd' then redis.call('HSET', KEYS[5], id, body)
  elseif kind == 'x' then
    redis.call('HDEL', KEYS[4], id)
    redis.call('HDEL', KEYS[5], id)
  end
  i = i + 3
end
local _, ms, id = top()
if release then
  if ms ~= '' then redis.call('XADD', KEYS[6], ms .. '-*', 'released', token) end
  redis.call('DEL', KEYS[1])
end
return {'ok', id}
";

static WRITE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(WRITE));

/// `created_at` of an info document (the index score), if it has one.
fn created_at(info: &[u8]) -> Option<i64> {
    #[derive(serde::Deserialize)]
    struct Created {
        created_at: i64,
    }
    serde_json::from_slice::<Created>(info)
        .ok()
        .map(|c| c.created_at)
}

impl RedisDriver {
    /// Applies one batch; see the module docs.
    pub(super) fn write_batch(&self, batch: &WriteBatch<'_>) -> Result<()> {
        let id = batch.trace_id;
        crate::id::validate_trace_id(id)?;
        let new = batch.is_new_trace();
        let release = batch.is_release();
        if batch.is_empty() && !release {
            return Ok(());
        }
        let keys = self.keys.trace(id);
        let known = self.known(id);
        if !new && known.is_none() {
            // This engine holds no lease of the trace (lost before, or
            // never taken): nothing may be written.
            return Err(Error::Leased {
                owner: String::new(),
                expires_in_ms: 0,
            });
        }
        let has_index = !self.io.is_cluster();
        let mut inv = WRITE_SCRIPT.prepare_invoke();
        for k in [
            keys.lease(),
            keys.info(),
            keys.nodes(),
            keys.spaces(),
            keys.data(),
            keys.events(),
            keys.meta(),
        ] {
            inv.key(k);
        }
        if has_index {
            inv.key(self.keys.index());
        }
        // One log list per node of the batch, numbered in order of appearance.
        let mut log_keys: Vec<&str> = Vec::new();
        for line in batch.log_lines() {
            if !log_keys.contains(&line.node_id) {
                log_keys.push(line.node_id);
            }
        }
        for node in &log_keys {
            inv.key(keys.logs(node));
        }
        let mut score = None;
        for d in batch.docs() {
            if d.kind == DocKind::Info {
                score = created_at(d.bytes);
            }
        }
        inv.arg(self.owner.as_str())
            .arg(self.lease_ttl_ms())
            .arg(if new { "1" } else { "0" })
            .arg(known.as_deref().unwrap_or(""))
            .arg(score.unwrap_or_else(crate::id::now_ms))
            .arg(id)
            .arg(if release { "1" } else { "0" })
            .arg(if has_index { "1" } else { "0" })
            .arg(batch.len())
            .arg(batch.log_lines().len())
            .arg(batch.docs().len());
        for ev in batch.events() {
            inv.arg(ev.seq).arg(ev.bytes);
        }
        for line in batch.log_lines() {
            let n = log_keys
                .iter()
                .position(|k| *k == line.node_id)
                .unwrap_or_default();
            inv.arg(n).arg(line.index).arg(line.bytes);
        }
        for d in batch.docs() {
            let kind = match d.kind {
                DocKind::Info => "i",
                DocKind::Node => "n",
                DocKind::Space => "s",
                DocKind::SpaceData => "d",
                DocKind::SpaceDeleted => "x",
            };
            inv.arg(kind).arg(d.id).arg(d.bytes);
        }
        let location = keys.at("events");
        let mut conn = self.io.conn.clone();
        // A static script: the invocation owns its keys and arguments and
        // loads the script (after a server restart) when it is missing.
        let reply = self.io.run(&location, async move {
            inv.invoke_async::<redis::Value>(&mut conn).await
        })?;
        match parse_reply(reply, &location)? {
            Reply::Ok(last) => {
                if release {
                    self.forget(id);
                } else {
                    self.hold(id, Held { known: last });
                }
                if new
                    && !has_index
                    && let Some(score) = score
                {
                    self.index_on_cluster(id, score)?;
                }
                Ok(())
            }
            Reply::Exists => {
                self.forget(id);
                Err(Error::AlreadyExists)
            }
            Reply::Leased { owner, pttl } => {
                self.forget(id);
                Err(Error::Leased {
                    owner,
                    expires_in_ms: pttl,
                })
            }
            other => Err(Error::storage(
                location,
                format!("redis: unexpected reply to a batch: {other:?}"),
            )),
        }
    }

    /// On a cluster the index lives in another slot than the trace: it is
    /// updated by a second command, after the trace's first batch.
    fn index_on_cluster(&self, id: &str, score: i64) -> Result<()> {
        let index = self.keys.index();
        let mut conn = self.io.conn.clone();
        let member = id.to_owned();
        let key = index.clone();
        self.io.run(&index, async move {
            redis::cmd("ZADD")
                .arg(key)
                .arg("NX")
                .arg(score)
                .arg(member)
                .query_async::<()>(&mut conn)
                .await
        })
    }
}
