//! Trace id validation: `^[0-9A-Za-z_-]{1,64}$`, enforced by every
//! engine entry point that takes an id.

use tracepool::{Engine, Error, TraceOptions};

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
