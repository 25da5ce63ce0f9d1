//! Steward commands: merge, split (unmerge), not-a-match, force-link,
//! value overrides and review decisions. Each needs a reason, runs through the single-writer
//! resolver (which checks it against the current state and appends its
//! decisions atomically) and honours `If-Match`: when the customer named in
//! the path is no longer at that version the answer is 412 and nothing is
//! applied. The answer carries the customer's new version as its `ETag`.

// Helpers return the response to answer instead as their error: it is
// built once, on the failure path, and handed straight back to axum.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use mdm_domain::matching::normalize;
use mdm_domain::resolution::engine::{CommandError, CommandRequest, StewardCommand};
use mdm_domain::resolution::events::{ReviewOutcome, SealedValue};
use mdm_domain::source::PostalAddress;
use mdm_domain::survivorship::{GoldenAttribute, GoldenValue};
use mdm_store::keys::SubjectKey;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Mutex;
use utoipa::ToSchema;
use uuid::Uuid;

use super::customers::{bad_request, etag, if_match, read_failed};
use super::problem::{PathParam, Problem};
use super::AppState;
use crate::auth::Principal;

/// How long a steward's claim on a review item lasts.
pub const CLAIM_TTL: chrono::TimeDelta = chrono::TimeDelta::minutes(15);

/// A source record as its system names it.
#[derive(Debug, Deserialize, ToSchema)]
pub struct SourceRef {
    pub system: String,
    pub source_id: String,
}

/// Merge another customer into this one.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MergeBody {
    /// The customer absorbed: its token will redirect here.
    pub absorbed: Uuid,
    /// The absorbed customer's version, if the steward saw one.
    pub absorbed_version: Option<u64>,
    /// Why (mandatory, kept in the decision history).
    pub reason: String,
}

/// Take a source record out of this customer.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SplitBody {
    pub record: SourceRef,
    /// The customer to move it into; absent: its own (its old token back if
    /// it had one, else a new one).
    pub into: Option<Uuid>,
    pub reason: String,
}

/// Two source records are different people.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NotAMatchBody {
    pub records: [SourceRef; 2],
    pub reason: String,
}

/// Put a source record into this customer whatever its score.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForceLinkBody {
    pub record: SourceRef,
    pub reason: String,
}

/// Close a review item.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviewDecisionBody {
    /// `linked`, `kept_apart` or `skipped`.
    #[schema(value_type = String)]
    pub outcome: ReviewOutcome,
    pub reason: String,
}

/// Set a golden value by hand. Exactly one of `expires_at` and `permanent`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OverrideBody {
    /// `name`, `email`, `phone`, `address` or `date_of_birth`.
    pub attribute: String,
    /// The value, in the shape the customer record shows it: a string for
    /// `email`, `phone` and `date_of_birth` (`YYYY-MM-DD`), an object of
    /// parts for `name` (`given`, `middle`, `family`, `suffix`) and `address`
    /// (`line1`, `line2`, `city`, `region`, `postcode`, `country`).
    #[schema(value_type = Object)]
    pub value: serde_json::Value,
    /// When the override stops applying (RFC 3339, in the future).
    pub expires_at: Option<DateTime<Utc>>,
    /// `true`: it applies until a steward removes it.
    pub permanent: Option<bool>,
    pub reason: String,
}

/// Withdraw an override.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveOverrideBody {
    pub reason: String,
}

/// What a command did.
#[derive(Debug, Serialize, ToSchema)]
pub struct CommandResult {
    pub command_id: Uuid,
    /// The override set (value overrides only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub override_id: Option<Uuid>,
    /// The decisions appended, in order (their event types).
    pub decisions: Vec<String>,
    /// Each named customer's version after the command.
    #[schema(value_type = Object)]
    pub versions: HashMap<Uuid, u64>,
}

/// Parses a JSON body, naming the field at fault.
pub(super) fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, Response> {
    super::problem::json_body(bytes)
}

