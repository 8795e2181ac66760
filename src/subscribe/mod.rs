//! Subscriptions: history replay followed by live events, exactly once and in
//! seq order, with explicit lag.
//!
//! # How it works
//!
//! A subscription is a cursor (`next_seq`) into its trace's event history,
//! not a queue: nothing is copied per subscriber while it keeps up. Emitting
//! an event appends it to history under the slot lock and wakes every
//! subscriber's waker; a woken subscriber takes the slot lock and reads the
//! events from its cursor on. Replay and live delivery are therefore the same
//! code path, and a subscription made while other threads write sees each
//! event with `seq >= cursor` once, in order.
//!
//! # Lagging
//!
//! A subscriber whose cursor is more than `subscriber_buffer` events behind
//! the newest event, or older than the retained history, receives one
//! [`Delivery::Lagged`] with the number of events skipped and continues from
//! the oldest event still within its bound. The writer never waits for readers.
//!
//! # Ending
//!
//! The stream ends (`None`) after the `complete` event is delivered. When the
//! trace is released first, the events a subscriber has not read yet are
//! moved into the subscription itself (its tail) before the slot is reset;
//! the stream ends once the tail is drained. Dropping a subscription
//! unsubscribes it. No task or thread exists per subscription.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;

use crate::engine::Core;
use crate::event::{Delivery, EventKind, StoredEvent};
use crate::id::TraceId;
use crate::pool::lock;
use crate::trace::state::TraceState;

/// The part of a subscription that its trace's slot can reach.
#[derive(Debug, Default)]
pub(crate) struct SubShared {
    /// Seq of the next event to deliver. While attached it is only changed
    /// under the slot lock.
    next_seq: AtomicU64,
    waker: AtomicWaker,
    /// Set (under the slot lock) once the trace was released and the
    /// remaining events were moved into `tail`.
    detached: AtomicBool,
    tail: Mutex<Tail>,
}

#[derive(Debug, Default)]
struct Tail {
    lagged: u64,
    events: VecDeque<StoredEvent>,
}

impl SubShared {
    pub(crate) fn wake(&self) {
        self.waker.wake();
    }
}

/// Computes where a cursor at `next` may resume in `st`, given the bound:
/// returns the new cursor and how many events are skipped.
fn clamp_cursor(st: &TraceState, mut next: u64) -> (u64, u64) {
    let oldest = st.oldest_seq();
    let end = st.next_seq; // one past the newest
    let mut missed = 0;
    if next < oldest {
        missed += oldest - next;
        next = oldest;
    }
    let bound = st.limits.subscriber_buffer as u64;
    if end > next && end - next > bound {
        missed += end - next - bound;
        next = end - bound;
    }
    (next, missed)
}

/// Detaches every subscriber of a trace that is being released: what each
/// has not read yet (within its bound) moves into its tail, then it is woken.
/// Runs under the slot lock, before the reset.
pub(crate) fn detach_all(st: &mut TraceState) {
    let subs = std::mem::take(&mut st.subs);
    for sub in &subs {
        let (next, missed) = clamp_cursor(st, sub.next_seq.load(Ordering::Relaxed));
        {
            let mut tail = lock(&sub.tail);
            tail.lagged = missed;
            for seq in next..st.next_seq {
                if let Some(ev) = st.event_at(seq) {
                    tail.events.push_back(ev.clone());
                }
            }
        }
        sub.detached.store(true, Ordering::Release);
        sub.wake();
    }
    // Give the vector (and its capacity) back to the slot.
    st.subs = subs;
    st.subs.clear();
}

/// Registers a subscription starting at `start_seq` in `st` (under the slot lock).
pub(crate) fn register(st: &mut TraceState, start_seq: u64) -> Arc<SubShared> {
    let shared = Arc::new(SubShared {
        next_seq: AtomicU64::new(start_seq.max(1)),
        ..SubShared::default()
    });
    st.subs.push(shared.clone());
    shared
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
    core: Arc<Core>,
    idx: u32,
    generation: u64,
    trace_id: TraceId,
    shared: Arc<SubShared>,
    min_ts: i64,
    ended: bool,
    /// The event at the cursor, taken together with a `Lagged` report so that
    /// one gap gives exactly one `Lagged`, followed by an event.
    stash: Option<StoredEvent>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("trace_id", &self.trace_id)
            .field("next_seq", &self.shared.next_seq.load(Ordering::Relaxed))
            .field("ended", &self.ended)
            .finish()
    }
}

