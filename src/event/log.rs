//! A trace's event log: the single sequencer of its events.
//!
//! [`EventLog`] numbers events (gap-free `seq` from 1), keeps the newest
//! `history` of them for replay, queues the ones the driver has not taken
//! yet (write-behind), and knows the trace's readers (subscriptions) and
//! the list of those waiting for a new event. A reader's cursor is its
//! own (it lives in the subscription and comes along to every read).
//!
//! Events enter as [`Record`]s and are encoded at most once, when first
//! needed: by a reader, by `events()`, by a worker taking the write-behind
//! queue, or when a record that the driver has not taken yet leaves the
//! history (so what is queued for the driver is always bytes, bounded by
//! `pending_bytes`). The encoded event replaces the record in place, so
//! every later reader shares its bytes.
//!
//! Everything here runs under the trace's slot lock, except a reader's
//! lock-free read of events the log published ([`super::publish`]: once a
//! trace has two readers, what they read under the lock is also published
//! for the others to read without it). Emitting never wakes a
//! reader itself: wakers of waiting readers are moved to a list that the
//! emitting thread wakes after it dropped the lock
//! ([`EventLog::take_wakers`]).
//!
//! # The lag rule
//!
//! A reader made when the newest seq was `h` first gets every event up to
//! `h` that is still retained; a cursor older than the history gets one
//! [`Delivery::Lagged`] for the evicted run first. Once past `h`, a reader
//! more than `subscriber_buffer` events behind the newest event skips to
//! `newest - subscriber_buffer + 1` with one `Lagged { missed }`. The writer
//! never waits for readers.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Waker;

use super::encode::{Source, encode};
use super::publish::{Publisher, ReadPin};
use super::record::{Entry, PayloadRec, Record};
use super::wire::ARENA_CHUNK;
use super::wire_buf::{RefCache, WireArena};
use super::{Cursor, Delivery, Event, EventKind};
use crate::error::{Error, Result};
use crate::pool::SlotKey;
use crate::ring::Ring;

/// The bounds of one log, from the engine builder.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LogLimits {
    /// Events kept in memory for replay.
    pub(crate) history: usize,
    /// Events a reader may fall behind live events before `Lagged`.
    pub(crate) subscriber_buffer: usize,
    /// Events waiting for the driver before the oldest is dropped (counted).
    pub(crate) pending: usize,
    /// Queued bytes of every trace of the engine together.
    pub(crate) pending_bytes: usize,
    /// The driver keeps what it is given: events are queued for it.
    pub(crate) persists: bool,
    /// Readers per trace.
    pub(crate) max_readers: usize,
}

/// A trace publishes its queued bytes to the engine-wide total in steps of
/// this size (so emitting an event touches no shared counter); the
/// engine-wide bound is checked at each step.
const PENDING_STEP: usize = 64 * 1024;
/// Encoding-arena capacity kept across a reset.
const RETAIN_ARENA: usize = 1024 * 1024;
const RETAIN_QUEUE: usize = 4096;

/// What the engine keeps of a reader outside the slot lock: whether its
/// trace was released, and then what it continues with.
#[derive(Debug, Default)]
pub(crate) struct ReaderShared {
    /// Set once the trace was released and `detached` filled in.
    detached: AtomicBool,
    /// Seq of the next event the reader reads (mirrors its cursor; read at
    /// release to tell whether it has anything left).
    next_seq: AtomicU64,
    detached_at: Mutex<Option<Detached>>,
}

impl ReaderShared {
    /// Whether the reader's trace was released.
    pub(crate) fn is_detached(&self) -> bool {
        self.detached.load(Ordering::Acquire)
    }

    /// Records the reader's position (after a read).
    #[inline(always)]
    pub(crate) fn set_next_seq(&self, seq: u64) {
        self.next_seq.store(seq, Ordering::Relaxed);
    }

