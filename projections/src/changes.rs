//! The customer change log: one row per change of a customer that the
//! `customers` projection derives while it applies the log (created,
//! updated, merged, unmerged, household changed, erased), written in the
//! batch's transaction into `customer_change`, and the reads the feed and
//! the webhook dispatcher page through.
//!
//! A change is keyed by the global log position of the event that caused it
//! and an ordinal within that event (a merge changes several customers).
//! The rows are a deterministic function of the log and the projection's
//! configuration, whatever the batch size: survivorship runs after every
//! event that touches a customer (see `customer.rs`), so a rebuild from
//! position 0 writes the same rows and a consumer's cursor stays valid
//! across rebuilds (unless the survivorship configuration changed, which
//! re-masters golden values in history too).
//!
//! An erasure (`CustomerErased`) rewrites the history of the customers it
//! erases, since it held their values in clear: their earlier `created`,
//! `merged`, `unmerged` and `household_changed` changes stay without
//! values, their `updated` and `erased` ones (which the records' content
//! decided, and which a rebuild without that content cannot repeat) are
//! dropped and the other changes of those events move down to keep the
//! ordinals dense; then one `erased` change per token is the erasure
//! notice (`detail.request_id` names the privacy request, if any). So the
//! log after an erasure is again what a rebuild writes; a consumer whose
//! cursor pointed into one of the renumbered events may see one of its
//! changes again or miss one there.
//!
//! Cursors are `(position, ordinal)`, written `P` for `(P, 0)` and `P:k`
//! for `(P, k)`; "after `P`" means after `(P, 0)`.

use std::fmt;

use chrono::{DateTime, Utc};
use mdm_domain::survivorship::GoldenValue;
use serde::Serialize;
use serde_json::{Map, Value as Json};
use sqlx::Row;
use uuid::Uuid;

use crate::db::{parse_time, ReadDb};

/// What happened to a customer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeType {
    /// A new customer (a new token), with all its golden values.
    Created,
    /// Some golden values changed: only those are listed (null: gone).
    Updated,
    /// The customer was merged into another (`detail.survivor`); its token
    /// redirects there from now on.
    Merged,
    /// A record left customer `detail.from` for this one (`detail.to`):
    /// a split, a move, or a not-a-match that separated them.
    Unmerged,
    /// The customer joined, left or changed household (`detail.household`).
    HouseholdChanged,
    /// The customer was erased at the person's request (the erasure
    /// decision: `detail.request_id` when a privacy request was named; the
    /// token answers "erased" for ever), or, before such a decision, an
    /// event showed a record of the customer erased (its data key is
    /// gone). No values.
    Erased,
}

impl ChangeType {
    pub const ALL: [ChangeType; 6] = [
        ChangeType::Created,
        ChangeType::Updated,
        ChangeType::Merged,
        ChangeType::Unmerged,
        ChangeType::HouseholdChanged,
        ChangeType::Erased,
    ];

    /// The stored and published name (a public contract: never rename).
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeType::Created => "created",
            ChangeType::Updated => "updated",
            ChangeType::Merged => "merged",
            ChangeType::Unmerged => "unmerged",
            ChangeType::HouseholdChanged => "household_changed",
            ChangeType::Erased => "erased",
        }
    }

    pub fn parse(s: &str) -> Option<ChangeType> {
        ChangeType::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// Parses a comma-separated list (`created,merged`), each type once;
    /// `None` when an entry is not a type.
    pub fn parse_list(text: &str) -> Option<Vec<ChangeType>> {
        let mut out = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let t = ChangeType::parse(part)?;
            if !out.contains(&t) {
                out.push(t);
            }
        }
        Some(out)
    }
}

impl fmt::Display for ChangeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A place in the change log: after this change.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ChangeCursor {
    pub position: i64,
    pub ordinal: i64,
}

impl ChangeCursor {
    /// Before every change.
    pub const START: ChangeCursor = ChangeCursor {
        position: 0,
        ordinal: 0,
    };

    pub fn new(position: i64, ordinal: i64) -> ChangeCursor {
        ChangeCursor { position, ordinal }
    }

