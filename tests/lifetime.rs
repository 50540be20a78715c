//! The local server's connection timers, as the reference server and API Gateway have them,
//! with paused time: 4408 without `connection_init` in time, 1001 after ten idle minutes and
//! after two hours whatever the traffic.

mod support;

use std::time::Duration;

use serde_json::json;
use support::TestServer;

const MINUTE: Duration = Duration::from_secs(60);

#[tokio::test(start_paused = true)]
async fn no_connection_init_in_time_closes_4408() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let closed = client.recv_within(10 * MINUTE).await;
    assert_eq!(
        closed,
        json!({ "close": { "code": 4408, "reason": "Connection initialisation timeout" } })
    );
    // `$disconnect` follows the close and removes the connection from the store.
    let mut gone = false;
    for _ in 0..100 {
        if server
            .store
            .get_connection("conn-1")
            .await
            .unwrap()
            .is_none()
        {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(gone, "the connection is deleted");
}

#[tokio::test(start_paused = true)]
async fn an_initialised_connection_outlives_the_init_timeout() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    client.init().await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    client.send(json!({ "type": "ping" })).await;
    assert_eq!(client.recv().await, json!({ "type": "pong" }));
}

#[tokio::test(start_paused = true)]
async fn ten_silent_minutes_close_1001_and_pings_keep_it_open() {
    let server = TestServer::start().await;
    let mut quiet = server.client().await;
    quiet.init().await;
    let mut chatty = server.client().await;
    chatty.init().await;
    // The chatty client pings every five minutes (graphql-ws `keepAlive`); the quiet one does not.
    for _ in 0..3 {
        tokio::time::sleep(5 * MINUTE).await;
        chatty.send(json!({ "type": "ping" })).await;
        assert_eq!(chatty.recv().await, json!({ "type": "pong" }));
    }
    let closed = quiet.recv_within(MINUTE).await;
    assert_eq!(
        closed,
        json!({ "close": { "code": 1001, "reason": "Going away" } })
    );
}

#[tokio::test(start_paused = true)]
async fn two_hours_close_1001_whatever_the_traffic() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    client.init().await;
    let started = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(5 * MINUTE).await;
        client.send(json!({ "type": "ping" })).await;
        let frame = client.recv_within(MINUTE).await;
        if frame.get("close").is_some() {
            assert_eq!(
                frame,
                json!({ "close": { "code": 1001, "reason": "Going away" } })
            );
            break;
        }
        assert_eq!(frame, json!({ "type": "pong" }));
    }
    let lived = started.elapsed();
    assert!(
        lived >= 115 * MINUTE && lived <= 125 * MINUTE,
        "closed after {lived:?}"
    );
}
