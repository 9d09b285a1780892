//! SQLite store: the zero set-up default. One file in WAL mode.
//!
//! The store's one connection is owned by a thread of our own, which runs what would block:
//! calls that must wait (for another process's lock, for a `synchronous=FULL` commit's disk
//! sync, for the connection while another call has it) and large blob chunks. A store call
//! is one closure, so a whole use case — a turn's commit with its `BEGIN`, compare-and-set,
//! inserts and `COMMIT` — costs at most one thread hand-off, and writes that queue while
//! the thread works share one commit. A read finding the connection idle runs on the
//! caller's own thread with no hand-off at all, as does a turn's commit when no other turn
//! is running (see [`Shared`]). (With sqlx every statement, and the ping it makes whenever a connection goes
//! back to its pool, was a hand-off of its own: a quarter of palaver's CPU per turn went to
//! those wake-ups.)
//!
//! One connection rather than a writer and readers: SQLite writes one at a time anyway;
//! with several connections each reader dropped its page cache and memory map whenever the
//! writer committed (every turn), and readers and writer contended for the WAL locks —
//! profiled, that cost more than reads ever gained from running in parallel. Writes queue
//! in-process instead of sleeping in SQLite's busy handler; another process on the same
//! file (a second palaver) is still waited for through the busy timeout, on the thread. A
//! second connection only checkpoints, on a thread of its own ([`Checkpointer`]).

use super::blobs::{BlobKey, ChunkTable};
use super::rows::{self, ReadRow};
use super::sql::{self, Columns, Naming};
use super::{
    AgentFilter, AgentRecord, AgentStore, AgentWrite, AliasRecord, ConversationRecord, ConversationStore, Database,
    FileFilter, FileRecord, FileStore, NewVersion, NotFoundAs, Page, RunEvents, RunStore, RunWrite, StoredEvent,
};
use super::{
    ClaimTimes, EntryColumns, IdempotencyStore, KeyClaim, KeyUse, StoreError, StoreResult, StoredAnswer, TurnWrite,
};
use crate::config::SqliteSynchronous;
use crate::domain::agents::{AgentConfig, VersionSelector};
use crate::domain::entries::Entry;
use crate::domain::ids::{AgentId, ConversationId, EntryId, FileId, WorkspaceId};
use crate::domain::time::Timestamp;
use anyhow::Context;
use async_trait::async_trait;
use rusqlite::types::{Null, ToSqlOutput, Type, Value as SqlValue};
use rusqlite::{params, params_from_iter, Connection, OpenFlags, OptionalExtension, Row, TransactionBehavior};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha384};
use std::cell::Cell;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// `column` holds every top-level key of the JSON object `param` with an equal value. Same
/// meaning as the Postgres version; SQLite has no `jsonb`, so values are compared by JSON
/// type and text.
fn metadata_matches(column: &str, param: &str) -> String {
    format!(
        "NOT EXISTS (SELECT 1 FROM json_each({param}) f WHERE NOT EXISTS (\
         SELECT 1 FROM json_each({column}) m WHERE m.key = f.key AND m.type = f.type \
         AND (m.atom = f.atom OR (m.atom IS NULL AND f.atom IS NULL AND json(m.value) = json(f.value)))))"
    )
}

/// `column` is one of the strings of the JSON array `param`.
fn in_json_list(column: &str, param: &str) -> String {
    format!("{column} IN (SELECT value FROM json_each({param}))")
}

/// The shared SQL with SQLite's numbered placeholders. In SQLite `$1` is a *named*
/// parameter, numbered by first appearance, so a statement using `$3` before `$1` would
/// bind the wrong values; `?1` is the parameter with index 1.
fn numbered(statement: &str) -> String {
    let mut out = String::with_capacity(statement.len());
    let mut chars = statement.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('?');
        } else {
            out.push(c);
        }
    }
    out
}

/// Every statement this store runs, translated once.
struct Statements {
    insert_agent: String,
    insert_version: String,
    agent_exists: String,
    select_active_agent: String,
    select_agent_version: String,
    select_agent_by_alias: String,
    list_agents: String,
    list_agent_versions: String,
    bump_agent: String,
    activate_version: String,
    delete_agent: String,
    upsert_alias: String,
    list_aliases: String,
    delete_alias: String,
    insert_conversation: String,
    advance_head: String,
    select_conversation: String,
    select_conversation_with_agent: String,
    list_conversations: String,
    delete_conversation: String,
    insert_entry: String,
    history: String,
    insert_file: String,
    select_file: String,
    list_files: String,
    count_files: String,
    delete_file: String,
    purge_expired_files: String,
    insert_chunk: String,
    unnamed_chunks: String,
    select_chunk: String,
    delete_chunks: String,
    insert_setting: String,
    select_setting: String,
    claim_key: String,
    select_key: String,
    finish_key: String,
    release_key: String,
    touch_key: String,
    purge_keys: String,
    upsert_run: String,
    insert_run_event: String,
    select_run: String,
    select_run_events: String,
    purge_run_events: String,
    purge_runs: String,
}

static SQL: LazyLock<Statements> = LazyLock::new(|| Statements {
    insert_agent: numbered(&sql::INSERT_AGENT),
    insert_version: numbered(&sql::INSERT_VERSION),
    agent_exists: numbered(sql::AGENT_EXISTS),
    select_active_agent: numbered(&sql::SELECT_ACTIVE_AGENT),
    select_agent_version: numbered(&sql::SELECT_AGENT_VERSION),
    select_agent_by_alias: numbered(&sql::SELECT_AGENT_BY_ALIAS),
    list_agents: numbered(&sql::list_agents(&metadata_matches("v.metadata", "$7"))),
    list_agent_versions: numbered(&sql::LIST_AGENT_VERSIONS),
    bump_agent: numbered(sql::BUMP_AGENT_FOR_NEW_VERSION),
    activate_version: numbered(sql::ACTIVATE_VERSION),
    delete_agent: numbered(sql::DELETE_AGENT),
    upsert_alias: numbered(&sql::UPSERT_ALIAS),
    list_aliases: numbered(&sql::LIST_ALIASES),
    delete_alias: numbered(sql::DELETE_ALIAS),
    insert_conversation: numbered(&sql::INSERT_CONVERSATION),
    advance_head: numbered(sql::ADVANCE_HEAD),
    select_conversation: numbered(&sql::SELECT_CONVERSATION),
    select_conversation_with_agent: numbered(&sql::select_conversation_with_agent(
        "CASE WHEN json_type(c.agent_version) = 'integer' THEN CAST(c.agent_version AS INTEGER) END",
        "json_extract(c.agent_version, '$')",
    )),
    list_conversations: numbered(&sql::list_conversations(&metadata_matches("c.metadata", "$2"))),
    delete_conversation: numbered(sql::DELETE_CONVERSATION),
    insert_entry: numbered(&sql::INSERT_ENTRY),
    history: numbered(sql::HISTORY),
    insert_file: numbered(&sql::INSERT_FILE),
    select_file: numbered(&sql::SELECT_FILE),
    list_files: numbered(&sql::list_files(in_json_list)),
    count_files: numbered(&sql::count_files(in_json_list)),
    delete_file: numbered(&sql::DELETE_FILE),
    purge_expired_files: numbered(sql::PURGE_EXPIRED_FILES),
    insert_chunk: numbered(sql::INSERT_CHUNK),
    unnamed_chunks: numbered(sql::UNNAMED_CHUNKS),
    select_chunk: numbered(sql::SELECT_CHUNK),
    delete_chunks: numbered(sql::DELETE_CHUNKS),
    insert_setting: numbered(sql::INSERT_SETTING),
    select_setting: numbered(sql::SELECT_SETTING),
    claim_key: numbered(sql::CLAIM_KEY),
    select_key: numbered(sql::SELECT_KEY),
    finish_key: numbered(sql::FINISH_KEY),
    release_key: numbered(sql::RELEASE_KEY),
    touch_key: numbered(sql::TOUCH_KEY),
    upsert_run: numbered(sql::UPSERT_RUN),
    insert_run_event: numbered(
        "INSERT INTO run_events (workspace, conversation_id, run_id, seq, name, data) VALUES ($1, $2, $3, $4, $5, $6)",
    ),
    select_run: numbered(sql::SELECT_RUN),
    select_run_events: numbered(sql::SELECT_RUN_EVENTS),
    purge_run_events: numbered(sql::PURGE_RUN_EVENTS),
    purge_runs: numbered(sql::PURGE_RUNS),
    purge_keys: numbered(sql::PURGE_KEYS),
});

