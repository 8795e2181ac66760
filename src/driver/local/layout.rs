//! The on-disk layout of the local driver — the reference's `local` driver
//! (spec §5.2) — as names: which directory and file holds what, and how temp
//! files, archives and archive markers are called. Every name the driver
//! reads or writes below its base comes from here.
//!
//! ```text
//! <base>/<D>/<id>/trace_info.json      D = first 8 chars of the id, or "others"
//!                 updates.jsonl        one event per line
//!                 nodes/<node>.json
//!                 logs/<node>.jsonl    one log entry per line
//!                 spaces/<space>.json
//!                 spaces/<space>/data.json
//! <base>/<D>/<id>.tar.gz               after archiving
//! <base>/<D>/.<id>.archived            archive marker (RFC 3339 time)
//! <base>/<D>/.tmp/                     temp archives and markers
//! ```

/// The trace's metadata document.
pub(super) const INFO: &str = "trace_info.json";
/// The trace's event log.
pub(super) const UPDATES: &str = "updates.jsonl";
/// Directory of node documents.
pub(super) const NODES: &str = "nodes";
/// Directory of per-node log files.
pub(super) const LOGS: &str = "logs";
/// Directory of space documents and space data directories.
pub(super) const SPACES: &str = "spaces";
/// A space's key-values, in `spaces/<space>/`.
pub(super) const SPACE_DATA: &str = "data.json";
/// Per-shard directory of temp archives and markers (`<base>/<D>/.tmp`), so
/// that cleaning up after a crash never lists the (large) shard itself.
pub(super) const SHARD_TMP: &str = ".tmp";

/// `<D>` of the layout: the first 8 characters of the id, or `others`.
pub(super) fn shard(id: &str) -> &str {
    if id.len() >= 8 { &id[..8] } else { "others" }
}

/// The shard generated ids of today (UTC) go to.
pub(super) fn shard_of_today() -> String {
    let id = crate::id::TraceId::dated(crate::id::now_ms(), 0);
    id.as_str()[..8].to_owned()
}

/// The archive of trace `id`, in its shard.
pub(super) fn archive_name(id: &str) -> String {
    format!("{id}.tar.gz")
}

/// The archive marker of trace `id`, in its shard.
pub(super) fn marker_name(id: &str) -> String {
    format!(".{id}.archived")
}

/// Names in the shard's `.tmp` that temp archives of trace `id` start with.
pub(super) fn temp_archive_prefix(id: &str) -> String {
    format!(".{id}.tar.gz.tmp.")
}

/// Names in the shard's `.tmp` that temp markers of trace `id` start with
/// (the temp file of `.<id>.archived`).
pub(super) fn temp_marker_prefix(id: &str) -> String {
    format!("..{id}.archived.tmp.")
}

/// Whether `name` is a temp document (`.<name>.tmp.<random>`).
pub(super) fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.contains(".tmp.")
}

/// Node and space ids as file names: 12 characters `[0-9a-z]`.
pub(super) fn is_short_id(s: &str) -> bool {
    s.len() == 12
        && s.bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards() {
        assert_eq!(shard("20251118123456789012"), "20251118");
        assert_eq!(shard("abcdefgh"), "abcdefgh");
        assert_eq!(shard("short"), "others");
    }

    #[test]
    fn temp_names_match_their_prefixes() {
        assert!(is_temp_name(".x.json.tmp.00ff"));
        assert!(!is_temp_name("x.json"));
        let marker_tmp = format!(".{}.tmp.0011", marker_name("abc"));
        assert!(marker_tmp.starts_with(&temp_marker_prefix("abc")));
        assert!(is_short_id("0123456789az"));
        assert!(!is_short_id("0123456789aZ"));
    }
}
