//! Postgres store: for production and for several palaver processes sharing one database.
//! Row locks serialize the compare-and-set updates; JSON columns are `jsonb`.

use super::blobs::{BlobKey, ChunkTable};
use super::rows;
use super::sql::{self, Columns, Naming};
use super::{
    AgentFilter, AgentRecord, AgentStore, AgentWrite, AliasRecord, ClaimTimes, ConversationRecord, ConversationStore,
    Database, EntryColumns, FileFilter, FileRecord, FileStore, IdempotencyStore, KeyClaim, KeyUse, NewVersion,
    NotFoundAs, Page, RunEvents, RunStore, RunWrite, StoreError, StoreResult, StoredAnswer, StoredEvent, TurnWrite,
};
use crate::domain::agents::{AgentConfig, VersionSelector};
use crate::domain::entries::Entry;
use crate::domain::ids::{AgentId, ConversationId, EntryId, FileId, WorkspaceId};
use crate::domain::time::Timestamp;
use anyhow::Context;
use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use sqlx::migrate::{Migration, MigrationType};
use sqlx::postgres::{PgArguments, PgConnectOptions, PgConnection, PgRow};
use sqlx::types::Json;
use sqlx::{Connection, Postgres, Row, Transaction};
use std::str::FromStr;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

/// SQLSTATEs that mean "the database cannot serve now", not "this query is wrong": class 08
/// (connection exceptions), class 57 (operator intervention: admin or crash shutdown, "the
/// database system is starting up"), too many connections, and a database that does not
/// accept connections (`ALLOW_CONNECTIONS false`, 55000).
fn unavailable_state(code: &str) -> bool {
    code.starts_with("08") || code.starts_with("57") || code == "53300" || code == "55000"
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => {
                StoreError::Unavailable(error.to_string())
            }
            sqlx::Error::Database(db) if db.code().is_some_and(|code| unavailable_state(&code)) => {
                StoreError::Unavailable(db.message().to_owned())
            }
            sqlx::Error::RowNotFound => StoreError::missing(),
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict,
            _ => StoreError::Other(anyhow::Error::new(error).context("database query failed")),
        }
    }
}

type PgQuery<'q> = sqlx::query::Query<'q, Postgres, PgArguments>;

// Row shapes: each table's columns (`sql::Columns`) bound with one `match`, and read back
// by name. Written out rather than derived: sqlx's `FromRow` derive would pull in its
// macro crate, which compiles sqlx and its Postgres driver a second time for the build
// host (minutes of a cold build for a handful of rows).

/// Binds an agent's row after the workspace.
fn bind_agent<'q>(mut query: PgQuery<'q>, agent: &'q AgentRecord) -> PgQuery<'q> {
    use sql::Agent as A;
    for &column in A::ALL {
        query = match column {
            A::Id => query.bind(agent.id.as_str()),
            A::ActiveVersion => query.bind(agent.active_version),
            A::LatestVersion => query.bind(agent.latest_version),
            A::Revision => query.bind(agent.revision),
            A::CreatedAt => query.bind(agent.created_at.micros()),
            A::UpdatedAt => query.bind(agent.updated_at.micros()),
        };
    }
    query
}

/// Binds a version's row after the workspace.
fn bind_version<'q>(
    mut query: PgQuery<'q>,
    id: &'q AgentId,
    version: i64,
    config: &'q AgentConfig,
    now: Timestamp,
) -> PgQuery<'q> {
    use sql::AgentVersion as V;
    for &column in V::ALL {
        query = match column {
            V::AgentId => query.bind(id.as_str()),
            V::Version => query.bind(version),
            V::Name => query.bind(&config.name),
            V::DeploymentChat => query.bind(config.deployment_chat),
            V::Metadata => query.bind(config.metadata.as_ref().map(Json)),
            V::Config => query.bind(Json(config)),
            V::CreatedAt => query.bind(now.micros()),
        };
    }
    query
}

/// Binds an alias's row after the workspace.
fn bind_alias<'q>(mut query: PgQuery<'q>, agent: &'q AgentId, alias: &'q AliasRecord) -> PgQuery<'q> {
    use sql::AgentAlias as L;
    for &column in L::ALL {
        query = match column {
            L::AgentId => query.bind(agent.as_str()),
            L::Alias => query.bind(&alias.alias),
            L::Version => query.bind(alias.version),
            L::CreatedAt => query.bind(alias.created_at.micros()),
            L::UpdatedAt => query.bind(alias.updated_at.micros()),
        };
    }
    query
}

