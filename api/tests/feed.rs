//! `GET /v1/feed` over real HTTP against the real binary, on SQLite and
//! PostgreSQL: a subscriber cut off twice mid-stream while records keep
//! arriving resumes (by `Last-Event-ID`, then by `?after=`) without missing
//! or repeating a change; what it receives is exactly the change log as
//! CloudEvents; the type filter, field scopes and malformed cursors.

mod change_log;
mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use change_log::{expected, ingest, ingest_last, open_feed, person, read_db, SseReader};
use common::{add_client, api, start, terminate, Backend, Deployment};
use mdm_api::auth::Scopes;
use mdm_projections::changes::{ChangeCursor, ChangeType};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);

fn deployment(backend: Backend, purpose: &str) -> (Deployment, Vec<(String, String)>) {
    let mut d = Deployment::new(backend, purpose);
    d.extra.push(("MDM_FEED_KEEP_ALIVE_MS".into(), "300".into()));
    d.extra.push(("MDM_FEED_POLL_MS".into(), "100".into()));
    let env = d.env();
    (d, env)
}

fn pairs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// Reads events until one has id `last` (included); panics if the stream
/// stalls first.
async fn read_until(reader: &mut SseReader, last: &str, into: &mut Vec<(String, Value)>) {
    loop {
        let event = reader
            .next(WAIT)
            .await
            .expect("the feed delivers up to the end of the log");
        let id = event.id.expect("every event has an id");
        let done = id == last;
        into.push((id, serde_json::from_str(&event.data).expect("CloudEvent JSON")));
        if done {
            return;
        }
    }
}

