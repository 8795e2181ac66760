//! The lock of each trace slot and of each registry shard: taken with one
//! compare-and-swap, released with a plain store.
//!
//! A `std::sync::Mutex` releases with a second atomic read-modify-write (it
//! must learn whether a thread sleeps on it). Every trace operation takes its
//! slot's lock once, so that second RMW was paid on every `add`, log line and
//! read; on the simple lifecycle the registry's three releases alone were
//! ~2.5% of the whole.
//!
//! Nobody sleeps on this lock, so its release wakes nobody. A thread that
//! finds it held waits in three tiers: it spins while it looks held (reads
//! only, the line stays shared), then yields its CPU between looks (the
//! holder may have been preempted inside its section), and once the lock has
//! stayed held for a while (a snapshot of a large trace, a batch encoded for
//! a slow subscriber) it naps between looks, so a long section does not cost
//! the waiters a whole CPU. A napping waiter notices the release at its next
//! look, at most one nap later.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};

use crate::loom::{AtomicBool, UnsafeCell};

/// Looks spent spinning before the waiter yields between looks.
const SPINS: u32 = 64;
/// Looks spent yielding (tens of µs) before the waiter naps between looks.
const YIELDS: u32 = 64;
/// How long a waiter naps between looks once the lock has stayed held
/// through its spins and yields.
const NAP: std::time::Duration = std::time::Duration::from_micros(50);

/// A value behind a spin lock.
pub(crate) struct SpinLock<T> {
    held: AtomicBool,
    value: UnsafeCell<T>,
}

impl<T> std::fmt::Debug for SpinLock<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpinLock")
            .field("held", &self.held.load(Relaxed))
            .finish_non_exhaustive()
    }
}

impl<T: Default> Default for SpinLock<T> {
    fn default() -> Self {
        SpinLock::new(T::default())
    }
}

// SAFETY: the value is reached only through a `SpinGuard`, and at most one
// guard exists at a time: `lock` returns one only after its compare-and-swap
// moved `held` from false to true, and only the guard's drop stores false.
// The Acquire of that swap and the Release of that store order every access
// to the value between successive holders, as a mutex does. `T: Send`:
// holders on different threads use the value in turn.
unsafe impl<T: Send> Sync for SpinLock<T> {}

impl<T> SpinLock<T> {
    pub(crate) fn new(value: T) -> SpinLock<T> {
        SpinLock {
            held: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    /// Takes the lock, waiting while another thread holds it.
    #[inline]
    pub(crate) fn lock(&self) -> SpinGuard<'_, T> {
        if self
            .held
            .compare_exchange_weak(false, true, Acquire, Relaxed)
            .is_err()
        {
            self.lock_contended();
        }
        SpinGuard {
            lock: self,
            _not_send: std::marker::PhantomData,
        }
    }

    #[cold]
    fn lock_contended(&self) {
        let mut looks = 0u32;
        loop {
            // Look without writing until it looks free (the line stays shared).
            while self.held.load(Relaxed) {
                looks = looks.saturating_add(1);
                if looks <= SPINS {
                    spin_hint();
                } else if looks <= SPINS + YIELDS {
                    yield_cpu();
                } else {
                    nap();
                }
            }
            if self
                .held
                .compare_exchange_weak(false, true, Acquire, Relaxed)
                .is_ok()
            {
                return;
            }
        }
    }
}

#[cfg(not(tracepool_loom))]
fn spin_hint() {
    std::hint::spin_loop();
}

#[cfg(not(tracepool_loom))]
fn yield_cpu() {
    std::thread::yield_now();
}

#[cfg(not(tracepool_loom))]
fn nap() {
    std::thread::sleep(NAP);
}

// Under loom every wait must let the model run the other threads.
#[cfg(tracepool_loom)]
fn spin_hint() {
    loom::thread::yield_now();
}

#[cfg(tracepool_loom)]
fn yield_cpu() {
    loom::thread::yield_now();
}

#[cfg(tracepool_loom)]
fn nap() {
    let _ = NAP;
    loom::thread::yield_now();
}

/// Access to a locked [`SpinLock`]'s value; dropping it unlocks.
///
/// Not `Send` (like `std`'s `MutexGuard`), so a future that must be `Send`
/// cannot hold it across an `.await`: a task suspended with the lock held
/// would keep every waiter waiting until it is polled again.
pub(crate) struct SpinGuard<'a, T> {
    lock: &'a SpinLock<T>,
    _not_send: std::marker::PhantomData<*const ()>,
}

