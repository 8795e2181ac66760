//! The demo generator of `tracepool serve --demo`: a steady trickle of live
//! traces, so the viewer always has something to show.
//!
//! Every 300-700 ms [`run`] starts a trace playing one of five scenarios, in
//! turn (the five of the reference's benchmarks):
//!
//! 1. `sequential`: four steps one after the other, with logs;
//! 2. `parallel`: a plan, three branches completed by other tasks after
//!    short sleeps (one fails now and then), a merge that joins them;
//! 3. `space`: a space with several key-values written, overwritten and deleted;
//! 4. `logging`: lines at every level, with data, and a failing step;
//! 5. `complex`: a space, parallel branches writing into it, a join and a
//!    finalize step.
//!
//! Steps are separated by short sleeps so the DAG grows visibly. Each trace
//! is marked complete at the end and removed (released and deleted from storage) about 20 s later; when more
//! than [`MAX_LOADED`] traces are loaded, the oldest finished ones are
//! released first. Only the public API is used, so this doubles as an
//! example of instrumenting async code.

use std::time::Duration;

use serde_json::json;

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::handle::Trace;
use crate::model::NodeStatus;
use crate::options::{NodeOptions, ParallelInput, SpaceOptions, TraceOptions};

/// At most this many traces are kept loaded by the generator.
pub const MAX_LOADED: usize = 20;

/// How long a finished demo trace stays loaded.
const KEEP_FINISHED: Duration = Duration::from_secs(20);

/// The scenario names, in the order [`run`] plays them.
pub const SCENARIOS: [&str; 5] = ["sequential", "parallel", "space", "logging", "complex"];

/// Generates demo traces forever (until the engine is shut down).
///
/// Spawns one task per trace on the current tokio runtime; call it from
/// inside one (`tokio::spawn(tracepool::http::demo::run(engine))`).
pub async fn run(engine: Engine) {
    let mut n = 0usize;
    loop {
        make_room(&engine);
        let name = SCENARIOS[n % SCENARIOS.len()];
        n += 1;
        let opts = TraceOptions::new()
            .created_by("demo")
            .metadata("scenario", name)
            .metadata("run", n);
        match engine.create(opts) {
            Ok(trace) => {
                tokio::spawn(play(trace, name));
            }
            Err(Error::ShutDown) => return,
            Err(_) => {} // pool exhausted or storage trouble: try again later
        }
        tokio::time::sleep(Duration::from_millis(fastrand::u64(300..=700))).await;
    }
}

/// Plays one scenario (errors, e.g. a shutdown, just end it), then
/// releases the trace after a while.
///
/// `trace` is held until the end, so the trace stays loaded while it plays
/// and for a while after; it is then released explicitly (and deleted).
pub async fn play(trace: Trace, scenario: &str) {
    let result = match scenario {
        "sequential" => sequential(&trace).await,
        "parallel" => parallel(&trace).await,
        "space" => space(&trace).await,
        "logging" => logging(&trace).await,
        _ => complex(&trace).await,
    };
    if result.is_ok() {
        let _ = trace.mark_complete();
    } else {
        let _ = trace
            .engine()
            .mark_cancelled(trace.id(), "demo step failed");
    }
    tokio::time::sleep(KEEP_FINISHED).await;
    // Demo traces are throwaway: release and delete them, so a long-running
    // demo does not fill the disk.
    let _ = trace.engine().remove(trace.id());
}

/// Releases the oldest finished traces while too many are loaded.
fn make_room(engine: &Engine) {
    let ids = engine.list();
    if ids.len() < MAX_LOADED {
        return;
    }
    let mut finished: Vec<(i64, String)> = ids
        .into_iter()
        .filter_map(|id| {
            let t = engine.load(&id).ok()?;
            if !t.is_complete() {
                return None;
            }
            Some((t.trace_info().ok()?.created_at, id))
        })
        .collect();
    finished.sort();
    let excess = engine.list().len() + 1 - MAX_LOADED;
    for (_, id) in finished.into_iter().take(excess) {
        let _ = engine.remove(&id);
    }
}

async fn pause(lo: u64, hi: u64) {
    tokio::time::sleep(Duration::from_millis(fastrand::u64(lo..=hi))).await;
}

fn step(label: &'static str, icon: &'static str) -> NodeOptions {
    NodeOptions::new().label(label).icon(icon).node_type(icon)
}

async fn sequential(t: &Trace) -> Result<()> {
    t.add(
        json!({"query": "summarise the quarterly report"}),
        step("Input", "input"),
    )?;
    t.info("Received user request");
    pause(150, 350).await;
    let parse = t.add("parse request", step("Parse", "processor"))?;
    parse.info("Tokenising input").debug("42 tokens");
    pause(200, 400).await;
    parse.set_output(json!({"intent": "summarise", "tokens": 42}))?;
    let fetch = t.add("fetch document", step("Fetch", "database"))?;
    fetch.info("Loading report.pdf");
    pause(250, 500).await;
    fetch.set_metadata("bytes", 183_204)?;
    let write = t.add("write summary", step("Summarise", "llm"))?;
    write.info("Calling the model");
    pause(300, 600).await;
    write.info("Summary ready");
    t.complete(Some(json!({"summary": "Revenue up 12%, costs flat."})))?;
    Ok(())
}

