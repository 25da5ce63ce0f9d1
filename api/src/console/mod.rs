//! The web console for data stewards and compliance staff: server-rendered
//! HTML (maud), plain forms, no JavaScript needed, every asset served by
//! us (one stylesheet). Its page contract (ids, names, URLs) is in
//! `docs/console-contract.md`; the browser tests drive it.
//!
//! **Sign-in.** A person signs in with an API client's key (the same keys
//! and roles as the API). The key is checked by `Clients::authenticate`
//! and kept in a server-side session (never in the cookie, never logged);
//! every request authenticates it again (cached briefly by `Clients`), so a
//! revoked client is signed out at once. The session cookie is random (256
//! bits), `HttpOnly`, `SameSite=Strict`, `Path=/console`, `Secure` when the
//! service serves TLS; sessions end after 8 hours idle or 12 in all, and
//! on sign-out.
//!
//! **CSRF.** Every form carries the session's random token in a hidden
//! `csrf` field; a POST whose token does not match (compared in constant
//! time) is refused with 403 and nothing is done. The sign-in form uses a
//! double-submit token (a cookie of its own and the same value in the form).
//!
//! **One API.** Pages call the API's own handlers in-process (with the
//! signed-in client's principal), so the console shows and does exactly
//! what the API allows that role, with the same validation, `If-Match`
//! checks and problems; a refused command shows the problem's detail,
//! which never holds personal data.

// Helpers return the page to answer instead as their error, as the API's
// handlers do.
#![allow(clippy::result_large_err)]

mod pages;
mod privacy;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post, MethodRouter};
use maud::{html, Markup, DOCTYPE};
use rand_core::{OsRng, RngCore};
use serde_json::Value;

use crate::auth::{Need, Principal, Role};
use crate::http::{Access, AppState, UnlistedRoute};

/// The session cookie.
const COOKIE: &str = "mdm_console";
/// The sign-in form's double-submit cookie.
const LOGIN_COOKIE: &str = "mdm_console_login";
/// A session ends after this long without a request...
const IDLE: Duration = Duration::from_secs(8 * 3600);
/// ...and after this long in all.
const LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// The signed-in sessions, by cookie value.
#[derive(Clone, Default)]
pub struct Sessions(Arc<Mutex<HashMap<String, Session>>>);

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").finish_non_exhaustive()
    }
}

/// One signed-in person. No `Debug`: it holds the API key.
struct Session {
    key: String,
    csrf: String,
    started: Instant,
    seen: Instant,
    /// A message for the next page (`true`: done; `false`: refused).
    flash: Option<(bool, String)>,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn flash(&self, id: &str, ok: bool, message: impl Into<String>) {
        if let Some(s) = self.lock().get_mut(id) {
            s.flash = Some((ok, message.into()));
        }
    }
}

/// 256 random bits, URL-safe hex.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Equal in constant time (for equal lengths).
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn set_cookie(name: &str, value: &str, secure: bool, max_age: Option<u64>) -> HeaderValue {
    let mut c = format!("{name}={value}; Path=/console; HttpOnly; SameSite=Strict");
    if secure {
        c.push_str("; Secure");
    }
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    HeaderValue::from_str(&c).unwrap_or_else(|_| HeaderValue::from_static("mdm_console=; Path=/console"))
}

/// The signed-in person of a request.
pub(crate) struct Signed {
    /// The session's cookie value.
    id: String,
    pub principal: Principal,
    csrf: String,
    flash: Option<(bool, String)>,
}

impl Signed {
    /// The page for a role that may not see it: 403.
    fn allowed(&self, need: Need) -> Result<(), Response> {
        if self.principal.role.allows(need) {
            Ok(())
        } else {
            Err(message_page(
                Some(self),
                StatusCode::FORBIDDEN,
                "Not allowed",
                "Your role may not use this page.",
            ))
        }
    }

    /// Checks a form's CSRF token: 403 when it is not the session's.
    fn checked(&self, form: &HashMap<String, String>) -> Result<(), Response> {
        match form.get("csrf") {
            Some(t) if same(t, &self.csrf) => Ok(()),
            _ => Err(message_page(
                Some(self),
                StatusCode::FORBIDDEN,
                "Form refused",
                "The form was not sent from this console session (or the session changed). Nothing was done.",
            )),
        }
    }

