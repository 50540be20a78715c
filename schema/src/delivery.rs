//! Pushing one state of a request to one stored subscription, shared by the gateway (the
//! snapshot on subscribe, a resume) and the processor (fan-out of every change), so both obey
//! the same rules:
//!
//! - a subscription never receives a version at or below one it already has, and pushes to
//!   it never overlap. The gateway stores a new subscription held (`pushing_until`) and
//!   pushes its snapshot or the missed history under that hold, then releases it, raising
//!   `last_version`. The processor pushes a change to a subscription that no hold covers and
//!   whose `last_version` is below it, and writes nothing per push: a request's changes
//!   reach it in order, one at a time (the stream's per-item order), so only the gateway's
//!   pushes can race it. A held subscription is [`Delivery::Busy`], tried again later;
//! - a change that fails for some of its subscribers records `last_version` on those it
//!   reached, so that its retry does not push to them twice;
//! - exactly one party sends `complete`: whoever deletes the subscription after the terminal
//!   state, and not while a push is in flight;
//! - a connection that is gone (410) is pruned with all its subscriptions;
//! - a terminal push that fails otherwise puts the finished subscription back, so that the
//!   retried change delivers the same state again;
//! - a result over the message size limit ends the operation with an `error` saying so;
//! - nothing is pushed to a subscriber the access rule does not let see the request
//!   (another tenant's; another owner's when owner-scoped), nor once the subscriber's
//!   credentials have expired (its connection is closed then, 4403).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_graphql::dynamic::Schema;
use serde_json::Value;
use serde_json::value::RawValue;
use streamer_core::protocol::{Close, ServerMessage, next_text};
use streamer_core::{
    Access, AsyncRequest, Clock, Connection, Error, Finish, LimitExceeded, Limits, Result, Sender,
    Store, Subscription, SubscriptionKey,
};
use tokio::sync::OnceCell;

use crate::{execute, projection};

/// What became of one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// A `next` was pushed.
    Pushed,
    /// The terminal state (if not already seen) and `complete` were pushed; the subscription
    /// is gone.
    Completed,
    /// Nothing to push: an old or duplicate version, another party finished it, or the
    /// document does not select this state.
    Skipped,
    /// The connection is gone; it and its subscriptions were deleted.
    Gone,
    /// The result was over the message size limit: the operation got an `error` and ended.
    TooLarge,
    /// Another push to the subscription is in flight: deliver again later.
    Busy,
}

/// How long the gateway holds a new subscription at most while it pushes the snapshot or
/// the missed history: if it dies meanwhile, the processor waits this long.
pub const PUSH_HOLD_MS: i64 = 10_000;

/// A resolved `next` payload, serialized once and shared by every subscriber it goes to.
type Payload = Arc<RawValue>;

/// The results of resolving subscription documents against one state: subscriptions that
/// share a document (query, operation name and variables) are resolved once per change.
/// The default resolves every document on its own (one subscription: nothing to share).
#[derive(Debug, Default)]
pub struct Resolutions {
    results: Option<Mutex<HashMap<String, Resolved>>>,
}

/// One document's result, resolved by the first subscription that needs it.
type Resolved = Arc<OnceCell<Option<Payload>>>;

impl Resolutions {
    /// Shares results between the subscriptions of one fan-out.
    pub fn shared() -> Self {
        Self {
            results: Some(Mutex::default()),
        }
    }

    /// `subscription`'s document resolved against `state`, as the `next` payload; `None`
    /// when the document does not select this state.
    async fn resolve(
        &self,
        schema: &Schema,
        subscription: &Subscription,
        state: &Arc<AsyncRequest>,
    ) -> Option<Payload> {
        let Some(results) = &self.results else {
            return resolve(schema, subscription, state).await;
        };
        let key = format!(
            "{}\n{}\n{}",
            subscription.operation_name.as_deref().unwrap_or_default(),
            subscription
                .variables
                .as_ref()
                .map(Value::to_string)
                .unwrap_or_default(),
            subscription.query
        );
        let cell = Arc::clone(
            results
                .lock()
                .expect("resolutions lock")
                .entry(key)
                .or_default(),
        );
        cell.get_or_init(|| resolve(schema, subscription, state))
            .await
            .clone()
    }
}

