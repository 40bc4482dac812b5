//! `conflux token create|list|show|revoke|whoami`: access tokens from the command line. `create`
//! prints the token once, on standard output alone, so `conflux token create ... > file` keeps it.

use clap::Subcommand;

use super::output::{print_json, print_next_cursor, utc, Table};
use super::PageArgs;
use crate::client::Client;
use crate::wire;

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it (shown this once; only its hash is kept)
    ///
    /// Example:
    ///   conflux token create --role client --scope acme/shop/prod --name checkout-service > token
    #[command(verbatim_doc_comment)]
    Create {
        /// client, viewer, editor, publisher or admin.
        #[arg(long)]
        role: String,
        /// *, tenant, tenant/app or tenant/app/env.
        #[arg(long)]
        scope: String,
        /// A note for people: who or what holds it.
        #[arg(long)]
        name: String,
        /// Expire after this many seconds [default: never].
        #[arg(long)]
        ttl_seconds: Option<u64>,
        /// Print the whole answer as JSON (token included) instead of the token alone.
        #[arg(long)]
        json: bool,
    },
    /// List the tokens inside your token's scope (never their secrets).
    List {
        #[command(flatten)]
        page: PageArgs,
    },
    /// Show one token's record.
    Show { id: String },
    /// Revoke a token: every node refuses it once it applies the revocation.
    Revoke { id: String },
    /// Show who the node takes your token for.
    Whoami,
}

pub async fn token(client: &Client, command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create { role, scope, name, ttl_seconds, json } => {
            let created = client.create_token(&wire::TokenRequest { name, role, scope, ttl_seconds }).await?;
            if json {
                print_json(&created)?;
            } else {
                println!("{}", created.token);
                eprintln!(
                    "created token {} ({} of {}); it is shown only now",
                    created.info.id, created.info.role, created.info.scope
                );
            }
        }
        TokenCommand::List { page } => {
            let listing = client.tokens(&page.page()).await?;
            let mut table = Table::new(["ID", "ROLE", "SCOPE", "NAME", "CREATED", "EXPIRES", "STATE"]);
            for token in listing.items {
                let state = match (&token.revoked_by, token.revoked_ms) {
                    (Some(by), Some(at)) => format!("revoked {} by {by}", utc(at)),
                    _ => "active".to_string(),
                };
                let expires = token.expires_ms.map_or("never".to_string(), utc);
                table.row([token.id, token.role, token.scope, token.name, utc(token.created_ms), expires, state]);
            }
            table.print()?;
            print_next_cursor(listing.next_cursor.as_deref());
        }
        TokenCommand::Show { id } => print_json(&client.token(&id).await?)?,
        TokenCommand::Revoke { id } => print_json(&client.revoke_token(&id).await?)?,
        TokenCommand::Whoami => print_json(&client.whoami().await?)?,
    }
    Ok(())
}
