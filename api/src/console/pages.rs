//! The steward pages: search, customer (golden record with lineage, source
//! records as received, household, decision timeline, as of a date, and
//! the steward's merge, split and override forms), match explanations, the
//! review queue, and operations.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Query, State};

use crate::http::problem::QueryParams;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Extension;
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::{after_form, answered, html_response, json_of, message_page, page, refusal, Signed};
use crate::auth::Need;
use crate::http::customers::{self, AsOfParams, PageParams, ReviewParams, SearchParams, SourceRecordParams};
use crate::http::problem::PathParam;
use crate::http::{ops, steward, AppState};

/// The parts of a structured value, in reading order.
const PARTS: &[&str] = &[
    "given", "middle", "family", "suffix", "line1", "line2", "city", "region", "postcode", "country", "email",
    "number", "date", "address",
];

/// A golden or source value as one line of text.
pub(crate) fn text_of(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .map(text_of)
            .filter(|t| !t.is_empty())
            .collect::<Vec<_>>()
            .join("; "),
        Value::Object(map) => {
            let mut out: Vec<String> = Vec::new();
            for part in PARTS {
                if let Some(p) = map.get(*part) {
                    let t = text_of(p);
                    if !t.is_empty() {
                        out.push(t);
                    }
                }
            }
            out.join(" ")
        }
        other => other.to_string(),
    }
}

#[derive(Debug, Deserialize)]
pub struct SearchQuery {
    field: Option<String>,
    q: Option<String>,
    system: Option<String>,
}

const FIELDS: &[(&str, &str)] = &[
    ("name", "Name"),
    ("email", "E-mail"),
    ("phone", "Phone"),
    ("postcode", "Postcode"),
    ("token", "Token"),
    ("source", "Source system + id"),
];

/// `GET /console`: the search form and its results.
pub async fn search(State(state): State<AppState>, signed: Signed, Query(q): Query<SearchQuery>) -> Response {
    let field = q.field.as_deref().unwrap_or("name");
    let text = q.q.as_deref().map(str::trim).unwrap_or("");
    let system = q.system.as_deref().map(str::trim).unwrap_or("");
    let mut error = None;
    let mut results: Option<Vec<Value>> = None;
    if !text.is_empty() {
        match field {
            "token" => match Uuid::parse_str(text) {
                Ok(t) => return Redirect::to(&format!("/console/customers/{t}")).into_response(),
                Err(_) => error = Some("A token is a UUID (36 characters).".to_owned()),
            },
            "source" => {
                let r = customers::get_customer_by_source(
                    State(state.clone()),
                    Extension(signed.principal.clone()),
                    PathParam((system.to_owned(), text.to_owned())),
                )
                .await;
                let (status, _, body) = json_of(r).await;
                match body["token"].as_str() {
                    Some(t) if status.is_success() || status == StatusCode::GONE => {
                        return Redirect::to(&format!("/console/customers/{t}")).into_response()
                    }
                    _ => error = Some(refusal(status, &body)),
                }
            }
            "name" | "email" | "phone" | "postcode" => {
                let mut params = SearchParams {
                    name: None,
                    email: None,
                    phone: None,
                    postcode: None,
                    cursor: None,
                    limit: Some(50),
                };
                let slot = match field {
                    "name" => &mut params.name,
                    "email" => &mut params.email,
                    "phone" => &mut params.phone,
                    _ => &mut params.postcode,
                };
                *slot = Some(text.to_owned());
                let r = customers::search_customers(
                    State(state.clone()),
                    Extension(signed.principal.clone()),
                    QueryParams(params),
                )
                .await;
                let (status, _, body) = json_of(r).await;
                if status.is_success() {
                    results = Some(body["customers"].as_array().cloned().unwrap_or_default());
                } else {
                    error = Some(refusal(status, &body));
                }
            }
            _ => error = Some("Choose what to search by.".to_owned()),
        }
    }
    let body = html! {
        h1 { "Search customers" }
        form #search-form .box method="get" action="/console" role="search" {
            label for="field" { "Search by" }
            select #field name="field" {
                @for (value, label) in FIELDS {
                    option value=(value) selected[*value == field] { (label) }
                }
            }
            label for="q" { "Value (for a source record: its id in that system)" }
            input #q type="text" name="q" value=(text) autocomplete="off";
            label for="system" { "Source system (only for a source record)" }
            input #system type="text" name="system" value=(system) list="systems" autocomplete="off";
            datalist #systems {
                @for def in state.ingestor.sources().iter() { option value=(def.system) {} }
            }
            div { button #search type="submit" { "Search" } }
        }
        @if let Some(e) = &error { div.flash.error role="alert" { (e) } }
        @if let Some(rows) = &results {
            h2 { (rows.len()) " customer" @if rows.len() != 1 { "s" } }
            @if rows.is_empty() { p { "No active customer matches." } } @else {
                table #results {
                    thead { tr { th { "Name" } th { "E-mail" } th { "Phone" } th { "Postcode" } th.num { "Records" } th { "Token" } } }
                    tbody {
                        @for c in rows {
                            @let token = c["token"].as_str().unwrap_or_default();
                            tr {
                                td { a.customer-link href={"/console/customers/" (token)} { (display_or(&text_of(&c["attributes"]["name"]), "(no name)")) } }
                                td { (text_of(&c["attributes"]["email"])) }
                                td { (text_of(&c["attributes"]["phone"])) }
                                td { (text_of(&c["attributes"]["address"]["postcode"])) }
                                td.num { (c["record_count"]) }
                                td { code { (token) } }
                            }
                        }
                    }
                }
            }
        }
    };
    html_response(StatusCode::OK, page(Some(&signed), "Search", body))
}

