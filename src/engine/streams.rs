//! Resumable streams: the events of each conversation's latest streamed run, kept while it
//! runs and for a while after (`PALAVER_STREAM_RETENTION_SECS`), so that a client whose
//! connection dropped can read the rest (`GET /v1/conversations/{id}/stream`). An event's
//! number is its position in the run, the SSE `id:` of the stream that carried it.
//!
//! The logs live in this process: a resume reaches the replica that runs (or ran) the turn.

use crate::domain::events::RunEvent;
use crate::domain::ids::{ConversationId, WorkspaceId};
use futures::Stream;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Most logs kept at once; past it the oldest finished ones go first.
const MOST_LOGS: usize = 1_000;

type Key = (WorkspaceId, ConversationId);

pub struct RunLogs {
    logs: Mutex<HashMap<Key, Arc<RunLog>>>,
    retention: Duration,
}

/// One run's events so far, and whether it has ended.
pub struct RunLog {
    events: Mutex<Vec<RunEvent>>,
    /// (events written, finished).
    progress: watch::Sender<(usize, bool)>,
    finished_at: Mutex<Option<Instant>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl RunLogs {
    pub fn new(retention: Duration) -> Self {
        RunLogs { logs: Mutex::new(HashMap::new()), retention }
    }

    pub fn retention(&self) -> Duration {
        self.retention
    }

    /// A new log for the conversation's next run; it replaces the previous run's.
    pub fn open(&self, ws: &WorkspaceId, conversation_id: &ConversationId) -> Arc<RunLog> {
        let log = Arc::new(RunLog {
            events: Mutex::new(Vec::new()),
            progress: watch::channel((0, false)).0,
            finished_at: Mutex::new(None),
        });
        let mut logs = lock(&self.logs);
        self.sweep(&mut logs);
        logs.insert((ws.clone(), conversation_id.clone()), log.clone());
        log
    }

    /// The log of the conversation's latest run, unless it ended longer ago than the
    /// retention.
    pub fn find(&self, ws: &WorkspaceId, conversation_id: &ConversationId) -> Option<Arc<RunLog>> {
        let logs = lock(&self.logs);
        let log = logs.get(&(ws.clone(), conversation_id.clone()))?;
        (!log.expired(self.retention)).then(|| log.clone())
    }

    /// Drops expired logs, and the oldest finished ones past `MOST_LOGS`.
    fn sweep(&self, logs: &mut HashMap<Key, Arc<RunLog>>) {
        logs.retain(|_, log| !log.expired(self.retention));
        if logs.len() < MOST_LOGS {
            return;
        }
        let mut finished: Vec<(Instant, Key)> =
            logs.iter().filter_map(|(key, log)| lock(&log.finished_at).map(|at| (at, key.clone()))).collect();
        finished.sort_unstable_by_key(|(at, _)| *at);
        for (_, key) in finished.into_iter().take(logs.len() + 1 - MOST_LOGS) {
            logs.remove(&key);
        }
    }
}

impl RunLog {
    /// Keeps an event that goes on the wire.
    pub fn push(&self, event: &RunEvent) {
        let written = {
            let mut events = lock(&self.events);
            events.push(event.clone());
            events.len()
        };
        self.progress.send_replace((written, false));
    }

    /// The run ended: followers stop after its last event.
    pub fn finish(&self) {
        *lock(&self.finished_at) = Some(Instant::now());
        let written = lock(&self.events).len();
        self.progress.send_replace((written, true));
    }

    fn expired(&self, retention: Duration) -> bool {
        lock(&self.finished_at).is_some_and(|at| at.elapsed() > retention)
    }

    /// The events after number `after` (all of them for `None`), with their numbers, then
    /// the ones still to come, until the run ends.
    pub fn follow(self: Arc<Self>, after: Option<u64>) -> impl Stream<Item = (u64, RunEvent)> + Send + 'static {
        let mut progress = self.progress.subscribe();
        let mut next = after.map_or(0, |n| usize::try_from(n.saturating_add(1)).unwrap_or(usize::MAX));
        async_stream::stream! {
            loop {
                let (_, finished) = *progress.borrow_and_update();
                let fresh: Vec<RunEvent> = lock(&self.events).get(next..).map(<[RunEvent]>::to_vec).unwrap_or_default();
                for event in fresh {
                    yield (next as u64, event);
                    next += 1;
                }
                if finished || progress.changed().await.is_err() {
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::time::Timestamp;
    use futures::StreamExt;

    fn started() -> RunEvent {
        RunEvent::Started { conversation_id: ConversationId("conv_1".into()), created_at: Timestamp::from_micros(1) }
    }

    #[tokio::test]
    async fn a_follower_gets_the_events_after_its_last_then_the_rest_as_they_come() {
        let logs = RunLogs::new(Duration::from_secs(60));
        let (ws, id) = (WorkspaceId::default_workspace(), ConversationId("conv_1".into()));
        let log = logs.open(&ws, &id);
        log.push(&started());
        log.push(&started());

        let follower = tokio::spawn(logs.find(&ws, &id).unwrap().follow(Some(0)).map(|(n, _)| n).collect::<Vec<_>>());
        tokio::task::yield_now().await;
        log.push(&started());
        log.finish();

        assert_eq!(follower.await.unwrap(), [1, 2]);
        assert_eq!(log.clone().follow(None).count().await, 3);
    }

    #[tokio::test]
    async fn a_finished_log_expires_after_the_retention() {
        let logs = RunLogs::new(Duration::ZERO);
        let (ws, id) = (WorkspaceId::default_workspace(), ConversationId("conv_1".into()));
        let log = logs.open(&ws, &id);
        assert!(logs.find(&ws, &id).is_some(), "a running run is always found");

        log.finish();
        std::thread::sleep(Duration::from_millis(2));

        assert!(logs.find(&ws, &id).is_none());
    }
}
