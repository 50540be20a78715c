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

/// A `complete` sent right after its `subscribe`, handled concurrently with it: whichever
/// runs first, no subscription is left pushing to the operation the client ended, and the
/// id is free again afterwards.
async fn a_complete_overtaking_its_subscribe_leaves_no_subscription(on: On) {
    let server = TestServer::start_tuned(on, |stack| stack.with_concurrent_frames()).await;
    let mut client = server.client().await;
    client.init().await;
    let id = client.generate_report("m", 2_000).await;
    for n in 0..40 {
        let op = format!("s{n}");
        client.send(json!({ "id": op, "type": "subscribe", "payload": { "query": PROGRESS, "variables": { "id": id } } })).await;
        client.send(json!({ "id": op, "type": "complete" })).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let left: Vec<String> = server
        .store
        .subscriptions(&id)
        .await
        .unwrap()
        .iter()
        .map(|s| s.key.operation_id.clone())
        .collect();
    assert!(left.is_empty(), "{} left behind: {left:?}", left.len());
    let connection = server
        .store
        .get_connection("conn-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(connection.subscriptions().count(), 0, "{connection:?}");
    // The ids can be used again.
    client.clear();
    client.send(json!({ "id": "s0", "type": "subscribe", "payload": { "query": PROGRESS, "variables": { "id": id } } })).await;
    loop {
        let frame = client.recv().await;
        assert!(frame.get("close").is_none(), "{frame}");
        if frame["id"] == "s0" && frame["type"] == "next" {
            break;
        }
    }
}

on_both_stores!(a_complete_overtaking_its_subscribe_leaves_no_subscription);

/// The marks of early `complete`s are bounded: a client completing ids it never used (or
/// queries in flight, which nothing stores) leaves at most 16, and those older than 30 s
/// are taken away.
#[tokio::test]
async fn marks_of_early_completes_are_bounded_and_expire() {
    let clock = streamer::core::ManualClock::new(chrono::Utc::now(), chrono::Duration::zero());
    let ticking = clock.clone();
    let server = TestServer::start_tuned(On::Embedded, move |stack| {
        stack.with_clock(std::sync::Arc::new(ticking))
    })
    .await;
    let mut client = server.client().await;
    client.init().await;
    let marks = || async {
        let connection = server
            .store
            .get_connection("conn-1")
            .await
            .unwrap()
            .unwrap();
        connection.operations.len() - connection.subscriptions().count()
    };
    for n in 0..40 {
        client
            .send(json!({ "id": format!("never{n}"), "type": "complete" }))
            .await;
    }
    // A ping answered: every complete before it was handled.
    client.send(json!({ "type": "ping" })).await;
    assert_eq!(client.recv().await["type"], "pong");
    assert_eq!(marks().await, 16);
    clock.advance(chrono::Duration::seconds(31));
    client
        .send(json!({ "id": "later", "type": "complete" }))
        .await;
    client.send(json!({ "type": "ping" })).await;
    assert_eq!(client.recv().await["type"], "pong");
    assert_eq!(marks().await, 1, "the stale ones went");
}
