//! The test kit (feature `testing`): run a handler as a worker would, without a store or a
//! server, and read what it reported.
//!
//! [`HandlerTest`] runs one attempt of a [`Handler`] with a typed input and records every
//! progress report; it can play a client that cancels after some reports, give the attempt
//! a time limit (as Lambda's, which [`JobContext::remaining`] reads), and say which attempt
//! this is (a handler that behaves differently on a retry).
//!
//! ```
//! use streamer::async_graphql::{InputObject, SimpleObject};
//! use streamer::testing::HandlerTest;
//! use streamer::{Handler, JobContext, JobError};
//!
//! #[derive(InputObject)]
//! struct CountInput { to: i32 }
//!
//! #[derive(Debug, SimpleObject, serde::Serialize)]
//! struct Counted { total: i32 }
//!
//! struct Count;
//!
//! impl Handler for Count {
//!     const ACTION: &'static str = "count";
//!     type Input = CountInput;
//!     type Output = Counted;
//!
//!     async fn process(&self, input: CountInput, job: JobContext) -> Result<Counted, JobError> {
//!         for n in 1..=input.to {
//!             job.progress(f64::from(n) / f64::from(input.to), format!("{n}")).await?;
//!         }
//!         Ok(Counted { total: input.to })
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let run = HandlerTest::new(Count).run(CountInput { to: 4 }).await;
//! assert_eq!(run.messages(), ["1", "2", "3", "4"]);
//! assert_eq!(run.outcome.unwrap().total, 4);
//!
//! // A client cancels after the second report: the third one errs, and `?` stops the job.
//! let cancelled = HandlerTest::new(Count)
//!     .cancel_after_reports(2)
//!     .run(CountInput { to: 4 })
//!     .await;
//! assert_eq!(cancelled.messages(), ["1", "2"]);
//! assert!(cancelled.outcome.unwrap_err().is_cancellation());
//! # }
//! ```

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use streamer_schema::{Handler, JobContext, JobError, ProgressSink};

/// One progress report, as the handler made it.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The fraction reported (the worker clamps it to 0.0..=1.0 and never moves it back).
    pub progress: f64,
    /// The message.
    pub message: Option<String>,
}

/// What one attempt did: its reports, in order, and how it ended.
#[derive(Debug)]
pub struct HandlerRun<O> {
    /// Every report the handler made that was taken (a report after a cancel errs and is
    /// not recorded).
    pub reports: Vec<Report>,
    /// The handler's output, or its error: a handler that stops on a cancel returns
    /// [`JobError::cancelled`] (one that ignores it runs to its end here, where the worker
    /// would drop it after its grace period); one that runs past its time limit is stopped
    /// with a retryable `DEADLINE_EXCEEDED`.
    pub outcome: Result<O, JobError>,
}

impl<O> HandlerRun<O> {
    /// The reports' messages, in order.
    pub fn messages(&self) -> Vec<&str> {
        self.reports
            .iter()
            .filter_map(|r| r.message.as_deref())
            .collect()
    }
}

/// Runs one attempt of a handler; see the [module](self).
#[derive(Debug)]
pub struct HandlerTest<H> {
    handler: H,
    attempt: u32,
    cancel_after: Option<usize>,
    time_limit: Option<Duration>,
}

impl<H: Handler> HandlerTest<H> {
    /// The first attempt of `handler`, never cancelled, with no time limit.
    pub fn new(handler: H) -> Self {
        Self {
            handler,
            attempt: 1,
            cancel_after: None,
            time_limit: None,
        }
    }

    /// Runs attempt number `attempt` (1-based) instead of the first.
    #[must_use]
    pub fn attempt(mut self, attempt: u32) -> Self {
        self.attempt = attempt.max(1);
        self
    }

    /// A client cancels once the handler has made `reports` progress reports: from then on
    /// [`JobContext::is_cancelled`] is true, [`JobContext::cancelled`] resolves and every
    /// report errs with [`JobError::cancelled`]. `0` cancels before the handler starts.
    #[must_use]
    pub fn cancel_after_reports(mut self, reports: usize) -> Self {
        self.cancel_after = Some(reports);
        self
    }

    /// The attempt has `limit` to run: [`JobContext::remaining`] counts it down, and past it
    /// the handler is stopped with a retryable `DEADLINE_EXCEEDED`, as the worker does.
    #[must_use]
    pub fn with_time_limit(mut self, limit: Duration) -> Self {
        self.time_limit = Some(limit);
        self
    }

    /// Runs the attempt with `input`.
    pub async fn run(&self, input: H::Input) -> HandlerRun<H::Output> {
        let sink = Arc::new(Recorder {
            reports: Mutex::default(),
            cancel_after: self.cancel_after,
            cancel: tokio::sync::watch::channel(self.cancel_after == Some(0)).0,
        });
        let mut job = JobContext::new("test-request", self.attempt, sink.clone());
        if let Some(limit) = self.time_limit {
            job = job.with_deadline(tokio::time::Instant::now() + limit);
        }
        let running = self.handler.process(input, job);
        let outcome = match self.time_limit {
            None => running.await,
            Some(limit) => tokio::time::timeout(limit, running)
                .await
                .unwrap_or_else(|_| {
                    Err(JobError::retryable(
                        "DEADLINE_EXCEEDED",
                        "the attempt ran out of time",
                    ))
                }),
        };
        let reports = std::mem::take(&mut *sink.reports.lock().expect("not poisoned"));
        HandlerRun { reports, outcome }
    }
}

/// Records reports and plays the cancelling client.
#[derive(Debug)]
struct Recorder {
    reports: Mutex<Vec<Report>>,
    cancel_after: Option<usize>,
    cancel: tokio::sync::watch::Sender<bool>,
}

#[async_trait]
impl ProgressSink for Recorder {
    async fn progress(&self, fraction: f64, message: Option<String>) -> Result<(), JobError> {
        if *self.cancel.borrow() {
            return Err(JobError::cancelled());
        }
        let mut reports = self.reports.lock().expect("not poisoned");
        reports.push(Report {
            progress: fraction,
            message,
        });
        if self.cancel_after == Some(reports.len()) {
            self.cancel.send_replace(true);
        }
        Ok(())
    }

    fn is_cancelled(&self) -> bool {
        *self.cancel.borrow()
    }

    async fn cancelled(&self) {
        let mut cancelled = self.cancel.subscribe();
        let _ = cancelled.wait_for(|cancelled| *cancelled).await;
    }
}
