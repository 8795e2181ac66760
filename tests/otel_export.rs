//! OpenTelemetry export (feature `otel`) through the SDK's exporters: the
//! spans of the reference's complex scenario equal the trace's nodes,
//! parents and events; each release path exports a trace once; statuses,
//! ids, links, limits; the bounded queue and its drop counter.

#[path = "../benches/support/scenarios.rs"]
#[allow(unreachable_pub)]
mod scenarios;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{SpanId, Status, TraceId};
use opentelemetry::{KeyValue, Value as OtelValue};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData, SpanExporter, SpanLimits};
use serde_json::json;
use sha2::{Digest, Sha256};

use tracepool::{Engine, Exhausted, NodeOptions, NodeStatus, TraceOptions};

const WAIT: Duration = Duration::from_secs(20);

fn builder() -> tracepool::EngineBuilder {
    Engine::builder()
        .capacity(8)
        .workers(1)
        .on_exhausted(Exhausted::Error)
        .memory()
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a OtelValue> {
    attrs
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

fn trace_attr(span: &SpanData) -> String {
    attr(&span.attributes, "tracepool.trace_id")
        .expect("tracepool.trace_id")
        .as_str()
        .into_owned()
}

fn ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Independent derivations of the ids (not through the crate's helpers).
fn expected_trace_id(id: &str) -> TraceId {
    let d = Sha256::digest(id.as_bytes());
    TraceId::from_bytes(d[..16].try_into().unwrap())
}

fn expected_span_id(node_id: &str) -> SpanId {
    SpanId::from(u64::from_str_radix(node_id, 36).unwrap().max(1))
}

/// Sends each exported batch over a channel; remembers `shutdown`.
#[derive(Debug, Clone)]
struct ChannelExporter {
    tx: Arc<Mutex<Sender<Vec<SpanData>>>>,
    shut: Arc<AtomicBool>,
}

impl ChannelExporter {
    fn new() -> (ChannelExporter, Receiver<Vec<SpanData>>) {
        let (tx, rx) = channel();
        (
            ChannelExporter {
                tx: Arc::new(Mutex::new(tx)),
                shut: Arc::new(AtomicBool::new(false)),
            },
            rx,
        )
    }
}

impl SpanExporter for ChannelExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let _ = self.tx.lock().unwrap().send(batch);
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        self.shut.store(true, Ordering::SeqCst);
        Ok(())
    }
}

/// Receives batches until one holds spans of trace `id`; returns those.
fn spans_of(rx: &Receiver<Vec<SpanData>>, seen: &mut Vec<SpanData>, id: &str) -> Vec<SpanData> {
    loop {
        let mine: Vec<_> = seen
            .iter()
            .filter(|s| trace_attr(s) == id)
            .cloned()
            .collect();
        if !mine.is_empty() {
            return mine;
        }
        let batch = rx.recv_timeout(WAIT).expect("an export within the wait");
        seen.extend(batch);
    }
}

#[test]
fn the_complex_scenario_exports_its_nodes_parents_and_events() {
    let exporter = InMemorySpanExporter::default();
    let engine = builder().otel_exporter(exporter.clone()).build().unwrap();
    let trace = engine
        .create(
            TraceOptions::new()
                .metadata("task", "complex")
                .created_by("tests"),
        )
        .unwrap();
    let runner = scenarios::ThreadPool::new(2);
    scenarios::run(&engine, &trace, scenarios::Scenario::ComplexFlow, &runner);
    trace.mark_complete().unwrap();
    let id = trace.id().to_owned();
    let nodes = trace.all_nodes().unwrap();
    let logs = trace.logs(None).unwrap();
    trace.release().unwrap();
    engine.flush_otel_blocking().unwrap();

    let spans = exporter.get_finished_spans().unwrap();
    assert_eq!(spans.len(), nodes.len());
    assert_eq!(nodes.len(), 4); // prepare, Task A, Task B, finalize
    let by_id: HashMap<SpanId, &SpanData> = spans
        .iter()
        .map(|s| (s.span_context.span_id(), s))
        .collect();
    assert_eq!(by_id.len(), spans.len(), "span ids are unique");
    let mut joins = 0;
    for node in &nodes {
        let span = by_id[&expected_span_id(&node.id)];
        assert_eq!(span.span_context.trace_id(), expected_trace_id(&id));
        assert!(span.span_context.is_sampled());
        assert_eq!(span.name, node.label);
        assert_eq!(
            span.parent_span_id,
            node.parent_ids
                .first()
                .map_or(SpanId::INVALID, |p| expected_span_id(p))
        );
        let linked: Vec<SpanId> = span
            .links
            .iter()
            .map(|l| l.span_context.span_id())
            .collect();
        let extra: Vec<SpanId> = node
            .parent_ids
            .iter()
            .skip(1)
            .map(|p| expected_span_id(p))
            .collect();
        assert_eq!(linked, extra, "{}: joins are links", node.label);
        joins += extra.len();
        assert_eq!(ms(span.start_time), node.start_time);
        assert_eq!(ms(span.end_time), node.end_time);
        assert_eq!(node.status, NodeStatus::Completed);
        assert_eq!(span.status, Status::Ok);
        assert_eq!(
            attr(&span.attributes, "tracepool.node_id")
                .unwrap()
                .as_str(),
            node.id
        );
        assert_eq!(trace_attr(span), id);

        let node_logs: Vec<_> = logs.iter().filter(|l| l.node_id == node.id).collect();
        assert_eq!(span.events.len(), node_logs.len(), "{}", node.label);
        for (e, l) in span.events.iter().zip(&node_logs) {
            assert_eq!(e.name, l.message);
            assert_eq!(ms(e.timestamp), l.timestamp);
            assert_eq!(
                attr(&e.attributes, "level").unwrap().as_str(),
                l.level.as_str()
            );
        }
    }
    assert_eq!(joins, 1, "finalize joins both branches");
    let root = by_id[&expected_span_id(&nodes[0].id)];
    assert_eq!(attr(&root.attributes, "task").unwrap().as_str(), "complex");
    assert_eq!(
        attr(&root.attributes, "tracepool.created_by")
            .unwrap()
            .as_str(),
        "tests"
    );
    let total_events: usize = spans.iter().map(|s| s.events.len()).sum();
    assert_eq!(total_events, logs.len());
    assert_eq!(engine.stats().otel_dropped, 0);
}

#[test]
fn every_release_path_exports_a_trace_once() {
    let (exporter, rx) = ChannelExporter::new();
    let shut = exporter.shut.clone();
    let engine = builder()
        .idle_timeout(Some(Duration::from_millis(20)))
        .otel_exporter(exporter)
        .build()
        .unwrap();
    let mut seen = Vec::new();
    let make = |label: &'static str, keep: bool| {
        let t = engine
            .create(TraceOptions::new().keep_loaded(keep))
            .unwrap();
        t.add("in", NodeOptions::new().label(label)).unwrap();
        t
    };

    let explicit = make("explicit", false);
    explicit.release().unwrap();
    assert_eq!(spans_of(&rx, &mut seen, explicit.id())[0].name, "explicit");

    let dropped = make("dropped", false);
    let dropped_id = dropped.id().to_owned();
    drop(dropped);
    assert_eq!(spans_of(&rx, &mut seen, &dropped_id)[0].name, "dropped");

    let idle = make("idle", true);
    let idle_id = idle.id().to_owned();
    drop(idle); // stays loaded; the reaper releases it after idle_timeout
    assert_eq!(spans_of(&rx, &mut seen, &idle_id)[0].name, "idle");
    assert_eq!(engine.stats().idle_released, 1);

    let removed = make("removed", false);
    let removed_id = removed.id().to_owned();
    engine.remove(&removed_id).unwrap();
    drop(removed);
    assert_eq!(spans_of(&rx, &mut seen, &removed_id)[0].name, "removed");

    let at_shutdown = make("shutdown", false);
    let shutdown_id = at_shutdown.id().to_owned();
    engine.shutdown().unwrap();
    assert!(shut.load(Ordering::SeqCst), "the exporter was shut down");
    drop(at_shutdown);
    // Everything arrived before the exporter was shut down.
    seen.extend(rx.try_iter().flatten());
    let mut per_trace: HashMap<String, usize> = HashMap::new();
    for s in &seen {
        *per_trace.entry(trace_attr(s)).or_default() += 1;
    }
    assert_eq!(per_trace.len(), 5);
    assert!(per_trace.values().all(|&n| n == 1), "{per_trace:?}");
    assert!(per_trace.contains_key(&shutdown_id));
}

