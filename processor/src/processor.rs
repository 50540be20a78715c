//! The processor: the ordered change feed of requests in, jobs dispatched and every visible
//! change fanned out to the request's subscriptions.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_graphql::dynamic::Schema;
use async_trait::async_trait;
use futures::{StreamExt, stream};
use streamer_core::store::{Change, ChangeKind, modify_request, modify_request_from};
use streamer_core::{
    Access, AsyncRequest, ChildMove, Clock, Limits, RequestStatus, Result, Sender, Store,
    Subscription, SubscriptionKey, SystemClock, metric,
};
use streamer_schema::{Delivery, Handlers, Pusher, Resolutions, Services};

/// Starts a job somewhere else, without waiting for it: locally a task, on AWS an
/// asynchronous invocation of the worker function. A job never blocks the feed.
#[async_trait]
pub trait Dispatcher: Send + Sync + std::fmt::Debug {
    /// Starts the job of this request.
    async fn dispatch(&self, request: &AsyncRequest) -> Result<()>;

    /// Tells the running job of this request that a client cancelled it. A dispatcher that
    /// cannot reach its jobs leaves it to the worker, which reads the cancel when it renews
    /// its lease or reports progress.
    async fn cancel(&self, _request: &AsyncRequest) -> Result<()> {
        Ok(())
    }

    /// Tells the dispatcher that a run of this request ended, freeing its slot. A dispatcher
    /// that holds jobs back ([`crate::FairDispatcher`]) starts one of the tenant's then.
    async fn ended(&self, _request: &AsyncRequest) -> Result<()> {
        Ok(())
    }
}

/// How long a change waits for another push's hold on one of its subscriptions before it
/// fails (a hold lasts at most `PUSH_HOLD_MS`, 10 s), and how often it looks again: first
/// after `HOLD_POLL_MS` (a snapshot on an idle store is out by then), then twice as long
/// each time up to `HOLD_POLL_MAX_MS` (a busy store's snapshot takes a few round trips).
const HOLD_WAIT_MS: u64 = 11_000;
const HOLD_POLL_MS: u64 = 50;
const HOLD_POLL_MAX_MS: u64 = 200;

/// At most this many pushes of one change are in flight at once.
const FAN_OUT_CONCURRENCY: usize = 64;

/// At most this many children of a batch are cancelled or re-driven at once.
const CASCADE_CONCURRENCY: usize = 16;

/// Wakes a WAITING workflow whose wait is over: every child it waits for has ended, or its
/// time has come. `false` when it still waits; another waker's win is no error.
pub async fn wake_if_ready(
    store: &dyn Store,
    clock: &dyn Clock,
    request: AsyncRequest,
) -> Result<bool> {
    if request.status != RequestStatus::Waiting {
        return Ok(false);
    }
    let id = request.id.clone();
    if !request.waiting_for.is_empty() {
        // A gone child (past its retention) has ended too.
        let left = store
            .get_requests(&request.waiting_for)
            .await?
            .iter()
            .filter(|child| !child.status.is_terminal())
            .count();
        if left > 0 {
            // Its subscribers see the children end, one by one; nothing is written when the
            // count is what they saw last.
            let mut seen = request.clone();
            if !seen.children_left(left, clock.now())? {
                return Ok(false);
            }
            let noted = modify_request_from(store, clock, Some(request), &id, |r, now| {
                r.children_left(left, now)
            })
            .await;
            return match noted {
                Ok(_) | Err(streamer_core::Error::Transition { .. }) => Ok(false),
                Err(error) => Err(error),
            };
        }
    } else if !request.wake_due(clock.now()) {
        return Ok(false);
    }
    match modify_request_from(store, clock, Some(request), &id, |r, now| r.wake(now)).await {
        Ok(_) => Ok(true),
        Err(streamer_core::Error::Transition { .. }) => Ok(false),
        Err(error) => Err(error),
    }
}

