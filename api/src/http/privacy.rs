//! The privacy request ledger's API (`/v1/privacy/requests`), for the
//! `compliance` role: receive a request, verify the requester, extend the
//! due date once, complete or deny it, record notices to recipients and
//! their acknowledgements, list and read requests.
//!
//! Commands run through `crate::privacy`: they fold the request's stream,
//! let the domain decide and append at the version read, and answer with
//! the request as folded after the command (current, whatever the read
//! model's lag). Lists come from the read model (`privacy_request`),
//! which follows the log within moments; `overdue` is computed at the
//! time of the question. A request the read model does not hold yet is
//! read from its stream. Problems name the field at fault, never a value.

// Helpers return the response to answer instead as their error: it is
// built once, on the failure path, and handed straight back to axum.
#![allow(clippy::result_large_err)]

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::Utc;
use mdm_domain::metadata::Actor;
use mdm_domain::privacy::{LedgerError, Recipient, RequestKind, Status};
use mdm_projections::ledger_query::{self, LedgerCursor, LedgerFilter};
use mdm_store::{AppendError, ReadError};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::problem::{bad_request, json_body as body, PathParam, Problem, QueryParams};
use super::AppState;
use crate::auth::Principal;
use crate::privacy::{self as ledger, Caller, Command, HoldCommandError, HoldDoc, PrivacyError, RequestDoc};
use mdm_domain::privacy::hold::{HoldDecision, HoldError, HoldEvent};

/// The ledger's routes, documented; serve them behind authentication with
/// the `Compliance` need.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_requests, create_request))
        .routes(routes!(get_request))
        .routes(routes!(verify_request))
        .routes(routes!(extend_request))
        .routes(routes!(complete_request))
        .routes(routes!(deny_request))
        .routes(routes!(notify_recipient))
        .routes(routes!(acknowledge_notice))
        .routes(routes!(list_holds))
        .routes(routes!(decide_hold))
}

/// The largest page a list answers.
pub const PAGE_MAX: usize = 100;

/// A new request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRequestBody {
    /// `erasure` or `right_to_know`.
    #[schema(value_type = String)]
    pub kind: RequestKind,
    /// The customer the request is about, when known.
    pub token: Option<Uuid>,
}

/// The requester's identity was verified.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyBody {
    /// How (e.g. "signed-in account", "call-back to the number on file");
    /// no personal data.
    pub method: String,
}

/// Move the due date 45 days later (once).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtendBody {
    pub reason: String,
}

/// The request was answered.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteBody {
    /// What was done (e.g. "erased 5 source records").
    pub outcome: String,
}

/// The request is refused.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DenyBody {
    /// The basis of the denial (e.g. "identity could not be verified").
    pub basis: String,
}

/// A recipient of a notice.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecipientBody {
    /// `feed_subscriber`, `webhook` or `source_system`.
    pub kind: String,
    /// The API client's name, the webhook subscriber's id (a UUID) or the
    /// source system's name.
    pub id: String,
}

/// A notice sent, or its acknowledgement.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NoticeBody {
    pub recipient: RecipientBody,
}

/// List parameters (all optional).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// `open`, `completed` or `denied`.
    pub status: Option<String>,
    /// `erasure` or `right_to_know`.
    pub kind: Option<String>,
    /// `true`: only requests open past their due date now; `false`: only
    /// those that are not.
    pub overdue: Option<String>,
    /// Page size, 1 to 100 (default 50).
    pub limit: Option<String>,
    /// The `next` of the previous page.
    pub cursor: Option<String>,
}

/// A page of requests, oldest receipt first.
#[derive(Debug, Serialize, ToSchema)]
pub struct RequestPage {
    pub requests: Vec<RequestDoc>,
    /// The `cursor` of the next page, when there is one.
    pub next: Option<String>,
}

fn caller(p: &Principal) -> Caller {
    Caller {
        actor: Actor::Client(p.client_id.to_string()),
        by: p.name.clone(),
    }
}

fn recipient(b: &RecipientBody) -> Result<Recipient, Response> {
    ledger::parse_recipient(&b.kind, &b.id).map_err(|(part, detail)| bad_request(detail, &format!("recipient.{part}")))
}

fn internal(detail: &'static str) -> Response {
    Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal error", detail).into_response()
}