    /// Where a detached reader continues (taken once).
    pub(crate) fn take_detached(&self) -> Option<Detached> {
        self.detached_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }
}

/// A reader of a released trace: the history it still has to read (from
/// its own cursor on).
#[derive(Debug)]
pub(crate) struct Detached {
    pub(crate) frozen: Option<Arc<Frozen>>,
}

/// The retained history of a released trace, encoded, shared read-only by
/// its readers that had not read all of it.
#[derive(Debug)]
pub(crate) struct Frozen {
    entries: Ring<Entry>,
    /// One past the newest seq.
    end: u64,
    bound: u64,
}

/// A reader's position and the newest seq when it was made.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReaderCursor {
    pub(crate) next_seq: u64,
    pub(crate) replay_end: u64,
    /// Only events with `timestamp >= min_ts` are delivered.
    pub(crate) min_ts: i64,
}

#[derive(Debug)]
struct Reader {
    shared: Arc<ReaderShared>,
    /// Set while the reader waits for an event (its key is in `waiting`).
    waker: Option<Waker>,
}

/// What one read found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReadResult {
    /// Deliveries appended.
    pub(crate) delivered: usize,
    /// Events skipped by a `Lagged` in them.
    pub(crate) missed: u64,
}

/// A view of retained entries: `entries` hold seqs `[end - len, end)`.
struct View<'a> {
    entries: &'a Ring<Entry>,
    end: u64,
    bound: u64,
}

impl View<'_> {
    fn oldest(&self) -> u64 {
        self.end - self.entries.len() as u64
    }

    fn get(&self, seq: u64) -> Option<&Entry> {
        let oldest = self.oldest();
        if seq < oldest {
            return None;
        }
        usize::try_from(seq - oldest)
            .ok()
            .and_then(|i| self.entries.get(i))
    }

    /// Where a cursor may resume under the lag rule, and how many events it skips.
    fn clamp(&self, c: &ReaderCursor) -> (u64, u64) {
        let oldest = self.oldest();
        let mut next = c.next_seq.max(1);
        let mut missed = 0;
        if next < oldest {
            missed += oldest - next;
            next = oldest;
        }
        if next > c.replay_end && self.end > next && self.end - next > self.bound {
            missed += self.end - next - self.bound;
            next = self.end - self.bound;
        }
        (next, missed)
    }

    /// Appends up to `max` deliveries from the cursor on (every entry read
    /// must be encoded) and advances it; the events' references are paid
    /// from `refs`, the reader's.
    fn read(
        &self,
        c: &mut ReaderCursor,
        max: usize,
        out: &mut VecDeque<Delivery>,
        refs: &mut RefCache,
    ) -> ReadResult {
        let max = max.max(2);
        let mut r = ReadResult {
            delivered: 0,
            missed: 0,
        };
        loop {
            let (mut next, missed) = self.clamp(c);
            if missed > 0 {
                out.push_back(Delivery::Lagged { missed });
                r.delivered += 1;
                r.missed += missed;
            }
            // The replay is read to its end, then the lag rule applies again
            // (the loop's next round): no run of events crosses the replay's
            // end. Past it, everything up to the newest event is within the
            // bound.
            let replay = next <= c.replay_end;
            let stop = if replay { c.replay_end + 1 } else { self.end };
            while next < stop && r.delivered < max {
                let Some(Entry::Wire(ev)) = self.get(next) else {
                    break;
                };
                next += 1;
                if ev.timestamp < c.min_ts {
                    continue;
                }
                out.push_back(Delivery::Event(ev.share(refs)));
                r.delivered += 1;
            }
            c.next_seq = next;
            // Live events after a replay read to its end go in the same
            // batch (one lock for a subscriber that catches up).
            if !(replay && next == stop && next < self.end && r.delivered < max) {
                return r;
            }
        }
    }
}

