//! The reference's benchmark scenarios (spec §8.13), written once against a
//! small trait so that the same function drives tracepool and the baseline.
//!
//! Included with `#[path]` by the main job (`src/main.rs`), the benches, the
//! profiling programs and the heap tests; not part of the library.
//!
//! Caller values are chosen not to allocate (numbers, booleans, `'static`
//! labels and messages), so that allocation counts measure the engine.

#![allow(dead_code)]

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use serde_json::Value;

/// The five rotating scenarios of the reference's `getTraceScenarios`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// 5 × (add `step_i`, complete).
    SequentialNodes,
    /// add root; parallel of 3; each branch completed from another thread.
    ParallelNodes,
    /// create space; 5 sets; add; complete.
    WithSpace,
    /// info (dropped: no root); add; debug; complete; add; warn; complete.
    WithLogging,
    /// space; add; info; complete; parallel A/B (per branch on another
    /// thread: info, set value, complete); add finalize; complete.
    ComplexFlow,
}

impl Scenario {
    /// All five, in the reference's order.
    pub const ALL: [Scenario; 5] = [
        Scenario::SequentialNodes,
        Scenario::ParallelNodes,
        Scenario::WithSpace,
        Scenario::WithLogging,
        Scenario::ComplexFlow,
    ];

    /// Command-line / report name.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::SequentialNodes => "sequential",
            Scenario::ParallelNodes => "parallel",
            Scenario::WithSpace => "space",
            Scenario::WithLogging => "logging",
            Scenario::ComplexFlow => "complex",
        }
    }

    /// Parses a name given by [`Scenario::name`].
    pub fn parse(s: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|x| x.name() == s)
    }
}

/// Log levels used by the scenarios.
#[derive(Debug, Clone, Copy)]
pub enum Lvl {
    Debug,
    Info,
    Warn,
}