/// The problem for a command that was not applied.
pub(super) fn failed(e: PrivacyError) -> Response {
    let conflict = |title: &'static str, detail: String, field: &str| {
        Problem::new(StatusCode::CONFLICT, title, detail)
            .field(field)
            .into_response()
    };
    let unprocessable = |detail: String, field: &str| {
        Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "Command not applicable", detail)
            .field(field)
            .into_response()
    };
    match e {
        PrivacyError::Unknown => Problem::new(StatusCode::NOT_FOUND, "Not found", "no privacy request with that id")
            .field("request_id")
            .into_response(),
        PrivacyError::Refused(r) => {
            let detail = r.to_string();
            match r {
                LedgerError::Closed => conflict("Request closed", detail, "request_id"),
                LedgerError::ExtendedAlready => conflict("Extended already", detail, "request_id"),
                LedgerError::VerifiedAlready => conflict("Verified already", detail, "request_id"),
                LedgerError::AcknowledgedAlready => conflict("Acknowledged already", detail, "recipient"),
                LedgerError::NotVerified => unprocessable(detail, "request_id"),
                LedgerError::NotNotified => unprocessable(detail, "recipient"),
                LedgerError::Required(field) => bad_request(detail, field),
                LedgerError::NotReceived => {
                    tracing::error!(error = %r, "privacy request stream does not fold");
                    internal("the request's events do not fold; see the service log")
                }
            }
        }
        PrivacyError::Invalid { field, detail } => bad_request(detail, field),
        PrivacyError::Conflict => conflict(
            "Conflict",
            "the request changed while this command was decided; nothing was applied: read it and retry".into(),
            "request_id",
        ),
        PrivacyError::Append(AppendError::Unavailable(error)) | PrivacyError::Read(ReadError::Unavailable(error)) => {
            tracing::warn!(error = %error, "privacy command: event store unavailable");
            Problem::unavailable("event store").into_response()
        }
        e @ (PrivacyError::Append(_) | PrivacyError::Read(_) | PrivacyError::Corrupt(..)) => {
            tracing::error!(error = %e, "privacy command failed");
            internal("the command failed; nothing is known to be applied (see the service log)")
        }
    }
}

/// Whether the ledger projection has created its tables (an error asking
/// counts as yes, so a real failure is reported as one).
async fn ledger_tables_exist(state: &AppState) -> bool {
    state.read.table_exists("privacy_request").await.unwrap_or(true)
}

fn read_failed(error: &dyn std::fmt::Display) -> Response {
    tracing::error!(error = %error, "privacy ledger read failed");
    Problem::unavailable("read-model database").into_response()
}

/// Runs a command and answers with the request after it.
async fn command(state: &AppState, principal: &Principal, request_id: Uuid, command: Command) -> Response {
    let now = Utc::now();
    match ledger::run(state.store.as_ref(), request_id, &command, &caller(principal), now).await {
        Ok(r) => Json(RequestDoc::of_request(&r, now)).into_response(),
        Err(e) => failed(e),
    }
}

