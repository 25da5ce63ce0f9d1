//! What the feed and webhook tests share: people to ingest, the service's
//! read-model database (the change log the tests compare with), and a
//! Server-Sent Events reader.
#![allow(dead_code)]

use std::time::Duration;

use mdm_api::auth::Scopes;
use mdm_api::http::feed::visible_cloud_event;
use mdm_projections::changes::{changes_after, ChangeCursor, ChangeType};
use mdm_projections::ReadDb;
use serde_json::{json, Value};

use crate::common::{Backend, Deployment};

/// A dealer CRM (brand A) record. People `2k` and `2k + 1` of a `tag`
/// share a family name, phone and address (a household); each has an
/// e-mail of its own (at `email_domain`: change it for an update); people
/// of different tags have nothing in common.
pub fn person(tag: &str, i: usize, email_domain: &str) -> Value {
    let t = tag.bytes().map(usize::from).sum::<usize>() % 97;
    let given = [
        "Amara", "Bjorn", "Chiara", "Dmitri", "Esme", "Farid", "Greta", "Hiro", "Ines", "Jonas", "Keiko",
    ][(i + t) % 11];
    let family = format!("Family{tag}{}", i / 2);
    let house = t * 100 + i / 2;
    json!({
        "customerNo": format!("{tag}-{i}"),
        "name": {"first": given, "last": family},
        "contact": {
            "email": format!("{}.{}{i}@{email_domain}", given.to_lowercase(), family.to_lowercase()),
            "phones": [{"number": format!("+1 312 {:03} {:04}", 200 + t, 1000 + i / 2)}],
        },
        "address": {"street": format!("{house} {} St", ["Elm", "Oak", "Birch"][i / 2 % 3]), "city": "Springfield", "state": "IL", "zip": format!("{}", 60000 + house)},
        "dob": format!("{:02}/{:02}/19{:02}", 1 + (i + t) % 12, 1 + (i * 7 + t) % 27, 30 + (i + t) % 60),
    })
}

/// Posts records of `dealer_a`; expects each to be taken.
pub async fn ingest(http: &reqwest::Client, addr: &str, records: &[Value]) {
    let r = http
        .post(format!("http://{addr}/v1/sources/dealer_a/records"))
        .json(&Value::Array(records.to_vec()))
        .send()
        .await
        .expect("ingest answers");
    let status = r.status().as_u16();
    let body = r.text().await.unwrap_or_default();
    assert!(status == 200 || status == 201 || status == 202, "{status} {body}");
}

/// Posts one record and waits until its customer shows in the read model,
/// so every change before it is in the change log. Returns the token.
pub async fn ingest_last(http: &reqwest::Client, addr: &str, record: &Value) -> String {
    let r = http
        .post(format!("http://{addr}/v1/sources/dealer_a/records"))
        .json(record)
        .send()
        .await
        .expect("ingest answers");
    let body: Value = r.json().await.expect("json");
    let id = record["customerNo"].as_str().expect("id").to_owned();
    let mut token = body["customer"]["token"].as_str().map(str::to_owned);
    for _ in 0..600 {
        if token.is_none() {
            let r = http
                .get(format!("http://{addr}/v1/sources/dealer_a/records/{id}/customer"))
                .send()
                .await
                .expect("answers");
            if r.status() == 200 {
                let b: Value = r.json().await.expect("json");
                token = b["token"].as_str().map(str::to_owned);
            }
        }
        if let Some(t) = &token {
            let r = http
                .get(format!("http://{addr}/v1/customers/{t}"))
                .send()
                .await
                .expect("answers");
            if r.status() == 200 {
                return t.clone();
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the last record never reached the read model");
}

/// The service's read-model database, opened beside it.
pub async fn read_db(backend: Backend, d: &Deployment) -> ReadDb {
    match backend {
        Backend::Sqlite => ReadDb::open_sqlite(&d.dir.path().join("mdm-data/read.db"))
            .await
            .expect("read db"),
        Backend::Postgres => ReadDb::open_postgres(&d.db.as_ref().expect("database").url, "mdm_read")
            .await
            .expect("read db"),
    }
}

/// Every change in the log as a client with `scopes` and `types` sees it:
/// the CloudEvents the feed and webhooks must deliver, in order.
pub async fn expected(db: &ReadDb, types: Option<&[ChangeType]>, scopes: &Scopes) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = ChangeCursor::START;
    loop {
        let page = changes_after(db, after, 1000, types).await.expect("change log");
        out.extend(page.changes.iter().filter_map(|c| visible_cloud_event(c, scopes)));
        after = page.next;
        if !page.full {
            return out;
        }
    }
}

/// One server-sent event.
#[derive(Clone, Debug, PartialEq)]
pub struct Sse {
    pub id: Option<String>,
    pub data: String,
}

/// Reads a `text/event-stream` response event by event.
pub struct SseReader {
    response: reqwest::Response,
    buffer: String,
    /// Keep-alive comments seen so far.
    pub comments: usize,
}

impl SseReader {
    pub fn new(response: reqwest::Response) -> SseReader {
        SseReader {
            response,
            buffer: String::new(),
            comments: 0,
        }
    }

    /// The next event (comments are counted, not returned); `None` when the
    /// stream ends or no event arrives within `wait`.
    pub async fn next(&mut self, wait: Duration) -> Option<Sse> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut id = None;
                let mut data = Vec::new();
                let mut comment = false;
                for line in block.lines() {
                    if line.starts_with(':') {
                        comment = true;
                    } else if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim_start().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push(v.strip_prefix(' ').unwrap_or(v).to_owned());
                    }
                }
                if data.is_empty() {
                    if comment {
                        self.comments += 1;
                    }
                    continue;
                }
                return Some(Sse {
                    id,
                    data: data.join("\n"),
                });
            }
            match tokio::time::timeout_at(deadline, self.response.chunk()).await {
                Ok(Ok(Some(bytes))) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                _ => return None,
            }
        }
    }
}

/// Opens the feed with `key`; `last_event_id` as the header, `query` as is.
pub async fn open_feed(addr: &str, key: &str, query: &str, last_event_id: Option<&str>) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .get(format!("http://{addr}/v1/feed{query}"))
        .bearer_auth(key);
    if let Some(id) = last_event_id {
        req = req.header("Last-Event-ID", id);
    }
    req.send().await.expect("the feed answers")
}
