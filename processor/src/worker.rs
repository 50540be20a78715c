//! Running one job: claim the request, run its handler with a progress sink, record the one
//! outcome.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use streamer_core::store::modify_request_from;
use streamer_core::{
    AsyncRequest, Backoff, Claimed, Clock, Error, RequestError, RequestStatus, Result, Store, Wait,
    metric,
};
use streamer_schema::{Handlers, JOB_BACKOFF, JobContext, JobError, ProgressSink};

/// How one run of a job ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Another worker holds the request, or it is no longer runnable.
    NotClaimed,
    /// COMPLETED.
    Completed,
    /// RETRYING: run again after this delay.
    RetryAfter(Duration),
    /// FAILED.
    Failed,
    /// CANCELLED.
    Cancelled,
    /// WAITING: a workflow suspended until its children end or its time comes.
    Suspended,
    /// QUEUED again: a workflow's attempt ran out of time after checkpointing, and goes on
    /// in a new attempt.
    GoesOn,
}

/// The error code of an attempt that ran out of time.
const DEADLINE_EXCEEDED: &str = "DEADLINE_EXCEEDED";

/// Tells a running attempt that a client cancelled its request: the handler's
/// [`JobContext::cancelled`] resolves, its next progress report errs, and an attempt that
/// has not ended within the worker's grace period is dropped.
#[derive(Debug, Clone)]
pub struct CancelSignal(Arc<tokio::sync::watch::Sender<bool>>);

impl Default for CancelSignal {
    fn default() -> Self {
        Self(Arc::new(tokio::sync::watch::channel(false).0))
    }
}

impl CancelSignal {
    /// Cancels the attempt.
    pub fn cancel(&self) {
        self.0.send_replace(true);
    }

    /// Whether the attempt was cancelled.
    pub fn is_cancelled(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once the attempt is cancelled.
    pub async fn wait(&self) {
        let mut cancelled = self.0.subscribe();
        let _ = cancelled.wait_for(|cancelled| *cancelled).await;
    }
}

/// The state of a request its attempt last wrote: the next write starts from it instead of
/// reading the request again, while nobody else has written it since.
#[derive(Debug)]
struct Latest(std::sync::Mutex<AsyncRequest>);

impl Latest {
    fn new(request: &AsyncRequest) -> Self {
        Self(std::sync::Mutex::new(request.clone()))
    }

    fn get(&self) -> AsyncRequest {
        self.0.lock().expect("latest lock").clone()
    }

    /// Keeps `written` unless a later revision is kept already.
    fn set(&self, written: &AsyncRequest) {
        let mut latest = self.0.lock().expect("latest lock");
        if written.revision > latest.revision {
            *latest = written.clone();
        }
    }
}

/// Writes a running job's progress to the store, coalesced: at most one write per interval;
/// a report within it waits (the latest one wins) and is written when the interval has
/// passed, and before the attempt's outcome.
struct StoreSink {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    request_id: String,
    latest: Arc<Latest>,
    cancelled: CancelSignal,
    interval: Duration,
    coalesce: std::sync::Mutex<Coalesce>,
    // Wakes the flusher when a report is left waiting.
    waiting: tokio::sync::Notify,
}

/// The coalescing state of a [`StoreSink`].
#[derive(Debug, Default)]
struct Coalesce {
    last_write: Option<tokio::time::Instant>,
    pending: Option<(f64, Option<String>)>,
}

impl StoreSink {
    /// Writes the report left waiting, if any.
    async fn flush(&self) -> Result<(), JobError> {
        self.flush_due(None).await
    }

