//! The `decisions` projection: every decision per customer (the history a
//! steward audits) and the review queue.
//!
//! Decisions hold no personal data (records are named by their
//! pseudonymous streams, customers by token), so this projection never opens
//! source records and an erasure (`CustomerErased`) keeps its rows: the
//! decision gets its history rows like any other, and the open review items
//! naming an erased or retained record or an erased token close as
//! `erased` (there is nothing left to decide about them).

use std::collections::BTreeSet;

use async_trait::async_trait;
use mdm_domain::resolution::events::{Decided, DecidedBy, Decision, ReviewOutcome, RESOLUTION_STREAM};
use sqlx::{AnyConnection, Row};
use uuid::Uuid;

use crate::db::{execute_rows, fetch_in, fit, placeholders, time_text, to_i64, Dialect, Value};
use crate::runner::{Batch, Names, Projection, ProjectionError};

/// The decision history and review queue.
#[derive(Debug, Default)]
pub struct DecisionsProjection;

const TABLES: &[&str] = &["decision_history", "review_item"];

const POSTGRES: &[&str] = &[
    "CREATE TABLE decision_history{s} (
        token text NOT NULL,
        position bigint NOT NULL,
        stream_version bigint NOT NULL,
        seq bigint NOT NULL,
        decision_type text NOT NULL,
        actor_kind text NOT NULL,
        actor text,
        reason text NOT NULL,
        rule_set text NOT NULL,
        record text,
        other_tokens text NOT NULL,
        explanation text,
        decision text NOT NULL,
        recorded_at text NOT NULL,
        PRIMARY KEY (token, position)
    )",
    "COMMENT ON TABLE decision_history{s} IS 'Every decision that named a customer, one row per customer it named: what the history of a customer shows'",
    "COMMENT ON COLUMN decision_history{s}.token IS 'The customer the row is about'",
    "COMMENT ON COLUMN decision_history{s}.position IS 'Global log position of the decision event'",
    "COMMENT ON COLUMN decision_history{s}.stream_version IS 'Version of the decision event in the resolution stream (to read it back for as-of)'",
    "COMMENT ON COLUMN decision_history{s}.seq IS 'The resolver''s dense decision number'",
    "COMMENT ON COLUMN decision_history{s}.decision_type IS 'Event type: CustomerCreated, RecordLinked, CustomersMerged, ...'",
    "COMMENT ON COLUMN decision_history{s}.actor_kind IS 'resolver, steward or compliance (an erasure)'",
    "COMMENT ON COLUMN decision_history{s}.actor IS 'The steward''s or compliance user''s id (null for the resolver)'",
    "COMMENT ON COLUMN decision_history{s}.reason IS 'The steward''s reason, or the resolver''s rule'",
    "COMMENT ON COLUMN decision_history{s}.rule_set IS 'Version of the match parameters and rules that scored it'",
    "COMMENT ON COLUMN decision_history{s}.record IS 'The source record (pseudonymous stream) the decision was about, if one'",
    "COMMENT ON COLUMN decision_history{s}.other_tokens IS 'JSON array of the other customers the decision named'",
    "COMMENT ON COLUMN decision_history{s}.explanation IS 'JSON match explanation (levels, weights, total, band), when scored'",
    "COMMENT ON COLUMN decision_history{s}.decision IS 'The decision event''s payload as JSON without its match explanations (no personal data)'",
    "COMMENT ON COLUMN decision_history{s}.recorded_at IS 'When the decision was recorded (RFC 3339, UTC)'",
    "CREATE INDEX decision_history_g{g}_position ON decision_history{s} (position)",
    "CREATE INDEX decision_history_g{g}_record ON decision_history{s} (record)",
    "CREATE TABLE review_item{s} (
        review_id text PRIMARY KEY,
        record text NOT NULL,
        token text NOT NULL,
        candidate text NOT NULL,
        candidate_record text NOT NULL,
        total double precision NOT NULL,
        explanation text NOT NULL,
        state text NOT NULL,
        opened_position bigint NOT NULL,
        opened_at text NOT NULL,
        closed_position bigint,
        closed_at text,
        closed_by text,
        close_reason text
    )",
    "COMMENT ON TABLE review_item{s} IS 'The review queue: pairs the resolver could not decide, open and closed'",
    "COMMENT ON COLUMN review_item{s}.review_id IS 'Id of the review item'",
    "COMMENT ON COLUMN review_item{s}.record IS 'The record that prompted it (pseudonymous stream)'",
    "COMMENT ON COLUMN review_item{s}.token IS 'The customer that record belonged to when the item opened'",
    "COMMENT ON COLUMN review_item{s}.candidate IS 'The customer it might belong to instead'",
    "COMMENT ON COLUMN review_item{s}.candidate_record IS 'The candidate''s best-scoring record'",
    "COMMENT ON COLUMN review_item{s}.total IS 'Match weight of the pair, in bits'",
    "COMMENT ON COLUMN review_item{s}.explanation IS 'JSON match explanation of the pair'",
    "COMMENT ON COLUMN review_item{s}.state IS 'open, linked, kept_apart, skipped, or erased (closed by the erasure of a customer or record it names)'",
    "COMMENT ON COLUMN review_item{s}.opened_position IS 'Log position of the ReviewRequested decision'",
    "COMMENT ON COLUMN review_item{s}.opened_at IS 'When it opened (RFC 3339, UTC)'",
    "COMMENT ON COLUMN review_item{s}.closed_position IS 'Log position of the ReviewClosed (or CustomerErased) decision'",
    "COMMENT ON COLUMN review_item{s}.closed_at IS 'When it closed'",
    "COMMENT ON COLUMN review_item{s}.closed_by IS 'The steward who closed it (the compliance user, for an erasure)'",
    "COMMENT ON COLUMN review_item{s}.close_reason IS 'The steward''s reason'",
    "CREATE INDEX review_item_g{g}_state ON review_item{s} (state, opened_position)",
    "CREATE INDEX review_item_g{g}_record ON review_item{s} (record)",
    "CREATE INDEX review_item_g{g}_candidate_record ON review_item{s} (candidate_record)",
    "CREATE INDEX review_item_g{g}_token ON review_item{s} (token)",
    "CREATE INDEX review_item_g{g}_candidate ON review_item{s} (candidate)",
];