/// Applies `apply` to the requests `ids`, a few at a time. One that has moved on (it ended,
/// or was moved already) or is gone is left as it is: a cascade handled twice does nothing
/// more.
pub(crate) async fn cascade(
    store: &Arc<dyn Store>,
    clock: &Arc<dyn Clock>,
    ids: Vec<String>,
    apply: fn(&mut AsyncRequest, chrono::DateTime<chrono::Utc>) -> Result<()>,
) -> Result<()> {
    let moves = ids.into_iter().map(|id| {
        let (store, clock) = (Arc::clone(store), Arc::clone(clock));
        async move {
            match modify_request(&*store, &*clock, &id, apply).await {
                Ok(_)
                | Err(
                    streamer_core::Error::Transition { .. } | streamer_core::Error::NotFound(_),
                ) => Ok(()),
                Err(error) => Err(error),
            }
        }
    });
    let outcomes: Vec<Result<()>> = stream::iter(moves)
        .buffer_unordered(CASCADE_CONCURRENCY)
        .collect()
        .await;
    outcomes.into_iter().collect()
}

/// The state a change keeps in the history: its new image, when a client can see it.
fn kept_state(change: &Change) -> Option<&Arc<AsyncRequest>> {
    if matches!(change.kind, ChangeKind::Expire | ChangeKind::Remove) {
        return None;
    }
    change.visible()
}

/// `subscriptions` after `delivered`: those pushed `version` have it as their last.
fn pushed_to(
    subscriptions: Vec<Arc<Subscription>>,
    delivered: &[(SubscriptionKey, Result<Delivery>)],
    version: u64,
) -> Vec<Arc<Subscription>> {
    let pushed: HashSet<&SubscriptionKey> = delivered
        .iter()
        .filter(|(_, delivery)| matches!(delivery, Ok(Delivery::Pushed)))
        .map(|(key, _)| key)
        .collect();
    subscriptions
        .into_iter()
        .map(|subscription| {
            if pushed.contains(&subscription.key) {
                let mut moved = (*subscription).clone();
                moved.last_version = version;
                Arc::new(moved)
            } else {
                subscription
            }
        })
        .collect()
}

/// What a batch left undone: the sequence numbers of the changes that failed, to be reported
/// as batch item failures and delivered again.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Failed changes, by sequence number.
    pub failures: Vec<String>,
}

/// Dispatches jobs and fans changes out.
#[derive(Clone)]
pub struct Processor {
    schema: Schema,
    store: Arc<dyn Store>,
    sender: Arc<dyn Sender>,
    dispatcher: Arc<dyn Dispatcher>,
    limits: Limits,
    clock: Arc<dyn Clock>,
    access: Access,
}

impl std::fmt::Debug for Processor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Processor")
            .field("dispatcher", &self.dispatcher)
            .finish_non_exhaustive()
    }
}

impl Processor {
    /// A processor resolving documents with `schema` and pushing through `sender`.
    pub fn new(
        schema: Schema,
        store: Arc<dyn Store>,
        sender: Arc<dyn Sender>,
        dispatcher: Arc<dyn Dispatcher>,
    ) -> Self {
        Self {
            schema,
            store,
            sender,
            dispatcher,
            limits: Limits::default(),
            clock: Arc::new(SystemClock),
            access: Access::default(),
        }
    }

    /// With this clock (holds, credential expiry) instead of the system's.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The processor of an app, as the local stack and the Lambda processor both build it:
    /// stored documents resolved with a schema from `handlers` over `services`, whose store,
    /// limits and clock it uses; pushing through `sender`, starting jobs through `dispatcher`.
    ///
    /// # Errors
    ///
    /// When the schema cannot be built from the handlers.
    pub fn for_app(
        handlers: Arc<Handlers>,
        services: &Services,
        sender: Arc<dyn Sender>,
        dispatcher: Arc<dyn Dispatcher>,
    ) -> std::result::Result<Self, async_graphql::dynamic::SchemaError> {
        // Stored documents were validated when subscribed.
        let schema = streamer_schema::build_for_stored_documents(handlers, services.clone())?;
        let mut processor = Self::new(schema, Arc::clone(&services.store), sender, dispatcher)
            .with_limits(services.limits)
            .with_clock(Arc::clone(&services.clock));
        processor.access = services.access;
        Ok(processor)
    }

