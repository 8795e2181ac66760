//! The key-value spaces of a trace, their bounds and their events.
//!
//! A space's values are kept as the JSON bytes the caller's values were
//! serialized to (before the trace lock), in insertion order; a
//! `memory_add`/`memory_update` record shares them.

use std::borrow::Cow;

use crate::event::value::Val;
use indexmap::IndexMap;
use serde_json::{Map, Value};

use super::persist::{SPACE_DATA, SPACE_DELETED, SPACE_META};
use super::state::TraceState;
use crate::error::{Error, Result};
use crate::event::EventKind;
use crate::event::record::PayloadRec;
use crate::event::value;
use crate::id::ShortId;
use crate::model::{SpaceData, SpaceInfo};
use crate::options::SpaceOptions;

/// Spaces' capacity kept across a reset, and the size of a kept map.
const RETAIN_SPACES: usize = 64;
const RETAIN_SPACE_KEYS: usize = 1024;

/// Values of a space by key, in insertion order.
pub(crate) type SpaceValues = IndexMap<String, Val>;

/// One space.
#[derive(Debug)]
pub(crate) struct SpaceRec {
    pub(crate) id: ShortId,
    pub(crate) label: Cow<'static, str>,
    pub(crate) space_type: Cow<'static, str>,
    pub(crate) icon: Cow<'static, str>,
    pub(crate) description: Cow<'static, str>,
    pub(crate) ttl: u64,
    pub(crate) metadata: Map<String, Value>,
    pub(crate) created_at: i64,
    pub(crate) updated_at: i64,
    pub(crate) data: SpaceValues,
}

impl SpaceRec {
    /// A snapshot of the space's metadata.
    pub(crate) fn info(&self) -> SpaceInfo {
        SpaceInfo {
            id: self.id.as_str().to_owned(),
            label: self.label.to_string(),
            space_type: self.space_type.to_string(),
            icon: self.icon.to_string(),
            description: self.description.to_string(),
            ttl: self.ttl,
            metadata: self.metadata.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }

    /// The values, decoded.
    pub(crate) fn values(&self) -> Map<String, Value> {
        self.data
            .iter()
            .map(|(k, v)| (k.clone(), value::decode(v)))
            .collect()
    }
}

/// The spaces of a trace.
#[derive(Debug, Default)]
pub(crate) struct Spaces {
    pub(crate) list: Vec<SpaceRec>,
    /// Keys in all spaces together.
    pub(crate) entries: usize,
    /// Cleared value maps of earlier spaces, reused by `create_space`.
    spare_maps: Vec<SpaceValues>,
}

impl Spaces {
    /// The index of space `id`.
    ///
    /// # Errors
    /// `SpaceNotFound`.
    pub(crate) fn find(&self, id: &str) -> Result<usize> {
        ShortId::parse(id)
            .and_then(|s| self.list.iter().position(|sp| sp.id == s))
            .ok_or(Error::SpaceNotFound)
    }

    fn recycle(&mut self, mut data: SpaceValues) {
        if self.spare_maps.len() < RETAIN_SPACES && data.len() <= RETAIN_SPACE_KEYS {
            data.clear();
            self.spare_maps.push(data);
        }
    }

    /// A value map for a new space.
    pub(crate) fn new_map(&mut self) -> SpaceValues {
        self.spare_maps.pop().unwrap_or_default()
    }

    /// Clears the spaces, keeping some maps for reuse.
    pub(crate) fn reset(&mut self) {
        if self.list.is_empty() && self.list.capacity() <= RETAIN_SPACES {
            // A trace without spaces (most): nothing to recycle.
            self.entries = 0;
            return;
        }
        let list = std::mem::take(&mut self.list);
        let mut list = list;
        for sp in list.drain(..) {
            self.recycle(sp.data);
        }
        if list.capacity() <= RETAIN_SPACES {
            self.list = list;
        }
        self.entries = 0;
    }
}

/// A space's metadata as the JSON of its `space_created` event (`None` when
/// it has none), serialized before the slot's lock is taken.
pub(crate) fn space_metadata_json(opts: &SpaceOptions) -> Option<Vec<u8>> {
    if opts.metadata.is_empty() {
        return None;
    }
    // A map of strings to JSON values always serializes.
    serde_json::to_vec(&opts.metadata).ok()
}

impl TraceState {
    /// `Trace::create_space` (`space_created`), its metadata serialized here.
    #[cfg(test)]
    pub(crate) fn create_space(&mut self, opts: SpaceOptions) -> Result<SpaceInfo> {
        let metadata = space_metadata_json(&opts);
        self.create_space_with(opts, metadata.as_deref())
    }

