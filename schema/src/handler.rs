//! Typed handlers: what a user writes, and the type-erased registry the rest of the system
//! runs them through.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use async_graphql::{InputType, OutputType, Value as GqlValue, dynamic};
use async_trait::async_trait;
use futures::future::BoxFuture;
use serde::Serialize;
use serde_json::Value;
use streamer_core::{Backoff, RequestError};

use crate::bridge;

/// A job's failure, as its handler reports it: a code and a message for the client, and
/// whether another attempt could succeed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct JobError {
    /// A stable machine-readable code.
    pub code: String,
    /// A message meant for people.
    pub message: String,
    /// Whether the job should be retried.
    pub retryable: bool,
    /// Set only by [`JobError::cancelled`]: a handler's own error that happens to use the
    /// code `CANCELLED` is an ordinary failure, not a cancellation.
    cancellation: bool,
    /// Set only when a durable call suspended the request (see [`JobContext::step`]).
    pub(crate) suspension: bool,
}

impl JobError {
    /// A failure that another attempt could fix (a timeout, a throttled upstream).
    pub fn retryable(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            retryable: true,
            cancellation: false,
            suspension: false,
        }
    }

    /// A failure that no retry will fix (bad data, a refused operation).
    pub fn permanent(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            retryable: false,
            cancellation: false,
            suspension: false,
        }
    }

    /// The job was cancelled by a client; returned by [`JobContext::progress`] so a handler
    /// can stop with `?`.
    pub fn cancelled() -> Self {
        Self {
            cancellation: true,
            ..Self::permanent(Self::CANCELLED, "the request was cancelled")
        }
    }

    /// The code of [`JobError::cancelled`].
    pub const CANCELLED: &'static str = "CANCELLED";

    /// Whether this is the cancellation error ([`JobError::cancelled`]).
    pub fn is_cancellation(&self) -> bool {
        self.cancellation
    }

    /// Whether a durable call suspended the request: the handler returns it with `?` and
    /// the request waits, with no worker, until its children end or its time comes.
    pub fn is_suspension(&self) -> bool {
        self.suspension
    }
}

impl From<JobError> for RequestError {
    fn from(error: JobError) -> Self {
        RequestError {
            code: error.code,
            message: error.message,
            retryable: error.retryable,
        }
    }
}

/// Where a running job's progress goes; the processor implements it.
#[async_trait]
pub trait ProgressSink: Send + Sync {
    /// Records progress. Errs with [`JobError::cancelled`] once the request was cancelled.
    async fn progress(&self, fraction: f64, message: Option<String>) -> Result<(), JobError>;
    /// Whether a client asked to cancel.
    fn is_cancelled(&self) -> bool;
    /// Resolves once a client asked to cancel (never, for a sink that cannot tell).
    async fn cancelled(&self) {
        std::future::pending::<()>().await;
    }
}

/// What a running handler knows about its job, and how it reports progress.
#[derive(Clone)]
pub struct JobContext {
    request_id: String,
    attempt: u32,
    sink: Arc<dyn ProgressSink>,
    deadline: Option<tokio::time::Instant>,
    pub(crate) durable: Option<Arc<crate::durable::Durable>>,
}

impl fmt::Debug for JobContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobContext")
            .field("request_id", &self.request_id)
            .field("attempt", &self.attempt)
            .finish()
    }
}

impl JobContext {
    /// A context for one attempt of one request.
    pub fn new(request_id: impl Into<String>, attempt: u32, sink: Arc<dyn ProgressSink>) -> Self {
        Self {
            request_id: request_id.into(),
            attempt,
            sink,
            deadline: None,
            durable: None,
        }
    }

