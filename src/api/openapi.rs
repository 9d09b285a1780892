//! `GET /openapi.json`: the OpenAPI 3.1 document, generated from the handlers' own
//! `#[utoipa::path]` attributes. Every route is registered through `utoipa_axum`'s
//! `OpenApiRouter`, so a route cannot be served without being documented, nor documented
//! without being served. Operation ids and schema names are the official ones where the
//! hosted API has them; palaver's own routes are `palaver_*`.

use super::error::{ErrorBody, ValidationErrorBody};
use crate::error::{FieldError, Loc};
use axum::http::header;
use axum::response::IntoResponse;
use std::collections::BTreeMap;
use std::sync::OnceLock;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "palaver",
        description = "A self-hostable server for the Agents & Conversations API.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    components(schemas(ErrorBody, ValidationErrorBody, FieldError, Loc)),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

/// The error answers every operation may give: a 422 with `detail`, any other 4xx or 5xx
/// with the envelope.
pub struct Errors;

impl utoipa::IntoResponses for Errors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let json = |schema: &str, description: &str| {
            let content = ContentBuilder::new().schema(Some(Ref::from_schema_name(schema))).build();
            RefOr::T(ResponseBuilder::new().description(description).content("application/json", content).build())
        };
        BTreeMap::from([
            ("422".to_owned(), json("HTTPValidationError", "The request failed validation; `detail` says where.")),
            ("4XX".to_owned(), json("ErrorResponse", "The request was refused: bad key, unknown object, conflict…")),
            ("5XX".to_owned(), json("ErrorResponse", "The server, its store or the model upstream failed.")),
        ])
    }
}

/// The document, serialized once on first use: building it walks every handler's
/// attributes, which no request should pay for twice.
fn document() -> &'static str {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let (_, api) = super::routes(0).split_for_parts();
        // A document built from derives always serializes.
        api.to_json().unwrap_or_default()
    })
}

/// `GET /openapi.json`: no key needed, so tools can read it.
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "palaver_openapi",
    tag = "palaver",
    security(()),
    responses((status = 200, description = "This document.", content_type = "application/json", body = Object), Errors)
)]
pub async fn openapi_json() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], document())
}

#[cfg(test)]
mod tests {
    /// `OpenApiRouter::route` passes a route to axum undocumented: every resource file must
    /// register its routes with `.routes(routes!(…))`. The only exception is the metrics
    /// listener of `PALAVER_METRICS_ADDR`, a separate server.
    #[test]
    fn no_route_is_served_without_its_documentation() {
        let sources = [
            ("agents.rs", include_str!("agents.rs")),
            ("completions.rs", include_str!("completions.rs")),
            ("conversations.rs", include_str!("conversations.rs")),
            ("files.rs", include_str!("files.rs")),
            ("health.rs", include_str!("health.rs")),
            ("mock.rs", include_str!("mock.rs")),
            ("models.rs", include_str!("models.rs")),
            ("mod.rs", include_str!("mod.rs")),
            ("openapi.rs", include_str!("openapi.rs")),
        ];
        // Built, so that this file's own text does not match.
        let plain = [".", "route("].concat();
        let service = [".", "route_service("].concat();
        let nested = [".", "nest"].concat();
        for (file, source) in sources {
            for needle in [&plain, &service, &nested] {
                assert!(!source.contains(needle.as_str()), "{file} registers a route with `{needle}`");
            }
        }
        let metrics = include_str!("metrics.rs");
        assert_eq!(metrics.matches(plain.as_str()).count(), 1, "metrics.rs: only the standalone listener");
    }
}