    /// `Trace::create_space` (`space_created`); `metadata` is the options'
    /// metadata as JSON ([`space_metadata_json`]), serialized by the caller
    /// before it took the lock.
    pub(crate) fn create_space_with(
        &mut self,
        opts: SpaceOptions,
        metadata: Option<&[u8]>,
    ) -> Result<SpaceInfo> {
        self.check_open()?;
        if self.spaces.list.len() >= self.limits.max_spaces {
            return Err(Error::LimitExceeded {
                what: "spaces",
                limit: self.limits.max_spaces,
            });
        }
        let ts = self.tick();
        let id = loop {
            let id = ShortId::generate();
            if !self.spaces.list.iter().any(|s| s.id == id) {
                break id;
            }
        };
        let data = self.spaces.new_map();
        let sp = SpaceRec {
            id,
            label: opts.label,
            space_type: opts.space_type,
            icon: opts.icon,
            description: opts.description,
            ttl: opts.ttl,
            metadata: opts.metadata,
            created_at: ts,
            updated_at: ts,
            data,
        };
        // The payload is the space itself (the reference's TraceSpace),
        // encoded now: a space's metadata is not kept as bytes.
        let payload = value::write(|out| {
            out.begin_obj();
            out.key("id").ascii_str(sp.id.as_str());
            out.key("label").str(&sp.label);
            out.key("type").str(&sp.space_type);
            out.key("icon").str(&sp.icon);
            out.key("description").str(&sp.description);
            out.key("ttl").int(sp.ttl);
            if let Some(m) = metadata {
                out.key("metadata").json(m);
            }
            out.key("created_at").int(sp.created_at);
            out.key("updated_at").int(sp.updated_at);
            out.end_obj();
        });
        let info = sp.info();
        self.spaces.list.push(sp);
        self.touch_space(id, SPACE_META);
        self.emit(
            EventKind::SpaceCreated,
            ts,
            PayloadRec::Encoded { space: id, payload },
        );
        Ok(info)
    }

    /// `Trace::delete_space` (`space_deleted`).
    pub(crate) fn delete_space(&mut self, space: &str) -> Result<()> {
        self.check_open()?;
        let si = self.spaces.find(space)?;
        let ts = self.tick();
        // Its `memory_*` records name it by id (their title is its label):
        // encode them while it exists.
        let (log, src) = self.split();
        log.encode_all(&src);
        let rec = self.spaces.list.remove(si);
        self.spaces.entries -= rec.data.len();
        let id = rec.id;
        self.spaces.recycle(rec.data);
        self.touch_space(id, SPACE_DELETED);
        let payload = value::write(|out| {
            out.begin_obj();
            out.key("space_id").ascii_str(id.as_str());
            out.end_obj();
        });
        self.emit(
            EventKind::SpaceDeleted,
            ts,
            PayloadRec::Encoded { space: id, payload },
        );
        Ok(())
    }

