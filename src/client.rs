//! Typed HTTP client for the client and admin APIs, used by the CLI, the tests and benchmarks.

use std::time::Duration;

use reqwest::{header, Method, StatusCode};

use crate::wire::{self, NodeId};

/// A failed call: the transport, a problem document from the node, or an unexpected answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("{} ({}, HTTP {})", .0.detail, .0.code, .0.status)]
    Problem(wire::Problem),
    #[error("unexpected HTTP {status}: {body}")]
    Unexpected { status: u16, body: String },
}

impl ClientError {
    /// The problem's stable code, when the node answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Problem(p) => Some(&p.code),
            _ => None,
        }
    }
}

/// One configuration as served by `GET`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedConfig {
    pub content: Vec<u8>,
    pub version: u64,
    pub revision: u64,
    pub content_type: String,
}

/// Options for a write.
#[derive(Debug, Clone, Default)]
pub struct PutOptions<'a> {
    pub format: Option<&'a str>,
    pub if_match: Option<u64>,
}

/// Client for one node's endpoint. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    endpoint: String,
    token: Option<String>,
}

impl Client {
    pub fn new(endpoint: &str, token: Option<String>) -> Client {
        let http = reqwest::Client::builder()
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(30))
            .build()
            .expect("building the HTTP client");
        Client { http, endpoint: endpoint.trim_end_matches('/').to_string(), token }
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let builder = self.http.request(method, format!("{}{}", self.endpoint, path));
        match &self.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    async fn check(response: reqwest::Response) -> Result<reqwest::Response, ClientError> {
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let body = response.text().await?;
        Err(match serde_json::from_str::<wire::Problem>(&body) {
            Ok(problem) => ClientError::Problem(problem),
            Err(_) => ClientError::Unexpected { status, body },
        })
    }

    async fn json<T: serde::de::DeserializeOwned>(builder: reqwest::RequestBuilder) -> Result<T, ClientError> {
        Ok(Self::check(builder.send().await?).await?.json().await?)
    }

    fn config_path(tenant: &str, app: &str, env: &str, name: &str) -> String {
        format!("/api/v1/configs/{tenant}/{app}/{env}/{name}")
    }

    /// Writes a new version; `key` is `[tenant, app, env, name]`.
    pub async fn put(
        &self,
        key: [&str; 4],
        content: Vec<u8>,
        options: PutOptions<'_>,
    ) -> Result<wire::WriteResult, ClientError> {
        let mut builder = self.request(Method::PUT, &Self::config_path(key[0], key[1], key[2], key[3])).body(content);
        if let Some(format) = options.format {
            builder = builder.query(&[("format", format)]);
        }
        if let Some(version) = options.if_match {
            builder = builder.header(header::IF_MATCH, format!("\"{version}\""));
        }
        Self::json(builder).await
    }

    /// Reads the current version; `None` when absent. `serializable` reads the node's local state.
    pub async fn get(&self, key: [&str; 4], serializable: bool) -> Result<Option<FetchedConfig>, ClientError> {
        let mut builder = self.request(Method::GET, &Self::config_path(key[0], key[1], key[2], key[3]));
        if serializable {
            builder = builder.query(&[("consistency", "serializable")]);
        }
        let response = builder.send().await?;
        if response.status() == StatusCode::NOT_FOUND {
            let body = response.text().await?;
            return match serde_json::from_str::<wire::Problem>(&body) {
                Ok(p) if p.code == "not_found" => Ok(None),
                Ok(p) => Err(ClientError::Problem(p)),
                Err(_) => Err(ClientError::Unexpected { status: 404, body }),
            };
        }
        let response = Self::check(response).await?;
        let number = |name: &str| {
            response.headers().get(name).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(0)
        };
        let (version, revision) = (number("x-conflux-version"), number("x-conflux-revision"));
        let content_type =
            response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let content = response.bytes().await?.to_vec();
        Ok(Some(FetchedConfig { content, version, revision, content_type }))
    }

    pub async fn delete(&self, key: [&str; 4], if_match: Option<u64>) -> Result<wire::WriteResult, ClientError> {
        let mut builder = self.request(Method::DELETE, &Self::config_path(key[0], key[1], key[2], key[3]));
        if let Some(version) = if_match {
            builder = builder.header(header::IF_MATCH, format!("\"{version}\""));
        }
        Self::json(builder).await
    }

    pub async fn list(&self, tenant: &str, app: &str, env: &str) -> Result<wire::ConfigList, ClientError> {
        Self::json(self.request(Method::GET, &format!("/api/v1/configs/{tenant}/{app}/{env}"))).await
    }

    pub async fn status(&self) -> Result<wire::ClusterStatus, ClientError> {
        Self::json(self.request(Method::GET, "/admin/status")).await
    }

    pub async fn init(&self) -> Result<wire::InitResult, ClientError> {
        Self::json(self.request(Method::POST, "/admin/init")).await
    }

    /// Adds a learner; with `wait`, the node waits (bounded) for it to catch up.
    pub async fn add_learner(
        &self,
        node_id: NodeId,
        peer_url: &str,
        wait: Option<Duration>,
    ) -> Result<wire::LearnerResult, ClientError> {
        let mut builder = self
            .request(Method::POST, "/admin/learners")
            .json(&wire::AddLearner { node_id, peer_url: peer_url.into() });
        if let Some(wait) = wait {
            builder = builder.query(&[("wait", wait.as_secs_f64())]).timeout(wait + Duration::from_secs(30));
        }
        Self::json(builder).await
    }

    pub async fn set_voters(&self, voters: Vec<NodeId>) -> Result<wire::Membership, ClientError> {
        Self::json(self.request(Method::PUT, "/admin/voters").json(&wire::SetVoters { voters })).await
    }

    pub async fn remove_member(&self, node_id: NodeId) -> Result<wire::Membership, ClientError> {
        Self::json(self.request(Method::DELETE, &format!("/admin/members/{node_id}"))).await
    }
}
