//! Typed HTTP client for the client and admin APIs, used by the CLI, the tests, benchmarks and
//! the operator. Every call returns the `wire` types the node answers with; a node's
//! problem+json answer becomes [`ClientError::Problem`].
//!
//! The methods are split by area: configs and the admin API here, then `client/history.rs`
//! (versions, diffs, schemas), `client/releases.rs` (releases and resolve) and
//! `client/hierarchy.rs` (tenants, apps, envs, the audit log), `client/backup.rs` (backup,
//! restore, quorum-loss recovery). The options types they take are declared here, except
//! `BackupOptions`.

mod backup;
mod hierarchy;
mod history;
mod releases;
mod tokens;
mod watch;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use reqwest::{header, Method, StatusCode};

use crate::wire::{self, NodeId};

pub use backup::BackupOptions;
pub use watch::{WatchSpec, Watcher};

/// A failed call: the transport, a problem document from the node, or an unexpected answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("{} ({}, HTTP {})", .0.detail, .0.code, .0.status)]
    Problem(Box<wire::Problem>),
    #[error("unexpected HTTP {status}: {body}")]
    Unexpected { status: u16, body: String },
    /// A name that cannot travel as one URL path segment (empty, `.` or `..`); the node would
    /// refuse it anyway, since names are `[A-Za-z0-9._-]` and never start with a dot.
    #[error("{0:?} is not a valid name")]
    InvalidName(String),
    /// The CA file given to trust an https endpoint holds no PEM certificate.
    #[error("the CA file holds no PEM certificate")]
    NoCaCertificate,
    /// What the node sent as a backup is not a whole, intact backup file.
    #[error("invalid backup: {0}")]
    Backup(#[from] crate::backup::BackupError),
    /// Writing a backup to its destination failed.
    #[error("writing the backup: {0}")]
    Write(std::io::Error),
}

impl ClientError {
    /// The problem's stable code, when the node answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Problem(p) => Some(&p.code),
            _ => None,
        }
    }

    /// Whether the node answered that the resource does not exist (code `not_found`).
    pub fn is_not_found(&self) -> bool {
        self.code() == Some("not_found")
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

/// Options for a write through [`Client::put`].
#[derive(Debug, Clone, Default)]
pub struct PutOptions<'a> {
    /// json, yaml, toml, properties or text; `None`: the config's current format, else text.
    pub format: Option<&'a str>,
    /// Only write if this version is the current one.
    pub if_match: Option<u64>,
}

/// Every option of a raw-body write ([`Client::write`]): [`PutOptions`] plus a message and a
/// dry run.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions<'a> {
    /// json, yaml, toml, properties or text; `None`: the config's current format, else text.
    pub format: Option<&'a str>,
    /// Only write if this version is the current one.
    pub if_match: Option<u64>,
    /// Recorded with the version and shown in its history.
    pub message: Option<&'a str>,
    /// Check everything (format, schema, quotas, `if_match`) and write nothing; the answer says
    /// which version the write would have created.
    pub dry_run: bool,
}

impl<'a> From<PutOptions<'a>> for WriteOptions<'a> {
    fn from(options: PutOptions<'a>) -> Self {
        WriteOptions { format: options.format, if_match: options.if_match, ..WriteOptions::default() }
    }
}

/// Options of [`Client::create_version`] (the message and format travel in the body).
#[derive(Debug, Clone, Copy, Default)]
pub struct CreateOptions {
    /// Only write if this version is the current one.
    pub if_match: Option<u64>,
    /// Check everything and write nothing.
    pub dry_run: bool,
}

/// Which page of a listing to fetch: at most `limit` items (the node's default is 100, its
/// maximum 1000), starting after `cursor` (the previous page's `next_cursor`).
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub limit: Option<usize>,
    pub cursor: Option<String>,
}

/// Who is asking in [`Client::resolve`], and how fresh the answer must be.
#[derive(Debug, Clone, Default)]
pub struct ResolveOptions {
    /// The client's labels, matched against the release's rules.
    pub labels: BTreeMap<String, String>,
    /// A stable id of the client, which percent rules hash; without one no percent rule matches.
    pub client_id: Option<String>,
    /// Wait until the node has applied this revision (the `revision` of an earlier answer).
    pub min_revision: Option<u64>,
    /// Answer from the node's local state, without a linearizable read.
    pub serializable: bool,
    /// The ETag of an earlier answer (with or without quotes): when it is still current the node
    /// answers 304 and the result is [`Resolution::NotModified`].
    pub if_none_match: Option<String>,
}

