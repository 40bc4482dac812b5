//! Watching: [`Watcher`], the long-poll loop a program runs to learn of every change to the
//! configs it receives (new versions, release changes that move it, deletions), across the nodes
//! of a cluster; and [`Client::config_watchers`], who watches a config.
//!
//! The watcher carries what the program holds (`known`) and the last revision it saw from one
//! `POST /api/v1/watch` to the next, so the node answers only with what differs. On a transport
//! error, a timeout or a 5xx (no leader, shutting down, behind `since_revision`) it moves to the
//! next node, with exponential backoff and full jitter; on 429 it waits as the node asks; any other
//! refusal is returned, since asking again cannot fix it.

use std::collections::BTreeMap;
use std::hash::BuildHasher;
use std::time::Duration;

use reqwest::{header, Method, StatusCode};

use super::{config_path, Client, ClientError, Page};
use crate::wire::{self, Held};

/// The first backoff ceiling after a failure; it doubles per consecutive failure.
const BACKOFF_START: Duration = Duration::from_millis(50);
/// The largest backoff ceiling.
const BACKOFF_CAP: Duration = Duration::from_secs(2);
/// How long connecting to a node may take before the watcher tries the next one.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How much longer than the long-poll (plus the node's jitter of up to 1/16) a request may take:
/// the node first waits to apply `since_revision` (up to its `--request-timeout-ms`, 5 s by
/// default), then parks the request.
const REQUEST_MARGIN: Duration = Duration::from_secs(10);

/// What to watch, and who is watching (the release rules resolve by labels and client id).
#[derive(Debug, Clone)]
pub struct WatchSpec {
    pub tenant: String,
    pub app: String,
    pub env: String,
    /// The configs to watch; `None`: every config of the env, including ones created later.
    /// A named config must exist, unless it is seeded as known absent (version 0) through
    /// [`Watcher::with_known`]; otherwise the node answers `not_found`.
    pub configs: Option<Vec<String>>,
    pub labels: BTreeMap<String, String>,
    /// A stable id of the client, which percent rules hash; without one no percent rule matches.
    pub client_id: Option<String>,
    /// How long the node may park one request when nothing changes (1 s to 300 s).
    pub timeout: Duration,
    /// Contents up to this size travel in the answer; `None`: the node's default (64 KiB).
    pub inline_max_bytes: Option<u64>,
}

impl Default for WatchSpec {
    fn default() -> Self {
        WatchSpec {
            tenant: String::new(),
            app: String::new(),
            env: String::new(),
            configs: None,
            labels: BTreeMap::new(),
            client_id: None,
            timeout: Duration::from_secs(30),
            inline_max_bytes: None,
        }
    }
}

/// A long-poll watch over a list of nodes. [`Watcher::next`] returns each answer that changes
/// something; the watcher keeps what the program holds and the last revision between calls.
pub struct Watcher {
    http: reqwest::Client,
    token: Option<String>,
    nodes: Vec<String>,
    current: usize,
    spec: WatchSpec,
    known: BTreeMap<String, Held>,
    revision: u64,
    backoff: Backoff,
}

impl Watcher {
    /// A watcher of `spec` through the client API of `nodes` (e.g. `http://127.0.0.1:7000`),
    /// starting at a random one of them so that many clients spread over the cluster. It holds
    /// nothing yet: the first answer lists every config the spec names (or the env has).
    ///
    /// An empty list, or a URL that cannot be parsed, makes [`Watcher::next`] fail at once with
    /// a [`ClientError::Http`] builder error.
    pub fn new(nodes: Vec<String>, spec: WatchSpec) -> Watcher {
        let http = reqwest::Client::builder()
            .tcp_nodelay(true)
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .expect("building the HTTP client");
        let nodes: Vec<String> = nodes.into_iter().map(|node| node.trim_end_matches('/').to_string()).collect();
        let mut backoff = Backoff::new();
        let current = backoff.below(nodes.len());
        Watcher { http, token: None, nodes, current, spec, known: BTreeMap::new(), revision: 0, backoff }
    }

    /// Sends `token` (a `client` token of the env is enough) with every poll.
    pub fn with_token(mut self, token: Option<String>) -> Watcher {
        self.token = token;
        self
    }

