//! IAM as AWS applies it: each function's DynamoDB calls, recorded by an interceptor on its
//! own DynamoDB client while its code runs a job's whole life against DynamoDB Local, must
//! be exactly what its role in `deploy/template.yaml` allows: nothing missing (AccessDenied
//! on AWS), nothing unused. The Management API and the worker function are checked the
//! same way through the sender and the dispatcher each function is given.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::BoxError;
use serde_json::{Value, json};
use streamer::aws::stream::{self, StreamEvent};
use streamer::aws::{DynamoDbStore, PollerOptions, StreamPoller, Tables};
use streamer::core::protocol::Close;
use streamer::core::{
    AsyncRequest, Clock, Error, Limits, ManualClock, RandomIds, Result, Sender, Store,
};
use streamer::gateway::Gateway;
use streamer::processor::{Dispatcher, FairDispatcher, Processor, SweepOptions, Sweeper, Worker};
use streamer::schema::Services;
use support::handlers;

/// What one function was seen to call: `service:Action resource`, the resource as the
/// template names it (`RequestsTable`, `RequestsTable/index`, `WebSocket`, `WorkerFunction`).
#[derive(Debug, Clone, Default)]
struct Calls(Arc<Mutex<BTreeSet<String>>>);

impl Calls {
    fn add(&self, call: String) {
        self.0.lock().unwrap().insert(call);
    }
    fn seen(&self) -> BTreeSet<String> {
        self.0.lock().unwrap().clone()
    }
}

/// Records each DynamoDB call's action and table (or index) from the request itself.
#[derive(Debug)]
struct Recorder {
    calls: Calls,
    tables: BTreeMap<String, &'static str>,
}

impl Intercept for Recorder {
    fn name(&self) -> &'static str {
        "iam-recorder"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> std::result::Result<(), BoxError> {
        let request = context.request();
        let action = request
            .headers()
            .get("x-amz-target")
            .and_then(|target| target.rsplit('.').next())
            .unwrap_or("?")
            .to_owned();
        let body: Value = request
            .body()
            .bytes()
            .and_then(|bytes| serde_json::from_slice(bytes).ok())
            .unwrap_or_default();
        // A batch names its table as the key of `RequestItems`.
        let table = body["TableName"]
            .as_str()
            .or_else(|| {
                body["RequestItems"]
                    .as_object()
                    .and_then(|items| items.keys().next())
                    .map(String::as_str)
            })
            .unwrap_or_default();
        // A transaction is allowed by the actions of its items, each on its own table.
        if let Some(items) = body["TransactItems"].as_array() {
            for item in items.iter().filter_map(Value::as_object) {
                for (kind, write) in item {
                    let action = match kind.as_str() {
                        "ConditionCheck" => "ConditionCheckItem".to_owned(),
                        other => format!("{other}Item"),
                    };
                    let table = write["TableName"].as_str().unwrap_or_default();
                    let resource = self.tables.get(table).copied().unwrap_or("?");
                    self.calls.add(format!("dynamodb:{action} {resource}"));
                }
            }
            return Ok(());
        }
        let resource = self.tables.get(table).copied().unwrap_or("?").to_owned();
        let resource = if body.get("IndexName").is_some() {
            format!("{resource}/index")
        } else {
            resource
        };
        self.calls.add(format!("dynamodb:{action} {resource}"));
        Ok(())
    }
}

/// A DynamoDB store whose calls land in `calls`.
fn recorded_store(tables: &Tables, calls: &Calls) -> Arc<dyn Store> {
    use streamer::aws::tables::{CONNECTIONS, HISTORY, REQUESTS, SUBSCRIPTIONS};
    let names = BTreeMap::from([
        (tables.name(&CONNECTIONS), "ConnectionsTable"),
        (tables.name(&SUBSCRIPTIONS), "SubscriptionsTable"),
        (tables.name(&REQUESTS), "RequestsTable"),
        (tables.name(&HISTORY), "HistoryTable"),
    ]);
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
        .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
        .endpoint_url(support::dynamodb_endpoint())
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "local", "local", None, None, "iam-test",
        ))
        .interceptor(Recorder {
            calls: calls.clone(),
            tables: names,
        })
        .build();
    Arc::new(DynamoDbStore::new(
        aws_sdk_dynamodb::Client::from_conf(config),
        tables.clone(),
    ))
}