fn reason(text: &str) -> Result<String, Response> {
    let t = text.trim();
    if t.is_empty() {
        return Err(bad_request("a reason is required", "reason"));
    }
    if t.chars().count() > 2000 {
        return Err(bad_request("the reason is longer than 2,000 characters", "reason"));
    }
    Ok(t.to_owned())
}

/// Runs a command through the resolver and answers with the result.
async fn run(
    state: &AppState,
    principal: &Principal,
    path_token: Option<Uuid>,
    expected: Vec<(Uuid, u64)>,
    reason: String,
    command: StewardCommand,
) -> Response {
    let Some(resolver) = state.resolver() else {
        return Problem::unavailable("resolver").into_response();
    };
    let request = CommandRequest {
        command_id: Uuid::now_v7(),
        steward: principal.name.clone(),
        reason,
        expected,
        command,
    };
    let command_id = request.command_id;
    let applied = match resolver.command(request).await {
        Err(error) => {
            tracing::error!(error = %error, "steward command: resolver unavailable");
            return Problem::unavailable("resolver").into_response();
        }
        Ok(Err(e)) => return command_problem(&e),
        Ok(Ok(applied)) => applied,
    };
    // The versions the command produced, read inside the resolver's task:
    // the ETag must never be a later version the client has not seen.
    let versions = applied.versions;
    let decided = applied.decisions;
    tracing::info!(command_id = %command_id, decisions = decided.len(), "steward command applied");
    let mut response = Json(CommandResult {
        command_id,
        override_id: decided.iter().find_map(|d| match &d.decision {
            mdm_domain::resolution::events::Decision::ValueOverridden { override_id, .. } => Some(*override_id),
            _ => None,
        }),
        decisions: decided.iter().map(|d| d.decision.event_type().to_owned()).collect(),
        versions: versions.clone(),
    })
    .into_response();
    if let Some(v) = path_token.and_then(|t| versions.get(&t)) {
        response.headers_mut().insert(header::ETAG, etag(*v as i64));
    }
    response
}

pub(super) fn command_problem(e: &CommandError) -> Response {
    match e {
        CommandError::UnknownToken(_) => {
            Problem::new(StatusCode::NOT_FOUND, "Not found", "no customer with that token")
                .field("token")
                .into_response()
        }
        CommandError::UnknownRecord => Problem::new(
            StatusCode::NOT_FOUND,
            "Not found",
            "the source record is unknown or has no customer",
        )
        .field("record")
        .into_response(),
        CommandError::Merged { into, .. } => Problem::new(
            StatusCode::CONFLICT,
            "Customer merged",
            "the customer was merged into another; act on the survivor",
        )
        .field("token")
        .with("merged_into", json!(into))
        .into_response(),
        CommandError::VersionMismatch { token, actual, .. } => Problem::new(
            StatusCode::PRECONDITION_FAILED,
            "Precondition failed",
            "the customer changed since it was read; nothing was applied",
        )
        .field("If-Match")
        .with("token", json!(token))
        .with("current_version", json!(actual))
        .into_response(),
        CommandError::UnknownReview(_) => Problem::new(
            StatusCode::CONFLICT,
            "Review item not open",
            "the review item is unknown or closed already",
        )
        .field("review_id")
        .into_response(),
        CommandError::Invalid(why) => {
            Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "Command not applicable", *why).into_response()
        }
        CommandError::ReasonRequired => bad_request("a reason is required", "reason"),
        CommandError::Erased(token) => super::customers::gone(*token),
        CommandError::NotInCustomer(_) => Problem::new(
            StatusCode::CONFLICT,
            "Not in this customer",
            "the source record is not (or no longer) in this customer; nothing was applied",
        )
        .field("record")
        .into_response(),
        CommandError::Conflict(why) => Problem::new(StatusCode::CONFLICT, "Conflict", *why)
            .field("record")
            .into_response(),
        CommandError::UnknownOverride(_) => Problem::new(
            StatusCode::NOT_FOUND,
            "Not found",
            "no override with that id is in force on this customer",
        )
        .field("override_id")
        .into_response(),
    }
}

