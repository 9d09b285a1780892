//! `POST /v1/agents/completions` and `POST /v1/chat/completions`: the chat-completion
//! shaped endpoints, so a client whose base URL is palaver keeps working for its other calls.

use super::auth::Workspace;
use super::extract::{ApiJson, RawBody};
use crate::engine::completions::{self as engine, CompletionRequest};
use crate::error::{decode_json, Error, FieldError, Result};
use crate::AppState;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use futures::StreamExt;
use std::convert::Infallible;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/agents/completions", post(agent_completion))
        .route("/v1/chat/completions", post(chat_completion))
}

async fn answer(
    state: &AppState,
    request: crate::backends::chat::ChatRequest<'static>,
    stream: bool,
) -> Result<Response> {
    if !stream {
        return Ok(Json(engine::complete(state, request).await?).into_response());
    }
    let chunks = engine::stream(state, request).await?;
    // Chat-completion streams are data-only and end with `[DONE]`, unlike conversations.
    let frames = chunks
        .map(|chunk| Ok::<Event, Infallible>(Event::default().data(chunk.to_string())))
        .chain(futures::stream::once(async { Ok(Event::default().data("[DONE]")) }))
        .take_until(state.shutdown.clone().cancelled_owned());
    Ok(([("x-accel-buffering", "no")], Sse::new(frames).keep_alive(KeepAlive::default())).into_response())
}

/// `POST /v1/agents/completions`: the agent's instructions, tools and arguments applied to
/// the given messages. Stateless.
#[tracing::instrument(skip_all)]
async fn agent_completion(
    State(state): State<AppState>,
    Workspace(ws): Workspace,
    ApiJson(request): ApiJson<CompletionRequest>,
) -> Result<Response> {
    if request.agent_id.is_none() {
        return Err(Error::invalid(FieldError::body(&["agent_id".into()], "missing", "Field required")));
    }
    let (request, stream) = engine::prepare(&state, &ws, request).await?;
    answer(&state, request, stream).await
}

/// `POST /v1/chat/completions`: passed through unchanged to the upstream the model routes
/// to (status, content type and body, streamed); the built-in model answers itself.
#[tracing::instrument(skip_all)]
async fn chat_completion(
    State(state): State<AppState>,
    Workspace(ws): Workspace,
    RawBody(body): RawBody,
) -> Result<Response> {
    let value: serde_json::Value = decode_json(&["body".into()], &body)?;
    let model = match value.get("model") {
        Some(serde_json::Value::String(model)) => model.clone(),
        Some(_) => {
            return Err(Error::invalid(FieldError::body(&["model".into()], "string_type", "Input should be a string")))
        }
        None => return Err(Error::invalid(FieldError::body(&["model".into()], "missing", "Field required"))),
    };
    match state.models.upstream(&model) {
        Some(upstream) => {
            let relayed = upstream.passthrough(body).await?;
            let status = StatusCode::from_u16(relayed.status).unwrap_or(StatusCode::BAD_GATEWAY);
            let body = Body::from_stream(relayed.body);
            Ok((status, [(header::CONTENT_TYPE, relayed.content_type)], body).into_response())
        }
        None => {
            let mut request: CompletionRequest = crate::error::decode_value(&["body".into()], value)?;
            request.agent_id = None;
            let (request, stream) = engine::prepare(&state, &ws, request).await?;
            answer(&state, request, stream).await
        }
    }
}