/// The event log of one trace (see the module docs).
#[derive(Debug)]
pub(crate) struct EventLog {
    lim: LogLimits,
    history: Ring<Entry>,
    /// Whether an entry of `history` may own memory (see
    /// [`PayloadRec::may_own`]; an encoded event does): if none does,
    /// `reset` forgets them instead of dropping each.
    history_owns: bool,
    next_seq: u64,
    /// Timestamp of the newest event evicted from history (for time cursors).
    evicted_max_ts: i64,
    arena: WireArena,
    /// Seq of the oldest event in `history` not yet handed to the driver;
    /// `next_seq` when there is none (always, for a driver that keeps nothing).
    unsent_from: u64,
    /// Encoded events for the driver that are older than `unsent_from`:
    /// ones that left the history first, and a failed batch put back.
    spilled: VecDeque<Event>,
    /// Bytes queued for the driver (encoded, or estimated for records).
    pending_bytes: usize,
    /// The part of `pending_bytes` added to `pending_total`.
    pending_published: usize,
    pending_total: Arc<AtomicUsize>,
    readers: Vec<Option<Reader>>,
    free_readers: Vec<u32>,
    /// Shared parts of readers that unsubscribed, for the next readers of
    /// this slot (at most `max_readers`; kept across resets). A detached
    /// reader's part is never put here: its subscription still reads it.
    spare_shared: Vec<Arc<ReaderShared>>,
    /// Events published for lock-free readers (made when a trace of this
    /// slot first has two readers; kept across resets).
    publ: Option<Box<Publisher>>,
    reader_count: usize,
    /// Keys of readers with a waker set.
    waiting: Vec<u32>,
    /// Wakers to wake once the lock is dropped.
    to_wake: Vec<Waker>,
    /// Events emitted since the counters were last taken.
    pub(crate) stat_emitted: u64,
    /// Events evicted from history since then.
    pub(crate) stat_evicted: u64,
    /// Queued events dropped (bound reached) since then.
    pub(crate) stat_pending_dropped: u64,
    /// Tests: every event also encoded the moment it is recorded (not
    /// cached), to compare with the lazily encoded history.
    #[cfg(test)]
    pub(crate) eager: Option<Vec<Event>>,
}

impl EventLog {
    pub(crate) fn new(lim: LogLimits, pending_total: Arc<AtomicUsize>) -> EventLog {
        EventLog {
            lim,
            history: Ring::new(),
            history_owns: false,
            next_seq: 1,
            evicted_max_ts: i64::MIN,
            arena: WireArena::new(),
            unsent_from: 1,
            spilled: VecDeque::new(),
            pending_bytes: 0,
            pending_published: 0,
            pending_total,
            readers: Vec::new(),
            free_readers: Vec::new(),
            spare_shared: Vec::new(),
            publ: None,
            reader_count: 0,
            waiting: Vec::new(),
            to_wake: Vec::new(),
            stat_emitted: 0,
            stat_evicted: 0,
            stat_pending_dropped: 0,
            #[cfg(test)]
            eager: None,
        }
    }