/// Migrations, in order: (version, description, SQL). Recorded in sqlx's `_sqlx_migrations`
/// table with sqlx's checksum, so databases created by earlier palaver builds (which ran
/// them through sqlx) are recognised as migrated.
const MIGRATIONS: &[(i64, &str, &str)] = migrations!("sqlite");

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// A write's part of a transaction that may carry others: runs the caller's closure, says
/// whether it succeeded, and returns what answers the caller once the commit's fate is
/// known (the caller must not hear "done" before its rows are durable).
/// Given the error instead of a transaction when none could be opened for it.
type WriteJob = Box<dyn FnOnce(StoreResult<&rusqlite::Transaction<'_>>) -> (bool, Settle) + Send>;
type Settle = Box<dyn FnOnce(StoreResult<()>) + Send>;

/// Most writes one transaction carries. Writes that queue while the thread works share
/// the next commit: the pages they touch (the same leaves of `entries` and its index, the
/// WAL frame headers) are written once, and its locks taken once, for all of them.
const MAX_WRITES_PER_COMMIT: usize = 64;

/// WAL pages after which the thread checkpoints, as SQLite's own automatic checkpoint
/// would (its default). Counted from estimates: SQLite does not tell how many pages a
/// commit wrote without a hook of unsafe code.
const CHECKPOINT_AFTER_PAGES: usize = 1000;
/// A generous estimate of the WAL pages one ordinary write adds (a turn writes ~10).
const PAGES_PER_WRITE: usize = 16;

/// What the SQLite thread is asked to do.
enum Message {
    Run(Job),
    /// With an estimate of the WAL pages it writes.
    Write(WriteJob, usize),
    /// Checkpoint, close the connection (SQLite then removes the `-wal` and `-shm` files)
    /// and stop; later calls fail as on a stopped thread.
    Close(oneshot::Sender<()>),
}

/// Cheap to clone: a handle on the SQLite thread (a download's stream holds one).
#[derive(Clone)]
pub struct SqliteStore {
    jobs: tokio::sync::mpsc::UnboundedSender<Message>,
    shared: Arc<Shared>,
}

/// What the callers and the SQLite thread share.
///
/// A read runs on the caller's own thread when the connection is idle and nothing queues
/// for it: it then costs no thread hand-off (each is two context switches, on a VM often
/// the wake-up of an idle core). That cannot hold the runtime up for long: SQLite's busy
/// handler is off for it (a lock held by another process sends the read to the thread,
/// which waits), and checkpoints — the step that syncs the disk — run on the
/// [`Checkpointer`]'s thread. Writes go to the thread, which commits those that queue in
/// batches; only a turn's commit that no other turn could join runs here (see
/// `SqliteStore::write_now`).
struct Shared {
    /// `None` once closed.
    conn: Mutex<Option<Connection>>,
    /// A write may run on the caller's thread (`SqliteStore::write_now`): only when a
    /// commit does not wait for the disk (`synchronous=NORMAL`).
    writes_here: bool,
    /// Messages sent to the thread and not yet taken: while there are any, callers queue
    /// behind them rather than go first.
    queued: AtomicUsize,
    busy_timeout: Duration,
    /// Estimated WAL pages written since the last checkpoint.
    unchecked_pages: AtomicUsize,
    /// The checkpointer's queue; `None` when SQLite checkpoints by itself.
    checkpoints: Option<std::sync::mpsc::SyncSender<Nudge>>,
}

enum Nudge {
    Checkpoint,
    Stop,
}

/// A connection of its own that checkpoints the WAL on a thread of its own. In WAL mode a
/// checkpoint runs beside the writer, so no call waits for the disk syncs it makes (with
/// SQLite's automatic checkpoint, the commit that crossed the mark did, and every call
/// queued behind it).
struct Checkpointer {
    nudges: std::sync::mpsc::SyncSender<Nudge>,
    thread: std::thread::JoinHandle<()>,
}

impl Checkpointer {
    fn start(target: &Target) -> anyhow::Result<Self> {
        let conn = target.open().context("opening the SQLite checkpointer's connection")?;
        let (nudges, nudged) = std::sync::mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("palaver-checkpoint".to_owned())
            .spawn(move || {
                while let Ok(Nudge::Checkpoint) = nudged.recv() {
                    // PASSIVE, as SQLite's automatic checkpoint: it never waits for readers or
                    // the writer, and what it cannot copy now the next one does.
                    if let Err(error) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                        tracing::warn!(%error, "SQLite: checkpoint failed");
                    }
                }
            })
            .context("starting the SQLite checkpointer")?;
        Ok(Checkpointer { nudges, thread })
    }

    /// Waits for a checkpoint under way, and closes the connection.
    fn stop(self) {
        let _ = self.nudges.send(Nudge::Stop);
        let _ = self.thread.join();
    }
}

impl Shared {
    /// The connection, if it is free and no one queues for it, to use on this thread.
    fn idle_connection(&self) -> Option<MutexGuard<'_, Option<Connection>>> {
        if self.queued.load(Ordering::Acquire) != 0 {
            return None;
        }
        let guard = match self.conn.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(poisoned)) => self.recover(poisoned.into_inner()),
            Err(TryLockError::WouldBlock) => return None,
        };
        guard.is_some().then_some(guard)
    }

    /// The connection, waiting for it (on the SQLite thread).
    fn connection(&self) -> MutexGuard<'_, Option<Connection>> {
        match self.conn.lock() {
            Ok(guard) => guard,
            Err(poisoned) => self.recover(poisoned.into_inner()),
        }
    }

    /// After a call that panicked on a caller's thread (its transaction rolled back as it
    /// unwound): restores the busy handler it had switched off.
    fn recover<'a>(&'a self, guard: MutexGuard<'a, Option<Connection>>) -> MutexGuard<'a, Option<Connection>> {
        self.conn.clear_poison();
        if let Some(conn) = guard.as_ref() {
            let _ = conn.busy_timeout(self.busy_timeout);
        }
        guard
    }

    /// Counts a commit's pages, and has the WAL checkpointed when they are enough.
    fn wrote(&self, pages: usize) {
        let Some(nudge) = &self.checkpoints else { return };
        let before = self.unchecked_pages.fetch_add(pages, Ordering::Relaxed);
        if before < CHECKPOINT_AFTER_PAGES && before + pages >= CHECKPOINT_AFTER_PAGES {
            self.unchecked_pages.store(0, Ordering::Relaxed);
            // Full: a checkpoint is already due, and it will copy these pages too.
            let _ = nudge.try_send(Nudge::Checkpoint);
        }
    }

    /// Runs `call` on `conn` with SQLite's busy handler off: a lock held by another process
    /// fails it at once with `SQLITE_BUSY` instead of sleeping on the runtime.
    fn without_waiting<R>(&self, conn: &mut Connection, call: impl FnOnce(&mut Connection) -> R) -> R {
        let _ = conn.busy_timeout(Duration::ZERO);
        let result = call(conn);
        let _ = conn.busy_timeout(self.busy_timeout);
        result
    }
}

/// The database file is locked by another process.
const BUSY: &str = "the database file is locked by another process";

fn is_busy(error: &StoreError) -> bool {
    matches!(error, StoreError::Unavailable(why) if why == BUSY)
}

/// The start-up log's description of a SQLite `DATABASE_URL`.
pub fn describe(url: &str) -> String {
    match Target::parse(url) {
        Ok(target) if target.in_memory => "SQLite in memory (nothing is kept after the server stops)".to_owned(),
        Ok(target) => {
            let path = std::path::Path::new(&target.path);
            let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
            format!("SQLite file {}", absolute.display())
        }
        Err(_) => url.to_owned(),
    }
}

/// The database file of a SQLite `DATABASE_URL`; `None` in memory.
pub fn file_path(url: &str) -> Option<std::path::PathBuf> {
    if !url.starts_with("sqlite:") {
        return None;
    }
    match Target::parse(url) {
        Ok(target) if !target.in_memory => Some(std::path::PathBuf::from(target.path)),
        _ => None,
    }
}

impl SqliteStore {
    pub async fn connect(url: &str, options: super::ConnectOptions) -> anyhow::Result<Self> {
        let mut target = Target::parse(url)?;
        target.synchronous = options.sqlite_synchronous;
        target.busy_timeout = options.acquire_timeout;
        let migrate = options.migrate;
        let conn = target.open().context("opening the SQLite database")?;
        // Unbounded: callers are bounded by the HTTP server, and a full queue would only move
        // the waiting elsewhere. The receiver parks without spinning (crossbeam-style
        // channels spin and yield first, which showed up as CPU in the profile).
        let (jobs, queue) = tokio::sync::mpsc::unbounded_channel::<Message>();
        let checkpointer = match target.checkpoints_on_thread() {
            true => Some(Checkpointer::start(&target)?),
            false => None,
        };
        let shared = Arc::new(Shared {
            conn: Mutex::new(Some(conn)),
            writes_here: target.synchronous == SqliteSynchronous::Normal,
            queued: AtomicUsize::new(0),
            busy_timeout: target.busy_timeout,
            unchecked_pages: AtomicUsize::new(0),
            checkpoints: checkpointer.as_ref().map(|c| c.nudges.clone()),
        });
        spawn_worker(Inbox { jobs: queue, shared: shared.clone() }, checkpointer)?;
        let store = SqliteStore { jobs, shared };
        if migrate {
            store.run(|conn| migrate_schema(conn).map_err(StoreError::Other)).await?;
        }
        Ok(store)
    }

    fn send(&self, message: Message) -> StoreResult<()> {
        self.shared.queued.fetch_add(1, Ordering::AcqRel);
        self.jobs.send(message).map_err(|_| {
            self.shared.queued.fetch_sub(1, Ordering::AcqRel);
            stopped()
        })
    }

