//! `mdm serve` as a user starts it: the real binary, no configuration, an
//! empty working folder. It must serve `/health` on the embedded default and
//! stop cleanly on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Starts `mdm serve` in `dir` on a free port and returns it with its address.
fn start(dir: &std::path::Path, extra_env: &[(&str, &str)]) -> (Child, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mdm"));
    cmd.arg("serve")
        .current_dir(dir)
        .env_clear()
        .env("MDM_HTTP_LISTEN", "127.0.0.1:0")
        .env("MDM_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("mdm starts");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("mdm is serving") {
                let addr = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("address="))
                    .map(str::to_owned);
                let _ = tx.send(addr);
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("mdm announces its address")
        .expect("address in the log line");
    (child, addr)
}

/// `GET /health`, which must answer 200 with JSON.
async fn health(addr: &str) -> serde_json::Value {
    let response = reqwest::get(format!("http://{addr}/health"))
        .await
        .expect("health answers");
    assert_eq!(response.status(), 200);
    response.json().await.expect("json")
}

/// Runs `mdm serve` in `dir` with only `env`, expects it to refuse to start,
/// and returns what it printed on stderr.
fn refused_start(dir: &std::path::Path, env: &[(&str, &std::ffi::OsStr)]) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mdm"));
    cmd.arg("serve")
        .current_dir(dir)
        .env_clear()
        .env("MDM_HTTP_LISTEN", "127.0.0.1:0");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("runs");
    assert!(!out.status.success(), "mdm started although it should not");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    for _ in 0..200 {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("mdm did not stop within 10 s of SIGTERM");
}

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
    let admin = std::env::var("MDM_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/postgres".to_owned());
    let name = format!("mdm_test_serve_{}", std::process::id());
    let url = match admin.rsplit_once('/') {
        Some((server, _)) => format!("{server}/{name}"),
        None => panic!("MDM_TEST_DATABASE_URL has no database part"),
    };
    let psql = |sql: &str| {
        let out = Command::new("psql")
            .arg(&admin)
            .arg("-qc")
            .arg(sql)
            .output()
            .expect("psql runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    psql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
    psql(&format!("CREATE DATABASE {name}"));

    let dir = tempfile::tempdir().expect("temp dir");
    let (mut child, addr) = start(dir.path(), &[("MDM_EVENT_STORE_URL", &url)]);
    let body = health(&addr).await;
    assert_eq!(body["status"], "ok");
    assert_eq!(body["event_store"], "postgres");
    assert!(!dir.path().join("mdm-data").exists(), "nothing embedded was created");

    // The database goes away under the running service: health says so,
    // as a problem document that names no server, user or password.
    psql(&format!("DROP DATABASE {name} WITH (FORCE)"));
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
