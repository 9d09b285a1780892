//! `/v1/agents*`: the twelve agent routes of the official SDKs' agents contract.

use super::auth::Workspace;
use super::extract::{ApiJson, PathParam, QueryParams, RawBody};
use super::openapi::Errors;
use crate::domain::agents::{
    Agent, AgentAlias, AgentListPage, CreateAgentRequest, UpdateAgentRequest, VersionSelector,
};
use crate::domain::ids::AgentId;
use crate::domain::tools::ToolType;
use crate::engine::agents::{self as engine, ListAgents};
use crate::error::{Error, FieldError, Loc, Result};
use crate::AppState;
use axum::extract::{FromRequestParts, State};
use axum::http::header::USER_AGENT;
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_agent, list_agents))
        .routes(routes!(list_agent_pages))
        .routes(routes!(get_agent, update_agent, delete_agent))
        // POST on these two paths is what the public page's curl examples send (`--data`
        // without `-X PATCH`); the SDKs use PATCH. Operations of their own, as one
        // operation id cannot name two methods.
        .routes(routes!(update_agent_by_post))
        .routes(routes!(update_agent_version, update_agent_version_by_post))
        .routes(routes!(list_agent_versions))
        .routes(routes!(get_agent_version))
        .routes(routes!(put_alias, list_aliases, delete_alias))
}

/// Python SDK 1.x fails a whole agent that holds a tool type it does not know
/// (`connector`), so such tools are left out of what those clients receive
/// (the SDK accepts only the tool types it knew). Everyone else gets every tool.
pub struct ClientKind {
    legacy_python: bool,
}

impl<S: Send + Sync> FromRequestParts<S> for ClientKind {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self> {
        let agent = parts.headers.get(USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("");
        Ok(ClientKind { legacy_python: agent.starts_with("mistral-client-python/1.") })
    }
}

impl ClientKind {
    fn shape(&self, mut agent: Agent) -> Agent {
        if self.legacy_python {
            agent.tools.retain(|tool| tool.kind != ToolType::Connector);
        }
        agent
    }

    fn shape_all(&self, agents: Vec<Agent>) -> Vec<Agent> {
        agents.into_iter().map(|a| self.shape(a)).collect()
    }
}

fn list_query(query: &QueryParams, max_page_size: i64) -> Result<ListAgents> {
    Ok(ListAgents {
        page: query.int("page", Some(0), 0, i64::from(i32::MAX))?.unwrap_or(0),
        page_size: query.int("page_size", Some(20), 1, max_page_size)?.unwrap_or(20),
        page_token: query.string("page_token").filter(|t| !t.is_empty()).map(str::to_owned),
        deployment_chat: query.bool("deployment_chat")?,
        sources: query.strings("sources"),
        name: query.string("name").map(str::to_owned),
        search: query.string("search").filter(|s| !s.is_empty()).map(str::to_owned),
        id: query.string("id").map(str::to_owned),
        metadata: query.json_object("metadata")?,
    })
}

/// Reads `agent_version` (query) or `version` (path) as a number or an alias name.
fn version_selector(raw: &str, loc: Vec<Loc>) -> Result<VersionSelector> {
    VersionSelector::parse(raw).ok_or_else(|| {
        let msg = format!("Input should be a version number or an alias name, got `{raw}`");
        Error::invalid(FieldError::new(loc, "value_error", msg))
    })
}

/// `POST /v1/agents`: creates an agent and its version 0. Answers 200, as the SDKs require.
#[utoipa::path(post, path = "/v1/agents", operation_id = "agents_api_v1_agents_create", tag = "agents",
    request_body = CreateAgentRequest, responses((status = 200, body = Agent), Errors))]
#[tracing::instrument(skip_all)]
async fn create_agent(
    State(state): State<AppState>,
    Workspace(ws): Workspace,
    client: ClientKind,
    ApiJson(request): ApiJson<CreateAgentRequest>,
) -> Result<Json<Agent>> {
    Ok(Json(client.shape(engine::create_agent(&state.engine, &ws, request).await?)))
}

