//! Durable workflows, on both stores: checkpointed steps survive a deadline, a killed worker,
//! a retryable failure and a re-drive without running again; `monthlyReports` waits for its
//! children with no worker and its subscriber sees RUNNING, WAITING, RUNNING, COMPLETED; a
//! child's failure reaches its parent typed; a sleep holds no worker; a replay that does
//! not match its checkpoints fails `NON_DETERMINISTIC`; a cancel reaches the children; a
//! step result over the checkpoint size fails `LIMIT_EXCEEDED`; children count against the
//! tenant's active-requests quota.

mod support;

use report_handlers as handlers;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{Value, json};
use streamer::async_graphql::{InputObject, SimpleObject};
use streamer::{Handler, JobContext, JobError};
use support::{On, TestServer};

/// Side effects by test key: how often each step started and finished.
static STARTED: Mutex<Option<HashMap<String, Vec<u32>>>> = Mutex::new(None);
static FINISHED: Mutex<Option<HashMap<String, Vec<u32>>>> = Mutex::new(None);
/// Keys whose step 1 fails for good (until a test lets it pass).
static BROKEN: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn bump(counts: &Mutex<Option<HashMap<String, Vec<u32>>>>, key: &str, step: usize) {
    let mut counts = counts.lock().unwrap();
    let steps = counts
        .get_or_insert_default()
        .entry(key.to_owned())
        .or_default();
    if steps.len() <= step {
        steps.resize(step + 1, 0);
    }
    steps[step] += 1;
}

fn counts(counts: &Mutex<Option<HashMap<String, Vec<u32>>>>, key: &str) -> Vec<u32> {
    counts
        .lock()
        .unwrap()
        .get_or_insert_default()
        .get(key)
        .cloned()
        .unwrap_or_default()
}

#[derive(Debug, InputObject)]
struct StepsInput {
    /// Names the counters of this run.
    key: String,
    steps: i32,
    step_ms: i32,
    /// The first attempt of this step fails, retryably.
    flaky_step: Option<i32>,
}

#[derive(Debug, SimpleObject, serde::Serialize, serde::Deserialize)]
struct StepsOutput {
    total: i32,
}

/// Runs `steps` checkpointed steps of `step_ms` each, counting each start and finish.
struct Steps;

impl Handler for Steps {
    const ACTION: &'static str = "steps";
    type Input = StepsInput;
    type Output = StepsOutput;

    async fn process(&self, input: StepsInput, job: JobContext) -> Result<StepsOutput, JobError> {
        let mut total = 0;
        for step in 0..input.steps {
            let key = input.key.clone();
            let pause = Duration::from_millis(input.step_ms as u64);
            let flaky = input.flaky_step == Some(step);
            total += job
                .step(&format!("s{step}"), || async move {
                    let index = step as usize;
                    bump(&STARTED, &key, index);
                    let first = counts(&STARTED, &key)[index] == 1;
                    tokio::time::sleep(pause).await;
                    if flaky && first {
                        return Err(JobError::retryable("FLAKY", "the first try fails"));
                    }
                    if step == 1 && BROKEN.lock().unwrap().contains(&key) {
                        return Err(JobError::permanent("BROKEN", "step 1 is broken"));
                    }
                    bump(&FINISHED, &key, index);
                    Ok(step)
                })
                .await?;
        }
        Ok(StepsOutput { total })
    }

    fn max_attempts(&self) -> u32 {
        3
    }
}

#[derive(Debug, InputObject)]
struct ParentInput {
    /// Handle the child's failure instead of failing with it.
    handle: bool,
}

#[derive(Debug, SimpleObject, serde::Serialize, serde::Deserialize)]
struct ParentOutput {
    outcome: String,
}

/// Starts a `flakyImport` child that fails for good.
struct Parent;

impl Handler for Parent {
    const ACTION: &'static str = "parent";
    type Input = ParentInput;
    type Output = ParentOutput;