fn bind_conversation<'q>(mut query: PgQuery<'q>, c: &'q ConversationRecord) -> PgQuery<'q> {
    use sql::Conversation as C;
    for &column in C::ALL {
        query = match column {
            C::Id => query.bind(c.id.as_str()),
            C::Head => query.bind(c.head.as_ref().map(EntryId::as_str)),
            C::AgentId => query.bind(c.agent_id.as_deref()),
            C::AgentVersion => query.bind(c.agent_version.as_ref().map(Json)),
            C::Model => query.bind(c.model.as_deref()),
            C::Instructions => query.bind(c.instructions.as_deref()),
            C::Tools => query.bind(c.tools.as_ref().map(Json)),
            C::CompletionArgs => query.bind(c.completion_args.as_ref().map(Json)),
            C::Guardrails => query.bind(c.guardrails.as_ref().map(Json)),
            C::Name => query.bind(c.name.as_deref()),
            C::Description => query.bind(c.description.as_deref()),
            C::Metadata => query.bind(c.metadata.as_ref().map(Json)),
            C::CreatedAt => query.bind(c.created_at.micros()),
            C::UpdatedAt => query.bind(c.updated_at.micros()),
        };
    }
    query
}

rows::read_row!(PgRow, sqlx::Error, try_get, json, optional_json);

/// A `jsonb` column that is never NULL.
fn json<T: DeserializeOwned>(row: &PgRow, column: &str) -> sqlx::Result<T> {
    Ok(row.try_get::<Json<T>, _>(column)?.0)
}

fn optional_json<T: DeserializeOwned>(row: &PgRow, column: &str) -> sqlx::Result<Option<T>> {
    Ok(row.try_get::<Option<Json<T>>, _>(column)?.map(|j| j.0))
}

/// The entries' row shape here: a turn's entries travel as one array per column, unnested
/// by the turn's one statement. The arrays' element type (bodies are bound as text and
/// cast); `None` for the conversation id, the same for every entry, which the statement
/// binds once.
fn entry_array(column: sql::Entry) -> Option<&'static str> {
    use sql::Entry as E;
    match column {
        E::Id | E::ParentId | E::Kind => Some("text"),
        E::Depth | E::CreatedAt => Some("bigint"),
        E::Body => Some("jsonb"),
        E::ConversationId => None,
    }
}

/// Binds the arrays of `entry_array`, in `sql::Entry::ALL` order.
fn bind_entries<'q>(mut query: PgQuery<'q>, entries: &'q EntryColumns) -> PgQuery<'q> {
    use sql::Entry as E;
    for &column in E::ALL {
        query = match column {
            E::Id => query.bind(&entries.ids),
            E::ParentId => query.bind(&entries.parents),
            E::Depth => query.bind(&entries.depths),
            E::ConversationId => query, // bound once, before the arrays
            E::Kind => query.bind(&entries.kinds),
            E::Body => query.bind(&entries.bodies),
            E::CreatedAt => query.bind(&entries.created),
        };
    }
    query
}

/// `column` holds every top-level key of the JSON object `param` with an equal value
/// (`jsonb` equality).
fn metadata_matches(column: &str, param: &str) -> String {
    format!("NOT EXISTS (SELECT 1 FROM jsonb_each({param}) f WHERE ({column} -> f.key) IS DISTINCT FROM f.value)")
}

static SELECT_ACTIVE_AGENTS: LazyLock<String> = LazyLock::new(|| sql::select_active_agents("a.id = ANY($2)"));

static LIST_AGENTS: LazyLock<String> = LazyLock::new(|| sql::list_agents(&metadata_matches("v.metadata", "$7")));

static SELECT_CONVERSATION_WITH_AGENT: LazyLock<String> = LazyLock::new(|| {
    sql::select_conversation_with_agent(
        "CASE WHEN jsonb_typeof(c.agent_version) = 'number' THEN (c.agent_version)::bigint END",
        "(c.agent_version #>> '{}')",
    )
});

/// `column` is one of the text array `param`.
fn in_array(column: &str, param: &str) -> String {
    format!("{column} = ANY({param}::text[])")
}

static LIST_FILES: LazyLock<String> = LazyLock::new(|| sql::list_files(in_array));

static COUNT_FILES: LazyLock<String> = LazyLock::new(|| sql::count_files(in_array));

static LIST_CONVERSATIONS: LazyLock<String> =
    LazyLock::new(|| sql::list_conversations(&metadata_matches("c.metadata", "$2")));

