//! Agent versions and aliases (DESIGN decision 4): create writes version 0, update writes
//! the active version patched as a new version and activates it, nothing is overwritten.

use super::Engine;
use crate::domain::agents::{
    is_valid_alias, Agent, AgentAlias, AgentConfig, AgentListPage, CreateAgentRequest, UpdateAgentRequest,
    VersionSelector,
};
use crate::domain::completion::CompletionArgsView;
use crate::domain::ids::{AgentId, WorkspaceId};
use crate::domain::time::Timestamp;
use crate::error::{Error, FieldError, Loc, Result};
use crate::store::{AgentFilter, AgentRecord, AgentWrite, AliasRecord, NewVersion, Page, StoreError};
use serde_json::{Map, Value};

/// How often an update retries when a writer in another process won the race (writers in
/// this process queue on `UpdateLocks` instead).
const UPDATE_ATTEMPTS: usize = 16;

/// Serializes updates of one agent within this process, so concurrent PATCHes queue
/// instead of failing each other's compare-and-set. Striped: agents share a lock by hash.
pub struct UpdateLocks {
    stripes: Vec<tokio::sync::Mutex<()>>,
}

impl Default for UpdateLocks {
    fn default() -> Self {
        UpdateLocks { stripes: (0..64).map(|_| tokio::sync::Mutex::new(())).collect() }
    }
}

impl UpdateLocks {
    fn stripe(&self, id: &AgentId) -> &tokio::sync::Mutex<()> {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        id.hash(&mut hasher);
        &self.stripes[(hasher.finish() % self.stripes.len() as u64) as usize]
    }
}

/// The documented `sources` values; palaver's own agents all come from `api`.
const SOURCES: [&str; 3] = ["api", "playground", "agent_builder_v1"];
const SOURCE: &str = "api";

/// A validated `GET /v1/agents` or `/v1/agents/pages` query.
#[derive(Debug, Clone, Default)]
pub struct ListAgents {
    pub page: i64,
    pub page_size: i64,
    pub page_token: Option<String>,
    pub deployment_chat: Option<bool>,
    pub sources: Vec<String>,
    pub name: Option<String>,
    pub search: Option<String>,
    pub id: Option<String>,
    pub metadata: Option<Map<String, Value>>,
}

impl ListAgents {
    fn filter(&self) -> AgentFilter {
        AgentFilter {
            name: self.name.clone(),
            id: self.id.clone(),
            search: self.search.clone(),
            deployment_chat: self.deployment_chat,
            metadata: self.metadata.clone(),
            before_id: self.page_token.clone(),
        }
    }

    /// Filtering on sources that palaver never records matches nothing.
    fn excludes_own_source(&self) -> Result<bool> {
        for (index, source) in self.sources.iter().enumerate() {
            if !SOURCES.contains(&source.as_str()) {
                let loc = vec![Loc::from("query"), "sources".into(), index.into()];
                let msg = format!("Input should be one of `api`, `playground`, `agent_builder_v1`, got `{source}`");
                return Err(Error::invalid(FieldError::new(loc, "enum", msg)));
            }
        }
        Ok(!self.sources.is_empty() && !self.sources.iter().any(|s| s == SOURCE))
    }
}

pub fn to_wire(record: AgentRecord) -> Agent {
    let config = record.config;
    Agent {
        object: "agent",
        id: record.id,
        name: config.name,
        model: config.model,
        version: record.version,
        versions: (0..=record.latest_version).collect(),
        created_at: record.created_at,
        updated_at: record.updated_at,
        deployment_chat: config.deployment_chat,
        source: SOURCE,
        instructions: config.instructions,
        description: config.description,
        tools: config.tools,
        completion_args: CompletionArgsView(config.completion_args),
        handoffs: config.handoffs,
        guardrails: config.guardrails,
        metadata: config.metadata,
        owner_id: None,
        version_message: config.version_message,
    }
}

fn alias_to_wire(record: AliasRecord) -> AgentAlias {
    AgentAlias {
        alias: record.alias,
        version: record.version,
        created_at: record.created_at,
        updated_at: record.updated_at,
    }
}