    /// A POST's form, once its CSRF token and then the role are checked.
    fn form(&self, need: Need, body: &[u8]) -> Result<HashMap<String, String>, Response> {
        let form = serde_urlencoded_form(body);
        self.checked(&form)?;
        self.allowed(need)?;
        Ok(form)
    }

    /// A hidden field with the session's CSRF token.
    fn csrf_field(&self) -> Markup {
        html! { input type="hidden" name="csrf" value=(self.csrf); }
    }
}

/// Redirects to the sign-in page.
pub(crate) struct SignIn;

impl IntoResponse for SignIn {
    fn into_response(self) -> Response {
        Redirect::to("/console/login").into_response()
    }
}

impl FromRequestParts<AppState> for Signed {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Signed, Response> {
        let Some(id) = cookie_value(&parts.headers, COOKIE).map(str::to_owned) else {
            return Err(SignIn.into_response());
        };
        let (key, csrf, flash) = {
            let mut sessions = state.console.lock();
            let now = Instant::now();
            sessions.retain(|_, s| now.duration_since(s.seen) < IDLE && now.duration_since(s.started) < LIFETIME);
            let Some(s) = sessions.get_mut(&id) else {
                return Err(SignIn.into_response());
            };
            s.seen = now;
            (s.key.clone(), s.csrf.clone(), s.flash.take())
        };
        // Every request checks the key again: a revoked client is out.
        match state.clients.authenticate(&key).await {
            Ok(principal) => Ok(Signed {
                id,
                principal,
                csrf,
                flash,
            }),
            Err(_) => {
                state.console.lock().remove(&id);
                Err(SignIn.into_response())
            }
        }
    }
}

/// The console's routes (all under `/console`), one per method and path:
/// the sign-in page, its form and the stylesheet are open; everything else
/// needs a session (`Signed`, which redirects to the sign-in page).
pub fn routes() -> Vec<(UnlistedRoute, MethodRouter<AppState>)> {
    let open = |method, path, reason| UnlistedRoute {
        method,
        path,
        access: Access::Public(reason),
    };
    let signed = |method, path| UnlistedRoute {
        method,
        path,
        access: Access::ConsoleSession,
    };
    vec![
        (
            open("GET", "/console/login", "the sign-in page: a form, no data"),
            get(login_page),
        ),
        (
            open(
                "POST",
                "/console/login",
                "the sign-in itself: checks the API key it is sent",
            ),
            post(login),
        ),
        (
            open("GET", "/console/assets/console.css", "the sign-in page's stylesheet"),
            get(css),
        ),
        (signed("POST", "/console/logout"), post(logout)),
        (signed("GET", "/console"), get(pages::search)),
        (signed("GET", "/console/customers/{token}"), get(pages::customer)),
        (
            signed("GET", "/console/customers/{token}/decisions/{position}"),
            get(pages::decision),
        ),
        (signed("POST", "/console/customers/{token}/merge"), post(pages::merge)),
        (signed("POST", "/console/customers/{token}/split"), post(pages::split)),
        (
            signed("POST", "/console/customers/{token}/override"),
            post(pages::set_override),
        ),
        (signed("GET", "/console/reviews"), get(pages::reviews)),
        (signed("GET", "/console/reviews/{id}"), get(pages::review)),
        (signed("POST", "/console/reviews/{id}"), post(pages::decide_review)),
        (signed("GET", "/console/privacy"), get(privacy::ledger)),
        (signed("POST", "/console/privacy"), post(privacy::create_request)),
        (signed("GET", "/console/privacy/requests/{id}"), get(privacy::request)),
        (
            signed("POST", "/console/privacy/requests/{id}/verify"),
            post(privacy::verify),
        ),
        (
            signed("POST", "/console/privacy/requests/{id}/erase"),
            post(privacy::erase),
        ),
        (
            signed("POST", "/console/privacy/requests/{id}/complete"),
            post(privacy::complete),
        ),
        (signed("GET", "/console/privacy/exports/{token}"), get(privacy::export)),
        (signed("GET", "/console/ops"), get(pages::ops)),
    ]
}

