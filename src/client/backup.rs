//! Backup, restore and quorum-loss recovery (admin API on the peer listener).

use std::time::Duration;

use reqwest::Method;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::{Client, ClientError};
use crate::backup::Decoder;
use crate::wire;

/// How long a backup or restore may take over the wire (a backup streams the whole state).
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(3600);

/// Options of [`Client::backup_with`].
#[derive(Debug, Clone, Copy, Default)]
pub struct BackupOptions {
    /// Make the node first catch up with the leader (a read index), so the backup holds every
    /// change acknowledged before the call. Without it the node backs up what it has applied,
    /// which is what a node that lost its quorum can still do.
    pub linearizable: bool,
}

impl Client {
    /// Streams a backup of the node's applied state into `out` (`GET /admin/backup`), checking
    /// the file as it arrives: the call fails unless `out` received a whole, intact backup.
    pub async fn backup(&self, out: impl AsyncWrite + Unpin) -> Result<wire::BackupSummary, ClientError> {
        self.backup_with(BackupOptions::default(), out).await
    }

    /// [`Client::backup`] with options.
    pub async fn backup_with(
        &self,
        options: BackupOptions,
        mut out: impl AsyncWrite + Unpin,
    ) -> Result<wire::BackupSummary, ClientError> {
        let mut builder = self.request(Method::GET, "/admin/backup").timeout(TRANSFER_TIMEOUT);
        if options.linearizable {
            builder = builder.query(&[("linearizable", "true")]);
        }
        let mut response = Self::check(builder.send().await?).await?;
        let mut decoder = Decoder::verifying();
        let mut file = Sha256::new();
        while let Some(chunk) = response.chunk().await? {
            decoder.feed(&chunk)?;
            file.update(&chunk);
            out.write_all(&chunk).await.map_err(ClientError::Write)?;
        }
        out.flush().await.map_err(ClientError::Write)?;
        let backup = decoder.finish()?;
        Ok(wire::BackupSummary {
            cluster_id: backup.meta.cluster_id,
            revision: backup.meta.revision,
            bytes: backup.bytes,
            sha256: crate::backup::hex(&file.finalize()),
            created_at_ms: backup.meta.created_at_ms,
        })
    }

    /// Restores a backup file into a pristine node (started with `--join`, never initialized),
    /// which becomes the single voter of a new cluster (`POST /admin/restore`).
    /// `backup` is the file's bytes, or a stream of them (`reqwest::Body::wrap_stream`), which is
    /// sent as it arrives: the caller never holds the whole backup.
    pub async fn restore(&self, backup: impl Into<reqwest::Body>) -> Result<wire::RestoreResult, ClientError> {
        let builder = self
            .request(Method::POST, "/admin/restore")
            .timeout(TRANSFER_TIMEOUT)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(backup);
        Self::json(builder).await
    }

    /// After quorum loss: makes this node the single voter of a new cluster holding everything it
    /// had applied (`POST /admin/recover`). `cluster_id` must name the node's current cluster.
    pub async fn recover(&self, cluster_id: &str) -> Result<wire::RecoverResult, ClientError> {
        let body = wire::RecoverRequest { cluster_id: cluster_id.to_string() };
        Self::json(self.request(Method::POST, "/admin/recover").json(&body)).await
    }
}
