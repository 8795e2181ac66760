//! Hand-built write batches for the drivers' unit tests: a trace's info
//! document, node documents, log lines and events, valid enough to be read
//! back with `load`, and flagged new or not.

use super::{DocBuf, DocKind, WriteBatch};
use crate::event::Event;
use crate::id::ShortId;

/// The parts of one batch (a [`WriteBatch`] borrows them).
#[derive(Debug, Default)]
pub(crate) struct TestBatch {
    id: String,
    new: bool,
    events: Vec<Event>,
    docs: Vec<DocBuf>,
    logs: Vec<DocBuf>,
    buf: Vec<u8>,
}

impl TestBatch {
    /// An empty batch of trace `id`; `new`: its first batch, to be created exclusively.
    pub(crate) fn new(id: &str, new: bool) -> TestBatch {
        TestBatch {
            id: id.to_owned(),
            new,
            ..TestBatch::default()
        }
    }

    fn push(&mut self, kind: DocKind, id: ShortId, bytes: &[u8], logs: bool) {
        let start = self.buf.len();
        self.buf.extend_from_slice(bytes);
        let d = DocBuf {
            kind,
            id,
            range: (start, self.buf.len()),
            n: self.logs.len() as u64,
        };
        if logs {
            self.logs.push(d)
        } else {
            self.docs.push(d)
        }
    }

    /// Adds event `seq` (an `init` for 1, else a `log_added` of `node`).
    pub(crate) fn event(mut self, seq: u64, node: &str) -> Self {
        let text = if seq == 1 {
            let t = format!(
                r#"{{"type":"init","trace_id":"{}","node_id":"","space_id":"","timestamp":1,"data":{{"trace_id":"{}"}},"seq":1}}"#,
                self.id, self.id
            );
            t
        } else {
            let t = format!(
                r#"{{"type":"log_added","trace_id":"{}","node_id":"{node}","space_id":"","timestamp":{seq},"data":{{"Timestamp":{seq},"Level":"info","Message":"m","Data":null,"NodeID":"{node}"}},"seq":{seq}}}"#,
                self.id
            );
            t
        };
        self.events
            .push(Event::from_json(text.as_bytes(), "test batch").expect("a valid event"));
        self
    }

    /// Adds the trace's info document (root `root`, if any).
    pub(crate) fn info(mut self, root: Option<&str>) -> Self {
        let root = root.map_or(String::new(), |r| {
            format!(r#","__tracepool_root":"{r}","__tracepool_current":["{r}"]"#)
        });
        let doc = format!(
            r#"{{"id":"{}","driver":"test","status":"running","created_at":1,"updated_at":1,"archived":false{root}}}"#,
            self.id
        );
        self.push(DocKind::Info, ShortId::EMPTY, doc.as_bytes(), false);
        self
    }

    /// Adds the document of node `node` (12 chars `[0-9a-z]`).
    pub(crate) fn node(mut self, node: &str) -> Self {
        let doc = format!(
            r#"{{"ID":"{node}","Label":"n","Status":"running","CreatedAt":1,"StartTime":1,"UpdatedAt":1}}"#
        );
        let id = ShortId::parse(node).expect("a 12-character node id");
        self.push(DocKind::Node, id, doc.as_bytes(), false);
        self
    }

    /// Adds space `space` (12 chars `[0-9a-z]`): its document and its data `{"k": 1}`.
    pub(crate) fn space(mut self, space: &str) -> Self {
        let doc = format!(
            r#"{{"id":"{space}","label":"s","type":"","icon":"","description":"","ttl":0,"created_at":1,"updated_at":1}}"#
        );
        let id = ShortId::parse(space).expect("a 12-character space id");
        self.push(DocKind::Space, id, doc.as_bytes(), false);
        self.push(DocKind::SpaceData, id, br#"{"k": 1}"#, false);
        self
    }

    /// Adds a log line of node `node` (12 chars `[0-9a-z]`).
    pub(crate) fn log(mut self, node: &str) -> Self {
        let line = format!(
            r#"{{"Timestamp":1,"Level":"info","Message":"m","Data":null,"NodeID":"{node}"}}"#
        );
        let id = ShortId::parse(node).expect("a 12-character node id");
        self.push(DocKind::Node, id, line.as_bytes(), true);
        self
    }

    /// The batch, as a driver sees it.
    pub(crate) fn batch(&self) -> WriteBatch<'_> {
        WriteBatch::new(
            &self.id,
            &self.events,
            &self.docs,
            &self.logs,
            &self.buf,
            self.new,
        )
    }
}
