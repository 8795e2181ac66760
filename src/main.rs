//! The `tracepool` command line.
//!
//! * `tracepool` (or `tracepool run`): the main job — the reference's five
//!   benchmark scenarios over many traces, each with a live subscriber that
//!   checks it saw every event in order; prints progress and a summary.
//! * `tracepool serve`: the HTTP live view (feature `http`).
//!
//! `tracepool --help`, `tracepool run --help` and `tracepool serve --help`
//! describe the flags. Exit status: 0 success, 1 a failed check or a runtime
//! failure (storage, listening), 2 a usage error, 130 interrupted.
//!
//! Nothing here panics on bad input or a failing disk: flags are checked
//! before anything is allocated, every error of the engine is counted and
//! reported in the summary, and a closed stdout or stderr only silences the
//! output.

use std::cell::Cell;
use std::fmt;
use std::io::Write as _;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::{Duration, Instant};

use tracepool::{
    Cursor, Delivery, Driver, Durability, Engine, EventKind, LocalDriver, MemoryDriver,
    StoreDriver, StoredTrace, Subscription, TraceInfo, TraceOptions, TraceStatus, WriteBatch,
};

#[path = "../benches/support/scenarios.rs"]
#[allow(unreachable_pub)]
mod scenarios;

use scenarios::{Lvl, Scenario, ScenarioEngine, ThreadPool};

// ---- output -------------------------------------------------------------------

/// Set once a write to stdout failed (a closed pipe: `tracepool | head -1`):
/// later output is dropped instead of panicking like `println!` does.
static STDOUT_GONE: AtomicBool = AtomicBool::new(false);
/// The same for stderr.
static STDERR_GONE: AtomicBool = AtomicBool::new(false);

/// One line on stdout; a closed stdout silences the rest of the output.
macro_rules! out {
    ($($arg:tt)*) => { write_line(false, format_args!($($arg)*)) };
}

/// One line on stderr; a closed stderr silences the rest of it.
macro_rules! err {
    ($($arg:tt)*) => { write_line(true, format_args!($($arg)*)) };
}

fn write_line(to_stderr: bool, args: fmt::Arguments<'_>) {
    let gone = if to_stderr {
        &STDERR_GONE
    } else {
        &STDOUT_GONE
    };
    if gone.load(Ordering::Relaxed) {
        return;
    }
    let written = if to_stderr {
        let mut e = std::io::stderr().lock();
        e.write_fmt(args).and_then(|()| e.write_all(b"\n"))
    } else {
        let mut o = std::io::stdout().lock();
        o.write_fmt(args)
            .and_then(|()| o.write_all(b"\n"))
            .and_then(|()| o.flush())
    };
    if written.is_err() {
        gone.store(true, Ordering::Relaxed);
    }
}

// ---- usage --------------------------------------------------------------------

/// How long the main job retries a released trace's last batch on a failing disk.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Where the default driver (the embedded store) keeps traces unless
/// `--dir` says otherwise.
const DEFAULT_DIR: &str = tracepool::DEFAULT_STORE;
/// Largest `--capacity` (slots are preallocated at start).
const MAX_CAPACITY: u64 = 4_194_304;
/// Memory preallocated per slot, rounded up (measured: about 740 bytes per
/// slot, registry included, for an engine of a million slots).
const SLOT_BYTES: u64 = 1024;
/// Largest `--workers`.
const MAX_WORKERS: u64 = 256;
/// `--duration` when `--rate` is given without it, in seconds.
const DEFAULT_DURATION: u64 = 30;
/// Largest `--duration`, in seconds (a year).
const MAX_DURATION: u64 = 365 * 24 * 3600;
/// A rate run's shortest warm-up: its memory (RSS) growth is measured from
/// the RSS at the end of the warm-up — the first half of the run, at least
/// this long — to the peak. Caches, a store's memtables and its first
/// compactions fill during the first seconds; bounded memory means no
/// growth after that.
const WARM_UP: Duration = Duration::from_secs(1);
/// RSS growth below this many bytes passes whatever its share: a process of
/// a few megabytes grows by more than 10% through allocator noise alone.
const RSS_SLACK: u64 = 8 << 20;
/// A rate run is sustained when it achieves at least this share of the
/// offered rate (and drops nothing, and its RSS grows less than
/// [`MAX_RSS_GROWTH_PCT`]).
const MIN_ACHIEVED: f64 = 0.99;
/// Largest RSS growth after warm-up, in %, of a sustained rate run.
const MAX_RSS_GROWTH_PCT: f64 = 10.0;
/// Metadata key and value that mark the traces the main job keeps.
const KEPT_BY: (&str, &str) = ("kept_by", "tracepool run");
/// Exit status of an interrupted run (128 + SIGINT).
const INTERRUPTED: u8 = 130;

fn usage() -> String {
    format!(
        "\
tracepool {version}: pooled execution traces. This command runs the main job or the live view.

usage: tracepool [run] [OPTIONS]    the main job (the default command)
       tracepool serve [OPTIONS]    the HTTP live view and web viewer
       tracepool run --help         the main job's options
       tracepool serve --help       the live view's options
       tracepool --version

Exit status: 0 success, 1 a failed check or a runtime failure, 2 a usage error,
130 interrupted.",
        version = env!("CARGO_PKG_VERSION")
    )
}

fn driver_usage() -> String {
    format!(
        "\
Storage (at most one driver flag; default: the embedded store in {DEFAULT_DIR}):
  --memory          in-memory driver: nothing is written
  --local DIR       local-disk driver under DIR: the Yao engine's directory layout
  --store PATH      embedded key-value store driver in the directory PATH (the
                    default driver: the fastest one that needs no server)
  --redis URL       Redis driver on the server at URL (redis://HOST:PORT/DB; a cluster
                    is detected): every engine on that server shares its traces
  --dir DIR         where the default driver keeps its traces (instead of {DEFAULT_DIR});
                    not combined with a driver flag"
    )
}

fn run_usage() -> String {
    format!(
        "\
usage: tracepool [run] [--traces N | --rate N [--duration S]] [--concurrency N]
                       [--capacity N] [--workers N] [--keep-every N]
                       [--memory | --local DIR | --store PATH | --redis URL | --dir DIR]

The main job: the reference's five benchmark scenarios (sequential, parallel,
space, logging, complex) in turn over N traces, each followed by a live
subscriber that checks it sees every event of its trace, in order. Progress
goes to stderr once a second, the summary to stdout.

Like the reference's benchmark, each trace is removed after release, except
every Nth (--keep-every), which stays in storage with the metadata
{key} = \"{value}\". A run first reopens the newest whole trace an earlier run
kept and checks it; traces it did not keep, and partial or running ones, are
reported and skipped.

Ctrl-C starts no new trace, cancels the running ones, flushes storage, prints
the summary and exits with status 130 (a second Ctrl-C exits at once).

  --traces N        traces to run, each thread starting its next trace as soon
                    as its last one is done (closed loop; default 20000)
  --rate N          open loop instead of --traces: offer N traces a second for
                    --duration seconds, N x S traces in all. Trace k is due at
                    k/N s: the next free thread starts it then, whether or not
                    earlier traces have finished. A trace is never started
                    before it is due; one that is late (every thread busy)
                    starts as soon as a thread is free, and none is started
                    after --duration. The summary adds the achieved rate
                    (traces completed / S), how late the schedule ran (max and
                    at the end), events dropped, persist errors, memory (RSS at
                    start, halfway through, at the end, peak) and a verdict:
                    \"sustained: yes\" when the achieved rate is at least {min_pct}% of
                    N, no event was dropped, no write failed (persist errors),
                    RSS grew less than {max_growth}% (or less than {slack} MiB) from
                    halfway through the run to the peak (the first half
                    is warm-up: caches and buffers fill) and every check passed. The last line of stdout is then
                    \"rate_result offered=N achieved=.. ... sustained=yes|no\".
                    The verdict does not change the exit status
  --duration S      seconds to offer --rate for (default {default_duration}, at most
                    {max_duration}); only with --rate
  --concurrency N   threads running traces (default: one per core); lowered,
                    with a note, to --traces (with --rate: N x S) and to --capacity
  --capacity N      trace slots, preallocated at start (default 1024; at most
                    {MAX_CAPACITY}, and at most half the memory). When every
                    slot is still being written to storage, a thread waits
                    for one (up to 5 s) instead of failing
  --workers N       the engine's worker tasks (default: one per core; at most {MAX_WORKERS})
  --keep-every N    keep every Nth trace in storage (default 1000)
{drivers}

Exit status: 0 every check passed, 1 a check failed or storage failed, 2 a
usage error, 130 interrupted.",
        key = KEPT_BY.0,
        value = KEPT_BY.1,
        slack = RSS_SLACK >> 20,
        min_pct = MIN_ACHIEVED * 100.0,
        max_growth = MAX_RSS_GROWTH_PCT,
        default_duration = DEFAULT_DURATION,
        max_duration = MAX_DURATION,
        drivers = driver_usage()
    )
}

