//! The read functions of the privacy request ledger (`ledger.rs`'s
//! tables): a filtered, keyset-paginated list of requests and one request
//! with its notices. Whether a request is overdue depends on when the
//! question is asked: callers pass `now` (the service's clock), the rows
//! hold only the due date.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use mdm_domain::privacy::{Recipient, RequestKind, Status};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::Row;
use uuid::Uuid;

use crate::db::{parse_time, time_text, ReadDb};
use crate::ledger::{kind_of, recipient_of, status_of};

/// The most requests one list call returns.
pub const LEDGER_PAGE_MAX: usize = 1000;

/// A privacy request as the ledger's read model holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrivacyRequestRow {
    pub request_id: Uuid,
    pub kind: RequestKind,
    pub token: Option<Uuid>,
    pub received_at: DateTime<Utc>,
    pub received_by: String,
    pub verified_by: Option<String>,
    pub verification_method: Option<String>,
    pub verified_at: Option<DateTime<Utc>>,
    pub extension_reason: Option<String>,
    pub extended_by: Option<String>,
    /// 45 days after receipt, 90 once extended.
    pub due_at: DateTime<Utc>,
    pub status: Status,
    /// What was done, or the basis of the denial.
    pub outcome: Option<String>,
    pub closed_at: Option<DateTime<Utc>>,
    /// 24 months after it closed.
    pub retained_until: Option<DateTime<Utc>>,
    /// Log position of the request's last event applied.
    pub position: i64,
    /// When that event was recorded.
    pub updated_at: DateTime<Utc>,
}

impl PrivacyRequestRow {
    /// Open and past its due date at `now` (as the domain's
    /// `Request::is_overdue`).
    pub fn is_overdue(&self, now: DateTime<Utc>) -> bool {
        self.status == Status::Open && now > self.due_at
    }

    /// Where the next page starts when this row is the last of a page.
    pub fn cursor(&self) -> LedgerCursor {
        LedgerCursor {
            received_at: self.received_at,
            request_id: self.request_id,
        }
    }
}

/// A notice sent to one recipient.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrivacyNoticeRow {
    pub recipient: Recipient,
    pub notified_at: DateTime<Utc>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub acknowledged_by: Option<String>,
}

/// The key of the last request of a page: lists are ordered by receipt
/// time, then request id. Its text form (`<received_at>,<request id>`) is
/// the API's and the CLI's `cursor`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LedgerCursor {
    pub received_at: DateTime<Utc>,
    pub request_id: Uuid,
}

impl fmt::Display for LedgerCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},{}", time_text(self.received_at), self.request_id)
    }
}

impl FromStr for LedgerCursor {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<LedgerCursor, &'static str> {
        const FORM: &str = "a cursor is the `next` of the previous page";
        let (at, id) = s.split_once(',').ok_or(FORM)?;
        Ok(LedgerCursor {
            received_at: parse_time(at).ok_or(FORM)?,
            request_id: Uuid::parse_str(id).map_err(|_| FORM)?,
        })
    }
}

/// Which requests a list shows. Every criterion given must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LedgerFilter {
    pub status: Option<Status>,
    pub kind: Option<RequestKind>,
    /// `Some(true)`: only requests overdue at `now`; `Some(false)`: only
    /// those that are not.
    pub overdue: Option<bool>,
    /// Start after this request (exclusive).
    pub after: Option<LedgerCursor>,
}

const REQUEST_COLUMNS: &str = "request_id, kind, token, received_at, received_by, verified_by, verification_method, \
     verified_at, extension_reason, extended_by, due_at, status, outcome, closed_at, retained_until, position, \
     updated_at";

fn decode_error(column: &str, reason: &str) -> sqlx::Error {
    sqlx::Error::ColumnDecode {
        index: column.to_owned(),
        source: reason.to_owned().into(),
    }
}

fn get_time(row: &AnyRow, column: &str) -> Result<DateTime<Utc>, sqlx::Error> {
    let text: String = row.try_get(column)?;
    parse_time(&text).ok_or_else(|| decode_error(column, "not an RFC 3339 time"))
}