/// The Management API as a function's role sees it; the first post of a frame that
/// completes an operation fails once, as a transient Management API error would, and so does
/// the first `next` of operation `t`.
#[derive(Debug, Default)]
struct Posts {
    calls: Calls,
    /// Fails the first `complete` once, and the first `next` of `t`.
    flaky: bool,
    failed_once: Mutex<bool>,
    failed_next: Mutex<bool>,
    sent: Mutex<Vec<(String, String)>>,
}

#[async_trait]
impl Sender for Posts {
    async fn post(&self, connection_id: &str, data: &str) -> Result<()> {
        self.calls
            .add("execute-api:ManageConnections WebSocket".to_owned());
        if self.flaky && connection_id == GONE {
            return Err(Error::Gone(connection_id.to_owned()));
        }
        if self.flaky
            && data.contains(r#""type":"complete""#)
            && !std::mem::replace(&mut *self.failed_once.lock().unwrap(), true)
        {
            return Err(Error::backend("posting", std::io::Error::other("a 500")));
        }
        // Another subscriber of the same change got it: the failed change records that.
        if self.flaky
            && data.contains(r#""type":"next""#)
            && data.contains(r#""id":"t""#)
            && !std::mem::replace(&mut *self.failed_next.lock().unwrap(), true)
        {
            return Err(Error::backend("posting", std::io::Error::other("a 500")));
        }
        self.sent
            .lock()
            .unwrap()
            .push((connection_id.to_owned(), data.to_owned()));
        Ok(())
    }

    async fn close(&self, _connection_id: &str, _close: &Close) -> Result<()> {
        self.calls
            .add("execute-api:ManageConnections WebSocket".to_owned());
        Ok(())
    }
}

/// A connection whose client left without a `$disconnect`: posts to it are answered 410.
const GONE: &str = "c3";

/// The worker function as a caller's role sees it.
#[derive(Debug, Default)]
struct Invokes(Calls);

#[async_trait]
impl Dispatcher for Invokes {
    async fn dispatch(&self, _request: &AsyncRequest) -> Result<()> {
        self.0
            .add("lambda:InvokeFunction WorkerFunction".to_owned());
        Ok(())
    }
}

/// What each function's role allows, read from the template: `service:Action resource`.
fn allowed() -> BTreeMap<String, BTreeSet<String>> {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/template.yaml"),
    )
    .unwrap();
    let template: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let mut roles = BTreeMap::new();
    for (function, logical) in [
        ("gateway", "GatewayFunction"),
        ("processor", "ProcessorFunction"),
        ("worker", "WorkerFunction"),
        ("sweeper", "SweeperFunction"),
    ] {
        let mut allowed = BTreeSet::new();
        let policies = &template["Resources"][logical]["Properties"]["Policies"];
        for policy in policies.as_sequence().unwrap() {
            if let Some(target) = policy.get("LambdaInvokePolicy") {
                allowed.insert(format!(
                    "lambda:InvokeFunction {}",
                    reference(&target["FunctionName"])
                ));
            }
            let Some(statements) = policy.get("Statement") else {
                continue;
            };
            for statement in statements.as_sequence().unwrap() {
                let actions = list(&statement["Action"]);
                let resources: Vec<String> = match &statement["Resource"] {
                    serde_yaml::Value::Sequence(items) => items.iter().map(reference).collect(),
                    one => vec![reference(one)],
                };
                for action in &actions {
                    for resource in &resources {
                        allowed.insert(format!("{action} {resource}"));
                    }
                }
            }
        }
        roles.insert(function.to_owned(), allowed);
    }
    roles
}

fn list(value: &serde_yaml::Value) -> Vec<String> {
    match value {
        serde_yaml::Value::Sequence(items) => items
            .iter()
            .map(|item| item.as_str().unwrap().to_owned())
            .collect(),
        one => vec![one.as_str().unwrap().to_owned()],
    }
}

/// `!GetAtt X.Arn` → `X`; `!Sub "${X.Arn}/index/*"` → `X/index`; the Management API's
/// `execute-api` ARN → `WebSocket`; `!Ref X` → `X`.
fn reference(value: &serde_yaml::Value) -> String {
    let serde_yaml::Value::Tagged(tagged) = value else {
        panic!("a resource reference: {value:?}");
    };
    let text = tagged.value.as_str().unwrap_or_default();
    match tagged.tag.to_string().as_str() {
        "!GetAtt" => text.trim_end_matches(".Arn").to_owned(),
        "!Ref" => text.to_owned(),
        "!Sub" if text.contains("@connections") => "WebSocket".to_owned(),
        "!Sub" => {
            let name = text
                .trim_start_matches("${")
                .split('.')
                .next()
                .unwrap_or_default();
            if text.ends_with("/index/*") {
                format!("{name}/index")
            } else {
                name.to_owned()
            }
        }
        other => panic!("an unexpected tag {other}"),
    }
}

fn event(value: Value) -> aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest {
    serde_json::from_value(value).unwrap()
}

fn frame(route: &str, kind: &str, connection_id: &str, body: Option<Value>) -> Value {
    json!({
        "requestContext": {
            "routeKey": route,
            "eventType": kind,
            "connectionId": connection_id,
            "connectedAt": 1_700_000_000_000_i64,
            "requestTimeEpoch": 1_700_000_000_000_i64,
            "domainName": "example.execute-api.us-east-1.amazonaws.com",
            "stage": "prod",
            "apiId": "example",
            "requestId": "r",
        },
        "headers": { "Sec-WebSocket-Protocol": "graphql-transport-ws" },
        "multiValueHeaders": { "Sec-WebSocket-Protocol": ["graphql-transport-ws"] },
        "isBase64Encoded": false,
        "body": body.map(|b| b.to_string()),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_function_calls_exactly_what_its_role_allows() {
    let tables = support::unique_tables();
    DynamoDbStore::local(&support::dynamodb_endpoint(), tables.clone())
        .create_tables()
        .await
        .unwrap();
    let clock = Arc::new(ManualClock::new(
        chrono::Utc::now(),
        chrono::Duration::milliseconds(1),
    ));
    let calls: BTreeMap<&str, Calls> = ["gateway", "processor", "worker", "sweeper"]
        .into_iter()
        .map(|function| (function, Calls::default()))
        .collect();
    let store = |function: &str| recorded_store(&tables, &calls[function]);
    let services = |store: Arc<dyn Store>| Services {
        store,
        clock: clock.clone(),
        ids: Arc::new(RandomIds),
        // The quotas the template sets: counting them is part of what the gateway calls.
        limits: Limits {
            max_tenant_connections: Some(1000),
            max_tenant_active_requests: Some(10_000),
            max_tenant_enqueues_per_second: Some(1000),
            ..Limits::default()
        },
        access: streamer::core::Access::default(),
    };
    let handlers = handlers::app().handlers();

    // The gateway: connect, init, enqueue, subscribe; a second connection never inits.
    let gateway_services = services(store("gateway"));
    let gateway_sender = Arc::new(Posts {
        calls: calls["gateway"].clone(),
        ..Posts::default()
    });
    let gateway = Gateway::new(
        streamer::schema::build(Arc::clone(&handlers), gateway_services.clone()).unwrap(),
        &gateway_services,
        gateway_sender.clone(),
    );
    for (connection, frames) in [
        (
            "c1",
            vec![
                json!({ "type": "connection_init" }),
                json!({ "id": "m", "type": "subscribe", "payload": { "query": "mutation { generateReport(input: { from: \"2026-01-01\", to: \"2026-01-31\", rows: 10, stepDelayMs: 0 }) { id } }" } }),
                json!({ "id": "l", "type": "subscribe", "payload": { "query": "{ requests(status: QUEUED) { edges { node { id } } } }" } }),
                json!({ "id": "x", "type": "subscribe", "payload": { "query": "mutation { flakyImport(input: { failTimes: 0 }) { id } }" } }),
                // Templates: saved, listed, read, started and deleted.
                json!({ "id": "t1", "type": "subscribe", "payload": { "query": "mutation { saveTemplate(name: \"t\", action: \"flakyImport\", payload: {}) { version } }" } }),
                json!({ "id": "t2", "type": "subscribe", "payload": { "query": "{ templates { name } template(name: \"t\") { version } }" } }),
                json!({ "id": "t3", "type": "subscribe", "payload": { "query": "mutation { enqueueTemplate(name: \"t\", overrides: { failTimes: 0 }) { id } }" } }),
                json!({ "id": "t4", "type": "subscribe", "payload": { "query": "mutation { deleteTemplate(name: \"t\") }" } }),
                // A workflow of two months.
                json!({ "id": "w", "type": "subscribe", "payload": { "query": "mutation { monthlyReports(input: { from: \"2026-01\", to: \"2026-02\", rows: 10, stepDelayMs: 0 }) { id } }" } }),
                // A batch: stored with its children, which are listed.
                json!({ "id": "b", "type": "subscribe", "payload": { "query": "mutation { flakyImportBatch(inputs: [{ failTimes: 0 }, { failTimes: 0 }]) { id children { edges { node { id } } } } }" } }),
            ],
        ),
        ("c2", vec![]),
    ] {
        gateway
            .handle(event(frame("$connect", "CONNECT", connection, None)))
            .await;
        for body in frames {
            gateway
                .handle(event(frame("$default", "MESSAGE", connection, Some(body))))
                .await;
        }
    }
    let sent = gateway_sender.sent.lock().unwrap().clone();
    let id = sent
        .iter()
        .find_map(|(_, data)| {
            let frame: Value = serde_json::from_str(data).ok()?;
            frame["payload"]["data"]["generateReport"]["id"]
                .as_str()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| panic!("enqueued: {sent:?}"));
    for operation in ["s", "t"] {
        gateway
            .handle(event(frame("$default", "MESSAGE", "c1", Some(json!({ "id": operation, "type": "subscribe", "payload": { "query": "subscription($id: ID!) { requestProgress(id: $id) { status } }", "variables": { "id": id } } })))))
            .await;
    }
    // A client cancels the second request (an update of the request).
    let cancelled = sent
        .iter()
        .find_map(|(_, data)| {
            let frame: Value = serde_json::from_str(data).ok()?;
            frame["payload"]["data"]["flakyImport"]["id"]
                .as_str()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| panic!("enqueued: {sent:?}"));
    gateway
        .handle(event(frame("$default", "MESSAGE", "c1", Some(json!({ "id": "c", "type": "subscribe", "payload": { "query": "mutation($id: ID!) { cancelRequest(id: $id) { status } }", "variables": { "id": cancelled } } })))))
        .await;
    // And cancels the batch: the processor cancels its children, and counts them.
    let batch = sent
        .iter()
        .find_map(|(_, data)| {
            let frame: Value = serde_json::from_str(data).ok()?;
            frame["payload"]["data"]["flakyImportBatch"]["id"]
                .as_str()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| panic!("a batch: {sent:?}"));
    gateway
        .handle(event(frame("$default", "MESSAGE", "c1", Some(json!({ "id": "cb", "type": "subscribe", "payload": { "query": "mutation($id: ID!) { cancelRequest(id: $id) { status } }", "variables": { "id": batch } } })))))
        .await;

    // The processor, fed by the stream as Lambda's event source mapping feeds it (those reads
    // are the mapping's, not the function's); the worker runs the job in between.
    let processor_store = store("processor");
    let processor_sender = Arc::new(Posts {
        calls: calls["processor"].clone(),
        flaky: true,
        ..Posts::default()
    });
    let processor = Processor::new(
        streamer::schema::build_for_stored_documents(
            Arc::clone(&handlers),
            services(Arc::clone(&processor_store)),
        )
        .unwrap(),
        Arc::clone(&processor_store),
        processor_sender.clone(),
        Arc::new(FairDispatcher::new(
            Arc::new(Invokes(calls["processor"].clone())),
            Arc::clone(&processor_store),
            8,
        )),
    );
    let poller = StreamPoller::local(
        &support::dynamodb_endpoint(),
        tables.name(&streamer::aws::tables::REQUESTS),
        PollerOptions::default(),
    );
    let feed = |processor: Processor, poller: &StreamPoller| {
        let poller = poller.clone();
        async move {
            let records = poller.read_retained().await.unwrap();
            let decoded = stream::decode(&StreamEvent { records });
            let mut failures = 0;
            for change in decoded.changes {
                if processor.handle(&change).await.is_err() {
                    failures += 1;
                }
            }
            failures
        }
    };
    let worker = Worker::new(store("worker"), clock.clone(), Arc::clone(&handlers));
    worker.run(&id).await.unwrap();
    // The first terminal push fails: the subscription is put back and the change retried.
    let failures = feed(processor.clone(), &poller).await;
    assert!(failures > 0, "the failed push fails its change");
    let _ = feed(processor.clone(), &poller).await;
    assert!(
        processor_sender
            .sent
            .lock()
            .unwrap()
            .iter()
            .any(|(_, data)| data.contains(r#""type":"complete""#)),
        "the retried change completed the subscription"
    );

    // A second job is enqueued and its dispatch lost. The client resumes the first job's
    // states from the history, follows the second, and leaves; another client follows the
    // second and is gone without a `$disconnect`.
    let message = |connection: &str, body: Value| {
        gateway.handle(event(frame("$default", "MESSAGE", connection, Some(body))))
    };
    message("c1", json!({ "id": "m2", "type": "subscribe", "payload": { "query": "mutation { generateReport(input: { from: \"2026-01-01\", to: \"2026-01-31\", rows: 10, stepDelayMs: 0 }) { id } }" } })).await;
    let second = gateway_sender
        .sent
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find_map(|(_, data)| {
            let frame: Value = serde_json::from_str(data).ok()?;
            (frame["id"] == "m2")
                .then(|| {
                    frame["payload"]["data"]["generateReport"]["id"]
                        .as_str()
                        .map(str::to_owned)
                })
                .flatten()
        })
        .expect("the second job");
    let follow = "subscription($id: ID!, $after: Int) { requestProgress(id: $id, afterVersion: $after) { status } }";
    message("c1", json!({ "id": "r", "type": "subscribe", "payload": { "query": follow, "variables": { "id": id, "after": 1 } } })).await;
    message("c1", json!({ "id": "s2", "type": "subscribe", "payload": { "query": follow, "variables": { "id": second } } })).await;
    gateway
        .handle(event(frame("$connect", "CONNECT", GONE, None)))
        .await;
    message(GONE, json!({ "type": "connection_init" })).await;
    message(GONE, json!({ "id": "s", "type": "subscribe", "payload": { "query": follow, "variables": { "id": second } } })).await;
    gateway
        .handle(event(frame("$disconnect", "DISCONNECT", "c1", None)))
        .await;
    // A worker starts the second job and dies (its calls are the worker's, seen above).
    // The processor pushes the RUNNING state: the gone connection is pruned.
    let plain = DynamoDbStore::local(&support::dynamodb_endpoint(), tables.clone());
    streamer::core::store::modify_request(&plain, &*clock, &second, |request, now| {
        request.claim(now, chrono::Duration::seconds(30), 3)
    })
    .await
    .unwrap();
    for _ in 0..50 {
        let _ = feed(processor.clone(), &poller).await;
        if plain.get_connection(GONE).await.unwrap().is_none() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        plain.get_connection(GONE).await.unwrap().is_none(),
        "pruned"
    );

    // A change that finds a subscription held (its snapshot still going out) waits, and
    // reads that one subscription again until its hold is released.
    gateway
        .handle(event(frame("$connect", "CONNECT", "c4", None)))
        .await;
    message("c4", json!({ "type": "connection_init" })).await;
    message("c4", json!({ "id": "h", "type": "subscribe", "payload": { "query": follow, "variables": { "id": second } } })).await;
    let mut held = (*plain
        .subscriptions(&second)
        .await
        .unwrap()
        .into_iter()
        .find(|subscription| subscription.key.connection_id == "c4")
        .expect("c4 follows the second job"))
    .clone();
    held.pushing_until = Some(clock.now().timestamp_millis() + 60_000);
    plain.put_subscription(&held).await.unwrap();
    streamer::core::store::modify_request(&plain, &*clock, &second, |request, now| {
        request.report(0.5, Some("half".into()), now)
    })
    .await
    .unwrap();
    let half_pushed = || {
        processor_sender
            .sent
            .lock()
            .unwrap()
            .iter()
            .any(|(connection, data)| connection == "c4" && data.contains("RUNNING"))
    };
    // Released once the processor has read it again (or after two seconds, and the
    // assertion below fails).
    let read_again = "dynamodb:GetItem SubscriptionsTable".to_owned();
    let release = async {
        for _ in 0..100 {
            if calls["processor"].seen().contains(&read_again) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        plain
            .release_push(&held.key, held.last_version)
            .await
            .unwrap();
    };
    let pushing = async {
        for _ in 0..50 {
            let _ = feed(processor.clone(), &poller).await;
            if half_pushed() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    };
    tokio::join!(release, pushing);
    assert!(
        calls["processor"].seen().contains(&read_again),
        "the held subscription was read again"
    );
    assert!(half_pushed(), "the state waited out the hold and went out");

    // The workflow: a worker plans it, starts its children (checkpoints kept) and it waits;
    // its children run; the processor does not see them end (its wake is lost), the sweeper
    // wakes it.
    let workflow = sent
        .iter()
        .find_map(|(_, data)| {
            let frame: Value = serde_json::from_str(data).ok()?;
            frame["payload"]["data"]["monthlyReports"]["id"]
                .as_str()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| panic!("a workflow: {sent:?}"));
    assert_eq!(
        worker.run(&workflow).await.unwrap(),
        streamer::processor::Outcome::Suspended
    );
    let waiting = plain.get_request(&workflow).await.unwrap().unwrap();
    assert_eq!(waiting.waiting_for.len(), 2, "{waiting:?}");
    for child in &waiting.waiting_for {
        assert_eq!(
            worker.run(child).await.unwrap(),
            streamer::processor::Outcome::Completed
        );
    }

    // The sweeper: the silent connection times out; the lost worker's job is dispatched
    // again; the workflow is woken.
    clock.advance(chrono::Duration::minutes(5));
    let sweeper_store = store("sweeper");
    let sweeper = Sweeper::new(
        Arc::clone(&sweeper_store),
        Arc::new(Posts {
            calls: calls["sweeper"].clone(),
            ..Posts::default()
        }),
        Arc::new(FairDispatcher::new(
            Arc::new(Invokes(calls["sweeper"].clone())),
            Arc::clone(&sweeper_store),
            8,
        )),
        clock.clone(),
        SweepOptions::default(),
    );
    let report = sweeper.sweep().await.unwrap();
    assert_eq!(
        (report.init_timeouts, report.abandoned, report.woken),
        (1, 1, 1),
        "{report:?}"
    );
    // A second waker of the same workflow, from the state it read before the first woke
    // it, loses its conditional write, reads the request and finds it woken: no error.
    assert!(
        !streamer::processor::processor::wake_if_ready(&*sweeper_store, &*clock, waiting)
            .await
            .unwrap()
    );

    let allowed = allowed();
    let mut problems = Vec::new();
    for (function, calls) in &calls {
        let seen = calls.seen();
        let granted = &allowed[*function];
        for missing in seen.difference(granted) {
            problems.push(format!(
                "{function} calls {missing}, which its role does not allow"
            ));
        }
        for unused in granted.difference(&seen) {
            problems.push(format!(
                "{function}'s role allows {unused}, which it never calls"
            ));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}