/// Inserts the turn's entries from the arrays bound after the other parameters (from
/// `$first`) when `guard` returned a row, `conversation` being the parameter that holds
/// their conversation's id; yields `moved` (rows of `guard`) and `inserted`.
fn commit_statement(guard: &str, conversation: usize, first: usize) -> String {
    let (mut values, mut arrays, mut names) = (Vec::new(), Vec::new(), Vec::new());
    for &column in sql::Entry::ALL {
        match entry_array(column) {
            Some(element) => {
                arrays.push(format!("${}::{element}[]", first + arrays.len()));
                names.push(column.name());
                values.push(format!("e.{}", column.name()));
            }
            None => values.push(format!("${conversation}")),
        }
    }
    format!(
        "WITH guard AS ({guard}), inserted AS (\
           INSERT INTO entries (workspace, {}) \
           SELECT $1, {} FROM UNNEST({}) AS e({}) \
           WHERE EXISTS (SELECT 1 FROM guard) RETURNING 1) \
         SELECT (SELECT count(*) FROM guard) AS moved, (SELECT count(*) FROM inserted) AS inserted",
        sql::list(sql::Entry::ALL, None),
        values.join(", "),
        arrays.join(", "),
        names.join(", ")
    )
}

/// Binds: workspace, id, new head, now, expected head, then the entry arrays.
static COMMIT_APPEND: LazyLock<String> =
    LazyLock::new(|| commit_statement(&format!("{} RETURNING id", sql::ADVANCE_HEAD), 2, 6));

/// Binds: workspace, the conversation's row, then the entry arrays.
static COMMIT_NEW_CONVERSATION: LazyLock<String> = LazyLock::new(|| {
    use sql::Conversation as C;
    let id = 2 + C::ALL.iter().position(|&c| c == C::Id).unwrap_or_default();
    commit_statement(&format!("{} RETURNING id", sql::INSERT_CONVERSATION.as_str()), id, 2 + C::ALL.len())
});

/// Cheap to clone: the connections are shared (a download's stream holds a clone).
#[derive(Clone)]
pub struct PgStore {
    connections: Arc<Connections>,
}

impl PgStore {
    pub async fn connect(url: &str, connect: super::ConnectOptions) -> anyhow::Result<Self> {
        let options = PgConnectOptions::from_str(url).context("DATABASE_URL is not a valid Postgres URL")?;
        create_database_if_missing(&options).await?;
        let connections =
            Arc::new(Connections::new(options, connect.max_connections.max(1) as usize, connect.acquire_timeout));
        let store = PgStore { connections };
        let migrate = connect.migrate;
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
/// rather than its `migrate!` macro (see the row shapes for why); versions,
/// descriptions and checksums are the ones the macro recorded, so databases migrated by
/// earlier builds are recognised.
#[derive(Debug)]
struct Embedded;

const MIGRATIONS: &[(i64, &str, &str)] = migrations!("postgres");

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

/// Postgres connections held by the store, at most `max` at once.
///
/// Not `sqlx::PgPool`: it pings every connection whenever it goes back to the pool
/// (sqlx-core `return_to_pool`, unconditionally), a round trip to the server after each
/// use — two per turn. Here a connection goes back as it is when its operation finished;
/// one whose operation was cancelled mid-way, or failed in a way that may have broken it,
/// is closed instead.
struct Connections {
    options: PgConnectOptions,
    /// How long an operation waits for a free connection, or for a new one, before it
    /// fails as `Unavailable` (`PALAVER_DB_ACQUIRE_TIMEOUT_MS`).
    acquire_timeout: Duration,
    /// Connections not in use, with when each was given back (most recent last).
    idle: std::sync::Mutex<Vec<(PgConnection, Instant)>>,
    permits: tokio::sync::Semaphore,
}

/// A connection idle longer than this is checked before use: servers, proxies and
/// firewalls close quiet connections, and a failed query would surface as a 500.
const CHECK_AFTER_IDLE: Duration = Duration::from_secs(60);

impl Connections {
    fn new(options: PgConnectOptions, max: usize, acquire_timeout: Duration) -> Self {
        let (idle, permits) = (std::sync::Mutex::default(), tokio::sync::Semaphore::new(max));
        Connections { options, acquire_timeout, idle, permits }
    }

    async fn lease(&self) -> StoreResult<Lease<'_>> {
        let waited = self.acquire_timeout;
        let permit = tokio::time::timeout(waited, self.permits.acquire())
            .await
            .map_err(|_| StoreError::Unavailable(format!("no free database connection within {waited:?}")))?
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let idle = self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).pop();
        let reusable = match idle {
            Some((conn, since)) if since.elapsed() < CHECK_AFTER_IDLE => Some(conn),
            // Bounded too: a connection a firewall dropped silently would otherwise hang here
            // until TCP gives up, past `PALAVER_DB_ACQUIRE_TIMEOUT_MS`.
            Some((mut conn, _)) => {
                let alive = tokio::time::timeout(waited, conn.ping()).await.is_ok_and(|pinged| pinged.is_ok());
                alive.then_some(conn)
            }
            None => None,
        };
        let conn = match reusable {
            Some(conn) => conn,
            None => tokio::time::timeout(waited, PgConnection::connect_with(&self.options))
                .await
                .map_err(|_| StoreError::Unavailable(format!("connecting took more than {waited:?}")))??,
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
        let reusable = !matches!(result, Err(StoreError::Other(_) | StoreError::Unavailable(_)));
        if let Err(StoreError::Unavailable(_)) = result {
            // The server went away or restarted: the other idle connections are as dead as
            // this one, and each would cost a request its answer before being dropped.
            self.connections.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clear();
        }
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
    let query = sqlx::query(sql::INSERT_VERSION.as_str()).bind(ws.as_str());
    bind_version(query, id, version, config, now).execute(&mut **tx).await?;
    Ok(())
}

async fn agent_version(
    tx: &mut Transaction<'_, Postgres>,
    ws: &WorkspaceId,
    id: &AgentId,
    version: i64,
) -> StoreResult<AgentRecord> {
    let row = sqlx::query(sql::SELECT_AGENT_VERSION.as_str())
        .bind(ws.as_str())
        .bind(id.as_str())
        .bind(version)
        .fetch_one(&mut **tx)
        .await?;
    Ok(rows::agent_record(&row, Naming::Own)?)
}

fn agent_records(rows: &[PgRow]) -> StoreResult<Vec<AgentRecord>> {
    Ok(rows.iter().map(|row| rows::agent_record(row, Naming::Own)).collect::<sqlx::Result<_>>()?)
}

#[async_trait]
impl Database for PgStore {
    fn system(&self) -> &'static str {
        "postgresql"
    }

    fn shared_by_replicas(&self) -> bool {
        true
    }

    async fn ping(&self) -> StoreResult<()> {
        on_connection!(self, |conn| {
            sqlx::query("SELECT 1").execute(&mut *conn).await?;
            Ok(())
        })
    }

    async fn setting(&self, name: &str, value: &str) -> StoreResult<String> {
        on_connection!(self, |conn| {
            sqlx::query(sql::INSERT_SETTING).bind(name).bind(value).execute(&mut *conn).await?;
            let row = sqlx::query(sql::SELECT_SETTING).bind(name).fetch_one(&mut *conn).await?;
            Ok(row.try_get("value")?)
        })
    }
}

#[async_trait]
impl AgentStore for PgStore {
    async fn create_agent(&self, at: AgentWrite<'_>, config: &AgentConfig) -> StoreResult<AgentRecord> {
        let AgentWrite { ws, id, now } = at;
        let record = AgentRecord::first(id.clone(), config.clone(), now);
        on_connection!(self, |conn| {
            let mut tx = conn.begin().await?;
            let query = sqlx::query(sql::INSERT_AGENT.as_str()).bind(ws.as_str());
            bind_agent(query, &record).execute(&mut *tx).await?;
            insert_version(&mut tx, ws, id, record.version, config, now).await?;
            tx.commit().await?;
            Ok(())
        })?;
        Ok(record)
    }

