//! The privacy request ledger's commands: receive a request, verify the
//! requester, extend the due date once, complete or deny it, record the
//! notices sent to recipients and their acknowledgements.
//!
//! Each request is a stream of its own (`privacy-request-<request id>`). A
//! command reads the stream, folds it with the domain's
//! `Request::fold`, asks the domain whether the command may apply (the
//! rules are `mdm_domain::privacy`'s, not this module's) and appends the
//! resulting event at exactly the version it read: of two commands racing
//! on one request, the second finds the stream moved and nothing of it is
//! applied ([`PrivacyError::Conflict`], HTTP 409). The service's clock
//! comes in here, as `now`; the domain never reads a clock.
//!
//! The HTTP API (`http/privacy.rs`) and the CLI (`mdm privacy requests`)
//! both call these functions, and both show a request as a [`RequestDoc`].

use chrono::{DateTime, SubsecRound, Utc};
use mdm_commands::ingest::{IngestError, Ingestor};
use mdm_domain::metadata::{Actor, EventMetadata};
use mdm_domain::privacy::hold::{self, HoldDecision, HoldError, HoldEvent};
use mdm_domain::privacy::{self, LedgerError, LedgerEvent, Notice, Recipient, Request, RequestKind, SCHEMA_VERSION};
use mdm_projections::ledger::recipient_parts;
use mdm_projections::ledger_query::{PrivacyHoldRow, PrivacyNoticeRow, PrivacyRequestRow};
use mdm_store::{AppendError, Direction, EventStore, ExpectedVersion, Json, NewEvent, ReadError, StreamStart};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

/// The longest free text (method, reason, outcome, basis) accepted, in
/// characters.
pub const TEXT_MAX: usize = 2000;

/// Who issues a command: the actor in the events' metadata, and the name
/// the ledger records as `by` (the API client's name, or the operator's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub actor: Actor,
    pub by: String,
}

/// A command on a request that exists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// The requester's identity was verified, and how.
    Verify { method: String },
    /// The due date moves 45 days later, once, for a reason.
    Extend { reason: String },
    /// Done, and what was done.
    Complete { outcome: String },
    /// Refused, on a basis.
    Deny { basis: String },
    /// A recipient was told of the request (an erasure notice sent). A
    /// recipient notified already keeps its first notice: nothing is
    /// appended.
    Notify { recipient: Recipient },
    /// A recipient confirmed it acted on its notice.
    Acknowledge { recipient: Recipient },
}

