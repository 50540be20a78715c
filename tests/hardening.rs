//! What a client cannot do to the server: freeze it with a small document, send or leave
//! unread more than API Gateway would take, amplify a query into a huge answer, hold every
//! job slot for one tenant, or reach another tenant's idempotent request; and what every
//! standard tool must still be able to do (introspection).

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use streamer::core::{Limits, SystemClock};
use streamer::gateway::JwtAuthenticator;
use streamer::local::SocketLimits;
use support::{Client, On, TestServer, run_node};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

const SECRET: &[u8] = b"a-test-secret";

fn token(tenant: &str, user: &str) -> String {
    support::jwt(SECRET, tenant, user, 600)
}

fn post(query: &str) -> String {
    json!({ "query": query }).to_string()
}

/// A document of forty fragments, each spreading the next twice: 2^40 spreads expanded.
fn fragment_dag(n: usize) -> String {
    let mut query = String::new();
    for i in 0..n {
        query += &format!(
            "fragment F{i} on Query {{ ...F{next} ...F{next} }} ",
            next = i + 1
        );
    }
    query + &format!("fragment F{n} on Query {{ ...Missing }} {{ ...F0 }}")
}

#[tokio::test]
async fn a_fragment_dag_is_answered_at_once_and_the_server_answers_others_meanwhile() {
    let server = TestServer::start().await;
    let started = Instant::now();
    let (body, actions) = (post(&fragment_dag(40)), post("{ actions }"));
    let (dag, other) = tokio::join!(
        server.http("POST", "/graphql", &body),
        server.http("POST", "/graphql", &actions),
    );
    let elapsed = started.elapsed();
    // Refused by validation (async-graphql's recursion limit), at once.
    let dag: Value = serde_json::from_str(&dag.1).unwrap();
    assert_eq!(dag["data"], Value::Null, "{dag}");
    assert!(dag["errors"][0]["message"].is_string(), "{dag}");
    assert_eq!(other.0, 200, "{}", other.1);
    // Exponential work would never return; linear work takes milliseconds.
    assert!(elapsed < Duration::from_secs(1), "{elapsed:?}");
    // Over the socket too.
    let mut client = server.client().await;
    client.init().await;
    client
        .send(json!({ "id": "dag", "type": "subscribe", "payload": { "query": fragment_dag(40) } }))
        .await;
    assert_eq!(client.recv().await["type"], "error");
}

#[tokio::test]
async fn http_authenticates_before_reading_the_document_and_bounds_what_it_reads() {
    let server = TestServer::start_tuned(On::Embedded, |stack| {
        stack
            .with_clock(Arc::new(SystemClock))
            .with_authenticator(Arc::new(JwtAuthenticator::hs256(SECRET)))
    })
    .await;
    // No credentials: refused before the (unparseable, fragment-heavy) document is read.
    let (status, body) = server
        .http("POST", "/graphql", &post(&fragment_dag(40)))
        .await;
    assert_eq!(status, 401, "{body}");
    // A body over the message size: 413, read no further.
    let huge = post(&format!("{{ actions {} }}", " ".repeat(1_800_000)));
    let (status, _) = server.http("POST", "/graphql", &huge).await;
    assert_eq!(status, 413);
    // A document over `documentBytes`, authenticated.
    let bearer = format!("Bearer {}", token("acme", "ann"));
    let headers = [
        ("content-type", "application/json"),
        ("authorization", bearer.as_str()),
    ];
    let long = post(&format!("{{ actions {} }}", "#".repeat(40 * 1024)));
    let (status, body) = server.http_with("POST", "/graphql", &headers, &long).await;
    assert_eq!(status, 400);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["errors"][0]["extensions"]["limit"], "documentBytes");
}

