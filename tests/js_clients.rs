//! Real npm clients under Node (graphql-ws, Apollo Client 4, urql) against the local server on
//! port 0, on both stores. The test command installs them (`scripts/setup`); without them these
//! tests fail with a message saying so.

mod support;

use support::{On, TestServer, run_node};

async fn graphql_ws_client_mutation_then_subscription(on: On) {
    let server = TestServer::start_on(on).await;
    let summary = run_node("graphql-ws.mjs", &server, &[]).await;
    assert_eq!(summary["ok"], true);
    let states = summary["states"].as_array().unwrap();
    assert_eq!(states.last().unwrap()[0], "COMPLETED");
    assert!(states.len() >= 5, "{states:?}");
}

async fn apollo_client_mutation_then_subscription(on: On) {
    let server = TestServer::start_on(on).await;
    let summary = run_node("apollo.mjs", &server, &[]).await;
    assert_eq!(summary["ok"], true);
    let states = summary["states"].as_array().unwrap();
    assert_eq!(states.last().unwrap()[0], "COMPLETED");
}

async fn urql_client_mutation_then_subscription(on: On) {
    let server = TestServer::start_on(on).await;
    let summary = run_node("urql.mjs", &server, &[]).await;
    assert_eq!(summary["ok"], true);
    let states = summary["states"].as_array().unwrap();
    assert_eq!(states.last().unwrap()[0], "COMPLETED");
}

on_both_stores!(
    graphql_ws_client_mutation_then_subscription,
    apollo_client_mutation_then_subscription,
    urql_client_mutation_then_subscription,
);
