//! Fault injection: a worker killed mid-job (its task aborted) stops renewing its lease; once
//! the lease has passed, the sweep dispatches the job again, a new attempt claims it, and the
//! subscriber receives the final result. The killed attempt never writes again.

mod support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use streamer::core::SystemClock;
use support::{On, PROGRESS, TestServer};

/// A stack whose leases last 300 ms and whose sweeper runs every 50 ms, and a client of it.
async fn short_leases(on: On) -> (TestServer, support::Client) {
    let server = TestServer::start_tuned(on, |stack| {
        stack
            .with_clock(Arc::new(SystemClock))
            .with_lease(Duration::from_millis(300))
            .with_sweep_every(Duration::from_millis(50))
    })
    .await;
    let mut client = server.client().await;
    client.init().await;
    (server, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_s_job_runs_again_after_its_lease() {
    let (server, mut client) = short_leases(On::Embedded).await;
    // Four steps of 150 ms.
    let id = client.generate_report("m", 150).await;
    client.send(json!({ "id": "s", "type": "subscribe", "payload": { "query": PROGRESS, "variables": { "id": id } } })).await;
    // Kill the worker once its handler has reported progress.
    loop {
        let frame = client.recv().await;
        let state = &frame["payload"]["data"]["requestProgress"];
        if state["status"] == "RUNNING" && state["message"].is_string() {
            assert_eq!(state["attempts"], 1);
            break;
        }
    }
    assert!(server.workers.kill(&id), "the job was running in a task");
    let frames = client.until_done("s").await;
    let states = support::states(&frames);
    let attempts: Vec<u64> = states
        .iter()
        .map(|s| s["attempts"].as_u64().unwrap())
        .collect();
    let versions: Vec<u64> = states
        .iter()
        .map(|s| s["version"].as_u64().unwrap())
        .collect();
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
    // Nothing from the killed attempt after the new one started: no concurrent runs.
    assert!(attempts.windows(2).all(|w| w[0] <= w[1]), "{attempts:?}");
    let last = states.last().unwrap();
    assert_eq!(last["status"], "COMPLETED");
    assert_eq!(
        last["attempts"], 2,
        "the second attempt finished it: {attempts:?}"
    );
    assert_eq!(last["output"]["__typename"], "Report");
}

/// A job whose worker dies on every attempt (as one killed by running out of memory or
/// time would) ends FAILED with `WORKER_LOST` once its attempts are spent, instead of
/// running forever; a client may retry it.
async fn a_job_whose_worker_always_dies_fails_worker_lost(on: On) {
    let (server, mut client) = short_leases(on).await;
    // Steps of 100 ms; the running attempt is killed now, each later one 150 ms in.
    let id = client.generate_report("m", 100).await;
    server
        .workers
        .kill_every_attempt(&id, Duration::from_millis(150));
    client.send(json!({ "id": "s", "type": "subscribe", "payload": { "query": PROGRESS, "variables": { "id": id } } })).await;
    let frames = client.until_done("s").await;
    let states = support::states(&frames);
    let last = states.last().unwrap();
    assert_eq!(last["status"], "FAILED", "{states:?}");
    assert_eq!(last["error"]["code"], "WORKER_LOST");
    assert_eq!(last["error"]["retryable"], true);
    // generateReport has the default budget: three attempts, all lost.
    assert_eq!(last["attempts"], 3);
    let stored = server.store.get_request(&id).await.unwrap().unwrap();
    assert_eq!((stored.status.as_str(), stored.attempts), ("FAILED", 3));
}

on_both_stores!(a_job_whose_worker_always_dies_fails_worker_lost);