#[tokio::test]
async fn mutations_over_http_need_a_json_content_type() {
    let server = TestServer::start().await;
    let enqueue = post(
        "mutation { generateReport(input: {from: \"2026-01-01\", to: \"2026-01-31\"}) { id } }",
    );
    for content_type in ["text/plain", "application/x-www-form-urlencoded"] {
        let headers = [("content-type", content_type)];
        let (status, _) = server
            .http_with("POST", "/graphql", &headers, &enqueue)
            .await;
        assert_eq!(status, 415, "{content_type}");
    }
    let (status, _) = server.http_with("POST", "/graphql", &[], &enqueue).await;
    assert_eq!(status, 415, "no content type");
    let (_, body) = server
        .http(
            "POST",
            "/graphql",
            &post("{ requests { edges { node { id } } } }"),
        )
        .await;
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        body["data"]["requests"]["edges"],
        json!([]),
        "nothing enqueued"
    );
    let headers = [("content-type", "application/json; charset=utf-8")];
    let (status, body) = server
        .http_with("POST", "/graphql", &headers, &enqueue)
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn lists_count_by_their_size_and_answers_stay_under_the_message_size() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    client.init().await;
    let aliases: String = (0..30).map(|i| format!("r{i}: result ")).collect();
    let amplified = format!("{{ requests(first: 100) {{ edges {{ node {{ {aliases} }} }} }} }}");
    for answer in [
        server.http("POST", "/graphql", &post(&amplified)).await.1,
        {
            client
                .send(json!({ "id": "a", "type": "subscribe", "payload": { "query": amplified } }))
                .await;
            client.recv().await["payload"][0].to_string()
        },
    ] {
        assert!(answer.contains("\"complexity\""), "{answer}");
    }
    // An answer over the limit over HTTP is refused as over the socket.
    let limited = TestServer::start_with(
        On::Embedded,
        Limits {
            max_message_bytes: 200,
            ..Limits::default()
        },
    )
    .await;
    let (status, body) = limited
        .http("POST", "/graphql", &post("{ __schema { types { name } } }"))
        .await;
    assert_eq!(status, 200);
    assert!(body.contains("messageBytes"), "{body}");
    assert!(body.len() < 400, "{body}");
}

/// Results are weighed before they are built: once the results an execution selected are
/// over the message size, the rest are errors, not a large answer built and then refused.
#[tokio::test]
async fn results_stop_being_built_once_over_the_message_size() {
    let server = TestServer::start_with(
        On::Embedded,
        Limits {
            max_message_bytes: 4096,
            ..Limits::default()
        },
    )
    .await;
    let mut client = server.client().await;
    client.init().await;
    // Five reports whose URLs hold a 600-byte date: about 3.2 KB of results together.
    let from = "2026-01-01".repeat(60);
    for n in 0..5 {
        let data = client
            .execute(
                &format!("m{n}"),
                "mutation($from: String!) { generateReport(input: {from: $from, to: \"2026-01-31\", stepDelayMs: 1}) { id } }",
                json!({ "from": from }),
            )
            .await;
        let id = data["generateReport"]["id"].as_str().unwrap().to_owned();
        client.wait_for_status(&id, "COMPLETED").await;
    }
    // Four times each: 12.8 KB selected, three times the 4 KiB limit. Without the budget
    // the answer refused would be at least that; with it, building stops near 4 KiB and what
    // is refused is that and one short error per result left out.
    let query = "{ requests(first: 5) { edges { node { a: result b: result c: result d: output { ... on Report { url } } } } } }";
    let (status, body) = server.http("POST", "/graphql", &post(query)).await;
    assert_eq!(status, 200, "{body}");
    client
        .send(json!({ "id": "q", "type": "subscribe", "payload": { "query": query } }))
        .await;
    let frames: Vec<Value> = client
        .until_done("q")
        .await
        .into_iter()
        .filter(|frame| frame["id"] == "q")
        .collect();
    assert_eq!(frames[0]["type"], "error", "{frames:?}");
    let http: Value = serde_json::from_str(&body).unwrap();
    for error in [&http["errors"][0], &frames[0]["payload"][0]] {
        assert_eq!(error["extensions"]["limit"], "messageBytes", "{error}");
        let built = error["extensions"]["actual"].as_u64().unwrap();
        assert!((4096..9000).contains(&built), "{error}");
    }
}

/// Frames: what API Gateway refuses closes the connection with its code; what the server
/// would echo stays under the message size.
#[tokio::test]
async fn frames_over_api_gateway_s_limits_close_1009_and_bad_utf8_1007() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    client.init().await;
    let big = json!({ "type": "ping", "payload": { "x": "y".repeat(40 * 1024) } });
    client.send(big).await;
    assert_eq!(client.recv().await["close"]["code"], 1009);

    let mut client = server.client().await;
    client.init().await;
    let frame = Frame::message(vec![0xff, 0xfe, 0x7b], OpCode::Data(Data::Text), true);
    client.send_message(Message::Frame(frame)).await;
    assert_eq!(client.recv().await["close"]["code"], 1007);
}

