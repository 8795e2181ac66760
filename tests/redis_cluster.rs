//! The Redis driver on a real Redis Cluster of three `redis-server`
//! masters (started by the test, joined with `redis-cli --cluster create`):
//! every key of a trace lives in one slot (its hash tag), writes and reads
//! work, the index is kept in its own slot, follows poll instead of
//! blocking, and leases move a trace between engines.
#![cfg(feature = "redis")]

mod redis_support;

use std::process::Command;
use std::time::Duration;

use tracepool::{Cursor, Delivery, Engine, Error, EventKind, NodeOptions, TraceOptions};

use redis_support::{RedisServer, unique_prefix, wait_until};

/// Three masters covering every slot.
fn cluster() -> Vec<RedisServer> {
    let nodes: Vec<RedisServer> = (0..3)
        .map(|_| {
            RedisServer::start_with(&[
                "--save",
                "",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "5000",
            ])
        })
        .collect();
    let mut create = Command::new("redis-cli");
    create.arg("--cluster").arg("create");
    for n in &nodes {
        create.arg(format!("127.0.0.1:{}", n.port));
    }
    let out = create
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .expect("redis-cli (installed with redis-server) creates the cluster");
    assert!(
        out.status.success(),
        "redis-cli --cluster create: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for n in &nodes {
        wait_until(30, "the cluster to be ready", || {
            let mut c = n.client();
            let info: String = redis::cmd("CLUSTER")
                .arg("INFO")
                .query(&mut c)
                .unwrap_or_default();
            info.contains("cluster_state:ok")
        });
    }
    nodes
}

fn engine(nodes: &[RedisServer], prefix: &str) -> Engine {
    let seeds: Vec<String> = nodes.iter().map(RedisServer::url).collect();
    Engine::builder()
        .redis(seeds.join(","))
        .redis_prefix(prefix)
        .lease_ttl(Duration::from_millis(900))
        .capacity(8)
        .workers(1)
        .build()
        .expect("engine on the cluster")
}

#[test]
fn traces_work_on_a_redis_cluster() {
    let nodes = cluster();
    let prefix = unique_prefix();
    let a = engine(&nodes, &prefix);
    let b = engine(&nodes, &prefix);
    // Several traces: their hash tags spread them over the masters.
    let mut ids = Vec::new();
    for i in 0..6 {
        let t = a.create(TraceOptions::new()).unwrap();
        let n = t.add(i, NodeOptions::new().label("Step")).unwrap();
        n.info("hello");
        ids.push(t.id().to_owned());
        t.release().unwrap();
    }
    a.flush_blocking().unwrap();
    let mut listed = b.list_stored().unwrap();
    listed.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(listed, want);
    let per_node: Vec<i64> = nodes
        .iter()
        .map(|n| {
            let mut c = n.client();
            redis::cmd("DBSIZE").query(&mut c).unwrap()
        })
        .collect();
    assert!(
        per_node.iter().filter(|&&k| k > 0).count() >= 2,
        "traces spread over the masters: {per_node:?}"
    );
    // Open elsewhere, follow (polling), release, remove.
    let t = b.open(&ids[0]).unwrap();
    assert_eq!(t.events(Cursor::Seq(0)).unwrap().len(), 3);
    assert!(matches!(a.open(&ids[0]), Err(Error::Leased { .. })));
    let mut sub = a.follow(&ids[0]).unwrap();
    let first: Vec<u64> = (0..3)
        .map(|_| match sub.blocking_recv() {
            Some(Delivery::Event(e)) => e.seq,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(first, [1, 2, 3]);
    t.info("more");
    t.mark_complete().unwrap();
    let mut rest = Vec::new();
    while let Some(d) = sub.blocking_recv() {
        rest.push(d);
    }
    assert!(
        matches!(rest.last(), Some(Delivery::Event(e)) if e.kind == EventKind::Complete && e.seq == 5),
        "{rest:?}"
    );
    drop(t);
    b.flush_blocking().unwrap();
    for id in &ids {
        b.remove(id).unwrap();
    }
    assert!(b.list_stored().unwrap().is_empty());
    let left: i64 = nodes
        .iter()
        .map(|n| {
            let mut c = n.client();
            redis::cmd("DBSIZE").query::<i64>(&mut c).unwrap()
        })
        .sum();
    assert_eq!(left, 0, "remove deletes every key");
}
