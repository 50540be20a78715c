//! [`FairDispatcher`]: at most a tenant's share of the job slots for one tenant, for a
//! dispatcher that starts every job it is given at once (the worker function on AWS, where
//! Lambda has no queue the processor could reorder).
//!
//! The rule is the one [`crate::TaskDispatcher`] keeps locally: a job whose tenant already
//! runs `share` jobs is not started but left QUEUED; when one of that tenant's runs ends
//! (the change that takes a request out of RUNNING), the tenant's oldest QUEUED request is
//! started in its place. The sweeper's re-dispatch of requests left QUEUED goes through the
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
        // The oldest waiting job takes the slot. A request that has just been queued may also
        // be dispatched by its own change; the worker's claim runs it once.
        let waiting = self
            .store
            .list_requests(&RequestFilter {
                tenant: Some(request.tenant.clone()),
                owner: None,
                status: Some(RequestStatus::Queued),
                // A batch waits in the listing too (it never runs): a few more than one.
                limit: 4,
                after: None,
                parent: None,
                newest_first: false,
            })
            .await?;
        if let Some(next) = waiting
            .items
            .iter()
            .find(|r| r.id != request.id && !r.is_batch())
        {
            self.inner.dispatch(next).await?;
        }
        Ok(())
    }
}
