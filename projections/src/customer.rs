//! The `customers` projection: golden records with attribute-level lineage,
//! the cross-reference from (system, source id) to token (an index of
//! `customer_member`, which every assignment writes anyway), households and
//! the search index (per source record, so it changes with a record's
//! content, not with its customer).
//!
//! Per batch it loads what the batch touches (the members and customers its
//! events name) into memory, applies the events in log order there, and
//! writes the changed rows back in a few multi-row statements, where a
//! statement per event would be bound by round trips. After each event it
//! runs survivorship for the customers whose records or membership the
//! event changed and appends the event's customer changes (created,
//! updated with the golden values that changed, merged, unmerged,
//! household changed, erased) to `customer_change`, the change log the
//! feed and webhooks serve (`changes.rs`): per event, not per batch, so the
//! log does not depend on where batches are cut.
//!
//! Steward overrides (`customer_override`) belong to the token they were
//! set on and apply to the customer that token is live in: itself while
//! active, its survivor while merged away (`merged_into`), itself again
//! after a split back. An override whose key is gone has no value and
//! counts as absent. Setting or removing one runs survivorship again for
//! the customer it applies to, so the change log shows it.
//!
//! Golden values use the time of the event being applied as "now" (for
//! override expiry), never the wall clock, so a replay writes the same rows.
//!
//! An erasure (`CustomerErased`) purges the person: the token and every
//! token merged into it become `erased` for ever (no golden values, no
//! lineage, no household, no survivorship again), their records leave them
//! (`erased`: no attributes, source id or search keys; `retained` under a
//! legal exception: content kept, never searchable), the overrides set on
//! them lose value and reason, and their change log keeps only what the
//! decisions alone say (created, merged, unmerged, household changed, with
//! no values) before one `erased` notice per token. A batch is cut after
//! each erasure, so the purge sees every row written before it. The purge
//! is applied by a rebuild too, where the erased records' events open as
//! erased from the start: what it leaves depends only on the decisions, so
//! live and rebuilt tables are the same.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mdm_commands::opened::OpenedEvent;
use mdm_domain::matching::features::{FeatureSettings, MatchFeatures};
use mdm_domain::resolution::events::{DecidedBy, Decision, RESOLUTION_STREAM};
use mdm_domain::source::CanonicalAttributes;
use mdm_domain::source_record::STREAM_PREFIX;
use mdm_domain::survivorship::{self, Contribution, Golden, GoldenAttribute, GoldenValue, Lineage, Override, RuleSet};
use serde_json::{Map, Value as Json};
use sqlx::{AnyConnection, Row};
use uuid::Uuid;

use crate::changes::{golden_value_json, ChangeType};
use crate::db::{execute_rows, fetch_in, lap, parse_time, placeholders, time_text, to_i64, Dialect, Value};
use crate::decision::{decode_decision, split_after_erasures};
use crate::runner::{Batch, Names, Projection, ProjectionError};

/// What the golden records depend on besides the log.
#[derive(Clone, Debug, Default)]
pub struct CustomerSettings {
    pub rules: RuleSet,
    /// Trust rank per source system (unknown systems rank 0).
    pub trust: BTreeMap<String, u32>,
    /// How search keys are normalized (the phone region).
    pub features: FeatureSettings,
}

/// Golden records, lineage, cross-references, households and search.
#[derive(Debug)]
pub struct CustomersProjection {
    settings: Arc<CustomerSettings>,
}

impl CustomersProjection {
    pub fn new(settings: CustomerSettings) -> CustomersProjection {
        CustomersProjection {
            settings: Arc::new(settings),
        }
    }
}

const TABLES: &[&str] = &[
    "customer",
    "customer_attribute",
    "customer_member",
    "household_member",
    "customer_search",
    "customer_change",
    "customer_override",
];

const POSTGRES: &[&str] = &[
    "CREATE TABLE customer{s} (
        token text PRIMARY KEY,
        status text NOT NULL,
        merged_into text,
        household text,
        given_name text,
        middle_name text,
        family_name text,
        name_suffix text,
        email text,
        phone text,
        address_line1 text,
        address_line2 text,
        city text,
        region text,
        postcode text,
        country text,
        date_of_birth text,
        record_count bigint NOT NULL,
        version bigint NOT NULL,
        created_position bigint NOT NULL,
        created_at text NOT NULL,
        updated_position bigint NOT NULL,
        updated_at text NOT NULL,
        rule_set text NOT NULL
    )",
    "COMMENT ON TABLE customer{s} IS 'One row per customer token: its golden record and status (what the query API answers by token)'",
    "COMMENT ON COLUMN customer{s}.token IS 'The customer''s opaque, stable token'",
    "COMMENT ON COLUMN customer{s}.status IS 'active, merged (then merged_into names the survivor) or erased (for ever: the person asked to be deleted; no values)'",
    "COMMENT ON COLUMN customer{s}.merged_into IS 'The surviving token this one redirects to (chains are flattened)'",
    "COMMENT ON COLUMN customer{s}.household IS 'The household the customer belongs to, if any'",
    "COMMENT ON COLUMN customer{s}.given_name IS 'Golden given name'",
    "COMMENT ON COLUMN customer{s}.middle_name IS 'Golden middle name'",
    "COMMENT ON COLUMN customer{s}.family_name IS 'Golden family name'",
    "COMMENT ON COLUMN customer{s}.name_suffix IS 'Golden name suffix (Jr, Sr, III)'",
    "COMMENT ON COLUMN customer{s}.email IS 'Golden e-mail address'",
    "COMMENT ON COLUMN customer{s}.phone IS 'Golden phone number as the source wrote it'",
    "COMMENT ON COLUMN customer{s}.address_line1 IS 'Golden address: first line'",
    "COMMENT ON COLUMN customer{s}.address_line2 IS 'Golden address: second line'",
    "COMMENT ON COLUMN customer{s}.city IS 'Golden address: city'",
    "COMMENT ON COLUMN customer{s}.region IS 'Golden address: state or region'",
    "COMMENT ON COLUMN customer{s}.postcode IS 'Golden address: postcode'",
    "COMMENT ON COLUMN customer{s}.country IS 'Golden address: country'",
    "COMMENT ON COLUMN customer{s}.date_of_birth IS 'Golden date of birth (ISO 8601)'",
    "COMMENT ON COLUMN customer{s}.record_count IS 'How many source records the customer holds now'",
    "COMMENT ON COLUMN customer{s}.version IS 'Decisions that changed this customer (the If-Match version of steward commands)'",
    "COMMENT ON COLUMN customer{s}.created_position IS 'Log position of the decision that created it'",
    "COMMENT ON COLUMN customer{s}.created_at IS 'When it was created (RFC 3339, UTC)'",
    "COMMENT ON COLUMN customer{s}.updated_position IS 'Log position of the last event that changed it'",
    "COMMENT ON COLUMN customer{s}.updated_at IS 'When it last changed'",
    "COMMENT ON COLUMN customer{s}.rule_set IS 'Version of the survivorship rule set that built the golden values'",
    "CREATE INDEX customer_g{g}_merged_into ON customer{s} (merged_into)",
    "CREATE INDEX customer_g{g}_household ON customer{s} (household)",
    "CREATE TABLE customer_attribute{s} (
        token text NOT NULL,
        attribute text NOT NULL,
        value text NOT NULL,
        record text,
        system text,
        source_position bigint NOT NULL,
        rule text NOT NULL,
        rule_set text NOT NULL,
        overridden_by text,
        PRIMARY KEY (token, attribute)
    )",
    "COMMENT ON TABLE customer_attribute{s} IS 'Attribute-level lineage: for each golden value, where it came from and which rule chose it'",
    "COMMENT ON COLUMN customer_attribute{s}.token IS 'The customer'",
    "COMMENT ON COLUMN customer_attribute{s}.attribute IS 'name, email, phone, address or date_of_birth'",
    "COMMENT ON COLUMN customer_attribute{s}.value IS 'The golden value as JSON (names and addresses keep their parts)'",
    "COMMENT ON COLUMN customer_attribute{s}.record IS 'The source record (stream) it came from (null for a steward override)'",
    "COMMENT ON COLUMN customer_attribute{s}.system IS 'That record''s source system'",
    "COMMENT ON COLUMN customer_attribute{s}.source_position IS 'Log position of the record version (or override) it came from'",
    "COMMENT ON COLUMN customer_attribute{s}.rule IS 'The survivorship rule that chose it: trust_rank, most_recent, most_frequent, most_complete, only_candidate, tie_break, steward_override'",
    "COMMENT ON COLUMN customer_attribute{s}.rule_set IS 'Version of the rule set'",
    "COMMENT ON COLUMN customer_attribute{s}.overridden_by IS 'The steward whose override it is, if one'",
    "CREATE TABLE customer_member{s} (
        record text PRIMARY KEY,
        token text,
        system text NOT NULL,
        source_id text,
        state text NOT NULL,
        position bigint NOT NULL,
        recorded_at text NOT NULL,
        attributes text,
        search_keys text
    )",
    "COMMENT ON TABLE customer_member{s} IS 'Each record''s customer and latest attributes: what survivorship reads, and the cross-reference (system, source id) -> token'",
    "COMMENT ON COLUMN customer_member{s}.record IS 'The record''s stream'",
    "COMMENT ON COLUMN customer_member{s}.token IS 'Its customer now (null before the resolver decided, and after an erasure)'",
    "COMMENT ON COLUMN customer_member{s}.system IS 'Source system'",
    "COMMENT ON COLUMN customer_member{s}.source_id IS 'Id in the source system (null once erased)'",
    "COMMENT ON COLUMN customer_member{s}.state IS 'current, retracted, erased, or retained (kept under a legal exception by an erasure: in no customer, never searched)'",
    "COMMENT ON COLUMN customer_member{s}.position IS 'Log position of its latest version'",
    "COMMENT ON COLUMN customer_member{s}.recorded_at IS 'When its latest version was recorded'",
    "COMMENT ON COLUMN customer_member{s}.attributes IS 'JSON canonical attributes of the latest version (null when retracted or erased)'",
    "COMMENT ON COLUMN customer_member{s}.search_keys IS 'JSON [kind, value] pairs the record has in customer_search (deleted by key when it changes)'",
    "CREATE INDEX customer_member_g{g}_token ON customer_member{s} (token)",
    "CREATE INDEX customer_member_g{g}_source ON customer_member{s} (system, source_id)",
    "CREATE TABLE household_member{s} (
        household text NOT NULL,
        token text NOT NULL,
        reason text NOT NULL,
        position bigint NOT NULL,
        PRIMARY KEY (household, token)
    )",
    "COMMENT ON TABLE household_member{s} IS 'Households and their members: a relationship, never a merge'",
    "COMMENT ON COLUMN household_member{s}.household IS 'Household id'",
    "COMMENT ON COLUMN household_member{s}.token IS 'A member customer'",
    "COMMENT ON COLUMN household_member{s}.reason IS 'Why it is a member (the rule''s name)'",
    "COMMENT ON COLUMN household_member{s}.position IS 'Log position of the decision that made it a member'",
    "CREATE INDEX household_member_g{g}_token ON household_member{s} (token)",
    "CREATE TABLE customer_search{s} (
        kind text NOT NULL,
        value text NOT NULL,
        record text NOT NULL,
        PRIMARY KEY (kind, value, record)
    )",
    "COMMENT ON TABLE customer_search{s} IS 'Search index: the normalized values of every current source record (join customer_member for its customer)'",
    "COMMENT ON COLUMN customer_search{s}.kind IS 'given, family, email, phone or postcode'",
    "COMMENT ON COLUMN customer_search{s}.value IS 'Normalized as matching normalizes it (folded names, canonical e-mail, E.164 phone, postcode)'",
    "COMMENT ON COLUMN customer_search{s}.record IS 'The source record (stream) carrying the value'",
    "CREATE TABLE customer_change{s} (
        position bigint NOT NULL,
        ordinal bigint NOT NULL,
        token text NOT NULL,
        change_type text NOT NULL,
        attributes text NOT NULL,
        detail text NOT NULL,
        recorded_at text NOT NULL,
        PRIMARY KEY (position, ordinal)
    )",
    "CREATE INDEX customer_change_g{g}_token ON customer_change{s} (token, position)",
    "COMMENT ON TABLE customer_change{s} IS 'The customer change log the feed and webhooks serve: one row per change of a customer, in log order'",
    "COMMENT ON COLUMN customer_change{s}.position IS 'Global log position of the event that caused the change'",
    "COMMENT ON COLUMN customer_change{s}.ordinal IS '0, 1, 2, ... among the changes of that event'",
    "COMMENT ON COLUMN customer_change{s}.token IS 'The customer that changed'",
    "COMMENT ON COLUMN customer_change{s}.change_type IS 'created, updated, merged, unmerged, household_changed or erased'",
    "COMMENT ON COLUMN customer_change{s}.attributes IS 'JSON object: golden attribute name -> new golden value (null: gone); all for created, the changed ones for updated, none otherwise (and none in any change of an erased customer)'",
    "COMMENT ON COLUMN customer_change{s}.detail IS 'JSON object: version (the customer''s after the change), survivor and absorbed (merged), from and to (unmerged), household (household_changed), request_id (erased by a privacy request)'",
    "COMMENT ON COLUMN customer_change{s}.recorded_at IS 'When the causing event was recorded in the log (RFC 3339, UTC)'",
    "CREATE TABLE customer_override{s} (
        override_id text PRIMARY KEY,
        token text NOT NULL,
        attribute text NOT NULL,
        value text,
        set_by text NOT NULL,
        reason text NOT NULL,
        position bigint NOT NULL,
        expires_at text,
        set_at text NOT NULL,
        removed_position bigint,
        removed_expired bigint NOT NULL
    )",
    "COMMENT ON TABLE customer_override{s} IS 'Steward overrides of golden values: each applies to the customer its token is live in (the token itself, or its survivor while merged) until removed'",
    "COMMENT ON COLUMN customer_override{s}.override_id IS 'The override''s id'",
    "COMMENT ON COLUMN customer_override{s}.token IS 'The token it was set on (it follows that token''s merges and splits back)'",
    "COMMENT ON COLUMN customer_override{s}.attribute IS 'name, email, phone, address or date_of_birth'",
    "COMMENT ON COLUMN customer_override{s}.value IS 'The golden value as JSON (null once its key is destroyed: then it is as if it did not exist)'",
    "COMMENT ON COLUMN customer_override{s}.set_by IS 'The steward who set it'",
    "COMMENT ON COLUMN customer_override{s}.reason IS 'The steward''s reason (empty once its customer is erased: free text)'",
    "COMMENT ON COLUMN customer_override{s}.position IS 'Log position of the decision that set it (the latest in force wins)'",
    "COMMENT ON COLUMN customer_override{s}.expires_at IS 'When it expires (RFC 3339, UTC); null: permanent, until removed'",
    "COMMENT ON COLUMN customer_override{s}.set_at IS 'When it was set (recorded in the log)'",
    "COMMENT ON COLUMN customer_override{s}.removed_position IS 'Log position of the decision that ended it: removal, expiry or its customer''s erasure (null while in force)'",
    "COMMENT ON COLUMN customer_override{s}.removed_expired IS '1 when it ended because it expired, 0 otherwise'",
    "CREATE INDEX customer_override_g{g}_token ON customer_override{s} (token)",
];