#[test]
fn statuses_and_end_times() {
    let exporter = InMemorySpanExporter::default();
    let engine = builder().otel_exporter(exporter.clone()).build().unwrap();

    let trace = engine.create(TraceOptions::new()).unwrap();
    let root = trace.add("in", NodeOptions::new().label("root")).unwrap();
    let ok = root.add("a", NodeOptions::new().label("ok")).unwrap();
    let failed = root.add("b", NodeOptions::new().label("failed")).unwrap();
    let skipped = root.add("c", NodeOptions::new().label("skipped")).unwrap();
    let unlabelled = root.add("d", NodeOptions::new()).unwrap();
    ok.complete(None).unwrap();
    failed.fail("boom").unwrap();
    skipped.set_status(NodeStatus::Skipped).unwrap();
    drop((ok, failed, skipped, unlabelled, root));
    trace.release().unwrap();

    let cancelled = engine.create(TraceOptions::new()).unwrap();
    cancelled
        .add("x", NodeOptions::new().label("cancelled"))
        .unwrap();
    cancelled.mark_cancelled("client went away").unwrap();
    cancelled.release().unwrap();
    engine.flush_otel_blocking().unwrap();

    let spans = exporter.get_finished_spans().unwrap();
    let by_name: HashMap<&str, &SpanData> = spans.iter().map(|s| (s.name.as_ref(), s)).collect();
    assert_eq!(by_name["ok"].status, Status::Ok);
    assert_eq!(by_name["failed"].status, Status::error("boom"));
    assert_eq!(by_name["skipped"].status, Status::Unset);
    assert_eq!(by_name["cancelled"].status, Status::error("cancelled"));
    // Still running at release: Unset, ending at the release.
    for name in ["root", "node"] {
        let s = by_name[name];
        assert_eq!(s.status, Status::Unset, "{name}");
        assert!(s.end_time >= s.start_time);
        assert!(s.end_time >= by_name["failed"].end_time);
    }
}

