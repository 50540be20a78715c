//! [`DynamoDbStore`]: the store ports on DynamoDB. Items are mapped with `serde_dynamo`; every
//! race the ports describe is a conditional write; reads are strongly consistent.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::{UpdateItemError, UpdateItemOutput};
use aws_sdk_dynamodb::types::{
    AttributeValue, Delete, Put, ReturnValue, ReturnValuesOnConditionCheckFailure,
    TransactWriteItem, Update,
};
use serde_json::Value;
use streamer_core::store::{Page, RequestFilter};
use streamer_core::{
    AsyncRequest, Checkpoint, Connection, Error, Finish, Phase, Principal, RequestTemplate, Result,
    Store, Subscription, SubscriptionKey,
};

use crate::items::{
    AWAITING_PARTITION, Item, active_counter_id, checkpoint_attributes, checkpoint_from_item,
    checkpoints_partition, child_key, connection_from_item, connection_item, created_key,
    enqueue_counter_id, history_item, json_text, n, request_from_item, request_item, s, sharded,
    status_partition, subscription_from_item, subscription_item, subscription_key,
    template_attributes, template_from_item, templates_partition, version_key,
};
use crate::tables::{
    self, ACTIVE, AWAITING_INIT, BY_CREATION, BY_PARENT, BY_STATUS, CONNECTIONS,
    CONNECTIONS_BY_TENANT, HISTORY, INDEX_SHARDS, REQUESTS, SUBSCRIPTIONS, Tables,
};

/// The attributes of a request that never change once it is created.
const REQUEST_FIXED: &[&str] = &[
    "id",
    "parent",
    BY_PARENT.partition_key,
    BY_PARENT.sort_key,
    "payload",
    "action",
    "tenant",
    "owner",
    "createdAt",
    BY_CREATION.partition_key,
    BY_CREATION.sort_key,
];

/// The attributes of a request that a state leaves out when it has none (a lease, a wait's
/// children and time, ...): an update removes each one the new state leaves out, so that
/// nothing cleared stays stored.
const REQUEST_OMITTED_WHEN_EMPTY: &[&str] = &[
    "leaseUntil",
    "redrivenAfter",
    "priority",
    "template",
    "batch",
    "childMarks",
    "waitingFor",
    "wakeAt",
];

/// The string attribute `name` of an item.
fn text_of<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

/// The store on DynamoDB.
#[derive(Debug, Clone)]
pub struct DynamoDbStore {
    client: Client,
    tables: Tables,
    connections: String,
    subscriptions: String,
    requests: String,
    history: String,
}

/// Runs a query page by page until it has `limit` items or none are left.
async fn query_up_to(query: QueryFluentBuilder, limit: usize, context: &str) -> Result<Vec<Item>> {
    let mut pages = query
        .limit(i32::try_from(limit).unwrap_or(i32::MAX))
        .into_paginator()
        .send();
    let mut items = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| Error::backend(context, e))?;
        items.extend(page.items.unwrap_or_default());
        if items.len() >= limit {
            break;
        }
    }
    items.truncate(limit);
    Ok(items)
}

/// Whether an SDK error is a lost condition.
fn condition_failed<E, R>(error: &SdkError<E, R>) -> bool
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    error.as_service_error().and_then(|e| e.code()) == Some("ConditionalCheckFailedException")
}

/// The outcome of a conditional update of a connection that asked for the old item on a lost
/// condition: with an item, the condition itself failed ([`Error::Conflict`]); without one,
/// the connection does not exist ([`Error::NotFound`]).
fn on_existing_connection<R>(
    result: std::result::Result<UpdateItemOutput, SdkError<UpdateItemError, R>>,
    context: &'static str,
    conflict: impl FnOnce() -> String,
    missing: impl FnOnce() -> String,
) -> Result<()>
where
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match result {
        Ok(_) => Ok(()),
        Err(error) => match error.as_service_error() {
            Some(UpdateItemError::ConditionalCheckFailedException(e)) if e.item.is_some() => {
                Err(Error::Conflict(conflict()))
            }
            Some(UpdateItemError::ConditionalCheckFailedException(_)) => {
                Err(Error::NotFound(missing()))
            }
            _ => Err(Error::backend(context, error)),
        },
    }
}

/// A DynamoDB client for DynamoDB Local at `endpoint`, with dummy credentials.
pub(crate) fn local_client(endpoint: &str) -> Client {
    let credentials =
        aws_sdk_dynamodb::config::Credentials::new("local", "local", None, None, "streamer-local");
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
        .region(aws_sdk_dynamodb::config::Region::new(crate::LOCAL_REGION))
        .endpoint_url(endpoint)
        .credentials_provider(credentials)
        .interceptor(crate::CountCalls)
        .retry_classifier(crate::RetryTransactionConflicts)
        .build();
    Client::from_conf(config)
}