const SQLITE: &[&str] = &[
    "CREATE TABLE customer{s} (
        token text PRIMARY KEY,
        status text NOT NULL,
        merged_into text,
        household text,
        given_name text,
        middle_name text,
        family_name text,
        name_suffix text,
        email text,
        phone text,
        address_line1 text,
        address_line2 text,
        city text,
        region text,
        postcode text,
        country text,
        date_of_birth text,
        record_count integer NOT NULL,
        version integer NOT NULL,
        created_position integer NOT NULL,
        created_at text NOT NULL,
        updated_position integer NOT NULL,
        updated_at text NOT NULL,
        rule_set text NOT NULL
    )",
    "CREATE INDEX customer_g{g}_merged_into ON customer{s} (merged_into)",
    "CREATE INDEX customer_g{g}_household ON customer{s} (household)",
    "CREATE TABLE customer_attribute{s} (
        token text NOT NULL,
        attribute text NOT NULL,
        value text NOT NULL,
        record text,
        system text,
        source_position integer NOT NULL,
        rule text NOT NULL,
        rule_set text NOT NULL,
        overridden_by text,
        PRIMARY KEY (token, attribute)
    ) WITHOUT ROWID",
    "CREATE TABLE customer_member{s} (
        record text PRIMARY KEY,
        token text,
        system text NOT NULL,
        source_id text,
        state text NOT NULL,
        position integer NOT NULL,
        recorded_at text NOT NULL,
        attributes text,
        search_keys text
    )",
    "CREATE INDEX customer_member_g{g}_token ON customer_member{s} (token)",
    "CREATE INDEX customer_member_g{g}_source ON customer_member{s} (system, source_id)",
    "CREATE TABLE household_member{s} (
        household text NOT NULL,
        token text NOT NULL,
        reason text NOT NULL,
        position integer NOT NULL,
        PRIMARY KEY (household, token)
    ) WITHOUT ROWID",
    "CREATE INDEX household_member_g{g}_token ON household_member{s} (token)",
    "CREATE TABLE customer_search{s} (
        kind text NOT NULL,
        value text NOT NULL,
        record text NOT NULL,
        PRIMARY KEY (kind, value, record)
    ) WITHOUT ROWID",
    "CREATE TABLE customer_change{s} (
        position integer NOT NULL,
        ordinal integer NOT NULL,
        token text NOT NULL,
        change_type text NOT NULL,
        attributes text NOT NULL,
        detail text NOT NULL,
        recorded_at text NOT NULL,
        PRIMARY KEY (position, ordinal)
    ) WITHOUT ROWID",
    "CREATE INDEX customer_change_g{g}_token ON customer_change{s} (token, position)",
    "CREATE TABLE customer_override{s} (
        override_id text PRIMARY KEY,
        token text NOT NULL,
        attribute text NOT NULL,
        value text,
        set_by text NOT NULL,
        reason text NOT NULL,
        position integer NOT NULL,
        expires_at text,
        set_at text NOT NULL,
        removed_position integer,
        removed_expired integer NOT NULL
    )",
    "CREATE INDEX customer_override_g{g}_token ON customer_override{s} (token)",
];

/// The member state of a record an erasure kept under a legal exception.
const RETAINED: &str = "retained";

/// A record as the projection holds it.
#[derive(Clone)]
struct Member {
    token: Option<Uuid>,
    system: String,
    source_id: Option<String>,
    state: String,
    position: i64,
    recorded_at: String,
    /// JSON text as stored; parsed only for survivorship.
    attributes: Option<String>,
    /// The row exists in the table (loaded), as opposed to new in this batch.
    stored: bool,
    /// The search keys the table holds for it (JSON), as loaded.
    stored_keys: Option<String>,
    /// Its search keys now (JSON), written with the row.
    search_keys: Option<String>,
}

/// A customer row's non-golden state.
#[derive(Clone, Debug)]
struct Customer {
    status: &'static str,
    merged_into: Option<Uuid>,
    household: Option<Uuid>,
    version: i64,
    created_position: i64,
    created_at: String,
    updated_position: i64,
    updated_at: String,
}

