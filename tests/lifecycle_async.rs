//! Async code never blocks its runtime on tracepool: `create_async` waits
//! for a full pool without blocking the thread (and is cancel safe), and the
//! async twins of the storage calls run storage work off the thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tracepool::{Engine, Error, Exhausted, NodeOptions, TraceOptions};

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

/// Runs an interval task on the same (single) thread while `f` waits, and
/// returns `f`'s result, how long it took, and how many ticks happened meanwhile.
async fn with_ticker<T>(f: impl std::future::Future<Output = T>) -> (T, Duration, u64) {
    let ticks = Arc::new(AtomicU64::new(0));
    let t = ticks.clone();
    let ticker = tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(1));
        loop {
            every.tick().await;
            t.fetch_add(1, Ordering::Relaxed);
        }
    });
    // Let the ticker start.
    tokio::task::yield_now().await;
    let before = ticks.load(Ordering::Relaxed);
    let t0 = Instant::now();
    let r = f.await;
    let took = t0.elapsed();
    let n = ticks.load(Ordering::Relaxed) - before;
    ticker.abort();
    (r, took, n)
}

/// Polls `engine.stats().waiting` until it is `n`, for at most 10 s (from
/// a thread other than the waiters').
fn wait_for_waiters(engine: &Engine, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while engine.stats().waiting != n {
        assert!(
            Instant::now() < deadline,
            "{} callers wait for a slot after 10 s, expected {n}",
            engine.stats().waiting
        );
        std::thread::yield_now();
    }
}

/// [`wait_for_waiters`] from a task on the waiters' (single) thread: yields
/// to them between looks.
async fn waiters_queued(engine: &Engine, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while engine.stats().waiting != n {
        assert!(
            Instant::now() < deadline,
            "{} callers wait for a slot after 10 s, expected {n}",
            engine.stats().waiting
        );
        tokio::task::yield_now().await;
    }
}

#[test]
fn create_async_on_a_full_pool_keeps_the_runtime_running() {
    let engine = Engine::builder()
        .capacity(1)
        .workers(1)
        .on_exhausted(Exhausted::Wait(Duration::from_millis(250)))
        .memory()
        .build()
        .unwrap();
    let held = engine.create(TraceOptions::new()).unwrap();
    current_thread().block_on(async {
        // Times out: the interval task kept ticking on the same thread.
        let (r, took, ticks) = with_ticker(engine.create_async(TraceOptions::new())).await;
        assert!(matches!(r, Err(Error::PoolExhausted)), "{r:?}");
        assert!(took >= Duration::from_millis(100), "waited {took:?}");
        assert!(ticks >= 30, "{ticks} ticks in {took:?}");

        // Succeeds when a slot is released by another thread meanwhile:
        // once the task is seen waiting, the releaser keeps it waiting
        // 120 ms (pacing: time for the interval task to tick), then drops
        // the last handle.
        let e = engine.clone();
        let releaser = std::thread::spawn(move || {
            wait_for_waiters(&e, 1);
            std::thread::sleep(Duration::from_millis(120));
            let released_at = Instant::now();
            drop(held);
            released_at
        });
        let (r, took, ticks) = with_ticker(engine.create_async(TraceOptions::new())).await;
        let got_at = Instant::now();
        let t = r.unwrap();
        let released_at = releaser.join().unwrap();
        assert!(got_at >= released_at, "got a slot before one was freed");
        assert!(took >= Duration::from_millis(100), "waited {took:?}");
        assert!(ticks >= 30, "{ticks} ticks in {took:?}");
        assert_eq!(engine.stats().waiting, 0);
        t.add("in", NodeOptions::new()).unwrap();
    });
}

#[test]
fn a_cancelled_create_async_holds_no_slot() {
    let engine = Engine::builder()
        .capacity(1)
        .workers(1)
        .on_exhausted(Exhausted::Wait(Duration::from_secs(30)))
        .memory()
        .build()
        .unwrap();
    let held = engine.create(TraceOptions::new()).unwrap();
    current_thread().block_on(async {
        for _ in 0..20 {
            let r = tokio::time::timeout(
                Duration::from_millis(2),
                engine.create_async(TraceOptions::new()),
            )
            .await;
            assert!(r.is_err(), "cancelled by the timeout");
        }
        // The cancelled waiters left the queue.
        assert_eq!(engine.stats().waiting, 0);
        // The cancelled waiters left no trace: the freed slot goes to the
        // next caller at once.
        drop(held);
        let t = tokio::time::timeout(
            Duration::from_secs(5),
            engine.create_async(TraceOptions::new()),
        )
        .await
        .expect("a free slot is taken at once")
        .unwrap();
        assert_eq!(engine.stats().in_use, 1);
        drop(t);
        assert_eq!(engine.stats().in_use, 0);
    });
}

#[test]
fn a_waiter_cancelled_after_its_wake_up_passes_the_slot_on() {
    // Two async waiters; the first is dropped right after a slot is freed
    // (possibly after it was woken). The second must get the slot.
    let engine = Engine::builder()
        .capacity(1)
        .workers(1)
        .on_exhausted(Exhausted::Wait(Duration::from_secs(30)))
        .memory()
        .build()
        .unwrap();
    let held = engine.create(TraceOptions::new()).unwrap();
    current_thread().block_on(async {
        let e1 = engine.clone();
        let first = tokio::spawn(async move { e1.create_async(TraceOptions::new()).await });
        // The first is queued before the second (the order matters: the
        // freed slot must go to the first).
        waiters_queued(&engine, 1).await;
        let e2 = engine.clone();
        let second = tokio::spawn(async move { e2.create_async(TraceOptions::new()).await });
        waiters_queued(&engine, 2).await;
        drop(held);
        first.abort();
        let got = tokio::time::timeout(Duration::from_secs(5), async {
            // The first got the slot before it was aborted: release it.
            if let Ok(Ok(t)) = first.await {
                drop(t);
            }
            second.await.unwrap()
        })
        .await
        .expect("the second waiter was served");
        assert!(got.is_ok(), "{got:?}");
        assert_eq!(engine.stats().waiting, 0);
    });
}

#[test]
fn async_twins_of_the_storage_calls() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::builder()
        .capacity(4)
        .workers(1)
        .local(dir.path())
        .build()
        .unwrap();
    current_thread().block_on(async {
        let id = {
            let t = engine.create_async(TraceOptions::new()).await.unwrap();
            t.add("in", NodeOptions::new().label("root")).unwrap();
            t.id().to_owned()
        };
        engine.flush().await.unwrap();
        assert!(engine.exists_async(&id).await.unwrap());
        assert_eq!(engine.info_async(&id).await.unwrap().id, id);
        assert_eq!(engine.list_stored_async().await.unwrap(), vec![id.clone()]);
        let t = engine.open_async(&id).await.unwrap();
        assert_eq!(t.root().unwrap().unwrap().label, "root");
        drop(t);
        engine.remove_async(&id).await.unwrap();
        assert!(!engine.exists_async(&id).await.unwrap());
        assert!(matches!(
            engine.remove_async(&id).await,
            Err(Error::NotFound)
        ));
        let custom = engine
            .create_async(TraceOptions::new().id("async-custom"))
            .await
            .unwrap();
        drop(custom);
        engine.shutdown_async().await.unwrap();
        assert!(matches!(engine.flush().await, Err(Error::ShutDown)));
    });
    // What was dropped before the shutdown is in storage.
    let again = Engine::builder()
        .workers(1)
        .local(dir.path())
        .build()
        .unwrap();
    assert!(again.exists("async-custom").unwrap());
}