    /// Writes the report left waiting, if any, and if the last write is at least an interval
    /// old when `spaced` is given the time now.
    async fn flush_due(&self, spaced: Option<tokio::time::Instant>) -> Result<(), JobError> {
        let pending = {
            let mut coalesce = self.coalesce.lock().expect("progress lock");
            if let (Some(now), Some(last)) = (spaced, coalesce.last_write)
                && now < last + self.interval
            {
                return Ok(());
            }
            let pending = coalesce.pending.take();
            if pending.is_some() {
                coalesce.last_write = Some(tokio::time::Instant::now());
            }
            pending
        };
        match pending {
            Some((fraction, message)) => self.write(fraction, message).await,
            None => Ok(()),
        }
    }

    /// Writes each report left waiting once its interval has passed, for as long as it is
    /// polled. Sleeps while no report waits: a thousand quiet jobs cost no timers.
    async fn flush_when_due(&self) {
        loop {
            self.waiting.notified().await;
            loop {
                let due = {
                    let coalesce = self.coalesce.lock().expect("progress lock");
                    match (&coalesce.pending, coalesce.last_write) {
                        (Some(_), Some(last)) => last + self.interval,
                        (Some(_), None) => tokio::time::Instant::now(),
                        (None, _) => break,
                    }
                };
                tokio::time::sleep_until(due).await;
                // A failure is reported to the handler at its next report, as a write's is.
                let _ = self.flush_due(Some(tokio::time::Instant::now())).await;
            }
        }
    }

    async fn write(&self, fraction: f64, message: Option<String>) -> Result<(), JobError> {
        let written = modify_request_from(
            &*self.store,
            &*self.clock,
            Some(self.latest.get()),
            &self.request_id,
            |request, now| {
                let cancel = request.cancel_requested;
                request.report(fraction, message.clone(), now)?;
                Ok(cancel)
            },
        )
        .await;
        if let Ok((written, _)) = &written {
            self.latest.set(written);
        }
        match written {
            Ok((_, false)) => Ok(()),
            Ok((_, true))
            | Err(Error::Transition {
                status: RequestStatus::Cancelled,
                ..
            }) => {
                self.cancelled.cancel();
                Err(JobError::cancelled())
            }
            Err(error) => {
                tracing::warn!(request_id = %self.request_id, error = ?error.to_string(), "progress write failed");
                Err(JobError::retryable(
                    "PROGRESS_WRITE_FAILED",
                    "progress could not be recorded",
                ))
            }
        }
    }
}

#[async_trait]
impl ProgressSink for StoreSink {
    async fn progress(&self, fraction: f64, message: Option<String>) -> Result<(), JobError> {
        if self.cancelled.is_cancelled() {
            return Err(JobError::cancelled());
        }
        let now = tokio::time::Instant::now();
        {
            let mut coalesce = self.coalesce.lock().expect("progress lock");
            if coalesce
                .last_write
                .is_some_and(|last| now < last + self.interval)
            {
                coalesce.pending = Some((fraction, message));
                self.waiting.notify_one();
                return Ok(());
            }
            coalesce.last_write = Some(now);
            coalesce.pending = None;
        }
        self.write(fraction, message).await
    }

    fn is_cancelled(&self) -> bool {
        self.cancelled.is_cancelled()
    }

