//! Encoding later yields what was true at emission: every event encoded
//! lazily (on first read, after the trace went on changing) is byte for byte
//! the event encoded the moment it was recorded; the node payload is what
//! serde_json writes for the reference's `TraceNode`; and every event's
//! bytes are serde_json's compact form, with offsets on the right fields.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::state::{Limits, Target, TraceState};
use super::tree::{NodeSpec, NodeSpecs};
use crate::event::log::read_frozen;
use crate::event::value::{self, Val};
use crate::event::wire_buf::RefCache;
use crate::event::{Cursor, Delivery, Event, EventKind};
use crate::id::TraceId;
use crate::model::{Level, NodeStatus};
use crate::options::{NodeOptions, SpaceOptions, TraceOptions};

fn limits(max_log_bytes: usize) -> Limits {
    Limits {
        history: 100_000,
        subscriber_buffer: 10,
        pending: 100_000,
        persists: true,
        documents: false,
        driver: "memory",
        max_nodes: 10_000,
        max_log_bytes,
        max_subscribers: 10,
        max_space_entries: 1_000,
        max_trace_space_entries: 10_000,
        max_spaces: 10,
        pending_bytes: 1 << 30,
        leases: false,
    }
}

fn state(max_log_bytes: usize) -> TraceState {
    let mut st = TraceState::new(limits(max_log_bytes), Arc::default());
    st.events.eager = Some(Vec::new());
    st.start(TraceId::parse("t-1").unwrap(), TraceOptions::new(), 1_000);
    st
}

fn spec(input: &Value, opts: NodeOptions) -> NodeSpec {
    NodeSpec::new(input, opts).unwrap()
}

fn j(v: Value) -> Val {
    value::json(&v).unwrap()
}

fn text(s: &str) -> Val {
    value::text(&[s])
}

/// A chainable log line, as a handle writes it.
fn log(st: &mut TraceState, t: Target, level: Level, msg: &str, mut data: Option<Val>) {
    st.log(t, level, &mut value::LogText::new(msg), &mut data);
}

/// Every retained event, encoded now (lazily), against the eager copies.
fn assert_lazy_equals_eager(st: &mut TraceState) -> Vec<Event> {
    let (log, src) = st.split();
    let lazy = log.snapshot(Cursor::Seq(0), &src);
    let eager = st.events.eager.as_ref().unwrap();
    assert_eq!(lazy.len(), eager.len(), "history retains every event");
    for (l, e) in lazy.iter().zip(eager) {
        assert_eq!(l.seq, e.seq);
        assert_eq!(
            l.to_json(),
            e.to_json(),
            "event {} ({}) changed between emission and encoding",
            e.seq,
            e.kind
        );
    }
    lazy
}

#[test]
fn every_kind_encoded_late_is_what_it_was_when_emitted() {
    // Small log budget: old lines leave memory (their events are encoded
    // first).
    let mut st = state(2_000);
    let root = st
        .add(&mut spec(
            &json!({"q": "a\"b"}),
            NodeOptions::new().label("Root").metadata("m", 1),
        ))
        .unwrap();
    let child = st
        .add(&mut spec(&json!(7), NodeOptions::new().label("Child")))
        .unwrap();
    st.set_output(Target::Node(child), Some(j(json!({"first": true}))))
        .unwrap();
    st.set_metadata(Target::Node(child), "k", j(json!("v1")))
        .unwrap();
    let mut specs: NodeSpecs = (0..3)
        .map(|i| spec(&json!(i), NodeOptions::new().label("Branch")))
        .collect();
    let (first, count) = st.parallel(None, &mut specs).unwrap();
    log(
        &mut st,
        Target::Current,
        Level::Info,
        "on every branch",
        Some(j(json!({"n": 1}))),
    );
    st.set_status(first, NodeStatus::Skipped).unwrap();
    st.fail(
        Target::Node(first + 1),
        &text("boom"),
        &text("Node failed: boom"),
    )
    .unwrap();
    st.complete(Target::Node(first + 2), Some(Some(j(json!([1, 2])))))
        .unwrap();
    let space = st
        .create_space(SpaceOptions::new().label("Mem").metadata("x", true))
        .unwrap();
    st.set_space_value(&space.id, "key", text("key"), j(json!(1)))
        .unwrap();
    st.set_space_value(&space.id, "key", text("key"), j(json!(2)))
        .unwrap();
    st.set_space_value(&space.id, "other", text("other"), j(json!("o")))
        .unwrap();
    st.delete_space_value(&space.id, "other", text("other"))
        .unwrap();
    for i in 0..40 {
        log(
            &mut st,
            Target::Node(root),
            Level::Warn,
            &format!("line {i} {}", "x".repeat(40)),
            None,
        );
    }
    // Everything the records could wrongly point at changes afterwards.
    st.set_output(Target::Node(child), Some(j(json!({"second": true}))))
        .unwrap();
    st.set_metadata(Target::Node(child), "k", j(json!("v2")))
        .unwrap();
    st.set_metadata(Target::Node(root), "m", j(json!(2)))
        .unwrap();
    st.set_space_value(&space.id, "key", text("key"), j(json!(3)))
        .unwrap();
    st.clear_space_values(&space.id).unwrap();
    st.add(&mut spec(&Value::Null, NodeOptions::new().label("After")))
        .unwrap();
    // Lazily encode part now, the rest after more changes.
    {
        let (log, src) = st.split();
        log.snapshot(Cursor::Seq(30), &src);
    }
    st.delete_space(&space.id).unwrap();
    assert!(st.mark_cancelled(&text("stop")));
    assert!(st.stat_logs_evicted > 0, "log lines left memory");
    let lazy = assert_lazy_equals_eager(&mut st);
    let kinds: HashSet<EventKind> = lazy.iter().map(|e| e.kind).collect();
    for k in EventKind::ALL {
        assert!(kinds.contains(&k), "no {k} event in the scenario");
    }
    assert_eq!(count, 3);
}

