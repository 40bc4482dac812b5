//! `conflux watch`: prints the changes to what a client receives from one env as they happen,
//! one line per change (with the content when the node inlined it), or one JSON object per line
//! with `--json`, until interrupted. The watching itself is [`crate::client::Watcher`].

use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;

use super::output::short_checksum;
use super::releases::parse_labels;
use super::{ClientTarget, Key};
use crate::client::{WatchSpec, Watcher};
use crate::wire;

/// `conflux watch tenant/app/env [config...]`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    target: ClientTarget,
    /// tenant/app/env
    namespace: String,
    /// Configs to watch (each must exist) [default: every config of the env, including ones
    /// created later].
    configs: Vec<String>,
    /// The client's labels, e.g. canary=true,region=eu.
    #[arg(long)]
    labels: Option<String>,
    /// The client's stable id; percent rules pick clients by it (without one, none match).
    #[arg(long)]
    client_id: Option<String>,
    /// How long a node holds one request while nothing changes, in milliseconds (1000 to 300000).
    #[arg(long, default_value_t = 30_000)]
    timeout_ms: u64,
    /// Print one JSON object per line: each change with its `revision`, and
    /// `{"config": …, "deleted": true, "revision": …}` for a deletion.
    #[arg(long)]
    json: bool,
}

/// Watches until interrupted (or refused: a config that does not exist, bad labels).
pub async fn watch(args: WatchArgs) -> anyhow::Result<()> {
    let namespace = Key::<3>::parse(&args.namespace, "tenant/app/env")?;
    let [tenant, app, env] = namespace.parts().map(str::to_string);
    let spec = WatchSpec {
        tenant,
        app,
        env,
        configs: (!args.configs.is_empty()).then_some(args.configs),
        labels: parse_labels(args.labels.as_deref().unwrap_or(""))?,
        client_id: args.client_id,
        timeout: Duration::from_millis(args.timeout_ms),
        inline_max_bytes: None,
    };
    let token = super::credential(args.target.token_file.as_deref())?;
    let mut watcher = Watcher::new(endpoints(&args.target.endpoint)?, spec).with_token(token);
    if let Some(path) = &args.target.ca_file {
        let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        watcher = watcher.with_ca(&pem).with_context(|| format!("using {} as the CA", path.display()))?;
    }
    loop {
        let answer = watcher.next().await?;
        let lines = if args.json { json_lines(&answer)? } else { text_lines(&answer) };
        let mut out = std::io::stdout().lock();
        for line in lines {
            writeln!(out, "{line}")?;
        }
        out.flush()?;
    }
}

/// `--endpoint` as a list of nodes: watch takes several, separated by commas, and moves to the
/// next one when a node fails.
fn endpoints(text: &str) -> anyhow::Result<Vec<String>> {
    let nodes: Vec<String> = text.split(',').map(str::trim).filter(|node| !node.is_empty()).map(String::from).collect();
    if nodes.is_empty() {
        bail!("--endpoint names no node");
    }
    Ok(nodes)
}

/// Text mode: `rev 42  db  v5  sha256:ab12…  (1234 bytes)` and the inlined content indented
/// under it, then `rev 43  db  deleted` for each deletion.
fn text_lines(answer: &wire::WatchAnswer) -> Vec<String> {
    let revision = answer.revision;
    let mut lines = Vec::new();
    for change in &answer.changes {
        let inlined = if change.content.is_some() || change.size == 0 { "" } else { ", not inlined" };
        lines.push(format!(
            "rev {revision}  {}  v{}  sha256:{}…  ({} bytes{inlined})",
            change.config,
            change.version,
            short_checksum(&change.checksum),
            change.size
        ));
        if let Some(content) = &change.content {
            lines.extend(content.lines().map(|line| format!("    {line}")));
        }
    }
    lines.extend(answer.deleted.iter().map(|config| format!("rev {revision}  {config}  deleted")));
    lines
}