    async fn process(&self, input: ParentInput, job: JobContext) -> Result<ParentOutput, JobError> {
        let child = job
            .child::<handlers::FlakyImport>(handlers::FlakyImportInput { fail_times: 99 })
            .await;
        match child {
            Err(error) if input.handle && !error.is_suspension() => Ok(ParentOutput {
                outcome: format!("handled {}", error.code),
            }),
            other => other.map(|summary| ParentOutput {
                outcome: format!("imported {}", summary.imported),
            }),
        }
    }
}

#[derive(Debug, InputObject)]
struct NapInput {
    ms: i32,
    /// Bytes of the step result before the nap.
    result_bytes: Option<i32>,
}

#[derive(Debug, SimpleObject, serde::Serialize, serde::Deserialize)]
struct NapOutput {
    slept: bool,
}

/// Sleeps, durably.
struct Nap;

impl Handler for Nap {
    const ACTION: &'static str = "nap";
    type Input = NapInput;
    type Output = NapOutput;

    async fn process(&self, input: NapInput, job: JobContext) -> Result<NapOutput, JobError> {
        if let Some(bytes) = input.result_bytes {
            job.step("big", || async { Ok("x".repeat(bytes as usize)) })
                .await?;
        }
        job.sleep(Duration::from_millis(input.ms as u64)).await?;
        Ok(NapOutput { slept: true })
    }
}

#[derive(Debug, InputObject)]
struct FickleInput {
    n: i32,
}

/// Names its step after the attempt, and fails its first attempt: the replay differs.
struct Fickle;

impl Handler for Fickle {
    const ACTION: &'static str = "fickle";
    type Input = FickleInput;
    type Output = NapOutput;

    async fn process(&self, _: FickleInput, job: JobContext) -> Result<NapOutput, JobError> {
        job.step(&format!("attempt-{}", job.attempt()), || async { Ok(1) })
            .await?;
        if job.attempt() == 1 {
            return Err(JobError::retryable("AGAIN", "once more"));
        }
        Ok(NapOutput { slept: false })
    }
}

#[derive(Debug, InputObject)]
struct LateInput {
    /// Names the go-ahead this run waits for.
    key: String,
}

/// Keys whose `Late` workflow may start its children.
static GO: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Reports "ready", waits for the test's go-ahead (the test cancels it meanwhile), then
/// starts two long `generateReport` children and waits for them.
struct Late;

impl Handler for Late {
    const ACTION: &'static str = "late";
    type Input = LateInput;
    type Output = NapOutput;

    async fn process(&self, input: LateInput, job: JobContext) -> Result<NapOutput, JobError> {
        job.progress(0.1, "ready").await?;
        while !GO.lock().unwrap().contains(&input.key) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let month = |from: &str, to: &str| handlers::GenerateReportInput {
            from: from.to_owned(),
            to: to.to_owned(),
            rows: Some(10),
            step_delay_ms: Some(1000),
        };
        job.children::<handlers::GenerateReport>([
            month("2026-01-01", "2026-01-31"),
            month("2026-02-01", "2026-02-28"),
        ])
        .await?;
        Ok(NapOutput { slept: false })
    }
}

fn app() -> streamer::App {
    handlers::app()
        .register(Steps)
        .register(Parent)
        .register(Nap)
        .register(Fickle)
        .register(Late)
}

async fn server(on: On) -> TestServer {
    TestServer::start_app(app(), on, |stack| {
        stack
            .with_time_limit(Duration::from_secs(2))
            .with_lease(Duration::from_secs(1))
    })
    .await
}

fn key(name: &str, on: On) -> String {
    format!("{name}-{on:?}")
}

async fn enqueue(client: &mut support::Client, action: &str, payload: Value) -> String {
    let data = client
        .execute(
            "e",
            "mutation($action: String!, $payload: JSON!) { enqueue(action: $action, payload: $payload) { id } }",
            json!({ "action": action, "payload": payload }),
        )
        .await;
    data["enqueue"]["id"].as_str().unwrap().to_owned()
}

