//! Tenants, apps and envs (create or update with `PUT`, get, list, delete) and a tenant's audit
//! log. Apps are named `[tenant, app]`, envs `[tenant, app, env]`.

use reqwest::Method;

use super::{segment, AuditQuery, Client, ClientError, Page};
use crate::wire;

fn tenant_path(tenant: &str) -> Result<String, ClientError> {
    Ok(format!("/api/v1/tenants/{}", segment(tenant)?))
}

fn app_path(app: [&str; 2]) -> Result<String, ClientError> {
    Ok(format!("/api/v1/tenants/{}/apps/{}", segment(app[0])?, segment(app[1])?))
}

fn env_path(env: [&str; 3]) -> Result<String, ClientError> {
    Ok(format!("{}/envs/{}", app_path([env[0], env[1]])?, segment(env[2])?))
}

impl Client {
    async fn delete_level(&self, path: &str, force: bool) -> Result<wire::Changed, ClientError> {
        let mut builder = self.request(Method::DELETE, path);
        if force {
            builder = builder.query(&[("force", "true")]);
        }
        Self::json(builder).await
    }

    /// One page of the tenants, by name.
    pub async fn list_tenants(&self, page: &Page) -> Result<wire::Page<wire::Level>, ClientError> {
        Self::json(Self::paged(self.request(Method::GET, "/api/v1/tenants"), page)).await
    }

    /// One tenant, with its quotas and counts.
    pub async fn get_tenant(&self, tenant: &str) -> Result<wire::Level, ClientError> {
        Self::json(self.request(Method::GET, &tenant_path(tenant)?)).await
    }

    /// Creates a tenant or updates its description and quotas (`created` says which).
    pub async fn put_tenant(&self, tenant: &str, spec: &wire::TenantSpec) -> Result<wire::Changed, ClientError> {
        Self::json(self.request(Method::PUT, &tenant_path(tenant)?).json(spec)).await
    }

    /// Deletes a tenant; refused (`not_empty`) while it has apps or configs, unless
    /// `force`, which deletes everything under it.
    pub async fn delete_tenant(&self, tenant: &str, force: bool) -> Result<wire::Changed, ClientError> {
        self.delete_level(&tenant_path(tenant)?, force).await
    }

    /// One page of a tenant's apps, by name.
    pub async fn list_apps(&self, tenant: &str, page: &Page) -> Result<wire::Page<wire::Level>, ClientError> {
        let path = format!("{}/apps", tenant_path(tenant)?);
        Self::json(Self::paged(self.request(Method::GET, &path), page)).await
    }

    /// One app of `[tenant, app]`.
    pub async fn get_app(&self, app: [&str; 2]) -> Result<wire::Level, ClientError> {
        Self::json(self.request(Method::GET, &app_path(app)?)).await
    }

    /// Creates an app or updates its description.
    pub async fn put_app(&self, app: [&str; 2], spec: &wire::LevelSpec) -> Result<wire::Changed, ClientError> {
        Self::json(self.request(Method::PUT, &app_path(app)?).json(spec)).await
    }

    /// Deletes an app; refused (`not_empty`) while it has envs or configs, unless
    /// `force`, which deletes everything under it.
    pub async fn delete_app(&self, app: [&str; 2], force: bool) -> Result<wire::Changed, ClientError> {
        self.delete_level(&app_path(app)?, force).await
    }

    /// One page of an app's envs, by name.
    pub async fn list_envs(&self, app: [&str; 2], page: &Page) -> Result<wire::Page<wire::Level>, ClientError> {
        let path = format!("{}/envs", app_path(app)?);
        Self::json(Self::paged(self.request(Method::GET, &path), page)).await
    }

    /// One env of `[tenant, app, env]`.
    pub async fn get_env(&self, env: [&str; 3]) -> Result<wire::Level, ClientError> {
        Self::json(self.request(Method::GET, &env_path(env)?)).await
    }

    /// Creates an env or updates its description.
    pub async fn put_env(&self, env: [&str; 3], spec: &wire::LevelSpec) -> Result<wire::Changed, ClientError> {
        Self::json(self.request(Method::PUT, &env_path(env)?).json(spec)).await
    }

    /// Deletes an env; refused (`not_empty`) while it has configs, unless `force`,
    /// which deletes everything under it.
    pub async fn delete_env(&self, env: [&str; 3], force: bool) -> Result<wire::Changed, ClientError> {
        self.delete_level(&env_path(env)?, force).await
    }

    /// One page of a tenant's audit records, oldest first, filtered by `query`. A page may be
    /// short, even empty, and still have a `next_cursor`: the node scans a bounded number of
    /// records per call.
    pub async fn audit(
        &self,
        tenant: &str,
        query: &AuditQuery,
        page: &Page,
    ) -> Result<wire::Page<wire::AuditEntry>, ClientError> {
        let mut builder = self.request(Method::GET, &format!("{}/audit", tenant_path(tenant)?));
        for (name, value) in [("actor", &query.actor), ("action", &query.action), ("resource", &query.resource)] {
            if let Some(value) = value {
                builder = builder.query(&[(name, value)]);
            }
        }
        for (name, value) in [("from_ms", query.from_ms), ("to_ms", query.to_ms)] {
            if let Some(value) = value {
                builder = builder.query(&[(name, value)]);
            }
        }
        Self::json(Self::paged(builder, page)).await
    }
}