// SQLite has no COMMENT: the PostgreSQL comments above document both.
const SQLITE: &[&str] = &[
    "CREATE TABLE decision_history{s} (
        token text NOT NULL,
        position integer NOT NULL,
        stream_version integer NOT NULL,
        seq integer NOT NULL,
        decision_type text NOT NULL,
        actor_kind text NOT NULL,
        actor text,
        reason text NOT NULL,
        rule_set text NOT NULL,
        record text,
        other_tokens text NOT NULL,
        explanation text,
        decision text NOT NULL,
        recorded_at text NOT NULL,
        PRIMARY KEY (token, position)
    ) WITHOUT ROWID",
    "CREATE INDEX decision_history_g{g}_position ON decision_history{s} (position)",
    "CREATE INDEX decision_history_g{g}_record ON decision_history{s} (record)",
    "CREATE TABLE review_item{s} (
        review_id text PRIMARY KEY,
        record text NOT NULL,
        token text NOT NULL,
        candidate text NOT NULL,
        candidate_record text NOT NULL,
        total real NOT NULL,
        explanation text NOT NULL,
        state text NOT NULL,
        opened_position integer NOT NULL,
        opened_at text NOT NULL,
        closed_position integer,
        closed_at text,
        closed_by text,
        close_reason text
    )",
    "CREATE INDEX review_item_g{g}_state ON review_item{s} (state, opened_position)",
    "CREATE INDEX review_item_g{g}_record ON review_item{s} (record)",
    "CREATE INDEX review_item_g{g}_candidate_record ON review_item{s} (candidate_record)",
    "CREATE INDEX review_item_g{g}_token ON review_item{s} (token)",
    "CREATE INDEX review_item_g{g}_candidate ON review_item{s} (candidate)",
];

fn outcome_state(outcome: ReviewOutcome) -> &'static str {
    match outcome {
        ReviewOutcome::Linked => "linked",
        ReviewOutcome::KeptApart => "kept_apart",
        ReviewOutcome::Skipped => "skipped",
    }
}

/// The record a decision is about, if one.
pub fn decision_record(d: &Decision) -> Option<&str> {
    match d {
        Decision::CustomerCreated { record, .. }
        | Decision::RecordLinked { record, .. }
        | Decision::RecordMoved { record, .. }
        | Decision::RecordSplit { record, .. } => Some(record),
        Decision::CustomersMerged { record, .. } => record.as_deref(),
        Decision::ReviewRequested { review } => Some(&review.record),
        Decision::NotAMatchMarked { .. }
        | Decision::ReviewClosed { .. }
        | Decision::HouseholdChanged { .. }
        | Decision::ValueOverridden { .. }
        | Decision::OverrideRemoved { .. }
        | Decision::CustomerErased { .. } => None,
    }
}

