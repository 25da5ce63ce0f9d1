//! The privacy request ledger: every erasure and right-to-know request as
//! events in a stream of its own (`privacy-request-<request id>`), and the
//! pure rules of its life: verification, the 45-day due date with at most
//! one 45-day extension (with a reason), completion or denial (with its
//! basis), and a notice per recipient with its acknowledgement.
//!
//! The ledger holds no more personal data than it needs: the customer's
//! token and the request id, never a name or an address. Free text
//! (reasons, denial bases) is the compliance user's, and the console says
//! not to put personal data in it.

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub mod hold;

/// Streams of requests are named `privacy-request-<request id>`.
pub const STREAM_PREFIX: &str = "privacy-request-";

/// Payload schema version of every ledger event.
pub const SCHEMA_VERSION: u32 = 1;

/// Days a business has to answer a request (CCPA), and to extend it once.
pub const DUE_DAYS: i64 = 45;
/// Months a closed request stays in the ledger.
pub const RETENTION_MONTHS: u32 = 24;

/// The stream of a request.
pub fn stream(request_id: Uuid) -> String {
    format!("{STREAM_PREFIX}{request_id}")
}

/// What is asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestKind {
    /// Delete everything held on the person.
    Erasure,
    /// Tell the person everything held on them (an export).
    RightToKnow,
}

impl RequestKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Erasure => "erasure",
            Self::RightToKnow => "right_to_know",
        }
    }
}

/// Who must be told about an erasure.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum Recipient {
    /// An API client reading the feed (its client name).
    FeedSubscriber(String),
    /// A webhook subscriber (its id).
    Webhook(Uuid),
    /// A source system that still holds the person (its system name).
    SourceSystem(String),
}

/// The ledger events of one request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum LedgerEvent {
    RequestReceived {
        request_id: Uuid,
        kind: RequestKind,
        /// The customer the request is about, when known at receipt.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<Uuid>,
        received_at: DateTime<Utc>,
        /// The compliance user who entered it.
        by: String,
    },
    /// The requester's identity was verified (how: e.g. "signed-in
    /// account", "call-back to the number on file").
    RequestVerified {
        by: String,
        method: String,
        at: DateTime<Utc>,
    },
    /// The due date moves 45 days later, once, for a stated reason.
    RequestExtended {
        by: String,
        reason: String,
        at: DateTime<Utc>,
    },
    /// Done: what was done (e.g. "erased 5 source records").
    RequestCompleted {
        by: String,
        outcome: String,
        at: DateTime<Utc>,
    },
    /// Refused, on a stated basis (e.g. "identity could not be verified").
    RequestDenied {
        by: String,
        basis: String,
        at: DateTime<Utc>,
    },
    /// A recipient was told (an erasure notice sent).
    RecipientNotified { recipient: Recipient, at: DateTime<Utc> },
    /// A recipient confirmed it acted on the notice.
    NoticeAcknowledged {
        recipient: Recipient,
        by: String,
        at: DateTime<Utc>,
    },
}

impl LedgerEvent {
    /// The event type name (a public contract: never rename).
    pub fn event_type(&self) -> &'static str {
        match self {
            Self::RequestReceived { .. } => "RequestReceived",
            Self::RequestVerified { .. } => "RequestVerified",
            Self::RequestExtended { .. } => "RequestExtended",
            Self::RequestCompleted { .. } => "RequestCompleted",
            Self::RequestDenied { .. } => "RequestDenied",
            Self::RecipientNotified { .. } => "RecipientNotified",
            Self::NoticeAcknowledged { .. } => "NoticeAcknowledged",
        }
    }
}

/// Where a request stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Open,
    Completed,
    Denied,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Completed => "completed",
            Self::Denied => "denied",
        }
    }
}

/// A recipient's notice.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    pub recipient: Recipient,
    pub notified_at: DateTime<Utc>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub acknowledged_by: Option<String>,
}

/// A request folded from its events.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub request_id: Uuid,
    pub kind: RequestKind,
    pub token: Option<Uuid>,
    pub received_at: DateTime<Utc>,
    pub received_by: String,
    /// Who verified, how and when (`None`: not yet).
    pub verified: Option<(String, String, DateTime<Utc>)>,
    /// The extension's reason and who granted it.
    pub extension: Option<(String, String)>,
    pub status: Status,
    /// What was done, or the denial's basis.
    pub outcome: Option<String>,
    pub closed_at: Option<DateTime<Utc>>,
    pub notices: Vec<Notice>,
}

/// A command refused by the ledger's rules.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("the request is closed already")]
    Closed,
    #[error("the request was extended already: one extension is allowed")]
    ExtendedAlready,
    #[error("the request was verified already")]
    VerifiedAlready,
    #[error("the request is not verified: verify it before completing it")]
    NotVerified,
    #[error("{0} is required")]
    Required(&'static str),
    #[error("the recipient was not notified")]
    NotNotified,
    #[error("the recipient acknowledged already")]
    AcknowledgedAlready,
    #[error("the events do not start with RequestReceived")]
    NotReceived,
}

