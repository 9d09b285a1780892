//! Postgres store: for production and for several palaver processes sharing one database.
//! Row locks serialize the compare-and-set updates; JSON columns are `jsonb`.

use super::{
    sql, AgentFilter, AgentRecord, AgentStore, AliasRecord, ConversationRecord, ConversationStore, Database,
    EntryColumns, Page, StoreError, StoreResult, TurnWrite,
};
use crate::domain::agents::GuardrailConfig;
use crate::domain::agents::{AgentConfig, VersionSelector};
use crate::domain::completion::CompletionArgs;
use crate::domain::conversations::AgentVersionRef;
use crate::domain::entries::Entry;
use crate::domain::ids::{AgentId, WorkspaceId};
use crate::domain::ids::{ConversationId, EntryId};
use crate::domain::time::Timestamp;
use crate::domain::tools::Tool;
use anyhow::Context;
use async_trait::async_trait;
use serde_json::{Map, Value};
use sqlx::migrate::{Migration, MigrationType};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgRow};
use sqlx::types::Json;
use sqlx::{Connection, FromRow, Postgres, Row, Transaction};
use std::str::FromStr;
use std::time::{Duration, Instant};

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::RowNotFound => StoreError::NotFound,
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict,
            _ => StoreError::Other(anyhow::Error::new(error).context("database query failed")),
        }
    }
}

/// A row of an agent query.
struct AgentRow {
    pub id: String,
    pub version: i64,
    pub active_version: i64,
    pub latest_version: i64,
    pub revision: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub config: sqlx::types::Json<AgentConfig>,
}

impl From<AgentRow> for AgentRecord {
    fn from(row: AgentRow) -> Self {
        AgentRecord {
            id: AgentId(row.id),
            version: row.version,
            active_version: row.active_version,
            latest_version: row.latest_version,
            revision: row.revision,
            created_at: Timestamp::from_micros(row.created_at),
            updated_at: Timestamp::from_micros(row.updated_at),
            config: row.config.0,
        }
    }
}

