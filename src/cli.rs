//! The `conflux` command line: `serve` runs a node; the other subcommands are a client of the
//! client API (`get`, `put`, `delete`, `list`) and the admin API (`cluster ...`). Output
//! formatting lives here; every operation goes through [`crate::client::Client`].

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};

use crate::client::{Client, PutOptions};
use crate::config::NodeConfig;
use crate::telemetry::LogFormat;
use crate::types::NodeId;

#[derive(Debug, Parser)]
#[command(name = "conflux", version, about = "Conflux: a distributed configuration center on Raft and RocksDB")]
pub struct Cli {
    /// Log format.
    #[arg(long, global = true, env = "CONFLUX_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node. With no cluster flags, bootstraps a single-node cluster in ./data.
    Serve(NodeConfig),
    /// Print a configuration's current content.
    Get {
        #[command(flatten)]
        target: ClientTarget,
        /// tenant/app/env/name
        key: String,
        /// Read this node's local state instead of a linearizable read.
        #[arg(long)]
        serializable: bool,
    },
    /// Write a new version of a configuration.
    Put {
        #[command(flatten)]
        target: ClientTarget,
        /// tenant/app/env/name
        key: String,
        /// Content; `-` or absent reads standard input.
        value: Option<String>,
        /// Read the content from this file.
        #[arg(long, conflicts_with = "value")]
        file: Option<PathBuf>,
        /// json, yaml, toml, properties or text.
        #[arg(long, default_value = "text")]
        format: String,
        /// Only write if the current version is this one.
        #[arg(long)]
        if_version: Option<u64>,
    },
    /// Delete a configuration.
    Delete {
        #[command(flatten)]
        target: ClientTarget,
        /// tenant/app/env/name
        key: String,
        /// Only delete if the current version is this one.
        #[arg(long)]
        if_version: Option<u64>,
    },
    /// List the configurations in tenant/app/env.
    List {
        #[command(flatten)]
        target: ClientTarget,
        /// tenant/app/env
        namespace: String,
    },
    /// Inspect and change cluster membership (admin API on the peer listener).
    Cluster {
        #[command(flatten)]
        target: AdminTarget,
        #[command(subcommand)]
        command: ClusterCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Show this node's view of the cluster.
    Status,
    /// Make an uninitialized node the single voter of a new cluster.
    Init,
    /// Add a node as a learner.
    AddLearner {
        node_id: NodeId,
        /// The new node's peer URL, e.g. http://127.0.0.1:7011
        peer_url: String,
        /// Wait up to this many seconds for it to catch up.
        #[arg(long)]
        wait: Option<f64>,
    },
    /// Replace the voter set (ids must already be members).
    SetVoters {
        #[arg(required = true, num_args = 1..)]
        voters: Vec<NodeId>,
    },
    /// Remove a learner or voter.
    Remove { node_id: NodeId },
}

/// Where client commands connect.
#[derive(Debug, Args)]
pub struct ClientTarget {
    /// Client API URL of any node.
    #[arg(long, env = "CONFLUX_ENDPOINT", default_value = "http://127.0.0.1:7000")]
    pub endpoint: String,
}

/// Where admin commands connect, and with which token.
#[derive(Debug, Args)]
pub struct AdminTarget {
    /// Peer (admin) URL of any node.
    #[arg(long, env = "CONFLUX_ADMIN_ENDPOINT", default_value = "http://127.0.0.1:7001")]
    pub endpoint: String,
    /// File with the cluster token [default: $CONFLUX_CLUSTER_TOKEN, else ./data/cluster-token].
    #[arg(long, env = "CONFLUX_CLUSTER_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
}

impl AdminTarget {
    fn client(&self) -> anyhow::Result<Client> {
        let token = match (&self.token_file, std::env::var("CONFLUX_CLUSTER_TOKEN")) {
            (Some(path), _) => std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
            (None, Ok(token)) => token,
            (None, Err(_)) => std::fs::read_to_string("data/cluster-token").context(
                "no cluster token: pass --token-file, set CONFLUX_CLUSTER_TOKEN, or run from the directory holding data/",
            )?,
        };
        Ok(Client::new(&self.endpoint, Some(token.trim().to_string())))
    }
}

fn split_key<const N: usize>(text: &str, what: &str) -> anyhow::Result<[String; N]> {
    let parts: Vec<String> = text.split('/').map(str::to_string).collect();
    match parts.try_into() {
        Ok(parts) => Ok(parts),
        Err(_) => bail!("{what} must have {N} parts separated by '/', got {text:?}"),
    }
}

fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn read_content(value: Option<String>, file: Option<PathBuf>) -> anyhow::Result<Vec<u8>> {
    match (value, file) {
        (_, Some(path)) => std::fs::read(&path).with_context(|| format!("reading {}", path.display())),
        (Some(v), None) if v != "-" => Ok(v.into_bytes()),
        _ => {
            let mut buf = Vec::new();
            std::io::stdin().read_to_end(&mut buf).context("reading standard input")?;
            Ok(buf)
        }
    }
}

/// Runs a client subcommand (everything but `serve`).
pub async fn run_client(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(_) => bail!("serve runs a node; it is not a client command"),
        Command::Get { target, key, serializable } => {
            let k: [String; 4] = split_key(&key, "key")?;
            let client = Client::new(&target.endpoint, None);
            match client.get([&k[0], &k[1], &k[2], &k[3]], serializable).await? {
                Some(config) => std::io::stdout().write_all(&config.content)?,
                None => bail!("config {key} not found"),
            }
        }
        Command::Put { target, key, value, file, format, if_version } => {
            let k: [String; 4] = split_key(&key, "key")?;
            let content = read_content(value, file)?;
            let client = Client::new(&target.endpoint, None);
            let options = PutOptions { format: Some(&format), if_match: if_version };
            print_json(&client.put([&k[0], &k[1], &k[2], &k[3]], content, options).await?)?;
        }
        Command::Delete { target, key, if_version } => {
            let k: [String; 4] = split_key(&key, "key")?;
            let client = Client::new(&target.endpoint, None);
            print_json(&client.delete([&k[0], &k[1], &k[2], &k[3]], if_version).await?)?;
        }
        Command::List { target, namespace } => {
            let ns: [String; 3] = split_key(&namespace, "namespace")?;
            let listing = Client::new(&target.endpoint, None).list(&ns[0], &ns[1], &ns[2]).await?;
            for config in listing.configs {
                println!("{}\tv{}\t{}\trev {}", config.name, config.version, config.format, config.revision);
            }
        }
        Command::Cluster { target, command } => {
            let client = target.client()?;
            match command {
                ClusterCommand::Status => print_json(&client.status().await?)?,
                ClusterCommand::Init => print_json(&client.init().await?)?,
                ClusterCommand::AddLearner { node_id, peer_url, wait } => {
                    let wait = wait.map(Duration::from_secs_f64);
                    print_json(&client.add_learner(node_id, &peer_url, wait).await?)?
                }
                ClusterCommand::SetVoters { voters } => print_json(&client.set_voters(voters).await?)?,
                ClusterCommand::Remove { node_id } => print_json(&client.remove_member(node_id).await?)?,
            }
        }
    }
    Ok(())
}
