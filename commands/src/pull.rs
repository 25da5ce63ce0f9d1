//! Pulling records from a REST source that can only be asked one customer at
//! a time (a `rest_pull` source such as the warranty system).
//!
//! A [`Puller`] is made once per system from its definition's `pull` table.
//! [`Puller::pull`] asks the source for each key (by id or by e-mail), in
//! order, each request waiting for its turn on a rate limiter shared by every
//! call of the same `Puller` (and its clones); a few requests are in flight
//! at once so that the rate limit, not the source's latency, sets the pace.
//! Transient failures (connect errors, timeouts, 408, 429, 5xx) are retried
//! with exponential backoff and jitter, or after the time a `Retry-After`
//! header asks for (which also holds back every other request of the
//! `Puller`), up to `max_attempts` attempts in all. Every answer is then
//! ingested through the [`Ingestor`] in one batch, exactly as received: the
//! body verbatim is the record's raw content, its parsed JSON what is mapped.
//!
//! Keys and answers are personal data: nothing here logs or reports them.
//! Outcomes name the key by its place ("id 1", "email 2"), reasons name HTTP
//! statuses and attempt counts, and `reqwest` errors (whose text holds the
//! URL, and so the key) are reduced to their kind.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::stream::{self, StreamExt};
use mdm_domain::source::{DefinitionErrors, InputFormat, SourceDefinition};
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use serde::Serialize;
use tokio::time::Instant;

use crate::ingest::{IngestContext, IngestError, Ingestor, Outcome};
use crate::input::DEFAULT_MAX_RECORD_BYTES;
use crate::input::{InputError, InputItem, InputRecord};

/// How many keys are being asked for at once (each still waits for its turn
/// on the rate limiter).
const IN_FLIGHT: usize = 16;

/// The first retry waits about this long; each further one twice as long.
const BACKOFF_BASE: Duration = Duration::from_millis(200);

/// The longest wait between two attempts chosen by the backoff.
const BACKOFF_CAP: Duration = Duration::from_secs(10);

/// The longest `Retry-After` that is waited for; a source asking for more
/// gives up the key (it is asked again by the next pull).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// The longest interval between two request starts: a source asked less
/// often than once a day is not meant to be pulled.
const MAX_INTERVAL: Duration = Duration::from_secs(24 * 60 * 60);

/// What to ask the source for. `Debug` prints the kind only: the key is
/// personal data.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum PullKey {
    /// The customer's id in the source (`pull.by_id`).
    Id(String),
    /// The customer's e-mail address (`pull.by_email`).
    Email(String),
}

impl PullKey {
    fn kind(&self) -> &'static str {
        match self {
            PullKey::Id(_) => "id",
            PullKey::Email(_) => "email",
        }
    }

    fn value(&self) -> &str {
        match self {
            PullKey::Id(key) | PullKey::Email(key) => key,
        }
    }
}

impl fmt::Debug for PullKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PullKey::Id(_) => "PullKey::Id(..)",
            PullKey::Email(_) => "PullKey::Email(..)",
        })
    }
}

/// What happened to one key of a pull.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PullOutcome {
    /// The key's kind and 1-based place in the call: "id 1", "email 2";
    /// never the key itself.
    pub locator: String,
    /// Requests sent for this key (0 when it could not be asked at all).
    pub attempts: u32,
    #[serde(flatten)]
    pub result: PullResult,
}

/// The result for one key. Reasons name HTTP statuses and attempt counts,
/// never a key or an answer's content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum PullResult {
    /// The source answered; this is what ingestion made of the answer
    /// (captured, changed, unchanged, or rejected when it did not map or was
    /// not a JSON object).
    Ingested(Outcome),
    /// The source does not know the key (404): nothing stored.
    NotFound,
    /// The source could not be asked, refused the request, or kept failing:
    /// nothing stored.
    Failed { reason: String },
}

