//! Resumable streams: the events of each conversation's latest streamed run, kept while it
//! runs and for a while after (`PALAVER_STREAM_RETENTION_SECS`), so that a client whose
//! connection dropped can read the rest (`GET /v1/conversations/{id}/stream`). An event's
//! number is its position in the run, the SSE `id:` of the stream that carried it.
//!
//! The logs live in this process; on a store that replicas share (Postgres) they are also
//! written to it in batches as the run goes on, so a resume reaching another replica reads
//! them there and follows the run by polling until it ends.

use crate::domain::events::RunEvent;
use crate::domain::ids::{ConversationId, WorkspaceId};
use crate::domain::time::Timestamp;
use crate::error::{Code, Error};
use crate::store::{RunWrite, Store, StoredEvent};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Most logs kept at once; past it the oldest finished ones go first.
const MOST_LOGS: usize = 1_000;

/// Logs left once the oldest finished ones are dropped: a tenth of `MOST_LOGS` is dropped in
/// one go, so that a streamed turn does not pay for a scan of every log when they are full.
const TRIMMED_LOGS: usize = MOST_LOGS - MOST_LOGS / 10;

/// How often expired logs are dropped; one found in between is treated as gone already.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

type Key = (WorkspaceId, ConversationId);

pub struct RunLogs {
    logs: Mutex<Logs>,
    retention: Duration,
    /// The logs also written to the store, when other replicas read it.
    sharing: Option<Sharing>,
}

/// The runs whose events go to the shared store. Every `SHARE_EVERY` one batch carries the
/// new events of all of them, in one transaction: with a task per run, each run cost
/// Postgres a commit of its own, and a streamed turn twice the database work of a turn
/// answered as JSON.
struct Sharing {
    store: Arc<dyn Store>,
    runs: Mutex<Vec<SharedRun>>,
    /// Wakes the writer when a run starts while it waits for one.
    started: tokio::sync::Notify,
    /// Held while a batch is written: the writer's loop and the flush at shut-down take
    /// turns, so neither writes a run's events twice.
    writing: tokio::sync::Mutex<()>,
}

struct SharedRun {
    ws: WorkspaceId,
    conversation_id: ConversationId,
    run_id: String,
    started_at: Timestamp,
    log: Arc<RunLog>,
    /// Events written so far; `None` before the first batch, which is written even when
    /// empty (it makes the run its conversation's latest).
    written: Option<usize>,
    /// Its end is written, or writing failed: it leaves the list.
    done: bool,
}

struct Logs {
    by_key: HashMap<Key, Arc<RunLog>>,
    swept_at: Instant,
    /// The count at which the oldest finished logs are dropped next: `MOST_LOGS`, or more
    /// while most logs are of running runs (which are never dropped), so that each trim
    /// frees a tenth's worth of slots before the next scan.
    trim_at: usize,
}

/// What one run adds to a batch.
struct Pending {
    index: usize,
    ws: WorkspaceId,
    conversation_id: ConversationId,
    run_id: String,
    started_at: Timestamp,
    events: Vec<StoredEvent>,
    /// Events in the log once these are written.
    total: usize,
    finished: bool,
}

/// How often a run's new events are written to a shared store, and how often a resume on
/// another replica looks for them.
const SHARE_EVERY: Duration = Duration::from_millis(100);

/// One event of a resumed stream: its number in the run, name and JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub number: u64,
    pub name: String,
    pub data: String,
}

impl Frame {
    fn of(number: u64, event: &RunEvent) -> Option<Frame> {
        let name = event.name()?;
        let data = serde_json::to_string(event).ok()?;
        Some(Frame { number, name: name.to_owned(), data })
    }

    pub fn is_terminal(&self) -> bool {
        matches!(self.name.as_str(), "conversation.response.done" | "conversation.response.error")
    }
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
    /// `shared`: the store other replicas read, if the logs are to be written to it.
    pub fn new(retention: Duration, shared: Option<Arc<dyn Store>>) -> Self {
        let sharing = shared.map(|store| Sharing {
            store,
            runs: Mutex::default(),
            started: tokio::sync::Notify::new(),
            writing: tokio::sync::Mutex::new(()),
        });
        let logs = Logs { by_key: HashMap::new(), swept_at: Instant::now(), trim_at: MOST_LOGS };
        RunLogs { logs: Mutex::new(logs), retention, sharing }
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
        {
            let mut logs = lock(&self.logs);
            self.sweep(&mut logs);
            logs.by_key.insert((ws.clone(), conversation_id.clone()), log.clone());
        }
        if let Some(sharing) = &self.sharing {
            lock(&sharing.runs).push(SharedRun {
                ws: ws.clone(),
                conversation_id: conversation_id.clone(),
                run_id: uuid::Uuid::now_v7().to_string(),
                started_at: Timestamp::now(),
                log: log.clone(),
                written: None,
                done: false,
            });
            sharing.started.notify_one();
        }
        log
    }

