//! Who is calling: checks a request's bearer credential and answers the [`Principal`] it stands
//! for. Two kinds of credential exist: the bootstrap admin token (given to every node at start-up,
//! compared in constant time, never stored in the state) and API tokens (`cfx_<id>_<secret>`,
//! created through the API, replicated through Raft as [`TokenRecord`]s holding only the secret's
//! sha256). With access control disabled every request is an anonymous superuser.

use subtle::ConstantTimeEq;

use crate::model::access::{Principal, TokenRecord};
use crate::store::{Store, StoreError};

/// Prefix of every API token, so a leaked one is recognisable (secret scanners key on it).
pub const TOKEN_PREFIX: &str = "cfx_";
/// The actor recorded for changes made with the bootstrap admin token.
pub const BOOTSTRAP_ACTOR: &str = "bootstrap-admin";
/// The actor recorded for changes when access control is disabled.
pub const ANONYMOUS_ACTOR: &str = "anonymous";

/// Why a credential was not accepted (401). Details are deliberately coarse: only a caller who
/// proved it holds the secret learns that its token expired or was revoked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unauthenticated {
    #[error("this needs a token: send Authorization: Bearer <token>")]
    Missing,
    #[error("invalid token")]
    Invalid,
    /// Well-formed, but this node has no token with that id (yet: it may lag the leader).
    #[error("invalid token")]
    UnknownId,
    #[error("this token expired")]
    Expired,
    #[error("this token was revoked")]
    Revoked,
    #[error("checking the token: {0}")]
    Store(String),
}

impl From<StoreError> for Unauthenticated {
    fn from(e: StoreError) -> Self {
        Unauthenticated::Store(e.to_string())
    }
}

/// A new API token: its public id, the secret (shown once) and the text the client sends.
pub struct NewToken {
    pub id: String,
    pub secret_sha256: [u8; 32],
    pub token: String,
}

/// sha256 of a token's secret part.
pub fn secret_hash(secret: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(secret.as_bytes()).into()
}

/// 64 random bits of id and 256 of secret.
pub fn generate_token() -> NewToken {
    let id = format!("{:016x}", rand::random::<u64>());
    let secret = format!("{:032x}{:032x}", rand::random::<u128>(), rand::random::<u128>());
    NewToken { secret_sha256: secret_hash(&secret), token: format!("{TOKEN_PREFIX}{id}_{secret}"), id }
}

/// `cfx_<16 hex>_<64 hex>` split into id and secret.
pub fn parse_api_token(text: &str) -> Option<(&str, &str)> {
    let (id, secret) = text.strip_prefix(TOKEN_PREFIX)?.split_once('_')?;
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex(id, 16) && hex(secret, 64)).then_some((id, secret))
}

/// Checks credentials against the bootstrap token and the replicated token records.
pub struct Authenticator {
    mode: Mode,
    store: Store,
}

enum Mode {
    Disabled,
    Enabled { bootstrap: Option<String> },
}

impl Authenticator {
    pub fn enabled(store: Store, bootstrap: Option<String>) -> Authenticator {
        Authenticator { mode: Mode::Enabled { bootstrap }, store }
    }

    pub fn disabled(store: Store) -> Authenticator {
        Authenticator { mode: Mode::Disabled, store }
    }

    pub fn is_enabled(&self) -> bool {
        matches!(self.mode, Mode::Enabled { .. })
    }

    /// The principal behind an `Authorization` header value, at time `now_ms`.
    pub fn authenticate(&self, authorization: Option<&str>, now_ms: u64) -> Result<Principal, Unauthenticated> {
        let bootstrap = match &self.mode {
            Mode::Disabled => return Ok(Principal::superuser(ANONYMOUS_ACTOR)),
            Mode::Enabled { bootstrap } => bootstrap.as_deref(),
        };
        let presented = authorization.ok_or(Unauthenticated::Missing)?;
        let presented = presented.strip_prefix("Bearer ").ok_or(Unauthenticated::Invalid)?.trim();
        if let Some(bootstrap) = bootstrap {
            if bool::from(presented.as_bytes().ct_eq(bootstrap.as_bytes())) {
                return Ok(Principal::superuser(BOOTSTRAP_ACTOR));
            }
        }
        let (id, secret) = parse_api_token(presented).ok_or(Unauthenticated::Invalid)?;
        let record = self.store.token(id)?.ok_or(Unauthenticated::UnknownId)?;
        check_record(&record, secret, now_ms)?;
        Ok(Principal { actor: format!("token:{}", record.id), role: record.role, scope: record.scope })
    }
}

fn check_record(record: &TokenRecord, secret: &str, now_ms: u64) -> Result<(), Unauthenticated> {
    if !bool::from(secret_hash(secret).ct_eq(&record.secret_sha256)) {
        return Err(Unauthenticated::Invalid);
    }
    if record.revoked.is_some() {
        return Err(Unauthenticated::Revoked);
    }
    if record.expires_ms.is_some_and(|expires| expires <= now_ms) {
        return Err(Unauthenticated::Expired);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::access::{Revocation, Role, Scope};

    fn record(new: &NewToken) -> TokenRecord {
        TokenRecord {
            id: new.id.clone(),
            name: "ci".into(),
            role: Role::Viewer,
            scope: Scope::parse("acme").unwrap(),
            secret_sha256: new.secret_sha256,
            created_ms: 1,
            created_by: BOOTSTRAP_ACTOR.into(),
            expires_ms: Some(1000),
            revoked: None,
        }
    }

    #[test]
    fn generated_tokens_parse_and_match_only_their_own_record() {
        let new = generate_token();
        let (id, secret) = parse_api_token(&new.token).expect("well-formed");
        assert_eq!(id, new.id);
        assert_eq!(check_record(&record(&new), secret, 999), Ok(()));
        let other = generate_token();
        let (_, other_secret) = parse_api_token(&other.token).unwrap();
        assert_eq!(check_record(&record(&new), other_secret, 999), Err(Unauthenticated::Invalid));
    }

    #[test]
    fn expiry_and_revocation_are_enforced_after_the_secret_matches() {
        let new = generate_token();
        let (_, secret) = parse_api_token(&new.token).unwrap();
        assert_eq!(check_record(&record(&new), secret, 1000), Err(Unauthenticated::Expired));
        let mut revoked = record(&new);
        revoked.revoked = Some(Revocation { time_ms: 5, by: "x".into() });
        assert_eq!(check_record(&revoked, secret, 10), Err(Unauthenticated::Revoked));
    }

    #[test]
    fn malformed_tokens_are_refused_before_any_lookup() {
        for bad in [
            "",
            "cfx_",
            "cfx_0123_abcd",
            "cfx_zzzzzzzzzzzzzzzz_",
            "token",
            &format!("cfx_{}_{}", "a".repeat(16), "b".repeat(63)),
        ] {
            assert_eq!(parse_api_token(bad), None, "{bad:?}");
        }
    }
}