fn serve_usage() -> String {
    format!(
        "\
usage: tracepool serve [--addr HOST:PORT] [--demo]
                       [--memory | --local DIR | --store PATH | --redis URL | --dir DIR]

The HTTP live view until Ctrl-C: JSON endpoints, a server-sent event stream
per trace and the web viewer, over the traces of the chosen storage (by
default the main job's: the embedded store in {DEFAULT_DIR}). With
--redis it also streams the traces that other engines on the same Redis
server are writing.

  --addr HOST:PORT  where to listen (default 127.0.0.1:7070); a host name is
                    resolved (IPv4 first), port 0 picks a free port
  --demo            keep generating demo traces to watch. They live in an
                    in-memory driver of their own, apart from any stored
                    trace: nothing is written and nothing is left on exit,
                    so --demo takes no storage flag
{drivers}

Exit status: 0 stopped by Ctrl-C, 1 cannot listen or a storage failure, 2 a
usage error.",
        drivers = driver_usage()
    )
}

// ---- errors and exit status ---------------------------------------------------

/// Why the command stopped early.
#[derive(Debug)]
enum Failure {
    /// Bad arguments: exit status 2.
    Usage(String),
    /// The environment failed (storage, listening, threads): exit status 1.
    Runtime(String),
}

fn usage_err<T>(msg: impl Into<String>) -> Result<T, Failure> {
    Err(Failure::Usage(msg.into()))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match parse(&args) {
        Ok(Command::Text(text)) => {
            out!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Ok(Command::Run(o)) => run(o),
        Ok(Command::Serve(o)) => serve(o),
        Err(e) => Err(e),
    };
    match result {
        Ok(code) => code,
        Err(Failure::Usage(msg)) => {
            err!("tracepool: {msg}\n(see `tracepool --help`)");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(msg)) => {
            err!("tracepool: {msg}");
            ExitCode::FAILURE
        }
    }
}

// ---- flags ----------------------------------------------------------------------

enum Command {
    /// Help or version text to print.
    Text(String),
    Run(RunOptions),
    Serve(ServeOptions),
}

fn parse(args: &[String]) -> Result<Command, Failure> {
    let wants_help = |rest: &[String]| rest.iter().any(|a| a == "--help" || a == "-h");
    match args.first().map(String::as_str) {
        Some("--version" | "-V") => Ok(Command::Text(format!(
            "tracepool {}",
            env!("CARGO_PKG_VERSION")
        ))),
        Some("--help" | "-h") => Ok(Command::Text(usage())),
        Some("help") => match args.get(1).map(String::as_str) {
            None => Ok(Command::Text(usage())),
            Some("run") => Ok(Command::Text(run_usage())),
            Some("serve") => Ok(Command::Text(serve_usage())),
            Some(other) => usage_err(format!("help: unknown command {other:?}")),
        },
        Some("serve") if wants_help(&args[1..]) => Ok(Command::Text(serve_usage())),
        Some("serve") => ServeOptions::parse(&args[1..]).map(Command::Serve),
        Some("run") if wants_help(&args[1..]) => Ok(Command::Text(run_usage())),
        Some("run") => RunOptions::parse(&args[1..]).map(Command::Run),
        _ if wants_help(args) => Ok(Command::Text(run_usage())),
        _ => RunOptions::parse(args).map(Command::Run),
    }
}

/// The value after `args[*i]`, moving `i` onto it.
fn value_of<'a>(args: &'a [String], i: &mut usize, flag: &str) -> Result<&'a str, Failure> {
    *i += 1;
    match args.get(*i) {
        Some(v) => Ok(v),
        None => usage_err(format!("{flag} needs a value")),
    }
}

/// A whole number that fits in a u64 (`_` separators allowed), at least 1.
fn number(flag: &str, s: &str) -> Result<u64, Failure> {
    let n = s
        .replace('_', "")
        .parse::<u64>()
        .map_err(|_| Failure::Usage(format!("{flag}: expected a whole number, got {s:?}")))?;
    if n == 0 {
        return usage_err(format!("{flag} must be at least 1"));
    }
    Ok(n)
}

/// `n` as a usize (every u64 on 64-bit targets).
fn size(flag: &str, n: u64) -> Result<usize, Failure> {
    usize::try_from(n).map_err(|_| Failure::Usage(format!("{flag} {n} is too large here")))
}

/// Where traces go: the storage driver and its location.
#[derive(Debug, Clone, PartialEq, Eq)]
enum DriverSpec {
    Memory,
    Local(PathBuf),
    Store(PathBuf),
    Redis(String),
}

impl DriverSpec {
    /// The default driver of `run` and `serve`: chosen here and only here.
    fn default_at(dir: Option<PathBuf>) -> DriverSpec {
        DriverSpec::Store(dir.unwrap_or_else(|| PathBuf::from(DEFAULT_DIR)))
    }

    /// For the header line: the driver and where it keeps traces.
    fn describe(&self) -> String {
        match self {
            DriverSpec::Memory => "memory".into(),
            DriverSpec::Local(p) => format!("local ({})", p.display()),
            DriverSpec::Store(p) => format!("store ({})", p.display()),
            DriverSpec::Redis(url) => format!("redis ({})", redact(url)),
        }
    }

    /// Opens the driver.
    fn open(&self) -> Result<Box<dyn Driver>, Failure> {
        let opened: tracepool::Result<Box<dyn Driver>> = match self {
            DriverSpec::Memory => Ok(Box::new(MemoryDriver::new())),
            DriverSpec::Local(p) => {
                LocalDriver::new(p, Durability::default()).map(|d| Box::new(d) as _)
            }
            DriverSpec::Store(p) => {
                StoreDriver::open(p, Durability::default()).map(|d| Box::new(d) as _)
            }
            #[cfg(feature = "redis")]
            DriverSpec::Redis(url) => {
                tracepool::RedisDriver::connect(url, tracepool::RedisOptions::default())
                    .map(|d| Box::new(d) as _)
            }
            #[cfg(not(feature = "redis"))]
            DriverSpec::Redis(_) => Err(tracepool::Error::Config(
                "this build has no Redis driver (build with the `redis` feature)".into(),
            )),
        };
        opened
            .map_err(|e| Failure::Runtime(format!("cannot open storage {}: {e}", self.describe())))
    }
}

/// The storage flags shared by `run` and `serve`.
#[derive(Debug, Default)]
struct DriverFlags {
    /// An explicit driver flag and what it chose.
    chosen: Option<(&'static str, DriverSpec)>,
    /// `--dir`: the default driver's location.
    dir: Option<PathBuf>,
}

impl DriverFlags {
    /// Takes the storage flag at `args[*i]`; `Ok(false)` when it is none.
    fn take(&mut self, args: &[String], i: &mut usize) -> Result<bool, Failure> {
        let flag: &'static str = match args[*i].as_str() {
            "--memory" => "--memory",
            "--local" => "--local",
            "--store" => "--store",
            "--redis" => "--redis",
            "--dir" => "--dir",
            _ => return Ok(false),
        };
        let path = |i: &mut usize| -> Result<PathBuf, Failure> {
            let v = value_of(args, i, flag)?;
            if v.is_empty() {
                return usage_err(format!("{flag}: the path is empty"));
            }
            Ok(PathBuf::from(v))
        };
        let spec = match flag {
            "--dir" => {
                if self.dir.is_some() {
                    return usage_err("--dir is given twice");
                }
                self.dir = Some(path(i)?);
                return self.check();
            }
            "--memory" => DriverSpec::Memory,
            "--local" => DriverSpec::Local(path(i)?),
            "--store" => DriverSpec::Store(path(i)?),
            _ => {
                let url = value_of(args, i, flag)?;
                if !["redis://", "redis+unix://", "unix://"]
                    .iter()
                    .any(|s| url.starts_with(s))
                {
                    return usage_err(format!(
                        "--redis {:?}: expected a URL like redis://127.0.0.1:6379/0",
                        redact(url)
                    ));
                }
                DriverSpec::Redis(url.to_owned())
            }
        };
        if let Some((first, _)) = &self.chosen {
            return usage_err(if *first == flag {
                format!("{flag} is given twice")
            } else {
                format!("{first} and {flag} cannot be used together: choose one driver")
            });
        }
        self.chosen = Some((flag, spec));
        self.check().map(|_| true)
    }

    fn check(&self) -> Result<bool, Failure> {
        match (&self.chosen, &self.dir) {
            (Some((flag, _)), Some(_)) => usage_err(format!(
                "--dir and {flag} cannot be used together: --dir sets where the default \
                 driver keeps traces (choose a driver and its location with --local DIR, \
                 --store PATH or --redis URL)"
            )),
            _ => Ok(true),
        }
    }

    fn resolve(self) -> DriverSpec {
        match self.chosen {
            Some((_, spec)) => spec,
            None => DriverSpec::default_at(self.dir),
        }
    }
}

/// An open-loop run (`--rate`, `--duration`): trace `k` is due at
/// `k / per_sec` seconds after the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rate {
    /// Traces offered per second.
    per_sec: u64,
    /// Seconds the rate is offered for.
    duration_secs: u64,
}

impl Rate {
    /// When trace `k` is due, counted from the start.
    fn due(self, k: usize) -> Duration {
        let ns = k as u128 * 1_000_000_000 / u128::from(self.per_sec);
        Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
    }

    fn duration(self) -> Duration {
        Duration::from_secs(self.duration_secs)
    }
}

