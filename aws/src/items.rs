//! How connections, subscriptions and requests are laid out as items: the one place that
//! maps the domain types onto attributes, for the store and for stream records alike.
//!
//! Free-form JSON from clients and handlers (a request's `payload` and `result`, a
//! subscription's `variables`, a connection's `initPayload`) is kept as JSON text: empty
//! maps and lists inside it would otherwise be attribute values that DynamoDB Local's stream
//! records cannot carry, and its shape is the client's business, not the table's.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use streamer_core::{
    AsyncRequest, Checkpoint, Connection, Error, Phase, RequestStatus, RequestTemplate, Result,
    Subscription, SubscriptionKey,
};

use crate::tables::{
    ACTIVE, AWAITING_INIT, BY_CREATION, BY_PARENT, BY_STATUS, CONNECTIONS_BY_TENANT, HISTORY,
    INDEX_SHARDS,
};

/// An item as the SDK takes it.
pub(crate) type Item = HashMap<String, AttributeValue>;

/// Attributes of a request kept as JSON text.
const REQUEST_TEXT: &[&str] = &["payload", "result"];
/// Attributes of a subscription kept as JSON text.
const SUBSCRIPTION_TEXT: &[&str] = &["variables"];
/// Attributes of a connection kept as JSON text.
pub(crate) const CONNECTION_TEXT: &[&str] = &["initPayload"];

pub(crate) fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub(crate) fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// JSON text of a value; `null` stays a `NULL` attribute.
pub(crate) fn json_text(value: &Value) -> Value {
    match value {
        Value::Null => Value::Null,
        other => Value::String(other.to_string()),
    }
}

/// A value as an item, with `text` attributes turned into JSON text.
fn encode<T: Serialize>(value: &T, text: &[&str]) -> Result<Item> {
    let mut value =
        serde_json::to_value(value).map_err(|e| Error::backend("mapping an item", e))?;
    if let Value::Object(fields) = &mut value {
        for name in text {
            if let Some(field) = fields.get_mut(*name) {
                *field = json_text(field);
            }
        }
    }
    serde_dynamo::to_item(value).map_err(|e| Error::backend("mapping an item", e))
}

/// An item as a value, with `text` attributes read back from JSON text.
fn decode<T: DeserializeOwned, I: Into<serde_dynamo::Item>>(item: I, text: &[&str]) -> Result<T> {
    let mut value: Value =
        serde_dynamo::from_item(item).map_err(|e| Error::backend("reading an item", e))?;
    if let Value::Object(fields) = &mut value {
        for name in text {
            if let Some(field) = fields.get_mut(*name)
                && let Value::String(text) = field
            {
                *field = serde_json::from_str(text)
                    .map_err(|e| Error::backend(format!("reading the JSON of {name}"), e))?;
            }
        }
    }
    serde_json::from_value(value).map_err(|e| Error::backend("reading an item", e))
}

/// The partition of the sparse `awaitingInit` index: set while a connection waits for
/// `connection_init`, removed when it is acknowledged; `pending#{shard}`.
pub(crate) const AWAITING_PARTITION: &str = "pending";

/// The shard of an item of a sharded index ([`INDEX_SHARDS`]): FNV-1a of its id, which does
/// not change between builds as the standard library's hasher may.
pub(crate) fn shard_of(id: &str) -> u32 {
    let hash = id.bytes().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    });
    hash % INDEX_SHARDS
}

/// The partition of a sharded index for `value` in `shard`.
pub(crate) fn sharded(value: &str, shard: u32) -> String {
    format!("{value}#{shard}")
}

/// The connections item of a connection.
pub fn connection_item(connection: &Connection) -> Result<Item> {
    let mut item = encode(connection, CONNECTION_TEXT)?;
    if connection.phase == Phase::AwaitingInit {
        item.insert(
            AWAITING_INIT.partition_key.to_owned(),
            s(sharded(AWAITING_PARTITION, shard_of(&connection.id))),
        );
    }
    if let Some(principal) = &connection.principal {
        item.insert(
            CONNECTIONS_BY_TENANT.partition_key.to_owned(),
            s(&principal.tenant),
        );
    }
    Ok(item)
}

/// The connection in a connections item.
pub fn connection_from_item(item: Item) -> Result<Connection> {
    decode(item, CONNECTION_TEXT)
}

/// The sort key of a subscription: `connectionId#operationId`.
pub(crate) fn subscription_sort_key(key: &SubscriptionKey) -> String {
    format!("{}#{}", key.connection_id, key.operation_id)
}

/// The primary key of a subscription.
pub(crate) fn subscription_key(key: &SubscriptionKey) -> Item {
    HashMap::from([
        ("requestId".to_owned(), s(&key.request_id)),
        ("sk".to_owned(), s(subscription_sort_key(key))),
    ])
}

/// The subscriptions item of a subscription.
pub fn subscription_item(subscription: &Subscription) -> Result<Item> {
    let mut item = encode(subscription, SUBSCRIPTION_TEXT)?;
    item.insert("sk".to_owned(), s(subscription_sort_key(&subscription.key)));
    Ok(item)
}

/// The subscription in a subscriptions item.
pub fn subscription_from_item(item: Item) -> Result<Subscription> {
    decode(item, SUBSCRIPTION_TEXT)
}

/// The `byStatus` partition of a tenant's requests of one status.
pub(crate) fn status_partition(tenant: &str, status: RequestStatus) -> String {
    format!("{tenant}#{status}")
}

/// The key of the counter of `tenant`'s enqueues in the second starting at `window`.
pub(crate) fn enqueue_counter_id(tenant: &str, window: i64) -> String {
    format!("quota#enqueue#{tenant}#{window}")
}

