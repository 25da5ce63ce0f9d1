//! Ingestion through the real HTTP endpoints of the real binary, on the
//! embedded store and on PostgreSQL: every input syntax, per-record
//! outcomes, bad input, idempotent re-sends across restarts, and no
//! personal value in plaintext anywhere in the stored bytes.

mod common;

use common::{start, terminate, Backend, Deployment, SOURCES_EXAMPLE};
use serde_json::{json, Value};

impl Deployment {
    fn serve(&self) -> Service {
        let env = self.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let (child, addr) = start(self.dir.path(), &env);
        Service { child, addr }
    }

    /// Every stored byte of the event log and the key store, as text.
    fn stored_bytes(&self) -> Vec<u8> {
        match &self.db {
            Some(db) => db
                .query(
                    "SELECT stream || type || convert_from(data, 'UTF8') || convert_from(metadata, 'UTF8') \
                     FROM mdm_store.event UNION ALL \
                     SELECT subject || coalesce(encode(wrapped, 'escape'), '') FROM mdm_keys.subject_key",
                )
                .into_bytes(),
            None => {
                // The event log and the key store: what must never hold
                // plaintext. The read models (`read.db*`) hold plaintext by
                // design (they are what the API answers from; erasure
                // deletes their rows) and are left out.
                let mut all = Vec::new();
                for entry in std::fs::read_dir(self.dir.path().join("mdm-data")).expect("data dir") {
                    let path = entry.expect("entry").path();
                    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                    if name.starts_with("read.db") {
                        continue;
                    }
                    all.extend(std::fs::read(&path).unwrap_or_default());
                }
                all
            }
        }
    }
}

struct Service {
    child: std::process::Child,
    addr: String,
}

impl Service {
    async fn post(&self, system: &str, content_type: &str, body: impl Into<reqwest::Body>) -> (u16, String, Value) {
        let response = common::api(&self.addr)
            .post(format!("http://{}/v1/sources/{system}/records", self.addr))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("the service answers");
        let status = response.status().as_u16();
        let ct = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().expect("ascii").to_owned())
            .unwrap_or_default();
        let text = response.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, ct, body)
    }

    /// Posts one web sign-up record (see [`web_signup`]).
    async fn post_signup(&self, id: &str, given: &str, birth: &str) -> (u16, String, Value) {
        self.post(
            "web_signup",
            "application/json",
            web_signup(id, given, birth).to_string(),
        )
        .await
    }

    fn stop(mut self) {
        assert!(terminate(&mut self.child).success());
    }
}

fn outcomes(body: &Value) -> Vec<String> {
    body["records"]
        .as_array()
        .unwrap_or_else(|| panic!("no records in {body}"))
        .iter()
        .map(|r| r["outcome"].as_str().expect("outcome").to_owned())
        .collect()
}

fn web_signup(id: &str, given: &str, birth: &str) -> Value {
    json!({
        "signupId": id,
        "firstName": given,
        "lastName": "Quixotewright",
        "email": "zeb.quixotewright@example.test",
        "mobile": "+1 (555) 013-2447",
        "birthDate": birth,
        "marketingOptIn": true,
        "utm": { "campaign": "spring" }
    })
}

/// Values that must never be found in plaintext in the stored bytes.
const SECRETS: &[&str] = &[
    "Zebulon",
    "Quixotewright",
    "zeb.quixotewright@example.test",
    "013-2447",
    "Xanthippe",
    "Brightwater",
    "Vexillology Lane",
    "xanthippe@finance.test",
    "Ottoline",
    "ottoline.cdc@shop.test",
    "Marrowby",
];