#[test]
fn lazy_encoding_under_concurrent_mutation_matches_eager() {
    let st = Arc::new(Mutex::new(state(1 << 20)));
    let (root, space) = {
        let mut s = st.lock().unwrap();
        let root = s
            .add(&mut spec(&json!("root"), NodeOptions::new()))
            .unwrap();
        let space = s.create_space(SpaceOptions::new().label("S")).unwrap();
        (root, space.id)
    };
    std::thread::scope(|sc| {
        for t in 0..3 {
            let st = &st;
            let space = &space;
            sc.spawn(move || {
                for i in 0..200 {
                    let mut s = st.lock().unwrap();
                    let n = s
                        .add_child(
                            root,
                            &mut spec(&json!({"t": t, "i": i}), NodeOptions::new().label("c")),
                        )
                        .unwrap();
                    log(
                        &mut s,
                        Target::Node(n),
                        Level::Info,
                        "work",
                        Some(j(json!(i))),
                    );
                    s.set_output(Target::Node(root), Some(j(json!([t, i]))))
                        .unwrap();
                    s.set_metadata(Target::Node(n), "i", j(json!(i))).unwrap();
                    s.set_space_value(space, "hot", text("hot"), j(json!(i)))
                        .unwrap();
                    s.complete(Target::Node(n), Some(Some(j(json!(t)))))
                        .unwrap();
                    drop(s);
                    std::thread::yield_now();
                }
            });
        }
        // A reader encoding as it goes, from moving cursors.
        let st = &st;
        sc.spawn(move || {
            for k in 0..300u64 {
                let mut s = st.lock().unwrap();
                let (log, src) = s.split();
                log.snapshot(Cursor::Seq(k * 7), &src);
                drop(s);
                std::thread::yield_now();
            }
        });
    });
    let mut s = st.lock().unwrap();
    let lazy = assert_lazy_equals_eager(&mut s);
    assert!(lazy.len() > 3 * 200 * 6);
}

/// What the writers of [`run_every_kind_concurrently`] share, under one lock
/// with the trace.
struct Scene {
    st: TraceState,
    /// Every node made so far: any writer adds under, updates, finishes
    /// and logs on any of them.
    nodes: Vec<u32>,
    /// The space every writer writes into; writers delete it and make the
    /// next one as they go.
    space: String,
    /// Rounds each writer started (and got through the first half of).
    rounds: [usize; WRITERS],
    /// Events recorded and evicted from the history within one writer's
    /// critical section (nobody could read them in between): they were
    /// encoded as records when they left the history.
    evicted_as_records: u64,
}

const WRITERS: usize = 3;
/// The finishing writer ends the trace once every other writer did this
/// many rounds (they go on until the trace is finished).
const ROUNDS_BEFORE_FINISH: usize = 40;

