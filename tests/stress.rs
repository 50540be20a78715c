//! Hundreds of subscriptions racing the completion of their request: subscribes sent just
//! before, during and after the final write. Every one receives the terminal state, then
//! `complete`.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;
use support::{On, TestServer};

async fn race(on: On, clients: usize, per_client: usize, spacing: Duration, step_ms: u64) {
    let server = TestServer::start_on(on).await;
    let mut driver = server.client().await;
    driver.init().await;
    let mut subscribers = Vec::new();
    for _ in 0..clients {
        let mut client = server.client().await;
        client.init().await;
        subscribers.push(client);
    }
    // Four steps of `step` milliseconds: subscribes go out before, during and after.
    let id = driver.generate_report("m", step_ms).await;
    let mut tasks = tokio::task::JoinSet::new();
    for (c, mut client) in subscribers.into_iter().enumerate() {
        let id = id.clone();
        tasks.spawn(async move {
            for k in 0..per_client {
                let subscribe = json!({ "id": format!("s{k}"), "type": "subscribe", "payload": { "query": "subscription($id: ID!) { requestProgress(id: $id) { status version } }", "variables": { "id": id } } });
                client.send(subscribe).await;
                // Staggered across clients, so that subscribes land all through the job.
                tokio::time::sleep(spacing * u32::try_from(c % 3 + 1).unwrap()).await;
            }
            let mut first: HashMap<String, String> = HashMap::new();
            let mut last: HashMap<String, String> = HashMap::new();
            let mut done = 0;
            while done < per_client {
                let frame = client.recv().await;
                let op = frame["id"].as_str().unwrap_or_else(|| panic!("{frame}")).to_owned();
                match frame["type"].as_str() {
                    Some("next") => {
                        let status = frame["payload"]["data"]["requestProgress"]["status"].as_str().unwrap();
                        first.entry(op.clone()).or_insert_with(|| status.to_owned());
                        last.insert(op, status.to_owned());
                    }
                    Some("complete") => {
                        assert_eq!(last.get(&op).map(String::as_str), Some("COMPLETED"), "client {c} {op}");
                        done += 1;
                    }
                    _ => panic!("client {c}: {frame}"),
                }
            }
            let late = first.values().filter(|s| *s == "COMPLETED").count();
            (done, late)
        });
    }
    let (mut total, mut late) = (0, 0);
    while let Some(joined) = tasks.join_next().await {
        let (done, after) = joined.unwrap();
        total += done;
        late += after;
    }
    assert_eq!(total, clients * per_client);
    eprintln!("{late} of {total} subscriptions came after the terminal write");
    // The race was run: some subscribed while the job ran, some after it ended.
    assert!(
        late > 0 && late < total,
        "{late} of {total} subscribed after the end"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_subscriptions_racing_completion_all_end_completed_on_the_embedded_store() {
    race(On::Embedded, 4, 75, Duration::from_millis(1), 50).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_racing_completion_all_end_completed_on_dynamodb() {
    race(On::DynamoDb, 4, 50, Duration::from_millis(3), 150).await;
}