fn display_or(text: &str, empty: &str) -> String {
    if text.is_empty() {
        empty.to_owned()
    } else {
        text.to_owned()
    }
}

#[derive(Debug, Deserialize)]
pub struct CustomerQuery {
    /// A day (`YYYY-MM-DD`): the customer as it was at its end (UTC).
    as_of: Option<String>,
}

/// `GET /console/customers/{token}`.
pub async fn customer(
    State(state): State<AppState>,
    signed: Signed,
    PathParam(token): PathParam<Uuid>,
    Query(q): Query<CustomerQuery>,
) -> Response {
    let started = std::time::Instant::now();
    let principal = signed.principal.clone();
    let r = customers::get_customer(State(state.clone()), Extension(principal.clone()), PathParam(token)).await;
    let (status, headers, doc) = json_of(r).await;
    match status {
        StatusCode::GONE => {
            let body = html! {
                h1 { "Customer " (token) }
                p { "Status: " span #status .badge.erased { "erased" } }
                p { "This customer was erased at the person's request. Nothing of them can be read, and the token is never reused." }
            };
            return html_response(StatusCode::GONE, page(Some(&signed), "Erased customer", body));
        }
        StatusCode::TEMPORARY_REDIRECT => {
            let to = headers
                .get("location")
                .and_then(|l| l.to_str().ok())
                .and_then(|l| l.strip_prefix("/v1/customers/"))
                .unwrap_or_default()
                .to_owned();
            let body = html! {
                h1 { "Customer " (token) }
                p { "Status: " span #status .badge { "merged" } }
                p { "This customer was merged into " a.customer-link href={"/console/customers/" (to)} { (to) } "." }
            };
            return html_response(StatusCode::OK, page(Some(&signed), "Merged customer", body));
        }
        s if !s.is_success() => {
            return message_page(Some(&signed), s, "Customer not shown", &refusal(s, &doc));
        }
        _ => {}
    }
    let version = doc["version"].as_i64().unwrap_or(0);
    let (_, _, lineage) =
        json_of(customers::get_lineage(State(state.clone()), Extension(principal.clone()), PathParam(token)).await)
            .await;
    let (records_status, _, records) = json_of(
        customers::get_source_records(
            State(state.clone()),
            Extension(principal.clone()),
            PathParam(token),
            QueryParams(SourceRecordParams { versions: Some(true) }),
        )
        .await,
    )
    .await;
    let (_, _, history) = json_of(
        customers::get_history(
            State(state.clone()),
            PathParam(token),
            QueryParams(PageParams {
                cursor: None,
                limit: Some(100),
            }),
        )
        .await,
    )
    .await;
    let household = match doc["household"].as_str().and_then(|h| Uuid::parse_str(h).ok()) {
        Some(h) => Some(
            json_of(customers::get_household(State(state.clone()), PathParam(h)).await)
                .await
                .2,
        ),
        None => None,
    };
    let as_of = match q.as_of.as_deref().filter(|d| !d.is_empty()) {
        None => None,
        Some(day) => match chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d") {
            Ok(d) => {
                let time = format!("{d}T23:59:59.999999Z");
                let (s, _, body) = json_of(
                    customers::get_as_of(
                        State(state.clone()),
                        Extension(principal.clone()),
                        PathParam(token),
                        QueryParams(AsOfParams {
                            position: None,
                            time: Some(time),
                        }),
                    )
                    .await,
                )
                .await;
                Some((day.to_owned(), s, body))
            }
            Err(_) => Some((
                day.to_owned(),
                StatusCode::BAD_REQUEST,
                json!({"detail": "not a date (YYYY-MM-DD)"}),
            )),
        },
    };
    let records = records["source_records"].as_array().cloned().unwrap_or_default();
    let steward = principal.role.allows(Need::Steward);
    let body = html! {
        h1 { "Customer " (token) }
        p {
            "Status: " span #status .badge { (doc["status"].as_str().unwrap_or("")) }
            " · version " (version) " · " (doc["record_count"]) " source records · rule set " (doc["rule_set"].as_str().unwrap_or(""))
        }
        h2 { "Golden record" }
        table #golden {
            thead { tr { th { "Attribute" } th { "Value" } th { "Source" } th { "Rule" } } }
            tbody {
                @for l in lineage["attributes"].as_array().cloned().unwrap_or_default() {
                    @let attribute = l["attribute"].as_str().unwrap_or_default().to_owned();
                    @let value = text_of(&l["value"]);
                    tr data-attribute=(attribute) {
                        th scope="row" { (attribute.replace('_', " ")) }
                        td { (value) }
                        td.source title=(l["record"].as_str().unwrap_or_default()) { (l["system"].as_str().unwrap_or("steward")) }
                        td.rule {
                            (l["rule"].as_str().unwrap_or_default().replace('_', " "))
                            @if let Some(by) = l["overridden_by"].as_str() { " (override by " (by) ")" }
                        }
                    }
                }
            }
        }
        form #as-of-form method="get" action={"/console/customers/" (token)} {
            label for="as_of" { "As of the end of (UTC)" }
            input #as_of type="date" name="as_of" value=(q.as_of.clone().unwrap_or_default());
            button #as-of type="submit" { "Show" }
        }
        @if let Some((day, s, body)) = &as_of {
            section #as-of-result aria-label="As of" {
                h2 { "As of " (day) }
                @if s.is_success() {
                    table {
                        thead { tr { th { "Attribute" } th { "Value" } th { "Source" } th { "Rule" } } }
                        tbody {
                            @for (attribute, a) in body["attributes"].as_object().cloned().unwrap_or_default() {
                                tr { th scope="row" { (attribute) } td { (text_of(&a["value"])) } td { (a["lineage"]["system"].as_str().unwrap_or("steward")) } td { (a["chosen"].as_str().unwrap_or_default()) } }
                            }
                        }
                    }
                } @else {
                    div.flash.error role="alert" { (refusal(*s, body)) }
                }
            }
        }
        section #source-records aria-label="Source records" {
            h2 { "Source records as received" }
            @if !records_status.is_success() { p.muted { "Your field scopes do not include source records." } }
            @for r in &records {
                details.source-record {
                    summary { (r["system"].as_str().unwrap_or_default()) " · " (r["source_id"].as_str().unwrap_or("")) " · " (r["state"].as_str().unwrap_or_default()) " · version " (r["version"]) }
                    @for v in r["versions"].as_array().cloned().unwrap_or_default().iter().rev() {
                        h3.muted { "Version " (v["version"]) " at log position " (v["position"]) " (" (v["recorded_at"].as_str().unwrap_or_default()) ")" }
                        @if let Some(header) = v["raw_header"].as_str() { pre.raw { (header) } }
                        pre.raw { (v["raw"].as_str().unwrap_or("(erased)")) }
                    }
                    @if r["versions"].as_array().is_none_or(Vec::is_empty) {
                        pre.raw { (r["raw"].as_str().unwrap_or("(erased)")) }
                    }
                }
            }
        }
        section #household aria-label="Household" {
            h2 { "Household" }
            @match &household {
                Some(h) => {
                    ul {
                        @for m in h["members"].as_array().cloned().unwrap_or_default() {
                            @let t = m["token"].as_str().unwrap_or_default();
                            li { a.customer-link href={"/console/customers/" (t)} { (t) } " · " (m["reason"].as_str().unwrap_or_default().replace('_', " ")) }
                        }
                    }
                }
                None => p { "Not in a household." }
            }
        }
        section #history aria-label="Decision history" {
            h2 { "Decision history" }
            ol.timeline {
                @for d in history["decisions"].as_array().cloned().unwrap_or_default() {
                    li.decision {
                        strong { (d["type"].as_str().unwrap_or_default()) }
                        " · " (d["recorded_at"].as_str().unwrap_or_default())
                        " · by " (d["actor"]["kind"].as_str().unwrap_or_default())
                        @if let Some(id) = d["actor"]["id"].as_str() { " " (id) }
                        " · " (d["reason"].as_str().unwrap_or_default())
                        @if !d["explanation"].is_null() {
                            " · total " (format!("{:.2}", d["explanation"]["total"].as_f64().unwrap_or(0.0)))
                            " (" (d["explanation"]["band"].as_str().unwrap_or_default()) ") "
                            a.explain href={"/console/customers/" (token) "/decisions/" (d["position"])} { "Explanation" }
                        }
                    }
                }
            }
        }
        @if steward {
            h2 { "Steward actions" }
            p.hint { "Each action needs a reason and your confirmation. If the customer changed since this page was loaded, nothing is applied." }
            div.grid {
                form #merge-form .box method="post" action={"/console/customers/" (token) "/merge"} {
                    h3 { "Merge another customer into this one" }
                    (signed.csrf_field())
                    input type="hidden" name="version" value=(version);
                    label for="merge-absorbed" { "Token of the customer to merge in" }
                    input #merge-absorbed type="text" name="absorbed" required autocomplete="off";
                    label for="merge-reason" { "Reason" }
                    input #merge-reason type="text" name="reason" required;
                    div { input #merge-confirm type="checkbox" name="confirm" value="yes" required; label.inline for="merge-confirm" { "I confirm these are the same person" } }
                    button #merge type="submit" { "Merge" }
                }
                form #split-form .box method="post" action={"/console/customers/" (token) "/split"} {
                    h3 { "Split a source record off (unmerge)" }
                    (signed.csrf_field())
                    input type="hidden" name="version" value=(version);
                    label for="split-record" { "Source record" }
                    select #split-record name="record" required {
                        @for r in &records {
                            @if let (Some(system), Some(id)) = (r["system"].as_str(), r["source_id"].as_str()) {
                                option value={(system) "/" (id)} { (system) " · " (id) }
                            }
                        }
                    }
                    label for="split-reason" { "Reason" }
                    input #split-reason type="text" name="reason" required;
                    div { input #split-confirm type="checkbox" name="confirm" value="yes" required; label.inline for="split-confirm" { "I confirm this record is someone else" } }
                    button #split type="submit" { "Split off" }
                }
                form #override-form .box method="post" action={"/console/customers/" (token) "/override"} {
                    h3 { "Override a value" }
                    (signed.csrf_field())
                    input type="hidden" name="version" value=(version);
                    label for="override-attribute" { "Attribute" }
                    select #override-attribute name="attribute" {
                        option value="email" { "E-mail" }
                        option value="phone" { "Phone" }
                        option value="date_of_birth" { "Date of birth (YYYY-MM-DD)" }
                        option value="name" { "Name (given names, then family name)" }
                    }
                    label for="override-value" { "Value" }
                    input #override-value type="text" name="value" required autocomplete="off";
                    label for="override-expires" { "Expires on (UTC), or" }
                    input #override-expires type="date" name="expires_at";
                    div { input #override-permanent type="checkbox" name="permanent" value="yes"; label.inline for="override-permanent" { "permanent (until removed)" } }
                    label for="override-reason" { "Reason" }
                    input #override-reason type="text" name="reason" required;
                    div { input #override-confirm type="checkbox" name="confirm" value="yes" required; label.inline for="override-confirm" { "I confirm this value" } }
                    button #override type="submit" { "Override" }
                }
            }
        }
        p.muted { "Page built in " (started.elapsed().as_millis()) " ms." }
    };
    html_response(StatusCode::OK, page(Some(&signed), "Customer", body))
}

