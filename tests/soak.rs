//! Soak: 1,000 requests whose handler fails at random (retryably and for good) while
//! workers are killed at random mid-job, with index queries 300 ms behind the tables (as
//! DynamoDB's eventually consistent indexes can be), so that the sweeper acts on stale
//! listings; each connection's frames handled concurrently (as API Gateway's separate
//! invocations); and every post going through the local Management API, 5 % of whose calls
//! fail (a 500, or a hang the client gives up on). Every request ends in exactly one terminal state,
//! every subscriber receives that state once, as its last, and no request ever runs twice
//! at the same time.

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use streamer::async_graphql::{InputObject, SimpleObject};
use streamer::core::{Backoff, SystemClock};
use streamer::{Handler, JobContext, JobError};
use support::{Client, On, TestServer};

const CLIENTS: usize = 10;
const PER_CLIENT: usize = 100;

/// Requests whose handler runs now, to catch a second concurrent run.
static RUNNING: LazyLock<Mutex<HashSet<String>>> = LazyLock::new(Mutex::default);
static OVERLAPS: AtomicUsize = AtomicUsize::new(0);

/// Leaves [`RUNNING`] however the run ends, killed included.
struct Running(String);

impl Running {
    fn enter(request_id: &str) -> Self {
        if !RUNNING.lock().unwrap().insert(request_id.to_owned()) {
            OVERLAPS.fetch_add(1, Ordering::SeqCst);
        }
        Self(request_id.to_owned())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING.lock().unwrap().remove(&self.0);
    }
}

#[derive(Debug, InputObject)]
struct ChaosInput {
    seed: i32,
}

#[derive(Debug, SimpleObject, serde::Serialize)]
struct Survived {
    seed: i32,
}

/// Takes a few milliseconds, reports progress, then fails retryably (30 %), fails for good
/// (3 %) or succeeds; the same seed and attempt always decide the same.
#[derive(Debug)]
struct Chaos;

impl Handler for Chaos {
    const ACTION: &'static str = "chaos";
    type Input = ChaosInput;
    type Output = Survived;

    async fn process(&self, input: ChaosInput, job: JobContext) -> Result<Survived, JobError> {
        let _running = Running::enter(job.request_id());
        let mut rng = StdRng::seed_from_u64(
            u64::from(input.seed.unsigned_abs()) * 31 + u64::from(job.attempt()),
        );
        tokio::time::sleep(Duration::from_millis(rng.random_range(5..40))).await;
        job.progress(0.5, "halfway").await?;
        tokio::time::sleep(Duration::from_millis(rng.random_range(5..40))).await;
        let roll: f64 = rng.random();
        if roll < 0.3 {
            Err(JobError::retryable("FLAKY", "failed this time"))
        } else if roll < 0.33 {
            Err(JobError::permanent("BROKEN", "fails every time"))
        } else {
            Ok(Survived { seed: input.seed })
        }
    }

    fn max_attempts(&self) -> u32 {
        4
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(Duration::from_millis(10), Duration::from_millis(100))
    }
}

const FOLLOW: &str =
    "subscription($id: ID!) { requestProgress(id: $id) { id status version attempts } }";