    /// Appends an event: numbers and records it, retains it, queues it for
    /// the driver, and readies the wakers of waiting readers. `make` builds
    /// its payload, called only once everything that may need memory or
    /// call out is done, so that the record is built in its slot of the
    /// history (see `Ring::push_back_with`). `src` encodes a record that
    /// leaves the history before the driver took it. Returns its seq.
    #[inline(always)]
    pub(crate) fn push(
        &mut self,
        kind: EventKind,
        ts: i64,
        make: impl FnOnce() -> PayloadRec,
        src: &dyn Source,
    ) -> u64 {
        let seq = self.next_seq;
        if self.lim.persists && self.pending_len() >= self.lim.pending {
            // The driver is not keeping up and the bound is reached: drop
            // the oldest queued write and count it (never silent, never
            // unbounded).
            self.drop_oldest_pending(src);
        }
        if self.history.len() >= self.lim.history.max(1) {
            self.evict_oldest(src);
        }
        self.next_seq += 1;
        let entry = self.history.push_back_with(|| {
            Entry::Rec(Record {
                seq,
                ts,
                kind,
                payload: make(),
            })
        });
        let Entry::Rec(rec) = entry else {
            unreachable!("just recorded")
        };
        self.history_owns |= rec.payload.may_own();
        #[cfg(test)]
        if let Some(eager) = &mut self.eager {
            eager.push(encode(&mut WireArena::new(), rec, src));
        }
        if self.lim.persists {
            self.pending_bytes += rec.payload.approx_len(src);
        }
        if !self.lim.persists {
            self.unsent_from = self.next_seq;
        } else {
            self.account_pending(src);
        }
        self.stat_emitted += 1;
        if let Some(p) = &self.publ {
            p.note(self.next_seq - self.history.len() as u64, self.next_seq);
        }
        if !self.waiting.is_empty() {
            for key in self.waiting.drain(..) {
                if let Some(Some(r)) = self.readers.get_mut(key as usize)
                    && let Some(w) = r.waker.take()
                {
                    self.to_wake.push(w);
                }
            }
        }
        seq
    }

    #[inline(never)]
    fn evict_oldest(&mut self, src: &dyn Source) {
        let Some(old) = self.history.pop_front() else {
            return;
        };
        self.evicted_max_ts = old.timestamp();
        self.stat_evicted += 1;
        let seq = old.seq();
        if seq >= self.unsent_from {
            // Still queued for the driver: it leaves as bytes.
            self.unsent_from = seq + 1;
            let ev = match old {
                Entry::Wire(ev) => {
                    self.pending_bytes = self.pending_bytes.saturating_sub(ev.bytes.len());
                    ev
                }
                Entry::Rec(r) => {
                    self.pending_bytes =
                        self.pending_bytes.saturating_sub(r.payload.approx_len(src));
                    encode(&mut self.arena, &r, src)
                }
            };
            self.pending_bytes += ev.bytes.len();
            self.spilled.push_back(ev);
        }
    }

    /// Events queued for the driver.
    /// Seq the next event will get.
    #[inline]
    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    pub(crate) fn pending_count(&self) -> usize {
        self.pending_len()
    }

    fn pending_len(&self) -> usize {
        self.spilled.len() + (self.next_seq - self.unsent_from) as usize
    }

    /// Drops the oldest queued write (counted). Returns its bytes.
    fn drop_oldest_pending(&mut self, src: &dyn Source) -> usize {
        let n = if let Some(ev) = self.spilled.pop_front() {
            ev.bytes.len()
        } else if self.unsent_from < self.next_seq {
            let n = self.entry(self.unsent_from).map_or(0, |e| match e {
                Entry::Rec(r) => r.payload.approx_len(src),
                Entry::Wire(ev) => ev.bytes.len(),
            });
            self.unsent_from += 1;
            n
        } else {
            return 0;
        };
        self.pending_bytes = self.pending_bytes.saturating_sub(n);
        self.stat_pending_dropped += 1;
        n
    }

    /// Publishes this trace's queued bytes to the engine-wide total once they
    /// grew by a step, and enforces the engine-wide bound: over it, this
    /// trace's oldest queued events are dropped (counted).
    fn account_pending(&mut self, src: &dyn Source) {
        if self.pending_bytes < self.pending_published + PENDING_STEP {
            return;
        }
        let add = self.pending_bytes - self.pending_published;
        let total = self.pending_total.fetch_add(add, Ordering::Relaxed) + add;
        self.pending_published = self.pending_bytes;
        if total <= self.lim.pending_bytes {
            return;
        }
        let mut over = total - self.lim.pending_bytes;
        while over > 0 && self.pending_len() > 0 {
            over = over.saturating_sub(self.drop_oldest_pending(src).max(1));
        }
        if self.pending_published > self.pending_bytes {
            let freed = self.pending_published - self.pending_bytes;
            self.pending_total.fetch_sub(freed, Ordering::Relaxed);
            self.pending_published = self.pending_bytes;
        }
    }