    /// Parses `P` or `P:k` (non-negative integers). `None` for anything
    /// else.
    pub fn parse(text: &str) -> Option<ChangeCursor> {
        let text = text.trim();
        let (p, k) = match text.split_once(':') {
            Some((p, k)) => (p, Some(k)),
            None => (text, None),
        };
        let digits = |s: &str| !s.is_empty() && s.len() <= 19 && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(p) || k.is_some_and(|k| !digits(k)) {
            return None;
        }
        let position: i64 = p.parse().ok()?;
        let ordinal: i64 = match k {
            Some(k) => k.parse().ok()?,
            None => 0,
        };
        Some(ChangeCursor { position, ordinal })
    }
}

/// `P` for ordinal 0, `P:k` otherwise: the feed's event id.
impl fmt::Display for ChangeCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.ordinal == 0 {
            write!(f, "{}", self.position)
        } else {
            write!(f, "{}:{}", self.position, self.ordinal)
        }
    }
}

/// One change of one customer.
#[derive(Clone, PartialEq, Serialize)]
pub struct CustomerChange {
    pub position: i64,
    pub ordinal: i64,
    pub token: Uuid,
    pub change_type: ChangeType,
    /// Golden attribute name → its new value as the customer read model
    /// serves it ([`golden_value_json`]), null when it disappeared. All of
    /// them for `created`, the changed ones for `updated`, none otherwise.
    pub attributes: Map<String, Json>,
    /// The customer's version after the change.
    pub version: i64,
    /// What else the change says (`survivor` and `absorbed` of a merge,
    /// `from` and `to` of an unmerge, `household`), without the version.
    pub detail: Map<String, Json>,
    /// When the event that caused it was recorded in the log.
    pub recorded_at: DateTime<Utc>,
}

impl CustomerChange {
    pub fn cursor(&self) -> ChangeCursor {
        ChangeCursor::new(self.position, self.ordinal)
    }
}

/// Golden values are personal data: only their names are shown.
impl fmt::Debug for CustomerChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CustomerChange")
            .field("position", &self.position)
            .field("ordinal", &self.ordinal)
            .field("token", &self.token)
            .field("change_type", &self.change_type)
            .field("attributes", &self.attributes.keys().collect::<Vec<_>>())
            .field("version", &self.version)
            .field("detail", &self.detail)
            .field("recorded_at", &self.recorded_at)
            .finish()
    }
}

/// A golden value as the API shows it: a name as its parts
/// (`given`, `middle`, `family`, `suffix`), an address as its parts (`line1`,
/// `line2`, `city`, `region`, `postcode`, `country`), absent parts left
/// out; an e-mail address, a phone number and a date of birth (ISO 8601)
/// as strings.
pub fn golden_value_json(value: &GoldenValue) -> Json {
    let mut parts = Map::new();
    let mut part = |name: &str, v: &Option<String>| {
        if let Some(v) = v {
            parts.insert(name.to_owned(), Json::String(v.clone()));
        }
    };
    match value {
        GoldenValue::Name {
            given,
            middle,
            family,
            suffix,
        } => {
            part("given", given);
            part("middle", middle);
            part("family", family);
            part("suffix", suffix);
            Json::Object(parts)
        }
        GoldenValue::Address { address } => {
            part("line1", &address.line1);
            part("line2", &address.line2);
            part("city", &address.city);
            part("region", &address.region);
            part("postcode", &address.postcode);
            part("country", &address.country);
            Json::Object(parts)
        }
        GoldenValue::Email { email } => Json::String(email.clone()),
        GoldenValue::Phone { number } => Json::String(number.clone()),
        GoldenValue::DateOfBirth { date } => Json::String(date.to_string()),
    }
}

/// One page of the change log.
#[derive(Clone, Debug, PartialEq)]
pub struct ChangePage {
    /// The changes of the requested types, in log order.
    pub changes: Vec<CustomerChange>,
    /// Where the next page starts: the last change read, whether or not its
    /// type was asked for (so a rare type filter still moves forward).
    pub next: ChangeCursor,
    /// The page read `limit` changes: more may follow at once.
    pub full: bool,
}