/// Why a command was not applied. Nothing was appended in any case.
#[derive(Debug, thiserror::Error)]
pub enum PrivacyError {
    /// No request with that id (HTTP 404).
    #[error("no privacy request with that id")]
    Unknown,
    /// The ledger's rules refuse the command (HTTP 409 or 422; 400 for a
    /// missing text).
    #[error(transparent)]
    Refused(#[from] LedgerError),
    /// A field is not acceptable before the rules are even asked (HTTP 400).
    #[error("{field}: {detail}")]
    Invalid { field: &'static str, detail: String },
    /// The request changed between reading and appending (HTTP 409): read
    /// it again and decide again.
    #[error("the request changed concurrently; nothing was applied")]
    Conflict,
    /// The event store refused or failed the append (HTTP 503 or 500).
    #[error("the event store did not take the event")]
    Append(#[source] AppendError),
    /// The event store could not be read (HTTP 503 or 500).
    #[error("the event store could not be read")]
    Read(#[from] ReadError),
    /// The request's stream does not fold (HTTP 500).
    #[error("the stream of privacy request {0} is corrupt: {1}")]
    Corrupt(Uuid, String),
}

/// A request as the API and the CLI show it: as folded from its stream
/// after a command, or as the read model holds it for reads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct RequestDoc {
    pub request_id: Uuid,
    /// `erasure` or `right_to_know`.
    pub kind: String,
    /// The customer the request is about, when known at receipt.
    pub token: Option<Uuid>,
    /// `open`, `completed` or `denied`.
    pub status: String,
    pub received_at: DateTime<Utc>,
    /// The compliance user who entered it.
    pub received_by: String,
    /// Who verified the requester's identity (absent while unverified).
    pub verified_by: Option<String>,
    pub verification_method: Option<String>,
    pub verified_at: Option<DateTime<Utc>>,
    /// Why the due date was extended (absent when it was not).
    pub extension_reason: Option<String>,
    pub extended_by: Option<String>,
    /// 45 days after receipt, 90 once extended.
    pub due_at: DateTime<Utc>,
    /// Open and past its due date now.
    pub overdue: bool,
    /// What was done, or the basis of the denial.
    pub outcome: Option<String>,
    pub closed_at: Option<DateTime<Utc>>,
    /// When the ledger may drop it: 24 months after it closed.
    pub retained_until: Option<DateTime<Utc>>,
    /// The notices sent, in order (absent in lists).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notices: Option<Vec<NoticeDoc>>,
    /// Records of the erased person that a source sent again after the
    /// erasure, held for a decision (absent in lists).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holds: Option<Vec<HoldDoc>>,
}

/// A recipient of a notice.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct RecipientDoc {
    /// `feed_subscriber` (an API client's name), `webhook` (a webhook
    /// subscriber's id) or `source_system` (a source system's name).
    pub kind: String,
    pub id: String,
}

impl RecipientDoc {
    pub fn of(r: &Recipient) -> RecipientDoc {
        let (kind, id) = recipient_parts(r);
        RecipientDoc {
            kind: kind.to_owned(),
            id,
        }
    }
}

/// A notice sent to one recipient, and its acknowledgement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct NoticeDoc {
    pub recipient: RecipientDoc,
    pub notified_at: DateTime<Utc>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub acknowledged_by: Option<String>,
}

impl NoticeDoc {
    fn of(n: &Notice) -> NoticeDoc {
        NoticeDoc {
            recipient: RecipientDoc::of(&n.recipient),
            notified_at: n.notified_at,
            acknowledged_at: n.acknowledged_at,
            acknowledged_by: n.acknowledged_by.clone(),
        }
    }
}

impl RequestDoc {
    /// A request folded from its stream, with its notices, at `now`.
    pub fn of_request(r: &Request, now: DateTime<Utc>) -> RequestDoc {
        let (verified_by, verification_method, verified_at) = match &r.verified {
            Some((by, method, at)) => (Some(by.clone()), Some(method.clone()), Some(*at)),
            None => (None, None, None),
        };
        let (extension_reason, extended_by) = match &r.extension {
            Some((reason, by)) => (Some(reason.clone()), Some(by.clone())),
            None => (None, None),
        };
        RequestDoc {
            request_id: r.request_id,
            kind: r.kind.as_str().to_owned(),
            token: r.token,
            status: r.status.as_str().to_owned(),
            received_at: r.received_at,
            received_by: r.received_by.clone(),
            verified_by,
            verification_method,
            verified_at,
            extension_reason,
            extended_by,
            due_at: r.due(),
            overdue: r.is_overdue(now),
            outcome: r.outcome.clone(),
            closed_at: r.closed_at,
            retained_until: r.retained_until(),
            notices: Some(r.notices.iter().map(NoticeDoc::of).collect()),
            holds: None,
        }
    }

