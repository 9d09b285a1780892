//! `GET /v1/models`: the model names palaver can serve, as cards every SDK validates.

use super::auth::Workspace;
use super::extract::PathParam;
use crate::domain::models::{ModelCard, ModelList};
use crate::error::{Error, Result};
use crate::AppState;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/models", get(list_models)).route("/v1/models/{model_id}", get(get_model))
}

/// `GET /v1/models`.
#[tracing::instrument(skip_all)]
async fn list_models(State(state): State<AppState>, _ws: Workspace) -> Result<Json<ModelList>> {
    Ok(Json(ModelList { object: "list", data: state.engine.model_cards().await? }))
}

/// `GET /v1/models/{model_id}`: one card of the list.
#[tracing::instrument(skip_all)]
async fn get_model(
    State(state): State<AppState>,
    _ws: Workspace,
    PathParam(model_id): PathParam<String>,
) -> Result<Json<ModelCard>> {
    let cards = state.engine.model_cards().await?;
    cards.into_iter().find(|c| c.id == model_id).map(Json).ok_or_else(|| Error::not_found("Model", model_id))
}
