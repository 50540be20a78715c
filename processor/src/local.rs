//! Dispatching jobs to tokio tasks, bounded: the local stand-in for invoking the worker
//! function asynchronously.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use streamer_core::{AsyncRequest, Result};
use tokio::sync::Semaphore;
use tokio::task::AbortHandle;

use crate::{Dispatcher, Outcome, Worker};

/// Runs each job in its own task, at most `limit` at once; retries are re-dispatched after
/// their backoff.
#[derive(Debug, Clone)]
pub struct TaskDispatcher {
    worker: Worker,
    permits: Arc<Semaphore>,
    running: Arc<Mutex<HashMap<String, AbortHandle>>>,
}

impl TaskDispatcher {
    /// At most `limit` jobs run at once; the others wait for a permit.
    pub fn new(worker: Worker, limit: usize) -> Self {
        Self {
            worker,
            permits: Arc::new(Semaphore::new(limit.max(1))),
            running: Arc::default(),
        }
    }

    /// Kills the task running `request_id`'s job, as a crashed worker would stop: no
    /// outcome is written and its lease runs out. `true` when there was one. For fault
    /// injection.
    pub fn kill(&self, request_id: &str) -> bool {
        let task = self.running.lock().expect("tasks lock").remove(request_id);
        task.map(|task| task.abort()).is_some()
    }

    fn spawn(&self, request_id: String) {
        let this = self.clone();
        let id = request_id.clone();
        // The task waits until its handle is registered, so that it can unregister itself.
        let (registered, ready) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = ready.await;
            let outcome = match this.permits.acquire().await {
                Ok(_permit) => Some(this.worker.run(&request_id).await),
                Err(_) => None,
            };
            {
                let mut running = this.running.lock().expect("tasks lock");
                if running
                    .get(&request_id)
                    .is_some_and(|task| task.id() == tokio::task::id())
                {
                    running.remove(&request_id);
                }
            }
            match outcome {
                Some(Ok(Outcome::RetryAfter(delay))) => {
                    tokio::time::sleep(delay).await;
                    this.spawn(request_id);
                }
                Some(Err(error)) => tracing::error!(%request_id, %error, "job run failed"),
                _ => {}
            }
        });
        self.running
            .lock()
            .expect("tasks lock")
            .insert(id, task.abort_handle());
        let _ = registered.send(());
    }
}

#[async_trait]
impl Dispatcher for TaskDispatcher {
    async fn dispatch(&self, request: &AsyncRequest) -> Result<()> {
        self.spawn(request.id.clone());
        Ok(())
    }
}