    /// A request as the read model holds it, at `now`; with its notices
    /// when they were read.
    pub fn of_row(r: &PrivacyRequestRow, notices: Option<&[PrivacyNoticeRow]>, now: DateTime<Utc>) -> RequestDoc {
        RequestDoc {
            request_id: r.request_id,
            kind: r.kind.as_str().to_owned(),
            token: r.token,
            status: r.status.as_str().to_owned(),
            received_at: r.received_at,
            received_by: r.received_by.clone(),
            verified_by: r.verified_by.clone(),
            verification_method: r.verification_method.clone(),
            verified_at: r.verified_at,
            extension_reason: r.extension_reason.clone(),
            extended_by: r.extended_by.clone(),
            due_at: r.due_at,
            overdue: r.is_overdue(now),
            outcome: r.outcome.clone(),
            closed_at: r.closed_at,
            retained_until: r.retained_until,
            notices: notices.map(|ns| {
                ns.iter()
                    .map(|n| NoticeDoc {
                        recipient: RecipientDoc::of(&n.recipient),
                        notified_at: n.notified_at,
                        acknowledged_at: n.acknowledged_at,
                        acknowledged_by: n.acknowledged_by.clone(),
                    })
                    .collect()
            }),
            holds: None,
        }
    }
}

/// Parses a recipient from its kind and id, naming the part at fault
/// (`kind` or `id`).
pub fn parse_recipient(kind: &str, id: &str) -> Result<Recipient, (&'static str, &'static str)> {
    if !matches!(kind, "feed_subscriber" | "source_system" | "webhook") {
        return Err((
            "kind",
            "the recipient's kind is feed_subscriber, webhook or source_system",
        ));
    }
    let id = id.trim();
    if id.is_empty() || id.chars().count() > 256 {
        return Err(("id", "the recipient's id must have 1 to 256 characters"));
    }
    match kind {
        "feed_subscriber" => Ok(Recipient::FeedSubscriber(id.to_owned())),
        "source_system" => Ok(Recipient::SourceSystem(id.to_owned())),
        "webhook" => Uuid::parse_str(id)
            .map(Recipient::Webhook)
            .map_err(|_| ("id", "a webhook recipient's id is the subscriber's UUID")),
        _ => Err((
            "kind",
            "the recipient's kind is feed_subscriber, webhook or source_system",
        )),
    }
}

/// The request `request_id` as folded from its stream, with the version of
/// its last event; `None` for an unknown request.
pub async fn load(store: &dyn EventStore, request_id: Uuid) -> Result<Option<(Request, u64)>, PrivacyError> {
    let events = store
        .read_stream(
            &privacy::stream(request_id),
            StreamStart::Edge,
            Direction::Forwards,
            mdm_store::MAX_READ,
        )
        .await?;
    let Some(last) = events.last() else {
        return Ok(None);
    };
    let version = last.version;
    let decoded = events
        .iter()
        .map(|e| e.data.decode::<LedgerEvent>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PrivacyError::Corrupt(request_id, format!("an event does not decode: {e}")))?;
    let request = Request::fold(&decoded).map_err(|e| PrivacyError::Corrupt(request_id, e.to_string()))?;
    Ok(Some((request, version)))
}

/// The command's time as the ledger keeps it: to the microsecond, as the
/// read model stores times, so a request answered from its stream and
/// read back from the read model show the same times.
fn ledger_time(now: DateTime<Utc>) -> DateTime<Utc> {
    now.trunc_subsecs(6)
}

/// Enters a new request received at `now`; returns it.
pub async fn receive(
    store: &dyn EventStore,
    kind: RequestKind,
    token: Option<Uuid>,
    caller: &Caller,
    now: DateTime<Utc>,
) -> Result<Request, PrivacyError> {
    let now = ledger_time(now);
    let request_id = Uuid::now_v7();
    let event = LedgerEvent::RequestReceived {
        request_id,
        kind,
        token,
        received_at: now,
        by: caller.by.clone(),
    };
    append(store, request_id, ExpectedVersion::NoStream, &event, caller, now).await?;
    Request::fold([&event]).map_err(|e| PrivacyError::Corrupt(request_id, e.to_string()))
}

fn text(field: &'static str, value: &str) -> Result<(), PrivacyError> {
    if value.trim().chars().count() > TEXT_MAX {
        return Err(PrivacyError::Invalid {
            field,
            detail: format!("at most {TEXT_MAX} characters"),
        });
    }
    Ok(())
}

/// Runs `command` on request `request_id` at `now`; returns the request as
/// folded after it.
pub async fn run(
    store: &dyn EventStore,
    request_id: Uuid,
    command: &Command,
    caller: &Caller,
    now: DateTime<Utc>,
) -> Result<Request, PrivacyError> {
    match command {
        Command::Verify { method } => text("method", method)?,
        Command::Extend { reason } => text("reason", reason)?,
        Command::Complete { outcome } => text("outcome", outcome)?,
        Command::Deny { basis } => text("basis", basis)?,
        Command::Notify { .. } | Command::Acknowledge { .. } => {}
    }
    let now = ledger_time(now);
    let (mut request, version) = load(store, request_id).await?.ok_or(PrivacyError::Unknown)?;
    let by = caller.by.as_str();
    let event = match command {
        Command::Verify { method } => request.verify(by, method, now)?,
        Command::Extend { reason } => request.extend(by, reason, now)?,
        Command::Complete { outcome } => request.complete(by, outcome, now)?,
        Command::Deny { basis } => request.deny(by, basis, now)?,
        Command::Notify { recipient } => {
            if request.notices.iter().any(|n| &n.recipient == recipient) {
                return Ok(request);
            }
            LedgerEvent::RecipientNotified {
                recipient: recipient.clone(),
                at: now,
            }
        }
        Command::Acknowledge { recipient } => request.acknowledge(recipient, by, now)?,
    };
    append(store, request_id, ExpectedVersion::Exact(version), &event, caller, now).await?;
    request.apply(&event);
    Ok(request)
}

/// Appends one ledger event to the request's stream at `expected`.
async fn append(
    store: &dyn EventStore,
    request_id: Uuid,
    expected: ExpectedVersion,
    event: &LedgerEvent,
    caller: &Caller,
    now: DateTime<Utc>,
) -> Result<(), PrivacyError> {
    let stream = privacy::stream(request_id);
    let command = EventKind(event.event_type(), SCHEMA_VERSION);
    match append_command(store, &stream, expected, command, event, caller, now).await {
        Ok(()) => Ok(()),
        Err(AppendError::Conflict { .. }) => Err(PrivacyError::Conflict),
        Err(e) => Err(PrivacyError::Append(e)),
    }
}

/// A compliance command's event type and payload schema version.
struct EventKind(&'static str, u32);

/// Appends one event of a compliance user's command (a ledger or a hold
/// event) to `stream` at `expected`, with the caller in its metadata. The
/// id is fresh per command: two commands deciding at the same version must
/// not look like one retried append to the store.
async fn append_command(
    store: &dyn EventStore,
    stream: &str,
    expected: ExpectedVersion,
    EventKind(event_type, schema_version): EventKind,
    payload: &impl Serialize,
    caller: &Caller,
    now: DateTime<Utc>,
) -> Result<(), AppendError> {
    let command_id = Uuid::now_v7();
    let metadata = EventMetadata {
        occurred_at: now,
        actor: caller.actor.clone(),
        correlation_id: command_id,
        causation_id: None,
        schema_version,
        key_id: None,
    };
    let encode = |e: serde_json::Error| AppendError::Internal(Box::new(e));
    let new = NewEvent::new(
        command_id,
        event_type,
        Json::encode(payload).map_err(encode)?,
        Json::encode(&metadata).map_err(encode)?,
    );
    store.append(stream, expected, vec![new]).await.map(|_| ())
}

/// A record of an erased person that its source sent again, held for a
/// compliance decision ("erased at source pending").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct HoldDoc {
    pub hold_id: Uuid,
    /// The source system that still sends the record.
    pub system: String,
    /// The customer erased, when known.
    pub token: Option<Uuid>,
    /// The erasure's privacy request, when it named one.
    pub request_id: Option<Uuid>,
    /// When the record arrived again.
    pub held_at: DateTime<Utc>,
    /// `pending`, `suppressed` (stays erased; re-sends store nothing) or
    /// `released` (the next re-send is captured as a new record).
    pub state: String,
    /// Pending: the source system must be told to delete the record, and a
    /// compliance user must decide.
    pub source_must_be_told: bool,
    pub decided_by: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    pub reason: Option<String>,
}

impl HoldDoc {
    pub fn of_row(r: &PrivacyHoldRow) -> HoldDoc {
        HoldDoc {
            hold_id: r.hold_id,
            system: r.system.clone(),
            token: r.token,
            request_id: r.request_id,
            held_at: r.held_at,
            state: r.state.clone(),
            source_must_be_told: r.state == "pending",
            decided_by: r.decided_by.clone(),
            decided_at: r.decided_at,
            reason: r.reason.clone(),
        }
    }
}

/// Why a hold decision was not applied. Nothing was appended in any case.
#[derive(Debug, thiserror::Error)]
pub enum HoldCommandError {
    /// The hold's rules refuse it (HTTP 409; 400 for a missing reason).
    #[error(transparent)]
    Refused(#[from] HoldError),
    /// The reason is too long (HTTP 400).
    #[error("reason: at most {TEXT_MAX} characters")]
    TooLong,
    /// The hold changed between reading and appending (HTTP 409).
    #[error("the hold changed concurrently; nothing was applied")]
    Conflict,
    /// The event store failed (HTTP 503 or 500).
    #[error("the event store did not take the decision")]
    Append(#[source] AppendError),
    /// The hold's stream could not be read (HTTP 503).
    #[error("the hold could not be read")]
    Read(#[source] IngestError),
}

/// Decides a pending hold: `Suppress` keeps the record erased (re-sends
/// store nothing); `Release` lets the next re-send be captured as a new
/// record under a successor stream. Reads the hold's stream (the read
/// model only named it), lets the domain decide, appends at the version
/// read. A suppression also records, on the erasure's request, that the
/// source system was told.
pub async fn decide_hold(
    ingestor: &Ingestor,
    hold: &PrivacyHoldRow,
    decision: HoldDecision,
    reason: &str,
    caller: &Caller,
    now: DateTime<Utc>,
) -> Result<HoldEvent, HoldCommandError> {
    if reason.trim().chars().count() > TEXT_MAX {
        return Err(HoldCommandError::TooLong);
    }
    let now = ledger_time(now);
    let (state, version) = ingestor
        .hold_state(&hold.record)
        .await
        .map_err(HoldCommandError::Read)?;
    let event = hold::decide(
        &state,
        hold.hold_id,
        decision,
        &caller.by,
        reason,
        || ingestor.successor_of(&hold.system, &hold.record),
        now,
    )?;
    let expected = version.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
    let stream = hold::stream(&hold.record);
    let command = EventKind(event.event_type(), hold::SCHEMA_VERSION);
    match append_command(
        ingestor.store().as_ref(),
        &stream,
        expected,
        command,
        &event,
        caller,
        now,
    )
    .await
    {
        Ok(()) => {}
        Err(AppendError::Conflict { .. }) => return Err(HoldCommandError::Conflict),
        Err(e) => return Err(HoldCommandError::Append(e)),
    }
    if let (HoldDecision::Suppress, Some(request_id)) = (decision, hold.request_id) {
        let notify = Command::Notify {
            recipient: Recipient::SourceSystem(hold.system.clone()),
        };
        if let Err(error) = run(ingestor.store().as_ref(), request_id, &notify, caller, now).await {
            tracing::warn!(error = %error, "hold suppressed; the notice to its source system was not recorded");
        }
    }
    Ok(event)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::TimeDelta;
    use mdm_domain::privacy::Status;
    use mdm_store::sqlite::SqliteEventStore;

    use super::*;

    fn compliance() -> Caller {
        Caller {
            actor: Actor::Client("c-1".into()),
            by: "compliance-1".into(),
        }
    }

    #[tokio::test]
    async fn commands_fold_the_stream_and_append_at_the_version_they_read() {
        let dir = tempfile::tempdir().expect("dir");
        let store: Arc<dyn EventStore> = Arc::new(
            SqliteEventStore::open(dir.path().join("events.db"))
                .await
                .expect("store"),
        );
        let store = store.as_ref();
        let now = Utc::now().trunc_subsecs(6);
        let c = compliance();
        let r = receive(store, RequestKind::Erasure, None, &c, now)
            .await
            .expect("received");
        let id = r.request_id;
        assert_eq!(r.due(), now + TimeDelta::days(45));
        assert!(matches!(
            run(store, id, &Command::Complete { outcome: "x".into() }, &c, now).await,
            Err(PrivacyError::Refused(LedgerError::NotVerified))
        ));
        assert!(matches!(
            run(store, Uuid::now_v7(), &Command::Verify { method: "x".into() }, &c, now).await,
            Err(PrivacyError::Unknown)
        ));
        let verify = Command::Verify {
            method: "call-back".into(),
        };
        let r = run(store, id, &verify, &c, now).await.expect("verified");
        assert!(r.verified.is_some());

        // Two commands that both read version 1: the second finds the
        // stream moved and appends nothing.
        let (read, version) = load(store, id).await.expect("load").expect("known");
        assert_eq!(version, 1);
        let extend = read.extend("a", "more time", now).expect("allowed");
        let deny = read.deny("b", "no basis needed here", now).expect("allowed");
        append(store, id, ExpectedVersion::Exact(version), &extend, &c, now)
            .await
            .expect("first wins");
        assert!(matches!(
            append(store, id, ExpectedVersion::Exact(version), &deny, &c, now).await,
            Err(PrivacyError::Conflict)
        ));
        let (after, version) = load(store, id).await.expect("load").expect("known");
        assert_eq!((after.status, version), (Status::Open, 2));
        assert_eq!(after.due(), now + TimeDelta::days(90));

        // A second notice to one recipient appends nothing.
        let hook = Recipient::Webhook(Uuid::from_u128(5));
        let notify = Command::Notify {
            recipient: hook.clone(),
        };
        run(store, id, &notify, &c, now).await.expect("notified");
        run(store, id, &notify, &c, now + TimeDelta::days(1))
            .await
            .expect("notified again");
        let (after, version) = load(store, id).await.expect("load").expect("known");
        assert_eq!((after.notices.len(), version), (1, 3));
        assert_eq!(after.notices[0].notified_at, now);
        let too_long = Command::Deny {
            basis: "x".repeat(TEXT_MAX + 1),
        };
        assert!(matches!(
            run(store, id, &too_long, &c, now).await,
            Err(PrivacyError::Invalid { field: "basis", .. })
        ));
    }

    #[test]
    fn recipients_parse_and_name_the_part_at_fault() {
        assert_eq!(
            parse_recipient("source_system", " finance "),
            Ok(Recipient::SourceSystem("finance".into()))
        );
        assert_eq!(parse_recipient("webhook", "nope").map_err(|e| e.0), Err("id"));
        assert_eq!(parse_recipient("fax", "x").map_err(|e| e.0), Err("kind"));
        assert_eq!(parse_recipient("feed_subscriber", " ").map_err(|e| e.0), Err("id"));
    }
}
