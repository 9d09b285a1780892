//! `POST /v1/agents/completions` and `POST /v1/chat/completions`: the chat-completion
//! shaped endpoints, so a client whose base URL is palaver keeps working for its other calls.

use super::auth::Workspace;
use super::extract::{ApiJson, RawBody};
use super::openapi::Errors;
use super::sse;
use crate::domain::chat_completions::ChatCompletion;
use crate::domain::chat_completions::{ChatCompletionRequest, CompletionRequest};
use crate::engine::completions::{self as engine, CompletionAnswer};
use crate::error::Result;
use crate::AppState;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(agent_completion)).routes(routes!(chat_completion))
}

fn respond(state: &AppState, answer: CompletionAnswer) -> Response {
    match answer {
        CompletionAnswer::Complete(completion) => Json(completion).into_response(),
        CompletionAnswer::Stream(chunks) => sse::chunks(state, chunks),
        CompletionAnswer::Relayed(relayed) => {
            let status = StatusCode::from_u16(relayed.status).unwrap_or(StatusCode::BAD_GATEWAY);
            (status, [(header::CONTENT_TYPE, relayed.content_type)], Body::from_stream(relayed.body)).into_response()
        }
    }
}

/// `POST /v1/agents/completions`: the agent's instructions, tools and arguments applied to
/// the given messages. Stateless.
#[utoipa::path(post, path = "/v1/agents/completions", operation_id = "agents_completion_v1_agents_completions_post", tag = "agents",
    request_body = CompletionRequest, responses(
        (status = 200, description = "The completion; with `stream: true`, its chunks, closed by `[DONE]`.",
            content((ChatCompletion = "application/json"), (sse::ChunkFrame = "text/event-stream"))),
        Errors))]
#[tracing::instrument(skip_all)]
async fn agent_completion(
    State(state): State<AppState>,
    Workspace(ws): Workspace,
    ApiJson(request): ApiJson<CompletionRequest>,
) -> Result<Response> {
    let answer = engine::agent_completion(&state.engine, &ws, request).await?;
    Ok(respond(&state, answer))
}

/// `POST /v1/chat/completions`: passed through unchanged to the upstream the model routes
/// to (status, content type and body, streamed); the built-in model answers itself.
#[utoipa::path(post, path = "/v1/chat/completions", operation_id = "chat_completion_v1_chat_completions_post", tag = "chat",
    request_body(content = ChatCompletionRequest,
        example = json!({"model": "echo", "messages": [{"role": "user", "content": "Hello"}]})), responses(
        (status = 200, description = "The completion; with `stream: true`, its chunks, closed by `[DONE]`.",
            content((ChatCompletion = "application/json"), (sse::ChunkFrame = "text/event-stream"))),
        Errors))]
#[tracing::instrument(skip_all)]
async fn chat_completion(
    State(state): State<AppState>,
    Workspace(ws): Workspace,
    RawBody(body): RawBody,
) -> Result<Response> {
    let answer = engine::chat_completion(&state.engine, &ws, body).await?;
    Ok(respond(&state, answer))
}
