//! A lock for critical sections of a few dozen instructions (the registry's
//! hash-map probes).
//!
//! It is taken with one compare-and-swap and released with a plain store.
//! A `std::sync::Mutex` releases with a second atomic read-modify-write (it
//! must learn whether a thread sleeps on it), and on this project's simple
//! lifecycle the three registry operations' releases were ~2.5% of the
//! whole. A thread that finds the lock held spins a little while it looks
//! held (reads only), then yields its CPU between looks: the holder may have
//! been preempted inside its section, and nobody sleeps on this lock, so
//! nobody needs waking.
//!
//! Not for sections that can block or take long: a waiter burns its CPU.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};

use crate::loom::{AtomicBool, UnsafeCell};

/// Spins this many times before yielding between looks.
const SPINS: u32 = 64;

/// A value behind a spin lock.
pub(crate) struct SpinLock<T> {
    held: AtomicBool,
    value: UnsafeCell<T>,
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
        SpinGuard { lock: self }
    }

    #[cold]
    fn lock_contended(&self) {
        let mut spins = 0;
        loop {
            // Look without writing until it looks free (the line stays shared).
            while self.held.load(Relaxed) {
                if spins < SPINS {
                    spins += 1;
                    spin_hint();
                } else {
                    yield_cpu();
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

// Under loom every wait must let the model run the other threads.
#[cfg(tracepool_loom)]
fn spin_hint() {
    loom::thread::yield_now();
}

#[cfg(tracepool_loom)]
fn yield_cpu() {
    loom::thread::yield_now();
}

/// Access to a locked [`SpinLock`]'s value; dropping it unlocks.
pub(crate) struct SpinGuard<'a, T> {
    lock: &'a SpinLock<T>,
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