/// What `tracepool run` was asked to do.
#[derive(Debug)]
struct RunOptions {
    /// Traces to run; with `rate`, the traces scheduled (rate × duration).
    traces: usize,
    /// `--rate`: an open-loop run.
    rate: Option<Rate>,
    concurrency: usize,
    capacity: usize,
    workers: Option<usize>,
    keep_every: usize,
    driver: DriverSpec,
    /// Adjustments made to the flags, printed before the run.
    notes: Vec<String>,
}

impl RunOptions {
    fn parse(args: &[String]) -> Result<RunOptions, Failure> {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let (mut traces, mut concurrency, mut capacity) = (None, None, 1024u64);
        let (mut workers, mut keep_every) = (None, 1000u64);
        let (mut rate, mut duration) = (None, None);
        let mut drivers = DriverFlags::default();
        let mut i = 0;
        while i < args.len() {
            let flag = args[i].as_str();
            match flag {
                "--traces" => traces = Some(number(flag, value_of(args, &mut i, flag)?)?),
                "--rate" => rate = Some(number(flag, value_of(args, &mut i, flag)?)?),
                "--duration" => duration = Some(number(flag, value_of(args, &mut i, flag)?)?),
                "--concurrency" => concurrency = Some(number(flag, value_of(args, &mut i, flag)?)?),
                "--capacity" => capacity = number(flag, value_of(args, &mut i, flag)?)?,
                "--workers" => workers = Some(number(flag, value_of(args, &mut i, flag)?)?),
                "--keep-every" => keep_every = number(flag, value_of(args, &mut i, flag)?)?,
                _ if drivers.take(args, &mut i)? => {}
                other => return usage_err(format!("unknown argument {other:?}")),
            }
            i += 1;
        }
        let (traces, rate) = match (traces, rate, duration) {
            (Some(_), Some(_), _) => {
                return usage_err(
                    "--traces and --rate cannot be used together: --traces runs that many \
                     traces as fast as they go, --rate offers N traces a second for --duration \
                     seconds",
                );
            }
            (_, None, Some(_)) => {
                return usage_err("--duration needs --rate (the traces offered per second)");
            }
            (traces, None, None) => (traces.unwrap_or(20_000), None),
            (None, Some(per_sec), duration) => {
                let duration_secs = duration.unwrap_or(DEFAULT_DURATION);
                if duration_secs > MAX_DURATION {
                    return usage_err(format!(
                        "--duration {duration_secs} is more than {MAX_DURATION} seconds"
                    ));
                }
                let Some(traces) = per_sec.checked_mul(duration_secs) else {
                    return usage_err(format!(
                        "--rate {per_sec} for --duration {duration_secs} is too many traces"
                    ));
                };
                let rate = Rate {
                    per_sec,
                    duration_secs,
                };
                (traces, Some(rate))
            }
        };
        if capacity > MAX_CAPACITY {
            return usage_err(format!(
                "--capacity {capacity} is more than {MAX_CAPACITY} slots"
            ));
        }
        check_memory(capacity, physical_memory())?;
        if let Some(w) = workers
            && w > MAX_WORKERS
        {
            return usage_err(format!("--workers {w} is more than {MAX_WORKERS}"));
        }
        let mut notes = Vec::new();
        let mut concurrency = concurrency.unwrap_or(cores as u64);
        if concurrency > traces {
            let what = match rate {
                Some(r) => format!(
                    "the {traces} traces of --rate {} for {} s",
                    r.per_sec, r.duration_secs
                ),
                None => format!("--traces {traces}"),
            };
            notes.push(format!(
                "--concurrency {concurrency} is more than {what}: using {traces}"
            ));
            concurrency = traces;
        }
        if concurrency > capacity {
            notes.push(format!(
                "--concurrency {concurrency} is more than --capacity {capacity} (one slot per \
                 running trace): using {capacity}"
            ));
            concurrency = capacity;
        }
        Ok(RunOptions {
            traces: size(if rate.is_some() { "--rate" } else { "--traces" }, traces)?,
            rate,
            concurrency: size("--concurrency", concurrency)?,
            capacity: size("--capacity", capacity)?,
            workers: workers.map(|w| size("--workers", w)).transpose()?,
            keep_every: size("--keep-every", keep_every)?,
            driver: drivers.resolve(),
            notes,
        })
    }
}

/// Refuses a capacity whose preallocation would take more than half of
/// `memory` bytes (when the memory size is known).
fn check_memory(capacity: u64, memory: Option<u64>) -> Result<(), Failure> {
    let need = capacity.saturating_mul(SLOT_BYTES);
    match memory {
        Some(mem) if need > mem / 2 => usage_err(format!(
            "--capacity {capacity} preallocates about {} MiB, more than half of the {} MiB \
             of memory here",
            need >> 20,
            mem >> 20
        )),
        _ => Ok(()),
    }
}

/// Memory available to this process: the machine's (`/proc/meminfo`), or the
/// cgroup limit when it is lower. `None` where neither can be read.
fn physical_memory() -> Option<u64> {
    let total = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
        let kb = s.lines().find_map(|l| l.strip_prefix("MemTotal:"))?;
        kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok()
    });
    let total = total.map(|kb| kb.saturating_mul(1024));
    let cgroup = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .find_map(|p| std::fs::read_to_string(p).ok()?.trim().parse::<u64>().ok());
    match (total, cgroup) {
        (Some(t), Some(c)) => Some(t.min(c)),
        (t, c) => t.or(c),
    }
}

/// What `tracepool serve` was asked to do.
#[derive(Debug)]
struct ServeOptions {
    /// `--addr` as given.
    addr: String,
    /// Its resolved addresses, IPv4 first.
    addrs: Vec<SocketAddr>,
    demo: bool,
    driver: DriverSpec,
}

impl ServeOptions {
    fn parse(args: &[String]) -> Result<ServeOptions, Failure> {
        let mut addr = "127.0.0.1:7070".to_owned();
        let mut demo = false;
        let mut drivers = DriverFlags::default();
        let mut i = 0;
        while i < args.len() {
            let flag = args[i].as_str();
            match flag {
                "--addr" => addr = value_of(args, &mut i, flag)?.to_owned(),
                "--demo" => demo = true,
                _ if drivers.take(args, &mut i)? => {}
                other => return usage_err(format!("unknown argument {other:?}")),
            }
            i += 1;
        }
        let driver = match (demo, &drivers.chosen, &drivers.dir) {
            (true, Some((flag, _)), _) if *flag != "--memory" => {
                return usage_err(format!(
                    "--demo and {flag} cannot be used together: demo traces live in an \
                     in-memory driver of their own"
                ));
            }
            (true, _, Some(_)) => {
                return usage_err(
                    "--demo and --dir cannot be used together: demo traces live in an \
                     in-memory driver of their own",
                );
            }
            (true, _, _) => DriverSpec::Memory,
            (false, _, _) => drivers.resolve(),
        };
        let addrs = resolve(&addr)?;
        Ok(ServeOptions {
            addr,
            addrs,
            demo,
            driver,
        })
    }
}

/// A URL as it may be printed: without a password.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://…@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

/// Resolves `HOST:PORT` (a host name or an IP address), IPv4 addresses first.
fn resolve(addr: &str) -> Result<Vec<SocketAddr>, Failure> {
    let mut addrs: Vec<SocketAddr> = match addr.to_socket_addrs() {
        Ok(a) => a.collect(),
        Err(e) => {
            return usage_err(format!(
                "--addr {addr:?}: expected HOST:PORT (like 127.0.0.1:7070 or localhost:7070): {e}"
            ));
        }
    };
    if addrs.is_empty() {
        return usage_err(format!("--addr {addr:?}: the host has no address"));
    }
    addrs.sort_by_key(SocketAddr::is_ipv6);
    Ok(addrs)
}

// ---- serve ------------------------------------------------------------------------

#[cfg(feature = "http")]
fn serve(o: ServeOptions) -> Result<ExitCode, Failure> {
    // The first resolved address that can be bound (`localhost` may name
    // an IPv6 address this machine cannot listen on).
    let mut first_error = None;
    let mut chosen = None;
    for a in &o.addrs {
        match std::net::TcpListener::bind(a) {
            Ok(_) => {
                chosen = Some(*a);
                break;
            }
            Err(e) => {
                let resolved = if o.addr == a.to_string() {
                    String::new()
                } else {
                    format!(" ({a})")
                };
                first_error.get_or_insert(format!("cannot listen on {}{resolved}: {e}", o.addr));
            }
        }
    }
    let Some(addr) = chosen else {
        return Err(Failure::Runtime(first_error.unwrap_or_default()));
    };
    let driver = TimedDriver::new(o.driver.open()?);
    let engine = Engine::builder()
        .driver(driver)
        .build()
        .map_err(|e| Failure::Runtime(format!("cannot start the engine: {e}")))?;
    match tracepool::http::serve_blocking(engine, addr, o.demo) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        // `serve_blocking` reports what goes wrong around the server (a
        // failed bind: "cannot listen on ADDR: ...") as `Config`: say it as
        // it is, without "invalid configuration".
        Err(tracepool::Error::Config(msg)) => Err(Failure::Runtime(msg)),
        Err(e) => Err(Failure::Runtime(e.to_string())),
    }
}

