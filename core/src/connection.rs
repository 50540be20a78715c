//! What the gateway persists per socket. In Lambda every frame is a separate invocation, so
//! the protocol state lives here, not in memory; handshake headers and the query string exist
//! only on `$connect`, so whatever later messages need is copied here then.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// API Gateway closes every WebSocket connection this long after it opened (the local server
/// does the same by default). A state change whose stream records keep failing is retried at
/// least this long (the template's `ProcessorMaximumRecordAgeSeconds`, the poller's
/// `max_record_age`), so that no connection that could receive it is still open when it is
/// given up.
pub const MAX_CONNECTION_LIFETIME: Duration = Duration::hours(2);

/// A connection is dropped by TTL this long after it opened, and its subscriptions with it:
/// API Gateway closes every connection after [`MAX_CONNECTION_LIFETIME`], and `$disconnect` is best
/// effort.
pub const RETENTION: Duration = Duration::hours(3);

/// Where a connection is in the graphql-transport-ws handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Phase {
    /// Socket open, no `connection_init` yet.
    AwaitingInit,
    /// `connection_ack` sent; operations may start.
    Acknowledged,
}

/// One client socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Connection {
    /// The id API Gateway (or the local server) assigned.
    pub id: String,
    /// The handshake phase.
    pub phase: Phase,
    /// When the socket opened.
    pub connected_at: DateTime<Utc>,
    /// The `connection_init` payload, once received (at most `initPayloadBytes`). Shared:
    /// every frame reads the connection, and the payload is not copied for it.
    pub init_payload: Option<std::sync::Arc<Value>>,
    /// The `$connect` query string, kept because later events do not carry it.
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// Active subscriptions: operation id → request id. Doubles as the duplicate-id check
    /// (4409) and as the index that lets `$disconnect` delete subscriptions without a scan.
    #[serde(default)]
    pub operations: BTreeMap<String, String>,
    /// Who is connected, once authenticated (on `$connect` or `connection_init`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<crate::Principal>,
    /// TTL attribute, epoch seconds.
    pub expires_at: i64,
}

impl Connection {
    /// A new connection that still awaits `connection_init`.
    pub fn new(id: impl Into<String>, connected_at: DateTime<Utc>) -> Self {
        Self {
            id: id.into(),
            phase: Phase::AwaitingInit,
            connected_at,
            init_payload: None,
            query: BTreeMap::new(),
            operations: BTreeMap::new(),
            principal: None,
            expires_at: (connected_at + RETENTION).timestamp(),
        }
    }

    /// The operations with a subscription, operation id → request id, without the marks of
    /// early `complete`s.
    pub fn subscriptions(&self) -> impl Iterator<Item = (&String, &String)> {
        self.operations
            .iter()
            .filter(|(_, request_id)| completed_early_at(request_id).is_none())
    }
}

/// The mark an early `complete` leaves in [`Connection::operations`] in place of a request
/// id: on AWS a connection's frames run as separate invocations, and a client's `complete`
/// may be handled before the `subscribe` it ends. The subscribe finds the mark and stores
/// nothing. No request id starts with `#`.
pub fn completed_early_mark(at_ms: i64) -> String {
    format!("#completed@{at_ms}")
}

/// When an early `complete` was marked, if `request_id` is such a mark.
pub fn completed_early_at(request_id: &str) -> Option<i64> {
    request_id.strip_prefix("#completed@")?.parse().ok()
}
