//! `mdm bench api`: the running service under load from a second process
//! on loopback, against a bare axum handler over the same database measured
//! in the same run.
//!
//! - Set-up, per backend: a fresh data folder (SQLite) or database
//!   (PostgreSQL), `mdm clients add` for an admin and a reader key, `mdm
//!   serve` started as a child process, `--customers` generated web
//!   sign-ups ingested over HTTP in batches, `/ready` awaited, and the
//!   tokens read with `mdm export xref`.
//! - Baseline: `mdm bench api --serve-baseline` in another child process:
//!   axum with one route that runs the same primary-key SELECT of the
//!   customer table (`query::customer`) through the same read-model pool
//!   and answers the row as JSON: no authentication, no scopes, no metrics.
//! - Reads: for each server, `--connections` closed-loop clients ask for
//!   random tokens for `--seconds` (saturation: requests/s); then each is
//!   paced at half the service's saturated rate over the same number of
//!   connections, open loop as wrk2 does it: request n is due at n/rate s
//!   and its latency counts from then, so a stall is charged to every
//!   request it delays: p50 and p99.
//! - Ingest: single new web sign-ups POSTed at `--ingest-rate` requests/s,
//!   paced the same way, each answered with its customer's token (the
//!   synchronous path): p50, p99 and the rate achieved.
//!
//! One JSON line per figure on stdout, medians over `--repeat` runs, with
//! the per-run values.
#![allow(clippy::print_stdout)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use mdm_projections::ReadDb;
use serde_json::{json, Value};
use sqlx::Connection;
use uuid::Uuid;

/// The sources the benchmark's service runs with.
const SOURCES: &str = include_str!("../../config/sources.example.toml");

/// Options of `mdm bench api`.
#[derive(Debug, clap::Args)]
pub struct ApiBenchArgs {
    /// Web sign-ups ingested before the reads: the customers asked for.
    #[arg(long, default_value_t = 5000)]
    pub customers: u64,
    /// Seconds of each load phase.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Concurrent clients of the saturation phase.
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Single-record ingest rate, requests/s.
    #[arg(long, default_value_t = 1000)]
    pub ingest_rate: u64,
    /// Runs per backend; medians are reported.
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Backends to measure: sqlite, postgres.
    #[arg(long, value_delimiter = ',', default_value = "sqlite")]
    pub backends: Vec<String>,
    /// The PostgreSQL server (a database is created and dropped per backend run).
    #[arg(
        long,
        env = "MDM_BENCH_DATABASE_URL",
        default_value = "postgres://postgres:postgres@127.0.0.1:5432/postgres",
        hide_env_values = true
    )]
    pub postgres_url: String,
    /// Where the data folders go (a temporary folder by default).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// More environment for the service, `NAME=VALUE` (repeatable), e.g.
    /// `MDM_SQLITE_FSYNC=false` to see what fsync costs.
    #[arg(long = "service-env")]
    pub service_env: Vec<String>,
    /// Phases to run: reads, ingest.
    #[arg(long, value_delimiter = ',', default_value = "reads,ingest")]
    pub phases: Vec<String>,
    /// Internal: serve the baseline over this read-model database (a SQLite
    /// path, or a postgres:// URL with `--baseline-schema`) and print its address.
    #[arg(long, hide = true)]
    pub serve_baseline: Option<String>,
    #[arg(long, hide = true, default_value = "mdm_read")]
    pub baseline_schema: String,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Runs `mdm bench api`.
pub async fn run_api_bench(args: ApiBenchArgs) -> anyhow::Result<()> {
    if let Some(db) = &args.serve_baseline {
        return serve_baseline(db, &args.baseline_schema).await;
    }
    let temp = tempfile::tempdir()?;
    let root = args.dir.clone().unwrap_or_else(|| temp.path().to_owned());
    std::fs::create_dir_all(&root)?;
    for backend in &args.backends {
        let mut runs: Vec<Figures> = Vec::new();
        for run in 0..args.repeat {
            let dir = root.join(format!("{backend}-{run}"));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir)?;
            let figures = match backend.as_str() {
                "sqlite" => one_run(&args, &dir, Vec::new(), None).await?,
                "postgres" => {
                    let name = format!("mdm_bench_api_{}", Uuid::now_v7().simple());
                    let mut admin = sqlx::PgConnection::connect(&args.postgres_url)
                        .await
                        .context("connecting to the PostgreSQL server")?;
                    sqlx::query(&format!("CREATE DATABASE {name}"))
                        .execute(&mut admin)
                        .await?;
                    let url = database_url(&args.postgres_url, &name);
                    let env = vec![
                        ("MDM_EVENT_STORE_URL".to_owned(), url.clone()),
                        (
                            "MDM_MASTER_KEY".to_owned(),
                            mdm_store::keys::MasterKey::generate().to_base64(),
                        ),
                    ];
                    let result = one_run(&args, &dir, env, Some(url)).await;
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut admin)
                        .await;
                    result?
                }
                other => bail!("unknown backend {other}: use sqlite or postgres"),
            };
            tracing::info!(backend, run, ?figures, "bench api run");
            runs.push(figures);
        }
        report(backend, &args, &runs);
    }
    Ok(())
}