impl Subscription {
    pub(crate) fn new(
        core: Arc<Core>,
        idx: u32,
        generation: u64,
        trace_id: TraceId,
        shared: Arc<SubShared>,
        min_ts: i64,
    ) -> Subscription {
        core.counters.subscribers.fetch_add(1, Ordering::AcqRel);
        Subscription {
            core,
            idx,
            generation,
            trace_id,
            shared,
            min_ts,
            ended: false,
            stash: None,
        }
    }

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
        futures_executor::block_on(self.recv())
    }

    /// Returns a delivery if one is ready now, without waiting.
    /// `Ok(None)` means the stream has ended; `Err(())` that nothing is ready yet.
    #[allow(clippy::result_unit_err)]
    pub fn try_recv(&mut self) -> Result<Option<Delivery>, ()> {
        if self.ended {
            return Ok(None);
        }
        match self.step() {
            Step::Deliver(d) => Ok(Some(d)),
            Step::End => {
                self.ended = true;
                Ok(None)
            }
            Step::Wait => Err(()),
        }
    }

    /// Polls for the next delivery (the building block of `recv` and `Stream`).
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Delivery>> {
        if self.ended {
            return Poll::Ready(None);
        }
        // Register before looking, so an event appended right after the look
        // wakes us.
        self.shared.waker.register(cx.waker());
        match self.step() {
            Step::Deliver(d) => Poll::Ready(Some(d)),
            Step::End => {
                self.ended = true;
                Poll::Ready(None)
            }
            Step::Wait => Poll::Pending,
        }
    }

    /// Seq of the next event this subscription will deliver.
    pub fn next_seq(&self) -> u64 {
        self.shared.next_seq.load(Ordering::Relaxed)
    }

    fn lagged(&self, missed: u64) -> Step {
        self.core
            .counters
            .events_lagged
            .fetch_add(missed, Ordering::Relaxed);
        Step::Deliver(Delivery::Lagged { missed })
    }

    fn deliver(&mut self, ev: &StoredEvent) -> Step {
        if ev.kind == EventKind::Complete {
            // The terminal event: the stream ends after it.
            self.ended = true;
        }
        Step::Deliver(Delivery::Event(ev.to_event(self.trace_id.as_str())))
    }

    fn step(&mut self) -> Step {
        if let Some(ev) = self.stash.take() {
            return self.deliver(&ev);
        }
        if self.shared.detached.load(Ordering::Acquire) {
            return self.step_tail();
        }
        let slot = self.core.pool.get(self.idx);
        let st = lock(&slot.state);
        if st.generation != self.generation || !st.live {
            drop(st);
            // Released: detach_all ran (under the lock we just took) before the reset.
            return if self.shared.detached.load(Ordering::Acquire) {
                self.step_tail()
            } else {
                Step::End
            };
        }
        let (mut next, missed) = clamp_cursor(&st, self.shared.next_seq.load(Ordering::Relaxed));
        if missed > 0 {
            // Take the first event after the gap now, under the same lock, so
            // the writer cannot push it out of bounds before it is delivered.
            while let Some(ev) = st.event_at(next) {
                next += 1;
                if ev.timestamp >= self.min_ts {
                    self.stash = Some(ev.clone());
                    break;
                }
            }
            self.shared.next_seq.store(next, Ordering::Relaxed);
            return self.lagged(missed);
        }
        while next < st.next_seq {
            let Some(ev) = st.event_at(next) else { break };
            next += 1;
            if ev.timestamp < self.min_ts {
                continue;
            }
            self.shared.next_seq.store(next, Ordering::Relaxed);
            let ev = ev.clone();
            drop(st);
            return self.deliver(&ev);
        }
        self.shared.next_seq.store(next, Ordering::Relaxed);
        if st.finished {
            // A finished trace emits nothing more, and `complete` is behind us.
            Step::End
        } else {
            Step::Wait
        }
    }

    fn step_tail(&mut self) -> Step {
        let mut tail = lock(&self.shared.tail);
        if tail.lagged > 0 {
            let m = std::mem::take(&mut tail.lagged);
            drop(tail);
            return self.lagged(m);
        }
        while let Some(ev) = tail.events.pop_front() {
            if ev.timestamp < self.min_ts {
                continue;
            }
            drop(tail);
            return self.deliver(&ev);
        }
        Step::End
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
        self.core
            .counters
            .subscribers
            .fetch_sub(1, Ordering::AcqRel);
        if self.shared.detached.load(Ordering::Acquire) {
            return;
        }
        let slot = self.core.pool.get(self.idx);
        let mut st = lock(&slot.state);
        if st.generation == self.generation
            && let Some(i) = st.subs.iter().position(|s| Arc::ptr_eq(s, &self.shared))
        {
            st.subs.swap_remove(i);
        }
    }
}
