//! `GET /health`: 200 when the store answers, 503 otherwise. No auth, for load balancers.

use crate::error::{Error, Result};
use crate::AppState;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::time::Duration;

pub fn routes() -> Router<AppState> {
    Router::new().route("/health", get(health))
}

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
