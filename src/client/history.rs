//! A config's history and schema: new versions from a JSON body, the version list, one version,
//! diffs between two versions, and the JSON Schema new versions must satisfy.

use reqwest::{header, Method};

use super::{config_path, Client, ClientError, CreateOptions, Page};
use crate::wire;

impl Client {
    /// Writes a new version from a JSON body (`POST .../versions`): the content, and optionally
    /// its format and a message.
    pub async fn create_version(
        &self,
        key: [&str; 4],
        version: &wire::NewVersion,
        options: CreateOptions,
    ) -> Result<wire::WriteResult, ClientError> {
        let mut builder = self.request(Method::POST, &config_path(key, "/versions")?).json(version);
        if options.dry_run {
            builder = builder.query(&[("dry_run", "true")]);
        }
        if let Some(expected) = options.if_match {
            builder = builder.header(header::IF_MATCH, format!("\"{expected}\""));
        }
        Self::json(builder).await
    }

    /// One page of the versions kept, newest first (the cursor is a version number).
    pub async fn versions(&self, key: [&str; 4], page: &Page) -> Result<wire::Page<wire::VersionInfo>, ClientError> {
        let builder = self.request(Method::GET, &config_path(key, "/versions")?);
        Self::json(Self::paged(builder, page)).await
    }

    /// One version with its content.
    pub async fn version(&self, key: [&str; 4], version: u64) -> Result<wire::Version, ClientError> {
        Self::json(self.request(Method::GET, &config_path(key, &format!("/versions/{version}"))?)).await
    }

    /// What changed from version `from` to version `to`: a unified diff, and path changes when
    /// both are structured (json, yaml, toml, properties).
    pub async fn diff(&self, key: [&str; 4], from: u64, to: u64) -> Result<wire::Diff, ClientError> {
        let builder = self.request(Method::GET, &config_path(key, "/diff")?).query(&[("from", from), ("to", to)]);
        Self::json(builder).await
    }

    /// The config's JSON Schema as stored; `not_found` when the config has none.
    pub async fn get_schema(&self, key: [&str; 4]) -> Result<String, ClientError> {
        let response = self.request(Method::GET, &config_path(key, "/schema")?).send().await?;
        Ok(Self::check(response).await?.text().await?)
    }

    /// Sets the JSON Schema every later version must satisfy (draft 2020-12 unless `$schema`
    /// names another); the config must exist.
    pub async fn put_schema(&self, key: [&str; 4], schema: Vec<u8>) -> Result<wire::Changed, ClientError> {
        let builder = self
            .request(Method::PUT, &config_path(key, "/schema")?)
            .header(header::CONTENT_TYPE, "application/schema+json")
            .body(schema);
        Self::json(builder).await
    }

    /// Removes the config's JSON Schema: later versions are no longer checked.
    pub async fn delete_schema(&self, key: [&str; 4]) -> Result<wire::Changed, ClientError> {
        Self::json(self.request(Method::DELETE, &config_path(key, "/schema")?)).await
    }
}
