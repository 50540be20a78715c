//! Retries as a subscriber sees them: `flakyImport` failing twice goes RETRYING with attempts 1
//! and 2, then COMPLETED with attempts 3 (a transcript); each wait between attempts stays
//! within its full-jitter ceiling (200 ms, then 400 ms), give or take the push itself.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use streamer::processor::JOB_BACKOFF;
use support::TestServer;

#[tokio::test]
async fn flaky_import_retries_within_the_backoff_bounds() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    client.init().await;
    let data = client
        .execute(
            "m",
            "mutation { flakyImport(input: {failTimes: 2}) { id } }",
            json!({}),
        )
        .await;
    let id = data["flakyImport"]["id"].as_str().unwrap().to_owned();
    client.clear();
    // afterVersion 0: every state, from the history, however late this arrives.
    let follow = "subscription($id: ID!) { requestProgress(id: $id, afterVersion: 0) { status attempts version message nextAttemptAt error { code message retryable } output { ... on ImportSummary { imported } } } }";
    client.send(json!({ "id": "s", "type": "subscribe", "payload": { "query": follow, "variables": { "id": id } } })).await;
    let mut arrivals: Vec<(tokio::time::Instant, Value)> = Vec::new();
    loop {
        let frame = client.recv().await;
        assert_ne!(frame["type"], "error", "{frame}");
        if frame["type"] == "complete" {
            break;
        }
        arrivals.push((
            tokio::time::Instant::now(),
            frame["payload"]["data"]["requestProgress"].clone(),
        ));
    }
    let states: Vec<&Value> = arrivals.iter().map(|(_, s)| s).collect();
    let retrying: Vec<&Value> = states
        .iter()
        .copied()
        .filter(|s| s["status"] == "RETRYING")
        .collect();
    assert_eq!(
        retrying
            .iter()
            .map(|s| s["attempts"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [1, 2]
    );
    let last = states.last().unwrap();
    assert_eq!(
        (last["status"].as_str(), last["attempts"].as_u64()),
        (Some("COMPLETED"), Some(3))
    );
    // The wait after RETRYING(n) until RUNNING(n + 1) is the backoff of attempt n.
    for attempt in 1..=2u64 {
        let retried = arrivals
            .iter()
            .position(|(_, s)| s["status"] == "RETRYING" && s["attempts"] == attempt)
            .unwrap();
        let resumed = arrivals
            .iter()
            .position(|(_, s)| s["status"] == "RUNNING" && s["attempts"] == attempt + 1)
            .unwrap();
        let waited = arrivals[resumed].0 - arrivals[retried].0;
        let ceiling = JOB_BACKOFF.ceiling(u32::try_from(attempt).unwrap());
        assert!(
            waited <= ceiling + Duration::from_millis(100),
            "attempt {attempt}: waited {waited:?}, ceiling {ceiling:?}"
        );
    }
    // The due time carries the random jitter: only whether it is set is kept.
    insta::assert_json_snapshot!("flaky_import_transcript", client.transcript, {
        "[].server.payload.data.requestProgress.nextAttemptAt" => insta::dynamic_redaction(|value, _| {
            if value.is_nil() { value } else { "[due]".into() }
        })
    });
}
