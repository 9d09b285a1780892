//! `/v1/conversations*`: the eight conversation routes of the official SDKs' conversations contract.
//! Start, append and restart answer JSON or SSE depending on the body's `stream`.

use super::auth::Workspace;
use super::extract::{ApiJson, PathParam, QueryParams};
use super::sse;
use crate::domain::conversations::{
    AppendConversationRequest, Conversation, ConversationHistory, ConversationMessages, RestartConversationRequest,
    StartConversationRequest,
};
use crate::domain::ids::ConversationId;
use crate::engine::conversations as engine;
use crate::engine::run::{self, TurnPlan};
use crate::error::Result;
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/conversations", post(start_conversation).get(list_conversations))
        .route(
            "/v1/conversations/{conversation_id}",
            post(append_conversation).get(get_conversation).delete(delete_conversation),
        )
        .route("/v1/conversations/{conversation_id}/history", get(get_history))
        .route("/v1/conversations/{conversation_id}/messages", get(get_messages))
        .route("/v1/conversations/{conversation_id}/restart", post(restart_conversation))
        .route("/v1/conversations/{conversation_id}/stream", get(resume_stream))
}

/// `GET /v1/conversations/{id}/stream`: the events of the conversation's latest streamed
/// run after `Last-Event-ID` (or `?starting_after=`; from the start without either), then
/// the rest as the run goes on.
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
#[tracing::instrument(skip_all, fields(conversation_id = %id))]
async fn get_conversation(
    State(state): State<AppState>,
    Workspace(ws): Workspace,
    PathParam(id): PathParam<String>,
) -> Result<Json<Conversation>> {
    Ok(Json(engine::get_conversation(&state.engine, &ws, &ConversationId(id)).await?))
}

/// `DELETE /v1/conversations/{id}`: 204 with no body.
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
#[tracing::instrument(skip_all, fields(conversation_id = %id))]
async fn get_history(
    State(state): State<AppState>,
    Workspace(ws): Workspace,
    PathParam(id): PathParam<String>,
) -> Result<Json<ConversationHistory>> {
    Ok(Json(engine::history(&state.engine, &ws, &ConversationId(id)).await?))
}

/// `GET /v1/conversations/{id}/messages`: the history's message entries.
#[tracing::instrument(skip_all, fields(conversation_id = %id))]
async fn get_messages(
    State(state): State<AppState>,
    Workspace(ws): Workspace,
    PathParam(id): PathParam<String>,
) -> Result<Json<ConversationMessages>> {
    Ok(Json(engine::messages(&state.engine, &ws, &ConversationId(id)).await?))
}
