//! Access control on every route, with the route table taken from the routers themselves
//! (`conflux::api::client_routes` / `admin_routes`): a new route without a case here fails.
//! Each guarded route × {no token, a wrong token, an expired token, a revoked token, a token of
//! another tenant, a token whose role is too small} gets exactly 401 or 403 as problem+json, and a
//! token with the least role that may call it gets its answer.

#[path = "support/node.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use conflux::api::access::Access;
use conflux::api::Route;
use conflux::model::access::Action;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use support::{node, Node};

const DB: &str = "/api/v1/configs/acme/shop/prod/db";

/// Tokens by what they are for.
struct Tokens {
    /// (role, scope) → token.
    by_role: BTreeMap<(&'static str, &'static str), String>,
    expired: String,
    revoked: String,
    /// A token id inside `acme` that `GET`/`DELETE /api/v1/tokens/{id}` can name.
    acme_id: String,
    /// One that the allowed `DELETE /api/v1/tokens/{id}` may revoke.
    disposable_id: String,
}

async fn create_token(n: &Node, role: &str, scope: &str, ttl_seconds: Option<u64>) -> (String, String) {
    let body =
        json!({ "name": format!("{role} of {scope}"), "role": role, "scope": scope, "ttl_seconds": ttl_seconds });
    let response = n.http.post(n.client_url("/api/v1/tokens")).json(&body).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let created: Value = response.json().await.unwrap();
    (created["token"].as_str().unwrap().to_string(), created["id"].as_str().unwrap().to_string())
}

async fn ok(request: reqwest::RequestBuilder) {
    let response = request.send().await.unwrap();
    let status = response.status();
    assert!(status.is_success(), "seeding: {status} {}", response.text().await.unwrap());
}