/// The lazily encoded `events` against the eager encodings taken when each
/// was recorded (`eager[seq - 1]`). Returns how many were compared.
fn assert_match_eager(events: &[Event], eager: &[Event], path: &str) -> usize {
    for e in events {
        let want = &eager[usize::try_from(e.seq).unwrap() - 1];
        assert_eq!(want.seq, e.seq);
        assert_eq!(
            e.to_json(),
            want.to_json(),
            "{path}: event {} ({}) changed between emission and encoding",
            e.seq,
            e.kind
        );
    }
    events.len()
}

/// One writer's round in two critical sections (readers and other writers
/// run in between). Returns false once the trace is finished.
fn writer_round(scene: &Mutex<Scene>, t: usize, i: usize) -> bool {
    let (n, first) = {
        let mut g = scene.lock().unwrap();
        let sc = &mut *g;
        if sc.st.finished {
            return false;
        }
        let before = sc.st.events.next_seq();
        let st = &mut sc.st;
        let pick = |k: usize| sc.nodes[(i * 31 + t * 17 + k * 7) % sc.nodes.len()];
        // node_start (one node) under another writer's node.
        let n = st
            .add_child(
                pick(0),
                &mut spec(
                    &json!({"t": t, "i": i}),
                    NodeOptions::new().label("child").metadata("m", i),
                ),
            )
            .unwrap();
        // node_start of three branches in one event.
        let mut specs: NodeSpecs = (0..3)
            .map(|b| {
                spec(
                    &json!([t, i, b]),
                    NodeOptions::new().label("branch").metadata("b", b),
                )
            })
            .collect();
        let (first, count) = st.parallel(Some(n), &mut specs).unwrap();
        assert_eq!(count, 3);
        log(
            st,
            Target::Node(n),
            Level::Info,
            "work",
            Some(j(json!({"t": t, "i": i}))),
        );
        log(
            st,
            Target::Node(pick(1)),
            Level::Debug,
            "on another's node",
            None,
        );
        // The trace's cursor: `add` auto-completes the current nodes,
        // `parallel(None)` moves the cursor to its branches.
        match i % 4 {
            0 => {
                st.add(&mut spec(&json!(i), NodeOptions::new().label("step")))
                    .unwrap();
            }
            2 => {
                let mut specs: NodeSpecs = (0..2)
                    .map(|b| spec(&json!(b), NodeOptions::new().label("fan")))
                    .collect();
                st.parallel(None, &mut specs).unwrap();
            }
            _ => {}
        }
        log(st, Target::Current, Level::Warn, "on the cursor", None);
        let space = sc.space.clone();
        let key = format!("k{t}");
        st.set_space_value(&space, &key, text(&key), j(json!({"t": t, "i": i})))
            .unwrap();
        st.set_space_value(&space, "shared", text("shared"), j(json!([t, i])))
            .unwrap();
        sc.nodes.extend([n, first, first + 1, first + 2]);
        sc.count_evicted_records(before, false);
        sc.rounds[t] += 1;
        (n, first)
    };
    std::thread::yield_now();
    let mut g = scene.lock().unwrap();
    let sc = &mut *g;
    if sc.st.finished {
        return false;
    }
    let before = sc.st.events.next_seq();
    let st = &mut sc.st;
    let pick = |k: usize| sc.nodes[(i * 13 + t * 5 + k * 11) % sc.nodes.len()];
    // node_updated of nodes whose earlier events may not be encoded yet.
    st.set_output(Target::Node(pick(0)), Some(j(json!({"by": t, "i": i}))))
        .unwrap();
    st.set_metadata(Target::Node(pick(1)), "touched", j(json!([t, i])))
        .unwrap();
    // Every way a node ends, on this round's nodes and on others'.
    for (k, m) in [first, first + 1, first + 2, n, pick(2), pick(3)]
        .into_iter()
        .enumerate()
    {
        if st.tree.node(m).status.is_terminal() {
            continue;
        }
        match (k + i) % 5 {
            0 => st.set_status(m, NodeStatus::Skipped).unwrap(),
            1 => st
                .fail(
                    Target::Node(m),
                    &text(&format!("boom {t} {i}")),
                    &text(&format!("Node failed: boom {t} {i}")),
                )
                .unwrap(),
            2 => st
                .complete(Target::Node(m), Some(Some(j(json!({"done": [t, i]})))))
                .unwrap(),
            3 => st.complete(Target::Node(m), None).unwrap(),
            _ => st.set_status(m, NodeStatus::Failed).unwrap(),
        }
    }
    // What the terminal events refer to changes after them: output,
    // metadata, children, log lines.
    for m in [first + 1, first + 2, n] {
        st.set_output(Target::Node(m), Some(j(json!({"after": [t, i]}))))
            .unwrap();
        st.set_metadata(Target::Node(m), "after", j(json!(i)))
            .unwrap();
    }
    st.add_child(
        first + 2,
        &mut spec(&json!(null), NodeOptions::new().label("late")),
    )
    .unwrap();
    log(
        st,
        Target::Node(first + 1),
        Level::Error,
        "after the failure",
        None,
    );
    // Two long lines: the second pushes the first out of the log budget
    // while its record is in the history, not encoded yet.
    let long = format!("{} {t}/{i}", "x".repeat(2_500));
    log(st, Target::Node(first), Level::Info, &long, None);
    log(st, Target::Node(n), Level::Info, &long, Some(j(json!(i))));
    // memory_delete of a key, then the key again; now and then every key.
    let space = sc.space.clone();
    let key = format!("k{t}");
    st.delete_space_value(&space, &key, text(&key)).unwrap();
    st.set_space_value(&space, &key, text(&key), j(json!(-1)))
        .unwrap();
    if i.is_multiple_of(3) {
        st.clear_space_values(&space).unwrap();
    }
    // space_deleted of the space every writer writes into (its memory_*
    // events may not be encoded yet), and space_created of the next one.
    let rotated = i % 4 == t % 4;
    if rotated {
        st.delete_space(&space).unwrap();
        let next = st
            .create_space(
                SpaceOptions::new()
                    .label(format!("S {t}/{i}"))
                    .metadata("by", t),
            )
            .unwrap();
        st.set_space_value(&next.id, "first", text("first"), j(json!(i)))
            .unwrap();
        sc.space = next.id;
    }
    sc.count_evicted_records(before, rotated);
    true
}