#[test]
fn a_traceparent_links_the_root_span() {
    let exporter = InMemorySpanExporter::default();
    let engine = builder().otel_exporter(exporter.clone()).build().unwrap();
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let trace = engine.create(TraceOptions::new().parent(tp)).unwrap();
    let root = trace.add("in", NodeOptions::new().label("root")).unwrap();
    root.add("x", NodeOptions::new().label("child")).unwrap();
    drop(root);
    drop(trace);
    let bad = engine
        .create(TraceOptions::new().parent("00-not-a-traceparent"))
        .unwrap();
    bad.add("in", NodeOptions::new().label("bad root")).unwrap();
    drop(bad);
    engine.flush_otel_blocking().unwrap();

    let spans = exporter.get_finished_spans().unwrap();
    let root = spans.iter().find(|s| s.name == "root").unwrap();
    assert_eq!(root.links.len(), 1);
    let cx = &root.links[0].span_context;
    assert!(cx.is_remote());
    assert_eq!(
        cx.trace_id(),
        TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap()
    );
    assert_eq!(cx.span_id(), SpanId::from_hex("00f067aa0ba902b7").unwrap());
    assert_eq!(
        attr(&root.links[0].attributes, "tracepool.link")
            .unwrap()
            .as_str(),
        "traceparent"
    );
    // The traceparent is a link, not an attribute.
    assert!(attr(&root.attributes, "traceparent").is_none());
    assert!(
        spans
            .iter()
            .find(|s| s.name == "child")
            .unwrap()
            .links
            .is_empty()
    );
    assert!(
        spans
            .iter()
            .find(|s| s.name == "bad root")
            .unwrap()
            .links
            .is_empty()
    );
}

#[test]
fn metadata_becomes_attributes_within_the_limits() {
    let exporter = InMemorySpanExporter::default();
    let limits = SpanLimits {
        max_events_per_span: 2,
        max_attributes_per_span: 5,
        ..SpanLimits::default()
    };
    let engine = builder()
        .otel_exporter(exporter.clone())
        .otel_span_limits(limits)
        .build()
        .unwrap();
    let trace = engine.create(TraceOptions::new()).unwrap();
    let root = trace.add("in", NodeOptions::new().label("root")).unwrap();
    let node = root
        .add(
            "x",
            NodeOptions::new()
                .label("meta")
                .metadata("b", true)
                .metadata("i", 7)
                .metadata("f", 1.5)
                .metadata("s", "text")
                .metadata("cut", "beyond the limit"),
        )
        .unwrap();
    node.set_metadata("later", json!(["x", "y"])).unwrap();
    for i in 0..5 {
        node.log(tracepool::Level::Info, format!("line {i}"), json!({"i": i}));
    }
    drop((node, root));
    trace.release().unwrap();
    engine.flush_otel_blocking().unwrap();
    let spans = exporter.get_finished_spans().unwrap();
    let meta = spans.iter().find(|s| s.name == "meta").unwrap();
    assert_eq!(meta.attributes.len(), 5);
    assert_eq!(meta.dropped_attributes_count, 3); // "s", "cut", "later"
    assert_eq!(attr(&meta.attributes, "b"), Some(&OtelValue::Bool(true)));
    assert_eq!(attr(&meta.attributes, "i"), Some(&OtelValue::I64(7)));
    assert_eq!(attr(&meta.attributes, "f"), Some(&OtelValue::F64(1.5)));
    assert_eq!(meta.events.len(), 2);
    assert_eq!(meta.events.dropped_count, 3);
    assert_eq!(meta.events[1].name, "line 1");
    assert_eq!(
        attr(&meta.events[1].attributes, "i"),
        Some(&OtelValue::I64(1))
    );
}

