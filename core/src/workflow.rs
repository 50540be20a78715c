//! Durable workflows: a request whose handler checkpoints its steps, starts child requests
//! and waits, suspended, with no worker running it.
//!
//! A handler's durable calls (`step`, `child`, `sleep`) are numbered in the order it makes
//! them. Each one's outcome is a [`Checkpoint`] at its number, kept in the store before the
//! call returns; a later attempt of the same request replays the checkpoints instead of
//! running the calls again, and fails `NON_DETERMINISTIC` when a call at a number is not the
//! one recorded there. A call that must wait (children not ended, a time not reached)
//! suspends the request: RUNNING → WAITING ([`AsyncRequest::suspend`]); the processor or the
//! sweeper wakes it ([`AsyncRequest::wake`]) and it runs again from its first call.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{AsyncRequest, RequestStatus, Result};

/// The error code of a request whose replay did not match its checkpoints.
pub const NON_DETERMINISTIC: &str = "NON_DETERMINISTIC";

/// The outcome of one durable call, kept for replay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The call's number in the handler's order, from 0.
    pub index: u32,
    /// What the call was: `step:{name}`, `children:{action}` or `sleep`.
    pub name: String,
    /// Its outcome: a step's result, the children's ids and inputs' digest, a wake time.
    pub value: Value,
}

/// What a suspended request waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wait {
    /// Every one of these children to end.
    Children(Vec<String>),
    /// This time.
    Until(DateTime<Utc>),
}

impl AsyncRequest {
    /// RUNNING → WAITING: the attempt ends, suspended until `wait` is over; no worker holds it.
    /// The message says what it waits for.
    pub fn suspend(&mut self, wait: Wait, now: DateTime<Utc>) -> Result<()> {
        if self.status != RequestStatus::Running {
            return Err(self.refuse("wait"));
        }
        self.status = RequestStatus::Waiting;
        self.message = Some(match wait {
            Wait::Children(ids) => {
                self.waiting_for = ids;
                let total = self.waiting_for.len();
                format!("waiting for {total} of {total} children")
            }
            Wait::Until(at) => {
                self.wake_at = Some(at);
                format!(
                    "waiting until {}",
                    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                )
            }
        });
        self.touch(now);
        Ok(())
    }

    /// WAITING → QUEUED: what it waited for is over; it runs again, replaying its
    /// checkpoints, with its whole retry budget.
    pub fn wake(&mut self, now: DateTime<Utc>) -> Result<()> {
        if self.status != RequestStatus::Waiting {
            return Err(self.refuse("wake"));
        }
        self.status = RequestStatus::Queued;
        self.waiting_for.clear();
        self.wake_at = None;
        self.redriven_after = self.attempts;
        self.touch(now);
        Ok(())
    }

    /// RUNNING → QUEUED: an attempt that ran out of time after checkpointing goes on in a
    /// new attempt from its checkpoints, with its whole retry budget.
    pub fn go_on(&mut self, now: DateTime<Utc>) -> Result<()> {
        if self.status != RequestStatus::Running {
            return Err(self.refuse("go on"));
        }
        self.status = RequestStatus::Queued;
        self.redriven_after = self.attempts;
        self.touch(now);
        Ok(())
    }

    /// Tells the subscribers of a WAITING request how many of the children it waits for
    /// are left: `message` is "waiting for {left} of {total} children", and only counts
    /// down (two processors that counted at different times cannot move it back up).
    /// Returns whether anything visible changed (the version moves only then).
    pub fn children_left(&mut self, left: usize, now: DateTime<Utc>) -> Result<bool> {
        const PREFIX: &str = "waiting for ";
        if self.status != RequestStatus::Waiting {
            return Err(self.refuse("count its children"));
        }
        let shown = self.message.as_deref().and_then(|message| {
            message
                .strip_prefix(PREFIX)?
                .split(' ')
                .next()?
                .parse()
                .ok()
        });
        if shown.is_some_and(|shown: usize| shown <= left) {
            return Ok(false);
        }
        let message = Some(format!(
            "{PREFIX}{left} of {} children",
            self.waiting_for.len()
        ));
        self.message = message;
        self.touch(now);
        Ok(true)
    }

    /// Whether a WAITING request's time to wake has come.
    pub fn wake_due(&self, now: DateTime<Utc>) -> bool {
        self.status == RequestStatus::Waiting && self.wake_at.is_some_and(|at| at <= now)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{Clock, ManualClock};

    #[test]
    fn a_request_waits_and_wakes_with_its_whole_budget() {
        let clock = ManualClock::default();
        let mut r = AsyncRequest::new("w", "flow", json!({}), clock.now());
        r.start(clock.now()).unwrap();
        r.suspend(Wait::Children(vec!["w.0".into()]), clock.now())
            .unwrap();
        assert_eq!(
            (r.status, r.waiting_for.clone(), r.version),
            (RequestStatus::Waiting, vec!["w.0".to_owned()], 3)
        );
        assert!(r.start(clock.now()).is_err(), "no worker runs it");
        r.wake(clock.now()).unwrap();
        assert_eq!((r.status, r.drive_attempts()), (RequestStatus::Queued, 0));
        assert!(r.waiting_for.is_empty());
        r.start(clock.now()).unwrap();
        let at = clock.now() + chrono::Duration::seconds(2);
        r.suspend(Wait::Until(at), clock.now()).unwrap();
        assert!(!r.wake_due(clock.now()));
        clock.advance(chrono::Duration::seconds(2));
        assert!(r.wake_due(clock.now()));
        // The children left only count down.
        r.wake(clock.now()).unwrap();
        r.start(clock.now()).unwrap();
        r.suspend(Wait::Children(vec!["a".into(), "b".into()]), clock.now())
            .unwrap();
        assert_eq!(r.message.as_deref(), Some("waiting for 2 of 2 children"));
        assert!(r.children_left(1, clock.now()).unwrap());
        assert_eq!(r.message.as_deref(), Some("waiting for 1 of 2 children"));
        assert!(!r.children_left(2, clock.now()).unwrap(), "a late count");
        assert!(!r.children_left(1, clock.now()).unwrap());
        // Cancelled while waiting: at once.
        r.cancel(clock.now()).unwrap();
        assert_eq!((r.status, r.wake_at), (RequestStatus::Cancelled, None));
    }
}
