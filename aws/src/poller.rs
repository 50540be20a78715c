//! [`StreamPoller`]: reads the requests table's DynamoDB stream the way Lambda's event source
//! mapping does, for running outside Lambda (the local stack on DynamoDB Local).
//!
//! Every shard is followed by its own task, a child only after its parent has been read to
//! its end (shard splits keep per-item order). Records arrive in batches, converted to the
//! JSON Lambda would deliver and handled by [`crate::stream::handle`]; failed records are
//! retried from the lowest failed sequence number with backoff, as with
//! `ReportBatchItemFailures`, and the shard moves past a batch only when it is done
//! (checkpointed in memory). Failed records are retried without a count, until they are older
//! than `max_record_age` (six hours by default), as the template's event source mapping does
//! (`MaximumRetryAttempts: -1`, `MaximumRecordAgeInSeconds`); then they are logged and left, as
//! the mapping sends them to its on-failure destination.

use std::cmp::Ordering;
use std::collections::HashSet;
use std::time::Duration;

use aws_sdk_dynamodbstreams::types::{Record, ShardIteratorType};
use serde_json::{Map, Value, json};
use streamer_core::{Backoff, Error, Result};
use streamer_processor::Processor;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::stream::{self, StreamEvent};

/// Where a shard present at start is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartingPosition {
    /// Its oldest record still kept (a new table: nothing is missed).
    TrimHorizon,
    /// Only what is written from now on (an existing table: nothing is replayed).
    Latest,
}

/// How the poller reads and retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollerOptions {
    /// At most this many records per batch.
    pub batch_size: i32,
    /// How long a shard waits after a read that returned nothing.
    pub idle: Duration,
    /// The least time between two reads of a shard, whatever they returned. Lambda's event
    /// source mapping reads each shard of a DynamoDB stream about four times a second
    /// (250 ms): with that here, the processor gets the batches it would get on AWS.
    /// Nothing by default: the local stack reads again at once after a batch.
    pub pace: Duration,
    /// How often the stream is described again to find new shards.
    pub refresh: Duration,
    /// A failing batch is retried until it has been failing this long (the template's
    /// `ProcessorMaximumRecordAgeSeconds`, six hours by default). Keep it above the
    /// connections' lifetime ([`streamer_core::MAX_CONNECTION_LIFETIME`]): a terminal state
    /// given up sooner could leave a subscriber that is still open without its last state.
    pub max_record_age: Duration,
    /// Delays between those attempts, and after failed reads.
    pub backoff: Backoff,
    /// Where shards present at start are read from (shards found later: from their start).
    pub starting_position: StartingPosition,
}

impl Default for PollerOptions {
    fn default() -> Self {
        Self {
            batch_size: 100,
            idle: Duration::from_millis(20),
            pace: Duration::ZERO,
            refresh: Duration::from_secs(1),
            max_record_age: Duration::from_secs(6 * 60 * 60),
            backoff: Backoff::CHANGES,
            starting_position: StartingPosition::TrimHorizon,
        }
    }
}

/// Follows one table's stream and feeds the processor.
#[derive(Debug, Clone)]
pub struct StreamPoller {
    dynamodb: aws_sdk_dynamodb::Client,
    streams: aws_sdk_dynamodbstreams::Client,
    table: String,
    options: PollerOptions,
}

