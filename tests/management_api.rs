//! `ApiGatewaySender`, the Management API client, against the local server's Management API
//! over HTTP; and its throttling behaviour against a server that answers 429.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::json;
use streamer::aws::{ApiGatewaySender, SenderOptions};
use streamer::core::protocol::Close;
use streamer::core::{Backoff, Error, Sender};
use support::TestServer;

fn sender(endpoint: &str, options: SenderOptions) -> ApiGatewaySender {
    ApiGatewaySender::local(
        endpoint,
        support::MANAGEMENT_KEY,
        support::MANAGEMENT_SECRET,
        options,
    )
}

#[tokio::test]
async fn posts_reach_the_socket_oversized_ones_are_refused_deletes_close_1000_then_gone() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    client.init().await;
    let sender = sender(&format!("http://{}", server.addr), SenderOptions::default());

    sender
        .post("conn-1", r#"{"type":"ping","payload":{"via":"sdk"}}"#)
        .await
        .expect("posted");
    assert_eq!(
        client.recv().await,
        json!({ "type": "ping", "payload": { "via": "sdk" } })
    );

    // Over API Gateway's 128 KB: refused, typed, and the connection is still there.
    let oversized = format!(
        r#"{{"type":"ping","payload":{{"x":"{}"}}}}"#,
        "x".repeat(128 * 1024)
    );
    match sender.post("conn-1", &oversized).await {
        Err(Error::TooLarge(id)) => assert_eq!(id, "conn-1"),
        other => panic!("expected a too-large failure, got {other:?}"),
    }
    sender
        .post("conn-1", r#"{"type":"pong"}"#)
        .await
        .expect("still open");
    assert_eq!(client.recv().await, json!({ "type": "pong" }));

    // API Gateway cannot send 4409: the connection is deleted and closes normally.
    let close = Close {
        code: 4409,
        reason: "Subscriber for 1 already exists".into(),
    };
    sender.close("conn-1", &close).await.expect("deleted");
    assert_eq!(client.recv().await["close"]["code"], 1000);

    assert!(matches!(
        sender.post("conn-1", "{}").await,
        Err(Error::Gone(id)) if id == "conn-1"
    ));
    assert!(matches!(
        sender.close("conn-1", &close).await,
        Err(Error::Gone(_))
    ));
}

/// Posts never wait for the client: to a client that reads nothing, they are taken until
/// its socket is full and queued after that; other clients get theirs meanwhile; once the
/// client reads, every frame arrives, in order.
#[tokio::test]
async fn posts_to_a_client_that_does_not_read_queue_in_order_without_holding_up_others() {
    const FRAMES: usize = 200;
    let server = TestServer::start().await;
    let mut stalled = server.client().await;
    stalled.init().await;
    let mut other = server.client().await;
    other.init().await;
    let sender = sender(&format!("http://{}", server.addr), SenderOptions::default());

    // 20 MB: more than the loopback socket buffers hold.
    let filler = "x".repeat(100 * 1024);
    let posting = async {
        for n in 0..FRAMES {
            let frame = json!({ "type": "ping", "payload": { "n": n, "filler": filler } });
            sender
                .post("conn-1", &frame.to_string())
                .await
                .expect("posted");
        }
    };
    tokio::time::timeout(Duration::from_secs(20), posting)
        .await
        .expect("posts to a client that does not read still return");

    sender
        .post("conn-2", r#"{"type":"ping","payload":{"n":"other"}}"#)
        .await
        .expect("posted");
    assert_eq!(other.recv().await["payload"]["n"], "other");

    for n in 0..FRAMES {
        let frame = stalled.recv().await;
        assert_eq!(frame["payload"]["n"], n, "frame {n} in order");
    }
    stalled.send(json!({ "type": "ping" })).await;
    assert_eq!(stalled.recv().await, json!({ "type": "pong" }));
}

/// A Management API that throttles: the first `throttled` posts get 429
/// `LimitExceededException`, each post takes `latency`; counts posts and the most in flight.
#[derive(Clone, Default)]
struct Throttling {
    throttled: usize,
    latency: Duration,
    posts: Arc<AtomicUsize>,
    in_flight: Arc<AtomicUsize>,
    most_in_flight: Arc<AtomicUsize>,
}

impl Throttling {
    async fn serve(self) -> String {
        let state = self.clone();
        let app = axum::Router::new().fallback(move || {
            let state = state.clone();
            async move {
                let n = state.posts.fetch_add(1, Ordering::SeqCst);
                let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                state.most_in_flight.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(state.latency).await;
                state.in_flight.fetch_sub(1, Ordering::SeqCst);
                if n < state.throttled {
                    (
                        StatusCode::TOO_MANY_REQUESTS,
                        [("x-amzn-errortype", "LimitExceededException")],
                        r#"{"message":"Rate exceeded"}"#,
                    )
                        .into_response()
                } else {
                    StatusCode::OK.into_response()
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }
}

fn quick(max_attempts: u32, max_in_flight: usize) -> SenderOptions {
    SenderOptions {
        max_in_flight,
        max_attempts,
        backoff: Backoff::new(Duration::from_millis(5), Duration::from_millis(20)),
        attempt_timeout: Duration::from_millis(100),
    }
}

#[tokio::test]
async fn throttled_posts_are_retried_until_they_pass() {
    let server = Throttling {
        throttled: 2,
        ..Throttling::default()
    };
    let posts = server.posts.clone();
    let sender = sender(&server.serve().await, quick(5, 8));
    sender
        .post("c", "{}")
        .await
        .expect("passes on the third try");
    assert_eq!(posts.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn throttling_that_does_not_end_is_an_error_after_the_last_attempt() {
    let server = Throttling {
        throttled: usize::MAX,
        ..Throttling::default()
    };
    let posts = server.posts.clone();
    let sender = sender(&server.serve().await, quick(4, 8));
    match sender.post("c", "{}").await {
        Err(Error::Backend { context, source }) => {
            assert!(context.contains("throttled"), "{context}");
            assert!(
                format!("{source:?}").contains("LimitExceededException"),
                "the SDK error is kept: {source:?}"
            );
        }
        other => panic!("expected a throttling failure, got {other:?}"),
    }
    assert_eq!(posts.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn posts_in_flight_are_bounded() {
    let server = Throttling {
        latency: Duration::from_millis(50),
        ..Throttling::default()
    };
    let most = server.most_in_flight.clone();
    let posts = server.posts.clone();
    let sender = Arc::new(sender(&server.serve().await, quick(1, 4)));
    let all = (0..20).map(|i| {
        let sender = sender.clone();
        async move { sender.post(&format!("c{i}"), "{}").await }
    });
    for result in futures::future::join_all(all).await {
        result.expect("posted");
    }
    assert_eq!(posts.load(Ordering::SeqCst), 20);
    assert_eq!(
        most.load(Ordering::SeqCst),
        4,
        "at most four at once, and four used"
    );
}

/// With a fifth of the Management API's calls failing with a 500, the processor's pushes
/// (through `ApiGatewaySender`, on DynamoDB Local) are retried: each subscriber gets every
/// state in order, the terminal one once and last, and its `complete`; no connection closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_management_api_failures_are_retried_and_lose_nothing() {
    let server = TestServer::start_tuned(support::On::DynamoDb, |stack| {
        stack.with_management_faults(0.2)
    })
    .await;
    let mut client = server.client().await;
    client.init().await;
    for n in 0..3 {
        let id = client.generate_report(&format!("m{n}"), 20).await;
        let subscription = format!("s{n}");
        client.send(json!({ "id": subscription, "type": "subscribe", "payload": { "query": support::PROGRESS, "variables": { "id": id } } })).await;
        let frames = client.until_done(&subscription).await;
        assert!(
            frames.iter().all(|f| f.get("close").is_none()),
            "{frames:?}"
        );
        assert_eq!(frames.last().unwrap()["type"], "complete");
        let states = support::states(&frames);
        let versions: Vec<u64> = states
            .iter()
            .map(|s| s["version"].as_u64().unwrap())
            .collect();
        assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
        let terminal = states.iter().filter(|s| s["status"] == "COMPLETED").count();
        assert_eq!(terminal, 1, "{states:?}");
        assert_eq!(states.last().unwrap()["status"], "COMPLETED");
    }
}

/// A 500 from the Management API is tried again; one that does not end is an error after
/// the last attempt, and the connection is not closed by it.
#[tokio::test]
async fn server_errors_are_retried_then_reported() {
    let flaky = TestServer::start_tuned(support::On::Embedded, |stack| {
        stack.with_management_faults(0.5)
    })
    .await;
    let mut client = flaky.client().await;
    client.init().await;
    let retrying = sender(&format!("http://{}", flaky.addr), quick(12, 8));
    // Twenty posts at a 50 % failure rate: each passes within its twelve tries.
    for n in 0..20 {
        let frame = json!({ "type": "ping", "payload": { "n": n } }).to_string();
        retrying
            .post("conn-1", &frame)
            .await
            .expect("retried until it passed");
        assert_eq!(client.recv().await["payload"]["n"], n);
    }
    let broken = TestServer::start_tuned(support::On::Embedded, |stack| {
        stack.with_management_faults(1.0)
    })
    .await;
    let mut client = broken.client().await;
    client.init().await;
    let giving_up = sender(&format!("http://{}", broken.addr), quick(3, 8));
    match giving_up.post("conn-1", "{}").await {
        Err(Error::Backend { context, .. }) => assert!(context.contains("other"), "{context}"),
        other => panic!("expected a failure, got {other:?}"),
    }
    client.send(json!({ "type": "ping" })).await;
    assert_eq!(client.recv().await["type"], "pong", "still open");
}