/// Why a [`Puller`] cannot be made. Messages name the system and the
/// configuration key, never a URL (it may hold credentials).
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("source `{system}` is not pulled: only a `format = \"rest_pull\"` source with a `pull` table is")]
    NotPulled { system: String },
    #[error("{0}")]
    Definition(DefinitionErrors),
    #[error("source `{system}`, field `{field}`: the URL does not parse once a key is put in")]
    Url { system: String, field: &'static str },
    #[error("source `{system}`: the HTTP client cannot be made ({reason})")]
    Client { system: String, reason: String },
}

/// Asks one `rest_pull` source for customers, one request per key. Cheap
/// to clone; clones share the HTTP client and the rate limiter.
#[derive(Clone)]
pub struct Puller {
    system: String,
    by_id: Option<String>,
    by_email: Option<String>,
    max_attempts: u32,
    client: reqwest::Client,
    limiter: Arc<RateLimiter>,
}

/// Prints the system and the limits, not the URLs (they may hold
/// credentials).
impl fmt::Debug for Puller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Puller")
            .field("system", &self.system)
            .field("by_id", &self.by_id.is_some())
            .field("by_email", &self.by_email.is_some())
            .field("max_attempts", &self.max_attempts)
            .field("interval", &self.limiter.interval)
            .finish_non_exhaustive()
    }
}

/// What asking for one key gave.
enum Answer {
    /// A 2xx answer: its body as a record for ingestion.
    Record(Result<InputItem, InputError>),
    NotFound,
    Failed(String),
}

/// Why reading an answer's body stopped.
enum BodyError {
    TooLarge,
    Transport(reqwest::Error),
}

impl Puller {
    /// A puller for `def`, which must be a valid `rest_pull` definition.
    pub fn new(def: &SourceDefinition) -> Result<Puller, PullError> {
        let system = def.system.clone();
        let pull = match (&def.pull, def.format) {
            (Some(pull), InputFormat::RestPull) => pull,
            _ => return Err(PullError::NotPulled { system }),
        };
        def.validate().map_err(PullError::Definition)?;
        let interval = pull
            .interval()
            .ok_or_else(|| PullError::NotPulled { system: system.clone() })?;
        let lookups = [
            ("pull.by_id", &pull.by_id, PullKey::Id("0".into())),
            ("pull.by_email", &pull.by_email, PullKey::Email("a@example.com".into())),
        ];
        for (field, template, sample) in lookups {
            if let Some(template) = template {
                if url_for(template, &sample).is_none() {
                    return Err(PullError::Url { system, field });
                }
            }
        }
        let client = reqwest::Client::builder()
            .timeout(pull.timeout())
            .connect_timeout(pull.timeout())
            .user_agent(concat!("mdm/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| PullError::Client {
                system: system.clone(),
                reason: describe(&e.without_url()),
            })?;
        Ok(Puller {
            system,
            by_id: pull.by_id.clone(),
            by_email: pull.by_email.clone(),
            max_attempts: pull.max_attempts,
            client,
            limiter: Arc::new(RateLimiter::new(interval.min(MAX_INTERVAL))),
        })
    }

    /// The system this puller asks.
    pub fn system(&self) -> &str {
        &self.system
    }

