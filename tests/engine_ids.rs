//! Trace id validation: `^[0-9A-Za-z_-]{1,64}$`, enforced by every
//! engine entry point that takes an id.

use tracepool::{Engine, Error, NodeOptions, TraceOptions};

fn bad_ids() -> Vec<String> {
    vec![
        "../x".into(),
        String::new(),
        "a".repeat(65),
        "a/b".into(),
        "a:b".into(),
        ".".into(),
        "..".into(),
        "a\0b".into(),
        "\0".into(),
        "a b".into(),
        "a\\b".into(),
        "ä".into(),
        "a.b".into(),
    ]
}

fn engine() -> Engine {
    Engine::builder()
        .capacity(2)
        .workers(1)
        .memory()
        .build()
        .unwrap()
}

fn invalid<T: std::fmt::Debug>(what: &str, id: &str, r: tracepool::Result<T>) {
    assert!(
        matches!(r, Err(Error::InvalidId)),
        "{what}({id:?}) gave {r:?}"
    );
}

#[test]
fn invalid_ids_are_rejected_everywhere() {
    let engine = engine();
    for id in bad_ids() {
        invalid(
            "create",
            &id,
            engine.create(TraceOptions::new().id(id.clone())),
        );
        invalid("load", &id, engine.load(&id));
        invalid("open", &id, engine.open(&id));
        invalid("release", &id, engine.release(&id));
        invalid("info", &id, engine.info(&id));
        invalid("exists", &id, engine.exists(&id));
        invalid("remove", &id, engine.remove(&id));
        invalid("mark_cancelled", &id, engine.mark_cancelled(&id, "x"));
        assert!(!engine.is_loaded(&id));
        invalid("validate_trace_id", &id, tracepool::validate_trace_id(&id));
    }
    // Nothing was created.
    let st = engine.stats();
    assert_eq!(st.in_use, 0);
    assert!(engine.list().is_empty());
}

#[test]
fn boundary_ids_are_accepted() {
    let engine = engine();
    for id in ["a", &"Z".repeat(64), "0-_aZ9"] {
        tracepool::validate_trace_id(id).unwrap();
        let t = engine.create(TraceOptions::new().id(id)).unwrap();
        assert_eq!(t.id(), id);
        assert!(engine.is_loaded(id));
        assert!(engine.exists(id).unwrap());
        assert_eq!(engine.info(id).unwrap().id, id);
        assert_eq!(engine.load(id).unwrap().id(), id);
        engine.remove(id).unwrap();
        assert!(!engine.exists(id).unwrap());
    }
}

#[test]
fn valid_but_unknown_ids() {
    let engine = engine();
    let id = tracepool::gen_trace_id();
    assert!(matches!(engine.load(&id), Err(Error::NotLoaded)));
    assert!(matches!(engine.open(&id), Err(Error::NotFound)));
    assert!(matches!(engine.release(&id), Err(Error::NotLoaded)));
    assert!(matches!(engine.info(&id), Err(Error::NotFound)));
    assert!(matches!(engine.remove(&id), Err(Error::NotFound)));
    assert!(matches!(
        engine.mark_cancelled(&id, "x"),
        Err(Error::NotLoaded)
    ));
    assert!(!engine.exists(&id).unwrap());
}

#[test]
fn generated_ids_have_the_reference_shape() {
    let mut seen = std::collections::HashSet::new();
    for _ in 0..100 {
        let id = tracepool::gen_trace_id();
        assert_eq!(id.len(), 20);
        assert!(id.bytes().all(|b| b.is_ascii_digit()));
        let month: u32 = id[4..6].parse().unwrap();
        let day: u32 = id[6..8].parse().unwrap();
        assert!((1..=12).contains(&month) && (1..=31).contains(&day), "{id}");
        tracepool::validate_trace_id(&id).unwrap();
        seen.insert(id);
    }
    assert!(seen.len() >= 99);
}