/// Runs a batch call (`BatchGetItem`, `BatchWriteItem`) on `pending` until DynamoDB leaves
/// nothing unprocessed (it does under throttling), again on what it left, with a backoff;
/// gives up after `ATTEMPTS` calls. `call` answers what it got and what was left.
async fn until_processed<K, R, F, Fut>(
    context: &'static str,
    mut pending: Vec<K>,
    mut call: F,
) -> Result<Vec<R>>
where
    F: FnMut(Vec<K>) -> Fut,
    Fut: std::future::Future<Output = Result<(Vec<R>, Vec<K>)>>,
{
    const ATTEMPTS: u32 = 10;
    let backoff = streamer_core::Backoff::new(
        std::time::Duration::from_millis(20),
        std::time::Duration::from_secs(1),
    );
    let mut got = Vec::new();
    let mut attempt = 1;
    while !pending.is_empty() {
        let (answered, left) = call(std::mem::take(&mut pending)).await?;
        got.extend(answered);
        pending = left;
        if !pending.is_empty() {
            if attempt == ATTEMPTS {
                return Err(Error::backend(
                    context,
                    std::io::Error::other(format!("left unprocessed after {ATTEMPTS} attempts")),
                ));
            }
            let delay = backoff.delay(attempt, &mut rand::rng());
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }
    Ok(got)
}

/// How a request's update in the form that keeps it counted or uncounted went.
#[derive(Debug, PartialEq, Eq)]
enum Plain {
    Written,
    /// The stored revision is not the expected one (or the request is gone): a conflict.
    Moved,
    /// The revision is the expected one, but the request crosses into or out of its
    /// tenant's count: the counted form applies.
    OtherForm,
}

impl DynamoDbStore {
    /// The requests with these ids (at most 100), in the order given, those that exist,
    /// strongly consistent. Keys DynamoDB leaves unprocessed (throttling) are asked again
    /// ([`until_processed`]).
    async fn get_hundred_requests(&self, ids: &[String]) -> Result<Vec<AsyncRequest>> {
        use aws_sdk_dynamodb::types::KeysAndAttributes;
        let keys: Vec<Item> = ids
            .iter()
            .map(|id| HashMap::from([("id".to_owned(), s(id))]))
            .collect();
        let items = until_processed("reading requests", keys, |keys| async move {
            let keys = KeysAndAttributes::builder()
                .set_keys(Some(keys))
                .consistent_read(true)
                .build()
                .map_err(|e| Error::backend("reading requests", e))?;
            let output = self
                .client
                .batch_get_item()
                .request_items(&self.requests, keys)
                .send()
                .await
                .map_err(|e| Error::backend("reading requests", e))?;
            let found = output
                .responses
                .and_then(|mut tables| tables.remove(&self.requests))
                .unwrap_or_default();
            let left = output
                .unprocessed_keys
                .and_then(|mut tables| tables.remove(&self.requests))
                .map(|keys| keys.keys)
                .unwrap_or_default();
            Ok((found, left))
        })
        .await?;
        let mut found: HashMap<String, AsyncRequest> = HashMap::new();
        for item in items {
            let request = request_from_item(item)?;
            found.insert(request.id.clone(), request);
        }
        Ok(ids.iter().filter_map(|id| found.remove(id)).collect())
    }

    /// The transaction item that moves `tenant`'s count of requests not yet ended by
    /// `delta`, refused when it would rise to more than `max`.
    fn active_count_change(
        &self,
        tenant: &str,
        delta: i64,
        max: Option<usize>,
    ) -> Result<TransactWriteItem> {
        let mut update = Update::builder()
            .table_name(&self.connections)
            .key("id", s(active_counter_id(tenant)))
            .update_expression("ADD active :delta")
            .expression_attribute_values(":delta", n(delta));
        if let Some(max) = max {
            update = update
                .condition_expression("attribute_not_exists(active) OR active < :max")
                .expression_attribute_values(":max", n(max));
        }
        let update = update
            .build()
            .map_err(|e| Error::backend("counting requests", e))?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    /// Moves `tenant`'s count of requests not yet ended by `delta` at once, refused
    /// ([`Error::QuotaFull`]) when it would rise over `max`.
    async fn add_active(&self, tenant: &str, delta: i64, max: Option<usize>) -> Result<()> {
        let full = || Error::QuotaFull(format!("tenant {tenant} has no room for {delta} requests"));
        let mut update = self
            .client
            .update_item()
            .table_name(&self.connections)
            .key("id", s(active_counter_id(tenant)))
            .update_expression("ADD active :delta")
            .expression_attribute_values(":delta", n(delta));
        if let Some(max) = max {
            let room = i64::try_from(max).unwrap_or(i64::MAX) - delta;
            if room < 0 {
                return Err(full());
            }
            update = update
                .condition_expression("attribute_not_exists(active) OR active <= :room")
                .expression_attribute_values(":room", n(room));
        }
        match update.send().await {
            Ok(_) => Ok(()),
            Err(error) if condition_failed(&error) => Err(full()),
            Err(error) => Err(Error::backend("counting requests", error)),
        }
    }

    /// Writes new requests ([`DynamoDbStore::put_all`]).
    async fn put_requests(&self, requests: &[AsyncRequest]) -> Result<()> {
        let items = requests.iter().map(request_item).collect::<Result<_>>()?;
        self.put_all(&self.requests, items, "creating requests")
            .await
    }

    /// Puts `items` into `table` 25 to a call (`BatchWriteItem`), a few calls at once; items
    /// DynamoDB leaves unprocessed (throttling) are written again with a backoff
    /// ([`until_processed`]). No two may have the same key.
    async fn put_all(&self, table: &str, items: Vec<Item>, context: &'static str) -> Result<()> {
        use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
        use futures::{StreamExt, TryStreamExt};
        /// Calls in flight at once.
        const CONCURRENT_CALLS: usize = 4;
        let writes = items
            .into_iter()
            .map(|item| {
                let put = PutRequest::builder()
                    .set_item(Some(item))
                    .build()
                    .map_err(|e| Error::backend(context, e))?;
                Ok(WriteRequest::builder().put_request(put).build())
            })
            .collect::<Result<Vec<_>>>()?;
        let chunks: Vec<Vec<WriteRequest>> = writes.chunks(25).map(<[_]>::to_vec).collect();
        futures::stream::iter(chunks)
            .map(|chunk| {
                until_processed(context, chunk, move |items| async move {
                    let output = self
                        .client
                        .batch_write_item()
                        .request_items(table, items)
                        .send()
                        .await
                        .map_err(|e| Error::backend(context, e))?;
                    let left = output
                        .unprocessed_items
                        .and_then(|mut tables| tables.remove(table))
                        .unwrap_or_default();
                    Ok((Vec::<()>::new(), left))
                })
            })
            .buffer_unordered(CONCURRENT_CALLS)
            .try_collect::<Vec<Vec<()>>>()
            .await?;
        Ok(())
    }

    /// A page of a batch's children, in their order in it: a Query of the `byParent` index,
    /// then the items. The index may lag them: a child that no longer has the status asked
    /// for is left out.
    async fn list_children(&self, parent: &str, filter: &RequestFilter) -> Result<Page> {
        let wanted = filter.limit;
        let mut query = self
            .client
            .query()
            .table_name(&self.requests)
            .index_name(BY_PARENT.name)
            .scan_index_forward(!filter.newest_first)
            .key_condition_expression("#parent = :parent")
            .expression_attribute_names("#parent", BY_PARENT.partition_key)
            .expression_attribute_values(":parent", s(parent));
        let mut filters = Vec::new();
        if let Some(status) = filter.status {
            filters.push("#status = :status");
            query = query
                .expression_attribute_names("#status", "status")
                .expression_attribute_values(":status", s(status.as_str()));
        }
        if let Some(owner) = &filter.owner {
            filters.push("#owner = :owner");
            query = query
                .expression_attribute_names("#owner", "owner")
                .expression_attribute_values(":owner", s(owner));
        }
        if !filters.is_empty() {
            query = query.filter_expression(filters.join(" AND "));
        }
        if let Some(after) = &filter.after {
            let Some(index) = self
                .get_request(after)
                .await?
                .and_then(|last| last.parent)
                .filter(|link| link.id == *parent)
                .map(|link| link.index)
            else {
                return Ok(Page::default());
            };
            query = query.set_exclusive_start_key(Some(HashMap::from([
                ("id".to_owned(), s(after)),
                (BY_PARENT.partition_key.to_owned(), s(parent)),
                (BY_PARENT.sort_key.to_owned(), s(child_key(index))),
            ])));
        }
        let keys = query_up_to(query, wanted + 1, "listing a batch's children").await?;
        let more = keys.len() > wanted;
        let ids: Vec<String> = keys
            .iter()
            .take(wanted)
            .filter_map(|key| text_of(key, "id").map(str::to_owned))
            .collect();
        let mut items = Vec::new();
        for chunk in ids.chunks(100) {
            items.extend(
                self.get_hundred_requests(chunk)
                    .await?
                    .into_iter()
                    .filter(|request| {
                        filter.status.is_none_or(|status| request.status == status)
                            && filter
                                .tenant
                                .as_ref()
                                .is_none_or(|tenant| request.tenant == *tenant)
                    }),
            );
        }
        let next = if more { ids.last().cloned() } else { None };
        Ok(Page { items, next })
    }

    /// Deletes a subscription unless a push holds it: [`Store::finish_subscription`] without
    /// its operation.
    async fn finish_alone(&self, key: &SubscriptionKey, now: i64) -> Result<Finish> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.subscriptions)
            .set_key(Some(subscription_key(key)))
            .condition_expression("attribute_not_exists(pushingUntil) OR pushingUntil < :now")
            .expression_attribute_values(":now", n(now))
            .return_values(ReturnValue::AllOld)
            .send()
            .await;
        match result {
            Ok(output) => Ok(match output.attributes {
                Some(item) => Finish::Deleted(Box::new(subscription_from_item(item)?)),
                None => Finish::Gone,
            }),
            Err(error) if condition_failed(&error) => Ok(Finish::Busy),
            Err(error) => Err(Error::backend("finishing a subscription", error)),
        }
    }

    /// A conditional update of a request (at `expected_revision`) that keeps it counted or
    /// uncounted; on a lost condition, the stored item tells which way it was lost.
    async fn update_plain(&self, update: Update, expected_revision: u64) -> Result<Plain> {
        let result = self
            .client
            .update_item()
            .table_name(update.table_name)
            .set_key(Some(update.key))
            .update_expression(update.update_expression)
            .set_condition_expression(update.condition_expression)
            .set_expression_attribute_names(update.expression_attribute_names)
            .set_expression_attribute_values(update.expression_attribute_values)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(Plain::Written),
            Err(error) => match error.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(failed)) => {
                    let stored = failed
                        .item()
                        .and_then(|item| item.get("revision"))
                        .and_then(|revision| revision.as_n().ok())
                        .and_then(|revision| revision.parse::<u64>().ok());
                    Ok(if stored == Some(expected_revision) {
                        Plain::OtherForm
                    } else {
                        Plain::Moved
                    })
                }
                _ => Err(Error::backend("updating a request", error)),
            },
        }
    }

    /// A conditional update of a request that moves its tenant's count by `delta` in the
    /// same transaction: `false` when its condition failed.
    async fn update_counted(&self, update: Update, tenant: &str, delta: i64) -> Result<bool> {
        let items = vec![
            TransactWriteItem::builder().update(update).build(),
            self.active_count_change(tenant, delta, None)?,
        ];
        Ok(self.transact(items, "updating a request").await?.is_ok())
    }

    /// Writes `items` in one transaction: `Err(i)` when it was cancelled because the
    /// condition of item `i` failed. A transaction cancelled because another one was writing
    /// the same item (every enqueue and end of a tenant writes its counter), or throttled, is
    /// tried again after a backoff, a few times: DynamoDB cancels rather than waits, and the
    /// SDK does not retry a cancellation.
    async fn transact(
        &self,
        items: Vec<TransactWriteItem>,
        context: &'static str,
    ) -> Result<std::result::Result<(), usize>> {
        const ATTEMPTS: u32 = 6;
        let backoff = streamer_core::Backoff::new(
            std::time::Duration::from_millis(10),
            std::time::Duration::from_millis(500),
        );
        let mut attempt = 1;
        loop {
            let result = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .send()
                .await;
            let error = match result {
                Ok(_) => return Ok(Ok(())),
                Err(error) => error,
            };
            if let Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) =
                error.as_service_error()
            {
                let reasons = cancelled.cancellation_reasons();
                if let Some(failed) = reasons
                    .iter()
                    .position(|reason| reason.code() == Some("ConditionalCheckFailed"))
                {
                    return Ok(Err(failed));
                }
                let contended = reasons.iter().any(|reason| {
                    matches!(
                        reason.code(),
                        Some("TransactionConflict" | "ThrottlingError")
                    )
                });
                if contended && attempt < ATTEMPTS {
                    let delay = backoff.delay(attempt, &mut rand::rng());
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                    continue;
                }
            }
            return Err(Error::backend(context, error));
        }
    }

    /// A store over these tables.
    pub fn new(client: Client, tables: Tables) -> Self {
        Self {
            connections: tables.name(&CONNECTIONS),
            subscriptions: tables.name(&SUBSCRIPTIONS),
            requests: tables.name(&REQUESTS),
            history: tables.name(&HISTORY),
            client,
            tables,
        }
    }

    /// A store on a local DynamoDB (DynamoDB Local) at `endpoint`, with dummy credentials.
    pub fn local(endpoint: &str, tables: Tables) -> Self {
        Self::new(local_client(endpoint), tables)
    }

    /// Creates the tables that do not exist yet, with their indexes, stream and TTL; returns
    /// the names of those it created.
    pub async fn create_tables(&self) -> Result<Vec<String>> {
        let mut created = Vec::new();
        for spec in tables::ALL {
            let name = self.tables.name(&spec);
            match spec.create(&self.client, name.clone()).send().await {
                Ok(_) => {
                    tracing::info!(table = %name, "created table");
                    created.push(name.clone());
                }
                Err(error)
                    if error
                        .as_service_error()
                        .is_some_and(|e| e.is_resource_in_use_exception()) => {}
                Err(error) => return Err(Error::backend(format!("creating table {name}"), error)),
            }
            let ttl = aws_sdk_dynamodb::types::TimeToLiveSpecification::builder()
                .enabled(true)
                .attribute_name(tables::TTL_ATTRIBUTE)
                .build()
                .expect("complete TTL specification");
            if let Err(error) = self
                .client
                .update_time_to_live()
                .table_name(&name)
                .time_to_live_specification(ttl)
                .send()
                .await
            {
                // Already enabled, or changed within the last hour: both leave TTL on.
                tracing::debug!(table = %name, error = %aws_sdk_dynamodb::error::DisplayErrorContext(&error), "TTL not updated");
            }
        }
        Ok(created)
    }

    /// How the deployed tables differ from their definitions here: one line per table that
    /// does not match, none when all do.
    pub async fn table_drift(&self) -> Result<Vec<String>> {
        let mut drift = Vec::new();
        for spec in tables::ALL {
            let name = self.tables.name(&spec);
            let table = self
                .client
                .describe_table()
                .table_name(&name)
                .send()
                .await
                .map_err(|e| Error::backend(format!("describing table {name}"), e))?
                .table
                .ok_or_else(|| Error::NotFound(format!("table {name}")))?;
            let ttl = self
                .client
                .describe_time_to_live()
                .table_name(&name)
                .send()
                .await
                .map_err(|e| Error::backend(format!("describing the TTL of {name}"), e))?
                .time_to_live_description;
            let found = tables::described_shape(&table, ttl.as_ref());
            let expected = spec.shape();
            if found != expected {
                drift.push(format!("{name}: expected {expected:?}, found {found:?}"));
            }
        }
        Ok(drift)
    }
}

