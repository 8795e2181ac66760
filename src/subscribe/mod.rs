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
//! Let `h` be the newest seq when the subscription was made. Events up to
//! `h` (the replay) are all delivered, except those already evicted from the
//! retained history: a cursor older than the history gets one
//! [`Delivery::Lagged`] for the evicted run first. Once the subscriber has
//! passed `h`, whenever it is more than `subscriber_buffer` events behind the
//! newest event it skips to `newest - subscriber_buffer + 1` with one
//! `Lagged { missed }`. The writer never waits for readers.
//!
//! # Ending
//!
//! The stream ends (`None`) after the `complete` event is delivered. When the
//! trace is released first, its retained history moves into one shared,
//! read-only [`Frozen`] that every subscriber with unread events keeps a
//! reference to (release costs one step per subscriber, no copy per event);
//! each stream ends once it has read it. Dropping a subscription
//! unsubscribes it. No task or thread exists per subscription.

mod remote; // redis-hook

use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;

use crate::engine::Core;
use crate::error::{Error, Result};
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
    /// Newest seq when the subscription was made (`h` of the lag rule).
    replay_end: u64,
    waker: AtomicWaker,
    /// Set (under the slot lock) once the trace was released and `frozen`
    /// was filled in.
    detached: AtomicBool,
    frozen: Mutex<Option<Arc<Frozen>>>,
}

impl SubShared {
    pub(crate) fn wake(&self) {
        self.waker.wake();
    }
}

/// The retained history of a released trace, shared read-only by its
/// subscribers that had not read all of it.
#[derive(Debug)]
pub(crate) struct Frozen {
    events: VecDeque<StoredEvent>,
    /// One past the newest seq.
    end: u64,
    bound: u64,
}

/// A view of a history: the retained events and where they end.
struct History<'a> {
    events: &'a VecDeque<StoredEvent>,
    end: u64,
    bound: u64,
}

impl History<'_> {
    fn oldest(&self) -> u64 {
        self.events.front().map_or(self.end, |e| e.seq)
    }

    fn get(&self, seq: u64) -> Option<&StoredEvent> {
        let oldest = self.oldest();
        if seq < oldest {
            return None;
        }
        usize::try_from(seq - oldest)
            .ok()
            .and_then(|i| self.events.get(i))
    }

    /// Where a cursor at `next` may resume under the lag rule: the new
    /// cursor and how many events it skips.
    fn clamp(&self, mut next: u64, replay_end: u64) -> (u64, u64) {
        let oldest = self.oldest();
        let mut missed = 0;
        if next < oldest {
            missed += oldest - next;
            next = oldest;
        }
        if next > replay_end && self.end > next && self.end - next > self.bound {
            missed += self.end - next - self.bound;
            next = self.end - self.bound;
        }
        (next, missed)
    }
}

fn live_history(st: &TraceState) -> History<'_> {
    History {
        events: &st.history,
        end: st.next_seq,
        bound: st.limits.subscriber_buffer as u64,
    }
}

/// Detaches every subscriber of a trace that is being released. If any of
/// them has unread events, the retained history moves (no copy) into one
/// shared [`Frozen`] they all keep; each is then woken. Runs under the slot
/// lock, before the slot drains or is reset.
pub(crate) fn detach_all(st: &mut TraceState) {
    let subs = std::mem::take(&mut st.subs);
    if subs.is_empty() {
        st.subs = subs;
        return;
    }
    let unread = subs
        .iter()
        .any(|s| s.next_seq.load(Ordering::Relaxed) < st.next_seq);
    let frozen = unread.then(|| {
        Arc::new(Frozen {
            events: std::mem::take(&mut st.history),
            end: st.next_seq,
            bound: st.limits.subscriber_buffer as u64,
        })
    });
    for sub in &subs {
        *lock(&sub.frozen) = frozen.clone();
        sub.detached.store(true, Ordering::Release);
        sub.wake();
    }
    // Give the vector (and its capacity) back to the slot.
    st.subs = subs;
    st.subs.clear();
}

