//! The read functions of the read models: what the API and the CLI call
//! (they never write SQL themselves).
//!
//! Every function reads the live tables through the `ReadDb` pool, in the
//! SQL both dialects accept, and returns typed rows: tokens as `Uuid`, times
//! as `DateTime<Utc>`, JSON documents as `serde_json::Value`. The rows
//! derive `Serialize` for the API; those holding personal data (golden
//! values, attributes, raw payloads, source ids) have a hand-written `Debug`
//! that shows only which values are present, so a stray `{:?}` in a log
//! line leaks nothing.
//!
//! Lists are keyset-paginated: the caller passes the key of the last row it
//! has (`after`) and a `limit`, capped at [`PAGE_MAX`] ([`SEARCH_PAGE_MAX`]
//! for search); a limit of 0 reads one row.

use std::fmt;

use chrono::{DateTime, NaiveDate, Utc};
use mdm_domain::matching::features::FeatureSettings;
use mdm_domain::source::{CanonicalAttributes, Phone, PostalAddress};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use sqlx::any::AnyRow;
use sqlx::Row;
use uuid::Uuid;

use crate::customer::search_keys;
use crate::db::{parse_time, ReadDb};

/// The most rows one call of a paginated read returns.
pub const PAGE_MAX: usize = 1000;

/// The most customers one search page returns.
pub const SEARCH_PAGE_MAX: usize = 100;

fn capped(limit: usize, max: usize) -> i64 {
    i64::try_from(limit.clamp(1, max)).unwrap_or(1)
}

/// Shows whether a personal value is present, never the value.
struct Presence(bool);

impl Presence {
    fn of<T>(v: &Option<T>) -> Presence {
        Presence(v.is_some())
    }
}

impl fmt::Debug for Presence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0 { "Some(..)" } else { "None" })
    }
}

// ---- Decoding ----

fn decode_error(column: &str, reason: impl Into<String>) -> sqlx::Error {
    let reason: String = reason.into();
    sqlx::Error::ColumnDecode {
        index: column.to_owned(),
        source: reason.into(),
    }
}

fn uuid_of(column: &str, text: &str) -> Result<Uuid, sqlx::Error> {
    Uuid::parse_str(text).map_err(|e| decode_error(column, e.to_string()))
}

fn get_uuid(row: &AnyRow, column: &str) -> Result<Uuid, sqlx::Error> {
    let text: String = row.try_get(column)?;
    uuid_of(column, &text)
}

fn get_opt_uuid(row: &AnyRow, column: &str) -> Result<Option<Uuid>, sqlx::Error> {
    let text: Option<String> = row.try_get(column)?;
    text.map(|t| uuid_of(column, &t)).transpose()
}

fn time_of(column: &str, text: &str) -> Result<DateTime<Utc>, sqlx::Error> {
    parse_time(text).ok_or_else(|| decode_error(column, "not an RFC 3339 time"))
}

fn get_time(row: &AnyRow, column: &str) -> Result<DateTime<Utc>, sqlx::Error> {
    let text: String = row.try_get(column)?;
    time_of(column, &text)
}

fn get_opt_time(row: &AnyRow, column: &str) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    let text: Option<String> = row.try_get(column)?;
    text.map(|t| time_of(column, &t)).transpose()
}

fn json_of<T: serde::de::DeserializeOwned>(column: &str, text: &str) -> Result<T, sqlx::Error> {
    // The parser's message may quote the document: keep only where it failed.
    serde_json::from_str(text).map_err(|e| {
        decode_error(
            column,
            format!("not the JSON expected (line {}, column {})", e.line(), e.column()),
        )
    })
}

fn get_json(row: &AnyRow, column: &str) -> Result<Json, sqlx::Error> {
    let text: String = row.try_get(column)?;
    json_of(column, &text)
}

fn get_opt_json(row: &AnyRow, column: &str) -> Result<Option<Json>, sqlx::Error> {
    let text: Option<String> = row.try_get(column)?;
    text.map(|t| json_of(column, &t)).transpose()
}

// ---- Customers ----

/// Whether a token is a customer of its own, redirects to another, or was
/// erased.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CustomerStatus {
    Active,
    Merged,
    /// Erased for ever at the person's request (CCPA): the row has no
    /// values, no household and no records; the API answers 410.
    Erased,
}

impl CustomerStatus {
    pub const ALL: [CustomerStatus; 3] = [CustomerStatus::Active, CustomerStatus::Merged, CustomerStatus::Erased];

    pub fn as_str(self) -> &'static str {
        match self {
            CustomerStatus::Active => "active",
            CustomerStatus::Merged => "merged",
            CustomerStatus::Erased => "erased",
        }
    }

    /// The status a stored `status` names.
    pub fn parse(text: &str) -> Option<CustomerStatus> {
        CustomerStatus::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// A customer: its golden record and status.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomerRow {
    pub token: Uuid,
    pub status: CustomerStatus,
    /// The survivor a merged token redirects to.
    pub merged_into: Option<Uuid>,
    pub household: Option<Uuid>,
    pub given_name: Option<String>,
    pub middle_name: Option<String>,
    pub family_name: Option<String>,
    pub name_suffix: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub address_line1: Option<String>,
    pub address_line2: Option<String>,
    pub city: Option<String>,
    pub region: Option<String>,
    pub postcode: Option<String>,
    pub country: Option<String>,
    pub date_of_birth: Option<NaiveDate>,
    /// How many source records it holds now.
    pub record_count: i64,
    /// The version steward commands name (`If-Match`).
    pub version: i64,
    pub created_position: i64,
    pub created_at: DateTime<Utc>,
    pub updated_position: i64,
    pub updated_at: DateTime<Utc>,
    /// The survivorship rule set that built the golden values.
    pub rule_set: String,
}