    /// Pushes through `sender` instead (the local stack's, once it knows its address).
    pub fn with_sender(mut self, sender: Arc<dyn Sender>) -> Self {
        self.sender = sender;
        self
    }

    /// With these limits instead of the defaults (the message size applies here).
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Handles a batch. Changes of one request are handled in order, one after the other;
    /// different requests concurrently. After a change of a request fails, its later changes
    /// are not attempted (they would overtake it) and are reported failed too.
    pub async fn handle_batch(&self, changes: Vec<Change>) -> BatchOutcome {
        // Children's moves are counted into their batches first, one write per batch for the
        // whole stream batch; a change whose count failed fails, and is counted again when it
        // comes back (a count is never taken twice: see `streamer_core::batch`).
        let uncounted = Arc::new(self.count_children(&changes).await);
        // The visible states of the whole batch are kept in the history at once (a few
        // calls instead of one a state), before any of them is pushed. When that fails, every
        // change fails and comes back.
        let states: Vec<Arc<AsyncRequest>> = changes
            .iter()
            .filter(|change| !uncounted.contains(&change.sequence_number))
            .filter_map(kept_state)
            .cloned()
            .collect();
        if let Err(error) = self.store.record_history(&states).await {
            tracing::error!(error = ?error.to_string(), "keeping the batch's states failed");
            return BatchOutcome {
                failures: changes
                    .into_iter()
                    .map(|change| change.sequence_number)
                    .collect(),
            };
        }
        let mut by_request: HashMap<String, Vec<Change>> = HashMap::new();
        let mut order = Vec::new();
        for change in changes {
            let key = change.request_id().unwrap_or_default().to_owned();
            if !by_request.contains_key(&key) {
                order.push(key.clone());
            }
            by_request.entry(key).or_default().push(change);
        }
        // Owned futures: borrowing `self` inside stream combinators defeats the `Send`
        // inference that `tokio::spawn` needs.
        let groups = order.into_iter().filter_map(|key| by_request.remove(&key)).map(|group| {
            let this = self.clone();
            let uncounted = Arc::clone(&uncounted);
            async move {
                let mut failed = Vec::new();
                // One lookup of the request's subscriptions for its changes in this batch.
                let mut subscriptions = None;
                for change in group {
                    if !failed.is_empty() || uncounted.contains(&change.sequence_number) {
                        failed.push(change.sequence_number);
                        continue;
                    }
                    if let Err(error) = this.handle_kept(&change, &mut subscriptions).await {
                        tracing::error!(sequence_number = %change.sequence_number, error = ?error.to_string(), "change failed");
                        failed.push(change.sequence_number);
                    }
                }
                failed
            }
        });
        let failures: Vec<Vec<String>> = stream::iter(groups)
            .buffer_unordered(FAN_OUT_CONCURRENCY)
            .collect()
            .await;
        BatchOutcome {
            failures: failures.into_iter().flatten().collect(),
        }
    }