    /// Takes what this log published back out of the engine-wide total.
    fn unpublish_pending(&mut self) {
        if self.pending_published > 0 {
            self.pending_total
                .fetch_sub(self.pending_published, Ordering::Relaxed);
            self.pending_published = 0;
        }
    }

    /// Bytes queued for the driver (`extra`: log lines held elsewhere) are
    /// accounted like events: published in steps, bounded engine-wide.
    pub(crate) fn add_pending_bytes(&mut self, extra: usize, src: &dyn Source) {
        self.pending_bytes += extra;
        self.account_pending(src);
    }

    /// Whether events wait for the driver.
    pub(crate) fn has_pending(&self) -> bool {
        !self.spilled.is_empty() || self.unsent_from < self.next_seq
    }

    /// The entry of `seq`, if retained.
    fn entry(&self, seq: u64) -> Option<&Entry> {
        let oldest = self.next_seq - self.history.len() as u64;
        seq.checked_sub(oldest)
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| self.history.get(i))
    }

    /// Encodes the retained records with seq in `[from, to)` in place.
    fn encode_range(&mut self, from: u64, to: u64, src: &dyn Source) {
        let oldest = self.next_seq - self.history.len() as u64;
        let from = from.max(oldest);
        let to = to.min(self.next_seq);
        if from >= to {
            return;
        }
        let (a, b) = ((from - oldest) as usize, (to - oldest) as usize);
        self.history_owns = true;
        for e in self.history.range_mut(a, b) {
            if let Entry::Rec(r) = e {
                let ev = encode(&mut self.arena, r, src);
                *e = Entry::Wire(ev);
            }
        }
    }

    /// Encodes the record of `seq` if it is retained and not encoded yet
    /// (what it refers to is about to change: a log line leaving memory).
    pub(crate) fn encode_seq(&mut self, seq: u64, src: &dyn Source) {
        self.encode_range(seq, seq + 1, src);
    }

    /// Encodes every retained record (what they refer to is about to go: a
    /// space being deleted).
    pub(crate) fn encode_all(&mut self, src: &dyn Source) {
        let oldest = self.next_seq - self.history.len() as u64;
        self.encode_range(oldest, self.next_seq, src);
    }

    /// Moves every event queued for the driver into `out` (encoding them),
    /// in seq order.
    pub(crate) fn take_pending(&mut self, out: &mut VecDeque<Event>, src: &dyn Source) {
        out.extend(self.spilled.drain(..));
        let from = self.unsent_from;
        self.encode_range(from, self.next_seq, src);
        let oldest = self.next_seq - self.history.len() as u64;
        let skip = from.saturating_sub(oldest) as usize;
        for e in self.history.iter().skip(skip) {
            if let Entry::Wire(ev) = e {
                out.push_back(ev.clone());
            }
        }
        self.unsent_from = self.next_seq;
        self.pending_bytes = 0;
        self.unpublish_pending();
    }

    /// Puts back the events of a failed write (older than anything queued),
    /// so the next batch retries them; beyond the bound the oldest are
    /// dropped and counted.
    pub(crate) fn restore_pending(&mut self, events: &mut VecDeque<Event>, src: &dyn Source) {
        while let Some(ev) = events.pop_back() {
            if self.pending_len() >= self.lim.pending {
                self.stat_pending_dropped += 1 + events.len() as u64;
                events.clear();
                break;
            }
            self.pending_bytes += ev.bytes.len();
            self.spilled.push_front(ev);
        }
        self.account_pending(src);
    }

    /// Drops every event queued for the driver; returns how many.
    pub(crate) fn discard_pending(&mut self) -> u64 {
        let n = self.pending_len() as u64;
        self.spilled.clear();
        self.unsent_from = self.next_seq;
        self.pending_bytes = 0;
        self.unpublish_pending();
        n
    }

    /// Events of the retained history matching `cursor`, encoded.
    pub(crate) fn snapshot(&mut self, cursor: Cursor, src: &dyn Source) -> Vec<Event> {
        let from = match cursor {
            Cursor::Seq(n) => n,
            Cursor::Time(ms) => self.seq_at_time(ms),
        };
        self.encode_range(from, self.next_seq, src);
        self.history
            .iter()
            .filter_map(|e| match e {
                Entry::Wire(ev) if ev.seq >= from => Some(ev.clone()),
                _ => None,
            })
            .collect()
    }

    /// The first retained seq with `timestamp >= ms`.
    pub(crate) fn seq_at_time(&self, ms: i64) -> u64 {
        self.history
            .iter()
            .find(|e| e.timestamp() >= ms)
            .map_or(self.next_seq, Entry::seq)
    }

    /// Appends an already-encoded event read from storage (`open`); events
    /// beyond the history bound only move the time mark.
    pub(crate) fn restore_event(&mut self, ev: Event) {
        self.next_seq = ev.seq + 1;
        self.unsent_from = self.next_seq;
        if self.history.len() >= self.lim.history.max(1)
            && let Some(old) = self.history.pop_front()
        {
            self.evicted_max_ts = old.timestamp();
        }
        self.history_owns = true;
        self.history.push_back(Entry::Wire(ev));
    }

    // ---- readers -------------------------------------------------------------

    /// Adds a reader starting at `cursor` (clamped to 1), replaying what is
    /// retained up to the newest event now. Returns its key, what it shares
    /// with the log, and its cursor (which the reader keeps).
    ///
    /// # Errors
    /// `LimitExceeded` (`"subscribers"`) at `max_readers`.
    pub(crate) fn add_reader(
        &mut self,
        cursor: Cursor,
    ) -> Result<(u32, Arc<ReaderShared>, ReaderCursor)> {
        let limit = self.lim.max_readers;
        if self.reader_count >= limit {
            return Err(Error::LimitExceeded {
                what: "subscribers",
                limit,
            });
        }
        let (start, min_ts) = match cursor {
            Cursor::Seq(n) => (n.max(1), i64::MIN),
            // Events older than the retained history may match: start at
            // the oldest evicted one so the gap is reported as lag.
            Cursor::Time(ms) if self.evicted_max_ts >= ms => (1, ms),
            Cursor::Time(ms) => (self.seq_at_time(ms), ms),
        };
        // A spare part is not detached (only live readers' parts are kept)
        // and its old subscription no longer reads it: it was dropped.
        let shared = self
            .spare_shared
            .pop()
            .unwrap_or_else(|| Arc::new(ReaderShared::default()));
        shared.next_seq.store(start, Ordering::Relaxed);
        let cursor = ReaderCursor {
            next_seq: start,
            replay_end: self.next_seq - 1,
            min_ts,
        };
        let reader = Reader {
            shared: shared.clone(),
            waker: None,
        };
        let key = match self.free_readers.pop() {
            Some(k) => {
                self.readers[k as usize] = Some(reader);
                k
            }
            None => {
                self.readers.push(Some(reader));
                u32::try_from(self.readers.len() - 1).unwrap_or(u32::MAX)
            }
        };
        self.reader_count += 1;
        Ok((key, shared, cursor))
    }

    /// Removes reader `key` (its subscription was dropped).
    pub(crate) fn remove_reader(&mut self, key: u32, shared: &Arc<ReaderShared>) {
        if let Some(slot) = self.readers.get_mut(key as usize)
            && slot
                .as_ref()
                .is_some_and(|r| Arc::ptr_eq(&r.shared, shared))
        {
            if let Some(r) = slot.take()
                && self.spare_shared.len() < self.lim.max_readers
            {
                self.spare_shared.push(r.shared);
            }
            self.free_readers.push(key);
            self.reader_count -= 1;
            self.waiting.retain(|&k| k != key);
        }
    }

    /// Reads up to `max` deliveries for reader `key` at `cursor` into `out`
    /// and advances the cursor. When there is nothing to read and `waker`
    /// is given, the reader waits: `waker` is woken after the next event.
    /// While the trace has two readers or more, what is read is also
    /// published, and `pin` is pointed at the block of the cursor for the
    /// reader's next lock-free read (`None` otherwise). The references of
    /// the events read are paid from `refs`, the reader's prepaid ones.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn read(
        &mut self,
        key: u32,
        cursor: &mut ReaderCursor,
        pin: &mut Option<ReadPin>,
        refs: &mut RefCache,
        max: usize,
        out: &mut VecDeque<Delivery>,
        waker: Option<&Waker>,
        src: &dyn Source,
    ) -> ReadResult {
        if !matches!(self.readers.get(key as usize), Some(Some(_))) {
            *pin = None;
            return ReadResult {
                delivered: 0,
                missed: 0,
            };
        }
        let bound = self.lim.subscriber_buffer as u64;
        let view = View {
            entries: &self.history,
            end: self.next_seq,
            bound,
        };
        let (from, _) = view.clamp(cursor);
        // Everything available (events the reader skips by time included):
        // each is encoded once, and the next reader shares it.
        self.encode_range(from, self.next_seq, src);
        let view = View {
            entries: &self.history,
            end: self.next_seq,
            bound,
        };
        let r = view.read(cursor, max, out, refs);
        if self.reader_count >= 2 {
            let p = self.publ.get_or_insert_with(Box::default);
            p.publish(from, &self.history, self.next_seq, bound);
            p.pin(cursor.next_seq, pin);
        } else {
            *pin = None;
        }
        let Some(Some(reader)) = self.readers.get_mut(key as usize) else {
            return r;
        };
        reader.shared.set_next_seq(cursor.next_seq);
        if r.delivered == 0
            && let Some(w) = waker
        {
            match &mut reader.waker {
                Some(old) if old.will_wake(w) => {}
                Some(old) => old.clone_from(w),
                None => {
                    reader.waker = Some(w.clone());
                    self.waiting.push(key);
                }
            }
        }
        r
    }

    /// Moves the wakers readied by emitted events into `out` (the caller
    /// wakes them after dropping the lock).
    pub(crate) fn take_wakers(&mut self, out: &mut Vec<Waker>) {
        if !self.to_wake.is_empty() {
            out.append(&mut self.to_wake);
        }
    }

    /// Whether wakers wait to be woken.
    pub(crate) fn has_wakers(&self) -> bool {
        !self.to_wake.is_empty()
    }

    /// Detaches every reader of a trace that is being released. If any has
    /// unread events, the retained history is encoded and moves (no copy)
    /// into one shared [`Frozen`] they all keep; each reader's waker is
    /// readied.
    pub(crate) fn detach_readers(&mut self, src: &dyn Source) {
        if self.reader_count == 0 {
            return;
        }
        let end = self.next_seq;
        // A reader's cursor is its own; what it read last is mirrored in its
        // shared part (a reader reading right now may be further on: then
        // the frozen history is kept for nothing, which is harmless).
        let unread = self
            .readers
            .iter()
            .flatten()
            .any(|r| r.shared.next_seq.load(Ordering::Relaxed) < end);
        let frozen = unread.then(|| {
            let oldest = end - self.history.len() as u64;
            self.encode_range(oldest, end, src);
            // What the driver has not taken yet stays queued for it (the
            // frozen history shares the bytes).
            let skip = self.unsent_from.saturating_sub(oldest) as usize;
            for e in self.history.iter().skip(skip) {
                if let Entry::Wire(ev) = e {
                    self.spilled.push_back(ev.clone());
                }
            }
            self.unsent_from = end;
            Arc::new(Frozen {
                entries: std::mem::take(&mut self.history),
                end,
                bound: self.lim.subscriber_buffer as u64,
            })
        });
        for r in self.readers.drain(..).flatten() {
            *r.shared
                .detached_at
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(Detached {
                frozen: frozen.clone(),
            });
            r.shared.detached.store(true, Ordering::Release);
            if let Some(w) = r.waker {
                self.to_wake.push(w);
            }
        }
        self.free_readers.clear();
        self.waiting.clear();
        self.reader_count = 0;
    }

    /// Counters gathered since the last call: emitted, evicted, dropped.
    pub(crate) fn take_stats(&mut self) -> [u64; 3] {
        let s = [
            self.stat_emitted,
            self.stat_evicted,
            self.stat_pending_dropped,
        ];
        self.stat_emitted = 0;
        self.stat_evicted = 0;
        self.stat_pending_dropped = 0;
        s
    }

    /// Whether counters wait to be collected.
    pub(crate) fn has_stats(&self) -> bool {
        self.stat_emitted | self.stat_evicted | self.stat_pending_dropped != 0
    }

    /// Clears the log for the slot's next occupant. Pending writes must have
    /// been taken and readers detached before.
    pub(crate) fn reset(&mut self) {
        debug_assert!(self.reader_count == 0);
        if self.history_owns {
            self.history.clear();
        } else {
            debug_assert!(self.history.iter().all(|e| match e {
                Entry::Rec(r) => !r.payload.may_own(),
                Entry::Wire(_) => false,
            }));
            self.history.forget_all();
        }
        self.history_owns = false;
        if self.history.capacity() > self.lim.history + 1 {
            self.history.shrink_to(self.lim.history + 1);
        }
        self.next_seq = 1;
        self.unsent_from = 1;
        self.evicted_max_ts = i64::MIN;
        self.spilled.clear();
        if self.spilled.capacity() > RETAIN_QUEUE {
            self.spilled.shrink_to(RETAIN_QUEUE);
        }
        self.pending_bytes = 0;
        self.unpublish_pending();
        if self.arena.capacity() > RETAIN_ARENA {
            self.arena = WireArena::new();
        } else if !self.arena.is_empty() || self.arena.capacity() < ARENA_CHUNK {
            // Unless a reader still holds an event, the chunk is unique
            // again and `reserve` takes it back from its start.
            self.arena.clear();
            self.arena.reserve(ARENA_CHUNK);
        }
        self.readers.clear();
        self.free_readers.clear();
        self.waiting.clear();
        self.reader_count = 0;
        if let Some(p) = &mut self.publ {
            p.reset();
        }
    }
}

