//! A connection's frames handled concurrently, as API Gateway's separate invocations can be,
//! with the `$disconnect` overlapping them: no subscription is left behind. On both stores.
//! The window this guards, a `$disconnect` landing between a subscribe's two writes, is a
//! few milliseconds wide: the clients leave after delays that sweep it, and on DynamoDB
//! Local some of them land in it.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{On, PROGRESS, TestServer};

async fn a_disconnect_overlapping_a_subscribe_leaves_no_subscription(on: On) {
    let server = TestServer::start_tuned(on, |stack| stack.with_concurrent_frames()).await;
    let mut owner = server.client().await;
    owner.init().await;
    // A long job to subscribe to.
    let id = owner.generate_report("m", 2_000).await;
    for n in 0..80 {
        let mut client = server.client().await;
        client.init().await;
        client.send(json!({ "id": "s", "type": "subscribe", "payload": { "query": PROGRESS, "variables": { "id": id } } })).await;
        // Gone a few milliseconds later: the `$disconnect` runs while the subscribe may
        // still be storing (the delays sweep the window between its writes).
        tokio::time::sleep(Duration::from_micros(250 * (n % 20))).await;
        drop(client);
    }
    // Every subscribe and disconnect has run by then.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let left = server.store.subscriptions(&id).await.unwrap();
    assert!(left.is_empty(), "{} left behind: {left:?}", left.len());
}

on_both_stores!(a_disconnect_overlapping_a_subscribe_leaves_no_subscription);
