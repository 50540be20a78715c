//! Batches: a request whose children are ordinary requests, counted into it exactly once.
//!
//! A batch keeps one mark per child: the child's state as last counted, and the child's
//! `version` at that state. A change of a child is counted only when its version is above the
//! mark's, so a change delivered twice (a retried stream batch, a processor that crashed after
//! counting) or late (an older change after a newer one) moves nothing. The counts
//! ([`BatchProgress`]) are the marks summed; the batch's status, progress and message follow
//! from them ([`AsyncRequest::count_children`]).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{AsyncRequest, Error, RequestError, RequestStatus, Result};

/// The error code of a batch whose children all ended and some failed.
pub const BATCH_FAILED: &str = "BATCH_FAILED";

/// The most children a batch may have, whatever the limits say: a mark takes 5 bytes of the
/// batch's item (7 as stored), and the item must stay within DynamoDB's 400 KB.
pub const MAX_BATCH_ITEMS: usize = 10_000;

/// Where a child is, as its batch counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChildState {
    /// Not started yet.
    Queued,
    /// Started and not ended (running, or retrying between attempts).
    Running,
    /// Ended with its output.
    Completed,
    /// Ended failed.
    Failed,
    /// Ended cancelled.
    Cancelled,
}

impl ChildState {
    /// How a batch counts a child in `status`.
    pub fn of(status: RequestStatus) -> Self {
        match status {
            RequestStatus::Queued => Self::Queued,
            RequestStatus::Running | RequestStatus::Retrying | RequestStatus::Waiting => {
                Self::Running
            }
            RequestStatus::Completed => Self::Completed,
            RequestStatus::Failed => Self::Failed,
            RequestStatus::Cancelled => Self::Cancelled,
        }
    }

    /// Whether the child has ended.
    pub fn ended(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }

    fn byte(self) -> u8 {
        match self {
            Self::Queued => 0,
            Self::Running => 1,
            Self::Completed => 2,
            Self::Failed => 3,
            Self::Cancelled => 4,
        }
    }

    fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            0 => Self::Queued,
            1 => Self::Running,
            2 => Self::Completed,
            3 => Self::Failed,
            4 => Self::Cancelled,
            _ => return None,
        })
    }
}

/// A batch's counts of its children, as `AsyncRequest.batch` shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchProgress {
    /// Children in the batch.
    pub total: u32,
    /// Not started.
    pub queued: u32,
    /// Started, not ended.
    pub running: u32,
    /// Completed.
    pub completed: u32,
    /// Failed.
    pub failed: u32,
    /// Cancelled.
    pub cancelled: u32,
}

impl BatchProgress {
    /// Children that have ended.
    pub fn ended(&self) -> u32 {
        self.completed + self.failed + self.cancelled
    }
}

/// A child's place in its batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentLink {
    /// The batch's request id.
    pub id: String,
    /// The child's position in the batch, from 0.
    pub index: u32,
}

/// The id of the child at `index` of batch `parent`: the same on every try, so that a child
/// is never created twice.
pub fn child_id(parent: &str, index: u32) -> String {
    format!("{parent}.{index}")
}

/// One child as its batch last counted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    /// The child's version at that state (0: as created, before any change was counted).
    pub version: u32,
    /// Its state.
    pub state: ChildState,
}

/// The marks of a batch's children, by index; stored as compact text (5 bytes a child).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChildMarks(pub Vec<Mark>);

impl Serialize for ChildMarks {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let mut bytes = Vec::with_capacity(self.0.len() * 5);
        for mark in &self.0 {
            bytes.extend_from_slice(&mark.version.to_be_bytes());
            bytes.push(mark.state.byte());
        }
        serializer.serialize_str(&STANDARD.encode(bytes))
    }
}

impl<'de> Deserialize<'de> for ChildMarks {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let text = String::deserialize(deserializer)?;
        let bytes = STANDARD.decode(text).map_err(D::Error::custom)?;
        if bytes.len() % 5 != 0 {
            return Err(D::Error::custom("child marks are 5 bytes each"));
        }
        bytes
            .chunks_exact(5)
            .map(|chunk| {
                let version = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
                let state = ChildState::from_byte(chunk[4])
                    .ok_or_else(|| D::Error::custom("unknown child state"))?;
                Ok(Mark { version, state })
            })
            .collect::<std::result::Result<_, _>>()
            .map(Self)
    }
}

/// A change of one child to count into its batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildMove {
    /// The child's index.
    pub index: u32,
    /// The child's version after the change.
    pub version: u64,
    /// Its state after the change.
    pub state: ChildState,
}

