//! Releases and resolve: the rules deciding which version each client receives, their history,
//! the three ways to change them (each a compare-and-set on the current release number, sent as
//! `If-Match: "r<n>"`), and what one client receives for one config or for many.

use reqwest::{header, Method, StatusCode};

use super::{config_path, release_tag, segments, Client, ClientError, Page, Resolution, ResolveOptions};
use crate::wire;

/// `labels` as the query parameter `k=v,k2=v2` (reqwest percent-encodes it).
fn labels_query(labels: &std::collections::BTreeMap<String, String>) -> String {
    labels.iter().map(|(key, value)| format!("{key}={value}")).collect::<Vec<_>>().join(",")
}

impl Client {
    /// The release clients are served by now; its `number` is what the changes below expect.
    pub async fn get_release(&self, key: [&str; 4]) -> Result<wire::Release, ClientError> {
        Self::json(self.request(Method::GET, &config_path(key, "/release")?)).await
    }

    /// One release of the history.
    pub async fn release_by_number(&self, key: [&str; 4], number: u64) -> Result<wire::Release, ClientError> {
        Self::json(self.request(Method::GET, &config_path(key, &format!("/releases/{number}"))?)).await
    }

    /// One page of the release history, newest first (the cursor is a release number).
    pub async fn release_history(&self, key: [&str; 4], page: &Page) -> Result<wire::Page<wire::Release>, ClientError> {
        let builder = self.request(Method::GET, &config_path(key, "/releases")?);
        Self::json(Self::paged(builder, page)).await
    }

    /// Replaces the rule list (gray release, promotion) if release `expected_release` is still
    /// current; else `release_conflict` (412).
    pub async fn put_release(
        &self,
        key: [&str; 4],
        spec: &wire::ReleaseSpec,
        expected_release: u64,
    ) -> Result<wire::Released, ClientError> {
        let builder = self
            .request(Method::PUT, &config_path(key, "/release")?)
            .header(header::IF_MATCH, release_tag(expected_release))
            .json(spec);
        Self::json(builder).await
    }

    /// Makes one version the default for everyone, ending every gray rule, if release
    /// `expected_release` is still current.
    pub async fn publish_release(
        &self,
        key: [&str; 4],
        publish: &wire::Publish,
        expected_release: u64,
    ) -> Result<wire::Released, ClientError> {
        let builder = self
            .request(Method::POST, &config_path(key, "/release/publish")?)
            .header(header::IF_MATCH, release_tag(expected_release))
            .json(publish);
        Self::json(builder).await
    }

    /// Restores the rules of an earlier release, as a new release, if release
    /// `expected_release` is still current.
    pub async fn rollback_release(
        &self,
        key: [&str; 4],
        rollback: &wire::Rollback,
        expected_release: u64,
    ) -> Result<wire::Released, ClientError> {
        let builder = self
            .request(Method::POST, &config_path(key, "/release/rollback")?)
            .header(header::IF_MATCH, release_tag(expected_release))
            .json(rollback);
        Self::json(builder).await
    }

    /// What a client with `options.labels` and `options.client_id` receives for one config, or
    /// [`Resolution::NotModified`] when `options.if_none_match` is still current.
    pub async fn resolve(&self, key: [&str; 4], options: &ResolveOptions) -> Result<Resolution, ClientError> {
        let mut builder = self.request(Method::GET, &format!("/api/v1/resolve/{}", segments(&key)?));
        if !options.labels.is_empty() {
            builder = builder.query(&[("labels", labels_query(&options.labels))]);
        }
        if let Some(client_id) = &options.client_id {
            builder = builder.query(&[("client_id", client_id)]);
        }
        if let Some(revision) = options.min_revision {
            builder = builder.query(&[("min_revision", revision)]);
        }
        if options.serializable {
            builder = builder.query(&[("consistency", "serializable")]);
        }
        if let Some(tag) = &options.if_none_match {
            let quoted = if tag.starts_with('"') || tag.starts_with("W/") { tag.clone() } else { format!("\"{tag}\"") };
            builder = builder.header(header::IF_NONE_MATCH, quoted);
        }
        let response = builder.send().await?;
        let header_text = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let etag = header_text(header::ETAG.as_str());
        if response.status() == StatusCode::NOT_MODIFIED {
            let revision = header_text("x-conflux-revision").and_then(|v| v.parse().ok());
            let etag = etag.or_else(|| options.if_none_match.clone()).unwrap_or_default();
            return Ok(Resolution::NotModified { etag, revision });
        }
        let resolved = Self::check(response).await?.json().await?;
        Ok(Resolution::Content { resolved, etag })
    }

    /// What a client receives for many configs of `[tenant, app, env]` in one call: the ones
    /// `request.configs` names, or (when it is empty) one page of every live config.
    pub async fn resolve_many(
        &self,
        env: [&str; 3],
        request: &wire::ResolveMany,
        page: &Page,
        serializable: bool,
    ) -> Result<wire::ResolvedMany, ClientError> {
        let mut builder = self.request(Method::POST, &format!("/api/v1/resolve/{}", segments(&env)?)).json(request);
        if serializable {
            builder = builder.query(&[("consistency", "serializable")]);
        }
        Self::json(Self::paged(builder, page)).await
    }
}