fn get_opt_time(row: &AnyRow, column: &str) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    let text: Option<String> = row.try_get(column)?;
    text.map(|t| parse_time(&t).ok_or_else(|| decode_error(column, "not an RFC 3339 time")))
        .transpose()
}

fn get_uuid(row: &AnyRow, column: &str) -> Result<Uuid, sqlx::Error> {
    let text: String = row.try_get(column)?;
    Uuid::parse_str(&text).map_err(|_| decode_error(column, "not a UUID"))
}

fn request_of(row: &AnyRow) -> Result<PrivacyRequestRow, sqlx::Error> {
    let kind: String = row.try_get("kind")?;
    let status: String = row.try_get("status")?;
    let token: Option<String> = row.try_get("token")?;
    Ok(PrivacyRequestRow {
        request_id: get_uuid(row, "request_id")?,
        kind: kind_of(&kind).ok_or_else(|| decode_error("kind", "unknown request kind"))?,
        token: token
            .map(|t| Uuid::parse_str(&t).map_err(|_| decode_error("token", "not a UUID")))
            .transpose()?,
        received_at: get_time(row, "received_at")?,
        received_by: row.try_get("received_by")?,
        verified_by: row.try_get("verified_by")?,
        verification_method: row.try_get("verification_method")?,
        verified_at: get_opt_time(row, "verified_at")?,
        extension_reason: row.try_get("extension_reason")?,
        extended_by: row.try_get("extended_by")?,
        due_at: get_time(row, "due_at")?,
        status: status_of(&status).ok_or_else(|| decode_error("status", "unknown status"))?,
        outcome: row.try_get("outcome")?,
        closed_at: get_opt_time(row, "closed_at")?,
        retained_until: get_opt_time(row, "retained_until")?,
        position: row.try_get("position")?,
        updated_at: get_time(row, "updated_at")?,
    })
}

