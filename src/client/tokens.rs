//! Access tokens: create (the answer carries the token, shown once), list, get, revoke, and
//! `whoami` for the token this client sends.

use reqwest::Method;

use super::{segment, Client, ClientError, Page};
use crate::wire;

impl Client {
    /// Creates a token with `role` in `scope` (`*`, `tenant`, `tenant/app`, `tenant/app/env`).
    pub async fn create_token(&self, request: &wire::TokenRequest) -> Result<wire::TokenCreated, ClientError> {
        Self::json(self.request(Method::POST, "/api/v1/tokens").json(request)).await
    }

    /// One page of the tokens inside this client's scope, by id; never their secrets.
    pub async fn tokens(&self, page: &Page) -> Result<wire::Page<wire::TokenInfo>, ClientError> {
        Self::json(Self::paged(self.request(Method::GET, "/api/v1/tokens"), page)).await
    }

    pub async fn token(&self, id: &str) -> Result<wire::TokenInfo, ClientError> {
        Self::json(self.request(Method::GET, &format!("/api/v1/tokens/{}", segment(id)?))).await
    }

    /// Revokes a token: every node refuses it once it has applied the revocation.
    pub async fn revoke_token(&self, id: &str) -> Result<wire::Changed, ClientError> {
        Self::json(self.request(Method::DELETE, &format!("/api/v1/tokens/{}", segment(id)?))).await
    }

    /// Who the node takes this client's token for.
    pub async fn whoami(&self) -> Result<wire::WhoAmI, ClientError> {
        Self::json(self.request(Method::GET, "/api/v1/whoami")).await
    }
}