    /// Runs `job` on the SQLite thread and waits for its answer without blocking the runtime.
    async fn run<T, F>(&self, job: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let _ = reply.send(job(conn));
        });
        self.send(Message::Run(job))?;
        answer.await.map_err(|_| stopped())?
    }

    /// Runs `job` in a write transaction on the SQLite thread, perhaps sharing it with other
    /// queued writes: all of it or none of it is committed, and the answer comes after the
    /// commit.
    async fn write<T, F>(&self, job: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Transaction<'_>) -> StoreResult<T> + Send + 'static,
    {
        self.write_counting(PAGES_PER_WRITE, job).await
    }

    /// `write`, but on this thread when the connection is idle and nothing queues for it: for
    /// a write no other is about to join (`TurnWrite::alone`). Measured both ways
    /// (alternating builds, outside bench): every write on the thread added ~0.013 ms to a
    /// turn at c=1 (1.6 more context switches per turn), while at c=32 it gave 7–8% more
    /// turns/s for 9–13% less CPU per turn — the connection thread serves its other
    /// connections while the commit runs, and writes that queue meanwhile share it.
    async fn write_now<T, F>(&self, job: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Transaction<'_>) -> StoreResult<T> + Send + 'static,
    {
        match self.write_here(job) {
            Ok(result) => result,
            Err(job) => self.write(job).await,
        }
    }

    /// Runs `job` in its own transaction on this thread if the connection is idle and a
    /// commit does not wait for the disk; gives it back otherwise, or when another process
    /// holds the write lock.
    fn write_here<T, F>(&self, job: F) -> Result<StoreResult<T>, F>
    where
        F: FnOnce(&rusqlite::Transaction<'_>) -> StoreResult<T>,
    {
        if !self.shared.writes_here {
            return Err(job);
        }
        let Some(mut guard) = self.shared.idle_connection() else { return Err(job) };
        let Some(conn) = guard.as_mut() else { return Err(job) };
        let result = self.shared.without_waiting(conn, |conn| {
            // IMMEDIATE: see `write_batch`.
            let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
                Ok(tx) => tx,
                Err(error) => {
                    let error = StoreError::from(error);
                    return if is_busy(&error) { Err(job) } else { Ok(Err(error)) };
                }
            };
            Ok(job(&tx).and_then(|value| {
                tx.commit()?;
                Ok(value)
            }))
        });
        drop(guard);
        if matches!(result, Ok(Ok(_))) {
            self.shared.wrote(PAGES_PER_WRITE);
        }
        result
    }

    /// `write`, for a job that adds about `pages` pages to the WAL.
    async fn write_counting<T, F>(&self, pages: usize, job: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Transaction<'_>) -> StoreResult<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: WriteJob = Box::new(move |tx| {
            let result = tx.and_then(job);
            let succeeded = result.is_ok();
            let settle: Settle = Box::new(move |committed: StoreResult<()>| {
                let _ = reply.send(committed.and(result));
            });
            (succeeded, settle)
        });
        self.send(Message::Write(job, pages))?;
        answer.await.map_err(|_| stopped())?
    }

    /// Runs `job`, on this thread if the connection is idle, else on the SQLite thread.
    async fn read<T, F>(&self, job: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: Fn(&Connection) -> StoreResult<T> + Send + 'static,
    {
        if let Some(result) = self.read_here(&job) {
            return result;
        }
        self.run(move |conn| job(conn)).await
    }

    /// `None` when the connection is busy, or when another process's lock stopped the read
    /// (in WAL mode only while it recovers or truncates the log); the thread then waits.
    fn read_here<T>(&self, job: &impl Fn(&Connection) -> StoreResult<T>) -> Option<StoreResult<T>> {
        let mut guard = self.shared.idle_connection()?;
        let conn = guard.as_mut()?;
        let result = self.shared.without_waiting(conn, |conn| job(conn));
        (!matches!(&result, Err(error) if is_busy(error))).then_some(result)
    }
}

fn stopped() -> StoreError {
    StoreError::Other(anyhow::anyhow!("the SQLite thread stopped"))
}

/// Where the database lives, parsed from `sqlite://FILE[?…]`, `sqlite:FILE` or
/// `sqlite::memory:`.
struct Target {
    path: String,
    in_memory: bool,
    read_only: bool,
    synchronous: SqliteSynchronous,
    /// How long a write waits for another process's lock on the file.
    busy_timeout: Duration,
}

impl Target {
    fn parse(url: &str) -> anyhow::Result<Self> {
        let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")).unwrap_or(url);
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut in_memory = path == ":memory:" || path.is_empty();
        let mut read_only = false;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=').unwrap_or((pair, "")) {
                ("mode", "memory") => in_memory = true,
                ("mode", "ro") => read_only = true,
                ("mode", "rw" | "rwc") => {}
                (key, _) => anyhow::bail!("DATABASE_URL: unsupported SQLite option `{key}`"),
            }
        }
        Ok(Target {
            path: path.to_owned(),
            in_memory,
            read_only,
            synchronous: SqliteSynchronous::Normal,
            busy_timeout: Duration::from_secs(5),
        })
    }

    /// Whether a [`Checkpointer`] does the checkpoints: SQLite's own would sync the disk
    /// inside whichever commit crossed the mark, and every call queued behind it would wait.
    /// (With `synchronous=FULL` every commit syncs anyway.)
    fn checkpoints_on_thread(&self) -> bool {
        self.synchronous == SqliteSynchronous::Normal && !self.in_memory && !self.read_only
    }

    fn open(&self) -> rusqlite::Result<Connection> {
        let conn = if self.in_memory {
            Connection::open_in_memory()?
        } else {
            let mut flags = OpenFlags::SQLITE_OPEN_NO_MUTEX;
            flags |= if self.read_only {
                OpenFlags::SQLITE_OPEN_READ_ONLY
            } else {
                OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE
            };
            Connection::open_with_flags(&self.path, flags)?
        };
        // Another process (a second palaver on the same file) may hold the write lock.
        conn.busy_timeout(self.busy_timeout)?;
        if !self.in_memory && !self.read_only {
            conn.pragma_update(None, "journal_mode", "WAL")?;
        }
        // WAL + NORMAL: commits survive a process crash; an OS crash or power loss may lose
        // the last ones but never corrupts the file. One fsync per checkpoint, not per turn.
        // FULL: an fsync of the WAL per commit, so no acknowledged turn is lost.
        let synchronous = match self.synchronous {
            SqliteSynchronous::Normal => "NORMAL",
            SqliteSynchronous::Full => "FULL",
        };
        conn.pragma_update(None, "synchronous", synchronous)?;
        if self.checkpoints_on_thread() {
            conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        }
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // Pages are read through a memory map instead of a read() per page.
        conn.pragma_update(None, "mmap_size", 268_435_456)?;
        conn.set_prepared_statement_cache_capacity(64);
        Ok(conn)
    }
}

/// The SQLite thread's end of the queue.
struct Inbox {
    jobs: tokio::sync::mpsc::UnboundedReceiver<Message>,
    shared: Arc<Shared>,
}

impl Inbox {
    /// The next message, waiting for one; `None` once every store handle is gone.
    fn wait(&mut self) -> Option<Message> {
        let message = self.jobs.blocking_recv();
        self.taken(message)
    }

    /// The next message if one is queued.
    fn next(&mut self) -> Option<Message> {
        let message = self.jobs.try_recv().ok();
        self.taken(message)
    }

    fn taken(&self, message: Option<Message>) -> Option<Message> {
        if message.is_some() {
            self.shared.queued.fetch_sub(1, Ordering::AcqRel);
        }
        message
    }
}

fn spawn_worker(mut inbox: Inbox, mut checkpointer: Option<Checkpointer>) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("palaver-sqlite".to_owned())
        .spawn(move || {
            let shared = inbox.shared.clone();
            // Ends when the store (the sender) is dropped, or when asked to close.
            let mut next = None;
            while let Some(message) = next.take().or_else(|| inbox.wait()) {
                let mut guard = shared.connection();
                let Some(conn) = guard.as_mut() else { return };
                match message {
                    Message::Run(job) => {
                        // A panicking job drops its reply (the caller gets an error) and rolls
                        // back its transaction; the thread and its connection keep serving.
                        if std::panic::catch_unwind(AssertUnwindSafe(|| job(conn))).is_err() {
                            tracing::error!("a SQLite job panicked");
                        }
                    }
                    Message::Write(job, pages) => next = write_batch(conn, (job, pages), &mut inbox),
                    Message::Close(done) => {
                        // First, so that the connection closed next is the last one: SQLite
                        // then removes the `-wal` and `-shm` files.
                        if let Some(checkpointer) = checkpointer.take() {
                            checkpointer.stop();
                        }
                        if let Some(conn) = guard.take() {
                            close_connection(conn);
                        }
                        let _ = done.send(());
                        return;
                    }
                }
            }
        })
        .context("starting the SQLite thread")?;
    Ok(())
}