/// The If-Match header of a form's `version`.
fn if_match(form: &HashMap<String, String>) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Some(v) = form.get("version").and_then(|v| v.parse::<u64>().ok()) {
        if let Ok(value) = HeaderValue::from_str(&format!("\"{v}\"")) {
            h.insert(axum::http::header::IF_MATCH, value);
        }
    }
    h
}

/// Runs a steward form: CSRF, role, confirmation, then the API handler;
/// back to the customer page with what happened.
async fn steward_form<F, Fut>(
    state: AppState,
    signed: Signed,
    token: Uuid,
    body: Bytes,
    done: &str,
    call: F,
) -> Response
where
    F: FnOnce(AppState, HashMap<String, String>) -> Fut,
    Fut: std::future::Future<Output = Result<Response, String>>,
{
    let form = match signed.form(Need::Steward, &body) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let back = format!("/console/customers/{token}");
    if form.get("confirm").map(String::as_str) != Some("yes") {
        return after_form(
            &state,
            &signed,
            false,
            "Confirm the action: nothing was applied.",
            &back,
        );
    }
    let response = match call(state.clone(), form).await {
        Ok(r) => r,
        Err(message) => return after_form(&state, &signed, false, message, &back),
    };
    answered(&state, &signed, response, done, &back).await
}