/// Golden values are personal data: only their presence is shown.
impl fmt::Debug for CustomerRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CustomerRow")
            .field("token", &self.token)
            .field("status", &self.status)
            .field("merged_into", &self.merged_into)
            .field("household", &self.household)
            .field("given_name", &Presence::of(&self.given_name))
            .field("middle_name", &Presence::of(&self.middle_name))
            .field("family_name", &Presence::of(&self.family_name))
            .field("name_suffix", &Presence::of(&self.name_suffix))
            .field("email", &Presence::of(&self.email))
            .field("phone", &Presence::of(&self.phone))
            .field("address_line1", &Presence::of(&self.address_line1))
            .field("address_line2", &Presence::of(&self.address_line2))
            .field("city", &Presence::of(&self.city))
            .field("region", &Presence::of(&self.region))
            .field("postcode", &Presence::of(&self.postcode))
            .field("country", &Presence::of(&self.country))
            .field("date_of_birth", &Presence::of(&self.date_of_birth))
            .field("record_count", &self.record_count)
            .field("version", &self.version)
            .field("created_position", &self.created_position)
            .field("created_at", &self.created_at)
            .field("updated_position", &self.updated_position)
            .field("updated_at", &self.updated_at)
            .field("rule_set", &self.rule_set)
            .finish()
    }
}

const CUSTOMER_COLUMNS: &str = "token, status, merged_into, household, given_name, middle_name, family_name, \
     name_suffix, email, phone, address_line1, address_line2, city, region, postcode, country, date_of_birth, \
     record_count, version, created_position, created_at, updated_position, updated_at, rule_set";

fn customer_of(row: &AnyRow) -> Result<CustomerRow, sqlx::Error> {
    let status: String = row.try_get("status")?;
    let Some(status) = CustomerStatus::parse(&status) else {
        return Err(decode_error("status", format!("unknown status {status:?}")));
    };
    let dob: Option<String> = row.try_get("date_of_birth")?;
    let date_of_birth = dob
        .map(|d| {
            NaiveDate::parse_from_str(&d, "%Y-%m-%d").map_err(|_| decode_error("date_of_birth", "not an ISO date"))
        })
        .transpose()?;
    Ok(CustomerRow {
        token: get_uuid(row, "token")?,
        status,
        merged_into: get_opt_uuid(row, "merged_into")?,
        household: get_opt_uuid(row, "household")?,
        given_name: row.try_get("given_name")?,
        middle_name: row.try_get("middle_name")?,
        family_name: row.try_get("family_name")?,
        name_suffix: row.try_get("name_suffix")?,
        email: row.try_get("email")?,
        phone: row.try_get("phone")?,
        address_line1: row.try_get("address_line1")?,
        address_line2: row.try_get("address_line2")?,
        city: row.try_get("city")?,
        region: row.try_get("region")?,
        postcode: row.try_get("postcode")?,
        country: row.try_get("country")?,
        date_of_birth,
        record_count: row.try_get("record_count")?,
        version: row.try_get("version")?,
        created_position: row.try_get("created_position")?,
        created_at: get_time(row, "created_at")?,
        updated_position: row.try_get("updated_position")?,
        updated_at: get_time(row, "updated_at")?,
        rule_set: row.try_get("rule_set")?,
    })
}

/// The customer of `token`, active, merged (a merged one names its
/// survivor in `merged_into`) or erased (no values: the caller answers that
/// it is gone); `None` for an unknown token.
pub async fn customer(db: &ReadDb, token: Uuid) -> Result<Option<CustomerRow>, sqlx::Error> {
    let sql = format!("SELECT {CUSTOMER_COLUMNS} FROM customer WHERE token = $1");
    sqlx::query(&sql)
        .bind(token.to_string())
        .fetch_optional(db.pool())
        .await?
        .as_ref()
        .map(customer_of)
        .transpose()
}

/// The tokens merged into the customer `token` (chains are flattened, so
/// these are all of them), by token; empty for a token nothing was merged
/// into.
pub async fn tokens_merged_into(db: &ReadDb, token: Uuid) -> Result<Vec<Uuid>, sqlx::Error> {
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT token FROM customer WHERE merged_into = $1 AND status = 'merged' ORDER BY token")
            .bind(token.to_string())
            .fetch_all(db.pool())
            .await?;
    rows.iter().map(|(t,)| uuid_of("token", t)).collect()
}

/// Where one golden value came from.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct AttributeLineage {
    /// `name`, `email`, `phone`, `address` or `date_of_birth`.
    pub attribute: String,
    /// The golden value (names and addresses keep their parts).
    pub value: Json,
    /// The source record (stream) it came from; `None` for an override.
    pub record: Option<String>,
    pub system: Option<String>,
    /// Log position of the record version (or override) it came from.
    pub source_position: i64,
    /// The survivorship rule that chose it.
    pub rule: String,
    pub rule_set: String,
    /// The steward whose override it is, if one.
    pub overridden_by: Option<String>,
}

