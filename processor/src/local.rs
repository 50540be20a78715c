//! Dispatching jobs to tokio tasks, bounded: the local stand-in for invoking the worker
//! function asynchronously.

use std::sync::Arc;

use async_trait::async_trait;
use streamer_core::{AsyncRequest, Result};
use tokio::sync::Semaphore;

use crate::{Dispatcher, Outcome, Worker};

/// Runs each job in its own task, at most `limit` at once; retries are re-dispatched after
/// their backoff.
#[derive(Debug, Clone)]
pub struct TaskDispatcher {
    worker: Worker,
    permits: Arc<Semaphore>,
}

impl TaskDispatcher {
    /// At most `limit` jobs run at once; the others wait for a permit.
    pub fn new(worker: Worker, limit: usize) -> Self {
        Self {
            worker,
            permits: Arc::new(Semaphore::new(limit.max(1))),
        }
    }

    fn spawn(&self, request_id: String) {
        let this = self.clone();
        tokio::spawn(async move {
            let outcome = {
                let Ok(_permit) = this.permits.acquire().await else {
                    return;
                };
                this.worker.run(&request_id).await
            };
            match outcome {
                Ok(Outcome::RetryAfter(delay)) => {
                    tokio::time::sleep(delay).await;
                    this.spawn(request_id);
                }
                Ok(_) => {}
                Err(error) => tracing::error!(%request_id, %error, "job run failed"),
            }
        });
    }
}

#[async_trait]
impl Dispatcher for TaskDispatcher {
    async fn dispatch(&self, request: &AsyncRequest) -> Result<()> {
        self.spawn(request.id.clone());
        Ok(())
    }
}
