//! The store port, and the change feed the processor consumes.
//!
//! Each method maps onto one DynamoDB call: conditional writes report a lost race as
//! [`Error::Conflict`], reads are strongly consistent, and fan-out for one request is one
//! query on one key.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use crate::{
    AsyncRequest, Checkpoint, ChildMove, ChildState, Clock, Connection, Error, RequestStatus,
    RequestTemplate, Result, Subscription, SubscriptionKey,
};

/// What happened to a request item, as a DynamoDB stream record says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// The item was created.
    Insert,
    /// The item was overwritten.
    Modify,
    /// The item was deleted by a writer.
    Remove,
    /// The item was deleted by TTL expiry.
    Expire,
}

/// One change of one request, with its images before and after: the processor's input.
/// A DynamoDB stream record (NEW_AND_OLD_IMAGES) maps onto it field for field.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Orders changes of the same item; the stream's SequenceNumber (failure reports use it).
    pub sequence_number: String,
    /// What happened.
    pub kind: ChangeKind,
    /// The item before, if it existed (shared: a change goes to every reader).
    pub old: Option<Arc<AsyncRequest>>,
    /// The item after, if it still exists.
    pub new: Option<Arc<AsyncRequest>>,
}

impl Change {
    /// The request id of the changed item.
    pub fn request_id(&self) -> Option<&str> {
        self.new
            .as_deref()
            .or(self.old.as_deref())
            .map(|r| r.id.as_str())
    }

    /// The new image when the change is one a client can see: the version moved forward.
    pub fn visible(&self) -> Option<&Arc<AsyncRequest>> {
        let new = self.new.as_ref()?;
        match &self.old {
            Some(old) if old.version >= new.version => None,
            _ => Some(new),
        }
    }

    /// The new image when this change asked a running request to cancel.
    pub fn cancelled_while_running(&self) -> Option<&AsyncRequest> {
        let new = self.new.as_deref()?;
        let asked_before = self.old.as_ref().is_some_and(|old| old.cancel_requested);
        (new.status == RequestStatus::Running
            && new.cancel_requested
            && !asked_before
            && !new.is_batch())
        .then_some(new)
    }

    /// The new image when this change ended a run: the request was RUNNING and is not any
    /// more (ended, retrying or re-queued), so that its slot is free.
    pub fn left_running(&self) -> Option<&AsyncRequest> {
        let old = self.old.as_deref()?;
        let new = self.new.as_deref()?;
        (old.status == RequestStatus::Running
            && new.status != RequestStatus::Running
            && !new.is_batch())
        .then_some(new)
    }

    /// The new image when this change made the request runnable (enqueued or re-driven). A
    /// batch never is: its children are.
    pub fn enqueued(&self) -> Option<&AsyncRequest> {
        let new = self.new.as_deref().filter(|new| !new.is_batch())?;
        let was_queued = self
            .old
            .as_ref()
            .is_some_and(|old| old.status == RequestStatus::Queued);
        (new.status == RequestStatus::Queued && !was_queued).then_some(new)
    }

    /// The batch and the move to count into it, when this change moved a child from one
    /// state its batch counts to another (a progress report moves none).
    pub fn child_moved(&self) -> Option<(&str, ChildMove)> {
        let new = self.new.as_deref()?;
        let parent = new.parent.as_ref()?;
        let state = ChildState::of(new.status);
        // A new child is counted as queued from the start.
        let old = self
            .old
            .as_deref()
            .map_or(ChildState::Queued, |old| ChildState::of(old.status));
        (old != state).then_some((
            parent.id.as_str(),
            ChildMove {
                index: parent.index,
                version: new.version,
                state,
            },
        ))
    }

    /// The new image when this change asked a batch to cancel: its children not yet ended are
    /// to be cancelled.
    pub fn batch_cancelled(&self) -> Option<&AsyncRequest> {
        let new = self.new.as_deref().filter(|new| new.is_batch())?;
        let asked_before = self.old.as_ref().is_some_and(|old| old.cancel_requested);
        (new.cancel_requested && !asked_before).then_some(new)
    }

