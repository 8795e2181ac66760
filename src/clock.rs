//! The millisecond wall clock that events are stamped with.
//!
//! Reading the system clock costs a few tens of nanoseconds, a large share
//! of what recording one event may cost. Instead, [`now_ms`] reads the
//! CPU's time-stamp counter (calibrated once by `quanta`, which falls back
//! to the OS monotonic clock where the counter is not invariant) and adds
//! the elapsed time to an anchor taken from the system clock. Engines'
//! ticker threads re-anchor it at least once a second ([`resync`]), so a
//! step of the system clock (NTP) is followed within a second, and between
//! steps the two agree to well under a millisecond. Per trace, timestamps
//! are made non-decreasing by the trace itself.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

struct WallClock {
    clock: quanta::Clock,
    /// Even when `raw`/`wall_ns` are consistent; odd while they are rewritten.
    version: AtomicU64,
    /// Counter reading at the anchor.
    raw: AtomicU64,
    /// System time at the anchor, ns since the epoch.
    wall_ns: AtomicI64,
}

static CLOCK: OnceLock<WallClock> = OnceLock::new();

fn system_ns() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX),
    }
}

fn clock() -> &'static WallClock {
    CLOCK.get_or_init(|| {
        let clock = quanta::Clock::new();
        let raw = clock.raw();
        WallClock {
            clock,
            version: AtomicU64::new(0),
            raw: AtomicU64::new(raw),
            wall_ns: AtomicI64::new(system_ns()),
        }
    })
}

/// Calibrates the clock (once per process; engines call it when built, so
/// that no caller pays for it).
pub(crate) fn init() {
    clock();
}

/// Re-anchors the clock to the system clock (ticker threads call this).
pub(crate) fn resync() {
    let c = clock();
    // Only one re-anchor at a time: take the version from even to odd.
    let v = c.version.load(Ordering::Relaxed);
    if v & 1 == 1
        || c.version
            .compare_exchange(v, v + 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
    {
        return;
    }
    std::sync::atomic::fence(Ordering::Release);
    let raw = c.clock.raw();
    let wall = system_ns();
    c.raw.store(raw, Ordering::Relaxed);
    c.wall_ns.store(wall, Ordering::Relaxed);
    c.version.store(v + 2, Ordering::Release);
}

/// Milliseconds since the Unix epoch.
#[inline]
pub(crate) fn now_ms() -> i64 {
    let c = clock();
    loop {
        let v = c.version.load(Ordering::Acquire);
        let raw = c.raw.load(Ordering::Relaxed);
        let wall = c.wall_ns.load(Ordering::Relaxed);
        std::sync::atomic::fence(Ordering::Acquire);
        if v & 1 == 0 && c.version.load(Ordering::Relaxed) == v {
            let now = c.clock.raw();
            let elapsed = i64::try_from(c.clock.delta_as_nanos(raw, now)).unwrap_or(i64::MAX);
            return wall.saturating_add(elapsed).div_euclid(1_000_000);
        }
        std::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agrees_with_the_system_clock() {
        init();
        for _ in 0..5 {
            let before = system_ns().div_euclid(1_000_000);
            let ours = now_ms();
            let after = system_ns().div_euclid(1_000_000);
            // Within a millisecond of the system clock, either way.
            assert!(
                ours >= before - 1 && ours <= after + 1,
                "{before} {ours} {after}"
            );
            std::thread::sleep(std::time::Duration::from_millis(3));
            resync();
        }
    }

    #[test]
    fn is_non_decreasing_on_one_thread() {
        let mut last = now_ms();
        for i in 0..100_000 {
            if i % 10_000 == 0 {
                resync();
            }
            let t = now_ms();
            // A re-anchor may move the clock back by the counter's drift
            // from the system clock (microseconds), never by a millisecond.
            assert!(t >= last - 1, "{last} -> {t}");
            last = last.max(t);
        }
    }
}
