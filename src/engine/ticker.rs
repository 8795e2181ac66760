//! The engine's ticker: one thread that wakes timed waits, runs the
//! engine's periodic chores (idle reaping, lease renewal), re-anchors the
//! event clock to the system clock every second and, while events are being
//! recorded, refreshes the clock's cached reading every millisecond
//! (see [`crate::clock::Refresher`]).
//!
//! Async waits with a timeout (`create_async` on a full pool, `flush`,
//! reads of draining ids) need a timer that works in any executor and keeps
//! working while every worker is busy inside a slow driver call. The ticker
//! is that timer: a [`Deadline`] future registers its waker here, and the
//! ticker thread wakes it when its time comes. The thread never calls the
//! driver. After the engine shut down, every deadline is due at once.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::clock::Refresher;
use crate::error::{Error, Result};
use crate::pool::lock;

/// How often the ticker re-anchors the event clock to the system clock
/// (see [`crate::clock`]), whatever else it has to do: it is also the
/// longest it sleeps.
const RESYNC_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
struct Timers {
    due: BinaryHeap<Reverse<(Instant, u64)>>,
    wakers: HashMap<u64, Waker>,
    next_id: u64,
}

/// The part of the ticker that deadlines and the engine share.
#[derive(Debug, Default)]
pub(crate) struct TickerShared {
    timers: Mutex<Timers>,
    cv: Condvar,
    stopped: AtomicBool,
    /// How many times this ticker re-anchored the clock.
    resyncs: AtomicU64,
    /// How many times this ticker refreshed the clock's cached reading.
    refreshes: AtomicU64,
    /// A trace started while nobody refreshed the clock's cached reading:
    /// the ticker is to look whether to start (see [`TickerShared::nudge`]).
    nudged: AtomicBool,
}

impl TickerShared {
    /// A future that completes at `at` (or at once after shutdown).
    pub(crate) fn deadline(self: &Arc<Self>, at: Instant) -> Deadline {
        Deadline {
            ticker: self.clone(),
            at,
            id: None,
        }
    }

    /// A future that completes after `d`.
    pub(crate) fn sleep(self: &Arc<Self>, d: Duration) -> Deadline {
        self.deadline(Instant::now() + d)
    }

    /// Called when a trace starts: if nobody refreshes the clock's cached
    /// reading, the ticker wakes up to start (rather than at its next
    /// re-anchor, up to a second later). One wake-up per idle period.
    #[inline]
    pub(crate) fn nudge(&self) {
        if crate::clock::is_uncached()
            && !self.nudged.load(Ordering::Relaxed)
            && !self.nudged.swap(true, Ordering::Relaxed)
        {
            // Under the timers' lock: the ticker is either before its check
            // of `nudged` or already waiting.
            let _t = lock(&self.timers);
            self.cv.notify_one();
        }
    }
}

/// Completes at its instant; see [`TickerShared::deadline`].
#[derive(Debug)]
pub(crate) struct Deadline {
    ticker: Arc<TickerShared>,
    at: Instant,
    id: Option<u64>,
}

impl Future for Deadline {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.ticker.stopped.load(Ordering::Acquire) || Instant::now() >= self.at {
            return Poll::Ready(());
        }
        let at = self.at;
        let ticker = self.ticker.clone();
        let mut t = lock(&ticker.timers);
        match self.id {
            Some(id) => {
                t.wakers.insert(id, cx.waker().clone());
            }
            None => {
                let id = t.next_id;
                t.next_id += 1;
                t.wakers.insert(id, cx.waker().clone());
                let earliest = t.due.peek().is_none_or(|Reverse((first, _))| at < *first);
                t.due.push(Reverse((at, id)));
                self.id = Some(id);
                if earliest {
                    ticker.cv.notify_one();
                }
            }
        }
        Poll::Pending
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            // The heap entry stays until it is due; it then finds no waker.
            lock(&self.ticker.timers).wakers.remove(&id);
        }
    }
}

/// The ticker thread and its shared part.
#[derive(Debug)]
pub(crate) struct Ticker {
    pub(crate) shared: Arc<TickerShared>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    /// Starts the ticker thread; `chore` runs every `period` (if any).
    pub(crate) fn start(
        shared: Arc<TickerShared>,
        period: Option<Duration>,
        chore: impl Fn() + Send + 'static,
    ) -> Result<Ticker> {
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("tracepool-ticker".into())
            .spawn(move || run(&s, period, chore))
            .map_err(|e| Error::Config(format!("cannot start the ticker thread: {e}")))?;
        Ok(Ticker {
            shared,
            thread: Some(thread),
        })
    }