async fn a_subscriber_that_reconnects_misses_nothing_and_sees_nothing_twice(backend: Backend) {
    let (d, env) = deployment(backend, "feed");
    let env = pairs(&env);
    let reader_key = add_client(d.dir.path(), &env, "feed-reader", "reader", None);
    let (mut child, addr) = start(d.dir.path(), &env);
    let admin = api(&addr);
    ingest(
        &admin,
        &addr,
        &(0..6).map(|i| person("A", i, "example.test")).collect::<Vec<_>>(),
    )
    .await;

    // Records keep arriving while the subscriber reads, drops, comes back.
    let writer = {
        let admin = admin.clone();
        let addr = addr.clone();
        tokio::spawn(async move {
            for round in 0..8 {
                let batch: Vec<Value> = (0..4).map(|i| person("B", round * 4 + i, "example.test")).collect();
                ingest(&admin, &addr, &batch).await;
                // New e-mail addresses for earlier people: updates.
                let moved: Vec<Value> = (0..2)
                    .map(|i| person("A", round % 3 * 2 + i, &format!("r{round}.example")))
                    .collect();
                ingest(&admin, &addr, &moved).await;
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        })
    };

    let mut seen: Vec<(String, Value)> = Vec::new();
    // First connection: from the beginning, cut off after 12 events (the
    // response is dropped mid-stream, whatever it had buffered).
    let response = open_feed(&addr, &reader_key, "", None).await;
    assert_eq!(response.status(), 200);
    let media = response.headers()["content-type"].to_str().expect("ascii").to_owned();
    assert!(media.starts_with("text/event-stream"), "{media}");
    let mut reader = SseReader::new(response);
    while seen.len() < 12 {
        let e = reader.next(WAIT).await.expect("events flow");
        seen.push((e.id.expect("id"), serde_json::from_str(&e.data).expect("json")));
    }
    drop(reader);
    // Second: resumes with Last-Event-ID, cut off after 15 more.
    let last = seen.last().map(|(id, _)| id.clone()).expect("events");
    let mut reader = SseReader::new(open_feed(&addr, &reader_key, "", Some(&last)).await);
    let target = seen.len() + 15;
    while seen.len() < target {
        let e = reader.next(WAIT).await.expect("events flow");
        seen.push((e.id.expect("id"), serde_json::from_str(&e.data).expect("json")));
    }
    drop(reader);
    writer.await.expect("writer");
    // One more e-mail change, waited for in the read model, so the history
    // holds at least one update whatever the interleaving above.
    let final_email = person("A", 0, "final.example");
    ingest(&admin, &addr, std::slice::from_ref(&final_email)).await;
    let mut updated = false;
    for _ in 0..400 {
        let r = admin
            .get(format!("http://{addr}/v1/customers/by-source/dealer_a/A-0"))
            .send()
            .await
            .expect("answers");
        if r.status() == 200 {
            let c: Value = r.json().await.expect("json");
            if c["attributes"]["email"]
                .as_str()
                .is_some_and(|e| e.ends_with("@final.example"))
            {
                updated = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(updated, "the changed e-mail reached the golden record");
    let last_token = ingest_last(&admin, &addr, &person("C", 0, "example.test")).await;

    // Third: resumes with ?after= (a Last-Event-ID header would win).
    let db = read_db(backend, &d).await;
    let all = expected(&db, None, &Scopes::all()).await;
    let end = all.last().and_then(|e| e["id"].as_str()).expect("changes").to_owned();
    let last = seen.last().map(|(id, _)| id.clone()).expect("events");
    let mut reader = SseReader::new(open_feed(&addr, &reader_key, &format!("?after={last}"), None).await);
    read_until(&mut reader, &end, &mut seen).await;

    let ids: Vec<&str> = seen.iter().map(|(id, _)| id.as_str()).collect();
    let unique: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "no change was delivered twice");
    let cursors: Vec<ChangeCursor> = ids.iter().map(|id| ChangeCursor::parse(id).expect("cursor")).collect();
    assert!(cursors.windows(2).all(|w| w[0] < w[1]), "log order");
    let got: Vec<&Value> = seen.iter().map(|(_, e)| e).collect();
    let want: Vec<&Value> = all.iter().collect();
    assert_eq!(got.len(), want.len(), "nothing missed");
    for ((id, event), want) in seen.iter().zip(&all) {
        assert_eq!(event, want, "event {id} is the change log's");
        assert_eq!(
            event["id"].as_str(),
            Some(id.as_str()),
            "the SSE id is the CloudEvent id"
        );
    }
    // The log covers the kinds of change this history made.
    let kinds: BTreeSet<&str> = all.iter().filter_map(|e| e["type"].as_str()).collect();
    for kind in [
        "com.mdm.customer.created",
        "com.mdm.customer.updated",
        "com.mdm.customer.household_changed",
    ] {
        assert!(kinds.contains(kind), "{kind} in {kinds:?}");
    }
    let first = &all[0];
    assert_eq!(first["specversion"], "1.0");
    assert_eq!(first["source"], "/mdm/customers");
    assert_eq!(first["datacontenttype"], "application/json");
    assert_eq!(first["subject"], first["data"]["token"]);
    assert!(first["time"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert!(all.iter().any(|e| e["subject"] == last_token.as_str()));
    assert!(
        terminate(&mut child).success(),
        "an open stream does not hold up shutdown"
    );
}

async fn types_scopes_and_bad_cursors(backend: Backend) {
    let (d, env) = deployment(backend, "feed_filters");
    let env = pairs(&env);
    let scoped_key = add_client(d.dir.path(), &env, "dealer", "reader", Some("name,phone"));
    let steward_key = add_client(d.dir.path(), &env, "steward", "steward", None);
    let ingest_key = add_client(d.dir.path(), &env, "loader", "ingest", None);
    let (mut child, addr) = start(d.dir.path(), &env);
    let admin = api(&addr);
    ingest(
        &admin,
        &addr,
        &(0..4).map(|i| person("A", i, "example.test")).collect::<Vec<_>>(),
    )
    .await;
    let a = ingest_last(&admin, &addr, &person("B", 0, "example.test")).await;
    let b = ingest_last(&admin, &addr, &person("C", 0, "example.test")).await;
    // A steward merges two strangers and splits them apart again.
    let steward = common::client_with(&steward_key);
    let r = steward
        .post(format!("http://{addr}/v1/customers/{a}/merge"))
        .json(&json!({"absorbed": b, "reason": "feed test"}))
        .send()
        .await
        .expect("merge answers");
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    let r = steward
        .post(format!("http://{addr}/v1/customers/{a}/split"))
        .json(&json!({"record": {"system": "dealer_a", "source_id": "C-0"}, "reason": "feed test"}))
        .send()
        .await
        .expect("split answers");
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    // Updates of e-mail only: invisible to a name-and-phone reader.
    ingest(
        &admin,
        &addr,
        &(0..4).map(|i| person("A", i, "moved.example")).collect::<Vec<_>>(),
    )
    .await;
    ingest_last(&admin, &addr, &person("D", 0, "example.test")).await;
    let db = read_db(backend, &d).await;

    // Only merges and unmerges, as a steward sees them.
    let types = [ChangeType::Merged, ChangeType::Unmerged];
    let want = expected(&db, Some(&types), &Scopes::all()).await;
    assert_eq!(want.len(), 2, "one merge, one unmerge: {want:?}");
    assert_eq!(want[0]["type"], "com.mdm.customer.merged");
    assert_eq!(want[0]["subject"], b.as_str());
    assert_eq!(want[0]["data"]["detail"]["survivor"], a.as_str());
    assert_eq!(want[1]["type"], "com.mdm.customer.unmerged");
    assert_eq!(want[1]["data"]["detail"]["from"], a.as_str());
    let mut reader = SseReader::new(open_feed(&addr, &steward_key, "?types=merged,unmerged", None).await);
    let mut got = Vec::new();
    read_until(&mut reader, want[1]["id"].as_str().expect("id"), &mut got).await;
    assert_eq!(
        got.iter().map(|(_, e)| e).collect::<Vec<_>>(),
        want.iter().collect::<Vec<_>>()
    );
    drop(reader);

    // A name-and-phone reader: no e-mail, address or birth date ever, and
    // no e-mail-only update at all.
    let scopes = Scopes::parse("name,phone").expect("scopes");
    let want = expected(&db, None, &scopes).await;
    let all = expected(&db, None, &Scopes::all()).await;
    assert!(want.len() < all.len(), "e-mail-only updates are left out");
    let mut reader = SseReader::new(open_feed(&addr, &scoped_key, "", None).await);
    let mut got = Vec::new();
    read_until(
        &mut reader,
        want.last().and_then(|e| e["id"].as_str()).expect("id"),
        &mut got,
    )
    .await;
    assert_eq!(got.len(), want.len());
    for ((_, event), want) in got.iter().zip(&want) {
        assert_eq!(event, want);
        let attributes = event["data"]["attributes"].as_object().expect("attributes");
        assert!(attributes.keys().all(|k| k == "name" || k == "phone"), "{attributes:?}");
        if event["type"] == "com.mdm.customer.updated" {
            assert!(!attributes.is_empty());
        }
    }
    // Caught up, the stream stays open with keep-alive comments (every
    // 300 ms here).
    let comments = reader.comments;
    assert!(reader.next(Duration::from_millis(1000)).await.is_none(), "nothing more");
    assert!(reader.comments > comments, "keep-alive comments while idle");
    drop(reader);

    // Malformed cursors and unknown types: 400 naming the field.
    let bad = |query: &'static str, header: Option<&'static str>, field: &'static str| {
        let addr = addr.clone();
        let key = scoped_key.clone();
        async move {
            let r = open_feed(&addr, &key, query, header).await;
            assert_eq!(r.status(), 400, "{query} {header:?}");
            assert_eq!(r.headers()["content-type"], "application/problem+json");
            let body: Value = r.json().await.expect("problem");
            assert_eq!(body["field"], field, "{body}");
        }
    };
    bad("?after=abc", None, "after").await;
    bad("?after=12:", None, "after").await;
    bad("", Some("12:x"), "Last-Event-ID").await;
    bad("?after=1", Some("-3"), "Last-Event-ID").await;
    bad("?types=created,deleted", None, "types").await;
    // An ingest-only client may not read the feed.
    let r = open_feed(&addr, &ingest_key, "", None).await;
    assert_eq!(r.status(), 403);
    assert!(terminate(&mut child).success());
}

on_both_backends!(
    a_subscriber_that_reconnects_misses_nothing_and_sees_nothing_twice,
    types_scopes_and_bad_cursors,
);
