//! Retries as a subscriber sees them: `flakyImport` failing twice goes RETRYING with attempts 1
//! and 2, then COMPLETED with attempts 3 (a transcript); each wait between attempts stays
//! within its full-jitter ceiling (200 ms, then 400 ms), give or take the push itself.

mod support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use streamer::processor::JOB_BACKOFF;
use support::TestServer;

#[tokio::test]
async fn flaky_import_retries_within_the_backoff_bounds() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    client.init().await;
    let id = client.flaky_import("m", 2).await;
    client.clear();
    // afterVersion 0: every state, from the history, however late this arrives.
    let follow = "subscription($id: ID!) { requestProgress(id: $id, afterVersion: 0) { status attempts version message nextAttemptAt error { code message retryable } output { ... on ImportSummary { imported } } } }";
    client.send(json!({ "id": "s", "type": "subscribe", "payload": { "query": follow, "variables": { "id": id } } })).await;
    let mut arrivals: Vec<(tokio::time::Instant, Value)> = Vec::new();
    loop {
        let frame = client.recv().await;
        assert_ne!(frame["type"], "error", "{frame}");
        if frame["type"] == "complete" {
            break;
        }
        arrivals.push((
            tokio::time::Instant::now(),
            frame["payload"]["data"]["requestProgress"].clone(),
        ));
    }
    let states: Vec<&Value> = arrivals.iter().map(|(_, s)| s).collect();
    let retrying: Vec<&Value> = states
        .iter()
        .copied()
        .filter(|s| s["status"] == "RETRYING")
        .collect();
    assert_eq!(
        retrying
            .iter()
            .map(|s| s["attempts"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [1, 2]
    );
    let last = states.last().unwrap();
    assert_eq!(
        (last["status"].as_str(), last["attempts"].as_u64()),
        (Some("COMPLETED"), Some(3))
    );
    // The wait after RETRYING(n) until RUNNING(n + 1) is the backoff of attempt n.
    for attempt in 1..=2u64 {
        let retried = arrivals
            .iter()
            .position(|(_, s)| s["status"] == "RETRYING" && s["attempts"] == attempt)
            .unwrap();
        let resumed = arrivals
            .iter()
            .position(|(_, s)| s["status"] == "RUNNING" && s["attempts"] == attempt + 1)
            .unwrap();
        let waited = arrivals[resumed].0 - arrivals[retried].0;
        let ceiling = JOB_BACKOFF.ceiling(u32::try_from(attempt).unwrap());
        assert!(
            waited <= ceiling + Duration::from_millis(100),
            "attempt {attempt}: waited {waited:?}, ceiling {ceiling:?}"
        );
    }
    // The due time carries the random jitter: only whether it is set is kept.
    insta::assert_json_snapshot!("flaky_import_transcript", client.transcript, {
        "[].server.payload.data.requestProgress.nextAttemptAt" => insta::dynamic_redaction(|value, _| {
            if value.is_nil() { value } else { "[due]".into() }
        })
    });
}

/// A clock that reads tokio's, so that paused time moves it too.
#[derive(Debug)]
struct TokioClock {
    start: chrono::DateTime<chrono::Utc>,
    base: tokio::time::Instant,
}

impl streamer::core::Clock for TokioClock {
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.start + (tokio::time::Instant::now() - self.base)
    }
}

/// With paused time the waits are exact: each RETRYING state's next attempt is due within
/// its full-jitter ceiling, and the next attempt starts when it is due, not before. Twenty
/// jobs, three failures each: the delays drawn differ.
#[tokio::test(start_paused = true)]
async fn backoff_delays_stay_within_the_jitter_bounds_in_paused_time() {
    use streamer::core::{AsyncRequest, MemoryStore, RequestStatus, Store};
    use streamer::processor::{Dispatcher, TaskDispatcher, Worker};

    let store = Arc::new(MemoryStore::new());
    let mut changes = store.changes();
    let clock = Arc::new(TokioClock {
        start: chrono::Utc::now(),
        base: tokio::time::Instant::now(),
    });
    let worker = Worker::new(
        store.clone(),
        clock.clone(),
        support::handlers::app().handlers(),
    );
    let workers = TaskDispatcher::new(worker, 64);
    let jobs = 20;
    for n in 0..jobs {
        let request = AsyncRequest::new(
            format!("r{n}"),
            "flakyImport",
            json!({ "failTimes": 3 }),
            streamer::core::Clock::now(&*clock),
        );
        store.create_request(&request).await.unwrap();
        workers.dispatch(&request).await.unwrap();
    }
    let mut images: Vec<AsyncRequest> = Vec::new();
    let mut done = 0;
    while done < jobs {
        let change = changes.recv().await.expect("the feed stays open");
        let image = AsyncRequest::clone(&change.new.expect("no deletes"));
        done += usize::from(image.status.is_terminal());
        images.push(image);
    }
    let mut delays = Vec::new();
    for n in 0..jobs {
        let id = format!("r{n}");
        let states: Vec<&AsyncRequest> = images.iter().filter(|r| r.id == id).collect();
        let last = states.last().unwrap();
        assert_eq!((last.status, last.attempts), (RequestStatus::Completed, 4));
        for attempt in 1..=3u32 {
            let retrying = states
                .iter()
                .find(|r| r.status == RequestStatus::Retrying && r.attempts == attempt)
                .unwrap();
            let due = retrying.next_attempt_at.expect("a due time while RETRYING");
            let delay = (due - retrying.updated_at).to_std().expect("due after now");
            let ceiling = JOB_BACKOFF.ceiling(attempt);
            assert!(
                delay <= ceiling,
                "{id} attempt {attempt}: {delay:?} over {ceiling:?}"
            );
            let resumed = states
                .iter()
                .find(|r| r.status == RequestStatus::Running && r.attempts == attempt + 1)
                .unwrap();
            let late = (resumed.updated_at - due)
                .to_std()
                .expect("the next attempt does not start before it is due");
            assert!(
                late <= Duration::from_millis(5),
                "{id} attempt {}: started {late:?} after it was due",
                attempt + 1
            );
            delays.push(delay);
        }
    }
    delays.sort();
    delays.dedup();
    assert!(delays.len() > jobs, "jitter: {delays:?}");
}