/// Requests matching `filter` at `now`, oldest receipt first (then by
/// request id), at most `limit` (1 to [`LEDGER_PAGE_MAX`]). The next page
/// starts after the last row's [`PrivacyRequestRow::cursor`]; ask for one
/// row more than you show to know whether there is one.
pub async fn privacy_requests(
    db: &ReadDb,
    filter: &LedgerFilter,
    now: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<PrivacyRequestRow>, sqlx::Error> {
    let mut binds: Vec<String> = Vec::new();
    let mut conditions: Vec<String> = Vec::new();
    if let Some(status) = filter.status {
        binds.push(status.as_str().to_owned());
        conditions.push(format!("status = ${}", binds.len()));
    }
    if let Some(kind) = filter.kind {
        binds.push(kind.as_str().to_owned());
        conditions.push(format!("kind = ${}", binds.len()));
    }
    if let Some(overdue) = filter.overdue {
        // Times are stored as RFC 3339 UTC text with microseconds: text
        // order is time order.
        binds.push(time_text(now));
        let overdue_now = format!("(status = 'open' AND due_at < ${})", binds.len());
        conditions.push(if overdue {
            overdue_now
        } else {
            format!("NOT {overdue_now}")
        });
    }
    if let Some(after) = filter.after {
        binds.push(time_text(after.received_at));
        binds.push(after.request_id.to_string());
        conditions.push(format!(
            "(received_at, request_id) > (${}, ${})",
            binds.len() - 1,
            binds.len()
        ));
    }
    let sql = format!("SELECT {REQUEST_COLUMNS} FROM privacy_request");
    let rows = page(db, &sql, &conditions, "received_at, request_id", &binds, limit).await?;
    rows.iter().map(request_of).collect()
}

/// `select` filtered by every one of `conditions` (text parameters `$1`..
/// bound to `binds`), ordered by `order`, at most `limit` rows (1 to
/// [`LEDGER_PAGE_MAX`]): one keyset page of a ledger list.
async fn page(
    db: &ReadDb,
    select: &str,
    conditions: &[String],
    order: &str,
    binds: &[String],
    limit: usize,
) -> Result<Vec<AnyRow>, sqlx::Error> {
    let filter_sql = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    let sql = format!("{select} {filter_sql} ORDER BY {order} LIMIT ${}", binds.len() + 1);
    let mut q = sqlx::query(&sql);
    for b in binds {
        q = q.bind(b.as_str());
    }
    let limit = i64::try_from(limit.clamp(1, LEDGER_PAGE_MAX)).unwrap_or(1);
    q.bind(limit).fetch_all(db.pool()).await
}

/// One request with its notices (in the order they were sent); `None` for
/// a request the read model does not hold (unknown, or not projected yet).
pub async fn privacy_request(
    db: &ReadDb,
    request_id: Uuid,
) -> Result<Option<(PrivacyRequestRow, Vec<PrivacyNoticeRow>)>, sqlx::Error> {
    let sql = format!("SELECT {REQUEST_COLUMNS} FROM privacy_request WHERE request_id = $1");
    let Some(row) = sqlx::query(&sql)
        .bind(request_id.to_string())
        .fetch_optional(db.pool())
        .await?
    else {
        return Ok(None);
    };
    let request = request_of(&row)?;
    let notices = notices_of(db, request_id).await?;
    Ok(Some((request, notices)))
}

/// The notices of one request, in the order they were sent.
async fn notices_of(db: &ReadDb, request_id: Uuid) -> Result<Vec<PrivacyNoticeRow>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT recipient_kind, recipient_id, notified_at, acknowledged_at, acknowledged_by FROM privacy_notice \
         WHERE request_id = $1 ORDER BY notified_at, recipient_kind, recipient_id",
    )
    .bind(request_id.to_string())
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|row| {
            let kind: String = row.try_get("recipient_kind")?;
            let id: String = row.try_get("recipient_id")?;
            Ok(PrivacyNoticeRow {
                recipient: recipient_of(&kind, &id)
                    .ok_or_else(|| decode_error("recipient_kind", "unknown recipient"))?,
                notified_at: get_time(row, "notified_at")?,
                acknowledged_at: get_opt_time(row, "acknowledged_at")?,
                acknowledged_by: row.try_get("acknowledged_by")?,
            })
        })
        .collect()
}

/// The requests naming any of `tokens` (a customer's token and those
/// merged into it), oldest receipt first, each with its notices: what a
/// privacy export of that customer lists. Requests are few per person;
/// this reads them all.
pub async fn privacy_requests_naming(
    db: &ReadDb,
    tokens: &[Uuid],
) -> Result<Vec<(PrivacyRequestRow, Vec<PrivacyNoticeRow>)>, sqlx::Error> {
    if tokens.is_empty() {
        return Ok(Vec::new());
    }
    let placeholders: Vec<String> = (1..=tokens.len()).map(|i| format!("${i}")).collect();
    let sql = format!(
        "SELECT {REQUEST_COLUMNS} FROM privacy_request WHERE token IN ({}) ORDER BY received_at, request_id",
        placeholders.join(", ")
    );
    let mut q = sqlx::query(&sql);
    for t in tokens {
        q = q.bind(t.to_string());
    }
    let rows = q.fetch_all(db.pool()).await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let request = request_of(row)?;
        let notices = notices_of(db, request.request_id).await?;
        out.push((request, notices));
    }
    Ok(out)
}

/// A record of an erased person that its source sent again: held for a
/// compliance decision. The record is named by its system only (its
/// pseudonymous stream stays internal).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrivacyHoldRow {
    pub hold_id: Uuid,
    /// The source system that sent it again: it must be told.
    pub system: String,
    /// The customer erased, when the erasure is known to the read model.
    pub token: Option<Uuid>,
    /// The privacy request of the erasure, when it named one.
    pub request_id: Option<Uuid>,
    pub held_at: DateTime<Utc>,
    /// `pending`, `suppressed` or `released`.
    pub state: String,
    pub decided_by: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    pub reason: Option<String>,
    /// The erased record's pseudonymous stream (internal: not for clients).
    #[serde(skip)]
    pub record: String,
}

