//! The service's edge: what bounds a hostile or broken client before any
//! handler runs (docs/hostile-input.md).
//!
//! - [`serve`] is the accept loop of `mdm serve` (plain HTTP and TLS alike):
//!   at most [`HttpLimits::max_connections`] open connections (beyond it a
//!   connection gets `503` with `Retry-After` and is closed at once), HTTP/1.1
//!   through hyper with a header read timeout (a client that trickles its
//!   request head, or keeps an idle keep-alive connection, is cut after
//!   [`HttpLimits::header_read_timeout`]; the TLS handshake has the same
//!   bound), and graceful shutdown that lets in-flight requests finish.
//! - [`shed`] answers `503` with `Retry-After` when more than
//!   [`HttpLimits::max_in_flight`] requests are being handled (load
//!   shedding instead of an unbounded queue). A streaming response (the SSE
//!   feed) counts until its head is sent, not while it streams.
//! - [`body_deadline`] gives each request body
//!   [`HttpLimits::body_read_timeout`] to arrive in full: a body still
//!   trickling in after that is abandoned and the answer is `408` with
//!   `Connection: close`. Requests without a body (the feed) are untouched.
//! - [`problem_only`] turns any error answer that is not a problem document
//!   (axum's plain-text rejections) into `application/problem+json`,
//!   without quoting the original text (it may quote a request value).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::problem::Problem;

/// The bounds of the HTTP edge (`[http]` in the config file).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// How long a client may take to send a request's head (request line
    /// and headers), counted from when the connection is ready for it: a
    /// new connection, or the end of the previous response on a keep-alive
    /// one. Also bounds the TLS handshake.
    pub header_read_timeout: Duration,
    /// How long a request's body may take to arrive in full, from when the
    /// request head was read.
    pub body_read_timeout: Duration,
    /// Open connections (any state, feed streams included) at most.
    pub max_connections: usize,
    /// Requests being handled at once, at most (load shedding above).
    pub max_in_flight: usize,
}

impl Default for HttpLimits {
    fn default() -> HttpLimits {
        HttpLimits {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(60),
            max_connections: 1024,
            max_in_flight: 256,
        }
    }
}

/// What the edge turned away since start-up (for the log and tests).
#[derive(Debug, Default)]
pub struct EdgeCounters {
    /// Connections refused because [`HttpLimits::max_connections`] were open.
    pub connections_refused: AtomicU64,
    /// Requests answered 503 because [`HttpLimits::max_in_flight`] were running.
    pub requests_shed: AtomicU64,
    /// Requests answered 408 because their body did not arrive in time.
    pub bodies_timed_out: AtomicU64,
}

/// How long a refused connection is given to take its 503.
const REFUSAL_BOUND: Duration = Duration::from_secs(1);
/// How long a refusal reads what the client sent before closing.
const REFUSAL_DRAIN: Duration = Duration::from_millis(250);
/// Refusals being written at once, at most; beyond, a connection is closed
/// without an answer (a flood must not grow tasks without bound either).
const MAX_REFUSALS: usize = 512;
/// `Retry-After` of a refusal or a shed request, in seconds.
const RETRY_AFTER_SECONDS: u64 = 1;

/// The answer to a connection beyond the limit, written before reading the
/// request (so it needs no parser and no buffer).
fn refusal_bytes() -> Vec<u8> {
    let body =
        serde_json::to_vec(&busy_problem("the service has as many open connections as it allows")).unwrap_or_default();
    let mut out = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\nretry-after: \
         {RETRY_AFTER_SECONDS}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

fn busy_problem(detail: &str) -> Problem {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "Service busy",
        format!("{detail}; retry after {RETRY_AFTER_SECONDS} s"),
    )
}

/// Serves `app` on `listener` (over TLS with `tls`) within `limits` until
/// `shutdown` completes; then stops accepting, lets every connection finish
/// its request in flight and returns once all are closed or `grace` has
/// passed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: HttpLimits,
    counters: Arc<EdgeCounters>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let connections = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS));
    let refusal = Arc::new(refusal_bytes());
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let mut last_refusal_log: Option<std::time::Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(error) => {
                    // Out of file descriptors and the like: pause instead of
                    // spinning; per-connection errors just drop that one.
                    tracing::warn!(error = %error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            let refused = counters.connections_refused.fetch_add(1, Ordering::Relaxed) + 1;
            if last_refusal_log.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                last_refusal_log = Some(std::time::Instant::now());
                tracing::warn!(
                    max_connections = limits.max_connections,
                    refused_since_start = refused,
                    "connection limit reached: refusing new connections with 503"
                );
            }
            refuse(stream, acceptor.is_some(), &refusals, &refusal);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let http = http.clone();
        let watcher = graceful.watcher();
        let acceptor = acceptor.clone();
        let handshake_bound = limits.header_read_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            match acceptor {
                None => {
                    let _ = watcher
                        .watch(http.serve_connection(TokioIo::new(stream), service))
                        .await;
                }
                Some(acceptor) => {
                    let Ok(Ok(stream)) = tokio::time::timeout(handshake_bound, acceptor.accept(stream)).await else {
                        return;
                    };
                    let _ = watcher
                        .watch(http.serve_connection(TokioIo::new(stream), service))
                        .await;
                }
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!(
            seconds = grace.as_secs(),
            "connections still open after the shutdown grace period; closing them"
        );
    }
}

