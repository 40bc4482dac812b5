//! The OpenAPI document (`src/api/openapi.json`, served at `/api/v1/openapi.json`) against a real
//! in-process node: every documented route and method answers, every route the server has is
//! documented (from the route table the routers are built from), exactly the open routes declare
//! no security, no undocumented method answers, the statuses and
//! bodies the server gives are the documented ones, and every error is a `Problem`.

use std::collections::{BTreeMap, BTreeSet};

use conflux::api::access::Access;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use support::{node, Node};

#[path = "support/node.rs"]
mod support;

const DOCUMENT: &str = include_str!("../src/api/openapi.json");

/// The methods a route can have that the document must account for.
const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];

impl Node {
    /// A request to a documented path: admin paths go to the peer listener with the token.
    fn request(&self, method: &str, path: &str) -> reqwest::RequestBuilder {
        let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
        if path.starts_with("/admin/") {
            self.http.request(method, self.peer_url(path)).bearer_auth(&self.token)
        } else {
            self.http.request(method, self.client_url(path))
        }
    }
}

fn document() -> Value {
    serde_json::from_str(DOCUMENT).expect("openapi.json is JSON")
}

/// Follows a local `$ref` (`#/components/...`) to what it names; anything else is returned as is.
fn resolve<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    match value.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let pointer = reference.strip_prefix('#').unwrap_or_else(|| panic!("non-local $ref {reference}"));
            resolve(doc, doc.pointer(pointer).unwrap_or_else(|| panic!("dangling $ref {reference}")))
        }
        None => value,
    }
}

/// One documented operation.
struct Operation<'a> {
    path: &'a str,
    method: &'a str,
    item: &'a Value,
    operation: &'a Value,
}

fn operations(doc: &Value) -> Vec<Operation<'_>> {
    let mut found = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            if METHODS.contains(&method.as_str()) || ["head", "options", "trace"].contains(&method.as_str()) {
                found.push(Operation { path, method, item, operation });
            }
        }
    }
    found
}

/// Documented paths and their methods.
fn documented_routes(doc: &Value) -> BTreeMap<String, BTreeSet<String>> {
    let mut routes: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for op in operations(doc) {
        routes.entry(op.path.to_string()).or_default().insert(op.method.to_string());
    }
    routes
}

/// Path-level and operation-level parameters, resolved.
fn parameters<'a>(doc: &'a Value, op: &Operation<'a>) -> Vec<&'a Value> {
    let listed = |v: &'a Value| v["parameters"].as_array().map(|a| a.iter().collect::<Vec<_>>()).unwrap_or_default();
    listed(op.item).into_iter().chain(listed(op.operation)).map(|p| resolve(doc, p)).collect()
}

fn is_integer(schema: &Value) -> bool {
    match &schema["type"] {
        Value::String(t) => t == "integer",
        Value::Array(types) => types.iter().any(|t| t == "integer"),
        _ => false,
    }
}

/// The sample value of a path or query parameter: tenant acme, app shop, env prod, name db,
/// numbers 1.
fn sample_parameter(doc: &Value, parameter: &Value) -> String {
    let name = parameter["name"].as_str().unwrap();
    let schema = resolve(doc, &parameter["schema"]);
    match name {
        "tenant" => "acme".into(),
        "app" => "shop".into(),
        "env" => "prod".into(),
        "name" => "db".into(),
        _ if is_integer(schema) => "1".into(),
        _ => match schema["examples"].get(0).and_then(Value::as_str) {
            Some(example) => example.into(),
            None => "x".into(),
        },
    }
}

/// A minimal instance of a schema: its required properties only, integers 1, strings "x",
/// arrays of `minItems` samples; any JSON (`{}`) where the schema says nothing.
fn sample_body(doc: &Value, schema: &Value) -> Value {
    let schema = resolve(doc, schema);
    if let Some(parts) = schema["allOf"].as_array() {
        let mut merged = serde_json::Map::new();
        for part in parts {
            if let Value::Object(fields) = sample_body(doc, part) {
                merged.extend(fields);
            }
        }
        return Value::Object(merged);
    }
    if let Some(first) = schema["oneOf"].get(0).or_else(|| schema["anyOf"].get(0)) {
        return sample_body(doc, first);
    }
    let kind = match &schema["type"] {
        Value::String(t) => t.as_str(),
        Value::Array(types) => types.iter().filter_map(Value::as_str).find(|t| *t != "null").unwrap_or("null"),
        _ => "object",
    };
    match kind {
        "object" => {
            let mut object = serde_json::Map::new();
            for name in schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str) {
                object.insert(name.to_string(), sample_body(doc, &schema["properties"][name]));
            }
            Value::Object(object)
        }
        "array" => {
            let count = schema["minItems"].as_u64().unwrap_or(0) as usize;
            Value::Array((0..count).map(|_| sample_body(doc, &schema["items"])).collect())
        }
        "integer" | "number" => json!(1),
        "boolean" => json!(false),
        "string" => json!("x"),
        _ => Value::Null,
    }
}