    async fn agent(&self, ws: &WorkspaceId, id: &AgentId, version: &VersionSelector) -> StoreResult<AgentRecord> {
        on_connection!(self, |conn| {
            let query = match version {
                VersionSelector::Active => {
                    sqlx::query(sql::SELECT_ACTIVE_AGENT.as_str()).bind(ws.as_str()).bind(id.as_str())
                }
                VersionSelector::Number(n) => {
                    sqlx::query(sql::SELECT_AGENT_VERSION.as_str()).bind(ws.as_str()).bind(id.as_str()).bind(n)
                }
                VersionSelector::Alias(alias) => {
                    sqlx::query(sql::SELECT_AGENT_BY_ALIAS.as_str()).bind(ws.as_str()).bind(id.as_str()).bind(alias)
                }
            };
            let row = query.fetch_one(&mut *conn).await?;
            Ok(rows::agent_record(&row, Naming::Own)?)
        })
        .not_found_as("Agent", id.as_str())
    }

    async fn agents_exist(&self, ws: &WorkspaceId, ids: &[String]) -> StoreResult<Vec<bool>> {
        on_connection!(self, |conn| {
            let mut found = Vec::with_capacity(ids.len());
            for id in ids {
                let row = sqlx::query(sql::AGENT_EXISTS).bind(ws.as_str()).bind(id).fetch_optional(&mut *conn).await?;
                found.push(row.is_some());
            }
            Ok(found)
        })
    }

    async fn active_agents(&self, ws: &WorkspaceId, ids: &[String]) -> StoreResult<Vec<AgentRecord>> {
        on_connection!(self, |conn| {
            let rows =
                sqlx::query(SELECT_ACTIVE_AGENTS.as_str()).bind(ws.as_str()).bind(ids).fetch_all(&mut *conn).await?;
            agent_records(&rows)
        })
    }

    async fn list_agents(&self, ws: &WorkspaceId, filter: &AgentFilter, page: Page) -> StoreResult<Vec<AgentRecord>> {
        on_connection!(self, |conn| {
            let rows = sqlx::query(LIST_AGENTS.as_str())
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
            agent_records(&rows)
        })
    }

