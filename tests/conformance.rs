//! Behaviours the graphql-ws reference server's own test suite checks
//! (`tests/server.test.ts`), one test each where this repository did not already cover them
//! (`protocol.rs`: ack, ping/pong, 4400/4401/4409/4429, `next` + `complete`, validation errors,
//! client `complete`; `lifetime.rs`: 4408), with raw frames on both stores, and with the real
//! graphql-ws client.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{On, TestServer};

/// "should pass in the `connectionParams` through the context": the init payload is kept
/// with the connection.
async fn connection_params_are_kept_with_the_connection(on: On) {
    let server = TestServer::start_on(on).await;
    let mut client = server.client().await;
    client
        .send(json!({ "type": "connection_init", "payload": { "token": "t", "n": 1 } }))
        .await;
    assert_eq!(client.recv().await, json!({ "type": "connection_ack" }));
    let connection = server
        .store
        .get_connection("conn-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        connection.init_payload.as_deref(),
        Some(&json!({ "token": "t", "n": 1 }))
    );
}

/// "should call `onComplete` callback even if socket terminates abruptly" and "should dispose
/// of subscriptions on close": a dropped socket leaves no subscription behind.
async fn an_abrupt_close_disposes_of_the_subscriptions(on: On) {
    let server = TestServer::start_on(on).await;
    let mut client = server.client().await;
    client.init().await;
    let id = client.generate_report("m", 2_000).await;
    for op in ["a", "b"] {
        client.send(json!({ "id": op, "type": "subscribe", "payload": { "query": "subscription($id: ID!) { requestProgress(id: $id) { status } }", "variables": { "id": id } } })).await;
        // Its snapshot; a push to "a" may come first.
        loop {
            let frame = client.recv().await;
            assert_eq!(frame["type"], "next", "{frame}");
            if frame["id"] == op {
                break;
            }
        }
    }
    assert_eq!(server.store.subscriptions(&id).await.unwrap().len(), 2);
    drop(client);
    let mut left = usize::MAX;
    for _ in 0..200 {
        left = server.store.subscriptions(&id).await.unwrap().len();
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(left, 0, "the subscriptions went with the socket");
    assert_eq!(server.store.get_connection("conn-1").await.unwrap(), None);
}

/// "should not close connection if a subscription iterable throws" and "should not send
/// complete after error when subscription iterable throws": a job that fails is a state
/// like any other (FAILED, with its error), then `complete`; the connection stays.
async fn a_failing_job_ends_its_subscription_not_the_connection(on: On) {
    let server = TestServer::start_on(on).await;
    let mut client = server.client().await;
    client.init().await;
    let id = client.flaky_import("m", 9).await;
    client.send(json!({ "id": "s", "type": "subscribe", "payload": { "query": "subscription($id: ID!) { requestProgress(id: $id) { status attempts error { code retryable } } }", "variables": { "id": id } } })).await;
    let frames = client.until_done("s").await;
    let last = &frames[frames.len() - 2]["payload"]["data"]["requestProgress"];
    assert_eq!(last["status"], "FAILED", "{frames:?}");
    assert_eq!(last["error"]["code"], "UPSTREAM_UNAVAILABLE");
    assert_eq!(
        frames.last().unwrap(),
        &json!({ "id": "s", "type": "complete" })
    );
    client.send(json!({ "type": "ping" })).await;
    assert_eq!(client.recv().await, json!({ "type": "pong" }));
}

/// "should not send a complete message back if the client sent it" for a query, and an id
/// can be used again once its operation is done.
async fn an_operation_id_is_free_again_once_done(on: On) {
    let server = TestServer::start_on(on).await;
    let mut client = server.client().await;
    client.init().await;
    for _ in 0..3 {
        let data = client.execute("same", "{ actions }", json!({})).await;
        assert_eq!(
            data["actions"],
            json!(["flakyImport", "generateReport", "monthlyReports"])
        );
    }
    let id = client.generate_report("m", 0).await;
    client.wait_for_status(&id, "COMPLETED").await;
    for _ in 0..2 {
        client.send(json!({ "id": "again", "type": "subscribe", "payload": { "query": "subscription($id: ID!) { requestProgress(id: $id) { status } }", "variables": { "id": id } } })).await;
        let frames = client.until_done("again").await;
        assert_eq!(frames.len(), 2, "{frames:?}");
    }
}

/// The real graphql-ws client: unsubscribing mid-stream stops the pushes, a validation error
/// reaches the `error` callback, and the client keeps working after both.
async fn graphql_ws_client_unsubscribes_and_survives_errors(on: On) {
    let server = TestServer::start_on(on).await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    let output = tokio::process::Command::new("node")
        .arg("graphql-ws-conformance.mjs")
        .arg(server.ws_url())
        .current_dir(&dir)
        .output()
        .await
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let summary: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap();
    assert_eq!(summary["ok"], true);
    // Five more states are pushed while the client waits: at most one was on its way.
    assert!(
        matches!(summary["afterUnsubscribe"].as_u64(), Some(0 | 1)),
        "no pushes after unsubscribing but one in flight: {summary}"
    );
}

on_both_stores!(
    connection_params_are_kept_with_the_connection,
    an_abrupt_close_disposes_of_the_subscriptions,
    a_failing_job_ends_its_subscription_not_the_connection,
    an_operation_id_is_free_again_once_done,
    graphql_ws_client_unsubscribes_and_survives_errors,
);