/// The request a documented operation gets: sample path parameters, required query parameters
/// and headers, and (`with_body`) a body of the first documented media type when one is required.
fn sample_request(node: &Node, doc: &Value, op: &Operation<'_>, with_body: bool) -> reqwest::RequestBuilder {
    let params = parameters(doc, op);
    let mut path = op.path.to_string();
    for parameter in params.iter().filter(|p| p["in"] == "path") {
        let name = parameter["name"].as_str().unwrap();
        path = path.replace(&format!("{{{name}}}"), &sample_parameter(doc, parameter));
    }
    assert!(!path.contains('{'), "{} {}: a path parameter is not declared", op.method, op.path);
    let mut request = node.request(op.method, &path);
    for parameter in params.iter().filter(|p| p["required"] == true) {
        let (name, value) = (parameter["name"].as_str().unwrap(), sample_parameter(doc, parameter));
        match parameter["in"].as_str().unwrap() {
            "query" => request = request.query(&[(name, value)]),
            "header" => request = request.header(name, value),
            _ => {}
        }
    }
    let body = resolve(doc, &op.operation["requestBody"]);
    if with_body && body["required"] == true {
        let (media_type, content) = body["content"].as_object().and_then(|c| c.iter().next()).expect("body media type");
        let sample = sample_body(doc, &content["schema"]);
        let text = match (media_type.ends_with("json"), sample) {
            (true, sample) => sample.to_string(),
            (false, Value::String(text)) => text,
            (false, other) => other.to_string(),
        };
        request = request.header("content-type", media_type.as_str()).body(text);
    }
    request
}

/// The media type of a `Content-Type` value, without parameters.
fn essence(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase()
}

