//! Dead letters: a request that fails for good is listed as FAILED and re-driven by
//! `retryRequest`; here the re-driven `flakyImport` (failing its first five attempts, its whole
//! budget) completes on attempt six.

mod support;

use serde_json::{Value, json};
use support::{On, PROGRESS, TestServer};

async fn follow(client: &mut support::Client, op: &str, id: &str) -> Value {
    client.send(json!({ "id": op, "type": "subscribe", "payload": { "query": PROGRESS, "variables": { "id": id } } })).await;
    let frames = client.until_done(op).await;
    frames[frames.len() - 2]["payload"]["data"]["requestProgress"].clone()
}

async fn a_redriven_dead_letter_completes(on: On) {
    let server = TestServer::start_on(on).await;
    let mut client = server.client().await;
    client.init().await;
    let id = client.flaky_import("m", 5).await;
    let failed = follow(&mut client, "s1", &id).await;
    assert_eq!(
        (failed["status"].as_str(), failed["attempts"].as_u64()),
        (Some("FAILED"), Some(5))
    );
    let listed = client
        .execute(
            "l",
            "{ requests(status: FAILED) { edges { node { id } } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        listed["requests"]["edges"],
        json!([{ "node": { "id": id } }]),
        "a dead letter is listed"
    );
    let data = client
        .execute(
            "r",
            "mutation($id: ID!) { retryRequest(id: $id) { status attempts } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(
        data["retryRequest"],
        json!({ "status": "QUEUED", "attempts": 5 })
    );
    let done = follow(&mut client, "s2", &id).await;
    assert_eq!(
        (done["status"].as_str(), done["attempts"].as_u64()),
        (Some("COMPLETED"), Some(6))
    );
    assert_eq!(
        done["output"],
        json!({ "__typename": "ImportSummary", "imported": 42 })
    );
}

on_both_stores!(a_redriven_dead_letter_completes);
