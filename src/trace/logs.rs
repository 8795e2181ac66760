//! The log lines of a trace kept in memory, bounded by bytes.
//!
//! A line's text and data are the immutable bytes the caller's values were
//! serialized to, shared with the line's `log_added` record. When the lines
//! together cost more than `max_log_bytes`, the oldest leave memory (they
//! stay in storage: a line not yet handed to the driver is encoded for it
//! first, see `persist`).

use crate::event::value::Val;
use crate::ring::Ring;

use super::tree::Tree;
use crate::event::value;
use crate::model::{Level, LogEntry};

/// Line capacity kept across a reset.
const RETAIN_LOGS: usize = 4096;

/// One log line.
#[derive(Debug)]
pub(crate) struct LogRec {
    pub(crate) timestamp: i64,
    pub(crate) level: Level,
    /// The message (text).
    pub(crate) msg: Val,
    /// The data (JSON); `None` for `null`.
    pub(crate) data: Option<Val>,
    pub(crate) node: u32,
    /// Seq of the line's `log_added` event.
    pub(crate) seq: u64,
    /// What this line counts against `max_log_bytes`.
    pub(crate) cost: usize,
}

/// What one line costs besides its text and data: the keys around them in
/// its event and the line's record.
pub(crate) const LINE_OVERHEAD: usize = 96 + std::mem::size_of::<LogRec>();

impl LogRec {
    /// Whether its text or data is shared bytes (an inline value owns no
    /// memory).
    fn owns_memory(&self) -> bool {
        self.msg.is_shared() || self.data.as_ref().is_some_and(Val::is_shared)
    }

    /// A line and its cost.
    pub(crate) fn new(
        timestamp: i64,
        level: Level,
        msg: Val,
        data: Option<Val>,
        node: u32,
    ) -> LogRec {
        let cost = LogRec::text_bytes(msg.len(), data.as_ref()) + LINE_OVERHEAD;
        LogRec {
            timestamp,
            level,
            msg,
            data,
            node,
            seq: 0,
            cost,
        }
    }

    /// The bytes of a line's text and data (`null` data counts as its 4
    /// bytes); the line counts this plus [`LINE_OVERHEAD`] against
    /// `max_log_bytes`.
    #[inline(always)]
    pub(crate) fn text_bytes(msg_len: usize, data: Option<&Val>) -> usize {
        msg_len + data.map_or(4, |v| v.len())
    }
}

/// The in-memory log lines of a trace.
#[derive(Debug, Default)]
pub(crate) struct Logs {
    pub(crate) lines: Ring<LogRec>,
    /// Lines that left memory so far: the index (in the trace's whole log)
    /// of `lines[0]`.
    pub(crate) base: usize,
    /// What the lines in memory count against `max_log_bytes`.
    pub(crate) bytes: usize,
    /// Lines before this index (in the trace's whole log) were handed to
    /// the driver (or wait encoded for it).
    pub(crate) flushed: usize,
    /// Whether a line in memory may own memory (text or data as shared
    /// bytes): if none does, `reset` forgets the lines instead of dropping
    /// each.
    owns: bool,
}

impl Logs {
    /// Appends a line.
    pub(crate) fn push(&mut self, line: LogRec) {
        let cost = line.cost;
        let owns = line.owns_memory();
        self.push_with(cost, owns, || line);
    }

    /// Appends the line `make` builds, which costs `cost` (built in place:
    /// see `Ring::push_back_with`); `owns`: its text or data is shared bytes.
    #[inline(always)]
    pub(crate) fn push_with(
        &mut self,
        cost: usize,
        owns: bool,
        make: impl FnOnce() -> LogRec,
    ) -> &mut LogRec {
        self.bytes += cost;
        self.owns |= owns;
        self.lines.push_back_with(make)
    }

    /// Whether the lines cost more than `max` (the oldest must leave).
    pub(crate) fn over(&self, max: usize) -> bool {
        self.bytes > max && !self.lines.is_empty()
    }

    /// Index (in the whole log) one past the newest line.
    pub(crate) fn end(&self) -> usize {
        self.base + self.lines.len()
    }

    /// Lets the oldest line leave memory.
    pub(crate) fn pop_oldest(&mut self) -> Option<LogRec> {
        let l = self.lines.pop_front()?;
        self.bytes -= l.cost;
        self.base += 1;
        Some(l)
    }

    /// The lines in memory, in write order; `Some(n)`: of node `n`.
    pub(crate) fn entries(&self, tree: &Tree, node: Option<u32>) -> Vec<LogEntry> {
        self.lines
            .iter()
            .filter(|l| node.is_none_or(|n| l.node == n))
            .map(|l| LogEntry {
                timestamp: l.timestamp,
                level: l.level,
                message: value::as_str(&l.msg).to_owned(),
                data: l
                    .data
                    .as_deref()
                    .map_or(serde_json::Value::Null, value::decode),
                node_id: tree.node(l.node).id.as_str().to_owned(),
            })
            .collect()
    }

    /// Clears the lines, keeping capacity up to a cap.
    pub(crate) fn reset(&mut self) {
        if self.owns {
            self.lines.clear();
        } else {
            debug_assert!(!self.lines.iter().any(LogRec::owns_memory));
            self.lines.forget_all();
        }
        self.owns = false;
        if self.lines.capacity() > RETAIN_LOGS {
            self.lines.shrink_to(RETAIN_LOGS);
        }
        self.base = 0;
        self.bytes = 0;
        self.flushed = 0;
    }
}