/// Checks one answer against what the document says about the operation; returns what is wrong.
async fn check_answer(doc: &Value, op: &Operation<'_>, response: reqwest::Response) -> Vec<String> {
    let status = response.status();
    let what = format!("{} {} answered {status}", op.method.to_uppercase(), op.path);
    let content_type = response.headers().get("content-type").map(|v| essence(v.to_str().unwrap_or("")));
    let body = response.text().await.unwrap();
    let code = serde_json::from_str::<Value>(&body).ok().and_then(|v| v["code"].as_str().map(str::to_string));
    let mut wrong = Vec::new();
    let unrouted = status == StatusCode::NOT_FOUND && code.as_deref().is_none_or(|c| c == "no_route");
    if unrouted || status == StatusCode::METHOD_NOT_ALLOWED {
        wrong.push(format!("{what} (code {code:?}): the server has no such route or method"));
        return wrong;
    }
    let Some(documented) = op.operation["responses"].get(status.as_u16().to_string()) else {
        wrong.push(format!("{what} (code {code:?}), which the document does not list: {body}"));
        return wrong;
    };
    let documented = resolve(doc, documented);
    let Some(content) = documented["content"].as_object() else {
        if !body.is_empty() {
            wrong.push(format!("{what} with a body the document does not describe"));
        }
        return wrong;
    };
    let Some(content_type) = content_type else {
        wrong.push(format!("{what} without a Content-Type"));
        return wrong;
    };
    let Some(media) = content.iter().find(|(documented, _)| essence(documented) == content_type).map(|(_, m)| m) else {
        wrong.push(format!("{what} as {content_type}, which the document does not list"));
        return wrong;
    };
    if content_type == "application/json" || content_type.ends_with("+json") {
        let Ok(instance) = serde_json::from_str::<Value>(&body) else {
            wrong.push(format!("{what} with a body that is not JSON: {body}"));
            return wrong;
        };
        // The schema is checked as part of the whole document, so its `#/components/...` refs resolve.
        let mut root = json!({ "components": doc["components"] });
        for (key, value) in media["schema"].as_object().into_iter().flatten() {
            root[key] = value.clone();
        }
        let validator = jsonschema::draft202012::new(&root).expect("a valid schema");
        for error in validator.iter_errors(&instance) {
            wrong.push(format!(
                "{what}: body does not match the documented schema at {}: {error}",
                error.instance_path()
            ));
        }
    }
    wrong
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_document_is_the_file_and_declares_openapi_3_1() {
    let n = node().await;
    let response = n.request("get", "/api/v1/openapi.json").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    let served = response.text().await.unwrap();
    assert_eq!(served, DOCUMENT);
    let doc: Value = serde_json::from_str(&served).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["title"], "Conflux");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    n.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_route_answers_with_a_documented_status_and_body() {
    let n = node().await;
    let doc = document();
    // One config with a version and a release, so reads find something and answer 200.
    let seeded = n.request("put", "/api/v1/configs/acme/shop/prod/db").header("content-type", "application/json");
    assert_eq!(seeded.body(r#"{"pool": 5}"#).send().await.unwrap().status(), StatusCode::OK);
    let mut wrong = Vec::new();
    let mut answered = BTreeSet::new();
    for op in operations(&doc) {
        let response = sample_request(&n, &doc, &op, true).send().await.unwrap();
        answered.insert(response.status().as_u16());
        wrong.extend(check_answer(&doc, &op, response).await);
    }
    assert!(wrong.is_empty(), "{} problem(s):\n{}", wrong.len(), wrong.join("\n"));
    assert!(answered.contains(&200) && answered.iter().any(|s| *s >= 400), "{answered:?}");
    n.handle.shutdown().await;
}

/// The routes `client_router` and `admin_router` serve, with their methods and whether they are
/// open, taken from the route table the routers are built from.
fn server_routes() -> BTreeMap<String, BTreeMap<String, Access>> {
    let mut routes: BTreeMap<String, BTreeMap<String, Access>> = BTreeMap::new();
    for route in conflux::api::client_routes().into_iter().chain(conflux::api::admin_routes()) {
        routes.entry(route.path.clone()).or_default().insert(route.method.as_str().to_ascii_lowercase(), route.access);
    }
    routes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_the_server_has_is_documented_and_no_other_method_answers() {
    let doc = document();
    let documented = documented_routes(&doc);
    let server = server_routes();
    assert!(server.len() >= 20, "too few routes in the route table: {server:?}");
    for (path, methods) in &server {
        let listed = documented.get(path).unwrap_or_else(|| panic!("route {path} is not in openapi.json"));
        let methods: BTreeSet<String> = methods.keys().cloned().collect();
        assert_eq!(*listed, methods, "methods of {path}: openapi.json lists {listed:?}, src/api.rs has {methods:?}");
    }
    for path in documented.keys() {
        assert!(server.contains_key(path), "openapi.json documents {path}, which src/api.rs does not route");
    }

    let n = node().await;
    let mut one_per_path = BTreeMap::new();
    for op in operations(&doc) {
        one_per_path.entry(op.path).or_insert(op);
    }
    let mut answered = Vec::new();
    for (path, op) in one_per_path {
        for method in METHODS.into_iter().filter(|m| op.item.get(*m).is_none()) {
            let request = sample_request(&n, &doc, &Operation { method, ..op }, false);
            let response = request.header("content-type", "application/json").body("{}").send().await.unwrap();
            let status = response.status();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            if status != StatusCode::METHOD_NOT_ALLOWED || body["code"] != "method_not_allowed" {
                answered.push(format!("{} {path} answered {status} {body}", method.to_uppercase()));
            }
        }
    }
    assert!(answered.is_empty(), "undocumented methods that were not refused with 405:\n{}", answered.join("\n"));
    n.handle.shutdown().await;
}

#[test]
fn every_documented_status_is_real_and_every_error_is_a_problem() {
    let doc = document();
    let problem = json!({ "$ref": "#/components/schemas/Problem" });
    let tags: BTreeSet<&str> = doc["tags"].as_array().unwrap().iter().filter_map(|t| t["name"].as_str()).collect();
    let mut ids = BTreeSet::new();
    for op in operations(&doc) {
        let what = format!("{} {}", op.method.to_uppercase(), op.path);
        let id = op.operation["operationId"].as_str().unwrap_or_else(|| panic!("{what}: no operationId"));
        assert!(ids.insert(id), "{what}: operationId {id} is used twice");
        assert!(op.operation["summary"].is_string(), "{what}: no summary");
        for tag in op.operation["tags"].as_array().unwrap_or_else(|| panic!("{what}: no tags")) {
            assert!(tags.contains(tag.as_str().unwrap()), "{what}: tag {tag} is not declared");
        }
        let access = server_routes()[op.path][op.method];
        let declared_open = op.operation.get("security").is_some_and(|s| s == &json!([]));
        assert_eq!(declared_open, access == Access::Open, "{what}: `security: []` exactly on open routes");
        if access != Access::Open {
            for status in ["401", "403"] {
                assert!(op.operation["responses"].get(status).is_some(), "{what}: a guarded route documents {status}");
            }
        }
        let responses = op.operation["responses"].as_object().unwrap_or_else(|| panic!("{what}: no responses"));
        assert!(responses.keys().any(|s| s.starts_with('2')), "{what}: no success response");
        for (status, response) in responses {
            let code: u16 = status.parse().unwrap_or_else(|_| panic!("{what}: response {status:?} is not a status"));
            assert!((100..=599).contains(&code), "{what}: {code} is not an HTTP status");
            assert!(
                StatusCode::from_u16(code).unwrap().canonical_reason().is_some(),
                "{what}: {code} is not a known status"
            );
            let response = resolve(&doc, response);
            assert!(response["description"].is_string(), "{what} {code}: no description");
            if code >= 400 {
                let content = response["content"].as_object().unwrap_or_else(|| panic!("{what} {code}: no content"));
                assert_eq!(content.keys().collect::<Vec<_>>(), ["application/problem+json"], "{what} {code}");
                assert_eq!(content["application/problem+json"]["schema"], problem, "{what} {code}");
            }
        }
    }
}
