//! Ordering under concurrency: several processors fan out overlapping batches of one request's
//! changes at once (as concurrent invocations and a retried batch would), gateway snapshots
//! race them, and posts take a random while. Every subscriber still sees strictly increasing
//! versions, then the terminal state and one `complete`.

use report_handlers as handlers;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rand::Rng;
use serde_json::{Value, json};
use streamer::core::protocol::Close;
use streamer::core::store::{Change, ChangeKind};
use streamer::core::{
    AsyncRequest, Clock, IdGenerator, Limits, MemoryStore, RandomIds, Result, Sender, Store,
    Subscription, SubscriptionKey, SystemClock,
};
use streamer::processor::{Dispatcher, Processor};
use streamer::schema::{Pusher, Services};

/// A sender whose posts take up to two milliseconds and fail (as a throttled or unreachable
/// endpoint would) with the given chance; a frame counts as arrived when its post returns.
#[derive(Debug, Default)]
struct SlowSender {
    arrived: Mutex<Vec<(String, Value)>>,
    failing: f64,
}

#[async_trait]
impl Sender for SlowSender {
    async fn post(&self, connection_id: &str, data: &str) -> Result<()> {
        let pause = rand::rng().random_range(0..2_000);
        tokio::time::sleep(Duration::from_micros(pause)).await;
        if rand::rng().random_bool(self.failing) {
            return Err(streamer::core::Error::backend(
                "posting",
                std::io::Error::other("throttled"),
            ));
        }
        let frame = serde_json::from_str(data).unwrap();
        self.arrived
            .lock()
            .unwrap()
            .push((connection_id.to_owned(), frame));
        Ok(())
    }

    async fn close(&self, _: &str, _: &Close) -> Result<()> {
        Ok(())
    }
}

#[derive(Debug)]
struct NoJobs;

#[async_trait]
impl Dispatcher for NoJobs {
    async fn dispatch(&self, _: &AsyncRequest) -> Result<()> {
        Ok(())
    }
}

/// One request's life: QUEUED (1), RUNNING (2), seven progress reports (3..=9), COMPLETED (10).
fn history() -> Vec<AsyncRequest> {
    let now = chrono::Utc::now();
    let mut request = AsyncRequest::new("r", "generateReport", json!({}), now);
    let mut states = vec![request.clone()];
    request.start(now).unwrap();
    states.push(request.clone());
    for step in 1..=7 {
        request
            .report(f64::from(step) / 10.0, Some(format!("step {step}")), now)
            .unwrap();
        states.push(request.clone());
    }
    request
        .complete(json!({ "url": "u", "rows": 1, "sizeBytes": 1 }), now)
        .unwrap();
    states.push(request);
    states
}

fn changes(states: &[AsyncRequest]) -> Vec<Change> {
    states
        .iter()
        .enumerate()
        .map(|(i, state)| Change {
            sequence_number: format!("{:06}", i + 1),
            kind: if i == 0 {
                ChangeKind::Insert
            } else {
                ChangeKind::Modify
            },
            old: i.checked_sub(1).map(|p| Arc::new(states[p].clone())),
            new: Some(Arc::new(state.clone())),
        })
        .collect()
}

