//! Shared test support: the example app on the local stack on port 0 with deterministic ids
//! and clock, on the embedded store or on DynamoDB Local, and a raw graphql-transport-ws
//! client that keeps a transcript.

#![allow(dead_code, unreachable_pub)]

pub use report_handlers as handlers;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use streamer::core::{SequentialIds, Store};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for one frame before it fails.
const FRAME_TIMEOUT: Duration = Duration::from_secs(15);

/// Which store a test's stack runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum On {
    /// The embedded store and its in-process feed.
    Embedded,
    /// DynamoDB Local (`STREAMER_DYNAMODB_ENDPOINT`, started by the test command): its stream
    /// polled, every post through the Management API over HTTP.
    DynamoDb,
    /// The embedded store, with every post (the gateway's replies, the processor's pushes,
    /// the sweeper's closes) through the local Management API over HTTP, as on AWS, by the
    /// SDK client, which gives up on a call after [`ATTEMPT_TIMEOUT`]: what the Management
    /// API's faults need to reach.
    ManagementApi,
}

/// How long the test stacks' Management API clients wait for a call: longer than a call to
/// the local server takes on a loaded machine, shorter than a faulty call hangs.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);

/// An HS256 JWT signed with `secret` for `user` of `tenant`, expiring `expires_in` seconds
/// from now (in the past when negative).
pub fn jwt(secret: &[u8], tenant: &str, user: &str, expires_in: i64) -> String {
    let claims = json!({ "sub": user, "tenant": tenant, "exp": chrono::Utc::now().timestamp() + expires_in });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .expect("a signed token")
}

/// The DynamoDB Local endpoint the test command started.
pub fn dynamodb_endpoint() -> String {
    std::env::var("STREAMER_DYNAMODB_ENDPOINT").expect(
        "STREAMER_DYNAMODB_ENDPOINT is not set: run scripts/test, which starts DynamoDB Local",
    )
}

/// Table names no other test uses, in this process or another.
pub fn unique_tables() -> streamer::aws::Tables {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    streamer::aws::Tables::with_prefix(&format!("t{}-{n}", std::process::id()))
}

/// Runs each named scenario `async fn name(on: On)` as two tests, `name::embedded` and
/// `name::dynamodb`, against the same snapshots.
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn embedded() {
                super::$name($crate::support::On::Embedded).await
            }
            #[tokio::test]
            async fn dynamodb() {
                super::$name($crate::support::On::DynamoDb).await
            }
        }
    )*};
}

/// The access key id the test stacks' Management API takes.
pub const MANAGEMENT_KEY: &str = "STREAMERTESTKEY";
/// The secret key its calls are signed with.
pub const MANAGEMENT_SECRET: &str = "streamer-test-secret";

/// The credentials of the test stacks' Management API.
pub fn management_credentials() -> streamer::local::ManagementCredentials {
    streamer::local::ManagementCredentials {
        access_key_id: MANAGEMENT_KEY.to_owned(),
        secret_access_key: MANAGEMENT_SECRET.to_owned(),
    }
}

/// The example app on the local stack, on a free port.
pub struct TestServer {
    pub addr: std::net::SocketAddr,
    pub store: Arc<dyn Store>,
    pub workers: streamer::processor::TaskDispatcher,
    shutdown: Option<oneshot::Sender<()>>,
}

impl TestServer {
    /// On the embedded store.
    pub async fn start() -> Self {
        Self::start_on(On::Embedded).await
    }

    pub async fn start_on(on: On) -> Self {
        Self::start_with(on, streamer::core::Limits::default()).await
    }

    /// On `on`, with these limits.
    pub async fn start_with(on: On, limits: streamer::core::Limits) -> Self {
        Self::start_tuned(on, move |stack| stack.with_limits(limits)).await
    }

    /// On `on`, the stack tuned by `tune` after the test defaults.
    pub async fn start_tuned(
        on: On,
        tune: impl FnOnce(streamer::local::StackBuilder) -> streamer::local::StackBuilder,
    ) -> Self {
        Self::start_app(handlers::app(), on, tune).await
    }

