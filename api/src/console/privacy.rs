//! The compliance pages: the request ledger (due dates, overdue
//! highlighted), a request with its notices and holds, verifying it,
//! erasing its customer, completing it, the right-to-know export and the
//! erasure's proof.

use axum::body::Bytes;
use axum::extract::State;

use crate::http::problem::QueryParams;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Extension;
use maud::html;
use mdm_store::keys::SubjectKey;
use serde_json::{json, Value};
use uuid::Uuid;

use super::{after_form, answered, html_response, json_of, message_page, page, refusal, Signed};
use crate::auth::Need;
use crate::http::privacy::{self as api, ListParams};
use crate::http::problem::PathParam;
use crate::http::{erasure, export, AppState};

/// `GET /console/privacy`: the ledger, newest last, and the new-request form.
pub async fn ledger(State(state): State<AppState>, signed: Signed) -> Response {
    if let Err(r) = signed.allowed(Need::Compliance) {
        return r;
    }
    let (status, _, list) = json_of(
        api::list_requests(
            State(state.clone()),
            QueryParams(ListParams {
                status: None,
                kind: None,
                overdue: None,
                limit: Some("100".into()),
                cursor: None,
            }),
        )
        .await,
    )
    .await;
    if !status.is_success() {
        return message_page(Some(&signed), status, "Ledger not shown", &refusal(status, &list));
    }
    let requests = list["requests"].as_array().cloned().unwrap_or_default();
    let (_, _, holds) = json_of(
        api::list_holds(
            State(state.clone()),
            QueryParams(api::HoldParams {
                state: Some("pending".into()),
                limit: Some("100".into()),
                cursor: None,
            }),
        )
        .await,
    )
    .await;
    let pending_holds = holds["holds"].as_array().map(Vec::len).unwrap_or(0);
    let body = html! {
        h1 { "Privacy requests" }
        p { (requests.len()) " request" @if requests.len() != 1 { "s" } "; " (pending_holds) " record" @if pending_holds != 1 { "s" } " sent again after an erasure wait for a decision." }
        table #requests {
            thead { tr { th { "Request" } th { "Kind" } th { "Status" } th { "Received" } th { "Due" } th { "Verified" } } }
            tbody {
                @for r in &requests {
                    @let id = r["request_id"].as_str().unwrap_or_default();
                    tr.overdue[r["overdue"] == true] {
                        td { a.request-link href={"/console/privacy/requests/" (id)} { (id) } }
                        td { (r["kind"].as_str().unwrap_or_default().replace('_', " ")) }
                        td { (r["status"].as_str().unwrap_or_default()) }
                        td { (day(&r["received_at"])) }
                        td { (day(&r["due_at"])) }
                        td { @if r["verified_by"].is_string() { "yes" } @else { "no" } }
                    }
                }
            }
        }
        form #new-request-form .box method="post" action="/console/privacy" {
            h2 { "A request received now" }
            (signed.csrf_field())
            label for="request-kind" { "Kind" }
            select #request-kind name="kind" {
                option value="erasure" { "Erasure (delete)" }
                option value="right_to_know" { "Right to know (export)" }
            }
            label for="request-token" { "Customer token (when known)" }
            input #request-token type="text" name="token" autocomplete="off";
            p.hint { "No names or other personal data here: the ledger holds the token only." }
            button #create-request type="submit" { "Enter the request" }
        }
    };
    html_response(StatusCode::OK, page(Some(&signed), "Privacy requests", body))
}

fn day(v: &Value) -> String {
    v.as_str().and_then(|t| t.get(..10)).unwrap_or_default().to_owned()
}

