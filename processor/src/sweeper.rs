//! [`Sweeper`]: the periodic work nothing else triggers. On AWS a scheduled function runs it;
//! it needs only the ports, so it runs anywhere.
//!
//! - Connections that have not sent `connection_init` within the init timeout are closed
//!   (4408; on API Gateway a `DeleteConnection`) and deleted.
//! - Requests whose retry is due (RETRYING, `nextAttemptAt` passed) are dispatched: a worker
//!   that cannot wait out a backoff leaves the retry here.
//! - Requests QUEUED for longer than a grace period are dispatched again, in case their first
//!   dispatch was lost; a duplicate run is impossible, the claim is a conditional write.
//! - Requests RUNNING under a lease that has passed (their worker died) are dispatched: the
//!   next worker claims them for a new attempt.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use streamer_core::protocol::Close;
use streamer_core::store::RequestFilter;
use streamer_core::{AsyncRequest, Clock, Error, RequestStatus, Result, Sender, Store, metric};

use crate::Dispatcher;

/// What a sweep looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SweepOptions {
    /// How long a connection may wait before `connection_init` (the reference server's
    /// default is 3 seconds).
    pub init_timeout: Duration,
    /// How long a request may stay QUEUED before it is dispatched again.
    pub queued_grace: Duration,
    /// At most this many items of each kind per sweep.
    pub limit: usize,
}

impl Default for SweepOptions {
    fn default() -> Self {
        Self {
            init_timeout: Duration::from_secs(3),
            queued_grace: Duration::from_secs(60),
            limit: 500,
        }
    }
}

/// What one sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SweepReport {
    /// Connections closed for not initialising in time.
    pub init_timeouts: usize,
    /// Retries dispatched.
    pub retries: usize,
    /// Queued requests dispatched again.
    pub requeued: usize,
    /// Running requests whose worker's lease passed, dispatched again.
    pub abandoned: usize,
    /// Waiting workflows woken.
    pub woken: usize,
}

/// Runs sweeps.
#[derive(Debug, Clone)]
pub struct Sweeper {
    store: Arc<dyn Store>,
    sender: Arc<dyn Sender>,
    dispatcher: Arc<dyn Dispatcher>,
    clock: Arc<dyn Clock>,
    options: SweepOptions,
}

impl Sweeper {
    /// A sweeper over these ports.
    pub fn new(
        store: Arc<dyn Store>,
        sender: Arc<dyn Sender>,
        dispatcher: Arc<dyn Dispatcher>,
        clock: Arc<dyn Clock>,
        options: SweepOptions,
    ) -> Self {
        Self {
            store,
            sender,
            dispatcher,
            clock,
            options,
        }
    }

    /// One sweep.
    pub async fn sweep(&self) -> Result<SweepReport> {
        let now = self.clock.now();
        let mut report = SweepReport::default();
        let init_deadline =
            now - chrono::Duration::from_std(self.options.init_timeout).unwrap_or_default();
        for connection in self
            .store
            .connections_awaiting_init(init_deadline, self.options.limit)
            .await?
        {
            // The index lags: a connection acknowledged since it was read is not touched.
            // Its item goes first, conditionally; the socket is closed only after that.
            if !self
                .store
                .delete_connection_awaiting_init(&connection.id)
                .await?
            {
                continue;
            }
            match self
                .sender
                .close(&connection.id, &Close::init_timeout())
                .await
            {
                Ok(()) | Err(Error::Gone(_)) => {}
                Err(error) => {
                    tracing::warn!(connection_id = %connection.id, error = ?error.to_string(), "init timeout: close failed");
                }
            }
            metrics::counter!(metric::INIT_TIMEOUTS).increment(1);
            tracing::info!(connection_id = %connection.id, "closed: no connection_init in time");
            report.init_timeouts += 1;
        }
        for request in self.listed(RequestStatus::Retrying).await? {
            if request.next_attempt_at.is_some_and(|at| at <= now) {
                report.retries += usize::from(self.dispatch(&request).await);
            }
        }
        let grace = chrono::Duration::from_std(self.options.queued_grace).unwrap_or_default();
        for request in self.listed(RequestStatus::Queued).await? {
            if request.updated_at + grace <= now {
                report.requeued += usize::from(self.dispatch(&request).await);
            }
        }
        for request in self.listed(RequestStatus::Running).await? {
            if request.lease_expired(now) {
                report.abandoned += usize::from(self.dispatch(&request).await);
            }
        }
        // Workflows whose time has come, and (after the grace, in case a wake was lost) those
        // whose children have all ended.
        for request in self.listed(RequestStatus::Waiting).await? {
            let looked_at = request.wake_due(now)
                || (!request.waiting_for.is_empty() && request.updated_at + grace <= now);
            if looked_at {
                let id = request.id.clone();
                match crate::processor::wake_if_ready(&*self.store, &*self.clock, request).await {
                    Ok(woken) => report.woken += usize::from(woken),
                    Err(error) => {
                        tracing::warn!(request_id = %id, error = ?error.to_string(), "sweep: wake failed");
                    }
                }
            }
        }
        if report != SweepReport::default() {
            tracing::info!(?report, "swept");
        }
        Ok(report)
    }

