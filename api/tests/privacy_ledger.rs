//! The privacy request ledger over real HTTP and the real `mdm` binary, on
//! SQLite and PostgreSQL: a request received, verified, extended once (the
//! due date moves from 45 to 90 days after receipt) and completed; the
//! ledger's refusals (409 closed / extended / acknowledged already, 422 not
//! verified / not notified, 400 naming the field); notices and their
//! acknowledgement; lists with filters and cursors from the read model;
//! overdue requests (received 50 days ago, appended to the log directly:
//! the API cannot backdate); the compliance role alone (and admin) may use
//! it; and `mdm privacy requests`.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use common::{add_client, client_with, json_lines, mdm, start, terminate, Backend, Deployment};
use mdm_api::privacy::{self, Caller, Command};
use mdm_domain::metadata::Actor;
use mdm_domain::privacy::RequestKind;
use serde_json::{json, Value};

struct Api {
    addr: String,
    http: reqwest::Client,
}

impl Api {
    fn new(addr: &str, key: &str) -> Api {
        Api {
            addr: addr.to_owned(),
            http: client_with(key),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.http.get(self.url(path)).send().await.expect("answers");
        let status = r.status().as_u16();
        let text = r.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .expect("answers");
        let status = r.status().as_u16();
        let text = r.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Posts a command on request `id` and expects `want`.
    async fn command(&self, id: &str, what: &str, body: Value, want: u16) -> Value {
        let (status, answer) = self.post(&format!("/v1/privacy/requests/{id}/{what}"), body).await;
        assert_eq!(status, want, "{what}: {answer}");
        answer
    }

    /// Waits until the read model answers `path` with 200 and a body that
    /// satisfies `ready` (the projection follows the log on its own).
    async fn until(&self, path: &str, ready: impl Fn(&Value) -> bool) -> Value {
        let mut last = Value::Null;
        for _ in 0..300 {
            let (status, body) = self.get(path).await;
            if status == 200 && ready(&body) {
                return body;
            }
            last = body;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{path} never became ready: {last}");
    }
}

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| panic!("not a time: {v}"))
}

fn env_refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// The problem's status and field.
fn problem(status: u16, body: &Value) -> (u16, &str) {
    (status, body["field"].as_str().unwrap_or(""))
}

fn ids(page: &Value) -> Vec<String> {
    page["requests"]
        .as_array()
        .expect("requests")
        .iter()
        .map(|r| r["request_id"].as_str().expect("id").to_owned())
        .collect()
}

/// Create, verify, extend (45 to 90 days), a second extension refused,
/// complete; an unverified completion refused; a denial needs its basis;
/// notices and acknowledgements; reads and lists from the read model.
async fn a_request_is_received_verified_extended_and_completed(backend: Backend) {
    let d = Deployment::new(backend, "privacy_flow");
    let env = d.env();
    let env = env_refs(&env);
    let key = add_client(d.dir.path(), &env, "privacy-officer", "compliance", None);
    let (mut child, addr) = start(d.dir.path(), &env);
    let api = Api::new(&addr, &key);

    let token = uuid::Uuid::new_v4();
    let r = api
        .http
        .post(api.url("/v1/privacy/requests"))
        .json(&json!({"kind": "erasure", "token": token}))
        .send()
        .await
        .expect("answers");
    assert_eq!(r.status(), 201);
    let location = r.headers()["location"].to_str().expect("text").to_owned();
    let created: Value = r.json().await.expect("json");
    let id = created["request_id"].as_str().expect("an id").to_owned();
    assert_eq!(location, format!("/v1/privacy/requests/{id}"));
    assert_eq!(created["kind"], "erasure");
    assert_eq!(created["token"], json!(token));
    assert_eq!(created["status"], "open");
    assert_eq!(created["received_by"], "privacy-officer");
    assert_eq!(created["overdue"], false);
    assert_eq!(created["notices"], json!([]));
    let received = time(&created["received_at"]);
    assert_eq!(time(&created["due_at"]), received + TimeDelta::days(45));

    // Only a verified request completes.
    let refused = api.command(&id, "complete", json!({"outcome": "erased"}), 422).await;
    assert_eq!(refused["field"], "request_id");
    assert_eq!(refused["status"], 422);

    let verified = api
        .command(&id, "verify", json!({"method": "call-back to the number on file"}), 200)
        .await;
    assert_eq!(verified["verified_by"], "privacy-officer");
    assert_eq!(verified["verification_method"], "call-back to the number on file");
    let again = api.command(&id, "verify", json!({"method": "again"}), 409).await;
    assert_eq!(again["field"], "request_id");
    let missing = api.command(&id, "verify", json!({}), 400).await;
    assert_eq!(missing["field"], "method");

    // One extension: the due date moves to 90 days after receipt.
    let empty = api.command(&id, "extend", json!({"reason": " "}), 400).await;
    assert_eq!(empty["field"], "reason");
    let extended = api
        .command(
            &id,
            "extend",
            json!({"reason": "the requester asked for more time"}),
            200,
        )
        .await;
    assert_eq!(time(&extended["due_at"]), received + TimeDelta::days(90));
    assert_eq!(time(&extended["received_at"]), received);
    assert_eq!(extended["extension_reason"], "the requester asked for more time");
    let twice = api.command(&id, "extend", json!({"reason": "again"}), 409).await;
    assert_eq!(twice["field"], "request_id");
    assert!(
        twice["detail"].as_str().is_some_and(|d| d.contains("one extension")),
        "{twice}"
    );

    // Notices: recorded once per recipient, acknowledged once.
    let finance = json!({"recipient": {"kind": "source_system", "id": "finance"}});
    let hook = json!({"recipient": {"kind": "webhook", "id": uuid::Uuid::new_v4()}});
    let not_sent = api.command(&id, "notices/acknowledge", hook.clone(), 422).await;
    assert_eq!(not_sent["field"], "recipient");
    let bad = api
        .command(&id, "notices", json!({"recipient": {"kind": "fax", "id": "x"}}), 400)
        .await;
    assert_eq!(bad["field"], "recipient.kind");
    let bad = api
        .command(
            &id,
            "notices",
            json!({"recipient": {"kind": "webhook", "id": "x"}}),
            400,
        )
        .await;
    assert_eq!(bad["field"], "recipient.id");
    let notified = api.command(&id, "notices", finance.clone(), 200).await;
    assert_eq!(notified["notices"].as_array().map(Vec::len), Some(1));
    assert_eq!(notified["notices"][0]["recipient"], finance["recipient"]);
    assert_eq!(notified["notices"][0]["acknowledged_at"], Value::Null);
    let acknowledged = api.command(&id, "notices/acknowledge", finance.clone(), 200).await;
    assert_eq!(acknowledged["notices"][0]["acknowledged_by"], "privacy-officer");
    let twice = api.command(&id, "notices/acknowledge", finance.clone(), 409).await;
    assert_eq!(twice["field"], "recipient");

    let completed = api
        .command(&id, "complete", json!({"outcome": "erased 3 source records"}), 200)
        .await;
    assert_eq!(completed["status"], "completed");
    assert_eq!(completed["outcome"], "erased 3 source records");
    let closed_at = time(&completed["closed_at"]);
    assert_eq!(
        Some(time(&completed["retained_until"])),
        closed_at.checked_add_months(chrono::Months::new(24))
    );
    let closed = api.command(&id, "deny", json!({"basis": "too late"}), 409).await;
    assert_eq!(closed["field"], "request_id");
    assert_eq!(closed["title"], "Request closed");

    // A denial needs its basis.
    let (status, second) = api.post("/v1/privacy/requests", json!({"kind": "right_to_know"})).await;
    assert_eq!(status, 201, "{second}");
    let second_id = second["request_id"].as_str().expect("an id").to_owned();
    assert_eq!(second["token"], Value::Null);
    let missing = api.command(&second_id, "deny", json!({}), 400).await;
    assert_eq!(missing["field"], "basis");
    let blank = api.command(&second_id, "deny", json!({"basis": "  "}), 400).await;
    assert_eq!(blank["field"], "basis");
    let denied = api
        .command(
            &second_id,
            "deny",
            json!({"basis": "identity could not be verified"}),
            200,
        )
        .await;
    assert_eq!(denied["status"], "denied");
    assert_eq!(denied["outcome"], "identity could not be verified");

    // Bad bodies and unknown requests.
    let (status, body) = api.post("/v1/privacy/requests", json!({"kind": "forget-me"})).await;
    assert_eq!(problem(status, &body), (400, "kind"));
    let (status, body) = api
        .post("/v1/privacy/requests", json!({"kind": "erasure", "name": "x"}))
        .await;
    assert_eq!(problem(status, &body), (400, "name"));
    let unknown = uuid::Uuid::new_v4();
    let (status, body) = api.get(&format!("/v1/privacy/requests/{unknown}")).await;
    assert_eq!(
        problem(status, &body),
        (404, "request_id"),
        "{}",
        std::fs::read_to_string(d.dir.path().join("serve.log")).unwrap_or_default()
    );
    let body = api
        .command(&unknown.to_string(), "verify", json!({"method": "x"}), 404)
        .await;
    assert_eq!(body["field"], "request_id");
    let (status, body) = api.get("/v1/privacy/requests/not-a-uuid").await;
    assert_eq!(problem(status, &body), (400, "request_id"));

    // The read model catches up: the request with its notices.
    let read = api
        .until(&format!("/v1/privacy/requests/{id}"), |b| b["status"] == "completed")
        .await;
    assert_eq!(read["notices"], acknowledged["notices"]);
    assert_eq!(read["due_at"], extended["due_at"]);
    assert_eq!(read["retained_until"], completed["retained_until"]);
    assert_eq!(read["verified_by"], "privacy-officer");

    // Lists, filters and cursors.
    let all = api
        .until("/v1/privacy/requests", |b| {
            b["requests"].as_array().is_some_and(|r| r.len() == 2) && b["requests"][1]["status"] == "denied"
        })
        .await;
    assert_eq!(ids(&all), [id.as_str(), second_id.as_str()]);
    assert_eq!(all["next"], Value::Null);
    assert!(all["requests"][0].get("notices").is_none(), "lists carry no notices");
    assert_eq!(all["requests"][0]["overdue"], false);
    let (_, denied) = api.get("/v1/privacy/requests?status=denied").await;
    assert_eq!(ids(&denied), [second_id.as_str()]);
    let (_, erasures) = api.get("/v1/privacy/requests?kind=erasure").await;
    assert_eq!(ids(&erasures), [id.as_str()]);
    let (_, overdue) = api.get("/v1/privacy/requests?overdue=true").await;
    assert_eq!(ids(&overdue), Vec::<String>::new());
    let (_, first) = api.get("/v1/privacy/requests?limit=1").await;
    assert_eq!(ids(&first), [id.as_str()]);
    let cursor = first["next"].as_str().expect("a next page").to_owned();
    let (status, rest) = api
        .get(&format!(
            "/v1/privacy/requests?limit=1&cursor={}",
            cursor.replace(':', "%3A").replace('+', "%2B")
        ))
        .await;
    assert_eq!(status, 200, "{rest}");
    assert_eq!(ids(&rest), [second_id.as_str()]);
    assert_eq!(rest["next"], Value::Null);
    for (query, field) in [
        ("status=closed", "status"),
        ("kind=other", "kind"),
        ("overdue=yes", "overdue"),
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("cursor=nope", "cursor"),
    ] {
        let (status, body) = api.get(&format!("/v1/privacy/requests?{query}")).await;
        assert_eq!(problem(status, &body), (400, field), "{query}");
    }
    assert!(terminate(&mut child).success());
}

/// Only the compliance role (and admin, who may do everything) uses the
/// ledger: readers, stewards and ingest clients get 403.
async fn only_compliance_uses_the_ledger(backend: Backend) {
    let d = Deployment::new(backend, "privacy_roles");
    let env = d.env();
    let env = env_refs(&env);
    let keys: Vec<(&str, String)> = ["reader", "steward", "ingest", "compliance", "admin"]
        .into_iter()
        .map(|role| {
            (
                role,
                add_client(d.dir.path(), &env, &format!("role-{role}"), role, None),
            )
        })
        .collect();
    let (mut child, addr) = start(d.dir.path(), &env);
    let mut created = String::new();
    for (role, key) in &keys {
        let api = Api::new(&addr, key);
        let allowed = matches!(*role, "compliance" | "admin");
        let (status, body) = api.post("/v1/privacy/requests", json!({"kind": "erasure"})).await;
        if allowed {
            assert_eq!(status, 201, "{role}: {body}");
            created = body["request_id"].as_str().expect("an id").to_owned();
        } else {
            assert_eq!(status, 403, "{role}: {body}");
        }
        let (status, _) = api.get("/v1/privacy/requests").await;
        assert_eq!(status, if allowed { 200 } else { 403 }, "{role} lists");
    }
    // A request created by one is refused to the others, whatever the command.
    for (role, key) in keys.iter().filter(|(r, _)| !matches!(*r, "compliance" | "admin")) {
        let api = Api::new(&addr, key);
        let (status, _) = api.get(&format!("/v1/privacy/requests/{created}")).await;
        assert_eq!(status, 403, "{role} reads");
        for what in ["verify", "extend", "complete", "deny", "notices", "notices/acknowledge"] {
            let (status, _) = api
                .post(&format!("/v1/privacy/requests/{created}/{what}"), json!({}))
                .await;
            assert_eq!(status, 403, "{role} {what}");
        }
    }
    assert!(terminate(&mut child).success());
}

/// The event store of a deployment, opened in this process (the service
/// must not run on SQLite: one process holds the embedded log).
async fn open_store(d: &Deployment) -> std::sync::Arc<dyn mdm_store::EventStore> {
    let mut env: BTreeMap<String, String> = d.env().into_iter().collect();
    env.insert(
        "MDM_DATA_DIR".into(),
        d.dir.path().join("mdm-data").display().to_string(),
    );
    let config = mdm_api::config::Config::from_sources(None, &env).expect("config");
    mdm_api::compose::open_event_store(&config).await.expect("store")
}

/// A request received 50 days ago and still open is overdue; one received
/// then but extended is not, nor is one received now. The API cannot
/// backdate a receipt, so these are appended to the log directly, through
/// the same commands the API runs, with an earlier clock.
async fn a_request_received_50_days_ago_is_overdue(backend: Backend) {
    let d = Deployment::new(backend, "privacy_overdue");
    let env = d.env();
    let env = env_refs(&env);
    let key = add_client(d.dir.path(), &env, "privacy-officer", "compliance", None);
    let caller = Caller {
        actor: Actor::Operator,
        by: "compliance-test".into(),
    };
    let now = Utc::now();
    let days_ago = |n: i64| now - TimeDelta::days(n);
    let store = open_store(&d).await;
    let late = privacy::receive(store.as_ref(), RequestKind::Erasure, None, &caller, days_ago(50))
        .await
        .expect("received");
    let extended = privacy::receive(store.as_ref(), RequestKind::RightToKnow, None, &caller, days_ago(50))
        .await
        .expect("received");
    let extend = Command::Extend {
        reason: "the requester asked for more time".into(),
    };
    privacy::run(store.as_ref(), extended.request_id, &extend, &caller, days_ago(40))
        .await
        .expect("extended");
    let fresh = privacy::receive(store.as_ref(), RequestKind::Erasure, None, &caller, now)
        .await
        .expect("received");
    store.close().await;
    drop(store);

    let (mut child, addr) = start(d.dir.path(), &env);
    let api = Api::new(&addr, &key);
    let overdue = api
        .until("/v1/privacy/requests?overdue=true", |b| {
            b["requests"].as_array().is_some_and(|r| !r.is_empty())
        })
        .await;
    assert_eq!(ids(&overdue), [late.request_id.to_string()]);
    let row = &overdue["requests"][0];
    assert_eq!(row["overdue"], true);
    assert_eq!(row["status"], "open");
    assert_eq!(time(&row["due_at"]), time(&row["received_at"]) + TimeDelta::days(45));
    assert!(time(&row["due_at"]) < now);
    let on_time = api
        .until("/v1/privacy/requests?overdue=false", |b| {
            b["requests"].as_array().is_some_and(|r| r.len() == 2)
        })
        .await;
    assert_eq!(
        ids(&on_time),
        [extended.request_id.to_string(), fresh.request_id.to_string()]
    );
    assert!(on_time["requests"]
        .as_array()
        .expect("requests")
        .iter()
        .all(|r| r["overdue"] == false));
    let ext = &on_time["requests"][0];
    assert_eq!(time(&ext["due_at"]), time(&ext["received_at"]) + TimeDelta::days(90));
    let (status, one) = api.get(&format!("/v1/privacy/requests/{}", late.request_id)).await;
    assert_eq!(status, 200);
    assert_eq!(one["overdue"], true);
    // Completing it ends the lateness: closed requests are never overdue.
    api.command(
        &late.request_id.to_string(),
        "verify",
        json!({"method": "signed-in account"}),
        200,
    )
    .await;
    let done = api
        .command(
            &late.request_id.to_string(),
            "complete",
            json!({"outcome": "erased"}),
            200,
        )
        .await;
    assert_eq!(done["overdue"], false);
    api.until("/v1/privacy/requests?overdue=true", |b| {
        b["requests"].as_array().is_some_and(Vec::is_empty)
    })
    .await;
    assert!(terminate(&mut child).success());
}

/// `mdm privacy requests add` appends to the log; once `mdm serve` has
/// projected it, `list` and `show` read it from the read model.
async fn the_cli_adds_a_request_and_lists_it(backend: Backend) {
    let d = Deployment::new(backend, "privacy_cli");
    let env = d.env();
    let env = env_refs(&env);
    let token = uuid::Uuid::new_v4().to_string();
    let added = json_lines(&mdm(
        &d,
        &env,
        &["privacy", "requests", "add", "--kind", "erasure", "--token", &token],
    ));
    assert_eq!(added.len(), 1);
    let id = added[0]["request_id"].as_str().expect("an id").to_owned();
    assert_eq!(added[0]["status"], "open");
    assert_eq!(added[0]["token"], token.as_str());
    assert_eq!(added[0]["received_by"], "operator");
    let verified = json_lines(&mdm(
        &d,
        &env,
        &["privacy", "requests", "verify", &id, "--method", "signed-in account"],
    ));
    assert_eq!(verified[0]["verification_method"], "signed-in account");
    // The ledger's refusals are the CLI's errors.
    let refused = mdm(&d, &env, &["privacy", "requests", "deny", &id, "--basis", " "]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("basis is required"));
    let other = json_lines(&mdm(
        &d,
        &env,
        &[
            "privacy",
            "requests",
            "add",
            "--kind",
            "right_to_know",
            "--by",
            "officer-2",
        ],
    ));
    let other_id = other[0]["request_id"].as_str().expect("an id").to_owned();
    // Before the service ever ran, the read model does not exist.
    let early = mdm(&d, &env, &["privacy", "requests", "list"]);
    assert!(!early.status.success());
    assert!(String::from_utf8_lossy(&early.stderr).contains("mdm serve"));

    let (mut child, _addr) = start(d.dir.path(), &env);
    let mut listed = Vec::new();
    for _ in 0..300 {
        let out = mdm(&d, &env, &["privacy", "requests", "list"]);
        if out.status.success() {
            listed = json_lines(&out);
            if listed.len() == 2 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let listed_ids: Vec<&str> = listed.iter().filter_map(|l| l["request_id"].as_str()).collect();
    assert_eq!(listed_ids, [id.as_str(), other_id.as_str()]);
    assert_eq!(listed[0]["verified_by"], "operator");
    assert_eq!(listed[0]["overdue"], false);
    assert_eq!(listed[1]["received_by"], "officer-2");
    let rtk = json_lines(&mdm(
        &d,
        &env,
        &["privacy", "requests", "list", "--kind", "right_to_know"],
    ));
    assert_eq!(rtk.len(), 1);
    assert_eq!(rtk[0]["request_id"], other_id.as_str());
    let table = mdm(&d, &env, &["privacy", "requests", "list", "--table"]);
    assert!(table.status.success());
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.starts_with("REQUEST"), "{table}");
    assert!(table.contains(&id) && table.contains(&other_id), "{table}");
    let shown = json_lines(&mdm(&d, &env, &["privacy", "requests", "show", &id]));
    assert_eq!(shown[0]["request_id"], id.as_str());
    assert_eq!(shown[0]["notices"], json!([]));
    assert!(terminate(&mut child).success());
}

on_both_backends!(
    a_request_is_received_verified_extended_and_completed,
    only_compliance_uses_the_ledger,
    a_request_received_50_days_ago_is_overdue,
    the_cli_adds_a_request_and_lists_it,
);