/// Handoff targets must be agents of the same workspace.
async fn check_handoffs(engine: &Engine, ws: &WorkspaceId, config: &AgentConfig) -> Result<()> {
    let Some(handoffs) = &config.handoffs else {
        return Ok(());
    };
    let exists = engine.store.agents_exist(ws, handoffs).await?;
    let errors: Vec<FieldError> = handoffs
        .iter()
        .zip(exists)
        .enumerate()
        .filter(|(_, (_, found))| !found)
        .map(|(index, (id, _))| {
            FieldError::body(&["handoffs".into(), index.into()], "value_error", format!("Agent `{id}` not found"))
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::Invalid(errors))
    }
}

/// Explains a `NotFound` for `selector` of agent `id`: the agent itself, or only the
/// requested version or alias, is missing.
async fn not_found(engine: &Engine, ws: &WorkspaceId, id: &AgentId, selector: &VersionSelector) -> Error {
    let agent_exists = match selector {
        VersionSelector::Active => false,
        _ => engine.store.agent(ws, id, &VersionSelector::Active).await.is_ok(),
    };
    match selector {
        _ if !agent_exists => Error::not_found("Agent", id.as_str()),
        VersionSelector::Alias(alias) => Error::AliasNotFound { agent_id: id.to_string(), alias: alias.clone() },
        other => Error::AgentVersionNotFound { agent_id: id.to_string(), version: other.describe() },
    }
}

/// Loads one version of an agent, with a 404 that says what is missing.
pub async fn load(engine: &Engine, ws: &WorkspaceId, id: &AgentId, selector: &VersionSelector) -> Result<AgentRecord> {
    match engine.store.agent(ws, id, selector).await {
        Ok(record) => Ok(record),
        Err(StoreError::NotFound { .. }) => Err(not_found(engine, ws, id, selector).await),
        Err(other) => Err(other.into()),
    }
}

pub async fn create_agent(engine: &Engine, ws: &WorkspaceId, request: CreateAgentRequest) -> Result<Agent> {
    let config = request.into_config().map_err(Error::Invalid)?;
    check_handoffs(engine, ws, &config).await?;
    let id = AgentId::generate();
    let record = engine.store.create_agent(AgentWrite { ws, id: &id, now: Timestamp::now() }, &config).await?;
    tracing::info!(agent_id = %id, "agent created");
    Ok(to_wire(record))
}

pub async fn get_agent(engine: &Engine, ws: &WorkspaceId, id: &AgentId, selector: &VersionSelector) -> Result<Agent> {
    Ok(to_wire(load(engine, ws, id, selector).await?))
}

pub async fn list_agents(engine: &Engine, ws: &WorkspaceId, query: &ListAgents) -> Result<Vec<Agent>> {
    if query.excludes_own_source()? {
        return Ok(Vec::new());
    }
    let page = Page { offset: query.page * query.page_size, limit: query.page_size };
    let records = engine.store.list_agents(ws, &query.filter(), page).await?;
    Ok(records.into_iter().map(to_wire).collect())
}

/// Keyset pages: the token is the id of the last agent of the previous page.
pub async fn list_agent_pages(engine: &Engine, ws: &WorkspaceId, query: &ListAgents) -> Result<AgentListPage> {
    if query.excludes_own_source()? {
        return Ok(AgentListPage { object: "list", data: Vec::new(), next_page_token: None });
    }
    // One extra row tells whether another page follows.
    let page = Page { offset: 0, limit: query.page_size + 1 };
    let mut records = engine.store.list_agents(ws, &query.filter(), page).await?;
    let more = records.len() as i64 > query.page_size;
    records.truncate(query.page_size as usize);
    let next_page_token = if more { records.last().map(|r| r.id.to_string()) } else { None };
    Ok(AgentListPage { object: "list", data: records.into_iter().map(to_wire).collect(), next_page_token })
}

