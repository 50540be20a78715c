//! The test kit on the example app's handlers: each fault it injects takes effect.

use report_handlers as handlers;

use std::time::{Duration, Instant};

use handlers::{FlakyImport, FlakyImportInput, GenerateReport, GenerateReportInput};
use streamer::RequestStatus;
use streamer::testing::{AppTest, HandlerTest, RequestState};

fn report(step_delay_ms: i32) -> GenerateReportInput {
    GenerateReportInput {
        from: "2026-01-01".into(),
        to: "2026-01-31".into(),
        rows: Some(10),
        step_delay_ms: Some(step_delay_ms),
    }
}

#[tokio::test]
async fn a_run_records_every_report_in_order_and_the_typed_output() {
    let run = HandlerTest::new(GenerateReport).run(report(1)).await;
    let fractions: Vec<f64> = run.reports.iter().map(|r| r.progress).collect();
    assert_eq!(fractions, [0.25, 0.5, 0.75, 0.95]);
    assert_eq!(
        run.messages()[1..],
        ["aggregating", "rendering", "uploading"]
    );
    let output = run.outcome.unwrap();
    assert_eq!(output.rows, 10);
    assert!(
        output.url.ends_with("2026-01-01-2026-01-31.csv"),
        "{}",
        output.url
    );
}

#[tokio::test]
async fn the_attempt_number_reaches_the_handler() {
    let input = || FlakyImportInput { fail_times: 2 };
    for attempt in [1, 2] {
        let failed = HandlerTest::new(FlakyImport)
            .attempt(attempt)
            .run(input())
            .await;
        assert_eq!(failed.messages(), [format!("attempt {attempt}")]);
        let error = failed.outcome.unwrap_err();
        assert!(error.retryable, "{error:?}");
        assert_eq!(error.code, "UPSTREAM_UNAVAILABLE");
    }
    let third = HandlerTest::new(FlakyImport).attempt(3).run(input()).await;
    assert_eq!(third.outcome.unwrap().imported, 42);
}

#[tokio::test]
async fn a_cancel_reaches_a_waiting_handler_at_once() {
    let started = Instant::now();
    // A minute between steps: the handler waits on `JobContext::cancelled` as well.
    let run = HandlerTest::new(GenerateReport)
        .cancel_after_reports(0)
        .run(report(60_000))
        .await;
    assert!(run.outcome.unwrap_err().is_cancellation());
    assert!(run.reports.is_empty());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let after_one = HandlerTest::new(GenerateReport)
        .cancel_after_reports(1)
        .run(report(1))
        .await;
    assert_eq!(after_one.reports.len(), 1);
    assert!(after_one.outcome.unwrap_err().is_cancellation());
}

#[tokio::test(start_paused = true)]
async fn an_attempt_past_its_time_limit_is_stopped_retryably() {
    let run = HandlerTest::new(GenerateReport)
        .with_time_limit(Duration::from_secs(90))
        .run(report(60_000))
        .await;
    let error = run.outcome.unwrap_err();
    assert_eq!(error.code, "DEADLINE_EXCEEDED");
    assert!(error.retryable);
    assert_eq!(run.reports.len(), 1, "one step done in 90 s");
}

fn statuses(states: &[RequestState]) -> Vec<RequestStatus> {
    states.iter().map(|state| state.status).collect()
}

#[tokio::test]
async fn a_whole_app_runs_in_process_from_enqueue_to_the_typed_output() {
    let app = AppTest::start(handlers::app());
    let id = app.enqueue::<GenerateReport>(report(5)).await.unwrap();
    let states = app.follow(&id).await;
    let seen = statuses(&states);
    assert_eq!(seen.first(), Some(&RequestStatus::Queued));
    assert!(seen.contains(&RequestStatus::Running), "{seen:?}");
    assert_eq!(seen.last(), Some(&RequestStatus::Completed));
    assert!(
        states.windows(2).all(|w| w[0].version < w[1].version),
        "{states:?}"
    );
    let output = states.last().unwrap().output.clone().unwrap();
    assert_eq!(output["rows"], 10, "{output}");
    // Input the handler refuses ends FAILED, with its code.
    let mut bad = report(5);
    bad.rows = Some(-1);
    let id = app.enqueue::<GenerateReport>(bad).await.unwrap();
    let last = app.follow(&id).await.pop().unwrap();
    assert_eq!(
        (last.status, last.error_code.as_deref()),
        (RequestStatus::Failed, Some("BAD_INPUT"))
    );
}

#[tokio::test]
async fn injected_failures_are_retried_until_the_budget_is_spent() {
    let app = AppTest::start_with(handlers::app(), |stack| stack);
    app.fail_next_attempts::<FlakyImport>(2);
    let id = app
        .enqueue::<FlakyImport>(FlakyImportInput { fail_times: 0 })
        .await
        .unwrap();
    let states = app.follow(&id).await;
    let retries: Vec<&RequestState> = states
        .iter()
        .filter(|s| s.status == RequestStatus::Retrying)
        .collect();
    assert_eq!(retries.len(), 2, "{states:?}");
    assert!(
        retries
            .iter()
            .all(|s| s.error_code.as_deref() == Some("INJECTED_FAILURE"))
    );
    let last = states.last().unwrap();
    assert_eq!((last.status, last.attempts), (RequestStatus::Completed, 3));

    // Past the budget (five attempts) the request fails for good.
    app.fail_next_attempts::<FlakyImport>(5);
    let id = app
        .enqueue::<FlakyImport>(FlakyImportInput { fail_times: 0 })
        .await
        .unwrap();
    let last = app.follow(&id).await.pop().unwrap();
    assert_eq!(
        (last.status, last.attempts, last.error_code.as_deref()),
        (RequestStatus::Failed, 5, Some("INJECTED_FAILURE"))
    );
}