    /// The attempt is ended (as a retryable `DEADLINE_EXCEEDED` failure) at `deadline`.
    pub fn with_deadline(mut self, deadline: tokio::time::Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// How long the attempt may still run before it is ended, when it has a deadline: a
    /// handler with long steps can stop early and save what it has.
    pub fn remaining(&self) -> Option<std::time::Duration> {
        self.deadline
            .map(|deadline| deadline.saturating_duration_since(tokio::time::Instant::now()))
    }

    /// The request being run.
    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    /// Which attempt this is, from 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Reports progress: `fraction` in 0.0..=1.0 (clamped; never moves backwards) and a
    /// message for the client. Errs once the request was cancelled: propagate it with `?`.
    pub async fn progress(
        &self,
        fraction: f64,
        message: impl Into<String>,
    ) -> Result<(), JobError> {
        self.sink.progress(fraction, Some(message.into())).await
    }

    /// Whether a client asked to cancel.
    pub fn is_cancelled(&self) -> bool {
        self.sink.is_cancelled()
    }

    /// Resolves as soon as a client asks to cancel: a handler that waits (a sleep, a call to
    /// another service) selects on it to stop at once. A handler that does not stop within
    /// the worker's grace period is dropped, and the request ends CANCELLED either way.
    pub async fn cancelled(&self) {
        self.sink.cancelled().await;
    }
}

/// A job type: a typed input (a GraphQL input object), a typed output (a GraphQL object),
/// and the work in between. Registering it adds `ACTION(input: Input!): AsyncRequest!` to
/// `Mutation` and `Output` to the `RequestOutput` union.
///
/// The output is stored as JSON; its serde field names must be the GraphQL field names
/// (`#[serde(rename_all = "camelCase")]` next to `#[derive(SimpleObject)]`).
pub trait Handler: Send + Sync + 'static {
    /// The action name, which is also the mutation field name, e.g. `generateReport`.
    const ACTION: &'static str;
    /// The input object.
    type Input: InputType + Send;
    /// The output object.
    type Output: OutputType + Serialize + Send;

    /// Runs one attempt.
    fn process(
        &self,
        input: Self::Input,
        job: JobContext,
    ) -> impl Future<Output = Result<Self::Output, JobError>> + Send;

    /// How many attempts a retryable failure gets in all.
    fn max_attempts(&self) -> u32 {
        3
    }

    /// The wait before each retry: exponential, full jitter.
    fn backoff(&self) -> Backoff {
        JOB_BACKOFF
    }
}

/// The wait before a job's retry unless its handler says otherwise: up to 200 ms after the
/// first attempt, doubling, at most a minute.
pub const JOB_BACKOFF: Backoff = Backoff::new(
    std::time::Duration::from_millis(200),
    std::time::Duration::from_secs(60),
);

type Run =
    Arc<dyn Fn(Value, JobContext) -> BoxFuture<'static, Result<Value, JobError>> + Send + Sync>;
type Validate = fn(GqlValue) -> Result<Value, String>;
type StandIns = fn(&mut Value) -> Result<(), String>;

/// A registered handler, with its types erased.
pub struct Registered {
    action: String,
    input_type: String,
    output_type: String,
    max_attempts: u32,
    backoff: Backoff,
    types: fn() -> Result<Vec<dynamic::Type>, String>,
    validate: Validate,
    stand_ins: StandIns,
    run: Run,
}

impl fmt::Debug for Registered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registered")
            .field("action", &self.action)
            .field("input_type", &self.input_type)
            .field("output_type", &self.output_type)
            .finish()
    }
}

fn validate<H: Handler>(value: GqlValue) -> Result<Value, String> {
    let input = H::Input::parse(Some(value))
        .map_err(|e| e.into_server_error(Default::default()).message)?;
    // Stored in canonical form: defaults filled in, GraphQL field names.
    input.to_value().into_json().map_err(|e| e.to_string())
}

impl Registered {
    fn new<H: Handler>(handler: H) -> Self {
        let handler = Arc::new(handler);
        let max_attempts = handler.max_attempts().max(1);
        let backoff = handler.backoff();
        let run: Run = Arc::new(move |payload, job| {
            let handler = Arc::clone(&handler);
            Box::pin(async move {
                let value = GqlValue::from_json(payload)
                    .map_err(|e| JobError::permanent("BAD_PAYLOAD", e.to_string()))?;
                let input = H::Input::parse(Some(value)).map_err(|e| {
                    JobError::permanent(
                        "BAD_PAYLOAD",
                        e.into_server_error(Default::default()).message,
                    )
                })?;
                let output = handler.process(input, job).await?;
                serde_json::to_value(output)
                    .map_err(|e| JobError::permanent("BAD_OUTPUT", e.to_string()))
            })
        });
        Self {
            action: H::ACTION.to_owned(),
            input_type: H::Input::type_name().into_owned(),
            output_type: H::Output::type_name().into_owned(),
            max_attempts,
            backoff,
            types: bridge::dynamic_types::<H::Input, H::Output>,
            validate: validate::<H>,
            stand_ins: bridge::with_required_stand_ins::<H::Input>,
            run,
        }
    }