fn decision_explanation(d: &Decision) -> Option<String> {
    let e = match d {
        Decision::CustomerCreated { nearest, .. } => nearest.as_ref(),
        Decision::RecordLinked { explanation, .. } => explanation.as_ref(),
        Decision::RecordMoved { explanation, .. } => Some(explanation),
        Decision::CustomersMerged { explanations, .. } => explanations.first(),
        Decision::ReviewRequested { review } => Some(&review.explanation),
        _ => None,
    };
    e.and_then(|e| serde_json::to_string(e).ok())
}

/// The decision's payload as JSON without its explanations (the row keeps
/// the first one in its own column; the others stay in the log): an
/// explanation is most of a decision's size, and storing it twice doubled
/// what a rebuild writes.
fn decision_without_explanations(d: &Decision) -> Result<String, serde_json::Error> {
    let mut value = serde_json::to_value(d)?;
    if let Some(map) = value.as_object_mut() {
        map.remove("explanation");
        map.remove("nearest");
        map.remove("explanations");
        // An override's sealed value: ciphertext is of no use to a reader
        // (the customer's lineage shows the value while its key exists).
        map.remove("value");
        if let Some(review) = map.get_mut("review").and_then(|r| r.as_object_mut()) {
            review.remove("explanation");
        }
    }
    serde_json::to_string(&value)
}

/// The batch cut after each erasure decision: every part but the last ends
/// with one (the last may too). A projection that purges on an erasure
/// applies the events before it first, so the purge finds their rows.
pub fn split_after_erasures<'a>(batch: &Batch<'a>) -> Vec<Batch<'a>> {
    let mut out = Vec::new();
    let mut start = 0;
    let part = |from: usize, to: usize| Batch {
        events: &batch.events[from..to],
        opened: batch.opened.get(from..to).unwrap_or(&[]),
    };
    for (i, event) in batch.events.iter().enumerate() {
        if event.stream == RESOLUTION_STREAM && event.event_type == ERASED {
            out.push(part(start, i + 1));
            start = i + 1;
        }
    }
    if start < batch.events.len() || out.is_empty() {
        out.push(part(start, batch.events.len()));
    }
    out
}

/// The event type of an erasure.
const ERASED: &str = "CustomerErased";

/// Decodes a decision event, or says why not.
pub fn decode_decision(event: &mdm_store::RecordedEvent) -> Result<Decided, ProjectionError> {
    event.data.decode::<Decided>().map_err(|e| ProjectionError::Corrupt {
        position: event.position.0,
        reason: format!("decision does not decode: {e}"),
    })
}