/// The query of both agent lists, as documented (`list_query` reads it).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Documentation only: the handlers read the query through `QueryParams`.
struct AgentListParams {
    #[param(minimum = 0)]
    page: Option<i32>,
    #[param(minimum = 1, maximum = 1000)]
    page_size: Option<i64>,
    /// The `next_page_token` of the previous page.
    page_token: Option<String>,
    deployment_chat: Option<bool>,
    sources: Option<Vec<String>>,
    name: Option<String>,
    search: Option<String>,
    id: Option<String>,
    /// A JSON object the agents' metadata must contain.
    metadata: Option<String>,
}

/// `GET /v1/agents`: active versions, newest agent first, `page`/`page_size` paged.
#[utoipa::path(get, path = "/v1/agents", operation_id = "agents_api_v1_agents_list", tag = "agents",
    params(AgentListParams), responses((status = 200, body = Vec<Agent>), Errors))]
#[tracing::instrument(skip_all)]
async fn list_agents(
    State(state): State<AppState>,
    Workspace(ws): Workspace,
    client: ClientKind,
    query: QueryParams,
) -> Result<Json<Vec<Agent>>> {
    let query = list_query(&query, 1000)?;
    Ok(Json(client.shape_all(engine::list_agents(&state.engine, &ws, &query).await?)))
}

/// `GET /v1/agents/pages`: the same list with an opaque `next_page_token` cursor.
#[utoipa::path(get, path = "/v1/agents/pages", operation_id = "agents_api_v1_agents_list_pages", tag = "agents",
    params(AgentListParams), responses((status = 200, body = AgentListPage), Errors))]
#[tracing::instrument(skip_all)]
async fn list_agent_pages(
    State(state): State<AppState>,
    Workspace(ws): Workspace,
    client: ClientKind,
    query: QueryParams,
) -> Result<Json<AgentListPage>> {
    let query = list_query(&query, 1000)?;
    let mut page = engine::list_agent_pages(&state.engine, &ws, &query).await?;
    page.data = client.shape_all(page.data);
    Ok(Json(page))
}

/// `GET /v1/agents/{agent_id}`: the active version, or `agent_version` (number or alias).
#[utoipa::path(get, path = "/v1/agents/{agent_id}", operation_id = "agents_api_v1_agents_get", tag = "agents",
    params(("agent_id" = String, Path), ("agent_version" = Option<String>, Query, description = "A version number or an alias name.")),
    responses((status = 200, body = Agent), Errors))]
#[tracing::instrument(skip_all, fields(agent_id = %agent_id))]
async fn get_agent(
    State(state): State<AppState>,
    Workspace(ws): Workspace,
    client: ClientKind,
    PathParam(agent_id): PathParam<String>,
    query: QueryParams,
) -> Result<Json<Agent>> {
    let selector = match query.string("agent_version").filter(|v| !v.is_empty()) {
        Some(raw) => version_selector(raw, vec!["query".into(), "agent_version".into()])?,
        None => VersionSelector::Active,
    };
    Ok(Json(client.shape(engine::get_agent(&state.engine, &ws, &AgentId(agent_id), &selector).await?)))
}

/// `PATCH /v1/agents/{agent_id}`: writes a new version from the active one and activates it.
#[utoipa::path(patch, path = "/v1/agents/{agent_id}", operation_id = "agents_api_v1_agents_update", tag = "agents",
    params(("agent_id" = String, Path)), request_body = UpdateAgentRequest, responses((status = 200, body = Agent), Errors))]
#[tracing::instrument(skip_all, fields(agent_id = %agent_id))]
async fn update_agent(
    State(state): State<AppState>,
    Workspace(ws): Workspace,
    client: ClientKind,
    PathParam(agent_id): PathParam<String>,
    ApiJson(request): ApiJson<UpdateAgentRequest>,
) -> Result<Json<Agent>> {
    Ok(Json(client.shape(engine::update_agent(&state.engine, &ws, &AgentId(agent_id), request).await?)))
}

/// `DELETE /v1/agents/{agent_id}`: 204 with no body.
#[utoipa::path(delete, path = "/v1/agents/{agent_id}", operation_id = "agents_api_v1_agents_delete", tag = "agents",
    params(("agent_id" = String, Path)), responses((status = 204, description = "Deleted."), Errors))]
