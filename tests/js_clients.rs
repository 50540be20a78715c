//! Real npm clients under Node (graphql-ws, Apollo Client 4, urql) against the local server on
//! port 0, on both stores. The test command installs them (`scripts/setup`); without them these
//! tests fail with a message saying so.

mod support;

use std::path::Path;
use std::process::Stdio;

use support::{On, TestServer};

async fn run_node(script: &str, server: &TestServer) -> serde_json::Value {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    assert!(
        dir.join("node_modules/graphql-ws").is_dir(),
        "npm packages missing in tests/js: run scripts/setup (the test command does)"
    );
    let output = tokio::process::Command::new("node")
        .arg(script)
        .arg(server.ws_url())
        .current_dir(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .expect("node runs (Node 20; scripts/setup installs it)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script} failed:\n{stdout}\n{stderr}"
    );
    serde_json::from_str(stdout.lines().last().unwrap_or_default()).expect("one JSON summary line")
}

async fn graphql_ws_client_mutation_then_subscription(on: On) {
    let server = TestServer::start_on(on).await;
    let summary = run_node("graphql-ws.mjs", &server).await;
    assert_eq!(summary["ok"], true);
    let states = summary["states"].as_array().unwrap();
    assert_eq!(states.last().unwrap()[0], "COMPLETED");
    assert!(states.len() >= 5, "{states:?}");
}

async fn apollo_client_mutation_then_subscription(on: On) {
    let server = TestServer::start_on(on).await;
    let summary = run_node("apollo.mjs", &server).await;
    assert_eq!(summary["ok"], true);
    let states = summary["states"].as_array().unwrap();
    assert_eq!(states.last().unwrap()[0], "COMPLETED");
}

async fn urql_client_mutation_then_subscription(on: On) {
    let server = TestServer::start_on(on).await;
    let summary = run_node("urql.mjs", &server).await;
    assert_eq!(summary["ok"], true);
    let states = summary["states"].as_array().unwrap();
    assert_eq!(states.last().unwrap()[0], "COMPLETED");
}

on_both_stores!(
    graphql_ws_client_mutation_then_subscription,
    apollo_client_mutation_then_subscription,
    urql_client_mutation_then_subscription,
);
