//! Helpers shared by the integration tests that run the real `mdm` binary.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The admin key of each service `start` started, by address.
static ADMIN_KEYS: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());

/// Registers an API client with `mdm clients add` (the operator's way),
/// with the same environment as the service, and returns its key.
pub fn add_client(
    dir: &std::path::Path,
    extra_env: &[(&str, &str)],
    name: &str,
    role: &str,
    scopes: Option<&str>,
) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mdm"));
    cmd.args(["clients", "add", "--name", name, "--role", role])
        .current_dir(dir)
        .env_clear()
        .env("MDM_LOG", "warn");
    if let Some(s) = scopes {
        cmd.args(["--scopes", s]);
    }
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("mdm clients add runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    line["key"].as_str().expect("a key").to_owned()
}

/// The admin key of the service at `addr` (started by [`start`]).
pub fn admin_key(addr: &str) -> String {
    let keys = ADMIN_KEYS.lock().expect("lock");
    keys.iter()
        .rev()
        .find(|(a, _)| a == addr)
        .map(|(_, k)| k.clone())
        .expect("a service started by common::start")
}

/// An HTTP client that authenticates with `key`.
pub fn client_with(key: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {key}").parse().expect("header"),
    );
    // Redirects are answers to check (a merged token), not to follow.
    reqwest::Client::builder()
        .default_headers(headers)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// An HTTP client with the admin key of the service at `addr`.
pub fn api(addr: &str) -> reqwest::Client {
    client_with(&admin_key(addr))
}

/// Starts `mdm serve` in `dir` on a free port and returns it with its
/// address; an admin client is registered first (see [`api`]).
pub fn start(dir: &std::path::Path, extra_env: &[(&str, &str)]) -> (Child, String) {
    let key_file = dir.join("test-admin.key");
    let key = match std::fs::read_to_string(&key_file) {
        Ok(k) => k,
        Err(_) => {
            let k = add_client(dir, extra_env, "test-admin", "admin", None);
            std::fs::write(&key_file, &k).expect("write the key");
            k
        }
    };
    let (child, addr) = start_plain(dir, extra_env);
    ADMIN_KEYS.lock().expect("lock").push((addr.clone(), key));
    (child, addr)
}

/// Starts `mdm serve` without registering any client.
pub fn start_plain(dir: &std::path::Path, extra_env: &[(&str, &str)]) -> (Child, String) {
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
    // The service's log goes to <dir>/serve.log, for a failing test to show.
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("serve.log"))
        .ok();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(f) = log.as_mut() {
                use std::io::Write;
                let _ = writeln!(f, "{line}");
            }
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
pub async fn health(addr: &str) -> serde_json::Value {
    let response = reqwest::get(format!("http://{addr}/health"))
        .await
        .expect("health answers");
    assert_eq!(response.status(), 200);
    response.json().await.expect("json")
}

/// Runs `mdm serve` in `dir` with only `env`, expects it to refuse to start,
/// and returns what it printed on stderr.
pub fn refused_start(dir: &std::path::Path, env: &[(&str, &std::ffi::OsStr)]) -> String {
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

pub fn terminate(child: &mut Child) -> std::process::ExitStatus {
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

/// A valid master key for tests that run on PostgreSQL (32 bytes, base64).
pub const TEST_MASTER_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// The sources example the README documents.
pub const SOURCES_EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/sources.example.toml");

/// A database of its own on the test server, dropped when this value is.
#[derive(Debug)]
pub struct PgDatabase {
    pub admin: String,
    pub name: String,
    pub url: String,
}

impl PgDatabase {
    pub fn create(purpose: &str) -> PgDatabase {
        let admin = std::env::var("MDM_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/postgres".to_owned());
        let name = format!(
            "mdm_test_{purpose}_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .subsec_nanos()
        );
        let url = match admin.rsplit_once('/') {
            Some((server, _)) => format!("{server}/{name}"),
            None => panic!("MDM_TEST_DATABASE_URL has no database part"),
        };
        let db = PgDatabase { admin, name, url };
        db.psql(&format!("CREATE DATABASE {}", db.name));
        db
    }

    /// Runs SQL on the admin database.
    pub fn psql(&self, sql: &str) -> String {
        psql(&self.admin, sql)
    }

    /// Runs SQL on this database and returns its unaligned output.
    pub fn query(&self, sql: &str) -> String {
        psql(&self.url, sql)
    }
}

fn psql(url: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .arg(url)
        .args(["-qAtc", sql])
        .output()
        .expect("psql runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .arg(&self.admin)
            .args(["-qc", &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)])
            .output();
    }
}

/// The event store a test deployment runs on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A service's data folder and, on PostgreSQL, its database; kept across
/// restarts of the binary within one test.
pub struct Deployment {
    pub dir: tempfile::TempDir,
    pub db: Option<PgDatabase>,
    /// More environment for the binary (later entries win).
    pub extra: Vec<(String, String)>,
}

impl Deployment {
    pub fn new(backend: Backend, purpose: &str) -> Deployment {
        Deployment {
            dir: tempfile::tempdir().expect("temp dir"),
            db: (backend == Backend::Postgres).then(|| PgDatabase::create(purpose)),
            extra: Vec::new(),
        }
    }

    /// The binary's environment: the sources example, and on PostgreSQL
    /// the database and a master key.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![("MDM_SOURCES_FILE".to_owned(), SOURCES_EXAMPLE.to_owned())];
        if let Some(db) = &self.db {
            env.push(("MDM_EVENT_STORE_URL".into(), db.url.clone()));
            env.push(("MDM_MASTER_KEY".into(), TEST_MASTER_KEY.into()));
        }
        env.extend(self.extra.iter().cloned());
        env
    }
}