/// `POST /console/customers/{token}/merge`.
pub async fn merge(
    State(state): State<AppState>,
    signed: Signed,
    PathParam(token): PathParam<Uuid>,
    body: Bytes,
) -> Response {
    let principal = signed.principal.clone();
    steward_form(state, signed, token, body, "Merged.", |state, form| async move {
        let absorbed = form
            .get("absorbed")
            .map(|a| a.trim())
            .and_then(|a| Uuid::parse_str(a).ok())
            .ok_or("The customer to merge in is a token (a UUID): nothing was applied.")?;
        let json = json!({"absorbed": absorbed, "reason": form.get("reason").cloned().unwrap_or_default()});
        Ok(steward::merge(
            State(state),
            Extension(principal),
            PathParam(token),
            if_match(&form),
            Bytes::from(json.to_string()),
        )
        .await)
    })
    .await
}

/// `POST /console/customers/{token}/split`.
pub async fn split(
    State(state): State<AppState>,
    signed: Signed,
    PathParam(token): PathParam<Uuid>,
    body: Bytes,
) -> Response {
    let principal = signed.principal.clone();
    steward_form(state, signed, token, body, "Split off.", |state, form| async move {
        let (system, source_id) = form
            .get("record")
            .and_then(|r| r.split_once('/'))
            .ok_or("Choose the source record to split off: nothing was applied.")?;
        let json = json!({"record": {"system": system, "source_id": source_id}, "reason": form.get("reason").cloned().unwrap_or_default()});
        Ok(steward::split(
            State(state),
            Extension(principal),
            PathParam(token),
            if_match(&form),
            Bytes::from(json.to_string()),
        )
        .await)
    })
    .await
}

