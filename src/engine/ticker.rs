//! The engine's ticker: one thread that wakes timed waits, runs the
//! engine's periodic chores (idle reaping, lease renewal) and re-anchors the
//! event clock to the system clock every second.
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
                if !due_wakers.is_empty()
                    || next_chore.is_some_and(|c| c <= now)
                    || next_resync <= now
                {
                    break;
                }
                let mut until = next_resync;
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
        // At least once a second, even with no chore and no deadline: keep
        // the event clock on the system clock.
        crate::clock::resync();
        shared.resyncs.fetch_add(1, Ordering::Relaxed);
        next_resync = Instant::now() + RESYNC_EVERY;
        if let (Some(c), Some(p)) = (next_chore, period)
            && c <= Instant::now()
        {
            chore();
            next_chore = Some(Instant::now() + p);
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