async fn single_json_records_are_captured_changed_unchanged_or_rejected(backend: Backend) {
    let deployment = Deployment::new(backend, "ingest");
    let service = deployment.serve();
    let first = web_signup("W-1", "Zebulon", "1980-02-03").to_string();
    let (status, _, body) = service.post("web_signup", "application/json", first.clone()).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(outcomes(&body), ["captured"]);
    let (status, _, body) = service.post("web_signup", "application/json", first.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(outcomes(&body), ["unchanged"]);

    // The same content written differently is a new raw payload: changed.
    let reformatted = serde_json::to_string_pretty(&web_signup("W-1", "Zebulon", "1980-02-03")).expect("json");
    let (_, _, body) = service.post("web_signup", "application/json", reformatted).await;
    assert_eq!(outcomes(&body), ["changed"]);
    assert_eq!(body["records"][0]["stream_version"], 1);

    // A date that no configured format reads: 422, the field named, the value not quoted.
    let bad = web_signup("W-2", "Zebulon", "03/02/1980").to_string();
    let (status, ct, body) = service.post("web_signup", "application/json", bad).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(ct, "application/problem+json");
    assert_eq!(body["field"], "date_of_birth");
    assert!(!body.to_string().contains("03/02/1980"), "{body}");

    // A record without its id.
    let (status, _, body) = service
        .post(
            "web_signup",
            "application/json",
            json!({"firstName": "Zebulon"}).to_string(),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["field"], "id");
    service.stop();

    // Across a restart an identical re-send still stores nothing.
    let service = deployment.serve();
    let (status, _, body) = service.post("web_signup", "application/json", first).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(outcomes(&body), ["changed"], "the last version is the reformatted one");
    let (_, _, body) = service.post_signup("W-1", "Zebulon", "1980-02-03").await;
    assert_eq!(outcomes(&body), ["unchanged"]);
    service.stop();
}

async fn batches_report_each_record_and_a_bad_one_never_stops_the_rest(backend: Backend) {
    let deployment = Deployment::new(backend, "ingest");
    let service = deployment.serve();
    // A JSON array: good, malformed, missing id, good, and a duplicate of the first.
    let body = format!(
        "[{}, {{\"signupId\": \"W-9\", \"firstName\": }}, {}, {}, {}]",
        web_signup("W-10", "Zebulon", "1980-02-03"),
        json!({"firstName": "Nobody"}),
        web_signup("W-11", "Zebulon", "1981-02-03"),
        web_signup("W-10", "Zebulon", "1980-02-03"),
    );
    let (status, _, body) = service.post("web_signup", "application/json", body).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        outcomes(&body),
        ["captured", "rejected", "rejected", "captured", "unchanged"]
    );
    assert_eq!(body["records"][1]["locator"], "record 2");
    assert_eq!(body["records"][2]["field"], "id");
    assert_eq!(body["summary"]["captured"], 2);
    assert_eq!(body["summary"]["rejected"], 2);

    // NDJSON: a broken line in the middle.
    let ndjson = format!(
        "{}\n{{not json\n{}\n",
        web_signup("W-12", "Zebulon", "1980-02-03"),
        web_signup("W-13", "Zebulon", "1980-02-03")
    );
    let (status, _, body) = service.post("web_signup", "application/x-ndjson", ndjson).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(outcomes(&body), ["captured", "rejected", "captured"]);
    assert_eq!(body["records"][1]["locator"], "line 2");

    // CSV: a row with a field too few and a row that is not UTF-8.
    let header = "ACCOUNT_ID,BORROWER_FIRST,BORROWER_MI,BORROWER_LAST,BORROWER_SFX,E.Mail,HOME_PHONE,WORK_PHONE,\
                  ADDR_LINE1,ADDR_LINE2,CITY,STATE,ZIP,COUNTRY,DOB,LOAN_TYPE";
    let mut csv = format!(
        "{header}\r\nFA-1,Xanthippe,Q,Brightwater,,xanthippe@finance.test,555-010-2000,,12 Vexillology Lane,,Springfield,IL,62704,US,03.02.1980,auto\r\n\
         FA-2,Short,Row\r\n"
    )
    .into_bytes();
    csv.extend_from_slice(b"FA-3,Ren\xe9,,Doe,,,,,,,,,,,,auto\r\n");
    csv.extend_from_slice(b"FA-4,\"Quoted, Name\",,Doe,,,,,,,,,,,1990-01-31,lease\r\n");
    let (status, _, body) = service.post("finance", "text/csv; charset=utf-8", csv.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(outcomes(&body), ["captured", "rejected", "rejected", "captured"]);
    assert_eq!(body["records"][1]["locator"], "row 2");
    assert_eq!(body["records"][2]["field"], "BORROWER_FIRST");
    let (_, _, body) = service.post("finance", "text/csv", csv).await;
    assert_eq!(outcomes(&body), ["unchanged", "rejected", "rejected", "unchanged"]);

    // Wrong media type, unknown system, empty body.
    let (status, ct, body) = service.post("finance", "text/plain", "x").await;
    assert_eq!((status, ct.as_str()), (415, "application/problem+json"), "{body}");
    assert_eq!(body["field"], "Content-Type");
    let (status, _, body) = service.post("nobody", "application/json", "{}").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["field"], "system");
    let (status, _, _) = service.post("finance", "text/csv", "  ").await;
    assert_eq!(status, 422);
    service.stop();
}