/// What [`Client::resolve`] got back.
#[derive(Debug, Clone, PartialEq)]
pub enum Resolution {
    /// What the client receives now, and the ETag to send as `if_none_match` next time.
    Content { resolved: wire::Resolved, etag: Option<String> },
    /// 304: the ETag sent as `if_none_match` is still current.
    NotModified { etag: String, revision: Option<u64> },
}

impl Resolution {
    /// The ETag of the current answer, as the node sent it (quotes included).
    pub fn etag(&self) -> Option<&str> {
        match self {
            Resolution::Content { etag, .. } => etag.as_deref(),
            Resolution::NotModified { etag, .. } => Some(etag),
        }
    }
}

/// Filters of [`Client::audit`]; `None` does not filter.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub actor: Option<String>,
    /// An action name such as `config.write` or `release.publish`.
    pub action: Option<String>,
    /// A resource path with its tenant (`acme/shop`, `acme/shop/prod/database`): it and
    /// everything under it.
    pub resource: Option<String>,
    /// Records at or after this time (milliseconds since the Unix epoch).
    pub from_ms: Option<u64>,
    /// Records before this time (milliseconds since the Unix epoch).
    pub to_ms: Option<u64>,
}

/// Client for one node's endpoint. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    endpoint: String,
    token: Option<String>,
}

/// `builder` trusting exactly the CA certificates in `ca_pem` (TLS 1.2 at least, rustls).
pub fn trusting(builder: reqwest::ClientBuilder, ca_pem: &[u8]) -> Result<reqwest::ClientBuilder, ClientError> {
    let roots = reqwest::Certificate::from_pem_bundle(ca_pem)?;
    if roots.is_empty() {
        return Err(ClientError::NoCaCertificate);
    }
    let builder =
        builder.use_rustls_tls().tls_built_in_root_certs(false).min_tls_version(reqwest::tls::Version::TLS_1_2);
    Ok(roots.into_iter().fold(builder, |builder, root| builder.add_root_certificate(root)))
}

/// A host name and the address it stands for (`HOST=IP`, like curl's `--resolve`): the node's
/// `--peer-resolve` and [`Client::with_ca_resolving`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostAddress {
    pub host: String,
    pub ip: std::net::IpAddr,
}

impl std::str::FromStr for HostAddress {
    type Err = String;

    fn from_str(text: &str) -> Result<HostAddress, String> {
        let (host, ip) = text.split_once('=').ok_or_else(|| format!("expected HOST=IP, got {text:?}"))?;
        if host.is_empty() || host.contains(['/', ':', ' ']) {
            return Err(format!("{host:?} is not a host name (HOST=IP, e.g. node-1.example=10.0.0.7)"));
        }
        let ip =
            ip.parse().map_err(|_| format!("{ip:?} is not an IP address (HOST=IP, e.g. node-1.example=10.0.0.7)"))?;
        Ok(HostAddress { host: host.to_string(), ip })
    }
}

/// `builder` reaching each host in `resolve` at its address instead of through DNS; connections
/// still go to the URL's port.
pub fn resolving(builder: reqwest::ClientBuilder, resolve: &[HostAddress]) -> reqwest::ClientBuilder {
    resolve.iter().fold(builder, |builder, entry| builder.resolve(&entry.host, (entry.ip, 0).into()))
}

/// One name as a URL path segment: every byte outside `[A-Za-z0-9._~-]` percent-encoded.
fn segment(name: &str) -> Result<String, ClientError> {
    if name.is_empty() || name == "." || name == ".." {
        return Err(ClientError::InvalidName(name.to_string()));
    }
    let mut encoded = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            let _ = write!(encoded, "%{byte:02X}");
        }
    }
    Ok(encoded)
}

/// Names joined by `/`, each encoded by [`segment`].
fn segments(names: &[&str]) -> Result<String, ClientError> {
    Ok(names.iter().map(|name| segment(name)).collect::<Result<Vec<_>, _>>()?.join("/"))
}