const HOLD_COLUMNS: &str = "hold_id, record, system, token, request_id, held_at, state, decided_by, decided_at, reason";

fn hold_of(row: &AnyRow) -> Result<PrivacyHoldRow, sqlx::Error> {
    let opt_uuid = |column: &str| -> Result<Option<Uuid>, sqlx::Error> {
        let text: Option<String> = row.try_get(column)?;
        text.map(|t| Uuid::parse_str(&t).map_err(|_| decode_error(column, "not a UUID")))
            .transpose()
    };
    Ok(PrivacyHoldRow {
        hold_id: get_uuid(row, "hold_id")?,
        record: row.try_get("record")?,
        system: row.try_get("system")?,
        token: opt_uuid("token")?,
        request_id: opt_uuid("request_id")?,
        held_at: get_time(row, "held_at")?,
        state: row.try_get("state")?,
        decided_by: row.try_get("decided_by")?,
        decided_at: get_opt_time(row, "decided_at")?,
        reason: row.try_get("reason")?,
    })
}

/// One hold (`None`: unknown, or not projected yet).
pub async fn privacy_hold(db: &ReadDb, hold_id: Uuid) -> Result<Option<PrivacyHoldRow>, sqlx::Error> {
    let sql = format!("SELECT {HOLD_COLUMNS} FROM privacy_hold WHERE hold_id = $1");
    let row = sqlx::query(&sql)
        .bind(hold_id.to_string())
        .fetch_optional(db.pool())
        .await?;
    row.as_ref().map(hold_of).transpose()
}

/// The holds filed under a request, oldest first.
pub async fn privacy_holds_of(db: &ReadDb, request_id: Uuid) -> Result<Vec<PrivacyHoldRow>, sqlx::Error> {
    let sql = format!("SELECT {HOLD_COLUMNS} FROM privacy_hold WHERE request_id = $1 ORDER BY held_at, hold_id");
    let rows = sqlx::query(&sql)
        .bind(request_id.to_string())
        .fetch_all(db.pool())
        .await?;
    rows.iter().map(hold_of).collect()
}

