//! HTTP only: each resource file owns its routes; this file merges them and adds the
//! layers every request goes through.

pub mod agents;
pub mod auth;
pub mod completions;
pub mod conversations;
pub mod error;
pub mod extract;
pub mod files;
pub mod health;
pub mod idempotency;
pub mod metrics;
pub mod mock;
pub mod models;
pub mod openapi;
pub mod server;
pub mod sse;

use crate::error::Error;
use crate::telemetry::traces;
use crate::AppState;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::HeaderName;
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, OnResponse, TraceLayer};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Every route with its documentation: the one list both the server and `/openapi.json`
/// are built from.
fn routes(max_upload_bytes: u64) -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(health::routes())
        .merge(agents::routes())
        .merge(conversations::routes())
        .merge(completions::routes())
        .merge(models::routes())
        .merge(files::routes(max_upload_bytes))
        .merge(metrics::routes())
        .merge(mock::routes())
        .routes(routes!(openapi::openapi_json))
}

pub fn router(state: AppState) -> Router {
    let max_body = state.max_body_bytes;
    let (routes, _) = routes(state.engine.files.max_upload_bytes()).split_for_parts();
    let routes = routes
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), idempotency::guard))
        .route_layer(axum::middleware::from_fn(metrics::record))
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state);
    // The layers every request goes through wrap the routed whole once. Added with
    // `Router::layer` they would wrap each route in a boxed service of its own, and axum
    // clones a matched route's boxes for every request (~5% of a turn's instructions).
    let layered = tower::ServiceBuilder::new()
        // Every response carries `x-request-id`: the client's own, else a new one, so a
        // complaint can be matched with the log lines of its request.
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(CatchPanicLayer::custom(panic_response))
        // Request spans carry method, path and request id only: never other headers, so
        // keys stay out of logs.
        .layer(TraceLayer::new_for_http().make_span_with(request_span).on_response(on_response))
        .layer(DefaultBodyLimit::max(max_body))
        .service(routes);
    Router::new().fallback_service(layered)
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

fn request_span(request: &Request) -> tracing::Span {
    let id = request.headers().get(&REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or_default();
    traces::request_span(request.method(), request.uri().path(), id, request.headers())
}

fn on_response(response: &Response, latency: std::time::Duration, span: &tracing::Span) {
    traces::http_status(span, response.status());
    DefaultOnResponse::default().on_response(response, latency, span);
}

async fn route_not_found(request: Request) -> Error {
    crate::telemetry::http_request(request.method().as_str(), "unmatched", 404, std::time::Duration::ZERO);
    Error::RouteNotFound { method: request.method().to_string(), path: request.uri().path().to_owned() }
}

async fn method_not_allowed(request: Request) -> Error {
    Error::MethodNotAllowed { method: request.method().to_string(), path: request.uri().path().to_owned() }
}

fn panic_response(_panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    Error::Internal(anyhow::anyhow!("a request handler panicked")).into_response()
}