struct AliasRow {
    pub alias: String,
    pub version: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

impl From<AliasRow> for AliasRecord {
    fn from(row: AliasRow) -> Self {
        AliasRecord {
            alias: row.alias,
            version: row.version,
            created_at: Timestamp::from_micros(row.created_at),
            updated_at: Timestamp::from_micros(row.updated_at),
        }
    }
}

struct ConversationRow {
    pub id: String,
    pub head_entry_id: Option<String>,
    pub agent_id: Option<String>,
    pub agent_version: Option<Json<AgentVersionRef>>,
    pub model: Option<String>,
    pub instructions: Option<String>,
    pub tools: Option<Json<Vec<Tool>>>,
    pub completion_args: Option<Json<CompletionArgs>>,
    pub guardrails: Option<Json<Vec<GuardrailConfig>>>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub metadata: Option<Json<Map<String, Value>>>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl From<ConversationRow> for ConversationRecord {
    fn from(row: ConversationRow) -> Self {
        ConversationRecord {
            id: ConversationId(row.id),
            head: row.head_entry_id.map(EntryId),
            agent_id: row.agent_id,
            agent_version: row.agent_version.map(|j| j.0),
            model: row.model,
            instructions: row.instructions,
            tools: row.tools.map(|j| j.0),
            completion_args: row.completion_args.map(|j| j.0),
            guardrails: row.guardrails.map(|j| j.0),
            name: row.name,
            description: row.description,
            metadata: row.metadata.map(|j| j.0),
            created_at: Timestamp::from_micros(row.created_at),
            updated_at: Timestamp::from_micros(row.updated_at),
        }
    }
}

/// A row of `sql::select_conversation_with_agent`.
struct ConversationAgentRow {
    conversation: ConversationRow,
    av_id: Option<String>,
    av_version: Option<i64>,
    av_active_version: Option<i64>,
    av_latest_version: Option<i64>,
    av_revision: Option<i64>,
    av_created_at: Option<i64>,
    av_updated_at: Option<i64>,
    av_config: Option<Json<AgentConfig>>,
}

impl ConversationAgentRow {
    fn agent(&mut self) -> Option<AgentRecord> {
        Some(AgentRecord {
            id: AgentId(self.av_id.take()?),
            version: self.av_version?,
            active_version: self.av_active_version?,
            latest_version: self.av_latest_version?,
            revision: self.av_revision?,
            created_at: Timestamp::from_micros(self.av_created_at?),
            updated_at: Timestamp::from_micros(self.av_updated_at?),
            config: self.av_config.take()?.0,
        })
    }
}

// Rows are read by column name, written out rather than derived: sqlx's derive would pull
// in its macro crate, which compiles sqlx and its Postgres driver a second time for the
// build host (minutes of a cold build for four small structs).
impl FromRow<'_, PgRow> for AgentRow {
    fn from_row(row: &PgRow) -> sqlx::Result<Self> {
        Ok(AgentRow {
            id: row.try_get("id")?,
            version: row.try_get("version")?,
            active_version: row.try_get("active_version")?,
            latest_version: row.try_get("latest_version")?,
            revision: row.try_get("revision")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            config: row.try_get("config")?,
        })
    }
}

impl FromRow<'_, PgRow> for AliasRow {
    fn from_row(row: &PgRow) -> sqlx::Result<Self> {
        Ok(AliasRow {
            alias: row.try_get("alias")?,
            version: row.try_get("version")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

impl FromRow<'_, PgRow> for ConversationRow {
    fn from_row(row: &PgRow) -> sqlx::Result<Self> {
        Ok(ConversationRow {
            id: row.try_get("id")?,
            head_entry_id: row.try_get("head_entry_id")?,
            agent_id: row.try_get("agent_id")?,
            agent_version: row.try_get("agent_version")?,
            model: row.try_get("model")?,
            instructions: row.try_get("instructions")?,
            tools: row.try_get("tools")?,
            completion_args: row.try_get("completion_args")?,
            guardrails: row.try_get("guardrails")?,
            name: row.try_get("name")?,
            description: row.try_get("description")?,
            metadata: row.try_get("metadata")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

impl FromRow<'_, PgRow> for ConversationAgentRow {
    fn from_row(row: &PgRow) -> sqlx::Result<Self> {
        Ok(ConversationAgentRow {
            conversation: ConversationRow::from_row(row)?,
            av_id: row.try_get("av_id")?,
            av_version: row.try_get("av_version")?,
            av_active_version: row.try_get("av_active_version")?,
            av_latest_version: row.try_get("av_latest_version")?,
            av_revision: row.try_get("av_revision")?,
            av_created_at: row.try_get("av_created_at")?,
            av_updated_at: row.try_get("av_updated_at")?,
            av_config: row.try_get("av_config")?,
        })
    }
}

/// Binds a conversation's columns after the workspace, in `sql::insert_conversation` order.
macro_rules! bind_conversation {
    ($query:expr, $ws:expr, $c:expr) => {
        $query
            .bind($ws.as_str())
            .bind($c.id.as_str())
            .bind($c.head.as_ref().map(|h| h.as_str()))
            .bind($c.agent_id.as_deref())
            .bind($c.agent_version.as_ref().map(Json))
            .bind($c.model.as_deref())
            .bind($c.instructions.as_deref())
            .bind($c.tools.as_ref().map(Json))
            .bind($c.completion_args.as_ref().map(Json))
            .bind($c.guardrails.as_ref().map(Json))
            .bind($c.name.as_deref())
            .bind($c.description.as_deref())
            .bind($c.metadata.as_ref().map(Json))
            .bind($c.created_at.micros())
            .bind($c.updated_at.micros())
    };
}

/// `column` holds every top-level key of the JSON object `param` with an equal value
/// (`jsonb` equality).
fn metadata_matches(column: &str, param: &str) -> String {
    format!("NOT EXISTS (SELECT 1 FROM jsonb_each({param}) f WHERE ({column} -> f.key) IS DISTINCT FROM f.value)")
}

static LIST_AGENTS: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| sql::list_agents(&metadata_matches("v.metadata", "$7")));

static SELECT_CONVERSATION_WITH_AGENT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    sql::select_conversation_with_agent(
        "CASE WHEN jsonb_typeof(c.agent_version) = 'number' THEN (c.agent_version)::bigint END",
        "(c.agent_version #>> '{}')",
    )
});

static LIST_CONVERSATIONS: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| sql::list_conversations(&metadata_matches("c.metadata", "$2")));

impl EntryColumns {
    fn bind<'q, O>(
        &'q self,
        query: sqlx::query::QueryAs<'q, Postgres, O, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::QueryAs<'q, Postgres, O, sqlx::postgres::PgArguments> {
        query
            .bind(&self.ids)
            .bind(&self.parents)
            .bind(&self.depths)
            .bind(&self.kinds)
            .bind(&self.bodies)
            .bind(&self.created)
    }
}

/// Inserts the turn's entries from the arrays bound after the other parameters (`$N` to
/// `$N+5`) when `guard` returned a row; yields (rows of `guard`, entries inserted).
fn commit_statement(guard: &str, first: usize) -> String {
    let p = |i: usize| format!("${}", first + i);
    format!(
        "WITH guard AS ({guard}), inserted AS (\
           INSERT INTO entries (workspace, id, parent_id, depth, conversation_id, kind, body, created_at) \
           SELECT $1, e.id, e.parent_id, e.depth, $2, e.kind, e.body::jsonb, e.created_at \
           FROM UNNEST({}::text[], {}::text[], {}::bigint[], {}::text[], {}::text[], {}::bigint[]) \
             AS e(id, parent_id, depth, kind, body, created_at) \
           WHERE EXISTS (SELECT 1 FROM guard) RETURNING 1) \
         SELECT (SELECT count(*) FROM guard), (SELECT count(*) FROM inserted)",
        p(0),
        p(1),
        p(2),
        p(3),
        p(4),
        p(5)
    )
}

static COMMIT_APPEND: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| commit_statement(&format!("{} RETURNING id", sql::ADVANCE_HEAD), 6));

static COMMIT_NEW_CONVERSATION: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| commit_statement(&format!("{} RETURNING id", sql::INSERT_CONVERSATION.as_str()), 16));

