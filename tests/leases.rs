//! Fault injection: a worker killed mid-job (its task aborted) stops renewing its lease; once
//! the lease has passed, the sweep dispatches the job again, a new attempt claims it, and the
//! subscriber receives the final result. The killed attempt never writes again.

mod support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use streamer::core::SystemClock;
use support::{On, PROGRESS, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_s_job_runs_again_after_its_lease() {
    let server = TestServer::start_tuned(On::Embedded, |stack| {
        stack
            .with_clock(Arc::new(SystemClock))
            .with_lease(Duration::from_millis(300))
            .with_sweep_every(Duration::from_millis(50))
    })
    .await;
    let mut client = server.client().await;
    client.init().await;
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
