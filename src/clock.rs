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
//!
//! Even the counter is slow to read on some CPUs (~9 ns per `rdtsc` on the
//! AMD EPYC this was measured on: a third of what recording a log line
//! costs). So while events are being recorded, the tickers also keep a
//! cached reading ([`Refresher`]), refreshed just after each millisecond
//! begins ([`REFRESH_MARGIN`]): a caller reads one atomic, and its stamp is
//! the current millisecond, or the one before for the first tens of
//! microseconds of each — at most a millisecond behind the wall clock as
//! long as the ticker wakes up less than a millisecond late. Once nobody read the clock for [`IDLE_AFTER`], the tickers stop
//! refreshing and readers read the counter again (an idle process is not
//! woken up every half millisecond); the first read after that makes the
//! next ticker wake-up start refreshing again.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

/// Milliseconds since the Unix epoch: the cached reading while a ticker
/// refreshes it, else the counter's.
#[inline(always)]
pub(crate) fn now_ms() -> i64 {
    match cache().read() {
        Some(ms) => ms,
        None => precise_ms(),
    }
}

/// Milliseconds since the Unix epoch, from the counter (out of line: the
/// cached reading is the common case, and its few instructions are inlined
/// where the clock is read).
#[inline(never)]
pub(crate) fn precise_ms() -> i64 {
    precise_ns().div_euclid(1_000_000)
}

/// Nanoseconds since the Unix epoch, from the counter.
#[inline]
fn precise_ns() -> i64 {
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
            return wall.saturating_add(elapsed);
        }
        std::hint::spin_loop();
    }
}

/// How long after a millisecond begins a refreshing ticker refreshes the
/// cached reading (once per millisecond): the reading is the current
/// millisecond except in this margin plus the wake-up's lateness, and a
/// millisecond behind then.
pub(crate) const REFRESH_MARGIN: Duration = Duration::from_micros(50);

/// How long nobody may read the clock before the tickers stop refreshing.
pub(crate) const IDLE_AFTER: Duration = Duration::from_millis(100);

/// [`IDLE_AFTER`] in refreshes (one per millisecond).
const IDLE_REFRESHES: u32 = IDLE_AFTER.as_millis() as u32;

/// The cached reading and what its refreshers need to know.
#[derive(Debug)]
pub(crate) struct Cache {
    /// Milliseconds since the epoch at the last refresh (an `i64` kept as
    /// its bits); 0 while nobody refreshes (readers read the counter).
    ms: CacheU64,
    /// Whether the clock was read since a refresher last looked. A reader
    /// writes it only when it is clear: once per refresh, not once per read.
    used: CacheBool,
    /// How many refreshers keep `ms` fresh.
    refreshers: CacheUsize,
}

// The cache's atomics: `loom`'s under the model checker (see the model at
// the end), `std`'s otherwise (their `const` constructors make the static).
#[cfg(tracepool_loom)]
use crate::loom::{AtomicBool as CacheBool, AtomicU64 as CacheU64, AtomicUsize as CacheUsize};
#[cfg(not(tracepool_loom))]
use std::sync::atomic::{
    AtomicBool as CacheBool, AtomicU64 as CacheU64, AtomicUsize as CacheUsize,
};

/// The process's cached reading (every engine's ticker may refresh it).
#[cfg(not(tracepool_loom))]
static CACHE: Cache = Cache::new();
#[cfg(tracepool_loom)]
static CACHE: std::sync::LazyLock<Cache> = std::sync::LazyLock::new(Cache::new);

/// [`CACHE`].
#[inline(always)]
fn cache() -> &'static Cache {
    &CACHE
}

impl Cache {
    #[cfg(not(tracepool_loom))]
    const fn new() -> Cache {
        Cache {
            ms: CacheU64::new(0),
            used: CacheBool::new(false),
            refreshers: CacheUsize::new(0),
        }
    }

    #[cfg(tracepool_loom)]
    fn new() -> Cache {
        Cache {
            ms: CacheU64::new(0),
            used: CacheBool::new(false),
            refreshers: CacheUsize::new(0),
        }
    }