/// Runs `first` and the writes queued behind it in one transaction, each of the later ones
/// inside a savepoint so that a failing write rolls back only itself; answers them all after
/// the commit. Returns the message that ended the batch (a read or a close), to run next.
fn write_batch(conn: &mut Connection, first: (WriteJob, usize), inbox: &mut Inbox) -> Option<Message> {
    let (first, mut pages) = first;
    // IMMEDIATE takes the write lock at BEGIN: a transaction never has to upgrade a read
    // snapshot, which SQLite refuses with SQLITE_BUSY instead of waiting.
    let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(error) => {
            first(Err(error.into())).1(Ok(()));
            return None;
        }
    };
    let mut settles = Vec::new();
    // The first write alone needs no savepoint: if it fails, the whole transaction is its.
    match std::panic::catch_unwind(AssertUnwindSafe(|| first(Ok(&tx)))) {
        Ok((true, settle)) => settles.push(settle),
        Ok((false, settle)) => {
            drop(tx);
            settle(Ok(()));
            return None;
        }
        Err(_) => {
            tracing::error!("a SQLite job panicked");
            return None;
        }
    }
    let mut next = None;
    while settles.len() < MAX_WRITES_PER_COMMIT {
        let job = match inbox.next() {
            Some(Message::Write(job, more)) => {
                pages += more;
                job
            }
            Some(other) => {
                next = Some(other);
                break;
            }
            None => break,
        };
        if let Err(error) = tx.execute_batch("SAVEPOINT batched") {
            // Not run: its caller hears why; the batch so far still commits.
            job(Err(error.into())).1(Ok(()));
            break;
        }
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| job(Ok(&tx))));
        let succeeded = matches!(outcome, Ok((true, _)));
        let undo = if succeeded { "RELEASE batched" } else { "ROLLBACK TO batched; RELEASE batched" };
        if let Err(error) = tx.execute_batch(undo) {
            // The transaction is in an unknown state: abandon all of it.
            let error = StoreError::from(error);
            tracing::error!(%error, "SQLite: ending a savepoint failed; the batch rolls back");
            drop(tx);
            for settle in settles {
                settle(Err(copy_error(&error)));
            }
            return next;
        }
        match outcome {
            Ok((true, settle)) => settles.push(settle),
            Ok((false, settle)) => settle(Ok(())),
            Err(_) => tracing::error!("a SQLite job panicked"),
        }
    }
    let committed = tx.commit().map_err(StoreError::from);
    if committed.is_ok() {
        inbox.shared.wrote(pages);
    }
    for settle in settles {
        settle(committed.as_ref().map(|_| ()).map_err(copy_error));
    }
    next
}

/// The same failure again, for each write of a batch that shared a failed commit.
fn copy_error(error: &StoreError) -> StoreError {
    match error {
        StoreError::NotFound { what, id } => StoreError::NotFound { what, id: id.clone() },
        StoreError::Conflict => StoreError::Conflict,
        StoreError::Unavailable(why) => StoreError::Unavailable(why.clone()),
        StoreError::Other(error) => StoreError::Other(anyhow::anyhow!("{error:#}")),
    }
}

/// Moves every committed page into the database file and closes the connection; as the
/// last connection, SQLite then deletes the `-wal` and `-shm` files. (Another process still
/// on the file keeps them, which is right.)
fn close_connection(conn: Connection) {
    if let Err(error) = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
        tracing::warn!(%error, "SQLite: checkpoint at shutdown failed");
    }
    if let Err((_, error)) = conn.close() {
        tracing::warn!(%error, "SQLite: closing the database failed");
    }
}

fn migrate_schema(conn: &mut Connection) -> anyhow::Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS _sqlx_migrations (
            version BIGINT PRIMARY KEY,
            description TEXT NOT NULL,
            installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
            success BOOLEAN NOT NULL,
            checksum BLOB NOT NULL,
            execution_time BIGINT NOT NULL
        );",
    )?;
    for (version, description, script) in MIGRATIONS {
        let checksum = Sha384::digest(script.as_bytes()).to_vec();
        let applied: Option<(Vec<u8>, bool)> = conn
            .query_row("SELECT checksum, success FROM _sqlx_migrations WHERE version = ?1", [version], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .optional()?;
        match applied {
            Some((stored, true)) if stored == checksum => continue,
            Some((_, true)) => anyhow::bail!("migration {version} ({description}) was changed after it was applied"),
            Some((_, false)) => anyhow::bail!("migration {version} ({description}) failed earlier; fix the database"),
            None => {}
        }
        let started = Instant::now();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(script).with_context(|| format!("applying migration {version} ({description})"))?;
        tx.execute(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (?1, ?2, TRUE, ?3, ?4)",
            params![version, description, checksum, started.elapsed().as_nanos() as i64],
        )?;
        tx.commit()?;
    }
    Ok(())
}

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        use rusqlite::ffi;
        match &error {
            rusqlite::Error::QueryReturnedNoRows => StoreError::missing(),
            // The file cannot serve now; a retry later may succeed. Nothing was written: the
            // transaction rolls back.
            rusqlite::Error::SqliteFailure(e, _) if e.code == rusqlite::ErrorCode::DatabaseBusy => {
                StoreError::Unavailable(BUSY.to_owned())
            }
            rusqlite::Error::SqliteFailure(e, _) if e.code == rusqlite::ErrorCode::DatabaseLocked => {
                StoreError::Unavailable("the database file is locked".to_owned())
            }
            rusqlite::Error::SqliteFailure(e, _) if e.code == rusqlite::ErrorCode::DiskFull => {
                StoreError::Unavailable("the disk holding the database is full".to_owned())
            }
            rusqlite::Error::SqliteFailure(e, _) if e.code == rusqlite::ErrorCode::ReadOnly => {
                StoreError::Unavailable("the database file is not writable".to_owned())
            }
            rusqlite::Error::SqliteFailure(e, _)
                if matches!(e.code, rusqlite::ErrorCode::SystemIoFailure | rusqlite::ErrorCode::CannotOpen) =>
            {
                StoreError::Unavailable(format!("the database file cannot be read or written ({error})"))
            }
            rusqlite::Error::SqliteFailure(e, _)
                if matches!(e.extended_code, ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY) =>
            {
                StoreError::Conflict
            }
            _ => StoreError::Other(anyhow::Error::new(error).context("database query failed")),
        }
    }
}

/// A JSON column's text for binding. Serializing our own types cannot fail (string keys,
/// no custom errors).
fn to_json<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// A row read by column name. rusqlite's own lookup compares the name with every column
/// before it, each fetched through FFI, which cost ~6% of a turn's instructions on a
/// 25-column read; the readers in `rows.rs` read columns in select order, so looking
/// from just after the last column found costs one comparison per column.
struct Named<'r, 's> {
    row: &'r Row<'s>,
    next: Cell<usize>,
}

impl<'r, 's> Named<'r, 's> {
    fn new(row: &'r Row<'s>) -> Self {
        Named { row, next: Cell::new(0) }
    }

    fn index(&self, column: &str) -> rusqlite::Result<usize> {
        let statement = self.row.as_ref();
        let count = statement.column_count();
        let start = self.next.get();
        for i in (start..count).chain(0..start.min(count)) {
            if statement.column_name(i)? == column {
                self.next.set(i + 1);
                return Ok(i);
            }
        }
        // Names in another case, as rusqlite matches them.
        statement.column_index(column)
    }

    fn get<T: rusqlite::types::FromSql>(&self, column: &str) -> rusqlite::Result<T> {
        self.row.get(self.index(column)?)
    }
}

rows::read_row!(Named<'_, '_>, rusqlite::Error, get, json, optional_json);

/// A JSON column that is never NULL.
fn json<T: DeserializeOwned>(row: &Named<'_, '_>, column: &str) -> rusqlite::Result<T> {
    match optional_json(row, column)? {
        Some(value) => Ok(value),
        None => Err(rusqlite::Error::InvalidColumnType(row.index(column)?, column.to_owned(), Type::Null)),
    }
}

fn optional_json<T: DeserializeOwned>(row: &Named<'_, '_>, column: &str) -> rusqlite::Result<Option<T>> {
    let index = row.index(column)?;
    let failed =
        |e: Box<dyn std::error::Error + Send + Sync>| rusqlite::Error::FromSqlConversionFailure(index, Type::Text, e);
    match row.row.get_ref(index)?.as_str_or_null().map_err(|e| failed(Box::new(e)))? {
        Some(text) => serde_json::from_str(text).map(Some).map_err(|e| failed(Box::new(e))),
        None => Ok(None),
    }
}

fn text(value: Option<&str>) -> ToSqlOutput<'_> {
    value.map_or(ToSqlOutput::from(Null), ToSqlOutput::from)
}

// Row shapes: each table's columns (`sql::Columns`) bound with one `match`, and read back
// by name. Values are serialized on the caller's side where they can be, so the SQLite
// thread only runs SQL.

/// One column of an agent's row, bound after the workspace.
fn agent_param(agent: &AgentRecord, column: sql::Agent) -> ToSqlOutput<'_> {
    use sql::Agent as A;
    match column {
        A::Id => ToSqlOutput::from(agent.id.as_str()),
        A::ActiveVersion => ToSqlOutput::from(agent.active_version),
        A::LatestVersion => ToSqlOutput::from(agent.latest_version),
        A::Revision => ToSqlOutput::from(agent.revision),
        A::CreatedAt => ToSqlOutput::from(agent.created_at.micros()),
        A::UpdatedAt => ToSqlOutput::from(agent.updated_at.micros()),
    }
}