#[async_trait]
impl Store for DynamoDbStore {
    async fn put_connection(&self, connection: &Connection) -> Result<()> {
        self.client
            .put_item()
            .table_name(&self.connections)
            .set_item(Some(connection_item(connection)?))
            .send()
            .await
            .map_err(|e| Error::backend("putting a connection", e))?;
        Ok(())
    }

    async fn get_connection(&self, id: &str) -> Result<Option<Connection>> {
        let output = self
            .client
            .get_item()
            .table_name(&self.connections)
            .key("id", s(id))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| Error::backend("reading a connection", e))?;
        output.item.map(connection_from_item).transpose()
    }

    async fn acknowledge_connection(
        &self,
        id: &str,
        payload: Option<Value>,
        principal: &Principal,
    ) -> Result<()> {
        let payload = to_attribute(json_text(&payload.unwrap_or(Value::Null)))?;
        let result = self
            .client
            .update_item()
            .table_name(&self.connections)
            .key("id", s(id))
            .update_expression(
                "SET phase = :acknowledged, initPayload = :payload, principal = :principal, \
                 #tenant = :tenant REMOVE initPartition",
            )
            .expression_attribute_names("#tenant", CONNECTIONS_BY_TENANT.partition_key)
            .expression_attribute_values(":principal", to_attribute(principal)?)
            .expression_attribute_values(":tenant", s(&principal.tenant))
            .condition_expression("attribute_exists(id) AND phase = :awaiting")
            .expression_attribute_values(":acknowledged", to_attribute(Phase::Acknowledged)?)
            .expression_attribute_values(":awaiting", to_attribute(Phase::AwaitingInit)?)
            .expression_attribute_values(":payload", payload)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        on_existing_connection(
            result,
            "acknowledging a connection",
            || format!("connection {id} already initialised"),
            || format!("connection {id}"),
        )
    }

    async fn delete_connection(&self, id: &str) -> Result<Option<Connection>> {
        let output = self
            .client
            .delete_item()
            .table_name(&self.connections)
            .key("id", s(id))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| Error::backend("deleting a connection", e))?;
        output.attributes.map(connection_from_item).transpose()
    }

    async fn delete_connection_awaiting_init(&self, id: &str) -> Result<bool> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.connections)
            .key("id", s(id))
            .condition_expression("phase = :awaiting")
            .expression_attribute_values(":awaiting", to_attribute(Phase::AwaitingInit)?)
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(error) if condition_failed(&error) => Ok(false),
            Err(error) => Err(Error::backend("deleting a connection awaiting init", error)),
        }
    }

    async fn add_operation(
        &self,
        connection_id: &str,
        operation_id: &str,
        request_id: &str,
    ) -> Result<()> {
        let result = self
            .client
            .update_item()
            .table_name(&self.connections)
            .key("id", s(connection_id))
            .update_expression("SET operations.#op = :request")
            .condition_expression("attribute_exists(id) AND attribute_not_exists(operations.#op)")
            .expression_attribute_names("#op", operation_id)
            .expression_attribute_values(":request", s(request_id))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        on_existing_connection(
            result,
            "adding an operation",
            || format!("operation {operation_id} is active"),
            || format!("connection {connection_id}"),
        )
    }

    async fn remove_operation(&self, connection_id: &str, operation_id: &str) -> Result<()> {
        let result = self
            .client
            .update_item()
            .table_name(&self.connections)
            .key("id", s(connection_id))
            .update_expression("REMOVE operations.#op")
            // Without it, an update of a missing connection would create one.
            .condition_expression("attribute_exists(id)")
            .expression_attribute_names("#op", operation_id)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) if condition_failed(&error) => Ok(()),
            Err(error) => Err(Error::backend("removing an operation", error)),
        }
    }

    async fn connections_awaiting_init(
        &self,
        before: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> Result<Vec<Connection>> {
        let before = serde_json::to_value(before)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        // Every shard, oldest first in each; then the oldest `limit` of them all. The index
        // holds keys only: a connection in it awaits init, which is all the sweeper reads.
        let mut found = Vec::new();
        for shard in 0..INDEX_SHARDS {
            let query = self
                .client
                .query()
                .table_name(&self.connections)
                .index_name(AWAITING_INIT.name)
                .key_condition_expression("#partition = :pending AND #connected < :before")
                .expression_attribute_names("#partition", AWAITING_INIT.partition_key)
                .expression_attribute_names("#connected", AWAITING_INIT.sort_key)
                .expression_attribute_values(":pending", s(sharded(AWAITING_PARTITION, shard)))
                .expression_attribute_values(":before", s(&before));
            for item in query_up_to(query, limit, "querying connections awaiting init").await? {
                let (Some(id), Some(connected_at)) =
                    (text_of(&item, "id"), text_of(&item, AWAITING_INIT.sort_key))
                else {
                    continue;
                };
                let Ok(connected_at) = chrono::DateTime::parse_from_rfc3339(connected_at) else {
                    continue;
                };
                found.push(Connection::new(id, connected_at.to_utc()));
            }
        }
        found.sort_by_key(|c| c.connected_at);
        found.truncate(limit);
        Ok(found)
    }

    async fn open_subscription(&self, subscription: &Subscription) -> Result<()> {
        let key = &subscription.key;
        let operation = Update::builder()
            .table_name(&self.connections)
            .key("id", s(&key.connection_id))
            .update_expression("SET operations.#op = :request")
            .condition_expression("attribute_exists(id) AND attribute_not_exists(operations.#op)")
            .expression_attribute_names("#op", &key.operation_id)
            .expression_attribute_values(":request", s(&key.request_id))
            .build()
            .map_err(|e| Error::backend("starting a subscription", e))?;
        let stored = Put::builder()
            .table_name(&self.subscriptions)
            .set_item(Some(subscription_item(subscription)?))
            .build()
            .map_err(|e| Error::backend("starting a subscription", e))?;
        let items = vec![
            TransactWriteItem::builder().update(operation).build(),
            TransactWriteItem::builder().put(stored).build(),
        ];
        match self.transact(items, "starting a subscription").await? {
            Ok(()) => Ok(()),
            // Which of the two the condition failed on: the connection is read again (a
            // refused subscribe only).
            Err(_) => match self.get_connection(&key.connection_id).await? {
                Some(_) => Err(Error::Conflict(format!(
                    "operation {} is active",
                    key.operation_id
                ))),
                None => Err(Error::NotFound(format!("connection {}", key.connection_id))),
            },
        }
    }

    async fn put_subscription(&self, subscription: &Subscription) -> Result<()> {
        let item = subscription_item(subscription)?;
        self.client
            .put_item()
            .table_name(&self.subscriptions)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| Error::backend("putting a subscription", e))?;
        Ok(())
    }

    async fn subscriptions(&self, request_id: &str) -> Result<Vec<Arc<Subscription>>> {
        let items: Vec<Item> = self
            .client
            .query()
            .table_name(&self.subscriptions)
            .key_condition_expression("requestId = :request")
            .expression_attribute_values(":request", s(request_id))
            .consistent_read(true)
            .into_paginator()
            .items()
            .send()
            .collect::<std::result::Result<_, _>>()
            .await
            .map_err(|e| Error::backend("querying subscriptions", e))?;
        items
            .into_iter()
            .map(|item| subscription_from_item(item).map(Arc::new))
            .collect()
    }

    async fn subscription(&self, key: &SubscriptionKey) -> Result<Option<Arc<Subscription>>> {
        let output = self
            .client
            .get_item()
            .table_name(&self.subscriptions)
            .set_key(Some(subscription_key(key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| Error::backend("reading a subscription", e))?;
        output
            .item
            .map(|item| subscription_from_item(item).map(Arc::new))
            .transpose()
    }

    async fn release_push(&self, key: &SubscriptionKey, version: u64) -> Result<()> {
        let result = self
            .client
            .update_item()
            .table_name(&self.subscriptions)
            .set_key(Some(subscription_key(key)))
            .update_expression("SET lastVersion = :version REMOVE pushingUntil")
            .condition_expression("attribute_exists(requestId) AND lastVersion <= :version")
            .expression_attribute_values(":version", n(version))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // Gone, or already at a later version.
            Err(error) if condition_failed(&error) => Ok(()),
            Err(error) => Err(Error::backend("releasing a push", error)),
        }
    }

    async fn finish_subscription(&self, known: &Subscription, now: i64) -> Result<Finish> {
        let key = &known.key;
        let context = "finishing a subscription";
        // While it is stored unheld, pushed no further than `known` says, and its operation
        // is on its connection: one transaction.
        let delete = Delete::builder()
            .table_name(&self.subscriptions)
            .set_key(Some(subscription_key(key)))
            .condition_expression(
                "lastVersion <= :last AND (attribute_not_exists(pushingUntil) OR pushingUntil < :now)",
            )
            .expression_attribute_values(":last", n(known.last_version))
            .expression_attribute_values(":now", n(now))
            .build()
            .map_err(|e| Error::backend(context, e))?;
        let operation = Update::builder()
            .table_name(&self.connections)
            .key("id", s(&key.connection_id))
            .update_expression("REMOVE operations.#op")
            .condition_expression("operations.#op = :request")
            .expression_attribute_names("#op", &key.operation_id)
            .expression_attribute_values(":request", s(&key.request_id))
            .build()
            .map_err(|e| Error::backend(context, e))?;
        let items = vec![
            TransactWriteItem::builder().delete(delete).build(),
            TransactWriteItem::builder().update(operation).build(),
        ];
        if self.transact(items, context).await?.is_ok() {
            return Ok(Finish::Deleted(Box::new(known.clone())));
        }
        // Gone, held, moved on, or its connection is gone: one at a time.
        let finished = self.finish_alone(key, now).await?;
        if matches!(finished, Finish::Deleted(_)) {
            self.remove_operation(&key.connection_id, &key.operation_id)
                .await?;
        }
        Ok(finished)
    }

    async fn delete_subscription(&self, key: &SubscriptionKey) -> Result<Option<Subscription>> {
        let output = self
            .client
            .delete_item()
            .table_name(&self.subscriptions)
            .set_key(Some(subscription_key(key)))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| Error::backend("deleting a subscription", e))?;
        output.attributes.map(subscription_from_item).transpose()
    }

    async fn create_request_within(
        &self,
        request: &AsyncRequest,
        max_active: Option<usize>,
    ) -> Result<()> {
        let conflict = || Error::Conflict(format!("request {} exists", request.id));
        if request.status.is_terminal() {
            let result = self
                .client
                .put_item()
                .table_name(&self.requests)
                .set_item(Some(request_item(request)?))
                .condition_expression("attribute_not_exists(id)")
                .send()
                .await;
            return match result {
                Ok(_) => Ok(()),
                Err(error) if condition_failed(&error) => Err(conflict()),
                Err(error) => Err(Error::backend("creating a request", error)),
            };
        }
        // The request and its count in one transaction: concurrent enqueues cannot pass the
        // quota, and a request is counted once, whatever fails in between.
        let put = Put::builder()
            .table_name(&self.requests)
            .set_item(Some(request_item(request)?))
            .condition_expression("attribute_not_exists(id)")
            .build()
            .map_err(|e| Error::backend("creating a request", e))?;
        let items = vec![
            TransactWriteItem::builder().put(put).build(),
            self.active_count_change(&request.tenant, 1, max_active)?,
        ];
        match self.transact(items, "creating a request").await? {
            Ok(()) => Ok(()),
            Err(0) => Err(conflict()),
            Err(_) => Err(Error::QuotaFull(format!(
                "tenant {} has {} active requests",
                request.tenant,
                max_active.unwrap_or_default()
            ))),
        }
    }

    async fn create_batch(
        &self,
        batch: &AsyncRequest,
        children: &[AsyncRequest],
        max_active: Option<usize>,
    ) -> Result<()> {
        let conflict = || Error::Conflict(format!("request {} exists", batch.id));
        // A repeat (an idempotency key) is answered before anything is counted.
        if self.get_request(&batch.id).await?.is_some() {
            return Err(conflict());
        }
        // The batch and each child count as requests not yet ended, all at once: the quota
        // has room for the whole batch or it is refused.
        let counted = i64::try_from(children.len() + 1).unwrap_or(i64::MAX);
        self.add_active(&batch.tenant, counted, max_active).await?;
        let created = self
            .client
            .put_item()
            .table_name(&self.requests)
            .set_item(Some(request_item(batch)?))
            .condition_expression("attribute_not_exists(id)")
            .send()
            .await;
        match created {
            Ok(_) => {}
            Err(error) => {
                self.add_active(&batch.tenant, -counted, None).await?;
                return if condition_failed(&error) {
                    Err(conflict())
                } else {
                    Err(Error::backend("creating a batch", error))
                };
            }
        }
        self.put_requests(children).await
    }

    async fn get_request(&self, id: &str) -> Result<Option<AsyncRequest>> {
        let output = self
            .client
            .get_item()
            .table_name(&self.requests)
            .key("id", s(id))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| Error::backend("reading a request", e))?;
        output.item.map(request_from_item).transpose()
    }

    async fn get_requests(&self, ids: &[String]) -> Result<Vec<AsyncRequest>> {
        let mut found = Vec::with_capacity(ids.len());
        for hundred in ids.chunks(100) {
            found.extend(self.get_hundred_requests(hundred).await?);
        }
        Ok(found)
    }

    async fn update_request(&self, request: &AsyncRequest, expected_revision: u64) -> Result<()> {
        // An update of what may change: the payload (up to 64 KiB) and the rest a request
        // keeps from its creation are not sent again with every progress report and lease
        // renewal. The index keys are set to what they are now; `activeStatus` goes once the
        // request has ended.
        let mut names = HashMap::new();
        let mut values = HashMap::new();
        let mut set = Vec::new();
        let item = request_item(request)?;
        let mut remove: Vec<String> = REQUEST_OMITTED_WHEN_EMPTY
            .iter()
            .filter(|name| !item.contains_key(**name))
            .enumerate()
            .map(|(n, name)| {
                names.insert(format!("#r{n}"), (*name).to_owned());
                format!("#r{n}")
            })
            .collect();
        for (n, (name, value)) in item
            .into_iter()
            .filter(|(name, _)| !REQUEST_FIXED.contains(&name.as_str()))
            .enumerate()
        {
            names.insert(format!("#a{n}"), name);
            values.insert(format!(":v{n}"), value);
            set.push(format!("#a{n} = :v{n}"));
        }
        let ended = request.status.is_terminal();
        if ended {
            remove.push("#active".to_owned());
        }
        let mut expression = format!("SET {}", set.join(", "));
        if !remove.is_empty() {
            expression.push_str(&format!(" REMOVE {}", remove.join(", ")));
        }
        names.insert("#active".to_owned(), ACTIVE.partition_key.to_owned());
        values.insert(":expected".to_owned(), n(expected_revision));
        let update = |condition: &str| {
            Update::builder()
                .table_name(&self.requests)
                .key("id", s(&request.id))
                .update_expression(&expression)
                .condition_expression(condition)
                .set_expression_attribute_names(Some(names.clone()))
                .set_expression_attribute_values(Some(values.clone()))
                .build()
                .map_err(|e| Error::backend("updating a request", e))
        };
        let conflict = || {
            Error::Conflict(format!(
                "request {} is not at revision {expected_revision}",
                request.id
            ))
        };
        // `activeStatus` is on a stored request exactly while it is counted. A move that
        // keeps it active or ended (every progress report and renewal) is one conditional
        // update; a move into or out of the count is a transaction with the counter. The
        // first try assumes the common move; a lost condition tries the other before it is
        // a conflict.
        let same = if ended {
            "revision = :expected AND attribute_not_exists(#active)"
        } else {
            "revision = :expected AND attribute_exists(#active)"
        };
        let crossing = if ended {
            "revision = :expected AND attribute_exists(#active)"
        } else {
            "revision = :expected AND attribute_not_exists(#active)"
        };
        let (same, crossing) = (update(same)?, update(crossing)?);
        let done = if ended {
            self.update_counted(crossing, &request.tenant, -1).await?
                || self.update_plain(same, expected_revision).await? == Plain::Written
        } else {
            // A writer that read before someone else wrote loses here, without trying the
            // counted form (whose counter its role may not write: the sweeper's).
            match self.update_plain(same, expected_revision).await? {
                Plain::Written => true,
                Plain::Moved => false,
                Plain::OtherForm => self.update_counted(crossing, &request.tenant, 1).await?,
            }
        };
        if done { Ok(()) } else { Err(conflict()) }
    }

    async fn save_checkpoint(
        &self,
        request_id: &str,
        checkpoint: &Checkpoint,
        expires_at: i64,
    ) -> Result<()> {
        let mut item = checkpoint_attributes(checkpoint)?;
        item.insert("id".to_owned(), s(checkpoints_partition(request_id)));
        item.insert(
            "versionKey".to_owned(),
            s(version_key(u64::from(checkpoint.index))),
        );
        item.insert(tables::TTL_ATTRIBUTE.to_owned(), n(expires_at));
        let result = self
            .client
            .put_item()
            .table_name(&self.history)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(id)")
            .send()
            .await;
        match result {
            // The first one stays.
            Ok(_) => Ok(()),
            Err(error) if condition_failed(&error) => Ok(()),
            Err(error) => Err(Error::backend("keeping a checkpoint", error)),
        }
    }

    async fn checkpoints(&self, request_id: &str) -> Result<Vec<Checkpoint>> {
        let query = self
            .client
            .query()
            .table_name(&self.history)
            .key_condition_expression("id = :id")
            .expression_attribute_values(":id", s(checkpoints_partition(request_id)))
            .consistent_read(true);
        let items = query_up_to(query, usize::MAX, "reading checkpoints").await?;
        items.into_iter().map(checkpoint_from_item).collect()
    }

    async fn record_history(&self, states: &[Arc<AsyncRequest>]) -> Result<()> {
        // One item per version: a version given twice is written once (a batch refuses
        // two writes of one key).
        let mut seen = HashSet::new();
        let items = states
            .iter()
            .filter(|state| seen.insert((state.id.as_str(), state.version)))
            .map(|state| history_item(state))
            .collect::<Result<Vec<_>>>()?;
        self.put_all(&self.history, items, "keeping states").await
    }

    async fn save_template(&self, template: &RequestTemplate) -> Result<RequestTemplate> {
        let mut names = HashMap::new();
        let mut values = HashMap::new();
        let mut set = Vec::new();
        for (n, (name, value)) in template_attributes(template)?
            .into_iter()
            .filter(|(name, _)| name != "version")
            .enumerate()
        {
            names.insert(format!("#a{n}"), name);
            values.insert(format!(":v{n}"), value);
            set.push(format!("#a{n} = :v{n}"));
        }
        values.insert(":one".to_owned(), n(1));
        let output = self
            .client
            .update_item()
            .table_name(&self.history)
            .key("id", s(templates_partition(&template.tenant)))
            .key("versionKey", s(&template.name))
            .update_expression(format!("SET {} ADD version :one", set.join(", ")))
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .return_values(ReturnValue::AllNew)
            .send()
            .await
            .map_err(|e| Error::backend("saving a template", e))?;
        template_from_item(output.attributes.unwrap_or_default())
    }

    async fn get_template(&self, tenant: &str, name: &str) -> Result<Option<RequestTemplate>> {
        let output = self
            .client
            .get_item()
            .table_name(&self.history)
            .key("id", s(templates_partition(tenant)))
            .key("versionKey", s(name))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| Error::backend("reading a template", e))?;
        output.item.map(template_from_item).transpose()
    }

    async fn delete_template(&self, tenant: &str, name: &str) -> Result<bool> {
        let output = self
            .client
            .delete_item()
            .table_name(&self.history)
            .key("id", s(templates_partition(tenant)))
            .key("versionKey", s(name))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| Error::backend("deleting a template", e))?;
        Ok(output.attributes.is_some())
    }

    async fn templates(&self, tenant: &str, limit: usize) -> Result<Vec<RequestTemplate>> {
        let query = self
            .client
            .query()
            .table_name(&self.history)
            .key_condition_expression("id = :id")
            .expression_attribute_values(":id", s(templates_partition(tenant)))
            .consistent_read(true);
        let items = query_up_to(query, limit, "listing templates").await?;
        items.into_iter().map(template_from_item).collect()
    }

    async fn count_templates(&self, tenant: &str, up_to: usize) -> Result<usize> {
        let query = self
            .client
            .query()
            .table_name(&self.history)
            .key_condition_expression("id = :id")
            .expression_attribute_values(":id", s(templates_partition(tenant)))
            .projection_expression("versionKey")
            .consistent_read(true);
        Ok(query_up_to(query, up_to, "counting templates").await?.len())
    }

    async fn request_history(
        &self,
        id: &str,
        after_version: u64,
        limit: usize,
    ) -> Result<Vec<AsyncRequest>> {
        let query = self
            .client
            .query()
            .table_name(&self.history)
            .key_condition_expression("id = :id AND versionKey > :after")
            .expression_attribute_values(":id", s(id))
            .expression_attribute_values(":after", s(version_key(after_version)))
            .consistent_read(true);
        let items = query_up_to(query, limit, "reading a history").await?;
        items.into_iter().map(request_from_item).collect()
    }

    async fn list_requests(&self, filter: &RequestFilter) -> Result<Page> {
        if let Some(parent) = &filter.parent {
            return self.list_children(parent, filter).await;
        }
        let (index, partitions) = match (&filter.tenant, filter.status) {
            (Some(tenant), Some(status)) => (BY_STATUS, vec![status_partition(tenant, status)]),
            (Some(tenant), None) => (BY_CREATION, vec![tenant.clone()]),
            // Every tenant's: the sweeper's listing, over the shards, not paged.
            (None, Some(status)) if !status.is_terminal() && filter.after.is_none() => (
                ACTIVE,
                (0..INDEX_SHARDS)
                    .map(|shard| sharded(status.as_str(), shard))
                    .collect(),
            ),
            (None, _) => {
                return Err(Error::backend(
                    "listing requests",
                    std::io::Error::other(
                        "every tenant's requests are listed by active status only, one page",
                    ),
                ));
            }
        };
        let wanted = filter.limit;
        let mut keys = Vec::new();
        for partition in partitions {
            let mut query = self
                .client
                .query()
                .table_name(&self.requests)
                .index_name(index.name)
                .scan_index_forward(!filter.newest_first)
                .key_condition_expression("#partition = :partition")
                .expression_attribute_names("#partition", index.partition_key)
                .expression_attribute_values(":partition", s(partition.clone()));
            if let Some(owner) = &filter.owner {
                query = query
                    .filter_expression("#owner = :owner")
                    .expression_attribute_names("#owner", "owner")
                    .expression_attribute_values(":owner", s(owner));
            }
            if let Some(after) = &filter.after {
                // Continue after the request the cursor names: resume by its index key.
                let Some(last) = self.get_request(after).await? else {
                    return Ok(Page::default());
                };
                let start = HashMap::from([
                    ("id".to_owned(), s(&last.id)),
                    (index.partition_key.to_owned(), s(partition)),
                    (index.sort_key.to_owned(), s(created_key(&last))),
                ]);
                query = query.set_exclusive_start_key(Some(start));
            }
            // One more than asked tells whether a next page exists.
            keys.extend(query_up_to(query, wanted + 1, "listing requests").await?);
        }
        keys.sort_by(|a, b| text_of(a, index.sort_key).cmp(&text_of(b, index.sort_key)));
        if filter.newest_first {
            keys.reverse();
        }
        let ids: Vec<String> = keys
            .iter()
            .filter_map(|key| text_of(key, "id").map(str::to_owned))
            .collect();
        // The items as they are now: the index may lag them, so one that no longer has the
        // status asked for is left out.
        let mut items = Vec::new();
        for chunk in ids.chunks(100) {
            for request in self.get_hundred_requests(chunk).await? {
                let listed = filter.status.is_none_or(|status| request.status == status)
                    && filter
                        .owner
                        .as_ref()
                        .is_none_or(|owner| request.owner == *owner);
                if listed {
                    items.push(request);
                }
            }
            if items.len() > wanted {
                break;
            }
        }
        // Whether the index holds more than this page (items left out as having moved on
        // do not end the listing early).
        let more = keys.len() > wanted && index.name != ACTIVE.name;
        items.truncate(wanted);
        let next = if more {
            items.last().map(|r| r.id.clone())
        } else {
            None
        };
        Ok(Page { items, next })
    }

    async fn count_connections(
        &self,
        tenant: &str,
        now: chrono::DateTime<chrono::Utc>,
        up_to: usize,
    ) -> Result<usize> {
        let query = self
            .client
            .query()
            .table_name(&self.connections)
            .index_name(CONNECTIONS_BY_TENANT.name)
            .key_condition_expression("#tenant = :tenant")
            .filter_expression("#expires > :now")
            .expression_attribute_names("#tenant", CONNECTIONS_BY_TENANT.partition_key)
            .expression_attribute_names("#expires", "expiresAt")
            .expression_attribute_values(":tenant", s(tenant))
            .expression_attribute_values(":now", n(now.timestamp()))
            .projection_expression("id");
        Ok(query_up_to(query, up_to, "counting connections")
            .await?
            .len())
    }

    async fn count_active_requests(&self, tenant: &str, up_to: usize) -> Result<usize> {
        let output = self
            .client
            .get_item()
            .table_name(&self.connections)
            .key("id", s(active_counter_id(tenant)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| Error::backend("counting requests", e))?;
        let active = output
            .item
            .as_ref()
            .and_then(|item| item.get("active"))
            .and_then(|value| value.as_n().ok())
            .and_then(|value| value.parse::<i64>().ok())
            .unwrap_or_default();
        Ok(usize::try_from(active).unwrap_or_default().min(up_to))
    }

    async fn take_enqueue_tokens(
        &self,
        tenant: &str,
        window: i64,
        limit: u32,
        count: u32,
    ) -> Result<bool> {
        let Some(room) = limit.checked_sub(count) else {
            return Ok(false);
        };
        let result = self
            .client
            .update_item()
            .table_name(&self.connections)
            .key("id", s(enqueue_counter_id(tenant, window)))
            .update_expression("ADD taken :count SET expiresAt = :expires")
            .condition_expression("attribute_not_exists(taken) OR taken <= :room")
            .expression_attribute_values(":count", n(count))
            .expression_attribute_values(":room", n(room))
            .expression_attribute_values(":expires", n(window + 60))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(error) if condition_failed(&error) => Ok(false),
            Err(error) => Err(Error::backend("counting an enqueue", error)),
        }
    }
}