#[tokio::test]
async fn replies_built_from_client_input_stay_under_the_message_size() {
    let server = TestServer::start_with(
        On::Embedded,
        Limits {
            max_message_bytes: 1024,
            ..Limits::default()
        },
    )
    .await;
    let mut client = server.client().await;
    // A ping before connection_init: the pong loses its payload rather than grow past it.
    client
        .send(json!({ "type": "ping", "payload": { "x": "y".repeat(4096) } }))
        .await;
    assert_eq!(client.recv().await, json!({ "type": "pong" }));
    client.init().await;
    // Ten thousand bad directives: one error that says the errors were too large.
    let directives = "@nope ".repeat(2_000);
    client
        .send(json!({ "id": "d", "type": "subscribe", "payload": { "query": format!("{{ actions {directives} }}") } }))
        .await;
    let error = client.recv().await;
    assert_eq!(error["type"], "error");
    assert!(error.to_string().len() <= 1024, "{error}");
    // The connection carries on.
    client.send(json!({ "type": "ping" })).await;
    assert_eq!(client.recv().await, json!({ "type": "pong" }));
}

#[tokio::test]
async fn a_large_init_payload_closes_4400() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    client
        .send(json!({ "type": "connection_init", "payload": { "x": "y".repeat(8 * 1024) } }))
        .await;
    assert_eq!(client.recv().await["close"]["code"], 4400);
}

#[tokio::test]
async fn ids_coerce_from_int_and_no_internal_wording_reaches_clients() {
    let server = TestServer::start().await;
    let (status, body) = server
        .http("POST", "/graphql", &post("{ request(id: 5) { id } }"))
        .await;
    assert_eq!(status, 200);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body, json!({ "data": { "request": null } }));
}

#[tokio::test]
async fn standard_introspection_is_answered_under_the_default_limits() {
    let server = TestServer::start().await;
    let summary = run_node("introspection.mjs", &server, &[]).await;
    let types = summary["types"].as_array().unwrap();
    assert_eq!(types[0], types[1]);
    assert!(types[0].as_u64().unwrap() > 10, "{summary}");
}