fn own_agent_record(row: &Row<'_>) -> rusqlite::Result<AgentRecord> {
    rows::agent_record(&Named::new(row), Naming::Own)
}

/// A version's values that come from its config, serialized before the write.
struct VersionValues {
    name: String,
    deployment_chat: bool,
    metadata: Option<String>,
    config: String,
}

impl VersionValues {
    fn of(config: &AgentConfig) -> Self {
        VersionValues {
            name: config.name.clone(),
            deployment_chat: config.deployment_chat,
            metadata: config.metadata.as_ref().map(to_json),
            config: to_json(config),
        }
    }

    /// One column of the version's row, bound after the workspace.
    fn param<'a>(&'a self, id: &'a str, version: i64, now: i64, column: sql::AgentVersion) -> ToSqlOutput<'a> {
        use sql::AgentVersion as V;
        match column {
            V::AgentId => ToSqlOutput::from(id),
            V::Version => ToSqlOutput::from(version),
            V::Name => ToSqlOutput::from(self.name.as_str()),
            V::DeploymentChat => ToSqlOutput::from(self.deployment_chat),
            V::Metadata => text(self.metadata.as_deref()),
            V::Config => ToSqlOutput::from(self.config.as_str()),
            V::CreatedAt => ToSqlOutput::from(now),
        }
    }

    fn insert(&self, tx: &Connection, ws: &str, id: &str, version: i64, now: i64) -> rusqlite::Result<()> {
        let values = sql::AgentVersion::ALL.iter().map(|&c| self.param(id, version, now, c));
        tx.prepare_cached(&SQL.insert_version)?.execute(params_from_iter(after(ws, values)))?;
        Ok(())
    }
}

/// One column of an alias's row, bound after the workspace.
fn alias_param<'a>(agent: &'a str, alias: &'a AliasRecord, column: sql::AgentAlias) -> ToSqlOutput<'a> {
    use sql::AgentAlias as L;
    match column {
        L::AgentId => ToSqlOutput::from(agent),
        L::Alias => ToSqlOutput::from(alias.alias.as_str()),
        L::Version => ToSqlOutput::from(alias.version),
        L::CreatedAt => ToSqlOutput::from(alias.created_at.micros()),
        L::UpdatedAt => ToSqlOutput::from(alias.updated_at.micros()),
    }
}

/// A conversation's row after the workspace, serialized before the write.
fn conversation_values(c: &ConversationRecord) -> Vec<SqlValue> {
    use sql::Conversation as C;
    let text = |s: Option<&str>| s.map_or(SqlValue::Null, |s| SqlValue::Text(s.to_owned()));
    let json = |s: Option<String>| s.map_or(SqlValue::Null, SqlValue::Text);
    let value = |column: C| match column {
        C::Id => SqlValue::Text(c.id.as_str().to_owned()),
        C::Head => text(c.head.as_ref().map(EntryId::as_str)),
        C::AgentId => text(c.agent_id.as_deref()),
        C::AgentVersion => json(c.agent_version.as_ref().map(to_json)),
        C::Model => text(c.model.as_deref()),
        C::Instructions => text(c.instructions.as_deref()),
        C::Tools => json(c.tools.as_ref().map(to_json)),
        C::CompletionArgs => json(c.completion_args.as_ref().map(to_json)),
        C::Guardrails => json(c.guardrails.as_ref().map(to_json)),
        C::Name => text(c.name.as_deref()),
        C::Description => text(c.description.as_deref()),
        C::Metadata => json(c.metadata.as_ref().map(to_json)),
        C::CreatedAt => SqlValue::Integer(c.created_at.micros()),
        C::UpdatedAt => SqlValue::Integer(c.updated_at.micros()),
    };
    C::ALL.iter().map(|&column| value(column)).collect()
}

/// One column of the row of a turn's entry `i`, bound after the workspace.
fn entry_param<'a>(entries: &'a EntryColumns, i: usize, conversation: &'a str, column: sql::Entry) -> ToSqlOutput<'a> {
    use sql::Entry as E;
    match column {
        E::Id => ToSqlOutput::from(entries.ids[i].as_str()),
        E::ParentId => text(entries.parents[i].as_deref()),
        E::Depth => ToSqlOutput::from(entries.depths[i]),
        E::ConversationId => ToSqlOutput::from(conversation),
        E::Kind => ToSqlOutput::from(entries.kinds[i]),
        E::Body => ToSqlOutput::from(entries.bodies[i].as_str()),
        E::CreatedAt => ToSqlOutput::from(entries.created[i]),
    }
}

/// The workspace, then a row's `values`: the parameters of every statement that writes one.
fn after<'a>(ws: &'a str, values: impl Iterator<Item = ToSqlOutput<'a>>) -> impl Iterator<Item = ToSqlOutput<'a>> {
    std::iter::once(ToSqlOutput::from(ws)).chain(values)
}

/// How a turn writes its conversation row.
enum RowWrite {
    /// Start and restart: the whole row (`conversation_values`).
    Insert(Vec<SqlValue>),
    /// Append: the compare-and-set of `sql::ADVANCE_HEAD`.
    AdvanceHead { head: Option<String>, updated_at: i64, expected_head: Option<String> },
}

fn agent_version(tx: &Connection, ws: &str, id: &str, version: i64) -> StoreResult<AgentRecord> {
    Ok(tx.prepare_cached(&SQL.select_agent_version)?.query_row(params![ws, id, version], own_agent_record)?)
}

#[async_trait]
impl Database for SqliteStore {
    fn system(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> StoreResult<()> {
        self.read(|conn| Ok(conn.prepare_cached("SELECT 1")?.query_row([], |_| Ok(()))?)).await
    }

    async fn close(&self) {
        let (done, closed) = oneshot::channel();
        if self.send(Message::Close(done)).is_ok() {
            let _ = closed.await;
        }
    }

    async fn setting(&self, name: &str, value: &str) -> StoreResult<String> {
        let (name, value) = (name.to_owned(), value.to_owned());
        self.write(move |tx| {
            tx.prepare_cached(&SQL.insert_setting)?.execute(params![name, value])?;
            Ok(tx.prepare_cached(&SQL.select_setting)?.query_row(params![name], |row| row.get("value"))?)
        })
        .await
    }
}

#[async_trait]
impl AgentStore for SqliteStore {
    async fn create_agent(&self, at: AgentWrite<'_>, config: &AgentConfig) -> StoreResult<AgentRecord> {
        let AgentWrite { ws, id, now } = at;
        let record = AgentRecord::first(id.clone(), config.clone(), now);
        let (ws, values) = (ws.as_str().to_owned(), VersionValues::of(config));
        self.write(move |tx| {
            let row = sql::Agent::ALL.iter().map(|&c| agent_param(&record, c));
            tx.prepare_cached(&SQL.insert_agent)?.execute(params_from_iter(after(&ws, row)))?;
            values.insert(tx, &ws, record.id.as_str(), record.version, now.micros())?;
            Ok(record)
        })
        .await
    }

    async fn agent(&self, ws: &WorkspaceId, id: &AgentId, version: &VersionSelector) -> StoreResult<AgentRecord> {
        let asked = id.as_str();
        let (ws, id, version) = (ws.as_str().to_owned(), id.as_str().to_owned(), version.clone());
        self.read(move |conn| {
            let record = match &version {
                VersionSelector::Active => {
                    conn.prepare_cached(&SQL.select_active_agent)?.query_row(params![ws, id], own_agent_record)?
                }
                VersionSelector::Number(n) => {
                    conn.prepare_cached(&SQL.select_agent_version)?.query_row(params![ws, id, n], own_agent_record)?
                }
                VersionSelector::Alias(alias) => conn
                    .prepare_cached(&SQL.select_agent_by_alias)?
                    .query_row(params![ws, id, alias], own_agent_record)?,
            };
            Ok(record)
        })
        .await
        .not_found_as("Agent", asked)
    }

    async fn agents_exist(&self, ws: &WorkspaceId, ids: &[String]) -> StoreResult<Vec<bool>> {
        let (ws, ids) = (ws.as_str().to_owned(), ids.to_vec());
        self.read(move |conn| {
            let mut exists = conn.prepare_cached(&SQL.agent_exists)?;
            let mut found = Vec::with_capacity(ids.len());
            for id in &ids {
                found.push(exists.exists(params![ws, id])?);
            }
            Ok(found)
        })
        .await
    }

    async fn active_agents(&self, ws: &WorkspaceId, ids: &[String]) -> StoreResult<Vec<AgentRecord>> {
        let (ws, ids) = (ws.as_str().to_owned(), ids.to_vec());
        // One job on the SQLite thread; in-process lookups by primary key cost less than
        // binding a JSON list for `json_each`.
        self.read(move |conn| {
            let mut select = conn.prepare_cached(&SQL.select_active_agent)?;
            let mut found = Vec::with_capacity(ids.len());
            for id in &ids {
                if let Some(record) = select.query_row(params![ws, id], own_agent_record).optional()? {
                    found.push(record);
                }
            }
            Ok(found)
        })
        .await
    }

