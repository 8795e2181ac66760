//! Waiting for the storage driver: `flush`, and reads of ids that are still
//! draining.
//!
//! # Flush epochs
//!
//! `flush` bumps a global epoch `T` and waits until every worker reports a
//! completed epoch `>= T`. A worker reads the epoch `e` when it starts a
//! pass over its queue, and when the pass is over reports `min(e, b)`, where
//! `b` is the epoch at which the oldest write it could not complete (a failed
//! batch, a draining slot waiting to retry, an archive) was queued. Anything
//! emitted, released or archived before the flush call was queued at an
//! epoch `< T`, so it is either written by a pass that started at `>= T` or
//! holds the worker's report below `T`. The wait is bounded by
//! `drain_timeout`; storage errors met while waiting are returned.
//!
//! # Drains
//!
//! `open`, `exists` and `info` of an id whose slot is draining wait (also at
//! most `drain_timeout`) until the worker handed its last batch over, so a
//! read right after a release sees everything.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::error::Error;
use crate::pool::lock;

/// How long a blocking wait polls before it sleeps, and a worker its queue
/// after a pass that wrote something: a wake-up of a sleeping thread takes
/// tens of microseconds on a virtual machine.
pub(crate) const SPIN: Duration = Duration::from_micros(50);

/// How many recent storage errors are kept for `flush` to report.
const ERRORS_KEPT: usize = 32;

/// Something that wakes its waiters: a condvar for threads, a `Notify` for tasks.
#[derive(Debug, Default)]
pub(crate) struct Signal {
    /// Threads asleep on `cv` (or about to be: counted under this lock
    /// before they check what they wait for).
    sleepers: Mutex<usize>,
    cv: Condvar,
    notify: Notify,
}

impl Signal {
    /// Wakes every waiter; call after changing what they wait for.
    ///
    /// The condvar is signalled only when a thread sleeps on it: a waiter
    /// counts itself and checks its condition under `sleepers`' lock, and
    /// this takes that lock after the change, so either the waiter sees
    /// the change or this sees the waiter. (A `notify_all` is a system call
    /// even with no waiter; this is called once per drained slot.)
    pub(crate) fn wake_all(&self) {
        let sleepers = *lock(&self.sleepers);
        if sleepers > 0 {
            self.cv.notify_all();
        }
        self.notify.notify_waiters();
    }

    /// Blocks until `done()` or the deadline; returns the last `done()`.
    ///
    /// Polls `done()` for up to [`SPIN`] first (yielding the CPU between
    /// polls): a flush a worker finishes within microseconds then costs no
    /// sleep and wake-up of this thread, which on a virtual machine takes
    /// tens of microseconds.
    pub(crate) fn wait_blocking(&self, deadline: Instant, done: impl Fn() -> bool) -> bool {
        let spin_until = Instant::now() + SPIN;
        loop {
            if done() {
                return true;
            }
            if Instant::now() >= spin_until.min(deadline) {
                break;
            }
            std::thread::yield_now();
        }
        let mut g = lock(&self.sleepers);
        *g += 1;
        let outcome = loop {
            if done() {
                break true;
            }
            let now = Instant::now();
            if now >= deadline {
                break false;
            }
            // Re-check at least every 50 ms: cheap, and robust against a
            // change made without `wake_all`.
            let step = (deadline - now).min(Duration::from_millis(50));
            g = self
                .cv
                .wait_timeout(g, step)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        };
        *g -= 1;
        outcome
    }

    /// Waits without blocking the thread until `done()` or `timeout`
    /// completes; returns the last `done()`.
    pub(crate) async fn wait<S: Future<Output = ()>>(
        &self,
        timeout: S,
        done: impl Fn() -> bool,
    ) -> bool {
        let mut timeout = pin!(timeout);
        loop {
            let notified = self.notify.notified();
            let mut notified = pin!(notified);
            notified.as_mut().enable();
            if done() {
                return true;
            }
            let timed_out = std::future::poll_fn(|cx| {
                if notified.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(false);
                }
                if timeout.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(true);
                }
                Poll::Pending
            })
            .await;
            if timed_out {
                return done();
            }
        }
    }
}

