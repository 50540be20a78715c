//! The example app's handlers: a report that takes a while, and an import that fails a few
//! times before it succeeds.

use std::time::Duration;

use streamer::async_graphql::{InputObject, SimpleObject};
use streamer::{Handler, JobContext, JobError};

/// What report to generate.
#[derive(Debug, InputObject)]
#[graphql(crate = "streamer::async_graphql")]
pub struct GenerateReportInput {
    /// First day, inclusive.
    pub from: String,
    /// Last day, inclusive.
    pub to: String,
    /// How many rows to aggregate.
    #[graphql(default = 1000)]
    pub rows: Option<i32>,
    /// How long each step takes, in milliseconds.
    #[graphql(default = 300)]
    pub step_delay_ms: Option<i32>,
}

/// A generated report.
#[derive(Debug, SimpleObject, serde::Serialize)]
#[graphql(crate = "streamer::async_graphql")]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Where to download it.
    pub url: String,
    /// Rows it holds.
    pub rows: i32,
    /// Its size.
    pub size_bytes: i32,
}

/// Generates a report in four steps, reporting each.
#[derive(Debug)]
pub struct GenerateReport;

/// The largest report, and the longest pause between its steps (a minute): a client cannot
/// hold a job slot for longer than five of them.
const MAX_ROWS: i32 = 1_000_000;
const MAX_STEP_DELAY_MS: i32 = 60_000;

/// Waits `step`, or stops at once when the request is cancelled.
async fn pause(job: &JobContext, step: Duration) -> Result<(), JobError> {
    tokio::select! {
        () = tokio::time::sleep(step) => Ok(()),
        () = job.cancelled() => Err(JobError::cancelled()),
    }
}

impl Handler for GenerateReport {
    const ACTION: &'static str = "generateReport";
    type Input = GenerateReportInput;
    type Output = Report;

    async fn process(
        &self,
        input: GenerateReportInput,
        job: JobContext,
    ) -> Result<Report, JobError> {
        let rows = input.rows.unwrap_or(1000);
        let step_delay_ms = input.step_delay_ms.unwrap_or(300);
        if !(0..=MAX_ROWS).contains(&rows) || !(0..=MAX_STEP_DELAY_MS).contains(&step_delay_ms) {
            return Err(JobError::permanent(
                "BAD_INPUT",
                format!("rows is 0 to {MAX_ROWS} and stepDelayMs 0 to {MAX_STEP_DELAY_MS}"),
            ));
        }
        let step = Duration::from_millis(step_delay_ms as u64);
        let steps = [
            (
                0.25,
                format!("querying {rows} rows from {} to {}", input.from, input.to),
            ),
            (0.5, "aggregating".to_owned()),
            (0.75, "rendering".to_owned()),
            (0.95, "uploading".to_owned()),
        ];
        for (fraction, message) in steps {
            pause(&job, step).await?;
            job.progress(fraction, message).await?;
        }
        pause(&job, step).await?;
        Ok(Report {
            url: format!(
                "https://reports.example.com/{}/{}-{}.csv",
                job.request_id(),
                input.from,
                input.to
            ),
            rows,
            size_bytes: rows.saturating_mul(64),
        })
    }
}

/// How many times the import fails before it succeeds.
#[derive(Debug, InputObject)]
#[graphql(crate = "streamer::async_graphql")]
pub struct FlakyImportInput {
    /// Retryable failures before success.
    pub fail_times: i32,
}

/// What an import brought in.
#[derive(Debug, SimpleObject, serde::Serialize)]
#[graphql(crate = "streamer::async_graphql")]
#[serde(rename_all = "camelCase")]
pub struct ImportSummary {
    /// Records imported.
    pub imported: i32,
}

/// An import against an upstream that fails `failTimes` times (retryably) first.
#[derive(Debug)]
pub struct FlakyImport;

impl Handler for FlakyImport {
    const ACTION: &'static str = "flakyImport";
    type Input = FlakyImportInput;
    type Output = ImportSummary;

    async fn process(
        &self,
        input: FlakyImportInput,
        job: JobContext,
    ) -> Result<ImportSummary, JobError> {
        // Reaching the upstream takes a moment.
        tokio::time::sleep(Duration::from_millis(100)).await;
        job.progress(0.1, format!("attempt {}", job.attempt()))
            .await?;
        if i64::from(job.attempt()) <= i64::from(input.fail_times) {
            return Err(JobError::retryable(
                "UPSTREAM_UNAVAILABLE",
                format!("upstream refused attempt {}", job.attempt()),
            ));
        }
        job.progress(0.9, "importing").await?;
        Ok(ImportSummary { imported: 42 })
    }

    fn max_attempts(&self) -> u32 {
        5
    }
}

/// The example app.
pub fn app() -> streamer::App {
    streamer::App::new()
        .register(GenerateReport)
        .register(FlakyImport)
}