fn cdc_row(id: u64, given: &str, email: &str) -> Value {
    json!({
        "id": id, "first_name": given, "last_name": "Marrowby", "email": email,
        "phone": "555-0142", "street": "1 Elm St", "city": "Dayton", "state": "OH", "zip": "45402",
        "birth_date": 3650, "created_at": "2024-05-01T10:00:00Z"
    })
}

fn envelope(op: &str, before: Value, after: Value, ts_ms: u64, wrapped: bool) -> Value {
    let payload = json!({
        "before": before, "after": after, "op": op, "ts_ms": ts_ms,
        "source": { "connector": "mysql", "db": "shop", "table": "customers", "file": "mysql-bin.000001", "pos": ts_ms, "row": 0 }
    });
    if wrapped {
        json!({ "schema": { "type": "struct", "optional": false }, "payload": payload })
    } else {
        payload
    }
}

async fn debezium_events_capture_change_and_retract(backend: Backend) {
    let deployment = Deployment::new(backend, "ingest");
    let service = deployment.serve();
    let v1 = cdc_row(7, "Ottoline", "ottoline.cdc@shop.test");
    let v2 = cdc_row(7, "Ottoline", "ottoline.new@shop.test");
    let lines = [
        envelope("r", Value::Null, v1.clone(), 1, true),
        envelope("u", v1.clone(), v2.clone(), 2, false),
        // Redelivered with new delivery metadata only: unchanged.
        envelope("u", v1.clone(), v2.clone(), 3, true),
        envelope("d", v2.clone(), Value::Null, 4, false),
        Value::Null,
        envelope("t", Value::Null, Value::Null, 5, false),
        envelope("d", v2.clone(), Value::Null, 6, true),
        envelope("c", Value::Null, v1.clone(), 7, true),
        // A replay of an older change: at or before the held binlog position.
        envelope("u", v1.clone(), v2.clone(), 2, true),
    ];
    let ndjson: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let (status, _, body) = service.post("shop_cdc", "application/x-ndjson", ndjson).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        outcomes(&body),
        [
            "captured",
            "changed",
            "unchanged",
            "retracted",
            "ignored",
            "rejected",
            "ignored",
            "captured",
            "stale"
        ]
    );
    assert_eq!(
        body["records"][7]["stream_version"], 3,
        "re-captured after its retraction"
    );
    // A single envelope as application/json.
    let (status, _, body) = service
        .post(
            "shop_cdc",
            "application/json",
            envelope("u", v1.clone(), v2, 9, true).to_string(),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(outcomes(&body), ["changed"]);
    service.stop();
}

async fn an_oversize_body_gets_413_and_stores_nothing(backend: Backend) {
    let mut deployment = Deployment::new(backend, "ingest");
    deployment.extra.push(("MDM_HTTP_MAX_BODY_BYTES".into(), "2000".into()));
    let service = deployment.serve();
    let (status, _, body) = service.post_signup("W-1", "Zebulon", "1980-02-03").await;
    assert_eq!(status, 201, "{body}");
    let big: Vec<Value> = (0..40)
        .map(|i| web_signup(&format!("W-{i}"), "Zebulon", "1980-02-03"))
        .collect();
    let (status, ct, body) = service
        .post("web_signup", "application/json", Value::from(big).to_string())
        .await;
    assert_eq!((status, ct.as_str()), (413, "application/problem+json"), "{body}");
    let health = common::health(&service.addr).await;
    assert_eq!(health["log_head"].as_u64().map(|h| h > 0), Some(true));
    let (_, _, body) = service.post_signup("W-1", "Zebulon", "1980-02-03").await;
    assert_eq!(outcomes(&body), ["unchanged"], "the stored record is intact");
    service.stop();
}

async fn no_personal_value_is_stored_in_plaintext(backend: Backend) {
    let deployment = Deployment::new(backend, "ingest");
    let service = deployment.serve();
    let (status, _, body) = service.post_signup("W-1", "Zebulon", "1980-02-03").await;
    assert_eq!(status, 201, "{body}");
    let csv = "ACCOUNT_ID,BORROWER_FIRST,BORROWER_MI,BORROWER_LAST,BORROWER_SFX,E.Mail,HOME_PHONE,WORK_PHONE,\
               ADDR_LINE1,ADDR_LINE2,CITY,STATE,ZIP,COUNTRY,DOB,LOAN_TYPE\n\
               FA-1,Xanthippe,Q,Brightwater,,xanthippe@finance.test,555-010-2000,,12 Vexillology Lane,,Springfield,IL,62704,US,03.02.1980,auto\n";
    let (_, _, body) = service.post("finance", "text/csv", csv).await;
    assert_eq!(outcomes(&body), ["captured"]);
    let cdc = envelope(
        "c",
        Value::Null,
        cdc_row(7, "Ottoline", "ottoline.cdc@shop.test"),
        1,
        true,
    );
    let (_, _, body) = service.post("shop_cdc", "application/json", cdc.to_string()).await;
    assert_eq!(outcomes(&body), ["captured"]);
    service.stop();

    let stored = deployment.stored_bytes();
    assert!(
        stored.len() > 1000,
        "the stored bytes were read ({} bytes)",
        stored.len()
    );
    for secret in SECRETS {
        assert!(
            !contains(&stored, secret.as_bytes()),
            "`{secret}` is stored in plaintext ({backend:?})"
        );
    }
    // The source ids are sealed too (some systems key records by e-mail).
    for id in ["W-1", "FA-1"] {
        assert!(!contains(&stored, format!("\"{id}\"").as_bytes()), "{id} in plaintext");
    }
}