    /// The cached reading, if a refresher keeps it; notes the use either way.
    #[inline(always)]
    fn read(&self) -> Option<i64> {
        if !self.used.load(Ordering::Relaxed) {
            self.used.store(true, Ordering::Relaxed);
        }
        let ms = self.ms.load(Ordering::Relaxed) as i64;
        (ms != 0).then_some(ms)
    }
}

/// Whether callers read the counter (no ticker refreshes the cached
/// reading): an engine starting a trace then asks its ticker to start.
#[inline]
pub(crate) fn is_uncached() -> bool {
    cache().ms.load(Ordering::Relaxed) == 0
}

/// One ticker's part in keeping the cached reading fresh. It refreshes while
/// the clock is read, stops after [`IDLE_AFTER`] without a read, and stops
/// when dropped; the reading is withdrawn when the last refresher stops.
#[derive(Debug)]
pub(crate) struct Refresher {
    cache: &'static Cache,
    refreshing: bool,
    /// Refreshes in a row that found the clock unread.
    unread: u32,
    /// From the last refresh to the next: to [`REFRESH_MARGIN`] into the
    /// next millisecond.
    next_in: Duration,
}

impl Refresher {
    /// A refresher of the process's cached reading (not yet refreshing).
    pub(crate) fn new() -> Refresher {
        Refresher::of(cache())
    }

    fn of(cache: &'static Cache) -> Refresher {
        Refresher {
            cache,
            refreshing: false,
            unread: 0,
            next_in: Duration::from_millis(1),
        }
    }

    /// Whether this refresher keeps the reading fresh: its ticker is to
    /// call [`refresh`](Refresher::refresh) again after
    /// [`next_in`](Refresher::next_in).
    pub(crate) fn is_refreshing(&self) -> bool {
        self.refreshing
    }

    /// When to refresh next, from the last refresh: [`REFRESH_MARGIN`]
    /// into the next millisecond.
    pub(crate) fn next_in(&self) -> Duration {
        self.next_in
    }

    /// Refreshes the cached reading if the clock was read lately (starting
    /// to refresh if it was not); stops refreshing once it was not read for
    /// [`IDLE_AFTER`]. Returns [`is_refreshing`](Refresher::is_refreshing).
    pub(crate) fn refresh(&mut self) -> bool {
        self.refresh_to(precise_ns)
    }

    /// Refreshes as if the clock had been read (after a [`stop`](Refresher::stop)
    /// around work that could make the reading stale).
    pub(crate) fn restart(&mut self) -> bool {
        self.cache.used.store(true, Ordering::Relaxed);
        self.refresh()
    }

    /// [`refresh`](Refresher::refresh) at `now` (ns since the epoch).
    fn refresh_to(&mut self, now: impl FnOnce() -> i64) -> bool {
        let read = self.cache.used.swap(false, Ordering::Relaxed);
        if read {
            self.unread = 0;
        } else {
            self.unread = self.unread.saturating_add(1);
        }
        if !self.refreshing {
            if !read {
                return false;
            }
            self.refreshing = true;
            self.cache.refreshers.fetch_add(1, Ordering::AcqRel);
        } else if self.unread >= IDLE_REFRESHES {
            self.stop();
            return false;
        }
        let ns = now();
        // Never 0 (that means "no reading"); the epoch itself is long past.
        let ms = ns.div_euclid(1_000_000).max(1);
        self.cache.ms.store(ms as u64, Ordering::Relaxed);
        let into_ms = u64::try_from(ns.rem_euclid(1_000_000)).unwrap_or(0);
        self.next_in = Duration::from_nanos(1_000_000 - into_ms) + REFRESH_MARGIN;
        true
    }

    /// Stops refreshing (before work that may keep the ticker from its next
    /// refresh, and at the end): readers read the counter again unless
    /// another refresher runs.
    pub(crate) fn stop(&mut self) {
        if !self.refreshing {
            return;
        }
        self.refreshing = false;
        self.unread = 0;
        if self.cache.refreshers.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.cache.ms.store(0, Ordering::Relaxed);
        }
    }
}

impl Drop for Refresher {
    fn drop(&mut self) {
        self.stop();
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

    fn private_cache() -> &'static Cache {
        Box::leak(Box::new(Cache::new()))
    }