/// The value is personal data: only its presence is shown.
impl fmt::Debug for AttributeLineage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AttributeLineage")
            .field("attribute", &self.attribute)
            .field("value", &Presence(!self.value.is_null()))
            .field("record", &self.record)
            .field("system", &self.system)
            .field("source_position", &self.source_position)
            .field("rule", &self.rule)
            .field("rule_set", &self.rule_set)
            .field("overridden_by", &self.overridden_by)
            .finish()
    }
}

/// The lineage of each golden value of `token`, by attribute name.
pub async fn lineage(db: &ReadDb, token: Uuid) -> Result<Vec<AttributeLineage>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT attribute, value, record, system, source_position, rule, rule_set, overridden_by \
         FROM customer_attribute WHERE token = $1 ORDER BY attribute",
    )
    .bind(token.to_string())
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|row| {
            Ok(AttributeLineage {
                attribute: row.try_get("attribute")?,
                value: get_json(row, "value")?,
                record: row.try_get("record")?,
                system: row.try_get("system")?,
                source_position: row.try_get("source_position")?,
                rule: row.try_get("rule")?,
                rule_set: row.try_get("rule_set")?,
                overridden_by: row.try_get("overridden_by")?,
            })
        })
        .collect()
}

/// A steward override in force on a customer.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct OverrideRow {
    pub override_id: Uuid,
    /// The token it was set on: the customer's own, or one merged into it.
    pub token: Uuid,
    /// `name`, `email`, `phone`, `address` or `date_of_birth`.
    pub attribute: String,
    /// The golden value it sets (names and addresses keep their parts).
    pub value: Json,
    /// The steward who set it.
    pub set_by: String,
    pub reason: String,
    /// Log position of the decision that set it: of two overrides of one
    /// attribute, the later wins.
    pub position: i64,
    /// `None`: permanent, until removed.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was set.
    pub set_at: DateTime<Utc>,
}

/// The value is personal data, and the reason may hold some: only their
/// presence is shown.
impl fmt::Debug for OverrideRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OverrideRow")
            .field("override_id", &self.override_id)
            .field("token", &self.token)
            .field("attribute", &self.attribute)
            .field("value", &Presence(!self.value.is_null()))
            .field("set_by", &self.set_by)
            .field("reason", &Presence(!self.reason.is_empty()))
            .field("position", &self.position)
            .field("expires_at", &self.expires_at)
            .field("set_at", &self.set_at)
            .finish()
    }
}

/// The overrides in force on the customer `token`, oldest first: those set
/// on it and on the tokens merged into it, not removed, whose value can
/// still be read (an override whose key was destroyed is as if it did not
/// exist). Empty for a token merged away (its overrides apply to its
/// survivor) or unknown. An override past its `expires_at` stays listed
/// until the decision expiring it is projected, as it stays in the golden
/// record.
pub async fn overrides_of(db: &ReadDb, token: Uuid) -> Result<Vec<OverrideRow>, sqlx::Error> {
    // Its own, then those of the tokens merged into it: each half served
    // by an index.
    let rows = sqlx::query(
        "SELECT o.override_id, o.token, o.attribute, o.value, o.set_by, o.reason, o.position, o.expires_at, o.set_at \
         FROM customer_override o JOIN customer c ON c.token = o.token \
         WHERE o.token = $1 AND c.status = 'active' AND o.removed_position IS NULL AND o.value IS NOT NULL \
         UNION ALL \
         SELECT o.override_id, o.token, o.attribute, o.value, o.set_by, o.reason, o.position, o.expires_at, o.set_at \
         FROM customer c JOIN customer_override o ON o.token = c.token \
         WHERE c.merged_into = $1 AND o.removed_position IS NULL AND o.value IS NOT NULL \
         ORDER BY position, override_id",
    )
    .bind(token.to_string())
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|row| {
            Ok(OverrideRow {
                override_id: get_uuid(row, "override_id")?,
                token: get_uuid(row, "token")?,
                attribute: row.try_get("attribute")?,
                value: get_json(row, "value")?,
                set_by: row.try_get("set_by")?,
                reason: row.try_get("reason")?,
                position: row.try_get("position")?,
                expires_at: get_opt_time(row, "expires_at")?,
                set_at: get_time(row, "set_at")?,
            })
        })
        .collect()
}

/// The customer a source system's record belongs to now (always an active
/// token); `None` when the record is unknown, erased or not yet resolved.
pub async fn token_by_source(db: &ReadDb, system: &str, source_id: &str) -> Result<Option<Uuid>, sqlx::Error> {
    let token: Option<(String,)> =
        sqlx::query_as("SELECT token FROM customer_member WHERE system = $1 AND source_id = $2 AND token IS NOT NULL")
            .bind(system)
            .bind(source_id)
            .fetch_optional(db.pool())
            .await?;
    token.map(|(t,)| uuid_of("token", &t)).transpose()
}

// ---- Source records ----