/// `subscription`'s document resolved against `state`: by projection when it selects plain
/// fields, else by the executor.
async fn resolve(
    schema: &Schema,
    subscription: &Subscription,
    state: &Arc<AsyncRequest>,
) -> Option<Payload> {
    let variables = subscription.variables.as_ref().and_then(|v| v.as_object());
    let operation_name = subscription.operation_name.as_deref();
    if let Some(projected) = projection::projection(&subscription.query, operation_name)
        .and_then(|plan| plan.resolve(variables, state))
    {
        return projected;
    }
    let document = execute::request(&subscription.query, operation_name, variables);
    let response = execute::resolve(schema, document, Arc::clone(state)).await?;
    Some(serialized(&response))
}

/// What a push needs, borrowed from whoever pushes (the gateway, the processor).
#[derive(Clone, Copy)]
pub struct Pusher<'a> {
    /// Resolves the stored documents ([`crate::build_for_stored_documents`]).
    pub schema: &'a Schema,
    /// Where subscriptions and their claims are.
    pub store: &'a dyn Store,
    /// Where frames go.
    pub sender: &'a dyn Sender,
    /// The message size limit applies to every frame.
    pub limits: &'a Limits,
    /// The time of holds and of credential expiry: the pusher's own clock.
    pub clock: &'a dyn Clock,
    /// Who may see a request: checked again on every push, whatever was checked when the
    /// subscription was stored.
    pub access: Access,
}

impl std::fmt::Debug for Pusher<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pusher")
            .field("limits", self.limits)
            .finish_non_exhaustive()
    }
}

impl Pusher<'_> {
    /// Pushes `state` to `subscription` under the rules above.
    pub async fn deliver(
        &self,
        subscription: &Subscription,
        state: &Arc<AsyncRequest>,
    ) -> Result<Delivery> {
        self.deliver_resolving(subscription, state, &Resolutions::default())
            .await
    }

    /// [`Pusher::deliver`], with the documents resolved through `resolutions` (shared by
    /// every subscription of one fan-out of `state`).
    pub async fn deliver_resolving(
        &self,
        subscription: &Subscription,
        state: &Arc<AsyncRequest>,
        resolutions: &Resolutions,
    ) -> Result<Delivery> {
        deliver_resolving(*self, subscription, state, resolutions).await
    }

    /// Pushes the current state to a new subscription under the hold it was stored with,
    /// then releases it at that version; a terminal state then ends it with `complete`. The
    /// gateway's answer to a subscribe: it reads the request after storing the subscription,
    /// so every change after `state` finds the subscription and waits for the release.
    pub async fn snapshot(
        &self,
        subscription: &Subscription,
        state: &Arc<AsyncRequest>,
    ) -> Result<()> {
        let posted = self.post_held(subscription, state).await?;
        if matches!(posted, Delivery::Gone | Delivery::TooLarge) {
            return Ok(());
        }
        self.store
            .release_push(&subscription.key, state.version)
            .await?;
        if state.status.is_terminal() {
            self.deliver(&subscription.released(state.version), state)
                .await?;
        }
        Ok(())
    }

    /// Posts `state` to a subscription the caller holds (a snapshot, or a resume replaying
    /// the history, in order, before the processor may push anything newer): resolved,
    /// sized and posted as [`Pusher::deliver`] does, a 410 pruning the connection and a
    /// result too large ending the operation with an `error`. The caller releases the hold.
    pub async fn post_held(
        &self,
        subscription: &Subscription,
        state: &Arc<AsyncRequest>,
    ) -> Result<Delivery> {
        let key = &subscription.key;
        let resolutions = Resolutions::default();
        let Some(payload) = resolutions.resolve(self.schema, subscription, state).await else {
            return Ok(Delivery::Skipped);
        };
        let (frame, too_large) = next_frame(&key.operation_id, &payload, self.limits);
        let ended = match self.sender.post(&key.connection_id, &frame).await {
            Ok(()) => too_large,
            Err(Error::Gone(_)) => {
                prune_connection(self.store, &key.connection_id).await?;
                self.store.delete_subscription(key).await?;
                return Ok(Delivery::Gone);
            }
            Err(Error::TooLarge(_)) => {
                let error = ServerMessage::error(
                    &key.operation_id,
                    "the result is larger than the connection accepts",
                );
                match self.sender.post(&key.connection_id, &error.to_text()).await {
                    Ok(()) | Err(Error::Gone(_)) => {}
                    Err(other) => {
                        tracing::warn!(connection_id = %key.connection_id, error = ?other.to_string(), "the too-large error was not delivered");
                    }
                }
                true
            }
            Err(other) => return Err(other),
        };
        if ended {
            self.store.delete_subscription(key).await?;
            self.store
                .remove_operation(&key.connection_id, &key.operation_id)
                .await?;
            return Ok(Delivery::TooLarge);
        }
        Ok(Delivery::Pushed)
    }
}

