//! `tracing`-instrumented code recorded as tracepool traces, with no other
//! change than the subscriber: `cargo run --example from_tracing --features tracing`.
use std::time::Duration;

use tracepool::Engine;
use tracepool::layer::TraceLayer;
use tracing::{info, instrument, warn};
use tracing_subscriber::layer::SubscriberExt;

// A span with `tracepool.trace = true` starts a trace (named by `tracepool.id`).
#[instrument(fields(tracepool.trace = true, tracepool.id = %request_id))]
async fn handle(request_id: String, query: String) -> usize {
    let (docs, ads) = tokio::join!(search(&query), ads(&query)); // two branches
    info!(docs, ads, "answered");
    docs + ads
}

#[instrument]
async fn search(query: &str) -> usize {
    tokio::time::sleep(Duration::from_millis(5)).await; // spans survive .await
    info!(shards = 3, "index scanned");
    query.len()
}

#[instrument(fields(error = tracing::field::Empty))]
async fn ads(query: &str) -> usize {
    if query.contains("rust") {
        warn!("no ads for this query");
        tracing::Span::current().record("error", "no inventory"); // the node fails
        return 0;
    }
    1
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join("tracepool-from-tracing");
    let engine = Engine::builder().local(&dir).build()?;
    let subscriber = tracing_subscriber::registry().with(TraceLayer::new(engine.clone()));
    tracing::subscriber::set_global_default(subscriber)?;

    let id = format!("req-{}", std::process::id());
    let n = handle(id.clone(), "rust tracing".into()).await;
    println!("handled: {n}");

    // The root span closed: the trace was completed and released. While it
    // ran, `engine.load(&id)?.subscribe()` (or the SSE endpoint of
    // `tracepool::http`) streamed its events live.
    engine.flush().await?;
    let stored = engine.read_stored(&id)?;
    let label = |id: &str| {
        stored
            .nodes
            .iter()
            .find(|n| n.id == id)
            .map(|n| n.label.clone())
    };
    for node in &stored.nodes {
        let parent = node.parent_ids.first().and_then(|p| label(p));
        println!(
            "{:<7} {:<10} under {:<7} input={}",
            node.label,
            node.status.as_str(),
            parent.unwrap_or_else(|| "-".into()),
            node.input.clone().unwrap_or_default()
        );
    }
    for log in &stored.logs {
        let node = label(&log.node_id).unwrap_or_default();
        println!(
            "  {node}: [{}] {} {}",
            log.level.as_str(),
            log.message,
            log.data
        );
    }
    engine.remove(&id)?;
    Ok(())
}
