//! Postgres store: for production and for several palaver processes sharing one database.
//! Row locks serialize the compare-and-set updates; JSON columns are `jsonb`.

use super::{
    sql, AgentFilter, AgentRecord, AliasRecord, ConversationRecord, EntryColumns, Page, Store, StoreError, StoreResult,
    TurnWrite,
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
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::types::Json;
use sqlx::{PgPool, Postgres, Transaction};
use std::str::FromStr;
use std::time::Duration;

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
#[derive(sqlx::FromRow)]
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

#[derive(sqlx::FromRow)]
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

#[derive(sqlx::FromRow)]
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
    pool: PgPool,
}

impl PgStore {
    pub async fn connect(url: &str, max_connections: u32, migrate: bool) -> anyhow::Result<Self> {
        let options = PgConnectOptions::from_str(url).context("DATABASE_URL is not a valid Postgres URL")?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            // A broken connection fails its query and is replaced; pinging before every
            // acquire would add a network round trip to each query.
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .context("connecting to Postgres")?;
        let store = PgStore { pool };
        if migrate {
            sqlx::migrate!("./migrations/postgres").run(&store.pool).await.context("applying Postgres migrations")?;
        }
        Ok(store)
    }
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
impl Store for PgStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn create_agent(
        &self,
        ws: &WorkspaceId,
        id: &AgentId,
        config: &AgentConfig,
        now: Timestamp,
    ) -> StoreResult<AgentRecord> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(sql::INSERT_AGENT).bind(ws.as_str()).bind(id.as_str()).bind(now.micros()).execute(&mut *tx).await?;
        insert_version(&mut tx, ws, id, 0, config, now).await?;
        tx.commit().await?;
        Ok(AgentRecord::first(id.clone(), config.clone(), now))
    }

    async fn agent(&self, ws: &WorkspaceId, id: &AgentId, version: &VersionSelector) -> StoreResult<AgentRecord> {
        let row: AgentRow = match version {
            VersionSelector::Active => {
                sqlx::query_as(sql::SELECT_ACTIVE_AGENT.as_str())
                    .bind(ws.as_str())
                    .bind(id.as_str())
                    .fetch_one(&self.pool)
                    .await?
            }
            VersionSelector::Number(n) => {
                sqlx::query_as(sql::SELECT_AGENT_VERSION.as_str())
                    .bind(ws.as_str())
                    .bind(id.as_str())
                    .bind(n)
                    .fetch_one(&self.pool)
                    .await?
            }
            VersionSelector::Alias(alias) => {
                sqlx::query_as(sql::SELECT_AGENT_BY_ALIAS.as_str())
                    .bind(ws.as_str())
                    .bind(id.as_str())
                    .bind(alias)
                    .fetch_one(&self.pool)
                    .await?
            }
        };
        Ok(row.into())
    }

    async fn agents_exist(&self, ws: &WorkspaceId, ids: &[String]) -> StoreResult<Vec<bool>> {
        let mut found = Vec::with_capacity(ids.len());
        for id in ids {
            let row: Option<(String,)> =
                sqlx::query_as(sql::AGENT_EXISTS).bind(ws.as_str()).bind(id).fetch_optional(&self.pool).await?;
            found.push(row.is_some());
        }
        Ok(found)
    }

    async fn list_agents(&self, ws: &WorkspaceId, filter: &AgentFilter, page: Page) -> StoreResult<Vec<AgentRecord>> {
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
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(AgentRecord::from).collect())
    }

    async fn append_agent_version(
        &self,
        ws: &WorkspaceId,
        id: &AgentId,
        expected_revision: i64,
        config: &AgentConfig,
        now: Timestamp,
    ) -> StoreResult<AgentRecord> {
        let mut tx = self.pool.begin().await?;
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
    }

    async fn activate_agent_version(
        &self,
        ws: &WorkspaceId,
        id: &AgentId,
        version: i64,
        now: Timestamp,
    ) -> StoreResult<AgentRecord> {
        let mut tx = self.pool.begin().await?;
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
    }

    async fn delete_agent(&self, ws: &WorkspaceId, id: &AgentId) -> StoreResult<()> {
        let done = sqlx::query(sql::DELETE_AGENT).bind(ws.as_str()).bind(id.as_str()).execute(&self.pool).await?;
        super::found(done.rows_affected())
    }

    async fn list_agent_versions(&self, ws: &WorkspaceId, id: &AgentId, page: Page) -> StoreResult<Vec<AgentRecord>> {
        let rows: Vec<AgentRow> = sqlx::query_as(sql::LIST_AGENT_VERSIONS.as_str())
            .bind(ws.as_str())
            .bind(id.as_str())
            .bind(page.limit)
            .bind(page.offset)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(AgentRecord::from).collect())
    }

    async fn put_alias(
        &self,
        ws: &WorkspaceId,
        id: &AgentId,
        alias: &str,
        version: i64,
        now: Timestamp,
    ) -> StoreResult<AliasRecord> {
        let row: AliasRow = sqlx::query_as(sql::UPSERT_ALIAS)
            .bind(ws.as_str())
            .bind(id.as_str())
            .bind(alias)
            .bind(version)
            .bind(now.micros())
            .fetch_one(&self.pool)
            .await?;
        Ok(row.into())
    }

    async fn list_aliases(&self, ws: &WorkspaceId, id: &AgentId) -> StoreResult<Vec<AliasRecord>> {
        let rows: Vec<AliasRow> =
            sqlx::query_as(sql::LIST_ALIASES).bind(ws.as_str()).bind(id.as_str()).fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(AliasRecord::from).collect())
    }

    async fn delete_alias(&self, ws: &WorkspaceId, id: &AgentId, alias: &str) -> StoreResult<()> {
        let done =
            sqlx::query(sql::DELETE_ALIAS).bind(ws.as_str()).bind(id.as_str()).bind(alias).execute(&self.pool).await?;
        super::found(done.rows_affected())
    }

    async fn commit_turn(&self, ws: &WorkspaceId, turn: &TurnWrite) -> StoreResult<()> {
        // One statement, so one round trip and atomic by itself: the head moves (or the
        // conversation is created) and the entries are inserted only if it did. Unlike
        // SQLite, Postgres runs data-modifying CTEs, which saves BEGIN, COMMIT and a
        // statement per turn.
        let conversation = &turn.conversation;
        let columns = EntryColumns::of(turn);
        let (moved, inserted): (i64, i64) = if turn.create {
            let query = sqlx::query_as(COMMIT_NEW_CONVERSATION.as_str());
            let query = bind_conversation!(query, ws, conversation);
            columns.bind(query).fetch_one(&self.pool).await?
        } else {
            let query = sqlx::query_as(COMMIT_APPEND.as_str())
                .bind(ws.as_str())
                .bind(conversation.id.as_str())
                .bind(conversation.head.as_ref().map(EntryId::as_str))
                .bind(conversation.updated_at.micros())
                .bind(turn.expected_head.as_ref().map(EntryId::as_str));
            columns.bind(query).fetch_one(&self.pool).await?
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
    }

    async fn conversation(&self, ws: &WorkspaceId, id: &ConversationId) -> StoreResult<ConversationRecord> {
        let row: ConversationRow = sqlx::query_as(sql::SELECT_CONVERSATION.as_str())
            .bind(ws.as_str())
            .bind(id.as_str())
            .fetch_one(&self.pool)
            .await?;
        Ok(row.into())
    }

    async fn list_conversations(
        &self,
        ws: &WorkspaceId,
        metadata: Option<&Map<String, Value>>,
        page: Page,
    ) -> StoreResult<Vec<ConversationRecord>> {
        let rows: Vec<ConversationRow> = sqlx::query_as(LIST_CONVERSATIONS.as_str())
            .bind(ws.as_str())
            .bind(metadata.map(Json))
            .bind(page.limit)
            .bind(page.offset)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(ConversationRecord::from).collect())
    }

    async fn delete_conversation(&self, ws: &WorkspaceId, id: &ConversationId) -> StoreResult<()> {
        let done =
            sqlx::query(sql::DELETE_CONVERSATION).bind(ws.as_str()).bind(id.as_str()).execute(&self.pool).await?;
        super::found(done.rows_affected())
    }

    async fn history(&self, ws: &WorkspaceId, head: &EntryId) -> StoreResult<Vec<Entry>> {
        let rows: Vec<(Json<Entry>,)> =
            sqlx::query_as(sql::HISTORY).bind(ws.as_str()).bind(head.as_str()).fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(|(entry,)| entry.0).collect())
    }
}
