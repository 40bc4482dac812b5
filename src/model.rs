//! The configuration model: names (`tenant/app/env/name`), formats, and the per-config record.
//! Pure: no IO, no openraft, no HTTP.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest allowed name segment, in bytes.
pub const MAX_SEGMENT_LEN: usize = 128;

/// Why a name or a piece of content was refused; the message says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("{field} must be 1 to {MAX_SEGMENT_LEN} characters long, got {len}")]
    BadLength { field: &'static str, len: usize },
    #[error("{field} may contain only letters, digits, '.', '_' and '-' and must not start with '.': {value:?}")]
    BadCharacters { field: &'static str, value: String },
    #[error("unknown format {0:?}: use one of json, yaml, toml, properties, text")]
    UnknownFormat(String),
    #[error("content is not valid UTF-8 text (byte {offset})")]
    NotUtf8 { offset: usize },
    #[error("content is not valid JSON: {message} at line {line}, column {column}")]
    InvalidJson { message: String, line: usize, column: usize },
}

/// The address of one configuration: `tenant / app / env / name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ConfigKey {
    pub tenant: String,
    pub app: String,
    pub env: String,
    pub name: String,
}

/// The `tenant / app / env` namespace that configurations are listed under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    pub tenant: String,
    pub app: String,
    pub env: String,
}

fn check_segment(field: &'static str, value: &str) -> Result<(), ModelError> {
    if value.is_empty() || value.len() > MAX_SEGMENT_LEN {
        return Err(ModelError::BadLength { field, len: value.len() });
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if value.starts_with('.') || !value.chars().all(allowed) {
        return Err(ModelError::BadCharacters { field, value: value.to_string() });
    }
    Ok(())
}

impl Namespace {
    pub fn new(tenant: &str, app: &str, env: &str) -> Result<Self, ModelError> {
        check_segment("tenant", tenant)?;
        check_segment("app", app)?;
        check_segment("env", env)?;
        Ok(Self { tenant: tenant.into(), app: app.into(), env: env.into() })
    }
}

impl ConfigKey {
    pub fn new(tenant: &str, app: &str, env: &str, name: &str) -> Result<Self, ModelError> {
        let ns = Namespace::new(tenant, app, env)?;
        check_segment("name", name)?;
        Ok(Self { tenant: ns.tenant, app: ns.app, env: ns.env, name: name.into() })
    }

    pub fn namespace(&self) -> Namespace {
        Namespace { tenant: self.tenant.clone(), app: self.app.clone(), env: self.env.clone() }
    }
}

impl fmt::Display for ConfigKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}/{}", self.tenant, self.app, self.env, self.name)
    }
}

/// The format of a configuration's content, checked when it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Json,
    Yaml,
    Toml,
    Properties,
    Text,
}

impl Format {
    pub const ALL: [Format; 5] = [Format::Json, Format::Yaml, Format::Toml, Format::Properties, Format::Text];

    pub fn name(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Yaml => "yaml",
            Format::Toml => "toml",
            Format::Properties => "properties",
            Format::Text => "text",
        }
    }

    pub fn parse(name: &str) -> Result<Format, ModelError> {
        Format::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(name))
            .ok_or_else(|| ModelError::UnknownFormat(name.to_string()))
    }

    /// The media type served for this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Yaml => "application/yaml",
            Format::Toml => "application/toml",
            Format::Properties => "text/x-java-properties",
            Format::Text => "text/plain; charset=utf-8",
        }
    }

    /// The format a `Content-Type` header names, if any (parameters such as charset are ignored).
    pub fn from_content_type(content_type: &str) -> Option<Format> {
        let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        match essence.as_str() {
            "application/json" => Some(Format::Json),
            "application/yaml" | "application/x-yaml" | "text/yaml" => Some(Format::Yaml),
            "application/toml" => Some(Format::Toml),
            "text/x-java-properties" => Some(Format::Properties),
            "text/plain" => Some(Format::Text),
            _ => None,
        }
    }

    /// Checks that `content` is well-formed for this format. Every format must be UTF-8;
    /// JSON is parsed and an error names the line and column.
    pub fn validate(self, content: &[u8]) -> Result<(), ModelError> {
        let text = std::str::from_utf8(content).map_err(|e| ModelError::NotUtf8 { offset: e.valid_up_to() })?;
        if self == Format::Json {
            serde_json::from_str::<serde::de::IgnoredAny>(text).map_err(|e| ModelError::InvalidJson {
                message: e.to_string().split(" at line").next().unwrap_or_default().to_string(),
                line: e.line(),
                column: e.column(),
            })?;
        }
        Ok(())
    }
}

/// The record kept for each configuration. Versions are immutable and numbered from 1;
/// a delete clears `current_version` but keeps the counter so a version number is never reused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigRecord {
    pub format: Format,
    pub current_version: Option<u64>,
    pub latest_version: u64,
    /// Raft log index of the last change to this configuration.
    pub revision: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_segment_by_segment() {
        assert!(ConfigKey::new("acme", "shop", "prod", "db.json").is_ok());
        assert_eq!(ConfigKey::new("", "a", "b", "c"), Err(ModelError::BadLength { field: "tenant", len: 0 }));
        assert!(matches!(ConfigKey::new("a", "b/c", "d", "e"), Err(ModelError::BadCharacters { field: "app", .. })));
        assert!(matches!(ConfigKey::new("a", "b", "..", "e"), Err(ModelError::BadCharacters { field: "env", .. })));
        let long = "x".repeat(MAX_SEGMENT_LEN + 1);
        assert!(matches!(ConfigKey::new("a", "b", "c", &long), Err(ModelError::BadLength { field: "name", .. })));
    }

    #[test]
    fn json_errors_name_line_and_column() {
        let err = Format::Json.validate(b"{\n  \"a\": }").unwrap_err();
        assert!(matches!(err, ModelError::InvalidJson { line: 2, .. }), "{err:?}");
        assert!(Format::Json.validate(br#"{"a": 1}"#).is_ok());
        assert!(matches!(Format::Text.validate(&[0xff, 0xfe]), Err(ModelError::NotUtf8 { offset: 0 })));
    }

    #[test]
    fn formats_come_from_names_and_content_types() {
        assert_eq!(Format::parse("YAML"), Ok(Format::Yaml));
        assert!(Format::parse("xml").is_err());
        assert_eq!(Format::from_content_type("application/json; charset=utf-8"), Some(Format::Json));
        assert_eq!(Format::from_content_type("application/octet-stream"), None);
    }
}