    async fn cancelled(&self) {
        self.cancelled.wait().await;
    }
}

/// How long a worker holds a request it runs unless it renews the lease (a third of it
/// passes between renewals).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// Runs jobs against the store.
#[derive(Clone)]
pub struct Worker {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    handlers: Arc<Handlers>,
    settings: WorkerSettings,
    /// The tenant's active-requests quota, which the children a workflow starts count
    /// against as enqueues do.
    max_active: Option<usize>,
    /// Attempts still to fail, by request id or action (fault injection).
    failing: Arc<std::sync::Mutex<std::collections::HashMap<String, u32>>>,
}

/// How a worker runs jobs: the same knobs on the local stack (its builder) and on Lambda
/// (`STREAMER_LEASE_MS`, `STREAMER_JOB_TIME_LIMIT_MS`, `STREAMER_PROGRESS_INTERVAL_MS`,
/// `STREAMER_CANCEL_GRACE_MS`, `STREAMER_MAX_RESULT_BYTES`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerSettings {
    /// How long a worker holds a request it runs unless it renews the lease (a third of it
    /// passes between renewals); past it, the sweeper hands the request to another worker.
    pub lease: Duration,
    /// The longest attempt; past it the attempt fails, retryably, with `DEADLINE_EXCEEDED`.
    pub time_limit: Duration,
    /// Progress is written at most once per this interval; reports in between are
    /// coalesced (the last one wins).
    pub progress_interval: Duration,
    /// How long a cancelled handler may take to stop before it is dropped.
    pub cancel_grace: Duration,
    /// The largest output kept, as JSON; a larger one fails its request with
    /// `RESULT_TOO_LARGE`.
    pub max_result_bytes: usize,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            lease: DEFAULT_LEASE,
            time_limit: DEFAULT_TIME_LIMIT,
            progress_interval: DEFAULT_PROGRESS_INTERVAL,
            cancel_grace: DEFAULT_CANCEL_GRACE,
            max_result_bytes: DEFAULT_MAX_RESULT_BYTES,
        }
    }
}

/// The largest output a request keeps by default, as JSON: with the largest input
/// (`payloadBytes`, 64 KiB) and the rest of its state it stays under DynamoDB's 400 KB item.
pub const DEFAULT_MAX_RESULT_BYTES: usize = 256 * 1024;

/// The error code of an output over the result limit.
pub const RESULT_TOO_LARGE: &str = "RESULT_TOO_LARGE";

/// How long a cancelled handler may take to stop by default before it is dropped.
pub const DEFAULT_CANCEL_GRACE: Duration = Duration::from_secs(5);

/// Progress is written at most once per this interval by default (twenty writes a second).
pub const DEFAULT_PROGRESS_INTERVAL: Duration = Duration::from_millis(50);

