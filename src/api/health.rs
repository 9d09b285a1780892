//! `GET /health`: 200 when the store answers, 503 otherwise. No auth, for load balancers.

use super::openapi::Errors;
use crate::error::{Error, Result};
use crate::AppState;
use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};
use std::time::Duration;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(health))
}

#[utoipa::path(get, path = "/health", operation_id = "palaver_health", tag = "palaver", security(()),
    responses((status = 200, description = "`{\"status\": \"ok\"}`: the store answers.", body = Object), Errors))]
async fn health(State(state): State<AppState>) -> Result<Json<Value>> {
    match tokio::time::timeout(Duration::from_secs(2), state.engine.ping()).await {
        Ok(Ok(())) => Ok(Json(json!({"status": "ok"}))),
        Ok(Err(error)) => {
            tracing::warn!(error = %error, "health check: store failed");
            Err(match error {
                Error::StoreUnavailable(why) => Error::StoreUnavailable(why),
                other => Error::StoreUnavailable(other.to_string()),
            })
        }
        Err(_) => {
            tracing::warn!("health check: store timed out");
            Err(Error::StoreUnavailable("no answer within 2 s".to_owned()))
        }
    }
}