fn to_attribute<T: serde::Serialize>(value: T) -> Result<AttributeValue> {
    serde_dynamo::to_attribute_value(value).map_err(|e| Error::backend("mapping a value", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_update_removes_every_attribute_a_state_can_leave_out() {
        let now = chrono::Utc::now();
        let bare = request_item(&AsyncRequest::new("r", "a", Value::Null, now)).unwrap();
        let mut full = AsyncRequest::new("r", "a", Value::Null, now).with_priority(1);
        full.lease_until = Some(now);
        full.redriven_after = 1;
        full.template = Some("t@1".into());
        full.parent = Some(streamer_core::ParentLink {
            id: "p".into(),
            index: 0,
        });
        full.batch = Some(streamer_core::BatchProgress::default());
        full.child_marks = Some(streamer_core::batch::ChildMarks::default());
        full.waiting_for = vec!["c".into()];
        full.wake_at = Some(now);
        let full = request_item(&full).unwrap();
        let kept: Vec<&String> = full
            .keys()
            .filter(|name| !bare.contains_key(*name))
            .filter(|name| {
                !REQUEST_FIXED.contains(&name.as_str())
                    && !REQUEST_OMITTED_WHEN_EMPTY.contains(&name.as_str())
            })
            .collect();
        assert!(
            kept.is_empty(),
            "left out of a state when empty, but kept by an update: {kept:?}"
        );
    }

    #[tokio::test]
    async fn a_table_unlike_its_definition_is_reported() {
        let endpoint = std::env::var("STREAMER_DYNAMODB_ENDPOINT")
            .expect("STREAMER_DYNAMODB_ENDPOINT: scripts/test starts DynamoDB Local and sets it");
        let nanos = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
        let store = DynamoDbStore::local(&endpoint, Tables::with_prefix(&format!("drift-{nanos}")));
        // The connections table made with the subscriptions' keys.
        SUBSCRIPTIONS
            .create(&store.client, store.connections.clone())
            .send()
            .await
            .unwrap();
        store.create_tables().await.unwrap();
        let drift = store.table_drift().await.unwrap();
        assert_eq!(drift.len(), 1, "{drift:?}");
        assert!(drift[0].starts_with(&store.connections), "{drift:?}");
    }
}