const CSS: &str = include_str!("console.css");

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        CSS,
    )
        .into_response()
}

/// A whole page: header and navigation for `signed`, the flash, `body`.
pub(crate) fn page(signed: Option<&Signed>, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · MDM console" }
                link rel="stylesheet" href="/console/assets/console.css";
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header {
                    span.brand { "MDM console" }
                    @if let Some(s) = signed {
                        nav aria-label="Main" {
                            a #nav-search href="/console" { "Search" }
                            @if s.principal.role.allows(Need::Steward) {
                                a #nav-reviews href="/console/reviews" { "Review queue" }
                            }
                            @if s.principal.role.allows(Need::Compliance) {
                                a #nav-privacy href="/console/privacy" { "Privacy requests" }
                            }
                            a #nav-ops href="/console/ops" { "Operations" }
                        }
                        form #logout method="post" action="/console/logout" {
                            (s.csrf_field())
                            span.who { (s.principal.name) " (" (s.principal.role.as_str()) ")" }
                            button #sign-out type="submit" { "Sign out" }
                        }
                    }
                }
                main #main {
                    @if let Some((ok, message)) = signed.and_then(|s| s.flash.as_ref()) {
                        @if *ok {
                            div.flash.ok role="status" { (message) }
                        } @else {
                            div.flash.error role="alert" { (message) }
                        }
                    }
                    (body)
                }
            }
        }
    }
}

/// An HTML answer.
pub(crate) fn html_response(status: StatusCode, markup: Markup) -> Response {
    (
        status,
        [(header::CACHE_CONTROL, "no-store"), (header::X_FRAME_OPTIONS, "DENY")],
        Html(markup.into_string()),
    )
        .into_response()
}

/// A page that only says something (errors, refusals).
pub(crate) fn message_page(signed: Option<&Signed>, status: StatusCode, title: &str, text: &str) -> Response {
    html_response(
        status,
        page(
            signed,
            title,
            html! {
                h1 { (title) }
                p { (text) }
                p { a href="/console" { "Back to search" } }
            },
        ),
    )
}

/// Calls an API handler's answer: its status, headers and JSON body.
pub(crate) async fn json_of(response: Response) -> (StatusCode, HeaderMap, Value) {
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), 64 * 1024 * 1024)
        .await
        .unwrap_or_default();
    (status, headers, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// The message for a refused command: the problem's title and detail
/// (never personal data), with the stale-page case said plainly.
pub(crate) fn refusal(status: StatusCode, problem: &Value) -> String {
    if status == StatusCode::PRECONDITION_FAILED {
        return "This customer changed since the page was loaded; nothing was applied. Look at it again and retry."
            .into();
    }
    let title = problem["title"].as_str().unwrap_or("Refused");
    let detail = problem["detail"].as_str().unwrap_or("");
    match problem["field"].as_str() {
        Some(field) => format!("{title}: {detail} (field: {field})"),
        None => format!("{title}: {detail}"),
    }
}

/// After an API command's answer: `done`, or the refusal; then to `back`.
pub(crate) async fn answered(
    state: &AppState,
    signed: &Signed,
    response: Response,
    done: &str,
    back: &str,
) -> Response {
    let (status, _, problem) = json_of(response).await;
    if status.is_success() {
        after_form(state, signed, true, done, back)
    } else {
        after_form(state, signed, false, refusal(status, &problem), back)
    }
}

/// After a form: a message for the next page, and a redirect to it.
pub(crate) fn after_form(
    state: &AppState,
    signed: &Signed,
    ok: bool,
    message: impl Into<String>,
    to: &str,
) -> Response {
    state.console.flash(&signed.id, ok, message);
    Redirect::to(to).into_response()
}

async fn login_page(State(state): State<AppState>) -> Response {
    login_form(&state, StatusCode::OK, None)
}

fn login_form(state: &AppState, status: StatusCode, error: Option<&str>) -> Response {
    let token = random_token();
    let body = html! {
        h1 { "Sign in" }
        @if let Some(e) = error {
            div.flash.error role="alert" { (e) }
        }
        form #login-form method="post" action="/console/login" {
            input type="hidden" name="csrf" value=(token);
            label for="api_key" { "API key" }
            input #api_key type="password" name="api_key" autocomplete="off" required;
            p.hint { "The key of your API client (from your administrator: " code { "mdm clients add" } ")." }
            button #sign-in type="submit" { "Sign in" }
        }
    };
    let mut response = html_response(status, page(None, "Sign in", body));
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(LOGIN_COOKIE, &token, state.secure_cookies, Some(3600)),
    );
    response
}