#[cfg(not(feature = "http"))]
fn serve(_o: ServeOptions) -> Result<ExitCode, Failure> {
    Err(Failure::Runtime(
        "this build has no HTTP support (build with the `http` feature)".into(),
    ))
}

// ---- storage timing -------------------------------------------------------------

thread_local! {
    /// Set on the threads that run traces, so driver calls made there (the
    /// last write of `release`, `remove`) are told apart from the workers'.
    static TRACE_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// Summed wall time of driver calls.
#[derive(Debug, Default)]
struct DriverTime {
    calls: AtomicU64,
    total_ns: AtomicU64,
    /// The part spent on the trace threads.
    trace_threads_ns: AtomicU64,
}

/// A driver that times every call of the driver it wraps. Every method of
/// [`Driver`] is forwarded (a method added to the trait must be added here).
#[derive(Debug)]
struct TimedDriver {
    inner: Box<dyn Driver>,
    time: Arc<DriverTime>,
}

impl TimedDriver {
    fn new(inner: Box<dyn Driver>) -> TimedDriver {
        TimedDriver {
            inner,
            time: Arc::default(),
        }
    }

    fn timed<T>(&self, call: impl FnOnce(&dyn Driver) -> T) -> T {
        let start = Instant::now();
        let r = call(&*self.inner);
        let ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.time.calls.fetch_add(1, Ordering::Relaxed);
        self.time.total_ns.fetch_add(ns, Ordering::Relaxed);
        if TRACE_THREAD.get() {
            self.time.trace_threads_ns.fetch_add(ns, Ordering::Relaxed);
        }
        r
    }
}

impl Driver for TimedDriver {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn write(&self, batch: &WriteBatch<'_>) -> tracepool::Result<()> {
        self.timed(|d| d.write(batch))
    }
    fn wants_documents(&self) -> bool {
        self.inner.wants_documents()
    }
    fn persists(&self) -> bool {
        self.inner.persists()
    }
    fn load(&self, id: &str) -> tracepool::Result<Option<StoredTrace>> {
        self.timed(|d| d.load(id))
    }
    fn archive(&self, id: &str) -> tracepool::Result<()> {
        self.timed(|d| d.archive(id))
    }
    fn exists(&self, id: &str) -> tracepool::Result<bool> {
        self.timed(|d| d.exists(id))
    }
    fn info(&self, id: &str) -> tracepool::Result<Option<TraceInfo>> {
        self.timed(|d| d.info(id))
    }
    fn remove(&self, id: &str) -> tracepool::Result<bool> {
        self.timed(|d| d.remove(id))
    }
    fn list(&self) -> tracepool::Result<Vec<String>> {
        self.timed(|d| d.list())
    }
    fn flush(&self) -> tracepool::Result<()> {
        self.timed(|d| d.flush())
    }
    fn lease_renewal(&self) -> Option<Duration> {
        self.inner.lease_renewal()
    }
    fn acquire_lease(&self, id: &str, creating: bool) -> tracepool::Result<()> {
        self.timed(|d| d.acquire_lease(id, creating))
    }
    fn release_lease(&self, id: &str) -> tracepool::Result<()> {
        self.timed(|d| d.release_lease(id))
    }
    fn renew_leases(&self) {
        self.inner.renew_leases();
    }
    fn shutdown(&self) {
        self.inner.shutdown();
    }
    fn follow(
        &self,
        id: &str,
        from_seq: u64,
        buffer: usize,
    ) -> tracepool::Result<Option<Box<dyn tracepool::FollowFeed>>> {
        self.timed(|d| d.follow(id, from_seq, buffer))
    }
}

// ---- error counting ---------------------------------------------------------------

/// The calls whose errors the main job counts.
#[derive(Debug, Clone, Copy)]
enum Op {
    Create,
    Subscribe,
    Step,
    Finish,
    Release,
    Remove,
    Flush,
}

impl Op {
    const ALL: [Op; 7] = [
        Op::Create,
        Op::Subscribe,
        Op::Step,
        Op::Finish,
        Op::Release,
        Op::Remove,
        Op::Flush,
    ];

    fn name(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::Subscribe => "subscribe",
            Op::Step => "scenario steps",
            Op::Finish => "mark complete/cancelled",
            Op::Release => "release",
            Op::Remove => "remove",
            Op::Flush => "flush",
        }
    }
}

/// Errors returned by the engine during the run, per call; never fatal.
#[derive(Debug, Default)]
struct Errors {
    storage: [AtomicU64; 7],
    other: [AtomicU64; 7],
    first: Mutex<Option<String>>,
}

impl Errors {
    fn record(&self, op: Op, e: &tracepool::Error) {
        let storage = matches!(
            e,
            tracepool::Error::Storage { .. } | tracepool::Error::Corrupt { .. }
        );
        let counters = if storage { &self.storage } else { &self.other };
        counters[op as usize].fetch_add(1, Ordering::Relaxed);
        let mut first = self.first.lock().unwrap_or_else(|p| p.into_inner());
        if first.is_none() {
            *first = Some(format!("{}: {e}", op.name()));
        }
    }

    fn total(&self) -> u64 {
        self.storage
            .iter()
            .chain(&self.other)
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// `storage 12 (release 10, remove 2)`.
    fn describe(counters: &[AtomicU64; 7], label: &str) -> String {
        let parts: Vec<String> = Op::ALL
            .iter()
            .filter_map(|op| {
                let n = counters[*op as usize].load(Ordering::Relaxed);
                (n > 0).then(|| format!("{} {n}", op.name()))
            })
            .collect();
        let n: u64 = counters.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        if parts.is_empty() {
            format!("{label} 0")
        } else {
            format!("{label} {n} ({})", parts.join(", "))
        }
    }

    fn summary(&self) -> String {
        if self.total() == 0 {
            return "none".into();
        }
        let first = self.first.lock().unwrap_or_else(|p| p.into_inner());
        format!(
            "{}, {}; first: {}",
            Errors::describe(&self.storage, "storage"),
            Errors::describe(&self.other, "other"),
            first.as_deref().unwrap_or("")
        )
    }
}

// ---- the main job: scenario steps that never panic ----------------------------------

/// The engine as the scenarios drive it in the main job: every error is
/// counted instead of ending the run. A failed call yields `None`, and the
/// scenario's later steps on it do nothing.
#[derive(Debug, Clone)]
struct Job {
    engine: Engine,
    errors: Arc<Errors>,
}

impl Job {
    fn ok<T>(&self, r: tracepool::Result<T>) -> Option<T> {
        r.map_err(|e| self.errors.record(Op::Step, &e)).ok()
    }
}

impl ScenarioEngine for Job {
    type Trace = Option<tracepool::Trace>;
    type Node = Option<tracepool::Node>;

    fn create(&self) -> Self::Trace {
        self.engine
            .create(TraceOptions::new())
            .map_err(|e| self.errors.record(Op::Create, &e))
            .ok()
    }
    fn add(&self, t: &Self::Trace, input: serde_json::Value, label: &'static str) -> Self::Node {
        let t = t.as_ref()?;
        self.ok(t.add(input, tracepool::NodeOptions::new().label(label)))
    }
    fn complete(&self, t: &Self::Trace, output: serde_json::Value) {
        if let Some(t) = t {
            self.ok(t.complete(Some(output)));
        }
    }
    fn parallel(&self, t: &Self::Trace, labels: &[&'static str]) -> Vec<Self::Node> {
        let Some(t) = t else { return Vec::new() };
        let inputs = labels
            .iter()
            .map(|l| {
                tracepool::ParallelInput::new(
                    serde_json::Value::Null,
                    tracepool::NodeOptions::new().label(*l),
                )
            })
            .collect();
        self.ok(t.parallel(inputs))
            .map(|nodes| nodes.into_iter().map(Some).collect())
            .unwrap_or_default()
    }
    fn log(&self, t: &Self::Trace, level: Lvl, msg: &'static str) {
        if let Some(t) = t {
            match level {
                Lvl::Debug => t.debug(msg),
                Lvl::Info => t.info(msg),
                Lvl::Warn => t.warn(msg),
            };
        }
    }
    fn node_complete(&self, n: &Self::Node, output: serde_json::Value) {
        if let Some(n) = n {
            self.ok(n.complete(Some(output)));
        }
    }
    fn node_info(&self, n: &Self::Node, msg: &'static str) {
        if let Some(n) = n {
            n.info(msg);
        }
    }
    fn create_space(&self, t: &Self::Trace, label: &'static str) -> String {
        t.as_ref()
            .and_then(|t| self.ok(t.create_space(tracepool::SpaceOptions::new().label(label))))
            .map(|s| s.id)
            .unwrap_or_default()
    }
    fn set_space_value(
        &self,
        t: &Self::Trace,
        space: &str,
        key: &'static str,
        v: serde_json::Value,
    ) {
        if let Some(t) = t
            && !space.is_empty()
        {
            self.ok(t.set_space_value(space, key, v));
        }
    }
    fn get_space_value(
        &self,
        t: &Self::Trace,
        space: &str,
        key: &'static str,
    ) -> Option<serde_json::Value> {
        self.ok(t.as_ref()?.get_space_value(space, key)).flatten()
    }
    fn mark_complete(&self, t: &Self::Trace) {
        if let Some(t) = t
            && let Err(e) = t.mark_complete()
        {
            self.errors.record(Op::Finish, &e);
        }
    }
    fn release(&self, t: Self::Trace) {
        if let Some(t) = t
            && let Err(e) = t.release()
        {
            self.errors.record(Op::Release, &e);
        }
    }
}

// ---- the main job: live checks ----------------------------------------------------

/// What the live subscribers found.
#[derive(Debug, Default)]
struct Checks {
    delivered: AtomicU64,
    order_violations: AtomicU64,
    lagged: AtomicU64,
    missing_complete: AtomicU64,
    checked: AtomicU64,
    /// Subscriptions still being read.
    outstanding: Mutex<usize>,
    all_done: Condvar,
}

impl Checks {
    fn started(&self) {
        *self.outstanding.lock().unwrap_or_else(|p| p.into_inner()) += 1;
    }

