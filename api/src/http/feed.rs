//! `GET /v1/feed`: the customer change log as Server-Sent Events, each a
//! CloudEvents 1.0 JSON document.
//!
//! The feed reads `customer_change` (written by the customers projection in
//! the same transaction as the golden records) in pages after the client's
//! cursor, then follows it: after an empty page it waits for the customers
//! projection to commit a batch (a `watch` of its progress) or for the poll
//! interval (a rebuild swapped in by another process), and reads again. A
//! batch's changes commit atomically and in log order, so a reader never
//! sees a change below one it has seen: resuming after the last id received
//! misses nothing and repeats nothing.
//!
//! The SSE `id` of a change is its cursor: the global log position `P` of
//! the event that caused it, `P:k` for its k-th change (k > 0). A client
//! resumes with `Last-Event-ID` (what `EventSource` sends on reconnect) or
//! `?after=`; `Last-Event-ID` wins when both are given, since a
//! reconnecting `EventSource` repeats the original URL. Without either, the
//! feed starts at the beginning of the log.
//!
//! Readers see the golden attributes of their field scopes only; an
//! `updated` change none of whose attributes the client may see is not sent
//! to it (there is nothing in it for that client).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use chrono::SecondsFormat;
use mdm_projections::changes::{changes_after, ChangeCursor, ChangeType, CustomerChange};
use mdm_projections::runner::Progress;
use mdm_projections::ReadDb;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::sync::watch;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::problem::{bad_request, Problem, QueryParams};
use super::AppState;
use crate::auth::{Principal, Scopes};

/// The CloudEvents `source` of every change.
pub const EVENT_SOURCE: &str = "/mdm/customers";

/// How the feed paces itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedSettings {
    /// How often an idle stream sends a keep-alive comment (proxies close
    /// silent connections).
    pub keep_alive: Duration,
    /// How often a caught-up stream looks for new changes when no
    /// projection in this process tells it (a rebuild swapped in by
    /// `mdm projections rebuild`, a projection run elsewhere).
    pub poll: Duration,
    /// Changes read per query.
    pub page: usize,
}

impl Default for FeedSettings {
    fn default() -> FeedSettings {
        FeedSettings {
            keep_alive: Duration::from_secs(15),
            poll: Duration::from_millis(500),
            page: 500,
        }
    }
}

/// What the feed needs: the read models, its settings, the customers
/// projection's progress, a stop signal for open streams and the
/// subscriber count. Cheap to clone; clones share the signal and count.
#[derive(Clone, Debug)]
pub struct FeedState {
    read: ReadDb,
    settings: FeedSettings,
    wake: Option<watch::Receiver<Progress>>,
    stop: Arc<watch::Sender<bool>>,
    subscribers: Arc<AtomicU64>,
}

impl FeedState {
    /// A feed over `read`.
    pub fn new(read: ReadDb, settings: FeedSettings) -> FeedState {
        FeedState {
            read,
            settings,
            wake: None,
            stop: Arc::new(watch::channel(false).0),
            subscribers: Arc::default(),
        }
    }

    /// Ends every open stream, now and from now on. An open stream never
    /// ends by itself, and the HTTP server's graceful shutdown waits for
    /// every response to finish: call this when shutdown begins.
    pub fn close(&self) {
        self.stop.send_replace(true);
    }

    /// Wakes caught-up streams as soon as the customers projection commits
    /// (`Runner::progress()` of the customers runner).
    pub fn with_wake(mut self, progress: watch::Receiver<Progress>) -> FeedState {
        self.wake = Some(progress);
        self
    }

    /// Counts open streams in `gauge` (e.g. the metrics' own) instead of
    /// a counter of its own.
    pub fn with_subscribers(mut self, gauge: Arc<AtomicU64>) -> FeedState {
        self.subscribers = gauge;
        self
    }

    /// The number of streams open now (a gauge for metrics).
    pub fn subscribers(&self) -> Arc<AtomicU64> {
        self.subscribers.clone()
    }
}

/// The feed's routes (`GET /v1/feed`), documented; serve them behind
/// authentication with the `Read` need. The handler reads
/// [`AppState::feed`].
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_feed))
}

/// Where to start and what to send.
#[derive(Debug, Deserialize, IntoParams)]
pub struct FeedParams {
    /// Start after this change id (`P` or `P:k`); `Last-Event-ID` wins
    /// when both are given. From the beginning when neither is.
    pub after: Option<String>,
    /// Only these change types, comma-separated: created, updated, merged,
    /// unmerged, household_changed, erased.
    pub types: Option<String>,
}

