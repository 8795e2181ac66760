//! The queue of callers waiting for a free slot (`Exhausted::Wait`), for
//! threads that block and for tasks that await alike.
//!
//! A waiter first enters the queue, then tries to take a free slot; a slot
//! that is freed concurrently either is taken by that try or finds the
//! waiter queued and wakes it (both sides fence before looking at the
//! other's side, so one of them always sees the other). Wake-ups go to the
//! oldest waiter. A woken waiter that finds no slot (another caller got it
//! first) queues again. A waiter that leaves after it was woken — it timed
//! out, its future was dropped, or it took a slot that was freed for
//! somebody else — passes the wake-up on to the next waiter, so a freed
//! slot is never left unclaimed while somebody waits.
//!
//! Loom models of the hand-off are at the end of this file.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::SeqCst;
use std::task::{Context, Poll};

use crate::loom::{Arc, AtomicBool, AtomicUsize, AtomicWaker, Mutex, fence};

/// Callers waiting for a free slot.
#[derive(Debug, Default)]
pub(crate) struct Waiters {
    queue: Mutex<VecDeque<Arc<Waiter>>>,
    /// Length of `queue`; changed under its lock, read without it.
    len: AtomicUsize,
}

/// One waiting caller.
#[derive(Debug, Default)]
struct Waiter {
    /// Set, under the queue lock, when a notifier took this waiter off the queue.
    notified: AtomicBool,
    waker: AtomicWaker,
}

/// A caller's place in the queue for the duration of one wait. Dropping it
/// leaves the queue (and passes on a wake-up it got).
#[derive(Debug)]
pub(crate) struct Place<'a> {
    waiters: &'a Waiters,
    me: Option<Arc<Waiter>>,
    /// `me` is in the queue or was taken off it by a notifier.
    entered: bool,
}

