//! The key layout: every key of one trace carries the hash tag `{<id>}`, so
//! all of them live in one slot of a Redis Cluster (and one Lua script or
//! `MULTI` may touch them together); the index of trace ids is the one key
//! outside any trace.
//!
//! | key | type | what |
//! |---|---|---|
//! | `P{T}:info` | string | `trace_info.json`, the reference's fields |
//! | `P{T}:nodes` | hash | node id -> node document (the reference's `persistNode`) |
//! | `P{T}:spaces` | hash | space id -> space document |
//! | `P{T}:data` | hash | space id -> the space's key-values (`data.json`) |
//! | `P{T}:logs:<node>` | list | the node's log lines (the reference's `TraceLog`), in write order |
//! | `P{T}:events` | stream | one entry per event, id `<seq>-0`, field `e` = the wire JSON; `released` and `opened` markers `<seq>-<n>` |
//! | `P{T}:meta` | hash | `logs`: the index of the next log line (makes a retried batch idempotent) |
//! | `P{T}:lease` | string | the owning engine's id, with an expiry (`PX`) |
//! | `Ptraces` | sorted set | trace ids scored by creation time (ms), for `list_stored` |
//!
//! `P` is the configured prefix (`tracepool:` by default) and `T` the trace
//! id (validated: `[0-9A-Za-z_-]`, so it never contains a brace or a colon).

/// The keys of the whole store (one prefix).
#[derive(Debug, Clone)]
pub(super) struct Keys {
    prefix: String,
}

impl Keys {
    pub(super) fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_owned(),
        }
    }

    /// The sorted set of trace ids by creation time.
    pub(super) fn index(&self) -> String {
        format!("{}traces", self.prefix)
    }

    /// The keys of trace `id`.
    pub(super) fn trace(&self, id: &str) -> TraceKeys {
        TraceKeys {
            base: format!("{}{{{id}}}:", self.prefix),
        }
    }
}

/// The keys of one trace (`P{T}:...`).
#[derive(Debug, Clone)]
pub(super) struct TraceKeys {
    base: String,
}

impl TraceKeys {
    fn key(&self, what: &str) -> String {
        let mut k = String::with_capacity(self.base.len() + what.len());
        k.push_str(&self.base);
        k.push_str(what);
        k
    }

    pub(super) fn info(&self) -> String {
        self.key("info")
    }

    pub(super) fn nodes(&self) -> String {
        self.key("nodes")
    }

    pub(super) fn spaces(&self) -> String {
        self.key("spaces")
    }

    pub(super) fn data(&self) -> String {
        self.key("data")
    }

    pub(super) fn events(&self) -> String {
        self.key("events")
    }

    pub(super) fn meta(&self) -> String {
        self.key("meta")
    }

    pub(super) fn lease(&self) -> String {
        self.key("lease")
    }

    /// The log list of node `node`.
    pub(super) fn logs(&self, node: &str) -> String {
        let mut k = self.key("logs:");
        k.push_str(node);
        k
    }

    /// A location for error messages: `P{T}:what`.
    pub(super) fn at(&self, what: &str) -> String {
        self.key(what)
    }
}

/// The `(ms, seq)` parts of a stream entry id (`None` if it is not one).
pub(super) fn parse_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_of_a_trace_shares_its_hash_tag() {
        let k = Keys::new("tracepool:").trace("20251118123456789012");
        for key in [
            k.info(),
            k.nodes(),
            k.spaces(),
            k.data(),
            k.events(),
            k.meta(),
            k.lease(),
            k.logs("abcdefghijkl"),
        ] {
            let open = key.find('{').unwrap();
            let close = key[open..].find('}').unwrap() + open;
            assert_eq!(&key[open + 1..close], "20251118123456789012", "{key}");
        }
        assert_eq!(Keys::new("p:").index(), "p:traces");
        assert_eq!(parse_id("17-0"), Some((17, 0)));
        assert_eq!(parse_id("17-x"), None);
    }
}
