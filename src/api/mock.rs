//! `/palaver/mock/*`: the scripted `mock` model's control API, outside `/v1/` so it never
//! meets the official API. Scoped to the caller's workspace (API key), so test suites
//! sharing one server do not see each other's rules or journal.

use super::auth::Workspace;
use super::extract::ApiJson;
use crate::domain::mock::MockScript;
use crate::engine::mock as engine;
use crate::error::Result;
use crate::AppState;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/palaver/mock/rules", get(list_rules).post(add_rules).delete(reset))
        .route("/palaver/mock/journal", get(journal))
}

/// `POST /palaver/mock/rules`: `{"rules": [...]}`, added after the workspace's others.
async fn add_rules(
    State(state): State<AppState>,
    Workspace(ws): Workspace,
    ApiJson(script): ApiJson<MockScript>,
) -> Result<Json<Value>> {
    Ok(Json(json!({"rules": engine::add_rules(&state.engine, &ws, script)?})))
}

/// `GET /palaver/mock/rules`: the workspace's rules, each with how many requests it answered.
async fn list_rules(State(state): State<AppState>, Workspace(ws): Workspace) -> Json<Value> {
    Json(json!({"rules": engine::rules(&state.engine, &ws)}))
}

/// `DELETE /palaver/mock/rules`: forgets the workspace's rules and journal.
async fn reset(State(state): State<AppState>, Workspace(ws): Workspace) -> Json<Value> {
    engine::reset(&state.engine, &ws);
    Json(json!({"rules": []}))
}

/// `GET /palaver/mock/journal`: what the mock model received, oldest first.
async fn journal(State(state): State<AppState>, Workspace(ws): Workspace) -> Json<Value> {
    Json(json!({"requests": engine::journal(&state.engine, &ws)}))
}
