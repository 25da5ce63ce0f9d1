//! `GET /v1/privacy/exports/{token}`: the CCPA right to know. A compliance
//! user downloads, as one JSON document, everything the service holds on a
//! person: the golden record with the lineage of each value, the stewards'
//! overrides, every source record with every version as its system sent
//! it, the whole decision history with its explanations, the household
//! (its members' tokens only), who received the person's data, and the
//! privacy requests naming them.
//!
//! Everything is read from the read models, as the query API reads it
//! (the same documents: lineage, overrides, source records with
//! `?versions=true`, history), for the customer and every token merged
//! into it; field scopes do not apply (compliance sees all). A merged token
//! exports its survivor (the same person), an erased one answers 410, an
//! unknown one 404. The service logs only the token and counts.

// Helpers return the response to answer instead as their error.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use mdm_projections::changes::{changes_of, ChangeCursor, ChangeType, CustomerChange};
use mdm_projections::ledger_query;
use mdm_projections::query::{self, CustomerRow, CustomerStatus, HistoryRow, PAGE_MAX};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use super::customers::{
    golden_attributes, gone, history_doc, lineage_doc, not_found, override_doc, read_failed, source_record_docs,
};
use super::feed::visible_cloud_event;
use super::problem::{PathParam, Problem};
use super::AppState;
use crate::auth::{Role, Scopes, SCOPE_NAMES};
use crate::privacy::RequestDoc;
use crate::webhooks::WebhookError;

/// Everything held on one person.
#[derive(Serialize, ToSchema)]
pub struct ExportDoc {
    /// When the export was made.
    pub exported_at: DateTime<Utc>,
    /// The customer exported: the token asked for, or the customer it was
    /// merged into (the same person).
    pub token: Uuid,
    /// The token asked for.
    pub requested_token: Uuid,
    /// Tokens merged into this customer: their records, decisions, changes
    /// and requests are part of the export.
    pub tokens_merged_into_it: Vec<Uuid>,
    pub golden_record: GoldenRecord,
    /// The stewards' value overrides in force (set on the customer or a
    /// token merged into it), oldest first.
    #[schema(value_type = Vec<Object>)]
    pub overrides: Vec<Value>,
    /// Every source record of the customer as `GET
    /// /v1/customers/{token}/source-records?versions=true` shows it: the
    /// latest version (`raw` verbatim, `attributes` as mapped), `versions`
    /// (each as received: `raw`, `raw_header`, `attributes`, `position`,
    /// `recorded_at`) and the `customers` it belonged to over time.
    #[schema(value_type = Vec<Object>)]
    pub source_records: Vec<Value>,
    /// Every decision that named the customer or a token merged into it,
    /// in log order, as the history shows it (actor, reason, explanation),
    /// with `customer_tokens`: which of those tokens it named.
    #[schema(value_type = Vec<Object>)]
    pub decisions: Vec<Value>,
    /// The household, if the customer belongs to one.
    pub household: Option<Household>,
    pub recipients: Recipients,
    /// The privacy requests naming the customer or a token merged into it,
    /// with their notices.
    pub privacy_requests: Vec<RequestDoc>,
}

/// Personal data: only the sizes are shown.
impl fmt::Debug for ExportDoc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExportDoc")
            .field("token", &self.token)
            .field("requested_token", &self.requested_token)
            .field("tokens_merged_into_it", &self.tokens_merged_into_it)
            .field("overrides", &self.overrides.len())
            .field("source_records", &self.source_records.len())
            .field("decisions", &self.decisions.len())
            .field("household", &self.household)
            .field("recipients", &self.recipients)
            .field("privacy_requests", &self.privacy_requests.len())
            .finish_non_exhaustive()
    }
}

/// The golden record and where each value came from.
#[derive(Serialize, ToSchema)]
pub struct GoldenRecord {
    /// `active`.
    pub status: String,
    /// The customer's version (its `ETag`) when it was read.
    pub version: i64,
    pub record_count: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Log position of the last change.
    pub updated_position: i64,
    /// The survivorship rule set that built the values.
    pub rule_set: String,
    /// The golden attributes (`name`, `email`, `phone`, `address`,
    /// `date_of_birth`).
    #[schema(value_type = Object)]
    pub attributes: Map<String, Value>,
    /// Per golden attribute: its value, the source record (`record`,
    /// `system`, `source_position`), the `rule` that chose it and the
    /// steward whose override it is (`overridden_by`).
    #[schema(value_type = Object)]
    pub lineage: BTreeMap<String, Value>,
}

