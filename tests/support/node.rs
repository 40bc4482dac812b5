//! One in-process node (`start_node`) on a temporary data directory with both listeners on port
//! 0, for the tests of the HTTP APIs. Each test file adds the request helpers it needs.

#![allow(dead_code)] // each test binary uses a different part of it

use conflux::config::NodeConfig;
use conflux::node::{start_node, NodeHandle};
use tempfile::TempDir;

pub struct Node {
    _dir: TempDir,
    pub handle: NodeHandle,
    /// Sends the bootstrap admin token with every request unless the request sets its own.
    pub http: reqwest::Client,
    /// The bootstrap admin token the node created in its data directory (client and admin APIs).
    pub token: String,
    /// The cluster token the node created in its data directory (peer calls).
    pub cluster_token: String,
}

/// Starts a single-node cluster and returns once it answers.
pub async fn node() -> Node {
    node_with(|_| {}).await
}

/// [`node`], with settings changed by `adjust` first.
pub async fn node_with(adjust: impl FnOnce(&mut NodeConfig)) -> Node {
    let dir = TempDir::new().unwrap();
    let mut config = NodeConfig::with_data_dir(dir.path().to_path_buf());
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.peer_listen = "127.0.0.1:0".parse().unwrap();
    adjust(&mut config);
    let handle = start_node(config).await.expect("node starts");
    let read = |file: &str| std::fs::read_to_string(dir.path().join(file)).unwrap_or_default();
    let (token, cluster_token) = (read("admin-token"), read("cluster-token"));
    let mut headers = reqwest::header::HeaderMap::new();
    if !token.is_empty() {
        headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
    }
    let http = reqwest::Client::builder().default_headers(headers).build().unwrap();
    Node { _dir: dir, handle, http, token, cluster_token }
}

impl Node {
    /// Stops the node (its data directory goes after).
    pub async fn shutdown(self) {
        self.handle.shutdown().await;
    }

    pub fn client_url(&self, path: &str) -> String {
        format!("http://{}{}", self.handle.client_addr, path)
    }

    pub fn peer_url(&self, path: &str) -> String {
        format!("http://{}{}", self.handle.peer_addr, path)
    }

    /// A typed client of the client API with the bootstrap admin token.
    pub fn client(&self) -> conflux::client::Client {
        conflux::client::Client::new(&self.client_url(""), Some(self.token.clone()))
    }
}