    /// `app` instead of the example app, on `on`, tuned by `tune`.
    pub async fn start_app(
        app: streamer::App,
        on: On,
        tune: impl FnOnce(streamer::local::StackBuilder) -> streamer::local::StackBuilder,
    ) -> Self {
        // Logs with RUST_LOG=..., shown for failing tests.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let builder = app
            .local()
            // Real time: backoffs and leases are waited for in it, and DynamoDB Local
            // deletes items whose TTL has passed.
            .with_clock(Arc::new(streamer::core::SystemClock))
            .with_ids(Arc::new(SequentialIds::new("req")))
            .with_connection_ids(Arc::new(SequentialIds::new("conn")))
            .with_management_credentials(management_credentials());
        let builder = tune(builder);
        let stack = match on {
            On::Embedded => builder.build(),
            On::ManagementApi => builder.build_on(streamer::ThroughManagementApi::new(
                streamer::SenderOptions {
                    attempt_timeout: ATTEMPT_TIMEOUT,
                    ..streamer::SenderOptions::default()
                },
            )),
            On::DynamoDb => {
                let backend =
                    streamer::DynamoDbBackend::connect(&dynamodb_endpoint(), unique_tables())
                        .await
                        .expect("tables on DynamoDB Local")
                        .with_sender_options(streamer::aws::SenderOptions {
                            attempt_timeout: ATTEMPT_TIMEOUT,
                            ..streamer::aws::SenderOptions::default()
                        });
                builder.build_on(backend)
            }
        }
        .expect("schema builds");
        let store = stack.store();
        let workers = stack.workers();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(stack.run(listener, async {
            let _ = rx.await;
        }));
        Self {
            addr,
            store,
            workers,
            shutdown: Some(tx),
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/graphql", self.addr)
    }

    /// The AWS SDK's own Management API client for this stack, signing (SigV4) with the
    /// test stacks' credentials, as a function's role would.
    pub fn management_client(&self) -> aws_sdk_apigatewaymanagement::Client {
        use aws_sdk_apigatewaymanagement::{Client, config};
        Client::from_conf(
            config::Config::builder()
                .behavior_version(config::BehaviorVersion::latest())
                .region(config::Region::new("us-east-1"))
                .endpoint_url(format!("http://{}", self.addr))
                .credentials_provider(config::Credentials::new(
                    MANAGEMENT_KEY,
                    MANAGEMENT_SECRET,
                    None,
                    None,
                    "test",
                ))
                .build(),
        )
    }

    pub async fn client(&self) -> Client {
        Client::connect(&self.ws_url(), Some("graphql-transport-ws"))
            .await
            .expect("handshake")
    }

    /// A plain HTTP/1.1 request; returns the status and the body.
    pub async fn http(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        let headers = [("content-type", "application/json")];
        self.http_with(method, path, &headers, body).await
    }

    /// [`TestServer::http`] with these headers.
    pub async fn http_with(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = TcpStream::connect(self.addr).await.expect("connect");
        let headers: String = headers
            .iter()
            .map(|(name, value)| format!("{name}: {value}\r\n"))
            .collect();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nhost: {}\r\n{headers}content-length: {}\r\nconnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        // A server may answer and close before it has read a body it refuses.
        let _ = stream.write_all(request.as_bytes()).await;
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response).await;
        let status = response[9..12].parse().expect("status");
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A graphql-transport-ws client speaking raw frames and recording both directions.
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub transcript: Vec<Value>,
}

impl Client {
    pub async fn connect(
        url: &str,
        protocol: Option<&str>,
    ) -> Result<Self, tokio_tungstenite::tungstenite::Error> {
        let mut request = url.into_client_request()?;
        if let Some(protocol) = protocol {
            request.headers_mut().insert(
                "sec-websocket-protocol",
                HeaderValue::from_str(protocol).unwrap(),
            );
        }
        let (ws, response) = tokio_tungstenite::connect_async(request).await?;
        assert_eq!(
            response
                .headers()
                .get("sec-websocket-protocol")
                .and_then(|v| v.to_str().ok()),
            Some("graphql-transport-ws"),
            "the handshake answers with graphql-transport-ws"
        );
        Ok(Self {
            ws,
            transcript: Vec::new(),
        })
    }

    pub async fn send(&mut self, frame: Value) {
        self.transcript.push(json!({ "client": frame }));
        self.ws
            .send(Message::Text(frame.to_string().into()))
            .await
            .expect("send");
    }

    /// Sends one WebSocket message as it is.
    pub async fn send_message(&mut self, message: Message) {
        let _ = self.ws.send(message).await;
    }

    pub async fn send_raw(&mut self, text: &str) {
        self.transcript.push(json!({ "client": text }));
        self.ws
            .send(Message::Text(text.to_owned().into()))
            .await
            .expect("send");
    }

    /// The next frame from the server: a JSON message, or `{"close": {code, reason}}`.
    pub async fn recv(&mut self) -> Value {
        self.recv_within(FRAME_TIMEOUT).await
    }

    /// [`Client::recv`], waiting at most `patience`.
    pub async fn recv_within(&mut self, patience: Duration) -> Value {
        loop {
            let frame = tokio::time::timeout(patience, self.ws.next())
                .await
                .expect("a frame in time");
            let value = match frame {
                Some(Ok(Message::Text(text))) => {
                    serde_json::from_str(&text).expect("server frames are JSON")
                }
                Some(Ok(Message::Close(frame))) => {
                    json!({ "close": { "code": frame.as_ref().map(|f| u16::from(f.code)), "reason": frame.as_ref().map(|f| f.reason.to_string()) } })
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(other)) => panic!("unexpected frame {other:?}"),
                Some(Err(error)) => json!({ "close": { "error": error.to_string() } }),
                None => json!({ "close": null }),
            };
            self.transcript.push(json!({ "server": value }));
            return value;
        }
    }

    /// Sends `connection_init` and expects `connection_ack`.
    pub async fn init(&mut self) {
        self.send(json!({ "type": "connection_init" })).await;
        assert_eq!(self.recv().await, json!({ "type": "connection_ack" }));
    }