/// Holds in `state` (every state when `None`), oldest first, after the hold
/// `after` (exclusive; its `(held_at, hold_id)`), at most `limit` (1 to
/// [`LEDGER_PAGE_MAX`]).
pub async fn privacy_holds(
    db: &ReadDb,
    state: Option<&str>,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: usize,
) -> Result<Vec<PrivacyHoldRow>, sqlx::Error> {
    let mut binds: Vec<String> = Vec::new();
    let mut conditions: Vec<String> = Vec::new();
    if let Some(state) = state {
        binds.push(state.to_owned());
        conditions.push(format!("state = ${}", binds.len()));
    }
    if let Some((at, id)) = after {
        binds.push(time_text(at));
        binds.push(id.to_string());
        conditions.push(format!("(held_at, hold_id) > (${}, ${})", binds.len() - 1, binds.len()));
    }
    let sql = format!("SELECT {HOLD_COLUMNS} FROM privacy_hold");
    let rows = page(db, &sql, &conditions, "held_at, hold_id", &binds, limit).await?;
    rows.iter().map(hold_of).collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::TimeDelta;
    use mdm_commands::opened::SourceRecordOpener;
    use mdm_domain::privacy::{stream, LedgerEvent};
    use mdm_store::keys::sqlite::SqliteKeyStore;
    use mdm_store::keys::MasterKey;
    use mdm_store::sqlite::SqliteEventStore;
    use mdm_store::{EventStore, ExpectedVersion, Json, NewEvent};

    use super::*;
    use crate::ledger::LedgerProjection;
    use crate::runner::{dump, Runner};

    struct Fixture {
        _dir: tempfile::TempDir,
        store: Arc<dyn EventStore>,
        opener: SourceRecordOpener,
        dir: std::path::PathBuf,
    }

    async fn fixture() -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().to_owned();
        let store: Arc<dyn EventStore> = Arc::new(SqliteEventStore::open(path.join("events.db")).await.expect("store"));
        let keys = SqliteKeyStore::open(&path.join("keys.db"), MasterKey::generate())
            .await
            .expect("keys");
        Fixture {
            _dir: dir,
            store,
            opener: SourceRecordOpener::new(Arc::new(keys), 1000),
            dir: path,
        }
    }

    impl Fixture {
        /// Appends the events of one request, as the commands would.
        async fn request(&self, request_id: Uuid, events: &[LedgerEvent]) {
            let new: Vec<NewEvent> = events
                .iter()
                .map(|e| {
                    NewEvent::new(
                        Uuid::now_v7(),
                        e.event_type(),
                        Json::encode(e).expect("json"),
                        Json::empty_object(),
                    )
                })
                .collect();
            self.store
                .append(&stream(request_id), ExpectedVersion::NoStream, new)
                .await
                .expect("append");
        }

        /// A read model of its own, caught up with the log in batches of `batch`.
        async fn read_model(&self, name: &str, batch: usize) -> ReadDb {
            let db = ReadDb::open_sqlite(&self.dir.join(name)).await.expect("read db");
            Runner::new(
                self.store.clone(),
                db.clone(),
                Arc::new(LedgerProjection),
                self.opener.clone(),
            )
            .with_batch(batch)
            .catch_up()
            .await
            .expect("caught up");
            db
        }
    }

    fn received(id: Uuid, kind: RequestKind, at: DateTime<Utc>) -> LedgerEvent {
        LedgerEvent::RequestReceived {
            request_id: id,
            kind,
            token: Some(Uuid::from_u128(99)),
            received_at: at,
            by: "compliance-1".into(),
        }
    }

    fn ids(rows: &[PrivacyRequestRow]) -> Vec<Uuid> {
        rows.iter().map(|r| r.request_id).collect()
    }

    #[tokio::test]
    async fn overdue_filters_and_pages_follow_the_domain_rules() {
        let f = fixture().await;
        let now = chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 3, 1, 9, 0, 0)
            .single()
            .expect("a time");
        let days = |n: i64| now - TimeDelta::days(n);
        let late = Uuid::from_u128(1);
        let extended = Uuid::from_u128(2);
        let closed = Uuid::from_u128(3);
        let fresh = Uuid::from_u128(4);
        // Received 50 days ago and still open: overdue.
        f.request(late, &[received(late, RequestKind::Erasure, days(50))]).await;
        // 50 days ago but extended: due in 40 days.
        f.request(
            extended,
            &[
                received(extended, RequestKind::RightToKnow, days(50)),
                LedgerEvent::RequestExtended {
                    by: "compliance-1".into(),
                    reason: "the requester asked for more time".into(),
                    at: days(10),
                },
            ],
        )
        .await;
        // 60 days ago, completed: closed requests are never overdue.
        let hook = Recipient::Webhook(Uuid::from_u128(7));
        f.request(
            closed,
            &[
                received(closed, RequestKind::Erasure, days(60)),
                LedgerEvent::RequestVerified {
                    by: "compliance-1".into(),
                    method: "call-back".into(),
                    at: days(59),
                },
                LedgerEvent::RequestCompleted {
                    by: "compliance-1".into(),
                    outcome: "erased 3 source records".into(),
                    at: days(30),
                },
                LedgerEvent::RecipientNotified {
                    recipient: hook.clone(),
                    at: days(29),
                },
                LedgerEvent::RecipientNotified {
                    recipient: Recipient::SourceSystem("finance".into()),
                    at: days(28),
                },
                LedgerEvent::NoticeAcknowledged {
                    recipient: hook.clone(),
                    by: "dealer".into(),
                    at: days(27),
                },
            ],
        )
        .await;
        f.request(fresh, &[received(fresh, RequestKind::Erasure, days(0))])
            .await;
        // Events of other streams are none of the ledger's business.
        f.store
            .append(
                "customer-x",
                ExpectedVersion::Any,
                vec![NewEvent::new(
                    Uuid::now_v7(),
                    "Other",
                    Json::empty_object(),
                    Json::empty_object(),
                )],
            )
            .await
            .expect("append");

        let db = f.read_model("read.db", 5000).await;
        let all = privacy_requests(&db, &LedgerFilter::default(), now, 100)
            .await
            .expect("list");
        assert_eq!(ids(&all), [closed, late, extended, fresh], "oldest receipt first");
        let overdue = LedgerFilter {
            overdue: Some(true),
            ..LedgerFilter::default()
        };
        let rows = privacy_requests(&db, &overdue, now, 100).await.expect("list");
        assert_eq!(ids(&rows), [late]);
        assert!(rows[0].is_overdue(now));
        assert_eq!(rows[0].due_at, days(50) + TimeDelta::days(45));
        // The same question 11 days earlier: nothing was late yet.
        assert!(privacy_requests(&db, &overdue, days(11), 100)
            .await
            .expect("list")
            .is_empty());
        let not_overdue = LedgerFilter {
            overdue: Some(false),
            ..LedgerFilter::default()
        };
        let rows = privacy_requests(&db, &not_overdue, now, 100).await.expect("list");
        assert_eq!(ids(&rows), [closed, extended, fresh]);
        assert!(rows.iter().all(|r| !r.is_overdue(now)));
        let ext = &rows[1];
        assert_eq!(ext.due_at, days(50) + TimeDelta::days(90));
        assert_eq!(
            ext.extension_reason.as_deref(),
            Some("the requester asked for more time")
        );

        let open_erasures = LedgerFilter {
            status: Some(Status::Open),
            kind: Some(RequestKind::Erasure),
            ..LedgerFilter::default()
        };
        let rows = privacy_requests(&db, &open_erasures, now, 100).await.expect("list");
        assert_eq!(ids(&rows), [late, fresh]);

        // Pages of two, each starting after the last row of the one before.
        let first = privacy_requests(&db, &LedgerFilter::default(), now, 2)
            .await
            .expect("page");
        assert_eq!(ids(&first), [closed, late]);
        let cursor: LedgerCursor = first[1].cursor().to_string().parse().expect("cursor round-trips");
        let next = LedgerFilter {
            after: Some(cursor),
            ..LedgerFilter::default()
        };
        let second = privacy_requests(&db, &next, now, 2).await.expect("page");
        assert_eq!(ids(&second), [extended, fresh]);
        assert!("not a cursor".parse::<LedgerCursor>().is_err());

        let (row, notices) = privacy_request(&db, closed).await.expect("read").expect("found");
        assert_eq!(row.status, Status::Completed);
        assert_eq!(row.outcome.as_deref(), Some("erased 3 source records"));
        assert_eq!(row.verification_method.as_deref(), Some("call-back"));
        assert_eq!(row.retained_until, days(30).checked_add_months(chrono::Months::new(24)));
        assert_eq!(notices.len(), 2);
        assert_eq!(notices[0].recipient, hook);
        assert_eq!(notices[0].acknowledged_by.as_deref(), Some("dealer"));
        assert_eq!(notices[1].acknowledged_at, None);
        assert!(privacy_request(&db, Uuid::from_u128(42)).await.expect("read").is_none());
        // Every request names token 99 (see `received`); none names 98.
        let naming = privacy_requests_naming(&db, &[Uuid::from_u128(98), Uuid::from_u128(99)])
            .await
            .expect("read");
        assert_eq!(
            naming.iter().map(|(r, _)| r.request_id).collect::<Vec<_>>(),
            [closed, late, extended, fresh]
        );
        assert_eq!(naming[0].1, notices, "with its notices");
        assert!(privacy_requests_naming(&db, &[Uuid::from_u128(98)])
            .await
            .expect("read")
            .is_empty());

        // One event per batch folds on from the rows (the stored request
        // and its notices) and must end exactly where one batch ends.
        let slow = f.read_model("slow.db", 1).await;
        let projection = LedgerProjection;
        assert_eq!(
            dump(&slow, &projection).await.expect("dump"),
            dump(&db, &projection).await.expect("dump")
        );
    }
}