impl AsyncRequest {
    /// A new batch of `total` children of `action`, QUEUED at version 1. Its children are
    /// made by [`AsyncRequest::child`].
    pub fn new_batch(
        id: impl Into<String>,
        action: impl Into<String>,
        total: u32,
        now: DateTime<Utc>,
    ) -> Self {
        let mut batch = Self::new(id, action, serde_json::Value::Null, now);
        batch.batch = Some(BatchProgress {
            total,
            queued: total,
            ..BatchProgress::default()
        });
        batch.child_marks = Some(ChildMarks(vec![
            Mark {
                version: 0,
                state: ChildState::Queued,
            };
            total as usize
        ]));
        batch.message = Some(format!("0 of {total} done"));
        batch
    }

    /// The child at `index` of this batch, with `payload`: QUEUED, of the batch's tenant,
    /// owner and priority, created `index` microseconds after the batch, so that the
    /// children list in their order among the tenant's requests too.
    pub fn child(&self, index: u32, payload: serde_json::Value) -> Self {
        let mut child = Self::new(
            crate::batch::child_id(&self.id, index),
            self.action.clone(),
            payload,
            self.created_at + chrono::Duration::microseconds(i64::from(index)),
        );
        child.priority = self.priority;
        child.tenant.clone_from(&self.tenant);
        child.owner.clone_from(&self.owner);
        child.template.clone_from(&self.template);
        child.parent = Some(ParentLink {
            id: self.id.clone(),
            index,
        });
        child
    }

    /// Whether this request is a batch (its children run; it never does).
    pub fn is_batch(&self) -> bool {
        self.batch.is_some()
    }

    /// Counts changes of children into this batch: each one whose version is above its
    /// child's mark. When the counts moved, the status, progress and message follow them and
    /// the version rises; returns whether they did. A batch ends when its last child ends:
    /// CANCELLED when it was cancelled, FAILED (`BATCH_FAILED`) when a child failed,
    /// CANCELLED when a child was cancelled, COMPLETED otherwise.
    pub fn count_children(&mut self, moves: &[ChildMove], now: DateTime<Utc>) -> Result<bool> {
        let Some(marks) = self.child_marks.as_mut() else {
            return Err(Error::Transition {
                id: self.id.clone(),
                action: "count children: it is not a batch",
                status: self.status,
            });
        };
        let mut moved = false;
        for change in moves {
            let Some(mark) = marks.0.get_mut(change.index as usize) else {
                continue;
            };
            let version = u32::try_from(change.version).unwrap_or(u32::MAX);
            if version <= mark.version {
                continue;
            }
            moved |= mark.state != change.state;
            *mark = Mark {
                version,
                state: change.state,
            };
        }
        if moved {
            self.recount(now);
        }
        Ok(moved)
    }

    /// Sums the marks into the counts and derives status, progress and message from them.
    fn recount(&mut self, now: DateTime<Utc>) {
        let Some(marks) = &self.child_marks else {
            return;
        };
        let mut counts = BatchProgress {
            total: marks.0.len() as u32,
            ..BatchProgress::default()
        };
        for mark in &marks.0 {
            match mark.state {
                ChildState::Queued => counts.queued += 1,
                ChildState::Running => counts.running += 1,
                ChildState::Completed => counts.completed += 1,
                ChildState::Failed => counts.failed += 1,
                ChildState::Cancelled => counts.cancelled += 1,
            }
        }
        let ended = counts.ended();
        self.progress = if counts.total == 0 {
            1.0
        } else {
            f64::from(ended) / f64::from(counts.total)
        };
        self.message = Some(format!("{ended} of {} done", counts.total));
        self.status = if ended < counts.total {
            if counts.queued == counts.total {
                RequestStatus::Queued
            } else {
                RequestStatus::Running
            }
        } else if self.cancel_requested {
            RequestStatus::Cancelled
        } else if counts.failed > 0 {
            RequestStatus::Failed
        } else if counts.cancelled > 0 {
            RequestStatus::Cancelled
        } else {
            RequestStatus::Completed
        };
        self.error = (self.status == RequestStatus::Failed).then(|| RequestError {
            code: BATCH_FAILED.to_owned(),
            message: format!(
                "{} of {} failed, {} completed, {} cancelled",
                counts.failed, counts.total, counts.completed, counts.cancelled
            ),
            retryable: true,
        });
        self.batch = Some(counts);
        self.touch(now);
    }

    /// A client cancels a batch that has not ended: it is marked, its children not yet ended
    /// are cancelled ([`crate::Change::batch_cancelled`] tells the processor), and it ends
    /// CANCELLED with its last child.
    pub(crate) fn cancel_batch(&mut self) -> Result<()> {
        if self.status.is_terminal() {
            if self.status == RequestStatus::Cancelled {
                return Ok(());
            }
            return Err(self.refuse("be cancelled"));
        }
        self.cancel_requested = true;
        Ok(())
    }

