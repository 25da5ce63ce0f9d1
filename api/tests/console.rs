//! The web console (`/console`) end to end, in a real headless Chromium
//! driven over WebDriver (chromedriver + fantoccini), against the real
//! `mdm` binary serving `mdm demo`'s sample data on the embedded store.
//!
//! The test follows the page contract in `docs/console-contract.md`: a
//! steward signs in, searches, reads a customer and a match explanation,
//! works the review queue, merges two customers and splits a record back
//! off, and is refused a stale form and a form without its CSRF token; a
//! compliance user enters, verifies and carries out an erasure request; a
//! reader is refused the stewards' and compliance pages. Every main page
//! is screenshotted into `target/console-screenshots/` and must load in
//! under 200 ms (median of three loads, navigation timing).
//!
//! Needs Debian's `chromium` and `chromium-driver` (`/usr/bin/chromium`,
//! `/usr/bin/chromedriver`; `.ci/run` installs them). Without them the test
//! fails, unless `MDM_TEST_SKIP_BROWSER=1`. `MDM_TEST_CHROMIUM` and
//! `MDM_TEST_CHROMEDRIVER` name other binaries.

mod common;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{add_client, client_with, start, terminate};
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use futures::FutureExt;
use serde_json::{json, Value};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Each main page's median load time must stay under this.
const PAGE_BUDGET_MS: f64 = 200.0;
/// How long a page may take to show what a command did (read models are
/// projections that follow the log).
const SETTLE: Duration = Duration::from_secs(20);

/// The browser binaries, or `None` when they are missing and the caller
/// asked to skip (`MDM_TEST_SKIP_BROWSER=1`); missing otherwise fails.
fn browser_binaries() -> Option<(String, String)> {
    let chromium = std::env::var("MDM_TEST_CHROMIUM").unwrap_or_else(|_| CHROMIUM.to_owned());
    let driver = std::env::var("MDM_TEST_CHROMEDRIVER").unwrap_or_else(|_| CHROMEDRIVER.to_owned());
    let missing: Vec<&str> = [chromium.as_str(), driver.as_str()]
        .into_iter()
        .filter(|p| !Path::new(p).exists())
        .collect();
    if missing.is_empty() {
        return Some((chromium, driver));
    }
    if std::env::var("MDM_TEST_SKIP_BROWSER").as_deref() == Ok("1") {
        eprintln!("console tests SKIPPED (MDM_TEST_SKIP_BROWSER=1): {missing:?} not installed");
        return None;
    }
    panic!(
        "the console's browser tests need Chromium and its WebDriver, missing: {missing:?}. \
         Install Debian's packages (`apt-get install chromium chromium-driver`; .ci/run does it), \
         or set MDM_TEST_SKIP_BROWSER=1 to skip these tests"
    );
}