const MEMBER_COLUMNS: &str = "record, token, system, source_id, state, position, recorded_at, attributes, search_keys";

fn member_of(row: &sqlx::any::AnyRow) -> Result<(String, Member), sqlx::Error> {
    let token: Option<String> = row.try_get(1)?;
    Ok((
        row.try_get(0)?,
        Member {
            token: token.and_then(|t| Uuid::parse_str(&t).ok()),
            system: row.try_get(2)?,
            source_id: row.try_get(3)?,
            state: row.try_get(4)?,
            position: row.try_get(5)?,
            recorded_at: row.try_get(6)?,
            attributes: row.try_get(7)?,
            stored: true,
            stored_keys: row.try_get(8)?,
            search_keys: row.try_get(8)?,
        },
    ))
}

async fn load_members_where(
    tx: &mut AnyConnection,
    names: &Names,
    column: &str,
    keys: &[String],
    into: &mut HashMap<String, Member>,
) -> Result<(), sqlx::Error> {
    let sql = names.sql(&format!(
        "SELECT {MEMBER_COLUMNS} FROM customer_member{{s}} WHERE {column} IN ({{in}})"
    ));
    for row in fetch_in(tx, &sql, keys).await? {
        let (record, member) = member_of(&row)?;
        into.entry(record).or_insert(member);
    }
    Ok(())
}

async fn load_customers(
    tx: &mut AnyConnection,
    names: &Names,
    tokens: &[String],
    into: &mut HashMap<Uuid, Customer>,
) -> Result<(), sqlx::Error> {
    let sql = names.sql(
        "SELECT token, status, merged_into, household, version, created_position, created_at, updated_position, \
         updated_at FROM customer{s} WHERE token IN ({in})",
    );
    for row in fetch_in(tx, &sql, tokens).await? {
        let token: String = row.try_get(0)?;
        let status: String = row.try_get(1)?;
        let merged_into: Option<String> = row.try_get(2)?;
        let household: Option<String> = row.try_get(3)?;
        let Ok(token) = Uuid::parse_str(&token) else { continue };
        into.insert(
            token,
            Customer {
                status: match status.as_str() {
                    "merged" => "merged",
                    "erased" => "erased",
                    _ => "active",
                },
                merged_into: merged_into.and_then(|t| Uuid::parse_str(&t).ok()),
                household: household.and_then(|t| Uuid::parse_str(&t).ok()),
                version: row.try_get(4)?,
                created_position: row.try_get(5)?,
                created_at: row.try_get(6)?,
                updated_position: row.try_get(7)?,
                updated_at: row.try_get(8)?,
            },
        );
    }
    Ok(())
}

const OVERRIDE_COLUMNS: &str = "override_id, token, attribute, value, set_by, reason, position, expires_at, set_at, \
     removed_position, removed_expired";

/// Loads into `changes` the overrides in force, with a value, set on the
/// tokens `tokens` or on tokens merged into them, and where those merged
/// tokens redirect to when the batch does not hold them.
async fn load_overrides(
    tx: &mut AnyConnection,
    names: &Names,
    tokens: &[String],
    customers: &HashMap<Uuid, Customer>,
    changes: &mut ChangeState,
) -> Result<(), sqlx::Error> {
    // Two halves, each served by an index (the override's token, the
    // customer's merged_into).
    let sql = names.sql(
        "SELECT o.override_id, o.token, o.value, o.set_by, o.reason, o.position, o.expires_at, c.merged_into \
         FROM customer_override{s} o LEFT JOIN customer{s} c ON c.token = o.token \
         WHERE o.token IN ({in}) AND o.removed_position IS NULL AND o.value IS NOT NULL \
         UNION ALL \
         SELECT o.override_id, o.token, o.value, o.set_by, o.reason, o.position, o.expires_at, c.merged_into \
         FROM customer{s} c JOIN customer_override{s} o ON o.token = c.token \
         WHERE c.merged_into IN ({in}) AND o.removed_position IS NULL AND o.value IS NOT NULL",
    );
    for row in fetch_in(tx, &sql, tokens).await? {
        let id: String = row.try_get(0)?;
        let token: String = row.try_get(1)?;
        let value: Option<String> = row.try_get(2)?;
        let expires_at: Option<String> = row.try_get(6)?;
        let merged_into: Option<String> = row.try_get(7)?;
        let (Ok(id), Ok(token)) = (Uuid::parse_str(&id), Uuid::parse_str(&token)) else {
            continue;
        };
        let Some(value) = value.and_then(|v| serde_json::from_str::<GoldenValue>(&v).ok()) else {
            continue;
        };
        let position: i64 = row.try_get(5)?;
        if !customers.contains_key(&token) {
            if let Some(survivor) = merged_into.and_then(|t| Uuid::parse_str(&t).ok()) {
                changes.redirects.insert(token, survivor);
            }
        }
        changes.overrides.insert(
            id,
            InForce {
                token,
                value,
                by: row.try_get(3)?,
                reason: row.try_get(4)?,
                position: u64::try_from(position).unwrap_or(0),
                expires_at: expires_at.as_deref().and_then(parse_time),
            },
        );
    }
    Ok(())
}

/// Marks `token` for survivorship after the event, when it is an active
/// customer of the batch.
fn mark_dirty(
    token: Option<Uuid>,
    customers: &HashMap<Uuid, Customer>,
    dirty_tokens: &mut HashSet<Uuid>,
    ev: &mut EventChanges,
) {
    if let Some(t) = token.filter(|t| customers.get(t).is_some_and(|c| c.status == "active")) {
        dirty_tokens.insert(t);
        ev.dirty.insert(t);
    }
}

/// The attribute's static name (lineage rows are keyed by it).
fn attribute_str(name: &str) -> &'static str {
    mdm_domain::survivorship::GoldenAttribute::parse(name).map_or("", |a| a.as_str())
}

