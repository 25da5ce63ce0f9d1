//! `mdm privacy verify`, the erasure proof, on SQLite and PostgreSQL: a
//! person is exported, then erased; with the service stopped the command
//! searches a fresh rebuild, the live read models, the event log, the key
//! store and the service's log for the export's personal strings, finds
//! none and exits 0. For a person who was exported but not erased it exits
//! 1 and names where their values are (by index, never the value).

mod common;

use std::process::Command;
use std::time::Duration;

use common::{add_client, client_with, start, terminate, Backend, Deployment};
use serde_json::{json, Value};

async fn ingest(http: &reqwest::Client, addr: &str, system: &str, body: Value) -> String {
    let r = http
        .post(format!("http://{addr}/v1/sources/{system}/records"))
        .json(&body)
        .send()
        .await
        .expect("answers");
    let status = r.status().as_u16();
    let body: Value = r.json().await.expect("json");
    assert!(status < 300, "{status}: {body}");
    body["customer"]["token"].as_str().expect("a token").to_owned()
}

/// Polls the export of `token` until `ready` holds for its status and body.
async fn export_until(http: &reqwest::Client, addr: &str, token: &str, ready: impl Fn(u16, &Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..400 {
        let r = http
            .get(format!("http://{addr}/v1/privacy/exports/{token}"))
            .send()
            .await
            .expect("answers");
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        if ready(status, &body) {
            return body;
        }
        last = json!({"status": status, "body": body});
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the export of {token} never became ready: {last}");
}

/// Runs `mdm privacy verify` with the deployment's environment: its exit
/// code, its JSON lines, and its stdout as text.
fn verify(d: &Deployment, token: &str, export: &std::path::Path) -> (i32, Vec<Value>, String) {
    let log = d.dir.path().join("serve.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mdm"));
    cmd.args(["privacy", "verify", token, "--export"])
        .arg(export)
        .arg("--log")
        .arg(&log)
        .current_dir(d.dir.path())
        .env_clear()
        .env("MDM_LOG", "warn");
    for (k, v) in d.env() {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("mdm privacy verify runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        !lines.is_empty(),
        "no output; stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().expect("an exit code"), lines, stdout)
}

async fn an_erasure_is_proven(backend: Backend) {
    let d = Deployment::new(backend, "verify");
    let env = d.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (mut child, addr) = start(d.dir.path(), &env);
    let admin = common::api(&addr);
    let compliance = client_with(&add_client(d.dir.path(), &env, "privacy-1", "compliance", None));

    // The person to erase: two matching records; and one to keep.
    let erased = ingest(
        &admin,
        &addr,
        "web_signup",
        json!({"signupId": "WS-8101", "firstName": "Ingeborg", "lastName": "Vasskjold",
               "email": "ingeborg.vasskjold@example.test", "mobile": "+1 415 555 0162", "birthDate": "1984-03-17"}),
    )
    .await;
    ingest(
        &admin,
        &addr,
        "dealer_a",
        json!({"customerNo": "DA-6610", "name": {"first": "Ingeborg", "last": "Vasskjold"},
               "contact": {"email": "ingeborg.vasskjold@example.test", "phones": [{"number": "+1 415 555 0162"}]},
               "address": {"street": "417 Brambleton Rd", "city": "Sausalito", "state": "CA", "zip": "94965", "country": "US"},
               "dob": "03/17/1984"}),
    )
    .await;
    let kept = ingest(
        &admin,
        &addr,
        "web_signup",
        json!({"signupId": "WS-8102", "firstName": "Teodor", "lastName": "Rasmunsen",
               "email": "teodor.rasmunsen@example.test", "mobile": "+1 608 555 0199", "birthDate": "1969-08-02"}),
    )
    .await;
    assert_ne!(erased, kept);
    let records =
        |n: usize| move |s: u16, b: &Value| s == 200 && b["source_records"].as_array().is_some_and(|r| r.len() == n);
    let erased_export = export_until(&compliance, &addr, &erased, records(2)).await;
    let kept_export = export_until(&compliance, &addr, &kept, records(1)).await;
    let values = mdm_api::privacy_verify::personal_values(&erased_export);
    for v in [
        "Ingeborg",
        "Vasskjold",
        "ingeborg.vasskjold@example.test",
        "417 Brambleton Rd",
    ] {
        assert!(values.contains(v), "{v} not among the values");
    }

    // The erasure, until the export answers 410; then the service stops.
    let r = compliance
        .post(format!("http://{addr}/v1/privacy/erasures"))
        .json(&json!({"token": erased, "legal_basis": "CCPA 1798.105 request to delete"}))
        .send()
        .await
        .expect("answers");
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap_or_default());
    export_until(&compliance, &addr, &erased, |s, _| s == 410).await;
    // Every projection (not only the customers one) has applied the log.
    let plain = reqwest::Client::new();
    let mut caught_up = false;
    for _ in 0..400 {
        let ready: serde_json::Value = plain
            .get(format!("http://{addr}/ready"))
            .send()
            .await
            .expect("answers")
            .json()
            .await
            .expect("json");
        let head = ready["log_head"].as_u64();
        caught_up = head.is_some()
            && ready["projections"]
                .as_array()
                .is_some_and(|p| p.iter().all(|p| p["position"].as_u64() >= head));
        if caught_up {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(caught_up, "the projections did not catch up");
    terminate(&mut child);
    let erased_file = d.dir.path().join("erased-export.json");
    std::fs::write(&erased_file, erased_export.to_string()).expect("write");
    let kept_file = d.dir.path().join("kept-export.json");
    std::fs::write(&kept_file, kept_export.to_string()).expect("write");

    // The proof: clean, and every check searched something.
    let (code, lines, stdout) = verify(&d, &erased, &erased_file);
    eprintln!("{stdout}");
    assert_eq!(code, 0, "{stdout}");
    let summary = lines.last().expect("a summary");
    assert_eq!(summary["check"], "summary", "{stdout}");
    assert_eq!(summary["token"], erased.as_str());
    assert_eq!(summary["erased"], true, "{stdout}");
    assert_eq!(summary["clean"], true, "{stdout}");
    let checks: Vec<&str> = lines[..lines.len() - 1]
        .iter()
        .map(|l| l["check"].as_str().expect("a check"))
        .collect();
    assert_eq!(
        checks,
        ["fresh_rebuild", "live_read_models", "event_log", "key_store", "log"],
        "{stdout}"
    );
    for line in &lines[..lines.len() - 1] {
        assert_eq!(line["values"], values.len(), "{line}");
        assert_eq!(line["found"], json!([]), "{line}");
        let searched = line["searched"].as_object().expect("searched");
        assert!(!searched.is_empty(), "{line}");
        for (what, n) in searched {
            assert!(n.as_u64().is_some_and(|n| n > 0), "{what} searched: {line}");
        }
    }
    assert!(lines[0]["log_position"].as_u64().is_some_and(|p| p > 0), "{stdout}");

    // A person not erased: found, by index and place only.
    let (code, lines, stdout) = verify(&d, &kept, &kept_file);
    assert_eq!(code, 1, "{stdout}");
    let summary = lines.last().expect("a summary");
    assert_eq!(summary["erased"], false, "{stdout}");
    assert_eq!(summary["clean"], false, "{stdout}");
    let found = |check: &str| -> Vec<String> {
        lines
            .iter()
            .find(|l| l["check"] == check)
            .unwrap_or_else(|| panic!("no {check} line: {stdout}"))["found"]
            .as_array()
            .expect("found")
            .iter()
            .map(|f| f.as_str().expect("text").to_owned())
            .collect()
    };
    for check in ["fresh_rebuild", "live_read_models"] {
        let found = found(check);
        assert!(!found.is_empty(), "{check} found nothing: {stdout}");
        assert!(
            found
                .iter()
                .all(|f| f.split(" in ").next().is_some_and(|i| i.parse::<usize>().is_ok())),
            "{stdout}"
        );
    }
    // The raw payloads are sealed in the log; the golden record is plain in
    // the read models. No personal value is ever printed.
    for v in mdm_api::privacy_verify::personal_values(&kept_export) {
        assert!(!stdout.contains(&v), "the proof printed a personal value");
    }
}

on_both_backends!(an_erasure_is_proven);