/// `POST /console/privacy`: enters a request.
pub async fn create_request(State(state): State<AppState>, signed: Signed, body: Bytes) -> Response {
    let form = match signed.form(Need::Compliance, &body) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let token = form.get("token").map(|t| t.trim()).filter(|t| !t.is_empty());
    let token = match token.map(Uuid::parse_str) {
        None => None,
        Some(Ok(t)) => Some(t),
        Some(Err(_)) => {
            return after_form(
                &state,
                &signed,
                false,
                "The token is a UUID: nothing was entered.",
                "/console/privacy",
            )
        }
    };
    let json = json!({"kind": form.get("kind").cloned().unwrap_or_default(), "token": token});
    let (status, _, doc) = json_of(
        api::create_request(
            State(state.clone()),
            Extension(signed.principal.clone()),
            Bytes::from(json.to_string()),
        )
        .await,
    )
    .await;
    match doc["request_id"].as_str() {
        Some(id) if status.is_success() => after_form(
            &state,
            &signed,
            true,
            "Request entered: verify the requester next.",
            &format!("/console/privacy/requests/{id}"),
        ),
        _ => after_form(&state, &signed, false, refusal(status, &doc), "/console/privacy"),
    }
}

/// `GET /console/privacy/requests/{id}`.
pub async fn request(State(state): State<AppState>, signed: Signed, PathParam(id): PathParam<Uuid>) -> Response {
    if let Err(r) = signed.allowed(Need::Compliance) {
        return r;
    }
    let (status, _, r) = json_of(api::get_request(State(state.clone()), PathParam(id)).await).await;
    if !status.is_success() {
        return message_page(Some(&signed), status, "Request not shown", &refusal(status, &r));
    }
    let open = r["status"] == "open";
    let verified = r["verified_by"].is_string();
    let token = r["token"].as_str().and_then(|t| Uuid::parse_str(t).ok());
    let customer = match token {
        Some(t) => mdm_projections::query::customer(&state.read, t).await.ok().flatten(),
        None => None,
    };
    let erased = customer.as_ref().is_some_and(|c| c.status.as_str() == "erased");
    let proof = match (token, erased) {
        (Some(t), true) => Some(proof(&state, t).await),
        _ => None,
    };
    let body = html! {
        h1 { "Privacy request " (id) }
        dl {
            dt { "Kind" } dd { (r["kind"].as_str().unwrap_or_default().replace('_', " ")) }
            dt { "Status" } dd #request-status { (r["status"].as_str().unwrap_or_default()) @if r["overdue"] == true { strong.negative { " (overdue)" } } }
            dt { "Customer" } dd { @match token { Some(t) => { a.customer-link href={"/console/customers/" (t)} { (t) } @if erased { " " span.badge.erased { "erased" } } } None => { "not named" } } }
            dt { "Received" } dd { (r["received_at"].as_str().unwrap_or_default()) " by " (r["received_by"].as_str().unwrap_or_default()) }
            dt { "Due" } dd { (r["due_at"].as_str().unwrap_or_default()) @if let Some(reason) = r["extension_reason"].as_str() { " (extended: " (reason) ")" } }
            dt { "Verified" } dd { @if verified { (r["verified_by"].as_str().unwrap_or_default()) ", " (r["verification_method"].as_str().unwrap_or_default()) } @else { "not yet" } }
            @if let Some(o) = r["outcome"].as_str() { dt { "Outcome" } dd { (o) } }
        }
        h2 { "Notices" }
        table #notices {
            thead { tr { th { "Recipient" } th { "Kind" } th { "Notified" } th { "Acknowledged" } } }
            tbody {
                @for n in r["notices"].as_array().cloned().unwrap_or_default() {
                    tr {
                        td { (n["recipient"]["id"].as_str().unwrap_or_default()) }
                        td { (n["recipient"]["kind"].as_str().unwrap_or_default().replace('_', " ")) }
                        td { (n["notified_at"].as_str().unwrap_or_default()) }
                        td { @match n["acknowledged_at"].as_str() { Some(at) => { (at) " by " (n["acknowledged_by"].as_str().unwrap_or_default()) } None => { strong { "waiting" } } } }
                    }
                }
            }
        }
        h2 { "Records sent again after the erasure" }
        table #holds {
            thead { tr { th { "Source system" } th { "Held" } th { "State" } th { "Decided" } } }
            tbody {
                @for h in r["holds"].as_array().cloned().unwrap_or_default() {
                    tr { td { (h["system"].as_str().unwrap_or_default()) } td { (h["held_at"].as_str().unwrap_or_default()) }
                         td { (h["state"].as_str().unwrap_or_default()) @if h["source_must_be_told"] == true { " · tell the source system" } }
                         td { (h["decided_by"].as_str().unwrap_or("")) " " (h["reason"].as_str().unwrap_or("")) } }
                }
            }
        }
        @if open && !verified {
            form #verify-form .box method="post" action={"/console/privacy/requests/" (id) "/verify"} {
                h2 { "Verify the requester" }
                (signed.csrf_field())
                label for="verify-method" { "How the identity was verified" }
                input #verify-method type="text" name="method" required;
                button #verify type="submit" { "Verified" }
            }
        }
        @if let (Some(t), false) = (token, erased) {
            p { a #export href={"/console/privacy/exports/" (t)} download { "Download the right-to-know export (JSON)" } }
        }
        @if let (true, true, Some(t), false, true) = (open, verified, token, erased, r["kind"] == "erasure") {
            form #erase-form .box method="post" action={"/console/privacy/requests/" (id) "/erase"} {
                h2 { "Erase customer " (t) }
                (signed.csrf_field())
                label for="erase-legal-basis" { "Legal basis" }
                input #erase-legal-basis type="text" name="legal_basis" required value="CCPA 1798.105 request to delete";
                p.hint { "Every source record and override of the customer becomes unreadable for ever; the read models forget them. This cannot be undone." }
                div { input #erase-confirm type="checkbox" name="confirm" value="yes" required; label.inline for="erase-confirm" { "I confirm the erasure" } }
                button.danger #erase type="submit" { "Erase" }
            }
        }
        @if open && verified {
            form #complete-form .box method="post" action={"/console/privacy/requests/" (id) "/complete"} {
                h2 { "Complete the request" }
                (signed.csrf_field())
                label for="complete-outcome" { "What was done (no personal data)" }
                input #complete-outcome type="text" name="outcome" required;
                button #complete type="submit" { "Complete" }
            }
        }
        @if let Some(p) = proof {
            section #proof aria-label="Erasure proof" {
                h2 { "Erasure proof" }
                (p)
            }
        }
    };
    html_response(StatusCode::OK, page(Some(&signed), "Privacy request", body))
}

