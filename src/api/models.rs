//! `GET /v1/models`: the model names palaver can serve, as cards every SDK validates.

use super::auth::Workspace;
use super::extract::PathParam;
use super::openapi::Errors;
use crate::domain::models::{ModelCard, ModelList};
use crate::error::{Error, Result};
use crate::AppState;
use axum::extract::State;
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_models)).routes(routes!(get_model))
}

/// `GET /v1/models`.
#[utoipa::path(get, path = "/v1/models", operation_id = "list_models_v1_models_get", tag = "models",
    responses((status = 200, body = ModelList), Errors))]
#[tracing::instrument(skip_all)]
async fn list_models(State(state): State<AppState>, _ws: Workspace) -> Result<Json<ModelList>> {
    Ok(Json(ModelList { object: "list", data: state.engine.model_cards().await? }))
}

/// `GET /v1/models/{model_id}`: one card of the list.
#[utoipa::path(get, path = "/v1/models/{model_id}", operation_id = "retrieve_model_v1_models__model_id__get", tag = "models",
    params(("model_id" = String, Path)), responses((status = 200, body = ModelCard), Errors))]
#[tracing::instrument(skip_all)]
async fn get_model(
    State(state): State<AppState>,
    _ws: Workspace,
    PathParam(model_id): PathParam<String>,
) -> Result<Json<ModelCard>> {
    let cards = state.engine.model_cards().await?;
    cards.into_iter().find(|c| c.id == model_id).map(Json).ok_or_else(|| Error::not_found("Model", model_id))
}