impl Scene {
    /// Counts the events recorded since `before` that already left the
    /// history in this critical section, and were not log lines encoded
    /// because their line left memory, nor events encoded because a space
    /// was deleted (`encoded_all`): the history encoded them as records.
    fn count_evicted_records(&mut self, before: u64, encoded_all: bool) {
        if encoded_all {
            return;
        }
        let oldest = self.st.events.seq_at_time(i64::MIN);
        let eager = self.st.events.eager.as_ref().unwrap();
        self.evicted_as_records += (before..oldest)
            .filter(|&s| eager[usize::try_from(s).unwrap() - 1].kind != EventKind::LogAdded)
            .count() as u64;
    }
}

/// Every kind the engine emits, recorded while other threads change the
/// nodes, spaces and log lines the records refer to, with a history of 8
/// events and a small log budget: events are encoded by a worker taking
/// the write-behind queue, by `events()`, by a subscriber, at release, and
/// as they leave the history or their line leaves memory — and each is
/// byte for byte its eager encoding at emission. The trace ends (completed,
/// or cancelled with its unfinished nodes) while the other writers run.
fn run_every_kind_concurrently(cancel: bool) {
    let lim = Limits {
        history: 8,
        max_nodes: 1 << 20,
        pending: 1 << 20,
        ..limits(4_000)
    };
    let mut st = TraceState::new(lim, Arc::default());
    st.events.eager = Some(Vec::new());
    st.start(
        TraceId::parse("t-every").unwrap(),
        TraceOptions::new(),
        1_000,
    );
    let root = st
        .add(&mut spec(&json!("root"), NodeOptions::new().label("root")))
        .unwrap();
    let space = st.create_space(SpaceOptions::new().label("S")).unwrap().id;
    let scene = Mutex::new(Scene {
        st,
        nodes: vec![root],
        space,
        rounds: [0; WRITERS],
        evicted_as_records: 0,
    });
    let writers_done = AtomicBool::new(false);
    // Rounds wait for the readers' turns (a lock that favours the writers
    // would leave the readers nothing to encode but the driver's queue).
    let reader_turns = AtomicUsize::new(0);
    // What the readers got: the worker's batches (every event, once, in
    // order), `events()` snapshots, the subscriber's deliveries.
    let (driver, seen, spilled, sub) = std::thread::scope(|sc| {
        let writers: Vec<_> = (0..WRITERS)
            .map(|t| {
                let (scene, reader_turns) = (&scene, &reader_turns);
                // Whether the writer stopped because it found the trace
                // finished.
                sc.spawn(move || {
                    for i in 0..ROUNDS_BEFORE_FINISH * 20 {
                        while reader_turns.load(Ordering::Acquire) < 2 * i {
                            std::thread::yield_now();
                        }
                        if t == 0 {
                            let mut g = scene.lock().unwrap();
                            if g.rounds[1..].iter().all(|&r| r >= ROUNDS_BEFORE_FINISH) {
                                // `complete`, amid the other writers' rounds.
                                let st = &mut g.st;
                                if cancel {
                                    assert!(st.mark_cancelled(&text("stop")));
                                } else {
                                    assert!(st.mark_complete());
                                }
                                return true;
                            }
                        }
                        if !writer_round(scene, t, i) {
                            return true;
                        }
                    }
                    false
                })
            })
            .collect();
        let (scene, writers_done, reader_turns) = (&scene, &writers_done, &reader_turns);
        let reader = sc.spawn(move || {
            let (key, shared, mut cursor) = {
                let mut g = scene.lock().unwrap();
                g.st.events.add_reader(Cursor::Seq(0)).unwrap()
            };
            let (mut pin, mut refs) = (None, RefCache::default());
            let mut buf = VecDeque::new();
            let (mut driver, mut seen, mut spilled) = (Vec::new(), Vec::new(), 0);
            let mut k = 0u64;
            while !writers_done.load(Ordering::Acquire) {
                k += 1;
                reader_turns.fetch_add(1, Ordering::Release);
                let mut g = scene.lock().unwrap();
                let (log, src) = g.st.split();
                match k % 3 {
                    // A worker takes the write-behind queue; what is older
                    // than the history left it before being taken.
                    0 => {
                        let oldest = log.seq_at_time(i64::MIN);
                        let mut batch = VecDeque::new();
                        log.take_pending(&mut batch, &src);
                        spilled += batch.iter().filter(|e| e.seq < oldest).count();
                        driver.extend(batch);
                    }
                    // `events()` from a moving cursor.
                    1 => {
                        let from = log.next_seq().saturating_sub(k % 11);
                        seen.extend(log.snapshot(Cursor::Seq(from), &src));
                    }
                    // A subscriber (lagging: it skips what it fell behind).
                    _ => {
                        log.read(
                            key,
                            &mut cursor,
                            &mut pin,
                            &mut refs,
                            64,
                            &mut buf,
                            None,
                            &src,
                        );
                    }
                }
                drop(g);
                seen.extend(buf.drain(..).filter_map(|d| match d {
                    Delivery::Event(e) => Some(e),
                    Delivery::Lagged { .. } => None,
                }));
                std::thread::yield_now();
            }
            (driver, seen, spilled, (shared, cursor, refs))
        });
        let stopped: Vec<bool> = writers.into_iter().map(|w| w.join().unwrap()).collect();
        writers_done.store(true, Ordering::Release);
        assert_eq!(stopped, [true; WRITERS], "the trace ended amid the rounds");
        reader.join().unwrap()
    });
    let mut sc = scene.into_inner().unwrap();
    assert!(sc.st.finished);
    let (mut driver, mut seen) = (driver, seen);
    let (shared, mut cursor, mut refs) = sub;
    // Release: the subscriber is detached with the retained history
    // (encoded now), then the rest of the queue goes to the driver.
    let (log, src) = sc.st.split();
    log.detach_readers(&src);
    if let Some(frozen) = shared.take_detached().and_then(|d| d.frozen) {
        let mut buf = VecDeque::new();
        while read_frozen(&frozen, &mut cursor, 64, &mut buf, &mut refs).delivered > 0 {}
        seen.extend(buf.into_iter().filter_map(|d| match d {
            Delivery::Event(e) => Some(e),
            Delivery::Lagged { .. } => None,
        }));
    }
    seen.extend(log.snapshot(Cursor::Seq(0), &src));
    let mut last = VecDeque::new();
    log.take_pending(&mut last, &src);
    driver.extend(last);
    let eager = sc.st.events.eager.as_ref().unwrap();

    // The driver got every event once, in order.
    for (k, e) in driver.iter().enumerate() {
        assert_eq!(
            e.seq,
            k as u64 + 1,
            "the driver gets every event once, in order"
        );
    }
    assert_eq!(driver.len(), eager.len(), "the driver gets every event");
    assert_match_eager(&driver, eager, "write-behind queue");
    assert!(assert_match_eager(&seen, eager, "readers") > 0);

    // Every kind, and every shape of it, went through it.
    let kinds: HashSet<EventKind> = driver.iter().map(|e| e.kind).collect();
    for k in EventKind::ALL {
        assert!(kinds.contains(&k), "no {k} event under concurrent mutation");
    }
    let data = |k: EventKind| driver.iter().filter(move |e| e.kind == k).map(Event::data);
    assert!(
        data(EventKind::NodeStart).any(|d| d["nodes"].as_array().is_some_and(|a| a.len() == 3))
    );
    assert!(data(EventKind::NodeStart).any(|d| d["node"].is_object()));
    assert!(data(EventKind::NodeFailed).any(|d| d["status"] == "failed"));
    assert!(data(EventKind::MemoryDelete).any(|d| d["key"].is_string()));
    assert!(data(EventKind::MemoryDelete).any(|d| d["cleared"] == true));
    assert!(data(EventKind::MemoryAdd).any(|d| d["item"]["title"].is_string()));
    let end = driver.last().unwrap();
    assert_eq!(end.kind, EventKind::Complete);
    let status = if cancel { "cancelled" } else { "completed" };
    assert_eq!(end.data()["status"], status);
    if cancel {
        assert!(data(EventKind::NodeFailed).any(|d| d["status"] == "cancelled"));
    }
    // Every writer did its rounds before the trace ended.
    let rounds = sc.rounds;
    assert!(
        rounds[1..].iter().all(|&r| r >= ROUNDS_BEFORE_FINISH),
        "{rounds:?}"
    );

    // The history's eviction encoded records, and they reached the driver.
    assert!(sc.evicted_as_records > 0, "no record encoded on eviction");
    assert!(
        spilled > 0,
        "no event left the history before the driver took it"
    );
    assert!(sc.st.stat_logs_evicted > 0, "log lines left memory");
}

