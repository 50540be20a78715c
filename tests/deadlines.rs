//! Deadlines: an attempt that would outlive its time limit is ended as a retryable failure
//! (`DEADLINE_EXCEEDED`) before it is killed, never silently; once the attempts run out the
//! request is FAILED with that error.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{On, TestServer};

#[tokio::test]
async fn an_attempt_out_of_time_is_a_retryable_failure() {
    let server = TestServer::start_tuned(On::Embedded, |stack| {
        stack.with_time_limit(Duration::from_millis(250))
    })
    .await;
    let mut client = server.client().await;
    client.init().await;
    // Four steps of 200 ms cannot finish in 250 ms.
    let id = client.generate_report("m", 200).await;
    let follow = "subscription($id: ID!) { requestProgress(id: $id, afterVersion: 0) { status attempts error { code retryable } } }";
    client.send(json!({ "id": "s", "type": "subscribe", "payload": { "query": follow, "variables": { "id": id } } })).await;
    let frames = client.until_done("s").await;
    let states = support::states(&frames);
    let retrying: Vec<(u64, &Value)> = states
        .iter()
        .filter(|s| s["status"] == "RETRYING")
        .map(|s| (s["attempts"].as_u64().unwrap(), &s["error"]))
        .collect();
    assert_eq!(retrying.len(), 2, "{states:?}");
    assert!(
        retrying
            .iter()
            .all(|(_, e)| e["code"] == "DEADLINE_EXCEEDED" && e["retryable"] == true)
    );
    let last = states.last().unwrap();
    assert_eq!(
        (
            last["status"].as_str(),
            last["attempts"].as_u64(),
            last["error"]["code"].as_str()
        ),
        (Some("FAILED"), Some(3), Some("DEADLINE_EXCEEDED"))
    );
}
