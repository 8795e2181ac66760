//! Leases: a trace is writable on one engine at a time.
//!
//! ```text
//!              create (given id), open: SET NX PX (acquire script)
//!              create (generated id): inside the first batch's script
//!   FREE ───────────────────────────────────────────────> HELD by engine E
//!    ^  ^                                                  │  │  │
//!    │  │   release: the last batch appends `released`     │  │  │ every batch and every
//!    │  └── and deletes the lease (same script) ───────────┘  │  │ ttl/3 (the engine's
//!    │                                                        │  │ ticker): PEXPIRE, only
//!    │      E stops renewing (killed, stalled) for ttl        │  └ while the token is E's
//!    └──────────────────────────────────────────── EXPIRED <──┘
//!                                                    │  nobody took it and the stream is as
//!                                                    │  E left it: E's next batch or renewal
//!                                                    │  takes it again; otherwise E's next
//!                                                    v  batch gets `Leased` (lost, counted)
//!                                            HELD by engine F (open on F)
//! ```
//!
//! The lease key `P{T}:lease` holds the owner's id (`host/pid/random`, one
//! per driver) and expires after `lease_ttl` unless renewed. Every script
//! that writes checks it first, in the same atomic step as the write.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::sync::atomic::Ordering;

use redis::Script;

use super::{Held, RedisDriver, Reply, parse_reply};
use crate::error::{Error, Result};

/// KEYS: 1 lease, 2 info, 3 events. ARGV: 1 token, 2 ttl (ms), 3 creating
/// ('1': the trace must not exist; '0': it must).
/// Opening appends an `opened` marker (`<last seq>-<n>`, not an event), so
/// that the `released` marker of the previous owner is no longer the
/// stream's last entry: followers go on with the new owner's events.
/// Replies `{'ok', <last entry id>}`, `{'leased', owner, pttl}`,
/// `{'exists'}` or `{'missing'}`.
const ACQUIRE: &str = r"
local lease = redis.call('GET', KEYS[1])
if lease and lease ~= ARGV[1] then
  return {'leased', lease, redis.call('PTTL', KEYS[1])}
end
local stored = redis.call('EXISTS', KEYS[2], KEYS[3]) > 0
if ARGV[3] == '1' then
  if stored then return {'exists'} end
elseif not stored then
  return {'missing'}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local last = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', 1)
if #last == 0 then return {'ok', ''} end
local ms = string.match(last[1][1], '^(%d+)')
return {'ok', redis.call('XADD', KEYS[3], ms .. '-*', 'opened', ARGV[1])}
";

/// KEYS: 1 lease, 2 events. ARGV: 1 token, 2 ttl (ms), 3 the stream's last
/// entry id as this engine last saw it. Replies 1 (held) or 0 (lost).
///
/// A missing lease is taken again only if the stream is as this engine
/// left it *and* it wrote or opened something there (`ARGV[3]` not empty).
/// A renewal is prepared before it runs: meanwhile the trace may have been
/// released or removed, which deletes the lease. With something written,
/// the `released` marker or the removal changed the stream's last entry;
/// with nothing written (a given id created, then removed), only an empty
/// `known` tells, and taking the lease again would keep a removed trace
/// leased for a whole TTL. Such a trace's first batch takes its lease
/// itself (it checks that the id is still free).
const RENEW: &str = r"
local lease = redis.call('GET', KEYS[1])
if lease == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if lease or ARGV[3] == '' then return 0 end
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
local id = ''
if #last > 0 then id = last[1][1] end
if id ~= ARGV[3] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
";

/// KEYS: 1 lease, 2 events. ARGV: 1 token. Deletes the lease if it is
/// ours; if our `opened` marker is the stream's last entry (an `open` that
/// failed afterwards), a `released` marker follows it.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
if #last > 0 and last[1][2][1] == 'opened' and last[1][2][2] == ARGV[1] then
  local ms = string.match(last[1][1], '^(%d+)')
  redis.call('XADD', KEYS[2], ms .. '-*', 'released', ARGV[1])
end
return 1
";