/// The most changes one page reads.
pub const CHANGE_PAGE_MAX: usize = 1000;

/// The changes after `after` (exclusive), in (position, ordinal) order: at
/// most `limit` rows are read (capped at [`CHANGE_PAGE_MAX`]), and those
/// of `types` (every type when `None`) returned. An empty page with
/// `full == false` means the reader is at the end of the log as committed.
pub async fn changes_after(
    db: &ReadDb,
    after: ChangeCursor,
    limit: usize,
    types: Option<&[ChangeType]>,
) -> Result<ChangePage, sqlx::Error> {
    let limit = limit.clamp(1, CHANGE_PAGE_MAX);
    let rows = sqlx::query(
        "SELECT position, ordinal, token, change_type, attributes, detail, recorded_at FROM customer_change \
         WHERE (position, ordinal) > ($1, $2) ORDER BY position, ordinal LIMIT $3",
    )
    .bind(after.position)
    .bind(after.ordinal)
    .bind(i64::try_from(limit).unwrap_or(1))
    .fetch_all(db.pool())
    .await?;
    let full = rows.len() == limit;
    let mut next = after;
    let mut changes = Vec::with_capacity(rows.len());
    for row in &rows {
        let position: i64 = row.try_get(0)?;
        let ordinal: i64 = row.try_get(1)?;
        next = ChangeCursor::new(position, ordinal);
        let kind: String = row.try_get(3)?;
        let Some(change_type) = ChangeType::parse(&kind) else {
            return Err(decode_error("change_type", "unknown change type"));
        };
        if types.is_some_and(|t| !t.contains(&change_type)) {
            continue;
        }
        changes.push(change_of(row, position, ordinal, change_type)?);
    }
    Ok(ChangePage { changes, next, full })
}

/// The change at exactly `at`, if the log holds it.
pub async fn change_at(db: &ReadDb, at: ChangeCursor) -> Result<Option<CustomerChange>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT position, ordinal, token, change_type, attributes, detail, recorded_at FROM customer_change \
         WHERE position = $1 AND ordinal = $2",
    )
    .bind(at.position)
    .bind(at.ordinal)
    .fetch_optional(db.pool())
    .await?;
    let Some(row) = row else { return Ok(None) };
    let kind: String = row.try_get(3)?;
    let change_type = ChangeType::parse(&kind).ok_or_else(|| decode_error("change_type", "unknown change type"))?;
    change_of(&row, at.position, at.ordinal, change_type).map(Some)
}

/// Every change of the customers `tokens` (a customer's token and those
/// merged into it: one person), in (position, ordinal) order; a privacy
/// export derives from them which webhook subscribers were sent the
/// person's data. Served by the index on (token, position).
pub async fn changes_of(db: &ReadDb, tokens: &[Uuid]) -> Result<Vec<CustomerChange>, sqlx::Error> {
    if tokens.is_empty() {
        return Ok(Vec::new());
    }
    let placeholders: Vec<String> = (1..=tokens.len()).map(|i| format!("${i}")).collect();
    let sql = format!(
        "SELECT position, ordinal, token, change_type, attributes, detail, recorded_at FROM customer_change \
         WHERE token IN ({}) ORDER BY position, ordinal",
        placeholders.join(", ")
    );
    let mut q = sqlx::query(&sql);
    for t in tokens {
        q = q.bind(t.to_string());
    }
    let rows = q.fetch_all(db.pool()).await?;
    let mut changes = Vec::with_capacity(rows.len());
    for row in &rows {
        let position: i64 = row.try_get(0)?;
        let ordinal: i64 = row.try_get(1)?;
        let kind: String = row.try_get(3)?;
        let change_type = ChangeType::parse(&kind).ok_or_else(|| decode_error("change_type", "unknown change type"))?;
        changes.push(change_of(row, position, ordinal, change_type)?);
    }
    Ok(changes)
}

