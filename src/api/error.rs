//! Every error leaves palaver in the shape of the official SDKs' errors contract: the
//! `{"object":"error","message","type","param","code"}` envelope, plus a FastAPI-style
//! `detail` list on 422 so each SDK raises its validation error with the field named.

use crate::error::Error;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

const INVALID: &str = "invalid_request_error";
const SERVER: &str = "server_error";

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        use Error::*;
        let (status, kind, code) = match &self {
            Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, INVALID, None),
            NotFound { .. } | AgentVersionNotFound { .. } | AliasNotFound { .. } | RouteNotFound { .. } => {
                (StatusCode::NOT_FOUND, INVALID, Some("not_found"))
            }
            Conflict(_) => (StatusCode::CONFLICT, INVALID, Some("conflict")),
            Unauthorized => (StatusCode::UNAUTHORIZED, "authentication_error", Some("unauthorized")),
            PayloadTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, INVALID, Some("payload_too_large")),
            MethodNotAllowed { .. } => (StatusCode::METHOD_NOT_ALLOWED, INVALID, Some("method_not_allowed")),
            Upstream { status, .. } => {
                let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY);
                let kind = if status == StatusCode::TOO_MANY_REQUESTS { "rate_limit_error" } else { SERVER };
                (status, kind, Some("upstream_error"))
            }
            RunFailed { status, .. } => {
                let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY);
                match status {
                    StatusCode::CONFLICT => (status, INVALID, Some("conflict")),
                    StatusCode::TOO_MANY_REQUESTS => (status, "rate_limit_error", Some("upstream_error")),
                    s if s.is_client_error() => (status, INVALID, None),
                    StatusCode::INTERNAL_SERVER_ERROR => (status, SERVER, None),
                    _ => (status, SERVER, Some("upstream_error")),
                }
            }
            StoreUnavailable => (StatusCode::SERVICE_UNAVAILABLE, SERVER, Some("store_unavailable")),
            Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, SERVER, None),
        };
        if status.is_server_error() {
            // The whole chain goes to the log (inside the request span), never to the client.
            tracing::error!(error = ?self, "request failed");
        }
        let mut body = json!({
            "object": "error",
            "message": self.to_string(),
            "type": kind,
            "param": null,
            "code": code,
        });
        match &self {
            Invalid(errors) => {
                body["param"] = json!(errors.first().map(|e| e.field_name()).filter(|name| !name.is_empty()));
                body["detail"] = json!(errors);
            }
            // The hosted API answers a bad key with `{"detail": "Unauthorized"}`; keep that
            // member for clients that read it.
            Unauthorized => body["detail"] = json!("Unauthorized"),
            _ => {}
        }
        (status, Json(body)).into_response()
    }
}