pub struct PgStore {
    connections: Connections,
}

impl PgStore {
    pub async fn connect(url: &str, max_connections: u32, migrate: bool) -> anyhow::Result<Self> {
        let options = PgConnectOptions::from_str(url).context("DATABASE_URL is not a valid Postgres URL")?;
        create_database_if_missing(&options).await?;
        let store = PgStore { connections: Connections::new(options, max_connections.max(1) as usize) };
        // Connects once now, so a wrong URL fails at start-up rather than on the first request.
        let mut lease = store.connections.lease().await.context("connecting to Postgres")?;
        if migrate {
            let migrator = sqlx::migrate::Migrator::new(Embedded).await.context("loading the embedded migrations")?;
            let applied = migrator.run(lease.conn()).await;
            lease
                .give_back(applied.map_err(|e| StoreError::Other(e.into())))
                .context("applying Postgres migrations")?;
        } else {
            lease.give_back(Ok(()))?;
        }
        Ok(store)
    }
}

/// The Postgres migrations, embedded at compile time. Built through sqlx's `MigrationSource`
/// rather than its `migrate!` macro (see the `FromRow` impls for why); versions,
/// descriptions and checksums are the ones the macro recorded, so databases migrated by
/// earlier builds are recognised.
#[derive(Debug)]
struct Embedded;

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "agents", include_str!("../../migrations/postgres/0001_agents.sql")),
    (2, "conversations", include_str!("../../migrations/postgres/0002_conversations.sql")),
];

