//! A stored `requestProgress` operation: the client's own GraphQL document, kept so that the
//! processor can resolve every change against exactly the fields the client asked for.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Identifies a subscription: the request it follows and the socket operation it answers.
/// The request id comes first so that fan-out for one request is one query on one key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionKey {
    /// The followed request.
    pub request_id: String,
    /// The socket.
    pub connection_id: String,
    /// The graphql-transport-ws operation id.
    pub operation_id: String,
}

/// One client following one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    /// Who follows what.
    #[serde(flatten)]
    pub key: SubscriptionKey,
    /// The GraphQL document as the client sent it.
    pub query: String,
    /// The operation to run, when the document holds several.
    pub operation_name: Option<String>,
    /// The variables as the client sent them.
    pub variables: Option<Value>,
    /// The highest version pushed so far (or the client's `afterVersion`): nothing at or
    /// below it is pushed again.
    pub last_version: u64,
    /// When it was stored.
    pub created_at: DateTime<Utc>,
    /// TTL attribute, epoch seconds (the connection's).
    pub expires_at: i64,
    /// While a push to it is in flight: until when (epoch milliseconds) the pusher holds it.
    /// Pushes to one subscription never overlap, so they arrive in version order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pushing_until: Option<i64>,
    /// Who subscribed: states of another tenant are never pushed to it, and once its
    /// credentials expire nothing more is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<crate::Principal>,
}

impl Subscription {
    /// This subscription as [`crate::Store::release_push`] at `version` leaves it stored:
    /// unheld, pushed up to `version` (or further, if it was).
    #[must_use]
    pub fn released(&self, version: u64) -> Self {
        Self {
            last_version: self.last_version.max(version),
            pushing_until: None,
            ..self.clone()
        }
    }
}
