//! Access control, the pure part: roles and what they may do, scopes (the whole cluster, a tenant,
//! an app or an env) and what they cover, the stored token record, and the one decision every
//! request goes through: may this principal do this action on this target?

use std::fmt;

use serde::{Deserialize, Serialize};

use super::check_segment;

/// What a token may do, from least to most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Resolve and watch only: what an application holds.
    Client,
    /// Read everything in scope (plus resolve and watch).
    Viewer,
    /// Viewer, plus write versions and schemas and delete configs.
    Editor,
    /// Viewer, plus change releases (publish, gray rules, rollback). Not a superset of editor:
    /// who writes and who ships can be different people.
    Publisher,
    /// Everything in scope, including apps, envs and tokens.
    Admin,
}

impl Role {
    pub const ALL: [Role; 5] = [Role::Client, Role::Viewer, Role::Editor, Role::Publisher, Role::Admin];

    pub fn name(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Viewer => "viewer",
            Role::Editor => "editor",
            Role::Publisher => "publisher",
            Role::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Result<Role, AccessError> {
        Role::ALL.into_iter().find(|r| r.name() == text).ok_or_else(|| AccessError::BadRole(text.to_string()))
    }

    /// Whether this role may perform `action` (the scope is checked separately).
    pub fn allows(self, action: Action) -> bool {
        match action {
            Action::Resolve => true,
            Action::Read => self != Role::Client,
            Action::Write => matches!(self, Role::Editor | Role::Admin),
            Action::Release => matches!(self, Role::Publisher | Role::Admin),
            Action::Manage => self == Role::Admin,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The kinds of things a request does; every route needs exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Resolve configs and watch them.
    Resolve,
    /// Read records, versions, releases, schemas, audit, watchers, metrics.
    Read,
    /// Write versions and schemas, delete configs.
    Write,
    /// Change releases.
    Release,
    /// Create and delete tenants, apps and envs; manage tokens; the admin API.
    Manage,
}

impl Action {
    /// The least role that may perform it, for error messages.
    pub fn least_role(self) -> &'static str {
        match self {
            Action::Resolve => "client",
            Action::Read => "viewer",
            Action::Write => "editor",
            Action::Release => "publisher",
            Action::Manage => "admin",
        }
    }
}

/// Where a token applies: the whole cluster, or a tenant, an app or an env and everything under it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Scope {
    /// Empty: the whole cluster. Otherwise tenant, then app, then env.
    pub path: Vec<String>,
}

impl Scope {
    pub fn cluster() -> Scope {
        Scope { path: Vec::new() }
    }

    /// `*` (the cluster), `tenant`, `tenant/app` or `tenant/app/env`.
    pub fn parse(text: &str) -> Result<Scope, AccessError> {
        if text == "*" {
            return Ok(Scope::cluster());
        }
        let path: Vec<String> = text.split('/').map(str::to_string).collect();
        if path.len() > 3 {
            return Err(AccessError::BadScope(format!("{text:?} has more than three parts (tenant/app/env)")));
        }
        for (field, segment) in ["tenant", "app", "env"].into_iter().zip(&path) {
            check_segment(field, segment).map_err(|e| AccessError::BadScope(format!("{text:?}: {e}")))?;
        }
        Ok(Scope { path })
    }

    pub fn is_cluster(&self) -> bool {
        self.path.is_empty()
    }

    pub fn tenant(&self) -> Option<&str> {
        self.path.first().map(String::as_str)
    }

    /// Whether everything in `target` lies inside this scope.
    pub fn covers(&self, target: &Scope) -> bool {
        target.path.len() >= self.path.len() && self.path.iter().zip(&target.path).all(|(mine, theirs)| mine == theirs)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str("*")
        } else {
            f.write_str(&self.path.join("/"))
        }
    }
}

/// Longest token name, in bytes, and longest lifetime (ten years).
pub const MAX_TOKEN_NAME_LEN: usize = 128;
pub const MAX_TOKEN_TTL_SECONDS: u64 = 10 * 365 * 24 * 3600;

/// A token id: 16 hex digits.
pub fn check_token_id(id: &str) -> Result<(), AccessError> {
    if id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(AccessError::BadTokenRequest(format!("token id {id:?} is not 16 hex digits")))
    }
}

/// A token's name, scope and lifetime as a create request must carry them.
pub fn check_new_token(name: &str, scope: &Scope, ttl_seconds: Option<u64>) -> Result<(), AccessError> {
    if name.trim().is_empty() || name.len() > MAX_TOKEN_NAME_LEN || name.chars().any(char::is_control) {
        return Err(AccessError::BadTokenRequest(format!(
            "name must be 1 to {MAX_TOKEN_NAME_LEN} printable characters"
        )));
    }
    if Scope::parse(&scope.to_string()).as_ref() != Ok(scope) {
        return Err(AccessError::BadScope(format!("{scope}")));
    }
    match ttl_seconds {
        Some(ttl) if ttl == 0 || ttl > MAX_TOKEN_TTL_SECONDS => {
            Err(AccessError::BadTokenRequest(format!("ttl_seconds must be 1 to {MAX_TOKEN_TTL_SECONDS}, got {ttl}")))
        }
        _ => Ok(()),
    }
}

