//! The reference test catalogue (every `tests/trace_*.rs` file that ports a
//! section of the reference's tests) again, on the Redis driver: each file
//! is included here unchanged, and its engines (`common::engine`,
//! `common::engine_with`) are built on a real `redis-server` started by
//! the tests (see `common::on_redis`). Where the Redis driver legitimately
//! differs from the in-memory one (it keeps released traces), the tests
//! ask `common::on_redis()`.
//!
//! Each catalogue file declares `mod common;` itself, so `common` (and the
//! Redis support it includes) is compiled once per file here: on purpose.
#![allow(clippy::duplicate_mod)]
#![cfg(feature = "redis")]

#[path = "trace_autocomplete.rs"]
mod trace_autocomplete;
#[path = "trace_basic.rs"]
mod trace_basic;
#[path = "trace_concurrent.rs"]
mod trace_concurrent;
#[path = "trace_lifecycle.rs"]
mod trace_lifecycle;
#[path = "trace_node.rs"]
mod trace_node;
#[path = "trace_resource.rs"]
mod trace_resource;
#[path = "trace_space.rs"]
mod trace_space;
#[path = "trace_subscription.rs"]
mod trace_subscription;
