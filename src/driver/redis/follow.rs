//! Following traces that any engine writes: one task per driver reads the
//! event streams of every followed trace and hands each follower its
//! entries, in order, exactly once.
//!
//! * **Single server**: one dedicated connection runs `XREAD COUNT n BLOCK
//!   250 STREAMS k1 .. kn c1 .. cn` in a loop, one key per followed trace
//!   (followers of one trace share it, from the oldest cursor among them).
//!   A new follower, or one that can read again, interrupts the blocked read
//!   with `CLIENT UNBLOCK` from the command connection, so it starts at once.
//! * **Cluster**: a blocking read cannot cover keys of different slots, so
//!   the task polls every 5 ms instead: one `XRANGE key (cursor + COUNT n`
//!   per followed trace, all sent at once.
//!
//! A follower's first read is made by `follow` itself, before it returns
//! (what storage holds then is delivered even if the trace is removed right
//! afterwards); the task reads on from there. A replay is the same read
//! from an older cursor: no separate path, no window between replay and
//! live entries. Each follower has a buffer of
//! `buffer` items; a full one is left out of the reads until its reader has
//! taken half (the stream keeps what it has not read, nothing is skipped).
//! A `released` marker ends a follower only when it is the stream's last
//! entry (an older one, followed by events of a later owner, is skipped).
//! A trace whose stream disappeared (removed) ends its followers within
//! about a second.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use redis::AsyncConnectionConfig;
use redis::streams::{StreamId, StreamRangeReply, StreamReadReply};
use tokio::sync::Notify;

use super::conn::{Conn, Io};
use super::keys::parse_id;
use super::read::field;
use crate::driver::lock;
use crate::driver::{FeedItem, FollowFeed};
use crate::event::Event;

/// Entries per stream per read.
const COUNT: usize = 256;
/// How long one blocking read waits (ms); also bounds how late a follower
/// whose wake-up raced the read starts.
const BLOCK_MS: u64 = 250;
/// The polling interval on a cluster.
const POLL: Duration = Duration::from_millis(5);
/// How often idle followers check that their stream still exists.
const EXISTS_EVERY: Duration = Duration::from_secs(1);
/// The pause before reconnecting after a failed read.
const RETRY: Duration = Duration::from_millis(200);

/// A stream entry id, ordered.
type Id = (u64, u64);

fn id_text(id: Id) -> String {
    format!("{}-{}", id.0, id.1)
}

#[derive(Debug)]
struct FState {
    items: VecDeque<FeedItem>,
    /// The last entry read: the next read starts after it.
    cursor: Id,
    /// Nothing more will come (released, or the stream is gone).
    done: bool,
    /// The reader dropped its feed.
    gone: bool,
    /// Left out of the reads until the reader took half of `items`.
    paused: bool,
    waker: Option<Waker>,
}

#[derive(Debug)]
struct Follower {
    key: String,
    cap: usize,
    st: Mutex<FState>,
}

/// What the follow task and the feeds share.
#[derive(Debug, Default)]
pub(super) struct Mux {
    followers: Mutex<Vec<Arc<Follower>>>,
    notify: Notify,
    /// Bumped by every nudge (a new follower, a resumed one).
    generation: AtomicU64,
    /// The generation the task's current read was built from.
    served: AtomicU64,
    /// The follow connection's client id while it blocks in `XREAD` (0: not blocked).
    blocked: AtomicI64,
    started: AtomicBool,
    /// The engine shut down: no more follows.
    closed: AtomicBool,
}

/// What the follow task and the nudges use of the driver's connection
/// (not the driver itself: its runtime stops when the driver is dropped).
#[derive(Debug, Clone)]
struct Link {
    conn: Conn,
    handle: tokio::runtime::Handle,
    /// The single server's client (`None` on a cluster).
    client: Option<redis::Client>,
}

impl Link {
    fn of(io: &Io) -> Link {
        Link {
            conn: io.conn.clone(),
            handle: io.handle.clone(),
            client: io.client.clone(),
        }
    }
}

/// The feed handed to the engine.
#[derive(Debug)]
pub(super) struct RedisFeed {
    follower: Arc<Follower>,
    mux: Arc<Mux>,
    link: Link,
}

