//! Heap test, scenario `parallel` (own process, `harness = false`): after warm-up,
//! 10,000 cycles retain 0 bytes and allocate at most the measured bound.

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

#[path = "../benches/support/scenarios.rs"]
#[allow(unreachable_pub)]
mod scenarios;

mod heap_support;

/// Measured allocations per cycle (scenario harness included): 6.000 (debug build,
/// 2026-11-26, after the event arena is reclaimed on reset), plus a small margin.
const MAX_BLOCKS_PER_CYCLE: f64 = 6.5;

fn main() {
    heap_support::main(scenarios::Scenario::ParallelNodes, MAX_BLOCKS_PER_CYCLE);
}