    /// The indexes of the children to re-drive when this change re-drove a failed batch:
    /// those it counted failed before and queued now.
    pub fn batch_redriven(&self) -> Vec<u32> {
        let (Some(old), Some(new)) = (self.old.as_deref(), self.new.as_deref()) else {
            return Vec::new();
        };
        if !new.is_batch() || old.status != RequestStatus::Failed || new.status.is_terminal() {
            return Vec::new();
        }
        let queued: std::collections::HashSet<u32> =
            new.children_in(ChildState::Queued).into_iter().collect();
        old.children_in(ChildState::Failed)
            .into_iter()
            .filter(|index| queued.contains(index))
            .collect()
    }

    /// The new image when this change made a request begin to wait.
    pub fn began_waiting(&self) -> Option<&AsyncRequest> {
        let new = self.new.as_deref()?;
        let was_waiting = self
            .old
            .as_ref()
            .is_some_and(|old| old.status == RequestStatus::Waiting);
        (new.status == RequestStatus::Waiting && !was_waiting).then_some(new)
    }

    /// The children a waiting workflow left behind when this change cancelled it: they are
    /// to be cancelled too.
    pub fn abandoned_children(&self) -> &[String] {
        match (self.old.as_deref(), self.new.as_deref()) {
            (Some(old), Some(new))
                if old.status == RequestStatus::Waiting
                    && new.status == RequestStatus::Cancelled =>
            {
                &old.waiting_for
            }
            _ => &[],
        }
    }

    /// The new image when this change ended a running request CANCELLED (not a batch, whose
    /// children a cancel reaches on its own): children it started in its last attempt may
    /// still run.
    pub fn cancelled_running(&self) -> Option<&AsyncRequest> {
        let (old, new) = (self.old.as_deref()?, self.new.as_deref()?);
        (old.status == RequestStatus::Running
            && new.status == RequestStatus::Cancelled
            && !new.is_batch())
        .then_some(new)
    }
}

/// How an attempt to finish a subscription ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Finish {
    /// Deleted by this caller, as it was: send the last state and `complete`.
    Deleted(Box<Subscription>),
    /// A push is in flight: try again later.
    Busy,
    /// Already gone (another finisher won, or it ended).
    Gone,
}

/// Which requests to list, and where to start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestFilter {
    /// Only this tenant's; every tenant's only for the sweeper, with a status that is not
    /// terminal.
    pub tenant: Option<String>,
    /// Only this user's, when set.
    pub owner: Option<String>,
    /// Only this status.
    pub status: Option<RequestStatus>,
    /// Only the children of this batch, in their order in it.
    pub parent: Option<String>,
    /// Newest first instead of oldest first.
    pub newest_first: bool,
    /// At most this many.
    pub limit: usize,
    /// Continue after this token (from [`Page::next`]).
    pub after: Option<String>,
}

/// One page of requests, oldest first (or newest first, as asked).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Page {
    /// The requests.
    pub items: Vec<AsyncRequest>,
    /// The token to continue from, when more may follow.
    pub next: Option<String>,
}