async fn request(client: &mut support::Client, id: &str) -> Value {
    client
        .execute(
            "q",
            "query($id: ID!) { request(id: $id) { status attempts waitingFor wakeAt error { code message } output { __typename ... on StepsOutput { total } ... on MonthlySummary { url months rows } ... on ParentOutput { outcome } ... on NapOutput { slept } } children(first: 10) { edges { node { id status } } } } }",
            json!({ "id": id }),
        )
        .await["request"]
        .clone()
}

/// Starts `monthlyReports` from January to April (four children), follows it from its
/// first state with `selection`, and returns its id and every state it went through.
async fn four_monthly_reports(
    client: &mut support::Client,
    step_delay_ms: u32,
    selection: &str,
) -> (String, Vec<Value>) {
    let data = client
        .execute(
            "m",
            "mutation($delay: Int!) { monthlyReports(input: { from: \"2026-01\", to: \"2026-04\", rows: 10, stepDelayMs: $delay }) { id } }",
            json!({ "delay": step_delay_ms }),
        )
        .await;
    let id = data["monthlyReports"]["id"].as_str().unwrap().to_owned();
    let query = format!(
        "subscription($id: ID!) {{ requestProgress(id: $id, afterVersion: 0) {{ {selection} }} }}"
    );
    client
        .send(json!({ "id": "f", "type": "subscribe", "payload": { "query": query, "variables": { "id": id } } }))
        .await;
    let states = client
        .until_done("f")
        .await
        .into_iter()
        .filter(|f| f["id"] == "f" && f["type"] == "next")
        .map(|f| f["payload"]["data"]["requestProgress"].clone())
        .collect();
    (id, states)
}