    /// `Trace::set_space_value`: `key_text` is `key` as shared text,
    /// `value` the serialized value.
    pub(crate) fn set_space_value(
        &mut self,
        space: &str,
        key: &str,
        key_text: Val,
        value: Val,
    ) -> Result<()> {
        self.check_open()?;
        let si = self.spaces.find(space)?;
        let data = &self.spaces.list[si].data;
        if !data.contains_key(key) {
            let (per_space, per_trace) = (
                self.limits.max_space_entries,
                self.limits.max_trace_space_entries,
            );
            let limit = if data.len() >= per_space {
                Some(per_space)
            } else if self.spaces.entries >= per_trace {
                Some(per_trace)
            } else {
                None
            };
            if let Some(limit) = limit {
                return Err(Error::LimitExceeded {
                    what: "space_entries",
                    limit,
                });
            }
        }
        let ts = self.tick();
        let sp = &mut self.spaces.list[si];
        let existed = match sp.data.get_mut(key) {
            Some(v) => {
                *v = value.clone();
                true
            }
            None => {
                sp.data.insert(key.to_owned(), value.clone());
                false
            }
        };
        sp.updated_at = ts;
        let id = sp.id;
        if !existed {
            self.spaces.entries += 1;
        }
        self.touch_space(id, SPACE_META | SPACE_DATA);
        let kind = if existed {
            EventKind::MemoryUpdate
        } else {
            EventKind::MemoryAdd
        };
        self.emit(
            kind,
            ts,
            PayloadRec::Memory {
                space: id,
                key: key_text,
                value,
            },
        );
        Ok(())
    }

    /// `Trace::get_space_value`.
    pub(crate) fn get_space_value(&self, space: &str, key: &str) -> Result<Option<Value>> {
        let si = self.spaces.find(space)?;
        Ok(self.spaces.list[si].data.get(key).map(|v| value::decode(v)))
    }

    /// `Trace::has_space_value`.
    pub(crate) fn has_space_value(&self, space: &str, key: &str) -> bool {
        self.spaces
            .find(space)
            .map(|si| self.spaces.list[si].data.contains_key(key))
            .unwrap_or(false)
    }

    /// `Trace::delete_space_value` (`memory_delete`; `key_text`: the key as text).
    pub(crate) fn delete_space_value(
        &mut self,
        space: &str,
        key: &str,
        key_text: Val,
    ) -> Result<()> {
        self.check_open()?;
        let si = self.spaces.find(space)?;
        let ts = self.tick();
        let sp = &mut self.spaces.list[si];
        let removed = sp.data.shift_remove(key).is_some();
        sp.updated_at = ts;
        let id = sp.id;
        if removed {
            self.spaces.entries -= 1;
        }
        self.touch_space(id, SPACE_META | SPACE_DATA);
        self.emit(
            EventKind::MemoryDelete,
            ts,
            PayloadRec::MemoryDelete {
                space: id,
                key: Some(key_text),
            },
        );
        Ok(())
    }

    /// `Trace::clear_space_values` (`memory_delete` with `cleared: true`).
    pub(crate) fn clear_space_values(&mut self, space: &str) -> Result<()> {
        self.check_open()?;
        let si = self.spaces.find(space)?;
        let ts = self.tick();
        let sp = &mut self.spaces.list[si];
        let n = sp.data.len();
        sp.data.clear();
        sp.updated_at = ts;
        let id = sp.id;
        self.spaces.entries -= n;
        self.touch_space(id, SPACE_META | SPACE_DATA);
        self.emit(
            EventKind::MemoryDelete,
            ts,
            PayloadRec::MemoryDelete {
                space: id,
                key: None,
            },
        );
        Ok(())
    }

    /// `Trace::space`.
    pub(crate) fn space(&self, space: &str) -> Option<SpaceInfo> {
        self.spaces
            .find(space)
            .ok()
            .map(|si| self.spaces.list[si].info())
    }

    /// `Trace::space_keys`.
    pub(crate) fn space_keys(&self, space: &str) -> Result<Vec<String>> {
        let si = self.spaces.find(space)?;
        Ok(self.spaces.list[si].data.keys().cloned().collect())
    }

    /// `Trace::space_data`.
    pub(crate) fn space_data(&self, space: &str) -> Option<SpaceData> {
        self.spaces.find(space).ok().map(|si| {
            let sp = &self.spaces.list[si];
            SpaceData {
                info: sp.info(),
                data: sp.values(),
            }
        })
    }

    /// `Trace::spaces`.
    pub(crate) fn spaces(&self) -> Vec<SpaceInfo> {
        self.spaces.list.iter().map(SpaceRec::info).collect()
    }
}
