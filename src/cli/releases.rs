//! `conflux release ...` (read, change and browse a config's releases) and `conflux resolve`
//! (what a client receives).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

use super::output::{print_json, print_next_cursor, utc, Table};
use super::{ClientTarget, Key, PageArgs};
use crate::client::{Client, Resolution, ResolveOptions};
use crate::wire;

const KEY: &str = "tenant/app/env/config";

#[derive(Debug, Subcommand)]
pub enum ReleaseCommand {
    /// Show the current release: its number (what --if-match expects) and its rules
    ///
    /// Example:
    ///   conflux release get acme/shop/prod/database
    #[command(verbatim_doc_comment)]
    Get {
        /// tenant/app/env/config
        key: String,
        /// Print the release as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Replace the rule list: gray release to labels or a percentage, promotion
    ///
    /// The rules are a JSON array; each rule has `version`, `priority`, and optionally
    /// `labels` (all must match) and `percent` (0 < p <= 100, clients picked by a stable hash
    /// of their --client-id). The highest priority that matches wins; exactly one rule has
    /// neither labels nor percent: the default, with the lowest priority.
    ///
    /// Example (version 2 to canaries and 10% of clients, version 1 to the rest):
    ///   conflux release set acme/shop/prod/database --rules '[
    ///     {"labels": {"canary": "true"}, "version": 2, "priority": 20},
    ///     {"percent": 10, "version": 2, "priority": 10},
    ///     {"version": 1, "priority": 0}]'
    #[command(verbatim_doc_comment)]
    Set {
        /// tenant/app/env/config
        key: String,
        /// Read the rules from this file (a JSON array of rules, or {"rules": [...]}).
        #[arg(long, conflicts_with = "rules", required_unless_present = "rules")]
        file: Option<PathBuf>,
        /// The rules as a JSON array.
        #[arg(long)]
        rules: Option<String>,
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// Make one version the default for everyone, ending every gray rule
    ///
    /// Example:
    ///   conflux release publish acme/shop/prod/database 2 --message 'pool 20 for everyone'
    #[command(verbatim_doc_comment)]
    Publish {
        /// tenant/app/env/config
        key: String,
        /// The version to publish.
        version: u64,
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// Restore the rules of an earlier release, as a new release
    ///
    /// Example:
    ///   conflux release rollback acme/shop/prod/database 1 --message 'pool 20 overloads the db'
    #[command(verbatim_doc_comment)]
    Rollback {
        /// tenant/app/env/config
        key: String,
        /// The release whose rules to restore (see `conflux release history`).
        to_release: u64,
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// List the releases, newest first
    ///
    /// Example:
    ///   conflux release history acme/shop/prod/database --limit 5
    #[command(verbatim_doc_comment)]
    History {
        /// tenant/app/env/config
        key: String,
        #[command(flatten)]
        page: PageArgs,
        /// Print the page as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// What every release change takes.
#[derive(Debug, Args)]
pub struct ChangeArgs {
    /// Change only if this release (3, or the ETag r3) is still current [default: read it first].
    ///
    /// Without --if-match the current release is read first and its number is sent: that
    /// protects against changes made before that read, not against one made between the read
    /// and the change.
    #[arg(long, value_parser = parse_release)]
    pub if_match: Option<u64>,
    /// A message recorded with the release.
    #[arg(long)]
    pub message: Option<String>,
}

/// A release number given as `3`, `r3` or `"r3"`.
fn parse_release(text: &str) -> Result<u64, String> {
    let bare = text.trim().trim_matches('"');
    let bare = bare.strip_prefix('r').unwrap_or(bare);
    bare.parse().map_err(|_| format!("expected a release number like 3 or r3, got {text:?}"))
}

/// `conflux resolve`: one config, or many of one env.
#[derive(Debug, Args)]
pub struct ResolveArgs {
    #[command(flatten)]
    target: ClientTarget,
    /// tenant/app/env/config, or tenant/app/env with --all or config names.
    key: String,
    /// Config names of tenant/app/env to resolve in one call.
    configs: Vec<String>,
    /// Resolve every live config of tenant/app/env (a page at a time: --limit, --cursor).
    #[arg(long, conflicts_with = "configs")]
    all: bool,
    /// The client's labels, e.g. canary=true,region=eu.
    #[arg(long)]
    labels: Option<String>,
    /// The client's stable id; percent rules pick clients by it (without one, none match).
    #[arg(long)]
    client_id: Option<String>,
    /// Wait until the node has applied this revision (from an earlier answer).
    #[arg(long)]
    min_revision: Option<u64>,
    /// Answer from the node's local state instead of a linearizable read.
    #[arg(long)]
    serializable: bool,
    /// Print the whole answer as JSON (version, release, matched rule, revision, content).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    page: PageArgs,
}

/// `k=v,k2=v2` as a map (the node checks the names and values).
pub(super) fn parse_labels(text: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    for pair in text.split(',').filter(|pair| !pair.is_empty()) {
        let Some((key, value)) = pair.split_once('=') else { bail!("label {pair:?} has no '=': write k=v,k2=v2") };
        if labels.insert(key.to_string(), value.to_string()).is_some() {
            bail!("label {key:?} is given twice");
        }
    }
    Ok(labels)
}

/// A rule in a table cell: `v2 p20 canary=true 10%`.
fn describe_rule(rule: &wire::Rule) -> String {
    let mut text = format!("v{} p{}", rule.version, rule.priority);
    for (key, value) in &rule.labels {
        text.push_str(&format!(" {key}={value}"));
    }
    if let Some(percent) = rule.percent {
        text.push_str(&format!(" {percent}%"));
    }
    if rule.labels.is_empty() && rule.percent.is_none() {
        text.push_str(" default");
    }
    text
}

fn print_release(release: &wire::Release) -> anyhow::Result<()> {
    let rolled_back = release.rolled_back_to.map_or(String::new(), |to| format!(" to release {to}"));
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "release {} ({}{rolled_back}) by {} at {}, revision {}",
        release.number,
        release.action,
        release.author,
        utc(release.created_at_ms),
        release.revision
    )?;
    if !release.message.is_empty() {
        writeln!(out, "message: {}", release.message)?;
    }
    drop(out);
    let mut table = Table::new(["RULE", "PRIORITY", "VERSION", "LABELS", "PERCENT"]);
    for (index, rule) in release.rules.iter().enumerate() {
        let labels: Vec<String> = rule.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let labels = if labels.is_empty() { "-".to_string() } else { labels.join(",") };
        table.row([
            index.to_string(),
            rule.priority.to_string(),
            rule.version.to_string(),
            labels,
            rule.percent.map_or("-".to_string(), |p| format!("{p}%")),
        ]);
    }
    Ok(table.print()?)
}

/// The rules of `release set`: a JSON array, or an object with `rules` (and maybe `message`).
fn read_rules(file: Option<PathBuf>, rules: Option<String>) -> anyhow::Result<(Vec<wire::Rule>, Option<String>)> {
    let (text, source) = match (file, rules) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
            (text, path.display().to_string())
        }
        (None, Some(text)) => (text, "--rules".to_string()),
        (None, None) => bail!("pass the rules with --file or --rules"),
    };
    if text.trim_start().starts_with('[') {
        let rules = serde_json::from_str(&text).with_context(|| format!("{source} is not a JSON array of rules"))?;
        return Ok((rules, None));
    }
    let spec: wire::ReleaseSpec = serde_json::from_str(&text)
        .with_context(|| format!("{source} is not a JSON array of rules nor {{\"rules\": [...]}}"))?;
    Ok((spec.rules, spec.message))
}

/// The release a change expects: `--if-match`, else the current one.
async fn expected_release(client: &Client, key: [&str; 4], change: &ChangeArgs) -> anyhow::Result<u64> {
    match change.if_match {
        Some(number) => Ok(number),
        None => Ok(client.get_release(key).await.context("reading the current release for If-Match")?.number),
    }
}

/// `conflux release get|set|publish|rollback|history`.
pub async fn release(client: &Client, command: ReleaseCommand) -> anyhow::Result<()> {
    match command {
        ReleaseCommand::Get { key, json } => {
            let key = Key::<4>::parse(&key, KEY)?;
            let release = client.get_release(key.parts()).await?;
            if json {
                return print_json(&release);
            }
            print_release(&release)?;
        }
        ReleaseCommand::Set { key, file, rules, change } => {
            let key = Key::<4>::parse(&key, KEY)?;
            let (rules, file_message) = read_rules(file, rules)?;
            let expected = expected_release(client, key.parts(), &change).await?;
            let spec = wire::ReleaseSpec { rules, message: change.message.or(file_message) };
            print_json(&client.put_release(key.parts(), &spec, expected).await?)?;
        }
        ReleaseCommand::Publish { key, version, change } => {
            let key = Key::<4>::parse(&key, KEY)?;
            let expected = expected_release(client, key.parts(), &change).await?;
            let publish = wire::Publish { version, message: change.message };
            print_json(&client.publish_release(key.parts(), &publish, expected).await?)?;
        }
        ReleaseCommand::Rollback { key, to_release, change } => {
            let key = Key::<4>::parse(&key, KEY)?;
            let expected = expected_release(client, key.parts(), &change).await?;
            let rollback = wire::Rollback { to: to_release, message: change.message };
            print_json(&client.rollback_release(key.parts(), &rollback, expected).await?)?;
        }
        ReleaseCommand::History { key, page, json } => {
            let key = Key::<4>::parse(&key, KEY)?;
            let listing = client.release_history(key.parts(), &page.page()).await?;
            if json {
                print_json(&listing)?;
                print_next_cursor(listing.next_cursor.as_deref());
                return Ok(());
            }
            let mut table = Table::new(["RELEASE", "ACTION", "CREATED", "AUTHOR", "RULES", "MESSAGE"]);
            for release in &listing.items {
                let action = match release.rolled_back_to {
                    Some(to) => format!("{} to {to}", release.action),
                    None => release.action.clone(),
                };
                let rules: Vec<String> = release.rules.iter().map(describe_rule).collect();
                table.row([
                    release.number.to_string(),
                    action,
                    utc(release.created_at_ms),
                    release.author.clone(),
                    rules.join("; "),
                    release.message.clone(),
                ]);
            }
            table.print()?;
            print_next_cursor(listing.next_cursor.as_deref());
        }
    }
    Ok(())
}

/// `conflux resolve KEY` or `conflux resolve tenant/app/env --all|CONFIG...`.
pub async fn resolve(args: ResolveArgs) -> anyhow::Result<()> {
    let client = args.target.client()?;
    let labels = parse_labels(args.labels.as_deref().unwrap_or(""))?;
    let parts = args.key.split('/').count();
    if parts == 4 {
        if args.all || !args.configs.is_empty() {
            bail!("--all and config names go with a tenant/app/env key, not {:?}", args.key);
        }
        if args.page.limit.is_some() || args.page.cursor.is_some() {
            bail!("--limit and --cursor page through --all; one config has no pages");
        }
        let key = Key::<4>::parse(&args.key, KEY)?;
        let options = ResolveOptions {
            labels,
            client_id: args.client_id,
            min_revision: args.min_revision,
            serializable: args.serializable,
            if_none_match: None,
        };
        let resolved = match client.resolve(key.parts(), &options).await? {
            Resolution::Content { resolved, .. } => resolved,
            Resolution::NotModified { .. } => {
                bail!("the node answered 304 Not Modified to a request without If-None-Match")
            }
        };
        if args.json {
            return print_json(&resolved);
        }
        std::io::stdout().write_all(resolved.content.as_bytes())?;
        return Ok(());
    }
    let env = Key::<3>::parse(&args.key, "tenant/app/env/config or tenant/app/env")?;
    if !args.all && args.configs.is_empty() {
        bail!("with a tenant/app/env key, pass --all or the config names to resolve");
    }
    let request =
        wire::ResolveMany { configs: args.configs, labels, client_id: args.client_id, min_revision: args.min_revision };
    let answer = client.resolve_many(env.parts(), &request, &args.page.page(), args.serializable).await?;
    print_json(&answer)?;
    print_next_cursor(answer.next_cursor.as_deref());
    Ok(())
}