/// Orders DynamoDB sequence numbers (decimal strings of varying length).
fn sequence_order(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

fn sequence_number(record: &Value) -> &str {
    record["dynamodb"]["SequenceNumber"]
        .as_str()
        .unwrap_or_default()
}

fn item(
    map: Option<&std::collections::HashMap<String, aws_sdk_dynamodbstreams::types::AttributeValue>>,
) -> Option<Value> {
    let item = serde_dynamo::Item::from(map?.clone());
    serde_json::to_value(item).ok()
}

/// A record of the Streams API as Lambda delivers it in a DynamoDB event.
pub fn lambda_record(record: &Record, stream_arn: &str) -> Value {
    let mut change = Map::new();
    if let Some(inner) = &record.dynamodb {
        if let Some(at) = inner.approximate_creation_date_time {
            change.insert(
                "ApproximateCreationDateTime".into(),
                json!(at.as_secs_f64()),
            );
        }
        for (name, image) in [
            ("Keys", &inner.keys),
            ("NewImage", &inner.new_image),
            ("OldImage", &inner.old_image),
        ] {
            if let Some(value) = item(image.as_ref()) {
                change.insert(name.into(), value);
            }
        }
        change.insert("SequenceNumber".into(), json!(inner.sequence_number));
        change.insert(
            "SizeBytes".into(),
            json!(inner.size_bytes.unwrap_or_default()),
        );
        if let Some(view) = &inner.stream_view_type {
            change.insert("StreamViewType".into(), json!(view.as_str()));
        }
    }
    let mut lambda = json!({
        "eventID": record.event_id,
        "eventName": record.event_name.as_ref().map(|name| name.as_str()),
        "eventVersion": record.event_version,
        "eventSource": record.event_source,
        "awsRegion": record.aws_region,
        "eventSourceARN": stream_arn,
        "dynamodb": change,
    });
    if let Some(identity) = &record.user_identity {
        lambda["userIdentity"] =
            json!({ "type": identity.r#type, "principalId": identity.principal_id });
    }
    lambda
}

/// Where to take a shard iterator from.
#[derive(Debug, Clone)]
enum Position {
    Start(StartingPosition),
    After(String),
}

impl StreamPoller {
    /// A poller of `table`'s stream.
    pub fn new(
        dynamodb: aws_sdk_dynamodb::Client,
        streams: aws_sdk_dynamodbstreams::Client,
        table: String,
        options: PollerOptions,
    ) -> Self {
        Self {
            dynamodb,
            streams,
            table,
            options,
        }
    }

    /// A poller on DynamoDB Local at `endpoint` (the Streams API is served on the same
    /// endpoint), with dummy credentials.
    pub fn local(endpoint: &str, table: String, options: PollerOptions) -> Self {
        let config = aws_sdk_dynamodbstreams::Config::builder()
            .behavior_version(aws_sdk_dynamodbstreams::config::BehaviorVersion::latest())
            .region(aws_sdk_dynamodbstreams::config::Region::new(
                crate::LOCAL_REGION,
            ))
            .endpoint_url(endpoint)
            .credentials_provider(aws_sdk_dynamodbstreams::config::Credentials::new(
                "local",
                "local",
                None,
                None,
                "streamer-local",
            ))
            .interceptor(crate::CountCalls)
            .build();
        Self::new(
            crate::store::local_client(endpoint),
            aws_sdk_dynamodbstreams::Client::from_conf(config),
            table,
            options,
        )
    }

    /// Follows the stream and feeds `processor` until the task is dropped.
    pub async fn run(self, processor: Processor) {
        let arn = loop {
            match self.stream_arn().await {
                Ok(arn) => break arn,
                Err(error) => {
                    tracing::error!(table = %self.table, error = ?error.to_string(), "no stream to follow yet");
                    tokio::time::sleep(self.options.refresh).await;
                }
            }
        };
        let (finished, _) = watch::channel(HashSet::<String>::new());
        let mut followed = HashSet::new();
        let mut tasks = JoinSet::new();
        let mut first_round = true;
        let mut changed = finished.subscribe();
        loop {
            match self.shards(&arn).await {
                Ok(shards) => {
                    let listed: HashSet<&str> = shards.iter().map(|(id, _)| id.as_str()).collect();
                    for (shard, parent) in &shards {
                        if !followed.insert(shard.clone()) {
                            continue;
                        }
                        // A parent no longer listed has been trimmed: nothing to wait for.
                        let parent = parent.clone().filter(|p| listed.contains(p.as_str()));
                        let start = if first_round {
                            self.options.starting_position
                        } else {
                            StartingPosition::TrimHorizon
                        };
                        tasks.spawn(self.clone().follow(
                            arn.clone(),
                            shard.clone(),
                            parent,
                            start,
                            processor.clone(),
                            finished.clone(),
                        ));
                    }
                    first_round = false;
                }
                Err(error) => {
                    tracing::error!(stream = %arn, error = ?error.to_string(), "describing the stream failed")
                }
            }
            // Look again after a while, or at once when a shard has ended (its children may
            // have appeared).
            let _ = tokio::time::timeout(self.options.refresh, changed.changed()).await;
        }
    }

    /// Every record the stream still holds, shard by shard (parents first), in Lambda's
    /// shape: for inspecting a stream, recording fixtures and tests.
    pub async fn read_retained(&self) -> Result<Vec<Value>> {
        let arn = self.stream_arn().await?;
        let mut records = Vec::new();
        for (shard, _) in self.shards(&arn).await? {
            let position = Position::Start(StartingPosition::TrimHorizon);
            let mut iterator = self.iterator(&arn, &shard, &position).await?;
            while let Some(current) = iterator {
                let output = self
                    .streams
                    .get_records()
                    .shard_iterator(current)
                    .send()
                    .await
                    .map_err(|e| Error::backend(format!("reading shard {shard}"), e))?;
                let batch = output.records.unwrap_or_default();
                if batch.is_empty() {
                    break;
                }
                records.extend(batch.iter().map(|r| lambda_record(r, &arn)));
                iterator = output.next_shard_iterator;
            }
        }
        Ok(records)
    }

    async fn stream_arn(&self) -> Result<String> {
        let output = self
            .dynamodb
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
            .map_err(|e| Error::backend(format!("describing table {}", self.table), e))?;
        output
            .table
            .and_then(|t| t.latest_stream_arn)
            .ok_or_else(|| Error::NotFound(format!("a stream on table {}", self.table)))
    }

    /// Every shard of the stream with its parent.
    async fn shards(&self, arn: &str) -> Result<Vec<(String, Option<String>)>> {
        let mut shards = Vec::new();
        let mut start: Option<String> = None;
        loop {
            let output = self
                .streams
                .describe_stream()
                .stream_arn(arn)
                .set_exclusive_start_shard_id(start.take())
                .send()
                .await
                .map_err(|e| Error::backend("describing a stream", e))?;
            let Some(description) = output.stream_description else {
                return Ok(shards);
            };
            shards.extend(
                description
                    .shards
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|s| Some((s.shard_id?, s.parent_shard_id))),
            );
            match description.last_evaluated_shard_id {
                Some(last) => start = Some(last),
                None => return Ok(shards),
            }
        }
    }

    async fn iterator(
        &self,
        arn: &str,
        shard: &str,
        position: &Position,
    ) -> Result<Option<String>> {
        let request = self
            .streams
            .get_shard_iterator()
            .stream_arn(arn)
            .shard_id(shard);
        let request = match position {
            Position::Start(StartingPosition::TrimHorizon) => {
                request.shard_iterator_type(ShardIteratorType::TrimHorizon)
            }
            Position::Start(StartingPosition::Latest) => {
                request.shard_iterator_type(ShardIteratorType::Latest)
            }
            Position::After(sequence_number) => request
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .sequence_number(sequence_number),
        };
        let output = request
            .send()
            .await
            .map_err(|e| Error::backend(format!("getting an iterator of shard {shard}"), e))?;
        Ok(output.shard_iterator)
    }

    /// Reads one shard to its end (or forever while it is open).
    async fn follow(
        self,
        arn: String,
        shard: String,
        parent: Option<String>,
        start: StartingPosition,
        processor: Processor,
        finished: watch::Sender<HashSet<String>>,
    ) {
        if let Some(parent) = &parent {
            let mut done = finished.subscribe();
            let _ = done.wait_for(|set| set.contains(parent)).await;
        }
        tracing::debug!(%shard, ?parent, "following shard");
        let start = Position::Start(start);
        let mut checkpoint: Option<Position> = None;
        let mut iterator: Option<String> = None;
        let mut failures = 0;
        let mut renewals = 0;
        let mut last_read = tokio::time::Instant::now();
        loop {
            tokio::time::sleep_until(last_read + self.options.pace).await;
            let current = match iterator.take() {
                Some(current) => current,
                None => match self
                    .iterator(&arn, &shard, checkpoint.as_ref().unwrap_or(&start))
                    .await
                {
                    Ok(Some(current)) => current,
                    Ok(None) => break,
                    Err(error) => {
                        failures += 1;
                        tracing::error!(%shard, error = ?error.to_string(), "no shard iterator");
                        let delay = self.options.backoff.delay(failures, &mut rand::rng());
                        tokio::time::sleep(delay).await;
                        continue;
                    }
                },
            };
            last_read = tokio::time::Instant::now();
            let output = match self
                .streams
                .get_records()
                .shard_iterator(current)
                .limit(self.options.batch_size)
                .send()
                .await
            {
                Ok(output) => output,
                Err(error)
                    if error.as_service_error().is_some_and(|e| {
                        e.is_expired_iterator_exception() || e.is_trimmed_data_access_exception()
                    }) =>
                {
                    // An iterator past its 15 minutes, or (DynamoDB Local) one taken at the
                    // horizon of a then empty shard: take a fresh one from the checkpoint.
                    tracing::debug!(%shard, error = %aws_sdk_dynamodbstreams::error::DisplayErrorContext(&error), "iterator renewed");
                    renewals += 1;
                    if renewals > 1 {
                        tokio::time::sleep(self.options.idle).await;
                    }
                    continue;
                }
                Err(error) => {
                    // DynamoDB unreachable or failing: start again from the checkpoint with
                    // a fresh iterator, after a while.
                    failures += 1;
                    tracing::warn!(%shard, error = %aws_sdk_dynamodbstreams::error::DisplayErrorContext(&error), "reading records failed");
                    let delay = self.options.backoff.delay(failures, &mut rand::rng());
                    tokio::time::sleep(delay).await;
                    continue;
                }
            };
            failures = 0;
            renewals = 0;
            let records = output.records.unwrap_or_default();
            if let Some(last) = records
                .last()
                .and_then(|r| r.dynamodb.as_ref())
                .and_then(|r| r.sequence_number.clone())
            {
                let event = StreamEvent {
                    records: records.iter().map(|r| lambda_record(r, &arn)).collect(),
                };
                self.handle(&processor, &shard, event).await;
                checkpoint = Some(Position::After(last));
            }
            match output.next_shard_iterator {
                Some(next) => iterator = Some(next),
                None => break,
            }
            if records.is_empty() {
                tokio::time::sleep(self.options.idle).await;
            }
        }
        tracing::debug!(%shard, "shard read to its end");
        finished.send_modify(|set| {
            set.insert(shard);
        });
    }

    /// Handles a batch until no record fails, or until it has failed for `max_record_age`;
    /// each retry starts at the lowest failed sequence number.
    async fn handle(&self, processor: &Processor, shard: &str, mut event: StreamEvent) {
        let mut attempt = 1;
        let first_tried = tokio::time::Instant::now();
        loop {
            let response = stream::handle(processor, &event).await;
            let lowest = response
                .batch_item_failures
                .iter()
                .map(|f| f.item_identifier.clone().unwrap_or_default())
                .min_by(|a, b| sequence_order(a, b));
            let Some(lowest) = lowest else {
                return;
            };
            if first_tried.elapsed() >= self.options.max_record_age {
                tracing::error!(
                    %shard,
                    from = %lowest,
                    records = event.records.len(),
                    attempts = attempt,
                    "stream records given up after {:?}",
                    self.options.max_record_age
                );
                return;
            }
            // An empty identifier fails the whole batch.
            if !lowest.is_empty() {
                event
                    .records
                    .retain(|r| sequence_order(sequence_number(r), &lowest) != Ordering::Less);
            }
            let delay = self.options.backoff.delay(attempt, &mut rand::rng());
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_order_as_numbers() {
        assert_eq!(sequence_order("99", "100"), Ordering::Less);
        assert_eq!(sequence_order("000100", "100"), Ordering::Equal);
        assert_eq!(
            sequence_order(
                "4421584500000000017450439092",
                "4421584500000000017450439091"
            ),
            Ordering::Greater
        );
    }
}
