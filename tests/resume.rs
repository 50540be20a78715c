//! `requestProgress(id, afterVersion)`: a client that reconnects passes the last version it
//! saw and continues without gaps and without repeats, whether the job is still running or
//! has ended meanwhile.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{Client, On, TestServer};

const FOLLOW: &str = "subscription($id: ID!, $after: Int) { requestProgress(id: $id, afterVersion: $after) { status version } }";

fn versions(frames: &[Value]) -> Vec<u64> {
    frames
        .iter()
        .filter(|f| f["type"] == "next")
        .map(|f| {
            f["payload"]["data"]["requestProgress"]["version"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

async fn resume(client: &mut Client, id: &str, after: u64) -> Vec<Value> {
    client.send(json!({ "id": "again", "type": "subscribe", "payload": { "query": FOLLOW, "variables": { "id": id, "after": after } } })).await;
    client.until_done("again").await
}

async fn a_client_that_reconnects_continues_without_gaps(on: On) {
    let server = TestServer::start_on(on).await;
    let mut first = server.client().await;
    first.init().await;
    // Four steps of 150 ms: versions 1 (QUEUED) to 7 (COMPLETED).
    let id = first.generate_report("m", 150).await;
    first.send(json!({ "id": "s", "type": "subscribe", "payload": { "query": FOLLOW, "variables": { "id": id } } })).await;
    let mut seen = 0;
    for _ in 0..2 {
        let frame = first.recv().await;
        seen = frame["payload"]["data"]["requestProgress"]["version"]
            .as_u64()
            .unwrap();
    }
    drop(first);
    // States go by while the client is away.
    tokio::time::sleep(Duration::from_millis(350)).await;

    let mut second = server.client().await;
    second.init().await;
    let frames = resume(&mut second, &id, seen).await;
    let got = versions(&frames);
    assert_eq!(
        got,
        ((seen + 1)..=7).collect::<Vec<_>>(),
        "every version after {seen}, once"
    );
    assert_eq!(
        frames[frames.len() - 2]["payload"]["data"]["requestProgress"]["status"],
        "COMPLETED"
    );
    assert_eq!(
        frames.last().unwrap(),
        &json!({ "id": "again", "type": "complete" })
    );

    // After the end, resuming from version 2 replays the rest, then `complete`.
    let frames = resume(&mut second, &id, 2).await;
    assert_eq!(versions(&frames), [3, 4, 5, 6, 7]);
    // From the last version: nothing more to see, only `complete`.
    let frames = resume(&mut second, &id, 7).await;
    assert_eq!(frames, [json!({ "id": "again", "type": "complete" })]);
}

on_both_stores!(a_client_that_reconnects_continues_without_gaps);