/// Reads a detached reader's frozen history (references paid from `refs`).
pub(crate) fn read_frozen(
    frozen: &Frozen,
    cursor: &mut ReaderCursor,
    max: usize,
    out: &mut VecDeque<Delivery>,
    refs: &mut RefCache,
) -> ReadResult {
    View {
        entries: &frozen.entries,
        end: frozen.end,
        bound: frozen.bound,
    }
    .read(cursor, max, out, refs)
}

/// What a reader needs from the engine: access to its trace's live log, and
/// the engine's reader counters. Implemented by the engine, so readers
/// (subscriptions) do not depend on it.
pub(crate) trait LogHost: Send + Sync + std::fmt::Debug {
    /// Runs `f` on the log of the live trace `key` under its lock, with the
    /// trace as a payload source and whether it is finished. `false` when
    /// that trace is not live (released).
    fn with_log(&self, key: SlotKey, f: &mut dyn FnMut(&mut EventLog, &dyn Source, bool)) -> bool;
    /// Counts events skipped by `Lagged` deliveries.
    fn count_lagged(&self, missed: u64);
    /// Counts a reader made (`+1`) or dropped (`-1`).
    fn count_reader(&self, delta: isize);
    /// Counts a follow (a reader of another engine's trace) made or dropped.
    fn count_follow(&self, delta: isize); // redis-hook
}