/// How long one attempt may run by default: Lambda's limit.
pub const DEFAULT_TIME_LIMIT: Duration = Duration::from_secs(15 * 60);

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("handlers", &self.handlers)
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// A worker over these handlers.
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, handlers: Arc<Handlers>) -> Self {
        Self {
            store,
            clock,
            handlers,
            settings: WorkerSettings::default(),
            max_active: None,
            failing: Arc::default(),
        }
    }

    /// Children started by a workflow count against this quota of a tenant's requests
    /// queued, running or retrying (`Limits::max_tenant_active_requests`), as enqueues do.
    pub fn with_tenant_active_requests(mut self, max: Option<usize>) -> Self {
        self.max_active = max;
        self
    }

    /// Fails the next `attempts` attempts of `target` (a request id, or an action: any of
    /// its requests) with a retryable `INJECTED_FAILURE`, without running the handler. For
    /// fault injection.
    pub fn fail_next_attempts(&self, target: &str, attempts: u32) {
        let mut failing = self.failing.lock().expect("faults lock");
        failing.insert(target.to_owned(), attempts);
    }

    /// Whether this attempt of `request` is one to fail (and counts it).
    fn injected_failure(&self, request: &AsyncRequest) -> bool {
        let mut failing = self.failing.lock().expect("faults lock");
        for target in [&request.id, &request.action] {
            if let Some(left) = failing.get_mut(target.as_str()).filter(|left| **left > 0) {
                *left -= 1;
                return true;
            }
        }
        false
    }

    /// With these settings instead of the defaults.
    pub fn with_settings(mut self, settings: WorkerSettings) -> Self {
        self.settings = settings;
        self
    }

    /// Its settings.
    pub fn settings(&self) -> WorkerSettings {
        self.settings
    }

    /// Keeps outputs of at most `bytes` (as JSON) instead of [`DEFAULT_MAX_RESULT_BYTES`];
    /// a larger one fails its request with `RESULT_TOO_LARGE`.
    pub fn with_max_result_bytes(mut self, bytes: usize) -> Self {
        self.settings.max_result_bytes = bytes;
        self
    }

    /// Gives a cancelled handler `grace` to stop instead of [`DEFAULT_CANCEL_GRACE`].
    pub fn with_cancel_grace(mut self, grace: Duration) -> Self {
        self.settings.cancel_grace = grace;
        self
    }

    /// Writes progress at most once per `interval` instead of [`DEFAULT_PROGRESS_INTERVAL`].
    pub fn with_progress_interval(mut self, interval: Duration) -> Self {
        self.settings.progress_interval = interval;
        self
    }

    /// Ends an attempt that runs longer than `limit` (as a retryable `DEADLINE_EXCEEDED`
    /// failure) instead of [`DEFAULT_TIME_LIMIT`].
    pub fn with_time_limit(mut self, limit: Duration) -> Self {
        self.settings.time_limit = limit;
        self
    }

    /// Holds requests with leases of this length instead of [`DEFAULT_LEASE`].
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.settings.lease = lease;
        self
    }

    fn lease(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.settings.lease).unwrap_or(chrono::Duration::MAX)
    }

    /// Claims the request with a lease (QUEUED or RETRYING, or RUNNING under a lease that has
    /// passed → RUNNING; a conditional write: one worker wins), runs its handler while
    /// renewing the lease, and records the outcome. A worker that loses its lease stops.
    pub async fn run(&self, request_id: &str) -> Result<Outcome> {
        self.run_until(request_id, None).await
    }

    /// [`Worker::run`] in a process that will be stopped at `stop` (Lambda's deadline): the
    /// attempt ends before then, or at the time limit, whichever comes first, with a margin
    /// to record the outcome.
    pub async fn run_until(
        &self,
        request_id: &str,
        stop: Option<tokio::time::Instant>,
    ) -> Result<Outcome> {
        self.run_signalled(request_id, None, stop, CancelSignal::default())
            .await
    }

    /// [`Worker::run_until`], cancelled at once through `cancel` (the local dispatcher's,
    /// which the processor signals when a client cancels); without it, a cancel reaches the
    /// attempt at its next progress report or lease renewal. `known` is the request as the
    /// dispatcher saw it (the change that made it runnable): the claim is then one
    /// conditional write from it, and a read only when the request has moved since.
    pub async fn run_signalled(
        &self,
        request_id: &str,
        known: Option<AsyncRequest>,
        stop: Option<tokio::time::Instant>,
        cancel: CancelSignal,
    ) -> Result<Outcome> {
        let now = tokio::time::Instant::now();
        let limit = now + self.settings.time_limit;
        let deadline = match stop {
            Some(stop) => {
                let margin =
                    (stop.saturating_duration_since(now) / 10).min(Duration::from_secs(10));
                limit.min(stop - margin)
            }
            None => limit,
        };
        let lease = self.lease();
        let handlers = &self.handlers;
        let known = known.filter(|request| request.id == request_id);
        let claimed = modify_request_from(
            &*self.store,
            &*self.clock,
            known,
            request_id,
            |request, now| {
                let budget = handlers
                    .get(&request.action)
                    .map_or(1, |handler| handler.max_attempts());
                request.claim(now, lease, budget)
            },
        )
        .await;
        let request = match claimed {
            Ok((request, Claimed::Started)) => request,
            Ok((request, Claimed::Lost)) => {
                tracing::warn!(
                    request_id,
                    attempts = request.attempts,
                    "worker lost on the last attempt: failed"
                );
                metrics::counter!(metric::DEAD_LETTERS).increment(1);
                return Ok(Outcome::Failed);
            }
            Err(Error::Transition { .. } | Error::NotFound(_)) => {
                return self.not_claimed(request_id).await;
            }
            Err(other) => return Err(other),
        };
        tracing::info!(request_id, action = %request.action, attempt = request.attempts, "job started");
        let Some(handler) = self.handlers.get(&request.action).cloned() else {
            let error = JobError::permanent(
                "UNKNOWN_ACTION",
                format!("no handler for action \"{}\"", request.action),
            );
            return self
                .finish(&Latest::new(&request), Err(error), 1, JOB_BACKOFF)
                .await;
        };
        if self.injected_failure(&request) {
            let error = JobError::retryable("INJECTED_FAILURE", "a failure injected by a test");
            return self
                .finish(
                    &Latest::new(&request),
                    Err(error),
                    handler.max_attempts(),
                    handler.backoff(),
                )
                .await;
        }
        let latest = Arc::new(Latest::new(&request));
        let sink = Arc::new(StoreSink {
            store: Arc::clone(&self.store),
            clock: Arc::clone(&self.clock),
            request_id: request_id.to_owned(),
            latest: Arc::clone(&latest),
            cancelled: cancel.clone(),
            interval: self.settings.progress_interval,
            coalesce: std::sync::Mutex::default(),
            waiting: tokio::sync::Notify::new(),
        });
        let job = JobContext::new(request_id, request.attempts, sink.clone())
            .with_deadline(deadline)
            .with_checkpoints(
                Arc::clone(&self.store),
                Arc::clone(&self.clock),
                Arc::clone(&self.handlers),
                &request,
                self.settings.max_result_bytes,
            )
            .with_tenant_active_requests(self.max_active);
        // The handler takes the context; this copy tells what its durable calls left.
        let durable = job.clone();
        // A panicking handler fails its job; it must not take the worker down with it.
        let started = std::time::Instant::now();
        let work =
            std::panic::AssertUnwindSafe(handler.run(request.payload.clone(), job)).catch_unwind();
        let result = tokio::select! {
            result = tokio::time::timeout_at(deadline, work) => match result {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err(JobError::permanent(
                    "HANDLER_PANICKED",
                    "the handler panicked",
                )),
                Err(_) => {
                    tracing::warn!(request_id, attempt = request.attempts, "attempt out of time");
                    Err(JobError::retryable(
                        DEADLINE_EXCEEDED,
                        "the attempt ran out of time",
                    ))
                }
            },
            () = self.keep_lease(&latest, request.attempts, &cancel) => {
                tracing::warn!(request_id, attempt = request.attempts, "lease lost: handler stopped");
                return Ok(Outcome::NotClaimed);
            }
            () = async { cancel.wait().await; tokio::time::sleep(self.settings.cancel_grace).await } => {
                tracing::info!(request_id, attempt = request.attempts, "cancelled handler dropped after its grace period");
                Err(JobError::cancelled())
            }
            () = sink.flush_when_due() => unreachable!("flushing never ends"),
        };
        let result = result.and_then(|output| self.within_result_limit(output));
        // The latest report is written before the outcome.
        let _ = sink.flush().await;
        metrics::histogram!(metric::JOB_DURATION).record(started.elapsed().as_secs_f64() * 1000.0);
        let outcome = if let Some(wait) = durable.suspension() {
            self.pause(&latest, Some(wait)).await?
        } else if matches!(&result, Err(error) if error.code == DEADLINE_EXCEEDED)
            && durable.checkpointed()
        {
            self.pause(&latest, None).await?
        } else {
            self.finish(&latest, result, handler.max_attempts(), handler.backoff())
                .await?
        };
        if outcome == Outcome::Cancelled {
            self.cancel_children(request_id, durable.children_started())
                .await;
        }
        Ok(outcome)
    }

    /// Cancels the children a workflow's attempt started, now that it ended CANCELLED: the
    /// worker knows each one, where a listing of the parent's index could miss those created
    /// a moment ago. A failure here is left to the processor's listing of them.
    async fn cancel_children(&self, request_id: &str, children: Vec<String>) {
        if children.is_empty() {
            return;
        }
        if let Err(error) =
            crate::processor::cascade(&self.store, &self.clock, children, AsyncRequest::cancel)
                .await
        {
            tracing::warn!(request_id, error = ?error.to_string(), "cancelling the children failed");
        }
    }

    /// Ends a workflow's attempt without an outcome: WAITING for `wait`, or QUEUED again to
    /// go on from its checkpoints (`None`). A cancel asked for meanwhile ends it CANCELLED.
    async fn pause(&self, latest: &Latest, wait: Option<Wait>) -> Result<Outcome> {
        let started = latest.get();
        let (request, outcome) = modify_request_from(
            &*self.store,
            &*self.clock,
            Some(started.clone()),
            &started.id,
            |request, now| {
                if request.status != RequestStatus::Running || request.attempts != started.attempts
                {
                    return Ok(Outcome::NotClaimed);
                }
                if request.cancel_requested {
                    return request.cancelled(now).map(|()| Outcome::Cancelled);
                }
                match &wait {
                    Some(wait) => request
                        .suspend(wait.clone(), now)
                        .map(|()| Outcome::Suspended),
                    None => request.go_on(now).map(|()| Outcome::GoesOn),
                }
            },
        )
        .await?;
        tracing::info!(request_id = %request.id, status = %request.status, "workflow paused");
        Ok(outcome)
    }

    /// The output, or a permanent `RESULT_TOO_LARGE` when it is over the bytes a request
    /// can keep (a DynamoDB item holds 400 KB, input and state included): an output that
    /// cannot be written would otherwise fail every attempt in full.
    fn within_result_limit(
        &self,
        output: serde_json::Value,
    ) -> Result<serde_json::Value, JobError> {
        let bytes = serde_json::to_vec(&output).map_or(usize::MAX, |encoded| encoded.len());
        if bytes > self.settings.max_result_bytes {
            return Err(JobError::permanent(
                RESULT_TOO_LARGE,
                format!(
                    "the output is {bytes} bytes, over the {} a request can keep",
                    self.settings.max_result_bytes
                ),
            ));
        }
        Ok(output)
    }

    /// Why a claim was refused: a retry that is not due yet comes back when it is (a
    /// duplicate or early dispatch); anything else is not this worker's.
    async fn not_claimed(&self, request_id: &str) -> Result<Outcome> {
        let now = self.clock.now();
        let due = self
            .store
            .get_request(request_id)
            .await?
            .and_then(|request| {
                (request.status == RequestStatus::Retrying)
                    .then_some(request.next_attempt_at)
                    .flatten()
                    .filter(|at| *at > now)
            });
        Ok(match due {
            Some(at) => Outcome::RetryAfter((at - now).to_std().unwrap_or_default()),
            None => Outcome::NotClaimed,
        })
    }

    /// Renews the lease of `attempt` until it cannot: returns when the request no longer
    /// runs that attempt (another worker took it over, or it ended). A cancel it reads on
    /// the way is signalled to the attempt.
    async fn keep_lease(&self, latest: &Latest, attempt: u32, cancel: &CancelSignal) {
        let lease = self.lease();
        loop {
            tokio::time::sleep(self.settings.lease / 3).await;
            let known = latest.get();
            let request_id = known.id.clone();
            let renewed = modify_request_from(
                &*self.store,
                &*self.clock,
                Some(known),
                &request_id,
                |request, now| {
                    if request.attempts != attempt {
                        return Err(Error::Superseded(format!("attempt {attempt}")));
                    }
                    request.renew(now, lease)?;
                    Ok(request.cancel_requested)
                },
            )
            .await;
            if let Ok((written, _)) = &renewed {
                latest.set(written);
            }
            let request_id = request_id.as_str();
            match renewed {
                Ok((_, cancel_requested)) => {
                    if cancel_requested {
                        cancel.cancel();
                    }
                }
                Err(
                    Error::Conflict(_)
                    | Error::Superseded(_)
                    | Error::Transition { .. }
                    | Error::NotFound(_),
                ) => return,
                Err(error) => {
                    tracing::warn!(request_id, error = ?error.to_string(), "lease not renewed")
                }
            }
        }
    }

    async fn finish(
        &self,
        latest: &Latest,
        result: Result<serde_json::Value, JobError>,
        max_attempts: u32,
        backoff: Backoff,
    ) -> Result<Outcome> {
        let started = latest.get();
        let retry_delay = backoff.delay(started.drive_attempts(), &mut rand::rng());
        let known = Some(started.clone());
        let (request, outcome) = modify_request_from(
            &*self.store,
            &*self.clock,
            known,
            &started.id,
            |request, now| {
                if request.status != RequestStatus::Running || request.attempts != started.attempts
                {
                    return Ok(Outcome::NotClaimed);
                }
                match &result {
                    _ if request.cancel_requested => {
                        request.cancelled(now).map(|()| Outcome::Cancelled)
                    }
                    Err(error) if error.is_cancellation() => {
                        request.cancelled(now).map(|()| Outcome::Cancelled)
                    }
                    Ok(output) => request
                        .complete(output.clone(), now)
                        .map(|()| Outcome::Completed),
                    Err(error) if error.retryable && request.drive_attempts() < max_attempts => {
                        let at = now + chrono::Duration::from_std(retry_delay).unwrap_or_default();
                        request
                            .retry_at(RequestError::from(error.clone()), at, now)
                            .map(|()| Outcome::RetryAfter(retry_delay))
                    }
                    Err(error) => request
                        .fail(RequestError::from(error.clone()), now)
                        .map(|()| Outcome::Failed),
                }
            },
        )
        .await?;
        tracing::info!(request_id = %request.id, status = %request.status, attempts = request.attempts, "job ended");
        match outcome {
            Outcome::RetryAfter(_) => metrics::counter!(metric::RETRIES).increment(1),
            Outcome::Failed => metrics::counter!(metric::DEAD_LETTERS).increment(1),
            _ => {}
        }
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use async_graphql::{InputObject, SimpleObject};
    use serde_json::json;
    use streamer_core::store::Change;
    use streamer_core::{ManualClock, MemoryStore};
    use streamer_schema::{Handler, JobContext};

    use super::*;

    #[derive(InputObject)]
    struct ChattyInput {
        reports: i32,
        /// Milliseconds to wait after the last report.
        quiet_ms: Option<i32>,
    }

    #[derive(SimpleObject, serde::Serialize)]
    struct ChattyOutput {
        reports: i32,
    }

    /// Reports progress as fast as it can.
    struct Chatty;

    impl Handler for Chatty {
        const ACTION: &'static str = "chatty";
        type Input = ChattyInput;
        type Output = ChattyOutput;

        async fn process(
            &self,
            input: ChattyInput,
            job: JobContext,
        ) -> Result<ChattyOutput, JobError> {
            for i in 1..=input.reports {
                job.progress(
                    f64::from(i) / f64::from(input.reports),
                    format!("report {i}"),
                )
                .await?;
                if i % 100 == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            let quiet = u64::try_from(input.quiet_ms.unwrap_or_default()).unwrap_or_default();
            tokio::time::sleep(Duration::from_millis(quiet)).await;
            Ok(ChattyOutput {
                reports: input.reports,
            })
        }
    }

    /// Fails with its own error whose code is `CANCELLED`.
    struct Impostor;

    impl Handler for Impostor {
        const ACTION: &'static str = "impostor";
        type Input = ChattyInput;
        type Output = ChattyOutput;

        async fn process(&self, _: ChattyInput, _: JobContext) -> Result<ChattyOutput, JobError> {
            Err(JobError::permanent(
                "CANCELLED",
                "a code of the handler's own",
            ))
        }
    }

    #[tokio::test]
    async fn only_a_cancellation_ends_cancelled_not_an_error_with_its_code() {
        let store = Arc::new(MemoryStore::new());
        let mut handlers = Handlers::default();
        handlers.register(Impostor);
        let worker = Worker::new(
            store.clone(),
            Arc::new(ManualClock::default()),
            Arc::new(handlers),
        );
        let request =
            AsyncRequest::new("r", "impostor", json!({ "reports": 0 }), chrono::Utc::now());
        store.create_request(&request).await.unwrap();
        assert_eq!(worker.run("r").await.unwrap(), Outcome::Failed);
        let failed = store.get_request("r").await.unwrap().unwrap();
        assert_eq!(failed.status, RequestStatus::Failed);
        assert_eq!(failed.error.unwrap().code, "CANCELLED");
        assert!(JobError::cancelled().is_cancellation());
        assert!(!JobError::permanent("CANCELLED", "x").is_cancellation());
    }

    /// A worker with a `chatty` request "r" of this input enqueued, and the store's feed.
    async fn chatty(
        input: serde_json::Value,
    ) -> (Worker, tokio::sync::mpsc::UnboundedReceiver<Change>) {
        let store = Arc::new(MemoryStore::new());
        let feed = store.changes();
        let mut handlers = Handlers::default();
        handlers.register(Chatty);
        let worker = Worker::new(
            store.clone(),
            Arc::new(ManualClock::default()),
            Arc::new(handlers),
        );
        let request = AsyncRequest::new("r", "chatty", input, chrono::Utc::now());
        store.create_request(&request).await.unwrap();
        (worker, feed)
    }

    #[tokio::test]
    async fn thousands_of_reports_make_a_bounded_number_of_writes_and_the_last_one_is_kept() {
        let (worker, mut feed) = chatty(json!({ "reports": 5000 })).await;
        let started = tokio::time::Instant::now();
        assert_eq!(worker.run("r").await.unwrap(), Outcome::Completed);
        let elapsed = started.elapsed();
        let mut changes: Vec<Change> = Vec::new();
        while let Ok(change) = feed.try_recv() {
            changes.push(change);
        }
        let reports = changes
            .iter()
            .filter(|c| {
                c.new
                    .as_ref()
                    .is_some_and(|r| r.status == RequestStatus::Running)
            })
            .count();
        // One write per interval at most (the claim, the first report, then one per 50 ms),
        // plus the flush before the outcome.
        let bound = 3 + usize::try_from(elapsed.as_millis() / 50).unwrap();
        assert!(
            reports <= bound,
            "{reports} writes in {elapsed:?} (bound {bound})"
        );
        let last = changes.last().unwrap().new.clone().unwrap();
        assert_eq!(last.status, RequestStatus::Completed);
        assert_eq!(
            last.message.as_deref(),
            Some("report 5000"),
            "the latest report is kept"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_report_left_waiting_is_written_once_its_interval_passes() {
        let (worker, mut feed) = chatty(json!({ "reports": 2, "quietMs": 1000 })).await;
        let job = tokio::spawn(async move { worker.run("r").await });
        // The second report came within the interval of the first: it waits, and is written
        // when the interval has passed, while the handler is still quiet.
        tokio::time::sleep(DEFAULT_PROGRESS_INTERVAL * 2).await;
        let mut messages = Vec::new();
        while let Ok(change) = feed.try_recv() {
            let state = change.new.unwrap();
            messages.push((state.status, state.message.clone()));
        }
        assert_eq!(
            messages.last(),
            Some(&(RequestStatus::Running, Some("report 2".to_owned()))),
            "{messages:?}"
        );
        assert_eq!(job.await.unwrap().unwrap(), Outcome::Completed);
        let last = feed.try_recv().unwrap().new.unwrap();
        assert_eq!(last.status, RequestStatus::Completed);
        assert!(
            feed.try_recv().is_err(),
            "nothing written after the outcome"
        );
    }
}