/// Blocks in `export` until the test opens the gate.
#[derive(Debug)]
struct GatedExporter {
    entered: Mutex<Sender<()>>,
    gate: Mutex<Receiver<()>>,
    exported: Arc<Mutex<Vec<String>>>,
}

impl SpanExporter for GatedExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let _ = self.entered.lock().unwrap().send(());
        let _ = self.gate.lock().unwrap().recv_timeout(WAIT);
        let mut out = self.exported.lock().unwrap();
        out.extend(batch.iter().map(|s| s.name.to_string()));
        Ok(())
    }
}

#[test]
fn a_full_queue_drops_and_counts_and_the_release_never_waits() {
    let (entered_tx, entered) = channel();
    let (open, gate) = channel();
    let exported = Arc::new(Mutex::new(Vec::new()));
    let engine = builder()
        .otel_exporter(GatedExporter {
            entered: Mutex::new(entered_tx),
            gate: Mutex::new(gate),
            exported: exported.clone(),
        })
        .otel_queue(1)
        .build()
        .unwrap();
    let release = |label: &'static str| {
        let t = engine.create(TraceOptions::new()).unwrap();
        t.add("in", NodeOptions::new().label(label)).unwrap();
        t.release().unwrap();
    };
    release("first");
    entered
        .recv_timeout(WAIT)
        .expect("the export thread took the first trace");
    release("second"); // queued (the queue holds one)
    release("third"); // full: dropped, counted; the release did not wait
    assert_eq!(engine.stats().otel_dropped, 1);
    open.send(()).unwrap();
    open.send(()).unwrap();
    engine.flush_otel_blocking().unwrap();
    assert_eq!(*exported.lock().unwrap(), vec!["first", "second"]);
    assert_eq!(engine.stats().otel_dropped, 1);
}

#[derive(Debug)]
struct FailingExporter;

impl SpanExporter for FailingExporter {
    async fn export(&self, _batch: Vec<SpanData>) -> OTelSdkResult {
        Err(OTelSdkError::InternalFailure(
            "collector unreachable".into(),
        ))
    }
}

#[test]
fn a_refused_export_is_counted() {
    let engine = builder().otel_exporter(FailingExporter).build().unwrap();
    for _ in 0..3 {
        let t = engine.create(TraceOptions::new()).unwrap();
        t.add("in", NodeOptions::new().label("x")).unwrap();
        t.release().unwrap();
    }
    engine.flush_otel_blocking().unwrap();
    assert_eq!(engine.stats().otel_dropped, 3);
}

#[test]
fn without_an_exporter_nothing_is_exported_or_counted() {
    let engine = builder().build().unwrap();
    let t = engine.create(TraceOptions::new()).unwrap();
    t.add("in", NodeOptions::new().label("x")).unwrap();
    t.release().unwrap();
    engine.flush_otel_blocking().unwrap();
    assert_eq!(engine.stats().otel_dropped, 0);
    assert!(matches!(
        builder()
            .otel_exporter(InMemorySpanExporter::default())
            .otel_queue(0)
            .build(),
        Err(tracepool::Error::Config(_))
    ));
}

#[cfg(feature = "tracing")]
#[test]
fn the_layer_carries_a_traceparent_to_the_export() {
    use tracing_subscriber::layer::SubscriberExt;
    let exporter = InMemorySpanExporter::default();
    let engine = builder().otel_exporter(exporter.clone()).build().unwrap();
    let d = tracing::Dispatch::new(
        tracing_subscriber::registry().with(tracepool::layer::TraceLayer::new(engine.clone())),
    );
    let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    tracing::dispatcher::with_default(&d, || {
        let _root =
            tracing::info_span!("GET /", tracepool.trace = true, tracepool.parent = tp).entered();
        let _child = tracing::info_span!("db").entered();
        tracing::info!(rows = 2, "query done");
    });
    engine.flush_otel_blocking().unwrap();
    let spans = exporter.get_finished_spans().unwrap();
    assert_eq!(spans.len(), 2);
    let root = spans.iter().find(|s| s.name == "GET /").unwrap();
    let db = spans.iter().find(|s| s.name == "db").unwrap();
    assert_eq!(
        root.links[0].span_context.span_id(),
        SpanId::from_hex("b7ad6b7169203331").unwrap()
    );
    assert_eq!(db.parent_span_id, root.span_context.span_id());
    assert_eq!(root.status, Status::Ok);
    assert_eq!(db.events[0].name, "query done");
    assert_eq!(
        attr(&db.events[0].attributes, "rows"),
        Some(&OtelValue::I64(2))
    );
}