    async fn list_agents(&self, ws: &WorkspaceId, filter: &AgentFilter, page: Page) -> StoreResult<Vec<AgentRecord>> {
        let ws = ws.as_str().to_owned();
        let filter = filter.clone();
        self.read(move |conn| {
            let mut list = conn.prepare_cached(&SQL.list_agents)?;
            let rows = list.query_map(
                params![
                    ws,
                    filter.name,
                    filter.id,
                    filter.deployment_chat,
                    filter.search.as_deref().map(super::contains_pattern),
                    filter.before_id,
                    filter.metadata.as_ref().map(to_json),
                    page.limit,
                    page.offset
                ],
                own_agent_record,
            )?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn append_agent_version(&self, at: AgentWrite<'_>, version: NewVersion<'_>) -> StoreResult<AgentRecord> {
        let (AgentWrite { ws, id, now }, NewVersion { expected_revision, config }) = (at, version);
        let (ws, id, values) = (ws.as_str().to_owned(), id.as_str().to_owned(), VersionValues::of(config));
        self.write(move |tx| {
            let bumped: Option<i64> = tx
                .prepare_cached(&SQL.bump_agent)?
                .query_row(params![ws, id, expected_revision, now.micros()], |row| row.get(0))
                .optional()?;
            let Some(version) = bumped else {
                return Err(StoreError::Conflict);
            };
            values.insert(tx, &ws, &id, version, now.micros())?;
            agent_version(tx, &ws, &id, version)
        })
        .await
    }

    async fn activate_agent_version(&self, at: AgentWrite<'_>, version: i64) -> StoreResult<AgentRecord> {
        let AgentWrite { ws, id, now } = at;
        let asked = id.as_str();
        let (ws, id) = (ws.as_str().to_owned(), id.as_str().to_owned());
        self.write(move |tx| {
            let changed = tx.prepare_cached(&SQL.activate_version)?.execute(params![ws, id, version, now.micros()])?;
            super::found(changed as u64)?;
            agent_version(tx, &ws, &id, version)
        })
        .await
        .not_found_as("Agent", asked)
    }

    async fn delete_agent(&self, ws: &WorkspaceId, id: &AgentId) -> StoreResult<()> {
        let asked = id.as_str();
        let (ws, id) = (ws.as_str().to_owned(), id.as_str().to_owned());
        self.write(move |tx| super::found(tx.prepare_cached(&SQL.delete_agent)?.execute(params![ws, id])? as u64))
            .await
            .not_found_as("Agent", asked)
    }

    async fn list_agent_versions(&self, ws: &WorkspaceId, id: &AgentId, page: Page) -> StoreResult<Vec<AgentRecord>> {
        let (ws, id) = (ws.as_str().to_owned(), id.as_str().to_owned());
        self.read(move |conn| {
            let mut list = conn.prepare_cached(&SQL.list_agent_versions)?;
            let rows = list.query_map(params![ws, id, page.limit, page.offset], own_agent_record)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn put_alias(&self, at: AgentWrite<'_>, alias: &str, version: i64) -> StoreResult<AliasRecord> {
        let AgentWrite { ws, id, now } = at;
        let (ws, id) = (ws.as_str().to_owned(), id.as_str().to_owned());
        let record = AliasRecord { alias: alias.to_owned(), version, created_at: now, updated_at: now };
        self.write(move |tx| {
            let row = sql::AgentAlias::ALL.iter().map(|&c| alias_param(&id, &record, c));
            Ok(tx
                .prepare_cached(&SQL.upsert_alias)?
                .query_row(params_from_iter(after(&ws, row)), |row| rows::alias_record(&Named::new(row)))?)
        })
        .await
    }

    async fn list_aliases(&self, ws: &WorkspaceId, id: &AgentId) -> StoreResult<Vec<AliasRecord>> {
        let (ws, id) = (ws.as_str().to_owned(), id.as_str().to_owned());
        self.read(move |conn| {
            let mut list = conn.prepare_cached(&SQL.list_aliases)?;
            let rows = list.query_map(params![ws, id], |row| rows::alias_record(&Named::new(row)))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn delete_alias(&self, ws: &WorkspaceId, id: &AgentId, alias: &str) -> StoreResult<()> {
        let asked = alias;
        let (ws, id, alias) = (ws.as_str().to_owned(), id.as_str().to_owned(), alias.to_owned());
        self.write(
            move |tx| super::found(tx.prepare_cached(&SQL.delete_alias)?.execute(params![ws, id, alias])? as u64),
        )
        .await
        .not_found_as("Alias", asked)
    }
}

/// A key's parts, owned for the SQLite thread.
fn owned(key: KeyUse<'_>) -> (String, String, String) {
    (key.ws.as_str().to_owned(), key.key.to_owned(), key.fingerprint.to_owned())
}

#[async_trait]
impl IdempotencyStore for SqliteStore {
    async fn claim_key(&self, key: KeyUse<'_>, times: ClaimTimes) -> StoreResult<KeyClaim> {
        let (ws, request_key, fingerprint) = owned(key);
        let (now, expires_at, abandoned) =
            (times.now.micros(), times.expires_at.micros(), times.abandoned_before.micros());
        self.write(move |tx| {
            let values = params![ws, request_key, fingerprint, now, expires_at, abandoned];
            if tx.prepare_cached(&SQL.claim_key)?.execute(values)? > 0 {
                return Ok(KeyClaim::Claimed);
            }
            let found = tx
                .prepare_cached(&SQL.select_key)?
                .query_row(params![ws, request_key], |row| {
                    Ok((row.get("fingerprint")?, row.get("status")?, row.get("content_type")?, row.get("body")?))
                })
                .optional()?;
            Ok(super::existing_claim(&fingerprint, found))
        })
        .await
    }

    async fn finish_key(&self, key: KeyUse<'_>, answer: &StoredAnswer) -> StoreResult<()> {
        let (ws, request_key, fingerprint) = owned(key);
        let answer = answer.clone();
        self.write(move |tx| {
            let values =
                params![ws, request_key, fingerprint, i64::from(answer.status), answer.content_type, answer.body];
            tx.prepare_cached(&SQL.finish_key)?.execute(values)?;
            Ok(())
        })
        .await
    }

    async fn touch_key(&self, key: KeyUse<'_>, now: Timestamp) -> StoreResult<()> {
        let (ws, request_key, fingerprint) = owned(key);
        let now = now.micros();
        self.write(move |tx| {
            tx.prepare_cached(&SQL.touch_key)?.execute(params![ws, request_key, fingerprint, now])?;
            Ok(())
        })
        .await
    }

    async fn release_key(&self, key: KeyUse<'_>) -> StoreResult<()> {
        let (ws, request_key, fingerprint) = owned(key);
        self.write(move |tx| {
            tx.prepare_cached(&SQL.release_key)?.execute(params![ws, request_key, fingerprint])?;
            Ok(())
        })
        .await
    }

    async fn purge_keys(&self, now: Timestamp) -> StoreResult<u64> {
        let now = now.micros();
        self.write(move |tx| Ok(tx.prepare_cached(&SQL.purge_keys)?.execute(params![now])? as u64)).await
    }
}

#[async_trait]
impl RunStore for SqliteStore {
    async fn write_runs(&self, runs: &[RunWrite<'_>]) -> StoreResult<()> {
        type Owned = (String, String, String, i64, Option<i64>, Vec<StoredEvent>);
        let runs: Vec<Owned> = runs
            .iter()
            .map(|run| {
                let (ws, conversation, run_id) =
                    (run.ws.as_str().to_owned(), run.conversation_id.to_owned(), run.run_id.to_owned());
                (
                    ws,
                    conversation,
                    run_id,
                    run.started_at.micros(),
                    run.finished_at.map(|at| at.micros()),
                    run.events.to_vec(),
                )
            })
            .collect();
        self.write(move |tx| {
            let mut upsert = tx.prepare_cached(&SQL.upsert_run)?;
            let mut insert = tx.prepare_cached(&SQL.insert_run_event)?;
            for (ws, conversation, run_id, started, finished, events) in &runs {
                upsert.execute(params![ws, conversation, run_id, started, finished])?;
                for event in events {
                    insert.execute(params![ws, conversation, run_id, event.seq, event.name, event.data])?;
                }
            }
            Ok(())
        })
        .await
    }

    async fn run_events(&self, ws: &WorkspaceId, conversation_id: &str, after: i64) -> StoreResult<Option<RunEvents>> {
        let (ws, conversation) = (ws.as_str().to_owned(), conversation_id.to_owned());
        self.read(move |conn| {
            let run = conn
                .prepare_cached(&SQL.select_run)?
                .query_row(params![ws, conversation], |row| {
                    Ok((row.get::<_, String>("run_id")?, row.get::<_, Option<i64>>("finished_at")?))
                })
                .optional()?;
            let Some((run_id, finished_at)) = run else { return Ok(None) };
            let mut select = conn.prepare_cached(&SQL.select_run_events)?;
            let events = select
                .query_map(params![ws, conversation, run_id, after], |row| {
                    Ok(StoredEvent { seq: row.get("seq")?, name: row.get("name")?, data: row.get("data")? })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(Some(RunEvents { run_id, finished_at: finished_at.map(Timestamp::from_micros), events }))
        })
        .await
    }

    async fn purge_runs(&self, before: Timestamp) -> StoreResult<u64> {
        let before = before.micros();
        self.write(move |tx| {
            let events = tx.prepare_cached(&SQL.purge_run_events)?.execute(params![before])?;
            tx.prepare_cached(&SQL.purge_runs)?.execute(params![before])?;
            Ok(events as u64)
        })
        .await
    }
}

#[async_trait]
impl ConversationStore for SqliteStore {
    async fn commit_turn(&self, ws: &WorkspaceId, turn: &TurnWrite) -> StoreResult<()> {
        let conversation = &turn.conversation;
        let ws = ws.as_str().to_owned();
        let id = conversation.id.as_str().to_owned();
        let row = if turn.create {
            RowWrite::Insert(conversation_values(conversation))
        } else {
            RowWrite::AdvanceHead {
                head: conversation.head.as_ref().map(|h| h.as_str().to_owned()),
                updated_at: conversation.updated_at.micros(),
                expected_head: turn.expected_head.as_ref().map(|h| h.as_str().to_owned()),
            }
        };
        let entries = EntryColumns::of(turn);
        let job = move |tx: &rusqlite::Transaction<'_>| {
            // The conversation row first: a lost compare-and-set stops before any insert.
            match row {
                RowWrite::Insert(values) => {
                    let row = values.iter().map(ToSqlOutput::from);
                    tx.prepare_cached(&SQL.insert_conversation)?.execute(params_from_iter(after(&ws, row)))?;
                }
                RowWrite::AdvanceHead { head, updated_at, expected_head } => {
                    let moved = tx.prepare_cached(&SQL.advance_head)?.execute(params![
                        ws,
                        id,
                        head,
                        updated_at,
                        expected_head
                    ])?;
                    if moved == 0 {
                        return Err(StoreError::Conflict);
                    }
                }
            }
            let mut insert = tx.prepare_cached(&SQL.insert_entry)?;
            for i in 0..entries.ids.len() {
                let row = sql::Entry::ALL.iter().map(|&c| entry_param(&entries, i, &id, c));
                insert.execute(params_from_iter(after(&ws, row)))?;
            }
            Ok(())
        };
        match turn.alone {
            true => self.write_now(job).await,
            false => self.write(job).await,
        }
    }

    async fn conversation(&self, ws: &WorkspaceId, id: &ConversationId) -> StoreResult<ConversationRecord> {
        let asked = id.as_str();
        let (ws, id) = (ws.as_str().to_owned(), id.as_str().to_owned());
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(&SQL.select_conversation)?
                .query_row(params![ws, id], |row| rows::conversation_record(&Named::new(row)))?)
        })
        .await
        .not_found_as("Conversation", asked)
    }

    async fn conversation_for_turn(
        &self,
        ws: &WorkspaceId,
        id: &ConversationId,
    ) -> StoreResult<(ConversationRecord, Option<AgentRecord>)> {
        let asked = id.as_str();
        let (ws, id) = (ws.as_str().to_owned(), id.as_str().to_owned());
        self.read(move |conn| {
            let mut statement = conn.prepare_cached(&SQL.select_conversation_with_agent)?;
            Ok(statement.query_row(params![ws, id], |row| rows::conversation_with_agent(&Named::new(row)))?)
        })
        .await
        .not_found_as("Conversation", asked)
    }

    async fn list_conversations(
        &self,
        ws: &WorkspaceId,
        metadata: Option<&Map<String, Value>>,
        page: Page,
    ) -> StoreResult<Vec<ConversationRecord>> {
        let (ws, metadata) = (ws.as_str().to_owned(), metadata.map(to_json));
        self.read(move |conn| {
            let mut list = conn.prepare_cached(&SQL.list_conversations)?;
            let rows = list.query_map(params![ws, metadata, page.limit, page.offset], |row| {
                rows::conversation_record(&Named::new(row))
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn delete_conversation(&self, ws: &WorkspaceId, id: &ConversationId) -> StoreResult<()> {
        let asked = id.as_str();
        let (ws, id) = (ws.as_str().to_owned(), id.as_str().to_owned());
        self.write(
            move |tx| super::found(tx.prepare_cached(&SQL.delete_conversation)?.execute(params![ws, id])? as u64),
        )
        .await
        .not_found_as("Conversation", asked)
    }

    async fn history(&self, ws: &WorkspaceId, head: &EntryId) -> StoreResult<Vec<Entry>> {
        let asked = head.as_str();
        let (ws, head) = (ws.as_str().to_owned(), head.as_str().to_owned());
        self.read(move |conn| {
            let mut chain = conn.prepare_cached(&SQL.history)?;
            let rows =
                chain.query_map(params![ws, head], |row| Named::new(row).json::<Entry>(sql::Entry::Body.name()))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
        .not_found_as("Entry", asked)
    }
}

/// One column of a file's row, bound after the workspace.
fn file_param(file: &FileRecord, column: sql::File) -> ToSqlOutput<'_> {
    use sql::File as F;
    match column {
        F::Id => ToSqlOutput::from(file.id.as_str()),
        F::Filename => ToSqlOutput::from(file.filename.as_str()),
        F::Bytes => ToSqlOutput::from(file.bytes),
        F::Purpose => ToSqlOutput::from(file.purpose.as_str()),
        F::SampleType => ToSqlOutput::from(file.sample_type.as_str()),
        F::Source => ToSqlOutput::from(file.source.as_str()),
        F::Mimetype => text(file.mimetype.as_deref()),
        F::NumLines => file.num_lines.map_or(ToSqlOutput::from(Null), ToSqlOutput::from),
        F::Visibility => text(file.visibility.as_deref()),
        F::ExpiresAt => file.expires_at.map_or(ToSqlOutput::from(Null), ToSqlOutput::from),
        F::CreatedAt => ToSqlOutput::from(file.created_at.micros()),
    }
}

#[async_trait]
impl FileStore for SqliteStore {
    async fn insert_file(&self, ws: &WorkspaceId, file: &FileRecord) -> StoreResult<()> {
        let (ws, file) = (ws.as_str().to_owned(), file.clone());
        self.write(move |tx| {
            let row = sql::File::ALL.iter().map(|&c| file_param(&file, c));
            tx.prepare_cached(&SQL.insert_file)?.execute(params_from_iter(after(&ws, row)))?;
            Ok(())
        })
        .await
    }

    async fn file(&self, ws: &WorkspaceId, id: &FileId, now: Timestamp) -> StoreResult<FileRecord> {
        let asked = id.as_str();
        let (ws, id, now) = (ws.as_str().to_owned(), id.as_str().to_owned(), now.unix_seconds());
        self.read(move |conn| {
            let mut select = conn.prepare_cached(&SQL.select_file)?;
            Ok(select.query_row(params![ws, id, now], |row| rows::file_record(&Named::new(row)))?)
        })
        .await
        .not_found_as("File", asked)
    }

    async fn list_files(
        &self,
        ws: &WorkspaceId,
        filter: &FileFilter,
        page: Page,
        now: Timestamp,
    ) -> StoreResult<(Vec<FileRecord>, i64)> {
        let (ws, now) = (ws.as_str().to_owned(), now.unix_seconds());
        let purpose = filter.purpose.clone();
        let search = filter.search.as_deref().map(super::contains_pattern);
        let any_of = |values: &[String]| (!values.is_empty()).then(|| to_json(values));
        let (sources, sample_types) = (any_of(&filter.sources), any_of(&filter.sample_types));
        let mimetypes = any_of(&filter.mimetypes);
        self.read(move |conn| {
            let filters = params![ws, purpose, search, sources, sample_types, mimetypes, now];
            let mut list = conn.prepare_cached(&SQL.list_files)?;
            let rows = list.query_map(
                params![ws, purpose, search, sources, sample_types, mimetypes, now, page.limit, page.offset],
                |row| rows::file_record(&Named::new(row)),
            )?;
            let files = rows.collect::<rusqlite::Result<Vec<_>>>()?;
            let total = conn.prepare_cached(&SQL.count_files)?.query_row(filters, |row| row.get("total"))?;
            Ok((files, total))
        })
        .await
    }

    async fn delete_file(&self, ws: &WorkspaceId, id: &FileId, now: Timestamp) -> StoreResult<()> {
        let asked = id.as_str();
        let (ws, id, now) = (ws.as_str().to_owned(), id.as_str().to_owned(), now.unix_seconds());
        self.write(move |tx| super::found(tx.prepare_cached(&SQL.delete_file)?.execute(params![ws, id, now])? as u64))
            .await
            .not_found_as("File", asked)
    }

    async fn purge_expired_files(&self, now: Timestamp, limit: i64) -> StoreResult<Vec<(WorkspaceId, FileId)>> {
        let now = now.unix_seconds();
        self.write(move |tx| {
            let mut purge = tx.prepare_cached(&SQL.purge_expired_files)?;
            let keys = purge.query_map(params![now, limit], |row| {
                Ok((WorkspaceId(row.get("workspace")?), FileId(row.get("id")?)))
            })?;
            Ok(keys.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }
}

/// The database as blob store: each chunk is its own short write, so other requests' turns
/// go between the chunks of a large upload rather than wait for all of it.
#[async_trait]
impl ChunkTable for SqliteStore {
    async fn insert_chunk(&self, key: &BlobKey, seq: i64, chunk: bytes::Bytes) -> StoreResult<()> {
        let (ws, file) = (key.workspace.as_str().to_owned(), key.file.as_str().to_owned());
        let (pages, now) = (chunk.len() / 4096 + PAGES_PER_WRITE, Timestamp::now().unix_seconds());
        self.write_counting(pages, move |tx| {
            tx.prepare_cached(&SQL.insert_chunk)?.execute(params![ws, file, seq, chunk.as_ref(), now])?;
            Ok(())
        })
        .await
    }

    async fn chunk(&self, key: &BlobKey, seq: i64) -> StoreResult<Option<bytes::Bytes>> {
        let (ws, file) = (key.workspace.as_str().to_owned(), key.file.as_str().to_owned());
        self.run(move |conn| {
            let data: Option<Vec<u8>> = conn
                .prepare_cached(&SQL.select_chunk)?
                .query_row(params![ws, file, seq], |row| row.get("data"))
                .optional()?;
            Ok(data.map(bytes::Bytes::from))
        })
        .await
    }

    async fn delete_chunks(&self, key: &BlobKey) -> StoreResult<()> {
        let (ws, file) = (key.workspace.as_str().to_owned(), key.file.as_str().to_owned());
        self.write(move |tx| {
            tx.prepare_cached(&SQL.delete_chunks)?.execute(params![ws, file])?;
            Ok(())
        })
        .await
    }

    async fn unnamed_chunks(&self, before: Timestamp, limit: i64) -> StoreResult<Vec<BlobKey>> {
        let before = before.unix_seconds();
        self.read(move |conn| {
            let mut unnamed = conn.prepare_cached(&SQL.unnamed_chunks)?;
            let keys = unnamed.query_map(params![before, limit], |row| {
                Ok(BlobKey { workspace: WorkspaceId(row.get("workspace")?), file: FileId(row.get("file_id")?) })
            })?;
            Ok(keys.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use crate::config::SqliteSynchronous;

    #[test]
    fn the_synchronous_setting_reaches_the_connection() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        for (setting, pragma) in [(SqliteSynchronous::Normal, 1), (SqliteSynchronous::Full, 2)] {
            let mut target = super::Target::parse(&url).unwrap();
            target.synchronous = setting;

            let conn = target.open().unwrap();

            let value: i64 = conn.pragma_query_value(None, "synchronous", |row| row.get(0)).unwrap();
            assert_eq!(value, pragma, "{setting:?}");
        }
    }

    /// Columns read by name in any order, and in another case than the select list's,
    /// still come from the right place; an unknown name is an error, not a guess.
    #[test]
    fn a_row_is_read_by_name_in_any_order() {
        use super::{Named, ReadRow};
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let mut select = conn.prepare("SELECT 'a' AS first, 2 AS second, NULL AS third, '[1]' AS Fourth").unwrap();
        let read = select
            .query_row([], |row| {
                let row = Named::new(row);
                let fourth: Vec<i64> = row.json("fourth")?;
                let second = row.int("second")?;
                let first = row.text("first")?;
                let third = row.optional_text("third")?;
                let again = row.int("second")?;
                assert!(matches!(row.text("fifth"), Err(rusqlite::Error::InvalidColumnName(_))));
                Ok((first, second, third, fourth, again))
            })
            .unwrap();
        assert_eq!(read, ("a".to_owned(), 2, None, vec![1], 2));
    }

    /// Writes that queue behind a busy thread share one commit; one that fails in the
    /// middle of such a batch leaves nothing behind, and the others are still committed.
    #[tokio::test]
    async fn a_failing_write_in_a_shared_commit_rolls_back_only_itself() {
        use super::{params, StoreError, SQL};
        let (_dir, _, store) = store_in_a_file().await;
        let insert = |name: &'static str, fail: bool| {
            store.write(move |tx| {
                tx.prepare_cached(&SQL.insert_setting)?.execute(params![name, "v"])?;
                if fail {
                    return Err(StoreError::Conflict);
                }
                Ok(())
            })
        };
        // Holds the thread so that the three writes queue up behind it.
        let (held, release) = std::sync::mpsc::channel::<()>();
        let hold = store.run(move |_| {
            let _ = release.recv();
            Ok(())
        });

        let (_, a, b, c, _) = tokio::join!(hold, insert("a", false), insert("b", true), insert("c", false), async {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            held.send(()).unwrap();
        });

        assert!(a.is_ok() && c.is_ok());
        assert!(matches!(b, Err(StoreError::Conflict)));
        let names: Vec<String> = store
            .read(|conn| {
                let mut statement = conn.prepare("SELECT name FROM settings ORDER BY name")?;
                let names = statement.query_map([], |row| row.get(0))?.collect::<Result<_, _>>()?;
                Ok(names)
            })
            .await
            .unwrap();
        assert_eq!(names, ["a", "c"]);
    }

    /// A store on a file of its own, in a directory that lasts as long as the first value.
    async fn store_in_a_file() -> (tempfile::TempDir, std::path::PathBuf, super::SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("palaver.db");
        let url = format!("sqlite://{}", path.display());
        let store = super::SqliteStore::connect(&url, Default::default()).await.unwrap();
        (dir, path, store)
    }

    /// Until the next call runs on the caller's thread: the SQLite thread answers a call
    /// (the migrations, say) just before it lets go of the connection.
    async fn until_idle(store: &super::SqliteStore) {
        while store.shared.idle_connection().is_none() {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }

    /// A write that finds the file locked by another process (its own connection here) is
    /// not failed at once, as the caller's try with the busy handler off would be: it waits
    /// on the SQLite thread until the lock is released.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_behind_another_process_lock_waits_for_it() {
        use super::{params, SQL};
        use std::sync::atomic::{AtomicBool, Ordering};
        let (_dir, path, store) = store_in_a_file().await;
        until_idle(&store).await;
        let other = rusqlite::Connection::open(&path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let released = std::sync::Arc::new(AtomicBool::new(false));
        let releaser = std::thread::spawn({
            let released = released.clone();
            move || {
                std::thread::sleep(std::time::Duration::from_millis(200));
                released.store(true, Ordering::SeqCst);
                other.execute_batch("COMMIT").unwrap();
            }
        });

        let written = store
            .write_now(|tx| {
                tx.prepare_cached(&SQL.insert_setting)?.execute(params!["late", "v"])?;
                Ok(())
            })
            .await;

        assert!(written.is_ok(), "{written:?}");
        assert!(released.load(Ordering::SeqCst), "the write went ahead of the other connection's lock");
        releaser.join().unwrap();
    }

    /// With SQLite's automatic checkpoint off, the checkpointer still moves the WAL's pages
    /// into the database file as writes add them.
    #[tokio::test]
    async fn the_checkpointer_moves_written_pages_into_the_database_file() {
        use super::{params, SQL};
        let (_dir, path, store) = store_in_a_file().await;
        let before = std::fs::metadata(&path).unwrap().len();
        let value = "x".repeat(8 * 1024);
        for i in 0..200 {
            let (name, value) = (format!("setting-{i}"), value.clone());
            store
                .write(move |tx| {
                    tx.prepare_cached(&SQL.insert_setting)?.execute(params![name, value])?;
                    Ok(())
                })
                .await
                .unwrap();
        }

        // 1.6 MB written: the file holds it once a checkpoint (on its own thread) copied it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::fs::metadata(&path).unwrap().len() < before + 1_000_000 {
            assert!(std::time::Instant::now() < deadline, "no checkpoint copied the writes into the file");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// A call that panics on the caller's thread leaves the connection usable, and still
    /// waiting for other processes' locks.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_call_that_panics_on_the_callers_thread_leaves_the_store_usable() {
        let (_dir, _, store) = store_in_a_file().await;
        until_idle(&store).await;
        let panicking = store.clone();
        let failed =
            tokio::spawn(async move { panicking.read(|_| -> super::StoreResult<()> { panic!("boom") }).await });
        assert!(failed.await.unwrap_err().is_panic());

        let answered: i64 =
            store.read(|conn| Ok(conn.query_row("SELECT 41 + 1", [], |row| row.get(0))?)).await.unwrap();

        assert_eq!(answered, 42);
        // On the thread: a call on the caller's thread sees the handler off for itself.
        let timeout: i64 =
            store.run(|conn| Ok(conn.pragma_query_value(None, "busy_timeout", |row| row.get(0))?)).await.unwrap();
        assert_eq!(timeout, 5000, "the busy handler is back on");
    }

    #[test]
    fn placeholders_become_numbered_parameters() {
        assert_eq!(super::numbered("a = $3 AND b = $1 OR c = '$'"), "a = ?3 AND b = ?1 OR c = '$'");
    }

    #[test]
    fn every_migration_file_is_embedded() {
        let mut files: Vec<String> = std::fs::read_dir("migrations/sqlite")
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        let embedded: Vec<String> = super::MIGRATIONS.iter().map(|(v, d, _)| format!("{v:04}_{d}.sql")).collect();
        assert_eq!(files, embedded);
    }
}