static ACQUIRE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(ACQUIRE));
static RENEW_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(RENEW));
static RELEASE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(RELEASE));

impl RedisDriver {
    pub(super) fn acquire(&self, id: &str, creating: bool) -> Result<()> {
        crate::id::validate_trace_id(id)?;
        let keys = self.keys.trace(id);
        let mut inv = ACQUIRE_SCRIPT.prepare_invoke();
        inv.key(keys.lease())
            .key(keys.info())
            .key(keys.events())
            .arg(self.owner.as_str())
            .arg(self.lease_ttl_ms())
            .arg(if creating { "1" } else { "0" });
        let location = keys.at("lease");
        let mut conn = self.io.conn.clone();
        let reply = self.io.run(&location, async move {
            inv.invoke_async::<redis::Value>(&mut conn).await
        })?;
        match parse_reply(reply, &location)? {
            Reply::Ok(last) => {
                self.hold(id, Held { known: last });
                Ok(())
            }
            Reply::Leased { owner, pttl } => Err(Error::Leased {
                owner,
                expires_in_ms: pttl,
            }),
            Reply::Exists => Err(Error::AlreadyExists),
            Reply::Missing => Err(Error::NotFound),
            other => Err(Error::storage(
                location,
                format!("redis: unexpected reply to a lease: {other:?}"),
            )),
        }
    }

    pub(super) fn give_up(&self, id: &str) -> Result<()> {
        crate::id::validate_trace_id(id)?;
        self.forget(id);
        let keys = self.keys.trace(id);
        let mut inv = RELEASE_SCRIPT.prepare_invoke();
        inv.key(keys.lease())
            .key(keys.events())
            .arg(self.owner.as_str());
        let location = keys.at("lease");
        let mut conn = self.io.conn.clone();
        self.io.run(&location, async move {
            inv.invoke_async::<i64>(&mut conn).await.map(|_| ())
        })
    }

    /// Starts renewing every lease held (on the driver's runtime) and
    /// returns; a renewal still running makes this a no-op.
    pub(super) fn renew_all(&self) {
        if self.shared.renewing.swap(true, Ordering::AcqRel) {
            return;
        }
        let held: Vec<(String, String)> = super::lock(&self.shared.held)
            .iter()
            .map(|(id, h)| (id.clone(), h.known.clone()))
            .collect();
        if held.is_empty() {
            self.shared.renewing.store(false, Ordering::Release);
            return;
        }
        let mut calls = Vec::with_capacity(held.len());
        for (id, known) in &held {
            let keys = self.keys.trace(id);
            let mut inv = RENEW_SCRIPT.prepare_invoke();
            inv.key(keys.lease())
                .key(keys.events())
                .arg(self.owner.as_str())
                .arg(self.lease_ttl_ms())
                .arg(known.as_str());
            calls.push((id.clone(), inv));
        }
        let conn = self.io.conn.clone();
        let shared = self.shared.clone();
        self.io.handle.spawn(async move {
            // One request per trace, all in flight at once: they share the
            // multiplexed connection (one round trip on a single server).
            let replies = futures_util::future::join_all(calls.into_iter().map(|(id, inv)| {
                let mut conn = conn.clone();
                async move {
                    let r = tokio::time::timeout(
                        super::conn::CALL_TIMEOUT,
                        inv.invoke_async::<i64>(&mut conn),
                    )
                    .await;
                    (id, r)
                }
            }))
            .await;
            let known: HashMap<String, String> = held.into_iter().collect();
            let mut lost = Vec::new();
            for (id, r) in replies {
                if let Ok(Ok(0)) = r {
                    lost.push(id);
                }
            }
            if !lost.is_empty() {
                // Lost: the next batch of these traces is refused by the
                // write script (and counted by the engine); stop renewing.
                // Unless the trace was written, released or opened again
                // since the renewal started (then `known` changed).
                let mut held = super::lock(&shared.held);
                for id in lost {
                    if held.get(&id).map(|h| &h.known) == known.get(&id) {
                        held.remove(&id);
                    }
                }
            }
            shared.renewing.store(false, Ordering::Release);
        });
    }
}
