//! Who is calling, and what they may touch.
//!
//! A connection is authenticated once (on `$connect` or `connection_init`) into a
//! [`Principal`], stored on the connection. Every request carries the tenant and the owner
//! that enqueued it; [`Access`] decides whether a principal may see one. Everything that does
//! not pass answers exactly as an unknown id would.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::AsyncRequest;

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Principal {
    /// The tenant: the unit of isolation and of quotas.
    pub tenant: String,
    /// The user within the tenant.
    pub user: String,
    /// When the credentials stop being valid (a token's `exp`): pushes stop and the
    /// connection is closed then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

impl Principal {
    /// A principal whose credentials do not expire.
    pub fn new(tenant: impl Into<String>, user: impl Into<String>) -> Self {
        Self {
            tenant: tenant.into(),
            user: user.into(),
            expires_at: None,
        }
    }

    /// Whether the credentials have expired at `now`.
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

/// What a connection presented: a bearer token (from `connection_init`'s `authorization`,
/// or the `$connect` `Authorization` header or `authorization` query parameter), and the
/// context a Lambda authorizer attached on `$connect`.
#[derive(Clone, Default, PartialEq)]
pub struct Credentials {
    /// The token, without its `Bearer ` prefix.
    pub token: Option<String>,
    /// The API Gateway authorizer context (`principalId` and the authorizer's `context`).
    pub authorizer: BTreeMap<String, Value>,
}

impl std::fmt::Debug for Credentials {
    /// Never prints the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .field("authorizer", &self.authorizer.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Credentials {
    /// The token of an `Authorization` value: `Bearer <token>` (the scheme in any case), or
    /// a bare token.
    pub fn bearer(value: &str) -> Option<String> {
        let value = value.trim();
        if value.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let token = match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            Some(_) => return None,
            None => value,
        };
        (!token.is_empty()).then(|| token.to_owned())
    }

    /// Whether nothing was presented.
    pub fn is_empty(&self) -> bool {
        self.token.is_none() && self.authorizer.is_empty()
    }
}

/// Why credentials were refused. The message is safe to show a client: it never carries the
/// token or a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Nothing was presented.
    #[error("authentication required")]
    Missing,
    /// The token has expired.
    #[error("token expired")]
    Expired,
    /// The credentials do not check out (bad signature, malformed, wrong claims).
    #[error("invalid credentials: {0}")]
    Invalid(String),
}

/// Turns what a connection presented into a principal.
#[async_trait]
pub trait Authenticator: Send + Sync + std::fmt::Debug {
    /// Checks `credentials` at `now`.
    async fn authenticate(
        &self,
        credentials: &Credentials,
        now: DateTime<Utc>,
    ) -> Result<Principal, AuthError>;
}

/// Development mode: every connection is the one anonymous principal of the tenant `dev`,
/// whatever it presents. Never for a deployment that holds anyone's data.
#[derive(Debug, Clone, Copy, Default)]
pub struct DevMode;

/// The tenant of [`DevMode`].
pub const DEV_TENANT: &str = "dev";

#[async_trait]
impl Authenticator for DevMode {
    async fn authenticate(
        &self,
        _: &Credentials,
        _: DateTime<Utc>,
    ) -> Result<Principal, AuthError> {
        Ok(Principal::new(DEV_TENANT, "anonymous"))
    }
}

/// The authorization rule: who may see, follow, cancel and re-drive a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Access {
    /// Anyone of the request's tenant.
    #[default]
    Tenant,
    /// Only the user who enqueued it (within its tenant).
    Owner,
}

impl Access {
    /// Whether `principal` may act on `request`.
    pub fn allows(self, principal: &Principal, request: &AsyncRequest) -> bool {
        principal.tenant == request.tenant
            && match self {
                Self::Tenant => true,
                Self::Owner => principal.user == request.owner,
            }
    }

    /// The owner a listing is narrowed to, if any.
    pub fn owner_filter(self, principal: &Principal) -> Option<String> {
        match self {
            Self::Tenant => None,
            Self::Owner => Some(principal.user.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_values() {
        assert_eq!(Credentials::bearer("Bearer abc"), Some("abc".into()));
        assert_eq!(Credentials::bearer("bearer  abc "), Some("abc".into()));
        assert_eq!(Credentials::bearer("abc"), Some("abc".into()));
        assert_eq!(Credentials::bearer("Basic abc"), None);
        assert_eq!(Credentials::bearer("Bearer "), None);
        assert_eq!(Credentials::bearer(""), None);
    }

    #[test]
    fn credentials_never_print_the_token() {
        let credentials = Credentials {
            token: Some("secret-token".into()),
            authorizer: BTreeMap::new(),
        };
        assert!(!format!("{credentials:?}").contains("secret-token"));
    }
}