/// The versions of the `next` frames among `frames`.
fn versions<F: std::borrow::Borrow<Value>>(frames: &[F]) -> Vec<u64> {
    frames
        .iter()
        .map(std::borrow::Borrow::borrow)
        .filter(|f| f["type"] == "next")
        .map(|f| {
            f["payload"]["data"]["requestProgress"]["version"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

/// A subscription to request `r` asking for its version and status.
fn following(connection_id: &str, operation_id: &str) -> Subscription {
    Subscription {
        key: SubscriptionKey {
            request_id: "r".into(),
            connection_id: connection_id.into(),
            operation_id: operation_id.into(),
        },
        query: "subscription($id: ID!) { requestProgress(id: $id) { version status } }".into(),
        operation_name: None,
        variables: Some(json!({ "id": "r" })),
        last_version: 0,
        created_at: chrono::Utc::now(),
        expires_at: i64::MAX,
        pushing_until: None,
        principal: None,
    }
}

/// The example app's schema over `store`.
fn schema_on(store: &Arc<MemoryStore>) -> streamer::async_graphql::dynamic::Schema {
    let services = Services {
        store: store.clone(),
        clock: Arc::new(SystemClock),
        ids: Arc::new(RandomIds),
        limits: Limits::default(),
        access: streamer::core::Access::default(),
    };
    streamer::schema::build(handlers::app().handlers(), services).unwrap()
}

/// Handles `batch` until no change fails, as an event source retries failed records.
async fn until_done(processor: Processor, mut batch: Vec<Change>) {
    for _ in 0..500 {
        let outcome = processor.handle_batch(batch.clone()).await;
        let Some(lowest) = outcome.failures.iter().min().cloned() else {
            return;
        };
        batch.retain(|c| c.sequence_number >= lowest);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("a batch kept failing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_fan_outs_and_a_retried_batch_keep_versions_increasing() {
    for round in 0..5 {
        let store = Arc::new(MemoryStore::new());
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let ids: Arc<dyn IdGenerator> = Arc::new(RandomIds);
        let services = Services {
            store: store.clone(),
            clock,
            ids,
            limits: Limits::default(),
            access: streamer::core::Access::default(),
        };
        let schema = streamer::schema::build(handlers::app().handlers(), services).unwrap();
        let sender = Arc::new(SlowSender::default());
        let mut subscriptions = Vec::new();
        for connection in 0..5 {
            for operation in 0..4 {
                let subscription = following(&format!("c{connection}"), &format!("o{operation}"));
                store.put_subscription(&subscription).await.unwrap();
                subscriptions.push(subscription);
            }
        }
        let states = history();
        let all = changes(&states);
        let processor = || {
            Processor::new(
                schema.clone(),
                store.clone(),
                sender.clone(),
                Arc::new(NoJobs),
            )
        };
        let mut tasks = tokio::task::JoinSet::new();
        // Two invocations with overlapping batches, and a retry of an earlier batch.
        tasks.spawn(until_done(processor(), all.clone()));
        tasks.spawn(until_done(processor(), all[2..].to_vec()));
        tasks.spawn(until_done(processor(), all[..6].to_vec()));
        // Gateway snapshots of assorted states racing the fan-outs.
        for (i, subscription) in subscriptions.iter().enumerate() {
            let (schema, store, sender) = (schema.clone(), store.clone(), sender.clone());
            let subscription = subscription.clone();
            let state = Arc::new(states[(i * 3 + round) % 9].clone());
            tasks.spawn(async move {
                Pusher {
                    schema: &schema,
                    store: &*store,
                    sender: &*sender,
                    limits: &Limits::default(),
                    clock: &SystemClock,
                }
                .deliver(&subscription, &state)
                .await
                .unwrap();
            });
        }
        while let Some(joined) = tasks.join_next().await {
            joined.unwrap();
        }

        let mut received: BTreeMap<(String, String), Vec<Value>> = BTreeMap::new();
        for (connection, frame) in sender.arrived.lock().unwrap().iter() {
            let operation = frame["id"].as_str().unwrap().to_owned();
            received
                .entry((connection.clone(), operation))
                .or_default()
                .push(frame.clone());
        }
        assert_eq!(received.len(), 20, "every subscriber heard something");
        for (subscriber, frames) in &received {
            let versions = versions(frames);
            assert!(
                versions.windows(2).all(|w| w[0] < w[1]),
                "round {round}, {subscriber:?}: {versions:?}"
            );
            assert_eq!(
                versions.last(),
                Some(&10),
                "{subscriber:?} got the terminal state"
            );
            let completes = frames.iter().filter(|f| f["type"] == "complete").count();
            assert_eq!(completes, 1, "{subscriber:?}: one complete");
            assert_eq!(
                frames.last().unwrap()["type"],
                "complete",
                "{subscriber:?}: complete last"
            );
        }
    }
}

/// Posts that fail lose nothing: the failed change is retried and delivers the same state
/// again, the terminal one and `complete` included. Each subscriber gets every version once.
#[tokio::test]
async fn failed_posts_are_delivered_when_the_change_is_retried() {
    let store = Arc::new(MemoryStore::new());
    let schema = schema_on(&store);
    let sender = Arc::new(SlowSender {
        failing: 0.3,
        ..SlowSender::default()
    });
    for connection in 0..4 {
        let subscription = following(&format!("c{connection}"), "o");
        store.put_subscription(&subscription).await.unwrap();
    }
    let processor = Processor::new(schema, store.clone(), sender.clone(), Arc::new(NoJobs));
    until_done(processor, changes(&history())).await;

    let arrived = sender.arrived.lock().unwrap().clone();
    for connection in 0..4 {
        let frames: Vec<&Value> = arrived
            .iter()
            .filter(|(c, _)| *c == format!("c{connection}"))
            .map(|(_, frame)| frame)
            .collect();
        let versions = versions(&frames);
        assert_eq!(versions, (1..=10).collect::<Vec<_>>(), "c{connection}");
        assert_eq!(frames.last().unwrap()["type"], "complete", "c{connection}");
        assert_eq!(frames.iter().filter(|f| f["type"] == "complete").count(), 1);
    }
    assert!(store.subscriptions("r").await.unwrap().is_empty());
}

/// A pusher that died holding a subscription (a processor killed mid fan-out) leaves a hold
/// of up to 10 s. The next change of that request waits it out within its invocation and is
/// delivered, instead of failing and spending the stream's retries.
#[tokio::test]
async fn a_dead_pusher_s_hold_is_waited_out_not_failed() {
    let store = Arc::new(MemoryStore::new());
    let schema = schema_on(&store);
    let sender = Arc::new(SlowSender::default());
    let subscription = following("c", "o");
    store.put_subscription(&subscription).await.unwrap();
    // The dead pusher claimed version 1 and held the subscription for 1.5 s more.
    let now = chrono::Utc::now().timestamp_millis();
    store
        .claim_push(&subscription.key, 1, now, now + 1_500)
        .await
        .unwrap();
    let processor = Processor::new(schema, store.clone(), sender.clone(), Arc::new(NoJobs));
    let states = history();
    let started = std::time::Instant::now();
    let outcome = processor.handle_batch(changes(&states[1..2])).await;
    assert!(outcome.failures.is_empty(), "{outcome:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(1_000),
        "it waited"
    );
    let arrived = sender.arrived.lock().unwrap().clone();
    assert_eq!(
        versions(&arrived.iter().map(|(_, f)| f.clone()).collect::<Vec<_>>()),
        [2]
    );
}
