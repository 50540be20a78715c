//! The whole flow on the local stack: jobs that do not wait for each other, retries, GraphQL
//! over HTTP, the Management API and GraphiQL.

mod support;

use serde_json::{Value, json};
use streamer::core::{Connection, Subscription, SubscriptionKey};
use support::{On, PROGRESS, TestServer};

async fn a_long_job_does_not_delay_a_job_started_after_it(on: On) {
    let server = TestServer::start_on(on).await;
    let mut client = server.client().await;
    client.init().await;
    // Five steps of 800 ms: about four seconds.
    let long = client.generate_report("long", 800).await;
    client.wait_for_status(&long, "RUNNING").await;
    let short = client.generate_report("short", 10).await;
    let subscribe = json!({ "id": "s", "type": "subscribe", "payload": { "query": PROGRESS, "variables": { "id": short } } });
    client.send(subscribe).await;
    let frames = client.until_done("s").await;
    assert!(frames.len() >= 2, "states, then complete: {frames:?}");
    let last = &frames[frames.len() - 2]["payload"]["data"]["requestProgress"];
    assert_eq!(last["status"], "COMPLETED");
    // The short job went through all its states while the long one still runs.
    let data = client
        .execute(
            "q",
            "query($id: ID!) { request(id: $id) { status progress } }",
            json!({ "id": long }),
        )
        .await;
    assert_eq!(
        data["request"]["status"], "RUNNING",
        "the long job is still running: {data}"
    );
    assert!(data["request"]["progress"].as_f64().unwrap() < 0.95);
}

async fn a_flaky_import_is_retried_until_it_succeeds(on: On) {
    let server = TestServer::start_on(on).await;
    let mut client = server.client().await;
    client.init().await;
    let id = client.flaky_import("m", 2).await;
    let subscribe = json!({ "id": "s", "type": "subscribe", "payload": { "query": PROGRESS, "variables": { "id": id } } });
    client.send(subscribe).await;
    let frames = client.until_done("s").await;
    let states = support::states(&frames);
    let retrying: Vec<u64> = states
        .iter()
        .filter(|s| s["status"] == "RETRYING")
        .map(|s| s["attempts"].as_u64().unwrap())
        .collect();
    assert_eq!(retrying, [1, 2], "RETRYING after attempts 1 and 2");
    assert_eq!(
        states.iter().find(|s| s["status"] == "RETRYING").unwrap()["error"]["code"],
        "UPSTREAM_UNAVAILABLE"
    );
    let last = states.last().unwrap();
    assert_eq!(
        (last["status"].as_str(), last["attempts"].as_u64()),
        (Some("COMPLETED"), Some(3))
    );
    assert_eq!(
        last["output"],
        json!({ "__typename": "ImportSummary", "imported": 42 })
    );
}

async fn graphql_over_http(on: On) {
    let server = TestServer::start_on(on).await;
    let (status, body) = server
        .http(
            "POST",
            "/graphql",
            r#"{"query":"mutation { flakyImport(input: {failTimes: 0}) { id status } }"}"#,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({ "data": { "flakyImport": { "id": "req-1", "status": "QUEUED" } } })
    );
    let (status, body) = server
        .http(
            "POST",
            "/graphql",
            r#"{"query":"subscription { requestProgress(id: \"req-1\") { id } }"}"#,
        )
        .await;
    assert_eq!(status, 400);
    assert!(body.contains("WebSocket"), "{body}");
    let (status, _) = server.http("POST", "/graphql", "not json").await;
    assert_eq!(status, 400);
    let (status, page) = server.http("GET", "/", "").await;
    assert_eq!(status, 200);
    assert!(
        page.contains("graphiql") && page.contains("/graphql"),
        "GraphiQL is served"
    );
}

