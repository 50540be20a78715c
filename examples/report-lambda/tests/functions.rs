//! The four Lambda binaries, each run as a process against a small Lambda Runtime API
//! emulator (the worker's also serves the Invoke API the processor calls), with recorded
//! events, on DynamoDB Local (`STREAMER_DYNAMODB_ENDPOINT`, started by the test command) and
//! a recording Management API. One request goes the whole way: `$connect`, `connection_init`,
//! the mutation, the subscription, stream batches to the processor, the job in the worker,
//! the pushes; then a malformed batch, a sweep, GraphQL over HTTP and `$disconnect`. A
//! workflow suspends in one worker invocation and is finished by a later one.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use streamer::core::Store;
use streamer_aws::tables::REQUESTS;
use streamer_aws::{DynamoDbStore, PollerOptions, StreamPoller, Tables};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{Notify, mpsc, oneshot};

/// How long a test waits for any one answer.
const PATIENCE: Duration = Duration::from_secs(30);

fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// One invocation's answer: `Ok` from `/response`, `Err` from `/error`.
type Reply = Result<Value, Value>;

/// An invocation waiting for the function: its id, its event, where its reply goes.
type Pending = (String, Value, oneshot::Sender<Reply>);

/// The Runtime API of one function, and the Invoke API.
#[derive(Clone, Default)]
struct Emulator {
    queue: Arc<Mutex<VecDeque<Pending>>>,
    ready: Arc<Notify>,
    waiting: Arc<Mutex<HashMap<String, oneshot::Sender<Reply>>>>,
    async_replies: Arc<Mutex<Option<mpsc::UnboundedSender<Reply>>>>,
    next_id: Arc<AtomicU64>,
}

impl Emulator {
    /// Serves on a free port; returns `host:port`.
    async fn serve(&self) -> String {
        let app = axum::Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .route("/2015-03-31/functions/{name}/invocations", post(invoke))
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr.to_string()
    }

    fn enqueue(&self, event: Value) -> oneshot::Receiver<Reply> {
        let id = format!("inv-{}", self.next_id.fetch_add(1, Ordering::SeqCst));
        let (tx, rx) = oneshot::channel();
        self.queue.lock().unwrap().push_back((id, event, tx));
        self.ready.notify_one();
        rx
    }

    /// Invokes synchronously, as API Gateway or an event source mapping does.
    async fn invoke(&self, event: Value) -> Reply {
        tokio::time::timeout(PATIENCE, self.enqueue(event))
            .await
            .expect("the function answers in time")
            .expect("the emulator keeps the invocation")
    }

    /// Replies of asynchronous invocations (`InvocationType: Event`), as they finish.
    fn async_replies(&self) -> mpsc::UnboundedReceiver<Reply> {
        let (tx, rx) = mpsc::unbounded_channel();
        *self.async_replies.lock().unwrap() = Some(tx);
        rx
    }
}

async fn next(State(emulator): State<Emulator>) -> Response {
    let (id, event, reply) = loop {
        let notified = emulator.ready.notified();
        if let Some(item) = emulator.queue.lock().unwrap().pop_front() {
            break item;
        }
        notified.await;
    };
    emulator.waiting.lock().unwrap().insert(id.clone(), reply);
    let deadline = SystemTime::now().duration_since(UNIX_EPOCH).unwrap() + Duration::from_secs(60);
    (
        [
            ("lambda-runtime-aws-request-id", id),
            (
                "lambda-runtime-deadline-ms",
                deadline.as_millis().to_string(),
            ),
            (
                "lambda-runtime-invoked-function-arn",
                "arn:aws:lambda:us-east-1:123456789012:function:test".to_owned(),
            ),
            (
                "lambda-runtime-trace-id",
                "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
                    .to_owned(),
            ),
            ("content-type", "application/json".to_owned()),
        ],
        event.to_string(),
    )
        .into_response()
}

fn finish(emulator: &Emulator, id: &str, reply: Reply) -> StatusCode {
    if let Some(waiting) = emulator.waiting.lock().unwrap().remove(id) {
        let _ = waiting.send(reply);
    }
    StatusCode::ACCEPTED
}