#[tracing::instrument(skip_all, fields(agent_id = %agent_id))]
async fn delete_agent(
    State(state): State<AppState>,
    Workspace(ws): Workspace,
    PathParam(agent_id): PathParam<String>,
) -> Result<StatusCode> {
    engine::delete_agent(&state.engine, &ws, &AgentId(agent_id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/agents/{agent_id}`: [`update_agent`] under the method of the public curl examples.
#[utoipa::path(post, path = "/v1/agents/{agent_id}", operation_id = "palaver_agents_update_by_post", tag = "agents",
    params(("agent_id" = String, Path)), request_body = UpdateAgentRequest, responses((status = 200, body = Agent), Errors))]
async fn update_agent_by_post(
    state: State<AppState>,
    ws: Workspace,
    client: ClientKind,
    agent_id: PathParam<String>,
    request: ApiJson<UpdateAgentRequest>,
) -> Result<Json<Agent>> {
    update_agent(state, ws, client, agent_id, request).await
}

/// The body an old public curl example sends instead of query parameters.
#[derive(Deserialize)]
struct LegacyVersionBody {
    #[serde(default)]
    version: Option<i64>,
    #[serde(default)]
    alias: Option<String>,
}

/// Query parameters win; a JSON body with the same names is accepted too.
fn legacy_body(body: &RawBody) -> Result<Option<LegacyVersionBody>> {
    if body.0.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    Ok(Some(crate::error::decode_json(&["body".into()], &body.0)?))
}

fn version_param(query: &QueryParams, body: &Option<LegacyVersionBody>) -> Result<i64> {
    match query.int("version", None, 0, i64::MAX)? {
        Some(v) => Ok(v),
        None => match body.as_ref().and_then(|b| b.version) {
            Some(v) if v >= 0 => Ok(v),
            Some(v) => Err(Error::invalid(FieldError::query(
                "version",
                "value_error",
                format!("Input should be at least 0, got {v}"),
            ))),
            None => Err(Error::invalid(FieldError::query("version", "missing", "Field required"))),
        },
    }
}

/// `PATCH /v1/agents/{agent_id}/version?version=N`: makes version N the active one.
#[utoipa::path(patch, path = "/v1/agents/{agent_id}/version", operation_id = "agents_api_v1_agents_update_version", tag = "agents",
    params(("agent_id" = String, Path), ("version" = i64, Query, minimum = 0)), responses((status = 200, body = Agent), Errors))]
#[tracing::instrument(skip_all, fields(agent_id = %agent_id))]
async fn update_agent_version(
    State(state): State<AppState>,
    Workspace(ws): Workspace,
    client: ClientKind,
    PathParam(agent_id): PathParam<String>,
    query: QueryParams,
    body: RawBody,
) -> Result<Json<Agent>> {
    let version = version_param(&query, &legacy_body(&body)?)?;
    Ok(Json(client.shape(engine::update_agent_version(&state.engine, &ws, &AgentId(agent_id), version).await?)))
}

/// `POST /v1/agents/{agent_id}/version`: [`update_agent_version`] under the method of the
/// public curl examples, which may send `version` in a JSON body.
#[utoipa::path(post, path = "/v1/agents/{agent_id}/version", operation_id = "palaver_agents_update_version_by_post", tag = "agents",
    params(("agent_id" = String, Path), ("version" = i64, Query, minimum = 0)), responses((status = 200, body = Agent), Errors))]
async fn update_agent_version_by_post(
    state: State<AppState>,
    ws: Workspace,
    client: ClientKind,
    agent_id: PathParam<String>,
    query: QueryParams,
    body: RawBody,
) -> Result<Json<Agent>> {
    update_agent_version(state, ws, client, agent_id, query, body).await
}

/// `GET /v1/agents/{agent_id}/versions`: one agent object per version, oldest first.
#[utoipa::path(get, path = "/v1/agents/{agent_id}/versions", operation_id = "agents_api_v1_agents_list_versions", tag = "agents",
    params(("agent_id" = String, Path), ("page" = Option<i32>, Query, minimum = 0), ("page_size" = Option<i64>, Query, minimum = 1, maximum = 100)),
    responses((status = 200, body = Vec<Agent>), Errors))]
#[tracing::instrument(skip_all, fields(agent_id = %agent_id))]
async fn list_agent_versions(
    State(state): State<AppState>,
    Workspace(ws): Workspace,
    client: ClientKind,
    PathParam(agent_id): PathParam<String>,
    query: QueryParams,
) -> Result<Json<Vec<Agent>>> {
    let page = query.int("page", Some(0), 0, i64::from(i32::MAX))?.unwrap_or(0);
    let page_size = query.int("page_size", Some(20), 1, 100)?.unwrap_or(20);
    let agents = engine::list_agent_versions(&state.engine, &ws, &AgentId(agent_id), page, page_size).await?;
    Ok(Json(client.shape_all(agents)))
}

/// `GET /v1/agents/{agent_id}/versions/{version}`: a version by number (or alias name).
#[utoipa::path(get, path = "/v1/agents/{agent_id}/versions/{version}", operation_id = "agents_api_v1_agents_get_version", tag = "agents",
    params(("agent_id" = String, Path), ("version" = String, Path, description = "A version number or an alias name.")),
    responses((status = 200, body = Agent), Errors))]
#[tracing::instrument(skip_all, fields(agent_id = %agent_id))]
async fn get_agent_version(
    State(state): State<AppState>,
    Workspace(ws): Workspace,
    client: ClientKind,
    PathParam((agent_id, version)): PathParam<(String, String)>,
) -> Result<Json<Agent>> {
    let selector = version_selector(&version, vec!["path".into(), "version".into()])?;
    Ok(Json(client.shape(engine::get_agent(&state.engine, &ws, &AgentId(agent_id), &selector).await?)))
}

fn alias_param(query: &QueryParams, body: &Option<LegacyVersionBody>) -> Result<String> {
    query
        .string("alias")
        .map(str::to_owned)
        .or_else(|| body.as_ref().and_then(|b| b.alias.clone()))
        .ok_or_else(|| Error::invalid(FieldError::query("alias", "missing", "Field required")))
}

/// `PUT /v1/agents/{agent_id}/aliases?alias=NAME&version=N`: creates or re-points an alias.
#[utoipa::path(put, path = "/v1/agents/{agent_id}/aliases", operation_id = "agents_api_v1_agents_create_or_update_alias", tag = "agents",
    params(("agent_id" = String, Path), ("alias" = String, Query), ("version" = i64, Query, minimum = 0)),
    responses((status = 200, body = AgentAlias), Errors))]
#[tracing::instrument(skip_all, fields(agent_id = %agent_id))]
async fn put_alias(
    State(state): State<AppState>,
    Workspace(ws): Workspace,
    PathParam(agent_id): PathParam<String>,
    query: QueryParams,
    body: RawBody,
) -> Result<Json<AgentAlias>> {
    let body = legacy_body(&body)?;
    let alias = alias_param(&query, &body)?;
    let version = version_param(&query, &body)?;
    Ok(Json(engine::put_alias(&state.engine, &ws, &AgentId(agent_id), &alias, version).await?))
}

/// `GET /v1/agents/{agent_id}/aliases`.
#[utoipa::path(get, path = "/v1/agents/{agent_id}/aliases", operation_id = "agents_api_v1_agents_list_version_aliases", tag = "agents",
    params(("agent_id" = String, Path)), responses((status = 200, body = Vec<AgentAlias>), Errors))]
#[tracing::instrument(skip_all, fields(agent_id = %agent_id))]
async fn list_aliases(
    State(state): State<AppState>,
    Workspace(ws): Workspace,
    PathParam(agent_id): PathParam<String>,
) -> Result<Json<Vec<AgentAlias>>> {
    Ok(Json(engine::list_aliases(&state.engine, &ws, &AgentId(agent_id)).await?))
}

/// `DELETE /v1/agents/{agent_id}/aliases?alias=NAME`: 204 with no body.
#[utoipa::path(delete, path = "/v1/agents/{agent_id}/aliases", operation_id = "agents_api_v1_agents_delete_alias", tag = "agents",
    params(("agent_id" = String, Path), ("alias" = String, Query)), responses((status = 204, description = "Deleted."), Errors))]
#[tracing::instrument(skip_all, fields(agent_id = %agent_id))]
async fn delete_alias(
    State(state): State<AppState>,
    Workspace(ws): Workspace,
    PathParam(agent_id): PathParam<String>,
    query: QueryParams,
) -> Result<StatusCode> {
    let alias = alias_param(&query, &None)?;
    engine::delete_alias(&state.engine, &ws, &AgentId(agent_id), &alias).await?;
    Ok(StatusCode::NO_CONTENT)
}