/// A token as every node stores it, replicated through Raft. The secret itself is never stored:
/// only its sha256 (tokens carry 256 random bits, so a fast hash is enough; there is nothing to
/// guess that a slow hash would protect).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub scope: Scope,
    pub secret_sha256: [u8; 32],
    pub created_ms: u64,
    pub created_by: String,
    pub expires_ms: Option<u64>,
    pub revoked: Option<Revocation>,
}

/// When and by whom a token was revoked; the record is kept so lists show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    pub time_ms: u64,
    pub by: String,
}

/// Who is making a request, once its credential has been checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Recorded as the actor of every change it makes: `token:<id>`, `bootstrap-admin`, or
    /// `anonymous` when access control is disabled.
    pub actor: String,
    pub role: Role,
    pub scope: Scope,
}

impl Principal {
    /// Everything, everywhere: the bootstrap admin token, or any request when auth is disabled.
    pub fn superuser(actor: &str) -> Principal {
        Principal { actor: actor.to_string(), role: Role::Admin, scope: Scope::cluster() }
    }

    /// May this principal perform `action` on `target`?
    pub fn authorize(&self, action: Action, target: &Scope) -> Result<(), AccessError> {
        if !self.role.allows(action) {
            return Err(AccessError::RoleTooSmall { role: self.role, needed: action.least_role() });
        }
        if !self.scope.covers(target) {
            return Err(AccessError::OutOfScope { scope: self.scope.clone(), target: target.clone() });
        }
        Ok(())
    }
}

/// Why a request was refused after its credential was accepted (403), or why a token request is
/// malformed (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    #[error("this token's role is {role}; this needs {needed} or admin")]
    RoleTooSmall { role: Role, needed: &'static str },
    #[error("this token is scoped to {scope}; {target} is outside it")]
    OutOfScope { scope: Scope, target: Scope },
    #[error("unknown role {0:?}: use client, viewer, editor, publisher or admin")]
    BadRole(String),
    #[error("invalid scope {0}: use *, tenant, tenant/app or tenant/app/env")]
    BadScope(String),
    #[error("{0}")]
    BadTokenRequest(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(text: &str) -> Scope {
        Scope::parse(text).unwrap()
    }

    #[test]
    fn scopes_cover_themselves_and_what_is_under_them() {
        assert!(scope("*").covers(&scope("acme/shop/prod")));
        assert!(scope("acme").covers(&scope("acme")));
        assert!(scope("acme").covers(&scope("acme/shop/prod")));
        assert!(scope("acme/shop").covers(&scope("acme/shop/prod")));
        assert!(!scope("acme/shop").covers(&scope("acme")), "an app token does not cover its tenant");
        assert!(!scope("acme/shop").covers(&scope("acme/shopping/prod")), "segments compare whole");
        assert!(!scope("acme").covers(&scope("*")));
        assert!(!scope("acme").covers(&scope("other")));
    }

    #[test]
    fn scopes_parse_and_print_round_trip() {
        for text in ["*", "acme", "acme/shop", "acme/shop/prod"] {
            assert_eq!(scope(text).to_string(), text);
        }
        for bad in ["", "a/b/c/d", "acme//prod", "acme/../x", "a b"] {
            assert!(matches!(Scope::parse(bad), Err(AccessError::BadScope(_))), "{bad:?}");
        }
        let smuggled = Scope { path: vec!["acme/shop".into()] };
        assert!(check_new_token("ci", &smuggled, None).is_err(), "a segment holding a slash is refused");
        assert!(check_new_token("ci", &scope("acme/shop"), Some(60)).is_ok());
        assert!(check_new_token("", &scope("acme"), None).is_err());
        assert!(check_new_token("ci", &scope("acme"), Some(0)).is_err());
        assert!(check_token_id("0123456789abcdef").is_ok() && check_token_id("xyz").is_err());
    }

    #[test]
    fn each_role_does_exactly_its_actions() {
        use Action::*;
        let table = [
            (Role::Client, vec![Resolve]),
            (Role::Viewer, vec![Resolve, Read]),
            (Role::Editor, vec![Resolve, Read, Write]),
            (Role::Publisher, vec![Resolve, Read, Release]),
            (Role::Admin, vec![Resolve, Read, Write, Release, Manage]),
        ];
        for (role, allowed) in table {
            for action in [Resolve, Read, Write, Release, Manage] {
                assert_eq!(role.allows(action), allowed.contains(&action), "{role} {action:?}");
            }
            assert_eq!(Role::parse(role.name()), Ok(role));
        }
        assert!(Role::parse("root").is_err());
    }

    #[test]
    fn authorize_checks_role_then_scope() {
        let editor = Principal { actor: "token:1".into(), role: Role::Editor, scope: scope("acme/shop") };
        assert_eq!(editor.authorize(Action::Write, &scope("acme/shop/prod")), Ok(()));
        assert!(matches!(
            editor.authorize(Action::Release, &scope("acme/shop/prod")),
            Err(AccessError::RoleTooSmall { needed: "publisher", .. })
        ));
        assert!(matches!(
            editor.authorize(Action::Write, &scope("acme/web/prod")),
            Err(AccessError::OutOfScope { .. })
        ));
        assert_eq!(Principal::superuser("bootstrap-admin").authorize(Action::Manage, &Scope::cluster()), Ok(()));
    }
}
