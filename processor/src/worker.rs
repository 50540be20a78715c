//! Running one job: claim the request, run its handler with a progress sink, record the one
//! outcome.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use rand::Rng;
use streamer_core::store::modify_request;
use streamer_core::{AsyncRequest, Clock, Error, RequestError, RequestStatus, Result, Store};
use streamer_schema::{Handlers, JobContext, JobError, ProgressSink};

/// The first retry waits up to this long; each later one up to twice the previous.
const BACKOFF_BASE: Duration = Duration::from_millis(200);
/// No retry waits longer than this.
const BACKOFF_CAP: Duration = Duration::from_secs(60);

/// The delay before retry number `attempt` (1-based): exponential backoff with full jitter,
/// uniform in `0..=min(cap, base * 2^(attempt-1))`.
pub fn backoff(attempt: u32, rng: &mut impl Rng) -> Duration {
    let ceiling = BACKOFF_BASE
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
        .min(BACKOFF_CAP);
    Duration::from_millis(rng.random_range(0..=ceiling.as_millis() as u64))
}

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
}

/// Writes a running job's progress to the store.
struct StoreSink {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    request_id: String,
    cancelled: AtomicBool,
}

#[async_trait]
impl ProgressSink for StoreSink {
    async fn progress(&self, fraction: f64, message: Option<String>) -> Result<(), JobError> {
        let written = modify_request(
            &*self.store,
            &*self.clock,
            &self.request_id,
            |request, now| {
                let cancel = request.cancel_requested;
                request.report(fraction, message.clone(), now)?;
                Ok(cancel)
            },
        )
        .await;
        match written {
            Ok((_, false)) => Ok(()),
            Ok((_, true)) => {
                self.cancelled.store(true, Ordering::Relaxed);
                Err(JobError::cancelled())
            }
            Err(Error::Transition {
                status: RequestStatus::Cancelled,
                ..
            }) => {
                self.cancelled.store(true, Ordering::Relaxed);
                Err(JobError::cancelled())
            }
            Err(error) => {
                tracing::warn!(request_id = %self.request_id, %error, "progress write failed");
                Err(JobError::retryable(
                    "PROGRESS_WRITE_FAILED",
                    "progress could not be recorded",
                ))
            }
        }
    }

    fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }
}

/// Runs jobs against the store.
#[derive(Clone)]
pub struct Worker {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    handlers: Arc<Handlers>,
}

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
        }
    }

    /// Claims the request (QUEUED or RETRYING → RUNNING, a conditional write: one worker
    /// wins), runs its handler and records the outcome.
    pub async fn run(&self, request_id: &str) -> Result<Outcome> {
        let claimed = modify_request(&*self.store, &*self.clock, request_id, |request, now| {
            request.start(now)
        })
        .await;
        let request = match claimed {
            Ok((request, ())) => request,
            Err(Error::Transition { .. } | Error::NotFound(_)) => return Ok(Outcome::NotClaimed),
            Err(other) => return Err(other),
        };
        tracing::info!(request_id, action = %request.action, attempt = request.attempts, "job started");
        let Some(handler) = self.handlers.get(&request.action).cloned() else {
            let error = JobError::permanent(
                "UNKNOWN_ACTION",
                format!("no handler for action \"{}\"", request.action),
            );
            return self.finish(&request, Err(error), 1).await;
        };
        let sink = Arc::new(StoreSink {
            store: Arc::clone(&self.store),
            clock: Arc::clone(&self.clock),
            request_id: request_id.to_owned(),
            cancelled: AtomicBool::new(false),
        });
        let job = JobContext::new(request_id, request.attempts, sink);
        // A panicking handler fails its job; it must not take the worker down with it.
        let result = std::panic::AssertUnwindSafe(handler.run(request.payload.clone(), job))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| {
                Err(JobError::permanent(
                    "HANDLER_PANICKED",
                    "the handler panicked",
                ))
            });
        self.finish(&request, result, handler.max_attempts()).await
    }

    async fn finish(
        &self,
        started: &AsyncRequest,
        result: Result<serde_json::Value, JobError>,
        max_attempts: u32,
    ) -> Result<Outcome> {
        let retry_delay = backoff(started.attempts, &mut rand::rng());
        let (request, outcome) =
            modify_request(&*self.store, &*self.clock, &started.id, |request, now| {
                if request.status != RequestStatus::Running {
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
                    Err(error) if error.retryable && request.attempts < max_attempts => {
                        let at = now + chrono::Duration::from_std(retry_delay).unwrap_or_default();
                        request
                            .retry_at(RequestError::from(error.clone()), at, now)
                            .map(|()| Outcome::RetryAfter(retry_delay))
                    }
                    Err(error) => request
                        .fail(RequestError::from(error.clone()), now)
                        .map(|()| Outcome::Failed),
                }
            })
            .await?;
        tracing::info!(request_id = %request.id, status = %request.status, attempts = request.attempts, "job ended");
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn backoff_stays_within_its_jitter_bounds() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for attempt in 1..=12 {
            let ceiling = (200u64 << (attempt - 1)).min(60_000);
            for _ in 0..200 {
                let delay = backoff(attempt, &mut rng).as_millis() as u64;
                assert!(delay <= ceiling, "attempt {attempt}: {delay} > {ceiling}");
            }
        }
    }
}