fn lock<T>(m: &Mutex<T>) -> crate::loom::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Waiters {
    /// A place for one wait.
    pub(crate) fn place(&self) -> Place<'_> {
        Place {
            waiters: self,
            me: None,
            entered: false,
        }
    }

    /// Whether anybody waits (a hint: it may change at once).
    pub(crate) fn is_waiting(&self) -> bool {
        self.len.load(SeqCst) > 0
    }

    /// Called after a slot was freed: wakes the oldest waiter, if any.
    pub(crate) fn notify_freed(&self) {
        // Pairs with the fence in `poll_take`: either that waiter's take sees
        // the freed slot, or this sees the waiter.
        fence(SeqCst);
        if self.len.load(SeqCst) > 0 {
            self.notify_one();
        }
    }

    fn notify_one(&self) {
        let w = {
            let mut q = lock(&self.queue);
            let w = q.pop_front();
            if let Some(w) = &w {
                self.len.fetch_sub(1, SeqCst);
                w.notified.store(true, SeqCst);
            }
            w
        };
        if let Some(w) = w {
            w.waker.wake();
        }
    }

    /// One attempt of a wait: queues the caller (once, or again after a
    /// wake-up), then tries `take`. `Pending` means the caller is queued and
    /// `cx`'s waker is woken when a slot is freed.
    pub(crate) fn poll_take<T>(
        &self,
        place: &mut Place<'_>,
        cx: &mut Context<'_>,
        take: &mut impl FnMut() -> Option<T>,
    ) -> Poll<T> {
        let me = place.me.get_or_insert_with(|| Arc::new(Waiter::default()));
        me.waker.register(cx.waker());
        if !place.entered || me.notified.swap(false, SeqCst) {
            let mut q = lock(&self.queue);
            q.push_back(me.clone());
            self.len.fetch_add(1, SeqCst);
            place.entered = true;
        }
        fence(SeqCst);
        match take() {
            Some(t) => {
                self.leave(place);
                Poll::Ready(t)
            }
            None => Poll::Pending,
        }
    }

    fn leave(&self, place: &mut Place<'_>) {
        let Some(me) = place.me.take() else { return };
        if !std::mem::take(&mut place.entered) {
            return;
        }
        {
            let mut q = lock(&self.queue);
            if let Some(i) = q.iter().position(|w| Arc::ptr_eq(w, &me)) {
                q.remove(i);
                self.len.fetch_sub(1, SeqCst);
                return;
            }
        }
        // A notifier took us off the queue: the wake-up may have been meant
        // for a slot this caller does not take, so pass it on.
        self.notify_one();
    }

    /// Blocks the calling thread until `take` succeeds or `deadline` passes.
    pub(crate) fn wait_take<T>(
        &self,
        deadline: std::time::Instant,
        mut take: impl FnMut() -> Option<T>,
    ) -> Option<T> {
        let waker =
            std::task::Waker::from(std::sync::Arc::new(ThreadWaker(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        let mut place = self.place();
        loop {
            if let Poll::Ready(t) = self.poll_take(&mut place, &mut cx, &mut take) {
                return Some(t);
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return None;
            }
            std::thread::park_timeout(deadline - now);
        }
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        let waiters = self.waiters;
        waiters.leave(self);
    }
}

/// Wakes a thread parked in [`Waiters::wait_take`].
struct ThreadWaker(std::thread::Thread);

impl std::task::Wake for ThreadWaker {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &std::sync::Arc<Self>) {
        self.0.unpark();
    }
}

#[cfg(all(test, not(tracepool_loom)))]
mod tests {
    use super::*;
    use std::sync::Mutex as StdMutex;
    use std::time::{Duration, Instant};

    #[test]
    fn a_blocked_thread_gets_a_slot_freed_later() {
        let w = std::sync::Arc::new(Waiters::default());
        let free = std::sync::Arc::new(StdMutex::new(Vec::<u32>::new()));
        let t = {
            let (w, free) = (w.clone(), free.clone());
            std::thread::spawn(move || {
                w.wait_take(Instant::now() + Duration::from_secs(10), || {
                    free.lock().unwrap().pop()
                })
            })
        };
        // Wait until the thread is queued, then free a slot.
        while w.len.load(SeqCst) == 0 {
            std::thread::yield_now();
        }
        free.lock().unwrap().push(7);
        w.notify_freed();
        assert_eq!(t.join().unwrap(), Some(7));
        assert_eq!(w.len.load(SeqCst), 0);
    }

    #[test]
    fn a_wait_times_out_and_leaves_the_queue() {
        let w = Waiters::default();
        let started = Instant::now();
        let got: Option<u32> = w.wait_take(started + Duration::from_millis(20), || None);
        assert_eq!(got, None);
        assert!(started.elapsed() >= Duration::from_millis(20));
        assert_eq!(w.len.load(SeqCst), 0);
        assert!(lock(&w.queue).is_empty());
    }
}

/// Loom models: run with
/// `RUSTFLAGS="--cfg tracepool_loom" CARGO_TARGET_DIR=target/loom cargo test --release --lib loom_model`.
#[cfg(all(test, tracepool_loom))]
mod loom_model {
    use super::*;
    use loom::sync::atomic::AtomicU32;
    use std::future::poll_fn;

    /// A one-slot "free list" for the model.
    fn take(free: &AtomicU32) -> Option<u32> {
        let v = free.swap(u32::MAX, SeqCst);
        (v != u32::MAX).then_some(v)
    }

    /// A waiter and a concurrent release: the waiter always gets the slot
    /// (a lost wake-up would leave `block_on` stuck, which loom reports).
    #[test]
    fn freed_slot_reaches_the_waiter() {
        loom::model(|| {
            let w = Arc::new(Waiters::default());
            let free = Arc::new(AtomicU32::new(u32::MAX));
            let releaser = {
                let (w, free) = (w.clone(), free.clone());
                loom::thread::spawn(move || {
                    free.store(3, SeqCst);
                    w.notify_freed();
                })
            };
            let got = loom::future::block_on(async {
                let mut place = w.place();
                poll_fn(|cx| w.poll_take(&mut place, cx, &mut || take(&free))).await
            });
            assert_eq!(got, 3);
            releaser.join().unwrap();
        });
    }

    /// Two waiters; the first gives up (its future is dropped) after one
    /// attempt, possibly after it was woken. The slot must still reach the
    /// second waiter.
    #[test]
    fn a_cancelled_waiter_passes_the_wake_up_on() {
        loom::model(|| {
            let w = Arc::new(Waiters::default());
            let free = Arc::new(AtomicU32::new(u32::MAX));
            let quitter = {
                let (w, free) = (w.clone(), free.clone());
                loom::thread::spawn(move || {
                    let waker = futures_util::task::noop_waker();
                    let mut cx = Context::from_waker(&waker);
                    let mut place = w.place();
                    match w.poll_take(&mut place, &mut cx, &mut || take(&free)) {
                        Poll::Ready(v) => {
                            // It got the slot: give it back, as a checkin would.
                            drop(place);
                            free.store(v, SeqCst);
                            w.notify_freed();
                        }
                        Poll::Pending => drop(place),
                    }
                })
            };
            let releaser = {
                let (w, free) = (w.clone(), free.clone());
                loom::thread::spawn(move || {
                    free.store(5, SeqCst);
                    w.notify_freed();
                })
            };
            let got = loom::future::block_on(async {
                let mut place = w.place();
                poll_fn(|cx| w.poll_take(&mut place, cx, &mut || take(&free))).await
            });
            assert_eq!(got, 5);
            quitter.join().unwrap();
            releaser.join().unwrap();
        });
    }
}
