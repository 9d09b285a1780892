//! The persistence port: what the engine asks of a database, one trait per aggregate
//! (`AgentStore`: agents with their versions and aliases; `ConversationStore`: conversations
//! and their entry tree; `FileStore`: files' metadata) composed into `Store`, which the app
//! holds as `Arc<dyn Store>`. Files' bytes go to a `blobs::BlobStore`: a directory, S3, or
//! the database itself, which is why every `Store` is also a blob store.
//! One method = one use case = one transaction; every method takes the workspace. Business
//! rules (version numbering, merges, head moves) live in `engine`; the implementations only
//! run SQL.
//!
//! Why it looks like this:
//! - Traits by aggregate, not one trait that doubles with every feature: files, libraries
//!   or jobs become a trait of their own and one more bound on `Store`, and nothing that
//!   uses the others changes. `dyn Store` still answers every method, with no imports.
//! - A trait object, not a type parameter: the URL picks the backend at start-up, and no
//!   handler or engine function carries a generic database type.
//! - Two implementations written out, not one generic over drivers: `sqlx::Any` has no JSON
//!   or time types, and an impl generic over `sqlx::Database` still needs each dialect's
//!   SQL. SQLite runs through rusqlite on a thread of its own (sqlx made every SQLite
//!   statement a thread hand-off, see `sqlite.rs`), Postgres through sqlx.
//! - Shared where it is the same: the SQL text and each table's columns, named once
//!   (`sql.rs`). Real dialect differences (JSON operators, SQLite's single writer,
//!   Postgres' one-statement commit) sit side by side in the two files.
//! - `tests/store_contract.rs` runs one set of cases through this trait on both backends;
//!   the HTTP suite runs on both too.

pub mod blobs;
/// The migrations of `dialect` (`"sqlite"` or `"postgres"`), in order: (version,
/// description, SQL). One list for both dialects, so neither can miss one.
macro_rules! migrations {
    ($dialect:literal) => {
        &[
            (1, "agents", include_str!(concat!("../../migrations/", $dialect, "/0001_agents.sql"))),
            (2, "conversations", include_str!(concat!("../../migrations/", $dialect, "/0002_conversations.sql"))),
            (3, "files", include_str!(concat!("../../migrations/", $dialect, "/0003_files.sql"))),
            (4, "idempotency", include_str!(concat!("../../migrations/", $dialect, "/0004_idempotency.sql"))),
            (5, "run_events", include_str!(concat!("../../migrations/", $dialect, "/0005_run_events.sql"))),
            (6, "files_upkeep", include_str!(concat!("../../migrations/", $dialect, "/0006_files_upkeep.sql"))),
        ]
    };
}

pub mod postgres;
mod rows;
mod sql;
pub mod sqlite;