/// The customer change feed.
#[utoipa::path(get, path = "/v1/feed", tag = "feed", params(FeedParams,
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id (what EventSource sends on reconnect)")),
    responses(
        (status = 200, description = "text/event-stream of CloudEvents 1.0 JSON documents (`type` com.mdm.customer.<change>, \
            `subject` the token, `data` {token, version, attributes, detail}); the SSE id is the change's position `P` or `P:k`",
            content_type = "text/event-stream"),
        (status = 400, description = "A malformed cursor or an unknown change type", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn get_feed(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    QueryParams(params): QueryParams<FeedParams>,
) -> Response {
    // An empty Last-Event-ID is no cursor (some clients send one before
    // they have seen an event).
    let last_event_id = headers
        .get("last-event-id")
        .filter(|v| !v.as_bytes().iter().all(u8::is_ascii_whitespace));
    let cursor = match last_event_id {
        Some(value) => match value.to_str().ok().and_then(ChangeCursor::parse) {
            Some(c) => c,
            None => {
                return bad_request(
                    "Last-Event-ID must be an event id of this feed: a log position P or P:k",
                    "Last-Event-ID",
                )
            }
        },
        None => match params.after.as_deref() {
            None => ChangeCursor::START,
            Some(text) => match ChangeCursor::parse(text) {
                Some(c) => c,
                None => {
                    return bad_request(
                        "after must be an event id of this feed: a log position P or P:k",
                        "after",
                    )
                }
            },
        },
    };
    let types = match params.types.as_deref() {
        None => None,
        Some(text) => match ChangeType::parse_list(text) {
            Some(list) if list.is_empty() => None,
            Some(list) => Some(list),
            None => {
                return bad_request(
                    format!(
                        "types lists change types, comma-separated: {}",
                        ChangeType::ALL.map(ChangeType::as_str).join(", ")
                    ),
                    "types",
                )
            }
        },
    };
    let feed = state.feed;
    let keep_alive = feed.settings.keep_alive;
    let reader = Reader {
        pending: VecDeque::new(),
        after: cursor,
        types,
        scopes: principal.scopes,
        wake: feed.wake.clone(),
        stop: feed.stop.subscribe(),
        failures: 0,
        _subscribed: Subscribed::new(&feed.subscribers),
        feed,
    };
    tracing::debug!(client = %principal.client_id, after = %cursor, "feed subscriber connected");
    let stream = futures::stream::unfold(reader, Reader::next);
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(keep_alive))
        .into_response()
}

/// Counts an open stream for as long as it lives.
#[derive(Debug)]
struct Subscribed(Arc<AtomicU64>);

impl Subscribed {
    fn new(count: &Arc<AtomicU64>) -> Subscribed {
        count.fetch_add(1, Ordering::Relaxed);
        Subscribed(count.clone())
    }
}

impl Drop for Subscribed {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One open stream: its cursor and the events read but not yet sent.
struct Reader {
    feed: FeedState,
    after: ChangeCursor,
    types: Option<Vec<ChangeType>>,
    scopes: Scopes,
    pending: VecDeque<Event>,
    wake: Option<watch::Receiver<Progress>>,
    stop: watch::Receiver<bool>,
    failures: u32,
    _subscribed: Subscribed,
}

impl Reader {
    /// The next event, reading pages as needed and waiting when caught up;
    /// `None` (the end of the response) once the service stops.
    async fn next(mut self) -> Option<(Result<Event, Infallible>, Reader)> {
        loop {
            if *self.stop.borrow() {
                return None;
            }
            if let Some(event) = self.pending.pop_front() {
                return Some((Ok(event), self));
            }
            // Mark the projection's progress as seen before reading, so a
            // batch committed after this read wakes the wait below.
            if let Some(wake) = &mut self.wake {
                wake.borrow_and_update();
            }
            match changes_after(
                &self.feed.read,
                self.after,
                self.feed.settings.page,
                self.types.as_deref(),
            )
            .await
            {
                Ok(page) => {
                    self.failures = 0;
                    self.after = page.next;
                    for change in &page.changes {
                        if let Some(event) = sse_event(change, &self.scopes) {
                            self.pending.push_back(event);
                        }
                    }
                    if page.full || !self.pending.is_empty() {
                        continue;
                    }
                    self.wait(self.feed.settings.poll).await;
                }
                Err(error) => {
                    // The read models are away (or being created at the
                    // first start): keep the stream open and try again;
                    // keep-alive comments go on meanwhile.
                    self.failures += 1;
                    if self.failures == 1 {
                        tracing::warn!(error = %error, "feed: reading the change log failed; retrying");
                    }
                    let pause = Duration::from_millis(100u64 << self.failures.min(6));
                    self.wait(pause).await;
                }
            }
        }
    }

    /// Until the projection commits, `pause` passes or the service stops.
    async fn wait(&mut self, pause: Duration) {
        let sleep = tokio::time::sleep(pause);
        let stop = self.stop.wait_for(|s| *s);
        let mut runner_gone = false;
        match &mut self.wake {
            Some(wake) => {
                tokio::select! {
                    changed = wake.changed() => runner_gone = changed.is_err(),
                    _ = sleep => {}
                    _ = stop => {}
                }
            }
            None => {
                tokio::select! {
                    _ = sleep => {}
                    _ = stop => {}
                }
            }
        }
        if runner_gone {
            // The runner is gone: polling alone from now on.
            self.wake = None;
        }
    }
}

/// The SSE event of a change as a client with `scopes` sees it; `None` for
/// an update of attributes it may not see.
fn sse_event(change: &CustomerChange, scopes: &Scopes) -> Option<Event> {
    let document = visible_cloud_event(change, scopes)?;
    Some(
        Event::default()
            .id(change.cursor().to_string())
            .data(document.to_string()),
    )
}

/// The CloudEvent of a change with the attributes `scopes` allows; `None`
/// for an update none of whose attributes are visible.
pub fn visible_cloud_event(change: &CustomerChange, scopes: &Scopes) -> Option<Value> {
    let mut attributes = change.attributes.clone();
    scopes.filter(&mut attributes);
    if change.change_type == ChangeType::Updated && attributes.is_empty() {
        return None;
    }
    Some(cloud_event(change, attributes))
}

/// A change as a CloudEvents 1.0 JSON document carrying `attributes`.
pub fn cloud_event(change: &CustomerChange, attributes: Map<String, Value>) -> Value {
    json!({
        "specversion": "1.0",
        "id": change.cursor().to_string(),
        "source": EVENT_SOURCE,
        "type": format!("com.mdm.customer.{}", change.change_type.as_str()),
        "subject": change.token.to_string(),
        "time": change.recorded_at.to_rfc3339_opts(SecondsFormat::Micros, true),
        "datacontenttype": "application/json",
        "data": {
            "token": change.token.to_string(),
            "version": change.version,
            "attributes": attributes,
            "detail": change.detail,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(kind: ChangeType, attributes: Value) -> CustomerChange {
        CustomerChange {
            position: 42,
            ordinal: 1,
            token: uuid::Uuid::nil(),
            change_type: kind,
            attributes: attributes.as_object().cloned().unwrap_or_default(),
            version: 3,
            detail: Map::new(),
            recorded_at: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default(),
        }
    }

    #[test]
    fn a_change_is_a_cloud_event_with_its_cursor_as_id() {
        let c = change(ChangeType::Created, json!({"email": "a@example.test", "phone": "+1"}));
        let e = visible_cloud_event(&c, &Scopes::all()).expect("visible");
        assert_eq!(e["specversion"], "1.0");
        assert_eq!(e["id"], "42:1");
        assert_eq!(e["source"], EVENT_SOURCE);
        assert_eq!(e["type"], "com.mdm.customer.created");
        assert_eq!(e["subject"], uuid::Uuid::nil().to_string());
        assert_eq!(e["time"], "2023-11-14T22:13:20.000000Z");
        assert_eq!(e["datacontenttype"], "application/json");
        assert_eq!(e["data"]["version"], 3);
        assert_eq!(e["data"]["attributes"]["email"], "a@example.test");
    }

    #[test]
    fn scopes_hide_attributes_and_drop_updates_with_nothing_visible() {
        let scopes = Scopes::parse("phone").expect("scopes");
        let c = change(ChangeType::Created, json!({"email": "a@example.test", "phone": "+1"}));
        let e = visible_cloud_event(&c, &scopes).expect("visible");
        assert_eq!(e["data"]["attributes"], json!({"phone": "+1"}));
        let u = change(ChangeType::Updated, json!({"email": "b@example.test"}));
        assert!(visible_cloud_event(&u, &scopes).is_none());
        let m = change(ChangeType::Merged, json!({}));
        assert!(
            visible_cloud_event(&m, &scopes).is_some(),
            "structural changes always go out"
        );
    }
}