/// Enters a privacy request received now. Its due date is 45 days later.
#[utoipa::path(post, path = "/v1/privacy/requests", tag = "privacy",
    request_body = NewRequestBody,
    responses(
        (status = 201, description = "Received; Location names it", body = RequestDoc),
        (status = 400, description = "Bad body (the field is named)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn create_request(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    bytes: Bytes,
) -> Response {
    let b: NewRequestBody = try_or!(body(&bytes));
    let now = Utc::now();
    match ledger::receive(state.store.as_ref(), b.kind, b.token, &caller(&principal), now).await {
        Ok(r) => {
            tracing::info!(request_id = %r.request_id, kind = r.kind.as_str(), "privacy request received");
            let location = HeaderValue::from_str(&format!("/v1/privacy/requests/{}", r.request_id))
                .unwrap_or_else(|_| HeaderValue::from_static("/v1/privacy/requests"));
            (
                StatusCode::CREATED,
                [(header::LOCATION, location)],
                Json(RequestDoc::of_request(&r, now)),
            )
                .into_response()
        }
        Err(e) => failed(e),
    }
}

/// Lists requests from the read model, oldest receipt first, with their
/// due dates and whether they are overdue now.
#[utoipa::path(get, path = "/v1/privacy/requests", tag = "privacy", params(ListParams),
    responses(
        (status = 200, description = "A page of requests", body = RequestPage),
        (status = 400, description = "Bad status, kind, overdue, limit or cursor", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn list_requests(State(state): State<AppState>, QueryParams(params): QueryParams<ListParams>) -> Response {
    let p = params;
    let status = match p.status.as_deref() {
        None => None,
        Some("open") => Some(Status::Open),
        Some("completed") => Some(Status::Completed),
        Some("denied") => Some(Status::Denied),
        Some(_) => return bad_request("status must be open, completed or denied", "status"),
    };
    let kind = match p.kind.as_deref() {
        None => None,
        Some("erasure") => Some(RequestKind::Erasure),
        Some("right_to_know") => Some(RequestKind::RightToKnow),
        Some(_) => return bad_request("kind must be erasure or right_to_know", "kind"),
    };
    let overdue = match p.overdue.as_deref() {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => return bad_request("overdue must be true or false", "overdue"),
    };
    let limit = match p.limit.as_deref().map(str::parse::<usize>) {
        None => 50,
        Some(Ok(l)) if (1..=PAGE_MAX).contains(&l) => l,
        Some(_) => return bad_request(format!("limit must be between 1 and {PAGE_MAX}"), "limit"),
    };
    let after = match p.cursor.as_deref().map(str::parse::<LedgerCursor>) {
        None => None,
        Some(Ok(c)) => Some(c),
        Some(Err(why)) => return bad_request(why, "cursor"),
    };
    let filter = LedgerFilter {
        status,
        kind,
        overdue,
        after,
    };
    let now = Utc::now();
    match ledger_query::privacy_requests(&state.read, &filter, now, limit + 1).await {
        Ok(mut rows) => {
            let next = if rows.len() > limit {
                rows.truncate(limit);
                rows.last().map(|r| r.cursor().to_string())
            } else {
                None
            };
            let requests = rows.iter().map(|r| RequestDoc::of_row(r, None, now)).collect();
            Json(RequestPage { requests, next }).into_response()
        }
        // The projection creates its tables when it first runs: until then
        // the ledger is empty, not broken.
        Err(_) if !ledger_tables_exist(&state).await => Json(RequestPage {
            requests: Vec::new(),
            next: None,
        })
        .into_response(),
        Err(e) => read_failed(&e),
    }
}

/// One request with its notices.
#[utoipa::path(get, path = "/v1/privacy/requests/{request_id}", tag = "privacy",
    params(("request_id" = Uuid, Path, description = "The request")),
    responses(
        (status = 200, description = "The request and its notices", body = RequestDoc),
        (status = 404, description = "No such request", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn get_request(State(state): State<AppState>, PathParam(request_id): PathParam<Uuid>) -> Response {
    let now = Utc::now();
    match ledger_query::privacy_request(&state.read, request_id).await {
        Ok(Some((row, notices))) => {
            let mut doc = RequestDoc::of_row(&row, Some(&notices), now);
            match ledger_query::privacy_holds_of(&state.read, request_id).await {
                Ok(holds) => doc.holds = Some(holds.iter().map(HoldDoc::of_row).collect()),
                Err(e) => return read_failed(&e),
            }
            return Json(doc).into_response();
        }
        Ok(None) => {}
        Err(_) if !ledger_tables_exist(&state).await => {}
        Err(e) => return read_failed(&e),
    }
    // Not projected yet (or unknown): the stream has the last word.
    match ledger::load(state.store.as_ref(), request_id).await {
        Ok(Some((r, _))) => Json(RequestDoc::of_request(&r, now)).into_response(),
        Ok(None) => failed(PrivacyError::Unknown),
        Err(e) => failed(e),
    }
}

/// Records that the requester's identity was verified, and how.
#[utoipa::path(post, path = "/v1/privacy/requests/{request_id}/verify", tag = "privacy",
    params(("request_id" = Uuid, Path, description = "The request")),
    request_body = VerifyBody,
    responses(
        (status = 200, description = "Verified: the request after it", body = RequestDoc),
        (status = 400, description = "Bad body (method missing or empty)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such request", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Closed, verified already, or changed concurrently", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn verify_request(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    PathParam(request_id): PathParam<Uuid>,
    bytes: Bytes,
) -> Response {
    let b: VerifyBody = try_or!(body(&bytes));
    command(&state, &principal, request_id, Command::Verify { method: b.method }).await
}

/// Extends the due date by 45 days (to 90 after receipt), once, for a reason.
#[utoipa::path(post, path = "/v1/privacy/requests/{request_id}/extend", tag = "privacy",
    params(("request_id" = Uuid, Path, description = "The request")),
    request_body = ExtendBody,
    responses(
        (status = 200, description = "Extended: the request after it", body = RequestDoc),
        (status = 400, description = "Bad body (reason missing or empty)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such request", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Closed, extended already, or changed concurrently", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn extend_request(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    PathParam(request_id): PathParam<Uuid>,
    bytes: Bytes,
) -> Response {
    let b: ExtendBody = try_or!(body(&bytes));
    command(&state, &principal, request_id, Command::Extend { reason: b.reason }).await
}

/// Completes a verified request, with what was done.
#[utoipa::path(post, path = "/v1/privacy/requests/{request_id}/complete", tag = "privacy",
    params(("request_id" = Uuid, Path, description = "The request")),
    request_body = CompleteBody,
    responses(
        (status = 200, description = "Completed: the request after it", body = RequestDoc),
        (status = 400, description = "Bad body (outcome missing or empty)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such request", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Closed already, or changed concurrently", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not verified yet", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn complete_request(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    PathParam(request_id): PathParam<Uuid>,
    bytes: Bytes,
) -> Response {
    let b: CompleteBody = try_or!(body(&bytes));
    command(&state, &principal, request_id, Command::Complete { outcome: b.outcome }).await
}

/// Denies a request, on a stated basis.
#[utoipa::path(post, path = "/v1/privacy/requests/{request_id}/deny", tag = "privacy",
    params(("request_id" = Uuid, Path, description = "The request")),
    request_body = DenyBody,
    responses(
        (status = 200, description = "Denied: the request after it", body = RequestDoc),
        (status = 400, description = "Bad body (basis missing or empty)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such request", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Closed already, or changed concurrently", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn deny_request(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    PathParam(request_id): PathParam<Uuid>,
    bytes: Bytes,
) -> Response {
    let b: DenyBody = try_or!(body(&bytes));
    command(&state, &principal, request_id, Command::Deny { basis: b.basis }).await
}

/// Records that a recipient was notified (an erasure notice sent). A
/// recipient notified already keeps its first notice.
#[utoipa::path(post, path = "/v1/privacy/requests/{request_id}/notices", tag = "privacy",
    params(("request_id" = Uuid, Path, description = "The request")),
    request_body = NoticeBody,
    responses(
        (status = 200, description = "Recorded: the request after it", body = RequestDoc),
        (status = 400, description = "Bad body (the recipient's kind or id)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such request", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Changed concurrently", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn notify_recipient(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    PathParam(request_id): PathParam<Uuid>,
    bytes: Bytes,
) -> Response {
    let b: NoticeBody = try_or!(body(&bytes));
    let recipient = try_or!(recipient(&b.recipient));
    command(&state, &principal, request_id, Command::Notify { recipient }).await
}

/// Records that a notified recipient acknowledged its notice (once).
#[utoipa::path(post, path = "/v1/privacy/requests/{request_id}/notices/acknowledge", tag = "privacy",
    params(("request_id" = Uuid, Path, description = "The request")),
    request_body = NoticeBody,
    responses(
        (status = 200, description = "Acknowledged: the request after it", body = RequestDoc),
        (status = 400, description = "Bad body (the recipient's kind or id)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such request", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Acknowledged already, or changed concurrently", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The recipient was not notified", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn acknowledge_notice(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    PathParam(request_id): PathParam<Uuid>,
    bytes: Bytes,
) -> Response {
    let b: NoticeBody = try_or!(body(&bytes));
    let recipient = try_or!(recipient(&b.recipient));
    command(&state, &principal, request_id, Command::Acknowledge { recipient }).await
}

/// Hold list parameters (all optional).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HoldParams {
    /// `pending`, `suppressed` or `released`.
    pub state: Option<String>,
    /// Page size, 1 to 100 (default 50).
    pub limit: Option<String>,
    /// The `next` of the previous page.
    pub cursor: Option<String>,
}

/// A page of holds, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct HoldPage {
    pub holds: Vec<HoldDoc>,
    /// The `cursor` of the next page, when there is one.
    pub next: Option<String>,
}

/// Lists the records of erased people that a source sent again ("erased at
/// source pending" while `pending`), oldest first.
#[utoipa::path(get, path = "/v1/privacy/holds", tag = "privacy", params(HoldParams),
    responses(
        (status = 200, description = "A page of holds", body = HoldPage),
        (status = 400, description = "Bad state, limit or cursor", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn list_holds(State(state): State<AppState>, QueryParams(params): QueryParams<HoldParams>) -> Response {
    let p = params;
    let hold_state = match p.state.as_deref() {
        None => None,
        Some(s @ ("pending" | "suppressed" | "released")) => Some(s),
        Some(_) => return bad_request("state must be pending, suppressed or released", "state"),
    };
    let limit = match p.limit.as_deref().map(str::parse::<usize>) {
        None => 50,
        Some(Ok(l)) if (1..=PAGE_MAX).contains(&l) => l,
        Some(_) => return bad_request(format!("limit must be between 1 and {PAGE_MAX}"), "limit"),
    };
    let after = match p.cursor.as_deref() {
        None => None,
        Some(c) => match c
            .split_once(',')
            .and_then(|(at, id)| Some((mdm_projections::db::parse_time(at)?, Uuid::parse_str(id).ok()?)))
        {
            Some(after) => Some(after),
            None => return bad_request("a cursor is the `next` of the previous page", "cursor"),
        },
    };
    match ledger_query::privacy_holds(&state.read, hold_state, after, limit + 1).await {
        Ok(mut rows) => {
            let next = if rows.len() > limit {
                rows.truncate(limit);
                rows.last()
                    .map(|r| format!("{},{}", mdm_projections::db::time_text(r.held_at), r.hold_id))
            } else {
                None
            };
            Json(HoldPage {
                holds: rows.iter().map(HoldDoc::of_row).collect(),
                next,
            })
            .into_response()
        }
        Err(_) if !ledger_tables_exist(&state).await => Json(HoldPage {
            holds: Vec::new(),
            next: None,
        })
        .into_response(),
        Err(e) => read_failed(&e),
    }
}

/// A compliance decision on a held record.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HoldDecisionBody {
    /// `suppress`: the source system is told to delete it and the record
    /// stays erased (re-sends store nothing); `release`: the source holds
    /// it lawfully again, and its next re-send is captured as a new record
    /// (a new customer; never the erased token).
    #[schema(value_type = String)]
    pub decision: HoldDecision,
    /// Why; no personal data.
    pub reason: String,
}

/// Decides a pending hold.
#[utoipa::path(post, path = "/v1/privacy/holds/{hold_id}/decide", tag = "privacy",
    params(("hold_id" = Uuid, Path, description = "The hold")),
    request_body = HoldDecisionBody,
    responses(
        (status = 200, description = "Decided: the hold after it", body = HoldDoc),
        (status = 400, description = "Bad body (decision or reason)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such hold", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Decided already, or changed concurrently", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn decide_hold(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    PathParam(hold_id): PathParam<Uuid>,
    bytes: Bytes,
) -> Response {
    let b: HoldDecisionBody = try_or!(body(&bytes));
    let hold = match ledger_query::privacy_hold(&state.read, hold_id).await {
        Ok(Some(h)) => h,
        Ok(None) => {
            return Problem::new(StatusCode::NOT_FOUND, "Not found", "no hold with that id")
                .field("hold_id")
                .into_response()
        }
        Err(_) if !ledger_tables_exist(&state).await => {
            return Problem::new(StatusCode::NOT_FOUND, "Not found", "no hold with that id")
                .field("hold_id")
                .into_response()
        }
        Err(e) => return read_failed(&e),
    };
    let now = Utc::now();
    match ledger::decide_hold(&state.ingestor, &hold, b.decision, &b.reason, &caller(&principal), now).await {
        Ok(HoldEvent::HoldDecided {
            decision,
            by,
            reason,
            at,
            ..
        }) => {
            tracing::info!(decision = decision.as_str(), "hold decided");
            let mut doc = HoldDoc::of_row(&hold);
            doc.state = decision.as_str().to_owned();
            doc.source_must_be_told = false;
            doc.decided_by = Some(by);
            doc.decided_at = Some(at);
            doc.reason = Some(reason);
            Json(doc).into_response()
        }
        Ok(HoldEvent::RecordHeld { .. }) => internal("a hold decision decided no decision"),
        Err(HoldCommandError::Refused(HoldError::ReasonRequired)) => bad_request("the reason is required", "reason"),
        Err(HoldCommandError::TooLong) => bad_request(format!("at most {} characters", ledger::TEXT_MAX), "reason"),
        Err(HoldCommandError::Refused(e)) => Problem::new(StatusCode::CONFLICT, "Decided already", e.to_string())
            .field("hold_id")
            .into_response(),
        Err(HoldCommandError::Conflict) => Problem::new(
            StatusCode::CONFLICT,
            "Conflict",
            "the hold changed while this decision was made; nothing was applied: read it and retry",
        )
        .field("hold_id")
        .into_response(),
        Err(HoldCommandError::Append(AppendError::Unavailable(error))) => {
            tracing::warn!(error = %error, "hold decision: event store unavailable");
            Problem::unavailable("event store").into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "hold decision failed");
            internal("the decision was not recorded; see the service log")
        }
    }
}
