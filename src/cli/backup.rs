//! `conflux backup`, `conflux restore` and `conflux cluster recover`.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::client::{BackupOptions, Client};
use crate::wire;

/// Writes a backup to `out` (`-`: standard output) and prints its summary on standard error. A
/// file is written beside its destination first and renamed once the backup is whole and
/// checked, so a failed backup never leaves a file that looks like one.
pub async fn backup(client: &Client, out: &Path, linearizable: bool) -> anyhow::Result<()> {
    let options = BackupOptions { linearizable };
    let summary = if out == Path::new("-") {
        client.backup_with(options, tokio::io::stdout()).await?
    } else {
        let partial = partial_path(out);
        let file =
            tokio::fs::File::create(&partial).await.with_context(|| format!("creating {}", partial.display()))?;
        let written = write_file(client, options, file).await;
        let summary = match written {
            Ok(summary) => summary,
            Err(e) => {
                let _ = std::fs::remove_file(&partial);
                return Err(e);
            }
        };
        std::fs::rename(&partial, out)
            .with_context(|| format!("renaming {} to {}", partial.display(), out.display()))?;
        summary
    };
    eprintln!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}

async fn write_file(
    client: &Client,
    options: BackupOptions,
    mut file: tokio::fs::File,
) -> anyhow::Result<wire::BackupSummary> {
    let summary = client.backup_with(options, &mut file).await?;
    file.sync_all().await.context("syncing the backup file")?;
    Ok(summary)
}

fn partial_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".partial");
    out.with_file_name(name)
}

/// Reads a backup from `from` (`-`: standard input) and restores it into the node.
pub async fn restore(client: &Client, from: &Path) -> anyhow::Result<wire::RestoreResult> {
    let backup = if from == Path::new("-") {
        crate::cli::read_content(None, None)?
    } else {
        std::fs::read(from).with_context(|| format!("reading {}", from.display()))?
    };
    Ok(client.restore(backup).await?)
}
