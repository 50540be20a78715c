//! Ordering under concurrency: a request's changes reach one processor in order (the
//! stream's per-item order), in batches that are retried from the first failed change;
//! gateway snapshots of new subscriptions race them, and posts take a random while and
//! sometimes fail. Every subscriber still sees every version from its snapshot on, once, in
//! increasing order, then the terminal state and one `complete`.

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
    AsyncRequest, Limits, MemoryStore, RandomIds, Result, Sender, Store, Subscription,
    SubscriptionKey, SystemClock,
};
use streamer::processor::{Dispatcher, Processor};
use streamer::schema::{Pusher, Services};

/// A sender whose posts take up to two milliseconds and fail (as a throttled or unreachable
/// endpoint would) with the given chance; a frame counts as arrived when its post returns.
#[derive(Debug, Default)]
struct SlowSender {
    arrived: Arc<Mutex<Vec<(String, Value)>>>,
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
async fn snapshots_racing_a_retried_fan_out_keep_every_version_in_order() {
    for round in 0..5 {
        let store = Arc::new(MemoryStore::new());
        let schema = schema_on(&store);
        // The processor's posts fail now and then; the gateway's share the arrival log.
        let processor_sender = Arc::new(SlowSender {
            failing: 0.1,
            ..SlowSender::default()
        });
        let gateway_sender = Arc::new(SlowSender {
            arrived: Arc::clone(&processor_sender.arrived),
            failing: 0.0,
        });
        let states = history();
        let all = changes(&states);
        // The request as stored: a state is written before its change reaches the stream.
        let current = Arc::new(Mutex::new(0_usize));
        let (stream, mut feed) = tokio::sync::mpsc::unbounded_channel::<Change>();
        let mut tasks = tokio::task::JoinSet::new();
        let writer = {
            let current = Arc::clone(&current);
            async move {
                for (k, change) in all.into_iter().enumerate() {
                    *current.lock().unwrap() = k;
                    stream.send(change).unwrap();
                    let pause = rand::rng().random_range(0..3_000);
                    tokio::time::sleep(Duration::from_micros(pause)).await;
                }
            }
        };
        tasks.spawn(writer);
        // One processor, taking what has arrived as a batch, retrying it until it succeeds.
        let processor = Processor::new(
            schema.clone(),
            store.clone(),
            processor_sender.clone(),
            Arc::new(NoJobs),
        );
        tasks.spawn(async move {
            while let Some(first) = feed.recv().await {
                let mut batch = vec![first];
                while let Ok(next) = feed.try_recv() {
                    batch.push(next);
                }
                until_done(processor.clone(), batch).await;
            }
        });
        // Subscribes at random moments, as the gateway answers them: store the subscription
        // held, read the request, push the snapshot and release.
        for n in 0..20 {
            let (schema, store, sender) = (schema.clone(), store.clone(), gateway_sender.clone());
            let (states, current) = (states.clone(), Arc::clone(&current));
            tasks.spawn(async move {
                let pause = rand::rng().random_range(0..20_000);
                tokio::time::sleep(Duration::from_micros(pause)).await;
                let mut subscription = following(&format!("c{n}"), "o");
                subscription.pushing_until =
                    Some(chrono::Utc::now().timestamp_millis() + streamer::schema::PUSH_HOLD_MS);
                store.put_subscription(&subscription).await.unwrap();
                let state = Arc::new(states[*current.lock().unwrap()].clone());
                Pusher {
                    schema: &schema,
                    store: &*store,
                    sender: &*sender,
                    limits: &Limits::default(),
                    clock: &SystemClock,
                    access: streamer::core::Access::default(),
                }
                .snapshot(&subscription, &state)
                .await
                .unwrap();
            });
        }
        while let Some(joined) = tasks.join_next().await {
            joined.unwrap();
        }

        let mut received: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for (connection, frame) in processor_sender.arrived.lock().unwrap().iter() {
            received
                .entry(connection.clone())
                .or_default()
                .push(frame.clone());
        }
        assert_eq!(received.len(), 20, "every subscriber heard something");
        for (subscriber, frames) in &received {
            let versions = versions(frames);
            let first = versions[0];
            assert_eq!(
                versions,
                (first..=10).collect::<Vec<_>>(),
                "round {round}, {subscriber}: every version from the snapshot on, once, in order"
            );
            let completes = frames.iter().filter(|f| f["type"] == "complete").count();
            assert_eq!(completes, 1, "{subscriber}: one complete");
            assert_eq!(
                frames.last().unwrap()["type"],
                "complete",
                "{subscriber}: complete last"
            );
        }
        assert!(store.subscriptions("r").await.unwrap().is_empty());
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

/// A gateway that died holding a new subscription (killed before its snapshot went out)
/// leaves a hold of up to 10 s. The next change of that request waits it out within its invocation and is
/// delivered, instead of failing and spending the stream's retries.
#[tokio::test]
async fn a_dead_pusher_s_hold_is_waited_out_not_failed() {
    let store = Arc::new(MemoryStore::new());
    let schema = schema_on(&store);
    let sender = Arc::new(SlowSender::default());
    // A gateway stored it held for 1.5 s more and died before its snapshot went out.
    let mut subscription = following("c", "o");
    subscription.pushing_until = Some(chrono::Utc::now().timestamp_millis() + 1_500);
    store.put_subscription(&subscription).await.unwrap();
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