/// [`Pusher::deliver_resolving`].
async fn deliver_resolving(
    pusher: Pusher<'_>,
    subscription: &Subscription,
    state: &Arc<AsyncRequest>,
    resolutions: &Resolutions,
) -> Result<Delivery> {
    let Pusher {
        schema,
        store,
        sender,
        limits,
        clock,
        access,
    } = pusher;
    let key = &subscription.key;
    if let Some(principal) = &subscription.principal {
        if principal.is_expired(clock.now()) {
            // Nothing more for expired credentials: the connection is closed.
            tracing::info!(connection_id = %key.connection_id, "closed: credentials expired");
            match sender.close(&key.connection_id, &Close::expired()).await {
                Ok(()) | Err(Error::Gone(_)) => {}
                Err(other) => return Err(other),
            }
            prune_connection(store, &key.connection_id).await?;
            return Ok(Delivery::Gone);
        }
        if !access.allows(principal, state) {
            tracing::warn!(request_id = %state.id, connection_id = %key.connection_id, "not pushed: the subscriber may not see the request");
            return Ok(Delivery::Skipped);
        }
    }
    // The texts to post, and whether the first is the `error` of a result too large.
    let mut frames = Vec::with_capacity(2);
    let mut too_large = false;
    // The subscription this delivery deleted, to put back if its frames cannot be posted.
    let mut finished = None;
    let outcome = if state.status.is_terminal() {
        // Its operation goes with it, before `complete` goes out: a client may reuse the id
        // as soon as it has it.
        let stored = match store
            .finish_subscription(subscription, clock.now().timestamp_millis())
            .await?
        {
            Finish::Deleted(stored) => *stored,
            Finish::Gone => return Ok(Delivery::Skipped),
            Finish::Busy => return Ok(Delivery::Busy),
        };
        if state.version > stored.last_version
            && let Some(payload) = resolutions.resolve(schema, subscription, state).await
        {
            let (frame, error) = next_frame(&key.operation_id, &payload, limits);
            frames.push(frame);
            too_large = error;
        }
        frames.push(
            ServerMessage::Complete {
                id: key.operation_id.clone(),
            }
            .to_text(),
        );
        finished = Some(stored);
        Delivery::Completed
    } else {
        // The gateway is pushing its snapshot or a resume: what it leaves in `last_version`
        // decides whether this state is still owed.
        if subscription
            .pushing_until
            .is_some_and(|until| until >= clock.now().timestamp_millis())
        {
            return Ok(Delivery::Busy);
        }
        if state.version <= subscription.last_version {
            return Ok(Delivery::Skipped);
        }
        let Some(payload) = resolutions.resolve(schema, subscription, state).await else {
            return Ok(Delivery::Skipped);
        };
        let (frame, error) = next_frame(&key.operation_id, &payload, limits);
        frames.push(frame);
        too_large = error;
        Delivery::Pushed
    };
    let mut outcome = outcome;
    if too_large {
        // The result cannot be delivered: the operation ends with the error saying why.
        if outcome == Delivery::Pushed {
            store.delete_subscription(key).await?;
            store
                .remove_operation(&key.connection_id, &key.operation_id)
                .await?;
        }
        frames.truncate(1);
        outcome = Delivery::TooLarge;
    }
    for (posted, frame) in frames.iter().enumerate() {
        match sender.post(&key.connection_id, frame).await {
            Ok(()) => {}
            Err(Error::Gone(_)) => {
                prune_connection(store, &key.connection_id).await?;
                // Also when the connection's item went first (its `$disconnect` overlapped
                // the subscribe that stored this subscription): it is pruned with it.
                store.delete_subscription(key).await?;
                return Ok(Delivery::Gone);
            }
            Err(Error::TooLarge(_)) => {
                // API Gateway refused the frame as too large: retrying cannot help. The
                // operation ends with an `error` saying why, as a result over the limit does.
                if finished.is_none() {
                    store.delete_subscription(key).await?;
                    store
                        .remove_operation(&key.connection_id, &key.operation_id)
                        .await?;
                }
                let error = ServerMessage::error(
                    &key.operation_id,
                    "the result is larger than the connection accepts",
                );
                match sender.post(&key.connection_id, &error.to_text()).await {
                    Ok(()) | Err(Error::Gone(_)) => {}
                    Err(other) => {
                        tracing::warn!(connection_id = %key.connection_id, error = ?other.to_string(), "the too-large error was not delivered");
                    }
                }
                return Ok(Delivery::TooLarge);
            }
            Err(other) => {
                // Put back, so that the retried change delivers this state again.
                if let Some(stored) = &finished {
                    let mut restored = stored.clone();
                    if posted > 0 {
                        // The terminal state went out; only `complete` is owed.
                        restored.last_version = restored.last_version.max(state.version);
                    }
                    store.put_subscription(&restored).await?;
                    match store
                        .add_operation(&key.connection_id, &key.operation_id, &key.request_id)
                        .await
                    {
                        // The client disconnected, or reused the id meanwhile.
                        Ok(()) | Err(Error::Conflict(_) | Error::NotFound(_)) => {}
                        Err(error) => return Err(error),
                    }
                }
                return Err(other);
            }
        }
    }
    Ok(outcome)
}