    fn finished(&self) {
        let mut n = self.outstanding.lock().unwrap_or_else(|p| p.into_inner());
        *n -= 1;
        if *n == 0 {
            self.all_done.notify_all();
        }
    }

    /// Waits until every subscription ended, or `deadline`; returns how many
    /// had not.
    fn wait(&self, deadline: Instant) -> usize {
        let mut n = self.outstanding.lock().unwrap_or_else(|p| p.into_inner());
        while *n > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            n = self
                .all_done
                .wait_timeout(n, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        *n
    }
}

/// Follows one trace's events: seqs must be 1, 2, 3, ... and the stream must
/// end right after `complete`.
async fn check(mut sub: Subscription, checks: Arc<Checks>) {
    let mut expect = 1u64;
    let mut delivered = 0u64;
    let mut complete = false;
    while let Some(d) = sub.recv().await {
        match d {
            Delivery::Event(ev) => {
                if ev.seq != expect || complete {
                    checks.order_violations.fetch_add(1, Ordering::Relaxed);
                }
                expect = ev.seq + 1;
                delivered += 1;
                complete |= ev.kind == EventKind::Complete;
            }
            Delivery::Lagged { missed } => {
                checks.lagged.fetch_add(missed, Ordering::Relaxed);
                expect += missed;
            }
        }
    }
    if !complete {
        checks.missing_complete.fetch_add(1, Ordering::Relaxed);
    }
    checks.delivered.fetch_add(delivered, Ordering::Relaxed);
    checks.checked.fetch_add(1, Ordering::Relaxed);
    checks.finished();
}

// ---- the main job: reopening a kept trace -------------------------------------------

/// Whether a stored trace is whole: nodes, seqs 1..=N without a gap, the
/// last event `complete`, a finished status. `Err` says what is missing.
fn whole(nodes: usize, events: &[tracepool::Event], status: TraceStatus) -> Result<(), String> {
    if nodes == 0 {
        return Err("no nodes".into());
    }
    if let Some((i, e)) = events
        .iter()
        .enumerate()
        .find(|(i, e)| e.seq != *i as u64 + 1)
    {
        return Err(format!("seq {} where {} was due", e.seq, i + 1));
    }
    if events.last().is_none_or(|e| e.kind != EventKind::Complete) {
        return Err("the events do not end with complete".into());
    }
    if !matches!(status, TraceStatus::Completed | TraceStatus::Cancelled) {
        return Err(format!("status {}", status.as_str()));
    }
    Ok(())
}

/// A loaded trace's node count, events and status.
fn read_loaded(
    t: &tracepool::Trace,
) -> tracepool::Result<(usize, Vec<tracepool::Event>, TraceStatus)> {
    Ok((t.all_nodes()?.len(), t.events(Cursor::Seq(0))?, t.status()))
}

/// Reopens the newest whole trace an earlier run kept and checks that the
/// engine rebuilds what storage holds. Other traces in the same storage —
/// not kept by the main job, partial, running or unreadable — are reported
/// and skipped. `Err` only when a whole kept trace does not reopen as stored.
fn reopen_previous(engine: &Engine) -> Result<(), String> {
    let ids = match engine.list_stored() {
        Ok(ids) => ids,
        Err(e) => {
            out!("reopen check: skipped, cannot list the stored traces: {e}");
            return Ok(());
        }
    };
    if ids.is_empty() {
        return Ok(());
    }
    let mut skipped: Vec<(String, String)> = Vec::new();
    let mut foreign = 0usize;
    let mut candidates: Vec<(i64, String)> = Vec::new();
    for id in ids {
        match engine.info(&id) {
            Ok(info)
                if info.metadata.get(KEPT_BY.0).and_then(|v| v.as_str()) != Some(KEPT_BY.1) =>
            {
                foreign += 1;
            }
            Ok(info) if matches!(info.status, TraceStatus::Pending | TraceStatus::Running) => {
                skipped.push((
                    id,
                    format!(
                        "still {} (running elsewhere, or cut short)",
                        info.status.as_str()
                    ),
                ));
            }
            Ok(info) => candidates.push((info.created_at, id)),
            Err(e) => skipped.push((id, format!("unreadable: {e}"))),
        }
    }
    candidates.sort_unstable_by(|a, b| b.cmp(a));
    let mut chosen = None;
    for (_, id) in candidates {
        match engine.read_stored(&id) {
            Ok(stored) => match whole(stored.nodes.len(), &stored.events, stored.info.status) {
                Ok(()) => {
                    chosen = Some((id, stored));
                    break;
                }
                Err(why) => skipped.push((id, format!("partial: {why}"))),
            },
            Err(e) => skipped.push((id, format!("unreadable: {e}"))),
        }
    }
    if foreign > 0 {
        out!("reopen check: skipped {foreign} stored traces the main job did not keep");
    }
    for (id, why) in skipped.iter().take(5) {
        out!("reopen check: skipped trace {id}: {why}");
    }
    if skipped.len() > 5 {
        out!(
            "reopen check: skipped {} more partial or running traces",
            skipped.len() - 5
        );
    }
    let Some((id, stored)) = chosen else {
        out!("reopen check: no whole trace kept by an earlier run");
        return Ok(());
    };
    let t = engine
        .open(&id)
        .map_err(|e| format!("cannot reopen trace {id} from a previous run: {e}"))?;
    let reopened = read_loaded(&t);
    let released = t.release();
    let (nodes, events, status) =
        reopened.map_err(|e| format!("cannot read reopened trace {id}: {e}"))?;
    released.map_err(|e| format!("cannot release reopened trace {id}: {e}"))?;
    let verdict = whole(nodes, &events, status).and_then(|()| {
        if nodes == stored.nodes.len()
            && events.len() == stored.events.len()
            && status == stored.info.status
        {
            Ok(())
        } else {
            Err(format!(
                "storage holds {} nodes, {} events, status {}",
                stored.nodes.len(),
                stored.events.len(),
                stored.info.status.as_str()
            ))
        }
    });
    out!(
        "reopened trace {id} from a previous run: {nodes} nodes, {} events (seq 1..{}, {}), status {}",
        events.len(),
        events.len(),
        match &verdict {
            Ok(()) => "gap-free, ends with complete".to_owned(),
            Err(why) => format!("NOT WHOLE: {why}"),
        },
        status.as_str()
    );
    verdict.map_err(|why| format!("trace {id} kept by a previous run does not reopen whole: {why}"))
}

// ---- the main job ---------------------------------------------------------------

/// Messages to the main thread while the job runs.
enum Msg {
    /// A trace thread ended.
    ThreadDone,
    /// Ctrl-C.
    Interrupted,
}

/// Sends [`Msg::ThreadDone`] when dropped, also if the thread unwinds.
struct DoneSignal(mpsc::Sender<Msg>);

impl Drop for DoneSignal {
    fn drop(&mut self) {
        let _ = self.0.send(Msg::ThreadDone);
    }
}

/// What one trace thread did.
struct ThreadReport {
    /// Time spent running traces (create to remove).
    busy: Duration,
    /// When it finished its last trace.
    end: Instant,
    /// Open loop: how late it started its most late trace.
    max_lag: Duration,
    /// Open loop: the last trace it started and how late.
    last: Option<(usize, Duration)>,
    /// Open loop: the trace it took but did not start, the duration being
    /// over when a thread was free for it.
    not_started: Option<usize>,
}

/// Shared by the trace threads.
struct Shared {
    job: Job,
    checks: Arc<Checks>,
    branches: ThreadPool,
    subscribers: tokio::runtime::Handle,
    next: AtomicUsize,
    done: AtomicUsize,
    kept: AtomicUsize,
    cancelled: AtomicUsize,
    stop: Arc<AtomicBool>,
    traces: usize,
    keep_every: usize,
    /// When the job started: trace `k` of an open-loop run is due at
    /// `start + rate.due(k)`.
    start: Instant,
    rate: Option<Rate>,
}

impl Shared {
    /// Runs traces until there are none left or the job is stopped. Open
    /// loop (`--rate`): each trace taken is started when it is due, at once
    /// when it is late, not at all once the duration is over.
    fn trace_thread(&self) -> ThreadReport {
        TRACE_THREAD.set(true);
        let mut report = ThreadReport {
            busy: Duration::ZERO,
            end: Instant::now(),
            max_lag: Duration::ZERO,
            last: None,
            not_started: None,
        };
        while !self.stop.load(Ordering::Acquire) {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= self.traces {
                break;
            }
            let start = match self.rate {
                None => Instant::now(),
                Some(rate) => {
                    let due = self.start + rate.due(i);
                    if !self.sleep_until(due) {
                        break;
                    }
                    let now = Instant::now();
                    if now >= self.start + rate.duration() {
                        report.not_started = Some(i);
                        break;
                    }
                    let lag = now - due;
                    report.max_lag = report.max_lag.max(lag);
                    report.last = Some((i, lag));
                    now
                }
            };
            self.one_trace(i);
            report.end = Instant::now();
            report.busy += report.end - start;
            self.done.fetch_add(1, Ordering::Relaxed);
        }
        report
    }