pub async fn update_agent(
    engine: &Engine,
    ws: &WorkspaceId,
    id: &AgentId,
    request: UpdateAgentRequest,
) -> Result<Agent> {
    let handoffs_changed = !request.handoffs.is_absent();
    let _queued = engine.agent_locks.stripe(id).lock().await;
    for attempt in 0..UPDATE_ATTEMPTS {
        if attempt > 0 {
            // Another process moved the agent on: back off a little, with jitter, and rebuild.
            let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0]) % 10;
            tokio::time::sleep(std::time::Duration::from_millis(attempt as u64 * 2 + jitter)).await;
        }
        let base = load(engine, ws, id, &VersionSelector::Active).await?;
        let config = request.clone().apply_to(&base.config).map_err(Error::Invalid)?;
        if handoffs_changed {
            check_handoffs(engine, ws, &config).await?;
        }
        match engine
            .store
            .append_agent_version(
                AgentWrite { ws, id, now: Timestamp::now() },
                NewVersion { expected_revision: base.revision, config: &config },
            )
            .await
        {
            Ok(record) => {
                tracing::info!(agent_id = %id, version = record.version, "agent version created");
                return Ok(to_wire(record));
            }
            // Another change landed between our read and our write: rebuild on the new base.
            Err(StoreError::Conflict) => continue,
            Err(other) => return Err(other.into()),
        }
    }
    Err(Error::Conflict(format!("Agent `{id}` is being changed by other requests; retry.")))
}

pub async fn update_agent_version(engine: &Engine, ws: &WorkspaceId, id: &AgentId, version: i64) -> Result<Agent> {
    match engine.store.activate_agent_version(AgentWrite { ws, id, now: Timestamp::now() }, version).await {
        Ok(record) => Ok(to_wire(record)),
        Err(StoreError::NotFound { .. }) => Err(not_found(engine, ws, id, &VersionSelector::Number(version)).await),
        Err(other) => Err(other.into()),
    }
}

pub async fn delete_agent(engine: &Engine, ws: &WorkspaceId, id: &AgentId) -> Result<()> {
    match engine.store.delete_agent(ws, id).await {
        Ok(()) => {
            tracing::info!(agent_id = %id, "agent deleted");
            Ok(())
        }
        Err(other) => Err(other.into()),
    }
}

pub async fn list_agent_versions(
    engine: &Engine,
    ws: &WorkspaceId,
    id: &AgentId,
    page: i64,
    page_size: i64,
) -> Result<Vec<Agent>> {
    load(engine, ws, id, &VersionSelector::Active).await?;
    let records = engine.store.list_agent_versions(ws, id, Page { offset: page * page_size, limit: page_size }).await?;
    Ok(records.into_iter().map(to_wire).collect())
}

pub async fn put_alias(
    engine: &Engine,
    ws: &WorkspaceId,
    id: &AgentId,
    alias: &str,
    version: i64,
) -> Result<AgentAlias> {
    if !is_valid_alias(alias) {
        let loc = vec![Loc::from("query"), "alias".into()];
        let msg = "Alias names are 1 to 64 characters matching `^[a-z]([a-z0-9_-]*[a-z0-9])?$`";
        return Err(Error::invalid(FieldError::new(loc, "string_pattern_mismatch", msg)));
    }
    load(engine, ws, id, &VersionSelector::Number(version)).await?;
    match engine.store.put_alias(AgentWrite { ws, id, now: Timestamp::now() }, alias, version).await {
        Ok(record) => Ok(alias_to_wire(record)),
        Err(error) => {
            // A concurrent delete of the agent makes the write fail on its foreign key:
            // that is a 404, not a server error.
            load(engine, ws, id, &VersionSelector::Number(version)).await?;
            Err(error.into())
        }
    }
}

pub async fn list_aliases(engine: &Engine, ws: &WorkspaceId, id: &AgentId) -> Result<Vec<AgentAlias>> {
    load(engine, ws, id, &VersionSelector::Active).await?;
    Ok(engine.store.list_aliases(ws, id).await?.into_iter().map(alias_to_wire).collect())
}

pub async fn delete_alias(engine: &Engine, ws: &WorkspaceId, id: &AgentId, alias: &str) -> Result<()> {
    match engine.store.delete_alias(ws, id, alias).await {
        Ok(()) => Ok(()),
        Err(StoreError::NotFound { .. }) => {
            Err(not_found(engine, ws, id, &VersionSelector::Alias(alias.to_owned())).await)
        }
        Err(other) => Err(other.into()),
    }
}
