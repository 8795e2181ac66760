//! A stable, quick stand-in for the cargo-fuzz target (`fuzz/`): random
//! bytes and mutated valid documents go through every storage decoder,
//! which must never panic and may only fail with `Corrupt` naming the
//! location it was given.

use proptest::prelude::*;
use tracepool::Error;
use tracepool::driver::format::{
    decode_event_lines, decode_info, decode_log_lines, decode_node, decode_space, decode_space_data,
};

const SAMPLES: &[&str] = &[
    // trace_info.json (reference keys plus tracepool's own)
    r#"{
  "id": "20250101123456789012",
  "driver": "local",
  "status": "running",
  "options": ["/tmp/x"],
  "created_at": 1735700000000,
  "updated_at": 1735700000001,
  "archived_at": 1735700000002,
  "archived": false,
  "__yao_created_by": "me",
  "__yao_team_id": "t",
  "metadata": {"k": [1, 2, {"x": null}]},
  "__tracepool_root": "rootnode0001",
  "__tracepool_current": ["rootnode0001"]
}"#,
    // persistNode
    r#"{
  "ID": "rootnode0001",
  "ParentIDs": ["parentnode01"],
  "ChildrenIDs": ["childnode001", "childnode002"],
  "Label": "Root",
  "Type": "step",
  "Metadata": {"m": 1},
  "Status": "completed",
  "Input": {"q": "hello"},
  "Output": [1, 2, 3],
  "CreatedAt": 1,
  "StartTime": 2,
  "EndTime": 3,
  "UpdatedAt": 4
}"#,
    // TraceSpace
    r#"{"id": "memspace0001", "label": "M", "type": "kv", "icon": "", "description": "d", "ttl": 60, "metadata": {"a": 1}, "created_at": 1, "updated_at": 2}"#,
    // space data
    r#"{"key1": "value1", "key2": 123, "key3": {"nested": "data"}}"#,
    // log lines
    "{\"Timestamp\":1,\"Level\":\"info\",\"Message\":\"a %s\",\"Data\":[\"x\"],\"NodeID\":\"rootnode0001\"}\n{\"Timestamp\":2,\"Level\":\"warn\",\"Message\":\"b\",\"Data\":null,\"NodeID\":\"rootnode0001\"}\n",
    // event lines: reference (no seq) and tracepool (seq)
    "{\"type\":\"init\",\"trace_id\":\"t1\",\"node_id\":\"\",\"space_id\":\"\",\"timestamp\":1,\"data\":{\"trace_id\":\"t1\"}}\n{\"type\":\"node_start\",\"trace_id\":\"t1\",\"node_id\":\"rootnode0001\",\"space_id\":\"\",\"timestamp\":2,\"data\":{\"node\":{\"id\":\"rootnode0001\"}},\"seq\":2}\n",
];

fn check<T>(r: tracepool::Result<T>) -> Result<(), TestCaseError> {
    match r {
        Ok(_) => Ok(()),
        Err(Error::Corrupt { location, .. }) => {
            prop_assert!(location.starts_with("sample"), "location {location:?}");
            Ok(())
        }
        Err(other) => Err(TestCaseError::fail(format!("non-Corrupt error {other:?}"))),
    }
}

fn all(bytes: &[u8]) -> Result<(), TestCaseError> {
    check(decode_info(bytes, "sample"))?;
    check(decode_node(bytes, "sample"))?;
    check(decode_space(bytes, "sample"))?;
    check(decode_space_data(bytes, "sample"))?;
    check(decode_log_lines(bytes, "sample"))?;
    check(decode_event_lines(bytes, "sample"))?;
    Ok(())
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, u8),
    Delete(usize, usize),
    Truncate(usize),
    Duplicate(usize, usize),
    Swap(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let interesting = prop::sample::select(vec![
        b'"', b'{', b'}', b'[', b']', b':', b',', b'\n', b'\\', b'0', b'-', b'e', 0u8, 0xff, b' ',
    ]);
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Mutation::Flip(p, b)),
        (any::<usize>(), interesting).prop_map(|(p, b)| Mutation::Insert(p, b)),
        (any::<usize>(), 1usize..16).prop_map(|(p, n)| Mutation::Delete(p, n)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), 1usize..64).prop_map(|(p, n)| Mutation::Duplicate(p, n)),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::Swap(a, b)),
    ]
}

fn apply(mut v: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        let len = v.len().max(1);
        match *m {
            Mutation::Flip(p, b) if !v.is_empty() => v[p % len] ^= b,
            Mutation::Insert(p, b) => v.insert(p % (v.len() + 1), b),
            Mutation::Delete(p, n) if !v.is_empty() => {
                let s = p % len;
                let e = (s + n).min(v.len());
                v.drain(s..e);
            }
            Mutation::Truncate(p) => v.truncate(p % (v.len() + 1)),
            Mutation::Duplicate(p, n) if !v.is_empty() => {
                let s = p % len;
                let e = (s + n).min(v.len());
                let chunk = v[s..e].to_vec();
                v.splice(s..s, chunk);
            }
            Mutation::Swap(a, b) if !v.is_empty() => v.swap(a % len, b % len),
            _ => {}
        }
    }
    v
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        all(&bytes)?;
    }

    #[test]
    fn random_json_like_text_never_panics(s in "[\\[\\]{}\":,0-9a-zA-Z_ \\n.-]{0,200}") {
        all(s.as_bytes())?;
    }

    #[test]
    fn mutated_documents_never_panic(
        sample in 0..SAMPLES.len(),
        muts in prop::collection::vec(mutation(), 1..8),
    ) {
        let bytes = apply(SAMPLES[sample].as_bytes().to_vec(), &muts);
        all(&bytes)?;
        // Also as one line among valid ones.
        let mut lines = SAMPLES[4].as_bytes().to_vec();
        lines.extend_from_slice(&bytes);
        lines.push(b'\n');
        all(&lines)?;
    }
}

#[test]
fn samples_are_valid() {
    decode_info(SAMPLES[0].as_bytes(), "sample").unwrap();
    decode_node(SAMPLES[1].as_bytes(), "sample").unwrap();
    decode_space(SAMPLES[2].as_bytes(), "sample").unwrap();
    assert_eq!(
        decode_space_data(SAMPLES[3].as_bytes(), "sample")
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        decode_log_lines(SAMPLES[4].as_bytes(), "sample")
            .unwrap()
            .len(),
        2
    );
    let evs = decode_event_lines(SAMPLES[5].as_bytes(), "sample").unwrap();
    assert_eq!(evs.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2]);
}