/// A `next` for operation `id`, or, when it would be over the message size limit, the
/// `error` that says so (the operation then ends).
pub fn next_or_error(
    id: &str,
    response: &async_graphql::Response,
    limits: &Limits,
) -> ServerMessage {
    let next = ServerMessage::Next {
        id: id.to_owned(),
        payload: serde_json::to_value(response).unwrap_or_default(),
    };
    too_large(id, next.to_text().len(), limits).unwrap_or(next)
}

/// A response as payload text.
fn serialized(response: &async_graphql::Response) -> Payload {
    let text =
        serde_json::value::to_raw_value(response).expect("GraphQL responses always serialize");
    Arc::from(text)
}

/// The text of a `next` for operation `id`, or, when it would be over the message size
/// limit, of the `error` that says so; `true` for the error.
fn next_frame(id: &str, payload: &RawValue, limits: &Limits) -> (String, bool) {
    let text = next_text(id, payload);
    match too_large(id, text.len(), limits) {
        Some(error) => (error.to_text(), true),
        None => (text, false),
    }
}

/// The `error` for a `next` of `bytes` over the message size limit.
fn too_large(id: &str, bytes: usize, limits: &Limits) -> Option<ServerMessage> {
    let exceeded = LimitExceeded::check(
        "messageBytes",
        "the result size in bytes",
        bytes,
        limits.max_message_bytes,
    )
    .err()?;
    tracing::warn!(operation_id = ?id, %exceeded, "result too large");
    Some(ServerMessage::Error {
        id: id.to_owned(),
        payload: vec![exceeded.to_graphql()],
    })
}

/// Deletes a connection and every subscription it holds (no scan: the connection lists
/// them). Returns the connection as it was.
pub async fn prune_connection(
    store: &dyn Store,
    connection_id: &str,
) -> Result<Option<Connection>> {
    let Some(connection) = store.delete_connection(connection_id).await? else {
        return Ok(None);
    };
    for (operation_id, request_id) in connection.subscriptions() {
        let key = SubscriptionKey {
            request_id: request_id.clone(),
            connection_id: connection_id.to_owned(),
            operation_id: operation_id.clone(),
        };
        store.delete_subscription(&key).await?;
    }
    Ok(Some(connection))
}