    /// Sends `connection_init` with `authorization: "Bearer <token>"` and expects
    /// `connection_ack`.
    pub async fn init_as(&mut self, token: &str) {
        self.send(json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {token}") } }))
            .await;
        assert_eq!(self.recv().await, json!({ "type": "connection_ack" }));
    }

    /// Receives frames until the operation `id` completes or errors; returns them.
    pub async fn until_done(&mut self, id: &str) -> Vec<Value> {
        let mut frames = Vec::new();
        loop {
            let frame = self.recv().await;
            let done =
                frame["id"] == id && (frame["type"] == "complete" || frame["type"] == "error");
            assert!(
                frame.get("close").is_none(),
                "closed while waiting for {id}: {frame}"
            );
            frames.push(frame);
            if done {
                return frames;
            }
        }
    }

    /// Runs operation `id`; returns its first payload: its data, or its errors (the payload
    /// of an `error` frame).
    pub async fn first_payload(&mut self, id: &str, query: &str, variables: Value) -> Value {
        self.send(json!({ "id": id, "type": "subscribe", "payload": { "query": query, "variables": variables } }))
            .await;
        self.until_done(id)
            .await
            .into_iter()
            .find(|frame| frame["id"] == id)
            .map(|frame| frame["payload"].clone())
            .unwrap_or_default()
    }

    /// Runs a query or mutation as operation `id`; returns its `next` payload's `data`.
    pub async fn execute(&mut self, id: &str, query: &str, variables: Value) -> Value {
        self.send(json!({ "type": "subscribe", "id": id, "payload": { "query": query, "variables": variables } })).await;
        // Pushes to other operations of this connection may arrive meanwhile.
        let frames: Vec<Value> = self
            .until_done(id)
            .await
            .into_iter()
            .filter(|frame| frame["id"] == id)
            .collect();
        assert_eq!(frames.len(), 2, "next then complete: {frames:?}");
        assert_eq!(frames[0]["type"], "next");
        assert!(
            frames[0]["payload"].get("errors").is_none(),
            "no errors: {frames:?}"
        );
        frames[0]["payload"]["data"].clone()
    }

    /// Enqueues `generateReport` and returns the request id.
    pub async fn generate_report(&mut self, id: &str, step_delay_ms: u64) -> String {
        let data = self
            .execute(
                id,
                "mutation($input: GenerateReportInput!) { generateReport(input: $input) { id status version } }",
                json!({ "input": { "from": "2026-01-01", "to": "2026-01-31", "rows": 10, "stepDelayMs": step_delay_ms } }),
            )
            .await;
        data["generateReport"]["id"]
            .as_str()
            .expect("an id")
            .to_owned()
    }

    /// Enqueues `flakyImport` failing `fail_times` times and returns the request id.
    pub async fn flaky_import(&mut self, id: &str, fail_times: u32) -> String {
        let data = self
            .execute(
                id,
                "mutation($failTimes: Int!) { flakyImport(input: {failTimes: $failTimes}) { id } }",
                json!({ "failTimes": fail_times }),
            )
            .await;
        data["flakyImport"]["id"]
            .as_str()
            .expect("an id")
            .to_owned()
    }

    /// Polls `request(id)` until its status is `status`.
    pub async fn wait_for_status(&mut self, request_id: &str, status: &str) {
        for attempt in 0..300 {
            let data = self
                .execute(
                    &format!("poll-{attempt}"),
                    "query($id: ID!) { request(id: $id) { status } }",
                    json!({ "id": request_id }),
                )
                .await;
            if data["request"]["status"] == status {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("request {request_id} never reached {status}");
    }

    /// Forgets the transcript so far.
    pub fn clear(&mut self) {
        self.transcript.clear();
    }
}

/// The `requestProgress` states in a run of frames (the payloads of its `next` frames).
pub fn states(frames: &[Value]) -> Vec<&Value> {
    frames
        .iter()
        .filter(|f| f["type"] == "next")
        .map(|f| &f["payload"]["data"]["requestProgress"])
        .collect()
}

/// The `requestProgress` document the transcripts use.
pub const PROGRESS: &str = "subscription($id: ID!, $after: Int) { requestProgress(id: $id, afterVersion: $after) { id status progress message version attempts output { __typename ... on Report { url rows sizeBytes } ... on ImportSummary { imported } } error { code message retryable } } }";

/// Runs `tests/js/{script}` under Node against `server` (its WebSocket URL, then `args`);
/// returns the JSON summary its last line prints. The test command installs the npm
/// packages (`scripts/setup`); without them this fails saying so.
pub async fn run_node(script: &str, server: &TestServer, args: &[String]) -> Value {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    assert!(
        dir.join("node_modules/graphql-ws").is_dir(),
        "npm packages missing in tests/js: run scripts/setup (the test command does)"
    );
    let output = tokio::process::Command::new("node")
        .arg(script)
        .arg(server.ws_url())
        .args(args)
        .current_dir(&dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
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
