//! Backup destinations as `object_store` stores: S3-compatible buckets (credentials from a
//! Secret or the operator's environment) and local directories; where a backup's object goes
//! (its key) and how its location is shown to humans.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use object_store::{aws::AmazonS3Builder, local::LocalFileSystem, ObjectStore};

use crate::{
    crd::backup::{BackupDestination, S3Destination},
    resources::secret_value,
    Error, Result,
};

/// Keys of an S3 credentials Secret.
pub const ACCESS_KEY_ID: &str = "accessKeyId";
pub const SECRET_ACCESS_KEY: &str = "secretAccessKey";
pub const SESSION_TOKEN: &str = "sessionToken";

/// The object key of backup `backup` of `cluster` in `namespace`, below the destination's prefix.
pub fn key(destination: &BackupDestination, namespace: &str, cluster: &str, backup: &str) -> String {
    let prefix = destination.s3.as_ref().and_then(|s3| s3.prefix.as_deref()).map(|p| p.trim_matches('/'));
    match prefix {
        Some(prefix) if !prefix.is_empty() => format!("{prefix}/{namespace}/{cluster}/{backup}.cfxbackup"),
        _ => format!("{namespace}/{cluster}/{backup}.cfxbackup"),
    }
}

/// `s3://bucket/key` or `file:///dir/key`.
pub fn location(destination: &BackupDestination, key: &str) -> String {
    match (&destination.s3, &destination.local) {
        (Some(s3), _) => format!("s3://{}/{key}", s3.bucket),
        (None, Some(local)) => format!("file://{}/{key}", local.path.trim_end_matches('/')),
        (None, None) => key.to_string(),
    }
}

/// Opens the destination; an S3 credentials Secret is read from `namespace`.
pub async fn open(
    client: &kube::Client,
    namespace: &str,
    destination: &BackupDestination,
) -> Result<Arc<dyn ObjectStore>> {
    let store_error =
        |source: object_store::Error| Error::Store { location: location(destination, ""), source: Box::new(source) };
    match (&destination.s3, &destination.local) {
        (Some(s3), _) => {
            let credentials = match &s3.credentials_secret {
                Some(name) => Some(read_credentials(client, namespace, name).await?),
                None => None,
            };
            Ok(Arc::new(s3_builder(s3, credentials).build().map_err(store_error)?))
        }
        (None, Some(local)) => Ok(Arc::new(LocalFileSystem::new_with_prefix(&local.path).map_err(store_error)?)),
        (None, None) => Err(Error::NoDestination),
    }
}

/// Access key, secret key and optional session token.
struct Credentials {
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
}

async fn read_credentials(client: &kube::Client, namespace: &str, name: &str) -> Result<Credentials> {
    let secret = Api::<Secret>::namespaced(client.clone(), namespace).get(name).await?;
    let text = |key: &'static str| secret_value(&secret, key).and_then(|bytes| String::from_utf8(bytes).ok());
    let required =
        |key: &'static str| text(key).ok_or_else(|| Error::MissingCredential { secret: name.to_string(), key });
    Ok(Credentials {
        access_key_id: required(ACCESS_KEY_ID)?,
        secret_access_key: required(SECRET_ACCESS_KEY)?,
        session_token: text(SESSION_TOKEN),
    })
}

/// The S3 client: the operator's `AWS_*` environment, overridden by the spec and the Secret.
fn s3_builder(s3: &S3Destination, credentials: Option<Credentials>) -> AmazonS3Builder {
    let mut builder = AmazonS3Builder::from_env()
        .with_bucket_name(&s3.bucket)
        .with_region(s3.region.as_deref().unwrap_or("us-east-1"))
        .with_allow_http(s3.allow_http);
    if let Some(endpoint) = &s3.endpoint {
        // MinIO-like services address buckets by path, not by a virtual host name.
        builder = builder.with_endpoint(endpoint).with_virtual_hosted_style_request(false);
    }
    if let Some(credentials) = credentials {
        builder =
            builder.with_access_key_id(credentials.access_key_id).with_secret_access_key(credentials.secret_access_key);
        if let Some(token) = credentials.session_token {
            builder = builder.with_token(token);
        }
    }
    builder
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::backup::LocalDestination;

    fn s3(prefix: Option<&str>) -> BackupDestination {
        BackupDestination {
            s3: Some(S3Destination {
                bucket: "backups".into(),
                prefix: prefix.map(String::from),
                ..Default::default()
            }),
            local: None,
        }
    }

    #[test]
    fn keys_sit_below_the_prefix_by_namespace_and_cluster() {
        assert_eq!(key(&s3(Some("/conflux/")), "prod", "cfx", "b1"), "conflux/prod/cfx/b1.cfxbackup");
        assert_eq!(key(&s3(None), "prod", "cfx", "b1"), "prod/cfx/b1.cfxbackup");
        assert_eq!(location(&s3(None), "prod/cfx/b1.cfxbackup"), "s3://backups/prod/cfx/b1.cfxbackup");
        let local = BackupDestination { s3: None, local: Some(LocalDestination { path: "/backups/".into() }) };
        assert_eq!(location(&local, "prod/cfx/b1.cfxbackup"), "file:///backups/prod/cfx/b1.cfxbackup");
    }

    #[test]
    fn exactly_one_kind_of_destination_is_accepted() {
        let value = |d: &BackupDestination| serde_json::to_value(d).expect("serializes");
        let local = BackupDestination { s3: None, local: Some(LocalDestination { path: "/b".into() }) };
        assert!(BackupDestination::validate_cel(&value(&s3(None)), None).is_ok());
        assert!(BackupDestination::validate_cel(&value(&local), None).is_ok());
        let both = BackupDestination { s3: s3(None).s3, local: local.local.clone() };
        assert!(BackupDestination::validate_cel(&value(&both), None).is_err());
        assert!(BackupDestination::validate_cel(&value(&BackupDestination::default()), None).is_err());
    }
}
