//! `mdm demo` as a new user runs it: the real binary prepares a fresh
//! folder, prints keys and curl commands, and serves; the printed commands
//! work as printed.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{client_with, terminate};
use serde_json::Value;

/// A `curl` line of the guide: its bearer key (if any) and URL.
#[derive(Debug, Clone)]
struct Curl {
    key: Option<String>,
    url: String,
}

fn parse_curl(line: &str) -> Curl {
    let key = line
        .split_once("Bearer ")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(k, _)| k.to_owned());
    let last = line.split_whitespace().last().expect("a URL");
    Curl {
        key,
        url: last.trim_matches('"').to_owned(),
    }
}

/// Sends the printed command's request: (status, JSON body or Null).
async fn run(curl: &Curl) -> (u16, Value) {
    let http = match &curl.key {
        Some(k) => client_with(k),
        None => reqwest::Client::new(),
    };
    let response = http.get(&curl.url).send().await.expect("the service answers");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Repeats the printed command until `done` accepts its answer.
async fn until(curl: &Curl, what: &str, done: impl Fn(u16, &Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = run(curl).await;
        if done(status, &body) {
            return body;
        }
        assert!(Instant::now() < deadline, "{what}: still {status} {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn the_demo_prepares_a_folder_prints_working_commands_and_serves() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("demo");
    let mut child = Command::new(env!("CARGO_BIN_EXE_mdm"))
        .args(["demo", "--dir", dir.to_str().expect("utf-8"), "--people", "50"])
        .args(["--listen", "127.0.0.1:0"])
        .current_dir(tmp.path())
        .env_clear()
        .env("MDM_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mdm starts");

    let stdout_lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let stderr_text = Arc::new(Mutex::new(String::new()));
    let out = child.stdout.take().expect("stdout");
    let lines = stdout_lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            lines.lock().expect("lock").push(line);
        }
    });
    let err = child.stderr.take().expect("stderr");
    let log = stderr_text.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if line.contains("mdm is serving") {
                let addr = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("address="))
                    .map(str::to_owned);
                let _ = tx.send(addr);
            }
            let mut log = log.lock().expect("lock");
            log.push_str(&line);
            log.push('\n');
        }
    });
    let addr = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(a) => a.expect("address in the log line"),
        Err(_) => {
            let _ = child.kill();
            panic!("mdm demo did not serve: {}", stderr_text.lock().expect("lock"));
        }
    };

    // The guide is printed before serving; its last command is the metrics one.
    let deadline = Instant::now() + Duration::from_secs(10);
    let guide = loop {
        let lines = stdout_lines.lock().expect("lock").clone();
        if lines.iter().any(|l| l.contains("Stop with Ctrl-C")) {
            break lines;
        }
        assert!(Instant::now() < deadline, "incomplete guide: {lines:#?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = guide.join("\n");
    assert!(text.contains("warranty_api"), "{text}");
    assert!(text.contains("not simulated"), "{text}");
    assert!(text.contains(&format!("Serving on http://{addr}")), "{text}");

    // Three keys: admin, steward, and the dealer's reader.
    let key_of = |role: &str| {
        guide
            .iter()
            .filter_map(|l| {
                let words: Vec<&str> = l.split_whitespace().collect();
                (words.len() == 3 && words[0] == role && words[2].starts_with("mdm_")).then(|| words[2].to_owned())
            })
            .next()
            .unwrap_or_else(|| panic!("no {role} key in {text}"))
    };
    let (admin, steward, reader) = (key_of("admin"), key_of("steward"), key_of("reader"));

    let curls: Vec<Curl> = guide
        .iter()
        .map(|l| l.trim())
        .filter(|l| l.starts_with("curl "))
        .map(parse_curl)
        .collect();
    assert!(curls.len() >= 7, "{text}");
    for c in &curls {
        assert!(c.url.starts_with(&format!("http://{addr}/")), "{c:?}");
    }
    let find = |path: &str, key: Option<&str>| {
        curls
            .iter()
            .find(|c| c.url.contains(path) && c.key.as_deref() == key)
            .unwrap_or_else(|| panic!("no command for {path} in {text}"))
            .clone()
    };

    until(&find("/ready", None), "/ready", |s, _| s == 200).await;

    let search = find("/v1/customers?name=", Some(&admin));
    let found = until(&search, "admin search", |s, b| {
        s == 200 && b["customers"].as_array().is_some_and(|c| !c.is_empty())
    })
    .await;
    let family = search.url.rsplit('=').next().expect("name").to_lowercase();
    let customers = found["customers"].as_array().expect("customers");
    assert!(
        customers
            .iter()
            .any(|c| c["attributes"]["name"].to_string().to_lowercase().contains(&family)),
        "{found}"
    );
    // The admin sees every field.
    assert!(
        customers
            .iter()
            .any(|c| c["attributes"]["email"].is_string() || c["attributes"]["address"].is_object()),
        "{found}"
    );

    // The dealer's reader key sees name and phone only.
    let (status, body) = run(&find("/v1/customers?name=", Some(&reader))).await;
    assert_eq!(status, 200, "{body}");
    let customers = body["customers"].as_array().expect("customers");
    assert!(!customers.is_empty(), "{body}");
    for c in customers {
        let keys: Vec<&String> = c["attributes"].as_object().expect("attributes").keys().collect();
        assert!(keys.iter().all(|k| *k == "name" || *k == "phone"), "{body}");
    }

    let customer = until(&find("/v1/customers/by-source/", Some(&admin)), "by source", |s, _| {
        s == 200
    })
    .await;
    assert!(customer["token"].is_string(), "{customer}");
    let (status, body) = run(&find("/v1/reviews", Some(&steward))).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = run(&find("/openapi.json", None)).await;
    assert_eq!(status, 200);
    assert!(body["paths"].is_object());
    let (status, _) = run(&find("/v1/metrics", Some(&admin))).await;
    assert_eq!(status, 200);

    let exit = terminate(&mut child);
    assert!(exit.success(), "{exit:?}");
    let log = stderr_text.lock().expect("lock").clone();
    for key in [&admin, &steward, &reader] {
        assert!(!log.contains(key.as_str()), "a key reached the log");
    }
    assert!(log.contains("mdm stopped"), "{log}");
}

#[test]
fn the_demo_refuses_a_folder_that_is_not_empty() {
    let tmp = tempfile::tempdir().expect("temp dir");
    std::fs::write(tmp.path().join("keep.txt"), "mine").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_mdm"))
        .args(["demo", "--no-serve", "--people", "5", "--dir"])
        .arg(tmp.path())
        .env_clear()
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is not empty"), "{stderr}");
    assert_eq!(std::fs::read_dir(tmp.path()).expect("dir").count(), 1);
}