use crate::domain::agents::{AgentConfig, GuardrailConfig, VersionSelector};
use crate::domain::completion::CompletionArgs;
use crate::domain::conversations::AgentVersionRef;
use crate::domain::entries::Entry;
use crate::domain::ids::{AgentId, ConversationId, EntryId, FileId, WorkspaceId};
use crate::domain::time::Timestamp;
use crate::domain::tools::Tool;
use async_trait::async_trait;
use serde_json::{Map, Value};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// What was looked for (`Conversation`, `Agent`, …) and its id, so callers need not
    /// re-map it; `what` is `Object` where a backend could not tell.
    #[error("{what} `{id}` not found")]
    NotFound { what: &'static str, id: String },
    /// A compare-and-set lost, or a unique key is taken.
    #[error("conflict")]
    Conflict,
    /// The database cannot be reached or cannot serve right now (down, restarting, refusing
    /// connections, no free connection in time, a locked file, a full disk); a retry later
    /// may succeed. The text says why, for the client and the log.
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl From<StoreError> for crate::error::Error {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound { what, id } => crate::error::Error::NotFound { what, id },
            StoreError::Conflict => {
                crate::error::Error::Conflict("The object was changed by another request; retry.".to_owned())
            }
            StoreError::Unavailable(why) => crate::error::Error::StoreUnavailable(why),
            StoreError::Other(e) => crate::error::Error::Internal(e),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

impl StoreError {
    /// A row that is not there, before the method that looked says what it was.
    pub(crate) fn missing() -> Self {
        StoreError::NotFound { what: "Object", id: String::new() }
    }
}

/// Names what a method looked for in its `NotFound`.
pub(crate) trait NotFoundAs {
    fn not_found_as(self, what: &'static str, id: &str) -> Self;
}

impl<T> NotFoundAs for StoreResult<T> {
    fn not_found_as(self, what: &'static str, id: &str) -> Self {
        self.map_err(|error| match error {
            StoreError::NotFound { .. } => StoreError::NotFound { what, id: id.to_owned() },
            other => other,
        })
    }
}

/// One version of an agent together with the agent's pointer row.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentRecord {
    pub id: AgentId,
    /// The version this record describes.
    pub version: i64,
    pub active_version: i64,
    pub latest_version: i64,
    pub revision: i64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub config: AgentConfig,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AliasRecord {
    pub alias: String,
    pub version: i64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// Filters of `GET /v1/agents` and `/v1/agents/pages`, applied to each agent's active
/// version. Agents are listed newest first.
#[derive(Debug, Clone, Default)]
pub struct AgentFilter {
    pub name: Option<String>,
    pub id: Option<String>,
    /// Case-insensitive substring of the name or the id.
    pub search: Option<String>,
    pub deployment_chat: Option<bool>,
    /// Every key must be present in the agent's metadata with an equal value.
    pub metadata: Option<Map<String, Value>>,
    /// Keyset cursor: only agents whose id sorts before this one.
    pub before_id: Option<String>,
}

#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub offset: i64,
    pub limit: i64,
}

/// The agent a write is about, and when it happens.
#[derive(Debug, Clone, Copy)]
pub struct AgentWrite<'a> {
    pub ws: &'a WorkspaceId,
    pub id: &'a AgentId,
    pub now: Timestamp,
}

/// A version to append: `config`, if the agent's revision is still `expected_revision`.
#[derive(Debug, Clone, Copy)]
pub struct NewVersion<'a> {
    pub expected_revision: i64,
    pub config: &'a AgentConfig,
}

/// What every store does whatever it holds: answer a health check, close at shutdown.
#[async_trait]
pub trait Database: Send + Sync {
    /// Answers when the database does; backs `GET /health`.
    async fn ping(&self) -> StoreResult<()>;

    /// The database system as OpenTelemetry names it (`db.system.name`).
    fn system(&self) -> &'static str;

    /// Whether other server processes may use this database at once (Postgres): what only
    /// lives in one process's memory is then also written to it (streamed runs' events).
    fn shared_by_replicas(&self) -> bool {
        false
    }

    /// Called once at shutdown, after the last run committed: leaves the database tidy
    /// (SQLite checkpoints its WAL and closes, so a stopped server leaves one file).
    async fn close(&self) {}

    /// The server-wide setting `name`, storing `value` first when there is none: whichever
    /// process asks first decides, and every replica reads the same value after.
    async fn setting(&self, name: &str, value: &str) -> StoreResult<String>;
}

/// Agents: immutable versions, the pointer to the active one, aliases naming versions.
#[async_trait]
pub trait AgentStore: Send + Sync {
    /// Creates an agent with `config` as version 0.
    async fn create_agent(&self, at: AgentWrite<'_>, config: &AgentConfig) -> StoreResult<AgentRecord>;

    /// One version of an agent: the active one, a number, or the one an alias points to.
    /// `NotFound` when the agent, version or alias does not exist.
    async fn agent(&self, ws: &WorkspaceId, id: &AgentId, version: &VersionSelector) -> StoreResult<AgentRecord>;

    /// Whether each of `ids` names an agent of the workspace (same order).
    async fn agents_exist(&self, ws: &WorkspaceId, ids: &[String]) -> StoreResult<Vec<bool>>;

    /// The active versions of those of `ids` that name agents of the workspace, in one
    /// read; ids that name none are left out.
    async fn active_agents(&self, ws: &WorkspaceId, ids: &[String]) -> StoreResult<Vec<AgentRecord>>;

    /// The active versions of the workspace's agents, newest agent first.
    async fn list_agents(&self, ws: &WorkspaceId, filter: &AgentFilter, page: Page) -> StoreResult<Vec<AgentRecord>>;

    /// Writes `config` as the next version and makes it active, if the agent's revision is
    /// still `expected_revision` (`Conflict` otherwise).
    async fn append_agent_version(&self, at: AgentWrite<'_>, version: NewVersion<'_>) -> StoreResult<AgentRecord>;

    /// Makes an existing version the active one.
    async fn activate_agent_version(&self, at: AgentWrite<'_>, version: i64) -> StoreResult<AgentRecord>;

    /// Deletes an agent with its versions and aliases.
    async fn delete_agent(&self, ws: &WorkspaceId, id: &AgentId) -> StoreResult<()>;

    /// Versions of an agent, oldest first.
    async fn list_agent_versions(&self, ws: &WorkspaceId, id: &AgentId, page: Page) -> StoreResult<Vec<AgentRecord>>;

    /// Creates an alias or points it at another version.
    async fn put_alias(&self, at: AgentWrite<'_>, alias: &str, version: i64) -> StoreResult<AliasRecord>;

    async fn list_aliases(&self, ws: &WorkspaceId, id: &AgentId) -> StoreResult<Vec<AliasRecord>>;

    async fn delete_alias(&self, ws: &WorkspaceId, id: &AgentId, alias: &str) -> StoreResult<()>;
}

/// Conversations and their entries: a tree whose path from the root to a conversation's
/// head is its history; restarts share the prefix they branch from.
#[async_trait]
pub trait ConversationStore: Send + Sync {
    /// Writes a turn atomically: the conversation row (created, or its head moved with a
    /// compare-and-set) and the turn's entries.
    async fn commit_turn(&self, ws: &WorkspaceId, turn: &TurnWrite) -> StoreResult<()>;

    async fn conversation(&self, ws: &WorkspaceId, id: &ConversationId) -> StoreResult<ConversationRecord>;

    /// The conversation and, in the same read, the agent version its next turn runs with
    /// (the agent's active version, or the number or alias the conversation follows).
    /// `None` for a model conversation, and when that agent or version is gone: the caller
    /// then reads the agent itself (`agent` with the conversation's selector) for the error.
    async fn conversation_for_turn(
        &self,
        ws: &WorkspaceId,
        id: &ConversationId,
    ) -> StoreResult<(ConversationRecord, Option<AgentRecord>)>;

    /// Newest first; `metadata` keeps those holding every given key/value.
    async fn list_conversations(
        &self,
        ws: &WorkspaceId,
        metadata: Option<&Map<String, Value>>,
        page: Page,
    ) -> StoreResult<Vec<ConversationRecord>>;

    /// Deletes the conversation. Its entries stay: restarts may share them.
    async fn delete_conversation(&self, ws: &WorkspaceId, id: &ConversationId) -> StoreResult<()>;

    /// The entries from the root to `head`, oldest first.
    async fn history(&self, ws: &WorkspaceId, head: &EntryId) -> StoreResult<Vec<Entry>>;
}

/// What a request's `Idempotency-Key` found.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyClaim {
    /// The key is this request's now: it runs, then its answer is recorded or the claim
    /// given up.
    Claimed,
    /// A request with this key and body is still running.
    Running,
    /// A request with this key and body succeeded: its answer.
    Answered(StoredAnswer),
    /// The key was used with another request.
    Mismatch,
}

/// An answer kept for the retries of a request.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredAnswer {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

/// A workspace's idempotency key, as used by the request `fingerprint` names.
#[derive(Debug, Clone, Copy)]
pub struct KeyUse<'a> {
    pub ws: &'a WorkspaceId,
    pub key: &'a str,
    pub fingerprint: &'a str,
}

/// The times a claim is made with: now, when its answer expires, and before when a claim
/// still running was abandoned (its process died).
#[derive(Debug, Clone, Copy)]
pub struct ClaimTimes {
    pub now: Timestamp,
    pub expires_at: Timestamp,
    pub abandoned_before: Timestamp,
}

/// Idempotency keys: the first successful answer of a request, for its retries.
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// Claims the key for this use unless a live claim or answer holds it; an abandoned
    /// claim and an expired answer are replaced.
    async fn claim_key(&self, key: KeyUse<'_>, times: ClaimTimes) -> StoreResult<KeyClaim>;

    /// Records the answer of this use's claim.
    async fn finish_key(&self, key: KeyUse<'_>, answer: &StoredAnswer) -> StoreResult<()>;

    /// Gives this use's claim up (the request failed): a retry runs it again.
    async fn release_key(&self, key: KeyUse<'_>) -> StoreResult<()>;

    /// Marks this use's claim as still running at `now`.
    async fn touch_key(&self, key: KeyUse<'_>, now: Timestamp) -> StoreResult<()>;

    /// Deletes the keys past their expiry; returns how many.
    async fn purge_keys(&self, now: Timestamp) -> StoreResult<u64>;
}

/// A key's row as `claim_key` reads it: fingerprint, status, content type, body.
pub(crate) type KeyRow = (String, Option<i64>, Option<String>, Option<Vec<u8>>);

/// What `claim_key` read when its insert found the key taken.
pub(crate) fn existing_claim(fingerprint: &str, found: Option<KeyRow>) -> KeyClaim {
    match found {
        // Given up between the insert and this read: the caller asks again.
        None => KeyClaim::Running,
        Some((theirs, ..)) if theirs != fingerprint => KeyClaim::Mismatch,
        Some((_, None, ..)) => KeyClaim::Running,
        Some((_, Some(status), content_type, body)) => KeyClaim::Answered(StoredAnswer {
            status: u16::try_from(status).unwrap_or(200),
            content_type: content_type.unwrap_or_default(),
            body: body.unwrap_or_default(),
        }),
    }
}

/// The metadata of files; their bytes are in a `blobs::BlobStore`.
#[async_trait]
pub trait FileStore: Send + Sync {
    /// Writes a file's row (its blob is already stored). `Conflict` when the id is taken.
    async fn insert_file(&self, ws: &WorkspaceId, file: &FileRecord) -> StoreResult<()>;

    /// A file that expired before `now` is not found, here as in the other reads and the
    /// delete: it is gone from the API's view from its `expires_at` on, though its row and
    /// bytes stay until `purge_expired_files`.
    async fn file(&self, ws: &WorkspaceId, id: &FileId, now: Timestamp) -> StoreResult<FileRecord>;

    /// A page of the workspace's files that `filter` keeps, newest first, and how many it
    /// keeps in all.
    async fn list_files(
        &self,
        ws: &WorkspaceId,
        filter: &FileFilter,
        page: Page,
        now: Timestamp,
    ) -> StoreResult<(Vec<FileRecord>, i64)>;

    /// Deletes a file's row (its blob goes after).
    async fn delete_file(&self, ws: &WorkspaceId, id: &FileId, now: Timestamp) -> StoreResult<()>;

    /// Deletes the rows of up to `limit` files expired at `now`, soonest expired first, and
    /// returns their keys, for their blobs to go after.
    async fn purge_expired_files(&self, now: Timestamp, limit: i64) -> StoreResult<Vec<(WorkspaceId, FileId)>>;
}

/// Filters of `GET /v1/files`; each one unset keeps every file.
#[derive(Debug, Clone, Default)]
pub struct FileFilter {
    pub purpose: Option<String>,
    /// Case-insensitive substring of the file name.
    pub search: Option<String>,
    /// Any of these sources (empty: any).
    pub sources: Vec<String>,
    /// Any of these sample types (empty: any).
    pub sample_types: Vec<String>,
    /// Any of these mimetypes (empty: any).
    pub mimetypes: Vec<String>,
}

/// A file's metadata, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct FileRecord {
    pub id: FileId,
    pub filename: String,
    /// Size in bytes.
    pub bytes: i64,
    pub purpose: String,
    pub sample_type: String,
    pub source: String,
    pub mimetype: Option<String>,
    pub num_lines: Option<i64>,
    pub visibility: Option<String>,
    /// Unix seconds.
    pub expires_at: Option<i64>,
    pub created_at: Timestamp,
}
/// An event of a run as it went on the wire: its number, name and JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub seq: i64,
    pub name: String,
    pub data: String,
}

/// The events of a conversation's latest streamed run after some number.
#[derive(Debug, Clone, PartialEq)]
pub struct RunEvents {
    pub run_id: String,
    pub finished_at: Option<Timestamp>,
    pub events: Vec<StoredEvent>,
}

/// A batch of a streamed run's events, as `RunStore::write_runs` takes it.
#[derive(Debug, Clone, Copy)]
pub struct RunWrite<'a> {
    pub ws: &'a WorkspaceId,
    pub conversation_id: &'a str,
    pub run_id: &'a str,
    pub started_at: Timestamp,
    pub events: &'a [StoredEvent],
    pub finished_at: Option<Timestamp>,
}

/// The runs of streams, kept for resuming from another replica.
#[async_trait]
pub trait RunStore: Send + Sync {
    /// Writes a batch of each run, all in one transaction: makes it its conversation's
    /// latest run (unless a run that started later already is), adds its events, and with
    /// `finished_at` marks its end. Two runs of one conversation may come in either order:
    /// the one that started later stays the latest.
    async fn write_runs(&self, runs: &[RunWrite<'_>]) -> StoreResult<()>;

    /// The events numbered after `after` of the conversation's latest run; `None` when it
    /// has none.
    async fn run_events(&self, ws: &WorkspaceId, conversation_id: &str, after: i64) -> StoreResult<Option<RunEvents>>;

    /// Deletes the runs that ended before `before`, and events of runs no longer latest.
    async fn purge_runs(&self, before: Timestamp) -> StoreResult<u64>;
}

/// The whole persistence port, as the app holds it (`Arc<dyn Store>`). A backend implements
/// each aggregate's trait and gets this one for free. Every backend is also a blob store
/// (`[files] storage = "database"`), so the app can use the store it has for that too.
pub trait Store:
    Database
    + AgentStore
    + ConversationStore
    + IdempotencyStore
    + FileStore
    + RunStore
    + blobs::BlobStore
    + Send
    + Sync
    + 'static
{
}

impl<T> Store for T where
    T: Database
        + AgentStore
        + ConversationStore
        + IdempotencyStore
        + FileStore
        + RunStore
        + blobs::BlobStore
        + Send
        + Sync
        + 'static
{
}

/// A stored conversation: settings plus the head of its branch of the entry tree.
#[derive(Debug, Clone, PartialEq)]
pub struct ConversationRecord {
    pub id: ConversationId,
    pub head: Option<EntryId>,
    pub agent_id: Option<String>,
    pub agent_version: Option<AgentVersionRef>,
    pub model: Option<String>,
    pub instructions: Option<String>,
    pub tools: Option<Vec<Tool>>,
    pub completion_args: Option<CompletionArgs>,
    pub guardrails: Option<Vec<GuardrailConfig>>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub metadata: Option<Map<String, Value>>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// Everything one turn writes, in one transaction.
#[derive(Debug, Clone)]
pub struct TurnWrite {
    /// The conversation as it is after the turn (`head` = the last of `entries`).
    pub conversation: ConversationRecord,
    /// Start and restart create the conversation row; append moves an existing head.
    pub create: bool,
    /// For appends: the head the turn was built on. If another turn moved it meanwhile,
    /// the write fails with `Conflict` and nothing is stored.
    pub expected_head: Option<EntryId>,
    /// The entry the turn hangs from (`None` for a new root) and its depth.
    pub parent: Option<(EntryId, i64)>,
    /// Inputs, then outputs, chained in this order.
    pub entries: Vec<Entry>,
    /// No other turn is running in this process, so none is about to share this one's
    /// commit: a store that batches commits may write it at once instead.
    pub alone: bool,
}

/// How to open a store.
#[derive(Debug, Clone, Copy)]
pub struct ConnectOptions {
    /// Most Postgres connections held at once.
    pub max_connections: u32,
    /// Apply pending migrations first.
    pub migrate: bool,
    pub sqlite_synchronous: crate::config::SqliteSynchronous,
    /// Longest wait for a connection (Postgres) or for another process's write lock
    /// (SQLite) before an operation fails as `Unavailable`.
    pub acquire_timeout: std::time::Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            max_connections: 1,
            migrate: true,
            sqlite_synchronous: Default::default(),
            acquire_timeout: std::time::Duration::from_secs(5),
        }
    }
}

/// Opens the store a `DATABASE_URL` names (`sqlite://…`, `sqlite::memory:`,
/// `postgres://…`), applying pending migrations when `migrate` is set.
pub async fn connect(url: &str, options: ConnectOptions) -> anyhow::Result<Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteStore::connect(url, options).await?))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Ok(Arc::new(postgres::PgStore::connect(url, options).await?))
    } else {
        anyhow::bail!("DATABASE_URL must start with `sqlite:` or `postgres://`")
    }
}