#[async_trait]
impl Projection for DecisionsProjection {
    fn name(&self) -> &'static str {
        "decisions"
    }

    fn schema_version(&self) -> i64 {
        // 2: an index on `record` (as-of finds a record's decisions).
        // 3: `decision` without the explanations (kept once, in `explanation`).
        // (Erasures need no new version: the tables keep their shape, and
        // a log without one projects as before.)
        // 4: indexes on review_item's record, candidate_record, token and
        // candidate, so that an erasure finds the items naming its records
        // and tokens instead of reading every open item.
        4
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
        false
    }

    async fn apply(&self, tx: &mut AnyConnection, names: &Names, batch: &Batch<'_>) -> Result<(), ProjectionError> {
        let mut history: Vec<Vec<Value>> = Vec::new();
        let mut opened: Vec<Vec<Value>> = Vec::new();
        // Closures in log order; an item opened and closed in one batch is
        // inserted first, then updated.
        let mut closed: Vec<Closure> = Vec::new();
        for event in batch.events {
            if event.stream != RESOLUTION_STREAM {
                continue;
            }
            let decided = decode_decision(event)?;
            let at = time_text(event.recorded_at);
            let position = to_i64(event.position.0);
            let (actor_kind, actor) = match &decided.by {
                DecidedBy::Resolver => ("resolver", None),
                DecidedBy::Steward(id) => ("steward", Some(id.clone())),
                DecidedBy::Compliance(id) => ("compliance", Some(id.clone())),
            };
            let payload = decision_without_explanations(&decided.decision).map_err(|e| ProjectionError::Corrupt {
                position: event.position.0,
                reason: e.to_string(),
            })?;
            let explanation = decision_explanation(&decided.decision);
            let record = decision_record(&decided.decision).map(str::to_owned);
            let tokens = {
                let mut t = decided.decision.tokens();
                let mut seen = std::collections::HashSet::new();
                t.retain(|x| seen.insert(*x));
                t
            };
            for token in &tokens {
                let others: Vec<String> = tokens.iter().filter(|t| *t != token).map(|t| t.to_string()).collect();
                history.push(vec![
                    Value::text(token.to_string()),
                    Value::int(position),
                    Value::int(to_i64(event.version)),
                    Value::int(to_i64(decided.seq)),
                    Value::text(decided.decision.event_type()),
                    Value::text(actor_kind),
                    Value::opt_text(actor.clone()),
                    Value::text(decided.reason.clone()),
                    Value::text(decided.rule_set.clone()),
                    Value::opt_text(record.clone()),
                    Value::text(serde_json::to_string(&others).unwrap_or_else(|_| "[]".into())),
                    Value::opt_text(explanation.clone()),
                    Value::text(payload.clone()),
                    Value::text(at.clone()),
                ]);
            }
            match &decided.decision {
                Decision::ReviewRequested { review } => opened.push(vec![
                    Value::text(review.review_id.to_string()),
                    Value::text(review.record.clone()),
                    Value::text(review.token.to_string()),
                    Value::text(review.candidate.to_string()),
                    Value::text(review.candidate_record.clone()),
                    Value::Real(Some(review.explanation.total)),
                    Value::text(serde_json::to_string(&review.explanation).unwrap_or_default()),
                    Value::text("open"),
                    Value::int(position),
                    Value::text(at.clone()),
                ]),
                Decision::ReviewClosed { review_id, outcome } => closed.push(Closure::Review {
                    review_id: review_id.to_string(),
                    state: outcome_state(*outcome),
                    position,
                    at: at.clone(),
                    by: actor.clone(),
                    reason: decided.reason.clone(),
                }),
                Decision::CustomerErased {
                    token,
                    absorbed,
                    records,
                    retained,
                    ..
                } => closed.push(Closure::Erasure {
                    records: records
                        .iter()
                        .cloned()
                        .chain(retained.iter().map(|k| k.record.clone()))
                        .collect(),
                    tokens: std::iter::once(token).chain(absorbed).map(Uuid::to_string).collect(),
                    position,
                    at: at.clone(),
                    by: actor.clone(),
                    reason: decided.reason.clone(),
                }),
                _ => {}
            }
        }
        execute_rows(
            tx,
            &names.sql(
                "INSERT INTO decision_history{s} (token, position, stream_version, seq, decision_type, actor_kind, actor, \
                 reason, rule_set, record, other_tokens, explanation, decision, recorded_at)",
            ),
            "",
            14,
            &history,
        )
        .await?;
        execute_rows(
            tx,
            &names.sql(
                "INSERT INTO review_item{s} (review_id, record, token, candidate, candidate_record, total, explanation, \
                 state, opened_position, opened_at)",
            ),
            "",
            10,
            &opened,
        )
        .await?;
        let close = names.sql(
            "UPDATE review_item{s} SET state = $2, closed_position = $3, closed_at = $4, closed_by = $5, \
             close_reason = $6 WHERE review_id = $1",
        );
        for closure in closed {
            match closure {
                Closure::Review {
                    review_id,
                    state,
                    position,
                    at,
                    by,
                    reason,
                } => {
                    sqlx::query(&close)
                        .bind(review_id)
                        .bind(state)
                        .bind(position)
                        .bind(at)
                        .bind(by)
                        .bind(reason)
                        .execute(&mut *tx)
                        .await?;
                }
                Closure::Erasure {
                    records,
                    tokens,
                    position,
                    at,
                    by,
                    reason,
                } => close_erased_reviews(tx, names, &records, &tokens, position, &at, by.as_deref(), &reason).await?,
            }
        }
        Ok(())
    }
}

/// A review item closing, in log order.
enum Closure {
    /// A steward closed it.
    Review {
        review_id: String,
        state: &'static str,
        position: i64,
        at: String,
        by: Option<String>,
        reason: String,
    },
    /// An erasure closes the open items naming these records or tokens.
    Erasure {
        records: Vec<String>,
        tokens: Vec<String>,
        position: i64,
        at: String,
        by: Option<String>,
        reason: String,
    },
}

/// The review_item columns naming a record (the first two) or a customer,
/// each indexed: what an erasure looks its items up by.
const REVIEW_SUBJECTS: [&str; 4] = ["record", "candidate_record", "token", "candidate"];