impl Request {
    /// Folds a request's events, in order.
    pub fn fold<'a>(events: impl IntoIterator<Item = &'a LedgerEvent>) -> Result<Request, LedgerError> {
        let mut events = events.into_iter();
        let Some(LedgerEvent::RequestReceived {
            request_id,
            kind,
            token,
            received_at,
            by,
        }) = events.next()
        else {
            return Err(LedgerError::NotReceived);
        };
        let mut r = Request {
            request_id: *request_id,
            kind: *kind,
            token: *token,
            received_at: *received_at,
            received_by: by.clone(),
            verified: None,
            extension: None,
            status: Status::Open,
            outcome: None,
            closed_at: None,
            notices: Vec::new(),
        };
        for e in events {
            r.apply(e);
        }
        Ok(r)
    }

    /// Applies one stored event (already checked when it was decided).
    pub fn apply(&mut self, e: &LedgerEvent) {
        match e {
            LedgerEvent::RequestReceived { .. } => {}
            LedgerEvent::RequestVerified { by, method, at } => self.verified = Some((by.clone(), method.clone(), *at)),
            LedgerEvent::RequestExtended { by, reason, .. } => self.extension = Some((reason.clone(), by.clone())),
            LedgerEvent::RequestCompleted { outcome, at, .. } => {
                self.status = Status::Completed;
                self.outcome = Some(outcome.clone());
                self.closed_at = Some(*at);
            }
            LedgerEvent::RequestDenied { basis, at, .. } => {
                self.status = Status::Denied;
                self.outcome = Some(basis.clone());
                self.closed_at = Some(*at);
            }
            LedgerEvent::RecipientNotified { recipient, at } => {
                if !self.notices.iter().any(|n| &n.recipient == recipient) {
                    self.notices.push(Notice {
                        recipient: recipient.clone(),
                        notified_at: *at,
                        acknowledged_at: None,
                        acknowledged_by: None,
                    });
                }
            }
            LedgerEvent::NoticeAcknowledged { recipient, by, at } => {
                if let Some(n) = self.notices.iter_mut().find(|n| &n.recipient == recipient) {
                    n.acknowledged_at = Some(*at);
                    n.acknowledged_by = Some(by.clone());
                }
            }
        }
    }

    /// The due date: 45 days after receipt, 90 once extended.
    pub fn due(&self) -> DateTime<Utc> {
        let days = if self.extension.is_some() {
            2 * DUE_DAYS
        } else {
            DUE_DAYS
        };
        self.received_at + TimeDelta::days(days)
    }

    /// Open and past its due date at `now`.
    pub fn is_overdue(&self, now: DateTime<Utc>) -> bool {
        self.status == Status::Open && now > self.due()
    }

    /// When the ledger may drop the request: 24 months after it closed.
    pub fn retained_until(&self) -> Option<DateTime<Utc>> {
        self.closed_at
            .and_then(|c| c.checked_add_months(chrono::Months::new(RETENTION_MONTHS)))
    }

    fn open(&self) -> Result<(), LedgerError> {
        match self.status {
            Status::Open => Ok(()),
            _ => Err(LedgerError::Closed),
        }
    }

    /// Checks a verification.
    pub fn verify(&self, by: &str, method: &str, at: DateTime<Utc>) -> Result<LedgerEvent, LedgerError> {
        self.open()?;
        if self.verified.is_some() {
            return Err(LedgerError::VerifiedAlready);
        }
        Ok(LedgerEvent::RequestVerified {
            by: by.to_owned(),
            method: required(method, "method")?,
            at,
        })
    }

    /// Checks an extension: once, with a reason, while open.
    pub fn extend(&self, by: &str, reason: &str, at: DateTime<Utc>) -> Result<LedgerEvent, LedgerError> {
        self.open()?;
        if self.extension.is_some() {
            return Err(LedgerError::ExtendedAlready);
        }
        Ok(LedgerEvent::RequestExtended {
            by: by.to_owned(),
            reason: required(reason, "reason")?,
            at,
        })
    }

    /// Checks a completion: only a verified, open request completes.
    pub fn complete(&self, by: &str, outcome: &str, at: DateTime<Utc>) -> Result<LedgerEvent, LedgerError> {
        self.open()?;
        if self.verified.is_none() {
            return Err(LedgerError::NotVerified);
        }
        Ok(LedgerEvent::RequestCompleted {
            by: by.to_owned(),
            outcome: required(outcome, "outcome")?,
            at,
        })
    }

    /// Checks a denial: open, with its basis.
    pub fn deny(&self, by: &str, basis: &str, at: DateTime<Utc>) -> Result<LedgerEvent, LedgerError> {
        self.open()?;
        Ok(LedgerEvent::RequestDenied {
            by: by.to_owned(),
            basis: required(basis, "basis")?,
            at,
        })
    }

    /// Checks an acknowledgement of a notice sent before.
    pub fn acknowledge(&self, recipient: &Recipient, by: &str, at: DateTime<Utc>) -> Result<LedgerEvent, LedgerError> {
        match self.notices.iter().find(|n| &n.recipient == recipient) {
            None => Err(LedgerError::NotNotified),
            Some(n) if n.acknowledged_at.is_some() => Err(LedgerError::AcknowledgedAlready),
            Some(_) => Ok(LedgerEvent::NoticeAcknowledged {
                recipient: recipient.clone(),
                by: by.to_owned(),
                at,
            }),
        }
    }
}

