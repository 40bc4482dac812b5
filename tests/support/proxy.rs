//! A fault-injecting HTTP proxy in front of one node's peer listener. Every peer request names
//! its sender (`x-conflux-from-node`); the proxy refuses requests from senders it was told are on
//! the other side of a partition, which cuts both directions once every node has a proxy.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Clone, Default)]
struct Rules {
    client: reqwest::Client,
    target: Arc<Mutex<String>>,
    blocked_senders: Arc<Mutex<HashSet<u64>>>,
}

/// One proxy; dropping it does not stop it (it lives as long as the test's runtime).
pub struct FaultProxy {
    pub addr: SocketAddr,
    rules: Rules,
}

impl FaultProxy {
    pub async fn start(target: SocketAddr) -> FaultProxy {
        let rules = Rules::default();
        *rules.target.lock().unwrap() = format!("http://{target}");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().fallback(forward).with_state(rules.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        FaultProxy { addr, rules }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_target(&self, target: SocketAddr) {
        *self.rules.target.lock().unwrap() = format!("http://{target}");
    }

    /// Refuse requests from these node ids (replacing the previous set).
    pub fn block_senders(&self, senders: impl IntoIterator<Item = u64>) {
        *self.rules.blocked_senders.lock().unwrap() = senders.into_iter().collect();
    }
}

async fn forward(State(rules): State<Rules>, request: Request) -> Response {
    let sender =
        request.headers().get("x-conflux-from-node").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if sender.is_some_and(|s| rules.blocked_senders.lock().unwrap().contains(&s)) {
        return (StatusCode::SERVICE_UNAVAILABLE, "partitioned by the test proxy").into_response();
    }
    let target = rules.target.lock().unwrap().clone();
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, usize::MAX).await else {
        return (StatusCode::BAD_REQUEST, "unreadable body").into_response();
    };
    let url = format!("{target}{}", parts.uri.path_and_query().map_or("/", |p| p.as_str()));
    let mut outbound = rules.client.request(parts.method, url).body(body);
    for (name, value) in parts.headers.iter() {
        if name != "host" && name != "content-length" {
            outbound = outbound.header(name, value);
        }
    }
    match outbound.send().await {
        Ok(reply) => {
            let status = reply.status();
            let headers = reply.headers().clone();
            let bytes = reply.bytes().await.unwrap_or_default();
            let mut response = (status, bytes).into_response();
            for (name, value) in headers.iter() {
                if name != "content-length" && name != "transfer-encoding" {
                    response.headers_mut().insert(name, value.clone());
                }
            }
            response
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}