/// A free TCP port on the loopback interface.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A chromedriver child process, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start(path: &str) -> Driver {
        let port = free_port();
        let child = Command::new(path)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{path} does not start: {e}"));
        let mut driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = driver.child.try_wait() {
                panic!("{path} exited at once: {status}");
            }
            assert!(Instant::now() < deadline, "{path} does not listen on port {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        driver
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `mdm serve`, stopped when dropped (also when the test fails).
struct Service {
    child: Option<Child>,
    addr: String,
    dir: PathBuf,
}

impl Service {
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let status = terminate(&mut child);
            assert!(status.success(), "mdm serve ended with {status}");
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The demo's data, served, with one API client per console role.
struct Demo {
    _tmp: tempfile::TempDir,
    service: Service,
    /// A family name the demo's guide suggests searching for.
    family: String,
    steward: String,
    compliance: String,
    reader: String,
    api: reqwest::Client,
}

/// Prepares `mdm demo --people 200 --no-serve` in a fresh folder, registers
/// the console's clients with `mdm clients add` and serves the folder as
/// the guide says (`MDM_DATA_DIR`, `MDM_SOURCES_FILE`, `mdm serve`).
async fn demo() -> Demo {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("demo");
    let out = Command::new(env!("CARGO_BIN_EXE_mdm"))
        .args([
            "demo",
            "--dir",
            dir.to_str().expect("utf-8"),
            "--people",
            "200",
            "--no-serve",
        ])
        .current_dir(tmp.path())
        .env_clear()
        .env("MDM_LOG", "warn")
        .output()
        .expect("mdm demo runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let guide = String::from_utf8_lossy(&out.stdout);
    let family = guide
        .lines()
        .find_map(|l| l.split_once("# customers named ").map(|(_, rest)| rest))
        .and_then(|rest| rest.split(" (").next())
        .unwrap_or_else(|| panic!("no sample family name in the guide: {guide}"))
        .trim()
        .to_owned();

    let sources = dir.join("sources.toml");
    let env = [
        ("MDM_DATA_DIR", dir.to_str().expect("utf-8")),
        ("MDM_SOURCES_FILE", sources.to_str().expect("utf-8")),
    ];
    let steward = add_client(&dir, &env, "console-steward", "steward", None);
    let compliance = add_client(&dir, &env, "console-compliance", "compliance", None);
    let reader = add_client(&dir, &env, "console-reader", "reader", None);
    let (child, addr) = start(&dir, &env);
    let service = Service {
        child: Some(child),
        addr: addr.clone(),
        dir: dir.clone(),
    };
    let api = common::api(&addr);

    // The resolver and the projections catch up with the imported log.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let ready = reqwest::get(format!("http://{addr}/ready")).await;
        if matches!(&ready, Ok(r) if r.status() == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "/ready never answered 200: {ready:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Demo {
        _tmp: tmp,
        service,
        family,
        steward,
        compliance,
        reader,
        api,
    }
}

impl Demo {
    fn base(&self) -> String {
        format!("http://{}", self.service.addr)
    }

    /// `GET` on the JSON API with the admin key: status and JSON body.
    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .api
            .get(format!("{}{path}", self.base()))
            .send()
            .await
            .expect("the API answers");
        let status = r.status().as_u16();
        let text = r.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Polls `path` until `ready` accepts its answer.
    async fn until(&self, path: &str, what: &str, ready: impl Fn(u16, &Value) -> bool) -> Value {
        let deadline = Instant::now() + SETTLE;
        loop {
            let (status, body) = self.get(path).await;
            if ready(status, &body) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: {path} still answers {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The customer's (status, document).
    async fn customer(&self, token: &str) -> (u16, Value) {
        self.get(&format!("/v1/customers/{token}")).await
    }

    /// The `(system, source_id)` of the customer's source records.
    async fn records_of(&self, token: &str) -> Vec<(String, String)> {
        let (status, body) = self.get(&format!("/v1/customers/{token}/source-records")).await;
        assert_eq!(status, 200, "{body}");
        body["source_records"]
            .as_array()
            .expect("source_records")
            .iter()
            .filter(|r| r["state"] == "current")
            .map(|r| {
                (
                    r["system"].as_str().expect("system").to_owned(),
                    r["source_id"].as_str().expect("source_id").to_owned(),
                )
            })
            .collect()
    }

    /// Active customers holding the demo's source records (from
    /// `sample-data/truth.csv`), in file order, without `except`.
    async fn other_customers(&self, except: &[&str], wanted: usize) -> Vec<String> {
        let truth = std::fs::read_to_string(self.service.dir.join("sample-data/truth.csv")).expect("truth.csv");
        let mut found: Vec<String> = Vec::new();
        for line in truth.lines().skip(1) {
            let mut cells = line.split(',');
            let (Some(system), Some(id)) = (cells.next(), cells.next()) else {
                continue;
            };
            let (status, body) = self.get(&format!("/v1/customers/by-source/{system}/{id}")).await;
            if status != 200 || body["status"] != "active" {
                continue;
            }
            let token = body["token"].as_str().expect("token").to_owned();
            if !except.contains(&token.as_str()) && !found.contains(&token) {
                found.push(token);
                if found.len() == wanted {
                    return found;
                }
            }
        }
        panic!("fewer than {wanted} other active customers in the demo: {found:?}");
    }
}

/// Percent-encodes a query value (RFC 3986 unreserved characters kept).
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One browser session on the console.
struct Console {
    c: Client,
    base: String,
    shots: PathBuf,
    shot_count: usize,
    /// (page, median load ms, the three loads).
    timings: Vec<(String, f64, Vec<f64>)>,
}

impl Console {
    async fn open(driver: &Driver, chromium: &str, base: String) -> Console {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".to_owned(),
            json!({
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1366,900"],
            }),
        );
        // Both of rustls' crypto providers are linked in: name one, as the
        // binary does (the WebDriver URL is plain HTTP anyway).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let c = ClientBuilder::rustls()
            .expect("TLS roots for the WebDriver client")
            .capabilities(caps)
            .connect(&driver.url)
            .await
            .unwrap_or_else(|e| panic!("no browser session from chromedriver at {}: {e}", driver.url));
        let shots = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/console-screenshots"));
        std::fs::create_dir_all(&shots).expect("screenshot folder");
        let shots = shots.canonicalize().expect("screenshot folder");
        // Only this run's pictures stay.
        for entry in std::fs::read_dir(&shots).expect("screenshot folder").flatten() {
            if entry.path().extension().is_some_and(|e| e == "png") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        eprintln!("console screenshots: {}", shots.display());
        Console {
            c,
            base,
            shots,
            shot_count: 0,
            timings: Vec::new(),
        }
    }

    // --- reading the page (through JavaScript: no stale elements) ---

    async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.c
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("script failed ({e}): {script}"))
    }

    /// Where the browser is: path and query.
    async fn here(&self) -> String {
        let url = self.c.current_url().await.expect("current URL");
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        }
    }

    /// What a failing assertion shows: the URL, the status, the headings and
    /// the start of the main text.
    async fn context(&self) -> String {
        let page = self
            .c
            .execute(
                "const m = document.querySelector('main') || document.body; \
                 return [location.href, document.title, \
                         (m ? m.innerText : '').replace(/\\s+/g, ' ').slice(0, 1500)].join(' | ');",
                vec![],
            )
            .await
            .map(|v| v.as_str().unwrap_or_default().to_owned())
            .unwrap_or_else(|e| format!("(page unreadable: {e})"));
        format!("status {:?} at {page}", self.status_now().await)
    }

    async fn status_now(&self) -> Option<u64> {
        self.c
            .execute(
                "const n = performance.getEntriesByType('navigation')[0]; return n ? n.responseStatus : null;",
                vec![],
            )
            .await
            .ok()
            .and_then(|v| v.as_u64())
    }

    /// The HTTP status of the page shown (navigation timing).
    async fn status(&self) -> u64 {
        match self.status_now().await {
            Some(s) => s,
            None => panic!("no response status: {}", self.context().await),
        }
    }

    async fn count(&self, css: &str) -> usize {
        let n = self
            .js(
                "return document.querySelectorAll(arguments[0]).length;",
                vec![json!(css)],
            )
            .await;
        n.as_u64().expect("a count") as usize
    }

    /// The text of the first element matching `css` (hidden text too,
    /// whitespace collapsed), `None` without one.
    async fn text_of(&self, css: &str) -> Option<String> {
        let v = self
            .js(
                "const e = document.querySelector(arguments[0]); return e === null ? null : e.textContent;",
                vec![json!(css)],
            )
            .await;
        v.as_str().map(|t| t.split_whitespace().collect::<Vec<_>>().join(" "))
    }

    async fn text(&self, css: &str) -> String {
        match self.text_of(css).await {
            Some(t) => t,
            None => panic!("no `{css}` on the page: {}", self.context().await),
        }
    }

    /// The attribute of the first match (`href`: resolved, absolute).
    async fn attrs(&self, css: &str, attr: &str) -> Vec<String> {
        let v = self
            .js(
                "return Array.from(document.querySelectorAll(arguments[0]), \
                 e => arguments[1] === 'href' ? e.href : e.getAttribute(arguments[1]));",
                vec![json!(css), json!(attr)],
            )
            .await;
        v.as_array()
            .expect("an array")
            .iter()
            .map(|a| a.as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// Asserts there is at least one `css`.
    async fn expect(&self, css: &str, why: &str) {
        if self.count(css).await == 0 {
            panic!("{why}: no `{css}` on the page: {}", self.context().await);
        }
    }

    async fn find(&self, css: &str) -> Element {
        match self.c.find(Locator::Css(css)).await {
            Ok(e) => e,
            Err(e) => panic!("no `{css}` ({e}): {}", self.context().await),
        }
    }

    // --- acting ---

    async fn goto(&self, path: &str) {
        let url = format!("{}{path}", self.base);
        self.c
            .goto(&url)
            .await
            .unwrap_or_else(|e| panic!("the browser does not load {url}: {e}"));
    }

    /// Types into an input (after clearing it), or picks in a select the
    /// option whose value or label is `value` (else the first with a value).
    async fn fill(&self, css: &str, value: &str) {
        let el = self.find(css).await;
        let tag = el.tag_name().await.expect("tag").to_lowercase();
        if tag == "select" {
            let picked = self
                .js(
                    "const s = document.querySelector(arguments[0]); \
                     const o = Array.from(s.options); \
                     const hit = o.find(x => x.value === arguments[1] || x.text.trim() === arguments[1]) \
                              || o.find(x => x.value !== ''); \
                     if (!hit) return null; \
                     s.value = hit.value; s.dispatchEvent(new Event('change', {bubbles: true})); return hit.value;",
                    vec![json!(css), json!(value)],
                )
                .await;
            assert!(
                picked.is_string(),
                "`{css}` has no option to pick: {}",
                self.context().await
            );
        } else {
            el.clear().await.expect("clear");
            el.send_keys(value).await.expect("type");
        }
    }

    /// Sets an input's value directly (date inputs, whose typing depends on
    /// the locale).
    async fn set_value(&self, css: &str, value: &str) {
        self.expect(css, "an input to set").await;
        self.js(
            "const e = document.querySelector(arguments[0]); e.value = arguments[1]; \
             e.dispatchEvent(new Event('change', {bubbles: true})); return null;",
            vec![json!(css), json!(value)],
        )
        .await;
    }

    /// Ticks a checkbox or radio.
    async fn tick(&self, css: &str) {
        let el = self.find(css).await;
        if !el.is_selected().await.expect("selected?") {
            el.click().await.expect("click");
        }
    }

    /// Clicks `css` and waits for the next page to load; false when no new
    /// page came within `timeout` (e.g. the browser refused the form).
    async fn click_to_next_page(&self, css: &str, timeout: Duration) -> bool {
        self.js("window.__mdmOldPage = true; return null;", vec![]).await;
        let el = self.find(css).await;
        el.click().await.unwrap_or_else(|e| panic!("cannot click `{css}`: {e}"));
        let deadline = Instant::now() + timeout;
        loop {
            let fresh = self
                .c
                .execute(
                    "return window.__mdmOldPage === undefined && document.readyState === 'complete';",
                    vec![],
                )
                .await;
            if matches!(fresh, Ok(Value::Bool(true))) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Clicks `css`, which must lead to a new page.
    async fn submit(&self, css: &str) {
        if !self.click_to_next_page(css, SETTLE).await {
            panic!("clicking `{css}` loaded no page: {}", self.context().await);
        }
    }

    /// Reloads `path` until `css` is on it and its text holds `needle`.
    async fn reload_until(&self, path: &str, css: &str, needle: &str, what: &str) {
        let deadline = Instant::now() + SETTLE;
        loop {
            self.goto(path).await;
            if let Some(t) = self.text_of(css).await {
                if t.contains(needle) {
                    return;
                }
            }
            if Instant::now() >= deadline {
                panic!("{what}: `{css}` never held {needle:?}: {}", self.context().await);
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Reloads `path` until `count(css)` satisfies `ok`.
    async fn reload_until_count(&self, path: &str, css: &str, what: &str, ok: impl Fn(usize) -> bool) -> usize {
        let deadline = Instant::now() + SETTLE;
        loop {
            self.goto(path).await;
            let n = self.count(css).await;
            if ok(n) {
                return n;
            }
            if Instant::now() >= deadline {
                panic!("{what}: {n} × `{css}`: {}", self.context().await);
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    // --- the contract's common parts ---

    /// The frame every signed-in page has: the nav, the sign-out form and
    /// `<main id="main">` with one `<h1>`.
    async fn expect_frame(&self) {
        for css in ["nav #nav-search", "nav #nav-ops", "form#logout", "#logout #sign-out"] {
            self.expect(css, "every console page has it").await;
        }
        let h1 = self.count("main#main h1").await;
        assert_eq!(h1, 1, "one h1 in main#main: {}", self.context().await);
    }

    /// Waits for a flash message of `role` (`status` or `alert`) and returns it.
    async fn flash(&self, role: &str) -> String {
        let css = format!(".flash[role={role}]");
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.count(&css).await == 0 {
            if Instant::now() >= deadline {
                panic!("no `{css}` after the form: {}", self.context().await);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.text(&css).await
    }

    async fn sign_in(&self, key: &str) {
        self.goto("/console/login").await;
        self.fill("#login-form #api_key", key).await;
        self.submit("#login-form #sign-in").await;
        let here = self.here().await;
        assert!(
            here == "/console" || here == "/console/",
            "signing in leads to /console, not {here}: {}",
            self.context().await
        );
        self.expect_frame().await;
    }

    async fn sign_out(&self) {
        self.submit("#logout #sign-out").await;
        // Signed out: the console asks for a key again.
        self.goto("/console").await;
        self.expect("#login-form #api_key", "after signing out /console asks for a key")
            .await;
    }

    /// The session's cookies as a `Cookie` header, for requests outside the
    /// browser.
    async fn cookie_header(&self) -> String {
        let cookies = self.c.get_all_cookies().await.expect("cookies");
        assert!(!cookies.is_empty(), "the console set no session cookie");
        cookies
            .iter()
            .map(|c| format!("{}={}", c.name(), c.value()))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Saves a PNG of the viewport as `NN-name.png`.
    async fn shot(&mut self, name: &str) {
        self.shot_count += 1;
        let path = self.shots.join(format!("{:02}-{name}.png", self.shot_count));
        match self.c.screenshot().await {
            Ok(png) => {
                std::fs::write(&path, png).expect("write the screenshot");
                eprintln!("screenshot: {}", path.display());
            }
            Err(e) => eprintln!("no screenshot {name}: {e}"),
        }
    }

    /// Loads `path` three times and records the median of the browser's
    /// navigation timing (request to load event).
    async fn measure(&mut self, page: &str, path: &str) {
        let mut loads = Vec::new();
        // One load to warm up (unmeasured), then the three measured.
        self.goto(path).await;
        for _ in 0..3 {
            self.goto(path).await;
            let status = self.status().await;
            assert_eq!(status, 200, "{page} ({path}): {}", self.context().await);
            let deadline = Instant::now() + Duration::from_secs(5);
            let ms = loop {
                let v = self
                    .js(
                        "const n = performance.getEntriesByType('navigation')[0]; \
                         return n && n.loadEventEnd > 0 ? n.duration : null;",
                        vec![],
                    )
                    .await;
                if let Some(ms) = v.as_f64() {
                    break ms;
                }
                assert!(Instant::now() < deadline, "{page}: no navigation timing");
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            loads.push(ms);
        }
        let m = median(loads.clone());
        eprintln!("page load {page:<16} median {m:6.1} ms  loads {loads:?}  ({path})");
        self.timings.push((page.to_owned(), m, loads));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_a_real_browser() {
    let Some((chromium, driver_path)) = browser_binaries() else {
        return;
    };
    let mut demo = demo().await;
    let driver = Driver::start(&driver_path);
    let mut console = Console::open(&driver, &chromium, demo.base()).await;

    let outcome = std::panic::AssertUnwindSafe(flow(&demo, &mut console))
        .catch_unwind()
        .await;
    if outcome.is_err() {
        eprintln!("console test failed at: {}", console.context().await);
        console.shot("failure").await;
        let log = std::fs::read_to_string(demo.service.dir.join("serve.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        eprintln!(
            "last lines of the service log:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    let timings = std::mem::take(&mut console.timings);
    let _ = console.c.close().await;
    drop(driver);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }

    eprintln!("page load medians (budget {PAGE_BUDGET_MS} ms):");
    for (page, m, loads) in &timings {
        eprintln!("  {page:<16} {m:6.1} ms  {loads:?}");
    }
    let slow: Vec<String> = timings
        .iter()
        .filter(|(_, m, _)| *m >= PAGE_BUDGET_MS)
        .map(|(p, m, _)| format!("{p}: {m:.1} ms"))
        .collect();
    assert!(slow.is_empty(), "pages over {PAGE_BUDGET_MS} ms: {slow:?}");
    demo.service.stop();
}

async fn flow(demo: &Demo, b: &mut Console) {
    eprintln!("== sign-in page");
    b.goto("/console/login").await;
    assert_eq!(b.status().await, 200, "{}", b.context().await);
    for css in [
        "form#login-form",
        "#login-form input#api_key[name=api_key]",
        "#login-form input[type=hidden][name=csrf]",
        "#login-form #sign-in",
    ] {
        b.expect(css, "the sign-in form").await;
    }
    let label = b.text("label[for=api_key]").await;
    assert!(label.contains("API key"), "label {label:?}");
    b.shot("login").await;
    b.measure("login", "/console/login").await;

    eprintln!("== a wrong key is refused");
    b.fill("#login-form #api_key", "mdm_not_a_key_at_all").await;
    b.submit("#login-form #sign-in").await;
    assert_eq!(b.status().await, 401, "{}", b.context().await);
    b.expect("[role=alert]", "a wrong key is told").await;
    b.expect("#login-form #api_key", "the form again").await;

    eprintln!("== steward signs in and searches by name");
    b.sign_in(&demo.steward).await;
    b.expect("nav #nav-reviews", "a steward's nav").await;
    // The customer to work on: one of the search's, holding several records.
    let family = &demo.family;
    let found = demo
        .until(
            &format!("/v1/customers?name={}&limit=100", encode(family)),
            "search by the sample family name",
            |s, body| s == 200 && body["customers"].as_array().is_some_and(|c| !c.is_empty()),
        )
        .await;
    let a = found["customers"]
        .as_array()
        .expect("customers")
        .iter()
        .find(|c| c["record_count"].as_i64().unwrap_or(0) >= 2)
        .and_then(|c| c["token"].as_str())
        .unwrap_or_else(|| panic!("no customer named {family} with two records: {found}"))
        .to_owned();
    let a_path = format!("/console/customers/{a}");

    b.goto("/console").await;
    b.expect_frame().await;
    for css in [
        "form#search-form",
        "#search-form select#field",
        "#search-form #q",
        "#search-form #system",
        "#search-form #search",
    ] {
        b.expect(css, "the search form").await;
    }
    for field in ["name", "email", "phone", "postcode", "token", "source"] {
        b.expect(&format!("#field option[value={field}]"), "a search field")
            .await;
    }
    b.fill("#field", "name").await;
    b.fill("#q", family).await;
    b.submit("#search").await;
    let here = b.here().await;
    assert!(
        here.starts_with("/console?") && here.contains("field=name") && here.contains("q="),
        "the search is a GET of /console?field=name&q=…: {here}"
    );
    let search_path = format!("/console?field=name&q={}", encode(family));
    let link = format!("#results a.customer-link[href$='/console/customers/{a}']");
    b.reload_until_count(&search_path, &link, "the search lists the customer", |n| n >= 1)
        .await;
    b.expect_frame().await;
    b.shot("search-results").await;
    b.measure("search results", &search_path).await;

    eprintln!("== the customer page");
    b.submit(&link).await;
    assert_eq!(b.here().await, a_path);
    assert_eq!(b.status().await, 200);
    b.expect_frame().await;
    let h1 = b.text("main#main h1").await;
    assert!(h1.contains(&a), "h1 {h1:?} holds the token {a}");
    let status = b.text("#status").await;
    assert!(status.contains("active"), "#status {status:?}");
    let golden = b.count("#golden tr[data-attribute]").await;
    assert!(golden >= 1, "golden rows: {}", b.context().await);
    assert_eq!(
        b.count("#golden tr[data-attribute] .source").await,
        golden,
        "a source per value"
    );
    assert_eq!(
        b.count("#golden tr[data-attribute] .rule").await,
        golden,
        "a rule per value"
    );
    let a_records = demo.records_of(&a).await;
    assert_eq!(
        b.count("#source-records details.source-record").await,
        a_records.len(),
        "one details per source record of {a}"
    );
    assert!(b.count("#source-records details.source-record pre.raw").await >= a_records.len());
    b.expect("#household", "the household section").await;
    assert_eq!(
        b.count("#household a.customer-link").await,
        b.count("#household a").await,
        "household members are a.customer-link"
    );
    b.expect("#history ol li.decision", "the decision history").await;
    b.expect("form#as-of-form #as_of", "the as-of form").await;
    b.expect("#as-of-form #as-of", "the as-of button").await;
    for css in [
        "form#merge-form input[name=version]",
        "#merge-form #merge-absorbed",
        "#merge-form #merge-reason",
        "#merge-form input#merge-confirm[type=checkbox]",
        "#merge-form #merge",
        "form#split-form input[name=version]",
        "#split-form select#split-record",
        "#split-form #split-reason",
        "#split-form input#split-confirm[type=checkbox]",
        "#split-form #split",
        "form#override-form input[name=version]",
        "#override-form select#override-attribute",
        "#override-form #override-value",
        "#override-form #override-expires",
        "#override-form #override-permanent",
        "#override-form #override-reason",
        "#override-form #override-confirm",
        "#override-form #override",
    ] {
        b.expect(css, "a steward's form on the customer page").await;
    }
    for (system, id) in &a_records {
        b.expect(
            &format!("#split-record option[value='{system}/{id}']"),
            "a record to split off",
        )
        .await;
    }
    b.shot("customer").await;
    b.measure("customer", &a_path).await;

    eprintln!("== as of today");
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    b.set_value("#as_of", &today).await;
    b.submit("#as-of").await;
    let here = b.here().await;
    assert!(
        here.starts_with(&a_path) && here.contains(&format!("as_of={today}")),
        "the as-of form is a GET with as_of: {here}"
    );
    assert_eq!(b.status().await, 200, "{}", b.context().await);
    assert!(b.text("main#main h1").await.contains(&a));

    eprintln!("== a match explanation from the history");
    b.goto(&a_path).await;
    let explains = b.attrs("#history li.decision a.explain", "href").await;
    let explain = explains
        .first()
        .unwrap_or_else(|| {
            panic!(
                "no a.explain in the history of {a} (it has {} records)",
                a_records.len()
            )
        })
        .clone();
    let explain_path = explain.strip_prefix(&demo.base()).unwrap_or(&explain).to_owned();
    assert!(
        explain_path.starts_with(&format!("/console/customers/{a}/decisions/"))
            && explain_path
                .rsplit('/')
                .next()
                .is_some_and(|p| p.parse::<u64>().is_ok()),
        "a.explain href {explain}"
    );
    b.submit("#history li.decision a.explain").await;
    assert_eq!(b.status().await, 200, "{}", b.context().await);
    b.expect_frame().await;
    let rows = b.count("table#explanation tr").await;
    assert!(rows >= 2, "the explanation's rows: {}", b.context().await);
    let total = b.text("#total").await;
    assert!(!total.is_empty(), "#total is empty");
    b.shot("explanation").await;
    b.measure("explanation", &explain_path).await;

    eprintln!("== the review queue: keep apart, then link");
    let (s, reviews) = demo.get("/v1/reviews?limit=100").await;
    assert_eq!(s, 200, "{reviews}");
    // Items that do not touch the customer worked on below.
    let items: Vec<String> = reviews["reviews"]
        .as_array()
        .expect("reviews")
        .iter()
        .filter(|r| r["token"] != a.as_str() && r["candidate"] != a.as_str())
        .filter_map(|r| r["review_id"].as_str().map(str::to_owned))
        .collect();
    assert!(items.len() >= 2, "the demo leaves review items: {reviews}");
    b.goto("/console").await;
    b.submit("#nav-reviews").await;
    assert_eq!(b.here().await, "/console/reviews");
    b.expect_frame().await;
    let listed = b.attrs("#reviews a.review-link", "href").await;
    assert!(!listed.is_empty(), "open items listed: {}", b.context().await);
    b.shot("reviews").await;
    b.measure("reviews", "/console/reviews").await;
    let item_path = |id: &str| format!("/console/reviews/{id}");
    let first = &items[0];
    let first_link = format!("#reviews a.review-link[href$='/console/reviews/{first}']");
    b.expect(&first_link, "the open item in the list").await;
    b.submit(&first_link).await;
    assert_eq!(b.here().await, item_path(first));
    b.expect_frame().await;
    assert!(b.count("table#explanation tr").await >= 2, "{}", b.context().await);
    assert!(!b.text("#total").await.is_empty());
    for css in [
        "form#review-form input#outcome-link[type=radio][name=outcome]",
        "#review-form input#outcome-keep_apart[type=radio][name=outcome]",
        "#review-form input#outcome-skip[type=radio][name=outcome]",
        "#review-form #review-reason",
        "#review-form #decide",
    ] {
        b.expect(css, "the review form").await;
    }
    b.shot("review-item").await;
    b.measure("review item", &item_path(first)).await;
    b.tick("#outcome-keep_apart").await;
    b.fill("#review-reason", "console test: different people").await;
    b.submit("#decide").await;
    let flash = b.flash("status").await;
    eprintln!("review decided: {flash:?} now at {}", b.here().await);
    demo.until(&format!("/v1/reviews/{first}"), "the item is closed", |s, r| {
        s == 200 && r["state"] != "open"
    })
    .await;
    let second = &items[1];
    b.goto(&item_path(second)).await;
    b.tick("#outcome-link").await;
    b.fill("#review-reason", "console test: same person").await;
    b.submit("#decide").await;
    b.flash("status").await;
    demo.until(&format!("/v1/reviews/{second}"), "the second item is closed", |s, r| {
        s == 200 && r["state"] != "open"
    })
    .await;

    eprintln!("== merge two customers");
    let others = demo.other_customers(&[&a], 3).await;
    let (absorbed, stale_target, erased) = (&others[0], &others[1], &others[2]);
    let b_records = demo.records_of(absorbed).await;
    let a_records = demo.records_of(&a).await;
    b.goto(&a_path).await;
    b.fill("#merge-absorbed", absorbed).await;
    b.fill("#merge-reason", "console test: the same person").await;
    // Without the confirmation nothing happens.
    let sent = b.click_to_next_page("#merge", Duration::from_secs(3)).await;
    if sent {
        let alert = b.flash("alert").await;
        eprintln!("unconfirmed merge refused by the console: {alert:?}");
    } else {
        eprintln!("unconfirmed merge held back by the browser (required checkbox)");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (s, doc) = demo.customer(absorbed).await;
    assert!(
        s == 200 && doc["status"] == "active",
        "merged without confirmation: {s} {doc}"
    );
    // Nor when the browser's check is bypassed: the server asks for it too.
    b.goto(&a_path).await;
    b.js(
        "document.querySelectorAll('#merge-form [required]').forEach(e => e.removeAttribute('required')); \
         return null;",
        vec![],
    )
    .await;
    b.fill("#merge-absorbed", absorbed).await;
    b.fill("#merge-reason", "console test: the same person").await;
    b.submit("#merge").await;
    let alert = b.flash("alert").await;
    eprintln!("unconfirmed merge refused by the service: {alert:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (s, doc) = demo.customer(absorbed).await;
    assert!(
        s == 200 && doc["status"] == "active",
        "merged without confirmation: {s} {doc}"
    );
    b.goto(&a_path).await;
    b.fill("#merge-absorbed", absorbed).await;
    b.fill("#merge-reason", "console test: the same person").await;
    b.tick("#merge-confirm").await;
    b.submit("#merge").await;
    let flash = b.flash("status").await;
    eprintln!("merged: {flash:?}");
    demo.until(
        &format!("/v1/customers/{absorbed}"),
        "the absorbed token redirects",
        |s, d| s == 307 && d["merged_into"] == a.as_str(),
    )
    .await;
    let merged_count = a_records.len() + b_records.len();
    b.reload_until_count(
        &a_path,
        "#source-records details.source-record",
        "the survivor shows both customers' records",
        |n| n == merged_count,
    )
    .await;

    eprintln!("== split a record back off");
    let (system, id) = &b_records[0];
    b.goto(&a_path).await;
    b.fill("#split-record", &format!("{system}/{id}")).await;
    b.fill("#split-reason", "console test: not the same person after all")
        .await;
    b.tick("#split-confirm").await;
    b.submit("#split").await;
    let flash = b.flash("status").await;
    eprintln!("split: {flash:?}");
    demo.until(
        &format!("/v1/customers/by-source/{system}/{id}"),
        "the record is in another customer",
        |s, d| s == 200 && d["token"] != a.as_str(),
    )
    .await;
    b.reload_until_count(
        &a_path,
        "#source-records details.source-record",
        "the survivor lost the record",
        |n| n == merged_count - 1,
    )
    .await;

    eprintln!("== override a golden value");
    let email = "console.override@example.com";
    b.goto(&a_path).await;
    b.fill("#override-attribute", "email").await;
    b.fill("#override-value", email).await;
    b.tick("#override-permanent").await;
    b.fill("#override-reason", "console test: the customer's own word")
        .await;
    b.tick("#override-confirm").await;
    b.submit("#override").await;
    let flash = b.flash("status").await;
    eprintln!("overridden: {flash:?}");
    b.reload_until(
        &a_path,
        "#golden tr[data-attribute=email]",
        email,
        "the overridden e-mail",
    )
    .await;

    eprintln!("== a stale form changes nothing");
    b.goto(&a_path).await;
    let page_version = b.attrs("#merge-form input[name=version]", "value").await;
    let (_, before) = demo.customer(&a).await;
    // Meanwhile a steward changes the customer through the JSON API.
    let r = client_with(&demo.steward)
        .post(format!("{}/v1/customers/{a}/overrides", demo.base()))
        .json(&json!({
            "attribute": "email",
            "value": "console.stale@example.com",
            "permanent": true,
            "reason": "console test: a change meanwhile",
        }))
        .send()
        .await
        .expect("override answers");
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let old_version = before["version"].as_i64().expect("version");
    demo.until(&format!("/v1/customers/{a}"), "the change is read", |s, d| {
        s == 200 && d["version"].as_i64().is_some_and(|v| v > old_version)
    })
    .await;
    b.fill("#merge-absorbed", stale_target).await;
    b.fill("#merge-reason", "console test: on a stale page").await;
    b.tick("#merge-confirm").await;
    b.submit("#merge").await;
    let alert = b.flash("alert").await;
    assert!(
        alert.contains("changed since"),
        "stale alert {alert:?} (page version {page_version:?})"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (s, doc) = demo.customer(stale_target).await;
    assert!(
        s == 200 && doc["status"] == "active",
        "a stale merge was applied: {s} {doc}"
    );

    eprintln!("== a form without its CSRF token is refused");
    b.goto(&a_path).await;
    // Where the form posts (resolved by the browser).
    let action_url = b
        .js("return document.querySelector('#merge-form').action;", vec![])
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned();
    b.js(
        "document.querySelectorAll('#merge-form input[name=csrf]').forEach(e => e.remove()); return null;",
        vec![],
    )
    .await;
    b.fill("#merge-absorbed", stale_target).await;
    b.fill("#merge-reason", "console test: no CSRF token").await;
    b.tick("#merge-confirm").await;
    b.submit("#merge").await;
    assert_eq!(b.status().await, 403, "{}", b.context().await);
    let h1 = b.text("h1").await;
    assert!(h1.contains("Form refused"), "h1 {h1:?}");
    // The same with a forged token, outside the browser with its session:
    // the form as the browser would send it, filled in, its token replaced.
    b.goto(&a_path).await;
    b.fill("#merge-absorbed", stale_target).await;
    b.fill("#merge-reason", "console test: a forged token").await;
    b.tick("#merge-confirm").await;
    let fields = b
        .js(
            "return Array.from(new FormData(document.querySelector('#merge-form')), \
             ([k, v]) => [k, k === 'csrf' ? 'forged-token' : String(v)]);",
            vec![],
        )
        .await;
    let fields: Vec<(String, String)> = serde_json::from_value(fields).expect("the form's fields");
    assert!(
        fields.iter().any(|(k, _)| k == "csrf"),
        "the form has a csrf field: {fields:?}"
    );
    assert!(action_url.starts_with("http"), "#merge-form action {action_url:?}");
    let forged = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .post(&action_url)
        .header(reqwest::header::COOKIE, b.cookie_header().await)
        .form(&fields)
        .send()
        .await
        .expect("the console answers");
    let status = forged.status().as_u16();
    let body = forged.text().await.unwrap_or_default();
    assert_eq!(status, 403, "a forged CSRF token: {body}");
    assert!(body.contains("Form refused"), "{body}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (s, doc) = demo.customer(stale_target).await;
    assert!(
        s == 200 && doc["status"] == "active",
        "a refused form was applied: {s} {doc}"
    );

    eprintln!("== operations");
    b.goto("/console").await;
    b.submit("#nav-ops").await;
    assert_eq!(b.here().await, "/console/ops");
    b.expect_frame().await;
    assert!(b.count("table#projections tr").await >= 2, "{}", b.context().await);
    b.expect("#review-queue-size", "ops").await;
    b.expect("#ingest-rate", "ops").await;
    b.shot("ops").await;
    b.measure("ops", "/console/ops").await;

    eprintln!("== steward signs out");
    b.goto("/console").await;
    b.sign_out().await;

    eprintln!("== compliance: an erasure request");
    b.sign_in(&demo.compliance).await;
    b.expect("nav #nav-privacy", "a compliance user's nav").await;
    b.submit("#nav-privacy").await;
    assert_eq!(b.here().await, "/console/privacy");
    b.expect_frame().await;
    for css in [
        "table#requests",
        "form#new-request-form",
        "#new-request-form select#request-kind",
        "#request-kind option[value=erasure]",
        "#request-kind option[value=right_to_know]",
        "#new-request-form #request-token",
        "#new-request-form #create-request",
    ] {
        b.expect(css, "the privacy ledger page").await;
    }
    b.fill("#request-kind", "erasure").await;
    b.fill("#request-token", erased).await;
    b.submit("#create-request").await;
    let request_path = b.here().await;
    assert!(
        request_path.starts_with("/console/privacy/requests/"),
        "creating a request leads to its page: {}",
        b.context().await
    );
    b.expect_frame().await;
    for css in [
        "#request-status",
        "table#notices",
        "table#holds",
        "form#verify-form #verify-method",
        "#verify-form #verify",
    ] {
        b.expect(css, "the request page").await;
    }
    let export = b.attrs("a#export", "href").await;
    let export = export
        .first()
        .unwrap_or_else(|| panic!("no a#export before the erasure"))
        .clone();
    assert!(
        export.ends_with(&format!("/console/privacy/exports/{erased}")),
        "a#export {export}"
    );
    let download = reqwest::Client::new()
        .get(&export)
        .header(reqwest::header::COOKIE, b.cookie_header().await)
        .send()
        .await
        .expect("the export answers");
    assert_eq!(download.status(), 200, "the export downloads");
    let exported: Value = download.json().await.expect("the export is JSON");
    assert!(
        exported.to_string().contains(erased.as_str()),
        "the export names the customer"
    );
    b.shot("request").await;
    b.measure("request", &request_path).await;
    b.goto("/console/privacy").await;
    let rows = b.attrs("#requests a", "href").await;
    assert!(
        rows.iter().any(|h| h.ends_with(&request_path)),
        "the ledger lists the request: {rows:?}"
    );
    b.shot("privacy").await;
    b.measure("privacy", "/console/privacy").await;

    eprintln!("== verify and erase");
    b.goto(&request_path).await;
    let method = "call-back to the number on file";
    assert!(!b.text("main#main").await.contains(method));
    b.fill("#verify-method", method).await;
    b.submit("#verify").await;
    b.flash("status").await;
    // The request stays open; the page shows how it was verified.
    b.reload_until(&request_path, "main#main", method, "the verification")
        .await;
    eprintln!("verified: #request-status {:?}", b.text("#request-status").await);
    for css in [
        "form#erase-form #erase-legal-basis",
        "#erase-form input#erase-confirm[type=checkbox]",
        "#erase-form #erase",
    ] {
        b.expect(css, "the erase form").await;
    }
    let proof_before = b.text_of("#proof").await;
    b.fill("#erase-legal-basis", "CCPA 1798.105 request to delete").await;
    b.tick("#erase-confirm").await;
    b.submit("#erase").await;
    let flash = b.flash("status").await;
    eprintln!("erased: {flash:?}");
    let deadline = Instant::now() + SETTLE;
    let proof = loop {
        b.goto(&request_path).await;
        match b.text_of("#proof").await {
            Some(p) if !p.is_empty() && Some(&p) != proof_before.as_ref() => break p,
            other => assert!(Instant::now() < deadline, "#proof never told the erasure: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    eprintln!(
        "after the erasure: #request-status {:?}; #proof {proof:?}",
        b.text("#request-status").await
    );
    b.shot("request-erased").await;
    // Done: the request is completed with what was done.
    b.fill("#complete-outcome", "erased every source record").await;
    b.submit("#complete").await;
    b.flash("status").await;
    b.reload_until(&request_path, "#request-status", "completed", "the completion")
        .await;
    let customer_path = format!("/console/customers/{erased}");
    b.reload_until(&customer_path, "#status", "erased", "the erased customer")
        .await;
    assert_eq!(b.status().await, 410, "{}", b.context().await);
    b.shot("customer-erased").await;
    b.sign_out().await;

    eprintln!("== a reader may not see the stewards' and compliance pages");
    b.sign_in(&demo.reader).await;
    for page in ["/console/reviews", "/console/privacy"] {
        b.goto(page).await;
        assert_eq!(b.status().await, 403, "a reader on {page}: {}", b.context().await);
        let h1 = b.text("h1").await;
        assert!(h1.contains("Not allowed"), "a reader on {page}: h1 {h1:?}");
    }
    b.shot("not-allowed").await;
    b.sign_out().await;
}
