//! `conflux versions`, `version`, `diff` and `schema`: a config's history and its JSON Schema.

use std::io::Write;
use std::path::PathBuf;

use anyhow::bail;
use clap::Subcommand;

use super::output::{print_json, print_next_cursor, short_checksum, utc, Table};
use super::{read_content, Key, PageArgs};
use crate::client::Client;

const KEY: &str = "tenant/app/env/config";

#[derive(Debug, Subcommand)]
pub enum SchemaCommand {
    /// Print the config's JSON Schema
    ///
    /// Example:
    ///   conflux schema get acme/shop/prod/database
    #[command(verbatim_doc_comment)]
    Get {
        /// tenant/app/env/config
        key: String,
    },
    /// Set the JSON Schema every later version must satisfy (the config must exist)
    ///
    /// Draft 2020-12 unless the schema's `$schema` names another; remote references are not
    /// followed. Versions already written are not checked again.
    ///
    /// Example:
    ///   conflux schema set acme/shop/prod/database --file database.schema.json
    ///   echo '{"type": "object"}' | conflux schema set acme/shop/prod/database
    #[command(verbatim_doc_comment)]
    Set {
        /// tenant/app/env/config
        key: String,
        /// Read the schema from this file [default: standard input].
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Remove the config's JSON Schema: later versions are no longer checked
    ///
    /// Example:
    ///   conflux schema clear acme/shop/prod/database
    #[command(verbatim_doc_comment)]
    Clear {
        /// tenant/app/env/config
        key: String,
    },
}

/// `conflux versions KEY`: a table of the versions kept, newest first.
pub async fn versions(client: &Client, key: &str, page: &PageArgs, json: bool) -> anyhow::Result<()> {
    let key = Key::<4>::parse(key, KEY)?;
    let listing = client.versions(key.parts(), &page.page()).await?;
    if json {
        print_json(&listing)?;
        print_next_cursor(listing.next_cursor.as_deref());
        return Ok(());
    }
    let mut table = Table::new(["VERSION", "CREATED", "AUTHOR", "SIZE", "CHECKSUM", "MESSAGE"]);
    for v in &listing.items {
        table.row([
            v.version.to_string(),
            utc(v.created_at_ms),
            v.author.clone(),
            v.size.to_string(),
            short_checksum(&v.checksum),
            v.message.clone(),
        ]);
    }
    table.print()?;
    print_next_cursor(listing.next_cursor.as_deref());
    Ok(())
}

/// `conflux version KEY N`: the content of one version, as written.
pub async fn version(client: &Client, key: &str, number: u64) -> anyhow::Result<()> {
    let key = Key::<4>::parse(key, KEY)?;
    let version = client.version(key.parts(), number).await?;
    std::io::stdout().write_all(version.content.as_bytes())?;
    Ok(())
}

/// `conflux diff KEY FROM TO`: the unified diff, or the path changes as JSON.
pub async fn diff(client: &Client, key: &str, from: u64, to: u64, json: bool) -> anyhow::Result<()> {
    let k = Key::<4>::parse(key, KEY)?;
    let diff = client.diff(k.parts(), from, to).await?;
    if json {
        return match &diff.changes {
            Some(changes) => print_json(changes),
            None => bail!(
                "versions {from} and {to} of {key} are not both structured (json, yaml, toml, properties): \
                 drop --json for the text diff"
            ),
        };
    }
    if diff.unified.is_empty() {
        eprintln!("versions {from} and {to} have the same content");
    }
    std::io::stdout().write_all(diff.unified.as_bytes())?;
    Ok(())
}

/// `conflux schema get|set|clear KEY`.
pub async fn schema(client: &Client, command: SchemaCommand) -> anyhow::Result<()> {
    match command {
        SchemaCommand::Get { key } => {
            let key = Key::<4>::parse(&key, KEY)?;
            let schema = client.get_schema(key.parts()).await?;
            writeln!(std::io::stdout().lock(), "{}", schema.trim_end())?;
        }
        SchemaCommand::Set { key, file } => {
            let key = Key::<4>::parse(&key, KEY)?;
            let schema = read_content(None, file)?;
            print_json(&client.put_schema(key.parts(), schema).await?)?;
        }
        SchemaCommand::Clear { key } => {
            let key = Key::<4>::parse(&key, KEY)?;
            print_json(&client.delete_schema(key.parts()).await?)?;
        }
    }
    Ok(())
}