async fn response(
    State(emulator): State<Emulator>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> StatusCode {
    let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    finish(&emulator, &id, Ok(value))
}

async fn error(
    State(emulator): State<Emulator>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> StatusCode {
    let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    finish(&emulator, &id, Err(value))
}

async fn init_error(body: Bytes) -> StatusCode {
    panic!(
        "the function failed to start: {}",
        String::from_utf8_lossy(&body)
    );
}

async fn invoke(State(emulator): State<Emulator>, headers: HeaderMap, body: Bytes) -> StatusCode {
    assert_eq!(
        headers
            .get("x-amz-invocation-type")
            .and_then(|v| v.to_str().ok()),
        Some("Event"),
        "jobs are started asynchronously"
    );
    let reply = emulator.enqueue(serde_json::from_slice(&body).unwrap());
    let forward = emulator.async_replies.lock().unwrap().clone();
    tokio::spawn(async move {
        if let (Ok(reply), Some(forward)) = (reply.await, forward) {
            let _ = forward.send(reply);
        }
    });
    StatusCode::ACCEPTED
}

/// A Management API that records what it is asked to do; connections it was told are gone
/// answer 410.
#[derive(Clone, Default)]
struct Management {
    calls: Arc<Mutex<Vec<(Method, String, String)>>>,
}

impl Management {
    async fn serve(&self) -> String {
        let this = self.clone();
        let app = axum::Router::new().fallback(move |method: Method, uri: Uri, body: Bytes| {
            let this = this.clone();
            async move {
                let path = uri.path().replace("%40", "@").replace("%3D", "=");
                let id = path.trim_start_matches("/@connections/").to_owned();
                let body = String::from_utf8_lossy(&body).into_owned();
                this.calls.lock().unwrap().push((method, id, body));
                StatusCode::OK
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    /// The frames posted to `connection` so far.
    fn frames(&self, connection: &str) -> Vec<Value> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(method, id, _)| method == Method::POST && id == connection)
            .map(|(_, _, body)| serde_json::from_str(body).unwrap())
            .collect()
    }

    fn deleted(&self) -> Vec<String> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(method, _, _)| method == Method::DELETE)
            .map(|(_, id, _)| id.clone())
            .collect()
    }
}

/// A function's process, with what it printed.
struct Process {
    _child: tokio::process::Child,
    stdout: Arc<Mutex<Vec<String>>>,
}

fn binary(name: &str) -> PathBuf {
    match name {
        "gateway" => env!("CARGO_BIN_EXE_gateway").into(),
        "processor" => env!("CARGO_BIN_EXE_processor").into(),
        "worker" => env!("CARGO_BIN_EXE_worker").into(),
        "sweeper" => env!("CARGO_BIN_EXE_sweeper").into(),
        other => panic!("no function {other}"),
    }
}

fn spawn(name: &str, runtime_api: &str, env: &[(&str, String)]) -> Process {
    let mut command = tokio::process::Command::new(binary(name));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_LAMBDA_RUNTIME_API", runtime_api)
        .env("AWS_LAMBDA_FUNCTION_NAME", name)
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "local")
        .env("AWS_SECRET_ACCESS_KEY", "local")
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("the function starts");
    let stdout = Arc::new(Mutex::new(Vec::new()));
    let lines = stdout.clone();
    let mut reader = BufReader::new(child.stdout.take().unwrap()).lines();
    tokio::spawn(async move {
        while let Ok(Some(line)) = reader.next_line().await {
            lines.lock().unwrap().push(line);
        }
    });
    Process {
        _child: child,
        stdout,
    }
}

/// A WebSocket event from a recorded one, for `connection` with `body`, happening now (items
/// expire from the connection time, and DynamoDB Local deletes expired items).
fn websocket(name: &str, connection: &str, body: Option<Value>) -> Value {
    let mut event = fixture(name);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    event["requestContext"]["connectionId"] = json!(connection);
    event["requestContext"]["connectedAt"] = json!(now);
    event["requestContext"]["requestTimeEpoch"] = json!(now);
    if let Some(body) = body {
        event["body"] = json!(body.to_string());
    }
    event
}

/// The DynamoDB Local endpoint, and fresh tables there named `{name}{now}`: their prefix.
async fn fresh_tables(name: &str) -> (String, String) {
    let dynamodb = std::env::var("STREAMER_DYNAMODB_ENDPOINT")
        .expect("STREAMER_DYNAMODB_ENDPOINT: scripts/test starts DynamoDB Local and sets it");
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let prefix = format!("{name}{nanos}");
    DynamoDbStore::local(&dynamodb, Tables::with_prefix(&prefix))
        .create_tables()
        .await
        .unwrap();
    (dynamodb, prefix)
}

/// The four functions' processes on fresh tables, each behind its emulator, posting to a
/// recording Management API.
struct Functions {
    store: DynamoDbStore,
    stream: StreamPoller,
    management: Management,
    gateway: Emulator,
    processor: Emulator,
    sweeper: Emulator,
    /// The worker's asynchronous invocations' replies, in the order they end.
    jobs: mpsc::UnboundedReceiver<Reply>,
    /// The processor function's process, for what it printed.
    processor_process: Process,
    _others: [Process; 3],
}

impl Functions {
    /// Starts them on tables named `{name}{now}`.
    async fn start(name: &str) -> Self {
        let (dynamodb, prefix) = fresh_tables(name).await;
        let tables = Tables::with_prefix(&prefix);
        let store = DynamoDbStore::local(&dynamodb, tables.clone());
        let stream =
            StreamPoller::local(&dynamodb, tables.name(&REQUESTS), PollerOptions::default());
        let management = Management::default();
        let management_url = management.serve().await;
        let (gateway, processor, worker, sweeper) = (
            Emulator::default(),
            Emulator::default(),
            Emulator::default(),
            Emulator::default(),
        );
        let jobs = worker.async_replies();
        let worker_api = worker.serve().await;
        let env = [
            ("STREAMER_TABLE_PREFIX", prefix),
            ("STREAMER_WEBSOCKET_ENDPOINT", management_url),
            ("STREAMER_WORKER_FUNCTION", "worker".to_owned()),
            ("STREAMER_AUTH", "dev".to_owned()),
            ("STREAMER_INIT_TIMEOUT_MS", "1".to_owned()),
            ("AWS_ENDPOINT_URL_DYNAMODB", dynamodb),
            ("AWS_ENDPOINT_URL_LAMBDA", format!("http://{worker_api}")),
        ];
        let processor_process = spawn("processor", &processor.serve().await, &env);
        let others = [
            spawn("gateway", &gateway.serve().await, &env),
            spawn("worker", &worker_api, &env),
            spawn("sweeper", &sweeper.serve().await, &env),
        ];
        Self {
            store,
            stream,
            management,
            gateway,
            processor,
            sweeper,
            jobs,
            processor_process,
            _others: others,
        }
    }
}

#[tokio::test]
async fn the_four_functions_run_a_request_end_to_end() {
    let Functions {
        store,
        stream,
        management,
        gateway,
        processor,
        sweeper,
        mut jobs,
        processor_process,
        _others,
    } = Functions::start("fn").await;

    // $connect answers with the subprotocol.
    let connection = "AAAA1234=";
    let connected = gateway
        .invoke(websocket("apigw-websocket-connect.json", connection, None))
        .await
        .unwrap();
    assert_eq!(connected["statusCode"], 200);
    assert_eq!(
        connected["headers"]["sec-websocket-protocol"],
        "graphql-transport-ws"
    );
    let message = |body: Value| websocket("apigw-websocket-message.json", connection, Some(body));
    let answered = gateway
        .invoke(message(json!({ "type": "connection_init" })))
        .await
        .unwrap();
    assert_eq!(answered["statusCode"], 200);
    assert_eq!(
        management.frames(connection),
        [json!({ "type": "connection_ack" })]
    );

    // The mutation is answered at once with the queued request.
    let mutation = json!({ "id": "m", "type": "subscribe", "payload": { "query": "mutation { generateReport(input: {from: \"2026-01-01\", to: \"2026-01-31\", rows: 5, stepDelayMs: 60}) { id status } }" } });
    gateway.invoke(message(mutation)).await.unwrap();
    let frames = management.frames(connection);
    let request_id = frames[1]["payload"]["data"]["generateReport"]["id"]
        .as_str()
        .expect("a request id")
        .to_owned();
    assert_eq!(
        frames[1]["payload"]["data"]["generateReport"]["status"],
        "QUEUED"
    );
    assert_eq!(frames[2], json!({ "id": "m", "type": "complete" }));

    let subscribe = json!({ "id": "s", "type": "subscribe", "payload": { "query": "subscription($id: ID!) { requestProgress(id: $id) { status version output { ... on Report { rows } } } }", "variables": { "id": request_id } } });
    gateway.invoke(message(subscribe)).await.unwrap();

    // The stream's batches go to the processor as the event source mapping would send them;
    // the first starts the job in the worker, the rest push its states.
    let records = stream.read_retained().await.unwrap();
    let consumed = records.len();
    let answer = processor
        .invoke(json!({ "Records": records }))
        .await
        .unwrap();
    assert_eq!(answer, json!({ "batchItemFailures": [] }));
    let job = tokio::time::timeout(PATIENCE, jobs.recv())
        .await
        .expect("the worker answers")
        .unwrap()
        .expect("the job ran");
    assert_eq!(
        job,
        json!({ "requestId": request_id, "outcome": "Completed" })
    );
    let records = stream.read_retained().await.unwrap().split_off(consumed);
    assert!(records.len() >= 5, "the job's states: {records:?}");
    let answer = processor
        .invoke(json!({ "Records": records }))
        .await
        .unwrap();
    assert_eq!(answer, json!({ "batchItemFailures": [] }));

    let followed: Vec<Value> = management
        .frames(connection)
        .into_iter()
        .filter(|f| f["id"] == "s")
        .collect();
    let states: Vec<&Value> = followed
        .iter()
        .filter(|f| f["type"] == "next")
        .map(|f| &f["payload"]["data"]["requestProgress"])
        .collect();
    let versions: Vec<u64> = states
        .iter()
        .map(|s| s["version"].as_u64().unwrap())
        .collect();
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
    assert_eq!(states[0]["status"], "QUEUED", "the snapshot on subscribe");
    assert_eq!(
        *states.last().unwrap(),
        &json!({ "status": "COMPLETED", "version": versions.last().unwrap(), "output": { "rows": 5 } })
    );
    assert_eq!(
        followed.last().unwrap(),
        &json!({ "id": "s", "type": "complete" })
    );

    // A batch with malformed records: partial batch failure, by sequence number.
    let answer = processor
        .invoke(fixture("dynamodb-stream-malformed.json"))
        .await
        .unwrap();
    let failed: Vec<&str> = answer["batchItemFailures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["itemIdentifier"].as_str().unwrap())
        .collect();
    assert_eq!(
        failed,
        [
            "000000000000000000101",
            "000000000000000000102",
            "000000000000000000104",
            "000000000000000000105"
        ]
    );

    // A connection that never initialises is closed by the sweep.
    gateway
        .invoke(websocket("apigw-websocket-connect.json", "SILENT0=", None))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let schedule = json!({ "version": "0", "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa", "detail-type": "Scheduled Event", "source": "aws.events", "account": "123456789012", "time": "2026-11-27T09:00:00Z", "region": "us-east-1", "resources": ["arn:aws:events:us-east-1:123456789012:rule/sweep"], "detail": {} });
    let swept = sweeper.invoke(schedule).await.unwrap();
    assert_eq!(swept["initTimeouts"], 1, "{swept}");
    assert_eq!(management.deleted(), ["SILENT0="]);
    assert!(store.get_connection("SILENT0=").await.unwrap().is_none());

    // GraphQL over HTTP (payload format 2.0, base64 body).
    let answer = gateway
        .invoke(fixture("apigw-http-graphql.json"))
        .await
        .unwrap();
    assert_eq!(answer["statusCode"], 200);
    let body: Value = serde_json::from_str(answer["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        body["data"]["actions"],
        json!(["flakyImport", "generateReport", "monthlyReports"])
    );

    // The dashboard and its assets over the same HTTP route (`GET`), from the binary.
    let mut page = fixture("apigw-http-graphql.json");
    page["requestContext"]["http"]["method"] = json!("GET");
    page["rawPath"] = json!("/dashboard");
    page["body"] = Value::Null;
    let answer = gateway.invoke(page.clone()).await.unwrap();
    assert_eq!(answer["statusCode"], 200, "{answer}");
    assert!(
        answer["headers"]["content-type"]
            .as_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(
        answer["body"]
            .as_str()
            .unwrap()
            .contains("/assets/dashboard/dashboard.js")
    );
    page["rawPath"] = json!("/assets/nothing.js");
    assert_eq!(gateway.invoke(page).await.unwrap()["statusCode"], 404);

    // $disconnect cleans up.
    let answer = gateway
        .invoke(websocket(
            "apigw-websocket-disconnect.json",
            connection,
            None,
        ))
        .await
        .unwrap();
    assert_eq!(answer["statusCode"], 200);
    assert!(store.get_connection(connection).await.unwrap().is_none());

    // The processor logged JSON with the invocation's ids and flushed EMF metrics.
    let printed = processor_process.stdout.lock().unwrap().clone();
    let documents: Vec<Value> = printed
        .iter()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    assert!(
        documents.iter().any(
            |d| d["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "Streamer"
                && d["status"] == "COMPLETED"
                && d["Requests"] == 1
        ),
        "an EMF document counts the COMPLETED state: {printed:?}"
    );
    assert!(
        documents
            .iter()
            .any(|d| d["span"]["aws_request_id"].is_string()
                && d["span"]["xray_trace_id"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("Root=1-"))),
        "log lines carry the invocation: {printed:?}"
    );
}

/// The gateway function holds clients to the limits and quotas its environment sets, and
/// does not start on a malformed one, naming it.
#[tokio::test]
async fn the_gateway_enforces_the_limits_and_quotas_its_environment_sets() {
    let (dynamodb, prefix) = fresh_tables("limits").await;
    let management = Management::default();
    let env = [
        ("STREAMER_TABLE_PREFIX", prefix.clone()),
        ("STREAMER_WEBSOCKET_ENDPOINT", management.serve().await),
        ("STREAMER_AUTH", "dev".to_owned()),
        ("AWS_ENDPOINT_URL_DYNAMODB", dynamodb.clone()),
    ];

    // A malformed value: the function stops at init, and says which variable.
    let refused = tokio::time::timeout(
        PATIENCE,
        tokio::process::Command::new(binary("gateway"))
            .env_clear()
            .env("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9")
            .env("AWS_REGION", "us-east-1")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("STREAMER_MAX_DEPTH", "deep")
            .output(),
    )
    .await
    .expect("it stops at once")
    .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("STREAMER_MAX_DEPTH"), "{stderr}");

    let gateway = Emulator::default();
    let mut limited = env.to_vec();
    limited.extend([
        ("STREAMER_MAX_DEPTH", "3".to_owned()),
        ("STREAMER_TENANT_ENQUEUES_PER_SECOND", "1".to_owned()),
    ]);
    let _gateway = spawn("gateway", &gateway.serve().await, &limited);
    let connection = "LIMITS01=";
    gateway
        .invoke(websocket("apigw-websocket-connect.json", connection, None))
        .await
        .unwrap();
    let message = |body: Value| websocket("apigw-websocket-message.json", connection, Some(body));
    gateway
        .invoke(message(json!({ "type": "connection_init" })))
        .await
        .unwrap();
    // Depth 4 against a limit of 3.
    gateway
        .invoke(message(json!({ "id": "deep", "type": "subscribe", "payload": { "query": "{ requests { edges { node { id } } } }" } })))
        .await
        .unwrap();
    let refused = management
        .frames(connection)
        .into_iter()
        .find(|f| f["id"] == "deep")
        .expect("an answer");
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["payload"][0]["extensions"]["limit"], "depth");
    // Five enqueues at one a second: at most one passes in each second they take.
    let started = std::time::Instant::now();
    for n in 0..5 {
        gateway
            .invoke(message(json!({ "id": format!("m{n}"), "type": "subscribe", "payload": { "query": "mutation { flakyImport(input: {failTimes: 0}) { id } }" } })))
            .await
            .unwrap();
    }
    let frames = management.frames(connection);
    let over_quota = frames
        .iter()
        .filter(|f| f["type"] == "error" && f["payload"][0]["extensions"]["quota"] == "enqueueRate")
        .count();
    let accepted = frames
        .iter()
        .filter(|f| f["type"] == "next" && f["id"].as_str().is_some_and(|id| id.starts_with('m')))
        .count();
    assert_eq!(over_quota + accepted, 5, "{frames:?}");
    let seconds = started.elapsed().as_secs() as usize + 2;
    assert!(
        accepted >= 1 && accepted <= seconds.min(4) && over_quota >= 1,
        "{accepted} accepted in {seconds} seconds or less: {frames:?}"
    );
}

/// A workflow on the Lambda functions: the worker's invocation ends when the workflow
/// suspends (the request WAITING for its children, no invocation running it), the children
/// run in their own invocations, and a later invocation of the parent finishes it.
#[tokio::test]
async fn a_suspended_workflow_ends_its_invocation_and_a_later_one_finishes_it() {
    let Functions {
        store,
        stream,
        gateway,
        processor,
        mut jobs,
        // Kept to the end: the processes stop when dropped.
        processor_process: _processor,
        _others,
        ..
    } = Functions::start("wf").await;

    // Two months: two `generateReport` children.
    let mut enqueue = fixture("apigw-http-graphql.json");
    let query = json!({ "query": "mutation { monthlyReports(input: {from: \"2026-01\", to: \"2026-02\", rows: 3, stepDelayMs: 20}) { id status } }" });
    enqueue["body"] = json!(query.to_string());
    enqueue["isBase64Encoded"] = json!(false);
    let answer = gateway.invoke(enqueue).await.unwrap();
    let body: Value = serde_json::from_str(answer["body"].as_str().unwrap()).unwrap();
    let parent = body["data"]["monthlyReports"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("a request id: {body}"))
        .to_owned();

    // Every new stream record goes to the processor, as the event source mapping sends it;
    // the worker's invocations answer in the order they end.
    let mut seen = std::collections::HashSet::new();
    let mut records_seen = Vec::new();
    let mut invocations: Vec<(String, String)> = Vec::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !invocations.contains(&(parent.clone(), "Completed".to_owned())) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the workflow did not finish: {invocations:?}"
        );
        let fresh: Vec<Value> = stream
            .read_retained()
            .await
            .unwrap()
            .into_iter()
            .filter(|record| seen.insert(record["eventID"].as_str().unwrap().to_owned()))
            .collect();
        if !fresh.is_empty() {
            records_seen.extend(fresh.iter().cloned());
            let answer = processor.invoke(json!({ "Records": fresh })).await.unwrap();
            assert_eq!(answer, json!({ "batchItemFailures": [] }));
        }
        while let Ok(reply) = jobs.try_recv() {
            let reply = reply.expect("the worker's invocation ends without an error");
            invocations.push((
                reply["requestId"].as_str().unwrap().to_owned(),
                reply["outcome"].as_str().unwrap().to_owned(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The parent took two invocations: the first ended with the workflow suspended, the
    // second after both children had completed in theirs.
    let of_parent: Vec<&str> = invocations
        .iter()
        .filter(|(id, _)| *id == parent)
        .map(|(_, outcome)| outcome.as_str())
        .collect();
    assert_eq!(of_parent, ["Suspended", "Completed"], "{invocations:?}");
    let children: Vec<usize> = invocations
        .iter()
        .enumerate()
        .filter(|(_, (id, outcome))| *id != parent && outcome == "Completed")
        .map(|(at, _)| at)
        .collect();
    assert_eq!(children.len(), 2, "{invocations:?}");
    let suspended = invocations
        .iter()
        .position(|(id, _)| *id == parent)
        .unwrap();
    let finished = invocations.len() - 1;
    assert!(children.iter().all(|&at| suspended < at && at < finished));

    // Between the two, the store held the parent WAITING for exactly its two children.
    let image = |record: &Value| record["dynamodb"]["NewImage"].clone();
    let waiting = records_seen
        .iter()
        .map(image)
        .find(|item| item["id"]["S"] == parent && item["status"]["S"] == "WAITING")
        .expect("the parent was WAITING");
    let waiting_for = waiting["waitingFor"]["L"].as_array().unwrap();
    assert_eq!(waiting_for.len(), 2, "{waiting}");
    let done = store.get_request(&parent).await.unwrap().unwrap();
    assert_eq!(done.status, streamer::core::RequestStatus::Completed);
    let output = done.result.expect("the merged output");
    assert_eq!(
        (output["months"].clone(), output["rows"].clone()),
        (json!(2), json!(6))
    );
}
