//! The millisecond wall clock that events are stamped with.
//!
//! Reading the system clock costs a few tens of nanoseconds, a large share
//! of what recording one event may cost. Instead, [`now_ms`] reads the
//! CPU's time-stamp counter and adds the elapsed time to an anchor taken
//! from the system clock. On Linux/x86_64 whose kernel keeps time with the
//! TSC, the counter is read directly and calibrated here; elsewhere
//! `quanta` reads it (or falls back to the OS monotonic clock where the
//! counter is not invariant). Engines'
//! ticker threads re-anchor it at least once a second ([`resync`]), so a
//! step of the system clock (NTP) is followed within a second, and between
//! steps the two agree to well under a millisecond. Per trace, timestamps
//! are made non-decreasing by the trace itself.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Where the counter comes from.
enum Source {
    /// The CPU's time-stamp counter, read directly: the Linux kernel itself
    /// keeps time with it here (its clocksource is `tsc`, so the counter is
    /// invariant and synchronised across cores). Converted with `mult`.
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    Tsc,
    /// `quanta` (its own TSC calibration, or the OS monotonic clock).
    Quanta(quanta::Clock),
}

struct WallClock {
    source: Source,
    /// Even when the anchor is consistent; odd while it is rewritten.
    version: AtomicU64,
    /// Counter reading at the anchor.
    raw: AtomicU64,
    /// System time at the anchor, ns since the epoch.
    wall_ns: AtomicI64,
    /// ns per counter tick, fixed point (32 fractional bits); `Tsc` only.
    mult: AtomicU64,
    /// The first calibration point `(ticks, monotonic ns)`; each re-anchor
    /// measures the tick rate over the whole time since (ever more exact).
    origin: (u64, std::time::Instant),
}

static CLOCK: OnceLock<WallClock> = OnceLock::new();

fn system_ns() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX),
    }
}

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
#[inline]
fn rdtsc() -> u64 {
    // SAFETY: `rdtsc` exists on every x86_64 CPU and has no preconditions.
    unsafe { std::arch::x86_64::_rdtsc() }
}

/// Whether the kernel keeps time with the TSC (then it is safe to read).
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn kernel_uses_tsc() -> bool {
    std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
        .is_ok_and(|s| s.trim() == "tsc")
}

impl WallClock {
    fn new() -> WallClock {
        #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
        if kernel_uses_tsc() {
            // Calibrate over ~5 ms; re-anchoring refines it.
            let (t0, m0) = (rdtsc(), std::time::Instant::now());
            while m0.elapsed() < std::time::Duration::from_millis(5) {
                std::hint::spin_loop();
            }
            let (t1, m1) = (rdtsc(), std::time::Instant::now());
            let mult = mult_of(t1.wrapping_sub(t0), (m1 - m0).as_nanos());
            return WallClock {
                source: Source::Tsc,
                version: AtomicU64::new(0),
                raw: AtomicU64::new(rdtsc()),
                wall_ns: AtomicI64::new(system_ns()),
                mult: AtomicU64::new(mult),
                origin: (t0, m0),
            };
        }
        let clock = quanta::Clock::new();
        let raw = clock.raw();
        WallClock {
            source: Source::Quanta(clock),
            version: AtomicU64::new(0),
            raw: AtomicU64::new(raw),
            wall_ns: AtomicI64::new(system_ns()),
            mult: AtomicU64::new(0),
            origin: (raw, std::time::Instant::now()),
        }
    }

    #[inline]
    fn raw(&self) -> u64 {
        match &self.source {
            #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
            Source::Tsc => rdtsc(),
            Source::Quanta(c) => c.raw(),
        }
    }

    /// ns between two readings (0 if `now` is not after `anchor`).
    #[inline]
    fn elapsed_ns(&self, anchor: u64, now: u64, mult: u64) -> u64 {
        match &self.source {
            #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
            Source::Tsc => {
                let d = now.saturating_sub(anchor);
                ((u128::from(d) * u128::from(mult)) >> 32) as u64
            }
            Source::Quanta(c) => c.delta_as_nanos(anchor, now),
        }
    }
}

/// ns per tick in 32.32 fixed point.
fn mult_of(ticks: u64, ns: u128) -> u64 {
    if ticks == 0 {
        return 1 << 32;
    }
    u64::try_from((ns << 32) / u128::from(ticks)).unwrap_or(u64::MAX)
}

fn clock() -> &'static WallClock {
    CLOCK.get_or_init(WallClock::new)
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
    let raw = c.raw();
    let wall = system_ns();
    // (quanta converts by itself.)
    if !matches!(c.source, Source::Quanta(_)) {
        let (t0, m0) = c.origin;
        let mult = mult_of(raw.wrapping_sub(t0), m0.elapsed().as_nanos());
        c.mult.store(mult, Ordering::Relaxed);
    }
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
        let mult = c.mult.load(Ordering::Relaxed);
        std::sync::atomic::fence(Ordering::Acquire);
        if v & 1 == 0 && c.version.load(Ordering::Relaxed) == v {
            let elapsed = c.elapsed_ns(raw, c.raw(), mult);
            let elapsed = i64::try_from(elapsed).unwrap_or(i64::MAX);
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
