//! Webhooks over real HTTP against the real binary, on SQLite and
//! PostgreSQL, with a receiver served by the test: registration checks its
//! input; a receiver that goes away for a while still gets every change,
//! once, in log order, signed; changes it refuses past the retry limit
//! become dead letters, delivery goes on after them, and a replay delivers
//! them.

mod change_log;
mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use change_log::{expected, ingest, ingest_last, person, read_db};
use common::{add_client, api, client_with, start, terminate, Backend, Deployment};
use hmac::{Hmac, Mac};
use mdm_api::auth::Scopes;
use mdm_projections::changes::{ChangeCursor, ChangeType};
use serde_json::{json, Value};
use sha2::Sha256;

const SECRET: &str = "whsec-test-0123456789abcdef";

/// One request the receiver accepted.
#[derive(Clone, Debug)]
struct Delivery {
    id: String,
    signature: String,
    content_type: String,
    body: Vec<u8>,
}

/// A webhook receiver: records what it accepts; refuses (500) while
/// `reject` is set.
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Delivery>>>,
    reject: Arc<AtomicBool>,
    refused: Arc<AtomicUsize>,
}

impl Receiver {
    fn ids(&self) -> Vec<String> {
        self.got.lock().expect("lock").iter().map(|d| d.id.clone()).collect()
    }