/// The search keys a record adds: normalized as matching normalizes, so a
/// query normalized the same way finds it.
pub fn search_keys(attributes: &CanonicalAttributes, settings: &FeatureSettings) -> Vec<(&'static str, String)> {
    let f = MatchFeatures::from_attributes(attributes, settings);
    let mut keys: Vec<(&'static str, String)> = Vec::new();
    if let Some(g) = f.given {
        keys.push(("given", g));
    }
    if let Some(fam) = f.family {
        keys.push(("family", fam));
    }
    keys.extend(f.emails.into_iter().map(|e| ("email", e)));
    keys.extend(f.phones.into_iter().map(|p| ("phone", p)));
    keys.extend(
        f.addresses
            .into_iter()
            .filter_map(|a| a.postcode)
            .map(|p| ("postcode", p)),
    );
    keys.sort();
    keys.dedup();
    keys
}

fn golden_columns(golden: Option<&Golden>) -> Vec<Value> {
    let mut name = [None, None, None, None];
    let (mut email, mut phone, mut dob) = (None, None, None);
    let mut address = [None, None, None, None, None, None];
    if let Some(golden) = golden {
        for s in &golden.values {
            match &s.value {
                GoldenValue::Name {
                    given,
                    middle,
                    family,
                    suffix,
                } => name = [given.clone(), middle.clone(), family.clone(), suffix.clone()],
                GoldenValue::Email { email: e } => email = Some(e.clone()),
                GoldenValue::Phone { number } => phone = Some(number.clone()),
                GoldenValue::Address { address: a } => {
                    address = [
                        a.line1.clone(),
                        a.line2.clone(),
                        a.city.clone(),
                        a.region.clone(),
                        a.postcode.clone(),
                        a.country.clone(),
                    ]
                }
                GoldenValue::DateOfBirth { date } => dob = Some(date.to_string()),
            }
        }
    }
    let mut out: Vec<Value> = name.into_iter().map(Value::Text).collect();
    out.push(Value::Text(email));
    out.push(Value::Text(phone));
    out.extend(address.into_iter().map(Value::Text));
    out.push(Value::Text(dob));
    out
}

/// What one event did to customers, for the change log.
#[derive(Debug, Default)]
struct EventChanges {
    /// Customers whose records or status changed: survivorship runs again
    /// for them after the event.
    dirty: BTreeSet<Uuid>,
    /// Tokens that came into existence with this event.
    created: Vec<Uuid>,
    /// Merges and unmerges, in the decision's order.
    structural: Vec<(Uuid, ChangeType, Map<String, Json>)>,
    households: Vec<(Uuid, Option<Uuid>)>,
    /// Customers holding a record that this event shows erased (its data
    /// key is gone): the event's own record, or one a decision assigned.
    erased: Vec<Uuid>,
    /// Customers an erasure decision erased, with the detail of their
    /// `erased` notice (the privacy request, when named).
    erasures: Vec<(Uuid, Map<String, Json>)>,
}

/// The change log's view of a batch: which records each customer holds and
/// its golden values after the last event applied, so that survivorship can
/// run after every event (the change rows must not depend on where batches
/// are cut) and each change lists exactly what it changed.
#[derive(Default)]
struct ChangeState {
    holdings: HashMap<Uuid, BTreeSet<String>>,
    /// Parsed member attributes, dropped when a record's content changes.
    parsed: HashMap<String, Option<CanonicalAttributes>>,
    /// Golden values (stored JSON text) by attribute, as of the last event.
    golden_now: HashMap<Uuid, BTreeMap<&'static str, String>>,
    /// The golden record after the last event that changed the customer:
    /// what the batch writes back.
    latest: HashMap<Uuid, Golden>,
    rows: Vec<Vec<Value>>,
    /// The overrides in force (with a value) that can apply to the batch's
    /// customers, by override id: those set on the tokens the batch loaded
    /// or on tokens merged into them, and those the batch sets.
    overrides: BTreeMap<Uuid, InForce>,
    /// The survivor of each token an override was set on that is merged
    /// away but not among the batch's `customers` (kept up to date through
    /// the batch's merges).
    redirects: HashMap<Uuid, Uuid>,
}

/// An override in force, as survivorship takes it.
struct InForce {
    /// The token it was set on.
    token: Uuid,
    value: GoldenValue,
    by: String,
    reason: String,
    position: u64,
    expires_at: Option<DateTime<Utc>>,
}

impl ChangeState {
    fn hold(&mut self, record: &str, old: Option<Uuid>, new: Uuid) {
        if let Some(old) = old {
            if let Some(set) = self.holdings.get_mut(&old) {
                set.remove(record);
            }
        }
        self.holdings.entry(new).or_default().insert(record.to_owned());
    }

    /// The customer the overrides set on `token` apply to now: the token
    /// itself while active, its survivor while merged away.
    fn live_of(&self, token: Uuid, customers: &HashMap<Uuid, Customer>) -> Option<Uuid> {
        match customers.get(&token) {
            Some(c) if c.status == "active" => Some(token),
            Some(c) => c.merged_into,
            None => self.redirects.get(&token).copied(),
        }
    }

    /// The overrides in force on the customer `token`: its own and those
    /// of the tokens merged into it.
    fn overrides_of(&self, token: Uuid, customers: &HashMap<Uuid, Customer>) -> Vec<Override> {
        self.overrides
            .values()
            .filter(|o| self.live_of(o.token, customers) == Some(token))
            .map(|o| Override {
                value: o.value.clone(),
                by: o.by.clone(),
                reason: o.reason.clone(),
                position: o.position,
                expires_at: o.expires_at,
            })
            .collect()
    }

    /// Survivorship over the records `token` holds now and the overrides
    /// in force on it.
    fn survive(
        &mut self,
        settings: &CustomerSettings,
        token: Uuid,
        members: &HashMap<String, Member>,
        customers: &HashMap<Uuid, Customer>,
        now: DateTime<Utc>,
    ) -> Golden {
        let overrides = self.overrides_of(token, customers);
        let empty = BTreeSet::new();
        let records = self.holdings.get(&token).unwrap_or(&empty);
        for record in records {
            if !self.parsed.contains_key(record) {
                let parsed = members
                    .get(record)
                    .and_then(|m| m.attributes.as_deref())
                    .and_then(|a| serde_json::from_str::<CanonicalAttributes>(a).ok());
                self.parsed.insert(record.clone(), parsed);
            }
        }
        let parsed: Vec<(&String, &Member, &CanonicalAttributes, DateTime<Utc>)> = records
            .iter()
            .filter_map(|r| {
                let m = members.get(r)?;
                let a = self.parsed.get(r)?.as_ref()?;
                Some((r, m, a, parse_time(&m.recorded_at).unwrap_or(now)))
            })
            .collect();
        let contributions: Vec<Contribution<'_>> = parsed
            .iter()
            .map(|(r, m, a, t)| Contribution {
                record: r.as_str(),
                system: m.system.as_str(),
                trust_rank: settings.trust.get(&m.system).copied().unwrap_or(0),
                position: u64::try_from(m.position).unwrap_or(0),
                recorded_at: *t,
                attributes: a,
            })
            .collect();
        survivorship::survive(&settings.rules, &contributions, &overrides, now)
    }

    /// Runs survivorship for the customers the event changed and appends
    /// the event's change rows: created, then merged / unmerged, then
    /// updated (by token), household changes, records found erased, then
    /// customers erased by the event.
    #[allow(clippy::too_many_arguments)]
    fn after_event(
        &mut self,
        settings: &CustomerSettings,
        members: &HashMap<String, Member>,
        customers: &HashMap<Uuid, Customer>,
        ev: EventChanges,
        position: i64,
        at: &str,
        now: DateTime<Utc>,
    ) {
        let active = |t: &Uuid| customers.get(t).is_some_and(|c| c.status == "active");
        let mut diffs: Vec<(Uuid, Map<String, Json>)> = Vec::new();
        let mut full: HashMap<Uuid, Map<String, Json>> = HashMap::new();
        for token in &ev.dirty {
            let golden = active(token).then(|| self.survive(settings, *token, members, customers, now));
            let mut values: BTreeMap<&'static str, String> = BTreeMap::new();
            let mut shown: Map<String, Json> = Map::new();
            for s in golden.iter().flat_map(|g| &g.values) {
                let name = s.value.attribute().as_str();
                values.insert(name, serde_json::to_string(&s.value).unwrap_or_default());
                shown.insert(name.to_owned(), golden_value_json(&s.value));
            }
            let old = self.golden_now.remove(token).unwrap_or_default();
            let mut diff = Map::new();
            for attribute in GoldenAttribute::ALL {
                let name = attribute.as_str();
                match (old.get(name), values.get(name)) {
                    (a, b) if a == b => {}
                    (_, Some(_)) => {
                        diff.insert(name.to_owned(), shown.get(name).cloned().unwrap_or(Json::Null));
                    }
                    (_, None) => {
                        diff.insert(name.to_owned(), Json::Null);
                    }
                }
            }
            self.golden_now.insert(*token, values);
            match golden {
                Some(g) => {
                    self.latest.insert(*token, g);
                }
                None => {
                    self.latest.remove(token);
                }
            }
            diffs.push((*token, diff));
            full.insert(*token, shown);
        }
        let mut ordinal = 0i64;
        let rows = &mut self.rows;
        let mut push = |token: Uuid, kind: ChangeType, attributes: Map<String, Json>, mut detail: Map<String, Json>| {
            let version = customers.get(&token).map_or(0, |c| c.version);
            detail.insert("version".to_owned(), Json::from(version));
            rows.push(vec![
                Value::int(position),
                Value::int(ordinal),
                Value::text(token.to_string()),
                Value::text(kind.as_str()),
                Value::text(Json::Object(attributes).to_string()),
                Value::text(Json::Object(detail).to_string()),
                Value::text(at),
            ]);
            ordinal += 1;
        };
        for token in &ev.created {
            push(
                *token,
                ChangeType::Created,
                full.remove(token).unwrap_or_default(),
                Map::new(),
            );
        }
        for (token, kind, detail) in ev.structural {
            push(token, kind, Map::new(), detail);
        }
        for (token, diff) in diffs {
            if diff.is_empty() || !active(&token) || ev.created.contains(&token) || ev.erased.contains(&token) {
                continue;
            }
            push(token, ChangeType::Updated, diff, Map::new());
        }
        for (token, household) in ev.households {
            let mut detail = Map::new();
            detail.insert(
                "household".to_owned(),
                household.map_or(Json::Null, |h| Json::String(h.to_string())),
            );
            push(token, ChangeType::HouseholdChanged, Map::new(), detail);
        }
        for token in ev.erased {
            push(token, ChangeType::Erased, Map::new(), Map::new());
        }
        for (token, detail) in ev.erasures {
            push(token, ChangeType::Erased, Map::new(), detail);
        }
    }
}

#[async_trait]
impl Projection for CustomersProjection {
    fn name(&self) -> &'static str {
        "customers"
    }

    fn schema_version(&self) -> i64 {
        // 2: search rows per record (written when a record's content
        // changes, not when its customer does); the cross-reference is an
        // index of customer_member instead of a table of its own.
        // 3: the change log (customer_change), with survivorship after
        // every event so that its rows do not depend on batch sizes.
        // 4: steward overrides (customer_override), which survivorship
        // takes into the golden records.
        // 5: erasures (CustomerErased): the `erased` status, `retained`
        // members, the change log purged of the person's values, and an
        // index of customer_change by token for that purge.
        5
    }

    fn config(&self) -> String {
        let trust: Vec<String> = self.settings.trust.iter().map(|(s, r)| format!("{s}={r}")).collect();
        format!(
            "rules={};trust={};phone_region={}",
            self.settings.rules.version,
            trust.join(","),
            self.settings.features.default_phone_region
        )
    }

    fn tables(&self) -> &'static [&'static str] {
        TABLES
    }

    fn schema(&self, dialect: Dialect) -> Vec<&'static str> {
        match dialect {
            Dialect::Postgres => POSTGRES.to_vec(),
            Dialect::Sqlite => SQLITE.to_vec(),
        }
    }

    fn opens_source_records(&self) -> bool {
        true
    }

    async fn apply(&self, tx: &mut AnyConnection, names: &Names, batch: &Batch<'_>) -> Result<(), ProjectionError> {
        // Cut after each erasure: its purge then sees every row the
        // events before it wrote (survivorship runs per event, so where a
        // batch is cut does not change the rows).
        for segment in split_after_erasures(batch) {
            if let Some(erasure) = self.apply_segment(tx, names, &segment).await? {
                let started = std::time::Instant::now();
                purge_change_log(tx, names, &erasure).await?;
                let change_log = started.elapsed();
                purge_overrides(tx, names, &erasure).await?;
                tracing::debug!(
                    tokens = erasure.tokens.len(),
                    change_log_ms = change_log.as_secs_f64() * 1e3,
                    overrides_ms = (started.elapsed() - change_log).as_secs_f64() * 1e3,
                    "customers purge"
                );
            }
        }
        Ok(())
    }
}

/// What an erasure's purge needs once the rows before it are written.
#[derive(Debug)]
struct Erasure {
    /// The erased token and every token merged into it.
    tokens: Vec<Uuid>,
    overrides: Vec<Uuid>,
    position: i64,
}

