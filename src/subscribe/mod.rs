//! Subscriptions: history replay followed by live events, exactly once and in
//! seq order, with explicit lag.
//!
//! # How it works
//!
//! A subscription is a reader of its trace's event log (`crate::event::log`):
//! a cursor into the history, not a queue, so nothing is copied per
//! subscriber while it keeps up. Emitting an event appends it to the log
//! under the slot lock; a subscriber that waits is woken after that lock is
//! dropped, takes the lock once, and moves every event available from its
//! cursor on (up to a batch) into its own buffer — clones of the shared
//! encoded events, so delivering to N subscribers copies no bytes. Replay
//! and live delivery are the same code path, and a subscription made while
//! other threads write sees each event with `seq >= cursor` once, in order.
//!
//! When a trace has several subscribers, the first to read an event under
//! the lock also publishes it (`crate::event::publish`), and the others
//! read it from their pinned block without the lock: one load, one event
//! clone (its reference to the event's bytes prepaid, see
//! `crate::event::wire_buf`: no atomic operation). The cursor is the
//! subscription's own, so both paths move the same cursor and the
//! guarantees above hold whichever path delivers.
//!
//! # Lagging
//!
//! Let `h` be the newest seq when the subscription was made. Events up to
//! `h` (the replay) are all delivered, except those already evicted from the
//! retained history: a cursor older than the history gets one
//! [`Delivery::Lagged`] for the evicted run first. Once the subscriber has
//! passed `h`, whenever it is more than `subscriber_buffer` events behind the
//! newest event it skips to `newest - subscriber_buffer + 1` with one
//! `Lagged { missed }` (events already in its own batch buffer count as
//! read). The writer never waits for readers.
//!
//! # Ending
//!
//! The stream ends (`None`) after the `complete` event is delivered. When the
//! trace is released first, its retained history moves into one shared,
//! read-only frozen history that every subscriber with unread events keeps a
//! reference to (release costs one step per subscriber, no copy per event);
//! each stream ends once it has read it. Dropping a subscription
//! unsubscribes it. No task or thread exists per subscription.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

mod remote; // redis-hook
#[cfg(test)]
mod tests;

use crate::event::log::{Detached, LogHost, ReadResult, ReaderCursor, ReaderShared, read_frozen};
use crate::event::publish::ReadPin;
use crate::event::wire_buf::RefCache;
use crate::event::{Delivery, EventKind};
use crate::id::TraceId;
use crate::pool::SlotKey;

/// Deliveries a subscription takes from its trace per lock acquisition.
const BATCH: usize = 64;

thread_local! {
    /// The batch buffer of the last subscription dropped on this thread
    /// (emptied), for the next one made here: a subscribe-read-drop cycle
    /// then allocates no buffer.
    static SPARE_BUF: std::cell::Cell<VecDeque<Delivery>> =
        const { std::cell::Cell::new(VecDeque::new()) };
}

/// A batch buffer: this thread's spare one if it has one, else an empty one.
fn take_buf() -> VecDeque<Delivery> {
    SPARE_BUF
        .try_with(std::cell::Cell::take)
        .unwrap_or_default()
}

/// Keeps `buf` (emptied) as this thread's spare, unless it has one or `buf`
/// grew past a batch or two.
fn keep_buf(mut buf: VecDeque<Delivery>) {
    if buf.capacity() == 0 || buf.capacity() > 2 * BATCH {
        return;
    }
    buf.clear();
    let _ = SPARE_BUF.try_with(|spare| {
        let old = spare.take();
        spare.set(if old.capacity() == 0 { buf } else { old });
    });
}

enum Step {
    Deliver(Delivery),
    End,
    Wait,
}

/// A live view of one trace's events: history first, then live.
///
/// Yields [`Delivery`] items through [`recv`](Subscription::recv),
/// [`blocking_recv`](Subscription::blocking_recv) or as a
/// [`futures_core::Stream`].
///
/// Delivery is exactly once and in seq order, also for subscriptions made
/// while other threads write: a subscription is a cursor into its trace's
/// history. A subscriber more than `subscriber_buffer` events behind gets one
/// [`Delivery::Lagged`] and continues. The stream ends after `complete` is
/// delivered, or after release once every event emitted before the release
/// was delivered. Dropping it unsubscribes.
///
/// # Examples
/// ```
/// # fn main() -> tracepool::Result<()> {
/// use tracepool::{Delivery, Engine, EventKind, NodeOptions, TraceOptions};
/// let engine = Engine::builder().memory().workers(1).capacity(4).build()?;
/// let trace = engine.create(TraceOptions::new())?;
/// let mut sub = trace.subscribe()?;
/// trace.add("in", NodeOptions::new())?;
/// trace.mark_complete()?;
/// let mut kinds = Vec::new();
/// while let Some(Delivery::Event(ev)) = sub.blocking_recv() {
///     kinds.push(ev.kind);
/// }
/// assert_eq!(kinds, [EventKind::Init, EventKind::NodeStart, EventKind::Complete]);
/// # Ok(()) }
/// ```
pub struct Subscription {
    host: Arc<dyn LogHost>,
    key: SlotKey,
    reader: u32,
    trace_id: TraceId,
    shared: Arc<ReaderShared>,
    /// Where the next read starts (past what `buf` holds).
    cursor: ReaderCursor,
    /// The published block the cursor is in, read without the lock.
    pin: Option<ReadPin>,
    /// Prepaid references to the chunk of the events read last (given
    /// back when the stream ends, and when it is dropped).
    refs: RefCache,
    /// Deliveries taken from the trace and not yet returned.
    buf: VecDeque<Delivery>,
    ended: bool,
    /// The released trace's history and this reader's place in it.
    detached: Option<Detached>,
    // redis-hook: fed by a driver's follow feed instead of a slot.
    remote: Option<Box<remote::Remote>>, // redis-hook
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("trace_id", &self.trace_id)
            .field("next_seq", &self.next_seq())
            .field("remote", &self.remote.is_some()) // redis-hook
            .field("ended", &self.ended)
            .finish()
    }
}

