//! The engine works when built from plain synchronous code and when built
//! inside a tokio runtime (current-thread or multi-thread), and it shuts down
//! (explicitly or by drop) inside an async context without panicking or
//! blocking the runtime.

use std::time::Duration;

use tracepool::{Delivery, Engine, Error, EventKind, NodeOptions, TraceOptions};

fn engine() -> Engine {
    Engine::builder()
        .capacity(8)
        .workers(2)
        .memory()
        .build()
        .unwrap()
}

/// Writes a small trace from a task while this task follows it live.
async fn follow_live(e: &Engine) -> Vec<u64> {
    let t = e.create(TraceOptions::new()).unwrap();
    let mut sub = t.subscribe().unwrap();
    let writer = {
        let t = t.clone();
        tokio::spawn(async move {
            for i in 0..5 {
                t.add(i, NodeOptions::new()).unwrap();
                // Pacing: the follower waits for live events in between.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            t.mark_complete().unwrap();
        })
    };
    let mut seqs = Vec::new();
    while let Some(d) = tokio::time::timeout(Duration::from_secs(10), sub.recv())
        .await
        .expect("no delivery within 10 s")
    {
        match d {
            Delivery::Event(ev) => {
                seqs.push(ev.seq);
                if ev.kind == EventKind::Complete {
                    assert!(sub.recv().await.is_none(), "stream ends after complete");
                    break;
                }
            }
            Delivery::Lagged { missed } => panic!("lagged {missed}"),
        }
    }
    writer.await.unwrap();
    t.release().unwrap();
    seqs
}

fn expected() -> Vec<u64> {
    // init, 5 node_start, 4 auto node_complete, complete
    (1..=11).collect()
}

#[test]
fn built_in_a_current_thread_runtime_and_shut_down_inside_it() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let e = engine();
        assert_eq!(
            e.stats().live_tasks,
            2,
            "the engine's worker threads run, whatever runtime it was built in"
        );
        assert_eq!(follow_live(&e).await, expected());
        // Shutting down inside an async context must neither panic nor block forever.
        e.shutdown().unwrap();
        assert!(matches!(
            e.create(TraceOptions::new()),
            Err(Error::ShutDown)
        ));
    });
}

#[test]
fn built_in_a_multi_thread_runtime_and_dropped_inside_it() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let e = engine();
        assert_eq!(follow_live(&e).await, expected());
        drop(e); // last handle: shutdown by Drop, inside the runtime
    });
}

#[test]
fn built_from_synchronous_code() {
    let e = engine();
    let s = e.stats();
    assert_eq!((s.workers, s.live_tasks), (2, 2));
    let t = e.create(TraceOptions::new()).unwrap();
    let mut sub = t.subscribe().unwrap();
    t.add(1, NodeOptions::new()).unwrap();
    t.mark_complete().unwrap();
    let mut n = 0;
    while let Some(Delivery::Event(_)) = sub.blocking_recv() {
        n += 1;
    }
    assert_eq!(n, 3);
    e.shutdown().unwrap();
    assert_eq!(e.stats().live_tasks, 0, "workers exited");
    assert!(matches!(t.add(2, NodeOptions::new()), Err(Error::ShutDown)));
    // Idempotent.
    e.shutdown().unwrap();
}
