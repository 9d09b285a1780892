//! `GET /metrics`: the Prometheus text format. On the main address it needs a valid key
//! when keys are configured; `PALAVER_METRICS_ADDR` serves it alone, without auth, for a
//! scraper on a private network. Also the middleware that counts and times every request
//! by its route template (never the raw path, which would make a label per conversation).

use super::auth::Workspace;
use crate::telemetry;
use crate::AppState;
use axum::extract::{MatchedPath, Request};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(metrics))
}

#[utoipa::path(get, path = "/metrics", operation_id = "palaver_metrics", tag = "palaver",
    responses((status = 200, description = "The Prometheus text format.", content_type = "text/plain", body = String),
        super::openapi::Errors))]
async fn metrics(_: Workspace) -> Response {
    exposition()
}

/// The router of `PALAVER_METRICS_ADDR`: `/metrics` and nothing else.
pub fn standalone() -> Router {
    Router::new().route("/metrics", get(|| async { exposition() }))
}

fn exposition() -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], telemetry::render()).into_response()
}

/// Counts and times a request under its route template (a `route_layer`, so the route is
/// known).
pub async fn record(request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_default();
    telemetry::traces::http_route(&method, &route);
    let response = next.run(request).await;
    telemetry::http_request(method.as_str(), &route, response.status().as_u16(), started.elapsed());
    response
}