/// A source record's latest version as its system sent it, and its customer.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceRecordRow {
    /// The record's stream (pseudonymous).
    pub record: String,
    pub system: String,
    /// `None` once erased.
    pub source_id: Option<String>,
    /// `current`, `retracted` or `erased`.
    pub state: String,
    /// Canonical attributes of the latest version (`None` when retracted or
    /// erased; a record an erasure retained under a legal exception keeps
    /// them, and has no customer).
    pub attributes: Option<Json>,
    /// The latest payload as received (`None` when erased).
    pub raw: Option<String>,
    /// The CSV header line the raw row needs, when CSV.
    pub raw_header: Option<String>,
    pub version: i64,
    pub position: i64,
    pub first_position: i64,
    pub first_seen_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Its customer now (`None` before the resolver decided, and once its
    /// customer was erased).
    pub token: Option<Uuid>,
    /// Its customer before the last change.
    pub previous_token: Option<Uuid>,
    /// Log position of the decision that gave it its current customer.
    pub token_position: Option<i64>,
}

/// Source ids, attributes and payloads are personal data: only their
/// presence is shown.
impl fmt::Debug for SourceRecordRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceRecordRow")
            .field("record", &self.record)
            .field("system", &self.system)
            .field("source_id", &Presence::of(&self.source_id))
            .field("state", &self.state)
            .field("attributes", &Presence::of(&self.attributes))
            .field("raw", &Presence::of(&self.raw))
            .field("raw_header", &Presence::of(&self.raw_header))
            .field("version", &self.version)
            .field("position", &self.position)
            .field("first_position", &self.first_position)
            .field("first_seen_at", &self.first_seen_at)
            .field("updated_at", &self.updated_at)
            .field("token", &self.token)
            .field("previous_token", &self.previous_token)
            .field("token_position", &self.token_position)
            .finish()
    }
}

/// The latest version's content lives in `source_record_version` only (one
/// copy of every payload): the row joins it.
const SOURCE_RECORD_COLUMNS: &str = "r.record, r.system, r.source_id, r.state, v.attributes, v.raw, v.raw_header, \
     r.version, r.position, r.first_position, r.first_seen_at, r.updated_at, r.token, r.previous_token, \
     r.token_position FROM source_record r \
     LEFT JOIN source_record_version v ON v.record = r.record AND v.version = r.version";

fn source_record_of(row: &AnyRow) -> Result<SourceRecordRow, sqlx::Error> {
    Ok(SourceRecordRow {
        record: row.try_get("record")?,
        system: row.try_get("system")?,
        source_id: row.try_get("source_id")?,
        state: row.try_get("state")?,
        attributes: get_opt_json(row, "attributes")?,
        raw: row.try_get("raw")?,
        raw_header: row.try_get("raw_header")?,
        version: row.try_get("version")?,
        position: row.try_get("position")?,
        first_position: row.try_get("first_position")?,
        first_seen_at: get_time(row, "first_seen_at")?,
        updated_at: get_time(row, "updated_at")?,
        token: get_opt_uuid(row, "token")?,
        previous_token: get_opt_uuid(row, "previous_token")?,
        token_position: row.try_get("token_position")?,
    })
}

/// The source records that belong to `token` now, by record.
pub async fn source_records_of(db: &ReadDb, token: Uuid) -> Result<Vec<SourceRecordRow>, sqlx::Error> {
    let sql = format!("SELECT {SOURCE_RECORD_COLUMNS} WHERE r.token = $1 ORDER BY r.record");
    let rows = sqlx::query(&sql).bind(token.to_string()).fetch_all(db.pool()).await?;
    rows.iter().map(source_record_of).collect()
}

/// One source record by its stream.
pub async fn source_record(db: &ReadDb, record: &str) -> Result<Option<SourceRecordRow>, sqlx::Error> {
    let sql = format!("SELECT {SOURCE_RECORD_COLUMNS} WHERE r.record = $1");
    sqlx::query(&sql)
        .bind(record)
        .fetch_optional(db.pool())
        .await?
        .as_ref()
        .map(source_record_of)
        .transpose()
}

/// One version of a source record, as received.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceRecordVersionRow {
    pub record: String,
    /// Version of the event in the record's stream.
    pub version: i64,
    pub position: i64,
    /// `SourceRecordCaptured`, `SourceRecordChanged` or
    /// `SourceRecordRetracted`.
    pub event_type: String,
    /// `current`, `retracted` or `erased`.
    pub state: String,
    pub attributes: Option<Json>,
    pub raw: Option<String>,
    pub raw_header: Option<String>,
    pub recorded_at: DateTime<Utc>,
}

/// Attributes and payloads are personal data: only their presence is shown.
impl fmt::Debug for SourceRecordVersionRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceRecordVersionRow")
            .field("record", &self.record)
            .field("version", &self.version)
            .field("position", &self.position)
            .field("event_type", &self.event_type)
            .field("state", &self.state)
            .field("attributes", &Presence::of(&self.attributes))
            .field("raw", &Presence::of(&self.raw))
            .field("raw_header", &Presence::of(&self.raw_header))
            .field("recorded_at", &self.recorded_at)
            .finish()
    }
}

/// Every version of a source record, oldest first.
pub async fn source_record_versions(db: &ReadDb, record: &str) -> Result<Vec<SourceRecordVersionRow>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT record, version, position, event_type, state, attributes, raw, raw_header, recorded_at \
         FROM source_record_version WHERE record = $1 ORDER BY version",
    )
    .bind(record)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|row| {
            Ok(SourceRecordVersionRow {
                record: row.try_get("record")?,
                version: row.try_get("version")?,
                position: row.try_get("position")?,
                event_type: row.try_get("event_type")?,
                state: row.try_get("state")?,
                attributes: get_opt_json(row, "attributes")?,
                raw: row.try_get("raw")?,
                raw_header: row.try_get("raw_header")?,
                recorded_at: get_time(row, "recorded_at")?,
            })
        })
        .collect()
}