/// Where a `DATABASE_URL` keeps the data, for the start-up log: the SQLite file's absolute
/// path, or the Postgres server and database (never the password).
pub fn describe(url: &str) -> String {
    if url.starts_with("sqlite:") {
        sqlite::describe(url)
    } else {
        postgres::describe(url)
    }
}

/// The blob store `[files]` asks for, and a line for the start-up log saying where file
/// bytes go. `auto` is a directory beside a SQLite file (`<file>.files/`), and the database
/// itself for Postgres (replicas then need nothing shared but the database) and for
/// in-memory SQLite.
pub fn open_blobs(
    files: &crate::config::FilesConfig,
    database_url: &str,
    store: &Arc<dyn Store>,
) -> anyhow::Result<(Arc<dyn blobs::BlobStore>, String)> {
    use crate::config::FilesStorage;
    let beside_sqlite = sqlite::file_path(database_url).map(|db| {
        let mut dir = db.into_os_string();
        dir.push(".files");
        std::path::PathBuf::from(dir)
    });
    let directory = |dir: std::path::PathBuf| -> anyhow::Result<(Arc<dyn blobs::BlobStore>, String)> {
        let absolute = std::path::absolute(&dir).unwrap_or(dir);
        let directory: Arc<dyn blobs::BlobStore> = Arc::new(blobs::fs::FsBlobs::open(&absolute));
        Ok((directory, format!("in the directory {}", absolute.display())))
    };
    let in_database = || -> (Arc<dyn blobs::BlobStore>, String) {
        let database: Arc<dyn blobs::BlobStore> = store.clone();
        (database, "in the database".to_owned())
    };
    let limit = format!("uploads up to {} MiB", files.max_upload_mb);
    let (blobs, place) = match files.storage {
        FilesStorage::Fs => match files.dir.clone().or(beside_sqlite) {
            Some(dir) => directory(dir)?,
            None => anyhow::bail!("[files] storage = \"fs\" needs `dir` unless the database is a SQLite file"),
        },
        FilesStorage::Auto => match (files.dir.clone(), beside_sqlite) {
            (Some(dir), _) | (None, Some(dir)) => directory(dir)?,
            (None, None) => in_database(),
        },
        FilesStorage::Database => in_database(),
        FilesStorage::S3 => {
            let s3: Arc<dyn blobs::BlobStore> = Arc::new(blobs::s3::S3Blobs::from_config(files)?);
            let at = files.endpoint.as_deref().map(|e| format!(" at {e}")).unwrap_or_default();
            let bucket = files.bucket.as_deref().unwrap_or_default();
            (s3, format!("in the S3 bucket `{bucket}`{at}"))
        }
    };
    Ok((blobs, format!("file bytes {place}; {limit}")))
}