impl<'s> sqlx::migrate::MigrationSource<'s> for Embedded {
    fn resolve(self) -> futures::future::BoxFuture<'s, Result<Vec<Migration>, sqlx::error::BoxDynError>> {
        let migrations = MIGRATIONS
            .iter()
            .map(|(version, description, sql)| {
                Migration::new(*version, (*description).into(), MigrationType::Simple, (*sql).into(), false)
            })
            .collect();
        Box::pin(std::future::ready(Ok(migrations)))
    }
}

/// The start-up log's description of a Postgres `DATABASE_URL`: server, database and user,
/// never the password.
pub fn describe(url: &str) -> String {
    match PgConnectOptions::from_str(url) {
        Ok(options) => format!(
            "Postgres database `{}` on {}:{} (user `{}`)",
            options.get_database().unwrap_or(options.get_username()),
            options.get_host(),
            options.get_port(),
            options.get_username()
        ),
        Err(_) => crate::config::redact_url(url),
    }
}

/// Postgres's SQLSTATE for "database does not exist" (`invalid_catalog_name`).
const UNKNOWN_DATABASE: &str = "3D000";

/// A first start against a server that lacks the named database creates it, as the SQLite
/// default creates its file; a role that may not create databases gets one line saying how.
async fn create_database_if_missing(options: &PgConnectOptions) -> anyhow::Result<()> {
    match PgConnection::connect_with(options).await {
        Ok(conn) => return Ok(conn.close().await?),
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some(UNKNOWN_DATABASE) => {}
        Err(e) => return Err(e).context("connecting to Postgres"),
    }
    let name = options.get_database().unwrap_or(options.get_username()).to_owned();
    let (host, port, user) = (options.get_host(), options.get_port(), options.get_username());
    let how = format!(
        "create it with `createdb -h {host} -p {port} -U <a role that may> {name}`, or grant the role CREATEDB"
    );
    // The maintenance database every cluster has; `template1` when `postgres` was dropped.
    let mut admin = match PgConnection::connect_with(&options.clone().database("postgres")).await {
        Ok(conn) => conn,
        Err(_) => PgConnection::connect_with(&options.clone().database("template1"))
            .await
            .with_context(|| format!("database `{name}` does not exist on {host}:{port}; {how}"))?,
    };
    let created = sqlx::query(&format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""))).execute(&mut admin).await;
    let _ = admin.close().await;
    match created {
        Ok(_) => {
            tracing::info!(database = %name, host = %host, port, "created the Postgres database, which did not exist");
            Ok(())
        }
        // Another replica starting at the same moment created it first.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => Ok(()),
        Err(sqlx::Error::Database(e)) => {
            anyhow::bail!(
                "database `{name}` does not exist on {host}:{port} and user `{user}` may not create it ({}); {how}",
                e.message()
            )
        }
        Err(e) => Err(e).with_context(|| format!("creating database `{name}` on {host}:{port}")),
    }
}

/// How long a request waits for a free connection before it fails.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// Postgres connections held by the store, at most `max` at once.
///
/// Not `sqlx::PgPool`: it pings every connection whenever it goes back to the pool
/// (sqlx-core `return_to_pool`, unconditionally), a round trip to the server after each
/// use — two per turn. Here a connection goes back as it is when its operation finished;
/// one whose operation was cancelled mid-way, or failed in a way that may have broken it,
/// is closed instead.
struct Connections {
    options: PgConnectOptions,
    /// Connections not in use, with when each was given back (most recent last).
    idle: std::sync::Mutex<Vec<(PgConnection, Instant)>>,
    permits: tokio::sync::Semaphore,
}

/// A connection idle longer than this is checked before use: servers, proxies and
/// firewalls close quiet connections, and a failed query would surface as a 500.
const CHECK_AFTER_IDLE: Duration = Duration::from_secs(60);