/// From which decision on a record belonged to which customer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordCustomer {
    /// Log position of the decision.
    pub position: i64,
    pub token: Uuid,
    /// The decision's event type.
    pub decision_type: String,
    pub recorded_at: DateTime<Utc>,
}

/// The customers a record belonged to over time, oldest first.
pub async fn source_record_customers(db: &ReadDb, record: &str) -> Result<Vec<RecordCustomer>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT position, token, decision_type, recorded_at FROM source_record_customer \
         WHERE record = $1 ORDER BY position",
    )
    .bind(record)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|row| {
            Ok(RecordCustomer {
                position: row.try_get("position")?,
                token: get_uuid(row, "token")?,
                decision_type: row.try_get("decision_type")?,
                recorded_at: get_time(row, "recorded_at")?,
            })
        })
        .collect()
}

// ---- Decisions ----

/// One decision that named a customer. Decisions hold no personal data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryRow {
    /// Global log position of the decision event.
    pub position: i64,
    /// The resolver's dense decision number.
    pub seq: i64,
    /// `CustomerCreated`, `RecordLinked`, `CustomersMerged`, ...
    pub decision_type: String,
    /// `resolver`, `steward` or `compliance` (an erasure).
    pub actor_kind: String,
    /// The steward's or compliance user's id (`None` for the resolver).
    pub actor: Option<String>,
    /// The steward's reason, or the resolver's rule.
    pub reason: String,
    pub rule_set: String,
    /// The source record (pseudonymous stream) it was about, if one.
    pub record: Option<String>,
    /// The other customers the decision named.
    pub other_tokens: Vec<Uuid>,
    /// The match explanation, when scored.
    pub explanation: Option<Json>,
    /// The decision event's payload.
    pub decision: Json,
    pub recorded_at: DateTime<Utc>,
}

/// The decisions that named `token`, in log order, after log position
/// `after` (exclusive), at most `limit` (capped at [`PAGE_MAX`]).
pub async fn history(
    db: &ReadDb,
    token: Uuid,
    after: Option<i64>,
    limit: usize,
) -> Result<Vec<HistoryRow>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT position, seq, decision_type, actor_kind, actor, reason, rule_set, record, other_tokens, \
         explanation, decision, recorded_at FROM decision_history WHERE token = $1 AND position > $2 \
         ORDER BY position LIMIT $3",
    )
    .bind(token.to_string())
    .bind(after.unwrap_or(-1))
    .bind(capped(limit, PAGE_MAX))
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|row| {
            let others: String = row.try_get("other_tokens")?;
            Ok(HistoryRow {
                position: row.try_get("position")?,
                seq: row.try_get("seq")?,
                decision_type: row.try_get("decision_type")?,
                actor_kind: row.try_get("actor_kind")?,
                actor: row.try_get("actor")?,
                reason: row.try_get("reason")?,
                rule_set: row.try_get("rule_set")?,
                record: row.try_get("record")?,
                other_tokens: json_of("other_tokens", &others)?,
                explanation: get_opt_json(row, "explanation")?,
                decision: get_json(row, "decision")?,
                recorded_at: get_time(row, "recorded_at")?,
            })
        })
        .collect()
}

/// A member of a household.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HouseholdMember {
    pub token: Uuid,
    /// Why it is a member (the household rule's name).
    pub reason: String,
    /// Log position of the decision that made it a member.
    pub position: i64,
}

/// The members of a household, by token.
pub async fn household_members(db: &ReadDb, household: Uuid) -> Result<Vec<HouseholdMember>, sqlx::Error> {
    let rows = sqlx::query("SELECT token, reason, position FROM household_member WHERE household = $1 ORDER BY token")
        .bind(household.to_string())
        .fetch_all(db.pool())
        .await?;
    rows.iter()
        .map(|row| {
            Ok(HouseholdMember {
                token: get_uuid(row, "token")?,
                reason: row.try_get("reason")?,
                position: row.try_get("position")?,
            })
        })
        .collect()
}

/// An item of the review queue: a pair the resolver could not decide.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReviewRow {
    pub review_id: Uuid,
    /// The record that prompted it (pseudonymous stream).
    pub record: String,
    /// The customer that record belonged to when the item opened.
    pub token: Uuid,
    /// The customer it might belong to instead.
    pub candidate: Uuid,
    /// The candidate's best-scoring record.
    pub candidate_record: String,
    /// Match weight of the pair, in bits.
    pub total: f64,
    /// The pair's match explanation.
    pub explanation: Json,
    /// `open`, `linked`, `kept_apart`, `skipped` or `erased` (closed by an
    /// erasure of a customer or record it names).
    pub state: String,
    pub opened_position: i64,
    pub opened_at: DateTime<Utc>,
    pub closed_position: Option<i64>,
    pub closed_at: Option<DateTime<Utc>>,
    /// The steward who closed it.
    pub closed_by: Option<String>,
    /// The steward's reason.
    pub close_reason: Option<String>,
}

const REVIEW_COLUMNS: &str = "review_id, record, token, candidate, candidate_record, total, explanation, state, \
     opened_position, opened_at, closed_position, closed_at, closed_by, close_reason";

