//! The queue of callers waiting for a free slot (`Exhausted::Wait`), for
//! threads that block and for tasks that await alike.
//!
//! The queue announces itself through a *waiting* flag kept in the free
//! list's head word ([`WaitFlag`]): set, under the queue's lock, when the
//! queue stops being empty, cleared when it empties. A waiter first enters
//! the queue (setting the flag if it is the first), then tries to take a
//! slot; whether a caller is in the queue is only ever looked at under the
//! queue's lock. A checkin's push sees the flag in the same atomic step, so either the
//! push came first (and the waiter's take finds the slot) or the flag was
//! set first (and the pusher wakes the oldest waiter). A woken waiter that
//! finds no slot (another caller got it first) queues again. A waiter that
//! leaves after it was woken — it timed out, its future was dropped, or it
//! took a slot freed for somebody else — passes the wake-up on, so a freed
//! slot is never left unclaimed while somebody waits.
//!
//! Loom models of the hand-off are at the end of this file.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll};

use crate::loom::{Arc, AtomicBool, AtomicUsize, AtomicWaker, Mutex};

/// Where the queue says whether somebody waits (the free list's head).
pub(crate) trait WaitFlag {
    /// Sets or clears the flag.
    fn set_waiting(&self, on: bool);
}

impl WaitFlag for super::free_list::FreeList {
    fn set_waiting(&self, on: bool) {
        super::free_list::FreeList::set_waiting(self, on);
    }
}

/// Callers waiting for a free slot.
#[derive(Debug, Default)]
pub(crate) struct Waiters {
    queue: Mutex<VecDeque<Arc<Waiter>>>,
    /// Length of `queue` (a hint: changed under its lock, read without it).
    /// The hand-off itself relies on the free list's waiting flag and this
    /// lock, not on this counter.
    len: AtomicUsize,
}

/// One waiting caller.
#[derive(Debug, Default)]
struct Waiter {
    /// In the queue. Read and written only under the queue lock.
    queued: AtomicBool,
    waker: AtomicWaker,
}

/// A caller's place in the queue for the duration of one wait. Dropping it
/// leaves the queue (and passes on a wake-up it got).
pub(crate) struct Place<'a, F: WaitFlag> {
    waiters: &'a Waiters,
    flag: &'a F,
    me: Option<Arc<Waiter>>,
    /// `me` entered the queue (it is there, or a notifier took it off).
    entered: bool,
}

