//! In-memory conversation histories: a cache keyed by workspace and head entry, and the
//! history type itself, which carries its chat messages JSON once a backend has written it.
//!
//! Entries are immutable and the path from the root to a given entry never changes, so a
//! cached history can never be stale — even with several palaver processes sharing one
//! database (a process that did not see a turn just misses and reads the store). Appends
//! then skip the history query and its JSON decoding; the new head is filled in at commit
//! from the history the turn already holds. Bounded by the number of entry slots held.

use super::context;
use crate::backends::chat::{json_capacity, write_message};
use crate::domain::entries::Entry;
use crate::domain::ids::{EntryId, WorkspaceId};
use bytes::Bytes;
use lru::LruCache;
use std::sync::{Arc, Mutex, OnceLock};

/// The entries from the root to a head, oldest first, shared between holders.
#[derive(Debug, Clone, Default)]
pub struct History(Arc<Path>);

#[derive(Debug, Default)]
struct Path {
    entries: Vec<Arc<Entry>>,
    /// The chat messages of `entries` as JSON (`backends::chat::write_message`, comma
    /// separated, no brackets). Written by the first backend that sends it upstream, then
    /// carried to the next head by `extended`: a turn serializes only its own messages, not
    /// the whole history again.
    chat_json: OnceLock<Bytes>,
}

impl History {
    pub fn new(entries: Vec<Arc<Entry>>) -> Self {
        History(Arc::new(Path { entries, chat_json: OnceLock::new() }))
    }

    pub fn chat_json(&self) -> &OnceLock<Bytes> {
        &self.0.chat_json
    }

    /// This history followed by a committed turn's entries. Its chat JSON, when this one has
    /// it, is this one's with the turn's messages appended. When nothing else holds this
    /// history (the usual case at commit, once the cache let go of the old head), the entry
    /// list and the JSON grow in place: a turn costs the size of the turn, not of the history.
    pub fn extended(self, turn: Vec<Entry>) -> History {
        let (mut entries, json) = match Arc::try_unwrap(self.0) {
            Ok(path) => (path.entries, path.chat_json.into_inner()),
            Err(shared) => {
                let mut entries = Vec::with_capacity(shared.entries.len() + turn.len());
                entries.extend(shared.entries.iter().cloned());
                (entries, shared.chat_json.get().cloned())
            }
        };
        let start = entries.len();
        entries.extend(turn.into_iter().map(Arc::new));
        let json = json.and_then(|json| {
            let (before, after) = entries.split_at(start);
            // `None` when the turn's first message belongs to the history's last one (a
            // call joining its assistant message): written in full when next needed.
            let messages = context::messages_after(before, after.iter().map(|e| e.as_ref()))?;
            // No copy when this was the JSON's only holder.
            let mut out = Vec::from(json);
            out.reserve(json_capacity(&messages));
            for message in &messages {
                write_message(&mut out, message);
            }
            Some(Bytes::from(out))
        });
        History(Arc::new(Path { entries, chat_json: json.map(OnceLock::from).unwrap_or_default() }))
    }
}

impl std::ops::Deref for History {
    type Target = [Arc<Entry>];