/// The connections-table item that counts a tenant's requests not yet ended (`active`).
pub(crate) fn active_counter_id(tenant: &str) -> String {
    format!("quota#active#{tenant}")
}

/// The history-table partition that holds a tenant's templates (sorted by name), apart from
/// every request's history.
pub(crate) fn templates_partition(tenant: &str) -> String {
    format!("template#{tenant}")
}

/// The history-table partition that holds a workflow's checkpoints (sorted by index), apart
/// from its states.
pub(crate) fn checkpoints_partition(request_id: &str) -> String {
    format!("steps#{request_id}")
}

/// The attributes of a checkpoint item besides its keys, `value` as JSON text.
pub(crate) fn checkpoint_attributes(checkpoint: &Checkpoint) -> Result<Item> {
    encode(checkpoint, &["value"])
}

/// The checkpoint in a history-table item.
pub(crate) fn checkpoint_from_item(item: Item) -> Result<Checkpoint> {
    decode(item, &["value"])
}

/// The attributes of a template item besides its keys, `payload` as JSON text.
pub(crate) fn template_attributes(template: &RequestTemplate) -> Result<Item> {
    encode(template, &["payload"])
}

/// The template in a history-table item.
pub(crate) fn template_from_item(item: Item) -> Result<RequestTemplate> {
    decode(item, &["payload"])
}

/// The sort key of the listing indexes: creation time, then id.
pub(crate) fn created_key(request: &AsyncRequest) -> String {
    format!(
        "{}#{}",
        request
            .created_at
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        request.id
    )
}

/// The requests item of a request, with the keys of the listing indexes.
pub fn request_item(request: &AsyncRequest) -> Result<Item> {
    let mut item = encode(request, REQUEST_TEXT)?;
    item.insert(BY_CREATION.partition_key.to_owned(), s(&request.tenant));
    item.insert(
        BY_STATUS.partition_key.to_owned(),
        s(status_partition(&request.tenant, request.status)),
    );
    item.insert(BY_CREATION.sort_key.to_owned(), s(created_key(request)));
    if !request.status.is_terminal() {
        item.insert(
            ACTIVE.partition_key.to_owned(),
            s(sharded(request.status.as_str(), shard_of(&request.id))),
        );
    }
    if let Some(parent) = &request.parent {
        item.insert(BY_PARENT.partition_key.to_owned(), s(&parent.id));
        item.insert(BY_PARENT.sort_key.to_owned(), s(child_key(parent.index)));
    }
    Ok(item)
}

/// The sort key of a child in the `byParent` index: its index, zero-padded so that text
/// order is number order.
pub(crate) fn child_key(index: u32) -> String {
    format!("{index:010}")
}

/// The sort key of a kept state: its version, zero-padded so that text order is number order.
pub(crate) fn version_key(version: u64) -> String {
    format!("{version:020}")
}

/// The history item of one state of a request.
pub fn history_item(state: &AsyncRequest) -> Result<Item> {
    let mut item = encode(state, REQUEST_TEXT)?;
    // A batch's marks are how it counts, not what a resuming subscriber sees.
    item.remove("childMarks");
    item.insert(
        HISTORY.sort_key.unwrap_or_default().to_owned(),
        s(version_key(state.version)),
    );
    Ok(item)
}

/// The request in a requests item: from the SDK, or from a stream record's image.
pub fn request_from_item<I: Into<serde_dynamo::Item>>(item: I) -> Result<AsyncRequest> {
    decode(item, REQUEST_TEXT)
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};
    use serde_json::json;
    use streamer_core::RequestError;

    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_795_000_000 + seconds, 0).unwrap()
    }

    /// Items as DynamoDB JSON, attributes sorted.
    fn shape(item: Item) -> Value {
        let item = serde_dynamo::Item::from(item);
        let value = serde_json::to_value(item).unwrap();
        let sorted: std::collections::BTreeMap<String, Value> =
            serde_json::from_value(value).unwrap();
        serde_json::to_value(sorted).unwrap()
    }

    #[test]
    fn item_shapes_of_the_three_tables() {
        let mut connection = Connection::new("conn-1", at(0));
        connection.init_payload = Some(json!({}).into());
        connection.operations.insert("op-1".into(), "req-1".into());
        let subscription = Subscription {
            key: SubscriptionKey {
                request_id: "req-1".into(),
                connection_id: "conn-1".into(),
                operation_id: "op-1".into(),
            },
            query: "subscription($id: ID!) { requestProgress(id: $id) { status } }".into(),
            operation_name: None,
            variables: Some(json!({ "id": "req-1", "empty": [] })),
            last_version: 2,
            created_at: at(1),
            expires_at: connection.expires_at,
            pushing_until: None,
            principal: None,
        };
        let mut request = AsyncRequest::new(
            "req-1",
            "flakyImport",
            json!({ "failTimes": 1, "tags": {} }),
            at(2),
        );
        request.start(at(3)).unwrap();
        let error = RequestError {
            code: "UPSTREAM_UNAVAILABLE".into(),
            message: "try again".into(),
            retryable: true,
        };
        request.retry_at(error, at(5), at(4)).unwrap();
        insta::assert_json_snapshot!(json!({
            "connections": shape(connection_item(&connection).unwrap()),
            "subscriptions": shape(subscription_item(&subscription).unwrap()),
            "requests": shape(request_item(&request).unwrap()),
        }));
        // And back.
        assert_eq!(
            connection_from_item(connection_item(&connection).unwrap()).unwrap(),
            connection
        );
        assert_eq!(
            subscription_from_item(subscription_item(&subscription).unwrap()).unwrap(),
            subscription
        );
        assert_eq!(
            request_from_item(request_item(&request).unwrap()).unwrap(),
            request
        );
    }
}