impl Subscription {
    /// Wraps reader `reader` of the trace `key` (registered in its log).
    pub(crate) fn new(
        host: Arc<dyn LogHost>,
        key: SlotKey,
        reader: u32,
        trace_id: TraceId,
        shared: Arc<ReaderShared>,
        cursor: ReaderCursor,
    ) -> Subscription {
        host.count_reader(1);
        Subscription {
            host,
            key,
            reader,
            trace_id,
            shared,
            cursor,
            pin: None,
            refs: RefCache::default(),
            buf: take_buf(),
            ended: false,
            detached: None,
            remote: None, // redis-hook
        }
    }

    // redis-hook: begin
    /// A subscription fed by a driver's follow feed (`Engine::follow` of a
    /// trace that is not loaded here). It holds no slot.
    pub(crate) fn remote(
        host: Arc<dyn LogHost>,
        trace_id: TraceId,
        feed: Box<dyn crate::driver::FollowFeed>,
        from_seq: u64,
        min_ts: i64,
    ) -> Subscription {
        Subscription {
            host,
            key: SlotKey::new(0, 0),
            reader: 0,
            trace_id,
            shared: Arc::new(ReaderShared::default()),
            cursor: ReaderCursor {
                next_seq: from_seq,
                replay_end: 0,
                min_ts,
            },
            pin: None,
            refs: RefCache::default(),
            buf: VecDeque::new(),
            ended: false,
            detached: None,
            remote: Some(Box::new(remote::Remote::new(feed, from_seq, min_ts))),
        }
    }

    /// The next step of a remote subscription.
    fn poll_remote(&mut self, cx: &mut Context<'_>) -> Poll<Option<Delivery>> {
        let Some(r) = self.remote.as_mut() else {
            return Poll::Ready(None);
        };
        match r.poll_step(cx) {
            remote::Step::Deliver(d) => Poll::Ready(Some(d)),
            remote::Step::Lagged(missed) => {
                self.host.count_lagged(missed);
                Poll::Ready(Some(Delivery::Lagged { missed }))
            }
            remote::Step::End => {
                self.ended = true;
                Poll::Ready(None)
            }
            remote::Step::Wait => Poll::Pending,
        }
    }
    // redis-hook: end

    /// Waits for the next delivery; `None` once the stream has ended.
    ///
    /// Cancel safe: dropping the future loses nothing.
    pub async fn recv(&mut self) -> Option<Delivery> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Blocks the thread until the next delivery; `None` once the stream has ended.
    ///
    /// For synchronous code. Calling it from inside an async task blocks that
    /// task's thread; use [`recv`](Subscription::recv) there.
    pub fn blocking_recv(&mut self) -> Option<Delivery> {
        // What is ready now needs no executor: the executor (and a waker)
        // only when the thread has to wait.
        if self.ended {
            return None;
        }
        // redis-hook: begin (a remote subscription waits on its feed)
        if self.remote.is_some() {
            return futures_executor::block_on(self.recv());
        }
        // redis-hook: end
        match self.step(None) {
            Step::Deliver(d) => Some(d),
            Step::End => None,
            Step::Wait => futures_executor::block_on(self.recv()),
        }
    }

    /// Returns a delivery if one is ready now, without waiting.
    /// `Ok(None)` means the stream has ended; `Err(())` that nothing is ready yet.
    #[allow(clippy::result_unit_err)]
    #[inline]
    pub fn try_recv(&mut self) -> Result<Option<Delivery>, ()> {
        match self.ready() {
            Some(d) => {
                self.note_terminal(&d);
                Ok(Some(d))
            }
            None => self.try_recv_locked(),
        }
    }

    /// `try_recv` when nothing is ready without the trace's lock.
    #[inline(never)]
    fn try_recv_locked(&mut self) -> Result<Option<Delivery>, ()> {
        // redis-hook: begin
        if self.remote.is_some() {
            if self.ended {
                return Ok(None);
            }
            let mut cx = Context::from_waker(Waker::noop());
            return match self.poll_remote(&mut cx) {
                Poll::Ready(d) => Ok(d),
                Poll::Pending => Err(()),
            };
        }
        // redis-hook: end
        match self.step(None) {
            Step::Deliver(d) => Ok(Some(d)),
            Step::End => Ok(None),
            Step::Wait => Err(()),
        }
    }