    async fn append_agent_version(&self, at: AgentWrite<'_>, version: NewVersion<'_>) -> StoreResult<AgentRecord> {
        let (AgentWrite { ws, id, now }, NewVersion { expected_revision, config }) = (at, version);
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

    async fn activate_agent_version(&self, at: AgentWrite<'_>, version: i64) -> StoreResult<AgentRecord> {
        let AgentWrite { ws, id, now } = at;
        on_connection!(self, |conn| {
            let mut tx = conn.begin().await?;
            let done = sqlx::query(sql::ACTIVATE_VERSION)
                .bind(ws.as_str())
                .bind(id.as_str())
                .bind(version)
                .bind(now.micros())
                .execute(&mut *tx)
                .await?;
            super::found(done.rows_affected())?;
            let record = agent_version(&mut tx, ws, id, version).await?;
            tx.commit().await?;
            Ok(record)
        })
        .not_found_as("Agent", id.as_str())
    }

    async fn delete_agent(&self, ws: &WorkspaceId, id: &AgentId) -> StoreResult<()> {
        on_connection!(self, |conn| {
            let done = sqlx::query(sql::DELETE_AGENT).bind(ws.as_str()).bind(id.as_str()).execute(&mut *conn).await?;
            super::found(done.rows_affected())
        })
        .not_found_as("Agent", id.as_str())
    }

    async fn list_agent_versions(&self, ws: &WorkspaceId, id: &AgentId, page: Page) -> StoreResult<Vec<AgentRecord>> {
        on_connection!(self, |conn| {
            let rows = sqlx::query(sql::LIST_AGENT_VERSIONS.as_str())
                .bind(ws.as_str())
                .bind(id.as_str())
                .bind(page.limit)
                .bind(page.offset)
                .fetch_all(&mut *conn)
                .await?;
            agent_records(&rows)
        })
    }

    async fn put_alias(&self, at: AgentWrite<'_>, alias: &str, version: i64) -> StoreResult<AliasRecord> {
        let AgentWrite { ws, id, now } = at;
        let record = AliasRecord { alias: alias.to_owned(), version, created_at: now, updated_at: now };
        on_connection!(self, |conn| {
            let query = sqlx::query(sql::UPSERT_ALIAS.as_str()).bind(ws.as_str());
            let row = bind_alias(query, id, &record).fetch_one(&mut *conn).await?;
            Ok(rows::alias_record(&row)?)
        })
    }

    async fn list_aliases(&self, ws: &WorkspaceId, id: &AgentId) -> StoreResult<Vec<AliasRecord>> {
        on_connection!(self, |conn| {
            let rows = sqlx::query(sql::LIST_ALIASES.as_str())
                .bind(ws.as_str())
                .bind(id.as_str())
                .fetch_all(&mut *conn)
                .await?;
            Ok(rows.iter().map(rows::alias_record).collect::<sqlx::Result<_>>()?)
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
        .not_found_as("Alias", alias)
    }
}

#[async_trait]
impl IdempotencyStore for PgStore {
    async fn claim_key(&self, key: KeyUse<'_>, times: ClaimTimes) -> StoreResult<KeyClaim> {
        on_connection!(self, |conn| {
            let claimed = sqlx::query(sql::CLAIM_KEY)
                .bind(key.ws.as_str())
                .bind(key.key)
                .bind(key.fingerprint)
                .bind(times.now.micros())
                .bind(times.expires_at.micros())
                .bind(times.abandoned_before.micros())
                .execute(&mut *conn)
                .await?;
            if claimed.rows_affected() > 0 {
                return Ok(KeyClaim::Claimed);
            }
            let row =
                sqlx::query(sql::SELECT_KEY).bind(key.ws.as_str()).bind(key.key).fetch_optional(&mut *conn).await?;
            let found = row
                .map(|row| -> sqlx::Result<_> {
                    Ok((
                        row.try_get("fingerprint")?,
                        row.try_get::<Option<i32>, _>("status")?.map(i64::from),
                        row.try_get("content_type")?,
                        row.try_get("body")?,
                    ))
                })
                .transpose()?;
            Ok(super::existing_claim(key.fingerprint, found))
        })
    }

    async fn finish_key(&self, key: KeyUse<'_>, answer: &StoredAnswer) -> StoreResult<()> {
        on_connection!(self, |conn| {
            sqlx::query(sql::FINISH_KEY)
                .bind(key.ws.as_str())
                .bind(key.key)
                .bind(key.fingerprint)
                .bind(i32::from(answer.status))
                .bind(&answer.content_type)
                .bind(&answer.body)
                .execute(&mut *conn)
                .await?;
            Ok(())
        })
    }

    async fn touch_key(&self, key: KeyUse<'_>, now: Timestamp) -> StoreResult<()> {
        on_connection!(self, |conn| {
            let query = sqlx::query(sql::TOUCH_KEY).bind(key.ws.as_str()).bind(key.key).bind(key.fingerprint);
            query.bind(now.micros()).execute(&mut *conn).await?;
            Ok(())
        })
    }

    async fn release_key(&self, key: KeyUse<'_>) -> StoreResult<()> {
        on_connection!(self, |conn| {
            let query = sqlx::query(sql::RELEASE_KEY).bind(key.ws.as_str()).bind(key.key).bind(key.fingerprint);
            query.execute(&mut *conn).await?;
            Ok(())
        })
    }

    async fn purge_keys(&self, now: Timestamp) -> StoreResult<u64> {
        on_connection!(self, |conn| {
            Ok(sqlx::query(sql::PURGE_KEYS).bind(now.micros()).execute(&mut *conn).await?.rows_affected())
        })
    }
}

/// A batch of a run in one statement: the run's row, and its events as one array per
/// column, unnested.
static WRITE_RUN: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH run AS ({}) INSERT INTO run_events (workspace, conversation_id, run_id, seq, name, data) \
         SELECT $1, $2, $3, s, n, d FROM UNNEST($6::bigint[], $7::text[], $8::text[]) AS t(s, n, d)",
        sql::UPSERT_RUN
    )
});

async fn write_run(conn: &mut PgConnection, run: &RunWrite<'_>) -> StoreResult<()> {
    let seqs: Vec<i64> = run.events.iter().map(|e| e.seq).collect();
    let names: Vec<&str> = run.events.iter().map(|e| e.name.as_str()).collect();
    let data: Vec<&str> = run.events.iter().map(|e| e.data.as_str()).collect();
    let query = sqlx::query(WRITE_RUN.as_str()).bind(run.ws.as_str()).bind(run.conversation_id).bind(run.run_id);
    let query = query.bind(run.started_at.micros()).bind(run.finished_at.map(|at| at.micros()));
    query.bind(&seqs).bind(&names).bind(&data).execute(conn).await?;
    Ok(())
}

#[async_trait]
impl RunStore for PgStore {
    async fn write_runs(&self, runs: &[RunWrite<'_>]) -> StoreResult<()> {
        // In one order on every replica, so two replicas' batches never wait for each
        // other's row locks in a cycle (a deadlock Postgres would break only after a second).
        let mut runs: Vec<&RunWrite<'_>> = runs.iter().collect();
        runs.sort_unstable_by_key(|run| (run.ws.as_str(), run.conversation_id));
        on_connection!(self, |conn| {
            // One run's statement is atomic by itself: no BEGIN and COMMIT round trips.
            if let [run] = runs[..] {
                return write_run(&mut *conn, run).await;
            }
            let mut tx = conn.begin().await?;
            for run in runs {
                write_run(&mut tx, run).await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    async fn run_events(&self, ws: &WorkspaceId, conversation_id: &str, after: i64) -> StoreResult<Option<RunEvents>> {
        on_connection!(self, |conn| {
            let row =
                sqlx::query(sql::SELECT_RUN).bind(ws.as_str()).bind(conversation_id).fetch_optional(&mut *conn).await?;
            let Some(row) = row else { return Ok(None) };
            let (run_id, finished_at): (String, Option<i64>) = (row.try_get("run_id")?, row.try_get("finished_at")?);
            let query = sqlx::query(sql::SELECT_RUN_EVENTS).bind(ws.as_str()).bind(conversation_id).bind(&run_id);
            let rows = query.bind(after).fetch_all(&mut *conn).await?;
            let events = rows
                .iter()
                .map(|row| {
                    Ok(StoredEvent { seq: row.try_get("seq")?, name: row.try_get("name")?, data: row.try_get("data")? })
                })
                .collect::<sqlx::Result<Vec<_>>>()?;
            Ok(Some(RunEvents { run_id, finished_at: finished_at.map(Timestamp::from_micros), events }))
        })
    }

    async fn purge_runs(&self, before: Timestamp) -> StoreResult<u64> {
        on_connection!(self, |conn| {
            let events = sqlx::query(sql::PURGE_RUN_EVENTS).bind(before.micros()).execute(&mut *conn).await?;
            sqlx::query(sql::PURGE_RUNS).bind(before.micros()).execute(&mut *conn).await?;
            Ok(events.rows_affected())
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
            let entries = EntryColumns::of(turn);
            let query = if turn.create {
                bind_conversation(sqlx::query(COMMIT_NEW_CONVERSATION.as_str()).bind(ws.as_str()), conversation)
            } else {
                sqlx::query(COMMIT_APPEND.as_str())
                    .bind(ws.as_str())
                    .bind(conversation.id.as_str())
                    .bind(conversation.head.as_ref().map(EntryId::as_str))
                    .bind(conversation.updated_at.micros())
                    .bind(turn.expected_head.as_ref().map(EntryId::as_str))
            };
            let row = bind_entries(query, &entries).fetch_one(&mut *conn).await?;
            let (moved, inserted): (i64, i64) = (row.try_get("moved")?, row.try_get("inserted")?);
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
            let row = sqlx::query(sql::SELECT_CONVERSATION.as_str())
                .bind(ws.as_str())
                .bind(id.as_str())
                .fetch_one(&mut *conn)
                .await?;
            Ok(rows::conversation_record(&row)?)
        })
        .not_found_as("Conversation", id.as_str())
    }

    async fn conversation_for_turn(
        &self,
        ws: &WorkspaceId,
        id: &ConversationId,
    ) -> StoreResult<(ConversationRecord, Option<AgentRecord>)> {
        on_connection!(self, |conn| {
            let row = sqlx::query(SELECT_CONVERSATION_WITH_AGENT.as_str())
                .bind(ws.as_str())
                .bind(id.as_str())
                .fetch_one(&mut *conn)
                .await?;
            Ok(rows::conversation_with_agent(&row)?)
        })
        .not_found_as("Conversation", id.as_str())
    }

    async fn list_conversations(
        &self,
        ws: &WorkspaceId,
        metadata: Option<&Map<String, Value>>,
        page: Page,
    ) -> StoreResult<Vec<ConversationRecord>> {
        on_connection!(self, |conn| {
            let rows = sqlx::query(LIST_CONVERSATIONS.as_str())
                .bind(ws.as_str())
                .bind(metadata.map(Json))
                .bind(page.limit)
                .bind(page.offset)
                .fetch_all(&mut *conn)
                .await?;
            Ok(rows.iter().map(rows::conversation_record).collect::<sqlx::Result<_>>()?)
        })
    }

    async fn delete_conversation(&self, ws: &WorkspaceId, id: &ConversationId) -> StoreResult<()> {
        on_connection!(self, |conn| {
            let done =
                sqlx::query(sql::DELETE_CONVERSATION).bind(ws.as_str()).bind(id.as_str()).execute(&mut *conn).await?;
            super::found(done.rows_affected())
        })
        .not_found_as("Conversation", id.as_str())
    }

    async fn history(&self, ws: &WorkspaceId, head: &EntryId) -> StoreResult<Vec<Entry>> {
        on_connection!(self, |conn| {
            let rows = sqlx::query(sql::HISTORY).bind(ws.as_str()).bind(head.as_str()).fetch_all(&mut *conn).await?;
            let body = sql::Entry::Body.name();
            Ok(rows.iter().map(|row| row.try_get::<Json<Entry>, _>(body).map(|j| j.0)).collect::<sqlx::Result<_>>()?)
        })
        .not_found_as("Entry", head.as_str())
    }
}

/// Binds a file's row after the workspace.
fn bind_file<'q>(mut query: PgQuery<'q>, file: &'q FileRecord) -> PgQuery<'q> {
    use sql::File as F;
    for &column in F::ALL {
        query = match column {
            F::Id => query.bind(file.id.as_str()),
            F::Filename => query.bind(&file.filename),
            F::Bytes => query.bind(file.bytes),
            F::Purpose => query.bind(&file.purpose),
            F::SampleType => query.bind(&file.sample_type),
            F::Source => query.bind(&file.source),
            F::Mimetype => query.bind(file.mimetype.as_deref()),
            F::NumLines => query.bind(file.num_lines),
            F::Visibility => query.bind(file.visibility.as_deref()),
            F::ExpiresAt => query.bind(file.expires_at),
            F::CreatedAt => query.bind(file.created_at.micros()),
        };
    }
    query
}

#[async_trait]
impl FileStore for PgStore {
    async fn insert_file(&self, ws: &WorkspaceId, file: &FileRecord) -> StoreResult<()> {
        on_connection!(self, |conn| {
            let query = sqlx::query(sql::INSERT_FILE.as_str()).bind(ws.as_str());
            bind_file(query, file).execute(&mut *conn).await?;
            Ok(())
        })
    }

    async fn file(&self, ws: &WorkspaceId, id: &FileId, now: Timestamp) -> StoreResult<FileRecord> {
        on_connection!(self, |conn| {
            let row = sqlx::query(sql::SELECT_FILE.as_str())
                .bind(ws.as_str())
                .bind(id.as_str())
                .bind(now.unix_seconds())
                .fetch_one(&mut *conn)
                .await?;
            Ok(rows::file_record(&row)?)
        })
        .not_found_as("File", id.as_str())
    }

    async fn list_files(
        &self,
        ws: &WorkspaceId,
        filter: &FileFilter,
        page: Page,
        now: Timestamp,
    ) -> StoreResult<(Vec<FileRecord>, i64)> {
        let search = filter.search.as_deref().map(super::contains_pattern);
        let any_of = |values: &[String]| (!values.is_empty()).then(|| values.to_vec());
        let (sources, sample_types) = (any_of(&filter.sources), any_of(&filter.sample_types));
        let mimetypes = any_of(&filter.mimetypes);
        let filtered = |statement| {
            sqlx::query(statement)
                .bind(ws.as_str())
                .bind(filter.purpose.as_deref())
                .bind(search.clone())
                .bind(sources.clone())
                .bind(sample_types.clone())
                .bind(mimetypes.clone())
                .bind(now.unix_seconds())
        };
        on_connection!(self, |conn| {
            let found = filtered(LIST_FILES.as_str()).bind(page.limit).bind(page.offset).fetch_all(&mut *conn).await?;
            let files = found.iter().map(rows::file_record).collect::<sqlx::Result<Vec<_>>>()?;
            let total: i64 = filtered(COUNT_FILES.as_str()).fetch_one(&mut *conn).await?.try_get("total")?;
            Ok((files, total))
        })
    }

    async fn delete_file(&self, ws: &WorkspaceId, id: &FileId, now: Timestamp) -> StoreResult<()> {
        on_connection!(self, |conn| {
            let query = sqlx::query(sql::DELETE_FILE.as_str()).bind(ws.as_str()).bind(id.as_str());
            let done = query.bind(now.unix_seconds()).execute(&mut *conn).await?;
            super::found(done.rows_affected())
        })
        .not_found_as("File", id.as_str())
    }

    async fn purge_expired_files(&self, now: Timestamp, limit: i64) -> StoreResult<Vec<(WorkspaceId, FileId)>> {
        on_connection!(self, |conn| {
            let rows = sqlx::query(sql::PURGE_EXPIRED_FILES)
                .bind(now.unix_seconds())
                .bind(limit)
                .fetch_all(&mut *conn)
                .await?;
            let key = |row: &PgRow| Ok((WorkspaceId(row.try_get("workspace")?), FileId(row.try_get("id")?)));
            Ok(rows.iter().map(key).collect::<sqlx::Result<Vec<_>>>()?)
        })
    }
}

/// The database as blob store (the `auto` choice for Postgres, so replicas share files with
/// nothing but the database).
#[async_trait]
impl ChunkTable for PgStore {
    async fn insert_chunk(&self, key: &BlobKey, seq: i64, chunk: bytes::Bytes) -> StoreResult<()> {
        on_connection!(self, |conn| {
            let query = sqlx::query(sql::INSERT_CHUNK).bind(key.workspace.as_str()).bind(key.file.as_str());
            let query = query.bind(seq).bind(chunk.as_ref()).bind(Timestamp::now().unix_seconds());
            query.execute(&mut *conn).await?;
            Ok(())
        })
    }

    async fn chunk(&self, key: &BlobKey, seq: i64) -> StoreResult<Option<bytes::Bytes>> {
        on_connection!(self, |conn| {
            let query = sqlx::query(sql::SELECT_CHUNK).bind(key.workspace.as_str()).bind(key.file.as_str());
            let row = query.bind(seq).fetch_optional(&mut *conn).await?;
            Ok(match row {
                Some(row) => Some(bytes::Bytes::from(row.try_get::<Vec<u8>, _>("data")?)),
                None => None,
            })
        })
    }

    async fn delete_chunks(&self, key: &BlobKey) -> StoreResult<()> {
        on_connection!(self, |conn| {
            let query = sqlx::query(sql::DELETE_CHUNKS).bind(key.workspace.as_str()).bind(key.file.as_str());
            query.execute(&mut *conn).await?;
            Ok(())
        })
    }

    async fn unnamed_chunks(&self, before: Timestamp, limit: i64) -> StoreResult<Vec<BlobKey>> {
        on_connection!(self, |conn| {
            let query = sqlx::query(sql::UNNAMED_CHUNKS).bind(before.unix_seconds()).bind(limit);
            let rows = query.fetch_all(&mut *conn).await?;
            let key = |row: &PgRow| {
                Ok(BlobKey { workspace: WorkspaceId(row.try_get("workspace")?), file: FileId(row.try_get("file_id")?) })
            };
            Ok(rows.iter().map(key).collect::<sqlx::Result<Vec<_>>>()?)
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
    fn every_migration_file_is_embedded() {
        let embedded: Vec<String> = super::MIGRATIONS.iter().map(|(v, d, _)| format!("{v:04}_{d}.sql")).collect();

        assert_eq!(files("migrations/postgres"), embedded);
    }
}
