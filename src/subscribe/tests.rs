//! A subscription's prepaid references: held while it reads, given back
//! when its stream ends (after `complete`, or after the frozen history of
//! a released trace).

use crate::{Delivery, Engine, NodeOptions, TraceOptions};

fn engine() -> Engine {
    Engine::builder()
        .memory()
        .workers(1)
        .capacity(2)
        .build()
        .expect("engine")
}

#[test]
fn prepaid_references_are_held_while_reading_and_given_back_at_the_end() {
    let engine = engine();
    let trace = engine.create(TraceOptions::new()).unwrap();
    let mut sub = trace.subscribe().unwrap();
    trace.add("x", NodeOptions::new()).unwrap();
    let Some(Delivery::Event(first)) = sub.blocking_recv() else {
        panic!("an event")
    };
    // One reference paid for `first`, the rest of the batch prepaid.
    assert!(sub.refs.left() > 0);
    let bytes = first.to_bytes();
    assert_eq!(&bytes[..], first.wire_bytes());
    assert_eq!(first.wire_bytes(), first.to_json().as_bytes());
    trace.mark_complete().unwrap();
    while let Some(d) = sub.blocking_recv() {
        assert!(matches!(d, Delivery::Event(_)));
    }
    assert_eq!(sub.refs.left(), 0, "given back after `complete`");
    // The bytes handed out stay valid without them.
    assert_eq!(&bytes[..], first.wire_bytes());
    assert!(first.to_json().starts_with(r#"{"type":"init""#));
}

#[test]
fn a_released_traces_reader_gives_its_references_back() {
    let engine = engine();
    let trace = engine.create(TraceOptions::new()).unwrap();
    let mut sub = trace.subscribe().unwrap();
    let node = trace.add("x", NodeOptions::new()).unwrap();
    assert!(sub.blocking_recv().is_some());
    assert!(sub.refs.left() > 0);
    node.info("a");
    node.info("b");
    trace.release().unwrap();
    let mut seqs = Vec::new();
    while let Some(d) = sub.blocking_recv() {
        if let Delivery::Event(e) = d {
            seqs.push(e.seq);
        }
    }
    assert_eq!(seqs, [2, 3, 4]);
    assert_eq!(sub.refs.left(), 0, "given back once the history is read");
}