impl Connections {
    fn new(options: PgConnectOptions, max: usize) -> Self {
        Connections { options, idle: std::sync::Mutex::default(), permits: tokio::sync::Semaphore::new(max) }
    }

    async fn lease(&self) -> StoreResult<Lease<'_>> {
        let unavailable = |why: String| StoreError::Other(anyhow::anyhow!("the database is unavailable: {why}"));
        let permit = tokio::time::timeout(ACQUIRE_TIMEOUT, self.permits.acquire())
            .await
            .map_err(|_| unavailable("no free connection within 10 s".into()))?
            .map_err(|e| unavailable(e.to_string()))?;
        let idle = self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).pop();
        let reusable = match idle {
            Some((conn, since)) if since.elapsed() < CHECK_AFTER_IDLE => Some(conn),
            Some((mut conn, _)) => conn.ping().await.is_ok().then_some(conn),
            None => None,
        };
        let conn = match reusable {
            Some(conn) => conn,
            None => tokio::time::timeout(ACQUIRE_TIMEOUT, PgConnection::connect_with(&self.options))
                .await
                .map_err(|_| unavailable("connecting took more than 10 s".into()))??,
        };
        Ok(Lease { connections: self, conn: Some(conn), _permit: permit })
    }
}

/// A connection in use; dropped without `give_back` (a cancelled operation), it is closed.
struct Lease<'a> {
    connections: &'a Connections,
    conn: Option<PgConnection>,
    _permit: tokio::sync::SemaphorePermit<'a>,
}

impl Lease<'_> {
    fn conn(&mut self) -> &mut PgConnection {
        // Only `give_back` takes the connection, and it consumes the lease.
        self.conn.as_mut().expect("a lease holds its connection until given back")
    }

    /// Returns the connection for reuse unless `result` says it may be broken (anything but
    /// the outcomes the database itself reported), and passes `result` on.
    fn give_back<T>(mut self, result: StoreResult<T>) -> StoreResult<T> {
        let reusable = !matches!(result, Err(StoreError::Other(_)));
        if let (true, Some(conn)) = (reusable, self.conn.take()) {
            self.connections.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push((conn, Instant::now()));
        }
        result
    }
}

/// Fixes an operation's output type, so `?` inside its `async` block knows its error type.
fn operation<T>(
    op: impl std::future::Future<Output = StoreResult<T>>,
) -> impl std::future::Future<Output = StoreResult<T>> {
    op
}

/// Runs `$body` with `$conn: &mut PgConnection` on a leased connection, then gives the
/// connection back (or closes it) according to the result.
macro_rules! on_connection {
    ($store:ident, |$conn:ident| $body:block) => {{
        let mut lease = $store.connections.lease().await?;
        let $conn = lease.conn();
        let result = operation(async $body).await;
        lease.give_back(result)
    }};
}

