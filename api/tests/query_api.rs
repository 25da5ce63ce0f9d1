//! The /v1 query API and steward commands over real HTTP, on SQLite and
//! PostgreSQL: customers by token (redirect after a merge, 404), by source
//! reference, search with cursors, lineage, history, as-of, households,
//! field scopes, If-Match (412, nothing applied), problem documents naming
//! the field, the OpenAPI document, and every role against every endpoint
//! the document lists.

mod common;

use std::time::Duration;

use common::{add_client, client_with, start, terminate, Backend, Deployment};
use serde_json::{json, Value};

fn signup(id: &str, first: &str, last: &str, email: &str, mobile: &str, born: &str) -> Value {
    json!({"signupId": id, "firstName": first, "lastName": last, "email": email, "mobile": mobile, "birthDate": born})
}

struct Api {
    addr: String,
    http: reqwest::Client,
}

impl Api {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn get(&self, path: &str) -> (u16, reqwest::header::HeaderMap, Value) {
        let r = self.http.get(self.url(path)).send().await.expect("answers");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.expect("body");
        (status, headers, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: Value, if_match: Option<&str>) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut req = self.http.post(self.url(path)).json(&body);
        if let Some(m) = if_match {
            req = req.header("If-Match", m);
        }
        let r = req.send().await.expect("answers");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.expect("body");
        (status, headers, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Ingests a web sign-up and returns its customer's token.
    async fn signup(&self, record: Value) -> String {
        let (status, _, body) = self.post("/v1/sources/web_signup/records", record, None).await;
        assert!(status == 201 || status == 200, "{body}");
        body["customer"]["token"].as_str().expect("a token").to_owned()
    }

    /// Waits until the read model answers `path` with `want`.
    async fn eventually(&self, path: &str, want: u16) -> (reqwest::header::HeaderMap, Value) {
        let mut last = Value::Null;
        for _ in 0..300 {
            let (status, headers, body) = self.get(path).await;
            if status == want {
                return (headers, body);
            }
            last = body;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{path} never answered {want}: {last}");
    }

    /// Waits until the read models answer `path` with 200 and a body that
    /// satisfies `ready`: each projection follows the log on its own, so a
    /// read right after a write may see an earlier state.
    async fn until(&self, path: &str, ready: impl Fn(&Value) -> bool) -> (reqwest::header::HeaderMap, Value) {
        let mut last = Value::Null;
        for _ in 0..300 {
            let (status, headers, body) = self.get(path).await;
            if status == 200 && ready(&body) {
                return (headers, body);
            }
            last = body;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{path} never became ready: {last}");
    }
}

fn env_of(d: &Deployment) -> Vec<(String, String)> {
    d.env()
}

async fn customers_are_queried_searched_and_explained(backend: Backend) {
    let d = Deployment::new(backend, "query_api");
    let env = env_of(&d);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (mut child, addr) = start(d.dir.path(), &env);
    let admin = Api {
        addr: addr.clone(),
        http: common::api(&addr),
    };
    let robert = admin
        .signup(signup(
            "S-1",
            "Robert",
            "Okonkwo",
            "rob.okonkwo@example.test",
            "+1 312 555 0101",
            "1979-04-12",
        ))
        .await;
    let same = admin
        .signup(signup(
            "S-2",
            "Bob",
            "Okonkwo",
            "rob.okonkwo@example.test",
            "+1 312 555 0101",
            "1979-04-12",
        ))
        .await;
    assert_eq!(robert, same);
    let wife = admin
        .signup(signup(
            "S-3",
            "Adaeze",
            "Okonkwo",
            "adaeze@example.test",
            "+1 312 555 0101",
            "1981-09-30",
        ))
        .await;

    // By token: the golden record, its version as ETag.
    let (headers, body) = admin.eventually(&format!("/v1/customers/{robert}"), 200).await;
    assert_eq!(body["token"], robert.as_str());
    assert_eq!(body["status"], "active");
    assert_eq!(body["attributes"]["name"]["family"], "Okonkwo", "{body}");
    assert_eq!(body["attributes"]["email"], "rob.okonkwo@example.test", "{body}");
    assert!(body["version"].is_i64(), "{body}");
    let _ = headers;
    let (headers, body) = admin
        .until(&format!("/v1/customers/{robert}"), |b| b["record_count"] == 2)
        .await;
    let version = body["version"].as_i64().expect("version");
    assert_eq!(headers["etag"].to_str().expect("ascii"), format!("\"{version}\""));

    // Unknown token: 404 problem naming the token; a malformed one: 400.
    let (status, headers, body) = admin.get(&format!("/v1/customers/{}", uuid::Uuid::new_v4())).await;
    assert_eq!(status, 404);
    assert_eq!(headers["content-type"], "application/problem+json");
    assert_eq!(body["field"], "token");
    let (status, headers, body) = admin.get("/v1/customers/not-a-token").await;
    assert_eq!(status, 400);
    assert_eq!(headers["content-type"], "application/problem+json");
    assert_eq!(body["field"], "token", "{body}");
    assert!(
        !body.to_string().contains("not-a-token"),
        "the value is not quoted: {body}"
    );

    // By source reference.
    let (status, _, body) = admin.get("/v1/customers/by-source/web_signup/S-2").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token"], robert.as_str());
    let (status, _, body) = admin.get("/v1/customers/by-source/web_signup/S-404").await;
    assert_eq!((status, body["field"].as_str()), (404, Some("source_id")));
    let (status, _, body) = admin.get("/v1/customers/by-source/nobody/S-1").await;
    assert_eq!((status, body["field"].as_str()), (404, Some("system")));

    // Search: by family name both, by e-mail one; cursor pages; bad input named.
    admin.eventually(&format!("/v1/customers/{wife}"), 200).await;
    admin
        .until("/v1/customers?name=Okonkwo", |b| {
            b["customers"].as_array().is_some_and(|c| c.len() == 2)
        })
        .await;
    let (status, _, body) = admin.get("/v1/customers?name=Okonkwo&limit=1").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["customers"].as_array().map(Vec::len), Some(1));
    let cursor = body["next"].as_str().expect("a next page").to_owned();
    let (_, _, page2) = admin
        .get(&format!("/v1/customers?name=Okonkwo&limit=1&cursor={cursor}"))
        .await;
    assert_eq!(page2["customers"].as_array().map(Vec::len), Some(1));
    assert_ne!(page2["customers"][0]["token"], body["customers"][0]["token"]);
    // Two Okonkwo customers: the second page is the last.
    assert!(page2["next"].is_null(), "{page2}");
    let (_, _, body) = admin.get("/v1/customers?email=adaeze@example.test").await;
    assert_eq!(body["customers"][0]["token"], wife.as_str(), "{body}");
    for (query, field) in [
        ("", "name"),
        ("?name=Okonkwo&limit=0", "limit"),
        ("?name=Okonkwo&limit=101", "limit"),
        ("?name=Okonkwo&cursor=zzz", "cursor"),
        ("?email=no-at-sign", "email"),
    ] {
        let (status, headers, body) = admin.get(&format!("/v1/customers{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(headers["content-type"], "application/problem+json");
        assert_eq!(body["field"], field, "{query}: {body}");
    }

    // Lineage, history, source records, as-of, household.
    let (_, body) = admin
        .until(&format!("/v1/customers/{robert}/lineage"), |b| {
            b["attributes"]
                .as_array()
                .is_some_and(|a| a.iter().any(|a| a["attribute"] == "email"))
        })
        .await;
    let attributes = body["attributes"].as_array().expect("lineage");
    assert!(
        attributes
            .iter()
            .any(|a| a["attribute"] == "email" && a["system"] == "web_signup" && a["rule"].is_string()),
        "{body}"
    );
    // The decisions projection runs on its own: wait for it to hold both.
    let (_, body) = admin
        .until(&format!("/v1/customers/{robert}/history"), |b| {
            b["decisions"].as_array().is_some_and(|d| d.len() >= 2)
        })
        .await;
    let types: Vec<&str> = body["decisions"]
        .as_array()
        .expect("decisions")
        .iter()
        .filter_map(|d| d["type"].as_str())
        .collect();
    assert!(types.starts_with(&["CustomerCreated", "RecordLinked"]), "{types:?}");
    let linked = &body["decisions"][1];
    assert_eq!(linked["actor"]["kind"], "resolver");
    assert!(linked["explanation"]["total"].is_number(), "{linked}");
    let (status, _, body) = admin.get(&format!("/v1/customers/{robert}/history?limit=1")).await;
    assert_eq!(status, 200);
    assert_eq!(body["decisions"].as_array().map(Vec::len), Some(1));
    assert!(body["next"].is_number(), "{body}");
    // So does the source-record projection.
    let (_, body) = admin
        .until(&format!("/v1/customers/{robert}/source-records?versions=true"), |b| {
            b["source_records"].as_array().is_some_and(|r| r.len() == 2)
        })
        .await;
    assert!(
        body["source_records"][0]["raw"]
            .as_str()
            .is_some_and(|r| r.contains("Okonkwo")),
        "{body}"
    );
    let created_at = linked["position"].as_i64().expect("position") - 1;
    let (status, _, body) = admin
        .get(&format!("/v1/customers/{robert}/as-of?position={created_at}"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["members"].as_array().map(Vec::len),
        Some(1),
        "one record before the link: {body}"
    );
    let (status, _, body) = admin.get(&format!("/v1/customers/{robert}/as-of")).await;
    assert_eq!((status, body["field"].as_str()), (400, Some("position")));
    let (status, _, body) = admin.get(&format!("/v1/customers/{robert}/as-of?time=yesterday")).await;
    assert_eq!((status, body["field"].as_str()), (400, Some("time")));
    let (status, _, body) = admin
        .get("/v1/customers/00000000-0000-0000-0000-000000000001/as-of?position=1")
        .await;
    assert_eq!(status, 404, "{body}");
    let (_, _, c) = admin.get(&format!("/v1/customers/{robert}")).await;
    if let Some(h) = c["household"].as_str() {
        let (status, _, body) = admin.get(&format!("/v1/households/{h}")).await;
        assert_eq!(status, 200, "{body}");
        assert!(body["members"]
            .as_array()
            .is_some_and(|m| m.iter().any(|x| x["token"] == robert.as_str())));
    }
    let (status, _, _) = admin.get(&format!("/v1/households/{}", uuid::Uuid::new_v4())).await;
    assert_eq!(status, 404);

    // A dealership reader sees name and phone only, and cannot search by e-mail.
    let key = add_client(d.dir.path(), &env, "dealer-7", "reader", Some("name,phone"));
    let dealer = Api {
        addr: addr.clone(),
        http: client_with(&key),
    };
    let (status, _, body) = dealer.get(&format!("/v1/customers/{robert}")).await;
    assert_eq!(status, 200, "{body}");
    let keys: Vec<&String> = body["attributes"].as_object().expect("attributes").keys().collect();
    assert_eq!(keys, ["name", "phone"], "{body}");
    assert!(!body.to_string().contains("rob.okonkwo"), "{body}");
    let (status, _, body) = dealer.get("/v1/customers?email=rob.okonkwo@example.test").await;
    assert_eq!((status, body["field"].as_str()), (403, Some("email")));
    let (status, _, body) = dealer.get(&format!("/v1/customers/{robert}/lineage")).await;
    assert_eq!(status, 200);
    assert!(
        body["attributes"]
            .as_array()
            .expect("lineage")
            .iter()
            .all(|a| a["attribute"] == "name" || a["attribute"] == "phone"),
        "{body}"
    );
    let (status, _, _) = dealer.get(&format!("/v1/customers/{robert}/source-records")).await;
    assert_eq!(status, 403);
    let (_, _, body) = dealer
        .get(&format!("/v1/customers/{robert}/as-of?position=9223372036854775807"))
        .await;
    assert!(
        body["attributes"].as_object().is_some_and(|a| !a.contains_key("email")),
        "{body}"
    );

    // Steward commands: a reason is required, If-Match is honoured.
    let steward = Api {
        addr: addr.clone(),
        http: client_with(&add_client(d.dir.path(), &env, "steward-ann", "steward", None)),
    };
    let path = format!("/v1/customers/{robert}/merge");
    let (status, _, body) = steward.post(&path, json!({"absorbed": wife}), None).await;
    assert_eq!((status, body["field"].as_str()), (400, Some("reason")), "{body}");
    let (status, _, body) = steward
        .post(&path, json!({"absorbed": wife, "reason": " "}), None)
        .await;
    assert_eq!((status, body["field"].as_str()), (400, Some("reason")), "{body}");
    let (status, _, body) = steward
        .post(&path, json!({"absorbed": wife, "reason": "x", "colour": 1}), None)
        .await;
    assert_eq!((status, body["field"].as_str()), (400, Some("colour")), "{body}");
    let (status, _, body) = steward
        .post(&path, json!({"absorbed": "nope", "reason": "x"}), None)
        .await;
    assert_eq!((status, body["field"].as_str()), (400, Some("absorbed")), "{body}");
    let (status, _, body) = steward
        .post(&path, json!({"absorbed": wife, "reason": "x"}), Some("banana"))
        .await;
    assert_eq!((status, body["field"].as_str()), (400, Some("If-Match")), "{body}");
    let stale = format!("\"{}\"", version - 1);
    let (status, _, body) = steward
        .post(&path, json!({"absorbed": wife, "reason": "same person"}), Some(&stale))
        .await;
    assert_eq!(status, 412, "{body}");
    // The engine's version: the read model may still be catching up with a
    // later household decision, never ahead of it.
    let read_version = version;
    let version = body["current_version"].as_i64().expect("current_version");
    assert!(version >= read_version, "{version} < {read_version}");
    let (status, _, body) = steward
        .post(
            &format!("/v1/customers/{robert}/merge"),
            json!({"absorbed": robert, "reason": "x"}),
            None,
        )
        .await;
    assert_eq!(status, 422, "{body}");
    // Nothing was applied: the wife is still her own customer.
    let (status, _, _) = admin.get(&format!("/v1/customers/{wife}")).await;
    assert_eq!(status, 200);
    let current = format!("\"{version}\"");
    let (status, headers, body) = steward
        .post(
            &path,
            json!({"absorbed": wife, "reason": "steward test: same household account"}),
            Some(&current),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["decisions"][0], "CustomersMerged");
    let new_version = body["versions"][robert.as_str()].as_u64().expect("new version");
    assert_eq!(headers["etag"].to_str().expect("ascii"), format!("\"{new_version}\""));
    // The same command again on the old ETag: 412.
    let (status, _, _) = steward
        .post(&path, json!({"absorbed": wife, "reason": "again"}), Some(&current))
        .await;
    assert!(status == 412 || status == 409, "{status}");

    // The merged token redirects to the survivor once the read model has it.
    let (headers, body) = admin.eventually(&format!("/v1/customers/{wife}"), 307).await;
    assert_eq!(
        headers["location"].to_str().expect("ascii"),
        format!("/v1/customers/{robert}")
    );
    assert_eq!(body["merged_into"], robert.as_str());
    let following = reqwest::Client::builder()
        .default_headers(
            [(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {}", common::admin_key(&addr)).parse().expect("header"),
            )]
            .into_iter()
            .collect(),
        )
        .build()
        .expect("client");
    let redirected = following
        .get(admin.url(&format!("/v1/customers/{wife}")))
        .send()
        .await
        .expect("follows");
    assert_eq!(redirected.status(), 200, "reqwest follows the redirect to the survivor");

    // Unmerge: split the wife's record off again: she gets her token back.
    let (status, _, body) = steward
        .post(
            &format!("/v1/customers/{robert}/split"),
            json!({"record": {"system": "web_signup", "source_id": "S-3"}, "reason": "not the same person after all"}),
            Some(&format!("\"{new_version}\"")),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["decisions"][0], "RecordSplit");
    admin.eventually(&format!("/v1/customers/{wife}"), 200).await;
    let (status, _, body) = steward
        .post(
            &format!("/v1/customers/{robert}/split"),
            json!({"record": {"system": "web_signup", "source_id": "S-3"}, "reason": "again"}),
            None,
        )
        .await;
    assert_eq!((status, body["field"].as_str()), (409, Some("record")), "{body}");
    let (status, _, body) = steward
        .post(
            &format!("/v1/customers/{robert}/split"),
            json!({"record": {"system": "nobody", "source_id": "S-3"}, "reason": "x"}),
            None,
        )
        .await;
    assert_eq!((status, body["field"].as_str()), (404, Some("record.system")), "{body}");

    // Not-a-match between the two, then force-link is still possible for a steward.
    let (status, _, body) = steward
        .post(
            &format!("/v1/customers/{robert}/not-a-match"),
            json!({"records": [{"system": "web_signup", "source_id": "S-1"}, {"system": "web_signup", "source_id": "S-3"}], "reason": "different people"}),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["decisions"][0], "NotAMatchMarked");
    let (status, _, body) = steward
        .post(
            &format!("/v1/customers/{robert}/force-link"),
            json!({"record": {"system": "web_signup", "source_id": "S-404"}, "reason": "x"}),
            None,
        )
        .await;
    assert_eq!((status, body["field"].as_str()), (404, Some("record")), "{body}");

    // The history shows the steward, the reason and the command.
    admin.eventually(&format!("/v1/customers/{wife}"), 200).await;
    let mut steward_seen = false;
    for _ in 0..100 {
        let (_, _, h) = admin.get(&format!("/v1/customers/{robert}/history")).await;
        steward_seen = h["decisions"].as_array().expect("decisions").iter().any(|d| {
            d["type"] == "CustomersMerged"
                && d["actor"]["id"] == "steward-ann"
                && d["reason"] == "steward test: same household account"
        });
        if steward_seen {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(steward_seen, "the merge is in the history with its steward and reason");

    // Review queue: list parameters are checked.
    let (status, _, body) = steward.get("/v1/reviews").await;
    assert_eq!(status, 200, "{body}");
    assert!(body["reviews"].is_array());
    let (status, _, body) = steward.get("/v1/reviews?state=maybe").await;
    assert_eq!((status, body["field"].as_str()), (400, Some("state")));
    let (status, _, _) = steward.get(&format!("/v1/reviews/{}", uuid::Uuid::new_v4())).await;
    assert_eq!(status, 404);
    let (status, _, _) = steward
        .post(&format!("/v1/reviews/{}/take", uuid::Uuid::new_v4()), json!({}), None)
        .await;
    assert_eq!(status, 404);
    let (status, _, body) = steward
        .post(
            &format!("/v1/reviews/{}/decision", uuid::Uuid::new_v4()),
            json!({"outcome": "linked", "reason": "x"}),
            None,
        )
        .await;
    assert_eq!(status, 409, "{body}");
    let (status, _, body) = steward
        .post(
            &format!("/v1/reviews/{}/decision", uuid::Uuid::new_v4()),
            json!({"outcome": "perhaps", "reason": "x"}),
            None,
        )
        .await;
    assert_eq!((status, body["field"].as_str()), (400, Some("outcome")), "{body}");

    assert!(terminate(&mut child).success());
}

/// Where each tag's endpoints are allowed.
fn allowed(tag: &str, role: &str) -> bool {
    match tag {
        "ingest" => matches!(role, "ingest" | "admin"),
        "customers" | "feed" => matches!(role, "reader" | "steward" | "compliance" | "admin"),
        "stewards" => matches!(role, "steward" | "admin"),
        "compliance" | "privacy" => matches!(role, "compliance" | "admin"),
        "admin" | "webhooks" | "operations" => role == "admin",
        other => panic!("no expectation for tag {other}: add it to the table"),
    }
}

/// Every operation of the OpenAPI document, with every role, no key and a
/// wrong key: allowed roles get past authentication (not 401/403), others
/// get 403, and no key or a bad one 401 with a problem document.
async fn every_role_against_every_endpoint(backend: Backend) {
    let d = Deployment::new(backend, "roles");
    let env = env_of(&d);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let roles = ["ingest", "reader", "steward", "compliance", "admin"];
    let keys: Vec<(&str, String)> = roles
        .iter()
        .map(|r| (*r, add_client(d.dir.path(), &env, &format!("role-{r}"), r, None)))
        .collect();
    let (mut child, addr) = start(d.dir.path(), &env);
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let doc: Value = plain
        .get(format!("http://{addr}/openapi.json"))
        .send()
        .await
        .expect("served")
        .json()
        .await
        .expect("json");
    assert_eq!(doc["openapi"].as_str().map(|v| v.starts_with("3.")), Some(true));
    let paths = doc["paths"].as_object().expect("paths");
    assert!(paths.len() >= 15, "{}", paths.len());
    let mut checked = 0;
    for (path, item) in paths {
        for (method, op) in item.as_object().expect("path item") {
            let tag = op["tags"][0].as_str().expect("every operation has a tag");
            let concrete = path
                .replace("{token}", &uuid::Uuid::new_v4().to_string())
                .replace("{review_id}", &uuid::Uuid::new_v4().to_string())
                .replace("{household}", &uuid::Uuid::new_v4().to_string())
                .replace("{id}", &uuid::Uuid::new_v4().to_string())
                .replace("{override_id}", &uuid::Uuid::new_v4().to_string())
                .replace("{request_id}", &uuid::Uuid::new_v4().to_string())
                .replace("{system}", "web_signup")
                .replace("{source_id}", "S-1");
            let url = format!("http://{addr}{concrete}");
            let send = |key: Option<&str>| {
                let mut req = match method.as_str() {
                    "get" => plain.get(&url),
                    "post" => plain.post(&url).header("content-type", "application/json").body("{}"),
                    "delete" => plain.delete(&url),
                    "put" => plain.put(&url).header("content-type", "application/json").body("{}"),
                    other => panic!("method {other}"),
                };
                if let Some(k) = key {
                    req = req.bearer_auth(k);
                }
                // The feed streams: the status line is all this needs.
                req.timeout(Duration::from_secs(5)).send()
            };
            let r = send(None).await.expect("answers");
            assert_eq!(r.status(), 401, "{method} {path} without a key");
            assert_eq!(r.headers()["content-type"], "application/problem+json");
            if op["security"][0].get("webhook_signature").is_some() {
                // Signed with a webhook subscriber's secret: no API key
                // opens it (the signature itself is tested in erasure.rs).
                for (role, key) in &keys {
                    let r = send(Some(key)).await.expect("answers");
                    assert_eq!(r.status(), 401, "{role} {method} {path} unsigned");
                    checked += 1;
                }
                continue;
            }
            assert_eq!(r.headers()["www-authenticate"], "Bearer");
            let r = send(Some("mdm_00000000000000000000000000000000_nope"))
                .await
                .expect("answers");
            assert_eq!(r.status(), 401, "{method} {path} with a wrong key");
            for (role, key) in &keys {
                let r = send(Some(key)).await.expect("answers");
                let status = r.status().as_u16();
                if allowed(tag, role) {
                    assert!(status != 401 && status != 403, "{role} {method} {path}: {status}");
                } else {
                    assert_eq!(status, 403, "{role} {method} {path}");
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 75, "{checked}");
    // Health stays open.
    let r = plain
        .get(format!("http://{addr}/health"))
        .send()
        .await
        .expect("answers");
    assert_eq!(r.status(), 200);
    // A revoked client is refused (this process revokes through the CLI:
    // the service sees it within the verification cache's lifetime).
    assert!(terminate(&mut child).success());
}

/// `/ready` (open) turns 200 once the resolver runs and the projections
/// have caught up; `/v1/metrics` (admin) shows ingest, decisions per band,
/// projection lag, feed subscribers and HTTP latency in Prometheus text.
async fn readiness_and_metrics(backend: Backend) {
    let d = Deployment::new(backend, "ops");
    let env = env_of(&d);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (mut child, addr) = start(d.dir.path(), &env);
    let admin = Api {
        addr: addr.clone(),
        http: common::api(&addr),
    };
    admin
        .signup(signup(
            "S-1",
            "Robert",
            "Okonkwo",
            "rob.okonkwo@example.test",
            "+1 312 555 0101",
            "1979-04-12",
        ))
        .await;
    let plain = reqwest::Client::new();
    let mut ready = Value::Null;
    for _ in 0..300 {
        let r = plain.get(format!("http://{addr}/ready")).send().await.expect("answers");
        let status = r.status().as_u16();
        ready = r.json().await.expect("json");
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "{ready}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(ready["status"], "ready", "{ready}");
    assert_eq!(ready["projections"].as_array().map(Vec::len), Some(4), "{ready}");
    let needles = [
        "mdm_ingest_records_total{system=\"web_signup\",outcome=\"captured\"} 1",
        "mdm_resolver_decisions{band=\"new\",type=\"CustomerCreated\"} 1",
        "mdm_projection_lag_seconds{projection=\"customers\"} 0",
        "mdm_feed_subscribers 0",
        "mdm_resolver_up 1",
        "mdm_http_request_duration_seconds_count{method=\"POST\",route=\"/v1/sources/{system}/records\"} 1",
    ];
    // Ready allows some lag: the lag reads 0 once the customers projection
    // has applied the last event.
    let mut text = String::new();
    for _ in 0..300 {
        let r = admin.http.get(admin.url("/v1/metrics")).send().await.expect("answers");
        assert_eq!(r.status(), 200);
        assert!(r.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/plain"));
        text = r.text().await.expect("text");
        if needles.iter().all(|n| text.contains(n)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for needle in needles {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
    assert!(
        !text.contains("Okonkwo") && !text.contains("S-1"),
        "no personal data or source ids in metrics"
    );
    assert!(terminate(&mut child).success());
}

/// Reads the golden `attribute` of `token` until it equals `want`.
async fn golden_becomes(api: &Api, token: &str, attribute: &str, want: &Value) -> Value {
    let (_, body) = api
        .until(&format!("/v1/customers/{token}"), |b| {
            &b["attributes"][attribute] == want
        })
        .await;
    body
}

async fn values_are_overridden_expire_and_are_removed(backend: Backend) {
    let d = Deployment::new(backend, "overrides");
    let env = env_of(&d);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (mut child, addr) = start(d.dir.path(), &env);
    let admin = Api {
        addr: addr.clone(),
        http: common::api(&addr),
    };
    let token = admin
        .signup(signup(
            "S-1",
            "Marta",
            "Lindqvist",
            "marta.l@example.test",
            "+1 312 555 0177",
            "1985-02-03",
        ))
        .await;
    let (_, c) = admin
        .until(&format!("/v1/customers/{token}"), |b| {
            b["attributes"]["email"].is_string()
        })
        .await;
    let record_email = c["attributes"]["email"].clone();
    let record_phone = c["attributes"]["phone"].clone();
    let version = c["version"].as_i64().expect("version");
    let steward = Api {
        addr: addr.clone(),
        http: client_with(&add_client(d.dir.path(), &env, "steward-eva", "steward", None)),
    };
    let path = format!("/v1/customers/{token}/overrides");

    // Each documented error names its field and applies nothing.
    let permanent_email =
        |email: &str| json!({"attribute": "email", "value": email, "permanent": true, "reason": "customer called in"});
    for (body, field) in [
        (
            json!({"attribute": "email", "value": "x@example.test", "reason": "r"}),
            "expires_at",
        ),
        (
            json!({"attribute": "colour", "value": "red", "permanent": true, "reason": "r"}),
            "attribute",
        ),
        (permanent_email("no-at-sign"), "value"),
        (
            json!({"attribute": "phone", "value": "call me", "permanent": true, "reason": "r"}),
            "value",
        ),
        (
            json!({"attribute": "date_of_birth", "value": "03/02/1985", "permanent": true, "reason": "r"}),
            "value",
        ),
        (
            json!({"attribute": "name", "value": {"nickname": "M"}, "permanent": true, "reason": "r"}),
            "value.nickname",
        ),
        (
            json!({"attribute": "name", "value": {}, "permanent": true, "reason": "r"}),
            "value",
        ),
        (
            json!({"attribute": "email", "value": "x@example.test", "expires_at": "2020-01-01T00:00:00Z", "reason": "r"}),
            "expires_at",
        ),
        (
            json!({"attribute": "email", "value": "x@example.test", "expires_at": "2999-01-01T00:00:00Z", "permanent": true, "reason": "r"}),
            "permanent",
        ),
        (
            json!({"attribute": "email", "value": "x@example.test", "permanent": true, "reason": "  "}),
            "reason",
        ),
    ] {
        let (status, headers, problem) = steward.post(&path, body.clone(), None).await;
        assert_eq!(status, 400, "{body}: {problem}");
        assert_eq!(headers["content-type"], "application/problem+json");
        assert_eq!(problem["field"], field, "{body}: {problem}");
        assert!(
            !problem.to_string().contains("no-at-sign"),
            "values are not quoted: {problem}"
        );
    }
    let stale = format!("\"{}\"", version + 7);
    let (status, _, problem) = steward
        .post(&path, permanent_email("stale@example.test"), Some(&stale))
        .await;
    assert_eq!(status, 412, "{problem}");
    let (status, _, _) = steward
        .post(
            &format!("/v1/customers/{}/overrides", uuid::Uuid::new_v4()),
            permanent_email("x@example.test"),
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (status, _, _) = admin.get(&format!("/v1/customers/{token}/history")).await;
    assert_eq!(status, 200);

    // A permanent override of the e-mail wins over the record.
    let current = format!("\"{}\"", problem["current_version"].as_i64().expect("current_version"));
    let (status, headers, result) = steward
        .post(&path, permanent_email("steward.set@example.test"), Some(&current))
        .await;
    assert_eq!(status, 200, "{result}");
    assert_eq!(result["decisions"][0], "ValueOverridden");
    let override_id = result["override_id"].as_str().expect("override_id").to_owned();
    let new_version = result["versions"][token.as_str()].as_i64().expect("version");
    assert_eq!(headers["etag"].to_str().expect("ascii"), format!("\"{new_version}\""));
    golden_becomes(&admin, &token, "email", &json!("steward.set@example.test")).await;
    let (_, lineage) = admin
        .until(&format!("/v1/customers/{token}/lineage"), |b| {
            b["attributes"].as_array().is_some_and(|a| {
                a.iter()
                    .any(|l| l["attribute"] == "email" && l["rule"] == "steward_override")
            })
        })
        .await;
    let email = lineage["attributes"]
        .as_array()
        .expect("lineage")
        .iter()
        .find(|l| l["attribute"] == "email")
        .cloned()
        .expect("email lineage");
    assert_eq!(email["overridden_by"], "steward-eva", "{email}");
    // The other attributes still come from the record.
    assert_eq!(
        lineage["attributes"]
            .as_array()
            .expect("lineage")
            .iter()
            .find(|l| l["attribute"] == "phone")
            .map(|l| l["rule"] != "steward_override"),
        Some(true),
        "{lineage}"
    );
    let (status, _, list) = admin.get(&format!("/v1/customers/{token}/overrides")).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["overrides"][0]["override_id"], override_id.as_str(), "{list}");
    assert_eq!(list["overrides"][0]["value"], "steward.set@example.test", "{list}");
    assert!(list["overrides"][0]["expires_at"].is_null(), "{list}");

    // The history names the steward and the reason, and never carries the value.
    let (_, history) = admin
        .until(&format!("/v1/customers/{token}/history"), |b| {
            b["decisions"]
                .as_array()
                .is_some_and(|d| d.iter().any(|d| d["type"] == "ValueOverridden"))
        })
        .await;
    let set = history["decisions"]
        .as_array()
        .expect("decisions")
        .iter()
        .find(|d| d["type"] == "ValueOverridden")
        .cloned()
        .expect("the override decision");
    assert_eq!(set["actor"]["id"], "steward-eva", "{set}");
    assert_eq!(set["reason"], "customer called in", "{set}");
    assert!(!history.to_string().contains("steward.set@"), "{history}");
    // Nor does the log: the value is sealed under its own key.
    if backend == Backend::Sqlite {
        let data = d.dir.path().join("mdm-data");
        let mut log = Vec::new();
        for entry in std::fs::read_dir(&data).expect("data dir") {
            let entry = entry.expect("entry");
            if entry.file_name().to_string_lossy().starts_with("events.db") {
                log.extend(std::fs::read(entry.path()).expect("read"));
            }
        }
        assert!(!log.is_empty());
        assert!(
            !log.windows(b"steward.set@".len()).any(|w| w == b"steward.set@"),
            "the override value is in the event log in clear"
        );
    }

    // A reader scoped to names sees neither the override nor its value.
    let dealer = Api {
        addr: addr.clone(),
        http: client_with(&add_client(
            d.dir.path(),
            &env,
            "dealer-9",
            "reader",
            Some("name,phone"),
        )),
    };
    let (status, _, list) = dealer.get(&format!("/v1/customers/{token}/overrides")).await;
    assert_eq!(status, 200, "{list}");
    assert!(!list.to_string().contains("steward.set@"), "{list}");

    // An override with an expiry applies until then; the resolver expires it.
    let expires_at = (chrono::Utc::now() + chrono::TimeDelta::seconds(3)).to_rfc3339();
    let (status, _, result) = steward
        .post(
            &path,
            json!({"attribute": "phone", "value": "+1 312 555 0199", "expires_at": expires_at, "reason": "temporary number"}),
            None,
        )
        .await;
    assert_eq!(status, 200, "{result}");
    golden_becomes(&admin, &token, "phone", &json!("+1 312 555 0199")).await;
    golden_becomes(&admin, &token, "phone", &record_phone).await;
    let (_, history) = admin
        .until(&format!("/v1/customers/{token}/history"), |b| {
            b["decisions"]
                .as_array()
                .is_some_and(|d| d.iter().any(|d| d["type"] == "OverrideRemoved"))
        })
        .await;
    let expired = history["decisions"]
        .as_array()
        .expect("decisions")
        .iter()
        .find(|d| d["type"] == "OverrideRemoved")
        .cloned()
        .expect("removed");
    assert_eq!(expired["actor"]["kind"], "resolver", "{expired}");
    // The permanent one is still in force.
    assert_eq!(
        admin.get(&format!("/v1/customers/{token}")).await.2["attributes"]["email"],
        "steward.set@example.test"
    );

    // A steward removes the permanent one: the record's value is back.
    let remove = format!("/v1/customers/{token}/overrides/{override_id}/remove");
    let (status, _, problem) = steward.post(&remove, json!({}), None).await;
    assert_eq!((status, problem["field"].as_str()), (400, Some("reason")), "{problem}");
    let (status, _, result) = steward
        .post(&remove, json!({"reason": "verified the old address"}), None)
        .await;
    assert_eq!(status, 200, "{result}");
    assert_eq!(result["decisions"][0], "OverrideRemoved");
    golden_becomes(&admin, &token, "email", &record_email).await;
    let (status, _, problem) = steward.post(&remove, json!({"reason": "again"}), None).await;
    assert_eq!(
        (status, problem["field"].as_str()),
        (404, Some("override_id")),
        "{problem}"
    );
    let (_, list) = admin
        .until(&format!("/v1/customers/{token}/overrides"), |b| {
            b["overrides"].as_array().is_some_and(Vec::is_empty)
        })
        .await;
    assert_eq!(list["overrides"], json!([]));

    // A reader may not set one.
    let (status, _, _) = dealer.post(&path, permanent_email("x@example.test"), None).await;
    assert_eq!(status, 403);
    terminate(&mut child);
}

on_both_backends!(
    customers_are_queried_searched_and_explained,
    values_are_overridden_expire_and_are_removed,
    every_role_against_every_endpoint,
    readiness_and_metrics
);
