//! DynamoDB stream records of the requests table → the processor's [`Change`]s, and one
//! batch handled end to end with the partial batch failure response Lambda expects.
//!
//! A batch arrives as JSON in the shape Lambda delivers (`{"Records": [...]}`). Each record is
//! read on its own: a record that does not parse or decode is reported as a batch item failure
//! by its `dynamodb.SequenceNumber` and never panics. TTL deletions are recognised and
//! skipped: on AWS a `REMOVE` by the principal `dynamodb.amazonaws.com`; DynamoDB Local names
//! such deletions `UNKNOWN_TO_SDK_VERSION` and gives no `userIdentity`.

use std::sync::Arc;

use aws_lambda_events::dynamodb::EventRecord;
use aws_lambda_events::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use streamer_core::AsyncRequest;
use streamer_core::store::{Change, ChangeKind};
use streamer_processor::Processor;

/// The principal of deletions made by DynamoDB's TTL process.
const TTL_PRINCIPAL: &str = "dynamodb.amazonaws.com";

/// The name DynamoDB Local gives a deletion the SDK has no name for.
const UNKNOWN_EVENT: &str = "UNKNOWN_TO_SDK_VERSION";

/// A DynamoDB stream event as Lambda delivers it, records kept as JSON so that one bad record
/// cannot fail the others.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct StreamEvent {
    /// The records, oldest first per item.
    #[serde(rename = "Records", default)]
    pub records: Vec<Value>,
}

/// Why a record could not become a change.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The record is not a DynamoDB stream record.
    #[error("not a stream record: {0}")]
    Shape(#[source] serde_json::Error),
    /// It has no `dynamodb.SequenceNumber`.
    #[error("the record has no sequence number")]
    NoSequenceNumber,
    /// An image is not a request item.
    #[error("the {image} image is not a request: {source}")]
    Image {
        /// `NewImage` or `OldImage`.
        image: &'static str,
        /// The mapping error.
        #[source]
        source: streamer_core::Error,
    },
    /// An event name this decoder does not know.
    #[error("unknown event {0:?}")]
    UnknownEvent(String),
}

/// The batch decoded: the changes to handle, and the records that could not be decoded.
#[derive(Debug, Default)]
pub struct Decoded {
    /// Changes, in record order.
    pub changes: Vec<Change>,
    /// Sequence numbers of records to report failed. An empty string stands for a record
    /// without one, which fails the whole batch.
    pub failures: Vec<String>,
}

/// Whether a record is a deletion by TTL expiry.
fn is_expiry(record: &EventRecord) -> bool {
    let by_ttl = record
        .user_identity
        .as_ref()
        .is_some_and(|identity| identity.principal_id == TTL_PRINCIPAL);
    match record.event_name.as_str() {
        "REMOVE" => by_ttl,
        UNKNOWN_EVENT => record.user_identity.is_none() && record.change.new_image.is_empty(),
        _ => false,
    }
}

fn image(
    item: &serde_dynamo::Item,
    name: &'static str,
) -> Result<Option<AsyncRequest>, DecodeError> {
    if item.is_empty() {
        return Ok(None);
    }
    crate::items::request_from_item(item.clone())
        .map(Some)
        .map_err(|source| DecodeError::Image {
            image: name,
            source,
        })
}

/// Decodes one record of the requests table's stream.
pub fn decode_record(record: &EventRecord) -> Result<Change, DecodeError> {
    let sequence_number = record
        .change
        .sequence_number
        .clone()
        .filter(|s| !s.is_empty())
        .ok_or(DecodeError::NoSequenceNumber)?;
    let kind = if is_expiry(record) {
        ChangeKind::Expire
    } else {
        match record.event_name.as_str() {
            "INSERT" => ChangeKind::Insert,
            "MODIFY" => ChangeKind::Modify,
            "REMOVE" => ChangeKind::Remove,
            other => return Err(DecodeError::UnknownEvent(other.to_owned())),
        }
    };
    Ok(Change {
        sequence_number,
        kind,
        old: image(&record.change.old_image, "OldImage")?.map(Arc::new),
        new: image(&record.change.new_image, "NewImage")?.map(Arc::new),
    })
}

/// The sequence number and the item id of a raw record, read as far as they can be.
fn identify(record: &Value) -> (String, Option<String>) {
    let change = &record["dynamodb"];
    let sequence_number = change["SequenceNumber"].as_str().unwrap_or_default();
    let id = change["Keys"]["id"]["S"].as_str().map(str::to_owned);
    (sequence_number.to_owned(), id)
}

/// Decodes a batch. A record that fails is reported, and so is every later record of the same
/// item (handling them would overtake it); a failed record whose item cannot be told fails
/// every later record.
pub fn decode(event: &StreamEvent) -> Decoded {
    let mut decoded = Decoded::default();
    let mut blocked_items: Vec<String> = Vec::new();
    let mut blocked_all = false;
    for raw in &event.records {
        let (sequence_number, id) = identify(raw);
        let blocked = blocked_all || id.as_ref().is_some_and(|id| blocked_items.contains(id));
        let result = if blocked {
            None
        } else {
            Some(
                serde_json::from_value::<EventRecord>(raw.clone())
                    .map_err(DecodeError::Shape)
                    .and_then(|record| decode_record(&record)),
            )
        };
        match result {
            Some(Ok(change)) => decoded.changes.push(change),
            Some(Err(error)) => {
                tracing::error!(%sequence_number, item = ?id, error = ?error.to_string(), "stream record not decoded");
                match id {
                    Some(id) => blocked_items.push(id),
                    None => blocked_all = true,
                }
                decoded.failures.push(sequence_number);
            }
            None => decoded.failures.push(sequence_number),
        }
    }
    decoded
}

/// Handles one stream batch: decodes it, hands the changes to the processor, and answers with
/// the records to deliver again (`ReportBatchItemFailures`).
pub async fn handle(processor: &Processor, event: &StreamEvent) -> DynamoDbEventResponse {
    let Decoded { changes, failures } = decode(event);
    let outcome = processor.handle_batch(changes).await;
    let mut response = DynamoDbEventResponse::default();
    response.batch_item_failures = failures
        .into_iter()
        .chain(outcome.failures)
        .map(|sequence_number| {
            let mut failure = DynamoDbBatchItemFailure::default();
            failure.item_identifier = Some(sequence_number);
            failure
        })
        .collect();
    response
}
