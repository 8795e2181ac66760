//! The registry: trace id -> slot of loaded traces, and of released traces
//! whose slots are still draining.
//!
//! The map is sharded over 16 locks, so creates and releases on different
//! threads rarely contend (measured with `benches/contention.rs`: one map
//! behind one lock was 15% slower per create + release on two threads). Ids are stored inline
//! (no allocation per entry) and are never slot
//! indices: a slot index is an implementation detail that is reused, a trace
//! id is the caller's name for a trace. A draining entry is not loaded (no
//! handle can reach it); it is kept so that reads of that id can wait until
//! storage has everything, and so that the id is not created again meanwhile.

use std::collections::hash_map::Entry as MapEntry;

use crate::id::{IdMap, TraceId};
use crate::pool::SlotKey;
use crate::spin_lock::{SpinGuard, SpinLock};

/// What the registry knows about an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Entry {
    /// Loaded in this checkout of its slot.
    Loaded(SlotKey),
    /// Released; its slot is handing its last writes to the driver.
    Draining(SlotKey),
}

/// Shards of the map: ids are spread over them by their last bytes, so that
/// creates and releases on different threads rarely take the same lock.
const SHARDS: usize = 16;

/// One shard, on its own cache lines. Its lock is a [`SpinLock`]: the
/// sections are one hash-map probe.
#[derive(Default)]
#[repr(align(128))]
struct Shard(SpinLock<IdMap<TraceId, Entry>>);

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Shard")
    }
}

#[derive(Debug)]
pub(crate) struct Registry {
    shards: Box<[Shard]>,
}

impl Registry {
    pub(crate) fn with_capacity(n: usize) -> Registry {
        let per = n / SHARDS + 8;
        Registry {
            shards: (0..SHARDS)
                .map(|_| {
                    Shard(SpinLock::new(IdMap::with_capacity_and_hasher(
                        per,
                        Default::default(),
                    )))
                })
                .collect(),
        }
    }

    /// The shard of `id`, locked. Chosen from the id's last (up to) eight
    /// bytes, mixed: generated ids end in a serial, so consecutive traces
    /// land on different shards; cheaper than hashing the whole id twice.
    fn shard(&self, id: &TraceId) -> SpinGuard<'_, IdMap<TraceId, Entry>> {
        let b = id.as_str().as_bytes();
        let w = match b.last_chunk::<8>() {
            Some(last) => u64::from_le_bytes(*last),
            None => b.iter().fold(0, |w, &c| (w << 8) | u64::from(c)),
        };
        let h = w.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let s = &self.shards[(h >> 60) as usize % SHARDS];
        s.0.lock()
    }

    /// Every shard, one at a time.
    fn each(&self, mut f: impl FnMut(&IdMap<TraceId, Entry>)) {
        for s in self.shards.iter() {
            f(&s.0.lock());
        }
    }

    pub(crate) fn get(&self, id: &TraceId) -> Option<Entry> {
        self.shard(id).get(id).copied()
    }

    /// The checkout of a loaded trace.
    pub(crate) fn loaded(&self, id: &TraceId) -> Option<SlotKey> {
        match self.get(id) {
            Some(Entry::Loaded(at)) => Some(at),
            _ => None,
        }
    }

    /// Registers a loaded trace unless the id is present (atomic check-and-insert).
    pub(crate) fn insert_if_absent(&self, id: TraceId, at: SlotKey) -> bool {
        match self.shard(&id).entry(id) {
            MapEntry::Occupied(_) => false,
            MapEntry::Vacant(v) => {
                v.insert(Entry::Loaded(at));
                true
            }
        }
    }

    /// The loaded trace at `at` was released: it is now draining, or gone.
    pub(crate) fn released(&self, id: &TraceId, at: SlotKey, draining: bool) {
        // One lookup: the entry is changed or removed in place.
        if let MapEntry::Occupied(mut o) = self.shard(id).entry(*id)
            && *o.get() == Entry::Loaded(at)
        {
            if draining {
                *o.get_mut() = Entry::Draining(at);
            } else {
                o.remove();
            }
        }
    }

    /// The draining trace at `at` has drained.
    pub(crate) fn drained(&self, id: &TraceId, at: SlotKey) {
        if let MapEntry::Occupied(o) = self.shard(id).entry(*id)
            && *o.get() == Entry::Draining(at)
        {
            o.remove();
        }
    }

    /// Ids of the loaded traces, sorted.
    pub(crate) fn loaded_ids_sorted(&self) -> Vec<String> {
        let mut v = Vec::new();
        self.each(|m| {
            v.extend(
                m.iter()
                    .filter(|(_, e)| matches!(e, Entry::Loaded(_)))
                    .map(|(k, _)| k.as_str().to_owned()),
            );
        });
        v.sort_unstable();
        v
    }

    /// Ids of the draining traces.
    pub(crate) fn draining_ids(&self) -> Vec<String> {
        let mut v = Vec::new();
        self.each(|m| {
            v.extend(
                m.iter()
                    .filter(|(_, e)| matches!(e, Entry::Draining(_)))
                    .map(|(k, _)| k.as_str().to_owned()),
            );
        });
        v
    }

    /// Every loaded trace.
    pub(crate) fn loaded_entries(&self) -> Vec<(TraceId, SlotKey)> {
        let mut v = Vec::new();
        self.each(|m| {
            v.extend(m.iter().filter_map(|(k, e)| match e {
                Entry::Loaded(at) => Some((*k, *at)),
                Entry::Draining(_) => None,
            }));
        });
        v
    }
}