/// Counts the storage lookups `create` makes, and refuses a new trace's
/// first batch for ids in `taken`, or for every id while `all_taken` is set
/// (as a driver does when storage already has the id: another engine, an
/// earlier run).
#[derive(Debug, Default, Clone)]
struct Lookups {
    exists: std::sync::Arc<std::sync::atomic::AtomicU64>,
    taken: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    all_taken: std::sync::Arc<std::sync::atomic::AtomicBool>,
    written: std::sync::Arc<std::sync::Mutex<Vec<(String, bool, usize)>>>,
}

impl tracepool::Driver for Lookups {
    fn name(&self) -> &'static str {
        "lookups"
    }
    fn write(&self, batch: &tracepool::WriteBatch<'_>) -> tracepool::Result<()> {
        let taken = self.all_taken.load(std::sync::atomic::Ordering::SeqCst)
            || self.taken.lock().unwrap().contains(batch.trace_id);
        if batch.is_new_trace() && taken {
            return Err(Error::AlreadyExists);
        }
        self.written.lock().unwrap().push((
            batch.trace_id.to_owned(),
            batch.is_new_trace(),
            batch.len(),
        ));
        Ok(())
    }
    fn exists(&self, id: &str) -> tracepool::Result<bool> {
        self.exists
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(self.taken.lock().unwrap().contains(id))
    }
    fn remove(&self, id: &str) -> tracepool::Result<bool> {
        Ok(self.taken.lock().unwrap().remove(id))
    }
}

fn lookups_engine(d: &Lookups) -> Engine {
    Engine::builder()
        .capacity(8)
        .workers(1)
        .driver(d.clone())
        .build()
        .unwrap()
}

#[test]
fn generated_ids_need_no_storage_lookup_and_are_unique_per_engine() {
    use std::sync::atomic::Ordering::SeqCst;
    let d = Lookups::default();
    let engine = lookups_engine(&d);
    let mut ids = std::collections::HashSet::new();
    for _ in 0..2_000 {
        let t = engine.create(TraceOptions::new()).unwrap();
        assert_eq!(t.id().len(), 20);
        assert!(ids.insert(t.id().to_owned()), "duplicate {}", t.id());
    }
    assert_eq!(d.exists.load(SeqCst), 0, "no lookup for generated ids");
    // A caller-given id costs exactly one lookup.
    let t = engine.create(TraceOptions::new().id("given-1")).unwrap();
    assert_eq!(d.exists.load(SeqCst), 1);
    // The first batch of a created trace is marked new; later ones are not.
    engine.flush_blocking().unwrap();
    t.add("later", NodeOptions::new()).unwrap();
    engine.flush_blocking().unwrap();
    let written = d.written.lock().unwrap();
    let given: Vec<bool> = written
        .iter()
        .filter(|w| w.0 == "given-1")
        .map(|w| w.1)
        .collect();
    assert_eq!(given, [true, false], "only the first batch is new");
}

#[test]
fn an_id_storage_already_has_is_refused_never_merged() {
    let d = Lookups::default();
    let engine = lookups_engine(&d);
    // Simulate a clash with a trace of another engine, which storage holds
    // (refused from the first batch on, whenever the worker writes it).
    d.all_taken.store(true, std::sync::atomic::Ordering::SeqCst);
    let t = engine.create(TraceOptions::new()).unwrap();
    let id = t.id().to_owned();
    t.add("x", NodeOptions::new()).unwrap();
    let err = engine.flush_blocking().unwrap_err();
    assert!(err.to_string().contains(&id), "{err}");
    // Later writes of this trace are dropped too, and counted.
    t.add("y", NodeOptions::new()).unwrap();
    engine.flush_blocking().unwrap();
    drop(t);
    engine.flush_blocking().unwrap();
    let st = engine.stats();
    assert_eq!(st.persist_errors, 1, "{st:?}");
    assert_eq!(st.events_dropped, st.events_emitted, "{st:?}");
    assert!(d.written.lock().unwrap().iter().all(|w| w.0 != id));
    // Removing it does not touch the other trace in storage.
    let t = engine.create(TraceOptions::new()).unwrap();
    let id2 = t.id().to_owned();
    d.taken.lock().unwrap().insert(id2.clone());
    engine.flush_blocking().unwrap_err();
    engine.remove(&id2).unwrap();
    assert!(
        d.taken.lock().unwrap().contains(&id2),
        "the other trace stays"
    );
}