async fn steps_outlive_a_deadline_a_crash_and_a_retryable_failure(on: On) {
    let server = server(on).await;
    let mut client = server.client().await;
    client.init().await;

    // Six steps of 800 ms, attempts of at most 2 s: it goes on from its checkpoints.
    let long = key("long", on);
    let id = enqueue(
        &mut client,
        "steps",
        json!({ "key": long, "steps": 6, "stepMs": 800 }),
    )
    .await;
    client.wait_for_status(&id, "COMPLETED").await;
    let done = request(&mut client, &id).await;
    assert_eq!(done["output"]["total"], 15, "{done}");
    assert_eq!(counts(&FINISHED, &long), [1; 6], "each step's effect once");
    assert!(done["attempts"].as_u64().unwrap() >= 3, "{done}");

    // A worker killed between two steps: the next attempt does not run the first again.
    let killed = key("killed", on);
    let id = enqueue(
        &mut client,
        "steps",
        json!({ "key": killed, "steps": 3, "stepMs": 300 }),
    )
    .await;
    // Step 1 has started: step 0's checkpoint is kept.
    for _ in 0..200 {
        if counts(&STARTED, &killed).get(1) == Some(&1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(server.workers.kill(&id), "a worker ran it");
    client.wait_for_status(&id, "COMPLETED").await;
    assert_eq!(counts(&STARTED, &killed), [1, 2, 1], "step 0 not run again");
    assert_eq!(counts(&FINISHED, &killed), [1, 1, 1]);

    // A retryable failure in the third step: the retry starts at the third step.
    let flaky = key("flaky", on);
    let id = enqueue(
        &mut client,
        "steps",
        json!({ "key": flaky, "steps": 4, "stepMs": 10, "flakyStep": 2 }),
    )
    .await;
    client.wait_for_status(&id, "COMPLETED").await;
    assert_eq!(counts(&STARTED, &flaky), [1, 1, 2, 1]);
    assert_eq!(request(&mut client, &id).await["attempts"], 2);

    // Failed for good in step 1, re-driven once it is fixed: step 0 keeps its result.
    let broken = key("broken", on);
    BROKEN.lock().unwrap().push(broken.clone());
    let id = enqueue(
        &mut client,
        "steps",
        json!({ "key": broken, "steps": 3, "stepMs": 10 }),
    )
    .await;
    client.wait_for_status(&id, "FAILED").await;
    assert_eq!(request(&mut client, &id).await["error"]["code"], "BROKEN");
    BROKEN.lock().unwrap().retain(|k| *k != broken);
    client
        .execute(
            "r",
            "mutation($id: ID!) { retryRequest(id: $id) { status } }",
            json!({ "id": id }),
        )
        .await;
    client.wait_for_status(&id, "COMPLETED").await;
    assert_eq!(counts(&STARTED, &broken), [1, 2, 1]);
}

async fn monthly_reports_wait_for_their_children(on: On) {
    let server = server(on).await;
    let mut client = server.client().await;
    client.init().await;
    let (id, states) = four_monthly_reports(
        &mut client,
        50,
        "status version progress message waitingFor output { ... on MonthlySummary { months rows url } }",
    )
    .await;
    let versions: Vec<u64> = states
        .iter()
        .map(|s| s["version"].as_u64().unwrap())
        .collect();
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
    let mut statuses: Vec<&str> = states
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    statuses.dedup();
    let waiting = states.iter().find(|s| s["status"] == "WAITING").unwrap();
    assert_eq!(
        waiting["waitingFor"].as_array().unwrap().len(),
        4,
        "{waiting}"
    );
    let seen: Vec<&str> = statuses
        .iter()
        .copied()
        .filter(|s| matches!(*s, "RUNNING" | "WAITING" | "COMPLETED"))
        .collect();
    assert_eq!(
        seen,
        ["RUNNING", "WAITING", "RUNNING", "COMPLETED"],
        "{statuses:?}"
    );
    // While it waits, its message counts the children left, down.
    let left: Vec<u64> = states
        .iter()
        .filter(|s| s["status"] == "WAITING")
        .filter_map(|s| {
            s["message"]
                .as_str()?
                .strip_prefix("waiting for ")?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .collect();
    assert!(!left.is_empty(), "{states:?}");
    assert!(left.windows(2).all(|w| w[0] > w[1]), "{left:?}");
    let last = states.last().unwrap();
    assert_eq!(last["output"]["months"], 4);
    assert_eq!(last["output"]["rows"], 40);
    let done = request(&mut client, &id).await;
    let children = done["children"]["edges"].as_array().unwrap();
    assert_eq!(children.len(), 4, "{done}");
    assert!(children.iter().all(|c| c["node"]["status"] == "COMPLETED"));
}

/// A workflow's children count against its tenant's quota of active requests: past it, the
/// workflow waits, with no worker, and starts the rest when it wakes.
async fn children_count_against_the_tenant_quota(on: On) {
    let server = TestServer::start_app(app(), on, |stack| {
        stack.with_limits(streamer::core::Limits {
            // The workflow and two of its four children.
            max_tenant_active_requests: Some(3),
            ..streamer::core::Limits::default()
        })
    })
    .await;
    let mut client = server.client().await;
    client.init().await;
    let (id, states) = four_monthly_reports(
        &mut client,
        20,
        "status waitingFor wakeAt output { ... on MonthlySummary { months rows } }",
    )
    .await;
    let waits: Vec<(bool, usize)> = states
        .iter()
        .filter(|s| s["status"] == "WAITING")
        .map(|s| {
            (
                !s["wakeAt"].is_null(),
                s["waitingFor"].as_array().map_or(0, Vec::len),
            )
        })
        .collect();
    assert_eq!(
        waits.first(),
        Some(&(true, 0)),
        "it first waits for room, not for children: {states:?}"
    );
    let last = states.last().unwrap();
    assert_eq!(last["status"], "COMPLETED", "{states:?}");
    assert_eq!(last["output"]["months"], 4);
    assert_eq!(last["output"]["rows"], 40);
    let done = request(&mut client, &id).await;
    let children = done["children"]["edges"].as_array().unwrap();
    assert_eq!(children.len(), 4, "{done}");
}

async fn a_child_that_fails_for_good_reaches_its_parent(on: On) {
    let server = server(on).await;
    let mut client = server.client().await;
    client.init().await;
    let handled = enqueue(&mut client, "parent", json!({ "handle": true })).await;
    let unhandled = enqueue(&mut client, "parent", json!({ "handle": false })).await;
    client.wait_for_status(&handled, "COMPLETED").await;
    assert_eq!(
        request(&mut client, &handled).await["output"]["outcome"],
        "handled UPSTREAM_UNAVAILABLE"
    );
    client.wait_for_status(&unhandled, "FAILED").await;
    let failed = request(&mut client, &unhandled).await;
    assert_eq!(failed["error"]["code"], "UPSTREAM_UNAVAILABLE", "{failed}");
}

async fn a_sleep_holds_no_worker(on: On) {
    let server = server(on).await;
    let mut client = server.client().await;
    client.init().await;
    let id = enqueue(&mut client, "nap", json!({ "ms": 2000 })).await;
    client.wait_for_status(&id, "WAITING").await;
    let waiting = request(&mut client, &id).await;
    assert!(waiting["wakeAt"].is_string(), "{waiting}");
    assert_eq!(
        server.workers.running(),
        Vec::<String>::new(),
        "no worker task"
    );
    client.wait_for_status(&id, "COMPLETED").await;
    assert_eq!(request(&mut client, &id).await["output"]["slept"], true);

    // A checkpoint over the size a store keeps: the step fails, clearly.
    let id = enqueue(
        &mut client,
        "nap",
        json!({ "ms": 10, "resultBytes": 300_000 }),
    )
    .await;
    client.wait_for_status(&id, "FAILED").await;
    let failed = request(&mut client, &id).await;
    assert_eq!(failed["error"]["code"], "LIMIT_EXCEEDED", "{failed}");
}

async fn replays_are_checked_and_cancels_cascade(on: On) {
    let server = server(on).await;
    let mut client = server.client().await;
    client.init().await;
    let id = enqueue(&mut client, "fickle", json!({ "n": 1 })).await;
    client.wait_for_status(&id, "FAILED").await;
    let failed = request(&mut client, &id).await;
    assert_eq!(failed["error"]["code"], "NON_DETERMINISTIC", "{failed}");
    let message = failed["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("step:attempt-1") && message.contains("step:attempt-2"),
        "{message}"
    );

    let data = client
        .execute(
            "m",
            "mutation { monthlyReports(input: { from: \"2026-01\", to: \"2026-03\", rows: 10, stepDelayMs: 2000 }) { id } }",
            json!({}),
        )
        .await;
    let id = data["monthlyReports"]["id"].as_str().unwrap().to_owned();
    client.wait_for_status(&id, "WAITING").await;
    client
        .execute(
            "x",
            "mutation($id: ID!) { cancelRequest(id: $id) { status } }",
            json!({ "id": id }),
        )
        .await;
    client.wait_for_status(&id, "CANCELLED").await;
    let cancelled = request(&mut client, &id).await;
    let children = cancelled["children"]["edges"].as_array().unwrap();
    assert_eq!(children.len(), 3);
    for child in children {
        let id = child["node"]["id"].as_str().unwrap();
        client.wait_for_status(id, "CANCELLED").await;
    }
}

/// A cancel that comes while a workflow starts its children: its attempt ends CANCELLED and
/// the worker cancels the children it started, with the indexes 5 s behind (as DynamoDB's
/// may be), so that a listing of the parent's children right then would not find them.
async fn a_cancel_while_children_start_reaches_them(on: On) {
    let server = TestServer::start_app(app(), on, |stack| {
        stack.with_index_lag(Duration::from_secs(5))
    })
    .await;
    let mut client = server.client().await;
    client.init().await;
    let go = key("late", on);
    let id = enqueue(&mut client, "late", json!({ "key": go })).await;
    for attempt in 0.. {
        let data = client
            .execute(
                &format!("r{attempt}"),
                "query($id: ID!) { request(id: $id) { message } }",
                json!({ "id": id }),
            )
            .await;
        if data["request"]["message"] == "ready" {
            break;
        }
        assert!(attempt < 500, "the workflow never got ready: {data}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    client
        .execute(
            "x",
            "mutation($id: ID!) { cancelRequest(id: $id) { status } }",
            json!({ "id": id }),
        )
        .await;
    GO.lock().unwrap().push(go);
    client.wait_for_status(&id, "CANCELLED").await;
    // Call 0 started them: their ids are the parent's, numbered. They run 5 steps of 1 s.
    for child in [format!("{id}.0"), format!("{id}.1")] {
        client.wait_for_status(&child, "CANCELLED").await;
    }
}

on_both_stores!(
    a_cancel_while_children_start_reaches_them,
    steps_outlive_a_deadline_a_crash_and_a_retryable_failure,
    monthly_reports_wait_for_their_children,
    children_count_against_the_tenant_quota,
    a_child_that_fails_for_good_reaches_its_parent,
    a_sleep_holds_no_worker,
    replays_are_checked_and_cancels_cascade,
);

#[derive(Debug)]
struct NoJobs;

#[async_trait::async_trait]
impl streamer::processor::Dispatcher for NoJobs {
    async fn dispatch(&self, _: &streamer::core::AsyncRequest) -> streamer::core::Result<()> {
        Ok(())
    }
}

/// A workflow cancelled while it runs, with children it started and has not waited for yet
/// (a crash or a cancel between starting them and suspending): the processor cancels them.
#[tokio::test]
async fn a_workflow_cancelled_while_running_cancels_its_children() {
    use std::sync::Arc;
    use streamer::core::store::modify_request;
    use streamer::core::{
        AsyncRequest, MemoryStore, ParentLink, RequestStatus, Store, SystemClock,
    };

    let store = Arc::new(MemoryStore::new());
    let mut feed = store.changes();
    let clock = SystemClock;
    let now = chrono::Utc::now();
    store
        .create_request(&AsyncRequest::new(
            "w",
            "parent",
            json!({ "handle": false }),
            now,
        ))
        .await
        .unwrap();
    modify_request(&*store, &clock, "w", |r, now| r.start(now))
        .await
        .unwrap();
    let mut child = AsyncRequest::new("w.10000", "flakyImport", json!({ "failTimes": 0 }), now);
    child.parent = Some(ParentLink {
        id: "w".into(),
        index: 10_000,
    });
    store.create_request(&child).await.unwrap();
    modify_request(&*store, &clock, "w", |r, now| r.cancel(now))
        .await
        .unwrap();
    modify_request(&*store, &clock, "w", |r, now| r.cancelled(now))
        .await
        .unwrap();
    let mut changes = Vec::new();
    while let Ok(change) = feed.try_recv() {
        changes.push(change);
    }
    let services = streamer::schema::Services {
        store: store.clone(),
        clock: Arc::new(SystemClock),
        ids: Arc::new(streamer::core::RandomIds),
        limits: streamer::core::Limits::default(),
        access: streamer::core::Access::default(),
    };
    let processor = streamer::processor::Processor::new(
        streamer::schema::build(app().handlers(), services).unwrap(),
        store.clone(),
        Arc::new(streamer::core::MemorySender::new()),
        Arc::new(NoJobs),
    );
    let outcome = processor.handle_batch(changes).await;
    assert!(outcome.failures.is_empty(), "{outcome:?}");
    let child = store.get_request("w.10000").await.unwrap().unwrap();
    assert_eq!(child.status, RequestStatus::Cancelled);
}