async fn insert_version(
    tx: &mut Transaction<'_, Postgres>,
    ws: &WorkspaceId,
    id: &AgentId,
    version: i64,
    config: &AgentConfig,
    now: Timestamp,
) -> StoreResult<()> {
    sqlx::query(sql::INSERT_VERSION)
        .bind(ws.as_str())
        .bind(id.as_str())
        .bind(version)
        .bind(&config.name)
        .bind(config.deployment_chat)
        .bind(config.metadata.as_ref().map(Json))
        .bind(Json(config))
        .bind(now.micros())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn agent_version(
    tx: &mut Transaction<'_, Postgres>,
    ws: &WorkspaceId,
    id: &AgentId,
    version: i64,
) -> StoreResult<AgentRecord> {
    let row: AgentRow = sqlx::query_as(sql::SELECT_AGENT_VERSION.as_str())
        .bind(ws.as_str())
        .bind(id.as_str())
        .bind(version)
        .fetch_one(&mut **tx)
        .await?;
    Ok(row.into())
}

#[async_trait]
impl Database for PgStore {
    async fn ping(&self) -> StoreResult<()> {
        on_connection!(self, |conn| {
            sqlx::query("SELECT 1").execute(&mut *conn).await?;
            Ok(())
        })
    }
}

#[async_trait]
impl AgentStore for PgStore {
    async fn create_agent(
        &self,
        ws: &WorkspaceId,
        id: &AgentId,
        config: &AgentConfig,
        now: Timestamp,
    ) -> StoreResult<AgentRecord> {
        on_connection!(self, |conn| {
            let mut tx = conn.begin().await?;
            sqlx::query(sql::INSERT_AGENT)
                .bind(ws.as_str())
                .bind(id.as_str())
                .bind(now.micros())
                .execute(&mut *tx)
                .await?;
            insert_version(&mut tx, ws, id, 0, config, now).await?;
            tx.commit().await?;
            Ok(AgentRecord::first(id.clone(), config.clone(), now))
        })
    }

    async fn agent(&self, ws: &WorkspaceId, id: &AgentId, version: &VersionSelector) -> StoreResult<AgentRecord> {
        on_connection!(self, |conn| {
            let row: AgentRow = match version {
                VersionSelector::Active => {
                    sqlx::query_as(sql::SELECT_ACTIVE_AGENT.as_str())
                        .bind(ws.as_str())
                        .bind(id.as_str())
                        .fetch_one(&mut *conn)
                        .await?
                }
                VersionSelector::Number(n) => {
                    sqlx::query_as(sql::SELECT_AGENT_VERSION.as_str())
                        .bind(ws.as_str())
                        .bind(id.as_str())
                        .bind(n)
                        .fetch_one(&mut *conn)
                        .await?
                }
                VersionSelector::Alias(alias) => {
                    sqlx::query_as(sql::SELECT_AGENT_BY_ALIAS.as_str())
                        .bind(ws.as_str())
                        .bind(id.as_str())
                        .bind(alias)
                        .fetch_one(&mut *conn)
                        .await?
                }
            };
            Ok(row.into())
        })
    }

    async fn agents_exist(&self, ws: &WorkspaceId, ids: &[String]) -> StoreResult<Vec<bool>> {
        on_connection!(self, |conn| {
            let mut found = Vec::with_capacity(ids.len());
            for id in ids {
                let row: Option<(String,)> =
                    sqlx::query_as(sql::AGENT_EXISTS).bind(ws.as_str()).bind(id).fetch_optional(&mut *conn).await?;
                found.push(row.is_some());
            }
            Ok(found)
        })
    }

    async fn list_agents(&self, ws: &WorkspaceId, filter: &AgentFilter, page: Page) -> StoreResult<Vec<AgentRecord>> {
        on_connection!(self, |conn| {
            let rows: Vec<AgentRow> = sqlx::query_as(LIST_AGENTS.as_str())
                .bind(ws.as_str())
                .bind(filter.name.as_deref())
                .bind(filter.id.as_deref())
                .bind(filter.deployment_chat)
                .bind(filter.search.as_deref().map(super::contains_pattern))
                .bind(filter.before_id.as_deref())
                .bind(filter.metadata.as_ref().map(Json))
                .bind(page.limit)
                .bind(page.offset)
                .fetch_all(&mut *conn)
                .await?;
            Ok(rows.into_iter().map(AgentRecord::from).collect())
        })
    }

    async fn append_agent_version(
        &self,
        ws: &WorkspaceId,
        id: &AgentId,
        expected_revision: i64,
        config: &AgentConfig,
        now: Timestamp,
    ) -> StoreResult<AgentRecord> {
        on_connection!(self, |conn| {
            let mut tx = conn.begin().await?;
            let bumped: Option<(i64,)> = sqlx::query_as(sql::BUMP_AGENT_FOR_NEW_VERSION)
                .bind(ws.as_str())
                .bind(id.as_str())
                .bind(expected_revision)
                .bind(now.micros())
                .fetch_optional(&mut *tx)
                .await?;
            let Some((version,)) = bumped else {
                return Err(StoreError::Conflict);
            };
            insert_version(&mut tx, ws, id, version, config, now).await?;
            let record = agent_version(&mut tx, ws, id, version).await?;
            tx.commit().await?;
            Ok(record)
        })
    }

    async fn activate_agent_version(
        &self,
        ws: &WorkspaceId,
        id: &AgentId,
        version: i64,
        now: Timestamp,
    ) -> StoreResult<AgentRecord> {
        on_connection!(self, |conn| {
            let mut tx = conn.begin().await?;
            let done = sqlx::query(sql::ACTIVATE_VERSION)
                .bind(ws.as_str())
                .bind(id.as_str())
                .bind(version)
                .bind(now.micros())
                .execute(&mut *tx)
                .await?;
            if done.rows_affected() == 0 {
                return Err(StoreError::NotFound);
            }
            let record = agent_version(&mut tx, ws, id, version).await?;
            tx.commit().await?;
            Ok(record)
        })
    }

    async fn delete_agent(&self, ws: &WorkspaceId, id: &AgentId) -> StoreResult<()> {
        on_connection!(self, |conn| {
            let done = sqlx::query(sql::DELETE_AGENT).bind(ws.as_str()).bind(id.as_str()).execute(&mut *conn).await?;
            super::found(done.rows_affected())
        })
    }

    async fn list_agent_versions(&self, ws: &WorkspaceId, id: &AgentId, page: Page) -> StoreResult<Vec<AgentRecord>> {
        on_connection!(self, |conn| {
            let rows: Vec<AgentRow> = sqlx::query_as(sql::LIST_AGENT_VERSIONS.as_str())
                .bind(ws.as_str())
                .bind(id.as_str())
                .bind(page.limit)
                .bind(page.offset)
                .fetch_all(&mut *conn)
                .await?;
            Ok(rows.into_iter().map(AgentRecord::from).collect())
        })
    }

    async fn put_alias(
        &self,
        ws: &WorkspaceId,
        id: &AgentId,
        alias: &str,
        version: i64,
        now: Timestamp,
    ) -> StoreResult<AliasRecord> {
        on_connection!(self, |conn| {
            let row: AliasRow = sqlx::query_as(sql::UPSERT_ALIAS)
                .bind(ws.as_str())
                .bind(id.as_str())
                .bind(alias)
                .bind(version)
                .bind(now.micros())
                .fetch_one(&mut *conn)
                .await?;
            Ok(row.into())
        })
    }

    async fn list_aliases(&self, ws: &WorkspaceId, id: &AgentId) -> StoreResult<Vec<AliasRecord>> {
        on_connection!(self, |conn| {
            let rows: Vec<AliasRow> =
                sqlx::query_as(sql::LIST_ALIASES).bind(ws.as_str()).bind(id.as_str()).fetch_all(&mut *conn).await?;
            Ok(rows.into_iter().map(AliasRecord::from).collect())
        })
    }

    async fn delete_alias(&self, ws: &WorkspaceId, id: &AgentId, alias: &str) -> StoreResult<()> {
        on_connection!(self, |conn| {
            let done = sqlx::query(sql::DELETE_ALIAS)
                .bind(ws.as_str())
                .bind(id.as_str())
                .bind(alias)
                .execute(&mut *conn)
                .await?;
            super::found(done.rows_affected())
        })
    }
}

#[async_trait]
impl ConversationStore for PgStore {
    async fn commit_turn(&self, ws: &WorkspaceId, turn: &TurnWrite) -> StoreResult<()> {
        on_connection!(self, |conn| {
            // One statement, so one round trip and atomic by itself: the head moves (or the
            // conversation is created) and the entries are inserted only if it did. Unlike
            // SQLite, Postgres runs data-modifying CTEs, which saves BEGIN, COMMIT and a
            // statement per turn.
            let conversation = &turn.conversation;
            let columns = EntryColumns::of(turn);
            let (moved, inserted): (i64, i64) = if turn.create {
                let query = sqlx::query_as(COMMIT_NEW_CONVERSATION.as_str());
                let query = bind_conversation!(query, ws, conversation);
                columns.bind(query).fetch_one(&mut *conn).await?
            } else {
                let query = sqlx::query_as(COMMIT_APPEND.as_str())
                    .bind(ws.as_str())
                    .bind(conversation.id.as_str())
                    .bind(conversation.head.as_ref().map(EntryId::as_str))
                    .bind(conversation.updated_at.micros())
                    .bind(turn.expected_head.as_ref().map(EntryId::as_str));
                columns.bind(query).fetch_one(&mut *conn).await?
            };
            if moved == 0 {
                return Err(StoreError::Conflict);
            }
            if inserted as usize != turn.entries.len() {
                return Err(StoreError::Other(anyhow::anyhow!(
                    "a turn stored {inserted} of {} entries",
                    turn.entries.len()
                )));
            }
            Ok(())
        })
    }

    async fn conversation(&self, ws: &WorkspaceId, id: &ConversationId) -> StoreResult<ConversationRecord> {
        on_connection!(self, |conn| {
            let row: ConversationRow = sqlx::query_as(sql::SELECT_CONVERSATION.as_str())
                .bind(ws.as_str())
                .bind(id.as_str())
                .fetch_one(&mut *conn)
                .await?;
            Ok(row.into())
        })
    }

    async fn conversation_for_turn(
        &self,
        ws: &WorkspaceId,
        id: &ConversationId,
    ) -> StoreResult<(ConversationRecord, Option<AgentRecord>)> {
        on_connection!(self, |conn| {
            let mut row: ConversationAgentRow = sqlx::query_as(SELECT_CONVERSATION_WITH_AGENT.as_str())
                .bind(ws.as_str())
                .bind(id.as_str())
                .fetch_one(&mut *conn)
                .await?;
            let agent = row.agent();
            Ok((row.conversation.into(), agent))
        })
    }

    async fn list_conversations(
        &self,
        ws: &WorkspaceId,
        metadata: Option<&Map<String, Value>>,
        page: Page,
    ) -> StoreResult<Vec<ConversationRecord>> {
        on_connection!(self, |conn| {
            let rows: Vec<ConversationRow> = sqlx::query_as(LIST_CONVERSATIONS.as_str())
                .bind(ws.as_str())
                .bind(metadata.map(Json))
                .bind(page.limit)
                .bind(page.offset)
                .fetch_all(&mut *conn)
                .await?;
            Ok(rows.into_iter().map(ConversationRecord::from).collect())
        })
    }

    async fn delete_conversation(&self, ws: &WorkspaceId, id: &ConversationId) -> StoreResult<()> {
        on_connection!(self, |conn| {
            let done =
                sqlx::query(sql::DELETE_CONVERSATION).bind(ws.as_str()).bind(id.as_str()).execute(&mut *conn).await?;
            super::found(done.rows_affected())
        })
    }

    async fn history(&self, ws: &WorkspaceId, head: &EntryId) -> StoreResult<Vec<Entry>> {
        on_connection!(self, |conn| {
            let rows: Vec<(Json<Entry>,)> =
                sqlx::query_as(sql::HISTORY).bind(ws.as_str()).bind(head.as_str()).fetch_all(&mut *conn).await?;
            Ok(rows.into_iter().map(|(entry,)| entry.0).collect())
        })
    }
}

#[cfg(test)]
mod tests {
    fn files(dir: &str) -> Vec<String> {
        let mut files: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        files.sort();
        files
    }

    #[test]
    fn every_migration_file_is_embedded_and_both_dialects_have_the_same_ones() {
        let embedded: Vec<String> = super::MIGRATIONS.iter().map(|(v, d, _)| format!("{v:04}_{d}.sql")).collect();

        assert_eq!(files("migrations/postgres"), embedded);
        assert_eq!(files("migrations/sqlite"), embedded);
    }
}