/// `POST /console/customers/{token}/override`.
pub async fn set_override(
    State(state): State<AppState>,
    signed: Signed,
    PathParam(token): PathParam<Uuid>,
    body: Bytes,
) -> Response {
    let principal = signed.principal.clone();
    steward_form(state, signed, token, body, "Value overridden.", |state, form| async move {
        let attribute = form.get("attribute").cloned().unwrap_or_default();
        let text = form.get("value").map(|v| v.trim().to_owned()).unwrap_or_default();
        let value = if attribute == "name" {
            let (given, family) = text.rsplit_once(' ').unwrap_or(("", text.as_str()));
            json!({"given": given, "family": family})
        } else {
            json!(text)
        };
        let mut json = json!({"attribute": attribute, "value": value, "reason": form.get("reason").cloned().unwrap_or_default()});
        if form.get("permanent").map(String::as_str) == Some("yes") {
            json["permanent"] = json!(true);
        } else {
            let day = form.get("expires_at").map(String::as_str).unwrap_or("");
            let day = chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d")
                .map_err(|_| "Give an expiry date or tick permanent: nothing was applied.")?;
            json["expires_at"] = json!(format!("{day}T00:00:00Z"));
        }
        Ok(steward::set_override(
            State(state),
            Extension(principal),
            PathParam(token),
            if_match(&form),
            Bytes::from(json.to_string()),
        )
        .await)
    })
    .await
}

/// The values a source record holds for each compared attribute.
fn compared_values(attributes: &Value) -> HashMap<&'static str, String> {
    let list = |key: &str, part: &str| -> String {
        attributes[key]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|i| if part.is_empty() { text_of(i) } else { text_of(&i[part]) })
                    .filter(|t| !t.is_empty())
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default()
    };
    HashMap::from([
        ("given_name", text_of(&attributes["given_name"])),
        ("family_name", text_of(&attributes["family_name"])),
        ("date_of_birth", text_of(&attributes["date_of_birth"])),
        ("suffix", text_of(&attributes["suffix"])),
        ("email", list("emails", "")),
        ("phone", list("phones", "number")),
        ("street", list("addresses", "line1")),
        ("city", list("addresses", "city")),
        ("postcode", list("addresses", "postcode")),
        ("identifier", list("identifiers", "")),
    ])
}