    /// Waits until the receiver has accepted every id in `ids`.
    async fn wait_for(&self, ids: &[String]) {
        for _ in 0..1200 {
            let have: BTreeSet<String> = self.ids().into_iter().collect();
            if ids.iter().all(|id| have.contains(id)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the receiver never got {ids:?}; it has {:?}", self.ids());
    }
}

async fn hook(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    if r.reject.load(Ordering::SeqCst) {
        r.refused.fetch_add(1, Ordering::SeqCst);
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    r.got.lock().expect("lock").push(Delivery {
        id: header("webhook-id"),
        signature: header("webhook-signature"),
        content_type: header("content-type"),
        body: body.to_vec(),
    });
    StatusCode::OK
}

/// Serves the receiver on `port` (0: any) until `stop` fires; returns the
/// port and the server task.
async fn serve(receiver: Receiver, port: u16) -> (u16, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_reuseaddr(true).expect("reuseaddr");
    socket
        .bind(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .expect("bind the receiver");
    let listener = socket.listen(64).expect("listen");
    let port = listener.local_addr().expect("addr").port();
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(hook))
        .with_state(receiver);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await;
    });
    (port, stop, task)
}

/// Checks `Webhook-Signature: t=<t>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
fn signed(d: &Delivery, secret: &str) -> bool {
    let Some((t, v1)) = d.signature.split_once(",v1=") else {
        return false;
    };
    let Some(t) = t.strip_prefix("t=") else { return false };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(&d.body);
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    hex == v1
        && t.parse::<i64>()
            .is_ok_and(|t| (chrono::Utc::now().timestamp() - t).abs() < 600)
}

fn deployment(backend: Backend, purpose: &str, settings: &[(&str, &str)]) -> (Deployment, Vec<(String, String)>) {
    let mut d = Deployment::new(backend, purpose);
    for (k, v) in settings {
        d.extra.push(((*k).to_owned(), (*v).to_owned()));
    }
    let env = d.env();
    (d, env)
}

fn pairs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

async fn post(http: &reqwest::Client, url: &str, body: Value) -> (u16, reqwest::header::HeaderMap, Value) {
    let r = http.post(url).json(&body).send().await.expect("answers");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap_or_default();
    (status, headers, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn get(http: &reqwest::Client, url: &str) -> (u16, Value) {
    let r = http.get(url).send().await.expect("answers");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn a_receiver_outage_delays_but_loses_nothing(backend: Backend) {
    let (d, env) = deployment(
        backend,
        "webhooks",
        &[
            ("MDM_WEBHOOK_RETRY_BASE_MS", "50"),
            ("MDM_WEBHOOK_RETRY_CAP_MS", "300"),
            ("MDM_WEBHOOK_MAX_ATTEMPTS", "200"),
            ("MDM_WEBHOOK_TIMEOUT_MS", "2000"),
            ("MDM_WEBHOOK_POLL_MS", "100"),
        ],
    );
    let env = pairs(&env);
    let reader_key = add_client(d.dir.path(), &env, "reader", "reader", None);
    let receiver = Receiver::default();
    let (port, stop, task) = serve(receiver.clone(), 0).await;
    let (mut child, addr) = start(d.dir.path(), &env);
    let admin = api(&addr);
    let hooks = format!("http://{addr}/v1/webhooks");
    let url = format!("http://127.0.0.1:{port}/hook");

    // Input is checked at the edge, naming the field.
    for (body, field) in [
        (json!({"url": "ftp://127.0.0.1/x", "secret": SECRET}), "url"),
        (json!({"url": "not a url", "secret": SECRET}), "url"),
        (json!({"secret": SECRET}), "url"),
        (json!({"url": url}), "secret"),
        (json!({"url": url, "secret": "short"}), "secret"),
        (
            json!({"url": url, "secret": SECRET, "types": ["created", "deleted"]}),
            "types",
        ),
        (json!({"url": url, "secret": SECRET, "types": "created"}), "types"),
        (
            json!({"url": url, "secret": SECRET, "scopes": ["name", "salary"]}),
            "scopes",
        ),
        (json!({"url": url, "secret": SECRET, "after": "x:1"}), "after"),
        (json!({"url": url, "secret": SECRET, "colour": "blue"}), "colour"),
    ] {
        let (status, headers, problem) = post(&admin, &hooks, body).await;
        assert_eq!(status, 400, "{problem}");
        assert_eq!(headers["content-type"], "application/problem+json");
        assert_eq!(problem["field"], field, "{problem}");
        assert!(!problem.to_string().contains(SECRET));
    }
    let (status, _, _) = post(&client_with(&reader_key), &hooks, json!({"url": url, "secret": SECRET})).await;
    assert_eq!(status, 403, "only admins manage webhooks");

    ingest(
        &admin,
        &addr,
        &(0..6).map(|i| person("A", i, "example.test")).collect::<Vec<_>>(),
    )
    .await;
    let (status, headers, created) = post(&admin, &hooks, json!({"url": url, "secret": SECRET, "after": "0"})).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    assert_eq!(headers["location"], format!("/v1/webhooks/{id}").as_str());
    assert!(!created.to_string().contains(SECRET), "the secret is never shown");

    // Deliveries start; then the receiver goes away while changes go on.
    for _ in 0..600 {
        if !receiver.ids().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!receiver.ids().is_empty(), "deliveries started");
    let _ = stop.send(());
    task.await.expect("receiver stopped");
    let before_outage = receiver.ids().len();
    ingest(
        &admin,
        &addr,
        &(0..8).map(|i| person("B", i, "example.test")).collect::<Vec<_>>(),
    )
    .await;
    ingest(
        &admin,
        &addr,
        &(0..4).map(|i| person("A", i, "moved.example")).collect::<Vec<_>>(),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, list) = get(&admin, &hooks).await;
    assert!(
        matches!(
            list["webhooks"][0]["last_error"].as_str(),
            Some("connection failed" | "request failed")
        ),
        "the listing says why deliveries fail: {list}"
    );
    // Back on the same port.
    let (_, stop, _task) = serve(receiver.clone(), port).await;
    ingest_last(&admin, &addr, &person("C", 0, "example.test")).await;

    let db = read_db(backend, &d).await;
    let want = expected(&db, None, &Scopes::all()).await;
    let want_ids: Vec<String> = want.iter().map(|e| e["id"].as_str().expect("id").to_owned()).collect();
    receiver.wait_for(&want_ids).await;
    let got = receiver.got.lock().expect("lock").clone();
    assert!(got.len() > before_outage, "deliveries resumed after the outage");
    let ids: Vec<&str> = got.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(
        ids.iter().copied().collect::<BTreeSet<_>>().len(),
        ids.len(),
        "no change was delivered twice"
    );
    let cursors: Vec<ChangeCursor> = ids.iter().map(|id| ChangeCursor::parse(id).expect("cursor")).collect();
    assert!(
        cursors.windows(2).all(|w| w[0] < w[1]),
        "log order (so each customer's changes in order)"
    );
    assert_eq!(ids, want_ids, "every change, nothing else");
    for (delivery, want) in got.iter().zip(&want) {
        assert!(signed(delivery, SECRET), "{} is signed with the secret", delivery.id);
        assert!(!signed(delivery, "another-secret-entirely"));
        assert_eq!(delivery.content_type, "application/cloudevents+json");
        let body: Value = serde_json::from_slice(&delivery.body).expect("json");
        assert_eq!(&body, want, "the body is the change's CloudEvent");
        assert_eq!(body["id"].as_str(), Some(delivery.id.as_str()));
    }

    // The listing shows progress, never the secret; the stored secret is sealed.
    let (status, list) = get(&admin, &hooks).await;
    assert_eq!(status, 200);
    let entry = &list["webhooks"][0];
    assert_eq!(entry["id"], id.as_str());
    assert_eq!(entry["checkpoint"], want_ids.last().expect("ids").as_str(), "{entry}");
    assert_eq!(entry["delivered"], want_ids.len() as i64);
    assert_eq!(entry["dead_letters"], 0);
    assert!(!list.to_string().contains(SECRET));
    let (stored,): (String,) = sqlx::query_as("SELECT secret FROM webhook_subscriber")
        .fetch_one(db.pool())
        .await
        .expect("row");
    assert!(
        !stored.contains(SECRET) && !stored.contains("whsec"),
        "the secret is not stored in clear"
    );

    // Deleting stops it.
    let r = admin.delete(format!("{hooks}/{id}")).send().await.expect("answers");
    assert_eq!(r.status(), 204);
    let r = admin.delete(format!("{hooks}/{id}")).send().await.expect("answers");
    assert_eq!(r.status(), 404);
    let (status, _) = get(&admin, &format!("{hooks}/{id}/dead-letters")).await;
    assert_eq!(status, 404);
    let (_, list) = get(&admin, &hooks).await;
    assert_eq!(list["webhooks"], json!([]));
    let _ = stop.send(());
    assert!(terminate(&mut child).success());
}

async fn refused_changes_become_dead_letters_and_a_replay_delivers_them(backend: Backend) {
    let (d, env) = deployment(
        backend,
        "webhooks_dead",
        &[
            ("MDM_WEBHOOK_RETRY_BASE_MS", "20"),
            ("MDM_WEBHOOK_RETRY_CAP_MS", "50"),
            ("MDM_WEBHOOK_MAX_ATTEMPTS", "2"),
            ("MDM_WEBHOOK_POLL_MS", "100"),
        ],
    );
    let env = pairs(&env);
    let receiver = Receiver::default();
    receiver.reject.store(true, Ordering::SeqCst);
    let (port, stop, _task) = serve(receiver.clone(), 0).await;
    let (mut child, addr) = start(d.dir.path(), &env);
    let admin = api(&addr);
    let hooks = format!("http://{addr}/v1/webhooks");
    let (status, _, created) = post(
        &admin,
        &hooks,
        json!({
            "url": format!("http://127.0.0.1:{port}/hook"),
            "secret": SECRET,
            "types": ["created", "updated"],
            "scopes": ["name"],
        }),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["types"], json!(["created", "updated"]));
    assert_eq!(created["scopes"], json!(["name"]));
    let id = created["id"].as_str().expect("id").to_owned();
    let letters = format!("{hooks}/{id}/dead-letters");

    // Everything is refused: each change is tried twice, then buried.
    ingest(
        &admin,
        &addr,
        &(0..3).map(|i| person("A", i, "example.test")).collect::<Vec<_>>(),
    )
    .await;
    ingest_last(&admin, &addr, &person("A", 3, "example.test")).await;
    let db = read_db(backend, &d).await;
    let types = [ChangeType::Created, ChangeType::Updated];
    let scopes = Scopes::parse("name").expect("scopes");
    let dead = expected(&db, Some(&types), &scopes).await;
    let dead_ids: Vec<String> = dead.iter().map(|e| e["id"].as_str().expect("id").to_owned()).collect();
    assert!(!dead_ids.is_empty());
    let mut listed = Value::Null;
    for _ in 0..600 {
        let (status, body) = get(&admin, &letters).await;
        assert_eq!(status, 200);
        if body["dead_letters"].as_array().map(Vec::len) == Some(dead_ids.len()) {
            listed = body;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let listed = listed["dead_letters"]
        .as_array()
        .expect("every refused change is a dead letter")
        .clone();
    let listed_ids: Vec<&str> = listed.iter().filter_map(|l| l["id"].as_str()).collect();
    assert_eq!(listed_ids, dead_ids.iter().map(String::as_str).collect::<Vec<_>>());
    for letter in &listed {
        assert_eq!(letter["attempts"], 2, "{letter}");
        assert_eq!(letter["last_status"], 500);
        assert_eq!(letter["last_error"], "HTTP 500");
        assert_eq!(letter["replay_requested"], false);
        assert!(letter["token"].is_string());
        assert!(matches!(letter["type"].as_str(), Some("created" | "updated")));
    }
    assert_eq!(receiver.refused.load(Ordering::SeqCst), 2 * dead_ids.len());
    assert!(receiver.ids().is_empty());

    // The receiver recovers: delivery goes on after the dead letters...
    receiver.reject.store(false, Ordering::SeqCst);
    ingest_last(&admin, &addr, &person("B", 0, "example.test")).await;
    let all = expected(&db, Some(&types), &scopes).await;
    let later: Vec<String> = all
        .iter()
        .filter_map(|e| e["id"].as_str())
        .filter(|id| !dead_ids.iter().any(|d| d == id))
        .map(str::to_owned)
        .collect();
    assert!(!later.is_empty());
    receiver.wait_for(&later).await;
    assert_eq!(receiver.ids(), later, "the dead letters stay dead until replayed");

    // ...and a replay delivers the dead letters, oldest first.
    let (status, _, replay) = post(&admin, &format!("{letters}/replay"), json!({})).await;
    assert_eq!(status, 202, "{replay}");
    assert_eq!(replay["requeued"], dead_ids.len() as i64);
    receiver.wait_for(&dead_ids).await;
    let got = receiver.got.lock().expect("lock").clone();
    let replayed: Vec<&str> = got[later.len()..].iter().map(|d| d.id.as_str()).collect();
    assert_eq!(replayed, dead_ids.iter().map(String::as_str).collect::<Vec<_>>());
    let want: std::collections::BTreeMap<&str, &Value> =
        all.iter().map(|e| (e["id"].as_str().unwrap_or_default(), e)).collect();
    for delivery in &got {
        assert!(signed(delivery, SECRET));
        let body: Value = serde_json::from_slice(&delivery.body).expect("json");
        assert_eq!(
            Some(&&body),
            want.get(delivery.id.as_str()),
            "scoped body of {}",
            delivery.id
        );
        let attributes = body["data"]["attributes"].as_object().expect("attributes");
        assert!(attributes.keys().all(|k| k == "name"), "only the subscriber's scopes");
    }
    for _ in 0..200 {
        let (_, body) = get(&admin, &letters).await;
        if body["dead_letters"] == json!([]) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, body) = get(&admin, &letters).await;
    assert_eq!(body["dead_letters"], json!([]), "replayed letters are gone");
    let (_, list) = get(&admin, &hooks).await;
    assert_eq!(list["webhooks"][0]["delivered"], all.len() as i64);
    let _ = stop.send(());
    assert!(terminate(&mut child).success());
}

/// An erasure reaches a webhook subscriber as an `erased` change naming the
/// request; the ledger lists the subscriber as notified; its receiver
/// acknowledges with a request signed by the subscriber's secret (no API
/// key), and nothing else acknowledges for it.
async fn a_webhook_receiver_acknowledges_an_erasure_notice(backend: Backend) {
    let (d, env) = deployment(backend, "webhooks_ack", &[("MDM_WEBHOOK_POLL_MS", "100")]);
    let env = pairs(&env);
    let receiver = Receiver::default();
    let (port, stop, _task) = serve(receiver.clone(), 0).await;
    let (mut child, addr) = start(d.dir.path(), &env);
    let admin = api(&addr);
    let compliance = client_with(&add_client(d.dir.path(), &env, "privacy-1", "compliance", None));
    let (status, _, created) = post(
        &admin,
        &format!("http://{addr}/v1/webhooks"),
        json!({"url": format!("http://127.0.0.1:{port}/hook"), "secret": SECRET, "types": ["erased"]}),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let hook_id = created["id"].as_str().expect("id").to_owned();
    let token = ingest_last(&admin, &addr, &person("E", 0, "example.test")).await;

    let (status, _, request) = post(
        &compliance,
        &format!("http://{addr}/v1/privacy/requests"),
        json!({"kind": "erasure", "token": token}),
    )
    .await;
    assert_eq!(status, 201, "{request}");
    let request_id = request["request_id"].as_str().expect("id").to_owned();
    let (status, _, _) = post(
        &compliance,
        &format!("http://{addr}/v1/privacy/requests/{request_id}/verify"),
        json!({"method": "signed-in account"}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _, erased) = post(
        &compliance,
        &format!("http://{addr}/v1/privacy/erasures"),
        json!({"token": token, "request_id": request_id, "legal_basis": "CCPA 1798.105"}),
    )
    .await;
    assert_eq!(status, 200, "{erased}");
    assert!(
        erased["notices"]
            .as_array()
            .is_some_and(|n| n.iter().any(|n| n["kind"] == "webhook" && n["id"] == hook_id.as_str())),
        "{erased}"
    );

    // The notice arrives as an `erased` change naming the request.
    let mut notice = Value::Null;
    for _ in 0..600 {
        if let Some(d) = receiver.got.lock().expect("lock").first().cloned() {
            assert!(signed(&d, SECRET));
            notice = serde_json::from_slice(&d.body).expect("json");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(notice["type"], "com.mdm.customer.erased", "{notice}");
    assert_eq!(notice["data"]["detail"]["request_id"], request_id.as_str(), "{notice}");

    // The receiver acknowledges, signed like the deliveries it gets.
    let ack = format!("http://{addr}/v1/webhooks/{hook_id}/acknowledge");
    let body = serde_json::to_vec(&json!({"request_id": request_id})).expect("json");
    let sign = |secret: &str, t: i64, body: &[u8]| {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
        format!("t={t},v1={hex}")
    };
    let plain = reqwest::Client::new();
    let send = |signature: Option<String>, body: Vec<u8>| {
        let mut req = plain.post(&ack).header("content-type", "application/json").body(body);
        if let Some(s) = signature {
            req = req.header("webhook-signature", s);
        }
        async move {
            let r = req.send().await.expect("answers");
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let now = chrono::Utc::now().timestamp();
    for (signature, what) in [
        (None, "unsigned"),
        (Some(sign("another-secret-0123456789", now, &body)), "another secret"),
        (Some(sign(SECRET, now - 3600, &body)), "an hour old"),
        (Some(sign(SECRET, now, b"{}")), "another body"),
    ] {
        let (status, problem) = send(signature, body.clone()).await;
        assert_eq!(
            (status, problem["field"].as_str()),
            (401, Some("Webhook-Signature")),
            "{what}: {problem}"
        );
    }
    let (status, _) = admin
        .post(&ack)
        .json(&json!({"request_id": request_id}))
        .send()
        .await
        .map(|r| (r.status().as_u16(), ()))
        .expect("answers");
    assert_eq!(status, 401, "an API key does not sign for a subscriber");
    let (status, answer) = send(Some(sign(SECRET, now, &body)), body.clone()).await;
    assert_eq!(status, 200, "{answer}");
    let (status, problem) = send(Some(sign(SECRET, now, &body)), body.clone()).await;
    assert_eq!(
        (status, problem["field"].as_str()),
        (409, Some("recipient")),
        "{problem}"
    );
    let other = serde_json::to_vec(&json!({"request_id": uuid::Uuid::new_v4()})).expect("json");
    let (status, problem) = send(Some(sign(SECRET, now, &other)), other.clone()).await;
    assert_eq!(
        (status, problem["field"].as_str()),
        (404, Some("request_id")),
        "{problem}"
    );
    let mut shown = Value::Null;
    for _ in 0..400 {
        let (_, r) = get(&compliance, &format!("http://{addr}/v1/privacy/requests/{request_id}")).await;
        shown = r;
        let acked = shown["notices"].as_array().is_some_and(|ns| {
            ns.iter().any(|n| {
                n["recipient"]["kind"] == "webhook"
                    && n["recipient"]["id"] == hook_id.as_str()
                    && n["acknowledged_by"] == format!("webhook {hook_id}")
            })
        });
        if acked {
            break;
        }
        shown = Value::Null;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!shown.is_null(), "the ledger shows the webhook's acknowledgement");
    let _ = stop.send(());
    assert!(terminate(&mut child).success());
}

on_both_backends!(
    a_receiver_outage_delays_but_loses_nothing,
    refused_changes_become_dead_letters_and_a_replay_delivers_them,
    a_webhook_receiver_acknowledges_an_erasure_notice,
);
