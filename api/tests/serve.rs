//! `mdm serve` as a user starts it: the real binary, no configuration, an
//! empty working folder. It must serve `/health` on the embedded default and
//! stop cleanly on SIGTERM.

mod common;

use std::process::Command;

use common::{health, refused_start, start, terminate, PgDatabase, TEST_MASTER_KEY};

#[tokio::test]
async fn serve_with_no_configuration_runs_embedded_and_answers_health() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut child, addr) = start(dir.path(), &[]);

    let body = health(&addr).await;
    assert_eq!(body["status"], "ok");
    assert_eq!(body["event_store"], "sqlite");
    assert!(
        dir.path().join("mdm-data/events.db").exists(),
        "the embedded store lives under ./mdm-data"
    );

    assert!(terminate(&mut child).success(), "a clean exit on SIGTERM");
}

/// The composition root's PostgreSQL path: the same binary, pointed at a
/// fresh database through `MDM_EVENT_STORE_URL`.
#[tokio::test]
async fn serve_runs_on_postgresql_when_configured() {
    let db = PgDatabase::create("serve");
    let (url, name) = (db.url.clone(), db.name.clone());

    let dir = tempfile::tempdir().expect("temp dir");
    let (mut child, addr) = start(
        dir.path(),
        &[("MDM_EVENT_STORE_URL", &url), ("MDM_MASTER_KEY", TEST_MASTER_KEY)],
    );
    let body = health(&addr).await;
    assert_eq!(body["status"], "ok");
    assert_eq!(body["event_store"], "postgres");
    assert!(!dir.path().join("mdm-data").exists(), "nothing embedded was created");

    // The database goes away under the running service: health says so,
    // as a problem document that names no server, user or password.
    db.psql(&format!("DROP DATABASE {name} WITH (FORCE)"));
    let response = reqwest::get(format!("http://{addr}/health"))
        .await
        .expect("health answers");
    assert_eq!(response.status(), 503);
    assert_eq!(
        response.headers()["content-type"].to_str().expect("ascii"),
        "application/problem+json"
    );
    let body = response.text().await.expect("body");
    assert!(body.contains("\"status\":503"), "{body}");
    for secret in ["postgres:postgres", "127.0.0.1:5432", name.as_str()] {
        assert!(!body.contains(secret), "the problem leaks {secret}: {body}");
    }
    assert!(terminate(&mut child).success());
}

#[tokio::test]
async fn a_second_service_on_the_same_data_folder_refuses_to_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut first, _) = start(dir.path(), &[]);
    let stderr = refused_start(dir.path(), &[]);
    assert!(stderr.contains("another process"), "{stderr}");
    assert!(terminate(&mut first).success());
}

/// The README's sources example runs as is, and a bad definition stops the
/// service before it serves, naming the system and the field.
#[tokio::test]
async fn serve_loads_the_sources_file_and_refuses_a_bad_definition() {
    let dir = tempfile::tempdir().expect("temp dir");
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/sources.example.toml");
    let (mut child, addr) = start(dir.path(), &[("MDM_SOURCES_FILE", example)]);
    let body = health(&addr).await;
    assert_eq!(body["source_systems"], 7);
    assert!(terminate(&mut child).success());

    let dir = tempfile::tempdir().expect("a fresh folder for the refused start");
    let bad = dir.path().join("sources.toml");
    std::fs::write(
        &bad,
        "[[sources]]\nsystem = \"finance\"\ntrust_rank = 80\nformat = \"csv\"\nid = \"ACCOUNT_ID\"\n\
         name = { given = \"FIRST\" }\ndate_of_birth = { path = \"DOB\", formats = [] }\n",
    )
    .expect("write");
    let stderr = refused_start(dir.path(), &[("MDM_SOURCES_FILE", bad.as_os_str())]);
    assert!(
        stderr.contains("finance") && stderr.contains("date_of_birth"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("mdm-data").exists(),
        "nothing was opened before the check"
    );
}

#[test]
fn sources_check_lists_a_valid_file_and_names_what_is_wrong_in_a_bad_one() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/sources.example.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_mdm"))
        .args(["sources", "check", example])
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("dealer_b\tjson\ttrust 40"), "{stdout}");
    assert!(stdout.contains("7 source systems, all valid"), "{stdout}");

    let dir = tempfile::tempdir().expect("temp dir");
    let bad = dir.path().join("sources.toml");
    std::fs::write(
        &bad,
        "[[sources]]\nsystem = \"loyalty\"\ntrust_rank = 1\nformat = \"csv\"\nid = \"a.b\"\nname = { given = \"x\" }\n",
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_mdm"))
        .args(["sources", "check"])
        .arg(&bad)
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("loyalty") && stderr.contains("id"), "{stderr}");
}

#[tokio::test]
async fn an_invalid_setting_stops_start_up_with_its_name() {
    let dir = tempfile::tempdir().expect("temp dir");
    let stderr = refused_start(
        dir.path(),
        &[(
            "MDM_EVENT_STORE_URL",
            std::ffi::OsStr::new("mysql://root:hunter2@db/mdm"),
        )],
    );
    assert!(stderr.contains("MDM_EVENT_STORE_URL"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "a secret reached the output: {stderr}");
}

/// With a certificate configured the service speaks HTTPS only; a
/// certificate without its key stops start-up naming both settings.
#[tokio::test]
async fn serve_speaks_https_when_a_certificate_is_configured() {
    let dir = tempfile::tempdir().expect("temp dir");
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("self-signed certificate");
    let cert_pem = certified.cert.pem();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, &cert_pem).expect("write");
    std::fs::write(&key, certified.key_pair.serialize_pem()).expect("write");
    let (cert_s, key_s) = (cert.to_str().expect("utf-8"), key.to_str().expect("utf-8"));
    let (mut child, addr) = start(dir.path(), &[("MDM_TLS_CERT", cert_s), ("MDM_TLS_KEY", key_s)]);
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).expect("pem"))
        .build()
        .expect("client");
    let response = client
        .get(format!("https://{addr}/health"))
        .send()
        .await
        .expect("HTTPS answers");
    assert_eq!(response.status(), 200);
    let response = client
        .get(format!("https://{addr}/v1/customers?name=x"))
        .bearer_auth(common::admin_key(&addr))
        .send()
        .await
        .expect("HTTPS answers");
    assert_eq!(response.status(), 200, "authenticated over TLS");
    assert!(
        reqwest::get(format!("http://{addr}/health")).await.is_err()
            || reqwest::get(format!("http://{addr}/health"))
                .await
                .is_ok_and(|r| !r.status().is_success()),
        "plain HTTP is not served"
    );
    assert!(terminate(&mut child).success());

    let other = tempfile::tempdir().expect("temp dir");
    let stderr = refused_start(other.path(), &[("MDM_TLS_CERT", cert.as_os_str())]);
    assert!(stderr.contains("MDM_TLS_KEY"), "{stderr}");
}
