//! `/palaver/mock/*`: the scripted `mock` model's control API, outside `/v1/` so it never
//! meets the official API. Scoped to the caller's workspace (API key), so test suites
//! sharing one server do not see each other's rules or journal.

use super::auth::Workspace;
use super::extract::ApiJson;
use super::openapi::Errors;
use crate::domain::mock::MockScript;
use crate::engine::mock as engine;
use crate::error::Result;
use crate::AppState;
use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_rules, add_rules, reset)).routes(routes!(journal))
}

/// `POST /palaver/mock/rules`: `{"rules": [...]}`, added after the workspace's others.
#[utoipa::path(post, path = "/palaver/mock/rules", operation_id = "palaver_mock_rules_add", tag = "palaver",
    request_body(content = MockScript, description = "Rules to add: see the README's mock model.",
        example = json!({"rules": [{"when": {"message_contains": "weather"}, "replies": [{"text": "Sunny."}]}]})),
    responses((status = 200, description = "Every rule of the workspace.", body = Object), Errors))]
async fn add_rules(
    State(state): State<AppState>,
    Workspace(ws): Workspace,
    ApiJson(script): ApiJson<MockScript>,
) -> Result<Json<Value>> {
    Ok(Json(json!({"rules": engine::add_rules(&state.engine, &ws, script)?})))
}

/// `GET /palaver/mock/rules`: the workspace's rules, each with how many requests it answered.
#[utoipa::path(get, path = "/palaver/mock/rules", operation_id = "palaver_mock_rules_list", tag = "palaver",
    responses((status = 200, description = "`{\"rules\": [...]}`.", body = Object), Errors))]
async fn list_rules(State(state): State<AppState>, Workspace(ws): Workspace) -> Json<Value> {
    Json(json!({"rules": engine::rules(&state.engine, &ws)}))
}

/// `DELETE /palaver/mock/rules`: forgets the workspace's rules and journal.
#[utoipa::path(delete, path = "/palaver/mock/rules", operation_id = "palaver_mock_rules_reset", tag = "palaver",
    responses((status = 200, description = "`{\"rules\": []}`.", body = Object), Errors))]
async fn reset(State(state): State<AppState>, Workspace(ws): Workspace) -> Json<Value> {
    engine::reset(&state.engine, &ws);
    Json(json!({"rules": []}))
}

/// `GET /palaver/mock/journal`: what the mock model received, oldest first.
#[utoipa::path(get, path = "/palaver/mock/journal", operation_id = "palaver_mock_journal", tag = "palaver",
    responses((status = 200, description = "`{\"requests\": [...]}`.", body = Object), Errors))]
async fn journal(State(state): State<AppState>, Workspace(ws): Workspace) -> Json<Value> {
    Json(json!({"requests": engine::journal(&state.engine, &ws)}))
}