/// Two tenants, eight slots: A's hundred long jobs leave B's job starting at once, and
/// cancelling A's running jobs frees their slots within the grace period.
async fn one_tenant_cannot_hold_every_job_slot(on: On) {
    let server = TestServer::start_tuned(on, |stack| {
        stack
            .with_clock(Arc::new(SystemClock))
            .with_authenticator(Arc::new(JwtAuthenticator::hs256(SECRET)))
            .with_job_concurrency(8)
            .with_tenant_job_share(6)
            .with_cancel_grace(Duration::from_millis(500))
    })
    .await;
    let mut a = server.client().await;
    a.init_as(&token("acme", "ann")).await;
    let long =
        "mutation { generateReport(input: {from: \"a\", to: \"b\", stepDelayMs: 60000}) { id } }";
    let mut ids = Vec::new();
    for n in 0..100 {
        let data = a.execute(&format!("m{n}"), long, json!({})).await;
        ids.push(data["generateReport"]["id"].as_str().unwrap().to_owned());
    }
    let running = |server: &TestServer| server.workers.running();
    let deadline = Instant::now() + Duration::from_secs(10);
    while running(&server).len() < 6 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(running(&server).len(), 6, "A holds its share");

    let mut b = server.client().await;
    b.init_as(&token("globex", "bob")).await;
    let started = Instant::now();
    let b_job = b.generate_report("b", 50).await;
    loop {
        let status = server
            .store
            .get_request(&b_job)
            .await
            .unwrap()
            .unwrap()
            .status;
        if status != streamer::core::RequestStatus::Queued {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "B's job started within a second"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    b.wait_for_status(&b_job, "COMPLETED").await;

    // Cancel A's running jobs: each ends CANCELLED within the grace period (the example's
    // handler stops at once), and A's next jobs take the slots.
    let first: Vec<String> = running(&server)
        .into_iter()
        .filter(|id| *id != b_job)
        .collect();
    assert_eq!(first.len(), 6);
    let cancelled_at = Instant::now();
    for (n, id) in first.iter().enumerate() {
        let data = a
            .execute(
                &format!("c{n}"),
                "mutation($id: ID!) { cancelRequest(id: $id) { id } }",
                json!({ "id": id }),
            )
            .await;
        assert_eq!(data["cancelRequest"]["id"], *id);
    }
    for id in &first {
        a.wait_for_status(id, "CANCELLED").await;
    }
    assert!(cancelled_at.elapsed() < Duration::from_secs(3));
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let now = running(&server);
        if now.len() == 6 && now.iter().all(|id| !first.contains(id)) {
            break;
        }
        assert!(Instant::now() < deadline, "slots freed: {now:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

on_both_stores!(one_tenant_cannot_hold_every_job_slot);

#[tokio::test]
async fn idempotency_keys_are_scoped_to_their_tenant_and_keyed_ids_reveal_nothing() {
    let server = TestServer::start_tuned(On::Embedded, |stack| {
        stack
            .with_clock(Arc::new(SystemClock))
            .with_authenticator(Arc::new(JwtAuthenticator::hs256(SECRET)))
    })
    .await;
    let enqueue = "mutation($key: String) { generateReport(input: {from: \"a\", to: \"b\", stepDelayMs: 1}, idempotencyKey: $key) { id } }";
    let mut acme = server.client().await;
    acme.init_as(&token("acme", "ann")).await;
    let first = acme
        .execute("1", enqueue, json!({ "key": "order-43" }))
        .await;
    let id = first["generateReport"]["id"].as_str().unwrap().to_owned();
    assert!(!id.contains("acme") && !id.contains("order"), "{id}");
    let again = acme
        .execute("2", enqueue, json!({ "key": "order-43" }))
        .await;
    assert_eq!(again["generateReport"]["id"], id.as_str());
    // The tenant name that collided with the old encoding gets a request of its own.
    let mut other = server.client().await;
    other
        .init_as(&token("acme\ngenerateReport\norder-43", "eve"))
        .await;
    for key in ["order-43", ""] {
        other
            .send(json!({ "id": key.len().to_string(), "type": "subscribe", "payload": { "query": enqueue, "variables": { "key": key } } }))
            .await;
        let frame = other.recv().await;
        if frame["type"] == "next" {
            assert_ne!(
                frame["payload"]["data"]["generateReport"]["id"],
                id.as_str()
            );
            assert_eq!(other.recv().await["type"], "complete");
        } else {
            assert_eq!(frame["type"], "error", "{frame}");
        }
    }
}

#[tokio::test]
async fn a_client_that_never_reads_is_closed_and_its_queue_dropped() {
    let server = TestServer::start_tuned(On::Embedded, |stack| {
        stack.with_socket_limits(SocketLimits {
            queue_bytes: 256 * 1024,
            queue_grace: Duration::from_millis(200),
            ..SocketLimits::default()
        })
    })
    .await;
    let mut stalled = server.client().await;
    stalled.init().await;
    let frame = json!({ "type": "ping", "payload": { "x": "y".repeat(20 * 1024) } }).to_string();
    // Pings answered with their payload, never read: the queue grows until the socket closes.
    for _ in 0..2_000 {
        stalled
            .send_message(Message::Text(frame.clone().into()))
            .await;
    }
    let rss = rss_bytes();
    assert!(rss < 200 * 1024 * 1024, "RSS {rss}");
    assert!(
        server_forgot(&mut stalled).await,
        "the stalled socket was closed"
    );
}

/// Whether the server closed the socket of `client` (reading what it had sent first).
async fn server_forgot(client: &mut Client) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let frame = client.recv_within(Duration::from_secs(5)).await;
        if frame.get("close").is_some() {
            return true;
        }
    }
    false
}

/// The resident set of this process (the server runs in it), from /proc.
fn rss_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|kb| {
            kb.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<usize>()
                .ok()
        })
        .map_or(0, |kb| kb * 1024)
}

#[tokio::test]
async fn slow_handshakes_time_out_and_are_bounded() {
    let server = TestServer::start_tuned(On::Embedded, |stack| {
        stack.with_socket_limits(SocketLimits {
            handshake_timeout: Duration::from_millis(300),
            pending_handshakes: 4,
            ..SocketLimits::default()
        })
    })
    .await;
    // Four trickling clients fill the handshake slots; a fifth is dropped at once.
    let mut trickling = Vec::new();
    for _ in 0..4 {
        let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        stream
            .write_all(b"GET /graphql HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        trickling.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut fifth = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let _ = fifth.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_millis(200), fifth.read_to_end(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "dropped: {read:?} {buf:?}"
    );
    // Each trickling client is closed at its timeout, and the server lets clients in again.
    for stream in &mut trickling {
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await;
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "closed: {read:?}");
    }
    let mut client = server.client().await;
    client.init().await;
}

