//! Resolution through the running service: a single-record ingest answers
//! the customer's token (waiting for the resolver), a second record of the
//! same person gets the same token, a household member gets another, the
//! token can be looked up by source id, and a restart keeps every token.

mod common;

use common::{start, terminate, Backend, Deployment};
use serde_json::{json, Value};

async fn post(addr: &str, system: &str, body: Value) -> (u16, Value) {
    let response = common::api(addr)
        .post(format!("http://{addr}/v1/sources/{system}/records"))
        .json(&body)
        .send()
        .await
        .expect("the service answers");
    let status = response.status().as_u16();
    (status, response.json().await.expect("json body"))
}

async fn lookup(addr: &str, system: &str, source_id: &str) -> (u16, Value) {
    let response = common::api(addr)
        .get(format!(
            "http://{addr}/v1/sources/{system}/records/{source_id}/customer"
        ))
        .send()
        .await
        .expect("the service answers");
    let status = response.status().as_u16();
    (status, response.json().await.expect("json body"))
}

fn signup(id: &str, first: &str, last: &str, email: &str, mobile: &str, born: &str) -> Value {
    json!({"signupId": id, "firstName": first, "lastName": last, "email": email, "mobile": mobile, "birthDate": born})
}

fn token(body: &Value) -> String {
    assert_eq!(body["customer"]["status"], "resolved", "{body}");
    body["customer"]["token"].as_str().expect("a token").to_owned()
}

async fn ingest_answers_the_customer_token(backend: Backend) {
    let deployment = Deployment::new(backend, "resolve_token");
    let env = deployment.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (mut child, addr) = start(deployment.dir.path(), &env);

    let (status, first) = post(
        &addr,
        "web_signup",
        signup(
            "S-1",
            "Robert",
            "Okonkwo",
            "rob.okonkwo@example.test",
            "+1 312 555 0101",
            "1979-04-12",
        ),
    )
    .await;
    assert_eq!(status, 201, "{first}");
    let robert = token(&first);

    // The same man through another sign-up (nickname, same e-mail): same token.
    let (status, second) = post(
        &addr,
        "web_signup",
        signup(
            "S-2",
            "Bob",
            "Okonkwo",
            "rob.okonkwo@example.test",
            "+1 312 555 0101",
            "1979-04-12",
        ),
    )
    .await;
    assert_eq!(status, 201, "{second}");
    assert_eq!(token(&second), robert);

    // His wife: same family name, same phone, another given name and birth date.
    let (_, wife) = post(
        &addr,
        "web_signup",
        signup(
            "S-3",
            "Adaeze",
            "Okonkwo",
            "adaeze@example.test",
            "+1 312 555 0101",
            "1981-09-30",
        ),
    )
    .await;
    assert_ne!(token(&wife), robert);

    let (status, found) = lookup(&addr, "web_signup", "S-2").await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["token"], robert.as_str());
    let (status, missing) = lookup(&addr, "web_signup", "S-404").await;
    assert_eq!(status, 404, "{missing}");

    // After a restart the resolver replays: same token, nothing decided twice.
    terminate(&mut child);
    let (mut child, addr) = start(deployment.dir.path(), &env);
    let (status, again) = post(
        &addr,
        "web_signup",
        signup(
            "S-2",
            "Bob",
            "Okonkwo",
            "rob.okonkwo@example.test",
            "+1 312 555 0101",
            "1979-04-12",
        ),
    )
    .await;
    assert_eq!(status, 200, "an identical re-send stores nothing: {again}");
    assert_eq!(token(&again), robert);
    let (_, found) = lookup(&addr, "web_signup", "S-3").await;
    assert_eq!(found["token"], token(&wife).as_str());

    // The service runs the projections: a second process reading the read
    // models sees the cross-reference fill in, naming each record's customer.
    let wife_token = token(&wife);
    let expected = vec![
        format!("web_signup,S-1,{robert}"),
        format!("web_signup,S-2,{robert}"),
        format!("web_signup,S-3,{wife_token}"),
    ];
    let mut lines: Vec<String> = Vec::new();
    for _ in 0..200 {
        let xref = mdm(deployment.dir.path(), &env, &["export", "xref"]);
        lines = xref.lines().map(str::to_owned).collect();
        assert_eq!(lines.remove(0), "system,source_id,token");
        lines.sort();
        if lines == expected {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(lines, expected, "the exported cross-reference");
    let only_dealers = mdm(deployment.dir.path(), &env, &["export", "xref", "--system", "dealer_a"]);
    assert_eq!(only_dealers.trim(), "system,source_id,token");
    terminate(&mut child);

    // The embedded log admits one process at a time: status runs once the
    // service stopped, and shows the four projections having applied it.
    let status = mdm(deployment.dir.path(), &env, &["projections", "status"]);
    let lines: Vec<Value> = status
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let names: Vec<&str> = lines.iter().filter_map(|l| l["name"].as_str()).collect();
    assert_eq!(names, ["customers", "source_records", "decisions", "privacy_ledger"]);
    assert!(lines.iter().all(|l| l["position"].as_u64() > Some(0)), "{status}");
}

/// Runs the `mdm` binary with `args` and returns its stdout (it must succeed).
fn mdm(dir: &std::path::Path, env: &[(&str, &str)], args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mdm"))
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("MDM_LOG", "warn")
        .envs(env.iter().copied())
        .output()
        .expect("mdm runs");
    assert!(
        out.status.success(),
        "mdm {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

on_both_backends!(ingest_answers_the_customer_token);