    /// Writes the runs' events to the shared store, a batch every `SHARE_EVERY` while any
    /// run is being shared, until the process ends. Returns at once without a shared store.
    pub async fn share(&self) {
        let Some(sharing) = &self.sharing else { return };
        loop {
            if lock(&sharing.runs).is_empty() {
                sharing.started.notified().await;
            }
            tokio::time::sleep(SHARE_EVERY).await;
            sharing.write_batch().await;
        }
    }

    /// Writes what the runs have not written yet: at shut-down, once the last turns ended.
    pub async fn flush(&self) {
        if let Some(sharing) = &self.sharing {
            sharing.write_batch().await;
        }
    }

    /// The events after `after` of the conversation's latest streamed run, then the rest as
    /// it goes on: from this process's log, else from the shared store.
    pub async fn resume(
        &self,
        ws: &WorkspaceId,
        conversation_id: &ConversationId,
        after: Option<u64>,
    ) -> Result<BoxStream<'static, Frame>, Error> {
        if let Some(log) = self.find(ws, conversation_id) {
            return Ok(log.follow(after).filter_map(|(n, event)| async move { Frame::of(n, &event) }).boxed());
        }
        let not_found = || Error::RunFailed {
            code: Code::NotFound,
            message: format!(
                "Conversation `{conversation_id}` has no streamed run to resume: the events of a finished run are \
                 kept for {} s.",
                self.retention.as_secs()
            ),
        };
        let Some(store) = self.sharing.as_ref().map(|sharing| sharing.store.clone()) else { return Err(not_found()) };
        let after = after.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
        let Some(first) = store.run_events(ws, conversation_id.as_str(), after).await? else { return Err(not_found()) };
        let expired = first
            .finished_at
            .is_some_and(|at| Timestamp::now().micros() - at.micros() > self.retention.as_micros() as i64);
        if expired {
            return Err(not_found());
        }
        let (ws, conversation_id) = (ws.clone(), conversation_id.clone());
        Ok(async_stream::stream! {
            let run_id = first.run_id.clone();
            let mut batch = first;
            let mut next = after;
            loop {
                // A newer run replaced the one being read: what was read is all there is.
                if batch.run_id != run_id {
                    break;
                }
                let finished = batch.finished_at.is_some();
                for event in batch.events {
                    next = event.seq;
                    yield Frame { number: event.seq as u64, name: event.name, data: event.data };
                }
                if finished {
                    break;
                }
                tokio::time::sleep(SHARE_EVERY).await;
                batch = match store.run_events(&ws, conversation_id.as_str(), next).await {
                    Ok(Some(batch)) => batch,
                    Ok(None) => break,
                    Err(error) => {
                        tracing::warn!(%error, "a resumed stream could not read the run's events");
                        break;
                    }
                };
            }
        }
        .boxed())
    }

    /// Deletes the shared logs of runs that ended longer ago than the retention.
    pub async fn purge_shared(&self) -> Result<u64, Error> {
        let Some(store) = self.sharing.as_ref().map(|sharing| &sharing.store) else { return Ok(0) };
        let before = Timestamp::now().minus(self.retention);
        Ok(store.purge_runs(before).await?)
    }

    /// The log of the conversation's latest run, unless it ended longer ago than the
    /// retention.
    pub fn find(&self, ws: &WorkspaceId, conversation_id: &ConversationId) -> Option<Arc<RunLog>> {
        let logs = lock(&self.logs);
        let log = logs.by_key.get(&(ws.clone(), conversation_id.clone()))?;
        (!log.expired(self.retention)).then(|| log.clone())
    }

    /// Drops expired logs (at most every `SWEEP_EVERY`), and when the logs reach `trim_at`,
    /// the oldest finished ones down to `TRIMMED_LOGS`.
    fn sweep(&self, logs: &mut Logs) {
        let now = Instant::now();
        if now.duration_since(logs.swept_at) >= SWEEP_EVERY {
            logs.by_key.retain(|_, log| !log.expired(self.retention));
            logs.swept_at = now;
        }
        if logs.by_key.len() < logs.trim_at {
            return;
        }
        let mut finished: Vec<(Instant, &Key)> =
            logs.by_key.iter().filter_map(|(key, log)| lock(&log.finished_at).map(|at| (at, key))).collect();
        let excess = logs.by_key.len().saturating_sub(TRIMMED_LOGS).min(finished.len());
        if excess < finished.len() {
            finished.select_nth_unstable_by_key(excess, |(at, _)| *at);
        }
        let oldest: Vec<Key> = finished[..excess].iter().map(|(_, key)| (*key).clone()).collect();
        for key in &oldest {
            logs.by_key.remove(key);
        }
        logs.trim_at = MOST_LOGS.max(logs.by_key.len() + MOST_LOGS / 10);
    }
}