/// The operations the scenarios need from an engine.
pub trait ScenarioEngine: Clone + Send + Sync + 'static {
    /// A trace handle.
    type Trace: Clone + Send + Sync + 'static;
    /// A node handle.
    type Node: Clone + Send + Sync + 'static;

    /// Creates a trace.
    fn create(&self) -> Self::Trace;
    /// Adds a node after the current ones.
    fn add(&self, t: &Self::Trace, input: Value, label: &'static str) -> Self::Node;
    /// Completes the current nodes.
    fn complete(&self, t: &Self::Trace, output: Value);
    /// Parallel branches under the current nodes.
    fn parallel(&self, t: &Self::Trace, labels: &[&'static str]) -> Vec<Self::Node>;
    /// Logs on the current nodes.
    fn log(&self, t: &Self::Trace, level: Lvl, msg: &'static str);
    /// Completes one node.
    fn node_complete(&self, n: &Self::Node, output: Value);
    /// Logs on one node.
    fn node_info(&self, n: &Self::Node, msg: &'static str);
    /// Creates a space, returning its id.
    fn create_space(&self, t: &Self::Trace, label: &'static str) -> String;
    /// Sets a space value.
    fn set_space_value(&self, t: &Self::Trace, space: &str, key: &'static str, v: Value);
    /// Reads a space value.
    fn get_space_value(&self, t: &Self::Trace, space: &str, key: &'static str) -> Option<Value>;
    /// Marks the trace complete.
    fn mark_complete(&self, t: &Self::Trace);
    /// Releases the trace.
    fn release(&self, t: Self::Trace);
}

/// Subscriptions, for the subscription benchmark and the task test.
pub trait SubscribeEngine: ScenarioEngine {
    /// A subscription.
    type Sub: Send + 'static;

    /// Subscribes to the trace's events (history, then live).
    fn subscribe(&self, t: &Self::Trace) -> Self::Sub;
    /// Reads events until the terminal `complete`, the end of the stream or
    /// `timeout`; returns how many were read.
    fn drain(&self, sub: &mut Self::Sub, timeout: Duration) -> usize;
}

/// The reference's simple cycle body (`BenchmarkSimpleTrace*`): add, complete.
pub fn simple<E: ScenarioEngine>(e: &E, t: &E::Trace) {
    e.add(t, Value::from(0u64), "step");
    e.complete(t, Value::Bool(true));
}

/// The reference's `BenchmarkSpaceOperations` body: a space, 10 sets, 10 gets.
pub fn space_ops<E: ScenarioEngine>(e: &E, t: &E::Trace) {
    let space = e.create_space(t, "Bench");
    for (i, key) in KEYS.iter().enumerate() {
        e.set_space_value(t, &space, key, num(i));
    }
    for key in KEYS.iter() {
        std::hint::black_box(e.get_space_value(t, &space, key));
    }
}

/// Runs branch work and waits for all of it.
pub trait BranchRunner {
    /// Runs every job (possibly on other threads) and returns when all are done.
    fn run(&self, jobs: Vec<Box<dyn FnOnce() + Send>>);
}

/// Runs branch jobs on the calling thread.
#[derive(Debug, Default, Clone, Copy)]
pub struct Inline;

impl BranchRunner for Inline {
    fn run(&self, jobs: Vec<Box<dyn FnOnce() + Send>>) {
        for j in jobs {
            j();
        }
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// How long an idle branch thread, and a caller waiting for its branches,
/// keep looking before they sleep.
const SPIN: Duration = Duration::from_micros(50);

/// A fixed set of long-lived threads that complete branches "from other
/// threads" (the reference starts a goroutine per branch).
///
/// Go's scheduler keeps an idle worker thread *spinning* for work for a
/// while before it parks it, and a goroutine waiting on a `WaitGroup`
/// parks only itself, not its thread; a hand-off between goroutines
/// therefore rarely wakes a sleeping OS thread. The same here: the threads
/// take jobs from one shared queue and look for the next job for [`SPIN`]
/// (yielding their CPU between looks) before they sleep, and the caller
/// waits for its branches the same way. Without it, each hand-off woke a
/// sleeping thread (a futex wake-up, tens of µs on a VM whose idle CPUs
/// halt), and the complex loops measured mostly that.
pub struct ThreadPool {
    shared: Arc<PoolShared>,
}

struct PoolShared {
    /// How long an idle thread looks for work before it sleeps.
    spin: Duration,
    queue: Mutex<std::collections::VecDeque<(Job, Arc<Latch>)>>,
    /// Jobs queued and not yet taken (read without the lock while spinning).
    queued: std::sync::atomic::AtomicUsize,
    /// Threads asleep on `cv`.
    sleeping: Mutex<usize>,
    cv: Condvar,
}

/// Counts unfinished jobs.
pub struct Latch {
    left: std::sync::atomic::AtomicUsize,
    done: Mutex<bool>,
    cv: Condvar,
}

/// Looks `ready()` up for `spin`, yielding between looks.
fn spin_until(spin: Duration, ready: impl Fn() -> bool) -> bool {
    let start = std::time::Instant::now();
    loop {
        if ready() {
            return true;
        }
        if start.elapsed() >= spin {
            return false;
        }
        std::thread::yield_now();
    }
}

impl PoolShared {
    /// The next job, waiting for one.
    fn take(&self) -> (Job, Arc<Latch>) {
        use std::sync::atomic::Ordering::SeqCst;
        loop {
            if self.queued.load(SeqCst) > 0 {
                let mut q = self.queue.lock().unwrap();
                if let Some(j) = q.pop_front() {
                    self.queued.fetch_sub(1, SeqCst);
                    return j;
                }
            }
            if spin_until(self.spin, || self.queued.load(SeqCst) > 0) {
                continue;
            }
            let mut sleeping = self.sleeping.lock().unwrap();
            *sleeping += 1;
            // Checked under `sleeping`'s lock, which `run` takes to notify:
            // a job queued before this check is seen, one queued after it
            // notifies this sleeper.
            while self.queued.load(SeqCst) == 0 {
                sleeping = self.cv.wait(sleeping).unwrap();
            }
            *sleeping -= 1;
        }
    }
}

impl ThreadPool {
    /// Starts `n` threads that spin for work for [`SPIN`] before they sleep
    /// (the Go-shaped harness of the benchmark loops).
    pub fn new(n: usize) -> ThreadPool {
        ThreadPool::with_spin(n, SPIN)
    }

    /// Starts `n` threads that sleep as soon as they are idle, and callers
    /// that sleep while they wait for their branches (the main job: a job
    /// run at a fixed rate must not burn its CPUs between traces).
    pub fn sleeping(n: usize) -> ThreadPool {
        ThreadPool::with_spin(n, Duration::ZERO)
    }

    fn with_spin(n: usize, spin: Duration) -> ThreadPool {
        let shared = Arc::new(PoolShared {
            spin,
            queue: Mutex::new(std::collections::VecDeque::new()),
            queued: std::sync::atomic::AtomicUsize::new(0),
            sleeping: Mutex::new(0),
            cv: Condvar::new(),
        });
        for i in 0..n.max(1) {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("branch-{i}"))
                .spawn(move || {
                    loop {
                        let (job, latch) = shared.take();
                        job();
                        latch.finish_one();
                    }
                })
                .expect("spawn branch thread");
        }
        ThreadPool { shared }
    }
}

impl Latch {
    fn finish_one(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        if self.left.fetch_sub(1, SeqCst) == 1 {
            *self.done.lock().unwrap() = true;
            self.cv.notify_all();
        }
    }

    fn wait(&self, spin: Duration) {
        use std::sync::atomic::Ordering::SeqCst;
        if spin_until(spin, || self.left.load(SeqCst) == 0) {
            return;
        }
        let mut done = self.done.lock().unwrap();
        while !*done {
            done = self.cv.wait(done).unwrap();
        }
    }
}

impl BranchRunner for ThreadPool {
    fn run(&self, jobs: Vec<Box<dyn FnOnce() + Send>>) {
        use std::sync::atomic::Ordering::SeqCst;
        let latch = Arc::new(Latch {
            left: std::sync::atomic::AtomicUsize::new(jobs.len()),
            done: Mutex::new(jobs.is_empty()),
            cv: Condvar::new(),
        });
        let n = jobs.len();
        {
            let mut q = self.shared.queue.lock().unwrap();
            for job in jobs {
                q.push_back((job, latch.clone()));
            }
            self.shared.queued.fetch_add(n, SeqCst);
        }
        // One wake-up per job, for as many threads as sleep.
        let sleeping = *self.shared.sleeping.lock().unwrap();
        for _ in 0..n.min(sleeping) {
            self.shared.cv.notify_one();
        }
        latch.wait(self.shared.spin);
    }
}

const STEPS: [&str; 5] = ["step_0", "step_1", "step_2", "step_3", "step_4"];
const KEYS: [&str; 10] = [
    "key_0", "key_1", "key_2", "key_3", "key_4", "key_5", "key_6", "key_7", "key_8", "key_9",
];

fn num(i: usize) -> Value {
    Value::from(i as u64)
}

/// Runs one scenario on a fresh trace `t` (not creating, completing-the-trace
/// or releasing it: callers do that).
pub fn run<E: ScenarioEngine, R: BranchRunner>(e: &E, t: &E::Trace, s: Scenario, runner: &R) {
    match s {
        Scenario::SequentialNodes => {
            for (i, label) in STEPS.iter().enumerate() {
                e.add(t, num(i), label);
                e.complete(t, num(i));
            }
        }
        Scenario::ParallelNodes => {
            e.add(t, Value::Null, "root");
            let nodes = e.parallel(t, &["Task 1", "Task 2", "Task 3"]);
            let jobs: Vec<Job> = nodes
                .into_iter()
                .enumerate()
                .map(|(i, n)| {
                    let e = e.clone();
                    Box::new(move || e.node_complete(&n, num(i))) as Job
                })
                .collect();
            runner.run(jobs);
        }
        Scenario::WithSpace => {
            let space = e.create_space(t, "Context");
            for (i, key) in KEYS.iter().take(5).enumerate() {
                e.set_space_value(t, &space, key, num(i));
            }
            e.add(t, Value::Null, "process");
            e.complete(t, Value::Bool(true));
        }
        Scenario::WithLogging => {
            e.log(t, Lvl::Info, "before root");
            e.add(t, Value::Null, "step1");
            e.log(t, Lvl::Debug, "debugging");
            e.complete(t, Value::Bool(true));
            e.add(t, Value::Null, "step2");
            e.log(t, Lvl::Warn, "warning");
            e.complete(t, Value::Bool(true));
        }
        Scenario::ComplexFlow => {
            let space = e.create_space(t, "Shared");
            e.add(t, Value::Null, "prepare");
            e.log(t, Lvl::Info, "prepared");
            e.complete(t, Value::Bool(true));
            let nodes = e.parallel(t, &["Task A", "Task B"]);
            let space = Arc::new(space);
            let jobs: Vec<Job> = nodes
                .into_iter()
                .enumerate()
                .map(|(i, n)| {
                    let e = e.clone();
                    let space = space.clone();
                    let t = t.clone();
                    Box::new(move || {
                        e.node_info(&n, "branch working");
                        e.set_space_value(&t, &space, KEYS[i], num(i));
                        e.node_complete(&n, num(i));
                    }) as Job
                })
                .collect();
            runner.run(jobs);
            e.add(t, Value::Null, "finalize");
            e.complete(t, Value::Bool(true));
        }
    }
}

/// Adapter: tracepool's public API.
impl ScenarioEngine for tracepool::Engine {
    type Trace = tracepool::Trace;
    type Node = tracepool::Node;

    fn create(&self) -> tracepool::Trace {
        self.create(tracepool::TraceOptions::new())
            .expect("create trace")
    }
    fn add(&self, t: &tracepool::Trace, input: Value, label: &'static str) -> tracepool::Node {
        t.add(input, tracepool::NodeOptions::new().label(label))
            .expect("add")
    }
    fn complete(&self, t: &tracepool::Trace, output: Value) {
        t.complete(Some(output)).expect("complete");
    }
    fn parallel(&self, t: &tracepool::Trace, labels: &[&'static str]) -> Vec<tracepool::Node> {
        t.parallel(
            labels
                .iter()
                .map(|l| {
                    tracepool::ParallelInput::new(
                        Value::Null,
                        tracepool::NodeOptions::new().label(*l),
                    )
                })
                .collect(),
        )
        .expect("parallel")
    }
    fn log(&self, t: &tracepool::Trace, level: Lvl, msg: &'static str) {
        match level {
            Lvl::Debug => t.debug(msg),
            Lvl::Info => t.info(msg),
            Lvl::Warn => t.warn(msg),
        };
    }
    fn node_complete(&self, n: &tracepool::Node, output: Value) {
        n.complete(Some(output)).expect("node complete");
    }
    fn node_info(&self, n: &tracepool::Node, msg: &'static str) {
        n.info(msg);
    }
    fn create_space(&self, t: &tracepool::Trace, label: &'static str) -> String {
        t.create_space(tracepool::SpaceOptions::new().label(label))
            .expect("create space")
            .id
    }
    fn set_space_value(&self, t: &tracepool::Trace, space: &str, key: &'static str, v: Value) {
        t.set_space_value(space, key, v).expect("set space value");
    }
    fn get_space_value(
        &self,
        t: &tracepool::Trace,
        space: &str,
        key: &'static str,
    ) -> Option<Value> {
        t.get_space_value(space, key).expect("get space value")
    }
    fn mark_complete(&self, t: &tracepool::Trace) {
        t.mark_complete().expect("mark complete");
    }
    fn release(&self, t: tracepool::Trace) {
        t.release().expect("release");
    }
}

impl SubscribeEngine for tracepool::Engine {
    type Sub = tracepool::Subscription;

    fn subscribe(&self, t: &tracepool::Trace) -> tracepool::Subscription {
        t.subscribe().expect("subscribe")
    }

    /// Reads until the stream ends. tracepool's stream ends by itself after
    /// `complete` (or after release), so `timeout` is not needed: callers
    /// mark the trace complete or release it first.
    fn drain(&self, sub: &mut tracepool::Subscription, _timeout: Duration) -> usize {
        let mut n = 0;
        while let Some(d) = sub.blocking_recv() {
            if let tracepool::Delivery::Event(_) = d {
                n += 1;
            }
        }
        n
    }
}