/// Personal data: only the attribute names are shown.
impl fmt::Debug for GoldenRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GoldenRecord")
            .field("version", &self.version)
            .field("attributes", &self.attributes.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// A household: a relationship between customers, not a merge. Other
/// members are named by token only: their data is theirs.
#[derive(Debug, Serialize, ToSchema)]
pub struct Household {
    pub household: Uuid,
    /// Every member's token, this customer's included.
    pub members: Vec<Uuid>,
}

/// Who received, or may read, the person's data.
#[derive(Debug, Serialize, ToSchema)]
pub struct Recipients {
    pub webhooks: WebhookRecipients,
    pub api_clients: ClientRecipients,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookRecipients {
    /// How the list was derived.
    pub basis: String,
    pub subscribers: Vec<WebhookRecipient>,
}

/// A webhook subscriber that was sent changes of this customer.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookRecipient {
    pub id: Uuid,
    /// The host of its URL (not the path, which may hold a secret).
    pub host: String,
    /// The types of this customer's changes it was sent.
    pub change_types: Vec<String>,
    /// How many of this customer's changes it was sent.
    pub changes: usize,
    /// The first and the last of them (change ids, `P` or `P:k`).
    pub first_change: String,
    pub last_change: String,
    /// The golden attributes its deliveries carry.
    pub scopes: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ClientRecipients {
    /// How the list was derived.
    pub basis: String,
    pub clients: Vec<ClientRecipient>,
}

/// An API client that may read this customer (reader role).
#[derive(Debug, Serialize, ToSchema)]
pub struct ClientRecipient {
    pub client_id: Uuid,
    pub name: String,
    /// The golden attributes it may read.
    pub scopes: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

const WEBHOOK_BASIS: &str = "No per-customer delivery record is kept. Listed: every webhook subscriber whose \
     delivery checkpoint is at or past one of this customer's changes in the change log (customer_change, for \
     the customer's token and the tokens merged into it) of a type it subscribes to, that its field scopes \
     leave something of, and that is not among its undelivered dead letters. The start of a subscription is not \
     kept, so a subscriber registered after such a change is listed too: the list may name more recipients than \
     received the data, never fewer.";

const CLIENT_BASIS: &str = "No per-request access log is kept. Listed: every API client with the reader role, \
     which may read this customer's golden record within its field scopes through the query API and the change \
     feed, except clients revoked before the person's data was first held. Clients of the other roles are the \
     business's own operations (ingest sends data in; steward, compliance and admin administer it) and are not \
     listed.";

/// Everything held on a person (CCPA right to know), as one JSON document.
#[utoipa::path(get, path = "/v1/privacy/exports/{token}", tag = "privacy",
    params(("token" = Uuid, Path, description = "The customer's token (a merged token exports the customer it was merged into)")),
    responses(
        (status = 200, description = "The export, as an attachment `mdm-export-<token>.json`", body = ExportDoc),
        (status = 404, description = "No customer has this token", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "The customer was erased", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn export(State(state): State<AppState>, PathParam(requested): PathParam<Uuid>) -> Response {
    let c = try_or!(customer_of(&state, requested).await);
    let token = c.token;
    let merged = try_or!(query::tokens_merged_into(&state.read, token)
        .await
        .map_err(|e| read_failed(&e)));
    let mut tokens = vec![token];
    tokens.extend(merged.iter().copied());

    let lineage = try_or!(query::lineage(&state.read, token).await.map_err(|e| read_failed(&e)));
    let overrides = try_or!(query::overrides_of(&state.read, token)
        .await
        .map_err(|e| read_failed(&e)));
    let source_records = try_or!(source_record_docs(&state, token, true).await);
    let history = try_or!(decisions(&state, &tokens).await);
    let household = match c.household {
        None => None,
        Some(h) => {
            let members = try_or!(query::household_members(&state.read, h)
                .await
                .map_err(|e| read_failed(&e)));
            Some(Household {
                household: h,
                members: members.iter().map(|m| m.token).collect(),
            })
        }
    };
    let changes = try_or!(changes_of(&state.read, &tokens).await.map_err(|e| read_failed(&e)));
    let subscribers = try_or!(webhook_recipients(&state, &changes).await);
    // The person's data was first held when the first of their tokens was
    // created: the earliest decision naming one of them.
    let held_since = history
        .iter()
        .map(|(h, _)| h.recorded_at)
        .chain([c.created_at])
        .min()
        .unwrap_or(c.created_at);
    let clients = try_or!(client_recipients(&state, held_since).await);
    let now = Utc::now();
    let requests = try_or!(privacy_requests(&state, &tokens, now).await);

    let doc = ExportDoc {
        exported_at: now,
        token,
        requested_token: requested,
        tokens_merged_into_it: merged,
        golden_record: GoldenRecord {
            status: c.status.as_str().to_owned(),
            version: c.version,
            record_count: c.record_count,
            created_at: c.created_at,
            updated_at: c.updated_at,
            updated_position: c.updated_position,
            rule_set: c.rule_set.clone(),
            attributes: golden_attributes(&c),
            lineage: lineage.iter().map(|l| (l.attribute.clone(), lineage_doc(l))).collect(),
        },
        overrides: overrides.iter().map(override_doc).collect(),
        source_records,
        decisions: history
            .iter()
            .map(|(h, named)| {
                let mut d = history_doc(h);
                d["customer_tokens"] = serde_json::json!(named);
                d
            })
            .collect(),
        household,
        recipients: Recipients {
            webhooks: WebhookRecipients {
                basis: WEBHOOK_BASIS.to_owned(),
                subscribers,
            },
            api_clients: ClientRecipients {
                basis: CLIENT_BASIS.to_owned(),
                clients,
            },
        },
        privacy_requests: requests,
    };
    let versions: usize = doc
        .source_records
        .iter()
        .map(|r| r["versions"].as_array().map_or(0, Vec::len))
        .sum();
    tracing::info!(
        token = %token,
        merged = doc.tokens_merged_into_it.len(),
        source_records = doc.source_records.len(),
        versions,
        decisions = doc.decisions.len(),
        overrides = doc.overrides.len(),
        webhook_recipients = doc.recipients.webhooks.subscribers.len(),
        client_recipients = doc.recipients.api_clients.clients.len(),
        privacy_requests = doc.privacy_requests.len(),
        "privacy export served"
    );
    let mut response = Json(doc).into_response();
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"mdm-export-{token}.json\"")) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The active customer of `token`, following a merge to its survivor; the
/// response to give instead for an erased (410) or unknown (404) token.
async fn customer_of(state: &AppState, token: Uuid) -> Result<CustomerRow, Response> {
    let mut at = token;
    // Merge chains are flattened: one step reaches the survivor; the bound
    // only guards against a row caught between two updates.
    for _ in 0..4 {
        match query::customer(&state.read, at).await {
            Err(e) => return Err(read_failed(&e)),
            Ok(None) => return Err(not_found("customer", "token")),
            Ok(Some(c)) => match (c.status, c.merged_into) {
                (CustomerStatus::Erased, _) => return Err(gone(token)),
                (CustomerStatus::Merged, Some(survivor)) => at = survivor,
                (CustomerStatus::Merged, None) => return Err(not_found("customer", "token")),
                (CustomerStatus::Active, _) => return Ok(c),
            },
        }
    }
    Err(Problem::unavailable("read-model database").into_response())
}

/// Every decision naming one of `tokens`, once each (a merge names both
/// sides), in log order, with the tokens among `tokens` it named.
async fn decisions(state: &AppState, tokens: &[Uuid]) -> Result<Vec<(HistoryRow, Vec<Uuid>)>, Response> {
    let mut by_position: BTreeMap<i64, (HistoryRow, Vec<Uuid>)> = BTreeMap::new();
    for &t in tokens {
        let mut after = None;
        loop {
            let page = query::history(&state.read, t, after, PAGE_MAX)
                .await
                .map_err(|e| read_failed(&e))?;
            let full = page.len() >= PAGE_MAX;
            after = page.last().map(|h| h.position);
            for h in page {
                by_position
                    .entry(h.position)
                    .or_insert_with(|| (h, Vec::new()))
                    .1
                    .push(t);
            }
            if !full {
                break;
            }
        }
    }
    Ok(by_position.into_values().collect())
}

/// The golden attributes `scopes` let through, by name.
fn scope_names(scopes: &Scopes) -> Vec<String> {
    SCOPE_NAMES
        .iter()
        .filter(|n| scopes.allows(n))
        .map(|n| (*n).to_owned())
        .collect()
}

fn webhooks_failed(error: &WebhookError) -> Response {
    tracing::error!(error = %error, "privacy export: webhook subscribers unreadable");
    Problem::unavailable("read-model database").into_response()
}

/// The webhook subscribers that were sent some of `changes` (see
/// [`WEBHOOK_BASIS`]).
async fn webhook_recipients(state: &AppState, changes: &[CustomerChange]) -> Result<Vec<WebhookRecipient>, Response> {
    if changes.is_empty() {
        return Ok(Vec::new());
    }
    let subscribers = state.webhooks.list().await.map_err(|e| webhooks_failed(&e))?;
    let mut out = Vec::new();
    for s in subscribers {
        let Some(checkpoint) = ChangeCursor::parse(&s.checkpoint) else {
            continue;
        };
        let scopes = match &s.scopes {
            None => Scopes::all(),
            Some(names) => Scopes::parse(&names.join(",")).unwrap_or_else(|_| Scopes::all()),
        };
        let takes = |t: ChangeType| {
            s.types
                .as_ref()
                .is_none_or(|types| types.iter().any(|x| x == t.as_str()))
        };
        let passed: Vec<&CustomerChange> = changes
            .iter()
            .filter(|c| c.cursor() <= checkpoint && takes(c.change_type))
            .filter(|c| visible_cloud_event(c, &scopes).is_some())
            .collect();
        if passed.is_empty() {
            continue;
        }
        let dead: BTreeSet<String> = match state.webhooks.dead_letters(s.id).await {
            Ok(d) => d.into_iter().map(|d| d.id).collect(),
            // Deleted meanwhile: it keeps what it received, but the
            // service no longer knows it.
            Err(WebhookError::Unknown) => continue,
            Err(e) => return Err(webhooks_failed(&e)),
        };
        let sent: Vec<&CustomerChange> = passed
            .into_iter()
            .filter(|c| !dead.contains(&c.cursor().to_string()))
            .collect();
        let (Some(first), Some(last)) = (sent.first(), sent.last()) else {
            continue;
        };
        let types: BTreeSet<ChangeType> = sent.iter().map(|c| c.change_type).collect();
        out.push(WebhookRecipient {
            id: s.id,
            host: reqwest::Url::parse(&s.url)
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned))
                .unwrap_or_default(),
            change_types: types.iter().map(|t| t.as_str().to_owned()).collect(),
            changes: sent.len(),
            first_change: first.cursor().to_string(),
            last_change: last.cursor().to_string(),
            scopes: scope_names(&scopes),
        });
    }
    Ok(out)
}

/// The reader clients that may read the customer (see [`CLIENT_BASIS`]).
async fn client_recipients(state: &AppState, held_since: DateTime<Utc>) -> Result<Vec<ClientRecipient>, Response> {
    let clients = state.clients.list().await.map_err(|error| {
        tracing::error!(error = %error, "privacy export: API clients unreadable");
        Problem::unavailable("read-model database").into_response()
    })?;
    Ok(clients
        .into_iter()
        .filter(|c| c.role == Role::Reader && c.revoked_at.is_none_or(|r| r > held_since))
        .map(|c| ClientRecipient {
            client_id: c.client_id,
            scopes: scope_names(&Scopes::parse(&c.scopes).unwrap_or_else(|_| Scopes::all())),
            name: c.name,
            created_at: c.created_at,
            revoked_at: c.revoked_at,
        })
        .collect())
}

/// The ledger's requests naming one of `tokens`, with their notices.
async fn privacy_requests(state: &AppState, tokens: &[Uuid], now: DateTime<Utc>) -> Result<Vec<RequestDoc>, Response> {
    // Before the ledger projection first ran there is no table: no request.
    match state.read.table_exists("privacy_request").await {
        Ok(false) => return Ok(Vec::new()),
        Ok(true) => {}
        Err(e) => return Err(read_failed(&e)),
    }
    let rows = ledger_query::privacy_requests_naming(&state.read, tokens)
        .await
        .map_err(|e| read_failed(&e))?;
    Ok(rows
        .iter()
        .map(|(r, notices)| RequestDoc::of_row(r, Some(notices.as_slice()), now))
        .collect())
}
