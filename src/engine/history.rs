//! An in-memory cache of conversation histories, keyed by workspace and head entry.
//!
//! Entries are immutable and the path from the root to a given entry never changes, so a
//! cached history can never be stale — even with several palaver processes sharing one
//! database (a process that did not see a turn just misses and reads the store). Appends
//! then skip the history query and its JSON decoding; the new head is filled in at commit
//! from the history the turn already holds. Bounded by the number of entry slots held.

use crate::domain::entries::Entry;
use crate::domain::ids::{EntryId, WorkspaceId};
use lru::LruCache;
use std::sync::{Arc, Mutex};

/// A history: the entries from the root to a head, oldest first, shared between holders.
pub type History = Arc<Vec<Arc<Entry>>>;

struct Inner {
    map: LruCache<(String, String), History>,
    slots: usize,
}

pub struct HistoryCache {
    inner: Mutex<Inner>,
    max_slots: usize,
}

impl HistoryCache {
    /// A cache holding at most `max_slots` entry references in all (0 disables it).
    pub fn new(max_slots: usize) -> Self {
        HistoryCache { inner: Mutex::new(Inner { map: LruCache::unbounded(), slots: 0 }), max_slots }
    }

    pub fn get(&self, ws: &WorkspaceId, head: &EntryId) -> Option<History> {
        if self.max_slots == 0 {
            return None;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        inner.map.get(&(ws.0.clone(), head.0.clone())).cloned()
    }

    pub fn insert(&self, ws: &WorkspaceId, head: &EntryId, history: History) {
        if self.max_slots == 0 || history.len() > self.max_slots {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        inner.slots += history.len();
        if let Some(old) = inner.map.put((ws.0.clone(), head.0.clone()), history) {
            inner.slots -= old.len();
        }
        while inner.slots > self.max_slots {
            match inner.map.pop_lru() {
                Some((_, evicted)) => inner.slots -= evicted.len(),
                None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::entries::Inputs;
    use crate::domain::time::Timestamp;

    fn history(n: usize) -> History {
        let inputs: Inputs = serde_json::from_value(serde_json::json!("x")).unwrap();
        let entry = Arc::new(inputs.into_entries(Timestamp::now()).unwrap().remove(0));
        Arc::new(vec![entry; n])
    }

    #[test]
    fn the_least_recently_used_histories_go_first_when_full() {
        let cache = HistoryCache::new(10);
        let ws = WorkspaceId::default_workspace();
        let (a, b, c) = (EntryId("a".into()), EntryId("b".into()), EntryId("c".into()));

        cache.insert(&ws, &a, history(4));
        cache.insert(&ws, &b, history(4));
        cache.get(&ws, &a);
        cache.insert(&ws, &c, history(4));

        assert!(cache.get(&ws, &a).is_some());
        assert!(cache.get(&ws, &b).is_none());
        assert!(cache.get(&ws, &c).is_some());
    }

    #[test]
    fn workspaces_do_not_share_entries() {
        let cache = HistoryCache::new(10);
        let head = EntryId("h".into());

        cache.insert(&WorkspaceId("one".into()), &head, history(1));

        assert!(cache.get(&WorkspaceId("two".into()), &head).is_none());
    }
}