    /// Stops the thread (every pending deadline completes) and joins it.
    pub(crate) fn stop(&mut self) {
        self.shared.stopped.store(true, Ordering::Release);
        let wakers: Vec<Waker> = {
            let mut t = lock(&self.shared.timers);
            t.due.clear();
            t.wakers.drain().map(|(_, w)| w).collect()
        };
        self.shared.cv.notify_all();
        for w in wakers {
            w.wake();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(shared: &TickerShared, period: Option<Duration>, chore: impl Fn()) {
    let mut next_chore = period.map(|p| Instant::now() + p);
    let mut next_resync = Instant::now() + RESYNC_EVERY;
    let mut refresher = Refresher::new();
    let mut next_refresh = Instant::now();
    let mut due_wakers = Vec::new();
    loop {
        {
            let mut t = lock(&shared.timers);
            loop {
                if shared.stopped.load(Ordering::Acquire) {
                    return;
                }
                let now = Instant::now();
                while let Some(&Reverse((at, id))) = t.due.peek() {
                    if at > now {
                        break;
                    }
                    t.due.pop();
                    if let Some(w) = t.wakers.remove(&id) {
                        due_wakers.push(w);
                    }
                }
                let refresh_due = refresher.is_refreshing() && next_refresh <= now;
                if !due_wakers.is_empty()
                    || next_chore.is_some_and(|c| c <= now)
                    || next_resync <= now
                    || refresh_due
                    || shared.nudged.load(Ordering::Relaxed)
                {
                    break;
                }
                let mut until = next_resync;
                if refresher.is_refreshing() {
                    until = until.min(next_refresh);
                }
                if let Some(Reverse((at, _))) = t.due.peek() {
                    until = until.min(*at);
                }
                if let Some(c) = next_chore {
                    until = until.min(c);
                }
                t = shared
                    .cv
                    .wait_timeout(t, until.saturating_duration_since(now))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }
        for w in due_wakers.drain(..) {
            w.wake();
        }
        let now = Instant::now();
        let nudged = shared.nudged.swap(false, Ordering::Relaxed);
        // At least once a second, even with no chore and no deadline: keep
        // the event clock on the system clock.
        let resync_due = next_resync <= now;
        if resync_due {
            crate::clock::resync();
            shared.resyncs.fetch_add(1, Ordering::Relaxed);
            next_resync = now + RESYNC_EVERY;
        }
        // While the clock is read, every millisecond; otherwise look
        // whether it is read again at each re-anchor and when nudged.
        if ((refresher.is_refreshing() && next_refresh <= now) || resync_due || nudged)
            && refresher.refresh()
        {
            shared.refreshes.fetch_add(1, Ordering::Relaxed);
            next_refresh = now + refresher.next_in();
        }
        if let (Some(c), Some(p)) = (next_chore, period)
            && c <= Instant::now()
        {
            // A chore may take a while (a lease renewal talks to a
            // server): the cached reading must not go stale meanwhile.
            let refreshing = refresher.is_refreshing();
            refresher.stop();
            chore();
            next_chore = Some(Instant::now() + p);
            if refreshing {
                refresher.restart();
                next_refresh = Instant::now() + refresher.next_in();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_complete_in_time_order_and_at_stop() {
        let shared = Arc::new(TickerShared::default());
        let mut ticker = Ticker::start(shared.clone(), None, || {}).unwrap();
        let started = Instant::now();
        futures_executor::block_on(shared.sleep(Duration::from_millis(30)));
        assert!(started.elapsed() >= Duration::from_millis(30));
        // A long deadline completes when the ticker stops.
        let long = shared.sleep(Duration::from_secs(3600));
        let t = std::thread::spawn(move || futures_executor::block_on(long));
        std::thread::sleep(Duration::from_millis(20));
        ticker.stop();
        t.join().unwrap();
    }

    #[test]
    fn the_clock_is_re_anchored_every_second_without_chores_or_deadlines() {
        // No chore (`idle_timeout(None)` and a driver without leases) and no
        // timed wait: the ticker must still wake up to re-anchor the clock.
        let shared = Arc::new(TickerShared::default());
        let mut ticker = Ticker::start(shared.clone(), None, || {}).unwrap();
        std::thread::sleep(RESYNC_EVERY * 2 + Duration::from_millis(500));
        let n = shared.resyncs.load(Ordering::Relaxed);
        ticker.stop();
        assert!(n >= 2, "re-anchored {n} times in 2.5 s");
    }

    #[test]
    fn a_nudged_ticker_keeps_the_cached_reading_fresh_while_the_clock_is_read() {
        let shared = Arc::new(TickerShared::default());
        let mut ticker = Ticker::start(shared.clone(), None, || {}).unwrap();
        let system_ms = || {
            let d = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap();
            i64::try_from(d.as_millis()).unwrap()
        };
        // A trace starts: the clock is read, and the ticker is nudged (the
        // reading may already be kept by another engine's ticker: then the
        // nudge does nothing and this ticker starts at its first wake-up
        // that finds the clock read, within a second).
        crate::clock::now_ms();
        shared.nudge();
        let started = Instant::now();
        let mut lags = Vec::new();
        while started.elapsed() < Duration::from_millis(2_500) {
            let before = system_ms();
            let t = crate::clock::now_ms();
            let after = system_ms();
            // Never ahead of the wall clock (a counter reading may be by
            // its drift, well under a millisecond).
            assert!(t <= after + 1, "{t} ahead of {after}");
            lags.push(before - t);
            std::thread::sleep(Duration::from_micros(200));
        }
        let n = shared.refreshes.load(Ordering::Relaxed);
        ticker.stop();
        // Refreshing for at least the last 1.5 s, about once a millisecond
        // (the bound leaves room for a loaded machine's late wake-ups).
        assert!(n >= 100, "refreshed {n} times");
        lags.sort_unstable();
        let median = lags[lags.len() / 2];
        assert!(median <= 1, "median lag {median} ms");
    }

    #[test]
    fn the_chore_runs_periodically() {
        let shared = Arc::new(TickerShared::default());
        let (tx, rx) = std::sync::mpsc::channel();
        let mut ticker = Ticker::start(shared, Some(Duration::from_millis(5)), move || {
            let _ = tx.send(());
        })
        .unwrap();
        for _ in 0..3 {
            rx.recv_timeout(Duration::from_secs(5)).expect("chore ran");
        }
        ticker.stop();
    }
}
