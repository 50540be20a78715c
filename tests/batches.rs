//! Batches, on both stores: a batch of 200 followed by one subscription rises to COMPLETED
//! through every version once, in order; failed children fail the batch with exact counts and
//! `retryRequest` re-drives only them; cancelling a running batch cancels what has not ended;
//! a bad item refuses the whole batch naming its index, with nothing stored; the typed and
//! generic forms with one idempotency key give one batch; and a stream batch delivered again,
//! whole or after a crash part-way, counts nothing twice.

mod support;

use report_handlers as handlers;

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Value, json};
use streamer::aws::stream::{self, StreamEvent};
use streamer::aws::tables::REQUESTS;
use streamer::aws::{DynamoDbStore, PollerOptions, StreamPoller};
use streamer::core::store::{Change, modify_request};
use streamer::core::{
    AsyncRequest, Limits, MemorySender, MemoryStore, RandomIds, RequestError, RequestStatus,
    Result, Store, SystemClock,
};
use streamer::processor::{Dispatcher, Processor};
use streamer::schema::Services;
use support::{On, TestServer};

/// The batch document the tests follow: the aggregate state and its counts.
const FOLLOW: &str = "subscription($id: ID!) { requestProgress(id: $id, afterVersion: 0) { id status progress message version batch { total queued running completed failed cancelled } error { code message } } }";

const BATCH_FIELDS: &str =
    "id status version batch { total queued running completed failed cancelled }";

fn report(rows: u32) -> Value {
    json!({ "from": "2026-01-01", "to": "2026-01-31", "rows": rows, "stepDelayMs": 0 })
}

/// The first GraphQL error of an answer: from a `next` (`errors`) or an `error` frame.
fn first_error(answer: &Value) -> &Value {
    match answer {
        Value::Array(errors) => &errors[0],
        _ => &answer["errors"][0],
    }
}

/// Follows a batch from version 1 to its end; returns the states pushed.
async fn follow(client: &mut support::Client, id: &str, batch: &str) -> Vec<Value> {
    client
        .send(json!({ "id": id, "type": "subscribe", "payload": { "query": FOLLOW, "variables": { "id": batch } } }))
        .await;
    let frames = client.until_done(id).await;
    let last = frames.last().unwrap();
    assert_eq!(last["type"], "complete", "{last}");
    frames
        .iter()
        .filter(|frame| frame["id"] == id && frame["type"] == "next")
        .map(|frame| frame["payload"]["data"]["requestProgress"].clone())
        .collect()
}

/// Asserts that `states` are every version from 1 to the last, once, in order.
fn every_version_once(states: &[Value]) {
    let versions: Vec<u64> = states
        .iter()
        .map(|state| state["version"].as_u64().unwrap())
        .collect();
    let last = *versions.last().unwrap();
    assert_eq!(versions, (1..=last).collect::<Vec<_>>());
}

/// Every child of `batch`, in order, through `requests(parent:)` pages of 50.
async fn children(client: &mut support::Client, batch: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut after = Value::Null;
    for page in 0.. {
        let data = client
            .execute(
                &format!("children-{page}"),
                "query($parent: ID!, $after: String) { requests(parent: $parent, first: 50, after: $after) { edges { node { id status attempts parent { id } } } pageInfo { hasNextPage endCursor } } }",
                json!({ "parent": batch, "after": after }),
            )
            .await;
        let listing = &data["requests"];
        all.extend(
            listing["edges"]
                .as_array()
                .unwrap()
                .iter()
                .map(|edge| edge["node"].clone()),
        );
        if listing["pageInfo"]["hasNextPage"] != true {
            return all;
        }
        after = listing["pageInfo"]["endCursor"].clone();
    }
    unreachable!()
}