impl AgentRecord {
    /// The record of a freshly created agent: version 0, active.
    pub fn first(id: AgentId, config: AgentConfig, now: Timestamp) -> Self {
        AgentRecord {
            id,
            version: 0,
            active_version: 0,
            latest_version: 0,
            revision: 0,
            created_at: now,
            updated_at: now,
            config,
        }
    }
}

/// `NotFound` when a write touched no row.
pub(crate) fn found(rows_affected: u64) -> StoreResult<()> {
    if rows_affected == 0 {
        Err(StoreError::missing())
    } else {
        Ok(())
    }
}

/// A turn's entries with the parent and depth each is stored under: the first hangs from
/// `turn.parent` (or is a root), every next one from the entry before it.
fn chained(turn: &TurnWrite) -> Vec<(&Entry, Option<&str>, i64)> {
    let (mut parent, mut depth) = match &turn.parent {
        Some((id, depth)) => (Some(id.as_str()), *depth),
        None => (None, -1),
    };
    turn.entries
        .iter()
        .map(|entry| {
            depth += 1;
            let link = (entry, parent, depth);
            parent = Some(entry.id().as_str());
            link
        })
        .collect()
}

/// The values of a turn's entry rows, serialized before they reach the database (column
/// arrays for Postgres' `UNNEST`, row by row for SQLite); each chained to the previous.
pub(crate) struct EntryColumns {
    pub ids: Vec<String>,
    pub parents: Vec<Option<String>>,
    pub depths: Vec<i64>,
    pub kinds: Vec<&'static str>,
    pub bodies: Vec<String>,
    pub created: Vec<i64>,
}

