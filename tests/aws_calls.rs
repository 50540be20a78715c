//! Every AWS call the stack sends is counted by service and operation (the requests a job
//! costs), and the local server serves the counts at `GET /stats`.

mod support;

use serde_json::{Value, json};
use support::{On, PROGRESS, TestServer};

async fn calls(server: &TestServer) -> Value {
    let (status, body) = server.http("GET", "/stats", "").await;
    assert_eq!(status, 200, "{body}");
    let stats: Value = serde_json::from_str(&body).unwrap();
    stats["awsCalls"].clone()
}

fn count(calls: &Value, call: &str) -> u64 {
    calls[call].as_u64().unwrap_or(0)
}

#[tokio::test]
async fn a_job_on_dynamodb_counts_its_requests_by_operation() {
    let server = TestServer::start_on(On::DynamoDb).await;
    let before = calls(&server).await;
    let mut client = server.client().await;
    client.init().await;
    let id = client.generate_report("m", 20).await;
    client
        .send(json!({ "id": "s", "type": "subscribe", "payload": { "query": PROGRESS, "variables": { "id": id } } }))
        .await;
    client.until_done("s").await;
    let after = calls(&server).await;
    for call in [
        "DynamoDB.PutItem",
        "DynamoDB.TransactWriteItems",
        "DynamoDB.BatchWriteItem",
        "DynamoDB.UpdateItem",
        "DynamoDB.GetItem",
        "DynamoDB.Query",
        "DynamoDB Streams.GetRecords",
        "ApiGatewayManagementApi.PostToConnection",
    ] {
        assert!(
            count(&after, call) > count(&before, call),
            "{call}: {before} → {after}"
        );
    }
    // The sweeper's calls, a cost per second whatever the jobs, are counted apart.
    let swept = |calls: &Value| count(calls, "Sweeper/DynamoDB.Query");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut now = after;
    while swept(&now) <= swept(&before) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no sweep counted: {now}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        now = calls(&server).await;
    }
}
