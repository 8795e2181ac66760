//! The registry: trace id -> slot of loaded traces, and of released traces
//! whose slots are still draining.
//!
//! One map behind a reader-writer lock, hashed with the engine's fast seeded
//! id hasher. (Sharding it over 32 locks was measured: it made a create +
//! release 18% slower on one thread — every create touched a cold shard —
//! and no faster on two; see docs/PERFORMANCE.md.) Ids are stored inline
//! (no allocation per entry) and are never slot
//! indices: a slot index is an implementation detail that is reused, a trace
//! id is the caller's name for a trace. A draining entry is not loaded (no
//! handle can reach it); it is kept so that reads of that id can wait until
//! storage has everything, and so that the id is not created again meanwhile.

use std::sync::RwLock;

use crate::id::{IdMap, TraceId};

/// Where a trace lives: slot index and generation.
pub(crate) type SlotRef = (u32, u64);

/// What the registry knows about an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Entry {
    /// Loaded in this slot.
    Loaded(SlotRef),
    /// Released; its slot is handing its last writes to the driver.
    Draining(SlotRef),
}

#[derive(Debug)]
pub(crate) struct Registry {
    map: RwLock<IdMap<TraceId, Entry>>,
}

impl Registry {
    pub(crate) fn with_capacity(n: usize) -> Registry {
        Registry {
            map: RwLock::new(IdMap::with_capacity_and_hasher(n, Default::default())),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, IdMap<TraceId, Entry>> {
        self.map.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, IdMap<TraceId, Entry>> {
        self.map.write().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn get(&self, id: &TraceId) -> Option<Entry> {
        self.read().get(id).copied()
    }

    /// The slot of a loaded trace.
    pub(crate) fn loaded(&self, id: &TraceId) -> Option<SlotRef> {
        match self.get(id) {
            Some(Entry::Loaded(at)) => Some(at),
            _ => None,
        }
    }

    /// Registers a loaded trace unless the id is present (atomic check-and-insert).
    pub(crate) fn insert_if_absent(&self, id: TraceId, at: SlotRef) -> bool {
        let mut m = self.write();
        if m.contains_key(&id) {
            return false;
        }
        m.insert(id, Entry::Loaded(at));
        true
    }

    /// The loaded trace at `at` was released: it is now draining, or gone.
    pub(crate) fn released(&self, id: &TraceId, at: SlotRef, draining: bool) {
        let mut m = self.write();
        if m.get(id) == Some(&Entry::Loaded(at)) {
            if draining {
                m.insert(*id, Entry::Draining(at));
            } else {
                m.remove(id);
            }
        }
    }

    /// The draining trace at `at` has drained.
    pub(crate) fn drained(&self, id: &TraceId, at: SlotRef) {
        let mut m = self.write();
        if m.get(id) == Some(&Entry::Draining(at)) {
            m.remove(id);
        }
    }

    /// Ids of the loaded traces, sorted.
    pub(crate) fn loaded_ids_sorted(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .read()
            .iter()
            .filter(|(_, e)| matches!(e, Entry::Loaded(_)))
            .map(|(k, _)| k.as_str().to_owned())
            .collect();
        v.sort_unstable();
        v
    }

    /// Ids of the draining traces.
    pub(crate) fn draining_ids(&self) -> Vec<String> {
        self.read()
            .iter()
            .filter(|(_, e)| matches!(e, Entry::Draining(_)))
            .map(|(k, _)| k.as_str().to_owned())
            .collect()
    }

    /// Every loaded trace.
    pub(crate) fn loaded_entries(&self) -> Vec<(TraceId, SlotRef)> {
        self.read()
            .iter()
            .filter_map(|(k, e)| match e {
                Entry::Loaded(at) => Some((*k, *at)),
                Entry::Draining(_) => None,
            })
            .collect()
    }
}
