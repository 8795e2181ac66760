//! The registry: trace id -> (slot index, generation) of loaded traces.
//!
//! Ids are stored inline (no allocation per entry) and are never slot
//! indices: a slot index is an implementation detail that is reused, a trace
//! id is the caller's name for a trace.

use std::collections::HashMap;
use std::sync::RwLock;

use crate::id::TraceId;

/// Where a loaded trace lives.
pub(crate) type SlotRef = (u32, u64);

#[derive(Debug)]
pub(crate) struct Registry {
    map: RwLock<HashMap<TraceId, SlotRef>>,
}

impl Registry {
    pub(crate) fn with_capacity(n: usize) -> Registry {
        Registry {
            map: RwLock::new(HashMap::with_capacity(n)),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<TraceId, SlotRef>> {
        self.map.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<TraceId, SlotRef>> {
        self.map.write().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn get(&self, id: &TraceId) -> Option<SlotRef> {
        self.read().get(id).copied()
    }

    /// Inserts unless the id is present (atomic check-and-insert).
    pub(crate) fn insert_if_absent(&self, id: TraceId, at: SlotRef) -> bool {
        let mut m = self.write();
        if m.contains_key(&id) {
            return false;
        }
        m.insert(id, at);
        true
    }

    pub(crate) fn remove(&self, id: &TraceId) -> Option<SlotRef> {
        self.write().remove(id)
    }

    /// Removes the entry only if it still points at `at` (a handle's own trace).
    pub(crate) fn remove_if(&self, id: &TraceId, at: SlotRef) -> bool {
        let mut m = self.write();
        if m.get(id) == Some(&at) {
            m.remove(id);
            true
        } else {
            false
        }
    }

    pub(crate) fn ids_sorted(&self) -> Vec<String> {
        let mut v: Vec<String> = self.read().keys().map(|k| k.as_str().to_owned()).collect();
        v.sort_unstable();
        v
    }

    pub(crate) fn entries(&self) -> Vec<(TraceId, SlotRef)> {
        self.read().iter().map(|(k, v)| (*k, *v)).collect()
    }
}
