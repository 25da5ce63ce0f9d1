//! Hostile input at the HTTP edge, over real HTTP against `mdm serve`
//! (docs/hostile-input.md): slowloris heads are cut within the header read
//! timeout while other clients are served; a trickled body gets 408; a
//! flood of connections beyond the limit gets quick 503s and leaves memory
//! bounded; requests beyond the in-flight limit are shed with 503 and
//! `Retry-After`; deep nesting, huge bodies, invalid UTF-8, wrong content
//! types and malformed parameters get 4xx problem documents on every
//! operation of the OpenAPI document.

mod common;

use std::time::{Duration, Instant};

use common::{api, start, terminate, SOURCES_EXAMPLE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The service's resident memory, from /proc (kB).
fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// A raw HTTP/1.1 answer: status, lower-cased head, body.
#[derive(Debug)]
struct Raw {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == name).then_some(v.trim())
        })
    }
}

/// Reads one answer (head and a `content-length` body) from `stream`.
async fn read_answer<R: tokio::io::AsyncRead + Unpin>(stream: &mut R) -> Option<Raw> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let mut raw = Raw {
        status,
        head,
        body: buf[head_end..].to_vec(),
    };
    let length: usize = raw.header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    while raw.body.len() < length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        raw.body.extend_from_slice(&chunk[..n]);
    }
    Some(raw)
}

/// Waits until the server closes `stream` (read gives 0 or an error);
/// returns when, or `None` if it stayed open for `bound`.
async fn closed_within<R: tokio::io::AsyncRead + Unpin>(stream: &mut R, bound: Duration) -> Option<Instant> {
    let mut sink = [0u8; 1024];
    tokio::time::timeout(bound, async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return Instant::now(),
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
}

fn sources_env() -> Vec<(&'static str, &'static str)> {
    vec![("MDM_SOURCES_FILE", SOURCES_EXAMPLE)]
}

/// Slowloris: connections that trickle their request head (one header line
/// a second, never the blank line) and one that sends nothing are cut
/// within the default header read timeout (10 s), while a normal client is
/// served at once throughout.
#[tokio::test]
async fn slowloris_heads_are_cut_while_normal_clients_are_served() {
    let dir = tempfile::tempdir().expect("dir");
    let (mut child, addr) = start(dir.path(), &sources_env());
    const BOUND: Duration = Duration::from_secs(10);
    let mut tricklers = Vec::new();
    for i in 0..20 {
        let addr = addr.clone();
        tricklers.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(&addr).await.expect("connect");
            let opened = Instant::now();
            if i == 0 {
                // Idle: connects and sends nothing.
                let closed = closed_within(&mut s, BOUND * 3).await;
                return closed.map(|t| t - opened);
            }
            if s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").await.is_err() {
                return Some(opened.elapsed());
            }
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if opened.elapsed() > BOUND * 3 {
                    return None;
                }
                if s.write_all(b"X-Slow: yes\r\n").await.is_err() {
                    return Some(opened.elapsed());
                }
                // Closed by the server: the read sees it at once.
                let mut probe = [0u8; 64];
                if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(10), s.read(&mut probe)).await {
                    if n == 0 {
                        return Some(opened.elapsed());
                    }
                }
            }
        }));
    }
    // A normal client meanwhile.
    let client = reqwest::Client::new();
    let mut worst = Duration::ZERO;
    for _ in 0..10 {
        let t = Instant::now();
        let r = client
            .get(format!("http://{addr}/health"))
            .send()
            .await
            .expect("health");
        assert_eq!(r.status(), 200);
        worst = worst.max(t.elapsed());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut cut = Vec::new();
    for t in tricklers {
        let after = t.await.expect("task").expect("a slowloris connection was never cut");
        cut.push(after);
    }
    let slowest = cut.iter().max().copied().unwrap_or_default();
    let fastest = cut.iter().min().copied().unwrap_or_default();
    println!(
        "slowloris: {} connections (one idle, the rest trickling a header line a second) cut after {:.2}–{:.2} s \
         (bound {} s); a normal client's slowest /health meanwhile {:.0} ms",
        cut.len(),
        fastest.as_secs_f64(),
        slowest.as_secs_f64(),
        BOUND.as_secs(),
        worst.as_secs_f64() * 1000.0
    );
    assert!(slowest <= BOUND + Duration::from_secs(2), "cut after {slowest:?}");
    assert!(fastest >= BOUND - Duration::from_secs(1), "cut too early: {fastest:?}");
    assert!(worst < Duration::from_secs(2), "normal client waited {worst:?}");
    terminate(&mut child);
}

