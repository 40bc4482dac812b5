//! `conflux tenant|app|env list|get|create|delete` and `conflux audit`.

use clap::{Args, Subcommand};

use super::output::{print_json, print_next_cursor, transition, utc, Table};
use super::{ClientTarget, Key, PageArgs};
use crate::client::{AuditQuery, Client};
use crate::wire;

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// List the tenants
    ///
    /// Example:
    ///   conflux tenant list --limit 20
    #[command(verbatim_doc_comment)]
    List {
        #[command(flatten)]
        page: PageArgs,
        /// Print the page as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a tenant, with its quotas, as JSON
    ///
    /// Example:
    ///   conflux tenant get acme
    #[command(verbatim_doc_comment)]
    Get { tenant: String },
    /// Create a tenant, or update its description and quotas (unset quotas keep their value)
    ///
    /// Defaults for a new tenant: 1 MiB per config, 10,000 configs, 100 versions kept per config.
    ///
    /// Example:
    ///   conflux tenant create acme --description 'ACME Corp' --max-config-bytes 65536 --max-versions-kept 20
    #[command(verbatim_doc_comment)]
    Create {
        tenant: String,
        /// A free-text description.
        #[arg(long)]
        description: Option<String>,
        /// Largest content of one version, in bytes.
        #[arg(long)]
        max_config_bytes: Option<u64>,
        /// Most live configs in the tenant.
        #[arg(long)]
        max_configs: Option<u64>,
        /// Versions kept per config; older ones are dropped, except those the current release serves.
        #[arg(long)]
        max_versions_kept: Option<u32>,
    },
    /// Delete a tenant (refused while it has apps or configs, unless --force)
    ///
    /// Example:
    ///   conflux tenant delete acme --force
    #[command(verbatim_doc_comment)]
    Delete {
        tenant: String,
        /// Delete everything under it too.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AppCommand {
    /// List a tenant's apps
    ///
    /// Example:
    ///   conflux app list acme
    #[command(verbatim_doc_comment)]
    List {
        tenant: String,
        #[command(flatten)]
        page: PageArgs,
        /// Print the page as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show an app as JSON
    ///
    /// Example:
    ///   conflux app get acme/shop
    #[command(verbatim_doc_comment)]
    Get {
        /// tenant/app
        app: String,
    },
    /// Create an app, or update its description
    ///
    /// Example:
    ///   conflux app create acme/shop --description 'web shop'
    #[command(verbatim_doc_comment)]
    Create {
        /// tenant/app
        app: String,
        /// A free-text description.
        #[arg(long)]
        description: Option<String>,
    },
    /// Delete an app (refused while it has envs or configs, unless --force)
    ///
    /// Example:
    ///   conflux app delete acme/shop --force
    #[command(verbatim_doc_comment)]
    Delete {
        /// tenant/app
        app: String,
        /// Delete everything under it too.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum EnvCommand {
    /// List an app's envs
    ///
    /// Example:
    ///   conflux env list acme/shop
    #[command(verbatim_doc_comment)]
    List {
        /// tenant/app
        app: String,
        #[command(flatten)]
        page: PageArgs,
        /// Print the page as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show an env as JSON
    ///
    /// Example:
    ///   conflux env get acme/shop/prod
    #[command(verbatim_doc_comment)]
    Get {
        /// tenant/app/env
        env: String,
    },
    /// Create an env, or update its description
    ///
    /// Example:
    ///   conflux env create acme/shop/prod --description production
    #[command(verbatim_doc_comment)]
    Create {
        /// tenant/app/env
        env: String,
        /// A free-text description.
        #[arg(long)]
        description: Option<String>,
    },
    /// Delete an env (refused while it has configs, unless --force)
    ///
    /// Example:
    ///   conflux env delete acme/shop/staging --force
    #[command(verbatim_doc_comment)]
    Delete {
        /// tenant/app/env
        env: String,
        /// Delete its configs too.
        #[arg(long)]
        force: bool,
    },
}

/// `conflux audit TENANT`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(flatten)]
    target: ClientTarget,
    tenant: String,
    /// Only records by this actor.
    #[arg(long)]
    actor: Option<String>,
    /// Only this action: tenant|app|env.create|update|delete, config.write, config.delete,
    /// config.schema.set, config.schema.clear, release.set, release.publish, release.rollback.
    #[arg(long)]
    action: Option<String>,
    /// Only this resource and everything under it, e.g. acme/shop/prod (tenant included).
    #[arg(long)]
    resource: Option<String>,
    /// Only records at or after this time (milliseconds since the Unix epoch).
    #[arg(long)]
    from_ms: Option<u64>,
    /// Only records before this time (milliseconds since the Unix epoch).
    #[arg(long)]
    to_ms: Option<u64>,
    #[command(flatten)]
    page: PageArgs,
    /// Print the page as JSON.
    #[arg(long)]
    json: bool,
}

/// Prints a page of tenants, apps or envs; `children` names the count column tenants and apps
/// have.
fn print_levels(listing: &wire::Page<wire::Level>, children: Option<&str>, json: bool) -> anyhow::Result<()> {
    if json {
        print_json(listing)?;
    } else if let Some(children) = children {
        let mut table = Table::new(["NAME", children, "CONFIGS", "CREATED", "DESCRIPTION"]);
        for level in &listing.items {
            let count = level.apps.or(level.envs).map_or("-".to_string(), |n| n.to_string());
            let created = utc(level.created_at_ms);
            table.row([level.name.clone(), count, level.configs.to_string(), created, level.description.clone()]);
        }
        table.print()?;
    } else {
        let mut table = Table::new(["NAME", "CONFIGS", "CREATED", "DESCRIPTION"]);
        for level in &listing.items {
            let created = utc(level.created_at_ms);
            table.row([level.name.clone(), level.configs.to_string(), created, level.description.clone()]);
        }
        table.print()?;
    }
    print_next_cursor(listing.next_cursor.as_deref());
    Ok(())
}

/// `conflux tenant ...`.
pub async fn tenant(client: &Client, command: TenantCommand) -> anyhow::Result<()> {
    match command {
        TenantCommand::List { page, json } => {
            print_levels(&client.list_tenants(&page.page()).await?, Some("APPS"), json)?
        }
        TenantCommand::Get { tenant } => print_json(&client.get_tenant(&tenant).await?)?,
        TenantCommand::Create { tenant, description, max_config_bytes, max_configs, max_versions_kept } => {
            let quotas = wire::QuotaSpec { max_config_bytes, max_configs, max_versions_kept };
            let quotas = (quotas != wire::QuotaSpec::default()).then_some(quotas);
            print_json(&client.put_tenant(&tenant, &wire::TenantSpec { description, quotas }).await?)?
        }
        TenantCommand::Delete { tenant, force } => print_json(&client.delete_tenant(&tenant, force).await?)?,
    }
    Ok(())
}

/// `conflux app ...`.
pub async fn app(client: &Client, command: AppCommand) -> anyhow::Result<()> {
    match command {
        AppCommand::List { tenant, page, json } => {
            let tenant = Key::<1>::parse(&tenant, "tenant")?;
            print_levels(&client.list_apps(tenant.parts()[0], &page.page()).await?, Some("ENVS"), json)?
        }
        AppCommand::Get { app } => print_json(&client.get_app(Key::<2>::parse(&app, "tenant/app")?.parts()).await?)?,
        AppCommand::Create { app, description } => {
            let app = Key::<2>::parse(&app, "tenant/app")?;
            print_json(&client.put_app(app.parts(), &wire::LevelSpec { description }).await?)?
        }
        AppCommand::Delete { app, force } => {
            print_json(&client.delete_app(Key::<2>::parse(&app, "tenant/app")?.parts(), force).await?)?
        }
    }
    Ok(())
}

/// `conflux env ...`.
pub async fn env(client: &Client, command: EnvCommand) -> anyhow::Result<()> {
    match command {
        EnvCommand::List { app, page, json } => {
            let app = Key::<2>::parse(&app, "tenant/app")?;
            print_levels(&client.list_envs(app.parts(), &page.page()).await?, None, json)?
        }
        EnvCommand::Get { env } => {
            print_json(&client.get_env(Key::<3>::parse(&env, "tenant/app/env")?.parts()).await?)?
        }
        EnvCommand::Create { env, description } => {
            let env = Key::<3>::parse(&env, "tenant/app/env")?;
            print_json(&client.put_env(env.parts(), &wire::LevelSpec { description }).await?)?
        }
        EnvCommand::Delete { env, force } => {
            print_json(&client.delete_env(Key::<3>::parse(&env, "tenant/app/env")?.parts(), force).await?)?
        }
    }
    Ok(())
}

/// `conflux audit TENANT`: a table of records (or JSON), oldest first.
pub async fn audit(args: AuditArgs) -> anyhow::Result<()> {
    let tenant = Key::<1>::parse(&args.tenant, "tenant")?;
    let query = AuditQuery {
        actor: args.actor,
        action: args.action,
        resource: args.resource,
        from_ms: args.from_ms,
        to_ms: args.to_ms,
    };
    let listing = args.target.client()?.audit(tenant.parts()[0], &query, &args.page.page()).await?;
    if args.json {
        print_json(&listing)?;
    } else {
        let mut table = Table::new(["REVISION", "TIME", "ACTOR", "ACTION", "RESOURCE", "BEFORE→AFTER", "REQUEST"]);
        for entry in &listing.items {
            table.row([
                entry.revision.to_string(),
                utc(entry.time_ms),
                entry.actor.clone(),
                entry.action.clone(),
                entry.resource.clone(),
                transition(entry.before, entry.after),
                entry.request_id.clone(),
            ]);
        }
        table.print()?;
    }
    print_next_cursor(listing.next_cursor.as_deref());
    Ok(())
}
