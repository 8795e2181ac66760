//! Appends trace events the way the store driver does (one key per event,
//! `<prefix>:<trace>:event:<seq>`, one transaction per trace batch), then
//! reads one trace back with a prefix scan, in redb and in fjall.

use std::time::Instant;

use redb::{ReadableDatabase, ReadableTable};

const TRACES: usize = 2_000;
const BATCHES: usize = 4; // batches per trace
const PER_BATCH: usize = 6; // events per batch
const VALUE: usize = 220; // bytes per event (a typical wire event)

fn key(trace: usize, seq: usize) -> Vec<u8> {
    format!("__trace:20261126{trace:012}:event:{seq:020}").into_bytes()
}

fn redb_run(durable: bool) -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let db = redb::Database::create(dir.path().join("t.redb")).unwrap();
    const T: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("kv");
    let value = vec![b'x'; VALUE];
    let t0 = Instant::now();
    for b in 0..BATCHES {
        for t in 0..TRACES {
            let mut tx = db.begin_write().unwrap();
            if !durable {
                tx.set_durability(redb::Durability::None).unwrap();
            }
            {
                let mut table = tx.open_table(T).unwrap();
                for s in 0..PER_BATCH {
                    table.insert(key(t, b * PER_BATCH + s + 1).as_slice(), value.as_slice()).unwrap();
                }
            }
            tx.commit().unwrap();
        }
    }
    let write = (TRACES * BATCHES * PER_BATCH) as f64 / t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let rx = db.begin_read().unwrap();
    let table = rx.open_table(T).unwrap();
    let mut n = 0;
    for t in (0..TRACES).step_by(10) {
        let lo = key(t, 0);
        let hi = key(t + 1, 0);
        n += table.range(lo.as_slice()..hi.as_slice()).unwrap().count();
    }
    assert_eq!(n, TRACES / 10 * BATCHES * PER_BATCH);
    let read = (TRACES / 10) as f64 / t1.elapsed().as_secs_f64();
    (write, read)
}

fn fjall_run(durable: bool) -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let db = fjall::Database::builder(dir.path()).open().unwrap();
    let ks = db.keyspace("kv", fjall::KeyspaceCreateOptions::default).unwrap();
    let value = vec![b'x'; VALUE];
    let t0 = Instant::now();
    for b in 0..BATCHES {
        for t in 0..TRACES {
            let mut batch = db.batch();
            for s in 0..PER_BATCH {
                batch.insert(&ks, key(t, b * PER_BATCH + s + 1), value.as_slice());
            }
            batch.commit().unwrap();
            // Buffer: handed to the OS (survives a killed process), like redb's
            // Durability::None commit; SyncAll: fsync.
            let mode = if durable {
                fjall::PersistMode::SyncAll
            } else {
                fjall::PersistMode::Buffer
            };
            db.persist(mode).unwrap();
        }
    }
    let write = (TRACES * BATCHES * PER_BATCH) as f64 / t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let mut n = 0;
    for t in (0..TRACES).step_by(10) {
        let mut p = key(t, 0);
        p.truncate(p.len() - 20);
        n += ks.prefix(p).count();
    }
    assert_eq!(n, TRACES / 10 * BATCHES * PER_BATCH);
    let read = (TRACES / 10) as f64 / t1.elapsed().as_secs_f64();
    (write, read)
}

fn main() {
    println!("{TRACES} traces x {BATCHES} batches x {PER_BATCH} events of {VALUE} B; one transaction per batch");
    for durable in [false, true] {
        let (rw, rr) = redb_run(durable);
        let (fw, fr) = fjall_run(durable);
        let mode = if durable { "fsync per batch" } else { "no fsync      " };
        println!("{mode}: redb  {rw:>9.0} events/s written, {rr:>7.0} traces/s scanned");
        println!("{mode}: fjall {fw:>9.0} events/s written, {fr:>7.0} traces/s scanned");
    }
}