async fn a_batch_of_200_rises_to_completed(on: On) {
    let server = TestServer::start_on(on).await;
    let mut client = server.client().await;
    client.init().await;
    let inputs: Vec<Value> = (1..=200).map(|n| report(n % 5 + 1)).collect();
    let data = client
        .execute(
            "b",
            &format!("mutation($inputs: [GenerateReportInput!]!) {{ generateReportBatch(inputs: $inputs) {{ {BATCH_FIELDS} action }} }}"),
            json!({ "inputs": inputs }),
        )
        .await;
    let batch = &data["generateReportBatch"];
    assert_eq!(batch["action"], "generateReport");
    assert_eq!(batch["batch"]["total"], 200);
    let id = batch["id"].as_str().unwrap().to_owned();

    let states = follow(&mut client, "f", &id).await;
    every_version_once(&states);
    let last = states.last().unwrap();
    assert_eq!(last["status"], "COMPLETED", "{last}");
    assert_eq!(
        last["batch"],
        json!({ "total": 200, "queued": 0, "running": 0, "completed": 200, "failed": 0, "cancelled": 0 })
    );
    assert_eq!(last["message"], "200 of 200 done");
    assert_eq!(last["progress"], 1.0);
    // The counts only move forward through the states: each child is counted once.
    for pair in states.windows(2) {
        let ended = |state: &Value| {
            let counts = &state["batch"];
            counts["completed"].as_u64().unwrap()
                + counts["failed"].as_u64().unwrap()
                + counts["cancelled"].as_u64().unwrap()
        };
        assert!(ended(&pair[0]) <= ended(&pair[1]));
    }

    let listed = children(&mut client, &id).await;
    assert_eq!(listed.len(), 200);
    for (index, child) in listed.iter().enumerate() {
        assert_eq!(child["id"], format!("{id}.{index}"), "in their order");
        assert_eq!(child["status"], "COMPLETED");
        assert_eq!(child["parent"]["id"], id.as_str());
    }
    // `children` on the batch itself, one status at a time.
    let data = client
        .execute(
            "c",
            "query($id: ID!) { request(id: $id) { children(status: COMPLETED, first: 3) { edges { node { id } } pageInfo { hasNextPage } } } }",
            json!({ "id": id }),
        )
        .await;
    let page = &data["request"]["children"];
    assert_eq!(page["edges"].as_array().unwrap().len(), 3);
    assert_eq!(page["pageInfo"]["hasNextPage"], true);
}

async fn failed_children_fail_the_batch_and_a_retry_re_drives_only_them(on: On) {
    let server = TestServer::start_on(on).await;
    let mut client = server.client().await;
    client.init().await;
    // Five failures are all of `flakyImport`'s attempts: items 1 and 3 fail for good, and
    // succeed on the attempt after (a re-drive's).
    let payloads: Vec<Value> = [0, 5, 0, 5, 0]
        .into_iter()
        .map(|fail_times| json!({ "failTimes": fail_times }))
        .collect();
    let data = client
        .execute(
            "b",
            &format!("mutation($payloads: [JSON!]!) {{ enqueueBatch(action: \"flakyImport\", payloads: $payloads) {{ {BATCH_FIELDS} }} }}"),
            json!({ "payloads": payloads }),
        )
        .await;
    let id = data["enqueueBatch"]["id"].as_str().unwrap().to_owned();
    let states = follow(&mut client, "f", &id).await;
    every_version_once(&states);
    let failed = states.last().unwrap();
    assert_eq!(failed["status"], "FAILED", "{failed}");
    assert_eq!(
        failed["batch"],
        json!({ "total": 5, "queued": 0, "running": 0, "completed": 3, "failed": 2, "cancelled": 0 })
    );
    assert_eq!(failed["error"]["code"], "BATCH_FAILED");
    assert_eq!(
        failed["error"]["message"],
        "2 of 5 failed, 3 completed, 0 cancelled"
    );
    let before = children(&mut client, &id).await;
    let attempts: Vec<u64> = before
        .iter()
        .map(|child| child["attempts"].as_u64().unwrap())
        .collect();
    assert_eq!(attempts, [1, 5, 1, 5, 1]);

    let retried = client
        .execute(
            "r",
            "mutation($id: ID!) { retryRequest(id: $id) { status batch { failed queued } } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(
        retried["retryRequest"]["batch"],
        json!({ "failed": 0, "queued": 2 })
    );
    client.wait_for_status(&id, "COMPLETED").await;
    let after = children(&mut client, &id).await;
    let attempts: Vec<u64> = after
        .iter()
        .map(|child| child["attempts"].as_u64().unwrap())
        .collect();
    assert_eq!(attempts, [1, 6, 1, 6, 1], "only the failed ones ran again");
    let data = client
        .execute(
            "q",
            "query($id: ID!) { request(id: $id) { status batch { completed failed } } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(
        data["request"]["batch"],
        json!({ "completed": 5, "failed": 0 })
    );
}