/// Where connections, subscriptions and requests live.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Stores a new connection (`$connect`).
    async fn put_connection(&self, connection: &Connection) -> Result<()>;
    /// Reads a connection.
    async fn get_connection(&self, id: &str) -> Result<Option<Connection>>;
    /// AwaitingInit → Acknowledged as `principal`, conditionally: [`Error::Conflict`] when the connection was
    /// already initialised (4429), [`Error::NotFound`] when it is gone.
    async fn acknowledge_connection(
        &self,
        id: &str,
        payload: Option<Value>,
        principal: &crate::Principal,
    ) -> Result<()>;
    /// Deletes a connection, returning it as it was.
    async fn delete_connection(&self, id: &str) -> Result<Option<Connection>>;
    /// Deletes a connection only if it still awaits `connection_init` (a conditional
    /// delete, so that one acknowledged since an index was read stays): `true` when it did.
    async fn delete_connection_awaiting_init(&self, id: &str) -> Result<bool>;
    /// Marks an operation active on a connection: [`Error::Conflict`] when the id is already
    /// active (4409), [`Error::NotFound`] when the connection is gone.
    async fn add_operation(
        &self,
        connection_id: &str,
        operation_id: &str,
        request_id: &str,
    ) -> Result<()>;
    /// Clears an active operation (missing is fine).
    async fn remove_operation(&self, connection_id: &str, operation_id: &str) -> Result<()>;
    /// Connections still waiting for `connection_init` that connected before `before`
    /// (oldest first, at most `limit`): the ones an init timeout closes.
    async fn connections_awaiting_init(
        &self,
        before: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> Result<Vec<Connection>>;

    /// Starts a subscription: marks its operation active on its connection and stores it,
    /// both or neither (one transaction on DynamoDB). [`Error::Conflict`] when the
    /// operation id is already active or marked (see [`Store::add_operation`]),
    /// [`Error::NotFound`] when the connection is gone. So a `$disconnect` or a `complete`
    /// that reads the connection afterwards finds the operation and ends the subscription
    /// with it.
    async fn open_subscription(&self, subscription: &Subscription) -> Result<()>;
    /// Stores a subscription.
    async fn put_subscription(&self, subscription: &Subscription) -> Result<()>;
    /// Every subscription following a request (one consistent query on the request's key).
    /// Shared: the embedded store hands out the items it holds, without a copy each.
    async fn subscriptions(&self, request_id: &str) -> Result<Vec<Arc<Subscription>>>;
    /// One subscription, read consistently (a `GetItem` on DynamoDB): what a change waiting
    /// out a single hold reads again.
    async fn subscription(&self, key: &SubscriptionKey) -> Result<Option<Arc<Subscription>>> {
        Ok(self
            .subscriptions(&key.request_id)
            .await?
            .into_iter()
            .find(|subscription| subscription.key == *key))
    }
    /// Releases a subscription the gateway held while it pushed up to `version` (its
    /// snapshot, a resume): raises `last_version` to it and clears the hold. The processor
    /// records a change it pushed the same way when the change will be handled again. A
    /// `last_version` above `version` stays; a missing subscription is not created.
    async fn release_push(&self, key: &SubscriptionKey, version: u64) -> Result<()>;
    /// Deletes a subscription unless a push holds it (a hold past `now` does not count), and
    /// takes its operation off its connection: of two racing finishers, only the one that
    /// gets [`Finish::Deleted`] sends `complete`. `known` is the subscription as the caller
    /// read it, with `last_version` as far as the caller pushed it (the processor writes no
    /// push); the deleted one is given back with the higher of the two. While the stored one
    /// is no further, both go in one write (a transaction on DynamoDB); otherwise one after
    /// the other.
    async fn finish_subscription(&self, known: &Subscription, now: i64) -> Result<Finish>;
    /// Deletes a subscription whatever holds it, returning it if it existed.
    async fn delete_subscription(&self, key: &SubscriptionKey) -> Result<Option<Subscription>>;

    /// Stores a new request: [`Error::Conflict`] when the id exists.
    async fn create_request(&self, request: &AsyncRequest) -> Result<()> {
        self.create_request_within(request, None).await
    }
    /// Stores a new request unless its tenant already has `max_active` requests not yet
    /// ended ([`Error::QuotaFull`]); [`Error::Conflict`] when the id exists, which is
    /// checked first. The count and the write are one atomic step: concurrent enqueues
    /// never take a tenant past its quota.
    async fn create_request_within(
        &self,
        request: &AsyncRequest,
        max_active: Option<usize>,
    ) -> Result<()>;
    /// Stores a new batch and its children ([`AsyncRequest::new_batch`],
    /// [`AsyncRequest::child`]), unless the tenant has room for fewer than all of them in
    /// `max_active` ([`Error::QuotaFull`], nothing stored): [`Error::Conflict`] when the
    /// batch exists, checked first, and then no child is written. The batch is written
    /// before its children, so a child's change always finds it.
    async fn create_batch(
        &self,
        batch: &AsyncRequest,
        children: &[AsyncRequest],
        max_active: Option<usize>,
    ) -> Result<()>;
    /// Reads a request.
    async fn get_request(&self, id: &str) -> Result<Option<AsyncRequest>>;
    /// The requests with these ids that exist, in the order given, read consistently (a
    /// `BatchGetItem` per 100 on DynamoDB).
    async fn get_requests(&self, ids: &[String]) -> Result<Vec<AsyncRequest>> {
        let mut found = Vec::with_capacity(ids.len());
        for id in ids {
            found.extend(self.get_request(id).await?);
        }
        Ok(found)
    }
    /// Replaces a request if its stored revision is still `expected_revision`, else
    /// [`Error::Conflict`]. The caller has moved `request.revision` on
    /// ([`modify_request`] does).
    async fn update_request(&self, request: &AsyncRequest, expected_revision: u64) -> Result<()>;
    /// Lists requests, oldest first.
    async fn list_requests(&self, filter: &RequestFilter) -> Result<Page>;

    /// How many connections of `tenant` are authenticated now, counting no further than
    /// `up_to` (a quota needs no more). A connection whose TTL passed before `now` does not
    /// count: its `$disconnect` was lost, and DynamoDB keeps an expired item readable until
    /// it deletes it, typically within days.
    async fn count_connections(
        &self,
        tenant: &str,
        now: chrono::DateTime<chrono::Utc>,
        up_to: usize,
    ) -> Result<usize>;
    /// How many of `tenant`'s requests are QUEUED, RUNNING or RETRYING, counting no further
    /// than `up_to`: the count [`Store::create_request_within`] holds to its quota, read
    /// consistently.
    async fn count_active_requests(&self, tenant: &str, up_to: usize) -> Result<usize>;
    /// Takes `count` of the `limit` enqueues `tenant` may make in the one-second window
    /// starting at `window` (epoch seconds), all or none: `false` when fewer are left.
    async fn take_enqueue_tokens(
        &self,
        tenant: &str,
        window: i64,
        limit: u32,
        count: u32,
    ) -> Result<bool>;

    /// Saves a template: a new one at version 1, an existing one (same tenant and name)
    /// replaced at its version + 1. Returns it as stored.
    async fn save_template(&self, template: &RequestTemplate) -> Result<RequestTemplate>;
    /// A tenant's template.
    async fn get_template(&self, tenant: &str, name: &str) -> Result<Option<RequestTemplate>>;
    /// Deletes a tenant's template: `true` when it existed.
    async fn delete_template(&self, tenant: &str, name: &str) -> Result<bool>;
    /// A tenant's templates by name, at most `limit`.
    async fn templates(&self, tenant: &str, limit: usize) -> Result<Vec<RequestTemplate>>;
    /// How many templates a tenant has, counting no further than `up_to`, without reading
    /// their payloads.
    async fn count_templates(&self, tenant: &str, up_to: usize) -> Result<usize>;

    /// Keeps a workflow's checkpoint, until `expires_at` (epoch seconds). Saving one at an
    /// index that has one already keeps the first: a replay never changes what was recorded.
    /// A checkpoint over the store's item size is refused.
    async fn save_checkpoint(
        &self,
        request_id: &str,
        checkpoint: &Checkpoint,
        expires_at: i64,
    ) -> Result<()>;
    /// A workflow's checkpoints, by index.
    async fn checkpoints(&self, request_id: &str) -> Result<Vec<Checkpoint>>;

    /// Keeps states of requests in their history (the processor does, for the visible
    /// changes of a stream batch, at once, before fanning them out). Writing the same version
    /// again is harmless. Shared: the embedded store keeps the states it is given, without a
    /// copy.
    async fn record_history(&self, states: &[Arc<AsyncRequest>]) -> Result<()>;
    /// The kept states of a request with versions above `after_version`, oldest first, at
    /// most `limit`: what a resuming subscriber missed.
    async fn request_history(
        &self,
        id: &str,
        after_version: u64,
        limit: usize,
    ) -> Result<Vec<AsyncRequest>>;
}