impl CustomersProjection {
    /// Applies events of which only the last may be an erasure; returns
    /// that erasure.
    async fn apply_segment(
        &self,
        tx: &mut AnyConnection,
        names: &Names,
        batch: &Batch<'_>,
    ) -> Result<Option<Erasure>, ProjectionError> {
        let started = std::time::Instant::now();
        let Some(last) = batch.events.last() else {
            return Ok(None);
        };
        let now: DateTime<Utc> = last.recorded_at;
        // 1. Decode the decisions and see what the batch touches.
        let mut decisions = Vec::new();
        let mut records: BTreeSet<String> = BTreeSet::new();
        let mut tokens: BTreeSet<Uuid> = BTreeSet::new();
        for (i, event) in batch.events.iter().enumerate() {
            if event.stream.starts_with(STREAM_PREFIX) {
                if !matches!(batch.opened(i), None | Some(OpenedEvent::Other)) {
                    records.insert(event.stream.clone());
                }
            } else if event.stream == RESOLUTION_STREAM {
                let decided = decode_decision(event)?;
                if let Some(r) = crate::decision::decision_record(&decided.decision) {
                    records.insert(r.to_owned());
                }
                if let Decision::CustomerErased {
                    records: erased,
                    retained,
                    ..
                } = &decided.decision
                {
                    records.extend(erased.iter().cloned());
                    records.extend(retained.iter().map(|k| k.record.clone()));
                }
                tokens.extend(decided.decision.tokens());
                tokens.extend(decided.households.iter().map(|h| h.token));
                decisions.push((i, decided));
            }
        }
        if records.is_empty() && decisions.is_empty() {
            return Ok(None);
        }
        let decoded = started.elapsed();
        // 2. Load them: the touched records, then every member of every
        // customer involved (survivorship needs all of a customer's records).
        let mut members: HashMap<String, Member> = HashMap::new();
        let record_keys: Vec<String> = records.into_iter().collect();
        load_members_where(tx, names, "record", &record_keys, &mut members).await?;
        tokens.extend(members.values().filter_map(|m| m.token));
        let token_keys: Vec<String> = tokens.iter().map(Uuid::to_string).collect();
        let mut customers: HashMap<Uuid, Customer> = HashMap::new();
        load_customers(tx, names, &token_keys, &mut customers).await?;
        // The survivors of the merged tokens among them: a split back into
        // such a token takes the overrides set on it away from its survivor,
        // whose golden record must then be built again.
        let survivors: BTreeSet<String> = customers
            .values()
            .filter_map(|c| c.merged_into)
            .filter(|t| !customers.contains_key(t))
            .map(|t| t.to_string())
            .collect();
        let survivors: Vec<String> = survivors.into_iter().collect();
        load_customers(tx, names, &survivors, &mut customers).await?;
        // Only customers already stored can have stored members (a token
        // created in this batch has none yet): ask for those alone.
        let mut stored_tokens: Vec<Uuid> = customers.keys().copied().collect();
        stored_tokens.sort();
        let stored_keys: Vec<String> = stored_tokens.iter().map(Uuid::to_string).collect();
        load_members_where(tx, names, "token", &stored_keys, &mut members).await?;
        // The lineage rows of those customers: what the batch compares its
        // lineage with before writing, and the golden values the change
        // log compares each event's outcome with.
        let mut stored_attribute_rows: BTreeMap<(Uuid, String), Vec<Value>> = BTreeMap::new();
        let sql = names.sql(
            "SELECT token, attribute, value, record, system, source_position, rule, rule_set, overridden_by \
             FROM customer_attribute{s} WHERE token IN ({in})",
        );
        for row in fetch_in(tx, &sql, &stored_keys).await? {
            let token: String = row.try_get(0)?;
            let attribute: String = row.try_get(1)?;
            let Ok(token_id) = Uuid::parse_str(&token) else {
                continue;
            };
            let values = vec![
                Value::Text(Some(token)),
                Value::Text(Some(attribute.clone())),
                Value::Text(row.try_get(2)?),
                Value::Text(row.try_get(3)?),
                Value::Text(row.try_get(4)?),
                Value::Int(row.try_get(5)?),
                Value::Text(row.try_get(6)?),
                Value::Text(row.try_get(7)?),
                Value::Text(row.try_get(8)?),
            ];
            stored_attribute_rows.insert((token_id, attribute), values);
        }
        let mut changes = ChangeState::default();
        for ((token, attribute), row) in &stored_attribute_rows {
            if let Some(Value::Text(Some(value))) = row.get(2) {
                changes
                    .golden_now
                    .entry(*token)
                    .or_default()
                    .insert(attribute_str(attribute), value.clone());
            }
        }
        for (record, m) in &members {
            if let Some(t) = m.token {
                changes.holdings.entry(t).or_default().insert(record.clone());
            }
        }
        // The overrides in force on those customers (set on them or on
        // tokens merged into them).
        load_overrides(tx, names, &stored_keys, &customers, &mut changes).await?;
        // What the batch writes to customer_override: whole rows of the
        // overrides it sets, and the removal of overrides set earlier.
        let mut override_rows: BTreeMap<Uuid, Vec<Value>> = BTreeMap::new();
        let mut override_removals: BTreeMap<Uuid, (i64, bool)> = BTreeMap::new();

        let loaded = started.elapsed();
        // 3. Apply the events in log order, in memory. A member whose content
        // changed is written whole; one that only changed customer gets its
        // token updated (the attributes are the bulk of the row).
        let mut dirty_members: HashSet<String> = HashSet::new();
        let mut moved_members: HashSet<String> = HashSet::new();
        // Search rows follow record content: the keys of each record whose
        // content changed (the last version of the batch wins); `unindexed`
        // had rows before this batch, which go first.
        let mut search: HashMap<String, Vec<(&'static str, String)>> = HashMap::new();
        let mut unindexed: BTreeSet<String> = BTreeSet::new();
        let mut dirty_tokens: HashSet<Uuid> = HashSet::new();
        let mut touched: HashSet<Uuid> = HashSet::new();
        let mut redirects: Vec<(Uuid, Uuid)> = Vec::new();
        let mut households: BTreeMap<Uuid, (Option<Uuid>, String, i64)> = BTreeMap::new();
        let mut erasure: Option<Erasure> = None;
        let mut decisions = decisions.into_iter().peekable();
        for (i, event) in batch.events.iter().enumerate() {
            let position = to_i64(event.position.0);
            let at = time_text(event.recorded_at);
            let mut ev = EventChanges::default();
            if event.stream.starts_with(STREAM_PREFIX) {
                let (system, source_id, state, attributes) = match batch.opened(i) {
                    Some(OpenedEvent::Version { system, content, .. }) => (
                        system,
                        Some(content.source_id.clone()),
                        "current",
                        Some(&content.attributes),
                    ),
                    Some(OpenedEvent::Retracted { system, content, .. }) => {
                        (system, content.as_ref().map(|c| c.source_id.clone()), "retracted", None)
                    }
                    Some(OpenedEvent::Erased { system }) => (system, None, "erased", None),
                    _ => continue,
                };
                let attributes_json = match attributes {
                    Some(a) => Some(serde_json::to_string(a).map_err(|e| ProjectionError::Corrupt {
                        position: event.position.0,
                        reason: e.to_string(),
                    })?),
                    None => None,
                };
                let mut keys = attributes
                    .map(|a| search_keys(a, &self.settings.features))
                    .unwrap_or_default();
                let member = members.entry(event.stream.clone()).or_insert_with(|| Member {
                    token: None,
                    system: system.clone(),
                    source_id: None,
                    state: String::new(),
                    position,
                    recorded_at: at.clone(),
                    attributes: None,
                    stored: false,
                    stored_keys: None,
                    search_keys: None,
                });
                if member.stored {
                    unindexed.insert(event.stream.clone());
                }
                // A record an erasure kept under a legal exception stays
                // out of every customer and of the search index for good.
                let retained = member.state == RETAINED;
                let shown = if retained { RETAINED } else { state };
                if retained {
                    keys.clear();
                    member.search_keys = None;
                } else {
                    member.search_keys = Some(serde_json::to_string(&keys).unwrap_or_else(|_| "[]".into()));
                }
                search.insert(event.stream.clone(), keys);
                member.system = system.clone();
                member.source_id = match state {
                    "erased" => None,
                    "retracted" => source_id.or(member.source_id.take()),
                    _ => source_id,
                };
                member.state = shown.to_owned();
                member.position = position;
                member.recorded_at = at.clone();
                member.attributes = attributes_json;
                dirty_members.insert(event.stream.clone());
                changes.parsed.remove(&event.stream);
                if let Some(t) = member.token {
                    dirty_tokens.insert(t);
                    ev.dirty.insert(t);
                    if state == "erased" {
                        ev.erased.push(t);
                    }
                }
                changes.after_event(
                    &self.settings,
                    &members,
                    &customers,
                    ev,
                    position,
                    &at,
                    event.recorded_at,
                );
                continue;
            }
            if decisions.peek().map(|(j, _)| *j) != Some(i) {
                continue;
            }
            let Some((_, decided)) = decisions.next() else { continue };
            let mut assign = |record: &str,
                              token: Uuid,
                              members: &mut HashMap<String, Member>,
                              dirty_tokens: &mut HashSet<Uuid>,
                              changes: &mut ChangeState,
                              ev: &mut EventChanges| {
                let member = members.entry(record.to_owned()).or_insert_with(|| Member {
                    token: None,
                    system: String::new(),
                    source_id: None,
                    state: "unknown".into(),
                    position,
                    recorded_at: at.clone(),
                    attributes: None,
                    stored: false,
                    stored_keys: None,
                    search_keys: None,
                });
                if member.state == "erased" && !ev.erased.contains(&token) {
                    // A record whose key is gone joins it: as erased.
                    ev.erased.push(token);
                }
                let old = member.token.replace(token);
                if let Some(old) = old {
                    dirty_tokens.insert(old);
                    ev.dirty.insert(old);
                }
                dirty_tokens.insert(token);
                ev.dirty.insert(token);
                changes.hold(record, old, token);
                moved_members.insert(record.to_owned());
            };
            let new_customer = |position: i64, at: &str| Customer {
                status: "active",
                merged_into: None,
                household: None,
                version: 0,
                created_position: position,
                created_at: at.to_owned(),
                updated_position: position,
                updated_at: at.to_owned(),
            };
            match &decided.decision {
                Decision::CustomerCreated { token, record, .. } => {
                    if customers.insert(*token, new_customer(position, &at)).is_none() {
                        ev.created.push(*token);
                    }
                    assign(record, *token, &mut members, &mut dirty_tokens, &mut changes, &mut ev);
                }
                Decision::RecordLinked { token, record, .. } => {
                    if !customers.contains_key(token) {
                        customers.insert(*token, new_customer(position, &at));
                        ev.created.push(*token);
                    }
                    assign(record, *token, &mut members, &mut dirty_tokens, &mut changes, &mut ev);
                }
                Decision::RecordMoved { record, from, to, .. } | Decision::RecordSplit { record, from, to, .. } => {
                    if !customers.contains_key(to) {
                        ev.created.push(*to);
                    }
                    let c = customers.entry(*to).or_insert_with(|| new_customer(position, &at));
                    // A split back into a token merged away earlier makes
                    // it active again, and takes the overrides set on it
                    // back from the customer it was merged into.
                    let survivor = if c.status == "merged" { c.merged_into } else { None };
                    c.status = "active";
                    c.merged_into = None;
                    if changes.overrides.values().any(|o| o.token == *to) {
                        mark_dirty(survivor, &customers, &mut dirty_tokens, &mut ev);
                    }
                    let mut detail = Map::new();
                    detail.insert("from".to_owned(), Json::String(from.to_string()));
                    detail.insert("to".to_owned(), Json::String(to.to_string()));
                    ev.structural.push((*to, ChangeType::Unmerged, detail));
                    assign(record, *to, &mut members, &mut dirty_tokens, &mut changes, &mut ev);
                }
                Decision::CustomersMerged { survivor, absorbed, .. } => {
                    let absorbed_set: HashSet<Uuid> = absorbed.iter().copied().collect();
                    for (record, m) in members.iter_mut() {
                        if m.token.is_some_and(|t| absorbed_set.contains(&t)) {
                            m.token = Some(*survivor);
                            moved_members.insert(record.clone());
                        }
                    }
                    for a in absorbed {
                        if let Some(held) = changes.holdings.remove(a) {
                            changes.holdings.entry(*survivor).or_default().extend(held);
                        }
                    }
                    customers
                        .entry(*survivor)
                        .or_insert_with(|| new_customer(position, &at));
                    let absorbed_json = Json::Array(absorbed.iter().map(|a| Json::String(a.to_string())).collect());
                    for a in absorbed {
                        let c = customers.entry(*a).or_insert_with(|| new_customer(position, &at));
                        c.status = "merged";
                        c.merged_into = Some(*survivor);
                        redirects.push((*a, *survivor));
                        dirty_tokens.insert(*a);
                        ev.dirty.insert(*a);
                        let mut detail = Map::new();
                        detail.insert("survivor".to_owned(), Json::String(survivor.to_string()));
                        detail.insert("absorbed".to_owned(), absorbed_json.clone());
                        ev.structural.push((*a, ChangeType::Merged, detail));
                    }
                    for c in customers.values_mut() {
                        if c.merged_into.is_some_and(|m| absorbed_set.contains(&m)) {
                            c.merged_into = Some(*survivor);
                        }
                    }
                    // The overrides of the absorbed tokens (and of those
                    // merged into them before) now apply to the survivor.
                    for target in changes.redirects.values_mut() {
                        if absorbed_set.contains(target) {
                            *target = *survivor;
                        }
                    }
                    dirty_tokens.insert(*survivor);
                    ev.dirty.insert(*survivor);
                }
                Decision::ValueOverridden {
                    token,
                    override_id,
                    attribute,
                    expires_at,
                    ..
                } => {
                    // `None`: its key is gone (erased): as if it did not
                    // exist, but its row stays (without the value).
                    let value = match batch.opened(i) {
                        Some(OpenedEvent::Override { value }) => value.clone(),
                        _ => None,
                    };
                    let by = match &decided.by {
                        DecidedBy::Steward(id) | DecidedBy::Compliance(id) => id.clone(),
                        DecidedBy::Resolver => "resolver".to_owned(),
                    };
                    let value_json = match &value {
                        Some(v) => Some(serde_json::to_string(v).map_err(|e| ProjectionError::Corrupt {
                            position: event.position.0,
                            reason: e.to_string(),
                        })?),
                        None => None,
                    };
                    override_rows.insert(
                        *override_id,
                        vec![
                            Value::text(override_id.to_string()),
                            Value::text(token.to_string()),
                            Value::text(attribute.clone()),
                            Value::Text(value_json),
                            Value::text(by.clone()),
                            Value::text(decided.reason.clone()),
                            Value::int(position),
                            Value::Text(expires_at.map(time_text)),
                            Value::text(at.clone()),
                            Value::Int(None),
                            Value::int(0),
                        ],
                    );
                    override_removals.remove(override_id);
                    // An id set again replaces what it held.
                    if let Some(old) = changes.overrides.remove(override_id) {
                        let live = changes.live_of(old.token, &customers);
                        mark_dirty(live, &customers, &mut dirty_tokens, &mut ev);
                    }
                    if let Some(value) = value {
                        changes.overrides.insert(
                            *override_id,
                            InForce {
                                token: *token,
                                value,
                                by,
                                reason: decided.reason.clone(),
                                position: event.position.0,
                                expires_at: *expires_at,
                            },
                        );
                        let live = changes.live_of(*token, &customers);
                        mark_dirty(live, &customers, &mut dirty_tokens, &mut ev);
                    }
                }
                Decision::OverrideRemoved {
                    token,
                    override_id,
                    expired,
                } => {
                    match override_rows.get_mut(override_id) {
                        // Set in this batch: its row is written whole.
                        Some(row) => {
                            row[9] = Value::int(position);
                            row[10] = Value::int(i64::from(*expired));
                        }
                        None => {
                            override_removals.insert(*override_id, (position, *expired));
                        }
                    }
                    if let Some(old) = changes.overrides.remove(override_id) {
                        let live = changes.live_of(old.token, &customers);
                        mark_dirty(live, &customers, &mut dirty_tokens, &mut ev);
                    }
                    // The customer it was removed from, in case the batch
                    // did not know the override (its value was erased).
                    mark_dirty(Some(*token), &customers, &mut dirty_tokens, &mut ev);
                }
                Decision::NotAMatchMarked { .. }
                | Decision::ReviewRequested { .. }
                | Decision::ReviewClosed { .. }
                | Decision::HouseholdChanged { .. } => {}
                Decision::CustomerErased {
                    token,
                    absorbed,
                    records: erased_records,
                    overrides,
                    retained,
                    request_id,
                    ..
                } => {
                    // The tokens: erased for ever, with nothing of the
                    // person (golden columns and lineage go as the rows are
                    // written: they are dirty and no longer active), out
                    // of their household, and each with an erasure notice.
                    let erased_tokens: Vec<Uuid> = std::iter::once(*token).chain(absorbed.iter().copied()).collect();
                    for t in &erased_tokens {
                        let c = customers.entry(*t).or_insert_with(|| new_customer(position, &at));
                        c.status = "erased";
                        c.merged_into = None;
                        c.household = None;
                        households.insert(*t, (None, String::new(), position));
                        changes.holdings.remove(t);
                        changes.golden_now.remove(t);
                        changes.latest.remove(t);
                        changes.redirects.remove(t);
                        dirty_tokens.insert(*t);
                        touched.insert(*t);
                        let mut detail = Map::new();
                        if let Some(id) = request_id {
                            detail.insert("request_id".to_owned(), Json::String(id.to_string()));
                        }
                        ev.erasures.push((*t, detail));
                    }
                    changes
                        .overrides
                        .retain(|id, o| !overrides.contains(id) && !erased_tokens.contains(&o.token));
                    // The records leave them: the erased ones as a rebuild
                    // shows a record whose key is gone (no content), the
                    // retained ones with their content; neither searchable.
                    let leaving = erased_records
                        .iter()
                        .map(|r| (r, "erased"))
                        .chain(retained.iter().map(|k| (&k.record, RETAINED)));
                    for (record, state) in leaving {
                        let Some(member) = members.get_mut(record) else {
                            continue;
                        };
                        if let Some(old) = member.token.take() {
                            if let Some(held) = changes.holdings.get_mut(&old) {
                                held.remove(record);
                            }
                        }
                        member.state = state.to_owned();
                        member.search_keys = None;
                        if state == "erased" {
                            member.source_id = None;
                            member.attributes = None;
                        }
                        if member.stored {
                            unindexed.insert(record.clone());
                        }
                        search.remove(record);
                        changes.parsed.remove(record);
                        dirty_members.insert(record.clone());
                    }
                    erasure = Some(Erasure {
                        tokens: erased_tokens,
                        overrides: overrides.clone(),
                        position,
                    });
                }
            }
            for change in &decided.households {
                let c = customers
                    .entry(change.token)
                    .or_insert_with(|| new_customer(position, &at));
                c.household = change.household;
                households.insert(change.token, (change.household, change.reason.clone(), position));
                touched.insert(change.token);
                ev.households.push((change.token, change.household));
            }
            for t in decided.decision.versioned_tokens() {
                if let Some(c) = customers.get_mut(&t) {
                    c.version += 1;
                    c.updated_position = position;
                    c.updated_at = at.clone();
                    touched.insert(t);
                }
            }
            changes.after_event(
                &self.settings,
                &members,
                &customers,
                ev,
                position,
                &at,
                event.recorded_at,
            );
        }

        let applied = started.elapsed();
        // 4. The golden records of every customer whose records changed, as
        // the last event that changed each left them.
        let mut attribute_rows: BTreeMap<(Uuid, &'static str), Vec<Value>> = BTreeMap::new();
        let mut customer_rows: Vec<Vec<Value>> = Vec::new();
        let mut dirty_sorted: Vec<Uuid> = dirty_tokens.iter().copied().collect();
        dirty_sorted.sort();
        let mut all_touched: Vec<Uuid> = touched.union(&dirty_tokens).copied().collect();
        all_touched.sort();
        let mut goldens: HashMap<Uuid, (Golden, i64)> = HashMap::new();
        for token in &dirty_sorted {
            let Some(c) = customers.get(token) else { continue };
            if c.status != "active" {
                continue;
            }
            let record_count = changes.holdings.get(token).map_or(0, BTreeSet::len) as i64;
            let golden = match changes.latest.remove(token) {
                Some(g) => g,
                None => changes.survive(&self.settings, *token, &members, &customers, now),
            };
            for s in &golden.values {
                let (record, system, position, by) = match &s.lineage {
                    Lineage::Record {
                        record,
                        system,
                        position,
                    } => (Some(record.clone()), Some(system.clone()), *position, None),
                    Lineage::Override { by, position } => (None, None, *position, Some(by.clone())),
                };
                attribute_rows.insert(
                    (*token, s.value.attribute().as_str()),
                    vec![
                        Value::text(token.to_string()),
                        Value::text(s.value.attribute().as_str()),
                        Value::text(serde_json::to_string(&s.value).unwrap_or_default()),
                        Value::Text(record),
                        Value::Text(system),
                        Value::int(to_i64(position)),
                        Value::text(s.chosen.as_str()),
                        Value::text(golden.rule_set.clone()),
                        Value::Text(by),
                    ],
                );
            }
            goldens.insert(*token, (golden, record_count));
        }
        for token in &all_touched {
            let Some(c) = customers.get(token) else { continue };
            let (golden, count) = match goldens.remove(token) {
                Some((g, n)) => (Some(g), n),
                None if c.status == "active" && !dirty_tokens.contains(token) => {
                    // Only its version or household changed: keep the golden
                    // columns as they are (upsert below leaves them alone).
                    (None, -1)
                }
                None => (None, 0),
            };
            let keep_golden = count < 0;
            let mut row = vec![
                Value::text(token.to_string()),
                Value::text(c.status),
                Value::Text(c.merged_into.map(|t| t.to_string())),
                Value::Text(c.household.map(|t| t.to_string())),
            ];
            row.extend(golden_columns(golden.as_ref()));
            row.extend([
                Value::int(count.max(0)),
                Value::int(c.version),
                Value::int(c.created_position),
                Value::text(c.created_at.clone()),
                Value::int(c.updated_position),
                Value::text(c.updated_at.clone()),
                Value::text(self.settings.rules.version.clone()),
                Value::int(i64::from(keep_golden)),
            ]);
            customer_rows.push(row);
        }

        let survived = started.elapsed();
        // 5. Write back.
        for (absorbed, survivor) in &redirects {
            sqlx::query(&names.sql("UPDATE customer{s} SET merged_into = $2 WHERE merged_into = $1"))
                .bind(absorbed.to_string())
                .bind(survivor.to_string())
                .execute(&mut *tx)
                .await?;
        }
        let mut dirty_member_rows: Vec<Vec<Value>> = Vec::new();
        let mut moved_member_rows: Vec<Vec<Value>> = Vec::new();
        let mut changed_members: Vec<&String> = dirty_members.union(&moved_members).collect();
        changed_members.sort();
        for record in changed_members {
            let Some(m) = members.get(record) else { continue };
            if dirty_members.contains(record) || !m.stored {
                dirty_member_rows.push(vec![
                    Value::text(record.clone()),
                    Value::Text(m.token.map(|t| t.to_string())),
                    Value::text(m.system.clone()),
                    Value::Text(m.source_id.clone()),
                    Value::text(m.state.clone()),
                    Value::int(m.position),
                    Value::text(m.recorded_at.clone()),
                    Value::Text(m.attributes.clone()),
                    Value::Text(m.search_keys.clone()),
                ]);
            } else {
                moved_member_rows.push(vec![
                    Value::text(record.clone()),
                    Value::Text(m.token.map(|t| t.to_string())),
                ]);
            }
        }
        execute_rows(
            tx,
            &names.sql(&format!("INSERT INTO customer_member{{s}} ({MEMBER_COLUMNS})")),
            "ON CONFLICT (record) DO UPDATE SET token = excluded.token, system = excluded.system, \
             source_id = excluded.source_id, state = excluded.state, position = excluded.position, \
             recorded_at = excluded.recorded_at, attributes = excluded.attributes, search_keys = excluded.search_keys",
            9,
            &dirty_member_rows,
        )
        .await?;
        execute_rows(
            tx,
            &names.sql("UPDATE customer_member{s} SET token = v.column2 FROM ("),
            &names.sql(") AS v WHERE customer_member{s}.record = v.column1"),
            2,
            &moved_member_rows,
        )
        .await?;
        // Search rows of records whose content changed.
        // Delete by full key the rows a changed record had (its keys as
        // loaded), so the search table needs no index beyond its key.
        let mut old_keys: Vec<Vec<Value>> = Vec::new();
        for record in &unindexed {
            let Some(keys) = members.get(record).and_then(|m| m.stored_keys.as_deref()) else {
                continue;
            };
            for (kind, value) in serde_json::from_str::<Vec<(String, String)>>(keys).unwrap_or_default() {
                old_keys.push(vec![Value::text(kind), Value::text(value), Value::text(record.clone())]);
            }
        }
        execute_rows(
            tx,
            &names.sql("DELETE FROM customer_search{s} WHERE (kind, value, record) IN (SELECT column1, column2, column3 FROM ("),
            ") AS v)",
            3,
            &old_keys,
        )
        .await?;
        let mut search_rows: Vec<Vec<Value>> = Vec::new();
        let mut indexed: Vec<(&String, &Vec<(&'static str, String)>)> = search.iter().collect();
        indexed.sort();
        for (record, keys) in indexed {
            for (kind, value) in keys {
                search_rows.push(vec![
                    Value::text(*kind),
                    Value::text(value.clone()),
                    Value::text(record.clone()),
                ]);
            }
        }
        execute_rows(
            tx,
            &names.sql("INSERT INTO customer_search{s} (kind, value, record)"),
            "",
            3,
            &search_rows,
        )
        .await?;
        // The golden columns are replaced only where survivorship ran (the
        // row's last value says whether to keep them).
        let golden_columns_list = [
            "given_name",
            "middle_name",
            "family_name",
            "name_suffix",
            "email",
            "phone",
            "address_line1",
            "address_line2",
            "city",
            "region",
            "postcode",
            "country",
            "date_of_birth",
            "record_count",
        ];
        let (keep, replace): (Vec<Vec<Value>>, Vec<Vec<Value>>) = customer_rows
            .into_iter()
            .partition(|row| row.last() == Some(&Value::int(1)));
        let strip = |rows: Vec<Vec<Value>>| -> Vec<Vec<Value>> {
            rows.into_iter()
                .map(|mut r| {
                    r.pop();
                    r
                })
                .collect()
        };
        let all_columns = "token, status, merged_into, household, given_name, middle_name, family_name, name_suffix, \
             email, phone, address_line1, address_line2, city, region, postcode, country, date_of_birth, record_count, \
             version, created_position, created_at, updated_position, updated_at, rule_set";
        let common_update = "status = excluded.status, merged_into = excluded.merged_into, household = excluded.household, \
             version = excluded.version, updated_position = excluded.updated_position, updated_at = excluded.updated_at, \
             rule_set = excluded.rule_set";
        let golden_update: String = golden_columns_list
            .iter()
            .map(|c| format!("{c} = excluded.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        execute_rows(
            tx,
            &names.sql(&format!("INSERT INTO customer{{s}} ({all_columns})")),
            &format!("ON CONFLICT (token) DO UPDATE SET {common_update}, {golden_update}"),
            24,
            &strip(replace),
        )
        .await?;
        execute_rows(
            tx,
            &names.sql(&format!("INSERT INTO customer{{s}} ({all_columns})")),
            &format!("ON CONFLICT (token) DO UPDATE SET {common_update}"),
            24,
            &strip(keep),
        )
        .await?;
        // Lineage rows: only those that changed are written. Customers new
        // in this batch have none stored; the others' rows are read first.
        let old_rows: BTreeMap<(Uuid, String), Vec<Value>> = stored_attribute_rows
            .into_iter()
            .filter(|((token, _), _)| dirty_tokens.contains(token))
            .collect();
        let mut gone: Vec<Vec<Value>> = Vec::new();
        for (token, attribute) in old_rows.keys() {
            if !attribute_rows.contains_key(&(*token, attribute_str(attribute))) {
                gone.push(vec![Value::text(token.to_string()), Value::text(attribute.clone())]);
            }
        }
        let changed_rows: Vec<Vec<Value>> = attribute_rows
            .into_iter()
            .filter(|((token, attribute), row)| old_rows.get(&(*token, (*attribute).to_owned())) != Some(row))
            .map(|(_, row)| row)
            .collect();
        execute_rows(
            tx,
            &names.sql("DELETE FROM customer_attribute{s} WHERE (token, attribute) IN (SELECT column1, column2 FROM ("),
            ") AS v)",
            2,
            &gone,
        )
        .await?;
        execute_rows(
            tx,
            &names.sql(
                "INSERT INTO customer_attribute{s} (token, attribute, value, record, system, source_position, rule, \
                 rule_set, overridden_by)",
            ),
            "ON CONFLICT (token, attribute) DO UPDATE SET value = excluded.value, record = excluded.record, \
             system = excluded.system, source_position = excluded.source_position, rule = excluded.rule, \
             rule_set = excluded.rule_set, overridden_by = excluded.overridden_by",
            9,
            &changed_rows,
        )
        .await?;
        if !households.is_empty() {
            let changed: Vec<String> = households.keys().map(Uuid::to_string).collect();
            fetch_in(
                tx,
                &names.sql("DELETE FROM household_member{s} WHERE token IN ({in})"),
                &changed,
            )
            .await?;
            let rows: Vec<Vec<Value>> = households
                .iter()
                .filter_map(|(token, (household, reason, position))| {
                    household.map(|h| {
                        vec![
                            Value::text(h.to_string()),
                            Value::text(token.to_string()),
                            Value::text(reason.clone()),
                            Value::int(*position),
                        ]
                    })
                })
                .collect();
            execute_rows(
                tx,
                &names.sql("INSERT INTO household_member{s} (household, token, reason, position)"),
                "",
                4,
                &rows,
            )
            .await?;
        }
        // Overrides: the removals of those set before this batch, then the
        // rows of those it set (as the batch left them).
        let removal_rows: Vec<Vec<Value>> = override_removals
            .iter()
            .map(|(id, (position, expired))| {
                vec![
                    Value::text(id.to_string()),
                    Value::int(*position),
                    Value::int(i64::from(*expired)),
                ]
            })
            .collect();
        execute_rows(
            tx,
            &names.sql(
                "UPDATE customer_override{s} SET removed_position = v.column2, removed_expired = v.column3 FROM (",
            ),
            &names.sql(") AS v WHERE customer_override{s}.override_id = v.column1"),
            3,
            &removal_rows,
        )
        .await?;
        let set_rows: Vec<Vec<Value>> = override_rows.into_values().collect();
        execute_rows(
            tx,
            &names.sql(&format!("INSERT INTO customer_override{{s}} ({OVERRIDE_COLUMNS})")),
            "ON CONFLICT (override_id) DO UPDATE SET token = excluded.token, attribute = excluded.attribute, \
             value = excluded.value, set_by = excluded.set_by, reason = excluded.reason, position = excluded.position, \
             expires_at = excluded.expires_at, set_at = excluded.set_at, removed_position = excluded.removed_position, \
             removed_expired = excluded.removed_expired",
            11,
            &set_rows,
        )
        .await?;
        execute_rows(
            tx,
            &names.sql(
                "INSERT INTO customer_change{s} (position, ordinal, token, change_type, attributes, detail, recorded_at)",
            ),
            "",
            7,
            &changes.rows,
        )
        .await?;
        tracing::debug!(
            events = batch.events.len(),
            changes = changes.rows.len(),
            decode_ms = decoded.as_secs_f64() * 1e3,
            load_ms = (loaded - decoded).as_secs_f64() * 1e3,
            apply_ms = (applied - loaded).as_secs_f64() * 1e3,
            survive_ms = (survived - applied).as_secs_f64() * 1e3,
            write_ms = (started.elapsed() - survived).as_secs_f64() * 1e3,
            "customers batch"
        );
        Ok(erasure)
    }
}

/// The change types a customer's records' content decides (which values
/// changed, whether a record's key was found gone): an erasure drops them
/// from the erased customer's history, since a rebuild, where its records
/// open as erased, has other ones. The others follow from the decisions.
const CONTENT_CHANGES: [ChangeType; 2] = [ChangeType::Updated, ChangeType::Erased];

/// The change log of the erased tokens before the erasure: the changes
/// their records' content decided are deleted, the others keep no values,
/// and the ordinals of every event that lost a change count 0, 1, 2, ...
/// again. What is left depends on the decisions alone, so a rebuild writes
/// the same rows.
async fn purge_change_log(tx: &mut AnyConnection, names: &Names, erasure: &Erasure) -> Result<(), sqlx::Error> {
    let mut clock = std::time::Instant::now();
    let keys: Vec<String> = erasure.tokens.iter().map(Uuid::to_string).collect();
    let sql =
        names.sql("SELECT position, ordinal, change_type, attributes FROM customer_change{s} WHERE token IN ({in})");
    let mut gone: Vec<Vec<Value>> = Vec::new();
    let mut blank: Vec<Vec<Value>> = Vec::new();
    let mut renumber: BTreeSet<i64> = BTreeSet::new();
    let rows = fetch_in(tx, &sql, &keys).await?;
    let select_ms = lap(&mut clock);
    let found = rows.len();
    for row in rows {
        let position: i64 = row.try_get(0)?;
        let ordinal: i64 = row.try_get(1)?;
        let kind: String = row.try_get(2)?;
        let attributes: String = row.try_get(3)?;
        if position >= erasure.position {
            continue;
        }
        if CONTENT_CHANGES.iter().any(|c| c.as_str() == kind) {
            gone.push(vec![Value::int(position), Value::int(ordinal)]);
            renumber.insert(position);
        } else if attributes != "{}" {
            blank.push(vec![Value::int(position), Value::int(ordinal)]);
        }
    }
    execute_rows(
        tx,
        &names.sql("DELETE FROM customer_change{s} WHERE (position, ordinal) IN (SELECT column1, column2 FROM ("),
        ") AS v)",
        2,
        &gone,
    )
    .await?;
    let delete_ms = lap(&mut clock);
    execute_rows(
        tx,
        &names.sql("UPDATE customer_change{s} SET attributes = '{}' FROM ("),
        &names.sql(") AS v WHERE customer_change{s}.position = v.column1 AND customer_change{s}.ordinal = v.column2"),
        2,
        &blank,
    )
    .await?;
    let blank_ms = lap(&mut clock);
    // Close the gaps: the rows after a deleted one move down (they are
    // deleted and written again; the ones before it keep their place).
    let positions: Vec<i64> = renumber.into_iter().collect();
    let mut moved: Vec<Vec<Value>> = Vec::new();
    let mut rewritten: Vec<Vec<Value>> = Vec::new();
    for chunk in positions.chunks(1000) {
        let sql = names.sql(&format!(
            "SELECT position, ordinal, token, change_type, attributes, detail, recorded_at FROM customer_change{{s}} \
             WHERE position IN ({}) ORDER BY position, ordinal",
            placeholders(chunk.len(), 1)
        ));
        let mut q = sqlx::query(&sql);
        for p in chunk {
            q = q.bind(*p);
        }
        let mut at: Option<(i64, i64)> = None;
        for row in q.fetch_all(&mut *tx).await? {
            let position: i64 = row.try_get(0)?;
            let ordinal: i64 = row.try_get(1)?;
            let next = match at {
                Some((p, n)) if p == position => n + 1,
                _ => 0,
            };
            at = Some((position, next));
            if ordinal == next {
                continue;
            }
            moved.push(vec![Value::int(position), Value::int(ordinal)]);
            rewritten.push(vec![
                Value::int(position),
                Value::int(next),
                Value::Text(row.try_get(2)?),
                Value::Text(row.try_get(3)?),
                Value::Text(row.try_get(4)?),
                Value::Text(row.try_get(5)?),
                Value::Text(row.try_get(6)?),
            ]);
        }
    }
    let renumber_select_ms = lap(&mut clock);
    execute_rows(
        tx,
        &names.sql("DELETE FROM customer_change{s} WHERE (position, ordinal) IN (SELECT column1, column2 FROM ("),
        ") AS v)",
        2,
        &moved,
    )
    .await?;
    execute_rows(
        tx,
        &names.sql(
            "INSERT INTO customer_change{s} (position, ordinal, token, change_type, attributes, detail, recorded_at)",
        ),
        "",
        7,
        &rewritten,
    )
    .await?;
    tracing::debug!(
        found,
        deleted = gone.len(),
        blanked = blank.len(),
        positions = positions.len(),
        moved = moved.len(),
        select_ms,
        delete_ms,
        blank_ms,
        renumber_select_ms,
        renumber_write_ms = lap(&mut clock),
        "customers change-log purge"
    );
    Ok(())
}

/// The overrides set on the erased tokens (or named by the erasure): no
/// value (their keys are destroyed), no reason (free text), ended by the
/// erasure unless they ended before.
async fn purge_overrides(tx: &mut AnyConnection, names: &Names, erasure: &Erasure) -> Result<(), sqlx::Error> {
    let set = "SET value = NULL, reason = '', \
               removed_position = COALESCE(customer_override{s}.removed_position, v.column2) FROM (";
    let by_token: Vec<Vec<Value>> = erasure
        .tokens
        .iter()
        .map(|t| vec![Value::text(t.to_string()), Value::int(erasure.position)])
        .collect();
    execute_rows(
        tx,
        &names.sql(&format!("UPDATE customer_override{{s}} {set}")),
        &names.sql(") AS v WHERE customer_override{s}.token = v.column1"),
        2,
        &by_token,
    )
    .await?;
    let by_id: Vec<Vec<Value>> = erasure
        .overrides
        .iter()
        .map(|o| vec![Value::text(o.to_string()), Value::int(erasure.position)])
        .collect();
    execute_rows(
        tx,
        &names.sql(&format!("UPDATE customer_override{{s}} {set}")),
        &names.sql(") AS v WHERE customer_override{s}.override_id = v.column1"),
        2,
        &by_id,
    )
    .await?;
    Ok(())
}