    /// FAILED → QUEUED or RUNNING: re-drives a failed batch. Its failed children count as
    /// queued again, and the processor re-drives them ([`crate::Change::batch_redriven`]).
    pub(crate) fn redrive_batch(&mut self, now: DateTime<Utc>) -> Result<()> {
        if self.status != RequestStatus::Failed {
            return Err(self.refuse("be retried"));
        }
        if let Some(marks) = self.child_marks.as_mut() {
            for mark in &mut marks.0 {
                if mark.state == ChildState::Failed {
                    mark.state = ChildState::Queued;
                }
            }
        }
        self.cancel_requested = false;
        self.redriven_after = self.attempts;
        self.recount(now);
        Ok(())
    }

    /// The indexes of this batch's children that had not ended when last counted.
    pub fn open_children(&self) -> Vec<u32> {
        self.child_marks
            .as_ref()
            .map(|marks| {
                (0u32..)
                    .zip(&marks.0)
                    .filter(|(_, mark)| !mark.state.ended())
                    .map(|(index, _)| index)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The indexes of this batch's children in `state`.
    pub fn children_in(&self, state: ChildState) -> Vec<u32> {
        self.child_marks
            .as_ref()
            .map(|marks| {
                (0u32..)
                    .zip(&marks.0)
                    .filter(|(_, mark)| mark.state == state)
                    .map(|(index, _)| index)
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Clock, ManualClock};

    fn moved(index: u32, version: u64, status: RequestStatus) -> ChildMove {
        ChildMove {
            index,
            version,
            state: ChildState::of(status),
        }
    }

    #[test]
    fn counts_are_exact_whatever_is_delivered_twice_or_late() {
        let clock = ManualClock::default();
        let mut batch = AsyncRequest::new_batch("b", "a", 3, clock.now());
        assert_eq!(batch.status, RequestStatus::Queued);
        let start = moved(0, 2, RequestStatus::Running);
        assert!(batch.count_children(&[start], clock.now()).unwrap());
        assert_eq!(
            (batch.status, batch.version, batch.batch.unwrap().running),
            (RequestStatus::Running, 2, 1)
        );
        // Delivered again: nothing moves, the version stays.
        assert!(!batch.count_children(&[start], clock.now()).unwrap());
        assert_eq!(batch.version, 2);
        let end = moved(0, 4, RequestStatus::Completed);
        batch.count_children(&[end, end], clock.now()).unwrap();
        // The start again, after the end: older than the mark, ignored.
        assert!(!batch.count_children(&[start], clock.now()).unwrap());
        let counts = batch.batch.unwrap();
        assert_eq!((counts.completed, counts.running, counts.queued), (1, 0, 2));
        assert_eq!(batch.message.as_deref(), Some("1 of 3 done"));
        batch
            .count_children(
                &[
                    moved(1, 3, RequestStatus::Failed),
                    moved(2, 2, RequestStatus::Cancelled),
                ],
                clock.now(),
            )
            .unwrap();
        assert_eq!(batch.status, RequestStatus::Failed);
        assert_eq!(batch.progress, 1.0);
        let error = batch.error.clone().unwrap();
        assert_eq!(error.code, BATCH_FAILED);
        assert_eq!(error.message, "1 of 3 failed, 1 completed, 1 cancelled");

        // A re-drive counts the failed child as queued; its next end counts again.
        batch.redrive_batch(clock.now()).unwrap();
        assert_eq!(batch.status, RequestStatus::Running);
        assert_eq!(batch.children_in(ChildState::Queued), [1]);
        batch
            .count_children(&[moved(1, 4, RequestStatus::Queued)], clock.now())
            .unwrap();
        batch
            .count_children(&[moved(1, 6, RequestStatus::Completed)], clock.now())
            .unwrap();
        assert_eq!(
            batch.status,
            RequestStatus::Cancelled,
            "a child was cancelled"
        );
        assert_eq!(batch.batch.unwrap().completed, 2);
    }

    #[test]
    fn a_cancelled_batch_ends_cancelled_with_its_last_child() {
        let clock = ManualClock::default();
        let mut batch = AsyncRequest::new_batch("b", "a", 2, clock.now());
        batch.cancel_batch().unwrap();
        batch
            .count_children(&[moved(0, 3, RequestStatus::Completed)], clock.now())
            .unwrap();
        assert_eq!(batch.status, RequestStatus::Running);
        assert_eq!(batch.open_children(), [1], "what a cancel still reaches");
        batch
            .count_children(&[moved(1, 2, RequestStatus::Cancelled)], clock.now())
            .unwrap();
        assert_eq!(batch.status, RequestStatus::Cancelled);
        assert!(batch.start(clock.now()).is_err(), "a batch never runs");
    }

    #[test]
    fn marks_round_trip_as_text() {
        let marks = ChildMarks(vec![
            Mark {
                version: 7,
                state: ChildState::Failed,
            },
            Mark {
                version: 0,
                state: ChildState::Queued,
            },
        ]);
        let text = serde_json::to_value(&marks).unwrap();
        assert_eq!(text, serde_json::json!("AAAABwMAAAAAAA=="));
        assert_eq!(serde_json::from_value::<ChildMarks>(text).unwrap(), marks);
    }
}
