//! Traces exported to OpenTelemetry when they are released:
//! `cargo run --example to_otel --features tracing,otel`.
//!
//! Any `opentelemetry_sdk` span exporter works. For OTLP (Jaeger, Tempo, a
//! collector), add the `opentelemetry-otlp` crate (0.33, like the SDK) and
//! pass its `SpanExporter::builder().with_http().build()?` instead of
//! `PrintExporter`.
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use tracepool::layer::TraceLayer;
use tracepool::{Engine, TraceOptions};
use tracing::{info, instrument};
use tracing_subscriber::layer::SubscriberExt;

/// Prints each span it is given.
#[derive(Debug)]
struct PrintExporter;

impl SpanExporter for PrintExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        for s in batch {
            println!(
                "trace {} span {} parent {} {:?} {:?} events={} links={}",
                s.span_context.trace_id(),
                s.span_context.span_id(),
                s.parent_span_id,
                s.name,
                s.status,
                s.events.len(),
                s.links.len()
            );
        }
        Ok(())
    }
}

#[instrument(fields(tracepool.trace = true, tracepool.parent = %traceparent))]
fn checkout(traceparent: &str, items: u32) {
    info!(items, "cart read");
    charge(items * 250);
}

#[instrument]
fn charge(cents: u32) {
    info!(cents, "charged");
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let engine = Engine::builder()
        .memory()
        .otel_exporter(PrintExporter) // exported on release, in batches, off the caller's thread
        .otel_queue(2048)
        .build()?;
    let subscriber = tracing_subscriber::registry().with(TraceLayer::new(engine.clone()));
    tracing::subscriber::set_global_default(subscriber)?;

    // From `tracing`, with the caller's W3C context: the root span links to it.
    checkout("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", 3);

    // Or with tracepool's own API: a parallel branch pair and a join.
    let trace = engine.create(TraceOptions::new().metadata("job", "nightly"))?;
    let plan = trace.step("plan")?;
    let [a, b]: [tracepool::Node; 2] = plan
        .parallel(vec![
            tracepool::ParallelInput::new("a", tracepool::NodeOptions::new().label("fetch A")),
            tracepool::ParallelInput::new("b", tracepool::NodeOptions::new().label("fetch B")),
        ])?
        .try_into()
        .expect("two branches");
    a.complete(None)?;
    b.fail("timeout")?; // exported with status Error("timeout")
    // Parent A, a link to B; still running at the release: status Unset.
    let merge = tracepool::NodeOptions::new().label("merge");
    plan.join(&[&a, &b], "merge", merge)?;
    drop((a, b, plan));
    drop(trace); // the last handle: released, then exported

    engine.flush_otel_blocking()?;
    println!("dropped from the export: {}", engine.stats().otel_dropped);
    engine.shutdown()?; // exports what is left, then shuts the exporter down
    Ok(())
}