/// [`run_every_kind_concurrently`], the trace completed at the end.
#[test]
fn every_kind_under_concurrent_mutation_and_eviction_matches_eager() {
    run_every_kind_concurrently(false);
}

/// [`run_every_kind_concurrently`], the trace cancelled at the end (its
/// unfinished nodes get `node_failed` with status `cancelled`).
#[test]
fn every_kind_under_concurrent_mutation_with_cancel_matches_eager() {
    run_every_kind_concurrently(true);
}

/// The hand-written node payload is byte for byte what serde_json writes
/// for the reference's `TraceNode` shape, escaping included.
#[test]
fn node_payload_matches_serde_json() {
    let mut st = state(1 << 20);
    let root = st
        .add(&mut spec(
            &json!({"q": "a\"b"}),
            NodeOptions::new().label("Root"),
        ))
        .unwrap();
    let n = st
        .add(&mut spec(
            &json!(7),
            NodeOptions::new()
                .label("L \"quoted\"\n\\ ünï")
                .node_type("t")
                .icon("i")
                .description("d")
                .metadata("m", 1)
                .auto_complete_parent(false),
        ))
        .unwrap();
    st.set_output(Target::Node(n), Some(j(json!([1, {"x": null}]))))
        .unwrap();
    let (rid, nid) = (st.tree.node(root).id, st.tree.node(n).id);
    let r = st.tree.node(n);
    let (created, updated) = (r.created_at, r.updated_at);
    let ev = assert_lazy_equals_eager(&mut st).pop().unwrap();
    assert_eq!(ev.kind, EventKind::NodeUpdated);
    let want = json!({"node": {
        "id": nid.as_str(),
        "parent_ids": [rid.as_str()],
        "children": [],
        "label": "L \"quoted\"\n\\ ünï",
        "type": "t",
        "icon": "i",
        "description": "d",
        "metadata": {"m": 1},
        "auto_complete_parent": false,
        "status": "running",
        "input": 7,
        "output": [1, {"x": null}],
        "created_at": created,
        "start_time": created,
        "end_time": 0,
        "updated_at": updated,
    }});
    assert_eq!(ev.data_json(), serde_json::to_string(&want).unwrap());
}