/// Runs each named `async fn(Backend)` of the test file as two tests,
/// `sqlite::NAME` and `postgres::NAME`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(Backend::Sqlite).await;
                }
            )+
        }
        mod postgres {
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(Backend::Postgres).await;
                }
            )+
        }
    };
}

/// Where each of `values` is still stored: SQLite, every file of the data
/// folder as bytes; PostgreSQL, every text, JSON and bytea column of every
/// schema of the deployment's database. One entry per value and place.
pub async fn stored_values<V: AsRef<str>>(backend: Backend, d: &Deployment, values: &[V]) -> Vec<String> {
    let mut found = Vec::new();
    match backend {
        Backend::Sqlite => {
            let data = d.dir.path().join("mdm-data");
            for entry in std::fs::read_dir(&data).expect("data dir") {
                let path = entry.expect("entry").path();
                let bytes = std::fs::read(&path).expect("read");
                for v in values.iter().map(AsRef::as_ref) {
                    if bytes.windows(v.len()).any(|w| w == v.as_bytes()) {
                        found.push(format!("{v} in {}", path.display()));
                    }
                }
            }
        }
        Backend::Postgres => {
            use sqlx::Row;
            let url = &d.db.as_ref().expect("a database").url;
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect(url)
                .await
                .expect("connects");
            let columns = sqlx::query(
                "SELECT table_schema, table_name, column_name, data_type FROM information_schema.columns \
                 WHERE table_schema NOT IN ('pg_catalog', 'information_schema') \
                 AND data_type IN ('text', 'character varying', 'json', 'jsonb', 'bytea')",
            )
            .fetch_all(&pool)
            .await
            .expect("columns");
            assert!(columns.len() > 20, "{} columns", columns.len());
            for c in columns {
                let (schema, table, column, kind): (String, String, String, String) =
                    (c.get(0), c.get(1), c.get(2), c.get(3));
                let expr = if kind == "bytea" {
                    format!("position(convert_to($1, 'UTF8') in \"{column}\") > 0")
                } else {
                    format!("strpos(\"{column}\"::text, $1) > 0")
                };
                for v in values.iter().map(AsRef::as_ref) {
                    let sql = format!("SELECT count(*) FROM \"{schema}\".\"{table}\" WHERE {expr}");
                    let n: i64 = sqlx::query_scalar(&sql).bind(v).fetch_one(&pool).await.expect("scan");
                    if n > 0 {
                        found.push(format!("{v} in {schema}.{table}.{column}"));
                    }
                }
            }
        }
    }
    found
}

/// Runs an `mdm` command (the operator's CLI) in the deployment's folder,
/// with the service's environment.
pub fn mdm(d: &Deployment, env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mdm"))
        .args(args)
        .current_dir(d.dir.path())
        .env_clear()
        .env("MDM_LOG", "warn")
        .envs(env.iter().copied())
        .output()
        .expect("mdm runs")
}

/// The JSON lines a successful `mdm` command printed.
pub fn json_lines(out: &std::process::Output) -> Vec<serde_json::Value> {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}
