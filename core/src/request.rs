//! The async request: one job, from the mutation that enqueued it to its one terminal state.
//!
//! Every move is a method that checks the current status and bumps `version` when the change
//! is visible to clients. Writers persist the result with a conditional write on the version
//! they read, so two writers never both win (see [`crate::Store::update_request`]).

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::batch::{BatchProgress, ChildMarks, ParentLink};
use crate::{Error, Result};

/// How long a request stays in the store after its last change before TTL removes it.
pub const RETENTION: Duration = Duration::days(7);

/// Where a request is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RequestStatus {
    /// Accepted, waiting for a worker.
    Queued,
    /// A worker runs the handler.
    Running,
    /// An attempt failed with a retryable error; another attempt is scheduled.
    Retrying,
    /// A workflow waits for its children or for a time, with no worker running it.
    Waiting,
    /// The handler returned its output. Terminal.
    Completed,
    /// The handler failed for good (permanent error or attempts exhausted). Terminal, and
    /// re-drivable.
    Failed,
    /// Cancelled by a client. Terminal.
    Cancelled,
}

impl RequestStatus {
    /// Every status, in the order of the GraphQL enum.
    pub const ALL: [RequestStatus; 7] = [
        Self::Queued,
        Self::Running,
        Self::Retrying,
        Self::Waiting,
        Self::Completed,
        Self::Failed,
        Self::Cancelled,
    ];

    /// The GraphQL enum value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "QUEUED",
            Self::Running => "RUNNING",
            Self::Retrying => "RETRYING",
            Self::Waiting => "WAITING",
            Self::Completed => "COMPLETED",
            Self::Failed => "FAILED",
            Self::Cancelled => "CANCELLED",
        }
    }

    /// Parses a GraphQL enum value.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == s)
    }

    /// No change follows a terminal status (but a re-drive of FAILED).
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}

impl std::fmt::Display for RequestStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a request failed, as a client sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestError {
    /// A stable machine-readable code, e.g. `UPSTREAM_UNAVAILABLE`.
    pub code: String,
    /// A message meant for people.
    pub message: String,
    /// Whether another attempt could succeed.
    pub retryable: bool,
}

/// One job and everything a client can know about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AsyncRequest {
    /// The request id.
    pub id: String,
    /// The registered handler's action name, e.g. `generateReport`.
    pub action: String,
    /// Where the request is in its life.
    pub status: RequestStatus,
    /// The handler's input, validated against its input type when enqueued.
    pub payload: Value,
    /// 0.0 ..= 1.0, never decreasing within an attempt chain.
    pub progress: f64,
    /// The last progress message.
    pub message: Option<String>,
    /// +1 on every change a client can see. Pushes carry it; subscribers never get an older
    /// version after a newer one.
    pub version: u64,
    /// +1 on every write, visible or not: what each update is conditioned on, so that two
    /// writers never overwrite each other (a lease renewal never undoes a cancel).
    #[serde(default)]
    pub revision: u64,
    /// Attempts started so far.
    pub attempts: u32,
    /// When it was enqueued.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// The handler's output, serialized; set when COMPLETED.
    pub result: Option<Value>,
    /// Set when FAILED (and kept while RETRYING, to show why).
    pub error: Option<RequestError>,
    /// When the next attempt is due, while RETRYING.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// A client asked to cancel while the handler was running; the handler is told.
    #[serde(default)]
    pub cancel_requested: bool,
    /// TTL attribute, epoch seconds: the store may drop the item after this.
    pub expires_at: i64,
    /// While RUNNING: until when the worker running it holds it. A worker renews it while
    /// its handler runs; once it has passed, the worker is presumed dead and another may
    /// claim the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_until: Option<DateTime<Utc>>,
    /// `attempts` when it was last re-driven: each drive gets the handler's whole retry
    /// budget, while `attempts` keeps counting.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub redriven_after: u32,
    /// Higher starts first when jobs wait for a worker; 0 unless the client set it, within
    /// [`PRIORITIES`].
    #[serde(default, skip_serializing_if = "is_zero")]
    pub priority: i32,
    /// The tenant it belongs to: only its principals see it.
    #[serde(default = "dev_tenant")]
    pub tenant: String,
    /// The user who enqueued it.
    #[serde(default = "anonymous")]
    pub owner: String,
    /// `name@version` of the template it was started from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// The batch it belongs to, and its place there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ParentLink>,
    /// On a batch: its children's counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<BatchProgress>,
    /// On a batch: each child as last counted (see [`crate::batch`]). Not part of what a
    /// client sees, nor of the history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child_marks: Option<ChildMarks>,
    /// While WAITING: the children it waits for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiting_for: Vec<String>,
    /// While WAITING: when it wakes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wake_at: Option<DateTime<Utc>>,
}

