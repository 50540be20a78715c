//! The stream poller against a stream whose shard has split: a small stand-in for the
//! DynamoDB and DynamoDB Streams APIs (DynamoDB Local cannot be made to split a shard) serves
//! a closed parent shard and two open children. Every change reaches the subscribers, per
//! item in order, children only after their parent, and a record that keeps failing is given
//! up without stopping its shard.

use report_handlers as handlers;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::HeaderMap;
use serde_json::{Value, json};
use streamer::aws::{PollerOptions, StartingPosition, StreamPoller};
use streamer::core::{
    Backoff, Clock, IdGenerator, MemorySender, MemoryStore, RandomIds, Store, Subscription,
    SubscriptionKey, SystemClock,
};
use streamer::processor::{Dispatcher, Processor};
use streamer::schema::Services;

/// A request image in the table's layout, from the recorded fixture, as `id` at `version`.
fn image(id: &str, version: u64) -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/dynamodb-local-generate-report.json"
    );
    let recorded: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut image = recorded["Records"][1]["dynamodb"]["NewImage"].clone();
    image["id"] = json!({ "S": id });
    image["version"] = json!({ "N": version.to_string() });
    image
}

/// A stream record as the Streams API returns it.
fn record(id: &str, version: u64, sequence_number: u64) -> Value {
    let mut change = json!({
        "ApproximateCreationDateTime": 1795770300.0,
        "Keys": { "id": { "S": id } },
        "NewImage": image(id, version),
        "SequenceNumber": format!("{sequence_number:021}"),
        "SizeBytes": 600,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    });
    if version > 1 {
        change["OldImage"] = image(id, version - 1);
    }
    json!({
        "eventID": format!("e{sequence_number}"),
        "eventName": if version == 1 { "INSERT" } else { "MODIFY" },
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "ddblocal",
        "dynamodb": change,
    })
}

