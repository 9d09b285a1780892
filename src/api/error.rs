//! Every error leaves palaver in the shape of the official SDKs' errors contract: the
//! `{"object":"error","message","type","param","code"}` envelope, plus a FastAPI-style
//! `detail` list on 422 so each SDK raises its validation error with the field named.

use crate::error::{Code, Error};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let code = self.code();
        // Every status in the table is a valid HTTP status.
        let status = StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            // The whole chain goes to the log (inside the request span), never to the client.
            tracing::error!(error = ?self, "request failed");
        }
        let mut body = json!({
            "object": "error",
            "message": self.to_string(),
            "type": code.kind(),
            "param": null,
            "code": code.wire(),
        });
        match &self {
            Error::Invalid(errors) => {
                body["param"] = json!(errors.first().map(|e| e.field_name()).filter(|name| !name.is_empty()));
                body["detail"] = json!(errors);
            }
            // The hosted API answers a bad key with `{"detail": "Unauthorized"}`; keep that
            // member for clients that read it.
            Error::Unauthorized => body["detail"] = json!("Unauthorized"),
            _ => {}
        }
        let mut response = (status, Json(body)).into_response();
        if code == Code::StoreUnavailable {
            // The database usually comes back within seconds (a restart, a failover).
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}