async fn parallel(t: &Trace) -> Result<()> {
    t.add(
        json!({"task": "research three suppliers"}),
        step("Plan", "planner"),
    )?;
    t.info("Splitting into three searches");
    pause(150, 350).await;
    let branches = t.parallel(vec![
        ParallelInput::new("supplier A", step("Search A", "search")),
        ParallelInput::new("supplier B", step("Search B", "search")),
        ParallelInput::new("supplier C", step("Search C", "search")),
    ])?;
    let unlucky = fastrand::usize(0..6); // 3..6: all succeed
    let mut tasks = Vec::new();
    for (i, b) in branches.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            b.info(format!("Querying source {}", i + 1));
            pause(300, 1200).await;
            if i == unlucky {
                b.warn("Source timed out after 3 retries");
                let _ = b.fail("timeout");
            } else {
                b.info("Found 3 offers");
                let _ = b.complete(Some(json!({"offers": 3, "best_price": 90 + 5 * i})));
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let merge = t.add("merge offers", step("Merge", "merge"))?;
    merge.info("Ranking offers");
    pause(200, 400).await;
    t.complete(Some(json!({"choice": "supplier B"})))?;
    Ok(())
}

async fn space(t: &Trace) -> Result<()> {
    t.add("collect facts", step("Collect", "memory"))?;
    let s = t.create_space(
        SpaceOptions::new()
            .label("Facts")
            .space_type("memory")
            .description("What the agent learned"),
    )?;
    for (k, v) in [
        ("city", json!("Lisbon")),
        ("temperature", json!(21.5)),
        ("forecast", json!(["sun", "sun", "clouds"])),
        ("sources", json!({"weather": "api", "news": 2})),
    ] {
        pause(150, 350).await;
        t.set_space_value(&s.id, k, v)?;
        t.info(format!("Stored {k}"));
    }
    pause(150, 300).await;
    t.set_space_value(&s.id, "temperature", json!(22.0))?;
    t.debug("Updated temperature");
    let draft = t.create_space(SpaceOptions::new().label("Scratch").space_type("scratch"))?;
    t.set_space_value(&draft.id, "tmp", json!(true))?;
    pause(150, 300).await;
    t.delete_space_value(&draft.id, "tmp")?;
    t.add("answer", step("Answer", "llm"))?;
    pause(200, 400).await;
    t.complete(Some(json!({"answer": "22 degrees and sunny in Lisbon"})))?;
    Ok(())
}

async fn logging(t: &Trace) -> Result<()> {
    let root = t.add("run checks", step("Checks", "shield"))?;
    root.debug("Loaded 12 rules");
    pause(100, 250).await;
    root.info("Checking configuration");
    pause(100, 250).await;
    root.warn("Deprecated option `retries` used");
    root.log(
        crate::model::Level::Info,
        "Rule summary",
        json!({"passed": 10, "warned": 1, "failed": 1}),
    );
    let sub = root.add("validate schema", step("Validate", "check"))?;
    pause(200, 400).await;
    sub.error("Field `amount` must be positive");
    sub.fail("validation failed: 1 error")?;
    let report = root.add("report", step("Report", "report"))?;
    report.info("Wrote report.json");
    pause(100, 250).await;
    report.complete(Some(json!({"errors": 1, "warnings": 1})))?;
    root.set_status(NodeStatus::Completed)?;
    Ok(())
}

async fn complex(t: &Trace) -> Result<()> {
    t.add(json!({"order": 1042}), step("Receive order", "input"))?;
    let results = t.create_space(SpaceOptions::new().label("Worker Results"))?;
    t.info("Order received").debug("3 items");
    pause(150, 300).await;
    let branches = t.parallel(vec![
        ParallelInput::new("check stock", step("Stock", "database")),
        ParallelInput::new("check payment", step("Payment", "card")),
    ])?;
    let mut tasks = Vec::new();
    for b in &branches {
        let b = b.clone();
        let t = t.clone();
        let sid = results.id.clone();
        tasks.push(tokio::spawn(async move {
            b.info("Working");
            pause(300, 900).await;
            let key = format!("{}_ok", b.data().map(|d| d.label).unwrap_or_default());
            let _ = t.set_space_value(&sid, &key.to_lowercase(), json!(true));
            let _ = b.complete(Some(json!({"ok": true})));
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let refs: Vec<&crate::handle::Node> = branches.iter().collect();
    let join = branches[0].join(&refs, "combine", step("Combine", "merge"))?;
    join.info("Both checks passed");
    pause(150, 300).await;
    join.complete(Some(json!({"ready": true})))?;
    let fin = join.add("finalize", step("Finalize", "flag"))?;
    fin.info("Shipping order 1042");
    t.set_space_value(&results.id, "shipped", json!(true))?;
    pause(150, 300).await;
    fin.complete(Some(json!({"status": "shipped"})))?;
    Ok(())
}
