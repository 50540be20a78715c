//! The test kit (feature `testing`): run a handler as a worker would, without a store or a
//! server, and read what it reported ([`HandlerTest`]); or run a whole app in process, without
//! sockets, enqueue through its GraphQL API and follow its requests' states ([`AppTest`]).
//!
//! [`HandlerTest`] runs one attempt of a [`Handler`] with a typed input and records every
//! progress report; it can play a client that cancels after some reports, give the attempt
//! a time limit (as Lambda's, which [`JobContext::remaining`] reads), and say which attempt
//! this is (a handler that behaves differently on a retry). Its attempts share one set of
//! checkpoints, so a workflow's steps replay from one run to the next as on a worker
//! (children need their handlers: test those with [`AppTest`]).
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

use async_graphql::InputType;
use async_trait::async_trait;
use serde_json::{Value, json};
use streamer_core::{AsyncRequest, ManualClock, MemoryStore, RequestStatus, SystemClock};
use streamer_local::{InProcess, StackBuilder};
use streamer_schema::{Handler, Handlers, JobContext, JobError, ProgressSink};

use crate::App;

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
    /// Where the runs keep their checkpoints.
    checkpoints: Arc<MemoryStore>,
}

impl<H: Handler> HandlerTest<H> {
    /// The first attempt of `handler`, never cancelled, with no time limit.
    pub fn new(handler: H) -> Self {
        Self {
            handler,
            attempt: 1,
            cancel_after: None,
            time_limit: None,
            checkpoints: Arc::new(MemoryStore::new()),
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
        let request = AsyncRequest::new("test-request", H::ACTION, Value::Null, chrono::Utc::now());
        let mut job = JobContext::new("test-request", self.attempt, sink.clone()).with_checkpoints(
            self.checkpoints.clone(),
            Arc::new(SystemClock),
            Arc::new(Handlers::new()),
            &request,
            streamer_processor::WorkerSettings::default().max_result_bytes,
        );
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

/// How long [`AppTest`] waits for a request to reach a state before it panics.
const PATIENCE: Duration = Duration::from_secs(30);

/// One state of a request, as a subscriber of `requestProgress` sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestState {
    /// Its status.
    pub status: RequestStatus,
    /// Its version: every visible change has a greater one.
    pub version: u64,
    /// The fraction done, 0.0 to 1.0.
    pub progress: f64,
    /// The latest progress message.
    pub message: Option<String>,
    /// Attempts started so far.
    pub attempts: u32,
    /// The handler's output, as JSON (COMPLETED).
    pub output: Option<Value>,
    /// The error's code (FAILED, RETRYING, CANCELLED).
    pub error_code: Option<String>,
}

impl From<AsyncRequest> for RequestState {
    fn from(request: AsyncRequest) -> Self {
        Self {
            status: request.status,
            version: request.version,
            progress: request.progress,
            message: request.message,
            attempts: request.attempts,
            output: request.result,
            error_code: request.error.map(|error| error.code),
        }
    }
}

/// A whole app in process: the local stack on the embedded store, with its processor,
/// workers and sweeper, and no server. Requests are enqueued and cancelled through the
/// app's GraphQL API, as a client without credentials would (development mode), and their
/// states are read from the store.
///
/// ```
/// # use streamer::async_graphql::{InputObject, SimpleObject};
/// # use streamer::{Handler, JobContext, JobError};
/// # #[derive(InputObject)]
/// # struct CountInput { to: i32 }
/// # #[derive(Debug, SimpleObject, serde::Serialize)]
/// # struct Counted { total: i32 }
/// # struct Count;
/// # impl Handler for Count {
/// #     const ACTION: &'static str = "count";
/// #     type Input = CountInput;
/// #     type Output = Counted;
/// #     async fn process(&self, input: CountInput, job: JobContext) -> Result<Counted, JobError> {
/// #         job.progress(0.5, "half").await?;
/// #         Ok(Counted { total: input.to })
/// #     }
/// # }
/// use streamer::testing::AppTest;
/// use streamer::{App, RequestStatus};
///
/// # #[tokio::main]
/// # async fn main() {
/// let app = AppTest::start(App::new().register(Count));
/// let id = app.enqueue::<Count>(CountInput { to: 3 }).await.unwrap();
/// let states = app.follow(&id).await;
/// let last = states.last().unwrap();
/// assert_eq!(last.status, RequestStatus::Completed);
/// assert_eq!(last.output, Some(serde_json::json!({ "total": 3 })));
///
/// // The next attempt fails (retryably) before the handler runs; the retry succeeds.
/// app.fail_next_attempts::<Count>(1);
/// let id = app.enqueue::<Count>(CountInput { to: 1 }).await.unwrap();
/// let states = app.follow(&id).await;
/// let statuses: Vec<RequestStatus> = states.iter().map(|s| s.status).collect();
/// assert!(statuses.contains(&RequestStatus::Retrying));
/// assert_eq!(states.last().unwrap().attempts, 2);
/// # }
/// ```
#[derive(Debug)]
pub struct AppTest {
    stack: InProcess,
    clock: Option<ManualClock>,
}

impl AppTest {
    /// Starts `app` with the system clock and sweeps every 20 ms (a lost dispatch, an
    /// abandoned lease or a due retry is picked up at once). Call it within a Tokio runtime
    /// (`#[tokio::test]`): the sweeper is a task of it.
    ///
    /// # Panics
    ///
    /// When the app's schema does not build, or outside a Tokio runtime.
    pub fn start(app: App) -> Self {
        Self::start_with(app, |stack| stack)
    }

    /// [`AppTest::start`], with the stack configured further (limits, leases, …).
    ///
    /// # Panics
    ///
    /// When the app's schema does not build.
    pub fn start_with(app: App, configure: impl FnOnce(StackBuilder) -> StackBuilder) -> Self {
        Self::started(app, None, configure)
    }

    /// [`AppTest::start`] on a clock that moves only when the test says so
    /// ([`AppTest::advance`]): backoffs, leases and retention are judged by it, so that a
    /// retry is not due, or a lease does not pass, until the test advances it.
    ///
    /// # Panics
    ///
    /// When the app's schema does not build.
    pub fn with_manual_clock(app: App) -> Self {
        // A microsecond per reading: distinct timestamps, and no drift worth a backoff.
        let clock = ManualClock::new(chrono::Utc::now(), chrono::Duration::microseconds(1));
        Self::started(app, Some(clock), |stack| stack)
    }

    fn started(
        app: App,
        clock: Option<ManualClock>,
        configure: impl FnOnce(StackBuilder) -> StackBuilder,
    ) -> Self {
        let mut stack = app
            .local()
            .with_sweep_every(Duration::from_millis(20))
            .with_queued_grace(Duration::from_secs(1));
        if let Some(clock) = &clock {
            stack = stack.with_clock(Arc::new(clock.clone()));
        }
        let stack = configure(stack)
            .build()
            .expect("the app's schema builds")
            .start_in_process()
            .expect("the processor's thread starts");
        Self { stack, clock }
    }

    /// Moves the manual clock forward.
    ///
    /// # Panics
    ///
    /// When the app was not started [`AppTest::with_manual_clock`].
    pub fn advance(&self, by: Duration) {
        let clock = self.clock.as_ref().expect("started with_manual_clock");
        clock.advance(chrono::Duration::from_std(by).expect("a duration in range"));
    }

    /// Executes a GraphQL request against the app: the answer's JSON (`data`, `errors`).
    pub async fn execute(&self, query: &str, variables: Value) -> Value {
        let (_, answer) = self
            .stack
            .execute(&json!({ "query": query, "variables": variables }))
            .await;
        answer
    }

    /// Enqueues a request of `H` with `input` through its typed mutation: the request's id,
    /// or the GraphQL errors (bad input, a quota).
    pub async fn enqueue<H: Handler>(&self, input: H::Input) -> Result<String, Vec<Value>> {
        let query = format!(
            "mutation($input: {}!) {{ {}(input: $input) {{ id }} }}",
            H::Input::type_name(),
            H::ACTION
        );
        let variables = json!({ "input": input.to_value().into_json().unwrap_or(Value::Null) });
        let answer = self.execute(&query, variables).await;
        match answer["data"][H::ACTION]["id"].as_str() {
            Some(id) => Ok(id.to_owned()),
            None => Err(errors(&answer)),
        }
    }

    /// Cancels a request through `cancelRequest`, or returns the GraphQL errors. A queued
    /// request ends CANCELLED at once; a running one when its handler stops.
    pub async fn cancel(&self, id: &str) -> Result<(), Vec<Value>> {
        let answer = self
            .execute(
                "mutation($id: ID!) { cancelRequest(id: $id) { status } }",
                json!({ "id": id }),
            )
            .await;
        match answer["data"]["cancelRequest"]["status"].as_str() {
            Some(_) => Ok(()),
            None => Err(errors(&answer)),
        }
    }

    /// The request's state now.
    pub async fn state(&self, id: &str) -> Option<RequestState> {
        let request = self
            .stack
            .store()
            .get_request(id)
            .await
            .expect("the store reads");
        request.map(RequestState::from)
    }

    /// Waits until the request's state satisfies `until`, and returns that state.
    ///
    /// # Panics
    ///
    /// When it does not within 30 seconds.
    pub async fn wait_for(&self, id: &str, until: impl Fn(&RequestState) -> bool) -> RequestState {
        let waited = tokio::time::timeout(PATIENCE, async {
            loop {
                if let Some(state) = self.state(id).await.filter(|state| until(state)) {
                    return state;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        let last = waited.await;
        match last {
            Ok(state) => state,
            Err(_) => panic!(
                "request {id} did not reach the awaited state in {PATIENCE:?}; it is {:?}",
                self.state(id).await
            ),
        }
    }

    /// Every state the request went through, in version order, once it has ended
    /// (COMPLETED, FAILED or CANCELLED): what a subscriber from its start would have received.
    ///
    /// # Panics
    ///
    /// When it does not end within 30 seconds.
    pub async fn follow(&self, id: &str) -> Vec<RequestState> {
        let last = self.wait_for(id, |state| state.status.is_terminal()).await;
        // The processor keeps each state in the history just after it is written.
        let history = tokio::time::timeout(PATIENCE, async {
            loop {
                let history = self
                    .stack
                    .store()
                    .request_history(id, 0, usize::MAX)
                    .await
                    .expect("the store reads");
                if history
                    .last()
                    .is_some_and(|kept| kept.version >= last.version)
                {
                    return history;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the processor keeps every state");
        history.into_iter().map(RequestState::from).collect()
    }

    /// Fails the next `attempts` attempts of `H`'s requests, whichever they are, with a
    /// retryable `INJECTED_FAILURE`, without running the handler; each counts against its
    /// attempt budget, and the retries wait out the handler's backoff.
    pub fn fail_next_attempts<H: Handler>(&self, attempts: u32) {
        self.stack.workers().fail_next_attempts(H::ACTION, attempts);
    }

    /// [`AppTest::fail_next_attempts`] for one request.
    pub fn fail_next_attempts_of(&self, id: &str, attempts: u32) {
        self.stack.workers().fail_next_attempts(id, attempts);
    }

    /// Kills the worker running the request now, as a crash would: no outcome is written,
    /// and the request runs again once its lease has passed. `false` when none runs it.
    pub fn kill_worker(&self, id: &str) -> bool {
        self.stack.workers().kill(id)
    }
}

/// The `errors` of a GraphQL answer.
fn errors(answer: &Value) -> Vec<Value> {
    answer["errors"].as_array().cloned().unwrap_or_default()
}