fn review_of(row: &AnyRow) -> Result<ReviewRow, sqlx::Error> {
    Ok(ReviewRow {
        review_id: get_uuid(row, "review_id")?,
        record: row.try_get("record")?,
        token: get_uuid(row, "token")?,
        candidate: get_uuid(row, "candidate")?,
        candidate_record: row.try_get("candidate_record")?,
        total: row.try_get("total")?,
        explanation: get_json(row, "explanation")?,
        state: row.try_get("state")?,
        opened_position: row.try_get("opened_position")?,
        opened_at: get_time(row, "opened_at")?,
        closed_position: row.try_get("closed_position")?,
        closed_at: get_opt_time(row, "closed_at")?,
        closed_by: row.try_get("closed_by")?,
        close_reason: row.try_get("close_reason")?,
    })
}

/// Review items in the order they opened, those in `state` only when
/// given (`open`, `linked`, `kept_apart`, `skipped`, `erased`), after opening position
/// `after` (exclusive), at most `limit` (capped at [`PAGE_MAX`]).
pub async fn reviews(
    db: &ReadDb,
    state: Option<&str>,
    after: Option<i64>,
    limit: usize,
) -> Result<Vec<ReviewRow>, sqlx::Error> {
    let filter = if state.is_some() { "state = $3 AND " } else { "" };
    let sql = format!(
        "SELECT {REVIEW_COLUMNS} FROM review_item WHERE {filter}opened_position > $1 \
         ORDER BY opened_position, review_id LIMIT $2"
    );
    let mut q = sqlx::query(&sql)
        .bind(after.unwrap_or(-1))
        .bind(capped(limit, PAGE_MAX));
    if let Some(s) = state {
        q = q.bind(s);
    }
    let rows = q.fetch_all(db.pool()).await?;
    rows.iter().map(review_of).collect()
}

/// How many review items are open.
pub async fn open_review_count(db: &ReadDb) -> Result<i64, sqlx::Error> {
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM review_item WHERE state = 'open'")
        .fetch_one(db.pool())
        .await?;
    Ok(n)
}

/// One review item.
pub async fn review(db: &ReadDb, review_id: Uuid) -> Result<Option<ReviewRow>, sqlx::Error> {
    let sql = format!("SELECT {REVIEW_COLUMNS} FROM review_item WHERE review_id = $1");
    sqlx::query(&sql)
        .bind(review_id.to_string())
        .fetch_optional(db.pool())
        .await?
        .as_ref()
        .map(review_of)
        .transpose()
}

// ---- Search ----

/// What to search customers by: every criterion given must match.
///
/// `name` is free text: one word matches a family or a given name; two or
/// more words are a given name (the first) and a family name (the rest),
/// both of which must match; "family, given" (with a comma) is read the
/// other way round. Values are normalized as matching normalizes them
/// (folded names, canonical e-mail, E.164 phone, postcode), so "O'Brien",
/// "Robert.Okafor0@Example.TEST" and "(312) 555-0000" find their customers.
/// Empty or blank values count as not given.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchQuery {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub phone: Option<String>,
    #[serde(default)]
    pub postcode: Option<String>,
}

impl SearchQuery {
    /// The criteria a search accepts, as the API names them.
    pub const FIELDS: [&'static str; 4] = ["name", "email", "phone", "postcode"];
}

/// The query values are personal data: only their presence is shown.
impl fmt::Debug for SearchQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SearchQuery")
            .field("name", &Presence::of(&self.name))
            .field("email", &Presence::of(&self.email))
            .field("phone", &Presence::of(&self.phone))
            .field("postcode", &Presence::of(&self.postcode))
            .finish()
    }
}

/// Why a search was not run.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// No criterion was given.
    #[error("give at least one of name, email, phone or postcode")]
    Empty,
    /// A criterion normalizes to nothing (an e-mail without '@', a phone
    /// number that is not one, a name of punctuation only): nothing in the
    /// index could match it. Names the field.
    #[error("the {0} given is not one that can be searched")]
    Unusable(&'static str),
    #[error("cannot read the read models")]
    Db(#[from] sqlx::Error),
}

/// One page of search results.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SearchPage {
    /// Active customers, by token.
    pub customers: Vec<CustomerRow>,
    /// The `after` of the next page, when there is one.
    pub next: Option<Uuid>,
}

