//! One test per limit: the error names the limit, and the connection carries on.

mod support;

use serde_json::{Value, json};
use streamer::core::Limits;
use support::{Client, On, TestServer};

async fn limited(limits: Limits) -> (TestServer, Client) {
    let server = TestServer::start_with(On::Embedded, limits).await;
    let mut client = server.client().await;
    client.init().await;
    (server, client)
}

/// Sends `subscribe` as operation `id` and returns the `error` frame it gets.
async fn refused(client: &mut Client, id: &str, query: &str, variables: Value) -> Value {
    client
        .send(json!({ "id": id, "type": "subscribe", "payload": { "query": query, "variables": variables } }))
        .await;
    let frames = client.until_done(id).await;
    let last = frames.last().unwrap();
    assert_eq!(last["type"], "error", "{frames:?}");
    last["payload"][0].clone()
}

/// The connection still answers: a ping, and a query. Pushes to the connection's
/// subscriptions may arrive before the pong.
async fn still_works(client: &mut Client) {
    client.send(json!({ "type": "ping" })).await;
    loop {
        let frame = client.recv().await;
        if frame == json!({ "type": "pong" }) {
            break;
        }
        assert_eq!(
            frame["type"], "next",
            "only pushes before the pong: {frame}"
        );
    }
    let data = client.execute("after", "{ actions }", json!({})).await;
    assert_eq!(
        data["actions"],
        json!(["flakyImport", "generateReport", "monthlyReports"])
    );
}

fn limit_of(error: &Value) -> &str {
    assert_eq!(error["extensions"]["code"], "LIMIT_EXCEEDED", "{error}");
    error["extensions"]["limit"].as_str().unwrap()
}

#[tokio::test]
async fn a_result_over_the_message_size_is_an_error_for_its_operation() {
    let (_server, mut client) = limited(Limits {
        max_message_bytes: 1024,
        ..Limits::default()
    })
    .await;
    let long = "x".repeat(1200);
    let data = client
        .execute(
            "m",
            "mutation($from: String!) { generateReport(input: {from: $from, to: \"2026-01-31\", stepDelayMs: 1}) { id } }",
            json!({ "from": long }),
        )
        .await;
    let id = data["generateReport"]["id"].as_str().unwrap().to_owned();
    client.wait_for_status(&id, "COMPLETED").await;
    // A query answer over the limit: the report's URL holds the long date.
    let report = "query($id: ID!) { request(id: $id) { output { ... on Report { url } } } }";
    let error = refused(&mut client, "q", report, json!({ "id": id })).await;
    assert_eq!(limit_of(&error), "messageBytes");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("over the limit of 1024"),
        "{error}"
    );
    // A subscription whose state is over the limit ends with the error.
    let error = refused(
        &mut client,
        "s",
        "subscription($id: ID!) { requestProgress(id: $id) { output { ... on Report { url } } } }",
        json!({ "id": id }),
    )
    .await;
    assert_eq!(limit_of(&error), "messageBytes");
    still_works(&mut client).await;
    // The same subscription, selecting less, is fine.
    client.send(json!({ "id": "small", "type": "subscribe", "payload": { "query": "subscription($id: ID!) { requestProgress(id: $id) { status } }", "variables": { "id": id } } })).await;
    let frames = client.until_done("small").await;
    assert_eq!(
        frames[0]["payload"]["data"]["requestProgress"]["status"],
        "COMPLETED"
    );
    assert_eq!(frames[1]["type"], "complete");
}

#[tokio::test]
async fn depth_complexity_and_aliases_are_limited() {
    let (_server, mut client) = limited(Limits {
        max_depth: 3,
        max_complexity: 5,
        max_aliases: 2,
        ..Limits::default()
    })
    .await;
    let error = refused(
        &mut client,
        "1",
        "{ requests { edges { node { id } } } }",
        json!({}),
    )
    .await;
    assert_eq!(limit_of(&error), "depth");
    assert_eq!(
        error["message"],
        "the query depth is 4, over the limit of 3"
    );
    let error = refused(
        &mut client,
        "2",
        "{ actions request(id: \"x\") { id status progress message version } }",
        json!({}),
    )
    .await;
    assert_eq!(limit_of(&error), "complexity");
    let error = refused(
        &mut client,
        "3",
        "{ a: actions b: actions c: actions }",
        json!({}),
    )
    .await;
    assert_eq!(limit_of(&error), "aliases");
    still_works(&mut client).await;
}

#[tokio::test]
async fn subscriptions_per_connection_are_limited() {
    let (_server, mut client) = limited(Limits {
        max_subscriptions: 2,
        ..Limits::default()
    })
    .await;
    let id = client.generate_report("m", 2_000).await;
    let follow = "subscription($id: ID!) { requestProgress(id: $id) { status } }";
    for op in ["a", "b"] {
        client.send(json!({ "id": op, "type": "subscribe", "payload": { "query": follow, "variables": { "id": id } } })).await;
        assert_eq!(client.recv().await["type"], "next");
    }
    let error = refused(&mut client, "c", follow, json!({ "id": id })).await;
    assert_eq!(limit_of(&error), "subscriptions");
    assert_eq!(
        error["message"],
        "the number of active subscriptions is 3, over the limit of 2"
    );
    still_works(&mut client).await;
    // Ending one makes room.
    client.send(json!({ "id": "a", "type": "complete" })).await;
    client.send(json!({ "id": "c", "type": "subscribe", "payload": { "query": follow, "variables": { "id": id } } })).await;
    assert_eq!(client.recv().await["type"], "next");
}

#[tokio::test]
async fn long_operation_ids_are_refused() {
    let (_server, mut client) = limited(Limits {
        max_operation_id: 8,
        ..Limits::default()
    })
    .await;
    let long = "o".repeat(20);
    let error = refused(&mut client, &long, "{ actions }", json!({})).await;
    assert_eq!(limit_of(&error), "operationId");
    still_works(&mut client).await;
}

#[tokio::test]
async fn enqueue_payloads_are_limited_and_nothing_is_stored() {
    let (_server, mut client) = limited(Limits {
        max_payload_bytes: 200,
        ..Limits::default()
    })
    .await;
    let enqueue = "mutation($from: String!) { generateReport(input: {from: $from, to: \"2026-01-31\"}) { id } }";
    let error = refused(
        &mut client,
        "m",
        enqueue,
        json!({ "from": "x".repeat(300) }),
    )
    .await;
    assert_eq!(limit_of(&error), "payloadBytes");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("over the limit of 200"),
        "{error}"
    );
    let data = client
        .execute("l", "{ requests { edges { node { id } } } }", json!({}))
        .await;
    assert_eq!(data["requests"]["edges"], json!([]), "nothing stored");
    still_works(&mut client).await;
}
