//! [`FairDispatcher`]: at most a tenant's share of the job slots for one tenant, for a
//! dispatcher that starts every job it is given at once (the worker function on AWS, where
//! Lambda has no queue the processor could reorder).
//!
//! The rule is the one [`crate::TaskDispatcher`] keeps locally: a job whose tenant already
//! runs `share` jobs is not started but left QUEUED; when one of that tenant's runs ends
//! (the change that takes a request out of RUNNING), the tenant's oldest QUEUED request is
//! started in its place, except that when a batch's child ends, the tenant's oldest job
//! enqueued after the batch goes first: a batch and the tenant's later jobs take turns. The sweeper's re-dispatch of requests left QUEUED goes through the
//! same rule, so it is also the backstop for a start that was missed.
//!
//! The counts come from the store's tenant-and-status index, which DynamoDB keeps
//! eventually consistent: two jobs dispatched at once may both see a free slot, so the share
//! can be passed by the jobs dispatched in the same instant. It bounds a tenant's slots
//! loosely, which is what keeps the others' jobs starting.

use std::sync::Arc;

use async_trait::async_trait;
use streamer_core::store::RequestFilter;
use streamer_core::{AsyncRequest, RequestStatus, Result, Store, metric};

use crate::Dispatcher;

/// Holds back the jobs of a tenant that runs its share of them; see the [module](self).
#[derive(Debug, Clone)]
pub struct FairDispatcher {
    inner: Arc<dyn Dispatcher>,
    store: Arc<dyn Store>,
    share: usize,
}

impl FairDispatcher {
    /// Starts jobs through `inner`, at most `share` of one tenant's at once.
    pub fn new(inner: Arc<dyn Dispatcher>, store: Arc<dyn Store>, share: usize) -> Self {
        Self {
            inner,
            store,
            share: share.max(1),
        }
    }

    /// How many of `tenant`'s requests run now, not counting `except`, up to the share.
    async fn running(&self, tenant: &str, except: &str) -> Result<usize> {
        let page = self
            .store
            .list_requests(&RequestFilter {
                tenant: Some(tenant.to_owned()),
                owner: None,
                status: Some(RequestStatus::Running),
                limit: self.share + 1,
                after: None,
                parent: None,
                newest_first: false,
            })
            .await?;
        Ok(page
            .items
            .iter()
            .filter(|r| r.id != except && !r.is_batch())
            .count())
    }

    /// The last child of the batch that `request` is a child of: the tenant's requests listed
    /// after it were enqueued after the batch.
    async fn after_batch_of(&self, request: &AsyncRequest) -> Result<Option<String>> {
        let Some(parent) = &request.parent else {
            return Ok(None);
        };
        let total = self
            .store
            .get_request(&parent.id)
            .await?
            .and_then(|batch| batch.batch)
            .map(|counts| counts.total);
        Ok(total
            .filter(|total| *total > 0)
            .map(|total| streamer_core::batch::child_id(&parent.id, total - 1)))
    }

    /// Starts the tenant's oldest waiting job (after `after`, when given) other than
    /// `request`: `false` when there is none. A request that has just been queued may also be
    /// dispatched by its own change; the worker's claim runs it once.
    async fn start_oldest(&self, request: &AsyncRequest, after: Option<String>) -> Result<bool> {
        let waiting = self
            .store
            .list_requests(&RequestFilter {
                tenant: Some(request.tenant.clone()),
                status: Some(RequestStatus::Queued),
                // A batch waits in the listing too (it never runs): a few more than one.
                limit: 4,
                after,
                ..RequestFilter::default()
            })
            .await?;
        let Some(next) = waiting
            .items
            .iter()
            .find(|r| r.id != request.id && !r.is_batch())
        else {
            return Ok(false);
        };
        self.inner.dispatch(next).await?;
        Ok(true)
    }
}

#[async_trait]
impl Dispatcher for FairDispatcher {
    async fn dispatch(&self, request: &AsyncRequest) -> Result<()> {
        if self.running(&request.tenant, &request.id).await? >= self.share {
            metrics::counter!(metric::DISPATCH_DEFERRED).increment(1);
            tracing::debug!(request_id = %request.id, tenant = ?request.tenant, "held back: the tenant runs its share of jobs");
            return Ok(());
        }
        self.inner.dispatch(request).await
    }

    async fn cancel(&self, request: &AsyncRequest) -> Result<()> {
        self.inner.cancel(request).await
    }

    async fn ended(&self, request: &AsyncRequest) -> Result<()> {
        self.inner.ended(request).await?;
        if self.running(&request.tenant, &request.id).await? >= self.share {
            return Ok(());
        }
        // A batch's child ended: what the tenant enqueued after the batch goes first, so that
        // a thousand children do not hold back every later job of the tenant; the batch's next
        // child gets the slot a later job ends. Otherwise the oldest waiting job takes it.
        if let Some(after) = self.after_batch_of(request).await?
            && self.start_oldest(request, Some(after)).await?
        {
            return Ok(());
        }
        self.start_oldest(request, None).await?;
        Ok(())
    }
}
