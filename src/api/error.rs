//! Every error leaves palaver in the shape of the official SDKs' errors contract: the
//! `{"object":"error","message","type","param","code"}` envelope, plus a FastAPI-style
//! `detail` list on 422 so each SDK raises its validation error with the field named.
//! The bodies are typed so that `/openapi.json` documents exactly what is written here.

use crate::domain::shared_fields;
use crate::error::{Code, Error, FieldError};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

shared_fields! {
    // The envelope, the same in both bodies.
    head {
        /// Always `error`.
        pub object: &'static str,
        pub message: String,
        /// `invalid_request_error`, `authentication_error`, `rate_limit_error` or `server_error`.
        #[serde(rename = "type")]
        pub kind: &'static str,
        pub param: Option<String>,
        pub code: Option<&'static str>,
    }

    /// The envelope of every error but a validation error.
    #[derive(Serialize, utoipa::ToSchema)]
    #[schema(as = ErrorResponse)]
    pub struct ErrorBody {
        /// Only on a 401: the hosted API answers a bad key with `{"detail": "Unauthorized"}`;
        /// the member is kept for clients that read it.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub detail: Option<&'static str>,
    }

    /// A 422: the envelope, `param` naming the first field at fault, and every problem in `detail`.
    #[derive(Serialize, utoipa::ToSchema)]
    #[schema(as = HTTPValidationError)]
    pub struct ValidationErrorBody {
        pub detail: Vec<FieldError>,
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let code = self.code();
        // Every status in the table is a valid HTTP status.
        let status = StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            // The whole chain goes to the log (inside the request span), never to the client.
            tracing::error!(error = ?self, "request failed");
        }
        let message = self.to_string();
        let mut response = match self {
            Error::Invalid(errors) => {
                let param = errors.first().map(|e| e.field_name()).filter(|name| !name.is_empty());
                let body = ValidationErrorBody {
                    object: "error",
                    message,
                    kind: code.kind(),
                    param,
                    code: code.wire(),
                    detail: errors,
                };
                (status, Json(body)).into_response()
            }
            other => {
                let detail = matches!(other, Error::Unauthorized).then_some("Unauthorized");
                let body =
                    ErrorBody { object: "error", message, kind: code.kind(), param: None, code: code.wire(), detail };
                (status, Json(body)).into_response()
            }
        };
        if code == Code::StoreUnavailable {
            // The database usually comes back within seconds (a restart, a failover).
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}