/// `url` with its database name replaced by `name`.
fn database_url(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let base = match base.rfind('/') {
        Some(i) if i > "postgres://".len() => &base[..i],
        _ => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

#[derive(Clone, Debug, Default)]
struct Figures {
    service_rps: f64,
    baseline_rps: f64,
    half_load_rate: f64,
    half_load_p50_ms: f64,
    half_load_p99_ms: f64,
    half_load_errors: u64,
    baseline_half_load_p99_ms: f64,
    ingest_p50_ms: f64,
    ingest_p99_ms: f64,
    ingest_achieved_rate: f64,
    ingest_errors: u64,
}

fn report(backend: &str, args: &ApiBenchArgs, runs: &[Figures]) {
    let figure = |name: &str, unit: &str, values: Vec<f64>, extra: Value| {
        let mut line = json!({
            "bench": "api",
            "backend": backend,
            "figure": name,
            "unit": unit,
            "median": median(values.clone()),
            "runs": values,
            "customers": args.customers,
            "seconds": args.seconds,
            "connections": args.connections,
        });
        if let (Some(l), Some(e)) = (line.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                l.insert(k.clone(), v.clone());
            }
        }
        println!("{line}");
    };
    let col = |f: fn(&Figures) -> f64| runs.iter().map(f).collect::<Vec<f64>>();
    figure("customer_by_token_rps", "requests/s", col(|f| f.service_rps), json!({}));
    figure(
        "baseline_primary_key_select_rps",
        "requests/s",
        col(|f| f.baseline_rps),
        json!({"note": "bare axum handler, one primary-key SELECT through the same read-model pool, no auth"}),
    );
    figure(
        "customer_by_token_ratio_to_baseline",
        "ratio",
        col(|f| {
            if f.baseline_rps > 0.0 {
                f.service_rps / f.baseline_rps
            } else {
                0.0
            }
        }),
        json!({"target": 0.7}),
    );
    figure(
        "customer_by_token_half_load_rate",
        "requests/s",
        col(|f| f.half_load_rate),
        json!({}),
    );
    figure(
        "customer_by_token_half_load_p50",
        "ms",
        col(|f| f.half_load_p50_ms),
        json!({}),
    );
    figure(
        "customer_by_token_half_load_p99",
        "ms",
        col(|f| f.half_load_p99_ms),
        json!({"target": 5.0, "errors": runs.iter().map(|f| f.half_load_errors).sum::<u64>()}),
    );
    figure(
        "baseline_half_load_p99",
        "ms",
        col(|f| f.baseline_half_load_p99_ms),
        json!({}),
    );
    figure(
        "single_record_ingest_p50",
        "ms",
        col(|f| f.ingest_p50_ms),
        json!({"rate": args.ingest_rate}),
    );
    figure(
        "single_record_ingest_p99",
        "ms",
        col(|f| f.ingest_p99_ms),
        json!({"rate": args.ingest_rate, "target": 25.0, "errors": runs.iter().map(|f| f.ingest_errors).sum::<u64>()}),
    );
    figure(
        "single_record_ingest_achieved_rate",
        "requests/s",
        col(|f| f.ingest_achieved_rate),
        json!({}),
    );
}

/// A child process whose stderr is drained (and scanned) on a thread.
struct Proc {
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `exe args` and waits for a line containing `marker`; returns the
/// process and the word after `key=` (or the whole line's last word).
fn spawn_and_wait(mut cmd: Command, marker: &str, from_stdout: bool) -> anyhow::Result<(Proc, String)> {
    if from_stdout {
        cmd.stdout(Stdio::piped()).stderr(Stdio::null());
    } else {
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    }
    let mut child = cmd.spawn().context("starting a child process")?;
    let stream: Box<dyn std::io::Read + Send> = if from_stdout {
        Box::new(child.stdout.take().context("stdout")?)
    } else {
        Box::new(child.stderr.take().context("stderr")?)
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let marker = marker.to_owned();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if !sent && line.contains(&marker) {
                let addr = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("address="))
                    .map(str::to_owned)
                    .or_else(|| line.split_whitespace().last().map(str::to_owned));
                let _ = tx.send(addr);
                sent = true;
            }
        }
    });
    let proc = Proc { child };
    let addr = rx
        .recv_timeout(Duration::from_secs(120))
        .context("the child process did not announce its address")?
        .context("no address in its announcement")?;
    Ok((proc, addr))
}