/// acme/shop/prod/db (json, with a schema and a release), things the allowed deletes may remove,
/// another tenant, and the tokens.
async fn seed(n: &Node) -> Tokens {
    let put = |path: &str| n.http.put(n.client_url(path));
    ok(put(DB).header("content-type", "application/json").body(r#"{"pool": 1}"#)).await;
    ok(put(&format!("{DB}/schema")).body(r#"{"type": "object"}"#)).await;
    ok(put("/api/v1/configs/acme/shop/prod/gone").body("x")).await;
    for level in ["/api/v1/tenants/other", "/api/v1/tenants/gone", "/api/v1/tenants/acme/apps/gone"] {
        ok(put(level)).await;
    }
    ok(put("/api/v1/tenants/acme/apps/shop/envs/gone")).await;
    let publish = n.http.post(n.client_url(&format!("{DB}/release/publish"))).json(&json!({"version": 1}));
    ok(publish.header("if-match", release_tag(n).await)).await;

    let mut by_role = BTreeMap::new();
    for role in ["client", "viewer", "editor", "publisher", "admin"] {
        by_role.insert((role, "acme"), create_token(n, role, "acme", None).await.0);
    }
    for role in ["client", "viewer", "admin"] {
        by_role.insert((role, "*"), create_token(n, role, "*", None).await.0);
    }
    by_role.insert(("admin", "other"), create_token(n, "admin", "other", None).await.0);
    let (expired, _) = create_token(n, "admin", "acme", Some(1)).await;
    let (revoked, revoked_id) = create_token(n, "admin", "acme", None).await;
    ok(n.http.delete(n.client_url(&format!("/api/v1/tokens/{revoked_id}")))).await;
    let (_, acme_id) = create_token(n, "viewer", "acme/shop", None).await;
    let (_, disposable_id) = create_token(n, "viewer", "acme/shop", None).await;
    tokio::time::sleep(Duration::from_millis(1100)).await; // the 1 s token expires
    Tokens { by_role, expired, revoked, acme_id, disposable_id }
}

/// The current release's ETag of db.
async fn release_tag(n: &Node) -> String {
    let response = n.http.get(n.client_url(&format!("{DB}/release"))).send().await.unwrap();
    response.headers().get("etag").map_or("\"r0\"".to_string(), |v| v.to_str().unwrap().to_string())
}

/// The path a route is called on, and a body that makes the call succeed for an allowed caller.
fn sample(route: &Route, tokens: &Tokens) -> (String, Option<Value>) {
    let method = &route.method;
    let config = match (route.path.as_str(), method) {
        ("/api/v1/configs/{tenant}/{app}/{env}/{name}", &Method::DELETE) => "gone",
        _ => "db",
    };
    let path = route
        .path
        .replace(
            "{tenant}/apps/{app}/envs/{env}",
            if *method == Method::DELETE { "acme/apps/shop/envs/gone" } else { "acme/apps/shop/envs/prod" },
        )
        .replace("{tenant}/apps/{app}", if *method == Method::DELETE { "acme/apps/gone" } else { "acme/apps/shop" })
        .replace("/tenants/{tenant}", if *method == Method::DELETE { "/tenants/gone" } else { "/tenants/acme" })
        .replace("{tenant}", "acme")
        .replace("{app}", "shop")
        .replace("{env}", "prod")
        .replace("{name}", config)
        .replace("{version}", "1")
        .replace("{number}", "1")
        .replace("/admin/members/{id}", "/admin/members/99")
        .replace("{id}", if *method == Method::DELETE { &tokens.disposable_id } else { &tokens.acme_id });
    let body = match (path.rsplit('/').next().unwrap(), method) {
        ("db", &Method::PUT) => Some(json!({"pool": 2})),
        ("versions", &Method::POST) => Some(json!({"content": "{\"pool\": 3}"})),
        ("schema", &Method::PUT) => Some(json!({"type": "object"})),
        ("release", &Method::PUT) => Some(json!({"rules": [{"version": 1, "priority": 0}]})),
        ("publish", _) => Some(json!({"version": 1})),
        ("rollback", _) => Some(json!({"to": 1})),
        ("prod", &Method::POST) => Some(json!({"configs": ["db"]})),
        ("watch" | "stream", _) => {
            Some(json!({"tenant": "acme", "app": "shop", "env": "prod", "configs": ["db"], "timeout_ms": 1000}))
        }
        ("tokens", &Method::POST) => Some(json!({"name": "new", "role": "viewer", "scope": "acme"})),
        ("voters", _) => Some(json!({"voters": []})),
        ("learners", _) => Some(json!({"node_id": 99, "peer_url": "http://127.0.0.1:1"})),
        _ => None,
    };
    let path = if path.ends_with("/diff") { format!("{path}?from=1&to=1") } else { path };
    (path, body)
}

/// A request for `route` carrying `token` (a fresh client: no default credential).
async fn call(n: &Node, route: &Route, tokens: &Tokens, token: Option<&str>) -> reqwest::Response {
    let (path, body) = sample(route, tokens);
    let url = if path.starts_with("/admin/") { n.peer_url(&path) } else { n.client_url(&path) };
    let mut request = reqwest::Client::new().request(route.method.clone(), url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if path.contains("/release") && route.method != Method::GET {
        request = request.header("if-match", release_tag(n).await);
    }
    if let Some(body) = body {
        request = request.header("content-type", "application/json").body(body.to_string());
    }
    request.timeout(Duration::from_secs(10)).send().await.unwrap()
}

async fn expect_refusal(response: reqwest::Response, status: StatusCode, what: &str) {
    assert_eq!(response.status(), status, "{what}");
    assert_eq!(response.headers()["content-type"], "application/problem+json", "{what}");
    let problem: Value = response.json().await.unwrap();
    let code = if status == StatusCode::UNAUTHORIZED { "unauthorized" } else { "forbidden" };
    assert_eq!(problem["code"], code, "{what}: {problem}");
}

/// The least role that may do `action`, and one that is too small (none for resolve).
fn roles_for(action: Action) -> (&'static str, Option<&'static str>) {
    match action {
        Action::Resolve => ("client", None),
        Action::Read => ("viewer", Some("client")),
        Action::Write => ("editor", Some("publisher")),
        Action::Release => ("publisher", Some("editor")),
        Action::Manage => ("admin", Some("editor")),
    }
}

/// What a token of another tenant gets on a route whose scope comes from the body or a record.
fn other_tenant_status(route: &Route) -> StatusCode {
    match (route.path.as_str(), &route.method) {
        ("/api/v1/tokens", &Method::GET) | ("/api/v1/whoami", _) => StatusCode::OK,
        ("/api/v1/tokens/{id}", _) => StatusCode::NOT_FOUND,
        _ => StatusCode::FORBIDDEN,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_refuses_bad_credentials_and_small_roles_and_serves_the_least_role_that_may() {
    let n = node().await;
    let tokens = seed(&n).await;
    let routes: Vec<Route> = conflux::api::client_routes().into_iter().chain(conflux::api::admin_routes()).collect();
    assert!(routes.len() > 40, "the route table lists every route");
    let wrong = format!("cfx_{}_{}", "0".repeat(16), "1".repeat(64));
    let mut allowed_calls = 0;
    for route in &routes {
        let what = |who: &str| format!("{} {} with {who}", route.method, route.path);
        let action = match route.access {
            Access::Open => {
                assert!(call(&n, route, &tokens, None).await.status().is_success(), "{}", what("no token"));
                continue;
            }
            Access::Cluster(action) | Access::Path(action) | Access::Handler(action) => action,
        };
        for (who, token) in [
            ("no token", None),
            ("a wrong token", Some(wrong.as_str())),
            ("garbage", Some("not-a-token")),
            ("an expired token", Some(tokens.expired.as_str())),
            ("a revoked token", Some(tokens.revoked.as_str())),
        ] {
            expect_refusal(call(&n, route, &tokens, token).await, StatusCode::UNAUTHORIZED, &what(who)).await;
        }
        let other = &tokens.by_role[&("admin", "other")];
        let expected =
            if matches!(route.access, Access::Handler(_)) { other_tenant_status(route) } else { StatusCode::FORBIDDEN };
        let response = call(&n, route, &tokens, Some(other)).await;
        if expected == StatusCode::FORBIDDEN {
            expect_refusal(response, expected, &what("another tenant's admin token")).await;
        } else {
            assert_eq!(response.status(), expected, "{}", what("another tenant's admin token"));
        }
        let (least, smaller) = roles_for(action);
        let scope = if matches!(route.access, Access::Cluster(_)) { "*" } else { "acme" };
        if let Some(smaller) = smaller {
            let token =
                tokens.by_role.get(&(smaller, scope)).or_else(|| tokens.by_role.get(&("client", scope))).unwrap();
            expect_refusal(call(&n, route, &tokens, Some(token)).await, StatusCode::FORBIDDEN, &what(smaller)).await;
        }
        if matches!(route.access, Access::Cluster(_)) {
            let tenant_admin = &tokens.by_role[&("admin", "acme")];
            let response = call(&n, route, &tokens, Some(tenant_admin)).await;
            expect_refusal(response, StatusCode::FORBIDDEN, &what("a tenant admin token")).await;
        }
        let token = &tokens.by_role[&(least, scope)];
        let response = call(&n, route, &tokens, Some(token)).await;
        let status = response.status();
        let body = if route.path == "/api/v1/watch/stream" { String::new() } else { response.text().await.unwrap() };
        // The membership samples ask for what a one-node cluster may refuse (it is initialized,
        // voters cannot be empty, learner 99 is not there): past the guard is what counts.
        let membership = route.path.starts_with("/admin/") && route.path != "/admin/status";
        let handler_refusal = membership && status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN;
        assert!(status.is_success() || handler_refusal, "{}: {status} {body}", what(least));
        allowed_calls += 1;
    }
    assert!(allowed_calls > 40);
    n.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_are_audited_with_the_token_id_and_a_token_is_shown_once() {
    let n = node().await;
    let (editor, editor_id) = create_token(&n, "editor", "acme/shop/prod", None).await;
    let plain = reqwest::Client::new();
    let write = plain.put(n.client_url(DB)).bearer_auth(&editor).body("x").send().await.unwrap();
    assert_eq!(write.status(), StatusCode::OK);
    let versions: Value =
        n.http.get(n.client_url(&format!("{DB}/versions"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(versions["items"][0]["author"], format!("token:{editor_id}"));
    let audit: Value =
        n.http.get(n.client_url("/api/v1/tenants/acme/audit")).send().await.unwrap().json().await.unwrap();
    let actors: Vec<&str> = audit["items"].as_array().unwrap().iter().map(|e| e["actor"].as_str().unwrap()).collect();
    assert!(actors.iter().all(|a| *a == format!("token:{editor_id}")), "{actors:?}");

    let listed: Value = n.http.get(n.client_url("/api/v1/tokens")).send().await.unwrap().json().await.unwrap();
    let text = listed.to_string();
    assert!(text.contains(&editor_id) && !text.contains(editor.rsplit('_').next().unwrap()), "no secret is listed");
    let me: Value =
        plain.get(n.client_url("/api/v1/whoami")).bearer_auth(&editor).send().await.unwrap().json().await.unwrap();
    assert_eq!(me, json!({"actor": format!("token:{editor_id}"), "role": "editor", "scope": "acme/shop/prod"}));

    // An env-scoped editor cannot write next door, nor mint tokens.
    let next_door = plain.put(n.client_url("/api/v1/configs/acme/shop/dev/db")).bearer_auth(&editor).body("x");
    assert_eq!(next_door.send().await.unwrap().status(), StatusCode::FORBIDDEN);
    let mint = plain.post(n.client_url("/api/v1/tokens")).bearer_auth(&editor);
    let mint = mint.json(&json!({"name": "x", "role": "admin", "scope": "*"})).send().await.unwrap();
    assert_eq!(mint.status(), StatusCode::FORBIDDEN);
    // A tenant admin cannot mint a cluster-wide token.
    let (tenant_admin, _) = create_token(&n, "admin", "acme", None).await;
    let escalate = plain.post(n.client_url("/api/v1/tokens")).bearer_auth(&tenant_admin);
    let escalate = escalate.json(&json!({"name": "x", "role": "admin", "scope": "*"})).send().await.unwrap();
    assert_eq!(escalate.status(), StatusCode::FORBIDDEN);
    let bad = plain.post(n.client_url("/api/v1/tokens")).bearer_auth(&tenant_admin);
    let bad = bad.json(&json!({"name": "x", "role": "root", "scope": "acme"})).send().await.unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    n.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auth_disabled_anyone_may_do_anything_as_anonymous() {
    let n = support::node_with(|config| config.auth = conflux::config::AuthMode::Disabled).await;
    let plain = reqwest::Client::new();
    let write = plain.put(n.client_url(DB)).body("x").send().await.unwrap();
    assert_eq!(write.status(), StatusCode::OK);
    let me: Value = plain.get(n.client_url("/api/v1/whoami")).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["actor"], "anonymous");
    assert!(!n.handle.client_addr.to_string().is_empty());
    n.handle.shutdown().await;
}

/// Runs `conflux <args>` against the node with `token` in `CONFLUX_TOKEN`; (success, stdout, stderr).
fn cli(n: &Node, token: &str, args: &[&str]) -> (bool, String, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_conflux"))
        .args(args)
        .args(["--endpoint", &n.client_url("")])
        .env("CONFLUX_TOKEN", token)
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).unwrap();
    (output.status.success(), text(output.stdout), text(output.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_creates_lists_uses_and_revokes_tokens() {
    let n = node().await;
    let (ok, token, _) = cli(&n, &n.token, &["token", "create", "--role", "viewer", "--scope", "acme", "--name", "ci"]);
    assert!(ok);
    let token = token.trim().to_string();
    assert!(token.starts_with("cfx_"), "create prints the token alone: {token:?}");
    let (ok, me, _) = cli(&n, &token, &["token", "whoami"]);
    assert!(ok);
    let me: Value = serde_json::from_str(&me).unwrap();
    assert_eq!((&me["role"], &me["scope"]), (&json!("viewer"), &json!("acme")));
    let id = me["actor"].as_str().unwrap().strip_prefix("token:").unwrap().to_string();

    let (ok, listing, _) = cli(&n, &n.token, &["token", "list"]);
    assert!(ok && listing.contains(&id) && listing.contains("active"), "{listing}");
    let (ok, _, stderr) = cli(&n, &token, &["token", "create", "--role", "admin", "--scope", "*", "--name", "x"]);
    assert!(!ok && (stderr.contains("403") || stderr.contains("role")), "a viewer cannot mint tokens: {stderr}");

    assert!(cli(&n, &n.token, &["token", "revoke", &id]).0);
    let (ok, _, stderr) = cli(&n, &token, &["token", "whoami"]);
    assert!(!ok && stderr.contains("revoked"), "a revoked token is refused with a reason: {stderr}");
    let (ok, listing, _) = cli(&n, &n.token, &["token", "list"]);
    assert!(ok && listing.contains("revoked"), "{listing}");
    n.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_retried_with_its_idempotency_key_is_applied_once() {
    let n = node().await;
    let send = |key: &str, body: &str| {
        n.http.put(n.client_url(DB)).header("idempotency-key", key).body(body.to_string()).send()
    };
    let first: Value = send("retry-1", "a").await.unwrap().json().await.unwrap();
    let retried: Value = send("retry-1", "a").await.unwrap().json().await.unwrap();
    assert_eq!(first, retried, "the retry is answered with the first write's version and revision");
    let versions: Value =
        n.http.get(n.client_url(&format!("{DB}/versions"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(versions["items"].as_array().unwrap().len(), 1);
    let reused = send("retry-1", "b").await.unwrap();
    assert_eq!(reused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = reused.json().await.unwrap();
    assert_eq!(problem["code"], "idempotency_key_reused");
    let bad = send("no spaces allowed", "a").await.unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    n.handle.shutdown().await;
}