/// One shard: its parent, whether it is closed, its records.
type Shard = (Option<&'static str>, bool, Vec<Value>);

/// The shards: a closed parent and two open children.
#[derive(Clone)]
struct SplitStream {
    shards: Arc<HashMap<&'static str, Shard>>,
    reads: Arc<Mutex<Vec<String>>>,
}

impl SplitStream {
    fn new() -> Self {
        let mut bad = record("r3", 2, 31);
        bad["dynamodb"]["NewImage"]["status"] = json!({ "S": "EXPLODED" });
        let shards = HashMap::from([
            (
                "parent",
                (
                    None,
                    true,
                    vec![
                        record("r1", 1, 10),
                        record("r1", 2, 11),
                        record("r2", 1, 12),
                    ],
                ),
            ),
            (
                "child-a",
                (
                    Some("parent"),
                    false,
                    vec![record("r1", 3, 20), record("r1", 4, 21)],
                ),
            ),
            (
                "child-b",
                (
                    Some("parent"),
                    false,
                    vec![record("r2", 2, 30), bad, record("r2", 3, 32)],
                ),
            ),
        ]);
        Self {
            shards: Arc::new(shards),
            reads: Arc::default(),
        }
    }

    fn answer(&self, target: &str, body: &Value) -> Value {
        match target {
            "DynamoDB_20120810.DescribeTable" => {
                json!({ "Table": { "TableName": "t-requests", "LatestStreamArn": "arn:stream" } })
            }
            "DynamoDBStreams_20120810.DescribeStream" => {
                // Children listed first: the poller must not rely on the order.
                let shards: Vec<Value> = ["child-b", "child-a", "parent"]
                    .iter()
                    .map(|id| {
                        let (parent, _, _) = &self.shards[id];
                        json!({ "ShardId": id, "ParentShardId": parent })
                    })
                    .collect();
                json!({ "StreamDescription": { "StreamArn": "arn:stream", "StreamStatus": "ENABLED", "Shards": shards } })
            }
            "DynamoDBStreams_20120810.GetShardIterator" => {
                let shard = body["ShardId"].as_str().unwrap();
                let records = &self.shards[shard].2;
                let at = match body["ShardIteratorType"].as_str().unwrap() {
                    "AFTER_SEQUENCE_NUMBER" => {
                        let after = body["SequenceNumber"].as_str().unwrap();
                        records
                            .iter()
                            .position(|r| r["dynamodb"]["SequenceNumber"] == after)
                            .map_or(0, |p| p + 1)
                    }
                    _ => 0,
                };
                json!({ "ShardIterator": format!("{shard}|{at}") })
            }
            "DynamoDBStreams_20120810.GetRecords" => {
                let iterator = body["ShardIterator"].as_str().unwrap();
                let (shard, at) = iterator.split_once('|').unwrap();
                let at: usize = at.parse().unwrap();
                let (_, closed, records) = &self.shards[shard];
                // Two records per read, so that batches and checkpoints matter.
                let batch: Vec<Value> = records.iter().skip(at).take(2).cloned().collect();
                self.reads
                    .lock()
                    .unwrap()
                    .push(format!("{shard}@{at}:{}", batch.len()));
                let next = at + batch.len();
                let mut answer = json!({ "Records": batch });
                if !(*closed && next >= records.len()) {
                    answer["NextShardIterator"] = json!(format!("{shard}|{next}"));
                }
                answer
            }
            other => panic!("unexpected call {other}"),
        }
    }

    async fn serve(self) -> String {
        let app = axum::Router::new().fallback(move |headers: HeaderMap, body: String| {
            let this = self.clone();
            async move {
                let target = headers["x-amz-target"].to_str().unwrap().to_owned();
                let body: Value = serde_json::from_str(&body).unwrap();
                (
                    [("content-type", "application/x-amz-json-1.0")],
                    this.answer(&target, &body).to_string(),
                )
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }
}

#[derive(Debug)]
struct NoJobs;

#[async_trait::async_trait]
impl Dispatcher for NoJobs {
    async fn dispatch(&self, _: &streamer::core::AsyncRequest) -> streamer::core::Result<()> {
        Ok(())
    }
}

/// The poller on [`SplitStream`], feeding a processor whose pushes go to the returned
/// sender; with the stream's reads, and the poller's task.
async fn follow_split_stream(
    pace: Duration,
) -> (
    Arc<Mutex<Vec<String>>>,
    Arc<MemorySender>,
    tokio::task::JoinHandle<()>,
) {
    let stream = SplitStream::new();
    let reads = stream.reads.clone();
    let endpoint = stream.serve().await;

    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let ids: Arc<dyn IdGenerator> = Arc::new(RandomIds);
    let services = Services {
        store: store.clone(),
        clock,
        ids,
        limits: streamer::core::Limits::default(),
        access: streamer::core::Access::default(),
    };

    for id in ["r1", "r2"] {
        store
            .put_subscription(&Subscription {
                key: SubscriptionKey {
                    request_id: id.into(),
                    connection_id: "c".into(),
                    operation_id: id.into(),
                },
                query: "subscription($id: ID!) { requestProgress(id: $id) { id version } }".into(),
                operation_name: None,
                variables: Some(json!({ "id": id })),
                last_version: 0,
                created_at: chrono::Utc::now(),
                expires_at: i64::MAX,
                pushing_until: None,
                principal: None,
            })
            .await
            .unwrap();
    }
    let sender = Arc::new(MemorySender::new());
    let processor = Processor::for_app(
        handlers::app().handlers(),
        &services,
        sender.clone(),
        Arc::new(NoJobs),
    )
    .unwrap();
    let options = PollerOptions {
        idle: Duration::from_millis(5),
        refresh: Duration::from_millis(50),
        max_record_age: Duration::from_millis(500),
        backoff: Backoff::new(Duration::from_millis(1), Duration::from_millis(5)),
        starting_position: StartingPosition::TrimHorizon,
        pace,
        ..PollerOptions::default()
    };
    let poller = StreamPoller::local(&endpoint, "t-requests".into(), options);
    let running = tokio::spawn(poller.run(processor));

    (reads, sender, running)
}

/// The versions pushed per request until r1 has 4 and r2 has 3 (or two seconds passed).
async fn pushed_until_done(sender: &MemorySender) -> HashMap<String, Vec<u64>> {
    let mut pushed: HashMap<String, Vec<u64>> = HashMap::new();
    for _ in 0..200 {
        for (_, frame) in sender.take() {
            let frame: Value = serde_json::from_str(&frame).unwrap();
            let state = &frame["payload"]["data"]["requestProgress"];
            pushed
                .entry(state["id"].as_str().unwrap().to_owned())
                .or_default()
                .push(state["version"].as_u64().unwrap());
        }
        if pushed.get("r1").map(Vec::len) == Some(4) && pushed.get("r2").map(Vec::len) == Some(3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    pushed
}

#[tokio::test]
async fn split_shards_are_followed_parents_first_and_in_order_per_item() {
    let (reads, sender, running) = follow_split_stream(Duration::ZERO).await;
    let pushed = pushed_until_done(&sender).await;
    running.abort();
    assert_eq!(pushed["r1"], [1, 2, 3, 4], "every state of r1, in order");
    assert_eq!(
        pushed["r2"],
        [1, 2, 3],
        "r2 in order, past the record that was given up"
    );
    let reads = reads.lock().unwrap().clone();
    let first_child_read = reads
        .iter()
        .position(|r| r.starts_with("child"))
        .expect("children read");
    let last_parent_read = reads.iter().rposition(|r| r.starts_with("parent")).unwrap();
    assert!(
        last_parent_read < first_child_read,
        "the parent is read to its end before its children: {reads:?}"
    );
}

#[tokio::test]
async fn a_paced_poller_reads_a_shard_at_most_once_a_pace() {
    let pace = Duration::from_millis(150);
    let (reads, sender, running) = follow_split_stream(pace).await;
    let pushed = pushed_until_done(&sender).await;
    assert_eq!(pushed["r1"], [1, 2, 3, 4]);
    assert_eq!(pushed["r2"], [1, 2, 3]);
    let started = std::time::Instant::now();
    let before = reads.lock().unwrap().len();
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let waited = started.elapsed();
    running.abort();
    // Two shards are still open (child-a, child-b), each read once a pace at most.
    let made = reads.lock().unwrap().len() - before;
    let most = 2 * (waited.as_millis() / pace.as_millis() + 1);
    assert!(
        (2..=most as usize).contains(&made),
        "{made} reads in {waited:?}, at most {most}"
    );
}