/// A body trickled in after the head is abandoned after the body read
/// timeout with 408 and the connection closed; requests beyond the
/// in-flight limit (here held by those slow bodies) are shed with 503 and
/// `Retry-After` meanwhile, and served again afterwards.
#[tokio::test]
async fn slow_bodies_get_408_and_excess_requests_are_shed() {
    let dir = tempfile::tempdir().expect("dir");
    let mut env = sources_env();
    env.push(("MDM_HTTP_BODY_READ_TIMEOUT_MS", "3000"));
    env.push(("MDM_HTTP_MAX_IN_FLIGHT", "4"));
    let (mut child, addr) = start(dir.path(), &env);
    let key = common::admin_key(&addr);
    // The key is verified once (Argon2) and cached.
    assert_eq!(
        api(&addr)
            .get(format!("http://{addr}/v1/webhooks"))
            .send()
            .await
            .expect("webhooks")
            .status(),
        200
    );
    let mut slow = Vec::new();
    for _ in 0..4 {
        let addr = addr.clone();
        let key = key.clone();
        slow.push(tokio::spawn(async move {
            let s = TcpStream::connect(&addr).await.expect("connect");
            let (mut reader, mut s) = s.into_split();
            let head = format!(
                "POST /v1/webhooks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
                 Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
            );
            s.write_all(head.as_bytes()).await.expect("head");
            let sent = Instant::now();
            let writer = async {
                loop {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    if s.write_all(b" ").await.is_err() {
                        break;
                    }
                }
            };
            let answer = tokio::select! {
                a = read_answer(&mut reader) => a,
                () = writer => None,
            };
            (answer, sent.elapsed(), reader)
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    // Four requests wait for their bodies: the next one is shed.
    let t = Instant::now();
    let shed = reqwest::get(format!("http://{addr}/health")).await.expect("health");
    let shed_ms = t.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(shed.status(), 503);
    assert_eq!(shed.headers()["retry-after"], "1");
    assert_eq!(shed.headers()["content-type"], "application/problem+json");
    let mut timings = Vec::new();
    for task in slow {
        let (answer, after, mut stream) = task.await.expect("task");
        let answer = answer.expect("an answer to the slow body");
        assert_eq!(answer.status, 408, "{answer:?}");
        assert_eq!(answer.header("content-type"), Some("application/problem+json"));
        let problem: serde_json::Value = serde_json::from_slice(&answer.body).expect("problem json");
        assert_eq!(problem["field"], "body");
        assert!(
            closed_within(&mut stream, Duration::from_secs(3)).await.is_some(),
            "connection left open after 408"
        );
        timings.push(after);
    }
    // Served again, and the metrics count what was turned away.
    assert_eq!(
        reqwest::get(format!("http://{addr}/health"))
            .await
            .expect("health")
            .status(),
        200
    );
    let metrics = api(&addr)
        .get(format!("http://{addr}/v1/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for needle in [
        "mdm_http_turned_away{reason=\"in_flight_limit\"} 1",
        "mdm_http_turned_away{reason=\"body_timeout\"} 4",
    ] {
        assert!(metrics.contains(needle), "{needle} missing from:\n{metrics}");
    }
    let slowest = timings.iter().max().copied().unwrap_or_default();
    println!(
        "slow body: 4 bodies trickled a byte every 300 ms answered 408 after {:.2} s at most (bound 3 s); \
         a 5th request meanwhile shed with 503 + Retry-After in {shed_ms:.1} ms",
        slowest.as_secs_f64()
    );
    assert!(slowest < Duration::from_secs(5), "{slowest:?}");
    terminate(&mut child);
}

/// A flood of connections beyond the limit: every connection gets an
/// answer quickly (200 within the limit, 503 with `Retry-After` beyond),
/// none hangs, resident memory stays bounded, and once the flood closes a
/// normal client is served at once.
#[tokio::test]
async fn a_connection_flood_gets_bounded_answers() {
    let dir = tempfile::tempdir().expect("dir");
    let mut env = sources_env();
    env.push(("MDM_HTTP_MAX_CONNECTIONS", "64"));
    let (mut child, addr) = start(dir.path(), &env);
    let pid = child.id();
    common::health(&addr).await;
    let rss_before = rss_kb(pid);
    const FLOOD: usize = 2000;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..FLOOD {
        let addr = addr.clone();
        tasks.spawn(async move {
            let t = Instant::now();
            let mut s = match TcpStream::connect(&addr).await {
                Ok(s) => s,
                Err(_) => return (None, t.elapsed(), None),
            };
            if s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await.is_err() {
                return (None, t.elapsed(), None);
            }
            let answer = tokio::time::timeout(Duration::from_secs(5), read_answer(&mut s))
                .await
                .ok()
                .flatten();
            // Keep the connection (a keep-alive client would).
            (answer, t.elapsed(), Some(s))
        });
    }
    let mut ok = 0;
    let mut refused = 0;
    let mut closed_without_answer = 0;
    let mut slowest = Duration::ZERO;
    let mut held = Vec::new();
    let mut rss_peak = rss_before;
    while let Some(joined) = tasks.join_next().await {
        let (answer, took, stream) = joined.expect("task");
        slowest = slowest.max(took);
        match answer {
            Some(a) if a.status == 200 => ok += 1,
            Some(a) if a.status == 503 => {
                assert_eq!(a.header("retry-after"), Some("1"));
                assert_eq!(a.header("content-type"), Some("application/problem+json"));
                refused += 1;
            }
            Some(a) => panic!("unexpected answer {}", a.status),
            None => closed_without_answer += 1,
        }
        held.extend(stream);
        rss_peak = rss_peak.max(rss_kb(pid));
    }
    let flood_seconds = started.elapsed().as_secs_f64();
    let rss_during = rss_kb(pid);
    // With the flood's connections still open, the service still answers
    // (with a refusal: the limit holds; once the flood's refusals are
    // written, a second after it)...
    tokio::time::sleep(Duration::from_secs(1)).await;
    let t = Instant::now();
    let mut s = TcpStream::connect(&addr).await.expect("connect");
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let answer = tokio::time::timeout(Duration::from_secs(2), read_answer(&mut s))
        .await
        .expect("answered within 2 s")
        .expect("an answer");
    assert_eq!(answer.status, 503);
    let refusal_ms = t.elapsed().as_secs_f64() * 1000.0;
    // ... and once they close, it serves at once.
    drop(held);
    drop(s);
    let t = Instant::now();
    let mut served = false;
    while t.elapsed() < Duration::from_secs(5) {
        if let Ok(r) = reqwest::get(format!("http://{addr}/health")).await {
            if r.status() == 200 {
                served = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let recovered_ms = t.elapsed().as_secs_f64() * 1000.0;
    let rss_after = rss_kb(pid);
    println!(
        "flood: {FLOOD} connections in {flood_seconds:.2} s with max_connections 64: {ok} served, {refused} refused \
         with 503, {closed_without_answer} closed without an answer; slowest answer {:.0} ms; with the flood held \
         open a new client was refused in {refusal_ms:.1} ms; served again {recovered_ms:.0} ms after the flood \
         closed; RSS {rss_before} kB before, {rss_peak} kB peak, {rss_during} kB during, {rss_after} kB after",
        slowest.as_secs_f64() * 1000.0
    );
    assert!(served, "not served after the flood");
    assert_eq!(ok + refused + closed_without_answer, FLOOD);
    assert!((1..=64).contains(&ok), "{ok} served beyond the limit of 64");
    assert!(refused >= 64, "only {refused} refusals");
    assert!(slowest < Duration::from_secs(5), "an answer took {slowest:?}");
    assert!(
        rss_peak < rss_before + 64 * 1024,
        "RSS grew from {rss_before} kB to {rss_peak} kB"
    );
    terminate(&mut child);
}

/// Is `r` a problem document with a 4xx status?
async fn problem_4xx(r: reqwest::Response, what: &str) -> (u16, serde_json::Value) {
    let status = r.status().as_u16();
    let content_type = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = r.bytes().await.expect("body");
    assert!(
        (400..500).contains(&status),
        "{what}: {status} {}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(content_type, "application/problem+json", "{what}: {status}");
    let problem: serde_json::Value = serde_json::from_slice(&body).expect("problem json");
    assert_eq!(problem["status"], status, "{what}");
    (status, problem)
}

/// Every operation of the OpenAPI document, with the admin key: a body
/// beyond the limit (413), 100,000 nested `[`, invalid UTF-8, a wrong
/// content type and no body; bad path and query parameters. Every answer is
/// a 4xx problem document; and the service is still healthy afterwards.
#[tokio::test]
async fn hostile_bodies_and_parameters_get_problem_documents_everywhere() {
    let dir = tempfile::tempdir().expect("dir");
    let mut env = sources_env();
    env.push(("MDM_HTTP_MAX_BODY_BYTES", "1048576"));
    let (mut child, addr) = start(dir.path(), &env);
    let pid = child.id();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .default_headers(
            [(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {}", common::admin_key(&addr)).parse().expect("header"),
            )]
            .into_iter()
            .collect(),
        )
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let doc: serde_json::Value = reqwest::get(format!("http://{addr}/openapi.json"))
        .await
        .expect("document")
        .json()
        .await
        .expect("json");
    let deep = "[".repeat(100_000).into_bytes();
    let deep_object = "{\"a\":".repeat(50_000).into_bytes();
    let key = common::admin_key(&addr);
    let mut slowest = Duration::ZERO;
    let invalid_utf8 = b"{\"reason\": \"\xff\xfe\xc0\"}".to_vec();
    let rss_before = rss_kb(pid);
    let mut answers = 0;
    let mut too_large = 0;
    let mut bodies = 0;
    let t = Instant::now();
    let paths = doc["paths"].as_object().expect("paths");
    for (path, ops) in paths {
        let concrete = path
            .replace("{system}", "web_signup")
            .replace("{source_id}", "x")
            .split('/')
            .map(|seg| {
                if seg.starts_with('{') {
                    "00000000-0000-0000-0000-000000000000"
                } else {
                    seg
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        for (method, op) in ops.as_object().expect("operations") {
            let m: reqwest::Method = method.to_uppercase().parse().expect("method");
            let url = format!("http://{addr}{concrete}");
            if op.get("requestBody").is_some() {
                bodies += 1;
                let cases: [(&str, &str, Vec<u8>); 4] = [
                    ("deep arrays", "application/json", deep.clone()),
                    ("deep objects", "application/json", deep_object.clone()),
                    ("invalid UTF-8", "application/json", invalid_utf8.clone()),
                    ("wrong content type", "application/xml", b"<a/>".to_vec()),
                ];
                for (what, content_type, body) in cases {
                    let t = Instant::now();
                    let r = client
                        .request(m.clone(), &url)
                        .header("content-type", content_type)
                        .body(body)
                        .send()
                        .await
                        .unwrap_or_else(|e| panic!("{method} {path}: {what}: {e}"));
                    if path == "/v1/sources/{system}/records" && r.status() == 200 {
                        // Ingest answers per record: each hostile record is
                        // rejected by name, nothing is stored.
                        let outcome: serde_json::Value = r.json().await.expect("outcomes");
                        assert_eq!(outcome["summary"]["captured"], 0, "{what}: {outcome}");
                        assert!(outcome["summary"]["rejected"].as_u64() > Some(0), "{what}: {outcome}");
                    } else {
                        let _ = problem_4xx(r, &format!("{method} {path}: {what}")).await;
                    }
                    slowest = slowest.max(t.elapsed());
                    answers += 1;
                }
                // A declared length beyond the limit is refused before any
                // byte of the body (sent raw: the client never sends it).
                let mut s = TcpStream::connect(&addr).await.expect("connect");
                let head = format!(
                    "{} {concrete} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
                     Content-Type: application/json\r\nContent-Length: 1073741824\r\n\r\n",
                    method.to_uppercase()
                );
                s.write_all(head.as_bytes()).await.expect("head");
                let answer = tokio::time::timeout(Duration::from_secs(10), read_answer(&mut s))
                    .await
                    .expect("answered in time")
                    .expect("an answer");
                assert!(
                    (400..500).contains(&answer.status),
                    "{method} {path}: 1 GiB declared: {answer:?}"
                );
                assert_eq!(
                    answer.header("content-type"),
                    Some("application/problem+json"),
                    "{method} {path}"
                );
                if answer.status == 413 {
                    too_large += 1;
                }
                answers += 1;
            }
            // Malformed path segments and query parameters.
            let bad_path = format!(
                "http://{addr}{}",
                path.split('/')
                    .map(|seg| if seg.starts_with('{') { "%FF%FEnot-a-uuid" } else { seg })
                    .collect::<Vec<_>>()
                    .join("/")
            );
            if bad_path != url {
                let t = Instant::now();
                let r = client
                    .request(m.clone(), &bad_path)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("{method} {path}: bad path: {e}"));
                slowest = slowest.max(t.elapsed());
                let _ = problem_4xx(r, &format!("{method} {path}: bad path")).await;
                answers += 1;
            }
            if op["parameters"]
                .as_array()
                .is_some_and(|ps| ps.iter().any(|p| p["in"] == "query"))
            {
                let mut query = String::from("?");
                for p in op["parameters"].as_array().into_iter().flatten() {
                    if p["in"] == "query" {
                        query.push_str(&format!(
                            "{}=%FF%00{}&",
                            p["name"].as_str().unwrap_or("x"),
                            "9".repeat(40)
                        ));
                    }
                }
                let t = Instant::now();
                let r = client
                    .request(m.clone(), format!("{url}{query}"))
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("{method} {path}: bad query: {e}"));
                slowest = slowest.max(t.elapsed());
                // A query may name an unknown token: 404 is a fine answer too.
                let _ = problem_4xx(r, &format!("{method} {path}: bad query")).await;
                answers += 1;
            }
        }
    }
    // A body over the limit without a declared length (chunked): cut
    // where it passes the limit, 413.
    let s = TcpStream::connect(&addr).await.expect("connect");
    let (mut reader, mut writer) = s.into_split();
    let head = format!(
        "POST /v1/sources/web_signup/records HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    writer.write_all(head.as_bytes()).await.expect("head");
    let sender = tokio::spawn(async move {
        let chunk = format!("{:x}\r\n{}\r\n", 65536, "[".repeat(65536));
        let mut sent = 0usize;
        while sent < 4 * 1024 * 1024 {
            if writer.write_all(chunk.as_bytes()).await.is_err() {
                break;
            }
            sent += 65536;
        }
        sent
    });
    let answer = tokio::time::timeout(Duration::from_secs(10), read_answer(&mut reader))
        .await
        .expect("answered in time")
        .expect("an answer");
    let sent = sender.await.expect("sender");
    assert_eq!(answer.status, 413, "{answer:?}");
    assert_eq!(answer.header("content-type"), Some("application/problem+json"));
    println!(
        "chunked body over the 1 MiB limit: 413 after the client had written {} KiB",
        sent / 1024
    );
    // Unknown routes and methods.
    let r = client
        .get(format!("http://{addr}/v1/nothing-here"))
        .send()
        .await
        .expect("answer");
    let _ = problem_4xx(r, "unknown route").await;
    let r = client
        .delete(format!("http://{addr}/health"))
        .send()
        .await
        .expect("answer");
    let _ = problem_4xx(r, "wrong method").await;
    let rss_after = rss_kb(pid);
    common::health(&addr).await;
    println!(
        "hostile bodies: {answers} hostile requests over {} paths ({bodies} operations with a body; {too_large} \
         answered 413 to 1 GiB declared over a 1 MiB limit) in {:.1} s, every answer a 4xx problem document, the \
         slowest in {:.0} ms; RSS {rss_before} kB before, {rss_after} kB after",
        paths.len(),
        t.elapsed().as_secs_f64(),
        slowest.as_secs_f64() * 1000.0
    );
    assert!(bodies > 10, "the document lists {bodies} operations with a body");
    assert!(
        rss_after < rss_before + 128 * 1024,
        "RSS {rss_before} -> {rss_after} kB"
    );
    terminate(&mut child);
}

/// TLS gets the same bounds: a connection that never starts its handshake
/// and one that completes it and then trickles its request head are both
/// cut at the header read timeout; beyond the connection limit a
/// connection is closed at once; a normal HTTPS client is served before and
/// after.
#[tokio::test]
async fn tls_gets_the_same_bounds() {
    use std::sync::Arc;
    let dir = tempfile::tempdir().expect("dir");
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("self-signed certificate");
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).expect("cert");
    std::fs::write(&key, certified.key_pair.serialize_pem()).expect("key");
    let (cert_s, key_s) = (cert.to_str().expect("utf-8"), key.to_str().expect("utf-8"));
    const BOUND: Duration = Duration::from_secs(4);
    let env = [
        ("MDM_SOURCES_FILE", SOURCES_EXAMPLE),
        ("MDM_TLS_CERT", cert_s),
        ("MDM_TLS_KEY", key_s),
        ("MDM_HTTP_HEADER_READ_TIMEOUT_MS", "4000"),
        ("MDM_HTTP_MAX_CONNECTIONS", "4"),
    ];
    let (mut child, addr) = start(dir.path(), &env);
    let https = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(certified.cert.pem().as_bytes()).expect("pem"))
        // No idle connection kept: each would hold one of the four slots.
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let health = format!("https://{addr}/health");
    assert_eq!(https.get(&health).send().await.expect("https").status(), 200);
    // Let the service see that connection close.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(certified.cert.der().to_vec()))
        .expect("root");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));

    // Two that never handshake, two that trickle their head after it: the
    // four connections the limit allows.
    let opened = Instant::now();
    let mut silent = Vec::new();
    for _ in 0..2 {
        silent.push(TcpStream::connect(&addr).await.expect("connect"));
    }
    let mut tricklers = Vec::new();
    for _ in 0..2 {
        let tcp = TcpStream::connect(&addr).await.expect("connect");
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let mut tls = connector.connect(name, tcp).await.expect("handshake");
        tls.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            .await
            .expect("write");
        tls.flush().await.expect("flush");
        tricklers.push(tokio::spawn(async move {
            let started = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if started.elapsed() > BOUND * 3 {
                    return None;
                }
                if tls.write_all(b"X-Slow: yes\r\n").await.is_err() || tls.flush().await.is_err() {
                    return Some(started.elapsed());
                }
                let mut probe = [0u8; 64];
                match tokio::time::timeout(Duration::from_millis(10), tls.read(&mut probe)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
                    _ => {}
                }
            }
        }));
    }
    // A fifth connection is beyond the limit: closed at once.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = Instant::now();
    let refused = tokio::time::timeout(Duration::from_secs(2), https.get(&health).send()).await;
    let refused_ms = t.elapsed().as_secs_f64() * 1000.0;
    assert!(
        matches!(refused, Ok(Err(_))),
        "a connection beyond the limit was not closed at once: {refused:?}"
    );
    let mut silent_cut = Vec::new();
    for mut s in silent {
        let closed = closed_within(&mut s, BOUND * 3)
            .await
            .expect("a silent TLS connection was never cut");
        silent_cut.push(closed - opened);
    }
    let mut trickle_cut = Vec::new();
    for t in tricklers {
        trickle_cut.push(
            t.await
                .expect("task")
                .expect("a trickling TLS connection was never cut"),
        );
    }
    // Served again once they are gone.
    let t = Instant::now();
    let mut served = false;
    while t.elapsed() < Duration::from_secs(5) {
        if let Ok(r) = https.get(&health).send().await {
            served = r.status() == 200;
            if served {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served, "not served after the slow connections were cut");
    let secs = |v: &[Duration]| {
        v.iter()
            .map(|d| format!("{:.2}", d.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "TLS: silent connections (no handshake) cut after {} s, trickling heads after the handshake cut after {} \
         s (bound {} s); a fifth connection beyond max_connections 4 closed in {refused_ms:.1} ms",
        secs(&silent_cut),
        secs(&trickle_cut),
        BOUND.as_secs()
    );
    for d in silent_cut.iter().chain(&trickle_cut) {
        assert!(*d <= BOUND + Duration::from_secs(2), "cut after {d:?}");
        assert!(*d >= BOUND - Duration::from_secs(1), "cut too early: {d:?}");
    }
    terminate(&mut child);
}