    #[test]
    fn a_refresher_starts_on_a_read_and_stops_when_the_clock_is_left_unread() {
        const MS: i64 = 1_000_000;
        let cache = private_cache();
        let mut r = Refresher::of(cache);
        // Nobody read the clock: nothing to keep fresh.
        assert!(!r.refresh_to(|| 5 * MS));
        assert_eq!(cache.read(), None);
        // That read asked for it: the next refresh starts. The one after
        // is due the margin into the next millisecond.
        assert!(r.refresh_to(|| 7 * MS + 300_000));
        assert_eq!(cache.read(), Some(7));
        assert_eq!(r.next_in(), Duration::from_micros(700) + REFRESH_MARGIN);
        assert_eq!(cache.refreshers.load(Ordering::Relaxed), 1);
        // Read between refreshes: it keeps refreshing.
        for ms in 8..8 + 3 * i64::from(IDLE_REFRESHES) {
            assert!(r.refresh_to(|| ms * MS + 50_000));
            assert_eq!(cache.read(), Some(ms));
            assert_eq!(r.next_in(), Duration::from_micros(950) + REFRESH_MARGIN);
        }
        // Unread for IDLE_AFTER: it stops, and readers read the counter.
        // (The first of these refreshes still sees the loop's last read.)
        let mut refreshes = 0;
        while r.refresh_to(|| 1000 * MS) {
            refreshes += 1;
            assert!(refreshes <= IDLE_REFRESHES, "still refreshing");
        }
        assert_eq!(refreshes, IDLE_REFRESHES);
        assert_eq!(cache.ms.load(Ordering::Relaxed), 0);
        assert_eq!(cache.refreshers.load(Ordering::Relaxed), 0);
        // A reading of 0 (the epoch) would read as "none": stored as 1.
        assert_eq!(cache.read(), None);
        assert!(r.refresh_to(|| 0));
        assert_eq!(cache.read(), Some(1));
    }

    #[test]
    fn the_reading_is_withdrawn_when_the_last_refresher_stops() {
        let cache = private_cache();
        let mut a = Refresher::of(cache);
        let mut b = Refresher::of(cache);
        cache.read();
        assert!(a.refresh_to(|| 10_000_000));
        cache.read();
        assert!(b.refresh_to(|| 11_000_000));
        a.stop();
        assert!(!a.is_refreshing());
        assert_eq!(cache.read(), Some(11), "b still refreshes");
        drop(b);
        assert_eq!(cache.read(), None);
        // `restart` refreshes even when nobody read the clock meanwhile.
        cache.used.store(false, Ordering::Relaxed);
        let before = precise_ms();
        assert!(a.restart());
        let ms = cache.ms.load(Ordering::Relaxed) as i64;
        assert!(ms >= before && ms <= precise_ms(), "{before} {ms}");
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

/// Loom model: run with
/// `RUSTFLAGS="--cfg tracepool_loom" CARGO_TARGET_DIR=target/loom cargo test --release --lib loom_model`.
#[cfg(all(test, tracepool_loom))]
mod loom_model {
    use super::*;
    use loom::thread;

    /// Two tickers refresh and stop concurrently while a caller reads: the
    /// caller sees no reading or the one a refresher stored, and once both
    /// stopped the reading is withdrawn (no stale reading is left with
    /// nobody to refresh it) and nobody counts as refreshing.
    #[test]
    fn loom_model_no_stale_reading_once_every_refresher_stopped() {
        loom::model(|| {
            let cache: &'static Cache = Box::leak(Box::new(Cache::new()));
            cache.used.store(true, Ordering::Relaxed);
            let ticker = |ms: i64| {
                thread::spawn(move || {
                    let mut r = Refresher::of(cache);
                    // The clock was read once: the refresher that takes the
                    // read starts refreshing, the other does not (until a
                    // later read).
                    r.refresh_to(|| ms * 1_000_000);
                    r.stop();
                })
            };
            let (a, b) = (ticker(10), ticker(20));
            let seen = cache.read();
            assert!(seen.is_none_or(|ms| ms == 10 || ms == 20), "{seen:?}");
            a.join().unwrap();
            b.join().unwrap();
            assert_eq!(cache.refreshers.load(Ordering::Relaxed), 0);
            assert_eq!(cache.read(), None);
        });
    }
}