/// `/api/v1/configs/{tenant}/{app}/{env}/{name}` followed by `tail`.
fn config_path(key: [&str; 4], tail: &str) -> Result<String, ClientError> {
    Ok(format!("/api/v1/configs/{}{tail}", segments(&key)?))
}

/// The value of an `If-Match` naming a release.
fn release_tag(number: u64) -> String {
    format!("\"r{number}\"")
}

impl Client {
    /// A client of the node at `endpoint` (e.g. `http://127.0.0.1:7000`); `token` is sent as a
    /// bearer token (the admin API needs the cluster token).
    pub fn new(endpoint: &str, token: Option<String>) -> Client {
        let http = Self::builder().build().expect("building the HTTP client");
        Client { http, endpoint: endpoint.trim_end_matches('/').to_string(), token }
    }

    /// A client of an `https://` endpoint whose certificate is signed by one of the CAs in
    /// `ca_pem` (PEM, one or more certificates); no other root is trusted. Fails when `ca_pem`
    /// holds no certificate.
    pub fn with_ca(endpoint: &str, token: Option<String>, ca_pem: &[u8]) -> Result<Client, ClientError> {
        Self::with_ca_resolving(endpoint, token, ca_pem, &[])
    }

    /// [`Client::with_ca`] that reaches each host named in `resolve` at its address instead of
    /// looking it up in DNS (the port stays the endpoint's), as nodes do with `--peer-resolve`.
    pub fn with_ca_resolving(
        endpoint: &str,
        token: Option<String>,
        ca_pem: &[u8],
        resolve: &[HostAddress],
    ) -> Result<Client, ClientError> {
        let http = trusting(resolving(Self::builder(), resolve), ca_pem)?.build()?;
        Ok(Client { http, endpoint: endpoint.trim_end_matches('/').to_string(), token })
    }