/// A storage error kept for `flush` (errors are not `Clone`: the parts are kept).
#[derive(Debug, Clone)]
struct KeptError {
    serial: u64,
    location: String,
    message: String,
}

/// Flush epochs, worker progress and recent storage errors.
#[derive(Debug)]
pub(crate) struct FlushState {
    requested: AtomicU64,
    completed: Box<[AtomicU64]>,
    errors: Mutex<VecDeque<KeptError>>,
    error_serial: AtomicU64,
    pub(crate) signal: Signal,
}

impl FlushState {
    pub(crate) fn new(workers: usize) -> FlushState {
        FlushState {
            requested: AtomicU64::new(0),
            completed: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            errors: Mutex::new(VecDeque::new()),
            error_serial: AtomicU64::new(0),
            signal: Signal::default(),
        }
    }

    /// The current epoch (what a worker pass starting now covers).
    pub(crate) fn epoch(&self) -> u64 {
        self.requested.load(Ordering::Acquire)
    }

    /// Starts a flush: its target epoch.
    pub(crate) fn request(&self) -> u64 {
        self.requested.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Whether every worker completed `target`.
    pub(crate) fn reached(&self, target: u64) -> bool {
        self.completed
            .iter()
            .all(|c| c.load(Ordering::Acquire) >= target)
    }

    /// Everything of `worker` queued before `upto` is written: it finished
    /// a pass, or it is idle (`WorkerQueue::flush` counts it done without
    /// waking it).
    pub(crate) fn complete(&self, worker: usize, upto: u64) {
        // `fetch_max`: an idle worker may have been counted as done with a
        // later epoch than its own last pass reported.
        self.completed[worker].fetch_max(upto, Ordering::AcqRel);
        self.signal.wake_all();
    }

    /// Marks a worker that exited as having completed everything.
    pub(crate) fn retire(&self, worker: usize) {
        self.complete(worker, u64::MAX);
    }

    /// Keeps a storage error for `flush` to report.
    pub(crate) fn record_error(&self, e: &Error) {
        let (location, message) = match e {
            Error::Storage {
                location, message, ..
            }
            | Error::Corrupt { location, message } => (location.clone(), message.clone()),
            other => (String::from("storage"), other.to_string()),
        };
        let mut errors = lock(&self.errors);
        let serial = self.error_serial.fetch_add(1, Ordering::AcqRel) + 1;
        if errors.len() >= ERRORS_KEPT {
            errors.pop_front();
        }
        errors.push_back(KeptError {
            serial,
            location,
            message,
        });
    }

    /// The serial of the newest error so far (0: none yet).
    pub(crate) fn error_mark(&self) -> u64 {
        self.error_serial.load(Ordering::Acquire)
    }

    /// The first storage error recorded after `mark`, if any.
    pub(crate) fn error_since(&self, mark: u64) -> Option<Error> {
        let errors = lock(&self.errors);
        if self.error_serial.load(Ordering::Acquire) <= mark {
            return None;
        }
        // The oldest kept error after the mark (older ones may have been
        // pushed out of the window; then the oldest kept one stands in).
        let e = errors
            .iter()
            .find(|e| e.serial > mark)
            .or_else(|| errors.front())?;
        Some(Error::Storage {
            location: e.location.clone(),
            message: e.message.clone(),
            source: None,
        })
    }
}

/// The error of a flush that ran out of time.
pub(crate) fn timed_out(what: &str, after: Duration) -> Error {
    Error::Storage {
        location: String::from("flush"),
        message: format!(
            "{what}: the storage driver did not finish within {after:?} (drain_timeout)"
        ),
        source: None,
    }
}
