//! The query API over the read models: customers by token or source
//! reference, search, lineage, decision history, source records, as-of,
//! households and the review queue. Readers see only the golden attributes
//! of their field scopes; raw source records need every field.

// Helpers return the response to answer instead as their error: it is
// built once, on the failure path, and handed straight back to axum.
#![allow(clippy::result_large_err)]

pub use super::problem::bad_request;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use mdm_projections::as_of::AsOf;
use mdm_projections::query::{self, CustomerRow, CustomerStatus};
use mdm_store::Position;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::problem::{PathParam, Problem, QueryParams};
use super::AppState;
use crate::auth::Principal;

/// The largest page a list endpoint answers.
pub const PAGE_MAX: usize = 100;

/// A customer: its golden record (only the attributes the client may see),
/// status and version. A merged token is never answered with this: it
/// redirects to its survivor.
#[derive(Debug, Serialize, ToSchema)]
pub struct CustomerDoc {
    pub token: Uuid,
    /// `active`.
    pub status: String,
    /// The household it belongs to, if any.
    pub household: Option<Uuid>,
    /// Steward commands name it in `If-Match` (it is also the `ETag`).
    pub version: i64,
    /// How many source records it holds.
    pub record_count: i64,
    /// Golden attributes: `name`, `email`, `phone`, `address`, `date_of_birth`.
    #[schema(value_type = Object)]
    pub attributes: Map<String, Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Global log position of the last change.
    pub updated_position: i64,
    /// The survivorship rule set that built the golden values.
    pub rule_set: String,
}

/// The golden attributes of a row, grouped as the scopes name them.
pub fn golden_attributes(c: &CustomerRow) -> Map<String, Value> {
    let mut m = Map::new();
    let name = [
        ("given", &c.given_name),
        ("middle", &c.middle_name),
        ("family", &c.family_name),
        ("suffix", &c.name_suffix),
    ];
    if name.iter().any(|(_, v)| v.is_some()) {
        m.insert("name".into(), parts(&name));
    }
    if let Some(e) = &c.email {
        m.insert("email".into(), json!(e));
    }
    if let Some(p) = &c.phone {
        m.insert("phone".into(), json!(p));
    }
    let address = [
        ("line1", &c.address_line1),
        ("line2", &c.address_line2),
        ("city", &c.city),
        ("region", &c.region),
        ("postcode", &c.postcode),
        ("country", &c.country),
    ];
    if address.iter().any(|(_, v)| v.is_some()) {
        m.insert("address".into(), parts(&address));
    }
    if let Some(d) = c.date_of_birth {
        m.insert("date_of_birth".into(), json!(d.format("%Y-%m-%d").to_string()));
    }
    m
}

fn parts(fields: &[(&str, &Option<String>)]) -> Value {
    let mut o = Map::new();
    for (k, v) in fields {
        if let Some(v) = v {
            o.insert((*k).to_owned(), json!(v));
        }
    }
    Value::Object(o)
}

/// The document a client may see of `c`.
pub fn customer_doc(c: &CustomerRow, principal: &Principal) -> CustomerDoc {
    let mut attributes = golden_attributes(c);
    principal.scopes.filter(&mut attributes);
    CustomerDoc {
        token: c.token,
        status: c.status.as_str().to_owned(),
        household: c.household,
        version: c.version,
        record_count: c.record_count,
        attributes,
        created_at: c.created_at,
        updated_at: c.updated_at,
        updated_position: c.updated_position,
        rule_set: c.rule_set.clone(),
    }
}

/// 503 for a read-model error; the cause goes to the log only.
pub fn read_failed(error: &dyn std::fmt::Display) -> Response {
    tracing::error!(error = %error, "read model query failed");
    Problem::unavailable("read-model database").into_response()
}

/// `410 Gone` for an erased customer: the erasure notice (no personal data).
pub fn gone(token: Uuid) -> Response {
    Problem::new(
        StatusCode::GONE,
        "Customer erased",
        "the customer was erased at the person's request; nothing of them can be read",
    )
    .field("token")
    .with("token", json!(token))
    .with("status", json!("erased"))
    .into_response()
}

pub(super) fn not_found(what: &'static str, field: &str) -> Response {
    Problem::new(StatusCode::NOT_FOUND, "Not found", format!("no {what} with that id"))
        .field(field)
        .into_response()
}