fn expected(token: Uuid, headers: &HeaderMap) -> Result<Vec<(Uuid, u64)>, Response> {
    Ok(if_match(headers)?.map(|v| vec![(token, v)]).unwrap_or_default())
}

/// The stream a source record is held under now (following a release of
/// a record re-sent after its person's erasure to its successor).
pub(super) async fn record_stream(state: &AppState, r: &SourceRef, field: &str) -> Result<String, Response> {
    if state.ingestor.sources().get(&r.system).is_none() {
        return Err(Problem::unknown_system()
            .field(format!("{field}.system"))
            .into_response());
    }
    if r.source_id.is_empty() {
        return Err(bad_request("source_id is empty", &format!("{field}.source_id")));
    }
    state
        .ingestor
        .current_stream(&r.system, &r.source_id)
        .await
        .map_err(|error| {
            tracing::warn!(error = %error, "the record's stream could not be followed");
            Problem::unavailable("event store").into_response()
        })
}

/// Merges `absorbed` into this customer.
#[utoipa::path(post, path = "/v1/customers/{token}/merge", tag = "stewards",
    params(("token" = Uuid, Path, description = "The surviving customer"),
           ("If-Match" = Option<String>, Header, description = "The survivor's ETag")),
    request_body = MergeBody,
    responses(
        (status = 200, description = "Merged", body = CommandResult),
        (status = 400, description = "Bad body or If-Match", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown token", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A customer was merged away already", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "Stale If-Match: nothing applied", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not applicable (e.g. a customer into itself)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn merge(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    PathParam(token): PathParam<Uuid>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    let b: MergeBody = try_or!(body(&bytes));
    let reason = try_or!(reason(&b.reason));
    let mut exp = try_or!(expected(token, &headers));
    if let Some(v) = b.absorbed_version {
        exp.push((b.absorbed, v));
    }
    let command = StewardCommand::Merge {
        survivor: token,
        absorbed: b.absorbed,
    };
    run(&state, &principal, Some(token), exp, reason, command).await
}

/// Splits a source record off this customer (unmerge).
#[utoipa::path(post, path = "/v1/customers/{token}/split", tag = "stewards",
    params(("token" = Uuid, Path, description = "The customer the record is in now"),
           ("If-Match" = Option<String>, Header, description = "The customer's ETag")),
    request_body = SplitBody,
    responses(
        (status = 200, description = "Split", body = CommandResult),
        (status = 400, description = "Bad body or If-Match", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown token or record", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The record is not (or no longer) in this customer, or is its only record; or the customer was merged away", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "Stale If-Match: nothing applied", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn split(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    PathParam(token): PathParam<Uuid>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    let b: SplitBody = try_or!(body(&bytes));
    let reason = try_or!(reason(&b.reason));
    let record = try_or!(record_stream(&state, &b.record, "record").await);
    let exp = try_or!(expected(token, &headers));
    // The resolver checks that the record is in this customer when it
    // applies the split (409 otherwise): a check here would race with
    // other commands.
    run(
        &state,
        &principal,
        Some(token),
        exp,
        reason,
        StewardCommand::Split {
            record,
            from: Some(token),
            into: b.into,
        },
    )
    .await
}

/// Marks two source records of this customer (or of it and another) as
/// different people; splits them apart if they are together.
#[utoipa::path(post, path = "/v1/customers/{token}/not-a-match", tag = "stewards",
    params(("token" = Uuid, Path, description = "The customer of the first record"),
           ("If-Match" = Option<String>, Header, description = "The customer's ETag")),
    request_body = NotAMatchBody,
    responses(
        (status = 200, description = "Marked (and split when together)", body = CommandResult),
        (status = 400, description = "Bad body or If-Match", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown token or record", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "Stale If-Match: nothing applied", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not applicable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn not_a_match(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    PathParam(token): PathParam<Uuid>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    let b: NotAMatchBody = try_or!(body(&bytes));
    let reason = try_or!(reason(&b.reason));
    let a = try_or!(record_stream(&state, &b.records[0], "records[0]").await);
    let c = try_or!(record_stream(&state, &b.records[1], "records[1]").await);
    let exp = try_or!(expected(token, &headers));
    run(
        &state,
        &principal,
        Some(token),
        exp,
        reason,
        StewardCommand::NotAMatch { records: [a, c] },
    )
    .await
}

/// Links a source record into this customer whatever its score.
#[utoipa::path(post, path = "/v1/customers/{token}/force-link", tag = "stewards",
    params(("token" = Uuid, Path, description = "The customer to link into"),
           ("If-Match" = Option<String>, Header, description = "The customer's ETag")),
    request_body = ForceLinkBody,
    responses(
        (status = 200, description = "Linked", body = CommandResult),
        (status = 400, description = "Bad body or If-Match", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown token or record", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The record is already there, or the customer was merged away", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "Stale If-Match: nothing applied", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn force_link(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    PathParam(token): PathParam<Uuid>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    let b: ForceLinkBody = try_or!(body(&bytes));
    let reason = try_or!(reason(&b.reason));
    let record = try_or!(record_stream(&state, &b.record, "record").await);
    let exp = try_or!(expected(token, &headers));
    run(
        &state,
        &principal,
        Some(token),
        exp,
        reason,
        StewardCommand::ForceLink { record, token },
    )
    .await
}

/// The longest text accepted in one part of an override value.
const MAX_PART_CHARS: usize = 200;

/// Reads an override value of `attribute` from the body, naming the part at
/// fault (never quoting it).
fn golden_value(
    state: &AppState,
    attribute: GoldenAttribute,
    value: &serde_json::Value,
) -> Result<GoldenValue, Response> {
    let text = |v: &serde_json::Value, field: &str| -> Result<String, Response> {
        let Some(t) = v.as_str() else {
            return Err(bad_request("a text value is expected", field));
        };
        let t = t.trim();
        if t.is_empty() {
            return Err(bad_request("the value is empty", field));
        }
        if t.chars().count() > MAX_PART_CHARS {
            return Err(bad_request("the value is longer than 200 characters", field));
        }
        Ok(t.to_owned())
    };
    let parts = |names: &[&str]| -> Result<Vec<Option<String>>, Response> {
        let Some(object) = value.as_object() else {
            return Err(bad_request("an object of parts is expected", "value"));
        };
        if let Some(unknown) = object.keys().find(|k| !names.contains(&k.as_str())) {
            return Err(bad_request("an unknown part was sent", &format!("value.{unknown}")));
        }
        let out = names
            .iter()
            .map(|n| match object.get(*n) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(v) => text(v, &format!("value.{n}")).map(Some),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if out.iter().all(Option::is_none) {
            return Err(bad_request("at least one part is required", "value"));
        }
        Ok(out)
    };
    Ok(match attribute {
        GoldenAttribute::Email => {
            let email = text(value, "value")?;
            if normalize::email(&email).is_none() {
                return Err(bad_request("not an e-mail address", "value"));
            }
            GoldenValue::Email { email }
        }
        GoldenAttribute::Phone => {
            let number = text(value, "value")?;
            if normalize::phone(&number, &state.search_settings.default_phone_region).is_none() {
                return Err(bad_request("not a valid phone number", "value"));
            }
            GoldenValue::Phone { number }
        }
        GoldenAttribute::DateOfBirth => {
            let date = chrono::NaiveDate::parse_from_str(&text(value, "value")?, "%Y-%m-%d")
                .map_err(|_| bad_request("a date as YYYY-MM-DD is expected", "value"))?;
            if date > Utc::now().date_naive() {
                return Err(bad_request("the date is in the future", "value"));
            }
            GoldenValue::DateOfBirth { date }
        }
        GoldenAttribute::Name => {
            let mut p = parts(&["given", "middle", "family", "suffix"])?.into_iter();
            GoldenValue::Name {
                given: p.next().flatten(),
                middle: p.next().flatten(),
                family: p.next().flatten(),
                suffix: p.next().flatten(),
            }
        }
        GoldenAttribute::Address => {
            let mut p = parts(&["line1", "line2", "city", "region", "postcode", "country"])?.into_iter();
            GoldenValue::Address {
                address: PostalAddress {
                    line1: p.next().flatten(),
                    line2: p.next().flatten(),
                    city: p.next().flatten(),
                    region: p.next().flatten(),
                    postcode: p.next().flatten(),
                    country: p.next().flatten(),
                },
            }
        }
    })
}

/// Sets a golden value by hand: it wins over every source record until it
/// expires or is removed. The value is sealed under a data key of its own
/// before it reaches the log, so erasure can destroy it.
#[utoipa::path(post, path = "/v1/customers/{token}/overrides", tag = "stewards",
    params(("token" = Uuid, Path, description = "The customer"),
           ("If-Match" = Option<String>, Header, description = "The customer's ETag")),
    request_body = OverrideBody,
    responses(
        (status = 200, description = "Overridden (`override_id` names it)", body = CommandResult),
        (status = 400, description = "Bad body, value or If-Match", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown token", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The customer was merged away", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "Stale If-Match: nothing applied", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn set_override(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    PathParam(token): PathParam<Uuid>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    let b: OverrideBody = try_or!(body(&bytes));
    let Some(attribute) = GoldenAttribute::parse(&b.attribute) else {
        return bad_request(
            "one of name, email, phone, address, date_of_birth is expected",
            "attribute",
        );
    };
    let value = try_or!(golden_value(&state, attribute, &b.value));
    let expires_at = match (b.expires_at, b.permanent) {
        (Some(at), None | Some(false)) if at > Utc::now() => Some(at),
        (Some(_), None | Some(false)) => return bad_request("the expiry is not in the future", "expires_at"),
        (None, Some(true)) => None,
        (Some(_), Some(true)) => return bad_request("an override is either permanent or expires", "permanent"),
        (None, _) => {
            return bad_request(
                "give expires_at, or permanent: true for an override until removed",
                "expires_at",
            )
        }
    };
    let reason = try_or!(reason(&b.reason));
    let exp = try_or!(expected(token, &headers));
    let override_id = Uuid::now_v7();
    let subject = SealedValue::subject(override_id);
    let keys = state.ingestor.keys();
    let (key_id, key) = match keys.get_or_create(std::slice::from_ref(&subject)).await {
        Ok(found) => match found.into_iter().next().map(|l| l.key) {
            Some(SubjectKey::Active { key_id, key }) => (key_id, key),
            _ => return Problem::unavailable("key store").into_response(),
        },
        Err(error) => {
            tracing::error!(error = %error, "override: key store unavailable");
            return Problem::unavailable("key store").into_response();
        }
    };
    let sealed = match mdm_commands::ingest::seal(&key, &subject, &value) {
        Ok(s) => s,
        Err(_) => return Problem::unavailable("key store").into_response(),
    };
    let command = StewardCommand::Override {
        token,
        override_id,
        attribute: attribute.as_str().to_owned(),
        expires_at,
        value: SealedValue { key_id, sealed },
    };
    let response = run(&state, &principal, Some(token), exp, reason, command).await;
    if !response.status().is_success() {
        // Nothing refers to the sealed value: its key goes at once.
        if let Err(error) = keys.destroy(&[key_id]).await {
            tracing::warn!(error = %error, "override refused: its unused key stays until erasure");
        }
    }
    response
}

/// Withdraws an override in force on this customer (the golden value goes
/// back to what survivorship chooses from the records).
#[utoipa::path(post, path = "/v1/customers/{token}/overrides/{override_id}/remove", tag = "stewards",
    params(("token" = Uuid, Path, description = "The customer"),
           ("override_id" = Uuid, Path, description = "The override"),
           ("If-Match" = Option<String>, Header, description = "The customer's ETag")),
    request_body = RemoveOverrideBody,
    responses(
        (status = 200, description = "Removed", body = CommandResult),
        (status = 400, description = "Bad body or If-Match", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown token, or no such override in force on it", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The customer was merged away", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "Stale If-Match: nothing applied", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn remove_override(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    PathParam((token, override_id)): PathParam<(Uuid, Uuid)>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    let b: RemoveOverrideBody = try_or!(body(&bytes));
    let reason = try_or!(reason(&b.reason));
    let exp = try_or!(expected(token, &headers));
    run(
        &state,
        &principal,
        Some(token),
        exp,
        reason,
        StewardCommand::RemoveOverride { token, override_id },
    )
    .await
}

/// A steward's claim on a review item.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Claim {
    pub review_id: Uuid,
    pub steward: String,
    pub until: DateTime<Utc>,
}

/// Claims on review items, held by this process (a claim is a courtesy
/// between stewards, not a lock: deciding an item does not need one).
#[derive(Clone, Debug, Default)]
pub struct Claims(Arc<Mutex<HashMap<Uuid, Claim>>>);

impl Claims {
    /// The claims that have not expired.
    pub async fn current(&self) -> HashMap<Uuid, Claim> {
        let mut m = self.0.lock().await;
        let now = Utc::now();
        m.retain(|_, c| c.until > now);
        m.clone()
    }
}

/// Takes a review item for `CLAIM_TTL` (15 minutes): others see who works it.
#[utoipa::path(post, path = "/v1/reviews/{review_id}/take", tag = "stewards",
    params(("review_id" = Uuid, Path, description = "The review item")),
    responses(
        (status = 200, description = "Taken (or renewed)", body = Claim),
        (status = 404, description = "No such item", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Closed, or taken by another steward", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn take_review(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    PathParam(review_id): PathParam<Uuid>,
) -> Response {
    match mdm_projections::query::review(&state.read, review_id).await {
        Err(e) => return read_failed(&e),
        Ok(None) => {
            return Problem::new(StatusCode::NOT_FOUND, "Not found", "no review item with that id")
                .field("review_id")
                .into_response()
        }
        Ok(Some(r)) if r.state != "open" => {
            return Problem::new(StatusCode::CONFLICT, "Review item not open", "the item is closed")
                .field("review_id")
                .into_response()
        }
        Ok(Some(_)) => {}
    }
    let mut claims = state.claims.0.lock().await;
    let now = Utc::now();
    if let Some(c) = claims.get(&review_id) {
        if c.until > now && c.steward != principal.name {
            return Problem::new(StatusCode::CONFLICT, "Taken", "another steward works this item")
                .field("review_id")
                .with("taken_until", json!(c.until))
                .into_response();
        }
    }
    let claim = Claim {
        review_id,
        steward: principal.name.clone(),
        until: now + CLAIM_TTL,
    };
    claims.insert(review_id, claim.clone());
    Json(claim).into_response()
}

/// Decides a review item: link the pair, keep it apart (not-a-match), or skip.
#[utoipa::path(post, path = "/v1/reviews/{review_id}/decision", tag = "stewards",
    params(("review_id" = Uuid, Path, description = "The review item")),
    request_body = ReviewDecisionBody,
    responses(
        (status = 200, description = "Decided", body = CommandResult),
        (status = 400, description = "Bad body", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Closed already, or taken by another steward", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn decide_review(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    PathParam(review_id): PathParam<Uuid>,
    bytes: Bytes,
) -> Response {
    let b: ReviewDecisionBody = try_or!(body(&bytes));
    let reason = try_or!(reason(&b.reason));
    if let Some(c) = state.claims.current().await.get(&review_id) {
        if c.steward != principal.name {
            return Problem::new(StatusCode::CONFLICT, "Taken", "another steward works this item")
                .field("review_id")
                .into_response();
        }
    }
    let response = run(
        &state,
        &principal,
        None,
        Vec::new(),
        reason,
        StewardCommand::CloseReview {
            review_id,
            outcome: b.outcome,
        },
    )
    .await;
    if response.status().is_success() {
        state.claims.0.lock().await.remove(&review_id);
    }
    response
}