/// `--json` mode: one object per change (the change and the answer's `revision`) and per
/// deletion.
fn json_lines(answer: &wire::WatchAnswer) -> anyhow::Result<Vec<String>> {
    let mut lines = Vec::new();
    for change in &answer.changes {
        let mut object = serde_json::to_value(change)?;
        if let Some(fields) = object.as_object_mut() {
            fields.insert("revision".into(), answer.revision.into());
        }
        lines.push(object.to_string());
    }
    for config in &answer.deleted {
        lines.push(serde_json::json!({"config": config, "deleted": true, "revision": answer.revision}).to_string());
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn parse(args: &[&str]) -> Result<WatchArgs, clap::Error> {
        match Cli::try_parse_from([&["conflux", "watch"], args].concat())?.command {
            Command::Watch(args) => Ok(args),
            other => panic!("parsed as {other:?}"),
        }
    }

    fn answer() -> wire::WatchAnswer {
        let change = |config: &str, content: Option<&str>, size| wire::WatchChange {
            config: config.into(),
            format: "yaml".into(),
            version: 5,
            checksum: "sha256:ab12cd34ef56ab12cd34".into(),
            size,
            release: 2,
            content: content.map(String::from),
        };
        wire::WatchAnswer {
            revision: 42,
            changes: vec![change("db.yaml", Some("pool: 10\nhost: db\n"), 18), change("big.yaml", None, 90_000)],
            deleted: vec!["old.yaml".into()],
        }
    }

    #[test]
    fn the_command_line_is_parsed_into_a_watch() {
        let args = parse(&[
            "acme/shop/prod",
            "db",
            "flags",
            "--labels",
            "canary=true,region=eu",
            "--client-id",
            "web-1",
            "--timeout-ms",
            "5000",
            "--json",
            "--endpoint",
            "http://a:7000, http://b:7000",
        ])
        .unwrap();
        assert_eq!(
            (args.namespace.as_str(), args.configs.clone()),
            ("acme/shop/prod", vec!["db".into(), "flags".into()])
        );
        let labels = parse_labels(args.labels.as_deref().unwrap()).unwrap();
        assert_eq!(labels, BTreeMap::from([("canary".into(), "true".into()), ("region".into(), "eu".into())]));
        assert_eq!((args.client_id.as_deref(), args.timeout_ms, args.json), (Some("web-1"), 5000, true));
        assert_eq!(endpoints(&args.target.endpoint).unwrap(), ["http://a:7000", "http://b:7000"]);
        let defaults = parse(&["acme/shop/prod"]).unwrap();
        assert!(defaults.configs.is_empty() && defaults.labels.is_none() && !defaults.json);
        assert_eq!(defaults.timeout_ms, 30_000);
    }

    #[test]
    fn bad_labels_and_endpoints_are_refused() {
        assert!(parse_labels("canary").is_err());
        assert_eq!(parse_labels("a=1,a=2").unwrap_err().to_string(), "label \"a\" is given twice");
        assert!(endpoints(" , ").is_err());
    }

    #[test]
    fn text_mode_prints_a_line_per_change_with_the_content_indented() {
        assert_eq!(
            text_lines(&answer()),
            [
                "rev 42  db.yaml  v5  sha256:ab12cd34ef56…  (18 bytes)",
                "    pool: 10",
                "    host: db",
                "rev 42  big.yaml  v5  sha256:ab12cd34ef56…  (90000 bytes, not inlined)",
                "rev 42  old.yaml  deleted",
            ]
        );
    }

    #[test]
    fn json_mode_prints_an_object_per_change_and_deletion() {
        let lines: Vec<serde_json::Value> =
            json_lines(&answer()).unwrap().iter().map(|line| serde_json::from_str(line).unwrap()).collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(
            lines[0],
            serde_json::json!({"config": "db.yaml", "format": "yaml", "version": 5,
                "checksum": "sha256:ab12cd34ef56ab12cd34", "size": 18, "release": 2,
                "content": "pool: 10\nhost: db\n", "revision": 42})
        );
        assert_eq!(lines[1]["content"], serde_json::Value::Null);
        assert_eq!(lines[2], serde_json::json!({"config": "old.yaml", "deleted": true, "revision": 42}));
    }
}