/// A warranty REST source started by the test: customer C-1 exists, any
/// other id answers 404.
async fn warranty_server() -> String {
    use axum::extract::Path as UrlPath;
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    let app = axum::Router::new().route(
        "/api/customers/{id}",
        axum::routing::get(|UrlPath(id): UrlPath<String>| async move {
            if id != "C-1" {
                return StatusCode::NOT_FOUND.into_response();
            }
            axum::Json(json!({"data": {
                "customerId": "C-1",
                "person": {"fullName": "Zebulon Quixotewright", "birthDate": "1980-02-03"},
                "emails": [{"address": "zeb.quixotewright@example.test"}],
                "phones": [{"number": "555-013-2447"}],
                "addresses": [{"lines": ["1 Elm St"], "locality": "Dayton", "region": "OH", "postalCode": "45402", "countryCode": "US"}]
            }}))
            .into_response()
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

async fn a_pull_source_is_asked_per_customer_over_http_and_the_cli(backend: Backend) {
    let base = warranty_server().await;
    let mut deployment = Deployment::new(backend, "ingest");
    let sources = std::fs::read_to_string(SOURCES_EXAMPLE)
        .expect("example")
        .replace("http://warranty.internal", &base);
    let sources_file = deployment.dir.path().join("sources.toml");
    std::fs::write(&sources_file, sources).expect("write");
    deployment
        .extra
        .push(("MDM_SOURCES_FILE".into(), sources_file.to_str().expect("utf-8").into()));
    let service = deployment.serve();
    let pull = |body: Value| {
        let addr = service.addr.clone();
        async move {
            let response = common::api(&addr)
                .post(format!("http://{addr}/v1/sources/warranty_api/pull"))
                .json(&body)
                .send()
                .await
                .expect("answers");
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.expect("json"))
        }
    };
    let (status, body) = pull(json!({"ids": ["C-1", "C-404"]})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["records"][0]["result"], "ingested", "{body}");
    assert_eq!(body["records"][0]["outcome"], "captured", "{body}");
    assert_eq!(body["records"][1]["result"], "not_found", "{body}");
    assert!(!body.to_string().contains("C-404"), "keys are not echoed: {body}");
    let (_, body) = pull(json!({"ids": ["C-1"]})).await;
    assert_eq!(body["records"][0]["outcome"], "unchanged", "{body}");
    let (status, body) = pull(json!({"names": ["x"]})).await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = pull(json!({})).await;
    assert_eq!(status, 422, "{body}");
    let response = common::api(&service.addr)
        .post(format!("http://{}/v1/sources/finance/pull", service.addr))
        .json(&json!({"ids": ["x"]}))
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status(), 409, "a push source cannot be asked");
    service.stop();

    // The same through the CLI, on the same data: `mdm pull`.
    let env = deployment.env();
    let dir = deployment.dir.path().to_owned();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_mdm"))
            .args(["pull", "--system", "warranty_api", "--id", "C-1", "--id", "C-404"])
            .current_dir(dir)
            .env_clear()
            .envs(env)
            .output()
            .expect("mdm pull runs")
    })
    .await
    .expect("joined");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let body: Value = serde_json::from_slice(&out.stdout).expect("json on stdout");
    assert_eq!(body[0]["outcome"], "unchanged", "{body}");
    assert_eq!(body[1]["result"], "not_found", "{body}");
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

on_both_backends!(
    single_json_records_are_captured_changed_unchanged_or_rejected,
    batches_report_each_record_and_a_bad_one_never_stops_the_rest,
    debezium_events_capture_change_and_retract,
    an_oversize_body_gets_413_and_stores_nothing,
    no_personal_value_is_stored_in_plaintext,
    a_pull_source_is_asked_per_customer_over_http_and_the_cli,
);