    /// Asks the source for each key (in order, rate-limited), retries what
    /// fails transiently, and ingests every answer through `ingestor` in one
    /// batch. One outcome per key, in order. Fails as a whole only when the
    /// ingestor does not know the system (checked before any request) or the
    /// batch cannot be stored; a retry is then safe.
    pub async fn pull(
        &self,
        ingestor: &Ingestor,
        keys: &[PullKey],
        ctx: &IngestContext,
    ) -> Result<Vec<PullOutcome>, IngestError> {
        if ingestor.sources().get(&self.system).is_none() {
            return Err(IngestError::UnknownSystem);
        }
        // Owned keys: a stream over borrowed ones makes the future's type
        // depend on a higher-ranked lifetime that axum handlers cannot name.
        let owned: Vec<(usize, PullKey)> = keys.iter().cloned().enumerate().collect();
        let answers: Vec<(String, u32, Answer)> = stream::iter(owned)
            .map(|(index, key)| async move {
                let locator = format!("{} {}", key.kind(), index + 1);
                let (attempts, answer) = self.ask(&key, &locator).await;
                (locator, attempts, answer)
            })
            .buffered(IN_FLIGHT)
            .collect()
            .await;

        let mut records = Vec::new();
        let mut outcomes = Vec::with_capacity(answers.len());
        for (locator, attempts, answer) in answers {
            let result = match answer {
                Answer::Record(item) => {
                    records.push(InputRecord {
                        locator: locator.clone(),
                        item,
                    });
                    None
                }
                Answer::NotFound => Some(PullResult::NotFound),
                Answer::Failed(reason) => Some(PullResult::Failed { reason }),
            };
            outcomes.push((locator, attempts, result));
        }
        let ingested = if records.is_empty() {
            Vec::new()
        } else {
            ingestor.ingest(&self.system, records, ctx).await?
        };
        let mut ingested = ingested.into_iter();
        let outcomes: Vec<PullOutcome> = outcomes
            .into_iter()
            .map(|(locator, attempts, result)| {
                let result = result.unwrap_or_else(|| match ingested.next() {
                    Some(record) => PullResult::Ingested(record.outcome),
                    None => PullResult::Failed {
                        reason: "internal error: ingestion gave no outcome for the answer".into(),
                    },
                });
                PullOutcome {
                    locator,
                    attempts,
                    result,
                }
            })
            .collect();
        let count = |f: fn(&PullResult) -> bool| outcomes.iter().filter(|o| f(&o.result)).count();
        tracing::info!(
            system = %self.system,
            keys = outcomes.len(),
            ingested = count(|r| matches!(r, PullResult::Ingested(_))),
            not_found = count(|r| matches!(r, PullResult::NotFound)),
            failed = count(|r| matches!(r, PullResult::Failed { .. })),
            "pull done"
        );
        Ok(outcomes)
    }

    /// Asks for one key, retrying transient failures. Returns the number of
    /// requests sent and the answer.
    async fn ask(&self, key: &PullKey, locator: &str) -> (u32, Answer) {
        let (template, field) = match key {
            PullKey::Id(_) => (&self.by_id, "by_id"),
            PullKey::Email(_) => (&self.by_email, "by_email"),
        };
        let Some(template) = template else {
            let reason = format!(
                "the source has no lookup by {} (`pull.{field}` is not configured)",
                key.kind()
            );
            return (0, Answer::Failed(reason));
        };
        if matches!(key.value(), "" | "." | "..") {
            let reason = format!("the {} is empty or `.`/`..`, which cannot be asked for", key.kind());
            return (0, Answer::Failed(reason));
        }
        let Some(url) = url_for(template, key) else {
            return (0, Answer::Failed("the URL does not parse with this key".into()));
        };

        let max = self.max_attempts.max(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.limiter.acquire().await;
            let (problem, retry_after) = match self.client.get(url.clone()).send().await {
                Err(e) if is_transient(&e) => (describe(&e), None),
                Err(e) => return (attempt, self.failed(locator, attempt, describe(&e))),
                Ok(response) => {
                    let status = response.status();
                    tracing::debug!(system = %self.system, locator, attempt, status = status.as_u16(), "pull answer");
                    if status.is_success() {
                        match read_body(response).await {
                            Ok(body) => return (attempt, Answer::Record(record_item(body))),
                            Err(BodyError::TooLarge) => {
                                return (
                                    attempt,
                                    Answer::Record(Err(InputError::too_large(DEFAULT_MAX_RECORD_BYTES))),
                                )
                            }
                            Err(BodyError::Transport(e)) => {
                                (format!("reading the answer failed: {}", describe(&e)), None)
                            }
                        }
                    } else if status == StatusCode::NOT_FOUND {
                        return (attempt, Answer::NotFound);
                    } else if is_transient_status(status) {
                        (format!("the source answered {status}"), retry_after(response.headers()))
                    } else {
                        let reason = format!("the source answered {status}");
                        return (attempt, self.failed(locator, attempt, reason));
                    }
                }
            };
            if attempt >= max {
                let reason = format!("{problem} (attempt {attempt} of {max}); gave up");
                return (attempt, self.failed(locator, attempt, reason));
            }
            let delay = match retry_after {
                Some(wait) if wait > MAX_RETRY_AFTER => {
                    let reason = format!(
                        "{problem} and asked to wait {} s, longer than the {} s a pull waits (attempt {attempt} of {max})",
                        wait.as_secs(),
                        MAX_RETRY_AFTER.as_secs()
                    );
                    return (attempt, self.failed(locator, attempt, reason));
                }
                Some(wait) => {
                    // The source is busy for every key, not just this one.
                    self.limiter.hold_until(Instant::now() + wait);
                    wait
                }
                None => backoff(attempt),
            };
            tracing::debug!(
                system = %self.system,
                locator,
                attempt,
                delay_ms = delay.as_millis() as u64,
                "pull attempt failed transiently: {problem}; retrying"
            );
            tokio::time::sleep(delay).await;
        }
    }

