//! Priority: with one job slot taken, the jobs waiting for it start highest priority first,
//! in enqueue order within a priority; a priority out of range is refused.

mod support;

use serde_json::json;
use support::{On, TestServer};

const ENQUEUE: &str = "mutation($priority: Int) { generateReport(input: {from: \"2026-01-01\", to: \"2026-01-02\", rows: 1, stepDelayMs: 0}, priority: $priority) { id priority } }";

#[tokio::test]
async fn waiting_jobs_start_highest_priority_first() {
    let server = TestServer::start_tuned(On::Embedded, |stack| stack.with_job_concurrency(1)).await;
    let mut client = server.client().await;
    client.init().await;
    // Four steps of 200 ms hold the only slot while the others are enqueued.
    let blocker = client.generate_report("blocker", 200).await;
    client.wait_for_status(&blocker, "RUNNING").await;
    let mut enqueued = Vec::new();
    for (name, priority) in [("low", -5), ("normal", 0), ("high", 7), ("high too", 7)] {
        let data = client
            .execute(name, ENQUEUE, json!({ "priority": priority }))
            .await;
        assert_eq!(data["generateReport"]["priority"], priority);
        let id = data["generateReport"]["id"].as_str().unwrap().to_owned();
        enqueued.push((name, id));
    }
    for (_, id) in &enqueued {
        client.wait_for_status(id, "COMPLETED").await;
    }
    // One slot: the jobs ended in the order they started. The clock moves on every reading,
    // so completion times are distinct.
    let mut finished = Vec::new();
    for (name, id) in &enqueued {
        let request = server.store.get_request(id).await.unwrap().unwrap();
        finished.push((request.updated_at, *name));
    }
    finished.sort();
    let order: Vec<&str> = finished.into_iter().map(|(_, name)| name).collect();
    assert_eq!(order, ["high", "high too", "normal", "low"]);
}

#[tokio::test]
async fn a_priority_out_of_range_is_refused() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    client.init().await;
    client
        .send(json!({ "id": "m", "type": "subscribe", "payload": { "query": ENQUEUE, "variables": { "priority": 101 } } }))
        .await;
    let frames = client.until_done("m").await;
    // The mutation's field is non-null: no data, so the errors come as an `error` frame.
    assert_eq!(frames[0]["type"], "error", "{frames:?}");
    let errors = &frames[0]["payload"];
    assert_eq!(
        errors[0]["extensions"]["code"], "BAD_USER_INPUT",
        "{frames:?}"
    );
    assert_eq!(
        errors[0]["message"], "a priority is from -100 to 100, got 101",
        "{frames:?}"
    );
    let data = client
        .execute("list", "{ requests { edges { node { id } } } }", json!({}))
        .await;
    assert_eq!(data["requests"]["edges"], json!([]), "nothing was enqueued");
}