/// The same for a golden record.
fn golden_values(attributes: &Value) -> HashMap<&'static str, String> {
    HashMap::from([
        ("given_name", text_of(&attributes["name"]["given"])),
        ("family_name", text_of(&attributes["name"]["family"])),
        ("date_of_birth", text_of(&attributes["date_of_birth"])),
        ("suffix", text_of(&attributes["name"]["suffix"])),
        ("email", text_of(&attributes["email"])),
        ("phone", text_of(&attributes["phone"])),
        ("street", text_of(&attributes["address"]["line1"])),
        ("city", text_of(&attributes["address"]["city"])),
        ("postcode", text_of(&attributes["address"]["postcode"])),
        ("identifier", String::new()),
    ])
}

/// A match explanation: the comparisons with both sides' values, and the
/// total against the thresholds.
fn explanation_table(
    explanation: &Value,
    this: &HashMap<&'static str, String>,
    other: &HashMap<&'static str, String>,
    other_label: &str,
) -> Markup {
    let total = explanation["total"].as_f64().unwrap_or(0.0);
    let link = explanation["link_threshold"].as_f64();
    let review = explanation["review_threshold"].as_f64();
    html! {
        table #explanation {
            caption.muted { "Each comparison's level and its weight in the Fellegi-Sunter score (log2 odds)." }
            thead { tr { th { "Attribute" } th { "This record" } th { (other_label) } th { "Level" } th.num { "Weight" } } }
            tbody {
                @for c in explanation["comparisons"].as_array().cloned().unwrap_or_default() {
                    @let attribute = c["attribute"].as_str().unwrap_or_default();
                    @let weight = c["weight"].as_f64().unwrap_or(0.0);
                    tr {
                        th scope="row" { (attribute.replace('_', " ")) }
                        td { (this.get(attribute).cloned().unwrap_or_default()) }
                        td { (other.get(attribute).cloned().unwrap_or_default()) }
                        td { (c["level"].as_str().unwrap_or("missing")) }
                        td.num.positive[weight > 0.0].negative[weight < 0.0] { (format!("{weight:+.2}")) }
                    }
                }
            }
        }
        dl #total {
            dt { "Prior, term frequency, household cap" }
            dd { (format!("{:+.2}", explanation["prior"].as_f64().unwrap_or(0.0))) ", "
                 (format!("{:+.2}", explanation["term_frequency"].as_f64().unwrap_or(0.0)))
                 @if let Some(h) = explanation["household_capped"].as_f64() { ", household evidence capped at " (format!("{h:.2}")) } }
            dt { "Total" }
            dd { strong { (format!("{total:+.2}")) } " against link ≥ " (link.map(|l| format!("{l:.2}")).unwrap_or_default())
                 " and review ≥ " (review.map(|r| format!("{r:.2}")).unwrap_or_default())
                 ": band " strong { (explanation["band"].as_str().unwrap_or_default()) }
                 @if let Some(v) = explanation["veto"].as_str() { " (veto: " (v) ")" } }
        }
    }
}

async fn record_values(state: &AppState, record: &str) -> HashMap<&'static str, String> {
    match mdm_projections::query::source_record(&state.read, record).await {
        Ok(Some(r)) => compared_values(&r.attributes.unwrap_or(Value::Null)),
        _ => HashMap::new(),
    }
}

