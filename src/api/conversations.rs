//! `/v1/conversations*`: the eight conversation routes of the official SDKs' conversations contract.
//! Start, append and restart answer JSON or SSE depending on the body's `stream`.

use super::auth::Workspace;
use super::extract::{ApiJson, PathParam, QueryParams};
use super::openapi::Errors;
use super::sse;
use crate::domain::conversations::{
    AppendConversationRequest, Conversation, ConversationHistory, ConversationMessages, ConversationResponse,
    RestartConversationRequest, StartConversationRequest,
};
use crate::domain::ids::ConversationId;
use crate::engine::conversations as engine;
use crate::engine::run::{self, TurnPlan};
use crate::error::Result;
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(start_conversation, list_conversations))
        .routes(routes!(append_conversation, get_conversation, delete_conversation))
        .routes(routes!(get_history))
        .routes(routes!(get_messages))
        .routes(routes!(restart_conversation))
        .routes(routes!(resume_stream))
}

/// `GET /v1/conversations/{id}/stream`: the events of the conversation's latest streamed
/// run after `Last-Event-ID` (or `?starting_after=`; from the start without either), then
/// the rest as the run goes on.
#[utoipa::path(get, path = "/v1/conversations/{conversation_id}/stream", operation_id = "palaver_conversations_stream_resume", tag = "conversations",
    params(("conversation_id" = String, Path), ("starting_after" = Option<i64>, Query, minimum = 0), ("Last-Event-ID" = Option<String>, Header, description = "The `id` of the last event received.")),
    responses((status = 200, description = "The run's events after the one named.", content_type = "text/event-stream", body = sse::EventFrame), Errors))]
#[tracing::instrument(skip_all, fields(conversation_id = %id))]
async fn resume_stream(
    State(state): State<AppState>,
    Workspace(ws): Workspace,
    PathParam(id): PathParam<String>,
    headers: axum::http::HeaderMap,
    query: QueryParams,
) -> Result<Response> {
    let after = match headers.get("last-event-id") {
        Some(value) => Some(value.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()).ok_or_else(|| {
            crate::error::Error::invalid(crate::error::FieldError::new(
                vec![crate::error::Loc::Key("header".into()), crate::error::Loc::Key("last-event-id".into())],
                "int_parsing",
                "Last-Event-ID is the number of the last event received.",
            ))
        })?),
        None => query.int("starting_after", None, 0, i64::MAX)?.map(|n| n as u64),
    };
    let frames = state.engine.streams.resume(&ws, &ConversationId(id), after).await?;
    Ok(sse::frames(&state, frames))
}

/// Runs a checked plan and answers with its events: SSE, or folded into one response.
async fn respond(state: &AppState, plan: TurnPlan, stream: bool) -> Result<Response> {
    if stream {
        return Ok(sse::events(state, run::spawn(&state.engine, plan)));
    }
    let fold = run::spawn_folded(&state.engine, plan)
        .await
        .map_err(|_| crate::error::Error::Internal(anyhow::anyhow!("the run ended without a result")))?;
    Ok(Json(fold.into_response()?).into_response())
}

/// `POST /v1/conversations`: starts a conversation with an agent or a model.
#[utoipa::path(post, path = "/v1/conversations", operation_id = "agents_api_v1_conversations_start", tag = "conversations",
    request_body = StartConversationRequest, responses(
        (status = 200, description = "The run's outputs; with `stream: true`, its events as they happen.",
            content((ConversationResponse = "application/json"), (sse::EventFrame = "text/event-stream"))),
        Errors))]
#[tracing::instrument(skip_all, fields(conversation_id))]
async fn start_conversation(
    State(state): State<AppState>,
    Workspace(ws): Workspace,
    ApiJson(request): ApiJson<StartConversationRequest>,
) -> Result<Response> {
    let stream = request.stream;
    let plan = engine::plan_start(&state.engine, &ws, request).await?;
    tracing::Span::current().record("conversation_id", plan.conversation.id.as_str());
    respond(&state, plan, stream).await
}

/// `POST /v1/conversations/{id}`: appends inputs and runs the next turn.
#[utoipa::path(post, path = "/v1/conversations/{conversation_id}", operation_id = "agents_api_v1_conversations_append", tag = "conversations",
    params(("conversation_id" = String, Path)), request_body = AppendConversationRequest, responses(
        (status = 200, description = "The run's outputs; with `stream: true`, its events as they happen.",
            content((ConversationResponse = "application/json"), (sse::EventFrame = "text/event-stream"))),
        Errors))]
#[tracing::instrument(skip_all, fields(conversation_id = %id))]
async fn append_conversation(
    State(state): State<AppState>,
    Workspace(ws): Workspace,
    PathParam(id): PathParam<String>,
    ApiJson(request): ApiJson<AppendConversationRequest>,
) -> Result<Response> {
    let stream = request.stream;
    let plan = engine::plan_append(&state.engine, &ws, &ConversationId(id), request).await?;
    respond(&state, plan, stream).await
}

