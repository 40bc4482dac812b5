//! Restore: a new cluster whose `spec.bootstrap.fromBackup` names a backup starts with pod 0
//! restored from it (`POST /admin/restore`) instead of initialized empty. Resolves the backup
//! (a completed `ConfluxBackup` or a location), streams its object from the destination to the
//! node, and answers the new cluster id and the revision the node continues from.

use futures::TryStreamExt;
use kube::Api;
use object_store::path::Path;

use crate::{
    controller::Context,
    crd::{
        backup::{BackupLocation, BackupPhase, ConfluxBackup, FromBackup},
        RestoredFrom,
    },
    destination,
    nodes::Rebuilt,
    Error, Result,
};

/// What pod 0 became.
pub struct Restored {
    pub rebuilt: Rebuilt,
    pub from: RestoredFrom,
}

/// Where `from` points: a completed `ConfluxBackup`'s recorded destination and key, or the
/// location itself.
pub async fn resolve(context: &Context, namespace: &str, from: &FromBackup) -> Result<BackupLocation> {
    if let Some(location) = &from.location {
        return Ok(location.clone());
    }
    let name = from.backup_name.clone().unwrap_or_default();
    let not_restorable = |reason| Error::BackupNotRestorable { name: name.clone(), reason };
    let api: Api<ConfluxBackup> = Api::namespaced(context.client.clone(), namespace);
    let backup = api.get_opt(&name).await?.ok_or_else(|| not_restorable("it does not exist"))?;
    let status = backup.status.unwrap_or_default();
    if status.phase != Some(BackupPhase::Completed) {
        return Err(not_restorable("it has not completed"));
    }
    match (status.destination, status.key) {
        (Some(destination), Some(key)) => Ok(BackupLocation { destination, key }),
        _ => Err(not_restorable("its status records no destination and key")),
    }
}

/// Restores the pristine node at `endpoint` from `from`.
pub async fn restore(
    context: &Context,
    namespace: &str,
    from: &FromBackup,
    endpoint: &str,
    token: &str,
) -> Result<Restored> {
    let location = resolve(context, namespace, from).await?;
    let shown = destination::location(&location.destination, &location.key);
    let store = destination::open(&context.client, namespace, &location.destination).await?;
    let object = store
        .get(&Path::from(location.key.as_str()))
        .await
        .map_err(|source| Error::Store { location: shown.clone(), source: Box::new(source) })?;
    let body = object.into_stream().map_err(std::io::Error::other);
    let rebuilt = context
        .nodes
        .restore(endpoint, token, Box::pin(body))
        .await
        .map_err(|source| Error::Node { endpoint: endpoint.to_string(), source: Box::new(source) })?;
    let from = RestoredFrom { location: shown, revision: rebuilt.revision };
    Ok(Restored { rebuilt, from })
}
