//! The CCPA right to know over real HTTP, on SQLite and PostgreSQL: a
//! person with records from three systems (one of them sent twice, changed),
//! a fourth record merged in by a steward, a steward's override, a webhook
//! subscriber that received their changes, a reader client and a
//! right-to-know request is exported by a compliance user. Every section of
//! the document holds what was ingested; a merged token exports its
//! survivor; other roles get 403, an unknown token 404. Then the person is
//! erased: the export answers 410, and no value of the export made before
//! (raw payloads and golden values) is stored any more (SQLite: every file
//! of the data folder; PostgreSQL: every text, JSON and bytea column), nor
//! in the service's log.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{add_client, client_with, start, terminate, Backend, Deployment};
use serde_json::{json, Value};

struct Api {
    addr: String,
    http: reqwest::Client,
}

impl Api {
    async fn send(&self, req: reqwest::RequestBuilder) -> (u16, reqwest::header::HeaderMap, Value) {
        let r = req.send().await.expect("answers");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.expect("body");
        (status, headers, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let (status, _, body) = self.send(self.http.get(format!("http://{}{path}", self.addr))).await;
        (status, body)
    }

    async fn get_with_headers(&self, path: &str) -> (u16, reqwest::header::HeaderMap, Value) {
        self.send(self.http.get(format!("http://{}{path}", self.addr))).await
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let (status, _, body) = self
            .send(self.http.post(format!("http://{}{path}", self.addr)).json(&body))
            .await;
        (status, body)
    }

    /// Ingests one record sent as exactly `text` (its raw payload).
    async fn ingest_text(&self, system: &str, text: &str) -> Value {
        let req = self
            .http
            .post(format!("http://{}/v1/sources/{system}/records", self.addr))
            .header("content-type", "application/json")
            .body(text.to_owned());
        let (status, _, body) = self.send(req).await;
        assert!(status < 300, "{status}: {body}");
        body
    }

    /// Polls `path` until `ready` holds for its status and body.
    async fn until(&self, path: &str, ready: impl Fn(u16, &Value) -> bool) -> Value {
        let mut last = Value::Null;
        for _ in 0..400 {
            let (status, body) = self.get(path).await;
            if ready(status, &body) {
                return body;
            }
            last = json!({"status": status, "body": body});
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{path} never became ready: {last}");
    }
}

/// The person's records as their systems send them: pretty-printed, so a
/// verbatim raw payload is told apart from a re-serialized one.
fn person_records() -> Vec<(&'static str, &'static str, String)> {
    let text = |v: Value| serde_json::to_string_pretty(&v).expect("json");
    vec![
        (
            "web_signup",
            "WS-7101",
            text(
                json!({"signupId": "WS-7101", "firstName": "Solveig", "lastName": "Marthinsen",
                        "email": "solveig.marthinsen@example.test", "mobile": "+1 312 555 0187",
                        "birthDate": "1979-11-04", "utm": {"campaign": "larkspur-spring"}}),
            ),
        ),
        (
            "dealer_a",
            "DA-5520",
            text(
                json!({"customerNo": "DA-5520", "name": {"first": "Solveig", "last": "Marthinsen"},
                        "contact": {"email": "solveig.marthinsen@example.test", "phones": [{"number": "+1 312 555 0187"}]},
                        "address": {"street": "2288 Quillmoor Ave", "city": "Evanston", "state": "IL", "zip": "60201", "country": "US"},
                        "dob": "11/04/1979"}),
            ),
        ),
        (
            "dealer_b",
            "DB-3307",
            text(
                json!({"CustNo": "DB-3307", "CustName": "MARTHINSEN, SOLVEIG", "EMail": "solveig.marthinsen@example.test",
                        "HomePhone": "(312) 555-0187", "Addr1": "2288 Quillmoor Ave", "CityStZip": "Evanston, IL 60201",
                        "BirthDt": "19791104"}),
            ),
        ),
    ]
}

/// The sign-up sent again, changed: a second version of the record.
fn changed_signup() -> String {
    serde_json::to_string_pretty(
        &json!({"signupId": "WS-7101", "firstName": "Solveig", "lastName": "Marthinsen",
        "email": "solveig.marthinsen@example.test", "mobile": "+1 312 555 0187", "birthDate": "1979-11-04",
        "utm": {"campaign": "quillmoor-autumn"}, "marketingOptIn": true}),
    )
    .expect("json")
}

/// A record of the person the resolver keeps apart (another e-mail and
/// phone): a steward merges its customer in.
fn work_record() -> String {
    serde_json::to_string_pretty(
        &json!({"customerNo": "DA-5521", "name": {"first": "Solveig", "last": "Marthinsen"},
        "contact": {"email": "smarthinsen@work.example.test", "phones": [{"number": "+1 312 555 0144"}]}}),
    )
    .expect("json")
}

const OVERRIDE_EMAIL: &str = "solveig.private@example.test";

fn stranger() -> String {
    json!({"signupId": "WS-9000", "firstName": "Tomas", "lastName": "Berg",
           "email": "tomas.berg@example.test", "mobile": "+1 608 555 0123", "birthDate": "1971-02-14"})
    .to_string()
}

/// Accepts every webhook delivery and counts them.
async fn receiver() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let got = std::sync::Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let counter = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                axum::http::StatusCode::OK
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (port, got)
}

/// The personal values of an export: the rule `mdm privacy verify` uses
/// (`mdm_api::privacy_verify::personal_values`): every string of the raw
/// payloads (each version) and of the golden values (attributes, lineage,
/// overrides), of 4 characters or more, that is not a system name, an id,
/// a token, a timestamp or a bare digit run shorter than 8.
fn personal_values(export: &Value) -> BTreeSet<String> {
    mdm_api::privacy_verify::personal_values(export)
}

fn types_of(export: &Value) -> Vec<String> {
    export["decisions"]
        .as_array()
        .expect("decisions")
        .iter()
        .map(|d| d["type"].as_str().expect("a type").to_owned())
        .collect()
}

async fn a_person_is_exported_then_erased(backend: Backend) {
    let d = Deployment::new(backend, "export");
    let env = d.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (mut child, addr) = start(d.dir.path(), &env);
    let client = |name: &str, role: &str, scopes: Option<&str>| Api {
        addr: addr.clone(),
        http: client_with(&add_client(d.dir.path(), &env, name, role, scopes)),
    };
    let admin = Api {
        addr: addr.clone(),
        http: common::api(&addr),
    };
    let steward = client("steward-1", "steward", None);
    let compliance = client("privacy-1", "compliance", None);
    let reader = client("crm-reader", "reader", Some("name,email"));

    // Two webhook subscribers: one of every change, one of erasures only.
    let (port, delivered) = receiver().await;
    let hook = |types: Option<Vec<&str>>| {
        let mut body = json!({"url": format!("http://127.0.0.1:{port}/hook"), "secret": "whsec-export-0123456789"});
        if let Some(t) = types {
            body["types"] = json!(t);
        }
        body
    };
    let (status, all_hook) = admin.post("/v1/webhooks", hook(None)).await;
    assert_eq!(status, 201, "{all_hook}");
    let (status, erased_hook) = admin.post("/v1/webhooks", hook(Some(vec!["erased"]))).await;
    assert_eq!(status, 201, "{erased_hook}");

    // The person: three matching records, one of them changed later.
    let mut token = None;
    for (system, _, text) in person_records() {
        let body = admin.ingest_text(system, &text).await;
        token = token.or(body["customer"]["token"].as_str().map(str::to_owned));
    }
    let token = token.expect("a token");
    let stranger_token = admin.ingest_text("web_signup", &stranger()).await["customer"]["token"]
        .as_str()
        .expect("token")
        .to_owned();
    admin
        .until(&format!("/v1/customers/{token}"), |s, b| {
            s == 200 && b["record_count"] == 3
        })
        .await;
    admin.ingest_text("web_signup", &changed_signup()).await;
    // The work record: a customer of its own, then merged in.
    let work = admin.ingest_text("dealer_a", &work_record()).await["customer"]["token"]
        .as_str()
        .expect("token")
        .to_owned();
    assert_ne!(work, token, "kept apart at first");
    admin.until(&format!("/v1/customers/{work}"), |s, _| s == 200).await;
    let (status, body) = steward
        .post(
            &format!("/v1/customers/{token}/merge"),
            json!({"absorbed": work, "reason": "same person: confirmed by phone"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = steward
        .post(
            &format!("/v1/customers/{token}/overrides"),
            json!({"attribute": "email", "value": OVERRIDE_EMAIL, "permanent": true, "reason": "preferred address"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    admin
        .until(&format!("/v1/customers/{token}"), |s, b| {
            s == 200 && b["record_count"] == 4 && b["attributes"]["email"] == OVERRIDE_EMAIL
        })
        .await;
    // A right-to-know request in the ledger.
    let (status, request) = compliance
        .post("/v1/privacy/requests", json!({"kind": "right_to_know", "token": token}))
        .await;
    assert_eq!(status, 201, "{request}");
    let request_id = request["request_id"].as_str().expect("request id").to_owned();

    // The export, once every read model and the webhook have caught up.
    let path = format!("/v1/privacy/exports/{token}");
    let all_hook_id = all_hook["id"].as_str().expect("id").to_owned();
    compliance
        .until(&path, |s, b| {
            s == 200
                && b["source_records"].as_array().is_some_and(|r| r.len() == 4)
                && b["source_records"]
                    .as_array()
                    .is_some_and(|r| r.iter().any(|r| r["versions"].as_array().is_some_and(|v| v.len() == 2)))
                && b["privacy_requests"].as_array().is_some_and(|r| r.len() == 1)
                && b["overrides"].as_array().is_some_and(|o| o.len() == 1)
                && types_of(b).iter().any(|t| t == "ValueOverridden")
                && b["recipients"]["webhooks"]["subscribers"].as_array().is_some_and(|s| {
                    s.iter().any(|s| {
                        s["id"] == all_hook_id.as_str()
                            && s["change_types"].as_array().is_some_and(|t| {
                                t.contains(&json!("created"))
                                    && t.contains(&json!("merged"))
                                    && t.contains(&json!("updated"))
                            })
                    })
                })
        })
        .await;
    assert!(delivered.load(std::sync::atomic::Ordering::SeqCst) > 0);
    let (status, headers, export) = compliance.get_with_headers(&path).await;
    assert_eq!(status, 200, "{export}");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(
        headers["content-disposition"],
        format!("attachment; filename=\"mdm-export-{token}.json\"").as_str()
    );
    for section in [
        "exported_at",
        "token",
        "tokens_merged_into_it",
        "golden_record",
        "overrides",
        "source_records",
        "decisions",
        "household",
        "recipients",
        "privacy_requests",
    ] {
        assert!(export.get(section).is_some(), "{section} missing: {export}");
    }
    assert!(chrono::DateTime::parse_from_rfc3339(export["exported_at"].as_str().expect("time")).is_ok());
    assert_eq!(export["token"], token.as_str());
    assert_eq!(export["requested_token"], token.as_str());
    assert_eq!(export["tokens_merged_into_it"], json!([work]));

    // The golden record, and where each value came from.
    let golden = &export["golden_record"];
    assert_eq!(golden["status"], "active");
    assert_eq!(golden["record_count"], 4);
    let attributes = &golden["attributes"];
    assert_eq!(attributes["name"]["given"], "Solveig", "{golden}");
    assert_eq!(attributes["name"]["family"], "Marthinsen", "{golden}");
    assert_eq!(attributes["email"], OVERRIDE_EMAIL, "{golden}");
    assert_eq!(attributes["date_of_birth"], "1979-11-04", "{golden}");
    assert_eq!(attributes["address"]["city"], "Evanston", "{golden}");
    let lineage = golden["lineage"].as_object().expect("lineage");
    let names: BTreeSet<&str> = lineage.keys().map(String::as_str).collect();
    let attribute_names: BTreeSet<&str> = attributes
        .as_object()
        .expect("attributes")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(names, attribute_names, "a lineage per golden attribute");
    assert_eq!(lineage["email"]["overridden_by"], "steward-1", "{golden}");
    assert_eq!(lineage["email"]["value"]["email"], OVERRIDE_EMAIL, "{golden}");
    for attribute in ["name", "phone", "address", "date_of_birth"] {
        let l = &lineage[attribute];
        assert!(l["record"].is_string(), "{attribute}: {l}");
        assert!(
            ["web_signup", "dealer_a", "dealer_b"].contains(&l["system"].as_str().unwrap_or("")),
            "{attribute}: {l}"
        );
        assert!(l["source_position"].as_i64().is_some_and(|p| p > 0), "{attribute}: {l}");
        assert!(l["rule"].as_str().is_some_and(|r| !r.is_empty()), "{attribute}: {l}");
        assert!(l["overridden_by"].is_null(), "{attribute}: {l}");
    }
    let line1 = attributes["address"]["line1"].as_str().expect("line 1");
    assert!(lineage["address"]["value"].to_string().contains(line1), "{golden}");

    // The override.
    let overrides = export["overrides"].as_array().expect("overrides");
    assert_eq!(overrides[0]["attribute"], "email");
    assert_eq!(overrides[0]["value"], OVERRIDE_EMAIL);
    assert_eq!(overrides[0]["set_by"], "steward-1");
    assert_eq!(overrides[0]["reason"], "preferred address");

    // Every source record, every version, each raw payload verbatim.
    let records = export["source_records"].as_array().expect("records");
    let record = |system: &str, id: &str| {
        records
            .iter()
            .find(|r| r["system"] == system && r["source_id"] == id)
            .unwrap_or_else(|| panic!("{system} {id} missing"))
    };
    let mut sent: Vec<(&str, &str, Vec<String>)> = person_records()
        .into_iter()
        .map(|(system, id, text)| (system, id, vec![text]))
        .collect();
    sent[0].2.push(changed_signup());
    sent.push(("dealer_a", "DA-5521", vec![work_record()]));
    for (system, id, texts) in &sent {
        let r = record(system, id);
        assert_eq!(r["token"], token.as_str(), "{system} {id}");
        let versions = r["versions"].as_array().expect("versions");
        assert_eq!(versions.len(), texts.len(), "{system} {id}");
        for (v, text) in versions.iter().zip(texts) {
            assert_eq!(v["raw"].as_str(), Some(text.as_str()), "{system} {id}: raw verbatim");
            assert!(v["attributes"].is_object(), "{system} {id}: mapped attributes");
            assert!(v["position"].as_i64().is_some_and(|p| p > 0));
            assert!(v["recorded_at"].is_string());
        }
        assert_eq!(
            r["raw"].as_str(),
            texts.last().map(String::as_str),
            "{system} {id}: latest"
        );
        assert!(r["customers"].as_array().is_some_and(|c| !c.is_empty()));
    }
    let signup = record("web_signup", "WS-7101");
    let positions: Vec<i64> = signup["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .map(|v| v["position"].as_i64().expect("position"))
        .collect();
    assert!(positions[0] < positions[1], "versions in order: {positions:?}");
    // The work record's history: its own customer, then the survivor.
    let moves: Vec<&str> = record("dealer_a", "DA-5521")["customers"]
        .as_array()
        .expect("customers")
        .iter()
        .map(|c| c["token"].as_str().expect("token"))
        .collect();
    assert_eq!(moves.first(), Some(&work.as_str()), "{moves:?}");
    assert_eq!(moves.last(), Some(&token.as_str()), "{moves:?}");

    // The whole decision history: the merge with its reason, the resolver's
    // links with their explanation, the override.
    let decisions = export["decisions"].as_array().expect("decisions");
    let positions: Vec<i64> = decisions
        .iter()
        .map(|d| d["position"].as_i64().expect("position"))
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "log order, once each: {positions:?}"
    );
    let merge = decisions
        .iter()
        .find(|d| d["type"] == "CustomersMerged")
        .expect("the merge");
    assert_eq!(merge["reason"], "same person: confirmed by phone", "{merge}");
    assert_eq!(merge["actor"], json!({"kind": "steward", "id": "steward-1"}), "{merge}");
    let named: BTreeSet<&str> = merge["customer_tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(named, BTreeSet::from([token.as_str(), work.as_str()]), "{merge}");
    assert!(
        decisions
            .iter()
            .any(|d| d["type"] == "RecordLinked" && d["explanation"].is_object()),
        "a link with its explanation: {decisions:?}"
    );
    // The work customer's own creation is part of the person's history.
    assert!(decisions
        .iter()
        .any(|d| d["type"] == "CustomerCreated" && d["customer_tokens"] == json!([work])));
    assert!(types_of(&export).iter().any(|t| t == "ValueOverridden"));

    // The household: absent, or the members' tokens only.
    match &export["household"] {
        Value::Null => {}
        h => {
            assert!(h["household"].is_string(), "{h}");
            let members = h["members"].as_array().expect("members");
            assert!(members
                .iter()
                .all(|m| uuid::Uuid::parse_str(m.as_str().unwrap_or("")).is_ok()));
            assert!(members.contains(&json!(token)));
        }
    }

    // Recipients: the webhook of every change (host only), not the one of
    // erasures; the reader client with its scopes, not the staff.
    let webhooks = &export["recipients"]["webhooks"];
    assert!(
        webhooks["basis"].as_str().is_some_and(|b| b.contains("checkpoint")),
        "{webhooks}"
    );
    let subscribers = webhooks["subscribers"].as_array().expect("subscribers");
    assert_eq!(subscribers.len(), 1, "{webhooks}");
    assert_eq!(subscribers[0]["id"], all_hook_id.as_str());
    assert_eq!(subscribers[0]["host"], "127.0.0.1");
    assert!(!subscribers[0].to_string().contains("/hook"), "host only");
    assert!(subscribers[0]["changes"].as_u64().is_some_and(|n| n >= 3), "{webhooks}");
    let clients = &export["recipients"]["api_clients"];
    assert!(
        clients["basis"].as_str().is_some_and(|b| b.contains("reader")),
        "{clients}"
    );
    let listed: Vec<&str> = clients["clients"]
        .as_array()
        .expect("clients")
        .iter()
        .map(|c| c["name"].as_str().expect("name"))
        .collect();
    assert_eq!(listed, ["crm-reader"], "{clients}");
    assert_eq!(clients["clients"][0]["scopes"], json!(["name", "email"]));

    // The ledger's request.
    let requests = export["privacy_requests"].as_array().expect("requests");
    assert_eq!(requests[0]["request_id"], request_id.as_str());
    assert_eq!(requests[0]["kind"], "right_to_know");
    assert_eq!(requests[0]["token"], token.as_str());

    // A merged token exports its survivor.
    let (status, merged) = compliance.get(&format!("/v1/privacy/exports/{work}")).await;
    assert_eq!(status, 200, "{merged}");
    assert_eq!(merged["token"], token.as_str());
    assert_eq!(merged["requested_token"], work.as_str());
    assert_eq!(merged["source_records"].as_array().map(Vec::len), Some(4));

    // Only compliance (and admin) exports; unknown tokens are named.
    for api in [&reader, &steward] {
        let (status, body) = api.get(&path).await;
        assert_eq!(status, 403, "{body}");
    }
    let (status, _) = admin.get(&path).await;
    assert_eq!(status, 200);
    let (status, problem) = compliance
        .get(&format!("/v1/privacy/exports/{}", uuid::Uuid::new_v4()))
        .await;
    assert_eq!((status, problem["field"].as_str()), (404, Some("token")), "{problem}");
    let (status, problem) = compliance.get("/v1/privacy/exports/not-a-token").await;
    assert_eq!((status, problem["field"].as_str()), (400, Some("token")), "{problem}");

    // The values to look for after erasure; the scan finds them before.
    let values: Vec<String> = personal_values(&export).into_iter().collect();
    for v in [
        "Solveig",
        "Marthinsen",
        "MARTHINSEN, SOLVEIG",
        "solveig.marthinsen@example.test",
        OVERRIDE_EMAIL,
        "smarthinsen@work.example.test",
        "+1 312 555 0187",
        "(312) 555-0187",
        "2288 Quillmoor Ave",
        "Evanston, IL 60201",
        "19791104",
        "larkspur-spring",
        "quillmoor-autumn",
    ] {
        assert!(values.iter().any(|x| x == v), "{v} not among {values:?}");
    }
    assert!(
        !values.iter().any(|v| v.starts_with("WS-") || v == "web_signup"),
        "{values:?}"
    );
    let before = common::stored_values(backend, &d, &values).await;
    assert!(!before.is_empty(), "the scan finds the person before erasure");
    eprintln!(
        "{} personal values, found in {} places before erasure",
        values.len(),
        before.len()
    );

    // Erasure: the export answers 410, for the merged token too.
    let (status, result) = compliance
        .post(
            "/v1/privacy/erasures",
            json!({"token": token, "legal_basis": "CCPA 1798.105 request to delete"}),
        )
        .await;
    assert_eq!(status, 200, "{result}");
    assert_eq!(result["records_erased"], 4, "{result}");
    let gone = compliance.until(&path, |s, _| s == 410).await;
    assert_eq!(gone["status"], "erased", "{gone}");
    assert_eq!(gone["token"], token.as_str(), "{gone}");
    compliance
        .until(&format!("/v1/privacy/exports/{work}"), |s, _| s == 410)
        .await;
    // The stranger's export is untouched.
    let (status, other) = compliance.get(&format!("/v1/privacy/exports/{stranger_token}")).await;
    assert_eq!(status, 200, "{other}");
    assert_eq!(other["golden_record"]["attributes"]["name"]["family"], "Berg");

    // None of the values is stored any more, nor was any logged.
    let mut left = Vec::new();
    for _ in 0..40 {
        left = common::stored_values(backend, &d, &values).await;
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(left.is_empty(), "after erasure: {left:?}");
    terminate(&mut child);
    let log = std::fs::read_to_string(d.dir.path().join("serve.log")).expect("the service log");
    assert!(log.contains("privacy export served"), "the export is logged");
    let logged: Vec<&String> = values.iter().filter(|v| log.contains(v.as_str())).collect();
    assert!(logged.is_empty(), "personal values in the service log: {logged:?}");
}

on_both_backends!(a_person_is_exported_then_erased);