/// `GET /console/customers/{token}/decisions/{position}`: a decision's match
/// explanation.
pub async fn decision(
    State(state): State<AppState>,
    signed: Signed,
    PathParam((token, position)): PathParam<(Uuid, i64)>,
) -> Response {
    let mut cursor = None;
    let mut found = None;
    for _ in 0..50 {
        let (status, _, page_body) = json_of(
            customers::get_history(
                State(state.clone()),
                PathParam(token),
                QueryParams(PageParams {
                    cursor,
                    limit: Some(100),
                }),
            )
            .await,
        )
        .await;
        if !status.is_success() {
            return message_page(
                Some(&signed),
                status,
                "Decision not shown",
                &refusal(status, &page_body),
            );
        }
        found = page_body["decisions"]
            .as_array()
            .and_then(|ds| ds.iter().find(|d| d["position"].as_i64() == Some(position)).cloned());
        cursor = page_body["next"].as_i64();
        if found.is_some() || cursor.is_none() {
            break;
        }
    }
    let Some(d) = found else {
        return message_page(
            Some(&signed),
            StatusCode::NOT_FOUND,
            "Not found",
            "No decision of this customer at that position.",
        );
    };
    let this = match d["record"].as_str() {
        Some(r) => record_values(&state, r).await,
        None => HashMap::new(),
    };
    // The other side: the customer the record was compared with, as it is now.
    let other_token = d["other_tokens"][0]
        .as_str()
        .and_then(|t| Uuid::parse_str(t).ok())
        .unwrap_or(token);
    let other = match mdm_projections::query::customer(&state.read, other_token).await {
        Ok(Some(c)) => {
            let doc = customers::customer_doc(&c, &signed.principal);
            golden_values(&json!(doc.attributes))
        }
        _ => HashMap::new(),
    };
    let body = html! {
        h1 { "Match explanation" }
        p { (d["type"].as_str().unwrap_or_default()) " at log position " (position) ", " (d["recorded_at"].as_str().unwrap_or_default())
            ", by " (d["actor"]["kind"].as_str().unwrap_or_default()) ": " (d["reason"].as_str().unwrap_or_default()) }
        p { "Customer " a.customer-link href={"/console/customers/" (token)} { (token) } }
        (explanation_table(&d["explanation"], &this, &other, "Customer compared with (now)"))
    };
    html_response(StatusCode::OK, page(Some(&signed), "Match explanation", body))
}

/// `GET /console/reviews`: the open review items.
pub async fn reviews(State(state): State<AppState>, signed: Signed) -> Response {
    if let Err(r) = signed.allowed(Need::Steward) {
        return r;
    }
    let (status, _, list) = json_of(
        customers::list_reviews(
            State(state.clone()),
            QueryParams(ReviewParams {
                state: None,
                cursor: None,
                limit: Some(100),
            }),
        )
        .await,
    )
    .await;
    if !status.is_success() {
        return message_page(Some(&signed), status, "Review queue not shown", &refusal(status, &list));
    }
    let items = list["reviews"].as_array().cloned().unwrap_or_default();
    let body = html! {
        h1 { "Review queue" }
        p { (items.len()) " open item" @if items.len() != 1 { "s" } @if list["next"].is_number() { " (first 100 shown)" } "." }
        table #reviews {
            thead { tr { th { "Item" } th.num { "Score" } th { "Opened" } th { "Customer" } th { "Candidate" } th { "Taken by" } } }
            tbody {
                @for r in &items {
                    @let id = r["review_id"].as_str().unwrap_or_default();
                    tr {
                        td { a.review-link href={"/console/reviews/" (id)} { "Review " (id.get(..8).unwrap_or(id)) } }
                        td.num { (format!("{:.2}", r["total"].as_f64().unwrap_or(0.0))) }
                        td { (r["opened_at"].as_str().unwrap_or_default()) }
                        td { a.customer-link href={"/console/customers/" (r["token"].as_str().unwrap_or_default())} { (r["token"].as_str().unwrap_or_default()) } }
                        td { a.customer-link href={"/console/customers/" (r["candidate"].as_str().unwrap_or_default())} { (r["candidate"].as_str().unwrap_or_default()) } }
                        td { (r["taken_by"].as_str().unwrap_or("")) }
                    }
                }
            }
        }
    };
    html_response(StatusCode::OK, page(Some(&signed), "Review queue", body))
}