/// What the erasure of `token` did, checked now: its decision, its keys in
/// the key store, and the read models' rows.
async fn proof(state: &AppState, token: Uuid) -> maud::Markup {
    let history = mdm_projections::query::history(&state.read, token, None, 1000)
        .await
        .unwrap_or_default();
    let erasure = history.iter().rev().find(|h| h.decision_type == "CustomerErased");
    let records: Vec<String> = erasure
        .and_then(|e| e.decision["records"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|r| r.as_str().map(str::to_owned))
        .collect();
    let destroyed = match state.ingestor.keys().find(&records).await {
        Ok(keys) => Some(
            keys.iter()
                .filter(|k| matches!(k, Some(SubjectKey::Destroyed { .. })))
                .count(),
        ),
        Err(_) => None,
    };
    let rows = mdm_projections::query::source_records_of(&state.read, token)
        .await
        .map(|r| r.len())
        .ok();
    html! {
        dl {
            dt { "Decision" }
            dd { @match erasure { Some(e) => { "CustomerErased at log position " (e.position) ", " (e.recorded_at.to_rfc3339()) ", by " (e.actor.clone().unwrap_or_default()) ": " (e.decision["legal_basis"].as_str().unwrap_or_default()) } None => { "not found" } } }
            dt { "Data keys destroyed" }
            dd #proof-keys { @match destroyed { Some(n) => { (n) " of " (records.len()) " source records' keys (every version of each is sealed under its key)" } None => { "the key store did not answer" } } }
            dt { "Read models" }
            dd #proof-read-models { "the token reads erased; " @match rows { Some(n) => { (n) } None => { "?" } } " source-record rows name it" }
            dt { "Full proof" }
            dd { "Run " code { "mdm privacy verify " (token) " --export FILE" } " with the export made before the erasure: it rebuilds every read model and searches them, the event log's bytes and the service log for each of the person's values." }
        }
    }
}

/// `POST /console/privacy/requests/{id}/verify`.
pub async fn verify(
    State(state): State<AppState>,
    signed: Signed,
    PathParam(id): PathParam<Uuid>,
    body: Bytes,
) -> Response {
    let form = match signed.form(Need::Compliance, &body) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let json = json!({"method": form.get("method").cloned().unwrap_or_default()});
    let response = api::verify_request(
        State(state.clone()),
        Extension(signed.principal.clone()),
        PathParam(id),
        Bytes::from(json.to_string()),
    )
    .await;
    answered(
        &state,
        &signed,
        response,
        "Verified.",
        &format!("/console/privacy/requests/{id}"),
    )
    .await
}

/// `POST /console/privacy/requests/{id}/complete`.
pub async fn complete(
    State(state): State<AppState>,
    signed: Signed,
    PathParam(id): PathParam<Uuid>,
    body: Bytes,
) -> Response {
    let form = match signed.form(Need::Compliance, &body) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let json = json!({"outcome": form.get("outcome").cloned().unwrap_or_default()});
    let response = api::complete_request(
        State(state.clone()),
        Extension(signed.principal.clone()),
        PathParam(id),
        Bytes::from(json.to_string()),
    )
    .await;
    answered(
        &state,
        &signed,
        response,
        "Completed.",
        &format!("/console/privacy/requests/{id}"),
    )
    .await
}

/// `POST /console/privacy/requests/{id}/erase`: erases the request's customer.
pub async fn erase(
    State(state): State<AppState>,
    signed: Signed,
    PathParam(id): PathParam<Uuid>,
    body: Bytes,
) -> Response {
    let form = match signed.form(Need::Compliance, &body) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let back = format!("/console/privacy/requests/{id}");
    if form.get("confirm").map(String::as_str) != Some("yes") {
        return after_form(&state, &signed, false, "Confirm the erasure: nothing was done.", &back);
    }
    let (_, _, request) = json_of(api::get_request(State(state.clone()), PathParam(id)).await).await;
    let Some(token) = request["token"].as_str() else {
        return after_form(&state, &signed, false, "The request names no customer.", &back);
    };
    let json =
        json!({"token": token, "request_id": id, "legal_basis": form.get("legal_basis").cloned().unwrap_or_default()});
    let (status, _, result) = json_of(
        erasure::erase(
            State(state.clone()),
            Extension(signed.principal.clone()),
            Bytes::from(json.to_string()),
        )
        .await,
    )
    .await;
    if status.is_success() {
        let message = format!(
            "Erased: {} source records and {} overrides; {} recipients notified.",
            result["records_erased"],
            result["overrides_erased"],
            result["notices"].as_array().map(Vec::len).unwrap_or(0)
        );
        after_form(&state, &signed, true, message, &back)
    } else {
        after_form(&state, &signed, false, refusal(status, &result), &back)
    }
}

/// `GET /console/privacy/exports/{token}`: the right-to-know export, as the
/// API gives it (a JSON attachment).
pub async fn export(State(state): State<AppState>, signed: Signed, PathParam(token): PathParam<Uuid>) -> Response {
    if let Err(r) = signed.allowed(Need::Compliance) {
        return r;
    }
    let response = export::export(State(state.clone()), PathParam(token)).await;
    if response.status().is_success() {
        return response;
    }
    let (status, _, problem) = json_of(response).await;
    if status == StatusCode::TEMPORARY_REDIRECT {
        return Redirect::to("/console/privacy").into_response();
    }
    message_page(Some(&signed), status, "Export not made", &refusal(status, &problem))
}