/// One criterion: a customer matches when any of its (kind, value) keys
/// is indexed for it.
type Criterion = Vec<(&'static str, String)>;

fn given(text: &str) -> Option<String> {
    (!text.trim().is_empty()).then(|| text.trim().to_owned())
}

/// The keys the index holds for attributes `a`, of `kind` only.
fn keys_of(a: &CanonicalAttributes, settings: &FeatureSettings, kind: &str) -> Criterion {
    search_keys(a, settings)
        .into_iter()
        .filter(|(k, _)| *k == kind)
        .collect()
}

fn name_criteria(text: &str, settings: &FeatureSettings) -> Result<Vec<Criterion>, SearchError> {
    let key = |kind: &str, part: &str| {
        let a = CanonicalAttributes {
            given_name: Some(part.to_owned()),
            family_name: Some(part.to_owned()),
            ..CanonicalAttributes::default()
        };
        keys_of(&a, settings, kind)
    };
    let (given_part, family_part) = match text.split_once(',') {
        Some((family, given)) => (given.trim(), family.trim()),
        None => match text.trim().split_once(char::is_whitespace) {
            Some((given, family)) => (given.trim(), family.trim()),
            None => ("", text.trim()),
        },
    };
    let criteria = match (given_part.is_empty(), family_part.is_empty()) {
        (true, true) => Vec::new(),
        // One word: a family or a given name.
        (true, false) | (false, true) => {
            let word = if family_part.is_empty() {
                given_part
            } else {
                family_part
            };
            let mut either = key("family", word);
            either.extend(key("given", word));
            vec![either]
        }
        (false, false) => vec![key("given", given_part), key("family", family_part)],
    };
    if criteria.is_empty() || criteria.iter().any(Vec::is_empty) {
        return Err(SearchError::Unusable("name"));
    }
    Ok(criteria)
}

fn criteria(query: &SearchQuery, settings: &FeatureSettings) -> Result<Vec<Criterion>, SearchError> {
    let mut out = Vec::new();
    let mut any = false;
    if let Some(name) = query.name.as_deref().and_then(given) {
        any = true;
        out.extend(name_criteria(&name, settings)?);
    }
    if let Some(email) = query.email.as_deref().and_then(given) {
        any = true;
        let a = CanonicalAttributes {
            emails: vec![email],
            ..CanonicalAttributes::default()
        };
        out.push(keys_of(&a, settings, "email"));
        if out.last().is_some_and(Vec::is_empty) {
            return Err(SearchError::Unusable("email"));
        }
    }
    if let Some(phone) = query.phone.as_deref().and_then(given) {
        any = true;
        let a = CanonicalAttributes {
            phones: vec![Phone {
                kind: None,
                number: phone,
            }],
            ..CanonicalAttributes::default()
        };
        out.push(keys_of(&a, settings, "phone"));
        if out.last().is_some_and(Vec::is_empty) {
            return Err(SearchError::Unusable("phone"));
        }
    }
    if let Some(postcode) = query.postcode.as_deref().and_then(given) {
        any = true;
        let a = CanonicalAttributes {
            addresses: vec![PostalAddress {
                postcode: Some(postcode),
                ..PostalAddress::default()
            }],
            ..CanonicalAttributes::default()
        };
        out.push(keys_of(&a, settings, "postcode"));
        if out.last().is_some_and(Vec::is_empty) {
            return Err(SearchError::Unusable("postcode"));
        }
    }
    if !any {
        return Err(SearchError::Empty);
    }
    Ok(out)
}

/// Active customers matching every criterion of `query`, by token, after
/// token `after` (exclusive), at most `limit` (capped at
/// [`SEARCH_PAGE_MAX`]). `settings` must be those the customers projection
/// indexed with (the phone region), so that query values normalize to the
/// stored keys.
pub async fn search(
    db: &ReadDb,
    query: &SearchQuery,
    settings: &FeatureSettings,
    after: Option<Uuid>,
    limit: usize,
) -> Result<SearchPage, SearchError> {
    let criteria = criteria(query, settings)?;
    let page = limit.clamp(1, SEARCH_PAGE_MAX);
    let mut binds: Vec<String> = Vec::new();
    let mut sql = format!("SELECT {CUSTOMER_COLUMNS} FROM customer WHERE status = 'active'");
    for criterion in &criteria {
        let mut alternatives = Vec::new();
        for (kind, value) in criterion {
            binds.push((*kind).to_owned());
            binds.push(value.clone());
            alternatives.push(format!(
                "(s.kind = ${} AND s.value = ${})",
                binds.len() - 1,
                binds.len()
            ));
        }
        sql.push_str(&format!(
            " AND token IN (SELECT m.token FROM customer_search s JOIN customer_member m ON m.record = s.record \
             WHERE {})",
            alternatives.join(" OR ")
        ));
    }
    if let Some(after) = after {
        binds.push(after.to_string());
        sql.push_str(&format!(" AND token > ${}", binds.len()));
    }
    // One row more than the page says whether another page follows.
    sql.push_str(&format!(" ORDER BY token LIMIT ${}", binds.len() + 1));
    let mut q = sqlx::query(&sql);
    for b in &binds {
        q = q.bind(b.as_str());
    }
    let rows = q
        .bind(capped(page + 1, SEARCH_PAGE_MAX + 1))
        .fetch_all(db.pool())
        .await?;
    let mut customers = rows.iter().map(customer_of).collect::<Result<Vec<_>, _>>()?;
    let more = customers.len() > page;
    customers.truncate(page);
    let next = if more { customers.last().map(|c| c.token) } else { None };
    Ok(SearchPage { customers, next })
}

// ---- Cross-references ----

/// Which customer a (system, source id) belongs to.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct XrefRow {
    pub system: String,
    pub source_id: String,
    pub token: Uuid,
}

/// Source ids may identify a person in their system: only the system and
/// token are shown.
impl fmt::Debug for XrefRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XrefRow")
            .field("system", &self.system)
            .field("source_id", &Presence(true))
            .field("token", &self.token)
            .finish()
    }
}