/// `GET /console/reviews/{id}`: one item with its explanation and the
/// decision form.
pub async fn review(State(state): State<AppState>, signed: Signed, PathParam(id): PathParam<Uuid>) -> Response {
    if let Err(r) = signed.allowed(Need::Steward) {
        return r;
    }
    let (status, _, r) = json_of(customers::get_review(State(state.clone()), PathParam(id)).await).await;
    if !status.is_success() {
        return message_page(Some(&signed), status, "Review item not shown", &refusal(status, &r));
    }
    let this = record_values(&state, r["record"].as_str().unwrap_or_default()).await;
    let other = record_values(&state, r["candidate_record"].as_str().unwrap_or_default()).await;
    let open = r["state"] == "open";
    let body = html! {
        h1 { "Review item" }
        p { "Record of customer " a.customer-link href={"/console/customers/" (r["token"].as_str().unwrap_or_default())} { (r["token"].as_str().unwrap_or_default()) }
            ", candidate customer " a.customer-link href={"/console/customers/" (r["candidate"].as_str().unwrap_or_default())} { (r["candidate"].as_str().unwrap_or_default()) }
            ". State: " strong { (r["state"].as_str().unwrap_or_default()) } }
        (explanation_table(&r["explanation"], &this, &other, "Candidate's record"))
        @if open {
            form #review-form .box method="post" action={"/console/reviews/" (id)} {
                (signed.csrf_field())
                fieldset {
                    legend { "Decision" }
                    input #outcome-link type="radio" name="outcome" value="linked" required; label.inline for="outcome-link" { "Link: the same person" }
                    input #outcome-keep_apart type="radio" name="outcome" value="kept_apart"; label.inline for="outcome-keep_apart" { "Keep apart: not a match" }
                    input #outcome-skip type="radio" name="outcome" value="skipped"; label.inline for="outcome-skip" { "Skip" }
                }
                label for="review-reason" { "Reason" }
                input #review-reason type="text" name="reason" required;
                div { button #decide type="submit" { "Decide" } }
            }
        }
    };
    html_response(StatusCode::OK, page(Some(&signed), "Review item", body))
}

/// `POST /console/reviews/{id}`: decides an item, then on to the next.
pub async fn decide_review(
    State(state): State<AppState>,
    signed: Signed,
    PathParam(id): PathParam<Uuid>,
    body: Bytes,
) -> Response {
    let form = match signed.form(Need::Steward, &body) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let json = json!({"outcome": form.get("outcome").cloned().unwrap_or_default(), "reason": form.get("reason").cloned().unwrap_or_default()});
    let (status, _, problem) = json_of(
        steward::decide_review(
            State(state.clone()),
            Extension(signed.principal.clone()),
            PathParam(id),
            Bytes::from(json.to_string()),
        )
        .await,
    )
    .await;
    if !status.is_success() {
        return after_form(
            &state,
            &signed,
            false,
            refusal(status, &problem),
            &format!("/console/reviews/{id}"),
        );
    }
    // The next open item (the read model may still list this one).
    let (_, _, list) = json_of(
        customers::list_reviews(
            State(state.clone()),
            QueryParams(ReviewParams {
                state: None,
                cursor: None,
                limit: Some(5),
            }),
        )
        .await,
    )
    .await;
    let next = list["reviews"].as_array().and_then(|items| {
        items
            .iter()
            .filter_map(|r| r["review_id"].as_str())
            .find(|r| *r != id.to_string())
            .map(str::to_owned)
    });
    let to = match next {
        Some(n) => format!("/console/reviews/{n}"),
        None => "/console/reviews".to_owned(),
    };
    after_form(&state, &signed, true, "Decided. Here is the next item.", &to)
}

/// `GET /console/ops`: projections, ingest rate and the review queue.
pub async fn ops(State(state): State<AppState>, signed: Signed) -> Response {
    let (_, _, ready) = json_of(ops::ready(State(state.clone())).await).await;
    let open_reviews = mdm_projections::query::open_review_count(&state.read).await.ok();
    let (total, last_minute) = state.metrics.ingest_rate();
    let body = html! {
        h1 { "Operations" }
        p { "Service: " strong { (ready["status"].as_str().unwrap_or("not ready")) } ", log head " (ready["log_head"]) ", resolver " (ready["resolver"].as_str().unwrap_or("replaying or restarting")) "." }
        table #projections {
            thead { tr { th { "Projection" } th.num { "Position" } th.num { "Lag (s)" } } }
            tbody {
                @for p in ready["projections"].as_array().cloned().unwrap_or_default() {
                    tr { th scope="row" { (p["name"].as_str().unwrap_or_default()) } td.num { (p["position"]) } td.num { (format!("{:.1}", p["lag_seconds"].as_f64().unwrap_or(0.0))) } }
                }
            }
        }
        dl {
            dt { "Ingest rate" }
            dd #ingest-rate { (last_minute) " records in the last minute; " (total) " since the service started" }
            dt { "Review queue" }
            dd #review-queue-size { @match open_reviews { Some(n) => { (n) " open items" } None => { "unknown" } } }
        }
    };
    html_response(StatusCode::OK, page(Some(&signed), "Operations", body))
}