/// The review items whose `column` is one of the keys (`{in}`), with their
/// state and opening position.
fn reviews_naming(names: &Names, column: &str) -> String {
    names.sql(&format!(
        "SELECT review_id, state, opened_position FROM review_item{{s}} WHERE {column} IN ({{in}})"
    ))
}

/// Closes `n` review items by id (`$5...`) as erased at `$1` (position),
/// `$2` (time), by `$3` for reason `$4`.
fn close_reviews(names: &Names, n: usize) -> String {
    names.sql(&format!(
        "UPDATE review_item{{s}} SET state = 'erased', closed_position = $1, closed_at = $2, closed_by = $3, \
         close_reason = $4 WHERE review_id IN ({})",
        placeholders(n, 5)
    ))
}

/// Closes as `erased` the items open before `position` that name one of
/// `records` (as the record or the candidate's record) or one of `tokens`
/// (as the record's customer or the candidate).
///
/// The items are found through the index of each column and filtered on
/// state and position here, then closed by id: a statement that says
/// `state = 'open'` lets SQLite (which has no statistics) prefer the state
/// index and read every open item, a cost that grew with the store (at
/// 1M records, most of an erasure's time).
#[allow(clippy::too_many_arguments)]
async fn close_erased_reviews(
    tx: &mut AnyConnection,
    names: &Names,
    records: &[String],
    tokens: &[String],
    position: i64,
    at: &str,
    by: Option<&str>,
    reason: &str,
) -> Result<(), sqlx::Error> {
    let started = std::time::Instant::now();
    let mut open: BTreeSet<String> = BTreeSet::new();
    for (column, keys) in REVIEW_SUBJECTS.into_iter().zip([records, records, tokens, tokens]) {
        for row in fetch_in(tx, &reviews_naming(names, column), keys).await? {
            let state: String = row.try_get(1)?;
            let opened: i64 = row.try_get(2)?;
            if state == "open" && opened < position {
                open.insert(row.try_get(0)?);
            }
        }
    }
    let found = started.elapsed();
    let ids: Vec<String> = open.into_iter().collect();
    for chunk in ids.chunks(1000) {
        let sql = close_reviews(names, chunk.len());
        let sql = fit(tx, &sql);
        let mut q = sqlx::query(&sql).bind(position).bind(at).bind(by).bind(reason);
        for id in chunk {
            q = q.bind(id.as_str());
        }
        q.execute(&mut *tx).await?;
    }
    tracing::debug!(
        records = records.len(),
        tokens = tokens.len(),
        closed = ids.len(),
        find_ms = found.as_secs_f64() * 1e3,
        close_ms = (started.elapsed() - found).as_secs_f64() * 1e3,
        "decisions erasure: reviews closed"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::ReadDb;
    use crate::runner::ensure;

    /// SQLite has no statistics for the read models: the statements that
    /// find an erasure's review items must read through their column's
    /// index, not through the state index (which meant reading every open
    /// item, a cost that grew with the store).
    #[tokio::test]
    async fn an_erasure_finds_its_review_items_through_their_indexes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = ReadDb::open_sqlite(&dir.path().join("read.db")).await.expect("read db");
        let checkpoint = ensure(&db, &DecisionsProjection).await.expect("tables");
        let names = Names::live(checkpoint.generation);
        for column in REVIEW_SUBJECTS {
            let sql = reviews_naming(&names, column).replace("{in}", "$1, $2");
            let plan: Vec<(i64, i64, i64, String)> = sqlx::query_as(&format!("EXPLAIN QUERY PLAN {sql}"))
                .bind("a")
                .bind("b")
                .fetch_all(db.pool())
                .await
                .expect("plan");
            let index = names.sql(&format!("review_item_g{{g}}_{column} ({column}=?)"));
            assert!(
                plan.iter().all(|(_, _, _, detail)| detail.contains(&index)),
                "{column}: {plan:?}"
            );
        }
        let plan: Vec<(i64, i64, i64, String)> =
            sqlx::query_as(&format!("EXPLAIN QUERY PLAN {}", close_reviews(&names, 2)))
                .bind(1_i64)
                .bind("t")
                .bind("s")
                .bind("r")
                .bind("a")
                .bind("b")
                .fetch_all(db.pool())
                .await
                .expect("plan");
        assert!(
            plan.iter()
                .all(|(_, _, _, detail)| detail.contains("sqlite_autoindex_review_item")),
            "close: {plan:?}"
        );
    }
}
