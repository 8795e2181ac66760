//! Measures the two Redis clients considered for tracepool's Redis driver,
//! on the driver's write pattern, against a running redis-server:
//!
//! * `script`: one Lua script per batch of 200 events (`EVALSHA`, the
//!   events as arguments, one `XADD` each inside the script): the driver's
//!   write path;
//! * `pipeline`: one pipeline of 200 `XADD`s per batch;
//! * `per-command`: one `XADD` per event, awaited one after the other;
//! * `concurrent`: 16 tasks issuing `XADD`s at once on one connection.
//!
//! Prints events/s per client and case (median of 3 runs).
//! Usage: `cargo run --release -- [redis://127.0.0.1:6379/0]`.

use std::time::Instant;

use fred::prelude::{ClientLike, KeysInterface, LuaInterface, StreamsInterface};

const BATCH: usize = 200;
const BATCHES: usize = 200;
const SINGLE: usize = 4000;
const TASKS: usize = 16;

const SCRIPT: &str = r"
for i = 1, #ARGV, 2 do
  redis.call('XADD', KEYS[1], ARGV[i], 'e', ARGV[i + 1])
end
return #ARGV / 2
";

fn payload(i: usize) -> String {
    format!(
        r#"{{"type":"log_added","trace_id":"20261128000000000001","node_id":"abcdefghijkl","space_id":"","timestamp":1764300000000,"data":{{"Timestamp":1764300000000,"Level":"info","Message":"working on item {i}","Data":null,"NodeID":"abcdefghijkl"}},"seq":{i}}}"#
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn redis_rs(url: &str) -> [f64; 4] {
    let client = redis::Client::open(url).expect("url");
    let mut con = client.get_connection_manager().await.expect("connect");
    let script = redis::Script::new(SCRIPT);
    let key = "redis-choice:{t}:redis";
    let mut out = [0.0; 4];
    // script
    let _: () = redis::cmd("DEL").arg(key).query_async(&mut con).await.unwrap();
    let t = Instant::now();
    let mut seq = 0;
    for _ in 0..BATCHES {
        let mut inv = script.key(key);
        for _ in 0..BATCH {
            seq += 1;
            inv.arg(format!("{seq}-0")).arg(payload(seq));
        }
        let n: usize = inv.invoke_async(&mut con).await.unwrap();
        assert_eq!(n, BATCH);
    }
    out[0] = (BATCHES * BATCH) as f64 / t.elapsed().as_secs_f64();
    // pipeline
    let t = Instant::now();
    for _ in 0..BATCHES {
        let mut p = redis::pipe();
        for _ in 0..BATCH {
            seq += 1;
            p.cmd("XADD").arg(key).arg(format!("{seq}-0")).arg("e").arg(payload(seq)).ignore();
        }
        let () = p.query_async(&mut con).await.unwrap();
    }
    out[1] = (BATCHES * BATCH) as f64 / t.elapsed().as_secs_f64();
    // per command
    let t = Instant::now();
    for _ in 0..SINGLE {
        seq += 1;
        let _: String = redis::cmd("XADD")
            .arg(key)
            .arg(format!("{seq}-0"))
            .arg("e")
            .arg(payload(seq))
            .query_async(&mut con)
            .await
            .unwrap();
    }
    out[2] = SINGLE as f64 / t.elapsed().as_secs_f64();
    // concurrent (auto ids: the order between tasks is not fixed)
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let mut con = con.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..SINGLE / TASKS {
                let _: String = redis::cmd("XADD")
                    .arg(key)
                    .arg("*")
                    .arg("e")
                    .arg(payload(i))
                    .query_async(&mut con)
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    out[3] = SINGLE as f64 / t.elapsed().as_secs_f64();
    let _: () = redis::cmd("DEL").arg(key).query_async(&mut con).await.unwrap();
    out
}

async fn fred(url: &str) -> [f64; 4] {
    let config = fred::types::config::Config::from_url(url).expect("url");
    let client = fred::types::Builder::from_config(config).build().expect("client");
    client.init().await.expect("connect");
    let hash: String = client.script_load(SCRIPT).await.unwrap();
    let key = "redis-choice:{t}:fred";
    let mut out = [0.0; 4];
    let _: () = client.del(key).await.unwrap();
    let t = Instant::now();
    let mut seq = 0;
    for _ in 0..BATCHES {
        let mut args: Vec<String> = Vec::with_capacity(2 * BATCH);
        for _ in 0..BATCH {
            seq += 1;
            args.push(format!("{seq}-0"));
            args.push(payload(seq));
        }
        let n: usize = client.evalsha(&hash, vec![key], args).await.unwrap();
        assert_eq!(n, BATCH);
    }
    out[0] = (BATCHES * BATCH) as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    for _ in 0..BATCHES {
        let p = client.pipeline();
        for _ in 0..BATCH {
            seq += 1;
            let _: () = p
                .xadd(key, false, None, format!("{seq}-0"), vec![("e", payload(seq))])
                .await
                .unwrap();
        }
        let _: Vec<String> = p.all().await.unwrap();
    }
    out[1] = (BATCHES * BATCH) as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    for _ in 0..SINGLE {
        seq += 1;
        let _: String = client
            .xadd(key, false, None, format!("{seq}-0"), vec![("e", payload(seq))])
            .await
            .unwrap();
    }
    out[2] = SINGLE as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..SINGLE / TASKS {
                let _: String = client
                    .xadd(key, false, None, "*", vec![("e", payload(i))])
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    out[3] = SINGLE as f64 / t.elapsed().as_secs_f64();
    let _: () = client.del(key).await.unwrap();
    client.quit().await.unwrap();
    out
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "redis://127.0.0.1:6379/0".to_owned());
    let cases = ["script (200/batch)", "pipeline (200/batch)", "per-command", "concurrent x16"];
    let mut runs: [Vec<[f64; 4]>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..3 {
        runs[0].push(redis_rs(&url).await);
        runs[1].push(fred(&url).await);
    }
    println!("| case | redis 1.x events/s | fred 10 events/s | fred / redis |");
    println!("|---|---:|---:|---:|");
    for (c, name) in cases.iter().enumerate() {
        let r = median(runs[0].iter().map(|x| x[c]).collect());
        let f = median(runs[1].iter().map(|x| x[c]).collect());
        println!("| {name} | {r:.0} | {f:.0} | {:.2} |", f / r);
    }
}
