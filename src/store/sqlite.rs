//! SQLite store: the zero set-up default. One file in WAL mode; writers queue on SQLite's
//! lock (busy timeout), and every write transaction starts with a write so it never has to
//! upgrade a read snapshot (SQLite refuses that with `SQLITE_BUSY` instead of waiting).

use super::{
    bind_conversation, sql, AgentFilter, AgentRecord, AgentRow, AliasRecord, AliasRow, ConversationRecord,
    ConversationRow, Page, Store, StoreError, StoreResult, TurnWrite,
};
use crate::domain::agents::{AgentConfig, VersionSelector};
use crate::domain::entries::Entry;
use crate::domain::ids::{AgentId, WorkspaceId};
use crate::domain::ids::{ConversationId, EntryId};
use crate::domain::time::Timestamp;
use anyhow::Context;
use async_trait::async_trait;
use serde_json::{Map, Value};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::types::Json;
use sqlx::{QueryBuilder, Sqlite, SqlitePool, Transaction};
use std::str::FromStr;
use std::time::Duration;

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

static LIST_AGENTS: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| sql::list_agents(&metadata_matches("v.metadata", "$7")));

static LIST_CONVERSATIONS: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| sql::list_conversations(&metadata_matches("c.metadata", "$2")));

const SQLITE_MAX_CONNECTIONS: u32 = 4;

const INSERT_ENTRIES_PREFIX: &str =
    "INSERT INTO entries (workspace, id, parent_id, depth, conversation_id, kind, body, created_at) ";

pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    pub async fn connect(url: &str, max_connections: u32, migrate: bool) -> anyhow::Result<Self> {
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let options = SqliteConnectOptions::from_str(url)
            .context("DATABASE_URL is not a valid SQLite URL")?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL + NORMAL: commits survive a process crash; an OS crash may lose the last
            // ones but never corrupts the file. One fsync per checkpoint, not per turn.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            // Pages are read through a memory map instead of a read() per page.
            .pragma("mmap_size", "268435456");
        let pool = if in_memory {
            // Each connection to `:memory:` is its own empty database: keep exactly one.
            SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .connect_with(options)
                .await?
        } else {
            // SQLite runs one writer at a time and each connection keeps its own page cache
            // (emptied whenever another connection writes), so a few connections serve
            // best; each also costs a thread in sqlx.
            let connections = max_connections.clamp(1, SQLITE_MAX_CONNECTIONS);
            SqlitePoolOptions::new()
                .max_connections(connections)
                // A broken connection fails its query and is replaced; pinging before every
                // acquire would cost each query an extra round trip to the worker thread.
                .test_before_acquire(false)
                .connect_with(options)
                .await?
        };
        let store = SqliteStore { pool };
        if migrate {
            sqlx::migrate!("./migrations/sqlite").run(&store.pool).await.context("applying SQLite migrations")?;
        }
        Ok(store)
    }
}

async fn insert_version(
    tx: &mut Transaction<'_, Sqlite>,
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
    tx: &mut Transaction<'_, Sqlite>,
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
impl Store for SqliteStore {
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
        let conversation = &turn.conversation;
        let mut tx = self.pool.begin().await?;
        // The conversation row is written first, so the transaction takes SQLite's write
        // lock at once and never has to upgrade a read snapshot.
        if turn.create {
            bind_conversation!(sqlx::query(sql::INSERT_CONVERSATION.as_str()), ws, conversation)
                .execute(&mut *tx)
                .await?;
        } else {
            let moved = sqlx::query(sql::ADVANCE_HEAD)
                .bind(ws.as_str())
                .bind(conversation.id.as_str())
                .bind(conversation.head.as_ref().map(EntryId::as_str))
                .bind(conversation.updated_at.micros())
                .bind(turn.expected_head.as_ref().map(EntryId::as_str))
                .execute(&mut *tx)
                .await?;
            if moved.rows_affected() == 0 {
                return Err(StoreError::Conflict);
            }
        }
        if !turn.entries.is_empty() {
            let mut insert = QueryBuilder::<Sqlite>::new(INSERT_ENTRIES_PREFIX);
            insert.push_values(super::chained(turn), |mut row, (entry, parent, depth)| {
                row.push_bind(ws.as_str())
                    .push_bind(entry.id().as_str())
                    .push_bind(parent)
                    .push_bind(depth)
                    .push_bind(conversation.id.as_str())
                    .push_bind(entry.kind())
                    .push_bind(Json(entry))
                    .push_bind(entry.created_at().micros());
            });
            insert.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
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