    /// Talks to `https://` nodes whose certificates are signed by a CA in `ca_pem`, and to no
    /// other https node.
    pub fn with_ca(mut self, ca_pem: &[u8]) -> Result<Watcher, super::ClientError> {
        let builder = reqwest::Client::builder().tcp_nodelay(true).connect_timeout(CONNECT_TIMEOUT);
        self.http = super::trusting(builder, ca_pem)?.build()?;
        Ok(self)
    }

    /// Starts from what the program already holds (e.g. resolved before watching) and the
    /// revision it was resolved at; the first answer then lists only what differs.
    pub fn with_known(mut self, known: BTreeMap<String, Held>, revision: u64) -> Watcher {
        self.known = known;
        self.revision = revision;
        self
    }

    /// What the program holds, by config name (version 0: known absent).
    pub fn known(&self) -> &BTreeMap<String, Held> {
        &self.known
    }

    /// The revision of the last answer, sent as `since_revision`; it never decreases.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The URL of the node the watcher uses now.
    pub fn node(&self) -> &str {
        self.nodes.get(self.current).map_or("", String::as_str)
    }

    /// Waits for the next answer that changes something (a config's version, checksum or
    /// existence) and takes it into [`Watcher::known`] and [`Watcher::revision`]. Answers with
    /// nothing new, unavailable nodes and 429s are handled here; the error is a refusal that
    /// asking again cannot fix (bad labels, a config that does not exist, ...).
    ///
    /// Cancel-safe: an answer is taken in only when it is returned.
    pub async fn next(&mut self) -> Result<wire::WatchAnswer, ClientError> {
        loop {
            let wait = match self.poll().await {
                Ok(answer) => {
                    self.backoff.reset();
                    self.take(&answer);
                    if !answer.changes.is_empty() || !answer.deleted.is_empty() {
                        return Ok(answer);
                    }
                    continue;
                }
                Err((error, Retry::Never)) => return Err(error),
                Err((error, Retry::NextNode)) => {
                    tracing::warn!(node = self.node(), error = %with_causes(&error), "watch failed; trying the next node");
                    self.rotate();
                    self.backoff.delay()
                }
                Err((error, Retry::After(after))) => {
                    tracing::warn!(node = self.node(), error = %with_causes(&error), "watch refused for now; waiting");
                    after.unwrap_or_else(|| self.backoff.delay())
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// One long-poll on the current node.
    async fn poll(&self) -> Result<wire::WatchAnswer, (ClientError, Retry)> {
        let client = Client { http: self.http.clone(), endpoint: self.node().to_string(), token: self.token.clone() };
        let request_timeout = self.spec.timeout.saturating_add(self.spec.timeout / 16).saturating_add(REQUEST_MARGIN);
        let builder = client.request(Method::POST, "/api/v1/watch").json(&self.request()).timeout(request_timeout);
        let response = builder.send().await.map_err(|error| {
            let retry = if error.is_builder() { Retry::Never } else { Retry::NextNode };
            (ClientError::Http(error), retry)
        })?;
        let retry = Retry::for_status(response.status(), retry_after(response.headers()));
        match Client::check(response).await {
            Ok(response) => response.json().await.map_err(|error| (ClientError::Http(error), Retry::NextNode)),
            Err(error) => Err((error, retry)),
        }
    }

    /// The body of the next long-poll.
    fn request(&self) -> wire::WatchRequest {
        wire::WatchRequest {
            tenant: self.spec.tenant.clone(),
            app: self.spec.app.clone(),
            env: self.spec.env.clone(),
            configs: self.spec.configs.clone(),
            labels: self.spec.labels.clone(),
            client_id: self.spec.client_id.clone(),
            known: self.known.clone(),
            since_revision: self.revision,
            timeout_ms: Some(u64::try_from(self.spec.timeout.as_millis()).unwrap_or(u64::MAX)),
            inline_max_bytes: self.spec.inline_max_bytes,
            progress_ms: None,
        }
    }

    /// Takes an answer in: each change is held as its version and checksum, each deleted config
    /// as version 0 (so its re-creation is an answer too); the revision only moves forward.
    fn take(&mut self, answer: &wire::WatchAnswer) {
        for change in &answer.changes {
            let held = Held::Exact { version: change.version, checksum: Some(change.checksum.clone()) };
            self.known.insert(change.config.clone(), held);
        }
        for name in &answer.deleted {
            self.known.insert(name.clone(), Held::Version(0));
        }
        self.revision = self.revision.max(answer.revision);
    }

    /// Moves to the next node of the list, round-robin.
    fn rotate(&mut self) {
        if !self.nodes.is_empty() {
            self.current = (self.current + 1) % self.nodes.len();
        }
    }
}

impl Client {
    /// One page of the clients watching a config, on the whole cluster, with counts per held
    /// version; `key` is `[tenant, app, env, name]`.
    pub async fn config_watchers(&self, key: [&str; 4], page: &Page) -> Result<wire::ConfigWatchers, ClientError> {
        Self::json(Self::paged(self.request(Method::GET, &config_path(key, "/clients")?), page)).await
    }
}

/// Whether, where and when a failed long-poll is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// On the next node, after a backoff delay: this one is unreachable, stopping, without a
    /// leader or behind.
    NextNode,
    /// On the same node, after its `Retry-After` (else a backoff delay): too many watchers now.
    After(Option<Duration>),
    /// Not at all: the request itself is refused.
    Never,
}

impl Retry {
    /// How to go on after an answer with this status (used only for failures).
    fn for_status(status: StatusCode, retry_after: Option<Duration>) -> Retry {
        if status == StatusCode::TOO_MANY_REQUESTS {
            Retry::After(retry_after)
        } else if status.is_server_error() {
            Retry::NextNode
        } else {
            Retry::Never
        }
    }
}

/// A `Retry-After` given in seconds (the form the nodes send).
fn retry_after(headers: &header::HeaderMap) -> Option<Duration> {
    let seconds = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(seconds))
}

/// An error and its causes (reqwest's own text leaves out why: refused, timed out, reset).
fn with_causes(error: &ClientError) -> String {
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(inner) = cause {
        let inner_text = inner.to_string();
        if !text.ends_with(&inner_text) {
            text = format!("{text}: {inner_text}");
        }
        cause = inner.source();
    }
    text
}

/// Exponential backoff with full jitter: after the n-th consecutive failure the delay is uniform
/// in `[0, min(BACKOFF_CAP, BACKOFF_START * 2^(n-1))]`.
struct Backoff {
    failures: u32,
    /// xorshift64* state; never 0.
    state: u64,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff { failures: 0, state: std::collections::hash_map::RandomState::new().hash_one(0u8) | 1 }
    }

    /// The upper bound of the next delay.
    fn ceiling(&self) -> Duration {
        BACKOFF_START.saturating_mul(1 << self.failures.min(16)).min(BACKOFF_CAP)
    }

    /// The delay before the next attempt; counts one more failure.
    fn delay(&mut self) -> Duration {
        let ceiling = u64::try_from(self.ceiling().as_micros()).unwrap_or(u64::MAX);
        self.failures = self.failures.saturating_add(1);
        Duration::from_micros(self.random() % (ceiling + 1))
    }

    /// After a success: the next failure starts from [`BACKOFF_START`] again.
    fn reset(&mut self) {
        self.failures = 0;
    }

    /// A number in `[0, bound)`, 0 when `bound` is 0.
    fn below(&mut self, bound: usize) -> usize {
        match u64::try_from(bound) {
            Ok(bound) if bound > 0 => usize::try_from(self.random() % bound).unwrap_or(0),
            _ => 0,
        }
    }

    fn random(&mut self) -> u64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watcher(nodes: &[&str]) -> Watcher {
        let spec = WatchSpec { tenant: "acme".into(), app: "shop".into(), env: "prod".into(), ..WatchSpec::default() };
        Watcher::new(nodes.iter().map(|node| node.to_string()).collect(), spec)
    }

    fn change(config: &str, version: u64, checksum: &str) -> wire::WatchChange {
        wire::WatchChange {
            config: config.into(),
            format: "json".into(),
            version,
            checksum: checksum.into(),
            size: 2,
            release: 1,
            content: Some("{}".into()),
        }
    }

    #[test]
    fn answers_update_what_is_held_and_the_revision_never_decreases() {
        let mut w = watcher(&["http://a"]);
        w.take(&wire::WatchAnswer {
            revision: 10,
            changes: vec![change("db", 1, "sha256:01"), change("flags", 3, "sha256:03")],
            deleted: vec![],
        });
        w.take(&wire::WatchAnswer { revision: 12, changes: vec![change("db", 2, "sha256:02")], deleted: vec![] });
        w.take(&wire::WatchAnswer { revision: 11, changes: vec![], deleted: vec!["flags".into()] });
        assert_eq!(w.revision(), 12, "an older answer (a lagging node) does not move the revision back");
        let expected = BTreeMap::from([
            ("db".to_string(), Held::Exact { version: 2, checksum: Some("sha256:02".into()) }),
            ("flags".to_string(), Held::Version(0)),
        ]);
        assert_eq!(w.known(), &expected);
        let request = w.request();
        assert_eq!((request.since_revision, request.known), (12, expected));
        assert_eq!(request.timeout_ms, Some(30_000));
        assert_eq!(serde_json::to_value(Held::Version(0)).unwrap(), serde_json::json!(0));
    }

    #[test]
    fn seeded_state_is_sent_with_the_first_request() {
        let known =
            BTreeMap::from([("db".to_string(), Held::Exact { version: 4, checksum: Some("sha256:04".into()) })]);
        let w = watcher(&["http://a/"]).with_known(known.clone(), 99);
        assert_eq!((w.revision(), w.known()), (99, &known));
        assert_eq!(w.request().since_revision, 99);
        assert_eq!(w.node(), "http://a", "a trailing slash is dropped");
    }

    #[test]
    fn nodes_rotate_round_robin_from_a_random_start() {
        let nodes = ["http://a", "http://b", "http://c"];
        let mut w = watcher(&nodes);
        let start = nodes.iter().position(|node| *node == w.node()).unwrap();
        for step in 1..=6 {
            w.rotate();
            assert_eq!(w.node(), nodes[(start + step) % 3]);
        }
        let mut empty = watcher(&[]);
        empty.rotate();
        assert_eq!(empty.node(), "");
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_full_jitter_and_resets() {
        let mut backoff = Backoff::new();
        let ceilings: Vec<u64> = (0..8)
            .map(|_| {
                let ceiling = backoff.ceiling();
                assert!(backoff.delay() <= ceiling);
                u64::try_from(ceiling.as_millis()).unwrap()
            })
            .collect();
        assert_eq!(ceilings, [50, 100, 200, 400, 800, 1600, 2000, 2000]);
        backoff.failures = u32::MAX;
        assert_eq!(backoff.ceiling(), BACKOFF_CAP);
        assert!(backoff.delay() <= BACKOFF_CAP);
        backoff.reset();
        assert_eq!(backoff.ceiling(), BACKOFF_START);
        let delays: Vec<Duration> = (0..64).map(|_| Backoff::new().delay()).collect();
        assert!(delays.iter().any(|delay| *delay != delays[0]), "delays are jittered");
    }

    #[test]
    fn failures_are_retried_on_the_next_node_on_the_same_node_later_or_never() {
        let later = Some(Duration::from_secs(3));
        assert_eq!(Retry::for_status(StatusCode::TOO_MANY_REQUESTS, later), Retry::After(later));
        assert_eq!(Retry::for_status(StatusCode::TOO_MANY_REQUESTS, None), Retry::After(None));
        for status in [500, 502, 503, 504] {
            assert_eq!(Retry::for_status(StatusCode::from_u16(status).unwrap(), later), Retry::NextNode, "{status}");
        }
        for status in [400, 404, 409, 422] {
            assert_eq!(Retry::for_status(StatusCode::from_u16(status).unwrap(), None), Retry::Never, "{status}");
        }
    }

    #[test]
    fn retry_after_is_read_in_seconds() {
        let mut headers = header::HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(header::RETRY_AFTER, header::HeaderValue::from_static("2"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
        headers.insert(header::RETRY_AFTER, header::HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"));
        assert_eq!(retry_after(&headers), None);
    }

    #[tokio::test]
    async fn an_empty_node_list_fails_at_once() {
        let error = watcher(&[]).next().await.unwrap_err();
        assert!(matches!(&error, ClientError::Http(e) if e.is_builder()), "{error}");
        assert_eq!(with_causes(&error), "request failed: builder error: relative URL without a base");
    }
}