impl Sharing {
    /// One batch: the events each run added since the last, and the ends of runs that
    /// finished. A failure is logged and those runs are no longer shared: a run never
    /// waits for this.
    async fn write_batch(&self) {
        let _writing = self.writing.lock().await;
        let pending: Vec<Pending> =
            lock(&self.runs).iter().enumerate().filter_map(|(index, run)| run.pending(index)).collect();
        if pending.is_empty() {
            return;
        }
        let now = Timestamp::now();
        let writes: Vec<RunWrite<'_>> = pending
            .iter()
            .map(|p| RunWrite {
                ws: &p.ws,
                conversation_id: p.conversation_id.as_str(),
                run_id: &p.run_id,
                started_at: p.started_at,
                events: &p.events,
                finished_at: p.finished.then_some(now),
            })
            .collect();
        let written = self.store.write_runs(&writes).await;
        if let Err(error) = &written {
            tracing::warn!(%error, runs = pending.len(), "streamed runs' events could not be shared for resuming");
        }
        // Only this (under `writing`) removes runs, and `open` only appends: the indexes
        // taken above still point at the same runs.
        let mut runs = lock(&self.runs);
        for p in &pending {
            let run = &mut runs[p.index];
            run.written = Some(p.total);
            run.done = p.finished || written.is_err();
        }
        runs.retain(|run| !run.done);
    }
}