/// Registers a subscription starting at `start_seq` in `st` (under the slot lock).
///
/// # Errors
/// `LimitExceeded` when the trace has `max_subscribers` subscriptions.
pub(crate) fn register(st: &mut TraceState, start_seq: u64) -> Result<Arc<SubShared>> {
    let limit = st.limits.max_subscribers;
    if st.subs.len() >= limit {
        return Err(Error::LimitExceeded {
            what: "subscribers",
            limit,
        });
    }
    let shared = Arc::new(SubShared {
        next_seq: AtomicU64::new(start_seq.max(1)),
        replay_end: st.next_seq - 1,
        ..SubShared::default()
    });
    st.subs.push(shared.clone());
    Ok(shared)
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
    /// The released trace's history, once detached.
    frozen: Option<Arc<Frozen>>,
    // redis-hook: fed by a driver's follow feed instead of a slot.
    remote: Option<Box<remote::Remote>>, // redis-hook
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("trace_id", &self.trace_id)
            .field("next_seq", &self.next_seq()) // redis-hook
            .field("remote", &self.remote.is_some()) // redis-hook
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
            frozen: None,
            remote: None, // redis-hook
        }
    }

    // redis-hook: begin
    /// A subscription fed by a driver's follow feed (`Engine::follow` of a
    /// trace that is not loaded here). It holds no slot.
    pub(crate) fn remote(
        core: Arc<Core>,
        trace_id: TraceId,
        feed: Box<dyn crate::driver::FollowFeed>,
        from_seq: u64,
        min_ts: i64,
    ) -> Subscription {
        let shared = Arc::new(SubShared::default());
        // Never attached to a slot: nothing to detach on drop.
        shared.detached.store(true, Ordering::Release);
        Subscription {
            core,
            idx: 0,
            generation: 0,
            trace_id,
            shared,
            min_ts,
            ended: false,
            stash: None,
            frozen: None,
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
                self.core
                    .counters
                    .events_lagged
                    .fetch_add(missed, Ordering::Relaxed);
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
        futures_executor::block_on(self.recv())
    }

    /// Returns a delivery if one is ready now, without waiting.
    /// `Ok(None)` means the stream has ended; `Err(())` that nothing is ready yet.
    #[allow(clippy::result_unit_err)]
    pub fn try_recv(&mut self) -> Result<Option<Delivery>, ()> {
        if self.ended {
            return Ok(None);
        }
        // redis-hook: begin
        if self.remote.is_some() {
            let mut cx = Context::from_waker(std::task::Waker::noop());
            return match self.poll_remote(&mut cx) {
                Poll::Ready(d) => Ok(d),
                Poll::Pending => Err(()),
            };
        }
        // redis-hook: end
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
        // redis-hook: begin
        if self.remote.is_some() {
            return self.poll_remote(cx);
        }
        // redis-hook: end
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
        // redis-hook: begin
        if let Some(r) = &self.remote {
            return r.next_seq;
        }
        // redis-hook: end
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
            return self.step_frozen();
        }
        let slot = self.core.pool.get(self.idx);
        let st = lock(&slot.state);
        if !st.is_live(self.generation) {
            drop(st);
            // Released: detach_all ran (under the lock we just took) before
            // the slot moved on.
            return if self.shared.detached.load(Ordering::Acquire) {
                self.step_frozen()
            } else {
                Step::End
            };
        }
        let next = next_from(
            &self.shared,
            self.min_ts,
            &mut self.stash,
            &live_history(&st),
        );
        let finished = st.finished;
        drop(st);
        match next {
            Some(n) => self.step_for(n),
            // A finished trace emits nothing more, and `complete` is behind us.
            None if finished => Step::End,
            None => Step::Wait,
        }
    }

    fn step_frozen(&mut self) -> Step {
        if self.frozen.is_none() {
            self.frozen = lock(&self.shared.frozen).take();
        }
        let Some(frozen) = &self.frozen else {
            return Step::End;
        };
        let h = History {
            events: &frozen.events,
            end: frozen.end,
            bound: frozen.bound,
        };
        match next_from(&self.shared, self.min_ts, &mut self.stash, &h) {
            Some(n) => self.step_for(n),
            None => Step::End,
        }
    }

    fn step_for(&mut self, n: Next) -> Step {
        match n {
            Next::Event(ev) => self.deliver(&ev),
            Next::Lagged(missed) => self.lagged(missed),
        }
    }
}

/// What a subscription delivers next.
enum Next {
    Event(StoredEvent),
    Lagged(u64),
}

/// The next delivery from `h` at the subscription's cursor (advancing it),
/// or `None` when it has read everything there is. After a gap, the first
/// event behind it goes into `stash`, taken together with the `Lagged`.
fn next_from(
    shared: &SubShared,
    min_ts: i64,
    stash: &mut Option<StoredEvent>,
    h: &History<'_>,
) -> Option<Next> {
    let (mut next, missed) = h.clamp(shared.next_seq.load(Ordering::Relaxed), shared.replay_end);
    if missed > 0 {
        // Take the first event after the gap now, under the same lock, so
        // the writer cannot push it out of bounds before it is delivered.
        while let Some(ev) = h.get(next) {
            next += 1;
            if ev.timestamp >= min_ts {
                *stash = Some(ev.clone());
                break;
            }
        }
        shared.next_seq.store(next, Ordering::Relaxed);
        return Some(Next::Lagged(missed));
    }
    while next < h.end {
        let Some(ev) = h.get(next) else { break };
        next += 1;
        if ev.timestamp < min_ts {
            continue;
        }
        shared.next_seq.store(next, Ordering::Relaxed);
        return Some(Next::Event(ev.clone()));
    }
    shared.next_seq.store(next, Ordering::Relaxed);
    None
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
            self.core.counters.follows.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        // redis-hook: end
        self.core
            .counters
            .subscribers
            .fetch_sub(1, Ordering::AcqRel);
        if self.shared.detached.load(Ordering::Acquire) {
            return;
        }
        let slot = self.core.pool.get(self.idx);
        let mut st = lock(&slot.state);
        if st.is_live(self.generation)
            && let Some(i) = st.subs.iter().position(|s| Arc::ptr_eq(s, &self.shared))
        {
            st.subs.swap_remove(i);
        }
    }
}