#[tokio::test]
async fn ended_requests_expire_from_the_embedded_store() {
    let server = TestServer::start_tuned(On::Embedded, |stack| {
        stack
            .with_clock(Arc::new(SystemClock))
            .with_retention(Duration::from_millis(100))
            .with_sweep_every(Duration::from_millis(50))
    })
    .await;
    let mut client = server.client().await;
    client.init().await;
    let id = client.generate_report("m", 1).await;
    client.wait_for_status(&id, "COMPLETED").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.store.get_request(&id).await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        server
            .store
            .request_history(&id, 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn the_management_api_refuses_unsigned_and_foreign_calls() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    client.init().await;
    // Unsigned, as from a browser or curl.
    for method in ["GET", "POST", "DELETE"] {
        let (status, body) = server
            .http_with(method, "/@connections/conn-1", &[], "{\"type\":\"next\"}")
            .await;
        assert_eq!(status, 403, "{method}: {body}");
        assert!(!body.contains("conn-1"), "{body}");
    }
    // Signed with another key id, or with the stack's key id and another secret.
    use streamer::core::Sender;
    for (key, secret) in [
        ("SOMEONEELSE", support::MANAGEMENT_SECRET),
        (support::MANAGEMENT_KEY, "a-guessed-secret"),
    ] {
        let foreign = streamer::aws::ApiGatewaySender::local(
            &format!("http://{}", server.addr),
            key,
            secret,
            streamer::aws::SenderOptions::default(),
        );
        assert!(foreign.post("conn-1", r#"{"type":"ping"}"#).await.is_err());
        assert!(
            foreign
                .close("conn-1", &streamer::core::protocol::Close::internal())
                .await
                .is_err()
        );
    }
    // The stack's key id with a made-up signature.
    let (status, body) = server
        .http_with(
            "POST",
            "/@connections/conn-1",
            &[
                ("authorization", "AWS4-HMAC-SHA256 Credential=STREAMERTESTKEY/20260101/us-east-1/execute-api/aws4_request, SignedHeaders=host;x-amz-date, Signature=00"),
                ("x-amz-date", "20260101T000000Z"),
            ],
            "{\"type\":\"next\"}",
        )
        .await;
    assert_eq!(status, 403, "{body}");
    // The stack's own key still works, and the client got nothing forged.
    let own = streamer::aws::ApiGatewaySender::local(
        &format!("http://{}", server.addr),
        support::MANAGEMENT_KEY,
        support::MANAGEMENT_SECRET,
        streamer::aws::SenderOptions::default(),
    );
    own.post("conn-1", r#"{"type":"ping","payload":{"n":1}}"#)
        .await
        .unwrap();
    assert_eq!(client.recv().await["payload"]["n"], 1);
}

/// Everything written to the log, as the local stack's formatter writes it.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn client_strings_are_logged_escaped() {
    let captured = Captured::default();
    let writer = captured.clone();
    // This thread's subscriber: the test's runtime, and so the gateway, runs on it.
    let _logging = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .with_max_level(tracing::Level::INFO)
            .finish(),
    );
    let server = TestServer::start_tuned(On::Embedded, |stack| {
        stack
            .with_clock(Arc::new(SystemClock))
            .with_authenticator(Arc::new(JwtAuthenticator::hs256(SECRET)))
    })
    .await;
    let forged = "\n2026-12-01T00:00:00.000000Z ERROR forged: line";
    let mut client = server.client().await;
    client
        .init_as(&token(&format!("acme{forged}"), &format!("ann{forged}")))
        .await;
    let id = client.generate_report("m", 10).await;
    let query = "subscription($id: ID!) { requestProgress(id: $id) { status } }";
    client
        .send(json!({ "id": format!("s{forged}"), "type": "subscribe", "payload": { "query": query, "variables": { "id": id } } }))
        .await;
    let first = client.recv().await;
    assert_eq!(first["type"], "next", "{first}");
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    // The client's strings were logged (tenant, user, operation id), escaped on one line.
    assert!(log.contains(r#"tenant="acme\n2026"#), "{log}");
    assert!(log.contains(r#"operation_id="s\n2026"#), "{log}");
    assert!(
        !log.lines()
            .any(|line| line.starts_with("2026-12-01T00:00:00.000000Z ERROR")),
        "a forged line: {log}"
    );
}