    /// Sleeps until `due`; `false` when the job was stopped meanwhile.
    fn sleep_until(&self, due: Instant) -> bool {
        loop {
            if self.stop.load(Ordering::Acquire) {
                return false;
            }
            let now = Instant::now();
            if now >= due {
                return true;
            }
            // In slices, so that Ctrl-C is seen within 50 ms.
            std::thread::sleep((due - now).min(Duration::from_millis(50)));
        }
    }

    /// Open loop: how late the schedule is now (the next trace to take was
    /// due this long ago; zero when it is not due yet).
    fn lag_now(&self, rate: Rate) -> Duration {
        let next = self.next.load(Ordering::Relaxed).min(self.traces);
        let end = self.start + rate.duration();
        let now = Instant::now().min(end);
        now.saturating_duration_since(self.start + rate.due(next))
    }

    /// One trace: create, subscribe a checker, run scenario `i mod 5`, mark
    /// it complete (cancelled once the job is stopped), release, and remove
    /// it unless it is one to keep.
    fn one_trace(&self, i: usize) {
        let (engine, errors) = (&self.job.engine, &self.job.errors);
        let keep = i.is_multiple_of(self.keep_every);
        let mut opts = TraceOptions::new();
        if keep {
            opts = opts.metadata(KEPT_BY.0, KEPT_BY.1);
        }
        let trace = match engine.create(opts) {
            Ok(t) => t,
            Err(e) => return errors.record(Op::Create, &e),
        };
        match trace.subscribe() {
            Ok(sub) => {
                self.checks.started();
                self.subscribers.spawn(check(sub, self.checks.clone()));
            }
            Err(e) => errors.record(Op::Subscribe, &e),
        }
        let handle = Some(trace.clone());
        scenarios::run(&self.job, &handle, Scenario::ALL[i % 5], &self.branches);
        drop(handle);
        let finished = if self.stop.load(Ordering::Acquire) {
            self.cancelled.fetch_add(1, Ordering::Relaxed);
            trace.mark_cancelled("interrupted (Ctrl-C)")
        } else {
            trace.mark_complete()
        };
        if let Err(e) = finished {
            errors.record(Op::Finish, &e);
        }
        // `release` returns at once; its last batch is written by a worker,
        // so storage errors come out of `flush_blocking()` and
        // `EngineStats::persist_errors`, which the summary counts.
        let released = trace.release();
        if let Err(e) = &released {
            errors.record(Op::Release, e);
        }
        if keep && released.is_ok() {
            self.kept.fetch_add(1, Ordering::Relaxed);
        } else {
            // Not kept: removed at once (its queued writes are discarded,
            // no file work). A kept trace whose release failed is removed
            // too.
            match engine.remove(trace.id()) {
                // NotFound: the driver keeps nothing (in-memory).
                Ok(()) | Err(tracepool::Error::NotFound) => {}
                Err(e) => errors.record(Op::Remove, &e),
            }
        }
        // The handle lives until here: released explicitly above.
        drop(trace);
    }
}

/// Starts watching for Ctrl-C on `rt`: the first sets `stop` and tells the
/// main thread, the second exits at once.
///
/// Needs the `http` feature (it brings tokio's signal support); without
/// it, Ctrl-C ends the process the default way and the next run's reopen
/// check skips the traces it cut short.
#[cfg(feature = "http")]
fn watch_interrupt(
    rt: &tokio::runtime::Runtime,
    stop: Arc<AtomicBool>,
    tx: mpsc::Sender<Msg>,
) -> Result<(), Failure> {
    let _guard = rt.enter();
    let on_second = || {
        err!("tracepool: interrupted again: exiting without waiting for the running traces");
        std::process::exit(i32::from(INTERRUPTED));
    };
    #[cfg(unix)]
    {
        // Registered here, before the job starts (`ctrl_c()` would register
        // only when first polled).
        use tokio::signal::unix::{SignalKind, signal};
        let mut sig = signal(SignalKind::interrupt())
            .map_err(|e| Failure::Runtime(format!("cannot watch for Ctrl-C: {e}")))?;
        rt.spawn(async move {
            sig.recv().await;
            stop.store(true, Ordering::Release);
            let _ = tx.send(Msg::Interrupted);
            sig.recv().await;
            on_second();
        });
    }
    #[cfg(not(unix))]
    rt.spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stop.store(true, Ordering::Release);
        let _ = tx.send(Msg::Interrupted);
        let _ = tokio::signal::ctrl_c().await;
        on_second();
    });
    Ok(())
}

#[cfg(not(feature = "http"))]
fn watch_interrupt(
    _rt: &tokio::runtime::Runtime,
    _stop: Arc<AtomicBool>,
    _tx: mpsc::Sender<Msg>,
) -> Result<(), Failure> {
    Ok(())
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// A `kB` field of `/proc/self/status` (`VmRSS`, `VmHWM`) in bytes; `None`
/// where it cannot be read (not Linux).
fn proc_status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?;
    let kb = kb
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kb.saturating_mul(1024))
}

/// The resident set size now, in bytes.
fn rss() -> Option<u64> {
    proc_status_bytes("VmRSS")
}