async fn cancelling_a_running_batch_cancels_what_has_not_ended(on: On) {
    let server = TestServer::start_tuned(on, |stack| stack.with_job_concurrency(2)).await;
    let mut client = server.client().await;
    client.init().await;
    let slow = json!({ "from": "2026-01-01", "to": "2026-01-31", "rows": 3, "stepDelayMs": 300 });
    let data = client
        .execute(
            "b",
            &format!("mutation($payloads: [JSON!]!) {{ enqueueBatch(action: \"generateReport\", payloads: $payloads) {{ {BATCH_FIELDS} }} }}"),
            json!({ "payloads": vec![slow; 12] }),
        )
        .await;
    let id = data["enqueueBatch"]["id"].as_str().unwrap().to_owned();
    client.wait_for_status(&id, "RUNNING").await;
    let cancelled = client
        .execute(
            "x",
            "mutation($id: ID!) { cancelRequest(id: $id) { id } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(cancelled["cancelRequest"]["id"], id.as_str());
    client.wait_for_status(&id, "CANCELLED").await;
    let listed = children(&mut client, &id).await;
    assert_eq!(listed.len(), 12);
    let cancelled = listed
        .iter()
        .filter(|child| child["status"] == "CANCELLED")
        .count();
    assert!(
        listed
            .iter()
            .all(|child| child["status"] == "CANCELLED" || child["status"] == "COMPLETED"),
        "{listed:?}"
    );
    assert!(cancelled >= 8, "at most two ran at once: {listed:?}");
    let data = client
        .execute(
            "q",
            "query($id: ID!) { request(id: $id) { batch { completed cancelled } } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(data["request"]["batch"]["cancelled"], cancelled, "{data}");
}

async fn a_bad_item_refuses_the_batch_and_keys_name_one_batch(on: On) {
    let limits = Limits {
        max_batch_items: 10,
        ..Limits::default()
    };
    let server = TestServer::start_with(on, limits).await;
    let mut client = server.client().await;
    client.init().await;
    let mut payloads: Vec<Value> = (0..9).map(|_| report(2)).collect();
    payloads[7] = json!({ "from": "2026-01-01", "to": "2026-01-31", "rows": "many" });
    let refused = client.first_payload(
        "bad",
        "mutation($payloads: [JSON!]!) { enqueueBatch(action: \"generateReport\", payloads: $payloads) { id } }",
        json!({ "payloads": payloads }),
    )
    .await;
    let error = first_error(&refused);
    assert_eq!(error["extensions"]["code"], "BAD_USER_INPUT", "{refused}");
    assert_eq!(error["extensions"]["index"], 7);
    assert!(
        error["message"].as_str().unwrap().starts_with("item 7: "),
        "{error}"
    );
    // The typed form refuses it too, naming the item.
    let typed = client.first_payload(
        "bad-typed",
        "mutation($inputs: [GenerateReportInput!]!) { generateReportBatch(inputs: $inputs) { id } }",
        json!({ "inputs": payloads }),
    )
    .await;
    let message = first_error(&typed)["message"].as_str().unwrap_or_default();
    assert!(message.contains("inputs.7"), "{typed}");
    let over = client.first_payload(
        "over",
        "mutation($payloads: [JSON!]!) { enqueueBatch(action: \"generateReport\", payloads: $payloads) { id } }",
        json!({ "payloads": vec![report(1); 11] }),
    )
    .await;
    assert_eq!(
        first_error(&over)["extensions"]["code"],
        "LIMIT_EXCEEDED",
        "{over}"
    );
    assert_eq!(first_error(&over)["extensions"]["limit"], "batchItems");
    let listed = client
        .execute(
            "l",
            "{ requests(first: 100) { edges { node { id } } } }",
            json!({}),
        )
        .await;
    assert_eq!(listed["requests"]["edges"], json!([]), "nothing was stored");

    // One key, the typed and the generic form, the same items: one batch.
    let items: Vec<Value> = (1..=3).map(report).collect();
    let typed = client
        .execute(
            "k1",
            "mutation($inputs: [GenerateReportInput!]!) { generateReportBatch(inputs: $inputs, idempotencyKey: \"k\", priority: 5) { id priority batch { total } } }",
            json!({ "inputs": items }),
        )
        .await;
    let generic = client
        .execute(
            "k2",
            "mutation($payloads: [JSON!]!) { enqueueBatch(action: \"generateReport\", payloads: $payloads, idempotencyKey: \"k\", priority: 5) { id priority batch { total } } }",
            json!({ "payloads": items }),
        )
        .await;
    assert_eq!(typed["generateReportBatch"], generic["enqueueBatch"]);
    assert_eq!(typed["generateReportBatch"]["priority"], 5);
    let id = typed["generateReportBatch"]["id"].as_str().unwrap();
    let other = client.first_payload(
        "k3",
        "mutation($payloads: [JSON!]!) { enqueueBatch(action: \"generateReport\", payloads: $payloads, idempotencyKey: \"k\") { id } }",
        json!({ "payloads": [report(9)] }),
    )
    .await;
    assert_eq!(
        first_error(&other)["extensions"]["code"],
        "IDEMPOTENCY_KEY_REUSED",
        "{other}"
    );
    client.wait_for_status(id, "COMPLETED").await;
    let data = client
        .execute(
            "p",
            "query($id: ID!) { request(id: $id) { children { edges { node { priority } } } } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(
        data["request"]["children"]["edges"],
        json!([{ "node": { "priority": 5 } }, { "node": { "priority": 5 } }, { "node": { "priority": 5 } }]),
        "children run at the batch's priority"
    );
}

on_both_stores!(
    a_batch_of_200_rises_to_completed,
    failed_children_fail_the_batch_and_a_retry_re_drives_only_them,
    cancelling_a_running_batch_cancels_what_has_not_ended,
    a_bad_item_refuses_the_batch_and_keys_name_one_batch,
);

#[derive(Debug)]
struct NoJobs;

#[async_trait]
impl Dispatcher for NoJobs {
    async fn dispatch(&self, _: &AsyncRequest) -> Result<()> {
        Ok(())
    }
}

/// A batch of three whose children all end (completed, failed, cancelled), written through
/// `store`; returns the batch's id.
async fn three_children_end(store: &dyn Store) -> String {
    let clock = SystemClock;
    let now = chrono::Utc::now();
    let id = format!("batch-{}", now.timestamp_nanos_opt().unwrap_or_default());
    let batch = AsyncRequest::new_batch(&id, "generateReport", 3, now);
    let children: Vec<AsyncRequest> = (0..3).map(|i| batch.child(i, report(1))).collect();
    store.create_batch(&batch, &children, None).await.unwrap();
    let at = |index: u32| streamer::core::batch::child_id(&id, index);
    for index in [0, 1] {
        modify_request(store, &clock, &at(index), |r, now| r.start(now))
            .await
            .unwrap();
    }
    modify_request(store, &clock, &at(0), |r, now| r.complete(json!({}), now))
        .await
        .unwrap();
    let error = RequestError {
        code: "BROKEN".into(),
        message: "for good".into(),
        retryable: false,
    };
    modify_request(store, &clock, &at(1), |r, now| r.fail(error.clone(), now))
        .await
        .unwrap();
    modify_request(store, &clock, &at(2), |r, now| r.cancel(now))
        .await
        .unwrap();
    id
}

/// Handles `changes` as a stream would deliver them after a processor crashed part-way
/// (the first half handled, then the whole batch again), then once more whole: the counts
/// are exact and the last delivery writes nothing.
async fn counted_once(store: Arc<dyn Store>, id: &str, changes: Vec<Change>) {
    let services = Services {
        store: Arc::clone(&store),
        clock: Arc::new(SystemClock),
        ids: Arc::new(RandomIds),
        limits: Limits::default(),
        access: streamer::core::Access::default(),
    };
    let processor = Processor::for_app(
        handlers::app().handlers(),
        &services,
        Arc::new(MemorySender::new()),
        Arc::new(NoJobs),
    )
    .unwrap();
    let moves = changes.iter().filter(|c| c.child_moved().is_some()).count();
    assert_eq!(moves, 5, "two starts and three ends");
    let half = changes.len() / 2;
    for delivery in [&changes[..half], &changes[..]] {
        let outcome = processor.handle_batch(delivery.to_vec()).await;
        assert!(outcome.failures.is_empty(), "{outcome:?}");
    }
    let counted = store.get_request(id).await.unwrap().unwrap();
    let counts = counted.batch.unwrap();
    assert_eq!(
        (
            counts.completed,
            counts.failed,
            counts.cancelled,
            counts.running,
            counts.queued
        ),
        (1, 1, 1, 0, 0)
    );
    assert_eq!(counted.status, RequestStatus::Failed);
    let outcome = processor.handle_batch(changes).await;
    assert!(outcome.failures.is_empty(), "{outcome:?}");
    let again = store.get_request(id).await.unwrap().unwrap();
    assert_eq!(
        (again.revision, again.version),
        (counted.revision, counted.version),
        "a change delivered again writes nothing"
    );
}

#[tokio::test]
async fn a_retried_stream_batch_counts_nothing_twice_embedded() {
    let store = Arc::new(MemoryStore::new());
    let mut feed = store.changes();
    let id = three_children_end(&*store).await;
    let mut changes = Vec::new();
    while let Ok(change) = feed.try_recv() {
        changes.push(change);
    }
    counted_once(store, &id, changes).await;
}

#[tokio::test]
async fn a_retried_stream_batch_counts_nothing_twice_dynamodb() {
    let endpoint = support::dynamodb_endpoint();
    let tables = support::unique_tables();
    let store = DynamoDbStore::local(&endpoint, tables.clone());
    store.create_tables().await.expect("tables created");
    let id = three_children_end(&store).await;
    let poller = StreamPoller::local(&endpoint, tables.name(&REQUESTS), PollerOptions::default());
    let records = poller.read_retained().await.expect("stream read");
    let decoded = stream::decode(&StreamEvent { records });
    assert!(decoded.failures.is_empty(), "{:?}", decoded.failures);
    counted_once(Arc::new(store), &id, decoded.changes).await;
}