/// One page of the cross-reference (every current record's customer, always
/// an active token), ordered by (system, source id), of `system` only when
/// given, after the (system, source id) `after` (exclusive), at most
/// `limit` (capped at [`PAGE_MAX`]). The next page starts after the last
/// row's (system, source id); an empty page is the end.
pub async fn xref_page(
    db: &ReadDb,
    system: Option<&str>,
    after: Option<(String, String)>,
    limit: usize,
) -> Result<Vec<XrefRow>, sqlx::Error> {
    let mut binds: Vec<String> = Vec::new();
    // The cross-reference is customer_member's (system, source_id) index.
    let mut conditions: Vec<String> = vec!["token IS NOT NULL AND source_id IS NOT NULL".to_owned()];
    if let Some(system) = system {
        binds.push(system.to_owned());
        conditions.push(format!("system = ${}", binds.len()));
    }
    if let Some((after_system, after_id)) = after {
        binds.push(after_system);
        binds.push(after_id);
        conditions.push(format!(
            "(system, source_id) > (${}, ${})",
            binds.len() - 1,
            binds.len()
        ));
    }
    let filter = format!("WHERE {}", conditions.join(" AND "));
    let sql = format!(
        "SELECT system, source_id, token FROM customer_member {filter} ORDER BY system, source_id LIMIT ${}",
        binds.len() + 1
    );
    let mut q = sqlx::query(&sql);
    for b in &binds {
        q = q.bind(b.as_str());
    }
    let rows = q.bind(capped(limit, PAGE_MAX)).fetch_all(db.pool()).await?;
    rows.iter()
        .map(|row| {
            Ok(XrefRow {
                system: row.try_get("system")?,
                source_id: row.try_get("source_id")?,
                token: get_uuid(row, "token")?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(c: &[Criterion]) -> Vec<Vec<(&'static str, &str)>> {
        c.iter()
            .map(|alts| alts.iter().map(|(k, v)| (*k, v.as_str())).collect())
            .collect()
    }

    #[test]
    fn query_values_normalize_as_the_index_does() {
        let s = FeatureSettings::default();
        let q = SearchQuery {
            name: Some("  Robert  O'Kafor ".into()),
            email: Some("Robert.Okafor0@Example.TEST ".into()),
            phone: Some("(312) 555-0100".into()),
            postcode: Some("60000-1234".into()),
        };
        let c = criteria(&q, &s).expect("criteria");
        assert_eq!(
            kinds(&c),
            vec![
                vec![("given", "robert")],
                vec![("family", "okafor")],
                vec![("email", "robert.okafor0@example.test")],
                vec![("phone", "+13125550100")],
                vec![("postcode", "60000")],
            ]
        );
    }

    #[test]
    fn one_word_is_a_family_or_a_given_name_and_a_comma_puts_the_family_first() {
        let s = FeatureSettings::default();
        let one = SearchQuery {
            name: Some("Okafor".into()),
            ..SearchQuery::default()
        };
        assert_eq!(
            kinds(&criteria(&one, &s).expect("criteria")),
            vec![vec![("family", "okafor"), ("given", "okafor")]]
        );
        let comma = SearchQuery {
            name: Some("de la Cruz, María".into()),
            ..SearchQuery::default()
        };
        assert_eq!(
            kinds(&criteria(&comma, &s).expect("criteria")),
            vec![vec![("given", "maria")], vec![("family", "delacruz")]]
        );
        let three = SearchQuery {
            name: Some("María de la Cruz".into()),
            ..SearchQuery::default()
        };
        assert_eq!(
            kinds(&criteria(&three, &s).expect("criteria")),
            vec![vec![("given", "maria")], vec![("family", "delacruz")]]
        );
    }

    #[test]
    fn no_criterion_or_an_unusable_one_is_an_error() {
        let s = FeatureSettings::default();
        assert!(matches!(criteria(&SearchQuery::default(), &s), Err(SearchError::Empty)));
        let blank = SearchQuery {
            name: Some("  ".into()),
            email: Some(String::new()),
            ..SearchQuery::default()
        };
        assert!(matches!(criteria(&blank, &s), Err(SearchError::Empty)));
        let bad = SearchQuery {
            email: Some("not an address".into()),
            ..SearchQuery::default()
        };
        assert!(matches!(criteria(&bad, &s), Err(SearchError::Unusable("email"))));
        let bad = SearchQuery {
            phone: Some("call me".into()),
            ..SearchQuery::default()
        };
        assert!(matches!(criteria(&bad, &s), Err(SearchError::Unusable("phone"))));
        let bad = SearchQuery {
            name: Some("--".into()),
            ..SearchQuery::default()
        };
        assert!(matches!(criteria(&bad, &s), Err(SearchError::Unusable("name"))));
    }

    #[test]
    fn statuses_read_back_as_stored() {
        for status in CustomerStatus::ALL {
            assert_eq!(CustomerStatus::parse(status.as_str()), Some(status));
            assert_eq!(
                serde_json::to_value(status).expect("json"),
                serde_json::json!(status.as_str())
            );
        }
        assert_eq!(CustomerStatus::parse("deleted"), None);
    }

    #[test]
    fn debug_shows_no_personal_data() {
        let q = SearchQuery {
            name: Some("Robert Okafor".into()),
            ..SearchQuery::default()
        };
        let shown = format!("{q:?}");
        assert!(!shown.contains("Okafor") && shown.contains("Some(..)"));
        let x = XrefRow {
            system: "crm".into(),
            source_id: "secret-id".into(),
            token: Uuid::nil(),
        };
        assert!(!format!("{x:?}").contains("secret-id"));
    }
}