    fn failed(&self, locator: &str, attempts: u32, reason: String) -> Answer {
        tracing::warn!(system = %self.system, locator, attempts, "pull failed: {reason}");
        Answer::Failed(reason)
    }
}

/// Spaces request starts at least `interval` apart, across every task that
/// shares it. Each request reserves the next free start time under a lock
/// and sleeps until then: no polling, and the order of reservations is the
/// order of starts.
#[derive(Debug)]
struct RateLimiter {
    interval: Duration,
    /// The earliest start time of the next request.
    next: Mutex<Option<Instant>>,
}

impl RateLimiter {
    fn new(interval: Duration) -> RateLimiter {
        RateLimiter {
            interval,
            next: Mutex::new(None),
        }
    }

    /// Waits for this request's turn.
    async fn acquire(&self) {
        let start = {
            // The lock guards plain data; a panic elsewhere cannot leave it
            // half-written.
            let mut next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            let start = next.map_or(now, |n| n.max(now));
            *next = Some(start + self.interval);
            start
        };
        tokio::time::sleep_until(start).await;
    }

    /// No request starts before `until`.
    fn hold_until(&self, until: Instant) {
        let mut next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
        *next = Some(next.map_or(until, |n| n.max(until)));
    }
}

/// The URL of `key`: the template with the key percent-encoded into its
/// placeholder. Every byte but ASCII letters, digits and `-._~` is encoded,
/// which is safe in a path segment and in a query value alike (`+` and `@`
/// included).
fn url_for(template: &str, key: &PullKey) -> Option<Url> {
    let placeholder = match key {
        PullKey::Id(_) => "{id}",
        PullKey::Email(_) => "{email}",
    };
    Url::parse(&template.replace(placeholder, &percent_encode(key.value()))).ok()
}