async fn login(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let form = serde_urlencoded_form(&body);
    let sent = form.get("csrf").map(String::as_str).unwrap_or("");
    let expected = cookie_value(&headers, LOGIN_COOKIE).unwrap_or("");
    if expected.is_empty() || !same(sent, expected) {
        return message_page(
            None,
            StatusCode::FORBIDDEN,
            "Form refused",
            "The sign-in form was not sent from this console. Open the sign-in page again.",
        );
    }
    let key = form.get("api_key").map(|k| k.trim()).unwrap_or("");
    let principal = match state.clients.authenticate(key).await {
        Ok(p) => p,
        Err(crate::auth::AuthError::Unavailable(error)) => {
            tracing::warn!(error = %error, "console sign-in: the client store does not answer");
            return login_form(
                &state,
                StatusCode::SERVICE_UNAVAILABLE,
                Some("The service cannot check keys right now; try again."),
            );
        }
        Err(_) => return login_form(&state, StatusCode::UNAUTHORIZED, Some("That key is not valid.")),
    };
    if principal.role == Role::Ingest {
        return login_form(
            &state,
            StatusCode::FORBIDDEN,
            Some("Ingest clients cannot use the console."),
        );
    }
    let id = random_token();
    let now = Instant::now();
    state.console.lock().insert(
        id.clone(),
        Session {
            key: key.to_owned(),
            csrf: random_token(),
            started: now,
            seen: now,
            flash: None,
        },
    );
    tracing::info!(client = %principal.client_id, "console sign-in");
    let mut response = Redirect::to("/console").into_response();
    response
        .headers_mut()
        .append(header::SET_COOKIE, set_cookie(COOKIE, &id, state.secure_cookies, None));
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(LOGIN_COOKIE, "", state.secure_cookies, Some(0)),
    );
    response
}

async fn logout(State(state): State<AppState>, signed: Signed, body: Bytes) -> Response {
    let form: HashMap<String, String> = serde_urlencoded_form(&body);
    if let Err(r) = signed.checked(&form) {
        return r;
    }
    state.console.lock().remove(&signed.id);
    let mut response = Redirect::to("/console/login").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(COOKIE, "", state.secure_cookies, Some(0)),
    );
    response
}

/// A form body (`application/x-www-form-urlencoded`) as a map; repeated
/// names: the last wins. A body that does not decode is an empty form
/// (which no CSRF check passes).
fn serde_urlencoded_form(body: &[u8]) -> HashMap<String, String> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
        .unwrap_or_default()
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_decode_and_tokens_compare() {
        let form = serde_urlencoded_form(b"a=1+2&b=%C3%A9t%C3%A9&c=&d=100%25&e=%zz");
        assert_eq!(form["a"], "1 2");
        assert_eq!(form["b"], "été");
        assert_eq!(form["c"], "");
        assert_eq!(form["d"], "100%");
        assert_eq!(form["e"], "%zz");
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "ab"));
        let t = random_token();
        assert_eq!(t.len(), 64);
        assert_ne!(t, random_token());
    }

    #[test]
    fn cookies_are_read_by_name_and_written_strict() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("x=1; mdm_console=abc; y=2"));
        assert_eq!(cookie_value(&h, COOKIE), Some("abc"));
        assert_eq!(cookie_value(&h, "z"), None);
        let c = set_cookie(COOKIE, "v", true, None);
        let c = c.to_str().expect("ascii");
        assert!(
            c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Secure"),
            "{c}"
        );
        assert!(!set_cookie(COOKIE, "v", false, None)
            .to_str()
            .expect("ascii")
            .contains("Secure"));
    }
}