/// The strong ETag of a customer version.
pub fn etag(version: i64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
}

/// Looks `token` up: the active customer, or the response to give instead
/// (307 to the survivor of a merged token, 404 for an unknown one).
async fn active_customer(state: &AppState, token: Uuid, suffix: &str) -> Result<CustomerRow, Response> {
    match query::customer(&state.read, token).await {
        Err(e) => Err(read_failed(&e)),
        Ok(None) => Err(not_found("customer", "token")),
        Ok(Some(c)) => match (c.status, c.merged_into) {
            (CustomerStatus::Merged, Some(survivor)) => Err(redirect(token, survivor, suffix)),
            (CustomerStatus::Erased, _) => Err(gone(token)),
            _ => Ok(c),
        },
    }
}

fn redirect(token: Uuid, survivor: Uuid, suffix: &str) -> Response {
    let location = format!("/v1/customers/{survivor}{suffix}");
    let mut response = (
        StatusCode::TEMPORARY_REDIRECT,
        Json(json!({"token": token, "status": "merged", "merged_into": survivor})),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

/// The customer of a token.
#[utoipa::path(get, path = "/v1/customers/{token}", tag = "customers",
    params(("token" = Uuid, Path, description = "The customer's token")),
    responses(
        (status = 200, description = "The customer (ETag: its version)", body = CustomerDoc),
        (status = 307, description = "The token was merged: Location names the survivor"),
        (status = 404, description = "No customer has this token", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn get_customer(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    PathParam(token): PathParam<Uuid>,
) -> Response {
    match active_customer(&state, token, "").await {
        Ok(c) => {
            let mut response = Json(customer_doc(&c, &principal)).into_response();
            response.headers_mut().insert(header::ETAG, etag(c.version));
            response
        }
        Err(r) => r,
    }
}

/// The customer a source record belongs to now.
#[utoipa::path(get, path = "/v1/customers/by-source/{system}/{source_id}", tag = "customers",
    params(("system" = String, Path, description = "Source system"), ("source_id" = String, Path, description = "The record's id in that system")),
    responses(
        (status = 200, description = "The customer holding the record now (merges followed to the survivor; ETag: its version)", body = CustomerDoc),
        (status = 404, description = "No customer holds this source record", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "The record's customer was erased", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn get_customer_by_source(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    PathParam((system, source_id)): PathParam<(String, String)>,
) -> Response {
    if state.ingestor.sources().get(&system).is_none() {
        return Problem::unknown_system().into_response();
    }
    let mut token = match query::token_by_source(&state.read, &system, &source_id).await {
        Err(e) => return read_failed(&e),
        Ok(None) => return not_found("customer holding a source record", "source_id"),
        Ok(Some(t)) => t,
    };
    // The record belongs to the survivor of any merge: follow merges here
    // rather than redirect (the client asked for the record's customer, not
    // for a token). Bounded: a chain longer than this is not followed.
    for _ in 0..16 {
        match query::customer(&state.read, token).await {
            Err(e) => return read_failed(&e),
            Ok(None) => return not_found("customer holding a source record", "source_id"),
            Ok(Some(c)) => match (c.status, c.merged_into) {
                (CustomerStatus::Merged, Some(survivor)) => token = survivor,
                (CustomerStatus::Erased, _) => return gone(token),
                _ => {
                    let mut response = Json(customer_doc(&c, &principal)).into_response();
                    response.headers_mut().insert(header::ETAG, etag(c.version));
                    return response;
                }
            },
        }
    }
    // A chain this long is not followed further: answer the redirect.
    match active_customer(&state, token, "").await {
        Ok(c) => {
            let mut response = Json(customer_doc(&c, &principal)).into_response();
            response.headers_mut().insert(header::ETAG, etag(c.version));
            response
        }
        Err(r) => r,
    }
}

/// Search parameters: every given criterion must match.
#[derive(Debug, Deserialize, IntoParams)]
pub struct SearchParams {
    /// A full or partial name (given and family names match in any order).
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub postcode: Option<String>,
    /// The `next` cursor of the previous page.
    pub cursor: Option<String>,
    /// Page size, 1 to 100 (default 20).
    pub limit: Option<usize>,
}

/// A page of customers.
#[derive(Debug, Serialize, ToSchema)]
pub struct CustomerPage {
    pub customers: Vec<CustomerDoc>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next: Option<String>,
}

/// Searches active customers by name, e-mail, phone and postcode.
#[utoipa::path(get, path = "/v1/customers", tag = "customers", params(SearchParams),
    responses(
        (status = 200, description = "A page of matching customers, by token", body = CustomerPage),
        (status = 400, description = "No criterion, an unusable one, or a bad cursor or limit", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn search_customers(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    QueryParams(params): QueryParams<SearchParams>,
) -> Response {
    let limit = match page_limit(params.limit, 20) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let after = match params.cursor.as_deref().map(Uuid::try_parse).transpose() {
        Ok(a) => a,
        Err(_) => return bad_request("the cursor is not one this API gave", "cursor"),
    };
    // A reader may only search by what it may see.
    for (field, given, scope) in [
        ("name", params.name.is_some(), "name"),
        ("email", params.email.is_some(), "email"),
        ("phone", params.phone.is_some(), "phone"),
        ("postcode", params.postcode.is_some(), "address"),
    ] {
        if given && !principal.scopes.allows(scope) {
            return Problem::new(
                StatusCode::FORBIDDEN,
                "Forbidden",
                format!("this client's field scopes do not include `{scope}`"),
            )
            .field(field)
            .into_response();
        }
    }
    let q = query::SearchQuery {
        name: params.name,
        email: params.email,
        phone: params.phone,
        postcode: params.postcode,
    };
    match query::search(&state.read, &q, &state.search_settings, after, limit).await {
        Ok(page) => Json(CustomerPage {
            customers: page.customers.iter().map(|c| customer_doc(c, &principal)).collect(),
            next: page.next.map(|t| t.to_string()),
        })
        .into_response(),
        Err(query::SearchError::Empty) => bad_request("give at least one of name, email, phone or postcode", "name"),
        Err(query::SearchError::Unusable(field)) => bad_request(format!("the {field} given cannot be searched"), field),
        Err(query::SearchError::Db(e)) => read_failed(&e),
    }
}

/// A page size within 1..=PAGE_MAX, or a 400 naming `limit`.
pub fn page_limit(limit: Option<usize>, default: usize) -> Result<usize, Response> {
    match limit {
        None => Ok(default),
        Some(l) if (1..=PAGE_MAX).contains(&l) => Ok(l),
        Some(_) => Err(bad_request(format!("limit must be between 1 and {PAGE_MAX}"), "limit")),
    }
}

/// The stewards' value overrides in force on the customer (set on its
/// token or on one merged into it), oldest first.
#[utoipa::path(get, path = "/v1/customers/{token}/overrides", tag = "customers",
    params(("token" = Uuid, Path, description = "The customer's token")),
    responses(
        (status = 200, description = "The overrides in force of the attributes the client may see", body = Object),
        (status = 307, description = "Merged: Location names the survivor's overrides"),
        (status = 404, description = "Unknown token", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn get_overrides(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    PathParam(token): PathParam<Uuid>,
) -> Response {
    let c = match active_customer(&state, token, "/overrides").await {
        Ok(c) => c,
        Err(r) => return r,
    };
    match query::overrides_of(&state.read, token).await {
        Ok(rows) => {
            let overrides: Vec<Value> = rows
                .iter()
                .filter(|o| principal.scopes.allows(&o.attribute))
                .map(override_doc)
                .collect();
            Json(json!({"token": token, "version": c.version, "overrides": overrides})).into_response()
        }
        Err(e) => read_failed(&e),
    }
}

/// An override as the API shows it (its value as the golden record does).
pub(super) fn override_doc(o: &query::OverrideRow) -> Value {
    let value = serde_json::from_value::<mdm_domain::survivorship::GoldenValue>(o.value.clone())
        .map(|v| mdm_projections::changes::golden_value_json(&v))
        .unwrap_or(Value::Null);
    json!({
        "override_id": o.override_id,
        "set_on": o.token,
        "attribute": o.attribute,
        "value": value,
        "set_by": o.set_by,
        "reason": o.reason,
        "position": o.position,
        "expires_at": o.expires_at,
        "set_at": o.set_at,
    })
}

/// Where each golden value came from: source record, version (log
/// position) and the survivorship rule that chose it.
#[utoipa::path(get, path = "/v1/customers/{token}/lineage", tag = "customers",
    params(("token" = Uuid, Path, description = "The customer's token")),
    responses(
        (status = 200, description = "One entry per golden attribute the client may see", body = Object),
        (status = 307, description = "Merged: Location names the survivor's lineage"),
        (status = 404, description = "Unknown token", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn get_lineage(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    PathParam(token): PathParam<Uuid>,
) -> Response {
    let c = match active_customer(&state, token, "/lineage").await {
        Ok(c) => c,
        Err(r) => return r,
    };
    match query::lineage(&state.read, token).await {
        Ok(rows) => {
            let attributes: Vec<Value> = rows
                .iter()
                .filter(|l| principal.scopes.allows(&l.attribute))
                .map(lineage_doc)
                .collect();
            Json(json!({"token": token, "version": c.version, "attributes": attributes})).into_response()
        }
        Err(e) => read_failed(&e),
    }
}

/// The lineage of one golden value as the API shows it.
pub(super) fn lineage_doc(l: &query::AttributeLineage) -> Value {
    json!({
        "attribute": l.attribute,
        "value": l.value.clone(),
        "record": l.record,
        "system": l.system,
        "source_position": l.source_position,
        "rule": l.rule,
        "rule_set": l.rule_set,
        "overridden_by": l.overridden_by,
    })
}

/// Cursor and size of a page of log-ordered items.
#[derive(Debug, Deserialize, IntoParams)]
pub struct PageParams {
    /// The `next` of the previous page (a log position).
    pub cursor: Option<i64>,
    /// Page size, 1 to 100 (default 50).
    pub limit: Option<usize>,
}

/// Every decision that named the customer: links, merges, splits,
/// not-a-match marks, with actor, reason and the score explanation.
#[utoipa::path(get, path = "/v1/customers/{token}/history", tag = "customers",
    params(("token" = Uuid, Path, description = "The customer's token"), PageParams),
    responses(
        (status = 200, description = "A page of decisions in log order", body = Object),
        (status = 404, description = "Unknown token", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn get_history(
    State(state): State<AppState>,
    PathParam(token): PathParam<Uuid>,
    QueryParams(page): QueryParams<PageParams>,
) -> Response {
    let limit = match page_limit(page.limit, 50) {
        Ok(l) => l,
        Err(r) => return r,
    };
    // History is kept for merged tokens too: no redirect here. An erased
    // customer's is not shown (stewards' reasons are free text).
    match query::customer(&state.read, token).await {
        Err(e) => return read_failed(&e),
        Ok(None) => return not_found("customer", "token"),
        Ok(Some(c)) if c.status == CustomerStatus::Erased => return gone(token),
        Ok(Some(_)) => {}
    }
    match query::history(&state.read, token, page.cursor, limit + 1).await {
        Ok(mut rows) => {
            let next = (rows.len() > limit).then(|| {
                rows.truncate(limit);
                rows.last().map(|r| r.position)
            });
            let items: Vec<Value> = rows.iter().map(history_doc).collect();
            Json(json!({"token": token, "decisions": items, "next": next.flatten()})).into_response()
        }
        Err(e) => read_failed(&e),
    }
}

/// A decision as the history shows it: actor, reason and explanation.
pub(super) fn history_doc(h: &query::HistoryRow) -> Value {
    json!({
        "position": h.position,
        "seq": h.seq,
        "type": h.decision_type,
        "actor": {"kind": h.actor_kind, "id": h.actor},
        "reason": h.reason,
        "rule_set": h.rule_set,
        "record": h.record,
        "other_tokens": h.other_tokens,
        "explanation": h.explanation.clone(),
        "recorded_at": h.recorded_at,
    })
}

/// The customer's source records as their systems sent them (latest
/// version; `?versions=true` adds every earlier one). Needs every field
/// scope: a raw record cannot be cut down to some fields.
#[utoipa::path(get, path = "/v1/customers/{token}/source-records", tag = "customers",
    params(("token" = Uuid, Path, description = "The customer's token"), SourceRecordParams),
    responses(
        (status = 200, description = "The source records, raw payload included", body = Object),
        (status = 403, description = "The client's field scopes are limited", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown token", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn get_source_records(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    PathParam(token): PathParam<Uuid>,
    QueryParams(params): QueryParams<SourceRecordParams>,
) -> Response {
    if !principal.scopes.is_all() {
        return Problem::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "raw source records need every field scope",
        )
        .into_response();
    }
    if let Err(r) = active_customer(&state, token, "/source-records").await {
        return r;
    }
    match source_record_docs(&state, token, params.versions.unwrap_or(false)).await {
        Ok(out) => Json(json!({"token": token, "source_records": out})).into_response(),
        Err(r) => r,
    }
}

/// The source records of the active customer `token` as
/// `/source-records` shows them: each its latest version as received and,
/// with `versions`, every version (raw payload, mapped attributes,
/// position, time) and the customers it belonged to.
pub(super) async fn source_record_docs(state: &AppState, token: Uuid, versions: bool) -> Result<Vec<Value>, Response> {
    let records = query::source_records_of(&state.read, token)
        .await
        .map_err(|e| read_failed(&e))?;
    let mut out = Vec::with_capacity(records.len());
    for r in &records {
        let mut doc = serde_json::to_value(r).unwrap_or(Value::Null);
        if versions {
            let v = query::source_record_versions(&state.read, &r.record)
                .await
                .map_err(|e| read_failed(&e))?;
            doc["versions"] = serde_json::to_value(v).unwrap_or(Value::Null);
            let c = query::source_record_customers(&state.read, &r.record)
                .await
                .map_err(|e| read_failed(&e))?;
            doc["customers"] = serde_json::to_value(c).unwrap_or(Value::Null);
        }
        out.push(doc);
    }
    Ok(out)
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct SourceRecordParams {
    /// Include every earlier version and the customers the record belonged to.
    pub versions: Option<bool>,
}

/// When to look at the customer: a log position or a time.
#[derive(Debug, Deserialize, IntoParams)]
pub struct AsOfParams {
    /// Every event at or before this global log position.
    pub position: Option<u64>,
    /// Every event recorded at or before this time (RFC 3339).
    pub time: Option<String>,
}

/// The customer as it was at a log position or a time, folded from the log.
#[utoipa::path(get, path = "/v1/customers/{token}/as-of", tag = "customers",
    params(("token" = Uuid, Path, description = "The customer's token"), AsOfParams),
    responses(
        (status = 200, description = "Status, members and golden values with lineage as of then", body = Object),
        (status = 400, description = "Neither or both of position and time, or an unreadable time", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No decision had named the token by then", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn get_as_of(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    PathParam(token): PathParam<Uuid>,
    QueryParams(params): QueryParams<AsOfParams>,
) -> Response {
    let at = match (params.position, params.time.as_deref()) {
        (Some(p), None) => AsOf::Position(Position(p)),
        (None, Some(t)) => match DateTime::parse_from_rfc3339(t) {
            Ok(t) => AsOf::Time(t.with_timezone(&Utc)),
            Err(_) => return bad_request("time must be RFC 3339, e.g. 2026-01-31T12:00:00Z", "time"),
        },
        _ => return bad_request("give exactly one of position and time", "position"),
    };
    // Erased for ever: also as of any earlier point.
    match query::customer(&state.read, token).await {
        Err(e) => return read_failed(&e),
        Ok(Some(c)) if c.status == CustomerStatus::Erased => return gone(token),
        Ok(_) => {}
    }
    let result = mdm_projections::as_of::customer_as_of(
        state.store.as_ref(),
        &state.read,
        &state.opener,
        &state.customer_settings,
        token,
        at,
    )
    .await;
    let c = match result {
        Ok(Some(c)) => c,
        Ok(None) => return not_found("customer at that point", "token"),
        Err(e) => return read_failed(&e),
    };
    let (status, merged_into) = match c.status {
        mdm_domain::resolution::membership::TokenStatus::Active => ("active", None),
        mdm_domain::resolution::membership::TokenStatus::MergedInto(s) => ("merged", Some(s)),
        mdm_domain::resolution::membership::TokenStatus::Erased => return gone(token),
    };
    let mut golden = Map::new();
    for s in &c.golden.values {
        let name = s.value.attribute().as_str();
        if principal.scopes.allows(name) {
            golden.insert(name.to_owned(), serde_json::to_value(s).unwrap_or(Value::Null));
        }
    }
    let members: Vec<Value> = c
        .members
        .iter()
        .map(|m| {
            json!({
                "record": m.record,
                "system": m.system,
                "source_id": if principal.scopes.is_all() { json!(m.source_id) } else { Value::Null },
                "state": m.state,
                "position": m.position,
                "recorded_at": m.recorded_at,
            })
        })
        .collect();
    Json(json!({
        "token": c.token,
        "status": status,
        "merged_into": merged_into,
        "rule_set": c.golden.rule_set,
        "attributes": golden,
        "members": members,
    }))
    .into_response()
}

/// The members of a household (a relationship between customers, never a merge).
#[utoipa::path(get, path = "/v1/households/{household}", tag = "customers",
    params(("household" = Uuid, Path, description = "The household id")),
    responses(
        (status = 200, description = "Its member tokens", body = Object),
        (status = 404, description = "No such household", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn get_household(State(state): State<AppState>, PathParam(household): PathParam<Uuid>) -> Response {
    match query::household_members(&state.read, household).await {
        Ok(m) if m.is_empty() => not_found("household", "household"),
        Ok(m) => Json(json!({"household": household, "members": m})).into_response(),
        Err(e) => read_failed(&e),
    }
}

/// Review-queue listing parameters.
#[derive(Debug, Deserialize, IntoParams)]
pub struct ReviewParams {
    /// `open` (default), `closed` or `all`.
    pub state: Option<String>,
    /// The `next` of the previous page.
    pub cursor: Option<i64>,
    /// Page size, 1 to 100 (default 50).
    pub limit: Option<usize>,
}

/// The review queue: items the resolver could not decide alone, with the
/// candidate pair and the score explanation.
#[utoipa::path(get, path = "/v1/reviews", tag = "stewards", params(ReviewParams),
    responses(
        (status = 200, description = "A page of review items, oldest first", body = Object),
        (status = 400, description = "Bad state, cursor or limit", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn list_reviews(State(state): State<AppState>, QueryParams(params): QueryParams<ReviewParams>) -> Response {
    let limit = match page_limit(params.limit, 50) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let filter = match params.state.as_deref().unwrap_or("open") {
        "all" => None,
        s @ ("open" | "closed") => Some(s),
        _ => return bad_request("state must be open, closed or all", "state"),
    };
    match query::reviews(&state.read, filter, params.cursor, limit + 1).await {
        Ok(mut rows) => {
            let next = if rows.len() > limit {
                rows.truncate(limit);
                rows.last().map(|r| r.opened_position)
            } else {
                None
            };
            let claims = state.claims.current().await;
            let items: Vec<Value> = rows.iter().map(|r| review_doc(r, claims.get(&r.review_id))).collect();
            Json(json!({"reviews": items, "next": next})).into_response()
        }
        Err(e) => read_failed(&e),
    }
}

fn review_doc(r: &query::ReviewRow, claim: Option<&super::steward::Claim>) -> Value {
    json!({
        "review_id": r.review_id,
        "record": r.record,
        "token": r.token,
        "candidate": r.candidate,
        "candidate_record": r.candidate_record,
        "total": r.total,
        "explanation": r.explanation.clone(),
        "state": r.state,
        "opened_position": r.opened_position,
        "opened_at": r.opened_at,
        "closed_at": r.closed_at,
        "closed_by": r.closed_by,
        "close_reason": r.close_reason,
        "taken_by": claim.map(|c| c.steward.clone()),
        "taken_until": claim.map(|c| c.until),
    })
}

/// One review item.
#[utoipa::path(get, path = "/v1/reviews/{review_id}", tag = "stewards",
    params(("review_id" = Uuid, Path, description = "The review item")),
    responses(
        (status = 200, description = "The item", body = Object),
        (status = 404, description = "No such item", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn get_review(State(state): State<AppState>, PathParam(review_id): PathParam<Uuid>) -> Response {
    match query::review(&state.read, review_id).await {
        Ok(Some(r)) => {
            let claims = state.claims.current().await;
            Json(review_doc(&r, claims.get(&r.review_id))).into_response()
        }
        Ok(None) => not_found("review item", "review_id"),
        Err(e) => read_failed(&e),
    }
}

/// Whether a header map's `If-Match` parses, for handlers.
pub fn if_match(headers: &HeaderMap) -> Result<Option<u64>, Response> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = v.to_str().unwrap_or("").trim();
    let text = text.strip_prefix("W/").unwrap_or(text);
    text.trim_matches('"')
        .parse::<u64>()
        .map(Some)
        .map_err(|_| bad_request("If-Match must be the customer's ETag, e.g. \"3\"", "If-Match"))
}