impl FollowFeed for RedisFeed {
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<FeedItem>> {
        let mut st = lock(&self.follower.st);
        if let Some(item) = st.items.pop_front() {
            let resume = st.paused && st.items.len() <= self.follower.cap / 2;
            if resume {
                st.paused = false;
            }
            drop(st);
            if resume {
                nudge(&self.mux, &self.link);
            }
            return Poll::Ready(Some(item));
        }
        if st.done {
            return Poll::Ready(None);
        }
        st.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for RedisFeed {
    fn drop(&mut self) {
        let mut st = lock(&self.follower.st);
        st.gone = true;
        st.items.clear();
    }
}

/// Tells the task that the set of readable followers changed: it builds its
/// next read again, and a read blocked now is interrupted.
fn nudge(mux: &Arc<Mux>, link: &Link) {
    let mine = mux.generation.fetch_add(1, Ordering::AcqRel) + 1;
    mux.notify.notify_one();
    let client = mux.blocked.load(Ordering::Acquire);
    if client == 0 {
        return;
    }
    let (mux, mut conn) = (mux.clone(), link.conn.clone());
    link.handle.spawn(async move {
        // The read may not have reached the server yet: try a few times
        // until the task took the new generation into account.
        for _ in 0..50 {
            if mux.served.load(Ordering::Acquire) >= mine
                || mux.blocked.load(Ordering::Acquire) != client
            {
                return;
            }
            let unblocked: redis::RedisResult<i64> = redis::cmd("CLIENT")
                .arg("UNBLOCK")
                .arg(client)
                .query_async(&mut conn)
                .await;
            if matches!(unblocked, Ok(1) | Err(_)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
}

/// Followers of one stream, read together from the oldest cursor.
struct Group {
    key: String,
    from: Id,
    members: Vec<Arc<Follower>>,
}

/// The readable followers, grouped by stream; drops finished ones.
fn groups(mux: &Mux) -> Vec<Group> {
    let mut followers = lock(&mux.followers);
    followers.retain(|f| {
        let st = lock(&f.st);
        !st.gone && !st.done
    });
    let mut out: Vec<Group> = Vec::new();
    let mut at: HashMap<&str, usize> = HashMap::new();
    for f in followers.iter() {
        let st = lock(&f.st);
        if st.paused {
            continue;
        }
        match at.get(f.key.as_str()) {
            Some(&i) => {
                out[i].from = out[i].from.min(st.cursor);
                out[i].members.push(f.clone());
            }
            None => {
                at.insert(&f.key, out.len());
                out.push(Group {
                    key: f.key.clone(),
                    from: st.cursor,
                    members: vec![f.clone()],
                });
            }
        }
    }
    out
}

/// The last entry id of stream `key`, if it has one.
async fn top(conn: &mut Conn, key: &str) -> Option<String> {
    let r: redis::RedisResult<StreamRangeReply> = redis::cmd("XREVRANGE")
        .arg(key)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(conn)
        .await;
    r.ok()?.ids.into_iter().next().map(|e| e.id)
}

/// Hands `entries` (read from `group.from` on) to each member of the group,
/// after its own cursor.
async fn distribute(group: &Group, entries: &[StreamId], conn: &mut Conn) {
    // A `released` marker is final only if nothing follows it in the stream.
    let mut final_marker = None;
    if let Some(last) = entries.last()
        && field(&last.map, "released").is_some()
        && top(conn, &group.key).await.as_deref() == Some(last.id.as_str())
    {
        final_marker = Some(last.id.clone());
    }
    for f in &group.members {
        let waker = {
            let mut st = lock(&f.st);
            if st.gone || st.done {
                continue;
            }
            for e in entries {
                let Some(id) = parse_id(&e.id) else { continue };
                if id <= st.cursor {
                    continue;
                }
                st.cursor = id;
                if let Some(bytes) = field(&e.map, "e") {
                    let loc = format!("{}#{}", group.key, e.id);
                    if let Ok(ev) = Event::from_json(bytes, &loc) {
                        st.items.push_back(FeedItem::Event(ev));
                    }
                } else if final_marker.as_deref() == Some(e.id.as_str()) {
                    st.items.push_back(FeedItem::Released);
                    st.done = true;
                }
            }
            if st.items.len() >= f.cap {
                st.paused = true;
            }
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// Ends the followers of streams that no longer exist (removed traces);
/// `quiet[i]`: group `i` got no entry from the last read.
async fn check_exists(groups: &[Group], quiet: &[bool], conn: &mut Conn) {
    for (g, _) in groups.iter().zip(quiet).filter(|(_, q)| **q) {
        let n: redis::RedisResult<i64> = redis::cmd("EXISTS").arg(&g.key).query_async(conn).await;
        if let Ok(0) = n {
            for f in &g.members {
                let waker = {
                    let mut st = lock(&f.st);
                    st.done = true;
                    st.waker.take()
                };
                if let Some(w) = waker {
                    w.wake();
                }
            }
        }
    }
}

/// The follow task on a single server.
async fn run_single(mux: Arc<Mux>, link: Link) {
    let Some(client) = link.client.clone() else {
        return;
    };
    let mut cmd_conn = link.conn.clone();
    let mut conn: Option<(redis::aio::MultiplexedConnection, i64)> = None;
    let mut checked = Instant::now();
    loop {
        let generation = mux.generation.load(Ordering::Acquire);
        mux.served.store(generation, Ordering::Release);
        let groups = groups(&mux);
        if groups.is_empty() {
            mux.notify.notified().await;
            continue;
        }
        if conn.is_none() {
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(3)))
                .set_response_timeout(Some(
                    Duration::from_millis(BLOCK_MS) + super::conn::CALL_TIMEOUT,
                ));
            let made = async {
                let mut c = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                let id: i64 = redis::cmd("CLIENT").arg("ID").query_async(&mut c).await?;
                redis::RedisResult::Ok((c, id))
            }
            .await;
            match made {
                Ok(c) => conn = Some(c),
                Err(_) => {
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            }
        }
        let Some((c, client_id)) = conn.as_mut() else {
            continue;
        };
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(COUNT)
            .arg("BLOCK")
            .arg(BLOCK_MS)
            .arg("STREAMS");
        for g in &groups {
            cmd.arg(&g.key);
        }
        for g in &groups {
            cmd.arg(id_text(g.from));
        }
        mux.blocked.store(*client_id, Ordering::Release);
        if mux.generation.load(Ordering::Acquire) != generation {
            mux.blocked.store(0, Ordering::Release);
            continue;
        }
        let read: redis::RedisResult<Option<StreamReadReply>> = cmd.query_async(c).await;
        mux.blocked.store(0, Ordering::Release);
        match read {
            Err(_) => {
                conn = None;
                tokio::time::sleep(RETRY).await;
            }
            Ok(reply) => {
                let mut quiet = vec![true; groups.len()];
                for k in reply.map(|r| r.keys).unwrap_or_default() {
                    if let Some(i) = groups.iter().position(|g| g.key == k.key) {
                        quiet[i] = false;
                        distribute(&groups[i], &k.ids, &mut cmd_conn).await;
                    }
                }
                if checked.elapsed() >= EXISTS_EVERY {
                    checked = Instant::now();
                    check_exists(&groups, &quiet, &mut cmd_conn).await;
                }
            }
        }
    }
}

/// The follow task on a cluster: polls every [`POLL`].
async fn run_cluster(mux: Arc<Mux>, link: Link) {
    let mut checked = Instant::now();
    loop {
        let generation = mux.generation.load(Ordering::Acquire);
        mux.served.store(generation, Ordering::Release);
        let groups = groups(&mux);
        if groups.is_empty() {
            mux.notify.notified().await;
            continue;
        }
        let reads = futures_util::future::join_all(groups.iter().map(|g| {
            let mut conn = link.conn.clone();
            let key = g.key.clone();
            let from = format!("({}", id_text(g.from));
            async move {
                let r: redis::RedisResult<StreamRangeReply> = redis::cmd("XRANGE")
                    .arg(key)
                    .arg(from)
                    .arg("+")
                    .arg("COUNT")
                    .arg(COUNT)
                    .query_async(&mut conn)
                    .await;
                r
            }
        }))
        .await;
        let mut conn = link.conn.clone();
        let mut quiet = vec![true; groups.len()];
        for ((g, r), q) in groups.iter().zip(reads).zip(quiet.iter_mut()) {
            if let Ok(r) = r
                && !r.ids.is_empty()
            {
                *q = false;
                distribute(g, &r.ids, &mut conn).await;
            }
        }
        let any = quiet.iter().any(|q| !q);
        if checked.elapsed() >= EXISTS_EVERY {
            checked = Instant::now();
            check_exists(&groups, &quiet, &mut conn).await;
        }
        if !any {
            tokio::select! {
                () = tokio::time::sleep(POLL) => {}
                () = mux.notify.notified() => {}
            }
        }
    }
}

impl Mux {
    /// Adds a follower of stream `key` from seq `from_seq` on and returns
    /// its feed; starts the follow task on first use. `seed`: the entries
    /// from `from_seq` on already read (in order, with their ids): the feed
    /// yields them first and the task reads on after the last one.
    pub(super) fn follow(
        self: &Arc<Self>,
        io: &Io,
        key: String,
        from_seq: u64,
        buffer: usize,
        seed: Vec<(Id, Event)>,
    ) -> RedisFeed {
        let cap = buffer.max(2);
        // Entries after `<from - 1>-<max>`: seq `from` and later.
        let cursor = seed
            .last()
            .map_or((from_seq.max(1) - 1, u64::MAX), |(id, _)| *id);
        let items: VecDeque<FeedItem> = seed.into_iter().map(|(_, e)| FeedItem::Event(e)).collect();
        let paused = items.len() >= cap;
        let follower = Arc::new(Follower {
            key,
            cap,
            st: Mutex::new(FState {
                items,
                cursor,
                done: false,
                gone: false,
                paused,
                waker: None,
            }),
        });
        let link = Link::of(io);
        let closed = {
            let mut followers = lock(&self.followers);
            followers.push(follower.clone());
            self.closed.load(Ordering::Acquire)
        };
        if closed {
            lock(&follower.st).done = true;
        } else if !self.started.swap(true, Ordering::AcqRel) {
            if io.is_cluster() {
                io.handle.spawn(run_cluster(self.clone(), link.clone()));
            } else {
                io.handle.spawn(run_single(self.clone(), link.clone()));
            }
        }
        nudge(self, &link);
        RedisFeed {
            follower,
            mux: self.clone(),
            link,
        }
    }

    /// Ends every follow (the engine shut down): each feed yields what it
    /// holds, then ends; later follows end at once.
    pub(super) fn close(&self) {
        let followers = {
            let mut f = lock(&self.followers);
            self.closed.store(true, Ordering::Release);
            std::mem::take(&mut *f)
        };
        for f in followers {
            let waker = {
                let mut st = lock(&f.st);
                st.done = true;
                st.waker.take()
            };
            if let Some(w) = waker {
                w.wake();
            }
        }
    }
}