impl SharedRun {
    /// What the next batch writes of this run, if anything.
    fn pending(&self, index: usize) -> Option<Pending> {
        // Read before the events: a run marked finished has all its events in the log.
        let finished = self.log.progress.borrow().1;
        let from = self.written.unwrap_or(0);
        let (events, total) = {
            let log = lock(&self.log.events);
            let events: Vec<StoredEvent> = log
                .get(from..)
                .unwrap_or_default()
                .iter()
                .enumerate()
                .filter_map(|(i, event)| {
                    let frame = Frame::of((from + i) as u64, event)?;
                    Some(StoredEvent { seq: frame.number as i64, name: frame.name, data: frame.data })
                })
                .collect();
            (events, log.len())
        };
        if self.written.is_some() && total == from && !finished {
            return None;
        }
        Some(Pending {
            index,
            ws: self.ws.clone(),
            conversation_id: self.conversation_id.clone(),
            run_id: self.run_id.clone(),
            started_at: self.started_at,
            events,
            total,
            finished,
        })
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
        let logs = RunLogs::new(Duration::from_secs(60), None);
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

    async fn shared_store() -> Arc<dyn Store> {
        crate::store::connect("sqlite::memory:", Default::default()).await.unwrap()
    }

    /// Each batch carries what every run added since the last, for all runs in one write;
    /// a run whose end was written leaves the list.
    #[tokio::test]
    async fn runs_are_shared_in_batches_of_what_each_added() {
        let store = shared_store().await;
        let logs = RunLogs::new(Duration::from_secs(60), Some(store.clone()));
        let ws = WorkspaceId::default_workspace();
        let (a, b) = (ConversationId("conv_a".into()), ConversationId("conv_b".into()));
        let (log_a, log_b) = (logs.open(&ws, &a), logs.open(&ws, &b));
        log_a.push(&started());
        logs.flush().await;
        let read = |id: &'static str| store.run_events(&ws, id, -1);
        assert_eq!(read("conv_a").await.unwrap().unwrap().events.len(), 1);
        assert_eq!(read("conv_b").await.unwrap().unwrap().events.len(), 0, "a run with no event yet is the latest too");

        log_a.push(&started());
        log_a.finish();
        log_b.push(&started());
        logs.flush().await;
        logs.flush().await;

        let (run_a, run_b) = (read("conv_a").await.unwrap().unwrap(), read("conv_b").await.unwrap().unwrap());
        assert_eq!(run_a.events.iter().map(|e| e.seq).collect::<Vec<_>>(), [0, 1], "each event once");
        assert!(run_a.finished_at.is_some());
        assert_eq!((run_b.events.len(), run_b.finished_at), (1, None));
        let sharing = logs.sharing.as_ref().unwrap();
        assert_eq!(lock(&sharing.runs).len(), 1, "the finished run left the list");
    }

    /// The writer, idle while no run is shared, wakes for one that starts.
    #[tokio::test]
    async fn the_writer_wakes_for_a_run_that_starts_while_it_waits() {
        let store = shared_store().await;
        let logs = Arc::new(RunLogs::new(Duration::from_secs(60), Some(store.clone())));
        let writer = tokio::spawn({
            let logs = logs.clone();
            async move { logs.share().await }
        });
        tokio::time::sleep(SHARE_EVERY * 2).await;
        let (ws, id) = (WorkspaceId::default_workspace(), ConversationId("conv_1".into()));
        let log = logs.open(&ws, &id);
        log.push(&started());
        log.finish();

        let deadline = Instant::now() + Duration::from_secs(10);
        while store.run_events(&ws, id.as_str(), -1).await.unwrap().is_none_or(|run| run.finished_at.is_none()) {
            assert!(Instant::now() < deadline, "the run was not written");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        writer.abort();
    }

    /// Past `MOST_LOGS` the oldest finished logs go, a tenth at a time; running ones stay
    /// however many there are.
    #[test]
    fn the_oldest_finished_logs_go_first_and_running_ones_stay() {
        let logs = RunLogs::new(Duration::from_secs(60), None);
        let ws = WorkspaceId::default_workspace();
        let id = |n: usize| ConversationId(format!("conv_{n}"));
        let running: Vec<Arc<RunLog>> = (0..MOST_LOGS / 2).map(|n| logs.open(&ws, &id(n))).collect();
        for n in MOST_LOGS / 2..MOST_LOGS {
            logs.open(&ws, &id(n)).finish();
        }
        assert_eq!(lock(&logs.logs).by_key.len(), MOST_LOGS);

        logs.open(&ws, &id(MOST_LOGS)).finish();

        assert_eq!(lock(&logs.logs).by_key.len(), TRIMMED_LOGS + 1);
        let dropped = MOST_LOGS - TRIMMED_LOGS;
        for n in MOST_LOGS / 2..MOST_LOGS / 2 + dropped {
            assert!(logs.find(&ws, &id(n)).is_none(), "conv_{n} is among the oldest finished");
        }
        assert!(logs.find(&ws, &id(MOST_LOGS / 2 + dropped)).is_some());
        assert!((0..MOST_LOGS / 2).all(|n| logs.find(&ws, &id(n)).is_some()), "running logs stay");

        // Once every log is of a running run, none can go: the logs grow past MOST_LOGS,
        // and each scan that finds nothing to drop puts the next a tenth further on.
        let more: Vec<Arc<RunLog>> = (MOST_LOGS + 1..MOST_LOGS * 2).map(|n| logs.open(&ws, &id(n))).collect();
        let (count, trim_at) = {
            let kept = lock(&logs.logs);
            (kept.by_key.len(), kept.trim_at)
        };
        assert_eq!(count, MOST_LOGS / 2 + more.len(), "every finished log went, no running one");
        assert!((count..=count + MOST_LOGS / 10).contains(&trim_at), "{count} logs, next scan at {trim_at}");
        drop((running, more));
    }

    #[tokio::test]
    async fn a_finished_log_expires_after_the_retention() {
        let logs = RunLogs::new(Duration::ZERO, None);
        let (ws, id) = (WorkspaceId::default_workspace(), ConversationId("conv_1".into()));
        let log = logs.open(&ws, &id);
        assert!(logs.find(&ws, &id).is_some(), "a running run is always found");

        log.finish();
        std::thread::sleep(Duration::from_millis(2));

        assert!(logs.find(&ws, &id).is_none());
    }
}
