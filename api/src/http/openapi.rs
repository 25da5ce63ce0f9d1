//! The authenticated API and its OpenAPI document, built from the same
//! handler list: a route exists in the document exactly when it is served
//! (utoipa-axum's `routes!` registers both), so the two cannot drift.

use axum::middleware::from_fn_with_state;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{customers, ingest, ops, pull, steward, AppState};
use crate::auth::{require, Need};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "mdm",
        description = "Event-sourced customer master data: ingest, query, steward commands. \
                       Authenticate with `Authorization: Bearer <key>` (keys from `mdm clients add`). \
                       Errors are application/problem+json (RFC 9457) naming the field at fault."
    ),
    modifiers(&BearerKey),
    tags(
        (name = "ingest", description = "Source records in"),
        (name = "customers", description = "Golden records, lineage, history, households (readers: within their field scopes)"),
        (name = "stewards", description = "Review queue and steward commands (If-Match on the customer's ETag)"),
        (name = "operations", description = "Metrics (admin); /health and /ready are open and outside /v1"),
        (name = "feed", description = "Customer changes as Server-Sent Events of CloudEvents (readers: within their field scopes)"),
        (name = "webhooks", description = "Webhook subscribers and their dead letters (admin)"),
        (name = "privacy", description = "Privacy (compliance): the request ledger of CCPA erasure and right-to-know requests (due dates, one extension, notices), erasure and the right-to-know export"),
    )
)]
struct ApiDoc;

struct BearerKey;

impl Modify for BearerKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("api_key", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
        components.add_security_scheme(
            "webhook_signature",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Webhook-Signature",
                "t=<unix seconds>,v1=<hex HMAC-SHA256(subscriber secret, \"<t>.<body>\")>",
            ))),
        );
    }
}

/// Every authenticated route, grouped by the role it needs.
pub fn api(state: &AppState) -> OpenApiRouter<AppState> {
    let guard = |need: Need| from_fn_with_state((state.clients.clone(), need), require);
    let ingest = OpenApiRouter::new()
        .routes(routes!(ingest::post_records))
        .routes(routes!(pull::post_pull))
        .routes(routes!(ingest::get_record_customer))
        .route_layer(guard(Need::Ingest));
    let read = OpenApiRouter::new()
        .routes(routes!(customers::search_customers))
        .routes(routes!(customers::get_customer))
        .routes(routes!(customers::get_customer_by_source))
        .routes(routes!(customers::get_lineage))
        .routes(routes!(customers::get_overrides))
        .routes(routes!(customers::get_history))
        .routes(routes!(customers::get_source_records))
        .routes(routes!(customers::get_as_of))
        .routes(routes!(customers::get_household))
        .route_layer(guard(Need::Read));
    let stewards = OpenApiRouter::new()
        .routes(routes!(customers::list_reviews))
        .routes(routes!(customers::get_review))
        .routes(routes!(steward::take_review))
        .routes(routes!(steward::decide_review))
        .routes(routes!(steward::merge))
        .routes(routes!(steward::split))
        .routes(routes!(steward::not_a_match))
        .routes(routes!(steward::force_link))
        .routes(routes!(steward::set_override))
        .routes(routes!(steward::remove_override))
        .route_layer(guard(Need::Steward));
    let admin = OpenApiRouter::new()
        .routes(routes!(ops::metrics))
        .route_layer(guard(Need::Admin));
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(admin)
        // Feed and webhooks (issue 6).
        .merge(
            super::feed::routes()
                .routes(routes!(super::erasure::acknowledge_notice))
                .route_layer(guard(Need::Read)),
        )
        .merge(super::webhooks::routes().route_layer(guard(Need::Admin)))
        // Privacy: the request ledger.
        .merge(super::privacy::routes().route_layer(guard(Need::Compliance)))
        // Privacy: erasure.
        .merge(
            OpenApiRouter::new()
                .routes(routes!(super::erasure::erase))
                .route_layer(guard(Need::Compliance)),
        )
        // Webhook receivers acknowledge erasure notices, signed with their
        // subscriber's secret (no API key).
        .merge(OpenApiRouter::new().routes(routes!(super::erasure::acknowledge_webhook_notice)))
        // Privacy: the right-to-know export.
        .merge(
            OpenApiRouter::new()
                .routes(routes!(super::export::export))
                .route_layer(guard(Need::Compliance)),
        )
        .merge(ingest)
        .merge(read)
        .merge(stewards)
}

/// Adds the answers the edge and the extractors can give to every
/// operation that does not document them yet (each a problem document):
/// 400 (a path or query parameter or the body is malformed), 401 and 403
/// (no valid key, or a role that may not), 408 (the body did not arrive in
/// time), 413 (body over the limit), 415 (a content type the operation does
/// not take), 422 (a well-formed body of the wrong shape) and 503 (load
/// shedding, or a store that does not answer). The document must describe
/// what the service answers (`scripts/api-fuzz` holds it to that).
pub fn document_edge_answers(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
    let problem = |description: &str| {
        RefOr::T(
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/problem+json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Problem")))
                        .build(),
                )
                .build(),
        )
    };
    for item in doc.paths.paths.values_mut() {
        let path_parameters = item.parameters.as_ref().is_some_and(|p| !p.is_empty());
        for operation in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
            &mut item.options,
            &mut item.head,
            &mut item.trace,
        ]
        .into_iter()
        .flatten()
        {
            let has_body = operation.request_body.is_some();
            let has_parameters = path_parameters || operation.parameters.as_ref().is_some_and(|p| !p.is_empty());
            let secured = operation.security.as_ref().is_some_and(|s| !s.is_empty());
            let mut add = |status: &str, description: &str| {
                operation
                    .responses
                    .responses
                    .entry(status.to_owned())
                    .or_insert_with(|| problem(description));
            };
            if has_body || has_parameters {
                add("400", "A malformed path or query parameter or body, naming the field");
            }
            if secured {
                add("401", "No valid credentials");
                add("403", "The client's role may not do this");
            }
            if has_body {
                add(
                    "408",
                    "The request body did not arrive within http.body_read_timeout_ms",
                );
                add("413", "The request body is larger than http.max_body_bytes");
                add("415", "A content type the operation does not take");
                add("422", "A well-formed body of the wrong shape, naming the field");
            }
            add(
                "503",
                "Busy (more than http.max_in_flight requests; Retry-After) or a store does not answer",
            );
        }
    }
}