#[tokio::test]
async fn a_cancel_through_the_api_stops_a_running_job() {
    let app = AppTest::start(handlers::app());
    let id = app.enqueue::<GenerateReport>(report(10_000)).await.unwrap();
    app.wait_for(&id, |s| s.status == RequestStatus::Running)
        .await;
    app.cancel(&id).await.unwrap();
    let states = app.follow(&id).await;
    assert_eq!(states.last().unwrap().status, RequestStatus::Cancelled);
    assert!(app.cancel("no-such-request").await.is_err());
}

#[tokio::test]
async fn the_manual_clock_holds_a_retry_and_a_killed_worker_s_lease_until_it_moves() {
    let app = AppTest::with_manual_clock(handlers::app());

    // A retry waits out its backoff by the manual clock.
    let id = app
        .enqueue::<FlakyImport>(FlakyImportInput { fail_times: 1 })
        .await
        .unwrap();
    app.wait_for(&id, |s| s.status == RequestStatus::Retrying)
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        app.state(&id).await.unwrap().status,
        RequestStatus::Retrying,
        "not due while the clock stands still"
    );
    app.advance(Duration::from_secs(120));
    let last = app.follow(&id).await.pop().unwrap();
    assert_eq!((last.status, last.attempts), (RequestStatus::Completed, 2));

    // A killed worker's request runs again once its lease has passed by the clock.
    let id = app.enqueue::<GenerateReport>(report(200)).await.unwrap();
    app.wait_for(&id, |s| s.status == RequestStatus::Running)
        .await;
    assert!(app.kill_worker(&id));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let held = app.state(&id).await.unwrap();
    assert_eq!((held.status, held.attempts), (RequestStatus::Running, 1));
    app.advance(Duration::from_secs(31));
    let last = app.follow(&id).await.pop().unwrap();
    assert_eq!((last.status, last.attempts), (RequestStatus::Completed, 2));
}

/// Runs of one `HandlerTest` share their checkpoints: a workflow's second attempt replays
/// the steps the first one finished.
#[tokio::test]
async fn a_workflow_s_steps_replay_from_one_run_to_the_next() {
    use std::sync::atomic::{AtomicU32, Ordering};
    use streamer::async_graphql::{InputObject, SimpleObject};
    use streamer::{Handler, JobContext, JobError};

    static PLANNED: AtomicU32 = AtomicU32::new(0);

    #[derive(InputObject)]
    struct PlanInput {
        items: i32,
    }

    #[derive(Debug, SimpleObject, serde::Serialize)]
    struct Planned {
        items: i32,
    }

    struct Plan;

    impl Handler for Plan {
        const ACTION: &'static str = "plan";
        type Input = PlanInput;
        type Output = Planned;

        async fn process(&self, input: PlanInput, job: JobContext) -> Result<Planned, JobError> {
            let items = job
                .step("plan", || async {
                    PLANNED.fetch_add(1, Ordering::Relaxed);
                    Ok(input.items)
                })
                .await?;
            job.step("publish", || async {
                if job.attempt() == 1 {
                    return Err(JobError::retryable("UNAVAILABLE", "try again"));
                }
                Ok(())
            })
            .await?;
            Ok(Planned { items })
        }
    }

    let test = HandlerTest::new(Plan);
    let first = test.run(PlanInput { items: 3 }).await;
    assert_eq!(first.outcome.unwrap_err().code, "UNAVAILABLE");
    let second = test.attempt(2);
    let run = second.run(PlanInput { items: 3 }).await;
    assert_eq!(run.outcome.unwrap().items, 3);
    assert_eq!(PLANNED.load(Ordering::Relaxed), 1, "planned once");
}

/// A durable call that would start more than 1,000 children fails `LIMIT_EXCEEDED` and
/// starts none of them.
#[tokio::test]
async fn a_call_of_over_a_thousand_children_is_refused() {
    use streamer::async_graphql::{InputObject, SimpleObject};
    use streamer::{Handler, JobContext, JobError};

    #[derive(InputObject)]
    struct FanInput {
        children: i32,
    }

    #[derive(Debug, SimpleObject, serde::Serialize, serde::Deserialize)]
    struct Fanned {
        children: i32,
    }

    struct Fan;

    impl Handler for Fan {
        const ACTION: &'static str = "fan";
        type Input = FanInput;
        type Output = Fanned;

        async fn process(&self, input: FanInput, job: JobContext) -> Result<Fanned, JobError> {
            let outputs = job
                .children::<Fan>((0..input.children).map(|_| FanInput { children: 0 }))
                .await?;
            Ok(Fanned {
                children: outputs.len() as i32,
            })
        }
    }

    let test = HandlerTest::new(Fan);
    let run = test.run(FanInput { children: 1_001 }).await;
    let error = run.outcome.unwrap_err();
    assert_eq!(error.code, "LIMIT_EXCEEDED", "{error:?}");
    assert!(error.message.contains("1000"), "{}", error.message);
    assert!(!error.retryable);
}