fn required(text: &str, what: &'static str) -> Result<String, LedgerError> {
    let t = text.trim();
    if t.is_empty() {
        return Err(LedgerError::Required(what));
    }
    Ok(t.to_owned())
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn day(d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, d, 9, 0, 0).single().expect("a time")
    }

    fn received(kind: RequestKind) -> Request {
        let e = LedgerEvent::RequestReceived {
            request_id: Uuid::from_u128(1),
            kind,
            token: Some(Uuid::from_u128(2)),
            received_at: day(1),
            by: "compliance-1".into(),
        };
        Request::fold([&e]).expect("a request")
    }

    fn applied(mut r: Request, e: Result<LedgerEvent, LedgerError>) -> Request {
        r.apply(&e.expect("accepted"));
        r
    }

    #[test]
    fn due_in_45_days_and_90_after_one_extension() {
        let r = received(RequestKind::Erasure);
        assert_eq!(r.due(), Utc.with_ymd_and_hms(2026, 2, 15, 9, 0, 0).unwrap());
        assert!(!r.is_overdue(r.due()));
        assert!(r.is_overdue(r.due() + TimeDelta::seconds(1)));
        assert_eq!(r.extend("c", " ", day(2)), Err(LedgerError::Required("reason")));
        let r = applied(r.clone(), r.extend("c", "requester asked for more time", day(2)));
        assert_eq!(r.due(), Utc.with_ymd_and_hms(2026, 4, 1, 9, 0, 0).unwrap());
        assert!(!r.is_overdue(Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap()));
        assert_eq!(r.extend("c", "again", day(3)), Err(LedgerError::ExtendedAlready));
    }

    #[test]
    fn only_a_verified_request_completes_and_a_closed_one_changes_no_more() {
        let r = received(RequestKind::RightToKnow);
        assert_eq!(r.complete("c", "exported", day(2)), Err(LedgerError::NotVerified));
        let r = applied(r.clone(), r.verify("c", "call-back to the number on file", day(2)));
        assert_eq!(r.verify("c", "again", day(2)), Err(LedgerError::VerifiedAlready));
        let r = applied(r.clone(), r.complete("c", "exported 3 source records", day(3)));
        assert_eq!(r.status, Status::Completed);
        assert!(
            !r.is_overdue(day(31) + TimeDelta::days(100)),
            "closed requests are never overdue"
        );
        assert_eq!(r.deny("c", "x", day(4)), Err(LedgerError::Closed));
        assert_eq!(r.extend("c", "x", day(4)), Err(LedgerError::Closed));
        assert_eq!(
            r.retained_until(),
            Some(Utc.with_ymd_and_hms(2028, 1, 3, 9, 0, 0).unwrap())
        );
    }

    #[test]
    fn a_denial_needs_its_basis() {
        let r = received(RequestKind::Erasure);
        assert_eq!(r.deny("c", "", day(2)), Err(LedgerError::Required("basis")));
        let r = applied(r.clone(), r.deny("c", "identity could not be verified", day(2)));
        assert_eq!(
            (r.status, r.outcome.as_deref()),
            (Status::Denied, Some("identity could not be verified"))
        );
    }

    #[test]
    fn notices_are_acknowledged_once_and_only_when_sent() {
        let r = received(RequestKind::Erasure);
        let hook = Recipient::Webhook(Uuid::from_u128(5));
        assert_eq!(r.acknowledge(&hook, "dealer", day(3)), Err(LedgerError::NotNotified));
        let mut r = r;
        r.apply(&LedgerEvent::RecipientNotified {
            recipient: hook.clone(),
            at: day(2),
        });
        // A second notice to the same recipient keeps the first.
        r.apply(&LedgerEvent::RecipientNotified {
            recipient: hook.clone(),
            at: day(3),
        });
        assert_eq!(r.notices.len(), 1);
        let r = applied(r.clone(), r.acknowledge(&hook, "dealer", day(4)));
        assert_eq!(r.notices[0].acknowledged_at, Some(day(4)));
        assert_eq!(
            r.acknowledge(&hook, "dealer", day(5)),
            Err(LedgerError::AcknowledgedAlready)
        );
    }

    #[test]
    fn events_keep_their_wire_names() {
        let e = LedgerEvent::RecipientNotified {
            recipient: Recipient::SourceSystem("finance".into()),
            at: day(2),
        };
        let json = serde_json::to_value(&e).expect("json");
        assert_eq!(json["type"], "RecipientNotified");
        assert_eq!(
            json["recipient"],
            serde_json::json!({"kind": "source_system", "id": "finance"})
        );
        assert_eq!(serde_json::from_value::<LedgerEvent>(json).expect("back"), e);
        assert_eq!(Request::fold([&e]), Err(LedgerError::NotReceived));
    }
}