/// Answers a connection beyond the limit with 503 and closes it, within
/// [`REFUSAL_BOUND`]. Over TLS there is no answer without a handshake, so
/// the connection is closed at once.
fn refuse(mut stream: TcpStream, tls: bool, refusals: &Arc<Semaphore>, refusal: &Arc<Vec<u8>>) {
    if tls {
        return;
    }
    let Ok(permit) = refusals.clone().try_acquire_owned() else {
        return;
    };
    let refusal = refusal.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let _ = tokio::time::timeout(REFUSAL_BOUND, async {
            stream.write_all(&refusal).await?;
            stream.shutdown().await?;
            Ok::<_, std::io::Error>(())
        })
        .await;
        // Read what the client sent (until it closes, briefly): closing a
        // socket with unread input resets it, and the client could lose
        // the 503.
        let _ = tokio::time::timeout(REFUSAL_DRAIN, async {
            let mut sink = [0u8; 4096];
            while stream.read(&mut sink).await? > 0 {}
            Ok::<_, std::io::Error>(())
        })
        .await;
    });
}

/// Load shedding: at most `max_in_flight` requests are handled at once;
/// the rest get 503 with `Retry-After` at once.
pub async fn shed(State(edge): State<EdgeState>, request: Request, next: Next) -> Response {
    let Ok(_permit) = edge.in_flight.try_acquire() else {
        edge.counters.requests_shed.fetch_add(1, Ordering::Relaxed);
        let mut response = busy_problem("the service is handling as many requests as it allows").into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
        return response;
    };
    next.run(request).await
}

/// What the edge middleware share.
#[derive(Clone, Debug)]
pub struct EdgeState {
    pub limits: HttpLimits,
    pub in_flight: Arc<Semaphore>,
    pub counters: Arc<EdgeCounters>,
}

impl EdgeState {
    pub fn new(limits: HttpLimits) -> EdgeState {
        EdgeState {
            limits,
            in_flight: Arc::new(Semaphore::new(limits.max_in_flight.max(1))),
            counters: Arc::default(),
        }
    }
}

/// Gives the request body [`HttpLimits::body_read_timeout`] to arrive; if
/// the handler was still waiting for it then, the answer is 408 and the
/// connection is closed (whatever the handler made of the broken body).
///
/// A body that declares a length above `max_body_bytes` is refused with 413
/// before any of it is read (the extractors' limit would only notice once
/// that much had arrived, or the deadline passed).
pub async fn body_deadline(
    State((edge, max_body_bytes)): State<(EdgeState, usize)>,
    request: Request,
    next: Next,
) -> Response {
    use axum::body::HttpBody;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > max_body_bytes as u64) {
        let mut response = Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Payload too large",
            format!(
                "the body is larger than the limit of {max_body_bytes} bytes (http.max_body_bytes); nothing was \
                 stored. Split it, or use `mdm import` for files"
            ),
        )
        .field("body")
        .into_response();
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return response;
    }
    if request.body().is_end_stream() {
        return next.run(request).await;
    }
    let timed_out = Arc::new(AtomicBool::new(false));
    let (parts, body) = request.into_parts();
    let body = Body::new(DeadlineBody {
        inner: body,
        deadline: Box::pin(tokio::time::sleep(edge.limits.body_read_timeout)),
        timed_out: timed_out.clone(),
    });
    let response = next.run(Request::from_parts(parts, body)).await;
    if !timed_out.load(Ordering::Relaxed) {
        return response;
    }
    edge.counters.bodies_timed_out.fetch_add(1, Ordering::Relaxed);
    let mut response = Problem::new(
        StatusCode::REQUEST_TIMEOUT,
        "Request timeout",
        format!(
            "the request body did not arrive within {} s",
            edge.limits.body_read_timeout.as_secs_f64()
        ),
    )
    .field("body")
    .into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// A request body that fails once its deadline passes before its end.
struct DeadlineBody {
    inner: Body,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timed_out: Arc<AtomicBool>,
}

/// The error a [`DeadlineBody`] ends with.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
struct BodyTimedOut;

impl axum::body::HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::BoxError>>> {
        if self.timed_out.load(Ordering::Relaxed) {
            return Poll::Ready(Some(Err(BodyTimedOut.into())));
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    self.timed_out.store(true, Ordering::Relaxed);
                    Poll::Ready(Some(Err(BodyTimedOut.into())))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Turns an error answer that is not a problem document (axum's plain-text
/// rejections: a body over the limit, a missing content type, an
/// unsupported method) into one, with the same status and headers. The
/// original text is dropped: it may quote a value from the request.
pub async fn problem_only(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // Problem documents, and the console's HTML pages, stay as they are.
    if content_type.starts_with("application/problem+json") || content_type.starts_with("text/html") {
        return response;
    }
    let (mut parts, _body) = response.into_parts();
    let (title, detail, field) = match status {
        StatusCode::PAYLOAD_TOO_LARGE => (
            "Payload too large",
            "the request body is larger than the service accepts (http.max_body_bytes)",
            Some("body"),
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "Unsupported media type",
            "the request body's content type is not one this operation accepts",
            Some("Content-Type"),
        ),
        StatusCode::METHOD_NOT_ALLOWED => ("Method not allowed", "the path does not accept this method", None),
        StatusCode::NOT_FOUND => ("Not found", "no such resource", None),
        StatusCode::UNPROCESSABLE_ENTITY => (
            "Unprocessable content",
            "the request body is well-formed but not of the expected form",
            Some("body"),
        ),
        s if s.is_server_error() => (
            "Internal error",
            "the service could not answer; see the service log",
            None,
        ),
        _ => ("Bad request", "the request could not be read", None),
    };
    let mut problem = Problem::new(status, title, detail);
    if let Some(field) = field {
        problem = problem.field(field);
    }
    let body = serde_json::to_vec(&problem).unwrap_or_default();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    Response::from_parts(parts, Body::from(body))
}