    /// The action name.
    pub fn action(&self) -> &str {
        &self.action
    }

    /// The GraphQL input type name.
    pub fn input_type(&self) -> &str {
        &self.input_type
    }

    /// The GraphQL output type name (a member of `RequestOutput`).
    pub fn output_type(&self) -> &str {
        &self.output_type
    }

    /// How many attempts a retryable failure gets in all.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The wait before each retry.
    pub fn backoff(&self) -> Backoff {
        self.backoff
    }

    /// Checks a payload against the input type; returns it in canonical form (defaults
    /// filled in), or a message saying why it does not fit.
    pub fn validate(&self, payload: Value) -> Result<Value, String> {
        let value = GqlValue::from_json(payload).map_err(|e| e.to_string())?;
        (self.validate)(value).map_err(|e| format!("payload does not fit {}: {e}", self.input_type))
    }

    /// Checks a payload that may leave required fields out (a template's): unknown and
    /// mistyped fields are refused as by [`Registered::validate`].
    pub fn validate_partial(&self, payload: &Value) -> Result<(), String> {
        let mut filled = payload.clone();
        (self.stand_ins)(&mut filled)
            .map_err(|e| format!("payload does not fit {}: {e}", self.input_type))?;
        self.validate(filled).map(|_| ())
    }

    pub(crate) fn validate_value(&self, value: GqlValue) -> Result<Value, String> {
        (self.validate)(value).map_err(|e| format!("input does not fit {}: {e}", self.input_type))
    }

    /// Builds the dynamic types of the input and the output (once per schema build: dynamic
    /// types cannot be cloned).
    pub(crate) fn types(&self) -> Result<Vec<dynamic::Type>, String> {
        (self.types)()
    }

    /// Runs one attempt on a stored payload.
    pub fn run(
        &self,
        payload: Value,
        job: JobContext,
    ) -> BoxFuture<'static, Result<Value, JobError>> {
        (self.run)(payload, job)
    }
}

/// The registered handlers, by action name.
#[derive(Debug, Default)]
pub struct Handlers {
    by_action: BTreeMap<String, Arc<Registered>>,
}

impl Handlers {
    /// No handlers yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a handler.
    ///
    /// # Panics
    ///
    /// When the action is already registered: two handlers cannot share a mutation field.
    pub fn register<H: Handler>(&mut self, handler: H) {
        let registered = Registered::new(handler);
        let previous = self
            .by_action
            .insert(registered.action.clone(), Arc::new(registered));
        assert!(previous.is_none(), "action {} registered twice", H::ACTION);
    }

    /// The handler of an action.
    pub fn get(&self, action: &str) -> Option<&Arc<Registered>> {
        self.by_action.get(action)
    }

    /// Every handler, by action name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Registered>> {
        self.by_action.values()
    }

    /// The action names, sorted.
    pub fn actions(&self) -> Vec<String> {
        self.by_action.keys().cloned().collect()
    }

    /// Whether no handler is registered.
    pub fn is_empty(&self) -> bool {
        self.by_action.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Discard;

    #[async_trait]
    impl ProgressSink for Discard {
        async fn progress(&self, _: f64, _: Option<String>) -> Result<(), JobError> {
            Ok(())
        }

        fn is_cancelled(&self) -> bool {
            false
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_handler_reads_the_time_it_has_left() {
        let job = JobContext::new("r", 1, Arc::new(Discard));
        assert_eq!(job.remaining(), None, "no deadline, no limit");
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        let job = job.with_deadline(deadline);
        assert_eq!(job.remaining(), Some(std::time::Duration::from_secs(60)));
        tokio::time::sleep(std::time::Duration::from_secs(45)).await;
        assert_eq!(job.remaining(), Some(std::time::Duration::from_secs(15)));
        tokio::time::sleep(std::time::Duration::from_secs(30)).await;
        assert_eq!(job.remaining(), Some(std::time::Duration::ZERO));
    }
}