    /// Counts the children's moves among `changes` into their batches: one read and one
    /// conditional write per batch (again on a lost race). Returns the sequence numbers of
    /// the changes whose count was not written.
    async fn count_children(&self, changes: &[Change]) -> HashSet<String> {
        let mut by_batch: HashMap<String, Vec<(String, ChildMove)>> = HashMap::new();
        for change in changes {
            if matches!(change.kind, ChangeKind::Expire | ChangeKind::Remove) {
                continue;
            }
            if let Some((batch, child)) = change.child_moved() {
                by_batch
                    .entry(batch.to_owned())
                    .or_default()
                    .push((change.sequence_number.clone(), child));
            }
        }
        // Owned futures, as in `handle_batch`.
        let counts = by_batch.into_iter().map(|(batch, moves)| {
            let this = self.clone();
            async move {
                let children: Vec<ChildMove> = moves.iter().map(|(_, child)| *child).collect();
                match this.count_into(&batch, &children).await {
                    Ok(()) => Vec::new(),
                    Err(error) => {
                        tracing::error!(batch, error = ?error.to_string(), "counting children failed");
                        moves.into_iter().map(|(sequence, _)| sequence).collect()
                    }
                }
            }
        });
        stream::iter(counts)
            .buffer_unordered(FAN_OUT_CONCURRENCY)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// Counts `children`'s moves into batch `id`, writing only when a count moved. When the
    /// parent is a workflow instead, a child that ended may wake it.
    async fn count_into(&self, id: &str, children: &[ChildMove]) -> Result<()> {
        loop {
            let Some(mut batch) = self.store.get_request(id).await? else {
                // Gone with its retention: nobody follows it any more.
                tracing::warn!(batch = id, "a child's parent is gone");
                return Ok(());
            };
            if !batch.is_batch() {
                if children.iter().any(|child| child.state.ended()) {
                    self.wake_if_ready(batch).await?;
                }
                return Ok(());
            }
            let expected = batch.revision;
            if !batch.count_children(children, self.clock.now())? {
                return Ok(());
            }
            batch.revision = expected + 1;
            match self.store.update_request(&batch, expected).await {
                Err(streamer_core::Error::Conflict(_)) => continue,
                other => return other,
            }
        }
    }

    /// Wakes a WAITING workflow whose wait is over ([`wake_if_ready`]).
    async fn wake_if_ready(&self, request: AsyncRequest) -> Result<()> {
        wake_if_ready(&*self.store, &*self.clock, request)
            .await
            .map(|_| ())
    }

    /// The children of `request` that have not ended.
    async fn open_children(&self, request: &AsyncRequest) -> Result<Vec<String>> {
        let mut open = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .store
                .list_requests(&streamer_core::RequestFilter {
                    tenant: Some(request.tenant.clone()),
                    parent: Some(request.id.clone()),
                    limit: 100,
                    after,
                    ..streamer_core::RequestFilter::default()
                })
                .await?;
            open.extend(
                page.items
                    .into_iter()
                    .filter(|child| !child.status.is_terminal())
                    .map(|child| child.id),
            );
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(open),
            }
        }
    }

    /// Applies `apply` to the children of `batch` at `indexes`, a few at a time. A child that
    /// has moved on (it ended, or was re-driven already) is left as it is: a cascade handled
    /// twice does nothing more.
    async fn cascade(
        &self,
        batch: &str,
        indexes: Vec<u32>,
        apply: fn(&mut AsyncRequest, chrono::DateTime<chrono::Utc>) -> Result<()>,
    ) -> Result<()> {
        let ids = indexes
            .into_iter()
            .map(|index| streamer_core::batch::child_id(batch, index))
            .collect();
        self.cascade_to(ids, apply).await
    }

    /// Applies `apply` to the requests `ids` ([`cascade`]).
    async fn cascade_to(
        &self,
        ids: Vec<String>,
        apply: fn(&mut AsyncRequest, chrono::DateTime<chrono::Utc>) -> Result<()>,
    ) -> Result<()> {
        cascade(&self.store, &self.clock, ids, apply).await
    }

    /// Handles one change: dispatch if it made the request runnable, keep it in the history
    /// and fan it out if a client can see it.
    pub async fn handle(&self, change: &Change) -> Result<()> {
        if let Some(state) = kept_state(change) {
            self.store
                .record_history(std::slice::from_ref(state))
                .await?;
        }
        self.handle_kept(change, &mut None).await
    }

    /// [`Processor::handle`] of a change whose state the history holds already.
    /// `subscriptions` are the request's as of its previous change in the same stream batch,
    /// when that fan-out left them known (read again otherwise): a subscription stored since
    /// then got a snapshot at least as new as this change, which was written before the
    /// batch was read.
    async fn handle_kept(
        &self,
        change: &Change,
        subscriptions: &mut Option<Vec<Arc<Subscription>>>,
    ) -> Result<()> {
        if matches!(change.kind, ChangeKind::Expire | ChangeKind::Remove) {
            // TTL or cleanup: nothing a subscriber is waiting for.
            return Ok(());
        }
        if let Some(batch) = change.batch_cancelled() {
            self.cascade(&batch.id, batch.open_children(), AsyncRequest::cancel)
                .await?;
        }
        let abandoned = change.abandoned_children();
        if !abandoned.is_empty() {
            self.cascade_to(abandoned.to_vec(), AsyncRequest::cancel)
                .await?;
        }
        if let Some(request) = change.cancelled_running() {
            // A workflow cancelled while it ran may have started children it did not wait
            // for yet. Its worker cancels the ones it started; this listing (one query; none
            // for a job without children) reaches them when the worker died and the sweeper
            // ended it, long after the index has caught up.
            let open = self.open_children(request).await?;
            if !open.is_empty() {
                self.cascade_to(open, AsyncRequest::cancel).await?;
            }
        }
        if let Some(waiting) = change.began_waiting() {
            // What it waits for may be over already (children that ended first).
            self.wake_if_ready(waiting.clone()).await?;
        }
        let redriven = change.batch_redriven();
        if let (false, Some(batch)) = (redriven.is_empty(), change.new.as_deref()) {
            self.cascade(&batch.id, redriven, AsyncRequest::redrive)
                .await?;
        }
        if let Some(request) = change.enqueued() {
            self.dispatcher.dispatch(request).await?;
        }
        if let Some(request) = change.cancelled_while_running() {
            self.dispatcher.cancel(request).await?;
        }
        if let Some(request) = change.left_running() {
            self.dispatcher.ended(request).await?;
        }
        if let Some(state) = change.visible() {
            metrics::counter!(metric::REQUESTS, "status" => state.status.to_string()).increment(1);
            // Kept (by the caller) before it is pushed: a subscriber that resumes finds every
            // version it missed in the history, or gets it from this fan-out.
            // The gateway is pushing a new subscription's snapshot or resume, or died
            // holding it: the hold is waited out here (it lasts at most `PUSH_HOLD_MS`), so
            // that a dead gateway's hold does not use up the stream's retries. This change
            // must not overtake that push: past the wait it fails and the stream delivers it
            // again.
            let deliveries = self.fan_out_waiting(state, subscriptions).await?;
            if deliveries.contains(&Delivery::Busy) {
                return Err(streamer_core::Error::Busy(format!(
                    "a push of request {} is in flight",
                    state.id
                )));
            }
            if deliveries
                .iter()
                .any(|d| matches!(d, Delivery::Pushed | Delivery::Completed))
            {
                let since_write = self.clock.now() - state.updated_at;
                metrics::histogram!(metric::PUSH_LATENCY)
                    .record(since_write.num_microseconds().unwrap_or_default() as f64 / 1000.0);
            }
        }
        Ok(())
    }

    /// Pushes one state to every subscription of its request.
    pub async fn fan_out(&self, state: &Arc<AsyncRequest>) -> Result<Vec<Delivery>> {
        let subscriptions = self.store.subscriptions(&state.id).await?;
        let delivered = self.deliver_each(state, subscriptions).await;
        self.settle(state, delivered).await
    }

    /// Pushes one state to each of `subscriptions`, with the outcome of each.
    async fn deliver_each(
        &self,
        state: &Arc<AsyncRequest>,
        subscriptions: Vec<Arc<Subscription>>,
    ) -> Vec<(SubscriptionKey, Result<Delivery>)> {
        // Subscriptions that share a document resolve it once.
        let resolutions = Arc::new(if subscriptions.len() > 1 {
            Resolutions::shared()
        } else {
            Resolutions::default()
        });
        let pushes = subscriptions.into_iter().map(|subscription| {
            let (this, state, resolutions) =
                (self.clone(), Arc::clone(state), Arc::clone(&resolutions));
            async move {
                let pusher = Pusher {
                    schema: &this.schema,
                    store: &*this.store,
                    sender: &*this.sender,
                    limits: &this.limits,
                    clock: &*this.clock,
                    access: this.access,
                };
                let delivery = pusher
                    .deliver_resolving(&subscription, &state, &resolutions)
                    .await;
                (subscription.key.clone(), delivery)
            }
        });
        stream::iter(pushes)
            .buffer_unordered(FAN_OUT_CONCURRENCY)
            .collect()
            .await
    }

    /// The outcomes of one state's fan-out, or its first error. A fan-out that failed or
    /// found a subscription held will be handled again: the subscriptions it reached keep
    /// `last_version` at this state first, so that the retry does not push it to them twice
    /// (pushes write nothing otherwise).
    async fn settle(
        &self,
        state: &Arc<AsyncRequest>,
        delivered: Vec<(SubscriptionKey, Result<Delivery>)>,
    ) -> Result<Vec<Delivery>> {
        let retried = delivered
            .iter()
            .any(|(_, delivery)| !matches!(delivery, Ok(d) if *d != Delivery::Busy));
        if retried {
            self.checkpoint(state, &delivered).await?;
        }
        delivered
            .into_iter()
            .map(|(_, delivery)| delivery)
            .collect()
    }

    /// Records `state` as the last version of each subscription it was pushed to.
    async fn checkpoint(
        &self,
        state: &Arc<AsyncRequest>,
        delivered: &[(SubscriptionKey, Result<Delivery>)],
    ) -> Result<()> {
        for (key, delivery) in delivered {
            if matches!(delivery, Ok(Delivery::Pushed)) {
                self.store.release_push(key, state.version).await?;
            }
        }
        Ok(())
    }

    /// Pushes one state to every subscription of its request, waiting out (up to
    /// `HOLD_WAIT_MS`) the gateway's holds; only the held subscriptions are tried again.
    /// `known` are the subscriptions if known already (read otherwise); they are left known
    /// for the request's next change when every one was pushed this state or skipped it and
    /// the state is not terminal.
    async fn fan_out_waiting(
        &self,
        state: &Arc<AsyncRequest>,
        known: &mut Option<Vec<Arc<Subscription>>>,
    ) -> Result<Vec<Delivery>> {
        let subscriptions = match known.take() {
            Some(subscriptions) => subscriptions,
            None => self.store.subscriptions(&state.id).await?,
        };
        let mut delivered = self.deliver_each(state, subscriptions.clone()).await;
        if !state.status.is_terminal()
            && delivered
                .iter()
                .all(|(_, delivery)| matches!(delivery, Ok(Delivery::Pushed | Delivery::Skipped)))
        {
            *known = Some(pushed_to(subscriptions, &delivered, state.version));
        }
        let waiting_until = tokio::time::Instant::now() + Duration::from_millis(HOLD_WAIT_MS);
        let mut poll = Duration::from_millis(HOLD_POLL_MS);
        loop {
            let held: HashSet<SubscriptionKey> = delivered
                .iter()
                .filter(|(_, delivery)| matches!(delivery, Ok(Delivery::Busy)))
                .map(|(key, _)| key.clone())
                .collect();
            let failed = delivered.iter().any(|(_, delivery)| delivery.is_err());
            if held.is_empty() || failed || tokio::time::Instant::now() >= waiting_until {
                return self.settle(state, delivered).await;
            }
            tokio::time::sleep(poll).await;
            poll = (poll * 2).min(Duration::from_millis(HOLD_POLL_MAX_MS));
            delivered.retain(|(key, _)| !held.contains(key));
            // Read again: a held subscription's last version has moved, or it is gone.
            match self.held_again(&state.id, &held).await {
                Ok(again) => delivered.extend(self.deliver_each(state, again).await),
                Err(error) => {
                    self.checkpoint(state, &delivered).await?;
                    return Err(error);
                }
            }
        }
    }

    /// The `held` subscriptions of a request as stored now: one read of the one (the usual
    /// case, a subscribe's snapshot), else one query of them all.
    async fn held_again(
        &self,
        request_id: &str,
        held: &HashSet<SubscriptionKey>,
    ) -> Result<Vec<Arc<Subscription>>> {
        if let (1, Some(key)) = (held.len(), held.iter().next()) {
            return Ok(self.store.subscription(key).await?.into_iter().collect());
        }
        Ok(self
            .store
            .subscriptions(request_id)
            .await?
            .into_iter()
            .filter(|subscription| held.contains(&subscription.key))
            .collect())
    }
}