async fn management_api_posts_describes_and_deletes_connections(on: On) {
    let server = TestServer::start_on(on).await;
    let mut client = server.client().await;
    client.init().await;
    // The connection ids are sequential in tests: this socket is conn-1. The AWS SDK's own
    // client, signing (SigV4) with the stack's credentials, as a function's role would.
    let management = server.management_client();
    let frame = r#"{"type":"ping","payload":{"from":"management"}}"#;
    management
        .post_to_connection()
        .connection_id("conn-1")
        .data(frame.as_bytes().to_vec().into())
        .send()
        .await
        .expect("posted");
    assert_eq!(
        client.recv().await,
        json!({ "type": "ping", "payload": { "from": "management" } })
    );
    let description = management
        .get_connection()
        .connection_id("conn-1")
        .send()
        .await
        .expect("described");
    assert_eq!(
        description.identity().and_then(|i| i.source_ip()),
        Some("127.0.0.1")
    );
    assert!(description.connected_at().is_some() && description.last_active_at().is_some());
    management
        .delete_connection()
        .connection_id("conn-1")
        .send()
        .await
        .expect("deleted");
    assert_eq!(
        client.recv().await["close"]["code"],
        1000,
        "deleted connections close normally, as on AWS"
    );
    fn gone<E>(
        error: &aws_sdk_apigatewaymanagement::error::SdkError<
            E,
            aws_sdk_apigatewaymanagement::config::http::HttpResponse,
        >,
    ) -> bool {
        error.raw_response().map(|r| r.status().as_u16()) == Some(410)
    }
    let posted = management
        .post_to_connection()
        .connection_id("conn-1")
        .data(b"{}".to_vec().into())
        .send()
        .await;
    assert!(posted.as_ref().is_err_and(gone), "{posted:?}");
    let described = management
        .get_connection()
        .connection_id("nope")
        .send()
        .await;
    assert!(described.as_ref().is_err_and(gone), "{described:?}");
}

async fn a_gone_connection_is_pruned_with_its_subscriptions(on: On) {
    let server = TestServer::start_on(on).await;
    let mut client = server.client().await;
    client.init().await;
    let id = client.generate_report("m", 100).await;
    // A connection that API Gateway no longer has, with a subscription to the same request.
    let now = chrono::Utc::now();
    let mut ghost = Connection::new("ghost", now);
    ghost.operations.insert("g".into(), id.clone());
    server.store.put_connection(&ghost).await.unwrap();
    let key = SubscriptionKey {
        request_id: id.clone(),
        connection_id: "ghost".into(),
        operation_id: "g".into(),
    };
    server
        .store
        .put_subscription(&Subscription {
            key: key.clone(),
            query: PROGRESS.into(),
            operation_name: None,
            variables: Some(json!({ "id": id })),
            last_version: 0,
            created_at: now,
            expires_at: ghost.expires_at,
            pushing_until: None,
            principal: None,
        })
        .await
        .unwrap();
    // The live subscriber still gets everything.
    let subscribe = json!({ "id": "s", "type": "subscribe", "payload": { "query": PROGRESS, "variables": { "id": id } } });
    client.send(subscribe).await;
    let frames = client.until_done("s").await;
    assert_eq!(
        frames[frames.len() - 2]["payload"]["data"]["requestProgress"]["status"],
        "COMPLETED"
    );
    // The first push to the ghost got 410: it and its subscription are gone.
    assert_eq!(server.store.get_connection("ghost").await.unwrap(), None);
    let followers: Vec<String> = server
        .store
        .subscriptions(&id)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.key.connection_id.clone())
        .collect();
    assert!(!followers.contains(&"ghost".to_owned()), "{followers:?}");
}

on_both_stores!(
    a_long_job_does_not_delay_a_job_started_after_it,
    a_flaky_import_is_retried_until_it_succeeds,
    graphql_over_http,
    management_api_posts_describes_and_deletes_connections,
    a_gone_connection_is_pruned_with_its_subscriptions,
);

/// With the default settings there is no quota: a burst of 1,000 enqueues from one client,
/// sent within a second, is accepted whole.
#[tokio::test]
async fn a_burst_of_a_thousand_enqueues_is_accepted_with_the_defaults() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    client.init().await;
    let started = std::time::Instant::now();
    for n in 0..1000 {
        client.send(json!({ "id": format!("m{n}"), "type": "subscribe", "payload": { "query": "mutation { flakyImport(input: {failTimes: 0}) { id } }" } })).await;
    }
    let sent = started.elapsed();
    let mut accepted = 0;
    while accepted < 1000 {
        let frame = client.recv().await;
        match frame["type"].as_str() {
            Some("next") => {
                assert!(frame["payload"]["errors"].is_null(), "{frame}");
                accepted += 1;
            }
            Some("complete") => {}
            _ => panic!("refused after {accepted}: {frame}"),
        }
    }
    // The burst is what the quota used to refuse: 1,000 within a second or two.
    assert!(sent < std::time::Duration::from_secs(2), "sent in {sent:?}");
}