fn percent_encode(text: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// Reads a body of at most [`DEFAULT_MAX_RECORD_BYTES`].
async fn read_body(mut response: reqwest::Response) -> Result<Vec<u8>, BodyError> {
    let max = DEFAULT_MAX_RECORD_BYTES;
    if response.content_length().is_some_and(|len| len > max as u64) {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Transport)? {
        if body.len() + chunk.len() > max {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// An answer's body as a record: verbatim as `raw`, parsed as `value`; a
/// body that is not UTF-8 or not one JSON object is a rejected record.
fn record_item(body: Vec<u8>) -> Result<InputItem, InputError> {
    let raw = String::from_utf8(body).map_err(|_| InputError::not_utf8())?;
    crate::input::json::parse(raw)
}

/// Statuses worth asking again: timeouts, rate limiting, server errors.
fn is_transient_status(status: StatusCode) -> bool {
    status == StatusCode::REQUEST_TIMEOUT || status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

/// Transport failures worth asking again. The request is a GET, so a
/// failure after it was sent may be repeated too; only a bad URL, a
/// redirect loop and the like are final.
fn is_transient(error: &reqwest::Error) -> bool {
    !(error.is_builder() || error.is_redirect() || error.is_status())
}

/// What went wrong, by kind only: a `reqwest` error's text holds the URL,
/// and so the key.
fn describe(error: &reqwest::Error) -> String {
    let what = if error.is_timeout() {
        "the request timed out"
    } else if error.is_connect() {
        "the source could not be reached"
    } else if error.is_redirect() {
        "the source redirected too often"
    } else if error.is_builder() {
        "the request could not be built"
    } else if error.is_body() || error.is_decode() {
        "the answer broke off"
    } else {
        "the connection failed"
    };
    what.to_owned()
}

/// The wait a `Retry-After` header asks for: seconds, or an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (at.with_timezone(&chrono::Utc) - chrono::Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

/// The wait before attempt `attempt + 1`: [`BACKOFF_BASE`] doubled per
/// failed attempt, capped at [`BACKOFF_CAP`], of which a random half is
/// waited on top of the other half (so retries of many keys spread out).
fn backoff(attempt: u32) -> Duration {
    let full = BACKOFF_BASE
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(BACKOFF_CAP);
    let half = full / 2;
    let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
    let jitter = if nanos == 0 {
        0
    } else {
        (uuid::Uuid::new_v4().as_u128() as u64) % nanos
    };
    half + Duration::from_nanos(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_percent_encoded_into_their_placeholder() {
        let url = url_for(
            "http://h/api/customers?email={email}",
            &PullKey::Email("a.b+c@x.com".into()),
        )
        .unwrap();
        assert_eq!(url.as_str(), "http://h/api/customers?email=a.b%2Bc%40x.com");
        let url = url_for("http://h/api/customers/{id}", &PullKey::Id("a/b ?#&ü".into())).unwrap();
        assert_eq!(url.as_str(), "http://h/api/customers/a%2Fb%20%3F%23%26%C3%BC");
        assert_eq!(url.path_segments().unwrap().count(), 3);
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        for attempt in 1..=30 {
            let full = (BACKOFF_BASE * 2u32.pow((attempt - 1).min(16))).min(BACKOFF_CAP);
            let wait = backoff(attempt);
            assert!(wait >= full / 2 && wait <= full, "{attempt}: {wait:?}");
        }
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));
        headers.insert(RETRY_AFTER, "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::ZERO));
        headers.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn debug_of_a_key_hides_it() {
        let debug = format!(
            "{:?}",
            [PullKey::Id("c7f3".into()), PullKey::Email("m@example.com".into())]
        );
        assert_eq!(debug, "[PullKey::Id(..), PullKey::Email(..)]");
    }

    #[tokio::test(start_paused = true)]
    async fn the_limiter_spaces_starts_across_tasks_and_holds() {
        let limiter = Arc::new(RateLimiter::new(Duration::from_millis(100)));
        let begin = Instant::now();
        let tasks: Vec<_> = (0..5)
            .map(|_| {
                let limiter = limiter.clone();
                tokio::spawn(async move {
                    limiter.acquire().await;
                    Instant::now()
                })
            })
            .collect();
        let mut starts = Vec::new();
        for task in tasks {
            starts.push(task.await.unwrap() - begin);
        }
        starts.sort();
        assert_eq!(
            starts,
            (0..5).map(|i| Duration::from_millis(100 * i)).collect::<Vec<_>>()
        );

        limiter.hold_until(Instant::now() + Duration::from_secs(2));
        let before = Instant::now();
        limiter.acquire().await;
        assert_eq!(Instant::now() - before, Duration::from_secs(2));
    }
}