/// `POST /v1/conversations/{id}/restart`: a new conversation branched at `from_entry_id`.
#[utoipa::path(post, path = "/v1/conversations/{conversation_id}/restart", operation_id = "agents_api_v1_conversations_restart", tag = "conversations",
    params(("conversation_id" = String, Path)), request_body = RestartConversationRequest, responses(
        (status = 200, description = "The run's outputs; with `stream: true`, its events as they happen.",
            content((ConversationResponse = "application/json"), (sse::EventFrame = "text/event-stream"))),
        Errors))]
#[tracing::instrument(skip_all, fields(conversation_id = %id))]
async fn restart_conversation(
    State(state): State<AppState>,
    Workspace(ws): Workspace,
    PathParam(id): PathParam<String>,
    ApiJson(request): ApiJson<RestartConversationRequest>,
) -> Result<Response> {
    let stream = request.stream;
    let plan = engine::plan_restart(&state.engine, &ws, &ConversationId(id), request).await?;
    respond(&state, plan, stream).await
}

/// `GET /v1/conversations`: newest first, `page`/`page_size`, `metadata` filter.
#[utoipa::path(get, path = "/v1/conversations", operation_id = "agents_api_v1_conversations_list", tag = "conversations",
    params(("page" = Option<i32>, Query, minimum = 0), ("page_size" = Option<i64>, Query, minimum = 1, maximum = 1000),
        ("metadata" = Option<String>, Query, description = "A JSON object the conversations' metadata must contain.")),
    responses((status = 200, body = Vec<Conversation>), Errors))]
#[tracing::instrument(skip_all)]
async fn list_conversations(
    State(state): State<AppState>,
    Workspace(ws): Workspace,
    query: QueryParams,
) -> Result<Json<Vec<Conversation>>> {
    let page = query.int("page", Some(0), 0, i64::from(i32::MAX))?.unwrap_or(0);
    let page_size = query.int("page_size", Some(100), 1, 1000)?.unwrap_or(100);
    let metadata = query.json_object("metadata")?;
    Ok(Json(engine::list_conversations(&state.engine, &ws, page, page_size, metadata.as_ref()).await?))
}

/// `GET /v1/conversations/{id}`: the agent or the model shape.
#[utoipa::path(get, path = "/v1/conversations/{conversation_id}", operation_id = "agents_api_v1_conversations_get", tag = "conversations",
    params(("conversation_id" = String, Path)), responses((status = 200, body = Conversation), Errors))]
#[tracing::instrument(skip_all, fields(conversation_id = %id))]
async fn get_conversation(
    State(state): State<AppState>,
    Workspace(ws): Workspace,
    PathParam(id): PathParam<String>,
) -> Result<Json<Conversation>> {
    Ok(Json(engine::get_conversation(&state.engine, &ws, &ConversationId(id)).await?))
}

/// `DELETE /v1/conversations/{id}`: 204 with no body.
#[utoipa::path(delete, path = "/v1/conversations/{conversation_id}", operation_id = "agents_api_v1_conversations_delete", tag = "conversations",
    params(("conversation_id" = String, Path)), responses((status = 204, description = "Deleted."), Errors))]
#[tracing::instrument(skip_all, fields(conversation_id = %id))]
async fn delete_conversation(
    State(state): State<AppState>,
    Workspace(ws): Workspace,
    PathParam(id): PathParam<String>,
) -> Result<StatusCode> {
    engine::delete_conversation(&state.engine, &ws, &ConversationId(id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/conversations/{id}/history`: every entry from the root to the head.
#[utoipa::path(get, path = "/v1/conversations/{conversation_id}/history", operation_id = "agents_api_v1_conversations_history", tag = "conversations",
    params(("conversation_id" = String, Path)), responses((status = 200, body = ConversationHistory), Errors))]
#[tracing::instrument(skip_all, fields(conversation_id = %id))]
async fn get_history(
    State(state): State<AppState>,
    Workspace(ws): Workspace,
    PathParam(id): PathParam<String>,
) -> Result<Json<ConversationHistory>> {
    Ok(Json(engine::history(&state.engine, &ws, &ConversationId(id)).await?))
}

/// `GET /v1/conversations/{id}/messages`: the history's message entries.
#[utoipa::path(get, path = "/v1/conversations/{conversation_id}/messages", operation_id = "agents_api_v1_conversations_messages", tag = "conversations",
    params(("conversation_id" = String, Path)), responses((status = 200, body = ConversationMessages), Errors))]
#[tracing::instrument(skip_all, fields(conversation_id = %id))]
async fn get_messages(
    State(state): State<AppState>,
    Workspace(ws): Workspace,
    PathParam(id): PathParam<String>,
) -> Result<Json<ConversationMessages>> {
    Ok(Json(engine::messages(&state.engine, &ws, &ConversationId(id)).await?))
}