    fn builder() -> reqwest::ClientBuilder {
        reqwest::Client::builder().tcp_nodelay(true).timeout(Duration::from_secs(30))
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
            Ok(problem) => ClientError::Problem(Box::new(problem)),
            Err(_) => ClientError::Unexpected { status, body },
        })
    }

    async fn json<T: serde::de::DeserializeOwned>(builder: reqwest::RequestBuilder) -> Result<T, ClientError> {
        Ok(Self::check(builder.send().await?).await?.json().await?)
    }

    /// Adds `?limit=` and `?cursor=` when set.
    fn paged(builder: reqwest::RequestBuilder, page: &Page) -> reqwest::RequestBuilder {
        let builder = match page.limit {
            Some(limit) => builder.query(&[("limit", limit)]),
            None => builder,
        };
        match &page.cursor {
            Some(cursor) => builder.query(&[("cursor", cursor)]),
            None => builder,
        }
    }

    /// Writes a new version; `key` is `[tenant, app, env, name]`.
    pub async fn put(
        &self,
        key: [&str; 4],
        content: Vec<u8>,
        options: PutOptions<'_>,
    ) -> Result<wire::WriteResult, ClientError> {
        self.write(key, content, options.into()).await
    }

    /// Writes a new version (`PUT` with the raw content), with a message or as a dry run.
    pub async fn write(
        &self,
        key: [&str; 4],
        content: Vec<u8>,
        options: WriteOptions<'_>,
    ) -> Result<wire::WriteResult, ClientError> {
        let mut builder = self.request(Method::PUT, &config_path(key, "")?).body(content);
        if let Some(format) = options.format {
            builder = builder.query(&[("format", format)]);
        }
        if let Some(message) = options.message {
            builder = builder.query(&[("message", message)]);
        }
        if options.dry_run {
            builder = builder.query(&[("dry_run", "true")]);
        }
        if let Some(version) = options.if_match {
            builder = builder.header(header::IF_MATCH, format!("\"{version}\""));
        }
        Self::json(builder).await
    }

    /// Reads the current version; `None` when absent. `serializable` reads the node's local state.
    pub async fn get(&self, key: [&str; 4], serializable: bool) -> Result<Option<FetchedConfig>, ClientError> {
        let mut builder = self.request(Method::GET, &config_path(key, "")?);
        if serializable {
            builder = builder.query(&[("consistency", "serializable")]);
        }
        let response = builder.send().await?;
        if response.status() == StatusCode::NOT_FOUND {
            let body = response.text().await?;
            return match serde_json::from_str::<wire::Problem>(&body) {
                Ok(p) if p.code == "not_found" => Ok(None),
                Ok(p) => Err(ClientError::Problem(Box::new(p))),
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

    /// Deletes a configuration (its history stays readable); `if_match` names the version
    /// expected current.
    pub async fn delete(&self, key: [&str; 4], if_match: Option<u64>) -> Result<wire::WriteResult, ClientError> {
        let mut builder = self.request(Method::DELETE, &config_path(key, "")?);
        if let Some(version) = if_match {
            builder = builder.header(header::IF_MATCH, format!("\"{version}\""));
        }
        Self::json(builder).await
    }

    /// Every live config in `tenant/app/env`, following the pages (1,000 names per request);
    /// the answer's `revision` is the last page's. [`Client::list_configs`] fetches one page.
    pub async fn list(&self, tenant: &str, app: &str, env: &str) -> Result<wire::ConfigList, ClientError> {
        let mut page = Page { limit: Some(1000), cursor: None };
        let mut all = self.list_configs([tenant, app, env], &page).await?;
        while let Some(cursor) = all.next_cursor.take() {
            page.cursor = Some(cursor);
            let next = self.list_configs([tenant, app, env], &page).await?;
            all.configs.extend(next.configs);
            all.revision = next.revision;
            all.next_cursor = next.next_cursor;
        }
        Ok(all)
    }

    /// One page of the live configs in `[tenant, app, env]`, by name.
    pub async fn list_configs(&self, env: [&str; 3], page: &Page) -> Result<wire::ConfigList, ClientError> {
        let path = format!("/api/v1/configs/{}", segments(&env)?);
        Self::json(Self::paged(self.request(Method::GET, &path), page)).await
    }

    /// This node's view of the cluster (admin API).
    pub async fn status(&self) -> Result<wire::ClusterStatus, ClientError> {
        Self::json(self.request(Method::GET, "/admin/status")).await
    }

    /// Makes an uninitialized node the single voter of a new cluster (admin API).
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

    /// Replaces the voter set; every id must already be a member (admin API).
    pub async fn set_voters(&self, voters: Vec<NodeId>) -> Result<wire::Membership, ClientError> {
        Self::json(self.request(Method::PUT, "/admin/voters").json(&wire::SetVoters { voters })).await
    }

    /// Removes a learner or a voter (admin API).
    pub async fn remove_member(&self, node_id: NodeId) -> Result<wire::Membership, ClientError> {
        Self::json(self.request(Method::DELETE, &format!("/admin/members/{node_id}"))).await
    }

    /// Hands leadership to voter `to`, or to the most caught-up voter (admin API).
    pub async fn transfer_leader(&self, to: Option<NodeId>) -> Result<wire::LeaderTransfer, ClientError> {
        Self::json(self.request(Method::POST, "/admin/leader").json(&wire::TransferLeader { to })).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn a_host_address_is_host_equals_ip_and_a_bad_one_says_what_to_fix() {
        let parsed = HostAddress::from_str("cfx-0.cfx-peers.prod.svc=127.0.0.1").unwrap();
        assert_eq!(parsed, HostAddress { host: "cfx-0.cfx-peers.prod.svc".into(), ip: [127, 0, 0, 1].into() });
        assert_eq!(HostAddress::from_str("a=::1").unwrap().ip, std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST));
        assert!(HostAddress::from_str("no-equals").unwrap_err().contains("HOST=IP"));
        assert!(HostAddress::from_str("a=10.0.0.300").unwrap_err().contains("not an IP address"));
        assert!(HostAddress::from_str("a:7001=10.0.0.3").unwrap_err().contains("not a host name"));
        assert!(HostAddress::from_str("=10.0.0.3").unwrap_err().contains("not a host name"));
    }

    #[test]
    fn names_are_percent_encoded_and_dot_segments_refused() {
        assert_eq!(segment("db.prod_v-2").unwrap(), "db.prod_v-2");
        assert_eq!(segment("a b/c?d").unwrap(), "a%20b%2Fc%3Fd");
        for bad in ["", ".", ".."] {
            assert!(matches!(segment(bad), Err(ClientError::InvalidName(_))), "{bad:?}");
        }
        assert_eq!(config_path(["t", "a", "e", "c"], "/release").unwrap(), "/api/v1/configs/t/a/e/c/release");
    }
}
