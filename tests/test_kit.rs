//! The test kit on the example app's handlers: each fault it injects takes effect.

#[path = "../examples/report/handlers.rs"]
#[allow(dead_code)]
mod handlers;

use std::time::{Duration, Instant};

use handlers::{FlakyImport, FlakyImportInput, GenerateReport, GenerateReportInput};
use streamer::testing::HandlerTest;

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
