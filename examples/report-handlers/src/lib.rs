//! The example app's handlers: a report that takes a while, an import that fails a few
//! times before it succeeds, and a workflow that runs a report per month and merges them.

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
#[derive(Debug, SimpleObject, serde::Serialize, serde::Deserialize)]
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
#[derive(Debug, SimpleObject, serde::Serialize, serde::Deserialize)]
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

/// Which months to report on.
#[derive(Debug, InputObject)]
#[graphql(crate = "streamer::async_graphql")]
pub struct MonthlyReportsInput {
    /// First month, `YYYY-MM`.
    pub from: String,
    /// Last month, inclusive, `YYYY-MM`.
    pub to: String,
    /// Rows of each month's report.
    #[graphql(default = 1000)]
    pub rows: Option<i32>,
    /// How long each step of each month's report takes, in milliseconds.
    #[graphql(default = 300)]
    pub step_delay_ms: Option<i32>,
}

/// The months' reports, merged.
#[derive(Debug, SimpleObject, serde::Serialize, serde::Deserialize)]
#[graphql(crate = "streamer::async_graphql")]
#[serde(rename_all = "camelCase")]
pub struct MonthlySummary {
    /// Where to download the merged report.
    pub url: String,
    /// The months in it.
    pub months: i32,
    /// Its rows, every month's together.
    pub rows: i32,
}

/// A durable workflow: plans the months, runs one `generateReport` child per month in
/// parallel (waiting for them costs no worker), then merges their reports in a step.
#[derive(Debug)]
pub struct MonthlyReports;

/// The most months one workflow covers.
const MAX_MONTHS: usize = 24;

/// The months from `from` to `to` (`YYYY-MM`, inclusive).
fn months(from: &str, to: &str) -> Result<Vec<(i32, u32)>, JobError> {
    let parse = |month: &str| {
        let (year, month) = month.split_once('-')?;
        let (year, month) = (year.parse::<i32>().ok()?, month.parse::<u32>().ok()?);
        (1..=12).contains(&month).then_some((year, month))
    };
    let bad = || JobError::permanent("BAD_INPUT", "months are YYYY-MM, `from` up to `to`");
    let (mut at, end) = (parse(from).ok_or_else(bad)?, parse(to).ok_or_else(bad)?);
    let mut months = Vec::new();
    while at <= end {
        if months.len() == MAX_MONTHS {
            return Err(JobError::permanent(
                "BAD_INPUT",
                format!("at most {MAX_MONTHS} months"),
            ));
        }
        months.push(at);
        at = if at.1 == 12 {
            (at.0 + 1, 1)
        } else {
            (at.0, at.1 + 1)
        };
    }
    if months.is_empty() {
        return Err(bad());
    }
    Ok(months)
}

/// The last day of a month.
fn last_day(year: i32, month: u32) -> u32 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

impl Handler for MonthlyReports {
    const ACTION: &'static str = "monthlyReports";
    type Input = MonthlyReportsInput;
    type Output = MonthlySummary;

    async fn process(
        &self,
        input: MonthlyReportsInput,
        job: JobContext,
    ) -> Result<MonthlySummary, JobError> {
        let planned = job
            .step("plan", || async { months(&input.from, &input.to) })
            .await?;
        job.progress(0.1, format!("{} months planned", planned.len()))
            .await?;
        let reports = job
            .children::<GenerateReport>(planned.iter().map(|&(year, month)| GenerateReportInput {
                from: format!("{year}-{month:02}-01"),
                to: format!("{year}-{month:02}-{:02}", last_day(year, month)),
                rows: input.rows,
                step_delay_ms: input.step_delay_ms,
            }))
            .await?;
        job.progress(0.9, format!("merging {} reports", reports.len()))
            .await?;
        let merged = job
            .step("merge", || async {
                let rows = reports.iter().map(|report| report.rows).sum::<i32>();
                Ok(MonthlySummary {
                    url: format!(
                        "https://reports.example.com/{}/{}-{}.csv",
                        job.request_id(),
                        input.from,
                        input.to
                    ),
                    months: reports.len() as i32,
                    rows,
                })
            })
            .await?;
        job.progress(1.0, "published").await?;
        Ok(merged)
    }
}

/// The example app.
pub fn app() -> streamer::App {
    streamer::App::new()
        .register(GenerateReport)
        .register(FlakyImport)
        .register(MonthlyReports)
}