fn dev_tenant() -> String {
    crate::auth::DEV_TENANT.to_owned()
}

fn anonymous() -> String {
    "anonymous".to_owned()
}

/// The error code of a request whose worker kept stopping without an outcome (killed by
/// memory or its time limit) until its attempts ran out.
pub const WORKER_LOST: &str = "WORKER_LOST";

/// How a worker's [`AsyncRequest::claim`] went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claimed {
    /// RUNNING: the new attempt is the claiming worker's.
    Started,
    /// The previous attempt's worker was lost and that was its last attempt: FAILED.
    Lost,
}

/// The priorities a client may give a request.
pub const PRIORITIES: std::ops::RangeInclusive<i32> = -100..=100;

fn is_zero<N: Default + PartialEq>(n: &N) -> bool {
    *n == N::default()
}

impl AsyncRequest {
    /// A new QUEUED request at version 1, of the development tenant until
    /// [`AsyncRequest::owned_by`] says otherwise.
    pub fn new(
        id: impl Into<String>,
        action: impl Into<String>,
        payload: Value,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            id: id.into(),
            action: action.into(),
            status: RequestStatus::Queued,
            payload,
            progress: 0.0,
            message: None,
            version: 1,
            revision: 0,
            attempts: 0,
            created_at: now,
            updated_at: now,
            result: None,
            error: None,
            next_attempt_at: None,
            cancel_requested: false,
            expires_at: (now + RETENTION).timestamp(),
            lease_until: None,
            redriven_after: 0,
            priority: 0,
            tenant: dev_tenant(),
            owner: anonymous(),
            template: None,
            parent: None,
            batch: None,
            child_marks: None,
            waiting_for: Vec::new(),
            wake_at: None,
        }
    }

    /// The same request, belonging to `principal`'s tenant and owned by its user.
    #[must_use]
    pub fn owned_by(mut self, principal: &crate::Principal) -> Self {
        self.tenant.clone_from(&principal.tenant);
        self.owner.clone_from(&principal.user);
        self
    }

    /// The same request with another priority.
    #[must_use]
    pub fn with_priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Attempts started since the request was last (re-)driven.
    pub fn drive_attempts(&self) -> u32 {
        self.attempts.saturating_sub(self.redriven_after)
    }

    pub(crate) fn refuse(&self, action: &'static str) -> Error {
        Error::Transition {
            id: self.id.clone(),
            action,
            status: self.status,
        }
    }

    pub(crate) fn touch(&mut self, now: DateTime<Utc>) {
        if self.status != RequestStatus::Running {
            self.lease_until = None;
        }
        self.version += 1;
        self.updated_at = now;
        self.expires_at = (now + RETENTION).timestamp();
    }

    /// A worker claims the request for a new attempt held until `now + lease`: from QUEUED,
    /// from RETRYING once its next attempt is due, or from RUNNING when the previous
    /// worker's lease has passed (it died: its attempt counts). When that lost attempt was
    /// the last of `max_attempts`, the request ends FAILED with `WORKER_LOST` instead
    /// ([`Claimed::Lost`]), which a client may retry.
    pub fn claim(
        &mut self,
        now: DateTime<Utc>,
        lease: Duration,
        max_attempts: u32,
    ) -> Result<Claimed> {
        let abandoned = self.status == RequestStatus::Running
            && self.lease_until.is_some_and(|until| until < now);
        if abandoned {
            if self.drive_attempts() >= max_attempts.max(1) {
                self.status = RequestStatus::Failed;
                self.error = Some(RequestError {
                    code: WORKER_LOST.to_owned(),
                    message: format!(
                        "the worker running attempt {} stopped without an outcome, and it was the last attempt",
                        self.attempts
                    ),
                    retryable: true,
                });
                self.touch(now);
                return Ok(Claimed::Lost);
            }
            self.status = RequestStatus::Queued;
        }
        if self.status == RequestStatus::Retrying && self.next_attempt_at.is_some_and(|at| at > now)
        {
            return Err(self.refuse("start before its next attempt is due"));
        }
        self.start(now)?;
        self.lease_until = Some(now + lease);
        Ok(Claimed::Started)
    }

    /// Extends the running attempt's lease to `now + lease`. Not a visible change: the
    /// version stays.
    pub fn renew(&mut self, now: DateTime<Utc>, lease: Duration) -> Result<()> {
        if self.status != RequestStatus::Running {
            return Err(self.refuse("renew its lease"));
        }
        self.lease_until = Some(now + lease);
        Ok(())
    }

    /// Whether a worker's lease on the running attempt has passed.
    pub fn lease_expired(&self, now: DateTime<Utc>) -> bool {
        self.status == RequestStatus::Running && self.lease_until.is_some_and(|until| until < now)
    }

    /// QUEUED or RETRYING → RUNNING: a worker starts an attempt.
    pub fn start(&mut self, now: DateTime<Utc>) -> Result<()> {
        if self.is_batch() {
            return Err(self.refuse("run: it is a batch, its children run"));
        }
        if !matches!(self.status, RequestStatus::Queued | RequestStatus::Retrying) {
            return Err(self.refuse("start"));
        }
        self.status = RequestStatus::Running;
        self.attempts += 1;
        self.next_attempt_at = None;
        self.touch(now);
        Ok(())
    }

    /// Records progress while RUNNING. The fraction is clamped to 0.0..=1.0 and never moves
    /// backwards. Returns whether anything visible changed (no version bump otherwise).
    pub fn report(
        &mut self,
        fraction: f64,
        message: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        if self.status != RequestStatus::Running {
            return Err(self.refuse("report progress"));
        }
        let fraction = if fraction.is_nan() {
            self.progress
        } else {
            fraction.clamp(0.0, 1.0)
        };
        let progress = self.progress.max(fraction);
        let message = message.or_else(|| self.message.clone());
        if progress == self.progress && message == self.message {
            return Ok(false);
        }
        self.progress = progress;
        self.message = message;
        self.touch(now);
        Ok(true)
    }

    /// RUNNING → COMPLETED with the handler's output.
    pub fn complete(&mut self, result: Value, now: DateTime<Utc>) -> Result<()> {
        if self.status != RequestStatus::Running {
            return Err(self.refuse("complete"));
        }
        self.status = RequestStatus::Completed;
        self.progress = 1.0;
        self.result = Some(result);
        self.error = None;
        self.touch(now);
        Ok(())
    }

    /// RUNNING → FAILED: a permanent error, or the last attempt failed.
    pub fn fail(&mut self, error: RequestError, now: DateTime<Utc>) -> Result<()> {
        if self.status != RequestStatus::Running {
            return Err(self.refuse("fail"));
        }
        self.status = RequestStatus::Failed;
        self.error = Some(error);
        self.touch(now);
        Ok(())
    }

    /// RUNNING → RETRYING: a retryable error with attempts left; the next one is due at `at`.
    pub fn retry_at(
        &mut self,
        error: RequestError,
        at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        if self.status != RequestStatus::Running {
            return Err(self.refuse("retry"));
        }
        self.status = RequestStatus::Retrying;
        self.error = Some(error);
        self.next_attempt_at = Some(at);
        self.touch(now);
        Ok(())
    }

    /// A client cancels. QUEUED or RETRYING → CANCELLED at once; RUNNING → the handler is
    /// told (`cancel_requested`) and the worker ends it CANCELLED. Cancelling a request that
    /// is already cancelled is not an error (the mutation is idempotent).
    pub fn cancel(&mut self, now: DateTime<Utc>) -> Result<()> {
        if self.is_batch() {
            return self.cancel_batch();
        }
        match self.status {
            RequestStatus::Queued | RequestStatus::Retrying | RequestStatus::Waiting => {
                self.status = RequestStatus::Cancelled;
                self.next_attempt_at = None;
                self.wake_at = None;
                self.waiting_for.clear();
                self.touch(now);
                Ok(())
            }
            RequestStatus::Running => {
                self.cancel_requested = true;
                Ok(())
            }
            RequestStatus::Cancelled => Ok(()),
            RequestStatus::Completed | RequestStatus::Failed => Err(self.refuse("be cancelled")),
        }
    }

    /// RUNNING → CANCELLED, once the handler has stopped after a cancellation.
    pub fn cancelled(&mut self, now: DateTime<Utc>) -> Result<()> {
        if self.status != RequestStatus::Running {
            return Err(self.refuse("end cancelled"));
        }
        self.status = RequestStatus::Cancelled;
        self.touch(now);
        Ok(())
    }

    /// FAILED → QUEUED: re-drive a dead letter. Progress starts again from zero; `attempts`
    /// keeps counting and the new drive gets the whole retry budget.
    pub fn redrive(&mut self, now: DateTime<Utc>) -> Result<()> {
        if self.is_batch() {
            return self.redrive_batch(now);
        }
        if self.status != RequestStatus::Failed {
            return Err(self.refuse("be retried"));
        }
        self.status = RequestStatus::Queued;
        self.error = None;
        self.progress = 0.0;
        self.message = None;
        self.redriven_after = self.attempts;
        self.touch(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Clock, ManualClock};
    use serde_json::json;

    fn queued() -> (AsyncRequest, ManualClock) {
        let clock = ManualClock::default();
        (
            AsyncRequest::new("r-1", "generateReport", json!({}), clock.now()),
            clock,
        )
    }

    #[test]
    fn happy_path_bumps_the_version_on_every_visible_change() {
        let (mut r, clock) = queued();
        assert_eq!((r.status, r.version), (RequestStatus::Queued, 1));
        r.start(clock.now()).unwrap();
        assert_eq!(
            (r.status, r.version, r.attempts),
            (RequestStatus::Running, 2, 1)
        );
        assert!(r.report(0.5, Some("half".into()), clock.now()).unwrap());
        assert_eq!(r.version, 3);
        r.complete(json!({"ok": true}), clock.now()).unwrap();
        assert_eq!(
            (r.status, r.version, r.progress),
            (RequestStatus::Completed, 4, 1.0)
        );
        assert!(r.updated_at > r.created_at);
    }

    #[test]
    fn progress_is_clamped_and_never_decreases() {
        let (mut r, clock) = queued();
        r.start(clock.now()).unwrap();
        r.report(0.6, None, clock.now()).unwrap();
        assert!(
            !r.report(0.2, None, clock.now()).unwrap(),
            "a lower fraction is no change"
        );
        assert_eq!(r.progress, 0.6);
        r.report(7.0, None, clock.now()).unwrap();
        assert_eq!(r.progress, 1.0);
        assert!(!r.report(f64::NAN, None, clock.now()).unwrap());
        assert_eq!(r.progress, 1.0);
    }

    #[test]
    fn a_repeated_report_is_not_a_visible_change() {
        let (mut r, clock) = queued();
        r.start(clock.now()).unwrap();
        assert!(r.report(0.1, Some("a".into()), clock.now()).unwrap());
        let version = r.version;
        assert!(!r.report(0.1, Some("a".into()), clock.now()).unwrap());
        assert_eq!(r.version, version);
    }

    #[test]
    fn terminal_states_refuse_further_moves() {
        let (mut r, clock) = queued();
        r.start(clock.now()).unwrap();
        r.complete(json!(1), clock.now()).unwrap();
        for result in [
            r.clone().start(clock.now()),
            r.clone().report(0.9, None, clock.now()).map(|_| ()),
            r.clone().fail(
                RequestError {
                    code: "X".into(),
                    message: "x".into(),
                    retryable: false,
                },
                clock.now(),
            ),
            r.clone().cancel(clock.now()),
            r.clone().redrive(clock.now()),
        ] {
            assert!(matches!(
                result,
                Err(Error::Transition {
                    status: RequestStatus::Completed,
                    ..
                })
            ));
        }
    }

    #[test]
    fn cancel_queued_is_immediate_and_running_is_requested() {
        let (mut r, clock) = queued();
        r.cancel(clock.now()).unwrap();
        assert_eq!((r.status, r.version), (RequestStatus::Cancelled, 2));

        let (mut r, clock) = queued();
        r.start(clock.now()).unwrap();
        r.cancel(clock.now()).unwrap();
        assert_eq!(r.status, RequestStatus::Running);
        assert!(r.cancel_requested);
        r.cancelled(clock.now()).unwrap();
        assert_eq!(r.status, RequestStatus::Cancelled);
    }

    #[test]
    fn retry_then_redrive() {
        let (mut r, clock) = queued();
        let error = RequestError {
            code: "FLAKY".into(),
            message: "try again".into(),
            retryable: true,
        };
        r.start(clock.now()).unwrap();
        let at = clock.now() + Duration::seconds(2);
        r.retry_at(error.clone(), at, clock.now()).unwrap();
        assert_eq!(
            (r.status, r.next_attempt_at),
            (RequestStatus::Retrying, Some(at))
        );
        r.start(clock.now()).unwrap();
        assert_eq!(r.attempts, 2);
        r.fail(error, clock.now()).unwrap();
        r.redrive(clock.now()).unwrap();
        assert_eq!(
            (r.status, r.attempts, r.drive_attempts(), r.error.is_none()),
            (RequestStatus::Queued, 2, 0, true),
            "attempts keep counting; the new drive has its whole budget"
        );
    }

    #[test]
    fn a_lost_last_attempt_fails_the_request_and_a_retry_waits_until_due() {
        let (mut r, clock) = queued();
        let lease = Duration::seconds(10);
        assert_eq!(r.claim(clock.now(), lease, 2).unwrap(), Claimed::Started);
        // Its worker dies: the lease passes and the next claim starts attempt 2.
        clock.advance(Duration::seconds(11));
        assert_eq!(r.claim(clock.now(), lease, 2).unwrap(), Claimed::Started);
        assert_eq!(r.attempts, 2);
        // That worker dies too: attempt 2 was the last.
        clock.advance(Duration::seconds(11));
        let version = r.version;
        assert_eq!(r.claim(clock.now(), lease, 2).unwrap(), Claimed::Lost);
        assert_eq!(r.status, RequestStatus::Failed);
        assert_eq!(r.version, version + 1);
        let error = r.error.clone().unwrap();
        assert_eq!((error.code.as_str(), error.retryable), (WORKER_LOST, true));
        assert!(r.claim(clock.now(), lease, 2).is_err(), "it is over");

        // A retry is claimed only once due, however often it is dispatched.
        let (mut r, clock) = queued();
        r.claim(clock.now(), lease, 3).unwrap();
        let error = RequestError {
            code: "X".into(),
            message: "x".into(),
            retryable: true,
        };
        r.retry_at(error, clock.now() + Duration::seconds(5), clock.now())
            .unwrap();
        assert!(r.claim(clock.now(), lease, 3).is_err(), "not due");
        assert_eq!(r.status, RequestStatus::Retrying);
        clock.advance(Duration::seconds(5));
        assert_eq!(r.claim(clock.now(), lease, 3).unwrap(), Claimed::Started);
    }
}
