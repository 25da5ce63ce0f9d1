//! `application/problem+json` (RFC 9457) responses. Details name the field at
//! fault and never quote a value from the request: requests carry personal
//! data, and error bodies end up in client logs.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// One problem document.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    pub kind: &'static str,
    #[schema(value_type = String)]
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    /// The request field at fault (a path segment, a header, a record
    /// field), when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Extra members, flattened into the document (e.g. per-record outcomes).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub extra: Option<serde_json::Map<String, serde_json::Value>>,
}

impl Problem {
    pub fn new(status: StatusCode, title: &'static str, detail: impl Into<String>) -> Problem {
        Problem {
            kind: "about:blank",
            title,
            status: status.as_u16(),
            detail: detail.into(),
            field: None,
            extra: None,
        }
    }

    pub fn field(mut self, field: impl Into<String>) -> Problem {
        self.field = Some(field.into());
        self
    }

    pub fn with(mut self, name: &str, value: serde_json::Value) -> Problem {
        self.extra
            .get_or_insert_with(Default::default)
            .insert(name.to_owned(), value);
        self
    }

    /// 404 for a source system the sources file does not declare.
    pub fn unknown_system() -> Problem {
        Problem::new(
            StatusCode::NOT_FOUND,
            "Unknown source system",
            "no source system of that name is configured",
        )
        .field("system")
    }

    /// 503 for a backend that does not answer; the cause goes to the log only.
    pub fn unavailable(what: &'static str) -> Problem {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Service unavailable",
            format!("the {what} does not answer; nothing was lost, retry later (see the service log)"),
        )
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        (status, [(header::CONTENT_TYPE, "application/problem+json")], body).into_response()
    }
}

/// `axum::extract::Path` whose rejection is a problem document naming the
/// path parameter at fault (axum's own answers in plain text), e.g. a token
/// that is not a UUID.
#[derive(Debug)]
pub struct PathParam<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for PathParam<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Problem> {
        use axum::extract::path::ErrorKind;
        use axum::extract::rejection::PathRejection;
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(PathParam(value)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => {
                let field = match e.kind() {
                    ErrorKind::ParseErrorAtKey { key, .. }
                    | ErrorKind::InvalidUtf8InPathParam { key }
                    | ErrorKind::DeserializeError { key, .. } => Some(key.clone()),
                    _ => None,
                };
                let problem = Problem::new(
                    StatusCode::BAD_REQUEST,
                    "Bad request",
                    "a path parameter is not of the expected form (tokens and ids are UUIDs)",
                );
                Err(match field {
                    Some(f) => problem.field(f),
                    None => problem,
                })
            }
            Err(other) => Err(Problem::new(
                StatusCode::from_u16(other.status().as_u16()).unwrap_or(StatusCode::BAD_REQUEST),
                "Bad request",
                "the path could not be read",
            )),
        }
    }
}

/// `400 Bad Request` naming `field`.
pub fn bad_request(detail: impl Into<String>, field: &str) -> Response {
    Problem::new(StatusCode::BAD_REQUEST, "Bad request", detail)
        .field(field)
        .into_response()
}

/// Parses a JSON body, naming the field at fault (never quoting a value:
/// bodies carry personal data). The error is the response to answer.
#[allow(clippy::result_large_err)]
pub fn json_body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Response> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.inner().to_string();
        // serde names a missing or unknown field in backticks.
        let field = if path == "." || path.is_empty() {
            inner.split('`').nth(1).unwrap_or("body").to_owned()
        } else {
            path
        };
        let detail = if inner.starts_with("missing field") {
            "a required field is missing"
        } else if inner.starts_with("unknown field") {
            "an unknown field was sent"
        } else {
            "the field is not of the expected type or form"
        };
        bad_request(detail, &field)
    })
}

/// `axum::extract::Query` whose rejection is a problem document naming the
/// query parameter at fault (axum's own answers in plain text, and serde's
/// messages may quote the value).
#[derive(Debug)]
pub struct QueryParams<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for QueryParams<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _state: &S) -> Result<Self, Problem> {
        let query = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de).map(QueryParams).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.inner().to_string();
            let field = if path == "." || path.is_empty() {
                inner.split('`').nth(1).unwrap_or("query").to_owned()
            } else {
                path
            };
            let detail = if inner.starts_with("missing field") {
                "a required query parameter is missing"
            } else {
                "a query parameter is not of the expected type or form"
            };
            Problem::new(StatusCode::BAD_REQUEST, "Bad request", detail).field(field)
        })
    }
}
