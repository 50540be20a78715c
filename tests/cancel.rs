//! Cancellation as a subscriber sees it: a queued request ends CANCELLED before it runs; a
//! running one is told at its next progress report and ends CANCELLED, never COMPLETED.

mod support;

use serde_json::{Value, json};
use support::{On, PROGRESS, TestServer};

fn last_state(frames: &[Value]) -> &Value {
    &frames[frames.len() - 2]["payload"]["data"]["requestProgress"]
}

async fn a_queued_request_is_cancelled_before_it_runs(on: On) {
    // One job at a time: the second request waits, QUEUED.
    let server = TestServer::start_tuned(on, |stack| stack.with_job_concurrency(1)).await;
    let mut client = server.client().await;
    client.init().await;
    let first = client.generate_report("a", 1_000).await;
    client.wait_for_status(&first, "RUNNING").await;
    let second = client.generate_report("b", 10).await;
    client.send(json!({ "id": "s", "type": "subscribe", "payload": { "query": PROGRESS, "variables": { "id": second } } })).await;
    assert_eq!(
        client.recv().await["payload"]["data"]["requestProgress"]["status"],
        "QUEUED"
    );
    client.send(json!({ "id": "c", "type": "subscribe", "payload": { "query": "mutation($id: ID!) { cancelRequest(id: $id) { status } }", "variables": { "id": second } } })).await;
    // The answer to "c" and the pushes to "s" may come in either order.
    let mut frames = client.until_done("c").await;
    if !frames
        .iter()
        .any(|f| f["id"] == "s" && f["type"] == "complete")
    {
        frames.extend(client.until_done("s").await);
    }
    let (answer, followed): (Vec<Value>, Vec<Value>) =
        frames.into_iter().partition(|f| f["id"] == "c");
    assert_eq!(
        answer[0]["payload"]["data"]["cancelRequest"]["status"],
        "CANCELLED"
    );
    assert_eq!(answer[1]["type"], "complete");
    let state = last_state(&followed);
    assert_eq!(
        (state["status"].as_str(), state["attempts"].as_u64()),
        (Some("CANCELLED"), Some(0)),
        "it never ran"
    );
}

async fn a_running_request_is_told_and_ends_cancelled(on: On) {
    let server = TestServer::start_on(on).await;
    let mut client = server.client().await;
    client.init().await;
    // Four steps of 300 ms.
    let id = client.generate_report("m", 300).await;
    client.wait_for_status(&id, "RUNNING").await;
    client.send(json!({ "id": "s", "type": "subscribe", "payload": { "query": PROGRESS, "variables": { "id": id } } })).await;
    assert_eq!(
        client.recv().await["payload"]["data"]["requestProgress"]["status"],
        "RUNNING"
    );
    client.send(json!({ "id": "c", "type": "subscribe", "payload": { "query": "mutation($id: ID!) { cancelRequest(id: $id) { status } }", "variables": { "id": id } } })).await;
    // Pushes for "s" and the answer for "c" interleave: sort them by operation.
    // The cancel reaches the handler at once: the subscription may complete before the
    // mutation's answer arrives.
    let (mut answer, mut followed) = (Vec::new(), Vec::new());
    let done = |frames: &Vec<Value>| {
        frames
            .last()
            .is_some_and(|f: &Value| f["type"] == "complete")
    };
    while !done(&followed) || !done(&answer) {
        let frame = client.recv().await;
        assert!(frame.get("close").is_none(), "{frame}");
        if frame["id"] == "c" {
            answer.push(frame);
        } else {
            followed.push(frame);
        }
    }
    assert_eq!(
        answer[0]["payload"]["data"]["cancelRequest"]["status"], "RUNNING",
        "the handler is told, not killed"
    );
    assert_eq!(last_state(&followed)["status"], "CANCELLED");
    assert!(
        followed
            .iter()
            .all(|f| f["payload"]["data"]["requestProgress"]["status"] != "COMPLETED"),
        "{followed:?}"
    );
}

on_both_stores!(
    a_queued_request_is_cancelled_before_it_runs,
    a_running_request_is_told_and_ends_cancelled,
);