/// `12.3 MB`, or `n/a`.
fn megabytes(bytes: Option<u64>) -> String {
    bytes.map_or_else(|| "n/a".into(), |b| format!("{:.1} MB", b as f64 / 1e6))
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// What an open-loop run measured, for its summary lines.
#[derive(Debug)]
struct RateReport {
    rate: Rate,
    /// Traces started (on schedule or late) and completed.
    completed: usize,
    /// Traces scheduled within the duration but not started by its end.
    not_started: usize,
    /// The time `completed` is divided by: the duration (up to Ctrl-C when
    /// interrupted).
    window: Duration,
    lag_max: Duration,
    /// How late the schedule was at the end: at the end of the duration, how
    /// long ago the first trace not started was due; when every trace
    /// started, how late the last one started.
    lag_end: Duration,
    dropped: u64,
    persist_errors: u64,
    rss_start: Option<u64>,
    rss_warm: Option<u64>,
    rss_end: Option<u64>,
    rss_peak: Option<u64>,
}

impl RateReport {
    fn achieved(&self) -> f64 {
        self.completed as f64 / self.window.as_secs_f64().max(1e-9)
    }

    /// RSS growth from after warm-up to the peak, in bytes.
    fn rss_growth_bytes(&self) -> u64 {
        match (self.rss_warm, self.rss_peak) {
            (Some(w), Some(p)) => p.saturating_sub(w),
            _ => 0,
        }
    }

    /// RSS growth from after warm-up to the peak, in %.
    fn rss_growth_pct(&self) -> Option<f64> {
        let (warm, peak) = (self.rss_warm?, self.rss_peak?);
        (warm > 0).then(|| (peak as f64 - warm as f64) / warm as f64 * 100.0)
    }

    /// Why the offered rate was not sustained; empty when it was. `checks`:
    /// every check of the run passed, and it was not interrupted.
    fn shortfalls(&self, checks: bool) -> Vec<String> {
        let mut why = Vec::new();
        let offered = self.rate.per_sec as f64;
        if self.achieved() < MIN_ACHIEVED * offered {
            why.push(format!(
                "achieved {:.1} < {}% of {offered}",
                self.achieved(),
                MIN_ACHIEVED * 100.0
            ));
        }
        if self.dropped > 0 {
            why.push(format!("{} events dropped", self.dropped));
        }
        if self.persist_errors > 0 {
            why.push(format!("{} persist errors", self.persist_errors));
        }
        if let Some(g) = self.rss_growth_pct()
            && g >= MAX_RSS_GROWTH_PCT
            && self.rss_growth_bytes() >= RSS_SLACK
        {
            why.push(format!(
                "RSS grew {g:.1}% >= {MAX_RSS_GROWTH_PCT}% (and {} MiB)",
                self.rss_growth_bytes() >> 20
            ));
        }
        if !checks {
            why.push("checks failed or interrupted".into());
        }
        why
    }

    /// The summary lines of an open-loop run, before the result.
    fn print(&self) {
        let r = self.rate;
        out!(
            "  rate              offered {} traces/s for {} s ({} scheduled); achieved {:.1} traces/s ({} completed in {:.3} s, {} not started by the end)",
            r.per_sec,
            r.duration_secs,
            r.per_sec.saturating_mul(r.duration_secs),
            self.achieved(),
            self.completed,
            self.window.as_secs_f64(),
            self.not_started
        );
        out!(
            "  schedule lag      max {:.3} ms, at the end {:.3} ms",
            millis(self.lag_max),
            millis(self.lag_end)
        );
        out!(
            "  memory (RSS)      start {}, halfway {}, end {}, peak {}: {} from halfway to the peak",
            megabytes(self.rss_start),
            megabytes(self.rss_warm),
            megabytes(self.rss_end),
            megabytes(self.rss_peak),
            self.rss_growth_pct()
                .map_or_else(|| "growth n/a".into(), |g| format!("{g:+.1}%"))
        );
    }

    /// The verdict and, last, the machine-readable line.
    fn print_verdict(&self, checks: bool) {
        let why = self.shortfalls(checks);
        if why.is_empty() {
            out!(
                "  sustained         yes: achieved >= {}% of offered, 0 events dropped, 0 persist errors, RSS growth after warm-up < {MAX_RSS_GROWTH_PCT}% (or {} MiB), every check passed",
                MIN_ACHIEVED * 100.0,
                RSS_SLACK >> 20
            );
        } else {
            out!("  sustained         no: {}", why.join("; "));
        }
        out!(
            "rate_result offered={} achieved={:.1} completed={} not_started={} duration_s={} dropped={} persist_errors={} rss_growth_pct={} lag_max_ms={:.3} lag_end_ms={:.3} checks={} sustained={}",
            self.rate.per_sec,
            self.achieved(),
            self.completed,
            self.not_started,
            self.rate.duration_secs,
            self.dropped,
            self.persist_errors,
            self.rss_growth_pct()
                .map_or_else(|| "na".into(), |g| format!("{g:.1}")),
            millis(self.lag_max),
            millis(self.lag_end),
            if checks { "ok" } else { "failed" },
            if why.is_empty() { "yes" } else { "no" }
        );
    }
}

fn run(o: RunOptions) -> Result<ExitCode, Failure> {
    for note in &o.notes {
        err!("tracepool: note: {note}");
    }
    let driver = TimedDriver::new(o.driver.open()?);
    let driver_time = driver.time.clone();
    // A failing disk: give up on a released trace's last batch after 5 s
    // (counted and reported) rather than the library's 30 s default.
    // A closed loop on slow storage: every slot may be draining when a
    // thread wants its next trace. It waits for a slot (backpressure, as
    // long as a drain may take) instead of failing after the default 50 ms.
    let mut builder = Engine::builder()
        .capacity(o.capacity)
        .drain_timeout(DRAIN_TIMEOUT)
        .on_exhausted(tracepool::Exhausted::Wait(DRAIN_TIMEOUT))
        .driver(driver);
    if let Some(w) = o.workers {
        builder = builder.workers(w);
    }
    let engine = builder
        .build()
        .map_err(|e| Failure::Runtime(format!("cannot start the engine: {e}")))?;
    let memory = engine.driver_name() == "memory";

    // The application's side: a small runtime for the subscriber checks
    // (and Ctrl-C), and a few threads that complete parallel branches.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("subscriber")
        .enable_all()
        .build()
        .map_err(|e| Failure::Runtime(format!("cannot start the subscriber runtime: {e}")))?;
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    watch_interrupt(&rt, stop.clone(), tx.clone())?;

    let before = engine.stats();
    out!(
        "tracepool main job: {} traces over {} scenarios, concurrency {}, driver {}, {} slots, {} workers",
        o.traces,
        Scenario::ALL.len(),
        o.concurrency,
        o.driver.describe(),
        before.capacity,
        before.workers
    );
    let reopen = reopen_previous(&engine);

    let errors = Arc::new(Errors::default());
    let checks = Arc::new(Checks::default());
    let branches = ThreadPool::sleeping(2);
    let rss_start = rss();
    let shared = Arc::new(Shared {
        job: Job {
            engine: engine.clone(),
            errors: errors.clone(),
        },
        checks: checks.clone(),
        branches,
        subscribers: rt.handle().clone(),
        next: AtomicUsize::new(0),
        done: AtomicUsize::new(0),
        kept: AtomicUsize::new(0),
        cancelled: AtomicUsize::new(0),
        stop: stop.clone(),
        traces: o.traces,
        keep_every: o.keep_every,
        start: Instant::now(),
        rate: o.rate,
    });

    let started = shared.start;
    let mut threads = Vec::with_capacity(o.concurrency);
    for k in 0..o.concurrency {
        let (shared, tx) = (shared.clone(), tx.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("trace-{k}"))
            .spawn(move || {
                let _done = DoneSignal(tx);
                shared.trace_thread()
            });
        match spawned {
            Ok(h) => threads.push(h),
            Err(e) => {
                err!("tracepool: note: could start only {k} trace threads: {e}");
                break;
            }
        }
    }
    drop(tx);
    if threads.is_empty() {
        stop.store(true, Ordering::Release);
        return Err(Failure::Runtime("cannot start a trace thread".into()));
    }

    // Progress once a second, until every trace thread is done.
    let mut running = threads.len();
    let mut last = (started, 0usize);
    let mut tick = started + Duration::from_secs(1);
    let mut rss_warm = None;
    // Warm-up: the first half of a rate run (at least WARM_UP).
    let warm_up = o
        .rate
        .map_or(WARM_UP, |r| Duration::from_secs(r.duration_secs) / 2)
        .max(WARM_UP);
    while running > 0 {
        match rx.recv_timeout(tick.saturating_duration_since(Instant::now())) {
            Ok(Msg::ThreadDone) => running -= 1,
            Ok(Msg::Interrupted) => err!(
                "tracepool: interrupted: starting no new trace, cancelling the running ones \
                 (Ctrl-C again exits at once)"
            ),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let n = shared.done.load(Ordering::Relaxed);
                let now = Instant::now();
                if rss_warm.is_none() && now - started >= warm_up {
                    rss_warm = rss();
                }
                let lag = o.rate.map_or_else(String::new, |r| {
                    format!("  schedule lag {:.1} ms", millis(shared.lag_now(r)))
                });
                err!(
                    "  [{:>5.1}s] {:>9} / {} traces  {:>9.0} traces/s  {} slots in use{lag}",
                    (now - started).as_secs_f64(),
                    n,
                    o.traces,
                    (n - last.1) as f64 / (now - last.0).as_secs_f64(),
                    engine.stats().in_use
                );
                last = (now, n);
                tick += Duration::from_secs(1);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    // A run shorter than the warm-up: its memory after warm-up is the
    // memory at its end.
    let rss_warm = rss_warm.or_else(rss);
    let mut busy = Duration::ZERO;
    let mut end = started;
    let mut panicked = 0;
    let (mut lag_max, mut last_started, mut first_not_started) =
        (Duration::ZERO, None::<(usize, Duration)>, None::<usize>);
    for h in threads {
        match h.join() {
            Ok(r) => {
                busy += r.busy;
                end = end.max(r.end);
                lag_max = lag_max.max(r.max_lag);
                if r.last
                    .is_some_and(|(i, _)| last_started.is_none_or(|(j, _)| i > j))
                {
                    last_started = r.last;
                }
                if let Some(i) = r.not_started {
                    first_not_started = Some(first_not_started.map_or(i, |j: usize| j.min(i)));
                }
            }
            Err(_) => panicked += 1,
        }
    }
    let elapsed = end - started;
    let unfinished = checks.wait(Instant::now() + Duration::from_secs(30));
    let interrupted = stop.load(Ordering::Acquire);
    let running_stats = engine.stats();

    // Wait for the last batch of every released trace (drained slots are
    // free afterwards); the first storage error comes back here.
    if let Err(e) = engine.flush_blocking() {
        errors.record(Op::Flush, &e);
    }
    let after = engine.stats();
    let traces = shared.done.load(Ordering::Relaxed);
    let rate_report = o.rate.map(|rate| {
        // Traces never taken by a thread were not started either.
        let untaken = shared.next.load(Ordering::Relaxed);
        let first_not_started = match first_not_started {
            Some(i) => Some(i.min(untaken)),
            None => (untaken < o.traces).then_some(untaken),
        };
        let lag_end = match first_not_started {
            Some(i) => rate.duration().saturating_sub(rate.due(i)),
            None => last_started.map_or(Duration::ZERO, |(_, lag)| lag),
        };
        RateReport {
            rate,
            completed: traces,
            not_started: o.traces.saturating_sub(traces),
            window: if interrupted {
                elapsed.min(rate.duration())
            } else {
                rate.duration()
            },
            lag_max,
            lag_end,
            dropped: after.events_dropped,
            persist_errors: after.persist_errors,
            rss_start,
            rss_warm,
            rss_end: rss(),
            rss_peak: proc_status_bytes("VmHWM"),
        }
    });

    let secs_run = elapsed.as_secs_f64();
    let delivered = checks.delivered.load(Ordering::Relaxed);
    let violations = checks.order_violations.load(Ordering::Relaxed);
    let lagged = checks.lagged.load(Ordering::Relaxed);
    let missing = checks.missing_complete.load(Ordering::Relaxed);
    let kept = shared.kept.load(Ordering::Relaxed);
    out!("summary:");
    out!(
        "  traces            {traces} in {secs_run:.3} s = {:.0} traces/s",
        traces as f64 / secs_run.max(1e-9)
    );
    if interrupted {
        out!(
            "  interrupted       by Ctrl-C after {traces} of {} traces; {} running traces cancelled",
            o.traces,
            shared.cancelled.load(Ordering::Relaxed)
        );
    }
    if let Some(r) = &rate_report {
        r.print();
    }
    out!(
        "  events            {} emitted = {:.0} events/s; {} persisted by the driver, {} discarded (traces removed before they were written)",
        after.events_emitted,
        after.events_emitted as f64 / secs_run.max(1e-9),
        after.events_persisted,
        after.events_discarded
    );
    if memory {
        out!(
            "  storage           memory driver: nothing is handed to it, nothing written; {} persist errors",
            after.persist_errors
        );
    } else {
        out!(
            "  storage           {} events persisted, {} bytes written ({:.1} MB/s), {} persist errors; {kept} traces kept in storage by this run",
            after.events_persisted,
            after.bytes_written,
            after.bytes_written as f64 / secs_run.max(1e-9) / 1e6,
            after.persist_errors
        );
    }
    let (storage_ns, storage_trace_ns) = (
        driver_time.total_ns.load(Ordering::Relaxed),
        driver_time.trace_threads_ns.load(Ordering::Relaxed),
    );
    let busy_ns = u64::try_from(busy.as_nanos()).unwrap_or(u64::MAX);
    out!(
        "  engine time       {:.3} s: the trace threads' {:.3} s running traces, less the driver calls made on them",
        secs(busy_ns.saturating_sub(storage_trace_ns)),
        secs(busy_ns)
    );
    out!(
        "  storage time      {:.3} s: summed wall time of {} driver calls ({:.3} s on the trace threads, {:.3} s on the engine's workers and at start and end)",
        secs(storage_ns),
        driver_time.calls.load(Ordering::Relaxed),
        secs(storage_trace_ns),
        secs(storage_ns.saturating_sub(storage_trace_ns))
    );
    out!(
        "  delivered         {delivered} events to {} live subscribers",
        checks.checked.load(Ordering::Relaxed)
    );
    out!(
        "  order violations  {violations}   lagged {lagged}   dropped {}   missing complete {missing}   unfinished subscribers {unfinished}",
        after.events_dropped
    );
    out!("  errors            {}", errors.summary());
    if panicked > 0 {
        out!("  trace threads     {panicked} panicked");
    }
    out!(
        "  slots             capacity {}, peak in use {}, in use now {}, draining {}, grown {}; auto-released {}",
        after.capacity,
        after.peak_in_use,
        after.in_use,
        after.draining,
        after.grown,
        after.auto_released
    );
    out!(
        "  engine counters   history evicted {}, events lagged {}, logs dropped {} (the logging scenario logs once before its root)",
        after.history_evicted,
        after.events_lagged,
        after.logs_dropped
    );
    out!(
        "  live tasks        before {}, after {} (workers {})",
        before.live_tasks,
        running_stats.live_tasks,
        running_stats.workers
    );
    if let Err(why) = &reopen {
        out!("  reopen check      FAILED: {why}");
    }
    let ok = violations == 0
        && after.events_dropped == 0
        && after.persist_errors == 0
        && after.draining == 0
        && after.in_use == 0
        && (memory || after.events_persisted + after.events_discarded == after.events_emitted)
        && missing == 0
        && unfinished == 0
        && delivered == after.events_emitted
        && errors.total() == 0
        && panicked == 0
        && reopen.is_ok();
    let code = if interrupted {
        out!(
            "  result            interrupted{}",
            if ok {
                "; the checks of what ran passed"
            } else {
                "; FAILED checks"
            }
        );
        ExitCode::from(INTERRUPTED)
    } else if ok {
        out!("  result            ok: every subscriber saw every event of its trace, in order");
        ExitCode::SUCCESS
    } else {
        out!("  result            FAILED");
        ExitCode::FAILURE
    };
    if let Some(r) = &rate_report {
        r.print_verdict(ok && !interrupted);
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn capacity_is_refused_above_half_the_memory() {
        assert!(check_memory(1024, Some(1 << 30)).is_ok());
        // 1 GiB of memory: half is 512 MiB = 524,288 slots of 1 KiB.
        assert!(check_memory(524_288, Some(1 << 30)).is_ok());
        assert!(matches!(
            check_memory(524_289, Some(1 << 30)),
            Err(Failure::Usage(m)) if m.contains("more than half")
        ));
        assert!(check_memory(MAX_CAPACITY, None).is_ok());
    }

    #[test]
    fn rate_and_duration_make_a_schedule() {
        let o = RunOptions::parse(&args("--memory")).ok().unwrap();
        assert_eq!((o.traces, o.rate), (20_000, None));
        let o = RunOptions::parse(&args("--memory --rate 200"))
            .ok()
            .unwrap();
        let rate = Rate {
            per_sec: 200,
            duration_secs: DEFAULT_DURATION,
        };
        assert_eq!(o.rate, Some(rate));
        assert_eq!(o.traces, 200 * 30);
        let o = RunOptions::parse(&args("--duration 2 --rate 3"))
            .ok()
            .unwrap();
        let rate = o.rate.unwrap();
        assert_eq!(o.traces, 6);
        assert_eq!(rate.due(0), Duration::ZERO);
        assert_eq!(rate.due(3), Duration::from_secs(1));
        assert_eq!(rate.due(5), Duration::from_nanos(1_666_666_666));
        // Concurrency is lowered to the scheduled traces.
        let o = RunOptions::parse(&args("--rate 1 --duration 2 --concurrency 8"))
            .ok()
            .unwrap();
        assert_eq!(o.concurrency, 2);
        assert!(o.notes[0].contains("the 2 traces of --rate 1 for 2 s"));
    }

    #[test]
    fn rate_flags_that_cannot_work_are_usage_errors() {
        for (a, says) in [
            ("--rate 0", "--rate must be at least 1"),
            ("--rate 5 --duration 0", "--duration must be at least 1"),
            ("--duration 5", "--duration needs --rate"),
            (
                "--traces 5 --rate 5",
                "--traces and --rate cannot be used together",
            ),
            (
                "--rate 5 --traces 5",
                "--traces and --rate cannot be used together",
            ),
            (
                "--rate 5 --duration 999999999",
                "more than 31536000 seconds",
            ),
            (
                "--rate 18446744073709551615 --duration 2",
                "too many traces",
            ),
        ] {
            match RunOptions::parse(&args(a)) {
                Err(Failure::Usage(m)) => assert!(m.contains(says), "{a}: {m}"),
                other => panic!("{a}: {other:?}"),
            }
        }
    }

    fn report(completed: usize, dropped: u64, warm: u64, peak: u64) -> RateReport {
        RateReport {
            rate: Rate {
                per_sec: 100,
                duration_secs: 2,
            },
            completed,
            not_started: 200 - completed,
            window: Duration::from_secs(2),
            lag_max: Duration::ZERO,
            lag_end: Duration::ZERO,
            dropped,
            persist_errors: 0,
            rss_start: Some(warm),
            rss_warm: Some(warm),
            rss_end: Some(peak),
            rss_peak: Some(peak),
        }
    }

    #[test]
    fn the_verdict_needs_the_rate_no_drops_and_flat_memory() {
        assert!(report(200, 0, 1000, 1099).shortfalls(true).is_empty());
        // 198 of 200: 99%.
        assert!(report(198, 0, 1000, 1000).shortfalls(true).is_empty());
        let why = report(197, 0, 1000, 1000).shortfalls(true);
        assert!(why[0].contains("achieved 98.5 < 99% of 100"), "{why:?}");
        let why = report(200, 3, 1000, 1000).shortfalls(true);
        assert_eq!(why, ["3 events dropped"]);
        // 10% is allowed while under the slack (allocator noise)...
        assert!(report(200, 0, 1000, 1100).shortfalls(true).is_empty());
        // ... not above it.
        let mib = 1 << 20;
        let why = report(200, 0, 100 * mib, 110 * mib).shortfalls(true);
        assert_eq!(why, ["RSS grew 10.0% >= 10% (and 10 MiB)"]);
        assert!(
            report(200, 0, 100 * mib, 107 * mib)
                .shortfalls(true)
                .is_empty()
        );
        assert_eq!(report(200, 0, 1000, 1000).shortfalls(false).len(), 1);
        // Unknown memory (no /proc) is not held against the run.
        let mut r = report(200, 0, 1000, 1000);
        r.rss_peak = None;
        assert_eq!(r.rss_growth_pct(), None);
        assert!(r.shortfalls(true).is_empty());
    }

    #[test]
    fn rss_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            let (now, peak) = (rss().unwrap(), proc_status_bytes("VmHWM").unwrap());
            assert!(now > 0 && peak >= now, "{now} {peak}");
        }
    }

    #[test]
    fn the_default_driver_is_chosen_in_one_place() {
        let o = RunOptions::parse(&args("--traces 5")).ok().unwrap();
        assert_eq!(o.driver, DriverSpec::default_at(None));
        let o = RunOptions::parse(&args("--dir elsewhere")).ok().unwrap();
        assert_eq!(o.driver, DriverSpec::default_at(Some("elsewhere".into())));
        let s = ServeOptions::parse(&args("--dir elsewhere --addr 127.0.0.1:1"))
            .ok()
            .unwrap();
        assert_eq!(s.driver, DriverSpec::default_at(Some("elsewhere".into())));
    }
}