/// Reads a request, applies `change`, and writes it back conditionally, again on a lost race.
/// `change` sees the freshest state each time; its error ends the loop.
pub async fn modify_request<T>(
    store: &dyn Store,
    clock: &dyn Clock,
    id: &str,
    change: impl FnMut(&mut AsyncRequest, chrono::DateTime<chrono::Utc>) -> Result<T> + Send,
) -> Result<(AsyncRequest, T)> {
    modify_request_from(store, clock, None, id, change).await
}

/// [`modify_request`] from `known`, a state of the request the caller wrote or read: while it
/// is still the stored one (nobody else wrote since), the change is one conditional write
/// and no read. On a lost race, the request is read as by [`modify_request`].
pub async fn modify_request_from<T>(
    store: &dyn Store,
    clock: &dyn Clock,
    mut known: Option<AsyncRequest>,
    id: &str,
    mut change: impl FnMut(&mut AsyncRequest, chrono::DateTime<chrono::Utc>) -> Result<T> + Send,
) -> Result<(AsyncRequest, T)> {
    loop {
        let assumed = known.is_some();
        let mut request = match known.take() {
            Some(request) => request,
            None => store
                .get_request(id)
                .await?
                .ok_or_else(|| Error::NotFound(format!("request {id}")))?,
        };
        let expected = request.revision;
        let outcome = match change(&mut request, clock.now()) {
            Ok(outcome) => outcome,
            // A refusal counts only on a state read now: the known one may be stale.
            Err(_) if assumed => continue,
            Err(error) => return Err(error),
        };
        request.revision = expected + 1;
        match store.update_request(&request, expected).await {
            Ok(()) => return Ok((request, outcome)),
            Err(Error::Conflict(_)) => continue,
            Err(other) => return Err(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{ManualClock, MemoryStore};

    /// A stale known state costs a lost write and a read, never a lost change: a cancel
    /// written since is seen, and the write lands on top of it.
    #[tokio::test]
    async fn a_change_from_a_stale_state_sees_what_was_written_since() {
        let store = MemoryStore::new();
        let clock = ManualClock::default();
        let request = AsyncRequest::new("r", "a", json!({}), clock.now());
        store.create_request(&request).await.unwrap();
        let (started, ()) = modify_request(&store, &clock, "r", |r, now| r.start(now))
            .await
            .unwrap();
        let (cancelling, ()) = modify_request(&store, &clock, "r", |r, now| r.cancel(now))
            .await
            .unwrap();
        assert!(cancelling.cancel_requested);
        let mut seen = Vec::new();
        let (written, _) = modify_request_from(&store, &clock, Some(started), "r", |r, now| {
            seen.push(r.cancel_requested);
            r.report(0.5, None, now)
        })
        .await
        .unwrap();
        assert_eq!(
            seen,
            [false, true],
            "tried on the known state, then on a read"
        );
        assert!(written.cancel_requested);
        assert_eq!(store.get_request("r").await.unwrap().unwrap(), written);
        // From the current state: one try.
        let mut tries = 0;
        modify_request_from(&store, &clock, Some(written), "r", |r, now| {
            tries += 1;
            r.report(0.6, None, now)
        })
        .await
        .unwrap();
        assert_eq!(tries, 1);
    }
}
