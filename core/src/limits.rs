//! [`Limits`]: what one client may ask of the service, with API Gateway's own limits as the
//! defaults where it has them. A request over a limit gets an error that names the limit; the
//! connection and its other operations carry on.

use serde_json::{Value, json};

/// The limits, each with its documented default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame sent to a client: 120 KiB, a margin under API Gateway's 128 KB message
    /// limit (the Management API answers a larger post with 413). A result over it is
    /// answered with an `error` for its operation.
    pub max_message_bytes: usize,
    /// Deepest selection nesting of a document: 12.
    pub max_depth: usize,
    /// Most fields a document selects, fragments expanded and the selection of a list
    /// counted once per item it may return (`first`, or the default page): 1,000.
    pub max_complexity: usize,
    /// Most aliased fields in a document, fragments expanded: 30.
    pub max_aliases: usize,
    /// Most active subscriptions on one connection: 100 (AppSync's default).
    pub max_subscriptions: usize,
    /// Longest operation id: 128 characters.
    pub max_operation_id: usize,
    /// Largest GraphQL document: 32 KiB (API Gateway's client frame). Checked before the
    /// document is parsed.
    pub max_document_bytes: usize,
    /// Largest `connection_init` payload kept with a connection, as JSON, the token taken
    /// out: 4 KiB. A larger one closes the connection with 4400.
    pub max_init_payload_bytes: usize,
    /// Largest job payload, as JSON: 64 KiB (a request item holds it, within DynamoDB's
    /// 400 KB per item).
    pub max_payload_bytes: usize,
    /// Most items of one batch: 1,000 (at most [`crate::batch::MAX_BATCH_ITEMS`], which a
    /// batch's item holds).
    pub max_batch_items: usize,
    /// Most authenticated connections of one tenant at once. A quota: none unless set (a
    /// multi-tenant deployment sets it; SECURITY.md recommends 1,000).
    pub max_tenant_connections: Option<usize>,
    /// Most requests of one tenant queued, running or retrying at once. A quota: none
    /// unless set (SECURITY.md recommends 10,000).
    pub max_tenant_active_requests: Option<usize>,
    /// Most enqueues of one tenant in one second. A quota: none unless set (SECURITY.md
    /// recommends 1,000).
    pub max_tenant_enqueues_per_second: Option<u32>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: 120 * 1024,
            max_depth: 12,
            max_complexity: 1000,
            max_aliases: 30,
            max_subscriptions: 100,
            max_operation_id: 128,
            max_document_bytes: 32 * 1024,
            max_init_payload_bytes: 4 * 1024,
            max_payload_bytes: 64 * 1024,
            max_batch_items: 1_000,
            max_tenant_connections: None,
            max_tenant_active_requests: None,
            max_tenant_enqueues_per_second: None,
        }
    }
}

/// The size of a value as JSON text, counted without building the text.
pub fn json_len(value: &impl serde::Serialize) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing to a counter fails only where the value cannot be JSON: it counts as empty.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

/// A limit that was exceeded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} is {actual}, over the limit of {max}")]
pub struct LimitExceeded {
    /// The limit's name, as in the error's `extensions.limit`: `messageBytes`, `depth`,
    /// `complexity`, `aliases`, `subscriptions`, `operationId`, `payloadBytes`, `documentBytes`,
    /// `initPayloadBytes`.
    pub limit: &'static str,
    /// What was measured, for people.
    pub what: &'static str,
    /// The measure.
    pub actual: usize,
    /// The limit.
    pub max: usize,
}

impl LimitExceeded {
    /// Checks `actual` against `max`.
    pub fn check(
        limit: &'static str,
        what: &'static str,
        actual: usize,
        max: usize,
    ) -> Result<(), Self> {
        if actual > max {
            Err(Self {
                limit,
                what,
                actual,
                max,
            })
        } else {
            Ok(())
        }
    }

    /// The error as a GraphQL error, code `LIMIT_EXCEEDED`.
    pub fn to_graphql(&self) -> Value {
        json!({
            "message": self.to_string(),
            "extensions": {
                "code": "LIMIT_EXCEEDED",
                "limit": self.limit,
                "max": self.max,
                "actual": self.actual,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exceeded_limit_names_itself() {
        assert_eq!(
            LimitExceeded::check("depth", "the query depth", 12, 12),
            Ok(())
        );
        let error = LimitExceeded::check("depth", "the query depth", 13, 12).unwrap_err();
        assert_eq!(
            error.to_graphql(),
            json!({
                "message": "the query depth is 13, over the limit of 12",
                "extensions": { "code": "LIMIT_EXCEEDED", "limit": "depth", "max": 12, "actual": 13 }
            })
        );
    }
}