/// Every event kind, with strings that need escaping, long strings (longer
/// than an arena chunk too), unicode and big numbers: the bytes written are
/// serde_json's own compact form of what they parse to, and the envelope
/// offsets point at the fields they name.
#[test]
fn every_kind_is_serde_json_compact_form() {
    let weird = "q\"u\\o\te\n\r\u{1}\u{1f}\u{7f} ünïcode 😀 \u{2028}";
    let mut st = TraceState::new(limits(1 << 30), Arc::default());
    st.start(
        TraceId::parse("trace-every_kind").unwrap(),
        TraceOptions::new(),
        1_000,
    );
    let mut roots = Vec::new();
    for round in 0..3usize {
        let long = format!("{}{weird}", "L".repeat(30 + round * 40_000));
        let root = st
            .add(&mut spec(
                &json!({"q": weird, "big": u64::MAX, "neg": i64::MIN, "f": 1.5e300}),
                NodeOptions::new()
                    .label(weird.to_string())
                    .node_type(if round == 0 { "" } else { "llm" })
                    .icon("🔥")
                    .description(long.clone())
                    .metadata("k", json!("v\n")),
            ))
            .unwrap();
        roots.push(root);
        let child = st
            .add_child(
                root,
                &mut spec(
                    &json!(7),
                    NodeOptions::new()
                        .label("Child")
                        .auto_complete_parent(round == 1),
                ),
            )
            .unwrap();
        log(
            &mut st,
            Target::Node(child),
            Level::Debug,
            "plain",
            Some(j(json!({"n": 1}))),
        );
        log(&mut st, Target::Node(child), Level::Warn, weird, None);
        log(&mut st, Target::Node(child), Level::Error, &long, None);
        log(&mut st, Target::Node(child), Level::Info, "ünï", None);
        st.set_output(Target::Node(child), Some(j(json!({"out": weird}))))
            .unwrap();
        st.set_metadata(Target::Node(child), "k2", j(json!([1, {"x": "y"}])))
            .unwrap();
        st.complete(Target::Node(child), Some(Some(j(json!(u64::MAX)))))
            .unwrap();
        let mut specs: NodeSpecs = (0..3)
            .map(|i| spec(&json!(i), NodeOptions::new().label(long.clone())))
            .collect();
        let (first, _) = st.parallel(Some(root), &mut specs).unwrap();
        st.set_status(first, NodeStatus::Skipped).unwrap();
        st.fail(Target::Node(first + 1), &text(weird), &text(&long))
            .unwrap();
        st.complete(Target::Node(first + 2), None).unwrap();
        let space = st
            .create_space(
                SpaceOptions::new()
                    .label(if round == 1 { "" } else { weird })
                    .metadata("x", true),
            )
            .unwrap();
        st.set_space_value(&space.id, weird, text(weird), j(json!({"v": long})))
            .unwrap();
        st.set_space_value(&space.id, weird, text(weird), j(json!(-2)))
            .unwrap();
        st.set_space_value(&space.id, "o", text("o"), j(json!("o")))
            .unwrap();
        st.delete_space_value(&space.id, "o", text("o")).unwrap();
        st.clear_space_values(&space.id).unwrap();
        st.delete_space(&space.id).unwrap();
        st.complete(Target::Node(root), Some(Some(j(json!(weird)))))
            .unwrap();
    }
    assert!(st.mark_cancelled(&text(weird)));
    let (log, src) = st.split();
    let events = log.snapshot(Cursor::Seq(0), &src);
    let mut kinds = HashSet::new();
    for ev in &events {
        kinds.insert(ev.kind);
        let v: Value = serde_json::from_slice(&ev.bytes).unwrap();
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            ev.to_json(),
            "event {} ({})",
            ev.seq,
            ev.kind
        );
        assert_eq!(v["type"], ev.kind.as_str());
        assert_eq!(v["seq"], ev.seq);
        assert_eq!(v["timestamp"], ev.timestamp);
        assert_eq!(v["trace_id"], ev.trace_id());
        assert_eq!(v["node_id"], ev.node_id());
        assert_eq!(v["space_id"], ev.space_id());
        assert_eq!(serde_json::to_string(&v["data"]).unwrap(), ev.data_json());
    }
    for k in EventKind::ALL {
        assert!(kinds.contains(&k), "no {k} event");
    }
    let cancelled = events.last().unwrap().data();
    assert_eq!(cancelled["status"], "cancelled");
    assert!(events.iter().any(|e| e.data_json().contains("\\u0001")));
}
