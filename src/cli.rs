//! The `conflux` command line: `serve` runs a node; the other subcommands are a client of the
//! client API (configs and their versions, schemas, releases, resolve, the hierarchy, the audit
//! log) and the admin API (`cluster ...`). Output formatting lives here; every operation goes
//! through [`crate::client::Client`].
//!
//! This file defines the commands and dispatches them; `cli/configs.rs` (versions, diff,
//! schema), `cli/releases.rs` (release, resolve), `cli/hierarchy.rs` (tenant, app, env, audit)
//! run them, `cli/backup.rs` backs up, restores and recovers, and `cli/output.rs` formats
//! tables, times and JSON.

pub mod backup;
pub mod configs;
pub mod hierarchy;
pub mod output;
pub mod releases;
pub mod tokens;
pub mod watch;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};

use crate::client::{Client, ClientError, Page, WriteOptions};
use crate::config::NodeConfig;
use crate::telemetry::LogFormat;
use crate::types::NodeId;
use output::{print_json, print_next_cursor, Table};

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
    Serve(Box<NodeConfig>),
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
    /// Write a new version of a configuration
    ///
    /// The content is parsed with its format's parser and checked against the config's JSON
    /// Schema, if it has one; the answer is the new version and revision as JSON.
    ///
    /// Example:
    ///   conflux put acme/shop/prod/database --format json --message 'pool 20' '{"pool": 20}'
    #[command(verbatim_doc_comment)]
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
        /// json, yaml, toml, properties or text [default: the config's current format, else text].
        #[arg(long)]
        format: Option<String>,
        /// Only write if the current version is this one.
        #[arg(long)]
        if_version: Option<u64>,
        /// A message recorded with the version (shown by `conflux versions`).
        #[arg(long)]
        message: Option<String>,
        /// Check the write (format, schema, quotas, --if-version) and write nothing.
        #[arg(long)]
        dry_run: bool,
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
        #[command(flatten)]
        page: PageArgs,
    },
    /// List the versions kept of a configuration, newest first
    ///
    /// Example:
    ///   conflux versions acme/shop/prod/database --limit 10
    #[command(verbatim_doc_comment)]
    Versions {
        #[command(flatten)]
        target: ClientTarget,
        /// tenant/app/env/name
        key: String,
        #[command(flatten)]
        page: PageArgs,
        /// Print the page as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print one version's content
    ///
    /// Example:
    ///   conflux version acme/shop/prod/database 1
    #[command(verbatim_doc_comment)]
    Version {
        #[command(flatten)]
        target: ClientTarget,
        /// tenant/app/env/name
        key: String,
        /// The version number.
        version: u64,
    },
    /// Show what changed between two versions
    ///
    /// Prints a unified diff; with --json, the path-level changes (JSON pointers with old and
    /// new values), which exist when both versions are json, yaml, toml or properties.
    ///
    /// Example:
    ///   conflux diff acme/shop/prod/database 1 2
    #[command(verbatim_doc_comment)]
    Diff {
        #[command(flatten)]
        target: ClientTarget,
        /// tenant/app/env/name
        key: String,
        /// The older version.
        from: u64,
        /// The newer version.
        to: u64,
        /// Print the path changes as JSON instead of the unified diff.
        #[arg(long)]
        json: bool,
    },
    /// Read, set or clear a configuration's JSON Schema
    ///
    /// Example:
    ///   conflux schema set acme/shop/prod/database --file database.schema.json
    #[command(verbatim_doc_comment)]
    Schema {
        #[command(flatten)]
        target: ClientTarget,
        #[command(subcommand)]
        command: configs::SchemaCommand,
    },
    /// Gray-release, publish and roll back versions of a configuration
    ///
    /// Example:
    ///   conflux release publish acme/shop/prod/database 2 --message 'pool 20 for everyone'
    #[command(verbatim_doc_comment)]
    Release {
        #[command(flatten)]
        target: ClientTarget,
        #[command(subcommand)]
        command: releases::ReleaseCommand,
    },
    /// Show what a client receives, by its labels and id
    ///
    /// With tenant/app/env/config, prints the content the client receives (--json: the whole
    /// answer, with version, release and the rule that matched). With tenant/app/env and --all
    /// or config names, resolves many configs in one call and prints JSON.
    ///
    /// Examples:
    ///   conflux resolve acme/shop/prod/database --labels canary=true --client-id web-1
    ///   conflux resolve acme/shop/prod --all --labels region=eu --client-id web-1
    #[command(verbatim_doc_comment)]
    Resolve(releases::ResolveArgs),
    /// Print the changes to what a client receives from tenant/app/env as they happen
    ///
    /// One line per new version, release change that moves this client, or deletion (--json:
    /// one JSON object per line), until interrupted. Without config names, watches every config
    /// of the env, including ones created later. --endpoint takes several nodes, separated by
    /// commas: the watch moves to the next one when a node fails.
    ///
    /// Example:
    ///   conflux watch acme/shop/prod database --labels canary=true --client-id web-1
    #[command(verbatim_doc_comment)]
    Watch(watch::WatchArgs),
    /// Read a tenant's audit log, oldest first
    ///
    /// Example:
    ///   conflux audit acme --action release.publish --resource acme/shop/prod
    #[command(verbatim_doc_comment)]
    Audit(hierarchy::AuditArgs),
    /// List, show, create (or update) and delete tenants
    ///
    /// Example:
    ///   conflux tenant create acme --description 'ACME Corp' --max-configs 500
    #[command(verbatim_doc_comment)]
    Tenant {
        #[command(flatten)]
        target: ClientTarget,
        #[command(subcommand)]
        command: hierarchy::TenantCommand,
    },
    /// List, show, create (or update) and delete apps (tenant/app)
    ///
    /// Example:
    ///   conflux app create acme/shop --description 'web shop'
    #[command(verbatim_doc_comment)]
    App {
        #[command(flatten)]
        target: ClientTarget,
        #[command(subcommand)]
        command: hierarchy::AppCommand,
    },
    /// List, show, create (or update) and delete envs (tenant/app/env)
    ///
    /// Example:
    ///   conflux env create acme/shop/prod
    #[command(verbatim_doc_comment)]
    Env {
        #[command(flatten)]
        target: ClientTarget,
        #[command(subcommand)]
        command: hierarchy::EnvCommand,
    },
    /// Create, list, show and revoke access tokens
    ///
    /// Example:
    ///   conflux token create --role editor --scope acme/shop --name alice > alice.token
    ///   conflux token list
    #[command(verbatim_doc_comment)]
    Token {
        #[command(flatten)]
        target: ClientTarget,
        #[command(subcommand)]
        command: tokens::TokenCommand,
    },
    /// Write a backup of a node's applied state to a file (admin API on the peer listener)
    ///
    /// The backup holds every tenant, app, env, config, version, schema, release, audit record
    /// and token record at one revision, read from one consistent snapshot of the node. Any
    /// member can be backed up, one that lost its quorum too. A summary (cluster id, revision,
    /// size, sha256 of the file) is printed on standard error.
    ///
    /// Example:
    ///   conflux backup --endpoint http://10.0.0.5:7001 --out conflux.backup
    #[command(verbatim_doc_comment)]
    Backup {
        #[command(flatten)]
        target: AdminTarget,
        /// The file to write (`-`: standard output); written beside it first, renamed once whole.
        #[arg(long)]
        out: PathBuf,
        /// First catch up with the leader, so the backup holds every change acknowledged before
        /// it started (needs a quorum).
        #[arg(long)]
        linearizable: bool,
    },
    /// Restore a backup into a pristine node, which becomes the single voter of a new cluster
    ///
    /// The node must have been started with --join and never initialized. It answers with the
    /// new cluster's id; its revisions continue above the backup's. Add the other members as
    /// for any cluster (cluster add-learner, cluster set-voters).
    ///
    /// Example:
    ///   conflux restore --endpoint http://10.0.0.9:7001 --from conflux.backup
    #[command(verbatim_doc_comment)]
    Restore {
        #[command(flatten)]
        target: AdminTarget,
        /// The backup file (`-`: standard input).
        #[arg(long)]
        from: PathBuf,
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
    /// Hand leadership to another voter (the most caught-up one when none is named), e.g. before
    /// maintenance on the leader's machine. Writes pause for about one round trip.
    TransferLeader { node_id: Option<NodeId> },
    /// After losing quorum, make this node the single voter of a new cluster
    ///
    /// A deliberate, last-resort action: the node keeps every change it had applied (entries
    /// it had not applied are dropped) and founds a new cluster with a new id; the lost members
    /// must never rejoin with their old data. Refused while the cluster still has a quorum.
    /// Pick the survivor with the highest applied_index (cluster status).
    ///
    /// Example:
    ///   conflux cluster recover --endpoint http://10.0.0.5:7001 --confirm 5f3c…
    #[command(verbatim_doc_comment)]
    Recover {
        /// The id of the cluster this node belongs to now (cluster status shows it).
        #[arg(long)]
        confirm: String,
    },
}

/// The token a command sends: from `--token-file`, else `$CONFLUX_TOKEN`, else the bootstrap admin
/// token a single node keeps in ./data/admin-token, else none.
pub(crate) fn credential(token_file: Option<&std::path::Path>) -> anyhow::Result<Option<String>> {
    let token = match token_file {
        Some(path) => Some(std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?),
        None => std::env::var("CONFLUX_TOKEN").ok().or_else(|| std::fs::read_to_string("data/admin-token").ok()),
    };
    Ok(token.map(|t| t.trim().to_string()).filter(|t| !t.is_empty()))
}

/// Where client commands connect, and with which token.
#[derive(Debug, Args)]
pub struct ClientTarget {
    /// Client API URL of any node.
    #[arg(long, global = true, env = "CONFLUX_ENDPOINT", default_value = "http://127.0.0.1:7000")]
    pub endpoint: String,
    /// File with the token to send [default: $CONFLUX_TOKEN, else ./data/admin-token].
    #[arg(long, global = true, env = "CONFLUX_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// PEM file with the CA(s) an https endpoint's certificate must be signed by (no other root
    /// is trusted).
    #[arg(long, global = true, env = "CONFLUX_CA_FILE")]
    pub ca_file: Option<PathBuf>,
}

impl ClientTarget {
    fn client(&self) -> anyhow::Result<Client> {
        connect(&self.endpoint, credential(self.token_file.as_deref())?, self.ca_file.as_deref())
    }
}

/// A client of `endpoint`; with `ca_file`, trusting only the CAs in it.
pub(crate) fn connect(
    endpoint: &str,
    token: Option<String>,
    ca_file: Option<&std::path::Path>,
) -> anyhow::Result<Client> {
    match ca_file {
        None => Ok(Client::new(endpoint, token)),
        Some(path) => {
            let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            Client::with_ca(endpoint, token, &pem).with_context(|| format!("using {} as the CA", path.display()))
        }
    }
}

/// Which page of a listing to print.
#[derive(Debug, Args)]
pub struct PageArgs {
    /// At most this many items (1 to 1000) [default: 100].
    #[arg(long)]
    pub limit: Option<usize>,
    /// Start after this cursor (printed as `next cursor:` by the previous page).
    #[arg(long)]
    pub cursor: Option<String>,
}

impl PageArgs {
    fn page(&self) -> Page {
        Page { limit: self.limit, cursor: self.cursor.clone() }
    }
}

/// Where admin commands connect, and with which (cluster-wide admin) token.
#[derive(Debug, Args)]
pub struct AdminTarget {
    /// Peer (admin) URL of any node.
    #[arg(long, env = "CONFLUX_ADMIN_ENDPOINT", default_value = "http://127.0.0.1:7001")]
    pub endpoint: String,
    /// File with a cluster-wide admin token [default: $CONFLUX_TOKEN, else ./data/admin-token].
    #[arg(long, env = "CONFLUX_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// PEM file with the CA(s) an https endpoint's certificate must be signed by.
    #[arg(long, env = "CONFLUX_CA_FILE")]
    pub ca_file: Option<PathBuf>,
}

impl AdminTarget {
    fn client(&self) -> anyhow::Result<Client> {
        let token = credential(self.token_file.as_deref())?
            .context("no admin token: pass --token-file, set CONFLUX_TOKEN, or run from the directory holding data/")?;
        connect(&self.endpoint, Some(token), self.ca_file.as_deref())
    }
}

/// A `/`-separated key of exactly `N` parts (`tenant/app/env/config` and its prefixes).
pub struct Key<const N: usize>([String; N]);

impl<const N: usize> Key<N> {
    /// Splits `text`; `what` names it in the error (e.g. `tenant/app/env/config`).
    pub fn parse(text: &str, what: &str) -> anyhow::Result<Self> {
        let parts: Vec<String> = text.split('/').map(str::to_string).collect();
        if parts.iter().any(String::is_empty) {
            bail!("{what} has an empty part: {text:?}");
        }
        match parts.try_into() {
            Ok(parts) => Ok(Key(parts)),
            Err(_) => bail!("expected {what} ({N} parts separated by '/'), got {text:?}"),
        }
    }

    /// The parts, as the client's methods take them.
    pub fn parts(&self) -> [&str; N] {
        std::array::from_fn(|i| self.0[i].as_str())
    }
}

/// Reads `value`, else `file`, else standard input (also for `value` `-`).
pub fn read_content(value: Option<String>, file: Option<PathBuf>) -> anyhow::Result<Vec<u8>> {
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

/// Adds the located errors of a problem (schema violations, parse errors) to its message.
fn with_problem_details(error: anyhow::Error) -> anyhow::Error {
    let Some(ClientError::Problem(problem)) = error.downcast_ref::<ClientError>() else { return error };
    if problem.errors.is_empty() {
        return error;
    }
    let mut text = format!("{error:#}");
    // A detail the problem's own text already says (a parse error's line and column) is not repeated.
    for detail in problem.errors.iter().filter(|d| !problem.detail.contains(&d.message)) {
        let place = match (&detail.pointer, detail.line, detail.column) {
            (Some(pointer), _, _) => format!("at {}", if pointer.is_empty() { "(root)" } else { pointer }),
            (None, Some(line), Some(column)) => format!("line {line}, column {column}"),
            (None, Some(line), None) => format!("line {line}"),
            _ => String::new(),
        };
        let separator = if place.is_empty() { "" } else { ": " };
        text.push_str(&format!("\n  {place}{separator}{}", detail.message));
    }
    anyhow::anyhow!(text)
}

/// Runs a client subcommand (everything but `serve`).
pub async fn run_client(command: Command) -> anyhow::Result<()> {
    match dispatch(command).await {
        // The reader went away (`conflux audit acme | head`): not worth an error.
        Err(e) if e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) => {
            Ok(())
        }
        outcome => outcome.map_err(with_problem_details),
    }
}

async fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(_) => bail!("serve runs a node; it is not a client command"),
        Command::Get { target, key, serializable } => {
            let k = Key::<4>::parse(&key, "tenant/app/env/name")?;
            match target.client()?.get(k.parts(), serializable).await? {
                Some(config) => std::io::stdout().write_all(&config.content)?,
                None => bail!("config {key} not found"),
            }
        }
        Command::Put { target, key, value, file, format, if_version, message, dry_run } => {
            let k = Key::<4>::parse(&key, "tenant/app/env/name")?;
            let content = read_content(value, file)?;
            let options =
                WriteOptions { format: format.as_deref(), if_match: if_version, message: message.as_deref(), dry_run };
            print_json(&target.client()?.write(k.parts(), content, options).await?)?;
        }
        Command::Delete { target, key, if_version } => {
            let k = Key::<4>::parse(&key, "tenant/app/env/name")?;
            print_json(&target.client()?.delete(k.parts(), if_version).await?)?;
        }
        Command::List { target, namespace, page } => {
            let ns = Key::<3>::parse(&namespace, "tenant/app/env")?;
            let listing = target.client()?.list_configs(ns.parts(), &page.page()).await?;
            let mut table = Table::new(["NAME", "VERSION", "FORMAT", "REVISION"]);
            for config in listing.configs {
                table.row([config.name, config.version.to_string(), config.format, config.revision.to_string()]);
            }
            table.print()?;
            print_next_cursor(listing.next_cursor.as_deref());
        }
        Command::Versions { target, key, page, json } => {
            configs::versions(&target.client()?, &key, &page, json).await?
        }
        Command::Version { target, key, version } => configs::version(&target.client()?, &key, version).await?,
        Command::Diff { target, key, from, to, json } => configs::diff(&target.client()?, &key, from, to, json).await?,
        Command::Schema { target, command } => configs::schema(&target.client()?, command).await?,
        Command::Release { target, command } => releases::release(&target.client()?, command).await?,
        Command::Resolve(args) => releases::resolve(args).await?,
        Command::Watch(args) => watch::watch(args).await?,
        Command::Audit(args) => hierarchy::audit(args).await?,
        Command::Tenant { target, command } => hierarchy::tenant(&target.client()?, command).await?,
        Command::App { target, command } => hierarchy::app(&target.client()?, command).await?,
        Command::Env { target, command } => hierarchy::env(&target.client()?, command).await?,
        Command::Token { target, command } => tokens::token(&target.client()?, command).await?,
        Command::Backup { target, out, linearizable } => backup::backup(&target.client()?, &out, linearizable).await?,
        Command::Restore { target, from } => print_json(&backup::restore(&target.client()?, &from).await?)?,
        Command::Cluster { target, command } => {
            let client = target.client()?;
            match command {
                ClusterCommand::Status => print_json(&client.status().await?)?,
                ClusterCommand::Init => print_json(&client.init().await?)?,
                ClusterCommand::AddLearner { node_id, peer_url, wait } => {
                    let wait = wait
                        .map(|seconds| {
                            Duration::try_from_secs_f64(seconds).context("--wait must be a number of seconds")
                        })
                        .transpose()?;
                    print_json(&client.add_learner(node_id, &peer_url, wait).await?)?
                }
                ClusterCommand::SetVoters { voters } => print_json(&client.set_voters(voters).await?)?,
                ClusterCommand::Remove { node_id } => print_json(&client.remove_member(node_id).await?)?,
                ClusterCommand::TransferLeader { node_id } => print_json(&client.transfer_leader(node_id).await?)?,
                ClusterCommand::Recover { confirm } => print_json(&client.recover(&confirm).await?)?,
            }
        }
    }
    Ok(())
}