    /// Up to `limit` requests in `status`, oldest first.
    /// Dispatches one request; a failure is logged and the sweep goes on (the next sweep
    /// finds the request again). `true` when it was dispatched.
    async fn dispatch(&self, request: &AsyncRequest) -> bool {
        match self.dispatcher.dispatch(request).await {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(request_id = %request.id, error = ?error.to_string(), "sweep: dispatch failed");
                false
            }
        }
    }

    /// The oldest requests in `status`, up to the sweep's limit, in one listing: every
    /// tenant's listing is not paged (on DynamoDB it reads every shard of the `active`
    /// index); what is left is found by a later sweep.
    async fn listed(&self, status: RequestStatus) -> Result<Vec<AsyncRequest>> {
        let page = self
            .store
            .list_requests(&RequestFilter {
                tenant: None,
                owner: None,
                status: Some(status),
                limit: self.options.limit,
                after: None,
                parent: None,
                newest_first: false,
            })
            .await?;
        // A batch is never dispatched: its children are.
        Ok(page.items.into_iter().filter(|r| !r.is_batch()).collect())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;
    use serde_json::json;
    use streamer_core::{Connection, ManualClock, MemorySender, MemoryStore, RequestError};

    use super::*;

    #[derive(Debug, Default)]
    struct Recorded(Mutex<Vec<String>>);

    #[async_trait]
    impl Dispatcher for Recorded {
        async fn dispatch(&self, request: &AsyncRequest) -> Result<()> {
            self.0.lock().unwrap().push(request.id.clone());
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_sweep_closes_silent_connections_and_dispatches_due_work() {
        let clock = Arc::new(ManualClock::default());
        let start = clock.now();
        let store = Arc::new(MemoryStore::new());
        let sender = Arc::new(MemorySender::new());
        let dispatched = Arc::new(Recorded::default());
        let sweeper = Sweeper::new(
            store.clone(),
            sender.clone(),
            dispatched.clone(),
            clock.clone(),
            SweepOptions::default(),
        );
        store
            .put_connection(&Connection::new("silent", start))
            .await
            .unwrap();
        store
            .put_connection(&Connection::new("polite", start))
            .await
            .unwrap();
        store
            .acknowledge_connection("polite", None, &streamer_core::Principal::new("t", "u"))
            .await
            .unwrap();
        let queued = AsyncRequest::new("queued", "a", json!({}), start);
        store.create_request(&queued).await.unwrap();
        let mut retrying = AsyncRequest::new("retrying", "a", json!({}), start);
        retrying.start(start).unwrap();
        let error = RequestError {
            code: "X".into(),
            message: "x".into(),
            retryable: true,
        };
        retrying
            .retry_at(error, start + chrono::Duration::seconds(30), start)
            .unwrap();
        store.create_request(&retrying).await.unwrap();

        // Within every grace period: nothing to do.
        assert_eq!(sweeper.sweep().await.unwrap(), SweepReport::default());

        clock.advance(chrono::Duration::seconds(5));
        let report = sweeper.sweep().await.unwrap();
        assert_eq!(report.init_timeouts, 1);
        assert_eq!(
            sender.closed(),
            [("silent".to_owned(), Close::init_timeout())]
        );
        assert!(store.get_connection("silent").await.unwrap().is_none());
        assert!(store.get_connection("polite").await.unwrap().is_some());
        assert!(dispatched.0.lock().unwrap().is_empty());

        clock.advance(chrono::Duration::seconds(30));
        assert_eq!(sweeper.sweep().await.unwrap().retries, 1);
        assert_eq!(*dispatched.0.lock().unwrap(), ["retrying"]);

        clock.advance(chrono::Duration::seconds(30));
        let report = sweeper.sweep().await.unwrap();
        assert_eq!((report.retries, report.requeued), (1, 1));

        // A running request whose worker stopped renewing its lease is dispatched again.
        let mut running = AsyncRequest::new("running", "a", json!({}), clock.now());
        running
            .claim(clock.now(), chrono::Duration::seconds(10), 3)
            .unwrap();
        store.create_request(&running).await.unwrap();
        assert_eq!(
            sweeper.sweep().await.unwrap().abandoned,
            0,
            "the lease holds"
        );
        clock.advance(chrono::Duration::seconds(11));
        assert_eq!(sweeper.sweep().await.unwrap().abandoned, 1);
        assert_eq!(dispatched.0.lock().unwrap().last().unwrap(), "running");
    }
}