/// The last change in the log (`START` when there is none): where a
/// consumer that wants only what happens from now on starts.
pub async fn last_change(db: &ReadDb) -> Result<ChangeCursor, sqlx::Error> {
    let row: Option<(i64, i64)> =
        sqlx::query_as("SELECT position, ordinal FROM customer_change ORDER BY position DESC, ordinal DESC LIMIT 1")
            .fetch_optional(db.pool())
            .await?;
    Ok(row.map(|(p, o)| ChangeCursor::new(p, o)).unwrap_or(ChangeCursor::START))
}

fn decode_error(column: &str, reason: &str) -> sqlx::Error {
    sqlx::Error::ColumnDecode {
        index: column.to_owned(),
        source: reason.to_owned().into(),
    }
}

fn change_of(
    row: &sqlx::any::AnyRow,
    position: i64,
    ordinal: i64,
    change_type: ChangeType,
) -> Result<CustomerChange, sqlx::Error> {
    let token: String = row.try_get(2)?;
    let token = Uuid::parse_str(&token).map_err(|_| decode_error("token", "not a UUID"))?;
    let object = |column: &str, text: &str| -> Result<Map<String, Json>, sqlx::Error> {
        match serde_json::from_str::<Json>(text) {
            Ok(Json::Object(m)) => Ok(m),
            _ => Err(decode_error(column, "not a JSON object")),
        }
    };
    let attributes_text: String = row.try_get(4)?;
    let detail_text: String = row.try_get(5)?;
    let recorded_at: String = row.try_get(6)?;
    let attributes = object("attributes", &attributes_text)?;
    let mut detail = object("detail", &detail_text)?;
    let version = detail.remove("version").and_then(|v| v.as_i64()).unwrap_or(0);
    Ok(CustomerChange {
        position,
        ordinal,
        token,
        change_type,
        attributes,
        version,
        detail,
        recorded_at: parse_time(&recorded_at).ok_or_else(|| decode_error("recorded_at", "not an RFC 3339 time"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_read_and_print_as_position_or_position_and_ordinal() {
        assert_eq!(ChangeCursor::parse("42"), Some(ChangeCursor::new(42, 0)));
        assert_eq!(ChangeCursor::parse("42:3"), Some(ChangeCursor::new(42, 3)));
        assert_eq!(ChangeCursor::parse(" 7 "), Some(ChangeCursor::new(7, 0)));
        for bad in ["", "x", "-1", "1:", ":1", "1:2:3", "1.5", "99999999999999999999", "+1"] {
            assert_eq!(ChangeCursor::parse(bad), None, "{bad:?}");
        }
        assert_eq!(ChangeCursor::new(42, 0).to_string(), "42");
        assert_eq!(ChangeCursor::new(42, 3).to_string(), "42:3");
        assert!(ChangeCursor::new(42, 0) < ChangeCursor::new(42, 1));
        assert!(ChangeCursor::new(42, 9) < ChangeCursor::new(43, 0));
    }

    #[test]
    fn type_lists_parse_known_names_once_each_and_refuse_others() {
        assert_eq!(
            ChangeType::parse_list("created, merged,created"),
            Some(vec![ChangeType::Created, ChangeType::Merged])
        );
        assert_eq!(
            ChangeType::parse_list("household_changed"),
            Some(vec![ChangeType::HouseholdChanged])
        );
        assert_eq!(ChangeType::parse_list("created,deleted"), None);
        for t in ChangeType::ALL {
            assert_eq!(ChangeType::parse(t.as_str()), Some(t));
        }
    }

    #[test]
    fn golden_values_show_as_the_api_shows_them() {
        let name = GoldenValue::Name {
            given: Some("Ada".into()),
            middle: None,
            family: Some("Lovelace".into()),
            suffix: None,
        };
        assert_eq!(
            golden_value_json(&name),
            serde_json::json!({"given": "Ada", "family": "Lovelace"})
        );
        let phone = GoldenValue::Phone {
            number: "+1 312 555 0100".into(),
        };
        assert_eq!(golden_value_json(&phone), serde_json::json!("+1 312 555 0100"));
        let dob = GoldenValue::DateOfBirth {
            date: chrono::NaiveDate::from_ymd_opt(1815, 12, 10).expect("date"),
        };
        assert_eq!(golden_value_json(&dob), serde_json::json!("1815-12-10"));
    }
}