    /// Polls for the next delivery (the building block of `recv` and `Stream`).
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Delivery>> {
        // redis-hook: begin
        if self.remote.is_some() {
            if self.ended {
                return Poll::Ready(None);
            }
            return self.poll_remote(cx);
        }
        // redis-hook: end
        match self.step(Some(cx.waker())) {
            Step::Deliver(d) => Poll::Ready(Some(d)),
            Step::End => Poll::Ready(None),
            Step::Wait => Poll::Pending,
        }
    }

    /// Seq of the next event this subscription will deliver.
    pub fn next_seq(&self) -> u64 {
        // redis-hook: begin
        if let Some(r) = &self.remote {
            return r.next_seq;
        }
        // redis-hook: end
        if let Some(seq) = self.buf.iter().find_map(|d| match d {
            Delivery::Event(e) => Some(e.seq),
            Delivery::Lagged { .. } => None,
        }) {
            return seq;
        }
        self.cursor.next_seq
    }

    /// What is ready without taking the trace's lock: the buffer, then the
    /// pinned block. `None`: read under the lock.
    #[inline(always)]
    fn ready(&mut self) -> Option<Delivery> {
        if self.ended {
            return None;
        }
        if let Some(d) = self.buf.pop_front() {
            return Some(d);
        }
        let pin = self.pin.as_mut()?;
        let before = self.cursor.next_seq;
        match pin.next(&mut self.cursor) {
            Some(ev) => {
                self.shared.set_next_seq(self.cursor.next_seq);
                Some(Delivery::Event(ev.share(&mut self.refs)))
            }
            None => {
                if self.cursor.next_seq != before {
                    self.shared.set_next_seq(self.cursor.next_seq);
                }
                None
            }
        }
    }

    /// Ends the stream after the terminal event `d`.
    #[inline(always)]
    fn note_terminal(&mut self, d: &Delivery) {
        if let Delivery::Event(e) = d
            && e.kind == EventKind::Complete
        {
            // The terminal event: the stream ends after it.
            self.ended = true;
            self.refs.flush();
        }
    }

    fn step(&mut self, waker: Option<&Waker>) -> Step {
        if self.ended {
            return Step::End;
        }
        if let Some(d) = self.ready() {
            self.note_terminal(&d);
            return Step::Deliver(d);
        }
        let r = self.fill(waker);
        if self.ended {
            // Nothing more to read: the chunk may be reused.
            self.refs.flush();
        }
        if r.missed > 0 {
            self.host.count_lagged(r.missed);
        }
        match self.buf.pop_front() {
            Some(d) => {
                self.note_terminal(&d);
                Step::Deliver(d)
            }
            None if self.ended => Step::End,
            None => Step::Wait,
        }
    }

    /// Takes what is available into `buf`; sets `ended` when nothing more
    /// will come.
    fn fill(&mut self, waker: Option<&Waker>) -> ReadResult {
        let none = ReadResult {
            delivered: 0,
            missed: 0,
        };
        if self.detached.is_none() && !self.shared.is_detached() {
            let mut r = none;
            let mut finished = false;
            let (reader, buf, cursor, pin, refs) = (
                self.reader,
                &mut self.buf,
                &mut self.cursor,
                &mut self.pin,
                &mut self.refs,
            );
            let live = self.host.with_log(self.key, &mut |log, src, fin| {
                r = log.read(reader, cursor, pin, refs, BATCH, buf, waker, src);
                finished = fin;
            });
            if live {
                // A finished trace emits nothing more, and `complete` is
                // behind us when nothing was left to read.
                self.ended = r.delivered == 0 && finished;
                return r;
            }
            if !self.shared.is_detached() {
                // Released before this subscription could be detached (it
                // was being made): nothing to read.
                self.ended = true;
                return none;
            }
        }
        if self.detached.is_none() {
            self.detached = self.shared.take_detached();
            self.pin = None;
            // What is left to read is the frozen history's.
            self.refs.flush();
        }
        let r = match &self.detached {
            Some(Detached {
                frozen: Some(frozen),
            }) => read_frozen(
                frozen,
                &mut self.cursor,
                BATCH,
                &mut self.buf,
                &mut self.refs,
            ),
            _ => none,
        };
        self.ended = r.delivered == 0;
        r
    }
}

impl futures_core::Stream for Subscription {
    type Item = Delivery;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Delivery>> {
        self.get_mut().poll_recv(cx)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        // redis-hook: begin
        if self.remote.is_some() {
            self.host.count_follow(-1);
            return;
        }
        // redis-hook: end
        self.host.count_reader(-1);
        keep_buf(std::mem::take(&mut self.buf));
        if self.shared.is_detached() {
            return;
        }
        let (reader, shared) = (self.reader, &self.shared);
        self.host.with_log(self.key, &mut |log, _, _| {
            log.remove_reader(reader, shared);
        });
    }
}