impl<F: WaitFlag> std::fmt::Debug for Place<'_, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Place")
            .field("entered", &self.entered)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> crate::loom::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Waiters {
    /// A place for one wait; `flag` is where the queue announces itself.
    pub(crate) fn place<'a, F: WaitFlag>(&'a self, flag: &'a F) -> Place<'a, F> {
        Place {
            waiters: self,
            flag,
            me: None,
            entered: false,
        }
    }

    /// How many callers wait (a hint: it may change at once).
    pub(crate) fn count(&self) -> usize {
        self.len.load(Relaxed)
    }

    /// Wakes the oldest waiter, if any (a checkin's push saw the flag).
    pub(crate) fn notify_one(&self, flag: &impl WaitFlag) {
        let w = {
            let mut q = lock(&self.queue);
            let w = q.pop_front();
            if let Some(w) = &w {
                self.len.fetch_sub(1, Relaxed);
                w.queued.store(false, Relaxed);
            }
            if q.is_empty() {
                flag.set_waiting(false);
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
    pub(crate) fn poll_take<T, F: WaitFlag>(
        &self,
        place: &mut Place<'_, F>,
        cx: &mut Context<'_>,
        take: &mut impl FnMut() -> Option<T>,
    ) -> Poll<T> {
        let me = place.me.get_or_insert_with(|| Arc::new(Waiter::default()));
        me.waker.register(cx.waker());
        {
            // (Re)enter the queue if not in it: first time, or a notifier took
            // this caller off it (and woke it).
            let mut q = lock(&self.queue);
            if !me.queued.load(Relaxed) {
                me.queued.store(true, Relaxed);
                q.push_back(me.clone());
                self.len.fetch_add(1, Relaxed);
                if q.len() == 1 {
                    place.flag.set_waiting(true);
                }
            }
            place.entered = true;
        }
        match take() {
            Some(t) => {
                self.leave(place);
                Poll::Ready(t)
            }
            None => Poll::Pending,
        }
    }

    fn leave<F: WaitFlag>(&self, place: &mut Place<'_, F>) {
        let Some(me) = place.me.take() else { return };
        if !std::mem::take(&mut place.entered) {
            return;
        }
        {
            let mut q = lock(&self.queue);
            if me.queued.load(Relaxed) {
                if let Some(i) = q.iter().position(|w| Arc::ptr_eq(w, &me)) {
                    q.remove(i);
                }
                me.queued.store(false, Relaxed);
                self.len.fetch_sub(1, Relaxed);
                if q.is_empty() {
                    place.flag.set_waiting(false);
                }
                return;
            }
        }
        // A notifier took us off the queue: the wake-up may have been meant
        // for a slot this caller does not take, so pass it on.
        self.notify_one(place.flag);
    }

    /// Blocks the calling thread until `take` succeeds or `deadline` passes.
    pub(crate) fn wait_take<T, F: WaitFlag>(
        &self,
        flag: &F,
        deadline: std::time::Instant,
        mut take: impl FnMut() -> Option<T>,
    ) -> Option<T> {
        let waker =
            std::task::Waker::from(std::sync::Arc::new(ThreadWaker(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        let mut place = self.place(flag);
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

impl<F: WaitFlag> Drop for Place<'_, F> {
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
    use std::sync::atomic::Ordering::SeqCst;
    use std::time::{Duration, Instant};

    /// A flag for tests: counts how often it was set and cleared.
    #[derive(Debug, Default)]
    struct Flag(std::sync::atomic::AtomicBool);

    impl WaitFlag for Flag {
        fn set_waiting(&self, on: bool) {
            self.0.store(on, SeqCst);
        }
    }

    #[test]
    fn a_blocked_thread_gets_a_slot_freed_later() {
        let w = std::sync::Arc::new(Waiters::default());
        let flag = std::sync::Arc::new(Flag::default());
        let free = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u32>::new()));
        let t = {
            let (w, flag, free) = (w.clone(), flag.clone(), free.clone());
            std::thread::spawn(move || {
                w.wait_take(&*flag, Instant::now() + Duration::from_secs(10), || {
                    free.lock().unwrap().pop()
                })
            })
        };
        // Wait until the thread announced itself, then free a slot.
        while !flag.0.load(SeqCst) {
            std::thread::yield_now();
        }
        free.lock().unwrap().push(7);
        w.notify_one(&*flag);
        assert_eq!(t.join().unwrap(), Some(7));
        assert_eq!(w.count(), 0);
        assert!(!flag.0.load(SeqCst), "the flag is cleared with the queue");
    }

    #[test]
    fn a_wait_times_out_and_leaves_the_queue() {
        let w = Waiters::default();
        let flag = Flag::default();
        let started = Instant::now();
        let got: Option<u32> = w.wait_take(&flag, started + Duration::from_millis(20), || None);
        assert_eq!(got, None);
        assert!(started.elapsed() >= Duration::from_millis(20));
        assert_eq!(w.count(), 0);
        assert!(lock(&w.queue).is_empty());
        assert!(!flag.0.load(SeqCst));
    }
}

/// Loom models: run with
/// `RUSTFLAGS="--cfg tracepool_loom" CARGO_TARGET_DIR=target/loom cargo test --release --lib loom_model`.
#[cfg(all(test, tracepool_loom))]
mod loom_model {
    use super::super::free_list::{FreeList, NIL};
    use super::*;
    use crate::loom::AtomicU32;
    use std::future::poll_fn;

    /// The pool's free list over `n` slots, all taken.
    fn pool(n: u32) -> (Arc<FreeList>, Arc<Vec<AtomicU32>>) {
        (
            Arc::new(FreeList::new()),
            Arc::new((0..n).map(|_| AtomicU32::new(NIL)).collect()),
        )
    }

    /// Runs a model with a bound on preemptions (3, as tokio's models do):
    /// the three-thread models are otherwise too large to finish in CI.
    fn model(f: impl Fn() + Sync + Send + 'static) {
        let mut b = loom::model::Builder::new();
        b.preemption_bound = Some(3);
        b.check(f);
    }

    /// A checkin: push the slot, wake a waiter if the push saw the flag.
    fn checkin(w: &Waiters, free: &FreeList, links: &Vec<AtomicU32>, idx: u32) {
        if free.push(links, idx) {
            w.notify_one(free);
        }
    }

    /// A waiter and a concurrent checkin: the waiter always gets the slot
    /// (a lost wake-up would leave `block_on` stuck, which loom reports).
    #[test]
    fn freed_slot_reaches_the_waiter() {
        model(|| {
            let w = Arc::new(Waiters::default());
            let (free, links) = pool(1);
            let releaser = {
                let (w, free, links) = (w.clone(), free.clone(), links.clone());
                loom::thread::spawn(move || checkin(&w, &free, &links, 0))
            };
            let got = loom::future::block_on(async {
                let mut place = w.place(&*free);
                poll_fn(|cx| w.poll_take(&mut place, cx, &mut || free.pop(&*links))).await
            });
            assert_eq!(got, 0);
            releaser.join().unwrap();
        });
    }

    /// Two waiters; the first gives up (its future is dropped) after one
    /// attempt, possibly after it was woken, or gives back a slot it got. The
    /// slot must still reach the second waiter.
    #[test]
    fn a_cancelled_waiter_passes_the_wake_up_on() {
        model(|| {
            let w = Arc::new(Waiters::default());
            let (free, links) = pool(1);
            let quitter = {
                let (w, free, links) = (w.clone(), free.clone(), links.clone());
                loom::thread::spawn(move || {
                    let waker = futures_util::task::noop_waker();
                    let mut cx = Context::from_waker(&waker);
                    let mut place = w.place(&*free);
                    match w.poll_take(&mut place, &mut cx, &mut || free.pop(&*links)) {
                        Poll::Ready(v) => {
                            drop(place);
                            checkin(&w, &free, &links, v);
                        }
                        Poll::Pending => drop(place),
                    }
                })
            };
            let releaser = {
                let (w, free, links) = (w.clone(), free.clone(), links.clone());
                loom::thread::spawn(move || checkin(&w, &free, &links, 0))
            };
            let got = loom::future::block_on(async {
                let mut place = w.place(&*free);
                poll_fn(|cx| w.poll_take(&mut place, cx, &mut || free.pop(&*links))).await
            });
            assert_eq!(got, 0);
            quitter.join().unwrap();
            releaser.join().unwrap();
        });
    }
}