fn mdm(dir: &Path, env: &[(String, String)]) -> Command {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("mdm"));
    let mut cmd = Command::new(exe);
    cmd.current_dir(dir)
        .env_clear()
        .env("MDM_LOG", "info,mdm_projections=warn,mdm_commands=warn")
        .env("MDM_SOURCES_FILE", dir.join("sources.toml"))
        .env("MDM_HTTP_LISTEN", "127.0.0.1:0");
    if let Ok(path) = std::env::var("PATH") {
        cmd.env("PATH", path);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

fn add_client(dir: &Path, env: &[(String, String)], name: &str, role: &str) -> anyhow::Result<String> {
    let out = mdm(dir, env)
        .args(["clients", "add", "--name", name, "--role", role])
        .env("MDM_LOG", "warn")
        .output()?;
    if !out.status.success() {
        bail!("mdm clients add failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let line: Value = serde_json::from_slice(&out.stdout)?;
    Ok(line["key"].as_str().context("no key")?.to_owned())
}

/// A synthetic, distinct person.
fn signup(run: &str, i: u64) -> Value {
    const GIVEN: [&str; 20] = [
        "Amara", "Bjorn", "Chiara", "Dmitri", "Esme", "Farid", "Greta", "Hiroshi", "Ines", "Jonas", "Keziah", "Lorcan",
        "Mireille", "Nikolai", "Oona", "Pavel", "Quilla", "Rasmus", "Saoirse", "Tobias",
    ];
    const FAMILY: [&str; 20] = [
        "Abernathy",
        "Baptiste",
        "Castellano",
        "Dunmore",
        "Eriksen",
        "Fairbairn",
        "Galloway",
        "Halvorsen",
        "Ingram",
        "Jablonski",
        "Kowalczyk",
        "Lindqvist",
        "Marchetti",
        "Nakashima",
        "Okafor",
        "Pellegrino",
        "Quintero",
        "Rasmussen",
        "Szabo",
        "Thorvaldsen",
    ];
    let g = GIVEN[(i % 20) as usize];
    let f = FAMILY[((i / 20) % 20) as usize];
    json!({
        "signupId": format!("B-{run}-{i}"),
        "firstName": g,
        "lastName": format!("{f}{}", i / 400),
        "email": format!("{}.{}.{run}.{i}@bench.example", g.to_lowercase(), f.to_lowercase()),
        "mobile": format!("+1 312 {:03} {:04}", 200 + (i / 10_000) % 700, i % 10_000),
        "birthDate": format!("{}-{:02}-{:02}", 1940 + i % 60, 1 + i % 12, 1 + i % 28),
    })
}

async fn one_run(
    args: &ApiBenchArgs,
    dir: &Path,
    env: Vec<(String, String)>,
    postgres: Option<String>,
) -> anyhow::Result<Figures> {
    std::fs::write(dir.join("sources.toml"), SOURCES)?;
    let mut env = env;
    for pair in &args.service_env {
        let (k, v) = pair.split_once('=').context("--service-env takes NAME=VALUE")?;
        env.push((k.to_owned(), v.to_owned()));
    }
    let admin_key = add_client(dir, &env, "bench-admin", "admin")?;
    let reader_key = add_client(dir, &env, "bench-reader", "reader")?;
    let mut serve = mdm(dir, &env);
    serve.arg("serve");
    let (service, addr) = spawn_and_wait(serve, "mdm is serving", false)?;
    let http = reqwest::Client::builder().pool_max_idle_per_host(256).build()?;

    // Load the customers in batches, then wait for the read models.
    let started = Instant::now();
    let batch = 500;
    let mut i = 0;
    while i < args.customers {
        let n = batch.min(args.customers - i);
        let records: Vec<Value> = (i..i + n).map(|k| signup("load", k)).collect();
        let r = http
            .post(format!("http://{addr}/v1/sources/web_signup/records"))
            .bearer_auth(&admin_key)
            .json(&records)
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("loading the customers: HTTP {}", r.status());
        }
        i += n;
    }
    let mut ready = false;
    for _ in 0..1200 {
        if http.get(format!("http://{addr}/ready")).send().await?.status() == StatusCode::OK {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !ready {
        bail!("the service did not become ready");
    }
    tracing::info!(
        seconds = started.elapsed().as_secs_f64(),
        customers = args.customers,
        "loaded"
    );
    // Ready allows a few seconds of lag: wait until every record has its
    // customer in the cross-reference.
    let mut tokens: Vec<Uuid> = Vec::new();
    let mut failures = 0;
    for _ in 0..600 {
        let xref = mdm(dir, &env)
            .args(["export", "xref"])
            .env("MDM_LOG", "warn")
            .output()?;
        if !xref.status.success() {
            // Seen once under a full parallel test run on PostgreSQL (the
            // cross-reference table not there yet right after /ready):
            // retried for a few seconds before it counts as a failure.
            failures += 1;
            if failures > 20 {
                bail!("mdm export xref failed: {}", String::from_utf8_lossy(&xref.stderr));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
            continue;
        }
        let text = String::from_utf8(xref.stdout)?;
        let rows = text.lines().skip(1).count() as u64;
        tokens = text
            .lines()
            .skip(1)
            .filter_map(|l| l.rsplit(',').next())
            .filter_map(|t| Uuid::try_parse(t).ok())
            .collect();
        if rows >= args.customers {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokens.sort();
    tokens.dedup();
    if tokens.is_empty() {
        bail!("no customer tokens");
    }
    let tokens = Arc::new(tokens);

    let mut figures = Figures::default();
    let seconds = Duration::from_secs(args.seconds);
    if args.phases.iter().any(|p| p == "reads") {
        // The baseline over the same read-model database.
        let mut baseline_cmd = mdm(dir, &env);
        baseline_cmd.args(["bench", "api", "--serve-baseline"]);
        match &postgres {
            Some(url) => baseline_cmd.arg(url),
            None => baseline_cmd.arg(dir.join("mdm-data").join("read.db")),
        };
        let (baseline, baseline_addr) = spawn_and_wait(baseline_cmd, "baseline listening on", true)?;
        let service_url = {
            let addr = addr.clone();
            move |t: Uuid| format!("http://{addr}/v1/customers/{t}")
        };
        let baseline_url = move |t: Uuid| format!("http://{baseline_addr}/c/{t}");
        // Warm both.
        let warm = Duration::from_secs(1);
        saturate(&http, &tokens, &service_url, Some(&reader_key), args.connections, warm).await;
        saturate(&http, &tokens, &baseline_url, None, args.connections, warm).await;
        let (service_rps, _) = saturate(
            &http,
            &tokens,
            &service_url,
            Some(&reader_key),
            args.connections,
            seconds,
        )
        .await;
        let (baseline_rps, _) = saturate(&http, &tokens, &baseline_url, None, args.connections, seconds).await;
        let half = (service_rps / 2.0).max(1.0);
        let reads = paced(&http, seconds, half, args.connections, {
            let tokens = tokens.clone();
            let key = reader_key.clone();
            move |http, n| {
                let t = tokens[(n.wrapping_mul(2_654_435_761) % tokens.len() as u64) as usize];
                http.get(service_url(t)).bearer_auth(&key)
            }
        })
        .await;
        let base_reads = paced(&http, seconds, half, args.connections, {
            let tokens = tokens.clone();
            move |http, n| {
                let t = tokens[(n.wrapping_mul(2_654_435_761) % tokens.len() as u64) as usize];
                http.get(baseline_url(t))
            }
        })
        .await;
        drop(baseline);
        figures.service_rps = service_rps;
        figures.baseline_rps = baseline_rps;
        figures.half_load_rate = half;
        figures.half_load_p50_ms = reads.p50_ms;
        figures.half_load_p99_ms = reads.p99_ms;
        figures.half_load_errors = reads.errors;
        figures.baseline_half_load_p99_ms = base_reads.p99_ms;
    }
    if args.phases.iter().any(|p| p == "ingest") {
        // Single-record synchronous ingest at a fixed rate.
        let run_id = Uuid::now_v7().simple().to_string()[..8].to_owned();
        let ingest = paced(&http, seconds, args.ingest_rate as f64, args.connections, {
            let addr = addr.clone();
            let key = admin_key.clone();
            move |http, n| {
                http.post(format!("http://{addr}/v1/sources/web_signup/records"))
                    .bearer_auth(&key)
                    .json(&signup(&run_id, n))
            }
        })
        .await;
        figures.ingest_p50_ms = ingest.p50_ms;
        figures.ingest_p99_ms = ingest.p99_ms;
        figures.ingest_achieved_rate = ingest.achieved_rate;
        figures.ingest_errors = ingest.errors;
    }
    drop(service);
    Ok(figures)
}

/// Closed loop: `connections` clients each asking for random tokens until
/// `duration` ends. Returns requests/s (successful answers) and errors.
async fn saturate(
    http: &reqwest::Client,
    tokens: &Arc<Vec<Uuid>>,
    url: &(impl Fn(Uuid) -> String + Clone + Send + Sync + 'static),
    key: Option<&str>,
    connections: usize,
    duration: Duration,
) -> (f64, u64) {
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..connections {
        let (http, tokens, url, done, errors, stop) = (
            http.clone(),
            tokens.clone(),
            url.clone(),
            done.clone(),
            errors.clone(),
            stop.clone(),
        );
        let key = key.map(str::to_owned);
        tasks.push(tokio::spawn(async move {
            let mut n = c as u64 * 7919;
            while !stop.load(Ordering::Relaxed) {
                n = n.wrapping_add(1);
                let t = tokens[(n.wrapping_mul(2_654_435_761) % tokens.len() as u64) as usize];
                let mut req = http.get(url(t));
                if let Some(k) = &key {
                    req = req.bearer_auth(k);
                }
                match req.send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let counted = done.load(Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    for t in tasks {
        let _ = t.await;
    }
    (counted as f64 / elapsed, errors.load(Ordering::Relaxed))
}

struct Paced {
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
    achieved_rate: f64,
}

/// Open loop over a fixed set of connections (as wrk2 does): request `n` is
/// due at `n / rate` s and is sent by worker `n % workers` as soon as that
/// worker is free; its latency counts from when it was due, so a stall is
/// charged to every request it delays and the generator never hides one by
/// sending less (coordinated omission).
async fn paced(
    http: &reqwest::Client,
    duration: Duration,
    rate: f64,
    workers: usize,
    request: impl Fn(&reqwest::Client, u64) -> reqwest::RequestBuilder + Send + Sync + 'static,
) -> Paced {
    let request = Arc::new(request);
    let errors = Arc::new(AtomicU64::new(0));
    let interval = Duration::from_secs_f64(1.0 / rate.max(1.0));
    let total = (duration.as_secs_f64() * rate).round() as u64;
    let workers = workers.max(1) as u64;
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (http, request, errors) = (http.clone(), request.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity((total / workers + 1) as usize);
            let mut n = w;
            while n < total {
                let due = start + interval.mul_f64(n as f64);
                tokio::time::sleep_until(due).await;
                let ok = match request(&http, n).send().await {
                    Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                    _ => false,
                };
                if ok {
                    latencies.push(due.elapsed().as_secs_f64() * 1000.0);
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                n += workers;
            }
            latencies
        }));
    }
    let mut l = Vec::with_capacity(total as usize);
    for t in tasks {
        if let Ok(part) = t.await {
            l.extend(part);
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    l.sort_by(f64::total_cmp);
    Paced {
        p50_ms: percentile(&l, 0.50),
        p99_ms: percentile(&l, 0.99),
        errors: errors.load(Ordering::Relaxed),
        achieved_rate: l.len() as f64 / elapsed,
    }
}

/// The baseline server: one primary-key SELECT per request.
async fn serve_baseline(db: &str, schema: &str) -> anyhow::Result<()> {
    let read = if db.starts_with("postgres://") || db.starts_with("postgresql://") {
        ReadDb::open_postgres(db, schema).await?
    } else {
        ReadDb::open_sqlite(Path::new(db)).await?
    };
    async fn one(State(db): State<ReadDb>, UrlPath(token): UrlPath<Uuid>) -> Response {
        match mdm_projections::query::customer(&db, token).await {
            Ok(Some(c)) => Json(c).into_response(),
            Ok(None) => StatusCode::NOT_FOUND.into_response(),
            Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        }
    }
    let app = Router::new().route("/c/{token}", get(one)).with_state(read);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("baseline listening on {}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