/// Enqueues `PER_CLIENT` chaos requests, subscribes to each, and returns every state each
/// subscription received, by request id, once all have completed.
async fn enqueue_and_follow(client: &mut Client, first_seed: usize) -> HashMap<String, Vec<Value>> {
    for n in 0..PER_CLIENT {
        client
            .send(
                json!({ "id": format!("m{n}"), "type": "subscribe", "payload": {
            "query": "mutation($seed: Int!) { chaos(input: {seed: $seed}) { id } }",
            "variables": { "seed": first_seed + n },
        } }),
            )
            .await;
    }
    let mut ids = HashMap::new();
    let mut answered = 0;
    while answered < PER_CLIENT {
        let frame = client.recv().await;
        match frame["type"].as_str() {
            Some("next") => {
                let id = frame["payload"]["data"]["chaos"]["id"].as_str().unwrap();
                ids.insert(frame["id"].as_str().unwrap().to_owned(), id.to_owned());
            }
            Some("complete") => answered += 1,
            _ => panic!("unexpected frame {frame}"),
        }
    }
    assert_eq!(ids.len(), PER_CLIENT);
    for (operation, id) in &ids {
        let subscription = operation.replacen('m', "s", 1);
        client.send(json!({ "id": subscription, "type": "subscribe", "payload": { "query": FOLLOW, "variables": { "id": id } } })).await;
    }
    let mut states: HashMap<String, Vec<Value>> = HashMap::new();
    let mut completed = 0;
    while completed < PER_CLIENT {
        let frame = client.recv().await;
        let operation = frame["id"].as_str().unwrap_or_default();
        assert!(operation.starts_with('s'), "{frame}");
        let id = &ids[&operation.replacen('s', "m", 1)];
        match frame["type"].as_str() {
            Some("next") => states
                .entry(id.clone())
                .or_default()
                .push(frame["payload"]["data"]["requestProgress"].clone()),
            Some("complete") => completed += 1,
            _ => panic!("unexpected frame {frame}"),
        }
    }
    client.clear();
    states
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_requests_through_failures_and_kills_each_end_once() {
    let app = streamer::App::new().register(Chaos);
    let server = TestServer::start_app(app, On::ManagementApi, |stack| {
        stack
            .with_clock(Arc::new(SystemClock))
            .with_job_concurrency(16)
            .with_lease(Duration::from_millis(300))
            .with_sweep_every(Duration::from_millis(50))
            // A worker killed before its claim leaves the request QUEUED: the sweeper
            // dispatches it again after this grace.
            .with_queued_grace(Duration::from_secs(1))
            .with_index_lag(Duration::from_millis(300))
            .with_concurrent_frames()
            .with_management_faults(0.05)
    })
    .await;
    // Kills a running job now and then until told to stop.
    let workers = server.workers.clone();
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let killer = tokio::spawn(async move {
        let mut rng = StdRng::seed_from_u64(7);
        let mut kills = 0usize;
        loop {
            tokio::select! {
                _ = &mut stopped => return kills,
                () = tokio::time::sleep(Duration::from_millis(15)) => {}
            }
            let running = workers.running();
            if !running.is_empty() && rng.random_bool(0.5) {
                let victim = &running[rng.random_range(0..running.len())];
                kills += usize::from(workers.kill(victim));
            }
        }
    });
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let mut client = server.client().await;
        client.init().await;
        clients.push(client);
    }
    let followed = futures::future::join_all(
        clients
            .iter_mut()
            .enumerate()
            .map(|(n, client)| enqueue_and_follow(client, n * PER_CLIENT)),
    )
    .await;
    let _ = stop.send(());
    let kills = killer.await.unwrap();

    let mut outcomes: HashMap<String, usize> = HashMap::new();
    let mut retried = 0;
    let mut requests = 0;
    for states in followed {
        for (id, states) in states {
            requests += 1;
            let terminal: Vec<&Value> = states
                .iter()
                .filter(|s| {
                    matches!(
                        s["status"].as_str(),
                        Some("COMPLETED" | "FAILED" | "CANCELLED")
                    )
                })
                .collect();
            assert_eq!(terminal.len(), 1, "{id}: one terminal state: {states:?}");
            assert_eq!(terminal[0], states.last().unwrap(), "{id}: it comes last");
            let versions: Vec<u64> = states
                .iter()
                .map(|s| s["version"].as_u64().unwrap())
                .collect();
            assert!(
                versions.windows(2).all(|w| w[0] < w[1]),
                "{id}: {versions:?}"
            );
            let stored = server.store.get_request(&id).await.unwrap().unwrap();
            assert_eq!(
                (stored.status.as_str(), stored.version),
                (
                    terminal[0]["status"].as_str().unwrap(),
                    terminal[0]["version"].as_u64().unwrap()
                ),
                "{id}: the store holds what the subscriber got last"
            );
            retried += usize::from(stored.attempts > 1);
            *outcomes.entry(stored.status.to_string()).or_default() += 1;
        }
    }
    assert_eq!(requests, CLIENTS * PER_CLIENT);
    assert_eq!(
        OVERLAPS.load(Ordering::SeqCst),
        0,
        "no request ran twice at once"
    );
    // The faults did happen.
    assert!(kills >= 10, "{kills} kills");
    assert!(
        retried >= 100,
        "{retried} requests took more than one attempt"
    );
    assert!(
        outcomes.get("COMPLETED").is_some_and(|&n| n > 800),
        "{outcomes:?}"
    );
    assert!(
        outcomes.get("FAILED").is_some_and(|&n| n > 0),
        "{outcomes:?}"
    );
    eprintln!("{requests} requests, {kills} kills, {retried} retried, {outcomes:?}");
}