    fn deref(&self) -> &[Arc<Entry>] {
        &self.0.entries
    }
}

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
        let mut inner = self.lock();
        inner.map.get(&(ws.0.clone(), head.0.clone())).cloned()
    }

    pub fn insert(&self, ws: &WorkspaceId, head: &EntryId, history: History) {
        if self.max_slots == 0 || history.len() > self.max_slots {
            return;
        }
        let mut inner = self.lock();
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

    /// Caches `history` followed by `turn` under `head`, the conversation's new head, and
    /// drops the history of `previous`, its old one: a conversation that moved on is not
    /// appended to at its old head again, and letting go of it first leaves `history` with
    /// no other holder, so it grows in place (`History::extended`).
    pub fn advance(
        &self,
        ws: &WorkspaceId,
        previous: Option<&EntryId>,
        head: &EntryId,
        history: History,
        turn: Vec<Entry>,
    ) {
        if self.max_slots == 0 {
            return;
        }
        if let Some(previous) = previous {
            let old = {
                let mut inner = self.lock();
                let old = inner.map.pop(&(ws.0.clone(), previous.0.clone()));
                if let Some(old) = &old {
                    inner.slots -= old.len();
                }
                old
            };
            // Before `extended`: the old head's copy would keep `history` shared.
            drop(old);
        }
        if history.len() + turn.len() <= self.max_slots {
            self.insert(ws, head, history.extended(turn));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::entries::Inputs;
    use crate::domain::time::Timestamp;

    fn history(n: usize) -> History {
        History::new(turn(n).into_iter().map(Arc::new).collect())
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

    fn turn(n: usize) -> Vec<Entry> {
        let inputs: Inputs = serde_json::from_value(serde_json::json!("y")).unwrap();
        let entry = inputs.into_entries(Timestamp::now()).unwrap().remove(0);
        vec![entry; n]
    }

    /// The JSON of every message of `history`, written in full.
    fn full_json(history: &History) -> Vec<u8> {
        let mut out = Vec::new();
        for message in context::history_messages(history) {
            write_message(&mut out, &message);
        }
        out
    }

    fn with_json(history: History, spare: usize) -> History {
        let mut json = full_json(&history);
        json.reserve_exact(spare);
        history.chat_json().set(Bytes::from(json)).unwrap();
        history
    }

    /// A cache of `slots`, and a conversation's head before and after a turn.
    fn moving_head(slots: usize) -> (HistoryCache, WorkspaceId, EntryId, EntryId) {
        (HistoryCache::new(slots), WorkspaceId::default_workspace(), EntryId("old".into()), EntryId("new".into()))
    }

    #[test]
    fn a_conversation_that_moved_on_leaves_its_old_head_behind() {
        let (cache, ws, old, new) = moving_head(10);
        cache.insert(&ws, &old, history(4));

        let held = cache.get(&ws, &old).unwrap();
        cache.advance(&ws, Some(&old), &new, held, turn(2));

        assert!(cache.get(&ws, &old).is_none());
        assert_eq!(cache.get(&ws, &new).map(|h| h.len()), Some(6));
        // The old head's slots were given back: another history of 4 still fits.
        cache.insert(&ws, &old, history(4));
        assert!(cache.get(&ws, &new).is_some());
    }

    #[test]
    fn a_conversation_that_outgrew_the_cache_leaves_it() {
        let (cache, ws, old, new) = moving_head(10);
        cache.insert(&ws, &old, history(8));

        cache.advance(&ws, Some(&old), &new, history(8), turn(4));

        assert!(cache.get(&ws, &old).is_none());
        assert!(cache.get(&ws, &new).is_none());
    }

    #[test]
    fn a_history_nothing_else_holds_grows_in_place() {
        let (cache, ws, old, new) = moving_head(100);
        let history = with_json(history(3), 1024);
        let json_at = history.chat_json().get().unwrap().as_ptr();
        cache.insert(&ws, &old, history.clone());

        cache.advance(&ws, Some(&old), &new, history, turn(2));

        let extended = cache.get(&ws, &new).unwrap();
        let json = extended.chat_json().get().unwrap();
        assert_eq!(json.as_ptr(), json_at, "the JSON was copied");
        assert_eq!(json.as_ref(), full_json(&extended).as_slice());
    }

    #[test]
    fn a_shared_history_is_extended_as_a_copy_and_left_as_it_was() {
        let history = with_json(history(3), 1024);
        let before = history.chat_json().get().unwrap().clone();
        let other_holder = history.clone();

        let extended = history.extended(turn(2));

        assert_eq!(other_holder.len(), 3);
        assert_eq!(other_holder.chat_json().get(), Some(&before));
        assert_eq!(extended.len(), 5);
        assert_eq!(extended.chat_json().get().unwrap().as_ref(), full_json(&extended).as_slice());
    }

    #[test]
    fn workspaces_do_not_share_entries() {
        let cache = HistoryCache::new(10);
        let head = EntryId("h".into());

        cache.insert(&WorkspaceId("one".into()), &head, history(1));

        assert!(cache.get(&WorkspaceId("two".into()), &head).is_none());
    }
}