impl EntryColumns {
    pub fn of(turn: &TurnWrite) -> Self {
        let links = chained(turn);
        EntryColumns {
            ids: links.iter().map(|(entry, _, _)| entry.id().as_str().to_owned()).collect(),
            parents: links.iter().map(|(_, parent, _)| parent.map(str::to_owned)).collect(),
            depths: links.iter().map(|(_, _, depth)| *depth).collect(),
            kinds: links.iter().map(|(entry, _, _)| entry.kind()).collect(),
            // Serializing an entry to JSON cannot fail (string keys, no custom errors).
            bodies: links.iter().map(|(entry, _, _)| serde_json::to_string(entry).unwrap_or_default()).collect(),
            created: links.iter().map(|(entry, _, _)| entry.created_at().micros()).collect(),
        }
    }
}

/// `LIKE` pattern matching `needle` anywhere, with the wildcards in it escaped.
pub(crate) fn contains_pattern(needle: &str) -> String {
    let escaped = needle.to_lowercase().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
    format!("%{escaped}%")
}

#[cfg(test)]
mod tests {
    #[test]
    fn both_backends_have_the_same_migration_files() {
        let names = |dir: &str| {
            let mut names: Vec<String> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        };

        assert_eq!(names("migrations/sqlite"), names("migrations/postgres"));
    }

    #[test]
    fn like_wildcards_in_a_search_are_escaped() {
        assert_eq!(super::contains_pattern("a_B%"), "%a\\_b\\%%");
    }
}