impl<T> Deref for SpinGuard<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: this guard is the only one (see `SpinLock`'s `Sync`), and
        // the reference does not outlive the borrow of the guard.
        self.lock.value.with(|p| unsafe { &*p })
    }
}

impl<T> DerefMut for SpinGuard<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: this guard is the only one, borrowed mutably here.
        self.lock.value.with_mut(|p| unsafe { &mut *p })
    }
}

impl<T> Drop for SpinGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        self.lock.held.store(false, Release);
    }
}

#[cfg(all(test, not(tracepool_loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Two threads each add to a plain counter through the lock many times
    /// (most adds find it held): nothing is lost.
    #[test]
    fn no_update_is_lost_between_two_threads() {
        let lock = Arc::new(SpinLock::new(0u64));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let lock = lock.clone();
                std::thread::spawn(move || {
                    for _ in 0..200_000 {
                        let mut g = lock.lock();
                        // A read and a write apart: a second holder would
                        // lose updates.
                        let v = *g;
                        std::hint::black_box(&v);
                        *g = v + 1;
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*lock.lock(), 400_000);
    }

    /// CPU time this thread has run, from the kernel's scheduler statistics.
    #[cfg(target_os = "linux")]
    fn thread_cpu() -> std::time::Duration {
        let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
        let ns: u64 = s.split_whitespace().next().unwrap().parse().unwrap();
        std::time::Duration::from_nanos(ns)
    }

    /// A waiter on a lock held for 300 ms (its holder asleep inside) naps:
    /// it gets the lock after the release and spent a small part of the
    /// wait on a CPU. A waiter that only spun and yielded would run the
    /// whole time (nothing else asks for its CPU).
    #[cfg(target_os = "linux")]
    #[test]
    fn a_waiter_naps_through_a_long_section() {
        let lock = Arc::new(SpinLock::new(0u32));
        let held = lock.lock();
        let (started, waiting) = std::sync::mpsc::channel();
        let waiter = {
            let lock = lock.clone();
            std::thread::spawn(move || {
                let (cpu, wall) = (thread_cpu(), std::time::Instant::now());
                started.send(()).unwrap();
                *lock.lock() += 1;
                (thread_cpu() - cpu, wall.elapsed())
            })
        };
        // The hold starts once the waiter is about to wait: it waits 300 ms.
        waiting.recv().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        drop(held);
        let (cpu, wall) = waiter.join().unwrap();
        assert_eq!(*lock.lock(), 1);
        assert!(wall >= std::time::Duration::from_millis(300), "{wall:?}");
        assert!(cpu * 4 < wall, "the waiter ran {cpu:?} of {wall:?}");
    }
}

/// Loom model: run with
/// `RUSTFLAGS="--cfg tracepool_loom" CARGO_TARGET_DIR=target/loom cargo test --release --lib loom_model`.
#[cfg(all(test, tracepool_loom))]
mod loom_model {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    /// Two threads update the value under the lock: loom checks every
    /// interleaving (up to 3 preemptions: a spin loop makes the unbounded
    /// search infinite) for a lost update.
    #[test]
    fn holders_never_overlap() {
        let mut b = loom::model::Builder::new();
        if b.preemption_bound.is_none() {
            b.preemption_bound = Some(3);
        }
        b.check(|| {
            let lock = Arc::new(SpinLock::new(0u32));
            let other = {
                let lock = lock.clone();
                thread::spawn(move || {
                    let mut g = lock.lock();
                    let v = *g;
                    *g = v + 1;
                })
            };
            {
                let mut g = lock.lock();
                let v = *g;
                *g = v + 1;
            }
            other.join().unwrap();
            assert_eq!(*lock.lock(), 2);
        });
    }
}
