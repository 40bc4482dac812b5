//! The configuration model through the HTTP API of one in-process node: invalid content and schema
//! violations are refused with line, column or JSON pointer and write nothing; dry runs write
//! nothing; versions, diffs, hierarchy, quotas, releases (428/412), resolve (304) and audit answer
//! as documented; retention keeps 100 versions plus those a release uses.

#[path = "support/node.rs"]
mod support;

use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{json, Value};
use support::{node, Node};

impl Node {
    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, self.client_url(path))
    }

    fn config(&self, method: Method, name: &str, tail: &str) -> RequestBuilder {
        self.request(method, &format!("/api/v1/configs/acme/shop/prod/{name}{tail}"))
    }

    async fn json(&self, request: RequestBuilder, status: StatusCode) -> Value {
        let response = request.send().await.unwrap();
        let got = response.status();
        let body = response.text().await.unwrap();
        assert_eq!(got, status, "{body}");
        serde_json::from_str(&body).unwrap_or(Value::Null)
    }

    async fn problem(&self, request: RequestBuilder, status: StatusCode, code: &str) -> Value {
        let body = self.json(request, status).await;
        assert_eq!(body["code"], code, "{body}");
        body
    }

    async fn version_count(&self, name: &str) -> usize {
        let page = self.json(self.config(Method::GET, name, "/versions"), StatusCode::OK).await;
        page["items"].as_array().unwrap().len()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_content_is_refused_with_its_location_and_nothing_is_written() {
    let n = node().await;
    let write =
        |format: &str, body: &str| n.config(Method::PUT, "app", "").query(&[("format", format)]).body(body.to_string());
    n.json(write("json", r#"{"pool": 5}"#), StatusCode::OK).await;
    // The properties parser reports lines only; the others report line and column.
    let cases = [
        ("json", "{\n  \"pool\": 5,\n  \"timeout\": \n}", 4, true),
        ("yaml", "pool: 5\nlimits:\n  - a\n  b: [\n", 4, true),
        ("toml", "pool = 5\n[limits\nmax = 2\n", 2, true),
        ("properties", "a = 1\nb = \\uZZZZ\n", 2, false),
    ];
    for (format, content, line, has_column) in cases {
        let body = n.problem(write(format, content), StatusCode::UNPROCESSABLE_ENTITY, "invalid_content").await;
        assert_eq!(body["errors"][0]["line"], line, "{format}: {body}");
        assert_eq!(body["errors"][0]["column"].as_u64().is_some(), has_column, "{format}: {body}");
        assert!(body["detail"].as_str().unwrap().contains(&format!("line {line}")), "{format}: {body}");
    }
    assert_eq!(n.version_count("app").await, 1, "no refused write created a version");
    n.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_without_a_format_is_checked_and_stored_in_the_configs_format() {
    let n = node().await;
    n.json(n.config(Method::PUT, "app", "").query(&[("format", "json")]).body(r#"{"pool": 5}"#), StatusCode::OK).await;
    let plain = |body: &str| n.config(Method::PUT, "app", "").body(body.to_string());
    n.problem(plain("pool = 6"), StatusCode::UNPROCESSABLE_ENTITY, "invalid_content").await;
    n.json(plain(r#"{"pool": 6}"#), StatusCode::OK).await;
    let page = n.json(n.config(Method::GET, "app", "/versions"), StatusCode::OK).await;
    let formats: Vec<&str> = page["items"].as_array().unwrap().iter().map(|v| v["format"].as_str().unwrap()).collect();
    assert_eq!(formats, ["json", "json"], "{page}");
    n.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_violations_name_each_json_pointer_for_every_structured_format() {
    let n = node().await;
    let schema = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "required": ["pool"],
        "properties": {
            "pool": {"type": "integer", "minimum": 1},
            "db": {"type": "object", "properties": {"port": {"type": "integer"}}}
        }
    });
    let invalid_schema = n.config(Method::PUT, "svc", "/schema").body(r#"{"type": 12}"#);
    n.problem(invalid_schema, StatusCode::UNPROCESSABLE_ENTITY, "invalid_schema").await;
    n.json(n.config(Method::PUT, "svc", "/schema").body(schema.to_string()), StatusCode::OK).await;
    let served = n.json(n.config(Method::GET, "svc", "/schema"), StatusCode::OK).await;
    assert_eq!(served, schema);

    let write =
        |format: &str, body: &str| n.config(Method::PUT, "svc", "").query(&[("format", format)]).body(body.to_string());
    n.json(write("json", r#"{"pool": 3, "db": {"port": 5432}}"#), StatusCode::OK).await;
    let bad = [
        ("json", r#"{"pool": 0, "db": {"port": "x"}}"#),
        ("yaml", "pool: 0\ndb:\n  port: x\n"),
        ("toml", "pool = 0\n[db]\nport = \"x\"\n"),
    ];
    for (format, content) in bad {
        let body = n.problem(write(format, content), StatusCode::UNPROCESSABLE_ENTITY, "schema_violation").await;
        let pointers: Vec<&str> =
            body["errors"].as_array().unwrap().iter().map(|e| e["pointer"].as_str().unwrap()).collect();
        assert_eq!(pointers, vec!["/db/port", "/pool"], "{format}: {body}");
    }
    let missing =
        n.problem(write("properties", "other=1\n"), StatusCode::UNPROCESSABLE_ENTITY, "schema_violation").await;
    assert_eq!(missing["errors"][0]["pointer"], "", "a missing required property is reported at the root");
    n.problem(write("text", "plain"), StatusCode::UNPROCESSABLE_ENTITY, "schema_needs_structure").await;
    assert_eq!(n.version_count("svc").await, 1, "no refused write created a version");

    n.json(n.config(Method::DELETE, "svc", "/schema"), StatusCode::OK).await;
    n.json(write("json", r#"{"pool": 0}"#), StatusCode::OK).await;
    n.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_are_immutable_listed_newest_first_and_diffed_by_path() {
    let n = node().await;
    let dry = n.config(Method::PUT, "db", "").query(&[("dry_run", "true")]).header("content-type", "application/json");
    let dry = n.json(dry.body(r#"{"pool": 5}"#), StatusCode::OK).await;
    assert_eq!((dry["dry_run"].as_bool(), dry["version"].as_u64()), (Some(true), Some(1)));
    n.problem(n.config(Method::GET, "db", ""), StatusCode::NOT_FOUND, "not_found").await;

    let v1 = json!({"content": "{\"pool\": 5, \"hosts\": [\"a\", \"b\"]}", "format": "json", "message": "first"});
    let written = n.json(n.config(Method::POST, "db", "/versions").json(&v1), StatusCode::CREATED).await;
    assert_eq!(written["version"], 1);
    assert!(written["checksum"].as_str().unwrap().starts_with("sha256:"));
    let v2 = json!({"content": "{\"pool\": 8, \"hosts\": [\"a\"], \"tls\": true}", "message": "second"});
    n.json(n.config(Method::POST, "db", "/versions").json(&v2), StatusCode::CREATED).await;

    let page = n.json(n.config(Method::GET, "db", "/versions").query(&[("limit", "1")]), StatusCode::OK).await;
    assert_eq!(page["items"][0]["version"], 2);
    assert_eq!(page["items"][0]["format"], "json", "a version without a format keeps the config's");
    assert_eq!(page["items"][0]["author"], "bootstrap-admin", "the author is the token that wrote it");
    let cursor = page["next_cursor"].as_str().unwrap().to_string();
    let rest = n.json(n.config(Method::GET, "db", "/versions").query(&[("cursor", cursor)]), StatusCode::OK).await;
    assert_eq!((rest["items"][0]["version"].as_u64(), rest["items"][0]["message"].as_str()), (Some(1), Some("first")));
    assert!(rest.get("next_cursor").is_none());

    let one = n.json(n.config(Method::GET, "db", "/versions/1"), StatusCode::OK).await;
    assert_eq!(one["content"], v1["content"]);
    let diff = n.json(n.config(Method::GET, "db", "/diff").query(&[("from", "1"), ("to", "2")]), StatusCode::OK).await;
    assert!(diff["unified"].as_str().unwrap().contains("+{\"pool\": 8"), "{diff}");
    let changes: Vec<(String, String)> = diff["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["op"].as_str().unwrap().to_string(), c["path"].as_str().unwrap().to_string()))
        .collect();
    let expected = [("remove", "/hosts/1"), ("replace", "/pool"), ("add", "/tls")];
    assert_eq!(changes, expected.map(|(a, b)| (a.to_string(), b.to_string())).to_vec());
    n.problem(
        n.config(Method::GET, "db", "/diff").query(&[("from", "1"), ("to", "9")]),
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    n.problem(
        n.config(Method::GET, "db", "/versions").query(&[("limit", "0")]),
        StatusCode::BAD_REQUEST,
        "invalid_limit",
    )
    .await;
    n.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn releases_need_the_current_etag_and_resolve_answers_304_for_the_version_held() {
    let n = node().await;
    n.json(n.config(Method::PUT, "flags", "").query(&[("format", "json")]).body(r#"{"new": false}"#), StatusCode::OK)
        .await;
    n.json(n.config(Method::PUT, "flags", "").body(r#"{"new": true}"#), StatusCode::OK).await;
    let release = n.config(Method::GET, "flags", "/release").send().await.unwrap();
    assert_eq!(release.headers()["etag"], "\"r1\"");
    let rules = json!({"rules": [
        {"labels": {"canary": "true"}, "version": 2, "priority": 10},
        {"version": 1, "priority": 0}
    ], "message": "canary first"});
    n.problem(
        n.config(Method::PUT, "flags", "/release").json(&rules),
        StatusCode::PRECONDITION_REQUIRED,
        "precondition_required",
    )
    .await;
    let stale = n.config(Method::PUT, "flags", "/release").header("if-match", "\"r7\"").json(&rules);
    n.problem(stale, StatusCode::PRECONDITION_FAILED, "release_conflict").await;
    let no_default = json!({"rules": [{"labels": {"canary": "true"}, "version": 2, "priority": 10}]});
    let refused = n.config(Method::PUT, "flags", "/release").header("if-match", "\"r1\"").json(&no_default);
    n.problem(refused, StatusCode::UNPROCESSABLE_ENTITY, "invalid_rules").await;
    let unknown = json!({"rules": [{"version": 5, "priority": 0}]});
    let refused = n.config(Method::PUT, "flags", "/release").header("if-match", "\"r1\"").json(&unknown);
    let body = n.problem(refused, StatusCode::UNPROCESSABLE_ENTITY, "invalid_rules").await;
    assert!(body["detail"].as_str().unwrap().contains("rule 0"), "{body}");
    let set = n.config(Method::PUT, "flags", "/release").header("if-match", "\"r1\"").json(&rules);
    let released = n.json(set, StatusCode::OK).await;
    assert_eq!(released["release"], 2);

    let resolve = |labels: &str| {
        n.request(Method::GET, "/api/v1/resolve/acme/shop/prod/flags")
            .query(&[("labels", labels), ("client_id", "pod-1")])
    };
    let canary = n.json(resolve("canary=true,zone=eu"), StatusCode::OK).await;
    assert_eq!((canary["version"].as_u64(), canary["content"].as_str()), (Some(2), Some(r#"{"new": true}"#)));
    assert_eq!(canary["rule"]["priority"], 10);
    let regular = resolve("zone=eu").send().await.unwrap();
    let etag = regular.headers()["etag"].to_str().unwrap().to_string();
    let regular: Value = regular.json().await.unwrap();
    assert_eq!(regular["version"], 1);
    let again = resolve("zone=eu").header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    n.problem(resolve("bad label"), StatusCode::BAD_REQUEST, "invalid_labels").await;

    let publish =
        n.config(Method::POST, "flags", "/release/publish").header("if-match", "\"r2\"").json(&json!({"version": 2}));
    n.json(publish, StatusCode::OK).await;
    let after = resolve("zone=eu").header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(after.status(), StatusCode::OK, "the held version is no longer what this client gets");
    let rollback =
        n.config(Method::POST, "flags", "/release/rollback").header("if-match", "\"r3\"").json(&json!({"to": 2}));
    n.json(rollback, StatusCode::OK).await;
    assert_eq!(n.json(resolve(""), StatusCode::OK).await["version"], 1);
    let history = n.json(n.config(Method::GET, "flags", "/releases"), StatusCode::OK).await;
    let actions: Vec<&str> =
        history["items"].as_array().unwrap().iter().map(|r| r["action"].as_str().unwrap()).collect();
    assert_eq!(actions, vec!["rollback", "publish", "set", "initial"]);

    let batch = n
        .request(Method::POST, "/api/v1/resolve/acme/shop/prod")
        .json(&json!({"configs": ["flags", "nope"], "labels": {"canary": "true"}, "client_id": "pod-1"}));
    let batch = n.json(batch, StatusCode::OK).await;
    assert_eq!(batch["items"][0]["version"], 2);
    assert_eq!(batch["missing"], json!(["nope"]));
    n.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_apps_and_envs_are_resources_with_quotas_and_guarded_deletes() {
    let n = node().await;
    let created = n
        .request(Method::PUT, "/api/v1/tenants/acme")
        .json(&json!({"description": "the acme corp", "quotas": {"max_config_bytes": 16, "max_configs": 2}}));
    assert_eq!(n.json(created, StatusCode::CREATED).await["created"], true);
    let tenant = n.json(n.request(Method::GET, "/api/v1/tenants/acme"), StatusCode::OK).await;
    assert_eq!(tenant["quotas"], json!({"max_config_bytes": 16, "max_configs": 2, "max_versions_kept": 100}));
    let bad_quota = n.request(Method::PUT, "/api/v1/tenants/acme").json(&json!({"quotas": {"max_versions_kept": 0}}));
    n.problem(bad_quota, StatusCode::BAD_REQUEST, "invalid_quota").await;
    let unknown_field = n.request(Method::PUT, "/api/v1/tenants/acme").json(&json!({"quota": {}}));
    n.problem(unknown_field, StatusCode::BAD_REQUEST, "invalid_json").await;

    n.json(n.request(Method::PUT, "/api/v1/tenants/acme/apps/shop/envs/prod"), StatusCode::CREATED).await;
    n.json(n.config(Method::PUT, "a", "").body("small"), StatusCode::OK).await;
    n.problem(n.config(Method::PUT, "b", "").body("x".repeat(17)), StatusCode::PAYLOAD_TOO_LARGE, "config_too_large")
        .await;
    n.json(n.config(Method::PUT, "b", "").body("ok"), StatusCode::OK).await;
    n.problem(n.config(Method::PUT, "c", "").body("one too many"), StatusCode::UNPROCESSABLE_ENTITY, "quota_exceeded")
        .await;

    let envs = n.json(n.request(Method::GET, "/api/v1/tenants/acme/apps/shop/envs"), StatusCode::OK).await;
    assert_eq!((envs["items"][0]["name"].as_str(), envs["items"][0]["configs"].as_u64()), (Some("prod"), Some(2)));
    n.problem(n.request(Method::DELETE, "/api/v1/tenants/acme"), StatusCode::CONFLICT, "not_empty").await;
    n.problem(n.request(Method::DELETE, "/api/v1/tenants/acme/apps/shop/envs/prod"), StatusCode::CONFLICT, "not_empty")
        .await;
    n.json(n.config(Method::DELETE, "a", ""), StatusCode::OK).await;
    n.json(n.request(Method::DELETE, "/api/v1/tenants/acme").query(&[("force", "true")]), StatusCode::OK).await;
    n.problem(n.request(Method::GET, "/api/v1/tenants/acme/apps/shop"), StatusCode::NOT_FOUND, "not_found").await;
    n.problem(n.config(Method::GET, "b", ""), StatusCode::NOT_FOUND, "not_found").await;

    let audit = n
        .json(n.request(Method::GET, "/api/v1/tenants/acme/audit").query(&[("action", "config.write")]), StatusCode::OK)
        .await;
    let resources: Vec<&str> =
        audit["items"].as_array().unwrap().iter().map(|r| r["resource"].as_str().unwrap()).collect();
    assert_eq!(resources, vec!["acme/shop/prod/a", "acme/shop/prod/b"], "refused writes left no record");
    let by_resource = n.request(Method::GET, "/api/v1/tenants/acme/audit").query(&[("resource", "acme/shop/prod/b")]);
    assert_eq!(n.json(by_resource, StatusCode::OK).await["items"].as_array().unwrap().len(), 1);
    n.problem(
        n.request(Method::GET, "/api/v1/tenants/acme/audit").query(&[("action", "boom")]),
        StatusCode::BAD_REQUEST,
        "invalid_query",
    )
    .await;
    n.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_150_writes_100_versions_are_kept_plus_the_released_one() {
    let n = node().await;
    for i in 1..=150 {
        n.json(n.config(Method::PUT, "busy", "").body(format!("v{i}")), StatusCode::OK).await;
    }
    let page = n.json(n.config(Method::GET, "busy", "/versions").query(&[("limit", "1000")]), StatusCode::OK).await;
    let versions: Vec<u64> = page["items"].as_array().unwrap().iter().map(|v| v["version"].as_u64().unwrap()).collect();
    let mut expected: Vec<u64> = (51..=150).rev().collect();
    expected.push(1);
    assert_eq!(versions, expected, "the newest 100, and version 1 which the initial release hands out");
    n.problem(n.config(Method::GET, "busy", "/versions/2"), StatusCode::NOT_FOUND, "not_found").await;
    let resolved = n.json(n.request(Method::GET, "/api/v1/resolve/acme/shop/prod/busy"), StatusCode::OK).await;
    assert_eq!(resolved["content"], "v1");
    n.handle.shutdown().await;
}
